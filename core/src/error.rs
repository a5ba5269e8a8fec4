//! The errors of `tds-core`, each with the context a user needs (which deployment, which
//! environment, what operation). The API maps them to status codes in one place.

use std::path::PathBuf;

use crate::artifact::ArtifactError;
use crate::config::ConfigErrors;
use crate::model::{DeploymentId, StatusKind};

/// Everything that can go wrong in a core operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no environment named '{0}'")]
    UnknownEnvironment(String),
    #[error("no deployment with id {0}")]
    NotFound(DeploymentId),
    #[error("deployment {id} is {status}; it cannot be {action}")]
    InvalidState { id: DeploymentId, status: StatusKind, action: &'static str },
    #[error("{field}: {message}")]
    InvalidInput { field: String, message: String },
    #[error("artifact is larger than the limit of {limit} bytes")]
    ArtifactTooLarge { limit: u64 },
    #[error("{0}")]
    Artifact(#[from] ArtifactError),
    #[error("Idempotency-Key was already used for a different request (deployment {id})")]
    IdempotencyConflict { id: DeploymentId },
    #[error("no rollback target: {0}")]
    NoRollbackTarget(String),
    #[error("tds is shutting down")]
    ShuttingDown,
    #[error(
        "the data folder {} is in use by another tds (pid {pid}); stop it, or give this one its own --data-dir",
        path.display()
    )]
    DataDirInUse { path: PathBuf, pid: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("configuration:\n{0}")]
    Config(#[from] ConfigErrors),
}

impl Error {
    /// A copy for answering several waiters: the same variant where it carries plain data,
    /// otherwise a store error with the same message.
    #[must_use]
    pub fn duplicate(&self) -> Self {
        match self {
            Error::UnknownEnvironment(e) => Error::UnknownEnvironment(e.clone()),
            Error::NotFound(id) => Error::NotFound(*id),
            Error::InvalidState { id, status, action } => Error::InvalidState { id: *id, status: *status, action },
            Error::InvalidInput { field, message } => {
                Error::InvalidInput { field: field.clone(), message: message.clone() }
            }
            Error::ArtifactTooLarge { limit } => Error::ArtifactTooLarge { limit: *limit },
            Error::IdempotencyConflict { id } => Error::IdempotencyConflict { id: *id },
            Error::NoRollbackTarget(m) => Error::NoRollbackTarget(m.clone()),
            Error::ShuttingDown => Error::ShuttingDown,
            other => Error::Store(StoreError::Invalid(other.to_string())),
        }
    }

    /// An invalid request field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput { field: field.into(), message: message.into() }
    }

    /// An I/O failure on a path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }
}

/// Failures of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op}: {source}")]
    Sqlite { op: &'static str, source: rusqlite::Error },
    #[error(
        "the store at {} cannot be used: {message}. tds refuses to start with an empty store instead; \
         move the file away (keeping it for recovery) to start fresh",
        path.display()
    )]
    Unusable { path: PathBuf, message: String },
    #[error("stored data is invalid: {0}")]
    Invalid(String),
    #[error("the store writer has stopped")]
    Closed,
}

impl StoreError {
    /// Wraps a `SQLite` error with the operation it interrupted.
    pub fn sqlite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::Sqlite { op, source }
    }
}

/// Result with the core error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
