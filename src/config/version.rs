//! A crew's version: a digest of everything in its folder, which health shows and hot
//! reload compares.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// SHA-256 (hex) over the names and contents of the files under the crew folder `dir`;
/// Python's bytecode caches are left out, since the crews write them.
pub fn crew_version(dir: &Path) -> String {
    let mut hash = Sha256::new();
    for file in crew_files(dir) {
        hash.update(
            file.strip_prefix(dir)
                .unwrap_or(&file)
                .as_os_str()
                .as_encoded_bytes(),
        );
        hash.update(std::fs::read(&file).unwrap_or_default());
    }
    format!("{:x}", hash.finalize())
}

/// The files a crew's version is made of, sorted.
pub fn crew_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.sort();
    files
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(Result::ok).map(|entry| entry.path()) {
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "__pycache__") {
                collect_files(&path, files);
            }
        } else {
            files.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_follows_the_files_not_the_bytecode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("handlers.py"), "v = 1\n").unwrap();
        let first = crew_version(dir.path());
        std::fs::create_dir(dir.path().join("__pycache__")).unwrap();
        std::fs::write(dir.path().join("__pycache__/handlers.pyc"), "x").unwrap();
        assert_eq!(crew_version(dir.path()), first);
        std::fs::write(dir.path().join("handlers.py"), "v = 2\n").unwrap();
        assert_ne!(crew_version(dir.path()), first);
    }
}
