//! The SQL behind metrics, analytics and trends (definitions in `crate::metrics`). Each entry
//! point runs in one read transaction, so its figures come from one consistent snapshot even
//! while deployments finish concurrently.

use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::to_ms;
use crate::error::StoreError;
use crate::metrics::{
    BucketFigures, DurationStats, StoreFigures, TrendMetric, TrendSpec, Window, WindowFigures, percentile_index,
};

fn err(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::sqlite(op)
}

/// Counts per status, retries, and the duration statistics of all finished non-cancelled ones.
pub(super) fn figures(c: &Connection) -> Result<StoreFigures, StoreError> {
    let tx = c.unchecked_transaction().map_err(err("begin read"))?;
    let mut out = StoreFigures::default();
    {
        let mut stmt = tx
            .prepare_cached("SELECT status, count(*), total(attempt - 1) FROM deployments GROUP BY status")
            .map_err(err("count statuses"))?;
        let mut rows = stmt.query([]).map_err(err("count statuses"))?;
        while let Some(row) = rows.next().map_err(err("count statuses"))? {
            let status: String = row.get(0).map_err(err("count statuses"))?;
            let n: i64 = row.get(1).map_err(err("count statuses"))?;
            let retries: f64 = row.get(2).map_err(err("count statuses"))?;
            out.counts.add(&status, n as u64);
            out.total_retries += retries as u64;
        }
    }
    const FINISHED: &str = "status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL";
    let (count, mean): (i64, Option<f64>) = tx
        .prepare_cached(&format!("SELECT count(*), avg(duration_ms) FROM deployments WHERE {FINISHED}"))
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(err("duration stats"))?;
    let at = |p: f64| -> Result<Option<u64>, StoreError> {
        let Some(offset) = percentile_index(count as u64, p) else { return Ok(None) };
        tx.prepare_cached(&format!(
            "SELECT duration_ms FROM deployments WHERE {FINISHED} ORDER BY duration_ms LIMIT 1 OFFSET ?1"
        ))
        .and_then(|mut s| s.query_row([offset as i64], |r| r.get::<_, i64>(0)).optional())
        .map(|v| v.map(|v| v.max(0) as u64))
        .map_err(err("duration percentile"))
    };
    out.duration = DurationStats { count: count as u64, mean_ms: mean, p50_ms: at(50.0)?, p95_ms: at(95.0)? };
    Ok(out)
}

/// Everything the performance view needs for one window.
pub(super) fn window_figures(
    c: &Connection,
    w: &Window,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<WindowFigures, StoreError> {
    let tx = c.unchecked_transaction().map_err(err("begin read"))?;
    let (from, to, now) = (to_ms(w.from), to_ms(w.to), to_ms(now));
    let env = w.environment.as_deref();
    let mut out = WindowFigures::default();

    out.submitted = tx
        .prepare_cached(
            "SELECT count(*) FROM deployments WHERE created_at >= ?1 AND created_at < ?2 AND (?3 IS NULL OR environment = ?3)",
        )
        .and_then(|mut s| s.query_row(params![from, to, env], |r| r.get::<_, i64>(0)))
        .map_err(err("count submitted"))? as u64;

    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT status, count(*), total(CASE WHEN status = 'succeeded' THEN max(0, finished_at - created_at) END) \
                 FROM deployments WHERE finished_at >= ?1 AND finished_at < ?2 AND (?3 IS NULL OR environment = ?3) \
                 GROUP BY status",
            )
            .map_err(err("count finished"))?;
        let mut rows = stmt.query(params![from, to, env]).map_err(err("count finished"))?;
        while let Some(row) = rows.next().map_err(err("count finished"))? {
            let status: String = row.get(0).map_err(err("count finished"))?;
            let n = row.get::<_, i64>(1).map_err(err("count finished"))? as u64;
            match status.as_str() {
                "succeeded" => {
                    out.succeeded = n;
                    out.lead_time_total_ms = row.get::<_, f64>(2).map_err(err("lead time"))? as u64;
                }
                "failed" => out.failed = n,
                "cancelled" => out.cancelled = n,
                _ => {}
            }
        }
    }

    let durations: Vec<u64> = tx
        .prepare_cached(
            "SELECT duration_ms FROM deployments WHERE finished_at >= ?1 AND finished_at < ?2 \
             AND status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL AND (?3 IS NULL OR environment = ?3) \
             ORDER BY duration_ms",
        )
        .and_then(|mut s| {
            s.query_map(params![from, to, env], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(err("window durations"))?
        .into_iter()
        .map(|v| v.max(0) as u64)
        .collect();
    out.duration = DurationStats::from_sorted(&durations);

    let (waits, wait_mean): (i64, Option<f64>) = tx
        .prepare_cached(
            "SELECT count(queue_wait_ms), avg(queue_wait_ms) FROM deployments \
             WHERE started_at >= ?1 AND started_at < ?2 AND (?3 IS NULL OR environment = ?3)",
        )
        .and_then(|mut s| s.query_row(params![from, to, env], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(err("queue wait"))?;
    out.queue_wait_count = waits as u64;
    out.queue_wait_mean_ms = wait_mean;

    // Busy time: each attempt from its start for its (monotonic) run time, clipped to the
    // window; running attempts until now. Two index-friendly halves: finished and running.
    out.busy_ms = tx
        .prepare_cached(
            "SELECT environment, total(busy) FROM ( \
               SELECT d.environment AS environment, \
                      max(0, min(a.started_at + coalesce(a.duration_ms, max(0, a.finished_at - a.started_at)), ?2) - max(a.started_at, ?1)) AS busy \
               FROM attempts a JOIN deployments d ON d.id = a.deployment_id \
               WHERE a.finished_at >= ?1 AND a.started_at IS NOT NULL AND a.started_at < ?2 \
             UNION ALL \
               SELECT d.environment, max(0, min(?4, ?2) - max(a.started_at, ?1)) \
               FROM attempts a JOIN deployments d ON d.id = a.deployment_id \
               WHERE a.finished_at IS NULL AND a.started_at IS NOT NULL AND a.started_at < ?2 \
             ) WHERE (?3 IS NULL OR environment = ?3) GROUP BY environment",
        )
        .and_then(|mut s| {
            s.query_map(params![from, to, env, now], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)? as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(err("busy time"))?;

    out.restores = restores(&tx, from, to, env)?;
    Ok(out)
}

/// Restore times of the failure episodes that started in the window: a failure whose previous
/// finished non-cancelled deployment on the environment succeeded (or that has none), up to the
/// next success there.
fn restores(c: &Connection, from: i64, to: i64, env: Option<&str>) -> Result<Vec<(String, u64)>, StoreError> {
    let rows: Vec<(String, i64, Option<String>, Option<i64>)> = c
        .prepare_cached(
            "WITH seq AS ( \
               SELECT environment, status, finished_at, \
                      LAG(status) OVER (PARTITION BY environment ORDER BY finished_at, id) AS prev \
               FROM deployments \
               WHERE status IN ('succeeded', 'failed') AND finished_at >= ?1 AND finished_at < ?2 \
                 AND (?3 IS NULL OR environment = ?3)) \
             SELECT environment, finished_at, prev, \
                    (SELECT min(s.finished_at) FROM deployments s WHERE s.environment = seq.environment \
                       AND s.status = 'succeeded' AND s.finished_at > seq.finished_at) \
             FROM seq WHERE status = 'failed' AND (prev IS NULL OR prev = 'succeeded')",
        )
        .and_then(|mut s| {
            s.query_map(params![from, to, env], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(err("restore episodes"))?;
    let mut out = Vec::new();
    for (environment, failed_at, prev, restored_at) in rows {
        if prev.is_none() {
            // First outcome of the window here: an episode starts only if the one before the
            // window was not a failure too.
            let before: Option<String> = c
                .prepare_cached(
                    "SELECT status FROM deployments WHERE environment = ?1 AND status IN ('succeeded', 'failed') \
                     AND finished_at < ?2 ORDER BY finished_at DESC, id DESC LIMIT 1",
                )
                .and_then(|mut s| s.query_row(params![environment, from], |r| r.get(0)).optional())
                .map_err(err("episode start"))?;
            if before.as_deref() == Some("failed") {
                continue;
            }
        }
        if let Some(restored_at) = restored_at {
            out.push((environment, (restored_at - failed_at).max(0) as u64));
        }
    }
    Ok(out)
}

/// Per-bucket raw figures of a trend.
pub(super) fn trend_figures(c: &Connection, spec: &TrendSpec) -> Result<Vec<BucketFigures>, StoreError> {
    let tx = c.unchecked_transaction().map_err(err("begin read"))?;
    let from = to_ms(spec.window.from);
    let to = to_ms(spec.window.to);
    let step = spec.period.delta().num_milliseconds();
    let env = spec.window.environment.as_deref();
    let n = spec.buckets().len();
    let mut out = vec![BucketFigures::default(); n];
    let sql = match spec.metric {
        TrendMetric::Deployments | TrendMetric::SuccessRate | TrendMetric::FailureRate | TrendMetric::Duration => {
            "SELECT (finished_at - ?1) / ?4, count(*), total(status = 'succeeded'), total(status = 'failed'), \
                    total(duration_ms), count(duration_ms) \
             FROM deployments WHERE finished_at >= ?1 AND finished_at < ?2 AND status IN ('succeeded', 'failed') \
               AND (?3 IS NULL OR environment = ?3) GROUP BY 1"
        }
        TrendMetric::QueueWait => {
            "SELECT (started_at - ?1) / ?4, count(*), 0, 0, total(queue_wait_ms), count(queue_wait_ms) \
             FROM deployments WHERE started_at >= ?1 AND started_at < ?2 AND (?3 IS NULL OR environment = ?3) GROUP BY 1"
        }
        TrendMetric::Retries => {
            "SELECT (a.started_at - ?1) / ?4, count(*), 0, 0, 0, 0 \
             FROM attempts a JOIN deployments d ON d.id = a.deployment_id \
             WHERE a.attempt > 1 AND a.started_at >= ?1 AND a.started_at < ?2 AND (?3 IS NULL OR d.environment = ?3) \
             GROUP BY 1"
        }
    };
    let mut stmt = tx.prepare_cached(sql).map_err(err("trend"))?;
    let mut rows = stmt.query(params![from, to, env, step]).map_err(err("trend"))?;
    while let Some(row) = rows.next().map_err(err("trend"))? {
        let b: i64 = row.get(0).map_err(err("trend"))?;
        let Some(slot) = usize::try_from(b).ok().and_then(|b| out.get_mut(b)) else { continue };
        *slot = BucketFigures {
            count: row.get::<_, i64>(1).map_err(err("trend"))? as u64,
            succeeded: row.get::<_, f64>(2).map_err(err("trend"))? as u64,
            failed: row.get::<_, f64>(3).map_err(err("trend"))? as u64,
            sum_ms: row.get::<_, f64>(4).map_err(err("trend"))?,
            valued: row.get::<_, i64>(5).map_err(err("trend"))? as u64,
        };
    }
    Ok(out)
}
