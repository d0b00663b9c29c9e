//! Hot reload while posts stream: no post lost, none evaluated against a half-loaded
//! rule set, a broken file keeps the old rules firing, SIGHUP and POST /-/reload work.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Write a file the way editors do: to a temp name, then rename over the target.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn version_files(dir: &Path, k: usize) {
    // The rule and its list live in two files; a half-loaded set would pair the new
    // title with the old word (or the reverse).
    write_atomic(
        &dir.join("words.yaml"),
        &format!("kind: lists\nlists:\n  words: {{ any: [\"word{k}\"] }}\n"),
    );
    write_atomic(
        &dir.join("rule.yaml"),
        &format!(
            "category: test\nrules:\n  - id: r.words\n    title: \"v{k}\"\n    severity: low\n    when: {{ list: words }}\n    examples: {{ match: [\"a word{k} here\"], no_match: [\"nothing\"] }}\n"
        ),
    );
}

struct Attache {
    child: Child,
    stdin: Option<ChildStdin>,
    alerts: mpsc::Receiver<serde_json::Value>,
    /// The thread that forwards stdout lines; it ends at end of output.
    reader: std::thread::JoinHandle<()>,
    port: u16,
}

impl Attache {
    fn start(rules: &Path) -> Self {
        let port = free_port();
        let cfg = rules.parent().unwrap().join("attache.toml");
        std::fs::write(
            &cfg,
            format!(
                "[input]\nkind = \"stdin\"\n[rules]\ndir = \"{}\"\ndebounce_ms = 100\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
                rules.display()
            ),
        )
        .unwrap();
        let mut child = bin()
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        assert!(wait_port(port), "attache did not start");
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            alerts: rx,
            reader,
            port,
        }
    }

    fn send(&mut self, id: &str, text: &str) {
        let line = serde_json::json!({"id": id, "platform": "t", "text": text}).to_string();
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }

    fn version(&self) -> String {
        let (_, body) = http_get(self.port, "/rules").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["version"].as_str().unwrap().to_string()
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(self.port, "/metrics").unwrap();
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Wait (bounded) until `f` holds.
    fn wait_until(&self, what: &str, f: impl Fn(&Self) -> bool) {
        for _ in 0..200 {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }

    fn next_alert(&self) -> serde_json::Value {
        self.alerts
            .recv_timeout(Duration::from_secs(20))
            .expect("an alert")
    }

    fn finish(mut self) -> Vec<serde_json::Value> {
        drop(self.stdin.take()); // end of input: attache drains and exits
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        // The process has exited, but its last lines may still sit in the pipe or in
        // the reader thread: wait for the reader to reach end of output before
        // collecting (collecting at once lost the tail now and then, see
        // the seventh session's note: 1,044 of 1,050 alerts).
        self.reader
            .join()
            .expect("the stdout reader thread panicked");
        self.alerts.try_iter().collect()
    }
}

#[test]
fn edits_while_streaming_lose_nothing_and_never_mix_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    version_files(&rules, 1);
    let mut a = Attache::start(&rules);
    let text = "all of them: word1 word2 word3 word4 word5 word6";
    let mut sent = 0;
    for k in 2..=6 {
        let before = a.version();
        version_files(&rules, k);
        // Keep streaming while the reload happens.
        for _ in 0..200 {
            sent += 1;
            a.send(&format!("p{sent}"), text);
        }
        a.wait_until("the reload", |a| a.version() != before);
    }
    for _ in 0..50 {
        sent += 1;
        a.send(&format!("p{sent}"), text);
    }
    let alerts = a.finish();
    // No post lost: every post alerted exactly once.
    let ids: std::collections::BTreeSet<String> = alerts
        .iter()
        .map(|x| x["post"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(alerts.len(), sent, "one alert per post");
    assert_eq!(ids.len(), sent);
    // Never half-loaded: the title's version matches the word that matched.
    let mut last = 0;
    for x in &alerts {
        let v: usize = x["rule"]["title"].as_str().unwrap()[1..].parse().unwrap();
        let word = x["evidence"][0]["matched"].as_str().unwrap();
        assert_eq!(word, format!("word{v}"), "alert from a mixed rule set: {x}");
        assert!(v >= last, "versions never go back");
        last = v;
    }
    assert_eq!(last, 6);
}

#[test]
fn broken_file_keeps_old_rules_and_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    version_files(&rules, 1);
    let mut a = Attache::start(&rules);
    let v1 = a.version();
    let errors = a.metric("attache_rule_reloads_total{outcome=\"error\"}");
    std::fs::write(
        rules.join("broken.yaml"),
        "rules:\n  - id: x\n    when: { list: nope }\n",
    )
    .unwrap();
    a.wait_until("the failed reload", |a| {
        a.metric("attache_rule_reloads_total{outcome=\"error\"}") > errors
    });
    assert_eq!(a.version(), v1, "old rules stay in force");
    a.send("p1", "word1");
    assert_eq!(a.next_alert()["rule"]["title"], "v1");
    // A rule whose own example fails is refused too.
    std::fs::remove_file(rules.join("broken.yaml")).unwrap();
    a.wait_until("the good reload", |a| {
        a.version() != v1 || a.metric("attache_rules_loaded") > 0.0
    });
    let errors = a.metric("attache_rule_reloads_total{outcome=\"error\"}");
    write_atomic(
        &rules.join("rule.yaml"),
        "category: test\nrules:\n  - id: r.words\n    title: \"v9\"\n    severity: low\n    when: { list: words }\n    examples: { match: [\"no such word\"] }\n",
    );
    a.wait_until("the refused reload", |a| {
        a.metric("attache_rule_reloads_total{outcome=\"error\"}") > errors
    });
    a.send("p2", "word1");
    assert_eq!(a.next_alert()["rule"]["title"], "v1");
    a.finish();
}

#[test]
fn sighup_and_http_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    version_files(&rules, 1);
    // With watching off, only SIGHUP and POST reload.
    let port = free_port();
    let cfg = tmp.path().join("attache.toml");
    std::fs::write(
        &cfg,
        format!("[input]\nkind = \"stdin\"\n[rules]\ndir = \"{}\"\nwatch = false\n[http]\nlisten = \"127.0.0.1:{port}\"\n", rules.display()),
    )
    .unwrap();
    let mut child = bin()
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_port(port));
    let version = || {
        let (_, b) = http_get(port, "/rules").unwrap();
        serde_json::from_str::<serde_json::Value>(&b).unwrap()["rules"][0]["title"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(version(), "v1");
    version_files(&rules, 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(version(), "v1", "no watcher: no reload yet");
    std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if version() == "v2" {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "SIGHUP reloads");
    version_files(&rules, 3);
    let (code, body) = http_request(port, "POST", "/-/reload", "").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(version(), "v3");
    std::fs::write(rules.join("bad.yaml"), "nope: [").unwrap();
    let (code, body) = http_request(port, "POST", "/-/reload", "").unwrap();
    assert_eq!(code, 422);
    assert!(body.contains("bad.yaml:"), "{body}");
    assert_eq!(version(), "v3");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn kubernetes_configmap_symlink_swap_reloads() {
    // A ConfigMap volume: rules/sanctions.yaml -> ..data/sanctions.yaml, ..data -> ..v1;
    // an update writes ..v2, points ..data_tmp at it and renames ..data_tmp over ..data.
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules");
    let v1 = rules.join("..v1");
    std::fs::create_dir_all(&v1).unwrap();
    version_files(&v1, 1);
    symlink("..v1", rules.join("..data")).unwrap();
    symlink("..data/words.yaml", rules.join("words.yaml")).unwrap();
    symlink("..data/rule.yaml", rules.join("rule.yaml")).unwrap();
    let mut a = Attache::start(&rules);
    a.send("p1", "word1 word2");
    assert_eq!(a.next_alert()["rule"]["title"], "v1");
    let before = a.version();
    let v2 = rules.join("..v2");
    std::fs::create_dir(&v2).unwrap();
    version_files(&v2, 2);
    symlink("..v2", rules.join("..data_tmp")).unwrap();
    std::fs::rename(rules.join("..data_tmp"), rules.join("..data")).unwrap();
    a.wait_until("the symlink-swap reload", |a| a.version() != before);
    a.send("p2", "word1 word2");
    assert_eq!(a.next_alert()["rule"]["title"], "v2");
    a.finish();
}
