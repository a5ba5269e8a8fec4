//! Text made safe and measured for a terminal cell grid: inert control characters (case C07),
//! expanded tabs, and cutting, padding and wrapping on grapheme boundaries by display width.

use std::borrow::Cow;

use ratatui::buffer::CellWidth as _;
use unicode_segmentation::UnicodeSegmentation as _;

/// Tab stops of expanded tabs.
const TAB: usize = 4;

/// Makes untrusted text (log lines, versions, params, names) safe to draw: control and escape
/// characters become visible stand-ins (`tds_core::sanitize`'s policy) and tabs become spaces.
/// Borrows when there is nothing to change, which is the common case.
pub fn clean(text: &str) -> Cow<'_, str> {
    let inert = tds_core::sanitize::inert(text);
    if !inert.contains('\t') {
        return inert;
    }
    let mut out = String::with_capacity(inert.len() + 8);
    let mut col = 0usize;
    for g in inert.graphemes(true) {
        if g == "\t" {
            let pad = TAB - col % TAB;
            out.extend(std::iter::repeat_n(' ', pad));
            col += pad;
        } else {
            out.push_str(g);
            col += width(g);
        }
    }
    Cow::Owned(out)
}

/// Display width in terminal cells, the way the ratatui buffer measures it.
pub fn width(text: &str) -> usize {
    if text.is_ascii() {
        return text.len();
    }
    text.graphemes(true).map(|g| usize::from(g.cell_width())).sum()
}

/// Cuts `text` to at most `max` cells on a grapheme boundary, ending with `…` when something
/// was cut. Never splits a wide character: a half cell left over stays empty.
pub fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    if max == 0 {
        return Cow::Borrowed("");
    }
    if text.is_ascii() && text.len() <= max {
        return Cow::Borrowed(text);
    }
    if width(text) <= max {
        return Cow::Borrowed(text);
    }
    let budget = max - 1;
    let mut used = 0usize;
    let mut out = String::with_capacity(max + 3);
    for g in text.graphemes(true) {
        let w = usize::from(g.cell_width());
        if used + w > budget {
            break;
        }
        used += w;
        out.push_str(g);
    }
    out.push('…');
    Cow::Owned(out)
}

/// `truncate`, then pads with spaces to exactly `cells` cells: table columns stay aligned
/// whatever the characters.
pub fn fit(text: &str, cells: usize) -> String {
    let cut = truncate(text, cells);
    let w = width(&cut);
    let mut out = String::with_capacity(cut.len() + cells.saturating_sub(w));
    out.push_str(&cut);
    out.extend(std::iter::repeat_n(' ', cells.saturating_sub(w)));
    out
}

/// Pads on the left to `cells` cells (numbers), cutting like [`truncate`] when too long.
pub fn fit_right(text: &str, cells: usize) -> String {
    let cut = truncate(text, cells);
    let w = width(&cut);
    let mut out = String::with_capacity(cut.len() + cells.saturating_sub(w));
    out.extend(std::iter::repeat_n(' ', cells.saturating_sub(w)));
    out.push_str(&cut);
    out
}

/// Splits `text` into rows of at most `cells` cells on grapheme boundaries (hard wrap: log
/// lines are not prose). An empty text is one empty row; `cells == 0` gives no rows.
pub fn wrap(text: &str, cells: usize) -> Vec<&str> {
    if cells == 0 {
        return Vec::new();
    }
    let mut rows = Vec::new();
    let mut start = 0usize;
    let mut used = 0usize;
    for (i, g) in text.grapheme_indices(true) {
        let w = usize::from(g.cell_width());
        if used + w > cells && used > 0 {
            rows.push(&text[start..i]);
            start = i;
            used = 0;
        }
        used += w;
    }
    rows.push(&text[start..]);
    rows
}

/// How many rows [`wrap`] would make, without allocating.
pub fn wrapped_rows(text: &str, cells: usize) -> usize {
    if cells == 0 {
        return 0;
    }
    if text.is_ascii() {
        return text.len().div_ceil(cells).max(1);
    }
    let mut rows = 1usize;
    let mut used = 0usize;
    for g in text.graphemes(true) {
        let w = usize::from(g.cell_width());
        if used + w > cells && used > 0 {
            rows += 1;
            used = 0;
        }
        used += w;
    }
    rows
}

/// Drops the first `cells` cells (horizontal scrolling of unwrapped lines).
pub fn skip_cells(text: &str, cells: usize) -> &str {
    if cells == 0 {
        return text;
    }
    let mut used = 0usize;
    for (i, g) in text.grapheme_indices(true) {
        if used >= cells {
            return &text[i..];
        }
        used += usize::from(g.cell_width());
    }
    ""
}

/// Whether `haystack` contains `lower_needle` (already lowercase), ignoring case; the ASCII
/// case needs no allocation.
pub fn contains_ci(haystack: &str, lower_needle: &str) -> bool {
    if lower_needle.is_empty() {
        return true;
    }
    if haystack.is_ascii() && lower_needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), lower_needle.as_bytes());
        return h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    haystack.to_lowercase().contains(lower_needle)
}

/// A duration for people: `850ms`, `12s`, `4m05s`, `2h10m`, `3d04h`.
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A short age: `12s`, `5m`, `3h`, `2d` (negative ages, from clock jumps, show as `0s`).
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_inert_and_tabs_expanded() {
        let out = clean("a\tb\u{1b}[2J\u{9b}31m\r");
        assert_eq!(out, "a   b␛[2J⟨9B⟩31m␍");
        assert!(matches!(clean("plain ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn fit_keeps_columns_aligned_with_wide_and_combining_text() {
        for s in ["漢字漢字漢字", "e\u{301}e\u{301}e\u{301}e\u{301}", "👨‍👩‍👧 family", "ascii text here", ""]
        {
            for n in 0..12 {
                let f = fit(s, n);
                assert_eq!(width(&f), n, "{s:?} at {n}: {f:?}");
            }
        }
        assert_eq!(fit("漢字漢字", 5), "漢字…");
        assert_eq!(fit("漢字漢字", 6), "漢字… ");
        assert_eq!(truncate("e\u{301}e\u{301}e\u{301}", 2), "e\u{301}…");
    }

    #[test]
    fn wrap_never_splits_a_grapheme_and_counts_match() {
        let s = "ab漢字cd👨‍👩‍👧ef\u{301}g";
        for n in 1..8 {
            let rows = wrap(s, n);
            assert_eq!(rows.concat(), s);
            assert_eq!(rows.len(), wrapped_rows(s, n), "{n}");
            for r in &rows {
                assert!(width(r) <= n.max(2), "{r:?} wider than {n}");
            }
        }
        assert!(wrap(s, 0).is_empty());
        assert_eq!(wrap("", 5), vec![""]);
    }

    #[test]
    fn human_durations() {
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(65_000), "1m05s");
        assert_eq!(age(-5), "0s");
        assert_eq!(age(7200), "2h");
    }
}
