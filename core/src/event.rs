//! What the core broadcasts after each committed change.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{DeploymentView, EnvironmentView};

/// A change that has been persisted: the new state of one deployment or one environment.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum CoreEvent {
    Deployment(Arc<DeploymentView>),
    Environment(Arc<EnvironmentView>),
}

/// An event with its sequence number (for `Last-Event-ID` resume) and publication time.
#[derive(Debug, Clone, Serialize)]
pub struct EventEnvelope {
    pub id: u64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: CoreEvent,
}
