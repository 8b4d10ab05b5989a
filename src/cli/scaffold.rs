//! `live-crew new crew NAME --kind crewai|python|command` (SPEC §9): a working crew
//! folder that `live-crew validate` accepts and `live-crew run` runs as it is.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::model::check_crew_name;

/// The runner kinds a new crew can start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrewKind {
    /// A standard CrewAI crew (agents.yaml, tasks.yaml, crew.yaml) on the offline fake LLM.
    Crewai,
    /// A Python function `react(events, ctx, deps)`.
    Python,
    /// Any executable speaking runner protocol v1; here a small Python script.
    Command,
}

/// One file of a new crew: its name in the folder, contents, and whether it is a program.
struct Template {
    file: String,
    text: String,
    executable: bool,
}

/// Creates `crews_dir/name/` with the kind's files; returns the folder. Refuses a name
/// that is not a valid crew name and a folder that exists already.
pub fn new_crew(crews_dir: &Path, name: &str, kind: CrewKind) -> io::Result<PathBuf> {
    check_crew_name(name).map_err(|why| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("crew name '{name}': {why}"),
        )
    })?;
    let dir = crews_dir.join(name);
    if dir.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists already; pick another name", dir.display()),
        ));
    }
    std::fs::create_dir_all(&dir)?;
    for template in templates(name, kind) {
        let path = dir.join(&template.file);
        std::fs::write(&path, template.text)?;
        if template.executable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(dir)
}

fn templates(name: &str, kind: CrewKind) -> Vec<Template> {
    let file = |file: &str, text: String| Template {
        file: file.to_owned(),
        text,
        executable: false,
    };
    let runtime = |runner: &str| {
        file(
            &format!("{name}.runtime.yaml"),
            format!(
                "crew: {name}\n\
                 triggers: [\"*\"]               # event kinds that wake the crew\n\
                 runner: {runner}\n\
                 context: {{read: [\"*\"], write: []}}  # context keys it may read / write\n"
            ),
        )
    };
    match kind {
        CrewKind::Crewai => vec![
            runtime(&format!(
                "{{kind: crewai, llm: fake, output: {{kind: {name}_output}}}}  \
                 # llm: any CrewAI model, e.g. openai/gpt-4o-mini"
            )),
            file(
                "agents.yaml",
                "analyst:\n  role: >\n    Event analyst\n  goal: >\n    Explain what just \
                 happened on stream {stream_id}\n  backstory: >\n    You watch a live stream \
                 of events and say what matters, briefly.\n"
                    .to_owned(),
            ),
            file(
                "tasks.yaml",
                "summarise:\n  description: >\n    These events arrived in slice {slice}: \
                 {events}. Summarise them in one sentence.\n  expected_output: >\n    One \
                 sentence.\n  agent: analyst\n"
                    .to_owned(),
            ),
            file("crew.yaml", "process: sequential\n".to_owned()),
        ],
        CrewKind::Python => vec![
            runtime("{kind: python, module: \"handlers:react\"}"),
            file(
                "handlers.py",
                "def react(events, ctx, deps):\n    \
                 \"\"\"One action per call; assignments to ctx become the context patch.\"\"\"\n    \
                 return [{\"kind\": \"seen\", \"payload\": {\"events\": len(events)}}]\n"
                    .to_owned(),
            ),
        ],
        CrewKind::Command => vec![
            runtime("{kind: command, command: [\"./runner.py\"]}"),
            Template {
                file: "runner.py".to_owned(),
                text: COMMAND_RUNNER.to_owned(),
                executable: true,
            },
        ],
    }
}

/// A complete protocol v1 runner in plain Python (docs/PROTOCOL.md).
const COMMAND_RUNNER: &str = r#"#!/usr/bin/env python3
"""A runner speaking live-crew's protocol v1 on stdin/stdout (see docs/PROTOCOL.md)."""
import json
import sys
import threading
import time

out_lock = threading.Lock()


def send(message):
    with out_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def beat(interval_s):
    while True:
        time.sleep(interval_s)
        send({"type": "heartbeat"})


hello = json.loads(sys.stdin.readline())
threading.Thread(target=beat, args=(hello["heartbeat_ms"] / 1000,), daemon=True).start()
send({"type": "ready", "protocol": 1, "runner": "scaffold/1"})
for line in sys.stdin:
    message = json.loads(line)
    if message["type"] == "shutdown":
        break
    actions = [{"kind": "seen", "payload": {"events": len(message["events"])}}]
    send({"type": "result", "id": message["id"], "actions": actions})
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Crews, GlobalConfig, RunnerSpec};

    #[test]
    fn every_kind_scaffolds_a_crew_that_validates() {
        let crews = tempfile::tempdir().unwrap();
        for (name, kind) in [
            ("thinker", CrewKind::Crewai),
            ("reactor", CrewKind::Python),
            ("talker", CrewKind::Command),
        ] {
            new_crew(crews.path(), name, kind).unwrap();
        }
        let loaded = Crews::load(crews.path(), &GlobalConfig::default()).unwrap();
        let kinds: Vec<String> = loaded
            .as_slice()
            .iter()
            .map(|spec| match &spec.runner {
                RunnerSpec::BundledPython { kind, .. } => kind.clone(),
                RunnerSpec::Command { .. } => "command".into(),
            })
            .collect();
        assert_eq!(kinds, ["python", "command", "crewai"]); // reactor, talker, thinker
        let runner = crews.path().join("talker/runner.py");
        let mode = std::fs::metadata(runner).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn bad_names_and_existing_folders_are_refused() {
        let crews = tempfile::tempdir().unwrap();
        let err = new_crew(crews.path(), "no way", CrewKind::Python).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        new_crew(crews.path(), "twice", CrewKind::Python).unwrap();
        let err = new_crew(crews.path(), "twice", CrewKind::Python).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}
