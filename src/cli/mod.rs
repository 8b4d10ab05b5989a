//! The commands of the `live-crew` binary (SPEC §9). `main.rs` parses the arguments,
//! calls one of these and turns what it returns into an exit code.

pub mod args;
pub mod deploy;
pub mod distributed;
pub mod expect;
pub mod monitor;
pub mod scaffold;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use args::{BatchArgs, Command, ConfigArgs, NewCrewArgs, ReplayArgs, RunArgs, SocketArgs};
use expect::ExpectError;

use crate::config::{ConfigErrors, Crews, GlobalConfig, LogFormat};
use crate::context::KvBackend;
use crate::distributed::commit::JetStreamStore;
use crate::distributed::connection::{self, NatsError};
use crate::distributed::leader::LockError;
use crate::distributed::remote::RemoteError;
use crate::distributed::source::ConsumerError;
use crate::distributed::topology::{self, TopologyError};
use crate::distributed::worker::WorkerError;
use crate::host::{Backend, Finished, Host, HostConfig, HostError, HostOptions, RunMode};
use crate::model::{Timestamp, check_stream_id};
use crate::ops::logging;
use crate::ops::progress::show_progress;
use crate::ops::shutdown::{HardStop, Shutdown};
use crate::ops::{control, health};
use crate::scheduler::RunError;
use crate::sink::RunSummary;
use crate::source::{self, InputArg, OpenError};

/// How a command ended when it did not fail outright.
pub enum Status {
    Clean,
    /// Finished, but with errors or rejected input (or unhealthy, for `health`).
    WithErrors,
    /// A second stop signal ended the run at once.
    Interrupted,
    /// `health`/`status`: no host answered.
    Unreachable,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The run started and could not go on.
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Input(#[from] OpenError),
    #[error(transparent)]
    Expect(#[from] ExpectError),
    /// `new crew` could not write the crew's folder.
    #[error(transparent)]
    Scaffold(io::Error),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
}

impl Command {
    /// The global settings file the command names, for logging to start with.
    pub fn config_file(&self) -> Option<&Path> {
        match self {
            Command::Run(RunArgs { batch, .. }) | Command::Replay(ReplayArgs { batch, .. }) => {
                batch.config.as_deref()
            }
            Command::Validate(args) => args.config.as_deref(),
            Command::Health(args) => args.socket.config.as_deref(),
            Command::Status(socket) => socket.config.as_deref(),
            Command::Config(args) => args.config.as_deref(),
            Command::New(_) => None,
            Command::Worker(args) => args.config.as_deref(),
            Command::Deploy(args) => Some(&args.config),
            Command::Monitor(socket) => socket.config.as_deref(),
        }
    }
}

/// The global settings from `file`, the environment and the defaults.
pub fn load_global(file: Option<&Path>) -> Result<GlobalConfig, ConfigErrors> {
    GlobalConfig::load(file, |name| std::env::var(name).ok())
}

/// What `replay` adds to a batch run.
pub struct Replay {
    pub from: Option<Timestamp>,
    pub expect: Option<PathBuf>,
    /// `--llm`: the recorded LLM answers.
    pub llm: Option<PathBuf>,
}

impl ReplayArgs {
    /// A replay is a batch run with a starting time and a recording to compare with.
    pub fn into_run(self) -> (RunArgs, Replay) {
        let run = RunArgs {
            batch: self.batch,
            heartbeats: None,
            live: false,
            watch: false,
            metrics_addr: None,
            nats: None,
            streams: Vec::new(),
            selector: None,
            record_llm: None,
        };
        let replay = Replay {
            from: self.from_timestamp,
            expect: self.expect,
            llm: self.llm,
        };
        (run, replay)
    }
}

/// `run` and `replay`: one host over the events, the summary on stderr, and with
/// `--expect` the comparison with the recording.
pub async fn run(
    args: RunArgs,
    log_format: LogFormat,
    replay: Option<Replay>,
) -> Result<Status, CommandError> {
    let RunArgs {
        batch,
        heartbeats,
        live,
        watch,
        metrics_addr,
        nats,
        streams,
        selector,
        record_llm,
    } = args;
    let BatchArgs {
        crews,
        events,
        config,
        output,
        errors,
        allow_invalid,
        slice_ms,
    } = batch;
    for stream in &streams {
        // A stream id is part of NATS subjects: it must not hold '.', '*' or '>'.
        check_stream_id(stream).map_err(|why| CommandError::Usage(format!("--stream: {why}")))?;
    }
    // Events from NATS with --nats, or without --events when the settings name servers.
    let input = match (&events, &nats) {
        (Some(events), None) => Some(InputArg::from_arg(events)),
        _ if replay.is_some() => return Err(CommandError::Usage("replay needs --events".into())),
        _ => None,
    };
    let mode = match (&replay, &input) {
        (
            Some(Replay {
                from: Some(from), ..
            }),
            _,
        ) => RunMode::ReplayFrom(*from),
        (Some(_), _) => RunMode::Batch,
        (None, None) => RunMode::Distributed,
        (None, Some(input)) if live || *input == InputArg::Stdin => RunMode::Live,
        (None, Some(_)) => RunMode::Batch,
    };
    let expected = replay.as_ref().and_then(|replay| replay.expect.clone());
    // `replay --expect` without --output compares a private scratch copy of the actions.
    let scratch = match (&expected, &output) {
        (Some(_), None) => Some(
            tempfile::Builder::new()
                .prefix("live-crew-replay-")
                .tempfile()
                .map_err(|source| CommandError::Io {
                    what: "cannot create a scratch file for the replay's actions",
                    source,
                })?,
        ),
        _ => None,
    };
    let actions_path = output
        .clone()
        .or_else(|| scratch.as_ref().map(|file| file.path().to_path_buf()));
    let llm_tape = match (record_llm, replay.as_ref().and_then(|r| r.llm.clone())) {
        (Some(dir), _) => Some(crate::llm::Tape::Record(dir)),
        (None, Some(dir)) => Some(crate::llm::Tape::Replay(dir)),
        (None, None) => None,
    };
    let options = HostOptions {
        crews,
        config,
        slice_ms,
        metrics_addr,
        output: actions_path.clone(),
        errors,
        heartbeats,
        mode,
        watch,
        llm_tape,
    };
    let config = HostConfig::load(options)?;
    if let Some(expected) = &expected {
        // Before the replay, which may be long, rather than after it.
        std::fs::File::open(expected).map_err(|err| ExpectError {
            path: expected.clone(),
            reason: err.to_string(),
        })?;
    }
    let slice_ms = config.global.slice_ms;
    let shutdown = Shutdown::install().unwrap_or_else(|err| {
        tracing::warn!("cannot catch SIGTERM/SIGINT ({err}); a signal stops the host at once");
        Shutdown::never()
    });
    let finished = match input {
        Some(input) => {
            let paced = mode == RunMode::Live;
            let source = source::open(&input, config.global.max_event_bytes, paced)?;
            let progress = show_progress(source.progress.clone());
            let backend = match config.global.kv_backend {
                KvBackend::Memory => Backend::Local,
                KvBackend::Jetstream => {
                    let nats = &config.global.nats;
                    let connection = connection::connect(nats).await?;
                    let bucket = topology::ensure(&connection, nats).await?;
                    let store =
                        JetStreamStore::contexts_only(&connection, bucket, slice_ms, host_id());
                    Backend::LocalWithKv(Box::new(store))
                }
            };
            let host = Host::build(config, backend).await?;
            let finished = host.run(source, shutdown).await;
            drop(progress);
            finished?
        }
        None => distributed::schedule(config, nats, &streams, selector, shutdown).await?,
    };
    let summary = match finished {
        Finished::Completed(summary) => summary,
        Finished::Stopped(HardStop::SecondSignal) => return Ok(Status::Interrupted),
        Finished::Stopped(HardStop::DrainTimeout) => return Ok(Status::WithErrors),
    };
    print_summary(&summary, log_format);
    let input_problems = summary.error_count() - summary.run_errors();
    let mut status = if summary.run_errors() > 0 || (input_problems > 0 && !allow_invalid) {
        Status::WithErrors
    } else {
        Status::Clean
    };
    if let (Some(expected), Some(produced)) = (&expected, &actions_path) {
        let from = replay.as_ref().and_then(|replay| replay.from);
        if !expect::report(expected, produced, from, slice_ms)? {
            status = Status::WithErrors;
        }
    }
    Ok(status)
}

/// This host's name in the KV values it writes: host name and process id.
fn host_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{name}-{}", std::process::id())
}

/// The run summary on stderr: one JSON log line in JSON mode, so stderr stays pure JSON
/// lines for log shippers.
fn print_summary(summary: &RunSummary, log_format: LogFormat) {
    match log_format {
        LogFormat::Json => {
            let fields = serde_json::json!({
                "events": summary.events,
                "slices": summary.slices,
                "actions": summary.actions,
                "errors": summary.error_count(),
            });
            let fields = fields.as_object().expect("an object");
            let text = summary.to_string();
            eprintln!("{}", logging::json_line("info", text.trim_end(), fields));
        }
        LogFormat::Pretty => eprint!("{summary}"),
    }
}

/// `config`: the settings in effect as YAML that loads back.
pub fn print_config(args: ConfigArgs) -> Result<Status, CommandError> {
    let global = load_global(args.config.as_deref())?;
    let yaml = serde_saphyr::to_string(&global).map_err(|err| CommandError::Io {
        what: "cannot write the settings as YAML",
        source: io::Error::other(err.to_string()),
    })?;
    io::stdout()
        .write_all(yaml.as_bytes())
        .map_err(|source| CommandError::Io {
            what: "cannot write the settings",
            source,
        })?;
    Ok(Status::Clean)
}

/// `health` (JSON) and `status` (table): asks the host on its control socket.
pub async fn health(
    args: SocketArgs,
    max_age: Option<u64>,
    table: bool,
) -> Result<Status, CommandError> {
    let socket = socket_of(args)?;
    let command = if table { "status" } else { "health" };
    let report = match control::query(&socket, command, max_age).await {
        Ok(report) => report,
        Err(err) => return Ok(unreachable(&socket, &err)),
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

/// Says that no host answers on `socket`: `health`'s and `monitor`'s exit status 2.
fn unreachable(socket: &Path, err: &io::Error) -> Status {
    eprintln!(
        "live-crew: no host answers on {}: {err}; is `live-crew run` running with this control_socket?",
        socket.display()
    );
    Status::Unreachable
}

/// The control socket `--socket` names, else the settings', else the default one.
fn socket_of(args: SocketArgs) -> Result<PathBuf, CommandError> {
    Ok(match args.socket {
        Some(socket) => socket,
        None => match load_global(args.config.as_deref())?.control_socket {
            Some(path) => path,
            None => health::default_socket(|name| std::env::var(name).ok()),
        },
    })
}

/// `monitor`: the host's state in the terminal until `q` or the host goes away.
pub async fn monitor(args: SocketArgs) -> Result<Status, CommandError> {
    let socket = socket_of(args)?;
    monitor::monitor(&socket)
        .await
        .map_err(|source| CommandError::Io {
            what: "the terminal failed",
            source,
        })
}

/// `validate`: loads the crews as `run` would, and reports.
pub fn validate(crews: &Path, config: Option<&Path>) -> Result<Status, CommandError> {
    let global = load_global(config)?;
    let loaded = Crews::load(crews, &global)?;
    let names: Vec<&str> = loaded.as_slice().iter().map(|c| c.name.as_str()).collect();
    let report = if names.is_empty() {
        format!("{}: no crews found\n", crews.display())
    } else {
        format!(
            "{}: {} crews OK; run order: {}\n",
            crews.display(),
            names.len(),
            names.join(", ")
        )
    };
    // A closed stdout is not an error.
    let _ = io::stdout().write_all(report.as_bytes());
    Ok(Status::Clean)
}

/// `new crew`: a crew folder from a template.
pub fn new_crew(args: NewCrewArgs) -> Result<Status, CommandError> {
    let dir =
        scaffold::new_crew(&args.crews, &args.name, args.kind).map_err(CommandError::Scaffold)?;
    let report = format!(
        "created {}; check it with: live-crew validate --crews {}\n",
        dir.display(),
        args.crews.display()
    );
    let _ = io::stdout().write_all(report.as_bytes());
    Ok(Status::Clean)
}
