//! The command line as clap parses it (SPEC §9): raw arguments, checked by the commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::scaffold::CrewKind;
use crate::config::LogFormat;
use crate::model::Timestamp;

#[derive(Parser)]
#[command(
    name = "live-crew",
    version,
    about = "Time-sliced orchestration host for AI crews"
)]
pub struct Cli {
    /// Log format on stderr (also `log_format` in the config, LIVE_CREW_LOG_FORMAT);
    /// default: pretty on a terminal, JSON lines otherwise.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// More log detail (-v debug, -vv trace). Without -v/-q, LIVE_CREW_LOG or `log` in
    /// the config sets the filter (default: info).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log detail (-q warnings, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// A worker host (distributed mode): run the calls of the crews --selector matches,
    /// which a `run --nats --selector` scheduler publishes to NATS.
    Worker(WorkerArgs),
    /// The running host's crews and its timeline of the last slices in the terminal,
    /// refreshing (q to quit).
    Monitor(SocketArgs),
    /// Check a production config against this machine (sandbox layers, cgroup
    /// delegation, NATS, metrics address, control socket folder) and print what is
    /// missing. Exit 1 if anything the config needs is.
    Deploy(DeployArgs),
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Run only the slices that start at or after this RFC 3339 time. Earlier events
    /// still fix their stream's first slice, so slice numbers match the recorded run;
    /// context starts empty.
    #[arg(long, value_parser = parse_timestamp)]
    pub from_timestamp: Option<Timestamp>,
    /// A recorded run's actions (JSON Lines) that the replay must reproduce, in order;
    /// with --from-timestamp, only those of the slices replayed. Without --output, the
    /// actions are then not printed.
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// Answer the crews' LLM requests from a `run --record-llm` folder, offline; a
    /// request not in it fails its call (reason `not_recorded`).
    #[arg(long, value_name = "DIR")]
    pub llm: Option<PathBuf>,
}

fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text)
}

#[derive(clap::Args)]
pub struct ConfigArgs {
    /// Global settings (live-config.yaml) to apply over the defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum NewCommand {
    /// A crew folder that `validate` accepts and `run` runs as it is.
    Crew(NewCrewArgs),
}

#[derive(clap::Args)]
pub struct NewCrewArgs {
    /// The crew's name, also its folder's.
    pub name: String,
    #[arg(long, value_enum, default_value = "crewai")]
    pub kind: CrewKind,
    /// The crews folder to create it in.
    #[arg(long, default_value = ".")]
    pub crews: PathBuf,
}

/// What `run` and `replay` share: crews, events, settings and where output goes.
#[derive(clap::Args)]
pub struct BatchArgs {
    /// Folder whose sub-folders hold the crews (each with runtime.yaml or
    /// <name>.runtime.yaml).
    #[arg(long)]
    pub crews: PathBuf,
    /// Events: a JSON array or JSON Lines file, or `-` for JSON Lines on stdin (which
    /// `run` runs in live mode). `run --nats` reads them from NATS instead.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Global settings (live-config.yaml). LIVE_CREW_* variables override it, and
    /// flags override both.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write actions here (created owner-only) instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Write error records here as JSON Lines (created owner-only).
    #[arg(long)]
    pub errors: Option<PathBuf>,
    /// Exit 0 even if input events were invalid or late (they are still reported).
    #[arg(long)]
    pub allow_invalid: bool,
    /// Slice length in milliseconds (default 500; a replay needs the recorded run's).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub slice_ms: Option<u64>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Write the host's `__hb` heartbeat records here as JSON Lines (created owner-only).
    #[arg(long)]
    pub heartbeats: Option<PathBuf>,
    /// Live mode: slices close on the wall clock (`w0 + (n+1)·slice_ms + grace_ms`);
    /// a regular file is then played at the pace of its timestamps. Stdin always runs
    /// live.
    #[arg(long)]
    pub live: bool,
    /// Hot reload: watch the crews folder; changed, added and removed crews take effect
    /// at the next slice to close, with the context kept (also `hot_reload: true`).
    #[arg(long)]
    pub watch: bool,
    /// Serve Prometheus metrics on /metrics (and /healthz, /readyz) at this address,
    /// e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Distributed mode (SPEC §12): events from `live.<stream>.events` on these NATS
    /// servers (comma-separated), actions to `live.<stream>.actions`, context in the
    /// `live_ctx` KV bucket. Over `nats.urls` and LIVE_CREW_NATS_URL.
    #[arg(long)]
    pub nats: Option<String>,
    /// With --nats: schedule only this stream (repeatable); default all of them.
    #[arg(long = "stream", value_name = "ID", requires = "nats")]
    pub streams: Vec<String>,
    /// Distributed mode: run the crews whose names match this regex here and publish
    /// the others' calls to worker hosts (`live-crew worker`). Over `selector` and
    /// LIVE_CREW_SELECTOR; default: every crew runs here.
    #[arg(long, value_name = "REGEX")]
    pub selector: Option<String>,
    /// Store every LLM request the crews make and its answer in this folder, so that
    /// `replay --llm DIR` can answer them offline.
    #[arg(long, value_name = "DIR")]
    pub record_llm: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Folder whose sub-folders hold the crews, as on the scheduler: the worker loads and
    /// checks them all, and runs those --selector matches.
    #[arg(long)]
    pub crews: PathBuf,
    /// Global settings (live-config.yaml), as for `run`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// NATS servers (comma-separated). Over `nats.urls` and LIVE_CREW_NATS_URL.
    #[arg(long)]
    pub nats: Option<String>,
    /// Run the crews whose names match this regex. Over `selector` and
    /// LIVE_CREW_SELECTOR.
    #[arg(long, value_name = "REGEX")]
    pub selector: Option<String>,
    /// Calls each crew takes at a time (a crew's runner answers one at a time, so more
    /// only queue here instead of on the work queue).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: u32,
}

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The production live-config.yaml to check this machine against.
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// The crews folder to check.
    #[arg(long)]
    pub crews: PathBuf,
    /// Global settings whose sandbox defaults the crews inherit.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct SocketArgs {
    /// The host's control socket (default: control_socket from --config or
    /// LIVE_CREW_CONTROL_SOCKET, else $XDG_RUNTIME_DIR/live-crew.sock, else
    /// /tmp/live-crew-<uid>.sock).
    #[arg(long, conflicts_with = "config")]
    pub socket: Option<PathBuf>,
    /// The host's live-config.yaml, to find its control socket.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Unhealthy if a crew's last runner heartbeat is older than this (milliseconds).
    #[arg(long)]
    pub max_age: Option<u64>,
}
