//! When slices close (SPEC §2): the one thing batch, live and replay runs do differently.
//!
//! In event time ([`EventTime`]: batch runs and replays) an event closes the slices more
//! than `reorder_slices` behind it, and the end of input closes the rest. On the wall
//! clock ([`WallClock`](super::wall_clock::WallClock): live runs) only time closes them.
//! A source that replays a backlog and then follows live input (NATS, SPEC §12) needs a
//! clock that is the first while catching up and the second after; the scheduler asks
//! the clock per event, so such a clock can switch.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::Instant;

use super::wall_clock::WallClock;
use crate::model::Timestamp;

/// Slices that are due: close `stream`'s slices below `upto`; the oldest of them was due
/// at `due`.
#[derive(Debug, PartialEq, Eq)]
pub struct Due {
    pub stream: usize,
    pub upto: i64,
    pub due: Instant,
}

/// How the scheduler learns that slices close.
pub trait SliceClock: Send {
    /// Whether the next event closes the slices `reorder_slices` behind it.
    fn input_closes_slices(&self) -> bool;

    /// Whether slices close in real time: outputs are then made durable as each slice
    /// commits rather than in large chunks.
    fn real_time(&self) -> bool;

    /// How many slices out-of-order events may lag in event time.
    fn reorder_slices(&self) -> u64;

    /// Stream `stream` (indexes count up from 0) got its first event just now; slice
    /// numbers count from `epoch0`.
    fn stream_opened(&mut self, stream: usize, name: &Arc<str>, epoch0: Timestamp);

    /// When the next slice of any stream is due, if the clock closes slices itself.
    fn next_close(&self) -> Option<Instant>;

    /// Returns at `at`, or a little after.
    fn wait_until(&self, at: Instant) -> impl Future<Output = ()> + Send;

    /// The closes due at `now`, one per stream, earliest first.
    fn due(&mut self, now: Instant) -> Vec<Due>;

    /// When slice `slice` of `stream` closed on the wall clock; `None` in event time.
    fn close_time(&self, stream: usize, slice: i64) -> Option<Instant>;
}

/// Event time: slices close on input (batch runs and replays).
#[derive(Debug, Clone, Copy)]
pub struct EventTime {
    pub reorder_slices: u64,
}

impl SliceClock for EventTime {
    fn input_closes_slices(&self) -> bool {
        true
    }

    fn real_time(&self) -> bool {
        false
    }

    fn reorder_slices(&self) -> u64 {
        self.reorder_slices
    }

    fn stream_opened(&mut self, _stream: usize, _name: &Arc<str>, _epoch0: Timestamp) {}

    fn next_close(&self) -> Option<Instant> {
        None
    }

    async fn wait_until(&self, _at: Instant) {
        std::future::pending().await
    }

    fn due(&mut self, _now: Instant) -> Vec<Due> {
        Vec::new()
    }

    fn close_time(&self, _stream: usize, _slice: i64) -> Option<Instant> {
        None
    }
}

/// Event time while the source has a backlog, the wall clock once it has caught up
/// (distributed mode, SPEC §12): a restarted host replays what it missed as fast as
/// its crews go, then follows the live input. The wall clock counts a stream's slices
/// from its `epoch0` in real time, so the switch closes every slice that is past.
pub struct CatchUp {
    pub event_time: EventTime,
    pub wall: WallClock,
    /// Set by the source while it has nothing pending.
    pub caught_up: Arc<AtomicBool>,
}

impl CatchUp {
    fn live(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }
}

impl SliceClock for CatchUp {
    fn input_closes_slices(&self) -> bool {
        !self.live()
    }

    fn real_time(&self) -> bool {
        true
    }

    fn reorder_slices(&self) -> u64 {
        self.event_time.reorder_slices
    }

    fn stream_opened(&mut self, stream: usize, name: &Arc<str>, epoch0: Timestamp) {
        self.wall.stream_opened(stream, name, epoch0);
    }

    fn next_close(&self) -> Option<Instant> {
        self.wall.next_close().filter(|_| self.live())
    }

    async fn wait_until(&self, at: Instant) {
        self.wall.wait_until(at).await;
    }

    fn due(&mut self, now: Instant) -> Vec<Due> {
        if self.live() {
            self.wall.due(now)
        } else {
            Vec::new()
        }
    }

    fn close_time(&self, stream: usize, slice: i64) -> Option<Instant> {
        self.wall.close_time(stream, slice)
    }
}

/// The clock a host runs with: event time for batch runs and replays, the wall clock
/// for live runs, and both for distributed ones.
pub enum Clock {
    EventTime(EventTime),
    Wall(WallClock),
    CatchUp(CatchUp),
}

impl SliceClock for Clock {
    fn input_closes_slices(&self) -> bool {
        match self {
            Clock::EventTime(clock) => clock.input_closes_slices(),
            Clock::Wall(clock) => clock.input_closes_slices(),
            Clock::CatchUp(clock) => clock.input_closes_slices(),
        }
    }

    fn real_time(&self) -> bool {
        match self {
            Clock::EventTime(clock) => clock.real_time(),
            Clock::Wall(clock) => clock.real_time(),
            Clock::CatchUp(clock) => clock.real_time(),
        }
    }

    fn reorder_slices(&self) -> u64 {
        match self {
            Clock::EventTime(clock) => clock.reorder_slices(),
            Clock::Wall(clock) => clock.reorder_slices(),
            Clock::CatchUp(clock) => clock.reorder_slices(),
        }
    }

    fn stream_opened(&mut self, stream: usize, name: &Arc<str>, epoch0: Timestamp) {
        match self {
            Clock::EventTime(clock) => clock.stream_opened(stream, name, epoch0),
            Clock::Wall(clock) => clock.stream_opened(stream, name, epoch0),
            Clock::CatchUp(clock) => clock.stream_opened(stream, name, epoch0),
        }
    }

    fn next_close(&self) -> Option<Instant> {
        match self {
            Clock::EventTime(clock) => clock.next_close(),
            Clock::Wall(clock) => clock.next_close(),
            Clock::CatchUp(clock) => clock.next_close(),
        }
    }

    async fn wait_until(&self, at: Instant) {
        match self {
            Clock::EventTime(clock) => clock.wait_until(at).await,
            Clock::Wall(clock) => clock.wait_until(at).await,
            Clock::CatchUp(clock) => clock.wait_until(at).await,
        }
    }

    fn due(&mut self, now: Instant) -> Vec<Due> {
        match self {
            Clock::EventTime(clock) => clock.due(now),
            Clock::Wall(clock) => clock.due(now),
            Clock::CatchUp(clock) => clock.due(now),
        }
    }

    fn close_time(&self, stream: usize, slice: i64) -> Option<Instant> {
        match self {
            Clock::EventTime(clock) => clock.close_time(stream, slice),
            Clock::Wall(clock) => clock.close_time(stream, slice),
            Clock::CatchUp(clock) => clock.close_time(stream, slice),
        }
    }
}
