//! The crews folder as a whole (SPEC §3): which sub-folders are crews, and the checks that
//! span crews — unique names, known `needs`, no dependency cycles — plus the deterministic
//! run order (topological over same-slice dependencies, ties by crew name).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::types::{CrewSpec, Need};
use super::{ConfigErrors, ConfigIssue, GlobalConfig};

/// Largest `needs[].offset` magnitude, in slices. Keeps look-ahead and look-back windows
/// (and the memory they pin) bounded.
pub const MAX_NEED_OFFSET: i64 = 1000;

/// The validated crews of a folder, in run order: a crew comes after every crew it needs
/// at offset 0, and crews that do not depend on each other are ordered by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Crews(Vec<CrewSpec>);

impl Crews {
    /// Loads every crew under `dir` and checks them together; reports every problem.
    pub fn load(dir: &Path, global: &GlobalConfig) -> Result<Crews, ConfigErrors> {
        let mut issues = Vec::new();
        let mut specs = Vec::new();
        for file in runtime_files(dir, &mut issues) {
            match CrewSpec::load(&file, global) {
                Ok(spec) => specs.push(spec),
                Err(found) => issues.extend(found),
            }
        }
        match Crews::from_specs(specs) {
            Ok(crews) if issues.is_empty() => Ok(crews),
            Ok(_) => Err(ConfigErrors(issues)),
            Err(ConfigErrors(more)) => {
                issues.extend(more);
                Err(ConfigErrors(issues))
            }
        }
    }

    /// Checks crews against each other and puts them in run order.
    pub fn from_specs(specs: Vec<CrewSpec>) -> Result<Crews, ConfigErrors> {
        let mut issues = Vec::new();
        let mut by_name: HashMap<&str, &CrewSpec> = HashMap::new();
        for spec in &specs {
            if let Some(first) = by_name.insert(&spec.name, spec) {
                issues.push(ConfigIssue::new(
                    &spec.file,
                    "crew",
                    format!(
                        "duplicate crew name '{}', also used by {}; crew names must be unique",
                        spec.name,
                        first.file.display()
                    ),
                ));
            }
        }
        for spec in &specs {
            for (i, need) in spec.needs.iter().enumerate() {
                if need.offset().abs() > MAX_NEED_OFFSET {
                    issues.push(ConfigIssue::new(
                        &spec.file,
                        format!("needs[{i}].offset"),
                        format!(
                            "{} is outside -{MAX_NEED_OFFSET}..={MAX_NEED_OFFSET} slices",
                            need.offset()
                        ),
                    ));
                }
                if let Need::Crew { crew, .. } = need
                    && !by_name.contains_key(crew.as_str())
                {
                    issues.push(ConfigIssue::new(
                        &spec.file,
                        format!("needs[{i}].crew"),
                        format!("unknown crew '{crew}'; known crews: {}", known(&by_name)),
                    ));
                }
            }
        }
        // Cycles too, whatever else is wrong: a user fixes everything in one pass.
        issues.extend(cycle_issues(&specs));
        if !issues.is_empty() {
            return Err(ConfigErrors(issues));
        }
        Ok(Crews(run_order(specs)))
    }

    pub fn as_slice(&self) -> &[CrewSpec] {
        &self.0
    }
}

fn known(by_name: &HashMap<&str, &CrewSpec>) -> String {
    let names: BTreeSet<&str> = by_name.keys().copied().collect();
    if names.is_empty() {
        return "none".into();
    }
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// The runtime file of every crew sub-folder, sorted by folder name.
fn runtime_files(dir: &Path, issues: &mut Vec<ConfigIssue>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            issues.push(ConfigIssue::new(
                dir,
                "",
                format!("cannot read the crews folder: {err}; pass --crews DIR"),
            ));
            return Vec::new();
        }
    };
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut folders: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    folders.sort();
    let mut files = Vec::new();
    for folder in folders {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&folder)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| is_runtime_file(path))
            .collect();
        found.sort();
        match found.as_slice() {
            [] => tracing::debug!(folder = %folder.display(), "no runtime file; not a crew"),
            [file] => {
                let inside = folder
                    .canonicalize()
                    .is_ok_and(|real| real.starts_with(&root));
                if inside {
                    files.push(file.clone());
                } else {
                    issues.push(ConfigIssue::new(
                        file,
                        "",
                        "the crew folder resolves outside the crews folder (through a link); \
                         copy the crew into it instead",
                    ));
                }
            }
            [first, ..] => issues.push(ConfigIssue::new(
                first,
                "",
                format!(
                    "{} runtime files in one crew folder; keep exactly one \
                     (runtime.yaml or <name>.runtime.yaml)",
                    found.len()
                ),
            )),
        }
    }
    files
}

fn is_runtime_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    path.is_file() && (name == "runtime.yaml" || name.ends_with(".runtime.yaml"))
}

/// Crew `needs` whose offsets add up to zero or more around a loop can never be satisfied:
/// each crew would wait for the other in the same or a later slice. Same-slice (offset 0)
/// cycles are the common case. Reports one issue per such loop, on its first crew.
fn cycle_issues(specs: &[CrewSpec]) -> Vec<ConfigIssue> {
    let n = specs.len();
    let index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    // Floyd–Warshall over weights -offset: a loop with offsets summing to >= 0 is a loop
    // of weight <= 0. `next` rebuilds the path for the message.
    const NONE: i64 = i64::MAX;
    let mut dist = vec![vec![NONE; n]; n];
    let mut next = vec![vec![usize::MAX; n]; n];
    for (i, spec) in specs.iter().enumerate() {
        for need in &spec.needs {
            // An unknown crew is reported on its own; it closes no loop.
            if let Need::Crew { crew, offset } = need
                && let Some(&j) = index.get(crew.as_str())
                && -offset < dist[i][j]
            {
                dist[i][j] = -offset;
                next[i][j] = j;
            }
        }
    }
    for k in 0..n {
        for i in 0..n {
            for j in 0..n {
                if dist[i][k] == NONE || dist[k][j] == NONE {
                    continue;
                }
                let through = dist[i][k].saturating_add(dist[k][j]);
                if through < dist[i][j] {
                    dist[i][j] = through;
                    next[i][j] = next[i][k];
                }
            }
        }
    }
    let mut reported: BTreeSet<usize> = BTreeSet::new();
    let mut issues = Vec::new();
    for start in 0..n {
        if dist[start][start] > 0 || reported.contains(&start) {
            continue;
        }
        let mut path = vec![start];
        let mut at = next[start][start];
        while at != start && path.len() <= n {
            path.push(at);
            at = next[at][start];
        }
        reported.extend(path.iter().copied());
        let names: Vec<&str> = path
            .iter()
            .chain(std::iter::once(&start))
            .map(|&i| specs[i].name.as_str())
            .collect();
        issues.push(ConfigIssue::new(
            &specs[start].file,
            "needs",
            format!(
                "dependency cycle {} can never be satisfied (its offsets add up to 0 or more); \
                 make one of these needs look back, e.g. offset: -1",
                names.join(" -> ")
            ),
        ));
    }
    issues
}

/// Kahn's algorithm over offset-0 crew needs, always taking the smallest ready name.
fn run_order(specs: Vec<CrewSpec>) -> Vec<CrewSpec> {
    let mut waiting_on: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
    for spec in &specs {
        let same_slice: BTreeSet<String> = spec
            .needs
            .iter()
            .filter_map(|need| match need {
                Need::Crew { crew, offset: 0 } if *crew != spec.name => Some(crew.clone()),
                _ => None,
            })
            .collect();
        for dep in &same_slice {
            dependents
                .entry(dep.clone())
                .or_default()
                .push(spec.name.clone());
        }
        waiting_on.insert(spec.name.clone(), same_slice);
    }
    let mut by_name: HashMap<String, CrewSpec> =
        specs.into_iter().map(|s| (s.name.clone(), s)).collect();
    let mut ready: BTreeSet<String> = waiting_on
        .iter()
        .filter(|(_, deps)| deps.is_empty())
        .map(|(name, _)| name.clone())
        .collect();
    let mut order = Vec::with_capacity(by_name.len());
    while let Some(name) = ready.pop_first() {
        for dependent in dependents.remove(&name).unwrap_or_default() {
            let deps = waiting_on
                .get_mut(&dependent)
                .expect("every crew is listed");
            deps.remove(&name);
            if deps.is_empty() {
                ready.insert(dependent);
            }
        }
        order.push(by_name.remove(&name).expect("each name is ordered once"));
    }
    debug_assert!(by_name.is_empty(), "cycles are rejected before ordering");
    order
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a crew folder `dir/<name>/runtime.yaml` with a `cat` command runner.
    pub(crate) fn write_crew(dir: &Path, name: &str, extra: &str) -> PathBuf {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join("runtime.yaml");
        let yaml = format!("crew: {name}\nrunner: {{kind: command, command: [cat]}}\n{extra}");
        std::fs::write(&file, yaml).unwrap();
        file
    }

    fn load(dir: &Path) -> Result<Crews, ConfigErrors> {
        Crews::load(dir, &GlobalConfig::default())
    }

    fn names(crews: &Crews) -> Vec<&str> {
        crews.as_slice().iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn order_is_topological_with_ties_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write_crew(dir.path(), "zeta", "triggers: ['*']\n");
        write_crew(
            dir.path(),
            "alpha",
            "triggers: ['*']\nneeds: [{type: crew, crew: zeta, offset: 0}]\n",
        );
        write_crew(
            dir.path(),
            "beta",
            "triggers: ['*']\nneeds: [{type: crew, crew: alpha, offset: -1}]\n",
        );
        write_crew(dir.path(), "gamma", "triggers: ['*']\n");
        let crews = load(dir.path()).unwrap();
        assert_eq!(names(&crews), ["beta", "gamma", "zeta", "alpha"]);
    }

    #[test]
    fn folders_without_a_runtime_file_are_not_crews() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("notes")).unwrap();
        let folder = dir.path().join("named");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(
            folder.join("named.runtime.yaml"),
            "crew: named\ntriggers: [x]\nrunner: {kind: command, command: [cat]}\n",
        )
        .unwrap();
        assert_eq!(names(&load(dir.path()).unwrap()), ["named"]);
    }

    #[test]
    fn cross_crew_problems_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_crew(dir.path(), "a", "triggers: [x]\n");
        let dup = dir.path().join("b");
        std::fs::create_dir(&dup).unwrap();
        std::fs::write(
            dup.join("runtime.yaml"),
            "crew: a\ntriggers: [x]\nrunner: {kind: command, command: [cat]}\n",
        )
        .unwrap();
        write_crew(
            dir.path(),
            "c",
            "triggers: [x]\nneeds: [{type: crew, crew: ghost, offset: 0}, \
             {type: event, event: x, offset: 5000}]\n",
        );
        let issues = load(dir.path()).unwrap_err().0;
        let fields: Vec<(&str, &str)> = issues
            .iter()
            .map(|i| {
                let folder = i.file.parent().unwrap().file_name().unwrap();
                (folder.to_str().unwrap(), i.field.as_str())
            })
            .collect();
        assert_eq!(
            fields,
            [
                ("b", "crew"),
                ("c", "needs[0].crew"),
                ("c", "needs[1].offset")
            ]
        );
    }

    #[test]
    fn cycles_with_offsets_adding_to_zero_or_more_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let needs = |crew: &str, offset: i64| {
            format!("triggers: [x]\nneeds: [{{type: crew, crew: {crew}, offset: {offset}}}]\n")
        };
        write_crew(dir.path(), "a", &needs("b", 0));
        write_crew(dir.path(), "b", &needs("a", 0));
        write_crew(dir.path(), "c", &needs("d", 1));
        write_crew(dir.path(), "d", &needs("c", -1));
        write_crew(dir.path(), "e", &needs("f", 0));
        write_crew(dir.path(), "f", &needs("e", -1));
        let issues = load(dir.path()).unwrap_err().0;
        let messages: Vec<&str> = issues.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(issues.len(), 2, "{messages:?}");
        assert!(messages[0].contains("a -> b -> a"), "{}", messages[0]);
        assert!(messages[1].contains("c -> d -> c"), "{}", messages[1]);
        assert!(issues.iter().all(|i| i.field == "needs"));
    }

    #[test]
    fn a_missing_folder_is_reported() {
        let issues = load(Path::new("/nonexistent/crews")).unwrap_err().0;
        assert!(issues[0].message.contains("cannot read"), "{issues:?}");
    }
}
