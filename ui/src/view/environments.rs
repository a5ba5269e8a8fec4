//! The Environments pane: per environment a utilization gauge (running/limit), queued count,
//! availability (down since when, paused), the live release's version and the last result.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use tds_core::model::EnvironmentView;

use super::pane_block;
use crate::state::{AppState, Pane};
use crate::text::{clean, fit, fit_right};
use crate::theme;

const GAUGE: usize = 5;

/// `███░░ 3/5`: filled cells for busy slots.
fn gauge(env: &EnvironmentView) -> (String, String) {
    let limit = env.max_concurrent.max(1) as usize;
    let filled = (env.running as usize * GAUGE).div_ceil(limit).min(GAUGE);
    ("█".repeat(filled) + &"░".repeat(GAUGE - filled), format!("{}/{}", env.running, env.max_concurrent))
}

fn availability(state: &AppState, env: &EnvironmentView) -> (String, Style) {
    if env.paused {
        ("paused".into(), theme::warn())
    } else if !env.available {
        let since = env.unavailable_since.map(|t| format!(" {}", state.local(t).format("%H:%M"))).unwrap_or_default();
        (format!("down{since}"), theme::error())
    } else {
        ("ok".into(), theme::ok())
    }
}

/// Draws the environments table.
pub fn render(state: &AppState, area: Rect, frame: &mut Frame) {
    let note = Line::from(format!(" {} ", state.environments.len()));
    let block = pane_block(state, Pane::Environments, note);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let w = usize::from(inner.width);
    let name_w = state.environments.iter().map(|e| crate::text::width(&e.name)).max().unwrap_or(4).clamp(4, 12);
    let counts = state.environments.iter().map(|e| gauge(e).1.len()).max().unwrap_or(3);
    let load_w = GAUGE + 1 + counts;
    let state_w =
        state.environments.iter().map(|e| crate::text::width(&availability(state, e).0)).max().unwrap_or(5).max(5);
    let fixed = name_w + load_w + 3 + state_w + 4;
    let rest = w.saturating_sub(fixed);
    let (current_w, last_w) = if rest >= 20 { (rest - 10, 9) } else { (rest, 0) };
    let mut lines = vec![Line::styled(
        format!(
            "{} {} {} {} {}{}",
            fit("NAME", name_w),
            fit("LOAD", load_w),
            fit_right("Q", 3),
            fit("STATE", state_w),
            fit("CURRENT", current_w),
            if last_w > 0 { format!(" {}", fit("LAST", last_w)) } else { String::new() }
        ),
        theme::header(),
    )];
    if state.environments.is_empty() {
        lines.push(Line::styled("no environments configured", theme::dim()));
    }
    let visible = usize::from(inner.height.saturating_sub(1));
    for (i, env) in state.environments.iter().enumerate().skip(state.envs.offset).take(visible) {
        let (bar, count) = gauge(env);
        let full = env.running >= env.max_concurrent;
        let bar_style = if full { Style::new().fg(Color::Red) } else { Style::new().fg(Color::Green) };
        let (avail, avail_style) = availability(state, env);
        let current = env.current_release.as_ref().map_or_else(|| "–".to_owned(), |r| clean(&r.version).into_owned());
        let mut spans = vec![
            Span::raw(fit(&clean(&env.name), name_w)),
            Span::raw(" "),
            Span::styled(bar, bar_style),
            Span::styled(fit(&format!(" {count}"), load_w - GAUGE), if full { theme::warn() } else { Style::new() }),
            Span::raw(" "),
            Span::raw(fit_right(&env.queued.to_string(), 3)),
            Span::raw(" "),
            Span::styled(fit(&avail, state_w), avail_style),
            Span::raw(" "),
            Span::raw(fit(&current, current_w)),
        ];
        if last_w > 0 {
            let last = env.last_result.as_deref().unwrap_or("–");
            spans.push(Span::raw(" "));
            spans.push(Span::styled(fit(last, last_w), theme::result(last)));
        }
        let focused = state.focus == Pane::Environments;
        let style = if i == state.envs.selected && focused { theme::selected() } else { Style::new() };
        lines.push(Line::from(spans).style(style));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
