//! What a crew runner goes through between `fork` and `exec`.
//!
//! [`PreExec::run`] executes in the forked child of a multi-threaded host, so it may only
//! make async-signal-safe calls: no allocation, no locks, no logging. Everything it
//! needs is computed by [`PreExec::new`] in the host before the fork. An error it
//! returns reaches the host as the spawn error.

use std::ffi::{CStr, CString};
use std::io;

use nix::fcntl::{OFlag, open};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::{Resource, getrlimit, rlim_t, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, getppid, setgid, setgroups, setsid, setuid, write};

use crate::{Limits, User};

/// Precomputed inputs of the pre-exec sequence.
#[derive(Debug)]
pub(crate) struct PreExec {
    /// The host's pid, taken before the fork.
    host: libc::pid_t,
    /// `cgroup.procs` of each of the crew's groups.
    cgroup_procs: Vec<CString>,
    rlimits: Vec<Rlimit>,
    /// Where the slow way of marking fds close-on-exec stops: the host's fd limit.
    fd_limit: libc::c_int,
    user: Option<User>,
}

impl PreExec {
    /// `nproc_rlimit`: enforce `limits.processes` with `RLIMIT_NPROC`, for hosts
    /// without a pids cgroup.
    pub(crate) fn new(
        limits: &Limits,
        user: Option<User>,
        cgroup_procs: Vec<CString>,
        nproc_rlimit: bool,
    ) -> Self {
        let fd_limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
        PreExec {
            host: std::process::id() as libc::pid_t,
            cgroup_procs,
            rlimits: rlimits(limits, nproc_rlimit, current_hard_limit),
            fd_limit: libc::c_int::try_from(fd_limit).unwrap_or(libc::c_int::MAX),
            user,
        }
    }

    /// The whole setup, in order. Runs in the child between fork and exec.
    pub(crate) fn run(&self) -> io::Result<()> {
        // 1. Own session and process group, so the host can signal the crew as a whole.
        setsid()?;
        // 2. Die with the host.
        die_with_host(self.host)?;
        // 3. Join the crew's cgroups before exec, so not even a first fork escapes them.
        for procs in &self.cgroup_procs {
            join_cgroup(procs)?;
        }
        // 4. Resource limits, set while still privileged enough to lower hard limits.
        for limit in &self.rlimits {
            setrlimit(limit.resource, limit.soft, limit.hard)?;
        }
        // 5. Only stdin, stdout and stderr survive exec.
        mark_fds_cloexec(self.fd_limit);
        // 6. Become the crew's user. Changing credentials clears the parent-death signal,
        //    so arm it again.
        if let Some(user) = self.user {
            setgroups(&[])?;
            setgid(Gid::from_raw(user.gid))?;
            setuid(Uid::from_raw(user.uid))?;
            die_with_host(self.host)?;
        }
        Ok(())
    }
}

/// Asks for SIGKILL when the parent dies, then checks the parent is still the host: if
/// the host died before the `prctl`, the signal will never come, so exit now.
fn die_with_host(host: libc::pid_t) -> io::Result<()> {
    set_pdeathsig(Signal::SIGKILL)?;
    if getppid().as_raw() != host {
        // SAFETY: _exit is async-signal-safe and skips the atexit handlers and buffers
        // that belong to the host's copy of the process.
        unsafe { libc::_exit(1) };
    }
    Ok(())
}

/// Moves the calling process into the group whose `cgroup.procs` is `procs`.
fn join_cgroup(procs: &CStr) -> io::Result<()> {
    let file = open(procs, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    // "0" means the writing process.
    write(&file, b"0")?;
    Ok(())
}

/// Marks every fd from 3 up close-on-exec. Marking rather than closing keeps the pipe
/// that std uses to report a failed exec working until the exec.
fn mark_fds_cloexec(fd_limit: libc::c_int) {
    // SAFETY: close_range takes no pointers; with CLOSE_RANGE_CLOEXEC it only sets a flag
    // on open fds and leaves them open.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked == 0 {
        return;
    }
    // Before Linux 5.11 (no close_range, or no CLOSE_RANGE_CLOEXEC): one fd at a time,
    // up to the fd limit the host runs with (every fd it holds is below it).
    for fd in 3..fd_limit {
        // SAFETY: F_SETFD only sets the close-on-exec flag; on a closed fd it fails with
        // EBADF, which is fine.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// One `setrlimit` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rlimit {
    resource: Resource,
    soft: rlim_t,
    hard: rlim_t,
}

/// The rlimits for `limits`, never above the host's own hard limits (an unprivileged
/// host could not raise them, and a crew never gets more than the host).
fn rlimits(
    limits: &Limits,
    nproc_rlimit: bool,
    current_hard: impl Fn(Resource) -> rlim_t,
) -> Vec<Rlimit> {
    let limit = |resource, soft: u64, hard: u64| {
        let hard = hard.min(current_hard(resource));
        Rlimit {
            resource,
            soft: soft.min(hard),
            hard,
        }
    };
    let mut out = vec![limit(Resource::RLIMIT_CORE, 0, 0)];
    if let Some(mb) = limits.memory_mb {
        let bytes = mb.saturating_mul(1 << 20);
        out.push(limit(Resource::RLIMIT_AS, bytes, bytes));
    }
    if let Some(seconds) = limits.cpu_s {
        // SIGXCPU at the soft limit, SIGKILL a second later if that is ignored.
        out.push(limit(
            Resource::RLIMIT_CPU,
            seconds,
            seconds.saturating_add(1),
        ));
    }
    if let Some(files) = limits.open_files {
        out.push(limit(Resource::RLIMIT_NOFILE, files, files));
    }
    if let (true, Some(processes)) = (nproc_rlimit, limits.processes) {
        out.push(limit(Resource::RLIMIT_NPROC, processes, processes));
    }
    out
}

fn current_hard_limit(resource: Resource) -> rlim_t {
    getrlimit(resource).map_or(libc::RLIM_INFINITY, |(_, hard)| hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNLIMITED: fn(Resource) -> rlim_t = |_| libc::RLIM_INFINITY;

    #[test]
    fn core_dumps_are_always_off() {
        let plan = rlimits(&Limits::default(), true, UNLIMITED);
        assert_eq!(
            plan,
            vec![Rlimit {
                resource: Resource::RLIMIT_CORE,
                soft: 0,
                hard: 0
            }]
        );
    }

    #[test]
    fn every_limit_maps_to_its_rlimit() {
        let limits = Limits {
            memory_mb: Some(256),
            cpu_s: Some(60),
            open_files: Some(128),
            processes: Some(32),
        };
        let plan = rlimits(&limits, true, UNLIMITED);
        let get = |resource| {
            plan.iter()
                .find(|limit| limit.resource == resource)
                .copied()
        };
        assert_eq!(
            get(Resource::RLIMIT_AS).map(|l| (l.soft, l.hard)),
            Some((256 << 20, 256 << 20))
        );
        assert_eq!(
            get(Resource::RLIMIT_CPU).map(|l| (l.soft, l.hard)),
            Some((60, 61))
        );
        assert_eq!(
            get(Resource::RLIMIT_NOFILE).map(|l| (l.soft, l.hard)),
            Some((128, 128))
        );
        assert_eq!(
            get(Resource::RLIMIT_NPROC).map(|l| (l.soft, l.hard)),
            Some((32, 32))
        );
    }

    #[test]
    fn nproc_is_only_used_as_the_fallback() {
        let limits = Limits {
            processes: Some(32),
            ..Limits::default()
        };
        let plan = rlimits(&limits, false, UNLIMITED);
        assert!(
            plan.iter()
                .all(|limit| limit.resource != Resource::RLIMIT_NPROC)
        );
    }

    #[test]
    fn limits_never_exceed_the_hosts_hard_limit() {
        let limits = Limits {
            open_files: Some(1_000_000),
            cpu_s: Some(u64::MAX),
            ..Limits::default()
        };
        let plan = rlimits(&limits, false, |_| 4096);
        for limit in plan.iter().filter(|l| l.resource != Resource::RLIMIT_CORE) {
            assert_eq!((limit.soft, limit.hard), (4096, 4096), "{limit:?}");
        }
    }
}
