//! `tds --demo`: a self-contained show of every pane with real work. It makes a scratch folder
//! with three environments (`dev` limit 3, `staging` limit 2 with a flaky probe, `perf` limit 1),
//! builds real tar.gz artifacts (an `index.html` and an `install.sh` that takes a few seconds
//! and sometimes fails), and keeps submitting a mix of priorities. Random failures are
//! repaired by a retry; every ninth build is broken and ends `failed`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tds_core::model::Priority;
use tds_core::{ArtifactSource, Config, OrchestratorHandle, SubmitRequest};
use tokio_util::sync::CancellationToken;

/// Submissions stop while this many deployments wait, so the demo never floods.
const MAX_WAITING: usize = 14;

/// Every `BROKEN_EVERY`-th build (the second one first) is broken: its install always fails, so
/// it uses up its retries and ends `failed` within the first minute of every run, beside the
/// random failures that a retry repairs.
const BROKEN_EVERY: u32 = 9;

/// The install script shipped in every demo artifact: a few seconds of output, then success or
/// (with probability `FAIL_PERCENT`) failure.
const INSTALL_SH: &str = r#"#!/bin/sh
r=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
echo "installing $TDS_VERSION into $TDS_RELEASE_DIR"
steps=$(( 2 + r % 4 ))
i=1
while [ "$i" -le "$steps" ]; do
  echo "  [$i/$steps] copying assets…"
  sleep 1
  i=$(( i + 1 ))
done
if [ "$(( r % 100 ))" -lt "${TDS_PARAM_FAIL_PERCENT:-0}" ]; then
  echo "error: migration 0042 failed (simulated)" >&2
  exit 3
fi
echo "install complete"
"#;

/// A prepared demo: its folder and configuration.
#[derive(Debug)]
pub struct Demo {
    pub dir: PathBuf,
    pub config: Config,
}

fn demo_config(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "0s"
[storage]
data_dir = "{d}/data"
[defaults]
keep_releases = 3
kill_grace = "2s"
verify_timeout = "3s"
aging = "2m"
retry = {{ max_retries = 2, initial_delay = "3s", multiplier = 2.0, max_delay = "20s" }}

[[environments]]
name = "dev"
root = "{d}/envs/dev"
max_concurrent = 3
steps = [{{ name = "install", run = "sh ./install.sh", timeout = "30s" }}]
verify = [{{ name = "smoke", run = "test -s \"$TDS_RELEASE_DIR/index.html\"" }}]

[[environments]]
name = "staging"
root = "{d}/envs/staging"
max_concurrent = 2
# Flaky on purpose: unreachable for about 20 s of every minute.
probe = "test $(( $(date +%s) % 60 )) -lt 40"
probe_interval = "2s"
probe_failures = 2
steps = [
  {{ name = "install", run = "sh ./install.sh", timeout = "30s" }},
  {{ name = "warm-cache", run = "echo warming; sleep 1; echo warm" }},
]
verify = [{{ name = "smoke", run = "grep -q demo \"$TDS_RELEASE_DIR/index.html\"" }}]
on_rollback = [{{ name = "notify", run = "echo \"rolled back $TDS_VERSION\" >&2" }}]

[[environments]]
name = "perf"
root = "{d}/envs/perf"
max_concurrent = 1
steps = [{{ name = "install", run = "sh ./install.sh", timeout = "30s" }}]
verify = [{{ name = "smoke", run = "test -f \"$TDS_RELEASE_DIR/index.html\"" }}]
"#
    )
}

/// A tar.gz with an `index.html` and the install script.
fn artifact(version: &str) -> anyhow::Result<Vec<u8>> {
    let html = format!("<!doctype html><title>demo {version}</title><h1>tds demo {version}</h1>\n");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, body, mode) in [("index.html", html.as_bytes(), 0o644), ("install.sh", INSTALL_SH.as_bytes(), 0o755)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, body)?;
    }
    Ok(builder.into_inner()?.finish()?)
}

/// A small deterministic generator: the demo needs variety, not security.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

impl Demo {
    /// Creates the scratch folder and configuration.
    pub fn prepare() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("tds-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let config = Config::parse(&demo_config(&dir), &dir).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
        Ok(Self { dir, config })
    }

    /// Keeps submitting deployments until `stop`.
    pub fn spawn_submitter(&self, handle: OrchestratorHandle, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut dice = Dice(u64::from(std::process::id()) * 2_654_435_761 + 1);
            let mut n = 0u32;
            loop {
                let waiting = handle.snapshot().deployments.iter().filter(|d| !d.is_terminal()).count();
                if waiting < MAX_WAITING {
                    n += 1;
                    if let Err(e) = submit_one(&handle, &mut dice, n).await {
                        tracing::warn!(error = %e, "demo submission failed");
                    }
                }
                let pause = Duration::from_millis(900 + dice.roll(1800));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => break,
                }
            }
        })
    }

    /// Removes the scratch folder.
    pub fn cleanup(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn submit_one(handle: &OrchestratorHandle, dice: &mut Dice, n: u32) -> anyhow::Result<()> {
    let environment = ["dev", "dev", "staging", "staging", "perf"][dice.roll(5) as usize];
    let priority = match dice.roll(10) {
        0 => Priority::Critical,
        1 | 2 => Priority::High,
        3..=7 => Priority::Normal,
        _ => Priority::Low,
    };
    let version = format!("1.{}.{}", n / 10, n % 10);
    let fail = if n % BROKEN_EVERY == 2 {
        "100"
    } else if environment == "perf" {
        "45"
    } else {
        "25"
    };
    let params = BTreeMap::from([("FAIL_PERCENT".to_owned(), fail.to_owned())]);
    handle
        .submit(SubmitRequest {
            environment: environment.to_owned(),
            artifact: ArtifactSource::Bytes { name: format!("site-{version}.tar.gz"), bytes: artifact(&version)? },
            version,
            priority,
            params,
            requested_by: "demo".into(),
            idempotency_key: None,
        })
        .await?;
    Ok(())
}
