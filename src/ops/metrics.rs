//! Prometheus metrics (SPEC §8): one registry, built where the host starts; `http.rs`
//! serves it.
//!
//! `prometheus-client` (the Prometheus project's own crate) over the `prometheus` crate:
//! typed label sets, no global registry, and scrape-time collectors, which read crew
//! state straight from the supervisor instead of mirroring it into gauges.
//! Hot paths hold handles ([`Counter`], [`Histogram`]) looked up once, so counting an
//! event is one atomic add.

use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::health::BrokerLink;
use super::recent::RecentCalls;
use crate::pool::{CrewStatus, StatusHandle};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrewLabel {
    crew: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    crew: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    crew: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    crew: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    crew: String,
    model: String,
    /// `prompt` or `completion`.
    r#type: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms up to ~65 s, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Fine steps up to 10 ms, for times that should stay at a few milliseconds.
fn fine_histogram() -> Histogram {
    const MS: [f64; 23] = [
        0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0,
        100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
    ];
    Histogram::new(MS.iter().map(|ms| ms / 1000.0))
}

/// Every metric of the host. Cheap to share behind an `Arc`; all updates are atomic.
pub struct Metrics {
    registry: Registry,
    slice_lag: HistogramFamily<CrewLabel>,
    slice_host: HistogramFamily<CrewLabel>,
    crew_call: HistogramFamily<CrewLabel>,
    actions_sent: Family<KindLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    events_received: Family<StreamLabel, Counter>,
    context_bytes: Family<StreamLabel, Gauge>,
    heartbeats: Counter,
    late_events: Counter,
    events_overflowed: Counter,
    slice_close_delay: Histogram,
    commit: Histogram,
    reloads: Family<ReloadLabels, Counter>,
    llm_requests: Family<ModelLabels, Counter>,
    llm_tokens: Family<TokenLabels, Counter>,
    llm_cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    llm_request: Histogram,
    /// The last calls, for the web page.
    recent: Arc<RecentCalls>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The registry with every metric; `crews`, when given, feeds `crew_up` and
    /// `crew_restarts_total` at scrape time.
    pub fn new(context_max_bytes: usize, crews: Option<StatusHandle>) -> Metrics {
        let mut registry = Registry::default();
        let slice_lag = HistogramFamily::<CrewLabel>::new_with_constructor(seconds_histogram);
        registry.register(
            "slice_lag_seconds",
            "Live mode: from a slice's wall-clock close to the end of a crew's call for it",
            slice_lag.clone(),
        );
        let slice_host = HistogramFamily::<CrewLabel>::new_with_constructor(fine_histogram);
        registry.register(
            "slice_host_seconds",
            "Live mode: the part of slice_lag_seconds outside the crew's runner (the host's \
             own work, and any wait behind the crew's earlier calls)",
            slice_host.clone(),
        );
        let crew_call = HistogramFamily::<CrewLabel>::new_with_constructor(seconds_histogram);
        registry.register(
            "crew_call_seconds",
            "Duration of crew calls, from dispatch to answer",
            crew_call.clone(),
        );
        let actions_sent = Family::default();
        registry.register(
            "actions_sent",
            "Actions written to the output, by kind",
            actions_sent.clone(),
        );
        let errors = Family::default();
        registry.register(
            "errors",
            "Error records, by crew (empty for input errors) and reason",
            errors.clone(),
        );
        let events_received = Family::default();
        registry.register(
            "events_received",
            "Valid input events, by stream",
            events_received.clone(),
        );
        let context_bytes = Family::default();
        registry.register(
            "context_bytes",
            "Size of the committed context (compact JSON), by stream",
            context_bytes.clone(),
        );
        let context_max = Gauge::<i64>::default();
        context_max.set(i64::try_from(context_max_bytes).unwrap_or(i64::MAX));
        registry.register(
            "context_max_bytes",
            "The context size cap (context_max_bytes)",
            context_max,
        );
        let heartbeats = Counter::default();
        registry.register(
            "heartbeats",
            "Heartbeat records (__hb) the host emitted",
            heartbeats.clone(),
        );
        let late_events = Counter::default();
        registry.register(
            "late_events",
            "Events for an already closed slice (placed or dropped by late_policy)",
            late_events.clone(),
        );
        let events_overflowed = Counter::default();
        registry.register(
            "events_overflowed",
            "Events over max_events_per_slice (dropped or collapsed by slice_overflow)",
            events_overflowed.clone(),
        );
        let slice_close_delay = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "slice_close_delay_seconds",
            "Live mode: how long after its due wall-clock time a slice was closed",
            slice_close_delay.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "crew_reloads",
            "Hot reload: crews by result (added, applied, removed, invalid, failed)",
            reloads.clone(),
        );
        let llm_requests = Family::default();
        registry.register(
            "llm_requests",
            "LLM gateway: requests by crew and model, answered or not",
            llm_requests.clone(),
        );
        let llm_tokens = Family::default();
        registry.register(
            "llm_tokens",
            "LLM gateway: tokens by crew, model and type (prompt, completion), from the \
             providers' usage",
            llm_tokens.clone(),
        );
        let llm_cost = Family::default();
        registry.register(
            "llm_cost_usd",
            "LLM gateway: cost in USD by crew and model, by llm.prices",
            llm_cost.clone(),
        );
        let llm_request = seconds_histogram();
        registry.register(
            "llm_request_seconds",
            "LLM gateway: one request, from the host asking the provider to its whole answer",
            llm_request.clone(),
        );
        let commit = fine_histogram();
        registry.register(
            "commit_seconds",
            "Live and distributed runs: one step's commit sequence, from storing the \
             contexts through making the actions durable to acknowledging the input \
             (with NATS: the KV write, every action's publish acknowledged, the AckAll)",
            commit.clone(),
        );
        if let Some(crews) = crews {
            registry.register_collector(Box::new(CrewCollector(crews)));
        }
        Metrics {
            registry,
            slice_lag,
            slice_host,
            crew_call,
            actions_sent,
            errors,
            events_received,
            context_bytes,
            heartbeats,
            late_events,
            events_overflowed,
            slice_close_delay,
            commit,
            reloads,
            llm_requests,
            llm_tokens,
            llm_cost,
            llm_request,
            recent: Arc::default(),
        }
    }

    /// The timers of one crew.
    /// Also exports the NATS connection: `nats_connected` and `nats_reconnects_total`.
    pub fn watching(mut self, link: Arc<BrokerLink>) -> Metrics {
        self.registry
            .register_collector(Box::new(BrokerCollector(link)));
        self
    }

    pub fn crew_timers(&self, crew: &str) -> CrewTimers {
        let label = CrewLabel { crew: crew.into() };
        CrewTimers {
            call: self.crew_call.get_or_create(&label).clone(),
            slice_lag: self.slice_lag.get_or_create(&label).clone(),
            slice_host: self.slice_host.get_or_create(&label).clone(),
        }
    }

    pub fn events_received(&self, stream: &str) -> Counter {
        let label = StreamLabel {
            stream: stream.into(),
        };
        self.events_received.get_or_create(&label).clone()
    }

    pub fn actions_sent(&self, kind: &str) -> Counter {
        let label = KindLabel { kind: kind.into() };
        self.actions_sent.get_or_create(&label).clone()
    }

    /// Exports `errors_total{crew,reason}` at 0 for each `(crew, reason)`, so that
    /// `rate()` and alerts work before the first error (SPEC §8).
    pub fn zero_errors<'a>(&self, labels: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (crew, reason) in labels {
            // Looking a series up makes it, at 0.
            let _ = self.errors.get_or_create(&ErrorLabels {
                crew: crew.into(),
                reason: reason.into(),
            });
        }
    }

    pub fn error(&self, crew: Option<&str>, reason: &str) {
        let label = ErrorLabels {
            crew: crew.unwrap_or_default().into(),
            reason: reason.into(),
        };
        self.errors.get_or_create(&label).inc();
    }

    pub fn context_bytes(&self, stream: &str, bytes: usize) {
        let label = StreamLabel {
            stream: stream.into(),
        };
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.context_bytes.get_or_create(&label).set(bytes);
    }

    pub fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    pub fn events_overflowed(&self, count: u64) {
        self.events_overflowed.inc_by(count);
    }

    pub fn late_event(&self) {
        self.late_events.inc();
    }

    pub fn slice_closed_after(&self, delay: Duration) {
        self.slice_close_delay.observe(delay.as_secs_f64());
    }

    /// Hot reload looked at `crew` (`""` for the folder as a whole) with `result`.
    /// One LLM request of `crew` through the gateway.
    pub fn llm_used(&self, crew: &str, usage: &crate::llm::LlmUsage) {
        let model = ModelLabels {
            crew: crew.to_owned(),
            model: usage.model.clone(),
        };
        self.llm_requests.get_or_create(&model).inc();
        for (kind, tokens) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
        ] {
            let labels = TokenLabels {
                crew: model.crew.clone(),
                model: model.model.clone(),
                r#type: kind.to_owned(),
            };
            self.llm_tokens.get_or_create(&labels).inc_by(tokens);
        }
        self.llm_cost.get_or_create(&model).inc_by(usage.cost_usd);
        self.llm_request.observe(usage.seconds);
    }

    /// Exports `crew_reloads_total` at 0 for `crews` and every result of theirs, and for
    /// an invalid folder (crew `""`).
    pub fn zero_reloads<'a>(&self, crews: impl IntoIterator<Item = &'a str>) {
        let folder = std::iter::once(("", "invalid"));
        let of_crews = crews.into_iter().flat_map(|crew| {
            ["added", "applied", "removed", "failed"].map(|result| (crew, result))
        });
        for (crew, result) in folder.chain(of_crews) {
            let _ = self.reloads.get_or_create(&ReloadLabels {
                crew: crew.into(),
                result: result.into(),
            });
        }
    }

    pub fn crew_reloaded(&self, crew: &str, result: &str) {
        let label = ReloadLabels {
            crew: crew.into(),
            result: result.into(),
        };
        self.reloads.get_or_create(&label).inc();
    }

    /// The last calls the scheduler finished.
    pub fn recent_calls(&self) -> &Arc<RecentCalls> {
        &self.recent
    }

    pub fn committed_in(&self, took: Duration) {
        self.commit.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// One crew's histograms.
pub struct CrewTimers {
    /// `crew_call_seconds`
    pub(super) call: Histogram,
    /// `slice_lag_seconds`
    pub(super) slice_lag: Histogram,
    /// `slice_host_seconds`
    pub(super) slice_host: Histogram,
}

/// `nats_connected` and `nats_reconnects_total`, read from the link at scrape time.
#[derive(Debug)]
struct BrokerCollector(Arc<BrokerLink>);

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let connected = self.0.connected.load(std::sync::atomic::Ordering::Relaxed);
        let reconnects = self.0.reconnects.load(std::sync::atomic::Ordering::Relaxed);
        ConstGauge::new(i64::from(connected)).encode(encoder.encode_descriptor(
            "nats_connected",
            "1 while the host is connected to NATS",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?)?;
        ConstCounter::new(reconnects).encode(encoder.encode_descriptor(
            "nats_reconnects",
            "Reconnects to NATS since the host started",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?)?;
        Ok(())
    }
}

/// `crew_up` and `crew_restarts_total`, read from the pool at scrape time.
#[derive(Debug)]
struct CrewCollector(StatusHandle);

impl Collector for CrewCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let crews = self.0.snapshot();
        let mut up = encoder.encode_descriptor(
            "crew_up",
            "1 while the crew's runner is ready or busy, else 0",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for crew in &crews {
            let value = i64::from(crew.state.is_up());
            ConstGauge::new(value).encode(up.encode_family(&label(crew))?)?;
        }
        let mut restarts = encoder.encode_descriptor(
            "crew_restarts",
            "Runner restarts since the host started",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for crew in &crews {
            ConstCounter::new(u64::from(crew.restarts))
                .encode(restarts.encode_family(&label(crew))?)?;
        }
        let mut start = encoder.encode_descriptor(
            "crew_start_seconds",
            "How long the crew's last runner start took, spawn to ready, by start mode",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for crew in &crews {
            if let (Some(mode), Some(ms)) = (crew.start_mode, crew.start_ms) {
                let labels = StartLabel {
                    crew: crew.crew.clone(),
                    mode: mode.to_owned(),
                };
                ConstGauge::new(ms / 1000.0).encode(start.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StartLabel {
    crew: String,
    mode: String,
}

fn label(crew: &CrewStatus) -> CrewLabel {
    CrewLabel {
        crew: crew.crew.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::LlmUsage;

    #[test]
    fn llm_requests_are_counted_by_crew_and_model_with_tokens_by_type_and_cost() {
        let metrics = Metrics::new(4096, None);
        let usage = |prompt, completion, cost_usd| LlmUsage {
            model: "openai/gpt-4o-mini".into(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost_usd,
            seconds: 0.25,
            ok: true,
        };
        metrics.llm_used("writer", &usage(100, 20, 0.5));
        metrics.llm_used("writer", &usage(50, 5, 0.25));
        let text = metrics.encode();
        let labels = r#"crew="writer",model="openai/gpt-4o-mini""#;
        for line in [
            format!("llm_requests_total{{{labels}}} 2"),
            format!("llm_tokens_total{{{labels},type=\"prompt\"}} 150"),
            format!("llm_tokens_total{{{labels},type=\"completion\"}} 25"),
            format!("llm_cost_usd_total{{{labels}}} 0.75"),
            "llm_request_seconds_count 2".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
        }
    }
}
