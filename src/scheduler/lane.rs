//! One crew in one stream: a *lane* walks the closed slices in order, collects its
//! trigger events and decides, slice by slice, where each trigger runs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tokio::time::Instant;

use crate::model::{JsonObject, SharedAction, SharedEvent};
use crate::protocol::DepItems;

/// A trigger (or several merged ones) waiting for the slice it can run in.
pub(super) struct Bundle {
    /// The slice it was triggered in.
    pub(super) slice: i64,
    pub(super) events: Vec<SharedEvent>,
    /// The earliest slice its events come from.
    pub(super) since: i64,
    /// For `wait_policy: timeout`.
    pub(super) deadline: Option<Instant>,
}

pub(super) enum RunState {
    /// Decided, not yet sent: waits for its context snapshot or (`latest`) a free crew.
    Queued {
        events: Vec<SharedEvent>,
        deps: BTreeMap<String, DepItems>,
    },
    InFlight,
    Done(Option<Vec<SharedAction>>),
}

pub(super) struct Run {
    pub(super) state: RunState,
    pub(super) patch: Option<JsonObject>,
}

/// One crew in one stream.
pub(super) struct Lane {
    /// The slice this lane is at; every slice below is decided.
    pub(super) pos: i64,
    /// Whether `pos`'s trigger events have been collected.
    pub(super) took: bool,
    /// Trigger events not yet taken by a stride boundary.
    pub(super) pending_events: Vec<SharedEvent>,
    /// The earliest slice of `pending_events`.
    pub(super) pending_since: Option<i64>,
    pub(super) bundle: Option<Bundle>,
    pub(super) runs: BTreeMap<i64, Run>,
    /// Slices of runs not yet done.
    pub(super) unfinished: BTreeSet<i64>,
    /// Slices of queued runs, oldest first.
    pub(super) queued: VecDeque<i64>,
    /// `(run slice, earliest slice of its events)` of the runs whose effects are not yet
    /// durable, oldest first: their events must not be acknowledged yet.
    pub(super) holding: VecDeque<(i64, i64)>,
}

impl Lane {
    pub(super) fn new(pos: i64) -> Lane {
        Lane {
            pos,
            took: false,
            pending_events: Vec::new(),
            pending_since: None,
            bundle: None,
            runs: BTreeMap::new(),
            unfinished: BTreeSet::new(),
            queued: VecDeque::new(),
            holding: VecDeque::new(),
        }
    }

    /// Every slice below this one is final for this crew.
    pub(super) fn final_until(&self) -> i64 {
        self.unfinished
            .first()
            .map_or(self.pos, |&s| s.min(self.pos))
    }

    /// The crew's outcome in slice `t`: `None` while unknown, `Some(None)` if it did not
    /// run or failed, `Some(Some(actions))` if it completed.
    pub(super) fn outcome(&self, t: i64) -> Option<Option<&Vec<SharedAction>>> {
        if t >= self.pos {
            return None;
        }
        match self.runs.get(&t).map(|run| &run.state) {
            None | Some(RunState::Done(None)) => Some(None),
            Some(RunState::Done(Some(actions))) => Some(Some(actions)),
            Some(_) => None,
        }
    }

    pub(super) fn advance(&mut self, to: i64) {
        self.pos = to;
        self.took = false;
    }

    /// The earliest slice whose events this lane still holds: pending, waiting in a
    /// bundle, or in a run whose effects are not durable yet.
    pub(super) fn holds_from(&self) -> Option<i64> {
        [
            self.pending_since,
            self.bundle.as_ref().map(|b| b.since),
            self.holding.front().map(|&(_, since)| since),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Forgets the holds of runs whose effects are durable: runs below `durable`.
    pub(super) fn release_runs_below(&mut self, durable: i64) {
        while self.holding.front().is_some_and(|&(run, _)| run < durable) {
            self.holding.pop_front();
        }
    }
}
