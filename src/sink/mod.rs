//! Sinks: where alerts go. A sink is a task that takes [`Delivery`]s from a bounded
//! channel and answers each with an [`Outcome`] once the alert is accepted for good
//! (or handed to the dead letters), so the pipeline can complete the source message.
//!
//! * [`stdout`]: JSON lines on standard output.

pub mod alertmanager;
pub mod config;
pub mod kafka;
pub mod stdout;
pub mod webhook;

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::alert::Alert;

/// One alert handed to one sink.
#[derive(Debug)]
pub struct Delivery {
    /// The alert.
    pub alert: Arc<Alert>,
    /// Answered when the sink is done with it.
    pub done: oneshot::Sender<Outcome>,
}

/// How a sink finished with an alert. Both count as accepted (DESIGN §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Delivered,
    /// Not deliverable; written to the dead letters.
    DeadLettered,
}
