//! Per-deployment, per-attempt JSON Lines logs: writing, reading and the text rendering.
//!
//! Layout: `<data_dir>/logs/<deployment id>.<attempt>.jsonl` (flat: one file per attempt and
//! no folder per deployment, which halves the inodes a deployment costs). Every record is one line, written
//! and flushed as it happens so followers see it at once. Files are flushed, not fsynced: the
//! `SQLite` store is the durable record of state; logs are best effort across a power loss.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::model::{DeploymentId, Phase};
use crate::sanitize::inert;

/// Severity of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// What a record reports. Output lines are `output`; everything else is a transition or an
/// action of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogEvent {
    Queued,
    Started,
    PhaseStarted,
    PhaseFinished,
    StepStarted,
    StepFinished,
    Output,
    Signal,
    RetryScheduled,
    Action,
    RolledBack,
    Cancelled,
    Interrupted,
    Succeeded,
    Failed,
    /// A final record of the API's log follow (`follow=true`), never written to a file.
    Status,
}

/// Which pipe an output line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a log file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub ts: DateTime<Utc>,
    /// 0-based position in the file; strictly increasing.
    pub seq: u64,
    pub attempt: u32,
    pub level: Level,
    pub event: LogEvent,
    pub phase: Option<Phase>,
    pub step: Option<String>,
    pub stream: Option<Stream>,
    pub message: String,
    /// The output line was longer than the bound and continues in the next record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub split: bool,
}

impl LogRecord {
    /// The record as one human line, with control characters made inert.
    pub fn to_text(&self) -> String {
        let ts = self.ts.to_rfc3339_opts(SecondsFormat::Millis, true);
        let message = inert(&self.message);
        let cont = if self.split { " ⏎…" } else { "" };
        if self.event == LogEvent::Output {
            let stream = match self.stream {
                Some(Stream::Stderr) => "stderr",
                _ => "stdout",
            };
            let step = self.step.as_deref().map(inert).unwrap_or_default();
            format!("{ts} #{} {stream} {step} | {message}{cont}", self.attempt)
        } else {
            let phase = self.phase.map(|p| format!(" [{p}]")).unwrap_or_default();
            let event =
                serde_json::to_value(self.event).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            format!("{ts} #{} == {event}{phase} {message}", self.attempt)
        }
    }
}

/// Escapes C1 control characters (U+0080–U+009F) as `\u00XX`: JSON allows them raw, but a
/// terminal showing the JSON (a `curl` of the log endpoint) could obey U+009B as a CSI (C07).
/// They can only occur inside JSON strings, so the textual rewrite is safe.
fn escape_c1(line: &mut Vec<u8>) {
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut i = 0;
    while i < line.len() {
        if line[i] == 0xC2 && line.get(i + 1).is_some_and(|b| (0x80..=0x9F).contains(b)) {
            out.extend_from_slice(format!("\\u{:04x}", line[i + 1]).as_bytes());
            i += 2;
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    *line = out;
}

/// Whether UTF-8 text holds a C1 control character (encoded as 0xC2 0x80..=0x9F).
fn has_c1(text: &str) -> bool {
    text.as_bytes().windows(2).any(|w| w[0] == 0xC2 && (0x80..=0x9F).contains(&w[1]))
}

/// The fields a writer supplies; time, sequence and attempt are filled in by [`AttemptLog`].
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub level: Level,
    pub event: LogEvent,
    pub phase: Option<Phase>,
    pub step: Option<&'a str>,
    pub stream: Option<Stream>,
    pub message: &'a str,
    pub split: bool,
}

impl<'a> Entry<'a> {
    /// An engine record (no step output).
    pub fn event(level: Level, event: LogEvent, phase: Option<Phase>, message: &'a str) -> Self {
        Self { level, event, phase, step: None, stream: None, message, split: false }
    }
}

/// The open log of one attempt. Shared between the engine and the attempt's task behind a
/// `std::sync::Mutex` that is held for one write, never across an `.await`.
#[derive(Debug)]
pub struct AttemptLog {
    writer: BufWriter<File>,
    seq: u64,
    attempt: u32,
    clock: Arc<dyn Clock>,
    path: PathBuf,
}

/// A log shared by the engine and an attempt task.
pub type SharedLog = Arc<Mutex<AttemptLog>>;

/// Locks a shared log; a poisoned lock (a panic mid-write) still yields the log, since a record
/// is either fully written or not at all.
pub fn lock(log: &SharedLog) -> MutexGuard<'_, AttemptLog> {
    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AttemptLog {
    /// Opens (or creates) the file for appending; continues the sequence of existing records.
    pub fn open(path: &Path, attempt: u32, clock: Arc<dyn Clock>) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let seq = match File::open(path) {
            Ok(f) => BufReader::new(f).split(b'\n').count() as u64,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { writer: BufWriter::with_capacity(64 * 1024, file), seq, attempt, clock, path: path.to_owned() })
    }

    /// Whether no record was written yet.
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }

    /// The attempt this log belongs to.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record without flushing (for batches of output lines).
    pub fn append(&mut self, entry: &Entry<'_>) -> io::Result<()> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            ts: DateTime<Utc>,
            seq: u64,
            attempt: u32,
            level: Level,
            event: LogEvent,
            phase: Option<Phase>,
            step: Option<&'a str>,
            stream: Option<Stream>,
            message: &'a str,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            split: bool,
        }
        let record = Borrowed {
            ts: self.clock.now(),
            seq: self.seq,
            attempt: self.attempt,
            level: entry.level,
            event: entry.event,
            phase: entry.phase,
            step: entry.step,
            stream: entry.stream,
            message: entry.message,
            split: entry.split,
        };
        if has_c1(entry.message) || entry.step.is_some_and(has_c1) {
            let mut line = serde_json::to_vec(&record)?;
            escape_c1(&mut line);
            line.push(b'\n');
            self.writer.write_all(&line)?;
        } else {
            serde_json::to_writer(&mut self.writer, &record)?;
            self.writer.write_all(b"\n")?;
        }
        self.seq += 1;
        Ok(())
    }

    /// Appends one record and flushes it.
    pub fn write(&mut self, entry: &Entry<'_>) {
        if let Err(e) = self.append(entry).and_then(|()| self.flush()) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write log record");
        }
    }

    /// Pushes buffered records to the file so that readers see them.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Where the log files live.
#[derive(Debug, Clone)]
pub struct LogBook {
    dir: PathBuf,
    clock: Arc<dyn Clock>,
}

impl LogBook {
    /// Logs under `dir` (created when missing).
    pub fn new(dir: PathBuf, clock: Arc<dyn Clock>) -> Self {
        Self { dir, clock }
    }

    /// The file of one attempt.
    pub fn path(&self, id: DeploymentId, attempt: u32) -> PathBuf {
        self.dir.join(format!("{id}.{attempt}.jsonl"))
    }

    /// Opens an attempt's log for writing.
    pub fn open(&self, id: DeploymentId, attempt: u32) -> io::Result<SharedLog> {
        AttemptLog::open(&self.path(id, attempt), attempt, Arc::clone(&self.clock)).map(|l| Arc::new(Mutex::new(l)))
    }

    /// Writes one record to an attempt's log, opening and closing the file.
    pub fn write_once(&self, id: DeploymentId, attempt: u32, entry: &Entry<'_>) {
        match self.open(id, attempt) {
            Ok(log) => lock(&log).write(entry),
            Err(e) => tracing::warn!(%id, attempt, error = %e, "cannot open log"),
        }
    }

    /// The attempts that have a log file, ascending (attempts are numbered from 1 without
    /// gaps, and each has a log from the moment it is queued).
    pub fn attempts(&self, id: DeploymentId) -> Vec<u32> {
        (1..=u32::MAX).take_while(|&n| self.path(id, n).exists()).collect()
    }
}

/// Reads the records of a log file in order, one line at a time (never the whole file in
/// memory). A line that is not a record (a torn last write after a crash) is skipped.
pub fn read_records(path: &Path) -> io::Result<impl Iterator<Item = LogRecord>> {
    let reader = BufReader::new(File::open(path)?);
    Ok(reader.split(b'\n').map_while(Result::ok).filter_map(|line| serde_json::from_slice(&line).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn records_round_trip_and_sequence_continues_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = LogBook::new(dir.path().to_owned(), Arc::new(SystemClock));
        let id: DeploymentId = "01JF0000000000000000000000".parse().expect("id");
        book.write_once(id, 1, &Entry::event(Level::Info, LogEvent::Queued, None, "queued"));
        let log = book.open(id, 1).expect("open");
        lock(&log).write(&Entry {
            level: Level::Info,
            event: LogEvent::Output,
            phase: Some(Phase::Steps),
            step: Some("install"),
            stream: Some(Stream::Stderr),
            message: "bad \u{fffd} \u{1b}[2J",
            split: true,
        });
        let records: Vec<_> = read_records(&book.path(id, 1)).expect("read").collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].seq, 1);
        assert_eq!(records[1].stream, Some(Stream::Stderr));
        assert!(records[1].split);
        assert!(records[1].to_text().contains("stderr install | bad \u{fffd} ␛[2J ⏎…"), "{}", records[1].to_text());
        assert_eq!(book.attempts(id), [1]);
    }

    #[test]
    fn c1_controls_are_escaped_in_the_json_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = LogBook::new(dir.path().to_owned(), Arc::new(SystemClock));
        let id: DeploymentId = "01JF0000000000000000000001".parse().expect("id");
        book.write_once(id, 1, &Entry::event(Level::Info, LogEvent::Output, None, "a\u{9b}31mb \u{1b}[0m é"));
        let raw = std::fs::read_to_string(book.path(id, 1)).expect("read");
        assert!(raw.contains(r"a\u009b31mb \u001b[0m é"), "{raw}");
        let record = read_records(&book.path(id, 1)).expect("records").next().expect("one");
        assert_eq!(record.message, "a\u{9b}31mb \u{1b}[0m é");
    }
}
