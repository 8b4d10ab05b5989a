//! All crew runners are forked from one thread that lives as long as the host.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the
//! process. A crew spawned from a tokio blocking thread (or a worker that
//! `block_in_place` turned into one) would be killed when that thread retires after
//! its idle timeout. Forking from a thread that never exits ties the signal to the
//! host's life, which is what the layer promises.
//!
//! The thread also puts a crew in a pid namespace of its own: `unshare(CLONE_NEWPID)`
//! makes the thread's *next* child PID 1 of a new namespace, and `setns` back to the
//! host's namespace right after the spawn keeps the following crews out of it.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::mpsc::{self, Sender, SyncSender};

use nix::sched::{CloneFlags, setns, unshare};

use crate::pidfd;

/// A started process and its pidfd.
pub(crate) type Spawned = (Child, OwnedFd);

/// A command to spawn, whether in a new pid namespace, and where to send the result.
type Job = (Command, bool, SyncSender<io::Result<Spawned>>);

static FORKER: Mutex<Option<Sender<Job>>> = Mutex::new(None);

/// Spawns `command` on the forker thread, with `new_pid_namespace` as PID 1 of a pid
/// namespace of its own, and opens its pidfd.
pub(crate) fn spawn(command: Command, new_pid_namespace: bool) -> io::Result<Spawned> {
    let (reply, result) = mpsc::sync_channel(1);
    forker()?
        .send((command, new_pid_namespace, reply))
        .map_err(|_| io::Error::other("the sandbox's forker thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the sandbox's forker thread is gone"))?
}

/// The sender to the forker thread, which is started on first use.
fn forker() -> io::Result<Sender<Job>> {
    let mut forker = FORKER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(sender) = forker.as_ref() {
        return Ok(sender.clone());
    }
    let (sender, jobs) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("live-crew-forker".to_owned())
        .spawn(move || {
            // The host's pid namespace, to come back to after each crew's.
            let host_pid_ns = File::open("/proc/self/ns/pid");
            for (mut command, new_pid_namespace, reply) in jobs {
                let child = match (&host_pid_ns, new_pid_namespace) {
                    (Ok(host), true) => spawn_in_new_pid_namespace(&mut command, host),
                    (Err(error), true) => Err(io::Error::new(error.kind(), error.to_string())),
                    (_, false) => command.spawn(),
                };
                let _ = reply.send(child.and_then(with_pidfd));
            }
        })?;
    *forker = Some(sender.clone());
    Ok(sender)
}

/// Opens the pidfd of a child just spawned. Nobody reaps a std child but its owner, so
/// its pid still names it. Without a pidfd the child is killed and reaped here.
fn with_pidfd(mut child: Child) -> io::Result<Spawned> {
    match pidfd::open(child.id()) {
        Ok(pidfd) => Ok((child, pidfd)),
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(error)
        }
    }
}

/// Spawns `command` as PID 1 of a new pid namespace, then returns the thread to `host`.
fn spawn_in_new_pid_namespace(command: &mut Command, host: &File) -> io::Result<Child> {
    unshare(CloneFlags::CLONE_NEWPID)?;
    let child = command.spawn();
    // Without this, the next child would join this crew's namespace.
    if let Err(errno) = setns(host, CloneFlags::CLONE_NEWPID) {
        if let Ok(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        return Err(errno.into());
    }
    child
}
