//! What each crew's actor is doing, readable at any time without asking the actor:
//! the source of `live-crew health` and `status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

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
}

const STATES: [CrewState; 6] = [
    CrewState::Starting,
    CrewState::Ready,
    CrewState::Busy,
    CrewState::Restarting,
    CrewState::Disabled,
    CrewState::Stopped,
];

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
}

/// A cloneable, `'static` view of every crew's monitor, for tasks that report state
/// (control socket, metrics, heartbeats) while the supervisor runs the crews.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(pub(crate) Arc<[Arc<CrewMonitor>]>);

impl StatusHandle {
    /// Every crew's current state, in the order the crews were given.
    pub fn snapshot(&self) -> Vec<CrewStatus> {
        self.0.iter().map(|m| m.snapshot()).collect()
    }
}

/// Shared between an actor, which writes, and any number of readers. Lock-free, so
/// updating it on every call and heartbeat costs next to nothing.
#[derive(Debug)]
pub(crate) struct CrewMonitor {
    crew: String,
    sandbox_layers: Vec<&'static str>,
    epoch: Instant,
    state: AtomicU8,
    pid: AtomicU32,
    /// Microseconds after `epoch`, plus one; zero means never.
    last_heartbeat: AtomicU64,
    restarts: AtomicU32,
    errors: AtomicU64,
    changed: Notify,
}

impl CrewMonitor {
    pub fn new(crew: &str, sandbox_layers: Vec<&'static str>) -> Self {
        CrewMonitor {
            crew: crew.to_owned(),
            sandbox_layers,
            epoch: Instant::now(),
            state: AtomicU8::new(0),
            pid: AtomicU32::new(0),
            last_heartbeat: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            errors: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    pub fn crew(&self) -> &str {
        &self.crew
    }

    pub fn set_state(&self, state: CrewState) {
        let index = STATES.iter().position(|s| *s == state).unwrap_or(0);
        self.state.store(index as u8, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    pub fn state(&self) -> CrewState {
        STATES[self.state.load(Ordering::Relaxed) as usize]
    }

    pub fn set_pid(&self, pid: Option<u32>) {
        self.pid.store(pid.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn heartbeat(&self) {
        let micros = self.epoch.elapsed().as_micros() as u64 + 1;
        self.last_heartbeat.store(micros, Ordering::Relaxed);
    }

    pub fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until the crew is in `state`.
    pub async fn wait_for(&self, state: CrewState) {
        loop {
            let changed = self.changed.notified();
            if self.state() == state {
                return;
            }
            changed.await;
        }
    }

    pub fn snapshot(&self) -> CrewStatus {
        let pid = self.pid.load(Ordering::Relaxed);
        let beat = self.last_heartbeat.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_micros() as u64 + 1;
        CrewStatus {
            crew: self.crew.clone(),
            state: self.state(),
            pid: (pid != 0).then_some(pid),
            last_heartbeat_ms: (beat != 0)
                .then(|| Duration::from_micros(now.saturating_sub(beat)).as_millis() as u64),
            restarts: self.restarts.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            sandbox_layers: self.sandbox_layers.clone(),
        }
    }
}
