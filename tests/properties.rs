//! The seed's five properties as property tests against the real engine with fast steps: each
//! case starts a fresh orchestrator on a temp folder, runs real processes, and checks the
//! invariant from what the steps themselves recorded as well as from the store.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use tds_core::model::{DeploymentId, Priority, StatusKind};
use tds_core::{ArtifactSource, OrchestratorHandle, SubmitRequest};

use tds_core::logs::LogEvent as E;

use crate::common::{Harness, wait_for};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 100, max_shrink_iters: 50, failure_persistence: None, ..ProptestConfig::default() }
}

async fn submit(
    handle: &OrchestratorHandle,
    env: &str,
    version: &str,
    priority: Priority,
    params: BTreeMap<String, String>,
) -> DeploymentId {
    handle
        .submit(SubmitRequest {
            environment: env.into(),
            artifact: ArtifactSource::Bytes { name: "a.txt".into(), bytes: version.as_bytes().to_vec() },
            version: version.into(),
            priority,
            params,
            requested_by: "proptest".into(),
            idempotency_key: None,
        })
        .await
        .expect("submit")
        .deployment
        .id
}

async fn wait_all_terminal(h: &Harness, ids: &[DeploymentId], secs: u64) -> Vec<tds_core::model::DeploymentView> {
    let mut out = Vec::new();
    for id in ids {
        out.push(h.wait_terminal(*id, Duration::from_secs(secs)).await);
    }
    out
}

fn priority(n: u8) -> Priority {
    Priority::from_rank(u64::from(n))
}

proptest! {
    #![proptest_config(config())]

    /// Concurrent deployments stay within limits: at no instant does an environment run more
    /// than its limit, checked from the steps' own start/end records; deployments start in
    /// priority order, FIFO within a priority; and nothing submitted is lost.
    #[test]
    fn limits_priority_fifo_nothing_lost(
        limits in (1u32..=3, 1u32..=3),
        plan in proptest::collection::vec((0usize..2, 0u8..4), 1..10),
    ) {
        runtime().block_on(async {
            let h = Harness::start(&format!(r#"
[[environments]]
name = "e0"
root = "{{dir}}/envs/e0"
max_concurrent = {}
steps = [{{ name = "trace", run = "echo \"+ $TDS_DEPLOYMENT_ID\" >> {{dir}}/trace-e0; sleep 0.02; echo \"- $TDS_DEPLOYMENT_ID\" >> {{dir}}/trace-e0" }}]
[[environments]]
name = "e1"
root = "{{dir}}/envs/e1"
max_concurrent = {}
steps = [{{ name = "trace", run = "echo \"+ $TDS_DEPLOYMENT_ID\" >> {{dir}}/trace-e1; sleep 0.02; echo \"- $TDS_DEPLOYMENT_ID\" >> {{dir}}/trace-e1" }}]
"#, limits.0, limits.1)).await;
            // Hold both environments, submit everything, then let them go: the queue decides.
            for env in ["e0", "e1"] { h.handle.set_paused(env, true).await.unwrap(); }
            let mut events = h.handle.subscribe();
            let mut ids = Vec::new();
            for (i, (env, p)) in plan.iter().enumerate() {
                let id = submit(&h.handle, ["e0", "e1"][*env], &i.to_string(), priority(*p), BTreeMap::new()).await;
                ids.push((id, *env, *p, i));
            }
            for env in ["e0", "e1"] { h.handle.set_paused(env, false).await.unwrap(); }
            let done = wait_all_terminal(&h, &ids.iter().map(|x| x.0).collect::<Vec<_>>(), 30).await;
            prop_assert!(done.iter().all(|d| d.status == StatusKind::Succeeded), "{done:?}");
            let page = h.handle.history(tds_core::store::HistoryQuery { limit: 100, ..Default::default() }).await.unwrap();
            prop_assert_eq!(page.total as usize, plan.len(), "nothing lost, nothing duplicated");

            // Start order per environment, from the published events (the engine's decisions).
            let mut started: Vec<DeploymentId> = Vec::new();
            while let Ok(e) = events.try_recv() {
                if let tds_core::CoreEvent::Deployment(d) = e.event
                    && d.status == StatusKind::Running && !started.contains(&d.id)
                {
                    started.push(d.id);
                }
            }
            for env in [0usize, 1] {
                let limit = [limits.0, limits.1][env];
                let mut expected: Vec<_> = ids.iter().filter(|x| x.1 == env).collect();
                expected.sort_by_key(|x| (std::cmp::Reverse(x.2), x.3));
                let order: Vec<DeploymentId> = started.iter().copied().filter(|id| expected.iter().any(|x| x.0 == *id)).collect();
                prop_assert_eq!(order, expected.iter().map(|x| x.0).collect::<Vec<_>>());
                // The limit, from the steps' own records.
                let trace = std::fs::read_to_string(h.dir.path().join(format!("trace-e{env}"))).unwrap_or_default();
                let mut running = 0u32;
                for line in trace.lines() {
                    if line.starts_with('+') { running += 1; } else { running -= 1; }
                    prop_assert!(running <= limit, "e{env} ran {running} > {limit}:\n{trace}");
                }
                prop_assert_eq!(trace.lines().count(), 2 * expected.len());
            }
            Ok(())
        })?;
    }

    /// Automatic retry with exponential backoff: attempts ≤ max_retries + 1; each delay is at
    /// least the policy's; every failed attempt is rolled back (its release folder removed);
    /// the end is `succeeded` iff the step succeeded within the budget, else `failed`.
    #[test]
    fn retries_follow_the_backoff_policy(
        max_retries in 0u32..=3,
        initial_ms in 20u64..80,
        multiplier in prop_oneof![Just(1.0f64), Just(1.5), Just(2.0)],
        failures in 0u32..=5,
    ) {
        runtime().block_on(async {
            let h = Harness::start(&format!(r#"
[[environments]]
name = "e"
root = "{{dir}}/envs/e"
retry = {{ max_retries = {max_retries}, initial_delay = "{initial_ms}ms", multiplier = {multiplier:.1}, max_delay = "10s" }}
steps = [{{ name = "flaky", run = "test \"$TDS_ATTEMPT\" -gt \"$TDS_PARAM_FAILURES\"" }}]
"#)).await;
            let params = BTreeMap::from([("FAILURES".to_owned(), failures.to_string())]);
            let id = submit(&h.handle, "e", "1", Priority::Normal, params).await;
            let done = h.wait_terminal(id, Duration::from_secs(30)).await;
            let expect_attempts = failures.min(max_retries) + 1;
            prop_assert_eq!(done.attempt, expect_attempts);
            let expect_status = if failures <= max_retries { StatusKind::Succeeded } else { StatusKind::Failed };
            prop_assert_eq!(done.status, expect_status);
            let detail = h.handle.detail(id).await.unwrap();
            prop_assert_eq!(detail.attempts.len() as u32, expect_attempts);
            for (i, pair) in detail.attempts.windows(2).enumerate() {
                let waited = (pair[1].started_at.unwrap() - pair[0].finished_at.unwrap()).num_milliseconds();
                let policy = initial_ms as f64 * multiplier.powi(i as i32);
                prop_assert!(waited as f64 >= policy - 2.0, "retry {} waited {waited} ms < {policy}", i + 1);
                prop_assert!((waited as f64) < policy + 1500.0, "retry {} waited {waited} ms", i + 1);
            }
            for attempt in 1..=expect_attempts {
                let failed_attempt = attempt <= failures;
                let log = h.log_text(id, attempt).join("\n");
                prop_assert_eq!(log.contains("== rolled_back"), failed_attempt, "attempt {}: {}", attempt, log);
                let folder = h.root("e").join("releases").join(format!("{id}-{attempt}"));
                prop_assert_eq!(folder.exists(), !failed_attempt);
            }
            Ok(())
        })?;
    }

    /// Environment unavailability: while the probe fails nothing new starts there and its queue
    /// waits saying why; other environments are unaffected; when the probe passes again the
    /// queue drains.
    #[test]
    fn unavailable_environment_holds_its_queue_only(down_count in 1usize..4, up_count in 0usize..4) {
        runtime().block_on(async {
            let h = Harness::start(r#"
[[environments]]
name = "flaky"
root = "{dir}/envs/flaky"
probe = "test ! -f {dir}/down"
probe_interval = "20ms"
probe_failures = 1
steps = [{ name = "mark", run = "touch {dir}/ran-$TDS_VERSION" }]
[[environments]]
name = "solid"
root = "{dir}/envs/solid"
steps = [{ name = "mark", run = "touch {dir}/ran-$TDS_VERSION" }]
"#).await;
            std::fs::write(h.dir.path().join("down"), "").unwrap();
            let handle = h.handle.clone();
            wait_for(Duration::from_secs(5), "flaky to be unavailable", || {
                let handle = handle.clone();
                async move { handle.environment("flaky").filter(|e| !e.available) }
            }).await;
            let mut down = Vec::new();
            for i in 0..down_count { down.push(submit(&h.handle, "flaky", &format!("f{i}"), Priority::Critical, BTreeMap::new()).await); }
            let mut up = Vec::new();
            for i in 0..up_count { up.push(submit(&h.handle, "solid", &format!("s{i}"), Priority::Low, BTreeMap::new()).await); }
            for d in wait_all_terminal(&h, &up, 20).await {
                prop_assert_eq!(d.status, StatusKind::Succeeded);
            }
            let handle = h.handle.clone();
            let first = down[0];
            let reason = wait_for(Duration::from_secs(5), "a wait reason", || {
                let handle = handle.clone();
                async move { handle.deployment(first).await.ok()?.wait_reason }
            }).await;
            prop_assert!(reason.contains("flaky unavailable since"), "{}", reason);
            for id in &down {
                let d = h.handle.deployment(*id).await.unwrap();
                prop_assert_eq!(d.status, StatusKind::Queued);
            }
            for i in 0..down_count {
                prop_assert!(!h.dir.path().join(format!("ran-f{i}")).exists(), "ran while unavailable");
            }
            std::fs::remove_file(h.dir.path().join("down")).unwrap();
            for d in wait_all_terminal(&h, &down, 20).await {
                prop_assert_eq!(d.status, StatusKind::Succeeded);
            }
            Ok(())
        })?;
    }

    /// Logs: every transition and every output line of every attempt is in the log afterwards,
    /// in order, with the stream told apart, also with many deployments logging at once.
    #[test]
    fn every_line_and_transition_is_logged_in_order(
        outputs in proptest::collection::vec(
            (proptest::collection::vec("[a-z0-9 ✓é]{0,12}", 0..30), proptest::collection::vec("[A-Z]{1,8}", 0..10)),
            1..6,
        ),
    ) {
        runtime().block_on(async {
            let h = Harness::start(r#"
[[environments]]
name = "e"
root = "{dir}/envs/e"
max_concurrent = 6
steps = [{ name = "talk", run = "printf '%s' \"$TDS_PARAM_OUT\"; printf '%s' \"$TDS_PARAM_ERR\" >&2" }]
"#).await;
            let mut ids = Vec::new();
            for (i, (out, err)) in outputs.iter().enumerate() {
                let params = BTreeMap::from([
                    ("OUT".to_owned(), out.iter().fold(String::new(), |acc, l| acc + l + "\n")),
                    ("ERR".to_owned(), err.iter().fold(String::new(), |acc, l| acc + l + "\n")),
                ]);
                ids.push(submit(&h.handle, "e", &i.to_string(), Priority::Normal, params).await);
            }
            wait_all_terminal(&h, &ids, 30).await;
            for (id, (out, err)) in ids.iter().zip(&outputs) {
                let records: Vec<_> = tds_core::logs::read_records(&h.handle.log_path(*id, 1)).unwrap().collect();
                prop_assert!(records.windows(2).all(|w| w[0].seq < w[1].seq), "sequence not increasing");
                let lines = |s: tds_core::logs::Stream| records.iter()
                    .filter(|r| r.event == tds_core::logs::LogEvent::Output && r.stream == Some(s))
                    .map(|r| r.message.clone()).collect::<Vec<_>>();
                prop_assert_eq!(&lines(tds_core::logs::Stream::Stdout), out);
                prop_assert_eq!(&lines(tds_core::logs::Stream::Stderr), err);
                let events: Vec<E> = records.iter().map(|r| r.event).filter(|e| *e != E::Output).collect();
                let expect = [E::Queued, E::Started, E::PhaseStarted, E::Action, E::PhaseFinished, E::PhaseStarted,
                              E::StepStarted, E::StepFinished, E::PhaseFinished];
                prop_assert_eq!(&events[..expect.len()], &expect[..]);
                prop_assert_eq!(events.last(), Some(&E::Succeeded));
                let phases: usize = events.iter().filter(|e| **e == E::PhaseStarted).count();
                prop_assert_eq!(phases, 5);
            }
            Ok(())
        })?;
    }

    /// Metrics stay exact while deployments finish concurrently: every snapshot taken during
    /// the run is consistent (counts add up to what was submitted, finished counts only grow,
    /// the success rate matches the counts) and the final figures equal a recomputation from
    /// the stored transitions.
    #[test]
    fn metrics_stay_exact_while_deployments_finish(fails in proptest::collection::vec(any::<bool>(), 1..12)) {
        runtime().block_on(async {
            let h = Harness::start(r#"
[[environments]]
name = "e"
root = "{dir}/envs/e"
max_concurrent = 4
retry = { max_retries = 0 }
steps = [{ name = "maybe", run = "test -z \"$TDS_PARAM_FAIL\"" }]
"#).await;
            let mut ids = Vec::new();
            for (i, fail) in fails.iter().enumerate() {
                let params = if *fail { BTreeMap::from([("FAIL".to_owned(), "1".to_owned())]) } else { BTreeMap::new() };
                ids.push(submit(&h.handle, "e", &i.to_string(), Priority::Normal, params).await);
            }
            let n = fails.len() as u64;
            let (mut last_s, mut last_f) = (0, 0);
            loop {
                let m = h.handle.metrics().await.unwrap();
                prop_assert_eq!(m.total, n);
                prop_assert_eq!(m.counts.total(), n);
                prop_assert!(m.counts.succeeded >= last_s && m.counts.failed >= last_f, "finished counts went down");
                last_s = m.counts.succeeded;
                last_f = m.counts.failed;
                prop_assert_eq!(m.success_rate, tds_core::metrics::rate(m.counts.succeeded, m.counts.failed));
                if m.counts.succeeded + m.counts.failed == n { break; }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let store = h.handle.store();
            let mut last_status: HashMap<DeploymentId, StatusKind> = HashMap::new();
            for id in &ids {
                for t in store.transitions(*id).unwrap() { last_status.insert(*id, t.status); }
            }
            let from_transitions = |s| last_status.values().filter(|v| **v == s).count() as u64;
            let m = h.handle.metrics().await.unwrap();
            prop_assert_eq!(m.counts.succeeded, from_transitions(StatusKind::Succeeded));
            prop_assert_eq!(m.counts.failed, from_transitions(StatusKind::Failed));
            prop_assert_eq!(m.counts.failed, fails.iter().filter(|f| **f).count() as u64);
            Ok(())
        })?;
    }
}
