//! The durable store: the `Store` trait, its records, and the group-committing writer.
//!
//! The trait is synchronous and object-safe: `SQLite` is embedded and fast; a later `PostgreSQL`
//! store can implement the same operations. Writes are applied in batches by one thread (the
//! persister), which is what makes group commit possible; reads may come from any thread.

mod analytics;
mod persister;
mod sqlite;

use chrono::{DateTime, Utc};

pub(crate) use persister::{PersistHandle, Persister};
pub use sqlite::{SCHEMA_VERSION, SqliteStore};

use crate::error::StoreError;
use crate::model::{Deployment, DeploymentId, Phase, StatusKind};

/// One status or phase change, kept for the timeline and for analytics.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionRecord {
    pub deployment_id: DeploymentId,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub status: StatusKind,
    /// Set when the change is a phase change of a running attempt.
    pub phase: Option<Phase>,
    pub message: Option<String>,
}

/// One attempt of a deployment: when it ran and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub deployment_id: DeploymentId,
    pub attempt: u32,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `succeeded`, `failed`, `cancelled`, `interrupted`; `None` while it runs.
    pub outcome: Option<String>,
    pub error: Option<String>,
    /// Monotonic run time of the attempt, including its rollback.
    pub duration_ms: Option<u64>,
}

/// Operator state of an environment that must survive restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRecord {
    pub name: String,
    pub paused: bool,
    /// A limit set live (TUI, API) that replaces the configured one.
    pub limit_override: Option<u32>,
}

/// A release that passed verification: a candidate rollback target while its folder exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub environment: String,
    /// Folder name under `releases/`.
    pub name: String,
    pub deployment_id: DeploymentId,
    pub attempt: u32,
    pub version: String,
    pub succeeded_at: DateTime<Utc>,
}

/// An idempotency key with the fingerprint of the request that first used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// A new deployment; with a key, an earlier deployment with the same key wins.
    Insert {
        deployment: Box<Deployment>,
        idempotency: Option<IdempotencyKey>,
    },
    /// The whole row of an existing deployment.
    Update(Box<Deployment>),
    Transition(TransitionRecord),
    /// Insert or replace an attempt.
    Attempt(AttemptRecord),
    Environment(EnvironmentRecord),
    Release(ReleaseRecord),
    /// A successful release whose folder was pruned or removed.
    ReleaseGone {
        environment: String,
        name: String,
    },
}

/// The result of one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Done,
    /// An `Insert` whose idempotency key was already used: the earlier deployment, and whether
    /// the request fingerprint matched.
    Existing {
        id: DeploymentId,
        same_request: bool,
    },
}

/// Filters and paging of `history`; times bound `created_at` as `[from, to)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub limit: u32,
    pub offset: u64,
    /// Any of these statuses (all when empty).
    pub statuses: Vec<StatusKind>,
    pub environment: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Keyset paging: only deployments after this one in the order (older, or as old with a
    /// smaller id). Pages taken this way neither repeat nor skip while deployments are added.
    pub before: Option<DeploymentId>,
}

/// A page of results with the total that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

/// Durable storage of deployments, attempts, transitions, environment state and releases.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies groups of writes in one transaction: all commit, or none do. One outcome list
    /// per group.
    fn apply(&self, groups: &[&[Write]]) -> Result<Vec<Vec<WriteOutcome>>, StoreError>;
    /// Every deployment that is not terminal (to resume after a restart), oldest first.
    fn unfinished(&self) -> Result<Vec<Deployment>, StoreError>;
    /// The most recently created deployments, newest first (to warm the dashboard).
    fn recent(&self, limit: u32) -> Result<Vec<Deployment>, StoreError>;
    fn deployment(&self, id: DeploymentId) -> Result<Option<Deployment>, StoreError>;
    /// Newest first, ties broken by id, so that paging neither repeats nor skips.
    fn history(&self, query: &HistoryQuery) -> Result<Page<Deployment>, StoreError>;
    fn attempts(&self, id: DeploymentId) -> Result<Vec<AttemptRecord>, StoreError>;
    fn transitions(&self, id: DeploymentId) -> Result<Vec<TransitionRecord>, StoreError>;
    fn environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError>;
    /// Successful releases whose folders were not removed, oldest first.
    fn releases(&self) -> Result<Vec<ReleaseRecord>, StoreError>;
    /// `PRAGMA integrity_check` or the equivalent: `Ok(())` when the store is sound.
    fn check_integrity(&self) -> Result<(), StoreError>;
    /// The artifacts (sha256) that an unfinished deployment, or one created since `since`, uses.
    fn artifacts_in_use(&self, since: DateTime<Utc>) -> Result<std::collections::HashSet<String>, StoreError>;
    /// Counts, retries and duration statistics over everything stored.
    fn figures(&self) -> Result<crate::metrics::StoreFigures, StoreError>;
    /// Figures of one analytics window; `now` ends attempts that are still running.
    fn window_figures(
        &self,
        window: &crate::metrics::Window,
        now: DateTime<Utc>,
    ) -> Result<crate::metrics::WindowFigures, StoreError>;
    /// Raw figures of each bucket of a trend, in bucket order.
    fn trend_figures(&self, spec: &crate::metrics::TrendSpec)
    -> Result<Vec<crate::metrics::BucketFigures>, StoreError>;
}
