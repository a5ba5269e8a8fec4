//! `GET /deployments/history`: paging and filters over the durable store (case C14).
//!
//! Policy: `limit` defaults to 50 and is capped at [`MAX_LIMIT`] (the answer says which limit
//! applied); `limit=0` answers only the total. Negative, non-numeric or overflowing numbers are
//! a 400 naming the parameter. An offset past the end is an empty page with the right total.
//! Order is newest first with the id as tie-break, so paging never repeats or skips.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tds_core::model::{DeploymentView, StatusKind};
use tds_core::store::HistoryQuery;
use utoipa::{IntoParams, ToSchema};

use super::auth::Viewer;
use super::error::{ApiError, ErrorEnvelope};
use super::openapi::DeploymentDoc;
use super::{ApiQuery, AppState};

/// Largest page; larger requests get this many.
pub const MAX_LIMIT: u32 = 500;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 50;

/// Query of the history. Values are parsed by the handler so that errors name the parameter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Page size, default 50, capped at 500 (the answer's `limit` says what applied).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub limit: Option<String>,
    /// Items to skip, default 0, at most 2^63 - 1.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub offset: Option<String>,
    /// One status or a comma-separated list (any case): `queued`, `running`, `rolling_back`,
    /// `retry_wait`, `succeeded`, `failed`, `cancelled`.
    pub status: Option<String>,
    /// A configured environment.
    pub environment: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
    /// Keyset paging: the items after this deployment id (pass the previous page's
    /// `next_before`); unlike `offset`, never repeats or skips while deployments are added.
    #[param(value_type = Option<String>, pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub before: Option<String>,
}

/// A page of history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryResponse {
    #[schema(value_type = Vec<DeploymentDoc>)]
    pub items: Vec<DeploymentView>,
    /// How many deployments match the filters (all pages).
    pub total: u64,
    /// The page size that applied (after the cap).
    pub limit: u32,
    pub offset: u64,
    /// The id to pass as `before` for the next page (absent on the last page).
    #[schema(value_type = Option<String>)]
    pub next_before: Option<String>,
}

/// Parses a non-negative integer parameter (at most `i64::MAX`, the store's bound), naming it
/// on failure.
pub fn parse_count(name: &str, text: &str) -> Result<u64, ApiError> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(ApiError::invalid_parameter(name, format!("'{t}' is negative; expected 0 or more")));
    }
    let n = t.parse::<u64>().map_err(|e| {
        let shown: String = t.chars().take(40).collect();
        let why = if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
            "is too large"
        } else {
            "is not a whole number"
        };
        ApiError::invalid_parameter(name, format!("'{shown}' {why}"))
    })?;
    if i64::try_from(n).is_err() {
        return Err(ApiError::invalid_parameter(name, format!("'{n}' is too large (at most 2^63 - 1)")));
    }
    Ok(n)
}

/// Parses an RFC 3339 time parameter.
pub fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text.trim()).map(|t| t.with_timezone(&Utc)).map_err(|_| {
        let shown: String = text.chars().take(40).collect();
        ApiError::invalid_parameter(name, format!("'{shown}' is not an RFC 3339 time (e.g. 2026-12-03T10:41:07Z)"))
    })
}

/// Parses `status=a,b` (any case).
pub fn parse_statuses(text: &str) -> Result<Vec<StatusKind>, ApiError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|e: tds_core::model::UnknownValue| ApiError::invalid_parameter("status", e.to_string()))
        })
        .collect()
}

/// Checks an `environment` filter against the configuration (400 naming it).
pub fn check_environment(state: &AppState, name: &str) -> Result<(), ApiError> {
    if state.handle().config().environment(name).is_none() {
        return Err(tds_core::Error::UnknownEnvironment(name.chars().take(100).collect()).into());
    }
    Ok(())
}

impl HistoryParams {
    /// The store query these parameters ask for.
    pub fn to_query(&self, state: &AppState) -> Result<HistoryQuery, ApiError> {
        let limit = match &self.limit {
            Some(t) => parse_count("limit", t)?.min(u64::from(MAX_LIMIT)) as u32,
            None => DEFAULT_LIMIT,
        };
        let offset = match &self.offset {
            Some(t) => parse_count("offset", t)?,
            None => 0,
        };
        let statuses = self.status.as_deref().map(parse_statuses).transpose()?.unwrap_or_default();
        // An empty filter is no filter, as for `status=`.
        let environment = self.environment.clone().filter(|e| !e.is_empty());
        if let Some(env) = &environment {
            check_environment(state, env)?;
        }
        let from = self.from.as_deref().map(|t| parse_time("from", t)).transpose()?;
        let to = self.to.as_deref().map(|t| parse_time("to", t)).transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(ApiError::invalid_parameter("from", "must not be after 'to'"));
        }
        let before =
            match self.before.as_deref() {
                None => None,
                Some(t) => Some(t.trim().parse().map_err(|e: tds_core::model::IdParseError| {
                    ApiError::invalid_parameter("before", e.to_string())
                })?),
            };
        Ok(HistoryQuery { limit, offset, statuses, environment, from, to, before })
    }
}

/// Past deployments, newest first, with filters and paging.
#[utoipa::path(get, path = "/api/v1/deployments/history", tag = "deployments",
    params(HistoryParams),
    responses(
        (status = 200, description = "A page and the total", body = HistoryResponse),
        (status = 400, description = "A bad parameter (named in details.parameter)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
    ))]
pub async fn list(
    _: Viewer,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let query = params.to_query(&state)?;
    if let Some(before) = query.before {
        // An unknown cursor is a mistake to name, not an empty page.
        state
            .handle()
            .deployment(before)
            .await
            .map_err(|_| ApiError::invalid_parameter("before", format!("no deployment with id {before}")))?;
    }
    let page = state.handle().history(query).await?;
    let next_before = (page.limit > 0 && page.items.len() == page.limit as usize)
        .then(|| page.items.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Json(HistoryResponse {
        items: page.items,
        total: page.total,
        limit: page.limit,
        offset: page.offset,
        next_before,
    }))
}
