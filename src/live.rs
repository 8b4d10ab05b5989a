//! Live mode (SPEC §2): slices close on the wall clock, not on input.
//!
//! Slice `n` of a stream closes at `w0 + (n+1)·slice_ms + grace_ms`, where `w0` is when
//! the stream's first event (its epoch0) reached the scheduler. The clock only says
//! *when*; the scheduler closes the slices through [`crate::slicer::Slicer::close_below`],
//! so every other rule (late events, needs, wait policies) stays the batch code path.
//! Time is tokio's, so tests run it on a paused virtual clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// One stream's clock.
struct StreamClock {
    w0: Instant,
}

/// Slices that are due: close `stream`'s slices below `upto`; the oldest of them was due
/// at `due`.
#[derive(Debug, PartialEq, Eq)]
pub struct Due {
    pub stream: Arc<str>,
    pub upto: i64,
    pub due: Instant,
}

/// When each stream's next slice closes.
pub struct LiveClock {
    slice: Duration,
    grace: Duration,
    streams: HashMap<Arc<str>, StreamClock>,
    /// Every stream's next close, earliest first.
    queue: BTreeSet<(Instant, Arc<str>)>,
}

impl LiveClock {
    pub fn new(slice_ms: u64, grace_ms: u64) -> LiveClock {
        LiveClock {
            slice: Duration::from_millis(slice_ms),
            grace: Duration::from_millis(grace_ms),
            streams: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Notes an event of `stream` arriving now; the first one sets the stream's `w0`.
    pub fn saw(&mut self, stream: &str) {
        if self.streams.contains_key(stream) {
            return;
        }
        let name: Arc<str> = stream.into();
        let clock = StreamClock { w0: Instant::now() };
        self.queue
            .insert((self.close_time_of(&clock, 0), name.clone()));
        self.streams.insert(name, clock);
    }

    /// When the next slice of any stream is due.
    pub fn next_close(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// The closes due at `now`, one per stream, earliest first.
    pub fn due(&mut self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.queue.first()
            && *at <= now
        {
            let (at, name) = self.queue.pop_first().expect("checked above");
            let clock = &self.streams[&name];
            let upto = slices_closed_by(now - clock.w0, self.slice, self.grace);
            let next = clock.w0 + self.grace + self.slice * slice_count(upto + 1);
            self.queue.insert((next, name.clone()));
            due.push(Due {
                stream: name,
                upto,
                due: at,
            });
        }
        due
    }

    /// When slice `slice` of `stream` closes(d); `None` for a stream the clock never saw.
    pub fn close_time(&self, stream: &str, slice: i64) -> Option<Instant> {
        self.streams
            .get(stream)
            .map(|clock| self.close_time_of(clock, slice))
    }

    fn close_time_of(&self, clock: &StreamClock, slice: i64) -> Instant {
        let ends = slice.saturating_add(1);
        if ends >= 0 {
            clock.w0 + self.grace + self.slice * slice_count(ends)
        } else {
            // Slices before epoch0: their end lies before w0.
            (clock.w0 + self.grace)
                .checked_sub(self.slice * slice_count(-ends))
                .unwrap_or(clock.w0)
        }
    }
}

/// How many slices have ended `since_w0` after `w0` (allowing for the grace): slices
/// `n < upto` are closed.
fn slices_closed_by(since_w0: Duration, slice: Duration, grace: Duration) -> i64 {
    match since_w0.checked_sub(grace) {
        Some(past) => {
            i64::try_from(past.as_micros() / slice.as_micros().max(1)).unwrap_or(i64::MAX)
        }
        None => 0,
    }
}

/// A slice count as a `Duration` multiplier (saturating at `u32::MAX` slices).
fn slice_count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn slices_close_at_w0_plus_their_end_plus_grace() {
        let mut clock = LiveClock::new(500, 50);
        let w0 = Instant::now();
        clock.saw("s");
        assert_eq!(clock.next_close(), Some(w0 + ms(550)));
        assert!(clock.due(w0 + ms(549)).is_empty());
        tokio::time::advance(ms(100)).await;
        clock.saw("t");
        clock.saw("s");
        let due = clock.due(w0 + ms(550));
        assert_eq!(
            due,
            [Due {
                stream: "s".into(),
                upto: 1,
                due: w0 + ms(550)
            }]
        );
        assert_eq!(clock.next_close(), Some(w0 + ms(650)), "t's slice 0");
        // Far behind: one close covers every slice that ended meanwhile.
        let due = clock.due(w0 + ms(2100));
        let got: Vec<(&str, i64)> = due.iter().map(|d| (&*d.stream, d.upto)).collect();
        assert_eq!(got, [("t", 3), ("s", 4)]);
        assert_eq!(due[1].due, w0 + ms(1050), "s's slice 1 was due first");
        assert_eq!(clock.next_close(), Some(w0 + ms(2150)), "t's slice 3");
        assert_eq!(clock.close_time("s", 3), Some(w0 + ms(2050)));
        assert_eq!(clock.close_time("s", -1), Some(w0 + ms(50)));
        assert_eq!(clock.close_time("u", 0), None);
    }
}
