//! Text offers (`pcp send --text`, or a short stdin): what the sender reads, and how
//! the receiver shows what it gets on its terminal.
//!
//! # Invariants
//!
//! - What a peer sent as text reaches a terminal only through [`pcp::printable_text`]:
//!   line breaks and tabs stay, every other control character (ESC, BEL, CSI, a lone
//!   CR, bidi and invisible characters) shows as `?`. Bytes that are not UTF-8 show as
//!   U+FFFD, the replacement character. Raw bytes go only to a standard output that is
//!   not a terminal.
//! - A text of at most [`pcp::TEXT_PEEK`] bytes (about a screenful) shown on the
//!   terminal or written to standard output is accepted without asking; a longer one is
//!   asked about like any offer, and so is any text saved with `-o`.

use std::io::{self, Read, Write};
use std::sync::Arc;

use pcp::{OfferInfo, OfferKind};

use super::Failure;
use super::render::Reporter;

/// The most `pcp send --text` reads from standard input: text is for reading; more is
/// sent as a stream (`pcp send -`).
pub(crate) const MAX_TEXT: usize = 1 << 20;

/// The text for `--text`: the value given, or standard input up to its end.
///
/// # Errors
/// Standard input that cannot be read, is longer than [`MAX_TEXT`] or is not UTF-8.
pub(crate) fn read_text(given: Option<String>) -> Result<String, Failure> {
    if let Some(text) = given {
        return Ok(text);
    }
    if io::IsTerminal::is_terminal(&io::stdin()) {
        super::render::eprint_line("type the text, then press Ctrl-D on a line of its own");
    }
    let mut bytes = Vec::new();
    io::stdin().lock().take(MAX_TEXT as u64 + 1).read_to_end(&mut bytes).map_err(|e| {
        Failure::usage(format!("cannot read the text from standard input: {e}"), None)
    })?;
    if bytes.len() > MAX_TEXT {
        return Err(Failure::usage(
            "the text on standard input is longer than 1 MiB",
            Some("send it as a stream: pcp send -".into()),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        Failure::usage(
            "the text on standard input is not UTF-8",
            Some("send it as a stream: pcp send -".into()),
        )
    })
}

/// Whether an offer is a short text that is shown without asking (see the module docs);
/// `to_file`: the receiver saves what it gets with `-o`.
pub(crate) fn shown_without_asking(offer: &OfferInfo, to_file: bool) -> bool {
    offer.kind == OfferKind::Text
        && !to_file
        && offer.size.is_some_and(|s| s <= pcp::TEXT_PEEK as u64)
}

/// Writes a text offer to a terminal: cleaned by [`pcp::printable_text`], a character
/// split between two writes joined first, and a final line break added if the text
/// has none, so the shell's prompt starts on a line of its own. Whole lines are written
/// (a line is held until its end, up to [`HOLD`] bytes), each with the progress bar put
/// aside, so that the bar, drawn on the line below, never lands inside a line of text.
pub(crate) struct TerminalText<W> {
    out: W,
    rep: Option<Arc<Reporter>>,
    /// The start of a UTF-8 character whose end has not come yet.
    pending: Vec<u8>,
    /// The start of a line whose end has not come yet.
    held: String,
    /// Whether what was written so far ends a line (or nothing was written).
    at_line_start: bool,
}

/// The longest start of a line held back waiting for its end, in bytes.
const HOLD: usize = 64 * 1024;

impl<W: Write> TerminalText<W> {
    pub(crate) fn new(out: W, rep: Option<Arc<Reporter>>) -> TerminalText<W> {
        TerminalText { out, rep, pending: Vec::new(), held: String::new(), at_line_start: true }
    }

    fn show(&mut self, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        self.at_line_start = text.ends_with('\n');
        let clean = pcp::printable_text(text);
        let out = &mut self.out;
        let mut write = || out.write_all(clean.as_bytes()).and_then(|()| out.flush());
        match &self.rep {
            Some(rep) => rep.suspend(write),
            None => write(),
        }
    }
}

impl<W: Write> Write for TerminalText<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let mut shown = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    shown.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    shown.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("checked as UTF-8"),
                    );
                    match e.error_len() {
                        // Not UTF-8: a replacement character, and go on after it.
                        Some(bad) => {
                            shown.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        // A character cut short: wait for its end.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                    }
                }
            }
        }
        self.held.push_str(&shown);
        let whole = match self.held.rfind('\n') {
            _ if self.held.len() > HOLD => self.held.len(),
            Some(end) => end + 1,
            None => 0,
        };
        let lines: String = self.held.drain(..whole).collect();
        self.show(&lines)?;
        Ok(buf.len())
    }

    /// The end of the text: a character still cut short shows as U+FFFD, and the last
    /// line is ended.
    fn flush(&mut self) -> io::Result<()> {
        let mut rest = std::mem::take(&mut self.held);
        if !std::mem::take(&mut self.pending).is_empty() {
            rest.push('\u{FFFD}');
        }
        let ended = if rest.is_empty() { self.at_line_start } else { rest.ends_with('\n') };
        if !ended {
            rest.push('\n');
        }
        self.show(&rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What reaches the terminal after each write, and in all.
    fn written(writes: &[&[u8]]) -> (Vec<String>, String) {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut t = TerminalText::new(Shared(std::sync::Arc::clone(&out)), None);
        let now = || String::from_utf8(out.lock().expect("lock").clone()).expect("UTF-8");
        let mut after = Vec::new();
        for w in writes {
            t.write_all(w).expect("write");
            after.push(now());
        }
        t.flush().expect("flush");
        (after, now())
    }

    /// Only whole lines reach the terminal, so a progress bar drawn between two writes
    /// never lands inside one; the last, unended one at the end.
    #[test]
    fn whole_lines_are_written() {
        let (after, all) = written(&[b"one\ntw", b"o", b"\nthree"]);
        assert_eq!(after, ["one\n", "one\n", "one\ntwo\n"]);
        assert_eq!(all, "one\ntwo\nthree\n");
        let long = vec![b'x'; HOLD + 1];
        let (after, _) = written(&[&long]);
        assert_eq!(after[0].len(), HOLD + 1, "a line is held only so long");
    }

    fn shown(writes: &[&[u8]]) -> String {
        let mut out = Vec::new();
        let mut t = TerminalText::new(&mut out, None);
        for w in writes {
            t.write_all(w).expect("write");
        }
        t.flush().expect("flush");
        String::from_utf8(out).expect("the terminal gets UTF-8")
    }

    /// Issue 15: a hostile sender's text reaches the terminal with its lines, and
    /// without a byte that steers the terminal.
    #[test]
    fn text_on_a_terminal_is_cleaned() {
        assert_eq!(shown(&[b"hello\n"]), "hello\n");
        assert_eq!(shown(&[b"hello"]), "hello\n", "the last line is ended");
        assert_eq!(shown(&[b""]), "");
        let hostile = b"a\x1b]52;c;cGNw\x07\x1b[2J\rb\xc2\x9b31m\x1b[1A\tc\n";
        assert_eq!(shown(&[hostile]), "a?]52;c;cGNw??[2J?b?31m?[1A\tc\n");
        // \u{FFFD} is a visible character: a byte that is not UTF-8 shows as it.
        assert_eq!(shown(&[b"a\xffb\n"]), "a\u{FFFD}b\n");
    }

    /// A character split between two writes (chunks are cut anywhere) is shown whole,
    /// and one cut short at the end shows as a replacement character.
    #[test]
    fn a_split_character_is_joined() {
        let e = "é".as_bytes();
        assert_eq!(shown(&[b"caf", &e[..1], &e[1..], b"\n"]), "café\n");
        assert_eq!(shown(&[b"caf", &e[..1]]), "caf\u{FFFD}\n");
    }

    fn offer(kind: OfferKind, size: u64) -> OfferInfo {
        OfferInfo {
            kind,
            name: "text".into(),
            size: Some(size),
            entries: Vec::new(),
            kinds: Vec::new(),
            files: None,
            peer: libp2p::PeerId::random(),
            addr: None,
        }
    }

    #[test]
    fn only_a_short_text_is_shown_without_asking() {
        let limit = pcp::TEXT_PEEK as u64;
        assert!(shown_without_asking(&offer(OfferKind::Text, limit), false));
        assert!(!shown_without_asking(&offer(OfferKind::Text, limit + 1), false));
        assert!(!shown_without_asking(&offer(OfferKind::Text, 5), true), "-o asks");
        assert!(!shown_without_asking(&offer(OfferKind::Stream, 5), false));
        assert!(!shown_without_asking(&offer(OfferKind::File, 5), false));
    }
}
