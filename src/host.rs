//! One host: configuration and crews loaded ([`HostConfig::load`]), then ports,
//! supervisor and ops wired ([`Host::build`]), then one run over a source until it ends or
//! the stop signal says so ([`Host::run`]), as pueue's daemon and mini-redis's server
//! take their shutdown as an argument.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;

use crate::config::{ConfigErrors, CrewSpec, Crews, GlobalConfig};
use crate::context::{ContextStore, MemoryStore, StoreError, Stored, StreamCommit};
use crate::distributed::commit::{JetStreamSink, JetStreamStore};
use crate::distributed::remote::RemoteCrews;
use crate::distributed::topology::heartbeats_subject;
use crate::model::{Action, ActionId, Timestamp};
use crate::ops::control::{self, BindError, ControlSocket};
use crate::ops::health::{BrokerLink, HostState};
use crate::ops::heartbeat;
use crate::ops::http;
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::{HardStop, Shutdown};
use crate::pool::{CallFailure, CallOutcome, CrewPool, StatusHandle};
use crate::protocol::Call;
use crate::reload::CrewsWatch;
use crate::scheduler::clock::{CatchUp, Clock, EventTime};
use crate::scheduler::wall_clock::{Anchor, WallClock};
use crate::scheduler::{self, LoadCrews, Ports, RunError};
use crate::sink::{
    ActionSink, ErrorRecord, ErrorSink, JsonLinesSink, OutputError, RunSummary, SinkError,
    create_private,
};
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
    /// Distributed (SPEC §12): event time while the NATS consumer has a backlog, the
    /// wall clock once it has caught up.
    Distributed,
}

impl RunMode {
    fn name(self) -> &'static str {
        match self {
            RunMode::Batch => "batch",
            RunMode::Live => "live",
            RunMode::ReplayFrom(_) => "replay",
            RunMode::Distributed => "distributed",
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
    /// Over the config's `hot_reload`.
    pub watch: bool,
    /// `run --record-llm` or `replay --llm`.
    pub llm_tape: Option<crate::llm::Tape>,
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

/// Where actions and contexts go.
pub enum Backend {
    /// Actions to `--output` or stdout, contexts in memory.
    Local,
    /// Actions to `--output` or stdout, contexts in the `live_ctx` KV bucket
    /// (`kv_backend: jetstream` with file input).
    LocalWithKv(Box<JetStreamStore>),
    /// Actions to `live.<stream>.actions`, contexts in the `live_ctx` KV bucket.
    JetStream(Box<JetStreamPorts>),
}

/// The ports of a distributed host besides its source.
pub struct JetStreamPorts {
    pub store: JetStreamStore,
    pub sink: JetStreamSink,
    /// The crews that run on worker hosts (`--selector`); the supervisor runs the rest.
    pub remote: Option<RemoteCrews>,
    /// The source's flag: set while it has no backlog.
    pub caught_up: Arc<std::sync::atomic::AtomicBool>,
    /// The connection's state, for health and metrics.
    pub link: Arc<BrokerLink>,
    /// For the heartbeats on `live.<stream>.heartbeats`.
    pub client: async_nats::Client,
}

/// The context store of a run.
pub enum Contexts {
    Memory(MemoryStore),
    /// Boxed: a KV store handle is large, and the enum should not carry its size.
    JetStream(Box<JetStreamStore>),
}

impl ContextStore for Contexts {
    async fn load(&self, stream: &str) -> Result<Stored, StoreError> {
        match self {
            Contexts::Memory(store) => store.load(stream).await,
            Contexts::JetStream(store) => store.load(stream).await,
        }
    }

    async fn commit(
        &self,
        stream: &str,
        expected: u64,
        commit: StreamCommit<'_>,
    ) -> Result<u64, StoreError> {
        match self {
            Contexts::Memory(store) => store.commit(stream, expected, commit).await,
            Contexts::JetStream(store) => store.commit(stream, expected, commit).await,
        }
    }

    fn keeps_outbox(&self) -> bool {
        match self {
            Contexts::Memory(store) => store.keeps_outbox(),
            Contexts::JetStream(store) => store.keeps_outbox(),
        }
    }
}

/// The crews of a run: the supervisor's, and those on worker hosts.
pub struct HostPool {
    local: Supervisor,
    remote: Option<RemoteCrews>,
}

impl HostPool {
    fn remote_for(&self, crew: &str) -> Option<&RemoteCrews> {
        self.remote.as_ref().filter(|remote| remote.has(crew))
    }
}

impl LoadCrews for HostPool {
    fn load(&self, spec: &CrewSpec) -> Result<(), String> {
        match self.remote_for(&spec.name) {
            Some(_) => Err(format!(
                "crew '{}' runs on worker hosts: restart them to give it a new version",
                spec.name
            )),
            None => self.local.load(spec),
        }
    }

    fn unload(&self, crew: &str) {
        self.local.unload(crew);
    }
}

impl CrewPool for HostPool {
    fn call(&self, crew: &str, call: Call) -> impl Future<Output = CallOutcome> + Send + 'static {
        match self.remote_for(crew) {
            Some(remote) => Either::Left(remote.call(crew, call)),
            None => Either::Right(self.local.call(crew, call)),
        }
    }

    fn count_failure(&self, crew: &str, failure: CallFailure) {
        match self.remote_for(crew) {
            Some(remote) => remote.count_failure(crew, failure),
            None => self.local.count_failure(crew, failure),
        }
    }

    fn status(&self) -> StatusHandle {
        let local = self.local.status();
        match &self.remote {
            None => local,
            Some(remote) => {
                let remote = remote.status();
                StatusHandle::new(move || {
                    let mut crews = local.snapshot();
                    crews.extend(remote.snapshot());
                    crews
                })
            }
        }
    }
}

/// The action sink of a run.
pub enum Actions {
    Lines(JsonLinesSink),
    JetStream(JetStreamSink),
}

impl ActionSink for Actions {
    fn push(&mut self, action: &Action, id: ActionId<'_>) {
        match self {
            Actions::Lines(sink) => sink.push(action, id),
            Actions::JetStream(sink) => sink.push(action, id),
        }
    }

    fn push_error(&mut self, record: &ErrorRecord) {
        match self {
            Actions::Lines(sink) => sink.push_error(record),
            Actions::JetStream(sink) => sink.push_error(record),
        }
    }

    async fn flush_if_full(&mut self) -> Result<(), SinkError> {
        match self {
            Actions::Lines(sink) => sink.flush_if_full().await,
            Actions::JetStream(sink) => sink.flush_if_full().await,
        }
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            Actions::Lines(sink) => sink.flush().await,
            Actions::JetStream(sink) => sink.flush().await,
        }
    }

    async fn finish(self) -> Result<(), SinkError> {
        match self {
            Actions::Lines(sink) => sink.finish().await,
            Actions::JetStream(sink) => sink.finish().await,
        }
    }
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
        global.hot_reload |= options.watch;
        global.llm.tape = options.llm_tape.clone();
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
    pool: HostPool,
    /// With `hot_reload`: the crews folder, watched while the run goes on.
    watch: Option<CrewsWatch>,
    status: StatusHandle,
    store: Contexts,
    actions: Actions,
    /// Distributed mode: the source's caught-up flag, for the clock.
    caught_up: Option<Arc<std::sync::atomic::AtomicBool>>,
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
    pub async fn build(config: HostConfig, backend: Backend) -> Result<Host, HostError> {
        let started = tokio::time::Instant::now();
        let HostConfig {
            global,
            crews,
            options,
        } = config;
        let lines = || -> Result<JsonLinesSink, HostError> {
            Ok(match &options.output {
                Some(path) => {
                    JsonLinesSink::new(Box::new(create_private(path, "actions")?), path.clone())
                }
                None => JsonLinesSink::new(Box::new(io::stdout()), "<stdout>".into()),
            })
        };
        let (actions, store, caught_up, broker, forward, remote) = match backend {
            Backend::Local => (
                Actions::Lines(lines()?),
                Contexts::Memory(MemoryStore::default()),
                None,
                None,
                None,
                None,
            ),
            Backend::LocalWithKv(store) => (
                Actions::Lines(lines()?),
                Contexts::JetStream(store),
                None,
                None,
                None,
                None,
            ),
            Backend::JetStream(ports) => {
                let JetStreamPorts {
                    store,
                    sink,
                    remote,
                    caught_up,
                    link,
                    client,
                } = *ports;
                let forward = heartbeats_on_nats(client, link.clone());
                (
                    Actions::JetStream(sink),
                    Contexts::JetStream(Box::new(store)),
                    Some(caught_up),
                    Some(link),
                    Some(forward),
                    remote,
                )
            }
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
        let local: Vec<CrewSpec> = crews
            .as_slice()
            .iter()
            .filter(|spec| !remote.as_ref().is_some_and(|remote| remote.has(&spec.name)))
            .cloned()
            .collect();
        let pool = HostPool {
            local: Supervisor::start(&local, &global).map_err(HostError::Crews)?,
            remote,
        };
        let status = pool.status();
        let mut metrics = Metrics::new(global.context_max_bytes, Some(status.clone()));
        if let Some(link) = broker.clone() {
            metrics = metrics.watching(link);
        }
        let metrics = Arc::new(metrics);
        let state = HostState {
            crews: status.clone(),
            mode: options.mode.name(),
            started,
            broker,
            calls: Some(metrics.recent_calls().clone()),
        };
        let counted = metrics.clone();
        pool.local
            .gateway()
            .report_to(Arc::new(move |crew, usage| counted.llm_used(crew, usage)));
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
        let control =
            control::serve_configured(global.control_socket.as_deref(), state.clone()).await?;
        let heartbeats = AbortOnDrop(heartbeat::spawn(
            Duration::from_millis(global.heartbeat_ms),
            state,
            metrics.clone(),
            heartbeat_file,
            forward,
        ));
        let watch = (global.hot_reload && !matches!(options.mode, RunMode::ReplayFrom(_)))
            .then(|| CrewsWatch::new(&options.crews, &global));
        if watch.is_some() {
            metrics.zero_reloads(crews.as_slice().iter().map(|spec| spec.name.as_str()));
        }
        Ok(Host {
            store,
            caught_up,
            global,
            crews,
            watch,
            mode: options.mode,
            pool,
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
            pool,
            watch,
            status,
            store,
            actions,
            errors,
            metrics,
            caught_up,
            ..
        } = self;
        let (clock, replay_from) = match (mode, caught_up) {
            (RunMode::ReplayFrom(from), _) => (Clock::EventTime(event_time(&global)), Some(from)),
            (RunMode::Live, _) => (
                Clock::Wall(WallClock::new(global.slice_ms, global.grace_ms)),
                None,
            ),
            (RunMode::Distributed, Some(caught_up)) => (
                Clock::CatchUp(CatchUp {
                    event_time: event_time(&global),
                    wall: WallClock::anchored(global.slice_ms, global.grace_ms, Anchor::EventTime),
                    caught_up,
                }),
                None,
            ),
            (RunMode::Batch | RunMode::Distributed, _) => {
                (Clock::EventTime(event_time(&global)), None)
            }
        };
        let drain = Duration::from_millis(global.drain_timeout_ms);
        let stop_input = shutdown.clone().stop_requested();
        // The run owns the supervisor, so dropping it on a hard stop drops every crew
        // actor, which kills its runner.
        let watched = metrics.clone();
        let (reload, reloads) = tokio::sync::mpsc::unbounded_channel();
        let work = Box::pin(async move {
            let ports = Ports {
                pool: &pool,
                store: &store,
                source,
                actions,
                clock,
                errors,
                metrics,
                reloads: watch.is_some().then_some(reloads),
            };
            let run = scheduler::run(&crews, &global, ports, replay_from, stop_input);
            let result = match watch {
                // The run's end ends the watch; the watch ends by itself only once the
                // run has let go of its new versions, while it finishes.
                Some(watch) => {
                    let mut run = std::pin::pin!(run);
                    tokio::select! {
                        result = &mut run => result,
                        () = watch.run(reload, &watched) => run.await,
                    }
                }
                None => run.await,
            };
            pool.local.shutdown().await;
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

/// Heartbeats on `live.<stream>.heartbeats` (core NATS) for every stream the host has
/// committed; fire and forget, as a heartbeat that cannot go out says all it needs to.
fn heartbeats_on_nats(client: async_nats::Client, link: Arc<BrokerLink>) -> heartbeat::Forward {
    Box::new(move |record: &[u8]| {
        for stream in link.streams() {
            let client = client.clone();
            let record = record.to_vec();
            tokio::spawn(async move {
                let _ = client
                    .publish(heartbeats_subject(&stream), record.into())
                    .await;
            });
        }
    })
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
