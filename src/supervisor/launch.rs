//! How to start a crew's runner: program, arguments, environment and limits.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use live_crew_sandbox::{Limits, SpawnSpec};

use crate::config::{CrewSpec, RunnerSpec};

/// How the bundled Python runner is started, with its folder on `PYTHONPATH`.
const RUNNER_ENTRY: &str = "from live_crew_runner.serve import main; main()";

/// Everything needed to spawn one crew's runner, computed once per crew. `host_env` looks
/// up the host's environment; only `LIVE_CREW_PYTHON`, `LIVE_CREW_LLM` and the crew's
/// `env_passthrough` names are ever read through it, so no other host variable reaches a crew.
pub(crate) fn spawn_spec(
    spec: &CrewSpec,
    bundled_python_path: &Path,
    host_env: impl Fn(&str) -> Option<String>,
) -> SpawnSpec {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let (program, args) = match &spec.runner {
        RunnerSpec::BundledPython { python, .. } => {
            let python = python
                .clone()
                .or_else(|| host_env("LIVE_CREW_PYTHON"))
                .unwrap_or_else(|| "python3".to_owned());
            env.push(("PYTHONPATH".into(), bundled_python_path.into()));
            // The LLM override for crewai/prompt crews (SPEC §10) follows the host's.
            if let Some(model) = host_env("LIVE_CREW_LLM") {
                env.push(("LIVE_CREW_LLM".into(), model.into()));
            }
            // `-c` rather than `-m`: loading runpy would add ~8 ms to every start.
            (
                PathBuf::from(python),
                vec!["-c".into(), RUNNER_ENTRY.into()],
            )
        }
        RunnerSpec::Command { program, args } => {
            (program.clone(), args.iter().map(OsString::from).collect())
        }
    };
    env.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
    for name in &spec.env_passthrough {
        if let Some(value) = host_env(name) {
            env.push((name.into(), value.into()));
        }
    }
    env.push(("LIVE_CREW_CREW_DIR".into(), spec.dir.clone().into()));
    let sandbox = &spec.sandbox;
    SpawnSpec {
        name: spec.name.clone(),
        program,
        args,
        env,
        limits: Limits {
            memory_mb: Some(sandbox.memory_mb),
            cpu_s: Some(sandbox.cpu_s),
            open_files: Some(sandbox.open_files),
            processes: Some(sandbox.processes),
        },
        user: sandbox.user,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GlobalConfig;

    fn spec(runner: &str, files: &[&str]) -> (tempfile::TempDir, CrewSpec) {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        let file = dir.path().join("runtime.yaml");
        std::fs::write(&file, format!("crew: c\ntriggers: [x]\nrunner: {runner}\n")).unwrap();
        let spec = CrewSpec::load(&file, &GlobalConfig::default()).unwrap();
        (dir, spec)
    }

    #[test]
    fn the_llm_override_reaches_bundled_runners_only() {
        let host = |name: &str| (name == "LIVE_CREW_LLM").then(|| "fake".to_owned());
        let has_llm = |spawn: &SpawnSpec| {
            spawn
                .env
                .iter()
                .any(|(k, v)| k == "LIVE_CREW_LLM" && v == "fake")
        };
        let (_dir, crewai) = spec("{kind: crewai}", &["agents.yaml", "tasks.yaml"]);
        assert!(has_llm(&spawn_spec(&crewai, Path::new("/r"), host)));
        let (_dir, command) = spec("{kind: command, command: [cat]}", &[]);
        assert!(!has_llm(&spawn_spec(&command, Path::new("/r"), host)));
    }
}
