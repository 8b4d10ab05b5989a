//! Helpers shared by the tests that run the hostile fixture runner.

use std::path::{Path, PathBuf};

const HOSTILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/hostile/hostile_runner.py"
);

/// Writes crew folder `root/name` running the hostile runner, with extra runtime-file
/// lines; returns its runtime file.
pub fn write_hostile_crew(root: &Path, name: &str, extra: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(HOSTILE, dir.join("hostile_runner.py")).unwrap();
    let file = dir.join("runtime.yaml");
    std::fs::write(
        &file,
        format!(
            "crew: {name}\ntriggers: ['*']\nrunner: {{kind: command, command: [\"./hostile_runner.py\"]}}\n{extra}"
        ),
    )
    .unwrap();
    file
}

/// Whether a process no longer runs. A zombie waiting for init to reap it counts as gone.
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
