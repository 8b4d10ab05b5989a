use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::cgroup::CrewCgroups;

/// A running sandboxed child. Dropping it kills the whole crew: its process group and
/// every process in its cgroups.
///
/// Fields drop in order: the pipes, the leader (tokio reaps it later), the cgroups
/// (after their members are gone) and last the working directory.
#[derive(Debug)]
pub struct Child {
    pub(crate) crew: String,
    /// Leader, process group and session id; never 0.
    pub(crate) pid: u32,
    pub stdin: Option<tokio::process::ChildStdin>,
    pub stdout: Option<tokio::process::ChildStdout>,
    pub stderr: Option<tokio::process::ChildStderr>,
    pub(crate) inner: tokio::process::Child,
    /// Whether the leader is PID 1 of a pid namespace of its own.
    pub(crate) pid_namespace: bool,
    /// Spawned with `defer_cgroup_join` and not moved into its cgroups yet.
    pub(crate) cgroups_pending: bool,
    pub(crate) cgroups: CrewCgroups,
    pub(crate) workdir: tempfile::TempDir,
}

impl Child {
    /// The leader's pid, which is also the crew's process group and session id.
    pub fn id(&self) -> u32 {
        self.pid
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
        let pid = self.pid.to_string();
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

    /// Waits for the leader to exit. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.inner.wait().await
    }

    /// Signals the whole process group.
    pub fn signal_group(&self, signal: Signal) {
        // `pid` is never 0, which would signal the host's own group.
        let _ = killpg(Pid::from_raw(self.pid as i32), signal);
    }

    /// SIGKILLs the process group and every process in the crew's cgroups, including
    /// those that left the group with `setsid`. Neither waits nor reaps.
    pub fn kill_all(&self) {
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
        let grace = if self.pid_namespace && !handles_sigterm(self.pid) {
            Duration::ZERO
        } else {
            grace
        };
        self.signal_group(Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.inner.wait()).await {
            Ok(status) => status,
            Err(_elapsed) => {
                self.kill_all();
                self.inner.wait().await
            }
        };
        // Whatever the leader left behind, in its group or elsewhere in the cgroups.
        self.kill_all();
        self.cgroups.remove().await;
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill_all();
        tracing::debug!(crew = %self.crew, pid = self.pid, "crew child dropped and killed");
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
