//! Operating attaché with the real Prometheus tools: /metrics passes `promtool check
//! metrics`, and a real Prometheus scrapes it and answers a query about it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn tool(name: &str, package: &str) -> String {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "`{name}` is not installed: run `apt-get install {package}` (scripts/test-all does it)"
    );
    String::from_utf8_lossy(&found.stdout).trim().to_string()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn attache_follow(port: u16) -> Kill {
    let child = bin()
        .args(["run", "--follow", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_port(port), "attache did not start");
    // Wait until the sample stream is done so every series exists.
    let k = Kill(child);
    for _ in 0..600 {
        if http_get(port, "/metrics").is_some_and(|(_, m)| m.contains("attache_input_finished 1")) {
            return k;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the sample stream did not finish");
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let promtool = tool("promtool", "prometheus");
    let port = free_port();
    let _a = attache_follow(port);
    let (code, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    let head: String = metrics.lines().take(40).collect::<Vec<_>>().join("\n");
    for name in [
        "attache_build_info",
        "attache_posts_consumed_total",
        "attache_decode_failures_total",
        "attache_rule_matches_total",
        "attache_alerts_total",
        "attache_processing_seconds_bucket",
        "attache_end_to_end_latency_seconds_bucket",
        "attache_rules_loaded",
        "attache_rule_reloads_total",
        "attache_rules_last_reload_success_timestamp_seconds",
        "attache_deliveries_total",
    ] {
        assert!(
            metrics.contains(name),
            "missing {name} in /metrics on 127.0.0.1:{port}; its first lines:\n{head}"
        );
    }
    let mut p = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    p.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn real_prometheus_scrapes_attache() {
    let prometheus = tool("prometheus", "prometheus");
    let port = free_port();
    let _a = attache_follow(port);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: attache\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let pport = free_port();
    let _p = Kill(
        Command::new(prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_port(pport), "prometheus did not start");
    // The sample stream has a few hundred posts; Prometheus must see them.
    let q = "/api/v1/query?query=sum(attache_posts_consumed_total%7Bjob%3D%22attache%22%7D)";
    let mut last = String::new();
    for _ in 0..300 {
        if let Some((200, body)) = http_get(pport, q) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(val) = v["data"]["result"][0]["value"][1].as_str() {
                let n: f64 = val.parse().unwrap_or(0.0);
                assert!(n >= 100.0, "posts consumed seen by Prometheus: {n}");
                return;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("Prometheus never had the series: {last}");
}
