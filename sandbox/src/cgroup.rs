//! Per-crew cgroups: a pids group, which enforces the process limit and finds every
//! process the crew started (even one that left the crew's session), and a memory group,
//! which limits the crew's memory as a whole and records OOM kills.
//!
//! Groups are only ever created beneath the host's own cgroup, as `/proc/self/cgroup`
//! names it, and are named `live-crew-<host pid>-<crew>-<n>`, so that the next host can
//! tell the groups of a host that died. Each controller is taken
//! from cgroup v2 where the host's v2 group offers it, else from its v1 hierarchy.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Limits, PREFIX, SandboxError, file_safe, left_by_dead_host};

/// Teardown polls this often for the killed members to be gone...
const REMOVE_PAUSE: Duration = Duration::from_millis(5);
/// ...and gives up after this many polls (one second), so it never hangs.
const REMOVE_ATTEMPTS: u32 = 200;

/// Numbers the groups this host creates, so that names never repeat.
static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
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

impl Controllers {
    /// Finds where the host may create crew groups, checks that it really can, and
    /// cleans up groups left behind by hosts that died.
    pub(crate) fn probe() -> Self {
        let (Ok(own), Ok(mounts)) = (
            fs::read_to_string("/proc/self/cgroup"),
            fs::read_to_string("/proc/self/mountinfo"),
        ) else {
            tracing::debug!("cannot read /proc/self/cgroup or mountinfo: no cgroup layers");
            return Controllers::default();
        };
        let places = Places::parse(&own, &mounts);
        let controllers = Controllers {
            pids: places.usable(Controller::Pids),
            memory: places.usable(Controller::Memory),
        };
        controllers.sweep_stale();
        controllers
    }

    /// Kills what still runs in groups of hosts that no longer exist, and removes the
    /// groups. A host killed with SIGKILL cannot clean up after itself.
    fn sweep_stale(&self) {
        for host in [&self.pids, &self.memory].into_iter().flatten() {
            let Ok(entries) = fs::read_dir(&host.dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !name.to_str().is_some_and(left_by_dead_host) {
                    continue;
                }
                tracing::info!(group = %entry.path().display(), "removing a crew cgroup left by a dead host");
                // Dropping the groups kills their members and removes the directory.
                drop(CrewCgroups {
                    crew: name.to_string_lossy().into_owned(),
                    dirs: vec![CrewDir {
                        path: entry.path(),
                        version: host.version,
                        memory: false,
                    }],
                    oom_killed: false,
                });
            }
        }
    }
}

/// Where the host's own cgroups are: its v2 group, and its group in each v1 hierarchy.
#[derive(Debug, Default, PartialEq, Eq)]
struct Places {
    v2: Option<PathBuf>,
    v1: Vec<(String, PathBuf)>,
}

impl Places {
    /// Reads `/proc/self/cgroup` (`N:controllers:/path`, `0::/path` for v2) against the
    /// cgroup mounts in `/proc/self/mountinfo`.
    fn parse(proc_cgroup: &str, mountinfo: &str) -> Self {
        let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
        let mut places = Places::default();
        for line in proc_cgroup.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if controllers.is_empty() {
                places.v2 = mounts
                    .iter()
                    .filter(|mount| mount.fstype == "cgroup2")
                    .find_map(|mount| mount.locate(path));
                continue;
            }
            for controller in controllers.split(',') {
                let dir = mounts
                    .iter()
                    .filter(|mount| mount.fstype == "cgroup" && mount.serves(controller))
                    .find_map(|mount| mount.locate(path));
                if let Some(dir) = dir {
                    places.v1.push((controller.to_owned(), dir));
                }
            }
        }
        places
    }

    /// The host group to create `controller` groups in: v2 if it offers the controller,
    /// else v1; either only if a test group can really be created there.
    fn usable(&self, controller: Controller) -> Option<HostGroup> {
        let v2 = self
            .v2
            .as_ref()
            .filter(|dir| v2_offers(dir, controller))
            .map(|dir| HostGroup {
                version: Version::V2,
                dir: dir.clone(),
            });
        let v1 = self
            .v1
            .iter()
            .find(|(name, _)| name == controller.name())
            .map(|(_, dir)| HostGroup {
                version: Version::V1,
                dir: dir.clone(),
            });
        [v2, v1]
            .into_iter()
            .flatten()
            .find(|host| can_create(host, controller))
    }
}

/// Whether the v2 group `dir` has `controller` and lets its children use it, enabling
/// it for them if needed. This fails where the group holds processes itself (the v2
/// "no internal processes" rule), unless it is the root group.
fn v2_offers(dir: &Path, controller: Controller) -> bool {
    let name = controller.name();
    let listed = |file: &str| {
        fs::read_to_string(dir.join(file))
            .is_ok_and(|text| text.split_whitespace().any(|word| word == name))
    };
    if !listed("cgroup.controllers") {
        return false;
    }
    if listed("cgroup.subtree_control") {
        return true;
    }
    match fs::write(dir.join("cgroup.subtree_control"), format!("+{name}")) {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(dir = %dir.display(), %error, "cannot enable the v2 {name} controller");
            false
        }
    }
}

/// Creates and removes a test group beneath `host`.
fn can_create(host: &HostGroup, controller: Controller) -> bool {
    let dir = host.dir.join(format!(
        "{PREFIX}{}-probe-{}",
        std::process::id(),
        NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
    ));
    if let Err(error) = fs::create_dir(&dir) {
        tracing::debug!(dir = %dir.display(), %error, "cannot create a {} cgroup", controller.name());
        return false;
    }
    let works = dir.join(controller.limit_file(host.version)).exists();
    let _ = fs::remove_dir(&dir);
    works
}

/// One line of `/proc/self/mountinfo`, the fields that matter here.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    /// The path inside the cgroup tree that is mounted (not `/` in a cgroup namespace
    /// seen from outside, or for a bind mount of a subtree).
    root: String,
    point: PathBuf,
    fstype: String,
    super_options: String,
}

impl Mount {
    /// `id parent major:minor root point options [optional...] - fstype source super`
    fn parse(line: &str) -> Option<Mount> {
        let (before, after) = line.split_once(" - ")?;
        let mut before = before.split(' ').skip(3);
        let root = unescape(before.next()?);
        let point = PathBuf::from(unescape(before.next()?));
        let mut after = after.split(' ');
        let fstype = after.next()?.to_owned();
        let super_options = after.nth(1).unwrap_or_default().to_owned();
        Some(Mount {
            root,
            point,
            fstype,
            super_options,
        })
    }

    fn serves(&self, controller: &str) -> bool {
        self.super_options
            .split(',')
            .any(|option| option == controller)
    }

    /// Where the cgroup `path` is in the file system, if this mount shows it.
    fn locate(&self, path: &str) -> Option<PathBuf> {
        let relative = if self.root == "/" {
            path
        } else {
            path.strip_prefix(&self.root)
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))?
        };
        let relative = relative.trim_start_matches('/');
        if relative.is_empty() {
            Some(self.point.clone())
        } else {
            Some(self.point.join(relative))
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|digits| {
            bytes[i] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

    /// The `cgroup.procs` files the child writes itself into before exec.
    pub(crate) fn procs_files(&self) -> Result<Vec<CString>, SandboxError> {
        self.dirs
            .iter()
            .map(|dir| {
                let path = dir.path.join("cgroup.procs");
                CString::new(path.as_os_str().as_bytes()).map_err(|error| SandboxError::Cgroup {
                    crew: self.crew.clone(),
                    path,
                    source: io::Error::new(io::ErrorKind::InvalidInput, error),
                })
            })
            .collect()
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

    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/a51de457
2:cpu,cpuacct:/
0::/
";
    const HYBRID_MOUNTS: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:17 - cgroup cgroup rw,cpu,cpuacct
38 30 0:34 / /sys/fs/cgroup/systemd rw,relatime shared:18 - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn hybrid_hierarchy_maps_each_controller_below_the_hosts_own_group() {
        let places = Places::parse(HYBRID_CGROUP, HYBRID_MOUNTS);
        assert_eq!(places.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let v1 = |name: &str| {
            places
                .v1
                .iter()
                .find(|(controller, _)| controller == name)
                .map(|(_, dir)| dir.clone())
        };
        assert_eq!(v1("pids"), Some(PathBuf::from("/sys/fs/cgroup/pids")));
        assert_eq!(
            v1("memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/a51de457"))
        );
        assert_eq!(
            v1("cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
    }

    #[test]
    fn pure_v2_uses_the_unified_path() {
        let places = Places::parse(
            "0::/system.slice/live-crew.service\n",
            "25 1 0:23 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            places.v2,
            Some(PathBuf::from(
                "/sys/fs/cgroup/system.slice/live-crew.service"
            ))
        );
        assert!(places.v1.is_empty());
    }

    #[test]
    fn mount_of_a_subtree_is_joined_relative_to_its_root() {
        let mount = Mount::parse(
            "40 30 0:27 /kubepods/pod1 /sys/fs/cgroup rw shared:1 - cgroup2 cgroup2 rw",
        )
        .unwrap();
        assert_eq!(
            mount.locate("/kubepods/pod1/app"),
            Some(PathBuf::from("/sys/fs/cgroup/app"))
        );
        assert_eq!(
            mount.locate("/kubepods/pod1"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(mount.locate("/kubepods/pod10"), None);
        assert_eq!(mount.locate("/elsewhere"), None);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        let mount = Mount::parse("40 30 0:27 / /mnt/cg\\040v2 rw - cgroup2 cgroup2 rw").unwrap();
        assert_eq!(mount.point, PathBuf::from("/mnt/cg v2"));
        assert_eq!(unescape("a\\134b\\"), "a\\b\\");
    }

    #[test]
    fn oom_kill_counter_is_read_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(v1, "oom_kill"), 2);
        assert_eq!(counter(v2, "oom_kill"), 1);
        assert_eq!(counter("oom 3\n", "oom_kill"), 0);
    }
}
