//! Frame-time bench of the dashboard: 10,000 deployments and 50 environments; each frame is
//! one core event applied (`update` + `Settle`) and a full render into a buffer. Prints the
//! median and p95. Run: `cargo bench -p tds-ui --bench frame`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{FixedOffset, TimeDelta};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tds_core::CoreEvent;
use tds_core::model::StatusKind;
use tds_ui::action::Action;
use tds_ui::state::AppState;
use tds_ui::update::update;
use tds_ui::{fixtures, view};

const DEPLOYMENTS: u64 = 10_000;
const ENVIRONMENTS: usize = 50;
const FRAMES: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run(width: u16, height: u16, show_finished: bool) {
    let utc = FixedOffset::east_opt(0).expect("utc");
    let mut state = AppState::new("bench", Some("127.0.0.1:7878".into()), utc, fixtures::t0());
    let (deployments, environments) = fixtures::many(DEPLOYMENTS, ENVIRONMENTS);
    update(&mut state, Action::Resize { width, height });
    update(
        &mut state,
        Action::Snapshot(Box::new(tds_core::Snapshot {
            deployments: deployments.clone(),
            environments,
            last_event_id: 0,
        })),
    );
    update(&mut state, Action::Tick(fixtures::t0()));
    if show_finished {
        update(&mut state, Action::ToggleFinished);
    }
    update(&mut state, Action::Settle);
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal.draw(|f| view::render(&state, f)).expect("draw");

    let mut times = Vec::with_capacity(FRAMES);
    let mut tick_times = Vec::new();
    for i in 0..FRAMES {
        // A realistic event: a deployment changes (progress, status); every 50th frame also a
        // clock tick (ages, trends).
        let mut d = (*deployments[(i * 7919) % deployments.len()]).clone();
        d.progress_percent = (i % 100) as u8;
        if i % 3 == 0 {
            d.status = StatusKind::Running;
        }
        let start = Instant::now();
        update(&mut state, Action::Core(CoreEvent::Deployment(Arc::new(d))));
        if i % 50 == 0 {
            update(&mut state, Action::Tick(fixtures::t0() + TimeDelta::seconds(i as i64 / 50)));
        }
        update(&mut state, Action::Settle);
        terminal.draw(|f| view::render(&state, f)).expect("draw");
        if i % 50 == 0 {
            tick_times.push(start.elapsed());
        } else {
            times.push(start.elapsed());
        }
    }
    times.sort_unstable();
    tick_times.sort_unstable();
    println!(
        "{width}x{height}, {DEPLOYMENTS} deployments ({} listed), {ENVIRONMENTS} environments, update + render per frame: \
         median {:?}, p90 {:?}, p95 {:?}, p99 {:?}; frames with a clock tick too: median {:?}",
        state.queue.rows.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.95),
        percentile(&times, 0.99),
        percentile(&tick_times, 0.5),
    );
}

fn main() {
    run(100, 30, false);
    run(100, 30, true);
    run(200, 60, true);
}
