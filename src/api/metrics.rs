//! Metrics routes: live metrics, performance analytics, trends (JSON) and the Prometheus text
//! exposition. Every figure comes from `tds_core::metrics` (`OrchestratorHandle::metrics`,
//! `performance`, `trends`); this file only validates parameters and renders.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tds_core::metrics::{Metrics, Performance, TrendMetric, TrendPeriod, Trends};
use tds_core::model::UnknownValue;
use utoipa::{IntoParams, ToSchema};

use super::auth::Viewer;
use super::error::{ApiError, ErrorEnvelope};
use super::history::{check_environment, parse_time};
use super::{ApiQuery, AppState, NoQuery};

/// Query of the performance analytics.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PerformanceParams {
    /// Window start (RFC 3339, inclusive); default `to` minus 24 hours.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Window end (RFC 3339, exclusive); default now.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
}

/// Query of the trends.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrendParams {
    /// `deployments`, `success_rate`, `failure_rate`, `duration`, `queue_wait` or `retries` (any case).
    #[param(
        pattern = "^([Dd][Ee][Pp][Ll][Oo][Yy][Mm][Ee][Nn][Tt][Ss]|[Ss][Uu][Cc][Cc][Ee][Ss][Ss]_[Rr][Aa][Tt][Ee]|[Ff][Aa][Ii][Ll][Uu][Rr][Ee]_[Rr][Aa][Tt][Ee]|[Dd][Uu][Rr][Aa][Tt][Ii][Oo][Nn]|[Qq][Uu][Ee][Uu][Ee]_[Ww][Aa][Ii][Tt]|[Rr][Ee][Tt][Rr][Ii][Ee][Ss])$"
    )]
    pub metric: String,
    /// minute, hour (default) or day: the bucket width.
    #[param(pattern = "^([Mm][Ii][Nn][Uu][Tt][Ee]|[Hh][Oo][Uu][Rr]|[Dd][Aa][Yy])$")]
    pub period: Option<String>,
    /// Window start (RFC 3339); default: 1 h, 24 h or 30 days before `to` for minute, hour, day.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Window end (RFC 3339, exclusive); default: the end of the current minute, hour or day
    /// (UTC), so that buckets are whole periods and the last one is the period in progress.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
}

fn parse_enum<T: std::str::FromStr<Err = UnknownValue>>(name: &str, text: &str) -> Result<T, ApiError> {
    text.trim().parse().map_err(|e: UnknownValue| ApiError::invalid_parameter(name, e.to_string()))
}

type WindowParams = (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<String>);

fn window(
    state: &AppState,
    from: Option<&str>,
    to: Option<&str>,
    environment: Option<&String>,
) -> Result<WindowParams, ApiError> {
    let from = from.map(|t| parse_time("from", t)).transpose()?;
    let to = to.map(|t| parse_time("to", t)).transpose()?;
    // An empty filter is no filter, as for `status=` in history.
    let environment = environment.filter(|e| !e.is_empty());
    if let Some(env) = environment {
        check_environment(state, env)?;
    }
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::invalid_parameter("from", "must be before 'to'"));
    }
    Ok((from, to, environment.cloned()))
}

/// Live metrics: counts per status, success rate, durations, retries, queue, per environment.
#[utoipa::path(get, path = "/api/v1/deployments/metrics", tag = "analytics",
    responses(
        (status = 200, description = "Live metrics", body = MetricsDoc),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
    ))]
pub async fn live(_: Viewer, _: NoQuery, State(state): State<AppState>) -> Result<Json<Metrics>, ApiError> {
    Ok(Json(state.handle().metrics().await?))
}

/// Performance analytics over `[from, to)`: counts, rates, throughput, durations, queue wait,
/// utilization and DORA-style figures.
#[utoipa::path(get, path = "/api/v1/deployments/analytics/performance", tag = "analytics",
    params(PerformanceParams),
    responses(
        (status = 200, description = "Figures for the window", body = PerformanceDoc),
        (status = 400, description = "A bad parameter", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
    ))]
pub async fn performance(
    _: Viewer,
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<PerformanceParams>,
) -> Result<Json<Performance>, ApiError> {
    let (from, to, env) = window(&state, p.from.as_deref(), p.to.as_deref(), p.environment.as_ref())?;
    Ok(Json(state.handle().performance(from, to, env).await?))
}

/// A metric in buckets of a period over a rolling window, with min/max/mean.
#[utoipa::path(get, path = "/api/v1/deployments/analytics/trends", tag = "analytics",
    params(TrendParams),
    responses(
        (status = 200, description = "The buckets and their summary", body = TrendsDoc),
        (status = 400, description = "A bad parameter", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
    ))]
pub async fn trends(
    _: Viewer,
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<TrendParams>,
) -> Result<Json<Trends>, ApiError> {
    let metric: TrendMetric = parse_enum("metric", &p.metric)?;
    let period: TrendPeriod = p.period.as_deref().map_or(Ok(TrendPeriod::Hour), |t| parse_enum("period", t))?;
    let (from, to, env) = window(&state, p.from.as_deref(), p.to.as_deref(), p.environment.as_ref())?;
    Ok(Json(state.handle().trends(metric, period, from, to, env).await?))
}

/// Prometheus text exposition (version 0.0.4) of the live metrics.
#[utoipa::path(get, path = "/metrics", tag = "analytics",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 400, description = "A query parameter (this route takes none)", body = ErrorEnvelope),
        (status = 401, description = "No or wrong token", body = ErrorEnvelope),
    ))]
pub async fn prometheus(_: Viewer, _: NoQuery, State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = state.handle().metrics().await?;
    let mut response = render_prometheus(&m).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(response)
}

/// Prometheus label values escape `\`, `"` and newlines.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders metrics in the Prometheus text format.
pub fn render_prometheus(m: &Metrics) -> String {
    let mut out = String::with_capacity(2048);
    out.push_str("# HELP tds_deployments Deployments in the store by status.\n# TYPE tds_deployments gauge\n");
    let c = &m.counts;
    for (status, n) in [
        ("queued", c.queued),
        ("running", c.running),
        ("rolling_back", c.rolling_back),
        ("retry_wait", c.retry_wait),
        ("succeeded", c.succeeded),
        ("failed", c.failed),
        ("cancelled", c.cancelled),
    ] {
        let _ = writeln!(out, "tds_deployments{{status=\"{status}\"}} {n}");
    }
    let scalar = |out: &mut String, name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    scalar(
        &mut out,
        "tds_retries_total",
        "counter",
        "Automatic retries over all deployments.",
        m.total_retries.to_string(),
    );
    scalar(&mut out, "tds_queue_size", "gauge", "Deployments waiting in the queue.", m.queue_size.to_string());
    scalar(&mut out, "tds_running", "gauge", "Deployments holding a slot.", m.running.to_string());
    scalar(
        &mut out,
        "tds_success_rate",
        "gauge",
        "succeeded / (succeeded + failed); NaN when there are none.",
        m.success_rate.map_or_else(|| "NaN".to_owned(), |r| r.to_string()),
    );
    let _ = writeln!(
        out,
        "# HELP tds_duration_milliseconds Duration of finished non-cancelled deployments.\n\
         # TYPE tds_duration_milliseconds summary"
    );
    for (q, v) in [("0.5", m.duration.p50_ms), ("0.95", m.duration.p95_ms)] {
        let value = v.map_or_else(|| "NaN".to_owned(), |v| v.to_string());
        let _ = writeln!(out, "tds_duration_milliseconds{{quantile=\"{q}\"}} {value}");
    }
    let sum = m.duration.mean_ms.map_or(0.0, |mean| mean * m.duration.count as f64);
    let _ = writeln!(out, "tds_duration_milliseconds_sum {sum}\ntds_duration_milliseconds_count {}", m.duration.count);
    for (name, help, get) in [
        ("tds_environment_running", "Running deployments per environment.", 0),
        ("tds_environment_limit", "Concurrency limit per environment.", 1),
        ("tds_environment_queued", "Queued deployments per environment.", 2),
        ("tds_environment_available", "1 when the environment's probe passes.", 3),
        ("tds_environment_paused", "1 when the environment is paused.", 4),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for e in &m.environments {
            let v = match get {
                0 => e.running,
                1 => e.limit,
                2 => e.queued,
                3 => u32::from(e.available),
                _ => u32::from(e.paused),
            };
            let _ = writeln!(out, "{name}{{environment=\"{}\"}} {v}", label(&e.name));
        }
    }
    out
}

/// Counts per status.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StatusCounts)]
pub struct StatusCountsDoc {
    pub queued: u64,
    pub running: u64,
    pub rolling_back: u64,
    pub retry_wait: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// Duration statistics of finished non-cancelled deployments (nearest-rank percentiles).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DurationStats)]
pub struct DurationStatsDoc {
    pub count: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
}

/// Live load of one environment.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EnvironmentMetrics)]
pub struct EnvironmentMetricsDoc {
    pub name: String,
    pub running: u32,
    pub limit: u32,
    pub queued: u32,
    pub available: bool,
    pub paused: bool,
    /// running ÷ limit.
    pub utilization: f64,
}

/// `GET /deployments/metrics`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Metrics)]
pub struct MetricsDoc {
    pub generated_at: DateTime<Utc>,
    pub total: u64,
    pub counts: StatusCountsDoc,
    /// succeeded ÷ (succeeded + failed); null when both are 0.
    pub success_rate: Option<f64>,
    pub in_flight: u64,
    pub cancelled: u64,
    pub duration: DurationStatsDoc,
    pub total_retries: u64,
    pub queue_size: u64,
    pub running: u64,
    pub environments: Vec<EnvironmentMetricsDoc>,
}

/// Busy slot-seconds ÷ capacity slot-seconds of one environment over the window.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Utilization)]
pub struct UtilizationDoc {
    pub environment: String,
    pub limit: u32,
    pub busy_slot_seconds: f64,
    pub capacity_slot_seconds: f64,
    pub utilization: f64,
}

/// DORA-style figures for test environments.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DoraFigures)]
pub struct DoraFiguresDoc {
    pub deployment_frequency_per_day: f64,
    pub change_failure_rate: Option<f64>,
    pub time_to_restore_ms: Option<f64>,
    pub restored_episodes: u64,
    pub lead_time_ms: Option<f64>,
}

/// DORA figures of one environment.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EnvironmentDora)]
pub struct EnvironmentDoraDoc {
    pub environment: String,
    pub deployment_frequency_per_day: f64,
    pub change_failure_rate: Option<f64>,
    pub time_to_restore_ms: Option<f64>,
    pub restored_episodes: u64,
    pub lead_time_ms: Option<f64>,
}

/// DORA figures overall and per environment.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Dora)]
pub struct DoraDoc {
    pub overall: DoraFiguresDoc,
    pub environments: Vec<EnvironmentDoraDoc>,
}

/// `GET /deployments/analytics/performance`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Performance)]
pub struct PerformanceDoc {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub environment: Option<String>,
    pub submitted: u64,
    pub finished: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub success_rate: Option<f64>,
    pub failure_rate: Option<f64>,
    pub throughput_per_hour: f64,
    pub duration: DurationStatsDoc,
    pub queue_wait_mean_ms: Option<f64>,
    pub utilization: Vec<UtilizationDoc>,
    pub dora: DoraDoc,
}

/// One trend bucket `[start, end)`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Bucket)]
pub struct BucketDoc {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub count: u64,
    /// null for an empty bucket of a rate or a mean.
    pub value: Option<f64>,
}

/// min/max/mean over the non-empty buckets.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TrendSummary)]
pub struct SummaryDoc {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub non_empty_buckets: u64,
}

/// `GET /deployments/analytics/trends`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Trends)]
pub struct TrendsDoc {
    pub metric: String,
    pub period: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub environment: Option<String>,
    pub buckets: Vec<BucketDoc>,
    pub summary: SummaryDoc,
}
