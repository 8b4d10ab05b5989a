//! What each crew's actor is doing, readable at any time without asking the actor:
//! the source of `live-crew health` and `status`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use live_crew_sandbox::StartMode;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::model::Timestamp;
use crate::ops::health::lock;
use crate::pool::{CrewState, CrewStatus};

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
    /// The version its runners start from, and when it was loaded.
    version: Mutex<(String, Timestamp)>,
    /// How its last runner started, and how long that took (spawn to `ready`).
    last_start: Mutex<Option<(StartMode, Duration)>>,
    changed: Notify,
}

impl CrewMonitor {
    pub fn new(crew: &str, sandbox_layers: Vec<&'static str>, version: String) -> Self {
        CrewMonitor {
            version: Mutex::new((version, Timestamp::now())),
            crew: crew.to_owned(),
            sandbox_layers,
            epoch: Instant::now(),
            state: AtomicU8::new(0),
            pid: AtomicU32::new(0),
            last_heartbeat: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            errors: AtomicU64::new(0),
            last_start: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    pub fn crew(&self) -> &str {
        &self.crew
    }

    pub fn set_state(&self, state: CrewState) {
        let index = CrewState::ALL.iter().position(|s| *s == state).unwrap_or(0);
        self.state.store(index as u8, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    pub fn state(&self) -> CrewState {
        CrewState::ALL[self.state.load(Ordering::Relaxed) as usize]
    }

    pub fn set_pid(&self, pid: Option<u32>) {
        self.pid.store(pid.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn heartbeat(&self) {
        let micros = self.epoch.elapsed().as_micros() as u64 + 1;
        self.last_heartbeat.store(micros, Ordering::Relaxed);
    }

    /// A new version of the crew was loaded (hot reload).
    pub fn set_version(&self, version: String) {
        *lock(&self.version) = (version, Timestamp::now());
    }

    /// A runner started in `mode` and answered `ready` `took` after its spawn began.
    pub fn started(&self, mode: StartMode, took: Duration) {
        *lock(&self.last_start) = Some((mode, took));
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
        let (version, loaded_at) = lock(&self.version).clone();
        let last_start = *lock(&self.last_start);
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
            version: Some(version),
            loaded_at: Some(loaded_at),
            start_mode: last_start.map(|(mode, _)| mode.name()),
            start_ms: last_start.map(|(_, took)| took.as_secs_f64() * 1000.0),
        }
    }
}
