//! Which deliveries may be acknowledged: a delivery is held by the slice it was filed in
//! until that slice is durable (its actions written, its context handed to the store,
//! every run that took its events done and durable). The source is acknowledged through
//! the delivery just below the oldest one still held.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub(super) struct Holds {
    /// `(first seq, stream, slice)` of every slice that holds deliveries.
    held: BTreeSet<(u64, usize, i64)>,
    /// Per stream: each holding slice's first seq.
    by_slice: Vec<BTreeMap<i64, u64>>,
    /// The highest seq delivered so far.
    last: u64,
    /// Per stream: the highest seq filed in it.
    last_of: Vec<u64>,
}

impl Holds {
    /// Delivery `seq` was seen; one that is not filed in a slice (a rejected or dropped
    /// event) is held by nothing once its error record is written.
    pub(super) fn delivered(&mut self, seq: u64) {
        self.last = self.last.max(seq);
    }

    /// Delivery `seq` of `stream` was in its committed state already (a redelivery).
    pub(super) fn done_already(&mut self, stream: usize, seq: u64) {
        self.delivered(seq);
        self.grow(stream);
        self.last_of[stream] = self.last_of[stream].max(seq);
    }

    fn grow(&mut self, stream: usize) {
        if self.by_slice.len() <= stream {
            self.by_slice.resize_with(stream + 1, BTreeMap::new);
            self.last_of.resize(stream + 1, 0);
        }
    }

    /// Delivery `seq` was filed in `slice` of `stream`.
    pub(super) fn hold(&mut self, stream: usize, slice: i64, seq: u64) {
        self.delivered(seq);
        self.grow(stream);
        self.last_of[stream] = self.last_of[stream].max(seq);
        let first = self.by_slice[stream].entry(slice).or_insert(seq);
        if seq < *first {
            // Redelivered out of order: the slice now holds an older delivery.
            self.held.remove(&(*first, stream, slice));
            *first = seq;
        }
        self.held.insert((*first, stream, slice));
    }

    /// The slices of `stream` below `durable` hold nothing any more.
    pub(super) fn release_below(&mut self, stream: usize, durable: i64) {
        let Some(slices) = self.by_slice.get_mut(stream) else {
            return;
        };
        let kept = slices.split_off(&durable);
        for (slice, seq) in std::mem::replace(slices, kept) {
            self.held.remove(&(seq, stream, slice));
        }
    }

    /// `stream` holds nothing any more, now or later.
    pub(super) fn release_all(&mut self, stream: usize) {
        if let Some(slices) = self.by_slice.get_mut(stream) {
            for (slice, seq) in std::mem::take(slices) {
                self.held.remove(&(seq, stream, slice));
            }
        }
    }

    /// Every delivery of `stream` up to this one is durable: the one below its oldest
    /// held delivery, else the newest it got.
    pub(super) fn stream_done_through(&self, stream: usize) -> u64 {
        let held = self
            .by_slice
            .get(stream)
            .and_then(|slices| slices.values().min());
        match held {
            Some(&seq) => seq - 1,
            None => self.last_of.get(stream).copied().unwrap_or(0),
        }
    }

    /// Every delivery up to this one may be acknowledged (0: none yet).
    pub(super) fn ackable_through(&self) -> u64 {
        match self.held.first() {
            Some(&(seq, _, _)) => seq - 1,
            None => self.last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_held_delivery_bounds_the_ack() {
        let mut holds = Holds::default();
        assert_eq!(holds.ackable_through(), 0);
        holds.hold(0, 0, 1);
        holds.hold(1, 0, 2);
        holds.hold(0, 1, 3);
        holds.delivered(4); // a rejected event
        assert_eq!(holds.ackable_through(), 0);
        holds.release_below(1, 5);
        assert_eq!(holds.ackable_through(), 0, "stream 0's slice 0 holds seq 1");
        holds.release_below(0, 1);
        assert_eq!(
            holds.ackable_through(),
            2,
            "slice 1 of stream 0 holds seq 3"
        );
        holds.release_below(0, 2);
        assert_eq!(holds.ackable_through(), 4);
    }

    #[test]
    fn a_redelivered_older_event_moves_its_slices_hold_back() {
        let mut holds = Holds::default();
        holds.hold(0, 3, 10);
        holds.hold(0, 3, 7);
        assert_eq!(holds.ackable_through(), 6);
        holds.release_below(0, 4);
        assert_eq!(holds.ackable_through(), 10);
    }
}
