//! The engine: the single owner of scheduler state (queues, slots, live deployments, timers).
//!
//! It is one task fed by two channels: commands from `OrchestratorHandle` (with `oneshot`
//! replies) and messages from attempt tasks and probes. Every decision is made here, in order,
//! so a slot is reserved in the same step that decides to start (case C01), and a cancel either
//! reaches a deployment before its attempt spawns or cancels that attempt's token (case C02).
//! State changes go to the persister, which publishes them once committed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::artifact::UnpackLimits;
use crate::clock::Clock;
use crate::config::{Config, EnvironmentConfig};
use crate::error::Error;
use crate::event::CoreEvent;
use crate::limits::Slots;
use crate::logs::{Entry, Level, LogBook, LogEvent, SharedLog, lock};
use crate::model::{Deployment, DeploymentId, DeploymentView, EnvironmentView, Phase, Priority, Status, StatusKind};
use crate::plan::{self, AttemptJob, AttemptMsg, Outcome, Progress};
use crate::queue::{Gate, Queue, QueueEntry, wait_reason};
use crate::release::Releases;
use crate::retry::RetryDecision;
use crate::store::{AttemptRecord, EnvironmentRecord, PersistHandle, TransitionRecord, Write};

/// How often wait reasons are recomputed at most, and at least while anything waits (aging).
const WAIT_REFRESH_MIN: Duration = Duration::from_millis(200);
const WAIT_REFRESH_MAX: Duration = Duration::from_secs(5);

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Requests from the handle.
#[derive(Debug)]
pub(crate) enum Command {
    /// A committed submission (or a recovered queued deployment) to schedule.
    Enqueue(Box<Deployment>),
    Cancel {
        id: DeploymentId,
        reply: Reply<DeploymentView>,
    },
    /// Manual retry of a terminal deployment loaded from the store.
    Retry {
        deployment: Box<Deployment>,
        reply: Reply<DeploymentView>,
    },
    SetPriority {
        id: DeploymentId,
        priority: Priority,
        reply: Reply<DeploymentView>,
    },
    SetPaused {
        environment: String,
        paused: bool,
        reply: Reply<EnvironmentView>,
    },
    SetLimit {
        environment: String,
        limit: u32,
        reply: Reply<EnvironmentView>,
    },
    /// Stop starting work, let running attempts finish within the drain time, then interrupt
    /// them; replies when everything is persisted.
    Shutdown {
        drain: Option<Duration>,
        reply: oneshot::Sender<()>,
    },
    /// Answers once everything the engine did so far is committed and published.
    Barrier(oneshot::Sender<()>),
}

/// Probe results from the probe tasks.
#[derive(Debug)]
pub(crate) struct ProbeResult {
    pub environment: usize,
    pub result: Result<(), String>,
}

/// Why a running attempt is being cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelCause {
    Operator,
    Shutdown,
}

#[derive(Debug)]
struct Run {
    cancel: CancellationToken,
    cause: Option<CancelCause>,
    waiters: Vec<Reply<DeploymentView>>,
}

#[derive(Debug)]
struct Live {
    d: Deployment,
    log: SharedLog,
    attempt_queued_at: DateTime<Utc>,
    attempt_started_at: Option<DateTime<Utc>>,
    /// Monotonic start of the current run (since submission or manual retry).
    first_started: Option<Instant>,
    /// When the current run was submitted (or manually retried), for the queue wait.
    submitted: Instant,
    run: Option<Run>,
    retry_at: Option<Instant>,
}

#[derive(Debug)]
struct EnvRuntime {
    config: Arc<EnvironmentConfig>,
    queue: Queue,
    paused: bool,
    limit_override: Option<u32>,
    available: bool,
    unavailable_since: Option<DateTime<Utc>>,
    probe_error: Option<String>,
    probe_failures: u32,
    last_result: Option<(String, DateTime<Utc>)>,
    published: Option<Arc<EnvironmentView>>,
}

impl EnvRuntime {
    fn limit(&self) -> u32 {
        self.limit_override.unwrap_or(self.config.max_concurrent)
    }

    fn accepting(&self) -> bool {
        !self.paused && self.available
    }
}

/// Things the engine shares with the handle and the attempt tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub logs: LogBook,
    pub artifacts: crate::artifact::ArtifactStore,
    pub releases: Arc<Releases>,
    pub persist: PersistHandle,
    /// The exclusive lock on the data folder: held until `shutdown` completes (or the process
    /// ends), so a second orchestrator cannot start on the same folder meanwhile.
    pub lock: std::sync::Mutex<Option<std::fs::File>>,
}

/// A deployment found unfinished at start-up.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub deployments: Vec<Deployment>,
    pub environments: Vec<EnvironmentRecord>,
    pub last_results: HashMap<String, (String, DateTime<Utc>)>,
}

/// The scheduler.
#[derive(Debug)]
pub(crate) struct Engine {
    shared: Arc<Shared>,
    live: HashMap<DeploymentId, Live>,
    envs: Vec<EnvRuntime>,
    env_index: HashMap<String, usize>,
    slots: Slots,
    timers: BTreeSet<(Instant, DeploymentId)>,
    seq: u64,
    rng: u64,
    commands: mpsc::Receiver<Command>,
    attempts_tx: mpsc::UnboundedSender<AttemptMsg>,
    attempts_rx: mpsc::UnboundedReceiver<AttemptMsg>,
    probes: mpsc::UnboundedReceiver<ProbeResult>,
    dirty_envs: HashSet<usize>,
    wait_dirty: bool,
    next_wait_refresh: Instant,
    drain_deadline: Option<Instant>,
    interrupted: bool,
    commands_open: bool,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
}

impl Engine {
    pub fn new(
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        probes: mpsc::UnboundedReceiver<ProbeResult>,
        recovered: Recovered,
    ) -> Self {
        let config = Arc::clone(&shared.config);
        let mut slots = Slots::new(config.defaults.max_running);
        let records: HashMap<_, _> = recovered.environments.into_iter().map(|r| (r.name.clone(), r)).collect();
        let mut envs = Vec::new();
        let mut env_index = HashMap::new();
        for (i, env) in config.environments.iter().enumerate() {
            let record = records.get(&env.name);
            let runtime = EnvRuntime {
                config: Arc::clone(env),
                queue: Queue::new(),
                paused: record.is_some_and(|r| r.paused),
                limit_override: record.and_then(|r| r.limit_override),
                available: true,
                unavailable_since: None,
                probe_error: None,
                probe_failures: 0,
                last_result: recovered.last_results.get(&env.name).cloned(),
                published: None,
            };
            slots.set_limit(&env.name, runtime.limit());
            env_index.insert(env.name.clone(), i);
            envs.push(runtime);
        }
        let (attempts_tx, attempts_rx) = mpsc::unbounded_channel();
        let seed = u64::from(Utc::now().timestamp_subsec_nanos()) | 1;
        let mut engine = Self {
            shared,
            live: HashMap::new(),
            dirty_envs: (0..envs.len()).collect(),
            envs,
            env_index,
            slots,
            timers: BTreeSet::new(),
            seq: 0,
            rng: seed,
            commands,
            attempts_tx,
            attempts_rx,
            probes,
            wait_dirty: true,
            next_wait_refresh: Instant::now(),
            drain_deadline: None,
            interrupted: false,
            commands_open: true,
            shutdown_waiters: Vec::new(),
        };
        engine.recover(recovered.deployments);
        engine
    }

    fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    fn random_unit(&mut self) -> f64 {
        // xorshift64: jitter only needs to be spread, not secure.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Monotonic instant that corresponds to a stored wall time in the past (clamped to now).
    fn instant_of(&self, wall: DateTime<Utc>) -> Instant {
        let ago = (self.now() - wall).to_std().unwrap_or_default();
        Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
    }

    // -----------------------------------------------------------------------------------------
    // Start-up

    fn recover(&mut self, deployments: Vec<Deployment>) {
        for d in deployments {
            let Some(&env_idx) = self.env_index.get(&d.environment) else {
                self.fail_orphan(d);
                continue;
            };
            let log = match self.shared.logs.open(d.id, d.attempt) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(id = %d.id, error = %e, "cannot open log of recovered deployment");
                    continue;
                }
            };
            if lock(&log).is_empty() {
                // Committed but not yet handed to the engine when tds stopped.
                lock(&log).write(&Entry::event(Level::Info, LogEvent::Queued, None, &queued_message(&d)));
            }
            let first_started = d.started_at.map(|t| self.instant_of(t));
            let submitted = self.instant_of(d.created_at);
            let mut live = Live {
                submitted,
                attempt_queued_at: d.created_at,
                attempt_started_at: None,
                first_started,
                run: None,
                retry_at: None,
                log,
                d,
            };
            let id = live.d.id;
            match live.d.status.clone() {
                Status::Queued { enqueued_at } => {
                    live.attempt_queued_at = enqueued_at;
                    self.seq += 1;
                    let entry = QueueEntry {
                        id,
                        priority: live.d.priority,
                        enqueued: self.instant_of(enqueued_at),
                        seq: self.seq,
                    };
                    self.envs[env_idx].queue.push(entry);
                }
                Status::RetryWait { until } => {
                    // Only the remaining delay is waited; a clock that moved backwards while tds
                    // was down cannot stretch it beyond the policy's cap.
                    let cap = self.envs[env_idx].config.retry.max_delay;
                    let remaining = (until - self.now()).to_std().unwrap_or_default().min(cap);
                    let at = Instant::now() + remaining;
                    live.retry_at = Some(at);
                    self.timers.insert((at, id));
                }
                Status::Running { attempt_started_at, .. } | Status::RollingBack { attempt_started_at } => {
                    // The attempt was interrupted by a crash: roll back what it left, then treat
                    // it as a failed attempt (or as cancelled, if a cancel was under way).
                    live.attempt_started_at = Some(attempt_started_at);
                    let outcome = if live.d.cancel_requested {
                        Outcome::Cancelled
                    } else {
                        Outcome::Failed {
                            reason: "interrupted: tds stopped while this attempt was running".into(),
                            retryable: true,
                        }
                    };
                    lock(&live.log).write(&Entry::event(
                        Level::Warn,
                        LogEvent::Interrupted,
                        live.d.status.phase(),
                        "tds restarted while this attempt was running; rolling back",
                    ));
                    self.slots.force_reserve(&live.d.environment);
                    let cancel = CancellationToken::new();
                    let cause = live.d.cancel_requested.then_some(CancelCause::Operator);
                    live.run = Some(Run { cancel: cancel.clone(), cause, waiters: Vec::new() });
                    self.spawn_attempt(&live, env_idx, cancel, Some(outcome));
                }
                Status::Succeeded { .. } | Status::Failed { .. } | Status::Cancelled { .. } => continue,
            }
            self.live.insert(id, live);
        }
    }

    /// A stored deployment whose environment is no longer configured: it can never run.
    fn fail_orphan(&mut self, mut d: Deployment) {
        let now = self.now();
        let reason = format!("environment '{}' is no longer configured", d.environment);
        d.status = Status::Failed { finished_at: now, reason: reason.clone() };
        self.shared.logs.write_once(d.id, d.attempt, &Entry::event(Level::Error, LogEvent::Failed, None, &reason));
        let transition = TransitionRecord {
            deployment_id: d.id,
            attempt: d.attempt,
            at: now,
            status: StatusKind::Failed,
            phase: None,
            message: Some(reason),
        };
        let event = CoreEvent::Deployment(Arc::new(DeploymentView::from(&d)));
        self.shared.persist.send(vec![Write::Update(Box::new(d)), Write::Transition(transition)], vec![event]);
    }

    // -----------------------------------------------------------------------------------------
    // The loop

    /// Runs until shut down; returns after the last change is committed.
    pub async fn run(mut self) {
        loop {
            self.schedule();
            self.refresh_wait_reasons();
            self.publish_dirty_envs();
            if self.drain_deadline.is_some() && self.running_count() == 0 {
                break;
            }
            let wake = self.next_wake();
            tokio::select! {
                biased;
                Some(msg) = self.attempts_rx.recv() => self.on_attempt(msg),
                Some(probe) = self.probes.recv() => self.on_probe(probe),
                cmd = self.commands.recv(), if self.commands_open => if let Some(cmd) = cmd { self.on_command(cmd) } else {
                    self.commands_open = false;
                    self.begin_drain(None);
                },
                () = tokio::time::sleep_until(wake) => self.on_timer(),
            }
        }
        // Everything sent before this commit is committed when it returns.
        let _ = self.shared.persist.commit(Vec::new(), Vec::new()).await;
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(());
        }
        // Answer commands that arrived during the drain.
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            reject_during_shutdown(cmd);
        }
    }

    fn running_count(&self) -> usize {
        self.live.values().filter(|l| l.run.is_some()).count()
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(3600);
        if let Some((at, _)) = self.timers.first() {
            wake = wake.min(*at);
        }
        if self.wait_dirty {
            wake = wake.min(self.next_wait_refresh);
        } else if self.envs.iter().any(|e| !e.queue.is_empty()) {
            wake = wake.min(self.next_wait_refresh.max(Instant::now()) + WAIT_REFRESH_MAX);
        }
        if let Some(deadline) = self.drain_deadline
            && !self.interrupted
        {
            wake = wake.min(deadline);
        }
        wake
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if self.drain_deadline.is_none() {
                self.requeue_after_backoff(id);
            }
        }
        if !self.wait_dirty && self.envs.iter().any(|e| !e.queue.is_empty()) {
            self.wait_dirty = true;
        }
        if let Some(deadline) = self.drain_deadline
            && now >= deadline
            && !self.interrupted
        {
            self.interrupt_all();
        }
    }

    // -----------------------------------------------------------------------------------------
    // Persistence helpers

    fn log(&self, id: DeploymentId, level: Level, event: LogEvent, message: &str) {
        if let Some(live) = self.live.get(&id) {
            lock(&live.log).write(&Entry::event(level, event, live.d.status.phase(), message));
        }
    }

    /// Persists a live deployment's row (plus a transition and attempt record) and publishes
    /// it; a terminal deployment leaves the live set.
    fn commit(&mut self, id: DeploymentId, message: Option<String>, attempt_done: Option<(&str, Option<u64>)>) {
        let now = self.now();
        self.commit_at(id, now, message, attempt_done);
    }

    /// [`Engine::commit`] with the time of the change given (an outcome records the same
    /// instant that its retry timer counts from).
    fn commit_at(
        &mut self,
        id: DeploymentId,
        now: DateTime<Utc>,
        message: Option<String>,
        attempt_done: Option<(&str, Option<u64>)>,
    ) {
        let Some(live) = self.live.get(&id) else { return };
        let d = &live.d;
        let mut writes = vec![Write::Update(Box::new(d.clone()))];
        writes.push(Write::Transition(TransitionRecord {
            deployment_id: id,
            attempt: d.attempt,
            at: now,
            status: d.status.kind(),
            phase: d.status.phase(),
            message,
        }));
        // The attempt row changes when an attempt is queued, starts, or ends; phase changes
        // only touch the deployment row and the timeline.
        let attempt_changed = attempt_done.is_some()
            || matches!(d.status, Status::Queued { .. })
            || matches!(d.status, Status::Running { phase: Phase::Prepare, .. });
        if attempt_changed {
            writes.push(Write::Attempt(AttemptRecord {
                deployment_id: id,
                attempt: d.attempt,
                queued_at: live.attempt_queued_at,
                started_at: live.attempt_started_at,
                finished_at: attempt_done.map(|_| now),
                outcome: attempt_done.map(|(o, _)| o.to_owned()),
                error: attempt_done.and_then(|_| d.last_error.clone()),
                duration_ms: attempt_done.and_then(|(_, ms)| ms),
            }));
        }
        let event = CoreEvent::Deployment(Arc::new(DeploymentView::from(d)));
        self.shared.persist.send(writes, vec![event]);
        if d.status.kind().is_terminal() {
            self.live.remove(&id);
        }
    }

    /// Publishes a live deployment without a database write (progress, wait reason).
    fn publish_only(&self, id: DeploymentId) {
        if let Some(live) = self.live.get(&id) {
            let event = CoreEvent::Deployment(Arc::new(DeploymentView::from(&live.d)));
            self.shared.persist.send(Vec::new(), vec![event]);
        }
    }

    fn env_view(&self, idx: usize) -> EnvironmentView {
        let env = &self.envs[idx];
        let name = &env.config.name;
        let running = self.slots.running(name);
        let limit = env.limit();
        EnvironmentView {
            name: name.clone(),
            max_concurrent: limit,
            running,
            queued: env.queue.len() as u32,
            free_slots: if env.accepting() { limit.saturating_sub(running) } else { 0 },
            available: env.available,
            unavailable_since: env.unavailable_since,
            probe_error: env.probe_error.clone(),
            paused: env.paused,
            current_release: self.shared.releases.current(&env.config),
            last_result: env.last_result.as_ref().map(|(r, _)| r.clone()),
            last_result_at: env.last_result.as_ref().map(|(_, t)| *t),
        }
    }

    fn publish_dirty_envs(&mut self) {
        let mut dirty: Vec<usize> = self.dirty_envs.drain().collect();
        dirty.sort_unstable();
        let mut events = Vec::new();
        for idx in dirty {
            let view = self.env_view(idx);
            if self.envs[idx].published.as_deref() != Some(&view) {
                let view = Arc::new(view);
                self.envs[idx].published = Some(Arc::clone(&view));
                events.push(CoreEvent::Environment(view));
            }
        }
        if !events.is_empty() {
            self.shared.persist.send(Vec::new(), events);
        }
    }

    fn touch_env(&mut self, environment: &str) {
        if let Some(&idx) = self.env_index.get(environment) {
            self.dirty_envs.insert(idx);
        }
        self.wait_dirty = true;
    }

    // -----------------------------------------------------------------------------------------
    // Scheduling

    /// Starts every deployment that can start now: per environment the best waiting one, while
    /// a slot is free; across environments in priority order when a global cap applies.
    fn schedule(&mut self) {
        if self.drain_deadline.is_some() {
            return;
        }
        let now = Instant::now();
        let aging = self.shared.config.defaults.aging;
        loop {
            let mut best: Option<(usize, Priority, u64)> = None;
            for (i, env) in self.envs.iter().enumerate() {
                if !env.accepting() || self.slots.check(&env.config.name).is_err() {
                    continue;
                }
                if let Some(entry) = env.queue.peek(now, aging) {
                    let eff = crate::queue::effective_priority(entry, now, aging);
                    if best.is_none_or(|(_, p, s)| eff > p || (eff == p && entry.seq < s)) {
                        best = Some((i, eff, entry.seq));
                    }
                }
            }
            let Some((idx, _, _)) = best else { break };
            let Some(entry) = self.envs[idx].queue.pop(now, aging) else { break };
            self.start(idx, entry.id);
        }
    }

    fn start(&mut self, env_idx: usize, id: DeploymentId) {
        let env_name = self.envs[env_idx].config.name.clone();
        if self.slots.reserve(&env_name).is_err() {
            // Cannot happen: schedule checked. Put it back rather than exceed the limit.
            tracing::error!(%id, "slot vanished between check and reserve");
            return;
        }
        let now = self.now();
        let (running, limit) = (self.slots.running(&env_name), self.envs[env_idx].limit());
        let Some(live) = self.live.get_mut(&id) else {
            self.slots.release(&env_name);
            return;
        };
        live.d.status = Status::Running { attempt_started_at: now, phase: Phase::Prepare, step: None };
        live.d.wait_reason = None;
        live.d.started_at.get_or_insert(now);
        live.first_started.get_or_insert_with(Instant::now);
        if live.d.queue_wait_ms.is_none() {
            live.d.queue_wait_ms = Some(live.submitted.elapsed().as_millis() as u64);
        }
        live.attempt_started_at = Some(now);
        let cancel = CancellationToken::new();
        live.run = Some(Run { cancel: cancel.clone(), cause: None, waiters: Vec::new() });
        let attempt = live.d.attempt;
        self.log(
            id,
            Level::Info,
            LogEvent::Started,
            &format!("attempt {attempt} started on {env_name} (slot {running}/{limit})"),
        );
        if let Some(live) = self.live.get(&id) {
            self.spawn_attempt(live, env_idx, cancel, None);
        }
        self.commit(id, None, None);
        self.touch_env(&env_name);
    }

    fn spawn_attempt(&self, live: &Live, env_idx: usize, cancel: CancellationToken, recover: Option<Outcome>) {
        let defaults = &self.shared.config.defaults;
        let job = AttemptJob {
            deployment: live.d.clone(),
            env: Arc::clone(&self.envs[env_idx].config),
            artifact_path: self.shared.artifacts.path(&live.d.artifact.sha256),
            limits: UnpackLimits { max_bytes: defaults.max_unpacked_size, max_entries: defaults.max_archive_entries },
            kill_grace: defaults.kill_grace,
            log: Arc::clone(&live.log),
            cancel,
            releases: Arc::clone(&self.shared.releases),
            events: self.attempts_tx.clone(),
            recover,
        };
        tokio::spawn(plan::run(job));
    }

    fn refresh_wait_reasons(&mut self) {
        if !self.wait_dirty || Instant::now() < self.next_wait_refresh {
            return;
        }
        self.wait_dirty = false;
        self.next_wait_refresh = Instant::now() + WAIT_REFRESH_MIN;
        let now = Instant::now();
        let aging = self.shared.config.defaults.aging;
        let mut changed = Vec::new();
        for env in &self.envs {
            let name = &env.config.name;
            let gate = Gate {
                environment: name,
                paused: env.paused,
                unavailable_since: env.unavailable_since.map(|t| t.with_timezone(&Local).format("%H:%M").to_string()),
                running: self.slots.running(name),
                limit: env.limit(),
                global: self.slots.global(),
            };
            let ordered = env.queue.ordered(now, aging);
            // `ordered` is by effective priority, descending: the entries of a higher priority
            // are exactly those before the first entry of this one.
            let mut higher = 0;
            for (pos, (entry, eff)) in ordered.iter().enumerate() {
                if pos > 0 && ordered[pos - 1].1 != *eff {
                    higher = pos;
                }
                let reason = wait_reason(&gate, pos, higher);
                if let Some(live) = self.live.get(&entry.id)
                    && live.d.wait_reason.as_deref() != Some(reason.as_str())
                {
                    changed.push((entry.id, reason));
                }
            }
        }
        for (id, reason) in changed {
            if let Some(live) = self.live.get_mut(&id) {
                live.d.wait_reason = Some(reason);
            }
            self.publish_only(id);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Attempt results

    fn on_attempt(&mut self, msg: AttemptMsg) {
        match msg {
            AttemptMsg::Progress { id, attempt, progress } => self.on_progress(id, attempt, progress),
            AttemptMsg::Done { id, attempt, outcome, elapsed } => self.on_done(id, attempt, outcome, elapsed),
        }
    }

    fn on_progress(&mut self, id: DeploymentId, attempt: u32, progress: Progress) {
        let Some(live) = self.live.get_mut(&id) else { return };
        if live.d.attempt != attempt {
            return;
        }
        let started = live.attempt_started_at.unwrap_or_else(|| self.shared.clock.now());
        let phase_change = match (&mut live.d.status, progress) {
            // The start already recorded `prepare`; only real changes are transitions.
            (Status::Running { phase, .. }, Progress::Phase(p)) if *phase == p => return,
            (Status::Running { phase, step, .. }, Progress::Phase(p)) => {
                *phase = p;
                *step = None;
                true
            }
            (Status::Running { step, .. }, Progress::Step(s)) => {
                *step = Some(s);
                false
            }
            (status @ Status::Running { .. }, Progress::RollingBack) => {
                *status = Status::RollingBack { attempt_started_at: started };
                true
            }
            _ => return,
        };
        if phase_change {
            self.commit(id, None, None);
        } else {
            // Step changes are frequent and cheap to lose: row update only, no transition.
            if let Some(live) = self.live.get(&id) {
                let event = CoreEvent::Deployment(Arc::new(DeploymentView::from(&live.d)));
                self.shared.persist.send(vec![Write::Update(Box::new(live.d.clone()))], vec![event]);
            }
        }
    }

    fn on_done(&mut self, id: DeploymentId, attempt: u32, outcome: Outcome, elapsed: Duration) {
        let now = self.now();
        let unit = self.random_unit();
        let Some(live) = self.live.get_mut(&id) else { return };
        if live.d.attempt != attempt {
            return;
        }
        let run = live.run.take();
        let env_name = live.d.environment.clone();
        self.slots.release(&env_name);
        self.touch_env(&env_name);
        let cause = run.as_ref().and_then(|r| r.cause);
        let waiters = run.map(|r| r.waiters).unwrap_or_default();
        let attempt_ms = Some(elapsed.as_millis() as u64);
        let Some(live) = self.live.get_mut(&id) else { return };
        let total_ms = live.first_started.map(|t| t.elapsed().as_millis() as u64);
        let (kind, message, outcome_name) = match (outcome, cause) {
            (_, Some(CancelCause::Shutdown)) => {
                // Interrupted by shutdown: runs again at the next start, without using a retry.
                live.d.attempt += 1;
                live.d.status = Status::Queued { enqueued_at: now };
                live.d.last_error = Some("interrupted by shutdown".into());
                let msg = "interrupted by shutdown; will run again when tds starts".to_owned();
                lock(&live.log).write(&Entry::event(Level::Warn, LogEvent::Interrupted, None, &msg));
                self.persist_interrupted(id, attempt, attempt_ms);
                return;
            }
            (Outcome::Cancelled, _) | (_, Some(CancelCause::Operator)) => {
                live.d.status = Status::Cancelled { finished_at: now, reason: "cancelled by operator".into() };
                live.d.duration_ms = total_ms;
                live.d.cancel_requested = false;
                (LogEvent::Cancelled, "cancelled; attempt stopped and rolled back".to_owned(), "cancelled")
            }
            (Outcome::Succeeded, None) => {
                live.d.status = Status::Succeeded { finished_at: now };
                live.d.duration_ms = total_ms;
                live.d.last_error = None;
                self.envs[self.env_index[&env_name]].last_result = Some(("succeeded".into(), now));
                (LogEvent::Succeeded, format!("succeeded in {elapsed:.1?}"), "succeeded")
            }
            (Outcome::Failed { reason, retryable }, None) => {
                live.d.last_error = Some(reason.clone());
                let policy = &self.envs[self.env_index[&env_name]].config.retry;
                match policy.decide(live.d.retry_count, retryable, unit) {
                    RetryDecision::RetryAfter(delay) => {
                        live.d.retry_count += 1;
                        let until = now + TimeDelta::from_std(delay).unwrap_or_default();
                        live.d.status = Status::RetryWait { until };
                        let at = Instant::now() + delay;
                        live.retry_at = Some(at);
                        let local = until.with_timezone(&Local).format("%H:%M:%S");
                        live.d.wait_reason = Some(format!("retry backoff until {local}"));
                        let msg = format!(
                            "attempt {attempt} failed: {reason}; retry {}/{} in {} (at {local})",
                            live.d.retry_count,
                            live.d.max_retries,
                            humantime::format_duration(delay)
                        );
                        self.timers.insert((at, id));
                        (LogEvent::RetryScheduled, msg, "failed")
                    }
                    RetryDecision::GiveUp => {
                        let why = if retryable { "no retries left" } else { "not retryable" };
                        live.d.status = Status::Failed { finished_at: now, reason: reason.clone() };
                        live.d.duration_ms = total_ms;
                        self.envs[self.env_index[&env_name]].last_result = Some(("failed".into(), now));
                        (LogEvent::Failed, format!("failed ({why}): {reason}"), "failed")
                    }
                }
            }
        };
        if kind == LogEvent::Cancelled {
            self.envs[self.env_index[&env_name]].last_result = Some(("cancelled".into(), now));
        }
        let level = match kind {
            LogEvent::Succeeded => Level::Info,
            LogEvent::RetryScheduled | LogEvent::Cancelled => Level::Warn,
            _ => Level::Error,
        };
        self.log(id, level, kind, &message);
        let view = self.live.get(&id).map(|l| DeploymentView::from(&l.d));
        self.commit_at(id, now, Some(message), Some((outcome_name, attempt_ms)));
        if let Some(view) = view
            && !waiters.is_empty()
        {
            self.reply_after_commit(waiters, &Ok(view));
        }
    }

    /// Persists an attempt interrupted by shutdown: the old attempt ends `interrupted` and the
    /// deployment is stored queued for its next attempt.
    fn persist_interrupted(&mut self, id: DeploymentId, old_attempt: u32, attempt_ms: Option<u64>) {
        let now = self.now();
        let Some(live) = self.live.get(&id) else { return };
        let old = AttemptRecord {
            deployment_id: id,
            attempt: old_attempt,
            queued_at: live.attempt_queued_at,
            started_at: live.attempt_started_at,
            finished_at: Some(now),
            outcome: Some("interrupted".into()),
            error: Some("interrupted by shutdown".into()),
            duration_ms: attempt_ms,
        };
        let next = AttemptRecord {
            deployment_id: id,
            attempt: live.d.attempt,
            queued_at: now,
            started_at: None,
            finished_at: None,
            outcome: None,
            error: None,
            duration_ms: None,
        };
        let transition = TransitionRecord {
            deployment_id: id,
            attempt: live.d.attempt,
            at: now,
            status: StatusKind::Queued,
            phase: None,
            message: Some("interrupted by shutdown".into()),
        };
        self.shared.logs.write_once(
            id,
            live.d.attempt,
            &Entry::event(
                Level::Info,
                LogEvent::Queued,
                None,
                "queued again after a shutdown interrupted the previous attempt",
            ),
        );
        let event = CoreEvent::Deployment(Arc::new(DeploymentView::from(&live.d)));
        self.shared.persist.send(
            vec![
                Write::Update(Box::new(live.d.clone())),
                Write::Attempt(old),
                Write::Attempt(next),
                Write::Transition(transition),
            ],
            vec![event],
        );
        self.live.remove(&id);
    }

    fn requeue_after_backoff(&mut self, id: DeploymentId) {
        let now = self.now();
        let Some(live) = self.live.get_mut(&id) else { return };
        if !matches!(live.d.status, Status::RetryWait { .. }) {
            return;
        }
        live.retry_at = None;
        live.d.attempt += 1;
        live.d.status = Status::Queued { enqueued_at: now };
        live.d.wait_reason = None;
        live.attempt_queued_at = now;
        live.attempt_started_at = None;
        match self.shared.logs.open(id, live.d.attempt) {
            Ok(log) => live.log = log,
            Err(e) => tracing::error!(%id, error = %e, "cannot open log for the next attempt"),
        }
        let message =
            format!("retry {}/{} queued as attempt {}", live.d.retry_count, live.d.max_retries, live.d.attempt);
        lock(&live.log).write(&Entry::event(Level::Info, LogEvent::Queued, None, &message));
        let priority = live.d.priority;
        let env = live.d.environment.clone();
        let entry = QueueEntry { id, priority, enqueued: Instant::now(), seq: self.next_seq() };
        if let Some(&idx) = self.env_index.get(&env) {
            self.envs[idx].queue.push(entry);
        }
        self.commit(id, Some(message), None);
        self.touch_env(&env);
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    // -----------------------------------------------------------------------------------------
    // Probes

    fn on_probe(&mut self, probe: ProbeResult) {
        let now = self.now();
        let Some(env) = self.envs.get_mut(probe.environment) else { return };
        match probe.result {
            Ok(()) => {
                env.probe_failures = 0;
                if !env.available {
                    tracing::info!(environment = %env.config.name, "environment available again");
                    env.available = true;
                    env.unavailable_since = None;
                    env.probe_error = None;
                }
            }
            Err(message) => {
                env.probe_failures += 1;
                if env.available && env.probe_failures >= env.config.probe_failures {
                    tracing::warn!(environment = %env.config.name, error = %message, "environment unavailable");
                    env.available = false;
                    env.unavailable_since = Some(now);
                }
                if !env.available {
                    env.probe_error = Some(message);
                }
            }
        }
        let name = env.config.name.clone();
        self.touch_env(&name);
    }

    // -----------------------------------------------------------------------------------------
    // Commands

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Enqueue(d) => {
                let id = d.id;
                let message = queued_message(&d);
                self.enqueue(*d);
                self.log(id, Level::Info, LogEvent::Queued, &message);
            }
            Command::Cancel { id, reply } => self.cancel(id, reply),
            Command::Retry { deployment, reply } => {
                let result = self.retry(*deployment);
                self.reply_after_commit(vec![reply], &result);
            }
            Command::SetPriority { id, priority, reply } => {
                let result = self.set_priority(id, priority);
                self.reply_after_commit(vec![reply], &result);
            }
            Command::SetPaused { environment, paused, reply } => {
                let result = self.update_env(&environment, |e| e.paused = paused);
                self.reply_after_commit(vec![reply], &result);
            }
            Command::SetLimit { environment, limit, reply } => {
                let result = if limit == 0 {
                    Err(Error::invalid("limit", "must be at least 1 (pause the environment to stop it)"))
                } else {
                    self.update_env(&environment, |e| e.limit_override = Some(limit))
                };
                self.reply_after_commit(vec![reply], &result);
            }
            Command::Shutdown { drain, reply } => {
                self.shutdown_waiters.push(reply);
                self.begin_drain(drain);
            }
            Command::Barrier(reply) => self.shared.persist.after(move || {
                let _ = reply.send(());
            }),
        }
    }

    /// Answers once the changes made so far are committed and published, so a caller that
    /// reads right after the answer sees its own change ("persisted before reported").
    fn reply_after_commit<T: Clone + Send + 'static>(&self, replies: Vec<Reply<T>>, result: &Result<T, Error>) {
        let results: Vec<Result<T, Error>> = replies
            .iter()
            .map(|_| match result {
                Ok(v) => Ok(v.clone()),
                Err(e) => Err(e.duplicate()),
            })
            .collect();
        self.shared.persist.after(move || {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        });
    }

    fn enqueue(&mut self, d: Deployment) {
        let Some(&idx) = self.env_index.get(&d.environment) else { return };
        let Status::Queued { enqueued_at } = d.status else { return };
        if self.live.contains_key(&d.id) {
            return;
        }
        let log = match self.shared.logs.open(d.id, d.attempt) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(id = %d.id, error = %e, "cannot open deployment log");
                return;
            }
        };
        let entry = QueueEntry { id: d.id, priority: d.priority, enqueued: Instant::now(), seq: self.next_seq() };
        self.envs[idx].queue.push(entry);
        let env = d.environment.clone();
        self.live.insert(
            d.id,
            Live {
                d,
                log,
                attempt_queued_at: enqueued_at,
                attempt_started_at: None,
                first_started: None,
                submitted: Instant::now(),
                run: None,
                retry_at: None,
            },
        );
        self.touch_env(&env);
    }

    fn cancel(&mut self, id: DeploymentId, reply: Reply<DeploymentView>) {
        let now = self.now();
        let Some(live) = self.live.get_mut(&id) else {
            // Not live: the handle answers from the published state (404, or 409 naming it),
            // once the deployment's last change is published, so it never reads a state the
            // engine has already left (case C02).
            self.reply_after_commit(vec![reply], &Err(Error::NotFound(id)));
            return;
        };
        let env = live.d.environment.clone();
        if let Some(run) = live.run.as_mut() {
            run.waiters.push(reply);
            if run.cause.is_none() {
                run.cause = Some(CancelCause::Operator);
                run.cancel.cancel();
                live.d.cancel_requested = true;
                self.log(id, Level::Warn, LogEvent::Cancelled, "cancel requested; stopping the attempt");
                if let Some(live) = self.live.get(&id) {
                    let event = CoreEvent::Deployment(Arc::new(DeploymentView::from(&live.d)));
                    self.shared.persist.send(vec![Write::Update(Box::new(live.d.clone()))], vec![event]);
                }
            }
            return;
        }
        // Queued or waiting for a retry: nothing runs, so it ends here and now.
        let was_waiting_to_retry = live.retry_at.is_some();
        if let Some(at) = live.retry_at.take() {
            self.timers.remove(&(at, id));
        }
        if let Some(&idx) = self.env_index.get(&env) {
            self.envs[idx].queue.remove(id);
        }
        let Some(live) = self.live.get_mut(&id) else { return };
        live.d.status = Status::Cancelled { finished_at: now, reason: "cancelled by operator".into() };
        live.d.wait_reason = None;
        live.d.duration_ms = live.first_started.map(|t| t.elapsed().as_millis() as u64);
        let view = DeploymentView::from(&live.d);
        let message = if was_waiting_to_retry { "cancelled while waiting to retry" } else { "cancelled before it ran" };
        self.log(id, Level::Warn, LogEvent::Cancelled, message);
        if let Some(&idx) = self.env_index.get(&env) {
            self.envs[idx].last_result = Some(("cancelled".into(), now));
        }
        self.commit(id, Some("cancelled by operator".into()), Some(("cancelled", None)));
        self.touch_env(&env);
        self.reply_after_commit(vec![reply], &Ok(view));
    }

    fn retry(&mut self, mut d: Deployment) -> Result<DeploymentView, Error> {
        if let Some(live) = self.live.get(&d.id) {
            return Err(Error::InvalidState { id: d.id, status: live.d.status.kind(), action: "retried" });
        }
        let kind = d.status.kind();
        if !matches!(kind, StatusKind::Failed | StatusKind::Cancelled) {
            return Err(Error::InvalidState { id: d.id, status: kind, action: "retried" });
        }
        if !self.env_index.contains_key(&d.environment) {
            return Err(Error::UnknownEnvironment(d.environment.clone()));
        }
        let now = self.now();
        d.attempt += 1;
        d.retry_count = 0;
        d.started_at = None;
        d.duration_ms = None;
        d.queue_wait_ms = None;
        d.cancel_requested = false;
        d.status = Status::Queued { enqueued_at: now };
        let id = d.id;
        let message = format!("manual retry queued as attempt {}", d.attempt);
        self.enqueue(d);
        self.log(id, Level::Info, LogEvent::Queued, &message);
        let view = self.live.get(&id).map(|l| DeploymentView::from(&l.d)).ok_or(Error::NotFound(id))?;
        self.commit(id, Some(message), None);
        Ok(view)
    }

    fn set_priority(&mut self, id: DeploymentId, priority: Priority) -> Result<DeploymentView, Error> {
        let Some(live) = self.live.get_mut(&id) else { return Err(Error::NotFound(id)) };
        let old = live.d.priority;
        live.d.priority = priority;
        let env = live.d.environment.clone();
        if let Some(&idx) = self.env_index.get(&env) {
            self.envs[idx].queue.set_priority(id, priority);
        }
        let view = DeploymentView::from(&live.d);
        let message = format!("priority {old} → {priority}");
        self.log(id, Level::Info, LogEvent::PriorityChanged, &message);
        self.commit(id, Some(message), None);
        self.touch_env(&env);
        Ok(view)
    }

    fn update_env(&mut self, name: &str, change: impl FnOnce(&mut EnvRuntime)) -> Result<EnvironmentView, Error> {
        let Some(&idx) = self.env_index.get(name) else { return Err(Error::UnknownEnvironment(name.to_owned())) };
        change(&mut self.envs[idx]);
        let env = &self.envs[idx];
        self.slots.set_limit(name, env.limit());
        let record =
            EnvironmentRecord { name: name.to_owned(), paused: env.paused, limit_override: env.limit_override };
        let view = Arc::new(self.env_view(idx));
        self.envs[idx].published = Some(Arc::clone(&view));
        self.shared.persist.send(vec![Write::Environment(record)], vec![CoreEvent::Environment(Arc::clone(&view))]);
        self.wait_dirty = true;
        Ok((*view).clone())
    }

    // -----------------------------------------------------------------------------------------
    // Shutdown

    fn begin_drain(&mut self, drain: Option<Duration>) {
        if self.drain_deadline.is_none() {
            let drain = drain.unwrap_or(self.shared.config.server.drain_timeout);
            tracing::info!(running = self.running_count(), drain = ?drain, "draining: no new deployments start");
            self.drain_deadline = Some(Instant::now() + drain);
            if drain.is_zero() {
                self.interrupt_all();
            }
        }
    }

    /// The drain time is over: stop every running attempt; each is rolled back and stored as
    /// queued for its next attempt.
    fn interrupt_all(&mut self) {
        self.interrupted = true;
        let ids: Vec<DeploymentId> = self.live.iter().filter(|(_, l)| l.run.is_some()).map(|(id, _)| *id).collect();
        for id in ids {
            let Some(run) = self.live.get_mut(&id).and_then(|l| l.run.as_mut()) else { continue };
            if run.cause.is_none() {
                run.cause = Some(CancelCause::Shutdown);
                run.cancel.cancel();
                self.log(id, Level::Warn, LogEvent::Interrupted, "shutting down: stopping this attempt");
            }
        }
    }
}

/// The first record of a submitted deployment's log.
fn queued_message(d: &Deployment) -> String {
    format!(
        "queued {} {} ({} bytes, sha256 {}) for {} at priority {} by {}",
        d.artifact.name,
        d.version,
        d.artifact.size,
        d.artifact.sha256.get(..12).unwrap_or_default(),
        d.environment,
        d.priority,
        d.requested_by
    )
}

fn reject_during_shutdown(cmd: Command) {
    match cmd {
        Command::Cancel { reply, .. } | Command::Retry { reply, .. } | Command::SetPriority { reply, .. } => {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        Command::SetPaused { reply, .. } | Command::SetLimit { reply, .. } => {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        Command::Shutdown { reply, .. } | Command::Barrier(reply) => {
            let _ = reply.send(());
        }
        Command::Enqueue(_) => {}
    }
}
