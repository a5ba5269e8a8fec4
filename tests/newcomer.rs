//! Regressions found by a newcomer's first session (see the newcomer report): each test runs the
//! real binary on a temp folder, on loopback with port 0, with bounded waits.

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
[[environments]]
name = "slow"
root = "{dir}/envs/slow"
max_concurrent = 1
steps = [{ name = "long", run = "echo $$ > {dir}/step.pid; exec sleep 30" }]
[[environments]]
name = "fast"
root = "{dir}/envs/fast"
steps = [{ name = "quick", run = "echo \"$TDS_PARAM_X\"" }]
"#;

fn write_config(dir: &Path) -> PathBuf {
    let config = dir.join("tds.toml");
    std::fs::write(&config, CONFIG.replace("{dir}", &dir.display().to_string())).unwrap();
    config
}

/// A `tds --serve` child; killed on drop.
struct Server {
    child: Child,
    url: Option<String>,
}

impl Server {
    /// Starts `tds --serve` and waits for its "listening" line (`url` is `None` if it exited
    /// without printing one).
    fn start(dir: &Path) -> Self {
        let config = write_config(dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_tds"))
            .args(["--serve", "--config"])
            .arg(&config)
            .current_dir(dir)
            .env("TDS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tds");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        // Keep reading: a closed stdout kills `tds --serve` (see `closing_stdout_…` below).
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).map(str::to_owned);
        Self { child, url }
    }

    fn url(&self) -> &str {
        self.url.as_deref().expect("server is listening")
    }

    fn terminate(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn submit(url: &str, env: &str, params: Value) -> reqwest::Response {
    let body = json!({
        "environment": env,
        "version": "1",
        "artifact": {"name": "a.txt", "content_base64": base64::engine::general_purpose::STANDARD.encode("x")},
        "params": params,
    });
    reqwest::Client::new().post(format!("{url}/api/v1/deployments")).json(&body).send().await.unwrap()
}

async fn status(url: &str, id: &str) -> Value {
    reqwest::get(format!("{url}/api/v1/deployments/{id}/status")).await.unwrap().json().await.unwrap()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// README: `tds --serve --config assets/example.toml` next to `tds --config assets/example.toml`.
/// A second tds on the same data folder must refuse to start (the store is in use) and must not
/// touch what the first one runs. Today it runs its crash recovery first: it kills the first
/// instance's step (the attempt fails with "killed by signal 15" and uses a retry) and, when
/// its own port is taken, exits leaving its own started steps orphaned.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_on_the_same_data_dir_is_refused_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start(dir.path());
    let url = first.url().to_owned();
    let resp = submit(&url, "slow", json!({})).await;
    assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let pid_file = dir.path().join("step.pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let step_pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();

    let mut second = Server::start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut exit = None;
    while Instant::now() < deadline && exit.is_none() {
        exit = second.child.try_wait().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still_running = alive(step_pid);
    let seen = status(&url, &id).await;
    second.terminate();
    first.terminate();

    let mut problems = Vec::new();
    if exit.is_none_or(|e| e.success()) {
        problems.push(format!(
            "a second tds on the same data folder started (listening at {:?}) instead of refusing",
            second.url
        ));
    }
    if !still_running {
        problems.push(format!("the second instance killed the first instance's step (pid {step_pid})"));
    }
    if seen["status"] != "running" || seen["attempt"] != 1 {
        problems.push(format!(
            "the first instance's deployment was disturbed: status {} attempt {} error {}",
            seen["status"], seen["attempt"], seen["error"]
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `params` keys `X` and `x` both become `TDS_PARAM_X`: one value silently wins. Keys that
/// differ only in case must be refused at submission (400 naming the field).
#[tokio::test(flavor = "multi_thread")]
async fn params_that_differ_only_in_case_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let url = server.url().to_owned();
    let resp = submit(&url, "fast", json!({"X": "1", "x": "2"})).await;
    let code = resp.status();
    let body = resp.text().await.unwrap();
    server.terminate();
    assert_eq!(code, reqwest::StatusCode::BAD_REQUEST, "accepted colliding params: {body}");
    assert!(body.contains("\"error\""), "{body}");
}

/// PRODUCT.md: "`tds check-config` reports every mistake with its line". A type error (here a
/// negative `keep_releases`) must not hide the other mistakes of the file.
#[test]
fn check_config_reports_every_mistake_even_after_a_type_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[defaults]\nkeep_releases = -1\nprobe_intervall = \"1s\"\n\n[[environments]]\nname = \"e\"\nroot = \"e\"\nsteps = [{ name = \"s\", run = \"true\", timout = \"1m\" }]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tds")).args(["check-config", "--config"]).arg(&config).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("line 2"), "the type error is not reported: {text}");
    assert!(text.contains("probe_intervall"), "the unknown key on line 3 is hidden by the type error: {text}");
    assert!(text.contains("timout"), "the unknown key on line 8 is hidden by the type error: {text}");
}

/// Reads server-sent events for `wait`, returning the `id:` values seen.
async fn event_ids(url: &str, last_event_id: Option<u64>, wait: Duration) -> Vec<u64> {
    let mut request = reqwest::Client::new().get(match last_event_id {
        Some(_) => format!("{url}/api/v1/events"),
        None => format!("{url}/api/v1/events?last_event_id=0"),
    });
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let mut resp = request.send().await.unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.lines().filter_map(|l| l.strip_prefix("id:")).filter_map(|v| v.trim().parse().ok()).collect()
}

/// `GET /events` with `Last-Event-ID` must resume after a restart: the ids of the new process
/// must not start again at 1 (a client that saw id N before the restart then waits for id N+1
/// and silently misses every event until the counter catches up).
#[tokio::test(flavor = "multi_thread")]
async fn event_ids_keep_growing_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let url = server.url().to_owned();
    for _ in 0..3 {
        assert_eq!(submit(&url, "fast", json!({})).await.status(), reqwest::StatusCode::ACCEPTED);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = event_ids(&url, None, Duration::from_secs(1)).await;
    let last = *before.iter().max().expect("events before the restart");
    server.terminate();

    let mut server = Server::start(dir.path());
    let url = server.url().to_owned();
    let resp = submit(&url, "fast", json!({})).await;
    assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = event_ids(&url, Some(last), Duration::from_secs(1)).await;
    server.terminate();
    assert!(
        !after.is_empty(),
        "resuming with Last-Event-ID {last} after a restart delivers nothing, although a deployment ran since"
    );
}

/// `tds --serve | head -1` (or a supervisor that stops reading stdout): the server prints a
/// second line after "listening" and panics with "failed printing to stdout: Broken pipe" when
/// the reader has gone (exit 101, the API and every running step gone with it). A headless
/// server must survive a closed stdout.
#[test]
fn closing_stdout_after_the_listening_line_does_not_kill_the_server() {
    let mut died = Vec::new();
    for round in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path());
        let mut child = Command::new(env!("CARGO_BIN_EXE_tds"))
            .args(["--serve", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env("TDS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tds");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        // The reader is dropped here: stdout is now a broken pipe.
        std::thread::sleep(Duration::from_millis(700));
        if let Some(status) = child.try_wait().unwrap() {
            died.push(format!("round {round}: {status}"));
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    assert!(died.is_empty(), "tds --serve died after its stdout was closed: {died:?}");
}

/// The README runs `tds --serve --config assets/example.toml`: the shipped example (every key
/// with its default) and the built-in default must both pass `check-config` as they are.
#[test]
fn shipped_configs_pass_check_config() {
    for file in ["assets/example.toml", "assets/default.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tds"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["check-config", "--config", file])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{file}: {text}");
        assert!(text.contains("environment"), "{file}: check-config says what it found: {text}");
    }
}

/// Found by the second newcomer session: `tds submit --artifact <a folder>` failed with "error
/// sending request"; it is a local mistake, said before any connection is tried.
#[test]
fn submitting_a_folder_is_refused_locally() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tds"))
        .args(["submit", "--env", "fast", "--artifact"])
        .arg(dir.path())
        .args(["--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is not a file"), "{stderr}");
    assert!(!stderr.contains("request"), "no connection was tried: {stderr}");
}

/// Found by the second newcomer session: a config without environments passed `check-config`
/// and `--serve` started with nothing to deploy to.
#[test]
fn an_empty_config_is_refused_by_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.toml");
    std::fs::write(&file, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tds")).args(["check-config", "--config"]).arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("no environment is configured"), "{text}");
}

/// Found by the dashboard trial: `tds check-config | head -1` panicked ("failed printing to
/// stdout: Broken pipe") when the reader went away first; now it ends like other Unix tools.
#[test]
fn a_closed_output_pipe_ends_one_shot_commands_quietly() {
    for _ in 0..5 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tds"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["check-config", "--config", "assets/example.toml"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(matches!(out.status.code(), Some(0 | 141)), "{:?}: {stderr}", out.status);
    }
}

/// Found by the dashboard trial: a second tds on the same config (so the same port) said
/// "cannot listen … Address already in use", not that the data folder is in use and by whom.
#[test]
fn a_second_instance_on_the_same_port_names_the_data_folder_owner() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path());
    let addr = first.url().trim_start_matches("http://").to_owned();
    let mut second = Command::new(env!("CARGO_BIN_EXE_tds"))
        .args(["--serve", "--config"])
        .arg(dir.path().join("tds.toml"))
        .args(["--listen", &addr])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second instance did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.child.id())), "names the owner: {stderr}");
    assert!(!stderr.contains("Address already in use"), "{stderr}");
}
