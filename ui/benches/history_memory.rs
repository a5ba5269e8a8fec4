//! Memory of the dashboard process with 100,000 finished deployments in the store: starts a
//! real orchestrator on a temp folder holding them, runs the real dashboard loop, shows every
//! finished deployment (`a`) and pages through history with `G` until the dashboard's cap, then
//! prints the resident memory. History is paged from the store, never held whole.
//! Run: `cargo bench -p tds-ui --bench history_memory`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

use chrono::{FixedOffset, TimeDelta, Utc};
use futures::channel::mpsc::unbounded;
use ratatui::Terminal;
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};
use tds_core::model::{ArtifactInfo, Deployment, DeploymentId, Priority, Status};
use tds_core::store::{SqliteStore, Store, Write};
use tds_core::{Config, OrchestratorHandle, StartOptions};
use tds_ui::UiOptions;
use tds_ui::testing::SharedBackend;

const HISTORY: u64 = 100_000;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Resident memory: total, and the part that is the process's own heap (not the store's
/// memory-mapped database file, which the kernel can drop at any time).
fn rss() -> String {
    format!(
        "{} MiB (heap and stacks {} MiB, mapped files {} MiB)",
        status_kib("VmRSS:") / 1024,
        status_kib("RssAnon:") / 1024,
        status_kib("RssFile:") / 1024
    )
}

fn fill(db: &std::path::Path) {
    let store = SqliteStore::open(db).expect("store");
    let now = Utc::now();
    let mut generator = ulid::Generator::new();
    let envs = ["dev", "staging", "perf"];
    let mut batch = Vec::with_capacity(1000);
    for i in 0..HISTORY {
        let created_at = now - TimeDelta::seconds((HISTORY - i) as i64 * 20);
        let finished_at = created_at + TimeDelta::seconds(30);
        let status = match i % 10 {
            0 => Status::Failed { finished_at, reason: "step install exited with status 3".into() },
            1 => Status::Cancelled { finished_at, reason: "cancelled by ci".into() },
            _ => Status::Succeeded { finished_at },
        };
        let id = generator.generate_from_datetime(created_at.into()).expect("ulid");
        batch.push(Write::Insert {
            deployment: Box::new(Deployment {
                id: DeploymentId::from_ulid(id),
                environment: envs[(i % 3) as usize].into(),
                version: format!("1.{}.{}", i / 1000, i % 1000),
                priority: Priority::Normal,
                params: BTreeMap::from([("REGION".to_owned(), "eu".to_owned())]),
                artifact: ArtifactInfo {
                    name: "site.tar.gz".into(),
                    size: 18_231,
                    sha256: "ab".repeat(32),
                    kind: None,
                },
                requested_by: "ci".into(),
                created_at,
                attempt: 1,
                retry_count: 0,
                max_retries: 3,
                started_at: Some(created_at + TimeDelta::seconds(1)),
                duration_ms: Some(29_000),
                queue_wait_ms: Some(1_000),
                last_error: None,
                status,
                cancel_requested: false,
                wait_reason: None,
            }),
            idempotency: None,
        });
        if batch.len() == 1000 {
            store.apply(&[&batch]).expect("insert");
            batch.clear();
        }
    }
}

fn key(c: char) -> Event {
    let code = KeyCode::Char(c);
    Event::Key(KeyEvent { code, modifiers: KeyModifiers::NONE, kind: KeyEventKind::Press, state: KeyEventState::NONE })
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let mut text = format!("[storage]\ndata_dir = \"{d}/data\"\n");
    for e in ["dev", "staging", "perf"] {
        let _ = writeln!(text, "[[environments]]\nname = \"{e}\"\nroot = \"{d}/envs/{e}\"");
        text.push_str("steps = [{ name = \"install\", run = \"true\" }]\n");
    }
    let config = Config::parse(&text, dir.path()).expect("config");
    std::fs::create_dir_all(dir.path().join("data")).expect("data");
    let started = Instant::now();
    fill(&dir.path().join("data/tds.db"));
    println!("filled the store with {HISTORY} finished deployments in {:?}", started.elapsed());
    let before = rss();
    let handle = OrchestratorHandle::start(config, StartOptions { probes: false, ..StartOptions::default() })
        .await
        .expect("start");
    let (backend, screen) = SharedBackend::new(200, 60);
    let (keys, events) = unbounded();
    let options = UiOptions {
        api: None,
        title: "bench".into(),
        ephemeral: false,
        shutdown: tokio_util::sync::CancellationToken::new(),
    };
    let shutdown = options.shutdown.clone();
    let ui_handle = handle.clone();
    let task = tokio::spawn(async move {
        let mut terminal = Terminal::new(backend).expect("terminal");
        let utc = FixedOffset::east_opt(0).expect("utc");
        tds_ui::event::run_loop(&mut terminal, ui_handle, options, utc, events).await
    });
    keys.unbounded_send(Ok::<_, io::Error>(key('a'))).expect("send");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_start = rss();
    // Page through history: G (last row) asks for an older page each time, until the cap.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    let mut same = 0;
    while Instant::now() < deadline && same < 20 {
        keys.unbounded_send(Ok(key('G'))).expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = screen.text();
        let position = text.split("row ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("").to_owned();
        if position == last {
            same += 1;
        } else {
            same = 0;
            last = position;
        }
    }
    let paged = rss();
    shutdown.cancel();
    let _ = task.await;
    handle.shutdown(None).await;
    println!("rows listed after paging: {last}");
    println!("RSS before the orchestrator:           {before}");
    println!("RSS with orchestrator + dashboard:      {after_start}");
    println!("RSS after paging through history:       {paged}");
    println!("peak RSS: {} MiB", status_kib("VmHWM:") / 1024);
}
