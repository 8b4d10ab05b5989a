//! The `live-crew` command line (SPEC §9). Errors become exit codes here, in one place:
//! 0 success, 1 a run finished with errors or rejected input, 2 usage or configuration.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tracing_subscriber::EnvFilter;

use live_crew::config::{ConfigErrors, Crews, GlobalConfig};
use live_crew::context::MemoryStore;
use live_crew::input::{self, InputItem, Source};
use live_crew::output::{self, ActionSink, ErrorSink, OutputError};
use live_crew::scheduler::{self, RunError};
use live_crew::supervisor::Supervisor;

#[derive(Parser)]
#[command(
    name = "live-crew",
    version,
    about = "Time-sliced orchestration host for AI crews"
)]
struct Cli {
    /// Log format on stderr; default: pretty on a terminal, JSON lines otherwise.
    /// The level filter comes from LIVE_CREW_LOG (default: info).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Run crews over a file of events; actions go to stdout as JSON Lines.
    Run(RunArgs),
    /// Check a crews folder without running anything; reports every problem.
    Validate(ValidateArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Folder whose sub-folders hold the crews (each with runtime.yaml or
    /// <name>.runtime.yaml).
    #[arg(long)]
    crews: PathBuf,
    /// Events: a JSON array or JSON Lines file, or `-` for JSON Lines on stdin.
    /// Required for now; NATS input comes with live mode.
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
    /// Slice length in milliseconds (default 500).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    slice_ms: Option<u64>,
    /// Accepted for forward compatibility only: live mode (slices closing on wall-clock
    /// time) is not implemented yet, so runs use batch semantics.
    #[arg(long)]
    live: bool,
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

/// How a command ended when it did not fail outright.
enum Status {
    Clean,
    /// Finished, but with errors or rejected input.
    WithErrors,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        // One thread: the host's work is waiting on pipes, and keeping every task on one
        // thread saves the cross-thread wake-ups that cost ~20 µs per call here. Input
        // parsing and output writing have threads of their own.
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|runtime| runtime.block_on(run(args))),
        Command::Validate(args) => validate(args),
    };
    match result {
        Ok(Status::Clean) => ExitCode::SUCCESS,
        Ok(Status::WithErrors) => ExitCode::from(1),
        Err(err) => {
            eprintln!("live-crew: error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// 1 for failures during a run, 2 for everything that stops a run from starting.
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<RunError>().is_some() {
        return 1;
    }
    debug_assert!(
        err.downcast_ref::<ConfigErrors>().is_some()
            || err.downcast_ref::<input::OpenError>().is_some()
            || err.downcast_ref::<OutputError>().is_some()
            || err.downcast_ref::<io::Error>().is_some(),
        "unclassified error: {err:#}"
    );
    2
}

fn init_logging(format: Option<LogFormat>) {
    let filter =
        EnvFilter::try_from_env("LIVE_CREW_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn load_global(config: Option<&std::path::Path>) -> Result<GlobalConfig, ConfigErrors> {
    GlobalConfig::load(config, |name| std::env::var(name).ok())
}

async fn run(args: RunArgs) -> anyhow::Result<Status> {
    let mut global = load_global(args.config.as_deref())?;
    if let Some(slice_ms) = args.slice_ms {
        global.slice_ms = slice_ms;
    }
    let crews = Crews::load(&args.crews, &global)?;
    if crews.as_slice().is_empty() {
        tracing::warn!(crews = %args.crews.display(), "no crews found; events are only checked");
    }
    if args.live {
        tracing::warn!("--live is not implemented yet; using batch semantics");
    }
    let input = input::spawn(&Source::from_arg(&args.events), global.max_event_bytes)?;
    let batches = until_stop_signal(input.batches);
    let actions = match &args.output {
        Some(path) => ActionSink::new(
            Box::new(output::create_private(path, "actions")?),
            path.clone(),
        ),
        None => ActionSink::new(Box::new(io::stdout()), "<stdout>".into()),
    };
    let errors = match &args.errors {
        Some(path) => ErrorSink::new(Some((
            Box::new(output::create_private(path, "errors")?),
            path.clone(),
        ))),
        None => ErrorSink::new(None),
    };
    let progress = output::show_progress(input.progress.clone());
    let supervisor =
        Supervisor::start(crews.as_slice(), &global).context("cannot start the crews")?;
    let store = MemoryStore::default();
    let result = scheduler::run(
        &crews,
        &global,
        &supervisor,
        &store,
        batches,
        actions,
        errors,
    )
    .await;
    drop(progress);
    supervisor.shutdown().await;
    let summary = result?;
    eprint!("{summary}");
    let input_problems = summary.error_count() - summary.run_errors();
    if summary.run_errors() > 0 || (input_problems > 0 && !args.allow_invalid) {
        Ok(Status::WithErrors)
    } else {
        Ok(Status::Clean)
    }
}

/// Forwards input until SIGTERM or SIGINT. Then the scheduler sees the end of its input,
/// so it finishes the open slices and flushes every output, and the runners shut down in
/// protocol order. A second signal exits at once; the parent-death signal that the
/// sandbox sets on every crew then takes the crews down with the host.
fn until_stop_signal(mut input: mpsc::Receiver<Vec<InputItem>>) -> mpsc::Receiver<Vec<InputItem>> {
    let mut stop = match StopSignals::new() {
        Ok(stop) => stop,
        Err(err) => {
            tracing::warn!("cannot catch SIGTERM/SIGINT ({err}); a signal stops the host at once");
            return input;
        }
    };
    let (forward, batches) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut stop_requests = 0;
        loop {
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(batch) => tokio::select! {
                        sent = forward.send(batch) => if sent.is_err() { return },
                        () = stop.recv() => { stop_requests = 1; break }
                    },
                    None => break,
                },
                () = stop.recv() => { stop_requests = 1; break }
            }
        }
        drop(forward);
        // The handlers stay installed until the host exits, so a signal during the drain
        // is never lost; the second one overall stops the host at once.
        while stop_requests < 2 {
            if stop_requests == 1 {
                tracing::warn!(
                    "stop requested: finishing open slices; signal again to stop at once"
                );
            }
            stop.recv().await;
            stop_requests += 1;
        }
        tracing::error!("second stop signal: exiting now");
        std::process::exit(130);
    });
    batches
}

/// SIGTERM and SIGINT, as one stream of stop requests.
struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    fn new() -> io::Result<Self> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
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
