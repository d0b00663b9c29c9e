//! The stdout sink: one alert per line, JSON, flushed per alert so a pipe sees it
//! at once.

use std::io::Write;

use tokio::sync::mpsc;

use super::{Delivery, Outcome};
use crate::telemetry::Metrics;

/// Write every alert to stdout until the channel closes.
pub async fn run(mut rx: mpsc::Receiver<Delivery>, metrics: Metrics) {
    let stdout = std::io::stdout();
    while let Some(d) = rx.recv().await {
        let t = std::time::Instant::now();
        let mut out = stdout.lock();
        let ok = serde_json::to_writer(&mut out, &*d.alert).is_ok()
            && out.write_all(b"\n").is_ok()
            && out.flush().is_ok();
        drop(out);
        let outcome = if ok { "delivered" } else { "error" };
        metrics
            .deliveries
            .with_label_values(&["stdout", outcome])
            .inc();
        metrics
            .delivery_seconds
            .with_label_values(&["stdout"])
            .observe(t.elapsed().as_secs_f64());
        if !ok {
            tracing::error!("stdout is closed; alerts printed there are lost from this point");
        }
        // Stdout has no retry: an alert that could not be printed is counted as an error
        // but must not stall the other sinks.
        let _ = d.done.send(Outcome::Delivered);
    }
}
