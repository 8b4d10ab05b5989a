//! The last calls the scheduler finished, for the web page's timeline (SPEC §16): a
//! bounded ring, so a long run costs no more memory than a short one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::health::lock;

/// How many calls the ring keeps: 1000 slices of 20 crews.
const KEPT: usize = 20_000;

/// What became of a crew's call in a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Ran,
    /// Ran, but answered more than a slice after its slice closed (live mode): the crew
    /// does not keep up with the stream.
    Late,
    Failed,
    /// Triggered, but never sent: its needs were not met, a newer slice's run took its
    /// events (`backlog_policy: latest`), or its budget was spent.
    Skipped,
}

/// One finished (or skipped) call.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub stream: Arc<str>,
    pub slice: i64,
    pub crew: Arc<str>,
    pub state: CallState,
    /// From dispatch to outcome; 0 for a skipped call.
    pub t_ms: f64,
    /// Live mode: from the slice's close to the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<f64>,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Tokens and USD of the call's LLM requests, if it made any (SPEC §14).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_cost_usd: Option<f64>,
}

/// The last [`KEPT`] calls, by stream and slice, so that an answer costs what it
/// holds, not what the history holds.
#[derive(Debug, Default)]
pub struct RecentCalls(Mutex<Ring>);

#[derive(Debug, Default)]
struct Ring {
    streams: HashMap<Arc<str>, BTreeMap<i64, Vec<CallRecord>>>,
    /// Where each call went, oldest first: the order calls leave in.
    order: VecDeque<(Arc<str>, i64)>,
}

impl RecentCalls {
    pub fn push(&self, record: CallRecord) {
        let mut ring = lock(&self.0);
        if ring.order.len() == KEPT
            && let Some((stream, slice)) = ring.order.pop_front()
        {
            ring.forget_oldest(&stream, slice);
        }
        ring.order.push_back((record.stream.clone(), record.slice));
        let slices = ring.streams.entry(record.stream.clone()).or_default();
        slices.entry(record.slice).or_default().push(record);
    }

    /// The calls of each stream's last `slices` slices, by stream, then slice.
    pub fn snapshot(&self, slices: usize) -> Vec<CallRecord> {
        let ring = lock(&self.0);
        let span = i64::try_from(slices).unwrap_or(i64::MAX);
        let mut streams: Vec<_> = ring.streams.iter().collect();
        streams.sort_by_key(|(name, _)| *name);
        let mut calls = Vec::new();
        for (_, by_slice) in streams {
            let Some((&newest, _)) = by_slice.last_key_value() else {
                continue;
            };
            let from = newest.saturating_sub(span).saturating_add(1);
            calls.extend(
                by_slice
                    .range(from..)
                    .flat_map(|(_, calls)| calls.iter().cloned()),
            );
        }
        calls
    }
}

impl Ring {
    /// Drops the oldest call filed under `stream` and `slice`.
    fn forget_oldest(&mut self, stream: &str, slice: i64) {
        let Some(by_slice) = self.streams.get_mut(stream) else {
            return;
        };
        if let Some(calls) = by_slice.get_mut(&slice) {
            calls.remove(0);
            if calls.is_empty() {
                by_slice.remove(&slice);
            }
        }
        if by_slice.is_empty() {
            self.streams.remove(stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(stream: &str, slice: i64, crew: &str) -> CallRecord {
        CallRecord {
            stream: stream.into(),
            slice,
            crew: crew.into(),
            state: CallState::Ran,
            t_ms: 1.0,
            lag_ms: None,
            reason: None,
            llm_tokens: None,
            llm_cost_usd: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_calls() {
        let recent = RecentCalls::default();
        for slice in 0..(KEPT as i64 + 5) {
            recent.push(call("s", slice, "c"));
        }
        let calls = recent.snapshot(usize::MAX);
        assert_eq!(calls.len(), KEPT);
        assert_eq!(calls[0].slice, 5);
        assert_eq!(calls.last().unwrap().slice, KEPT as i64 + 4);
        let last = recent.snapshot(3);
        let slices: Vec<i64> = last.iter().map(|call| call.slice).collect();
        assert_eq!(slices, [KEPT as i64 + 2, KEPT as i64 + 3, KEPT as i64 + 4]);
    }

    #[test]
    fn a_snapshot_takes_each_streams_own_last_slices_whatever_the_order_calls_came_in() {
        let recent = RecentCalls::default();
        for (stream, slice, crew) in [
            ("b", 7, "x"),
            ("a", 1, "x"),
            ("a", 2, "x"),
            ("b", 9, "x"),
            ("a", 2, "y"),
            // A slow call of an older slice finishes last.
            ("b", 8, "y"),
        ] {
            recent.push(call(stream, slice, crew));
        }
        let last_two: Vec<String> = (recent.snapshot(2).iter())
            .map(|c| format!("{}{}{}", c.stream, c.slice, c.crew))
            .collect();
        assert_eq!(last_two, ["a1x", "a2x", "a2y", "b8y", "b9x"]);
    }
}
