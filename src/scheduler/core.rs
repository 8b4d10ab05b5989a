//! The scheduler's decisions (SPEC §4, §5), without I/O: which crew runs in which slice
//! with which events and dependency data, when a slice's context is committed, and in
//! which order actions come out.
//!
//! Per stream and crew, a *lane* walks the closed slices in order. At each slice it
//! collects trigger events, and a pending trigger (a *bundle*) either runs there, moves
//! on to the next slice (needs not met), or waits for a dependency's outcome. Everything
//! the lanes decide depends only on the input and on call outcomes, never on timing
//! (except `wait_policy: timeout`), so a replay gives the same output byte for byte.
//!
//! The shell (`mod.rs`) feeds the core events and call outcomes and carries out what the
//! core leaves in its [`Outbox`]: calls to send, error records, contexts to store.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::acks::Holds;
use super::decide::{Decision, decide, next_slice};
use super::lane::{Bundle, Lane, Run, RunState};
use super::plan::Plan;
use super::records::{self, At};
use super::stream::StreamState;
use crate::config::{BacklogPolicy, Crews, GlobalConfig, OverflowPolicy, WaitPolicy};
use crate::context::{self, Patch};
use crate::model::{Action, ActionId, JsonObject, SharedAction, SharedEvent, Timestamp};
use crate::ops::metrics::Metrics;
use crate::ops::recent::{CallRecord, CallState};
use crate::ops::run_metrics::RunMetrics;
use crate::pool::{CallFailure, CallOutcome, FailureReason};
use crate::protocol::{Call, call_id};
use crate::sink::{CrewStats, ErrorRecord, RunSummary};
use crate::slicer::{END, Sliced, Slicer, slice_start};
use crate::source::InputError;

/// What the core asks the shell to do, in the order it decided it.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) records: Vec<ErrorRecord>,
    pub(super) calls: Vec<CallRequest>,
    /// Failures to count toward a crew's `max_errors` after its call had succeeded.
    pub(super) failures: Vec<(usize, CallFailure)>,
    /// Streams' state to store, each once the actions of the slices it covers are pushed.
    pub(super) writes: Vec<ContextWrite>,
}

pub(super) struct CallRequest {
    pub(super) stream: usize,
    pub(super) crew: usize,
    pub(super) slice: i64,
    pub(super) call: Call,
}

/// A stream's state after its slices up to `last_slice`, whose actions are all pushed.
pub(super) struct ContextWrite {
    pub(super) stream: usize,
    pub(super) epoch0: Timestamp,
    pub(super) last_slice: i64,
    /// The context after `last_slice`.
    pub(super) context: Arc<JsonObject>,
    /// Whether the context changed since the stream's last write.
    pub(super) changed: bool,
    /// Every delivery of this stream up to this sequence is durable with it (0 without
    /// acknowledgements).
    pub(super) events_through: u64,
}

/// A call's outcome, as the shell hands it back.
pub(super) struct Completion {
    pub(super) stream: usize,
    pub(super) crew: usize,
    pub(super) slice: i64,
    pub(super) outcome: CallOutcome,
    /// From dispatch to outcome.
    pub(super) elapsed: Duration,
    /// Live mode: from the slice's wall-clock close to the outcome.
    pub(super) lag: Option<Duration>,
}

pub(super) struct Core {
    /// By crew index: a crew keeps its index for the whole run, through hot reloads.
    plans: Vec<Plan>,
    crew_index: HashMap<Arc<str>, usize>,
    /// Retired crews (hot reload) whose last runs are not done yet.
    draining: BTreeSet<usize>,
    slicer: Slicer,
    slice_us: i64,
    max_wait: i64,
    context_max_bytes: usize,
    /// Most negative need offset (<= 0): how much history lanes may look at.
    look_back: i64,
    max_patch_delay: i64,
    /// Closed slices a stream may hold before input pauses.
    window: usize,
    /// Slices by which input may be out of order (from the clock).
    reorder: usize,
    /// `max_events_per_slice` and `slice_overflow`, for overflow reports.
    slice_cap: (usize, OverflowPolicy),
    stream_ids: HashMap<Arc<str>, usize>,
    streams: Vec<StreamState>,
    /// Closed slice ranges in the order the input closed them: the order of output.
    close_log: VecDeque<(usize, i64)>,
    /// `wait_policy: timeout` triggers: when each may run with what it has.
    deadlines: BTreeSet<(Instant, usize, usize)>,
    /// Calls in flight per crew (`backlog_policy: latest` sends one at a time).
    in_flight: Vec<u32>,
    next_call_id: u64,
    summary: RunSummary,
    stats: Vec<CrewStats>,
    metrics: RunMetrics,
    /// Which deliveries are still needed, for sources that take acknowledgements.
    holds: Option<Holds>,
    /// Calls slower than this are logged at info (`slow_call_ms`).
    slow_call: Duration,
    pub(super) out: Outbox,
}

impl Core {
    /// `reorder_slices` comes from the clock (event time tolerates disorder by slices,
    /// the wall clock by `grace_ms`); `replay_from` leaves out the slices before it;
    /// `track_acks` keeps count of which deliveries are still needed.
    pub(super) fn new(
        crews: &Crews,
        global: &GlobalConfig,
        reorder_slices: u64,
        replay_from: Option<Timestamp>,
        metrics: Arc<Metrics>,
        track_acks: bool,
    ) -> Core {
        let plans = Plan::from_crews(crews);
        let max_wait = i64::try_from(global.max_wait_slices).unwrap_or(i64::MAX);
        let reorder = usize::try_from(reorder_slices).unwrap_or(usize::MAX);
        let slicer = Slicer::new(global.slice_ms, reorder_slices, global.late_policy)
            .with_cap(global.max_events_per_slice, global.slice_overflow)
            .skipping_slices_before(replay_from);
        let names: Vec<&str> = plans.iter().map(|p| &*p.name).collect();
        metrics.zero_errors(records::known_labels(&names));
        let metrics = RunMetrics::new(metrics, names);
        let mut core = Core {
            in_flight: vec![0; plans.len()],
            stats: vec![CrewStats::default(); plans.len()],
            crew_index: (plans.iter().enumerate())
                .map(|(crew, plan)| (plan.name.clone(), crew))
                .collect(),
            draining: BTreeSet::new(),
            plans,
            slice_us: slicer.slice_us(),
            slicer,
            max_wait,
            context_max_bytes: global.context_max_bytes,
            look_back: 0,
            max_patch_delay: 0,
            window: 0,
            reorder,
            slice_cap: (global.max_events_per_slice, global.slice_overflow),
            stream_ids: HashMap::new(),
            streams: Vec::new(),
            close_log: VecDeque::new(),
            deadlines: BTreeSet::new(),
            next_call_id: 1,
            summary: RunSummary::default(),
            metrics,
            holds: track_acks.then(Holds::default),
            slow_call: Duration::from_millis(global.slow_call_ms),
            out: Outbox::default(),
        };
        core.widen_reach();
        core
    }

    /// Grows how far lanes look back and ahead, and how long patches are held, to cover
    /// every plan; never shrinks them, so what a plan of before still holds stays.
    fn widen_reach(&mut self) {
        let offsets = || (self.plans.iter()).flat_map(|p| p.needs.iter().map(|n| n.offset));
        let look_back = offsets().min().unwrap_or(0).min(0);
        let look_ahead = offsets().max().unwrap_or(0).max(0);
        let window = 16usize
            .saturating_add(usize::try_from(self.max_wait + look_ahead - look_back).unwrap_or(0))
            .saturating_add(self.reorder);
        let max_patch_delay = self.plans.iter().map(|p| p.patch_delay).max().unwrap_or(0);
        self.look_back = self.look_back.min(look_back);
        self.window = self.window.max(window);
        self.max_patch_delay = self.max_patch_delay.max(max_patch_delay);
    }

    /// Takes a new version of the crews folder (hot reload, SPEC §15) from here on. A
    /// crew it keeps gets its new plan for the slices its lanes have not reached, with
    /// its lanes (triggers taken, runs, outcomes) kept; a new crew starts at each
    /// stream's next slice to close; a crew gone from it is retired: its waiting
    /// triggers are dropped, and what it runs already finishes, commits and is emitted.
    /// Crews keep their indexes for the whole run (a new one is appended, a returning
    /// one takes its old place), so calls in flight and the order of output stay as
    /// they were. Returns the streams that may move.
    pub(super) fn reconfigure(&mut self, crews: &Crews) -> Vec<usize> {
        let mut next = self.plans.len();
        let index: HashMap<&str, usize> = (crews.as_slice().iter())
            .map(|spec| {
                let crew = self.crew_index.get(spec.name.as_str()).copied();
                let crew = crew.unwrap_or_else(|| {
                    next += 1;
                    next - 1
                });
                (spec.name.as_str(), crew)
            })
            .collect();
        for spec in crews.as_slice() {
            let crew = index[spec.name.as_str()];
            let plan = Plan::from_spec(spec, &index);
            if crew == self.plans.len() {
                self.add_crew(plan);
            } else {
                self.draining.remove(&crew);
                self.plans[crew] = plan;
            }
        }
        for crew in 0..self.plans.len() {
            if !index.contains_key(&*self.plans[crew].name) && !self.plans[crew].retired {
                self.retire(crew);
            }
        }
        self.widen_reach();
        let any_writer = self.plans.iter().any(|plan| plan.writes);
        for state in &mut self.streams {
            if any_writer && state.committed_until == END {
                // No crew wrote until now: every closed slice is committed as it is.
                state.committed_until = state.watermark;
            }
        }
        (0..self.streams.len()).collect()
    }

    fn add_crew(&mut self, plan: Plan) {
        self.metrics.add_crew(&plan.name);
        (self.metrics.metrics()).zero_errors(records::known_labels(&[&plan.name]));
        for state in &mut self.streams {
            state.lanes.push(Lane::new(state.watermark));
        }
        self.in_flight.push(0);
        self.stats.push(CrewStats::default());
        self.crew_index.insert(plan.name.clone(), self.plans.len());
        self.plans.push(plan);
    }

    fn retire(&mut self, crew: usize) {
        self.plans[crew].retire();
        self.draining.insert(crew);
        self.deadlines.retain(|&(_, _, c)| c != crew);
        for state in &mut self.streams {
            let lane = &mut state.lanes[crew];
            let bundled = lane.bundle.take().map_or(0, |b| b.events.len());
            let dropped = lane.pending_events.len() + bundled;
            lane.pending_events.clear();
            lane.pending_since = None;
            if dropped > 0 {
                tracing::info!(
                    crew = %self.plans[crew].name,
                    stream = %state.name,
                    dropped,
                    "hot reload: the crew is gone; {dropped} trigger events it had not run are dropped"
                );
            }
        }
    }

    /// Retired crews whose last runs are done, each once: the pool may stop them.
    pub(super) fn take_drained(&mut self) -> Vec<Arc<str>> {
        let drained: Vec<usize> = (self.draining.iter().copied())
            .filter(|&crew| {
                self.in_flight[crew] == 0
                    && (self.streams.iter()).all(|state| state.lanes[crew].unfinished.is_empty())
            })
            .collect();
        for crew in &drained {
            self.draining.remove(crew);
        }
        (drained.into_iter())
            .map(|crew| self.plans[crew].name.clone())
            .collect()
    }

    pub(super) fn crew_name(&self, crew: usize) -> &Arc<str> {
        &self.plans[crew].name
    }

    pub(super) fn stream_name(&self, stream: usize) -> &Arc<str> {
        &self.streams[stream].name
    }

    /// The index of a stream seen before: the one lookup by name an event costs.
    pub(super) fn stream_id(&self, name: &str) -> Option<usize> {
        self.stream_ids.get(name).copied()
    }

    /// A new stream whose slices count from `epoch0` and whose committed context is
    /// `context`; with `resume_after`, its slices up to that one were committed by an
    /// earlier host and it goes on after them. Returns its index.
    pub(super) fn open_stream(
        &mut self,
        name: Arc<str>,
        epoch0: Timestamp,
        context: JsonObject,
        resume_after: Option<i64>,
    ) -> usize {
        let first = match resume_after {
            Some(last) => last.saturating_add(1),
            None => self.slicer.first_slice(),
        };
        let id = self.slicer.open_stream(name.clone(), epoch0, first);
        let context = Arc::new(context);
        let any_writer = self.plans.iter().any(|c| c.writes);
        self.streams.push(StreamState {
            name: name.clone(),
            epoch0,
            watermark: first,
            slices: BTreeMap::new(),
            lanes: self.plans.iter().map(|_| Lane::new(first)).collect(),
            committed_until: if any_writer { first } else { END },
            snapshots: BTreeMap::from([(i64::MIN, context.clone())]),
            written: context.clone(),
            written_until: first,
            written_seq: 0,
            unwritten_actions: 0,
            emitted_until: first,
            collected_below: first,
            last_closed: first - 1,
            given_up: false,
        });
        self.metrics.stream_opened(&name);
        self.stream_ids.insert(name, id);
        id
    }

    /// Files delivery `seq`, an event of `stream`; with `close_on_input`, it closes the
    /// slices it leaves behind.
    pub(super) fn accept(
        &mut self,
        stream: usize,
        seq: u64,
        event: SharedEvent,
        close_on_input: bool,
        dirty: &mut BTreeSet<usize>,
    ) {
        if self.streams[stream].given_up {
            self.skip(stream, seq);
            return;
        }
        self.summary.events += 1;
        self.metrics.event(stream);
        let mut out = Vec::new();
        let filed = self.slicer.push(stream, event, close_on_input, &mut out);
        if let Some(holds) = &mut self.holds {
            match filed {
                Some(slice) => holds.hold(stream, slice, seq),
                None => holds.delivered(seq),
            }
        }
        for sliced in out {
            self.sliced(sliced, dirty);
        }
    }

    /// Delivery `seq` of `stream` was committed by an earlier host already: it only
    /// counts as done.
    pub(super) fn skip(&mut self, stream: usize, seq: u64) {
        if let Some(holds) = &mut self.holds {
            holds.done_already(stream, seq);
        }
    }

    /// Delivery `seq` was not a valid event.
    pub(super) fn reject(&mut self, seq: u64, error: InputError) {
        if let Some(holds) = &mut self.holds {
            holds.delivered(seq);
        }
        self.out.records.push(records::invalid_event(error));
    }

    /// The wall clock closed `stream`'s slices below `upto`, `late` after they were due.
    pub(super) fn close_below(
        &mut self,
        stream: usize,
        upto: i64,
        late: Duration,
        dirty: &mut BTreeSet<usize>,
    ) {
        self.metrics.metrics().slice_closed_after(late);
        if let Some(closed) = self.slicer.close_below(stream, upto) {
            self.sliced(closed, dirty);
        }
    }

    /// The input ended (or a stop was asked for): every open slice closes.
    pub(super) fn finish_input(&mut self, dirty: &mut BTreeSet<usize>) {
        let mut closed = Vec::new();
        self.slicer.finish(&mut closed);
        for sliced in closed {
            self.sliced(sliced, dirty);
        }
    }

    fn sliced(&mut self, sliced: Sliced, dirty: &mut BTreeSet<usize>) {
        match sliced {
            Sliced::Closed {
                stream,
                epoch0,
                upto,
                slices,
                overflowed,
                ..
            } => {
                if self.streams[stream].given_up {
                    return;
                }
                for (slice, count) in overflowed {
                    self.report_overflow(stream, epoch0, slice, count);
                }
                let state = &mut self.streams[stream];
                state.watermark = upto;
                if let Some(&(last, _)) = slices.last() {
                    state.last_closed = state.last_closed.max(last);
                }
                self.summary.slices += slices.len() as u64;
                state.slices.extend(slices);
                self.close_log.push_back((stream, upto));
                dirty.insert(stream);
            }
            Sliced::Late {
                event,
                slice,
                placed,
            } => {
                self.summary.late_events += 1;
                self.metrics.metrics().late_event();
                self.out
                    .records
                    .push(records::late_event(&event, slice, placed));
            }
        }
    }

    /// `count` events of a stream's slice went over `max_events_per_slice`: one record
    /// for the slice, however large the flood.
    fn report_overflow(&mut self, stream: usize, epoch0: Timestamp, slice: i64, count: u64) {
        self.summary.overflowed_events += count;
        self.metrics.metrics().events_overflowed(count);
        let (max, policy) = self.slice_cap;
        let at = At {
            stream: &self.streams[stream].name,
            slice,
            crew: None,
            ts: slice_start(epoch0, self.slice_us, slice.saturating_add(1)),
        };
        let record = records::slice_overflow(at, count, max, policy);
        self.out.records.push(record);
    }

    /// Whether a stream holds so many closed slices that input should pause.
    pub(super) fn window_full(&self) -> bool {
        self.streams.iter().any(|s| s.slices.len() > self.window)
    }

    /// Whether every closed slice has been written.
    pub(super) fn all_emitted(&self) -> bool {
        self.close_log.is_empty()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _, _)| *at)
    }

    /// `wait_policy: timeout` triggers whose time has come: their streams may move.
    pub(super) fn deadlines_passed(&mut self, now: Instant, dirty: &mut BTreeSet<usize>) {
        while let Some(&(at, stream, _)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            dirty.insert(stream);
        }
    }

    fn slice_end(&self, stream: usize, slice: i64) -> Timestamp {
        slice_start(
            self.streams[stream].epoch0,
            self.slice_us,
            slice.saturating_add(1),
        )
    }

    /// Moves lanes as far as they go, commits what is final, and sends ready calls.
    pub(super) fn pump(&mut self, stream: usize, now: Instant) {
        if self.streams[stream].given_up {
            return;
        }
        loop {
            let mut progress = false;
            for crew in 0..self.plans.len() {
                while self.step(stream, crew, now) {
                    progress = true;
                    // Send at once, so only runs that really wait can collapse (`latest`).
                    self.dispatch(stream, crew);
                }
            }
            if !progress {
                break;
            }
        }
        self.commit(stream);
        for crew in 0..self.plans.len() {
            self.dispatch(stream, crew);
        }
    }

    /// One step of a lane; false if it has to wait.
    fn step(&mut self, stream: usize, crew: usize, now: Instant) -> bool {
        let plan = &self.plans[crew];
        let state = &mut self.streams[stream];
        let lane = &mut state.lanes[crew];
        let slice = lane.pos;
        if slice >= state.watermark {
            return false;
        }
        if !lane.took {
            lane.took = true;
            if let Some(events) = state.slices.get(&slice) {
                let before = lane.pending_events.len();
                lane.pending_events.extend(
                    events
                        .iter()
                        .filter(|e| plan.triggers.matches(&e.kind))
                        .cloned(),
                );
                if lane.pending_events.len() > before {
                    lane.pending_since.get_or_insert(slice);
                }
            }
            if slice.rem_euclid(plan.stride) == 0 && !lane.pending_events.is_empty() {
                let events = std::mem::take(&mut lane.pending_events);
                let since = lane.pending_since.take().unwrap_or(slice);
                match &mut lane.bundle {
                    Some(bundle) => bundle.events.extend(events),
                    None => {
                        let deadline = match plan.wait_policy {
                            WaitPolicy::Timeout(ms) => Some(now + Duration::from_millis(ms)),
                            _ => None,
                        };
                        lane.bundle = Some(Bundle {
                            slice,
                            events,
                            since,
                            deadline,
                        });
                    }
                }
            }
        }
        let Some(bundle) = &lane.bundle else {
            let next = next_slice(state, crew, plan.stride, slice);
            state.lanes[crew].advance(next);
            return true;
        };
        let (trigger, deadline) = (bundle.slice, bundle.deadline);
        match decide(plan, state, slice, deadline, now) {
            Decision::Wait => {
                if let Some(at) = deadline {
                    self.deadlines.insert((at, stream, crew));
                }
                false
            }
            Decision::Run(deps) => {
                let lane = &mut state.lanes[crew];
                let bundle = lane.bundle.take().expect("checked above");
                let (mut events, mut since) = (bundle.events, bundle.since);
                if plan.backlog == BacklogPolicy::Latest
                    && let Some(&older) = lane.queued.back()
                {
                    // Collapse the queued run into this one: it did not run after all.
                    let superseded = skipped(&state.name, &plan.name, older, "superseded");
                    self.metrics.metrics().recent_calls().push(superseded);
                    lane.queued.pop_back();
                    lane.unfinished.remove(&older);
                    if let Some((_, older_since)) = lane.holding.pop_back() {
                        since = since.min(older_since);
                    }
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
                lane.holding.push_back((slice, since));
                lane.advance(slice.saturating_add(1));
                true
            }
            Decision::Later if slice - trigger < self.max_wait => {
                state.lanes[crew].advance(slice + 1);
                true
            }
            Decision::Later => {
                let lane = &mut state.lanes[crew];
                let dropped = lane.bundle.take().map_or(0, |b| b.events.len());
                lane.advance(slice + 1);
                let needs: Vec<&str> = plan.needs.iter().map(|n| n.key.as_str()).collect();
                let at = At {
                    stream: &state.name,
                    slice: trigger,
                    crew: Some(&plan.name),
                    ts: slice_start(state.epoch0, self.slice_us, slice.saturating_add(1)),
                };
                let record = records::needs_not_met(at, slice, &needs, self.max_wait, dropped);
                let call = skipped(&state.name, &plan.name, trigger, record.reason);
                self.metrics.metrics().recent_calls().push(call);
                self.out.records.push(record);
                true
            }
        }
    }

    /// Applies the patches of every slice all writers are final for, in crew order.
    fn commit(&mut self, stream: usize) {
        let state = &mut self.streams[stream];
        let frontier = self
            .plans
            .iter()
            .zip(&state.lanes)
            .filter(|(plan, _)| plan.writes)
            .map(|(plan, lane)| lane.final_until().saturating_add(plan.patch_delay))
            .fold(state.watermark, i64::min);
        if frontier <= state.committed_until {
            return;
        }
        let mut patches: BTreeMap<i64, Vec<(usize, JsonObject)>> = BTreeMap::new();
        for (crew, lane) in state.lanes.iter_mut().enumerate() {
            let delay = self.plans[crew].patch_delay;
            // From the longest delay: a crew whose delay a hot reload shortened may hold
            // a patch from before the usual start.
            let from = state.committed_until.saturating_sub(self.max_patch_delay);
            for (&slice, run) in lane.runs.range_mut(from..frontier.saturating_sub(delay)) {
                if let Some(patch) = run.patch.take() {
                    let at = (slice + delay).max(state.committed_until);
                    patches.entry(at).or_default().push((crew, patch));
                }
            }
        }
        state.committed_until = frontier;
        for (slice, patches) in patches {
            let state = &self.streams[stream];
            let list: Vec<Patch<'_>> = patches
                .iter()
                .map(|(crew, patch)| Patch {
                    crew: &self.plans[*crew].name,
                    write: &self.plans[*crew].write,
                    patch,
                })
                .collect();
            let (_, current) = state.snapshots.last_key_value().expect("never empty");
            let commit = context::commit_slice(current, &list, self.context_max_bytes);
            self.summary.context_conflicts += commit.conflicts;
            let ts = self.slice_end(stream, slice);
            for (i, error) in commit.rejected {
                let crew = patches[i].0;
                let name = &self.plans[crew].name;
                let at = At {
                    stream: &state.name,
                    slice,
                    crew: Some(name),
                    ts,
                };
                let record = records::patch_rejected(at, &error);
                self.out.failures.push((
                    crew,
                    CallFailure {
                        reason: error.reason(),
                        message: format!("crew '{name}': {}", record.message),
                    },
                ));
                self.out.records.push(record);
            }
            if let Some(context) = commit.context {
                let state = &mut self.streams[stream];
                let bytes = context::serialised_len(&context);
                self.metrics.metrics().context_bytes(&state.name, bytes);
                state.snapshots.insert(slice + 1, Arc::new(context));
            }
        }
        self.release_write(stream);
    }

    /// Hands the store the stream's state after the slices whose actions are pushed,
    /// when there is something new in it: a changed context, actions, or events.
    fn release_write(&mut self, stream: usize) {
        let events_through = self
            .holds
            .as_ref()
            .map_or(0, |holds| holds.stream_done_through(stream));
        let state = &mut self.streams[stream];
        let through = state.emitted_until.min(state.committed_until);
        if through <= state.written_until {
            return;
        }
        let context = state.snapshot(through).clone();
        let changed = !Arc::ptr_eq(&context, &state.written);
        let news = changed || state.unwritten_actions > 0 || events_through > state.written_seq;
        state.written_until = through;
        if !news {
            // An empty slice of an idle stream: nothing a store needs to know.
            return;
        }
        state.written = context.clone();
        state.written_seq = events_through;
        state.unwritten_actions = 0;
        let last_slice = if through == END {
            state.last_closed
        } else {
            through - 1
        };
        self.out.writes.push(ContextWrite {
            stream,
            epoch0: state.epoch0,
            last_slice,
            context,
            changed,
            events_through,
        });
    }

    /// Sends a crew's queued runs whose context snapshot is committed (and, for `latest`
    /// crews, while the crew is free).
    fn dispatch(&mut self, stream: usize, crew: usize) {
        let plan = &self.plans[crew];
        let state = &mut self.streams[stream];
        while let Some(&slice) = state.lanes[crew].queued.front() {
            let latest = plan.backlog == BacklogPolicy::Latest;
            if (plan.reads && state.committed_until < slice) || (latest && self.in_flight[crew] > 0)
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
                call_id: call_id(&state.name, slice, &plan.name),
                stream_id: state.name.to_string(),
                slice,
                slice_start: slice_start(state.epoch0, self.slice_us, slice),
                slice_end: slice_start(state.epoch0, self.slice_us, slice + 1),
                events,
                context: context::readable(state.snapshot(slice), &plan.read),
                deps,
                // The one place a call's deadline is set; the pool holds the call to it.
                deadline_ms: plan.timeout_ms,
            };
            self.next_call_id += 1;
            self.in_flight[crew] += 1;
            self.out.calls.push(CallRequest {
                stream,
                crew,
                slice,
                call,
            });
        }
    }

    /// Records a call's outcome; returns the streams that may move on.
    pub(super) fn complete(&mut self, done: Completion) -> Vec<usize> {
        let Completion {
            stream,
            crew,
            slice,
            outcome,
            elapsed,
            lag,
        } = done;
        let ts = self.slice_end(stream, slice);
        // The call's LLM use, for its record and the summary; the metrics have it from
        // the gateway that made the requests.
        let llm = outcome.as_ref().ok().and_then(|output| {
            (!output.llm.is_empty()).then(|| {
                let tokens = output
                    .llm
                    .iter()
                    .map(|u| u.prompt_tokens + u.completion_tokens);
                let cost = output.llm.iter().map(|u| u.cost_usd);
                (tokens.sum::<u64>(), cost.sum::<f64>())
            })
        });
        self.log_call(
            stream,
            crew,
            slice,
            elapsed,
            lag,
            outcome.as_ref().err(),
            llm,
        );
        let runner_time = outcome.as_ref().ok().map(|output| output.runner_time);
        self.metrics.call_done(crew, elapsed, runner_time, lag);
        if let Some((tokens, cost)) = llm {
            let stats = &mut self.stats[crew];
            stats.llm_tokens += tokens;
            stats.llm_cost_usd += cost;
        }
        if let (Some(lag), Some(runner_time)) = (lag, runner_time) {
            // Per call, for exact percentiles where the histograms only bound them
            // (benches/live_feed.py); off unless this target is at debug.
            tracing::debug!(
                target: "live_crew::lag",
                crew = %self.plans[crew].name,
                stream = %self.streams[stream].name,
                slice,
                lag_ms = lag.as_secs_f64() * 1000.0,
                call_ms = elapsed.as_secs_f64() * 1000.0,
                runner_ms = runner_time.as_secs_f64() * 1000.0,
                "slice lag"
            );
        }
        let plan = &self.plans[crew];
        let stats = &mut self.stats[crew];
        stats.calls += 1;
        // The time the runner had the call, where it answered: not the wait for a
        // runner to start, or behind the crew's earlier calls.
        let took = runner_time.unwrap_or(elapsed);
        stats.durations_us.push(took.as_micros() as u64);
        self.in_flight[crew] -= 1;
        let mut dirty = vec![stream];
        if plan.backlog == BacklogPolicy::Latest {
            // The crew is free: its queued runs in other streams may go.
            dirty.extend((0..self.streams.len()).filter(|&s| {
                let other = &self.streams[s];
                s != stream && !other.given_up && !other.lanes[crew].queued.is_empty()
            }));
        }
        let state = &mut self.streams[stream];
        if state.given_up {
            // Its outcome goes nowhere: another host runs this slice.
            return dirty;
        }
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
                let at = At {
                    stream: &state.name,
                    slice,
                    crew: Some(&plan.name),
                    ts,
                };
                self.out.records.push(records::call_failed(at, failure));
            }
        }
        dirty
    }

    /// One record per finished call (SPEC §8): at info when it failed or was slow; with
    /// the tokens and USD its LLM requests used (`llm`), if it made any. In live mode,
    /// a call that answers more than a slice after its slice closed (`lag`) is late.
    #[allow(clippy::too_many_arguments)]
    fn log_call(
        &self,
        stream: usize,
        crew: usize,
        slice: i64,
        took: Duration,
        lag: Option<Duration>,
        failure: Option<&CallFailure>,
        llm: Option<(u64, f64)>,
    ) {
        let (stream, crew) = (&self.streams[stream].name, &self.plans[crew].name);
        let t_ms = took.as_secs_f64() * 1000.0;
        let (llm_tokens, llm_cost_usd) = (llm.map(|(t, _)| t), llm.map(|(_, c)| c));
        let slice_length = Duration::from_micros(self.slice_us.unsigned_abs());
        let state = match failure.map(|failure| failure.reason) {
            Some(FailureReason::Budget) => CallState::Skipped,
            Some(_) => CallState::Failed,
            None if lag.is_some_and(|lag| lag > slice_length) => CallState::Late,
            None => CallState::Ran,
        };
        self.metrics.metrics().recent_calls().push(CallRecord {
            stream: stream.clone(),
            slice,
            crew: crew.clone(),
            state,
            t_ms,
            lag_ms: lag.map(|lag| lag.as_secs_f64() * 1000.0),
            reason: failure.map(|failure| failure.reason.as_str()),
            llm_tokens,
            llm_cost_usd,
        });
        let (stream, crew) = (&**stream, &**crew);
        match failure {
            Some(failure) => tracing::info!(
                stream,
                slice,
                crew,
                t_ms,
                reason = %failure.reason,
                "call failed"
            ),
            None if took >= self.slow_call => {
                tracing::info!(
                    stream,
                    slice,
                    crew,
                    t_ms,
                    llm_tokens,
                    llm_cost_usd,
                    "slow call"
                )
            }
            None => tracing::debug!(
                stream,
                slice,
                crew,
                t_ms,
                llm_tokens,
                llm_cost_usd,
                "call done"
            ),
        }
    }

    /// Whether another host serves `stream` now.
    pub(super) fn given_up(&self, stream: usize) -> bool {
        self.streams[stream].given_up
    }

    /// Another host committed `stream` (`why` says how this one found out): this host
    /// stops serving it. Its calls in flight finish unseen, nothing more of it is
    /// emitted or stored, and its later deliveries only count as done, so they do not
    /// hold back the other streams' acknowledgements. Returns the record saying so.
    pub(super) fn give_up(&mut self, stream: usize, last_slice: i64, why: &str) -> ErrorRecord {
        let state = &mut self.streams[stream];
        state.given_up = true;
        state.slices.clear();
        for lane in &mut state.lanes {
            lane.bundle = None;
            lane.pending_events.clear();
            lane.pending_since = None;
            lane.runs.clear();
            lane.unfinished.clear();
            lane.queued.clear();
            lane.holding.clear();
        }
        self.close_log.retain(|&(s, _)| s != stream);
        self.deadlines.retain(|&(_, s, _)| s != stream);
        if let Some(holds) = &mut self.holds {
            holds.release_all(stream);
        }
        let at = At {
            stream: &self.streams[stream].name,
            slice: last_slice,
            crew: None,
            ts: self.slice_end(stream, last_slice),
        };
        records::stream_taken(at, why)
    }

    /// Hands the actions of finished slices to `push`, following the order the input
    /// closed them, with their ids.
    pub(super) fn emit(&mut self, push: &mut impl FnMut(&Action, ActionId<'_>)) {
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
                            state.unwritten_actions += actions.len();
                            for (index, action) in actions.iter().enumerate() {
                                let id = ActionId {
                                    stream: &state.name,
                                    slice,
                                    crew: &action.crew,
                                    index,
                                };
                                push(action, id);
                            }
                        }
                    }
                }
                state.emitted_until = end;
                self.release_holds(stream);
                self.release_write(stream);
                self.streams[stream].collect_garbage(self.look_back, self.max_patch_delay);
            }
            if finished < upto {
                break;
            }
            self.close_log.pop_front();
        }
    }

    /// Lets go of the deliveries of `stream`'s durable slices.
    fn release_holds(&mut self, stream: usize) {
        let state = &mut self.streams[stream];
        let durable = state.durable_until();
        for (plan, lane) in self.plans.iter().zip(&mut state.lanes) {
            // A run is durable once its actions are pushed and its patch (applied
            // `patch_delay` slices later) is handed to the store.
            let runs_durable = if plan.writes {
                durable.saturating_sub(plan.patch_delay)
            } else {
                state.emitted_until
            };
            lane.release_runs_below(runs_durable);
        }
        if let Some(holds) = &mut self.holds {
            let held = state
                .lanes
                .iter()
                .filter_map(Lane::holds_from)
                .fold(durable, i64::min);
            holds.release_below(stream, held);
        }
    }

    /// Every delivery up to this one is durable in all it caused (0: none yet).
    pub(super) fn ackable_through(&self) -> u64 {
        self.holds.as_ref().map_or(0, Holds::ackable_through)
    }

    /// Drops every trigger that still waits; used when nothing else can happen.
    pub(super) fn drop_waiting_bundles(&mut self) -> Vec<usize> {
        let mut dirty = Vec::new();
        for stream in 0..self.streams.len() {
            if self.streams[stream].given_up {
                continue;
            }
            for crew in 0..self.plans.len() {
                let lane = &mut self.streams[stream].lanes[crew];
                let Some(bundle) = lane.bundle.take() else {
                    continue;
                };
                let slice = lane.pos;
                lane.advance(slice.saturating_add(1));
                dirty.push(stream);
                let at = At {
                    stream: &self.streams[stream].name,
                    slice: bundle.slice,
                    crew: Some(&self.plans[crew].name),
                    ts: self.slice_end(stream, slice),
                };
                let record = records::needs_unmet_at_end(at, bundle.events.len());
                let (stream, crew) = (&self.streams[stream].name, &self.plans[crew].name);
                let call = skipped(stream, crew, bundle.slice, record.reason);
                self.metrics.metrics().recent_calls().push(call);
                self.out.records.push(record);
            }
        }
        dirty
    }

    /// What the run did; the shell adds the error counts and the elapsed time.
    pub(super) fn into_summary(self) -> RunSummary {
        let mut summary = self.summary;
        summary.skipped_events = self.slicer.skipped();
        summary.crews = self
            .plans
            .into_iter()
            .map(|c| c.name.to_string())
            .zip(self.stats)
            .collect();
        summary
    }
}

/// A triggered call that was never sent, for the web page's timeline.
fn skipped(stream: &Arc<str>, crew: &Arc<str>, slice: i64, reason: &'static str) -> CallRecord {
    CallRecord {
        stream: stream.clone(),
        slice,
        crew: crew.clone(),
        state: CallState::Skipped,
        t_ms: 0.0,
        lag_ms: None,
        reason: Some(reason),
        llm_tokens: None,
        llm_cost_usd: None,
    }
}
