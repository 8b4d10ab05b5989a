//! Distributed mode on NATS JetStream (SPEC §12): the connection, the streams and the KV
//! bucket, the events source, the commit sequence (KV value with its outbox, then the
//! actions published with their ids, then the events acknowledged), and the crews that
//! run on worker hosts: the scheduler's side (`remote.rs`), the wire (`work.rs`) and
//! the worker's side (`worker.rs`).

pub mod commit;
pub mod connection;
pub mod fault;
pub mod leader;
pub mod remote;
pub mod source;
pub mod topology;
pub mod work;
pub mod worker;

use std::future::Future;
use std::time::Duration;

use crate::ops::health::BrokerLink;

/// Tries `attempt` until it succeeds, or fails while the connection is up `ATTEMPTS`
/// times in a row. While NATS is unreachable it keeps trying (every `PAUSE`): input
/// pauses meanwhile, and the events wait in their stream. `transient` says which errors
/// are worth another try at all.
pub(crate) async fn retrying<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    link: &BrokerLink,
    transient: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> F,
) -> Result<T, E> {
    const ATTEMPTS: u32 = 10;
    const PAUSE: Duration = Duration::from_millis(250);
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if transient(&err) => {
                let connected = link.connected.load(std::sync::atomic::Ordering::Relaxed);
                if connected {
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(err);
                    }
                }
                tracing::warn!("{what} failed ({err}); trying again");
                tokio::time::sleep(PAUSE).await;
            }
            Err(err) => return Err(err),
        }
    }
}
