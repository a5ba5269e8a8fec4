//! The confirmation dialog: cancel a deployment, quit while deployments run.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph, Wrap};

use super::centered;
use crate::state::{AppState, Confirm};
use crate::theme;

/// Draws the question over the body.
pub fn render_confirm(state: &AppState, confirm: &Confirm, body: Rect, frame: &mut Frame) {
    let (title, text) = match confirm {
        Confirm::Cancel { label, .. } => (
            " Cancel deployment ",
            format!("Cancel {label}? A running one is stopped and rolled back; it will not retry by itself."),
        ),
        Confirm::Quit if state.running() == 0 => (" Quit ", "No deployment is running any more. Quit?".to_owned()),
        Confirm::Quit => {
            let running = match state.running() {
                1 => "1 deployment is running".to_owned(),
                n => format!("{n} deployments are running"),
            };
            let after = if state.ephemeral {
                "they are interrupted and the demo's folder is removed"
            } else {
                "they are interrupted, rolled back, and run again when tds next starts on this data folder"
            };
            (" Quit ", format!("{running}. Quitting stops the embedded orchestrator: {after}. Quit?"))
        }
    };
    let area = centered(body, 60, 7);
    if area.width < 3 || area.height < 3 {
        return;
    }
    let lines = vec![
        Line::raw(text),
        Line::raw(""),
        Line::from(vec![
            Span::styled("y", theme::key()),
            Span::raw(" yes   "),
            Span::styled("n", theme::key()),
            Span::raw(" / Esc no"),
        ]),
    ];
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(theme::warn())
        .title(title);
    frame.render_widget(Clear, area);
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: true }), area);
}
