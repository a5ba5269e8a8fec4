//! Faults that deployment tools shipped (`shared/cases/CASES.md`) and the process, release and
//! clock promises of `docs/RELIABILITY.md`, each as a test that fails on the faulty behaviour.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use tds_core::clock::OffsetClock;
use tds_core::model::{Priority, StatusKind};
use tds_core::{ArtifactSource, StartOptions, SubmitRequest};

use crate::common::{Harness, site, start_with, wait_for};

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn alive_in_group_of(pid_file: &std::path::Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(pid_file) else { return false };
    let pid: i32 = pid.trim().parse().unwrap_or(0);
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Case C02 (c): cancels that race with a slot freeing up, many times: each cancel either
/// prevents the spawn or kills the attempt (no side effect), or the deployment had already
/// finished (a clear conflict); never "cannot cancel" in between, never a run after a cancel.
#[tokio::test(flavor = "multi_thread")]
async fn c02_cancel_racing_a_freed_slot_is_always_final() {
    // 1,000 races in all: 20 environments × 50 rounds, run side by side.
    const ENVS: usize = 20;
    const ROUNDS: usize = 50;
    let mut config = String::new();
    for e in 0..ENVS {
        let _ = write!(
            config,
            "[[environments]]\nname = \"e{e}\"\nroot = \"{{dir}}/envs/e{e}\"\nmax_concurrent = 1\n\
             steps = [{{ name = \"s\", run = \"sleep 0.0$TDS_PARAM_NAP; touch {{dir}}/ran-$TDS_VERSION\" }}]\n"
        );
    }
    let h = Arc::new(Harness::start(&config).await);
    let tasks = (0..ENVS).map(|e| {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            let mut outcomes = [0usize; 3];
            for round in 0..ROUNDS {
                let submit = |v: String, nap: usize| {
                    let h = Arc::clone(&h);
                    async move {
                        h.handle
                            .submit(SubmitRequest {
                                environment: format!("e{e}"),
                                artifact: ArtifactSource::Bytes { name: "a.txt".into(), bytes: v.clone().into_bytes() },
                                version: v,
                                priority: Priority::Normal,
                                params: params(&[("NAP", &nap.to_string())]),
                                requested_by: "test".into(),
                                idempotency_key: None,
                            })
                            .await
                            .unwrap()
                            .deployment
                            .id
                    }
                };
                let _a = submit(format!("a-{e}-{round}"), 1 + round % 3).await;
                let b_version = format!("b-{e}-{round}");
                let b = submit(b_version.clone(), round % 4).await;
                tokio::time::sleep(Duration::from_millis((round % 20) as u64)).await;
                let ran = h.dir.path().join(format!("ran-{b_version}"));
                match h.handle.cancel(b).await {
                    Ok(view) => {
                        assert_eq!(view.status, StatusKind::Cancelled, "{view:?}");
                        // What ran before the cancel ran; nothing may happen after it.
                        let before = ran.exists();
                        h.wait_terminal(b, Duration::from_secs(20)).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        assert_eq!(ran.exists(), before, "{b} had a side effect after its cancel returned");
                        outcomes[usize::from(before)] += 1;
                    }
                    Err(e) => {
                        let d = h.handle.deployment(b).await.unwrap();
                        assert_eq!(d.status, StatusKind::Succeeded, "cancel refused ({e}) while {d:?}");
                        assert!(e.to_string().contains("is succeeded"), "{e}");
                        outcomes[2] += 1;
                    }
                }
                let after = h.wait_terminal(b, Duration::from_secs(20)).await;
                assert!(after.attempt == 1, "a cancelled or finished deployment ran again: {after:?}");
            }
            outcomes
        })
    });
    // [cancelled before the step acted, cancelled after it acted, already finished]
    let mut totals = [0usize; 3];
    for t in tasks {
        let o = t.await.unwrap();
        for i in 0..3 {
            totals[i] += o[i];
        }
    }
    assert_eq!(totals.iter().sum::<usize>(), ENVS * ROUNDS);
    assert!(totals[0] > 0, "no cancel landed: {totals:?}");
}

/// Case C04: a step that ignores SIGTERM (and its children) is killed with SIGKILL after the
/// grace period; the log says which signals were sent; nothing of the group survives.
#[tokio::test]
async fn c04_term_ignoring_step_is_killed_after_the_grace() {
    let h = Harness::start(
        r#"
[[environments]]
name = "e"
root = "{dir}/envs/e"
steps = [{ name = "stubborn", run = "trap '' TERM; sleep 120 & echo $! > {dir}/child; echo $$ > {dir}/shell; wait" }]
"#,
    )
    .await;
    let d = h.submit("e", "a.txt", b"x".to_vec(), "1").await;
    let dir = h.dir.path().to_owned();
    wait_for(Duration::from_secs(10), "the step to start", || {
        let dir = dir.clone();
        async move { dir.join("child").exists().then_some(()) }
    })
    .await;
    let t = Instant::now();
    let view = h.handle.cancel(d.id).await.unwrap();
    assert_eq!(view.status, StatusKind::Cancelled);
    assert!(t.elapsed() >= Duration::from_millis(900), "SIGKILL came before the 1 s grace");
    assert!(!alive_in_group_of(&dir.join("child")) && !alive_in_group_of(&dir.join("shell")));
    let log = h.log_text(d.id, 1).join("\n");
    assert!(log.contains("sending SIGTERM to process group"), "{log}");
    assert!(log.contains("sending SIGKILL"), "{log}");
}

/// A step that times out is killed (group, TERM then KILL), the attempt fails with "timed
/// out", and is retried per the policy.
#[tokio::test]
async fn step_timeout_kills_the_group_and_fails_the_attempt() {
    let h = Harness::start(
        r#"
[[environments]]
name = "e"
root = "{dir}/envs/e"
retry = { max_retries = 0 }
steps = [{ name = "slow", run = "sleep 30", timeout = "300ms" }]
"#,
    )
    .await;
    let d = h.submit("e", "a.txt", b"x".to_vec(), "1").await;
    let done = h.wait_terminal(d.id, Duration::from_secs(10)).await;
    assert_eq!(done.status, StatusKind::Failed);
    assert!(done.error.unwrap().contains("step 'slow' timed out"));
    let log = h.log_text(d.id, 1).join("\n");
    assert!(log.contains("step timed out after 300ms") && log.contains("sending SIGTERM"), "{log}");
}

/// Exit codes and signals are reported; a background child holding the output pipe does not
/// keep a finished step running, and is terminated with it.
#[tokio::test]
async fn exit_codes_signals_and_background_children() {
    let h = Harness::start(
        r#"
[[environments]]
name = "e"
root = "{dir}/envs/e"
retry = { max_retries = 0 }
steps = [{ name = "s", run = "case $TDS_VERSION in code) exit 7;; signal) kill -KILL $$;; bg) sleep 60 & echo $! > {dir}/bg; echo started;; esac" }]
"#,
    )
    .await;
    let code = h.submit("e", "a.txt", b"1".to_vec(), "code").await;
    let signal = h.submit("e", "a.txt", b"2".to_vec(), "signal").await;
    let t = Instant::now();
    let bg = h.submit("e", "a.txt", b"3".to_vec(), "bg").await;
    let code = h.wait_terminal(code.id, Duration::from_secs(10)).await;
    assert!(code.error.unwrap().contains("exited with status 7"));
    let signal = h.wait_terminal(signal.id, Duration::from_secs(10)).await;
    assert!(signal.error.unwrap().contains("killed by signal 9"));
    let bg_done = h.wait_terminal(bg.id, Duration::from_secs(20)).await;
    assert_eq!(bg_done.status, StatusKind::Succeeded);
    assert!(t.elapsed() < Duration::from_secs(15), "a background child kept the step running");
    assert!(!alive_in_group_of(&h.dir.path().join("bg")), "the background child outlived its step");
    assert!(h.log_text(bg.id, 1).join("\n").contains("left processes behind"));
}

/// Case C10: a reader never finds `current` missing or incomplete during back-to-back
/// deployments and rollbacks; a temporary link left by a crash mid-switch is removed at start.
#[tokio::test(flavor = "multi_thread")]
async fn c10_current_is_never_missing_during_switches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("envs").join("e");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink("releases/nowhere", root.join(".current.tmp-01CRASHED")).unwrap();
    let h = Harness::start_in(
        dir,
        r#"
[[environments]]
name = "e"
root = "{dir}/envs/e"
max_concurrent = 2
keep_releases = 3
verify_timeout = "1s"
retry = { max_retries = 0 }
verify = [{ name = "v", run = "test -z \"$TDS_PARAM_FAIL\"" }]
"#,
    )
    .await;
    assert!(!root.join(".current.tmp-01CRASHED").exists(), "stale temporary link not cleaned at start");
    let first = h.submit("e", "site.tar.gz", site("v0"), "v0").await;
    h.wait_terminal(first.id, Duration::from_secs(10)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (missing, reads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (stop, missing, reads, current) = (stop.clone(), missing.clone(), reads.clone(), root.join("current"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read_to_string(current.join("VERSION")) {
                    Ok(v) if v.starts_with('v') => {}
                    _ => {
                        missing.fetch_add(1, Ordering::Relaxed);
                    }
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut ids = Vec::new();
    for i in 1..=200 {
        let fail = if i % 3 == 0 { "1" } else { "" };
        let p = params(&[("FAIL", fail)]);
        ids.push(
            h.submit_with("e", "site.tar.gz", site(&format!("v{i}")), &format!("v{i}"), Priority::Normal, p).await.id,
        );
    }
    for id in &ids {
        h.wait_terminal(*id, Duration::from_secs(60)).await;
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(reads.load(Ordering::Relaxed) > 1000, "the reader hardly ran");
    assert_eq!(missing.load(Ordering::Relaxed), 0, "current was missing or incomplete");
    // Failed releases never count towards keep_releases: exactly 3 good ones are kept.
    let kept = std::fs::read_dir(root.join("releases")).unwrap().count();
    assert_eq!(kept, 3);
}

/// Case C15: the wall clock jumps back and forward during a step and during a backoff:
/// durations stay ≈ real time (never negative, never ≈ 1 h) and the backoff fires after its
/// real delay.
#[tokio::test]
async fn c15_wall_clock_jumps_do_not_bend_durations_or_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let clock = OffsetClock::new();
    let handle = start_with(
        dir.path(),
        r#"
[[environments]]
name = "e"
root = "{dir}/envs/e"
retry = { max_retries = 1, initial_delay = "1500ms" }
steps = [{ name = "s", run = "sleep 1; test -f {dir}/ok || { touch {dir}/ok; exit 1; }" }]
"#,
        StartOptions { clock: clock.clone(), probes: false },
    )
    .await;
    let h = Harness { dir, handle };
    let d = h.submit("e", "a.txt", b"x".to_vec(), "1").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    clock.jump(TimeDelta::hours(-1)); // back, during the step
    let waiting = h.wait_status(d.id, StatusKind::RetryWait, Duration::from_secs(10)).await;
    let t = Instant::now();
    clock.jump(TimeDelta::hours(2)); // forward, during the backoff: must not fire early
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.handle.deployment(d.id).await.unwrap().status, StatusKind::RetryWait, "backoff skipped");
    let done = h.wait_terminal(d.id, Duration::from_secs(20)).await;
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(1300), "backoff fired after {waited:?}");
    assert_eq!(done.status, StatusKind::Succeeded);
    let ms = done.duration_ms.unwrap();
    assert!((2000..10_000).contains(&ms), "duration {ms} ms is not ≈ the real time");
    let attempts = h.handle.detail(d.id).await.unwrap().attempts;
    for a in &attempts {
        let run = a.duration_ms.unwrap();
        assert!((900..5000).contains(&run), "attempt run time {run} ms");
    }
    assert!(waiting.next_retry_at.is_some());
}

/// Case C17: request values reach steps only as environment variables, byte for byte; shell
/// syntax in them is never executed; unknown environments are refused and never used in a path.
#[tokio::test]
async fn c17_request_values_never_reach_a_shell_string() {
    let h = Harness::start(
        r#"
[[environments]]
name = "e"
root = "{dir}/envs/e"
steps = [{ name = "s", run = "printf '%s' \"$TDS_VERSION\" > {dir}/seen-$TDS_PARAM_N; printf '%s' \"$TDS_PARAM_X\" >> {dir}/seen-$TDS_PARAM_N" }]
"#,
    )
    .await;
    let d = h.dir.path().display().to_string();
    let versions = [
        format!("1.0; touch {d}/pwned"),
        format!("$(touch {d}/pwned2)"),
        format!("`touch {d}/pwned3`"),
        "1.0\nrm -rf x".to_owned(),
        format!("--checkpoint-action=exec=touch {d}/pwned4"),
    ];
    let mut ids = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let p = params(&[("N", &i.to_string()), ("X", &format!("';touch {d}/pwned5;'"))]);
        ids.push(h.submit_with("e", "a.txt", v.clone().into_bytes(), v, Priority::Normal, p).await.id);
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(h.wait_terminal(*id, Duration::from_secs(10)).await.status, StatusKind::Succeeded);
        let seen = std::fs::read_to_string(h.dir.path().join(format!("seen-{i}"))).unwrap();
        assert_eq!(seen, format!("{}';touch {d}/pwned5;'", versions[i]));
    }
    for n in ["pwned", "pwned2", "pwned3", "pwned4", "pwned5"] {
        assert!(!h.dir.path().join(n).exists(), "{n} was created");
    }
    for bad in ["../../prod", "e/../e", "E"] {
        let err = h
            .handle
            .submit(SubmitRequest {
                environment: bad.into(),
                artifact: ArtifactSource::Bytes { name: "a.txt".into(), bytes: b"x".to_vec() },
                version: "1".into(),
                priority: Priority::Normal,
                params: BTreeMap::new(),
                requested_by: "test".into(),
                idempotency_key: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, tds_core::Error::UnknownEnvironment(_)), "{bad}: {err}");
    }
    assert!(!h.dir.path().join("prod").exists());
    let bad_key = h
        .handle
        .submit(SubmitRequest {
            environment: "e".into(),
            artifact: ArtifactSource::Bytes { name: "a.txt".into(), bytes: b"x".to_vec() },
            version: "1".into(),
            priority: Priority::Normal,
            params: params(&[("X;rm", "1")]),
            requested_by: "test".into(),
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert!(bad_key.to_string().contains("params.X;rm"), "{bad_key}");
}

/// A corrupt or foreign store stops the start with a clear error instead of starting empty.
#[tokio::test]
async fn corrupt_store_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("tds.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&db, vec![0x5a; 64 * 1024]).unwrap();
    let env = "[[environments]]\nname = \"web\"\nroot = \"{dir}/envs/web\"\n";
    let config = tds_core::Config::parse(&crate::common::config_text(dir.path(), env), dir.path()).unwrap();
    let err = tds_core::OrchestratorHandle::start(config, StartOptions::default()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cannot be used") && msg.contains("refuses to start"), "{msg}");
    assert_eq!(std::fs::read(&db).unwrap(), vec![0x5a; 64 * 1024], "the file must be left as it was");
}

/// Store evolution: a store written by the first schema (checked in) still opens, with its
/// deployments, attempts and transitions.
#[tokio::test]
async fn store_from_the_first_schema_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/store-v1.db"), data.join("tds.db")).unwrap();
    let h = Harness::start_in(
        dir,
        r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
"#,
    )
    .await;
    let page = h.handle.history(tds_core::store::HistoryQuery { limit: 50, ..Default::default() }).await.unwrap();
    assert_eq!(page.total, 3, "{page:?}");
    let statuses: Vec<_> = page.items.iter().map(|d| d.status).collect();
    assert!(statuses.contains(&StatusKind::Succeeded) && statuses.contains(&StatusKind::Failed));
    let detail = h.handle.detail(page.items[0].id).await.unwrap();
    assert!(!detail.transitions.is_empty());
    let m = h.handle.metrics().await.unwrap();
    assert_eq!(m.total, 3);
}

/// Migration to schema 2 fills the new rollups from the rows already stored: a window of whole
/// hours, read from the rollups alone, gives the lead and busy times of the raw rows.
#[test]
fn migration_fills_the_rollups_from_a_first_schema_store() {
    use tds_core::store::Store as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tds.db");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/store-v1.db"), &path).unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    let (lead, busy, first, last): (i64, i64, i64, i64) = raw
        .query_row(
            "SELECT (SELECT CAST(total(coalesce(queue_wait_ms, 0) + coalesce(duration_ms, 0)) AS INTEGER) \
                     FROM deployments WHERE status = 'succeeded'), \
                    (SELECT CAST(total(coalesce(duration_ms, finished_at - started_at)) AS INTEGER) FROM attempts \
                     WHERE started_at IS NOT NULL AND finished_at IS NOT NULL), \
                    (SELECT min(created_at) FROM deployments), \
                    (SELECT max(coalesce(finished_at, created_at)) FROM deployments)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    drop(raw);
    assert!(lead > 0 && busy > 0, "the fixture has a success and finished attempts");
    let store = tds_core::store::SqliteStore::open(&path).unwrap();
    let hour = 3_600_000;
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let window = tds_core::metrics::Window {
        from: at((first / hour - 1) * hour),
        to: at((last / hour + 2) * hour),
        environment: None,
    };
    let w = store.window_figures(&window, chrono::Utc::now()).unwrap();
    assert_eq!((w.succeeded, w.failed, w.cancelled), (1, 1, 1));
    assert_eq!(w.lead_time_total_ms, lead as u64);
    assert_eq!(w.busy_ms.iter().map(|(_, ms)| ms).sum::<u64>(), busy as u64);
    drop(store);
    let version: i64 =
        rusqlite::Connection::open(&path).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, tds_core::store::SCHEMA_VERSION);
}

/// Writes `tests/data/store-v1.db` (run once with `--ignored` when the first schema was final).
#[tokio::test]
#[ignore = "generates the checked-in fixture"]
async fn make_store_v1_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(
        r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
retry = { max_retries = 0 }
steps = [{ name = "s", run = "test -z \"$TDS_PARAM_FAIL\"" }]
"#,
    )
    .await;
    let ok = h.submit("web", "site.tar.gz", site("1.0"), "1.0").await;
    let bad = h.submit_with("web", "site.tar.gz", site("1.1"), "1.1", Priority::High, params(&[("FAIL", "1")])).await;
    h.wait_terminal(ok.id, Duration::from_secs(10)).await;
    h.wait_terminal(bad.id, Duration::from_secs(10)).await;
    let queued = h.submit("web", "a.txt", b"x".to_vec(), "1.2").await;
    h.handle.cancel(queued.id).await.ok();
    h.handle.shutdown(None).await;
    let src = h.dir.path().join("data").join("tds.db");
    let conn = rusqlite::Connection::open(&src).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;").unwrap();
    drop(conn);
    std::fs::copy(&src, concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/store-v1.db")).unwrap();
    drop(dir);
}
