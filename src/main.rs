//! The `live-crew` command line (SPEC §9). Errors become exit codes here, in one place:
//! 0 success, 1 a run finished with errors or rejected input (or an unhealthy host),
//! 2 usage or configuration (or no host answering `health`), 130 a second stop signal.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use live_crew::config::{ConfigErrors, Crews, GlobalConfig};
use live_crew::context::MemoryStore;
use live_crew::control::{self, HostState};
use live_crew::heartbeat;
use live_crew::input::{self, Source};
use live_crew::logging::{self, LogFormat};
use live_crew::metrics::{self, Metrics};
use live_crew::model::Timestamp;
use live_crew::output::{self, ActionSink, ErrorSink, OutputError};
use live_crew::replay::{self, ExpectError};
use live_crew::scaffold::{self, CrewKind};
use live_crew::scheduler::{self, Mode, Outputs, RunError};
use live_crew::shutdown::{HardStop, Shutdown};
use live_crew::supervisor::{self, Supervisor};

/// The host allocates and frees a few small objects per event and action, across the
/// scheduler, input and output threads; mimalloc does that in a fraction of glibc's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "live-crew",
    version,
    about = "Time-sliced orchestration host for AI crews"
)]
struct Cli {
    /// Log format on stderr (also `log_format` in the config, LIVE_CREW_LOG_FORMAT);
    /// default: pretty on a terminal, JSON lines otherwise.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// More log detail (-v debug, -vv trace). Without -v/-q, LIVE_CREW_LOG or `log` in
    /// the config sets the filter (default: info).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less log detail (-q warnings, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run crews over events; actions go to stdout as JSON Lines.
    Run(RunArgs),
    /// Check a crews folder without running anything; reports every problem.
    Validate(ValidateArgs),
    /// Ask the running host how its crews are, as JSON. Exit 0 healthy, 1 unhealthy,
    /// 2 no host answers.
    Health(HealthArgs),
    /// The running host's crews as a table (same exit codes as `health`).
    Status(SocketArgs),
    /// Create a crew folder from a template.
    #[command(subcommand)]
    New(NewCommand),
    /// Print the global settings in effect as YAML: defaults, then --config, then
    /// LIVE_CREW_* variables. A valid live-config.yaml as it is.
    Config(ConfigArgs),
    /// Run crews over recorded events again, in batch mode (also for stdin); with
    /// --expect, compare the actions with a recorded run's. Exit 1 if they differ.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct ReplayArgs {
    #[command(flatten)]
    batch: BatchArgs,
    /// Run only the slices that start at or after this RFC 3339 time. Earlier events
    /// still fix their stream's first slice, so slice numbers match the recorded run;
    /// context starts empty.
    #[arg(long, value_parser = parse_timestamp)]
    from_timestamp: Option<Timestamp>,
    /// A recorded run's actions (JSON Lines) that the replay must reproduce, in order;
    /// with --from-timestamp, only those of the slices replayed. Without --output, the
    /// actions are then not printed.
    #[arg(long)]
    expect: Option<PathBuf>,
}

fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text)
}

/// What `replay` adds to a batch run.
struct Replay {
    from: Option<Timestamp>,
    expect: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Global settings (live-config.yaml) to apply over the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum NewCommand {
    /// A crew folder that `validate` accepts and `run` runs as it is.
    Crew(NewCrewArgs),
}

#[derive(clap::Args)]
struct NewCrewArgs {
    /// The crew's name, also its folder's.
    name: String,
    #[arg(long, value_enum, default_value = "crewai")]
    kind: CrewKind,
    /// The crews folder to create it in.
    #[arg(long, default_value = ".")]
    crews: PathBuf,
}

/// What `run` and `replay` share: crews, events, settings and where output goes.
#[derive(clap::Args)]
struct BatchArgs {
    /// Folder whose sub-folders hold the crews (each with runtime.yaml or
    /// <name>.runtime.yaml).
    #[arg(long)]
    crews: PathBuf,
    /// Events: a JSON array or JSON Lines file, or `-` for JSON Lines on stdin (which
    /// `run` runs in live mode). Required for now; NATS input comes with distributed mode.
    #[arg(long)]
    events: PathBuf,
    /// Global settings (live-config.yaml). LIVE_CREW_* variables override it, and
    /// flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write actions here (created owner-only) instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write error records here as JSON Lines (created owner-only).
    #[arg(long)]
    errors: Option<PathBuf>,
    /// Exit 0 even if input events were invalid or late (they are still reported).
    #[arg(long)]
    allow_invalid: bool,
    /// Slice length in milliseconds (default 500; a replay needs the recorded run's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    slice_ms: Option<u64>,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    batch: BatchArgs,
    /// Write the host's `__hb` heartbeat records here as JSON Lines (created owner-only).
    #[arg(long)]
    heartbeats: Option<PathBuf>,
    /// Live mode: slices close on the wall clock (`w0 + (n+1)·slice_ms + grace_ms`);
    /// a regular file is then played at the pace of its timestamps. Stdin always runs
    /// live.
    #[arg(long)]
    live: bool,
    /// Serve Prometheus metrics on /metrics (and /healthz, /readyz) at this address,
    /// e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics_addr: Option<String>,
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// The crews folder to check.
    #[arg(long)]
    crews: PathBuf,
    /// Global settings whose sandbox defaults the crews inherit.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SocketArgs {
    /// The host's control socket (default: control_socket from --config or
    /// LIVE_CREW_CONTROL_SOCKET, else $XDG_RUNTIME_DIR/live-crew.sock, else
    /// /tmp/live-crew-<uid>.sock).
    #[arg(long, conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// The host's live-config.yaml, to find its control socket.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct HealthArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// Unhealthy if a crew's last runner heartbeat is older than this (milliseconds).
    #[arg(long)]
    max_age: Option<u64>,
}

/// How a command ended when it did not fail outright.
enum Status {
    Clean,
    /// Finished, but with errors or rejected input (or unhealthy, for `health`).
    WithErrors,
    /// A second stop signal ended the run at once.
    Interrupted,
    /// `health`/`status`: no host answered.
    Unreachable,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logging starts before the command; a config that does not load is reported by
    // the command itself, and logging then uses the environment and defaults.
    let config = match &cli.command {
        Command::Run(RunArgs { batch, .. }) | Command::Replay(ReplayArgs { batch, .. }) => {
            batch.config.as_deref()
        }
        Command::Validate(args) => args.config.as_deref(),
        Command::Health(HealthArgs { socket, .. }) | Command::Status(socket) => {
            socket.config.as_deref()
        }
        Command::Config(args) => args.config.as_deref(),
        Command::New(_) => None,
    };
    let settings = load_global(config)
        .or_else(|_| load_global(None))
        .unwrap_or_default();
    let format = cli
        .log_format
        .or(settings.log_format)
        .unwrap_or(if io::stderr().is_terminal() {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        });
    let filter = if cli.verbose > 0 || cli.quiet > 0 {
        logging::level_for(cli.verbose, cli.quiet)
    } else {
        &settings.log
    };
    logging::init(format, filter);
    let result = match cli.command {
        // One thread: the host's work is waiting on pipes, and keeping every task on one
        // thread saves the cross-thread wake-ups that cost ~20 µs per call here. Input
        // parsing and output writing have threads of their own.
        Command::Run(args) => {
            runtime().and_then(|runtime| runtime.block_on(run(args, format, None)))
        }
        Command::Replay(args) => {
            let (args, replay) = args.into_run();
            runtime().and_then(|runtime| runtime.block_on(run(args, format, Some(replay))))
        }
        Command::Validate(args) => validate(args),
        Command::Health(args) => {
            runtime().and_then(|runtime| runtime.block_on(health(args.socket, args.max_age, false)))
        }
        Command::Status(args) => {
            runtime().and_then(|runtime| runtime.block_on(health(args, None, true)))
        }
        Command::New(NewCommand::Crew(args)) => new_crew(args),
        Command::Config(args) => print_config(args),
    };
    match result {
        Ok(Status::Clean) => ExitCode::SUCCESS,
        Ok(Status::WithErrors) => ExitCode::from(1),
        Ok(Status::Unreachable) => ExitCode::from(2),
        Ok(Status::Interrupted) => ExitCode::from(130),
        Err(err) => {
            eprintln!("live-crew: error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// 1 for failures during a run, 2 for everything that stops a run from starting.
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<RunError>().is_some() {
        return 1;
    }
    debug_assert!(
        err.downcast_ref::<ConfigErrors>().is_some()
            || err.downcast_ref::<input::OpenError>().is_some()
            || err.downcast_ref::<ExpectError>().is_some()
            || err.downcast_ref::<OutputError>().is_some()
            || err.downcast_ref::<control::BindError>().is_some()
            || err.downcast_ref::<io::Error>().is_some(),
        "unclassified error: {err:#}"
    );
    2
}

impl ReplayArgs {
    fn into_run(self) -> (RunArgs, Replay) {
        let run = RunArgs {
            batch: self.batch,
            heartbeats: None,
            live: false,
            metrics_addr: None,
        };
        let replay = Replay {
            from: self.from_timestamp,
            expect: self.expect,
        };
        (run, replay)
    }
}

fn print_config(args: ConfigArgs) -> anyhow::Result<Status> {
    let global = load_global(args.config.as_deref())?;
    let yaml = serde_saphyr::to_string(&global)
        .map_err(|err| io::Error::other(format!("cannot write the settings as YAML: {err}")))?;
    io::stdout().write_all(yaml.as_bytes())?;
    Ok(Status::Clean)
}

fn load_global(config: Option<&Path>) -> Result<GlobalConfig, ConfigErrors> {
    GlobalConfig::load(config, |name| std::env::var(name).ok())
}

/// The configured control socket, or the default one (`explicit` false).
fn control_socket(global: &GlobalConfig) -> (PathBuf, bool) {
    match &global.control_socket {
        Some(path) => (path.clone(), true),
        None => (
            control::default_socket(|name| std::env::var(name).ok()),
            false,
        ),
    }
}

async fn run(
    args: RunArgs,
    log_format: LogFormat,
    replay: Option<Replay>,
) -> anyhow::Result<Status> {
    let started = tokio::time::Instant::now();
    let batch = &args.batch;
    let mut global = load_global(batch.config.as_deref())?;
    if let Some(slice_ms) = batch.slice_ms {
        global.slice_ms = slice_ms;
    }
    if args.metrics_addr.is_some() {
        global.metrics_addr = args.metrics_addr.clone();
    }
    let slice_ms = global.slice_ms;
    let expected = replay.as_ref().and_then(|replay| replay.expect.as_deref());
    if let Some(expected) = expected {
        // Before the replay, which may be long, rather than after it.
        std::fs::File::open(expected).map_err(|err| ExpectError {
            path: expected.to_path_buf(),
            reason: err.to_string(),
        })?;
    }
    let crews = Crews::load(&batch.crews, &global)?;
    if crews.as_slice().is_empty() {
        tracing::warn!(crews = %batch.crews.display(), "no crews found; events are only checked");
    }
    let source = Source::from_arg(&batch.events);
    let mode = match &replay {
        Some(Replay {
            from: Some(from), ..
        }) => Mode::ReplayFrom(*from),
        Some(_) => Mode::Batch,
        None if args.live || source == Source::Stdin => Mode::Live,
        None => Mode::Batch,
    };
    let input = input::spawn(&source, global.max_event_bytes, mode == Mode::Live)?;
    let shutdown = match Shutdown::install() {
        Ok(shutdown) => Some(shutdown),
        Err(err) => {
            tracing::warn!("cannot catch SIGTERM/SIGINT ({err}); a signal stops the host at once");
            None
        }
    };
    let batches = match &shutdown {
        Some(shutdown) => shutdown.cut_input(input.batches),
        None => input.batches,
    };
    // `replay --expect` without --output compares a private scratch copy of the actions.
    let scratch = match (expected, &batch.output) {
        (Some(_), None) => Some(
            tempfile::Builder::new()
                .prefix("live-crew-replay-")
                .tempfile()
                .context("cannot create a scratch file for the replay's actions")?,
        ),
        _ => None,
    };
    let actions_path = batch
        .output
        .clone()
        .or_else(|| scratch.as_ref().map(|file| file.path().to_path_buf()));
    let actions = match &actions_path {
        Some(path) => ActionSink::new(
            Box::new(output::create_private(path, "actions")?),
            path.clone(),
        ),
        None => ActionSink::new(Box::new(io::stdout()), "<stdout>".into()),
    };
    let errors = match &batch.errors {
        Some(path) => ErrorSink::new(Some((
            Box::new(output::create_private(path, "errors")?),
            path.clone(),
        ))),
        None => ErrorSink::new(None),
    };
    let heartbeat_file = match &args.heartbeats {
        Some(path) => Some((output::create_private(path, "heartbeats")?, path.clone())),
        None => None,
    };
    let progress = output::show_progress(input.progress.clone());
    let supervisor =
        Supervisor::start(crews.as_slice(), &global).context("cannot start the crews")?;
    let host = HostState {
        crews: supervisor.status_handle(),
        mode: match mode {
            Mode::Batch => "batch",
            Mode::ReplayFrom(_) => "replay",
            Mode::Live => "live",
        },
        started,
    };
    let metrics = Arc::new(Metrics::new(
        global.context_max_bytes,
        Some(supervisor.status_handle()),
    ));
    // Held until the run ends: dropping them stops serving (and removes the socket).
    let _metrics_server = match &global.metrics_addr {
        Some(addr) => {
            let (bound, task) = metrics::serve(addr, metrics.clone(), host.clone())
                .await
                .with_context(|| format!("cannot serve metrics on {addr}; check --metrics-addr"))?;
            tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
            Some(AbortOnDrop(task))
        }
        None => None,
    };
    let (socket, explicit) = control_socket(&global);
    let _control = match control::serve(&socket, host.clone()).await {
        Ok(served) => Some(served),
        Err(err) if !explicit => {
            tracing::warn!("{err}; this host runs without a control socket");
            None
        }
        Err(err) => return Err(err.into()),
    };
    let _heartbeats = AbortOnDrop(heartbeat::spawn(
        Duration::from_millis(global.heartbeat_ms),
        host.clone(),
        metrics.clone(),
        heartbeat_file,
    ));
    let store = MemoryStore::default();
    let outputs = Outputs {
        actions,
        errors,
        metrics,
    };
    let drain = Duration::from_millis(global.drain_timeout_ms);
    // The run owns the supervisor, so dropping it on a hard stop drops every crew actor,
    // which kills its runner.
    let work = Box::pin(async move {
        let result =
            scheduler::run(&crews, &global, &supervisor, &store, batches, outputs, mode).await;
        supervisor.shutdown().await;
        result
    });
    let result = match shutdown {
        Some(shutdown) => tokio::select! {
            result = work => result,
            stop = shutdown.hard_stop(drain) => {
                drop(progress);
                return Ok(hard_stop(stop, &host).await);
            }
        },
        None => work.await,
    };
    drop(progress);
    let summary = result?;
    match log_format {
        // In JSON mode stderr stays pure JSON lines, for log shippers.
        LogFormat::Json => {
            let fields = serde_json::json!({
                "events": summary.events,
                "actions": summary.actions,
                "errors": summary.error_count(),
            });
            let fields = fields.as_object().expect("an object");
            let text = summary.to_string();
            eprintln!("{}", logging::json_line("info", text.trim_end(), fields));
        }
        LogFormat::Pretty => eprint!("{summary}"),
    }
    let input_problems = summary.error_count() - summary.run_errors();
    let mut status = if summary.run_errors() > 0 || (input_problems > 0 && !batch.allow_invalid) {
        Status::WithErrors
    } else {
        Status::Clean
    };
    if let (Some(expected), Some(produced)) = (expected, &actions_path) {
        let from = replay.as_ref().and_then(|replay| replay.from);
        let verdict = replay::compare(expected, produced, from, slice_ms)?;
        let left_out = match verdict.left_out {
            0 => String::new(),
            n => format!("; {n} recorded actions of earlier slices left out"),
        };
        match verdict.difference {
            None => tracing::info!(
                actions = verdict.compared,
                "replay matches {} ({} actions{left_out})",
                expected.display(),
                verdict.compared
            ),
            Some(difference) => {
                tracing::error!(
                    "replay differs from {} at {difference}{left_out}",
                    expected.display()
                );
                status = Status::WithErrors;
            }
        }
    }
    Ok(status)
}

/// The run was dropped (its crews' runners are being killed): reaps them and says why.
async fn hard_stop(stop: HardStop, host: &HostState) -> Status {
    match stop {
        HardStop::SecondSignal => tracing::error!("second stop signal: stopping now"),
        HardStop::DrainTimeout => {
            tracing::error!("open slices did not finish within drain_timeout_ms: stopping now")
        }
    }
    supervisor::reap_runners(&host.crews).await;
    match stop {
        HardStop::SecondSignal => Status::Interrupted,
        HardStop::DrainTimeout => Status::WithErrors,
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `health` (JSON) and `status` (table): asks the host on its control socket.
async fn health(args: SocketArgs, max_age: Option<u64>, table: bool) -> anyhow::Result<Status> {
    let socket = match args.socket {
        Some(socket) => socket,
        None => control_socket(&load_global(args.config.as_deref())?).0,
    };
    let command = if table { "status" } else { "health" };
    let report = match control::query(&socket, command, max_age).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!(
                "live-crew: no host answers on {}: {err}; is `live-crew run` running with this control_socket?",
                socket.display()
            );
            return Ok(Status::Unreachable);
        }
    };
    let text = if table {
        control::status_table(&report)
    } else {
        serde_json::to_string_pretty(&report).expect("JSON values serialise") + "\n"
    };
    // A closed stdout is not an error.
    let _ = io::stdout().write_all(text.as_bytes());
    if report["healthy"] == true {
        Ok(Status::Clean)
    } else {
        Ok(Status::WithErrors)
    }
}

fn validate(args: ValidateArgs) -> anyhow::Result<Status> {
    let global = load_global(args.config.as_deref())?;
    let crews = Crews::load(&args.crews, &global)?;
    let names: Vec<&str> = crews.as_slice().iter().map(|c| c.name.as_str()).collect();
    let report = if names.is_empty() {
        format!("{}: no crews found\n", args.crews.display())
    } else {
        format!(
            "{}: {} crews OK; run order: {}\n",
            args.crews.display(),
            names.len(),
            names.join(", ")
        )
    };
    // A closed stdout is not an error.
    let _ = io::stdout().write_all(report.as_bytes());
    Ok(Status::Clean)
}

fn new_crew(args: NewCrewArgs) -> anyhow::Result<Status> {
    let dir = scaffold::new_crew(&args.crews, &args.name, args.kind)?;
    let report = format!(
        "created {}; check it with: live-crew validate --crews {}\n",
        dir.display(),
        args.crews.display()
    );
    let _ = io::stdout().write_all(report.as_bytes());
    Ok(Status::Clean)
}
