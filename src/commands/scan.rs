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
    /// Matching threads (1 = all on the calling thread).
    pub threads: usize,
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

/// Most lines per chunk handed to a worker thread.
const CHUNK_LINES: usize = 512;
/// A chunk is closed once it holds this many bytes (a long line may take it over).
const CHUNK_BYTES: usize = 256 * 1024;

/// Lines for one worker: their bytes back to back, one allocation per chunk.
struct Chunk {
    data: Vec<u8>,
    lines: Vec<ChunkLine>,
}

/// One line of a [`Chunk`]: its number, its bytes in `data`, and its full size when it
/// was over the limit (then the bytes are its head).
struct ChunkLine {
    n: u64,
    start: usize,
    end: usize,
    oversize: Option<usize>,
}

/// Scan `input` and write alerts to `out`, dead letters to `dead`, in input order.
/// With `threads > 1`, chunks of lines are matched in parallel (memory stays bounded:
/// a few chunks per thread) and written back in order, so the output is the same.
pub fn scan<R: BufRead>(
    rules: &RuleSet,
    input: R,
    out: &mut dyn Write,
    dead: &mut dyn Write,
    opts: &Options,
) -> io::Result<Stats> {
    if opts.threads <= 1 {
        return scan_serial(rules, input, out, dead, opts);
    }
    let mut reader = LineReader::new(input, opts.limits.max_bytes);
    let mut stats = Stats::default();
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<(u64, Chunk)>(opts.threads * 2);
    let work_rx = std::sync::Mutex::new(work_rx);
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<(
        u64,
        io::Result<(Vec<u8>, Vec<u8>, Stats)>,
    )>(opts.threads * 2);
    std::thread::scope(|sc| -> io::Result<()> {
        for _ in 0..opts.threads {
            let (work_rx, done_tx) = (&work_rx, done_tx.clone());
            sc.spawn(move || {
                let mut w = Worker::new();
                loop {
                    let job = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((idx, chunk)) = job else { return };
                    let mut o = Vec::with_capacity(4096);
                    let mut d = Vec::new();
                    let mut st = Stats::default();
                    let r = chunk
                        .lines
                        .iter()
                        .try_for_each(|l| {
                            let bytes = &chunk.data[l.start..l.end];
                            w.line(rules, l.n, bytes, l.oversize, &mut o, &mut d, opts, &mut st)
                        })
                        .map(|()| (o, d, st));
                    if done_tx.send((idx, r)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        // Reader + writer on this thread: send chunks, write results in order.
        let mut pending = std::collections::BTreeMap::new();
        let (mut sent, mut next) = (0u64, 0u64);
        let mut eof = false;
        while !eof || next < sent {
            // Keep the workers fed, but never more than a few chunks ahead.
            while !eof && sent - next < (opts.threads * 3) as u64 {
                let mut chunk = Chunk {
                    data: Vec::with_capacity(CHUNK_BYTES),
                    lines: Vec::with_capacity(CHUNK_LINES),
                };
                while chunk.lines.len() < CHUNK_LINES && chunk.data.len() < CHUNK_BYTES {
                    let (n, bytes, oversize) = match reader.next_line()? {
                        None => {
                            eof = true;
                            break;
                        }
                        Some((n, Line::Ok(b))) => (n, b, None),
                        Some((n, Line::Oversize { head, size })) => (n, head, Some(size)),
                    };
                    let start = chunk.data.len();
                    chunk.data.extend_from_slice(bytes);
                    chunk.lines.push(ChunkLine {
                        n,
                        start,
                        end: chunk.data.len(),
                        oversize,
                    });
                }
                stats.lines += chunk.lines.len() as u64;
                if chunk.lines.is_empty() {
                    break;
                }
                if work_tx.send((sent, chunk)).is_err() {
                    return Err(io::Error::other("scan worker stopped"));
                }
                sent += 1;
            }
            if next == sent {
                break;
            }
            let (idx, r) = done_rx
                .recv()
                .map_err(|_| io::Error::other("scan worker stopped"))?;
            pending.insert(idx, r?);
            while let Some((o, d, st)) = pending.remove(&next) {
                out.write_all(&o)?;
                dead.write_all(&d)?;
                stats.posts += st.posts;
                stats.alerts += st.alerts;
                stats.dead_letters += st.dead_letters;
                next += 1;
            }
        }
        drop(work_tx);
        Ok(())
    })?;
    out.flush()?;
    dead.flush()?;
    Ok(stats)
}

fn scan_serial<R: BufRead>(
    rules: &RuleSet,
    input: R,
    out: &mut dyn Write,
    dead: &mut dyn Write,
    opts: &Options,
) -> io::Result<Stats> {
    let mut stats = Stats::default();
    let mut reader = LineReader::new(input, opts.limits.max_bytes);
    let mut w = Worker::new();
    while let Some((n, line)) = reader.next_line()? {
        stats.lines += 1;
        match line {
            Line::Ok(b) => w.line(rules, n, b, None, out, dead, opts, &mut stats)?,
            Line::Oversize { head, size } => {
                w.line(rules, n, head, Some(size), out, dead, opts, &mut stats)?
            }
        }
    }
    out.flush()?;
    dead.flush()?;
    Ok(stats)
}

/// Per-thread matching state.
struct Worker {
    matcher: Matcher,
    matches: Vec<crate::rules::RuleMatch>,
}

impl Worker {
    fn new() -> Self {
        Self {
            matcher: Matcher::new(),
            matches: Vec::new(),
        }
    }

    /// One input line: alerts to `out`, or a dead letter to `dead`.
    #[allow(clippy::too_many_arguments)]
    fn line(
        &mut self,
        rules: &RuleSet,
        n: u64,
        bytes: &[u8],
        oversize: Option<usize>,
        out: &mut dyn Write,
        dead: &mut dyn Write,
        opts: &Options,
        stats: &mut Stats,
    ) -> io::Result<()> {
        if let Some(size) = oversize {
            let e = DecodeError::new(
                DecodeReason::Oversize,
                format!(
                    "{size} bytes exceeds the limit of {} bytes",
                    opts.limits.max_bytes
                ),
            );
            stats.dead_letters += 1;
            return write_dead(dead, &opts.name, n, &e, bytes, size);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(()); // blank lines separate nothing; not an error in a file
        }
        let mut post = match decode(bytes, &opts.limits) {
            Ok(p) => p,
            Err(e) => {
                stats.dead_letters += 1;
                return write_dead(dead, &opts.name, n, &e, bytes, bytes.len());
            }
        };
        stats.posts += 1;
        rules.registry.enrich(&mut post);
        self.matches.clear();
        self.matcher.match_post(rules, &post, &mut self.matches);
        if self.matches.is_empty() {
            return Ok(());
        }
        let fired_at = alert::event_time(&post).map(alert::rfc3339);
        for m in &self.matches {
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
        Ok(())
    }
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
