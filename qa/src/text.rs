//! Untrusted text made inert.
//!
//! Every string a page or feed shows that came out of a guest (package names, USE flags,
//! summaries, test names, logs) is hostile: HTML escaping is the templates' job (askama
//! escapes every expression), and this module does what escaping cannot: control characters
//! that XML 1.0 forbids even escaped (NUL), bidirectional overrides that would reorder the text
//! around them on screen, and megabyte lines that would make a page unusable.

use std::fmt::Write as _;

/// The longest line a page shows before cutting it (the whole log stays downloadable).
pub const MAX_LINE: usize = 2000;

/// `text` with every character that could act rather than be read replaced by a visible
/// `<U+XXXX>`: C0 and C1 controls (tab and newline kept), and the Unicode bidirectional
/// controls (embeddings, overrides, isolates, marks). What remains is valid in XML 1.0 and
/// shows every character as itself.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_active(c) {
            let _ = write!(out, "<U+{:04X}>", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// [`visible`], each line cut at [`MAX_LINE`] characters with a note of how much was cut.
pub fn visible_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(1 << 20));
    for line in text.split_inclusive('\n') {
        let (body, newline) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
        match body.char_indices().nth(MAX_LINE) {
            Some((cut, _)) => {
                out.push_str(&visible(&body[..cut]));
                let _ = write!(out, " [… {} more bytes on this line]", body.len() - cut);
            }
            None => out.push_str(&visible(body)),
        }
        out.push_str(newline);
    }
    out
}

/// True for the characters [`visible`] replaces.
fn is_active(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{61c}'
        | '\u{fffe}' | '\u{ffff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_marks_become_visible() {
        assert_eq!(visible("a\0b\u{202e}c\td\n"), "a<U+0000>b<U+202E>c\td\n");
        assert_eq!(visible("<script>&\"'"), "<script>&\"'", "escaping is the template's job, not this");
    }

    #[test]
    fn long_lines_are_cut_and_say_so() {
        let line = "x".repeat(MAX_LINE + 10);
        let shown = visible_lines(&format!("{line}\nshort\n"));
        assert!(shown.starts_with(&"x".repeat(MAX_LINE)));
        assert!(shown.contains("[… 10 more bytes on this line]\nshort\n"), "{shown}");
    }
}
