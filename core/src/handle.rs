//! `OrchestratorHandle`: the only door into the core. The dashboard and the API are two equal
//! clients of it.
//!
//! Writes go to the engine (commands with replies) or, for submissions, to the store first:
//! a submission is committed before it is acknowledged and only then handed to the engine.
//! Reads come from the published view (live state) or the store (history), never from the
//! engine's private state.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::spawn_blocking;
use tokio_util::sync::CancellationToken;

use crate::artifact::{self, ArtifactStore, ArtifactWriter, UnpackLimits};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::engine::{Command, Engine, Recovered, Shared};
use crate::error::{Error, Result};
use crate::event::{CoreEvent, EventEnvelope};
use crate::logs::{Entry, Level, LogBook, LogEvent};
use crate::model::{
    ArtifactInfo, ArtifactKind, Deployment, DeploymentId, DeploymentView, EnvironmentView, Priority, Status, StatusKind,
};
use crate::published::{Published, Snapshot};
use crate::release::{Releases, Restored, release_name};
use crate::store::{
    AttemptRecord, HistoryQuery, IdempotencyKey, Page, Persister, SqliteStore, Store, TransitionRecord, Write,
    WriteOutcome,
};

/// Longest accepted `version` label.
pub const MAX_VERSION_LEN: usize = 256;
/// Most `params` per deployment.
pub const MAX_PARAMS: usize = 64;
/// Longest parameter value.
pub const MAX_PARAM_VALUE: usize = 4096;

/// The artifact of a submission.
#[derive(Debug)]
pub enum ArtifactSource {
    /// Bytes in memory (the base64 JSON body).
    Bytes { name: String, bytes: Vec<u8> },
    /// Already streamed into the artifact store with [`OrchestratorHandle::artifact_writer`].
    Stored(ArtifactInfo),
}

/// A request to deploy.
#[derive(Debug)]
pub struct SubmitRequest {
    pub environment: String,
    pub artifact: ArtifactSource,
    pub version: String,
    pub priority: Priority,
    pub params: BTreeMap<String, String>,
    /// Who asked (token name, `cli`, `dashboard`).
    pub requested_by: String,
    pub idempotency_key: Option<String>,
}

/// The answer to a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub deployment: DeploymentView,
    /// False when an `Idempotency-Key` matched an earlier submission.
    pub created: bool,
}

/// Everything about one deployment, for detail views.
#[derive(Debug, Clone)]
pub struct DeploymentDetail {
    pub deployment: DeploymentView,
    pub attempts: Vec<AttemptRecord>,
    pub transitions: Vec<TransitionRecord>,
}

/// Options of [`OrchestratorHandle::start`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Wall clock (tests move it).
    pub clock: Arc<dyn Clock>,
    /// Run environment probes (tests may turn them off).
    pub probes: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self { clock: Arc::new(SystemClock), probes: true }
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    published: Arc<Published>,
    store: Arc<dyn Store>,
    ids: Mutex<ulid::Generator>,
    accepting: AtomicBool,
    stop_probes: CancellationToken,
    engine: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A cheap, clonable handle to a running orchestrator.
#[derive(Debug, Clone)]
pub struct OrchestratorHandle {
    inner: Arc<Inner>,
}

#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
fn blocking_err(e: tokio::task::JoinError) -> Error {
    Error::Store(crate::error::StoreError::Invalid(format!("background task failed: {e}")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Takes the data folder's lock file (`tds.lock`, holding the pid of its owner), or says who
/// holds it. The lock is released by the kernel when the process ends, also after `kill -9`.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = data_dir.join("tds.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(Error::DataDirInUse { path: data_dir.to_owned(), pid: pid.trim().to_owned() })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock the data folder", &path, e)),
    }
}

/// Fails with [`Error::DataDirInUse`] when another tds holds the data folder. Checked before
/// the API binds, so that a second instance names the first one's pid rather than a busy port;
/// [`OrchestratorHandle::start`] takes the lock itself.
pub fn check_data_dir_free(data_dir: &std::path::Path) -> Result<()> {
    if !data_dir.join("tds.lock").is_file() {
        return Ok(());
    }
    lock_data_dir(data_dir).map(drop)
}

/// A `params` key: it becomes part of an environment variable name (`TDS_PARAM_<KEY>`).
pub fn valid_param_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && key.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl OrchestratorHandle {
    /// Opens the store, recovers unfinished work, and starts the engine, the store writer and
    /// the probes. Fails (rather than starting empty) when the store is unusable.
    pub async fn start(config: Config, options: StartOptions) -> Result<Self> {
        let config = Arc::new(config);
        let clock = options.clock;
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| Error::io("create data folder", &data_dir, e))?;
        // One orchestrator per data folder: a second one would take the first one's running
        // attempts for crash leftovers and kill them.
        let lock = lock_data_dir(&data_dir)?;
        let db = data_dir.join("tds.db");
        let store: Arc<dyn Store> =
            Arc::new(spawn_blocking(move || SqliteStore::open(&db)).await.map_err(blocking_err)??);
        let artifacts = ArtifactStore::open(data_dir.join("artifacts"))
            .map_err(|e| Error::io("open artifact store", data_dir.join("artifacts"), e))?;

        let load = Arc::clone(&store);
        let (unfinished, recent, env_records, releases) = spawn_blocking(move || -> Result<_> {
            Ok((
                load.unfinished()?,
                load.recent(crate::published::RECENT_FINISHED as u32)?,
                load.environments()?,
                load.releases()?,
            ))
        })
        .await
        .map_err(blocking_err)??;

        let published = Arc::new(Published::new(Arc::clone(&clock)));
        let (persist, _writer) = Persister::spawn(Arc::clone(&store), Arc::clone(&published));
        let releases = Arc::new(Releases::new(&config.environments, releases, persist.clone()));

        // Release folders of interrupted attempts are rolled back by their recovery tasks; all
        // other leftovers (temporary links, stray folders) go now, before anything runs.
        let in_use: Vec<String> =
            unfinished.iter().filter(|d| d.status.kind().holds_slot()).map(|d| release_name(d.id, d.attempt)).collect();
        for env in &config.environments {
            let (releases, env, in_use) = (Arc::clone(&releases), Arc::clone(env), in_use.clone());
            let cleaned = spawn_blocking(move || releases.clean_at_start(&env, &in_use)).await.map_err(blocking_err)?;
            if let Err(e) = cleaned {
                tracing::warn!(error = %e, "start-up clean-up of releases failed");
            }
        }

        let mut last_results = HashMap::new();
        for d in &recent {
            if let Some(finished) = d.status.finished_at() {
                let entry = last_results.entry(d.environment.clone()).or_insert((String::new(), finished));
                if entry.0.is_empty() || finished > entry.1 {
                    *entry = (d.status.kind().to_string(), finished);
                }
            }
        }
        let mut seed: Vec<DeploymentView> = recent.iter().map(DeploymentView::from).collect();
        seed.extend(unfinished.iter().map(DeploymentView::from));
        published.seed(seed, Vec::new());

        let shared = Arc::new(Shared {
            config: Arc::clone(&config),
            clock: Arc::clone(&clock),
            logs: LogBook::new(data_dir.join("logs"), Arc::clone(&clock)),
            artifacts,
            releases,
            persist,
            lock: Mutex::new(Some(lock)),
        });
        let (commands_tx, commands_rx) = mpsc::channel(4096);
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let recovered = Recovered { deployments: unfinished, environments: env_records, last_results };
        let engine = Engine::new(Arc::clone(&shared), commands_rx, probe_rx, recovered);
        let engine_task = tokio::spawn(engine.run());
        let stop_probes = CancellationToken::new();
        if options.probes {
            crate::probe::spawn_probes(&config.environments, &probe_tx, &stop_probes);
        }
        crate::retention::spawn(
            Arc::clone(&store),
            data_dir.join("artifacts"),
            config.artifact_retention,
            Arc::clone(&clock),
            stop_probes.clone(),
        );
        tracing::info!(data_dir = %data_dir.display(), environments = config.environments.len(), "orchestrator started");
        // Wait until the engine's first view of every environment is published, so that the
        // first reads after `start` see them.
        let (barrier, ready) = oneshot::channel();
        if commands_tx.send(Command::Barrier(barrier)).await.is_ok() {
            let _ = ready.await;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                commands: commands_tx,
                published,
                store,
                ids: Mutex::new(ulid::Generator::new()),
                accepting: AtomicBool::new(true),
                stop_probes,
                engine: Mutex::new(Some(engine_task)),
            }),
        })
    }

    /// The configuration this orchestrator runs with.
    pub fn config(&self) -> &Config {
        &self.inner.shared.config
    }

    /// Wall time as the orchestrator sees it.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.shared.clock.now()
    }

    /// Whether new submissions are accepted (false once shutdown began).
    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::SeqCst)
    }

    fn next_id(&self) -> DeploymentId {
        let mut generator = self.inner.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ulid = match generator.generate() {
            Ok(u) => u,
            Err(overflow) => overflow.commit_overflow_random(),
        };
        DeploymentId::from_ulid(ulid)
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.inner.commands.send(command).await.map_err(|_| Error::ShuttingDown)
    }

    /// Starts a streamed upload into the artifact store, refused past the configured limit.
    pub fn artifact_writer(&self) -> Result<ArtifactWriter> {
        let dir = self.inner.shared.config.data_dir.join("artifacts");
        self.inner
            .shared
            .artifacts
            .writer(self.inner.shared.config.defaults.max_artifact_size)
            .map_err(|e| Error::io("start upload", dir, e))
    }

    fn validate(&self, req: &SubmitRequest) -> Result<()> {
        if self.inner.shared.config.environment(&req.environment).is_none() {
            return Err(Error::UnknownEnvironment(req.environment.chars().take(100).collect()));
        }
        if req.version.len() > MAX_VERSION_LEN {
            return Err(Error::invalid("version", format!("longer than {MAX_VERSION_LEN} bytes")));
        }
        if req.version.contains('\0') {
            return Err(Error::invalid("version", "contains a NUL character"));
        }
        if req.params.len() > MAX_PARAMS {
            return Err(Error::invalid("params", format!("more than {MAX_PARAMS} parameters")));
        }
        let mut variables = std::collections::HashMap::new();
        for (k, v) in &req.params {
            if let Some(other) = variables.insert(k.to_ascii_uppercase(), k) {
                return Err(Error::invalid(
                    "params",
                    format!("keys '{other}' and '{k}' would both become TDS_PARAM_{}", k.to_ascii_uppercase()),
                ));
            }
            if !valid_param_key(k) {
                return Err(Error::invalid(
                    format!("params.{}", k.chars().take(64).collect::<String>()),
                    "keys must be letters, digits and '_', not starting with a digit, at most 64",
                ));
            }
            if v.len() > MAX_PARAM_VALUE || v.contains('\0') {
                return Err(Error::invalid(
                    format!("params.{k}"),
                    format!("value longer than {MAX_PARAM_VALUE} bytes or contains NUL"),
                ));
            }
        }
        if let Some(key) = &req.idempotency_key
            && (key.is_empty() || key.len() > 255)
        {
            return Err(Error::invalid("Idempotency-Key", "must be 1 to 255 characters"));
        }
        Ok(())
    }

    /// Accepts a deployment: validates it, stores the artifact, commits the deployment, and
    /// only then queues it. With an idempotency key, a repeat returns the first deployment.
    pub async fn submit(&self, req: SubmitRequest) -> Result<Submitted> {
        if !self.is_accepting() {
            return Err(Error::ShuttingDown);
        }
        self.validate(&req)?;
        let config = &self.inner.shared.config;
        let limit = config.defaults.max_artifact_size;
        let info = match req.artifact {
            ArtifactSource::Bytes { name, bytes } => {
                if bytes.len() as u64 > limit {
                    return Err(Error::ArtifactTooLarge { limit });
                }
                let store = self.inner.shared.artifacts.clone();
                spawn_blocking(move || {
                    // Content-addressed: hash first, and write (and fsync) only content the store
                    // does not hold yet.
                    let sha256 = hex(&Sha256::digest(&bytes));
                    if !bytes.is_empty() && artifact::valid_artifact_name(&name) && store.path(&sha256).is_file() {
                        let kind = Some(ArtifactKind::from_name(&name));
                        return Ok(ArtifactInfo { name, size: bytes.len() as u64, sha256, kind });
                    }
                    store.store(&name, &bytes, limit)
                })
                .await
                .map_err(blocking_err)??
            }
            ArtifactSource::Stored(info) => info,
        };
        let path = self.inner.shared.artifacts.path(&info.sha256);
        let limits = UnpackLimits {
            max_bytes: config.defaults.max_unpacked_size,
            max_entries: config.defaults.max_archive_entries,
        };
        let check = info.clone();
        spawn_blocking(move || artifact::inspect(&path, &check, limits)).await.map_err(blocking_err)??;

        let env =
            config.environment(&req.environment).ok_or_else(|| Error::UnknownEnvironment(req.environment.clone()))?;
        let now = self.now();
        let deployment = Deployment {
            id: self.next_id(),
            environment: req.environment,
            version: req.version,
            priority: req.priority,
            params: req.params,
            artifact: info,
            requested_by: req.requested_by,
            created_at: now,
            attempt: 1,
            retry_count: 0,
            max_retries: env.retry.max_retries,
            started_at: None,
            duration_ms: None,
            queue_wait_ms: None,
            last_error: None,
            status: Status::Queued { enqueued_at: now },
            cancel_requested: false,
            wait_reason: None,
        };
        let idempotency = req.idempotency_key.map(|key| {
            let mut h = Sha256::new();
            for part in [
                &deployment.environment,
                &deployment.version,
                deployment.priority.as_str(),
                &deployment.artifact.sha256,
                &deployment.artifact.name,
            ] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            h.update(serde_json::to_vec(&deployment.params).unwrap_or_default());
            IdempotencyKey { key, fingerprint: hex(&h.finalize()) }
        });
        let view = DeploymentView::from(&deployment);
        let writes = vec![
            Write::Insert { deployment: Box::new(deployment.clone()), idempotency },
            Write::Transition(TransitionRecord {
                deployment_id: deployment.id,
                attempt: 1,
                at: now,
                status: StatusKind::Queued,
                phase: None,
                message: Some(format!("submitted by {}", deployment.requested_by)),
            }),
            Write::Attempt(AttemptRecord {
                deployment_id: deployment.id,
                attempt: 1,
                queued_at: now,
                started_at: None,
                finished_at: None,
                outcome: None,
                error: None,
                duration_ms: None,
            }),
        ];
        let outcome =
            self.inner.shared.persist.commit(writes, vec![CoreEvent::Deployment(Arc::new(view.clone()))]).await?;
        if let Some(WriteOutcome::Existing { id, same_request }) = outcome.into_iter().next() {
            if !same_request {
                return Err(Error::IdempotencyConflict { id });
            }
            return Ok(Submitted { deployment: self.deployment(id).await?, created: false });
        }
        // Committed: if the engine is already gone, the next start picks it up from the store.
        let _ = self.send(Command::Enqueue(Box::new(deployment))).await;
        Ok(Submitted { deployment: view, created: true })
    }

    /// The current state of a deployment (live view, else the store).
    pub async fn deployment(&self, id: DeploymentId) -> Result<DeploymentView> {
        if let Some(view) = self.inner.published.deployment(id) {
            return Ok((*view).clone());
        }
        let store = Arc::clone(&self.inner.store);
        let stored = spawn_blocking(move || store.deployment(id)).await.map_err(blocking_err)??;
        stored.map(|d| DeploymentView::from(&d)).ok_or(Error::NotFound(id))
    }

    /// A deployment with its attempts and transitions.
    pub async fn detail(&self, id: DeploymentId) -> Result<DeploymentDetail> {
        let deployment = self.deployment(id).await?;
        let store = Arc::clone(&self.inner.store);
        let (attempts, transitions) =
            spawn_blocking(move || Ok::<_, Error>((store.attempts(id)?, store.transitions(id)?)))
                .await
                .map_err(blocking_err)??;
        Ok(DeploymentDetail { deployment, attempts, transitions })
    }

    /// A page of history, newest first.
    pub async fn history(&self, query: HistoryQuery) -> Result<Page<DeploymentView>> {
        let store = Arc::clone(&self.inner.store);
        let page = spawn_blocking(move || store.history(&query)).await.map_err(blocking_err)??;
        Ok(Page {
            items: page.items.iter().map(|d| self.live_or(d)).collect(),
            total: page.total,
            limit: page.limit,
            offset: page.offset,
        })
    }

    /// Prefers the published view of a stored row (it has live fields such as wait reasons).
    fn live_or(&self, d: &Deployment) -> DeploymentView {
        self.inner.published.deployment(d.id).map_or_else(|| DeploymentView::from(d), |v| (*v).clone())
    }

    /// Cancels a queued, waiting or running deployment. A running one is killed and rolled
    /// back before this returns.
    pub async fn cancel(&self, id: DeploymentId) -> Result<DeploymentView> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Cancel { id, reply }).await?;
        match rx.await.map_err(|_| Error::ShuttingDown)? {
            Err(Error::NotFound(_)) => {
                let current = self.deployment(id).await?;
                Err(Error::InvalidState { id, status: current.status, action: "cancelled" })
            }
            other => other,
        }
    }

    /// Queues a new attempt of a failed or cancelled deployment.
    pub async fn retry(&self, id: DeploymentId) -> Result<DeploymentView> {
        let store = Arc::clone(&self.inner.store);
        let stored =
            spawn_blocking(move || store.deployment(id)).await.map_err(blocking_err)??.ok_or(Error::NotFound(id))?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Retry { deployment: Box::new(stored), reply }).await?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Changes the priority of a deployment that has not finished.
    pub async fn set_priority(&self, id: DeploymentId, priority: Priority) -> Result<DeploymentView> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetPriority { id, priority, reply }).await?;
        match rx.await.map_err(|_| Error::ShuttingDown)? {
            Err(Error::NotFound(_)) => {
                let current = self.deployment(id).await?;
                Err(Error::InvalidState { id, status: current.status, action: "reprioritized" })
            }
            other => other,
        }
    }

    /// Pauses (drains) or resumes an environment: nothing new starts while paused.
    pub async fn set_paused(&self, environment: &str, paused: bool) -> Result<EnvironmentView> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetPaused { environment: environment.to_owned(), paused, reply }).await?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Changes an environment's concurrency limit live.
    pub async fn set_limit(&self, environment: &str, limit: u32) -> Result<EnvironmentView> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetLimit { environment: environment.to_owned(), limit, reply }).await?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Manual rollback of a succeeded deployment: re-activates the previous successful release
    /// of its environment (if this one is live) and removes this one from the rollback
    /// candidates. Refused, with `current` untouched, when there is nothing to go back to.
    pub async fn rollback(&self, id: DeploymentId) -> Result<(DeploymentView, Restored)> {
        let view = self.deployment(id).await?;
        if view.status != StatusKind::Succeeded {
            return Err(Error::InvalidState { id, status: view.status, action: "rolled back" });
        }
        let env = Arc::clone(
            self.inner
                .shared
                .config
                .environment(&view.environment)
                .ok_or_else(|| Error::UnknownEnvironment(view.environment.clone()))?,
        );
        let name = release_name(id, view.attempt);
        let releases = Arc::clone(&self.inner.shared.releases);
        let restored = spawn_blocking(move || releases.roll_back_release(&env, &name))
            .await
            .map_err(blocking_err)?
            .map_err(Error::NoRollbackTarget)?;
        let message = match &restored {
            Restored::SwitchedTo(prev) => format!("manual rollback: current → releases/{prev}"),
            _ => "manual rollback: release withdrawn (it was not live)".to_owned(),
        };
        self.inner.shared.logs.write_once(
            id,
            view.attempt,
            &Entry::event(Level::Warn, LogEvent::RolledBack, None, &message),
        );
        // The deployment stays `succeeded` (it did succeed); its timeline says it was withdrawn.
        let transition = TransitionRecord {
            deployment_id: id,
            attempt: view.attempt,
            at: self.now(),
            status: StatusKind::Succeeded,
            phase: None,
            message: Some(message),
        };
        // `current` has moved already: a failure to record it (the store shutting down) is
        // logged, not reported as a failed rollback that a client would repeat.
        if let Err(e) = self.inner.shared.persist.commit(vec![Write::Transition(transition)], Vec::new()).await {
            tracing::warn!(%id, error = %e, "manual rollback done but not recorded in the timeline");
        }
        Ok((view, restored))
    }

    /// Everything live, for a first draw or after a lagged subscription.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.published.snapshot()
    }

    /// An environment's published state.
    pub fn environment(&self, name: &str) -> Option<EnvironmentView> {
        self.inner.published.environment(name).map(|e| (*e).clone())
    }

    /// Every committed change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EventEnvelope> {
        self.inner.published.subscribe()
    }

    /// Events after `last_id` for a resumed stream; `None` when they are too old.
    pub fn events_since(&self, last_id: u64) -> Option<Vec<EventEnvelope>> {
        self.inner.published.events_since(last_id)
    }

    /// The log file of an attempt.
    pub fn log_path(&self, id: DeploymentId, attempt: u32) -> PathBuf {
        self.inner.shared.logs.path(id, attempt)
    }

    /// The attempts of a deployment that have a log.
    pub fn log_attempts(&self, id: DeploymentId) -> Vec<u32> {
        self.inner.shared.logs.attempts(id)
    }

    /// The store, for analytics queries.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.inner.store)
    }

    /// Graceful stop: refuse new submissions, let running attempts finish within the drain
    /// time (`server.drain_timeout`, or `drain`), then interrupt and roll them back (they run
    /// again at the next start), persist, stop. Returns when everything is committed.
    pub async fn shutdown(&self, drain: Option<std::time::Duration>) {
        self.inner.accepting.store(false, Ordering::SeqCst);
        self.inner.stop_probes.cancel();
        let (reply, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown { drain, reply }).await.is_ok() {
            let _ = rx.await;
        }
        let task = self.inner.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        // Stopped and persisted: the data folder is free for the next orchestrator.
        self.inner.shared.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }
}
