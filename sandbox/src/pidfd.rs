//! Process file descriptors: a handle on one process that, unlike its pid, can never
//! come to mean another process once it is reaped. Linux 5.4+ (pidfd_open 5.3,
//! waitid(P_PIDFD) 5.4).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// A pidfd for `pid`. Race-free for a child of ours that nobody has waited for yet: its
/// pid cannot be reused before it is reaped.
pub(crate) fn open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags 0, and touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::ENOSYS) {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "pidfd_open is missing: the sandbox needs Linux 5.4 or newer",
            )
        } else {
            error
        });
    }
    // SAFETY: the kernel just returned this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Sends `signal` to the process; ESRCH once it has exited.
pub(crate) fn send_signal(pidfd: &OwnedFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: a null siginfo makes the kernel fill in the same info as kill(2); the
    // pidfd is open for the duration of the call.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if sent == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reaps the process, a child of ours, if it has exited; `None` if it still runs.
pub(crate) fn try_reap(pidfd: &OwnedFd) -> io::Result<Option<ExitStatus>> {
    wait(pidfd, libc::WEXITED | libc::WNOHANG)
}

/// Waits for the process, a child of ours, to exit, and reaps it. Blocks the thread.
pub(crate) fn reap(pidfd: &OwnedFd) -> io::Result<ExitStatus> {
    loop {
        match wait(pidfd, libc::WEXITED) {
            Ok(Some(status)) => return Ok(status),
            Err(error) if error.kind() != io::ErrorKind::Interrupted => return Err(error),
            _ => {}
        }
    }
}

fn wait(pidfd: &OwnedFd, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    // SAFETY: siginfo_t is plain data, for which all zeroes is a valid value; with
    // WNOHANG and nothing to report the kernel leaves it so (si_pid 0).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes only into `info`, which lives for the call; the pidfd is open.
    let waited = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            flags,
        )
    };
    if waited != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid fills in a SIGCHLD siginfo, whose si_pid and si_status are set.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    // Back to the wait status encoding that ExitStatus holds: the exit code in bits
    // 8..16, or the signal in the low 7 bits with 0x80 for a core dump.
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => status | 0x80,
        _ => status,
    };
    Ok(Some(ExitStatus::from_raw(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(script: &str) -> (std::process::Child, OwnedFd) {
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .spawn()
            .unwrap();
        let pidfd = open(child.id()).unwrap();
        (child, pidfd)
    }

    #[test]
    fn exit_codes_and_signals_come_back_as_exit_statuses() {
        let (_child, pidfd) = spawn("exit 7");
        assert_eq!(reap(&pidfd).unwrap().code(), Some(7));
        let (_child, pidfd) = spawn("exec sleep 1000");
        assert_eq!(try_reap(&pidfd).unwrap(), None);
        send_signal(&pidfd, libc::SIGKILL).unwrap();
        assert_eq!(reap(&pidfd).unwrap().signal(), Some(libc::SIGKILL));
        // Reaped: the pidfd still refers to that process, not to a pid's next owner.
        let error = send_signal(&pidfd, libc::SIGKILL).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ESRCH));
        assert_eq!(
            try_reap(&pidfd).unwrap_err().raw_os_error(),
            Some(libc::ECHILD)
        );
    }
}
