//! The terminal: cleaning what a peer says before it is printed, and asking the user.
//!
//! Invariant: a string that came from a peer (a file name, an error message) is never
//! printed before [`sanitize`], so a sender cannot move the cursor, recolour, or forge
//! lines on the receiver's terminal.

use std::io::{BufRead, BufReader, Write};

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

/// Asks a yes/no question on the controlling terminal (`/dev/tty`), not on
/// stdin/stdout, which may carry data. Blocking: call it off the reactor.
///
/// # Errors
/// When there is no controlling terminal.
pub fn confirm(question: &str) -> std::io::Result<bool> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let mut w = &tty;
    write!(w, "{question} [y/N] ")?;
    w.flush()?;
    let mut line = String::new();
    BufReader::new(&tty).read_line(&mut line)?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Whether a controlling terminal can be opened to ask the user.
#[must_use]
pub fn has_tty() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").is_ok()
}

/// Human-readable byte count (binary units).
#[must_use]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
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

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1 << 20), "1.0 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }
}
