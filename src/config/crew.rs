//! One crew's runtime file (`<name>.runtime.yaml` or `runtime.yaml`), raw and checked.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::paths::python_module_exists;
use super::types::{
    BacklogPolicy, ContextAcl, CrewSpec, Need, RunnerSpec, SandboxSettings, Triggers, WaitPolicy,
};
use super::{ConfigIssue, GlobalConfig, crewai_runner, parse_layers, yaml_issue};
use crate::context::KeySet;
use crate::llm::{Budget, OnExceed};
use crate::model::{check_crew_name, check_kind};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrew {
    crew: String,
    triggers: Vec<String>,
    #[serde(default)]
    needs: Vec<RawNeed>,
    wait_policy: Option<String>,
    slice_stride: Option<u64>,
    backlog_policy: Option<BacklogPolicy>,
    timeout_ms: Option<u64>,
    startup_timeout_ms: Option<u64>,
    max_errors: Option<u32>,
    runner: serde_json::Map<String, Value>,
    #[serde(default)]
    sandbox: RawSandbox,
    context: Option<RawContextAcl>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    env_passthrough: Vec<String>,
    budget: Option<RawBudget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    tokens_per_hour: Option<u64>,
    usd_per_hour: Option<f64>,
    usd_per_day: Option<f64>,
    on_exceed: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawNeed {
    Crew { crew: String, offset: i64 },
    Event { event: String, offset: i64 },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    memory_mb: Option<u64>,
    cpu_s: Option<u64>,
    open_files: Option<u64>,
    processes: Option<u64>,
    network: Option<bool>,
    user: Option<String>,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    pid_namespace: Option<bool>,
    require: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContextAcl {
    #[serde(default = "all_keys")]
    read: Vec<String>,
    #[serde(default = "all_keys")]
    write: Vec<String>,
}

fn all_keys() -> Vec<String> {
    vec!["*".to_owned()]
}

const BUNDLED_KINDS: [&str; 3] = ["python", "crewai", "prompt"];

/// The least startup timeout a CrewAI crew gets unless its runtime file sets one.
pub const CREWAI_STARTUP_TIMEOUT_MS: u64 = 60_000;
/// The least `memory_mb` a CrewAI crew gets unless its runtime file sets one.
pub const CREWAI_MEMORY_MB: u64 = 4096;

impl CrewSpec {
    /// Loads and validates one runtime file. Returns every problem found.
    pub fn load(file: &Path, global: &GlobalConfig) -> Result<CrewSpec, Vec<ConfigIssue>> {
        let text = std::fs::read_to_string(file)
            .map_err(|err| vec![ConfigIssue::new(file, "", format!("cannot read: {err}"))])?;
        let raw: RawCrew =
            serde_saphyr::from_str(&text).map_err(|err| vec![yaml_issue(file, &err)])?;
        let document: Value =
            serde_saphyr::from_str(&text).map_err(|err| vec![yaml_issue(file, &err)])?;
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Checker::new(file).check(raw, dir, document, global)
    }
}

/// Collects issues while turning a raw crew into a checked one.
struct Checker<'a> {
    file: &'a Path,
    issues: Vec<ConfigIssue>,
}

impl<'a> Checker<'a> {
    fn new(file: &'a Path) -> Self {
        Checker {
            file,
            issues: Vec::new(),
        }
    }

    fn issue(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.issues
            .push(ConfigIssue::new(self.file, field, message));
    }

    fn check(
        mut self,
        raw: RawCrew,
        dir: PathBuf,
        document: Value,
        global: &GlobalConfig,
    ) -> Result<CrewSpec, Vec<ConfigIssue>> {
        if let Err(why) = check_crew_name(&raw.crew) {
            self.issue("crew", why);
        }
        let triggers = self.triggers(raw.triggers);
        let needs = raw
            .needs
            .into_iter()
            .enumerate()
            .map(|(i, need)| self.need(i, need))
            .collect();
        let wait_policy = self.wait_policy(raw.wait_policy.as_deref());
        let slice_stride = raw.slice_stride.unwrap_or(1);
        if slice_stride == 0 {
            self.issue("slice_stride", "must be at least 1");
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(30_000);
        if timeout_ms == 0 {
            self.issue("timeout_ms", "must be at least 1");
        }
        let raw_memory_unset = raw.sandbox.memory_mb.is_none();
        let max_errors = raw.max_errors.unwrap_or(3);
        if max_errors == 0 {
            self.issue("max_errors", "must be at least 1");
        }
        let runner = self.runner(&raw.runner, &dir, &raw.crew);
        // A cold `import crewai` alone takes seconds and ~170 MB, and its address space
        // (threads, native libraries) outgrows the general defaults.
        let uses_crewai = runner.as_ref().is_some_and(RunnerSpec::uses_crewai);
        let startup_timeout_ms = match raw.startup_timeout_ms {
            Some(ms) => ms,
            None if uses_crewai => global.startup_timeout_ms.max(CREWAI_STARTUP_TIMEOUT_MS),
            None => global.startup_timeout_ms,
        };
        if startup_timeout_ms == 0 {
            self.issue("startup_timeout_ms", "must be at least 1");
        }
        let mut sandbox = self.sandbox(raw.sandbox, &dir, global);
        if uses_crewai && raw_memory_unset {
            sandbox.memory_mb = sandbox.memory_mb.max(CREWAI_MEMORY_MB);
        }
        if raw.context.is_none() && global.context_acl_required {
            self.issue(
                "context",
                "required (context_acl_required in the global config); list the keys the \
                 crew may read and write, e.g. context: {read: [score], write: []}",
            );
        }
        let context = raw.context.map_or(
            ContextAcl {
                read: KeySet::All,
                write: KeySet::All,
            },
            |acl| ContextAcl {
                read: KeySet::from_list(acl.read),
                write: KeySet::from_list(acl.write),
            },
        );
        for (i, name) in raw.env_passthrough.iter().enumerate() {
            if name.is_empty() || name.contains('=') {
                self.issue(
                    format!("env_passthrough[{i}]"),
                    format!("'{name}' is not a variable name"),
                );
            }
        }
        let budget = raw.budget.map(|budget| self.budget(budget));
        if !self.issues.is_empty() {
            return Err(self.issues);
        }
        Ok(CrewSpec {
            name: raw.crew,
            dir,
            file: self.file.to_path_buf(),
            triggers,
            needs,
            wait_policy,
            slice_stride,
            backlog_policy: raw.backlog_policy.unwrap_or(BacklogPolicy::Fifo),
            timeout_ms,
            startup_timeout_ms,
            max_errors,
            runner: runner.expect("no issues means the runner was valid"),
            sandbox,
            context,
            env: raw.env,
            env_passthrough: raw.env_passthrough,
            budget,
            document,
        })
    }

    fn budget(&mut self, raw: RawBudget) -> Budget {
        let on_exceed = OnExceed::try_from(raw.on_exceed.unwrap_or_else(|| "skip".to_owned()))
            .unwrap_or_else(|why| {
                self.issue("budget.on_exceed", why);
                OnExceed::Skip
            });
        if raw.tokens_per_hour.is_none() && raw.usd_per_hour.is_none() && raw.usd_per_day.is_none()
        {
            self.issue(
                "budget",
                "sets no limit; give tokens_per_hour, usd_per_hour or usd_per_day",
            );
        }
        Budget {
            tokens_per_hour: raw.tokens_per_hour,
            usd_per_hour: raw.usd_per_hour,
            usd_per_day: raw.usd_per_day,
            on_exceed,
        }
    }

    fn triggers(&mut self, triggers: Vec<String>) -> Triggers {
        if triggers.is_empty() {
            self.issue("triggers", "needs at least one event kind, or \"*\"");
        }
        if triggers.iter().any(|t| t == "*") {
            return Triggers::Any;
        }
        for (i, kind) in triggers.iter().enumerate() {
            if let Err(why) = check_kind(kind) {
                self.issue(format!("triggers[{i}]"), why);
            }
        }
        Triggers::Kinds(triggers)
    }

    fn need(&mut self, index: usize, need: RawNeed) -> Need {
        match need {
            RawNeed::Crew { crew, offset } => {
                if let Err(why) = check_crew_name(&crew) {
                    self.issue(format!("needs[{index}].crew"), why);
                }
                Need::Crew { crew, offset }
            }
            RawNeed::Event { event, offset } => {
                if let Err(why) = check_kind(&event) {
                    self.issue(format!("needs[{index}].event"), why);
                }
                Need::Event {
                    kind: event,
                    offset,
                }
            }
        }
    }

    fn wait_policy(&mut self, text: Option<&str>) -> WaitPolicy {
        match text.unwrap_or("all") {
            "all" => WaitPolicy::All,
            "any" => WaitPolicy::Any,
            "none" => WaitPolicy::None,
            other => match other.strip_prefix("timeout:").map(str::parse::<u64>) {
                Some(Ok(ms)) => WaitPolicy::Timeout(ms),
                _ => {
                    self.issue(
                        "wait_policy",
                        format!("'{other}' is not one of all, any, none, timeout:<ms>"),
                    );
                    WaitPolicy::All
                }
            },
        }
    }

    fn runner(
        &mut self,
        runner: &serde_json::Map<String, Value>,
        dir: &Path,
        crew: &str,
    ) -> Option<RunnerSpec> {
        let Some(kind) = runner.get("kind").and_then(Value::as_str) else {
            self.issue(
                "runner.kind",
                "missing; use one of crewai, python, prompt, command",
            );
            return None;
        };
        if BUNDLED_KINDS.contains(&kind) {
            let python = match runner.get("python") {
                None => None,
                Some(Value::String(python)) => Some(python.clone()),
                Some(_) => {
                    self.issue("runner.python", "must be a string");
                    None
                }
            };
            let problems = match kind {
                "crewai" => crewai_runner::check_crewai(runner, dir, crew),
                "prompt" => crewai_runner::check_prompt(runner),
                _ => Vec::new(),
            };
            for (field, message) in problems {
                self.issue(field, message);
            }
            if kind == "python" {
                self.python_module(runner.get("module"), dir);
            }
            let zygote = match runner.get("zygote") {
                None => true,
                Some(Value::Bool(zygote)) => *zygote,
                Some(_) => {
                    self.issue("runner.zygote", "must be true or false");
                    true
                }
            };
            return Some(RunnerSpec::BundledPython {
                kind: kind.to_owned(),
                python,
                zygote,
            });
        }
        if kind != "command" {
            self.issue(
                "runner.kind",
                format!("'{kind}' is not one of crewai, python, prompt, command"),
            );
            return None;
        }
        // `{crew_dir}` in any element is the crew folder: the runner's working directory
        // is its private temp folder, so a script beside the runtime file needs it.
        let crew_dir = dir.to_string_lossy();
        let argv: Option<Vec<String>> =
            runner
                .get("command")
                .and_then(Value::as_array)
                .and_then(|items| {
                    items
                        .iter()
                        .map(|v| v.as_str().map(|item| item.replace("{crew_dir}", &crew_dir)))
                        .collect()
                });
        let Some((first, args)) = argv.as_deref().and_then(<[String]>::split_first) else {
            self.issue(
                "runner.command",
                "must be a non-empty list of strings, e.g. [\"./my-runner\", \"--flag\"]",
            );
            return None;
        };
        let program = if Path::new(first).is_absolute() {
            self.executable(first, "runner.command[0]")?
        } else if first.contains('/') {
            self.path_inside(dir, first, "runner.command[0]")?
        } else {
            PathBuf::from(first)
        };
        Some(RunnerSpec::Command {
            program,
            args: args.to_vec(),
        })
    }

    /// `runner.module` is `module` or `module:function`, a Python file in the crew folder.
    fn python_module(&mut self, module: Option<&Value>, dir: &Path) {
        let Some(spec) = module.and_then(Value::as_str) else {
            self.issue(
                "runner.module",
                "missing; name the module and function, e.g. \"handlers:react\"",
            );
            return;
        };
        let module = spec.split(':').next().unwrap_or_default();
        let valid = !module.is_empty()
            && module.split('.').all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_alphanumeric() || c == '_')
            });
        if !valid {
            self.issue(
                "runner.module",
                format!("'{spec}' is not a dotted Python module name"),
            );
            return;
        }
        if !python_module_exists(dir, module) {
            let relative = module.replace('.', "/");
            self.issue(
                "runner.module",
                format!("module '{module}' not found: expected {relative}.py in the crew folder"),
            );
        }
    }

    /// An absolute program path, used as it is: it must be an executable file.
    fn executable(&mut self, path: &str, field: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                Some(PathBuf::from(path))
            }
            Ok(_) => {
                self.issue(field, format!("'{path}' is not an executable file"));
                None
            }
            Err(err) => {
                self.issue(field, format!("'{path}' cannot be used: {err}"));
                None
            }
        }
    }

    /// Resolves `relative` against the crew folder and refuses paths that leave it.
    fn path_inside(&mut self, dir: &Path, relative: &str, field: &str) -> Option<PathBuf> {
        let path = Path::new(relative);
        if path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            self.issue(
                field,
                format!("'{relative}' leaves the crew folder; use a path inside it"),
            );
            return None;
        }
        let joined = dir.join(path);
        let resolved = match joined.canonicalize() {
            Ok(resolved) => resolved,
            Err(_) => {
                self.issue(
                    field,
                    format!("'{relative}' does not exist in the crew folder"),
                );
                return None;
            }
        };
        let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        if !resolved.starts_with(&root) {
            self.issue(
                field,
                format!("'{relative}' resolves outside the crew folder (through a link)"),
            );
            return None;
        }
        Some(resolved)
    }

    fn sandbox(&mut self, raw: RawSandbox, dir: &Path, global: &GlobalConfig) -> SandboxSettings {
        let defaults = &global.sandbox;
        let mut grants = |list: &[String], field: &str| -> Vec<PathBuf> {
            list.iter()
                .enumerate()
                .filter_map(|(i, path)| self.grant(dir, path, &format!("sandbox.{field}[{i}]")))
                .collect()
        };
        let read = grants(&raw.read, "read");
        let write = grants(&raw.write, "write");
        let require = match raw.require {
            Some(names) => parse_layers(&names).unwrap_or_else(|(i, why)| {
                self.issue(format!("sandbox.require[{i}]"), why);
                Vec::new()
            }),
            None => defaults.require_layers(),
        };
        let user = raw.user.as_deref().and_then(|text| match parse_user(text) {
            Ok(user) => Some(user),
            Err(why) => {
                self.issue("sandbox.user", why);
                None
            }
        });
        SandboxSettings {
            memory_mb: raw.memory_mb.unwrap_or(defaults.memory_mb),
            cpu_s: raw.cpu_s.unwrap_or(defaults.cpu_s),
            open_files: raw.open_files.unwrap_or(defaults.open_files),
            processes: raw.processes.unwrap_or(defaults.processes),
            network: raw.network.unwrap_or(defaults.network),
            user,
            read,
            write,
            pid_namespace: raw.pid_namespace.unwrap_or(defaults.pid_namespace),
            require,
        }
    }

    /// A `sandbox.read`/`sandbox.write` path: absolute, or relative to the crew folder;
    /// no `..`, so a grant cannot reach past what it names; and it must exist.
    fn grant(&mut self, dir: &Path, text: &str, field: &str) -> Option<PathBuf> {
        let path = Path::new(text);
        if path.components().any(|c| c == Component::ParentDir) {
            self.issue(
                field,
                format!("'{text}' contains '..'; name the path directly"),
            );
            return None;
        }
        match dir.join(path).canonicalize() {
            Ok(resolved) => Some(resolved),
            Err(error) => {
                self.issue(field, format!("'{text}' cannot be granted: {error}"));
                None
            }
        }
    }
}

/// `sandbox.user`: a user name, or `uid[:gid]`.
fn parse_user(text: &str) -> Result<live_crew_sandbox::User, String> {
    let numeric = |part: &str| part.parse::<u32>().ok();
    if let Some((uid, gid)) = text.split_once(':') {
        if let (Some(uid), Some(gid)) = (numeric(uid), numeric(gid)) {
            return Ok(live_crew_sandbox::User { uid, gid });
        }
        return Err(format!("'{text}' is not uid:gid"));
    }
    if let Some(uid) = numeric(text) {
        return Ok(live_crew_sandbox::User { uid, gid: uid });
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(user)) => Ok(live_crew_sandbox::User {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }),
        _ => Err(format!("no user named '{text}' on this host")),
    }
}

#[cfg(test)]
mod tests {
    use live_crew_sandbox::Layer;

    use super::*;

    fn load(yaml: &str, files: &[&str]) -> Result<CrewSpec, Vec<ConfigIssue>> {
        let dir = tempfile::tempdir().unwrap();
        for name in files {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let file = dir.path().join("runtime.yaml");
        std::fs::write(&file, yaml).unwrap();
        CrewSpec::load(&file, &GlobalConfig::default())
    }

    fn fields(issues: Vec<ConfigIssue>) -> Vec<String> {
        issues.into_iter().map(|issue| issue.field).collect()
    }

    #[test]
    fn a_python_crew_loads_with_defaults() {
        let spec = load(
            "crew: scorer\ntriggers: [goal]\nrunner: {kind: python, module: \"handlers:react\"}\n",
            &["handlers.py"],
        )
        .unwrap();
        assert_eq!(spec.name, "scorer");
        assert_eq!(spec.wait_policy, WaitPolicy::All);
        assert_eq!(spec.timeout_ms, 30_000);
        assert_eq!(spec.sandbox.processes, 64);
        assert_eq!(spec.document["runner"]["module"], "handlers:react");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let yaml = "crew: bad name\ntriggers: [ok, \"no way\"]\nwait_policy: sometimes\n\
                    slice_stride: 0\nneeds: [{type: crew, crew: \"x y\", offset: -1}]\n\
                    runner: {kind: python, module: \"missing:react\"}\n";
        let got = fields(load(yaml, &[]).unwrap_err());
        assert_eq!(
            got,
            [
                "crew",
                "triggers[1]",
                "needs[0].crew",
                "wait_policy",
                "slice_stride",
                "runner.module"
            ]
        );
    }

    #[test]
    fn budgets_and_the_zygote_switch_are_checked_with_their_field() {
        let crew = "crew: c\ntriggers: [goal]\n";
        let runner = "runner: {kind: python, module: \"handlers:react\"";
        let bad = format!("{crew}{runner}, zygote: maybe}}\nbudget: {{on_exceed: explode}}\n");
        let got = fields(load(&bad, &["handlers.py"]).unwrap_err());
        assert_eq!(got, ["runner.zygote", "budget.on_exceed", "budget"]);
        let good = format!(
            "{crew}{runner}, zygote: false}}\nbudget: {{usd_per_day: 2.5, on_exceed: 'model:local/small'}}\n"
        );
        let spec = load(&good, &["handlers.py"]).unwrap();
        assert!(matches!(
            spec.runner,
            RunnerSpec::BundledPython { zygote: false, .. }
        ));
        let budget = spec.budget.unwrap();
        assert_eq!(budget.usd_per_day, Some(2.5));
        assert_eq!(budget.on_exceed, OnExceed::Model("local/small".into()));
    }

    #[test]
    fn unknown_fields_are_schema_errors() {
        let issues = load(
            "crew: a\ntriggers: [x]\nrunner: {kind: python}\ncolour: red\n",
            &[],
        )
        .unwrap_err();
        assert!(issues[0].message.contains("colour"), "{:?}", issues);
    }

    #[test]
    fn command_paths_stay_inside_the_crew_folder() {
        let yaml = "crew: a\ntriggers: [x]\nrunner: {kind: command, command: [\"../escape\"]}\n";
        assert_eq!(fields(load(yaml, &[]).unwrap_err()), ["runner.command[0]"]);
        let yaml =
            "crew: a\ntriggers: [x]\nrunner: {kind: command, command: [\"./run\", \"-v\"]}\n";
        let spec = load(yaml, &["run"]).unwrap();
        assert!(matches!(spec.runner, RunnerSpec::Command { ref args, .. } if args == &["-v"]));
        let yaml = "crew: a\ntriggers: [x]\nrunner: {kind: command, command: [\"cat\"]}\n";
        assert!(load(yaml, &[]).is_ok());
    }

    #[test]
    fn absolute_programs_must_be_executable_and_crew_dir_is_expanded() {
        let yaml = "crew: a\ntriggers: [x]\n\
                    runner: {kind: command, command: [/bin/sh, \"{crew_dir}/run.sh\", \"-v\"]}\n";
        let spec = load(yaml, &["run.sh"]).unwrap();
        let RunnerSpec::Command { program, args } = &spec.runner else {
            panic!("{:?}", spec.runner)
        };
        assert_eq!(program, Path::new("/bin/sh"));
        assert_eq!(args[0], spec.dir.join("run.sh").to_string_lossy());
        assert_eq!(args[1], "-v");
        for (program, why) in [
            ("/nonexistent/runner", "cannot be used"),
            ("'{crew_dir}/plain'", "is not an executable file"),
            ("/tmp", "is not an executable file"),
        ] {
            let yaml = format!(
                "crew: a\ntriggers: [x]\nrunner: {{kind: command, command: [{program}]}}\n"
            );
            let issues = load(&yaml, &["plain"]).unwrap_err();
            assert_eq!(issues[0].field, "runner.command[0]", "{program}");
            assert!(issues[0].message.contains(why), "{}", issues[0].message);
        }
    }

    #[test]
    fn sandbox_grants_must_exist_and_not_climb() {
        let yaml = "crew: a\ntriggers: [x]\nrunner: {kind: command, command: [cat]}\n\
                    sandbox: {read: [data, /nonexistent/x, ../up], write: [out], require: [landlock, apparmor]}\n";
        let issues = load(yaml, &["data"]).unwrap_err();
        assert_eq!(
            fields(issues),
            [
                "sandbox.read[1]",
                "sandbox.read[2]",
                "sandbox.write[0]",
                "sandbox.require[1]"
            ]
        );
        let yaml = "crew: a\ntriggers: [x]\nrunner: {kind: command, command: [cat]}\n\
                    sandbox: {read: [data, /usr/share], pid_namespace: false, require: [seccomp]}\n";
        let spec = load(yaml, &["data"]).unwrap();
        assert!(spec.sandbox.read[0].ends_with("data") && spec.sandbox.read[0].is_absolute());
        assert_eq!(spec.sandbox.read[1], Path::new("/usr/share"));
        assert!(!spec.sandbox.pid_namespace);
        assert_eq!(spec.sandbox.require, [Layer::Seccomp]);
    }

    #[test]
    fn wait_policies_parse() {
        let yaml = "crew: a\ntriggers: ['*']\nwait_policy: timeout:250\nrunner: {kind: command, command: [cat]}\n";
        let spec = load(yaml, &[]).unwrap();
        assert_eq!(spec.wait_policy, WaitPolicy::Timeout(250));
        assert_eq!(spec.triggers, Triggers::Any);
    }

    #[test]
    fn crewai_crews_get_longer_startup_and_more_memory_unless_they_say_otherwise() {
        let files = ["agents.yaml", "tasks.yaml", "handlers.py"];
        let crewai = load("crew: a\ntriggers: [x]\nrunner: {kind: crewai}\n", &files).unwrap();
        assert_eq!(crewai.startup_timeout_ms, CREWAI_STARTUP_TIMEOUT_MS);
        assert_eq!(crewai.sandbox.memory_mb, CREWAI_MEMORY_MB);
        let own = "crew: a\ntriggers: [x]\nstartup_timeout_ms: 9000\nrunner: {kind: crewai}\n\
                   sandbox: {memory_mb: 512}\n";
        let own = load(own, &files).unwrap();
        assert_eq!((own.startup_timeout_ms, own.sandbox.memory_mb), (9000, 512));
        let python = "crew: a\ntriggers: [x]\nrunner: {kind: python, module: handlers}\n";
        let python = load(python, &files).unwrap();
        let defaults = GlobalConfig::default();
        assert_eq!(python.startup_timeout_ms, defaults.startup_timeout_ms);
        assert_eq!(python.sandbox.memory_mb, defaults.sandbox.memory_mb);
    }
}

#[cfg(test)]
mod context_acl_tests {
    use super::*;

    #[test]
    fn context_acl_required_rejects_a_crew_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runtime.yaml");
        let global = GlobalConfig {
            context_acl_required: true,
            ..GlobalConfig::default()
        };
        let crew = "crew: c\ntriggers: [x]\nrunner: {kind: command, command: [cat]}\n";
        std::fs::write(&file, crew).unwrap();
        let issues = CrewSpec::load(&file, &global).unwrap_err();
        assert_eq!(issues[0].field, "context");
        std::fs::write(&file, format!("{crew}context: {{read: [a], write: []}}\n")).unwrap();
        let spec = CrewSpec::load(&file, &global).unwrap();
        assert!(spec.context.read.contains("a") && !spec.context.write.contains("a"));
    }
}
