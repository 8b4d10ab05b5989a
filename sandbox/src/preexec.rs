//! What a crew runner goes through between `fork` and `exec`.
//!
//! [`PreExec::run`] executes in the forked child of a multi-threaded host, so it may only
//! make async-signal-safe calls: no allocation, no locks, no logging. Everything it
//! needs (cgroup paths, rlimits, the Landlock ruleset, the compiled seccomp filter) is
//! prepared in the host before the fork. An error it returns reaches the host as the
//! spawn error.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::{Resource, getrlimit, rlim_t, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, getppid, read, setgid, setgroups, setsid, setuid, write};

use crate::filesystem::PreparedRuleset;
use crate::seccomp::Filters;
use crate::{Limits, User};

/// Precomputed inputs of the pre-exec sequence.
#[derive(Debug)]
pub(crate) struct PreExec {
    /// The host's pid, taken before the fork.
    pub(crate) host: libc::pid_t,
    /// `cgroup.procs` of each of the crew's groups.
    pub(crate) cgroup_procs: Vec<CString>,
    /// The empty network namespace to join instead of the host's.
    pub(crate) netns: Option<Arc<OwnedFd>>,
    pub(crate) rlimits: Vec<Rlimit>,
    /// Where the slow way of marking fds close-on-exec stops: the host's fd limit.
    pub(crate) fd_limit: libc::c_int,
    pub(crate) user: Option<User>,
    pub(crate) landlock: Option<PreparedRuleset>,
    pub(crate) seccomp: Option<Arc<Filters>>,
}

/// Which limits the crew's cgroups already enforce for the crew as a whole.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CgroupCover {
    pub(crate) pids: bool,
    pub(crate) memory: bool,
}

/// The host's fd limit, up to which the slow close-on-exec fallback goes.
pub(crate) fn fd_limit() -> libc::c_int {
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    libc::c_int::try_from(limit).unwrap_or(libc::c_int::MAX)
}

impl PreExec {
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
        // 4. The empty network namespace: only a loopback interface, and that down.
        if let Some(netns) = &self.netns {
            setns(netns, CloneFlags::CLONE_NEWNET)?;
        }
        // 5. Resource limits, set while still privileged enough to lower hard limits.
        for limit in &self.rlimits {
            setrlimit(limit.resource, limit.soft, limit.hard)?;
        }
        // 6. Only stdin, stdout and stderr survive exec.
        mark_fds_cloexec(self.fd_limit);
        // 7. Become the crew's user. Changing credentials clears the parent-death signal,
        //    so arm it again.
        if let Some(user) = self.user {
            setgroups(&[])?;
            setgid(Gid::from_raw(user.gid))?;
            setuid(Uid::from_raw(user.uid))?;
            die_with_host(self.host)?;
        }
        // 8. No capabilities, even for a crew that runs as root, and no privileges
        //    gained through exec (setuid binaries, file capabilities): Landlock and
        //    seccomp need no_new_privs, and it is right for every crew.
        drop_capabilities()?;
        // SAFETY: PR_SET_NO_NEW_PRIVS takes no pointers.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // 9. Filesystem rules, for this process and everything it executes.
        if let Some(ruleset) = &self.landlock {
            ruleset.restrict_self()?;
        }
        // 10. Last, as it denies calls the steps above make: the seccomp deny list.
        if let Some(filters) = &self.seccomp {
            filters.install()?;
        }
        Ok(())
    }
}

/// Asks for SIGKILL when the parent dies, then checks the parent is still the host: if
/// the host died before the `prctl`, the signal will never come, so exit now.
fn die_with_host(host: libc::pid_t) -> io::Result<()> {
    set_pdeathsig(Signal::SIGKILL)?;
    // PID 1 of its own pid namespace sees its parent, outside, as pid 0.
    let parent = match getppid().as_raw() {
        0 => parent_from_proc(),
        pid => Some(pid),
    };
    if parent != Some(host) {
        // SAFETY: _exit is async-signal-safe and skips the atexit handlers and buffers
        // that belong to the host's copy of the process.
        unsafe { libc::_exit(1) };
    }
    Ok(())
}

/// The parent's pid as the host sees it: `/proc` is the host's mount, so
/// `/proc/self/stat` (`pid (comm) state ppid ...`) shows host pids. No allocation.
fn parent_from_proc() -> Option<libc::pid_t> {
    let file = open(
        c"/proc/self/stat",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buffer = [0u8; 512];
    let length = read(&file, &mut buffer).ok()?;
    let stat = &buffer[..length];
    // comm may hold spaces and parentheses; the fields after it may not.
    let after_comm = stat.iter().rposition(|&byte| byte == b')')? + 1;
    let ppid = stat[after_comm..]
        .split(|&byte| byte == b' ')
        .filter(|field| !field.is_empty())
        .nth(1)?;
    ppid.iter().try_fold(0 as libc::pid_t, |pid, &digit| {
        digit
            .is_ascii_digit()
            .then(|| pid * 10 + libc::pid_t::from(digit - b'0'))
    })
}

/// Empties the capability bounding set (so exec cannot bring any back), the ambient set,
/// and the effective, permitted and inheritable sets. Without CAP_SETPCAP (a crew user
/// that is not root has none left) the bounding set cannot be touched and needs not be.
fn drop_capabilities() -> io::Result<()> {
    /// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
    const VERSION_3: u32 = 0x2008_0522;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // Capability numbers run to CAP_LAST_CAP (40 on Linux 6.x); past it EINVAL.
    for capability in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes a number, no pointers.
        let dropped = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) };
        if dropped != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let empty = [
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads the header and two data structs of version 3 from the
    // pointers, which point at live values on this stack frame of the right layout.
    let set = unsafe { libc::syscall(libc::SYS_capset, &header, empty.as_ptr()) };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
pub(crate) struct Rlimit {
    resource: Resource,
    soft: rlim_t,
    hard: rlim_t,
}

/// The rlimits for `limits`, never above the host's own hard limits (an unprivileged
/// host could not raise them, and a crew never gets more than the host).
pub(crate) fn rlimits(
    limits: &Limits,
    cover: CgroupCover,
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
        // With the memory cgroup, RLIMIT_AS only stops absurd allocations early: thread
        // stacks and malloc arenas reserve address space that is never used, and the
        // cgroup limits what is.
        let factor = if cover.memory { 2 } else { 1 };
        let bytes = mb.saturating_mul(factor << 20);
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
    if let (false, Some(processes)) = (cover.pids, limits.processes) {
        out.push(limit(Resource::RLIMIT_NPROC, processes, processes));
    }
    out
}

pub(crate) fn current_hard_limit(resource: Resource) -> rlim_t {
    getrlimit(resource).map_or(libc::RLIM_INFINITY, |(_, hard)| hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNLIMITED: fn(Resource) -> rlim_t = |_| libc::RLIM_INFINITY;
    const NO_CGROUPS: CgroupCover = CgroupCover {
        pids: false,
        memory: false,
    };

    #[test]
    fn core_dumps_are_always_off() {
        let plan = rlimits(&Limits::default(), NO_CGROUPS, UNLIMITED);
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
        let plan = rlimits(&limits, NO_CGROUPS, UNLIMITED);
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
        let cover = CgroupCover {
            pids: true,
            memory: false,
        };
        let plan = rlimits(&limits, cover, UNLIMITED);
        assert!(
            plan.iter()
                .all(|limit| limit.resource != Resource::RLIMIT_NPROC)
        );
    }

    #[test]
    fn with_the_memory_cgroup_the_address_space_gets_slack() {
        let limits = Limits {
            memory_mb: Some(256),
            ..Limits::default()
        };
        let cover = CgroupCover {
            pids: true,
            memory: true,
        };
        let plan = rlimits(&limits, cover, UNLIMITED);
        let address_space = plan
            .iter()
            .find(|limit| limit.resource == Resource::RLIMIT_AS)
            .map(|limit| limit.hard);
        assert_eq!(address_space, Some(512 << 20));
    }

    #[test]
    fn limits_never_exceed_the_hosts_hard_limit() {
        let limits = Limits {
            open_files: Some(1_000_000),
            cpu_s: Some(u64::MAX),
            ..Limits::default()
        };
        let plan = rlimits(&limits, NO_CGROUPS, |_| 4096);
        for limit in plan.iter().filter(|l| l.resource != Resource::RLIMIT_CORE) {
            assert_eq!((limit.soft, limit.hard), (4096, 4096), "{limit:?}");
        }
    }
}
