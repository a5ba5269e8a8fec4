//! The real binary, for real: `tds --serve` killed with SIGKILL at random moments while
//! submissions pour in (crash safety), and stopped with SIGTERM while work runs (graceful
//! shutdown). Only loopback, port 0, bounded waits.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "1s"
[storage]
data_dir = "{dir}/data"
[defaults]
kill_grace = "1s"
retry = { max_retries = 2, initial_delay = "300ms", multiplier = 2.0 }
[[environments]]
name = "a"
root = "{dir}/envs/a"
max_concurrent = 3
steps = [{ name = "work", run = "sleep 0.$(( $(od -An -N1 -tu1 /dev/urandom) % 3 ))5; test -z \"$TDS_PARAM_FAIL\"" }]
[[environments]]
name = "b"
root = "{dir}/envs/b"
max_concurrent = 2
steps = [{ name = "work", run = "sleep 0.2; test -z \"$TDS_PARAM_FAIL\"" }]
[[environments]]
name = "slow"
root = "{dir}/envs/slow"
max_concurrent = 1
steps = [{ name = "long", run = "echo $$ > {dir}/slow-$TDS_ATTEMPT.pid; sleep 30 & echo $! > {dir}/slow-child-$TDS_ATTEMPT.pid; wait" }]
"#;

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let config = dir.join("tds.toml");
        std::fs::write(&config, CONFIG.replace("{dir}", &dir.display().to_string())).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tds"))
            .args(["--serve", "--config"])
            .arg(&config)
            .current_dir(dir)
            .env("TDS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tds");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("listening line").to_owned();
        Self { child, url }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

async fn post(client: &reqwest::Client, url: &str, env: &str, version: &str, fail: bool) -> Option<String> {
    let mut params = serde_json::Map::new();
    if fail {
        params.insert("FAIL".into(), json!("1"));
    }
    let body = json!({
        "environment": env,
        "version": version,
        "artifact": {"name": "a.txt", "content_base64": base64::engine::general_purpose::STANDARD.encode(version)},
        "params": params,
    });
    let resp = client.post(format!("{url}/api/v1/deployments")).json(&body).send().await.ok()?;
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        return None;
    }
    Some(resp.json::<Value>().await.ok()?["id"].as_str()?.to_owned())
}

fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("data").join("tds.db")).unwrap()
}

/// Processes whose environment names one of our deployments: step processes still alive.
fn step_processes(ids: &HashSet<String>) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        let ours = environ
            .split(|&b| b == 0)
            .filter_map(|v| v.strip_prefix(b"TDS_DEPLOYMENT_ID="))
            .any(|id| ids.contains(std::str::from_utf8(id).unwrap_or("")));
        if ours && alive {
            out.push(pid);
        }
    }
    out
}

/// Crash safety: several rounds of a few hundred submissions over the API with `kill -9` at
/// random moments. Afterwards every acknowledged deployment exists exactly once and ends
/// terminal; none stays `running` without a process; interrupted attempts were rolled back and
/// retried or failed; slots are free (everything finished); retry schedules continued; no step
/// process is left; the store passes `PRAGMA integrity_check`.
#[tokio::test(flavor = "multi_thread")]
async fn crash_safety_under_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().to_owned();
    let client = client();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    for round in 0..4 {
        let server = Server::start(&path);
        let url = server.url.clone();
        let submitters: Vec<_> = (0..6)
            .map(|t| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..25 {
                        let env = ["a", "b", "a", "b"][(i + t) % 4];
                        let fail = (i * 7 + t) % 9 == 0;
                        if let Some(id) = post(&client, &url, env, &format!("r{round}-t{t}-{i}"), fail).await {
                            ids.push(id);
                        }
                    }
                    ids
                })
            })
            .collect();
        // Kill at a random moment, measured in acknowledged submissions rather than time so
        // that a loaded machine still gets a few hundred in all.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let target = 25 + (seed % 60) as usize;
        let deadline = Instant::now() + Duration::from_secs(20);
        let db_path = path.join("data").join("tds.db");
        while Instant::now() < deadline {
            let stored: i64 = rusqlite::Connection::open(&db_path)
                .and_then(|c| c.query_row("SELECT count(*) FROM deployments", [], |r| r.get(0)))
                .unwrap_or(0);
            if stored as usize >= acknowledged.len() + target {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill9();
        for s in submitters {
            acknowledged.extend(s.await.unwrap());
        }
    }
    assert!(acknowledged.len() >= 100, "too few acknowledged submissions: {}", acknowledged.len());

    // Final run: everything acknowledged finishes.
    let server = Server::start(&path);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let unfinished: i64 = db(&path)
            .query_row("SELECT count(*) FROM deployments WHERE finished_at IS NULL", [], |r| r.get(0))
            .unwrap();
        if unfinished == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{unfinished} deployments never finished (a slot held forever?)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let conn = db(&path);
    let mut stmt = conn.prepare("SELECT id, status, attempt, max_retries FROM deployments").unwrap();
    let rows: Vec<(String, String, u32, u32)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect();
    let stored: HashMap<&str, (&str, u32, u32)> =
        rows.iter().map(|(id, s, a, m)| (id.as_str(), (s.as_str(), *a, *m))).collect();
    assert_eq!(stored.len(), rows.len(), "duplicate ids in the store");
    for id in &acknowledged {
        let (status, _, _) = stored.get(id.as_str()).unwrap_or_else(|| panic!("acknowledged {id} was lost"));
        assert!(["succeeded", "failed", "cancelled"].contains(status), "{id} ended {status}");
    }
    // Interrupted attempts: each was recorded, rolled back, and followed by a retry or a failure.
    let interrupted: Vec<(String, u32)> = conn
        .prepare("SELECT deployment_id, attempt FROM attempts WHERE error LIKE 'interrupted%'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, attempt) in &interrupted {
        let (status, last, _) = stored[id.as_str()];
        assert!(last > *attempt || status == "failed", "{id} attempt {attempt} interrupted but not retried or failed");
        let log = std::fs::read_to_string(path.join("data/logs").join(format!("{id}.{attempt}.jsonl"))).unwrap();
        assert!(log.contains("\"event\":\"rolled_back\""), "interrupted attempt {id}/{attempt} was not rolled back");
    }
    // Retry schedules continued: every failed one used its whole budget.
    for (id, (status, attempt, max_retries)) in &stored {
        if *status == "failed" {
            assert!(*attempt > *max_retries, "{id} failed after {attempt} attempts, before its retries");
        }
    }
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let ours: HashSet<String> = stored.keys().map(|s| (*s).to_owned()).collect();
    server.kill9();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !step_processes(&ours).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(step_processes(&ours), Vec::<i32>::new(), "step processes left behind");
    eprintln!("{} acknowledged, {} interrupted attempts recovered", acknowledged.len(), interrupted.len());
}

/// Graceful shutdown: on SIGTERM new submissions get 503 while running work drains; after the
/// drain time the running step's whole group is killed and rolled back; the process exits 0
/// with no child left; at the next start the interrupted deployment runs again.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_refuses_new_work_and_leaves_no_child() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let client = client();
    let mut server = Server::start(&path);
    let id = post(&client, &server.url, "slow", "long", false).await.expect("submit");
    let child_pid = path.join("slow-child-1.pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !child_pid.exists() {
        assert!(Instant::now() < deadline, "the long step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pids: Vec<i32> = ["slow-1.pid", "slow-child-1.pid"]
        .iter()
        .map(|f| std::fs::read_to_string(path.join(f)).unwrap().trim().parse().unwrap())
        .collect();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    // The signal is handled asynchronously: ask until the drain has begun (bounded).
    let t = Instant::now();
    let refused = loop {
        let resp = client
            .post(format!("{}/api/v1/deployments", server.url))
            .json(&json!({"environment": "a", "artifact": {"name": "a.txt", "content_base64": "eA=="}}))
            .send()
            .await
            .expect("the API still answers while draining");
        if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            break resp;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "still accepting 5 s after SIGTERM: {}", resp.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let envelope: Value = refused.json().await.unwrap();
    assert!(envelope["error"]["code"].is_string(), "{envelope}");

    let t = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "tds did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "step process {pid} outlived tds");
    }
    let (state, attempt): (String, u32) = db(&path)
        .query_row("SELECT status, attempt FROM deployments WHERE id = ?1", [&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((state.as_str(), attempt), ("queued", 2), "interrupted by shutdown: queued for its next attempt");
    assert!(std::fs::read_dir(path.join("envs/slow/releases")).unwrap().next().is_none(), "release not rolled back");

    // The next start runs it again.
    let server = Server::start(&path);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.join("slow-2.pid").exists() {
        assert!(Instant::now() < deadline, "the interrupted deployment did not run again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill9();
    let ours = HashSet::from([id]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !step_processes(&ours).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in step_processes(&ours) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}
