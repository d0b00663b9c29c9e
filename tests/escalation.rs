//! Escalation end to end: replays of the bundled crises reach their documented levels
//! in order (`attache pairs`), escalation alerts validate against their schema, and
//! with Kafka the index survives a restart and stays right when two instances share
//! the work (a real Tansu broker on a free port).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kafka::{produce, tail, Broker, Proc, Reader, RESUMABLE};
use common::{bin, free_port, http_get, wait_port};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample(name: &str) -> PathBuf {
    root().join("samples").join(name)
}

/// `attache pairs --json` over files: the offline replay.
fn replay(files: &[&Path]) -> Value {
    let out = bin()
        .arg("pairs")
        .arg("--json")
        .arg("--rules")
        .arg(root().join("rules"))
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "attache pairs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("pairs --json is JSON")
}

/// "at kind actor>target from→to" per escalation alert, in order.
fn timeline(v: &Value) -> Vec<String> {
    v["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}>{} {}→{}",
                &e["at"].as_str().unwrap()[..10],
                e["kind"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["previous_level"].as_str().unwrap_or("none"),
                e["level"].as_str().unwrap_or("none"),
            )
        })
        .collect()
}

/// The pair directions (`SA>CA`) of a `/pairs` or `attache pairs --json` answer.
fn pair_keys(v: &Value) -> BTreeSet<String> {
    v["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}>{}",
                p["actor"].as_str().unwrap(),
                p["target"].as_str().unwrap()
            )
        })
        .collect()
}

/// Highest level each pair direction reached through escalation alerts.
fn peaks(escalations: &[Value]) -> BTreeMap<String, String> {
    let order = ["watch", "warning", "crisis"];
    let rank = |l: &str| order.iter().position(|x| *x == l).unwrap_or(0);
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for e in escalations.iter().filter(|e| e["kind"] == "escalation") {
        let k = format!(
            "{}>{}",
            e["actor"].as_str().unwrap(),
            e["target"].as_str().unwrap()
        );
        let l = e["level"].as_str().unwrap().to_string();
        let cur = out.entry(k).or_insert_with(|| l.clone());
        if rank(&l) > rank(cur) {
            *cur = l;
        }
    }
    out
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schema/escalation.v1.json")).unwrap(),
    )
    .unwrap();
    jsonschema::validator_for(&schema).expect("schema/escalation.v1.json compiles")
}

#[test]
fn escalation_alerts_validate_against_their_schema() {
    let v = replay(&[
        &sample("skripal_2018.jsonl"),
        &sample("canada_saudi_2018.jsonl"),
        &sample("aukus_2021.jsonl"),
    ]);
    let val = validator();
    let all = v["escalations"].as_array().unwrap();
    assert!(all.len() >= 5, "{all:?}");
    for e in all {
        let errs: Vec<String> = val.iter_errors(e).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "{errs:?}\n{e}");
    }
    // A per-post alert is not an escalation alert.
    let a = serde_json::json!({"schema": "attache.alert.v1", "id": "x"});
    assert!(!val.is_valid(&a));
}

#[test]
fn scan_never_prints_escalation_alerts() {
    let out = bin()
        .args(["scan", "--rules"])
        .arg(root().join("rules"))
        .arg(sample("skripal_2018.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines = common::json_lines(&out.stdout);
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|a| a["schema"] == "attache.alert.v1"));
}

// ---------------------------------------------------------------------------------------
// Kafka: restart and two instances.

struct Setup {
    dir: tempfile::TempDir,
    broker: Broker,
}

impl Setup {
    fn new(topics: &[(&str, i32)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("attache-escalation-")
            .tempdir()
            .unwrap();
        let broker = Broker::start(dir.path(), RESUMABLE);
        for (t, p) in topics {
            broker.create_topic(t, *p);
        }
        Self { dir, broker }
    }

    /// Start an attache member of group `g`; returns the process and its HTTP port.
    fn attache(&self, name: &str) -> (Proc, u16) {
        let port = free_port();
        let cfg = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                r#"[input]
kind = "kafka"
[kafka]
brokers = "{brokers}"
group_id = "g"
topics = ["posts"]
auto_offset_reset = "earliest"
session_timeout_ms = 6000
drain_timeout_ms = 3000
commit_interval_ms = 200
[rules]
dir = "{rules}"
watch = false
[http]
listen = "127.0.0.1:{port}"
[output]
stdout = false
[escalation]
pairs_topic = "pairs"
escalations_topic = "escalations"
"#,
                brokers = self.broker.addr(),
                rules = root().join("rules").display(),
            ),
        )
        .unwrap();
        let p = Proc::spawn(
            name,
            bin().arg("run").arg("--config").arg(&cfg),
            &self.dir.path().join(format!("{name}.log")),
        );
        assert!(
            wait_port(port),
            "{name} did not serve HTTP:\n{}",
            self.logs()
        );
        (p, port)
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                s += &format!("--- {}\n{}\n", p.display(), tail(&p, 25));
            }
        }
        s
    }
}

/// Posts of a sample file as records keyed by the posting country.
fn records(file: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let key = v["account"]["country"].as_str().unwrap_or("").to_string();
            (key, l.as_bytes().to_vec())
        })
        .collect()
}

fn ids(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn ready(port: u16) -> bool {
    for _ in 0..300 {
        if http_get(port, "/readyz").is_some_and(|(s, _)| s == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Run 1 reads the first half of the Skripal stream and stops (SIGTERM); run 2 reads
/// the rest. Run 2 must rebuild the index from the pairs topic: the escalation alerts
/// of both runs together are exactly the offline replay's, none twice. Without the
/// rebuild run 2 starts from nothing and sends different level changes.
#[test]
fn index_survives_a_restart_without_resending_old_escalations() {
    let s = Setup::new(&[("posts", 1), ("pairs", 1), ("escalations", 1)]);
    let file = sample("skripal_2018.jsonl");
    let recs = records(&file);
    let half = recs.len() / 2;
    let first = s.dir.path().join("first.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    std::fs::write(&first, lines[..half].join("\n") + "\n").unwrap();
    let want_first = ids(replay(&[&first])["escalations"].as_array().unwrap());
    let want_all = ids(replay(&[&file])["escalations"].as_array().unwrap());
    assert!(
        want_first.len() >= 2 && want_all.len() > want_first.len(),
        "the sample must escalate in both halves: {want_first:?} / {want_all:?}"
    );

    let brokers = s.broker.addr();
    produce(&brokers, "posts", &recs[..half]);
    let (mut a1, _) = s.attache("run1");
    let mut r = Reader::new(&brokers, "escalations", 1);
    let got = r.until(Duration::from_secs(90), |v| {
        let have: BTreeSet<String> = ids(v).into_iter().collect();
        want_first.iter().all(|i| have.contains(i))
    });
    assert!(
        got,
        "run 1: {:?} of {want_first:?}\n{}",
        ids(&r.values),
        s.logs()
    );
    // Let the commits land, then stop cleanly.
    std::thread::sleep(Duration::from_millis(1500));
    let st = a1.terminate(Duration::from_secs(30));
    assert!(
        st.is_some_and(|s| s.success()),
        "run 1 did not exit 0\n{}",
        s.logs()
    );

    produce(&brokers, "posts", &recs[half..]);
    let (mut a2, _) = s.attache("run2");
    let got = r.until(Duration::from_secs(120), |v| v.len() >= want_all.len());
    // A little longer: anything extra would show up now.
    std::thread::sleep(Duration::from_secs(3));
    r.until(Duration::from_millis(500), |_| false);
    let _ = a2.terminate(Duration::from_secs(30));
    let got_ids = ids(&r.values);
    assert!(got, "run 2 did not finish: {got_ids:?}\n{}", s.logs());
    let mut sorted = got_ids.clone();
    sorted.sort();
    let mut want = want_all.clone();
    want.sort();
    assert_eq!(
        sorted,
        want,
        "escalation ids (Kafka, two runs) vs offline replay\n{}",
        s.logs()
    );
}

/// Two members share 4 post partitions and 4 pair partitions: every pair direction
/// reaches the same highest level as the offline replay of the three crises (which
/// needs all of a pair's contributions in one index), no escalation is sent twice, and
/// every pair the replay still holds at the end is held by exactly one member.
#[test]
fn two_instances_agree_with_one_offline_replay() {
    let s = Setup::new(&[("posts", 4), ("pairs", 4), ("escalations", 1)]);
    let files = [
        sample("skripal_2018.jsonl"),
        sample("canada_saudi_2018.jsonl"),
        sample("aukus_2021.jsonl"),
    ];
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let offline = replay(&refs);
    let want = peaks(offline["escalations"].as_array().unwrap());
    assert!(want.len() >= 4, "{want:?}");

    let (_a1, p1) = s.attache("member1");
    let (_a2, p2) = s.attache("member2");
    assert!(ready(p1) && ready(p2), "members not ready\n{}", s.logs());
    // Both members hold partitions before the posts arrive: no rebalance mid-stream.
    std::thread::sleep(Duration::from_secs(3));
    let brokers = s.broker.addr();
    for f in &files {
        produce(&brokers, "posts", &records(f));
    }
    let mut r = Reader::new(&brokers, "escalations", 1);
    let done = r.until(Duration::from_secs(120), |v| peaks(v) == want);
    std::thread::sleep(Duration::from_secs(2));
    r.until(Duration::from_millis(500), |_| false);
    assert!(
        done,
        "peaks: got {:?}\nwant {want:?}\n{}",
        peaks(&r.values),
        s.logs()
    );
    let mut seen = BTreeSet::new();
    let dups: Vec<String> = ids(&r.values)
        .into_iter()
        .filter(|i| !seen.insert(i.clone()))
        .collect();
    assert!(dups.is_empty(), "sent twice: {dups:?}");
    // Each member owns some pairs: both answer /pairs, together they hold every pair.
    let pairs_of = |port: u16| -> BTreeSet<String> {
        let (st, body) = http_get(port, "/pairs?limit=1000").expect("/pairs");
        assert_eq!(st, 200, "{body}");
        pair_keys(&serde_json::from_str(&body).unwrap())
    };
    let (h1, h2) = (pairs_of(p1), pairs_of(p2));
    assert!(
        h1.is_disjoint(&h2),
        "a pair direction held by both members: {:?}",
        h1.intersection(&h2).collect::<Vec<_>>()
    );
    // (Pairs of 2018 have decayed out of the index by 2021: compare the final view.)
    let held = pair_keys(&offline);
    assert!(!held.is_empty());
    for k in &held {
        assert!(
            h1.contains(k) || h2.contains(k),
            "{k} held by neither member: {h1:?} {h2:?}"
        );
    }
}

/// Per-post alerts of the three replays are exactly what samples/README.md documents:
/// every crisis post fires its categories and no other crisis category, no other post
/// fires one, and `de_escalation` fires exactly on the posts of its tables.
#[test]
fn replays_alert_as_the_samples_readme_documents() {
    let readme = std::fs::read_to_string(root().join("samples/README.md")).unwrap();
    let crisis_cats = ["sanctions", "persona_non_grata", "incendiary_imagery"];
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut deesc: BTreeSet<String> = BTreeSet::new();
    let mut section = String::new();
    for line in readme.lines() {
        if line.starts_with("### ") {
            section = line.to_string();
            continue;
        }
        let Some(id) = line
            .strip_prefix("| `")
            .and_then(|r| r.split_once('`'))
            .map(|(id, _)| id.to_string())
        else {
            continue;
        };
        if section.contains("should alert") {
            let cats = line.split("**").nth(1).expect("a **category** cell");
            want.insert(id, cats.split(',').map(|c| c.trim().to_string()).collect());
        } else if section.contains("Expected `de_escalation`") {
            deesc.insert(id);
        }
    }
    assert!(
        want.len() >= 30 && deesc.len() >= 3,
        "README tables not found: {want:?} {deesc:?}"
    );
    let mut problems = Vec::new();
    for s in [
        "canada_saudi_2018.jsonl",
        "skripal_2018.jsonl",
        "aukus_2021.jsonl",
    ] {
        let out = bin()
            .args(["scan", "--rules"])
            .arg(root().join("rules"))
            .arg(sample(s))
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for a in common::json_lines(&out.stdout) {
            got.entry(a["post"]["id"].as_str().unwrap().to_string())
                .or_default()
                .insert(a["rule"]["category"].as_str().unwrap().to_string());
        }
        let text = std::fs::read_to_string(sample(s)).unwrap();
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(l).unwrap();
            let id = v["id"].as_str().unwrap().to_string();
            let cats = got.remove(&id).unwrap_or_default();
            let crisis: BTreeSet<String> = cats
                .iter()
                .filter(|c| crisis_cats.contains(&c.as_str()))
                .cloned()
                .collect();
            let expected = want.get(&id).cloned().unwrap_or_default();
            if crisis != expected {
                problems.push(format!("{id}: got {crisis:?}, documented {expected:?}"));
            }
            if cats.contains("de_escalation") != deesc.contains(&id) {
                problems.push(format!(
                    "{id}: de_escalation {}",
                    cats.contains("de_escalation")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The timeline of the given pair directions only (other pairs may come and go as rules
/// improve; these are the documented crises).
fn pair_timeline(v: &Value, pairs: &[&str]) -> Vec<String> {
    timeline(v)
        .into_iter()
        .filter(|l| pairs.iter().any(|p| l.split(' ').nth(2) == Some(*p)))
        .collect()
}

/// Level timelines of the documented crises (see samples/README.md, "Escalation").
const CANADA_SAUDI: &[&str] = &[
    "2018-08-05 escalation SA>CA none→watch",
    "2018-08-05 escalation SA>CA watch→warning",
    "2018-08-05 escalation SA>CA warning→crisis",
];

const SKRIPAL: &[&str] = &[
    "2018-03-14 escalation GB>RU none→warning",
    "2018-03-14 escalation GB>RU warning→crisis",
    "2018-03-17 tit_for_tat RU>GB none→none",
    "2018-03-17 escalation RU>GB none→watch",
    "2018-03-17 escalation RU>GB watch→warning",
    "2018-03-20 de_escalation GB>RU crisis→warning",
    "2018-03-26 escalation US>RU none→watch",
    "2018-03-26 de_escalation RU>GB warning→watch",
    "2018-03-26 tit_for_tat GB>RU none→warning",
    "2018-03-29 tit_for_tat RU>US none→none",
    "2018-03-29 escalation RU>US none→watch",
    "2018-03-29 escalation RU>US watch→warning",
    "2018-03-30 escalation RU>GB watch→warning",
];

const AUKUS: &[&str] = &[
    "2021-09-17 escalation FR>AU none→watch",
    "2021-09-17 escalation FR>US none→watch",
    "2021-09-18 escalation FR>US watch→warning",
    "2021-09-18 escalation FR>AU watch→warning",
    "2021-09-22 de_escalation FR>US warning→none",
    "2021-09-29 de_escalation FR>AU warning→watch",
    "2021-10-06 de_escalation FR>AU watch→none",
];

/// The replays reach the levels documented in samples/README.md, in order.
#[test]
fn replays_reach_the_documented_levels_in_order() {
    let cases: [(&str, &[&str], &[&str]); 3] = [
        ("canada_saudi_2018.jsonl", &["SA>CA", "CA>SA"], CANADA_SAUDI),
        (
            "skripal_2018.jsonl",
            &["GB>RU", "RU>GB", "US>RU", "RU>US"],
            SKRIPAL,
        ),
        (
            "aukus_2021.jsonl",
            &["FR>US", "FR>AU", "US>FR", "AU>FR"],
            AUKUS,
        ),
    ];
    for (file, pairs, want) in cases {
        let v = replay(&[&sample(file)]);
        assert_eq!(
            pair_timeline(&v, pairs),
            want,
            "{file}: {:#?}",
            timeline(&v)
        );
    }
}

/// Targets come from names, demonyms, capitals and metonyms, several per post, each
/// with the span of its first mention in the published text.
#[test]
fn targets_are_resolved_with_evidence_spans() {
    let post = serde_json::json!({
        "id": "t1", "platform": "x", "created_at": "2018-03-20T10:00:00Z",
        "account": {"handle": "someone", "country": "GB"},
        "text": "The Kremlin expelled the ambassador sent by Ottawa; Canadian diplomats must leave.",
    });
    let out = common::run_with_stdin(
        bin()
            .args(["scan", "--rules"])
            .arg(root().join("rules"))
            .arg("-"),
        format!("{post}\n").as_bytes(),
    );
    assert!(out.status.success());
    let alerts = common::json_lines(&out.stdout);
    let a = alerts
        .first()
        .unwrap_or_else(|| panic!("no alert: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(a["targets"], serde_json::json!(["RU", "CA"]), "{a}");
    let text = post["text"].as_str().unwrap();
    let spans: Vec<(String, String)> = a["target_evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (s, t) = (
                e["start"].as_u64().unwrap() as usize,
                e["end"].as_u64().unwrap() as usize,
            );
            assert_eq!(&text[s..t], e["matched"].as_str().unwrap());
            (
                e["country"].as_str().unwrap().to_string(),
                e["matched"].as_str().unwrap().to_lowercase(),
            )
        })
        .collect();
    assert_eq!(
        spans,
        [
            ("RU".to_string(), "kremlin".to_string()),
            ("CA".to_string(), "ottawa".to_string())
        ]
    );
}

/// A running instance shows its pairs on GET /pairs, through `attache pairs --url`, and
/// as bounded gauges: the embedded default stream takes Saudi Arabia → Canada to crisis.
#[test]
fn running_instance_serves_pairs_and_gauges() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut p = Proc::spawn(
        "attache",
        bin()
            .args(["run", "--follow", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        &dir.path().join("run.log"),
    );
    assert!(wait_port(port), "{}", tail(&dir.path().join("run.log"), 20));
    let mut body = String::new();
    for _ in 0..200 {
        if let Some((200, b)) = http_get(port, "/pairs") {
            // The level names ("crisis") are in every response; wait for a pair at it.
            let at_crisis =
                serde_json::from_str::<Value>(&b).is_ok_and(|v| v["pairs"][0]["level"] == "crisis");
            body = b;
            if at_crisis {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("/pairs: {body}"));
    let top = &v["pairs"][0];
    assert_eq!(
        (top["actor"].as_str(), top["target"].as_str()),
        (Some("SA"), Some("CA")),
        "{v}"
    );
    assert_eq!(top["level"], "crisis");
    assert!(top["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["post_id"] == "cs-0114"));
    assert!(top["history"].as_array().unwrap().len() >= 3);
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("attache_escalation_level{actor=\"SA\",target=\"CA\"} 3"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("escalation"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("attache_escalation_index{"))
        .count();
    assert!(
        (1..=10).contains(&series),
        "top_pairs bounds the gauges: {series}"
    );
    let out = bin()
        .args(["pairs", "--url", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("SA→CA") && text.contains("crisis"),
        "{text}"
    );
    let _ = p.terminate(Duration::from_secs(10));
}
