//! The footer line: the prompt being typed (with the error that kept it open), else the answer
//! to the last action, else the keys that matter where the focus is.

use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::hints;
use crate::state::{AppState, Mode, Pane, PromptKind};
use crate::text::{clean, width};
use crate::theme;

/// Draws the footer.
pub fn render(state: &AppState, area: Rect, frame: &mut Frame) {
    if let Mode::Prompt(prompt) = &state.mode {
        let label = match &prompt.kind {
            PromptKind::Filter => "filter (text, status:S, env:E) /".to_owned(),
            PromptKind::LogSearch => "search log /".to_owned(),
            PromptKind::Limit { environment } => format!("limit of {} (1-1000): ", clean(environment)),
        };
        let label_w = width(&label);
        let field_w = usize::from(area.width).saturating_sub(label_w + 1).max(1);
        let scroll = prompt.input.visual_scroll(field_w);
        let value = clean(prompt.input.value());
        let shown = crate::text::truncate(crate::text::skip_cells(&value, scroll), field_w).into_owned();
        let mut spans = vec![Span::styled(label, theme::key()), Span::raw(shown)];
        // A refused answer (e.g. a limit out of range) is said beside the prompt it keeps open.
        if let Some(flash) = state.flash.as_ref().filter(|f| f.error) {
            spans.push(Span::styled(format!("  {}", clean(&flash.text)), theme::error()));
        }
        let line = Line::from(spans);
        frame.render_widget(Paragraph::new(line), area);
        let cursor = prompt.input.visual_cursor().saturating_sub(scroll);
        let x = area.x.saturating_add(u16::try_from(label_w + cursor).unwrap_or(u16::MAX));
        if x < area.right() {
            frame.set_cursor_position(Position::new(x, area.y));
        }
        return;
    }
    if let Some(flash) = &state.flash {
        let style = if flash.error { theme::error() } else { theme::ok() };
        frame.render_widget(Paragraph::new(Line::styled(format!(" {}", clean(&flash.text)), style)), area);
        return;
    }
    let pairs: &[(&str, &str)] = match (&state.mode, state.focus) {
        (Mode::Detail(_), _) => {
            &[("Esc", "back"), ("j/k", "scroll"), ("c", "cancel"), ("r", "retry"), ("+/-", "priority")]
        }
        (Mode::Help { .. } | Mode::Metrics(_), _) => &[("Esc", "close"), ("j/k", "scroll")],
        (Mode::Form(_), _) => &[("Enter", "submit"), ("Esc", "cancel"), ("Tab", "next/complete"), ("←/→", "choose")],
        (Mode::Confirm(_), _) => &[("y", "yes"), ("n", "no")],
        (_, Pane::Queue) => &[
            ("?", "help"),
            ("Enter", "details"),
            ("c", "cancel"),
            ("r", "retry"),
            ("+/-", "priority"),
            ("n", "new"),
            ("/", "filter"),
            ("a", "finished"),
            ("q", "quit"),
        ],
        (_, Pane::Environments) => &[
            ("?", "help"),
            ("p", "pause/resume"),
            ("L", "limit"),
            ("Enter", "filter queue"),
            ("n", "new"),
            ("q", "quit"),
        ],
        (_, Pane::Logs) => &[
            ("?", "help"),
            ("f", "follow"),
            ("w", "wrap"),
            ("[/]", "attempt"),
            ("/", "search"),
            ("n/N", "next/prev"),
            ("g/G", "top/end"),
        ],
        (_, Pane::Trends) => &[("?", "help"), ("t ←/→", "window"), ("Tab", "next pane"), ("q", "quit")],
    };
    frame.render_widget(Paragraph::new(hints(pairs)), area);
}
