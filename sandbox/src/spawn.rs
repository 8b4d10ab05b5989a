//! Starting a crew runner: private working directory, cgroups, environment, and the
//! pre-exec sequence.

use std::ffi::{OsStr, OsString};
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use nix::unistd::{Gid, Uid, chown};

use crate::cgroup::CrewCgroups;
use crate::filesystem::PreparedRuleset;
use crate::preexec::{self, CgroupCover, PreExec};
use crate::{
    Child, Layer, PREFIX, Sandbox, SandboxError, SpawnSpec, file_safe, forker, left_by_dead_host,
};

/// PATH when the host has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// LANG when the host has none.
const DEFAULT_LANG: &str = "C.UTF-8";

impl Sandbox {
    /// Starts `spec` in its own session, cgroups and working directory, with piped
    /// stdin, stdout and stderr.
    ///
    /// Must be called from within a tokio runtime. Blocks for the fork and exec.
    pub fn spawn(&self, spec: &SpawnSpec) -> Result<Child, SandboxError> {
        let workdir = private_workdir(spec)?;
        let cgroups = CrewCgroups::create(&self.cgroups, &spec.name, &spec.limits)?;
        let cover = CgroupCover {
            pids: self.applies(Layer::PidsCgroup, spec),
            memory: self.applies(Layer::MemoryCgroup, spec),
        };
        let landlock = match &spec.isolation.filesystem {
            Some(rules) if self.applies(Layer::Landlock, spec) => Some(
                PreparedRuleset::build(rules, workdir.path()).map_err(|error| {
                    SandboxError::Landlock {
                        crew: spec.name.clone(),
                        path: error.path,
                        reason: error.reason,
                    }
                })?,
            ),
            _ => None,
        };
        let pre_exec = PreExec {
            host: std::process::id() as libc::pid_t,
            cgroup_procs: if spec.isolation.defer_cgroup_join {
                Vec::new()
            } else {
                cgroups.procs_files()?
            },
            netns: self
                .netns
                .clone()
                .filter(|_| self.applies(Layer::Netns, spec)),
            rlimits: preexec::rlimits(&spec.limits, cover, preexec::current_hard_limit),
            fd_limit: preexec::fd_limit(),
            user: spec.user,
            landlock,
            seccomp: self
                .seccomp
                .clone()
                .filter(|_| self.applies(Layer::Seccomp, spec)),
        };
        let pid_namespace = self.applies(Layer::PidNamespace, spec);
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(environment(
                |name| std::env::var_os(name),
                &spec.env,
                workdir.path(),
            ))
            .current_dir(workdir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: PreExec::run only makes async-signal-safe calls on data prepared above,
        // as a closure between fork and exec must.
        unsafe {
            command.pre_exec(move || pre_exec.run());
        }
        let spawn_error = |source| SandboxError::Spawn {
            crew: spec.name.clone(),
            program: spec.program.display().to_string(),
            source,
        };
        let mut child = forker::spawn(command, pid_namespace).map_err(spawn_error)?;
        let pid = child
            .id()
            .ok_or_else(|| spawn_error(std::io::Error::other("the child has no pid")))?;
        Ok(Child {
            crew: spec.name.clone(),
            pid,
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            inner: child,
            pid_namespace,
            cgroups_pending: spec.isolation.defer_cgroup_join,
            cgroups,
            workdir,
        })
    }
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
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)))
            .collect()
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
