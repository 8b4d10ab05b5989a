//! Operations, beside the flow of events: metrics and their HTTP server, health and the
//! control socket, heartbeats, logging, shutdown, and the progress line.

pub mod control;
pub mod health;
pub mod heartbeat;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod progress;
pub mod recent;
pub mod run_metrics;
pub mod shutdown;
