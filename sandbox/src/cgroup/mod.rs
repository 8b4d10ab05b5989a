//! Per-crew cgroups: a pids group, which enforces the process limit and finds every
//! process the crew started (even one that left the crew's session), and a memory group,
//! which limits the crew's memory as a whole and records OOM kills.
//!
//! Groups are only ever created beneath the host's own cgroup, as `/proc/self/cgroup`
//! names it, and are named `live-crew-<host pid>-<crew>-<n>`, so that the next host can
//! tell the groups of a host that died. Each controller is taken from cgroup v2 where
//! the host's v2 group offers it, else from its v1 hierarchy (see `probe.rs`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Limits, PREFIX, SandboxError, file_safe};

mod probe;

/// Teardown polls this often for the killed members to be gone...
const REMOVE_PAUSE: Duration = Duration::from_millis(5);
/// ...and gives up after this many polls (one second), so it never hangs.
const REMOVE_ATTEMPTS: u32 = 200;

/// Numbers the groups this host creates, so that names never repeat.
static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The host's own cgroup in the hierarchy that serves one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostGroup {
    version: Version,
    dir: PathBuf,
}

/// The controllers the host can use for its crews, from [`Controllers::probe`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Controllers {
    pub(crate) pids: Option<HostGroup>,
    pub(crate) memory: Option<HostGroup>,
}

#[derive(Debug, Clone, Copy)]
enum Controller {
    Pids,
    Memory,
}

#[cfg(test)]
impl Controllers {
    /// Both controllers as v1 hierarchies in folders under `root`, which need not be a
    /// cgroup file system: enough for tests that only plan, which makes groups and writes
    /// their limits.
    pub(crate) fn fake_v1(root: &Path) -> Self {
        let host = |controller: &str| {
            let dir = root.join(controller);
            fs::create_dir(&dir).unwrap();
            Some(HostGroup {
                version: Version::V1,
                dir,
            })
        };
        Controllers {
            pids: host("pids"),
            memory: host("memory"),
        }
    }
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
        }
    }

    /// A file that exists in every group where this controller is enabled.
    fn limit_file(self, version: Version) -> &'static str {
        match (self, version) {
            (Controller::Pids, _) => "pids.max",
            (Controller::Memory, Version::V1) => "memory.limit_in_bytes",
            (Controller::Memory, Version::V2) => "memory.max",
        }
    }
}

/// One crew's groups. Dropping them kills every member and removes the directories.
#[derive(Debug)]
pub(crate) struct CrewCgroups {
    crew: String,
    dirs: Vec<CrewDir>,
    /// An OOM kill seen in a memory group that is gone by now.
    oom_killed: bool,
}

#[derive(Debug)]
struct CrewDir {
    path: PathBuf,
    version: Version,
    /// Whether the memory controller limits this group.
    memory: bool,
}

/// A failed cgroup file operation, before it is given the crew's name.
struct FileError {
    path: PathBuf,
    source: io::Error,
}

fn write_file(path: PathBuf, value: &str) -> Result<(), FileError> {
    fs::write(&path, value).map_err(|source| FileError { path, source })
}

impl CrewCgroups {
    /// Creates the crew's groups with their limits set. A pids group is made whenever
    /// the controller is usable, as it also finds the crew's processes for killing; a
    /// memory group only when the crew has a memory limit.
    pub(crate) fn create(
        controllers: &Controllers,
        crew: &str,
        limits: &Limits,
    ) -> Result<Self, SandboxError> {
        let mut groups = CrewCgroups {
            crew: crew.to_owned(),
            dirs: Vec::new(),
            oom_killed: false,
        };
        let name = format!(
            "{PREFIX}{}-{}-{}",
            std::process::id(),
            file_safe(crew),
            NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
        );
        let memory = limits.memory_mb.and(controllers.memory.as_ref());
        let wanted = [
            controllers
                .pids
                .as_ref()
                .map(|host| (host, Controller::Pids)),
            memory.map(|host| (host, Controller::Memory)),
        ];
        for (host, controller) in wanted.into_iter().flatten() {
            groups
                .add(host, &name, controller, limits)
                .map_err(|error| SandboxError::Cgroup {
                    crew: crew.to_owned(),
                    path: error.path,
                    source: error.source,
                })?;
        }
        Ok(groups)
    }

    /// Makes (or, in v2 where one group serves both controllers, reuses) the group for
    /// `controller` beneath `host`, and sets its limit.
    fn add(
        &mut self,
        host: &HostGroup,
        name: &str,
        controller: Controller,
        limits: &Limits,
    ) -> Result<(), FileError> {
        let path = host.dir.join(name);
        let index = match self.dirs.iter().position(|dir| dir.path == path) {
            Some(index) => index,
            None => {
                fs::create_dir(&path).map_err(|source| FileError {
                    path: path.clone(),
                    source,
                })?;
                self.dirs.push(CrewDir {
                    path,
                    version: host.version,
                    memory: false,
                });
                self.dirs.len() - 1
            }
        };
        let dir = &mut self.dirs[index];
        match controller {
            Controller::Pids => match limits.processes {
                Some(max) => write_file(dir.path.join("pids.max"), &max.to_string()),
                None => Ok(()),
            },
            Controller::Memory => {
                dir.memory = true;
                let bytes = limits.memory_mb.unwrap_or_default().saturating_mul(1 << 20);
                dir.limit_memory(bytes)
            }
        }
    }

    pub(crate) fn paths(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|dir| dir.path.as_path())
    }

    /// Whether the kernel OOM-killed a process of the crew.
    pub(crate) fn oom_killed(&self) -> bool {
        self.oom_killed || self.dirs.iter().any(CrewDir::oom_killed)
    }

    /// SIGKILLs every process in the groups, once. Returns how many there were.
    pub(crate) fn kill_members(&self) -> usize {
        self.dirs.iter().map(CrewDir::kill_members).sum()
    }

    /// Kills the members and removes the groups, polling until they are empty.
    pub(crate) async fn remove(&mut self) {
        for _ in 0..REMOVE_ATTEMPTS {
            if self.try_remove() {
                return;
            }
            tokio::time::sleep(REMOVE_PAUSE).await;
        }
        self.give_up();
    }

    /// [`CrewCgroups::remove`] for `Drop`, where there is no async.
    fn remove_blocking(&mut self) {
        for _ in 0..REMOVE_ATTEMPTS {
            if self.try_remove() {
                return;
            }
            std::thread::sleep(REMOVE_PAUSE);
        }
        self.give_up();
    }

    /// One round of teardown; true when all groups are gone.
    fn try_remove(&mut self) -> bool {
        if self.kill_members() > 0 {
            return false;
        }
        let mut busy = Vec::new();
        for dir in self.dirs.drain(..) {
            self.oom_killed |= dir.oom_killed();
            match fs::remove_dir(&dir.path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => busy.push(dir),
                Err(error) => tracing::warn!(
                    crew = %self.crew, group = %dir.path.display(), %error,
                    "cannot remove a crew cgroup"
                ),
            }
        }
        self.dirs = busy;
        self.dirs.is_empty()
    }

    fn give_up(&mut self) {
        tracing::warn!(
            crew = %self.crew,
            groups = ?self.dirs.iter().map(|dir| &dir.path).collect::<Vec<_>>(),
            "crew cgroups not removed: processes are still in them (stuck in the kernel?); \
             the next host to start removes them"
        );
        self.dirs.clear();
    }
}

impl Drop for CrewCgroups {
    fn drop(&mut self) {
        if !self.dirs.is_empty() {
            self.remove_blocking();
        }
    }
}

impl CrewDir {
    fn limit_memory(&self, bytes: u64) -> Result<(), FileError> {
        let bytes = bytes.to_string();
        match self.version {
            Version::V2 => {
                write_file(self.path.join("memory.max"), &bytes)?;
                // Missing without swap accounting; then there is no swap to limit.
                let _ = write_file(self.path.join("memory.swap.max"), "0");
            }
            Version::V1 => {
                write_file(self.path.join("memory.limit_in_bytes"), &bytes)?;
                // Fails without swap accounting (swapaccount=0); then swap is not limited.
                let _ = write_file(self.path.join("memory.memsw.limit_in_bytes"), &bytes);
            }
        }
        Ok(())
    }

    fn oom_killed(&self) -> bool {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        self.memory
            && fs::read_to_string(self.path.join(file))
                .is_ok_and(|text| counter(&text, "oom_kill") > 0)
    }

    fn kill_members(&self) -> usize {
        if self.version == Version::V2 {
            // Kills the whole group at once, forking processes included (Linux 5.14+).
            let _ = fs::write(self.path.join("cgroup.kill"), "1");
        }
        let Ok(procs) = fs::read_to_string(self.path.join("cgroup.procs")) else {
            return 0;
        };
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect();
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        pids.len()
    }
}

/// The value of `name` in a `name value` per line file such as `memory.events`.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counter_is_read_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(v1, "oom_kill"), 2);
        assert_eq!(counter(v2, "oom_kill"), 1);
        assert_eq!(counter("oom 3\n", "oom_kill"), 0);
    }
}
