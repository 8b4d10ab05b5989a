//! What a crew runner goes through between `fork` and `exec`.
//!
//! A launcher first turns the crew's [`LaunchPlan`] into a [`PreExec`] with
//! [`PreExec::prepare`], in the process that forks: it opens the Landlock ruleset, and
//! turns the cgroup paths into C strings and the seccomp filters into the kernel's form.
//! [`PreExec::run`] then executes in the forked child of a multi-threaded process, so it
//! may only make async-signal-safe calls: no allocation, no locks, no logging. An error
//! it returns reaches the launcher as the spawn error.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, getppid, read, setgid, setgroups, setsid, setuid, write};
use seccompiler::BpfProgram;

use crate::filesystem::PreparedRuleset;
use crate::{LaunchPlan, Layer, SandboxError, User, seccomp};

/// A plan's pre-exec sequence, with everything it needs made before the fork.
#[derive(Debug)]
pub(crate) struct PreExec {
    /// The pid of the process that forks, taken before the fork: the child's parent.
    parent: libc::pid_t,
    /// `cgroup.procs` of each of the crew's groups.
    cgroup_procs: Vec<CString>,
    /// The empty network namespace to join instead of the forking process's.
    netns: Option<Arc<OwnedFd>>,
    rlimits: Vec<(Resource, u64, u64)>,
    /// Where the slow way of marking fds close-on-exec stops: the forking process's fd
    /// limit.
    fd_limit: libc::c_int,
    user: Option<User>,
    landlock: Option<PreparedRuleset>,
    seccomp: Vec<BpfProgram>,
    keep_capabilities: bool,
}

impl PreExec {
    /// Makes what `plan` needs before the fork, in the process that will fork. `netns`
    /// is the empty network namespace this launcher holds, if any.
    pub(crate) fn prepare(
        plan: &LaunchPlan,
        netns: Option<&Arc<OwnedFd>>,
    ) -> Result<PreExec, SandboxError> {
        let crew = || plan.crew.clone();
        let cgroup_procs = plan
            .cgroup_procs
            .iter()
            .map(|path| {
                CString::new(path.as_os_str().as_bytes()).map_err(|error| SandboxError::Cgroup {
                    crew: crew(),
                    path: path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, error),
                })
            })
            .collect::<Result<_, _>>()?;
        let netns = match (plan.empty_netns, netns) {
            (false, _) => None,
            (true, Some(netns)) => Some(Arc::clone(netns)),
            (true, None) => {
                return Err(SandboxError::Launcher {
                    crew: crew(),
                    layer: Layer::Netns,
                });
            }
        };
        let landlock = PreparedRuleset::for_plan(plan)?;
        Ok(PreExec {
            parent: std::process::id() as libc::pid_t,
            cgroup_procs,
            netns,
            rlimits: plan
                .rlimits
                .iter()
                .map(|limit| (limit.resource.nix(), limit.soft, limit.hard))
                .collect(),
            fd_limit: fd_limit(),
            user: plan.user,
            landlock,
            seccomp: plan
                .seccomp
                .iter()
                .map(|filter| seccomp::program(filter))
                .collect(),
            keep_capabilities: plan.keep_capabilities,
        })
    }

    /// The whole setup, in order. Runs in the child between fork and exec.
    pub(crate) fn run(&self) -> io::Result<()> {
        // 1. Own session and process group, so the host can signal the crew as a whole.
        setsid()?;
        // 2. Die with the host (with the process that forks, which is the host for a
        //    cold start).
        die_with_parent(self.parent)?;
        // 3. Join the crew's cgroups before exec, so not even a first fork escapes them.
        for procs in &self.cgroup_procs {
            join_cgroup(procs)?;
        }
        // 4. The empty network namespace: only a loopback interface, and that down.
        if let Some(netns) = &self.netns {
            setns(netns, CloneFlags::CLONE_NEWNET)?;
        }
        // 5. Resource limits, set while still privileged enough to lower hard limits.
        for &(resource, soft, hard) in &self.rlimits {
            setrlimit(resource, soft, hard)?;
        }
        // 6. Only stdin, stdout and stderr survive exec.
        mark_fds_cloexec(self.fd_limit);
        // 7. Become the crew's user. Changing credentials clears the parent-death signal,
        //    so arm it again.
        if let Some(user) = self.user {
            setgroups(&[])?;
            setgid(Gid::from_raw(user.gid))?;
            setuid(Uid::from_raw(user.uid))?;
            die_with_parent(self.parent)?;
        }
        // 8. No capabilities, even for a crew that runs as root, and no privileges
        //    gained through exec (setuid binaries, file capabilities): Landlock and
        //    seccomp need no_new_privs, and it is right for every crew. The fork server
        //    keeps its capabilities for the namespaces of the crews it forks.
        if !self.keep_capabilities {
            drop_capabilities()?;
        }
        // SAFETY: PR_SET_NO_NEW_PRIVS takes no pointers.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // 9. Filesystem rules, for this process and everything it executes.
        if let Some(ruleset) = &self.landlock {
            ruleset.restrict_self()?;
        }
        // 10. Last, as it denies calls the steps above make: the seccomp deny list.
        seccomp::install(&self.seccomp)?;
        Ok(())
    }
}

/// Asks for SIGKILL when the parent dies, then checks the parent is still `parent`: if
/// it died before the `prctl`, the signal will never come, so exit now.
fn die_with_parent(parent_pid: libc::pid_t) -> io::Result<()> {
    set_pdeathsig(Signal::SIGKILL)?;
    // PID 1 of its own pid namespace sees its parent, outside, as pid 0.
    let parent = match getppid().as_raw() {
        0 => parent_from_proc(),
        pid => Some(pid),
    };
    if parent != Some(parent_pid) {
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

/// This process's fd limit, up to which the slow close-on-exec fallback goes: every fd
/// it holds is below it.
fn fd_limit() -> libc::c_int {
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    libc::c_int::try_from(limit).unwrap_or(libc::c_int::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{LandlockRules, Rlimit};

    fn plan() -> LaunchPlan {
        LaunchPlan {
            crew: "prepared".to_owned(),
            program: PathBuf::from("/bin/true"),
            args: Vec::new(),
            env: Vec::new(),
            workdir: std::env::temp_dir(),
            cgroup_procs: Vec::new(),
            empty_netns: false,
            new_pid_namespace: false,
            rlimits: Vec::new(),
            user: None,
            landlock: None,
            seccomp: Vec::new(),
            keep_capabilities: false,
        }
    }

    #[test]
    fn preparing_turns_the_plan_into_what_the_child_needs() {
        let plan = LaunchPlan {
            cgroup_procs: vec![PathBuf::from("/sys/fs/cgroup/pids/x/cgroup.procs")],
            rlimits: vec![Rlimit {
                resource: crate::Resource::OpenFiles,
                soft: 32,
                hard: 64,
            }],
            seccomp: seccomp::compile().unwrap(),
            ..plan()
        };
        let prepared = PreExec::prepare(&plan, None).unwrap();
        assert_eq!(
            prepared.cgroup_procs,
            [c"/sys/fs/cgroup/pids/x/cgroup.procs"]
        );
        assert_eq!(prepared.rlimits, [(Resource::RLIMIT_NOFILE, 32, 64)]);
        assert_eq!(prepared.parent, std::process::id() as libc::pid_t);
        let in_plan: Vec<BpfProgram> = plan.seccomp.iter().map(|f| seccomp::program(f)).collect();
        assert_eq!(prepared.seccomp, in_plan);
        assert!(prepared.netns.is_none() && prepared.landlock.is_none());
    }

    #[test]
    fn a_plan_for_a_layer_the_launcher_lacks_is_refused() {
        let plan = LaunchPlan {
            empty_netns: true,
            ..plan()
        };
        let error = PreExec::prepare(&plan, None).unwrap_err();
        assert!(
            matches!(
                error,
                SandboxError::Launcher {
                    layer: Layer::Netns,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_landlock_path_that_is_gone_fails_before_the_fork() {
        let plan = LaunchPlan {
            landlock: Some(LandlockRules {
                abi: 5,
                read: vec![PathBuf::from("/nonexistent/live-crew")],
                write: Vec::new(),
            }),
            ..plan()
        };
        let error = PreExec::prepare(&plan, None).unwrap_err();
        assert!(
            matches!(&error, SandboxError::Landlock { path: Some(path), .. }
                if path == &PathBuf::from("/nonexistent/live-crew")),
            "{error}"
        );
    }
}
