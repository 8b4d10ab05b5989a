//! The seccomp layer: a deny list of system calls that no crew needs and that would let
//! it reach past its sandbox. A denied call fails (EPERM) instead of killing the
//! process, so runtimes that probe for a feature can fall back.
//!
//! The filters are compiled once per host; the child only installs them.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Denied outright: reaching into other processes, mounting, kernel images and modules,
/// reboot, swap, BPF, perf, the kernel keyring, joining other namespaces, and calls that
/// change the host (clock, host name, accounting) or are favourite exploit vehicles
/// (io_uring, userfaultfd, open_by_handle_at, raw I/O ports).
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_userfaultfd,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_acct,
    libc::SYS_syslog,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_setns,
];

/// The compiled filters, installed together.
#[derive(Debug)]
pub(crate) struct Filters {
    /// [`DENIED`], `unshare`/`clone` asking for a new user namespace, and
    /// `socket(AF_UNIX)`: EPERM.
    deny: BpfProgram,
    /// `clone3`, whose flags sit in memory a filter cannot read: ENOSYS, on which libc
    /// falls back to `clone`, where the user-namespace flag is checked.
    clone3: BpfProgram,
}

impl Filters {
    pub(crate) fn compile() -> Result<Filters, seccompiler::BackendError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)?;
        let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&call| (call, Vec::new())).collect();
        // flags is an int for unshare, an unsigned long for clone; both argument 0 on
        // the architectures we build for.
        let new_user_ns = |len| {
            SeccompCondition::new(
                0,
                len,
                SeccompCmpOp::MaskedEq(libc::CLONE_NEWUSER as u64),
                libc::CLONE_NEWUSER as u64,
            )
            .and_then(|condition| SeccompRule::new(vec![condition]))
        };
        denied.insert(
            libc::SYS_unshare,
            vec![new_user_ns(SeccompCmpArgLen::Dword)?],
        );
        denied.insert(libc::SYS_clone, vec![new_user_ns(SeccompCmpArgLen::Qword)?]);
        // Unix sockets by path are out of Landlock's reach (up to ABI 7) and of the
        // network namespace's: without this a crew could connect to any socket on the
        // host, the host's own control socket included. socketpair still works.
        let unix = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            libc::AF_UNIX as u64,
        )
        .and_then(|condition| SeccompRule::new(vec![condition]))?;
        denied.insert(libc::SYS_socket, vec![unix]);
        let deny = SeccompFilter::new(
            denied,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )?;
        let clone3 = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )?;
        Ok(Filters {
            deny: deny.try_into()?,
            clone3: clone3.try_into()?,
        })
    }

    /// Installs both filters on the calling thread (and sets no_new_privs, which an
    /// unprivileged filter needs). Async-signal-safe: no allocation on any path.
    pub(crate) fn install(&self) -> io::Result<()> {
        for program in [&self.deny, &self.clone3] {
            seccompiler::apply_filter(program).map_err(|_| io::Error::last_os_error())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deny_list_compiles_for_this_architecture() {
        let filters = Filters::compile().unwrap();
        assert!(!filters.deny.is_empty());
        assert!(!filters.clone3.is_empty());
    }
}
