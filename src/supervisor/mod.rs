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
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use live_crew_sandbox::{Sandbox, SpawnSpec};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{CrewSpec, GlobalConfig, RunnerSpec, crew_version};
use crate::ops::health::lock;
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

/// Handles to every crew's actor. Crews can be added, given new versions and removed
/// while the host runs (hot reload), so the handles sit behind locks that a call holds
/// only to clone its crew's queue.
pub struct Supervisor {
    crews: RwLock<HashMap<String, CrewHandle>>,
    monitors: Arc<RwLock<Vec<Arc<CrewMonitor>>>>,
    stop: watch::Sender<bool>,
    actors: Mutex<JoinSet<()>>,
    /// Kept alive while runners may still load from it; new versions start from it.
    runners: Arc<BundledRunners>,
    /// The LLM gateway; a new version of a crew brings its budget to it.
    gateway: Arc<crate::llm::Gateway>,
    sandbox: Arc<Sandbox>,
    launchers: launch::Launchers,
    limits: RunnerLimits,
    backoff: Backoff,
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
        let spawns: Vec<SpawnSpec> = crews
            .iter()
            .map(|spec| launch_spec(spec, runners.python_path()))
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
        for (spec, spawn) in crews.iter().zip(&spawns) {
            required_layers(spec, &sandbox.layers_for(spawn)).map_err(std::io::Error::other)?;
        }
        let supervisor = Supervisor {
            crews: RwLock::new(HashMap::new()),
            monitors: Arc::new(RwLock::new(Vec::new())),
            stop: watch::channel(false).0,
            actors: Mutex::new(JoinSet::new()),
            runners,
            gateway,
            sandbox,
            launchers,
            limits,
            backoff,
            heartbeat_ms: global.heartbeat_ms,
        };
        for (spec, spawn) in crews.iter().zip(spawns) {
            supervisor.start_actor(spec, spawn);
        }
        Ok(supervisor)
    }

    /// Starts the actor of a crew this supervisor does not run yet.
    fn start_actor(&self, spec: &CrewSpec, spawn: SpawnSpec) {
        self.gateway.set_budget(&spec.name, spec.budget.clone());
        let monitor = Arc::new(CrewMonitor::new(
            &spec.name,
            self.sandbox.layers_for(&spawn),
            short_version(&spec.dir),
        ));
        write(&self.monitors).push(monitor.clone());
        let (calls, queue) = mpsc::channel(CALL_QUEUE);
        let (failures, reported) = mpsc::unbounded_channel();
        let (versions, new_versions) = mpsc::unbounded_channel();
        let actor = CrewActor {
            crew: spec.name.as_str().into(),
            monitor,
            max_errors: spec.max_errors,
            hello: hello_line(spec, self.heartbeat_ms),
            sandbox: self.sandbox.clone(),
            launcher: self.launchers.for_crew(spec, &spawn),
            spawn,
            gateway: self.gateway.clone(),
            limits: RunnerLimits {
                startup_timeout: Duration::from_millis(spec.startup_timeout_ms),
                ..self.limits.clone()
            },
            backoff: self.backoff.clone(),
        };
        let stopped = self.stop.subscribe();
        lock(&self.actors).spawn(actor.run(queue, reported, new_versions, stopped));
        write(&self.crews).insert(
            spec.name.clone(),
            CrewHandle {
                calls,
                versions,
                failures,
            },
        );
    }

    /// Hot reload (SPEC §15): starts `spec`'s crew if this supervisor does not run it,
    /// else hands the crew its new version: its runner answers the call it has, stops,
    /// and the next one starts from `spec`.
    pub fn load(&self, spec: &CrewSpec) -> Result<(), String> {
        let spawn = launch_spec(spec, self.runners.python_path());
        required_layers(spec, &self.sandbox.layers_for(&spawn))?;
        let versions = read(&self.crews)
            .get(&spec.name)
            .map(|handle| handle.versions.clone());
        let Some(versions) = versions else {
            self.start_actor(spec, spawn);
            return Ok(());
        };
        let version = Version {
            spawn,
            hello: hello_line(spec, self.heartbeat_ms),
            max_errors: spec.max_errors,
            startup_timeout: Duration::from_millis(spec.startup_timeout_ms),
        };
        self.gateway.set_budget(&spec.name, spec.budget.clone());
        versions
            .send(version)
            .map_err(|_| format!("crew '{}' has stopped", spec.name))?;
        if let Some(monitor) = read(&self.monitors).iter().find(|m| m.crew() == spec.name) {
            monitor.set_version(short_version(&spec.dir));
        }
        Ok(())
    }

    /// Stops a crew that has no call left (hot reload: its folder is gone): its runner
    /// shuts down in protocol order, and health no longer lists it.
    pub fn unload(&self, crew: &str) {
        // Its queue closes, so its actor stops its runner and ends.
        write(&self.crews).remove(crew);
        write(&self.monitors).retain(|monitor| monitor.crew() != crew);
    }

    /// The LLM gateway of this supervisor's crews.
    pub fn gateway(&self) -> &Arc<crate::llm::Gateway> {
        &self.gateway
    }

    /// Waits until `crew` reaches `state`; returns at once for an unknown crew.
    pub async fn wait_for_state(&self, crew: &str, state: CrewState) {
        let monitor = read(&self.monitors)
            .iter()
            .find(|m| m.crew() == crew)
            .cloned();
        if let Some(monitor) = monitor {
            monitor.wait_for(state).await;
        }
    }

    /// Shuts every runner down in protocol order and waits for all of them. A call in
    /// flight finishes first (bounded by its deadline).
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        write(&self.crews).clear();
        let actors = self
            .actors
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        while actors.join_next().await.is_some() {}
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
        let queue = read(&self.crews)
            .get(crew)
            .map(|handle| handle.calls.clone());
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
        if let Some(handle) = read(&self.crews).get(crew) {
            let _ = handle.failures.send(failure);
        }
    }

    fn status(&self) -> StatusHandle {
        let monitors = self.monitors.clone();
        StatusHandle::new(move || read(&monitors).iter().map(|m| m.snapshot()).collect())
    }
}

/// How a crew's runner is spawned: only `LIVE_CREW_PYTHON`, `LIVE_CREW_LLM` and the
/// crew's `env_passthrough` names are read from the host's environment.
fn launch_spec(spec: &CrewSpec, bundled_python_path: &std::path::Path) -> SpawnSpec {
    launch::spawn_spec(spec, bundled_python_path, |name| std::env::var(name).ok())
}

/// A crew whose `sandbox.require` lists a layer it does not get here cannot start.
fn required_layers(spec: &CrewSpec, layers: &[&str]) -> Result<(), String> {
    match (spec.sandbox.require.iter()).find(|layer| !layers.contains(&layer.name())) {
        Some(missing) => Err(format!(
            "crew '{}' ({}): sandbox.require lists '{missing}', which this crew does \
             not get here (hint: the host's log says whether the layer is unavailable \
             or switched off by sandbox.disable; netns is off for crews with \
             network: true, pid_namespace for pid_namespace: false)",
            spec.name,
            spec.file.display()
        )),
        None => Ok(()),
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
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
