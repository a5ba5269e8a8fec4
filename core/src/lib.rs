//! `tds-core`: the orchestrator behind tds, with no terminal or HTTP code.
//!
//! Reach it through [`OrchestratorHandle`] (commands and reads) and its event broadcast. See
//! `ARCHITECTURE.md` for the data flow and who owns which state.

pub mod artifact;
pub mod clock;
pub mod config;
mod engine;
pub mod error;
pub mod event;
pub mod executor;
mod handle;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod model;
mod plan;
mod probe;
pub mod published;
pub mod queue;
pub mod release;
pub mod retention;
pub mod retry;
pub mod sanitize;
pub mod store;

pub use config::Config;
pub use error::{Error, Result};
pub use event::{CoreEvent, EventEnvelope};
pub use handle::{
    ArtifactSource, DeploymentDetail, MAX_PARAM_VALUE, MAX_PARAMS, MAX_VERSION_LEN, OrchestratorHandle, StartOptions,
    SubmitRequest, Submitted, check_data_dir_free, valid_param_key,
};
pub use probe::run_probe;
pub use published::Snapshot;
