//! The optional isolation layers, and the one-time probe of which of them the kernel
//! gives this host.

use std::fmt;
use std::os::fd::OwnedFd;

use nix::sched::{CloneFlags, setns, unshare};

/// An isolation layer that a host may lack: kernel features and cgroup controllers.
/// The always-on layers (session, pdeathsig, rlimits, close_fds, env_clear) have no
/// variant, as there is nothing to fall back from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// An empty network namespace (no interface up), shared by the crews without network.
    Netns,
    /// Own pid namespace, the runner its PID 1.
    PidNamespace,
    /// Landlock filesystem rules.
    Landlock,
    /// The seccomp deny list.
    Seccomp,
    /// pids cgroup for the process limit.
    PidsCgroup,
    /// memory cgroup for the crew's memory as a whole.
    MemoryCgroup,
}

impl Layer {
    pub const ALL: [Layer; 6] = [
        Layer::Netns,
        Layer::PidNamespace,
        Layer::Landlock,
        Layer::Seccomp,
        Layer::PidsCgroup,
        Layer::MemoryCgroup,
    ];

    /// The name used in configuration, logs and `health`.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Netns => "netns",
            Layer::PidNamespace => "pid_namespace",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::PidsCgroup => "pids_cgroup",
            Layer::MemoryCgroup => "memory_cgroup",
        }
    }

    pub fn from_name(name: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|layer| layer.name() == name)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A new, empty network namespace (only `lo`, and that down) that crews without network
/// join, or `None` where the kernel does not let this host create one.
///
/// One namespace for all crews: creating one costs ~0.5 ms of every spawn on this VM (and
/// the kernel's teardown more, later), joining an existing one ~20 µs. Crews cannot reach
/// each other through it: there is no interface up, they hold no capability to bring one
/// up, and seccomp denies the Unix sockets that need none. Made on a scratch thread:
/// `unshare(CLONE_NEWNET)` moves only the calling thread, and the open namespace file
/// keeps the namespace alive after the thread exits.
pub(crate) fn empty_netns() -> Option<OwnedFd> {
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).ok()?;
        std::fs::File::open("/proc/thread-self/ns/net")
            .ok()
            .map(OwnedFd::from)
    })
    .join()
    .ok()
    .flatten()
}

/// Whether the forker thread will be able to start a crew in a new pid namespace and
/// go back to the host's afterwards (see `forker.rs`).
pub(crate) fn pid_namespace_works() -> bool {
    on_scratch_thread(|| {
        let Ok(host) = std::fs::File::open("/proc/self/ns/pid") else {
            return false;
        };
        unshare(CloneFlags::CLONE_NEWPID).is_ok() && setns(&host, CloneFlags::CLONE_NEWPID).is_ok()
    })
}

/// The Landlock ABI version the kernel offers; 0 without Landlock.
pub(crate) fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with the VERSION flag the kernel reads no attribute (null, size 0) and
    // returns the ABI version or an error; no memory is touched.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    abi.max(0)
}

/// Whether the kernel has seccomp filters: `PR_GET_SECCOMP` fails with EINVAL without.
pub(crate) fn seccomp_works() -> bool {
    // SAFETY: PR_GET_SECCOMP only returns the calling thread's seccomp mode.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

fn on_scratch_thread(probe: fn() -> bool) -> bool {
    std::thread::spawn(probe).join().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for layer in Layer::ALL {
            assert_eq!(Layer::from_name(layer.name()), Some(layer));
        }
        assert_eq!(Layer::from_name("apparmor"), None);
    }
}
