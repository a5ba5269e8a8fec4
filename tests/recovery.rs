//! Restarts: graceful (queued work continues) and crash-like (the runtime is dropped mid-step,
//! as with `kill -9`): interrupted attempts are rolled back, their orphaned processes killed,
//! their slots freed, and they are retried as documented; cancels stay final.

use std::time::Duration;

use tds_core::model::{Priority, StatusKind};

use crate::common::{Harness, site, start_handle, wait_for};

const SLOW: &str = r#"
[[environments]]
name = "one"
root = "{dir}/envs/one"
max_concurrent = 1
retry = { max_retries = 1, initial_delay = "300ms" }
steps = [{ name = "work", run = "echo $$ > {dir}/pid-$TDS_VERSION-$TDS_ATTEMPT; test \"$TDS_VERSION\" != slow || test \"$TDS_ATTEMPT\" != 1 || sleep 60" }]
"#;

/// Starts an orchestrator on its own runtime in a thread, runs `work` on it, then drops the
/// runtime without any shutdown: tasks vanish mid-flight and child processes are orphaned, as
/// after `kill -9`.
fn run_then_crash<F, Fut>(dir: std::path::PathBuf, config: &'static str, work: F)
where
    F: FnOnce(tds_core::OrchestratorHandle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let data_dir = dir.join("data");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let handle = start_handle(&dir, config).await;
            work(handle).await;
        });
        rt.shutdown_background();
    })
    .join()
    .expect("crash thread");
    // A dead process releases the data folder's lock at once; here its last blocking threads
    // (the store writer) let go of it a moment after the runtime is dropped.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tds_core::check_data_dir_free(&data_dir).is_err() {
        assert!(std::time::Instant::now() < deadline, "the crashed instance never released the data folder");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Case C03: A runs `sleep 60` with limit 1, B is queued; the server "dies". After the restart
/// A's orphaned process is killed, its release rolled back, its slot freed so B runs, and A is
/// retried (counting the attempt) — not left `running` without a process.
#[tokio::test(flavor = "multi_thread")]
async fn c03_interrupted_attempt_is_rolled_back_and_retried_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = ids.clone();
    let p = path.clone();
    run_then_crash(path.clone(), SLOW, move |handle| async move {
        let h = crate::common::submitter(&handle);
        let a = h("slow").await;
        let b = h("fast").await;
        keep.lock().unwrap().extend([a, b]);
        wait_for(Duration::from_secs(10), "A to run its step", || {
            let p = p.clone();
            async move { p.join("pid-slow-1").exists().then_some(()) }
        })
        .await;
    });
    let (a, b) = {
        let ids = ids.lock().unwrap();
        (ids[0], ids[1])
    };
    let orphan: i32 = std::fs::read_to_string(path.join("pid-slow-1")).unwrap().trim().parse().unwrap();
    assert!(pid_alive(orphan), "the step outlives the crashed server, as with kill -9");

    let h = Harness::start_in(dir, SLOW).await;
    // A is never `running` without a process: it is rolled back and retried as attempt 2.
    let a_done = h.wait_terminal(a, Duration::from_secs(30)).await;
    assert_eq!((a_done.status, a_done.attempt), (StatusKind::Succeeded, 2), "{a_done:?}");
    assert_eq!(h.wait_terminal(b, Duration::from_secs(30)).await.status, StatusKind::Succeeded);
    assert!(!pid_alive(orphan), "the orphaned step process must be killed at recovery");
    let log = h.log_text(a, 1).join("\n");
    assert!(log.contains("== interrupted"), "{log}");
    assert!(log.contains("== rolled_back"), "{log}");
    let detail = h.handle.detail(a).await.unwrap();
    assert_eq!(detail.attempts[0].outcome.as_deref(), Some("failed"));
    assert!(detail.attempts[0].error.as_deref().unwrap_or("").contains("interrupted"));
}

/// Case C02 (b): limit 1, A runs, B queued; cancel B; crash; restart: B stays cancelled.
#[tokio::test(flavor = "multi_thread")]
async fn c02_cancelled_stays_cancelled_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = ids.clone();
    run_then_crash(path.clone(), SLOW, move |handle| async move {
        let h = crate::common::submitter(&handle);
        let a = h("slow").await;
        let b = h("queued-b").await;
        let cancelled = handle.cancel(b).await.expect("cancel");
        assert_eq!(cancelled.status, StatusKind::Cancelled);
        keep.lock().unwrap().extend([a, b]);
    });
    let b = ids.lock().unwrap()[1];
    let h = Harness::start_in(dir, SLOW).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = h.handle.deployment(b).await.unwrap();
    assert_eq!((after.status, after.attempt), (StatusKind::Cancelled, 1));
    assert!(!path.join("pid-queued-b-1").exists(), "a cancelled deployment never runs");
}

/// A graceful shutdown keeps queued work; the next start runs it, in the original order.
#[tokio::test]
async fn queued_work_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let config = r#"
[[environments]]
name = "one"
root = "{dir}/envs/one"
max_concurrent = 1
steps = [{ name = "record", run = "echo $TDS_VERSION >> {dir}/order" }]
"#;
    let handle = start_handle(&path, config).await;
    handle.set_paused("one", true).await.unwrap();
    let submit = crate::common::submitter(&handle);
    let mut ids = Vec::new();
    for v in ["first", "second", "third"] {
        ids.push(submit(v).await);
    }
    handle.set_priority(ids[2], Priority::High).await.unwrap();
    handle.shutdown(None).await;
    drop(handle);

    let h = Harness::start_in(dir, config).await;
    let env = h.handle.environment("one");
    assert!(env.as_ref().is_some_and(|e| e.paused), "pause survives the restart: {env:?}");
    h.handle.set_paused("one", false).await.unwrap();
    for id in &ids {
        assert_eq!(h.wait_terminal(*id, Duration::from_secs(20)).await.status, StatusKind::Succeeded);
    }
    let order = std::fs::read_to_string(path.join("order")).unwrap();
    assert_eq!(order.lines().collect::<Vec<_>>(), ["third", "first", "second"]);
}

/// A retry schedule continues after a restart with only the remaining delay.
#[tokio::test]
async fn retry_wait_continues_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let config = r#"
[[environments]]
name = "one"
root = "{dir}/envs/one"
retry = { max_retries = 1, initial_delay = "2s" }
steps = [{ name = "flaky", run = "test -f {dir}/ok || { touch {dir}/ok; exit 1; }" }]
"#;
    let handle = start_handle(&path, config).await;
    let d = crate::common::submitter(&handle)("x").await;
    let handle2 = handle.clone();
    wait_for(Duration::from_secs(10), "retry_wait", || {
        let handle = handle2.clone();
        async move { handle.deployment(d).await.ok().filter(|v| v.status == StatusKind::RetryWait) }
    })
    .await;
    handle.shutdown(None).await;
    drop(handle);
    let h = Harness::start_in(dir, config).await;
    let waiting = h.handle.deployment(d).await.unwrap();
    assert_eq!(waiting.status, StatusKind::RetryWait);
    let done = h.wait_terminal(d, Duration::from_secs(10)).await;
    assert_eq!((done.status, done.attempt), (StatusKind::Succeeded, 2));
    let _ = site("unused");
}
