//! Following one attempt's JSON Lines log file by byte offset: a large file is entered near its
//! end, each poll reads a bounded chunk, and lines become inert display lines (case C07) before
//! they reach the state. The loop owns the tailer; its output reaches the state as an action.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tds_core::logs::{Level, LogEvent, LogRecord, Stream};

use crate::state::LogTarget;
use crate::text;

/// A file larger than this is entered this many bytes before its end.
pub const START_WINDOW: u64 = 1024 * 1024;
/// Most bytes read per poll; the rest comes with the next one (soon, not on the next tick).
const MAX_READ: u64 = 1024 * 1024;
/// A torn line longer than this (no record is) is dropped rather than buffered.
const MAX_PARTIAL: usize = 1024 * 1024;
/// Longest text kept per line, in characters; the rest is summarized.
pub const MAX_LINE_CHARS: usize = 4096;

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Stdout,
    Stderr,
    /// An engine record (phase, step, retry, result); `phase` ones are highlighted.
    Event {
        level: Level,
        phase: bool,
    },
}

/// One display line of a log, already inert and tab-expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub ts: DateTime<Utc>,
    pub kind: LineKind,
    pub text: String,
}

/// New lines for the state; `reset` starts a fresh target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub target: LogTarget,
    pub reset: bool,
    pub lines: Vec<LogLine>,
    /// Bytes at the start of the file that were skipped (large files).
    pub skipped_bytes: u64,
    pub error: Option<String>,
}

fn event_name(event: LogEvent) -> &'static str {
    match event {
        LogEvent::Queued => "queued",
        LogEvent::Started => "started",
        LogEvent::PhaseStarted => "phase started",
        LogEvent::PhaseFinished => "phase finished",
        LogEvent::StepStarted => "step started",
        LogEvent::StepFinished => "step finished",
        LogEvent::Output => "output",
        LogEvent::Signal => "signal",
        LogEvent::RetryScheduled => "retry scheduled",
        LogEvent::PriorityChanged => "priority",
        LogEvent::Action => "action",
        LogEvent::RolledBack => "rolled back",
        LogEvent::Cancelled => "cancelled",
        LogEvent::Interrupted => "interrupted",
        LogEvent::Succeeded => "succeeded",
        LogEvent::Failed => "failed",
        LogEvent::Status => "status",
    }
}

fn capped(message: &str) -> String {
    let cleaned = text::clean(message);
    match cleaned.char_indices().nth(MAX_LINE_CHARS) {
        None => cleaned.into_owned(),
        Some((cut, _)) => format!("{} … (+{} bytes)", &cleaned[..cut], cleaned.len() - cut),
    }
}

/// Turns a record into a display line.
pub fn line_of(record: &LogRecord) -> LogLine {
    let (kind, text) = match record.event {
        LogEvent::Output => {
            let kind = if record.stream == Some(Stream::Stderr) { LineKind::Stderr } else { LineKind::Stdout };
            let mut t = capped(&record.message);
            if record.split {
                t.push_str(" ⏎");
            }
            (kind, t)
        }
        event => {
            let phase = matches!(event, LogEvent::PhaseStarted | LogEvent::PhaseFinished | LogEvent::Started);
            let mut t = String::from(event_name(event));
            if let Some(p) = record.phase {
                t.push_str(" [");
                t.push_str(p.as_str());
                t.push(']');
            }
            if let Some(step) = &record.step {
                t.push(' ');
                t.push_str(&text::clean(step));
            }
            if !record.message.is_empty() {
                t.push_str(": ");
                t.push_str(&capped(&record.message));
            }
            (LineKind::Event { level: record.level, phase }, t)
        }
    };
    LogLine { ts: record.ts, kind, text }
}

/// Parses complete lines out of `bytes` (appended to `partial`), leaving an incomplete last
/// line in `partial`. Lines that are not records (a torn write) are skipped.
pub fn parse(partial: &mut Vec<u8>, bytes: &[u8]) -> Vec<LogLine> {
    partial.extend_from_slice(bytes);
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(nl) = partial[start..].iter().position(|&b| b == b'\n') {
        let line = &partial[start..start + nl];
        if let Ok(record) = serde_json::from_slice::<LogRecord>(line) {
            out.push(line_of(&record));
        }
        start += nl + 1;
    }
    partial.drain(..start);
    if partial.len() > MAX_PARTIAL {
        partial.clear();
    }
    out
}

/// Follows one log file. Not part of `AppState`: it does I/O.
#[derive(Debug, Default)]
pub struct LogTailer {
    target: Option<LogTarget>,
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    partial: Vec<u8>,
    more: bool,
}

impl LogTailer {
    /// What the tailer follows.
    pub fn target(&self) -> Option<LogTarget> {
        self.target
    }

    /// Unread bytes remain after the last bounded read.
    pub fn has_more(&self) -> bool {
        self.more
    }

    /// Stops following.
    pub fn close(&mut self) {
        *self = Self::default();
    }

    /// Starts following `path`; a large file is entered near its end.
    pub fn open(&mut self, target: LogTarget, path: PathBuf) -> LogChunk {
        *self = Self { target: Some(target), path, ..Self::default() };
        let mut chunk = LogChunk { target, reset: true, lines: Vec::new(), skipped_bytes: 0, error: None };
        match self.read_new(true) {
            Ok((lines, skipped)) => {
                chunk.lines = lines;
                chunk.skipped_bytes = skipped;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => chunk.error = Some(format!("cannot read {}: {e}", self.path.display())),
        }
        chunk
    }

    /// New lines since the last read, or `None` when nothing changed.
    pub fn poll(&mut self) -> Option<LogChunk> {
        let target = self.target?;
        match self.read_new(false) {
            Ok((lines, _)) if lines.is_empty() => None,
            Ok((lines, _)) => Some(LogChunk { target, reset: false, lines, skipped_bytes: 0, error: None }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => Some(LogChunk {
                target,
                reset: false,
                lines: Vec::new(),
                skipped_bytes: 0,
                error: Some(format!("cannot read {}: {e}", self.path.display())),
            }),
        }
    }

    fn read_new(&mut self, first: bool) -> io::Result<(Vec<LogLine>, u64)> {
        if self.file.is_none() {
            self.file = Some(File::open(&self.path)?);
        }
        let Some(file) = self.file.as_mut() else { return Ok((Vec::new(), 0)) };
        let len = file.metadata()?.len();
        if len < self.offset {
            // Replaced or truncated: start over.
            self.offset = 0;
            self.partial.clear();
        }
        let mut skipped = 0;
        if first && len > START_WINDOW {
            self.offset = len - START_WINDOW;
            skipped = self.offset;
        }
        if len == self.offset {
            self.more = false;
            return Ok((Vec::new(), skipped));
        }
        let want = (len - self.offset).min(MAX_READ);
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::with_capacity(want as usize);
        file.take(want).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.more = self.offset < len;
        let mut bytes = &buf[..];
        if skipped > 0 {
            // Entered mid-file: drop the torn first line.
            let cut = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| p + 1);
            skipped += cut as u64;
            bytes = &bytes[cut..];
        }
        Ok((parse(&mut self.partial, bytes), skipped))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn record(seq: u64, event: &str, stream: Option<&str>, message: &str) -> String {
        let stream = stream.map_or("null".to_owned(), |s| format!("\"{s}\""));
        let message = serde_json::to_string(message).expect("json");
        format!(
            r#"{{"ts":"2026-12-03T10:41:07Z","seq":{seq},"attempt":1,"level":"info","event":"{event}","phase":"steps","step":"install","stream":{stream},"message":{message}}}"#
        )
    }

    #[test]
    fn partial_lines_wait_for_their_newline_and_escapes_are_inert() {
        let mut partial = Vec::new();
        let a = record(0, "output", Some("stdout"), "hello\u{1b}]0;PWNED\u{7}\tx");
        let b = record(1, "output", Some("stderr"), "oops");
        let text = format!("{a}\n{b}");
        let lines = parse(&mut partial, text.as_bytes());
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "hello␛]0;PWNED␇ x");
        assert_eq!(lines[0].kind, LineKind::Stdout);
        let lines = parse(&mut partial, b"\n{torn\n");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].kind, LineKind::Stderr);
        assert!(partial.is_empty());
    }

    #[test]
    fn a_large_file_is_entered_near_its_end_and_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.jsonl");
        let mut f = File::create(&path).expect("create");
        let mut n = 0u64;
        while f.metadata().expect("meta").len() < START_WINDOW * 3 {
            writeln!(f, "{}", record(n, "output", Some("stdout"), &format!("line {n}"))).expect("write");
            n += 1;
        }
        let target = LogTarget { id: crate::fixtures::id(1), attempt: 1 };
        let mut tail = LogTailer::default();
        let chunk = tail.open(target, path.clone());
        assert!(chunk.skipped_bytes >= START_WINDOW * 2, "{}", chunk.skipped_bytes);
        assert_eq!(chunk.lines.last().map(|l| l.text.clone()), Some(format!("line {}", n - 1)));
        assert!(chunk.lines.len() < n as usize / 2);
        assert!(tail.poll().is_none());
        writeln!(f, "{}", record(n, "phase_started", None, "")).expect("write");
        let more = tail.poll().expect("new line");
        assert_eq!(more.lines.len(), 1);
        assert!(matches!(more.lines[0].kind, LineKind::Event { phase: true, .. }));
        assert_eq!(more.lines[0].text, "phase started [steps] install");
    }

    #[test]
    fn huge_messages_are_capped() {
        let long = "a".repeat(MAX_LINE_CHARS * 3);
        let mut partial = Vec::new();
        let lines = parse(&mut partial, format!("{}\n", record(0, "output", Some("stdout"), &long)).as_bytes());
        assert!(lines[0].text.len() < MAX_LINE_CHARS + 40);
        assert!(lines[0].text.ends_with("bytes)"));
    }
}
