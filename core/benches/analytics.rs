//! Analytics at scale: metrics, performance and trends over a store of 100,000 deployments
//! (about 130,000 attempts) spread over 30 days and 5 environments. Prints the median and p90
//! of repeated runs of each query. Run with `cargo bench -p tds-core --bench analytics`;
//! `TDS_BENCH_N` changes the size.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tds_core::metrics::{TrendMetric, TrendPeriod, TrendSpec, Window};
use tds_core::model::{ArtifactInfo, Deployment, DeploymentId, Priority, Status};
use tds_core::store::{AttemptRecord, SqliteStore, Store, Write};

fn main() {
    let n: u64 = std::env::var("TDS_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = std::env::var("TDS_BENCH_DB").map_or_else(|_| dir.path().join("tds.db"), std::path::PathBuf::from);
    let store = SqliteStore::open(&path).expect("store");
    let now = Utc::now();
    let start = now - TimeDelta::days(30);
    let fill = Instant::now();
    populate(&store, n, start, now);
    println!("filled {n} deployments in {:.1?}", fill.elapsed());

    let day = Window { from: now - TimeDelta::hours(24), to: now, environment: None };
    let month = Window { from: start, to: now, environment: None };
    let env_day = Window { environment: Some("env-2".into()), ..day.clone() };
    let runs = 15;
    report("metrics (all 100k)", runs, || {
        store.figures().expect("figures");
    });
    report("performance, last 24 h", runs, || drop(store.window_figures(&day, now).expect("window")));
    report("performance, last 24 h, one env", runs, || drop(store.window_figures(&env_day, now).expect("window")));
    report("performance, 30 days (all rows)", runs, || drop(store.window_figures(&month, now).expect("window")));
    for metric in [TrendMetric::SuccessRate, TrendMetric::Duration, TrendMetric::QueueWait, TrendMetric::Retries] {
        let spec = TrendSpec { metric, period: TrendPeriod::Hour, window: day.clone() };
        report(&format!("trend {metric} by hour, 24 h"), runs, || drop(store.trend_figures(&spec).expect("trend")));
        let spec = TrendSpec { metric, period: TrendPeriod::Day, window: month.clone() };
        report(&format!("trend {metric} by day, 30 days"), runs, || drop(store.trend_figures(&spec).expect("trend")));
    }
}

fn report(name: &str, runs: usize, mut f: impl FnMut()) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    println!("{name:<40} median {:>8.2} ms   p90 {:>8.2} ms", ms(times[runs / 2]), ms(times[runs * 9 / 10]));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn populate(store: &SqliteStore, n: u64, start: DateTime<Utc>, now: DateTime<Utc>) {
    let span = (now - start).num_milliseconds() as u64;
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m
    };
    let mut batch = Vec::new();
    for i in 0..n {
        let created = start + TimeDelta::milliseconds((span * i / n) as i64);
        let id: DeploymentId = format!("{:026}", i + 1).parse().expect("id");
        let wait = next(120_000);
        let run = 5_000 + next(600_000);
        let attempts = if next(10) < 3 { 2 } else { 1 };
        let started = created + TimeDelta::milliseconds(wait as i64);
        let finished = started + TimeDelta::milliseconds((run * attempts) as i64);
        let status = match next(20) {
            0 => Status::Cancelled { finished_at: finished, reason: "op".into() },
            1..=3 => Status::Failed { finished_at: finished, reason: "boom".into() },
            _ if finished > now => Status::Queued { enqueued_at: created },
            _ => Status::Succeeded { finished_at: finished },
        };
        let terminal = status.finished_at().is_some();
        let d = Deployment {
            id,
            environment: format!("env-{}", next(5)),
            version: format!("1.{i}"),
            priority: Priority::Normal,
            params: BTreeMap::new(),
            artifact: ArtifactInfo { name: "site.tar.gz".into(), size: 4096, sha256: "ab".repeat(32), kind: None },
            requested_by: "bench".into(),
            created_at: created,
            attempt: attempts as u32,
            retry_count: attempts as u32 - 1,
            max_retries: 3,
            started_at: terminal.then_some(started),
            duration_ms: terminal.then_some(run * attempts),
            queue_wait_ms: terminal.then_some(wait),
            last_error: None,
            status,
            cancel_requested: false,
            wait_reason: None,
        };
        batch.push(Write::Insert { deployment: Box::new(d), idempotency: None });
        for a in 0..attempts {
            let s = started + TimeDelta::milliseconds((run * a) as i64);
            batch.push(Write::Attempt(AttemptRecord {
                deployment_id: id,
                attempt: a as u32 + 1,
                queued_at: created,
                started_at: terminal.then_some(s),
                finished_at: terminal.then_some(s + TimeDelta::milliseconds(run as i64)),
                outcome: Some("x".into()),
                error: None,
                duration_ms: terminal.then_some(run),
            }));
        }
        if batch.len() >= 20_000 {
            store.apply(&[&batch]).expect("apply");
            batch.clear();
        }
    }
    store.apply(&[&batch]).expect("apply");
}
