//! Orchestration overhead and engine throughput: N deployments whose only step is `true` (or no
//! step at all) over 3 environments × 3 slots, submitted at once through the handle with the
//! durable store on; the time from the first submission to the last `succeeded`. Beside it, in
//! the same binary, two floors measured the same way: the same N commands spawned by a bare
//! tokio loop 9 at a time (`TDS_BENCH_MODE=spawn`), and the file-system work a deployment
//! cannot do without — its log file, release folder and file, the `current` switch, pruning —
//! done alone by 9 threads (`TDS_BENCH_MODE=fs`).
//!
//! `cargo bench -p tds-core --bench engine`; `TDS_BENCH_N` (default 600), `TDS_BENCH_STEP`
//! (default `true`; empty for no step), `TDS_BENCH_RUNS` (default 5). The last line of output is
//! `BENCH_JSON {...}` with every run, for `bench/run.sh`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tds_core::model::{Priority, StatusKind};
use tds_core::{ArtifactSource, Config, OrchestratorHandle, StartOptions, SubmitRequest};

/// Environments × slots, as the workload has it.
const ENVS: usize = 3;
const SLOTS: usize = 3;
/// Successful releases kept per environment (the default `keep_releases`).
const KEEP: usize = 5;

fn main() {
    let n: usize = std::env::var("TDS_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let step = std::env::var("TDS_BENCH_STEP").unwrap_or_else(|_| "true".into());
    let runs: usize = std::env::var("TDS_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mode = std::env::var("TDS_BENCH_MODE").unwrap_or_else(|_| "tds".into());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut times = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().expect("tempdir");
        times.push(match mode.as_str() {
            "spawn" => rt.block_on(spawn_floor(n, &step)),
            "fs" => fs_floor(n, dir.path()),
            _ => rt.block_on(run(n, &step, dir.path())),
        });
    }
    let mut sorted = times.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    println!(
        "{mode}: {n} deployments (step {step:?}) over {ENVS} environments x {SLOTS} slots: median {:.3} s of {runs} runs ({:.0}/s); all: {:?}",
        median.as_secs_f64(),
        n as f64 / median.as_secs_f64(),
        times.iter().map(|t| format!("{:.3}", t.as_secs_f64())).collect::<Vec<_>>()
    );
    let runs: Vec<String> = times.iter().map(|t| format!("{:.6}", t.as_secs_f64())).collect();
    println!("BENCH_JSON {{\"mode\":\"{mode}\",\"n\":{n},\"step\":{step:?},\"runs\":[{}]}}", runs.join(","));
}

async fn run(n: usize, step: &str, dir: &Path) -> Duration {
    let d = dir.display();
    let steps = if step.is_empty() { String::new() } else { format!("steps = [{{ name = \"s\", run = \"{step}\" }}]") };
    let mut text = format!("[storage]\ndata_dir = \"{d}/data\"\n");
    for e in 0..ENVS {
        let _ = writeln!(
            text,
            "[[environments]]\nname = \"e{e}\"\nroot = \"{d}/envs/e{e}\"\nmax_concurrent = {SLOTS}\n{steps}"
        );
    }
    let config = Config::parse(&text, dir).expect("config");
    let handle = OrchestratorHandle::start(config, StartOptions::default()).await.expect("start");
    let mut events = handle.subscribe();
    let start = Instant::now();
    let submits = (0..n).map(|i| {
        let handle = handle.clone();
        async move {
            handle
                .submit(SubmitRequest {
                    environment: format!("e{}", i % ENVS),
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

/// The floor of process spawning from tokio: `sh -c <step>` N times, `ENVS × SLOTS` at a time.
async fn spawn_floor(n: usize, step: &str) -> Duration {
    let step = if step.is_empty() { "true" } else { step };
    let permits = Arc::new(tokio::sync::Semaphore::new(ENVS * SLOTS));
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let permits = Arc::clone(&permits);
            let step = step.to_owned();
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore");
                let status = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(&step)
                    .stdin(std::process::Stdio::null())
                    .status()
                    .await
                    .expect("spawn");
                assert!(status.success());
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed()
}

/// The floor of the file-system work of N deployments with no step, `ENVS × SLOTS` at a time:
/// for each, a log file written record by record, a release folder with the artifact's bytes
/// written in, a symlink renamed over `current`, and the oldest release removed beyond `KEEP`.
/// (No artifact file: small artifacts need not have one.)
fn fs_floor(n: usize, dir: &Path) -> Duration {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    for e in 0..ENVS {
        std::fs::create_dir_all(dir.join(format!("envs/e{e}/releases"))).expect("releases");
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let record =
        format!("{{\"ts\":\"2026-12-03T10:41:07.123456789Z\",\"seq\":0,\"message\":\"{}\"}}\n", "x".repeat(100));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..ENVS * SLOTS {
            let (next, logs, record) = (&next, &logs, &record);
            scope.spawn(move || {
                let env = dir.join(format!("envs/e{}", worker % ENVS));
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    // The log: one record per transition, each flushed.
                    let mut log = std::fs::File::create(logs.join(format!("{i}.1.jsonl"))).expect("log");
                    for _ in 0..20 {
                        log.write_all(record.as_bytes()).expect("log write");
                    }
                    // The release folder with its file.
                    let name = format!("{i}-1");
                    let release = env.join("releases").join(&name);
                    std::fs::create_dir(&release).expect("release");
                    std::fs::write(release.join("a.txt"), i.to_string()).expect("unpack");
                    // The `current` switch.
                    let tmp = env.join(format!(".current.tmp-{i}"));
                    std::os::unix::fs::symlink(Path::new("releases").join(&name), &tmp).expect("symlink");
                    std::fs::rename(&tmp, env.join(format!("current-{worker}"))).expect("rename");
                    // Pruning.
                    mine.push(release);
                    if mine.len() > KEEP {
                        std::fs::remove_dir_all(mine.remove(0)).expect("prune");
                    }
                }
            });
        }
    });
    start.elapsed()
}
