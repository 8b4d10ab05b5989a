//! What the benchmarks share.

use std::sync::Arc;

use live_crew::model::{Event, Timestamp};
use live_crew::protocol::Call;

/// A call carrying one `goal_scored` event, as a crew on `*` gets it.
pub fn goal_call(id: u64) -> Call {
    let event = Event::from_json(
        r#"{"ts":"2025-06-01T18:00:01.734Z","kind":"goal_scored","stream_id":"match-1","payload":{"team":"home","minute":23}}"#,
    )
    .unwrap();
    Call {
        id,
        call_id: format!("match-1:3:crew-{id}"),
        stream_id: "match-1".into(),
        slice: 3,
        slice_start: Timestamp::from_micros(1_500_000),
        slice_end: Timestamp::from_micros(2_000_000),
        events: vec![Arc::new(event)],
        context: Arc::default(),
        deps: Default::default(),
        deadline_ms: 30_000,
    }
}
