//! Running one configured command: `sh -c` in its own process group, output captured line by
//! line from both pipes, a timeout, and cancellation that kills the whole group.
//!
//! Kill protocol (cancel, timeout, shutdown): SIGTERM to the group, up to `kill_grace` for it to
//! go, then SIGKILL; each signal is logged. When the step's shell exits, anything it left in its
//! group (background children) is terminated the same way, and a grandchild that keeps the
//! output pipes open cannot keep the step running (case C04).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::logs::{Entry, Level, LogEvent, SharedLog, Stream, lock};
use crate::model::Phase;

/// Longest output line kept in one record; longer lines are split into several records, each
/// but the last marked `split` (case C06). Memory per pipe stays bounded by this.
pub const MAX_LINE: usize = 16 * 1024;
/// How long the pipes may stay open after the step's shell exited before its leftovers are
/// killed.
const PIPE_DRAIN: Duration = Duration::from_millis(300);

/// A command to run.
#[derive(Debug, Clone)]
pub struct StepCommand<'a> {
    pub name: &'a str,
    pub run: &'a str,
    pub cwd: &'a Path,
    /// Added to the inherited environment (the `TDS_*` variables).
    pub env: &'a [(String, String)],
    pub timeout: Duration,
    pub phase: Phase,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    Exited(i32),
    /// Killed by a signal it did not get from us.
    Signaled(i32),
    TimedOut,
    Cancelled,
    SpawnFailed(String),
}

impl StepEnd {
    /// Exit status 0.
    pub fn is_success(&self) -> bool {
        *self == StepEnd::Exited(0)
    }

    /// A sentence for error messages.
    pub fn describe(&self, what: &str) -> String {
        match self {
            StepEnd::Exited(0) => format!("{what} succeeded"),
            StepEnd::Exited(code) => format!("{what} exited with status {code}"),
            StepEnd::Signaled(sig) => format!("{what} was killed by signal {sig}"),
            StepEnd::TimedOut => format!("{what} timed out"),
            StepEnd::Cancelled => format!("{what} was cancelled"),
            StepEnd::SpawnFailed(e) => format!("{what} could not start: {e}"),
        }
    }
}

/// Runs a command to its end and reports how it ended. Output goes to `log`.
pub async fn run_step(
    cmd: &StepCommand<'_>,
    log: &SharedLog,
    cancel: &CancellationToken,
    kill_grace: Duration,
) -> StepEnd {
    if cancel.is_cancelled() {
        return StepEnd::Cancelled;
    }
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(cmd.run)
        .current_dir(cmd.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    for (k, v) in cmd.env {
        command.env(k, v);
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return StepEnd::SpawnFailed(e.to_string()),
    };
    let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw) else {
        return StepEnd::SpawnFailed("no process id".into());
    };
    let step: std::sync::Arc<str> = cmd.name.into();
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, Stream::Stdout, log.clone(), cmd.phase, step.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, Stream::Stderr, log.clone(), cmd.phase, step.clone())));
    }

    let deadline = Instant::now() + cmd.timeout;
    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => exit_to_end(s),
            Err(e) => StepEnd::SpawnFailed(e.to_string()),
        },
        () = tokio::time::sleep_until(deadline) => {
            note(log, cmd.phase, &step, Level::Warn, &format!("step timed out after {}", humantime::format_duration(cmd.timeout)));
            terminate_group(pgid, &mut child, kill_grace, log, cmd.phase, &step).await;
            StepEnd::TimedOut
        }
        () = cancel.cancelled() => {
            terminate_group(pgid, &mut child, kill_grace, log, cmd.phase, &step).await;
            StepEnd::Cancelled
        }
    };

    // The shell is gone. Give the pipes a moment to drain, then make sure nothing of the step's
    // group survives it, so that no background child outlives (or holds open) the step.
    let mut pumps = futures_join(pumps);
    if tokio::time::timeout(PIPE_DRAIN, &mut pumps).await.is_err() || group_alive(pgid) {
        if group_alive(pgid) {
            note(log, cmd.phase, &step, Level::Warn, "the step left processes behind; terminating its process group");
            terminate_group(pgid, &mut child, kill_grace, log, cmd.phase, &step).await;
        }
        if tokio::time::timeout(PIPE_DRAIN, &mut pumps).await.is_err() {
            // Something outside the group (it called setsid) still holds the pipes: stop reading.
            note(
                log,
                cmd.phase,
                &step,
                Level::Warn,
                "output pipes still open after the step ended; no longer reading them",
            );
            pumps.abort();
        }
    }
    end
}

fn exit_to_end(status: std::process::ExitStatus) -> StepEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => StepEnd::Exited(code),
        (None, Some(sig)) => StepEnd::Signaled(sig),
        (None, None) => StepEnd::Exited(-1),
    }
}

fn note(log: &SharedLog, phase: Phase, step: &str, level: Level, message: &str) {
    lock(log).write(&Entry {
        level,
        event: LogEvent::Signal,
        phase: Some(phase),
        step: Some(step),
        stream: None,
        message,
        split: false,
    });
}

/// Whether any live (non-zombie) process remains in the group. Zombies are ignored: a reaped
/// leader's children may linger as zombies under an init that reaps slowly, and they hold
/// nothing.
pub fn group_alive(pgid: Pid) -> bool {
    if killpg(pgid, None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return true };
    let target = pgid.as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let mut fields = rest.split(' ');
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        if pgrp == Some(target) && state != Some("Z") {
            return true;
        }
    }
    false
}

/// Process groups of an attempt's step processes that outlived a crashed tds, found by the
/// `TDS_DEPLOYMENT_ID` and `TDS_ATTEMPT` in their environment (so a reused pid of an unrelated
/// process is never matched). Processes that rewrote their environment are not found.
pub fn orphan_groups(deployment_id: &str, attempt: u32) -> Vec<Pid> {
    let want_id = format!("TDS_DEPLOYMENT_ID={deployment_id}");
    let want_attempt = format!("TDS_ATTEMPT={attempt}");
    let mut groups = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return groups };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if vars.contains(&want_id.as_bytes())
            && vars.contains(&want_attempt.as_bytes())
            && let Ok(pgid) = nix::unistd::getpgid(Some(Pid::from_raw(pid)))
            && !groups.contains(&pgid)
        {
            groups.push(pgid);
        }
    }
    groups
}

/// Kills orphaned process groups: SIGTERM, up to `grace`, then SIGKILL. Returns the groups.
pub async fn kill_orphans(deployment_id: &str, attempt: u32, grace: Duration) -> Vec<Pid> {
    let groups = orphan_groups(deployment_id, attempt);
    for pgid in &groups {
        let _ = killpg(*pgid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while groups.iter().any(|g| group_alive(*g)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pgid in &groups {
        if group_alive(*pgid) {
            let _ = killpg(*pgid, Signal::SIGKILL);
        }
    }
    groups
}

/// SIGTERM, up to `grace` for the group to go, then SIGKILL; reaps the leader.
async fn terminate_group(pgid: Pid, child: &mut Child, grace: Duration, log: &SharedLog, phase: Phase, step: &str) {
    if !group_alive(pgid) {
        let _ = child.wait().await;
        return;
    }
    note(log, phase, step, Level::Warn, &format!("sending SIGTERM to process group {pgid}"));
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(50), child.wait()).await;
        if !group_alive(pgid) {
            let _ = child.wait().await;
            note(log, phase, step, Level::Info, &format!("process group {pgid} ended after SIGTERM"));
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    note(
        log,
        phase,
        step,
        Level::Warn,
        &format!("process group {pgid} still running after {}; sending SIGKILL", humantime::format_duration(grace)),
    );
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait().await;
    for _ in 0..100 {
        if !group_alive(pgid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Joins the pump tasks; `abort` stops them.
struct Pumps(Vec<tokio::task::JoinHandle<()>>);

fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) -> Pumps {
    Pumps(handles)
}

impl Pumps {
    fn abort(&self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

impl std::future::Future for Pumps {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.0.retain_mut(|h| std::pin::Pin::new(h).poll(cx).is_pending());
        if self.0.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    }
}

/// The largest prefix of `bytes` no longer than `max` that does not cut a UTF-8 sequence.
fn split_point(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let mut at = max;
    // Back up over at most 3 continuation bytes to the start of a character.
    while at > max.saturating_sub(3) && at > 0 && (bytes[at] & 0b1100_0000) == 0b1000_0000 {
        at -= 1;
    }
    if at == 0 { max } else { at }
}

/// Reads a pipe to its end, writing one record per line. Invalid UTF-8 is replaced, long lines
/// are split at [`MAX_LINE`], and a last line without a newline is kept.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    log: SharedLog,
    phase: Phase,
    step: std::sync::Arc<str>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::with_capacity(MAX_LINE);
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut guard = lock(&log);
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            let room = MAX_LINE - pending.len();
            match memchr_newline(&chunk[..chunk.len().min(room + 1)]) {
                Some(i) if i <= room => {
                    pending.extend_from_slice(&chunk[..i]);
                    emit(&mut guard, &pending, stream, phase, &step, false);
                    pending.clear();
                    chunk = &chunk[i + 1..];
                }
                _ => {
                    let take = room.min(chunk.len());
                    pending.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if pending.len() >= MAX_LINE {
                        let cut = split_point(&pending, MAX_LINE);
                        emit(&mut guard, &pending[..cut], stream, phase, &step, true);
                        pending.drain(..cut);
                    }
                }
            }
        }
        let _ = guard.flush();
    }
    if !pending.is_empty() {
        let mut guard = lock(&log);
        emit(&mut guard, &pending, stream, phase, &step, false);
        let _ = guard.flush();
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

fn emit(log: &mut crate::logs::AttemptLog, line: &[u8], stream: Stream, phase: Phase, step: &str, split: bool) {
    let text = String::from_utf8_lossy(line);
    let level = if stream == Stream::Stderr { Level::Warn } else { Level::Info };
    let entry = Entry {
        level,
        event: LogEvent::Output,
        phase: Some(phase),
        step: Some(step),
        stream: Some(stream),
        message: &text,
        split,
    };
    if let Err(e) = log.append(&entry) {
        tracing::warn!(error = %e, "cannot write output line");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_never_cuts_a_character() {
        let s = "aé€😀".repeat(10);
        let bytes = s.as_bytes();
        for max in 1..bytes.len() {
            let cut = split_point(bytes, max);
            assert!(cut <= max || cut == max);
            assert!(std::str::from_utf8(&bytes[..cut]).is_ok() || cut == max, "max {max} cut {cut}");
        }
    }
}
