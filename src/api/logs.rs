//! `GET /deployments/{id}/logs`: an attempt's log as JSON Lines or text, streamed from the file
//! in chunks (never read whole), optionally followed until the deployment ends.
//!
//! `format=json` sends the records as stored (control characters stay escaped by JSON);
//! `format=text` renders each with `LogRecord::to_text`, which applies the one inert policy of
//! `tds_core::sanitize` (case C07). `follow=true` keeps the response open, sends records as they
//! are written, moves on to later attempts when no `attempt` was asked for, and ends with a
//! final `status` record once the deployment is terminal (or tds shuts down). The stream is a
//! plain `Stream` owned by the response body: a client that disconnects drops it, which closes
//! the file and the event subscription at once.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tds_core::OrchestratorHandle;
use tds_core::logs::{Level, LogEvent, LogRecord};
use tds_core::model::{DeploymentId, DeploymentView, StatusKind};
use tokio::io::AsyncReadExt as _;
use tokio::sync::broadcast;
use utoipa::IntoParams;

use super::auth::Viewer;
use super::error::{ApiError, ErrorEnvelope};
use super::{ApiPath, ApiQuery, AppState, parse_id};

/// How often a follower looks at the file when no event woke it.
const POLL: Duration = Duration::from_millis(200);
/// Bytes read from the file at a time (and the largest chunk sent).
const READ_CHUNK: usize = 64 * 1024;
/// A line longer than this is not a record (writers split output at 16 KiB); it is skipped.
const MAX_RECORD: usize = 1024 * 1024;

/// Query of the log route.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// `json` (JSON Lines, the default) or `text` (one human line per record, control
    /// characters made visible).
    #[param(value_type = Option<String>, pattern = "^([Jj][Ss][Oo][Nn]|[Tt][Ee][Xx][Tt])$")]
    pub format: Option<String>,
    /// Attempt number, from 1 (default: the latest; with `follow`, later attempts follow).
    #[param(value_type = Option<u32>, minimum = 1)]
    pub attempt: Option<String>,
    /// Keep streaming until the deployment ends; the last record has `event: status`.
    #[param(value_type = Option<bool>)]
    pub follow: Option<String>,
    /// Send as an attachment with a file name.
    #[param(value_type = Option<bool>)]
    pub download: Option<String>,
}

/// The two renderings of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// Parses `true`/`false`/`1`/`0` (any case), naming the parameter on failure.
pub fn parse_bool(name: &str, text: &str) -> Result<bool, ApiError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => {
            let shown: String = text.chars().take(40).collect();
            Err(ApiError::invalid_parameter(name, format!("'{shown}' is not a boolean (true or false)")))
        }
    }
}

/// An attempt's log; see the module documentation for formats and follow.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/logs", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id (ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$"), LogParams),
    responses(
        (status = 200, description = "The log, streamed", content(
            (String = "application/x-ndjson"),
            (String = "text/plain"),
        )),
        (status = 400, description = "A bad parameter", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 404, description = "No such deployment or attempt", body = ErrorEnvelope),
    ))]
pub async fn logs(
    _: Viewer,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<LogParams>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let format = match params.format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("json") => Format::Json,
        Some("text") => Format::Text,
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            return Err(ApiError::invalid_parameter("format", format!("'{shown}' is not json or text")));
        }
    };
    let follow = params.follow.as_deref().map(|t| parse_bool("follow", t)).transpose()?.unwrap_or(false);
    let download = params.download.as_deref().map(|t| parse_bool("download", t)).transpose()?.unwrap_or(false);
    let asked = match params.attempt.as_deref() {
        Some(t) => {
            let n = super::history::parse_count("attempt", t)?;
            if n == 0 {
                return Err(ApiError::invalid_parameter("attempt", "attempts are numbered from 1"));
            }
            Some(u32::try_from(n).map_err(|_| ApiError::invalid_parameter("attempt", "is too large"))?)
        }
        None => None,
    };
    let handle = state.handle().clone();
    let view = handle.deployment(id).await?;
    let attempt = asked.unwrap_or(view.attempt);
    if attempt > view.attempt {
        return Err(no_attempt(id, attempt, view.attempt));
    }
    // An attempt that has not written anything yet has an empty log (or, followed, waits).
    let path = handle.log_path(id, attempt);
    // Subscribe before the first read so that no change between the read and the wait is missed.
    let events = follow.then(|| handle.subscribe());
    let tail = Tail {
        handle,
        id,
        attempt,
        pinned: asked.is_some(),
        path,
        file: None,
        partial: Vec::new(),
        buf: Vec::new(),
        skipping: false,
        format,
        follow,
        events,
        last_seq: None,
        closing: false,
        done: false,
    };
    let stream = futures::stream::unfold(tail, |mut tail| async move {
        tail.next_chunk().await.map(|bytes| (Ok::<_, std::io::Error>(bytes), tail))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    let (content_type, ext) = match format {
        Format::Json => ("application/x-ndjson", "jsonl"),
        Format::Text => ("text/plain; charset=utf-8", "log"),
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if download {
        let disposition = format!("attachment; filename=\"tds-{id}-attempt{attempt}.{ext}\"");
        if let Ok(value) = HeaderValue::from_str(&disposition) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    if follow {
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    Ok(response)
}

fn no_attempt(id: DeploymentId, asked: u32, latest: u32) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("deployment {id} has no attempt {asked} (latest: {latest})"),
    )
    .with_details(json!({ "id": id.to_string(), "attempt": asked, "latest": latest }))
}

/// The state of one streamed log.
#[allow(clippy::struct_excessive_bools)] // independent flags of one stream's progress
struct Tail {
    handle: OrchestratorHandle,
    id: DeploymentId,
    attempt: u32,
    /// An explicit `attempt` was asked for: do not move on to later ones.
    pinned: bool,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    /// Bytes after the last newline (a record being written).
    partial: Vec<u8>,
    /// The read buffer, kept between reads.
    buf: Vec<u8>,
    /// Inside an over-long line that is being skipped.
    skipping: bool,
    format: Format,
    follow: bool,
    events: Option<broadcast::Receiver<tds_core::EventEnvelope>>,
    last_seq: Option<u64>,
    /// The end was seen; one more read to EOF, then the final record.
    closing: bool,
    done: bool,
}

impl Tail {
    /// The next piece of the response, or `None` at the end.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            if self.file.is_none() {
                match tokio::fs::File::open(&self.path).await {
                    Ok(f) => self.file = Some(f),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %self.path.display(), error = %e, "cannot open log");
                        self.done = true;
                        return None;
                    }
                }
            }
            if let Some(file) = self.file.as_mut() {
                let mut buf = std::mem::take(&mut self.buf);
                buf.resize(READ_CHUNK, 0);
                let out = match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => Some(self.take_lines(&buf[..n])),
                    Err(e) => {
                        tracing::warn!(path = %self.path.display(), error = %e, "cannot read log");
                        self.done = true;
                        return None;
                    }
                };
                self.buf = buf;
                if let Some(out) = out {
                    if !out.is_empty() {
                        return Some(out.into());
                    }
                    continue;
                }
            }
            // At the end of what is written so far.
            if !self.follow {
                self.done = true;
                return None;
            }
            if self.closing {
                self.done = true;
                return Some(self.final_record().await);
            }
            let Ok(view) = self.handle.deployment(self.id).await else {
                self.done = true;
                return None;
            };
            if view.attempt > self.attempt && !self.pinned {
                // A later attempt started: this file is at its end; go on with the next one.
                self.attempt += 1;
                self.path = self.handle.log_path(self.id, self.attempt);
                self.file = None;
                self.partial.clear();
                self.skipping = false;
                continue;
            }
            if view.is_terminal() || (self.pinned && view.attempt > self.attempt) || !self.handle.is_accepting() {
                // One more pass: records written just before the state changed.
                self.closing = true;
                continue;
            }
            self.wait().await;
        }
    }

    /// Waits for a change of this deployment or the poll interval, whichever comes first.
    async fn wait(&mut self) {
        let id = self.id;
        let Some(events) = self.events.as_mut() else {
            tokio::time::sleep(POLL).await;
            return;
        };
        let _ = tokio::time::timeout(POLL, async {
            loop {
                match events.recv().await {
                    Ok(env) => {
                        if let tds_core::CoreEvent::Deployment(d) = &env.event
                            && d.id == id
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        })
        .await;
    }

    /// Splits complete lines off `chunk` and renders them; keeps the unfinished rest.
    fn take_lines(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 4);
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(pos);
            rest = &after[1..];
            if self.skipping {
                self.skipping = false;
                self.partial.clear();
                continue;
            }
            if self.partial.is_empty() {
                self.render(line, &mut out);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.render(&whole, &mut out);
            }
        }
        if !self.skipping {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_RECORD {
                self.partial.clear();
                self.skipping = true;
            }
        }
        out
    }

    fn render(&mut self, line: &[u8], out: &mut Vec<u8>) {
        // A torn or foreign line is skipped, as `read_records` does.
        let Ok(record) = serde_json::from_slice::<LogRecord>(line) else { return };
        self.last_seq = Some(record.seq);
        match self.format {
            Format::Json => out.extend_from_slice(line),
            Format::Text => out.extend_from_slice(record.to_text().as_bytes()),
        }
        out.push(b'\n');
    }

    /// The record that ends a follow: the deployment's final state.
    async fn final_record(&mut self) -> Bytes {
        let view = self.handle.deployment(self.id).await.ok();
        let (level, message) = match &view {
            Some(v) if v.is_terminal() => final_message(v),
            Some(v) if self.pinned && v.attempt > self.attempt => (
                Level::Info,
                format!("attempt {} is over; the deployment is {} in attempt {}", self.attempt, v.status, v.attempt),
            ),
            Some(v) => (Level::Warn, format!("tds is shutting down; the deployment is {}", v.status)),
            None => (Level::Warn, "the deployment is gone".to_owned()),
        };
        let record = LogRecord {
            ts: self.handle.now(),
            seq: self.last_seq.map_or(0, |s| s + 1),
            attempt: self.attempt,
            level,
            event: LogEvent::Status,
            phase: None,
            step: None,
            stream: None,
            message,
            split: false,
        };
        let mut line = match self.format {
            Format::Json => serde_json::to_vec(&record).unwrap_or_default(),
            Format::Text => record.to_text().into_bytes(),
        };
        line.push(b'\n');
        line.into()
    }
}

fn final_message(view: &DeploymentView) -> (Level, String) {
    let error = view.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
    match view.status {
        StatusKind::Succeeded => (Level::Info, "deployment succeeded".to_owned()),
        StatusKind::Cancelled => (Level::Warn, format!("deployment cancelled{error}")),
        _ => (Level::Error, format!("deployment {}{error}", view.status)),
    }
}
