//! The event loop, generic over the ratatui `Backend` so that tests drive it on a
//! `TestBackend` with scripted events. It waits (never spins) on terminal events, core events,
//! effect answers, a one-second clock and, while a live log is shown, a log poll; it redraws
//! only after something happened.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;
use futures::{Stream, StreamExt as _};
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::Event;
use tds_core::model::EnvironmentView;
use tds_core::{OrchestratorHandle, Snapshot};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::action::Action;
use crate::logtail::LogTailer;
use crate::state::AppState;
use crate::{UiOptions, effect, keys, update, view};

/// The clock in the header ticks this often (and ages, countdowns, trends move with it).
const CLOCK: Duration = Duration::from_secs(1);
/// A live log is polled this often (and at once when its deployment changes).
const LOG_POLL: Duration = Duration::from_millis(250);
/// After its deployment ends, its log is still polled this long for the last records.
const LOG_GRACE: Duration = Duration::from_secs(3);
/// Most core events applied before a frame is drawn.
const BATCH: usize = 1024;

/// The live view, with environments from the configuration until the engine publishes its own.
pub fn snapshot(handle: &OrchestratorHandle) -> Snapshot {
    let mut s = handle.snapshot();
    if s.environments.is_empty() {
        s.environments = handle
            .config()
            .environments
            .iter()
            .map(|e| {
                Arc::new(EnvironmentView {
                    name: e.name.clone(),
                    max_concurrent: e.max_concurrent,
                    running: 0,
                    queued: 0,
                    free_slots: e.max_concurrent,
                    available: true,
                    unavailable_since: None,
                    probe_error: None,
                    paused: false,
                    current_release: None,
                    last_result: None,
                    last_result_at: None,
                })
            })
            .collect();
    }
    s
}

/// Owns the state and the outbox of effects.
struct Driver {
    state: AppState,
    handle: OrchestratorHandle,
    tx: mpsc::UnboundedSender<Action>,
    redraw: bool,
}

impl Driver {
    fn dispatch(&mut self, action: Action) {
        for effect in update::update(&mut self.state, action) {
            effect::spawn(&self.handle, effect, &self.tx);
        }
        self.redraw = true;
    }
}

fn backend_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Runs the dashboard on `terminal` with terminal `events` until quit, the end of `events`,
/// or `options.shutdown`.
pub async fn run_loop<B, S>(
    terminal: &mut Terminal<B>,
    handle: OrchestratorHandle,
    options: UiOptions,
    offset: FixedOffset,
    mut events: S,
) -> io::Result<()>
where
    B: Backend,
    S: Stream<Item = io::Result<Event>> + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Subscribe before the snapshot: nothing committed in between is missed.
    let mut core = handle.subscribe();
    let mut state = AppState::new(options.title.clone(), options.api.clone(), offset, handle.now());
    state.max_running = handle.config().defaults.max_running;
    state.ephemeral = options.ephemeral;
    let mut d = Driver { state, handle: handle.clone(), tx, redraw: true };
    let size = terminal.size().map_err(backend_error)?;
    d.dispatch(Action::Resize { width: size.width, height: size.height });
    d.dispatch(Action::Snapshot(Box::new(snapshot(&handle))));
    d.dispatch(Action::Tick(handle.now()));

    let mut clock = tokio::time::interval(CLOCK);
    clock.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(LOG_POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tailer = LogTailer::default();
    let mut log_active_until = Instant::now();
    let mut core_open = true;

    loop {
        if d.redraw {
            d.dispatch(Action::Settle);
            sync_tailer(&mut d, &mut tailer);
            terminal.draw(|frame| view::render(&d.state, frame)).map_err(backend_error)?;
            d.redraw = false;
        }
        if d.state.quit {
            break;
        }
        if crate::tui::restored_by_panic() {
            return Err(io::Error::other("a task panicked (see the log); the terminal was restored"));
        }
        let live_log = tailer.target().is_some_and(|t| d.state.find(t.id).is_some_and(|v| !v.is_terminal()));
        if live_log {
            log_active_until = Instant::now() + LOG_GRACE;
        }
        let polling = tailer.target().is_some() && (live_log || Instant::now() < log_active_until);
        tokio::select! {
            () = options.shutdown.cancelled() => break,
            event = events.next() => match event {
                Some(Ok(event)) => {
                    if let Some(action) = keys::map(&d.state, &event) {
                        d.dispatch(action);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => break,
            },
            received = core.recv(), if core_open => {
                let target = tailer.target().map(|t| t.id);
                let mut touched = false;
                let mut next = Some(received);
                let mut n = 0;
                while let Some(item) = next.take() {
                    match item {
                        Ok(envelope) => {
                            if let tds_core::CoreEvent::Deployment(v) = &envelope.event {
                                touched |= Some(v.id) == target;
                            }
                            d.dispatch(Action::Core(envelope.event));
                        }
                        Err(RecvError::Lagged(_)) => d.dispatch(Action::Snapshot(Box::new(snapshot(&handle)))),
                        Err(RecvError::Closed) => core_open = false,
                    }
                    n += 1;
                    if n < BATCH {
                        next = match core.try_recv() {
                            Ok(e) => Some(Ok(e)),
                            Err(TryRecvError::Lagged(k)) => Some(Err(RecvError::Lagged(k))),
                            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
                        };
                    }
                }
                if touched {
                    log_active_until = Instant::now() + LOG_GRACE;
                    if let Some(chunk) = tailer.poll() {
                        d.dispatch(Action::Log(Box::new(chunk)));
                    }
                }
            }
            Some(action) = rx.recv() => d.dispatch(action),
            _ = clock.tick() => d.dispatch(Action::Tick(handle.now())),
            _ = poll.tick(), if polling => {
                if let Some(chunk) = tailer.poll() {
                    d.dispatch(Action::Log(Box::new(chunk)));
                }
            }
            () = tokio::task::yield_now(), if tailer.has_more() => {
                if let Some(chunk) = tailer.poll() {
                    d.dispatch(Action::Log(Box::new(chunk)));
                }
            }
        }
    }
    Ok(())
}

/// Points the tailer at the log the state wants and hands over the first lines.
fn sync_tailer(d: &mut Driver, tailer: &mut LogTailer) {
    if d.state.logs.target == tailer.target() {
        return;
    }
    match d.state.logs.target {
        Some(t) => {
            let chunk = tailer.open(t, d.handle.log_path(t.id, t.attempt));
            d.dispatch(Action::Log(Box::new(chunk)));
            d.dispatch(Action::Settle);
        }
        None => tailer.close(),
    }
}
