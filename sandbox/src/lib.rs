//! Process isolation for live-crew crew runners.
//!
//! Every crew runner is started in two steps: [`Sandbox::plan`] turns its [`SpawnSpec`]
//! into a [`LaunchPlan`], plain data, and a [`Launcher`] applies it: one short, linear
//! setup sequence between `fork` and `exec` (see `preexec.rs`). [`ColdLauncher`] forks
//! from the host, [`ZygoteLauncher`] from a fork server (`zygote.rs`); [`Sandbox::spawn`]
//! does both steps cold. The returned [`Child`] owns the process group, the private working directory and the per-crew cgroups, and tears
//! all of them down when it is terminated or dropped.
//!
//! The layers, as [`Sandbox::active_layers`] names them (see also the crate's README):
//!
//! | layer | what it does | fallback |
//! |---|---|---|
//! | `env_clear` | environment cleared, then PATH, LANG, HOME, TMPDIR and the crew's env | always on |
//! | `session` | own session and process group (`setsid`) | always on |
//! | `pdeathsig` | SIGKILL when the host dies | always on |
//! | `rlimits` | address space, CPU seconds, open files, core size 0 | always on |
//! | `close_fds` | only stdin, stdout and stderr survive `exec` | always on |
//! | `no_caps` | no capabilities (also for root) and no_new_privs | always on |
//! | `netns` | an empty network namespace (no interface up), shared by the crews without network | full network |
//! | `pid_namespace` | own pid namespace: the crew's processes die with its runner | the cgroup kill |
//! | `landlock` | reads only system, runtime and granted paths; writes only its temp folder and granted paths | open filesystem |
//! | `seccomp` | ptrace, mount, modules, bpf, keyring, new user namespaces... fail with EPERM | none |
//! | `pids_cgroup` | `pids.max` for the crew and everything it starts | `RLIMIT_NPROC`, which root ignores |
//! | `memory_cgroup` | memory limit for the crew as a whole, OOM kills visible | `RLIMIT_AS` per process only |
//!
//! [`Sandbox::probe`] finds out once which optional layers ([`Layer`]) the host can use.

mod cgroup;
mod child;
mod error;
mod filesystem;
mod forker;
mod launcher;
mod layers;
mod pidfd;
mod plan;
mod preexec;
mod seccomp;
mod zygote;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use child::{Child, ChildStderr, ChildStdin, ChildStdout, StartMode};
pub use error::SandboxError;
pub use filesystem::{FsRules, LandlockRules};
pub use launcher::{ColdLauncher, Launch, Launcher};
pub use layers::Layer;
pub use plan::{LaunchPlan, Planned, Resource, Rlimit};
pub use seccomp::BpfInstruction;
pub use zygote::ZygoteLauncher;

/// Resource limits for one crew, from its `sandbox:` section (or the config defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in MiB: the memory cgroup for the crew as a whole where available,
    /// and `RLIMIT_AS` for each process (twice this with the memory cgroup, as address
    /// space reserved for thread stacks and malloc arenas is not memory used).
    pub memory_mb: Option<u64>,
    /// CPU seconds (`RLIMIT_CPU`): SIGXCPU at the limit, SIGKILL one second later.
    pub cpu_s: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes and threads (pids cgroup; `RLIMIT_NPROC` as a weak fallback).
    pub processes: Option<u64>,
}

/// An unprivileged identity to run the crew as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    pub isolation: Isolation,
}

/// The optional kernel layers one crew asks for. Each applies only where the host has
/// it ([`Sandbox::layers_for`] tells); `Default` asks for none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// The host's empty network namespace, with no interface up: no network at all.
    pub no_network: bool,
    /// A pid namespace of its own, so that nothing the crew starts outlives its runner.
    pub pid_namespace: bool,
    /// Landlock rules; `None` leaves the filesystem as the crew's user sees it.
    pub filesystem: Option<FsRules>,
    /// The seccomp deny list.
    pub seccomp: bool,
    /// Move the crew into its cgroups from the host once it has started, rather than
    /// before exec; the caller then awaits [`Child::join_cgroups`] before the program's
    /// first input. A cgroup move waits for a kernel RCU grace period (5–16 ms on a
    /// cgroup v1 host), which this overlaps with the program's own start. Only for
    /// programs trusted until their first input: the bundled runners run no crew code
    /// before `hello`. Everything else joins before exec, so no first fork escapes.
    pub defer_cgroup_join: bool,
}

/// The host's view of what isolation is available, probed once at startup.
///
/// `Sandbox::default()` has none of the optional layers; call [`Sandbox::probe`] to
/// find them.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    cgroups: cgroup::Controllers,
    /// The empty network namespace crews without network join; `None` without the layer.
    netns: Option<Arc<OwnedFd>>,
    pid_namespace: bool,
    landlock: bool,
    /// The filters, compiled once; `None` without the seccomp layer.
    seccomp: Option<Vec<Vec<BpfInstruction>>>,
}

/// The layers every child gets, on any host.
const BASIC_LAYERS: [&str; 6] = [
    "session",
    "pdeathsig",
    "close_fds",
    "env_clear",
    "rlimits",
    "no_caps",
];

impl Sandbox {
    /// Probes the kernel for the isolation layers this host can use.
    ///
    /// It also removes the crew cgroups and working directories that a previous host
    /// left behind when it was killed, after killing whatever still runs in the groups.
    /// Logs a warning for every optional layer the host has to do without.
    pub fn probe() -> Self {
        Self::probe_without(&[])
    }

    /// [`Sandbox::probe`], treating the layers in `switched_off` as unavailable, as a
    /// host's configuration may ask.
    pub fn probe_without(switched_off: &[Layer]) -> Self {
        let on = |layer| !switched_off.contains(&layer);
        let mut cgroups = cgroup::Controllers::probe();
        if !on(Layer::PidsCgroup) {
            cgroups.pids = None;
        }
        if !on(Layer::MemoryCgroup) {
            cgroups.memory = None;
        }
        let seccomp = if on(Layer::Seccomp) && layers::seccomp_works() {
            seccomp::compile()
                .map_err(|error| tracing::warn!(%error, "cannot compile the seccomp filter"))
                .ok()
        } else {
            None
        };
        let sandbox = Sandbox {
            cgroups,
            netns: on(Layer::Netns)
                .then(layers::empty_netns)
                .flatten()
                .map(Arc::new),
            pid_namespace: on(Layer::PidNamespace) && layers::pid_namespace_works(),
            landlock: on(Layer::Landlock) && layers::landlock_abi() >= 1,
            seccomp,
        };
        plan::sweep_stale_workdirs();
        tracing::info!(layers = ?sandbox.active_layers(), "sandbox layers probed");
        for layer in Layer::ALL.into_iter().filter(|&layer| !sandbox.has(layer)) {
            if switched_off.contains(&layer) {
                tracing::warn!(%layer, "sandbox layer switched off by configuration");
            } else {
                tracing::warn!(
                    %layer,
                    hint = fallback_hint(layer),
                    "sandbox layer unavailable on this host; crews run without it"
                );
            }
        }
        sandbox
    }

    /// Whether the host can give its crews `layer`.
    pub fn has(&self, layer: Layer) -> bool {
        match layer {
            Layer::Netns => self.netns.is_some(),
            Layer::PidNamespace => self.pid_namespace,
            Layer::Landlock => self.landlock,
            Layer::Seccomp => self.seccomp.is_some(),
            Layer::PidsCgroup => self.cgroups.pids.is_some(),
            Layer::MemoryCgroup => self.cgroups.memory.is_some(),
        }
    }

    /// Names of the isolation layers that this host can give its children.
    pub fn active_layers(&self) -> Vec<&'static str> {
        let mut layers = BASIC_LAYERS.to_vec();
        layers.extend(
            Layer::ALL
                .into_iter()
                .filter(|&layer| self.has(layer))
                .map(Layer::name),
        );
        layers
    }

    /// Names of the layers a child started from `spec` gets: the basic ones, and the
    /// optional ones it asks for that this host has.
    pub fn layers_for(&self, spec: &SpawnSpec) -> Vec<&'static str> {
        let mut layers = BASIC_LAYERS.to_vec();
        layers.extend(
            Layer::ALL
                .into_iter()
                .filter(|&layer| self.applies(layer, spec))
                .map(Layer::name),
        );
        layers
    }

    /// Whether a child started from `spec` gets `layer`.
    fn applies(&self, layer: Layer, spec: &SpawnSpec) -> bool {
        let isolation = &spec.isolation;
        let wanted = match layer {
            Layer::Netns => isolation.no_network,
            Layer::PidNamespace => isolation.pid_namespace,
            Layer::Landlock => isolation.filesystem.is_some(),
            Layer::Seccomp => isolation.seccomp,
            Layer::PidsCgroup => true,
            Layer::MemoryCgroup => spec.limits.memory_mb.is_some(),
        };
        wanted && self.has(layer)
    }

    /// True when `Limits::processes` is only enforced by `RLIMIT_NPROC`, which root
    /// ignores and which counts every process of the user, not just the crew's.
    pub fn weak_process_limit(&self) -> bool {
        self.cgroups.pids.is_none()
    }
}

/// What a host without `layer` can do about it.
pub fn fallback_hint(layer: Layer) -> &'static str {
    match layer {
        Layer::Netns | Layer::PidNamespace => {
            "namespaces need root (CAP_SYS_ADMIN) and a kernel with network and pid namespaces"
        }
        Layer::Landlock => "needs Linux 5.13+ with landlock in the kernel's lsm= list",
        Layer::Seccomp => "needs a kernel with CONFIG_SECCOMP_FILTER",
        Layer::PidsCgroup => {
            "process limits fall back to RLIMIT_NPROC, which root ignores and which counts \
             all processes of the user; mount a writable cgroup (v2 with the pids \
             controller, or v1 pids)"
        }
        Layer::MemoryCgroup => {
            "memory is limited per process by RLIMIT_AS only; mount a writable memory cgroup"
        }
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
