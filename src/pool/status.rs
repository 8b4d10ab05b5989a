//! What a pool reports about its crews: the source of `live-crew health` and `status`.

use std::sync::Arc;

use serde::Serialize;

use crate::model::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CrewState {
    /// The runner is being spawned, or has not answered `hello` yet.
    Starting,
    /// Idle and healthy.
    Ready,
    /// A call is in flight.
    Busy,
    /// Waiting out the backoff after a failure.
    Restarting,
    /// Disabled after `max_errors` consecutive failures.
    Disabled,
    /// Shut down.
    Stopped,
    /// Runs on worker hosts (SPEC §12), and at least one serves it.
    Remote,
    /// Runs on worker hosts, and none serves it: its calls fail with `no_worker`.
    NoWorker,
}

impl CrewState {
    /// Every state, in a fixed order (their index is the monitor's stored value).
    pub const ALL: [CrewState; 8] = [
        CrewState::Starting,
        CrewState::Ready,
        CrewState::Busy,
        CrewState::Restarting,
        CrewState::Disabled,
        CrewState::Stopped,
        CrewState::Remote,
        CrewState::NoWorker,
    ];

    /// Whether a crew in this state takes calls.
    pub fn is_up(self) -> bool {
        matches!(self, CrewState::Ready | CrewState::Busy | CrewState::Remote)
    }
}

/// A point-in-time view of one crew.
#[derive(Debug, Clone, Serialize)]
pub struct CrewStatus {
    pub crew: String,
    pub state: CrewState,
    pub pid: Option<u32>,
    /// How long ago the runner's last heartbeat (or `ready`) arrived.
    pub last_heartbeat_ms: Option<u64>,
    pub restarts: u32,
    /// Failed calls and failed starts since the host started.
    pub errors: u64,
    /// The sandbox layers this crew's runner is started with.
    pub sandbox_layers: Vec<&'static str>,
    /// The crew folder's digest, shortened, as its runners start from it (hot reload
    /// changes it); `None` for crews on worker hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When that version was loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_at: Option<Timestamp>,
    /// How the crew's last runner started: `cold`, `zygote` (from its interpreter's
    /// fork server) or `cold_fallback` (the fork server kept failing); `None` before
    /// the first start, and for crews on worker hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_mode: Option<&'static str>,
    /// How long that start took, spawn to `ready`, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<f64>,
}

/// A cloneable, `'static` view of a pool's crews, for tasks that report state (control
/// socket, metrics, heartbeats) while the pool runs them.
#[derive(Clone)]
pub struct StatusHandle(Arc<dyn Fn() -> Vec<CrewStatus> + Send + Sync>);

impl StatusHandle {
    /// A view that reads the crews' state through `read`.
    pub fn new(read: impl Fn() -> Vec<CrewStatus> + Send + Sync + 'static) -> Self {
        StatusHandle(Arc::new(read))
    }

    /// Every crew's current state, in the order the crews were given.
    pub fn snapshot(&self) -> Vec<CrewStatus> {
        (self.0)()
    }
}

impl Default for StatusHandle {
    /// A pool without crews.
    fn default() -> Self {
        StatusHandle::new(Vec::new)
    }
}

impl std::fmt::Debug for StatusHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}
