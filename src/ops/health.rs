//! The host's health as `live-crew health`, `status` and `/readyz` report it (SPEC §8).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::recent::RecentCalls;
use crate::pool::{CrewState, CrewStatus, StatusHandle};

/// The default socket: `$XDG_RUNTIME_DIR/live-crew.sock`, else `/tmp/live-crew-<uid>.sock`.
pub fn default_socket(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    match env("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => Path::new(&dir).join("live-crew.sock"),
        None => PathBuf::from(format!("/tmp/live-crew-{}.sock", nix::unistd::getuid())),
    }
}

/// One crew's health: its status, and why it is unhealthy.
#[derive(Debug, Clone, Serialize)]
pub struct CrewHealth {
    #[serde(flatten)]
    pub status: CrewStatus,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What `health` prints: the host is healthy when every crew is, and in distributed
/// mode while it is connected to NATS.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    pub host: HostInfo,
    pub crews: Vec<CrewHealth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsHealth>,
}

/// The connection to NATS, the host's part, and how far each stream is committed.
#[derive(Debug, Clone, Serialize)]
pub struct NatsHealth {
    pub connected: bool,
    #[serde(flatten)]
    pub role: Role,
    /// A worker's calls in flight, by call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_in_flight: Option<Vec<String>>,
    pub reconnects: u64,
    pub server_version: String,
    /// Each stream's last committed slice.
    pub committed: BTreeMap<String, i64>,
}

/// The host's link to its NATS servers (distributed mode): kept by the connection and
/// the context store, read by health and metrics.
#[derive(Debug, Default)]
pub struct BrokerLink {
    pub connected: AtomicBool,
    pub reconnects: AtomicU64,
    pub server_version: Mutex<String>,
    /// Each stream's last committed slice.
    pub committed: Mutex<BTreeMap<String, i64>>,
    pub role: Mutex<Role>,
    /// A worker's calls in flight, by message id.
    pub calls_in_flight: Mutex<BTreeSet<String>>,
}

/// A distributed host's part: `"role"` in its health report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Not yet sure whether another host schedules its streams.
    #[default]
    Starting,
    /// Waiting for `active_host`, which schedules the streams, to stop.
    Standby { active_host: String },
    /// Scheduling its streams.
    Active,
    /// A worker host (`live-crew worker`): runs calls for crews of other hosts.
    Worker,
}

impl BrokerLink {
    pub fn report(&self) -> NatsHealth {
        let role = lock(&self.role).clone();
        NatsHealth {
            connected: self.connected.load(Ordering::Relaxed),
            role: role.clone(),
            calls_in_flight: (role == Role::Worker)
                .then(|| lock(&self.calls_in_flight).iter().cloned().collect()),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            server_version: lock(&self.server_version).clone(),
            committed: lock(&self.committed).clone(),
        }
    }

    /// The streams committed so far.
    pub fn streams(&self) -> Vec<String> {
        lock(&self.committed).keys().cloned().collect()
    }

    /// `stream` is committed through `slice`.
    pub fn committed(&self, stream: &str, slice: i64) {
        lock(&self.committed).insert(stream.to_owned(), slice);
    }
}

/// A mutex's guard, also after a panic elsewhere poisoned it: the data behind these
/// locks is whole after every step.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    pub pid: u32,
    pub version: &'static str,
    pub mode: &'static str,
    pub uptime_ms: u64,
}

/// The host's side: everything a report is made of.
#[derive(Debug, Clone)]
pub struct HostState {
    pub crews: StatusHandle,
    pub mode: &'static str,
    pub started: Instant,
    /// Distributed mode: the link to NATS.
    pub broker: Option<Arc<BrokerLink>>,
    /// The last calls the scheduler finished (none on a worker host).
    pub calls: Option<Arc<RecentCalls>>,
}

impl HostState {
    /// A crew is healthy while it is ready or busy, and (with `max_age`) its runner's
    /// last heartbeat is at most that old.
    pub fn report(&self, max_age: Option<Duration>) -> HealthReport {
        let crews: Vec<CrewHealth> = self
            .crews
            .snapshot()
            .into_iter()
            .map(|status| {
                let problem = crew_problem(&status, max_age);
                CrewHealth {
                    healthy: problem.is_none(),
                    status,
                    problem,
                }
            })
            .collect();
        let nats = self.broker.as_ref().map(|link| link.report());
        HealthReport {
            healthy: crews.iter().all(|c| c.healthy) && nats.as_ref().is_none_or(|n| n.connected),
            nats,
            host: HostInfo {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION"),
                mode: self.mode,
                uptime_ms: self.started.elapsed().as_millis() as u64,
            },
            crews,
        }
    }
}

/// How many slices of calls `/api/state` gives unless asked: what the page draws.
pub const PAGE_SLICES: usize = 30;

impl HostState {
    /// The web page's and `monitor`'s data: the health report and the calls of each
    /// stream's last `slices` slices.
    pub fn state(&self, slices: usize) -> String {
        #[derive(Serialize)]
        struct State {
            health: HealthReport,
            calls: Vec<super::recent::CallRecord>,
        }
        let calls = self.calls.as_ref().map(|calls| calls.snapshot(slices));
        let state = State {
            health: self.report(None),
            calls: calls.unwrap_or_default(),
        };
        serde_json::to_string(&state).expect("the state serialises")
    }
}

fn crew_problem(status: &CrewStatus, max_age: Option<Duration>) -> Option<String> {
    match status.state {
        CrewState::NoWorker => return Some("no worker host serves this crew".into()),
        // Its runners are on the workers, whose own health reports their heartbeats.
        CrewState::Remote => return None,
        state if !state.is_up() => {
            let state = serde_json::to_value(state).expect("states serialise");
            return Some(format!("crew is {}", state.as_str().unwrap_or_default()));
        }
        _ => {}
    }
    let max_ms = max_age?.as_millis() as u64;
    match status.last_heartbeat_ms {
        Some(age) if age <= max_ms => None,
        Some(age) => Some(format!("last heartbeat {age} ms ago (max age {max_ms} ms)")),
        None => Some("no heartbeat yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: CrewState, heartbeat: Option<u64>) -> CrewStatus {
        CrewStatus {
            crew: "c".into(),
            state,
            pid: Some(42),
            last_heartbeat_ms: heartbeat,
            restarts: 0,
            errors: 0,
            sandbox_layers: vec!["rlimits"],
            version: None,
            loaded_at: None,
            start_mode: None,
            start_ms: None,
        }
    }

    #[test]
    fn only_ready_and_busy_crews_with_fresh_heartbeats_are_healthy() {
        let max = Some(Duration::from_millis(1000));
        for (state, healthy) in [
            (CrewState::Starting, false),
            (CrewState::Ready, true),
            (CrewState::Busy, true),
            (CrewState::Restarting, false),
            (CrewState::Disabled, false),
            (CrewState::Stopped, false),
            (CrewState::Remote, true),
            (CrewState::NoWorker, false),
        ] {
            assert_eq!(
                crew_problem(&status(state, Some(10)), max).is_none(),
                healthy,
                "{state:?}"
            );
        }
        let stale = crew_problem(&status(CrewState::Busy, Some(1500)), max).unwrap();
        assert_eq!(stale, "last heartbeat 1500 ms ago (max age 1000 ms)");
        assert!(crew_problem(&status(CrewState::Busy, Some(1500)), None).is_none());
        assert_eq!(
            crew_problem(&status(CrewState::Disabled, Some(1)), None).unwrap(),
            "crew is disabled"
        );
    }

    #[test]
    fn default_socket_prefers_the_runtime_dir() {
        let xdg = |name: &str| (name == "XDG_RUNTIME_DIR").then(|| "/run/user/7".to_owned());
        assert_eq!(default_socket(xdg), Path::new("/run/user/7/live-crew.sock"));
        let uid = nix::unistd::getuid();
        assert_eq!(
            default_socket(|_| None),
            PathBuf::from(format!("/tmp/live-crew-{uid}.sock"))
        );
    }
}
