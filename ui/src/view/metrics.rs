//! The metrics view (`m`): live counts, success rate and durations from the store, the last
//! 24 hours' performance (throughput, rates, queue wait, utilization per environment) and the
//! DORA-style figures, as the team lead reads them.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Paragraph, Wrap};
use tds_core::metrics::{DoraFigures, DurationStats};

use super::scroll_max;
use crate::state::{AppState, MetricsState};
use crate::text::{clean, duration_ms, fit, fit_right};
use crate::theme;

const KEY: usize = 16;

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| duration_ms(v.max(0.0) as u64))
}

fn durations(d: &DurationStats) -> String {
    format!(
        "mean {} · p50 {} · p95 {} ({} finished)",
        ms(d.mean_ms),
        ms(d.p50_ms.map(|v| v as f64)),
        ms(d.p95_ms.map(|v| v as f64)),
        d.count
    )
}

fn row<'a>(key: &str, value: String) -> Line<'a> {
    Line::from(vec![Span::styled(fit(key, KEY), theme::dim()), Span::raw(value)])
}

fn dora(f: &DoraFigures) -> String {
    format!(
        "{:.1}/day · change failure {} · restore {} ({} episodes) · lead time {}",
        f.deployment_frequency_per_day,
        pct(f.change_failure_rate),
        ms(f.time_to_restore_ms),
        f.restored_episodes,
        ms(f.lead_time_ms)
    )
}

/// Draws the view over the whole body.
pub fn render(state: &AppState, m: &MetricsState, area: Rect, frame: &mut Frame) {
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Thick)
        .border_style(theme::focused())
        .title(Line::styled(" Metrics ", theme::focused()))
        .title_top(Line::styled(" Esc back · j/k scroll · refreshes every 5 s ", theme::dim()).right_aligned());
    let text = paragraph(state, m);
    let scroll = m.scroll.min(scroll_max(&text, area));
    frame.render_widget(text.block(block).scroll((scroll, 0)), area);
}

/// The view's text, wrapped and unscrolled.
pub fn paragraph(state: &AppState, m: &MetricsState) -> Paragraph<'static> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines = Vec::new();
    if let Some(e) = &m.error {
        lines.push(Line::styled(format!("cannot read the metrics: {}", clean(e)), theme::error()));
    }
    match &m.metrics {
        None if m.loading => lines.push(Line::styled("reading the store…", theme::dim())),
        None => {}
        Some(x) => {
            let c = &x.counts;
            lines.push(Line::styled("Now (all time, from the store)", theme::header()));
            lines.push(row(
                "deployments",
                format!("{} total · {} in flight · {} retries", x.total, x.in_flight, x.total_retries),
            ));
            lines.push(Line::from(vec![
                Span::styled(fit("by status", KEY), theme::dim()),
                Span::styled(format!("queued {} ", c.queued), theme::status(tds_core::model::StatusKind::Queued)),
                Span::styled(format!("running {} ", c.running), theme::status(tds_core::model::StatusKind::Running)),
                Span::styled(
                    format!("rolling back {} ", c.rolling_back),
                    theme::status(tds_core::model::StatusKind::RollingBack),
                ),
                Span::styled(
                    format!("retry wait {} ", c.retry_wait),
                    theme::status(tds_core::model::StatusKind::RetryWait),
                ),
                Span::styled(
                    format!("succeeded {} ", c.succeeded),
                    theme::status(tds_core::model::StatusKind::Succeeded),
                ),
                Span::styled(format!("failed {} ", c.failed), theme::status(tds_core::model::StatusKind::Failed)),
                Span::styled(
                    format!("cancelled {}", c.cancelled),
                    theme::status(tds_core::model::StatusKind::Cancelled),
                ),
            ]));
            lines.push(row("success rate", format!("{} (succeeded ÷ succeeded + failed)", pct(x.success_rate))));
            lines.push(row("duration", durations(&x.duration)));
            lines.push(row("queue", format!("{} waiting · {} holding a slot", x.queue_size, x.running)));
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                format!(
                    "{} {} {} {} {}",
                    fit("environment", KEY),
                    fit_right("run", 7),
                    fit_right("queued", 7),
                    fit_right("now", 6),
                    "state"
                ),
                bold,
            ));
            for e in &x.environments {
                let s = if e.paused {
                    "paused"
                } else if e.available {
                    "available"
                } else {
                    "unavailable"
                };
                lines.push(Line::raw(format!(
                    "{} {} {} {} {s}",
                    fit(&clean(&e.name), KEY),
                    fit_right(&format!("{}/{}", e.running, e.limit), 7),
                    fit_right(&e.queued.to_string(), 7),
                    fit_right(&format!("{:.0}%", e.utilization * 100.0), 6),
                )));
            }
        }
    }
    if let Some(p) = &m.performance {
        lines.push(Line::raw(""));
        let span = format!(
            "Last 24 hours ({} → {})",
            state.local(p.from).format("%m-%d %H:%M"),
            state.local(p.to).format("%m-%d %H:%M")
        );
        lines.push(Line::styled(span, theme::header()));
        lines.push(row(
            "finished",
            format!(
                "{} of {} submitted · succeeded {} · failed {} · cancelled {}",
                p.finished, p.submitted, p.succeeded, p.failed, p.cancelled
            ),
        ));
        lines.push(row("rates", format!("success {} · failure {}", pct(p.success_rate), pct(p.failure_rate))));
        lines.push(row("throughput", format!("{:.1} per hour", p.throughput_per_hour)));
        lines.push(row("duration", durations(&p.duration)));
        lines.push(row("queue wait", format!("mean {}", ms(p.queue_wait_mean_ms))));
        lines.push(row("DORA overall", dora(&p.dora.overall)));
        lines.push(Line::raw(""));
        lines.push(Line::styled(format!("{} {} {}", fit("environment", KEY), fit_right("busy", 6), "DORA"), bold));
        for u in &p.utilization {
            let d = p.dora.environments.iter().find(|d| d.environment == u.environment);
            lines.push(Line::raw(format!(
                "{} {} {}",
                fit(&clean(&u.environment), KEY),
                fit_right(&format!("{:.0}%", u.utilization * 100.0), 6),
                d.map(|d| dora(&d.figures)).unwrap_or_default()
            )));
        }
    }
    Paragraph::new(lines).wrap(Wrap { trim: false })
}
