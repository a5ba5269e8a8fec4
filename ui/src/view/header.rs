//! The header line: name and version, the global `running/max_running` when that cap is set,
//! each environment's `running/limit` (highlighted when full, marked when down or paused), the
//! API address, and the clock.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::state::AppState;
use crate::text::{clean, truncate, width};
use crate::theme;

/// Draws the header into its one-line area.
pub fn render(state: &AppState, area: Rect, frame: &mut Frame) {
    let total = usize::from(area.width);
    let version = env!("CARGO_PKG_VERSION");
    let name = truncate(&clean(&state.title), 24).into_owned();
    let title = if name.contains(version) { format!(" {name} ") } else { format!(" {name} v{version} ") };
    let api = match &state.api {
        Some(addr) => format!(" API {} ", truncate(&clean(addr), 28)),
        None => " API off ".to_owned(),
    };
    let clock = format!(" {} ", state.local(state.now).format("%H:%M:%S"));
    let fixed = width(&title) + width(&api) + width(&clock);
    let mut budget = total.saturating_sub(fixed + 1);

    let mut spans = vec![Span::styled(title, Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED))];
    spans.push(Span::raw(" "));
    if let Some(cap) = state.max_running {
        let running: u32 = state.environments.iter().map(|e| e.running).sum();
        let chip = format!("all {running}/{cap}");
        let need = width(&chip) + 2;
        if need <= budget {
            let style = if running >= cap { theme::warn().add_modifier(Modifier::BOLD) } else { Style::new() };
            spans.push(Span::styled(chip, style));
            spans.push(Span::raw("  "));
            budget -= need;
        }
    }
    let count = state.environments.len();
    for (i, env) in state.environments.iter().enumerate() {
        let mut chip = format!("{} {}/{}", truncate(&clean(&env.name), 14), env.running, env.max_concurrent);
        let mut style = Style::new();
        if env.paused {
            chip.push_str(" paused");
            style = theme::warn();
        } else if !env.available {
            chip.push_str(" down");
            style = theme::error();
        } else if env.running >= env.max_concurrent {
            style = theme::warn().add_modifier(Modifier::BOLD);
        }
        let reserve = if i + 1 < count { 4 } else { 0 };
        let need = width(&chip) + 2;
        if need + reserve > budget {
            spans.push(Span::styled(format!("+{}", count - i), theme::dim()));
            break;
        }
        spans.push(Span::styled(chip, style));
        spans.push(Span::raw("  "));
        budget -= need;
    }
    let used: usize = spans.iter().map(|s| width(&s.content)).sum();
    let pad = total.saturating_sub(used + width(&api) + width(&clock));
    spans.push(Span::raw(" ".repeat(pad)));
    spans.push(Span::styled(api, if state.api.is_some() { theme::ok() } else { theme::dim() }));
    spans.push(Span::styled(clock, Style::new().add_modifier(Modifier::BOLD)));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
