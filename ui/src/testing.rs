//! A `TestBackend` whose screen can be read, and whose size can be changed, while the real
//! event loop owns the terminal: what the key-driven integration tests and the bench use to
//! drive the dashboard exactly as a person would, without a terminal.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ratatui::backend::{Backend, ClearType, TestBackend, WindowSize};
use ratatui::buffer::{Buffer, Cell};
use ratatui::layout::{Position, Size};

/// The shared side of a [`SharedBackend`]: the last flushed screen and the wanted size.
#[derive(Debug, Clone)]
pub struct Screen {
    buffer: Arc<Mutex<Buffer>>,
    size: Arc<Mutex<Size>>,
    frames: Arc<Mutex<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Screen {
    /// The last frame as text, one line per row, cells hidden behind wide characters skipped.
    pub fn text(&self) -> String {
        let buffer = lock(&self.buffer);
        let mut out = String::new();
        for y in 0..buffer.area.height {
            let mut skip = 0;
            for x in 0..buffer.area.width {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                let symbol = buffer[(x, y)].symbol();
                skip = crate::text::width(symbol).saturating_sub(1);
                out.push_str(symbol);
            }
            out.push('\n');
        }
        out
    }

    /// A copy of the last frame's cells.
    pub fn buffer(&self) -> Buffer {
        lock(&self.buffer).clone()
    }

    /// Frames flushed so far.
    pub fn frames(&self) -> u64 {
        *lock(&self.frames)
    }

    /// Changes the terminal size the loop sees (send a resize event too, as a terminal does).
    pub fn resize(&self, width: u16, height: u16) {
        *lock(&self.size) = Size::new(width, height);
    }
}

/// A `TestBackend` that publishes each flushed frame to its [`Screen`].
#[derive(Debug)]
pub struct SharedBackend {
    inner: TestBackend,
    screen: Screen,
}

impl SharedBackend {
    /// A backend of `width` x `height` and the handle to watch it.
    pub fn new(width: u16, height: u16) -> (Self, Screen) {
        let inner = TestBackend::new(width, height);
        let screen = Screen {
            buffer: Arc::new(Mutex::new(inner.buffer().clone())),
            size: Arc::new(Mutex::new(Size::new(width, height))),
            frames: Arc::new(Mutex::new(0)),
        };
        (Self { inner, screen: screen.clone() }, screen)
    }

    fn follow_size(&mut self) {
        let want = *lock(&self.screen.size);
        let have = self.inner.buffer().area;
        if (have.width, have.height) != (want.width, want.height) {
            self.inner.resize(want.width, want.height);
        }
    }
}

impl Backend for SharedBackend {
    type Error = std::convert::Infallible;

    fn draw<'a, I>(&mut self, content: I) -> Result<(), Self::Error>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        self.follow_size();
        let area = self.inner.buffer().area;
        self.inner.draw(content.filter(|(x, y, _)| *x < area.width && *y < area.height))
    }

    fn hide_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.hide_cursor()
    }

    fn show_cursor(&mut self) -> Result<(), Self::Error> {
        self.inner.show_cursor()
    }

    fn get_cursor_position(&mut self) -> Result<Position, Self::Error> {
        self.inner.get_cursor_position()
    }

    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> Result<(), Self::Error> {
        self.inner.set_cursor_position(position)
    }

    fn clear(&mut self) -> Result<(), Self::Error> {
        self.follow_size();
        self.inner.clear()
    }

    fn clear_region(&mut self, clear_type: ClearType) -> Result<(), Self::Error> {
        self.follow_size();
        self.inner.clear_region(clear_type)
    }

    fn size(&self) -> Result<Size, Self::Error> {
        Ok(*lock(&self.screen.size))
    }

    fn window_size(&mut self) -> Result<WindowSize, Self::Error> {
        let size = *lock(&self.screen.size);
        Ok(WindowSize { columns_rows: size, pixels: Size::new(0, 0) })
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        *lock(&self.screen.buffer) = self.inner.buffer().clone();
        *lock(&self.screen.frames) += 1;
        Ok(())
    }
}
