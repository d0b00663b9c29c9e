//! Kafka outputs: the alerts topic (every alert, never deduplicated, keyed
//! `ACTOR>TARGET` so one pair's alerts stay in order on one partition) and the
//! dead-letter topic for undecodable posts. Idempotent producer, `acks=all`.
//!
//! A produce that fails (broker down past `message.timeout.ms`) is retried with
//! backoff until it succeeds or the pipeline stops: the source cannot commit past the
//! message anyway, and the next Kafka destination would be the same broker.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::{mpsc, Semaphore};

use super::{Delivery, Outcome, Outgoing};
use crate::config::KafkaConfig;
use crate::telemetry::Metrics;

/// Most alerts awaiting the broker's acknowledgement at once.
const MAX_IN_FLIGHT: usize = 10_000;

/// A shared idempotent producer.
#[derive(Clone)]
pub struct KafkaProducer {
    producer: FutureProducer,
    max_message_bytes: usize,
}

impl KafkaProducer {
    /// Create the producer from the `[kafka]` section.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", cfg.producer_linger_ms.to_string())
            .set("message.timeout.ms", "30000")
            .set(
                "message.max.bytes",
                cfg.producer_max_message_bytes.to_string(),
            );
        for (k, v) in cfg.resolved_properties() {
            // Consumer-only properties would make the producer refuse to start.
            if !k.starts_with("group.")
                && !k.starts_with("auto.")
                && !k.starts_with("enable.auto")
                && !k.starts_with("session.")
            {
                cc.set(k, v);
            }
        }
        Ok(Self {
            producer: cc.create()?,
            max_message_bytes: cfg.producer_max_message_bytes,
        })
    }

    /// Send until the broker acknowledges it (retrying with backoff).
    pub async fn send_until_acked(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut rec = FutureRecord::to(topic)
                .payload(payload)
                .headers(headers.clone());
            if let Some(k) = key {
                rec = rec.key(k);
            }
            match self.producer.send(rec, Duration::from_secs(5)).await {
                Ok(_) => return,
                Err((e, _)) => {
                    tracing::warn!(topic, error = %e, retry_in_ms = backoff.as_millis() as u64, "kafka produce failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Write an undecodable message to the dead-letter topic: the original bytes
    /// (truncated past the size limit, with a header saying so) and headers with the
    /// reason and the source topic, partition and offset.
    pub async fn dead_letter(
        &self,
        topic: &str,
        payload: &[u8],
        reason: &str,
        detail: &str,
        origin: &crate::alert::SourceRef,
    ) {
        // Room for headers: keep the value well under the producer's limit.
        let room = self.max_message_bytes.saturating_sub(16 * 1024).max(1024);
        let truncated = payload.len() > room;
        let body = &payload[..payload.len().min(room)];
        let mut h = OwnedHeaders::new()
            .insert(Header {
                key: "attache-reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "attache-error",
                value: Some(cut_at_char(detail, 4096)),
            })
            .insert(Header {
                key: "attache-truncated",
                value: Some(if truncated { "true" } else { "false" }),
            })
            .insert(Header {
                key: "attache-original-size",
                value: Some(&payload.len().to_string()),
            });
        if let crate::alert::SourceRef::Kafka {
            topic: t,
            partition,
            offset,
        } = origin
        {
            h = h
                .insert(Header {
                    key: "attache-source-topic",
                    value: Some(t.as_str()),
                })
                .insert(Header {
                    key: "attache-source-partition",
                    value: Some(&partition.to_string()),
                })
                .insert(Header {
                    key: "attache-source-offset",
                    value: Some(&offset.to_string()),
                });
        }
        self.send_until_acked(topic, None, body, h).await;
    }

    /// Enqueue now (keeping the caller's order on the partition) and return a future
    /// that resolves once the broker acknowledged it; a failed first attempt is re-sent
    /// until acknowledged.
    pub async fn send_in_order(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let queued = loop {
            let rec = FutureRecord::to(topic).key(key).payload(&payload);
            match self.producer.send_result(rec) {
                Ok(f) => break Some(f),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err((e, _)) => {
                    tracing::warn!(error = %e, topic, "kafka enqueue failed; retrying");
                    break None;
                }
            }
        };
        let (p, topic, key) = (self.clone(), topic.to_string(), key.to_string());
        async move {
            let acked = match queued {
                Some(f) => matches!(f.await, Ok(Ok(_))),
                None => false,
            };
            if !acked {
                p.send_until_acked(&topic, Some(&key), &payload, OwnedHeaders::new())
                    .await;
            }
        }
    }

    /// Wait (bounded) for queued messages to be delivered.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut_at_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The Kafka key of an alert: `ACTOR>TARGET`, the actor alone without a target.
pub fn alert_key(a: &Outgoing) -> String {
    let actor = a.actor().unwrap_or("");
    match a.target() {
        Some(t) => format!("{actor}>{t}"),
        None => actor.to_string(),
    }
}

/// The alerts-topic sink: every alert, as is. Alerts are enqueued in arrival order
/// (so one pair's alerts keep their order on its partition); only the wait for the
/// broker's acknowledgement runs concurrently.
pub async fn run(
    producer: KafkaProducer,
    topic: String,
    mut rx: mpsc::Receiver<Delivery>,
    metrics: Metrics,
) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let topic: Arc<str> = topic.into();
    while let Some(d) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let started = std::time::Instant::now();
        let body = match serde_json::to_vec(&*d.alert) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise alert");
                let _ = d.done.send(Outcome::Delivered);
                continue;
            }
        };
        let key = alert_key(&d.alert);
        let queued = loop {
            let rec = FutureRecord::to(&topic).key(&key).payload(&body);
            match producer.producer.send_result(rec) {
                Ok(f) => break Some(f),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, "kafka enqueue failed; retrying");
                    break None;
                }
            }
        };
        let (p, t, m) = (producer.clone(), topic.clone(), metrics.clone());
        tokio::spawn(async move {
            let acked = match queued {
                Some(f) => matches!(f.await, Ok(Ok(_))),
                None => false,
            };
            if !acked {
                m.delivery_retries.with_label_values(&["kafka"]).inc();
                p.send_until_acked(&t, Some(&key), &body, OwnedHeaders::new())
                    .await;
            }
            m.deliveries
                .with_label_values(&["kafka", "delivered"])
                .inc();
            m.delivery_seconds
                .with_label_values(&["kafka"])
                .observe(started.elapsed().as_secs_f64());
            let _ = d.done.send(Outcome::Delivered);
            drop(permit);
        });
    }
    // Wait for every spawned delivery to finish before reporting done.
    let _ = permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    producer.flush(Duration::from_secs(10));
}
