//! Environment routes: list and read (viewer), pause, resume and change the limit (admin).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use tds_core::model::EnvironmentView;
use utoipa::ToSchema;

use super::auth::{Admin, Viewer};
use super::error::{ApiError, ErrorEnvelope};
use super::openapi::EnvironmentDoc;
use super::{ApiJson, ApiPath, AppState, NoQuery};

/// Highest accepted `max_concurrent`.
pub const MAX_LIMIT: u32 = 1000;

/// `PUT /environments/{name}/limit`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitBody {
    /// New concurrency limit, 1 to 1000 (to stop an environment, pause it).
    #[schema(minimum = 1, maximum = 1000, example = 2)]
    pub max_concurrent: u32,
}

fn known(state: &AppState, name: &str) -> Result<(), ApiError> {
    if state.handle().config().environment(name).is_none() {
        return Err(ApiError::unknown_environment(name));
    }
    Ok(())
}

/// Every environment, in configuration order: limit, running, queued, available, paused,
/// current release, last result.
#[utoipa::path(get, path = "/api/v1/environments", tag = "environments",
    responses(
        (status = 200, description = "All environments", body = Vec<EnvironmentDoc>),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
    ))]
pub async fn list(_: Viewer, _: NoQuery, State(state): State<AppState>) -> Json<Vec<EnvironmentView>> {
    Json(state.handle().snapshot().environments.iter().map(|e| (**e).clone()).collect())
}

/// One environment.
#[utoipa::path(get, path = "/api/v1/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "Environment name")),
    responses(
        (status = 200, description = "The environment", body = EnvironmentDoc),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 404, description = "No such environment", body = ErrorEnvelope),
    ))]
pub async fn get_one(
    _: Viewer,
    _: NoQuery,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<EnvironmentView>, ApiError> {
    known(&state, &name)?;
    state.handle().environment(&name).map(Json).ok_or_else(|| ApiError::unknown_environment(&name))
}

/// Pauses (drains) an environment: running deployments finish, nothing new starts.
#[utoipa::path(put, path = "/api/v1/environments/{name}/pause", tag = "environments",
    params(("name" = String, Path, description = "Environment name")),
    responses(
        (status = 200, description = "Paused", body = EnvironmentDoc),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 403, description = "Needs the admin role", body = ErrorEnvelope),
        (status = 404, description = "No such environment", body = ErrorEnvelope),
        (status = 503, description = "Shutting down", body = ErrorEnvelope),
    ))]
pub async fn pause(
    _: Admin,
    _: NoQuery,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<EnvironmentView>, ApiError> {
    known(&state, &name)?;
    Ok(Json(state.handle().set_paused(&name, true).await?))
}

/// Resumes a paused environment.
#[utoipa::path(put, path = "/api/v1/environments/{name}/resume", tag = "environments",
    params(("name" = String, Path, description = "Environment name")),
    responses(
        (status = 200, description = "Resumed", body = EnvironmentDoc),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 403, description = "Needs the admin role", body = ErrorEnvelope),
        (status = 404, description = "No such environment", body = ErrorEnvelope),
        (status = 503, description = "Shutting down", body = ErrorEnvelope),
    ))]
pub async fn resume(
    _: Admin,
    _: NoQuery,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<EnvironmentView>, ApiError> {
    known(&state, &name)?;
    Ok(Json(state.handle().set_paused(&name, false).await?))
}

/// Changes an environment's concurrency limit live (kept across restarts).
#[utoipa::path(put, path = "/api/v1/environments/{name}/limit", tag = "environments",
    params(("name" = String, Path, description = "Environment name")),
    request_body = LimitBody,
    responses(
        (status = 200, description = "The environment with its new limit", body = EnvironmentDoc),
        (status = 400, description = "Bad body", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
        (status = 403, description = "Needs the admin role", body = ErrorEnvelope),
        (status = 404, description = "No such environment", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 415, description = "Not JSON", body = ErrorEnvelope),
        (status = 503, description = "Shutting down", body = ErrorEnvelope),
    ))]
pub async fn limit(
    _: Admin,
    _: NoQuery,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<LimitBody>,
) -> Result<Json<EnvironmentView>, ApiError> {
    known(&state, &name)?;
    if body.max_concurrent == 0 || body.max_concurrent > MAX_LIMIT {
        return Err(ApiError::invalid(
            "max_concurrent",
            format!("{} is not between 1 and {MAX_LIMIT} (pause the environment to stop it)", body.max_concurrent),
        ));
    }
    Ok(Json(state.handle().set_limit(&name, body.max_concurrent).await?))
}
