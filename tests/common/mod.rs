//! Helpers shared by the integration tests: a real orchestrator on a temp folder, artifact
//! builders, and bounded waits (never fixed sleeps).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tds_core::model::{DeploymentId, DeploymentView, Priority, StatusKind};
use tds_core::{ArtifactSource, Config, OrchestratorHandle, StartOptions, SubmitRequest};
use tempfile::TempDir;

/// A running orchestrator in a temp folder; `root(env)` is an environment's folder.
pub struct Harness {
    pub dir: TempDir,
    pub handle: OrchestratorHandle,
}

impl Harness {
    /// Starts with a config whose `{dir}` placeholders are replaced by the temp folder. The
    /// defaults make retries fast (`initial_delay = 200ms`).
    pub async fn start(environments: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, environments).await
    }

    pub async fn start_in(dir: TempDir, environments: &str) -> Self {
        let handle = start_handle(dir.path(), environments).await;
        Self { dir, handle }
    }

    pub fn root(&self, env: &str) -> PathBuf {
        self.dir.path().join("envs").join(env)
    }

    pub async fn submit(&self, env: &str, name: &str, bytes: Vec<u8>, version: &str) -> DeploymentView {
        self.submit_with(env, name, bytes, version, Priority::Normal, BTreeMap::new()).await
    }

    pub async fn submit_with(
        &self,
        env: &str,
        name: &str,
        bytes: Vec<u8>,
        version: &str,
        priority: Priority,
        params: BTreeMap<String, String>,
    ) -> DeploymentView {
        self.handle
            .submit(SubmitRequest {
                environment: env.into(),
                artifact: ArtifactSource::Bytes { name: name.into(), bytes },
                version: version.into(),
                priority,
                params,
                requested_by: "test".into(),
                idempotency_key: None,
            })
            .await
            .expect("submit")
            .deployment
    }

    /// Waits until the deployment reaches `status`.
    pub async fn wait_status(&self, id: DeploymentId, status: StatusKind, timeout: Duration) -> DeploymentView {
        let handle = self.handle.clone();
        wait_for(timeout, &format!("{id} to be {status}"), || {
            let handle = handle.clone();
            async move { handle.deployment(id).await.ok().filter(|d| d.status == status) }
        })
        .await
    }

    /// Waits until the deployment is terminal.
    pub async fn wait_terminal(&self, id: DeploymentId, timeout: Duration) -> DeploymentView {
        let handle = self.handle.clone();
        wait_for(timeout, &format!("{id} to finish"), || {
            let handle = handle.clone();
            async move { handle.deployment(id).await.ok().filter(DeploymentView::is_terminal) }
        })
        .await
    }

    /// All log records of an attempt, as text lines.
    pub fn log_text(&self, id: DeploymentId, attempt: u32) -> Vec<String> {
        tds_core::logs::read_records(&self.handle.log_path(id, attempt))
            .map(|r| r.map(|rec| rec.to_text()).collect())
            .unwrap_or_default()
    }
}

/// The config text used by tests: data in `<dir>/data`, fast retries, no probes unless given.
pub fn config_text(dir: &Path, environments: &str) -> String {
    let environments = environments.replace("{dir}", &dir.display().to_string());
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "2s"
[storage]
data_dir = "{}/data"
[defaults]
kill_grace = "1s"
verify_timeout = "2s"
probe_interval = "200ms"
probe_failures = 1
retry = {{ max_retries = 3, initial_delay = "200ms", multiplier = 2.0, max_delay = "5s" }}
{environments}
"#,
        dir.display()
    )
}

pub async fn start_handle(dir: &Path, environments: &str) -> OrchestratorHandle {
    start_with(dir, environments, StartOptions::default()).await
}

/// Starts with explicit options (a movable clock, probes off).
pub async fn start_with(dir: &Path, environments: &str, options: StartOptions) -> OrchestratorHandle {
    let config = Config::parse(&config_text(dir, environments), dir).expect("test config");
    OrchestratorHandle::start(config, options).await.expect("start")
}

/// Polls `check` every 20 ms until it yields a value; panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tar.gz holding `files` (path, content, mode).
pub fn targz(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *content).expect("append");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

/// A site artifact: `index.html` and `VERSION`.
pub fn site(version: &str) -> Vec<u8> {
    let html = format!("<h1>{version}</h1>\n");
    targz(&[("index.html", html.as_bytes(), 0o644), ("VERSION", version.as_bytes(), 0o644)])
}

/// A raw tar entry with any path bytes (the `tar` crate refuses `..` when building).
pub fn raw_tar_entry(out: &mut Vec<u8>, path: &[u8], kind: u8, link: &[u8], content: &[u8]) {
    let mut header = [0u8; 512];
    header[..path.len()].copy_from_slice(path);
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    let size = format!("{:011o}\0", content.len());
    header[124..136].copy_from_slice(size.as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = kind;
    header[157..157 + link.len()].copy_from_slice(link);
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(content);
    let pad = (512 - content.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// Gzips bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// A closure that submits a small plain-file artifact with the given version.
pub fn submitter(
    handle: &OrchestratorHandle,
) -> impl Fn(&str) -> std::pin::Pin<Box<dyn Future<Output = DeploymentId> + Send>> + use<> {
    let handle = handle.clone();
    move |version: &str| {
        let handle = handle.clone();
        let version = version.to_owned();
        Box::pin(async move {
            handle
                .submit(SubmitRequest {
                    environment: handle.config().environments[0].name.clone(),
                    artifact: ArtifactSource::Bytes { name: "a.txt".into(), bytes: version.clone().into_bytes() },
                    version,
                    priority: Priority::Normal,
                    params: BTreeMap::new(),
                    requested_by: "test".into(),
                    idempotency_key: None,
                })
                .await
                .expect("submit")
                .deployment
                .id
        })
    }
}
