use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use crate::cgroup::CrewCgroups;
use crate::forker::Spawned;
use crate::zygote::ExitReports;
use crate::{Planned, pidfd};

/// The host's end of a crew's stdin.
pub type ChildStdin = pipe::Sender;
/// The host's end of a crew's stdout.
pub type ChildStdout = pipe::Receiver;
/// The host's end of a crew's stderr.
pub type ChildStderr = pipe::Receiver;

/// A running sandboxed child. Dropping it kills the whole crew: its leader, its process
/// group and every process in its cgroups; the leader is reaped in the background.
///
/// Fields drop in order: the pipes, the leader, the cgroups (after their members are
/// gone) and last the working directory.
#[derive(Debug)]
pub struct Child {
    crew: String,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    leader: Leader,
    start_mode: StartMode,
    /// Whether the leader is PID 1 of a pid namespace of its own.
    pid_namespace: bool,
    /// Spawned with `defer_cgroup_join` and not moved into its cgroups yet.
    cgroups_pending: bool,
    cgroups: CrewCgroups,
    workdir: tempfile::TempDir,
}

/// The crew's first process. Known by its pidfd, so that it can be signalled and
/// waited for however it was forked, and never mistaken for a later owner of its pid.
#[derive(Debug)]
struct Leader {
    /// Also the crew's process group and session id; never 0.
    pid: u32,
    /// Readable once the process has exited. Shared with the reaper thread of a drop.
    pidfd: AsyncFd<Arc<OwnedFd>>,
    parent: Parent,
    /// Set once reaped.
    status: Option<ExitStatus>,
}

/// How a crew's process was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Forked and exec'd by the host.
    Cold,
    /// Forked by a fork server that had imported the runtime already (SPEC §13).
    Zygote,
    /// Meant for a fork server that kept failing, so started cold instead.
    ColdFallback,
}

impl StartMode {
    /// The name in `health`, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            StartMode::Cold => "cold",
            StartMode::Zygote => "zygote",
            StartMode::ColdFallback => "cold_fallback",
        }
    }
}

/// Who forked the leader, and so who collects its exit status.
#[derive(Debug, Clone)]
enum Parent {
    /// The host forked it, and reaps it with `waitid(P_PIDFD)`.
    Host,
    /// A fork server forked it, reaps it and reports its exit status.
    Zygote(Arc<ExitReports>),
}

impl Leader {
    /// Waits for the exit and reaps. Cancel-safe; returns the same status once reaped.
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            // A pidfd is readable once its process has exited, child of ours or not.
            let mut ready = self.pidfd.readable().await?;
            let status = match &self.parent {
                Parent::Host => pidfd::try_reap(ready.get_inner())?,
                Parent::Zygote(reports) => Some(reports.status_of(self.pid).await),
            };
            match status {
                Some(status) => {
                    self.status = Some(status);
                    return Ok(status);
                }
                None => ready.clear_ready(),
            }
        }
    }

    fn kill(&self) {
        // ESRCH once it has exited, which is fine.
        let _ = pidfd::send_signal(self.pidfd.get_ref(), libc::SIGKILL);
    }

    /// Reaps the leader after a SIGKILL without waiting for it: on a thread of its own,
    /// unless it is gone already. For `Drop`, which cannot await.
    fn reap_in_background(&self) {
        if self.status.is_some() {
            return;
        }
        match &self.parent {
            // The fork server reaps it, and drops the report nobody asks for.
            Parent::Zygote(reports) => reports.forget(self.pid),
            Parent::Host => {
                // Err: reaped by someone else (a waitpid on the pid), nothing to do.
                if !matches!(pidfd::try_reap(self.pidfd.get_ref()), Ok(None)) {
                    return;
                }
                let pidfd = Arc::clone(self.pidfd.get_ref());
                let reaper = std::thread::Builder::new()
                    .name("live-crew-reaper".to_owned())
                    .spawn(move || pidfd::reap(&pidfd));
                if let Err(error) = reaper {
                    tracing::warn!(
                        pid = self.pid, %error,
                        "cannot start a thread to reap a killed crew runner; it stays a \
                         zombie until the host exits"
                    );
                }
            }
        }
    }
}

impl Child {
    /// Takes over the process of `planned` that this host forked, and from then on owns
    /// the crew's working directory and cgroups. Within a tokio runtime.
    pub(crate) fn forked_by_host(
        planned: Planned,
        spawned: Spawned,
        start_mode: StartMode,
    ) -> io::Result<Child> {
        let (mut process, pidfd) = spawned;
        let pipes = Pipes {
            stdin: process.stdin.take().map(OwnedFd::from),
            stdout: process.stdout.take().map(OwnedFd::from),
            stderr: process.stderr.take().map(OwnedFd::from),
        };
        let defer_cgroup_join = planned.defer_cgroup_join;
        let forked = Forked {
            pid: process.id(),
            pidfd,
            parent: Parent::Host,
            start_mode,
            cgroups_pending: defer_cgroup_join,
        };
        Child::take_over(planned, forked, pipes)
    }

    /// Takes over the process of `planned` that a fork server forked, which the host
    /// moves into the crew's cgroups before its first input ([`Child::join_cgroups`]).
    pub(crate) fn forked_by_zygote(
        planned: Planned,
        (pid, pidfd): (u32, OwnedFd),
        reports: Arc<ExitReports>,
        pipes: Pipes,
    ) -> io::Result<Child> {
        let forked = Forked {
            pid,
            pidfd,
            parent: Parent::Zygote(reports),
            start_mode: StartMode::Zygote,
            cgroups_pending: true,
        };
        Child::take_over(planned, forked, pipes)
    }

    fn take_over(planned: Planned, forked: Forked, pipes: Pipes) -> io::Result<Child> {
        let Planned {
            plan,
            workdir,
            cgroups,
            defer_cgroup_join: _,
        } = planned;
        let Forked {
            pid,
            pidfd,
            parent,
            start_mode,
            cgroups_pending,
        } = forked;
        // SAFETY: the Arc keeps the pidfd open, and its fd number unchanged, for as long
        // as the AsyncFd lives.
        let registered =
            unsafe { AsyncFd::register_with_interest(Arc::new(pidfd), Interest::READABLE) };
        let pidfd = match registered {
            Ok(registered) => registered,
            Err(error) => {
                let (pidfd, error) = error.into_parts();
                // Not a `Child` yet, whose drop would do this.
                let _ = pidfd::send_signal(&pidfd, libc::SIGKILL);
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                if let Parent::Host = parent {
                    let _ = pidfd::reap(&pidfd);
                }
                return Err(error);
            }
        };
        let mut child = Child {
            crew: plan.crew,
            stdin: None,
            stdout: None,
            stderr: None,
            leader: Leader {
                pid,
                pidfd,
                parent,
                status: None,
            },
            start_mode,
            pid_namespace: plan.new_pid_namespace,
            cgroups_pending,
            cgroups,
            workdir,
        };
        // From here on, an error drops `child`, which kills and reaps the crew.
        child.stdin = pipes.stdin.map(ChildStdin::from_owned_fd).transpose()?;
        child.stdout = pipes.stdout.map(ChildStdout::from_owned_fd).transpose()?;
        child.stderr = pipes.stderr.map(ChildStderr::from_owned_fd).transpose()?;
        Ok(child)
    }

    /// How the crew's process was started.
    pub fn start_mode(&self) -> StartMode {
        self.start_mode
    }

    /// The leader's pid, which is also the crew's process group and session id.
    pub fn id(&self) -> u32 {
        self.leader.pid
    }

    /// Moves the crew into its cgroups, after a spawn with
    /// [`Isolation::defer_cgroup_join`](crate::Isolation); does nothing otherwise. The
    /// kernel's grace period is waited out on a blocking thread, not the runtime's.
    pub async fn join_cgroups(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.cgroups_pending) {
            return Ok(());
        }
        let procs: Vec<PathBuf> = self
            .cgroups
            .paths()
            .map(|dir| dir.join("cgroup.procs"))
            .collect();
        let pid = self.leader.pid.to_string();
        tokio::task::spawn_blocking(move || {
            procs
                .iter()
                .try_for_each(|procs| std::fs::write(procs, &pid))
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The private working directory (also HOME and TMPDIR). Removed on drop.
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// The crew's cgroup directories: pids, and memory where the crew has a memory
    /// limit. Empty once [`Child::terminate`] has removed them.
    pub fn cgroups(&self) -> impl Iterator<Item = &Path> {
        self.cgroups.paths()
    }

    /// Whether the kernel OOM-killed a process of the crew because the crew as a whole
    /// went over its memory limit. Also answers after [`Child::terminate`]. Always false
    /// without the memory cgroup layer.
    pub fn oom_killed(&self) -> bool {
        self.cgroups.oom_killed()
    }

    /// Waits for the leader to exit, and reaps it. Cancel-safe; once reaped, returns
    /// the same status again.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.leader.wait().await
    }

    /// Signals the whole process group.
    pub fn signal_group(&self, signal: Signal) {
        // `pid` is never 0, which would signal the host's own group.
        let _ = killpg(Pid::from_raw(self.leader.pid as i32), signal);
    }

    /// SIGKILLs the leader (by its pidfd), the process group and every process in the
    /// crew's cgroups, including those that left the group with `setsid`. Neither waits
    /// nor reaps.
    pub fn kill_all(&self) {
        self.leader.kill();
        self.signal_group(Signal::SIGKILL);
        self.cgroups.kill_members();
    }

    /// SIGTERM to the group and up to `grace` for the leader to exit; then SIGKILL to
    /// the group and everything in the crew's cgroups. Always reaps the leader, and
    /// removes the cgroups once they are empty.
    ///
    /// PID 1 of a pid namespace only gets SIGTERM from the host if it handles it; a
    /// leader in its own pid namespace without a handler is killed at once, which is
    /// what SIGTERM would have done to it.
    pub async fn terminate(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        let grace = if self.pid_namespace && !handles_sigterm(self.leader.pid) {
            Duration::ZERO
        } else {
            grace
        };
        self.signal_group(Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.leader.wait()).await {
            Ok(status) => status,
            Err(_elapsed) => {
                self.kill_all();
                self.leader.wait().await
            }
        };
        // Whatever the leader left behind, in its group or elsewhere in the cgroups.
        self.kill_all();
        self.cgroups.remove().await;
        status
    }
}

/// The host's ends of a crew's pipes.
#[derive(Debug, Default)]
pub(crate) struct Pipes {
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
}

/// A crew's first process, just forked, and who forked it.
struct Forked {
    pid: u32,
    pidfd: OwnedFd,
    parent: Parent,
    start_mode: StartMode,
    cgroups_pending: bool,
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill_all();
        self.leader.reap_in_background();
        tracing::debug!(crew = %self.crew, pid = self.leader.pid, "crew child dropped and killed");
    }
}

/// Whether `pid` has a SIGTERM handler (`SigCgt` in `/proc/<pid>/status`). True when
/// unknown, so the caller falls back to the ordinary grace.
fn handles_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let caught = status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok());
    caught.is_none_or(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}
