//! The command-line client: subcommands that talk to a running tds over its REST API.

use std::process::ExitCode;

use crate::cli::Command;

/// Runs a client subcommand.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("{command:?}: the client is not built yet")
}
