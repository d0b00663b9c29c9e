//! Delivery configuration: the raw `[[sinks]]`, `[[routes]]`, `[dedup]` and
//! `[dead_letter]` sections (serde, unknown keys rejected, documented defaults), and
//! their validation into a [`DeliveryPlan`]: sink specs with secrets resolved from the
//! environment, a [`Router`], the dedup window and the dead-letter destination.
//!
//! Validated specs are built into running sinks with [`SinkSpec::spawn`], the way a
//! Vector sink config builds its sink.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Delivery;
use crate::alert::{Alert, AlertAccount, AlertEvidence, AlertPost, AlertRule, SourceRef};
use crate::deadletter::{DeadLetterSpec, DeadLetters};
use crate::route::{Route, Router, SinkClass};
use crate::rules::Severity;
use crate::telemetry::Metrics;

// ---------------------------------------------------------------------------------------
// Defaults. Each is a named function so the raw types, their `Default` impls and the
// documentation agree.

/// 5 s per attempt: a receiver should queue the work and answer at once (Standard
/// Webhooks advises answering quickly); a hung one must not hold a slot for long.
fn default_timeout_ms() -> u64 {
    5_000
}
/// 8 attempts: with the default backoff (200 ms doubling to 30 s) that is about half a
/// minute of trying, more with Retry-After — enough to ride out a deploy.
fn default_max_attempts() -> u32 {
    8
}
/// 200 ms first backoff: the next attempt after a blip comes quickly.
fn default_backoff_initial_ms() -> u64 {
    200
}
/// 30 s cap on one backoff (and on a receiver's Retry-After).
fn default_backoff_max_ms() -> u64 {
    30_000
}
/// 10 minutes per alert, waiting included, before it goes to the dead letters: a dead
/// endpoint stalls the stream at most this long per in-flight batch.
fn default_give_up_after_ms() -> u64 {
    600_000
}
/// 1000 alerts queued per sink: minutes of the official-accounts stream (DESIGN §10)
/// while memory stays bounded.
fn default_queue_capacity() -> usize {
    1_000
}
/// 4 requests in flight per sink: enough to hide latency without hammering a receiver.
fn default_concurrency() -> usize {
    4
}
/// 5 consecutive failures open the circuit (a blip does not; an outage does).
fn default_breaker_failures() -> u32 {
    5
}
/// 30 s open before one half-open probe.
fn default_breaker_open_ms() -> u64 {
    30_000
}
/// 24 h: an Alertmanager alert resolves by itself a day after it was raised (attaché
/// never sends "resolved"; see `alertmanager`).
fn default_resolve_timeout_ms() -> u64 {
    86_400_000
}
/// 1 h realert window (issue 5): the same rule for the same pair is sent at most once
/// an hour of event time per notification sink.
fn default_realert_seconds() -> u64 {
    3_600
}
/// Dedup memory bound, see [`crate::route::DEFAULT_MAX_ENTRIES`].
fn default_dedup_max_entries() -> usize {
    crate::route::DEFAULT_MAX_ENTRIES
}
/// Dead letters next to the working directory by default.
fn default_dead_letter_path() -> PathBuf {
    "dead-letters.jsonl".into()
}

// ---------------------------------------------------------------------------------------
// Raw types.

/// One `[[sinks]]` entry, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    /// Unique name; used in routes, metrics labels and dead-letter records
    /// (letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// `webhook`, `alertmanager` or `stdout`.
    pub kind: String,
    /// Webhook: the endpoint. Alertmanager: its base URL (`/api/v2/alerts` is appended).
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook only: `native` (default), `alertmanager` or `template`.
    #[serde(default)]
    pub format: Option<String>,
    /// For `format = "template"`: a minijinja template; the alert is `alert`.
    #[serde(default)]
    pub template: Option<String>,
    /// For `format = "template"`: the Content-Type (default `application/json`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Webhook only: environment variable with one or more `whsec_…` secrets separated
    /// by spaces or commas. Without it requests are not signed.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Per-attempt timeout (connect, send, response head).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per alert before it goes to the dead letters.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First backoff; doubles per attempt, with full jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Largest backoff, and cap on a receiver's Retry-After.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Total time per alert, waiting included, before it goes to the dead letters.
    #[serde(default = "default_give_up_after_ms")]
    pub give_up_after_ms: u64,
    /// Alerts waiting for this sink before the pipeline pauses (backpressure).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Consecutive failed attempts that open the circuit; 0 disables the breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long the circuit stays open before one half-open probe.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
    /// Alertmanager only: `endsAt` is this long after the alert (see `alertmanager`).
    #[serde(default = "default_resolve_timeout_ms")]
    pub resolve_timeout_ms: u64,
    /// Extra request headers (not Content-Type, Content-Length, Host or `webhook-*`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Default for RawSink {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: String::new(),
            url: None,
            format: None,
            template: None,
            content_type: None,
            secret_env: None,
            timeout_ms: default_timeout_ms(),
            max_attempts: default_max_attempts(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            give_up_after_ms: default_give_up_after_ms(),
            queue_capacity: default_queue_capacity(),
            concurrency: default_concurrency(),
            breaker_failures: default_breaker_failures(),
            breaker_open_ms: default_breaker_open_ms(),
            resolve_timeout_ms: default_resolve_timeout_ms(),
            headers: BTreeMap::new(),
        }
    }
}

/// One `[[routes]]` entry, as written. Every filter is optional; see [`crate::route`]
/// for the semantics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Rule categories; empty = any.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Least severity: `info`, `low`, `medium`, `high` or `critical`.
    #[serde(default)]
    pub min_severity: Option<String>,
    /// Actors (ISO alpha-2, any case); empty = any.
    #[serde(default)]
    pub actors: Vec<String>,
    /// Targets (ISO alpha-2, any case); an alert matches when any of its targets is
    /// listed; empty = any.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Sink names (at least one).
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Keep evaluating later routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
}

/// `[dedup]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDedup {
    /// Event-time window within which the same rule for the same actor→target is
    /// counted, not re-sent, on notification sinks; 0 sends everything.
    #[serde(default = "default_realert_seconds")]
    pub realert_seconds: u64,
    /// Most keys remembered; the oldest are forgotten first.
    #[serde(default = "default_dedup_max_entries")]
    pub max_entries: usize,
}

impl Default for RawDedup {
    fn default() -> Self {
        Self {
            realert_seconds: default_realert_seconds(),
            max_entries: default_dedup_max_entries(),
        }
    }
}

/// `[dead_letter]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadLetter {
    /// JSON-lines file (created with its parent directories if missing; relative to
    /// the working directory).
    #[serde(default = "default_dead_letter_path")]
    pub path: PathBuf,
}

impl Default for RawDeadLetter {
    fn default() -> Self {
        Self {
            path: default_dead_letter_path(),
        }
    }
}

/// The four delivery sections together, for callers (tests, tools) that read them
/// from their own TOML document. The main `Config` embeds the four as its own fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// `[[sinks]]`.
    #[serde(default)]
    pub sinks: Vec<RawSink>,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// `[dedup]`.
    #[serde(default)]
    pub dedup: RawDedup,
    /// `[dead_letter]`.
    #[serde(default)]
    pub dead_letter: RawDeadLetter,
}

impl SinksConfig {
    /// [`validate`] the four sections.
    pub fn validate(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<DeliveryPlan, SinkConfigError> {
        validate(
            &self.sinks,
            &self.routes,
            &self.dedup,
            &self.dead_letter,
            env,
        )
    }
}

// ---------------------------------------------------------------------------------------
// Runtime types.

/// Why the delivery sections cannot be used. Messages name the key (`sinks[0] "oncall":
/// …`); the caller adds the file name.
#[derive(Debug, thiserror::Error)]
pub enum SinkConfigError {
    /// A value is missing, out of range or inconsistent.
    #[error("{at}: {message}")]
    Invalid {
        /// Where (`sinks[1] "oncall".url`, `routes[0]`, `dedup`).
        at: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// A sink's secret variable is not set.
    #[error("{at}: environment variable {var} (secret_env) is not set; export it with the webhook secret(s), `whsec_` + base64")]
    SecretUnset {
        /// Which sink.
        at: String,
        /// The variable name.
        var: String,
    },
    /// A sink's secret variable holds something that is not a Standard Webhooks secret.
    /// The message never contains the secret.
    #[error("{at}: environment variable {var}: secret #{index} {reason}")]
    SecretInvalid {
        /// Which sink.
        at: String,
        /// The variable name.
        var: String,
        /// 1-based position of the bad secret in the variable.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A template does not compile or does not render the sample alert.
    #[error("{at}.template: {message}")]
    Template {
        /// Which sink.
        at: String,
        /// minijinja's message, or why the rendered sample is unusable.
        message: String,
    },
}

/// Everything delivery needs, validated.
#[derive(Debug, Clone)]
pub struct DeliveryPlan {
    /// The sinks, in configuration order (route sink indices point here).
    pub sinks: Vec<SinkSpec>,
    /// Routes over [`Self::sinks`].
    pub router: Router,
    /// Realert window; zero disables dedup.
    pub realert: Duration,
    /// Dedup memory bound.
    pub dedup_max_entries: usize,
    /// Where undeliverable alerts go.
    pub dead_letter: DeadLetterSpec,
}

impl DeliveryPlan {
    /// A fresh dedup state for this plan's window.
    pub fn dedup(&self) -> crate::route::Dedup {
        crate::route::Dedup::new(self.realert, self.dedup_max_entries)
    }

    /// Index of the sink with this name.
    pub fn sink_index(&self, name: &str) -> Option<usize> {
        self.sinks.iter().position(|s| s.name == name)
    }

    /// Spawn every sink, in order (indices match [`Self::sinks`]), from within a Tokio
    /// runtime.
    pub fn spawn(
        &self,
        dead: &DeadLetters,
        metrics: &Metrics,
    ) -> Result<Vec<SinkHandle>, super::webhook::SpawnError> {
        self.sinks
            .iter()
            .map(|s| s.spawn(dead.clone(), metrics.clone()))
            .collect()
    }
}

/// One validated sink.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// Unique name (the `sink` metric label).
    pub name: String,
    /// Capacity of its bounded queue.
    pub queue_capacity: usize,
    /// What kind of sink, with its settings.
    pub kind: SinkKind,
}

/// The kinds of sink.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// HTTP POST per alert, Standard Webhooks headers.
    Webhook(Arc<HttpSpec>),
    /// Alertmanager's `/api/v2/alerts`.
    Alertmanager(Arc<HttpSpec>),
    /// JSON lines on stdout.
    Stdout,
}

impl SinkSpec {
    /// Notification sinks (webhook, Alertmanager) get dedup; archive sinks keep all.
    pub fn class(&self) -> SinkClass {
        match self.kind {
            SinkKind::Webhook(_) | SinkKind::Alertmanager(_) => SinkClass::Notification,
            SinkKind::Stdout => SinkClass::Archive,
        }
    }

    /// Start the sink: a bounded queue of [`Self::queue_capacity`] and its task, which
    /// ends when every sender is dropped and every queued alert is answered. Call it
    /// from within a Tokio runtime.
    pub fn spawn(
        &self,
        dead: DeadLetters,
        metrics: Metrics,
    ) -> Result<SinkHandle, super::webhook::SpawnError> {
        let (tx, rx) = mpsc::channel(self.queue_capacity.max(1));
        let task = match &self.kind {
            SinkKind::Webhook(spec) | SinkKind::Alertmanager(spec) => {
                super::webhook::spawn(&self.name, spec.clone(), rx, dead, metrics)?
            }
            SinkKind::Stdout => tokio::spawn(super::stdout::run(rx, metrics)),
        };
        Ok(SinkHandle {
            name: self.name.clone(),
            class: self.class(),
            tx,
            task,
        })
    }
}

/// A running sink.
#[derive(Debug)]
pub struct SinkHandle {
    /// Its name.
    pub name: String,
    /// Whether dedup applies to it.
    pub class: SinkClass,
    /// Its queue. Drop every clone to let the sink finish.
    pub tx: mpsc::Sender<Delivery>,
    /// Its task; ends after the queue closes and drains.
    pub task: JoinHandle<()>,
}

/// An HTTP sink's settings (webhook or Alertmanager).
#[derive(Clone)]
pub struct HttpSpec {
    /// Where to POST (for Alertmanager, already `…/api/v2/alerts`).
    pub url: Url,
    /// How the body is built.
    pub format: Format,
    /// The Content-Type header.
    pub content_type: HeaderValue,
    /// Send `webhook-id`, `webhook-timestamp` (and the signature when there are secrets).
    pub standard_webhooks: bool,
    /// Signing secrets (empty: unsigned).
    pub secrets: Secrets,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Timeouts, retries, queue, concurrency, breaker.
    pub policy: Policy,
}

impl fmt::Debug for HttpSpec {
    // The URL may embed a token (chat webhooks do); print scheme, host and port only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSpec")
            .field("url", &redact_url(&self.url))
            .field("format", &self.format)
            .field("content_type", &self.content_type)
            .field("standard_webhooks", &self.standard_webhooks)
            .field("secrets", &self.secrets)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("policy", &self.policy)
            .finish()
    }
}

/// `scheme://host:port/…`: enough to tell endpoints apart in logs, nothing secret.
pub fn redact_url(u: &Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port() {
        Some(p) => format!("{}://{host}:{p}/…", u.scheme()),
        None => format!("{}://{host}/…", u.scheme()),
    }
}

/// Retry, timeout, concurrency and breaker settings of an HTTP sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts per alert (≥ 1).
    pub max_attempts: u32,
    /// First backoff.
    pub backoff_initial: Duration,
    /// Backoff cap, and cap on Retry-After.
    pub backoff_max: Duration,
    /// Time budget per alert.
    pub give_up_after: Duration,
    /// Requests in flight (≥ 1).
    pub concurrency: usize,
    /// Consecutive failures that open the circuit; 0 = no breaker.
    pub breaker_failures: u32,
    /// Open time before a half-open probe.
    pub breaker_open: Duration,
}

/// How an HTTP sink builds a request body from an alert.
#[derive(Debug, Clone)]
pub enum Format {
    /// `{"type": "attache.alert", "timestamp": …, "data": <alert>}`.
    Native,
    /// Alertmanager's webhook v4 body, one alert per request.
    AlertmanagerWebhook,
    /// A minijinja template.
    Template(Template),
    /// Alertmanager's `/api/v2/alerts` body (the Alertmanager sink).
    AlertmanagerApi {
        /// `endsAt` offset.
        resolve_timeout: Duration,
    },
}

/// A compiled body template. The alert is the context variable `alert`; a `tojson`
/// filter is available.
#[derive(Clone)]
pub struct Template {
    env: Arc<minijinja::Environment<'static>>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Template")
    }
}

const TEMPLATE_NAME: &str = "body";

impl Template {
    /// Compile a template source.
    pub fn compile(source: &str) -> Result<Self, minijinja::Error> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        // minijinja's own `tojson` needs its `json` feature; this one is serde_json's.
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())?;
        Ok(Self { env: Arc::new(env) })
    }

    /// Render the template for an alert. The context has `alert` (the alert or
    /// escalation object as JSON) and `kind` (`alert` or `escalation`).
    pub fn render(&self, alert: &crate::sink::Outgoing) -> Result<String, minijinja::Error> {
        let t = self.env.get_template(TEMPLATE_NAME)?;
        let kind = if alert.is_escalation() {
            "escalation"
        } else {
            "alert"
        };
        t.render(
            minijinja::context! { alert => minijinja::Value::from_serialize(alert), kind => kind },
        )
    }
}

fn tojson(v: minijinja::Value) -> Result<minijinja::Value, minijinja::Error> {
    serde_json::to_string(&v)
        .map(minijinja::Value::from_safe_string)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
}

/// One Standard Webhooks signing secret: the bytes after `whsec_`, base64-decoded.
/// Its `Debug` prints `***`.
#[derive(Clone)]
pub struct Secret {
    mac: Hmac<Sha256>,
}

impl Secret {
    /// Parse `whsec_<base64>`. The error says what is wrong, never what the secret is.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        use base64::Engine;
        let b64 = s
            .strip_prefix("whsec_")
            .ok_or("does not start with `whsec_`")?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "is not `whsec_` followed by standard base64")?;
        if key.is_empty() {
            return Err("is empty after `whsec_`");
        }
        let mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| "is not a usable HMAC key")?;
        Ok(Self { mac })
    }

    /// `base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        use base64::Engine;
        let mut m = self.mac.clone();
        m.update(id.as_bytes());
        m.update(b".");
        m.update(timestamp.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Every secret of a sink; each one signs (key rotation: receivers accept any).
#[derive(Debug, Clone, Default)]
pub struct Secrets(pub Vec<Secret>);

impl Secrets {
    /// Parse a variable's value: secrets separated by spaces or commas.
    pub fn parse(value: &str) -> Result<Self, (usize, &'static str)> {
        let parts: Vec<&str> = value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err((1, "is missing: the variable is empty"));
        }
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| Secret::parse(p).map_err(|e| (i + 1, e)))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether there is no secret (requests go unsigned).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `webhook-signature` value: `v1,<sig>` per secret, space-separated.
    pub fn header(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|s| format!("v1,{}", s.sign(id, timestamp, body)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

// ---------------------------------------------------------------------------------------
// Validation.

/// Headers the sink sets itself; `headers` may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Validate the four delivery sections. `env` looks up environment variables (pass
/// `|k| std::env::var(k).ok()`). With sinks but no routes, every alert goes to every
/// sink.
pub fn validate(
    sinks: &[RawSink],
    routes: &[RawRoute],
    dedup: &RawDedup,
    dead_letter: &RawDeadLetter,
    env: impl Fn(&str) -> Option<String>,
) -> Result<DeliveryPlan, SinkConfigError> {
    let mut specs = Vec::with_capacity(sinks.len());
    let mut names = HashSet::new();
    for (i, raw) in sinks.iter().enumerate() {
        let spec = validate_sink(i, raw, &env)?;
        if !names.insert(spec.name.clone()) {
            return Err(invalid(
                format!("sinks[{i}] {:?}.name", raw.name),
                "another sink has this name; names must be unique",
            ));
        }
        specs.push(spec);
    }
    let mut rs = Vec::with_capacity(routes.len());
    for (i, raw) in routes.iter().enumerate() {
        rs.push(validate_route(i, raw, &specs)?);
    }
    if dedup.max_entries == 0 {
        return Err(invalid("dedup.max_entries", "must be at least 1"));
    }
    if dead_letter.path.as_os_str().is_empty() {
        return Err(invalid("dead_letter.path", "must not be empty"));
    }
    let classes = specs.iter().map(SinkSpec::class).collect();
    Ok(DeliveryPlan {
        router: Router::new(rs, classes),
        sinks: specs,
        realert: Duration::from_secs(dedup.realert_seconds),
        dedup_max_entries: dedup.max_entries,
        dead_letter: DeadLetterSpec::File(dead_letter.path.clone()),
    })
}

fn invalid(at: impl Into<String>, message: impl Into<String>) -> SinkConfigError {
    SinkConfigError::Invalid {
        at: at.into(),
        message: message.into(),
    }
}

fn validate_sink(
    i: usize,
    raw: &RawSink,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<SinkSpec, SinkConfigError> {
    let at = format!("sinks[{i}] {:?}", raw.name);
    let key = |k: &str| format!("{at}.{k}");
    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(invalid(
            key("name"),
            "must be non-empty letters, digits, `_`, `-` or `.`",
        ));
    }
    if raw.queue_capacity == 0 {
        return Err(invalid(key("queue_capacity"), "must be at least 1"));
    }
    let http_only = |k: &str, set: bool| -> Result<(), SinkConfigError> {
        if set {
            Err(invalid(
                key(k),
                format!("does not apply to kind = {:?}", raw.kind),
            ))
        } else {
            Ok(())
        }
    };
    let kind = match raw.kind.as_str() {
        "stdout" => {
            http_only("url", raw.url.is_some())?;
            http_only("format", raw.format.is_some())?;
            http_only("template", raw.template.is_some())?;
            http_only("content_type", raw.content_type.is_some())?;
            http_only("secret_env", raw.secret_env.is_some())?;
            http_only("headers", !raw.headers.is_empty())?;
            SinkKind::Stdout
        }
        "webhook" => SinkKind::Webhook(Arc::new(validate_http(&at, raw, true, env)?)),
        "alertmanager" => {
            http_only("format", raw.format.is_some())?;
            http_only("template", raw.template.is_some())?;
            http_only("content_type", raw.content_type.is_some())?;
            http_only("secret_env", raw.secret_env.is_some())?;
            SinkKind::Alertmanager(Arc::new(validate_http(&at, raw, false, env)?))
        }
        other => {
            return Err(invalid(
                key("kind"),
                format!("`{other}` is not one of webhook, alertmanager, stdout"),
            ))
        }
    };
    Ok(SinkSpec {
        name: raw.name.clone(),
        queue_capacity: raw.queue_capacity,
        kind,
    })
}

fn validate_http(
    at: &str,
    raw: &RawSink,
    webhook: bool,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<HttpSpec, SinkConfigError> {
    let key = |k: &str| format!("{at}.{k}");
    let url_text = raw
        .url
        .as_deref()
        .ok_or_else(|| invalid(key("url"), format!("is required for kind = {:?}", raw.kind)))?;
    let mut url =
        Url::parse(url_text).map_err(|e| invalid(key("url"), format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            key("url"),
            "must be an http:// or https:// URL with a host",
        ));
    }
    if !webhook {
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/api/v2/alerts"));
    }

    let positive = |k: &str, v: u64| {
        if v == 0 {
            Err(invalid(key(k), "must be greater than 0"))
        } else {
            Ok(Duration::from_millis(v))
        }
    };
    let policy = Policy {
        timeout: positive("timeout_ms", raw.timeout_ms)?,
        max_attempts: raw.max_attempts,
        backoff_initial: positive("backoff_initial_ms", raw.backoff_initial_ms)?,
        backoff_max: positive("backoff_max_ms", raw.backoff_max_ms)?,
        give_up_after: positive("give_up_after_ms", raw.give_up_after_ms)?,
        concurrency: raw.concurrency,
        breaker_failures: raw.breaker_failures,
        breaker_open: positive("breaker_open_ms", raw.breaker_open_ms)?,
    };
    if policy.max_attempts == 0 {
        return Err(invalid(key("max_attempts"), "must be at least 1"));
    }
    if policy.concurrency == 0 {
        return Err(invalid(key("concurrency"), "must be at least 1"));
    }
    if policy.backoff_max < policy.backoff_initial {
        return Err(invalid(
            key("backoff_max_ms"),
            "must be at least backoff_initial_ms",
        ));
    }

    let json = HeaderValue::from_static("application/json");
    let (format, content_type) = if webhook {
        let fmt_name = raw.format.as_deref().unwrap_or("native");
        if fmt_name != "template" {
            if raw.template.is_some() {
                return Err(invalid(key("template"), "needs format = \"template\""));
            }
            if raw.content_type.is_some() {
                return Err(invalid(key("content_type"), "needs format = \"template\""));
            }
        }
        match fmt_name {
            "native" => (Format::Native, json),
            "alertmanager" => (Format::AlertmanagerWebhook, json),
            "template" => {
                let src = raw.template.as_deref().ok_or_else(|| {
                    invalid(key("template"), "is required for format = \"template\"")
                })?;
                let ct_text = raw.content_type.as_deref().unwrap_or("application/json");
                let ct = HeaderValue::from_str(ct_text)
                    .map_err(|_| invalid(key("content_type"), "is not a valid header value"))?;
                let t = validate_template(at, src, ct_text)?;
                (Format::Template(t), ct)
            }
            other => {
                return Err(invalid(
                    key("format"),
                    format!("`{other}` is not one of native, alertmanager, template"),
                ))
            }
        }
    } else {
        if raw.resolve_timeout_ms == 0 {
            return Err(invalid(key("resolve_timeout_ms"), "must be greater than 0"));
        }
        (
            Format::AlertmanagerApi {
                resolve_timeout: Duration::from_millis(raw.resolve_timeout_ms),
            },
            json,
        )
    };

    let secrets = match &raw.secret_env {
        None => Secrets::default(),
        Some(var) => {
            let value = env(var).ok_or_else(|| SinkConfigError::SecretUnset {
                at: at.to_string(),
                var: var.clone(),
            })?;
            Secrets::parse(&value).map_err(|(index, reason)| SinkConfigError::SecretInvalid {
                at: at.to_string(),
                var: var.clone(),
                index,
                reason,
            })?
        }
    };

    let mut headers = Vec::with_capacity(raw.headers.len());
    for (k, v) in &raw.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| invalid(key("headers"), format!("`{k}` is not a header name")))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(invalid(
                key("headers"),
                format!("`{k}` is set by attaché and cannot be overridden"),
            ));
        }
        let mut value = HeaderValue::from_str(v)
            .map_err(|_| invalid(key("headers"), format!("`{k}` has an invalid value")))?;
        value.set_sensitive(true);
        headers.push((name, value));
    }

    Ok(HttpSpec {
        url,
        format,
        content_type,
        standard_webhooks: webhook,
        secrets,
        headers,
        policy,
    })
}

fn validate_template(at: &str, src: &str, content_type: &str) -> Result<Template, SinkConfigError> {
    let err = |message: String| SinkConfigError::Template {
        at: at.to_string(),
        message,
    };
    let t = Template::compile(src).map_err(|e| err(format!("does not compile: {e}")))?;
    let out = t
        .render(&sample_alert().into())
        .map_err(|e| err(format!("does not render the sample alert: {e}")))?;
    if content_type.contains("json") {
        serde_json::from_str::<serde_json::Value>(&out).map_err(|e| {
            err(format!(
                "renders the sample alert as invalid JSON ({e}) although content_type is {content_type:?}; use the `tojson` filter for values"
            ))
        })?;
    }
    Ok(t)
}

fn validate_route(i: usize, raw: &RawRoute, sinks: &[SinkSpec]) -> Result<Route, SinkConfigError> {
    let at = format!("routes[{i}]");
    let min_severity = match &raw.min_severity {
        None => None,
        Some(s) => Some(Severity::parse(s).ok_or_else(|| {
            invalid(
                format!("{at}.min_severity"),
                format!("`{s}` is not one of info, low, medium, high, critical"),
            )
        })?),
    };
    if raw.sinks.is_empty() {
        return Err(invalid(format!("{at}.sinks"), "lists no sink"));
    }
    let mut idx = Vec::with_capacity(raw.sinks.len());
    for name in &raw.sinks {
        let j = sinks.iter().position(|s| s.name == *name).ok_or_else(|| {
            let known: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
            invalid(
                format!("{at}.sinks"),
                format!("no sink is named {name:?} (sinks: {})", known.join(", ")),
            )
        })?;
        if !idx.contains(&j) {
            idx.push(j);
        }
    }
    for c in &raw.categories {
        if c.is_empty() {
            return Err(invalid(
                format!("{at}.categories"),
                "holds an empty category",
            ));
        }
    }
    let codes = |k: &str, v: &[String]| -> Result<Vec<String>, SinkConfigError> {
        v.iter()
            .map(|c| {
                if c.is_empty() {
                    Err(invalid(format!("{at}.{k}"), "holds an empty code"))
                } else {
                    Ok(c.to_ascii_uppercase())
                }
            })
            .collect()
    };
    Ok(Route {
        categories: raw.categories.clone(),
        min_severity,
        actors: codes("actors", &raw.actors)?,
        targets: codes("targets", &raw.targets)?,
        sinks: idx,
        continue_matching: raw.continue_matching,
    })
}

/// A representative alert (every field set) that templates are validated against at
/// load time; also handy for `attache routes test` and for documentation.
pub fn sample_alert() -> Alert {
    Alert {
        schema: crate::alert::SCHEMA.into(),
        id: crate::alert::alert_id("png.declared", "x", "1026754345427451904"),
        fired_at: Some("2018-08-05T23:01:10Z".into()),
        rule: AlertRule {
            id: "png.declared".into(),
            title: "Ambassador declared persona non grata".into(),
            category: "persona_non_grata".into(),
            severity: "high".into(),
            tags: vec!["expulsion".into()],
        },
        actor: Some("SA".into()),
        targets: vec!["CA".into()],
        target_evidence: Vec::new(),
        score: 7.0,
        post: AlertPost {
            id: "1026754345427451904".into(),
            platform: Some("x".into()),
            url: Some("https://x.com/KSAmofaEN/status/1026754345427451904".into()),
            created_at: Some("2018-08-05T23:01:00Z".into()),
            lang: Some("en".into()),
            account: AlertAccount {
                handle: Some("KSAmofaEN".into()),
                country: Some("SA".into()),
                role: Some("foreign_ministry".into()),
            },
            text: Some(
                "The Kingdom considers the Canadian ambassador persona non grata and gives him 24 hours to leave.".into(),
            ),
        },
        evidence: vec![AlertEvidence {
            field: "text".into(),
            start: 46,
            end: 63,
            matched: "persona non grata".into(),
        }],
        source: Some(SourceRef::File {
            file: "embedded:samples/canada_saudi_2018.jsonl".into(),
            line: 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn parse(toml_text: &str) -> SinksConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn env(k: &str) -> Option<String> {
        match k {
            "S1" => Some(SECRET.into()),
            "S2" => Some(format!("{SECRET}, whsec_dGVzdA==")),
            "BAD" => Some("hunter2".into()),
            _ => None,
        }
    }

    fn err(toml_text: &str) -> String {
        parse(toml_text).validate(env).unwrap_err().to_string()
    }

    #[test]
    fn full_example_validates() {
        let p = parse(
            r#"
            [[sinks]]
            name = "oncall"
            kind = "webhook"
            url = "http://127.0.0.1:8085/hook"
            secret_env = "S2"
            headers = { "X-Team" = "diplo" }
            [[sinks]]
            name = "am"
            kind = "alertmanager"
            url = "http://127.0.0.1:9093/"
            [[sinks]]
            name = "chat"
            kind = "webhook"
            url = "https://chat.example/hooks/T0/B0/SECRETPATH"
            format = "template"
            template = '{"text": {{ (alert.rule.title ~ " " ~ alert.actor ~ "→" ~ alert.targets[0]) | tojson }}}'
            [[routes]]
            categories = ["persona_non_grata"]
            min_severity = "high"
            actors = ["sa"]
            sinks = ["oncall", "am"]
            continue = true
            [[routes]]
            sinks = ["chat"]
            [dedup]
            realert_seconds = 60
            [dead_letter]
            path = "x/dl.jsonl"
            "#,
        )
        .validate(env)
        .unwrap();
        assert_eq!(p.sinks.len(), 3);
        assert_eq!(p.router.routes()[0].actors, vec!["SA"]);
        assert_eq!(p.router.routes()[0].sinks, vec![0, 1]);
        assert!(p.router.routes()[0].continue_matching);
        assert_eq!(p.realert, Duration::from_secs(60));
        let SinkKind::Alertmanager(am) = &p.sinks[1].kind else {
            panic!()
        };
        assert_eq!(am.url.as_str(), "http://127.0.0.1:9093/api/v2/alerts");
        let SinkKind::Webhook(w) = &p.sinks[0].kind else {
            panic!()
        };
        assert_eq!(w.secrets.0.len(), 2);
        assert_eq!(w.policy.max_attempts, 8);
        // Secrets and URL paths never show in Debug.
        let dbg = format!("{p:?}");
        assert!(
            !dbg.contains("MfKQ9r8") && !dbg.contains("SECRETPATH"),
            "{dbg}"
        );
        assert!(dbg.contains("***"));
        let SinkKind::Webhook(chat) = &p.sinks[2].kind else {
            panic!()
        };
        let Format::Template(t) = &chat.format else {
            panic!()
        };
        let mut a = sample_alert();
        a.rule.title = "say \"hi\"".into();
        let v: serde_json::Value =
            serde_json::from_str(&t.render(&crate::sink::Outgoing::from(a.clone())).unwrap())
                .unwrap();
        assert_eq!(v["text"], "say \"hi\" SA→CA");
    }

    #[test]
    fn defaults_are_documented_values() {
        let p = parse("[[sinks]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://h/\"\n")
            .validate(env)
            .unwrap();
        let SinkKind::Webhook(w) = &p.sinks[0].kind else {
            panic!()
        };
        assert_eq!(
            w.policy,
            Policy {
                timeout: Duration::from_secs(5),
                max_attempts: 8,
                backoff_initial: Duration::from_millis(200),
                backoff_max: Duration::from_secs(30),
                give_up_after: Duration::from_secs(600),
                concurrency: 4,
                breaker_failures: 5,
                breaker_open: Duration::from_secs(30),
            }
        );
        assert!(w.secrets.is_empty());
        assert_eq!(p.sinks[0].queue_capacity, 1000);
        assert_eq!(p.realert, Duration::from_secs(3600));
        assert_eq!(
            p.dead_letter,
            DeadLetterSpec::File("dead-letters.jsonl".into())
        );
        // No routes: every alert to every sink.
        assert_eq!(p.router.sinks(&sample_alert().into()), vec![0]);
    }

    /// (name, config, expected fragment of the error)
    #[rustfmt::skip]
    #[test]
    fn errors_name_the_key() {
        let sink = "[[sinks]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://h/\"\n";
        let cases: Vec<(&str, String, &str)> = vec![
            ("unset secret names the variable", format!("{sink}secret_env = \"NOPE\"\n"), "environment variable NOPE"),
            ("bad secret, value not echoed", format!("{sink}secret_env = \"BAD\"\n"), "secret #1 does not start with `whsec_`"),
            ("unknown kind", "[[sinks]]\nname = \"a\"\nkind = \"pager\"\n".into(), "sinks[0] \"a\".kind"),
            ("duplicate name", format!("{sink}{sink}"), "must be unique"),
            ("missing url", "[[sinks]]\nname = \"a\"\nkind = \"webhook\"\n".into(), ".url: is required"),
            ("bad scheme", "[[sinks]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"ftp://h/\"\n".into(), "http:// or https://"),
            ("unknown format", format!("{sink}format = \"xml\"\n"), ".format: `xml`"),
            ("template without format", format!("{sink}template = \"x\"\n"), "needs format = \"template\""),
            ("template missing", format!("{sink}format = \"template\"\n"), "is required for format"),
            ("template syntax", format!("{sink}format = \"template\"\ntemplate = \"{{{{ alert.id \"\n"), "does not compile"),
            ("template undefined", format!("{sink}format = \"template\"\ntemplate = \"{{{{ alert.nope }}}}\"\n"), "does not render"),
            ("template not json", format!("{sink}format = \"template\"\ntemplate = \"hi {{{{ alert.id }}}}\"\n"), "invalid JSON"),
            ("zero attempts", format!("{sink}max_attempts = 0\n"), "max_attempts: must be at least 1"),
            ("zero concurrency", format!("{sink}concurrency = 0\n"), "concurrency"),
            ("backoff order", format!("{sink}backoff_initial_ms = 10\nbackoff_max_ms = 5\n"), "backoff_max_ms"),
            ("reserved header", format!("{sink}headers = {{ \"Webhook-Id\" = \"x\" }}\n"), "cannot be overridden"),
            ("stdout with url", "[[sinks]]\nname = \"a\"\nkind = \"stdout\"\nurl = \"http://h/\"\n".into(), "does not apply"),
            ("am with secret", "[[sinks]]\nname = \"a\"\nkind = \"alertmanager\"\nurl = \"http://h/\"\nsecret_env = \"S1\"\n".into(), "secret_env: does not apply"),
            ("route to unknown sink", format!("{sink}[[routes]]\nsinks = [\"b\"]\n"), "no sink is named \"b\""),
            ("route without sinks", format!("{sink}[[routes]]\ncategories = [\"x\"]\n"), "routes[0].sinks: lists no sink"),
            ("bad severity", format!("{sink}[[routes]]\nsinks = [\"a\"]\nmin_severity = \"urgent\"\n"), "routes[0].min_severity"),
            ("bad name", "[[sinks]]\nname = \"a b\"\nkind = \"stdout\"\n".into(), ".name"),
        ];
        for (name, cfg, want) in cases {
            let got = err(&cfg);
            assert!(got.contains(want), "{name}: {got}");
            assert!(!got.contains("hunter2") && !got.contains("MfKQ9r8"), "{name}: {got}");
        }
    }

    #[test]
    fn unknown_keys_rejected() {
        let e = toml::from_str::<SinksConfig>(
            "[[sinks]]\nname = \"a\"\nkind = \"webhook\"\ntimeout = 3\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
        let e = toml::from_str::<SinksConfig>("[dedup]\nrealert = 3\n").unwrap_err();
        assert!(e.to_string().contains("realert"), "{e}");
    }

    #[test]
    fn secrets_split_on_spaces_and_commas() {
        let s = Secrets::parse(" whsec_dGVzdA==,whsec_YQ== \n whsec_Yg==").unwrap();
        assert_eq!(s.0.len(), 3);
        let h = s.header("id", 1, b"{}");
        assert_eq!(h.split(' ').count(), 3);
        assert!(h.split(' ').all(|p| p.starts_with("v1,")));
        assert_eq!(Secrets::parse("whsec_YQ== nope").unwrap_err().0, 2);
        assert!(Secrets::parse(" , ").is_err());
        assert!(Secrets::parse("whsec_!!!").is_err());
    }

    /// Standard Webhooks' published example (standard-webhooks spec, "Verifying").
    #[test]
    fn signature_matches_the_specification_example() {
        let s = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = s.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// The template example of docs/webhooks.md validates and renders JSON.
    #[test]
    fn documented_template_example_validates() {
        let doc = include_str!("../../docs/webhooks.md");
        let block = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let p = parse(block).validate(env).unwrap();
        let SinkKind::Webhook(w) = &p.sinks[0].kind else {
            panic!()
        };
        let Format::Template(t) = &w.format else {
            panic!()
        };
        let v: serde_json::Value =
            serde_json::from_str(&t.render(&sample_alert().into()).unwrap()).unwrap();
        assert_eq!(
            v["text"],
            "[high] Ambassador declared persona non grata: SA → CA https://x.com/KSAmofaEN/status/1026754345427451904"
        );
    }

    /// The example config shipped in `config/` validates, and its other sections are
    /// accepted by the main configuration.
    #[test]
    fn shipped_example_validates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/webhook.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut table: toml::Table = toml::from_str(&text).unwrap();
        let mut mine = toml::Table::new();
        for k in ["sinks", "routes", "dedup", "dead_letter"] {
            if let Some(v) = table.remove(k) {
                mine.insert(k.into(), v);
            }
        }
        let sc: SinksConfig = toml::Value::Table(mine).try_into().unwrap();
        let plan = sc
            .validate(|k| (k == "ATTACHE_WEBHOOK_SECRET").then(|| SECRET.to_string()))
            .unwrap();
        assert_eq!(plan.sinks.len(), 1);
        let rest = toml::to_string(&table).unwrap();
        crate::config::Config::parse(&rest, std::path::Path::new(path)).unwrap();
    }
}
