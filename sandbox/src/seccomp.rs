//! The seccomp layer: a deny list of system calls that no crew needs and that would let
//! it reach past its sandbox. A denied call fails (EPERM) instead of killing the
//! process, so runtimes that probe for a feature can fall back.
//!
//! The filters are compiled once per host and travel in each crew's launch plan as BPF
//! instructions; the child only installs them.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use serde::{Deserialize, Serialize};

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

/// One classic-BPF instruction, as the kernel's `struct sock_filter`: plain data, so a
/// compiled filter can travel in a [`LaunchPlan`](crate::LaunchPlan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfInstruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Compiles the filters, in the order they are installed:
/// - [`DENIED`], `unshare`/`clone` asking for a new user namespace, and
///   `socket(AF_UNIX)`: EPERM;
/// - `clone3`, whose flags sit in memory a filter cannot read: ENOSYS, on which libc
///   falls back to `clone`, where the user-namespace flag is checked.
pub(crate) fn compile() -> Result<Vec<Vec<BpfInstruction>>, seccompiler::BackendError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&call| (call, Vec::new())).collect();
    // flags is an int for unshare, an unsigned long for clone; both argument 0 on the
    // architectures we build for.
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
    // Unix sockets by path are out of Landlock's reach (up to ABI 7) and of the network
    // namespace's: without this a crew could connect to any socket on the host, the
    // host's own control socket included. socketpair still works.
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
    [deny, clone3]
        .into_iter()
        .map(|filter| {
            let program: BpfProgram = filter.try_into()?;
            Ok(program.iter().map(BpfInstruction::from).collect())
        })
        .collect()
}

impl From<&sock_filter> for BpfInstruction {
    fn from(instruction: &sock_filter) -> Self {
        BpfInstruction {
            code: instruction.code,
            jt: instruction.jt,
            jf: instruction.jf,
            k: instruction.k,
        }
    }
}

/// A filter of a plan in the form the kernel takes; made before the fork.
pub(crate) fn program(instructions: &[BpfInstruction]) -> BpfProgram {
    instructions
        .iter()
        .map(|i| sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect()
}

/// Installs `programs` in order on the calling thread (and sets no_new_privs, which an
/// unprivileged filter needs). Async-signal-safe: no allocation on any path.
pub(crate) fn install(programs: &[BpfProgram]) -> io::Result<()> {
    for program in programs {
        seccompiler::apply_filter(program).map_err(|_| io::Error::last_os_error())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deny_list_compiles_for_this_architecture() {
        let filters = compile().unwrap();
        assert_eq!(filters.len(), 2, "the deny list, then clone3");
        assert!(filters.iter().all(|filter| !filter.is_empty()));
    }

    #[test]
    fn instructions_convert_to_the_kernels_form_unchanged() {
        let filters = compile().unwrap();
        let program = program(&filters[0]);
        let back: Vec<BpfInstruction> = program.iter().map(BpfInstruction::from).collect();
        assert_eq!(back, filters[0]);
    }
}
