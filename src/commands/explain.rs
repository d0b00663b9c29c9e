//! `attache explain`: which rules fire on a post and why, with evidence spans.

use std::fmt::Write as _;

use serde_json::json;

use crate::decode::Post;
use crate::rules::{Matcher, RuleSet, Trace};

/// Evaluate `post` and return the traces of every candidate rule.
pub fn traces(rules: &RuleSet, post: &Post<'_>) -> Vec<Trace> {
    Matcher::new().explain(rules, post)
}

/// Human-readable report.
pub fn render_text(rules: &RuleSet, post: &Post<'_>, traces: &[Trace]) -> String {
    let mut s = String::new();
    let fired = traces.iter().filter(|t| t.fired).count();
    let _ = writeln!(
        s,
        "post {}: {} rule(s) fire, {} other candidate(s) considered",
        post.id,
        fired,
        traces.len() - fired
    );
    for t in traces {
        let r = &rules.rules[t.rule];
        let mark = if t.fired { "FIRES" } else { "no" };
        let _ = writeln!(
            s,
            "\n[{mark}] {} ({}, {}) — {}\n  defined at {}:{}\n  {}",
            r.id,
            r.category,
            r.severity,
            r.title,
            r.file.display(),
            r.line,
            t.verdict
        );
        for e in &t.evidence {
            let _ = writeln!(
                s,
                "  evidence {}[{}..{}] {:?} (list {})",
                e.field.path(),
                e.start,
                e.end,
                e.matched,
                e.list
            );
        }
        for (desc, ev) in &t.suppressed_by {
            let spans: Vec<String> = ev.iter().map(|e| format!("{:?}", e.matched)).collect();
            let _ = writeln!(s, "  suppressed by {desc}: {}", spans.join(", "));
        }
    }
    if traces.is_empty() {
        let _ = writeln!(s, "no rule's terms were found in this post");
    }
    s
}

/// JSON report (also served by `POST /explain`).
pub fn render_json(rules: &RuleSet, post: &Post<'_>, traces: &[Trace]) -> serde_json::Value {
    let ev = |e: &crate::rules::Evidence| json!({"field": e.field.path(), "start": e.start, "end": e.end, "matched": e.matched, "list": e.list});
    json!({
        "post": post.id,
        "rules_version": rules.version,
        "rules": traces.iter().map(|t| {
            let r = &rules.rules[t.rule];
            json!({
                "id": r.id, "category": r.category, "severity": r.severity.as_str(),
                "fired": t.fired, "verdict": t.verdict,
                "file": r.file.display().to_string(), "line": r.line,
                "evidence": t.evidence.iter().map(ev).collect::<Vec<_>>(),
                "suppressed_by": t.suppressed_by.iter().map(|(d, e)| json!({"exception": d, "evidence": e.iter().map(ev).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    })
}
