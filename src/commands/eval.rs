//! `attache eval LABELED.jsonl`: per-category precision, recall and F1 of the rules
//! on a labelled set, with every false positive and negative and the rule behind it.
//!
//! Reads the format of the development corpus: canonical posts with `labels` (a list
//! of categories; empty means negative). Posts marked `ambiguous` or `overlaps_dev`
//! are skipped, as `checks/score.py` does, so both agree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::BufRead;

use crate::decode::{decode, Limits};
use crate::rules::{Matcher, RuleSet};

/// The three default categories, always reported (others appear when labelled or fired).
pub const DEFAULT_CATEGORIES: [&str; 3] = ["sanctions", "persona_non_grata", "incendiary_imagery"];

/// Scores of one category.
#[derive(Debug, Clone, Default)]
pub struct Score {
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// False negatives.
    pub fn_: usize,
}

impl Score {
    /// Precision (0 when nothing was predicted).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    /// Recall (0 when nothing was labelled).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    /// F1.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// One misclassified post.
#[derive(Debug, Clone)]
pub struct Error {
    /// `FP` or `FN`.
    pub kind: &'static str,
    /// Category.
    pub category: String,
    /// Post id.
    pub id: String,
    /// Rules that fired (FP), or candidate rules and why they did not fire (FN).
    pub why: String,
    /// Start of the text.
    pub text: String,
}

/// The whole evaluation.
#[derive(Debug, Default)]
pub struct Report {
    /// Posts scored.
    pub posts: usize,
    /// Lines skipped (ambiguous, overlaps_dev, undecodable).
    pub skipped: usize,
    /// Per category.
    pub scores: BTreeMap<String, Score>,
    /// Misclassifications.
    pub errors: Vec<Error>,
}

/// Evaluate the rules on a labelled JSON-lines input.
pub fn evaluate<R: BufRead>(rules: &RuleSet, input: R) -> std::io::Result<Report> {
    let mut rep = Report::default();
    for c in DEFAULT_CATEGORIES {
        rep.scores.insert(c.into(), Score::default());
    }
    let mut m = Matcher::new();
    let mut fired = Vec::new();
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(serde_json::Value::Object(mut p)) = serde_json::from_str::<serde_json::Value>(&line)
        else {
            rep.skipped += 1;
            continue;
        };
        let truthy = |v: Option<&serde_json::Value>| {
            v.is_some_and(|v| !v.is_null() && v != &serde_json::Value::Bool(false))
        };
        if truthy(p.get("ambiguous")) || truthy(p.get("overlaps_dev")) {
            rep.skipped += 1;
            continue;
        }
        let gold: BTreeSet<String> = p
            .get("labels")
            .and_then(|l| l.as_array())
            .map(|l| {
                l.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        // The flat variant of labelled sets: `account` as a name, `image_caption`.
        if let Some(serde_json::Value::String(name)) = p.get("account").cloned() {
            let country = p.get("country").cloned().unwrap_or_default();
            p.insert(
                "account".into(),
                serde_json::json!({"name": name, "country": country}),
            );
        }
        if let Some(cap) = p.remove("image_caption") {
            p.insert(
                "media".into(),
                serde_json::json!([{"type": "image", "caption": cap}]),
            );
        }
        for k in [
            "labels",
            "target",
            "note",
            "paraphrase",
            "source",
            "date",
            "country",
            "relabel_note",
        ] {
            p.remove(k);
        }
        p.entry("platform").or_insert_with(|| "website".into());
        let json = serde_json::Value::Object(p).to_string();
        let mut post = match decode(json.as_bytes(), &Limits::default()) {
            Ok(p) => p,
            Err(_) => {
                rep.skipped += 1;
                continue;
            }
        };
        rep.posts += 1;
        rules.registry.enrich(&mut post);
        fired.clear();
        m.match_post(rules, &post, &mut fired);
        let mut pred: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in &fired {
            let r = &rules.rules[f.rule];
            let ev: Vec<String> = f
                .evidence
                .iter()
                .map(|e| format!("{:?}", e.matched))
                .collect();
            pred.entry(r.category.clone()).or_default().push(format!(
                "{} [{}]",
                r.id,
                ev.join(" ")
            ));
        }
        let cats: BTreeSet<String> = gold.iter().chain(pred.keys()).cloned().collect();
        for c in cats {
            let (g, q) = (gold.contains(&c), pred.contains_key(&c));
            let s = rep.scores.entry(c.clone()).or_default();
            match (g, q) {
                (true, true) => s.tp += 1,
                (false, true) => s.fp += 1,
                (true, false) => s.fn_ += 1,
                (false, false) => {}
            }
            if g != q {
                let why = if q {
                    pred[&c].join("; ")
                } else {
                    let traces = m.explain(rules, &post);
                    let v: Vec<String> = traces
                        .iter()
                        .filter(|t| rules.rules[t.rule].category == c)
                        .map(|t| format!("{}: {}", rules.rules[t.rule].id, t.verdict))
                        .collect();
                    if v.is_empty() {
                        "no rule of this category had its terms found".into()
                    } else {
                        v.join("; ")
                    }
                };
                rep.errors.push(Error {
                    kind: if q { "FP" } else { "FN" },
                    category: c,
                    id: post.id.to_string(),
                    why,
                    text: post
                        .text
                        .as_deref()
                        .unwrap_or("")
                        .chars()
                        .take(140)
                        .collect::<String>()
                        .replace('\n', " "),
                });
            }
        }
    }
    Ok(rep)
}

/// The table and the error list as text.
pub fn render(rep: &Report, errors: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20} {:>5} {:>5} {:>5} {:>7} {:>7} {:>7}",
        "category", "tp", "fp", "fn", "P", "R", "F1"
    );
    for (c, sc) in &rep.scores {
        let _ = writeln!(
            s,
            "{:<20} {:>5} {:>5} {:>5} {:>7.3} {:>7.3} {:>7.3}",
            c,
            sc.tp,
            sc.fp,
            sc.fn_,
            sc.precision(),
            sc.recall(),
            sc.f1()
        );
    }
    let _ = writeln!(
        s,
        "{} posts scored, {} lines skipped",
        rep.posts, rep.skipped
    );
    if errors && !rep.errors.is_empty() {
        let _ = writeln!(s);
        for e in &rep.errors {
            let _ = writeln!(
                s,
                "{} {} {}: {}\n    why: {}",
                e.kind, e.category, e.id, e.text, e.why
            );
        }
    }
    s
}
