//! Wires the stages with bounded channels and owns start-up and shutdown:
//!
//! ```text
//! source ──Envelope──► process (decode, normalise, match, build alerts; blocking thread)
//!        ──Processed──► route (each alert to every sink, wait until all accepted)
//!        ──Delivery──► sinks (stdout, …)
//! ```
//!
//! Every channel is bounded, so a slow sink pauses the source (backpressure). The
//! HTTP server (metrics, health, rules, reload, explain) runs beside the stages.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch, Mutex};

use crate::alert::{self, Alert};
use crate::config::Config;
use crate::decode::{decode, DecodeError, DecodeReason, Limits};
use crate::rules::{self, examples, Matcher, RuleSet};
use crate::sink::Outgoing;
use crate::sink::{self, Delivery};
use crate::source::lines::LinesInput;
use crate::source::Envelope;
use crate::telemetry::events::{
    AlertRaised, DecodeFailed, EscalationRaised, PairsUpdated, RulesLoaded,
};
use crate::telemetry::Metrics;

/// Where the live rules come from.
#[derive(Debug, Clone)]
pub enum RulesOrigin {
    /// A directory (reloadable).
    Dir(PathBuf),
    /// The rules compiled into the binary (not reloadable).
    Embedded,
}

/// State shared by the stages and the HTTP server.
pub struct Shared {
    /// The live rule set; reload swaps it atomically.
    pub rules: ArcSwap<RuleSet>,
    /// Metrics registry and handles.
    pub metrics: Metrics,
    /// Where rules are loaded from.
    pub origin: RulesOrigin,
    /// Whether a reload must pass the rules' examples.
    pub reload_requires_examples: bool,
    /// The source is connected (or, with --follow, has finished).
    pub source_ready: AtomicBool,
    /// Serialises reloads.
    pub reload_lock: Mutex<()>,
    /// Unix time of the live rule set's load.
    pub loaded_at: ArcSwap<String>,
    /// Required bearer token for POST endpoints, if any.
    pub bearer_token: Option<String>,
    /// Whether POST endpoints are served.
    pub enable_post: bool,
    /// The escalation index, when enabled.
    pub escalation: Option<Arc<Escalations>>,
}

/// The escalation index of this instance with its settings, shared by the stage that
/// folds contributions in (the route stage in process, or the pairs-topic stage with
/// Kafka) and the `/pairs` endpoint. One index per pairs-topic partition (in process:
/// one, under partition -1), so a partition's state can be rebuilt on its own.
pub struct Escalations {
    /// Validated settings.
    pub settings: crate::escalation::Settings,
    /// Per partition: the index and the next offset it expects.
    pub parts: std::sync::Mutex<std::collections::BTreeMap<i32, PartIndex>>,
    /// Pairs exported as gauges.
    pub top_pairs: usize,
    /// When the gauges were last refreshed (they are refreshed at most once a second).
    gauges_at: std::sync::Mutex<Option<Instant>>,
}

/// The index of one pairs-topic partition.
#[derive(Default)]
pub struct PartIndex {
    /// The index.
    pub index: crate::escalation::Index,
    /// The offset after the last record folded in (`None`: not yet rebuilt).
    pub next: Option<i64>,
}

/// The in-process partition.
const IN_PROCESS: i32 = -1;

impl Escalations {
    /// New, empty.
    pub fn new(settings: crate::escalation::Settings, top_pairs: usize) -> Self {
        Self {
            settings,
            parts: Default::default(),
            top_pairs,
            gauges_at: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<i32, PartIndex>> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fold contributions into a partition's index; the escalation alerts they cause,
    /// stamped `now` (`None`: a rebuild, whose alerts were sent before and are dropped).
    pub fn apply(
        &self,
        partition: i32,
        contributions: Vec<crate::escalation::Contribution>,
        now: Option<chrono::DateTime<chrono::Utc>>,
        m: &Metrics,
    ) -> Vec<crate::escalation::Escalation> {
        if contributions.is_empty() {
            return Vec::new();
        }
        let mut parts = self.lock();
        let ix = &mut parts.entry(partition).or_default().index;
        let out: Vec<_> = contributions
            .into_iter()
            .flat_map(|c| ix.apply(c, &self.settings, now))
            .collect();
        if now.is_none() {
            return Vec::new();
        }
        for e in &out {
            EscalationRaised { alert: e }.emit(m);
        }
        // The gauges need every pair valued and sorted: at most once a second, and at
        // once when a level changed.
        let mut at = self.gauges_at.lock().unwrap_or_else(|p| p.into_inner());
        if out.is_empty() && at.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return out;
        }
        *at = Some(Instant::now());
        let now = parts.values().filter_map(|p| p.index.watermark()).max();
        let mut pairs: Vec<_> = parts
            .values()
            .flat_map(|p| p.index.levels(now, &self.settings))
            .collect();
        pairs.sort_by(|x, y| {
            y.2.total_cmp(&x.2)
                .then_with(|| (&x.0, &x.1).cmp(&(&y.0, &y.1)))
        });
        PairsUpdated {
            pairs: &pairs,
            top: self.top_pairs,
        }
        .emit(m);
        out
    }

    fn merged(
        parts: &std::collections::BTreeMap<i32, PartIndex>,
        s: &crate::escalation::Settings,
    ) -> Vec<crate::escalation::PairView> {
        let now = parts.values().filter_map(|p| p.index.watermark()).max();
        let mut v: Vec<_> = parts.values().flat_map(|p| p.index.view(now, s)).collect();
        v.sort_by(|x, y| {
            y.index
                .total_cmp(&x.index)
                .then_with(|| (&x.actor, &x.target).cmp(&(&y.actor, &y.target)))
        });
        v
    }

    /// The pairs of every partition, highest index first, valued at the latest event
    /// time.
    pub fn view(&self) -> Vec<crate::escalation::PairView> {
        Self::merged(&self.lock(), &self.settings)
    }

    /// The latest event time folded in.
    pub fn watermark(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.lock()
            .values()
            .filter_map(|p| p.index.watermark())
            .max()
    }

    /// Whether a partition's index is current up to `offset` (the record about to be
    /// folded in follows the last one folded in).
    fn is_current(&self, partition: i32, offset: i64) -> bool {
        self.lock().get(&partition).and_then(|p| p.next) == Some(offset)
    }

    fn set_next(&self, partition: i32, next: i64) {
        self.lock().entry(partition).or_default().next = Some(next);
    }

    fn reset(&self, partition: i32) {
        self.lock().remove(&partition);
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The rules are embedded in the binary.
    #[error("the embedded rules cannot be reloaded; run with a rules directory")]
    Embedded,
    /// The files do not compile.
    #[error("{0}")]
    Load(#[from] rules::LoadError),
    /// Examples fail.
    #[error("{} rule example(s) fail:\n{}", .0.len(), .0.join("\n"))]
    Examples(Vec<String>),
}

impl Shared {
    /// Compile the rules off the hot path, run their examples, and swap them in.
    /// On any error the previous rules stay in force.
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> Result<String, ReloadError> {
        let _g = self.reload_lock.lock().await;
        let RulesOrigin::Dir(dir) = self.origin.clone() else {
            return Err(ReloadError::Embedded);
        };
        let need_examples = self.reload_requires_examples;
        let res = tokio::task::spawn_blocking(move || -> Result<RuleSet, ReloadError> {
            let rs = rules::load_dir(&dir)?;
            if need_examples {
                let rep = examples::run(&rs);
                if !rep.failures.is_empty() {
                    return Err(ReloadError::Examples(
                        rep.failures.iter().map(|f| f.to_string()).collect(),
                    ));
                }
            }
            Ok(rs)
        })
        .await
        .unwrap_or_else(|e| {
            Err(ReloadError::Examples(vec![format!(
                "reload task failed: {e}"
            )]))
        });
        match res {
            Ok(rs) => {
                let version = rs.version.clone();
                self.metrics.prepare_rules(&rs);
                RulesLoaded {
                    rules: Some(rs.rules.len()),
                    version: Some(&version),
                    error: None,
                    trigger,
                }
                .emit(&self.metrics);
                self.rules.store(Arc::new(rs));
                self.loaded_at
                    .store(Arc::new(alert::rfc3339(chrono::Utc::now())));
                Ok(version)
            }
            Err(e) => {
                let msg = e.to_string();
                RulesLoaded {
                    rules: None,
                    version: None,
                    error: Some(&msg),
                    trigger,
                }
                .emit(&self.metrics);
                Err(e)
            }
        }
    }

    /// Ready: rules loaded and the source connected (or finished, with --follow).
    pub fn ready(&self) -> bool {
        self.source_ready.load(Ordering::Acquire)
    }
}

/// A processed message: its alerts, or the reason it is a dead letter.
struct Processed {
    alerts: Vec<Arc<Outgoing>>,
    /// What the post adds to the escalation index (empty when it is off).
    contributions: Vec<crate::escalation::Contribution>,
    dead: Option<DeadPost>,
    ingest: SystemTime,
    ack: Option<crate::source::Ack>,
}

/// An undecodable message on its way to the dead letters.
struct DeadPost {
    payload: Vec<u8>,
    size: usize,
    error: DecodeError,
    origin: crate::alert::SourceRef,
}

/// Where undecodable messages go: the Kafka dead-letter topic, the dead-letter file,
/// or stderr (one JSON object per line, with the reason).
enum DecodeDeadLetters {
    Kafka(crate::sink::kafka::KafkaProducer, String),
    File(crate::deadletter::DeadLetters),
    Writer(std::sync::Mutex<Box<dyn Write + Send>>),
}

impl DecodeDeadLetters {
    async fn write(&self, d: DeadPost) {
        match self {
            Self::Kafka(p, topic) => {
                p.dead_letter(
                    topic,
                    &d.payload,
                    d.error.reason.as_str(),
                    &d.error.detail,
                    &d.origin,
                )
                .await
            }
            Self::File(f) => {
                let rec = d.record();
                // Durable before the message completes; retry rather than lose it.
                while let Err(e) = f.write_value(&rec).await {
                    tracing::error!(error = %e, "cannot write a dead letter; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
            Self::Writer(w) => {
                let rec = d.record();
                let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
                if writeln!(w, "{rec}").and_then(|_| w.flush()).is_err() {
                    tracing::error!("cannot write a dead letter to stderr");
                }
            }
        }
    }
}

impl DeadPost {
    /// The JSON dead-letter record (file and stderr destinations).
    fn record(&self) -> serde_json::Value {
        let origin = match &self.origin {
            crate::alert::SourceRef::File { file, line } => {
                serde_json::json!({"file": file, "line": line})
            }
            crate::alert::SourceRef::Kafka {
                topic,
                partition,
                offset,
            } => {
                serde_json::json!({"topic": topic, "partition": partition, "offset": offset})
            }
        };
        let cut = &self.payload[..self.payload.len().min(64 * 1024)];
        serde_json::json!({
            "kind": "decode", "source": origin, "reason": self.error.reason.as_str(), "error": self.error.detail,
            "size": self.size, "truncated": cut.len() < self.size, "raw": String::from_utf8_lossy(cut),
            "at": alert::rfc3339(chrono::Utc::now()),
        })
    }
}

/// A sink that takes every alert (stdout, the Kafka alerts topic).
struct SinkTx {
    name: String,
    tx: mpsc::Sender<Delivery>,
    /// Which alerts it takes.
    takes: Takes,
}

/// Which alerts an unrouted sink takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// Both kinds (stdout).
    All,
    /// Per-post alerts (the Kafka alerts topic: `attache.alert.v1` only).
    Alerts,
    /// Escalation alerts (the Kafka escalations topic).
    Escalations,
}

impl Takes {
    fn wants(self, a: &Outgoing) -> bool {
        match self {
            Takes::All => true,
            Takes::Alerts => !a.is_escalation(),
            Takes::Escalations => a.is_escalation(),
        }
    }
}

/// The configured sinks, routed and deduplicated (webhook, Alertmanager, …).
struct Routed {
    handles: Vec<crate::sink::config::SinkHandle>,
    router: crate::route::Router,
    dedup: crate::route::Dedup,
}

/// Run the service until the input ends (or a signal), per DESIGN §6.
pub async fn main(config: Option<PathBuf>, follow: bool, listen: Option<String>) -> Result<()> {
    let mut cfg = match &config {
        Some(p) => Config::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Config::default(),
    };
    if let Some(l) = listen {
        cfg.http.listen = l;
    }
    let metrics = Metrics::new();

    // Rules: the configured directory; without a config file and without ./rules, the
    // rules compiled into the binary.
    let (origin, rs) = if config.is_none() && !cfg.rules.dir.is_dir() {
        tracing::info!("no ./rules directory: using the rules embedded in the binary");
        let rs = rules::load_sources(&crate::embedded::rule_sources())
            .map_err(|e| anyhow::anyhow!("embedded rules: {e}"))?;
        (RulesOrigin::Embedded, rs)
    } else {
        let dir = cfg.rules.dir.clone();
        let rs = rules::load_dir(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        (RulesOrigin::Dir(dir), rs)
    };
    metrics.prepare_rules(&rs);
    RulesLoaded {
        rules: Some(rs.rules.len()),
        version: Some(&rs.version),
        error: None,
        trigger: "startup",
    }
    .emit(&metrics);

    let bearer_token = match &cfg.http.bearer_token_env {
        Some(var) => Some(
            std::env::var(var)
                .with_context(|| format!("http.bearer_token_env: ${var} is not set"))?,
        ),
        None => None,
    };
    let escalation = if cfg.escalation.enabled {
        Some(Arc::new(Escalations::new(
            cfg.escalation
                .settings()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            cfg.escalation.top_pairs,
        )))
    } else {
        None
    };
    let shared = Arc::new(Shared {
        rules: ArcSwap::from_pointee(rs),
        metrics: metrics.clone(),
        origin,
        reload_requires_examples: cfg.rules.reload_requires_examples,
        source_ready: AtomicBool::new(false),
        reload_lock: Mutex::new(()),
        loaded_at: ArcSwap::from_pointee(alert::rfc3339(chrono::Utc::now())),
        bearer_token,
        enable_post: cfg.http.enable_post,
        escalation,
    });

    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .with_context(|| format!("binding the HTTP server to {}", cfg.http.listen))?;
    tracing::info!(address = %cfg.http.listen, "serving /metrics, /healthz, /readyz, /rules");
    let http = tokio::spawn(crate::http::serve(listener, shared.clone(), http_stop_rx));

    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(signal_loop(shared.clone(), stop_tx.clone()));
    let watcher = match (&shared.origin, cfg.rules.watch) {
        (RulesOrigin::Dir(dir), true) => Some(
            crate::watch::spawn(
                dir.clone(),
                std::time::Duration::from_millis(cfg.rules.debounce_ms),
                shared.clone(),
                http_stop_tx.subscribe(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        _ => None,
    };

    let cap = cfg.pipeline.channel_capacity;
    let (env_tx, env_rx) = mpsc::channel::<Envelope>(cap);
    let (proc_tx, proc_rx) = mpsc::channel::<Processed>(cap);

    // Kafka producer (alerts topic, dead-letter topic), shared.
    let producer = match &cfg.kafka {
        Some(k)
            if k.alerts_topic.is_some()
                || k.dead_letter_topic.is_some()
                || cfg.escalation.escalations_topic.is_some()
                || cfg.escalation.pairs_topic.is_some() =>
        {
            Some(crate::sink::kafka::KafkaProducer::new(k).context("creating the Kafka producer")?)
        }
        _ => None,
    };

    // Sinks.
    let mut sinks: Vec<SinkTx> = Vec::new();
    let mut sink_tasks = Vec::new();
    if cfg.output.stdout {
        let (tx, rx) = mpsc::channel(cap);
        sink_tasks.push(tokio::spawn(sink::stdout::run(rx, metrics.clone())));
        sinks.push(SinkTx {
            name: "stdout".into(),
            tx,
            takes: Takes::All,
        });
    }
    // The Kafka topics that take every alert of their kind, as is.
    let topics = [
        (
            "kafka",
            cfg.kafka.as_ref().and_then(|k| k.alerts_topic.clone()),
            Takes::Alerts,
        ),
        (
            "kafka_escalations",
            cfg.escalation.escalations_topic.clone(),
            Takes::Escalations,
        ),
    ];
    for (name, topic, takes) in topics {
        let (Some(p), Some(topic)) = (&producer, topic) else {
            continue;
        };
        let (tx, rx) = mpsc::channel(cap);
        sink_tasks.push(tokio::spawn(sink::kafka::run(
            p.clone(),
            topic,
            rx,
            metrics.clone(),
        )));
        sinks.push(SinkTx {
            name: name.into(),
            tx,
            takes,
        });
    }

    // Routed sinks, and the dead-letter file for what they give up on.
    let plan = cfg.delivery_plan().map_err(|e| anyhow::anyhow!("{e}"))?;
    let dead_file = if plan.sinks.is_empty() && cfg.dead_letter.is_none() {
        None
    } else {
        Some(
            crate::deadletter::DeadLetters::open(&plan.dead_letter)
                .context("opening the dead letters")?,
        )
    };
    let routed = match &dead_file {
        Some(d) if !plan.sinks.is_empty() => Some(Routed {
            handles: plan
                .spawn(d, &metrics)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            router: plan.router.clone(),
            dedup: plan.dedup(),
        }),
        _ => None,
    };

    // Pre-create every sink's delivery series, so dashboards see zeros, not gaps.
    let names = sinks.iter().map(|s| s.name.clone()).chain(
        routed
            .iter()
            .flat_map(|r| r.handles.iter().map(|h| h.name.clone())),
    );
    for name in names {
        for outcome in ["delivered", "retried", "dead_lettered", "failed"] {
            metrics.deliveries.with_label_values(&[&name, outcome]);
        }
        metrics.delivery_retries.with_label_values(&[&name]);
    }

    // Dead letters for undecodable messages.
    let dead = Arc::new(
        match (
            &producer,
            cfg.kafka.as_ref().and_then(|k| k.dead_letter_topic.clone()),
        ) {
            (Some(p), Some(topic)) => DecodeDeadLetters::Kafka(p.clone(), topic),
            _ => match &dead_file {
                Some(f) => DecodeDeadLetters::File(f.clone()),
                None => {
                    DecodeDeadLetters::Writer(std::sync::Mutex::new(Box::new(std::io::stderr())))
                }
            },
        },
    );

    // Source.
    let max_bytes = cfg.input.max_message_bytes;
    let src_stop = stop_rx.clone();
    let finite;
    let source: tokio::task::JoinHandle<std::io::Result<u64>> = if cfg.input.kind == "kafka" {
        finite = false;
        let k = cfg.kafka.clone().context("[kafka]")?;
        let connected = Arc::new(AtomicBool::new(false));
        let src = crate::source::kafka::KafkaSource::new(&k, metrics.clone(), connected.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sh = shared.clone();
        // Readiness follows the consumer's assignment.
        tokio::spawn(async move {
            loop {
                sh.source_ready
                    .store(connected.load(Ordering::Acquire), Ordering::Release);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        tokio::task::spawn_blocking(move || Ok(src.run_blocking(env_tx, src_stop)))
    } else {
        finite = true;
        let input = match cfg.input.kind.as_str() {
            "file" => LinesInput::File(cfg.input.path.clone().context("input.path")?),
            "stdin" => LinesInput::Stdin,
            _ => {
                let content = crate::embedded::sample(&cfg.input.sample)
                    .with_context(|| format!("no bundled sample `{}`", cfg.input.sample))?;
                LinesInput::Sample(cfg.input.sample.clone(), content)
            }
        };
        shared.source_ready.store(true, Ordering::Release);
        tokio::task::spawn_blocking(move || input.run_blocking(max_bytes, env_tx, src_stop))
    };

    // With a pairs topic: a second consumer (its own group) folds the pairs this
    // instance owns into the index and hands their escalation alerts to the route stage.
    let pairs = match (&shared.escalation, &cfg.escalation.pairs_topic, &producer) {
        (Some(_), Some(topic), Some(p)) if cfg.input.kind == "kafka" => {
            Some((p.clone(), topic.clone()))
        }
        _ => None,
    };
    let mut pairs_stage = None;
    if let (Some((_, topic)), Some(esc), Some(k)) = (&pairs, &shared.escalation, &cfg.kafka) {
        let mut pk = k.clone();
        pk.topics = vec![topic.clone()];
        pk.topic_pattern = None;
        pk.auto_offset_reset = "earliest".into();
        pk.group_id = cfg
            .escalation
            .pairs_group_id
            .clone()
            .unwrap_or_else(|| format!("{}.escalation", k.group_id));
        let src = crate::source::kafka::KafkaSource::new(
            &pk,
            metrics.clone(),
            Arc::new(AtomicBool::new(false)),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (ptx, prx) = mpsc::channel::<Envelope>(cap);
        let stop = stop_rx.clone();
        let reader = tokio::task::spawn_blocking(move || src.run_blocking(ptx, stop));
        let (esc, out, m) = (esc.clone(), proc_tx.clone(), metrics.clone());
        let stage = tokio::task::spawn_blocking(move || pairs_loop(prx, out, esc, pk, m));
        pairs_stage = Some((reader, stage));
    }

    // Process.
    let p_shared = shared.clone();
    let process =
        tokio::task::spawn_blocking(move || process_loop(env_rx, proc_tx, p_shared, max_bytes));

    // Route.
    let router = tokio::spawn(route_loop(
        proc_rx,
        sinks,
        routed,
        dead,
        match (pairs, &shared.escalation) {
            (Some((p, t)), _) => Fold::PairsTopic(p, t),
            (None, Some(e)) => Fold::InProcess(e.clone()),
            (None, None) => Fold::Off,
        },
        metrics.clone(),
        cfg.pipeline.max_in_flight,
    ));

    let read = source.await.context("source task")?;
    match &read {
        Ok(n) => tracing::info!(messages = n, "input finished"),
        Err(e) => tracing::error!(error = %e, "input failed"),
    }
    process.await.context("process task")?;
    if let Some((reader, stage)) = pairs_stage {
        let _ = reader.await;
        let _ = stage.await;
    }
    router.await.context("route task")?;
    for t in sink_tasks {
        let _ = t.await;
    }
    if finite {
        metrics.input_finished.set(1);
    }

    if follow && !*stop_rx.borrow() {
        tracing::info!("input finished; still serving HTTP (--follow) until SIGINT/SIGTERM");
        shared.source_ready.store(true, Ordering::Release);
        let mut s = stop_rx.clone();
        while !*s.borrow() {
            if s.changed().await.is_err() {
                break;
            }
        }
    }
    signals.abort();
    let _ = http_stop_tx.send(true);
    if let Some(w) = watcher {
        let _ = w.await;
    }
    let _ = http.await;
    read.context("reading the input")?;
    Ok(())
}

async fn signal_loop(shared: Arc<Shared>, stop: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); let _ = stop.send(true); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); let _ = stop.send(true); }
            _ = hup.recv() => { let _ = shared.reload("SIGHUP").await; }
        }
    }
}

fn process_loop(
    mut rx: mpsc::Receiver<Envelope>,
    tx: mpsc::Sender<Processed>,
    shared: Arc<Shared>,
    max_bytes: usize,
) {
    let m = &shared.metrics;
    let limits = Limits { max_bytes };
    let mut matcher = Matcher::new();
    let mut matches = Vec::new();
    while let Some(env) = rx.blocking_recv() {
        let t = Instant::now();
        if env.ack.is_none() {
            // Kafka messages are counted by the source; lines here.
            m.posts_consumed.with_label_values(&["lines"]).inc();
        }
        let decoded = match env.oversize {
            Some(size) => Err(DecodeError::new(
                DecodeReason::Oversize,
                format!("{size} bytes exceeds the limit of {max_bytes} bytes"),
            )),
            None => decode(&env.payload, &limits),
        };
        let out = match decoded {
            Err(e) => {
                let origin = env.origin_label();
                DecodeFailed {
                    error: &e,
                    origin: &origin,
                }
                .emit(m);
                Processed {
                    alerts: Vec::new(),
                    contributions: Vec::new(),
                    dead: Some(DeadPost {
                        size: env.oversize.unwrap_or(env.payload.len()),
                        payload: env.payload,
                        error: e,
                        origin: env.origin,
                    }),
                    ingest: env.ingest,
                    ack: env.ack,
                }
            }
            Ok(mut post) => {
                // One rule set for the whole post, even if a reload swaps it meanwhile.
                let rules = shared.rules.load();
                let standing = rules.registry.enrich(&mut post);
                matches.clear();
                matcher.match_post(&rules, &post, &mut matches);
                let alerts: Vec<Alert> = if matches.is_empty() {
                    Vec::new()
                } else {
                    let fired_at = alert::rfc3339(chrono::Utc::now());
                    matches
                        .iter()
                        .map(|mm| {
                            let r = &rules.rules[mm.rule];
                            AlertRaised {
                                rule: &r.id,
                                category: &r.category,
                                severity: r.severity.as_str(),
                            }
                            .emit(m);
                            alert::build(
                                &rules,
                                mm,
                                &post,
                                Some(fired_at.clone()),
                                Some(env.origin.clone()),
                            )
                        })
                        .collect()
                };
                let contributions = match &shared.escalation {
                    Some(e) if !alerts.is_empty() => {
                        // Event time: created_at, else the Kafka timestamp / read time.
                        let at = alert::event_time(&post)
                            .unwrap_or_else(|| chrono::DateTime::<chrono::Utc>::from(env.ingest));
                        crate::escalation::contributions(
                            &alerts,
                            standing.tier,
                            standing.entry.is_some(),
                            at,
                            &e.settings,
                        )
                    }
                    _ => Vec::new(),
                };
                drop(post);
                Processed {
                    alerts: alerts.into_iter().map(|a| Arc::new(a.into())).collect(),
                    contributions,
                    dead: None,
                    ingest: env.ingest,
                    ack: env.ack,
                }
            }
        };
        m.processing_seconds.observe(t.elapsed().as_secs_f64());
        if tx.blocking_send(out).is_err() {
            break;
        }
    }
}

/// Where the route stage sends a message's escalation contributions.
enum Fold {
    /// The escalation index is off.
    Off,
    /// Fold them into this instance's index (one instance, or no Kafka).
    InProcess(Arc<Escalations>),
    /// Produce them to the pairs topic, keyed by pair, for the instance that owns it.
    PairsTopic(crate::sink::kafka::KafkaProducer, String),
}

/// The pairs-topic stage: fold each contribution into its partition's index and send
/// the escalation alerts it causes to the route stage, which completes the record once
/// every sink accepted them. A partition whose records do not follow the last one
/// folded in (first sight, or assigned back after a rebalance) is rebuilt first from
/// the topic's start up to that record, silently: those records completed before, so
/// their alerts were sent. The topic's retention bounds the rebuild; keep it at least
/// the decay cutoff (`half_life_hours × cutoff_half_lives`).
fn pairs_loop(
    mut rx: mpsc::Receiver<Envelope>,
    tx: mpsc::Sender<Processed>,
    esc: Arc<Escalations>,
    kafka: crate::config::KafkaConfig,
    m: Metrics,
) {
    let parse = |bytes: &[u8]| serde_json::from_slice::<crate::escalation::Contribution>(bytes);
    while let Some(env) = rx.blocking_recv() {
        let crate::alert::SourceRef::Kafka {
            topic,
            partition,
            offset,
        } = &env.origin
        else {
            continue;
        };
        let (partition, offset) = (*partition, *offset);
        if !esc.is_current(partition, offset) {
            esc.reset(partition);
            let t = Instant::now();
            let mut n = 0usize;
            let res = crate::source::kafka::read_partition(&kafka, topic, partition, offset, |b| {
                if let Ok(c) = parse(b) {
                    esc.apply(partition, vec![c], None, &m);
                    n += 1;
                }
            });
            match res {
                Ok(_) => tracing::info!(
                    partition,
                    up_to = offset,
                    contributions = n,
                    seconds = t.elapsed().as_secs_f64(),
                    "escalation index of the partition rebuilt"
                ),
                Err(e) => {
                    tracing::error!(partition, error = %e, "rebuilding the escalation index failed; continuing with what was read")
                }
            }
        }
        esc.set_next(partition, offset + 1);
        let alerts = match parse(&env.payload) {
            Ok(c) => esc
                .apply(partition, vec![c], Some(chrono::Utc::now()), &m)
                .into_iter()
                .map(|e| Arc::new(e.into()))
                .collect(),
            Err(e) => {
                tracing::error!(partition, offset, error = %e, "not a contribution record; skipped");
                Vec::new()
            }
        };
        let p = Processed {
            alerts,
            contributions: Vec::new(),
            dead: None,
            ingest: env.ingest,
            ack: env.ack,
        };
        if tx.blocking_send(p).is_err() {
            break;
        }
    }
}

/// Hand each alert to every sink, and complete the source message once all of them
/// accepted (or dead-lettered) every alert of it. Messages with alerts complete
/// concurrently (bounded by `max_in_flight`); the source's offset tracking keeps
/// commits contiguous.
async fn route_loop(
    mut rx: mpsc::Receiver<Processed>,
    sinks: Vec<SinkTx>,
    mut routed: Option<Routed>,
    dead: Arc<DecodeDeadLetters>,
    fold: Fold,
    m: Metrics,
    max_in_flight: usize,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    while let Some(mut p) = rx.recv().await {
        // With a pairs topic, contributions are re-keyed by pair for the instance that
        // owns the pair; the message completes once the broker has them. Enqueued here,
        // in input order, so a pair's contributions keep their order.
        let mut pair_waits = Vec::new();
        if let Fold::PairsTopic(producer, topic) = &fold {
            for c in std::mem::take(&mut p.contributions) {
                match serde_json::to_vec(&c) {
                    Ok(body) => {
                        pair_waits.push(producer.send_in_order(topic, &c.pair_key(), body).await)
                    }
                    Err(e) => tracing::error!(error = %e, "cannot serialise a contribution"),
                }
            }
        }
        // The index is folded here, in input order, so the escalation alerts of a
        // message complete with it (a crash before that replays the message; the
        // index ignores contributions it already holds).
        if let Fold::InProcess(e) = &fold {
            let contributions = std::mem::take(&mut p.contributions);
            for x in e.apply(IN_PROCESS, contributions, Some(chrono::Utc::now()), &m) {
                p.alerts.push(Arc::new(x.into()));
            }
        }
        if p.alerts.is_empty() && p.dead.is_none() && pair_waits.is_empty() {
            if let Some(ack) = p.ack {
                ack();
            }
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let mut waits = Vec::new();
        let mut lost = false;
        for a in &p.alerts {
            for s in sinks.iter().filter(|s| s.takes.wants(a)) {
                let (done, wait) = oneshot::channel();
                match s
                    .tx
                    .send(Delivery {
                        alert: a.clone(),
                        done,
                    })
                    .await
                {
                    Ok(()) => waits.push(wait),
                    Err(_) => {
                        tracing::error!(sink = %s.name, "sink stopped");
                        lost = true;
                    }
                }
            }
            if let Some(r) = routed.as_mut() {
                for d in r.router.decide(a, &mut r.dedup, chrono::Utc::now()) {
                    let h = &r.handles[d.sink];
                    match d.verdict {
                        crate::route::Verdict::Suppress => {
                            m.suppressed_duplicates.with_label_values(&[&h.name]).inc()
                        }
                        crate::route::Verdict::Send => {
                            let (done, wait) = oneshot::channel();
                            match h
                                .tx
                                .send(Delivery {
                                    alert: a.clone(),
                                    done,
                                })
                                .await
                            {
                                Ok(()) => waits.push(wait),
                                Err(_) => lost = true,
                            }
                        }
                    }
                }
            }
        }
        let (dead, m) = (dead.clone(), m.clone());
        let has_alerts = !p.alerts.is_empty();
        tokio::spawn(async move {
            if let Some(d) = p.dead {
                dead.write(d).await;
            }
            for w in pair_waits {
                w.await;
            }
            for w in waits {
                // A sink that dropped the alert without answering did not accept it.
                lost |= w.await.is_err();
            }
            if lost {
                tracing::error!("a sink stopped before accepting an alert; the message is not completed and will be re-read after a restart");
                return;
            }
            if has_alerts {
                if let Ok(d) = SystemTime::now().duration_since(p.ingest) {
                    m.end_to_end_seconds.observe(d.as_secs_f64());
                }
            }
            if let Some(ack) = p.ack {
                ack();
            }
            drop(permit);
        });
    }
    let _ = permits.acquire_many(max_in_flight as u32).await;
    // Close the routed sinks' queues; they answer what is queued, then end.
    if let Some(r) = routed {
        for h in r.handles {
            drop(h.tx);
            let _ = h.task.await;
        }
    }
}
