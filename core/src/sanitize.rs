//! Making untrusted text inert before it reaches a terminal (case C07).
//!
//! One policy everywhere a terminal could interpret text (dashboard, text log endpoint, CLI
//! output): control characters are *shown*, not obeyed. C0 controls become their Unicode
//! "control picture" (ESC → `␛`, BEL → `␇`, CR → `␍`), DEL becomes `␡`, and C1 controls (which
//! some terminals treat like ESC sequences, e.g. U+009B CSI) become `⟨9B⟩`. The rest of an escape
//! sequence is ordinary printable text and stays visible (`␛]0;PWNED␇`). Tabs are kept in the text
//! endpoint and expanded by the dashboard. The JSON log keeps the original characters (escaped by
//! JSON itself).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` would be interpreted (not printed) by a terminal.
pub fn is_dangerous(c: char) -> bool {
    matches!(c, '\0'..='\x08' | '\x0a'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}')
}

/// Returns `text` with every control character replaced by a visible stand-in; borrows when
/// nothing needs replacing (the common case).
pub fn inert(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_dangerous) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\0'..='\x08' | '\x0a'..='\x1f' => {
                out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'));
            }
            '\x7f' => out.push('\u{2421}'),
            '\u{80}'..='\u{9f}' => {
                out.push('⟨');
                let _ = write!(out, "{:02X}", c as u32);
                out.push('⟩');
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c07_sequences_become_visible_and_inert() {
        let input = "\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{1b}[31mred\u{1b}[0m [YELLOW] x\u{1b}[?1049l\u{1b}]52;c;cHduZWQ=\u{7}\rOVER \u{9b}31mC1";
        let out = inert(input);
        assert!(!out.chars().any(is_dangerous), "{out:?}");
        assert_eq!(out, "␛]0;PWNED␇␛[2J␛[31mred␛[0m [YELLOW] x␛[?1049l␛]52;c;cHduZWQ=␇␍OVER ⟨9B⟩31mC1");
    }

    #[test]
    fn clean_text_is_borrowed_and_tabs_survive() {
        assert!(matches!(inert("plain\ttext ✓ 漢字"), Cow::Borrowed(_)));
    }
}
