//! The command line (clap): the dashboard, the headless server, the demo, the client
//! subcommands and `check-config`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// tds: deploy builds to shared test environments. With no subcommand it starts the
/// orchestrator, the REST API and the dashboard.
#[derive(Debug, Parser)]
#[command(name = "tds", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub server: ServerArgs,

    /// Run headless: orchestrator and REST API, no dashboard.
    #[arg(long, conflicts_with = "demo")]
    pub serve: bool,

    /// The dashboard on a self-contained demo (scratch folder, three environments, a steady
    /// stream of deployments). Needs nothing but this binary.
    #[arg(long)]
    pub demo: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

const AFTER_HELP: &str = "\
Configuration is read from --config, else ./tds.toml, else the user config folder
(~/.config/tds/tds.toml), else the built-in default (one local environment under ./.tds).

Client subcommands talk to a running instance at --url / TDS_URL (default
http://127.0.0.1:7878) with --token / TDS_TOKEN.";

/// Options of the orchestrator (dashboard, --serve, --demo).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Data folder (store, logs, artifacts); overrides `storage.data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// API address; overrides `server.listen`.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_api")]
    pub listen: Option<SocketAddr>,

    /// Do not serve the REST API next to the dashboard.
    #[arg(long)]
    pub no_api: bool,
}

/// Where a client subcommand finds the server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of a running tds.
    #[arg(long, env = "TDS_URL", default_value = "http://127.0.0.1:7878", global = true)]
    pub url: String,

    /// Bearer token (or `TDS_TOKEN`).
    #[arg(long, env = "TDS_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a configuration file and list every mistake with its line.
    CheckConfig {
        /// The file to check (default: the one tds would use).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Token utilities.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Submit a deployment to a running tds.
    Submit(SubmitArgs),
    /// Show a deployment's status.
    Status {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a deployment's log.
    Logs(LogsArgs),
    /// Cancel a queued, waiting or running deployment.
    Cancel {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Retry a failed or cancelled deployment.
    Retry {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List past deployments, newest first.
    History(HistoryArgs),
    /// Show live metrics.
    Metrics {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show performance analytics (with DORA figures) or a trend.
    Analytics(AnalyticsArgs),
}

/// `tds token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the sha256 of a token read from stdin, for `[[tokens]] sha256 = …`.
    Hash,
}

/// `tds submit`
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Target environment.
    #[arg(long = "env", short = 'e')]
    pub environment: String,
    /// Artifact file: .tar, .tar.gz/.tgz, .zip, or any single file.
    #[arg(long, short = 'a')]
    pub artifact: PathBuf,
    /// Version label.
    #[arg(long, short = 'v', default_value = "")]
    pub version: String,
    /// low, normal, high or critical.
    #[arg(long, short = 'p', default_value = "normal")]
    pub priority: String,
    /// A parameter for the steps (as `TDS_PARAM_<KEY>`); repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Wait for the end; exit 0 on succeeded, 1 on failed, 2 on cancelled.
    #[arg(long)]
    pub wait: bool,
    /// Make retries of this command safe (sent as Idempotency-Key).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `tds logs`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Deployment id.
    pub id: String,
    /// Follow until the deployment ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// text or json (JSON Lines).
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Attempt number (default: the latest).
    #[arg(long)]
    pub attempt: Option<u32>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `tds history`
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this environment.
    #[arg(long = "env", short = 'e')]
    pub environment: Option<String>,
    /// Only these statuses (comma-separated: queued, running, succeeded, failed, cancelled, …).
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `tds analytics`
#[derive(Debug, Args)]
pub struct AnalyticsArgs {
    /// `performance` (counts, rates, durations, utilization, DORA) or `trends`.
    #[arg(value_parser = ["performance", "trends"], default_value = "performance")]
    pub view: String,
    #[arg(long = "env", short = 'e')]
    pub environment: Option<String>,
    /// Window start, RFC 3339 (default: 24 h before `--to`; for trends by day, 30 days).
    #[arg(long)]
    pub from: Option<String>,
    /// Window end, RFC 3339 (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Trend metric.
    #[arg(
        long,
        default_value = "success_rate",
        value_parser = ["deployments", "success_rate", "failure_rate", "duration", "queue_wait", "retries"]
    )]
    pub metric: String,
    /// Trend bucket.
    #[arg(long, default_value = "hour", value_parser = ["minute", "hour", "day"])]
    pub period: String,
    #[command(flatten)]
    pub client: ClientArgs,
}
