//! Snapshot tests of every screen on a `TestBackend` (100x30 and 80x24), and the robustness
//! cases of the layout: every size from 0x0 (case C08), hostile text (case C07), wide and
//! combining characters. Fixtures have fixed ids and times (ids and times are "scrubbed" by
//! construction), so screens compare byte for byte.

use chrono::FixedOffset;
use insta::assert_snapshot;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;

use crate::action::Action;
use crate::fixtures;
use crate::logtail::LogChunk;
use crate::state::{AppState, LogTarget, Mode, Pane};
use crate::update::update;

const SIZES: [(u16, u16); 2] = [(100, 30), (80, 24)];

fn base(width: u16, height: u16) -> AppState {
    let utc = FixedOffset::east_opt(0).expect("utc");
    let mut s = AppState::new("tds demo", Some("127.0.0.1:7878".into()), utc, fixtures::t0());
    update(&mut s, Action::Resize { width, height });
    update(&mut s, Action::Tick(fixtures::t0()));
    s
}

fn empty(width: u16, height: u16) -> AppState {
    let mut s = base(width, height);
    let (_, envs) = fixtures::busy();
    let envs = envs
        .iter()
        .map(|e| {
            let mut e = (**e).clone();
            e.running = 0;
            e.queued = 0;
            e.available = true;
            e.current_release = None;
            e.last_result = None;
            std::sync::Arc::new(e)
        })
        .collect();
    let snapshot = tds_core::Snapshot { deployments: Vec::new(), environments: envs, last_event_id: 0 };
    update(&mut s, Action::Snapshot(Box::new(snapshot)));
    update(&mut s, Action::Settle);
    s
}

fn busy(width: u16, height: u16) -> AppState {
    let mut s = base(width, height);
    let (deployments, environments) = fixtures::busy();
    update(&mut s, Action::Snapshot(Box::new(tds_core::Snapshot { deployments, environments, last_event_id: 0 })));
    update(&mut s, Action::Settle);
    let target = s.logs.target.expect("the first row is selected");
    let lines = fixtures::log_lines();
    update(&mut s, Action::Log(Box::new(LogChunk { target, reset: true, lines, skipped_bytes: 0, error: None })));
    update(&mut s, Action::Settle);
    s
}

fn draw(state: &AppState) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(state.area.width, state.area.height)).expect("terminal");
    terminal.draw(|f| super::render(state, f)).expect("draw");
    terminal
}

fn keys(state: &mut AppState, actions: impl IntoIterator<Item = Action>) {
    for a in actions {
        update(state, a);
        update(state, Action::Settle);
    }
}

#[test]
fn empty_dashboard() {
    for (w, h) in SIZES {
        assert_snapshot!(format!("empty_{w}x{h}"), draw(&empty(w, h)).backend());
    }
}

/// Limits hit (staging 2/2, perf down), waiting reasons, a retry countdown, and a log with
/// escape sequences shown inert.
#[test]
fn busy_queue_with_limits_hit_and_an_unavailable_environment() {
    for (w, h) in SIZES {
        assert_snapshot!(format!("busy_{w}x{h}"), draw(&busy(w, h)).backend());
    }
}

/// With a global cap (`defaults.max_running`) the header shows the running total against it.
#[test]
fn the_header_shows_the_global_cap_when_one_is_set() {
    let mut s = busy(100, 30);
    let first = text_of(draw(&s).backend().buffer()).lines().next().unwrap_or_default().to_owned();
    assert!(!first.contains("all "), "no cap, no chip: {first}");
    let running: u32 = s.environments.iter().map(|e| e.running).sum();
    assert!(running > 0, "the fixture runs something");
    s.max_running = Some(running + 2);
    let first = text_of(draw(&s).backend().buffer()).lines().next().unwrap_or_default().to_owned();
    assert!(first.contains(&format!("all {running}/{}", running + 2)), "{first}");
}

#[test]
fn finished_deployments_with_a_failed_one_after_retries() {
    for (w, h) in SIZES {
        let mut s = busy(w, h);
        keys(&mut s, [Action::ToggleFinished, Action::Search]);
        for c in "status:failed,cancelled".chars() {
            keys(&mut s, [Action::Input(tui_input::InputRequest::InsertChar(c))]);
        }
        keys(&mut s, [Action::Submit]);
        assert_eq!(s.queue.rows.len(), 2);
        assert_snapshot!(format!("failed_{w}x{h}"), draw(&s).backend());
    }
}

#[test]
fn detail_view_of_a_failed_deployment() {
    for (w, h) in SIZES {
        let mut s = busy(w, h);
        keys(&mut s, [Action::ToggleFinished]);
        let row = s.queue.rows.iter().position(|d| d.id == fixtures::id(7)).expect("failed row");
        keys(&mut s, [Action::Top]);
        for _ in 0..row {
            keys(&mut s, [Action::Down]);
        }
        let fx = update(&mut s, Action::Open);
        assert_eq!(fx, vec![crate::action::Effect::LoadDetail(fixtures::id(7))]);
        let detail = Box::new(fixtures::failed_detail());
        keys(&mut s, [Action::DetailLoaded(fixtures::id(7), Ok(detail))]);
        assert_snapshot!(format!("detail_{w}x{h}"), draw(&s).backend());
    }
}

#[test]
fn new_deployment_form_with_an_error() {
    for (w, h) in SIZES {
        let mut s = busy(w, h);
        keys(&mut s, [Action::New, Action::FormNext]);
        for c in "/no/such/file.tar.gz".chars() {
            keys(&mut s, [Action::Input(tui_input::InputRequest::InsertChar(c))]);
        }
        keys(
            &mut s,
            [Action::PathChecked(crate::paths::check("/no/such/file.tar.gz", std::path::Path::new("/"), None))],
        );
        keys(&mut s, [Action::Submit]);
        let Mode::Form(form) = &s.mode else { panic!("form closed") };
        assert!(form.error.as_deref().is_some_and(|e| e.contains("no such file")), "{:?}", form.error);
        assert_snapshot!(format!("form_{w}x{h}"), draw(&s).backend());
    }
}

#[test]
fn help_overlay() {
    for (w, h) in SIZES {
        let mut s = busy(w, h);
        keys(&mut s, [Action::Help]);
        assert_snapshot!(format!("help_{w}x{h}"), draw(&s).backend());
    }
}

#[test]
fn cancel_confirmation() {
    let mut s = busy(80, 24);
    keys(&mut s, [Action::Cancel]);
    assert!(matches!(s.mode, Mode::Confirm(_)));
    assert_snapshot!("confirm_cancel_80x24", draw(&s).backend());
}

#[test]
fn too_small_notice() {
    for (w, h) in [(59, 24), (80, 15), (20, 5)] {
        assert_snapshot!(format!("too_small_{w}x{h}"), draw(&busy(w, h)).backend());
    }
}

fn all_modes(w: u16, h: u16) -> Vec<AppState> {
    let mut out = Vec::new();
    let s = busy(w, h);
    out.push(s.clone());
    for actions in [
        vec![Action::Help],
        vec![Action::New],
        vec![Action::Cancel],
        vec![Action::Search],
        vec![Action::Focus(Pane::Environments), Action::EditLimit],
        vec![Action::Open, Action::DetailLoaded(fixtures::id(1), Ok(Box::new(fixtures::failed_detail())))],
        vec![Action::Focus(Pane::Logs), Action::ToggleWrap, Action::Up, Action::Up],
        vec![Action::Metrics],
    ] {
        let mut m = s.clone();
        keys(&mut m, actions);
        out.push(m);
    }
    out
}

/// Case C08: any size from 0x0 up, in every mode, draws without a panic (this runs in a debug
/// build, where an arithmetic overflow would panic).
#[test]
fn c08_every_size_and_every_mode_draws_without_panicking() {
    let states = all_modes(100, 30);
    for w in (0..=130).step_by(1) {
        for h in [0u16, 1, 2, 3, 5, 8, 15, 16, 17, 24, 30, 50] {
            for s in &states {
                let mut s = s.clone();
                keys(&mut s, [Action::Resize { width: w, height: h }]);
                let _ = draw(&s);
            }
        }
    }
    for h in 0..=40 {
        for w in [0u16, 1, 3, 59, 60, 61, 80] {
            let mut s = busy(100, 30);
            keys(&mut s, [Action::Resize { width: w, height: h }, Action::Help]);
            let _ = draw(&s);
        }
    }
}

/// Case C08: 200 quick resizes between 80x24 and 1x1 come back to the full layout.
#[test]
fn c08_resizes_come_back_to_the_full_layout() {
    let mut s = busy(80, 24);
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    for i in 0..200u16 {
        let (w, h) = if i % 2 == 0 { (1 + i % 80, 1 + i % 24) } else { (80, 24) };
        terminal.backend_mut().resize(w, h);
        keys(&mut s, [Action::Resize { width: w, height: h }]);
        terminal.draw(|f| super::render(&s, f)).expect("draw");
    }
    terminal.backend_mut().resize(80, 24);
    keys(&mut s, [Action::Resize { width: 80, height: 24 }]);
    terminal.draw(|f| super::render(&s, f)).expect("draw");
    let fresh = draw(&busy(80, 24));
    assert_eq!(terminal.backend().buffer(), fresh.backend().buffer());
}

/// The screen as text, skipping the cells hidden behind wide characters.
fn text_of(buffer: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..buffer.area.height {
        let mut skip = 0;
        for x in 0..buffer.area.width {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let symbol = buffer[(x, y)].symbol();
            skip = crate::text::width(symbol).saturating_sub(1);
            out.push_str(symbol);
        }
        out.push('\n');
    }
    out
}

/// Case C07: no cell holds a control character, whatever the log, version or params held; the
/// sequences are visible instead.
#[test]
fn c07_escape_sequences_are_inert_in_every_cell() {
    for s in all_modes(100, 30) {
        let buffer = draw(&s).backend().buffer().clone();
        for cell in &buffer.content {
            assert!(
                !cell.symbol().chars().any(tds_core::sanitize::is_dangerous),
                "control character in a cell: {:?}",
                cell.symbol()
            );
        }
    }
    let text = text_of(draw(&busy(100, 30)).backend().buffer());
    assert!(text.contains("␛]0;PWNED␇␛[2J␛[31mred␛[0m [YELLOW] x"), "{text}");
    assert!(text.contains("⟨9B⟩31mC1"), "{text}");
    assert!(text.contains("漢字-β␛[2J"), "the version is inert too: {text}");
}

/// Wide, combining and emoji text never shifts the columns after it: every queue row puts its
/// status in the same column as the header's STATUS.
#[test]
fn wide_and_combining_characters_keep_columns_aligned() {
    let mut state = busy(100, 30);
    let mut wide = (*state.queue.rows[0]).clone();
    wide.environment = "é\u{301}漢👨‍👩‍👧x".into();
    wide.version = "v漢字漢字漢字漢字漢字".into();
    keys(&mut state, [Action::Core(tds_core::CoreEvent::Deployment(std::sync::Arc::new(wide)))]);
    let s = &state;
    let terminal = draw(s);
    let buffer = terminal.backend().buffer();
    let a = super::areas_of(s);
    let header_y = a.queue.y + 1;
    let col = (a.queue.x..a.queue.right().saturating_sub(6))
        .find(|&x| (0..6).map(|k| buffer[(x + k, header_y)].symbol()).collect::<String>() == "STATUS")
        .expect("STATUS header");
    for i in 0..s.queue.rows.len().min(super::table_rows(a.queue)) {
        let y = header_y + 1 + i as u16;
        let status = s.queue.rows[s.queue.offset + i].status;
        let word = &super::queue::status_word(status)[..1];
        assert_eq!(buffer[(col, y)].symbol(), word, "row {i} misaligned:\n{}", text_of(buffer));
    }
}

/// The selection follows its deployment when rows move, and the log follows the selection.
#[test]
fn selection_follows_the_deployment_and_the_log_follows_the_selection() {
    let mut s = busy(100, 30);
    keys(&mut s, [Action::Down, Action::Down]);
    let chosen = s.queue.selected_id.expect("selected");
    assert_eq!(s.logs.target, Some(LogTarget { id: chosen, attempt: 1 }));
    let mut d = (*s.find(chosen).expect("row").clone()).clone();
    d.priority = tds_core::model::Priority::Critical;
    d.status = tds_core::model::StatusKind::Running;
    keys(&mut s, [Action::Core(tds_core::CoreEvent::Deployment(std::sync::Arc::new(d)))]);
    assert_eq!(s.selected().map(|d| d.id), Some(chosen));
}

/// The mouse: a click focuses the pane under it and selects the row; the wheel scrolls the pane
/// under the pointer (the queue's selection, the log away from its end).
#[test]
fn mouse_clicks_select_and_the_wheel_scrolls_the_pane_under_it() {
    let mut s = busy(100, 30);
    let a = super::areas_of(&s);
    // Third row of the queue: border, header, then rows.
    keys(&mut s, [Action::Click { column: a.queue.x + 3, row: a.queue.y + 2 + 2 }]);
    assert_eq!((s.focus, s.queue.selected), (Pane::Queue, 2));
    assert_eq!(s.logs.target.map(|t| t.id), s.selected().map(|d| d.id), "the log follows the click");
    keys(&mut s, [Action::Click { column: a.environments.x + 2, row: a.environments.y + 2 + 1 }]);
    assert_eq!((s.focus, s.envs.selected), (Pane::Environments, 1));
    keys(&mut s, [Action::Scroll { column: a.queue.x + 5, row: a.queue.y + 3, delta: 1 }]);
    assert_eq!(s.queue.selected, 5, "the wheel moved the queue, not the focused pane");
    assert_eq!(s.focus, Pane::Environments, "scrolling does not steal the focus");
    assert!(s.logs.follow);
    keys(&mut s, [Action::Scroll { column: a.logs.x + 5, row: a.logs.y + 3, delta: -1 }]);
    // The selected deployment changed with the wheel; its log is empty here, so feed lines.
    let target = s.logs.target.expect("target");
    let mut lines = Vec::new();
    for _ in 0..10 {
        lines.extend(fixtures::log_lines());
    }
    keys(&mut s, [Action::Log(Box::new(LogChunk { target, reset: true, lines, skipped_bytes: 0, error: None }))]);
    keys(&mut s, [Action::Scroll { column: a.logs.x + 5, row: a.logs.y + 3, delta: -1 }]);
    assert!(!s.logs.follow, "scrolling the log up stops following");
    keys(&mut s, [Action::Focus(Pane::Logs), Action::Bottom]);
    assert!(s.logs.follow, "G follows the end again");
}

/// Found by a dashboard trial: the pane keeps the last `LOG_RING` lines and `g` showed the
/// first kept one as if it were the start; a search said "no match" for older text.
#[test]
fn the_log_pane_says_what_it_no_longer_holds() {
    let mut s = busy(100, 30);
    let target = s.logs.target.expect("target");
    let template = fixtures::log_lines().pop().expect("a line");
    let lines: Vec<_> = (0..crate::state::LOG_RING + 250)
        .map(|i| {
            let mut l = template.clone();
            l.text = format!("line {i}");
            l
        })
        .collect();
    keys(&mut s, [Action::Log(Box::new(LogChunk { target, reset: true, lines, skipped_bytes: 0, error: None }))]);
    keys(&mut s, [Action::Focus(Pane::Logs), Action::Top]);
    let text = text_of(draw(&s).backend().buffer());
    assert!(text.contains("… 250 earlier lines not kept here (tds logs ID shows all)"), "{text}");
    assert!(text.contains("line 250"), "{text}");
    s.logs.search = Some("line 3 ".into());
    keys(&mut s, [Action::NextMatch]);
    let flash = s.flash.as_ref().map(|f| f.text.clone()).unwrap_or_default();
    assert!(flash.contains("in the last 5000 lines"), "{flash}");
}
