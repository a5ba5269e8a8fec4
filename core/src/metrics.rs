//! Metrics, performance analytics, trends and DORA-style figures, computed from the durable
//! store so that they survive restarts.
//!
//! Definitions (also in the API docs):
//! - *success rate* = succeeded ÷ (succeeded + failed); `null` when both are 0. Cancelled and
//!   unfinished deployments are counted apart and never enter a rate.
//! - *duration* = a deployment's `duration_ms`: first start to the end, measured on the monotonic
//!   clock (retries and backoff included); statistics cover succeeded and failed ones only.
//!   Percentiles are nearest-rank: p95 is the value at rank ⌈0.95 · n⌉ of the sorted durations.
//! - *queue wait* = submission (or manual retry) to first start, monotonic.
//! - A window `[from, to)` selects finished deployments by `finished_at`, submissions by
//!   `created_at`, starts by `started_at`. The default window is the last 24 hours, rolling
//!   (ending now), not the calendar day.
//! - *throughput* = finished non-cancelled deployments per hour of the window.
//! - *utilization* = busy slot-seconds ÷ (current limit × window seconds), where an attempt is
//!   busy from its start for its monotonic run time (until now while it runs).
//! - *trend buckets* start at `from` and step by the period; the last one ends at `to`. Empty
//!   buckets are present with `count` 0 and `value` `null` (rates, means) or `0` (counts);
//!   min/max/mean are over the buckets with `count > 0`.
//! - DORA, per environment and overall, over the window: *deployment frequency* = succeeded per
//!   day; *change failure rate* = failed ÷ (succeeded + failed); *time to restore* = from the
//!   first failure after a success (or the first ever) to the next success on the same
//!   environment, mean over the failure episodes that started in the window and were restored
//!   (from the finish times of two deployments: wall-clock times, clamped at zero);
//!   *lead time* = submission to success, mean over succeeded ones: queue wait + duration, both
//!   monotonic, so a wall-clock jump cannot bend it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::handle::OrchestratorHandle;
use crate::model::UnknownValue;

/// Longest accepted analytics window.
pub const MAX_WINDOW_DAYS: i64 = 400;
/// Most buckets a trend may have.
pub const MAX_BUCKETS: i64 = 2000;

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub queued: u64,
    pub running: u64,
    pub rolling_back: u64,
    pub retry_wait: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl StatusCounts {
    /// Every deployment counted.
    pub fn total(&self) -> u64 {
        self.queued + self.running + self.rolling_back + self.retry_wait + self.succeeded + self.failed + self.cancelled
    }

    /// Not finished yet.
    pub fn in_flight(&self) -> u64 {
        self.queued + self.running + self.rolling_back + self.retry_wait
    }

    /// Adds one deployment of `status` (by wire name); unknown names are ignored.
    pub fn add(&mut self, status: &str, n: u64) {
        match status {
            "queued" => self.queued += n,
            "running" => self.running += n,
            "rolling_back" => self.rolling_back += n,
            "retry_wait" => self.retry_wait += n,
            "succeeded" => self.succeeded += n,
            "failed" => self.failed += n,
            "cancelled" => self.cancelled += n,
            _ => {}
        }
    }
}

/// `a ÷ (a + b)`, or `None` when both are zero.
pub fn rate(a: u64, b: u64) -> Option<f64> {
    let total = a + b;
    (total > 0).then(|| a as f64 / total as f64)
}

/// Nearest-rank percentile of sorted values: the value at rank ⌈p/100 · n⌉.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// 0-based index of the nearest-rank percentile in `n` sorted values.
pub fn percentile_index(n: u64, p: f64) -> Option<u64> {
    (n > 0).then(|| ((p / 100.0 * n as f64).ceil() as u64).clamp(1, n) - 1)
}

/// Duration statistics, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DurationStats {
    pub count: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
}

impl DurationStats {
    /// From sorted values.
    pub fn from_sorted(sorted: &[u64]) -> Self {
        let count = sorted.len() as u64;
        let mean_ms = (count > 0).then(|| sorted.iter().map(|&v| v as f64).sum::<f64>() / count as f64);
        Self { count, mean_ms, p50_ms: percentile(sorted, 50.0), p95_ms: percentile(sorted, 95.0) }
    }
}

/// What the store computes for [`Metrics`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreFigures {
    pub counts: StatusCounts,
    /// Attempts beyond the first, over all deployments (automatic and manual retries).
    pub total_retries: u64,
    pub duration: DurationStats,
}

/// Live state of one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvironmentMetrics {
    pub name: String,
    pub running: u32,
    pub limit: u32,
    pub queued: u32,
    pub available: bool,
    pub paused: bool,
    /// running ÷ limit, now.
    pub utilization: f64,
}

/// `GET /deployments/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub generated_at: DateTime<Utc>,
    pub total: u64,
    pub counts: StatusCounts,
    pub success_rate: Option<f64>,
    /// Deployments not finished (queued, running, rolling back, waiting to retry).
    pub in_flight: u64,
    pub cancelled: u64,
    pub duration: DurationStats,
    pub total_retries: u64,
    /// Waiting for a slot (`queued`).
    pub queue_size: u64,
    /// Holding a slot (`running` + `rolling_back`).
    pub running: u64,
    pub environments: Vec<EnvironmentMetrics>,
}

/// A resolved `[from, to)` window with an optional environment filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub environment: Option<String>,
}

impl Window {
    /// Length in seconds.
    pub fn seconds(&self) -> f64 {
        (self.to - self.from).num_milliseconds() as f64 / 1000.0
    }
}

/// Figures of one window, as the store computes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowFigures {
    pub submitted: u64,
    /// Finished in the window, by outcome.
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub duration: DurationStats,
    pub queue_wait_count: u64,
    pub queue_wait_mean_ms: Option<f64>,
    /// Busy slot-milliseconds per environment.
    pub busy_ms: Vec<(String, u64)>,
    /// Sum of submission → success over succeeded ones (ms) and their count.
    pub lead_time_total_ms: u64,
    /// Restore times of failure episodes per environment (ms).
    pub restores: Vec<(String, u64)>,
    /// Outcomes per environment, for the per-environment DORA figures.
    pub per_environment: Vec<(String, Outcomes)>,
}

/// Succeeded and failed counts and the summed lead time of the succeeded ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    pub succeeded: u64,
    pub failed: u64,
    pub lead_time_total_ms: u64,
}

/// Utilization of one environment over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Utilization {
    pub environment: String,
    pub limit: u32,
    pub busy_slot_seconds: f64,
    pub capacity_slot_seconds: f64,
    pub utilization: f64,
}

/// DORA-style figures for test environments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoraFigures {
    /// Succeeded deployments per day of the window.
    pub deployment_frequency_per_day: f64,
    pub change_failure_rate: Option<f64>,
    /// Mean time from a failure episode's first failure to the next success.
    pub time_to_restore_ms: Option<f64>,
    pub restored_episodes: u64,
    /// Mean submission → success.
    pub lead_time_ms: Option<f64>,
}

/// DORA figures overall and per environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dora {
    pub overall: DoraFigures,
    pub environments: Vec<EnvironmentDora>,
}

/// DORA figures of one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvironmentDora {
    pub environment: String,
    #[serde(flatten)]
    pub figures: DoraFigures,
}

/// `GET /deployments/analytics/performance`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Performance {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub environment: Option<String>,
    pub submitted: u64,
    /// Finished in the window (any outcome).
    pub finished: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub success_rate: Option<f64>,
    pub failure_rate: Option<f64>,
    pub throughput_per_hour: f64,
    pub duration: DurationStats,
    pub queue_wait_mean_ms: Option<f64>,
    pub utilization: Vec<Utilization>,
    pub dora: Dora,
}

macro_rules! param_enum {
    ($ty:ident, $what:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl $ty {
            /// Accepted names.
            pub const NAMES: &'static [&'static str] = &[$($name),+];
            /// Wire name.
            pub const fn as_str(self) -> &'static str { match self { $(Self::$variant => $name),+ } }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $(if s.eq_ignore_ascii_case($name) { return Ok(Self::$variant); })+
                Err(UnknownValue { what: $what, value: s.to_owned(), expected: Self::NAMES })
            }
        }
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }
    };
}

/// What a trend measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrendMetric {
    /// Finished (succeeded + failed) per bucket.
    Deployments,
    SuccessRate,
    FailureRate,
    /// Mean duration of those finished in the bucket.
    Duration,
    /// Mean queue wait of those first started in the bucket.
    QueueWait,
    /// Retry attempts started in the bucket.
    Retries,
}

param_enum!(TrendMetric, "metric", [
    Deployments => "deployments", SuccessRate => "success_rate", FailureRate => "failure_rate",
    Duration => "duration", QueueWait => "queue_wait", Retries => "retries",
]);

/// Bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrendPeriod {
    /// For the dashboard's short windows.
    Minute,
    Hour,
    Day,
}

param_enum!(TrendPeriod, "period", [Minute => "minute", Hour => "hour", Day => "day"]);

impl TrendPeriod {
    /// The bucket width.
    pub fn delta(self) -> TimeDelta {
        match self {
            TrendPeriod::Minute => TimeDelta::minutes(1),
            TrendPeriod::Hour => TimeDelta::hours(1),
            TrendPeriod::Day => TimeDelta::days(1),
        }
    }

    /// The end of the period `t` falls in (UTC; `t` itself when it is a boundary): the default
    /// end of a trend, so that its buckets are whole minutes, hours or days and the last one
    /// is the period in progress.
    pub fn end_of(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let step = self.delta().num_milliseconds();
        let ms = t.timestamp_millis();
        let exact = ms.rem_euclid(step) == 0 && t.timestamp_subsec_nanos().is_multiple_of(1_000_000);
        let end = if exact { ms } else { (ms.div_euclid(step) + 1) * step };
        DateTime::from_timestamp_millis(end).unwrap_or(t)
    }

    /// Default window when `from` is not given: 60 minutes, 24 hours or 30 days.
    pub fn default_span(self) -> TimeDelta {
        match self {
            TrendPeriod::Minute => TimeDelta::hours(1),
            TrendPeriod::Hour => TimeDelta::hours(24),
            TrendPeriod::Day => TimeDelta::days(30),
        }
    }
}

/// A trend request after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrendSpec {
    pub metric: TrendMetric,
    pub period: TrendPeriod,
    pub window: Window,
}

impl TrendSpec {
    /// Bucket boundaries `[start, end)`, the last one ending at `to`.
    pub fn buckets(&self) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let step = self.period.delta();
        let mut out = Vec::new();
        let mut start = self.window.from;
        while start < self.window.to {
            let end = (start + step).min(self.window.to);
            out.push((start, end));
            start = end;
        }
        out
    }
}

/// Raw figures of one bucket, as the store computes them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BucketFigures {
    /// Size of the bucket's population (finished, started, or retry attempts).
    pub count: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Sum and count of the averaged quantity (duration or queue wait).
    pub sum_ms: f64,
    pub valued: u64,
}

/// One bucket of a trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub count: u64,
    pub value: Option<f64>,
}

/// min/max/mean over the non-empty buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub non_empty_buckets: u64,
}

/// `GET /deployments/analytics/trends`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trends {
    pub metric: TrendMetric,
    pub period: TrendPeriod,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub environment: Option<String>,
    pub buckets: Vec<Bucket>,
    pub summary: Summary,
}

/// Turns raw bucket figures into the metric's values and the summary.
pub fn trend_from_figures(spec: &TrendSpec, figures: &[BucketFigures]) -> Trends {
    let buckets: Vec<Bucket> = spec
        .buckets()
        .into_iter()
        .zip(figures.iter().copied().chain(std::iter::repeat(BucketFigures::default())))
        .map(|((start, end), f)| {
            let value = match spec.metric {
                TrendMetric::Deployments | TrendMetric::Retries => Some(f.count as f64),
                TrendMetric::SuccessRate => rate(f.succeeded, f.failed),
                TrendMetric::FailureRate => rate(f.failed, f.succeeded),
                TrendMetric::Duration | TrendMetric::QueueWait => (f.valued > 0).then(|| f.sum_ms / f.valued as f64),
            };
            Bucket { start, end, count: f.count, value }
        })
        .collect();
    let values: Vec<f64> = buckets.iter().filter(|b| b.count > 0).filter_map(|b| b.value).collect();
    let summary = Summary {
        min: values.iter().copied().reduce(f64::min),
        max: values.iter().copied().reduce(f64::max),
        mean: (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64),
        non_empty_buckets: values.len() as u64,
    };
    Trends {
        metric: spec.metric,
        period: spec.period,
        from: spec.window.from,
        to: spec.window.to,
        environment: spec.window.environment.clone(),
        buckets,
        summary,
    }
}

impl OrchestratorHandle {
    fn window(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        environment: Option<String>,
        default_span: TimeDelta,
    ) -> Result<Window> {
        if let Some(env) = &environment
            && self.config().environment(env).is_none()
        {
            return Err(Error::UnknownEnvironment(env.clone()));
        }
        let to = to.unwrap_or_else(|| self.now());
        let from = from.unwrap_or(to - default_span);
        if from >= to {
            return Err(Error::invalid("from", "must be before `to`"));
        }
        if to - from > TimeDelta::days(MAX_WINDOW_DAYS) {
            return Err(Error::invalid("from", format!("the window may span at most {MAX_WINDOW_DAYS} days")));
        }
        Ok(Window { from, to, environment })
    }

    /// Live metrics: counts and durations from the store, environments from the live view.
    pub async fn metrics(&self) -> Result<Metrics> {
        let store = self.store();
        let figures = tokio::task::spawn_blocking(move || store.figures()).await.map_err(join_error)??;
        let environments = self
            .snapshot()
            .environments
            .iter()
            .map(|e| EnvironmentMetrics {
                name: e.name.clone(),
                running: e.running,
                limit: e.max_concurrent,
                queued: e.queued,
                available: e.available,
                paused: e.paused,
                utilization: if e.max_concurrent == 0 {
                    0.0
                } else {
                    f64::from(e.running) / f64::from(e.max_concurrent)
                },
            })
            .collect();
        let c = figures.counts;
        Ok(Metrics {
            generated_at: self.now(),
            total: c.total(),
            counts: c,
            success_rate: rate(c.succeeded, c.failed),
            in_flight: c.in_flight(),
            cancelled: c.cancelled,
            duration: figures.duration,
            total_retries: figures.total_retries,
            queue_size: c.queued,
            running: c.running + c.rolling_back,
            environments,
        })
    }

    /// Performance analytics over `[from, to)` (default: the last 24 hours).
    pub async fn performance(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        environment: Option<String>,
    ) -> Result<Performance> {
        let window = self.window(from, to, environment, TimeDelta::hours(24))?;
        let envs: Vec<(String, u32)> = self
            .config()
            .environments
            .iter()
            .filter(|e| window.environment.as_ref().is_none_or(|w| *w == e.name))
            .map(|e| (e.name.clone(), self.environment(&e.name).map_or(e.max_concurrent, |v| v.max_concurrent)))
            .collect();
        let store = self.store();
        let now = self.now();
        let query = window.clone();
        let w = tokio::task::spawn_blocking(move || store.window_figures(&query, now)).await.map_err(join_error)??;
        let secs = window.seconds();
        let utilization = envs
            .iter()
            .map(|(name, limit)| {
                let busy = w.busy_ms.iter().find(|(n, _)| n == name).map_or(0, |(_, ms)| *ms) as f64 / 1000.0;
                let capacity = f64::from(*limit) * secs;
                Utilization {
                    environment: name.clone(),
                    limit: *limit,
                    busy_slot_seconds: busy,
                    capacity_slot_seconds: capacity,
                    utilization: if capacity > 0.0 { busy / capacity } else { 0.0 },
                }
            })
            .collect();
        let days = secs / 86_400.0;
        let dora_of = |o: Outcomes, restores: &[u64]| DoraFigures {
            deployment_frequency_per_day: if days > 0.0 { o.succeeded as f64 / days } else { 0.0 },
            change_failure_rate: rate(o.failed, o.succeeded),
            time_to_restore_ms: (!restores.is_empty())
                .then(|| restores.iter().map(|&ms| ms as f64).sum::<f64>() / restores.len() as f64),
            restored_episodes: restores.len() as u64,
            lead_time_ms: (o.succeeded > 0).then(|| o.lead_time_total_ms as f64 / o.succeeded as f64),
        };
        let env_dora: Vec<EnvironmentDora> = envs
            .iter()
            .map(|(name, _)| {
                let outcomes = w.per_environment.iter().find(|(n, _)| n == name).map(|(_, o)| *o).unwrap_or_default();
                let restores: Vec<u64> = w.restores.iter().filter(|(n, _)| n == name).map(|(_, ms)| *ms).collect();
                EnvironmentDora { environment: name.clone(), figures: dora_of(outcomes, &restores) }
            })
            .collect();
        let overall = Outcomes { succeeded: w.succeeded, failed: w.failed, lead_time_total_ms: w.lead_time_total_ms };
        let all_restores: Vec<u64> = w.restores.iter().map(|(_, ms)| *ms).collect();
        Ok(Performance {
            from: window.from,
            to: window.to,
            environment: window.environment.clone(),
            submitted: w.submitted,
            finished: w.succeeded + w.failed + w.cancelled,
            succeeded: w.succeeded,
            failed: w.failed,
            cancelled: w.cancelled,
            success_rate: rate(w.succeeded, w.failed),
            failure_rate: rate(w.failed, w.succeeded),
            throughput_per_hour: if secs > 0.0 { (w.succeeded + w.failed) as f64 / (secs / 3600.0) } else { 0.0 },
            duration: w.duration,
            queue_wait_mean_ms: w.queue_wait_mean_ms,
            utilization,
            dora: Dora { overall: dora_of(overall, &all_restores), environments: env_dora },
        })
    }

    /// A trend of one metric in buckets of one period.
    pub async fn trends(
        &self,
        metric: TrendMetric,
        period: TrendPeriod,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        environment: Option<String>,
    ) -> Result<Trends> {
        let to = to.or_else(|| Some(period.end_of(self.now())));
        let window = self.window(from, to, environment, period.default_span())?;
        let step_ms = period.delta().num_milliseconds();
        let n = ((window.to - window.from).num_milliseconds() + step_ms - 1) / step_ms;
        if n > MAX_BUCKETS {
            return Err(Error::invalid("period", format!("{n} buckets; at most {MAX_BUCKETS} (use a longer period)")));
        }
        let spec = TrendSpec { metric, period, window };
        let store = self.store();
        let query = spec.clone();
        let figures = tokio::task::spawn_blocking(move || store.trend_figures(&query)).await.map_err(join_error)??;
        Ok(trend_from_figures(&spec, &figures))
    }
}

#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Store(crate::error::StoreError::Invalid(format!("analytics task failed: {e}")))
}

/// Shared so callers can hold figures cheaply.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), Some(10));
        assert_eq!(percentile(&v, 95.0), Some(19));
        assert_eq!(percentile(&[7], 95.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile_index(20, 95.0), Some(18));
        let s = DurationStats::from_sorted(&[100, 200, 600]);
        assert_eq!((s.count, s.mean_ms, s.p50_ms, s.p95_ms), (3, Some(300.0), Some(200), Some(600)));
    }

    #[test]
    fn rates_are_null_without_outcomes() {
        assert_eq!(rate(0, 0), None);
        assert_eq!(rate(3, 1), Some(0.75));
    }

    #[test]
    fn the_default_end_of_a_trend_is_the_end_of_the_current_period() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let now = t("2026-12-03T10:41:07.123456789Z");
        assert_eq!(TrendPeriod::Minute.end_of(now), t("2026-12-03T10:42:00Z"));
        assert_eq!(TrendPeriod::Hour.end_of(now), t("2026-12-03T11:00:00Z"));
        assert_eq!(TrendPeriod::Day.end_of(now), t("2026-12-04T00:00:00Z"));
        assert_eq!(TrendPeriod::Hour.end_of(t("2026-12-03T11:00:00Z")), t("2026-12-03T11:00:00Z"));
        assert_eq!(TrendPeriod::Hour.end_of(t("2026-12-03T11:00:00.000001Z")), t("2026-12-03T12:00:00Z"));
    }

    #[test]
    fn buckets_step_from_from_and_end_at_to() {
        let from = DateTime::parse_from_rfc3339("2026-12-01T10:30:00Z").unwrap().to_utc();
        let to = from + TimeDelta::minutes(150);
        let spec = TrendSpec {
            metric: TrendMetric::SuccessRate,
            period: TrendPeriod::Hour,
            window: Window { from, to, environment: None },
        };
        let b = spec.buckets();
        assert_eq!(b.len(), 3);
        assert_eq!(b[2], (from + TimeDelta::hours(2), to));
        let figures = [
            BucketFigures { count: 4, succeeded: 3, failed: 1, ..Default::default() },
            BucketFigures::default(),
            BucketFigures { count: 2, succeeded: 0, failed: 2, ..Default::default() },
        ];
        let t = trend_from_figures(&spec, &figures);
        assert_eq!(t.buckets.iter().map(|b| b.value).collect::<Vec<_>>(), [Some(0.75), None, Some(0.0)]);
        assert_eq!((t.summary.min, t.summary.max, t.summary.mean), (Some(0.0), Some(0.75), Some(0.375)));
        let counts = trend_from_figures(&TrendSpec { metric: TrendMetric::Deployments, ..spec }, &figures);
        assert_eq!(counts.buckets[1].value, Some(0.0));
        assert_eq!(counts.summary.non_empty_buckets, 2);
        assert_eq!(counts.summary.mean, Some(3.0));
    }
}
