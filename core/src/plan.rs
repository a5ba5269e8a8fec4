//! One attempt of a deployment: the fixed plan `prepare → steps → activate → verify → finalize`,
//! and the rollback that undoes it on failure or cancel.
//!
//! An attempt runs in its own task while the engine holds its slot. It reports phase and step
//! changes as it goes and ends with exactly one `Outcome`; it never touches scheduler state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::artifact::{self, UnpackLimits};
use crate::config::{EnvironmentConfig, StepConfig};
use crate::executor::{StepCommand, StepEnd, run_step};
use crate::logs::{Entry, Level, LogEvent, SharedLog, lock};
use crate::model::{Deployment, DeploymentId, Phase, StepRef};
use crate::release::{Releases, Restored, release_name};
use crate::store::ReleaseRecord;

/// How often failing `verify` checks are re-run until `verify_timeout`.
const VERIFY_INTERVAL: Duration = Duration::from_secs(1);

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    /// Rolled back; `retryable` is false when retrying cannot help (a bad artifact).
    Failed {
        reason: String,
        retryable: bool,
    },
    /// Stopped by a cancel (operator or shutdown) and rolled back.
    Cancelled,
}

/// A phase or step change, reported to the engine.
#[derive(Debug, Clone)]
pub(crate) enum Progress {
    Phase(Phase),
    Step(StepRef),
    RollingBack,
}

/// Messages from attempt tasks to the engine.
#[derive(Debug)]
pub(crate) enum AttemptMsg {
    Progress { id: DeploymentId, attempt: u32, progress: Progress },
    Done { id: DeploymentId, attempt: u32, outcome: Outcome, elapsed: Duration },
}

/// Everything an attempt needs; built by the engine when it takes the slot.
#[derive(Debug)]
pub(crate) struct AttemptJob {
    pub deployment: Deployment,
    pub env: Arc<EnvironmentConfig>,
    pub artifact_path: PathBuf,
    pub limits: UnpackLimits,
    pub kill_grace: Duration,
    pub log: SharedLog,
    pub cancel: CancellationToken,
    pub releases: Arc<Releases>,
    pub events: mpsc::UnboundedSender<AttemptMsg>,
    /// Recovery after a restart: only roll back what the interrupted attempt left, then end
    /// with this outcome.
    pub recover: Option<Outcome>,
}

impl AttemptJob {
    fn name(&self) -> String {
        release_name(self.deployment.id, self.deployment.attempt)
    }

    fn release_dir(&self) -> PathBuf {
        self.env.releases_dir().join(self.name())
    }

    fn progress(&self, progress: Progress) {
        let _ = self.events.send(AttemptMsg::Progress {
            id: self.deployment.id,
            attempt: self.deployment.attempt,
            progress,
        });
    }

    fn log(&self, level: Level, event: LogEvent, phase: Phase, message: &str) {
        lock(&self.log).write(&Entry::event(level, event, Some(phase), message));
    }

    /// The `TDS_*` variables: the only way request data reaches a command (case C17).
    fn variables(&self, phase: Phase) -> Vec<(String, String)> {
        let d = &self.deployment;
        let mut vars = vec![
            ("TDS_DEPLOYMENT_ID".to_owned(), d.id.to_string()),
            ("TDS_ENVIRONMENT".to_owned(), d.environment.clone()),
            ("TDS_VERSION".to_owned(), d.version.clone()),
            ("TDS_PRIORITY".to_owned(), d.priority.to_string()),
            ("TDS_ATTEMPT".to_owned(), d.attempt.to_string()),
            ("TDS_RELEASE_NAME".to_owned(), self.name()),
            ("TDS_RELEASE_DIR".to_owned(), self.release_dir().to_string_lossy().into_owned()),
            ("TDS_ENV_ROOT".to_owned(), self.env.root.to_string_lossy().into_owned()),
            ("TDS_CURRENT".to_owned(), self.env.current_link().to_string_lossy().into_owned()),
            ("TDS_ARTIFACT_NAME".to_owned(), d.artifact.name.clone()),
            ("TDS_ARTIFACT_SHA256".to_owned(), d.artifact.sha256.clone()),
            ("TDS_REQUESTED_BY".to_owned(), d.requested_by.clone()),
            ("TDS_PHASE".to_owned(), phase.to_string()),
        ];
        for (k, v) in &d.params {
            vars.push((format!("TDS_PARAM_{}", k.to_ascii_uppercase()), v.clone()));
        }
        vars
    }

    async fn run_command(&self, step: &StepConfig, phase: Phase, cancel: &CancellationToken) -> StepEnd {
        let dir = self.release_dir();
        let cwd = if dir.is_dir() { dir } else { self.env.root.clone() };
        let vars = self.variables(phase);
        let cmd = StepCommand { name: &step.name, run: &step.run, cwd: &cwd, env: &vars, timeout: step.timeout, phase };
        lock(&self.log).write(&Entry {
            level: Level::Info,
            event: LogEvent::StepStarted,
            phase: Some(phase),
            step: Some(&step.name),
            stream: None,
            message: &format!("$ {}", step.run),
            split: false,
        });
        let started = Instant::now();
        let end = run_step(&cmd, &self.log, cancel, self.kill_grace).await;
        let level = if end.is_success() { Level::Info } else { Level::Error };
        let message = format!("{} in {:.1?}", end.describe(&step.name), started.elapsed());
        lock(&self.log).write(&Entry {
            level,
            event: LogEvent::StepFinished,
            phase: Some(phase),
            step: Some(&step.name),
            stream: None,
            message: &message,
            split: false,
        });
        end
    }
}

/// Runs the attempt to its end, rolling back on failure or cancel, and reports the outcome.
pub(crate) async fn run(job: AttemptJob) {
    let started = Instant::now();
    // The log stays open while the attempt writes to it, and no longer (see `AttemptLog`).
    lock(&job.log).keep_open(true);
    let outcome = match job.recover.clone() {
        Some(outcome) => {
            let id = job.deployment.id.to_string();
            let killed = crate::executor::kill_orphans(&id, job.deployment.attempt, job.kill_grace).await;
            if !killed.is_empty() {
                let groups: Vec<String> = killed.iter().map(ToString::to_string).collect();
                job.log(
                    Level::Warn,
                    LogEvent::Signal,
                    Phase::Rollback,
                    &format!("terminated process group(s) {} left by the interrupted attempt", groups.join(", ")),
                );
            }
            roll_back(&job).await;
            outcome
        }
        None => match execute(&job).await {
            Ok(()) => Outcome::Succeeded,
            Err(failure) => {
                job.progress(Progress::RollingBack);
                roll_back(&job).await;
                if job.cancel.is_cancelled() { Outcome::Cancelled } else { failure }
            }
        },
    };
    lock(&job.log).keep_open(false);
    let _ = job.events.send(AttemptMsg::Done {
        id: job.deployment.id,
        attempt: job.deployment.attempt,
        outcome,
        elapsed: started.elapsed(),
    });
}

async fn phase<T>(
    job: &AttemptJob,
    phase: Phase,
    work: impl Future<Output = Result<T, Outcome>>,
) -> Result<T, Outcome> {
    if job.cancel.is_cancelled() {
        return Err(Outcome::Cancelled);
    }
    job.progress(Progress::Phase(phase));
    job.log(Level::Info, LogEvent::PhaseStarted, phase, &format!("{phase} started"));
    let started = Instant::now();
    let result = work.await;
    match &result {
        Ok(_) => job.log(
            Level::Info,
            LogEvent::PhaseFinished,
            phase,
            &format!("{phase} finished in {:.1?}", started.elapsed()),
        ),
        Err(Outcome::Failed { reason, .. }) => {
            job.log(Level::Error, LogEvent::PhaseFinished, phase, &format!("{phase} failed: {reason}"));
        }
        Err(_) => job.log(Level::Warn, LogEvent::PhaseFinished, phase, &format!("{phase} cancelled")),
    }
    result
}

/// `1 file`, `2 files`.
fn plural(n: u64, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

fn failed(reason: impl Into<String>) -> Outcome {
    Outcome::Failed { reason: reason.into(), retryable: true }
}

fn step_failure(end: &StepEnd, what: &str) -> Outcome {
    match end {
        StepEnd::Cancelled => Outcome::Cancelled,
        other => failed(other.describe(what)),
    }
}

async fn execute(job: &AttemptJob) -> Result<(), Outcome> {
    phase(job, Phase::Prepare, async {
        if !job.artifact_path.is_file() {
            return Err(Outcome::Failed {
                reason: format!(
                    "prepare: artifact {} ({}) is no longer stored (removed after storage.artifact_retention); submit it again",
                    job.deployment.artifact.name,
                    job.deployment.artifact.sha256.get(..12).unwrap_or_default()
                ),
                retryable: false,
            });
        }
        let (src, info, dest, limits) =
            (job.artifact_path.clone(), job.deployment.artifact.clone(), job.release_dir(), job.limits);
        let result = tokio::task::spawn_blocking(move || artifact::unpack(&src, &info, &dest, limits)).await;
        match result {
            Ok(Ok(stats)) => {
                job.log(
                    Level::Info,
                    LogEvent::Action,
                    Phase::Prepare,
                    &format!(
                        "unpacked {}, {}, {} ({} bytes) into releases/{}",
                        plural(stats.files, "file"),
                        plural(stats.dirs, "folder"),
                        plural(stats.links, "link"),
                        stats.bytes,
                        job.name()
                    ),
                );
                Ok(())
            }
            Ok(Err(e)) => Err(Outcome::Failed { reason: format!("prepare: {e}"), retryable: e.is_retryable() }),
            Err(e) => Err(failed(format!("prepare: unpack task failed: {e}"))),
        }
    })
    .await?;

    let total = job.env.steps.len() as u32;
    phase(job, Phase::Steps, async {
        for (i, step) in job.env.steps.iter().enumerate() {
            if job.cancel.is_cancelled() {
                return Err(Outcome::Cancelled);
            }
            job.progress(Progress::Step(StepRef { index: i as u32 + 1, total, name: step.name.clone() }));
            let end = job.run_command(step, Phase::Steps, &job.cancel).await;
            if !end.is_success() {
                return Err(step_failure(&end, &format!("step '{}'", step.name)));
            }
        }
        Ok(())
    })
    .await?;

    phase(job, Phase::Activate, async {
        let (releases, env, name) = (Arc::clone(&job.releases), Arc::clone(&job.env), job.name());
        match tokio::task::spawn_blocking(move || releases.activate(&env, &name)).await {
            Ok(Ok(previous)) => {
                let from = previous.map_or_else(|| "nothing".to_owned(), |p| format!("releases/{p}"));
                job.log(
                    Level::Info,
                    LogEvent::Action,
                    Phase::Activate,
                    &format!("current → releases/{} (was {from})", job.name()),
                );
                Ok(())
            }
            Ok(Err(e)) => Err(failed(format!("activate: cannot switch current: {e}"))),
            Err(e) => Err(failed(format!("activate: task failed: {e}"))),
        }
    })
    .await?;

    phase(job, Phase::Verify, verify(job)).await?;

    phase(job, Phase::Finalize, async {
        let record = ReleaseRecord {
            environment: job.env.name.clone(),
            name: job.name(),
            deployment_id: job.deployment.id,
            attempt: job.deployment.attempt,
            version: job.deployment.version.clone(),
            succeeded_at: chrono::Utc::now(),
        };
        let (releases, env) = (Arc::clone(&job.releases), Arc::clone(&job.env));
        let pruned = tokio::task::spawn_blocking(move || {
            releases.record_success(&env, record);
            releases.prune(&env)
        })
        .await;
        match pruned {
            Ok(Ok(names)) if !names.is_empty() => job.log(
                Level::Info,
                LogEvent::Action,
                Phase::Finalize,
                &format!("pruned {} old release(s): {}", names.len(), names.join(", ")),
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                job.log(Level::Warn, LogEvent::Action, Phase::Finalize, &format!("pruning failed (kept going): {e}"));
            }
            Err(e) => job.log(Level::Warn, LogEvent::Action, Phase::Finalize, &format!("pruning task failed: {e}")),
        }
        Ok(())
    })
    .await
}

/// Runs every check; re-runs the failing ones every second until all pass or the deadline.
async fn verify(job: &AttemptJob) -> Result<(), Outcome> {
    let deadline = Instant::now() + job.env.verify_timeout;
    let mut pending: Vec<&StepConfig> = job.env.verify.iter().collect();
    let mut round = 1;
    loop {
        let mut still = Vec::new();
        let mut last = None;
        for check in pending {
            let end = job.run_command(check, Phase::Verify, &job.cancel).await;
            if end == StepEnd::Cancelled {
                return Err(Outcome::Cancelled);
            }
            if !end.is_success() {
                last = Some(end.describe(&format!("check '{}'", check.name)));
                still.push(check);
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() + VERIFY_INTERVAL > deadline {
            let why = last.unwrap_or_default();
            return Err(failed(format!(
                "verify: {why} (still failing after {round} round(s), {})",
                humantime::format_duration(job.env.verify_timeout)
            )));
        }
        job.log(
            Level::Warn,
            LogEvent::Action,
            Phase::Verify,
            &format!("{} check(s) failing; retrying in 1s", still.len()),
        );
        tokio::select! {
            () = tokio::time::sleep(VERIFY_INTERVAL) => {}
            () = job.cancel.cancelled() => return Err(Outcome::Cancelled),
        }
        pending = still;
        round += 1;
    }
}

/// Undoes the attempt: `current` back to the last good release if it points at this one, the
/// release folder removed, then the `on_rollback` commands. Runs to its end even when the
/// attempt was cancelled.
async fn roll_back(job: &AttemptJob) {
    job.log(Level::Warn, LogEvent::PhaseStarted, Phase::Rollback, "rollback started");
    let (releases, env, name) = (Arc::clone(&job.releases), Arc::clone(&job.env), job.name());
    let result = tokio::task::spawn_blocking(move || releases.roll_back(&env, &name)).await;
    let message = match result {
        Ok(Ok(Restored::Untouched)) => format!("current untouched; removed releases/{}", job.name()),
        Ok(Ok(Restored::SwitchedTo(prev))) => {
            format!("current → releases/{prev} (restored); removed releases/{}", job.name())
        }
        Ok(Ok(Restored::Removed)) => {
            format!("no earlier successful release: current removed; removed releases/{}", job.name())
        }
        Ok(Err(e)) => format!("rollback of the release folder failed: {e}"),
        Err(e) => format!("rollback task failed: {e}"),
    };
    job.log(Level::Warn, LogEvent::Action, Phase::Rollback, &message);
    // on_rollback gets its own token: the attempt's cancel must not cut the clean-up short.
    let token = CancellationToken::new();
    for step in &job.env.on_rollback {
        let end = job.run_command(step, Phase::Rollback, &token).await;
        if !end.is_success() {
            job.log(
                Level::Warn,
                LogEvent::Action,
                Phase::Rollback,
                &end.describe(&format!("on_rollback '{}'", step.name)),
            );
        }
    }
    job.log(Level::Warn, LogEvent::RolledBack, Phase::Rollback, "rolled back");
}
