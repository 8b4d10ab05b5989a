//! Checks of the `runner:` section of `crewai` and `prompt` crews (SPEC §10), so that
//! `live-crew validate` finds what the bundled runner would otherwise fail on at start.
//! Each problem is a `(field, message)` pair; the caller adds the file.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::paths::python_module_exists;
use crate::model::check_kind;

type Problems = Vec<(String, String)>;

const CREWAI_FIELDS: &[&str] = &[
    "kind",
    "python",
    "zygote",
    "class",
    "module",
    "pythonpath",
    "llm",
    "output",
];
const PROMPT_FIELDS: &[&str] = &[
    "kind",
    "python",
    "zygote",
    "llm",
    "system_prompt",
    "user_template",
    "patch_template",
    "outputs",
];
/// What the runner appends to the crew name for the default output kind; the Python
/// runner's copy is in `live_crew_runner/constants.py`.
pub const OUTPUT_SUFFIX: &str = "_output";

/// A `crewai` crew: where the crew comes from, the LLM override, the output settings.
pub(super) fn check_crewai(runner: &Map<String, Value>, dir: &Path, crew: &str) -> Problems {
    let mut problems = unknown_fields(runner, CREWAI_FIELDS);
    check_llm(runner, &mut problems);
    let mut roots = vec![dir.to_path_buf(), dir.join("src")];
    roots.extend(python_path(runner.get("pythonpath"), &mut problems));
    match (runner.get("class"), runner.get("module")) {
        (Some(_), Some(_)) => problems.push((
            "runner.module".into(),
            "set either runner.class or runner.module, not both".into(),
        )),
        (Some(source), None) => check_source(source, "runner.class", &roots, &mut problems),
        (None, Some(source)) => check_source(source, "runner.module", &roots, &mut problems),
        (None, None) => {
            let has =
                |name: &str| dir.join(name).is_file() || dir.join("config").join(name).is_file();
            for file in ["agents.yaml", "tasks.yaml"] {
                if !has(file) {
                    problems.push((
                        "runner".into(),
                        format!(
                            "no crew found: {file} is neither beside the runtime file nor in \
                             config/; add it, or set runner.class to a @CrewBase class \
                             ('crew:MyCrew')"
                        ),
                    ));
                }
            }
        }
    }
    check_output(runner.get("output"), crew, &mut problems);
    problems
}

/// A `prompt` crew: its templates and outputs.
pub(super) fn check_prompt(runner: &Map<String, Value>) -> Problems {
    let mut problems = unknown_fields(runner, PROMPT_FIELDS);
    check_llm(runner, &mut problems);
    match runner.get("user_template") {
        Some(Value::String(_)) => {}
        Some(_) => problems.push((
            "runner.user_template".into(),
            "must be a string (a Jinja template)".into(),
        )),
        None => problems.push((
            "runner.user_template".into(),
            "missing; the Jinja template of the user message, e.g. \"{{ events | tojson }}\""
                .into(),
        )),
    }
    for field in ["system_prompt", "patch_template"] {
        if runner.get(field).is_some_and(|value| !value.is_string()) {
            problems.push((
                format!("runner.{field}"),
                "must be a string (a Jinja template)".into(),
            ));
        }
    }
    match runner.get("outputs") {
        Some(Value::Array(outputs)) if !outputs.is_empty() => {
            for (i, output) in outputs.iter().enumerate() {
                match output.get("kind").and_then(Value::as_str) {
                    Some(kind) => {
                        if let Err(why) = check_kind(kind) {
                            problems.push((format!("runner.outputs[{i}].kind"), why));
                        }
                    }
                    None => problems.push((
                        format!("runner.outputs[{i}].kind"),
                        "missing; each output is {kind, payload}".into(),
                    )),
                }
            }
        }
        _ => problems.push((
            "runner.outputs".into(),
            "must be a non-empty list of {kind, payload}, e.g. \
             [{kind: line, payload: {text: \"{{ generated }}\"}}]"
                .into(),
        )),
    }
    problems
}

fn unknown_fields(runner: &Map<String, Value>, known: &[&str]) -> Problems {
    runner
        .keys()
        .filter(|key| !known.contains(&key.as_str()))
        .map(|key| {
            (
                format!("runner.{key}"),
                format!("unknown field; this kind takes: {}", known.join(", ")),
            )
        })
        .collect()
}

fn check_llm(runner: &Map<String, Value>, problems: &mut Problems) {
    match runner.get("llm") {
        None => {}
        Some(Value::String(model)) if !model.trim().is_empty() => {}
        Some(_) => problems.push((
            "runner.llm".into(),
            "must be a model name CrewAI accepts (e.g. \"openai/gpt-4o-mini\") or \"fake\"".into(),
        )),
    }
}

/// `runner.pythonpath`: absolute folders the runner adds to `sys.path`, so a crew
/// registered through the Python API imports from the user's project where it lies.
fn python_path(value: Option<&Value>, problems: &mut Problems) -> Vec<PathBuf> {
    let Some(value) = value else {
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        problems.push((
            "runner.pythonpath".into(),
            "must be a list of absolute folders".into(),
        ));
        return Vec::new();
    };
    let mut folders = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str().map(PathBuf::from) {
            Some(path) if path.is_absolute() && path.is_dir() => folders.push(path),
            _ => problems.push((
                format!("runner.pythonpath[{i}]"),
                format!("{item} is not an absolute path of an existing folder"),
            )),
        }
    }
    folders
}

/// `module:attr`, with the module a Python file under one of `roots` (the crew folder,
/// its `src/`, `runner.pythonpath`).
fn check_source(source: &Value, field: &str, roots: &[PathBuf], problems: &mut Problems) {
    let text = source.as_str().unwrap_or_default();
    let Some((module, attr)) = text.split_once(':') else {
        problems.push((
            field.into(),
            format!("'{text}' is not 'module:attr', e.g. \"crew:MyCrew\""),
        ));
        return;
    };
    let is_identifier = |part: &str| {
        !part.is_empty()
            && !part.starts_with(|c: char| c.is_ascii_digit())
            && part.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    if !module.split('.').all(is_identifier) || !is_identifier(attr) {
        problems.push((
            field.into(),
            format!("'{text}' is not 'module:attr' with Python names"),
        ));
        return;
    }
    if !roots.iter().any(|root| python_module_exists(root, module)) {
        let relative = module.replace('.', "/");
        problems.push((
            field.into(),
            format!("module '{module}' not found: expected {relative}.py in the crew folder"),
        ));
    }
}

fn check_output(output: Option<&Value>, crew: &str, problems: &mut Problems) {
    let output = match output {
        None => &Map::new(),
        Some(Value::Object(output)) => output,
        Some(_) => {
            problems.push((
                "runner.output".into(),
                "must be a mapping: {kind: ..., context_key: ...}".into(),
            ));
            return;
        }
    };
    problems.extend(
        unknown_fields(output, &["kind", "context_key"])
            .into_iter()
            .map(|(field, message)| (field.replacen("runner.", "runner.output.", 1), message)),
    );
    match output.get("kind") {
        Some(Value::String(kind)) => {
            if let Err(why) = check_kind(kind) {
                problems.push(("runner.output.kind".into(), why));
            }
        }
        Some(_) => problems.push(("runner.output.kind".into(), "must be a string".into())),
        None => {
            if let Err(why) = check_kind(&format!("{crew}{OUTPUT_SUFFIX}")) {
                problems.push((
                    "runner.output.kind".into(),
                    format!("the default kind '{crew}{OUTPUT_SUFFIX}' is invalid ({why}); set one"),
                ));
            }
        }
    }
    match output.get("context_key") {
        None => {}
        Some(Value::String(key)) if !key.is_empty() => {}
        Some(_) => problems.push((
            "runner.output.context_key".into(),
            "must be a non-empty string: the context key that gets the crew's raw output".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(yaml: &str) -> Map<String, Value> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn fields(problems: Problems) -> Vec<String> {
        problems.into_iter().map(|(field, _)| field).collect()
    }

    #[test]
    fn a_yaml_crew_needs_its_agents_and_tasks_files() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "{kind: crewai, llm: fake}";
        assert_eq!(
            fields(check_crewai(&runner(yaml), dir.path(), "c")),
            ["runner", "runner"]
        );
        std::fs::create_dir(dir.path().join("config")).unwrap();
        for file in ["config/agents.yaml", "config/tasks.yaml"] {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        assert!(check_crewai(&runner(yaml), dir.path(), "c").is_empty());
    }

    #[test]
    fn class_and_module_point_at_files_in_the_crew_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("crew.py"), "").unwrap();
        let ok = "{kind: crewai, class: \"crew:GameCrew\"}";
        assert!(check_crewai(&runner(ok), dir.path(), "c").is_empty());
        std::fs::create_dir_all(dir.path().join("src/game")).unwrap();
        std::fs::write(dir.path().join("src/game/crew.py"), "").unwrap();
        let in_src = "{kind: crewai, module: \"game.crew:build\"}";
        assert!(check_crewai(&runner(in_src), dir.path(), "c").is_empty());
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("app.py"), "").unwrap();
        let on_path = format!(
            "{{kind: crewai, module: \"app:crew\", pythonpath: [\"{}\"]}}",
            elsewhere.path().display()
        );
        assert!(check_crewai(&runner(&on_path), dir.path(), "c").is_empty());
        let relative = "{kind: crewai, module: \"app:crew\", pythonpath: [\"rel\"]}";
        assert_eq!(
            fields(check_crewai(&runner(relative), dir.path(), "c")),
            ["runner.pythonpath[0]", "runner.module"]
        );
        for (yaml, field) in [
            (
                "{kind: crewai, class: \"missing:GameCrew\"}",
                "runner.class",
            ),
            ("{kind: crewai, class: \"crew\"}", "runner.class"),
            ("{kind: crewai, module: \"../x:y\"}", "runner.module"),
            (
                "{kind: crewai, class: \"crew:A\", module: \"crew:b\"}",
                "runner.module",
            ),
        ] {
            assert_eq!(
                fields(check_crewai(&runner(yaml), dir.path(), "c")),
                [field],
                "{yaml}"
            );
        }
    }

    #[test]
    fn llm_and_output_fields_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("crew.py"), "").unwrap();
        let yaml = "{kind: crewai, class: \"crew:C\", llm: 3, colour: red, \
                    output: {kind: \"bad kind\", context_key: \"\", extra: 1}}";
        assert_eq!(
            fields(check_crewai(&runner(yaml), dir.path(), "c")),
            [
                "runner.colour",
                "runner.llm",
                "runner.output.extra",
                "runner.output.kind",
                "runner.output.context_key"
            ]
        );
        let long_name = "a".repeat(45);
        let yaml = "{kind: crewai, class: \"crew:C\"}";
        assert_eq!(
            fields(check_crewai(&runner(yaml), dir.path(), &long_name)),
            ["runner.output.kind"]
        );
    }

    #[test]
    fn a_prompt_crew_needs_a_user_template_and_outputs() {
        assert_eq!(
            fields(check_prompt(&runner("{kind: prompt, system_prompt: 1}"))),
            [
                "runner.user_template",
                "runner.system_prompt",
                "runner.outputs"
            ]
        );
        let yaml = "{kind: prompt, llm: fake, user_template: hi, \
                    outputs: [{kind: line, payload: {text: \"{{ generated }}\"}}, {payload: 1}]}";
        assert_eq!(
            fields(check_prompt(&runner(yaml))),
            ["runner.outputs[1].kind"]
        );
    }
}
