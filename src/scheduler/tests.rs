//! Scheduler rules (SPEC §4, §5) against in-memory crews on a virtual clock.

use std::io::Write;
use std::sync::Mutex;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::clock::EventTime;
use super::wall_clock::WallClock;
use super::*;
use crate::config::crews_dir::tests::write_crew;
use crate::context::MemoryStore;
use crate::model::{Event, ProposedAction};
use crate::pool::{CallFailure, CallOutcome, CallOutput, FailureReason, StatusHandle};
use crate::protocol::{Call, DepItems};
use crate::sink::{MemorySink, RunSummary};
use crate::source::{InputItem, MemoryFeed, MemorySource};

const T0_US: i64 = 1_700_000_000_000_000;

/// An event `ms` milliseconds after the first one; with the default 500 ms slices,
/// `ms / 500` is its slice.
fn ev(stream: &str, ms: i64, kind: &str) -> Event {
    Event::new(
        Timestamp::from_micros(T0_US + ms * 1000),
        kind.into(),
        stream.into(),
        RawValue::from_string(format!("\"{kind}@{ms}\"")).unwrap(),
    )
}

/// What a fake crew does with a call: how long it takes and what it returns.
type Behaviour = Arc<dyn Fn(&Call) -> (u64, CallOutcome) + Send + Sync>;

/// One action per event, echoing its payload, after `ms`.
fn echo(ms: u64) -> Behaviour {
    Arc::new(move |call: &Call| (ms, Ok(output(call, None))))
}

fn output(call: &Call, patch: Option<Value>) -> CallOutput {
    CallOutput {
        actions: call
            .events
            .iter()
            .map(|e| ProposedAction {
                kind: "out".into(),
                payload: e.payload.clone(),
                ttl_ms: None,
            })
            .collect(),
        context_patch: patch.map(|p| match p {
            Value::Object(map) => map,
            _ => panic!("patches are objects"),
        }),
        runner_time: Duration::ZERO,
        llm: Vec::new(),
    }
}

#[derive(Debug, Clone)]
struct Record {
    crew: String,
    stream: String,
    slice: i64,
    events: Vec<String>,
    deps: BTreeMap<String, Vec<String>>,
    context: Value,
    start_ms: u64,
    end_ms: u64,
}

/// A pool of in-memory crews; like the real one, it runs one call per crew at a time.
struct FakePool {
    behaviours: HashMap<String, Behaviour>,
    locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    log: Arc<Mutex<Vec<Record>>>,
    /// `crew: reason` of every failure counted after a successful call.
    counted: Mutex<Vec<String>>,
    /// `load <crew>` and `unload <crew>`, in order (hot reload).
    lifecycle: Mutex<Vec<String>>,
    t0: Instant,
}

impl FakePool {
    fn new(behaviours: &[(&str, Behaviour)]) -> FakePool {
        FakePool {
            behaviours: behaviours
                .iter()
                .map(|(name, b)| (name.to_string(), b.clone()))
                .collect(),
            locks: behaviours
                .iter()
                .map(|(name, _)| (name.to_string(), Default::default()))
                .collect(),
            log: Default::default(),
            counted: Default::default(),
            lifecycle: Default::default(),
            t0: Instant::now(),
        }
    }
}

fn texts<T: serde::Serialize>(items: &[Arc<T>]) -> Vec<String> {
    items
        .iter()
        .map(|item| {
            let value = serde_json::to_value(&**item).unwrap();
            value["payload"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

impl LoadCrews for FakePool {
    fn load(&self, spec: &crate::config::CrewSpec) -> Result<(), String> {
        self.lifecycle
            .lock()
            .unwrap()
            .push(format!("load {}", spec.name));
        Ok(())
    }

    fn unload(&self, crew: &str) {
        self.lifecycle
            .lock()
            .unwrap()
            .push(format!("unload {crew}"));
    }
}

impl CrewPool for FakePool {
    fn call(&self, crew: &str, call: Call) -> impl Future<Output = CallOutcome> + Send + 'static {
        let behaviour = self.behaviours[crew].clone();
        let lock = self.locks[crew].clone();
        let log = self.log.clone();
        let (t0, crew) = (self.t0, crew.to_owned());
        async move {
            let _one_at_a_time = lock.lock_owned().await;
            let start_ms = t0.elapsed().as_millis() as u64;
            let (ms, outcome) = behaviour(&call);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            // The simulated runner had the call for its whole duration.
            let outcome = outcome.map(|output| CallOutput {
                runner_time: Duration::from_millis(ms),
                llm: Vec::new(),
                ..output
            });
            log.lock().unwrap().push(Record {
                crew,
                stream: call.stream_id.clone(),
                slice: call.slice,
                events: texts(&call.events),
                deps: call
                    .deps
                    .iter()
                    .map(|(key, items)| {
                        let items = match items {
                            DepItems::Actions(actions) => texts(actions),
                            DepItems::Events(events) => texts(events),
                        };
                        (key.clone(), items)
                    })
                    .collect(),
                context: Value::Object((*call.context).clone()),
                start_ms,
                end_ms: t0.elapsed().as_millis() as u64,
            });
            outcome
        }
    }

    fn count_failure(&self, crew: &str, failure: CallFailure) {
        self.counted
            .lock()
            .unwrap()
            .push(format!("{crew}: {}", failure.reason));
    }

    fn status(&self) -> StatusHandle {
        StatusHandle::default()
    }
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a test reads back: JSON Lines of error records or actions.
trait JsonLines {
    fn bytes(&self) -> Vec<u8>;

    fn lines(&self) -> Vec<Value> {
        let bytes = self.bytes();
        std::str::from_utf8(&bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl JsonLines for SharedBuf {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl JsonLines for MemorySink {
    fn bytes(&self) -> Vec<u8> {
        self.log.lock().unwrap().json_lines.clone()
    }
}

/// A batch run's ports on in-memory crews, input, actions and errors.
fn batch_ports<'a>(
    pool: &'a FakePool,
    store: &'a MemoryStore,
    source: MemorySource,
    global: &GlobalConfig,
) -> (
    Ports<'a, FakePool, MemoryStore, MemorySource, MemorySink, EventTime>,
    MemorySink,
    SharedBuf,
) {
    let (actions, errors) = (MemorySink::default(), SharedBuf::default());
    let ports = Ports {
        pool,
        store,
        source,
        actions: actions.clone(),
        clock: EventTime {
            reorder_slices: global.reorder_slices,
        },
        errors: ErrorSink::new(Some((Box::new(errors.clone()), "<test>".into()))),
        metrics: Arc::new(Metrics::new(global.context_max_bytes, None)),
        reloads: None,
    };
    (ports, actions, errors)
}

/// Sends `events` in small batches, as the input thread does, then ends the input.
fn feed(feed: MemoryFeed, events: Vec<Event>) {
    tokio::spawn(async move {
        for chunk in events.chunks(3) {
            let batch: Vec<InputItem> = chunk.iter().map(|e| Ok(Arc::new(e.clone()))).collect();
            feed.send(batch).await;
        }
    });
}

struct Outcome {
    /// `crew/slice/payload` of each action, in output order.
    actions: Vec<String>,
    raw_actions: Vec<u8>,
    errors: Vec<Value>,
    summary: RunSummary,
    /// Calls by completion time.
    calls: Vec<Record>,
    /// Failures counted toward crews' `max_errors` after their calls succeeded.
    counted: Vec<String>,
}

impl Outcome {
    fn calls_of(&self, crew: &str) -> Vec<&Record> {
        self.calls.iter().filter(|r| r.crew == crew).collect()
    }

    fn reasons(&self) -> Vec<&str> {
        self.errors
            .iter()
            .map(|e| e["reason"].as_str().unwrap())
            .collect()
    }
}

/// Runs `events` through crews given as `(name, runtime.yaml lines)`.
async fn run_with(
    crews: &[(&str, &str)],
    behaviours: &[(&str, Behaviour)],
    events: Vec<Event>,
    global: GlobalConfig,
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in crews {
        write_crew(dir.path(), name, yaml);
    }
    let crews = Crews::load(dir.path(), &global).unwrap();
    let pool = FakePool::new(behaviours);
    let (input, source) = MemorySource::new(2);
    feed(input, events);
    let store = MemoryStore::default();
    let (ports, actions, errors) = batch_ports(&pool, &store, source.without_acks(), &global);
    let summary = run(&crews, &global, ports, None, std::future::pending())
        .await
        .unwrap();
    outcome(&pool, &actions, &errors, summary)
}

/// What a run left behind.
fn outcome(
    pool: &FakePool,
    actions: &MemorySink,
    errors: &SharedBuf,
    summary: RunSummary,
) -> Outcome {
    let raw_actions = actions.bytes();
    let calls = pool.log.lock().unwrap().clone();
    let counted = pool.counted.lock().unwrap().clone();
    Outcome {
        actions: actions
            .lines()
            .iter()
            .map(|a| {
                format!(
                    "{}/{}/{}",
                    a["crew"].as_str().unwrap(),
                    a["slice"],
                    a["payload"].as_str().unwrap()
                )
            })
            .collect(),
        raw_actions,
        errors: errors.lines(),
        summary,
        calls,
        counted,
    }
}

async fn run_default(
    crews: &[(&str, &str)],
    behaviours: &[(&str, Behaviour)],
    events: Vec<Event>,
) -> Outcome {
    run_with(crews, behaviours, events, GlobalConfig::default()).await
}

const ANY: &str = "triggers: ['*']\n";

/// Hot reload: a new version of the crews folder takes effect from the next slice to
/// close; a new crew starts there, a changed trigger applies there, and a removed crew
/// runs no more, while what ran before stays in the output in its order.
#[tokio::test(start_paused = true)]
async fn a_new_crews_folder_applies_from_the_next_slice_to_close() {
    let (out, lifecycle) = run_with_reload(
        &[("a", "triggers: [x]\n"), ("b", "triggers: [x]\n")],
        &[("a", "triggers: [y]\n"), ("c", "triggers: [x]\n")],
        &[("a", echo(5)), ("b", echo(5)), ("c", echo(5))],
        vec![ev("s", 0, "x"), ev("s", 500, "x"), ev("s", 1000, "x")],
        vec![
            ev("s", 1500, "x"),
            ev("s", 1600, "y"),
            ev("s", 2000, "x"),
            ev("s", 2100, "y"),
        ],
    )
    .await;
    assert_eq!(
        out.actions,
        [
            "a/0/x@0",
            "b/0/x@0",
            "a/1/x@500",
            "b/1/x@500",
            "c/2/x@1000",
            "a/3/y@1600",
            "c/3/x@1500",
            "a/4/y@2100",
            "c/4/x@2000"
        ]
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(lifecycle, ["load a", "load c", "unload b"]);
    let calls: Vec<(&str, u64)> = (out.summary.crews.iter())
        .map(|(name, stats)| (name.as_str(), stats.calls))
        .collect();
    assert_eq!(
        calls,
        [("a", 4), ("b", 2), ("c", 3)],
        "a removed crew stays in the summary"
    );
}

/// Hot reload: a crew added with a need on a running crew gets that crew's actions of
/// the same slice as its dependency data, from its first slice on; the running crew's
/// calls are untouched.
#[tokio::test(start_paused = true)]
async fn a_crew_added_with_a_need_gets_its_dependency_from_its_first_slice() {
    let (out, lifecycle) = run_with_reload(
        &[("a", "triggers: [x]\n")],
        &[
            ("a", "triggers: [x]\n"),
            (
                "c",
                "triggers: [x]\nneeds: [{type: crew, crew: a, offset: 0}]\n",
            ),
        ],
        &[("a", echo(5)), ("c", echo(5))],
        vec![ev("s", 0, "x"), ev("s", 500, "x")],
        vec![ev("s", 1000, "x"), ev("s", 1500, "x")],
    )
    .await;
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(lifecycle, ["load c"], "a is unchanged: it keeps its runner");
    let deps: Vec<(i64, Vec<String>)> = (out.calls_of("c").iter())
        .map(|call| (call.slice, call.deps["crew:a@0"].clone()))
        .collect();
    let expected: Vec<(i64, Vec<String>)> = [(1, "x@500"), (2, "x@1000"), (3, "x@1500")]
        .map(|(slice, action)| (slice, vec![action.to_owned()]))
        .into();
    assert_eq!(deps, expected, "slice 1 was still open at the reload");
    let a_slices: Vec<i64> = out.calls_of("a").iter().map(|call| call.slice).collect();
    assert_eq!(a_slices, [0, 1, 2, 3]);
}

/// Runs `first` through the crews `before`, sends the folder `after` to the run once
/// those events' slices ran, then runs `then`. Returns the outcome and the pool's
/// `load`/`unload` calls.
async fn run_with_reload(
    before: &[(&str, &str)],
    after: &[(&str, &str)],
    behaviours: &[(&str, Behaviour)],
    first: Vec<Event>,
    then: Vec<Event>,
) -> (Outcome, Vec<String>) {
    let global = GlobalConfig::default();
    let folder = tempfile::tempdir().unwrap();
    for (name, yaml) in before {
        write_crew(folder.path(), name, yaml);
    }
    let crews = Crews::load(folder.path(), &global).unwrap();
    // The same folder edited, as the watch sees it.
    for (name, _) in before {
        if !after.iter().any(|(kept, _)| kept == name) {
            std::fs::remove_dir_all(folder.path().join(name)).unwrap();
        }
    }
    for (name, yaml) in after {
        write_crew(folder.path(), name, yaml);
    }
    let new = NewCrews {
        crews: Crews::load(folder.path(), &global).unwrap(),
        changed: BTreeSet::new(),
    };
    let pool = FakePool::new(behaviours);
    let (input, source) = MemorySource::new(2);
    let (reload, reloads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let send = |events: Vec<Event>| {
            let batch: Vec<InputItem> = events.into_iter().map(|e| Ok(Arc::new(e))).collect();
            input.send(batch)
        };
        send(first).await;
        // The slices `first` closed ran; its last slice is still open.
        tokio::time::sleep(Duration::from_secs(5)).await;
        reload.send(new).ok().unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        send(then).await;
    });
    let store = MemoryStore::default();
    let (mut ports, actions, errors) = batch_ports(&pool, &store, source.without_acks(), &global);
    ports.reloads = Some(reloads);
    let summary = run(&crews, &global, ports, None, std::future::pending())
        .await
        .unwrap();
    let lifecycle = pool.lifecycle.lock().unwrap().clone();
    (outcome(&pool, &actions, &errors, summary), lifecycle)
}

#[tokio::test(start_paused = true)]
async fn triggers_select_event_kinds_and_star_takes_all() {
    let out = run_default(
        &[("goals", "triggers: [goal]\n"), ("all", ANY)],
        &[("goals", echo(0)), ("all", echo(0))],
        vec![
            ev("s", 0, "goal"),
            ev("s", 100, "frame"),
            ev("s", 600, "frame"),
        ],
    )
    .await;
    let goals = out.calls_of("goals");
    assert_eq!(goals.len(), 1);
    assert_eq!(goals[0].events, ["goal@0"]);
    let all: Vec<(i64, Vec<String>)> = out
        .calls_of("all")
        .iter()
        .map(|r| (r.slice, r.events.clone()))
        .collect();
    assert_eq!(
        all,
        [
            (0, vec!["goal@0".to_owned(), "frame@100".into()]),
            (1, vec!["frame@600".into()])
        ]
    );
    assert_eq!(out.summary.events, 3);
    assert_eq!(out.summary.slices, 2);
    assert_eq!(out.summary.actions, 4);
}

#[tokio::test(start_paused = true)]
async fn stride_runs_on_multiples_with_the_events_since_the_last_run() {
    let out = run_default(
        &[("every2", "triggers: ['*']\nslice_stride: 2\n")],
        &[("every2", echo(0))],
        vec![
            ev("s", 0, "a"),
            ev("s", 600, "b"),
            ev("s", 1100, "c"),
            ev("s", 1600, "d"),
        ],
    )
    .await;
    let runs: Vec<(i64, Vec<String>)> = out
        .calls
        .iter()
        .map(|r| (r.slice, r.events.clone()))
        .collect();
    assert_eq!(
        runs,
        [
            (0, vec!["a@0".to_owned()]),
            (2, vec!["b@600".into(), "c@1100".into()]),
            // End of input flushes the last events at the next multiple.
            (4, vec!["d@1600".into()]),
        ]
    );
}

/// Five slices arrive at once for a crew that takes 1 s per call.
async fn backlog(policy: &str) -> Outcome {
    let yaml =
        format!("triggers: ['*']\nbacklog_policy: {policy}\ncontext: {{read: [], write: []}}\n");
    let events = (0..5).map(|i| ev("s", i * 500, "e")).collect();
    run_default(&[("slow", yaml.as_str())], &[("slow", echo(1000))], events).await
}

#[tokio::test(start_paused = true)]
async fn fifo_backlog_runs_every_slice_in_order() {
    let out = backlog("fifo").await;
    let slices: Vec<i64> = out.calls.iter().map(|r| r.slice).collect();
    assert_eq!(slices, [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn latest_backlog_collapses_queued_slices_into_the_newest() {
    let out = backlog("latest").await;
    let runs: Vec<(i64, usize)> = out
        .calls
        .iter()
        .map(|r| (r.slice, r.events.len()))
        .collect();
    assert_eq!(runs, [(0, 1), (4, 4)]);
    assert_eq!(out.actions.len(), 5);
}

#[tokio::test(start_paused = true)]
async fn crew_needs_look_back_same_slice_and_ahead() {
    let out = run_default(
        &[
            ("a", ANY),
            (
                "back",
                "triggers: ['*']\nneeds: [{type: crew, crew: a, offset: -1}]\n",
            ),
            (
                "same",
                "triggers: ['*']\nneeds: [{type: crew, crew: a, offset: 0}]\n",
            ),
            (
                "ahead",
                "triggers: [x]\nneeds: [{type: crew, crew: a, offset: 1}]\n",
            ),
        ],
        &[
            ("a", echo(100)),
            ("back", echo(0)),
            ("same", echo(0)),
            ("ahead", echo(0)),
        ],
        vec![ev("s", 0, "x"), ev("s", 600, "y"), ev("s", 1100, "z")],
    )
    .await;
    let back: Vec<(i64, Vec<String>, Vec<String>)> = out
        .calls_of("back")
        .iter()
        .map(|r| (r.slice, r.events.clone(), r.deps["crew:a@-1"].clone()))
        .collect();
    assert_eq!(
        back,
        [
            // a did not run in slice -1, so the trigger of slice 0 moves to slice 1.
            (
                1,
                vec!["x@0".to_owned(), "y@600".into()],
                vec!["x@0".to_owned()]
            ),
            (2, vec!["z@1100".into()], vec!["y@600".into()]),
        ]
    );
    for call in out.calls_of("same") {
        let a = out
            .calls_of("a")
            .into_iter()
            .find(|r| r.slice == call.slice)
            .unwrap();
        assert!(
            call.start_ms >= a.end_ms,
            "same-slice needs run after their dependency"
        );
        assert_eq!(call.deps["crew:a@0"], a.events);
    }
    let ahead = out.calls_of("ahead");
    assert_eq!(ahead.len(), 1);
    assert_eq!(
        (ahead[0].slice, ahead[0].deps["crew:a@1"].clone()),
        (0, vec!["y@600".to_owned()])
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
}

#[tokio::test(start_paused = true)]
async fn event_needs_deliver_the_events_of_their_slice() {
    let needs = |offset: i64| {
        format!("triggers: [goal]\nneeds: [{{type: event, event: frame, offset: {offset}}}]\n")
    };
    let (back, same, ahead) = (needs(-1), needs(0), needs(1));
    let out = run_default(
        &[("back", &back), ("same", &same), ("ahead", &ahead)],
        &[("back", echo(0)), ("same", echo(0)), ("ahead", echo(0))],
        vec![
            ev("s", 0, "frame"),
            ev("s", 600, "goal"),
            ev("s", 700, "frame"),
            ev("s", 1100, "frame"),
        ],
    )
    .await;
    let got = |crew: &str, key: &str| -> Vec<(i64, Vec<String>)> {
        out.calls_of(crew)
            .iter()
            .map(|r| (r.slice, r.deps[key].clone()))
            .collect()
    };
    assert_eq!(
        got("back", "event:frame@-1"),
        [(1, vec!["frame@0".to_owned()])]
    );
    assert_eq!(
        got("same", "event:frame@0"),
        [(1, vec!["frame@700".to_owned()])]
    );
    assert_eq!(
        got("ahead", "event:frame@1"),
        [(1, vec!["frame@1100".to_owned()])]
    );
}

#[tokio::test(start_paused = true)]
async fn unmet_needs_time_out_after_max_wait_slices() {
    let global = GlobalConfig {
        max_wait_slices: 3,
        ..GlobalConfig::default()
    };
    let out = run_with(
        &[(
            "waits",
            "triggers: [goal]\nneeds: [{type: event, event: frame, offset: 0}]\n",
        )],
        &[("waits", echo(0))],
        vec![ev("s", 0, "goal"), ev("s", 2600, "frame")],
        global,
    )
    .await;
    assert!(out.calls.is_empty());
    assert_eq!(out.reasons(), ["dependency_timeout"]);
    let error = &out.errors[0];
    assert_eq!(
        (error["slice"].as_i64(), error["crew"].as_str()),
        (Some(0), Some("waits"))
    );
    assert!(error["message"].as_str().unwrap().contains("event:frame@0"));
}

#[tokio::test(start_paused = true)]
async fn wait_policies_any_none_and_timeout() {
    let two_needs =
        "needs: [{type: event, event: frame, offset: 0}, {type: event, event: ball, offset: 0}]\n";
    let any = format!("triggers: [goal]\nwait_policy: any\n{two_needs}");
    let all = format!("triggers: [goal]\nwait_policy: all\n{two_needs}");
    let none = "triggers: [goal]\nwait_policy: none\nneeds: [{type: crew, crew: slow, offset: -1}, \
                {type: event, event: frame, offset: 1}]\n";
    let timeout = "triggers: [goal]\nwait_policy: 'timeout:1000'\nneeds: [{type: crew, crew: slow, offset: 0}]\n";
    let out = run_default(
        &[
            ("any", &any),
            ("all", &all),
            ("none", none),
            ("timeout", timeout),
            ("slow", "triggers: [goal]\ncontext: {read: [], write: []}\n"),
        ],
        &[
            ("any", echo(0)),
            ("all", echo(0)),
            ("none", echo(0)),
            ("timeout", echo(0)),
            ("slow", echo(5000)),
        ],
        vec![
            ev("s", 0, "goal"),
            ev("s", 10, "frame"),
            ev("s", 600, "frame"),
        ],
    )
    .await;
    let any = out.calls_of("any");
    assert_eq!((any.len(), any[0].slice), (1, 0));
    assert_eq!(any[0].deps["event:frame@0"], ["frame@10"]);
    assert!(any[0].deps["event:ball@0"].is_empty());
    assert!(out.calls_of("all").is_empty());
    let none = out.calls_of("none");
    assert_eq!(none[0].slice, 0);
    assert!(
        none[0].deps["event:frame@1"].is_empty(),
        "none does not wait for later slices"
    );
    let timeout = out.calls_of("timeout");
    assert_eq!((timeout[0].slice, timeout[0].start_ms), (0, 1000));
    assert!(timeout[0].deps["crew:slow@0"].is_empty());
    assert_eq!(out.reasons(), ["dependency_timeout"], "only 'all' gives up");
}

#[tokio::test(start_paused = true)]
async fn independent_crews_run_concurrently() {
    let out = run_default(
        &[("a", ANY), ("b", ANY)],
        &[("a", echo(1000)), ("b", echo(1000))],
        vec![ev("s", 0, "x")],
    )
    .await;
    let ends: Vec<u64> = out.calls.iter().map(|r| r.end_ms).collect();
    assert_eq!(ends, [1000, 1000]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_crew_delays_only_what_depends_on_it() {
    let out = run_default(
        &[
            ("slow", "triggers: ['*']\ncontext: {read: [], write: []}\n"),
            ("fast", ANY),
            (
                "after",
                "triggers: ['*']\nneeds: [{type: crew, crew: slow, offset: 0}]\n\
                 context: {write: []}\n",
            ),
        ],
        &[("slow", echo(5000)), ("fast", echo(10)), ("after", echo(0))],
        (0..4).map(|i| ev("s", i * 500, "e")).collect(),
    )
    .await;
    let fast = out.calls_of("fast");
    assert_eq!(fast.len(), 4);
    assert!(fast.iter().all(|r| r.end_ms <= 40), "{fast:?}");
    let after = out.calls_of("after");
    assert!(after[0].start_ms >= 5000);
}

#[tokio::test(start_paused = true)]
async fn output_order_is_stream_slice_crew_order_whatever_the_timing() {
    let events = vec![
        ev("s1", 0, "a"),
        ev("s2", 0, "b"),
        ev("s1", 100, "c"),
        ev("s1", 600, "d"),
        ev("s2", 700, "e"),
    ];
    let crews = [("zed", ANY), ("alpha", ANY)];
    let fast_zed = run_default(
        &crews,
        &[("zed", echo(1)), ("alpha", echo(300))],
        events.clone(),
    )
    .await;
    let slow_zed = run_default(&crews, &[("zed", echo(900)), ("alpha", echo(1))], events).await;
    assert_eq!(
        fast_zed.actions,
        [
            "alpha/0/a@0",
            "alpha/0/c@100",
            "zed/0/a@0",
            "zed/0/c@100",
            "alpha/0/b@0",
            "zed/0/b@0",
            "alpha/1/d@600",
            "zed/1/d@600",
            "alpha/1/e@700",
            "zed/1/e@700",
        ]
    );
    assert_eq!(fast_zed.raw_actions, slow_zed.raw_actions);
    let streams: BTreeSet<&str> = fast_zed.calls.iter().map(|r| r.stream.as_str()).collect();
    assert_eq!(streams, BTreeSet::from(["s1", "s2"]));
}

#[tokio::test(start_paused = true)]
async fn actions_are_stamped_with_the_end_of_their_slice() {
    let out = run_default(
        &[("a", ANY)],
        &[("a", echo(0))],
        vec![ev("s", 0, "x"), ev("s", 700, "y")],
    )
    .await;
    let lines: Vec<Value> = std::str::from_utf8(&out.raw_actions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[1]["ts"], "2023-11-14T22:13:21.000000Z");
    assert_eq!(lines[1]["ttl_ms"], 5000);
    assert_eq!(lines[1]["stream_id"], "s");
}

/// Counts in context key `n`: each call writes the value it saw plus one.
fn counter(ms: u64) -> Behaviour {
    Arc::new(move |call: &Call| {
        let seen = call.context.get("n").and_then(Value::as_i64).unwrap_or(0);
        (ms, Ok(output(call, Some(json!({"n": seen + 1})))))
    })
}

#[tokio::test(start_paused = true)]
async fn calls_see_the_context_committed_at_the_end_of_the_previous_slice() {
    let out = run_default(
        &[
            ("writer", ANY),
            (
                "reader",
                "triggers: ['*']\nneeds: [{type: crew, crew: writer, offset: 0}]\n",
            ),
        ],
        &[("writer", counter(10)), ("reader", echo(0))],
        vec![ev("s", 0, "x"), ev("s", 600, "y"), ev("s", 1100, "z")],
    )
    .await;
    let seen = |crew: &str| -> Vec<Value> {
        out.calls_of(crew)
            .iter()
            .map(|r| r.context.clone())
            .collect()
    };
    assert_eq!(
        seen("writer"),
        [json!({}), json!({"n": 1}), json!({"n": 2})]
    );
    // The same-slice write is not visible to the dependent crew: only next slice.
    assert_eq!(
        seen("reader"),
        [json!({}), json!({"n": 1}), json!({"n": 2})]
    );
}

#[tokio::test(start_paused = true)]
async fn conflicting_writes_are_counted_and_the_later_crew_wins() {
    let writes = |value: i64| -> Behaviour {
        Arc::new(move |call: &Call| (0, Ok(output(call, Some(json!({"k": value}))))))
    };
    let out = run_default(
        &[("a", ANY), ("b", ANY)],
        &[("a", writes(1)), ("b", writes(2))],
        vec![ev("s", 0, "x"), ev("s", 600, "y")],
    )
    .await;
    assert_eq!(out.summary.context_conflicts, 2);
    assert_eq!(out.calls_of("a")[1].context, json!({"k": 2}));
}

#[tokio::test(start_paused = true)]
async fn acl_and_size_violations_reject_patches_whole() {
    let patch = |value: Value| -> Behaviour {
        Arc::new(move |call: &Call| (0, Ok(output(call, Some(value.clone())))))
    };
    let out = run_with(
        &[
            (
                "scorer",
                "triggers: ['*']\ncontext: {read: ['*'], write: [score]}\n",
            ),
            ("bloater", ANY),
            (
                "watcher",
                "triggers: ['*']\ncontext: {read: [score], write: []}\n",
            ),
        ],
        &[
            ("scorer", patch(json!({"score": 1, "secret": 1}))),
            ("bloater", patch(json!({"blob": "x".repeat(100)}))),
            ("watcher", echo(0)),
        ],
        vec![ev("s", 0, "x"), ev("s", 600, "y")],
        GlobalConfig {
            context_max_bytes: 64,
            ..GlobalConfig::default()
        },
    )
    .await;
    let mut reasons = out.reasons();
    reasons.sort();
    assert_eq!(reasons, ["ctx_acl", "ctx_acl", "ctx_size", "ctx_size"]);
    // Each rejection counts toward the crew's max_errors, like a failed call.
    let mut counted = out.counted.clone();
    counted.sort();
    assert_eq!(
        counted,
        [
            "bloater: ctx_size",
            "bloater: ctx_size",
            "scorer: ctx_acl",
            "scorer: ctx_acl"
        ]
    );
    assert!(
        out.calls.iter().all(|r| r.context == json!({})),
        "nothing half-applied"
    );
    // The calls themselves succeeded: their actions are kept.
    assert_eq!(out.summary.actions, 6);
}

#[tokio::test(start_paused = true)]
async fn reads_are_filtered_by_context_read() {
    let out = run_default(
        &[
            ("writer", "triggers: ['*']\n"),
            (
                "reader",
                "triggers: ['*']\ncontext: {read: [score], write: []}\n",
            ),
        ],
        &[
            (
                "writer",
                Arc::new(|call: &Call| {
                    (0, Ok(output(call, Some(json!({"score": 1, "private": 2})))))
                }),
            ),
            ("reader", echo(0)),
        ],
        vec![ev("s", 0, "x"), ev("s", 600, "y")],
    )
    .await;
    assert_eq!(out.calls_of("reader")[1].context, json!({"score": 1}));
    assert_eq!(
        out.calls_of("writer")[1].context,
        json!({"score": 1, "private": 2})
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_is_reported_and_counts_as_not_run() {
    let fails: Behaviour = Arc::new(|_: &Call| {
        (
            0,
            Err(CallFailure {
                reason: FailureReason::Timeout,
                message: "crew 'flaky' missed its deadline".into(),
            }),
        )
    });
    let out = run_default(
        &[
            ("flaky", ANY),
            ("any", "triggers: ['*']\nwait_policy: any\nneeds: [{type: crew, crew: flaky, offset: 0}]\n"),
            ("ok", ANY),
        ],
        &[("flaky", fails), ("any", echo(0)), ("ok", echo(0))],
        vec![ev("s", 0, "x")],
    )
    .await;
    assert_eq!(out.reasons(), ["timeout", "dependency_timeout"]);
    assert_eq!(out.errors[0]["crew"], "flaky");
    assert_eq!(out.errors[0]["slice"], 0);
    assert_eq!(out.actions, ["ok/0/x@0"]);
    let (name, flaky) = &out.summary.crews[0];
    assert_eq!(
        (name.as_str(), flaky.calls, flaky.failures),
        ("flaky", 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn late_events_are_reported() {
    let out = run_default(
        &[("a", ANY)],
        &[("a", echo(0))],
        vec![ev("s", 0, "x"), ev("s", 600, "y"), ev("s", 100, "late")],
    )
    .await;
    assert_eq!(out.reasons(), ["late_event"]);
    assert_eq!(out.summary.late_events, 1);
    assert_eq!(out.actions, ["a/0/x@0", "a/1/y@600", "a/1/late@100"]);
}

#[tokio::test(start_paused = true)]
async fn long_inputs_keep_memory_bounded() {
    let events: Vec<Event> = (0..2000).map(|i| ev("s", i * 100, "e")).collect();
    let out = run_default(&[("a", ANY)], &[("a", echo(1))], events).await;
    assert_eq!(out.summary.actions, 2000);
    assert_eq!(out.calls.len(), 400);
}

/// Live mode (SPEC §2): slices close on the (virtual) wall clock while input stays open.
mod live {
    use super::*;
    use crate::config::LatePolicy;

    /// A live run whose input the test feeds over (virtual) time.
    struct LiveRun {
        input: MemoryFeed,
        pool_log: Arc<Mutex<Vec<Record>>>,
        errors: SharedBuf,
        actions: MemorySink,
        run: tokio::task::JoinHandle<RunSummary>,
        t0: Instant,
        metrics: Arc<Metrics>,
    }

    impl LiveRun {
        async fn start(
            crews: &[(&str, &str)],
            behaviours: &[(&str, Behaviour)],
            global: GlobalConfig,
        ) -> LiveRun {
            let dir = tempfile::tempdir().unwrap();
            for (name, yaml) in crews {
                write_crew(dir.path(), name, yaml);
            }
            let crews = Crews::load(dir.path(), &global).unwrap();
            let pool = FakePool::new(behaviours);
            let pool_log = pool.log.clone();
            let t0 = pool.t0;
            let (input, source) = MemorySource::new(2);
            let (actions, errors) = (MemorySink::default(), SharedBuf::default());
            let metrics = Arc::new(Metrics::new(global.context_max_bytes, None));
            let ports_metrics = metrics.clone();
            let (sink, error_file) = (actions.clone(), errors.clone());
            let run = tokio::spawn(async move {
                let store = MemoryStore::default();
                let ports = Ports {
                    pool: &pool,
                    store: &store,
                    source: source.without_acks(),
                    actions: sink,
                    clock: WallClock::new(global.slice_ms, global.grace_ms),
                    errors: ErrorSink::new(Some((Box::new(error_file), "<test>".into()))),
                    metrics: ports_metrics,
                    reloads: None,
                };
                run(&crews, &global, ports, None, std::future::pending())
                    .await
                    .unwrap()
            });
            LiveRun {
                input,
                pool_log,
                errors,
                actions,
                run,
                t0,
                metrics,
            }
        }

        async fn send(&self, event: Event) {
            self.input.send(vec![Ok(Arc::new(event))]).await;
        }

        /// Lets virtual time run to `ms` after the start.
        async fn until(&self, ms: u64) {
            tokio::time::sleep_until(self.t0 + Duration::from_millis(ms)).await;
        }

        /// `(crew, slice, start ms)` of the calls so far.
        fn calls(&self) -> Vec<(String, i64, u64)> {
            self.pool_log
                .lock()
                .unwrap()
                .iter()
                .map(|r| (r.crew.clone(), r.slice, r.start_ms))
                .collect()
        }

        fn reasons(&self) -> Vec<String> {
            self.errors
                .lines()
                .iter()
                .map(|e| e["reason"].as_str().unwrap().to_owned())
                .collect()
        }

        async fn finish(self) -> RunSummary {
            drop(self.input);
            self.run.await.unwrap()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slices_close_on_the_wall_clock_without_further_input() {
        let live = LiveRun::start(&[("a", ANY)], &[("a", echo(0))], GlobalConfig::default()).await;
        live.send(ev("s", 0, "x")).await;
        live.send(ev("s", 20, "y")).await;
        // Slice 0 closes at w0 + 500 + grace 50 ms, though no later event arrives.
        live.until(549).await;
        assert!(live.calls().is_empty(), "{:?}", live.calls());
        live.until(551).await;
        assert_eq!(live.calls(), [("a".to_owned(), 0, 550)]);
        // Its action is written as soon as the slice commits, input still open.
        tokio::time::sleep(Duration::from_millis(1)).await;
        for _ in 0..100 {
            if live.actions.lines().len() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(live.actions.lines().len(), 2);
        // An event 1.2 s in (by its ts, which arrives on time) runs at its slice's close.
        live.until(1200).await;
        live.send(ev("s", 1200, "z")).await;
        live.until(1600).await;
        assert_eq!(live.calls().last().unwrap(), &("a".to_owned(), 2, 1550));
        let summary = live.finish().await;
        assert_eq!(summary.actions, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_slices_tick_so_needs_on_past_slices_see_a_crew_that_did_not_run() {
        let global = GlobalConfig {
            max_wait_slices: 2,
            ..GlobalConfig::default()
        };
        let needs_a = "triggers: [y]\nneeds: [{type: crew, crew: a, offset: -1}]\n";
        let live = LiveRun::start(
            &[("a", "triggers: [x]\n"), ("b", needs_a)],
            &[("a", echo(0)), ("b", echo(0))],
            global,
        )
        .await;
        // a runs in slice 0; b, triggered in slice 1, needs a in the slice before.
        live.send(ev("s", 0, "x")).await;
        live.until(700).await;
        live.send(ev("s", 700, "y")).await;
        live.until(1060).await;
        assert_eq!(
            live.calls(),
            [("a".to_owned(), 0, 550), ("b".to_owned(), 1, 1050)]
        );
        // b again in slice 2; slices 2..4 stay empty, a does not run in them, and b's
        // trigger is given up when slice 4 closes, with no input at all.
        live.until(1200).await;
        live.send(ev("s", 1200, "y")).await;
        live.until(2549).await;
        assert!(live.reasons().is_empty(), "{:?}", live.reasons());
        live.until(2551).await;
        assert_eq!(live.reasons(), ["dependency_timeout"]);
        assert_eq!(live.errors.lines()[0]["slice"], 2);
        assert_eq!(live.calls().len(), 2);
        live.finish().await;
    }

    async fn late_event_run(
        policy: LatePolicy,
    ) -> (Vec<(String, i64, u64)>, Vec<String>, RunSummary) {
        let global = GlobalConfig {
            late_policy: policy,
            ..GlobalConfig::default()
        };
        let live = LiveRun::start(&[("a", ANY)], &[("a", echo(0))], global).await;
        live.send(ev("s", 0, "x")).await;
        // Slice 0 closed at 550; this event of slice 0 arrives at 600.
        live.until(600).await;
        live.send(ev("s", 100, "late")).await;
        live.until(1100).await;
        let (calls, reasons) = (live.calls(), live.reasons());
        (calls, reasons, live.finish().await)
    }

    #[tokio::test(start_paused = true)]
    async fn late_events_go_to_the_oldest_open_slice_or_are_dropped() {
        let (calls, reasons, summary) = late_event_run(LatePolicy::Next).await;
        assert_eq!(reasons, ["late_event"]);
        assert_eq!(summary.late_events, 1);
        assert_eq!(calls, [("a".to_owned(), 0, 550), ("a".to_owned(), 1, 1050)]);
        let (calls, reasons, summary) = late_event_run(LatePolicy::Drop).await;
        assert_eq!(reasons, ["late_event"]);
        assert_eq!(summary.late_events, 1);
        assert_eq!(calls, [("a".to_owned(), 0, 550)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_latest_crew_collapses_its_backlog_and_the_lag_shows() {
        let live = LiveRun::start(
            &[("slow", "triggers: ['*']\nbacklog_policy: latest\n")],
            &[("slow", echo(1200))],
            GlobalConfig::default(),
        )
        .await;
        for slice in 0..4 {
            live.until(slice * 500).await;
            live.send(ev("s", slice as i64 * 500, &format!("e{slice}")))
                .await;
        }
        live.until(4200).await;
        // Slice 0 runs 550..1750; slices 1 and 2 close meanwhile and collapse into one
        // run at slice 2 (1750..2950); slice 3 waits for it.
        let calls: Vec<(i64, u64)> = live.calls().iter().map(|(_, s, at)| (*s, *at)).collect();
        assert_eq!(calls, [(0, 550), (2, 1750), (3, 2950)]);
        let text = live.metrics.encode();
        // Lags: 1.2 s, 2.95 - 1.55 = 1.4 s, 4.15 - 2.05 = 2.1 s.
        assert!(
            text.contains("slice_lag_seconds_count{crew=\"slow\"} 3"),
            "{text}"
        );
        for bucket in [
            "1.024\",crew=\"slow\"} 0",
            "2.048\",crew=\"slow\"} 2",
            "4.096\",crew=\"slow\"} 3",
        ] {
            let line = format!("slice_lag_seconds_bucket{{le=\"{bucket}");
            assert!(text.contains(&line), "no {line} in {text}");
        }
        // Outside the runner (1.2 s per call): 0, then the 0.2 s and 0.9 s that slices 2
        // and 3 waited for the crew's previous call.
        for bucket in [
            "0.00025\",crew=\"slow\"} 1",
            "0.1\",crew=\"slow\"} 1",
            "0.2\",crew=\"slow\"} 2",
            "0.5\",crew=\"slow\"} 2",
            "1.0\",crew=\"slow\"} 3",
        ] {
            let line = format!("slice_host_seconds_bucket{{le=\"{bucket}");
            assert!(text.contains(&line), "no {line} in {text}");
        }
        let summary = live.finish().await;
        assert_eq!(summary.actions, 4);
    }
}

/// The ports' rule (issue 11): a delivery is acknowledged only once everything it caused
/// is durable: its slice's actions flushed by the sink, the context they lead to stored.
mod acknowledgements {
    use std::collections::HashSet;

    use super::*;
    use crate::context::{StoreError, StreamCommit};
    use crate::source::{Delivery, EventSource, SourceError};

    /// A source that takes acknowledgements, and checks at each one that the actions of
    /// every delivery it covers are durable in `sink`.
    struct CheckedSource {
        inner: MemorySource,
        sink: MemorySink,
        /// Delivery seq → the `crew/payload` of each action it causes.
        caused: HashMap<u64, Vec<String>>,
        /// `(acked through, virtual ms)` of every acknowledgement.
        acks: Arc<Mutex<Vec<(u64, u64)>>>,
        t0: Instant,
    }

    impl CheckedSource {
        fn durable_actions(&self) -> HashSet<String> {
            let log = self.sink.log.lock().unwrap();
            let text = std::str::from_utf8(&log.json_lines).unwrap();
            text.lines()
                .take(log.durable)
                .map(|line| {
                    let action: Value = serde_json::from_str(line).unwrap();
                    let (crew, payload) = (&action["crew"], &action["payload"]);
                    format!("{}/{}", crew.as_str().unwrap(), payload.as_str().unwrap())
                })
                .collect()
        }
    }

    impl EventSource for CheckedSource {
        async fn next(&mut self) -> Option<Vec<Delivery>> {
            self.inner.next().await
        }

        async fn ack_through(&mut self, seq: u64) -> Result<(), SourceError> {
            let durable = self.durable_actions();
            for (delivery, actions) in &self.caused {
                for action in actions.iter().filter(|_| *delivery <= seq) {
                    assert!(
                        durable.contains(action),
                        "acknowledged through {seq} before delivery {delivery}'s action \
                         {action} was durable"
                    );
                }
            }
            let ms = self.t0.elapsed().as_millis() as u64;
            self.acks.lock().unwrap().push((seq, ms));
            self.inner.ack_through(seq).await
        }

        fn wants_acks(&self) -> bool {
            true
        }
    }

    /// The result of a run whose deliveries are acknowledged.
    struct Acked {
        result: Result<RunSummary, RunError>,
        acks: Vec<(u64, u64)>,
        sink: MemorySink,
        store: MemoryStore,
        pool: FakePool,
    }

    /// Runs `events` (delivered as seq 1, 2, ... in order) through `crews`, whose calls
    /// make one action per event with the event's payload; `takers` names the kinds each
    /// crew is triggered by (`*`: all).
    async fn run_acked(
        crews: &[(&str, &str)],
        behaviours: &[(&str, Behaviour)],
        takers: &[(&str, &str)],
        events: Vec<Event>,
        sink: MemorySink,
        store: MemoryStore,
    ) -> Acked {
        let dir = tempfile::tempdir().unwrap();
        for (name, yaml) in crews {
            write_crew(dir.path(), name, yaml);
        }
        let global = GlobalConfig::default();
        let crews = Crews::load(dir.path(), &global).unwrap();
        let pool = FakePool::new(behaviours);
        let (input, inner) = MemorySource::new(2);
        let caused = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let payload = e.payload.get().trim_matches('"');
                let actions = takers
                    .iter()
                    .filter(|(_, kind)| *kind == "*" || *kind == e.kind)
                    .map(|(crew, _)| format!("{crew}/{payload}"))
                    .collect();
                (i as u64 + 1, actions)
            })
            .collect();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let source = CheckedSource {
            inner,
            sink: sink.clone(),
            caused,
            acks: acks.clone(),
            t0: pool.t0,
        };
        feed(input, events);
        let ports = Ports {
            pool: &pool,
            store: &store,
            source,
            actions: sink.clone(),
            clock: EventTime { reorder_slices: 0 },
            errors: ErrorSink::new(None),
            metrics: Arc::new(Metrics::new(global.context_max_bytes, None)),
            reloads: None,
        };
        let result = run(&crews, &global, ports, None, std::future::pending()).await;
        let acks = acks.lock().unwrap().clone();
        Acked {
            result,
            acks,
            sink,
            store,
            pool,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deliveries_are_acknowledged_once_their_actions_are_durable() {
        let out = run_acked(
            &[
                ("a", ANY),
                // A stride crew holds the events of slice 1 until it runs in slice 2.
                ("b", "triggers: ['*']\nslice_stride: 2\n"),
            ],
            &[("a", echo(10)), ("b", echo(30))],
            &[("a", "*"), ("b", "*")],
            vec![
                ev("s", 0, "x"),
                ev("s", 600, "y"),
                ev("t", 650, "z"),
                ev("s", 1100, "w"),
                ev("s", 1700, "v"),
            ],
            MemorySink::default(),
            MemoryStore::default(),
        )
        .await;
        out.result.unwrap();
        let through: Vec<u64> = out.acks.iter().map(|&(seq, _)| seq).collect();
        assert!(through.windows(2).all(|w| w[0] < w[1]), "{through:?}");
        assert_eq!(
            through.last(),
            Some(&5),
            "everything is acknowledged at the end"
        );
        assert!(
            through.len() > 1,
            "acknowledged as slices finish: {through:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_sink_that_fails_its_flush_gets_no_ack_and_no_context_commit() {
        let sink = MemorySink::default();
        sink.fail_flush
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let out = run_acked(
            &[("a", ANY)],
            &[("a", counter(10))],
            &[("a", "*")],
            vec![ev("s", 0, "x"), ev("s", 600, "y"), ev("s", 1200, "z")],
            sink,
            MemoryStore::default(),
        )
        .await;
        assert!(matches!(out.result, Err(RunError::Output(_))));
        assert_eq!(out.acks, [], "nothing is acknowledged");
        let Stored {
            context, revision, ..
        } = out.store.load("s").await.unwrap();
        assert_eq!((context.len(), revision), (0, 0), "nothing is committed");
        let log = out.sink.log.lock().unwrap();
        assert_eq!((log.durable, log.failed_flushes), (0, 1));
        assert!(!log.ids.is_empty(), "slice 0's actions were pushed");
    }

    #[tokio::test(start_paused = true)]
    async fn contexts_are_stored_before_their_deliveries_are_acknowledged() {
        let out = run_acked(
            &[("a", ANY)],
            &[("a", counter(10))],
            &[("a", "*")],
            vec![ev("s", 0, "x"), ev("s", 600, "y"), ev("s", 1200, "z")],
            MemorySink::default(),
            MemoryStore::default(),
        )
        .await;
        out.result.unwrap();
        let context = out.store.load("s").await.unwrap().context;
        assert_eq!(Value::Object(context), json!({"n": 3}));
        assert_eq!(out.acks.last().map(|&(seq, _)| seq), Some(3));
    }

    /// A store whose commits fail: another host got there first.
    struct LostRace;

    impl ContextStore for LostRace {
        async fn load(&self, _stream: &str) -> Result<Stored, StoreError> {
            Ok(Stored::default())
        }

        async fn commit(
            &self,
            stream: &str,
            expected: u64,
            _commit: StreamCommit<'_>,
        ) -> Result<u64, StoreError> {
            Err(StoreError::Conflict {
                stream: stream.to_owned(),
                expected,
                found: expected + 1,
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_fails_its_commit_gets_no_ack() {
        let dir = tempfile::tempdir().unwrap();
        write_crew(dir.path(), "a", ANY);
        let global = GlobalConfig::default();
        let crews = Crews::load(dir.path(), &global).unwrap();
        let pool = FakePool::new(&[("a", counter(10))]);
        let (input, source) = MemorySource::new(2);
        let acks = source.acks.clone();
        feed(input, vec![ev("s", 0, "x"), ev("s", 600, "y")]);
        let sink = MemorySink::default();
        let ports = Ports {
            pool: &pool,
            store: &LostRace,
            source,
            actions: sink.clone(),
            clock: EventTime { reorder_slices: 0 },
            errors: ErrorSink::new(None),
            metrics: Arc::new(Metrics::new(global.context_max_bytes, None)),
            reloads: None,
        };
        let result = run(&crews, &global, ports, None, std::future::pending()).await;
        assert!(matches!(result, Err(RunError::Context(_))), "{result:?}");
        assert_eq!(*acks.lock().unwrap(), Vec::<u64>::new());
        // The actions were made durable first: the commit comes after them.
        assert_eq!(sink.log.lock().unwrap().durable, 1);
    }

    /// A shared store in which another host took stream `b` before this one's first
    /// commit of it.
    #[derive(Default)]
    struct TakenStream(MemoryStore);

    impl ContextStore for TakenStream {
        async fn load(&self, stream: &str) -> Result<Stored, StoreError> {
            self.0.load(stream).await
        }

        async fn commit(
            &self,
            stream: &str,
            expected: u64,
            commit: StreamCommit<'_>,
        ) -> Result<u64, StoreError> {
            if stream == "b" {
                return Err(StoreError::Taken {
                    stream: stream.to_owned(),
                    expected,
                });
            }
            self.0.commit(stream, expected, commit).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_another_host_took_stops_here_and_the_others_go_on() {
        let dir = tempfile::tempdir().unwrap();
        write_crew(dir.path(), "a", ANY);
        let global = GlobalConfig::default();
        let crews = Crews::load(dir.path(), &global).unwrap();
        let pool = FakePool::new(&[("a", counter(10))]);
        let (input, source) = MemorySource::new(2);
        let acks = source.acks.clone();
        let sink = MemorySink::default();
        let errors = SharedBuf::default();
        let store = TakenStream::default();
        let ports = Ports {
            pool: &pool,
            store: &store,
            source,
            actions: sink.clone(),
            clock: EventTime { reorder_slices: 0 },
            errors: ErrorSink::new(Some((Box::new(errors.clone()), "<test>".into()))),
            metrics: Arc::new(Metrics::new(global.context_max_bytes, None)),
            reloads: None,
        };
        let events = |ms: i64| {
            vec![
                Ok(Arc::new(ev("a", ms, "x"))),
                Ok(Arc::new(ev("b", ms, "x"))),
            ]
        };
        let feeding = async {
            input.send([events(0), events(600)].concat()).await;
            // Slice 0 of both streams runs and commits; `b`'s commit finds it taken.
            tokio::time::sleep(Duration::from_millis(100)).await;
            input.send([events(1200), events(1800)].concat()).await;
            drop(input);
        };
        let (summary, ()) = tokio::join!(
            run(&crews, &global, ports, None, std::future::pending()),
            feeding
        );
        let summary = summary.unwrap();
        let records = errors.lines();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["reason"], "stream_taken");
        assert_eq!(records[0]["stream_id"], "b");
        assert_eq!(records[0]["slice"], 0);
        assert_eq!(summary.run_errors(), 1);
        let runs: Vec<(String, i64)> = pool
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|r| (r.stream.clone(), r.slice))
            .collect();
        let of = |stream: &str| -> Vec<i64> {
            let mut slices: Vec<i64> = runs
                .iter()
                .filter(|(s, _)| s == stream)
                .map(|&(_, slice)| slice)
                .collect();
            slices.sort();
            slices
        };
        assert_eq!(of("a"), [0, 1, 2, 3], "stream a runs to its end");
        assert_eq!(of("b"), [0], "stream b stops at the commit it lost");
        let context = store.0.load("a").await.unwrap().context;
        assert_eq!(Value::Object(context), json!({"n": 4}));
        // `b`'s later events do not hold back the acknowledgement of `a`'s.
        assert_eq!(acks.lock().unwrap().last(), Some(&8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_holds_the_ack_of_the_events_it_took() {
        let out = run_acked(
            &[("fast", ANY), ("slow", "triggers: [x]\n")],
            &[("fast", echo(1)), ("slow", echo(1000))],
            &[("fast", "*"), ("slow", "x")],
            vec![ev("s", 0, "x"), ev("s", 600, "y"), ev("s", 1200, "z")],
            MemorySink::default(),
            MemoryStore::default(),
        )
        .await;
        out.result.unwrap();
        let slow_done = out
            .pool
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.crew == "slow")
            .map(|r| r.end_ms)
            .unwrap();
        let (first, at) = out.acks[0];
        assert!(
            first >= 1 && at >= slow_done,
            "acked {first} at {at} ms, slow crew done at {slow_done} ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn live_slices_are_acknowledged_as_the_wall_clock_closes_them() {
        let dir = tempfile::tempdir().unwrap();
        write_crew(dir.path(), "a", ANY);
        let global = GlobalConfig::default();
        let crews = Crews::load(dir.path(), &global).unwrap();
        let pool = FakePool::new(&[("a", echo(10))]);
        let t0 = pool.t0;
        let (input, source) = MemorySource::new(2);
        let acks = source.acks.clone();
        let sink = MemorySink::default();
        let durable = sink.clone();
        let run = tokio::spawn(async move {
            let store = MemoryStore::default();
            let ports = Ports {
                pool: &pool,
                store: &store,
                source,
                actions: sink,
                clock: WallClock::new(global.slice_ms, global.grace_ms),
                errors: ErrorSink::new(None),
                metrics: Arc::new(Metrics::new(global.context_max_bytes, None)),
                reloads: None,
            };
            run(&crews, &global, ports, None, std::future::pending())
                .await
                .unwrap()
        });
        input.send(vec![Ok(Arc::new(ev("s", 0, "x")))]).await;
        // Slice 0 closes on the wall clock at 500 + 50 ms; the call takes 10 ms.
        tokio::time::sleep_until(t0 + Duration::from_millis(500)).await;
        assert_eq!(*acks.lock().unwrap(), Vec::<u64>::new(), "slice 0 is open");
        tokio::time::sleep_until(t0 + Duration::from_millis(700)).await;
        assert_eq!(*acks.lock().unwrap(), [1], "slice 0 is durable");
        assert_eq!(durable.log.lock().unwrap().durable, 1);
        input.send(vec![Ok(Arc::new(ev("s", 0, "y")))]).await;
        drop(input);
        run.await.unwrap();
        assert_eq!(acks.lock().unwrap().last(), Some(&2));
    }
}
