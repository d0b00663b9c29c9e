//! Run the examples embedded in rule files: every `match` example must make its rule
//! fire, every `no_match` example must not. This is `attache test`, and hot reload
//! runs it too before swapping a rule set in.

use std::path::PathBuf;

use super::{Matcher, RuleSet};
use crate::decode::{decode, Limits};

/// One example that did not behave as its rule says.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Rule file.
    pub file: PathBuf,
    /// Line of the example.
    pub line: u64,
    /// Column of the example.
    pub column: u64,
    /// Rule id.
    pub rule: String,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: rule `{}`: {}",
            self.file.display(),
            self.line,
            self.column,
            self.rule,
            self.message
        )
    }
}

/// Outcome of running all examples.
#[derive(Debug, Default)]
pub struct Report {
    /// Examples run.
    pub run: usize,
    /// Examples that passed.
    pub passed: usize,
    /// Rules without any example.
    pub rules_without_examples: Vec<String>,
    /// Failures, in file order.
    pub failures: Vec<Failure>,
}

/// Run every example of every rule in `rules` (disabled rules included: their
/// examples are evaluated as if they were enabled).
pub fn run(rules: &RuleSet) -> Report {
    let mut report = Report::default();
    let mut m = Matcher::new();
    let mut fired = Vec::new();
    for rule in &rules.rules {
        if rule.examples_match.is_empty() && rule.examples_no_match.is_empty() {
            report.rules_without_examples.push(rule.id.clone());
        }
        let cases = rule
            .examples_match
            .iter()
            .map(|e| (e, true))
            .chain(rule.examples_no_match.iter().map(|e| (e, false)));
        for (ex, want) in cases {
            report.run += 1;
            let mut post = match decode(ex.json.as_bytes(), &Limits::default()) {
                Ok(p) => p,
                Err(e) => {
                    report.failures.push(Failure {
                        file: rule.file.clone(),
                        line: ex.line,
                        column: ex.column,
                        rule: rule.id.clone(),
                        message: format!("example does not decode: {e}"),
                    });
                    continue;
                }
            };
            rules.registry.enrich(&mut post);
            fired.clear();
            m.match_post_including_disabled(rules, &post, &mut fired, &rule.id);
            let got = fired.iter().any(|f| rules.rules[f.rule].id == rule.id);
            if got == want {
                report.passed += 1;
            } else {
                let short: String = ex.label.chars().take(100).collect();
                report.failures.push(Failure {
                    file: rule.file.clone(),
                    line: ex.line,
                    column: ex.column,
                    rule: rule.id.clone(),
                    message: if want {
                        format!("should match but does not: {short:?}")
                    } else {
                        let ev: Vec<String> = fired
                            .iter()
                            .filter(|f| rules.rules[f.rule].id == rule.id)
                            .flat_map(|f| f.evidence.iter().map(|e| format!("{:?}", e.matched)))
                            .collect();
                        format!(
                            "should not match but does (evidence {}): {short:?}",
                            ev.join(", ")
                        )
                    },
                });
            }
        }
    }
    report
}
