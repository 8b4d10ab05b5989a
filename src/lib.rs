//! live-crew: a low-latency, time-sliced orchestration host for CrewAI crews over
//! real-time event streams.
//!
//! The modules follow an event's path: input → slicer → scheduler → supervisor →
//! runner process → context merge → output.

pub mod calls;
pub mod config;
pub mod context;
pub mod control;
pub mod heartbeat;
pub mod input;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod output;
pub mod protocol;
pub mod replay;
pub mod runners;
pub mod scaffold;
pub mod scheduler;
pub mod shutdown;
pub mod slicer;
pub mod supervisor;
