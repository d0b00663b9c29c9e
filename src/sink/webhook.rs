//! The webhook sink — one signed HTTP POST per alert (Standard Webhooks) — and the HTTP
//! delivery machinery it shares with the Alertmanager sink: bounded queue, concurrency
//! limit, per-attempt timeout, retries with exponential backoff and full jitter,
//! Retry-After, circuit breaker, dead letters.
//!
//! # Requests
//!
//! * `webhook-id`: the alert id, identical on every attempt (receivers deduplicate on it);
//! * `webhook-timestamp`: Unix seconds of the attempt;
//! * `webhook-signature`: `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`, one
//!   per configured secret, space-separated (rotation); absent without secrets.
//!
//! The body is built once per alert and is the same on every attempt. Redirects are
//! not followed.
//!
//! # What an answer means
//!
//! | answer | what happens |
//! |---|---|
//! | 2xx | delivered |
//! | 408, 429, 5xx, connection error, timeout | retried (Retry-After honoured, capped by `backoff_max_ms`) |
//! | 410 | dead letter; the sink is disabled until restart (ERROR once): every later alert goes straight to the dead letters |
//! | any other status | dead letter at once, not retried |
//!
//! An alert goes to the dead letters when its attempts (`max_attempts`) or its time
//! budget (`give_up_after_ms`, waiting included) run out. Attempt `n` waits a random
//! time in `[0, min(backoff_max, backoff_initial · 2ⁿ⁻¹)]` before the next
//! (full jitter), unless the receiver sent Retry-After.
//!
//! # Circuit breaker
//!
//! `breaker_failures` consecutive retryable failures open the circuit: no request is
//! made for `breaker_open_ms`, then one half-open probe is let through. Its success
//! closes the circuit; its failure opens it again. While it is open, alerts wait (at
//! most `concurrency` of them in the sink, the rest in the bounded queue, so the
//! pipeline pauses); an alert whose budget runs out while waiting goes to the dead
//! letters. Once the outage itself is older than `give_up_after_ms`, alerts no longer
//! wait: until a probe succeeds, each goes to the dead letters at once (a probe still
//! goes out every `breaker_open_ms`), so a long outage drains the queue into the dead
//! letters instead of stalling the stream for `give_up_after_ms` per alert. Any
//! answer other than a retryable one counts as success: the endpoint is up.
//!
//! # Metrics
//!
//! `attache_deliveries_total{sink, outcome}` with `outcome` one of:
//! `delivered` (an alert delivered), `retried` (an attempt failed and will be retried),
//! `dead_lettered` (an alert written to the dead letters), `failed` (a dead-letter write
//! failed; the sink keeps the alert and retries the write, so nothing is lost but the
//! pipeline stalls — an operator must act). Also `attache_delivery_retries_total`,
//! `attache_delivery_seconds` (delivered alerts, retries included),
//! `attache_dead_letters_total{kind="delivery"}` and `attache_sink_queue_depth`.
//!
//! Logs never carry secrets, bodies or endpoint URLs (chat webhook URLs embed tokens).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use serde_json::json;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::config::{Format, HttpSpec, Policy};
use super::Outgoing as Alert;
use super::{Delivery, Outcome};
use crate::deadletter::{Attempt, DeadLetter, DeadLetters};
use crate::telemetry::Metrics;

/// Why an HTTP sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Why an alert could not be turned into a request body.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The template failed on this alert.
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    /// JSON serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// The `type` of the native envelope of a per-post alert.
pub const NATIVE_TYPE: &str = "attache.alert";

/// The `type` of the native envelope of an escalation alert.
pub const NATIVE_ESCALATION_TYPE: &str = "attache.escalation";

/// The native body: `{"type": "attache.alert", "timestamp": <fired_at or event time>,
/// "data": <alert>}` (`attache.escalation` for escalation alerts).
pub fn native_body(alert: &Alert, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let ts = alert
        .fired_at()
        .map(str::to_string)
        .unwrap_or_else(|| crate::alert::rfc3339(crate::route::event_time(alert, now)));
    let kind = if alert.is_escalation() {
        NATIVE_ESCALATION_TYPE
    } else {
        NATIVE_TYPE
    };
    json!({ "type": kind, "timestamp": ts, "data": alert })
}

/// The request body for an alert in a format. `sink` is the receiver name of the
/// `alertmanager` webhook format; `now` the send time.
pub fn encode(
    format: &Format,
    alert: &Alert,
    sink: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<u8>, EncodeError> {
    Ok(match format {
        Format::Native => serde_json::to_vec(&native_body(alert, now))?,
        Format::AlertmanagerWebhook => {
            serde_json::to_vec(&super::alertmanager::webhook_body(alert, sink, now))?
        }
        Format::AlertmanagerApi { resolve_timeout } => {
            serde_json::to_vec(&super::alertmanager::api_body(alert, *resolve_timeout, now))?
        }
        Format::Template(t) => t.render(alert)?.into_bytes(),
    })
}

/// What an HTTP status means for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx.
    Delivered,
    /// 408, 429, 5xx (and transport errors).
    Retry,
    /// 410: disable the sink.
    Gone,
    /// Anything else: dead letter at once.
    Reject,
}

/// Classify a status code.
pub fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Delivered,
        408 | 429 | 500..=599 => Class::Retry,
        410 => Class::Gone,
        _ => Class::Reject,
    }
}

/// The upper bound of the backoff after attempt `attempt` (1-based):
/// `min(backoff_max, backoff_initial · 2^(attempt-1))`.
pub fn backoff_ceiling(p: &Policy, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    p.backoff_initial
        .checked_mul(factor)
        .unwrap_or(p.backoff_max)
        .min(p.backoff_max)
}

/// The backoff after attempt `attempt`, with full jitter: uniform in
/// `[0, backoff_ceiling]`.
pub fn backoff(p: &Policy, attempt: u32) -> Duration {
    let ceil = u64::try_from(backoff_ceiling(p, attempt).as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ceil))
}

/// Parse a Retry-After value: delay seconds, or an HTTP-date (relative to `now`; a
/// date in the past means no wait).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Start an HTTP sink (webhook or Alertmanager) on `rx`. The task ends once `rx` is
/// closed and every alert taken from it is answered.
pub fn spawn(
    name: &str,
    spec: Arc<HttpSpec>,
    rx: mpsc::Receiver<Delivery>,
    dead: DeadLetters,
    metrics: Metrics,
) -> Result<JoinHandle<()>, SpawnError> {
    let p = &spec.policy;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(p.timeout)
        .pool_max_idle_per_host(p.concurrency)
        .user_agent(concat!("attache/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(SpawnError::Client)?;
    // Pre-create the series so dashboards see zeros, not gaps.
    for o in ["delivered", "retried", "dead_lettered", "failed"] {
        metrics.deliveries.with_label_values(&[name, o]);
    }
    metrics.delivery_retries.with_label_values(&[name]);
    metrics.suppressed_duplicates.with_label_values(&[name]);
    metrics.queue_depth.with_label_values(&[name]).set(0);
    let ep = Arc::new(Endpoint {
        name: name.to_string(),
        breaker: Breaker::new(name, p.breaker_failures, p.breaker_open, p.give_up_after),
        spec,
        client,
        disabled: AtomicBool::new(false),
        dead,
        metrics,
    });
    Ok(tokio::spawn(run(ep, rx)))
}

/// One running HTTP sink: its settings and live handles, shared by its delivery tasks.
struct Endpoint {
    name: String,
    spec: Arc<HttpSpec>,
    client: reqwest::Client,
    breaker: Breaker,
    /// Set by a 410: every later alert goes to the dead letters.
    disabled: AtomicBool,
    dead: DeadLetters,
    metrics: Metrics,
}

async fn run(ep: Arc<Endpoint>, mut rx: mpsc::Receiver<Delivery>) {
    let slots = Arc::new(Semaphore::new(ep.spec.policy.concurrency));
    let depth = ep.metrics.queue_depth.with_label_values(&[&ep.name]);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = JoinSet::new();
    loop {
        // Take a slot before taking an alert, so that alerts beyond the concurrency
        // limit wait in the bounded queue, where the pipeline feels the backpressure.
        let slot = loop {
            // biased: a free slot is taken at once; the tick only refreshes the depth
            // gauge while every slot is busy (e.g. the endpoint is down).
            tokio::select! {
                biased;
                s = slots.clone().acquire_owned() => break s,
                _ = tick.tick() => depth.set(gauge(rx.len())),
            }
        };
        let Ok(slot) = slot else { break };
        while let Some(r) = tasks.try_join_next() {
            report_join(&ep.name, r);
        }
        let Some(d) = rx.recv().await else { break };
        depth.set(gauge(rx.len()));
        let ep = ep.clone();
        tasks.spawn(async move {
            ep.deliver(d).await;
            drop(slot);
        });
    }
    while let Some(r) = tasks.join_next().await {
        report_join(&ep.name, r);
    }
    depth.set(0);
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn report_join(sink: &str, r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        // The alert's answer was dropped with the task: the pipeline sees it unanswered
        // and must not treat it as accepted.
        tracing::error!(sink, error = %e, "delivery task failed; its alert was not answered");
    }
}

/// Why an alert is given up on, with the attempts made.
struct Failure {
    reason: String,
    attempts: Vec<Attempt>,
}

/// What one attempt got back.
struct AttemptResult {
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
    response: Option<String>,
}

impl Endpoint {
    async fn deliver(&self, d: Delivery) {
        let start = Instant::now();
        let outcome = match self.try_deliver(&d.alert, start).await {
            Ok(()) => {
                AlertDelivered {
                    sink: &self.name,
                    elapsed: start.elapsed(),
                }
                .emit(&self.metrics);
                Outcome::Delivered
            }
            Err(f) => {
                self.dead_letter(&d.alert, f).await;
                Outcome::DeadLettered
            }
        };
        // The pipeline may have stopped waiting (shutdown); nothing to do then.
        let _ = d.done.send(outcome);
    }

    fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Acquire)
    }

    async fn try_deliver(&self, alert: &Alert, start: Instant) -> Result<(), Failure> {
        let p = &self.spec.policy;
        let deadline = start + p.give_up_after;
        let mut attempts: Vec<Attempt> = Vec::new();
        let fail = |reason: String, attempts: Vec<Attempt>| Err(Failure { reason, attempts });
        if self.is_disabled() {
            return fail(disabled_reason(), attempts);
        }
        let body = match encode(&self.spec.format, alert, &self.name, chrono::Utc::now()) {
            Ok(b) => b,
            Err(e) => return fail(format!("cannot build the request body: {e}"), attempts),
        };
        let Ok(id) = HeaderValue::from_str(alert.id()) else {
            return fail("the alert id is not a valid header value".into(), attempts);
        };
        for n in 1..=p.max_attempts {
            let Some(ticket) = self.breaker.admit(deadline).await else {
                return fail(
                    format!(
                        "circuit open past the give-up budget of {} ms",
                        p.give_up_after.as_millis()
                    ),
                    attempts,
                );
            };
            if self.is_disabled() {
                return fail(disabled_reason(), attempts);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return fail(budget_reason(p, n - 1), attempts);
            }
            let timeout = p.timeout.min(remaining);
            let at = crate::alert::rfc3339(chrono::Utc::now());
            let r = self.send_once(alert.id(), &id, &body, timeout).await;
            let class = r.status.map_or(Class::Retry, classify);
            attempts.push(Attempt {
                attempt: n,
                at,
                status: r.status,
                error: r.error.clone(),
                response: r.response,
            });
            match class {
                Class::Delivered => {
                    ticket.success();
                    return Ok(());
                }
                Class::Gone => {
                    ticket.success();
                    if !self.disabled.swap(true, Ordering::AcqRel) {
                        EndpointGone { sink: &self.name }.emit();
                    }
                    return fail(
                        "the receiver answered 410 Gone; the sink is disabled until restart".into(),
                        attempts,
                    );
                }
                Class::Reject => {
                    ticket.success();
                    let status = r.status.unwrap_or(0);
                    return fail(
                        format!(
                            "the receiver rejected the alert with status {status}; not retried"
                        ),
                        attempts,
                    );
                }
                Class::Retry => ticket.failure(),
            }
            if n == p.max_attempts {
                break;
            }
            let delay = match r.retry_after {
                Some(d) => d.min(p.backoff_max),
                None => backoff(p, n),
            };
            if Instant::now() + delay >= deadline {
                return fail(budget_reason(p, n), attempts);
            }
            Retrying {
                sink: &self.name,
                alert_id: alert.id(),
                attempt: n,
                status: r.status,
                error: r.error.as_deref(),
                delay,
            }
            .emit(&self.metrics);
            tokio::time::sleep(delay).await;
        }
        fail(
            format!("gave up after {} attempt(s)", p.max_attempts),
            attempts,
        )
    }

    async fn send_once(
        &self,
        alert_id: &str,
        id: &HeaderValue,
        body: &[u8],
        timeout: Duration,
    ) -> AttemptResult {
        let s = &*self.spec;
        let mut req = self
            .client
            .post(s.url.clone())
            .timeout(timeout)
            .header(CONTENT_TYPE, s.content_type.clone());
        if s.standard_webhooks {
            let ts = chrono::Utc::now().timestamp();
            req = req
                .header("webhook-id", id.clone())
                .header("webhook-timestamp", ts.to_string());
            if !s.secrets.is_empty() {
                req = req.header("webhook-signature", s.secrets.header(alert_id, ts, body));
            }
        }
        for (k, v) in &s.headers {
            req = req.header(k.clone(), v.clone());
        }
        match req.body(body.to_vec()).send().await {
            Ok(mut resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let response = if status.is_success() {
                    None
                } else {
                    // The start of the answer helps whoever reads the dead letters.
                    match resp.chunk().await {
                        Ok(Some(b)) if !b.is_empty() => Some(excerpt(&b)),
                        _ => None,
                    }
                };
                AttemptResult {
                    status: Some(status.as_u16()),
                    error: None,
                    retry_after,
                    response,
                }
            }
            Err(e) => AttemptResult {
                status: None,
                error: Some(describe(e, timeout)),
                retry_after: None,
                response: None,
            },
        }
    }

    async fn dead_letter(&self, alert: &Alert, f: Failure) {
        let rec = DeadLetter::delivery(&self.name, f.reason, f.attempts, alert.clone());
        let mut pause = Duration::from_millis(100);
        loop {
            match self.dead.write(&rec).await {
                Ok(()) => {
                    AlertDeadLettered {
                        sink: &self.name,
                        alert_id: alert.id(),
                        reason: &rec.reason,
                        attempts: rec.attempts.len(),
                    }
                    .emit(&self.metrics);
                    return;
                }
                Err(e) => {
                    // Answering now would lose the alert: keep it and try again.
                    DeadLetterWriteFailed {
                        sink: &self.name,
                        alert_id: alert.id(),
                        error: &e,
                    }
                    .emit(&self.metrics);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

fn disabled_reason() -> String {
    "the sink is disabled: its receiver answered 410 Gone earlier".into()
}

fn budget_reason(p: &Policy, attempts: u32) -> String {
    format!(
        "give-up budget of {} ms exhausted after {attempts} attempt(s)",
        p.give_up_after.as_millis()
    )
}

/// At most 256 bytes of a response body, lossy UTF-8.
fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(256)]).into_owned();
    s.trim().to_string()
}

/// A transport error in words, without the URL (it may embed a token).
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    let e = e.without_url();
    let mut s = if e.is_connect() {
        "connect: ".to_string()
    } else {
        String::new()
    };
    s.push_str(&e.to_string());
    let mut src = std::error::Error::source(&e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

// ---------------------------------------------------------------------------------------
// Circuit breaker.

#[derive(Debug, Clone, Copy)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    /// No request until `until`; `since` is when this outage opened the circuit.
    Open {
        until: Instant,
        since: Instant,
    },
    /// One probe is in flight; everyone else waits for its result.
    HalfOpen {
        since: Instant,
    },
}

/// Consecutive-failure circuit breaker with one half-open probe. Alerts wait while
/// it is open, each until its own deadline or until the outage is `give_up` old,
/// whichever comes first: past that, alerts fail fast (to the dead letters) instead of
/// each waiting out its budget, so a long outage drains the queue rather than stalling
/// the stream, while a probe still goes out every `open_for`.
struct Breaker {
    sink: String,
    threshold: u32,
    open_for: Duration,
    give_up: Duration,
    /// Never held across an `.await`.
    state: Mutex<BreakerState>,
    changed: Notify,
}

/// Permission for one attempt; report its result with `success` or `failure`.
struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    fn new(sink: &str, threshold: u32, open_for: Duration, give_up: Duration) -> Self {
        Self {
            sink: sink.to_string(),
            threshold,
            open_for,
            give_up,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BreakerState> {
        // The state is a plain value, valid whatever a panicking holder did.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ticket(&self, probe: bool) -> Ticket<'_> {
        Ticket {
            breaker: self,
            probe,
            reported: false,
        }
    }

    /// Wait until an attempt may be made; `None` when `deadline` passes first, or the
    /// outage is older than the give-up budget.
    async fn admit(&self, deadline: Instant) -> Option<Ticket<'_>> {
        if self.threshold == 0 {
            return Some(self.ticket(false));
        }
        loop {
            // Created before reading the state, so a change made after the read wakes it.
            let changed = self.changed.notified();
            let wait_until = {
                let mut s = self.lock();
                let now = Instant::now();
                let give_up = |since: Instant| deadline.min(since + self.give_up);
                match *s {
                    BreakerState::Closed { .. } => return Some(self.ticket(false)),
                    BreakerState::Open { until, since } if now >= until => {
                        *s = BreakerState::HalfOpen { since };
                        return Some(self.ticket(true));
                    }
                    BreakerState::Open { until, since } => {
                        if now >= give_up(since) {
                            return None;
                        }
                        until.min(give_up(since))
                    }
                    BreakerState::HalfOpen { since } => {
                        if now >= give_up(since) {
                            return None;
                        }
                        give_up(since)
                    }
                }
            };
            // Order does not matter: either way the loop reads the state again.
            tokio::select! {
                _ = tokio::time::sleep_until(wait_until) => {}
                _ = changed => {}
            }
        }
    }

    fn report(&self, probe: bool, ok: bool) {
        let mut s = self.lock();
        let before = *s;
        let now = Instant::now();
        *s = match (before, ok) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) if failures + 1 >= self.threshold => {
                BreakerState::Open {
                    until: now + self.open_for,
                    since: now,
                }
            }
            (BreakerState::Closed { failures }, false) => BreakerState::Closed {
                failures: failures + 1,
            },
            (BreakerState::HalfOpen { since }, false) if probe => BreakerState::Open {
                until: now + self.open_for,
                since,
            },
            // A straggler that started before the circuit opened changes nothing.
            (other, false) => other,
        };
        let after = *s;
        drop(s);
        match (before, after) {
            (BreakerState::Closed { .. }, BreakerState::Open { .. }) => CircuitOpened {
                sink: &self.sink,
                failures: self.threshold,
                open_for: self.open_for,
            }
            .emit(),
            (
                BreakerState::Open { .. } | BreakerState::HalfOpen { .. },
                BreakerState::Closed { .. },
            ) => tracing::info!(sink = %self.sink, "circuit closed: the endpoint answers again"),
            _ => {}
        }
        self.changed.notify_waiters();
    }
}

impl Ticket<'_> {
    fn success(mut self) {
        self.reported = true;
        self.breaker.report(self.probe, true);
    }

    fn failure(mut self) {
        self.reported = true;
        self.breaker.report(self.probe, false);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        // A probe abandoned without a result (its alert gave up): let another one go.
        if self.probe && !self.reported {
            let mut s = self.breaker.lock();
            if let BreakerState::HalfOpen { since } = *s {
                *s = BreakerState::Open {
                    until: Instant::now(),
                    since,
                };
            }
            drop(s);
            self.breaker.changed.notify_waiters();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Events: each logs and counts in one call.

struct AlertDelivered<'a> {
    sink: &'a str,
    elapsed: Duration,
}

impl AlertDelivered<'_> {
    fn emit(&self, m: &Metrics) {
        m.deliveries
            .with_label_values(&[self.sink, "delivered"])
            .inc();
        m.delivery_seconds
            .with_label_values(&[self.sink])
            .observe(self.elapsed.as_secs_f64());
    }
}

struct Retrying<'a> {
    sink: &'a str,
    alert_id: &'a str,
    attempt: u32,
    status: Option<u16>,
    error: Option<&'a str>,
    delay: Duration,
}

impl Retrying<'_> {
    fn emit(&self, m: &Metrics) {
        m.deliveries
            .with_label_values(&[self.sink, "retried"])
            .inc();
        m.delivery_retries.with_label_values(&[self.sink]).inc();
        tracing::debug!(
            sink = self.sink,
            alert_id = self.alert_id,
            attempt = self.attempt,
            status = self.status,
            error = self.error,
            delay_ms = u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX),
            "delivery failed; retrying"
        );
    }
}

struct AlertDeadLettered<'a> {
    sink: &'a str,
    alert_id: &'a str,
    reason: &'a str,
    attempts: usize,
}

impl AlertDeadLettered<'_> {
    fn emit(&self, m: &Metrics) {
        m.deliveries
            .with_label_values(&[self.sink, "dead_lettered"])
            .inc();
        m.dead_letters.with_label_values(&["delivery"]).inc();
        tracing::warn!(
            sink = self.sink,
            alert_id = self.alert_id,
            attempts = self.attempts,
            reason = self.reason,
            "alert written to the dead letters"
        );
    }
}

struct DeadLetterWriteFailed<'a> {
    sink: &'a str,
    alert_id: &'a str,
    error: &'a std::io::Error,
}

impl DeadLetterWriteFailed<'_> {
    fn emit(&self, m: &Metrics) {
        m.deliveries.with_label_values(&[self.sink, "failed"]).inc();
        tracing::error!(
            sink = self.sink,
            alert_id = self.alert_id,
            error = %self.error,
            "cannot write to the dead letters; holding the alert and retrying"
        );
    }
}

struct EndpointGone<'a> {
    sink: &'a str,
}

impl EndpointGone<'_> {
    fn emit(&self) {
        tracing::error!(
            sink = self.sink,
            "the receiver answered 410 Gone: sink disabled until restart; its alerts go to the dead letters"
        );
    }
}

struct CircuitOpened<'a> {
    sink: &'a str,
    failures: u32,
    open_for: Duration,
}

impl CircuitOpened<'_> {
    fn emit(&self) {
        tracing::warn!(
            sink = self.sink,
            failures = self.failures,
            open_ms = u64::try_from(self.open_for.as_millis()).unwrap_or(u64::MAX),
            "circuit open: pausing requests to the endpoint"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial: u64, max: u64) -> Policy {
        Policy {
            timeout: Duration::from_secs(1),
            max_attempts: 8,
            backoff_initial: Duration::from_millis(initial),
            backoff_max: Duration::from_millis(max),
            give_up_after: Duration::from_secs(60),
            concurrency: 1,
            breaker_failures: 3,
            breaker_open: Duration::from_millis(100),
        }
    }

    /// (status, class)
    #[test]
    fn status_classes() {
        let cases = [
            (200, Class::Delivered),
            (204, Class::Delivered),
            (299, Class::Delivered),
            (301, Class::Reject),
            (400, Class::Reject),
            (401, Class::Reject),
            (404, Class::Reject),
            (408, Class::Retry),
            (410, Class::Gone),
            (413, Class::Reject),
            (429, Class::Retry),
            (500, Class::Retry),
            (503, Class::Retry),
            (599, Class::Retry),
        ];
        for (s, c) in cases {
            assert_eq!(classify(s), c, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_below_the_ceiling() {
        let p = policy(200, 30_000);
        let ceilings: Vec<u128> = (1..=10)
            .map(|n| backoff_ceiling(&p, n).as_millis())
            .collect();
        assert_eq!(
            ceilings,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        assert_eq!(backoff_ceiling(&p, 200), Duration::from_secs(30));
        for n in 1..20 {
            assert!(backoff(&p, n) <= backoff_ceiling(&p, n));
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn native_envelope() {
        let a = crate::sink::config::sample_alert();
        let v = native_body(&crate::sink::Outgoing::from(a.clone()), chrono::Utc::now());
        assert_eq!(v["type"], "attache.alert");
        assert_eq!(v["timestamp"], "2018-08-05T23:01:10Z");
        assert_eq!(v["data"], serde_json::to_value(&a).unwrap());
    }

    // Real time, short durations (tokio's paused clock needs `test-util`); only lower
    // bounds on waits are asserted.
    #[tokio::test]
    async fn breaker_opens_probes_and_closes() {
        let open = Duration::from_millis(200);
        let b = Breaker::new("t", 2, open, Duration::from_secs(3600));
        let far = Instant::now() + Duration::from_secs(3600);
        b.admit(far).await.unwrap().failure();
        let second = b.admit(far).await.unwrap();
        let opened = Instant::now();
        second.failure();
        assert!(matches!(*b.lock(), BreakerState::Open { .. }));
        // While open, an alert whose deadline comes first gives up.
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(b.admit(soon).await.is_none());
        // After the open time, one probe; a failed probe opens again.
        let probe = b.admit(far).await.unwrap();
        assert!(probe.probe);
        assert!(Instant::now() >= opened + open);
        let reopened = Instant::now();
        probe.failure();
        assert!(matches!(*b.lock(), BreakerState::Open { .. }));
        let probe = b.admit(far).await.unwrap();
        assert!(probe.probe);
        assert!(Instant::now() >= reopened + open);
        // Others wait for the probe's result.
        let waiter = b.admit(far);
        tokio::pin!(waiter);
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut waiter)
            .await
            .is_err());
        probe.success();
        let t = waiter.await.unwrap();
        assert!(!t.probe);
        t.success();
        assert!(matches!(*b.lock(), BreakerState::Closed { failures: 0 }));
    }

    #[tokio::test]
    async fn an_abandoned_probe_lets_another_through() {
        let b = Breaker::new("t", 1, Duration::from_millis(20), Duration::from_secs(3600));
        let far = Instant::now() + Duration::from_secs(3600);
        b.admit(far).await.unwrap().failure();
        let probe = b.admit(far).await.unwrap();
        assert!(probe.probe);
        drop(probe);
        let next = b.admit(far).await.unwrap();
        assert!(next.probe);
    }

    #[tokio::test]
    async fn an_old_outage_fails_fast_but_still_probes() {
        let open = Duration::from_millis(100);
        let b = Breaker::new("t", 1, open, Duration::from_millis(150));
        let far = Instant::now() + Duration::from_secs(3600);
        let t = b.admit(far).await.unwrap();
        let opened = Instant::now();
        t.failure();
        // Probe after the open time; it fails: the outage goes on.
        let probe = b.admit(far).await.unwrap();
        assert!(probe.probe);
        probe.failure();
        // Past give-up since the outage began: no waiting, even with a far deadline.
        let t = b.admit(far).await;
        assert!(Instant::now() >= opened + Duration::from_millis(150));
        assert!(t.is_none());
        // … until the next open period ends, when a probe goes out again.
        tokio::time::sleep(open).await;
        let probe = b.admit(far).await.unwrap();
        assert!(probe.probe);
        probe.success();
        assert!(b.admit(far).await.is_some());
    }

    #[test]
    fn zero_threshold_disables_the_breaker() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = Breaker::new("t", 0, Duration::from_secs(1), Duration::from_secs(1));
            let far = Instant::now() + Duration::from_secs(10);
            for _ in 0..10 {
                b.admit(far).await.unwrap().failure();
            }
            assert!(b.admit(far).await.is_some());
        });
    }
}
