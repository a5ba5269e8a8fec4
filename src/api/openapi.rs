//! The `OpenAPI` document, generated from the handlers' `#[utoipa::path]` annotations and the
//! schemas below, served at `GET /api/v1/openapi.json` (open, like `/healthz`: it holds no data).
//!
//! `tds-core` has no HTTP or `OpenAPI` code, so the shapes it serializes (`DeploymentView`,
//! `EnvironmentView`, log records, events) are described here by documentation twins; a test
//! checks that every serialized field appears in its twin and the reverse.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{deployments, environments, error, events, history, logs, metrics};

/// A priority on input: any case of low, normal, high, critical (output is lowercase).
pub const PRIORITY_PATTERN: &str =
    "^(?:[Ll][Oo][Ww]|[Nn][Oo][Rr][Mm][Aa][Ll]|[Hh][Ii][Gg][Hh]|[Cc][Rr][Ii][Tt][Ii][Cc][Aa][Ll])$";

/// The document: every route, schema and the bearer scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tds",
        description = "Deploy builds to shared test environments: submit artifacts, follow their logs and \
            status, manage environments. Every error is `{\"error\": {\"code\", \"message\", \"details\"}}`. \
            Auth: `Authorization: Bearer <token>` with the roles viewer < operator < admin \
            (no tokens configured: open, loopback only)."
    ),
    paths(
        super::healthz,
        deployments::submit,
        deployments::status,
        deployments::detail,
        deployments::cancel,
        deployments::retry,
        deployments::rollback,
        deployments::priority,
        logs::logs,
        history::list,
        environments::list,
        environments::get_one,
        environments::pause,
        environments::resume,
        environments::limit,
        events::stream,
        metrics::live,
        metrics::performance,
        metrics::trends,
        metrics::prometheus,
        serve,
    ),
    components(schemas(
        DeploymentDoc, EnvironmentDoc, LogRecordDoc, EventDoc, error::ErrorEnvelope, error::ErrorBody,
    )),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags(
        (name = "deployments", description = "Submit, watch and steer deployments"),
        (name = "environments", description = "Environments: load, limits, pause"),
        (name = "analytics", description = "Metrics, performance and trends"),
        (name = "meta", description = "Health, events, this document"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("opaque").build()),
        );
    }
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
}

/// This `OpenAPI` document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)))]
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

/// The lowercase status names.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Status)]
pub enum StatusDoc {
    Queued,
    Running,
    RollingBack,
    RetryWait,
    Succeeded,
    Failed,
    Cancelled,
}

/// The lowercase priority names (input accepts any case).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Priority)]
pub enum PriorityDoc {
    Low,
    Normal,
    High,
    Critical,
}

/// The plan's phases, plus `rollback`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Phase)]
pub enum PhaseDoc {
    Prepare,
    Steps,
    Activate,
    Verify,
    Finalize,
    Rollback,
}

/// The running step: 1-based index of total, with its name.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Step)]
pub struct StepDoc {
    pub index: u32,
    pub total: u32,
    pub name: String,
}

/// What was uploaded.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Artifact)]
pub struct ArtifactDoc {
    pub name: String,
    pub size: u64,
    /// Lowercase hex; the key in the artifact store.
    pub sha256: String,
}

/// A deployment as every client sees it (`PRODUCT.md`, "Shapes").
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Deployment)]
pub struct DeploymentDoc {
    /// ULID: sorts by creation time.
    #[schema(example = "01JF6Z8W4X3Q2M5N7P9R1S3T5V")]
    pub id: String,
    pub environment: String,
    pub version: String,
    pub priority: PriorityDoc,
    pub status: StatusDoc,
    pub phase: Option<PhaseDoc>,
    pub step: Option<StepDoc>,
    #[schema(minimum = 0, maximum = 100)]
    pub progress_percent: u8,
    /// 1-based number of the current (or last) attempt.
    pub attempt: u32,
    /// Automatic retries used since the submission or the last manual retry.
    pub retry_count: u32,
    pub max_retries: u32,
    pub artifact: ArtifactDoc,
    pub params: BTreeMap<String, String>,
    pub requested_by: String,
    /// Why a queued deployment is not running yet.
    pub wait_reason: Option<String>,
    pub error: Option<String>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// Set exactly for succeeded, failed and cancelled.
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    /// Submission (or manual retry) to first start.
    pub queue_wait_ms: Option<u64>,
    /// A cancel of the running attempt is in progress.
    pub cancel_requested: bool,
}

/// The release `current` points at.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Release)]
pub struct ReleaseDoc {
    /// Folder under `releases/`: `<deployment id>-<attempt>`.
    pub name: String,
    pub deployment_id: String,
    pub version: String,
}

/// An environment: limits, load, health, and what is live there.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Environment)]
pub struct EnvironmentDoc {
    pub name: String,
    pub max_concurrent: u32,
    /// Attempts holding a slot (running or rolling back).
    pub running: u32,
    pub queued: u32,
    /// 0 when paused or unavailable.
    pub free_slots: u32,
    pub available: bool,
    pub unavailable_since: Option<DateTime<Utc>>,
    pub probe_error: Option<String>,
    pub paused: bool,
    pub current_release: Option<ReleaseDoc>,
    /// succeeded, failed or cancelled: how the last deployment here ended.
    pub last_result: Option<String>,
    pub last_result_at: Option<DateTime<Utc>>,
}

/// One log record (one line of `format=json`, JSON Lines).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LogRecord)]
pub struct LogRecordDoc {
    pub ts: DateTime<Utc>,
    /// Position in the attempt's log, from 0.
    pub seq: u64,
    pub attempt: u32,
    /// info, warn, error.
    pub level: String,
    /// `queued`, `started`, `phase_started`, `output`, …; `status` is the final record of a follow.
    pub event: String,
    pub phase: Option<PhaseDoc>,
    pub step: Option<String>,
    /// stdout or stderr, for output lines.
    pub stream: Option<String>,
    /// The original text; control characters are escaped by JSON, not removed.
    pub message: String,
    /// The line was longer than the bound and continues in the next record.
    pub split: Option<bool>,
}

/// One server-sent event's `data`: the new state of a deployment or an environment.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventDoc {
    /// Also the SSE `id:`, for `Last-Event-ID`.
    pub id: u64,
    pub at: DateTime<Utc>,
    /// `deployment` or `environment` (also the SSE `event:` name).
    #[serde(rename = "type")]
    pub kind: String,
    /// A Deployment or an Environment.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_builds_and_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("valid JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for p in [
            "/api/v1/deployments",
            "/api/v1/deployments/{id}/status",
            "/api/v1/deployments/{id}/logs",
            "/api/v1/deployments/history",
            "/api/v1/events",
            "/api/v1/environments/{name}/limit",
            "/api/v1/deployments/analytics/trends",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
