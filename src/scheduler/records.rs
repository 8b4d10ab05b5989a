//! The error records the scheduler writes (SPEC §8), one builder per reason, so each
//! reason's fields and message are made in one place.

use crate::config::OverflowPolicy;
use crate::context::PatchError;
use crate::model::{SharedEvent, Timestamp};
use crate::pool::{CallFailure, FailureReason};
use crate::sink::{ErrorRecord, INPUT_REASONS};
use crate::source::{InputError, InputPlace};

/// Where in the run a record belongs: stream, slice, crew and the slice's end.
pub(super) struct At<'a> {
    pub(super) stream: &'a str,
    pub(super) slice: i64,
    pub(super) crew: Option<&'a str>,
    pub(super) ts: Timestamp,
}

/// The reason of a trigger whose needs were never met.
const DEPENDENCY_TIMEOUT: &str = "dependency_timeout";
/// The reason of a stream another host committed first.
const STREAM_TAKEN: &str = "stream_taken";

/// Every `(crew, reason)` a run over `crews` can write a record with (`""` for records
/// of no crew), for the metrics to export at 0 from the start.
pub(super) fn known_labels<'a>(crews: &[&'a str]) -> Vec<(&'a str, &'static str)> {
    let no_crew = INPUT_REASONS.into_iter().chain([STREAM_TAKEN]);
    let of_crews = crews.iter().flat_map(|&crew| {
        (FailureReason::ALL.into_iter().map(FailureReason::as_str))
            .chain([DEPENDENCY_TIMEOUT])
            .map(move |reason| (crew, reason))
    });
    no_crew.map(|reason| ("", reason)).chain(of_crews).collect()
}

fn record(at: At<'_>, reason: &'static str, message: String) -> ErrorRecord {
    ErrorRecord {
        ts: Some(at.ts),
        stream_id: Some(at.stream.to_owned()),
        slice: Some(at.slice),
        crew: at.crew.map(str::to_owned),
        reason,
        message,
        line: None,
        index: None,
        seq: None,
    }
}

/// An input line, array element or message that is not a valid event.
pub(super) fn invalid_event(error: InputError) -> ErrorRecord {
    let message = format!("{error}; the event was skipped");
    let mut record = ErrorRecord {
        ts: None,
        stream_id: None,
        slice: None,
        crew: None,
        reason: "invalid_event",
        message,
        line: None,
        index: None,
        seq: None,
    };
    match error.at {
        InputPlace::Line { line, index } => {
            record.line = Some(line);
            record.index = index;
        }
        InputPlace::Message { seq, stream } => {
            record.seq = Some(seq);
            record.stream_id = Some(stream);
        }
    }
    record
}

/// An event for a slice that had already closed; `placed` is where it went.
pub(super) fn late_event(event: &SharedEvent, slice: i64, placed: Option<i64>) -> ErrorRecord {
    let outcome = match placed {
        Some(open) => format!("placed into slice {open} (late_policy: next)"),
        None => "dropped (late_policy: drop)".into(),
    };
    record(
        At {
            stream: &event.stream_id,
            slice,
            crew: None,
            ts: event.ts,
        },
        "late_event",
        format!(
            "event '{}' at {} belongs to slice {slice}, which is already closed; {outcome}. \
             Sort the input or raise reorder_slices",
            event.kind, event.ts
        ),
    )
}

/// `count` events of one slice went over `max_events_per_slice`.
pub(super) fn slice_overflow(
    at: At<'_>,
    count: u64,
    max: usize,
    policy: OverflowPolicy,
) -> ErrorRecord {
    let outcome = match policy {
        OverflowPolicy::Drop => "dropped (slice_overflow: drop)",
        OverflowPolicy::Collapse => {
            "merged into the newest kept event of their kind, or dropped where the slice \
             has none (slice_overflow: collapse)"
        }
    };
    record(
        at,
        "slice_overflow",
        format!("{count} events over max_events_per_slice ({max}) were {outcome}"),
    )
}

/// A trigger whose needs were not met within `max_wait_slices`; `at.slice` is the
/// trigger's slice, `gave_up` the slice where the lane gave up.
pub(super) fn needs_not_met(
    at: At<'_>,
    gave_up: i64,
    needs: &[&str],
    max_wait: i64,
    dropped: usize,
) -> ErrorRecord {
    let message = format!(
        "crew '{}' was triggered in slice {} but its needs ({}) were not met by slice \
         {gave_up} (max_wait_slices: {max_wait}); {dropped} events dropped",
        at.crew.unwrap_or_default(),
        at.slice,
        needs.join(", "),
    );
    record(at, DEPENDENCY_TIMEOUT, message)
}

/// A trigger still waiting when nothing else can happen any more (end of input).
pub(super) fn needs_unmet_at_end(at: At<'_>, dropped: usize) -> ErrorRecord {
    let message = format!(
        "crew '{}' was triggered in slice {} but its needs can no longer be met at the end \
         of input; {dropped} events dropped",
        at.crew.unwrap_or_default(),
        at.slice,
    );
    record(at, DEPENDENCY_TIMEOUT, message)
}

/// A call that failed, with the pool's reason.
pub(super) fn call_failed(at: At<'_>, failure: CallFailure) -> ErrorRecord {
    record(at, failure.reason.as_str(), failure.message)
}

/// A context patch the host rejected (ACL or size).
pub(super) fn patch_rejected(at: At<'_>, error: &PatchError) -> ErrorRecord {
    record(
        at,
        error.reason().as_str(),
        format!("{error}; the patch was rejected"),
    )
}

/// Another host committed the stream first; `why` is the store's account of it.
pub(super) fn stream_taken(at: At<'_>, why: &str) -> ErrorRecord {
    record(at, STREAM_TAKEN, why.to_owned())
}
