//! The `SQLite` store: WAL mode, `synchronous = FULL`, one writer connection used by the persister
//! thread and a small pool of reader connections.
//!
//! Times are stored as integer milliseconds since the Unix epoch (UTC), which keeps range
//! queries and analytics cheap. The schema version lives in `PRAGMA user_version`; `migrate`
//! brings any older file up to date, and a file from a newer tds is refused.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params, params_from_iter};

use super::{
    AttemptRecord, EnvironmentRecord, HistoryQuery, Page, ReleaseRecord, Store, TransitionRecord, Write, WriteOutcome,
};
use crate::clock::{from_ms, to_ms};
use crate::error::StoreError;
use crate::model::{
    ArtifactInfo, ArtifactKind, Deployment, DeploymentId, Phase, Priority, Status, StatusKind, StepRef,
};

/// The schema this build writes.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA_V1: &str = "
CREATE TABLE deployments (
    id TEXT PRIMARY KEY NOT NULL,
    environment TEXT NOT NULL,
    version TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    phase TEXT,
    step_index INTEGER,
    step_total INTEGER,
    step_name TEXT,
    attempt INTEGER NOT NULL,
    retry_count INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    artifact_name TEXT NOT NULL,
    artifact_size INTEGER NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    artifact_kind TEXT NOT NULL,
    params TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT,
    error TEXT,
    enqueued_at INTEGER,
    attempt_started_at INTEGER,
    next_retry_at INTEGER,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    duration_ms INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    queue_wait_ms INTEGER
);
CREATE INDEX deployments_by_created ON deployments (created_at DESC, id DESC, environment);
CREATE INDEX deployments_by_env_created ON deployments (environment, created_at DESC, id DESC);
CREATE INDEX deployments_by_status ON deployments (status, created_at DESC);
CREATE INDEX deployments_by_finished ON deployments (finished_at, status, environment, duration_ms, created_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX deployments_by_started ON deployments (started_at, environment, queue_wait_ms) WHERE started_at IS NOT NULL;
CREATE INDEX deployments_by_env_outcome ON deployments (environment, status, finished_at);
CREATE INDEX deployments_by_duration ON deployments (duration_ms)
    WHERE status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL;

-- Exact running totals per status, kept by triggers in the same transaction as every change,
-- so that metrics over any number of deployments cost a few row reads.
CREATE TABLE status_totals (
    status TEXT PRIMARY KEY NOT NULL,
    deployments INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    timed INTEGER NOT NULL,
    duration_sum INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER status_totals_insert AFTER INSERT ON deployments BEGIN
    INSERT INTO status_totals (status, deployments, retries, timed, duration_sum)
    VALUES (NEW.status, 1, NEW.attempt - 1, NEW.duration_ms IS NOT NULL, coalesce(NEW.duration_ms, 0))
    ON CONFLICT (status) DO UPDATE SET
        deployments = deployments + 1,
        retries = retries + excluded.retries,
        timed = timed + excluded.timed,
        duration_sum = duration_sum + excluded.duration_sum;
END;
CREATE TRIGGER status_totals_update AFTER UPDATE ON deployments
WHEN OLD.status IS NOT NEW.status OR OLD.attempt IS NOT NEW.attempt OR OLD.duration_ms IS NOT NEW.duration_ms BEGIN
    UPDATE status_totals SET
        deployments = deployments - 1,
        retries = retries - (OLD.attempt - 1),
        timed = timed - (OLD.duration_ms IS NOT NULL),
        duration_sum = duration_sum - coalesce(OLD.duration_ms, 0)
    WHERE status = OLD.status;
    INSERT INTO status_totals (status, deployments, retries, timed, duration_sum)
    VALUES (NEW.status, 1, NEW.attempt - 1, NEW.duration_ms IS NOT NULL, coalesce(NEW.duration_ms, 0))
    ON CONFLICT (status) DO UPDATE SET
        deployments = deployments + 1,
        retries = retries + excluded.retries,
        timed = timed + excluded.timed,
        duration_sum = duration_sum + excluded.duration_sum;
END;

CREATE TABLE attempts (
    deployment_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    -- Copied from the deployment so that analytics need no join.
    environment TEXT NOT NULL,
    queued_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    outcome TEXT,
    error TEXT,
    duration_ms INTEGER,
    PRIMARY KEY (deployment_id, attempt)
) WITHOUT ROWID;
CREATE INDEX attempts_by_started ON attempts (started_at, attempt, environment);
CREATE INDEX attempts_by_finished ON attempts (finished_at, started_at, duration_ms, environment);

-- Hourly rollups (hour = ms / 3600000, UTC) kept exact by triggers: long trend windows read
-- these plus the raw rows of the partial hours at bucket edges.
CREATE TABLE finished_hours (
    environment TEXT NOT NULL,
    hour INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    timed INTEGER NOT NULL,
    duration_sum INTEGER NOT NULL,
    PRIMARY KEY (environment, hour)
) WITHOUT ROWID;
CREATE TRIGGER finished_hours_insert AFTER INSERT ON deployments WHEN NEW.finished_at IS NOT NULL BEGIN
    INSERT INTO finished_hours (environment, hour, succeeded, failed, cancelled, timed, duration_sum) VALUES (NEW.environment, NEW.finished_at / 3600000, NEW.status = 'succeeded', NEW.status = 'failed', NEW.status = 'cancelled', (NEW.status IN ('succeeded', 'failed') AND NEW.duration_ms IS NOT NULL), CASE WHEN NEW.status IN ('succeeded', 'failed') THEN coalesce(NEW.duration_ms, 0) ELSE 0 END)
    ON CONFLICT (environment, hour) DO UPDATE SET
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled,
        timed = timed + excluded.timed,
        duration_sum = duration_sum + excluded.duration_sum;
END;
CREATE TRIGGER finished_hours_remove AFTER UPDATE ON deployments
WHEN OLD.finished_at IS NOT NULL AND (OLD.status IS NOT NEW.status OR OLD.finished_at IS NOT NEW.finished_at OR OLD.duration_ms IS NOT NEW.duration_ms) BEGIN
    UPDATE finished_hours SET
        succeeded = succeeded - (OLD.status = 'succeeded'),
        failed = failed - (OLD.status = 'failed'),
        cancelled = cancelled - (OLD.status = 'cancelled'),
        timed = timed - (OLD.status IN ('succeeded', 'failed') AND OLD.duration_ms IS NOT NULL),
        duration_sum = duration_sum - CASE WHEN OLD.status IN ('succeeded', 'failed') THEN coalesce(OLD.duration_ms, 0) ELSE 0 END
    WHERE environment = OLD.environment AND hour = OLD.finished_at / 3600000;
END;
CREATE TRIGGER finished_hours_add AFTER UPDATE ON deployments
WHEN NEW.finished_at IS NOT NULL AND (OLD.status IS NOT NEW.status OR OLD.finished_at IS NOT NEW.finished_at OR OLD.duration_ms IS NOT NEW.duration_ms) BEGIN
    INSERT INTO finished_hours (environment, hour, succeeded, failed, cancelled, timed, duration_sum) VALUES (NEW.environment, NEW.finished_at / 3600000, NEW.status = 'succeeded', NEW.status = 'failed', NEW.status = 'cancelled', (NEW.status IN ('succeeded', 'failed') AND NEW.duration_ms IS NOT NULL), CASE WHEN NEW.status IN ('succeeded', 'failed') THEN coalesce(NEW.duration_ms, 0) ELSE 0 END)
    ON CONFLICT (environment, hour) DO UPDATE SET
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled,
        timed = timed + excluded.timed,
        duration_sum = duration_sum + excluded.duration_sum;
END;

CREATE TABLE started_hours (
    environment TEXT NOT NULL,
    hour INTEGER NOT NULL,
    started INTEGER NOT NULL,
    waited INTEGER NOT NULL,
    wait_sum INTEGER NOT NULL,
    PRIMARY KEY (environment, hour)
) WITHOUT ROWID;
CREATE TRIGGER started_hours_insert AFTER INSERT ON deployments WHEN NEW.started_at IS NOT NULL BEGIN
    INSERT INTO started_hours (environment, hour, started, waited, wait_sum) VALUES (NEW.environment, NEW.started_at / 3600000, 1, NEW.queue_wait_ms IS NOT NULL, coalesce(NEW.queue_wait_ms, 0))
    ON CONFLICT (environment, hour) DO UPDATE SET
        started = started + excluded.started,
        waited = waited + excluded.waited,
        wait_sum = wait_sum + excluded.wait_sum;
END;
CREATE TRIGGER started_hours_remove AFTER UPDATE ON deployments
WHEN OLD.started_at IS NOT NULL AND (OLD.started_at IS NOT NEW.started_at OR OLD.queue_wait_ms IS NOT NEW.queue_wait_ms) BEGIN
    UPDATE started_hours SET
        started = started - 1,
        waited = waited - (OLD.queue_wait_ms IS NOT NULL),
        wait_sum = wait_sum - coalesce(OLD.queue_wait_ms, 0)
    WHERE environment = OLD.environment AND hour = OLD.started_at / 3600000;
END;
CREATE TRIGGER started_hours_add AFTER UPDATE ON deployments
WHEN NEW.started_at IS NOT NULL AND (OLD.started_at IS NOT NEW.started_at OR OLD.queue_wait_ms IS NOT NEW.queue_wait_ms) BEGIN
    INSERT INTO started_hours (environment, hour, started, waited, wait_sum) VALUES (NEW.environment, NEW.started_at / 3600000, 1, NEW.queue_wait_ms IS NOT NULL, coalesce(NEW.queue_wait_ms, 0))
    ON CONFLICT (environment, hour) DO UPDATE SET
        started = started + excluded.started,
        waited = waited + excluded.waited,
        wait_sum = wait_sum + excluded.wait_sum;
END;

CREATE TABLE retry_hours (
    environment TEXT NOT NULL,
    hour INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    PRIMARY KEY (environment, hour)
) WITHOUT ROWID;
CREATE TRIGGER retry_hours_insert AFTER INSERT ON attempts WHEN NEW.attempt > 1 AND NEW.started_at IS NOT NULL BEGIN
    INSERT INTO retry_hours (environment, hour, retries) VALUES (NEW.environment, NEW.started_at / 3600000, 1)
    ON CONFLICT (environment, hour) DO UPDATE SET retries = retries + excluded.retries;
END;
CREATE TRIGGER retry_hours_remove AFTER UPDATE ON attempts
WHEN OLD.attempt > 1 AND OLD.started_at IS NOT NULL AND OLD.started_at IS NOT NEW.started_at BEGIN
    UPDATE retry_hours SET retries = retries - 1 WHERE environment = OLD.environment AND hour = OLD.started_at / 3600000;
END;
CREATE TRIGGER retry_hours_add AFTER UPDATE ON attempts
WHEN NEW.attempt > 1 AND NEW.started_at IS NOT NULL AND OLD.started_at IS NOT NEW.started_at BEGIN
    INSERT INTO retry_hours (environment, hour, retries) VALUES (NEW.environment, NEW.started_at / 3600000, 1)
    ON CONFLICT (environment, hour) DO UPDATE SET retries = retries + excluded.retries;
END;

CREATE TABLE transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    status TEXT NOT NULL,
    phase TEXT,
    message TEXT
);
CREATE INDEX transitions_by_deployment ON transitions (deployment_id, seq);

CREATE TABLE environments (
    name TEXT PRIMARY KEY NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    limit_override INTEGER
);

CREATE TABLE releases (
    environment TEXT NOT NULL,
    name TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    version TEXT NOT NULL,
    succeeded_at INTEGER NOT NULL,
    PRIMARY KEY (environment, name)
) WITHOUT ROWID;
";

/// Schema 2: rollups and an index that let the performance view of any window read whole hours
/// from rollups and only the partial hours at its edges from raw rows (a 30-day window over
/// 100,000 deployments read every row: ≈ 260 ms).
/// - `finished_hours.lead_sum`: submission → success time of the succeeded ones;
/// - `attempt_hours`: run time of the finished attempts by the hour they started, and the
///   longest run (an upper bound, never lowered: it bounds the attempts that cross a window edge);
/// - `deployments_by_duration` also holds `finished_at` and `environment`, so a window's
///   duration percentiles are read by walking the index, without sorting.
const SCHEMA_V2: &str = "
ALTER TABLE finished_hours ADD COLUMN lead_sum INTEGER NOT NULL DEFAULT 0;
DROP TRIGGER finished_hours_insert;
DROP TRIGGER finished_hours_remove;
DROP TRIGGER finished_hours_add;
CREATE TRIGGER finished_hours_insert AFTER INSERT ON deployments WHEN NEW.finished_at IS NOT NULL BEGIN
    INSERT INTO finished_hours (environment, hour, succeeded, failed, cancelled, timed, duration_sum, lead_sum) VALUES (NEW.environment, NEW.finished_at / 3600000, NEW.status = 'succeeded', NEW.status = 'failed', NEW.status = 'cancelled', (NEW.status IN ('succeeded', 'failed') AND NEW.duration_ms IS NOT NULL), CASE WHEN NEW.status IN ('succeeded', 'failed') THEN coalesce(NEW.duration_ms, 0) ELSE 0 END, CASE WHEN NEW.status = 'succeeded' THEN coalesce(NEW.queue_wait_ms, 0) + coalesce(NEW.duration_ms, 0) ELSE 0 END)
    ON CONFLICT (environment, hour) DO UPDATE SET
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled,
        timed = timed + excluded.timed,
        duration_sum = duration_sum + excluded.duration_sum,
        lead_sum = lead_sum + excluded.lead_sum;
END;
CREATE TRIGGER finished_hours_remove AFTER UPDATE ON deployments
WHEN OLD.finished_at IS NOT NULL AND (OLD.status IS NOT NEW.status OR OLD.finished_at IS NOT NEW.finished_at OR OLD.duration_ms IS NOT NEW.duration_ms OR OLD.queue_wait_ms IS NOT NEW.queue_wait_ms OR OLD.environment IS NOT NEW.environment) BEGIN
    UPDATE finished_hours SET
        succeeded = succeeded - (OLD.status = 'succeeded'),
        failed = failed - (OLD.status = 'failed'),
        cancelled = cancelled - (OLD.status = 'cancelled'),
        timed = timed - (OLD.status IN ('succeeded', 'failed') AND OLD.duration_ms IS NOT NULL),
        duration_sum = duration_sum - CASE WHEN OLD.status IN ('succeeded', 'failed') THEN coalesce(OLD.duration_ms, 0) ELSE 0 END,
        lead_sum = lead_sum - CASE WHEN OLD.status = 'succeeded' THEN coalesce(OLD.queue_wait_ms, 0) + coalesce(OLD.duration_ms, 0) ELSE 0 END
    WHERE environment = OLD.environment AND hour = OLD.finished_at / 3600000;
END;
CREATE TRIGGER finished_hours_add AFTER UPDATE ON deployments
WHEN NEW.finished_at IS NOT NULL AND (OLD.status IS NOT NEW.status OR OLD.finished_at IS NOT NEW.finished_at OR OLD.duration_ms IS NOT NEW.duration_ms OR OLD.queue_wait_ms IS NOT NEW.queue_wait_ms OR OLD.environment IS NOT NEW.environment) BEGIN
    INSERT INTO finished_hours (environment, hour, succeeded, failed, cancelled, timed, duration_sum, lead_sum) VALUES (NEW.environment, NEW.finished_at / 3600000, NEW.status = 'succeeded', NEW.status = 'failed', NEW.status = 'cancelled', (NEW.status IN ('succeeded', 'failed') AND NEW.duration_ms IS NOT NULL), CASE WHEN NEW.status IN ('succeeded', 'failed') THEN coalesce(NEW.duration_ms, 0) ELSE 0 END, CASE WHEN NEW.status = 'succeeded' THEN coalesce(NEW.queue_wait_ms, 0) + coalesce(NEW.duration_ms, 0) ELSE 0 END)
    ON CONFLICT (environment, hour) DO UPDATE SET
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled,
        timed = timed + excluded.timed,
        duration_sum = duration_sum + excluded.duration_sum,
        lead_sum = lead_sum + excluded.lead_sum;
END;
UPDATE finished_hours SET lead_sum = (
    SELECT total(coalesce(queue_wait_ms, 0) + coalesce(duration_ms, 0)) FROM deployments
    WHERE deployments.environment = finished_hours.environment AND status = 'succeeded'
      AND finished_at >= finished_hours.hour * 3600000 AND finished_at < (finished_hours.hour + 1) * 3600000
);

CREATE TABLE attempt_hours (
    environment TEXT NOT NULL,
    hour INTEGER NOT NULL,
    run_sum INTEGER NOT NULL,
    max_run INTEGER NOT NULL,
    PRIMARY KEY (environment, hour)
) WITHOUT ROWID;
CREATE TRIGGER attempt_hours_insert AFTER INSERT ON attempts
WHEN NEW.started_at IS NOT NULL AND NEW.finished_at IS NOT NULL BEGIN
    INSERT INTO attempt_hours (environment, hour, run_sum, max_run) VALUES (NEW.environment, NEW.started_at / 3600000, coalesce(NEW.duration_ms, max(0, NEW.finished_at - NEW.started_at)), coalesce(NEW.duration_ms, max(0, NEW.finished_at - NEW.started_at)))
    ON CONFLICT (environment, hour) DO UPDATE SET run_sum = run_sum + excluded.run_sum, max_run = max(max_run, excluded.max_run);
END;
CREATE TRIGGER attempt_hours_remove AFTER UPDATE ON attempts
WHEN OLD.started_at IS NOT NULL AND OLD.finished_at IS NOT NULL AND (OLD.started_at IS NOT NEW.started_at OR OLD.finished_at IS NOT NEW.finished_at OR OLD.duration_ms IS NOT NEW.duration_ms) BEGIN
    UPDATE attempt_hours SET run_sum = run_sum - coalesce(OLD.duration_ms, max(0, OLD.finished_at - OLD.started_at))
    WHERE environment = OLD.environment AND hour = OLD.started_at / 3600000;
END;
CREATE TRIGGER attempt_hours_add AFTER UPDATE ON attempts
WHEN NEW.started_at IS NOT NULL AND NEW.finished_at IS NOT NULL AND (OLD.started_at IS NOT NEW.started_at OR OLD.finished_at IS NOT NEW.finished_at OR OLD.duration_ms IS NOT NEW.duration_ms) BEGIN
    INSERT INTO attempt_hours (environment, hour, run_sum, max_run) VALUES (NEW.environment, NEW.started_at / 3600000, coalesce(NEW.duration_ms, max(0, NEW.finished_at - NEW.started_at)), coalesce(NEW.duration_ms, max(0, NEW.finished_at - NEW.started_at)))
    ON CONFLICT (environment, hour) DO UPDATE SET run_sum = run_sum + excluded.run_sum, max_run = max(max_run, excluded.max_run);
END;
INSERT INTO attempt_hours (environment, hour, run_sum, max_run)
    SELECT environment, started_at / 3600000, sum(coalesce(duration_ms, max(0, finished_at - started_at))), max(coalesce(duration_ms, max(0, finished_at - started_at)))
    FROM attempts WHERE started_at IS NOT NULL AND finished_at IS NOT NULL GROUP BY 1, 2;

DROP INDEX deployments_by_duration;
CREATE INDEX deployments_by_duration ON deployments (duration_ms, finished_at, environment)
    WHERE status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL;
";

/// Migrations from version `i` to `i + 1`, in order.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2];

const DEPLOYMENT_COLUMNS: &str = "id, environment, version, priority, status, phase, step_index, step_total, \
    step_name, attempt, retry_count, max_retries, artifact_name, artifact_size, artifact_sha256, artifact_kind, \
    params, requested_by, error, enqueued_at, attempt_started_at, next_retry_at, created_at, started_at, \
    finished_at, duration_ms, cancel_requested, queue_wait_ms";

/// The embedded store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
}

/// The write connection with the column values last written for each unfinished deployment,
/// so that an update sets only the columns that changed (and touches only the indexes on
/// them): most updates are a phase or a step.
#[derive(Debug)]
struct Writer {
    conn: Connection,
    last: HashMap<DeploymentId, Vec<rusqlite::types::Value>>,
}

fn unusable(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Unusable { path: path.to_owned(), message: message.into() }
}

/// Page cache of the writer connection, KiB.
const WRITER_CACHE_KIB: u32 = 16 * 1024;
/// Page cache of each reader connection (at most 8 are pooled), KiB.
const READER_CACHE_KIB: u32 = 8 * 1024;

fn configure(conn: &Connection, path: &Path, cache_kib: u32) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| unusable(path, e.to_string()))?;
    // Reads go through each connection's own page cache, not a memory map of the file: with a
    // map, every page a query touches drags its neighbours into the process (the kernel maps
    // up to 64 KiB around each fault), and a few history queries over 100,000 deployments made
    // the whole file resident — 150 MB of RSS for a 160 MB store. The caches bound it; the
    // kernel's file cache still serves repeated reads from memory.
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA mmap_size = 0; PRAGMA cache_size = -{cache_kib};"
    ))
    .map_err(|e| unusable(path, e.to_string()))
}

impl SqliteStore {
    /// Opens or creates the store at `path` and migrates it. A file that is not a readable
    /// tds store (corrupt, foreign, from a newer tds) is an error, never silently replaced.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| unusable(path, format!("cannot create its folder: {e}")))?;
        }
        let conn = Connection::open(path).map_err(|e| unusable(path, e.to_string()))?;
        configure(&conn, path, WRITER_CACHE_KIB)?;
        let version: i64 =
            conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| unusable(path, e.to_string()))?;
        // Touch the schema so that a corrupt or foreign file fails here, not later.
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| unusable(path, e.to_string()))?;
        if version == 0 && tables > 0 {
            return Err(unusable(path, "the file holds tables but no tds schema version"));
        }
        if version > SCHEMA_VERSION {
            return Err(unusable(
                path,
                format!("it was written by a newer tds (schema {version}; this build knows {SCHEMA_VERSION})"),
            ));
        }
        let mode: String =
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(|e| unusable(path, e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(unusable(path, format!("cannot switch to WAL mode (got {mode})")));
        }
        Self::migrate(&conn, version, path)?;
        conn.set_prepared_statement_cache_capacity(256);
        let writer = Writer { conn, last: HashMap::new() };
        Ok(Self { path: path.to_owned(), writer: Mutex::new(writer), readers: Mutex::new(Vec::new()) })
    }

    fn migrate(conn: &Connection, from: i64, path: &Path) -> Result<(), StoreError> {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(from).unwrap_or(usize::MAX)) {
            let to = i as i64 + 1;
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {to}; COMMIT;"))
                .map_err(|e| unusable(path, format!("migration to schema {to} failed: {e}")))?;
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let conn = if let Some(c) = pooled {
            c
        } else {
            let c = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(StoreError::sqlite("open reader"))?;
            configure(&c, &self.path, READER_CACHE_KIB)?;
            c
        };
        let result = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() < 8 {
            pool.push(conn);
        }
        result
    }
}

fn opt_ms(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<i64> {
    t.map(to_ms)
}

fn invalid(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("invalid {what} '{value}' in store").into(),
    )
}

fn deployment_from_row(row: &Row<'_>) -> rusqlite::Result<Deployment> {
    let id_text: String = row.get(0)?;
    let id: DeploymentId = id_text.parse().map_err(|_| invalid("id", &id_text))?;
    let priority_text: String = row.get(3)?;
    let status_text: String = row.get(4)?;
    let phase_text: Option<String> = row.get(5)?;
    let kind_text: String = row.get(15)?;
    let params_text: String = row.get(16)?;
    let error: Option<String> = row.get(18)?;
    let enqueued_at: Option<i64> = row.get(19)?;
    let attempt_started_at: Option<i64> = row.get(20)?;
    let next_retry_at: Option<i64> = row.get(21)?;
    let created_at: i64 = row.get(22)?;
    let finished_at: Option<i64> = row.get(24)?;
    let status_kind: StatusKind = status_text.parse().map_err(|_| invalid("status", &status_text))?;
    let finished = from_ms(finished_at.unwrap_or(created_at));
    let reason = error.clone().unwrap_or_default();
    let status = match status_kind {
        StatusKind::Queued => Status::Queued { enqueued_at: from_ms(enqueued_at.unwrap_or(created_at)) },
        StatusKind::Running => {
            let phase = match phase_text.as_deref() {
                Some(p) => p.parse().map_err(|_| invalid("phase", p))?,
                None => Phase::Prepare,
            };
            let step = match (
                row.get::<_, Option<u32>>(6)?,
                row.get::<_, Option<u32>>(7)?,
                row.get::<_, Option<String>>(8)?,
            ) {
                (Some(index), Some(total), Some(name)) => Some(StepRef { index, total, name }),
                _ => None,
            };
            Status::Running { attempt_started_at: from_ms(attempt_started_at.unwrap_or(created_at)), phase, step }
        }
        StatusKind::RollingBack => {
            Status::RollingBack { attempt_started_at: from_ms(attempt_started_at.unwrap_or(created_at)) }
        }
        StatusKind::RetryWait => Status::RetryWait { until: from_ms(next_retry_at.unwrap_or(created_at)) },
        StatusKind::Succeeded => Status::Succeeded { finished_at: finished },
        StatusKind::Failed => Status::Failed { finished_at: finished, reason },
        StatusKind::Cancelled => Status::Cancelled { finished_at: finished, reason },
    };
    let params: BTreeMap<String, String> =
        serde_json::from_str(&params_text).map_err(|_| invalid("params", &params_text))?;
    Ok(Deployment {
        id,
        environment: row.get(1)?,
        version: row.get(2)?,
        priority: priority_text.parse::<Priority>().map_err(|_| invalid("priority", &priority_text))?,
        params,
        artifact: ArtifactInfo {
            name: row.get(12)?,
            size: row.get::<_, i64>(13)? as u64,
            sha256: row.get(14)?,
            kind: ArtifactKind::parse(&kind_text),
        },
        requested_by: row.get(17)?,
        created_at: from_ms(created_at),
        attempt: row.get(9)?,
        retry_count: row.get(10)?,
        max_retries: row.get(11)?,
        started_at: row.get::<_, Option<i64>>(23)?.map(from_ms),
        duration_ms: row.get::<_, Option<i64>>(25)?.map(|v| v.max(0) as u64),
        last_error: error,
        status,
        cancel_requested: row.get(26)?,
        queue_wait_ms: row.get::<_, Option<i64>>(27)?.map(|v| v.max(0) as u64),
        wait_reason: None,
    })
}

/// The column values of a deployment, in `DEPLOYMENT_COLUMNS` order (without idempotency).
fn deployment_values(d: &Deployment) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    let text = |s: &str| Value::Text(s.to_owned());
    let opt_text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::Text(s.to_owned()));
    let opt_int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
    let (phase, step, enqueued_at, attempt_started_at, next_retry_at, error) = match &d.status {
        Status::Queued { enqueued_at } => (None, None, Some(*enqueued_at), None, None, d.last_error.clone()),
        Status::Running { attempt_started_at, phase, step } => {
            (Some(*phase), step.clone(), None, Some(*attempt_started_at), None, d.last_error.clone())
        }
        Status::RollingBack { attempt_started_at } => {
            (Some(Phase::Rollback), None, None, Some(*attempt_started_at), None, d.last_error.clone())
        }
        Status::RetryWait { until } => (None, None, None, None, Some(*until), d.last_error.clone()),
        Status::Succeeded { .. } => (None, None, None, None, None, None),
        Status::Failed { reason, .. } | Status::Cancelled { reason, .. } => {
            (None, None, None, None, None, Some(reason.clone()))
        }
    };
    vec![
        text(&d.id.to_string()),
        text(&d.environment),
        text(&d.version),
        text(d.priority.as_str()),
        text(d.status.kind().as_str()),
        opt_text(phase.map(Phase::as_str)),
        opt_int(step.as_ref().map(|s| i64::from(s.index))),
        opt_int(step.as_ref().map(|s| i64::from(s.total))),
        opt_text(step.as_ref().map(|s| s.name.as_str())),
        Value::Integer(i64::from(d.attempt)),
        Value::Integer(i64::from(d.retry_count)),
        Value::Integer(i64::from(d.max_retries)),
        text(&d.artifact.name),
        Value::Integer(d.artifact.size as i64),
        text(&d.artifact.sha256),
        text(d.artifact.kind().as_str()),
        text(&serde_json::to_string(&d.params).unwrap_or_else(|_| "{}".into())),
        text(&d.requested_by),
        opt_text(error.as_deref()),
        opt_int(opt_ms(enqueued_at)),
        opt_int(opt_ms(attempt_started_at)),
        opt_int(opt_ms(next_retry_at)),
        Value::Integer(to_ms(d.created_at)),
        opt_int(opt_ms(d.started_at)),
        opt_int(opt_ms(d.status.finished_at())),
        opt_int(d.duration_ms.map(|v| v as i64)),
        Value::Integer(i64::from(d.cancel_requested)),
        opt_int(d.queue_wait_ms.map(|v| v as i64)),
    ]
}

fn apply_one(
    tx: &rusqlite::Transaction<'_>,
    last: &mut HashMap<DeploymentId, Vec<rusqlite::types::Value>>,
    write: &Write,
) -> Result<WriteOutcome, StoreError> {
    match write {
        Write::Insert { deployment, idempotency } => {
            if let Some(key) = idempotency {
                let existing: Option<(String, Option<String>)> = tx
                    .prepare_cached("SELECT id, request_hash FROM deployments WHERE idempotency_key = ?1")
                    .and_then(|mut s| s.query_row([&key.key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(StoreError::sqlite("look up idempotency key"))?;
                if let Some((id, hash)) = existing {
                    let id = id.parse().map_err(|_| StoreError::Invalid(format!("bad id {id}")))?;
                    return Ok(WriteOutcome::Existing { id, same_request: hash.as_deref() == Some(&key.fingerprint) });
                }
            }
            let mut values = deployment_values(deployment);
            if !deployment.status.kind().is_terminal() {
                last.insert(deployment.id, values.clone());
            }
            values.push(idempotency.as_ref().map_or(rusqlite::types::Value::Null, |k| k.key.clone().into()));
            values.push(idempotency.as_ref().map_or(rusqlite::types::Value::Null, |k| k.fingerprint.clone().into()));
            let placeholders = (1..=values.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}, idempotency_key, request_hash) VALUES ({placeholders})"
            );
            tx.prepare_cached(&sql)
                .and_then(|mut s| s.execute(params_from_iter(values)))
                .map_err(StoreError::sqlite("insert deployment"))?;
        }
        Write::Update(deployment) => {
            let values = deployment_values(deployment);
            let previous = last.get(&deployment.id);
            let changed: Vec<usize> =
                (1..values.len()).filter(|&i| previous.is_none_or(|p| p.get(i) != values.get(i))).collect();
            if !changed.is_empty() {
                let columns: Vec<&str> = DEPLOYMENT_COLUMNS.split(',').map(str::trim).collect();
                let sets = changed
                    .iter()
                    .enumerate()
                    .map(|(n, &i)| format!("{} = ?{}", columns[i], n + 2))
                    .collect::<Vec<_>>();
                let sql = format!("UPDATE deployments SET {} WHERE id = ?1", sets.join(", "));
                let mut args = vec![values[0].clone()];
                args.extend(changed.iter().map(|&i| values[i].clone()));
                tx.prepare_cached(&sql)
                    .and_then(|mut s| s.execute(params_from_iter(args)))
                    .map_err(StoreError::sqlite("update deployment"))?;
            }
            if deployment.status.kind().is_terminal() {
                last.remove(&deployment.id);
            } else {
                last.insert(deployment.id, values);
            }
        }
        Write::Transition(t) => {
            tx.prepare_cached(
                "INSERT INTO transitions (deployment_id, attempt, at, status, phase, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    t.deployment_id.to_string(),
                    t.attempt,
                    to_ms(t.at),
                    t.status.as_str(),
                    t.phase.map(Phase::as_str),
                    t.message
                ])
            })
            .map_err(StoreError::sqlite("insert transition"))?;
        }
        Write::Attempt(a) => {
            tx.prepare_cached(
                "INSERT INTO attempts \
                 (deployment_id, attempt, environment, queued_at, started_at, finished_at, outcome, error, duration_ms) \
                 VALUES (?1, ?2, (SELECT environment FROM deployments WHERE id = ?1), ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (deployment_id, attempt) DO UPDATE SET queued_at = excluded.queued_at, \
                 started_at = excluded.started_at, finished_at = excluded.finished_at, outcome = excluded.outcome, \
                 error = excluded.error, duration_ms = excluded.duration_ms",
            )
            .and_then(|mut s| {
                s.execute(params![
                    a.deployment_id.to_string(),
                    a.attempt,
                    to_ms(a.queued_at),
                    opt_ms(a.started_at),
                    opt_ms(a.finished_at),
                    a.outcome,
                    a.error,
                    a.duration_ms.map(|v| v as i64)
                ])
            })
            .map_err(StoreError::sqlite("write attempt"))?;
        }
        Write::Environment(e) => {
            tx.prepare_cached("INSERT OR REPLACE INTO environments (name, paused, limit_override) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![e.name, e.paused, e.limit_override]))
                .map_err(StoreError::sqlite("write environment"))?;
        }
        Write::Release(r) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO releases (environment, name, deployment_id, attempt, version, succeeded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    r.environment,
                    r.name,
                    r.deployment_id.to_string(),
                    r.attempt,
                    r.version,
                    to_ms(r.succeeded_at)
                ])
            })
            .map_err(StoreError::sqlite("write release"))?;
        }
        Write::ReleaseGone { environment, name } => {
            tx.prepare_cached("DELETE FROM releases WHERE environment = ?1 AND name = ?2")
                .and_then(|mut s| s.execute(params![environment, name]))
                .map_err(StoreError::sqlite("delete release"))?;
        }
    }
    Ok(WriteOutcome::Done)
}

fn parse_id(text: &str) -> rusqlite::Result<DeploymentId> {
    text.parse().map_err(|_| invalid("id", text))
}

impl Store for SqliteStore {
    fn apply(&self, groups: &[&[Write]]) -> Result<Vec<Vec<WriteOutcome>>, StoreError> {
        let mut guard = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Writer { conn, last } = &mut *guard;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite("begin"))?;
        let mut outcomes = Vec::with_capacity(groups.len());
        for group in groups {
            let mut out = Vec::with_capacity(group.len());
            for write in *group {
                let outcome = match apply_one(&tx, last, write) {
                    Ok(o) => o,
                    Err(e) => {
                        // The transaction rolls back: forget what it cached, so that the next
                        // updates write whole rows.
                        last.clear();
                        return Err(e);
                    }
                };
                let replay = matches!(outcome, WriteOutcome::Existing { .. });
                out.push(outcome);
                if replay {
                    // An idempotent repeat: the rest of its group belongs to a deployment that
                    // was not inserted, and must not be written (nor fail the whole batch).
                    break;
                }
            }
            outcomes.push(out);
        }
        if let Err(e) = tx.commit() {
            last.clear();
            return Err(StoreError::Sqlite { op: "commit", source: e });
        }
        Ok(outcomes)
    }

    fn unfinished(&self) -> Result<Vec<Deployment>, StoreError> {
        self.read(|c| {
            // Named statuses (not `NOT IN` the terminal ones), so that the status index finds
            // the few unfinished rows instead of a scan of the whole history at every start.
            let open: Vec<String> = StatusKind::NAMES
                .iter()
                .filter(|n| n.parse::<StatusKind>().is_ok_and(|k| !k.is_terminal()))
                .map(|n| format!("'{n}'"))
                .collect();
            let sql = format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE status IN ({}) ORDER BY created_at, id",
                open.join(", ")
            );
            let mut stmt = c.prepare(&sql).map_err(StoreError::sqlite("load unfinished"))?;
            let rows = stmt.query_map([], deployment_from_row).map_err(StoreError::sqlite("load unfinished"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(StoreError::sqlite("load unfinished"))
        })
    }

    fn recent(&self, limit: u32) -> Result<Vec<Deployment>, StoreError> {
        Ok(self.history(&HistoryQuery { limit, ..HistoryQuery::default() })?.items)
    }

    fn deployment(&self, id: DeploymentId) -> Result<Option<Deployment>, StoreError> {
        self.read(|c| {
            let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?1");
            c.prepare_cached(&sql)
                .and_then(|mut s| s.query_row([id.to_string()], deployment_from_row).optional())
                .map_err(StoreError::sqlite("get deployment"))
        })
    }

    fn history(&self, q: &HistoryQuery) -> Result<Page<Deployment>, StoreError> {
        use rusqlite::types::Value;
        let mut clauses = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if !q.statuses.is_empty() {
            let marks = q.statuses.iter().map(|s| {
                values.push(Value::Text(s.as_str().to_owned()));
                format!("?{}", values.len())
            });
            clauses.push(format!("status IN ({})", marks.collect::<Vec<_>>().join(", ")));
        }
        if let Some(env) = &q.environment {
            values.push(Value::Text(env.clone()));
            clauses.push(format!("environment = ?{}", values.len()));
        }
        if let Some(from) = q.from {
            values.push(Value::Integer(to_ms(from)));
            clauses.push(format!("created_at >= ?{}", values.len()));
        }
        if let Some(to) = q.to {
            values.push(Value::Integer(to_ms(to)));
            clauses.push(format!("created_at < ?{}", values.len()));
        }
        if let Some(before) = q.before {
            values.push(Value::Text(before.to_string()));
            let n = values.len();
            clauses.push(format!("(created_at, id) < ((SELECT created_at FROM deployments WHERE id = ?{n}), ?{n})"));
        }
        let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        self.read(|c| {
            let total: i64 = c
                .prepare_cached(&format!("SELECT count(*) FROM deployments {filter}"))
                .and_then(|mut s| s.query_row(params_from_iter(values.iter()), |r| r.get(0)))
                .map_err(StoreError::sqlite("count history"))?;
            let mut page_values = values.clone();
            page_values.push(Value::Integer(i64::from(q.limit)));
            page_values.push(Value::Integer(i64::try_from(q.offset).unwrap_or(i64::MAX)));
            let n = page_values.len();
            let sql = format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments {filter} ORDER BY created_at DESC, id DESC LIMIT ?{} OFFSET ?{}",
                n - 1,
                n
            );
            let items = c
                .prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_map(params_from_iter(page_values.iter()), deployment_from_row)?.collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(StoreError::sqlite("page history"))?;
            Ok(Page { items, total: total as u64, limit: q.limit, offset: q.offset })
        })
    }

    fn attempts(&self, id: DeploymentId) -> Result<Vec<AttemptRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT attempt, queued_at, started_at, finished_at, outcome, error, duration_ms \
                 FROM attempts WHERE deployment_id = ?1 ORDER BY attempt",
            )
            .and_then(|mut s| {
                s.query_map([id.to_string()], |r| {
                    Ok(AttemptRecord {
                        deployment_id: id,
                        attempt: r.get(0)?,
                        queued_at: from_ms(r.get(1)?),
                        started_at: r.get::<_, Option<i64>>(2)?.map(from_ms),
                        finished_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
                        outcome: r.get(4)?,
                        error: r.get(5)?,
                        duration_ms: r.get::<_, Option<i64>>(6)?.map(|v| v.max(0) as u64),
                    })
                })?
                .collect()
            })
            .map_err(StoreError::sqlite("list attempts"))
        })
    }

    fn transitions(&self, id: DeploymentId) -> Result<Vec<TransitionRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT attempt, at, status, phase, message FROM transitions WHERE deployment_id = ?1 ORDER BY seq",
            )
            .and_then(|mut s| {
                s.query_map([id.to_string()], |r| {
                    let status: String = r.get(2)?;
                    let phase: Option<String> = r.get(3)?;
                    Ok(TransitionRecord {
                        deployment_id: id,
                        attempt: r.get(0)?,
                        at: from_ms(r.get(1)?),
                        status: status.parse().map_err(|_| invalid("status", &status))?,
                        phase: phase.as_deref().map(str::parse).transpose().map_err(|_| invalid("phase", "?"))?,
                        message: r.get(4)?,
                    })
                })?
                .collect()
            })
            .map_err(StoreError::sqlite("list transitions"))
        })
    }

    fn environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT name, paused, limit_override FROM environments ORDER BY name")
                .and_then(|mut s| {
                    s.query_map([], |r| {
                        Ok(EnvironmentRecord { name: r.get(0)?, paused: r.get(1)?, limit_override: r.get(2)? })
                    })?
                    .collect()
                })
                .map_err(StoreError::sqlite("list environments"))
        })
    }

    fn releases(&self) -> Result<Vec<ReleaseRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT environment, name, deployment_id, attempt, version, succeeded_at FROM releases \
                 ORDER BY succeeded_at, name",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    let id: String = r.get(2)?;
                    Ok(ReleaseRecord {
                        environment: r.get(0)?,
                        name: r.get(1)?,
                        deployment_id: parse_id(&id)?,
                        attempt: r.get(3)?,
                        version: r.get(4)?,
                        succeeded_at: from_ms(r.get(5)?),
                    })
                })?
                .collect()
            })
            .map_err(StoreError::sqlite("list releases"))
        })
    }

    fn artifacts_in_use(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT DISTINCT artifact_sha256 FROM deployments WHERE finished_at IS NULL OR created_at >= ?1",
            )
            .and_then(|mut s| s.query_map([to_ms(since)], |r| r.get::<_, String>(0))?.collect())
            .map_err(StoreError::sqlite("artifacts in use"))
        })
    }

    fn figures(&self) -> Result<crate::metrics::StoreFigures, StoreError> {
        self.read(super::analytics::figures)
    }

    fn window_figures(
        &self,
        window: &crate::metrics::Window,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::metrics::WindowFigures, StoreError> {
        self.read(|c| super::analytics::window_figures(c, window, now))
    }

    fn trend_figures(
        &self,
        spec: &crate::metrics::TrendSpec,
    ) -> Result<Vec<crate::metrics::BucketFigures>, StoreError> {
        self.read(|c| super::analytics::trend_figures(c, spec))
    }

    fn check_integrity(&self) -> Result<(), StoreError> {
        self.read(|c| {
            let result: String = c
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .map_err(StoreError::sqlite("integrity check"))?;
            if result == "ok" { Ok(()) } else { Err(unusable(&self.path, format!("integrity check: {result}"))) }
        })
    }
}
