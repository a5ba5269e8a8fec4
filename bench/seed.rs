//! Fills a data folder's store with a history of finished deployments (with their attempts and
//! timelines) for the scale bench: `tds --serve` start-up, memory and query latency at size.
//!
//! Usage: `cargo run --release --example bench-seed -- DATA_DIR [COUNT, default 100000]`.
//! Deployments are spread over three environments (`dev`, `staging`, `perf`), one every 20 s
//! back from now; one in ten failed (after a retry), one in ten was cancelled.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use tds_core::model::{ArtifactInfo, Deployment, DeploymentId, Phase, Priority, Status, StatusKind};
use tds_core::store::{AttemptRecord, SqliteStore, Store, TransitionRecord, Write};

/// Deployments per transaction.
const BATCH: u64 = 2_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: bench-seed DATA_DIR [COUNT]")?);
    let count: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let store = SqliteStore::open(&dir.join("tds.db"))?;
    let now = Utc::now();
    let envs = ["dev", "staging", "perf"];
    let mut writes = Vec::new();
    for i in 0..count {
        let created_at = now - TimeDelta::seconds((count - i) as i64 * 20);
        let queue_wait = 500 + (i % 7) as i64 * 300;
        let started_at = created_at + TimeDelta::milliseconds(queue_wait);
        let duration = 20_000 + (i % 13) as i64 * 1_500;
        let finished_at = started_at + TimeDelta::milliseconds(duration);
        let (status, attempts) = match i % 10 {
            0 => (Status::Failed { finished_at, reason: "step 'install' exited with status 3".into() }, 2),
            1 => (Status::Cancelled { finished_at, reason: "cancelled by operator".into() }, 1),
            _ => (Status::Succeeded { finished_at }, 1),
        };
        let id = DeploymentId::from_ulid(ulid::Ulid::from_parts(created_at.timestamp_millis() as u64, u128::from(i)));
        let kind = status.kind();
        writes.push(Write::Insert {
            deployment: Box::new(Deployment {
                id,
                environment: envs[(i % 3) as usize].into(),
                version: format!("1.{}.{}", i / 1000, i % 1000),
                priority: if i % 17 == 0 { Priority::High } else { Priority::Normal },
                params: BTreeMap::from([("REGION".to_owned(), "eu".to_owned())]),
                artifact: ArtifactInfo {
                    name: "site.tar.gz".into(),
                    size: 18_231,
                    sha256: "ab".repeat(32),
                    kind: None,
                },
                requested_by: "ci".into(),
                created_at,
                attempt: attempts,
                retry_count: attempts - 1,
                max_retries: 3,
                started_at: Some(started_at),
                duration_ms: Some(duration as u64),
                queue_wait_ms: Some(queue_wait as u64),
                last_error: None,
                status,
                cancel_requested: false,
                wait_reason: None,
            }),
            idempotency: None,
        });
        for attempt in 1..=attempts {
            let outcome = if attempt < attempts { "failed" } else { kind.as_str() };
            writes.push(Write::Attempt(AttemptRecord {
                deployment_id: id,
                attempt,
                queued_at: created_at,
                started_at: Some(started_at),
                finished_at: Some(finished_at),
                outcome: Some(outcome.into()),
                error: None,
                duration_ms: Some(duration as u64),
            }));
        }
        // The timeline a real run leaves: queued, the five phases, the end.
        let mut timeline = vec![(StatusKind::Queued, None)];
        timeline.extend(
            [Phase::Prepare, Phase::Steps, Phase::Activate, Phase::Verify, Phase::Finalize]
                .into_iter()
                .map(|p| (StatusKind::Running, Some(p))),
        );
        timeline.push((kind, None));
        for (n, (status, phase)) in timeline.into_iter().enumerate() {
            writes.push(Write::Transition(TransitionRecord {
                deployment_id: id,
                attempt: attempts,
                at: created_at + TimeDelta::milliseconds(n as i64 * 3_000),
                status,
                phase,
                message: None,
            }));
        }
        if (i + 1) % BATCH == 0 || i + 1 == count {
            store.apply(&[&writes])?;
            writes.clear();
        }
    }
    println!("seeded {count} deployments into {} in {:.1?}", dir.display(), started.elapsed());
    Ok(())
}
