//! Where the host may create crew cgroups: its own group in each hierarchy, from
//! `/proc/self/cgroup` and `/proc/self/mountinfo`, checked by creating a test group.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{Controller, Controllers, CrewCgroups, CrewDir, HostGroup, NEXT_GROUP, Version};
use crate::{PREFIX, left_by_dead_host};

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
}
