//! One host: configuration and crews loaded ([`HostConfig::load`]), then ports,
//! supervisor and ops wired ([`Host::build`]), then one run over a source until it ends or
//! the stop signal says so ([`Host::run`]), as pueue's daemon and mini-redis's server
//! take their shutdown as an argument.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigErrors, Crews, GlobalConfig};
use crate::context::Store;
use crate::model::Timestamp;
use crate::ops::control::{self, BindError, ControlSocket};
use crate::ops::health::{self, HostState};
use crate::ops::heartbeat;
use crate::ops::http;
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::{HardStop, Shutdown};
use crate::pool::{CrewPool, StatusHandle};
use crate::scheduler::clock::{Clock, EventTime};
use crate::scheduler::wall_clock::WallClock;
use crate::scheduler::{self, Ports, RunError};
use crate::sink::{ErrorSink, JsonLinesSink, OutputError, RunSummary, create_private};
use crate::source::EventSource;
use crate::supervisor::{self, Supervisor};

/// How slices close in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// On input (event time).
    Batch,
    /// On the wall clock.
    Live,
    /// `replay --from-timestamp`: batch mode that runs only the slices that start at or
    /// after this time. Earlier events still fix their stream's epoch0, so slice numbers
    /// match the recorded run's.
    ReplayFrom(Timestamp),
}

impl RunMode {
    fn name(self) -> &'static str {
        match self {
            RunMode::Batch => "batch",
            RunMode::Live => "live",
            RunMode::ReplayFrom(_) => "replay",
        }
    }
}

/// What `run` and `replay` ask of a host, before anything is started.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub crews: PathBuf,
    pub config: Option<PathBuf>,
    /// Over the config's `slice_ms`.
    pub slice_ms: Option<u64>,
    /// Over the config's `metrics_addr`.
    pub metrics_addr: Option<String>,
    /// Actions go here (created owner-only), else to stdout.
    pub output: Option<PathBuf>,
    pub errors: Option<PathBuf>,
    pub heartbeats: Option<PathBuf>,
    pub mode: RunMode,
}

/// A host could not start; a usage or configuration problem (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Control(#[from] BindError),
    #[error("cannot start the crews: {0}")]
    Crews(io::Error),
    #[error("cannot serve metrics on {addr}; check --metrics-addr: {source}")]
    Metrics { addr: String, source: io::Error },
}

/// The settings and crews of a host, loaded and checked; nothing runs yet.
pub struct HostConfig {
    pub global: GlobalConfig,
    pub crews: Crews,
    options: HostOptions,
}

impl HostConfig {
    /// Loads the global settings (defaults, file, `LIVE_CREW_*`, flags) and the crews.
    pub fn load(options: HostOptions) -> Result<HostConfig, HostError> {
        let mut global =
            GlobalConfig::load(options.config.as_deref(), |name| std::env::var(name).ok())?;
        if let Some(slice_ms) = options.slice_ms {
            global.slice_ms = slice_ms;
        }
        if options.metrics_addr.is_some() {
            global.metrics_addr = options.metrics_addr.clone();
        }
        let crews = Crews::load(&options.crews, &global)?;
        if crews.as_slice().is_empty() {
            tracing::warn!(crews = %options.crews.display(), "no crews found; events are only checked");
        }
        Ok(HostConfig {
            global,
            crews,
            options,
        })
    }
}

/// A started host: crews starting, outputs open, ops served.
pub struct Host {
    global: GlobalConfig,
    crews: Crews,
    mode: RunMode,
    supervisor: Supervisor,
    status: StatusHandle,
    store: Store,
    actions: JsonLinesSink,
    errors: ErrorSink,
    metrics: Arc<Metrics>,
    /// Held for the run: dropping them stops serving (and removes the socket).
    _metrics_server: Option<AbortOnDrop>,
    _control: Option<ControlSocket>,
    _heartbeats: AbortOnDrop,
}

/// How a run ended.
pub enum Finished {
    /// The input ended (or the first stop signal ended it) and every slice finished.
    Completed(RunSummary),
    /// A second signal or the drain timeout stopped the host at once; the runners are
    /// killed and reaped.
    Stopped(HardStop),
}

impl Host {
    /// Opens the outputs, starts the crews and serves metrics, the control socket and
    /// heartbeats. Must be called inside a tokio runtime.
    pub async fn build(config: HostConfig) -> Result<Host, HostError> {
        let started = tokio::time::Instant::now();
        let HostConfig {
            global,
            crews,
            options,
        } = config;
        let actions = match &options.output {
            Some(path) => {
                JsonLinesSink::new(Box::new(create_private(path, "actions")?), path.clone())
            }
            None => JsonLinesSink::new(Box::new(io::stdout()), "<stdout>".into()),
        };
        let errors = match &options.errors {
            Some(path) => ErrorSink::new(Some((
                Box::new(create_private(path, "errors")?),
                path.clone(),
            ))),
            None => ErrorSink::new(None),
        };
        let heartbeat_file = match &options.heartbeats {
            Some(path) => Some((create_private(path, "heartbeats")?, path.clone())),
            None => None,
        };
        let supervisor = Supervisor::start(crews.as_slice(), &global).map_err(HostError::Crews)?;
        let status = supervisor.status();
        let state = HostState {
            crews: status.clone(),
            mode: options.mode.name(),
            started,
        };
        let metrics = Arc::new(Metrics::new(global.context_max_bytes, Some(status.clone())));
        let metrics_server = match &global.metrics_addr {
            Some(addr) => {
                let (bound, task) = http::serve(addr, metrics.clone(), state.clone())
                    .await
                    .map_err(|source| HostError::Metrics {
                        addr: addr.clone(),
                        source,
                    })?;
                tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
                Some(AbortOnDrop(task))
            }
            None => None,
        };
        let (socket, explicit) = match &global.control_socket {
            Some(path) => (path.clone(), true),
            None => (
                health::default_socket(|name| std::env::var(name).ok()),
                false,
            ),
        };
        let control = match control::serve(&socket, state.clone()).await {
            Ok(served) => Some(served),
            Err(err) if !explicit => {
                tracing::warn!("{err}; this host runs without a control socket");
                None
            }
            Err(err) => return Err(err.into()),
        };
        let heartbeats = AbortOnDrop(heartbeat::spawn(
            Duration::from_millis(global.heartbeat_ms),
            state,
            metrics.clone(),
            heartbeat_file,
        ));
        Ok(Host {
            store: Store::for_backend(global.kv_backend),
            global,
            crews,
            mode: options.mode,
            supervisor,
            status,
            actions,
            errors,
            metrics,
            _metrics_server: metrics_server,
            _control: control,
            _heartbeats: heartbeats,
        })
    }

    /// The settings in effect.
    pub fn config(&self) -> &GlobalConfig {
        &self.global
    }

    /// Runs `source` to its end. The first stop request of `shutdown` ends the input: the
    /// open slices finish, outputs are flushed, the runners shut down in protocol order.
    /// A second request, or `drain_timeout_ms` after the first, stops at once.
    pub async fn run(
        self,
        source: impl EventSource,
        shutdown: Shutdown,
    ) -> Result<Finished, RunError> {
        let Host {
            global,
            crews,
            mode,
            supervisor,
            status,
            store,
            actions,
            errors,
            metrics,
            ..
        } = self;
        let (clock, replay_from) = match mode {
            RunMode::Batch => (Clock::EventTime(event_time(&global)), None),
            RunMode::ReplayFrom(from) => (Clock::EventTime(event_time(&global)), Some(from)),
            RunMode::Live => (
                Clock::Wall(WallClock::new(global.slice_ms, global.grace_ms)),
                None,
            ),
        };
        let drain = Duration::from_millis(global.drain_timeout_ms);
        let stop_input = shutdown.clone().stop_requested();
        // The run owns the supervisor, so dropping it on a hard stop drops every crew
        // actor, which kills its runner.
        let work = Box::pin(async move {
            let ports = Ports {
                pool: &supervisor,
                store: &store,
                source,
                actions,
                clock,
                errors,
                metrics,
            };
            let result = scheduler::run(&crews, &global, ports, replay_from, stop_input).await;
            supervisor.shutdown().await;
            result
        });
        tokio::select! {
            result = work => result.map(Finished::Completed),
            stop = shutdown.hard_stop(drain) => {
                hard_stop(stop, &status).await;
                Ok(Finished::Stopped(stop))
            }
        }
    }
}

fn event_time(global: &GlobalConfig) -> EventTime {
    EventTime {
        reorder_slices: global.reorder_slices,
    }
}

/// The run was dropped (its crews' runners are being killed): says why and reaps them.
async fn hard_stop(stop: HardStop, crews: &StatusHandle) {
    match stop {
        HardStop::SecondSignal => tracing::error!("second stop signal: stopping now"),
        HardStop::DrainTimeout => {
            tracing::error!("open slices did not finish within drain_timeout_ms: stopping now")
        }
    }
    supervisor::reap_runners(crews).await;
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
