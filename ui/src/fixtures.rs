//! Deterministic deployments and environments for snapshot tests and the frame-time bench:
//! fixed ids and times, so that screens compare byte for byte.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tds_core::logs::{Level, LogEvent};
use tds_core::model::{
    ArtifactInfo, DeploymentId, DeploymentView, EnvironmentView, Phase, Priority, ReleaseRef, StatusKind, StepView,
};

/// The fixed "now" of fixtures: 2026-12-03 10:42:00 UTC.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_294_520, 0).unwrap_or_default()
}

/// A deterministic id, distinct for each `n` and ordered by it.
pub fn id(n: u64) -> DeploymentId {
    let ms = (t0().timestamp_millis() as u64).saturating_sub(86_400_000) + n * 1000;
    DeploymentId::from_ulid(ulid::Ulid::from_parts(ms, u128::from(n) * 7919))
}

/// A deployment in `status` created `n` seconds after a fixed origin.
pub fn view(n: u64, env: &str, version: &str, status: StatusKind) -> DeploymentView {
    let created_at = t0() - TimeDelta::seconds(600) + TimeDelta::seconds(n as i64 % 300);
    let finished_at = status.is_terminal().then(|| created_at + TimeDelta::seconds(42));
    DeploymentView {
        id: id(n),
        environment: env.to_owned(),
        version: version.to_owned(),
        priority: Priority::Normal,
        status,
        phase: match status {
            StatusKind::Running => Some(Phase::Steps),
            StatusKind::RollingBack => Some(Phase::Rollback),
            _ => None,
        },
        step: (status == StatusKind::Running).then(|| StepView { index: 1, total: 2, name: "install".into() }),
        progress_percent: if status == StatusKind::Running { 10 } else { 0 },
        attempt: 1,
        retry_count: 0,
        max_retries: 3,
        artifact: ArtifactInfo {
            name: format!("site-{version}.tar.gz"),
            size: 18_231,
            sha256: "ab".repeat(32),
            kind: None,
        },
        params: BTreeMap::new(),
        requested_by: "ci".into(),
        wait_reason: (status == StatusKind::Queued).then(|| format!("{env} at capacity 2/2")),
        error: (status == StatusKind::Failed).then(|| "step install exited with status 3".to_owned()),
        next_retry_at: None,
        created_at,
        started_at: (status != StatusKind::Queued).then(|| created_at + TimeDelta::seconds(2)),
        finished_at,
        duration_ms: finished_at.map(|_| 40_000),
        queue_wait_ms: (status != StatusKind::Queued).then_some(2_000),
        cancel_requested: false,
    }
}

/// A finished deployment with a given end and duration (trend tests).
pub fn finished(n: u64, status: StatusKind, at: DateTime<Utc>, duration_ms: u64) -> DeploymentView {
    let mut d = view(n, "dev", "1.0.0", status);
    d.finished_at = Some(at);
    d.duration_ms = Some(duration_ms);
    d
}

/// An environment with `running` of `limit` slots busy.
pub fn env(name: &str, running: u32, limit: u32, queued: u32) -> EnvironmentView {
    EnvironmentView {
        name: name.to_owned(),
        max_concurrent: limit,
        running,
        queued,
        free_slots: limit.saturating_sub(running),
        available: true,
        unavailable_since: None,
        probe_error: None,
        paused: false,
        current_release: Some(ReleaseRef {
            name: format!("{}-1", id(0)),
            deployment_id: id(0),
            version: "1.3.9".into(),
        }),
        last_result: Some("succeeded".into()),
        last_result_at: Some(t0() - TimeDelta::minutes(3)),
    }
}

/// A busy, realistic board: limits hit, waiting reasons, a failed deployment with retries, an
/// unavailable environment, finished history.
pub fn busy() -> (Vec<Arc<DeploymentView>>, Vec<Arc<EnvironmentView>>) {
    let mut ds = Vec::new();
    let mut push = |d: DeploymentView| ds.push(Arc::new(d));
    let mut r1 = view(1, "staging", "1.4.2", StatusKind::Running);
    r1.priority = Priority::High;
    r1.step = Some(StepView { index: 2, total: 3, name: "install".into() });
    r1.progress_percent = 55;
    push(r1);
    push(view(2, "staging", "1.4.3", StatusKind::Running));
    let mut q1 = view(3, "staging", "1.4.4", StatusKind::Queued);
    q1.priority = Priority::Critical;
    push(q1);
    let mut q2 = view(4, "staging", "1.4.5", StatusKind::Queued);
    q2.wait_reason = Some("staging at capacity 2/2, behind 1 higher-priority".into());
    push(q2);
    let mut q3 = view(5, "perf", "2.0.0-rc.1", StatusKind::Queued);
    q3.wait_reason = Some("perf unavailable since 10:31".into());
    q3.priority = Priority::Low;
    push(q3);
    let mut w = view(6, "dev", "1.5.0", StatusKind::RetryWait);
    w.attempt = 2;
    w.retry_count = 1;
    w.error = Some("step install exited with status 3".into());
    w.next_retry_at = Some(t0() + TimeDelta::seconds(8));
    w.wait_reason = Some("retry backoff until 10:42:08".into());
    push(w);
    let mut f = view(7, "dev", "1.4.0", StatusKind::Failed);
    f.attempt = 4;
    f.retry_count = 3;
    push(f);
    push(view(8, "dev", "1.3.9", StatusKind::Succeeded));
    let mut c = view(9, "perf", "1.3.8", StatusKind::Cancelled);
    c.error = Some("cancelled by dashboard".into());
    push(c);
    let mut wide = view(10, "dev", "漢字-β\u{1b}[2J", StatusKind::Queued);
    wide.wait_reason = Some("2 ahead".into());
    push(wide);
    let staging = env("staging", 2, 2, 2);
    let mut perf = env("perf", 0, 1, 1);
    perf.available = false;
    perf.unavailable_since = Some(t0() - TimeDelta::minutes(11));
    perf.probe_error = Some("probe exited with status 1".into());
    perf.free_slots = 0;
    perf.last_result = Some("cancelled".into());
    let mut dev = env("dev", 0, 3, 2);
    dev.last_result = Some("failed".into());
    let envs = vec![Arc::new(dev), Arc::new(staging), Arc::new(perf)];
    (ds, envs)
}

/// `n` deployments spread over `envs` environments with a realistic mix of statuses (bench).
pub fn many(n: u64, envs: usize) -> (Vec<Arc<DeploymentView>>, Vec<Arc<EnvironmentView>>) {
    let names: Vec<String> = (0..envs).map(|i| format!("env-{i:02}")).collect();
    let statuses = [
        StatusKind::Queued,
        StatusKind::Queued,
        StatusKind::Running,
        StatusKind::RetryWait,
        StatusKind::Succeeded,
        StatusKind::Succeeded,
        StatusKind::Failed,
        StatusKind::Cancelled,
    ];
    let ds = (0..n)
        .map(|i| {
            let env = &names[(i as usize) % envs.max(1)];
            let mut d = view(i + 1, env, &format!("1.{}.{}", i / 100, i % 100), statuses[(i % 8) as usize]);
            d.priority = Priority::from_rank(i % 4);
            Arc::new(d)
        })
        .collect();
    let es = names.iter().enumerate().map(|(i, name)| Arc::new(env(name, (i % 4) as u32, 3, 20))).collect();
    (ds, es)
}

/// The history of the failed deployment of [`busy`] (id 7): four attempts, each failed.
pub fn failed_detail() -> tds_core::DeploymentDetail {
    use tds_core::store::{AttemptRecord, TransitionRecord};
    let (ds, _) = busy();
    let d = ds
        .iter()
        .find(|d| d.id == id(7))
        .map_or_else(|| view(7, "dev", "1.4.0", StatusKind::Failed), |d| (**d).clone());
    let start = d.created_at;
    let mut transitions = vec![TransitionRecord {
        deployment_id: d.id,
        attempt: 1,
        at: start,
        status: StatusKind::Queued,
        phase: None,
        message: Some("submitted by ci".into()),
    }];
    let mut attempts = Vec::new();
    for a in 1..=4u32 {
        let t = start + TimeDelta::seconds(i64::from(a) * 10);
        for (k, (status, phase)) in [
            (StatusKind::Running, Some(Phase::Prepare)),
            (StatusKind::Running, Some(Phase::Steps)),
            (StatusKind::RollingBack, Some(Phase::Rollback)),
        ]
        .into_iter()
        .enumerate()
        {
            transitions.push(TransitionRecord {
                deployment_id: d.id,
                attempt: a,
                at: t + TimeDelta::seconds(k as i64 * 2),
                status,
                phase,
                message: None,
            });
        }
        let end = if a < 4 { StatusKind::RetryWait } else { StatusKind::Failed };
        transitions.push(TransitionRecord {
            deployment_id: d.id,
            attempt: a,
            at: t + TimeDelta::seconds(7),
            status: end,
            phase: None,
            message: Some(format!("attempt {a} failed: step install exited with status 3")),
        });
        attempts.push(AttemptRecord {
            deployment_id: d.id,
            attempt: a,
            queued_at: t - TimeDelta::seconds(1),
            started_at: Some(t),
            finished_at: Some(t + TimeDelta::seconds(7)),
            outcome: Some("failed".into()),
            error: Some("step install exited with status 3".into()),
            duration_ms: Some(7000),
        });
    }
    tds_core::DeploymentDetail { deployment: d, attempts, transitions }
}

/// Log lines of a running deployment, with hostile and wide content (case C07).
pub fn log_lines() -> Vec<crate::logtail::LogLine> {
    use tds_core::logs::{LogRecord, Stream};
    let rec = |seq: u64, event: LogEvent, stream: Option<Stream>, message: &str| LogRecord {
        ts: t0() - TimeDelta::seconds(30) + TimeDelta::seconds(seq as i64),
        seq,
        attempt: 1,
        level: if stream == Some(Stream::Stderr) { Level::Warn } else { Level::Info },
        event,
        phase: Some(Phase::Steps),
        step: Some("install".into()),
        stream,
        message: message.into(),
        split: false,
    };
    [
        rec(0, LogEvent::PhaseStarted, None, "steps started"),
        rec(1, LogEvent::Output, Some(Stream::Stdout), "installing 1.4.2 into releases/…"),
        rec(2, LogEvent::Output, Some(Stream::Stdout), "\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{1b}[31mred\u{1b}[0m [YELLOW] x"),
        rec(3, LogEvent::Output, Some(Stream::Stdout), "\u{1b}[?1049l\u{1b}]52;c;cHduZWQ=\u{7}\rOVER"),
        rec(4, LogEvent::Output, Some(Stream::Stderr), "\u{9b}31mC1 warning: 漢字 wide, e\u{301} combining, 👨‍👩‍👧 emoji"),
        rec(5, LogEvent::Output, Some(Stream::Stdout), "col1\tcol2\tcol3"),
        rec(6, LogEvent::StepFinished, None, "install exited with status 0 in 4.1s"),
    ]
    .iter()
    .map(crate::logtail::line_of)
    .collect()
}
