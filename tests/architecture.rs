//! The tree's shape (docs/DESIGN.md, "The shape of the code"): the host crate's
//! top-level modules depend on each other without circles, so each stage can be read,
//! tested and replaced without the ones after it. A `use crate::x` (or `crate::x::...`
//! path) in module `m` outside its tests is an edge `m -> x`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module of every `.rs` file under `src/` → the modules its code names.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs")
                || path.file_name().is_some_and(|name| name == "tests.rs")
            {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_str().unwrap().trim_end_matches(".rs").to_owned();
            if module == "main" || module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Tests sit at the end of a file and may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap();
            let names = graph.entry(module.clone()).or_default();
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let target = &rest[..end];
                if !target.is_empty() && target != module {
                    names.insert(target.to_owned());
                }
            }
        }
    }
    graph
}

/// A circle through `graph`, if there is one, as the modules along it.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut circle = path[start..].to_vec();
            circle.push(module.to_owned());
            return Some(circle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_have_no_circles() {
    let graph = dependencies();
    assert!(graph.contains_key("scheduler") && graph.contains_key("source"));
    if let Some(circle) = find_circle(&graph) {
        panic!(
            "modules depend on each other in a circle: {}",
            circle.join(" -> ")
        );
    }
}

#[test]
fn the_circle_finder_finds_circles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_owned(), deps.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_circle(&graph).unwrap(), ["a", "b", "c", "a"]);
}

/// The scheduler's core decides; it does not do I/O: it names no port and no process.
#[test]
fn the_scheduler_core_does_no_io() {
    let core = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scheduler/core.rs"),
    )
    .unwrap();
    for io in [
        "CrewPool",
        "ContextStore",
        "ActionSink",
        "EventSource",
        "SliceClock",
        "tokio::spawn",
        "std::fs",
        ".await",
    ] {
        assert!(!core.contains(io), "scheduler/core.rs uses {io}");
    }
}
