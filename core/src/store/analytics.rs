//! The SQL behind metrics, analytics and trends (definitions in `crate::metrics`). Each entry
//! point runs in one read transaction, so its figures come from one consistent snapshot even
//! while deployments finish concurrently.

use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::to_ms;
use crate::error::StoreError;
use crate::metrics::{
    BucketFigures, DurationStats, Outcomes, StoreFigures, TrendMetric, TrendSpec, Window, WindowFigures,
    percentile_index,
};

fn err(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::sqlite(op)
}

/// Counts per status, retries, and the duration statistics of all finished non-cancelled ones.
/// Counts and sums come from the trigger-kept `status_totals`; percentiles walk the partial
/// duration index from its nearer end.
pub(super) fn figures(c: &Connection) -> Result<StoreFigures, StoreError> {
    let tx = c.unchecked_transaction().map_err(err("begin read"))?;
    let mut out = StoreFigures::default();
    let (mut timed, mut sum) = (0u64, 0f64);
    {
        let mut stmt = tx
            .prepare_cached("SELECT status, deployments, retries, timed, duration_sum FROM status_totals")
            .map_err(err("read totals"))?;
        let mut rows = stmt.query([]).map_err(err("read totals"))?;
        while let Some(row) = rows.next().map_err(err("read totals"))? {
            let status: String = row.get(0).map_err(err("read totals"))?;
            let n: i64 = row.get(1).map_err(err("read totals"))?;
            out.counts.add(&status, n.max(0) as u64);
            out.total_retries += row.get::<_, i64>(2).map_err(err("read totals"))?.max(0) as u64;
            if matches!(status.as_str(), "succeeded" | "failed") {
                timed += row.get::<_, i64>(3).map_err(err("read totals"))?.max(0) as u64;
                sum += row.get::<_, i64>(4).map_err(err("read totals"))? as f64;
            }
        }
    }
    let at = |p: f64| -> Result<Option<u64>, StoreError> {
        let Some(index) = percentile_index(timed, p) else { return Ok(None) };
        let (order, offset) = if index <= timed / 2 { ("ASC", index) } else { ("DESC", timed - 1 - index) };
        tx.prepare_cached(&format!(
            "SELECT duration_ms FROM deployments INDEXED BY deployments_by_duration \
             WHERE status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL \
             ORDER BY duration_ms {order} LIMIT 1 OFFSET ?1"
        ))
        .and_then(|mut s| s.query_row([offset as i64], |r| r.get::<_, i64>(0)).optional())
        .map(|v| v.map(|v| v.max(0) as u64))
        .map_err(err("duration percentile"))
    };
    let mean_ms = (timed > 0).then(|| sum / timed as f64);
    out.duration = DurationStats { count: timed, mean_ms, p50_ms: at(50.0)?, p95_ms: at(95.0)? };
    Ok(out)
}

/// The partial hours at the edges of `[from, to)` (read from raw rows) and the whole hours
/// between them (`[first, end)` in hour numbers, read from the rollups; empty when none).
fn split_hours(from: i64, to: i64) -> (Vec<(i64, i64)>, (i64, i64)) {
    let first = from.div_euclid(HOUR) + i64::from(from.rem_euclid(HOUR) != 0);
    let end = to.div_euclid(HOUR);
    if first >= end {
        return (vec![(from, to)], (0, 0));
    }
    let edges = [(from, first * HOUR), (end * HOUR, to)].into_iter().filter(|(a, b)| a < b).collect();
    (edges, (first, end))
}

/// Per-environment sums, in a stable order.
type PerEnv<T> = std::collections::BTreeMap<String, T>;

/// Finished outcomes of one environment: counts, lead time, and the durations' count and sum.
#[derive(Default)]
struct Finished {
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    lead: f64,
    timed: u64,
    duration_sum: f64,
}

/// Everything the performance view needs for one window. Whole hours come from the hourly
/// rollups the triggers keep exact, the partial hours at the window's edges from raw rows, so the
/// cost depends on the number of hours and the rows of two of them, not on the rows in the window.
/// Duration percentiles walk the duration index when the window holds a large share of all
/// durations, and sort the window's own otherwise. The figures are exact either way.
pub(super) fn window_figures(
    c: &Connection,
    w: &Window,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<WindowFigures, StoreError> {
    let tx = c.unchecked_transaction().map_err(err("begin read"))?;
    let (from, to, now) = (to_ms(w.from), to_ms(w.to), to_ms(now));
    let env = w.environment.as_deref();
    let (edges, (first_hour, end_hour)) = split_hours(from, to);
    let mut out = WindowFigures { submitted: 0, ..WindowFigures::default() };
    out.submitted = tx
        .prepare_cached(
            "SELECT count(*) FROM deployments WHERE created_at >= ?1 AND created_at < ?2 AND (?3 IS NULL OR environment = ?3)",
        )
        .and_then(|mut s| s.query_row(params![from, to, env], |r| r.get::<_, i64>(0)))
        .map_err(err("count submitted"))? as u64;

    // Outcomes, lead time and the durations' count and sum, per environment.
    let mut finished: PerEnv<Finished> = PerEnv::new();
    let mut add_finished = |row: &rusqlite::Row<'_>| -> rusqlite::Result<()> {
        let f = finished.entry(row.get(0)?).or_default();
        f.succeeded += row.get::<_, f64>(1)? as u64;
        f.failed += row.get::<_, f64>(2)? as u64;
        f.cancelled += row.get::<_, f64>(3)? as u64;
        f.lead += row.get::<_, f64>(4)?;
        f.timed += row.get::<_, f64>(5)? as u64;
        f.duration_sum += row.get::<_, f64>(6)?;
        Ok(())
    };
    if first_hour < end_hour {
        let mut stmt = tx
            .prepare_cached(
                "SELECT environment, total(succeeded), total(failed), total(cancelled), total(lead_sum), total(timed), \
                        total(duration_sum) \
                 FROM finished_hours WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR environment = ?3) GROUP BY 1",
            )
            .map_err(err("finished rollup"))?;
        let mut rows = stmt.query(params![first_hour, end_hour, env]).map_err(err("finished rollup"))?;
        while let Some(row) = rows.next().map_err(err("finished rollup"))? {
            add_finished(row).map_err(err("finished rollup"))?;
        }
    }
    for &(a, b) in &edges {
        let mut stmt = tx
            .prepare_cached(
                "SELECT environment, total(status = 'succeeded'), total(status = 'failed'), total(status = 'cancelled'), \
                        total(CASE WHEN status = 'succeeded' THEN coalesce(queue_wait_ms, 0) + coalesce(duration_ms, 0) END), \
                        total(status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL), \
                        total(CASE WHEN status IN ('succeeded', 'failed') THEN duration_ms END) \
                 FROM deployments WHERE finished_at >= ?1 AND finished_at < ?2 AND (?3 IS NULL OR environment = ?3) \
                 GROUP BY 1",
            )
            .map_err(err("count finished"))?;
        let mut rows = stmt.query(params![a, b, env]).map_err(err("count finished"))?;
        while let Some(row) = rows.next().map_err(err("count finished"))? {
            add_finished(row).map_err(err("count finished"))?;
        }
    }
    let (mut timed, mut duration_sum) = (0u64, 0f64);
    for (environment, f) in finished {
        out.succeeded += f.succeeded;
        out.failed += f.failed;
        out.cancelled += f.cancelled;
        out.lead_time_total_ms += f.lead as u64;
        timed += f.timed;
        duration_sum += f.duration_sum;
        if f.succeeded + f.failed > 0 {
            let outcomes = Outcomes { succeeded: f.succeeded, failed: f.failed, lead_time_total_ms: f.lead as u64 };
            out.per_environment.push((environment, outcomes));
        }
    }
    out.duration = window_durations(&tx, from, to, env, timed, duration_sum)?;

    // Queue wait of the deployments started in the window.
    let (mut waits, mut wait_sum) = (0u64, 0f64);
    let mut sums = |sql: &str, a: i64, b: i64, op: &'static str| -> Result<(), StoreError> {
        let (n, sum) = tx
            .prepare_cached(sql)
            .and_then(|mut s| s.query_row(params![a, b, env], |r| Ok((r.get::<_, f64>(0)?, r.get::<_, f64>(1)?))))
            .map_err(err(op))?;
        waits += n as u64;
        wait_sum += sum;
        Ok(())
    };
    if first_hour < end_hour {
        sums(
            "SELECT total(waited), total(wait_sum) FROM started_hours \
             WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR environment = ?3)",
            first_hour,
            end_hour,
            "queue wait rollup",
        )?;
    }
    for &(a, b) in &edges {
        sums(
            "SELECT total(queue_wait_ms IS NOT NULL), total(queue_wait_ms) FROM deployments \
             WHERE started_at >= ?1 AND started_at < ?2 AND (?3 IS NULL OR environment = ?3)",
            a,
            b,
            "queue wait",
        )?;
    }
    out.queue_wait_count = waits;
    out.queue_wait_mean_ms = (waits > 0).then(|| wait_sum / waits as f64);

    out.busy_ms = busy(&tx, from, to, now, env, &edges, (first_hour, end_hour))?;
    out.restores = restores(&tx, from, to, env)?;
    Ok(out)
}

/// Count, mean and nearest-rank percentiles of the durations of the window's finished
/// non-cancelled deployments, given their count and sum.
fn window_durations(
    c: &Connection,
    from: i64,
    to: i64,
    env: Option<&str>,
    timed: u64,
    sum: f64,
) -> Result<DurationStats, StoreError> {
    let mean_ms = (timed > 0).then(|| sum / timed as f64);
    if timed == 0 {
        return Ok(DurationStats { count: 0, mean_ms, p50_ms: None, p95_ms: None });
    }
    let all: i64 = c
        .prepare_cached("SELECT total(timed) FROM status_totals WHERE status IN ('succeeded', 'failed')")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, f64>(0)))
        .map_err(err("duration totals"))? as i64;
    if (timed as i64).saturating_mul(4) >= all {
        // A large share: walk the duration index from its nearer end, skipping the rows outside
        // the window (at most about half the index for the median, a twentieth for p95).
        let at = |p: f64| -> Result<Option<u64>, StoreError> {
            let Some(index) = percentile_index(timed, p) else { return Ok(None) };
            let (order, offset) = if index <= timed / 2 { ("ASC", index) } else { ("DESC", timed - 1 - index) };
            c.prepare_cached(&format!(
                "SELECT duration_ms FROM deployments INDEXED BY deployments_by_duration \
                 WHERE status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL \
                   AND finished_at >= ?1 AND finished_at < ?2 AND (?3 IS NULL OR environment = ?3) \
                 ORDER BY duration_ms {order} LIMIT 1 OFFSET ?4"
            ))
            .and_then(|mut s| s.query_row(params![from, to, env, offset as i64], |r| r.get::<_, i64>(0)).optional())
            .map(|v| v.map(|v| v.max(0) as u64))
            .map_err(err("window duration percentile"))
        };
        return Ok(DurationStats { count: timed, mean_ms, p50_ms: at(50.0)?, p95_ms: at(95.0)? });
    }
    let durations: Vec<u64> = c
        .prepare_cached(
            "SELECT duration_ms FROM deployments WHERE finished_at >= ?1 AND finished_at < ?2 \
             AND +status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL AND (?3 IS NULL OR environment = ?3) \
             ORDER BY duration_ms",
        )
        .and_then(|mut s| {
            s.query_map(params![from, to, env], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(err("window durations"))?
        .into_iter()
        .map(|v| v.max(0) as u64)
        .collect();
    let sorted = DurationStats::from_sorted(&durations);
    Ok(DurationStats { mean_ms, ..sorted })
}

/// Busy slot-milliseconds per environment: each attempt from its start for its (monotonic) run
/// time, clipped to `[from, to)`; attempts still running count until `now`.
///
/// Exact without reading every attempt of the window: the run times of the attempts that
/// started in its whole hours come from `attempt_hours`, those that started in its partial
/// hours from raw rows; then the parts outside the window are taken off and added: attempts
/// that started before `from` and ran into it, and attempts that started in it and ran past
/// `to`. Both kinds started at most the longest run time before the edge (`max_run`, an upper
/// bound kept by the triggers), which bounds the rows read.
fn busy(
    c: &Connection,
    from: i64,
    to: i64,
    now: i64,
    env: Option<&str>,
    edges: &[(i64, i64)],
    (first_hour, end_hour): (i64, i64),
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut busy: PerEnv<i64> = PerEnv::new();
    let max_run: i64 = c
        .prepare_cached("SELECT coalesce(max(max_run), 0) FROM attempt_hours")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(err("longest run"))?;
    let mut add = |sql: &str, p: &[&dyn rusqlite::ToSql], op: &'static str| -> Result<(), StoreError> {
        let mut stmt = c.prepare_cached(sql).map_err(err(op))?;
        let mut rows = stmt.query(p).map_err(err(op))?;
        while let Some(row) = rows.next().map_err(err(op))? {
            let environment: String = row.get(0).map_err(err(op))?;
            *busy.entry(environment).or_default() += row.get::<_, f64>(1).map_err(err(op))? as i64;
        }
        Ok(())
    };
    // Finished attempts that started in the window, whole run times.
    if first_hour < end_hour {
        add(
            "SELECT environment, total(run_sum) FROM attempt_hours \
             WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR environment = ?3) GROUP BY 1",
            params![first_hour, end_hour, env],
            "busy rollup",
        )?;
    }
    for &(a, b) in edges {
        add(
            &format!(
                "SELECT environment, total({RUN}) FROM attempts INDEXED BY attempts_by_started \
                 WHERE started_at >= ?1 AND started_at < ?2 AND finished_at IS NOT NULL \
                   AND (?3 IS NULL OR environment = ?3) GROUP BY 1"
            ),
            params![a, b, env],
            "busy edges",
        )?;
    }
    // Minus what those ran past `to`.
    add(
        &format!(
            "SELECT environment, -total(max(0, started_at + {RUN} - ?2)) FROM attempts INDEXED BY attempts_by_started \
             WHERE started_at >= max(?1, ?2 - ?4) AND started_at < ?2 AND finished_at IS NOT NULL \
               AND (?3 IS NULL OR environment = ?3) GROUP BY 1"
        ),
        params![from, to, env, max_run],
        "busy past the end",
    )?;
    // Plus the finished attempts that started before `from` and ran into the window.
    add(
        &format!(
            "SELECT environment, total(max(0, min(started_at + {RUN}, ?2) - ?1)) FROM attempts INDEXED BY attempts_by_started \
             WHERE started_at >= ?1 - ?4 AND started_at < ?1 AND finished_at IS NOT NULL \
               AND (?3 IS NULL OR environment = ?3) GROUP BY 1"
        ),
        params![from, to, env, max_run],
        "busy before the start",
    )?;
    // Plus the attempts still running, until `now`.
    add(
        "SELECT environment, total(max(0, min(?4, ?2) - max(started_at, ?1))) \
         FROM attempts INDEXED BY attempts_by_finished \
         WHERE finished_at IS NULL AND started_at IS NOT NULL AND started_at < ?2 \
           AND (?3 IS NULL OR environment = ?3) GROUP BY 1",
        params![from, to, env, now],
        "busy running",
    )?;
    Ok(busy.into_iter().filter(|(_, ms)| *ms > 0).map(|(e, ms)| (e, ms as u64)).collect())
}

/// Restore times of the failure episodes that started in the window: a failure whose previous
/// finished non-cancelled deployment on the environment succeeded (or that has none), up to the
/// next success there. One ordered scan of the window's outcomes, plus a lookup before the
/// window per environment and after it for episodes still open at its end.
fn restores(c: &Connection, from: i64, to: i64, env: Option<&str>) -> Result<Vec<(String, u64)>, StoreError> {
    #[derive(Default)]
    struct State {
        seen: bool,
        last_failed: bool,
        open: Option<i64>,
    }
    let mut states: std::collections::BTreeMap<String, State> = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    let mut stmt = c
        .prepare_cached(
            "SELECT environment, status, finished_at FROM deployments \
             WHERE finished_at >= ?1 AND finished_at < ?2 AND +status IN ('succeeded', 'failed') \
               AND (?3 IS NULL OR environment = ?3) ORDER BY finished_at",
        )
        .map_err(err("restore episodes"))?;
    let mut rows = stmt.query(params![from, to, env]).map_err(err("restore episodes"))?;
    while let Some(row) = rows.next().map_err(err("restore episodes"))? {
        let environment = row.get_ref(0).map_err(err("restore episodes"))?.as_str().unwrap_or_default();
        let failed = row.get_ref(1).map_err(err("restore episodes"))?.as_str().is_ok_and(|s| s == "failed");
        let at: i64 = row.get(2).map_err(err("restore episodes"))?;
        // One allocation per environment, not per row.
        if !states.contains_key(environment) {
            states.insert(environment.to_owned(), State::default());
        }
        let Some(state) = states.get_mut(environment) else { continue };
        if !state.seen {
            state.seen = true;
            state.last_failed = c
                .prepare_cached(
                    "SELECT status FROM deployments INDEXED BY deployments_by_env_outcome \
                     WHERE environment = ?1 AND status IN ('succeeded', 'failed') AND finished_at < ?2 \
                     ORDER BY finished_at DESC LIMIT 1",
                )
                .and_then(|mut s| s.query_row(params![environment, from], |r| r.get::<_, String>(0)).optional())
                .map_err(err("episode start"))?
                .is_some_and(|s| s == "failed");
        }
        if failed {
            if !state.last_failed {
                state.open = Some(at);
            }
        } else if let Some(started) = state.open.take() {
            out.push((environment.to_owned(), (at - started).max(0) as u64));
        }
        state.last_failed = failed;
    }
    for (environment, state) in states {
        let Some(started) = state.open else { continue };
        let restored: Option<i64> = c
            .prepare_cached(
                "SELECT min(finished_at) FROM deployments INDEXED BY deployments_by_env_outcome \
                 WHERE environment = ?1 AND status = 'succeeded' AND finished_at >= ?2",
            )
            .and_then(|mut s| s.query_row(params![environment, to], |r| r.get(0)))
            .map_err(err("episode end"))?;
        if let Some(restored) = restored {
            out.push((environment, (restored - started).max(0) as u64));
        }
    }
    Ok(out)
}

/// The run time of a finished attempt (monotonic when recorded, else from its wall times).
const RUN: &str = "coalesce(duration_ms, max(0, finished_at - started_at))";

/// Hour length in milliseconds; rollup tables are keyed by `ms / HOUR`.
const HOUR: i64 = 3_600_000;
/// Windows up to this long are aggregated from raw rows in one grouped query; longer ones use
/// the hourly rollups plus raw rows for the partial hours at bucket edges.
const RAW_WINDOW: i64 = 48 * HOUR;

/// The three row families a trend metric is computed from.
#[derive(Clone, Copy)]
enum Family {
    Finished,
    Started,
    Retries,
}

fn family(metric: TrendMetric) -> Family {
    match metric {
        TrendMetric::Deployments | TrendMetric::SuccessRate | TrendMetric::FailureRate | TrendMetric::Duration => {
            Family::Finished
        }
        TrendMetric::QueueWait => Family::Started,
        TrendMetric::Retries => Family::Retries,
    }
}

fn read_figures(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<BucketFigures> {
    Ok(BucketFigures {
        count: row.get::<_, f64>(first)? as u64,
        succeeded: row.get::<_, f64>(first + 1)? as u64,
        failed: row.get::<_, f64>(first + 2)? as u64,
        sum_ms: row.get::<_, f64>(first + 3)?,
        valued: row.get::<_, f64>(first + 4)? as u64,
    })
}

fn add(a: &mut BucketFigures, b: &BucketFigures) {
    a.count += b.count;
    a.succeeded += b.succeeded;
    a.failed += b.failed;
    a.sum_ms += b.sum_ms;
    a.valued += b.valued;
}

/// Raw figures of the rows of one family in `[from, to)`.
fn raw_range(
    c: &Connection,
    family: Family,
    from: i64,
    to: i64,
    env: Option<&str>,
) -> Result<BucketFigures, StoreError> {
    let sql = match family {
        Family::Finished => {
            "SELECT count(*), total(status = 'succeeded'), total(status = 'failed'), total(duration_ms), \
                    total(duration_ms IS NOT NULL) \
             FROM deployments WHERE finished_at >= ?1 AND finished_at < ?2 AND +status IN ('succeeded', 'failed') \
               AND (?3 IS NULL OR environment = ?3)"
        }
        Family::Started => {
            "SELECT count(*), 0.0, 0.0, total(queue_wait_ms), total(queue_wait_ms IS NOT NULL) \
             FROM deployments WHERE started_at >= ?1 AND started_at < ?2 AND (?3 IS NULL OR environment = ?3)"
        }
        Family::Retries => {
            "SELECT count(*), 0.0, 0.0, 0.0, 0.0 FROM attempts INDEXED BY attempts_by_started \
             WHERE started_at >= ?1 AND started_at < ?2 AND attempt > 1 AND (?3 IS NULL OR environment = ?3)"
        }
    };
    c.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params![from, to, env], |r| read_figures(r, 0)))
        .map_err(err("trend range"))
}

/// Per-bucket raw figures of a trend.
pub(super) fn trend_figures(c: &Connection, spec: &TrendSpec) -> Result<Vec<BucketFigures>, StoreError> {
    let tx = c.unchecked_transaction().map_err(err("begin read"))?;
    let from = to_ms(spec.window.from);
    let to = to_ms(spec.window.to);
    let env = spec.window.environment.as_deref();
    let fam = family(spec.metric);
    if to - from > RAW_WINDOW {
        return rolled_up(&tx, spec, fam, env);
    }
    let step = spec.period.delta().num_milliseconds();
    let n = spec.buckets().len();
    let mut out = vec![BucketFigures::default(); n];
    let sql = match fam {
        Family::Finished => {
            "SELECT (finished_at - ?1) / ?4, count(*), total(status = 'succeeded'), total(status = 'failed'), \
                    total(duration_ms), total(duration_ms IS NOT NULL) \
             FROM deployments WHERE finished_at >= ?1 AND finished_at < ?2 AND +status IN ('succeeded', 'failed') \
               AND (?3 IS NULL OR environment = ?3) GROUP BY 1"
        }
        Family::Started => {
            "SELECT (started_at - ?1) / ?4, count(*), 0.0, 0.0, total(queue_wait_ms), total(queue_wait_ms IS NOT NULL) \
             FROM deployments WHERE started_at >= ?1 AND started_at < ?2 AND (?3 IS NULL OR environment = ?3) GROUP BY 1"
        }
        Family::Retries => {
            "SELECT (started_at - ?1) / ?4, count(*), 0.0, 0.0, 0.0, 0.0 FROM attempts INDEXED BY attempts_by_started \
             WHERE started_at >= ?1 AND started_at < ?2 AND attempt > 1 AND (?3 IS NULL OR environment = ?3) \
             GROUP BY 1"
        }
    };
    let mut stmt = tx.prepare_cached(sql).map_err(err("trend"))?;
    let mut rows = stmt.query(params![from, to, env, step]).map_err(err("trend"))?;
    while let Some(row) = rows.next().map_err(err("trend"))? {
        let b: i64 = row.get(0).map_err(err("trend"))?;
        if let Some(slot) = usize::try_from(b).ok().and_then(|b| out.get_mut(b)) {
            *slot = read_figures(row, 1).map_err(err("trend"))?;
        }
    }
    Ok(out)
}

/// Long windows: whole hours from the rollups, partial hours at bucket edges from raw rows.
fn rolled_up(
    c: &Connection,
    spec: &TrendSpec,
    fam: Family,
    env: Option<&str>,
) -> Result<Vec<BucketFigures>, StoreError> {
    let from = to_ms(spec.window.from);
    let to = to_ms(spec.window.to);
    let (first_hour, end_hour) = (from.div_euclid(HOUR) + 1, to.div_euclid(HOUR));
    let sql = match fam {
        Family::Finished => {
            "SELECT hour, total(succeeded) + total(failed), total(succeeded), total(failed), total(duration_sum), total(timed) \
             FROM finished_hours WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR environment = ?3) GROUP BY hour"
        }
        Family::Started => {
            "SELECT hour, total(started), 0.0, 0.0, total(wait_sum), total(waited) \
             FROM started_hours WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR environment = ?3) GROUP BY hour"
        }
        Family::Retries => {
            "SELECT hour, total(retries), 0.0, 0.0, 0.0, 0.0 \
             FROM retry_hours WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR environment = ?3) GROUP BY hour"
        }
    };
    let hours: Vec<(i64, BucketFigures)> = c
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_map(params![from.div_euclid(HOUR), end_hour + 1, env], |r| Ok((r.get(0)?, read_figures(r, 1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(err("trend rollup"))?;
    let _ = first_hour;
    let mut out = Vec::new();
    for (start, end) in spec.buckets() {
        let (s, e) = (to_ms(start), to_ms(end));
        // Whole hours [hs, he) inside the bucket; the rest of the bucket is read raw.
        let hs = s.div_euclid(HOUR) + i64::from(s.rem_euclid(HOUR) != 0);
        let he = e.div_euclid(HOUR);
        let mut figures = BucketFigures::default();
        if hs < he {
            for (_, f) in hours.iter().filter(|(h, _)| *h >= hs && *h < he) {
                add(&mut figures, f);
            }
            for (a, b) in [(s, hs * HOUR), (he * HOUR, e)] {
                if a < b {
                    add(&mut figures, &raw_range(c, fam, a, b, env)?);
                }
            }
        } else {
            figures = raw_range(c, fam, s, e, env)?;
        }
        out.push(figures);
    }
    Ok(out)
}
