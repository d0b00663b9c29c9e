//! `attache scan`: JSON-lines posts in, per-post alerts out, one per line, never
//! deduplicated. Streams with constant memory; undecodable lines become dead letters.

use std::io::{self, BufRead, Write};

use serde::Serialize;

use crate::alert::{self, SourceRef};
use crate::decode::{decode, DecodeError, DecodeReason, Limits};
use crate::lines::{Line, LineReader};
use crate::rules::{Matcher, RuleSet};

/// Options of one scan.
#[derive(Debug, Clone)]
pub struct Options {
    /// Add the matched lists and the rule's location to each alert.
    pub explain: bool,
    /// Decode limits.
    pub limits: Limits,
    /// Name recorded as `source.file`.
    pub name: String,
}

/// Counts of one scan.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Lines read.
    pub lines: u64,
    /// Posts decoded.
    pub posts: u64,
    /// Alerts written.
    pub alerts: u64,
    /// Lines written to the dead letters.
    pub dead_letters: u64,
}

/// A dead letter for a line that could not be decoded.
#[derive(Debug, Serialize)]
pub struct DeadLine<'a> {
    /// 1-based line number.
    pub line: u64,
    /// Input name.
    pub file: &'a str,
    /// Bounded reason label.
    pub reason: &'static str,
    /// Parser message.
    pub error: &'a str,
    /// Size of the line in bytes.
    pub size: usize,
    /// Whether `raw` is cut short.
    pub truncated: bool,
    /// The line (invalid UTF-8 replaced), at most [`RAW_MAX`] bytes of it.
    pub raw: String,
}

/// Most bytes of a bad line copied into its dead letter.
pub const RAW_MAX: usize = 64 * 1024;

#[derive(Serialize)]
struct Explained<'a> {
    #[serde(flatten)]
    alert: &'a alert::Alert,
    explain: Explain<'a>,
}

#[derive(Serialize)]
struct Explain<'a> {
    rule_file: String,
    rule_line: u64,
    lists: Vec<&'a str>,
}

/// Scan `input` and write alerts to `out`, dead letters to `dead`.
pub fn scan<R: BufRead>(
    rules: &RuleSet,
    input: R,
    out: &mut dyn Write,
    dead: &mut dyn Write,
    opts: &Options,
) -> io::Result<Stats> {
    let mut stats = Stats::default();
    let mut reader = LineReader::new(input, opts.limits.max_bytes);
    let mut matcher = Matcher::new();
    let mut matches = Vec::new();
    while let Some((n, line)) = reader.next_line()? {
        stats.lines += 1;
        let bytes = match line {
            Line::Ok(b) => b,
            Line::Oversize { head, size } => {
                let e = DecodeError::new(
                    DecodeReason::Oversize,
                    format!(
                        "{size} bytes exceeds the limit of {} bytes",
                        opts.limits.max_bytes
                    ),
                );
                write_dead(dead, &opts.name, n, &e, head, size)?;
                stats.dead_letters += 1;
                continue;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue; // blank lines separate nothing; not an error in a file
        }
        let post = match decode(bytes, &opts.limits) {
            Ok(p) => p,
            Err(e) => {
                write_dead(dead, &opts.name, n, &e, bytes, bytes.len())?;
                stats.dead_letters += 1;
                continue;
            }
        };
        stats.posts += 1;
        matches.clear();
        matcher.match_post(rules, &post, &mut matches);
        if matches.is_empty() {
            continue;
        }
        let fired_at = alert::event_time(&post).map(alert::rfc3339);
        for m in &matches {
            let a = alert::build(
                rules,
                m,
                &post,
                fired_at.clone(),
                Some(SourceRef::File {
                    file: opts.name.clone(),
                    line: n,
                }),
            );
            if opts.explain {
                let rule = &rules.rules[m.rule];
                let mut lists: Vec<&str> = m.evidence.iter().map(|e| e.list.as_str()).collect();
                lists.dedup();
                let x = Explained {
                    alert: &a,
                    explain: Explain {
                        rule_file: rule.file.display().to_string(),
                        rule_line: rule.line,
                        lists,
                    },
                };
                serde_json::to_writer(&mut *out, &x)?;
            } else {
                serde_json::to_writer(&mut *out, &a)?;
            }
            out.write_all(b"\n")?;
            stats.alerts += 1;
        }
    }
    out.flush()?;
    dead.flush()?;
    Ok(stats)
}

fn write_dead(
    dead: &mut dyn Write,
    file: &str,
    line: u64,
    e: &DecodeError,
    raw: &[u8],
    size: usize,
) -> io::Result<()> {
    let cut = &raw[..raw.len().min(RAW_MAX)];
    let d = DeadLine {
        line,
        file,
        reason: e.reason.as_str(),
        error: &e.detail,
        size,
        truncated: cut.len() < size,
        raw: String::from_utf8_lossy(cut).into_owned(),
    };
    serde_json::to_writer(&mut *dead, &d)?;
    dead.write_all(b"\n")
}
