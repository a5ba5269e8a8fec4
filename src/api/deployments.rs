//! Deployment routes: submit (base64 JSON or a raw streamed upload), status, detail, cancel,
//! retry, rollback and priority.
//!
//! Size policy (case C16): the artifact limit (`defaults.max_artifact_size`) is enforced before
//! anything is decoded: from `Content-Length` before the body is read, while a chunked body is
//! read, from the base64 length before decoding, and while a raw upload streams to disk. Every
//! refusal is a 413 in the error envelope.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tds_core::artifact::{ArtifactError, ArtifactWriter};
use tds_core::model::{ArtifactInfo, DeploymentView, Priority};
use tds_core::release::Restored;
use tds_core::{ArtifactSource, OrchestratorHandle, SubmitRequest};
use utoipa::ToSchema;

use super::auth::{Operator, Viewer};
use super::error::{ApiError, ErrorEnvelope};
use super::openapi::DeploymentDoc;
use super::{ApiJson, ApiPath, AppState, NoQuery, PREFIX, content_length, media_type, parse_id, parse_json, read_body};

/// How much of a raw upload is gathered in memory before it is handed to the writer thread.
const UPLOAD_CHUNK: usize = 1024 * 1024;
/// Room for the JSON fields around the base64 artifact (params, version, names).
const JSON_OVERHEAD: u64 = 1024 * 1024;
/// The base64 engine: the standard alphabet, padding optional; line breaks are skipped before.
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;

/// `POST /deployments` with a JSON body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody<'a> {
    /// A configured environment (exact name).
    #[schema(example = "staging")]
    pub environment: String,
    #[serde(borrow)]
    pub artifact: ArtifactBody<'a>,
    /// Free-form label, reaches steps as `TDS_VERSION` (default empty).
    #[serde(default)]
    #[schema(max_length = 256, example = "1.4.2")]
    pub version: String,
    /// low, normal (default), high or critical, in any case.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(?:[Ll][Oo][Ww]|[Nn][Oo][Rr][Mm][Aa][Ll]|[Hh][Ii][Gg][Hh]|[Cc][Rr][Ii][Tt][Ii][Cc][Aa][Ll])$", example = "high")]
    pub priority: Priority,
    /// Reach steps as `TDS_PARAM_<KEY>` environment variables; keys are letters, digits and `_`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// The artifact inside a JSON submission.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactBody<'a> {
    /// File name; decides how it is unpacked (`.tar`, `.tar.gz`/`.tgz`, `.zip`, else a plain file).
    #[schema(example = "site.tar.gz", min_length = 1, max_length = 255)]
    pub name: String,
    /// The bytes, standard base64 (padding optional, line breaks ignored).
    #[serde(borrow)]
    #[schema(value_type = String, format = Byte)]
    pub content_base64: Cow<'a, str>,
}

/// The answer to a submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitResponse {
    #[schema(value_type = String, example = "01JF6Z8W4X3Q2M5N7P9R1S3T5V")]
    pub id: String,
    #[schema(value_type = String, example = "queued")]
    pub status: String,
    #[schema(example = "/api/v1/deployments/01JF6Z8W4X3Q2M5N7P9R1S3T5V/status")]
    pub status_url: String,
    pub logs_url: String,
    /// False when an `Idempotency-Key` matched an earlier submission (this is that one).
    pub created: bool,
}

/// `PUT /deployments/{id}/priority`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    #[schema(value_type = String, pattern = "^(?:[Ll][Oo][Ww]|[Nn][Oo][Rr][Mm][Aa][Ll]|[Hh][Ii][Gg][Hh]|[Cc][Rr][Ii][Tt][Ii][Cc][Aa][Ll])$", example = "critical")]
    pub priority: Priority,
}

/// A deployment with its attempts and transitions.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetailResponse {
    #[schema(value_type = DeploymentDoc)]
    pub deployment: DeploymentView,
    pub attempts: Vec<AttemptOut>,
    pub transitions: Vec<TransitionOut>,
}

/// One attempt of a deployment.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOut {
    pub attempt: u32,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `succeeded`, `failed`, `cancelled`, `interrupted`; null while it runs.
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
}

/// One status or phase change.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransitionOut {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    #[schema(value_type = String)]
    pub status: String,
    #[schema(value_type = Option<String>)]
    pub phase: Option<String>,
    pub message: Option<String>,
}

/// The answer to a manual rollback.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollbackResponse {
    #[schema(value_type = DeploymentDoc)]
    pub deployment: DeploymentView,
    /// `switched` (current now points at `current_release`), `withdrawn` (this release was not
    /// live; it is no longer a rollback target) or `removed` (no earlier release: `current` is
    /// gone).
    pub action: String,
    pub current_release: Option<String>,
}

fn status_url(id: &str) -> String {
    format!("{PREFIX}/deployments/{id}/status")
}

/// Starts a deployment. JSON (`application/json`, artifact as base64) or a raw upload
/// (`application/octet-stream`, the body is the artifact, the rest in the query) streamed to
/// disk. Answers 202 once the deployment is committed.
#[utoipa::path(post, path = "/api/v1/deployments", tag = "deployments",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Repeats with the same key and request return the first deployment"),
        ("environment" = Option<String>, Query, description = "Raw upload only: the environment"),
        ("name" = Option<String>, Query, description = "Raw upload only: the artifact's file name"),
        ("version" = Option<String>, Query, description = "Raw upload only: version label"),
        ("priority" = Option<String>, Query, description = "Raw upload only: low, normal, high, critical"),
    ),
    request_body(description = "A JSON submission or the raw artifact bytes", content(
        (SubmitBody = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 202, description = "Committed and queued (or the earlier one, for a repeated Idempotency-Key)", body = SubmitResponse),
        (status = 400, description = "Invalid field, JSON, base64, artifact or unknown environment", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 403, description = "The token's role may not submit", body = ErrorEnvelope),
        (status = 413, description = "Artifact over the limit", body = ErrorEnvelope),
        (status = 415, description = "Neither JSON nor octet-stream", body = ErrorEnvelope),
        (status = 422, description = "Idempotency-Key reused for another request", body = ErrorEnvelope),
        (status = 503, description = "Shutting down", body = ErrorEnvelope),
    ))]
pub async fn submit(
    Operator(caller): Operator,
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let handle = state.handle();
    if !handle.is_accepting() {
        return Err(ApiError::shutting_down());
    }
    let idempotency_key = idempotency_key(req.headers())?;
    let (environment, artifact, version, priority, params) = match media_type(req.headers()).as_deref() {
        Some(m) if super::is_json_media(m) => {
            super::no_query(req.uri())?;
            json_submission(handle, req).await?
        }
        Some("application/octet-stream") => raw_submission(handle, req).await?,
        other => {
            return Err(super::unsupported_media_type(other, &["application/json", "application/octet-stream"]));
        }
    };
    let submitted = handle
        .submit(SubmitRequest {
            environment,
            artifact,
            version,
            priority,
            params,
            requested_by: caller.name,
            idempotency_key,
        })
        .await?;
    let id = submitted.deployment.id.to_string();
    let body = SubmitResponse {
        status_url: status_url(&id),
        logs_url: format!("{PREFIX}/deployments/{id}/logs"),
        status: submitted.deployment.status.to_string(),
        created: submitted.created,
        id,
    };
    let mut response = (StatusCode::ACCEPTED, Json(&body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&body.status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if !submitted.created {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

type Submission = (String, ArtifactSource, String, Priority, BTreeMap<String, String>);

/// Artifacts up to this size are decoded in memory and handed to the core as bytes (it hashes
/// them first and writes nothing for content it already holds); larger ones stream to disk.
const IN_MEMORY: u64 = 1 << 20;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII"))?;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::invalid("Idempotency-Key", "must be 1 to 255 characters"));
    }
    Ok(Some(key.to_owned()))
}

fn check_environment(handle: &OrchestratorHandle, name: &str) -> Result<(), ApiError> {
    if handle.config().environment(name).is_none() {
        return Err(tds_core::Error::UnknownEnvironment(name.chars().take(100).collect()).into());
    }
    Ok(())
}

/// The largest JSON body that can carry an artifact of `limit` bytes.
fn json_limit(limit: u64) -> u64 {
    limit.div_ceil(3).saturating_mul(4).saturating_add(JSON_OVERHEAD)
}

async fn json_submission(handle: &OrchestratorHandle, req: Request) -> Result<Submission, ApiError> {
    if let Some(q) = req.uri().query().filter(|q| !q.is_empty()) {
        let name: String = q.split(['=', '&']).next().unwrap_or_default().chars().take(64).collect();
        return Err(ApiError::invalid_parameter(
            &name,
            "a JSON submission takes its fields in the body; query parameters are for raw uploads",
        ));
    }
    let limit = handle.config().defaults.max_artifact_size;
    let bytes = read_body(req, json_limit(limit), |_| ApiError::too_large(limit)).await?;
    let body: SubmitBody<'_> = parse_json(&bytes)?;
    check_environment(handle, &body.environment)?;
    let source = B64Source::new(&bytes, body.artifact.content_base64);
    let name = body.artifact.name;
    let artifact = if decoded_len(&source)? <= IN_MEMORY {
        let mut decoded = Vec::new();
        decode_chunks(&source, limit, |chunk| {
            decoded.extend_from_slice(chunk);
            Ok(())
        })?;
        ArtifactSource::Bytes { name, bytes: decoded }
    } else {
        // Creating the upload file is file-system work too: keep it off the async workers.
        let store = handle.clone();
        let info = tokio::task::spawn_blocking(move || decode_into(&source, store.artifact_writer()?, limit, &name))
            .await
            .map_err(|e| ApiError::internal("base64 decode task", &e))??;
        ArtifactSource::Stored(info)
    };
    Ok((body.environment, artifact, body.version, body.priority, body.params))
}

/// The base64 text of a JSON submission: a slice of the body when JSON needed no unescaping (the
/// usual case, no copy), else the unescaped copy. Line breaks and spaces are removed here.
enum B64Source {
    Shared(Bytes),
    Owned(String),
}

impl B64Source {
    fn new(body: &Bytes, text: Cow<'_, str>) -> Self {
        let text = match text {
            Cow::Borrowed(s) => {
                let start = (s.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
                if start <= body.len() && start + s.len() <= body.len() {
                    Self::Shared(body.slice(start..start + s.len()))
                } else {
                    Self::Owned(s.to_owned())
                }
            }
            Cow::Owned(s) => Self::Owned(s),
        };
        if text.as_bytes().iter().any(u8::is_ascii_whitespace) {
            let cleaned: Vec<u8> = text.as_bytes().iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            return Self::Owned(String::from_utf8(cleaned).unwrap_or_default());
        }
        text
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Shared(b) => b,
            Self::Owned(s) => s.as_bytes(),
        }
    }
}

/// Base64 characters decoded at a time (a multiple of 4).
const CHUNK: usize = 64 * 1024;

const B64_FIELD: &str = "artifact.content_base64";

/// The decoded size, from the base64 length alone (so a 413 comes before any decoding).
fn decoded_len(source: &B64Source) -> Result<u64, ApiError> {
    let text = source.as_bytes();
    let padding = text.iter().rev().take(2).take_while(|&&b| b == b'=').count();
    let symbols = &text[..text.len() - padding];
    if let Some(pos) = symbols.iter().position(|&b| b == b'=') {
        return Err(invalid_base64(&format!("'=' padding in the middle (offset {pos})"), Some(pos)));
    }
    if symbols.len() % 4 == 1 {
        return Err(invalid_base64("the length is not a valid base64 length", None));
    }
    Ok((symbols.len() as u64 / 4) * 3 + [0, 0, 1, 2][symbols.len() % 4])
}

/// Checks the decoded size from the base64 length (413 before decoding), then decodes in
/// chunks straight into the artifact store, so the decoded bytes are never all in memory.
fn decode_into(
    source: &B64Source,
    mut writer: ArtifactWriter,
    limit: u64,
    name: &str,
) -> Result<ArtifactInfo, ApiError> {
    decode_chunks(source, limit, |chunk| {
        writer.write(chunk).map_err(|e| ApiError::from(tds_core::Error::Artifact(e)))
    })?;
    writer.finish(name).map_err(|e| ApiError::from(tds_core::Error::Artifact(e)))
}

/// Decodes the base64 text chunk by chunk into `sink`, after the size check.
fn decode_chunks(
    source: &B64Source,
    limit: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    if decoded_len(source)? > limit {
        return Err(ApiError::too_large(limit));
    }
    let text = source.as_bytes();
    let padding = text.iter().rev().take(2).take_while(|&&b| b == b'=').count();
    let symbols = &text[..text.len() - padding];
    let mut out = vec![0u8; CHUNK / 4 * 3 + 3];
    let mut offset = 0;
    while offset < symbols.len() {
        let end = if symbols.len() - offset > CHUNK { offset + CHUNK } else { text.len() };
        let n = BASE64.decode_slice(&text[offset..end], &mut out).map_err(|e| match e {
            base64::DecodeSliceError::DecodeError(d) => decode_error(&d, offset),
            base64::DecodeSliceError::OutputSliceTooSmall => invalid_base64("cannot decode", None),
        })?;
        sink(&out[..n])?;
        offset = end;
    }
    Ok(())
}

fn decode_error(e: &base64::DecodeError, base: usize) -> ApiError {
    match *e {
        base64::DecodeError::InvalidByte(at, byte) => {
            let shown = if byte.is_ascii_graphic() { format!("'{}'", byte as char) } else { format!("0x{byte:02x}") };
            invalid_base64(&format!("invalid character {shown} at offset {}", base + at), Some(base + at))
        }
        base64::DecodeError::InvalidLastSymbol { offset: at, .. } => {
            invalid_base64(&format!("invalid last symbol at offset {}", base + at), Some(base + at))
        }
        _ => invalid_base64(&e.to_string(), None),
    }
}

fn invalid_base64(message: &str, offset: Option<usize>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_base64", format!("{B64_FIELD}: {message}"))
        .with_details(json!({ "field": B64_FIELD, "offset": offset }))
}

async fn raw_submission(handle: &OrchestratorHandle, req: Request) -> Result<Submission, ApiError> {
    let mut environment = None;
    let mut name = None;
    let mut version = String::new();
    let mut priority = Priority::Normal;
    let mut params = BTreeMap::new();
    let pairs: Vec<(String, String)> = match req.uri().query() {
        Some(q) => {
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(req.uri())
                .map_err(|_| {
                    ApiError::invalid_parameter(
                        "query",
                        format!("cannot parse '{}'", q.chars().take(100).collect::<String>()),
                    )
                })?
                .0
        }
        None => Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for (key, value) in pairs {
        if !seen.insert(key.clone()) {
            return Err(ApiError::invalid_parameter(&key, "given more than once"));
        }
        match key.as_str() {
            "environment" => environment = Some(value),
            "name" => name = Some(value),
            "version" => version = value,
            "priority" => {
                priority = value.parse().map_err(|e: tds_core::model::UnknownValue| {
                    ApiError::invalid_parameter("priority", e.to_string())
                })?;
            }
            other => {
                let Some(k) = other.strip_prefix("param.") else {
                    let shown: String = other.chars().take(64).collect();
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "unknown_parameter",
                        format!(
                            "unknown query parameter '{shown}'; a raw upload takes environment, name, version, \
                             priority and param.KEY"
                        ),
                    )
                    .with_details(json!({ "parameter": shown })));
                };
                params.insert(k.to_owned(), value);
            }
        }
    }
    let environment =
        environment.ok_or_else(|| ApiError::invalid_parameter("environment", "required for a raw upload"))?;
    let name = name
        .ok_or_else(|| ApiError::invalid_parameter("name", "required for a raw upload (the artifact's file name)"))?;
    check_environment(handle, &environment)?;
    let limit = handle.config().defaults.max_artifact_size;
    if content_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let store = handle.clone();
    let mut writer = Some(
        tokio::task::spawn_blocking(move || store.artifact_writer())
            .await
            .map_err(|e| ApiError::internal("upload task", &e))??,
    );
    let mut body = req.into_body().into_data_stream();
    let mut buffer = Vec::with_capacity(UPLOAD_CHUNK);
    let mut received: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("the upload was interrupted: {e}"))
        })?;
        received += chunk.len() as u64;
        if received > limit {
            super::drain_in_background(body);
            return Err(ApiError::too_large(limit));
        }
        buffer.extend_from_slice(&chunk);
        if buffer.len() >= UPLOAD_CHUNK {
            writer = Some(write_chunk(writer.take(), std::mem::take(&mut buffer)).await?);
        }
    }
    let w = write_chunk(writer.take(), buffer).await?;
    let info = tokio::task::spawn_blocking(move || w.finish(&name))
        .await
        .map_err(|e| ApiError::internal("upload task", &e))?
        .map_err(|e| ApiError::from(tds_core::Error::Artifact(e)))?;
    Ok((environment, ArtifactSource::Stored(info), version, priority, params))
}

async fn write_chunk(writer: Option<ArtifactWriter>, chunk: Vec<u8>) -> Result<ArtifactWriter, ApiError> {
    let Some(mut writer) = writer else { return Err(ApiError::internal("upload", &"writer missing")) };
    tokio::task::spawn_blocking(move || writer.write(&chunk).map(|()| writer))
        .await
        .map_err(|e| ApiError::internal("upload task", &e))?
        .map_err(|e: ArtifactError| ApiError::from(tds_core::Error::Artifact(e)))
}

/// The status of a deployment: phase, step k of n, percent, attempts, timings, error, wait
/// reason, next retry time.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/status", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id (ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "The deployment", body = DeploymentDoc),
        (status = 400, description = "Not a deployment id, or a query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 404, description = "No such deployment", body = ErrorEnvelope),
    ))]
pub async fn status(
    _: Viewer,
    _: NoQuery,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.handle().deployment(id).await?))
}

/// A deployment with every attempt and transition (its timeline).
#[utoipa::path(get, path = "/api/v1/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id (ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "The deployment and its timeline", body = DetailResponse),
        (status = 400, description = "Not a deployment id, or a query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 404, description = "No such deployment", body = ErrorEnvelope),
    ))]
pub async fn detail(
    _: Viewer,
    _: NoQuery,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DetailResponse>, ApiError> {
    let id = parse_id(&id)?;
    let detail = state.handle().detail(id).await?;
    Ok(Json(DetailResponse {
        deployment: detail.deployment,
        attempts: detail
            .attempts
            .into_iter()
            .map(|a| AttemptOut {
                attempt: a.attempt,
                queued_at: a.queued_at,
                started_at: a.started_at,
                finished_at: a.finished_at,
                outcome: a.outcome,
                error: a.error,
                duration_ms: a.duration_ms,
            })
            .collect(),
        transitions: detail
            .transitions
            .into_iter()
            .map(|t| TransitionOut {
                attempt: t.attempt,
                at: t.at,
                status: t.status.to_string(),
                phase: t.phase.map(|p| p.to_string()),
                message: t.message,
            })
            .collect(),
    }))
}

/// Cancels a queued, waiting or running deployment; a running one is killed and rolled back
/// before the answer. 409 names the state when it cannot be cancelled.
#[utoipa::path(put, path = "/api/v1/deployments/{id}/cancel", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id (ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "Cancelled; the new state", body = DeploymentDoc),
        (status = 400, description = "Not a deployment id, or a query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 403, description = "The token's role may not cancel", body = ErrorEnvelope),
        (status = 404, description = "No such deployment", body = ErrorEnvelope),
        (status = 409, description = "Its state cannot be cancelled (named in details.status)", body = ErrorEnvelope),
        (status = 503, description = "Shutting down", body = ErrorEnvelope),
    ))]
pub async fn cancel(
    _: Operator,
    _: NoQuery,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.handle().cancel(id).await?))
}

/// Queues a new attempt of a failed or cancelled deployment at once.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/retry", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id (ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "Queued again; the new state", body = DeploymentDoc),
        (status = 400, description = "Not a deployment id, or a query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 403, description = "The token's role may not retry", body = ErrorEnvelope),
        (status = 404, description = "No such deployment", body = ErrorEnvelope),
        (status = 409, description = "Not failed or cancelled", body = ErrorEnvelope),
        (status = 503, description = "Shutting down", body = ErrorEnvelope),
    ))]
pub async fn retry(
    _: Operator,
    _: NoQuery,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let id = parse_id(&id)?;
    if !state.handle().is_accepting() {
        return Err(ApiError::shutting_down());
    }
    Ok(Json(state.handle().retry(id).await?))
}

/// Manual rollback of a succeeded deployment: re-activates the previous successful release.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/rollback", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id (ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    responses(
        (status = 200, description = "Rolled back", body = RollbackResponse),
        (status = 400, description = "Not a deployment id, or a query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 403, description = "The token's role may not roll back", body = ErrorEnvelope),
        (status = 404, description = "No such deployment", body = ErrorEnvelope),
        (status = 409, description = "Not succeeded, or no release to go back to", body = ErrorEnvelope),
    ))]
pub async fn rollback(
    _: Operator,
    _: NoQuery,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RollbackResponse>, ApiError> {
    let id = parse_id(&id)?;
    let (deployment, restored) = state.handle().rollback(id).await?;
    let (action, current_release) = match restored {
        Restored::SwitchedTo(name) => ("switched", Some(name)),
        Restored::Untouched => ("withdrawn", None),
        Restored::Removed => ("removed", None),
    };
    Ok(Json(RollbackResponse { deployment, action: action.into(), current_release }))
}

/// Changes the priority of a deployment that has not finished.
#[utoipa::path(put, path = "/api/v1/deployments/{id}/priority", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id (ULID)", pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")),
    request_body = PriorityBody,
    responses(
        (status = 200, description = "The deployment with its new priority", body = DeploymentDoc),
        (status = 400, description = "Not a deployment id, or a bad priority", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 403, description = "The token's role may not change priorities", body = ErrorEnvelope),
        (status = 404, description = "No such deployment", body = ErrorEnvelope),
        (status = 409, description = "Already finished", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 415, description = "Not JSON", body = ErrorEnvelope),
    ))]
pub async fn priority(
    _: Operator,
    _: NoQuery,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PriorityBody>,
) -> Result<Json<DeploymentView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.handle().set_priority(id, body.priority).await?))
}
