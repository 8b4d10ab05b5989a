//! One stream as the scheduler keeps it: its closed slices, its lanes, and how far its
//! slices are committed and written.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::lane::Lane;
use crate::model::{JsonObject, SharedEvent, Timestamp};

pub(super) struct StreamState {
    pub(super) name: Arc<str>,
    pub(super) epoch0: Timestamp,
    /// Slices below are closed.
    pub(super) watermark: i64,
    /// Closed non-empty slices still needed.
    pub(super) slices: BTreeMap<i64, Vec<SharedEvent>>,
    pub(super) lanes: Vec<Lane>,
    /// Patches of slices below are committed.
    pub(super) committed_until: i64,
    /// Context snapshots by the first slice that sees them.
    pub(super) snapshots: BTreeMap<i64, Arc<JsonObject>>,
    /// The context last handed to the store, and the slice it was after: each goes once
    /// the actions of its slices are pushed, so a store never holds a context whose
    /// actions could be lost.
    pub(super) written: Arc<JsonObject>,
    pub(super) written_until: i64,
    /// The `events_through` of the last write.
    pub(super) written_seq: u64,
    /// Actions pushed since the last write.
    pub(super) unwritten_actions: usize,
    /// The last closed slice that held events.
    pub(super) last_closed: i64,
    /// Actions of slices below are written.
    pub(super) emitted_until: i64,
    /// Below this, history has been dropped.
    pub(super) collected_below: i64,
    /// Another host serves this stream now: nothing of it runs, is written or is stored.
    pub(super) given_up: bool,
}

impl StreamState {
    pub(super) fn finished_until(&self) -> i64 {
        self.lanes
            .iter()
            .map(Lane::final_until)
            .fold(self.watermark, i64::min)
    }

    pub(super) fn snapshot(&self, slice: i64) -> &Arc<JsonObject> {
        self.snapshots
            .range(..=slice)
            .next_back()
            .map(|(_, ctx)| ctx)
            .expect("the initial snapshot covers every slice")
    }

    /// Slices below this one are durable: their actions written and the context they
    /// lead to handed to the store. Events of later slices may still be needed.
    pub(super) fn durable_until(&self) -> i64 {
        self.emitted_until.min(self.committed_until)
    }

    /// Forgets slices, runs and snapshots no lane or commit can look at any more.
    pub(super) fn collect_garbage(&mut self, look_back: i64, max_patch_delay: i64) {
        let uncommitted = self.committed_until.saturating_sub(max_patch_delay);
        let low = self
            .lanes
            .iter()
            .map(Lane::final_until)
            .fold(self.emitted_until.min(uncommitted), i64::min);
        let keep_from = low.saturating_add(look_back).saturating_sub(1);
        if keep_from <= self.collected_below {
            return;
        }
        self.collected_below = keep_from;
        self.slices = self.slices.split_off(&keep_from);
        for lane in &mut self.lanes {
            lane.runs = lane.runs.split_off(&keep_from);
        }
        let newer = self.snapshots.split_off(&keep_from.saturating_add(1));
        let base = self
            .snapshots
            .pop_last()
            .expect("the initial snapshot is never dropped");
        self.snapshots = newer;
        self.snapshots.entry(base.0).or_insert(base.1);
    }
}
