//! What a run did: per-crew call statistics and the summary printed at the end.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::INPUT_REASONS;

/// Per-crew call statistics.
#[derive(Debug, Clone, Default)]
pub struct CrewStats {
    pub calls: u64,
    pub failures: u64,
    /// Call durations in microseconds: how long the runner had each call (for a failed
    /// one, from dispatch to failure).
    pub durations_us: Vec<u64>,
    /// LLM gateway use (SPEC §14): tokens (prompt + completion) and cost in USD.
    pub llm_tokens: u64,
    pub llm_cost_usd: f64,
}

impl CrewStats {
    /// The `p`-th percentile (0..=100) of call time, by nearest rank.
    pub fn percentile_ms(&self, p: usize) -> f64 {
        let mut sorted = self.durations_us.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
        sorted[rank - 1] as f64 / 1000.0
    }
}

/// What a run did; printed on stderr at the end.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub events: u64,
    /// Slices that held at least one event, over all streams.
    pub slices: u64,
    pub actions: u64,
    pub late_events: u64,
    pub context_conflicts: u64,
    /// Events over `max_events_per_slice`, dropped or collapsed.
    pub overflowed_events: u64,
    /// `replay --from-timestamp`: events of slices before it, not run.
    pub skipped_events: u64,
    /// Error records by reason.
    pub errors: BTreeMap<&'static str, u64>,
    /// Per crew, in run order.
    pub crews: Vec<(String, CrewStats)>,
    pub elapsed: Duration,
}

impl RunSummary {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Errors that are not about the input.
    pub fn run_errors(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(reason, _)| !INPUT_REASONS.contains(reason))
            .map(|(_, count)| count)
            .sum()
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        };
        writeln!(
            f,
            "live-crew: {} events, {} slices, {} actions, {} errors in {secs:.2}s ({rate:.0} events/s)",
            self.events,
            self.slices,
            self.actions,
            self.error_count()
        )?;
        if !self.errors.is_empty() {
            let by_reason: Vec<String> = self
                .errors
                .iter()
                .map(|(reason, count)| format!("{reason}: {count}"))
                .collect();
            writeln!(f, "  errors: {}", by_reason.join(", "))?;
        }
        if self.late_events > 0 || self.context_conflicts > 0 {
            writeln!(
                f,
                "  late events: {}, context conflicts: {}",
                self.late_events, self.context_conflicts
            )?;
        }
        if self.skipped_events > 0 {
            writeln!(
                f,
                "  events in slices before --from-timestamp (not replayed): {}",
                self.skipped_events
            )?;
        }
        if self.overflowed_events > 0 {
            writeln!(
                f,
                "  events over max_events_per_slice (dropped or collapsed): {}",
                self.overflowed_events
            )?;
        }
        if self.crews.is_empty() {
            return Ok(());
        }
        // A table, one row per crew, read at a glance.
        let width = self
            .crews
            .iter()
            .map(|(name, _)| name.len())
            .fold(4, usize::max);
        // Tokens and cost only once a crew used the LLM gateway.
        let llm = self.crews.iter().any(|(_, stats)| stats.llm_tokens > 0);
        write!(
            f,
            "  {:width$}  {:>7}  {:>7}  {:>8}  {:>8}",
            "crew", "calls", "failed", "p50 ms", "p99 ms"
        )?;
        if llm {
            write!(f, "  {:>9}  {:>9}", "tokens", "cost $")?;
        }
        writeln!(f)?;
        for (name, stats) in &self.crews {
            write!(
                f,
                "  {name:width$}  {:>7}  {:>7}  {:>8.1}  {:>8.1}",
                stats.calls,
                stats.failures,
                stats.percentile_ms(50),
                stats.percentile_ms(99)
            )?;
            if llm {
                write!(f, "  {:>9}  {:>9.4}", stats.llm_tokens, stats.llm_cost_usd)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crews_are_a_table() {
        let summary = RunSummary {
            events: 3,
            crews: vec![
                (
                    "greeter".into(),
                    CrewStats {
                        calls: 2,
                        failures: 1,
                        durations_us: vec![1500, 2500],
                        ..CrewStats::default()
                    },
                ),
                ("a".into(), CrewStats::default()),
            ],
            ..RunSummary::default()
        };
        let text = summary.to_string();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            rows,
            [
                "  crew       calls   failed    p50 ms    p99 ms",
                "  greeter        2        1       1.5       2.5",
                "  a              0        0       0.0       0.0",
            ],
            "{text}"
        );
    }

    #[test]
    fn tokens_and_cost_join_the_table_once_a_crew_used_the_gateway() {
        let summary = RunSummary {
            crews: vec![
                (
                    "writer".into(),
                    CrewStats {
                        calls: 1,
                        durations_us: vec![2000],
                        llm_tokens: 1234,
                        llm_cost_usd: 0.01234,
                        ..CrewStats::default()
                    },
                ),
                ("a".into(), CrewStats::default()),
            ],
            ..RunSummary::default()
        };
        let text = summary.to_string();
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            rows,
            [
                "  crew      calls   failed    p50 ms    p99 ms     tokens     cost $",
                "  writer        1        0       2.0       2.0       1234     0.0123",
                "  a             0        0       0.0       0.0          0     0.0000",
            ],
            "{text}"
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let stats = CrewStats {
            calls: 100,
            durations_us: (1..=100).map(|ms| ms * 1000).collect(),
            ..CrewStats::default()
        };
        assert_eq!(stats.percentile_ms(50), 50.0);
        assert_eq!(stats.percentile_ms(99), 99.0);
        assert_eq!(CrewStats::default().percentile_ms(99), 0.0);
    }
}
