//! deploy/ checked by the real tools that understand each artefact (no container
//! engine or cluster runs here, so these stand in for `docker build` and `kubectl`):
//!
//! | artefact                                  | tool                                         |
//! |-------------------------------------------|----------------------------------------------|
//! | deploy/Dockerfile                         | hadolint                                     |
//! | deploy/kubernetes/ core manifests         | kubernetes-validate --strict                 |
//! | deploy/kubernetes/servicemonitor.yaml     | vendored CRD schema + the `jsonschema` crate |
//! | deploy/kubernetes/configmap-rules.yaml    | `attache check` and `attache test`           |
//! | deploy/docker/attache.toml (= ConfigMap)  | `attache config check`                       |
//! | deploy/prometheus/                        | promtool check rules / test rules / config   |
//! | deploy/systemd/attache.service            | systemd-analyze verify / security            |
//! | deploy/grafana/attache-dashboard.json     | promtool check rules (one record per expr)   |
//!
//! A missing tool fails its test with a message naming `scripts/deploy-tools`, which
//! installs them all; tools are looked up in `.tools/venv/bin` (where that script puts
//! the PyPI ones), then on PATH.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Every metric attaché exports. Dashboard and alert expressions may name only these
/// (plus `up`), so a renamed metric fails here instead of on an empty panel.
const METRICS: &[&str] = &[
    "attache_build_info",
    "attache_posts_consumed_total",
    "attache_decode_failures_total",
    "attache_rule_matches_total",
    "attache_alerts_total",
    "attache_processing_seconds",
    "attache_end_to_end_latency_seconds",
    "attache_rules_loaded",
    "attache_rule_reloads_total",
    "attache_rules_last_reload_success_timestamp_seconds",
    "attache_deliveries_total",
    "attache_delivery_seconds",
    "attache_delivery_retries_total",
    "attache_dead_letters_total",
    "attache_suppressed_duplicates_total",
    "attache_sink_queue_depth",
    "attache_in_flight_messages",
    "attache_input_finished",
    "attache_kafka_consumer_lag_messages",
    "attache_kafka_commits_total",
    "attache_kafka_rebalances_total",
    "attache_kafka_messages_consumed_total",
    "attache_escalations_total",
    "attache_escalation_index",
    "attache_escalation_level",
    "attache_escalation_pairs",
];

/// The histograms among [`METRICS`]: queried through `_bucket`, `_sum` or `_count`.
const HISTOGRAMS: &[&str] = &[
    "attache_processing_seconds",
    "attache_end_to_end_latency_seconds",
    "attache_delivery_seconds",
];

/// The manifests kubernetes-validate checks (the ServiceMonitor has its own schema).
const CORE_MANIFESTS: &[&str] = &[
    "configmap-config.yaml",
    "configmap-rules.yaml",
    "deployment.yaml",
    "service.yaml",
    "pdb.yaml",
    "secret.example.yaml",
];

// ---------------------------------------------------------------------------------
// Helpers

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    root().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str::<Value>(&read(path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn kube(name: &str) -> Value {
    yaml(&deploy("kubernetes").join(name))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A validation tool from `.tools/venv/bin` or PATH; a missing one fails the test.
fn tool(name: &str) -> PathBuf {
    let venv = root().join(".tools/venv/bin").join(name);
    if is_executable(&venv) {
        return venv;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed (looked in .tools/venv/bin and PATH): \
                 run `scripts/deploy-tools` to install the deploy/ validation tools"
            )
        })
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    out
}

fn assert_fails(cmd: &mut Command, why: &str) {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} should fail ({why}):\n{}",
        text(&out)
    );
}

/// `obj[a][b]…` or Null.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every `key: value` in `sub` is also in `sup` (label selector semantics).
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Names of attaché metrics in a PromQL expression, histogram suffixes removed.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"attache_[a-z_]+").unwrap();
    re.find_iter(expr)
        .map(|m| {
            let n = m.as_str();
            HISTOGRAMS
                .iter()
                .find(|h| {
                    [*h, "_bucket"].concat() == n
                        || [*h, "_sum"].concat() == n
                        || [*h, "_count"].concat() == n
                })
                .map(|h| h.to_string())
                .unwrap_or_else(|| n.to_string())
        })
        .collect()
}

fn assert_known_metrics(expr: &str, context: &str) {
    for name in metric_names(expr) {
        assert!(
            METRICS.contains(&name.as_str()),
            "{context}: `{name}` is not a metric attaché exports (expr: {expr})"
        );
    }
}

/// `promtool check rules` over one recording rule per expression: promtool has no
/// command that checks a bare expression, but it parses every rule's `expr`.
fn promtool_check_exprs(exprs: &[String]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("check:expr_{i}"), "expr": e}))
        .collect();
    let file = dir.path().join("exprs.rules.json");
    // JSON is YAML, so promtool reads it; no escaping questions for the expressions.
    let doc = serde_json::json!({"groups": [{"name": "exprs", "rules": rules}]});
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    run(Command::new(tool("promtool"))
        .arg("check")
        .arg("rules")
        .arg(&file))
}

// ---------------------------------------------------------------------------------
// Container image

#[test]
fn dockerfile_passes_hadolint() {
    let hadolint = tool("hadolint");
    // No user or working-directory hadolint config may loosen the check.
    let home = tempfile::tempdir().unwrap();
    let lint = |file: &Path| {
        let mut cmd = Command::new(&hadolint);
        cmd.args(["--no-color", "--failure-threshold", "style"])
            .arg(file)
            .current_dir(home.path())
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path());
        cmd
    };
    let out = assert_ok(&mut lint(&deploy("Dockerfile")));
    assert!(out.stdout.is_empty(), "hadolint findings:\n{}", text(&out));

    // Negative control: hadolint really lints (an untagged image, apt without -y).
    let bad = home.path().join("Dockerfile.bad");
    std::fs::write(&bad, "FROM debian\nRUN apt-get install curl\n").unwrap();
    assert_fails(&mut lint(&bad), "DL3006 and DL3014 apply");

    // What the manifests and docs rely on.
    let df = read(&deploy("Dockerfile"));
    for want in [
        "FROM rust:1-bookworm AS build",
        "FROM debian:bookworm-slim",
        "cargo build --release --locked",
        "USER 10001:10001",
        "EXPOSE 9464",
        "COPY rules/ /etc/attache/rules/",
        "COPY deploy/docker/attache.toml /etc/attache/attache.toml",
    ] {
        assert!(df.contains(want), "deploy/Dockerfile lacks `{want}`");
    }
}

#[test]
fn build_context_keeps_what_the_build_needs() {
    // deploy/Dockerfile.dockerignore filters the repository root (the context). A
    // pattern that drops a path the build reads breaks `docker build`, which cannot
    // run here; so check the patterns against the paths the build reads.
    let ignore = read(&deploy("Dockerfile.dockerignore"));
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let needed = [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src",
        "benches",
        "rules",
        "samples",
    ];
    for path in needed {
        assert!(
            root().join(path).exists(),
            "the build needs {path}, which is missing"
        );
        assert!(
            !patterns
                .iter()
                .any(|p| p.trim_end_matches('/') == path || *p == "*" || *p == "**"),
            "Dockerfile.dockerignore excludes {path}, which the build needs"
        );
    }
    // The excluded deploy/ must let the container config back in.
    assert!(patterns.contains(&"deploy") && patterns.contains(&"!deploy/docker/attache.toml"));
    for p in ["target", ".git", ".tools"] {
        assert!(
            patterns.contains(&p),
            "the build context should leave out {p}"
        );
    }
}

#[test]
fn container_config_passes_attache_config_check() {
    let file = read(&deploy("docker/attache.toml"));
    let cm = kube("configmap-config.yaml");
    let in_cm = cm["data"]["attache.toml"]
        .as_str()
        .expect("attache-config has attache.toml");
    assert_eq!(
        in_cm, file,
        "configmap-config.yaml's attache.toml must equal deploy/docker/attache.toml byte for byte"
    );
    // attaché's own validation: unknown keys, input kind, listen address, token rule.
    let out = assert_ok(
        Command::new(env!("CARGO_BIN_EXE_attache"))
            .args(["config", "check"])
            .arg(deploy("docker/attache.toml"))
            .env_clear()
            .env("ATTACHE_HTTP_TOKEN", "test-token"),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok:"),
        "{}",
        text(&out)
    );
    let t: toml::Table = toml::from_str(&file).expect("attache.toml is TOML");
    let get = |section: &str, key: &str| t[section][key].clone();
    assert_eq!(get("input", "kind").as_str(), Some("kafka"));
    assert_eq!(get("kafka", "group_id").as_str(), Some("attache"));
    assert_eq!(get("rules", "dir").as_str(), Some("/etc/attache/rules"));
    assert_eq!(get("http", "listen").as_str(), Some("0.0.0.0:9464"));
    // Beyond loopback with POST enabled, attaché requires a token (config validation).
    assert_eq!(
        get("http", "bearer_token_env").as_str(),
        Some("ATTACHE_HTTP_TOKEN")
    );
}

// ---------------------------------------------------------------------------------
// Kubernetes

#[test]
fn core_manifests_pass_kubernetes_validate() {
    let kv = tool("kubernetes-validate");
    let dir = deploy("kubernetes");
    let files: Vec<PathBuf> = CORE_MANIFESTS.iter().map(|f| dir.join(f)).collect();
    // --strict rejects fields the schema does not define (a misspelt key).
    let out = assert_ok(Command::new(&kv).arg("--strict").args(&files));
    // A kind or apiVersion without a schema is only a warning, with exit 0.
    let all = text(&out);
    assert!(!all.contains("WARN") && !all.contains("ERROR"), "{all}");
    for f in CORE_MANIFESTS {
        assert!(
            all.lines().any(|l| l.contains(f) && l.contains("passed")),
            "no `passed` line for {f}:\n{all}"
        );
    }

    // Negative control: a misspelt field fails --strict.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    let dep = read(&dir.join("deployment.yaml")).replacen("  replicas: 2", "  replica: 2", 1);
    std::fs::write(&bad, dep).unwrap();
    assert_fails(
        Command::new(&kv).arg("--strict").arg(&bad),
        "`replica` is not a field",
    );
}

#[test]
fn servicemonitor_matches_vendored_crd_schema() {
    let schema: Value =
        serde_json::from_str(&read(&deploy("kubernetes/schemas/servicemonitor.json")))
            .expect("servicemonitor.json is JSON");
    let validator =
        jsonschema::validator_for(&schema).expect("servicemonitor.json is a JSON Schema");
    let sm = kube("servicemonitor.yaml");
    let errors: Vec<String> = validator
        .iter_errors(&sm)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "servicemonitor.yaml:\n{}",
        errors.join("\n")
    );

    // The operator rejects a scrape timeout longer than the interval.
    let secs = |d: &Value| -> u64 {
        let s = d.as_str().expect("a duration");
        let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: u64 = n.parse().expect("a number");
        n * match unit {
            "s" => 1,
            "m" => 60,
            _ => panic!("use s or m in {s}"),
        }
    };
    for ep in sm["spec"]["endpoints"].as_array().expect("endpoints") {
        assert!(
            secs(&ep["scrapeTimeout"]) <= secs(&ep["interval"]),
            "scrapeTimeout > interval"
        );
    }

    // Negative controls: the schema catches what the operator would reject or drop.
    for (what, mutate) in [
        (
            "a malformed interval",
            &(|v: &mut Value| v["spec"]["endpoints"][0]["interval"] = "30 seconds".into())
                as &dyn Fn(&mut Value),
        ),
        ("a misspelt field", &|v: &mut Value| {
            v["spec"]["endpoints"][0]["paht"] = "/metrics".into()
        }),
        ("no selector", &|v: &mut Value| {
            v["spec"].as_object_mut().unwrap().remove("selector");
        }),
        ("a numeric port name", &|v: &mut Value| {
            v["spec"]["endpoints"][0]["port"] = 9464.into()
        }),
    ] {
        let mut bad = sm.clone();
        mutate(&mut bad);
        assert!(!validator.is_valid(&bad), "the schema accepts {what}");
    }
}

#[test]
fn kubernetes_manifests_fit_together() {
    let dep = kube("deployment.yaml");
    let svc = kube("service.yaml");
    let pdb = kube("pdb.yaml");
    let sm = kube("servicemonitor.yaml");
    let secret = kube("secret.example.yaml");
    let pod = &dep["spec"]["template"];
    let pod_labels = str_map(&pod["metadata"]["labels"]);
    let c = &pod["spec"]["containers"][0];

    // Selectors: Deployment, Service and PDB select the pods; the ServiceMonitor the Service.
    assert!(selects(
        &str_map(&dep["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    assert!(selects(&str_map(&svc["spec"]["selector"]), &pod_labels));
    assert!(selects(
        &str_map(&pdb["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    assert!(selects(
        &str_map(&sm["spec"]["selector"]["matchLabels"]),
        &str_map(&svc["metadata"]["labels"])
    ));

    // Ports: the named container port, the Service port, the ServiceMonitor endpoint.
    assert_eq!(c["ports"][0]["name"], "http-metrics");
    assert_eq!(c["ports"][0]["containerPort"], 9464);
    assert_eq!(svc["spec"]["ports"][0]["name"], "http-metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9464);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http-metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    // The job label the alerts and dashboard select: the Service label named by jobLabel.
    let job_label = sm["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(
        str_map(&svc["metadata"]["labels"])
            .get(job_label)
            .map(String::as_str),
        Some("attache")
    );

    // Probes.
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "http-metrics", "{probe}");
    }

    // Replicas, disruption budget, shutdown.
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap()
            > 30
    );

    // Security.
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 10001);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object());
    // Service links would put ATTACHE_SERVICE_HOST etc. among attaché's own ATTACHE_* overrides.
    assert_eq!(pod["spec"]["enableServiceLinks"], false);

    // Secrets: both variables, from keys the example Secret defines.
    let keys: BTreeSet<&str> = secret["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), &e["valueFrom"]["secretKeyRef"]))
        .collect();
    for var in ["ATTACHE_WEBHOOK_SECRET", "ATTACHE_HTTP_TOKEN"] {
        let r = env.get(var).unwrap_or_else(|| panic!("{var} is not set"));
        assert_eq!(r["name"], secret["metadata"]["name"], "{var}");
        assert!(
            keys.contains(r["key"].as_str().unwrap()),
            "{var}: no such key in the Secret"
        );
    }

    // Config and rules: ConfigMaps mounted as directories (no subPath, so updates reach
    // the pod), and the --config argument inside the config mount.
    let cms: BTreeMap<&str, &str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v["configMap"]["name"].as_str()?)))
        .collect();
    let mounts: BTreeMap<&str, &Value> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m))
        .collect();
    let mount_of = |cm: &str| -> String {
        let (vol, _) = cms
            .iter()
            .find(|(_, n)| **n == cm)
            .unwrap_or_else(|| panic!("no volume for {cm}"));
        let m = mounts[vol];
        assert!(m.get("subPath").is_none(), "{cm} is mounted with subPath");
        assert_eq!(m["readOnly"], true, "{cm}");
        m["mountPath"].as_str().unwrap().to_string()
    };
    let config_dir = mount_of(
        kube("configmap-config.yaml")["metadata"]["name"]
            .as_str()
            .unwrap(),
    );
    let rules_dir = mount_of(
        kube("configmap-rules.yaml")["metadata"]["name"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        rules_dir, "/etc/attache/rules",
        "the rules dir in attache.toml"
    );
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "--config", format!("{config_dir}/attache.toml")])
    );

    // Namespace-agnostic, and the kustomization lists exactly the manifests to apply.
    let k = kube("kustomization.yaml");
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut on_disk = BTreeSet::new();
    for e in std::fs::read_dir(deploy("kubernetes")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            let m = kube(&name);
            assert!(
                at(&m, &["metadata", "namespace"]).is_null(),
                "{name} sets a namespace"
            );
            if name != "secret.example.yaml" {
                on_disk.insert(name);
            }
        }
    }
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml resources vs deploy/kubernetes/*.yaml"
    );
    assert!(
        k.get("namespace").is_none(),
        "kustomization.yaml sets a namespace"
    );
}

#[test]
fn rules_configmap_passes_attache_check_and_test() {
    let cm = kube("configmap-rules.yaml");
    let data = cm["data"].as_object().expect("attache-rules has data");
    assert!(!data.is_empty());
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in data {
        assert!(name.ends_with(".yaml") || name.ends_with(".yml"), "{name}");
        std::fs::write(dir.path().join(name), body.as_str().unwrap()).unwrap();
    }
    let bin = env!("CARGO_BIN_EXE_attache");
    assert_ok(Command::new(bin).arg("check").arg(dir.path()));
    assert_ok(Command::new(bin).arg("test").arg(dir.path()));
}

// ---------------------------------------------------------------------------------
// Prometheus

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let promtool = tool("promtool");
    let dir = deploy("prometheus");
    assert_ok(
        Command::new(&promtool)
            .args(["check", "rules", "attache-alerts.yml"])
            .current_dir(&dir),
    );
    let out = assert_ok(
        Command::new(&promtool)
            .args(["test", "rules", "attache-alerts.test.yml"])
            .current_dir(&dir),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SUCCESS"),
        "{}",
        text(&out)
    );

    // Every alert has a test in which it fires; each expression names real metrics.
    let rules = yaml(&dir.join("attache-alerts.yml"));
    let tests = yaml(&dir.join("attache-alerts.test.yml"));
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().unwrap() {
        for a in t["alert_rule_test"].as_array().unwrap() {
            let name = a["alertname"].as_str().unwrap().to_string();
            if a["exp_alerts"].as_array().is_some_and(|v| !v.is_empty()) {
                fired.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    let mut alerts = BTreeSet::new();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"]
                .as_str()
                .expect("only alerting rules")
                .to_string();
            let expr = r["expr"].as_str().unwrap();
            assert_known_metrics(expr, &name);
            assert!(
                expr.contains(r#"job="attache""#),
                "{name}: select job=\"attache\""
            );
            assert!(
                ["warning", "critical"].contains(&r["labels"]["severity"].as_str().unwrap_or("")),
                "{name}"
            );
            alerts.insert(name);
        }
    }
    for want in [
        "AttacheDown",
        "AttacheNoInput",
        "AttacheConsumerLagHigh",
        "AttacheDeliveryFailing",
        "AttacheDeadLettersIncreasing",
        "AttacheDecodeFailuresSpike",
        "AttacheRuleReloadFailed",
    ] {
        assert!(alerts.contains(want), "missing alert {want}");
    }
    let untested: Vec<_> = alerts.difference(&fired).collect();
    assert!(
        untested.is_empty(),
        "alerts no test makes fire: {untested:?}"
    );
    let unchecked: Vec<_> = alerts.difference(&quiet).collect();
    assert!(
        unchecked.is_empty(),
        "alerts no test checks stay quiet: {unchecked:?}"
    );
}

#[test]
fn prometheus_example_config_passes_promtool() {
    let promtool = tool("promtool");
    // Also loads and checks the rule_files it names (attache-alerts.yml).
    assert_ok(
        Command::new(&promtool)
            .args(["check", "config", "prometheus.example.yml"])
            .current_dir(deploy("prometheus")),
    );
    let cfg = yaml(&deploy("prometheus/prometheus.example.yml"));
    assert_eq!(cfg["scrape_configs"][0]["job_name"], "attache");
}

// ---------------------------------------------------------------------------------
// systemd

#[test]
fn systemd_unit_passes_systemd_analyze() {
    let sa = tool("systemd-analyze");
    let unit = read(&deploy("systemd/attache.service"));
    for want in [
        "User=attache",
        "ExecStart=/usr/local/bin/attache run --config /etc/attache/attache.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "EnvironmentFile=-/etc/attache/env",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/attache",
    ] {
        assert!(
            unit.lines().any(|l| l == want),
            "attache.service lacks `{want}`"
        );
    }
    // `verify` requires ExecStart's binary to exist: point it at the one cargo built.
    // It does not resolve User= (a missing `attache` user is no error), so this runs
    // on a machine without that user.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("attache.service");
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/attache ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_attache")),
    );
    std::fs::write(&file, unit).unwrap();
    let out = assert_ok(Command::new(&sa).args(["verify", "--man=no"]).arg(&file));
    // Unknown keys, bad values and missing binaries are logged with exit 0: any line
    // about the unit is a failure (lines about the host's own units are not ours).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("attache.service"))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify:\n{}",
        ours.join("\n")
    );

    // The hardening keeps the exposure score at or below 2.0 (on systemd's 0-100
    // threshold scale, 20); printed in the failure message when it regresses.
    let mut cmd = Command::new(&sa);
    cmd.args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&file);
    assert_ok(&mut cmd);

    // Negative control: verify does flag a bad key.
    let bad = dir.path().join("bad.service");
    std::fs::write(&bad, "[Service]\nExecStart=/bin/true\nBogusKey=1\n").unwrap();
    let out = run(Command::new(&sa).args(["verify", "--man=no"]).arg(&bad));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("BogusKey"),
        "{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------
// Grafana

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

fn collect_panels<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        collect_panels(&p["panels"], out); // rows nest their panels when collapsed
    }
}

/// Grafana's interval variables, replaced by a typical value before promtool parses
/// the expression (`[$__rate_interval]` is Grafana syntax, not PromQL).
fn expand_grafana_vars(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
}

#[test]
fn grafana_dashboard_queries_are_valid_promql() {
    let d: Value = serde_json::from_str(&read(&deploy("grafana/attache-dashboard.json")))
        .expect("the dashboard is JSON");
    assert!(
        d["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion < 36"
    );
    assert!(d["uid"].is_string() && d["title"].is_string());

    let mut panels = Vec::new();
    collect_panels(&d["panels"], &mut panels);
    let charts: Vec<&&Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(charts.len() >= 8, "{} panels, want >= 8", charts.len());
    let ids: BTreeSet<u64> = panels
        .iter()
        .map(|p| p["id"].as_u64().expect("panel id"))
        .collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are not unique");
    for p in &charts {
        let targets = p["targets"].as_array().map(Vec::len).unwrap_or(0);
        assert!(targets > 0, "panel {} has no query", p["title"]);
    }

    let mut exprs = Vec::new();
    collect_exprs(&d, &mut exprs);
    let exprs: Vec<String> = exprs.iter().map(|e| expand_grafana_vars(e)).collect();
    let mut used = BTreeSet::new();
    for e in &exprs {
        assert!(!e.contains("$__"), "an unexpanded Grafana variable in: {e}");
        assert_known_metrics(e, "dashboard");
        for h in HISTOGRAMS {
            if e.contains(h) && e.contains("histogram_quantile") {
                assert!(
                    e.contains(&format!("{h}_bucket")),
                    "quantile not over {h}_bucket: {e}"
                );
            }
        }
        used.extend(metric_names(e));
    }
    // The panels the dashboard promises.
    for m in [
        "attache_posts_consumed_total",
        "attache_decode_failures_total",
        "attache_alerts_total",
        "attache_processing_seconds",
        "attache_end_to_end_latency_seconds",
        "attache_deliveries_total",
        "attache_dead_letters_total",
        "attache_kafka_consumer_lag_messages",
        "attache_rules_loaded",
        "attache_rule_reloads_total",
    ] {
        assert!(used.contains(m), "no panel shows {m}");
    }

    let out = promtool_check_exprs(&exprs);
    assert!(
        out.status.success(),
        "a dashboard expression is not PromQL:\n{}",
        text(&out)
    );
    // Negative control: the same check rejects a broken expression.
    let out = promtool_check_exprs(&["sum(rate(attache_alerts_total[5m])".to_string()]);
    assert!(
        !out.status.success(),
        "promtool accepted unbalanced parentheses:\n{}",
        text(&out)
    );
}
