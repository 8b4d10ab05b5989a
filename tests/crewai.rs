//! CrewAI crews through the real binary, with real CrewAI and the offline `fake` LLM:
//! the examples' actions and context flow, and crash isolation. The crews run on
//! `$LIVE_CREW_PYTHON` (scripts/test.sh sets it to the project venv, which has crewai),
//! else the venv's interpreter itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    errors: Vec<Value>,
}

fn python() -> String {
    std::env::var("LIVE_CREW_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(crews: &Path, events: &Path) -> Run {
    let scratch = tempfile::tempdir().unwrap();
    let errors = scratch.path().join("errors.jsonl");
    let mut command = Command::new(env!("CARGO_BIN_EXE_live-crew"));
    for (name, _) in std::env::vars() {
        if name.starts_with("LIVE_CREW_") {
            command.env_remove(name);
        }
    }
    let out = command
        .args(["run", "--crews"])
        .arg(crews)
        .arg("--events")
        .arg(events)
        .arg("--errors")
        .arg(&errors)
        .env("LIVE_CREW_LOG", "warn")
        .env("LIVE_CREW_PYTHON", python())
        .output()
        .expect("the binary starts");
    Run {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        errors: lines(&std::fs::read_to_string(errors).unwrap_or_default()),
    }
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn example(name: &str) -> Run {
    let dir = root().join("examples").join(name);
    run(&dir.join("crews"), &dir.join("events.jsonl"))
}

#[test]
fn match_day_crewai_links_three_crewai_crews_by_needs_and_context() {
    let out = example("match_day_crewai");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let actions = lines(&out.stdout);
    let calls: Vec<(&str, i64)> = actions
        .iter()
        .map(|a| (a["crew"].as_str().unwrap(), a["slice"].as_i64().unwrap()))
        .collect();
    let vision = (0..8).map(|slice| ("vision", slice));
    let expected: Vec<(&str, i64)> = vision
        .clone()
        .take(2)
        .chain([("commentator", 2), ("score_tracker", 2), ("vision", 2)])
        .chain(vision.clone().skip(3).take(2))
        .chain([("commentator", 5), ("score_tracker", 5), ("vision", 5)])
        .chain(vision.skip(6))
        .collect();
    assert_eq!(calls, expected);
    let raw = |crew: &str, slice: i64| -> String {
        let action = actions
            .iter()
            .find(|a| a["crew"] == crew && a["slice"] == slice)
            .unwrap();
        match crew {
            "score_tracker" => action["payload"]["said"].as_str().unwrap().to_owned(),
            _ => action["payload"]["raw"].as_str().unwrap().to_owned(),
        }
    };
    // The pure-YAML crew saw the frame payload and the slice.
    assert!(raw("vision", 6).ends_with("In slice 6 the camera shows 21 players on the pitch."));
    // The @CrewBase crew: the goal's payload, and the context committed before its slice.
    assert!(
        raw("commentator", 2).ends_with("GOAL for home in minute 23! The score before it: {}.")
    );
    assert!(
        raw("commentator", 5).ends_with(
            r#"GOAL for away in minute 57! The score before it: {"score":{"away":0,"home":1}}."#
        ),
        "{}",
        raw("commentator", 5)
    );
    // The prompt crew's patch from slice 2 is what it reads in slice 5.
    assert!(raw("score_tracker", 5).contains(r#"The score was {"away": 0, "home": 1}"#));
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"commentary_line") && kinds.contains(&"score_update"));
}

/// The examples' READMEs show what a run prints; this keeps them true.
#[test]
fn crewai_example_readmes_show_the_real_output() {
    for name in ["match_day_crewai", "hello_crewai"] {
        let readme =
            std::fs::read_to_string(root().join("examples").join(name).join("README.md")).unwrap();
        let documented = readme
            .rsplit("```jsonl\n")
            .next()
            .and_then(|rest| rest.split("```").next())
            .unwrap();
        let out = example(name);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(out.stdout, documented, "{name}/README.md is out of date");
    }
}

#[test]
fn a_crew_raising_inside_crewai_fails_only_its_own_call() {
    let fixtures = root().join("tests/fixtures/crewai");
    let out = run(&fixtures, &fixtures.join("events.jsonl"));
    assert_eq!(out.code, 1, "a failed call makes the run status 1");
    let actions = lines(&out.stdout);
    let answered: Vec<(&str, i64)> = actions
        .iter()
        .map(|a| (a["crew"].as_str().unwrap(), a["slice"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        answered,
        [
            ("exploding", 0),
            ("steady", 0),
            ("steady", 1),
            ("exploding", 2),
            ("steady", 2)
        ]
    );
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    let error = &out.errors[0];
    assert_eq!(
        (&error["crew"], &error["slice"]),
        (&"exploding".into(), &1.into())
    );
    assert_eq!(error["reason"], "runner_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the CrewAI kickoff raised RuntimeError: the callback exploded"),
        "{error}"
    );
}

#[test]
fn new_crew_scaffolds_crews_that_validate_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let crews = dir.path().join("crews");
    let live_crew = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_live-crew"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let crews_arg = crews.to_str().unwrap();
    for (name, kind) in [
        ("thinker", "crewai"),
        ("reactor", "python"),
        ("talker", "command"),
    ] {
        live_crew(&["new", "crew", name, "--kind", kind, "--crews", crews_arg]);
    }
    let report = live_crew(&["validate", "--crews", crews_arg]);
    assert!(report.contains("3 crews OK"), "{report}");
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        r#"{"ts":"2025-06-01T18:00:00Z","kind":"ping","stream_id":"s","payload":{"n":1}}"#,
    )
    .unwrap();
    let out = run(&crews, &events);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let actions = lines(&out.stdout);
    let produced: Vec<(&str, &str)> = actions
        .iter()
        .map(|a| (a["crew"].as_str().unwrap(), a["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        produced,
        [
            ("reactor", "seen"),
            ("talker", "seen"),
            ("thinker", "thinker_output")
        ]
    );
    assert!(
        actions[2]["payload"]["raw"]
            .as_str()
            .unwrap()
            .contains("in slice 0")
    );
}
