//! JSON-lines sources: a bundled sample stream, a file, or stdin. Reading happens on a
//! blocking thread and feeds the pipeline's bounded channel.

use std::io::{BufRead, BufReader, Cursor};
use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};

use super::Envelope;
use crate::alert::SourceRef;
use crate::lines::{Line, LineReader};

/// Which JSON-lines input.
#[derive(Debug, Clone)]
pub enum LinesInput {
    /// A stream bundled in the binary: (name, content).
    Sample(String, &'static str),
    /// A file.
    File(PathBuf),
    /// Standard input.
    Stdin,
}

impl LinesInput {
    /// Name recorded in alerts' `source.file`.
    pub fn name(&self) -> String {
        match self {
            Self::Sample(n, _) => format!("embedded:{n}"),
            Self::File(p) => p.display().to_string(),
            Self::Stdin => "-".into(),
        }
    }

    /// Read every line into `tx` until the end or `stop`. Returns lines read.
    /// Runs on a blocking thread.
    pub fn run_blocking(
        self,
        max_bytes: usize,
        tx: mpsc::Sender<Envelope>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<u64> {
        let name = self.name();
        let reader: Box<dyn BufRead> = match self {
            Self::Sample(_, c) => Box::new(Cursor::new(c.as_bytes())),
            Self::File(p) => Box::new(BufReader::with_capacity(1 << 16, std::fs::File::open(&p)?)),
            Self::Stdin => Box::new(BufReader::with_capacity(1 << 16, std::io::stdin())),
        };
        let mut r = LineReader::new(reader, max_bytes);
        let mut n = 0;
        while let Some((line, l)) = r.next_line()? {
            if *stop.borrow() {
                break;
            }
            let (payload, oversize) = match l {
                Line::Ok(b) if b.iter().all(u8::is_ascii_whitespace) => continue,
                Line::Ok(b) => (b.to_vec(), None),
                Line::Oversize { head, size } => {
                    (head[..head.len().min(64 * 1024)].to_vec(), Some(size))
                }
            };
            let env = Envelope {
                payload,
                oversize,
                origin: SourceRef::File {
                    file: name.clone(),
                    line,
                },
                ingest: SystemTime::now(),
                ack: None,
            };
            if tx.blocking_send(env).is_err() {
                break; // the pipeline is shutting down
            }
            n += 1;
        }
        Ok(n)
    }
}
