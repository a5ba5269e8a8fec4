//! The Queue pane: one row per deployment in the order they will run (running first), with
//! status colours, phase and step, attempt, age, and in words why a waiting one waits.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use tds_core::model::{DeploymentView, Priority, StatusKind};

use super::pane_block;
use crate::state::{AppState, Pane};
use crate::text::{age, clean, fit, fit_right};
use crate::theme;

/// Column widths before the flexible last column.
const ID: usize = 8;
const PRIO: usize = 4;
const STATUS: usize = 12;
const PHASE: usize = 11;
const ATTEMPT: usize = 3;
const AGE: usize = 4;
const VERSION: usize = 10;

fn prio(p: Priority) -> &'static str {
    match p {
        Priority::Critical => "crit",
        Priority::High => "high",
        Priority::Normal => "norm",
        Priority::Low => "low",
    }
}

/// The status as shown in the table.
pub(crate) fn status_word(kind: StatusKind) -> &'static str {
    match kind {
        StatusKind::Queued => "queued",
        StatusKind::Running => "running",
        StatusKind::RollingBack => "rolling back",
        StatusKind::RetryWait => "retry wait",
        StatusKind::Succeeded => "succeeded",
        StatusKind::Failed => "failed",
        StatusKind::Cancelled => "cancelled",
    }
}

/// Phase and step progress: `steps 2/3`, `verify`, `rollback`.
fn phase(d: &DeploymentView) -> String {
    match (d.phase, &d.step) {
        (Some(p), Some(s)) => format!("{p} {}/{}", s.index, s.total),
        (Some(p), None) => p.to_string(),
        (None, _) => "–".to_owned(),
    }
}

/// The last column: why it waits, what it does, or how it ended.
fn info(state: &AppState, d: &DeploymentView) -> String {
    let text = match d.status {
        StatusKind::Queued => d.wait_reason.clone().unwrap_or_else(|| "waiting for the scheduler".into()),
        StatusKind::RetryWait => {
            let due = d.next_retry_at.map(|t| (t - state.now).num_seconds().max(0));
            let error = d.error.as_deref().map(|e| format!(" after: {e}")).unwrap_or_default();
            match due {
                Some(s) => format!("retry {} of {} in {s}s{error}", d.retry_count.max(1), d.max_retries),
                None => d.wait_reason.clone().unwrap_or_else(|| "waiting to retry".into()),
            }
        }
        StatusKind::Running => {
            let step = d.step.as_ref().map(|s| format!("{} ", s.name)).unwrap_or_default();
            let cancel = if d.cancel_requested { " · cancelling" } else { "" };
            format!("{step}{}%{cancel}", d.progress_percent)
        }
        StatusKind::RollingBack => {
            if d.cancel_requested {
                "cancelling: undoing the release".into()
            } else {
                "undoing the release".into()
            }
        }
        StatusKind::Succeeded => {
            d.duration_ms.map(|ms| format!("in {}", crate::text::duration_ms(ms))).unwrap_or_default()
        }
        StatusKind::Failed | StatusKind::Cancelled => d.error.clone().unwrap_or_default(),
    };
    clean(&text).into_owned()
}

/// Draws the queue table with its position in the title.
pub fn render(state: &AppState, area: Rect, frame: &mut Frame) {
    let q = &state.queue;
    let position =
        if q.rows.is_empty() { "row 0/0 ".to_owned() } else { format!("row {}/{} ", q.selected + 1, q.rows.len()) };
    // Parts of the title note, least important first: dropped from the front when narrow.
    let mut parts: Vec<Span> = vec![Span::raw(format!(" live {} · running {} ·", q.live, q.running))];
    if q.show_finished {
        parts.push(Span::styled(" all finished ·", theme::dim()));
    }
    if !q.filter_text.is_empty() {
        parts.push(Span::styled(format!(" /{}", crate::text::truncate(&clean(&q.filter_text), 24)), theme::warn()));
    }
    parts.push(Span::raw(format!(" {position}")));
    let room = usize::from(area.width).saturating_sub(crate::text::width(Pane::Queue.title()) + 6);
    while parts.len() > 1 && parts.iter().map(|p| crate::text::width(&p.content)).sum::<usize>() > room {
        parts.remove(0);
    }
    let note = parts;
    let block = pane_block(state, Pane::Queue, Line::from(note));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let w = usize::from(inner.width);
    let env_w = state.environments.iter().map(|e| crate::text::width(&e.name)).max().unwrap_or(8).clamp(5, 12);
    let fixed = ID + env_w + PRIO + STATUS + PHASE + ATTEMPT + AGE + 7;
    // The version gets a column when there is room for it and a useful last column.
    let version_w = if w >= fixed + VERSION + 1 + 24 { VERSION } else { 0 };
    let version_gap = usize::from(version_w > 0);
    let info_w = w.saturating_sub(fixed + version_w + version_gap + 1);
    let header = format!(
        "{} {}{}{} {} {} {} {} {} {}",
        fit("ID", ID),
        fit("ENV", env_w),
        " ".repeat(version_gap),
        fit("VERSION", version_w),
        fit("PRIO", PRIO),
        fit("STATUS", STATUS),
        fit("PHASE", PHASE),
        fit("ATT", ATTEMPT),
        fit_right("AGE", AGE),
        fit("WHY / WHAT", info_w)
    );
    let mut lines = vec![Line::styled(header, theme::header())];
    if q.rows.is_empty() {
        let text = if !q.filter_text.is_empty() {
            "nothing matches the filter (Esc clears it)".to_owned()
        } else if state.deployments.is_empty() {
            "no deployments yet: press n to deploy, or POST /api/v1/deployments".to_owned()
        } else {
            "nothing live or recent: press a to show all finished deployments".to_owned()
        };
        lines.push(Line::styled(text, theme::dim()));
    }
    let visible = usize::from(inner.height.saturating_sub(1));
    for (i, d) in q.rows.iter().enumerate().skip(q.offset).take(visible) {
        let selected = i == q.selected;
        let row_style = if selected { theme::selected() } else { Style::new() };
        let seconds = (state.now - d.created_at).num_seconds();
        let attempt = if d.attempt > 1 { format!("#{}", d.attempt) } else { "1".to_owned() };
        let spans = vec![
            Span::styled(fit(&d.id.short(), ID), theme::dim()),
            Span::raw(" "),
            Span::raw(fit(&clean(&d.environment), env_w)),
            Span::raw(" ".repeat(version_gap)),
            Span::raw(fit(&clean(&d.version), version_w)),
            Span::raw(" "),
            Span::styled(fit(prio(d.priority), PRIO), theme::priority(d.priority)),
            Span::raw(" "),
            Span::styled(fit(status_word(d.status), STATUS), theme::status(d.status)),
            Span::raw(" "),
            Span::raw(fit(&phase(d), PHASE)),
            Span::raw(" "),
            Span::raw(fit_right(&attempt, ATTEMPT)),
            Span::raw(" "),
            Span::styled(fit_right(&age(seconds), AGE), theme::dim()),
            Span::raw(" "),
            Span::raw(fit(&info(state, d), info_w)),
        ];
        lines.push(Line::from(spans).style(row_style));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
