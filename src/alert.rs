//! Alerts: the versioned JSON contract of DESIGN §7 (`attache.alert.v1`), built from a
//! rule match and its post. The JSON Schema lives in `schema/alert.v1.json`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decode::Post;
use crate::rules::{RuleMatch, RuleSet};

/// Schema name of per-post alerts.
pub const SCHEMA: &str = "attache.alert.v1";

/// One per-post alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Deterministic: hash of rule id, platform and post id.
    pub id: String,
    /// RFC 3339. Processing time in `run`; the post's event time in `scan` (so its
    /// output is a pure function of its input), null when the post has none.
    pub fired_at: Option<String>,
    /// The rule that fired.
    pub rule: AlertRule,
    /// The posting state (ISO alpha-2), if known.
    pub actor: Option<String>,
    /// States the post names (ISO alpha-2), first mention first, actor excluded.
    pub targets: Vec<String>,
    /// Where each target is named (first mention), in the order of `targets`.
    #[serde(default)]
    pub target_evidence: Vec<TargetEvidence>,
    /// The rule's escalation score.
    pub score: f64,
    /// The post, abridged.
    pub post: AlertPost,
    /// Spans of the published text that made the rule fire.
    pub evidence: Vec<AlertEvidence>,
    /// Where the post came from.
    pub source: Option<SourceRef>,
}

/// The rule part of an alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertRule {
    /// Rule id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Category.
    pub category: String,
    /// Severity name.
    pub severity: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// The post part of an alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertPost {
    /// Post id.
    pub id: String,
    /// Platform.
    pub platform: Option<String>,
    /// Permalink.
    pub url: Option<String>,
    /// Event time as given.
    pub created_at: Option<String>,
    /// Declared language.
    pub lang: Option<String>,
    /// The account.
    pub account: AlertAccount,
    /// The post text.
    pub text: Option<String>,
}

/// The account part of an alert.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AlertAccount {
    /// Handle.
    pub handle: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Role.
    pub role: Option<String>,
}

/// One evidence span.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertEvidence {
    /// `text`, `quoted_text`, `media[0].caption`, `media[0].alt_text`, …
    pub field: String,
    /// Byte offset into the field's UTF-8 value.
    pub start: usize,
    /// Byte offset of the end (exclusive).
    pub end: usize,
    /// The text at that span.
    pub matched: String,
}

/// The first mention of a target state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetEvidence {
    /// ISO code.
    pub country: String,
    /// `text`, `media[0].caption`, …
    pub field: String,
    /// Byte offset into the field's UTF-8 value.
    pub start: usize,
    /// Byte offset of the end (exclusive).
    pub end: usize,
    /// The text at that span ("Ottawa", "Canadian", "the Kremlin").
    pub matched: String,
}

/// Where a post was read from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SourceRef {
    /// A Kafka message.
    Kafka {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// A line of a file (`-` is stdin, `embedded:…` the bundled sample).
    File {
        /// File name.
        file: String,
        /// 1-based line number.
        line: u64,
    },
}

/// The deterministic alert id: the first 16 bytes of SHA-256 over rule id, platform
/// and post id, in hex. Same input, same id, so receivers can drop replays.
pub fn alert_id(rule_id: &str, platform: &str, post_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    h.update([0]);
    h.update(platform.as_bytes());
    h.update([0]);
    h.update(post_id.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The post's event time in UTC RFC 3339, if it has a parseable `created_at`.
pub fn event_time(post: &Post<'_>) -> Option<chrono::DateTime<chrono::Utc>> {
    let s = post.created_at.as_deref()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// RFC 3339 with second precision and `Z`.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Build the alert for one rule match.
pub fn build(
    rules: &RuleSet,
    m: &RuleMatch,
    post: &Post<'_>,
    fired_at: Option<String>,
    source: Option<SourceRef>,
) -> Alert {
    let rule = &rules.rules[m.rule];
    let platform = post.platform.as_deref().unwrap_or("");
    let acc = post.account.as_ref();
    let s = |c: Option<&std::borrow::Cow<'_, str>>| c.map(|c| c.to_string());
    Alert {
        schema: SCHEMA.into(),
        id: alert_id(&rule.id, platform, &post.id),
        fired_at,
        rule: AlertRule {
            id: rule.id.clone(),
            title: rule.title.clone(),
            category: rule.category.clone(),
            severity: rule.severity.as_str().into(),
            tags: rule.tags.clone(),
        },
        actor: post.country().map(|c| c.to_ascii_uppercase()),
        targets: m.targets.clone(),
        target_evidence: m
            .targets
            .iter()
            .zip(&m.target_evidence)
            .map(|(c, e)| TargetEvidence {
                country: c.clone(),
                field: e.field.path(),
                start: e.start,
                end: e.end,
                matched: e.matched.clone(),
            })
            .collect(),
        score: rule.score,
        post: AlertPost {
            id: post.id.to_string(),
            platform: s(post.platform.as_ref()),
            url: s(post.url.as_ref()),
            created_at: s(post.created_at.as_ref()),
            lang: s(post.lang.as_ref()),
            account: AlertAccount {
                handle: s(acc.and_then(|a| a.handle.as_ref())),
                country: s(acc.and_then(|a| a.country.as_ref())),
                role: s(acc.and_then(|a| a.role.as_ref())),
            },
            text: s(post.text.as_ref()),
        },
        evidence: m
            .evidence
            .iter()
            .map(|e| AlertEvidence {
                field: e.field.path(),
                start: e.start,
                end: e.end,
                matched: e.matched.clone(),
            })
            .collect(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_deterministic_and_separates_fields() {
        assert_eq!(alert_id("r", "x", "1"), alert_id("r", "x", "1"));
        assert_ne!(alert_id("r", "x", "1"), alert_id("r", "x1", ""));
        assert_eq!(alert_id("r", "x", "1").len(), 32);
    }
}
