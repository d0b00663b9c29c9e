//! The Kafka source: a consumer-group member that hands messages to the pipeline and
//! stores an offset only when every message before it in its partition is complete
//! (DESIGN §8). Runs on its own thread around librdkafka's poll loop, so rebalance
//! callbacks can wait for in-flight messages without blocking the async runtime.
//!
//! * `enable.auto.offset.store=false`; offsets are stored with `store_offsets` (which
//!   stores exactly the offset given: the next message to read) and committed by
//!   auto-commit, synchronously on revocation and at shutdown.
//! * Backpressure: when the pipeline's channel is full, the source stops polling until
//!   it drains (heartbeats continue on librdkafka's threads; a stall longer than
//!   `max.poll.interval.ms` makes the member leave the group and its uncommitted
//!   messages are re-read — at-least-once holds). Pausing partitions would keep the
//!   member polling, but pause/resume was seen to stop fetching for good against the
//!   Tansu broker used in the tests, so it is not used.
//! * Revocation: in-flight messages of the revoked partitions are drained with a
//!   deadline shorter than the session timeout, then their offsets are committed
//!   synchronously.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use super::offsets::{TopicPartition, Tracker};
use super::Envelope;
use crate::alert::SourceRef;
use crate::config::KafkaConfig;
use crate::telemetry::Metrics;

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// librdkafka rejected the configuration or subscription.
    #[error("kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

struct State {
    tracker: Mutex<Tracker>,
    changed: Condvar,
    metrics: Metrics,
    drain: Duration,
    connected: Arc<AtomicBool>,
}

impl State {
    fn lock_tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // A panic while holding the lock would be a bug; keep going with the data.
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until no message of `tps` (all when `None`) is in flight, or the deadline.
    fn drain(&self, tps: Option<&[TopicPartition]>, deadline: Instant) -> usize {
        let mut t = self.lock_tracker();
        loop {
            let n = t.in_flight(tps);
            let now = Instant::now();
            if n == 0 || now >= deadline {
                return n;
            }
            t = self
                .changed
                .wait_timeout(t, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// librdkafka callbacks: statistics (lag), rebalances, commits.
struct Ctx {
    state: Arc<State>,
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p < 0 || part.consumer_lag < 0 {
                    continue;
                }
                self.state
                    .metrics
                    .consumer_lag
                    .with_label_values(&[topic, &p.to_string()])
                    .set(part.consumer_lag);
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let m = &self.state.metrics;
        match rebalance {
            Rebalance::Assign(tpl) => {
                m.rebalances.with_label_values(&["assign"]).inc();
                tracing::info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                m.rebalances.with_label_values(&["revoke"]).inc();
                let tps: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let left = self
                    .state
                    .drain(Some(&tps), Instant::now() + self.state.drain);
                if left > 0 {
                    tracing::warn!(in_flight = left, "revocation drain deadline passed; uncommitted messages will be re-read by the next owner");
                }
                let offsets = self.state.lock_tracker().committable_of(&tps);
                commit(consumer, &offsets, m, "revoke");
                let mut t = self.state.lock_tracker();
                for tp in &tps {
                    t.forget(tp);
                }
                tracing::info!(partitions = tps.len(), "partitions revoked");
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        let outcome = if result.is_ok() { "success" } else { "error" };
        self.state
            .metrics
            .commits
            .with_label_values(&[outcome])
            .inc();
        if let Err(e) = result {
            // "No offset stored" is routine when nothing new completed.
            if !matches!(
                e,
                rdkafka::error::KafkaError::ConsumerCommit(
                    rdkafka::types::RDKafkaErrorCode::NoOffset
                )
            ) {
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
    }
}

fn tpl_of(offsets: &std::collections::BTreeMap<TopicPartition, i64>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
    }
    tpl
}

fn commit(
    consumer: &BaseConsumer<Ctx>,
    offsets: &std::collections::BTreeMap<TopicPartition, i64>,
    m: &Metrics,
    why: &str,
) {
    if offsets.is_empty() {
        return;
    }
    let tpl = tpl_of(offsets);
    // Store them too: librdkafka commits its stored offsets again on unassign, which
    // would otherwise move the committed position back.
    if let Err(e) = consumer.store_offsets(&tpl) {
        tracing::debug!(error = %e, "storing offsets before the commit");
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => {
            m.commits.with_label_values(&["success"]).inc();
            tracing::info!(partitions = offsets.len(), why, "offsets committed");
        }
        Err(e) => {
            m.commits.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, why, "synchronous offset commit failed; messages after the last commit will be re-read");
        }
    }
}

/// Read one partition of `topic` from its beginning up to (not including) offset
/// `until`, outside any consumer group, handing each payload to `f`. The escalation
/// stage rebuilds a partition's index from its pairs topic this way.
pub fn read_partition(
    cfg: &KafkaConfig,
    topic: &str,
    partition: i32,
    until: i64,
    mut f: impl FnMut(&[u8]),
) -> Result<u64, KafkaSourceError> {
    if until <= 0 {
        return Ok(0);
    }
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", format!("{}.rebuild", cfg.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    for (k, v) in cfg.resolved_properties() {
        if !k.starts_with("group.") && !k.starts_with("enable.auto") && !k.starts_with("auto.") {
            cc.set(k, v);
        }
    }
    let consumer: BaseConsumer = cc.create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut n = 0u64;
    let started = std::time::Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if m.offset() >= until {
                    break;
                }
                f(m.payload().unwrap_or_default());
                n += 1;
                if m.offset() + 1 >= until {
                    break;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e, topic, partition, "rebuild read error; retrying");
                if started.elapsed() > Duration::from_secs(300) {
                    return Err(e.into());
                }
            }
            None => {}
        }
    }
    Ok(n)
}

/// A configured consumer, ready to run.
pub struct KafkaSource {
    consumer: BaseConsumer<Ctx>,
    state: Arc<State>,
    topics: String,
}

impl KafkaSource {
    /// Create the consumer and subscribe. `connected` turns true once partitions are
    /// assigned or the group is joined (readiness).
    pub fn new(
        cfg: &KafkaConfig,
        metrics: Metrics,
        connected: Arc<AtomicBool>,
    ) -> Result<Self, KafkaSourceError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.brokers)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set(
                "auto.commit.interval.ms",
                cfg.commit_interval_ms.to_string(),
            )
            .set("auto.offset.reset", &cfg.auto_offset_reset)
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (cfg.session_timeout_ms / 3).max(100).to_string(),
            )
            .set("partition.assignment.strategy", &cfg.assignment_strategy)
            .set(
                "statistics.interval.ms",
                cfg.statistics_interval_ms.to_string(),
            )
            .set("topic.metadata.refresh.interval.ms", "10000")
            .set("fetch.wait.max.ms", cfg.fetch_wait_max_ms.to_string());
        for (k, v) in cfg.resolved_properties() {
            cc.set(k, v);
        }
        let state = Arc::new(State {
            tracker: Mutex::new(Tracker::new()),
            changed: Condvar::new(),
            metrics,
            drain: Duration::from_millis(cfg.drain_timeout_ms),
            connected,
        });
        let consumer: BaseConsumer<Ctx> = cc.create_with_context(Ctx {
            state: state.clone(),
        })?;
        let subs: Vec<String> = match &cfg.topic_pattern {
            // librdkafka treats a topic starting with `^` as a regex subscription.
            Some(p) => vec![if p.starts_with('^') {
                p.clone()
            } else {
                format!("^{p}")
            }],
            None => cfg.topics.clone(),
        };
        let refs: Vec<&str> = subs.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        Ok(Self {
            consumer,
            state,
            topics: subs.join(","),
        })
    }

    /// Poll until `stop`, handing messages to `tx`; then drain, commit and close.
    /// Blocking: run it on its own thread.
    pub fn run_blocking(self, tx: mpsc::Sender<Envelope>, stop: watch::Receiver<bool>) -> u64 {
        let st = &self.state;
        let m = &st.metrics;
        let mut read = 0u64;
        tracing::info!(topics = %self.topics, "kafka consumer subscribed");
        'poll: while !*stop.borrow() {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => {
                    st.connected.store(true, Ordering::Release);
                    read += 1;
                    m.kafka_messages.with_label_values(&[msg.topic()]).inc();
                    m.posts_consumed.with_label_values(&["kafka"]).inc();
                    let ingest = msg
                        .timestamp()
                        .to_millis()
                        .filter(|t| *t > 0)
                        .map(|t| UNIX_EPOCH + Duration::from_millis(t as u64))
                        .unwrap_or_else(SystemTime::now);
                    let tp = (msg.topic().to_string(), msg.partition());
                    let offset = msg.offset();
                    let mut env = Envelope {
                        payload: msg.payload().unwrap_or_default().to_vec(),
                        oversize: None,
                        origin: SourceRef::Kafka {
                            topic: tp.0.clone(),
                            partition: tp.1,
                            offset,
                        },
                        ingest,
                        ack: Some(ack(st.clone(), tp.clone(), offset)),
                    };
                    drop(msg);
                    // Hand over; while the pipeline is full, stop polling (backpressure).
                    // The message enters the tracker under its lock, so its completion
                    // can never be recorded before its start.
                    loop {
                        let mut t = st.lock_tracker();
                        match tx.try_send(env) {
                            Ok(()) => {
                                t.begin(&tp, offset);
                                break;
                            }
                            Err(mpsc::error::TrySendError::Full(e)) => {
                                drop(t);
                                if *stop.borrow() {
                                    break 'poll; // not handed over: re-read after restart
                                }
                                env = e;
                                self.store();
                                std::thread::sleep(Duration::from_millis(2));
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => break 'poll,
                        }
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "kafka consume error"),
                None => {
                    if self.consumer.assignment().is_ok_and(|a| a.count() > 0) {
                        st.connected.store(true, Ordering::Release);
                    }
                }
            }
            self.store();
            m.in_flight.set(st.lock_tracker().in_flight(None) as i64);
        }
        // Shutdown: stop fetching, drain, commit, close.
        tracing::info!("kafka source stopping: draining in-flight messages");
        drop(tx);
        let deadline = Instant::now() + st.drain;
        while st.lock_tracker().in_flight(None) > 0 && Instant::now() < deadline {
            // Keep serving callbacks (heartbeats run on librdkafka's own threads).
            let _ = self.consumer.poll(Duration::from_millis(20));
            let _ = st.drain(None, Instant::now() + Duration::from_millis(20));
        }
        let left = st.lock_tracker().in_flight(None);
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                "shutdown drain deadline passed; those messages will be re-read"
            );
        }
        let all: Vec<TopicPartition> = self
            .consumer
            .assignment()
            .map(|a| {
                a.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        let offsets = st.lock_tracker().committable_of(&all);
        commit(&self.consumer, &offsets, m, "shutdown");
        self.consumer.unsubscribe();
        tracing::info!(messages = read, "kafka source closed");
        read
    }

    fn store(&self) {
        let offsets = self.state.lock_tracker().to_store();
        if offsets.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.store_offsets(&tpl_of(&offsets)) {
            tracing::debug!(error = %e, "storing offsets (partition may have been revoked)");
        }
    }
}

fn ack(state: Arc<State>, tp: TopicPartition, offset: i64) -> super::Ack {
    Box::new(move || {
        state.lock_tracker().complete(&tp, offset);
        state.changed.notify_all();
    })
}
