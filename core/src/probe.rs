//! Environment probes: a task per environment with a `probe` command, reporting each result to
//! the engine, which decides availability (after `probe_failures` failures in a row).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::EnvironmentConfig;
use crate::engine::ProbeResult;

/// Longest a single probe may run.
const MAX_PROBE_TIME: Duration = Duration::from_secs(30);

/// Starts one probe task per environment that has a probe; they stop with `stop`.
pub(crate) fn spawn_probes(
    envs: &[Arc<EnvironmentConfig>],
    results: &mpsc::UnboundedSender<ProbeResult>,
    stop: &CancellationToken,
) {
    for (index, env) in envs.iter().enumerate() {
        let Some(command) = env.probe.clone() else { continue };
        let (interval, results, stop) = (env.probe_interval, results.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let result = tokio::select! {
                    r = run_probe(&command, interval.clamp(Duration::from_secs(1), MAX_PROBE_TIME)) => r,
                    () = stop.cancelled() => break,
                };
                if results.send(ProbeResult { environment: index, result }).is_err() {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = stop.cancelled() => break,
                }
            }
        });
    }
}

/// Runs a probe command; `Err` carries a short reason (exit status and last stderr line).
pub async fn run_probe(command: &str, timeout: Duration) -> Result<(), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("probe could not start: {e}"))?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
    let mut stderr = child.stderr.take();
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(err) = stderr.as_mut() {
            let _ = err.take(8192).read_to_end(&mut buf).await;
        }
        buf
    };
    let waited = tokio::time::timeout(timeout, async { tokio::join!(child.wait(), read_err) }).await;
    let Ok((status, err)) = waited else {
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let _ = child.wait().await;
        return Err(format!("probe timed out after {}", humantime::format_duration(timeout)));
    };
    let status = status.map_err(|e| format!("probe failed: {e}"))?;
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&err);
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let last = crate::sanitize::inert(last);
    let code = status.code().map_or_else(|| "a signal".to_owned(), |c| format!("status {c}"));
    Err(if last.is_empty() { format!("probe exited with {code}") } else { format!("probe exited with {code}: {last}") })
}
