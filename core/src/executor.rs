//! Running one configured command: `sh -c` in its own process group, output captured line by
//! line from both pipes, a timeout, and cancellation that kills the whole group.
//!
//! Kill protocol (cancel, timeout, shutdown): SIGTERM to the group, up to `kill_grace` for it to
//! go, then SIGKILL; each signal is logged. When the step's shell exits, anything it left in its
//! group (background children) is terminated the same way, and a grandchild that keeps the
//! output pipes open cannot keep the step running (case C04).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::logs::{Entry, Level, LogEvent, OutputFormat, SharedLog, Stamp, Stream, lock};
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
    let mut command = Command::new(shell());
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

/// The `sh` that `PATH` names, looked up once: a spawn then costs one `execve` instead of one
/// per `PATH` entry before it (eight failed ones per step on a developer's `PATH`). Falls back to
/// the lookup at each spawn when `PATH` is unset, has no `sh`, or has a relative entry first
/// (which names a different folder for each step's working directory).
pub fn shell() -> &'static OsStr {
    static SHELL: OnceLock<PathBuf> = OnceLock::new();
    SHELL.get_or_init(|| find_in_path(std::env::var_os("PATH").as_deref(), "sh")).as_os_str()
}

fn find_in_path(path: Option<&OsStr>, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    for dir in std::env::split_paths(path.unwrap_or_default()) {
        if !dir.is_absolute() {
            break;
        }
        let candidate = dir.join(name);
        if candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0) {
            return candidate;
        }
    }
    PathBuf::from(name)
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

/// Bytes read from a pipe at a time once a step proves chatty: a full pipe buffer and more, so
/// that it costs few wake-ups and few writes to the log.
const READ_CHUNK: usize = 256 * 1024;
/// The first read buffer of a pipe.
const FIRST_READ: usize = 8 * 1024;

/// Reads a pipe to its end, writing one record per line. Invalid UTF-8 is replaced, long lines
/// are split at [`MAX_LINE`], and a last line without a newline is kept. The lines of one read
/// share its time stamp (they arrived together); the log is flushed after each read, so a
/// follower sees every line as soon as it was read.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    log: SharedLog,
    phase: Phase,
    step: std::sync::Arc<str>,
) {
    let format = lock(&log).output_format(phase, &step, stream);
    // Most steps print little: start small and grow only while reads fill the buffer, so that
    // a quiet step does not pay for zeroing and mapping a large one.
    let mut buf = vec![0u8; FIRST_READ];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if n == buf.len() && buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
        let mut guard = lock(&log);
        let stamp = guard.stamp();
        let mut out = Out { log: &mut guard, stamp: &stamp, format: &format };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            let room = MAX_LINE - pending.len();
            if let Some(i) = find_newline(&chunk[..chunk.len().min(room + 1)]) {
                // A whole line in the chunk is written from where it lies; only a line that
                // started in an earlier read goes through `pending`.
                if pending.is_empty() {
                    out.emit(&chunk[..i], false);
                } else {
                    pending.extend_from_slice(&chunk[..i]);
                    out.emit(&pending, false);
                    pending.clear();
                }
                chunk = &chunk[i + 1..];
            } else {
                let take = room.min(chunk.len());
                pending.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if pending.len() >= MAX_LINE {
                    let cut = split_point(&pending, MAX_LINE);
                    out.emit(&pending[..cut], true);
                    pending.drain(..cut);
                }
            }
        }
        let _ = guard.flush();
    }
    if !pending.is_empty() {
        let mut guard = lock(&log);
        let stamp = guard.stamp();
        Out { log: &mut guard, stamp: &stamp, format: &format }.emit(&pending, false);
        let _ = guard.flush();
    }
}

/// Where the lines of one read go.
struct Out<'a> {
    log: &'a mut crate::logs::AttemptLog,
    stamp: &'a Stamp,
    format: &'a OutputFormat,
}

impl Out<'_> {
    fn emit(&mut self, line: &[u8], split: bool) {
        if let Err(e) = self.log.append_output(self.stamp, self.format, line, split) {
            tracing::warn!(error = %e, "cannot write output line");
        }
    }
}

/// The position of the first `\n`, eight bytes at a time.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    let mut words = bytes.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let x = u64::from_le_bytes(eight) ^ NEWLINES;
        // A zero byte in `x` (a newline in `word`) sets its high bit here.
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            return word.iter().position(|&b| b == b'\n').map(|i| base + i);
        }
        base += 8;
    }
    words.remainder().iter().position(|&b| b == b'\n').map(|i| base + i)
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

    #[test]
    fn shell_is_found_in_path_once_and_relative_entries_defer_to_the_spawn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        let sh = bin.join("sh");
        std::fs::write(&sh, "#!/bin/true\n").expect("write");
        let path = |entries: &[&Path]| std::env::join_paths(entries).expect("join");
        // Not executable: skipped.
        assert_eq!(find_in_path(Some(&path(&[&bin])), "sh"), PathBuf::from("sh"));
        std::fs::set_permissions(&sh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        assert_eq!(find_in_path(Some(&path(&[dir.path(), &bin])), "sh"), sh);
        assert_eq!(find_in_path(Some(&path(&[Path::new("rel"), &bin])), "sh"), PathBuf::from("sh"));
        assert_eq!(find_in_path(None, "sh"), PathBuf::from("sh"));
        assert!(Path::new(shell()).ends_with("sh"));
    }

    #[test]
    fn find_newline_agrees_with_a_byte_search() {
        let text: Vec<u8> = (0..200u32).map(|i| if i % 37 == 5 { b'\n' } else { (i % 251) as u8 + 1 }).collect();
        for start in 0..text.len() {
            for end in start..text.len().min(start + 40) {
                let slice = &text[start..end];
                assert_eq!(find_newline(slice), slice.iter().position(|&b| b == b'\n'), "{start}..{end}");
            }
        }
    }
}
