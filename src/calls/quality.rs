//! Call quality reports and the MOS estimate stored with them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::model::{CallId, MetricSource};

/// A client's (or the media plane's) measurement of one participant's connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualityReport {
    /// Milliseconds.
    pub jitter: Option<f64>,
    /// Percent of packets lost, 0 to 100.
    pub packet_loss: Option<f64>,
    /// Milliseconds.
    pub round_trip_time: Option<f64>,
    /// Kilobits per second.
    pub bandwidth: Option<f64>,
    pub fps: Option<f64>,
    pub resolution: Option<String>,
    pub codec: Option<String>,
}

/// A row of `call_quality_metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityMetric {
    pub id: Uuid,
    pub call_id: CallId,
    pub participant_id: Uuid,
    pub timestamp: DateTime<Utc>,
    /// Who measured it.
    pub source: MetricSource,
    pub report: QualityReport,
    /// Estimated mean opinion score, 1 (bad) to 4.5 (excellent); see [`mos`].
    pub quality: Option<f64>,
}

/// Mean opinion score from network figures, by the simplified ITU-T G.107 E-model
/// that VoIP monitors commonly use: effective latency = RTT/2 + 2·jitter + 10 ms,
/// R = 93.2 − latency penalty − 2.5·loss%, MOS = 1 + 0.035R + 7·10⁻⁶·R(R−60)(100−R).
/// `None` without a round-trip time (latency dominates the estimate).
pub fn mos(report: &QualityReport) -> Option<f64> {
    let rtt = report.round_trip_time?;
    let latency = rtt / 2.0 + 2.0 * report.jitter.unwrap_or(0.0) + 10.0;
    let latency_penalty = if latency < 160.0 {
        latency / 40.0
    } else {
        (latency - 120.0) / 10.0
    };
    let r = (93.2 - latency_penalty - 2.5 * report.packet_loss.unwrap_or(0.0)).clamp(0.0, 100.0);
    let mos = 1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r);
    Some((mos.clamp(1.0, 4.5) * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rtt: f64, jitter: f64, loss: f64) -> QualityReport {
        QualityReport {
            round_trip_time: Some(rtt),
            jitter: Some(jitter),
            packet_loss: Some(loss),
            ..QualityReport::default()
        }
    }

    #[test]
    fn a_clean_network_scores_near_the_top() {
        let score = mos(&report(20.0, 2.0, 0.0)).unwrap();
        assert!(score > 4.3, "{score}");
    }

    #[test]
    fn loss_and_latency_lower_the_score_monotonically() {
        let good = mos(&report(120.0, 15.5, 0.5)).unwrap();
        let lossy = mos(&report(120.0, 15.5, 8.0)).unwrap();
        let slow = mos(&report(600.0, 15.5, 0.5)).unwrap();
        assert!(good > lossy && good > slow, "{good} {lossy} {slow}");
        assert!(mos(&report(2000.0, 500.0, 100.0)).unwrap() >= 1.0);
    }

    #[test]
    fn no_round_trip_time_no_estimate() {
        assert_eq!(mos(&QualityReport::default()), None);
    }
}
