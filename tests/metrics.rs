//! Metrics, performance analytics, trends and DORA figures against hand-computed fixtures, and
//! a property test that compares them with a straightforward recomputation.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use tds_core::metrics::{TrendMetric, TrendPeriod, TrendSpec, Window, trend_from_figures};
use tds_core::model::{ArtifactInfo, Deployment, DeploymentId, Priority, Status};
use tds_core::store::{AttemptRecord, EnvironmentRecord, SqliteStore, Store, Write};

const T0: &str = "2026-12-01T00:00:00Z";

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(T0).unwrap().to_utc()
}

fn at(minutes: i64) -> DateTime<Utc> {
    t0() + TimeDelta::minutes(minutes)
}

/// One fixture deployment: its outcome and times in minutes after T0, and its attempts as
/// (start minute, run minutes).
struct Fixture {
    n: u64,
    env: &'static str,
    status: &'static str,
    created: i64,
    finished: Option<i64>,
    attempts: Vec<(i64, i64)>,
}

impl Fixture {
    fn writes(&self) -> Vec<Write> {
        let id: DeploymentId = format!("{:026}", 1_000 + self.n).parse().unwrap();
        let finished = self.finished.map(at);
        let first_start = self.attempts.first().map(|(s, _)| at(*s));
        let status = match self.status {
            "queued" => Status::Queued { enqueued_at: at(self.created) },
            "succeeded" => Status::Succeeded { finished_at: finished.unwrap() },
            "failed" => Status::Failed { finished_at: finished.unwrap(), reason: "boom".into() },
            "cancelled" => Status::Cancelled { finished_at: finished.unwrap(), reason: "operator".into() },
            other => panic!("{other}"),
        };
        let duration_ms = match (self.status, first_start, finished) {
            ("succeeded" | "failed", Some(s), Some(f)) => Some((f - s).num_milliseconds() as u64),
            _ => None,
        };
        let d = Deployment {
            id,
            environment: self.env.into(),
            version: format!("v{}", self.n),
            priority: Priority::Normal,
            params: BTreeMap::new(),
            artifact: ArtifactInfo { name: "a.txt".into(), size: 1, sha256: "00".repeat(32), kind: None },
            requested_by: "fixture".into(),
            created_at: at(self.created),
            attempt: self.attempts.len().max(1) as u32,
            retry_count: 0,
            max_retries: 3,
            started_at: first_start,
            duration_ms,
            queue_wait_ms: first_start.map(|s| (s - at(self.created)).num_milliseconds() as u64),
            last_error: None,
            status,
            cancel_requested: false,
            wait_reason: None,
        };
        let mut writes = vec![Write::Insert { deployment: Box::new(d), idempotency: None }];
        for (i, (start, run)) in self.attempts.iter().enumerate() {
            writes.push(Write::Attempt(AttemptRecord {
                deployment_id: id,
                attempt: i as u32 + 1,
                queued_at: at(self.created),
                started_at: Some(at(*start)),
                finished_at: Some(at(start + run)),
                outcome: Some("x".into()),
                error: None,
                duration_ms: Some((run * 60_000) as u64),
            }));
        }
        writes
    }
}

fn fixtures() -> Vec<Fixture> {
    vec![
        Fixture { n: 1, env: "a", status: "succeeded", created: 0, finished: Some(11), attempts: vec![(1, 10)] },
        Fixture {
            n: 2,
            env: "a",
            status: "failed",
            created: 5,
            finished: Some(26),
            attempts: vec![(6, 2), (10, 2), (15, 2), (24, 2)],
        },
        Fixture { n: 3, env: "a", status: "succeeded", created: 30, finished: Some(40), attempts: vec![(30, 10)] },
        Fixture { n: 4, env: "b", status: "cancelled", created: 10, finished: Some(12), attempts: vec![] },
        Fixture {
            n: 5,
            env: "b",
            status: "succeeded",
            created: 50,
            finished: Some(70),
            attempts: vec![(55, 5), (62, 8)],
        },
        Fixture { n: 6, env: "b", status: "queued", created: 120, finished: None, attempts: vec![] },
        Fixture { n: 7, env: "a", status: "failed", created: 75, finished: Some(80), attempts: vec![(75, 5)] },
    ]
}

const ENVS: &str = r#"
[[environments]]
name = "a"
root = "{dir}/envs/a"
max_concurrent = 2
[[environments]]
name = "b"
root = "{dir}/envs/b"
max_concurrent = 1
"#;

/// A store with the fixture (environment `b` paused so the queued one stays queued) and an
/// orchestrator on it.
async fn fixture_harness() -> crate::common::Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data").join("tds.db")).unwrap();
    let mut writes: Vec<Write> = fixtures().iter().flat_map(Fixture::writes).collect();
    writes.push(Write::Environment(EnvironmentRecord { name: "b".into(), paused: true, limit_override: None }));
    store.apply(&[&writes]).unwrap();
    drop(store);
    crate::common::Harness::start_in(dir, ENVS).await
}

#[tokio::test]
async fn metrics_of_the_fixture() {
    let h = fixture_harness().await;
    let m = h.handle.metrics().await.unwrap();
    assert_eq!(m.total, 7);
    assert_eq!((m.counts.succeeded, m.counts.failed, m.counts.cancelled, m.counts.queued), (3, 2, 1, 1));
    assert_eq!(m.success_rate, Some(0.6));
    assert_eq!((m.in_flight, m.cancelled, m.queue_size, m.running), (1, 1, 1, 0));
    assert_eq!(m.duration.count, 5);
    assert_eq!(m.duration.mean_ms, Some(720_000.0));
    assert_eq!((m.duration.p50_ms, m.duration.p95_ms), (Some(600_000), Some(1_200_000)));
    assert_eq!(m.total_retries, 4);
    let b = m.environments.iter().find(|e| e.name == "b").unwrap();
    assert!(b.paused && b.queued == 1 && b.limit == 1);
}

#[tokio::test]
async fn performance_of_the_first_hour() {
    let h = fixture_harness().await;
    let p = h.handle.performance(Some(at(0)), Some(at(60)), None).await.unwrap();
    assert_eq!(p.submitted, 5);
    assert_eq!((p.finished, p.succeeded, p.failed, p.cancelled), (4, 2, 1, 1));
    assert_eq!(p.success_rate, Some(2.0 / 3.0));
    assert_eq!(p.failure_rate, Some(1.0 / 3.0));
    assert_eq!(p.throughput_per_hour, 3.0);
    assert_eq!(p.duration.mean_ms, Some(800_000.0));
    assert_eq!((p.duration.p50_ms, p.duration.p95_ms), (Some(600_000), Some(1_200_000)));
    assert_eq!(p.queue_wait_mean_ms, Some(105_000.0));
    let util = |env: &str| p.utilization.iter().find(|u| u.environment == env).unwrap().clone();
    assert_eq!(util("a").busy_slot_seconds, 1680.0);
    assert_eq!(util("a").capacity_slot_seconds, 7200.0);
    assert!((util("a").utilization - 1680.0 / 7200.0).abs() < 1e-12);
    assert_eq!(util("b").busy_slot_seconds, 300.0);
    assert!((util("b").utilization - 300.0 / 3600.0).abs() < 1e-12);
    let dora = &p.dora.overall;
    assert_eq!(dora.deployment_frequency_per_day, 48.0);
    assert_eq!(dora.change_failure_rate, Some(1.0 / 3.0));
    assert_eq!((dora.time_to_restore_ms, dora.restored_episodes), (Some(840_000.0), 1));
    assert_eq!(dora.lead_time_ms, Some(630_000.0));
    let a = &p.dora.environments.iter().find(|e| e.environment == "a").unwrap().figures;
    assert_eq!(a.change_failure_rate, Some(1.0 / 3.0));
    let b = &p.dora.environments.iter().find(|e| e.environment == "b").unwrap().figures;
    assert_eq!((b.change_failure_rate, b.deployment_frequency_per_day), (None, 0.0));
}

/// A window boundary exactly on a finish time: `[from, to)` includes `from`, excludes `to`.
#[tokio::test]
async fn window_boundaries_are_half_open() {
    let h = fixture_harness().await;
    let p = h.handle.performance(Some(at(11)), Some(at(40)), Some("a".into())).await.unwrap();
    assert_eq!((p.succeeded, p.failed), (1, 1), "#1 at 11m is in, #3 at 40m is out");
    let empty = h.handle.performance(Some(at(1000)), Some(at(1060)), None).await.unwrap();
    assert_eq!((empty.finished, empty.success_rate, empty.duration.mean_ms), (0, None, None));
    assert_eq!(empty.throughput_per_hour, 0.0);
    assert!(h.handle.performance(Some(at(60)), Some(at(0)), None).await.is_err());
    assert!(h.handle.performance(None, None, Some("nope".into())).await.is_err());
}

#[tokio::test]
async fn trends_by_hour() {
    let h = fixture_harness().await;
    let trend = |m| h.handle.trends(m, TrendPeriod::Hour, Some(at(0)), Some(at(120)), None);
    let rate = trend(TrendMetric::SuccessRate).await.unwrap();
    let values: Vec<_> = rate.buckets.iter().map(|b| b.value).collect();
    assert_eq!(values, [Some(2.0 / 3.0), Some(0.5)]);
    assert_eq!(rate.summary.min, Some(0.5));
    assert!((rate.summary.mean.unwrap() - f64::midpoint(2.0 / 3.0, 0.5)).abs() < 1e-12);
    let retries = trend(TrendMetric::Retries).await.unwrap();
    assert_eq!(retries.buckets.iter().map(|b| b.value).collect::<Vec<_>>(), [Some(3.0), Some(1.0)]);
    let duration = trend(TrendMetric::Duration).await.unwrap();
    assert_eq!(duration.buckets.iter().map(|b| b.value).collect::<Vec<_>>(), [Some(800_000.0), Some(600_000.0)]);
    let wait = trend(TrendMetric::QueueWait).await.unwrap();
    assert_eq!(wait.buckets.iter().map(|b| b.value).collect::<Vec<_>>(), [Some(105_000.0), Some(0.0)]);
    // Empty buckets are present: null for rates, 0 for counts.
    let day =
        h.handle.trends(TrendMetric::Deployments, TrendPeriod::Hour, Some(at(0)), Some(at(240)), None).await.unwrap();
    let counts: Vec<_> = day.buckets.iter().map(|b| b.value).collect();
    assert_eq!(counts, [Some(3.0), Some(2.0), Some(0.0), Some(0.0)]);
    assert_eq!(day.summary.non_empty_buckets, 2);
    let rate =
        h.handle.trends(TrendMetric::FailureRate, TrendPeriod::Hour, Some(at(0)), Some(at(240)), None).await.unwrap();
    assert_eq!(rate.buckets[3].value, None);
}

/// An empty store: every figure is zero or null, never a division by zero.
#[tokio::test]
async fn empty_store() {
    let h = crate::common::Harness::start(ENVS).await;
    let m = h.handle.metrics().await.unwrap();
    assert_eq!((m.total, m.success_rate, m.duration.mean_ms, m.duration.p95_ms), (0, None, None, None));
    let p = h.handle.performance(None, None, None).await.unwrap();
    assert_eq!((p.submitted, p.success_rate, p.dora.overall.lead_time_ms), (0, None, None));
    assert!(p.utilization.iter().all(|u| u.utilization == 0.0));
}

// -----------------------------------------------------------------------------------------
// Property: figures equal a straightforward recomputation.

#[derive(Debug, Clone)]
struct Gen {
    env: usize,
    status: usize,
    created: i64,
    wait: i64,
    run: i64,
}

fn workload() -> impl Strategy<Value = Gen> {
    (0usize..2, 0usize..4, 0i64..6000, 0i64..90, 0i64..300).prop_map(|(env, status, created, wait, run)| Gen {
        env,
        status,
        created,
        wait,
        run,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, .. ProptestConfig::default() })]

    /// For random workloads, the store's figures (counts, rates, nearest-rank percentiles, window
    /// counts, trend buckets) equal a direct recomputation from the same deployments.
    #[test]
    fn figures_equal_a_recomputation(
        items in proptest::collection::vec(workload(), 0..60),
        from in 0i64..4000,
        len in 1i64..5000,
        retried in proptest::collection::vec(any::<bool>(), 60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("tds.db")).unwrap();
        let statuses = ["succeeded", "failed", "cancelled", "queued"];
        let envs = ["a", "b"];
        let fixtures: Vec<Fixture> = items.iter().enumerate().map(|(i, g)| {
            let status = statuses[g.status];
            let start = g.created + g.wait;
            Fixture {
                n: i as u64,
                env: envs[g.env],
                status,
                created: g.created,
                finished: (status != "queued").then_some(start + g.run),
                attempts: match (status, retried[i]) {
                    ("succeeded" | "failed", false) => vec![(start, g.run)],
                    ("succeeded" | "failed", true) => vec![(start, g.run / 2), (start + g.run / 2, g.run - g.run / 2)],
                    _ => vec![],
                },
            }
        }).collect();
        let writes: Vec<Write> = fixtures.iter().flat_map(Fixture::writes).collect();
        store.apply(&[&writes]).unwrap();

        // Overall.
        let f = store.figures().unwrap();
        let count = |s: &str| fixtures.iter().filter(|x| x.status == s).count() as u64;
        prop_assert_eq!(f.counts.succeeded, count("succeeded"));
        prop_assert_eq!(f.counts.failed, count("failed"));
        prop_assert_eq!(f.counts.cancelled, count("cancelled"));
        prop_assert_eq!(f.counts.queued, count("queued"));
        let mut durations: Vec<u64> = fixtures.iter()
            .filter(|x| matches!(x.status, "succeeded" | "failed"))
            .map(|x| ((x.attempts.last().unwrap().0 + x.attempts.last().unwrap().1 - x.attempts[0].0) * 60_000) as u64)
            .collect();
        durations.sort_unstable();
        let expect = tds_core::metrics::DurationStats::from_sorted(&durations);
        prop_assert_eq!(f.duration.count, expect.count);
        prop_assert_eq!(f.duration.p50_ms, expect.p50_ms);
        prop_assert_eq!(f.duration.p95_ms, expect.p95_ms);
        if let (Some(a), Some(b)) = (f.duration.mean_ms, expect.mean_ms) { prop_assert!((a - b).abs() < 1e-6); }

        // One window.
        let window = Window { from: at(from), to: at(from + len), environment: None };
        let w = store.window_figures(&window, at(10_000)).unwrap();
        let in_window = |m: i64| m >= from && m < from + len;
        let finished = |s: &str| fixtures.iter().filter(|x| x.status == s && x.finished.is_some_and(in_window)).count() as u64;
        prop_assert_eq!(w.succeeded, finished("succeeded"));
        prop_assert_eq!(w.failed, finished("failed"));
        prop_assert_eq!(w.cancelled, finished("cancelled"));
        prop_assert_eq!(w.submitted, fixtures.iter().filter(|x| in_window(x.created)).count() as u64);
        // Durations (nearest-rank percentiles), lead time, queue wait and busy time of the window:
        // whole hours come from the rollups, the edges from raw rows, and they must add up.
        let mut durations: Vec<u64> = fixtures.iter()
            .filter(|x| matches!(x.status, "succeeded" | "failed") && x.finished.is_some_and(in_window))
            .map(|x| ((x.finished.unwrap() - x.attempts[0].0) * 60_000) as u64)
            .collect();
        durations.sort_unstable();
        let expect = tds_core::metrics::DurationStats::from_sorted(&durations);
        prop_assert_eq!((w.duration.count, w.duration.p50_ms, w.duration.p95_ms), (expect.count, expect.p50_ms, expect.p95_ms));
        prop_assert_eq!(w.duration.mean_ms.map(|m| (m * 1000.0).round()), expect.mean_ms.map(|m| (m * 1000.0).round()));
        let lead: i64 = fixtures.iter().filter(|x| x.status == "succeeded" && x.finished.is_some_and(in_window))
            .map(|x| (x.finished.unwrap() - x.created) * 60_000).sum();
        prop_assert_eq!(w.lead_time_total_ms, lead as u64);
        let waits: Vec<i64> = fixtures.iter().filter_map(|x| x.attempts.first().map(|(s, _)| (*s, s - x.created)))
            .filter(|(s, _)| in_window(*s)).map(|(_, w)| w * 60_000).collect();
        prop_assert_eq!(w.queue_wait_count, waits.len() as u64);
        let mean = (!waits.is_empty()).then(|| waits.iter().sum::<i64>() as f64 / waits.len() as f64);
        prop_assert_eq!(w.queue_wait_mean_ms.map(|m| (m * 1000.0).round()), mean.map(|m| (m * 1000.0).round()));
        for name in envs {
            let busy: i64 = fixtures.iter().filter(|x| x.env == name).flat_map(|x| x.attempts.iter())
                .map(|(s, r)| ((s + r).min(from + len) - (*s).max(from)).max(0) * 60_000).sum();
            let got = w.busy_ms.iter().find(|(e, _)| e == name).map_or(0, |(_, ms)| *ms);
            prop_assert_eq!(got, busy as u64, "busy time of {}", name);
        }

        // Trend buckets by hour and by day over the window (long windows use the rollups).
        for period in [TrendPeriod::Hour, TrendPeriod::Day] {
            let spec = TrendSpec { metric: TrendMetric::Deployments, period, window: window.clone() };
            let trend = trend_from_figures(&spec, &store.trend_figures(&spec).unwrap());
            for b in &trend.buckets {
                let expected = fixtures.iter().filter(|x| matches!(x.status, "succeeded" | "failed")
                    && x.finished.is_some_and(|m| at(m) >= b.start && at(m) < b.end)).count() as u64;
                prop_assert_eq!(b.count, expected, "{:?} bucket {:?}", period, b.start);
            }
            prop_assert_eq!(trend.buckets.iter().map(|b| b.count).sum::<u64>(), w.succeeded + w.failed);
            let spec = TrendSpec { metric: TrendMetric::Retries, period, window: window.clone() };
            let trend = trend_from_figures(&spec, &store.trend_figures(&spec).unwrap());
            for b in &trend.buckets {
                let expected = fixtures.iter().flat_map(|x| x.attempts.iter().skip(1))
                    .filter(|(s, _)| at(*s) >= b.start && at(*s) < b.end).count() as u64;
                prop_assert_eq!(b.count, expected);
            }
            let spec = TrendSpec { metric: TrendMetric::QueueWait, period, window: window.clone() };
            let trend = trend_from_figures(&spec, &store.trend_figures(&spec).unwrap());
            for b in &trend.buckets {
                let waits: Vec<i64> = fixtures.iter().filter_map(|x| x.attempts.first().map(|(s, _)| (*s, s - x.created)))
                    .filter(|(s, _)| at(*s) >= b.start && at(*s) < b.end).map(|(_, w)| w * 60_000).collect();
                prop_assert_eq!(b.count, waits.len() as u64);
                let mean = (!waits.is_empty()).then(|| waits.iter().sum::<i64>() as f64 / waits.len() as f64);
                prop_assert_eq!(b.value, mean);
            }
        }
    }
}
