//! Embeds the bundled Python runner (`runners/python/live_crew_runner`) into the binary,
//! so an installed `live-crew` needs nothing beside it but a Python interpreter.
//!
//! Where a Python interpreter is at hand at build time (`$LIVE_CREW_PYTHON`, else
//! `python3`), its bytecode for the runner is embedded too: a runner then starts without
//! compiling its own source, which it could not cache in its read-only folder. The files
//! are named for that interpreter's version, so any other version ignores them and
//! compiles the source as usual.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles every runner file given on the command line to `<out>/<relative dir>/
/// __pycache__/<name>.<cache tag>.pyc`. Unchecked-hash pycs are used without comparing
/// them to the source, whose modification time changes with every extraction.
const COMPILE: &str = r#"
import importlib.util, os, py_compile, sys
root, out = sys.argv[1], sys.argv[2]
for source in sys.argv[3:]:
    relative = os.path.relpath(source, root)
    cached = os.path.relpath(importlib.util.cache_from_source(source), root)
    py_compile.compile(source, cfile=os.path.join(out, cached), dfile=relative, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    print(cached)
"#;

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
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for (relative, pyc) in compile(&root, &out_dir.join("bytecode"), &files) {
        writeln!(
            out,
            "    ({:?}, include_bytes!({:?})),",
            relative,
            pyc.to_str().expect("UTF-8 path")
        )
        .expect("write to string");
    }
    out.push_str("];\n");
    let dest = out_dir.join("bundled_runners.rs");
    std::fs::write(dest, out).expect("write bundled_runners.rs");
}

/// The bytecode files (path relative to the package root, file), or none without a
/// working interpreter.
fn compile(root: &Path, out: &Path, files: &[PathBuf]) -> Vec<(String, PathBuf)> {
    println!("cargo:rerun-if-env-changed=LIVE_CREW_PYTHON");
    let python = std::env::var("LIVE_CREW_PYTHON")
        .ok()
        .filter(|python| !python.is_empty())
        .unwrap_or_else(|| "python3".into());
    let _ = std::fs::remove_dir_all(out);
    let output = Command::new(python)
        .args(["-I", "-c", COMPILE])
        .arg(root)
        .arg(out)
        .args(files)
        .output();
    match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|relative| (relative.to_owned(), out.join(relative)))
            .collect(),
        _ => Vec::new(),
    }
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
