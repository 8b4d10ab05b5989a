//! `--live` on a recording: events are let through at the pace of their timestamps.

use std::time::{Duration, Instant};

use crate::model::Timestamp;

/// Plays a recording at the pace it was recorded (`--live` on a regular file): each
/// event is let through when as much time has passed since the first event was read as
/// its `ts` lies after the first event's. Events that are not later than that (out of
/// order, or the reader fell behind) go at once.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// The first event's `ts` and when it was read.
    start: Option<(Timestamp, Instant)>,
}

impl Pacer {
    /// How long to hold an event of time `ts` that was read at `now`.
    pub(super) fn hold(&mut self, ts: Timestamp, now: Instant) -> Option<Duration> {
        let &mut (first_ts, started) = self.start.get_or_insert((ts, now));
        let offset = u64::try_from(ts.as_micros().saturating_sub(first_ts.as_micros())).ok()?;
        let due = started + Duration::from_micros(offset);
        (due > now).then(|| due - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_recording_holds_each_event_until_its_offset_from_the_first() {
        let at = |ms: i64| Timestamp::from_micros(1_700_000_000_000_000 + ms * 1000);
        let read = Instant::now();
        let mut pacer = Pacer::default();
        assert_eq!(
            pacer.hold(at(0), read),
            None,
            "the first event plays at once"
        );
        let later = read + Duration::from_millis(100);
        assert_eq!(pacer.hold(at(250), later), Some(Duration::from_millis(150)));
        // Not later than due: out of order, or the reader fell behind.
        assert_eq!(pacer.hold(at(50), later), None);
        assert_eq!(pacer.hold(at(-10), later), None);
    }
}
