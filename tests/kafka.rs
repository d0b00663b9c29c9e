//! The Kafka deployment against a real broker process (issue 4, item 4): Tansu, a
//! Kafka-compatible broker, started per test on free ports in its own temp dir, with
//! `attache run` as a child process. Posts are produced and the alerts and dead-letter
//! topics read back with rdkafka; the expected alerts are what `attache scan` prints
//! for the same posts (a pure function of them).
//!
//! * (a) posts with malformed ones → every alert, every dead letter with its headers,
//!   committed offsets at the end offsets after SIGTERM;
//! * (b) `kill -9` of attache mid-stream, restart → every alert at least once;
//! * (c) SIGTERM mid-stream, restart → every alert exactly once;
//! * (d) two members of one group share a 6-partition topic and deliver every alert;
//! * (e) the broker killed and restarted mid-stream (sqlite storage) → no alert lost;
//! * (f) the off-by-one: after a restart the first message processed is exactly the
//!   one after the last completed one;
//! * (g) the consumer-lag metric and readiness;
//! * (k) a restart from a committed offset inside a producer's record batch resumes
//!   exactly there (the alert loss first seen in (c) with `fetch.wait.max.ms=10`).
//!
//! Needs the `tansu` binary (on `PATH` or in `~/.cargo/bin`): without it every test
//! fails with the install command, it never skips. Behaviour that Tansu's consumer-group
//! support cannot show (injected request errors, broker outages in a multi-broker
//! cluster) is covered against librdkafka's mock cluster in `tests/kafka_mock.rs`.
//!
//! Every wait is a poll loop with a deadline; nothing asserts on durations. Every
//! process a test starts is killed with SIGKILL when the test ends, pass or fail.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use common::kafka::{send_retrying, tail, Broker, Proc, Storage, RESUMABLE};
use common::{bin, free_port, http_get};

// ---------------------------------------------------------------------------------------
// The fixture: temp dir, broker, rules, attache processes.

/// Two rules on words the generated posts use; a post may fire both.
const RULES: &str = "category: test\nrules:\n  - id: t.expel\n    title: expulsion\n    severity: high\n    when: { terms: [\"expel*\"] }\n  - id: t.sanction\n    title: sanctions\n    severity: medium\n    when: { terms: [\"sanction*\"] }\n";

/// A rule every post of [`bulletins`] fires.
const RULES_EVERY_POST: &str = "category: test\nrules:\n  - id: t.every\n    title: every post\n    severity: low\n    when: { terms: [\"bulletin\"] }\n";

struct Fixture {
    dir: tempfile::TempDir,
    broker: Broker,
    rules: PathBuf,
    runs: AtomicUsize,
}

/// Fail with the tails of every log of the test.
macro_rules! ensure {
    ($fx:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            panic!("{}\n{}", format!($($fmt)+), $fx.logs());
        }
    };
}

impl Fixture {
    fn new(storage: Storage, topics: &[(&str, i32)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("attache-kafka-")
            .tempdir()
            .expect("temp dir");
        let broker = Broker::start(dir.path(), storage);
        for (t, p) in topics {
            broker.create_topic(t, *p);
        }
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("test.yaml"), RULES).unwrap();
        let fx = Self {
            dir,
            broker,
            rules,
            runs: AtomicUsize::new(0),
        };
        let out = bin().arg("check").arg(&fx.rules).output().unwrap();
        ensure!(
            fx,
            out.status.success(),
            "test rules: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fx
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A rules dir with one rule that fires on every post of [`bulletins`].
    fn rules_every_post(&self) -> PathBuf {
        let d = self.path("rules-every");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("every.yaml"), RULES_EVERY_POST).unwrap();
        d
    }

    /// For failure messages: the last lines of every log of the test, whose whole
    /// files are copied out of the temp dir (which goes with the test).
    fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "log"));
        names.sort();
        let kept = std::env::temp_dir().join(format!(
            "{}-logs",
            self.dir
                .path()
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ));
        let _ = std::fs::create_dir_all(&kept);
        let tails: Vec<String> = names
            .iter()
            .map(|p| {
                let _ = std::fs::copy(p, kept.join(p.file_name().unwrap_or_default()));
                format!("--- {} (tail)\n{}", p.display(), tail(p, 30))
            })
            .collect();
        format!(
            "{}\n(whole logs kept in {})",
            tails.join("\n"),
            kept.display()
        )
    }

    /// Write a config (config/kafka.example.toml with this test's broker, group, rules,
    /// HTTP port) and start `attache run` with it; serving HTTP.
    fn attache(&self, group: &str, rules: &Path, tweak: impl FnOnce(&mut toml::Table)) -> Attache {
        match self.try_attache(group, rules, tweak) {
            Ok(a) => a,
            Err(log) => panic!("attache exited at start-up:\n{log}\n{}", self.logs()),
        }
    }

    /// [`Self::attache`], or attache's log when it exits at start-up.
    fn try_attache(
        &self,
        group: &str,
        rules: &Path,
        tweak: impl FnOnce(&mut toml::Table),
    ) -> Result<Attache, String> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let port = free_port();
        let mut cfg: toml::Table = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/kafka.example.toml"
        ))
        .expect("read config/kafka.example.toml")
        .parse()
        .expect("config/kafka.example.toml is TOML");
        let table = |cfg: &toml::Table, k: &str| -> toml::Table {
            cfg.get(k)
                .and_then(|v| v.as_table())
                .cloned()
                .unwrap_or_default()
        };
        let mut kafka = table(&cfg, "kafka");
        kafka.insert("brokers".into(), self.broker.addr().into());
        kafka.insert("group_id".into(), group.into());
        kafka.insert("commit_interval_ms".into(), 500.into());
        kafka.insert("statistics_interval_ms".into(), 500.into());
        cfg.insert("kafka".into(), kafka.into());
        let mut r = table(&cfg, "rules");
        r.insert("dir".into(), rules.display().to_string().into());
        r.insert("watch".into(), false.into());
        cfg.insert("rules".into(), r.into());
        let mut http = table(&cfg, "http");
        http.insert("listen".into(), format!("127.0.0.1:{port}").into());
        cfg.insert("http".into(), http.into());
        tweak(&mut cfg);
        let path = self.path(&format!("attache-{n}.toml"));
        std::fs::write(&path, toml::to_string(&cfg).expect("config serialises")).unwrap();
        let proc = Proc::spawn(
            &format!("attache-{n}"),
            bin()
                .arg("run")
                .arg("--config")
                .arg(&path)
                .env("RUST_LOG", "info"),
            &self.path(&format!("attache-{n}.log")),
        );
        let mut a = Attache { proc, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(port, "/healthz").is_none_or(|(s, _)| s != 200) {
            if a.proc.exited().is_some() {
                return Err(
                    std::fs::read_to_string(self.path(&format!("attache-{n}.log")))
                        .unwrap_or_default(),
                );
            }
            ensure!(
                self,
                Instant::now() < deadline,
                "attache-{n} serves no /healthz on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(a)
    }

    /// Wait until /readyz answers 200 (partitions assigned).
    fn wait_ready(&self, a: &mut Attache) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(a.port, "/readyz").is_none_or(|(s, _)| s != 200) {
            ensure!(
                self,
                a.proc.exited().is_none(),
                "{} exited before it was ready",
                a.proc.name
            );
            ensure!(
                self,
                Instant::now() < deadline,
                "{} never became ready (no partitions assigned)",
                a.proc.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, and require exit 0 (drained and committed).
    fn terminate(&self, a: &mut Attache) {
        let name = a.proc.name.clone();
        let st = a.proc.terminate(Duration::from_secs(30));
        ensure!(
            self,
            st.is_some(),
            "{name} did not exit within 30 s of SIGTERM"
        );
        ensure!(
            self,
            st.is_some_and(|s| s.success()),
            "{name} exited with {st:?} after SIGTERM"
        );
    }

    /// What `attache scan` says for the same posts: alert ids, and the reason of
    /// every undecodable one.
    fn expected(&self, rules: &Path, msgs: &[Msg]) -> Expected {
        let posts = self.path("posts.jsonl");
        let mut text = Vec::new();
        for m in msgs {
            text.extend_from_slice(&m.value);
            text.push(b'\n');
        }
        std::fs::write(&posts, text).unwrap();
        let dl = self.path("scan-dead.jsonl");
        let out = bin()
            .arg("scan")
            .arg("--rules")
            .arg(rules)
            .arg("--dead-letter")
            .arg(&dl)
            .arg(&posts)
            .output()
            .unwrap();
        ensure!(
            self,
            out.status.success(),
            "attache scan: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut e = Expected::default();
        for a in common::json_lines(&out.stdout) {
            let id = a["id"].as_str().expect("alert id").to_string();
            e.post_of.insert(
                id.clone(),
                a["post"]["id"].as_str().unwrap_or_default().to_string(),
            );
            e.ids.insert(id);
        }
        for d in common::json_lines(&std::fs::read(&dl).unwrap_or_default()) {
            let line = d["line"].as_u64().expect("dead letter line") as usize;
            e.dead.insert(
                line - 1,
                d["reason"].as_str().unwrap_or_default().to_string(),
            );
        }
        e
    }
}

#[derive(Default)]
struct Expected {
    /// Alert ids.
    ids: BTreeSet<String>,
    /// Alert id → post id.
    post_of: HashMap<String, String>,
    /// Index of an undecodable message → its reason.
    dead: BTreeMap<usize, String>,
}

struct Attache {
    proc: Proc,
    port: u16,
}

impl Attache {
    /// The sum of a metric's series whose labels contain `labels`.
    fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let (s, body) = http_get(self.port, "/metrics")?;
        if s != 200 {
            return None;
        }
        let mut found = None;
        for l in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, lab) = series.split_once('{').unwrap_or((series, ""));
            if n == name && lab.contains(labels) {
                *found.get_or_insert(0.0) += v.parse::<f64>().ok()?;
            }
        }
        found
    }
}

// ---------------------------------------------------------------------------------------
// Posts.

/// One message to produce.
#[derive(Clone)]
struct Msg {
    key: String,
    value: Vec<u8>,
}

/// `n` posts from officials of a few states: one in 7 expels an ambassador, one in 11
/// announces sanctions (some do both), the rest is routine; three malformed messages
/// sit at a quarter, half and three quarters of the stream.
fn stream(n: usize) -> Vec<Msg> {
    const STATES: [&str; 6] = ["SA", "CA", "FR", "DE", "BR", "JP"];
    let mut out = Vec::with_capacity(n + 3);
    for i in 0..n {
        let c = STATES[i % STATES.len()];
        let mut text =
            format!("Statement {i}: the minister met counterparts on trade and culture.");
        if i % 7 == 0 {
            text.push_str(" We expel the ambassador, who must leave within 48 hours.");
        }
        if i % 11 == 0 {
            text.push_str(" New sanctions take effect today.");
        }
        let post = serde_json::json!({
            "id": format!("p{i}"), "platform": "x",
            "account": {"handle": format!("mfa_{c}"), "country": c, "role": "foreign_ministry"},
            "created_at": "2026-01-01T00:00:00Z", "lang": "en", "text": text,
        });
        out.push(Msg {
            key: format!("k{}", i % 101),
            value: post.to_string().into_bytes(),
        });
        for (at, bad) in [
            (n / 4, &br#"{"id": "x1", "text": "#[..]),
            (n / 2, b"not json at all"),
            (3 * n / 4, br#"{"id": 3, "text": 4}"#),
        ] {
            if i == at {
                out.push(Msg {
                    key: format!("bad{i}"),
                    value: bad.to_vec(),
                });
            }
        }
    }
    out
}

/// Posts `from..to`, every one a "bulletin" (fires [`RULES_EVERY_POST`]).
fn bulletins(from: usize, to: usize) -> Vec<Msg> {
    (from..to)
        .map(|i| Msg {
            key: format!("b{i}"),
            value: serde_json::json!({"id": format!("P{i}"), "platform": "x", "text": format!("bulletin number {i}")})
                .to_string()
                .into_bytes(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Producing and reading.

/// Counts failed deliveries and records where each message landed.
struct Reports {
    failed: AtomicUsize,
    at: Mutex<HashMap<usize, (i32, i64)>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, r: &DeliveryResult<'_>, i: Box<usize>) {
        match r {
            Ok(m) => {
                self.at
                    .lock()
                    .unwrap()
                    .insert(*i, (m.partition(), m.offset()));
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Produce `msgs` to `topic`, `per_tick` messages every 20 ms (`usize::MAX`: at
/// once), counting them in `sent`, and wait for every delivery. Returns where each
/// message landed (by index).
fn produce(
    brokers: &str,
    topic: &str,
    msgs: &[Msg],
    per_tick: usize,
    sent: &AtomicUsize,
) -> HashMap<usize, (i32, i64)> {
    let ctx = Reports {
        failed: AtomicUsize::new(0),
        at: Mutex::new(HashMap::new()),
    };
    let p: BaseProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        // Rides out a broker restart.
        .set("message.timeout.ms", "120000")
        .create_with_context(ctx)
        .expect("test producer");
    for (i, m) in msgs.iter().enumerate() {
        send_retrying(
            &p,
            BaseRecord::with_opaque_to(topic, Box::new(i))
                .key(&m.key)
                .payload(&m.value),
        );
        sent.fetch_add(1, Ordering::SeqCst);
        if per_tick != usize::MAX && (i + 1) % per_tick == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    p.flush(Duration::from_secs(150))
        .expect("test producer flush");
    let ctx = p.context();
    assert_eq!(
        ctx.failed.load(Ordering::SeqCst),
        0,
        "test producer: deliveries failed"
    );
    let at = ctx.at.lock().unwrap().clone();
    assert_eq!(at.len(), msgs.len(), "test producer: deliveries missing");
    at
}

/// A stream produced on a background thread while the test acts.
struct Background {
    sent: Arc<AtomicUsize>,
    total: usize,
    thread: std::thread::JoinHandle<HashMap<usize, (i32, i64)>>,
}

impl Background {
    fn start(brokers: String, topic: &'static str, msgs: Vec<Msg>, per_tick: usize) -> Self {
        let sent = Arc::new(AtomicUsize::new(0));
        let total = msgs.len();
        let s = sent.clone();
        let thread = std::thread::spawn(move || produce(&brokers, topic, &msgs, per_tick, &s));
        Self {
            sent,
            total,
            thread,
        }
    }

    /// Messages handed to the producer so far.
    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Wait for every delivery.
    fn join(self) -> HashMap<usize, (i32, i64)> {
        self.thread.join().expect("producer thread")
    }
}

/// One record read back.
#[derive(Debug, Clone)]
struct Rec {
    key: Option<String>,
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

impl Rec {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).unwrap_or(serde_json::Value::Null)
    }
    fn alert_id(&self) -> String {
        self.json()["id"].as_str().unwrap_or_default().to_string()
    }
    fn post_id(&self) -> String {
        self.json()["post"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Reads a whole topic from the beginning, without a consumer group.
struct Reader {
    consumer: BaseConsumer,
    recs: Vec<Rec>,
}

impl Reader {
    fn new(brokers: &str, topic: &str, partitions: i32, from: Offset) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("test-reader-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("test reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, from).unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        Self {
            consumer,
            recs: Vec::new(),
        }
    }

    /// Read until `done` holds of everything read so far, or the deadline.
    fn until(&mut self, timeout: Duration, mut done: impl FnMut(&[Rec]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.recs) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.recs.push(Rec {
                    key: m.key().map(|k| String::from_utf8_lossy(k).to_string()),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
    }

    fn alert_ids(&self) -> BTreeSet<String> {
        self.recs.iter().map(Rec::alert_id).collect()
    }
}

fn has_all(recs: &[Rec], want: &BTreeSet<String>) -> bool {
    let got: BTreeSet<String> = recs.iter().map(Rec::alert_id).collect();
    want.is_subset(&got)
}

fn missing(got: &BTreeSet<String>, e: &Expected) -> String {
    let miss: Vec<String> = e
        .ids
        .difference(got)
        .take(10)
        .map(|id| {
            format!(
                "{id} (post {})",
                e.post_of.get(id).map(String::as_str).unwrap_or("?")
            )
        })
        .collect();
    format!(
        "{} of {} expected alerts missing, e.g. {miss:?}",
        e.ids.difference(got).count(),
        e.ids.len()
    )
}

fn duplicates(recs: &[Rec]) -> Vec<(String, usize)> {
    let mut n: BTreeMap<String, usize> = BTreeMap::new();
    for r in recs {
        *n.entry(r.alert_id()).or_default() += 1;
    }
    n.into_iter().filter(|(_, c)| *c > 1).collect()
}

/// The group's committed offsets of `topic`'s partitions (`None` where none is).
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offsets reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

/// One past the last offset of every partition, from the delivery reports of
/// everything produced to it. (Tansu answers ListOffsets(latest) with one past the
/// *base* offset of the last batch, so `fetch_watermarks` cannot be used here.)
fn end_offsets(at: &HashMap<usize, (i32, i64)>, partitions: i32) -> Vec<i64> {
    let mut end = vec![0; partitions as usize];
    for (p, o) in at.values() {
        end[*p as usize] = end[*p as usize].max(o + 1);
    }
    end
}

// ---------------------------------------------------------------------------------------
// (a)

#[test]
fn a_every_alert_and_dead_letter_then_offsets_committed_at_the_end() {
    let fx = Fixture::new(
        Storage::Memory,
        &[("posts", 3), ("alerts", 3), ("posts.dlq", 1)],
    );
    let msgs = stream(1500);
    let exp = fx.expected(&fx.rules, &msgs);
    assert!(
        exp.ids.len() >= 200 && exp.dead.len() == 3,
        "{} alerts, {} dead letters expected",
        exp.ids.len(),
        exp.dead.len()
    );
    let at = produce(
        &fx.broker.addr(),
        "posts",
        &msgs,
        usize::MAX,
        &AtomicUsize::new(0),
    );

    let mut a = fx.attache("attache", &fx.rules, |_| {});
    let mut alerts = Reader::new(&fx.broker.addr(), "alerts", 3, Offset::Beginning);
    let ok = alerts.until(Duration::from_secs(60), |r| has_all(r, &exp.ids));
    ensure!(
        fx,
        ok,
        "alerts topic: {}",
        missing(&alerts.alert_ids(), &exp)
    );
    let unexpected: Vec<String> = alerts.alert_ids().difference(&exp.ids).cloned().collect();
    ensure!(
        fx,
        unexpected.is_empty(),
        "alerts scan does not give: {unexpected:?}"
    );

    // Each alert is the post's, from where it was produced, keyed ACTOR>TARGET.
    let index_of: HashMap<String, usize> = msgs
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            Some((
                serde_json::from_slice::<serde_json::Value>(&m.value).ok()?["id"]
                    .as_str()?
                    .to_string(),
                i,
            ))
        })
        .collect();
    for r in &alerts.recs {
        let v = r.json();
        let i = index_of[v["post"]["id"].as_str().unwrap_or_default()];
        let (p, o) = at[&i];
        let src = &v["source"];
        ensure!(
            fx,
            src["topic"] == "posts" && src["partition"] == p && src["offset"] == o,
            "alert {} has source {src}, produced at posts/{p}@{o}",
            r.alert_id()
        );
        let actor = v["actor"].as_str().unwrap_or_default();
        let key = match v["targets"]
            .as_array()
            .and_then(|t| t.first())
            .and_then(|t| t.as_str())
        {
            Some(t) => format!("{actor}>{t}"),
            None => actor.to_string(),
        };
        ensure!(
            fx,
            r.key.as_deref() == Some(key.as_str()),
            "alert {} keyed {:?}, want {key:?}",
            r.alert_id(),
            r.key
        );
    }

    // Every malformed message on the dead-letter topic: original bytes, reason, origin.
    let mut dlq = Reader::new(&fx.broker.addr(), "posts.dlq", 1, Offset::Beginning);
    let ok = dlq.until(Duration::from_secs(30), |r| r.len() >= exp.dead.len());
    ensure!(
        fx,
        ok,
        "dead-letter topic holds {} of {} messages",
        dlq.recs.len(),
        exp.dead.len()
    );
    for (i, reason) in &exp.dead {
        let (p, o) = at[i];
        let d = dlq.recs.iter().find(|r| r.value == msgs[*i].value);
        ensure!(
            fx,
            d.is_some(),
            "no dead letter for {:?}",
            String::from_utf8_lossy(&msgs[*i].value)
        );
        let h = &d.unwrap().headers;
        let want = [
            ("attache-reason", reason.clone()),
            ("attache-source-topic", "posts".to_string()),
            ("attache-source-partition", p.to_string()),
            ("attache-source-offset", o.to_string()),
            ("attache-truncated", "false".to_string()),
            ("attache-original-size", msgs[*i].value.len().to_string()),
        ];
        for (k, v) in want {
            ensure!(
                fx,
                h.get(k) == Some(&v),
                "dead letter {:?}: header {k} = {:?}, want {v:?} (all: {h:?})",
                String::from_utf8_lossy(&msgs[*i].value),
                h.get(k)
            );
        }
        ensure!(
            fx,
            h.get("attache-error").is_some_and(|e| !e.is_empty()),
            "dead letter without attache-error: {h:?}"
        );
    }
    ensure!(
        fx,
        dlq.recs.len() == exp.dead.len(),
        "{} dead letters, want {}",
        dlq.recs.len(),
        exp.dead.len()
    );

    // Every message read, then SIGTERM: drained and committed up to the end.
    let deadline = Instant::now() + Duration::from_secs(30);
    while a
        .metric("attache_kafka_messages_consumed_total", "topic=\"posts\"")
        .unwrap_or(0.0)
        < msgs.len() as f64
    {
        ensure!(
            fx,
            Instant::now() < deadline,
            "attache consumed {:?} of {} messages",
            a.metric("attache_kafka_messages_consumed_total", ""),
            msgs.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    fx.terminate(&mut a);
    let end = end_offsets(&at, 3);
    let got = committed(&fx.broker.addr(), "attache", "posts", 3);
    let want: Vec<Option<i64>> = end.iter().map(|e| Some(*e)).collect();
    ensure!(
        fx,
        got == want,
        "committed offsets {got:?}, end offsets {end:?}"
    );
}

// ---------------------------------------------------------------------------------------
// (b), (c): restarts of attache in the middle of a stream that keeps flowing.

/// Start attache, stream `msgs` while it runs, and stop it (with `stop`) once a
/// tenth of the expected alerts are out; restart it and return the whole alerts
/// topic once every expected alert is on it.
fn restart_mid_stream(
    fx: &Fixture,
    msgs: Vec<Msg>,
    exp: &Expected,
    stop: impl FnOnce(&Fixture, &mut Attache),
) -> Reader {
    let mut a = fx.attache("attache", &fx.rules, |_| {});
    fx.wait_ready(&mut a);
    let producer = Background::start(fx.broker.addr(), "posts", msgs, 20);
    let mut watch = Reader::new(&fx.broker.addr(), "alerts", 3, Offset::Beginning);
    let some = exp.ids.len() / 10;
    let ok = watch.until(Duration::from_secs(60), |r| r.len() >= some);
    ensure!(fx, ok, "only {} alerts within 60 s", watch.recs.len());
    stop(fx, &mut a);
    let (seen, at) = (watch.alert_ids().len(), producer.sent());
    ensure!(
        fx,
        at < producer.total,
        "the stream was over before the stop: the scenario is not mid-stream"
    );
    drop(a);
    let _b = fx.attache("attache", &fx.rules, |_| {});
    producer.join();
    let mut all = Reader::new(&fx.broker.addr(), "alerts", 3, Offset::Beginning);
    let ok = all.until(Duration::from_secs(90), |r| has_all(r, &exp.ids));
    ensure!(
        fx,
        ok,
        "after the restart (stopped at {seen} alerts, {at} posts sent): {}",
        missing(&all.alert_ids(), exp)
    );
    // Let a late duplicate show up before judging.
    all.until(Duration::from_secs(2), |_| false);
    all
}

#[test]
fn b_kill9_mid_stream_then_restart_delivers_every_alert_at_least_once() {
    let fx = Fixture::new(RESUMABLE, &[("posts", 3), ("alerts", 3), ("posts.dlq", 1)]);
    let msgs = stream(2000);
    let exp = fx.expected(&fx.rules, &msgs);
    let all = restart_mid_stream(&fx, msgs, &exp, |_, a| a.proc.kill9());
    eprintln!(
        "kill -9: {} alerts re-sent after the restart (at-least-once)",
        duplicates(&all.recs).len()
    );
}

#[test]
fn c_sigterm_mid_stream_then_restart_delivers_every_alert_exactly_once() {
    let fx = Fixture::new(RESUMABLE, &[("posts", 3), ("alerts", 3), ("posts.dlq", 1)]);
    let msgs = stream(2000);
    let exp = fx.expected(&fx.rules, &msgs);
    let all = restart_mid_stream(&fx, msgs, &exp, |fx, a| fx.terminate(a));
    let dup = duplicates(&all.recs);
    ensure!(
        fx,
        dup.is_empty(),
        "{} alerts twice after SIGTERM + restart, e.g. {:?}",
        dup.len(),
        &dup[..dup.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------
// (d)

#[test]
fn d_two_members_share_six_partitions_and_deliver_every_alert() {
    let fx = Fixture::new(
        Storage::Memory,
        &[("posts", 6), ("alerts", 3), ("posts.dlq", 1)],
    );
    let msgs = stream(2000);
    let exp = fx.expected(&fx.rules, &msgs);
    let mut a = fx.attache("attache", &fx.rules, |_| {});
    fx.wait_ready(&mut a);
    let mut b = fx.attache("attache", &fx.rules, |_| {});
    fx.wait_ready(&mut b);
    let producer = Background::start(fx.broker.addr(), "posts", msgs, 50);
    let mut all = Reader::new(&fx.broker.addr(), "alerts", 3, Offset::Beginning);
    let ok = all.until(Duration::from_secs(90), |r| has_all(r, &exp.ids));
    producer.join();
    ensure!(fx, ok, "two members: {}", missing(&all.alert_ids(), &exp));
    let consumed = |x: &Attache| {
        x.metric("attache_kafka_messages_consumed_total", "topic=\"posts\"")
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumed(&a) + consumed(&b) < (exp.dead.len() + 2000) as f64 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (na, nb) = (consumed(&a), consumed(&b));
    ensure!(
        fx,
        na > 0.0 && nb > 0.0,
        "both members should read partitions: consumed {na} and {nb}"
    );
    ensure!(
        fx,
        a.proc.exited().is_none() && b.proc.exited().is_none(),
        "a member died"
    );
    eprintln!("two members consumed {na} and {nb} messages");
}

// ---------------------------------------------------------------------------------------
// (e)

#[test]
fn e_broker_killed_and_restarted_mid_stream_loses_no_alert() {
    let mut fx = Fixture::new(
        Storage::Sqlite,
        &[("posts", 3), ("alerts", 3), ("posts.dlq", 1)],
    );
    let msgs = stream(2000);
    let exp = fx.expected(&fx.rules, &msgs);
    let mut a = fx.attache("attache", &fx.rules, |_| {});
    fx.wait_ready(&mut a);
    let producer = Background::start(fx.broker.addr(), "posts", msgs, 20);
    let mut watch = Reader::new(&fx.broker.addr(), "alerts", 3, Offset::Beginning);
    let some = exp.ids.len() / 10;
    let ok = watch.until(Duration::from_secs(60), |r| r.len() >= some);
    ensure!(fx, ok, "only {} alerts within 60 s", watch.recs.len());
    drop(watch);
    fx.broker.kill9();
    let at = producer.sent();
    ensure!(
        fx,
        at < producer.total,
        "the stream was over before the broker was killed: the scenario is not mid-stream"
    );
    std::thread::sleep(Duration::from_secs(1));
    fx.broker.restart();
    producer.join();
    let mut all = Reader::new(&fx.broker.addr(), "alerts", 3, Offset::Beginning);
    let ok = all.until(Duration::from_secs(120), |r| has_all(r, &exp.ids));
    ensure!(
        fx,
        ok,
        "after the broker restart (killed at {at} posts sent): {}",
        missing(&all.alert_ids(), &exp)
    );
    ensure!(
        fx,
        a.proc.exited().is_none(),
        "attache died with the broker"
    );
    eprintln!(
        "broker restart: {} alerts re-sent",
        duplicates(&all.recs).len()
    );
}

// ---------------------------------------------------------------------------------------
// (f)

/// Regression for the off-by-one of issue 4: `store_offset` stores offset+1,
/// `store_offsets` exactly what it is given. After a clean stop the first message
/// processed must be exactly the one after the last completed one.
#[test]
fn f_after_a_restart_the_first_message_processed_is_the_one_after_the_last_completed() {
    let fx = Fixture::new(
        Storage::Memory,
        &[("posts", 1), ("alerts", 1), ("posts.dlq", 1)],
    );
    let every = fx.rules_every_post();
    produce(
        &fx.broker.addr(),
        "posts",
        &bulletins(0, 10),
        usize::MAX,
        &AtomicUsize::new(0),
    );
    let mut a = fx.attache("attache", &every, |_| {});
    let mut alerts = Reader::new(&fx.broker.addr(), "alerts", 1, Offset::Beginning);
    let ok = alerts.until(Duration::from_secs(30), |r| r.len() >= 10);
    ensure!(fx, ok, "first run: {} of 10 alerts", alerts.recs.len());
    fx.terminate(&mut a);
    let c = committed(&fx.broker.addr(), "attache", "posts", 1);
    ensure!(
        fx,
        c == vec![Some(10)],
        "committed after P0..P9: {c:?}, want [Some(10)] (the next message to read)"
    );
    alerts.until(Duration::from_secs(2), |_| false);
    ensure!(
        fx,
        alerts.recs.len() == 10,
        "{} alerts after the first run, want 10",
        alerts.recs.len()
    );

    produce(
        &fx.broker.addr(),
        "posts",
        &bulletins(10, 20),
        usize::MAX,
        &AtomicUsize::new(0),
    );
    let _b = fx.attache("attache", &every, |_| {});
    let ok = alerts.until(Duration::from_secs(30), |r| r.len() >= 20);
    ensure!(
        fx,
        ok,
        "second run: {} of 10 alerts",
        alerts.recs.len() - 10
    );
    alerts.until(Duration::from_secs(2), |_| false);
    let after = &alerts.recs[10..];
    let posts: Vec<String> = after.iter().map(Rec::post_id).collect();
    ensure!(
        fx,
        posts.first().map(String::as_str) == Some("P10"),
        "first alert after the restart is for {:?}, want P10 (all: {posts:?})",
        posts.first()
    );
    let src = after[0].json()["source"]["offset"].clone();
    ensure!(
        fx,
        src == 10,
        "first alert after the restart comes from offset {src}, want 10"
    );
    let want: Vec<String> = (10..20).map(|i| format!("P{i}")).collect();
    ensure!(
        fx,
        posts == want,
        "alerts after the restart: {posts:?}, want P10..P19 once each"
    );
}

// ---------------------------------------------------------------------------------------
// (g)

/// Not ready while the broker is away; ready once partitions are assigned; the
/// consumer-lag gauge (from librdkafka statistics every 500 ms) appears per partition.
#[test]
fn g_readiness_follows_the_assignment_and_consumer_lag_is_exported() {
    let mut fx = Fixture::new(
        Storage::Sqlite,
        &[("posts", 2), ("alerts", 1), ("posts.dlq", 1)],
    );
    produce(
        &fx.broker.addr(),
        "posts",
        &stream(200),
        usize::MAX,
        &AtomicUsize::new(0),
    );
    fx.broker.kill9();
    let mut a = fx.attache("attache", &fx.rules, |_| {});
    for _ in 0..10 {
        let r = http_get(a.port, "/readyz").map(|(s, _)| s);
        ensure!(
            fx,
            r == Some(503),
            "/readyz = {r:?} with the broker down, want 503"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    fx.broker.restart();
    fx.wait_ready(&mut a);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lag: Vec<Option<f64>> = (0..2)
            .map(|p| {
                a.metric(
                    "attache_kafka_consumer_lag_messages",
                    &format!("partition=\"{p}\""),
                )
            })
            .collect();
        if lag.iter().all(Option::is_some) {
            break;
        }
        ensure!(
            fx,
            Instant::now() < deadline,
            "no attache_kafka_consumer_lag_messages for both partitions: {lag:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------
// Dead letters with long parser errors.

/// serde_json quotes the offending value in a type error, so the detail of a bad post
/// can be long and multibyte; the `attache-error` header is cut to 4096 bytes. The cut
/// must fall on a character boundary: a panic there would lose the dead letter and
/// leave the message in flight for good, blocking its partition's commits.
#[test]
fn h_dead_letter_with_a_long_multibyte_parser_error() {
    let fx = Fixture::new(
        Storage::Memory,
        &[("posts", 1), ("alerts", 1), ("posts.dlq", 1)],
    );
    // `invalid type: string "a中中…` puts byte 4096 inside a three-byte character.
    let bad =
        serde_json::json!({"id": "b1", "text": "t", "account": format!("a{}", "中".repeat(2000))})
            .to_string();
    let mut msgs = vec![Msg {
        key: "b".into(),
        value: bad.clone().into_bytes(),
    }];
    msgs.extend(stream(20).into_iter().filter(|m| !m.key.starts_with("bad")));
    let exp = fx.expected(&fx.rules, &msgs);
    ensure!(
        fx,
        exp.dead.get(&0).map(String::as_str) == Some("wrong_type"),
        "scan: {:?}",
        exp.dead
    );
    let at = produce(
        &fx.broker.addr(),
        "posts",
        &msgs,
        usize::MAX,
        &AtomicUsize::new(0),
    );

    let mut a = fx.attache("attache", &fx.rules, |_| {});
    let mut dlq = Reader::new(&fx.broker.addr(), "posts.dlq", 1, Offset::Beginning);
    let ok = dlq.until(Duration::from_secs(20), |r| !r.is_empty());
    ensure!(
        fx,
        ok,
        "no dead letter for the post with a long multibyte parser error"
    );
    let h = &dlq.recs[0].headers;
    let err = h.get("attache-error").cloned().unwrap_or_default();
    ensure!(
        fx,
        !err.is_empty() && err.len() <= 4096 && err.starts_with("invalid type: string \"a中"),
        "attache-error: {} bytes: {:.80}",
        err.len(),
        err
    );
    let mut alerts = Reader::new(&fx.broker.addr(), "alerts", 1, Offset::Beginning);
    let ok = alerts.until(Duration::from_secs(20), |r| has_all(r, &exp.ids));
    ensure!(fx, ok, "{}", missing(&alerts.alert_ids(), &exp));
    fx.terminate(&mut a);
    let c = committed(&fx.broker.addr(), "attache", "posts", 1);
    let end = end_offsets(&at, 1);
    ensure!(
        fx,
        c == vec![Some(end[0])],
        "committed {c:?}, end {end:?}: the dead letter's message never completed"
    );
}

// ---------------------------------------------------------------------------------------
// Oversize posts and pattern subscriptions.

/// A post larger than `input.max_message_bytes` goes to the dead-letter topic cut
/// under the producer's size limit, with headers saying so and giving its size.
#[test]
fn i_oversize_post_is_dead_lettered_truncated() {
    let fx = Fixture::new(
        Storage::Memory,
        &[("posts", 1), ("alerts", 1), ("posts.dlq", 1)],
    );
    let big =
        serde_json::json!({"id": "big", "text": format!("We expel {}", "x".repeat(1_200_000))})
            .to_string();
    let c = ClientConfig::new()
        .set("bootstrap.servers", fx.broker.addr())
        .set("message.max.bytes", "2000000")
        .create::<BaseProducer>()
        .expect("big producer");
    c.send(BaseRecord::to("posts").key("big").payload(&big))
        .map_err(|(e, _)| e)
        .expect("enqueue");
    c.flush(Duration::from_secs(30))
        .expect("flush the big post");
    produce(
        &fx.broker.addr(),
        "posts",
        &bulletins(0, 1),
        usize::MAX,
        &AtomicUsize::new(0),
    );

    let _a = fx.attache("attache", &fx.rules, |_| {});
    let mut dlq = Reader::new(&fx.broker.addr(), "posts.dlq", 1, Offset::Beginning);
    let ok = dlq.until(Duration::from_secs(30), |r| !r.is_empty());
    ensure!(fx, ok, "no dead letter for a {} byte post", big.len());
    let d = &dlq.recs[0];
    let h = &d.headers;
    ensure!(
        fx,
        h.get("attache-reason").map(String::as_str) == Some("oversize"),
        "{h:?}"
    );
    ensure!(
        fx,
        h.get("attache-truncated").map(String::as_str) == Some("true"),
        "{h:?}"
    );
    ensure!(
        fx,
        h.get("attache-original-size") == Some(&big.len().to_string()),
        "{h:?}"
    );
    ensure!(
        fx,
        d.value.len() < 1_000_000 && big.as_bytes().starts_with(&d.value),
        "dead letter of {} bytes is not a prefix of the post under the producer limit",
        d.value.len()
    );
}

/// A pattern subscription reads every matching topic, and never attache's own
/// dead-letter topic — although the pattern config/kafka.example.toml suggests,
/// `^posts\..*`, matches the default dead-letter topic `posts.dlq`. Attache may refuse
/// that configuration (naming the dead-letter topic) or exclude its own topic; what it
/// must not do is read its dead letters back and dead-letter them again without end.
#[test]
fn j_pattern_subscription_reads_matching_topics_but_not_its_own_dead_letters() {
    let fx = Fixture::new(
        Storage::Memory,
        &[
            ("posts.a", 1),
            ("posts.b", 1),
            ("alerts", 1),
            ("posts.dlq", 1),
        ],
    );
    let msgs = stream(200);
    let exp = fx.expected(&fx.rules, &msgs);
    let (a_half, b_half) = msgs.split_at(msgs.len() / 2);
    produce(
        &fx.broker.addr(),
        "posts.a",
        a_half,
        usize::MAX,
        &AtomicUsize::new(0),
    );
    produce(
        &fx.broker.addr(),
        "posts.b",
        b_half,
        usize::MAX,
        &AtomicUsize::new(0),
    );
    let pattern = |p: &'static str| {
        move |cfg: &mut toml::Table| {
            let k = cfg
                .get_mut("kafka")
                .and_then(|k| k.as_table_mut())
                .expect("[kafka]");
            k.remove("topics");
            k.insert("topic_pattern".into(), p.into());
        }
    };
    let _a = match fx.try_attache("attache", &fx.rules, pattern("^posts\\..*")) {
        Ok(a) => a,
        Err(log) => {
            // Refused: it must say why, and a pattern that spares the topic must work.
            ensure!(
                fx,
                log.contains("posts.dlq"),
                "refused the pattern without naming the dead-letter topic:\n{log}"
            );
            fx.attache("attache", &fx.rules, pattern("^posts\\.[ab]$"))
        }
    };
    let mut alerts = Reader::new(&fx.broker.addr(), "alerts", 1, Offset::Beginning);
    let ok = alerts.until(Duration::from_secs(30), |r| has_all(r, &exp.ids));
    ensure!(
        fx,
        ok,
        "pattern subscription: {}",
        missing(&alerts.alert_ids(), &exp)
    );
    let mut dlq = Reader::new(&fx.broker.addr(), "posts.dlq", 1, Offset::Beginning);
    dlq.until(Duration::from_secs(5), |_| false);
    let sources: Vec<String> = dlq
        .recs
        .iter()
        .map(|r| {
            r.headers
                .get("attache-source-topic")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    ensure!(
        fx,
        dlq.recs.len() == exp.dead.len(),
        "{} dead letters for {} malformed messages (from {sources:?})",
        dlq.recs.len(),
        exp.dead.len()
    );
}

// ---------------------------------------------------------------------------------------
// (k)

/// Regression for the alert lost by (c) once `fetch.wait.max.ms` was low (post p994
/// twice in a row): a clean stop commits the next message to read, and that offset is
/// usually inside a record batch of the producer. Tansu 0.6.0's memory engine answers a
/// Fetch only with the batches whose base offset is at or after the fetch offset, so
/// the restarted consumer was handed the *next* batch and the rest of the batch it
/// stopped in was never read: committed 329, first message delivered 334 (recorded
/// with librdkafka's fetch debug; `examples/fetch_from_offsets.rs` shows it without
/// attaché). Here the stop inside a batch is made deterministic: ten posts in one
/// batch, the group's offset committed at 5 as a stop after P0..P4 leaves it, then
/// attache starts and must alert on P5..P9, P5 first. With `RESUMABLE` set to
/// `Storage::Memory` this fails (no alert at all).
#[test]
fn k_restart_from_an_offset_inside_a_record_batch_reads_the_rest_of_the_batch() {
    let fx = Fixture::new(RESUMABLE, &[("posts", 1), ("alerts", 1), ("posts.dlq", 1)]);
    let every = fx.rules_every_post();
    // One produce call, all at once: one record batch (linger.ms=5).
    let at = produce(
        &fx.broker.addr(),
        "posts",
        &bulletins(0, 10),
        usize::MAX,
        &AtomicUsize::new(0),
    );
    let offsets: BTreeSet<i64> = at.values().map(|(_, o)| *o).collect();
    ensure!(
        fx,
        offsets == (0..10).collect(),
        "P0..P9 landed at {offsets:?}, want 0..9"
    );
    // What a stop after completing P0..P4 commits: 5, the next message to read.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", fx.broker.addr())
        .set("group.id", "attache")
        .set("enable.auto.commit", "false")
        .create()
        .expect("committer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("posts", 0, Offset::Offset(5))
        .expect("offset 5");
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit offset 5 for group attache");
    drop(c);
    let got = committed(&fx.broker.addr(), "attache", "posts", 1);
    ensure!(
        fx,
        got == vec![Some(5)],
        "committed {got:?}, want [Some(5)]"
    );

    let _a = fx.attache("attache", &every, |_| {});
    let mut alerts = Reader::new(&fx.broker.addr(), "alerts", 1, Offset::Beginning);
    let ok = alerts.until(Duration::from_secs(30), |r| r.len() >= 5);
    // Let a stray extra alert show up before judging.
    alerts.until(Duration::from_secs(2), |_| false);
    let posts: Vec<String> = alerts.recs.iter().map(Rec::post_id).collect();
    let want: Vec<String> = (5..10).map(|i| format!("P{i}")).collect();
    ensure!(
        fx,
        ok && posts == want,
        "resumed from offset 5 inside the batch of P0..P9: alerts for {posts:?}, want {want:?} \
         (nothing: the broker skipped the rest of the batch)"
    );
}
