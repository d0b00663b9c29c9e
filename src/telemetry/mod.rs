//! Telemetry: logging set-up and the Prometheus metrics of every stage.
//!
//! Stage loops report what happened through the small event types of [`events`];
//! the pure core (decode, normalise, match) never logs or counts. Metrics live in a
//! [`prometheus::Registry`] owned by the pipeline, never in globals.

pub mod events;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::decode::DecodeReason;
use crate::rules::RuleSet;

/// Set up `tracing`: human-readable to stderr by default, JSON lines with `json`.
/// The level comes from `RUST_LOG` (default `info`).
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests) keeps the first subscriber.
    let _ = if json {
        b.json().flatten_event(true).try_init()
    } else {
        b.try_init()
    };
}

/// Latency buckets in seconds, 50 µs … 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Every metric attaché exposes. Cardinality: `rule` is bounded by the number of
/// loaded rules; `category` by the categories in the rule files; `sink` by the
/// configured sinks; every other label has a closed set of values.
#[derive(Clone)]
pub struct Metrics {
    /// The registry served on /metrics.
    pub registry: Registry,
    /// Posts (messages) read, by source.
    pub posts_consumed: IntCounterVec,
    /// Messages that could not be decoded, by reason.
    pub decode_failures: IntCounterVec,
    /// Rule matches, by rule id.
    pub rule_matches: IntCounterVec,
    /// Alerts produced, by category and severity.
    pub alerts: IntCounterVec,
    /// Time to decode, normalise and match one post.
    pub processing_seconds: Histogram,
    /// Time from ingest (Kafka timestamp or read time) to all sinks accepting.
    pub end_to_end_seconds: Histogram,
    /// Loaded rules.
    pub rules_loaded: IntGauge,
    /// Reloads by outcome (`success`, `error`).
    pub rule_reloads: IntCounterVec,
    /// Unix time of the last successful load.
    pub rules_last_reload_success: Gauge,
    /// Deliveries by sink and outcome.
    pub deliveries: IntCounterVec,
    /// Delivery latency by sink.
    pub delivery_seconds: HistogramVec,
    /// Retries by sink.
    pub delivery_retries: IntCounterVec,
    /// Dead letters by kind (`decode`, `delivery`).
    pub dead_letters: IntCounterVec,
    /// Alerts held back by the realert window, by sink.
    pub suppressed_duplicates: IntCounterVec,
    /// Alerts waiting in a sink's queue.
    pub queue_depth: IntGaugeVec,
    /// Messages read but not yet completed.
    pub in_flight: IntGauge,
    /// 1 once the input has been read to its end (finite inputs).
    pub input_finished: IntGauge,
    /// Consumer lag per topic and partition (Kafka).
    pub consumer_lag: IntGaugeVec,
    /// Offset commits by outcome (Kafka).
    pub commits: IntCounterVec,
    /// Consumer group rebalances by kind (`assign`, `revoke`).
    pub rebalances: IntCounterVec,
    /// Messages consumed by topic (Kafka).
    pub kafka_messages: IntCounterVec,
    /// Escalation alerts by kind and level.
    pub escalations: IntCounterVec,
    /// Escalation index of the top pairs (bounded: `escalation.top_pairs` series).
    pub escalation_index: GaugeVec,
    /// Level of the top pairs (0 none, 1 the first level, …).
    pub escalation_level: IntGaugeVec,
    /// Pair directions held in the index.
    pub escalation_pairs: IntGauge,
}

fn c(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

impl Metrics {
    /// Create every metric and register it in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            posts_consumed: c("attache_posts_consumed_total", "Posts (messages) read from the input.", &["source"]),
            decode_failures: c("attache_decode_failures_total", "Messages that could not be decoded, by reason.", &["reason"]),
            rule_matches: c("attache_rule_matches_total", "Rule matches by rule id (bounded by the number of rules).", &["rule"]),
            alerts: c("attache_alerts_total", "Per-post alerts produced, by category and severity.", &["category", "severity"]),
            processing_seconds: Histogram::with_opts(
                HistogramOpts::new("attache_processing_seconds", "Time to decode, normalise and match one post.")
                    .buckets(vec![0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.01]),
            )
            .expect("static metric definition"),
            end_to_end_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "attache_end_to_end_latency_seconds",
                    "Time from ingest (Kafka message timestamp, else read time) until every sink accepted the post's alerts.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("static metric definition"),
            rules_loaded: IntGauge::new("attache_rules_loaded", "Rules in the live rule set.").expect("static metric definition"),
            rule_reloads: c("attache_rule_reloads_total", "Rule set loads by outcome.", &["outcome"]),
            rules_last_reload_success: Gauge::new(
                "attache_rules_last_reload_success_timestamp_seconds",
                "Unix time of the last successful rule load.",
            )
            .expect("static metric definition"),
            deliveries: c("attache_deliveries_total", "Alert deliveries by sink and outcome.", &["sink", "outcome"]),
            delivery_seconds: HistogramVec::new(
                HistogramOpts::new("attache_delivery_seconds", "Time to deliver one alert, retries included.")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["sink"],
            )
            .expect("static metric definition"),
            delivery_retries: c("attache_delivery_retries_total", "Delivery retries by sink.", &["sink"]),
            dead_letters: c("attache_dead_letters_total", "Messages and alerts written to the dead letters.", &["kind"]),
            suppressed_duplicates: c(
                "attache_suppressed_duplicates_total",
                "Alerts not re-sent to a notification sink within the realert window.",
                &["sink"],
            ),
            queue_depth: IntGaugeVec::new(Opts::new("attache_sink_queue_depth", "Alerts waiting in a sink's queue."), &["sink"])
                .expect("static metric definition"),
            in_flight: IntGauge::new("attache_in_flight_messages", "Messages read but not yet completed.")
                .expect("static metric definition"),
            input_finished: IntGauge::new("attache_input_finished", "1 once a finite input has been read to its end.")
                .expect("static metric definition"),
            consumer_lag: IntGaugeVec::new(
                Opts::new("attache_kafka_consumer_lag_messages", "Consumer lag per partition, from librdkafka statistics."),
                &["topic", "partition"],
            )
            .expect("static metric definition"),
            commits: c("attache_kafka_commits_total", "Offset commits by outcome.", &["outcome"]),
            rebalances: c("attache_kafka_rebalances_total", "Consumer group rebalances by kind.", &["kind"]),
            kafka_messages: c("attache_kafka_messages_consumed_total", "Kafka messages consumed by topic.", &["topic"]),
            escalations: c("attache_escalations_total", "Escalation alerts by kind and level.", &["kind", "level"]),
            escalation_index: GaugeVec::new(
                Opts::new("attache_escalation_index", "Escalation index of the top pairs (actor → target), highest first; bounded by escalation.top_pairs."),
                &["actor", "target"],
            )
            .expect("static metric definition"),
            escalation_level: IntGaugeVec::new(
                Opts::new("attache_escalation_level", "Escalation level of the top pairs: 0 none, 1 the first configured level, …"),
                &["actor", "target"],
            )
            .expect("static metric definition"),
            escalation_pairs: IntGauge::new("attache_escalation_pairs", "Pair directions held in the escalation index.")
                .expect("static metric definition"),
            registry,
        };
        let build = GaugeVec::new(
            Opts::new(
                "attache_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .expect("static metric definition");
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        let r = &m.registry;
        let all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(build),
            Box::new(m.posts_consumed.clone()),
            Box::new(m.decode_failures.clone()),
            Box::new(m.rule_matches.clone()),
            Box::new(m.alerts.clone()),
            Box::new(m.processing_seconds.clone()),
            Box::new(m.end_to_end_seconds.clone()),
            Box::new(m.rules_loaded.clone()),
            Box::new(m.rule_reloads.clone()),
            Box::new(m.rules_last_reload_success.clone()),
            Box::new(m.deliveries.clone()),
            Box::new(m.delivery_seconds.clone()),
            Box::new(m.delivery_retries.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.suppressed_duplicates.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.input_finished.clone()),
            Box::new(m.consumer_lag.clone()),
            Box::new(m.commits.clone()),
            Box::new(m.rebalances.clone()),
            Box::new(m.kafka_messages.clone()),
            Box::new(m.escalations.clone()),
            Box::new(m.escalation_index.clone()),
            Box::new(m.escalation_level.clone()),
            Box::new(m.escalation_pairs.clone()),
        ];
        for col in all {
            r.register(col).expect("metric names are unique");
        }
        // Pre-create the closed label sets so dashboards see zeros, not gaps.
        for reason in DecodeReason::ALL {
            m.decode_failures.with_label_values(&[reason.as_str()]);
        }
        for o in ["success", "error"] {
            m.rule_reloads.with_label_values(&[o]);
        }
        for k in ["decode", "delivery"] {
            m.dead_letters.with_label_values(&[k]);
        }
        m
    }

    /// Register per-rule and per-category series for a newly loaded rule set.
    pub fn prepare_rules(&self, rules: &RuleSet) {
        for r in &rules.rules {
            self.rule_matches.with_label_values(&[&r.id]);
            self.alerts
                .with_label_values(&[&r.category, r.severity.as_str()]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        // Encoding into a Vec cannot fail on I/O; a failure would be a bug in a metric.
        if enc.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
