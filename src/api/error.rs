//! The one error envelope of the API, `{"error": {"code", "message", "details"}}`: every 4xx and
//! 5xx goes through [`ApiError`], including axum's own rejections, unknown routes and methods,
//! and panics. Core errors are mapped to status codes here and nowhere else; internal failures
//! become a generic 500 whose detail is logged, never sent.

use std::any::Any;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tds_core::artifact::ArtifactError;
use utoipa::ToSchema;

/// An error as the API answers it: a status code and the envelope's fields.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code (`unknown_environment`, `invalid_field`, …).
    pub code: &'static str,
    /// One sentence for a person.
    pub message: String,
    /// Structured context: the field, the value, the limit, the current state.
    pub details: Value,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// What went wrong, for a program (`code`, `details`) and a person (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code, e.g. `unknown_environment`, `invalid_field`, `payload_too_large`.
    #[schema(example = "unknown_environment")]
    pub code: String,
    #[schema(example = "no environment named 'stagin'")]
    pub message: String,
    /// Context of the error (always an object, possibly empty).
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ApiError {
    /// An error with an empty `details` object.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: json!({}), headers: Vec::new() }
    }

    /// Adds structured context.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Adds a response header (`WWW-Authenticate`, `Retry-After`, `Allow`).
    #[must_use]
    pub fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// 400 for a request field or parameter that is wrong; `field` is named in the details.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", format!("{field}: {message}"))
            .with_details(json!({ "field": field }))
    }

    /// 400 for a query parameter.
    pub fn invalid_parameter(name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", format!("{name}: {message}"))
            .with_details(json!({ "parameter": name }))
    }

    /// 413 with the limit that was passed.
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("artifact is larger than the limit of {limit} bytes"),
        )
        .with_details(json!({ "limit": limit }))
        .with_header(header::CONNECTION, "close")
    }

    /// 500 whose cause is logged here and never sent to the client.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(context, error = %cause, "internal error answering an API request");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the server log has the details")
    }

    /// 503 while tds shuts down.
    pub fn shutting_down() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "tds is shutting down; try again shortly")
            .with_header(header::RETRY_AFTER, "5")
    }

    /// 404 for an environment named in the path.
    pub fn unknown_environment(name: &str) -> Self {
        let name: String = name.chars().take(100).collect();
        Self::new(StatusCode::NOT_FOUND, "unknown_environment", format!("no environment named '{name}'"))
            .with_details(json!({ "environment": name }))
    }
}

impl From<tds_core::Error> for ApiError {
    fn from(e: tds_core::Error) -> Self {
        use tds_core::Error as E;
        let message = e.to_string();
        match e {
            E::UnknownEnvironment(name) => Self::new(StatusCode::BAD_REQUEST, "unknown_environment", message)
                .with_details(json!({ "environment": name })),
            E::NotFound(id) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", message).with_details(json!({ "id": id.to_string() }))
            }
            E::InvalidState { id, status, action } => Self::new(StatusCode::CONFLICT, "invalid_state", message)
                .with_details(json!({ "id": id.to_string(), "status": status, "action": action })),
            E::InvalidInput { field, message: _ } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_field", message).with_details(json!({ "field": field }))
            }
            E::ArtifactTooLarge { limit } | E::Artifact(ArtifactError::TooLarge { limit }) => Self::too_large(limit),
            E::Artifact(ArtifactError::Io(io)) => Self::internal("artifact storage", &io),
            E::Artifact(a) => {
                let kind = match a {
                    ArtifactError::Empty(_) => "empty",
                    ArtifactError::UnsafeEntry { .. } => "unsafe_entry",
                    ArtifactError::TooManyEntries { .. } => "too_many_entries",
                    ArtifactError::UnpackedTooLarge { .. } => "unpacked_too_large",
                    ArtifactError::BadName(_) => "bad_name",
                    ArtifactError::Corrupt(_) | ArtifactError::TooLarge { .. } | ArtifactError::Io(_) => "corrupt",
                };
                Self::new(StatusCode::BAD_REQUEST, "invalid_artifact", message).with_details(json!({ "reason": kind }))
            }
            E::IdempotencyConflict { id } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_conflict", message)
                    .with_details(json!({ "id": id.to_string() }))
            }
            E::NoRollbackTarget(_) => Self::new(StatusCode::CONFLICT, "no_rollback_target", message),
            E::ShuttingDown => Self::shutting_down(),
            E::Store(_) | E::Io { .. } | E::Config(_) | E::DataDirInUse { .. } => Self::internal("core", &message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            error: ErrorBody { code: self.code.to_owned(), message: self.message, details: self.details },
        };
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", r.body_text())
    }
}

/// Turns a `serde_path_to_error` failure on a JSON body into a 400 naming the field.
pub fn json_error(err: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let inner = err.inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => syntax_error(inner),
        Category::Data => {
            let path = err.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let text = inner.to_string();
            let mut text = text.split(" at line ").next().unwrap_or(&text).to_owned();
            // serde names our Rust types ("expected struct ArtifactBody"); the client wrote JSON.
            if let Some(at) = text.find("expected struct ") {
                text.replace_range(at.., "expected a JSON object");
            }
            let within = |name: &str| if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
            let (code, field) = if text.starts_with("unknown field") {
                // The path already ends with the unknown key.
                ("unknown_field", path)
            } else if let Some(name) = text.strip_prefix("missing field `").and_then(|t| t.split('`').next()) {
                ("missing_field", within(name))
            } else if let Some(name) = text.strip_prefix("duplicate field `").and_then(|t| t.split('`').next()) {
                ("duplicate_field", within(name))
            } else {
                ("invalid_field", path)
            };
            let message = if field.is_empty() { text } else { format!("{field}: {text}") };
            ApiError::new(StatusCode::BAD_REQUEST, code, message).with_details(json!({ "field": field }))
        }
    }
}

/// 400 for a body that is not JSON (or is empty, or has trailing bytes).
pub fn syntax_error(e: &serde_json::Error) -> ApiError {
    let message = if e.classify() == serde_json::error::Category::Eof && e.line() == 1 && e.column() == 0 {
        "the request body is empty; expected a JSON object".to_owned()
    } else {
        format!("the request body is not valid JSON: {e}")
    };
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message)
        .with_details(json!({ "line": e.line(), "column": e.column() }))
}

/// 404 for every path that is not a route.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {method} {path}"))
        .with_details(json!({ "path": path }))
}

/// 405 for a known path with another method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{path} does not accept {method}"))
        .with_details(json!({ "path": path, "method": method.as_str() }))
}

/// A panic in a handler becomes a logged 500 in the envelope, not a dropped connection.
#[allow(clippy::needless_pass_by_value)] // the signature `CatchPanicLayer::custom` expects
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal("handler panicked", &detail).into_response()
}
