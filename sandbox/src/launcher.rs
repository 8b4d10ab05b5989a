//! Starting planned crews. A [`Launcher`] applies a [`LaunchPlan`](crate::LaunchPlan)
//! and hands back the crew's [`Child`]; [`ColdLauncher`] forks and execs from the host,
//! [`ZygoteLauncher`](crate::ZygoteLauncher) asks a fork server.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::child::StartMode;
use crate::preexec::PreExec;
use crate::{Child, Planned, Sandbox, SandboxError, SpawnSpec, forker};

/// What [`Launcher::launch`] returns: the crew's [`Child`] once it is started.
pub type Launch<'a> = Pin<Box<dyn Future<Output = Result<Child, SandboxError>> + Send + 'a>>;

/// Starts the process of a planned crew.
///
/// The plan is data, so a launcher may also hand it to another process that forks the
/// crew (the fork server of SPEC §13); whoever forks applies the whole pre-exec sequence
/// of `preexec.rs`, so every launcher gives a crew the same isolation.
pub trait Launcher: Send + Sync {
    /// Starts `planned`, with piped stdin, stdout and stderr. The returned [`Child`]
    /// owns the crew's working directory and cgroups from then on. Must be awaited
    /// within a tokio runtime.
    fn launch(&self, planned: Planned) -> Launch<'_>;
}

/// A cold start: the host forks the crew from its forker thread (`forker.rs`) and
/// execs the program.
#[derive(Debug, Clone)]
pub struct ColdLauncher {
    /// The sandbox's empty network namespace, for plans that join it.
    netns: Option<Arc<OwnedFd>>,
}

impl Sandbox {
    /// The launcher that starts this sandbox's plans cold.
    pub fn cold_launcher(&self) -> ColdLauncher {
        ColdLauncher {
            netns: self.netns.clone(),
        }
    }

    /// Plans `spec` and launches it cold: [`Sandbox::plan`], then
    /// [`ColdLauncher::start`]. Must be called from within a tokio runtime.
    pub fn spawn(&self, spec: &SpawnSpec) -> Result<Child, SandboxError> {
        self.cold_launcher()
            .start(self.plan(spec)?, None, StartMode::Cold)
    }
}

impl Launcher for ColdLauncher {
    fn launch(&self, planned: Planned) -> Launch<'_> {
        let started = self.start(planned, None, StartMode::Cold);
        Box::pin(std::future::ready(started))
    }
}

impl ColdLauncher {
    /// Forks and execs `planned` now, blocking for both. `stdin` replaces the pipe the
    /// program reads from (the fork server's socket); `mode` is what the child reports.
    pub(crate) fn start(
        &self,
        planned: Planned,
        stdin: Option<OwnedFd>,
        mode: StartMode,
    ) -> Result<Child, SandboxError> {
        let plan = &planned.plan;
        let (crew, program) = (plan.crew.clone(), plan.program.display().to_string());
        let spawn_error = |source| SandboxError::Spawn {
            crew: crew.clone(),
            program: program.clone(),
            source,
        };
        // The pipes and the pidfd register with the caller's runtime.
        tokio::runtime::Handle::try_current().map_err(|_| {
            spawn_error(std::io::Error::other(
                "the sandbox must be used from within a tokio runtime",
            ))
        })?;
        let pre_exec = PreExec::prepare(plan, self.netns.as_ref())?;
        let mut command = Command::new(&plan.program);
        command
            .args(&plan.args)
            .env_clear()
            .envs(plan.env.iter().map(|(name, value)| (name, value)))
            .current_dir(&plan.workdir)
            .stdin(stdin.map_or_else(Stdio::piped, Stdio::from))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: PreExec::run only makes async-signal-safe calls on data prepared above,
        // as a closure between fork and exec must.
        unsafe {
            command.pre_exec(move || pre_exec.run());
        }
        let spawned = forker::spawn(command, plan.new_pid_namespace).map_err(spawn_error)?;
        Child::forked_by_host(planned, spawned, mode).map_err(spawn_error)
    }
}
