//! Sources: where posts come from. Each source sends [`Envelope`]s into a bounded
//! channel (so a slow pipeline pauses it) and stops when told to.
//!
//! * bundled sample stream (the embedded default) and JSON-lines files or stdin: [`lines`]
//! * a Kafka consumer group: [`kafka`] (offsets tracked by [`offsets`])

pub mod kafka;
pub mod lines;
pub mod offsets;

use std::time::SystemTime;

use crate::alert::SourceRef;

/// One message as read, before decoding.
pub struct Envelope {
    /// The raw bytes (for an oversize line read from a file, only its head).
    pub payload: Vec<u8>,
    /// Full size when the reader cut the payload short (oversize line).
    pub oversize: Option<usize>,
    /// Where it came from.
    pub origin: SourceRef,
    /// Ingest time: the Kafka message timestamp, else when it was read.
    pub ingest: SystemTime,
    /// Called once every alert of this message was accepted by every sink (or the
    /// message was dead-lettered): lets the source commit past it.
    pub ack: Option<Ack>,
}

/// Completion callback of one message.
pub type Ack = Box<dyn FnOnce() + Send + 'static>;

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("origin", &self.origin)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

impl Envelope {
    /// `file:line` or `topic/partition@offset`, for logs.
    pub fn origin_label(&self) -> String {
        match &self.origin {
            SourceRef::File { file, line } => format!("{file}:{line}"),
            SourceRef::Kafka {
                topic,
                partition,
                offset,
            } => format!("{topic}/{partition}@{offset}"),
        }
    }
}
