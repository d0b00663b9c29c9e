//! Dead letters: where alerts go that a sink cannot deliver for good (DESIGN §8), and
//! `attache dlq replay`, which sends them again.
//!
//! A write returns only once the record is durable (appended and fsync'd), so a sink
//! may then answer the alert as accepted. Today the destination is a JSON-lines file;
//! [`Destination`] is an enum so a Kafka topic can join it.
//!
//! Record of a failed delivery, one JSON object per line:
//!
//! ```json
//! {"kind": "delivery", "sink": "oncall", "reason": "gave up after 8 attempts",
//!  "attempts": [{"attempt": 1, "at": "2018-08-05T23:01:10Z", "status": 500}, …],
//!  "alert": {…the alert of DESIGN §7…}, "at": "2018-08-05T23:05:12Z"}
//! ```
//!
//! Replay never modifies its input file: alerts that fail again are written to a new
//! dead-letter file (by default `<input stem>.replay-<unix time>.jsonl` beside the input,
//! see [`replay_output_path`]), so nothing is lost even if the replay itself is
//! interrupted. Once the report shows what you expect, delete the input by hand.
//! Replaying the same file twice re-sends what was delivered the first time;
//! receivers drop those by `webhook-id`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot};

use crate::sink::config::SinkSpec;
use crate::sink::Outgoing as Alert;
use crate::sink::{Delivery, Outcome};
use crate::telemetry::Metrics;

/// `kind` of a failed-delivery record.
pub const KIND_DELIVERY: &str = "delivery";

/// Where dead letters go, validated from `[dead_letter]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterSpec {
    /// A JSON-lines file.
    File(PathBuf),
}

/// One delivery attempt, as kept in a dead-letter record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: u32,
    /// When it started, RFC 3339 UTC.
    pub at: String,
    /// HTTP status, when the receiver answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Transport error (connection refused, timeout, …), when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The start of the receiver's answer body (at most 256 bytes), when not 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// A failed delivery, as written to the dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Always [`KIND_DELIVERY`].
    pub kind: String,
    /// The sink that gave up.
    pub sink: String,
    /// Why, in words.
    pub reason: String,
    /// Every attempt, in order (empty when none was made).
    pub attempts: Vec<Attempt>,
    /// The alert (per-post or escalation), whole.
    pub alert: Alert,
    /// When it was written, RFC 3339 UTC.
    pub at: String,
}

impl DeadLetter {
    /// A failed-delivery record stamped now.
    pub fn delivery(sink: &str, reason: String, attempts: Vec<Attempt>, alert: Alert) -> Self {
        Self {
            kind: KIND_DELIVERY.into(),
            sink: sink.into(),
            reason,
            attempts,
            alert,
            at: crate::alert::rfc3339(chrono::Utc::now()),
        }
    }
}

/// A cloneable handle to the dead-letter destination.
#[derive(Clone)]
pub struct DeadLetters {
    dest: Arc<Destination>,
}

/// The open destinations.
enum Destination {
    /// Appends to a file; the std mutex is only taken on a blocking thread, never
    /// across an `.await`.
    File {
        path: PathBuf,
        file: Arc<Mutex<std::fs::File>>,
    },
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.dest {
            Destination::File { path, .. } => {
                f.debug_struct("DeadLetters").field("file", path).finish()
            }
        }
    }
}

impl DeadLetters {
    /// Open the destination of a spec (creating the file and its parent directories).
    pub fn open(spec: &DeadLetterSpec) -> io::Result<Self> {
        match spec {
            DeadLetterSpec::File(p) => Self::file(p),
        }
    }

    /// Open (create) a JSON-lines file for appending. A last line cut short by a crash
    /// is terminated first, so the next record starts on its own line.
    pub fn file(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        if ends_without_newline(&mut file)? {
            file.write_all(b"\n")?;
            file.sync_data()?;
        }
        Ok(Self {
            dest: Arc::new(Destination::File {
                path: path.to_path_buf(),
                file: Arc::new(Mutex::new(file)),
            }),
        })
    }

    /// The file, for file destinations.
    pub fn path(&self) -> Option<&Path> {
        match &*self.dest {
            Destination::File { path, .. } => Some(path),
        }
    }

    /// Append a failed-delivery record; returns once it is durable.
    pub async fn write(&self, rec: &DeadLetter) -> io::Result<()> {
        self.write_value(rec).await
    }

    /// Append any record (e.g. an undecodable message); returns once it is durable.
    pub async fn write_value(&self, rec: &impl Serialize) -> io::Result<()> {
        let line = to_line(rec)?;
        match &*self.dest {
            Destination::File { file, .. } => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || append(&file, &line))
                    .await
                    .map_err(io::Error::other)?
            }
        }
    }

    /// [`Self::write_value`] for blocking threads (the process stage).
    pub fn write_value_blocking(&self, rec: &impl Serialize) -> io::Result<()> {
        let line = to_line(rec)?;
        match &*self.dest {
            Destination::File { file, .. } => append(file, &line),
        }
    }
}

fn to_line(rec: &impl Serialize) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(rec).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

fn append(file: &Mutex<std::fs::File>, line: &[u8]) -> io::Result<()> {
    // A panic while holding the lock cannot leave the file in a state worse than a cut
    // line, which `file()` repairs; keep going.
    let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
    f.write_all(line)?;
    f.sync_data()
}

fn ends_without_newline(file: &mut std::fs::File) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut b = [0u8; 1];
    file.read_exact(&mut b)?;
    Ok(b[0] != b'\n')
}

// ---------------------------------------------------------------------------------------
// Reading and replay.

/// One line of a dead-letter file.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A failed delivery.
    Delivery(Box<DeadLetter>),
    /// Another kind of dead letter (an undecodable message, …): not replayable.
    Other {
        /// Its `kind`, if it has one.
        kind: Option<String>,
    },
}

/// A line that is not a dead-letter record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// Parse one line (`None` for a blank line).
pub fn parse_line(line_no: u64, text: &str) -> Option<Result<Entry, BadLine>> {
    if text.trim().is_empty() {
        return None;
    }
    let bad = |message: String| BadLine {
        line: line_no,
        message,
    };
    let v: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(Err(bad(format!("not JSON: {e}")))),
    };
    let kind = v.get("kind").and_then(|k| k.as_str()).map(String::from);
    if kind.as_deref() != Some(KIND_DELIVERY) {
        return Some(Ok(Entry::Other { kind }));
    }
    Some(
        serde_json::from_value::<DeadLetter>(v)
            .map(|d| Entry::Delivery(Box::new(d)))
            .map_err(|e| bad(format!("not a delivery record: {e}"))),
    )
}

/// The records of a dead-letter file, in order (blocking reads; for tools and tests).
pub fn replay(path: &Path) -> io::Result<impl Iterator<Item = io::Result<Result<Entry, BadLine>>>> {
    let r = io::BufReader::new(std::fs::File::open(path)?);
    Ok(r.lines().enumerate().filter_map(|(i, l)| match l {
        Ok(text) => parse_line(i as u64 + 1, &text).map(Ok),
        Err(e) => Some(Err(e)),
    }))
}

/// Where [`replay_file`] should write what fails again, by default:
/// `<dir>/<stem>.replay-<unix seconds>.jsonl` beside the input.
pub fn replay_output_path(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dead-letters".into());
    let now = chrono::Utc::now().timestamp();
    input.with_file_name(format!("{stem}.replay-{now}.jsonl"))
}

/// How a replay went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Failed-delivery records read.
    pub records: u64,
    /// Delivered this time.
    pub delivered: u64,
    /// Written to the output dead letters again (failed again, or no such sink).
    pub dead_lettered: u64,
    /// Records of other kinds, left alone (they stay in the input file).
    pub skipped: u64,
    /// Lines that are not records (they stay in the input file).
    pub invalid: u64,
}

impl ReplayReport {
    /// Whether every record was delivered and every line understood.
    pub fn all_delivered(&self) -> bool {
        self.dead_lettered == 0 && self.invalid == 0
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} record(s): {} delivered, {} dead-lettered again, {} skipped (not deliveries), {} invalid line(s)",
            self.records, self.delivered, self.dead_lettered, self.skipped, self.invalid
        )
    }
}

/// Options of [`replay_file`].
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Send every record through this sink instead of the one that gave up on it.
    pub sink: Option<String>,
    /// Where records that fail again go. Must not be the input file.
    pub failed: DeadLetters,
    /// Alerts in flight at once (the sinks' own concurrency limits still apply).
    pub in_flight: usize,
}

/// Why a replay could not run. Records are never lost by an error: the input file is
/// only read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `--sink` names no configured sink.
    #[error("no sink is named {0:?} in the configuration")]
    UnknownSink(String),
    /// The output would be the input.
    #[error("{} is the file being replayed; write failures to another file", .0.display())]
    SameFile(PathBuf),
    /// A sink could not start.
    #[error("sink {sink}: {message}")]
    Spawn {
        /// The sink.
        sink: String,
        /// Why.
        message: String,
    },
    /// A record could not be written to the output dead letters; replay stopped there
    /// (the input still holds it).
    #[error("writing to the dead letters: {0}")]
    Write(io::Error),
}

/// Send every failed-delivery record of `path` again, through `opts.sink` or the
/// record's own sink, and report. Records that fail again, and records whose sink no
/// longer exists, go to `opts.failed`; the input is left as it is.
pub async fn replay_file(
    path: &Path,
    sinks: &[SinkSpec],
    opts: ReplayOptions,
    metrics: &Metrics,
) -> Result<ReplayReport, ReplayError> {
    if let Some(name) = &opts.sink {
        if !sinks.iter().any(|s| s.name == *name) {
            return Err(ReplayError::UnknownSink(name.clone()));
        }
    }
    if let Some(out) = opts.failed.path() {
        if same_file(path, out) {
            return Err(ReplayError::SameFile(out.to_path_buf()));
        }
    }
    let read_err = |source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(read_err)?;
    let mut lines = tokio::io::BufReader::new(file).lines();

    let mut running: HashMap<String, mpsc::Sender<Delivery>> = HashMap::new();
    let mut tasks = Vec::new();
    let mut pending: VecDeque<oneshot::Receiver<Outcome>> = VecDeque::new();
    let mut rep = ReplayReport::default();
    let in_flight = opts.in_flight.max(1);
    let mut line_no = 0u64;

    while let Some(text) = lines.next_line().await.map_err(read_err)? {
        line_no += 1;
        let rec = match parse_line(line_no, &text) {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping a line that is not a dead-letter record");
                rep.invalid += 1;
                continue;
            }
            Some(Ok(Entry::Other { .. })) => {
                rep.skipped += 1;
                continue;
            }
            Some(Ok(Entry::Delivery(d))) => d,
        };
        rep.records += 1;
        let name = opts.sink.clone().unwrap_or_else(|| rec.sink.clone());
        let Some(spec) = sinks.iter().find(|s| s.name == name) else {
            let reason = format!("replay: no sink is named {name:?} in the configuration");
            let again = DeadLetter::delivery(&name, reason, rec.attempts, rec.alert);
            opts.failed
                .write(&again)
                .await
                .map_err(ReplayError::Write)?;
            metrics.dead_letters.with_label_values(&["delivery"]).inc();
            rep.dead_lettered += 1;
            continue;
        };
        let tx = match running.get(&name) {
            Some(tx) => tx.clone(),
            None => {
                let h = spec
                    .spawn(opts.failed.clone(), metrics.clone())
                    .map_err(|e| ReplayError::Spawn {
                        sink: name.clone(),
                        message: e.to_string(),
                    })?;
                running.insert(name.clone(), h.tx.clone());
                tasks.push(h.task);
                h.tx
            }
        };
        let (done, wait) = oneshot::channel();
        let alert = Arc::new(rec.alert);
        if tx.send(Delivery { alert, done }).await.is_err() {
            return Err(ReplayError::Spawn {
                sink: name,
                message: "the sink stopped".into(),
            });
        }
        pending.push_back(wait);
        while pending.len() >= in_flight {
            if let Some(w) = pending.pop_front() {
                count(&mut rep, w.await)?;
            }
        }
    }
    while let Some(w) = pending.pop_front() {
        count(&mut rep, w.await)?;
    }
    drop(running);
    for t in tasks {
        let _ = t.await;
    }
    Ok(rep)
}

fn count(
    rep: &mut ReplayReport,
    r: Result<Outcome, oneshot::error::RecvError>,
) -> Result<(), ReplayError> {
    match r {
        Ok(Outcome::Delivered) => rep.delivered += 1,
        Ok(Outcome::DeadLettered) => rep.dead_lettered += 1,
        // A sink answers every alert; a dropped answer means it died, and the record
        // may not be anywhere but the input.
        Err(_) => {
            return Err(ReplayError::Spawn {
                sink: "?".into(),
                message:
                    "a sink stopped without answering; the input file still holds every record"
                        .into(),
            })
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::config::{sample_alert, SinksConfig};

    fn record(sink: &str, id: &str) -> DeadLetter {
        let mut a = sample_alert();
        a.id = id.into();
        DeadLetter::delivery(
            sink,
            "gave up".into(),
            vec![Attempt {
                attempt: 1,
                at: "2018-08-05T23:01:10Z".into(),
                status: Some(500),
                error: None,
                response: Some("oops".into()),
            }],
            a.into(),
        )
    }

    #[tokio::test]
    async fn write_creates_dirs_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/dl.jsonl");
        let dl = DeadLetters::file(&p).unwrap();
        dl.write(&record("s", "1")).await.unwrap();
        dl.write_value(&serde_json::json!({"kind": "decode", "raw": "x"}))
            .await
            .unwrap();
        dl.write(&record("s", "2")).await.unwrap();
        let got: Vec<_> = replay(&p).unwrap().map(|r| r.unwrap().unwrap()).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            Entry::Delivery(Box::new(record_with_at(&got[0], "s", "1")))
        );
        assert_eq!(
            got[1],
            Entry::Other {
                kind: Some("decode".into())
            }
        );
        let v: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&p).unwrap().lines().next().unwrap())
                .unwrap();
        assert_eq!(v["kind"], "delivery");
        assert_eq!(v["attempts"][0]["status"], 500);
        assert!(v["attempts"][0].get("error").is_none());
        assert_eq!(v["alert"]["id"], "1");
    }

    fn record_with_at(e: &Entry, sink: &str, id: &str) -> DeadLetter {
        let Entry::Delivery(d) = e else { panic!() };
        let mut r = record(sink, id);
        r.at = d.at.clone();
        r
    }

    #[tokio::test]
    async fn a_cut_last_line_is_terminated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dl.jsonl");
        std::fs::write(&p, "{\"kind\": \"deliv").unwrap();
        let dl = DeadLetters::file(&p).unwrap();
        dl.write(&record("s", "1")).await.unwrap();
        let got: Vec<_> = replay(&p).unwrap().map(|r| r.unwrap()).collect();
        assert!(got[0].is_err());
        assert!(matches!(got[1], Ok(Entry::Delivery(_))));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        assert!(parse_line(1, "  ").is_none());
        let e = parse_line(7, "nope").unwrap().unwrap_err();
        assert_eq!(e.line, 7);
        let e = parse_line(8, r#"{"kind": "delivery", "sink": 3}"#)
            .unwrap()
            .unwrap_err();
        assert!(e.message.contains("not a delivery record"), "{e}");
        assert_eq!(
            parse_line(9, r#"{"origin": "f:1"}"#).unwrap().unwrap(),
            Entry::Other { kind: None }
        );
    }

    #[tokio::test]
    async fn replay_to_stdout_sink_and_unknown_sinks_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("dl.jsonl");
        let dl = DeadLetters::file(&input).unwrap();
        dl.write(&record("printer", "1")).await.unwrap();
        dl.write(&record("gone", "2")).await.unwrap();
        dl.write_value(&serde_json::json!({"kind": "decode"}))
            .await
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .unwrap()
            .write_all(b"garbage\n")
            .unwrap();
        let before = std::fs::read(&input).unwrap();
        let plan =
            toml::from_str::<SinksConfig>("[[sinks]]\nname = \"printer\"\nkind = \"stdout\"\n")
                .unwrap()
                .validate(|_| None)
                .unwrap();
        let out = replay_output_path(&input);
        let failed = DeadLetters::file(&out).unwrap();
        let m = Metrics::new();
        let rep = replay_file(
            &input,
            &plan.sinks,
            ReplayOptions {
                sink: None,
                failed: failed.clone(),
                in_flight: 4,
            },
            &m,
        )
        .await
        .unwrap();
        assert_eq!(
            rep,
            ReplayReport {
                records: 2,
                delivered: 1,
                dead_lettered: 1,
                skipped: 1,
                invalid: 1
            }
        );
        assert!(!rep.all_delivered());
        assert_eq!(std::fs::read(&input).unwrap(), before, "input untouched");
        let again: Vec<_> = replay(&out).unwrap().map(|r| r.unwrap().unwrap()).collect();
        assert_eq!(again.len(), 1);
        let Entry::Delivery(d) = &again[0] else {
            panic!()
        };
        assert_eq!(d.alert.id(), "2");
        assert!(
            d.reason.contains("no sink is named \"gone\""),
            "{}",
            d.reason
        );

        // Errors before anything is sent.
        let same = ReplayOptions {
            sink: None,
            failed: DeadLetters::file(&input).unwrap(),
            in_flight: 1,
        };
        assert!(matches!(
            replay_file(&input, &plan.sinks, same, &m).await,
            Err(ReplayError::SameFile(_))
        ));
        let unknown = ReplayOptions {
            sink: Some("nope".into()),
            failed,
            in_flight: 1,
        };
        assert!(matches!(
            replay_file(&input, &plan.sinks, unknown, &m).await,
            Err(ReplayError::UnknownSink(_))
        ));
    }
}
