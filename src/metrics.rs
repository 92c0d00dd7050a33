//! Process-lifetime counters, exposed in the Prometheus text format together with
//! gauges read from the store at scrape time (so they are right across restarts and
//! across nodes sharing one database).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::calls::model::EndReason;
use crate::store::LiveCounts;

/// Counters the call service bumps as calls change.
#[derive(Debug)]
pub struct Metrics {
    calls_started: AtomicU64,
    call_joins: AtomicU64,
    /// Indexed by `EndReason as usize` (declaration order, as in `EndReason::ALL`).
    calls_ended: [AtomicU64; EndReason::ALL.len()],
    /// Seconds of connected time of ended calls, and how many such calls.
    duration_seconds_sum: AtomicU64,
    duration_count: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            calls_started: AtomicU64::new(0),
            call_joins: AtomicU64::new(0),
            calls_ended: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_seconds_sum: AtomicU64::new(0),
            duration_count: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn call_started(&self) {
        self.calls_started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn participant_joined(&self) {
        self.call_joins.fetch_add(1, Ordering::Relaxed);
    }

    /// A call ended after `connected_seconds` of conversation (0 if it never connected).
    pub fn call_ended(&self, reason: EndReason, connected_seconds: i64) {
        self.calls_ended[reason as usize].fetch_add(1, Ordering::Relaxed);
        if connected_seconds > 0 {
            self.duration_seconds_sum
                .fetch_add(connected_seconds.unsigned_abs(), Ordering::Relaxed);
            self.duration_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of these counters and of `live`.
    pub fn render(&self, live: &LiveCounts) -> String {
        let mut out = self.render_counters();
        let by_state: Vec<(String, u64)> = live
            .calls_by_state
            .iter()
            .map(|(state, n)| (format!("{{state=\"{state}\"}}"), n.unsigned_abs()))
            .collect();
        family(
            &mut out,
            "huddle_active_calls",
            "gauge",
            "Calls not yet ended, by state.",
            &by_state,
        );
        family(
            &mut out,
            "huddle_participants_connected",
            "gauge",
            "Participants currently in an active call.",
            &[(String::new(), live.participants_connected.unsigned_abs())],
        );
        out
    }

    /// The counters alone, kept in memory: what `/metrics` serves when the database,
    /// which the gauges of [`Metrics::render`] are read from, does not answer.
    pub fn render_counters(&self) -> String {
        let mut out = String::with_capacity(2048);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        family(
            &mut out,
            "huddle_calls_started_total",
            "counter",
            "Calls started since the process began.",
            &[(String::new(), load(&self.calls_started))],
        );
        family(
            &mut out,
            "huddle_call_joins_total",
            "counter",
            "Participants who joined a call since the process began.",
            &[(String::new(), load(&self.call_joins))],
        );
        let ended: Vec<(String, u64)> = EndReason::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{reason=\"{r}\"}}"),
                    load(&self.calls_ended[*r as usize]),
                )
            })
            .collect();
        family(
            &mut out,
            "huddle_calls_ended_total",
            "counter",
            "Calls ended since the process began, by reason.",
            &ended,
        );
        family(
            &mut out,
            "huddle_call_connected_seconds",
            "summary",
            "Connected time of calls that ended since the process began.",
            &[
                ("_sum".to_owned(), load(&self.duration_seconds_sum)),
                ("_count".to_owned(), load(&self.duration_count)),
            ],
        );
        out
    }
}

/// Appends one metric family: its HELP and TYPE lines, then a sample per label set
/// (`labels` is the text after the name: `{reason="normal"}`, `_sum`, or nothing).
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::model::CallState;

    #[test]
    fn renders_counters_and_gauges_in_prometheus_text() {
        let metrics = Metrics::default();
        metrics.call_started();
        metrics.call_ended(EndReason::Missed, 0);
        metrics.call_ended(EndReason::Normal, 42);
        let live = LiveCounts {
            calls_by_state: vec![(CallState::Ringing, 3)],
            participants_connected: 5,
        };
        let text = metrics.render(&live);
        assert!(
            text.contains(
                "# TYPE huddle_calls_started_total counter\nhuddle_calls_started_total 1\n"
            )
        );
        assert!(text.contains("huddle_calls_ended_total{reason=\"missed\"} 1\n"));
        assert!(text.contains("huddle_calls_ended_total{reason=\"declined\"} 0\n"));
        assert!(text.contains(
            "huddle_call_connected_seconds_sum 42\nhuddle_call_connected_seconds_count 1\n"
        ));
        assert!(text.contains("huddle_active_calls{state=\"ringing\"} 3\n"));
        assert!(text.contains("huddle_participants_connected 5\n"));
    }

    #[test]
    fn the_counters_render_without_the_database_gauges() {
        let metrics = Metrics::default();
        metrics.call_started();
        let text = metrics.render_counters();
        assert!(text.contains("huddle_calls_started_total 1\n"));
        assert!(!text.contains("huddle_active_calls"));
        assert!(!text.contains("huddle_participants_connected"));
    }
}
