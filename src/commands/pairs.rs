//! `attache pairs`: replay posts through the rules, the registry and the escalation
//! index, and print the levels each pair of states reached, with their evidence and
//! the timeline of escalation alerts. Event time throughout, so a replay of 2018
//! behaves as 2018 did; the same index a running instance serves on `/pairs`.

use std::fmt::Write as _;
use std::io::BufRead;

use crate::alert::{self, SourceRef};
use crate::decode::{decode, Limits};
use crate::escalation::{self, Escalation, Index, PairView, Settings};
use crate::lines::{Line, LineReader};
use crate::rules::{Matcher, RuleSet};

/// What a replay produced.
#[derive(Debug, Default)]
pub struct Replay {
    /// Posts read.
    pub posts: u64,
    /// Lines that did not decode.
    pub undecodable: u64,
    /// Per-post alerts raised.
    pub alerts: u64,
    /// Escalation alerts, in order.
    pub escalations: Vec<Escalation>,
    /// The index at the end.
    pub index: Index,
}

/// Replay one JSON-lines input (`name` labels its sources) into `into`.
pub fn replay<R: BufRead>(
    rules: &RuleSet,
    settings: &Settings,
    input: R,
    name: &str,
    limits: &Limits,
    into: &mut Replay,
) -> std::io::Result<()> {
    let mut reader = LineReader::new(input, limits.max_bytes);
    let mut matcher = Matcher::new();
    let mut matches = Vec::new();
    while let Some((n, line)) = reader.next_line()? {
        let Line::Ok(bytes) = line else {
            into.undecodable += 1;
            continue;
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(mut post) = decode(bytes, limits) else {
            into.undecodable += 1;
            continue;
        };
        into.posts += 1;
        let standing = rules.registry.enrich(&mut post);
        matches.clear();
        matcher.match_post(rules, &post, &mut matches);
        if matches.is_empty() {
            continue;
        }
        // Without an event time the post cannot be placed in the timeline.
        let Some(at) = alert::event_time(&post) else {
            continue;
        };
        let alerts: Vec<alert::Alert> = matches
            .iter()
            .map(|m| {
                alert::build(
                    rules,
                    m,
                    &post,
                    post.created_at.as_deref().map(str::to_string),
                    Some(SourceRef::File {
                        file: name.to_string(),
                        line: n,
                    }),
                )
            })
            .collect();
        into.alerts += alerts.len() as u64;
        let cs = escalation::contributions(
            &alerts,
            standing.tier,
            standing.entry.is_some(),
            at,
            settings,
        );
        for c in cs {
            into.escalations.extend(into.index.apply(c, settings, None));
        }
    }
    Ok(())
}

/// One line per escalation alert: time, kind, pair, level change, index, trigger post.
pub fn render_timeline(escalations: &[Escalation]) -> String {
    let mut out = String::new();
    for e in escalations {
        let change = match (&e.previous_level, &e.level) {
            (_, l) if e.kind == escalation::Kind::TitForTat => {
                format!("in kind (level {})", l.as_deref().unwrap_or("none"))
            }
            (p, l) => format!(
                "{} → {}",
                p.as_deref().unwrap_or("none"),
                l.as_deref().unwrap_or("none")
            ),
        };
        let posts: Vec<&str> = e
            .contributing
            .iter()
            .take(2)
            .map(|c| c.post_id.as_str())
            .collect();
        let _ = writeln!(
            out,
            "{}  {:<13} {}→{}  {:<20} index {:>6.2}  ({})",
            e.at,
            e.kind.as_str(),
            e.actor,
            e.target,
            change,
            e.index,
            posts.join(", ")
        );
    }
    out
}

/// The pairs table with each pair's evidence (at most `evidence` lines per pair).
pub fn render_pairs(pairs: &[PairView], evidence: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:>7}  {:<20}  evidence (newest first: post, category, weight → now)",
        "pair", "level", "index", "last event"
    );
    for p in pairs {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:>7.2}  {:<20}",
            format!("{}→{}", p.actor, p.target),
            p.level.as_deref().unwrap_or("-"),
            p.index,
            p.last_event.as_deref().unwrap_or("-"),
        );
        for c in p.evidence.iter().take(evidence) {
            let _ = writeln!(
                out,
                "{:>42}  {} {} {} {:+.2} → {:+.2}  {}",
                "",
                c.at,
                c.post_id,
                c.category,
                c.weight,
                c.current,
                c.rule_ids.join(",")
            );
        }
    }
    out
}
