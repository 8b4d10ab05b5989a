//! Hot reload (SPEC §15, `run --watch` or `hot_reload: true`): the crews folder is looked
//! at twice a second; a change that has settled (two looks alike, so an editor's burst of
//! writes counts once) is validated as `run` validates, and each changed crew whose
//! scheduling is the same gets its new version from the supervisor: its runner answers
//! the call it has, stops, and the next one starts from the new files, with the stream's
//! context untouched. An invalid folder is reported with file and field, and the running
//! versions stay. A change to how a crew is scheduled (triggers, needs, policies,
//! `timeout_ms`, context access), and added or removed crews, need a restart; the host
//! says so and keeps running what it has.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{CrewSpec, Crews, GlobalConfig, crew_version};
use crate::ops::metrics::Metrics;
use crate::supervisor::Supervisor;

/// How often the folder is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Each crew folder's digest, by folder.
type Digests = BTreeMap<PathBuf, String>;

/// The crews folder as the host runs it, and as it last looked.
pub struct CrewsWatch {
    dir: PathBuf,
    global: GlobalConfig,
    /// The versions running, by crew name.
    running: BTreeMap<String, CrewSpec>,
    /// What the folder held when the running versions were taken.
    applied: Digests,
    /// The last look, for the debounce.
    last: Digests,
}

impl CrewsWatch {
    pub fn new(dir: &Path, global: &GlobalConfig, crews: &Crews) -> CrewsWatch {
        let now = digests(dir);
        CrewsWatch {
            dir: dir.to_path_buf(),
            global: global.clone(),
            running: (crews.as_slice().iter())
                .map(|spec| (spec.name.clone(), spec.clone()))
                .collect(),
            applied: now.clone(),
            last: now,
        }
    }

    /// Watches until dropped.
    pub async fn run(mut self, pool: &Supervisor, metrics: &Metrics) {
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            self.look(pool, metrics);
        }
    }

    fn look(&mut self, pool: &Supervisor, metrics: &Metrics) {
        let now = digests(&self.dir);
        let settled = now == self.last;
        self.last = now.clone();
        if !settled || now == self.applied {
            return;
        }
        let crews = match Crews::load(&self.dir, &self.global) {
            Ok(crews) => crews,
            Err(errors) => {
                for issue in &errors.0 {
                    tracing::error!("hot reload: {issue}; the running versions stay");
                }
                metrics.crew_reloaded("", "invalid");
                self.applied = now;
                return;
            }
        };
        for spec in crews.as_slice() {
            let Some(old) = self.running.get(&spec.name) else {
                tracing::warn!(crew = %spec.name, "hot reload: crew '{}' is new; restart the host to start it", spec.name);
                metrics.crew_reloaded(&spec.name, "needs_restart");
                continue;
            };
            let changed = now.get(&spec.dir) != self.applied.get(&spec.dir) || old != spec;
            if !changed {
                continue;
            }
            if !same_schedule(old, spec) {
                tracing::warn!(
                    crew = %spec.name,
                    "hot reload: crew '{}' changes how it is scheduled (triggers, needs, \
                     policies, timeout_ms or context); restart the host to apply it",
                    spec.name
                );
                metrics.crew_reloaded(&spec.name, "needs_restart");
                continue;
            }
            if pool.reload(spec) {
                tracing::info!(crew = %spec.name, "hot reload: crew '{}' takes its new version at its next call", spec.name);
                metrics.crew_reloaded(&spec.name, "applied");
                self.running.insert(spec.name.clone(), spec.clone());
            }
        }
        for name in self.running.keys() {
            if !crews.as_slice().iter().any(|spec| &spec.name == name) {
                tracing::warn!(crew = %name, "hot reload: crew '{name}' is gone from the folder; it runs until the host restarts");
                metrics.crew_reloaded(name, "needs_restart");
            }
        }
        self.applied = now;
    }
}

/// What the scheduler's plans are made of: a change here needs a restart.
fn same_schedule(a: &CrewSpec, b: &CrewSpec) -> bool {
    a.triggers == b.triggers
        && a.needs == b.needs
        && a.wait_policy == b.wait_policy
        && a.slice_stride == b.slice_stride
        && a.backlog_policy == b.backlog_policy
        && a.timeout_ms == b.timeout_ms
        && a.context == b.context
}

/// Every crew folder under `dir` and its version.
fn digests(dir: &Path) -> Digests {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Digests::new();
    };
    (entries.filter_map(Result::ok).map(|entry| entry.path()))
        .filter(|folder| folder.is_dir())
        .map(|folder| {
            let version = crew_version(&folder);
            (std::path::absolute(&folder).unwrap_or(folder), version)
        })
        .collect()
}
