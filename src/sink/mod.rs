//! Sinks: where alerts go. A sink is a task that takes [`Delivery`]s from a bounded
//! channel and answers each with an [`Outcome`] once the alert is accepted for good
//! (or handed to the dead letters), so the pipeline can complete the source message.
//!
//! * [`stdout`]: JSON lines on standard output.

pub mod alertmanager;
pub mod config;
pub mod kafka;
pub mod stdout;
pub mod webhook;

use std::sync::Arc;

use tokio::sync::oneshot;

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::escalation::Escalation;

/// What sinks deliver: a per-post alert (`attache.alert.v1`) or an escalation alert
/// (`attache.escalation.v1`). Serialised as the inner object, unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // always behind an `Arc`; boxing would add a hop
pub enum Outgoing {
    /// A per-post alert.
    Alert(Alert),
    /// A change of a pair's escalation level, or a tit-for-tat.
    Escalation(Escalation),
}

/// Category of every escalation alert (for routes).
pub const ESCALATION_CATEGORY: &str = "escalation";

impl From<Alert> for Outgoing {
    fn from(a: Alert) -> Self {
        Self::Alert(a)
    }
}

impl From<Escalation> for Outgoing {
    fn from(e: Escalation) -> Self {
        Self::Escalation(e)
    }
}

impl Outgoing {
    /// The deterministic id (webhook-id, dedup by receivers).
    pub fn id(&self) -> &str {
        match self {
            Self::Alert(a) => &a.id,
            Self::Escalation(e) => &e.id,
        }
    }

    /// The rule id; `pair.escalation`, `pair.de_escalation` or `pair.tit_for_tat`.
    pub fn rule_id(&self) -> String {
        match self {
            Self::Alert(a) => a.rule.id.clone(),
            Self::Escalation(e) => format!("pair.{}", e.kind.as_str()),
        }
    }

    /// Rule title, or the escalation's summary.
    pub fn title(&self) -> &str {
        match self {
            Self::Alert(a) => &a.rule.title,
            Self::Escalation(e) => &e.summary,
        }
    }

    /// Category (`escalation` for escalation alerts).
    pub fn category(&self) -> &str {
        match self {
            Self::Alert(a) => &a.rule.category,
            Self::Escalation(_) => ESCALATION_CATEGORY,
        }
    }

    /// Severity name.
    pub fn severity(&self) -> &str {
        match self {
            Self::Alert(a) => &a.rule.severity,
            Self::Escalation(e) => &e.severity,
        }
    }

    /// Acting state.
    pub fn actor(&self) -> Option<&str> {
        match self {
            Self::Alert(a) => a.actor.as_deref(),
            Self::Escalation(e) => Some(&e.actor),
        }
    }

    /// First target.
    pub fn target(&self) -> Option<&str> {
        match self {
            Self::Alert(a) => a.targets.first().map(String::as_str),
            Self::Escalation(e) => Some(&e.target),
        }
    }

    /// A link to the evidence: the post, or the newest contributing post.
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Alert(a) => a.post.url.as_deref(),
            Self::Escalation(e) => e.contributing.iter().find_map(|c| c.url.as_deref()),
        }
    }

    /// The text to show: the post's, or the escalation summary.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Alert(a) => a.post.text.as_deref(),
            Self::Escalation(e) => Some(&e.summary),
        }
    }

    /// The event time as given (post `created_at`, escalation `at`).
    pub fn event_time(&self) -> Option<&str> {
        match self {
            Self::Alert(a) => a.post.created_at.as_deref(),
            Self::Escalation(e) => Some(&e.at),
        }
    }

    /// Processing time.
    pub fn fired_at(&self) -> Option<&str> {
        match self {
            Self::Alert(a) => a.fired_at.as_deref(),
            Self::Escalation(e) => Some(&e.fired_at),
        }
    }

    /// Whether this is an escalation alert.
    pub fn is_escalation(&self) -> bool {
        matches!(self, Self::Escalation(_))
    }
}

/// One alert handed to one sink.
#[derive(Debug)]
pub struct Delivery {
    /// The alert.
    pub alert: Arc<Outgoing>,
    /// Answered when the sink is done with it.
    pub done: oneshot::Sender<Outcome>,
}

/// How a sink finished with an alert. Both count as accepted (DESIGN §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Delivered,
    /// Not deliverable; written to the dead letters.
    DeadLettered,
}
