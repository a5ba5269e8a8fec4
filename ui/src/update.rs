//! `update`: the single place the dashboard's state changes. It is synchronous and does no
//! I/O; anything that must touch the orchestrator or the disk is returned as an [`Effect`] for
//! the loop to carry out, and its outcome comes back as another [`Action`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::TimeDelta;
use tds_core::CoreEvent;
use tds_core::model::{DeploymentView, Priority, StatusKind};
use tui_input::{Input, InputRequest};

use crate::action::{Action, Effect, Submission};
use crate::filter::Filter;
use crate::state::{
    AppState, Confirm, DetailState, Flash, FormField, FormState, HISTORY_CAP, LOG_RING, LogTarget, MetricsState, Mode,
    Pane, PathStatus, Prompt, PromptKind, RECENT_MINUTES,
};
use crate::trends::TrendSeries;
use crate::view::{self, areas_of, table_rows};

/// How long a footer message stays.
const FLASH_SECS: i64 = 4;
/// Trends are recomputed at most this often (and when the window changes).
const TRENDS_EVERY_SECS: i64 = 5;
/// The core's trends are read again this often…
const CORE_TRENDS_EVERY_SECS: i64 = 15;
/// …or this soon after something finished or the window changed.
const CORE_TRENDS_SOON_SECS: i64 = 2;
/// The metrics view refreshes this often while shown.
const METRICS_EVERY_SECS: i64 = 5;
/// Finished deployments kept from events beyond the live snapshot's own bound.
const KEEP_FINISHED: usize = 1000;
/// Rows the mouse wheel moves.
const WHEEL_ROWS: i64 = 3;
/// Highest limit `L` accepts.
const MAX_LIMIT: u32 = 1000;

/// Applies one action; returns what the loop must do next.
pub fn update(state: &mut AppState, action: Action) -> Vec<Effect> {
    let mut fx = Vec::new();
    if areas_of(state).too_small {
        // Below the minimum size only the notice is drawn: a key must not cancel, retry or
        // reprioritize a selection the operator cannot see. `q` quits at once, as the notice
        // says: a question could not be seen either.
        if matches!(action, Action::Quit) {
            state.quit = true;
            return fx;
        }
        if acts_unseen(&action) {
            return fx;
        }
    }
    if let Mode::Form(form) = &mut state.mode
        && form.tab_pending
        && matches!(
            action,
            Action::Input(_)
                | Action::Paste(_)
                | Action::FormTab
                | Action::FormNext
                | Action::FormPrev
                | Action::Submit
        )
    {
        form.typed_ahead.push(action);
        return fx;
    }
    match action {
        Action::Tick(now) => tick(state, now, &mut fx),
        Action::Resize { width, height } => {
            state.area = ratatui::layout::Rect::new(0, 0, width, height);
            keep_visible(state);
        }
        Action::Snapshot(snapshot) => {
            state.deployments = snapshot.deployments.into_iter().map(|d| (d.id, d)).collect();
            if !snapshot.environments.is_empty() {
                state.environments = snapshot.environments;
            }
            state.history.older.retain(|d| !state.deployments.contains_key(&d.id));
            state.queue.dirty = true;
            state.trends.dirty = true;
        }
        Action::Core(CoreEvent::Deployment(view)) => deployment_changed(state, view, &mut fx),
        Action::Core(CoreEvent::Environment(view)) => {
            match state.environments.iter_mut().find(|e| e.name == view.name) {
                Some(slot) => *slot = view,
                None => state.environments.push(view),
            }
            state.envs.selected = state.envs.selected.min(state.environments.len().saturating_sub(1));
        }
        Action::Settle => settle(state),
        Action::Log(chunk) => log_chunk(state, *chunk),

        Action::Quit => match state.mode {
            Mode::Normal => {
                if state.running() > 0 {
                    state.mode = Mode::Confirm(Confirm::Quit);
                } else {
                    state.quit = true;
                }
            }
            _ => state.mode = Mode::Normal,
        },
        Action::ForceQuit => state.quit = true,
        Action::Help => {
            state.mode = if matches!(state.mode, Mode::Help { .. }) { Mode::Normal } else { Mode::Help { scroll: 0 } };
        }
        Action::Back => back(state),
        Action::FocusNext => state.focus = state.focus.next(),
        Action::FocusPrev => state.focus = state.focus.prev(),
        Action::Focus(pane) => state.focus = pane,
        Action::Up => step(state, -1, &mut fx),
        Action::Down => step(state, 1, &mut fx),
        Action::Left => horizontal(state, false, &mut fx),
        Action::Right => horizontal(state, true, &mut fx),
        Action::Top => step(state, i64::MIN / 2, &mut fx),
        Action::Bottom => step(state, i64::MAX / 2, &mut fx),
        Action::PageUp => {
            let page = page_size(state);
            step(state, -page, &mut fx);
        }
        Action::PageDown => {
            let page = page_size(state);
            step(state, page, &mut fx);
        }
        Action::Open => open(state, &mut fx),
        Action::Cancel => ask_cancel(state),
        Action::Retry => retry(state, &mut fx),
        Action::PriorityUp => priority(state, true, &mut fx),
        Action::PriorityDown => priority(state, false, &mut fx),
        Action::New => new_form(state),
        Action::Search => {
            let (kind, value) = if state.focus == Pane::Logs {
                (PromptKind::LogSearch, state.logs.search.clone().unwrap_or_default())
            } else {
                (PromptKind::Filter, state.queue.filter_text.clone())
            };
            state.mode = Mode::Prompt(Prompt { kind, input: Input::new(value) });
        }
        Action::NextMatch => find_match(state, true),
        Action::PrevMatch => find_match(state, false),
        Action::TogglePause => match state.target_env() {
            Some(env) => {
                let (environment, paused) = (env.name.clone(), !env.paused);
                flash(state, format!("{} {}…", if paused { "pausing" } else { "resuming" }, environment), false);
                fx.push(Effect::SetPaused { environment, paused });
            }
            None => flash(state, "no environment selected".into(), true),
        },
        Action::EditLimit => match state.target_env() {
            Some(env) => {
                let environment = env.name.clone();
                let input = Input::new(env.max_concurrent.to_string());
                state.mode = Mode::Prompt(Prompt { kind: PromptKind::Limit { environment }, input });
            }
            None => flash(state, "no environment selected".into(), true),
        },
        Action::ToggleFollow => {
            if state.logs.follow {
                state.logs.top = view::logs::tail_top(&state.logs, areas_of(state).logs);
                state.logs.follow = false;
            } else {
                state.logs.follow = true;
            }
            flash(state, format!("log follow {}", if state.logs.follow { "on" } else { "off" }), false);
        }
        Action::ToggleWrap => {
            state.logs.wrap = !state.logs.wrap;
            flash(state, format!("log wrap {}", if state.logs.wrap { "on" } else { "off" }), false);
        }
        Action::ToggleFinished => {
            state.queue.show_finished = !state.queue.show_finished;
            state.queue.dirty = true;
            let text = if state.queue.show_finished {
                "showing all finished deployments (older ones load as you scroll down)".to_owned()
            } else {
                format!("showing live deployments and those finished in the last {RECENT_MINUTES} min")
            };
            flash(state, text, false);
        }
        Action::PrevAttempt => attempt(state, false),
        Action::NextAttempt => attempt(state, true),
        Action::Metrics => {
            state.mode = Mode::Metrics(Box::new(MetricsState {
                loading: true,
                requested_at: Some(state.now),
                ..MetricsState::default()
            }));
            fx.push(Effect::LoadMetrics);
        }
        Action::MetricsLoaded(result) => {
            if let Mode::Metrics(m) = &mut state.mode {
                m.loading = false;
                match result {
                    Ok(figures) => {
                        let (metrics, performance) = *figures;
                        m.metrics = Some(Box::new(metrics));
                        m.performance = Some(Box::new(performance));
                        m.error = None;
                    }
                    Err(e) => m.error = Some(e),
                }
            }
        }
        Action::TrendWindow => {
            let next = state.trends.window.next();
            set_window(state, next, &mut fx);
        }
        Action::Answer(yes) => answer(state, yes, &mut fx),
        Action::Input(request) => input(state, request, &mut fx),
        Action::Paste(text) => {
            let text: String = text.trim_end_matches(['\r', '\n']).chars().filter(|c| !c.is_control()).collect();
            for c in text.chars() {
                input(state, InputRequest::InsertChar(c), &mut fx);
            }
        }
        Action::Submit => submit(state, &mut fx),
        Action::FormTab => form_tab(state, &mut fx),
        Action::FormNext => {
            if let Mode::Form(f) = &mut state.mode {
                f.field = f.field.next();
            }
        }
        Action::FormPrev => {
            if let Mode::Form(f) = &mut state.mode {
                f.field = f.field.prev();
            }
        }
        Action::Scroll { column, row, delta } => wheel(state, column, row, delta, &mut fx),
        Action::Click { column, row } => click(state, column, row),

        Action::Done(text) => flash(state, text, false),
        Action::Failed(text) => flash(state, text, true),
        Action::Submitted(result) => submitted(state, result),
        Action::DetailLoaded(id, result) => {
            if let Some(d) = state.mode.detail_mut()
                && d.id == id
            {
                d.loading = false;
                match result {
                    Ok(detail) => {
                        d.detail = Some(detail);
                        d.error = None;
                    }
                    Err(e) => d.error = Some(e),
                }
                if d.stale {
                    d.stale = false;
                    d.loading = true;
                    fx.push(Effect::LoadDetail(id));
                }
            }
        }
        Action::HistoryPage(result) => history_page(state, result),
        Action::TrendsLoaded(result) => {
            state.trends.loading = false;
            match result {
                Ok(core) if core.window == state.trends.window => {
                    state.trends.core = Some(core);
                    state.trends.dirty = true;
                }
                Ok(_) => state.trends.stale = true,
                Err(e) => tracing::debug!(error = %e, "trends from the core failed; using the dashboard's own"),
            }
        }
        Action::PathChecked(check) => {
            if let Mode::Form(f) = &mut state.mode
                && f.artifact.value() == check.input
            {
                f.check = check;
                if std::mem::take(&mut f.tab_pending) {
                    let typed_ahead = std::mem::take(&mut f.typed_ahead);
                    form_tab(state, &mut fx);
                    for action in typed_ahead {
                        fx.extend(update(state, action));
                    }
                }
            }
        }
    }
    fx
}

fn flash(state: &mut AppState, text: String, error: bool) {
    state.flash = Some(Flash { text, error, until: state.now + TimeDelta::seconds(FLASH_SECS) });
}

fn tick(state: &mut AppState, now: chrono::DateTime<chrono::Utc>, fx: &mut Vec<Effect>) {
    state.now = now;
    prune_finished(state);
    // The "recently finished" cut moves with the clock.
    if !state.queue.dirty {
        let keep: Vec<bool> = state.queue.rows.iter().map(|d| !d.is_terminal() || listed(state, d)).collect();
        if keep.contains(&false) {
            let mut k = keep.into_iter();
            state.queue.rows.retain(|_| k.next().unwrap_or(true));
        }
    }
    if state.flash.as_ref().is_some_and(|f| now >= f.until) {
        state.flash = None;
    }
    let waiting = u32::try_from(state.waiting()).unwrap_or(u32::MAX);
    state.trends.depth.record(now, waiting);
    if state.trends.computed_at.is_none_or(|t| (now - t).num_seconds().abs() >= TRENDS_EVERY_SECS) {
        state.trends.dirty = true;
    }
    if let Mode::Metrics(m) = &mut state.mode
        && !m.loading
        && m.requested_at.is_none_or(|r| (now - r).num_seconds().abs() >= METRICS_EVERY_SECS)
    {
        m.loading = true;
        m.requested_at = Some(now);
        fx.push(Effect::LoadMetrics);
    }
    let t = &state.trends;
    let since = t.requested_at.map(|r| (now - r).num_seconds().abs());
    let due = since.is_none_or(|s| s >= CORE_TRENDS_EVERY_SECS || (t.stale && s >= CORE_TRENDS_SOON_SECS));
    if !t.loading && due {
        state.trends.loading = true;
        state.trends.stale = false;
        state.trends.requested_at = Some(now);
        fx.push(Effect::LoadTrends(state.trends.window));
    }
}

fn deployment_changed(state: &mut AppState, view: Arc<DeploymentView>, fx: &mut Vec<Effect>) {
    let id = view.id;
    let was_terminal = state.deployments.get(&id).is_some_and(|d| d.is_terminal());
    if view.is_terminal() && !was_terminal {
        state.trends.dirty = true;
        state.trends.stale = true;
    }
    let mut old = state.deployments.get(&id).cloned();
    if !state.history.older.is_empty()
        && let Some(i) = state.history.older.iter().position(|d| d.id == id)
    {
        old = Some(state.history.older.remove(i));
    }
    if !state.queue.dirty {
        patch_rows(state, old.as_deref(), &view);
    }
    state.deployments.insert(id, view);
    if let Some(d) = state.mode.detail_mut()
        && d.id == id
    {
        if d.loading {
            d.stale = true;
        } else {
            d.loading = true;
            fx.push(Effect::LoadDetail(id));
        }
    }
}

/// Display order: running first, then what runs next (priority, then first come), then
/// retries by due time, then finished ones newest first.
fn order(a: &DeploymentView, b: &DeploymentView) -> Ordering {
    fn rank(d: &DeploymentView) -> u8 {
        match d.status {
            StatusKind::Running | StatusKind::RollingBack => 0,
            StatusKind::Queued => 1,
            StatusKind::RetryWait => 2,
            StatusKind::Succeeded | StatusKind::Failed | StatusKind::Cancelled => 3,
        }
    }
    let (ra, rb) = (rank(a), rank(b));
    ra.cmp(&rb).then_with(|| match ra {
        0 => a.id.cmp(&b.id),
        1 => b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)),
        2 => a.next_retry_at.cmp(&b.next_retry_at).then_with(|| a.id.cmp(&b.id)),
        _ => b.finished_at.cmp(&a.finished_at).then_with(|| b.id.cmp(&a.id)),
    })
}

/// Whether the queue lists `d` (filter, finished toggle, recent cut).
fn listed(state: &AppState, d: &DeploymentView) -> bool {
    let q = &state.queue;
    let finished = q.show_finished || q.filter.names_statuses();
    let recent = state.now - TimeDelta::minutes(RECENT_MINUTES);
    (finished || d.finished_at.is_none_or(|t| t >= recent)) && q.filter.matches(d)
}

/// Applies one changed deployment to the sorted rows without rebuilding them: remove its old
/// row, insert the new one where the order puts it. With 10,000 deployments this is what keeps
/// a frame cheap (a rebuild sorts everything).
fn patch_rows(state: &mut AppState, old: Option<&DeploymentView>, new: &Arc<DeploymentView>) {
    let was_listed = old.is_some_and(|d| listed(state, d));
    let is_listed = listed(state, new);
    let q = &mut state.queue;
    if let Some(old) = old
        && !old.is_terminal()
    {
        q.live -= 1;
        q.running -= usize::from(old.status.holds_slot());
    }
    if !new.is_terminal() {
        q.live += 1;
        q.running += usize::from(new.status.holds_slot());
    }
    if was_listed {
        let old = old.map(|d| d.id);
        // Same place in the order (most events: progress): replace in place.
        if let Some(i) = q.rows.iter().position(|d| Some(d.id) == old) {
            if is_listed && order(&q.rows[i], new) == Ordering::Equal {
                q.rows[i] = Arc::clone(new);
                return;
            }
            q.rows.remove(i);
        }
    }
    if is_listed {
        let at = q.rows.binary_search_by(|d| order(d, new)).unwrap_or_else(|i| i);
        q.rows.insert(at, Arc::clone(new));
    }
}

fn rebuild_rows(state: &mut AppState) {
    let q = &mut state.queue;
    let finished = q.show_finished || q.filter.names_statuses();
    let recent = state.now - TimeDelta::minutes(RECENT_MINUTES);
    let mut rows: Vec<Arc<DeploymentView>> = Vec::with_capacity(state.deployments.len());
    let (mut live, mut running) = (0, 0);
    for d in state.deployments.values() {
        if !d.is_terminal() {
            live += 1;
            if d.status.holds_slot() {
                running += 1;
            }
        }
        let listed = finished || d.finished_at.is_none_or(|t| t >= recent);
        if listed && q.filter.matches(d) {
            rows.push(Arc::clone(d));
        }
    }
    if finished {
        rows.extend(state.history.older.iter().filter(|d| q.filter.matches(d)).cloned());
    }
    rows.sort_unstable_by(|a, b| order(a, b));
    q.rows = rows;
    q.live = live;
    q.running = running;
    q.dirty = false;
}

fn settle(state: &mut AppState) {
    if state.queue.dirty {
        rebuild_rows(state);
    }
    let q = &mut state.queue;
    let found = if q.follow_top { Some(0) } else { None }.or_else(|| {
        q.selected_id.and_then(|id| {
            // The common case: the selected row did not move.
            if q.rows.get(q.selected).is_some_and(|d| d.id == id) {
                return Some(q.selected);
            }
            q.rows.iter().position(|d| d.id == id)
        })
    });
    q.selected = found.unwrap_or_else(|| q.selected.min(q.rows.len().saturating_sub(1)));
    q.selected_id = q.rows.get(q.selected).map(|d| d.id);
    keep_visible(state);
    sync_log_target(state);
    if state.trends.dirty {
        let depth_now = u32::try_from(state.waiting()).unwrap_or(u32::MAX);
        let t = &state.trends;
        state.trends.series = if let Some(core) = t.core.as_deref().filter(|c| c.window == t.window) {
            TrendSeries::from_core(core, &t.depth, depth_now)
        } else {
            let all = state.deployments.values().chain(state.history.older.iter()).map(AsRef::as_ref);
            TrendSeries::compute(t.window, state.now, all, &t.depth, depth_now)
        };
        state.trends.computed_at = Some(state.now);
        state.trends.dirty = false;
    }
}

/// Finished deployments from events pile up over a long session; keep the newest.
fn prune_finished(state: &mut AppState) {
    let finished = state.deployments.values().filter(|d| d.is_terminal()).count();
    if finished <= KEEP_FINISHED * 2 {
        return;
    }
    let mut ends: Vec<_> = state.deployments.values().filter_map(|d| d.finished_at).collect();
    ends.sort_unstable();
    let cut = ends[ends.len() - KEEP_FINISHED];
    let keep = state.queue.selected_id;
    state.deployments.retain(|id, d| d.finished_at.is_none_or(|t| t >= cut) || Some(*id) == keep);
    state.queue.dirty = true;
}

fn keep_visible(state: &mut AppState) {
    let a = areas_of(state);
    if a.too_small {
        // Nothing is listed; keep the scroll positions for when the terminal grows again.
        return;
    }
    let rows = table_rows(a.queue).max(1);
    let q = &mut state.queue;
    if q.selected < q.offset {
        q.offset = q.selected;
    } else if q.selected >= q.offset + rows {
        q.offset = q.selected + 1 - rows;
    }
    q.offset = q.offset.min(q.rows.len().saturating_sub(rows));
    let env_rows = table_rows(a.environments).max(1);
    let e = &mut state.envs;
    e.selected = e.selected.min(state.environments.len().saturating_sub(1));
    if e.selected < e.offset {
        e.offset = e.selected;
    } else if e.selected >= e.offset + env_rows {
        e.offset = e.selected + 1 - env_rows;
    }
    e.offset = e.offset.min(state.environments.len().saturating_sub(env_rows));
}

fn sync_log_target(state: &mut AppState) {
    let selected = match state.mode.detail() {
        Some(d) => state.find(d.id).cloned(),
        None => state.selected().cloned(),
    };
    let logs = &mut state.logs;
    if selected.as_ref().map(|d| d.id) != logs.target.map(|t| t.id) {
        logs.pinned = None;
    }
    let want = selected.map(|d| {
        let latest = d.attempt.max(1);
        LogTarget { id: d.id, attempt: logs.pinned.unwrap_or(latest).clamp(1, latest) }
    });
    if want != logs.target {
        logs.target = want;
        logs.lines.clear();
        logs.first = 0;
        logs.top = 0;
        logs.follow = true;
        logs.skipped_bytes = 0;
        logs.error = None;
        logs.loaded = false;
    }
}

fn log_chunk(state: &mut AppState, chunk: crate::logtail::LogChunk) {
    let logs = &mut state.logs;
    if Some(chunk.target) != logs.target {
        return;
    }
    if chunk.reset {
        logs.lines.clear();
        logs.first = 0;
        logs.top = 0;
        logs.skipped_bytes = chunk.skipped_bytes;
    }
    logs.loaded = true;
    logs.error = chunk.error;
    logs.lines.extend(chunk.lines);
    while logs.lines.len() > LOG_RING {
        logs.lines.pop_front();
        logs.first += 1;
    }
    logs.top = logs.top.max(logs.first);
}

fn page_size(state: &AppState) -> i64 {
    let a = areas_of(state);
    let rows = match (&state.mode, state.focus) {
        (Mode::Detail(_) | Mode::Metrics(_) | Mode::Help { .. }, _) => usize::from(a.body.height.saturating_sub(4)),
        (_, Pane::Queue) => table_rows(a.queue),
        (_, Pane::Environments) => table_rows(a.environments),
        (_, Pane::Logs | Pane::Trends) => usize::from(a.logs.height.saturating_sub(2)),
    };
    rows.max(1) as i64
}

/// Keys and clicks other than quitting: what the "terminal too small" notice holds back.
fn acts_unseen(action: &Action) -> bool {
    !matches!(
        action,
        Action::Tick(_)
            | Action::Resize { .. }
            | Action::Snapshot(_)
            | Action::Core(_)
            | Action::Settle
            | Action::Log(_)
            | Action::Quit
            | Action::ForceQuit
            | Action::Done(_)
            | Action::Failed(_)
            | Action::Submitted(_)
            | Action::DetailLoaded(..)
            | Action::HistoryPage(_)
            | Action::PathChecked(_)
            | Action::TrendsLoaded(_)
            | Action::MetricsLoaded(_)
    )
}

fn moved(current: usize, delta: i64, len: usize) -> usize {
    let last = len.saturating_sub(1) as i64;
    (current as i64).saturating_add(delta).clamp(0, last.max(0)) as usize
}

/// Moves the selection or scrolls, depending on what has focus.
fn step(state: &mut AppState, delta: i64, fx: &mut Vec<Effect>) {
    let overlay_end = usize::from(view::overlay_scroll_max(state)) + 1;
    match &mut state.mode {
        Mode::Help { scroll } => {
            *scroll = moved(usize::from(*scroll), delta, overlay_end) as u16;
            return;
        }
        Mode::Detail(d) => {
            d.scroll = moved(usize::from(d.scroll), delta, overlay_end) as u16;
            return;
        }
        Mode::Metrics(m) => {
            m.scroll = moved(usize::from(m.scroll), delta, overlay_end) as u16;
            return;
        }
        Mode::Normal => {}
        _ => return,
    }
    match state.focus {
        Pane::Queue => {
            let q = &mut state.queue;
            q.selected = moved(q.selected, delta, q.rows.len());
            q.selected_id = q.rows.get(q.selected).map(|d| d.id);
            q.follow_top = false;
            keep_visible(state);
            sync_log_target(state);
            maybe_page_history(state, fx);
        }
        Pane::Environments => {
            state.envs.selected = moved(state.envs.selected, delta, state.environments.len());
            keep_visible(state);
        }
        Pane::Logs => scroll_log(state, delta),
        Pane::Trends => {
            let w = state.trends.window;
            set_window(state, if delta < 0 { w.prev() } else { w.next() }, fx);
        }
    }
}

fn set_window(state: &mut AppState, window: crate::trends::TrendWindow, fx: &mut Vec<Effect>) {
    let t = &mut state.trends;
    t.window = window;
    t.dirty = true;
    if t.loading {
        t.stale = true;
    } else {
        t.loading = true;
        t.stale = false;
        t.requested_at = Some(state.now);
        fx.push(Effect::LoadTrends(window));
    }
}

fn horizontal(state: &mut AppState, right: bool, fx: &mut Vec<Effect>) {
    if matches!(state.mode, Mode::Normal) && state.focus == Pane::Trends {
        let w = state.trends.window;
        set_window(state, if right { w.next() } else { w.prev() }, fx);
    }
}

fn scroll_log(state: &mut AppState, delta: i64) {
    let rect = areas_of(state).logs;
    let logs = &mut state.logs;
    let tail = view::logs::tail_top(logs, rect);
    let current = if logs.follow { tail } else { logs.top.min(tail) };
    let target = (current as i64).saturating_add(delta).clamp(logs.first as i64, tail as i64) as u64;
    logs.top = target;
    if delta < 0 {
        logs.follow = false;
    } else if target >= tail {
        logs.follow = true;
    }
}

/// Near the end of the list with finished deployments shown: read the next older page.
fn maybe_page_history(state: &mut AppState, fx: &mut Vec<Effect>) {
    let q = &state.queue;
    let finished = q.show_finished || q.filter.names_statuses();
    if !finished || state.history.loading || state.history.exhausted {
        return;
    }
    if q.selected + table_rows(areas_of(state).queue) < q.rows.len() {
        return;
    }
    let before = state
        .deployments
        .values()
        .filter(|d| d.is_terminal())
        .chain(state.history.older.iter())
        .map(|d| d.created_at)
        .min();
    state.history.loading = true;
    fx.push(Effect::LoadHistory { before });
}

fn history_page(state: &mut AppState, result: Result<Box<tds_core::store::Page<DeploymentView>>, String>) {
    state.history.loading = false;
    match result {
        Ok(page) => {
            let known: HashSet<_> = state.history.older.iter().map(|d| d.id).collect();
            let fresh: Vec<_> = page
                .items
                .into_iter()
                .filter(|d| !state.deployments.contains_key(&d.id) && !known.contains(&d.id))
                .map(Arc::new)
                .collect();
            let full = state.history.older.len() + fresh.len() >= HISTORY_CAP;
            let n = fresh.len();
            state.history.exhausted = fresh.is_empty() || full;
            state.history.older.extend(fresh);
            state.history.older.truncate(HISTORY_CAP);
            state.queue.dirty = true;
            if full {
                let text = format!(
                    "showing the newest {} older deployments; for earlier ones: tds history --limit/--offset",
                    state.history.older.len()
                );
                flash(state, text, false);
            } else if n > 0 {
                flash(state, format!("loaded {n} older deployments from history"), false);
            } else {
                flash(state, "no older deployments in history".into(), false);
            }
        }
        Err(e) => flash(state, format!("history: {e}"), true),
    }
}

fn back(state: &mut AppState) {
    if matches!(state.mode, Mode::Confirm(_)) {
        // Esc answers "no" (and comes back to the detail view a cancel was asked over).
        return answer(state, false, &mut Vec::new());
    }
    if !matches!(state.mode, Mode::Normal) {
        if let Mode::Prompt(prompt) = &state.mode {
            if prompt.kind == PromptKind::Filter {
                // Esc in the filter prompt clears it, like k9s.
                set_filter(state, String::new());
            }
            // The error that kept the prompt open goes with it.
            state.flash = None;
        }
        state.mode = Mode::Normal;
        return;
    }
    state.flash = None;
    if !state.queue.filter_text.is_empty() {
        set_filter(state, String::new());
    } else if state.logs.search.is_some() {
        state.logs.search = None;
    }
}

fn set_filter(state: &mut AppState, text: String) {
    state.queue.filter = Filter::parse(&text);
    state.queue.filter_text = text;
    state.queue.dirty = true;
}

/// The deployment that keys act on: the detail view's, else the queue's selection.
fn subject(state: &AppState) -> Option<Arc<DeploymentView>> {
    match state.mode.detail() {
        Some(d) => state.find(d.id).cloned(),
        None => state.selected().cloned(),
    }
}

fn label(d: &DeploymentView) -> String {
    format!("{} {} {}", d.id.short(), crate::text::clean(&d.environment), crate::text::clean(&d.version))
}

fn open(state: &mut AppState, fx: &mut Vec<Effect>) {
    match state.focus {
        Pane::Environments => {
            if let Some(env) = state.selected_env() {
                let text = format!("env:{}", env.name);
                set_filter(state, text);
                state.focus = Pane::Queue;
            }
        }
        Pane::Queue | Pane::Logs | Pane::Trends => {
            let id = match state.focus {
                Pane::Logs => state.logs.target.map(|t| t.id),
                _ => state.selected().map(|d| d.id),
            };
            if let Some(id) = id {
                state.mode = Mode::Detail(Box::new(DetailState {
                    id,
                    detail: None,
                    error: None,
                    scroll: 0,
                    loading: true,
                    stale: false,
                }));
                fx.push(Effect::LoadDetail(id));
            }
        }
    }
}

fn ask_cancel(state: &mut AppState) {
    let Some(d) = subject(state) else {
        return flash(state, "nothing selected".into(), true);
    };
    if d.is_terminal() {
        flash(state, format!("{} is already {}", d.id.short(), d.status), true);
    } else if d.cancel_requested {
        flash(state, format!("{} is already being cancelled", d.id.short()), true);
    } else {
        let over = match std::mem::take(&mut state.mode) {
            Mode::Detail(detail) => Some(detail),
            _ => None,
        };
        state.mode = Mode::Confirm(Confirm::Cancel { id: d.id, label: label(&d), over });
    }
}

fn retry(state: &mut AppState, fx: &mut Vec<Effect>) {
    let Some(d) = subject(state) else {
        return flash(state, "nothing selected".into(), true);
    };
    if matches!(d.status, StatusKind::Failed | StatusKind::Cancelled) {
        flash(state, format!("retrying {}…", label(&d)), false);
        fx.push(Effect::Retry(d.id));
    } else {
        flash(
            state,
            format!("only failed or cancelled deployments can be retried ({} is {})", d.id.short(), d.status),
            true,
        );
    }
}

fn priority(state: &mut AppState, up: bool, fx: &mut Vec<Effect>) {
    let Some(d) = subject(state) else {
        return flash(state, "nothing selected".into(), true);
    };
    if d.is_terminal() {
        return flash(state, format!("{} is {}: its priority no longer matters", d.id.short(), d.status), true);
    }
    let p = if up { d.priority.raised() } else { d.priority.lowered() };
    if p == d.priority {
        flash(state, format!("{} is already {}", d.id.short(), d.priority), true);
    } else {
        flash(state, format!("{} priority {} → {}…", d.id.short(), d.priority, p), false);
        fx.push(Effect::SetPriority(d.id, p));
    }
}

fn attempt(state: &mut AppState, next: bool) {
    let Some(target) = state.logs.target else { return };
    let Some(d) = state.find(target.id) else { return };
    let latest = d.attempt.max(1);
    let a = if next { (target.attempt + 1).min(latest) } else { target.attempt.saturating_sub(1).max(1) };
    state.logs.pinned = if a == latest { None } else { Some(a) };
    sync_log_target(state);
    flash(state, format!("log of attempt {a} of {latest}"), false);
}

fn find_match(state: &mut AppState, forward: bool) {
    let Some(query) = state.logs.search.clone() else {
        return flash(state, "no search: press / in the Logs pane".into(), true);
    };
    let needle = query.to_lowercase();
    let rect = areas_of(state).logs;
    let logs = &mut state.logs;
    let tail = view::logs::tail_top(logs, rect);
    let current = if logs.follow { tail } else { logs.top };
    let hits: Vec<u64> = logs
        .lines
        .iter()
        .enumerate()
        .filter(|(_, l)| crate::text::contains_ci(&l.text, &needle))
        .map(|(i, _)| logs.first + i as u64)
        .collect();
    if hits.is_empty() {
        let partial = logs.first > 0 || logs.skipped_bytes > 0;
        let scope = if partial {
            format!(" in the last {} lines (tds logs ID shows all)", logs.lines.len())
        } else {
            String::new()
        };
        return flash(state, format!("no match for '{}'{scope}", crate::text::clean(&query)), true);
    }
    let found = if forward {
        hits.iter().find(|&&n| n > current).or(hits.first())
    } else {
        hits.iter().rev().find(|&&n| n < current).or(hits.last())
    };
    let line = found.copied().unwrap_or(logs.first);
    logs.top = line;
    logs.follow = false;
    let k = hits.iter().position(|&n| n == line).unwrap_or(0) + 1;
    flash(state, format!("match {k}/{} for '{}'", hits.len(), crate::text::clean(&query)), false);
}

fn new_form(state: &mut AppState) {
    if state.environments.is_empty() {
        return flash(state, "no environments configured".into(), true);
    }
    let env = state.target_env().and_then(|e| state.environments.iter().position(|x| x.name == e.name)).unwrap_or(0);
    state.mode = Mode::Form(Box::new(FormState { env, ..FormState::default() }));
}

fn answer(state: &mut AppState, yes: bool, fx: &mut Vec<Effect>) {
    let Mode::Confirm(confirm) = std::mem::take(&mut state.mode) else { return };
    match (confirm, yes) {
        (Confirm::Cancel { id, label, over }, yes) => {
            if let Some(detail) = over {
                state.mode = Mode::Detail(detail);
            }
            if yes {
                flash(state, format!("cancelling {label}…"), false);
                fx.push(Effect::Cancel(id));
            } else {
                flash(state, "not cancelled".into(), false);
            }
        }
        (Confirm::Quit, true) => state.quit = true,
        (Confirm::Quit, false) => {}
    }
}

fn cycle<T: Copy + PartialEq>(items: &[T], current: T, forward: bool) -> T {
    let i = items.iter().position(|x| *x == current).unwrap_or(0);
    let n = items.len().max(1);
    items.get(if forward { (i + 1) % n } else { (i + n - 1) % n }).copied().unwrap_or(current)
}

fn input(state: &mut AppState, request: InputRequest, fx: &mut Vec<Effect>) {
    match &mut state.mode {
        Mode::Prompt(prompt) => {
            let changed = prompt.input.handle(request).is_some_and(|c| c.value);
            let live_filter = changed && prompt.kind == PromptKind::Filter;
            let text = prompt.input.value().to_owned();
            if live_filter {
                set_filter(state, text);
            }
        }
        Mode::Form(form) => {
            form.error = None;
            let env_count = state.environments.len();
            match form.field {
                FormField::Environment => match request {
                    InputRequest::GoToPrevChar | InputRequest::GoToNextChar | InputRequest::InsertChar(' ') => {
                        let forward = request != InputRequest::GoToPrevChar;
                        let n = env_count.max(1);
                        form.env = if forward { (form.env + 1) % n } else { (form.env + n - 1) % n };
                    }
                    InputRequest::InsertChar(c) => {
                        let c = c.to_ascii_lowercase();
                        let start = form.env + 1;
                        let names: Vec<&str> = state.environments.iter().map(|e| e.name.as_str()).collect();
                        if let Some(i) = (0..names.len())
                            .map(|k| (start + k) % names.len())
                            .find(|&i| names[i].to_ascii_lowercase().starts_with(c))
                        {
                            form.env = i;
                        }
                    }
                    _ => {}
                },
                FormField::Priority => match request {
                    InputRequest::GoToPrevChar | InputRequest::GoToNextChar | InputRequest::InsertChar(' ') => {
                        form.priority = cycle(&Priority::ALL, form.priority, request != InputRequest::GoToPrevChar);
                    }
                    InputRequest::InsertChar(c) => {
                        if let Some(p) = Priority::ALL.iter().find(|p| p.as_str().starts_with(c.to_ascii_lowercase())) {
                            form.priority = *p;
                        }
                    }
                    _ => {}
                },
                FormField::Artifact => {
                    if form.artifact.handle(request).is_some_and(|c| c.value) {
                        form.cycle = None;
                        fx.push(Effect::CheckPath(form.artifact.value().to_owned()));
                    }
                }
                FormField::Version => {
                    form.version.handle(request);
                }
                FormField::Params => {
                    form.params.handle(request);
                }
            }
        }
        _ => {}
    }
}

fn form_tab(state: &mut AppState, fx: &mut Vec<Effect>) {
    let Mode::Form(form) = &mut state.mode else { return };
    if form.field != FormField::Artifact {
        form.field = form.field.next();
        return;
    }
    let value = form.artifact.value().to_owned();
    // Repeated Tab over ambiguous choices: the next one.
    if let Some((base, items, i)) = &mut form.cycle
        && items.get(*i).is_some_and(|item| value == format!("{base}{item}"))
    {
        *i = (*i + 1) % items.len();
        let next = format!("{base}{}", items[*i]);
        form.artifact = Input::new(next.clone());
        fx.push(Effect::CheckPath(next));
        return;
    }
    form.cycle = None;
    if form.check.input != value {
        // The check of what was just typed is on its way; it completes when it arrives.
        form.tab_pending = true;
        return;
    }
    if !matches!(form.check.status, PathStatus::File(_)) {
        if let Some(extra) = form.check.completion.clone().filter(|c| !c.is_empty()) {
            let next = format!("{value}{extra}");
            form.artifact = Input::new(next.clone());
            fx.push(Effect::CheckPath(next));
            return;
        }
        if !form.check.candidates.is_empty() {
            let base = value.rfind('/').map_or(String::new(), |i| value[..=i].to_owned());
            let items = form.check.candidates.clone();
            let next = format!("{base}{}", items[0]);
            form.cycle = Some((base, items, 0));
            form.artifact = Input::new(next.clone());
            fx.push(Effect::CheckPath(next));
            return;
        }
    }
    form.field = form.field.next();
}

/// Parses `KEY=value` words (separated by spaces) into params, checking each key.
pub fn parse_params(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for word in text.split_whitespace() {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!("params: '{}' is not KEY=value", crate::text::clean(word)));
        };
        if !tds_core::valid_param_key(k) {
            return Err(format!(
                "params: '{}' is not a valid key (letters, digits, _; not starting with a digit)",
                crate::text::clean(k)
            ));
        }
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(format!("params: '{k}' given twice"));
        }
    }
    Ok(out)
}

fn validate(state: &AppState, form: &FormState) -> Result<Submission, String> {
    let environment =
        state.environments.get(form.env).map(|e| e.name.clone()).ok_or_else(|| "choose an environment".to_owned())?;
    let path = form.artifact.value().trim();
    if path.is_empty() {
        return Err("artifact: type the path of a .tar.gz, .tar, .zip or plain file".into());
    }
    if form.check.input != form.artifact.value() {
        return Err("artifact: still checking the path…".into());
    }
    match &form.check.status {
        PathStatus::File(0) => return Err("artifact: the file is empty".into()),
        PathStatus::File(_) => {}
        PathStatus::Unknown => return Err("artifact: still checking the path…".into()),
        PathStatus::Missing => return Err(format!("artifact: no such file: {}", crate::text::clean(path))),
        PathStatus::Directory => return Err("artifact: that is a folder; Tab completes a file name".into()),
        PathStatus::Unusable(why) => return Err(format!("artifact: {why}")),
    }
    let version = form.version.value().trim().to_owned();
    if version.is_empty() {
        return Err("version: required (e.g. 1.4.2)".into());
    }
    if version.len() > tds_core::MAX_VERSION_LEN {
        return Err(format!("version: longer than {} bytes", tds_core::MAX_VERSION_LEN));
    }
    let params = parse_params(form.params.value())?;
    Ok(Submission { environment, path: path.into(), version, priority: form.priority, params })
}

fn submit(state: &mut AppState, fx: &mut Vec<Effect>) {
    match std::mem::take(&mut state.mode) {
        Mode::Prompt(prompt) => match prompt.kind {
            PromptKind::Filter => {
                let text = prompt.input.value().trim().to_owned();
                let problems = Filter::parse(&text).problems;
                set_filter(state, text);
                if !problems.is_empty() {
                    // Not taken: the prompt stays open with the reason beside it.
                    flash(state, format!("filter: {}", problems.join(", ")), true);
                    state.mode = Mode::Prompt(prompt);
                }
            }
            PromptKind::LogSearch => {
                let q = prompt.input.value().to_owned();
                state.logs.search = (!q.is_empty()).then_some(q);
                if state.logs.search.is_some() {
                    find_match(state, true);
                }
            }
            PromptKind::Limit { environment } => match prompt.input.value().trim().parse::<u32>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => {
                    flash(state, format!("setting {environment} limit to {limit}…"), false);
                    fx.push(Effect::SetLimit { environment, limit });
                }
                _ => {
                    flash(state, format!("limit must be a number from 1 to {MAX_LIMIT}"), true);
                    state.mode = Mode::Prompt(Prompt { kind: PromptKind::Limit { environment }, input: prompt.input });
                }
            },
        },
        Mode::Form(mut form) => {
            if !form.submitting {
                match validate(state, &form) {
                    Ok(submission) => {
                        form.submitting = true;
                        form.error = None;
                        fx.push(Effect::Submit(Box::new(submission)));
                    }
                    Err(e) => form.error = Some(e),
                }
            }
            state.mode = Mode::Form(form);
        }
        other => state.mode = other,
    }
}

fn submitted(state: &mut AppState, result: Result<Box<DeploymentView>, String>) {
    match result {
        Ok(view) => {
            if matches!(state.mode, Mode::Form(_)) {
                state.mode = Mode::Normal;
            }
            flash(state, format!("queued {}", label(&view)), false);
            state.queue.selected_id = Some(view.id);
            state.queue.follow_top = false;
            state.focus = Pane::Queue;
            state.deployments.entry(view.id).or_insert_with(|| Arc::new(*view));
            state.queue.dirty = true;
        }
        Err(e) => {
            if let Mode::Form(form) = &mut state.mode {
                form.submitting = false;
                form.error = Some(e);
            } else {
                flash(state, format!("submit failed: {e}"), true);
            }
        }
    }
}

fn wheel(state: &mut AppState, column: u16, row: u16, delta: i16, fx: &mut Vec<Effect>) {
    let rows = i64::from(delta) * WHEEL_ROWS;
    if !matches!(state.mode, Mode::Normal) {
        return step(state, rows, fx);
    }
    let Some(pane) = areas_of(state).pane_at(column, row) else { return };
    let focus = state.focus;
    state.focus = pane;
    if pane == Pane::Trends {
        state.focus = focus;
        return;
    }
    step(state, rows, fx);
    state.focus = focus;
}

fn click(state: &mut AppState, column: u16, row: u16) {
    if !matches!(state.mode, Mode::Normal) {
        return;
    }
    let a = areas_of(state);
    let Some(pane) = a.pane_at(column, row) else { return };
    state.focus = pane;
    let rect = a.pane(pane);
    // Table rows start below the top border and the column header.
    let Some(index) = row.checked_sub(rect.y + 2).map(usize::from) else { return };
    if index >= table_rows(rect) {
        return;
    }
    match pane {
        Pane::Queue => {
            let i = state.queue.offset + index;
            if let Some(d) = state.queue.rows.get(i) {
                state.queue.selected = i;
                state.queue.selected_id = Some(d.id);
                state.queue.follow_top = false;
                sync_log_target(state);
            }
        }
        Pane::Environments => {
            let i = state.envs.offset + index;
            if i < state.environments.len() {
                state.envs.selected = i;
            }
        }
        Pane::Logs | Pane::Trends => {}
    }
}

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;
    use tds_core::model::Priority;

    use super::*;
    use crate::fixtures;

    fn ids(state: &AppState) -> Vec<tds_core::model::DeploymentId> {
        state.queue.rows.iter().map(|d| d.id).collect()
    }

    /// A settled dashboard of `width` x `height` showing `fixtures::many(n, envs)`.
    fn dashboard(n: u64, envs: usize, width: u16, height: u16) -> AppState {
        let utc = FixedOffset::east_opt(0).expect("utc");
        let mut s = AppState::new("t", None, utc, fixtures::t0());
        let (deployments, environments) = fixtures::many(n, envs);
        update(&mut s, Action::Resize { width, height });
        update(&mut s, Action::Snapshot(Box::new(tds_core::Snapshot { deployments, environments, last_event_id: 0 })));
        update(&mut s, Action::Settle);
        s
    }

    /// Patching the sorted rows event by event gives exactly the rows a full rebuild gives,
    /// with and without a filter and the finished toggle.
    #[test]
    fn patched_rows_equal_a_rebuild() {
        for (filter, finished) in [("", false), ("", true), ("env:env-01,env-02", false), ("1.2", true)] {
            let utc = FixedOffset::east_opt(0).expect("utc");
            let mut s = AppState::new("t", None, utc, fixtures::t0());
            let (ds, envs) = fixtures::many(600, 5);
            update(&mut s, Action::Resize { width: 100, height: 30 });
            update(
                &mut s,
                Action::Snapshot(Box::new(tds_core::Snapshot {
                    deployments: ds.clone(),
                    environments: envs,
                    last_event_id: 0,
                })),
            );
            update(&mut s, Action::Tick(fixtures::t0()));
            if finished {
                update(&mut s, Action::ToggleFinished);
            }
            set_filter(&mut s, filter.to_owned());
            update(&mut s, Action::Settle);
            let mut seed = 0x2545_f491_4f6c_dd1d_u64;
            for round in 0..3000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut d = (*ds[(seed % 600) as usize]).clone();
                d.status = [
                    StatusKind::Queued,
                    StatusKind::Running,
                    StatusKind::RollingBack,
                    StatusKind::RetryWait,
                    StatusKind::Succeeded,
                    StatusKind::Failed,
                    StatusKind::Cancelled,
                ][(seed >> 8) as usize % 7];
                d.priority = Priority::from_rank((seed >> 16) % 4);
                d.progress_percent = (round % 100) as u8;
                d.finished_at =
                    d.status.is_terminal().then(|| fixtures::t0() - TimeDelta::seconds((seed >> 20) as i64 % 900));
                d.next_retry_at = (d.status == StatusKind::RetryWait)
                    .then(|| fixtures::t0() + TimeDelta::seconds((seed >> 24) as i64 % 60));
                update(&mut s, Action::Core(CoreEvent::Deployment(Arc::new(d))));
                if round % 97 == 0 {
                    update(&mut s, Action::Settle);
                }
            }
            update(&mut s, Action::Settle);
            let (live, running) = (s.queue.live, s.queue.running);
            let patched = ids(&s);
            s.queue.dirty = true;
            update(&mut s, Action::Settle);
            assert_eq!(patched, ids(&s), "filter {filter:?}, finished {finished}");
            assert_eq!((live, running), (s.queue.live, s.queue.running));
        }
    }

    /// Found by a dashboard trial: after `g` the selection stayed on the first *row*, so the
    /// log pane switched deployments whenever another one sorted above it. Once the user picks
    /// a row, the selection follows that deployment.
    #[test]
    fn the_selection_follows_the_chosen_deployment_also_on_the_first_row() {
        let mut s = dashboard(60, 5, 100, 30);
        update(&mut s, Action::Down);
        update(&mut s, Action::Top);
        update(&mut s, Action::Settle);
        let chosen = s.queue.selected_id.expect("a row is selected");
        assert_eq!(s.queue.selected, 0);
        // Another deployment starts and sorts above the chosen one (running ones by id).
        let top = fixtures::view(0, "env-00", "9.9.9", StatusKind::Running);
        update(&mut s, Action::Core(CoreEvent::Deployment(Arc::new(top))));
        update(&mut s, Action::Settle);
        assert_eq!(s.queue.rows.first().map(|d| d.id), Some(fixtures::id(0)), "the new one sorts first");
        assert_eq!(s.queue.selected_id, Some(chosen), "the selection stays on the chosen deployment");
        assert_eq!(s.logs.target.map(|t| t.id), Some(chosen), "and so does the log pane");
    }

    /// Found by a dashboard trial: at 3x3 `c`, `+`, `-` and `r` still acted on the hidden
    /// selection. Below the minimum size only quitting works.
    #[test]
    fn keys_other_than_quit_do_nothing_below_the_minimum_size() {
        let mut s = dashboard(20, 2, 100, 30);
        update(&mut s, Action::Resize { width: 3, height: 3 });
        for action in
            [Action::Cancel, Action::Retry, Action::PriorityUp, Action::PriorityDown, Action::New, Action::Down]
        {
            let fx = update(&mut s, action.clone());
            assert!(fx.is_empty() && matches!(s.mode, Mode::Normal), "{action:?} acted: {fx:?} {:?}", s.mode);
        }
        assert_eq!(s.queue.selected, 0);
        // `q` quits at once from whatever mode hides behind the notice (a question about
        // running deployments could not be seen).
        s.mode = Mode::Help { scroll: 0 };
        let q = ratatui::crossterm::event::Event::Key(ratatui::crossterm::event::KeyEvent::from(
            ratatui::crossterm::event::KeyCode::Char('q'),
        ));
        let action = crate::keys::map(&s, &q).expect("q means something");
        assert!(matches!(action, Action::Quit), "{action:?}");
        update(&mut s, action);
        assert!(s.quit);
    }

    /// Found by a dashboard trial: after a resize to 1x1 and back, the environments pane showed
    /// only its selected last row above empty space, and the queue had scrolled to its selection.
    #[test]
    fn a_shrink_below_the_minimum_and_back_keeps_the_panes_as_they_were() {
        let mut s = dashboard(40, 3, 120, 36);
        for _ in 0..6 {
            update(&mut s, Action::Down);
        }
        update(&mut s, Action::Focus(Pane::Environments));
        update(&mut s, Action::Bottom);
        let before = (s.queue.offset, s.envs.offset, s.envs.selected);
        assert_eq!(before, (0, 0, 2));
        update(&mut s, Action::Resize { width: 1, height: 1 });
        update(&mut s, Action::Settle);
        update(&mut s, Action::Resize { width: 120, height: 36 });
        update(&mut s, Action::Settle);
        assert_eq!((s.queue.offset, s.envs.offset, s.envs.selected), before);
    }

    /// Found by a dashboard trial: `c` in the detail view, answered, left the detail view.
    #[test]
    fn a_cancel_asked_over_the_detail_view_comes_back_to_it() {
        let mut s = dashboard(20, 2, 100, 30);
        update(&mut s, Action::Open);
        let Mode::Detail(d) = &s.mode else { panic!("no detail: {:?}", s.mode) };
        let id = d.id;
        for (answer, expect) in
            [(Action::Answer(false), vec![]), (Action::Back, vec![]), (Action::Answer(true), vec![Effect::Cancel(id)])]
        {
            update(&mut s, Action::Cancel);
            assert!(matches!(s.mode, Mode::Confirm(Confirm::Cancel { over: Some(_), .. })), "{:?}", s.mode);
            // The detail keeps loading under the question: an answer arriving now is not lost
            // (it was, and the view then never refreshed again).
            update(&mut s, Action::DetailLoaded(id, Err("store busy".into())));
            assert!(s.mode.detail().is_some_and(|d| !d.loading && d.error.is_some()), "{:?}", s.mode);
            let fx = update(&mut s, answer);
            assert!(matches!(&s.mode, Mode::Detail(d) if d.id == id), "{:?}", s.mode);
            assert_eq!(fx, expect);
        }
    }

    /// Found by a dashboard trial: "ne" and Tab sent at once moved to the Version field, since
    /// the path check of "ne" had not arrived; Tab now waits for it and completes.
    #[test]
    fn tab_typed_before_the_path_check_arrives_still_completes() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join("newdir_x")).expect("mkdir");
        let utc = FixedOffset::east_opt(0).expect("utc");
        let mut s = AppState::new("t", None, utc, fixtures::t0());
        let (_, envs) = fixtures::many(1, 2);
        update(&mut s, Action::Resize { width: 100, height: 30 });
        update(
            &mut s,
            Action::Snapshot(Box::new(tds_core::Snapshot {
                deployments: vec![],
                environments: envs,
                last_event_id: 0,
            })),
        );
        update(&mut s, Action::New);
        update(&mut s, Action::FormNext);
        let typed = format!("{}/ne", dir.path().display());
        let mut checks = Vec::new();
        for c in typed.chars() {
            checks.extend(update(&mut s, Action::Input(InputRequest::InsertChar(c))));
        }
        update(&mut s, Action::FormTab);
        let Mode::Form(f) = &s.mode else { panic!("form closed") };
        assert_eq!(f.field, FormField::Artifact, "Tab waits for the check");
        // The checks come back in order, as the loop runs them.
        for effect in checks {
            let Effect::CheckPath(input) = effect else { continue };
            update(&mut s, Action::PathChecked(crate::paths::check(&input, dir.path(), None)));
        }
        let Mode::Form(f) = &s.mode else { panic!("form closed") };
        assert_eq!(f.artifact.value(), format!("{}/newdir_x/", dir.path().display()));
        assert_eq!(f.field, FormField::Artifact);

        // Typed ahead after Tab: a whole file path, Tab, then the version, all before any
        // check came back. As if typed slowly: the version lands in Version.
        std::fs::write(dir.path().join("newdir_x/app.tar.gz"), b"x").expect("file");
        let mut checks = Vec::new();
        for c in "app.tar.gz".chars() {
            checks.extend(update(&mut s, Action::Input(InputRequest::InsertChar(c))));
        }
        checks.extend(update(&mut s, Action::FormTab));
        for c in "1.2.3".chars() {
            checks.extend(update(&mut s, Action::Input(InputRequest::InsertChar(c))));
        }
        for effect in checks {
            let Effect::CheckPath(input) = effect else { continue };
            update(&mut s, Action::PathChecked(crate::paths::check(&input, dir.path(), None)));
        }
        let Mode::Form(f) = &s.mode else { panic!("form closed") };
        assert_eq!(f.artifact.value(), format!("{}/newdir_x/app.tar.gz", dir.path().display()));
        assert_eq!((f.field, f.version.value()), (FormField::Version, "1.2.3"));
        assert!(!f.tab_pending && f.typed_ahead.is_empty());
    }

    /// Found by a dashboard trial: `G` or many `j` scrolled the help past its end to an empty
    /// box, and `k` then had to climb back through the blank lines.
    #[test]
    fn overlays_scroll_no_further_than_their_last_line() {
        let utc = FixedOffset::east_opt(0).expect("utc");
        let mut s = AppState::new("t", None, utc, fixtures::t0());
        update(&mut s, Action::Resize { width: 100, height: 30 });
        update(&mut s, Action::Help);
        let end = view::overlay_scroll_max(&s);
        assert!(end > 0, "the help is longer than 30 rows");
        update(&mut s, Action::Bottom);
        for _ in 0..50 {
            update(&mut s, Action::Down);
        }
        assert!(matches!(s.mode, Mode::Help { scroll } if scroll == end), "{:?}", s.mode);
        update(&mut s, Action::Up);
        assert!(matches!(s.mode, Mode::Help { scroll } if scroll == end - 1), "{:?}", s.mode);
    }

    #[test]
    fn params_parse_and_refuse_bad_keys() {
        let p = parse_params("A=1 B_2=x=y").expect("params");
        assert_eq!(p.get("B_2").map(String::as_str), Some("x=y"));
        assert!(parse_params("1A=2").is_err());
        assert!(parse_params("A=1 A=2").is_err());
        assert!(parse_params("novalue").is_err());
        assert!(parse_params("").expect("empty").is_empty());
    }
}
