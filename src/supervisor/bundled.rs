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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runner_source_file_is_embedded() {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("runners/python");
        let runners = BundledRunners::extract().unwrap();
        let sources: Vec<_> = embedded::FILES
            .iter()
            .filter(|(p, _)| p.ends_with(".py"))
            .collect();
        assert!(
            sources
                .iter()
                .any(|(p, _)| *p == "live_crew_runner/__main__.py")
        );
        for (relative, contents) in &sources {
            let extracted = std::fs::read(runners.python_path().join(relative)).unwrap();
            assert_eq!(&extracted, contents);
            assert_eq!(std::fs::read(source.join(relative)).unwrap(), extracted);
        }
    }

    const IMPORT_ALL: &str = "import importlib, os, sys\nsys.path.insert(0, os.getcwd())\nfor m in sys.argv[1:]: importlib.import_module(m)";

    /// The embedded bytecode (built with `$LIVE_CREW_PYTHON` or `python3`) is what that
    /// interpreter loads: had it found a pyc stale or invalid, it would have compiled the
    /// source and written a new one in its place.
    #[test]
    fn the_build_interpreter_loads_the_embedded_bytecode() {
        let bytecode: Vec<_> = embedded::FILES
            .iter()
            .filter(|(p, _)| p.ends_with(".pyc"))
            .collect();
        let sources = embedded::FILES.len() - bytecode.len();
        assert_eq!(bytecode.len(), sources, "one pyc per source file");
        let runners = BundledRunners::extract().unwrap();
        let python =
            crate::supervisor::launch::bundled_python(None, |name| std::env::var(name).ok());
        let modules: Vec<String> = embedded::FILES
            .iter()
            .filter_map(|(p, _)| p.strip_suffix(".py"))
            // Importing `__main__` would start a runner.
            .filter(|p| !p.ends_with("/__main__"))
            .map(|p| p.trim_end_matches("/__init__").replace('/', "."))
            .collect();
        let status = std::process::Command::new(python)
            .args(["-I", "-c", IMPORT_ALL])
            .args(&modules)
            .current_dir(runners.python_path())
            .status()
            .unwrap();
        assert!(status.success());
        for (relative, contents) in bytecode {
            let loaded = std::fs::read(runners.python_path().join(relative)).unwrap();
            assert_eq!(&loaded, contents, "{relative} was recompiled");
        }
    }
}
