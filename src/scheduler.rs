//! The scheduler (SPEC §4, batch mode): decides which crew runs in which slice with which
//! events and dependency data, calls crews through a [`CrewPool`], commits context patches
//! at slice end and emits actions in a deterministic order.
//!
//! One task owns all state; calls run concurrently as spawned tasks and report back.
//! Per stream and crew, a *lane* walks the closed slices in order. At each slice it
//! collects trigger events, and a pending trigger (a *bundle*) either runs there, moves
//! on to the next slice (needs not met), or waits for a dependency's outcome. Everything
//! the lanes decide depends only on the input and on call outcomes, never on timing
//! (except `wait_policy: timeout`), so a replay gives the same output byte for byte.
//! `docs/DESIGN.md` explains the choices where SPEC is silent.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::calls::{CallFailure, CallOutcome, CrewPool};
use crate::config::{
    BacklogPolicy, Crews, GlobalConfig, KeySet, Need, OverflowPolicy, Triggers, WaitPolicy,
};
use crate::context::{self, ContextStore, Patch, StoreError};
use crate::input::InputItem;
use crate::live::LiveClock;
use crate::metrics::{Metrics, RunMetrics};
use crate::model::{SharedAction, SharedEvent, Timestamp};
use crate::output::{ActionSink, CrewStats, ErrorRecord, ErrorSink, OutputError, RunSummary};
use crate::protocol::{Call, DepItems, JsonObject};
use crate::slicer::{END, Sliced, Slicer, slice_start};

/// A run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Context(#[from] StoreError),
}

/// How slices close (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On input: a later slice's event closes earlier slices.
    Batch,
    /// `live-crew replay --from-timestamp`: batch mode that runs only the slices that
    /// start at or after this time. Earlier events still fix their stream's epoch0, so
    /// slice numbers match the recorded run's.
    ReplayFrom(Timestamp),
    /// On the wall clock ([`crate::live`]); actions are flushed as each slice commits.
    Live,
}

/// Where a run's actions, error records and metrics go.
pub struct Outputs {
    pub actions: ActionSink,
    pub errors: ErrorSink,
    pub metrics: Arc<Metrics>,
}

/// Runs `input` to its end, drives every crew through `pool`, and writes actions and
/// error records. Returns what happened; errors of crews and input are in the summary,
/// not in the `Result`.
pub async fn run<P: CrewPool, S: ContextStore>(
    crews: &Crews,
    global: &GlobalConfig,
    pool: &P,
    store: &S,
    input: mpsc::Receiver<Vec<InputItem>>,
    outputs: Outputs,
    mode: Mode,
) -> Result<RunSummary, RunError> {
    let started = std::time::Instant::now();
    let mut scheduler = Scheduler::new(crews, global, pool, store, outputs, mode);
    scheduler.drive(input).await?;
    let skipped_events = scheduler.slicer.skipped();
    let Scheduler {
        actions,
        errors,
        mut summary,
        stats,
        crews,
        ..
    } = scheduler;
    actions.finish().await?;
    summary.errors = errors.counts().clone();
    errors.finish()?;
    summary.crews = crews
        .into_iter()
        .map(|c| c.name.to_string())
        .zip(stats)
        .collect();
    summary.skipped_events = skipped_events;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// A crew as the scheduler uses it: needs resolved to crew indexes in run order.
struct Plan {
    name: Arc<str>,
    triggers: Triggers,
    needs: Vec<PlanNeed>,
    wait_policy: WaitPolicy,
    stride: i64,
    backlog: BacklogPolicy,
    timeout_ms: u64,
    read: KeySet,
    write: KeySet,
    reads: bool,
    writes: bool,
    /// Slices after its run slice at whose end the crew's patch applies: a crew that
    /// looks ahead really runs once those slices closed (and this breaks the loop of a
    /// look-ahead on a crew that waits for this crew's context).
    patch_delay: i64,
}

struct PlanNeed {
    /// `crew:<name>@<k>` or `event:<kind>@<k>`.
    key: String,
    offset: i64,
    target: NeedTarget,
}

enum NeedTarget {
    Crew(usize),
    Event(String),
}

fn is_empty(keys: &KeySet) -> bool {
    matches!(keys, KeySet::Keys(keys) if keys.is_empty())
}

impl Plan {
    fn from_crews(crews: &Crews) -> Vec<Plan> {
        let index: HashMap<&str, usize> = crews
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        crews
            .as_slice()
            .iter()
            .map(|spec| Plan {
                name: spec.name.as_str().into(),
                triggers: spec.triggers.clone(),
                needs: spec
                    .needs
                    .iter()
                    .map(|need| PlanNeed {
                        key: need.deps_key(),
                        offset: need.offset(),
                        target: match need {
                            Need::Crew { crew, .. } => NeedTarget::Crew(index[crew.as_str()]),
                            Need::Event { kind, .. } => NeedTarget::Event(kind.clone()),
                        },
                    })
                    .collect(),
                wait_policy: spec.wait_policy,
                stride: i64::try_from(spec.slice_stride).unwrap_or(i64::MAX),
                backlog: spec.backlog_policy,
                timeout_ms: spec.timeout_ms,
                read: spec.context.read.clone(),
                write: spec.context.write.clone(),
                reads: !is_empty(&spec.context.read),
                writes: !is_empty(&spec.context.write),
                patch_delay: match spec.wait_policy {
                    WaitPolicy::None => 0,
                    _ => spec
                        .needs
                        .iter()
                        .map(Need::offset)
                        .max()
                        .unwrap_or(0)
                        .max(0),
                },
            })
            .collect()
    }
}

/// A trigger (or several merged ones) waiting for the slice it can run in.
struct Bundle {
    /// The slice it was triggered in.
    slice: i64,
    events: Vec<SharedEvent>,
    /// For `wait_policy: timeout`.
    deadline: Option<Instant>,
}

enum RunState {
    /// Decided, not yet sent: waits for its context snapshot or (`latest`) a free crew.
    Queued {
        events: Vec<SharedEvent>,
        deps: BTreeMap<String, DepItems>,
    },
    InFlight,
    Done(Option<Vec<SharedAction>>),
}

struct Run {
    state: RunState,
    patch: Option<JsonObject>,
}

/// One crew in one stream.
struct Lane {
    /// The slice this lane is at; every slice below is decided.
    pos: i64,
    /// Whether `pos`'s trigger events have been collected.
    took: bool,
    /// Trigger events not yet taken by a stride boundary.
    pending_events: Vec<SharedEvent>,
    bundle: Option<Bundle>,
    runs: BTreeMap<i64, Run>,
    /// Slices of runs not yet done.
    unfinished: BTreeSet<i64>,
    /// Slices of queued runs, oldest first.
    queued: VecDeque<i64>,
}

impl Lane {
    fn new(pos: i64) -> Lane {
        Lane {
            pos,
            took: false,
            pending_events: Vec::new(),
            bundle: None,
            runs: BTreeMap::new(),
            unfinished: BTreeSet::new(),
            queued: VecDeque::new(),
        }
    }

    /// Every slice below this one is final for this crew.
    fn final_until(&self) -> i64 {
        self.unfinished
            .first()
            .map_or(self.pos, |&s| s.min(self.pos))
    }

    /// The crew's outcome in slice `t`: `None` while unknown, `Some(None)` if it did not
    /// run or failed, `Some(Some(actions))` if it completed.
    fn outcome(&self, t: i64) -> Option<Option<&Vec<SharedAction>>> {
        if t >= self.pos {
            return None;
        }
        match self.runs.get(&t).map(|run| &run.state) {
            None | Some(RunState::Done(None)) => Some(None),
            Some(RunState::Done(Some(actions))) => Some(Some(actions)),
            Some(_) => None,
        }
    }

    fn advance(&mut self, to: i64) {
        self.pos = to;
        self.took = false;
    }
}

struct StreamState {
    name: Arc<str>,
    epoch0: Timestamp,
    /// Slices below are closed.
    watermark: i64,
    /// Closed non-empty slices still needed.
    slices: BTreeMap<i64, Vec<SharedEvent>>,
    lanes: Vec<Lane>,
    /// Patches of slices below are committed.
    committed_until: i64,
    revision: u64,
    /// Context snapshots by the first slice that sees them.
    snapshots: BTreeMap<i64, Arc<JsonObject>>,
    /// Actions of slices below are written.
    emitted_until: i64,
    /// Below this, history has been dropped.
    collected_below: i64,
}

impl StreamState {
    fn finished_until(&self) -> i64 {
        self.lanes
            .iter()
            .map(Lane::final_until)
            .fold(self.watermark, i64::min)
    }

    fn snapshot(&self, slice: i64) -> &Arc<JsonObject> {
        self.snapshots
            .range(..=slice)
            .next_back()
            .map(|(_, ctx)| ctx)
            .expect("the initial snapshot covers every slice")
    }
}

/// What a lane does at its slice.
enum Decision {
    Run(BTreeMap<String, DepItems>),
    /// Needs not met here; try the next slice.
    Later,
    Wait,
}

struct Completion {
    stream: usize,
    crew: usize,
    slice: i64,
    outcome: CallOutcome,
    elapsed: Duration,
}

struct Scheduler<'a, P, S> {
    crews: Vec<Plan>,
    pool: &'a P,
    store: &'a S,
    slicer: Slicer,
    slice_us: i64,
    max_wait: i64,
    context_max_bytes: usize,
    /// Most negative need offset (<= 0): how much history lanes may look at.
    look_back: i64,
    max_patch_delay: i64,
    /// Closed slices a stream may hold before input pauses.
    window: usize,
    /// `max_events_per_slice` and `slice_overflow`, for overflow reports.
    slice_cap: (usize, OverflowPolicy),
    stream_index: HashMap<Arc<str>, usize>,
    streams: Vec<StreamState>,
    /// Closed slice ranges in the order the input closed them: the order of output.
    close_log: VecDeque<(usize, i64)>,
    calls: JoinSet<Completion>,
    deadlines: BTreeSet<(Instant, usize, usize)>,
    /// Calls in flight per crew (`backlog_policy: latest` sends one at a time).
    in_flight: Vec<u32>,
    next_call_id: u64,
    actions: ActionSink,
    errors: ErrorSink,
    summary: RunSummary,
    stats: Vec<CrewStats>,
    /// Live mode: when slices close.
    live: Option<LiveClock>,
    metrics: RunMetrics,
}

impl<'a, P: CrewPool, S: ContextStore> Scheduler<'a, P, S> {
    fn new(
        crews: &Crews,
        global: &GlobalConfig,
        pool: &'a P,
        store: &'a S,
        outputs: Outputs,
        mode: Mode,
    ) -> Self {
        let Outputs {
            actions,
            mut errors,
            metrics,
        } = outputs;
        errors.count_into(metrics.clone());
        let plans = Plan::from_crews(crews);
        let offsets = || plans.iter().flat_map(|p| p.needs.iter().map(|n| n.offset));
        let look_back = offsets().min().unwrap_or(0).min(0);
        let look_ahead = offsets().max().unwrap_or(0).max(0);
        let max_wait = i64::try_from(global.max_wait_slices).unwrap_or(i64::MAX);
        let reorder = usize::try_from(global.reorder_slices).unwrap_or(usize::MAX);
        let window = 16usize
            .saturating_add(usize::try_from(max_wait + look_ahead - look_back).unwrap_or(0))
            .saturating_add(reorder);
        let max_patch_delay = plans.iter().map(|p| p.patch_delay).max().unwrap_or(0);
        let replay_from = match mode {
            Mode::ReplayFrom(from) => Some(from),
            Mode::Batch | Mode::Live => None,
        };
        let (slicer, live) = match mode {
            Mode::Batch | Mode::ReplayFrom(_) => (
                Slicer::new(global.slice_ms, global.reorder_slices, global.late_policy)
                    .with_cap(global.max_events_per_slice, global.slice_overflow)
                    .skipping_slices_before(replay_from),
                None,
            ),
            Mode::Live => (
                Slicer::live(global.slice_ms, global.late_policy)
                    .with_cap(global.max_events_per_slice, global.slice_overflow),
                Some(LiveClock::new(global.slice_ms, global.grace_ms)),
            ),
        };
        let metrics = RunMetrics::new(metrics, plans.iter().map(|p| &*p.name));
        Scheduler {
            in_flight: vec![0; plans.len()],
            stats: vec![CrewStats::default(); plans.len()],
            crews: plans,
            pool,
            store,
            slice_us: slicer.slice_us(),
            slicer,
            max_wait,
            context_max_bytes: global.context_max_bytes,
            look_back,
            max_patch_delay,
            window,
            slice_cap: (global.max_events_per_slice, global.slice_overflow),
            stream_index: HashMap::new(),
            streams: Vec::new(),
            close_log: VecDeque::new(),
            calls: JoinSet::new(),
            deadlines: BTreeSet::new(),
            next_call_id: 1,
            actions,
            errors,
            summary: RunSummary::default(),
            live,
            metrics,
        }
    }

    async fn drive(&mut self, mut input: mpsc::Receiver<Vec<InputItem>>) -> Result<(), RunError> {
        let mut input_done = false;
        let mut dirty: BTreeSet<usize> = BTreeSet::new();
        loop {
            for stream in std::mem::take(&mut dirty) {
                self.pump(stream).await?;
            }
            self.emit();
            if self.live.is_some() {
                self.actions.flush().await;
                self.errors.flush()?;
            } else {
                self.actions.flush_if_full().await;
            }
            if self.actions.is_closed() {
                tracing::info!("output closed; stopping");
                return Ok(());
            }
            if input_done && self.calls.is_empty() {
                if self.close_log.is_empty() {
                    return Ok(());
                }
                if self.deadlines.is_empty() {
                    // Nothing can move any more: give up the triggers that still wait.
                    dirty.extend(self.drop_waiting_bundles()?);
                    continue;
                }
            }
            let idle = self.calls.is_empty() && self.deadlines.is_empty();
            let take_input = !input_done && (idle || !self.window_full());
            let next_deadline = self.deadlines.first().map(|(at, _, _)| *at);
            let next_close = self.live.as_ref().and_then(LiveClock::next_close);
            tokio::select! {
                biased;
                Some(done) = self.calls.join_next(), if !self.calls.is_empty() => {
                    let done = done.expect("call tasks do not panic");
                    dirty.extend(self.complete(done)?);
                }
                // Before input: a busy feed must not delay a slice's close.
                () = wait_for_close(self.live.as_ref(), next_close), if next_close.is_some() && !input_done => {
                    self.close_due_slices(&mut dirty).await?;
                }
                batch = input.recv(), if take_input => match batch {
                    Some(items) => {
                        for item in items {
                            self.accept(item, &mut dirty).await?;
                        }
                    }
                    None => {
                        input_done = true;
                        let mut closed = Vec::new();
                        self.slicer.finish(&mut closed);
                        for sliced in closed {
                            self.sliced(sliced, &mut dirty).await?;
                        }
                    }
                },
                () = sleep_until(next_deadline), if next_deadline.is_some() => {
                    let now = Instant::now();
                    while let Some(&(at, stream, _)) = self.deadlines.first() {
                        if at > now {
                            break;
                        }
                        self.deadlines.pop_first();
                        dirty.insert(stream);
                    }
                }
            }
        }
    }

    /// Live mode: closes every slice whose wall-clock time has come.
    async fn close_due_slices(&mut self, dirty: &mut BTreeSet<usize>) -> Result<(), RunError> {
        let Some(clock) = &mut self.live else {
            return Ok(());
        };
        let now = Instant::now();
        for due in clock.due(now) {
            self.metrics.metrics().slice_closed_after(now - due.due);
            if let Some(closed) = self.slicer.close_below(&due.stream, due.upto) {
                self.sliced(closed, dirty).await?;
            }
        }
        Ok(())
    }

    fn window_full(&self) -> bool {
        self.streams.iter().any(|s| s.slices.len() > self.window)
    }

    async fn accept(
        &mut self,
        item: InputItem,
        dirty: &mut BTreeSet<usize>,
    ) -> Result<(), RunError> {
        match item {
            Ok(event) => {
                self.summary.events += 1;
                self.metrics.event(&event.stream_id);
                if let Some(clock) = &mut self.live {
                    clock.saw(&event.stream_id);
                }
                let mut out = Vec::new();
                self.slicer.push(event, &mut out);
                for sliced in out {
                    self.sliced(sliced, dirty).await?;
                }
            }
            Err(error) => {
                self.errors.report(ErrorRecord {
                    ts: None,
                    stream_id: None,
                    slice: None,
                    crew: None,
                    reason: "invalid_event",
                    message: format!("{error}; the event was skipped"),
                    line: Some(error.line),
                    index: error.index,
                })?;
            }
        }
        Ok(())
    }

    async fn sliced(
        &mut self,
        sliced: Sliced,
        dirty: &mut BTreeSet<usize>,
    ) -> Result<(), RunError> {
        match sliced {
            Sliced::Closed {
                stream,
                epoch0,
                from,
                upto,
                slices,
                overflowed,
            } => {
                for (slice, count) in overflowed {
                    self.report_overflow(&stream, epoch0, slice, count)?;
                }
                let id = match self.stream_index.get(&stream) {
                    Some(&id) => id,
                    None => self.open_stream(stream, epoch0, from).await?,
                };
                let state = &mut self.streams[id];
                state.watermark = upto;
                self.summary.slices += slices.len() as u64;
                state.slices.extend(slices);
                self.close_log.push_back((id, upto));
                dirty.insert(id);
            }
            Sliced::Late {
                event,
                slice,
                placed,
            } => {
                self.summary.late_events += 1;
                self.metrics.metrics().late_event();
                let outcome = match placed {
                    Some(open) => format!("placed into slice {open} (late_policy: next)"),
                    None => "dropped (late_policy: drop)".into(),
                };
                self.errors.report(ErrorRecord {
                    ts: Some(event.ts),
                    stream_id: Some(event.stream_id.clone()),
                    slice: Some(slice),
                    crew: None,
                    reason: "late_event",
                    message: format!(
                        "event '{}' at {} belongs to slice {slice}, which is already closed; \
                         {outcome}. Sort the input or raise reorder_slices",
                        event.kind, event.ts
                    ),
                    line: None,
                    index: None,
                })?;
            }
        }
        Ok(())
    }

    /// `count` events of a stream's slice went over `max_events_per_slice`: one record
    /// for the slice, however large the flood.
    fn report_overflow(
        &mut self,
        stream: &str,
        epoch0: Timestamp,
        slice: i64,
        count: u64,
    ) -> Result<(), RunError> {
        self.summary.overflowed_events += count;
        self.metrics.metrics().events_overflowed(count);
        let (max, policy) = self.slice_cap;
        let outcome = match policy {
            OverflowPolicy::Drop => "dropped (slice_overflow: drop)",
            OverflowPolicy::Collapse => {
                "merged into the newest kept event of their kind, or dropped where the slice \
                 has none (slice_overflow: collapse)"
            }
        };
        self.errors.report(ErrorRecord {
            ts: Some(slice_start(epoch0, self.slice_us, slice.saturating_add(1))),
            stream_id: Some(stream.to_owned()),
            slice: Some(slice),
            crew: None,
            reason: "slice_overflow",
            message: format!("{count} events over max_events_per_slice ({max}) were {outcome}"),
            line: None,
            index: None,
        })?;
        Ok(())
    }

    async fn open_stream(
        &mut self,
        name: Arc<str>,
        epoch0: Timestamp,
        first: i64,
    ) -> Result<usize, RunError> {
        let (context, revision) = self.store.load(&name).await?;
        let any_writer = self.crews.iter().any(|c| c.writes);
        let id = self.streams.len();
        self.streams.push(StreamState {
            name: name.clone(),
            epoch0,
            watermark: first,
            slices: BTreeMap::new(),
            lanes: self.crews.iter().map(|_| Lane::new(first)).collect(),
            committed_until: if any_writer { first } else { END },
            revision,
            snapshots: BTreeMap::from([(i64::MIN, Arc::new(context))]),
            emitted_until: first,
            collected_below: first,
        });
        self.stream_index.insert(name, id);
        Ok(id)
    }

    fn slice_end(&self, stream: usize, slice: i64) -> Timestamp {
        slice_start(
            self.streams[stream].epoch0,
            self.slice_us,
            slice.saturating_add(1),
        )
    }

    /// Moves lanes as far as they go, commits what is final, and sends ready calls.
    async fn pump(&mut self, stream: usize) -> Result<(), RunError> {
        loop {
            let mut progress = false;
            for crew in 0..self.crews.len() {
                while self.step(stream, crew)? {
                    progress = true;
                    // Send at once, so only runs that really wait can collapse (`latest`).
                    self.dispatch(stream, crew);
                }
            }
            if !progress {
                break;
            }
        }
        self.commit(stream).await?;
        for crew in 0..self.crews.len() {
            self.dispatch(stream, crew);
        }
        Ok(())
    }

    /// One step of a lane; false if it has to wait.
    fn step(&mut self, stream: usize, crew: usize) -> Result<bool, RunError> {
        let plan = &self.crews[crew];
        let state = &mut self.streams[stream];
        let lane = &mut state.lanes[crew];
        let slice = lane.pos;
        if slice >= state.watermark {
            return Ok(false);
        }
        if !lane.took {
            lane.took = true;
            if let Some(events) = state.slices.get(&slice) {
                lane.pending_events.extend(
                    events
                        .iter()
                        .filter(|e| plan.triggers.matches(&e.kind))
                        .cloned(),
                );
            }
            if slice.rem_euclid(plan.stride) == 0 && !lane.pending_events.is_empty() {
                let events = std::mem::take(&mut lane.pending_events);
                match &mut lane.bundle {
                    Some(bundle) => bundle.events.extend(events),
                    None => {
                        let deadline = match plan.wait_policy {
                            WaitPolicy::Timeout(ms) => {
                                Some(Instant::now() + Duration::from_millis(ms))
                            }
                            _ => None,
                        };
                        lane.bundle = Some(Bundle {
                            slice,
                            events,
                            deadline,
                        });
                    }
                }
            }
        }
        let Some(bundle) = &lane.bundle else {
            let next = next_slice(state, crew, plan.stride, slice);
            state.lanes[crew].advance(next);
            return Ok(true);
        };
        let (trigger, deadline) = (bundle.slice, bundle.deadline);
        match decide(plan, state, slice, deadline) {
            Decision::Wait => {
                if let Some(at) = deadline {
                    self.deadlines.insert((at, stream, crew));
                }
                Ok(false)
            }
            Decision::Run(deps) => {
                let lane = &mut state.lanes[crew];
                let mut events = lane.bundle.take().expect("checked above").events;
                if plan.backlog == BacklogPolicy::Latest
                    && let Some(&older) = lane.queued.back()
                {
                    // Collapse the queued run into this one: it did not run after all.
                    lane.queued.pop_back();
                    lane.unfinished.remove(&older);
                    if let Some(Run {
                        state:
                            RunState::Queued {
                                events: mut earlier,
                                ..
                            },
                        ..
                    }) = lane.runs.remove(&older)
                    {
                        earlier.append(&mut events);
                        events = earlier;
                    }
                }
                lane.runs.insert(
                    slice,
                    Run {
                        state: RunState::Queued { events, deps },
                        patch: None,
                    },
                );
                lane.unfinished.insert(slice);
                lane.queued.push_back(slice);
                lane.advance(slice.saturating_add(1));
                Ok(true)
            }
            Decision::Later if slice - trigger < self.max_wait => {
                state.lanes[crew].advance(slice + 1);
                Ok(true)
            }
            Decision::Later => {
                let lane = &mut state.lanes[crew];
                let dropped = lane.bundle.take().map_or(0, |b| b.events.len());
                lane.advance(slice + 1);
                let keys: Vec<&str> = plan.needs.iter().map(|n| n.key.as_str()).collect();
                let record = ErrorRecord {
                    ts: Some(self.slice_end(stream, slice)),
                    stream_id: Some(self.streams[stream].name.to_string()),
                    slice: Some(trigger),
                    crew: Some(plan.name.to_string()),
                    reason: "dependency_timeout",
                    message: format!(
                        "crew '{}' was triggered in slice {trigger} but its needs ({}) were not \
                         met by slice {slice} (max_wait_slices: {}); {dropped} events dropped",
                        plan.name,
                        keys.join(", "),
                        self.max_wait
                    ),
                    line: None,
                    index: None,
                };
                self.errors.report(record)?;
                Ok(true)
            }
        }
    }

    /// Applies the patches of every slice all writers are final for, in crew order.
    async fn commit(&mut self, stream: usize) -> Result<(), RunError> {
        let state = &mut self.streams[stream];
        let frontier = self
            .crews
            .iter()
            .zip(&state.lanes)
            .filter(|(plan, _)| plan.writes)
            .map(|(plan, lane)| lane.final_until().saturating_add(plan.patch_delay))
            .fold(state.watermark, i64::min);
        if frontier <= state.committed_until {
            return Ok(());
        }
        let mut patches: BTreeMap<i64, Vec<(usize, JsonObject)>> = BTreeMap::new();
        for (crew, lane) in state.lanes.iter_mut().enumerate() {
            let delay = self.crews[crew].patch_delay;
            let runs = state.committed_until.saturating_sub(delay)..frontier.saturating_sub(delay);
            for (&slice, run) in lane.runs.range_mut(runs) {
                if let Some(patch) = run.patch.take() {
                    patches
                        .entry(slice + delay)
                        .or_default()
                        .push((crew, patch));
                }
            }
        }
        state.committed_until = frontier;
        for (slice, patches) in patches {
            let state = &self.streams[stream];
            let list: Vec<Patch<'_>> = patches
                .iter()
                .map(|(crew, patch)| Patch {
                    crew: &self.crews[*crew].name,
                    write: &self.crews[*crew].write,
                    patch,
                })
                .collect();
            let (_, current) = state.snapshots.last_key_value().expect("never empty");
            let commit = context::commit_slice(current, &list, self.context_max_bytes);
            self.summary.context_conflicts += commit.conflicts;
            let ts = self.slice_end(stream, slice);
            for (i, error) in commit.rejected {
                let crew = &self.crews[patches[i].0].name;
                let message = format!("{error}; the patch was rejected");
                self.pool.count_failure(
                    crew,
                    CallFailure {
                        reason: error.reason(),
                        message: format!("crew '{crew}': {message}"),
                    },
                );
                self.errors.report(ErrorRecord {
                    ts: Some(ts),
                    stream_id: Some(state.name.to_string()),
                    slice: Some(slice),
                    crew: Some(crew.to_string()),
                    reason: error.reason().as_str(),
                    message,
                    line: None,
                    index: None,
                })?;
            }
            if let Some(context) = commit.context {
                let state = &mut self.streams[stream];
                let bytes = context::serialised_len(&context);
                self.metrics.metrics().context_bytes(&state.name, bytes);
                state.revision = self
                    .store
                    .commit(&state.name, state.revision, &context)
                    .await?;
                state.snapshots.insert(slice + 1, Arc::new(context));
            }
        }
        Ok(())
    }

    /// Sends a crew's queued runs whose context snapshot is committed (and, for `latest`
    /// crews, while the crew is free).
    fn dispatch(&mut self, stream: usize, crew: usize) {
        {
            let plan = &self.crews[crew];
            let state = &mut self.streams[stream];
            while let Some(&slice) = state.lanes[crew].queued.front() {
                let latest = plan.backlog == BacklogPolicy::Latest;
                if (plan.reads && state.committed_until < slice)
                    || (latest && self.in_flight[crew] > 0)
                {
                    break;
                }
                state.lanes[crew].queued.pop_front();
                let run = state.lanes[crew]
                    .runs
                    .get_mut(&slice)
                    .expect("queued runs exist");
                let RunState::Queued { events, deps } =
                    std::mem::replace(&mut run.state, RunState::InFlight)
                else {
                    unreachable!("only queued runs are in the queue")
                };
                let call = Call {
                    id: self.next_call_id,
                    stream_id: state.name.to_string(),
                    slice,
                    slice_start: slice_start(state.epoch0, self.slice_us, slice),
                    slice_end: slice_start(state.epoch0, self.slice_us, slice + 1),
                    events,
                    context: context::readable(state.snapshot(slice), &plan.read),
                    deps,
                    deadline_ms: plan.timeout_ms,
                };
                self.next_call_id += 1;
                self.in_flight[crew] += 1;
                let pending = self.pool.call(&plan.name, call);
                self.calls.spawn(async move {
                    let started = Instant::now();
                    let outcome = pending.await;
                    Completion {
                        stream,
                        crew,
                        slice,
                        outcome,
                        elapsed: started.elapsed(),
                    }
                });
            }
        }
    }

    /// Records a call's outcome; returns the streams that may move on.
    fn complete(&mut self, done: Completion) -> Result<Vec<usize>, RunError> {
        let Completion {
            stream,
            crew,
            slice,
            outcome,
            elapsed,
        } = done;
        let ts = self.slice_end(stream, slice);
        let lag = self.live.as_ref().and_then(|clock| {
            let closed = clock.close_time(&self.streams[stream].name, slice)?;
            Some(Instant::now().saturating_duration_since(closed))
        });
        let runner_time = outcome.as_ref().ok().map(|output| output.runner_time);
        self.metrics.call_done(crew, elapsed, runner_time, lag);
        if let (Some(lag), Some(runner_time)) = (lag, runner_time) {
            // Per call, for exact percentiles where the histograms only bound them
            // (benches/live_feed.py); off unless this target is at debug.
            tracing::debug!(
                target: "live_crew::lag",
                crew = %self.crews[crew].name,
                stream = %self.streams[stream].name,
                slice,
                lag_ms = lag.as_secs_f64() * 1000.0,
                runner_ms = runner_time.as_secs_f64() * 1000.0,
                "slice lag"
            );
        }
        let plan = &self.crews[crew];
        let stats = &mut self.stats[crew];
        stats.calls += 1;
        stats.durations_us.push(elapsed.as_micros() as u64);
        self.in_flight[crew] -= 1;
        let state = &mut self.streams[stream];
        let result = outcome.map(|output| {
            let actions: Vec<SharedAction> = output
                .actions
                .into_iter()
                .map(|proposed| Arc::new(proposed.into_action(&plan.name, &state.name, slice, ts)))
                .collect();
            (actions, output.context_patch)
        });
        let lane = &mut state.lanes[crew];
        lane.unfinished.remove(&slice);
        let run = lane.runs.get_mut(&slice).expect("completed runs exist");
        match result {
            Ok((actions, patch)) => {
                self.summary.actions += actions.len() as u64;
                run.state = RunState::Done(Some(actions));
                run.patch = patch.filter(|p| !p.is_empty());
            }
            Err(failure) => {
                run.state = RunState::Done(None);
                stats.failures += 1;
                let record = ErrorRecord {
                    ts: Some(ts),
                    stream_id: Some(state.name.to_string()),
                    slice: Some(slice),
                    crew: Some(plan.name.to_string()),
                    reason: failure.reason.as_str(),
                    message: failure.message,
                    line: None,
                    index: None,
                };
                self.errors.report(record)?;
            }
        }
        let mut dirty = vec![stream];
        if plan.backlog == BacklogPolicy::Latest {
            // The crew is free: its queued runs in other streams may go.
            dirty.extend(
                (0..self.streams.len())
                    .filter(|&s| s != stream && !self.streams[s].lanes[crew].queued.is_empty()),
            );
        }
        Ok(dirty)
    }

    /// Writes the actions of finished slices, following the order the input closed them.
    fn emit(&mut self) {
        while let Some(&(stream, upto)) = self.close_log.front() {
            let state = &mut self.streams[stream];
            let finished = state.finished_until();
            let end = finished.min(upto);
            if end > state.emitted_until {
                let from = state.emitted_until;
                let slices: BTreeSet<i64> = state
                    .lanes
                    .iter()
                    .flat_map(|lane| lane.runs.range(from..end).map(|(s, _)| *s))
                    .collect();
                for slice in slices {
                    for lane in &state.lanes {
                        if let Some(Run {
                            state: RunState::Done(Some(actions)),
                            ..
                        }) = lane.runs.get(&slice)
                        {
                            self.metrics
                                .actions(actions.iter().map(|a| a.kind.as_str()));
                            for action in actions {
                                self.actions.push(action);
                            }
                        }
                    }
                }
                state.emitted_until = end;
                collect_garbage(state, self.look_back, self.max_patch_delay);
            }
            if finished < upto {
                break;
            }
            self.close_log.pop_front();
        }
    }

    /// Drops every trigger that still waits; used when nothing else can happen.
    fn drop_waiting_bundles(&mut self) -> Result<Vec<usize>, RunError> {
        let mut dirty = Vec::new();
        for stream in 0..self.streams.len() {
            for crew in 0..self.crews.len() {
                let lane = &mut self.streams[stream].lanes[crew];
                let Some(bundle) = lane.bundle.take() else {
                    continue;
                };
                let slice = lane.pos;
                lane.advance(slice.saturating_add(1));
                dirty.push(stream);
                self.errors.report(ErrorRecord {
                    ts: Some(self.slice_end(stream, slice)),
                    stream_id: Some(self.streams[stream].name.to_string()),
                    slice: Some(bundle.slice),
                    crew: Some(self.crews[crew].name.to_string()),
                    reason: "dependency_timeout",
                    message: format!(
                        "crew '{}' was triggered in slice {} but its needs can no longer be \
                         met at the end of input; {} events dropped",
                        self.crews[crew].name,
                        bundle.slice,
                        bundle.events.len()
                    ),
                    line: None,
                    index: None,
                })?;
            }
        }
        Ok(dirty)
    }
}

async fn wait_for_close(clock: Option<&LiveClock>, at: Option<Instant>) {
    match (clock, at) {
        (Some(clock), Some(at)) => clock.wait_until(at).await,
        _ => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where a lane without a pending trigger goes next: the next slice with events, or the
/// next stride boundary if it holds trigger events below one.
fn next_slice(state: &StreamState, crew: usize, stride: i64, slice: i64) -> i64 {
    let after = slice.saturating_add(1);
    let next_events = state
        .slices
        .range(after..)
        .next()
        .map_or(state.watermark, |(s, _)| *s);
    if state.lanes[crew].pending_events.is_empty() {
        return next_events;
    }
    let boundary = after.saturating_add((stride - after.rem_euclid(stride)) % stride);
    next_events.min(boundary)
}

/// Whether a lane's pending trigger runs in `slice` (SPEC §4 wait policies).
fn decide(plan: &Plan, state: &StreamState, slice: i64, deadline: Option<Instant>) -> Decision {
    let mut deps = BTreeMap::new();
    let (mut met, mut unmet, mut unknown) = (0, 0, 0);
    for need in &plan.needs {
        let t = slice.saturating_add(need.offset);
        // `none` never waits for later slices: their data does not exist yet.
        let skip = plan.wait_policy == WaitPolicy::None && need.offset > 0;
        let outcome = match &need.target {
            _ if skip => Some(None),
            NeedTarget::Crew(dep) => state.lanes[*dep]
                .outcome(t)
                .map(|actions| actions.map(|a| DepItems::Actions(a.clone()))),
            NeedTarget::Event(kind) => (t < state.watermark).then(|| {
                let events: Vec<SharedEvent> = state
                    .slices
                    .get(&t)
                    .into_iter()
                    .flatten()
                    .filter(|e| &e.kind == kind)
                    .cloned()
                    .collect();
                (!events.is_empty()).then_some(DepItems::Events(events))
            }),
        };
        let empty = || match need.target {
            NeedTarget::Crew(_) => DepItems::Actions(Vec::new()),
            NeedTarget::Event(_) => DepItems::Events(Vec::new()),
        };
        match outcome {
            Some(Some(items)) => {
                met += 1;
                deps.insert(need.key.clone(), items);
            }
            Some(None) => {
                unmet += 1;
                deps.insert(need.key.clone(), empty());
            }
            None => {
                unknown += 1;
                deps.insert(need.key.clone(), empty());
            }
        }
    }
    match plan.wait_policy {
        WaitPolicy::All if unmet > 0 => Decision::Later,
        WaitPolicy::Any if unknown == 0 && met == 0 && unmet > 0 => Decision::Later,
        WaitPolicy::Timeout(_)
            if unknown > 0 && deadline.is_some_and(|at| Instant::now() >= at) =>
        {
            Decision::Run(deps)
        }
        _ if unknown > 0 => Decision::Wait,
        _ => Decision::Run(deps),
    }
}

/// Forgets slices, runs and snapshots no lane or commit can look at any more.
fn collect_garbage(state: &mut StreamState, look_back: i64, max_patch_delay: i64) {
    let uncommitted = state.committed_until.saturating_sub(max_patch_delay);
    let low = state
        .lanes
        .iter()
        .map(Lane::final_until)
        .fold(state.emitted_until.min(uncommitted), i64::min);
    let keep_from = low.saturating_add(look_back).saturating_sub(1);
    if keep_from <= state.collected_below {
        return;
    }
    state.collected_below = keep_from;
    state.slices = state.slices.split_off(&keep_from);
    for lane in &mut state.lanes {
        lane.runs = lane.runs.split_off(&keep_from);
    }
    let newer = state.snapshots.split_off(&keep_from.saturating_add(1));
    let base = state
        .snapshots
        .pop_last()
        .expect("the initial snapshot is never dropped");
    state.snapshots = newer;
    state.snapshots.entry(base.0).or_insert(base.1);
}

#[cfg(test)]
mod tests;
