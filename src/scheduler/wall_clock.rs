//! Live mode (SPEC §2): slices close on the wall clock, not on input.
//!
//! Slice `n` of a stream closes at `w0 + (n+1)·slice_ms + grace_ms`, where `w0` is when
//! the stream's first event (its epoch0) reached the scheduler. The clock only says
//! *when*; the scheduler closes the slices through [`crate::slicer::Slicer::close_below`],
//! so every other rule (late events, needs, wait policies) stays the batch code path.
//! Time is tokio's, so tests run it on a paused virtual clock; a helper thread makes the
//! closes punctual in real time ([`PreciseWake`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::clock::{Due, SliceClock};
use crate::model::Timestamp;

/// One stream's clock.
struct StreamClock {
    w0: Instant,
}

/// Where a stream's wall-clock slices start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// When its first event reached the scheduler: a recording played live keeps its
    /// own pace whatever its timestamps say.
    Arrival,
    /// At its `epoch0` in real (UTC) time: events from live producers carry the time
    /// they happened, so slice `n` closes when its end has passed on the clock.
    EventTime,
}

/// When each stream's next slice closes.
pub struct WallClock {
    slice: Duration,
    grace: Duration,
    anchor: Anchor,
    /// By stream index.
    streams: Vec<StreamClock>,
    /// Every stream's next close, earliest first; streams due at the same time close in
    /// name order.
    queue: BTreeSet<(Instant, Arc<str>, usize)>,
    wake: PreciseWake,
}

impl WallClock {
    pub fn new(slice_ms: u64, grace_ms: u64) -> WallClock {
        WallClock::anchored(slice_ms, grace_ms, Anchor::Arrival)
    }

    pub fn anchored(slice_ms: u64, grace_ms: u64, anchor: Anchor) -> WallClock {
        WallClock {
            slice: Duration::from_millis(slice_ms),
            grace: Duration::from_millis(grace_ms),
            anchor,
            streams: Vec::new(),
            queue: BTreeSet::new(),
            wake: PreciseWake::start(),
        }
    }
}

impl SliceClock for WallClock {
    fn input_closes_slices(&self) -> bool {
        false
    }

    fn real_time(&self) -> bool {
        true
    }

    fn reorder_slices(&self) -> u64 {
        0
    }

    /// The stream's first event arrives now: that, or its `epoch0`, sets its `w0`.
    fn stream_opened(&mut self, stream: usize, name: &Arc<str>, epoch0: Timestamp) {
        debug_assert_eq!(stream, self.streams.len(), "streams open in index order");
        let now = Instant::now();
        let w0 = match self.anchor {
            Anchor::Arrival => now,
            Anchor::EventTime => {
                let age_us = Timestamp::now()
                    .as_micros()
                    .saturating_sub(epoch0.as_micros());
                let age = Duration::from_micros(age_us.unsigned_abs());
                if age_us >= 0 {
                    now.checked_sub(age).unwrap_or(now)
                } else {
                    now + age
                }
            }
        };
        let clock = StreamClock { w0 };
        self.queue
            .insert((self.close_time_of(&clock, 0), name.clone(), stream));
        self.streams.push(clock);
    }

    fn next_close(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _, _)| *at)
    }

    async fn wait_until(&self, at: Instant) {
        self.wake.until(at).await;
    }

    fn due(&mut self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some((at, _, _)) = self.queue.first()
            && *at <= now
        {
            let (at, name, stream) = self.queue.pop_first().expect("checked above");
            let clock = &self.streams[stream];
            let upto = slices_closed_by(now - clock.w0, self.slice, self.grace);
            let next = clock.w0 + self.grace + self.slice * slice_count(upto + 1);
            self.queue.insert((next, name, stream));
            due.push(Due {
                stream,
                upto,
                due: at,
            });
        }
        due
    }

    fn close_time(&self, stream: usize, slice: i64) -> Option<Instant> {
        self.streams
            .get(stream)
            .map(|clock| self.close_time_of(clock, slice))
    }
}

impl WallClock {
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

/// Wakes the scheduler for slice closes to within tens of microseconds. tokio's timer
/// works in whole milliseconds (its wheel ticks, and the epoll timeout it parks with), so
/// a close it times runs 1–2 ms after it is due, on every slice. A helper thread waits on
/// a condvar (an hrtimer, ~50 µs of slack) and then notifies the runtime. tokio's timer
/// runs alongside, so a paused test clock works as before.
struct PreciseWake {
    shared: Arc<WakeShared>,
}

struct WakeShared {
    next: Mutex<NextWake>,
    changed: Condvar,
    fired: Notify,
}

struct NextWake {
    at: Option<std::time::Instant>,
    stop: bool,
}

impl PreciseWake {
    fn start() -> PreciseWake {
        let shared = Arc::new(WakeShared {
            next: Mutex::new(NextWake {
                at: None,
                stop: false,
            }),
            changed: Condvar::new(),
            fired: Notify::new(),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("live-crew-clock".into())
            .spawn(move || thread_shared.run())
            .expect("spawning the clock thread");
        PreciseWake { shared }
    }

    async fn until(&self, at: Instant) {
        {
            let mut next = self
                .shared
                .next
                .lock()
                .expect("the clock thread never panics");
            if next.at != Some(at.into_std()) {
                next.at = Some(at.into_std());
                self.shared.changed.notify_one();
            }
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(at) => return,
                () = self.shared.fired.notified() => {}
            }
            // A wake left over from an earlier deadline (nobody waited when it fired)
            // comes early.
            if Instant::now() >= at {
                return;
            }
        }
    }
}

impl WakeShared {
    fn run(&self) {
        const HELD: &str = "the scheduler never panics holding the lock";
        let mut next = self.next.lock().expect(HELD);
        while !next.stop {
            let left = next
                .at
                .map(|at| at.saturating_duration_since(std::time::Instant::now()));
            next = match left {
                None => self.changed.wait(next).expect(HELD),
                Some(left) if !left.is_zero() => {
                    self.changed.wait_timeout(next, left).expect(HELD).0
                }
                Some(_) => {
                    next.at = None;
                    self.fired.notify_one();
                    next
                }
            };
        }
    }
}

impl Drop for PreciseWake {
    fn drop(&mut self) {
        if let Ok(mut next) = self.shared.next.lock() {
            next.stop = true;
            self.shared.changed.notify_one();
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

    /// On the real clock the helper thread wakes the waiter, never before its time, also
    /// when deadlines move and when an earlier wake was left unclaimed.
    #[tokio::test]
    async fn waits_end_at_their_deadline_on_the_real_clock() {
        let clock = WallClock::new(500, 50);
        let soon = Instant::now() + ms(5);
        // A deadline nobody waits for: its wake is left over for the next wait.
        clock.wake.until(Instant::now()).await;
        clock.wake.shared.next.lock().unwrap().at = Some(soon.into_std());
        clock.wake.shared.changed.notify_one();
        std::thread::sleep(Duration::from_millis(10));
        for step in [3, 1, 7] {
            let at = Instant::now() + ms(step);
            clock.wait_until(at).await;
            assert!(Instant::now() >= at, "woke before the deadline");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slices_close_at_w0_plus_their_end_plus_grace() {
        let mut clock = WallClock::new(500, 50);
        let w0 = Instant::now();
        clock.stream_opened(0, &"s".into(), Timestamp::from_micros(0));
        assert_eq!(clock.next_close(), Some(w0 + ms(550)));
        assert!(clock.due(w0 + ms(549)).is_empty());
        tokio::time::advance(ms(100)).await;
        clock.stream_opened(1, &"t".into(), Timestamp::from_micros(0));
        let due = clock.due(w0 + ms(550));
        assert_eq!(
            due,
            [Due {
                stream: 0,
                upto: 1,
                due: w0 + ms(550)
            }]
        );
        assert_eq!(clock.next_close(), Some(w0 + ms(650)), "t's slice 0");
        // Far behind: one close covers every slice that ended meanwhile.
        let due = clock.due(w0 + ms(2100));
        let got: Vec<(usize, i64)> = due.iter().map(|d| (d.stream, d.upto)).collect();
        assert_eq!(got, [(1, 3), (0, 4)], "t, then s");
        assert_eq!(due[1].due, w0 + ms(1050), "s's slice 1 was due first");
        assert_eq!(clock.next_close(), Some(w0 + ms(2150)), "t's slice 3");
        assert_eq!(clock.close_time(0, 3), Some(w0 + ms(2050)));
        assert_eq!(clock.close_time(0, -1), Some(w0 + ms(50)));
        assert_eq!(clock.close_time(2, 0), None);
    }
}
