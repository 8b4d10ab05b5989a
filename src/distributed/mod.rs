//! Distributed mode on NATS JetStream (SPEC §12): the connection, the streams and the KV
//! bucket, the events source, and the commit sequence (KV value with its outbox, then
//! the actions published with their ids, then the events acknowledged).

pub mod commit;
pub mod connection;
pub mod source;
pub mod topology;
