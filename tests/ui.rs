//! The dashboard driven for real: key sequences through the real event loop (on a test
//! backend whose screen the test reads) against a real engine on a temp folder, checking the
//! engine's state: cancel really cancels, retry really queues, the form really submits.

use std::io;
use std::time::Duration;

use chrono::FixedOffset;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use ratatui::Terminal;
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};
use tds_core::OrchestratorHandle;
use tds_core::model::{DeploymentView, Priority, StatusKind};
use tds_ui::UiOptions;
use tds_ui::testing::{Screen, SharedBackend};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{Harness, site, targz, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// A running dashboard: send it keys, read its screen.
struct Ui {
    keys: UnboundedSender<io::Result<Event>>,
    screen: Screen,
    shutdown: CancellationToken,
    task: JoinHandle<io::Result<()>>,
}

impl Ui {
    fn start(handle: &OrchestratorHandle, width: u16, height: u16) -> Self {
        let (backend, screen) = SharedBackend::new(width, height);
        let (keys, events) = unbounded();
        let shutdown = CancellationToken::new();
        let options = UiOptions {
            api: Some("127.0.0.1:7878".into()),
            title: "tds test".into(),
            ephemeral: false,
            shutdown: shutdown.clone(),
        };
        let handle = handle.clone();
        let utc = FixedOffset::east_opt(0).expect("utc");
        let task = tokio::spawn(async move {
            let mut terminal = Terminal::new(backend).map_err(|e| io::Error::other(e.to_string()))?;
            tds_ui::event::run_loop(&mut terminal, handle, options, utc, events).await
        });
        Self { keys, screen, shutdown, task }
    }

    fn code(&self, code: KeyCode, modifiers: KeyModifiers) {
        let key = KeyEvent { code, modifiers, kind: KeyEventKind::Press, state: KeyEventState::NONE };
        self.keys.unbounded_send(Ok(Event::Key(key))).expect("the dashboard is running");
    }

    /// Types each character as a key press.
    fn keys(&self, text: &str) {
        for c in text.chars() {
            let modifiers = if c.is_ascii_uppercase() { KeyModifiers::SHIFT } else { KeyModifiers::NONE };
            self.code(KeyCode::Char(c), modifiers);
        }
    }

    fn press(&self, code: KeyCode) {
        self.code(code, KeyModifiers::NONE);
    }

    fn resize(&self, width: u16, height: u16) {
        self.screen.resize(width, height);
        self.keys.unbounded_send(Ok(Event::Resize(width, height))).expect("the dashboard is running");
    }

    /// Waits until the screen shows `text`; on a timeout, fails with the screen.
    async fn see(&self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.screen.text();
            if now.contains(text) {
                return now;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {text:?} on the screen:\n{now}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the loop through the shutdown token (as SIGTERM does) and returns how it ended.
    async fn stop(self) -> io::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("the dashboard stops").expect("no panic")
    }
}

async fn wait_deployment(h: &Harness, what: &str, f: impl Fn(&DeploymentView) -> bool) -> DeploymentView {
    let handle = h.handle.clone();
    let f = &f;
    wait_for(WAIT, what, || {
        let handle = handle.clone();
        async move { handle.snapshot().deployments.iter().find(|d| f(d)).map(|d| (**d).clone()) }
    })
    .await
}

const SLOW: &str = r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
max_concurrent = 1
steps = [{ name = "install", run = "echo started $TDS_VERSION; sleep 30" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_key_asks_then_really_cancels_a_running_deployment() {
    let h = Harness::start(SLOW).await;
    let d = h.submit("web", "site.tar.gz", site("1.0.0"), "1.0.0").await;
    h.wait_status(d.id, StatusKind::Running, WAIT).await;
    let ui = Ui::start(&h.handle, 100, 30);
    ui.see("started 1.0.0").await;
    ui.keys("c");
    ui.see("Cancel deployment").await;
    ui.keys("n");
    ui.see("not cancelled").await;
    assert_eq!(h.handle.deployment(d.id).await.expect("d").status, StatusKind::Running);
    ui.keys("c");
    ui.see("Cancel deployment").await;
    ui.keys("y");
    let done = h.wait_status(d.id, StatusKind::Cancelled, WAIT).await;
    assert!(done.finished_at.is_some());
    ui.see(&format!("{} cancelled", d.id.short())).await;
    ui.stop().await.expect("clean exit");
}

const FAILS: &str = r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
steps = [{ name = "install", run = "echo broken >&2; exit 3" }]
retry = { max_retries = 0 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_key_really_queues_a_new_attempt_of_a_failed_deployment() {
    let h = Harness::start(FAILS).await;
    let d = h.submit("web", "site.tar.gz", site("2.0.0"), "2.0.0").await;
    h.wait_status(d.id, StatusKind::Failed, WAIT).await;
    let ui = Ui::start(&h.handle, 100, 30);
    ui.see("failed").await;
    ui.see("broken").await;
    ui.keys("r");
    wait_deployment(&h, "attempt 2", |v| v.id == d.id && v.attempt == 2).await;
    ui.see("queued again (attempt 2)").await;
    h.wait_terminal(d.id, WAIT).await;
    ui.keys("]");
    ui.see("attempt 2/2").await;
    ui.keys("[");
    ui.see("attempt 1/2").await;
    ui.stop().await.expect("clean exit");
}

const FAST: &str = r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
steps = [{ name = "install", run = "cat VERSION; echo \" param=$TDS_PARAM_COLOR\"" }]
[[environments]]
name = "api"
root = "{dir}/envs/api"
steps = [{ name = "install", run = "true" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_really_submits_a_file_and_shows_its_errors() {
    let h = Harness::start(FAST).await;
    let artifact = h.dir.path().join("site-7.7.7.tar.gz");
    std::fs::write(&artifact, site("7.7.7")).expect("artifact");
    let ui = Ui::start(&h.handle, 100, 30);
    ui.see("no deployments yet").await;
    ui.keys("n");
    ui.see("New deployment").await;
    // Environment: "api" by its first letter, then back to "web" with the arrow.
    ui.keys("a");
    ui.see("◂ api ▸").await;
    ui.press(KeyCode::Left);
    ui.see("◂ web ▸").await;
    ui.press(KeyCode::Down);
    // A path that does not exist: the form says so and does not submit.
    ui.keys(&h.dir.path().join("nope.tar.gz").display().to_string());
    ui.see("no such file").await;
    ui.press(KeyCode::Enter);
    ui.see("artifact: no such file").await;
    // Completion: the folder, then the only file that starts with "site".
    for _ in 0.."nope.tar.gz".len() {
        ui.press(KeyCode::Backspace);
    }
    ui.keys("sit");
    ui.see("Tab completes").await;
    ui.press(KeyCode::Tab);
    ui.see("✓ file").await;
    ui.press(KeyCode::Down);
    ui.keys("7.7.7");
    ui.press(KeyCode::Down);
    ui.keys("h");
    ui.see("◂ high ▸").await;
    ui.press(KeyCode::Down);
    ui.keys("COLOR=blue 9bad=x");
    ui.press(KeyCode::Enter);
    ui.see("not a valid key").await;
    for _ in 0.." 9bad=x".len() {
        ui.press(KeyCode::Backspace);
    }
    ui.press(KeyCode::Enter);
    let d = wait_deployment(&h, "the form's deployment", |v| v.version == "7.7.7").await;
    assert_eq!(d.environment, "web");
    assert_eq!(d.priority, Priority::High);
    assert_eq!(d.requested_by, "dashboard");
    assert_eq!(d.params.get("COLOR").map(String::as_str), Some("blue"));
    assert_eq!(d.artifact.name, "site-7.7.7.tar.gz");
    ui.see(&format!("queued {} web 7.7.7", d.id.short())).await;
    let done = h.wait_terminal(d.id, WAIT).await;
    assert_eq!(done.status, StatusKind::Succeeded);
    assert_eq!(std::fs::read_to_string(h.root("web").join("current/VERSION")).expect("VERSION"), "7.7.7");
    // The log pane shows the new deployment's output (found with the log search).
    ui.keys("3/param=blue");
    ui.press(KeyCode::Enter);
    ui.see("match 1/1").await;
    ui.see("7.7.7 param=blue").await;
    ui.stop().await.expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_pause_and_limit_keys_reach_the_engine() {
    let h = Harness::start(SLOW).await;
    let a = h.submit("web", "site.tar.gz", site("1.0.0"), "1.0.0").await;
    h.wait_status(a.id, StatusKind::Running, WAIT).await;
    let b = h.submit("web", "site.tar.gz", site("1.0.1"), "1.0.1").await;
    let ui = Ui::start(&h.handle, 100, 30);
    ui.see("web at capacity 1/1").await;
    ui.keys("j+");
    wait_deployment(&h, "b raised", |v| v.id == b.id && v.priority == Priority::High).await;
    ui.see("priority is now high").await;
    ui.keys("-");
    wait_deployment(&h, "b lowered", |v| v.id == b.id && v.priority == Priority::Normal).await;
    // Pause and resume the environment from the Environments pane.
    ui.keys("2p");
    wait_for(WAIT, "web paused", || async { h.handle.environment("web").filter(|e| e.paused) }).await;
    ui.see("web paused").await;
    ui.keys("p");
    wait_for(WAIT, "web resumed", || async { h.handle.environment("web").filter(|e| !e.paused) }).await;
    // A new limit lets the queued one start.
    ui.keys("L");
    ui.see("limit of web").await;
    ui.press(KeyCode::Backspace);
    // An answer out of range keeps the prompt open and says why, beside it.
    ui.keys("0");
    ui.press(KeyCode::Enter);
    ui.see("limit of web (1-1000): 0  limit must be a number from 1 to 1000").await;
    ui.press(KeyCode::Backspace);
    ui.keys("2");
    ui.press(KeyCode::Enter);
    h.wait_status(b.id, StatusKind::Running, WAIT).await;
    assert_eq!(h.handle.environment("web").expect("web").max_concurrent, 2);
    ui.see("web limit is now 2").await;
    ui.stop().await.expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_asks_while_deployments_run_and_ctrl_c_quits_at_once() {
    let h = Harness::start(SLOW).await;
    let d = h.submit("web", "site.tar.gz", site("1.0.0"), "1.0.0").await;
    h.wait_status(d.id, StatusKind::Running, WAIT).await;
    let ui = Ui::start(&h.handle, 100, 30);
    ui.see("running").await;
    ui.keys("q");
    ui.see("1 deployment is running").await;
    // The question counts live: a second one starting while it is shown is counted.
    h.handle.set_limit("web", 2).await.expect("limit");
    let e = h.submit("web", "site.tar.gz", site("1.0.1"), "1.0.1").await;
    h.wait_status(e.id, StatusKind::Running, WAIT).await;
    ui.see("2 deployments are running").await;
    ui.keys("n");
    ui.keys("?");
    ui.see("Help").await;
    assert!(!ui.task.is_finished());
    ui.code(KeyCode::Char('c'), KeyModifiers::CONTROL);
    let ended = tokio::time::timeout(WAIT, ui.task).await.expect("ends").expect("no panic");
    ended.expect("clean exit");
    // Quitting the dashboard does not touch the engine; the caller shuts it down.
    assert_eq!(h.handle.deployment(d.id).await.expect("d").status, StatusKind::Running);
}

const HOSTILE: &str = r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
steps = [{ name = "install", run = '''printf '\033]0;PWNED\007\033[2J\033[31mred\033[0m [YELLOW] x\n\033[?1049l\033]52;c;cHduZWQ=\007\rOVER\n\302\23331mC1\n'; printf 'before\n\377\376\307 bad \342\202\n'; echo after''' }]
"#;

/// Cases C05 and C07 end to end: what a step prints reaches the log pane visible and inert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c07_hostile_output_is_shown_inert_in_the_log_pane() {
    let h = Harness::start(HOSTILE).await;
    let d = h.submit("web", "site.tar.gz", site("1.0.0"), "v\u{1b}[2J").await;
    h.wait_terminal(d.id, WAIT).await;
    let ui = Ui::start(&h.handle, 120, 60);
    let text = ui.see("after").await;
    assert!(text.contains("␛]0;PWNED␇␛[2J␛[31mred␛[0m [YELLOW] x"), "{text}");
    assert!(text.contains("␛[?1049l␛]52;c;cHduZWQ=␇␍OVER"), "{text}");
    assert!(text.contains("⟨9B⟩31mC1"), "{text}");
    assert!(text.contains("before") && text.contains("\u{fffd}"), "{text}");
    assert!(text.contains("v␛[2J"), "the version is inert too: {text}");
    for cell in &ui.screen.buffer().content {
        assert!(!cell.symbol().chars().any(tds_core::sanitize::is_dangerous), "{:?}", cell.symbol());
    }
    ui.stop().await.expect("clean exit");
}

/// Case C08 with the real loop: while a log is followed, resize to 1x1, 0x0, 2x5, then 200
/// quick resizes, then back; the layout returns and the engine kept working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c08_tiny_sizes_and_resize_storms_while_a_log_is_followed() {
    let h = Harness::start(FAST).await;
    let ui = Ui::start(&h.handle, 80, 24);
    ui.see("no deployments yet").await;
    let d = h.submit("web", "site.tar.gz", site("3.0.0"), "3.0.0").await;
    ui.see("3.0.0").await;
    for (w, hgt) in [(1, 1), (0, 0), (2, 5), (3, 3)] {
        ui.resize(w, hgt);
    }
    ui.keys("?");
    ui.keys("?n");
    ui.press(KeyCode::Esc);
    for i in 0..200u16 {
        if i % 2 == 0 { ui.resize(1 + i % 80, 1 + i % 24) } else { ui.resize(80, 24) }
    }
    ui.resize(10, 4);
    ui.see("Terminal").await;
    ui.resize(100, 30);
    ui.see("1 Queue").await;
    assert_eq!(h.wait_terminal(d.id, WAIT).await.status, StatusKind::Succeeded);
    ui.see("succeeded").await;
    ui.stop().await.expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_detail_and_log_search_by_keys() {
    let h = Harness::start(FAST).await;
    let a = h.submit("web", "site.tar.gz", site("4.0.0"), "4.0.0").await;
    let b = h.submit("api", "site.tar.gz", site("5.0.0"), "5.0.0").await;
    h.wait_terminal(a.id, WAIT).await;
    h.wait_terminal(b.id, WAIT).await;
    let ui = Ui::start(&h.handle, 100, 30);
    ui.keys("/env:api");
    ui.see("filter (text, status:S, env:E) /env:api").await;
    ui.press(KeyCode::Enter);
    let text = ui.see("row 1/1").await;
    assert!(text.contains("5.0.0      norm") && !text.contains("4.0.0      norm"), "{text}");
    ui.press(KeyCode::Esc);
    ui.see("/2 ┓").await;
    // A filter with a mistake is not taken: the prompt stays open and says why.
    ui.keys("/status:bogus");
    ui.press(KeyCode::Enter);
    ui.see("/status:bogus  filter: unknown status 'bogus'").await;
    ui.press(KeyCode::Esc);
    ui.see("/2 ┓").await;
    ui.keys("/4.0");
    ui.press(KeyCode::Enter);
    ui.see("row 1/1").await;
    ui.press(KeyCode::Enter);
    ui.see("Timeline").await;
    ui.see("succeeded").await;
    ui.press(KeyCode::Esc);
    ui.keys("m");
    ui.see("Last 24 hours").await;
    ui.see("DORA overall").await;
    ui.see("succeeded 2").await;
    ui.press(KeyCode::Esc);
    ui.see("1 Queue").await;
    ui.keys("3/4.0.0 param");
    ui.press(KeyCode::Enter);
    ui.see("match 1/1").await;
    ui.keys("n");
    ui.see("match 1/1").await;
    ui.stop().await.expect("clean exit");
}

/// A big log: the pane enters it near its end (the ring stays bounded) and still follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_log_is_entered_near_its_end() {
    let env = r#"
[[environments]]
name = "web"
root = "{dir}/envs/web"
steps = [{ name = "install", run = "seq 1 60000; echo the-end" }]
"#;
    let h = Harness::start(env).await;
    let d = h.submit("web", "site.tar.gz", targz(&[("a", b"a", 0o644)]), "1").await;
    h.wait_terminal(d.id, WAIT).await;
    let ui = Ui::start(&h.handle, 100, 30);
    ui.keys("3/the-end");
    ui.press(KeyCode::Enter);
    ui.see("the-end").await;
    ui.keys("g");
    ui.see("earlier").await;
    ui.see("not kept here (tds logs ID shows all)").await;
    ui.stop().await.expect("clean exit");
}
