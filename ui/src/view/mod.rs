//! Drawing: `render(&AppState, &mut Frame)` is a pure function of the state (no `&mut`, no
//! I/O, no clock). The layout is a pure function too, shared with `update` for mouse hits and
//! page sizes, so what is drawn and what is clicked always agree.

mod detail;
mod dialog;
mod environments;
mod footer;
mod form;
mod header;
mod help;
pub mod logs;
mod metrics;
mod queue;
mod trends;

#[cfg(test)]
mod tests;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Block, BorderType, Borders, Paragraph, Wrap};

use crate::state::{AppState, Mode, Pane};
use crate::theme;

/// Below this size the dashboard shows a notice instead of the panes (case C08).
pub const MIN_WIDTH: u16 = 60;
/// See [`MIN_WIDTH`].
pub const MIN_HEIGHT: u16 = 16;

/// Where everything goes for a terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Areas {
    pub header: Rect,
    pub queue: Rect,
    pub environments: Rect,
    pub trends: Rect,
    pub logs: Rect,
    pub footer: Rect,
    /// Between header and footer: the detail view's place.
    pub body: Rect,
    /// The terminal is below the minimum: only a notice is drawn.
    pub too_small: bool,
}

impl Areas {
    /// The pane that contains a cell, if any.
    pub fn pane_at(&self, column: u16, row: u16) -> Option<Pane> {
        let hit = |r: Rect| column >= r.x && column < r.right() && row >= r.y && row < r.bottom();
        [
            (self.queue, Pane::Queue),
            (self.environments, Pane::Environments),
            (self.logs, Pane::Logs),
            (self.trends, Pane::Trends),
        ]
        .into_iter()
        .find(|(r, _)| hit(*r))
        .map(|(_, p)| p)
    }

    /// The rect of a pane.
    pub fn pane(&self, pane: Pane) -> Rect {
        match pane {
            Pane::Queue => self.queue,
            Pane::Environments => self.environments,
            Pane::Logs => self.logs,
            Pane::Trends => self.trends,
        }
    }
}

/// Lays out `area` for `environments` environments. Saturating arithmetic only: any size,
/// including 0x0, gives valid (possibly empty) rects.
pub fn areas(area: Rect, environments: usize) -> Areas {
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return Areas { body: area, too_small: true, ..Areas::default() };
    }
    let header = Rect { height: 1, ..area };
    let footer = Rect { y: area.bottom().saturating_sub(1), height: 1, ..area };
    let body = Rect { y: area.y + 1, height: area.height.saturating_sub(2), ..area };
    let h = body.height;
    let env_rows = u16::try_from(environments).unwrap_or(u16::MAX).saturating_add(3);
    let mid = env_rows.clamp(6, (h / 3).max(6));
    let rest = h.saturating_sub(mid);
    let queue_h = (rest / 2).max(4);
    let logs_h = rest.saturating_sub(queue_h);
    let queue = Rect { y: body.y, height: queue_h, ..body };
    let mid_y = body.y + queue_h;
    let env_w = body.width * 55 / 100;
    let environments = Rect { x: body.x, y: mid_y, width: env_w, height: mid };
    let trends = Rect { x: body.x + env_w, y: mid_y, width: body.width.saturating_sub(env_w), height: mid };
    let logs = Rect { y: mid_y + mid, height: logs_h, ..body };
    Areas { header, queue, environments, trends, logs, footer, body, too_small: false }
}

/// The layout of the state's terminal.
pub fn areas_of(state: &AppState) -> Areas {
    areas(state.area, state.environments.len())
}

/// A pane's frame: title, focus colour, and an optional right-aligned note (position).
pub fn pane_block<'a>(state: &AppState, pane: Pane, note: Line<'a>) -> Block<'a> {
    let focused = state.focus == pane && matches!(state.mode, Mode::Normal | Mode::Prompt(_) | Mode::Confirm(_));
    let style = if focused { theme::focused() } else { theme::unfocused() };
    Block::default()
        .borders(Borders::ALL)
        .border_type(if focused { BorderType::Thick } else { BorderType::Plain })
        .border_style(style)
        .title(Line::styled(format!(" {} ", pane.title()), style))
        .title_top(note.right_aligned())
}

/// How many lines a bordered `text` drawn in `area` can scroll before its last line reaches
/// the bottom (wrapping included).
pub fn scroll_max(text: &Paragraph<'_>, area: Rect) -> u16 {
    let inner = Block::default().borders(Borders::ALL).inner(area);
    let lines = text.line_count(inner.width.max(1));
    u16::try_from(lines.saturating_sub(usize::from(inner.height))).unwrap_or(u16::MAX)
}

/// How far the open overlay (help, detail, metrics) can scroll; `update` clamps with it so that
/// `G` and `j` stop at the last line and `k` moves at once.
pub fn overlay_scroll_max(state: &AppState) -> u16 {
    let a = areas_of(state);
    match &state.mode {
        Mode::Help { .. } => scroll_max(&help::paragraph(), help::area(a.body)),
        Mode::Detail(d) => scroll_max(&detail::paragraph(state, d), a.body),
        Mode::Metrics(m) => scroll_max(&metrics::paragraph(state, m), a.body),
        _ => 0,
    }
}

/// Inner rows of a bordered pane that hold table rows (below the column header).
pub fn table_rows(pane: Rect) -> usize {
    usize::from(pane.height.saturating_sub(3))
}

/// Draws the whole dashboard.
pub fn render(state: &AppState, frame: &mut Frame) {
    let area = frame.area();
    let a = areas(area, state.environments.len());
    if a.too_small {
        too_small(area, frame);
        return;
    }
    header::render(state, a.header, frame);
    if let Some(detail) = state.mode.detail() {
        detail::render(state, detail, a.body, frame);
    } else if let Mode::Metrics(m) = &state.mode {
        metrics::render(state, m, a.body, frame);
    } else {
        queue::render(state, a.queue, frame);
        environments::render(state, a.environments, frame);
        trends::render(state, a.trends, frame);
        logs::render(state, a.logs, frame);
    }
    footer::render(state, a.footer, frame);
    match &state.mode {
        Mode::Help { scroll } => help::render(*scroll, a.body, frame),
        Mode::Form(f) => form::render(state, f, a.body, frame),
        Mode::Confirm(c) => dialog::render_confirm(state, c, a.body, frame),
        _ => {}
    }
}

/// The notice below the minimum size; draws what fits, down to nothing at 0x0.
fn too_small(area: Rect, frame: &mut Frame) {
    if area.width == 0 || area.height == 0 {
        return;
    }
    let lines = vec![
        Line::styled("Terminal too small", theme::warn()),
        Line::from(format!("need {MIN_WIDTH}x{MIN_HEIGHT}, have {}x{}", area.width, area.height)),
        Line::styled("enlarge it, or q to quit (stops running deployments)", theme::dim()),
    ];
    let top = area.height.saturating_sub(3) / 2;
    let inner = Rect { y: area.y + top, height: area.height.saturating_sub(top), ..area };
    frame.render_widget(Paragraph::new(lines).centered().wrap(Wrap { trim: true }), inner);
}

/// A centered rect of at most `width` x `height` inside `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

/// A line of `key description` hints.
pub fn hints(pairs: &[(&str, &str)]) -> Line<'static> {
    let mut spans = Vec::with_capacity(pairs.len() * 2);
    for (k, d) in pairs {
        spans.push(ratatui::text::Span::styled((*k).to_owned(), theme::key()));
        spans.push(ratatui::text::Span::styled(format!(" {d}  "), Style::new()));
    }
    Line::from(spans)
}
