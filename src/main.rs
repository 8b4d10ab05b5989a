//! The `live-crew` command line (SPEC §9): parses the arguments, runs the command, and
//! maps how it ended to an exit code, here and nowhere else: 0 success, 1 a run finished
//! with errors or rejected input (or an unhealthy host), 2 usage or configuration (or no
//! host answering `health`), 130 a second stop signal.

#![forbid(unsafe_code)]

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::Parser;

use live_crew::cli::args::{Cli, Command, NewCommand};
use live_crew::cli::{self, CommandError, Status};
use live_crew::config::LogFormat;
use live_crew::ops::logging;

/// The host allocates and frees a few small objects per event and action, across the
/// scheduler, input and output threads; mimalloc does that in a fraction of glibc's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logging starts before the command; a config that does not load is reported by
    // the command itself, and logging then uses the environment and defaults.
    let settings = cli::load_global(cli.command.config_file())
        .or_else(|_| cli::load_global(None))
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
        Command::Run(args) => block_on(cli::run(args, format, None)),
        Command::Replay(args) => {
            let (args, replay) = args.into_run();
            block_on(cli::run(args, format, Some(replay)))
        }
        Command::Validate(args) => cli::validate(&args.crews, args.config.as_deref()),
        Command::Health(args) => block_on(cli::health(args.socket, args.max_age, false)),
        Command::Status(args) => block_on(cli::health(args, None, true)),
        Command::New(NewCommand::Crew(args)) => cli::new_crew(args),
        Command::Config(args) => cli::print_config(args),
        Command::Worker(args) => block_on(cli::distributed::worker(args)),
        Command::Deploy(args) => block_on(cli::deploy::deploy(&args.config)),
        Command::Monitor(args) => block_on(cli::monitor(args)),
    };
    match result {
        Ok(Status::Clean) => ExitCode::SUCCESS,
        Ok(Status::WithErrors) => ExitCode::from(1),
        Ok(Status::Unreachable) => ExitCode::from(2),
        Ok(Status::Interrupted) => ExitCode::from(130),
        Err(err) => {
            eprintln!("live-crew: error: {err}");
            ExitCode::from(match err {
                // The run started and could not go on.
                CommandError::Run(_) => 1,
                // Everything that stops a run from starting.
                _ => 2,
            })
        }
    }
}

/// One thread: the host's work is waiting on pipes, and keeping every task on one thread
/// saves the cross-thread wake-ups that cost ~20 µs per call here. Input parsing and
/// output writing have threads of their own.
fn block_on<T>(command: impl Future<Output = Result<T, CommandError>>) -> Result<T, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CommandError::Io {
            what: "cannot start the async runtime",
            source,
        })?
        .block_on(command)
}
