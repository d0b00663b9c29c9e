//! Events the stage loops emit: each logs and counts in one call, so a call site is
//! one line and the pure stages stay free of telemetry.

use super::Metrics;
use crate::decode::DecodeError;

/// A message could not be decoded and went to the dead letters.
pub struct DecodeFailed<'a> {
    /// The error.
    pub error: &'a DecodeError,
    /// Where it came from (file:line or topic/partition@offset).
    pub origin: &'a str,
}

impl DecodeFailed<'_> {
    /// Log (at WARN, first few per reason only at the call site's discretion) and count.
    pub fn emit(&self, m: &Metrics) {
        m.decode_failures
            .with_label_values(&[self.error.reason.as_str()])
            .inc();
        m.dead_letters.with_label_values(&["decode"]).inc();
        tracing::warn!(origin = self.origin, reason = self.error.reason.as_str(), error = %self.error.detail, "undecodable message sent to dead letters");
    }
}

/// A rule fired and produced an alert.
pub struct AlertRaised<'a> {
    /// Rule id.
    pub rule: &'a str,
    /// Category.
    pub category: &'a str,
    /// Severity.
    pub severity: &'a str,
}

impl AlertRaised<'_> {
    /// Count (no log line: alerts are data, not logs).
    pub fn emit(&self, m: &Metrics) {
        m.rule_matches.with_label_values(&[self.rule]).inc();
        m.alerts
            .with_label_values(&[self.category, self.severity])
            .inc();
    }
}

/// A rule set was loaded (or failed to).
pub struct RulesLoaded<'a> {
    /// Number of rules, when loaded.
    pub rules: Option<usize>,
    /// Version hash, when loaded.
    pub version: Option<&'a str>,
    /// Error text, when not.
    pub error: Option<&'a str>,
    /// What triggered the load (`startup`, `file change`, `SIGHUP`, `http`).
    pub trigger: &'a str,
}

impl RulesLoaded<'_> {
    /// Log and count.
    pub fn emit(&self, m: &Metrics) {
        match (self.rules, self.error) {
            (Some(n), None) => {
                m.rule_reloads.with_label_values(&["success"]).inc();
                m.rules_loaded.set(n as i64);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                m.rules_last_reload_success.set(now);
                tracing::info!(
                    rules = n,
                    version = self.version.unwrap_or(""),
                    trigger = self.trigger,
                    "rules loaded"
                );
            }
            _ => {
                m.rule_reloads.with_label_values(&["error"]).inc();
                tracing::error!(
                    trigger = self.trigger,
                    error = self.error.unwrap_or(""),
                    "rule reload failed; the previous rules stay in force"
                );
            }
        }
    }
}

/// The escalation index produced an escalation alert.
pub struct EscalationRaised<'a> {
    /// The alert.
    pub alert: &'a crate::escalation::Escalation,
}

impl EscalationRaised<'_> {
    /// Log (escalations are rare and operators want them in the log) and count.
    pub fn emit(&self, m: &Metrics) {
        let a = self.alert;
        let level = a.level.as_deref().unwrap_or("none");
        m.escalations
            .with_label_values(&[a.kind.as_str(), level])
            .inc();
        tracing::info!(kind = a.kind.as_str(), actor = %a.actor, target = %a.target, level, index = a.index, at = %a.at, "escalation");
    }
}

/// The escalation index changed: refresh the bounded top-pairs gauges.
pub struct PairsUpdated<'a> {
    /// (actor, target, index, level number) per pair, highest index first (only the
    /// first `top` are exported).
    pub pairs: &'a [(String, String, f64, usize)],
    /// How many to export.
    pub top: usize,
}

impl PairsUpdated<'_> {
    /// Replace the gauges' series with the current top pairs.
    pub fn emit(&self, m: &Metrics) {
        m.escalation_index.reset();
        m.escalation_level.reset();
        m.escalation_pairs.set(self.pairs.len() as i64);
        for (actor, target, index, level) in self.pairs.iter().take(self.top) {
            let labels = [actor.as_str(), target.as_str()];
            m.escalation_index.with_label_values(&labels).set(*index);
            m.escalation_level
                .with_label_values(&labels)
                .set(*level as i64);
        }
    }
}
