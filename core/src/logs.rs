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
    /// An operator changed the priority (`+`/`-`, `PUT …/priority`).
    PriorityChanged,
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

/// Buffer of an open log file.
const WRITE_BUFFER: usize = 64 * 1024;

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

/// A record time as its JSON text (RFC 3339, as `chrono` serializes it), made once and shared
/// by all the output lines that one read of a pipe captured: they arrived at the same instant,
/// and formatting a time per line would cost more than the line itself.
#[derive(Debug, Clone)]
pub struct Stamp(String);

/// The fixed part of the output records of one step and stream (`attempt` to `message`), built
/// once per step so that a captured line costs a copy, not a serialization.
#[derive(Debug, Clone)]
pub struct OutputFormat {
    middle: Vec<u8>,
}

/// The log of one attempt. Shared between the engine and the attempt's task behind a
/// `std::sync::Mutex` that is held for one write, never across an `.await`.
///
/// The file is open only while its attempt runs ([`AttemptLog::keep_open`]); otherwise each
/// record opens, appends and closes it. A queue of any length (a paused environment collecting
/// CI submissions) thus holds no file descriptors: with one per queued deployment, tds ran out
/// of them at the process limit (20,000 here) and refused every request after.
#[derive(Debug)]
pub struct AttemptLog {
    writer: Option<BufWriter<File>>,
    keep_open: bool,
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
        let open = || OpenOptions::new().create(true).append(true).open(path);
        // The folder exists nearly always: create it only when the file cannot be made.
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.parent().is_some() => {
                fs::create_dir_all(path.parent().unwrap_or(path))?;
                open()?
            }
            other => other?,
        };
        let seq =
            if file.metadata()?.len() == 0 { 0 } else { BufReader::new(File::open(path)?).split(b'\n').count() as u64 };
        Ok(Self {
            writer: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            keep_open: false,
            seq,
            attempt,
            clock,
            path: path.to_owned(),
        })
    }

    /// Keeps the file open between records (while the attempt runs and writes often), or
    /// closes it after each flush from now on.
    pub fn keep_open(&mut self, keep: bool) {
        self.keep_open = keep;
        if !keep {
            let _ = self.flush();
        }
    }

    fn writer(&mut self) -> io::Result<&mut BufWriter<File>> {
        if self.writer.is_none() {
            let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.writer = Some(BufWriter::with_capacity(WRITE_BUFFER, file));
        }
        // Just filled when it was empty.
        self.writer.as_mut().ok_or_else(|| io::Error::other("log writer missing"))
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
        let w = self.writer()?;
        if has_c1(entry.message) || entry.step.is_some_and(has_c1) {
            let mut line = serde_json::to_vec(&record)?;
            escape_c1(&mut line);
            line.push(b'\n');
            w.write_all(&line)?;
        } else {
            serde_json::to_writer(&mut *w, &record)?;
            w.write_all(b"\n")?;
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

    /// Pushes buffered records to the file so that readers see them; closes the file unless
    /// it is kept open.
    pub fn flush(&mut self) -> io::Result<()> {
        let result = self.writer.as_mut().map_or(Ok(()), Write::flush);
        if !self.keep_open {
            self.writer = None;
        }
        result
    }

    /// The current time, formatted for [`AttemptLog::append_output`].
    pub fn stamp(&self) -> Stamp {
        Stamp(self.clock.now().to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    /// The fixed part of the output records of `step` on `stream` (stderr lines are `warn`).
    pub fn output_format(&self, phase: Phase, step: &str, stream: Stream) -> OutputFormat {
        let level = if stream == Stream::Stderr { Level::Warn } else { Level::Info };
        let mut middle = Vec::with_capacity(128);
        json_field(&mut middle, "attempt", &self.attempt);
        json_field(&mut middle, "level", &level);
        json_field(&mut middle, "event", &LogEvent::Output);
        json_field(&mut middle, "phase", &Some(phase));
        json_field(&mut middle, "step", &Some(step));
        json_field(&mut middle, "stream", &Some(stream));
        middle.extend_from_slice(b",\"message\":");
        OutputFormat { middle }
    }

    /// Appends one captured output line without flushing: the same record as [`append`] of an
    /// `output` entry would write, byte for byte, without a serializer on the way. Invalid
    /// UTF-8 is replaced (U+FFFD); a line that is printable ASCII (nearly all of them) is copied
    /// as it is.
    ///
    /// [`append`]: AttemptLog::append
    pub fn append_output(&mut self, stamp: &Stamp, format: &OutputFormat, line: &[u8], split: bool) -> io::Result<()> {
        let mut digits = [0u8; 20];
        let seq = self.seq;
        let w = self.writer()?;
        w.write_all(b"{\"ts\":\"")?;
        w.write_all(stamp.0.as_bytes())?;
        w.write_all(b"\",\"seq\":")?;
        w.write_all(decimal(seq, &mut digits))?;
        w.write_all(&format.middle)?;
        if is_plain_ascii(line) {
            w.write_all(b"\"")?;
            w.write_all(line)?;
            w.write_all(b"\"")?;
        } else {
            let text = String::from_utf8_lossy(line);
            if has_c1(&text) {
                let mut quoted = serde_json::to_vec(&*text)?;
                escape_c1(&mut quoted);
                w.write_all(&quoted)?;
            } else {
                serde_json::to_writer(&mut *w, &*text)?;
            }
        }
        w.write_all(if split { b",\"split\":true}\n" } else { b"}\n" })?;
        self.seq += 1;
        Ok(())
    }
}

/// `,"name":value` for the fixed part of output records.
fn json_field<T: Serialize + ?Sized>(out: &mut Vec<u8>, name: &str, value: &T) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Whether a line is printable ASCII without a quote or a backslash: JSON needs no escape for it and it
/// is valid UTF-8, so it can be written as it is. Written without early exit so that it
/// compiles to a vector loop.
#[allow(clippy::needless_bitwise_bool)] // `&` on purpose: no branch per byte
fn is_plain_ascii(line: &[u8]) -> bool {
    line.iter().fold(true, |plain, &b| plain & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\'))
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
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
    use chrono::TimeZone;

    use super::*;
    use crate::clock::SystemClock;

    #[derive(Debug)]
    struct Fixed(DateTime<Utc>);

    impl Clock for Fixed {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    /// A queue of any length holds no open log files: the engine kept one open per queued
    /// deployment and, at the process's descriptor limit (≈ 20,000 queued), every request
    /// failed. The queued records are still written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_deployments_hold_no_open_log_files() {
        use crate::model::Priority;
        use crate::{ArtifactSource, Config, OrchestratorHandle, StartOptions, SubmitRequest};

        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let text =
            format!("[storage]\ndata_dir = \"{d}/data\"\n[[environments]]\nname = \"e\"\nroot = \"{d}/envs/e\"\n");
        let config = Config::parse(&text, dir.path()).expect("config");
        let options = StartOptions { probes: false, ..StartOptions::default() };
        let handle = OrchestratorHandle::start(config, options).await.expect("start");
        handle.set_paused("e", true).await.expect("pause");
        let mut paths = Vec::new();
        for i in 0..50 {
            let request = SubmitRequest {
                environment: "e".into(),
                artifact: ArtifactSource::Bytes { name: "a.txt".into(), bytes: vec![b'x'; i + 1] },
                version: i.to_string(),
                priority: Priority::Normal,
                params: std::collections::BTreeMap::new(),
                requested_by: "test".into(),
                idempotency_key: None,
            };
            let id = handle.submit(request).await.expect("submit").deployment.id;
            paths.push(handle.log_path(id, 1));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !paths.iter().all(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0)) {
            assert!(std::time::Instant::now() < deadline, "queued records not written");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let logs = paths[0].parent().expect("logs folder").to_owned();
        let open = fs::read_dir("/proc/self/fd")
            .expect("fds")
            .flatten()
            .filter(|fd| fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(&logs)))
            .count();
        assert_eq!(open, 0, "log files left open by 50 queued deployments");
        handle.shutdown(None).await;
    }

    /// A log holds its file open only while kept open, and records written across closes
    /// continue one sequence.
    #[test]
    fn the_file_is_closed_between_records_unless_kept_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/x.1.jsonl");
        let mut log = AttemptLog::open(&path, 1, Arc::new(SystemClock)).expect("open");
        assert!(log.writer.is_some(), "open keeps the created file for the first record");
        log.write(&Entry::event(Level::Info, LogEvent::Queued, None, "queued"));
        assert!(log.writer.is_none());
        log.keep_open(true);
        log.write(&Entry::event(Level::Info, LogEvent::Started, None, "started"));
        let stamp = log.stamp();
        let format = log.output_format(Phase::Steps, "s", Stream::Stdout);
        log.append_output(&stamp, &format, b"line", false).expect("append");
        log.flush().expect("flush");
        assert!(log.writer.is_some());
        log.keep_open(false);
        assert!(log.writer.is_none());
        log.write(&Entry::event(Level::Info, LogEvent::Succeeded, None, "done"));
        let records: Vec<_> = read_records(&path).expect("read").collect();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(records[2].message, "line");
    }

    /// The fast path for output lines writes exactly what serializing the entry writes: same
    /// fields, same order, same time format, same escaping and replacement of invalid UTF-8.
    #[test]
    fn output_records_are_byte_for_byte_the_serialized_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines: [&[u8]; 10] = [
            b"plain line",
            b"",
            b"with \"quotes\" and a \\ backslash",
            b"tab\there\r",
            b"\x1b[2J escape",
            "café ✓".as_bytes(),
            b"bad \xff\xfe utf8 \xe2\x82",
            b"del \x7f",
            b"{\"json\": [1, 2]}",
            "c1 \u{9b}31m csi".as_bytes(),
        ];
        for (i, nanos) in [0, 123_000_000, 123_456_000, 123_456_789].into_iter().enumerate() {
            let clock = Arc::new(Fixed(Utc.timestamp_opt(1_764_758_467, nanos).single().expect("time")));
            let (a, b) = (dir.path().join(format!("{i}.a")), dir.path().join(format!("{i}.b")));
            let mut serialized = AttemptLog::open(&a, 3, clock.clone()).expect("open");
            let mut fast = AttemptLog::open(&b, 3, clock).expect("open");
            for stream in [Stream::Stdout, Stream::Stderr] {
                let format = fast.output_format(Phase::Steps, "install \"x\"", stream);
                for line in lines {
                    for split in [false, true] {
                        serialized
                            .append(&Entry {
                                level: if stream == Stream::Stderr { Level::Warn } else { Level::Info },
                                event: LogEvent::Output,
                                phase: Some(Phase::Steps),
                                step: Some("install \"x\""),
                                stream: Some(stream),
                                message: &String::from_utf8_lossy(line),
                                split,
                            })
                            .expect("append");
                        let stamp = fast.stamp();
                        fast.append_output(&stamp, &format, line, split).expect("append");
                    }
                }
            }
            serialized.flush().expect("flush");
            fast.flush().expect("flush");
            let (a, b) = (fs::read_to_string(a).expect("read"), fs::read_to_string(b).expect("read"));
            assert_eq!(a.lines().count(), 40);
            assert!(!b.contains('\u{9b}'), "a raw C1 control in the log: {b}");
            for (x, y) in a.lines().zip(b.lines()) {
                assert_eq!(x, y);
            }
            assert_eq!(a, b);
        }
    }

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
