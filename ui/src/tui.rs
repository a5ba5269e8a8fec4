//! The terminal guard: raw mode, alternate screen, mouse capture and bracketed paste on entry;
//! all of it undone on drop and from the panic hook, so that quit, panic, signal and Ctrl-C
//! all leave a usable terminal.

use std::io::{self, Stdout, Write as _};
use std::panic::{self, PanicHookInfo};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::Show;
use ratatui::crossterm::event::{DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};

type Hook = Arc<dyn Fn(&PanicHookInfo<'_>) + Send + Sync + 'static>;

/// Holds the terminal in dashboard mode; dropping it restores the terminal and the previous
/// panic hook.
pub struct TerminalGuard {
    previous_hook: Option<Hook>,
}

/// Set by the panic hook: the terminal was restored because something panicked (possibly a
/// background task, while the dashboard itself still runs).
static RESTORED_BY_PANIC: AtomicBool = AtomicBool::new(false);

/// Whether a panic restored the terminal; the loop then stops instead of drawing on a
/// terminal that is no longer in dashboard mode.
pub fn restored_by_panic() -> bool {
    RESTORED_BY_PANIC.load(Ordering::SeqCst)
}

/// Puts everything back; safe to call more than once.
pub fn restore() {
    let _ = disable_raw_mode();
    let mut out = io::stdout();
    let _ = execute!(out, DisableBracketedPaste, DisableMouseCapture, LeaveAlternateScreen, Show);
    let _ = out.flush();
}

impl TerminalGuard {
    /// Enters dashboard mode and returns the terminal to draw on.
    pub fn enter() -> io::Result<(Self, Terminal<CrosstermBackend<Stdout>>)> {
        let previous: Hook = Arc::from(panic::take_hook());
        let chained = Arc::clone(&previous);
        panic::set_hook(Box::new(move |info| {
            RESTORED_BY_PANIC.store(true, Ordering::SeqCst);
            restore();
            chained(info);
        }));
        let guard = Self { previous_hook: Some(previous) };
        enable_raw_mode().map_err(|e| {
            io::Error::new(e.kind(), format!("the dashboard needs a terminal ({e}); use --serve to run headless"))
        })?;
        execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture, EnableBracketedPaste)?;
        let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        terminal.hide_cursor()?;
        terminal.clear()?;
        Ok((guard, terminal))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
        // The hook cannot be swapped while unwinding (take_hook panics then): during a panic
        // ours stays, which is harmless since it only restores the terminal once more.
        if std::thread::panicking() {
            return;
        }
        if let Some(previous) = self.previous_hook.take() {
            // Only the hook we installed is replaced; a panic from here on uses the old one.
            let _ = panic::take_hook();
            panic::set_hook(Box::new(move |info| previous(info)));
        }
    }
}
