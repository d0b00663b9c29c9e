//! Escalation alerts: the versioned JSON contract `attache.escalation.v1` (schema in
//! `schema/escalation.v1.json`), distinct from per-post alerts and never part of
//! `scan`'s output.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Schema name of escalation alerts.
pub const SCHEMA: &str = "attache.escalation.v1";

/// What happened to a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The index crossed a level upward.
    Escalation,
    /// The index fell below a level (de-escalation signals or decay).
    DeEscalation,
    /// The target answered the actor in kind within the reciprocity window.
    TitForTat,
}

impl Kind {
    /// The name used in JSON and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Escalation => "escalation",
            Kind::DeEscalation => "de_escalation",
            Kind::TitForTat => "tit_for_tat",
        }
    }
}

/// One escalation alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Escalation {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Deterministic: hash of kind, pair, level and the triggering contribution, so a
    /// replay after a crash re-sends the same id.
    pub id: String,
    /// What happened.
    pub kind: Kind,
    /// Event time of the change (the triggering post's time, or the sweep time).
    pub at: String,
    /// Processing time (RFC 3339); equal to `at` in offline replays.
    pub fired_at: String,
    /// The state whose posts raised the index (ISO alpha-2).
    pub actor: String,
    /// The state they are directed at.
    pub target: String,
    /// Level now (null: below every level).
    pub level: Option<String>,
    /// Level before.
    pub previous_level: Option<String>,
    /// Severity for routing: the level's, `low` for de-escalation, `high` for tit-for-tat.
    pub severity: String,
    /// The pair's index at `at`.
    pub index: f64,
    /// One line for humans.
    pub summary: String,
    /// The contributions that make up the index now (newest first), or for a
    /// tit-for-tat the answer and the measure it answers.
    pub contributing: Vec<ContributionRef>,
}

/// A contribution as cited by an escalation alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContributionRef {
    /// Contribution id (post, category and pair).
    pub id: String,
    /// Ids of the per-post alerts behind it.
    pub alert_ids: Vec<String>,
    /// Their rules.
    pub rule_ids: Vec<String>,
    /// Category.
    pub category: String,
    /// Direction of the contribution (actor of the post).
    pub actor: String,
    /// Target of the contribution.
    pub target: String,
    /// Post id.
    pub post_id: String,
    /// Post permalink.
    pub url: Option<String>,
    /// Posting account.
    pub handle: Option<String>,
    /// Event time.
    pub at: String,
    /// Weight when it happened (score × tier weight; negative for de-escalation).
    pub weight: f64,
    /// What it still adds at the alert's time, after decay.
    pub current: f64,
}

/// The deterministic escalation id.
pub fn escalation_id(kind: Kind, actor: &str, target: &str, level: &str, trigger: &str) -> String {
    let mut h = Sha256::new();
    for part in [kind.as_str(), actor, target, level, trigger] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// RFC 3339 with second precision.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    crate::alert::rfc3339(t)
}
