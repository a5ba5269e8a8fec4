//! The published state of an environment.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::DeploymentId;

/// A release folder that `current` points at (or pointed at).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRef {
    /// Folder name under `releases/`: `<deployment id>-<attempt>`.
    pub name: String,
    pub deployment_id: DeploymentId,
    pub version: String,
}

/// What clients see of an environment: limits, load, health, and what is live there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentView {
    pub name: String,
    /// Current limit (config value or a live override).
    pub max_concurrent: u32,
    /// Attempts holding a slot (running or rolling back).
    pub running: u32,
    pub queued: u32,
    /// Free slots: 0 when paused or unavailable.
    pub free_slots: u32,
    pub available: bool,
    pub unavailable_since: Option<DateTime<Utc>>,
    /// The last probe failure, while unavailable.
    pub probe_error: Option<String>,
    pub paused: bool,
    pub current_release: Option<ReleaseRef>,
    /// `succeeded` / `failed` / `cancelled` of the last deployment that ended here.
    pub last_result: Option<String>,
    pub last_result_at: Option<DateTime<Utc>>,
}
