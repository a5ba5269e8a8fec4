//! Colours and styles, in one place: status colours, focus, highlights. Only the 16 basic
//! colours, so that any terminal theme keeps it readable.

use ratatui::style::{Color, Modifier, Style};
use tds_core::logs::Level;
use tds_core::model::{Priority, StatusKind};

/// The border of the focused pane.
pub fn focused() -> Style {
    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
}

/// The border of other panes.
pub fn unfocused() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// Column headers.
pub fn header() -> Style {
    Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
}

/// The selected row.
pub fn selected() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// Secondary text (times, hints).
pub fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// Keys in hints and help.
pub fn key() -> Style {
    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
}

/// Errors in the footer and forms.
pub fn error() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}

/// Confirmations in the footer.
pub fn ok() -> Style {
    Style::new().fg(Color::Green)
}

/// Warnings (full environments, paused).
pub fn warn() -> Style {
    Style::new().fg(Color::Yellow)
}

/// Search matches in the log.
pub fn matched() -> Style {
    Style::new().fg(Color::Black).bg(Color::Yellow)
}

/// One colour per status.
pub fn status(kind: StatusKind) -> Style {
    match kind {
        StatusKind::Queued => Style::new().fg(Color::Yellow),
        StatusKind::Running => Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        StatusKind::RollingBack => Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
        StatusKind::RetryWait => Style::new().fg(Color::LightYellow),
        StatusKind::Succeeded => Style::new().fg(Color::Green),
        StatusKind::Failed => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        StatusKind::Cancelled => Style::new().fg(Color::DarkGray),
    }
}

/// Priorities: only the urgent ones stand out.
pub fn priority(p: Priority) -> Style {
    match p {
        Priority::Critical => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Priority::High => Style::new().fg(Color::Yellow),
        Priority::Normal => Style::new(),
        Priority::Low => Style::new().fg(Color::DarkGray),
    }
}

/// Engine records in the log, by level; phase changes are bold.
pub fn log_event(level: Level, phase: bool) -> Style {
    let s = match level {
        Level::Info => Style::new().fg(Color::Blue),
        Level::Warn => Style::new().fg(Color::Yellow),
        Level::Error => Style::new().fg(Color::Red),
    };
    if phase { s.add_modifier(Modifier::BOLD) } else { s }
}

/// Lines a step wrote to stderr.
pub fn stderr() -> Style {
    Style::new().fg(Color::LightRed)
}

/// The result of an environment's last deployment.
pub fn result(text: &str) -> Style {
    text.parse::<StatusKind>().map_or_else(|_| Style::new(), status)
}
