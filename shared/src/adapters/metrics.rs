//! Metrics as CloudWatch Embedded Metric Format: JSON lines on stdout that CloudWatch turns into
//! metrics in the `wxbridge` namespace.

use std::time::SystemTime;

use crate::core::ports::{unix_millis, Metrics, SendMetric};

/// CloudWatch Embedded Metric Format on stdout: one JSON line per outcome, which CloudWatch turns
/// into the `wxbridge/Messages` metric by channel, outcome and errcode.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmfMetrics;

impl EmfMetrics {
    pub fn line(metric: &SendMetric, timestamp_ms: u64) -> String {
        serde_json::json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "wxbridge",
                    "Dimensions": [["channel", "outcome", "errcode"]],
                    "Metrics": [{"Name": "Messages", "Unit": "Count"}]
                }]
            },
            "channel": metric.channel,
            "outcome": metric.outcome,
            "errcode": metric.errcode.map(|c| c.to_string()).unwrap_or_else(|| "none".to_owned()),
            "Messages": 1
        })
        .to_string()
    }
}

impl EmfMetrics {
    /// A count with no dimensions in the `wxbridge` namespace (what an alarm watches), with
    /// `properties` kept in the log line for searching.
    pub fn count_line(name: &str, value: u64, properties: &[(&str, &str)], timestamp_ms: u64) -> String {
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "wxbridge",
                    "Dimensions": [[]],
                    "Metrics": [{"Name": name, "Unit": "Count"}]
                }]
            },
        });
        line[name] = value.into();
        for (key, value) in properties {
            line[*key] = (*value).into();
        }
        line.to_string()
    }
}

impl Metrics for EmfMetrics {
    fn record(&self, metric: &SendMetric) {
        println!("{}", Self::line(metric, unix_millis(SystemTime::now())));
    }

    fn count(&self, name: &'static str, properties: &[(&str, &str)]) {
        println!("{}", Self::count_line(name, 1, properties, unix_millis(SystemTime::now())));
    }
}
