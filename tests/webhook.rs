//! The webhook sink against real HTTP receivers started in this process on free ports:
//! server errors, timeouts, Retry-After, 410, 400, exhausted attempts and budgets, a
//! slow receiver under a concurrency limit, a bounded queue, a receiver that is down and
//! recovers, the circuit breaker, signatures checked by an independent implementation,
//! secret rotation, the three body formats, and `dlq replay`.
//!
//! Timing assertions are lower bounds only (a retry waited at least this long), never
//! upper bounds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attache::alert::Alert;
use attache::deadletter::{self, DeadLetter, DeadLetters, Entry, ReplayOptions};
use attache::sink::config::{sample_alert, SinkHandle, SinksConfig};
use attache::sink::{Delivery, Outcome};
use attache::telemetry::Metrics;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------------------
// A scriptable receiver.

/// What the receiver does with request number `n` (0-based).
#[derive(Clone)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    delay: Duration,
    body: &'static str,
}

fn status(s: u16) -> Reply {
    Reply {
        status: s,
        retry_after: None,
        delay: Duration::ZERO,
        body: "",
    }
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Req {
    at: Instant,
    headers: HeaderMap,
    body: Vec<u8>,
    status: u16,
}

impl Req {
    fn header(&self, k: &str) -> String {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
    fn id(&self) -> String {
        self.header("webhook-id")
    }
}

#[derive(Clone)]
struct Shared {
    script: Script,
    reqs: Arc<Mutex<Vec<Req>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

struct Receiver {
    port: u16,
    shared: Shared,
}

impl Receiver {
    fn reqs(&self) -> Vec<Req> {
        self.shared.reqs.lock().unwrap().clone()
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }
    /// Ids answered 2xx, with how often.
    fn accepted(&self) -> HashMap<String, usize> {
        accepted(&self.shared.reqs)
    }
}

fn accepted(reqs: &Mutex<Vec<Req>>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in reqs.lock().unwrap().iter() {
        if (200..300).contains(&r.status) {
            *m.entry(r.id()).or_insert(0) += 1;
        }
    }
    m
}

async fn handle(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let now = Instant::now();
    let cur = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(cur, Ordering::SeqCst);
    let n = s.reqs.lock().unwrap().len();
    let reply = (s.script)(n);
    s.reqs.lock().unwrap().push(Req {
        at: now,
        headers,
        body: body.to_vec(),
        status: reply.status,
    });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut r = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    if let Some(ra) = reply.retry_after {
        r.headers_mut().insert("retry-after", ra.parse().unwrap());
    }
    r
}

async fn receiver_on(listener: tokio::net::TcpListener, script: Script) -> Receiver {
    let port = listener.local_addr().unwrap().port();
    let shared = Shared {
        script,
        reqs: Arc::default(),
        in_flight: Arc::default(),
        max_in_flight: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(handle))
        .with_state(shared.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { port, shared }
}

async fn receiver(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Receiver {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    receiver_on(l, Arc::new(script)).await
}

// ---------------------------------------------------------------------------------------
// The sink under test.

const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";

struct Sink {
    handle: SinkHandle,
    metrics: Metrics,
    dead_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A webhook sink to `url` with test-sized timings; `extra` is appended to the
/// `[[sinks]]` table (later keys must not repeat these).
fn sink(url: &str, extra: &str) -> Sink {
    let mut keys: Vec<(String, String)> = vec![
        ("name".into(), "\"hook\"".into()),
        ("kind".into(), "\"webhook\"".into()),
        ("url".into(), format!("{url:?}")),
        ("secret_env".into(), "\"TEST_SECRET\"".into()),
        ("timeout_ms".into(), "2000".into()),
        ("max_attempts".into(), "6".into()),
        ("backoff_initial_ms".into(), "10".into()),
        ("backoff_max_ms".into(), "1500".into()),
        ("give_up_after_ms".into(), "30000".into()),
        ("breaker_failures".into(), "50".into()),
        ("breaker_open_ms".into(), "200".into()),
    ];
    for line in extra.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').unwrap();
        let k = k.trim().to_string();
        keys.retain(|(x, _)| *x != k);
        keys.push((k, v.trim().to_string()));
    }
    let body: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let dead_path = dir.path().join("dead/letters.jsonl");
    let text = format!(
        "[[sinks]]\n{body}\n[dead_letter]\npath = {:?}\n",
        dead_path.to_str().unwrap()
    );
    let cfg: SinksConfig = toml::from_str(&text).unwrap();
    let plan = cfg
        .validate(|k| match k {
            "TEST_SECRET" => Some(SECRET_A.into()),
            "TWO_SECRETS" => Some(format!("{SECRET_A}, {SECRET_B}")),
            _ => None,
        })
        .unwrap();
    let dead = DeadLetters::open(&plan.dead_letter).unwrap();
    let metrics = Metrics::new();
    let handle = plan.sinks[0].spawn(dead, metrics.clone()).unwrap();
    Sink {
        handle,
        metrics,
        dead_path,
        _dir: dir,
    }
}

impl Sink {
    async fn send(&self, a: Alert) -> oneshot::Receiver<Outcome> {
        let (done, wait) = oneshot::channel();
        self.handle
            .tx
            .send(Delivery {
                alert: Arc::new(a.into()),
                done,
            })
            .await
            .unwrap();
        wait
    }

    async fn deliver(&self, a: Alert) -> Outcome {
        self.send(a).await.await.unwrap()
    }

    fn count(&self, outcome: &str) -> u64 {
        self.metrics
            .deliveries
            .with_label_values(&["hook", outcome])
            .get()
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        if !self.dead_path.exists() {
            return vec![];
        }
        deadletter::replay(&self.dead_path)
            .unwrap()
            .map(|r| match r.unwrap().unwrap() {
                Entry::Delivery(d) => *d,
                other => panic!("unexpected record {other:?}"),
            })
            .collect()
    }
}

fn alert(n: u32) -> Alert {
    let mut a = sample_alert();
    a.post.id = format!("post-{n}");
    a.id = attache::alert::alert_id(&a.rule.id, "x", &a.post.id);
    a
}

/// Standard Webhooks verification written from the specification, independent of the
/// sink's signing code: any `v1,` signature made with the secret over
/// `{id}.{timestamp}.{body}` is valid.
fn verify(secret: &str, req: &Req) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", req.id(), req.header("webhook-timestamp")).as_bytes());
    mac.update(&req.body);
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    req.header("webhook-signature")
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(want.as_str()))
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_then_success_keep_the_id_and_sign_every_attempt() {
    let rx = receiver(|n| if n < 2 { status(500) } else { status(204) }).await;
    let s = sink(&rx.url(), "headers = { \"X-Team\" = \"diplo\" }");
    let a = alert(1);
    assert_eq!(s.deliver(a.clone()).await, Outcome::Delivered);
    let reqs = rx.reqs();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.id(), a.id, "same webhook-id on every attempt");
        assert!(verify(SECRET_A, r), "signature of attempt at {:?}", r.at);
        let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
        assert!((ts - chrono::Utc::now().timestamp()).abs() < 300);
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("x-team"), "diplo");
        assert!(r.header("user-agent").starts_with("attache/"));
        assert_eq!(
            r.body, reqs[0].body,
            "the body is the same on every attempt"
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(v["type"], "attache.alert");
    assert_eq!(v["data"], serde_json::to_value(&a).unwrap());
    // A tampered body fails the independent check.
    let mut bad = reqs[2].clone();
    bad.body.push(b' ');
    assert!(!verify(SECRET_A, &bad));
    assert_eq!(s.count("retried"), 2);
    assert_eq!(s.count("delivered"), 1);
    assert_eq!(
        s.metrics
            .delivery_retries
            .with_label_values(&["hook"])
            .get(),
        2
    );
    assert!(s.dead_letters().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried() {
    let rx = receiver(|n| {
        if n == 0 {
            Reply {
                delay: Duration::from_secs(20),
                ..status(204)
            }
        } else {
            status(204)
        }
    })
    .await;
    let s = sink(&rx.url(), "timeout_ms = 1000");
    let a = alert(2);
    // The client's timer starts after this and before the receiver sees the request.
    let sent = Instant::now();
    assert_eq!(s.deliver(a.clone()).await, Outcome::Delivered);
    let reqs = rx.reqs();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.id() == a.id));
    assert!(reqs[1].at >= sent + Duration::from_millis(1000));
    assert_eq!(s.count("retried"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let rx = receiver(|n| match n {
        0 => Reply {
            retry_after: Some("1".into()),
            ..status(429)
        },
        1 => Reply {
            retry_after: Some(httpdate::fmt_http_date(
                std::time::SystemTime::now() + Duration::from_secs(2),
            )),
            ..status(503)
        },
        _ => status(200),
    })
    .await;
    // Backoff alone would retry within 10–20 ms.
    let s = sink(&rx.url(), "backoff_initial_ms = 10\nbackoff_max_ms = 5000");
    assert_eq!(s.deliver(alert(3)).await, Outcome::Delivered);
    let reqs = rx.reqs();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs[1].at >= reqs[0].at + Duration::from_secs(1),
        "Retry-After: 1 waited {:?}",
        reqs[1].at - reqs[0].at
    );
    // An HTTP-date two seconds ahead (second resolution): at least one second.
    assert!(reqs[2].at >= reqs[1].at + Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_capped_by_backoff_max() {
    let rx = receiver(|n| {
        if n == 0 {
            Reply {
                retry_after: Some("3600".into()),
                ..status(429)
            }
        } else {
            status(204)
        }
    })
    .await;
    let s = sink(&rx.url(), "backoff_max_ms = 300");
    assert_eq!(s.deliver(alert(4)).await, Outcome::Delivered);
    let reqs = rx.reqs();
    assert!(reqs[1].at >= reqs[0].at + Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_sink_and_dead_letters_everything() {
    let rx = receiver(|_| status(410)).await;
    let s = sink(&rx.url(), "concurrency = 1");
    let first = alert(10);
    assert_eq!(s.deliver(first.clone()).await, Outcome::DeadLettered);
    assert_eq!(s.deliver(alert(11)).await, Outcome::DeadLettered);
    assert_eq!(s.deliver(alert(12)).await, Outcome::DeadLettered);
    assert_eq!(rx.reqs().len(), 1, "no request after the 410");
    let dl = s.dead_letters();
    assert_eq!(dl.len(), 3);
    assert_eq!(dl[0].alert, first.clone().into());
    assert_eq!(dl[0].kind, "delivery");
    assert_eq!(dl[0].sink, "hook");
    assert_eq!(dl[0].attempts.len(), 1);
    assert_eq!(dl[0].attempts[0].status, Some(410));
    assert!(dl[0].reason.contains("410"), "{}", dl[0].reason);
    assert!(dl[1].attempts.is_empty());
    assert!(dl[1].reason.contains("disabled"), "{}", dl[1].reason);
    assert_eq!(s.count("dead_lettered"), 3);
    assert_eq!(
        s.metrics
            .dead_letters
            .with_label_values(&["delivery"])
            .get(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_is_dead_lettered_at_once() {
    let rx = receiver(|_| Reply {
        body: "missing field `data`",
        ..status(400)
    })
    .await;
    let s = sink(&rx.url(), "");
    let a = alert(20);
    assert_eq!(s.deliver(a.clone()).await, Outcome::DeadLettered);
    assert_eq!(rx.reqs().len(), 1, "not retried");
    let dl = s.dead_letters();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].alert, a.clone().into());
    assert_eq!(dl[0].attempts[0].status, Some(400));
    assert_eq!(
        dl[0].attempts[0].response.as_deref(),
        Some("missing field `data`")
    );
    assert!(dl[0].reason.contains("not retried"));
    assert_eq!(s.count("retried"), 0);
    // A later alert is still tried (400 does not disable the sink).
    assert_eq!(s.deliver(alert(21)).await, Outcome::DeadLettered);
    assert_eq!(rx.reqs().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_keep_the_whole_history() {
    let rx = receiver(|_| status(503)).await;
    let s = sink(&rx.url(), "max_attempts = 3");
    assert_eq!(s.deliver(alert(30)).await, Outcome::DeadLettered);
    assert_eq!(rx.reqs().len(), 3);
    let dl = s.dead_letters();
    assert_eq!(dl.len(), 1);
    let nums: Vec<u32> = dl[0].attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(nums, [1, 2, 3]);
    assert!(dl[0].attempts.iter().all(|a| a.status == Some(503)));
    assert!(dl[0].reason.contains("after 3 attempt"), "{}", dl[0].reason);
    assert_eq!(s.count("retried"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_budget_sends_to_the_dead_letters() {
    let rx = receiver(|_| status(500)).await;
    let s = sink(
        &rx.url(),
        "max_attempts = 1000\nbackoff_initial_ms = 50\nbackoff_max_ms = 50\ngive_up_after_ms = 400",
    );
    assert_eq!(s.deliver(alert(31)).await, Outcome::DeadLettered);
    let dl = s.dead_letters();
    assert!(dl[0].reason.contains("budget"), "{}", dl[0].reason);
    assert!(dl[0].attempts.len() >= 2);
    assert_eq!(dl[0].attempts.len(), rx.reqs().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_recorded_without_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook/token-abc123");
    let s = sink(&url, "max_attempts = 2");
    assert_eq!(s.deliver(alert(32)).await, Outcome::DeadLettered);
    let dl = s.dead_letters();
    let err = dl[0].attempts[0].error.clone().unwrap();
    assert!(err.starts_with("connect"), "{err}");
    assert!(!err.contains("token-abc123"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_sees_at_most_concurrency_requests() {
    let rx = receiver(|_| Reply {
        delay: Duration::from_millis(150),
        ..status(200)
    })
    .await;
    let s = sink(&rx.url(), "concurrency = 3");
    let mut waits = Vec::new();
    for n in 0..12 {
        waits.push(s.send(alert(100 + n)).await);
    }
    for w in waits {
        assert_eq!(w.await.unwrap(), Outcome::Delivered);
    }
    let max = rx.shared.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} concurrent requests with concurrency = 3");
    assert!(max >= 2, "requests were not concurrent ({max})");
    assert_eq!(rx.accepted().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded() {
    let rx = receiver(|_| Reply {
        delay: Duration::from_millis(1000),
        ..status(200)
    })
    .await;
    let s = sink(&rx.url(), "concurrency = 1\nqueue_capacity = 2");
    let mut waits = Vec::new();
    let mut refused = false;
    for n in 0..10 {
        let (done, wait) = oneshot::channel();
        match s.handle.tx.try_send(Delivery {
            alert: Arc::new(alert(200 + n).into()),
            done,
        }) {
            Ok(()) => waits.push(wait),
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused, "a full queue refuses more");
    // One in flight plus the queue's capacity.
    assert!(waits.len() <= 3, "{} accepted", waits.len());
    let depth = s.metrics.queue_depth.with_label_values(&["hook"]).get();
    assert!(depth <= 2, "queue depth {depth}");
    for w in waits {
        assert_eq!(w.await.unwrap(), Outcome::Delivered);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_down_for_a_while_gets_every_alert_exactly_once() {
    // Reserve a port, then leave it closed: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let s = sink(
        &url,
        "concurrency = 4\nmax_attempts = 1000\nbackoff_initial_ms = 20\nbackoff_max_ms = 200\nbreaker_failures = 3\nbreaker_open_ms = 100\ngive_up_after_ms = 60000",
    );
    let reqs: Arc<Mutex<Vec<Req>>> = Arc::default();
    let n = 30u32;
    let ids: Vec<String> = (0..n).map(|i| alert(300 + i).id).collect();
    let mut checks = Vec::new();
    for i in 0..n {
        let wait = s.send(alert(300 + i)).await;
        let reqs = reqs.clone();
        let id = ids[i as usize].clone();
        checks.push(tokio::spawn(async move {
            let outcome = wait.await.unwrap();
            // Answered only after the receiver accepted it.
            let seen = accepted(&reqs).get(&id).copied().unwrap_or(0);
            (outcome, seen)
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(s.count("retried") > 0, "the outage was felt");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let script: Script = Arc::new(|_| status(200));
    let shared = Shared {
        script,
        reqs: reqs.clone(),
        in_flight: Arc::default(),
        max_in_flight: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(handle))
        .with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    for c in checks {
        let (outcome, seen) = c.await.unwrap();
        assert_eq!(outcome, Outcome::Delivered);
        assert_eq!(seen, 1, "answered before (or without) exactly one delivery");
    }
    let acc = accepted(&reqs);
    assert_eq!(acc.len(), n as usize, "every id delivered");
    assert!(
        acc.values().all(|&c| c == 1),
        "each id exactly once: {acc:?}"
    );
    assert!(ids.iter().all(|id| acc.contains_key(id)));
    assert!(s.dead_letters().is_empty());
    assert_eq!(s.count("delivered"), u64::from(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_then_closes() {
    let rx = receiver(|n| if n < 4 { status(500) } else { status(204) }).await;
    let s = sink(
        &rx.url(),
        "concurrency = 1\nmax_attempts = 20\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\nbreaker_failures = 3\nbreaker_open_ms = 500",
    );
    let w1 = s.send(alert(400)).await;
    let w2 = s.send(alert(401)).await;
    let w3 = s.send(alert(402)).await;
    for w in [w1, w2, w3] {
        assert_eq!(w.await.unwrap(), Outcome::Delivered);
    }
    let reqs = rx.reqs();
    // 3 failures open the circuit; probe 4 fails and opens it again; probe 5 closes
    // it; the other two alerts follow at once.
    assert_eq!(reqs.len(), 7, "no request while the circuit is open");
    let open = Duration::from_millis(500);
    assert!(
        reqs[3].at >= reqs[2].at + open,
        "first probe only after breaker_open_ms"
    );
    assert!(
        reqs[4].at >= reqs[3].at + open,
        "a failed probe opens the circuit again"
    );
    assert_eq!(rx.accepted().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_drains_the_queue_into_the_dead_letters() {
    let rx = receiver(|_| status(503)).await;
    let s = sink(
        &rx.url(),
        "concurrency = 2\nmax_attempts = 1000\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\nbreaker_failures = 2\nbreaker_open_ms = 200\ngive_up_after_ms = 500",
    );
    let n = 40;
    let mut waits = Vec::new();
    for i in 0..n {
        waits.push(s.send(alert(450 + i)).await);
    }
    for w in waits {
        assert_eq!(w.await.unwrap(), Outcome::DeadLettered);
    }
    let dl = s.dead_letters();
    assert_eq!(dl.len(), n as usize, "nothing lost");
    // Once the outage is older than the budget, alerts stop waiting for the endpoint:
    // far fewer requests than alerts.
    let reqs = rx.reqs().len();
    assert!(reqs < n as usize, "{reqs} requests for {n} alerts");
    assert!(dl
        .iter()
        .any(|d| d.attempts.is_empty() && d.reason.contains("circuit open")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_secret_signs_during_rotation() {
    let rx = receiver(|_| status(200)).await;
    let s = sink(&rx.url(), "secret_env = \"TWO_SECRETS\"");
    assert_eq!(s.deliver(alert(500)).await, Outcome::Delivered);
    let r = &rx.reqs()[0];
    let sigs: Vec<String> = r
        .header("webhook-signature")
        .split(' ')
        .map(String::from)
        .collect();
    assert_eq!(sigs.len(), 2);
    assert!(sigs.iter().all(|s| s.starts_with("v1,")));
    // A receiver that knows only the old, or only the new, secret accepts it.
    assert!(verify(SECRET_A, r));
    assert!(verify(SECRET_B, r));
    assert!(!verify("whsec_dW5rbm93bg==", r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_and_template_formats() {
    let rx = receiver(|_| status(200)).await;
    let am = sink(&rx.url(), "format = \"alertmanager\"");
    let a = alert(600);
    assert_eq!(am.deliver(a.clone()).await, Outcome::Delivered);
    let v: serde_json::Value = serde_json::from_slice(&rx.reqs()[0].body).unwrap();
    assert_eq!(v["version"], "4");
    assert_eq!(v["status"], "firing");
    assert_eq!(v["receiver"], "hook");
    assert_eq!(v["alerts"][0]["labels"]["alertname"], a.rule.id);
    assert_eq!(v["alerts"][0]["labels"]["actor"], "SA");
    assert_eq!(v["alerts"][0]["labels"]["target"], "CA");
    assert_eq!(v["alerts"][0]["annotations"]["alert_id"], a.id);

    let tpl = sink(
        &rx.url(),
        "format = \"template\"\ncontent_type = \"text/plain; charset=utf-8\"\ntemplate = \"{{ alert.rule.severity | upper }} {{ alert.actor }}→{{ alert.targets[0] }}: {{ alert.post.url }}\"",
    );
    assert_eq!(tpl.deliver(a.clone()).await, Outcome::Delivered);
    let r = &rx.reqs()[1];
    assert_eq!(r.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(
        String::from_utf8(r.body.clone()).unwrap(),
        format!("HIGH SA→CA: {}", a.post.url.clone().unwrap())
    );
    assert!(verify(SECRET_A, r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_through_the_sink() {
    // First the receiver rejects: the alert lands in the dead letters.
    let bad = receiver(|_| status(422)).await;
    let s = sink(&bad.url(), "");
    let a = alert(700);
    assert_eq!(s.deliver(a.clone()).await, Outcome::DeadLettered);

    // Then the same sink name points at a receiver that accepts: replay delivers it.
    let good = receiver(|_| status(204)).await;
    let cfg: SinksConfig = toml::from_str(&format!(
        "[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = {:?}\nsecret_env = \"S\"\n",
        good.url()
    ))
    .unwrap();
    let plan = cfg.validate(|_| Some(SECRET_A.into())).unwrap();
    let out = deadletter::replay_output_path(&s.dead_path);
    let rep = deadletter::replay_file(
        &s.dead_path,
        &plan.sinks,
        ReplayOptions {
            sink: None,
            failed: DeadLetters::file(&out).unwrap(),
            in_flight: 8,
        },
        &Metrics::new(),
    )
    .await
    .unwrap();
    assert_eq!(rep.records, 1);
    assert_eq!(rep.delivered, 1);
    assert!(rep.all_delivered(), "{rep}");
    let r = &good.reqs()[0];
    assert_eq!(r.id(), a.id, "replay keeps the webhook-id");
    assert!(verify(SECRET_A, r));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_ends_when_its_queue_closes() {
    let rx = receiver(|_| Reply {
        delay: Duration::from_millis(100),
        ..status(200)
    })
    .await;
    let s = sink(&rx.url(), "");
    let w = s.send(alert(800)).await;
    let Sink { handle, .. } = s;
    drop(handle.tx);
    // The queued alert is still answered before the task ends.
    handle.task.await.unwrap();
    assert_eq!(w.await.unwrap(), Outcome::Delivered);
}
