//! The detail view (`Enter`): every field of one deployment, its phase timeline with
//! durations, every attempt with its result, the error and the params.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Paragraph, Wrap};
use tds_core::model::DeploymentView;

use super::scroll_max;
use crate::state::{AppState, DetailState};
use crate::text::{clean, duration_ms, fit};
use crate::theme;

const KEY: usize = 13;

fn field<'a>(key: &str, value: String, style: Style) -> Line<'a> {
    Line::from(vec![Span::styled(fit(key, KEY), theme::dim()), Span::styled(value, style)])
}

fn time(state: &AppState, t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "–".to_owned(), |t| state.local(t).format("%Y-%m-%d %H:%M:%S").to_string())
}

fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

fn fields<'a>(state: &AppState, d: &DeploymentView) -> Vec<Line<'a>> {
    let mut lines = vec![
        Line::from(vec![
            Span::styled(d.id.to_string(), Style::new().add_modifier(Modifier::BOLD)),
            Span::raw("  "),
            Span::styled(d.status.to_string(), theme::status(d.status)),
            Span::raw(if d.cancel_requested { "  (cancel requested)" } else { "" }),
        ]),
        field("environment", clean(&d.environment).into_owned(), Style::new()),
        field("version", clean(&d.version).into_owned(), Style::new()),
        field("priority", d.priority.to_string(), theme::priority(d.priority)),
        field("artifact", format!("{}  {}", clean(&d.artifact.name), size(d.artifact.size)), Style::new()),
        field("sha256", clean(&d.artifact.sha256).into_owned(), theme::dim()),
        field("requested by", clean(&d.requested_by).into_owned(), Style::new()),
        field(
            "attempt",
            format!("{} (automatic retries used {} of {})", d.attempt, d.retry_count, d.max_retries),
            Style::new(),
        ),
    ];
    if let Some(p) = d.phase {
        let step =
            d.step.as_ref().map(|s| format!(" · step {}/{} {}", s.index, s.total, clean(&s.name))).unwrap_or_default();
        lines.push(field("phase", format!("{p}{step} · {}%", d.progress_percent), Style::new()));
    }
    if let Some(w) = &d.wait_reason {
        lines.push(field("waiting", clean(w).into_owned(), theme::warn()));
    }
    if let Some(t) = d.next_retry_at {
        lines.push(field("next retry", time(state, Some(t)), theme::warn()));
    }
    lines.push(field("created", time(state, Some(d.created_at)), Style::new()));
    lines.push(field("started", time(state, d.started_at), Style::new()));
    lines.push(field("finished", time(state, d.finished_at), Style::new()));
    lines.push(field("duration", d.duration_ms.map_or_else(|| "–".to_owned(), duration_ms), Style::new()));
    if let Some(e) = &d.error {
        lines.push(field("error", clean(e).into_owned(), theme::error()));
    }
    if d.params.is_empty() {
        lines.push(field("params", "–".to_owned(), theme::dim()));
    } else {
        for (i, (k, v)) in d.params.iter().enumerate() {
            lines.push(field(if i == 0 { "params" } else { "" }, format!("{}={}", clean(k), clean(v)), Style::new()));
        }
    }
    lines
}

/// Draws the view over the whole body.
pub fn render(state: &AppState, detail: &DetailState, area: Rect, frame: &mut Frame) {
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Thick)
        .border_style(theme::focused())
        .title(Line::styled(format!(" Deployment {} ", detail.id.short()), theme::focused()))
        .title_top(Line::styled(" Esc back · c cancel · r retry · +/- priority ", theme::dim()).right_aligned());
    let text = paragraph(state, detail);
    let scroll = detail.scroll.min(scroll_max(&text, area));
    frame.render_widget(text.block(block).scroll((scroll, 0)), area);
}

/// The view's text, wrapped and unscrolled.
pub fn paragraph<'a>(state: &AppState, detail: &'a DetailState) -> Paragraph<'a> {
    let view = detail.detail.as_ref().map(|d| &d.deployment).or_else(|| state.find(detail.id).map(AsRef::as_ref));
    let mut lines = match view {
        Some(d) => fields(state, d),
        None => vec![Line::styled("deployment not found", theme::error())],
    };
    if let Some(e) = &detail.error {
        lines.push(Line::styled(format!("cannot load the history of this deployment: {}", clean(e)), theme::error()));
    }
    if let Some(full) = &detail.detail {
        lines.push(Line::raw(""));
        lines.push(Line::styled("Timeline", theme::header()));
        // Each entry shows how long that state lasted: until the next entry, or until now
        // for the current state of a deployment that has not finished.
        let ts = &full.transitions;
        let terminal = full.deployment.is_terminal();
        for (i, t) in ts.iter().enumerate() {
            let lasted = match ts.get(i + 1) {
                Some(next) => duration_ms((next.at - t.at).num_milliseconds().max(0) as u64),
                None if !terminal => format!("{}…", duration_ms((state.now - t.at).num_milliseconds().max(0) as u64)),
                None => String::new(),
            };
            let what = match t.phase {
                Some(p) => format!("{} · {p}", t.status),
                None => t.status.to_string(),
            };
            lines.push(Line::from(vec![
                Span::styled(format!("  {} ", state.local(t.at).format("%H:%M:%S%.3f")), theme::dim()),
                Span::styled(fit(&format!("#{}", t.attempt), 4), theme::dim()),
                Span::styled(fit(&what, 24), theme::status(t.status)),
                Span::styled(fit(&lasted, 9), theme::dim()),
                Span::raw(t.message.as_deref().map(|m| clean(m).into_owned()).unwrap_or_default()),
            ]));
        }
        lines.push(Line::raw(""));
        lines.push(Line::styled("Attempts", theme::header()));
        for a in &full.attempts {
            let outcome = a.outcome.clone().unwrap_or_else(|| "running".into());
            lines.push(Line::from(vec![
                Span::raw(format!("  #{:<3}", a.attempt)),
                Span::styled(format!("queued {}  ", state.local(a.queued_at).format("%H:%M:%S")), theme::dim()),
                Span::raw(format!(
                    "{} → {}  ",
                    a.started_at.map_or_else(|| "–".into(), |t| state.local(t).format("%H:%M:%S").to_string()),
                    a.finished_at.map_or_else(|| "–".into(), |t| state.local(t).format("%H:%M:%S").to_string()),
                )),
                Span::raw(fit(&a.duration_ms.map_or_else(|| "–".to_owned(), duration_ms), 8)),
                Span::styled(fit(&outcome, 11), theme::result(&outcome)),
                Span::styled(a.error.as_deref().map(|e| clean(e).into_owned()).unwrap_or_default(), theme::error()),
            ]));
        }
    } else if detail.loading {
        lines.push(Line::styled("loading timeline…", theme::dim()));
    }
    Paragraph::new(lines).wrap(Wrap { trim: false })
}
