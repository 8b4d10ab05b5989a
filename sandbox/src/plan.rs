//! Planning a crew's start: everything the pre-exec sequence needs, as plain data.
//!
//! [`Sandbox::plan`] turns a [`SpawnSpec`] into a [`LaunchPlan`] in the host: it makes
//! the crew's working directory and cgroups, settles the environment, the rlimits, the
//! Landlock paths and the seccomp filters, and forks nothing. A
//! [`Launcher`](crate::Launcher) applies the plan (see `preexec.rs`); as plain
//! serde data it can also be handed to a process that forks the crew itself, such as the
//! fork server of SPEC §13.

use std::ffi::{OsStr, OsString};
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::resource::getrlimit;
use nix::unistd::{Gid, Uid, chown};
use serde::{Deserialize, Serialize};

use crate::cgroup::CrewCgroups;
use crate::filesystem::LandlockRules;
use crate::seccomp::BpfInstruction;
use crate::{
    Layer, Limits, PREFIX, Sandbox, SandboxError, SpawnSpec, User, file_safe, left_by_dead_host,
};

/// PATH when the host has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// LANG when the host has none.
const DEFAULT_LANG: &str = "C.UTF-8";

/// Everything a crew's start needs, in the order the pre-exec sequence uses it. Plain
/// data: what only exists in one process (open fds, the pid of the process that forks)
/// is found by the launcher that applies the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPlan {
    /// The crew's name, for messages.
    pub crew: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The whole environment of the program; nothing else is inherited.
    pub env: Vec<(OsString, OsString)>,
    /// The crew's private working directory, also its HOME and TMPDIR.
    pub workdir: PathBuf,
    /// The `cgroup.procs` files the child writes itself into before exec. Empty without
    /// cgroups, and when the host moves the crew in after the start
    /// ([`Isolation::defer_cgroup_join`](crate::Isolation)).
    pub cgroup_procs: Vec<PathBuf>,
    /// Join the host's empty network namespace.
    pub empty_netns: bool,
    /// Start as PID 1 of a new pid namespace.
    pub new_pid_namespace: bool,
    /// Set in this order, while still privileged enough to lower hard limits.
    pub rlimits: Vec<Rlimit>,
    /// The identity to drop to, after the rlimits.
    pub user: Option<User>,
    /// `None` leaves the filesystem as the crew's user sees it.
    pub landlock: Option<LandlockRules>,
    /// Seccomp filters, installed in this order last; empty without the layer.
    pub seccomp: Vec<Vec<BpfInstruction>>,
    /// Keep the capabilities of the host: only for the fork server, which needs
    /// CAP_SYS_ADMIN to give each crew it forks its namespaces. Crews never do.
    #[serde(default)]
    pub keep_capabilities: bool,
}

/// One `setrlimit` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

/// The resources a plan limits, named as in `setrlimit(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    #[serde(rename = "RLIMIT_CORE")]
    Core,
    #[serde(rename = "RLIMIT_AS")]
    AddressSpace,
    #[serde(rename = "RLIMIT_CPU")]
    Cpu,
    #[serde(rename = "RLIMIT_NOFILE")]
    OpenFiles,
    #[serde(rename = "RLIMIT_NPROC")]
    Processes,
}

impl Resource {
    pub(crate) fn nix(self) -> nix::sys::resource::Resource {
        use nix::sys::resource::Resource as R;
        match self {
            Resource::Core => R::RLIMIT_CORE,
            Resource::AddressSpace => R::RLIMIT_AS,
            Resource::Cpu => R::RLIMIT_CPU,
            Resource::OpenFiles => R::RLIMIT_NOFILE,
            Resource::Processes => R::RLIMIT_NPROC,
        }
    }
}

/// A plan, and what the host holds for it until a launcher hands both to the crew's
/// [`Child`](crate::Child): the working directory and the cgroups. Dropped unlaunched,
/// it removes them.
#[derive(Debug)]
pub struct Planned {
    pub plan: LaunchPlan,
    pub(crate) workdir: tempfile::TempDir,
    pub(crate) cgroups: CrewCgroups,
    /// The host moves the crew into `cgroups` after the start.
    pub(crate) defer_cgroup_join: bool,
}

impl Sandbox {
    /// Plans the start of `spec`: makes its working directory and cgroups, and settles
    /// what the child gets. Forks nothing.
    pub fn plan(&self, spec: &SpawnSpec) -> Result<Planned, SandboxError> {
        let workdir = private_workdir(spec)?;
        let cgroups = CrewCgroups::create(&self.cgroups, &spec.name, &spec.limits)?;
        let cover = CgroupCover {
            pids: self.applies(Layer::PidsCgroup, spec),
            memory: self.applies(Layer::MemoryCgroup, spec),
        };
        let defer_cgroup_join = spec.isolation.defer_cgroup_join;
        let plan = LaunchPlan {
            crew: spec.name.clone(),
            program: spec.program.clone(),
            args: spec.args.clone(),
            env: environment(|name| std::env::var_os(name), &spec.env, workdir.path()),
            workdir: workdir.path().to_path_buf(),
            cgroup_procs: if defer_cgroup_join {
                Vec::new()
            } else {
                cgroups
                    .paths()
                    .map(|dir| dir.join("cgroup.procs"))
                    .collect()
            },
            empty_netns: self.applies(Layer::Netns, spec),
            new_pid_namespace: self.applies(Layer::PidNamespace, spec),
            rlimits: rlimits(&spec.limits, cover, current_hard_limit),
            user: spec.user,
            landlock: spec
                .isolation
                .filesystem
                .as_ref()
                .filter(|_| self.applies(Layer::Landlock, spec))
                .map(|rules| LandlockRules::new(rules, workdir.path())),
            seccomp: match &self.seccomp {
                Some(filters) if self.applies(Layer::Seccomp, spec) => filters.clone(),
                _ => Vec::new(),
            },
            keep_capabilities: false,
        };
        Ok(Planned {
            plan,
            workdir,
            cgroups,
            defer_cgroup_join,
        })
    }
}

/// Which limits the crew's cgroups already enforce for the crew as a whole.
#[derive(Debug, Clone, Copy)]
struct CgroupCover {
    pids: bool,
    memory: bool,
}

/// The rlimits for `limits`, never above the host's own hard limits (an unprivileged
/// host could not raise them, and a crew never gets more than the host).
fn rlimits(
    limits: &Limits,
    cover: CgroupCover,
    current_hard: impl Fn(Resource) -> u64,
) -> Vec<Rlimit> {
    let limit = |resource, soft: u64, hard: u64| {
        let hard = hard.min(current_hard(resource));
        Rlimit {
            resource,
            soft: soft.min(hard),
            hard,
        }
    };
    let mut out = vec![limit(Resource::Core, 0, 0)];
    if let Some(mb) = limits.memory_mb {
        // With the memory cgroup, RLIMIT_AS only stops absurd allocations early: thread
        // stacks and malloc arenas reserve address space that is never used, and the
        // cgroup limits what is.
        let factor = if cover.memory { 2 } else { 1 };
        let bytes = mb.saturating_mul(factor << 20);
        out.push(limit(Resource::AddressSpace, bytes, bytes));
    }
    if let Some(seconds) = limits.cpu_s {
        // SIGXCPU at the soft limit, SIGKILL a second later if that is ignored.
        out.push(limit(Resource::Cpu, seconds, seconds.saturating_add(1)));
    }
    if let Some(files) = limits.open_files {
        out.push(limit(Resource::OpenFiles, files, files));
    }
    if let (false, Some(processes)) = (cover.pids, limits.processes) {
        out.push(limit(Resource::Processes, processes, processes));
    }
    out
}

fn current_hard_limit(resource: Resource) -> u64 {
    getrlimit(resource.nix()).map_or(libc::RLIM_INFINITY, |(_, hard)| hard)
}

/// A fresh temporary folder for the crew, only accessible to the crew's user (or the
/// host's, without one).
fn private_workdir(spec: &SpawnSpec) -> Result<tempfile::TempDir, SandboxError> {
    let error = |source| SandboxError::Workdir {
        crew: spec.name.clone(),
        source,
    };
    let workdir = tempfile::Builder::new()
        .prefix(&format!(
            "{PREFIX}{}-{}-",
            std::process::id(),
            file_safe(&spec.name)
        ))
        .permissions(Permissions::from_mode(0o700))
        .tempdir()
        .map_err(error)?;
    if let Some(user) = spec.user {
        chown(
            workdir.path(),
            Some(Uid::from_raw(user.uid)),
            Some(Gid::from_raw(user.gid)),
        )
        .map_err(|errno| error(errno.into()))?;
    }
    Ok(workdir)
}

/// Removes the working directories of hosts that were killed before they could.
pub(crate) fn sweep_stale_workdirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(left_by_dead_host) {
            tracing::info!(workdir = %entry.path().display(), "removing a crew workdir left by a dead host");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The child's whole environment: the allowlist from the host, then the crew's own,
/// then HOME and TMPDIR, which always point at the working directory.
fn environment(
    host: impl Fn(&str) -> Option<OsString>,
    crew: &[(OsString, OsString)],
    workdir: &Path,
) -> Vec<(OsString, OsString)> {
    let from_host = |name: &str, default: &str| {
        let value = host(name)
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| default.into());
        (OsString::from(name), value)
    };
    let forced = ["HOME", "TMPDIR"];
    let mut env = vec![
        from_host("PATH", DEFAULT_PATH),
        from_host("LANG", DEFAULT_LANG),
    ];
    env.extend(
        crew.iter()
            .filter(|(name, _)| !forced.iter().any(|forced| name == OsStr::new(forced)))
            .cloned(),
    );
    env.extend(forced.map(|name| (OsString::from(name), workdir.as_os_str().to_owned())));
    env
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cgroup::Controllers;
    use crate::{FsRules, Isolation};

    const UNLIMITED: fn(Resource) -> u64 = |_| libc::RLIM_INFINITY;
    const NO_CGROUPS: CgroupCover = CgroupCover {
        pids: false,
        memory: false,
    };

    fn pairs(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)))
            .collect()
    }

    /// A spec that asks for every layer and limit.
    fn full_spec() -> SpawnSpec {
        SpawnSpec {
            name: "planned crew".to_owned(),
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "true".into()],
            env: pairs(&[("GREETING", "hello")]),
            limits: Limits {
                memory_mb: Some(64),
                cpu_s: Some(5),
                open_files: Some(32),
                processes: Some(8),
            },
            // The host's own identity, so that the workdir's chown works without root.
            user: Some(User {
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
            }),
            isolation: Isolation {
                no_network: true,
                pid_namespace: true,
                filesystem: Some(FsRules {
                    read: vec![PathBuf::from("/opt/crew")],
                    write: vec![PathBuf::from("/srv/out")],
                }),
                seccomp: true,
                defer_cgroup_join: false,
            },
        }
    }

    /// A sandbox with every layer, its cgroup hierarchies faked in `cgroup_root`.
    fn full_sandbox(cgroup_root: &Path) -> Sandbox {
        let netns = std::fs::File::open("/proc/self/ns/net").unwrap();
        Sandbox {
            cgroups: Controllers::fake_v1(cgroup_root),
            netns: Some(Arc::new(netns.into())),
            pid_namespace: true,
            landlock: true,
            seccomp: Some(crate::seccomp::compile().unwrap()),
        }
    }

    fn rlimit(plan: &LaunchPlan, resource: Resource) -> Option<(u64, u64)> {
        plan.rlimits
            .iter()
            .find(|limit| limit.resource == resource)
            .map(|limit| (limit.soft, limit.hard))
    }

    #[test]
    fn a_full_spec_plans_every_layer() {
        let cgroup_root = tempfile::tempdir().unwrap();
        let spec = full_spec();
        let planned = full_sandbox(cgroup_root.path()).plan(&spec).unwrap();
        let plan = &planned.plan;
        let workdir = planned.workdir.path();

        assert_eq!(plan.crew, "planned crew");
        assert_eq!((&plan.program, &plan.args), (&spec.program, &spec.args));
        assert_eq!(plan.workdir, workdir);
        assert!(
            plan.env
                .contains(&(OsString::from("GREETING"), "hello".into()))
        );
        assert!(plan.env.contains(&(OsString::from("HOME"), workdir.into())));
        let groups: Vec<PathBuf> = planned.cgroups.paths().map(Path::to_path_buf).collect();
        assert_eq!(groups.len(), 2, "a pids and a memory group");
        assert_eq!(
            plan.cgroup_procs,
            groups
                .iter()
                .map(|dir| dir.join("cgroup.procs"))
                .collect::<Vec<_>>()
        );
        assert!(plan.empty_netns);
        assert!(plan.new_pid_namespace);
        // The cgroups cover processes and memory: no RLIMIT_NPROC, RLIMIT_AS doubled.
        assert_eq!(rlimit(plan, Resource::Core), Some((0, 0)));
        assert_eq!(
            rlimit(plan, Resource::AddressSpace),
            Some((128 << 20, 128 << 20))
        );
        assert_eq!(rlimit(plan, Resource::Cpu), Some((5, 6)));
        assert_eq!(rlimit(plan, Resource::OpenFiles), Some((32, 32)));
        assert_eq!(rlimit(plan, Resource::Processes), None);
        assert_eq!(plan.user, spec.user);
        let landlock = plan.landlock.as_ref().unwrap();
        assert!(landlock.read.contains(&PathBuf::from("/usr")));
        assert!(landlock.read.contains(&PathBuf::from("/opt/crew")));
        assert!(landlock.write.contains(&PathBuf::from("/srv/out")));
        assert_eq!(landlock.write.last().map(PathBuf::as_path), Some(workdir));
        assert_eq!(plan.seccomp, crate::seccomp::compile().unwrap());
    }

    #[test]
    fn a_deferred_cgroup_join_leaves_the_join_out_of_the_plan() {
        let cgroup_root = tempfile::tempdir().unwrap();
        let mut spec = full_spec();
        spec.isolation.defer_cgroup_join = true;
        let planned = full_sandbox(cgroup_root.path()).plan(&spec).unwrap();
        assert!(planned.plan.cgroup_procs.is_empty());
        assert_eq!(planned.cgroups.paths().count(), 2);
        assert!(planned.defer_cgroup_join);
    }

    #[test]
    fn a_host_without_optional_layers_plans_none() {
        let planned = Sandbox::default().plan(&full_spec()).unwrap();
        let plan = &planned.plan;
        assert!(plan.cgroup_procs.is_empty());
        assert!(!plan.empty_netns);
        assert!(!plan.new_pid_namespace);
        assert_eq!(plan.landlock, None);
        assert!(plan.seccomp.is_empty());
        // Without cgroups, the weak fallbacks.
        assert_eq!(rlimit(plan, Resource::Processes), Some((8, 8)));
        assert_eq!(
            rlimit(plan, Resource::AddressSpace),
            Some((64 << 20, 64 << 20))
        );
    }

    #[test]
    fn a_plan_survives_a_serde_round_trip() {
        let cgroup_root = tempfile::tempdir().unwrap();
        let planned = full_sandbox(cgroup_root.path()).plan(&full_spec()).unwrap();
        let json = serde_json::to_string(&planned.plan).unwrap();
        assert!(json.contains(r#""resource":"RLIMIT_AS""#), "{json}");
        let back: LaunchPlan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, planned.plan);
    }

    #[test]
    fn core_dumps_are_always_off() {
        let plan = rlimits(&Limits::default(), NO_CGROUPS, UNLIMITED);
        assert_eq!(
            plan,
            vec![Rlimit {
                resource: Resource::Core,
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
                .map(|limit| (limit.soft, limit.hard))
        };
        assert_eq!(get(Resource::AddressSpace), Some((256 << 20, 256 << 20)));
        assert_eq!(get(Resource::Cpu), Some((60, 61)));
        assert_eq!(get(Resource::OpenFiles), Some((128, 128)));
        assert_eq!(get(Resource::Processes), Some((32, 32)));
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
                .all(|limit| limit.resource != Resource::Processes)
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
            .find(|limit| limit.resource == Resource::AddressSpace)
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
        for limit in plan.iter().filter(|l| l.resource != Resource::Core) {
            assert_eq!((limit.soft, limit.hard), (4096, 4096), "{limit:?}");
        }
    }

    #[test]
    fn host_allowlist_then_crew_env_then_private_home() {
        let host = |name: &str| match name {
            "PATH" => Some(OsString::from("/host/bin")),
            "SECRET" => Some(OsString::from("hunter2")),
            _ => None,
        };
        let crew = pairs(&[("LANGUAGE", "en"), ("LANG", "de_DE.UTF-8")]);
        let env = environment(host, &crew, Path::new("/tmp/w"));
        assert_eq!(
            env,
            pairs(&[
                ("PATH", "/host/bin"),
                ("LANG", "C.UTF-8"),
                ("LANGUAGE", "en"),
                ("LANG", "de_DE.UTF-8"),
                ("HOME", "/tmp/w"),
                ("TMPDIR", "/tmp/w"),
            ])
        );
    }

    #[test]
    fn crew_cannot_override_home_or_tmpdir() {
        let crew = pairs(&[("HOME", "/root"), ("TMPDIR", "/var/tmp")]);
        let env = environment(|_| None, &crew, Path::new("/tmp/w"));
        assert_eq!(
            env,
            pairs(&[
                ("PATH", DEFAULT_PATH),
                ("LANG", DEFAULT_LANG),
                ("HOME", "/tmp/w"),
                ("TMPDIR", "/tmp/w"),
            ])
        );
    }
}
