//! The Alertmanager sink: each alert is POSTed to `{url}/api/v2/alerts` as a one-element
//! array, so users get Alertmanager's grouping, silences, inhibition and receivers. The
//! same labels and annotations shape the `alertmanager` webhook format (a body like
//! Alertmanager's own webhook v4), so receivers written for Alertmanager work too.
//!
//! Delivery (timeouts, retries, breaker, dead letters) is the HTTP machinery of
//! [`super::webhook`]; this module only builds bodies.
//!
//! Labels: `alertname` (the rule id), `rule_id`, `category`, `severity`, `actor` and
//! `target` (the first target). Annotations: `summary` (title and actor → target),
//! `post_url`, `text` (at most 1000 characters) and `alert_id`. Alertmanager drops
//! labels whose value is empty.
//!
//! `startsAt` is the event time (the post's `created_at`). attaché never sends a
//! "resolved" update, so `endsAt` says when Alertmanager should consider the alert
//! resolved: `resolve_timeout_ms` after the later of the event time and the moment
//! attaché sends it. Counting from the send as well keeps alerts about old posts (a
//! replay, a backlog, the bundled 2018 sample) from arriving already resolved, which
//! Alertmanager would never notify.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::Outgoing as Alert;
use crate::route::event_time;

/// Longest `text` annotation, in characters.
pub const TEXT_LIMIT: usize = 1000;

/// The alert's labels.
pub fn labels(alert: &Alert) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("alertname", alert.rule_id()),
        ("rule_id", alert.rule_id()),
        ("category", alert.category().to_string()),
        ("severity", alert.severity().to_string()),
        ("actor", alert.actor().unwrap_or_default().to_string()),
        ("target", alert.target().unwrap_or_default().to_string()),
    ])
}

/// The alert's annotations.
pub fn annotations(alert: &Alert) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("summary", summary(alert)),
        ("post_url", alert.url().unwrap_or_default().to_string()),
        (
            "text",
            truncate_chars(alert.text().unwrap_or(""), TEXT_LIMIT),
        ),
        ("alert_id", alert.id().to_string()),
    ])
}

/// `"<title>: SA → CA"`; the parts that are unknown are left out.
pub fn summary(alert: &Alert) -> String {
    if alert.is_escalation() {
        return alert.title().to_string();
    }
    let pair = match (alert.actor(), alert.target()) {
        (Some(a), Some(t)) => format!("{a} → {t}"),
        (Some(a), None) => a.to_string(),
        (None, Some(t)) => format!("→ {t}"),
        (None, None) => String::new(),
    };
    if pair.is_empty() {
        alert.title().to_string()
    } else {
        format!("{}: {pair}", alert.title())
    }
}

/// At most `limit` characters, with `…` as the last one when cut.
pub fn truncate_chars(s: &str, limit: usize) -> String {
    match s.char_indices().nth(limit) {
        None => s.to_string(),
        Some(_) => {
            let keep: String = s.chars().take(limit.saturating_sub(1)).collect();
            keep + "…"
        }
    }
}

/// Alertmanager-style fingerprint of a label set: 16 hex digits of SHA-256 over the
/// sorted `name\xffvalue\xff` pairs (stable; not bit-identical to Alertmanager's
/// FNV-based one, which receivers treat as opaque).
pub fn fingerprint(labels: &BTreeMap<&'static str, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    hex::encode(&h.finalize()[..8])
}

fn rfc3339_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The `/api/v2/alerts` body: a one-element array of a postable alert. `now` is the
/// send time (see the module docs for `endsAt`).
pub fn api_body(alert: &Alert, resolve_timeout: Duration, now: DateTime<Utc>) -> Value {
    let starts = event_time(alert, now);
    let resolve = chrono::Duration::from_std(resolve_timeout).unwrap_or(chrono::Duration::MAX);
    let ends = starts
        .max(now)
        .checked_add_signed(resolve)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    json!([{
        "labels": labels(alert),
        "annotations": annotations(alert),
        "startsAt": rfc3339_ms(starts),
        "endsAt": rfc3339_ms(ends),
        "generatorURL": alert.url().unwrap_or_default(),
    }])
}

/// A body shaped like Alertmanager's webhook v4 for one firing alert (the webhook
/// sink's `alertmanager` format). `receiver` is the sink name.
pub fn webhook_body(alert: &Alert, receiver: &str, now: DateTime<Utc>) -> Value {
    let labels = labels(alert);
    let annotations = annotations(alert);
    let group = BTreeMap::from([("alertname", alert.rule_id())]);
    let group_key = format!("{{}}:{{alertname={:?}}}", alert.rule_id());
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339_ms(event_time(alert, now)),
            // What Alertmanager sends for a firing alert: the zero time.
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": alert.url().unwrap_or_default(),
            "fingerprint": fingerprint(&labels),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::config::sample_alert;

    #[test]
    fn labels_and_annotations() {
        let a = sample_alert();
        let l = labels(&crate::sink::Outgoing::from(a.clone()));
        assert_eq!(l["alertname"], "png.declared");
        assert_eq!(l["category"], "persona_non_grata");
        assert_eq!(l["severity"], "high");
        assert_eq!(l["actor"], "SA");
        assert_eq!(l["target"], "CA");
        let an = annotations(&crate::sink::Outgoing::from(a.clone()));
        assert_eq!(
            an["summary"],
            "Ambassador declared persona non grata: SA → CA"
        );
        assert_eq!(an["alert_id"], a.id);
        assert!(an["post_url"].starts_with("https://x.com/"));
    }

    /// (name, actor, targets, expected summary)
    #[test]
    fn summaries() {
        let cases = [
            ("both", Some("SA"), vec!["CA", "DE"], "T: SA → CA"),
            ("actor only", Some("SA"), vec![], "T: SA"),
            ("target only", None, vec!["CA"], "T: → CA"),
            ("neither", None, vec![], "T"),
        ];
        for (name, actor, targets, want) in cases {
            let mut a = sample_alert();
            a.rule.title = "T".into();
            a.actor = actor.map(String::from);
            a.targets = targets.into_iter().map(String::from).collect();
            assert_eq!(
                summary(&crate::sink::Outgoing::from(a.clone())),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn text_is_truncated_by_characters() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
        let long = "é".repeat(1500);
        let t = truncate_chars(&long, TEXT_LIMIT);
        assert_eq!(t.chars().count(), TEXT_LIMIT);
        let mut a = sample_alert();
        a.post.text = Some(long);
        assert_eq!(
            annotations(&crate::sink::Outgoing::from(a.clone()))["text"]
                .chars()
                .count(),
            TEXT_LIMIT
        );
    }

    #[test]
    fn ends_at_counts_from_the_later_of_event_and_send() {
        let a = sample_alert(); // created 2018-08-05T23:01:00Z
        let day = Duration::from_secs(86_400);
        let then: DateTime<Utc> = "2018-08-05T23:02:00Z".parse().unwrap();
        let b = api_body(&crate::sink::Outgoing::from(a.clone()), day, then);
        assert_eq!(b[0]["startsAt"], "2018-08-05T23:01:00.000Z");
        assert_eq!(b[0]["endsAt"], "2018-08-06T23:02:00.000Z");
        let later: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
        let b = api_body(&crate::sink::Outgoing::from(a.clone()), day, later);
        assert_eq!(b[0]["startsAt"], "2018-08-05T23:01:00.000Z");
        assert_eq!(b[0]["endsAt"], "2024-01-02T00:00:00.000Z");
        assert_eq!(b[0]["labels"]["alertname"], "png.declared");
        assert_eq!(b[0]["generatorURL"], a.post.url.clone().unwrap());
    }

    #[test]
    fn webhook_v4_shape() {
        let a = sample_alert();
        let b = webhook_body(
            &crate::sink::Outgoing::from(a.clone()),
            "oncall",
            Utc::now(),
        );
        for k in [
            "version",
            "groupKey",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ] {
            assert!(b.get(k).is_some(), "{k}");
        }
        assert_eq!(b["version"], "4");
        assert_eq!(b["receiver"], "oncall");
        assert_eq!(b["groupKey"], "{}:{alertname=\"png.declared\"}");
        let al = &b["alerts"][0];
        assert_eq!(al["status"], "firing");
        assert_eq!(al["labels"]["target"], "CA");
        assert_eq!(al["fingerprint"].as_str().unwrap().len(), 16);
        assert_eq!(
            al["fingerprint"],
            fingerprint(&labels(&crate::sink::Outgoing::from(a.clone())))
        );
    }
}
