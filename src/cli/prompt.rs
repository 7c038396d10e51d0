//! Asking the user on the terminal, and describing offers in words.

use std::io::{BufRead, BufReader, Write};

use pcp::{OfferInfo, OfferKind};

pub(crate) use pcp::sanitize;

/// Asks a yes/no question on the controlling terminal (`/dev/tty`), not on
/// stdin/stdout, which may carry data. Blocking: the engine calls consent off the
/// reactor.
///
/// # Errors
/// When there is no controlling terminal.
pub(crate) fn confirm(question: &str) -> std::io::Result<bool> {
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
pub(crate) fn has_tty() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").is_ok()
}

/// Human-readable byte count (binary units).
#[must_use]
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// An offer in a few words: `file 'x', 1.0 MiB`, `a stream`, `'a', 'b' and 2 more (tar
/// stream)`. Peer strings are sanitized.
pub(crate) fn describe_short(offer: &OfferInfo) -> String {
    let name = sanitize(&offer.name);
    let size = offer.size.map(|s| format!(", {}", human_bytes(s))).unwrap_or_default();
    match offer.kind {
        OfferKind::Stream => "a stream".to_owned(),
        OfferKind::File => format!("file '{name}'{size}"),
        OfferKind::Folder => {
            // Show what will be written, not the sender's summary of it.
            let shown: Vec<String> =
                offer.entries.iter().take(3).map(|e| format!("'{}'", sanitize(e))).collect();
            let more = offer.entries.len().saturating_sub(3);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            format!("{}{more} (tar stream)", shown.join(", "))
        }
    }
}

/// The consent question.
pub(crate) fn question(offer: &OfferInfo) -> String {
    format!("Accept {} from {}?", describe_short(offer), offer.peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1 << 20), "1.0 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
