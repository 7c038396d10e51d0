//! Asking for the code on the terminal (`pcp receive` without one), with Tab completing
//! a word from the BIP39 English list, as magic-wormhole does.
//!
//! A line editor of its own, not a crate's: a code is a few lowercase ASCII words and
//! dashes, so the editing it needs (type, erase a character, a word or the line, Tab,
//! Enter, Ctrl-C, Ctrl-D) fits in this file on top of rustix's termios, where a
//! line-editing crate (rustyline) would bring a dozen crates of history, key maps and
//! Unicode widths that a code never uses.
//!
//! # Invariants
//!
//! - The question is asked on the controlling terminal (`/dev/tty`), never on standard
//!   input or output, which may carry data; its mode is restored on every way out
//!   ([`RawMode`]'s drop).
//! - Only lowercase ASCII letters and `-` are ever kept or echoed (a space is a `-`,
//!   capitals are lowered); every other key is a command or ignored, and an escape
//!   sequence (an arrow key) is skipped whole, so nothing typed can steer the terminal.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;

use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

/// How asking ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Enter, with what was typed (no trailing `-`).
    Line(String),
    /// Ctrl-D on an empty line.
    End,
    /// Ctrl-C.
    Interrupted,
}

/// The prompt.
const PROMPT: &str = "Enter the code (Tab completes a word): ";

/// The most candidates listed after a Tab that cannot complete further.
const LISTED: usize = 24;

/// Asks for the code on `/dev/tty`.
///
/// # Errors
/// No controlling terminal, or reading or writing it failed.
pub(crate) fn ask_code() -> io::Result<Answer> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let _raw = RawMode::enter(&tty)?;
    let (mut r, mut w) = (&tty, &tty);
    w.write_all(PROMPT.as_bytes())?;
    w.flush()?;
    let mut editor = Editor::default();
    let mut byte = [0u8; 1];
    loop {
        if r.read(&mut byte)? == 0 {
            return Ok(Answer::End);
        }
        let step = editor.key(byte[0]);
        w.write_all(&step.echo)?;
        w.flush()?;
        if let Some(answer) = step.done {
            return Ok(answer);
        }
    }
}

/// The terminal without line editing, echo or signals from keys, until dropped.
struct RawMode<'a> {
    tty: &'a std::fs::File,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(tty: &'a std::fs::File) -> io::Result<RawMode<'a>> {
        let saved = termios::tcgetattr(tty.as_fd())?;
        let mut raw = saved.clone();
        raw.local_modes.remove(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG);
        raw.special_codes[SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        // `Now`, not `Flush`: keys typed before the prompt showed are kept.
        termios::tcsetattr(tty.as_fd(), OptionalActions::Now, &raw)?;
        Ok(RawMode { tty, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty.as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// What one key does: bytes to write back, and the answer if the line is over.
#[derive(Debug, Default)]
struct Step {
    echo: Vec<u8>,
    done: Option<Answer>,
}

/// Where the editor is in an escape sequence the terminal sent for a key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Started,
    /// After ESC `[` or ESC `O`, until a final byte.
    Sequence,
}

/// The line being typed, and what each key does to it.
#[derive(Debug, Default)]
struct Editor {
    line: String,
    escape: Escape,
}

impl Editor {
    fn key(&mut self, b: u8) -> Step {
        let mut step = Step::default();
        match (self.escape, b) {
            (Escape::Started, b'[' | b'O') => self.escape = Escape::Sequence,
            (Escape::Started, _) => self.escape = Escape::None,
            (Escape::Sequence, 0x40..=0x7e) => self.escape = Escape::None,
            (Escape::Sequence, _) => {}
            (Escape::None, 0x1b) => self.escape = Escape::Started,
            (Escape::None, b'\r' | b'\n') => {
                step.echo.extend_from_slice(b"\r\n");
                let line = self.line.trim_end_matches('-').to_owned();
                step.done = Some(Answer::Line(line));
            }
            (Escape::None, 0x03) => {
                step.echo.extend_from_slice(b"^C\r\n");
                step.done = Some(Answer::Interrupted);
            }
            (Escape::None, 0x04) if self.line.is_empty() => {
                step.echo.extend_from_slice(b"\r\n");
                step.done = Some(Answer::End);
            }
            (Escape::None, 0x7f | 0x08) => {
                if self.line.pop().is_some() {
                    step.echo.extend_from_slice(b"\x08 \x08");
                }
            }
            // Ctrl-W: the last word (and the dash after it).
            (Escape::None, 0x17) => {
                let kept = self.line.trim_end_matches('-').rfind('-').map_or(0, |i| i + 1);
                for _ in kept..self.line.len() {
                    step.echo.extend_from_slice(b"\x08 \x08");
                }
                self.line.truncate(kept);
            }
            // Ctrl-U: the whole line.
            (Escape::None, 0x15) => {
                for _ in 0..self.line.len() {
                    step.echo.extend_from_slice(b"\x08 \x08");
                }
                self.line.clear();
            }
            (Escape::None, b'\t') => self.complete(&mut step.echo),
            (Escape::None, b' ' | b'-') => {
                if !self.line.is_empty() && !self.line.ends_with('-') {
                    self.push('-', &mut step.echo);
                }
            }
            (Escape::None, b) if b.is_ascii_alphabetic() => {
                self.push(char::from(b.to_ascii_lowercase()), &mut step.echo);
            }
            (Escape::None, _) => {}
        }
        step
    }

    fn push(&mut self, c: char, echo: &mut Vec<u8>) {
        self.line.push(c);
        echo.push(c as u8);
    }

    /// Tab: the word being typed completed as far as the list allows; when it cannot
    /// go further and several words fit, they are listed under the line.
    fn complete(&mut self, echo: &mut Vec<u8>) {
        let start = self.line.rfind('-').map_or(0, |i| i + 1);
        let word = &self.line[start..];
        if word.is_empty() {
            return;
        }
        let fits: Vec<&'static str> = candidates(word);
        match fits.as_slice() {
            [] => echo.push(0x07),
            [one] => {
                let rest = one[word.len()..].to_owned();
                for c in rest.chars().chain(std::iter::once('-')) {
                    self.push(c, echo);
                }
            }
            many => {
                let common = common_prefix(many);
                if common.len() > word.len() {
                    for c in common[word.len()..].to_owned().chars() {
                        self.push(c, echo);
                    }
                } else {
                    echo.extend_from_slice(b"\r\n");
                    let listed: Vec<&str> = many.iter().take(LISTED).copied().collect();
                    echo.extend_from_slice(listed.join("  ").as_bytes());
                    if many.len() > LISTED {
                        echo.extend_from_slice(
                            format!("  … {} more", many.len() - LISTED).as_bytes(),
                        );
                    }
                    echo.extend_from_slice(b"\r\n");
                    echo.extend_from_slice(PROMPT.as_bytes());
                    echo.extend_from_slice(self.line.as_bytes());
                }
            }
        }
    }
}

/// The code words that start with `prefix`, in list order.
fn candidates(prefix: &str) -> Vec<&'static str> {
    bip39::Language::English.word_list().iter().copied().filter(|w| w.starts_with(prefix)).collect()
}

/// The longest start all of `words` share.
fn common_prefix<'a>(words: &[&'a str]) -> &'a str {
    let first = words[0];
    let len = words
        .iter()
        .map(|w| first.bytes().zip(w.bytes()).take_while(|(a, b)| a == b).count())
        .min();
    &first[..len.unwrap_or(0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Types `keys`; returns the line, what was echoed, and the answer if it ended.
    fn typed(keys: &[u8]) -> (String, String, Option<Answer>) {
        let mut e = Editor::default();
        let mut echo = Vec::new();
        for &k in keys {
            let step = e.key(k);
            echo.extend(step.echo);
            if step.done.is_some() {
                return (e.line, String::from_utf8(echo).expect("ASCII"), step.done);
            }
        }
        (e.line, String::from_utf8(echo).expect("ASCII"), None)
    }

    #[test]
    fn tab_completes_a_word_and_adds_a_dash() {
        let (line, echo, done) = typed(b"bubb\tenem\tresu\tincr\t\r");
        assert_eq!(done, Some(Answer::Line("bubble-enemy-result-increase".into())));
        assert_eq!(line, "bubble-enemy-result-increase-");
        assert!(echo.starts_with("bubble-enemy-"), "{echo}");
    }

    #[test]
    fn tab_lists_the_words_when_it_cannot_choose() {
        // "ab" fits abandon, ability, able, about, above, absent, …: nothing in common.
        let (line, echo, _) = typed(b"ab\t");
        assert_eq!(line, "ab");
        assert!(echo.contains("abandon  ability  able"), "{echo}");
        assert!(echo.ends_with(&format!("{PROMPT}ab")), "the line is drawn again: {echo:?}");
        // "aba" is abandon alone.
        assert_eq!(typed(b"aba\t").0, "abandon-");
        // A word that fits nothing rings.
        assert_eq!(typed(b"zzz\t").1, "zzz\x07");
    }

    #[test]
    fn only_letters_and_dashes_are_kept() {
        let (_, echo, done) = typed(b"Bubble  \x1b[2J\x1b[A\x1bOBenemy\x01\xc3\xa9\r");
        assert_eq!(done, Some(Answer::Line("bubble-enemy".into())), "{echo:?}");
        assert!(echo.bytes().all(|b| b.is_ascii_lowercase() || b"-\r\n".contains(&b)), "{echo:?}");
    }

    #[test]
    fn editing_keys() {
        assert_eq!(typed(b"abc\x7f\x7fx").0, "ax");
        assert_eq!(typed(b"bubble-enemy\x17").0, "bubble-");
        assert_eq!(typed(b"bubble-enemy-\x17").0, "bubble-");
        assert_eq!(typed(b"bubble-enemy\x15").0, "");
        assert_eq!(typed(b"ab\x03").2, Some(Answer::Interrupted));
        assert_eq!(typed(b"\x04").2, Some(Answer::End));
        assert_eq!(typed(b"a\x04").2, None, "Ctrl-D ends only an empty line");
    }
}
