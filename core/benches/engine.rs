//! Orchestration overhead: N deployments whose only step is `true` (or no step at all) over
//! 3 environments × 3 slots, submitted at once through the handle with the durable store on.
//! Prints the time from the first submission to the last `succeeded`, and deployments per
//! second. `cargo bench -p tds-core --bench engine`; `TDS_BENCH_N` (default 600) and
//! `TDS_BENCH_STEP` (default `true`; empty for no step) change the workload.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tds_core::model::{Priority, StatusKind};
use tds_core::{ArtifactSource, Config, OrchestratorHandle, StartOptions, SubmitRequest};

fn main() {
    let n: usize = std::env::var("TDS_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let step = std::env::var("TDS_BENCH_STEP").unwrap_or_else(|_| "true".into());
    let runs: usize = std::env::var("TDS_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut times = Vec::new();
    for _ in 0..runs {
        times.push(rt.block_on(run(n, &step)));
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{n} deployments (step {:?}) over 3 environments x 3 slots: median {:.3} s of {runs} runs ({:.0}/s); all: {:?}",
        step,
        median.as_secs_f64(),
        n as f64 / median.as_secs_f64(),
        times.iter().map(|t| format!("{:.3}", t.as_secs_f64())).collect::<Vec<_>>()
    );
}

async fn run(n: usize, step: &str) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let steps = if step.is_empty() { String::new() } else { format!("steps = [{{ name = \"s\", run = \"{step}\" }}]") };
    let mut text = format!("[storage]\ndata_dir = \"{d}/data\"\n");
    for e in 0..3 {
        let _ =
            writeln!(text, "[[environments]]\nname = \"e{e}\"\nroot = \"{d}/envs/e{e}\"\nmax_concurrent = 3\n{steps}");
    }
    let config = Config::parse(&text, dir.path()).expect("config");
    let handle = OrchestratorHandle::start(config, StartOptions::default()).await.expect("start");
    let mut events = handle.subscribe();
    let start = Instant::now();
    let submits = (0..n).map(|i| {
        let handle = handle.clone();
        async move {
            handle
                .submit(SubmitRequest {
                    environment: format!("e{}", i % 3),
                    artifact: ArtifactSource::Bytes { name: "a.txt".into(), bytes: format!("{i}").into_bytes() },
                    version: i.to_string(),
                    priority: Priority::Normal,
                    params: BTreeMap::new(),
                    requested_by: "bench".into(),
                    idempotency_key: None,
                })
                .await
                .expect("submit")
        }
    });
    futures::future::join_all(submits).await;
    let mut done = 0;
    while done < n {
        match events.recv().await {
            Ok(e) => {
                if let tds_core::CoreEvent::Deployment(v) = e.event
                    && v.status == StatusKind::Succeeded
                {
                    done += 1;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                done = handle.snapshot().deployments.iter().filter(|d| d.status == StatusKind::Succeeded).count();
            }
            Err(e) => panic!("{e}"),
        }
    }
    let elapsed = start.elapsed();
    handle.shutdown(None).await;
    elapsed
}
