//! The REST API: `router(handle)` builds every route over an `OrchestratorHandle`; `bind` and
//! `serve` put it on a socket. One file per resource; the error envelope, auth and the request
//! extractors shared by all of them live here and in `error.rs` / `auth.rs`.
//!
//! Routes (all under `/api/v1` except the root aliases `/healthz` and `/metrics`):
//! see `openapi.rs`, which is generated from the handlers' annotations and served at
//! `/api/v1/openapi.json`.

pub mod auth;
pub mod deployments;
pub mod environments;
pub mod error;
pub mod events;
pub mod history;
pub mod logs;
pub mod metrics;
pub mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use serde_json::json;
use tds_core::model::DeploymentId;
use tds_core::{Config, OrchestratorHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::auth::Tokens;
use self::error::ApiError;

/// The prefix of every versioned route.
pub const PREFIX: &str = "/api/v1";

/// Largest JSON body of the small requests (priority, limit): they are a few bytes.
pub const SMALL_BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares: the orchestrator and the decoded tokens. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    handle: OrchestratorHandle,
    tokens: Tokens,
}

impl AppState {
    /// State over a running orchestrator; tokens come from its configuration.
    pub fn new(handle: OrchestratorHandle) -> Self {
        let tokens = Tokens::new(&handle.config().tokens);
        Self { inner: Arc::new(StateInner { handle, tokens }) }
    }

    /// The orchestrator.
    pub fn handle(&self) -> &OrchestratorHandle {
        &self.inner.handle
    }

    /// The configured tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }
}

/// The application router: every route of the API, the error envelope for unknown routes and
/// methods, and a panic guard.
pub fn router(handle: OrchestratorHandle) -> Router {
    let state = AppState::new(handle);
    let v1 = Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics::prometheus))
        .route("/events", get(events::stream))
        .route("/deployments", post(deployments::submit))
        .route("/deployments/history", get(history::list))
        .route("/deployments/metrics", get(metrics::live))
        .route("/deployments/analytics/performance", get(metrics::performance))
        .route("/deployments/analytics/trends", get(metrics::trends))
        .route("/deployments/{id}", get(deployments::detail))
        .route("/deployments/{id}/status", get(deployments::status))
        .route("/deployments/{id}/logs", get(logs::logs))
        .route("/deployments/{id}/cancel", put(deployments::cancel))
        .route("/deployments/{id}/retry", post(deployments::retry))
        .route("/deployments/{id}/rollback", post(deployments::rollback))
        .route("/deployments/{id}/priority", put(deployments::priority))
        .route("/environments", get(environments::list))
        .route("/environments/{name}", get(environments::get_one))
        .route("/environments/{name}/pause", put(environments::pause))
        .route("/environments/{name}/resume", put(environments::resume))
        .route("/environments/{name}/limit", put(environments::limit));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::prometheus))
        .nest(PREFIX, v1)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(error::panic_response))
        .with_state(state)
}

/// Binds the configured address; without tokens only a loopback address is allowed.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = config.server.listen;
    if config.tokens.is_empty() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve the API on {addr} without [[tokens]] in the configuration: anyone who can reach it \
             could deploy. Add tokens (see `tds token hash`) or listen on 127.0.0.1"
        );
    }
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    if config.tokens.is_empty() {
        tracing::warn!(%addr, "no [[tokens]] configured: the API is open, so it listens on loopback only");
    }
    Ok(listener)
}

/// Serves until `stop` is cancelled, then finishes in-flight requests. Streaming responses
/// (log follow, events) end by themselves once the orchestrator stops accepting work.
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
}

/// Liveness and readiness: 200 while tds accepts work, 503 once it is shutting down. Open to
/// everyone (no token), so that load balancers and scripts can probe it.
#[utoipa::path(get, path = "/api/v1/healthz", tag = "meta", security(()),
    responses(
        (status = 200, description = "tds is up and accepts work", body = Health),
        (status = 503, description = "tds is shutting down", body = error::ErrorEnvelope),
    ))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    if state.handle().is_accepting() {
        axum::Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() }).into_response()
    } else {
        ApiError::shutting_down().into_response()
    }
}

/// The answer of `/healthz`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    pub version: String,
}

/// Parses a deployment id from a path segment, naming it in the error.
pub fn parse_id(text: &str) -> Result<DeploymentId, ApiError> {
    text.parse().map_err(|e: tds_core::model::IdParseError| {
        ApiError::invalid_parameter("id", e.to_string()).with_details(json!({ "parameter": "id" }))
    })
}

/// A path segment as text; parsing into ids or names happens in the handler, which names the
/// parameter in its errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters. Every query struct denies unknown fields, so a typo is a 400 that names
/// it, never a silent default.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri).map(|q| Self(q.0)).map_err(|rejection| {
            let text = rejection.body_text();
            let text = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text).to_owned();
            let name = text.find("unknown field `").and_then(|i| text[i + 15..].split('`').next()).map(str::to_owned);
            match name {
                Some(name) => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_parameter",
                    format!(
                        "unknown query parameter '{name}'; {}",
                        text.split(", ").skip(1).collect::<Vec<_>>().join(", ")
                    ),
                )
                .with_details(json!({ "parameter": name })),
                None => ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", text),
            }
        })
    }
}

/// For routes that take no query parameters: any is a 400 naming it, as an unknown one is on
/// the routes that take some (a `?environment=` on a JSON submission is not silently ignored).
#[derive(Debug, Clone, Copy)]
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, ApiError> {
        no_query(&parts.uri).map(|()| Self)
    }
}

/// 400 unless the URI has no query parameters.
pub fn no_query(uri: &Uri) -> Result<(), ApiError> {
    let Some(query) = uri.query().filter(|q| !q.trim_matches('&').is_empty()) else { return Ok(()) };
    let name = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .ok()
        .and_then(|pairs| pairs.0.into_iter().next().map(|(key, _)| key))
        .unwrap_or_else(|| query.to_owned());
    let name: String = name.chars().take(64).collect();
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "unknown_parameter",
        format!("unknown query parameter '{name}'; {} takes none", uri.path()),
    )
    .with_details(json!({ "parameter": name })))
}

/// A JSON body: `Content-Type: application/json` required (415 otherwise), at most
/// [`SMALL_BODY_LIMIT`] bytes (413), unknown fields and bad values a 400 that names the field.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let bytes = read_body(req, SMALL_BODY_LIMIT as u64, |limit| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("body larger than {limit} bytes"))
                .with_details(json!({ "limit": limit }))
        })
        .await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserializes a JSON body, naming the failing field.
pub fn parse_json<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    // Every body of this API is an object; serde would also fill a struct from an array of
    // its fields in order, which no client means, and its errors would name our types.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|first| *first != b'{') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the request body must be a JSON object (`{...}`)",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| error::json_error(&e))?;
    de.end().map_err(|e| error::syntax_error(&e))?;
    Ok(value)
}

/// The media type of a request without parameters, lowercased.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

/// Whether a media type is JSON (`application/json` or `application/*+json`).
pub fn is_json_media(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// 415 unless the request says it carries JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match media_type(headers) {
        Some(m) if is_json_media(&m) => Ok(()),
        other => Err(unsupported_media_type(other.as_deref(), &["application/json"])),
    }
}

/// 415 naming what was sent and what is accepted.
pub fn unsupported_media_type(got: Option<&str>, expected: &[&str]) -> ApiError {
    let got_text = got.map_or_else(|| "no Content-Type".to_owned(), |g| format!("Content-Type '{g}'"));
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("{got_text} is not accepted here; send {}", expected.join(" or ")),
    )
    .with_details(json!({ "content_type": got, "expected": expected }))
}

/// Reads a whole body, refusing it with `too_large(limit)` as soon as it passes `limit` bytes:
/// first from `Content-Length`, then while reading (chunked bodies).
pub async fn read_body(
    req: Request,
    limit: u64,
    too_large: impl Fn(u64) -> ApiError,
) -> Result<axum::body::Bytes, ApiError> {
    if content_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let capacity = content_length(req.headers()).map_or(0, |n| usize::try_from(n).unwrap_or(0)).min(1 << 20);
    let mut body = req.into_body().into_data_stream();
    let mut out = Vec::with_capacity(capacity);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("cannot read the request body: {e}"))
        })?;
        if (out.len() + chunk.len()) as u64 > limit {
            drain_in_background(body);
            return Err(too_large(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

/// Keeps reading (and discarding) an oversized body for a bounded time and size after the 413
/// is sent, so that the client reads the answer instead of a connection reset (case C16).
pub fn drain_in_background(mut body: axum::body::BodyDataStream) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut drained: u64 = 0;
        while drained < 64 * 1024 * 1024 {
            match tokio::time::timeout_at(deadline, body.next()).await {
                Ok(Some(Ok(chunk))) => drained += chunk.len() as u64,
                _ => break,
            }
        }
    });
}

/// The declared body length, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}
