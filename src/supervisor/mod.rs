//! The supervisor: one actor task per crew runner process (SPEC §6).
//!
//! Each actor owns its runner process and a queue of calls. It starts the runner, runs
//! one call at a time, and on any failure kills the process group, reports the failed
//! call, and restarts with exponential backoff, until `max_errors` consecutive failures
//! disable the crew. Crews never share an actor, so one crew's trouble stays its own.

mod actor;
pub mod bundled;
pub(crate) mod launch;
mod process;
mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use live_crew_sandbox::{Sandbox, SpawnSpec};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{CrewSpec, GlobalConfig, RunnerSpec, crew_version};
use crate::pool::{CallFailure, CallOutcome, CrewPool, CrewState, FailureReason, StatusHandle};
use crate::protocol::{Call, Hello, HostMessage, PROTOCOL_VERSION};
use actor::{Backoff, CrewActor, Version};
use bundled::BundledRunners;
use process::RunnerLimits;
use status::CrewMonitor;

type CallRequest = (Call, oneshot::Sender<CallOutcome>);

/// Calls queued per crew before `call` waits: back-pressure on the scheduler.
const CALL_QUEUE: usize = 64;

/// How the supervisor reaches one crew's actor.
struct CrewHandle {
    calls: mpsc::Sender<CallRequest>,
    /// New versions of the crew (hot reload), taken between calls.
    versions: mpsc::UnboundedSender<Version>,
    /// Failures found after a call succeeded; unbounded because they are reported from
    /// synchronous code, and at most one comes per call.
    failures: mpsc::UnboundedSender<CallFailure>,
}

/// Handles to every crew's actor.
pub struct Supervisor {
    crews: HashMap<String, CrewHandle>,
    monitors: Vec<Arc<CrewMonitor>>,
    stop: watch::Sender<bool>,
    actors: JoinSet<()>,
    /// Kept alive while runners may still load from it; new versions start from it.
    runners: Arc<BundledRunners>,
    /// The LLM gateway; a new version of a crew brings its budget to it.
    gateway: Arc<crate::llm::Gateway>,
    heartbeat_ms: u64,
}

impl Supervisor {
    /// Starts one actor per crew; each starts its runner at once, in the background.
    /// Must be called inside a tokio runtime.
    pub fn start(crews: &[CrewSpec], global: &GlobalConfig) -> std::io::Result<Supervisor> {
        let runners = Arc::new(BundledRunners::extract()?);
        let sandbox = Arc::new(Sandbox::probe_without(&global.sandbox.disabled_layers()));
        let limits = RunnerLimits {
            heartbeat: Duration::from_millis(global.heartbeat_ms),
            // Per crew below: CrewAI crews get a longer default (`CrewSpec::load`).
            startup_timeout: Duration::from_millis(global.startup_timeout_ms),
            kill_grace: Duration::from_millis(global.kill_grace_ms),
            max_line_bytes: global.max_line_bytes,
            stderr_lines_per_s: global.stderr_lines_per_s,
            busy_poll: Duration::from_micros(global.busy_poll_us),
        };
        let backoff = Backoff {
            initial: Duration::from_millis(global.restart_backoff_ms),
            max: Duration::from_millis(global.restart_backoff_max_ms),
        };
        let (stop, stopped) = watch::channel(false);
        let mut actors = JoinSet::new();
        let mut handles = HashMap::new();
        let mut monitors = Vec::new();
        let spawns: Vec<SpawnSpec> = crews
            .iter()
            .map(|spec| {
                launch::spawn_spec(spec, runners.python_path(), |name| std::env::var(name).ok())
            })
            .collect();
        let launchers = launch::Launchers::start(
            &sandbox,
            crews,
            &spawns,
            global.zygote,
            runners.python_path(),
        );
        log_crews(crews, &spawns, &sandbox, &launchers);
        let gateway = Arc::new(crate::llm::Gateway::new(&global.llm, |name| {
            std::env::var(name).ok()
        }));
        for spec in crews {
            gateway.set_budget(&spec.name, spec.budget.clone());
        }
        for (spec, spawn) in crews.iter().zip(&spawns) {
            let layers = sandbox.layers_for(spawn);
            if let Some(missing) = spec
                .sandbox
                .require
                .iter()
                .find(|layer| !layers.contains(&layer.name()))
            {
                return Err(std::io::Error::other(format!(
                    "crew '{}' ({}): sandbox.require lists '{missing}', which this crew does \
                     not get here (hint: the host's log says whether the layer is unavailable \
                     or switched off by sandbox.disable; netns is off for crews with \
                     network: true, pid_namespace for pid_namespace: false)",
                    spec.name,
                    spec.file.display()
                )));
            }
        }
        for (spec, spawn) in crews.iter().zip(spawns) {
            let monitor = Arc::new(CrewMonitor::new(
                &spec.name,
                sandbox.layers_for(&spawn),
                short_version(&spec.dir),
            ));
            monitors.push(monitor.clone());
            let (calls, queue) = mpsc::channel(CALL_QUEUE);
            let (failures, reported) = mpsc::unbounded_channel();
            let (versions, new_versions) = mpsc::unbounded_channel();
            let hello = hello_line(spec, global.heartbeat_ms);
            let launcher = launchers.for_crew(spec, &spawn);
            let actor = CrewActor {
                crew: spec.name.as_str().into(),
                monitor,
                max_errors: spec.max_errors,
                spawn,
                hello,
                sandbox: sandbox.clone(),
                launcher,
                gateway: gateway.clone(),
                limits: RunnerLimits {
                    startup_timeout: Duration::from_millis(spec.startup_timeout_ms),
                    ..limits.clone()
                },
                backoff: backoff.clone(),
            };
            actors.spawn(actor.run(queue, reported, new_versions, stopped.clone()));
            handles.insert(
                spec.name.clone(),
                CrewHandle {
                    calls,
                    versions,
                    failures,
                },
            );
        }
        Ok(Supervisor {
            crews: handles,
            monitors,
            stop,
            actors,
            runners,
            gateway,
            heartbeat_ms: global.heartbeat_ms,
        })
    }

    /// Hands a crew a new version of itself (hot reload, SPEC §15): its runner answers
    /// the call it has, stops, and the next one starts from `spec`. False for a crew this
    /// supervisor does not run.
    pub fn reload(&self, spec: &CrewSpec) -> bool {
        let Some(handle) = self.crews.get(&spec.name) else {
            return false;
        };
        let version = Version {
            spawn: launch::spawn_spec(spec, self.runners.python_path(), |name| {
                std::env::var(name).ok()
            }),
            hello: hello_line(spec, self.heartbeat_ms),
            max_errors: spec.max_errors,
            startup_timeout: Duration::from_millis(spec.startup_timeout_ms),
        };
        self.gateway.set_budget(&spec.name, spec.budget.clone());
        let sent = handle.versions.send(version).is_ok();
        if let Some(monitor) = self.monitors.iter().find(|m| m.crew() == spec.name) {
            monitor.set_version(short_version(&spec.dir));
        }
        sent
    }

    /// The LLM gateway of this supervisor's crews.
    pub fn gateway(&self) -> &Arc<crate::llm::Gateway> {
        &self.gateway
    }

    /// Waits until `crew` reaches `state`; returns at once for an unknown crew.
    pub async fn wait_for_state(&self, crew: &str, state: CrewState) {
        if let Some(monitor) = self.monitors.iter().find(|m| m.crew() == crew) {
            monitor.wait_for(state).await;
        }
    }

    /// Shuts every runner down in protocol order and waits for all of them. A call in
    /// flight finishes first (bounded by its deadline).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.crews.clear();
        while self.actors.join_next().await.is_some() {}
    }
}

/// After the actors were dropped (a hard stop), which SIGKILLs every runner's process
/// group and cgroup members: waits until each runner has been reaped.
pub async fn reap_runners(crews: &StatusHandle) {
    for pid in crews.snapshot().iter().filter_map(|s| s.pid) {
        reap(pid).await;
    }
}

/// Waits (up to a second) until a killed runner has been reaped, by us or by the
/// sandbox's reaper thread, which answers ECHILD here.
async fn reap(pid: u32) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    for _ in 0..100 {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => tokio::time::sleep(Duration::from_millis(10)).await,
            _ => return,
        }
    }
    tracing::warn!(
        pid = pid.as_raw(),
        "runner not reaped within 1 s of SIGKILL"
    );
}

impl CrewPool for Supervisor {
    fn call(&self, crew: &str, call: Call) -> impl Future<Output = CallOutcome> + Send + 'static {
        let queue = self.crews.get(crew).map(|handle| handle.calls.clone());
        let crew = crew.to_owned();
        async move {
            let (reply, outcome) = oneshot::channel();
            let not_running = || CallFailure {
                reason: FailureReason::Disabled,
                message: format!("crew '{crew}' is not running"),
            };
            match queue {
                Some(queue) if queue.send((call, reply)).await.is_ok() => {
                    outcome.await.unwrap_or_else(|_| Err(not_running()))
                }
                _ => Err(not_running()),
            }
        }
    }

    fn count_failure(&self, crew: &str, failure: CallFailure) {
        if let Some(handle) = self.crews.get(crew) {
            let _ = handle.failures.send(failure);
        }
    }

    fn status(&self) -> StatusHandle {
        let monitors = self.monitors.clone();
        StatusHandle::new(move || monitors.iter().map(|m| m.snapshot()).collect())
    }
}

/// A crew's version as health shows it: the first 12 hex digits of its folder's digest.
fn short_version(dir: &std::path::Path) -> String {
    crew_version(dir)[..12].to_owned()
}

/// The `hello` line a runner of `spec` gets.
fn hello_line(spec: &CrewSpec, heartbeat_ms: u64) -> Vec<u8> {
    HostMessage::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        crew: spec.name.clone(),
        crew_dir: spec.dir.display().to_string(),
        config: spec.document.clone(),
        heartbeat_ms,
    })
    .encode()
}

/// One startup record for all crews: each with its kind, and the sandbox layers once when
/// every crew gets the same ones (the common case), else per crew.
fn log_crews(
    crews: &[CrewSpec],
    spawns: &[SpawnSpec],
    sandbox: &Sandbox,
    launchers: &launch::Launchers,
) {
    let kinds: Vec<String> = crews
        .iter()
        .zip(spawns)
        .map(|(spec, spawn)| {
            let kind = match &spec.runner {
                RunnerSpec::BundledPython { kind, .. } => kind.as_str(),
                RunnerSpec::Command { .. } => "command",
            };
            let mode = launchers.start_mode(spec, spawn).name();
            format!("{} ({kind}, {mode})", spec.name)
        })
        .collect();
    let layers: Vec<Vec<&str>> = spawns
        .iter()
        .map(|spawn| sandbox.layers_for(spawn))
        .collect();
    match layers.split_first() {
        Some((first, rest)) if rest.iter().all(|other| other == first) => tracing::info!(
            layers = ?first,
            "{} crews: {}; sandbox layers of every crew: {}",
            crews.len(),
            kinds.join(", "),
            first.join(", ")
        ),
        _ => {
            tracing::info!("{} crews: {}", crews.len(), kinds.join(", "));
            for (spec, layers) in crews.iter().zip(&layers) {
                tracing::info!(crew = %spec.name, ?layers, "crew '{}' sandbox layers: {}", spec.name, layers.join(", "));
            }
        }
    }
}
