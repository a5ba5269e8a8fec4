//! The Logs pane: the selected deployment's log, following its end unless scrolled, stdout and
//! stderr told apart, engine records (phases, retries, results) highlighted, optional wrap, and
//! search matches marked. Only the visible lines are measured and drawn.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::pane_block;
use crate::logtail::{LineKind, LogLine};
use crate::state::{AppState, LogState, Pane};
use crate::text::{clean, truncate, wrap, wrapped_rows};
use crate::theme;

/// `HH:MM:SS ` + marker + space.
pub const PREFIX: usize = 11;

fn text_width(rect: Rect) -> usize {
    usize::from(rect.width.saturating_sub(2)).saturating_sub(PREFIX).max(1)
}

fn rows_of(logs: &LogState, line: &LogLine, width: usize) -> usize {
    if logs.wrap { wrapped_rows(&line.text, width) } else { 1 }
}

/// The first line shown when following: as many of the last lines as fit in the pane.
pub fn tail_top(logs: &LogState, rect: Rect) -> u64 {
    let height = usize::from(rect.height.saturating_sub(2));
    let width = text_width(rect);
    let mut rows = 0usize;
    let mut n = logs.end();
    while n > logs.first {
        let Some(line) = logs.line(n - 1) else { break };
        let r = rows_of(logs, line, width);
        if rows + r > height {
            break;
        }
        rows += r;
        n -= 1;
    }
    if n == logs.end() && n > logs.first {
        // A single line taller than the pane: show its start.
        n -= 1;
    }
    n
}

fn marker(kind: LineKind) -> (&'static str, Style) {
    match kind {
        LineKind::Stdout => ("│", theme::dim()),
        LineKind::Stderr => ("!", theme::stderr()),
        LineKind::Event { level, phase } => ("▸", theme::log_event(level, phase)),
    }
}

fn body_style(kind: LineKind) -> Style {
    match kind {
        LineKind::Stdout => Style::new(),
        LineKind::Stderr => theme::stderr(),
        LineKind::Event { level, phase } => theme::log_event(level, phase),
    }
}

/// Splits a row into spans with the search matches highlighted.
fn highlighted<'a>(row: &'a str, needle: Option<&str>, style: Style) -> Vec<Span<'a>> {
    let Some(needle) = needle.filter(|n| !n.is_empty()) else { return vec![Span::styled(row, style)] };
    let lower = row.to_lowercase();
    if lower.len() != row.len() {
        // Lowercasing changed byte offsets (rare scripts): mark nothing rather than misalign.
        return vec![Span::styled(row, style)];
    }
    let mut spans = Vec::new();
    let mut at = 0;
    for (i, m) in lower.match_indices(needle) {
        if !row.is_char_boundary(i) || !row.is_char_boundary(i + m.len()) {
            continue;
        }
        if i > at {
            spans.push(Span::styled(&row[at..i], style));
        }
        spans.push(Span::styled(&row[i..i + m.len()], theme::matched()));
        at = i + m.len();
    }
    if at < row.len() {
        spans.push(Span::styled(&row[at..], style));
    }
    spans
}

/// Draws the log of the selected deployment.
pub fn render(state: &AppState, area: Rect, frame: &mut Frame) {
    let logs = &state.logs;
    let mut note = Vec::new();
    if let Some(t) = logs.target
        && let Some(d) = state.find(t.id)
    {
        note.push(Span::raw(format!(
            " {} {} {} ",
            d.id.short(),
            truncate(&clean(&d.environment), 12),
            truncate(&clean(&d.version), 14)
        )));
        let latest = d.attempt.max(1);
        let style = if t.attempt == latest { Style::new() } else { theme::warn() };
        note.push(Span::styled(format!("attempt {}/{latest}", t.attempt), style));
    }
    note.push(Span::styled(
        if logs.follow { " follow " } else { " paused " },
        if logs.follow { theme::ok() } else { theme::warn() },
    ));
    if logs.wrap {
        note.push(Span::raw("wrap "));
    }
    if let Some(s) = &logs.search {
        note.push(Span::styled(format!("/{} ", truncate(&clean(s), 16)), theme::warn()));
    }
    let block = pane_block(state, Pane::Logs, Line::from(note));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let height = usize::from(inner.height);
    let mut lines: Vec<Line> = Vec::with_capacity(height);
    if logs.target.is_none() {
        lines.push(Line::styled("select a deployment in the queue to see its log", theme::dim()));
    } else if let Some(e) = &logs.error {
        lines.push(Line::styled(clean(e).into_owned(), theme::error()));
    } else if logs.lines.is_empty() {
        let text = if logs.loaded { "no log lines yet" } else { "reading the log…" };
        lines.push(Line::styled(text, theme::dim()));
    }
    let start = if logs.follow { tail_top(logs, area) } else { logs.top.clamp(logs.first, logs.end()) };
    if start == logs.first && !logs.lines.is_empty() {
        // The pane keeps the last LOG_RING lines; say what lies before them.
        let earlier = match (logs.skipped_bytes, logs.first) {
            (0, 0) => None,
            (0, n) => Some(format!("{n} earlier line{}", if n == 1 { "" } else { "s" })),
            (b, 0) => Some(format!("{} KiB earlier in the file", b / 1024)),
            (b, n) => Some(format!("{} KiB and {n} lines earlier", b / 1024)),
        };
        if let Some(earlier) = earlier {
            lines.push(Line::styled(format!("… {earlier} not kept here (tds logs ID shows all)"), theme::dim()));
        }
    }
    let width = text_width(area);
    let needle = logs.search.as_ref().map(|s| s.to_lowercase());
    let mut n = start;
    while lines.len() < height {
        let Some(line) = logs.line(n) else { break };
        n += 1;
        let time = state.local(line.ts).format("%H:%M:%S").to_string();
        let (mark, mark_style) = marker(line.kind);
        let style = body_style(line.kind);
        let rows: Vec<&str> = if logs.wrap { wrap(&line.text, width) } else { vec![line.text.as_str()] };
        for (k, row) in rows.into_iter().enumerate() {
            if lines.len() >= height {
                break;
            }
            let mut spans = if k == 0 {
                vec![
                    Span::styled(time.clone(), theme::dim()),
                    Span::raw(" "),
                    Span::styled(mark, mark_style),
                    Span::raw(" "),
                ]
            } else {
                vec![Span::raw(" ".repeat(PREFIX))]
            };
            let row = if logs.wrap { std::borrow::Cow::Borrowed(row) } else { truncate(row, width) };
            spans.extend(
                highlighted(&row, needle.as_deref(), style)
                    .into_iter()
                    .map(|s| Span::styled(s.content.into_owned(), s.style)),
            );
            lines.push(Line::from(spans));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
