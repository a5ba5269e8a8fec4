//! `tds-ui`: the ratatui dashboard over an `OrchestratorHandle`.
//!
//! The shape follows ratatui's event-driven template: terminal and core events become
//! [`action::Action`]s, [`update::update`] is the only place [`state::AppState`] changes (and
//! returns [`action::Effect`]s for the loop to run against the handle), and [`view::render`]
//! draws the state without touching anything else. [`event::run_loop`] is generic over the
//! backend, so tests run the real loop on a `TestBackend`.

pub mod action;
pub mod effect;
pub mod event;
mod filter;
#[doc(hidden)]
pub mod fixtures;
pub mod keys;
pub mod logtail;
pub mod paths;
pub mod state;
pub mod testing;
pub mod text;
pub mod theme;
pub mod trends;
pub mod tui;
pub mod update;
pub mod view;

use chrono::Offset as _;
use tds_core::OrchestratorHandle;
use tokio_util::sync::CancellationToken;

pub use filter::Filter;

/// How the dashboard is started.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// The API address shown in the header, or `None` for "API off".
    pub api: Option<String>,
    /// Shown at the top left.
    pub title: String,
    /// The data folder is removed on quit (`--demo`): quitting ends its deployments for good.
    pub ephemeral: bool,
    /// Cancelled on SIGTERM/SIGINT: the dashboard restores the terminal and returns.
    pub shutdown: CancellationToken,
}

/// Runs the dashboard until the user quits or `shutdown` fires; the terminal is restored on
/// every exit path.
pub async fn run(handle: OrchestratorHandle, options: UiOptions) -> std::io::Result<()> {
    let offset = chrono::Local::now().offset().fix();
    let (guard, mut terminal) = tui::TerminalGuard::enter()?;
    let events = ratatui::crossterm::event::EventStream::new();
    let result = event::run_loop(&mut terminal, handle, options, offset, events).await;
    drop(terminal);
    drop(guard);
    result
}
