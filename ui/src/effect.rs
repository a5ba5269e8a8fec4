//! Carrying out [`Effect`]s: calls into the orchestrator and reads of the disk, each in its own
//! task so the dashboard never waits on them (a cancel of a running deployment returns only
//! after its rollback). Each outcome comes back to the loop as an [`Action`].

use std::path::PathBuf;

use tds_core::metrics::TrendMetric;
use tds_core::model::StatusKind;
use tds_core::store::HistoryQuery;
use tds_core::{ArtifactSource, OrchestratorHandle, SubmitRequest};
use tokio::sync::mpsc::UnboundedSender;

use crate::action::{Action, Effect, Submission};
use crate::paths;
use crate::trends::{CoreTrends, TrendWindow};

/// Finished deployments read per history page.
pub const HISTORY_PAGE: u32 = 200;

/// Starts `effect`; its answer is sent on `tx`.
pub fn spawn(handle: &OrchestratorHandle, effect: Effect, tx: &UnboundedSender<Action>) {
    let handle = handle.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let action = run(&handle, effect).await;
        let _ = tx.send(action);
    });
}

fn short(id: tds_core::model::DeploymentId) -> String {
    id.short()
}

/// Carries out one effect and says how it went.
pub async fn run(handle: &OrchestratorHandle, effect: Effect) -> Action {
    match effect {
        Effect::Cancel(id) => match handle.cancel(id).await {
            Ok(d) => {
                Action::Done(format!("{} {}", short(id), if d.is_terminal() { "cancelled" } else { "cancelling" }))
            }
            Err(e) => Action::Failed(format!("cannot cancel {}: {e}", short(id))),
        },
        Effect::Retry(id) => match handle.retry(id).await {
            Ok(d) => Action::Done(format!("{} queued again (attempt {})", short(id), d.attempt)),
            Err(e) => Action::Failed(format!("cannot retry {}: {e}", short(id))),
        },
        Effect::SetPriority(id, p) => match handle.set_priority(id, p).await {
            Ok(d) => Action::Done(format!("{} priority is now {}", short(id), d.priority)),
            Err(e) => Action::Failed(format!("cannot change the priority of {}: {e}", short(id))),
        },
        Effect::SetPaused { environment, paused } => match handle.set_paused(&environment, paused).await {
            Ok(e) => {
                Action::Done(format!("{} {}", e.name, if e.paused { "paused: nothing new starts" } else { "resumed" }))
            }
            Err(e) => Action::Failed(format!("cannot pause/resume {environment}: {e}")),
        },
        Effect::SetLimit { environment, limit } => match handle.set_limit(&environment, limit).await {
            Ok(e) => Action::Done(format!("{} limit is now {}", e.name, e.max_concurrent)),
            Err(e) => Action::Failed(format!("cannot set the limit of {environment}: {e}")),
        },
        Effect::Submit(submission) => Action::Submitted(submit(handle, *submission).await.map(Box::new)),
        Effect::LoadDetail(id) => {
            Action::DetailLoaded(id, handle.detail(id).await.map(Box::new).map_err(|e| e.to_string()))
        }
        Effect::LoadHistory { before } => {
            let query = HistoryQuery {
                limit: HISTORY_PAGE,
                offset: 0,
                statuses: vec![StatusKind::Succeeded, StatusKind::Failed, StatusKind::Cancelled],
                environment: None,
                from: None,
                to: before,
                before: None,
            };
            Action::HistoryPage(handle.history(query).await.map(Box::new).map_err(|e| e.to_string()))
        }
        Effect::LoadMetrics => {
            let figures = tokio::try_join!(handle.metrics(), handle.performance(None, None, None));
            Action::MetricsLoaded(figures.map(Box::new).map_err(|e| e.to_string()))
        }
        Effect::LoadTrends(window) => Action::TrendsLoaded(load_trends(handle, window).await),
        Effect::CheckPath(input) => {
            let checked = tokio::task::spawn_blocking(move || {
                let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
                paths::check(&input, &cwd, paths::home().as_deref())
            })
            .await;
            match checked {
                Ok(check) => Action::PathChecked(check),
                Err(e) => Action::Failed(format!("cannot check the path: {e}")),
            }
        }
    }
}

async fn load_trends(handle: &OrchestratorHandle, window: TrendWindow) -> Result<Box<CoreTrends>, String> {
    let to = handle.now();
    let from = Some(to - window.span());
    let period = window.period();
    let get = |metric| handle.trends(metric, period, from, Some(to), None);
    let (deployments, success_rate, duration) =
        tokio::try_join!(get(TrendMetric::Deployments), get(TrendMetric::SuccessRate), get(TrendMetric::Duration))
            .map_err(|e| e.to_string())?;
    Ok(Box::new(CoreTrends { window, deployments, success_rate, duration }))
}

async fn submit(handle: &OrchestratorHandle, s: Submission) -> Result<tds_core::model::DeploymentView, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the working folder: {e}"))?;
    let path = paths::expand(&s.path.to_string_lossy(), &cwd, paths::home().as_deref());
    let limit = handle.config().defaults.max_artifact_size;
    let meta = tokio::fs::metadata(&path).await.map_err(|e| format!("artifact {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("artifact {}: not a regular file", path.display()));
    }
    if meta.len() > limit {
        return Err(format!("artifact is {} bytes; the limit is {limit} (defaults.max_artifact_size)", meta.len()));
    }
    let bytes = tokio::fs::read(&path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path.file_name().map_or_else(|| "artifact".to_owned(), |n| n.to_string_lossy().into_owned());
    let request = SubmitRequest {
        environment: s.environment,
        artifact: ArtifactSource::Bytes { name, bytes },
        version: s.version,
        priority: s.priority,
        params: s.params,
        requested_by: "dashboard".into(),
        idempotency_key: None,
    };
    handle.submit(request).await.map(|s| s.deployment).map_err(|e| e.to_string())
}
