//! Artifact retention: stored artifacts are content-addressed and shared, so they are removed
//! by a periodic sweep rather than with their deployment. An artifact stays while an
//! unfinished deployment needs it, or a deployment created within `storage.artifact_retention`
//! used it, or it was written within that period (an upload whose deployment is not committed
//! yet). A manual retry of an older deployment then fails with a clear reason.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::store::Store;

/// How often the sweep runs (and once at start).
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Removes the artifacts in `dir` that are not kept; returns how many were removed.
pub fn sweep(store: &dyn Store, dir: &Path, retention: Duration, now: DateTime<Utc>) -> std::io::Result<usize> {
    let since = now - TimeDelta::from_std(retention).unwrap_or(TimeDelta::MAX);
    let keep: HashSet<String> = store.artifacts_in_use(since).map_err(std::io::Error::other)?;
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) || keep.contains(name) {
            continue;
        }
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_none_or(|age| age < retention);
        if !recent && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Runs the sweep at start and then every hour until `stop`.
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    dir: std::path::PathBuf,
    retention: Duration,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let (store, dir, now) = (Arc::clone(&store), dir.clone(), clock.now());
            match tokio::task::spawn_blocking(move || sweep(&*store, &dir, retention, now)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(removed = n, "artifact retention: removed unused artifacts"),
                Ok(Err(e)) => tracing::warn!(error = %e, "artifact retention sweep failed"),
                Err(e) => tracing::warn!(error = %e, "artifact retention task failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(SWEEP_EVERY) => {}
                () = stop.cancelled() => break,
            }
        }
    });
}
