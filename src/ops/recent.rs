//! The last calls the scheduler finished, for the web page's timeline (SPEC §16): a
//! bounded ring, so a long run costs no more memory than a short one.

use std::collections::{HashMap, VecDeque};
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

/// The last [`KEPT`] calls, oldest first.
#[derive(Debug, Default)]
pub struct RecentCalls(Mutex<VecDeque<CallRecord>>);

impl RecentCalls {
    pub fn push(&self, record: CallRecord) {
        let mut calls = lock(&self.0);
        if calls.len() == KEPT {
            calls.pop_front();
        }
        calls.push_back(record);
    }

    /// The calls of each stream's last `slices` slices, oldest first.
    pub fn snapshot(&self, slices: usize) -> Vec<CallRecord> {
        let calls = lock(&self.0);
        let mut newest: HashMap<&str, i64> = HashMap::new();
        for call in calls.iter() {
            let slice = newest.entry(&call.stream).or_insert(call.slice);
            *slice = (*slice).max(call.slice);
        }
        let span = i64::try_from(slices).unwrap_or(i64::MAX);
        (calls.iter())
            .filter(|call| newest[&*call.stream].saturating_sub(call.slice) < span)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_calls() {
        let recent = RecentCalls::default();
        for slice in 0..(KEPT as i64 + 5) {
            recent.push(CallRecord {
                stream: "s".into(),
                slice,
                crew: "c".into(),
                state: CallState::Ran,
                t_ms: 1.0,
                lag_ms: None,
                reason: None,
                llm_tokens: None,
                llm_cost_usd: None,
            });
        }
        let calls = recent.snapshot(usize::MAX);
        assert_eq!(calls.len(), KEPT);
        assert_eq!(calls[0].slice, 5);
        assert_eq!(calls.last().unwrap().slice, KEPT as i64 + 4);
        let last = recent.snapshot(3);
        let slices: Vec<i64> = last.iter().map(|call| call.slice).collect();
        assert_eq!(slices, [KEPT as i64 + 2, KEPT as i64 + 3, KEPT as i64 + 4]);
    }
}
