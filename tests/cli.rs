//! The command line as a user meets it: every subcommand, including its error paths.

mod common;

use common::*;

const PNG_POST: &str = r#"{"id": "g1", "platform": "x", "account": {"handle": "KSAmofaEN", "country": "SA", "role": "foreign_ministry"}, "lang": "en", "text": "We consider the Canadian ambassador to the Kingdom persona non grata and order him to leave within the next 24 hours."}"#;

fn schema() -> jsonschema::Validator {
    let s: serde_json::Value =
        serde_json::from_str(include_str!("../schema/alert.v1.json")).expect("schema is JSON");
    jsonschema::validator_for(&s).expect("schema compiles")
}

#[test]
fn check_passes_on_shipped_rules() {
    let out = bin().arg("check").arg(rules_dir()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
}

#[test]
fn check_reports_file_line_column_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&rules_dir(), dir.path());
    std::fs::write(
        dir.path().join("broken.yaml"),
        "category: x\nrules:\n  - id: broken.one\n    title: t\n    severity: high\n    when: { list: no_such_list }\n",
    )
    .unwrap();
    let out = bin().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:6:19: undefined list `no_such_list`",
        dir.path().join("broken.yaml").display()
    );
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
}

#[test]
fn check_reports_yaml_syntax_errors_with_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "rules:\n  - id: [unclosed\n").unwrap();
    let out = bin().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:"), "{err}");
    let pos = err.split("bad.yaml:").nth(1).unwrap_or("");
    let mut it = pos.split(':');
    let line: u64 = it.next().unwrap_or("0").parse().unwrap_or(0);
    let col: u64 = it.next().unwrap_or("0").parse().unwrap_or(0);
    assert!(line >= 2 && col >= 1, "{err}");
}

#[test]
fn check_on_missing_dir_fails() {
    let out = bin()
        .args(["check", "/nonexistent/rules"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn test_passes_on_shipped_rules_and_fails_on_a_broken_example() {
    let out = bin().arg("test").arg(rules_dir()).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "category: c\nrules:\n  - id: r1\n    title: t\n    severity: low\n    when: { terms: [embargo] }\n    examples:\n      match: [\"an embargo\", \"a blockade\"]\n",
    )
    .unwrap();
    let out = bin().arg("test").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("r.yaml:8:") && err.contains("a blockade"),
        "{err}"
    );
}

#[test]
fn scan_emits_schema_valid_alerts_and_dead_letters_bad_lines() {
    let input = format!(
        "{PNG_POST}\n{{\"id\": \"bad1\", \"text\": \n{{\"id\": 5, \"text\": [\"x\"]}}\n\n{}\n",
        PNG_POST.replace("\"g1\"", "\"g2\"")
    );
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl.jsonl");
    let out = run_with_stdin(
        bin()
            .arg("scan")
            .arg("--rules")
            .arg(rules_dir())
            .arg("--dead-letter")
            .arg(&dl)
            .arg("-"),
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts = json_lines(&out.stdout);
    let v = schema();
    let mut ids = std::collections::BTreeSet::new();
    for a in &alerts {
        let errs: Vec<String> = v.iter_errors(a).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "alert violates the schema: {errs:?}\n{a}");
        ids.insert(a["post"]["id"].as_str().unwrap().to_string());
        assert_eq!(a["actor"], "SA");
        assert_eq!(a["targets"][0], "CA");
        // Evidence offsets point into the text as published.
        let text = a["post"]["text"].as_str().unwrap();
        for e in a["evidence"].as_array().unwrap() {
            let (s, t) = (
                e["start"].as_u64().unwrap() as usize,
                e["end"].as_u64().unwrap() as usize,
            );
            assert_eq!(&text[s..t], e["matched"].as_str().unwrap());
        }
    }
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["g1", "g2"]);
    let dead = json_lines(&std::fs::read(&dl).unwrap());
    let reasons: Vec<(&str, u64)> = dead
        .iter()
        .map(|d| (d["reason"].as_str().unwrap(), d["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(reasons, [("invalid_json", 2), ("wrong_type", 3)]);
}

#[test]
fn scan_is_deterministic_and_never_deduplicates() {
    let input = format!("{PNG_POST}\n{PNG_POST}\n");
    let run = || {
        run_with_stdin(
            bin().arg("scan").arg("--rules").arg(rules_dir()),
            input.as_bytes(),
        )
        .stdout
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b, "same input, same output");
    let alerts = json_lines(&a);
    assert!(
        alerts.len() >= 2 && alerts.len() % 2 == 0,
        "both copies alert: {}",
        alerts.len()
    );
    assert!(alerts.iter().all(|a| a["schema"] == "attache.alert.v1"));
}

#[test]
fn scan_dead_letters_go_to_stderr_without_a_file() {
    let out = run_with_stdin(
        bin().arg("scan").arg("--rules").arg(rules_dir()),
        b"not json\n",
    );
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"reason\":\"invalid_json\""));
}

#[test]
fn scan_explain_adds_rule_location() {
    let out = run_with_stdin(
        bin()
            .arg("scan")
            .arg("--explain")
            .arg("--rules")
            .arg(rules_dir()),
        PNG_POST.as_bytes(),
    );
    let alerts = json_lines(&out.stdout);
    assert!(!alerts.is_empty());
    assert!(alerts[0]["explain"]["rule_file"]
        .as_str()
        .unwrap()
        .ends_with(".yaml"));
}

#[test]
fn scan_with_broken_rules_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.yaml"), "rules: 3\n").unwrap();
    let out = run_with_stdin(
        bin().arg("scan").arg("--rules").arg(dir.path()),
        PNG_POST.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn scan_usage_error_exits_2() {
    let out = bin().args(["scan", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn explain_shows_rule_and_evidence() {
    let out = bin()
        .arg("explain")
        .arg("--rules")
        .arg(rules_dir())
        .args([
            "--text",
            "Reports that our ambassador was expelled are false.",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("png.expel_envoy") && s.contains("suppressed by"),
        "{s}"
    );
    let out = bin()
        .arg("explain")
        .arg("--rules")
        .arg(rules_dir())
        .arg("--json")
        .args(["--text", "We expel the ambassador of Canada."])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["fired"] == true));
}

#[test]
fn eval_prints_scores_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("l.jsonl");
    std::fs::write(
        &f,
        format!(
            "{}\n{}\n",
            PNG_POST.replace("\"text\"", "\"labels\": [\"persona_non_grata\"], \"text\""),
            r#"{"id": "n1", "text": "Happy national day to our friends!", "labels": ["sanctions"]}"#
        ),
    )
    .unwrap();
    let out = bin()
        .arg("eval")
        .arg("--rules")
        .arg(rules_dir())
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("persona_non_grata") && s.contains("1.000"),
        "{s}"
    );
    assert!(s.contains("FN sanctions n1"), "{s}");
}

/// The shipped rules on the second labelled corpus (`corpus/second/`, 5,504 posts in thirteen
/// languages, eighteen rounds; see its README): a regression guard on precision and recall
/// per label.
#[test]
fn shipped_rules_hold_their_scores_on_the_second_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/second");
    // Round 1 was tuned on; rounds 2 to 10 were held out until after the earlier
    // rounds' fixes (looser); rounds 12 and 13 were scored held out, then fixed in one
    // step (the seventh session); rounds 14 to 17 likewise (the eighth session); round 18
    // is still held out.
    let files = [
        ("en.jsonl", 0.95, 0.9),
        ("euro.jsonl", 0.95, 0.9),
        ("east.jsonl", 0.95, 0.9),
        ("round2-en.jsonl", 0.9, 0.85),
        ("round2-euro.jsonl", 0.9, 0.85),
        ("round2-east.jsonl", 0.9, 0.85),
        ("round3-en.jsonl", 0.9, 0.85),
        ("round3-euro.jsonl", 0.9, 0.85),
        ("round3-east.jsonl", 0.9, 0.85),
        // round 4 asked its writers for the least obvious phrasings; its euro imagery
        // posts carry threats no word list reaches (a clock beside a portrait), and the
        // stock phrases that caught some of them ("al alcance", "à portée") were too
        // broad for unseen posts
        ("round4-en.jsonl", 0.9, 0.8),
        ("round4-euro.jsonl", 0.9, 0.45),
        ("round4-east.jsonl", 0.9, 0.8),
        ("round5-en.jsonl", 0.9, 0.85),
        ("round5-euro.jsonl", 0.9, 0.85),
        ("round5-east.jsonl", 0.9, 0.85),
        ("round6-en.jsonl", 0.9, 0.85),
        ("round6-euro.jsonl", 0.9, 0.85),
        ("round6-east.jsonl", 0.9, 0.85),
        ("round7-en.jsonl", 0.9, 0.85),
        ("round7-euro.jsonl", 0.9, 0.85),
        ("round7-east.jsonl", 0.9, 0.85),
        // round 8: imagery whose threat is implied by the picture alone ("Access to the
        // Red Sea is an existential question", a map with a marked district) stays missed;
        // en sanctions keeps two complaints about others' sanctions policy as false positives
        ("round8-en.jsonl", 0.85, 0.8),
        ("round8-euro.jsonl", 0.9, 0.7),
        ("round8-east.jsonl", 0.9, 0.7),
        ("round9-en.jsonl", 0.9, 0.85),
        ("round9-euro.jsonl", 0.9, 0.85),
        ("round9-east.jsonl", 0.9, 0.85),
        // round 10: it, uk, ja, 40 posts each (5 to 7 per label: one post is 0.14)
        ("round10-it.jsonl", 0.8, 0.7),
        ("round10-uk.jsonl", 0.8, 0.7),
        ("round10-ja.jsonl", 0.8, 0.7),
        // round 11: allusive imagery ("Our skies, our land, our Essequibo") stays missed
        ("round11-en.jsonl", 0.85, 0.6),
        ("round11-euro.jsonl", 0.85, 0.7),
        ("round11-east.jsonl", 0.85, 0.85),
        // round 12: allusive imagery ("Landlocked no more", "the countdown has begun")
        // stays missed (en imagery recall 0.50)
        ("round12-en.jsonl", 0.85, 0.5),
        ("round12-euro.jsonl", 0.85, 0.7),
        ("round12-east.jsonl", 0.85, 0.6),
        // round 13 leaned toward measures named by their effect, polite summonses and
        // threats in a short caption
        ("round13-en.jsonl", 0.9, 0.8),
        ("round13-euro.jsonl", 0.9, 0.8),
        ("round13-east.jsonl", 0.9, 0.9),
        // rounds 14 and 15 were scored held out (imagery recall 0.47–0.67), then fixed
        // (the eighth session)
        ("round14-en.jsonl", 0.9, 0.9),
        ("round14-euro.jsonl", 0.9, 0.9),
        ("round14-east.jsonl", 0.9, 0.9),
        ("round15-en.jsonl", 0.9, 0.9),
        ("round15-euro.jsonl", 0.9, 0.9),
        ("round15-east.jsonl", 0.9, 0.9),
        // round 16 was scored held out (east imagery recall 0.58), then fixed
        ("round16-en.jsonl", 0.9, 0.9),
        ("round16-euro.jsonl", 0.9, 0.9),
        ("round16-east.jsonl", 0.9, 0.9),
        // round 17 was scored held out (east imagery recall 0.64), then fixed
        ("round17-en.jsonl", 0.9, 0.85),
        ("round17-euro.jsonl", 0.9, 0.85),
        ("round17-east.jsonl", 0.9, 0.9),
        // round 18 was scored held out (euro persona_non_grata recall 0.75), then fixed
        // (the ninth session)
        ("round18-en.jsonl", 0.9, 0.9),
        ("round18-euro.jsonl", 0.9, 0.9),
        ("round18-east.jsonl", 0.9, 0.9),
        // round 19 was scored held out (euro persona_non_grata recall 0.71), then fixed
        ("round19-en.jsonl", 0.9, 0.9),
        ("round19-euro.jsonl", 0.9, 0.9),
        ("round19-east.jsonl", 0.9, 0.9),
        // round 20 was scored held out (en persona_non_grata recall 0.75, east imagery
        // 0.69), then fixed
        ("round20-en.jsonl", 0.9, 0.9),
        ("round20-euro.jsonl", 0.9, 0.9),
        ("round20-east.jsonl", 0.9, 0.9),
        // round 21 was scored held out (euro sanctions recall 0.64), then fixed; two euro
        // imagery allusions stay missed
        ("round21-en.jsonl", 0.9, 0.9),
        ("round21-euro.jsonl", 0.9, 0.8),
        ("round21-east.jsonl", 0.9, 0.9),
        // round 22 was scored held out (en imagery recall 0.64), then fixed
        ("round22-en.jsonl", 0.9, 0.9),
        ("round22-euro.jsonl", 0.9, 0.9),
        ("round22-east.jsonl", 0.9, 0.9),
        // round 23 was scored held out (en imagery recall 0.71), then fixed; two English
        // imagery allusions stay missed
        ("round23-en.jsonl", 0.9, 0.85),
        ("round23-euro.jsonl", 0.9, 0.9),
        ("round23-east.jsonl", 0.9, 0.9),
        // round 24 was scored held out (east imagery recall 0.64), then fixed
        ("round24-en.jsonl", 0.9, 0.9),
        ("round24-euro.jsonl", 0.9, 0.9),
        ("round24-east.jsonl", 0.9, 0.9),
        // round 25 is held out (never used for fixes): its floors are the held-out
        // figures (euro imagery recall 0.31 when scored)
        ("round25-en.jsonl", 0.9, 0.75),
        ("round25-euro.jsonl", 0.9, 0.3),
        ("round25-east.jsonl", 0.85, 0.8),
        // round 26 was scored held out (euro and east imagery recall 0.69), then fixed
        ("round26-en.jsonl", 0.9, 0.9),
        ("round26-euro.jsonl", 0.9, 0.9),
        ("round26-east.jsonl", 0.9, 0.9),
        // round 27 (east only) is held out (scored with the rules of fb0843e, not fixed)
        ("round27-east.jsonl", 0.9, 0.85),
    ];
    for (file, min_p, min_r) in files {
        let out = bin()
            .args(["eval", "--quiet", "--rules"])
            .arg(rules_dir())
            .arg(dir.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8_lossy(&out.stdout);
        for label in ["sanctions", "persona_non_grata", "incendiary_imagery"] {
            let row: Vec<&str> = s
                .lines()
                .find(|l| l.split_whitespace().next() == Some(label))
                .unwrap_or_else(|| panic!("{file}: no row for {label}: {s}"))
                .split_whitespace()
                .collect();
            let (p, r): (f64, f64) = (row[4].parse().unwrap(), row[5].parse().unwrap());
            assert!(p >= min_p && r >= min_r, "{file} {label}: P={p} R={r}\n{s}");
        }
    }
}

#[test]
fn run_embedded_default_prints_alerts_and_exits_0() {
    let port = free_port();
    let out = bin()
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (alerts, escalations): (Vec<_>, Vec<_>) = json_lines(&out.stdout)
        .into_iter()
        .partition(|a| a["schema"] == "attache.alert.v1");
    let cats: std::collections::BTreeSet<&str> = alerts
        .iter()
        .map(|a| a["rule"]["category"].as_str().unwrap())
        .collect();
    assert!(
        cats.contains("persona_non_grata") && cats.contains("incendiary_imagery"),
        "{cats:?}"
    );
    let v = schema();
    for a in &alerts {
        assert!(v.is_valid(a), "{a}");
    }
    // As the steps pile up, the Saudi Arabia → Canada index reaches crisis.
    let sa_ca: Vec<&str> = escalations
        .iter()
        .filter(|e| e["kind"] == "escalation" && e["actor"] == "SA" && e["target"] == "CA")
        .map(|e| e["level"].as_str().unwrap())
        .collect();
    assert_eq!(sa_ca.last(), Some(&"crisis"), "{escalations:#?}");
    assert!(escalations
        .iter()
        .all(|e| e["schema"] == "attache.escalation.v1"));
}

#[test]
fn run_outside_the_repo_uses_embedded_rules() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = bin()
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!json_lines(&out.stdout).is_empty());
}

#[test]
fn run_with_bad_config_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c.toml");
    std::fs::write(&c, "[http]\nlisen = \"x\"\n").unwrap();
    let out = bin().arg("run").arg("--config").arg(&c).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
}

#[test]
fn run_follow_serves_ops_endpoints_until_sigterm() {
    let port = free_port();
    let mut child = bin()
        .args(["run", "--follow", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_port(port), "HTTP server did not start");
    // The finite stream ends; --follow keeps serving and stays ready.
    let mut finished = false;
    for _ in 0..100 {
        let (_, m) = http_get(port, "/metrics").unwrap();
        if m.contains("attache_input_finished 1") {
            finished = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(finished, "input never finished");
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);
    let (code, rules) = http_get(port, "/rules").unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&rules).unwrap();
    assert!(!v["rules"].as_array().unwrap().is_empty());
    assert!(v["version"].as_str().unwrap().len() >= 8);
    let (code, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("attache_posts_consumed_total"));
    assert!(metrics.contains("attache_alerts_total{category=\"persona_non_grata\""));
    let (code, ex) = http_request(
        port,
        "POST",
        "/explain",
        r#"{"id":"1","text":"We expel the ambassador."}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{ex}");
    assert!(ex.contains("png.expel_envoy"));
    // SIGTERM: clean exit 0.
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn routes_test_shows_first_match_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c.toml");
    std::fs::write(
        &c,
        "[output]\nstdout = false\n[[sinks]]\nname = \"a\"\nkind = \"stdout\"\n[[sinks]]\nname = \"b\"\nkind = \"stdout\"\n\
         [[routes]]\ncategories = [\"sanctions\"]\nsinks = [\"a\"]\ncontinue = true\n[[routes]]\nmin_severity = \"high\"\nsinks = [\"b\"]\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = bin()
            .args(["routes", "test", "-c"])
            .arg(&c)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(run(&["--category", "sanctions", "--severity", "high"]).contains("sinks: a, b"));
    assert!(run(&["--category", "persona_non_grata", "--severity", "high"]).contains("sinks: b"));
    assert!(
        run(&["--category", "persona_non_grata", "--severity", "low"]).contains("sinks: (none)")
    );
}

#[test]
fn dlq_replay_keeps_what_fails_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let c = dir.path().join("c.toml");
    std::fs::write(
        &c,
        format!("[[sinks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/h\"\nmax_attempts = 1\nbreaker_failures = 0\n"),
    )
    .unwrap();
    // A dead letter as the pipeline writes it.
    let alert: serde_json::Value = {
        let out = run_with_stdin(
            bin().arg("scan").arg("--rules").arg(rules_dir()),
            PNG_POST.as_bytes(),
        );
        json_lines(&out.stdout).remove(0)
    };
    let dl = dir.path().join("dl.jsonl");
    let rec = serde_json::json!({"kind": "delivery", "sink": "hook", "reason": "test", "attempts": [], "alert": alert, "at": "2026-01-01T00:00:00Z"});
    std::fs::write(&dl, format!("{rec}\n")).unwrap();
    let again = dir.path().join("again.jsonl");
    let out = bin()
        .args(["dlq", "replay", "-c"])
        .arg(&c)
        .arg("--out")
        .arg(&again)
        .arg(&dl)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = json_lines(&std::fs::read(&again).unwrap());
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["alert"]["id"], alert["id"]);
    assert_eq!(
        std::fs::read(&dl).unwrap(),
        format!("{rec}\n").into_bytes(),
        "input untouched"
    );
}
