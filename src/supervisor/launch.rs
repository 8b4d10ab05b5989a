//! How to start a crew's runner: program, arguments, environment and limits, and which
//! launcher starts it (cold, or from its interpreter's fork server).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use live_crew_sandbox::{
    FsRules, Isolation, Launcher, Limits, Sandbox, SpawnSpec, StartMode, ZygoteLauncher,
};

use crate::config::{CrewSpec, RunnerSpec};
use crate::ops::health::lock;

/// How the bundled Python runner is started, with its folder on `PYTHONPATH`.
const RUNNER_ENTRY: &str = "from live_crew_runner.serve import main; main()";
/// How the bundled runner's fork server is started (SPEC §13).
const ZYGOTE_ENTRY: &str = "from live_crew_runner.zygote import main; main()";

/// The launcher of each crew: a fork server for bundled-runner crews (unless `zygote:
/// false`, globally or in the crew's `runner:`), else cold. One fork server per
/// interpreter and need: CrewAI crews fork from one that imported CrewAI, the others
/// from one that did not, since a crew inherits the address space it forks from, and a
/// `python` crew's `RLIMIT_AS` (twice its `memory_mb`) may be smaller than CrewAI's.
pub(crate) struct Launchers {
    cold: Arc<dyn Launcher>,
    zygotes: Mutex<HashMap<ZygoteKey, Arc<ZygoteLauncher>>>,
    sandbox: Arc<Sandbox>,
    /// The global `zygote` switch.
    zygote: bool,
    bundled_python_path: PathBuf,
}

/// Which fork server a crew forks from: its interpreter, and whether it uses CrewAI.
type ZygoteKey = (PathBuf, bool);

impl Launchers {
    /// The launchers for `crews`, whose spawn specs are `spawns`; starts their fork
    /// servers now, so that their imports overlap with the host's start. A crew added
    /// later (hot reload) that needs another fork server starts it then.
    pub fn start(
        sandbox: &Arc<Sandbox>,
        crews: &[CrewSpec],
        spawns: &[SpawnSpec],
        zygote: bool,
        bundled_python_path: &Path,
    ) -> Self {
        let launchers = Launchers {
            cold: Arc::new(sandbox.cold_launcher()),
            zygotes: Mutex::new(HashMap::new()),
            sandbox: sandbox.clone(),
            zygote,
            bundled_python_path: bundled_python_path.to_path_buf(),
        };
        for (spec, spawn) in crews.iter().zip(spawns) {
            launchers.zygote_of(spec, spawn);
        }
        launchers
    }

    /// The launcher for a crew started from `spawn`.
    pub fn for_crew(&self, spec: &CrewSpec, spawn: &SpawnSpec) -> Arc<dyn Launcher> {
        match self.zygote_of(spec, spawn) {
            Some(zygote) => zygote,
            None => self.cold.clone(),
        }
    }

    /// How a crew started from `spawn` is meant to start, for the startup table.
    pub fn start_mode(&self, spec: &CrewSpec, spawn: &SpawnSpec) -> StartMode {
        match self.zygote_of(spec, spawn) {
            Some(zygote) if zygote.fell_back() => StartMode::ColdFallback,
            Some(_) => StartMode::Zygote,
            None => StartMode::Cold,
        }
    }

    /// The fork server of a crew that forks, started on first use.
    fn zygote_of(&self, spec: &CrewSpec, spawn: &SpawnSpec) -> Option<Arc<ZygoteLauncher>> {
        let key = zygote_key(spec, spawn).filter(|_| self.zygote)?;
        let mut zygotes = lock(&self.zygotes);
        let zygote = zygotes.entry(key).or_insert_with_key(|(python, crewai)| {
            let server = zygote_spawn_spec(python, &self.bundled_python_path, *crewai);
            let launcher = Arc::new(ZygoteLauncher::new(&self.sandbox, server));
            launcher.prestart();
            launcher
        });
        Some(zygote.clone())
    }
}

/// The fork server a crew forks from, unless it starts cold.
fn zygote_key(spec: &CrewSpec, spawn: &SpawnSpec) -> Option<ZygoteKey> {
    match spec.runner {
        RunnerSpec::BundledPython { zygote: true, .. } => {
            Some((spawn.program.clone(), spec.runner.uses_crewai()))
        }
        _ => None,
    }
}

/// The fork server of `python`: the bundled runner imported, and CrewAI too when
/// `preload_crewai`. It gets no optional sandbox layer and keeps the host's
/// capabilities, since it gives each crew it forks its own; it runs no crew code.
fn zygote_spawn_spec(python: &Path, bundled_python_path: &Path, preload_crewai: bool) -> SpawnSpec {
    let mut args: Vec<OsString> = vec!["-c".into(), ZYGOTE_ENTRY.into()];
    if preload_crewai {
        args.extend(["--preload".into(), "crewai".into()]);
    }
    SpawnSpec {
        name: "zygote".to_owned(),
        program: python.to_path_buf(),
        args,
        env: vec![("PYTHONPATH".into(), bundled_python_path.into())],
        limits: Limits::default(),
        user: None,
        isolation: Isolation::default(),
    }
}

/// Everything needed to spawn one crew's runner, computed once per crew. `host_env` looks
/// up the host's environment; only `LIVE_CREW_PYTHON`, `LIVE_CREW_LLM` and the crew's
/// `env_passthrough` names are ever passed on through it, so no other host variable
/// reaches a crew (PATH is read to find the runner's runtime for the Landlock rules).
pub(crate) fn spawn_spec(
    spec: &CrewSpec,
    bundled_python_path: &Path,
    host_env: impl Fn(&str) -> Option<String>,
) -> SpawnSpec {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let host_path = host_env("PATH");
    // Landlock read access: the crew folder, and the runtime the runner needs.
    let mut read = vec![spec.dir.clone()];
    let (program, args) = match &spec.runner {
        RunnerSpec::BundledPython { python, .. } => {
            let python = bundled_python(python.as_deref(), &host_env);
            env.push(("PYTHONPATH".into(), bundled_python_path.into()));
            // The LLM override for crewai/prompt crews (SPEC §10) follows the host's.
            if let Some(model) = host_env("LIVE_CREW_LLM").filter(|model| !model.is_empty()) {
                env.push(("LIVE_CREW_LLM".into(), model.into()));
            }
            read.push(bundled_python_path.to_path_buf());
            read.extend(runtime_dirs(Path::new(&python), host_path.as_deref()));
            // `runner.pythonpath` (checked: absolute folders) holds modules of crews
            // registered through the Python API, where the user's project has them.
            let pythonpath = spec
                .document
                .get("runner")
                .and_then(|r| r.get("pythonpath"));
            if let Some(folders) = pythonpath.and_then(serde_json::Value::as_array) {
                read.extend(folders.iter().filter_map(|f| f.as_str()).map(PathBuf::from));
            }
            // `-c` rather than `-m`: loading runpy would add ~8 ms to every start.
            (python, vec!["-c".into(), RUNNER_ENTRY.into()])
        }
        RunnerSpec::Command { program, args } => {
            let crew_dir = spec.dir.canonicalize().unwrap_or_else(|_| spec.dir.clone());
            if !program.starts_with(&crew_dir) {
                read.extend(runtime_dirs(program, host_path.as_deref()));
            }
            if let Some(interpreter) = script_interpreter(program) {
                read.extend(runtime_dirs(&interpreter, host_path.as_deref()));
            }
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
        isolation: Isolation {
            no_network: !sandbox.network,
            pid_namespace: sandbox.pid_namespace,
            filesystem: Some(FsRules {
                read: read
                    .into_iter()
                    .chain(sandbox.read.iter().cloned())
                    .collect(),
                write: sandbox.write.clone(),
            }),
            seccomp: true,
            defer_cgroup_join: matches!(spec.runner, RunnerSpec::BundledPython { .. }),
        },
    }
}

/// The interpreter of a bundled-runner crew: `runner.python`, else `$LIVE_CREW_PYTHON`
/// (unless empty, as `LIVE_CREW_PYTHON= live-crew ...` leaves it), else `python3`.
pub(crate) fn bundled_python(
    configured: Option<&str>,
    host_env: impl Fn(&str) -> Option<String>,
) -> PathBuf {
    configured
        .map(str::to_owned)
        .or_else(|| host_env("LIVE_CREW_PYTHON").filter(|python| !python.is_empty()))
        .unwrap_or_else(|| "python3".to_owned())
        .into()
}

/// The folders a program's runtime lives in, for Landlock read access: for a program
/// in `<prefix>/bin` (or `sbin`, `shims`), `<prefix>`, else the program's own folder;
/// both as called and as the links lead (a venv, and the installation it was made
/// from). Cheap: no interpreter is started to ask.
fn runtime_dirs(program: &Path, host_path: Option<&str>) -> Vec<PathBuf> {
    let Some(found) = find_program(program, host_path) else {
        return Vec::new();
    };
    let real = found.canonicalize().unwrap_or_else(|_| found.clone());
    [found, real]
        .iter()
        .filter_map(|path| path.parent())
        .map(|dir| match dir.file_name().and_then(|name| name.to_str()) {
            Some("bin" | "sbin" | "shims") => dir.parent().unwrap_or(dir).to_path_buf(),
            _ => dir.to_path_buf(),
        })
        // Never the whole filesystem, for a program in /bin.
        .filter(|prefix| prefix.parent().is_some())
        .collect()
}

/// `program` as the child's exec will find it: as given if it has a slash, else on PATH.
fn find_program(program: &Path, host_path: Option<&str>) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(std::path::absolute(program).unwrap_or_else(|_| program.to_path_buf()));
    }
    host_path?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
}

/// The interpreter a `#!` script names, looking through `/usr/bin/env NAME`.
fn script_interpreter(script: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let length = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let line = head[..length]
        .strip_prefix(b"#!")?
        .split(|&b| b == b'\n')
        .next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let interpreter = words.next()?;
    if Path::new(interpreter).file_name()? == "env" {
        words.find(|word| !word.starts_with('-')).map(PathBuf::from)
    } else {
        Some(PathBuf::from(interpreter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_live_crew_python_means_python3() {
        let env = |value: &'static str| {
            move |name: &str| (name == "LIVE_CREW_PYTHON").then(|| value.to_owned())
        };
        assert_eq!(bundled_python(None, env("")), PathBuf::from("python3"));
        assert_eq!(
            bundled_python(None, env("/opt/py")),
            PathBuf::from("/opt/py")
        );
        assert_eq!(
            bundled_python(Some("py3"), env("/opt/py")),
            PathBuf::from("py3")
        );
    }

    #[test]
    fn runtime_of_a_venv_python_is_the_venv_and_its_base() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("base");
        let venv = root.path().join("venv");
        std::fs::create_dir_all(base.join("bin")).unwrap();
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::write(base.join("bin/python3.12"), "").unwrap();
        std::os::unix::fs::symlink(base.join("bin/python3.12"), venv.join("bin/python")).unwrap();
        let base = base.canonicalize().unwrap();
        let venv = venv.canonicalize().unwrap();
        assert_eq!(
            runtime_dirs(&venv.join("bin/python"), None),
            [venv.clone(), base]
        );
        let path = format!("/nonexistent:{}", venv.join("bin").display());
        assert_eq!(runtime_dirs(Path::new("python"), Some(&path))[0], venv);
        assert!(runtime_dirs(Path::new("python"), None).is_empty());
    }

    #[test]
    fn scripts_name_their_interpreter_directly_or_through_env() {
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            script_interpreter(&path)
        };
        assert_eq!(
            script("a", "#!/usr/bin/env -S python3 -u\nprint()"),
            Some(PathBuf::from("python3"))
        );
        assert_eq!(
            script("b", "#!/opt/py/bin/python\n"),
            Some(PathBuf::from("/opt/py/bin/python"))
        );
        assert_eq!(script("c", "\x7fELF"), None);
    }

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
