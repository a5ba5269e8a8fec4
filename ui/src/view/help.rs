//! The help overlay (`?`): every key, grouped.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph};

use super::{centered, scroll_max};
use crate::text::fit;
use crate::theme;

/// Every key binding, grouped; also what the tests check against the key map.
pub const GROUPS: &[(&str, &[(&str, &str)])] = &[
    (
        "Anywhere",
        &[
            ("?", "this help"),
            ("q", "quit (asks while deployments run: it stops them)"),
            ("Ctrl-C", "quit now"),
            ("Tab / Shift-Tab", "next / previous pane"),
            ("1 2 3 4", "Queue, Environments, Logs, Trends"),
            ("Esc", "back: close, clear the filter or the search"),
            ("n", "new deployment (form)"),
            ("m", "metrics: live figures, last 24 h, DORA"),
            ("mouse", "wheel scrolls the pane under it; click selects"),
        ],
    ),
    ("Moving", &[("j k ↑ ↓", "down / up"), ("g G Home End", "first / last"), ("PgUp PgDn", "a page")]),
    (
        "Queue",
        &[
            ("Enter", "details: fields, timeline, attempts"),
            ("c", "cancel (asks first)"),
            ("r", "retry a failed or cancelled deployment"),
            ("+ -", "raise / lower priority"),
            ("/", "filter: words, status:failed,queued, env:staging"),
            ("a", "every finished one, not only the last 5 min"),
        ],
    ),
    (
        "Environments",
        &[
            ("p", "pause / resume the environment"),
            ("L", "change its concurrency limit"),
            ("Enter", "show its deployments in the queue"),
        ],
    ),
    (
        "Logs",
        &[
            ("f", "follow the end on / off"),
            ("w", "wrap long lines"),
            ("[ ]", "previous / next attempt"),
            ("/", "search; n N next / previous match"),
        ],
    ),
    ("Trends", &[("t ← →", "window: 15 min, 1 h, 24 h")]),
    (
        "New deployment form",
        &[
            ("Tab ↑ ↓", "next field; in Artifact, Tab completes the path"),
            ("← → space", "choose environment and priority"),
            ("Enter / Esc", "submit / cancel"),
        ],
    ),
];

/// Where the overlay goes in the body.
pub fn area(body: Rect) -> Rect {
    centered(body, 76, 40)
}

/// The overlay's text, unscrolled.
pub fn paragraph() -> Paragraph<'static> {
    let mut lines = Vec::new();
    for (group, keys) in GROUPS {
        lines.push(Line::styled(*group, theme::header()));
        for (k, d) in *keys {
            lines.push(Line::from(vec![Span::styled(format!("  {}", fit(k, 16)), theme::key()), Span::raw(*d)]));
        }
        lines.push(Line::raw(""));
    }
    Paragraph::new(lines)
}

/// Draws the overlay, scrolled by `scroll` lines (at most to its last line).
pub fn render(scroll: u16, body: Rect, frame: &mut Frame) {
    let area = area(body);
    if area.width < 3 || area.height < 3 {
        return;
    }
    let text = paragraph();
    let scroll = scroll.min(scroll_max(&text, area));
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(theme::focused())
        .title(" Help ")
        .title_bottom(Line::styled(" Esc close · j/k scroll ", theme::dim()).right_aligned());
    frame.render_widget(Clear, area);
    frame.render_widget(text.block(block).scroll((scroll, 0)), area);
}
