//! Routing and dedup of alerts to sinks: pure functions of the alert, the configured
//! routes and (for dedup) the alerts seen before. No I/O, no logging, no metrics — the
//! route loop reports what these return.
//!
//! # Routing
//!
//! Routes are evaluated in configuration order. A route matches an alert when every
//! filter it sets matches (an empty or missing filter matches anything):
//!
//! * `categories`: the rule's category is one of them (exact, case-sensitive);
//! * `min_severity`: the rule's severity is at least this one
//!   (`info < low < medium < high < critical`; an alert whose severity is not one of
//!   these never passes a `min_severity` filter);
//! * `actors`: the alert's actor is one of them (ISO codes, case-insensitive; an alert
//!   without an actor never passes an `actors` filter);
//! * `targets`: at least one of the alert's targets is one of them (case-insensitive).
//!
//! The first matching route adds its sinks and stops the evaluation, unless it says
//! `continue = true`, in which case later routes are evaluated too and may add more
//! sinks. An alert goes to the union of the sinks collected, each once, in the order
//! they were first collected. An alert no route matches goes to no routed sink (end
//! the list with a route without filters to catch everything else). Without any route
//! at all, every alert goes to every sink.
//!
//! # Dedup
//!
//! On notification sinks (webhook, Alertmanager) the same rule for the same
//! actor→first-target pair is sent once per realert window, measured in event time
//! (the post's `created_at`, else `fired_at`): an alert whose event time lies within
//! the window of the last alert *sent* for its key, on that sink, is suppressed
//! (counted by the caller, not re-sent). Archive sinks (stdout, Kafka) keep every
//! alert. Memory is bounded: keys whose last send is older than the window, relative
//! to the newest event time seen, are forgotten, and past `max_entries` keys the oldest
//! are forgotten first. Forgetting can only cause an extra send, never a suppression.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::rules::Severity;
use crate::sink::Outgoing;

/// One validated route: filters and the sinks (indices into the sink list) it picks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    /// Rule categories; empty = any.
    pub categories: Vec<String>,
    /// Least severity; `None` = any.
    pub min_severity: Option<Severity>,
    /// Actors (upper-case ISO codes); empty = any.
    pub actors: Vec<String>,
    /// Targets (upper-case ISO codes); any of the alert's targets may match; empty = any.
    pub targets: Vec<String>,
    /// Indices of the sinks this route delivers to.
    pub sinks: Vec<usize>,
    /// Keep evaluating later routes after this one matched.
    pub continue_matching: bool,
}

impl Route {
    /// Whether every filter of this route matches the alert.
    pub fn matches(&self, alert: &Outgoing) -> bool {
        let category =
            self.categories.is_empty() || self.categories.iter().any(|c| c == alert.category());
        let severity = match self.min_severity {
            None => true,
            Some(min) => Severity::parse(alert.severity()).is_some_and(|s| s >= min),
        };
        let actor = self.actors.is_empty()
            || alert
                .actor()
                .is_some_and(|a| self.actors.iter().any(|x| x.eq_ignore_ascii_case(a)));
        let targets: &[String] = match alert {
            Outgoing::Alert(a) => &a.targets,
            Outgoing::Escalation(e) => std::slice::from_ref(&e.target),
        };
        let target = self.targets.is_empty()
            || targets
                .iter()
                .any(|t| self.targets.iter().any(|x| x.eq_ignore_ascii_case(t)));
        category && severity && actor && target
    }
}

/// What a sink is for, which decides whether dedup applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkClass {
    /// Notifies people (webhook, Alertmanager): dedup applies.
    Notification,
    /// Keeps every alert (stdout, Kafka): dedup never applies.
    Archive,
}

/// Whether to send an alert to a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// Within the realert window of an alert already sent for the same key: count it,
    /// do not send it.
    Suppress,
}

/// One sink's share of an alert, as decided by [`Router::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index of the sink.
    pub sink: usize,
    /// Send or suppress.
    pub verdict: Verdict,
}

/// Picks the sinks of an alert (see the module docs for the semantics).
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
    classes: Vec<SinkClass>,
}

impl Router {
    /// A router over sinks of the given classes (index = sink index). Route sink indices
    /// must be smaller than `classes.len()`; larger ones are ignored.
    pub fn new(routes: Vec<Route>, classes: Vec<SinkClass>) -> Self {
        Self { routes, classes }
    }

    /// The routes, in evaluation order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Number of sinks this router knows.
    pub fn sink_count(&self) -> usize {
        self.classes.len()
    }

    /// The class of a sink.
    pub fn class(&self, sink: usize) -> Option<SinkClass> {
        self.classes.get(sink).copied()
    }

    /// Indices of the routes that match and are evaluated, in order (for
    /// `attache routes test`): evaluation stops after a matching route without
    /// `continue`.
    pub fn matching_routes(&self, alert: &Outgoing) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.matches(alert) {
                out.push(i);
                if !r.continue_matching {
                    break;
                }
            }
        }
        out
    }

    /// The sinks the alert goes to, each once, in the order first collected.
    pub fn sinks(&self, alert: &Outgoing) -> Vec<usize> {
        if self.routes.is_empty() {
            return (0..self.classes.len()).collect();
        }
        let mut out: Vec<usize> = Vec::new();
        for i in self.matching_routes(alert) {
            for &s in &self.routes[i].sinks {
                if s < self.classes.len() && !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Route the alert and apply dedup to the notification sinks among them. `now`
    /// is only used when the alert carries no parseable event time.
    /// Escalation alerts are never deduplicated: each is a change of level.
    pub fn decide(&self, alert: &Outgoing, dedup: &mut Dedup, now: DateTime<Utc>) -> Vec<Decision> {
        let t = event_time(alert, now);
        self.sinks(alert)
            .into_iter()
            .map(|sink| {
                let verdict = match self.class(sink) {
                    Some(SinkClass::Notification) if !alert.is_escalation() => {
                        dedup.check_at(sink, alert, t)
                    }
                    _ => Verdict::Send,
                };
                Decision { sink, verdict }
            })
            .collect()
    }
}

/// The alert's event time: the post's `created_at` (RFC 3339), else `fired_at`, else
/// `now`.
pub fn event_time(alert: &Outgoing, now: DateTime<Utc>) -> DateTime<Utc> {
    let parse = |s: Option<&str>| {
        s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    parse(alert.event_time())
        .or_else(|| parse(alert.fired_at()))
        .unwrap_or(now)
}

/// What makes two alerts "the same" for dedup: sink, rule, actor and first target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// Sink index.
    pub sink: usize,
    /// Rule id.
    pub rule: String,
    /// Actor, if any.
    pub actor: Option<String>,
    /// First target, if any.
    pub target: Option<String>,
}

impl DedupKey {
    /// The key of an alert on a sink.
    pub fn of(sink: usize, alert: &Outgoing) -> Self {
        Self {
            sink,
            rule: alert.rule_id(),
            actor: alert.actor().map(str::to_string),
            target: alert.target().map(str::to_string),
        }
    }
}

/// Default bound on remembered keys: 100k keys of a few dozen bytes each stay within
/// a few tens of MB even with long rule ids.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// The realert window state (see the module docs). Not thread-safe by design: one
/// route loop owns it.
#[derive(Debug, Clone)]
pub struct Dedup {
    window_ms: i64,
    max_entries: usize,
    /// Key → (event time of its last send in ms, sequence number in `order`).
    last: HashMap<DedupKey, (i64, u64)>,
    /// (event time, sequence) → key, oldest first, for eviction.
    order: BTreeMap<(i64, u64), DedupKey>,
    seq: u64,
    newest: Option<i64>,
}

impl Dedup {
    /// A window of `window` (zero disables dedup: everything is sent) remembering at most
    /// `max_entries` keys (at least one).
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            max_entries: max_entries.max(1),
            last: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            newest: None,
        }
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Decide for an alert on a sink, at its [`event_time`] (`now` as the last resort).
    pub fn check(&mut self, sink: usize, alert: &Outgoing, now: DateTime<Utc>) -> Verdict {
        self.check_at(sink, alert, event_time(alert, now))
    }

    /// Decide for an alert on a sink at a given event time.
    pub fn check_at(&mut self, sink: usize, alert: &Outgoing, t: DateTime<Utc>) -> Verdict {
        self.observe(DedupKey::of(sink, alert), t.timestamp_millis())
    }

    /// Decide for a key at an event time in Unix milliseconds, and remember the send.
    pub fn observe(&mut self, key: DedupKey, t_ms: i64) -> Verdict {
        if self.window_ms == 0 {
            return Verdict::Send;
        }
        let newest = self.newest.map_or(t_ms, |n| n.max(t_ms));
        self.newest = Some(newest);
        self.evict_older_than(newest.saturating_sub(self.window_ms));
        if let Some(&(last, seq)) = self.last.get(&key) {
            if t_ms.abs_diff(last) <= self.window_ms.unsigned_abs() {
                return Verdict::Suppress;
            }
            if t_ms < last {
                // An out-of-order event from before the window of the last send: send it,
                // but keep the later send as the reference for what follows.
                return Verdict::Send;
            }
            self.order.remove(&(last, seq));
        }
        self.seq += 1;
        self.last.insert(key.clone(), (t_ms, self.seq));
        self.order.insert((t_ms, self.seq), key);
        while self.last.len() > self.max_entries {
            self.evict_first();
        }
        Verdict::Send
    }

    fn evict_older_than(&mut self, cutoff: i64) {
        while self
            .order
            .first_key_value()
            .is_some_and(|((t, _), _)| *t < cutoff)
        {
            self.evict_first();
        }
    }

    fn evict_first(&mut self) {
        if let Some((_, key)) = self.order.pop_first() {
            self.last.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Alert, AlertAccount, AlertPost, AlertRule};
    use proptest::prelude::*;

    fn alert(
        category: &str,
        severity: &str,
        actor: Option<&str>,
        targets: &[&str],
        created_at: &str,
    ) -> Alert {
        Alert {
            schema: crate::alert::SCHEMA.into(),
            id: "id".into(),
            fired_at: None,
            rule: AlertRule {
                id: format!("{category}.rule"),
                title: "t".into(),
                category: category.into(),
                severity: severity.into(),
                tags: vec![],
            },
            actor: actor.map(String::from),
            targets: targets.iter().map(|s| s.to_string()).collect(),
            target_evidence: Vec::new(),
            score: 1.0,
            post: AlertPost {
                id: "p".into(),
                platform: Some("x".into()),
                url: None,
                created_at: Some(created_at.into()),
                lang: None,
                account: AlertAccount::default(),
                text: None,
            },
            evidence: vec![],
            source: None,
        }
    }

    fn route(
        categories: &[&str],
        min: Option<&str>,
        actors: &[&str],
        targets: &[&str],
        sinks: &[usize],
        cont: bool,
    ) -> Route {
        Route {
            categories: categories.iter().map(|s| s.to_string()).collect(),
            min_severity: min.and_then(Severity::parse),
            actors: actors.iter().map(|s| s.to_string()).collect(),
            targets: targets.iter().map(|s| s.to_string()).collect(),
            sinks: sinks.to_vec(),
            continue_matching: cont,
        }
    }

    const T0: &str = "2018-08-05T12:00:00Z";

    /// (name, route, alert, matches)
    #[rustfmt::skip]
    #[test]
    fn route_filters() {
        let png = || alert("persona_non_grata", "high", Some("SA"), &["CA", "DE"], T0);
        let cases: Vec<(&str, Route, Alert, bool)> = vec![
            ("no filters", route(&[], None, &[], &[], &[0], false), png(), true),
            ("category hit", route(&["sanctions", "persona_non_grata"], None, &[], &[], &[0], false), png(), true),
            ("category miss", route(&["sanctions"], None, &[], &[], &[0], false), png(), false),
            ("severity equal", route(&[], Some("high"), &[], &[], &[0], false), png(), true),
            ("severity above", route(&[], Some("medium"), &[], &[], &[0], false), png(), true),
            ("severity below", route(&[], Some("critical"), &[], &[], &[0], false), png(), false),
            ("unknown severity never passes", route(&[], Some("info"), &[], &[], &[0], false),
                alert("x", "weird", Some("SA"), &[], T0), false),
            ("actor case-insensitive", route(&[], None, &["sa"], &[], &[0], false), png(), true),
            ("actor miss", route(&[], None, &["CA"], &[], &[0], false), png(), false),
            ("no actor never passes", route(&[], None, &["SA"], &[], &[0], false),
                alert("x", "high", None, &["CA"], T0), false),
            ("second target matches", route(&[], None, &[], &["DE"], &[0], false), png(), true),
            ("target miss", route(&[], None, &[], &["US"], &[0], false), png(), false),
            ("all filters", route(&["persona_non_grata"], Some("high"), &["SA"], &["CA"], &[0], false), png(), true),
            ("one filter fails", route(&["persona_non_grata"], Some("high"), &["SA"], &["US"], &[0], false), png(), false),
        ];
        for (name, r, a, want) in cases {
            assert_eq!(r.matches(&crate::sink::Outgoing::from(a.clone())), want, "{name}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn first_match_and_continue() {
        let classes = vec![SinkClass::Notification; 4];
        let png = alert("persona_non_grata", "high", Some("SA"), &["CA"], T0);
        let sanc = alert("sanctions", "low", Some("US"), &["IR"], T0);
        // (name, routes, alert, expected sinks, expected routes)
        type Case<'a> = (&'a str, Vec<Route>, &'a Alert, Vec<usize>, Vec<usize>);
        let cases: Vec<Case> = vec![
            ("no routes: every sink", vec![], &png, vec![0, 1, 2, 3], vec![]),
            ("first match wins",
                vec![route(&["persona_non_grata"], None, &[], &[], &[1], false), route(&[], None, &[], &[], &[2], false)],
                &png, vec![1], vec![0]),
            ("fall through to catch-all",
                vec![route(&["persona_non_grata"], None, &[], &[], &[1], false), route(&[], None, &[], &[], &[2], false)],
                &sanc, vec![2], vec![1]),
            ("continue adds sinks, once each",
                vec![
                    route(&[], Some("high"), &[], &[], &[0, 1], true),
                    route(&["persona_non_grata"], None, &[], &[], &[1, 3], false),
                    route(&[], None, &[], &[], &[2], false),
                ],
                &png, vec![0, 1, 3], vec![0, 1]),
            ("continue on a non-match does nothing",
                vec![route(&[], Some("high"), &[], &[], &[0], true), route(&[], None, &[], &[], &[2], false)],
                &sanc, vec![2], vec![1]),
            ("no match: nowhere",
                vec![route(&["sanctions"], None, &[], &[], &[0], false)],
                &png, vec![], vec![]),
            ("out-of-range sink ignored",
                vec![route(&[], None, &[], &[], &[7, 0], false)],
                &png, vec![0], vec![0]),
        ];
        for (name, routes, a, sinks, matched) in cases {
            let r = Router::new(routes, classes.clone());
            assert_eq!(r.sinks(&crate::sink::Outgoing::from(a.clone())), sinks, "{name}");
            assert_eq!(r.matching_routes(&crate::sink::Outgoing::from(a.clone())), matched, "{name}");
        }
    }

    #[test]
    fn event_time_falls_back() {
        let now: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let mut a = alert("c", "high", None, &[], "2018-08-05T12:00:00+02:00");
        assert_eq!(
            event_time(&crate::sink::Outgoing::from(a.clone()), now).to_rfc3339(),
            "2018-08-05T10:00:00+00:00"
        );
        a.post.created_at = Some("yesterday".into());
        a.fired_at = Some("2020-01-01T00:00:00Z".into());
        assert_eq!(
            event_time(&crate::sink::Outgoing::from(a.clone()), now).to_rfc3339(),
            "2020-01-01T00:00:00+00:00"
        );
        a.fired_at = None;
        assert_eq!(
            event_time(&crate::sink::Outgoing::from(a.clone()), now),
            now
        );
    }

    fn key(k: u8) -> DedupKey {
        DedupKey {
            sink: 0,
            rule: format!("r{k}"),
            actor: Some("SA".into()),
            target: Some("CA".into()),
        }
    }

    /// (name, window ms, events (key, t ms), expected verdicts)
    #[rustfmt::skip]
    #[test]
    fn dedup_table() {
        use Verdict::{Send as S, Suppress as X};
        type Case<'a> = (&'a str, u64, Vec<(u8, i64)>, Vec<Verdict>);
        let cases: Vec<Case> = vec![
            ("same key within window", 1000, vec![(0, 0), (0, 500), (0, 1000)], vec![S, X, X]),
            ("window is measured from the last send", 1000, vec![(0, 0), (0, 900), (0, 1800), (0, 2100)], vec![S, X, S, X]),
            ("other keys are independent", 1000, vec![(0, 0), (1, 10), (0, 20), (1, 30)], vec![S, S, X, X]),
            ("just past the window", 1000, vec![(0, 0), (0, 1001)], vec![S, S]),
            ("out of order within window", 1000, vec![(0, 5000), (0, 4500)], vec![S, X]),
            ("out of order before window", 1000, vec![(0, 5000), (0, 3000), (0, 5500)], vec![S, S, X]),
            ("zero window sends all", 0, vec![(0, 0), (0, 0)], vec![S, S]),
        ];
        for (name, w, events, want) in cases {
            let mut d = Dedup::new(Duration::from_millis(w), 100);
            let got: Vec<Verdict> = events.iter().map(|&(k, t)| d.observe(key(k), t)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn dedup_per_sink_and_archive_sinks_keep_all() {
        let routes = vec![];
        let r = Router::new(
            routes,
            vec![
                SinkClass::Notification,
                SinkClass::Notification,
                SinkClass::Archive,
            ],
        );
        let mut d = Dedup::new(Duration::from_secs(3600), 100);
        let now = Utc::now();
        let a = alert("c", "high", Some("SA"), &["CA"], T0);
        let first: Vec<Verdict> = r
            .decide(&crate::sink::Outgoing::from(a.clone()), &mut d, now)
            .iter()
            .map(|x| x.verdict)
            .collect();
        assert_eq!(first, vec![Verdict::Send; 3]);
        let again: Vec<Verdict> = r
            .decide(&crate::sink::Outgoing::from(a.clone()), &mut d, now)
            .iter()
            .map(|x| x.verdict)
            .collect();
        assert_eq!(
            again,
            vec![Verdict::Suppress, Verdict::Suppress, Verdict::Send]
        );
        // A different first target is a different key.
        let b = alert("c", "high", Some("SA"), &["DE", "CA"], T0);
        assert!(r
            .decide(&crate::sink::Outgoing::from(b.clone()), &mut d, now)
            .iter()
            .all(|x| x.verdict == Verdict::Send));
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let mut d = Dedup::new(Duration::from_millis(1000), 10);
        for k in 0..100u8 {
            d.observe(key(k), 0);
        }
        assert_eq!(d.len(), 10);
        // Old entries go once the newest event time moves past the window.
        d.observe(key(200), 10_000);
        assert_eq!(d.len(), 1);
        assert_eq!(d.order.len(), d.last.len());
    }

    proptest! {
        /// Two alerts of one key more than the window apart are both sent.
        #[test]
        fn prop_far_apart_both_sent(w in 0u64..10_000, t in -1_000_000i64..1_000_000, gap in 1i64..1_000_000, rev in any::<bool>()) {
            let mut d = Dedup::new(Duration::from_millis(w), 1000);
            let (a, b) = (t, t + w as i64 + gap);
            let (first, second) = if rev { (b, a) } else { (a, b) };
            prop_assert_eq!(d.observe(key(0), first), Verdict::Send);
            prop_assert_eq!(d.observe(key(0), second), Verdict::Send);
        }

        /// Every suppressed alert has a sent alert of the same key within the window
        /// (so dedup never suppresses an alert whose event time is more than the window
        /// away from every alert sent for its key), whatever the order and the cap.
        #[test]
        fn prop_suppression_has_a_witness(
            w in 1u64..3_000,
            cap in 1usize..8,
            events in prop::collection::vec((0u8..4, 0i64..20_000), 1..200),
        ) {
            let mut d = Dedup::new(Duration::from_millis(w), cap);
            let mut sent: Vec<(u8, i64)> = Vec::new();
            for (k, t) in events {
                match d.observe(key(k), t) {
                    Verdict::Send => sent.push((k, t)),
                    Verdict::Suppress => prop_assert!(
                        sent.iter().any(|&(sk, st)| sk == k && st.abs_diff(t) <= w),
                        "suppressed ({k}, {t}) without a sent alert within {w} ms"
                    ),
                }
                prop_assert!(d.len() <= cap);
            }
        }
    }
}
