//! The scheduler's handles into the metrics registry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::metrics::{CrewTimers, Metrics};

/// The scheduler's handles into [`Metrics`]: looked up once per crew, stream and
/// action kind, so the per-event cost is a hash lookup and an atomic add.
pub struct RunMetrics {
    metrics: Arc<Metrics>,
    /// By crew index.
    crews: Vec<CrewTimers>,
    /// `events_received_total` by stream index.
    events: Vec<Counter>,
    actions: HashMap<String, Counter>,
}

impl RunMetrics {
    pub fn new<'a>(metrics: Arc<Metrics>, crews: impl IntoIterator<Item = &'a str>) -> Self {
        RunMetrics {
            crews: crews.into_iter().map(|c| metrics.crew_timers(c)).collect(),
            metrics,
            events: Vec::new(),
            actions: HashMap::new(),
        }
    }

    /// A crew added while the run goes on (hot reload) gets the next index.
    pub fn add_crew(&mut self, crew: &str) {
        self.crews.push(self.metrics.crew_timers(crew));
    }

    /// The stream that gets the next index has its first event.
    pub fn stream_opened(&mut self, stream: &str) {
        self.events.push(self.metrics.events_received(stream));
    }

    pub fn event(&mut self, stream: usize) {
        self.events[stream].inc();
    }

    /// Counts actions by kind; `kinds` is mostly runs of one kind, counted at once.
    pub fn actions<'k>(&mut self, kinds: impl IntoIterator<Item = &'k str>) {
        let mut run: Option<(&str, u64)> = None;
        for kind in kinds {
            match &mut run {
                Some((current, count)) if *current == kind => *count += 1,
                _ => {
                    if let Some((done, count)) = run.replace((kind, 1)) {
                        self.count_actions(done, count);
                    }
                }
            }
        }
        if let Some((kind, count)) = run {
            self.count_actions(kind, count);
        }
    }

    fn count_actions(&mut self, kind: &str, count: u64) {
        cached(&mut self.actions, kind, |k| self.metrics.actions_sent(k)).inc_by(count);
    }

    /// A call of crew `crew` (by index) took `call`, of which the runner had it for
    /// `runner_time` (if it answered); in live mode it ended `lag` after its slice closed.
    pub fn call_done(
        &self,
        crew: usize,
        call: Duration,
        runner_time: Option<Duration>,
        lag: Option<Duration>,
    ) {
        let timers = &self.crews[crew];
        timers.call.observe(call.as_secs_f64());
        if let Some(lag) = lag {
            timers.slice_lag.observe(lag.as_secs_f64());
            if let Some(runner_time) = runner_time {
                timers
                    .slice_host
                    .observe(lag.saturating_sub(runner_time).as_secs_f64());
            }
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

fn cached<'m>(
    map: &'m mut HashMap<String, Counter>,
    key: &str,
    make: impl FnOnce(&str) -> Counter,
) -> &'m Counter {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), make(key));
    }
    &map[key]
}
