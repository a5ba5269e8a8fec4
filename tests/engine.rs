//! The engine through `OrchestratorHandle`, for real: deploy, fail and roll back, retry with
//! backoff, cancel (killing process groups), limits, priorities, recovery after a crash.

use std::collections::BTreeMap;
use std::time::Duration;

use tds_core::model::{Priority, StatusKind};

use crate::common::{Harness, site, wait_for};

const WEB: &str = r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
steps = [{ name = "install", run = "echo installing $TDS_VERSION; cat VERSION; echo to-stderr >&2; test -z \"$TDS_PARAM_FAIL\"" }]
verify = [{ name = "smoke", run = "test -f \"$TDS_RELEASE_DIR/index.html\"" }]
"#;

fn fail() -> BTreeMap<String, String> {
    BTreeMap::from([("FAIL".to_owned(), "1".to_owned())])
}

fn releases(h: &Harness, env: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(h.root(env).join("releases"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn deploys_a_tar_gz_into_current() {
    let h = Harness::start(WEB).await;
    let d = h.submit("web", "site.tar.gz", site("1.0.0"), "1.0.0").await;
    assert_eq!(d.status, StatusKind::Queued);
    let done = h.wait_terminal(d.id, Duration::from_secs(20)).await;
    assert_eq!(done.status, StatusKind::Succeeded, "{done:?}");
    let current = h.root("web").join("current");
    assert_eq!(std::fs::read_to_string(current.join("VERSION")).unwrap(), "1.0.0");
    assert!(current.join("index.html").is_file());
    assert_eq!(std::fs::read_link(&current).unwrap(), std::path::Path::new("releases").join(format!("{}-1", d.id)));
    let log = h.log_text(d.id, 1).join("\n");
    assert!(log.contains("stdout install | installing 1.0.0"), "{log}");
    assert!(log.contains("stderr install | to-stderr"), "{log}");
    for phase in ["[prepare]", "[steps]", "[activate]", "[verify]", "[finalize]"] {
        assert!(log.contains(phase), "missing {phase} in {log}");
    }
    assert!(log.contains("== succeeded"), "{log}");
    assert!(done.duration_ms.is_some() && done.finished_at.is_some() && done.started_at.is_some());
}

/// A failing step is rolled back after every attempt, retried with the configured backoff
/// (200 ms, 400 ms, 800 ms in the test config), and ends `failed` with `current` still on the
/// previous good release and no failed release folder left behind.
#[tokio::test]
async fn failing_step_rolls_back_retries_with_backoff_then_fails() {
    let h = Harness::start(WEB).await;
    let good = h.submit("web", "site.tar.gz", site("1.0.0"), "1.0.0").await;
    assert_eq!(h.wait_terminal(good.id, Duration::from_secs(20)).await.status, StatusKind::Succeeded);

    let bad = h.submit_with("web", "site.tar.gz", site("2.0.0"), "2.0.0", Priority::Normal, fail()).await;
    let done = h.wait_terminal(bad.id, Duration::from_secs(30)).await;
    assert_eq!(done.status, StatusKind::Failed, "{done:?}");
    assert_eq!(done.attempt, 4, "1 attempt + 3 retries");
    assert_eq!(done.retry_count, 3);
    assert!(done.error.as_deref().unwrap_or("").contains("step 'install' exited with status 1"), "{done:?}");

    let current = h.root("web").join("current");
    assert_eq!(std::fs::read_to_string(current.join("VERSION")).unwrap(), "1.0.0");
    assert_eq!(releases(&h, "web"), [format!("{}-1", good.id)], "failed releases must be removed");

    let detail = h.handle.detail(bad.id).await.unwrap();
    assert_eq!(detail.attempts.len(), 4);
    let delays: Vec<i64> = detail
        .attempts
        .windows(2)
        .map(|w| (w[1].started_at.unwrap() - w[0].finished_at.unwrap()).num_milliseconds())
        .collect();
    for (delay, expected) in delays.iter().zip([200, 400, 800]) {
        assert!(*delay >= expected - 20, "delays {delays:?} shorter than the policy");
        assert!(*delay < expected + 1500, "delays {delays:?} much longer than the policy");
    }
    for attempt in 1..=4 {
        let log = h.log_text(bad.id, attempt).join("\n");
        assert!(log.contains("== rolled_back"), "attempt {attempt} not rolled back: {log}");
    }
    assert!(h.log_text(bad.id, 4).join("\n").contains("no retries left"));
}

/// Cancelling a running step kills its whole process group, background children included,
/// and rolls the attempt back.
#[tokio::test]
async fn cancel_of_a_running_sleep_kills_its_process_group() {
    let h = Harness::start(
        r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
steps = [{ name = "hang", run = "sleep 120 & echo $! > {dir}/child.pid; echo $$ > {dir}/shell.pid; sleep 120; touch {dir}/leak" }]
"#,
    )
    .await;
    let d = h.submit("web", "site.tar.gz", site("1"), "1").await;
    let dir = h.dir.path().to_owned();
    let pids: Vec<i32> = wait_for(Duration::from_secs(10), "the step to record its pids", || {
        let dir = dir.clone();
        async move {
            let read = |n: &str| std::fs::read_to_string(dir.join(n)).ok()?.trim().parse::<i32>().ok();
            Some(vec![read("shell.pid")?, read("child.pid")?])
        }
    })
    .await;
    let cancelled = h.handle.cancel(d.id).await.expect("cancel");
    assert_eq!(cancelled.status, StatusKind::Cancelled);
    assert!(cancelled.finished_at.is_some());
    for pid in pids {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ");
        assert!(!alive, "process {pid} survived the cancel");
    }
    assert!(!dir.join("leak").exists());
    assert!(releases(&h, "web").is_empty(), "the cancelled release folder must be removed");
    let log = h.log_text(d.id, 1).join("\n");
    assert!(log.contains("sending SIGTERM to process group"), "{log}");
    // Cancel is final: no further attempt appears.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.handle.deployment(d.id).await.unwrap().attempt, 1);
}

/// Case C01: with a limit of 1, ten submissions at once never overlap (checked from the steps'
/// own records), all succeed, none is lost.
#[tokio::test]
async fn c01_limit_holds_when_deployments_start_at_the_same_instant() {
    let h = Harness::start(
        r#"
[[environments]]
name = "one"
root = "{dir}/envs/one"
max_concurrent = 1
steps = [{ name = "record", run = "echo \"$TDS_DEPLOYMENT_ID start $(date +%s%N)\" >> {dir}/trace; sleep 0.2; echo \"$TDS_DEPLOYMENT_ID end $(date +%s%N)\" >> {dir}/trace" }]
"#,
    )
    .await;
    let submits = (0..10).map(|i| {
        let h = &h;
        async move { h.submit("one", "a.txt", format!("artifact {i}").into_bytes(), &i.to_string()).await }
    });
    let ids: Vec<_> = futures::future::join_all(submits).await.into_iter().map(|d| d.id).collect();
    for id in &ids {
        assert_eq!(h.wait_terminal(*id, Duration::from_secs(60)).await.status, StatusKind::Succeeded);
    }
    let trace = std::fs::read_to_string(h.dir.path().join("trace")).unwrap();
    let mut running = 0;
    for line in trace.lines() {
        if line.contains(" start ") {
            running += 1;
            assert!(running <= 1, "two steps overlapped:\n{trace}");
        } else {
            running -= 1;
        }
    }
    assert_eq!(trace.lines().count(), 20, "{trace}");
}

/// Higher priority starts first; FIFO within a level.
#[tokio::test]
async fn priority_order_then_fifo() {
    let h = Harness::start(
        r#"
[[environments]]
name = "one"
root = "{dir}/envs/one"
max_concurrent = 1
steps = [{ name = "record", run = "echo $TDS_VERSION >> {dir}/order; test \"$TDS_VERSION\" != blocker || sleep 1" }]
"#,
    )
    .await;
    let blocker = h.submit("one", "a.txt", b"x".to_vec(), "blocker").await;
    h.wait_status(blocker.id, StatusKind::Running, Duration::from_secs(10)).await;
    let plan = [
        ("low-1", Priority::Low),
        ("normal-1", Priority::Normal),
        ("critical-1", Priority::Critical),
        ("high-1", Priority::High),
        ("normal-2", Priority::Normal),
        ("critical-2", Priority::Critical),
    ];
    let mut ids = Vec::new();
    for (v, p) in plan {
        ids.push(h.submit_with("one", "a.txt", v.as_bytes().to_vec(), v, p, BTreeMap::new()).await.id);
    }
    // While the blocker runs, the waiting ones say why.
    let waiting = h.handle.deployment(ids[0]).await.unwrap();
    assert_eq!(waiting.status, StatusKind::Queued);
    let reason = wait_for(Duration::from_secs(5), "a wait reason", || {
        let handle = h.handle.clone();
        let id = ids[0];
        async move { handle.deployment(id).await.ok()?.wait_reason }
    })
    .await;
    assert!(reason.contains("one at capacity 1/1"), "{reason}");
    for id in &ids {
        h.wait_terminal(*id, Duration::from_secs(30)).await;
    }
    let order = std::fs::read_to_string(h.dir.path().join("order")).unwrap();
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(order, ["blocker", "critical-1", "critical-2", "high-1", "normal-1", "normal-2", "low-1"]);
}

/// Case C02 (a): a cancel during the backoff is final: no later attempt, no new log lines.
#[tokio::test]
async fn c02_cancel_during_backoff_is_final() {
    let h = Harness::start(
        &WEB.replace("[[environments]]", "[[environments]]\nretry = { max_retries = 3, initial_delay = \"1s\" }"),
    )
    .await;
    let d = h.submit_with("web", "site.tar.gz", site("2"), "2", Priority::Normal, fail()).await;
    h.wait_status(d.id, StatusKind::RetryWait, Duration::from_secs(20)).await;
    let cancelled = h.handle.cancel(d.id).await.expect("cancel");
    assert_eq!(cancelled.status, StatusKind::Cancelled);
    let lines = h.log_text(d.id, 1).len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = h.handle.deployment(d.id).await.unwrap();
    assert_eq!((after.status, after.attempt), (StatusKind::Cancelled, 1));
    assert_eq!(h.log_text(d.id, 1).len(), lines, "no new log lines after cancel");
    assert!(h.handle.log_attempts(d.id) == [1]);
    // A second cancel is a clear conflict, naming the state.
    let err = h.handle.cancel(d.id).await.unwrap_err();
    assert!(err.to_string().contains("is cancelled"), "{err}");
}

/// Manual retry of a failed deployment queues a new attempt at once, with a fresh retry budget.
#[tokio::test]
async fn manual_retry_of_a_failed_deployment() {
    let h = Harness::start(
        r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
retry = { max_retries = 0 }
steps = [{ name = "check", run = "test -f {dir}/fixed" }]
"#,
    )
    .await;
    let d = h.submit("web", "a.txt", b"x".to_vec(), "1").await;
    let failed = h.wait_terminal(d.id, Duration::from_secs(20)).await;
    assert_eq!((failed.status, failed.attempt), (StatusKind::Failed, 1));
    std::fs::write(h.dir.path().join("fixed"), "").unwrap();
    let retried = h.handle.retry(d.id).await.expect("retry");
    assert_eq!((retried.status, retried.attempt, retried.retry_count), (StatusKind::Queued, 2, 0));
    let done = h.wait_terminal(d.id, Duration::from_secs(20)).await;
    assert_eq!(done.status, StatusKind::Succeeded, "{done:?}\n{}", h.log_text(d.id, 2).join("\n"));
    // Retrying a succeeded one is refused, naming the state.
    assert!(h.handle.retry(d.id).await.unwrap_err().to_string().contains("succeeded"));
}

/// Case C09: the previous release folder was deleted by hand. A failing v3 (it fails in
/// `verify`, after `current` moved) goes back to the newest *existing* good release; a manual
/// rollback with no existing earlier release is refused and leaves `current` as it is.
#[tokio::test]
async fn c09_rollback_target_deleted_by_hand() {
    let h = Harness::start(
        r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
verify_timeout = "1s"
retry = { max_retries = 0 }
verify = [{ name = "smoke", run = "test -z \"$TDS_PARAM_FAIL\"" }]
"#,
    )
    .await;
    let mut ids = Vec::new();
    for v in ["v1", "v2"] {
        let d = h.submit("web", "site.tar.gz", site(v), v).await;
        assert_eq!(h.wait_terminal(d.id, Duration::from_secs(20)).await.status, StatusKind::Succeeded);
        ids.push(d.id);
    }
    std::fs::remove_dir_all(h.root("web").join("releases").join(format!("{}-1", ids[0]))).unwrap();
    let current = h.root("web").join("current");
    let bad = h.submit_with("web", "site.tar.gz", site("v3"), "v3", Priority::Normal, fail()).await;
    let done = h.wait_terminal(bad.id, Duration::from_secs(30)).await;
    assert_eq!(done.status, StatusKind::Failed);
    assert!(h.log_text(bad.id, 1).join("\n").contains("current → releases/"), "v3 was activated before verify");
    assert_eq!(std::fs::read_to_string(current.join("VERSION")).unwrap(), "v2");
    // Manual rollback of v2: v1 is gone, so there is no target; nothing changes.
    let err = h.handle.rollback(ids[1]).await.unwrap_err();
    assert!(err.to_string().contains("no rollback target"), "{err}");
    assert_eq!(std::fs::read_to_string(current.join("VERSION")).unwrap(), "v2");
    // With v1 back in place (another good release), the manual rollback goes to it.
    let v4 = h.submit("web", "site.tar.gz", site("v4"), "v4").await;
    h.wait_terminal(v4.id, Duration::from_secs(20)).await;
    let (_, restored) = h.handle.rollback(v4.id).await.expect("rollback");
    assert_eq!(restored, tds_core::release::Restored::SwitchedTo(format!("{}-1", ids[1])));
    assert_eq!(std::fs::read_to_string(current.join("VERSION")).unwrap(), "v2");
}

/// Case C05: invalid UTF-8 and many lines are logged without hanging; replacement characters
/// stand in for the bad bytes. Case C06: a 10 MB line without newline is split at the bound,
/// `\r` is kept, and a last line without newline is recorded.
#[tokio::test]
async fn c05_c06_invalid_utf8_huge_lines_and_carriage_returns() {
    let h = Harness::start(
        r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
steps = [
  { name = "bytes", run = "printf 'before\\n\\377\\376\\307 bad \\342\\202\\n'; seq 1 200000; echo after" },
  { name = "long", run = "head -c 10485760 /dev/zero | tr '\\0' a; printf 'p 1%%\\rp 50%%\\rp 100%%'; printf 'tail'" },
]
"#,
    )
    .await;
    let d = h.submit("web", "a.txt", b"x".to_vec(), "1").await;
    let done = h.wait_terminal(d.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, StatusKind::Succeeded, "{done:?}");
    let records: Vec<_> = tds_core::logs::read_records(&h.handle.log_path(d.id, 1)).unwrap().collect();
    let out: Vec<&str> =
        records.iter().filter(|r| r.event == tds_core::logs::LogEvent::Output).map(|r| r.message.as_str()).collect();
    assert!(out.contains(&"before"));
    assert!(out.iter().any(|m| m.contains('\u{fffd}') && m.contains(" bad ")), "no replacement characters");
    assert!(out.contains(&"200000") && out.contains(&"after"));
    let long: Vec<_> =
        records.iter().filter(|r| r.step.as_deref() == Some("long") && r.message.starts_with("aaaa")).collect();
    assert!(long.len() >= 10_485_760 / tds_core::executor::MAX_LINE, "the long line was not split: {}", long.len());
    assert!(long.iter().all(|r| r.message.len() <= tds_core::executor::MAX_LINE));
    assert!(long.iter().rev().skip(1).all(|r| r.split), "every part but the last is marked split");
    assert!(out.iter().any(|m| m.ends_with("p 1%\rp 50%\rp 100%tail")), "last line without newline kept");
}

/// Artifact retention: the sweep keeps what an unfinished deployment or a recent one uses and
/// anything written recently; it removes the rest. A manual retry of a deployment whose
/// artifact was removed fails at once with a clear, non-retryable reason.
#[tokio::test]
async fn artifact_retention_keeps_what_is_needed_and_retry_says_when_gone() {
    let h = Harness::start(&WEB.replace("[[environments]]", "[[environments]]\nretry = { max_retries = 0 }")).await;
    let old = h.submit_with("web", "site.tar.gz", site("old"), "old", Priority::Normal, fail()).await;
    assert_eq!(h.wait_terminal(old.id, Duration::from_secs(20)).await.status, StatusKind::Failed);
    h.handle.set_paused("web", true).await.unwrap();
    let waiting = h.submit("web", "site.tar.gz", site("waiting"), "waiting").await;
    let artifacts = h.dir.path().join("data").join("artifacts");
    let stray = artifacts.join("ab".repeat(32));
    std::fs::write(&stray, b"unreferenced").unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(30 * 86_400);
    for entry in std::fs::read_dir(&artifacts).unwrap().flatten() {
        std::fs::File::options().write(true).open(entry.path()).unwrap().set_modified(long_ago).unwrap();
    }
    // Ten days later, with a retention of seven: the failed deployment's artifact and the
    // stray file go; the queued deployment's artifact stays.
    let later = chrono::Utc::now() + chrono::TimeDelta::days(10);
    let store = h.handle.store();
    let removed = tds_core::retention::sweep(&*store, &artifacts, Duration::from_secs(7 * 86_400), later).unwrap();
    assert_eq!(removed, 2);
    assert!(!stray.exists());
    assert!(artifacts.join(&waiting.artifact.sha256).exists());
    assert!(!artifacts.join(&old.artifact.sha256).exists());
    // Nothing is removed within the retention period.
    assert_eq!(
        tds_core::retention::sweep(&*store, &artifacts, Duration::from_secs(7 * 86_400), chrono::Utc::now()).unwrap(),
        0
    );

    h.handle.set_paused("web", false).await.unwrap();
    h.handle.retry(old.id).await.unwrap();
    let again = h.wait_terminal(old.id, Duration::from_secs(20)).await;
    assert_eq!((again.status, again.attempt), (StatusKind::Failed, 2));
    assert!(again.error.unwrap().contains("is no longer stored"), "clear reason");
}

/// Case C14 (paging while deployments are added): keyset pages (`before` the last id of the
/// previous page) neither repeat nor skip, newest first, while new submissions arrive.
#[tokio::test]
async fn c14_keyset_paging_neither_repeats_nor_skips_while_deployments_are_added() {
    let h = Harness::start(WEB).await;
    h.handle.set_paused("web", true).await.unwrap();
    let mut first = Vec::new();
    for i in 0..12 {
        first.push(h.submit("web", "a.txt", format!("{i}").into_bytes(), &i.to_string()).await.id);
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        // Someone keeps submitting between pages.
        h.submit("web", "a.txt", format!("late-{}", seen.len()).into_bytes(), "late").await;
        let page =
            h.handle.history(tds_core::store::HistoryQuery { limit: 5, before, ..Default::default() }).await.unwrap();
        if page.items.is_empty() {
            break;
        }
        before = page.items.last().map(|d| d.id);
        seen.extend(page.items.iter().map(|d| d.id));
    }
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a page repeated an item");
    for id in &first {
        assert!(seen.contains(id), "{id} was skipped");
    }
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "not newest first");
}
