//! Escalation: per actor→target pair of states, the decayed sum of alert scores
//! weighted by account tier, with levels, hysteresis, de-escalation and reciprocity
//! (DESIGN §5). Pure: no I/O, no clock — time is the posts' event time, so a replay
//! of 2018 behaves as 2018 did.
//!
//! A post's alerts become [`Contribution`]s, one per target and category (the highest
//! score of the category's alerts, so five rules firing on one statement count once).
//! An [`Index`] folds contributions in arrival order; contributions are identified,
//! so folding one twice (a replay after a crash) changes nothing.
//!
//! Both directions of a pair live in one index (reciprocity looks at the reverse
//! direction); with Kafka the contributions are re-keyed by the unordered pair, so
//! one instance owns both directions (see `docs/escalation.md`).

pub mod notice;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::alert::Alert;
use crate::registry::Tier;
pub use notice::{ContributionRef, Escalation, Kind};

/// One level of the index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    /// Name (`watch`, `warning`, `crisis`).
    pub name: String,
    /// The index at or above which the level holds.
    pub at: f64,
    /// Severity of the escalation alert that announces it.
    pub severity: String,
}

/// Validated escalation settings (from `[escalation]` of the config).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Half-life of a contribution, in hours of event time.
    pub half_life_hours: f64,
    /// Contributions older than this many half-lives are dropped.
    pub cutoff_half_lives: f64,
    /// Levels, ascending.
    pub levels: Vec<Level>,
    /// A level is left only when the index falls below `at × (1 − hysteresis)`.
    pub hysteresis: f64,
    /// Weight per tier, highest tier first (see [`Tier::ALL`]).
    pub tier_weights: [f64; 4],
    /// Weight of accounts not in the registry; `None` drops their alerts from the index.
    pub unregistered_weight: Option<f64>,
    /// Categories whose alerts lower the index instead of raising it.
    pub de_escalation_categories: Vec<String>,
    /// Rule tags meaning "the post reports a measure taken against the poster's
    /// state": the contribution counts for target→actor.
    pub reverse_tags: Vec<String>,
    /// Categories for which an answer in kind is a tit-for-tat.
    pub reciprocity_categories: Vec<String>,
    /// How long after a measure an answer in kind counts as tit-for-tat, in hours.
    pub reciprocity_window_hours: f64,
    /// Emit an alert when a pair falls to a lower level.
    pub de_escalation_notices: bool,
    /// Most contributions kept per pair direction (oldest dropped first).
    pub max_contributions: usize,
    /// Most contributions cited by one escalation alert.
    pub max_cited: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            half_life_hours: 168.0,
            cutoff_half_lives: 5.0,
            levels: vec![
                Level {
                    name: "watch".into(),
                    at: 6.0,
                    severity: "medium".into(),
                },
                Level {
                    name: "warning".into(),
                    at: 12.0,
                    severity: "high".into(),
                },
                Level {
                    name: "crisis".into(),
                    at: 24.0,
                    severity: "critical".into(),
                },
            ],
            hysteresis: 0.25,
            tier_weights: [1.5, 1.0, 0.75, 0.5],
            unregistered_weight: Some(0.5),
            de_escalation_categories: vec!["de_escalation".into()],
            reverse_tags: vec!["against_actor".into()],
            reciprocity_categories: vec!["sanctions".into(), "persona_non_grata".into()],
            reciprocity_window_hours: 336.0,
            de_escalation_notices: true,
            max_contributions: 256,
            max_cited: 20,
        }
    }
}

impl Settings {
    fn half_life_secs(&self) -> f64 {
        self.half_life_hours * 3600.0
    }

    fn cutoff(&self) -> chrono::Duration {
        chrono::Duration::seconds((self.half_life_secs() * self.cutoff_half_lives) as i64)
    }

    /// The weight of an account of this tier (`registered` = in the registry).
    pub fn weight(&self, tier: Tier, registered: bool) -> Option<f64> {
        if registered {
            let i = Tier::ALL.iter().position(|t| *t == tier).unwrap_or(3);
            Some(self.tier_weights[i])
        } else {
            self.unregistered_weight
        }
    }

    fn level_name(&self, level: usize) -> Option<String> {
        level.checked_sub(1).map(|i| self.levels[i].name.clone())
    }

    /// The level index (0 = none) an index value reaches from `current`, with hysteresis.
    pub fn next_level(&self, current: usize, value: f64) -> usize {
        let mut up = current;
        while up < self.levels.len() && value >= self.levels[up].at {
            up += 1;
        }
        if up > current {
            return up;
        }
        let mut down = current;
        while down > 0 && value < self.levels[down - 1].at * (1.0 - self.hysteresis) {
            down -= 1;
        }
        down
    }
}

/// What one post adds to one pair direction in one category. Also the record of the
/// Kafka repartition topic (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Deterministic id: platform, post id, category, actor and target.
    pub id: String,
    /// The per-post alerts behind it.
    pub alert_ids: Vec<String>,
    /// Their rules.
    pub rule_ids: Vec<String>,
    /// Category.
    pub category: String,
    /// Acting state.
    pub actor: String,
    /// Target state.
    pub target: String,
    /// Event time.
    pub at: DateTime<Utc>,
    /// Highest rule score among the alerts.
    pub score: f64,
    /// Tier of the account.
    pub tier: Tier,
    /// Whether the account is in the registry.
    pub registered: bool,
    /// Signed weight: score × account weight, negative for de-escalation.
    pub weight: f64,
    /// Post id.
    pub post_id: String,
    /// Post permalink.
    pub url: Option<String>,
    /// Posting account.
    pub handle: Option<String>,
}

impl Contribution {
    /// The unordered pair this belongs to (`CA|SA`): the Kafka repartition key.
    pub fn pair_key(&self) -> String {
        if self.actor <= self.target {
            format!("{}|{}", self.actor, self.target)
        } else {
            format!("{}|{}", self.target, self.actor)
        }
    }

    fn at_str(&self) -> String {
        notice::rfc3339(self.at)
    }

    fn cite(&self, now: DateTime<Utc>, s: &Settings) -> ContributionRef {
        ContributionRef {
            id: self.id.clone(),
            alert_ids: self.alert_ids.clone(),
            rule_ids: self.rule_ids.clone(),
            category: self.category.clone(),
            actor: self.actor.clone(),
            target: self.target.clone(),
            post_id: self.post_id.clone(),
            url: self.url.clone(),
            handle: self.handle.clone(),
            at: self.at_str(),
            weight: round2(self.weight),
            current: round2(decayed(self.weight, self.at, now, s)),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn decayed(w: f64, at: DateTime<Utc>, now: DateTime<Utc>, s: &Settings) -> f64 {
    let dt = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
    w * (-dt / s.half_life_secs()).exp2()
}

/// The contributions of one post's alerts: per (category, target), the highest score.
/// `tier`/`registered` come from the registry lookup, `at` is the post's event time.
/// Alerts without an actor or target contribute nothing; nor do unregistered accounts
/// when the policy drops them.
pub fn contributions(
    alerts: &[impl Borrow<Alert>],
    tier: Tier,
    registered: bool,
    at: DateTime<Utc>,
    s: &Settings,
) -> Vec<Contribution> {
    let Some(account_weight) = s.weight(tier, registered) else {
        return Vec::new();
    };
    let mut by: BTreeMap<(String, String, String), Contribution> = BTreeMap::new();
    // A category where some alert reports a measure against the poster's state is
    // about that measure: all of its alerts count for target → actor.
    let reversed: Vec<&str> = alerts
        .iter()
        .map(|a| -> &Alert { a.borrow() })
        .filter(|a| a.rule.tags.iter().any(|t| s.reverse_tags.contains(t)))
        .map(|a| a.rule.category.as_str())
        .collect();
    for a in alerts {
        let a: &Alert = a.borrow();
        let Some(poster) = a.actor.as_deref().filter(|c| !c.is_empty()) else {
            continue;
        };
        let reverse = reversed.contains(&a.rule.category.as_str());
        let sign = if s.de_escalation_categories.contains(&a.rule.category) {
            -1.0
        } else {
            1.0
        };
        for t in &a.targets {
            let (actor, target) = if reverse {
                (t.as_str(), poster)
            } else {
                (poster, t.as_str())
            };
            if actor == target {
                continue;
            }
            let key = (
                a.rule.category.clone(),
                actor.to_string(),
                target.to_string(),
            );
            let c = by.entry(key).or_insert_with(|| Contribution {
                id: contribution_id(
                    a.post.platform.as_deref().unwrap_or(""),
                    &a.post.id,
                    &a.rule.category,
                    actor,
                    target,
                ),
                alert_ids: Vec::new(),
                rule_ids: Vec::new(),
                category: a.rule.category.clone(),
                actor: actor.to_string(),
                target: target.to_string(),
                at,
                score: 0.0,
                tier,
                registered,
                weight: 0.0,
                post_id: a.post.id.clone(),
                url: a.post.url.clone(),
                handle: a.post.account.handle.clone(),
            });
            c.alert_ids.push(a.id.clone());
            c.rule_ids.push(a.rule.id.clone());
            if a.score > c.score {
                c.score = a.score;
                c.weight = sign * a.score * account_weight;
            }
        }
    }
    by.into_values().collect()
}

fn contribution_id(
    platform: &str,
    post: &str,
    category: &str,
    actor: &str,
    target: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [platform, post, category, actor, target] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// A change of level, for timelines and views.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelChange {
    /// Event time.
    pub at: String,
    /// Level before.
    pub from: Option<String>,
    /// Level after.
    pub to: Option<String>,
    /// Index at the change.
    pub index: f64,
}

/// One direction of a pair.
#[derive(Debug, Clone, Default)]
struct Direction {
    contribs: VecDeque<Contribution>,
    level: usize,
    /// Latest event time seen for this direction.
    clock: Option<DateTime<Utc>>,
    history: Vec<LevelChange>,
    /// Last tit-for-tat per category (event time).
    last_tft: HashMap<String, DateTime<Utc>>,
}

impl Direction {
    fn value(&self, now: DateTime<Utc>, s: &Settings) -> f64 {
        self.contribs
            .iter()
            .filter(|c| c.at <= now)
            .map(|c| decayed(c.weight, c.at, now, s))
            .sum::<f64>()
            .max(0.0)
    }

    fn prune(&mut self, now: DateTime<Utc>, s: &Settings) {
        let oldest = now - s.cutoff();
        self.contribs.retain(|c| c.at >= oldest);
        while self.contribs.len() > s.max_contributions {
            self.contribs.pop_front();
        }
    }
}

/// The escalation index of a set of pairs (all of them, or one Kafka partition's).
#[derive(Debug, Clone, Default)]
pub struct Index {
    dirs: HashMap<(String, String), Direction>,
    /// Latest event time folded in.
    watermark: Option<DateTime<Utc>>,
    last_sweep: Option<DateTime<Utc>>,
}

/// A pair direction as shown by `/pairs` and `attache pairs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairView {
    /// Acting state.
    pub actor: String,
    /// Target state.
    pub target: String,
    /// Level reached (with hysteresis), as of the last change.
    pub level: Option<String>,
    /// Index at the view's time.
    pub index: f64,
    /// Latest event time of the pair.
    pub last_event: Option<String>,
    /// Contributions, newest first, with what they still add.
    pub evidence: Vec<ContributionRef>,
    /// Level changes, oldest first.
    pub history: Vec<LevelChange>,
}

/// How often (event time) every pair is re-evaluated for decay.
const SWEEP_EVERY_SECS: i64 = 3600;

impl Index {
    /// Fold one contribution in; returns the escalation alerts it causes.
    /// `fired_at` is the processing time to stamp them with (`None`: the event time).
    pub fn apply(
        &mut self,
        c: Contribution,
        s: &Settings,
        fired_at: Option<DateTime<Utc>>,
    ) -> Vec<Escalation> {
        let mut out = Vec::new();
        let at = c.at;
        let wm = self.watermark.map_or(at, |w| w.max(at));
        self.watermark = Some(wm);
        // Older than the cutoff: it would be pruned at once.
        if at < wm - s.cutoff() {
            return out;
        }
        let key = (c.actor.clone(), c.target.clone());
        let rev = (c.target.clone(), c.actor.clone());
        let exists = [&key, &rev].iter().any(|k| {
            self.dirs
                .get(*k)
                .is_some_and(|d| d.contribs.iter().any(|x| x.id == c.id))
        });
        if exists {
            return out;
        }
        let negative = c.weight < 0.0;
        if negative {
            // Relations restored, sanctions lifted: lowers both directions that exist.
            for k in [key.clone(), rev] {
                let Some(d) = self.dirs.get_mut(&k) else {
                    continue;
                };
                let pos = d.contribs.partition_point(|x| x.at <= c.at);
                d.contribs.insert(pos, c.clone());
                if let Some(e) = self.evaluate(&k, at, true, s, fired_at, &c.id) {
                    out.push(e);
                }
            }
        } else {
            // Reciprocity first: the answer is about the reverse direction's past.
            if s.reciprocity_categories.contains(&c.category) {
                if let Some(e) = self.reciprocity(&c, s, fired_at) {
                    out.push(e);
                }
            }
            let d = self.dirs.entry(key.clone()).or_default();
            // Keep arrival order stable but sorted by event time for pruning.
            let pos = d.contribs.partition_point(|x| x.at <= c.at);
            d.contribs.insert(pos, c.clone());
            if let Some(e) = self.evaluate(&key, at, true, s, fired_at, &c.id) {
                out.push(e);
            }
        }
        out.extend(self.sweep(wm, s, fired_at));
        out
    }

    /// Re-evaluate one direction at `now` (`event`: a contribution of its own arrived,
    /// else a sweep); an alert if its level changed.
    fn evaluate(
        &mut self,
        key: &(String, String),
        now: DateTime<Utc>,
        event: bool,
        s: &Settings,
        fired_at: Option<DateTime<Utc>>,
        trigger: &str,
    ) -> Option<Escalation> {
        let d = self.dirs.get_mut(key)?;
        let clock = d.clock.map_or(now, |c| c.max(now));
        if event {
            d.clock = Some(clock);
        }
        d.prune(clock, s);
        let value = d.value(clock, s);
        let next = s.next_level(d.level, value);
        if next == d.level {
            return None;
        }
        let up = next > d.level;
        let (from, to) = (s.level_name(d.level), s.level_name(next));
        d.history.push(LevelChange {
            at: notice::rfc3339(clock),
            from: from.clone(),
            to: to.clone(),
            index: round2(value),
        });
        if d.history.len() > 64 {
            d.history.remove(0);
        }
        d.level = next;
        if !up && !s.de_escalation_notices {
            return None;
        }
        let kind = if up {
            Kind::Escalation
        } else {
            Kind::DeEscalation
        };
        let severity = if up {
            s.levels[next - 1].severity.clone()
        } else {
            "low".into()
        };
        let level_label = to.clone().unwrap_or_else(|| "none".into());
        let summary = format!(
            "{} → {}: {} {} (index {:.1}{})",
            key.0,
            key.1,
            if up {
                "escalation to"
            } else {
                "de-escalation to"
            },
            level_label,
            value,
            from.as_deref()
                .map(|f| format!(", was {f}"))
                .unwrap_or_default()
        );
        let mut cited: Vec<ContributionRef> =
            d.contribs.iter().rev().map(|c| c.cite(clock, s)).collect();
        cited.truncate(s.max_cited);
        Some(Escalation {
            schema: notice::SCHEMA.into(),
            id: notice::escalation_id(kind, &key.0, &key.1, &level_label, trigger),
            kind,
            at: notice::rfc3339(clock),
            fired_at: notice::rfc3339(fired_at.unwrap_or(clock)),
            actor: key.0.clone(),
            target: key.1.clone(),
            level: to,
            previous_level: from,
            severity,
            index: round2(value),
            summary,
            contributing: cited,
        })
    }

    fn reciprocity(
        &mut self,
        c: &Contribution,
        s: &Settings,
        fired_at: Option<DateTime<Utc>>,
    ) -> Option<Escalation> {
        let window = chrono::Duration::seconds((s.reciprocity_window_hours * 3600.0) as i64);
        let rev = self.dirs.get(&(c.target.clone(), c.actor.clone()))?;
        let provocation = rev
            .contribs
            .iter()
            .rev()
            .find(|p| {
                p.category == c.category && p.weight > 0.0 && p.at <= c.at && c.at - p.at <= window
            })?
            .clone();
        let d = self
            .dirs
            .entry((c.actor.clone(), c.target.clone()))
            .or_default();
        if d.last_tft
            .get(&c.category)
            .is_some_and(|t| c.at - *t <= window && c.at >= *t)
        {
            return None;
        }
        d.last_tft.insert(c.category.clone(), c.at);
        let summary = format!(
            "{} answers {} in kind ({}): {} after {}'s measure of {}",
            c.actor,
            c.target,
            c.category,
            notice::rfc3339(c.at),
            c.target,
            notice::rfc3339(provocation.at)
        );
        Some(Escalation {
            schema: notice::SCHEMA.into(),
            id: notice::escalation_id(Kind::TitForTat, &c.actor, &c.target, &c.category, &c.id),
            kind: Kind::TitForTat,
            at: notice::rfc3339(c.at),
            fired_at: notice::rfc3339(fired_at.unwrap_or(c.at)),
            actor: c.actor.clone(),
            target: c.target.clone(),
            level: s.level_name(d.level),
            previous_level: None,
            severity: "high".into(),
            // The answering direction's index once the answer is counted.
            index: round2((d.value(c.at, s) + c.weight).max(0.0)),
            summary,
            contributing: vec![c.cite(c.at, s), provocation.cite(c.at, s)],
        })
    }

    /// Every hour of event time, let decay lower the levels of quiet pairs.
    fn sweep(
        &mut self,
        now: DateTime<Utc>,
        s: &Settings,
        fired_at: Option<DateTime<Utc>>,
    ) -> Vec<Escalation> {
        if self
            .last_sweep
            .is_some_and(|t| (now - t).num_seconds() < SWEEP_EVERY_SECS)
        {
            return Vec::new();
        }
        self.last_sweep = Some(now);
        let mut keys: Vec<(String, String)> = self
            .dirs
            .iter()
            .filter(|(_, d)| d.level > 0 || !d.contribs.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        let mut out = Vec::new();
        for k in keys {
            let trig = format!("decay@{}", notice::rfc3339(now));
            if let Some(e) = self.evaluate(&k, now, false, s, fired_at, &trig) {
                out.push(e);
            }
        }
        // Forget directions with nothing left to say.
        self.dirs
            .retain(|_, d| d.level > 0 || !d.contribs.is_empty());
        out
    }

    /// Latest event time folded in.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    /// Number of pair directions held.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// Whether no pair is held.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Every pair direction as (actor, target, index, level: 0 none, 1 the first, …),
    /// valued at `now` (default: the watermark): the cheap form of [`Index::view`].
    pub fn levels(
        &self,
        now: Option<DateTime<Utc>>,
        s: &Settings,
    ) -> Vec<(String, String, f64, usize)> {
        let Some(now) = now.or(self.watermark) else {
            return Vec::new();
        };
        self.dirs
            .iter()
            .map(|((a, t), d)| (a.clone(), t.clone(), round2(d.value(now, s)), d.level))
            .collect()
    }

    /// Every pair direction, highest index first, valued at `now` (default: the watermark).
    pub fn view(&self, now: Option<DateTime<Utc>>, s: &Settings) -> Vec<PairView> {
        let Some(now) = now.or(self.watermark) else {
            return Vec::new();
        };
        let mut v: Vec<PairView> = self
            .dirs
            .iter()
            .map(|((a, t), d)| PairView {
                actor: a.clone(),
                target: t.clone(),
                level: s.level_name(d.level),
                index: round2(d.value(now, s)),
                last_event: d.clock.map(notice::rfc3339),
                evidence: d
                    .contribs
                    .iter()
                    .rev()
                    .take(s.max_cited)
                    .map(|c| c.cite(now, s))
                    .collect(),
                history: d.history.clone(),
            })
            .collect();
        v.sort_by(|x, y| {
            y.index
                .total_cmp(&x.index)
                .then_with(|| (&x.actor, &x.target).cmp(&(&y.actor, &y.target)))
        });
        v
    }
}

#[cfg(test)]
mod tests;
