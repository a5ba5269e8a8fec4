//! The `tds` binary as a library, so that tests can drive it: command dispatch, configuration
//! discovery, and the wiring of orchestrator, API and dashboard.

pub mod api;
pub mod cli;
pub mod client;
pub mod demo;
mod logging;
pub mod shutdown;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tds_core::config::{Config, DEFAULT_CONFIG};
use tds_core::{OrchestratorHandle, StartOptions};

use crate::cli::{Cli, Command, ServerArgs, TokenCommand};

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    BuiltIn,
    Demo(PathBuf),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::BuiltIn => f.write_str("built-in default"),
            ConfigSource::Demo(p) => write!(f, "demo in {}", p.display()),
        }
    }
}

/// Runs a parsed command line to its end.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::CheckConfig { config }) => check_config(config.as_deref().or(cli.server.config.as_deref())),
        Some(Command::Token(TokenCommand::Hash)) => token_hash(),
        Some(command) => runtime()?.block_on(client::run(command)),
        None => runtime()?.block_on(orchestrate(cli)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// The configuration file to use: `--config`, `./tds.toml`, the user config folder, or none.
pub fn find_config(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    let local = PathBuf::from("tds.toml");
    if local.is_file() {
        return Some(local);
    }
    directories::ProjectDirs::from("", "", "tds").map(|d| d.config_dir().join("tds.toml")).filter(|p| p.is_file())
}

/// Loads and checks the configuration, applying command-line overrides.
pub fn load_config(args: &ServerArgs) -> anyhow::Result<(Config, ConfigSource)> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let (mut config, source) = if let Some(path) = find_config(args.config.as_deref()) {
        let config = Config::load(&path, &cwd).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
        (config, ConfigSource::File(path))
    } else {
        let config = Config::parse(DEFAULT_CONFIG, &cwd).map_err(|e| anyhow::anyhow!("built-in config:\n{e}"))?;
        (config, ConfigSource::BuiltIn)
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir = if dir.is_absolute() { dir.clone() } else { cwd.join(dir) };
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    Ok((config, source))
}

fn check_config(explicit: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir()?;
    let Some(path) = find_config(explicit) else {
        outln("no configuration file found (--config, ./tds.toml, user config); the built-in default is valid");
        return Ok(ExitCode::SUCCESS);
    };
    match Config::load(&path, &cwd) {
        Ok(config) => {
            outln(&format!("{}: ok", path.display()));
            outln(&format!("  data_dir: {}", config.data_dir.display()));
            outln(&format!("  listen:   {}", config.server.listen));
            for env in &config.environments {
                let exists = if env.root.is_dir() { "" } else { " (will be created)" };
                outln(&format!(
                    "  environment {}: root {}{exists}, max_concurrent {}, {} step(s), {} check(s)",
                    env.name,
                    env.root.display(),
                    env.max_concurrent,
                    env.steps.len(),
                    env.verify.len()
                ));
            }
            if config.tokens.is_empty() {
                outln("  no [[tokens]]: the API will only listen on loopback");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{}: {} problem(s)", path.display(), errors.0.len());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn token_hash() -> anyhow::Result<ExitCode> {
    let mut token = String::new();
    std::io::stdin().read_to_string(&mut token).context("cannot read the token from stdin")?;
    let token = token.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!token.is_empty(), "no token on stdin (try: printf %s \"$SECRET\" | tds token hash)");
    outln(&api::auth::hash_token(token));
    Ok(ExitCode::SUCCESS)
}

/// Writes a line to stdout; a reader that went away (`tds --serve | head -1`) must not stop the
/// server, so write errors are ignored.
fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Writes the output of a one-shot command (`check-config`, the client). A reader that went
/// away (`tds history | head -1`) ends the command quietly with the status a shell reports for
/// SIGPIPE (141), as other Unix tools end; Rust ignores that signal, so `println!` would panic.
pub fn out(bytes: impl AsRef<[u8]>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes.as_ref()).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("tds: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// [`out`] with a newline.
pub fn outln(text: &str) {
    out(format!("{text}\n"));
}

/// Dashboard, `--serve` and `--demo`: start the orchestrator and the API, run until quit or a
/// signal, then shut down gracefully.
async fn orchestrate(cli: Cli) -> anyhow::Result<ExitCode> {
    let (config, source, demo) = if cli.demo {
        let demo = demo::Demo::prepare().context("cannot prepare the demo")?;
        let config = demo.config.clone();
        let source = ConfigSource::Demo(demo.dir.clone());
        (config, source, Some(demo))
    } else {
        let (config, source) = load_config(&cli.server)?;
        (config, source, None)
    };
    let _log_guard = logging::init(&config.data_dir, cli.serve)?;
    tracing::info!(config = %source, "starting tds {}", env!("CARGO_PKG_VERSION"));
    let signals = shutdown::on_signals()?;
    // Bind before anything else starts: a busy port or a refused address must not start (and
    // recover) an orchestrator only to stop it again.
    tds_core::check_data_dir_free(&config.data_dir)
        .with_context(|| format!("cannot start the orchestrator (data folder {})", config.data_dir.display()))?;
    let listener = if cli.server.no_api { None } else { Some(api::bind(&config).await?) };
    let handle = OrchestratorHandle::start(config.clone(), StartOptions::default())
        .await
        .with_context(|| format!("cannot start the orchestrator (data folder {})", config.data_dir.display()))?;

    let api_stop = tokio_util::sync::CancellationToken::new();
    let api = match listener {
        None => None,
        Some(listener) => {
            let addr = listener.local_addr()?;
            if cli.serve {
                say(&format!("tds {} listening on http://{addr} (config: {source})", env!("CARGO_PKG_VERSION")));
                if config.tokens.is_empty() {
                    say("no [[tokens]] configured: the API is open to local users only, so it listens on loopback");
                }
            }
            let app = api::router(handle.clone());
            let stop = api_stop.clone();
            Some((addr, tokio::spawn(api::serve(listener, app, stop))))
        }
    };
    let demo_task = demo.as_ref().map(|d| d.spawn_submitter(handle.clone(), signals.clone()));

    let drain = if cli.serve {
        signals.cancelled().await;
        eprintln!("tds: shutting down; running deployments get {:?} to finish", config.server.drain_timeout);
        None
    } else {
        let options = tds_ui::UiOptions {
            api: api.as_ref().map(|(addr, _)| addr.to_string()),
            title: if cli.demo { "tds demo".into() } else { format!("tds {}", env!("CARGO_PKG_VERSION")) },
            ephemeral: cli.demo,
            shutdown: signals.clone(),
        };
        tds_ui::run(handle.clone(), options).await.context("dashboard failed")?;
        // Quitting the dashboard stops the embedded orchestrator: running attempts are
        // interrupted, rolled back, and run again at the next start.
        Some(Duration::ZERO)
    };
    signals.cancel();
    if let Some(task) = demo_task {
        let _ = task.await;
    }
    handle.shutdown(drain).await;
    api_stop.cancel();
    if let Some((_, task)) = api {
        let _ = task.await;
    }
    if let Some(demo) = demo {
        demo.cleanup();
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
