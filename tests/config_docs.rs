//! Every configuration key the parser accepts is documented in config/README.md, and
//! every shipped example configuration validates.

mod common;

use common::*;

/// Keys the parser accepts in `section`, read from its "unknown field" error.
fn accepted_keys(section: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("probe.toml");
    std::fs::write(&f, format!("{section}\n__probe__ = 1\n")).unwrap();
    let out = bin().args(["config", "check"]).arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{section}: {err}");
    let list = err
        .split("expected")
        .nth(1)
        .unwrap_or_else(|| panic!("{section}: {err}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

#[test]
fn every_key_is_documented() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/README.md")).unwrap();
    let top = accepted_keys("");
    assert!(top.len() >= 10, "{top:?}");
    let mut missing = Vec::new();
    for section in &top {
        let header = if section == "sinks" || section == "routes" {
            format!("[[{section}]]")
        } else {
            format!("[{section}]")
        };
        if !doc.contains(&format!("`{header}`")) {
            missing.push(header.clone());
        }
        // The part of the page for this section.
        let part = doc.split(&format!("`{header}`")).nth(1).unwrap_or("");
        let part = part.split("\n## ").next().unwrap_or("");
        for key in accepted_keys(&header) {
            if !part.contains(&format!("| `{key}` |")) {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented in config/README.md: {missing:?}"
    );
}

#[test]
fn shipped_examples_validate() {
    for f in ["config/kafka.example.toml", "config/webhook.example.toml"] {
        let out = bin()
            .args(["config", "check", f])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env(
                "ATTACHE_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
