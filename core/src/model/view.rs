//! The flat JSON shape of a deployment (`PRODUCT.md`, "Shapes"): what the API returns, what the
//! dashboard draws, what events carry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ArtifactInfo, Deployment, DeploymentId, Phase, Priority, Status, StatusKind};

/// The running step as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    pub index: u32,
    pub total: u32,
    pub name: String,
}

/// A deployment as every client sees it; field names are fixed by `PRODUCT.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentView {
    pub id: DeploymentId,
    pub environment: String,
    pub version: String,
    pub priority: Priority,
    pub status: StatusKind,
    pub phase: Option<Phase>,
    pub step: Option<StepView>,
    pub progress_percent: u8,
    pub attempt: u32,
    pub retry_count: u32,
    pub max_retries: u32,
    pub artifact: ArtifactInfo,
    pub params: BTreeMap<String, String>,
    pub requested_by: String,
    pub wait_reason: Option<String>,
    pub error: Option<String>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    /// Submission (or manual retry) to first start.
    pub queue_wait_ms: Option<u64>,
    /// A cancel of the running attempt is in progress.
    pub cancel_requested: bool,
}

impl DeploymentView {
    /// Whether the deployment has ended (`succeeded`, `failed`, `cancelled`).
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

/// A rough, monotone progress figure: each phase owns a band, steps split theirs.
#[allow(clippy::match_same_arms)] // one arm per phase reads as the table it is
fn progress_percent(status: &Status) -> u8 {
    match status {
        Status::Queued { .. } | Status::RetryWait { .. } => 0,
        Status::Running { phase, step, .. } => match phase {
            Phase::Prepare => 5,
            Phase::Steps => {
                let (done, total) = step.as_ref().map_or((0, 1), |s| (s.index.saturating_sub(1), s.total.max(1)));
                (10 + 60 * done / total) as u8
            }
            Phase::Activate => 72,
            Phase::Verify => 80,
            Phase::Finalize => 95,
            Phase::Rollback => 0,
        },
        Status::RollingBack { .. } => 0,
        Status::Succeeded { .. } => 100,
        Status::Failed { .. } | Status::Cancelled { .. } => 0,
    }
}

impl From<&Deployment> for DeploymentView {
    fn from(d: &Deployment) -> Self {
        let (step, error, next_retry_at) = match &d.status {
            Status::Running { step, .. } => {
                let step = step.as_ref().map(|s| StepView { index: s.index, total: s.total, name: s.name.clone() });
                (step, d.last_error.clone(), None)
            }
            Status::RetryWait { until } => (None, d.last_error.clone(), Some(*until)),
            Status::Failed { reason, .. } | Status::Cancelled { reason, .. } => (None, Some(reason.clone()), None),
            Status::Succeeded { .. } => (None, None, None),
            Status::Queued { .. } | Status::RollingBack { .. } => (None, d.last_error.clone(), None),
        };
        DeploymentView {
            id: d.id,
            environment: d.environment.clone(),
            version: d.version.clone(),
            priority: d.priority,
            status: d.status.kind(),
            phase: d.status.phase(),
            step,
            progress_percent: progress_percent(&d.status),
            attempt: d.attempt,
            retry_count: d.retry_count,
            max_retries: d.max_retries,
            artifact: d.artifact.clone(),
            params: d.params.clone(),
            requested_by: d.requested_by.clone(),
            wait_reason: d.wait_reason.clone(),
            error,
            next_retry_at,
            created_at: d.created_at,
            started_at: d.started_at,
            finished_at: d.status.finished_at(),
            duration_ms: d.duration_ms,
            queue_wait_ms: d.queue_wait_ms,
            cancel_requested: d.cancel_requested,
        }
    }
}
