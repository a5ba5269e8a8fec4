//! Enters the dashboard's terminal mode (raw, alternate screen, mouse capture), draws a frame,
//! then panics: `scripts/tui-e2e.sh` runs it in tmux to check that a panic leaves a usable
//! terminal (primary screen back, raw mode off before the panic message is printed).

use std::time::Duration;

use ratatui::widgets::Paragraph;

fn main() {
    let (guard, mut terminal) = tds_ui::tui::TerminalGuard::enter().expect("a terminal");
    terminal.draw(|f| f.render_widget(Paragraph::new("PANIC-TEST-FRAME"), f.area())).expect("draw");
    std::thread::sleep(Duration::from_millis(1500));
    let _still_in_dashboard_mode = guard;
    panic!("deliberate panic to test terminal restoration");
}
