//! Watches the rules directory and reloads on change (create, write, rename, delete,
//! and the `..data` symlink swap of a Kubernetes ConfigMap), debounced so a burst of
//! editor writes becomes one reload. Reloads compile off the hot path and swap
//! atomically; a broken file leaves the previous rules in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::pipeline::Shared;

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}: {source}", dir.display())]
pub struct WatchError {
    dir: PathBuf,
    source: notify::Error,
}

/// Watch `dir` until `stop`; reload `shared` after `debounce` of quiet following a change.
pub fn spawn(
    dir: PathBuf,
    debounce: Duration,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, WatchError> {
    // The notify callback runs on its own thread: it only pokes a channel.
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| WatchError {
        dir: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|source| WatchError {
            dir: dir.clone(),
            source,
        })?;
    tracing::info!(dir = %dir.display(), "watching rules for changes");
    Ok(tokio::spawn(async move {
        let _watcher = watcher; // dropped (and stopped) when the task ends
        loop {
            // Stop has priority over a pending change.
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                got = rx.recv() => if got.is_none() { return },
            }
            // Debounce: wait until no change arrives for `debounce`.
            loop {
                tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(debounce) => break,
                    _ = rx.recv() => continue,
                }
            }
            let _ = shared.reload("file change").await;
        }
    }))
}
