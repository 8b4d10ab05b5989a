//! The bundled runners, embedded at build time and written out once per host process.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/bundled_runners.rs"));
}

/// A private copy of the bundled Python runner, removed when dropped. Its folder goes on
/// `PYTHONPATH` for `python`, `crewai` and `prompt` crews.
#[derive(Debug)]
pub struct BundledRunners {
    dir: tempfile::TempDir,
}

impl BundledRunners {
    /// Writes the embedded files to a new private folder, readable by other users so a
    /// crew running under `sandbox.user` can load them, but writable only by the host.
    pub fn extract() -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("live-crew-runners-")
            .tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        for (relative, contents) in embedded::FILES {
            let path = dir.path().join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
            }
            std::fs::write(&path, contents)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(BundledRunners { dir })
    }

    /// The folder to put on `PYTHONPATH`.
    pub fn python_path(&self) -> &Path {
        self.dir.path()
    }

    /// Compiles the runner's modules to bytecode for `python`. Runners may not write
    /// here (Landlock), so without this each start would compile them again (~6 ms).
    pub fn precompile(&self, python: &Path) -> io::Result<()> {
        let status = std::process::Command::new(python)
            .args(["-I", "-m", "compileall", "-q"])
            .arg(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("compileall ended with {status}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precompiled_runners_hold_bytecode_for_every_module() {
        let runners = BundledRunners::extract().unwrap();
        runners.precompile(Path::new("python3")).unwrap();
        for (relative, _) in embedded::FILES.iter().filter(|(p, _)| p.ends_with(".py")) {
            let source = runners.python_path().join(relative);
            let cache = source.parent().unwrap().join("__pycache__");
            let stem = source.file_stem().unwrap().to_str().unwrap();
            let compiled = std::fs::read_dir(&cache).unwrap().flatten().any(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{stem}."))
            });
            assert!(compiled, "no bytecode for {relative}");
        }
    }

    #[test]
    fn every_runner_source_file_is_embedded() {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("runners/python");
        let runners = BundledRunners::extract().unwrap();
        assert!(!embedded::FILES.is_empty());
        assert!(
            embedded::FILES
                .iter()
                .any(|(p, _)| *p == "live_crew_runner/__main__.py")
        );
        for (relative, contents) in embedded::FILES {
            let extracted = std::fs::read(runners.python_path().join(relative)).unwrap();
            assert_eq!(&extracted, contents);
            assert_eq!(std::fs::read(source.join(relative)).unwrap(), extracted);
        }
    }
}
