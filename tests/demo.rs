//! `tds --demo` keeps its promise: soon after it starts (about 30 s on a quiet machine), on
//! nothing but the binary, the demo's own environments show real work in every state an
//! operator should see: running, succeeded (files under `current/`), retried, rolled back and
//! failed.

use std::collections::BTreeSet;
use std::time::Duration;

use tds::demo::Demo;
use tds_core::model::StatusKind;
use tds_core::{OrchestratorHandle, StartOptions};
use tokio_util::sync::CancellationToken;

use crate::common::wait_for;

/// Every kind of work the demo must show; each is remembered once seen.
const KINDS: [&str; 5] = ["running", "succeeded", "retried", "rolled back", "failed"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_every_kind_of_work_soon_after_start() {
    let demo = Demo::prepare().expect("demo folder");
    let handle = OrchestratorHandle::start(demo.config.clone(), StartOptions::default()).await.expect("start");
    let stop = CancellationToken::new();
    let submitter = demo.spawn_submitter(handle.clone(), stop.clone());

    let seen = std::sync::Mutex::new(BTreeSet::new());
    let log_has = |handle: &OrchestratorHandle, d: &tds_core::model::DeploymentView, event: &str| {
        handle.log_attempts(d.id).into_iter().any(|attempt| {
            std::fs::read_to_string(handle.log_path(d.id, attempt))
                .is_ok_and(|text| text.lines().any(|l| l.contains(&format!("\"event\":\"{event}\""))))
        })
    };
    // About 30 s on a quiet machine; the bound only keeps a broken demo from hanging the suite
    // (timing is not what this test checks: a loaded CI machine may take twice as long).
    wait_for(Duration::from_secs(180), &format!("the demo to show work {}", KINDS.join(", ")), || {
        let snapshot = handle.snapshot();
        let mut seen = seen.lock().unwrap();
        for d in &snapshot.deployments {
            match d.status {
                StatusKind::Running => seen.insert("running"),
                StatusKind::Succeeded => seen.insert("succeeded"),
                StatusKind::Failed => seen.insert("failed"),
                _ => false,
            };
            if d.attempt > 1 {
                seen.insert("retried");
                if !seen.contains("rolled back") && log_has(&handle, d, "rolled_back") {
                    seen.insert("rolled back");
                }
            }
        }
        std::future::ready((seen.len() == KINDS.len()).then_some(()))
    })
    .await;

    // A succeeded deployment put its real files under its environment's `current/`.
    let done = handle.snapshot().deployments.iter().find(|d| d.status == StatusKind::Succeeded).cloned().unwrap();
    let root = &demo.config.environment(&done.environment).unwrap().root;
    let index = std::fs::read_to_string(root.join("current").join("index.html")).expect("current/index.html");
    assert!(index.contains("tds demo"), "current/index.html is the demo's page: {index}");

    // The failed one used its whole retry budget, each attempt rolled back.
    let failed = handle.snapshot().deployments.iter().find(|d| d.status == StatusKind::Failed).cloned().unwrap();
    assert_eq!(failed.attempt, failed.max_retries + 1, "{failed:?}");
    assert!(failed.error.as_deref().is_some_and(|e| e.contains("install")), "{failed:?}");

    stop.cancel();
    submitter.await.unwrap();
    handle.shutdown(Some(Duration::ZERO)).await;
    demo.cleanup();
    assert!(!demo.dir.exists(), "the scratch folder is removed");
}
