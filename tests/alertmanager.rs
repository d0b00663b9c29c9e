//! The Alertmanager sink against the real Alertmanager (Debian package
//! `prometheus-alertmanager`), started on a free port with a null receiver: the alert is
//! visible through Alertmanager's own API with the expected labels and annotations.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use attache::deadletter::DeadLetters;
use attache::sink::config::{sample_alert, SinksConfig};
use attache::sink::{Delivery, Outcome};
use attache::telemetry::Metrics;
use tokio::sync::oneshot;

const BIN: &str = "/usr/bin/prometheus-alertmanager";

/// Kills the Alertmanager when the test ends, however it ends.
struct Running {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

async fn start_alertmanager() -> Running {
    assert!(
        Path::new(BIN).exists(),
        "{BIN} is missing: the Alertmanager test needs the real Alertmanager; run `apt-get install prometheus-alertmanager`"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("alertmanager.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: \"null\"\n  group_wait: 1h\nreceivers:\n  - name: \"null\"\n",
    )
    .unwrap();
    let storage = dir.path().join("data");
    std::fs::create_dir_all(&storage).unwrap();
    let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
    let port = free_port();
    let child = Command::new(BIN)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", storage.display()))
        .arg("--cluster.listen-address=")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let am = Running {
        child,
        port,
        _dir: dir,
    };
    let client = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    for _ in 0..300 {
        if let Ok(r) = client.get(&ready).send().await {
            if r.status().is_success() {
                return am;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(am._dir.path().join("alertmanager.log")).unwrap_or_default();
    panic!("Alertmanager did not become ready on port {port}:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_visible_in_a_real_alertmanager() {
    let am = start_alertmanager().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg: SinksConfig = toml::from_str(&format!(
        "[[sinks]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:{}/\"\nbackoff_initial_ms = 10\n",
        am.port
    ))
    .unwrap();
    let plan = cfg.validate(|_| None).unwrap();
    let dead = DeadLetters::file(&dir.path().join("dl.jsonl")).unwrap();
    let metrics = Metrics::new();
    let sink = plan.sinks[0].spawn(dead, metrics.clone()).unwrap();

    // The bundled sample's kind of alert: a 2018 post. It must still arrive active.
    let old = sample_alert();
    let mut fresh = sample_alert();
    fresh.rule.id = "sanctions.announced".into();
    fresh.rule.category = "sanctions".into();
    fresh.rule.severity = "medium".into();
    fresh.actor = Some("US".into());
    fresh.targets = vec!["IR".into(), "SY".into()];
    fresh.post.created_at = Some(attache::alert::rfc3339(chrono::Utc::now()));
    fresh.id = "fresh".into();
    for a in [&old, &fresh] {
        let (done, wait) = oneshot::channel();
        sink.tx
            .send(Delivery {
                alert: Arc::new(a.clone().into()),
                done,
            })
            .await
            .unwrap();
        assert_eq!(wait.await.unwrap(), Outcome::Delivered);
    }

    let url = format!("http://127.0.0.1:{}/api/v2/alerts", am.port);
    let got: Vec<serde_json::Value> = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let find = |name: &str| {
        got.iter()
            .find(|a| a["labels"]["alertname"] == name)
            .unwrap_or_else(|| panic!("no alert {name} in {got:#?}"))
            .clone()
    };

    let a = find("png.declared");
    let l = &a["labels"];
    assert_eq!(l["alertname"], "png.declared");
    assert_eq!(l["rule_id"], "png.declared");
    assert_eq!(l["category"], "persona_non_grata");
    assert_eq!(l["severity"], "high");
    assert_eq!(l["actor"], "SA");
    assert_eq!(l["target"], "CA");
    let an = &a["annotations"];
    assert_eq!(
        an["summary"],
        "Ambassador declared persona non grata: SA → CA"
    );
    assert_eq!(an["post_url"], old.post.url.clone().unwrap());
    assert_eq!(an["text"], old.post.text.clone().unwrap());
    assert_eq!(an["alert_id"], old.id);
    assert_eq!(a["status"]["state"], "active");
    assert!(a["startsAt"]
        .as_str()
        .unwrap()
        .starts_with("2018-08-05T23:01:00"));
    assert_eq!(a["generatorURL"], old.post.url.clone().unwrap());

    let b = find("sanctions.announced");
    assert_eq!(b["labels"]["category"], "sanctions");
    assert_eq!(b["labels"]["severity"], "medium");
    assert_eq!(b["labels"]["actor"], "US");
    assert_eq!(b["labels"]["target"], "IR");
    assert_eq!(b["status"]["state"], "active");

    assert_eq!(
        metrics
            .deliveries
            .with_label_values(&["am", "delivered"])
            .get(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_alertmanager_rejects_goes_to_the_dead_letters() {
    let am = start_alertmanager().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg: SinksConfig = toml::from_str(&format!(
        "[[sinks]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:{}\"\n",
        am.port
    ))
    .unwrap();
    let plan = cfg.validate(|_| None).unwrap();
    let path = dir.path().join("dl.jsonl");
    let sink = plan.sinks[0]
        .spawn(DeadLetters::file(&path).unwrap(), Metrics::new())
        .unwrap();
    // Every label empty: Alertmanager refuses an alert without labels (400).
    let mut a = sample_alert();
    a.rule.id = String::new();
    a.rule.category = String::new();
    a.rule.severity = String::new();
    a.actor = None;
    a.targets = vec![];
    let (done, wait) = oneshot::channel();
    sink.tx
        .send(Delivery {
            alert: Arc::new(a.into()),
            done,
        })
        .await
        .unwrap();
    assert_eq!(wait.await.unwrap(), Outcome::DeadLettered);
    let rec: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["attempts"].as_array().unwrap().len(), 1, "{rec}");
    assert_eq!(rec["attempts"][0]["status"], 400, "{rec}");
}
