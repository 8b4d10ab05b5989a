//! Time slices (SPEC §2): which slice an event belongs to, and when a slice closes.
//! Pure logic: no clock, no I/O.
//!
//! Per stream, `epoch0` is the first event's `ts` and `slice = floor((ts - epoch0) /
//! slice_ms)` in integer microseconds (negative before epoch0). Slices below the
//! *watermark* are closed. In event time (batch mode), reading an event of slice `s` moves
//! the watermark to `s - reorder_slices`; on the wall clock (live mode) only
//! [`Slicer::close_below`] moves it, as the scheduler's slice clock says. End of input closes
//! everything. Streams are known by the index [`Slicer::open_stream`] gives them, which
//! every later stage uses too, so an event's stream is looked up by name once.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{LatePolicy, OverflowPolicy};
use crate::model::{SharedEvent, Timestamp};

/// The watermark after end of input: every slice is closed.
pub const END: i64 = i64::MAX;
/// Slice numbers are clamped to this magnitude so offsets can be added without overflow.
const SLICE_LIMIT: i64 = i64::MAX / 4;

/// `floor((ts - epoch0) / slice_us)`, clamped to a range where offsets cannot overflow.
pub fn slice_of(ts: Timestamp, epoch0: Timestamp, slice_us: i64) -> i64 {
    let delta = i128::from(ts.as_micros()) - i128::from(epoch0.as_micros());
    let slice = delta.div_euclid(i128::from(slice_us));
    slice.clamp(-i128::from(SLICE_LIMIT), i128::from(SLICE_LIMIT)) as i64
}

/// Start of slice `n` of a stream.
pub fn slice_start(epoch0: Timestamp, slice_us: i64, n: i64) -> Timestamp {
    Timestamp::from_micros(
        epoch0
            .as_micros()
            .saturating_add(n.saturating_mul(slice_us)),
    )
}

/// What the slicer tells the scheduler.
#[derive(Debug)]
pub enum Sliced {
    /// Slices `from..upto` of `stream` are now closed; `slices` holds the non-empty ones,
    /// in increasing order. `from` is the stream's first open slice when it starts.
    Closed {
        stream: usize,
        epoch0: Timestamp,
        from: i64,
        upto: i64,
        slices: Vec<(i64, Vec<SharedEvent>)>,
        /// Per slice, the events that went over `max_events_per_slice` (dropped or
        /// collapsed); only slices that had any.
        overflowed: Vec<(i64, u64)>,
    },
    /// An event for an already closed slice; `placed` is where it went (`None`: dropped).
    Late {
        event: SharedEvent,
        slice: i64,
        placed: Option<i64>,
    },
}

struct StreamSlices {
    /// For the order in which the end of input closes streams.
    name: Arc<str>,
    index: usize,
    epoch0: Timestamp,
    watermark: i64,
    max_seen: i64,
    open: BTreeMap<i64, Vec<SharedEvent>>,
    /// Events over the cap, per open slice.
    overflowed: BTreeMap<i64, u64>,
}

pub struct Slicer {
    slice_us: i64,
    reorder: i64,
    late_policy: LatePolicy,
    /// By stream index.
    streams: Vec<StreamSlices>,
    /// Most events one stream's slice holds (`max_events_per_slice`), and what happens
    /// to the ones past it.
    cap: (usize, OverflowPolicy),
    /// Replay: events of slices that start before this are not filed.
    skip_before: Option<Timestamp>,
    /// Events not filed for `skip_before`.
    skipped: u64,
}

impl Slicer {
    pub fn new(slice_ms: u64, reorder_slices: u64, late_policy: LatePolicy) -> Self {
        Slicer {
            slice_us: i64::try_from(slice_ms.saturating_mul(1000)).unwrap_or(i64::MAX),
            reorder: i64::try_from(reorder_slices)
                .unwrap_or(SLICE_LIMIT)
                .min(SLICE_LIMIT),
            late_policy,
            streams: Vec::new(),
            cap: (usize::MAX, OverflowPolicy::Drop),
            skip_before: None,
            skipped: 0,
        }
    }

    /// Closes the slices of `stream` below `upto`, if any are still open.
    pub fn close_below(&mut self, stream: usize, upto: i64) -> Option<Sliced> {
        let stream = &mut self.streams[stream];
        (upto > stream.watermark).then(|| stream.close_below(upto))
    }

    /// The first slice a stream has open: out-of-order events before its epoch0 within
    /// `reorder_slices` land in negative slices.
    pub fn first_slice(&self) -> i64 {
        -self.reorder
    }

    /// Registers a stream whose slices count from `epoch0` and start open at `first`;
    /// returns its index.
    pub fn open_stream(&mut self, name: Arc<str>, epoch0: Timestamp, first: i64) -> usize {
        let index = self.streams.len();
        self.streams.push(StreamSlices {
            name,
            index,
            epoch0,
            watermark: first,
            max_seen: first.max(0),
            open: BTreeMap::new(),
            overflowed: BTreeMap::new(),
        });
        index
    }

    /// Caps each stream's slice at `max_events` events; see [`OverflowPolicy`].
    pub fn with_cap(mut self, max_events: usize, policy: OverflowPolicy) -> Self {
        self.cap = (max_events, policy);
        self
    }

    /// Leaves out the events of slices that start before `from`; they still fix their
    /// stream's epoch0, so the other slices keep their numbers.
    pub fn skipping_slices_before(mut self, from: Option<Timestamp>) -> Self {
        self.skip_before = from;
        self
    }

    /// Events left out by [`Slicer::skipping_slices_before`].
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    pub fn slice_us(&self) -> i64 {
        self.slice_us
    }

    /// Files one event of `stream`; appends whatever it closes (or its lateness) to `out`.
    /// With `close_on_input` (event time), the event closes the slices more than
    /// `reorder_slices` behind the newest. Returns the slice the event was filed in, if it
    /// was kept.
    pub fn push(
        &mut self,
        stream: usize,
        event: SharedEvent,
        close_on_input: bool,
        out: &mut Vec<Sliced>,
    ) -> Option<i64> {
        let reorder = self.reorder;
        let stream = &mut self.streams[stream];
        let mut slice = slice_of(event.ts, stream.epoch0, self.slice_us);
        if self
            .skip_before
            .is_some_and(|from| slice_start(stream.epoch0, self.slice_us, slice) < from)
        {
            self.skipped += 1;
            return None;
        }
        if slice < stream.watermark {
            let placed = match self.late_policy {
                LatePolicy::Next => Some(stream.watermark),
                LatePolicy::Drop => None,
            };
            out.push(Sliced::Late {
                event: event.clone(),
                slice,
                placed,
            });
            match placed {
                Some(open) => slice = open,
                None => return None,
            }
        }
        let events = stream.open.entry(slice).or_default();
        match self.cap {
            (max, _) if events.len() < max => events.push(event),
            (_, policy) => {
                *stream.overflowed.entry(slice).or_default() += 1;
                if policy == OverflowPolicy::Collapse {
                    // The newest value of a kind wins; a kind the slice lacks is dropped.
                    if let Some(kept) = events.iter_mut().rev().find(|e| e.kind == event.kind) {
                        *kept = event;
                    }
                }
            }
        }
        stream.max_seen = stream.max_seen.max(slice);
        let horizon = stream.max_seen - reorder;
        if close_on_input && horizon > stream.watermark {
            out.push(stream.close_below(horizon));
        }
        Some(slice)
    }

    /// End of input: closes every slice of every stream, streams in name order.
    pub fn finish(&mut self, out: &mut Vec<Sliced>) {
        let mut streams: Vec<&mut StreamSlices> = self.streams.iter_mut().collect();
        streams.sort_by(|a, b| a.name.cmp(&b.name));
        for stream in streams {
            if stream.watermark < END {
                out.push(stream.close_below(END));
            }
        }
    }
}

impl StreamSlices {
    fn close_below(&mut self, upto: i64) -> Sliced {
        let from = std::mem::replace(&mut self.watermark, upto);
        Sliced::Closed {
            stream: self.index,
            epoch0: self.epoch0,
            from,
            upto,
            slices: take_below(&mut self.open, upto),
            overflowed: take_below(&mut self.overflowed, upto),
        }
    }
}

/// Removes and returns the entries of slices below `upto`, in slice order.
fn take_below<V>(slices: &mut BTreeMap<i64, V>, upto: i64) -> Vec<(i64, V)> {
    let still_open = match upto {
        END => BTreeMap::new(),
        _ => slices.split_off(&upto),
    };
    std::mem::replace(slices, still_open).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Event;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn event(stream: &str, ms: i64, kind: &str) -> SharedEvent {
        Arc::new(Event::new(
            Timestamp::from_micros(1_700_000_000_000_000 + ms * 1000),
            kind.into(),
            stream.into(),
            serde_json::value::RawValue::from_string("null".into()).unwrap(),
        ))
    }

    /// Files `event` by its stream's name, opening the stream on first sight, as the
    /// scheduler does; event time unless `live`.
    fn push(slicer: &mut Slicer, event: SharedEvent, live: bool, out: &mut Vec<Sliced>) {
        let stream = match slicer
            .streams
            .iter()
            .position(|s| *s.name == *event.stream_id)
        {
            Some(stream) => stream,
            None => {
                let first = slicer.first_slice();
                slicer.open_stream(event.stream_id.as_str().into(), event.ts, first)
            }
        };
        slicer.push(stream, event, !live, out);
    }

    fn name(slicer: &Slicer, stream: usize) -> Arc<str> {
        slicer.streams[stream].name.clone()
    }

    /// (stream, slice, kinds) of every closed non-empty slice, plus late notices.
    fn run(slicer: &mut Slicer, events: &[(&str, i64)]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, (stream, ms)) in events.iter().enumerate() {
            push(
                slicer,
                event(stream, *ms, &format!("e{i}")),
                false,
                &mut out,
            );
        }
        slicer.finish(&mut out);
        out.iter()
            .flat_map(|item| match item {
                Sliced::Closed { stream, slices, .. } => slices
                    .iter()
                    .map(|(n, events)| {
                        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
                        format!("{}@{n}:{}", name(slicer, *stream), kinds.join(","))
                    })
                    .collect::<Vec<_>>(),
                Sliced::Late {
                    event,
                    slice,
                    placed,
                } => vec![format!("late {} @{slice} -> {placed:?}", event.kind)],
            })
            .collect()
    }

    #[test]
    fn a_full_slice_drops_or_collapses_and_counts_per_slice() {
        let events = [
            ("s", 0, "a"),
            ("s", 1, "b"),
            ("s", 2, "a"),
            ("s", 3, "c"),
            ("t", 4, "a"),
            // Slice 1 of s closes slice 0 while its own overflow is still open.
            ("s", 600, "a"),
            ("s", 601, "a"),
            ("s", 602, "a"),
        ];
        let slice_of = |policy| {
            let mut slicer = Slicer::new(500, 0, LatePolicy::Next).with_cap(2, policy);
            let mut out = Vec::new();
            for (stream, ms, kind) in events {
                let mut e = (*event(stream, ms, kind)).clone();
                e.payload = serde_json::value::RawValue::from_string(ms.to_string()).unwrap();
                push(&mut slicer, Arc::new(e), false, &mut out);
            }
            slicer.finish(&mut out);
            let mut kept = Vec::new();
            let mut overflows = Vec::new();
            for item in &out {
                if let Sliced::Closed {
                    stream,
                    slices,
                    overflowed,
                    ..
                } = item
                {
                    let stream = name(&slicer, *stream);
                    for (_, events) in slices {
                        kept.extend(
                            events
                                .iter()
                                .map(|e| format!("{stream}:{}={}", e.kind, e.payload.get())),
                        );
                    }
                    overflows.extend(
                        overflowed
                            .iter()
                            .map(|&(n, count)| format!("{stream}@{n}:{count}")),
                    );
                }
            }
            (kept, overflows)
        };
        let (kept, overflows) = slice_of(OverflowPolicy::Drop);
        assert_eq!(kept, ["s:a=0", "s:b=1", "s:a=600", "s:a=601", "t:a=4"]);
        assert_eq!(overflows, ["s@0:2", "s@1:1"]);
        let (kept, overflows) = slice_of(OverflowPolicy::Collapse);
        assert_eq!(kept, ["s:a=2", "s:b=1", "s:a=600", "s:a=602", "t:a=4"]);
        assert_eq!(overflows, ["s@0:2", "s@1:1"]);
    }

    #[test]
    fn slices_floor_towards_negative_infinity() {
        let epoch0 = Timestamp::from_micros(1_000_000);
        let at = |us| slice_of(Timestamp::from_micros(us), epoch0, 500_000);
        assert_eq!(at(1_000_000), 0);
        assert_eq!(at(1_499_999), 0);
        assert_eq!(at(1_500_000), 1);
        assert_eq!(at(999_999), -1);
        assert_eq!(at(500_000), -1);
        assert_eq!(at(499_999), -2);
        assert_eq!(slice_start(epoch0, 500_000, -2), Timestamp::from_micros(0));
    }

    #[test]
    fn a_later_slice_closes_earlier_ones_and_streams_are_independent() {
        let mut slicer = Slicer::new(100, 0, LatePolicy::Next);
        let got = run(
            &mut slicer,
            &[
                ("a", 0),
                ("b", 50),
                ("a", 40),
                ("a", 120),
                ("b", 140),
                ("a", 350),
            ],
        );
        assert_eq!(got, ["a@0:e0,e2", "a@1:e3", "a@3:e5", "b@0:e1,e4"]);
    }

    #[test]
    fn late_events_go_to_the_oldest_open_slice_or_are_dropped() {
        let events = [("s", 0), ("s", 150), ("s", 20), ("s", 160)];
        let got = run(&mut Slicer::new(100, 0, LatePolicy::Next), &events);
        assert_eq!(got, ["s@0:e0", "late e2 @0 -> Some(1)", "s@1:e1,e2,e3"]);
        let got = run(&mut Slicer::new(100, 0, LatePolicy::Drop), &events);
        assert_eq!(got, ["s@0:e0", "late e2 @0 -> None", "s@1:e1,e3"]);
    }

    #[test]
    fn live_slices_close_only_when_told() {
        let mut slicer = Slicer::new(100, 0, LatePolicy::Next);
        let mut out = Vec::new();
        push(&mut slicer, event("s", 0, "e0"), true, &mut out);
        push(&mut slicer, event("s", 950, "e1"), true, &mut out);
        assert!(out.is_empty(), "events never close slices in live mode");
        let Some(Sliced::Closed {
            from, upto, slices, ..
        }) = slicer.close_below(0, 3)
        else {
            panic!("slices 0..3 close")
        };
        assert_eq!((from, upto, slices.len()), (0, 3, 1));
        assert!(slicer.close_below(0, 2).is_none(), "already closed");
        push(&mut slicer, event("s", 120, "late"), true, &mut out);
        assert!(matches!(
            out[..],
            [Sliced::Late {
                slice: 1,
                placed: Some(3),
                ..
            }]
        ));
    }

    #[test]
    fn reorder_slices_tolerates_out_of_order_input_including_negative_slices() {
        let events = [
            ("s", 0),
            ("s", -30),
            ("s", 150),
            ("s", 20),
            ("s", 350),
            ("s", 10),
        ];
        let got = run(&mut Slicer::new(100, 1, LatePolicy::Next), &events);
        assert_eq!(
            got,
            [
                "s@-1:e1",
                "s@0:e0,e3",
                "s@1:e2",
                "late e5 @0 -> Some(2)",
                "s@2:e5",
                "s@3:e4"
            ]
        );
    }

    proptest! {
        /// Every event lands exactly once, in its own slice unless it was late, and each
        /// stream's slices close in increasing order over contiguous ranges.
        #[test]
        fn every_event_lands_once_in_order(
            raw in prop::collection::vec((0usize..3, -2_000i64..2_000), 1..200),
            reorder in 0u64..3,
            slice_ms in 1u64..300,
        ) {
            let mut slicer = Slicer::new(slice_ms, reorder, LatePolicy::Next);
            let mut out = Vec::new();
            let streams = ["a", "b", "c"];
            for (i, (stream, ms)) in raw.iter().enumerate() {
                push(&mut slicer, event(streams[*stream], *ms, &format!("e{i}")), false, &mut out);
            }
            slicer.finish(&mut out);
            let mut seen = vec![0; raw.len()];
            let mut late = vec![false; raw.len()];
            let mut upto: HashMap<usize, i64> = HashMap::new();
            for item in &out {
                match item {
                    Sliced::Late { event, .. } => late[event.kind[1..].parse::<usize>().unwrap()] = true,
                    Sliced::Closed { stream, epoch0, from, upto: end, slices, .. } => {
                        if let Some(previous) = upto.insert(*stream, *end) {
                            prop_assert_eq!(previous, *from);
                        }
                        prop_assert!(from < end);
                        let mut last = i64::MIN;
                        for (n, events) in slices {
                            prop_assert!(*n >= *from && *n < *end && *n > last);
                            last = *n;
                            for event in events {
                                let i: usize = event.kind[1..].parse().unwrap();
                                seen[i] += 1;
                                let own = slice_of(event.ts, *epoch0, slice_ms as i64 * 1000);
                                prop_assert!(own == *n || late[i]);
                                // Only slices more than `reorder` behind the newest are late.
                                prop_assert!(!late[i] || own < *n);
                            }
                        }
                    }
                }
            }
            prop_assert!(seen.iter().all(|&count| count == 1));
            prop_assert!(upto.values().all(|&end| end == END));
        }
    }
}
