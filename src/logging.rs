//! Diagnostics: `tracing` to a daily rolling file in the data folder, never to the terminal the
//! dashboard draws on; `--serve` also writes them to stderr. `TDS_LOG` sets the filter
//! (default `info`).

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// Installs the global subscriber; keep the guard alive until exit so the file is flushed.
pub fn init(data_dir: &Path, to_stderr: bool) -> anyhow::Result<WorkerGuard> {
    std::fs::create_dir_all(data_dir)?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("tds")
        .filename_suffix("log")
        .max_log_files(7)
        .build(data_dir)?;
    let (file, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_env("TDS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    let result = if to_stderr {
        builder.with_writer(file.and(std::io::stderr)).try_init()
    } else {
        builder.with_writer(file).try_init()
    };
    // A second init (tests running `run` twice in one process) keeps the first subscriber.
    drop(result);
    Ok(guard)
}
