//! The figures behind the Trends pane: throughput, success rate, mean duration and queue depth
//! per time bucket over a selectable window.
//!
//! Two sources behind one type: [`TrendSeries::from_core`] uses the core's trends (computed
//! from the durable store, so they survive restarts and cover the whole window), refreshed every
//! few seconds; until the first answer (or if it fails), [`TrendSeries::compute`] derives the
//! same figures from the deployments the dashboard holds. Queue depth is not stored by the core,
//! so it always comes from samples the dashboard takes on each tick.

use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};
use tds_core::metrics::{TrendPeriod, Trends};
use tds_core::model::{DeploymentView, StatusKind};

/// Buckets per window: one sparkline column each.
pub const BUCKETS: usize = 60;
/// Queue-depth samples are kept this long (the longest window).
const SAMPLE_SPAN_SECS: i64 = 24 * 3600;
/// At most one queue-depth sample per this many seconds.
const SAMPLE_EVERY_SECS: i64 = 5;

/// The time span the sparklines cover; `t` and the arrow keys in the Trends pane cycle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrendWindow {
    #[default]
    Minutes15,
    Hour1,
    Hours24,
}

impl TrendWindow {
    /// The window's length.
    pub fn span(self) -> TimeDelta {
        match self {
            Self::Minutes15 => TimeDelta::minutes(15),
            Self::Hour1 => TimeDelta::hours(1),
            Self::Hours24 => TimeDelta::hours(24),
        }
    }

    /// As shown in the pane title.
    pub fn label(self) -> &'static str {
        match self {
            Self::Minutes15 => "15m",
            Self::Hour1 => "1h",
            Self::Hours24 => "24h",
        }
    }

    /// The next longer window, wrapping around.
    #[must_use]
    pub fn next(self) -> Self {
        match self {
            Self::Minutes15 => Self::Hour1,
            Self::Hour1 => Self::Hours24,
            Self::Hours24 => Self::Minutes15,
        }
    }

    /// The bucket width asked of the core for this window.
    pub fn period(self) -> TrendPeriod {
        match self {
            Self::Minutes15 | Self::Hour1 => TrendPeriod::Minute,
            Self::Hours24 => TrendPeriod::Hour,
        }
    }

    /// The next shorter window, wrapping around.
    #[must_use]
    pub fn prev(self) -> Self {
        self.next().next()
    }
}

/// Queue depth over time, sampled by the dashboard (the store does not record it).
#[derive(Debug, Clone, Default)]
pub struct DepthSamples {
    samples: VecDeque<(DateTime<Utc>, u32)>,
}

impl DepthSamples {
    /// Records the depth at `now`, at most every few seconds; old samples fall off.
    pub fn record(&mut self, now: DateTime<Utc>, depth: u32) {
        if let Some(&(last, _)) = self.samples.back()
            && (now - last).num_seconds() < SAMPLE_EVERY_SECS
            && now >= last
        {
            return;
        }
        self.samples.push_back((now, depth));
        while let Some(&(first, _)) = self.samples.front() {
            if (now - first).num_seconds() > SAMPLE_SPAN_SECS || self.samples.len() > 20_000 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }
}

/// The core's trends for one window: finished deployments (with success and duration) per
/// bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreTrends {
    pub window: TrendWindow,
    pub deployments: Trends,
    pub success_rate: Trends,
    pub duration: Trends,
}

/// One sparkline: a value per bucket (`None` where there is nothing to measure) and the
/// current figure as text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub values: Vec<Option<u64>>,
    pub current: String,
}

/// The four sparklines of the Trends pane.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrendSeries {
    pub window: TrendWindow,
    /// Finished (succeeded or failed) deployments per bucket; current: per hour over the window.
    pub throughput: Series,
    /// Succeeded ÷ (succeeded + failed) in percent; current: over the window.
    pub success_rate: Series,
    /// Mean duration in seconds of finished, non-cancelled deployments.
    pub duration: Series,
    /// Deployments waiting (queued or in retry backoff); current: now.
    pub queue_depth: Series,
}

/// The largest sampled depth per bucket of `[start, end)` split in `n`; the last bucket also
/// holds the depth now.
fn depth_values(
    depth: &DepthSamples,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    n: usize,
    now_depth: u32,
) -> Vec<Option<u64>> {
    let n = n.max(1);
    let span = (end - start).num_milliseconds().max(1);
    let mut values = vec![None; n];
    for &(t, d) in &depth.samples {
        if t < start || t >= end {
            continue;
        }
        let i = (((t - start).num_milliseconds() * n as i64) / span) as usize;
        let slot: &mut Option<u64> = &mut values[i.min(n - 1)];
        *slot = Some(slot.unwrap_or(0).max(u64::from(d)));
    }
    values[n - 1] = Some(values[n - 1].unwrap_or(0).max(u64::from(now_depth)));
    values
}

/// Σ value × count ÷ Σ count over the non-empty buckets.
fn weighted(t: &Trends) -> Option<f64> {
    let (sum, n) = t
        .buckets
        .iter()
        .filter(|b| b.count > 0)
        .filter_map(|b| b.value.map(|v| (v * b.count as f64, b.count)))
        .fold((0.0, 0u64), |(s, n), (v, c)| (s + v, n + c));
    (n > 0).then(|| sum / n as f64)
}

impl TrendSeries {
    /// The series from the core's trends, with the dashboard's own queue-depth samples.
    pub fn from_core(core: &CoreTrends, depth: &DepthSamples, depth_now: u32) -> Self {
        let t = &core.deployments;
        let finished: u64 = t.buckets.iter().map(|b| b.count).sum();
        let hours = ((t.to - t.from).num_milliseconds().max(1)) as f64 / 3_600_000.0;
        let throughput = Series {
            values: t.buckets.iter().map(|b| Some(b.count)).collect(),
            current: format!("{:.1}/h", finished as f64 / hours),
        };
        let success_rate = Series {
            values: core
                .success_rate
                .buckets
                .iter()
                .map(|b| b.value.filter(|_| b.count > 0).map(|v| (v * 100.0).round() as u64))
                .collect(),
            current: weighted(&core.success_rate).map_or_else(|| "–".to_owned(), |r| format!("{:.0}%", r * 100.0)),
        };
        let duration = Series {
            values: core
                .duration
                .buckets
                .iter()
                .map(|b| b.value.filter(|_| b.count > 0).map(|ms| (ms / 1000.0).ceil() as u64))
                .collect(),
            current: weighted(&core.duration).map_or_else(|| "–".to_owned(), |ms| crate::text::duration_ms(ms as u64)),
        };
        let queue_depth = Series {
            values: depth_values(depth, t.from, t.to, t.buckets.len(), depth_now),
            current: depth_now.to_string(),
        };
        Self { window: core.window, throughput, success_rate, duration, queue_depth }
    }
}

#[derive(Default, Clone, Copy)]
struct Bucket {
    finished: u64,
    succeeded: u64,
    failed: u64,
    duration_sum_ms: u64,
    duration_n: u64,
}

impl TrendSeries {
    /// Computes the series for `window` ending at `now` from the deployments the dashboard
    /// holds and the queue-depth samples.
    pub fn compute<'a>(
        window: TrendWindow,
        now: DateTime<Utc>,
        deployments: impl Iterator<Item = &'a DeploymentView>,
        depth: &DepthSamples,
        depth_now: u32,
    ) -> Self {
        let span_ms = window.span().num_milliseconds().max(1);
        let bucket_ms = (span_ms / BUCKETS as i64).max(1);
        let start = now - window.span();
        let index = |t: DateTime<Utc>| -> Option<usize> {
            if t < start || t > now {
                return None;
            }
            let i = ((t - start).num_milliseconds() / bucket_ms) as usize;
            Some(i.min(BUCKETS - 1))
        };
        let mut buckets = [Bucket::default(); BUCKETS];
        for d in deployments {
            let Some(finished) = d.finished_at else { continue };
            let Some(i) = index(finished) else { continue };
            let b = &mut buckets[i];
            match d.status {
                StatusKind::Succeeded => b.succeeded += 1,
                StatusKind::Failed => b.failed += 1,
                _ => continue,
            }
            b.finished += 1;
            if let Some(ms) = d.duration_ms {
                b.duration_sum_ms += ms;
                b.duration_n += 1;
            }
        }
        let total = buckets.iter().fold(Bucket::default(), |mut acc, b| {
            acc.finished += b.finished;
            acc.succeeded += b.succeeded;
            acc.failed += b.failed;
            acc.duration_sum_ms += b.duration_sum_ms;
            acc.duration_n += b.duration_n;
            acc
        });
        let hours = span_ms as f64 / 3_600_000.0;
        let throughput = Series {
            values: buckets.iter().map(|b| Some(b.finished)).collect(),
            current: format!("{:.1}/h", total.finished as f64 / hours),
        };
        let rate = |s: u64, f: u64| (s + f > 0).then(|| s * 100 / (s + f));
        let success_rate = Series {
            values: buckets.iter().map(|b| rate(b.succeeded, b.failed)).collect(),
            current: rate(total.succeeded, total.failed).map_or_else(|| "–".to_owned(), |r| format!("{r}%")),
        };
        let mean = |b: &Bucket| (b.duration_n > 0).then(|| b.duration_sum_ms / b.duration_n);
        let duration = Series {
            values: buckets.iter().map(|b| mean(b).map(|ms| ms.div_ceil(1000))).collect(),
            current: mean(&total).map_or_else(|| "–".to_owned(), crate::text::duration_ms),
        };
        let queue_depth =
            Series { values: depth_values(depth, start, now, BUCKETS, depth_now), current: depth_now.to_string() };
        Self { window, throughput, success_rate, duration, queue_depth }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{finished, t0};

    #[test]
    fn buckets_count_finished_deployments_and_rates() {
        let now = t0();
        let ds = [
            finished(1, StatusKind::Succeeded, now - TimeDelta::seconds(30), 10_000),
            finished(2, StatusKind::Failed, now - TimeDelta::seconds(20), 20_000),
            finished(3, StatusKind::Cancelled, now - TimeDelta::seconds(10), 5_000),
            finished(4, StatusKind::Succeeded, now - TimeDelta::hours(2), 1_000),
        ];
        let mut depth = DepthSamples::default();
        depth.record(now - TimeDelta::seconds(60), 4);
        let t = TrendSeries::compute(TrendWindow::Minutes15, now, ds.iter(), &depth, 2);
        assert_eq!(t.throughput.values.iter().flatten().sum::<u64>(), 2, "cancelled ones are not throughput");
        assert_eq!(t.success_rate.current, "50%");
        assert_eq!(t.duration.current, "15s");
        assert_eq!(t.queue_depth.current, "2");
        assert_eq!(t.queue_depth.values.iter().flatten().max(), Some(&4));
        assert_eq!(t.throughput.values.len(), BUCKETS);
        let day = TrendSeries::compute(TrendWindow::Hours24, now, ds.iter(), &depth, 0);
        assert_eq!(day.throughput.values.iter().flatten().sum::<u64>(), 3);
    }

    #[test]
    fn a_clock_jump_back_does_not_poison_buckets() {
        let now = t0();
        let ds = [finished(1, StatusKind::Succeeded, now + TimeDelta::hours(1), 1_000)];
        let t = TrendSeries::compute(TrendWindow::Hour1, now, ds.iter(), &DepthSamples::default(), 0);
        assert_eq!(t.throughput.values.iter().flatten().sum::<u64>(), 0);
    }
}
