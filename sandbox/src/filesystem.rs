//! The Landlock layer: a crew may read and execute the system paths every program needs
//! plus the ones its spawn spec names, read and write its private working directory and
//! the ones the spec names, and touch nothing else.
//!
//! Planning turns [`FsRules`] into [`LandlockRules`], the whole list of paths; the
//! launcher builds the ruleset from them before the fork (it opens every path), and the
//! child only calls `landlock_restrict_self` on its fd.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
};
use serde::{Deserialize, Serialize};

/// The newest ABI (`landlock::ABI::V5`) whose rights we ask for; older kernels get what
/// they support.
const ABI_WANTED: u8 = 5;

/// Read and execute, for every crew: the system's programs and libraries, and the
/// configuration files that libc and TLS read. Not all of `/etc`: it holds secrets
/// such as `/etc/shadow`. Missing paths are skipped.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/locale.alias",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/mime.types",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Read and write, for every crew, besides its working directory.
const SYSTEM_WRITE: &[&str] = &["/dev/null", "/dev/full"];

/// Paths a crew may use beyond the system ones and its working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsRules {
    /// Read and execute.
    pub read: Vec<PathBuf>,
    /// Read, write, create and remove.
    pub write: Vec<PathBuf>,
}

/// The Landlock rules of one crew, every path included: the system's, the spec's and
/// the working directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockRules {
    /// The Landlock ABI whose access rights the ruleset handles; a kernel with an older
    /// ABI enforces the rights it knows.
    pub abi: u8,
    /// Read and execute.
    pub read: Vec<PathBuf>,
    /// Read, write, create and remove.
    pub write: Vec<PathBuf>,
}

impl LandlockRules {
    /// The rules for `rules` plus the system paths that exist here and `workdir`.
    pub(crate) fn new(rules: &FsRules, workdir: &Path) -> Self {
        let system = |paths: &'static [&'static str]| {
            paths
                .iter()
                .map(Path::new)
                .filter(|path| path.exists())
                .map(Path::to_path_buf)
        };
        LandlockRules {
            abi: ABI_WANTED,
            read: system(SYSTEM_READ)
                .chain(rules.read.iter().cloned())
                .collect(),
            write: system(SYSTEM_WRITE)
                .chain(rules.write.iter().cloned())
                .chain([workdir.to_path_buf()])
                .collect(),
        }
    }
}

/// An error building the ruleset: the path it concerns, if any, and why.
#[derive(Debug)]
pub(crate) struct RulesetError {
    pub(crate) path: Option<PathBuf>,
    pub(crate) reason: String,
}

impl RulesetError {
    fn general(error: impl std::fmt::Display) -> Self {
        RulesetError {
            path: None,
            reason: error.to_string(),
        }
    }
}

/// A ruleset ready for the child to restrict itself with.
#[derive(Debug)]
pub(crate) struct PreparedRuleset(OwnedFd);

impl PreparedRuleset {
    /// The ruleset of `plan`, if it has Landlock rules; the error names the crew and
    /// the path it could not open.
    pub(crate) fn for_plan(plan: &crate::LaunchPlan) -> Result<Option<Self>, crate::SandboxError> {
        plan.landlock
            .as_ref()
            .map(PreparedRuleset::build)
            .transpose()
            .map_err(|error| crate::SandboxError::Landlock {
                crew: plan.crew.clone(),
                path: error.path,
                reason: error.reason,
            })
    }

    /// Opens every path of `rules` into a ruleset.
    pub(crate) fn build(rules: &LandlockRules) -> Result<Self, RulesetError> {
        let abi = ABI::from(i32::from(rules.abi));
        let read = AccessFs::from_read(abi);
        let all = AccessFs::from_all(abi);
        let grants = rules
            .read
            .iter()
            .map(|path| (path, read))
            .chain(rules.write.iter().map(|path| (path, all)));
        let mut ruleset = Ruleset::default()
            .handle_access(all)
            .and_then(|ruleset| ruleset.create())
            .map_err(RulesetError::general)?;
        for (path, access) in grants {
            let fd = PathFd::new(path).map_err(|error| RulesetError {
                path: Some(path.clone()),
                reason: error.to_string(),
            })?;
            // A file takes only the rights that apply to files.
            let access = if path.is_dir() {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|error| RulesetError {
                    path: Some(path.clone()),
                    reason: error.to_string(),
                })?;
        }
        let fd: Option<OwnedFd> = ruleset.into();
        fd.map(PreparedRuleset)
            .ok_or_else(|| RulesetError::general("the kernel has no Landlock"))
    }

    /// The ruleset's fd, for a fork server that restricts the crews it forks.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Restricts the calling thread, and everything it executes, to the ruleset.
    /// Async-signal-safe. Needs no_new_privs set first (or CAP_SYS_ADMIN).
    pub(crate) fn restrict_self(&self) -> std::io::Result<()> {
        // SAFETY: landlock_restrict_self takes the ruleset fd, which this struct owns
        // and keeps open, and flags 0; it touches no memory of ours.
        let done = unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                self.0.as_raw_fd(),
                0 as libc::c_uint,
            )
        };
        if done == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}
