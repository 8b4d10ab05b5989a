//! Embeds the bundled Python runner (`runners/python/live_crew_runner`) into the binary,
//! so an installed `live-crew` needs nothing beside it but a Python interpreter.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("runners/python");
    let package = root.join("live_crew_runner");
    println!("cargo:rerun-if-changed={}", package.display());
    let mut files = Vec::new();
    collect_python_files(&package, &mut files);
    files.sort();
    let mut out = String::from(
        "/// The bundled runner's files: path relative to the package root, and contents.\n",
    );
    out.push_str("pub const FILES: &[(&str, &[u8])] = &[\n");
    for file in &files {
        let relative = file.strip_prefix(&root).expect("file under root");
        writeln!(
            out,
            "    ({:?}, include_bytes!({:?})),",
            relative.to_str().expect("UTF-8 path"),
            file.to_str().expect("UTF-8 path")
        )
        .expect("write to string");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("bundled_runners.rs");
    std::fs::write(dest, out).expect("write bundled_runners.rs");
}

fn collect_python_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "__pycache__") {
                collect_python_files(&path, files);
            }
        } else if path.extension().is_some_and(|ext| ext == "py") {
            files.push(path);
        }
    }
}
