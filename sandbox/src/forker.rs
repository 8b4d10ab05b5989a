//! All crew runners are forked from one thread that lives as long as the host.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the
//! process. A crew spawned from a tokio blocking thread (or a worker that
//! `block_in_place` turned into one) would be killed when that thread retires after
//! its idle timeout. Forking from a thread that never exits ties the signal to the
//! host's life, which is what the layer promises.

use std::io;
use std::sync::Mutex;
use std::sync::mpsc::{self, Sender, SyncSender};

use tokio::process::{Child, Command};
use tokio::runtime::Handle;

/// A command to spawn within a runtime, and where to send the result.
type Job = (Command, Handle, SyncSender<io::Result<Child>>);

static FORKER: Mutex<Option<Sender<Job>>> = Mutex::new(None);

/// Spawns `command` on the forker thread, registered with the caller's tokio runtime.
pub(crate) fn spawn(command: Command) -> io::Result<Child> {
    let runtime = Handle::try_current()
        .map_err(|_| io::Error::other("the sandbox must be used from within a tokio runtime"))?;
    let (reply, result) = mpsc::sync_channel(1);
    forker()?
        .send((command, runtime, reply))
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
            for (mut command, runtime, reply) in jobs {
                let _runtime = runtime.enter();
                let _ = reply.send(command.spawn());
            }
        })?;
    *forker = Some(sender.clone());
    Ok(sender)
}
