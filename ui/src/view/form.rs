//! The new-deployment form (`n`): environment and priority choosers, artifact path with its
//! check and completions, version, params, and the error of the last attempt to submit.

use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph};
use tui_input::Input;

use super::centered;
use crate::state::{AppState, FormField, FormState, PathStatus};
use crate::text::{clean, fit, skip_cells, truncate};
use crate::theme;

const LABEL: usize = 15;

fn label(field: FormField, focused: bool) -> Span<'static> {
    let style = if focused { theme::key() } else { theme::dim() };
    Span::styled(fit(&format!("{}{}", if focused { "▸ " } else { "  " }, field.label()), LABEL), style)
}

/// A text input's visible part and the cursor column inside it.
fn text_field(input: &Input, width: usize) -> (String, usize) {
    let scroll = input.visual_scroll(width);
    let value = clean(input.value());
    let shown = truncate(skip_cells(&value, scroll), width).into_owned();
    (shown, input.visual_cursor().saturating_sub(scroll))
}

fn check_line(form: &FormState) -> Line<'static> {
    let stale = form.check.input != form.artifact.value();
    let (text, style) = match &form.check.status {
        _ if form.artifact.value().is_empty() => {
            ("path of a .tar.gz, .tgz, .tar, .zip or a plain file".to_owned(), theme::dim())
        }
        _ if stale => ("checking…".to_owned(), theme::dim()),
        PathStatus::File(0) => ("✗ empty file".to_owned(), theme::error()),
        PathStatus::File(n) => (format!("✓ file, {n} bytes"), theme::ok()),
        PathStatus::Directory => ("folder: Tab completes".to_owned(), theme::warn()),
        PathStatus::Missing if form.check.candidates.is_empty() => ("✗ no such file".to_owned(), theme::error()),
        PathStatus::Missing => ("Tab completes:".to_owned(), theme::warn()),
        PathStatus::Unusable(why) => (format!("✗ {why}"), theme::error()),
        PathStatus::Unknown => (String::new(), theme::dim()),
    };
    let mut spans = vec![Span::raw(" ".repeat(LABEL)), Span::styled(text, style)];
    if !form.check.candidates.is_empty() && !stale {
        let list: Vec<String> = form.check.candidates.iter().take(6).map(|c| clean(c).into_owned()).collect();
        let more = form.check.candidates.len().saturating_sub(6);
        let more = if more > 0 { format!(" +{more}") } else { String::new() };
        spans.push(Span::styled(format!("  {}{more}", list.join("  ")), theme::dim()));
    }
    Line::from(spans)
}

/// Draws the form over the body.
pub fn render(state: &AppState, form: &FormState, body: Rect, frame: &mut Frame) {
    let rows = 5 + 1 + 1 + 1 + if form.error.is_some() || form.submitting { 3 } else { 0 };
    let area = centered(body, 78, rows + 2);
    if area.width < 3 || area.height < 3 {
        return;
    }
    let inner_w = usize::from(area.width.saturating_sub(2));
    let field_w = inner_w.saturating_sub(LABEL + 1).max(1);
    let mut lines = Vec::new();
    let mut cursor: Option<(usize, usize)> = None;
    for field in FormField::ALL {
        let focused = form.field == field;
        let mut spans = vec![label(field, focused)];
        let choice = |text: String| {
            let style = if focused { Style::new().add_modifier(Modifier::BOLD) } else { Style::new() };
            Span::styled(if focused { format!("◂ {text} ▸") } else { format!("  {text}") }, style)
        };
        match field {
            FormField::Environment => {
                let name =
                    state.environments.get(form.env).map_or_else(|| "–".to_owned(), |e| clean(&e.name).into_owned());
                spans.push(choice(name));
                let n = state.environments.len();
                spans.push(Span::styled(format!("  ({} of {n})", form.env + 1), theme::dim()));
            }
            FormField::Priority => spans.push(choice(form.priority.to_string())),
            FormField::Artifact | FormField::Version | FormField::Params => {
                let input = match field {
                    FormField::Artifact => &form.artifact,
                    FormField::Version => &form.version,
                    _ => &form.params,
                };
                let (shown, col) = text_field(input, field_w);
                if focused {
                    cursor = Some((lines.len(), LABEL + col));
                }
                let placeholder = match field {
                    FormField::Version if input.value().is_empty() => "e.g. 1.4.2",
                    FormField::Params if input.value().is_empty() => "KEY=value KEY2=value (optional)",
                    _ => "",
                };
                spans.push(Span::raw(shown));
                if !placeholder.is_empty() && !focused {
                    spans.push(Span::styled(placeholder, theme::dim()));
                } else if !placeholder.is_empty() {
                    spans.push(Span::styled(format!(" {placeholder}"), theme::dim()));
                }
            }
        }
        lines.push(Line::from(spans));
        if field == FormField::Artifact {
            lines.push(check_line(form));
        }
    }
    lines.push(Line::raw(""));
    if form.submitting {
        lines.push(Line::styled("submitting…", theme::warn()));
    } else if let Some(e) = &form.error {
        let e = clean(e);
        for row in crate::text::wrap(&e, inner_w).into_iter().take(3) {
            lines.push(Line::styled(row.to_owned(), theme::error()));
        }
    }
    lines.push(Line::from(vec![
        Span::styled("Enter", theme::key()),
        Span::raw(" submit  "),
        Span::styled("Esc", theme::key()),
        Span::raw(" cancel  "),
        Span::styled("↑↓", theme::key()),
        Span::raw(" fields  "),
        Span::styled("←→", theme::key()),
        Span::raw(" choose  "),
        Span::styled("Tab", theme::key()),
        Span::raw(" complete path / next"),
    ]));
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(theme::focused())
        .title(" New deployment ");
    frame.render_widget(Clear, area);
    frame.render_widget(Paragraph::new(lines).block(block), area);
    if let Some((row, col)) = cursor {
        let x = area.x + 1 + u16::try_from(col).unwrap_or(u16::MAX).min(area.width.saturating_sub(2));
        let y = area.y + 1 + u16::try_from(row).unwrap_or(u16::MAX);
        if y < area.bottom().saturating_sub(1) && x < area.right() {
            frame.set_cursor_position(Position::new(x, y));
        }
    }
}
