use std::io;
use std::path::PathBuf;

use crate::Layer;

/// Errors from setting up or starting a sandboxed child.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "cannot create the private working directory for crew '{crew}': {source} \
         (hint: check that TMPDIR, or /tmp, exists and is writable by the host)"
    )]
    Workdir { crew: String, source: io::Error },
    #[error(
        "cannot set up the cgroup {} for crew '{crew}': {source} \
         (hint: it was writable when the host started; check that nothing removed the \
         host's cgroup or changed its permissions)",
        path.display()
    )]
    Cgroup {
        crew: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "cannot set up the filesystem rules for crew '{crew}'{}: {reason} \
         (hint: every path in sandbox.read and sandbox.write must exist and be readable \
         by the host)",
        path.as_ref().map(|path| format!(" at {}", path.display())).unwrap_or_default()
    )]
    Landlock {
        crew: String,
        path: Option<PathBuf>,
        reason: String,
    },
    #[error(
        "cannot start '{program}' for crew '{crew}': {source} \
         (hint: check that the program exists and is executable, also by the crew's user \
         if one is set, and that the crew's limits leave room to start it)"
    )]
    Spawn {
        crew: String,
        program: String,
        source: io::Error,
    },
    #[error(
        "crew '{crew}' is planned with the {layer} layer, which this launcher cannot give \
         (hint: launch a plan with a launcher of the sandbox that made it)"
    )]
    Launcher { crew: String, layer: Layer },
}
