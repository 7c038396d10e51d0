//! Cleaning what a peer says before anyone prints it.
//!
//! Invariant: a string that came from a peer (a file name, an error message) is never
//! shown before [`sanitize`], so a sender cannot move the cursor, recolour, or forge
//! lines on the receiver's terminal. The library's own error messages apply it to
//! every peer-supplied part; a caller that shows [`crate::OfferInfo`] applies it too.

/// The longest peer-supplied string shown, in characters.
const MAX_SHOWN: usize = 200;

/// Unicode format characters that reorder or hide text (bidi overrides and isolates,
/// zero-width characters): a name like `gpj.exe` shown as `exe.jpg`.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Replaces control characters (including escape sequences' ESC) and invisible
/// format characters with `?`, and cuts the string to a sane length.
#[must_use]
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_SHOWN)
        .map(|c| if c.is_control() || is_invisible(c) { '?' } else { c })
        .collect();
    if s.chars().count() > MAX_SHOWN {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_neutralised() {
        assert_eq!(sanitize("a\x1b[2Jb\nc"), "a?[2Jb?c");
        assert_eq!(sanitize("plain name.txt"), "plain name.txt");
        assert_eq!(sanitize("a\u{202E}gpj.exe"), "a?gpj.exe");
        assert_eq!(sanitize("\u{9b}31m"), "?31m", "C1 CSI");
        let long = "x".repeat(500);
        assert_eq!(sanitize(&long).chars().count(), MAX_SHOWN + 1);
    }
}
