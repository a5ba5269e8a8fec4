//! Terminal events to actions, aware of the mode (dashboard, help, detail, form, prompt,
//! confirmation) and, for the few keys that differ, of the focused pane. k9s/lazygit
//! conventions: `j`/`k`, `g`/`G`, `/`, `?`, `Esc` back.

use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use tui_input::backend::crossterm::to_input_request;

use crate::action::Action;
use crate::state::{AppState, Mode, Pane};

/// The action for one terminal event, if it means anything here.
pub fn map(state: &AppState, event: &Event) -> Option<Action> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => map_key(state, event, *key),
        Event::Mouse(mouse) => map_mouse(*mouse),
        Event::Paste(text) => Some(Action::Paste(text.clone())),
        Event::Resize(width, height) => Some(Action::Resize { width: *width, height: *height }),
        _ => None,
    }
}

fn map_mouse(m: MouseEvent) -> Option<Action> {
    let (column, row) = (m.column, m.row);
    match m.kind {
        MouseEventKind::ScrollUp => Some(Action::Scroll { column, row, delta: -1 }),
        MouseEventKind::ScrollDown => Some(Action::Scroll { column, row, delta: 1 }),
        MouseEventKind::Down(MouseButton::Left) => Some(Action::Click { column, row }),
        _ => None,
    }
}

fn map_key(state: &AppState, event: &Event, key: KeyEvent) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c' | 'C')) {
        return Some(Action::ForceQuit);
    }
    if crate::view::areas_of(state).too_small {
        // Only the notice is drawn; it offers `q`, whatever mode is hidden behind it.
        return (key.code == KeyCode::Char('q')).then_some(Action::Quit);
    }
    match &state.mode {
        Mode::Normal => normal(state, key, ctrl),
        Mode::Help { .. } => match key.code {
            KeyCode::Esc | KeyCode::Char('?' | 'q') | KeyCode::Enter => Some(Action::Back),
            code => movement(code, ctrl),
        },
        Mode::Metrics(_) => match key.code {
            KeyCode::Esc | KeyCode::Char('q' | 'm') | KeyCode::Backspace | KeyCode::Enter => Some(Action::Back),
            KeyCode::Char('?') => Some(Action::Help),
            code => movement(code, ctrl),
        },
        Mode::Detail(_) => match key.code {
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Backspace | KeyCode::Enter => Some(Action::Back),
            KeyCode::Char('?') => Some(Action::Help),
            KeyCode::Char('c') => Some(Action::Cancel),
            KeyCode::Char('r') => Some(Action::Retry),
            KeyCode::Char('+' | '=') => Some(Action::PriorityUp),
            KeyCode::Char('-' | '_') => Some(Action::PriorityDown),
            code => movement(code, ctrl),
        },
        Mode::Form(_) => match key.code {
            KeyCode::Esc => Some(Action::Back),
            KeyCode::Enter => Some(Action::Submit),
            KeyCode::Tab => Some(Action::FormTab),
            KeyCode::BackTab | KeyCode::Up => Some(Action::FormPrev),
            KeyCode::Down => Some(Action::FormNext),
            _ => to_input_request(event).map(Action::Input),
        },
        Mode::Prompt(_) => match key.code {
            KeyCode::Esc => Some(Action::Back),
            KeyCode::Enter => Some(Action::Submit),
            _ => to_input_request(event).map(Action::Input),
        },
        Mode::Confirm(_) => match key.code {
            KeyCode::Char('y' | 'Y') | KeyCode::Enter => Some(Action::Answer(true)),
            KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => Some(Action::Answer(false)),
            _ => None,
        },
    }
}

fn movement(code: KeyCode, ctrl: bool) -> Option<Action> {
    Some(match code {
        KeyCode::Char('j') | KeyCode::Down => Action::Down,
        KeyCode::Char('k') | KeyCode::Up => Action::Up,
        KeyCode::Char('g') | KeyCode::Home => Action::Top,
        KeyCode::Char('G') | KeyCode::End => Action::Bottom,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Char('u' | 'b') if ctrl => Action::PageUp,
        KeyCode::Char('d' | 'f') if ctrl => Action::PageDown,
        _ => return None,
    })
}

fn normal(state: &AppState, key: KeyEvent, ctrl: bool) -> Option<Action> {
    if let Some(action) = movement(key.code, ctrl) {
        return Some(action);
    }
    let searching = state.focus == Pane::Logs && state.logs.search.is_some();
    Some(match key.code {
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Esc => Action::Back,
        KeyCode::Tab => Action::FocusNext,
        KeyCode::BackTab => Action::FocusPrev,
        KeyCode::Char('1') => Action::Focus(Pane::Queue),
        KeyCode::Char('2') => Action::Focus(Pane::Environments),
        KeyCode::Char('3') => Action::Focus(Pane::Logs),
        KeyCode::Char('4') => Action::Focus(Pane::Trends),
        KeyCode::Char('h') | KeyCode::Left => Action::Left,
        KeyCode::Char('l') | KeyCode::Right => Action::Right,
        KeyCode::Enter => Action::Open,
        KeyCode::Char('c') => Action::Cancel,
        KeyCode::Char('r') => Action::Retry,
        KeyCode::Char('+' | '=') => Action::PriorityUp,
        KeyCode::Char('-' | '_') => Action::PriorityDown,
        KeyCode::Char('n') if searching => Action::NextMatch,
        KeyCode::Char('N') if searching => Action::PrevMatch,
        KeyCode::Char('n') => Action::New,
        KeyCode::Char('/') => Action::Search,
        KeyCode::Char('p') => Action::TogglePause,
        KeyCode::Char('L') => Action::EditLimit,
        KeyCode::Char('f') => Action::ToggleFollow,
        KeyCode::Char('w') => Action::ToggleWrap,
        KeyCode::Char('a') => Action::ToggleFinished,
        KeyCode::Char('[') => Action::PrevAttempt,
        KeyCode::Char(']') => Action::NextAttempt,
        KeyCode::Char('t') => Action::TrendWindow,
        KeyCode::Char('m') => Action::Metrics,
        _ => return None,
    })
}
