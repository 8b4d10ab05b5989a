//! live-crew: a low-latency, time-sliced orchestration host for CrewAI crews over
//! real-time event streams.
//!
//! The modules follow an event's path, then the parts beside it:
//!
//! | stage | module |
//! |---|---|
//! | shared types: events, actions, timestamps, names | [`model`], [`config`] |
//! | events in (file, stdin; [`source::EventSource`]) | [`source`] |
//! | event time → slice | [`slicer`] |
//! | which crew runs when (pure core under an I/O shell) | [`scheduler`] |
//! | the calls the scheduler makes ([`pool::CrewPool`]) | [`pool`] |
//! | one actor per crew runner process, sandboxed | [`supervisor`] |
//! | the runner protocol on the process's pipes | [`protocol`] |
//! | context merge rules and stores | [`context`] |
//! | actions and error records out ([`sink::ActionSink`]) | [`sink`] |
//! | metrics, health, control socket, heartbeats, logs, shutdown | [`ops`] |
//! | hot reload of the crews folder | [`reload`] |
//! | wiring it all for one run | [`host`] |
//! | the command line's own commands | [`cli`] |

// Everything that needs `unsafe` (fork, exec, namespaces, seccomp) is in the sandbox crate.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod context;
pub mod distributed;
pub mod host;
pub mod llm;
pub mod model;
pub mod ops;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod scheduler;
pub mod sink;
pub mod slicer;
pub mod source;
pub mod supervisor;
