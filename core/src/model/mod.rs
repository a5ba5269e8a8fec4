//! The domain vocabulary shared by the engine, the store, the API and the dashboard.
//!
//! `Deployment` is the engine's own record (its `Status` carries only the data of its variant);
//! `DeploymentView` and `EnvironmentView` are the flat, serializable shapes that every client sees.

mod deployment;
mod environment;
mod status;
mod view;

pub use deployment::{ArtifactInfo, ArtifactKind, Deployment, DeploymentId, IdParseError, StepRef};
pub use environment::{EnvironmentView, ReleaseRef};
pub use status::{Phase, Priority, Status, StatusKind, UnknownValue};
pub use view::{DeploymentView, StepView};
