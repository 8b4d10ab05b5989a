//! Where a lane's trigger runs (SPEC §4): its needs and wait policy against what the
//! stream knows so far. Pure: the same state gives the same decision.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::plan::{NeedTarget, Plan};
use super::stream::StreamState;
use crate::config::WaitPolicy;
use crate::model::SharedEvent;
use crate::protocol::DepItems;

/// What a lane does at its slice.
pub(super) enum Decision {
    Run(BTreeMap<String, DepItems>),
    /// Needs not met here; try the next slice.
    Later,
    Wait,
}

/// Where a lane without a pending trigger goes next: the next slice with events, or the
/// next stride boundary if it holds trigger events below one.
pub(super) fn next_slice(state: &StreamState, crew: usize, stride: i64, slice: i64) -> i64 {
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
pub(super) fn decide(
    plan: &Plan,
    state: &StreamState,
    slice: i64,
    deadline: Option<Instant>,
    now: Instant,
) -> Decision {
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
        WaitPolicy::Timeout(_) if unknown > 0 && deadline.is_some_and(|at| now >= at) => {
            Decision::Run(deps)
        }
        _ if unknown > 0 => Decision::Wait,
        _ => Decision::Run(deps),
    }
}
