//! Process isolation for live-crew crew runners.
//!
//! Every crew runner is started through [`Sandbox::spawn`], which applies one short,
//! linear setup sequence between `fork` and `exec` (see `preexec.rs`). The returned
//! [`Child`] owns the process group, the private working directory and the per-crew
//! cgroups, and tears all of them down when it is terminated or dropped.
//!
//! The layers, as [`Sandbox::active_layers`] names them (see also the crate's README):
//!
//! | layer | what it does | fallback |
//! |---|---|---|
//! | `env_clear` | environment cleared, then PATH, LANG, HOME, TMPDIR and the crew's env | always on |
//! | `session` | own session and process group (`setsid`) | always on |
//! | `pdeathsig` | SIGKILL when the host dies | always on |
//! | `pids_cgroup` | `pids.max` for the crew and everything it starts | `RLIMIT_NPROC`, which root ignores |
//! | `memory_cgroup` | memory limit for the crew as a whole, OOM kills visible | `RLIMIT_AS` per process only |
//! | `rlimits` | address space, CPU seconds, open files, core size 0 | always on |
//! | `close_fds` | only stdin, stdout and stderr survive `exec` | always on |
//!
//! [`Sandbox::probe`] finds out once which cgroup layers the host can use.

mod cgroup;
mod child;
mod error;
mod forker;
mod preexec;
mod spawn;

use std::ffi::OsString;
use std::path::PathBuf;

pub use child::Child;
pub use error::SandboxError;

/// Resource limits for one crew, from its `sandbox:` section (or the config defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in MiB: `RLIMIT_AS` for each process, and the memory cgroup for the
    /// crew as a whole where available.
    pub memory_mb: Option<u64>,
    /// CPU seconds (`RLIMIT_CPU`): SIGXCPU at the limit, SIGKILL one second later.
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

/// The host's view of what isolation is available, probed once at startup.
///
/// `Sandbox::default()` uses no cgroups at all; call [`Sandbox::probe`] to find them.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    cgroups: cgroup::Controllers,
}

impl Sandbox {
    /// Probes the kernel for the isolation layers this host can use.
    ///
    /// It also removes the crew cgroups and working directories that a previous host
    /// left behind when it was killed, after killing whatever still runs in the groups.
    /// Logs a warning when the process limit can only be enforced with `RLIMIT_NPROC`.
    pub fn probe() -> Self {
        let sandbox = Sandbox {
            cgroups: cgroup::Controllers::probe(),
        };
        spawn::sweep_stale_workdirs();
        tracing::info!(layers = ?sandbox.active_layers(), "sandbox layers probed");
        if sandbox.weak_process_limit() {
            tracing::warn!(
                "no writable pids cgroup: crew process limits fall back to RLIMIT_NPROC, \
                 which root ignores and which counts all processes of the user; \
                 mount a writable cgroup (v2 with the pids controller, or v1 pids) to enforce them"
            );
        }
        sandbox
    }

    /// Names of the isolation layers that spawned children get.
    pub fn active_layers(&self) -> Vec<&'static str> {
        let mut layers = vec!["session", "pdeathsig", "close_fds", "env_clear", "rlimits"];
        if self.cgroups.pids.is_some() {
            layers.push("pids_cgroup");
        }
        if self.cgroups.memory.is_some() {
            layers.push("memory_cgroup");
        }
        layers
    }

    /// True when `Limits::processes` is only enforced by `RLIMIT_NPROC`, which root
    /// ignores and which counts every process of the user, not just the crew's.
    pub fn weak_process_limit(&self) -> bool {
        self.cgroups.pids.is_none()
    }
}

/// How the names of the host's cgroups and working directories start; the host's pid
/// follows.
const PREFIX: &str = "live-crew-";

/// Whether `name` is `live-crew-<pid>-...` for a `pid` that no longer runs: left behind
/// by a host that was killed before it could clean up.
fn left_by_dead_host(name: &str) -> bool {
    let owner = name
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok());
    owner.is_some_and(|pid| {
        pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// `name` reduced to `[A-Za-z0-9_]` and at most 50 characters, for use in file names.
fn file_safe(name: &str) -> String {
    name.chars()
        .take(50)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crew_names_are_made_safe_for_file_names() {
        assert_eq!(file_safe("commentary_1"), "commentary_1");
        assert_eq!(file_safe("../x y"), "___x_y");
        assert_eq!(file_safe(&"a".repeat(80)).len(), 50);
    }

    #[test]
    fn only_names_of_dead_hosts_are_stale() {
        let own = std::process::id();
        // pid_max is at most 2^22, so this pid never runs.
        assert!(left_by_dead_host("live-crew-99999999-commentary-7"));
        assert!(!left_by_dead_host(&format!("live-crew-{own}-commentary-7")));
        assert!(!left_by_dead_host("live-crew-1-probe-0"));
        assert!(!left_by_dead_host("live-crew-commentary-abc"));
        assert!(!left_by_dead_host("other-99999999"));
    }
}
