//! The Trends pane: four sparklines (throughput, success rate, mean duration, queue depth) over
//! the selected window, each with its current value as a number.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};

use super::pane_block;
use crate::state::{AppState, Pane};
use crate::text::{fit, fit_right};
use crate::theme;
use crate::trends::Series;

const LABEL: usize = 9;
const VALUE: usize = 7;

/// Draws the sparklines, splitting the height evenly between them.
pub fn render(state: &AppState, area: Rect, frame: &mut Frame) {
    let t = &state.trends.series;
    let note = Line::from(vec![
        Span::styled(format!(" {} ", state.trends.window.label()), theme::key()),
        Span::styled("t: window ", theme::dim()),
    ]);
    let block = pane_block(state, Pane::Trends, note);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let rows: [(&str, &Series, Color, Option<u64>); 4] = [
        ("deploys", &t.throughput, Color::Cyan, None),
        ("success", &t.success_rate, Color::Green, Some(100)),
        ("duration", &t.duration, Color::Magenta, None),
        ("queue", &t.queue_depth, Color::Yellow, None),
    ];
    let per = (inner.height / 4).max(1);
    let spark_w = usize::from(inner.width).saturating_sub(LABEL + VALUE + 2);
    for (i, (label, series, color, max)) in rows.into_iter().enumerate() {
        let y = inner.y + per * i as u16;
        if y >= inner.bottom() {
            break;
        }
        let height = per.min(inner.bottom() - y);
        let label_area = Rect { x: inner.x, y, width: (LABEL as u16).min(inner.width), height: 1 };
        frame.render_widget(Paragraph::new(Span::styled(fit(label, LABEL), theme::dim())), label_area);
        let value_x = inner.right().saturating_sub(VALUE as u16);
        let value_area = Rect { x: value_x.max(inner.x), y, width: (VALUE as u16).min(inner.width), height: 1 };
        frame.render_widget(
            Paragraph::new(Span::styled(fit_right(&series.current, VALUE), Style::new().fg(color))),
            value_area,
        );
        if spark_w == 0 {
            continue;
        }
        // Few buckets (15 one-minute ones) are widened to fill the space; many are cut to the
        // most recent ones.
        let stretch = (spark_w / series.values.len().max(1)).max(1);
        let data: Vec<Option<u64>> = series
            .values
            .iter()
            .flat_map(|v| std::iter::repeat_n(*v, stretch))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take(spark_w)
            .rev()
            .collect();
        let mut spark = Sparkline::default().data(data).style(Style::new().fg(color)).absent_value_symbol("·");
        if let Some(m) = max {
            spark = spark.max(m);
        }
        let spark_area = Rect { x: inner.x + LABEL as u16 + 1, y, width: spark_w as u16, height };
        frame.render_widget(spark, spark_area);
    }
}
