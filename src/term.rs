//! Cleaning text before anyone prints it.
//!
//! # Invariants
//!
//! - A string that came from a peer (a file name, an entry, an error message, a reason)
//!   is never shown before [`sanitize`], so a sender cannot move the cursor, recolour,
//!   write the clipboard (OSC 52), clear the screen, reorder or hide text, or forge
//!   lines on the receiver's terminal. The library's own error messages apply it to every
//!   peer-supplied part; a caller that shows [`crate::OfferInfo`] applies it too.
//! - A peer name shown among other words is [`quote`]d, so that no name reads as two.
//! - The `pcp` binary passes every line it writes to the terminal (stderr, `/dev/tty`)
//!   through [`printable`], whatever it holds: the whole error chain, paths, peer
//!   strings, status lines, its logs and the `--json` fields meant for people. That
//!   boundary is the guarantee; the library's own cleaning is the first line.
//!
//! # The rule
//!
//! A character is *hidden* ([`is_hidden`]), and shown as `?`, when it is:
//!
//! - of Unicode general category `Cc` (C0 controls with ESC and BEL, DEL, the C1
//!   controls with CSI), `Cf` (format: the soft hyphen U+00AD, U+061C, U+180E, the
//!   zero-width and bidi controls U+200B–U+200F, U+202A–U+202E, U+2060–U+206F, U+FEFF,
//!   the interlinear annotations U+FFF9–U+FFFB, the tags U+E0001 and U+E0020–U+E007F,
//!   …), `Zl` (U+2028) or `Zp` (U+2029);
//! - invisible although of another category: the Hangul fillers U+115F, U+1160, U+3164,
//!   U+FFA0 (`Lo`), the combining grapheme joiner U+034F and the Khmer inherent vowels
//!   U+17B4, U+17B5 (`Mn`);
//! - an unassigned code point that Unicode reserves as default-ignorable (a future
//!   format character, invisible in a terminal that knows it): U+2065, U+FFF0–U+FFF8,
//!   U+E0000–U+E0FFF outside the variation selectors U+E0100–U+E01EF.
//!
//! Combining marks (`Mn`, `Me`) stack on the character before them: after
//! [`MAX_MARKS`] in a row, the rest of the run shows as one `?`, so that a name cannot
//! draw over the lines above and below it.
//!
//! What this costs ordinary text: nothing for accents (precomposed or not), CJK, RTL
//! letters and most emoji; an emoji sequence joined by U+200D ZERO WIDTH JOINER (`Cf`)
//! shows as its parts with `?` between them (`👩?💻`), and so does a name with a soft
//! hyphen. For file names that is the right trade: what is shown is what is there.
//!
//! # Quoting
//!
//! [`quote`]: the cleaned name inside single quotes, with `\` written `\\` and `'`
//! written `\'`. So the name `a', 'b` shows as `'a\', \'b'`: one name, not two.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// The longest peer-supplied string shown by [`sanitize`] and [`quote`], in characters.
const MAX_SHOWN: usize = 200;

/// The longest line [`printable`] lets through, in characters: room for a whole error
/// chain naming a path of `PATH_MAX` (4096 bytes).
const MAX_LINE: usize = 8192;

/// Combining marks kept in a row after a character; the rest of the run is one `?`.
/// Three keep fully pointed Hebrew (a letter with a dot, a vowel and a cantillation
/// mark), Vietnamese and Thai written with combining marks, and keycap emoji.
pub(crate) const MAX_MARKS: usize = 3;

/// Whether `c` is never shown as itself (see the module docs for the rule).
#[must_use]
pub(crate) fn is_hidden(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    ) || matches!(
        c,
        // Invisible, but letters or marks.
        '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{3164}' | '\u{FFA0}'
        // Unassigned, default-ignorable: a future format character.
        | '\u{2065}' | '\u{FFF0}'..='\u{FFF8}' | '\u{E0000}'..='\u{E00FF}' | '\u{E01F0}'..='\u{E0FFF}'
    )
}

/// Whether `c` is a combining mark that draws on the character before it.
fn is_mark(c: char) -> bool {
    !c.is_ascii()
        && matches!(
            c.general_category(),
            GeneralCategory::NonspacingMark | GeneralCategory::EnclosingMark
        )
}

/// `s` with hidden characters as `?`, runs of marks bounded, and at most `max`
/// characters of it (then `…`).
fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max.saturating_mul(4)));
    let mut marks = 0;
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if is_hidden(c) {
            marks = 0;
            out.push('?');
        } else if is_mark(c) {
            marks += 1;
            if marks <= MAX_MARKS {
                out.push(c);
            } else if marks == MAX_MARKS + 1 {
                out.push('?');
            }
        } else {
            marks = 0;
            out.push(c);
        }
    }
    out
}

/// A peer's string as it may be shown: hidden characters (control characters,
/// including escape sequences' ESC; format, bidi and invisible characters; line and
/// paragraph separators) as `?`, long runs of combining marks cut, and at most 200
/// characters (then `…`).
#[must_use]
pub fn sanitize(s: &str) -> String {
    clean(s, MAX_SHOWN)
}

/// A peer's name as it is shown among other words: [`sanitize`]d, inside single quotes,
/// with `\` and `'` escaped by a `\`, so that it cannot read as two names or end early.
#[must_use]
pub fn quote(s: &str) -> String {
    let clean = sanitize(s);
    let mut out = String::with_capacity(clean.len() + 2);
    out.push('\'');
    for c in clean.chars() {
        if matches!(c, '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// One line as it may reach a terminal: the rule of [`sanitize`] (a line break in it is
/// hidden too: a caller prints each of its own lines separately), and at most 8192
/// characters. The `pcp` binary writes nothing to the terminal that has not passed here.
#[must_use]
pub fn printable(line: &str) -> String {
    clean(line, MAX_LINE)
}

/// Text meant to be read (a text offer) as it may reach a terminal: each line cleaned
/// by the rule of [`sanitize`], with no length limit; the line breaks (`\n`, and `\r\n`
/// as `\n`) and tabs are kept, every other control character is hidden, a lone `\r`
/// too (it would let a line overwrite what came before it).
#[must_use]
pub fn printable_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        for (j, part) in line.split('\t').enumerate() {
            if j > 0 {
                out.push('\t');
            }
            out.push_str(&clean(part, usize::MAX));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: text keeps its lines and tabs, and nothing else that steers a terminal.
    #[test]
    fn text_keeps_its_lines_and_nothing_else() {
        assert_eq!(printable_text("a\tb\nc\r\nd\n"), "a\tb\nc\nd\n");
        assert_eq!(
            printable_text("x\x1b]52;c;cGNw\x07\x1b[2J\ry\u{202E}z"),
            "x?]52;c;cGNw??[2J?y?z"
        );
        assert_eq!(printable_text("\u{9b}31m\x0b\x0c\x08"), "?31m???");
        let long = "é".repeat(20_000);
        assert_eq!(printable_text(&long), long, "no length limit");
    }

    #[test]
    fn escapes_are_neutralised() {
        assert_eq!(sanitize("a\x1b[2Jb\nc"), "a?[2Jb?c");
        assert_eq!(sanitize("plain name.txt"), "plain name.txt");
        assert_eq!(sanitize("a\u{202E}gpj.exe"), "a?gpj.exe");
        assert_eq!(sanitize("\u{9b}31m"), "?31m", "C1 CSI");
        assert_eq!(sanitize("\x1b]52;c;cGNw\x07"), "?]52;c;cGNw?", "OSC 52");
        let long = "x".repeat(500);
        assert_eq!(sanitize(&long).chars().count(), MAX_SHOWN + 1);
        assert!(sanitize(&long).ends_with('…'));
    }

    /// Issue 14, item 4: each code point the issue names (the old rule let all of
    /// these through).
    #[test]
    fn every_code_point_the_issue_names_is_hidden() {
        let mut named: Vec<char> = vec![
            '\u{00AD}', '\u{034F}', '\u{061C}', '\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}',
            '\u{180E}', '\u{2028}', '\u{2029}', '\u{FFF9}', '\u{FFFA}', '\u{FFFB}',
        ];
        named.extend('\u{206A}'..='\u{206F}');
        named.extend('\u{E0000}'..='\u{E007F}');
        for c in named {
            assert!(is_hidden(c), "U+{:04X}", u32::from(c));
            assert_eq!(sanitize(&format!("a{c}b")), "a?b", "U+{:04X}", u32::from(c));
        }
    }

    /// A sample of each category the rule hides, and of the extra invisible ones.
    #[test]
    fn each_hidden_category_is_hidden() {
        let samples = [
            ('\u{0}', "Cc"),
            ('\u{7}', "Cc BEL"),
            ('\u{1b}', "Cc ESC"),
            ('\u{7f}', "Cc DEL"),
            ('\u{85}', "Cc NEL"),
            ('\u{9b}', "Cc CSI"),
            ('\u{200B}', "Cf ZWSP"),
            ('\u{200D}', "Cf ZWJ"),
            ('\u{200E}', "Cf LRM"),
            ('\u{202E}', "Cf RLO"),
            ('\u{2066}', "Cf LRI"),
            ('\u{FEFF}', "Cf BOM"),
            ('\u{110BD}', "Cf Kaithi number sign"),
            ('\u{1D173}', "Cf musical symbol begin beam"),
            ('\u{E0001}', "Cf language tag"),
            ('\u{E0041}', "Cf tag latin capital a"),
            ('\u{2028}', "Zl"),
            ('\u{2029}', "Zp"),
            ('\u{17B4}', "Mn, invisible"),
            ('\u{2065}', "Cn, default-ignorable"),
            ('\u{FFF0}', "Cn, default-ignorable"),
            ('\u{E0FFF}', "Cn, default-ignorable"),
        ];
        for (c, what) in samples {
            assert!(is_hidden(c), "{what}: U+{:04X}", u32::from(c));
        }
    }

    /// Every char: hidden exactly when the crate's table puts it in a hidden category
    /// or it is one of the listed invisible ones, and `sanitize` applies that to each
    /// (no fast path lets one through).
    #[test]
    fn the_rule_agrees_with_the_category_table_for_every_char() {
        let listed = |c: char| {
            matches!(
                c,
                '\u{034F}'
                    | '\u{115F}'
                    | '\u{1160}'
                    | '\u{17B4}'
                    | '\u{17B5}'
                    | '\u{3164}'
                    | '\u{FFA0}'
                    | '\u{2065}'
                    | '\u{FFF0}'..='\u{FFF8}'
                    | '\u{E0000}'..='\u{E00FF}'
                    | '\u{E01F0}'..='\u{E0FFF}'
            )
        };
        let (mut cc, mut cf, mut z) = (0, 0, 0);
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let category = c.general_category();
            match category {
                GeneralCategory::Control => cc += 1,
                GeneralCategory::Format => cf += 1,
                GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => z += 1,
                _ => {}
            }
            let want = matches!(
                category,
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            ) || listed(c);
            assert_eq!(is_hidden(c), want, "U+{:04X} ({category:?})", u32::from(c));
            let s = format!("x{c}");
            if want {
                assert_eq!(sanitize(&s), "x?", "U+{:04X}", u32::from(c));
            } else {
                assert_eq!(sanitize(&s), s, "U+{:04X} ({category:?})", u32::from(c));
            }
        }
        // The table is a whole one: 65 controls (stable since Unicode 1.1), one line and
        // one paragraph separator, and at least the 163 format characters of Unicode 14.
        assert_eq!((cc, z), (65, 2));
        assert!(cf >= 163, "{cf} format characters");
    }

    /// Every `Cf` code point of Unicode 14 outside the tag block (Python's `unicodedata`
    /// 14.0.0), against the crate's newer table: a reference that is not the crate.
    #[test]
    fn every_format_character_of_a_reference_list_is_hidden() {
        const CF_14: &[u32] = &[
            0xad, 0x600, 0x601, 0x602, 0x603, 0x604, 0x605, 0x61c, 0x6dd, 0x70f, 0x890, 0x891,
            0x8e2, 0x180e, 0x200b, 0x200c, 0x200d, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d,
            0x202e, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0x2066, 0x2067, 0x2068, 0x2069, 0x206a,
            0x206b, 0x206c, 0x206d, 0x206e, 0x206f, 0xfeff, 0xfff9, 0xfffa, 0xfffb, 0x110bd,
            0x110cd, 0x13430, 0x13431, 0x13432, 0x13433, 0x13434, 0x13435, 0x13436, 0x13437,
            0x13438, 0x1bca0, 0x1bca1, 0x1bca2, 0x1bca3, 0x1d173, 0x1d174, 0x1d175, 0x1d176,
            0x1d177, 0x1d178, 0x1d179, 0x1d17a,
        ];
        for &u in CF_14 {
            let c = char::from_u32(u).expect("a char");
            assert_eq!(c.general_category(), GeneralCategory::Format, "U+{u:04X}");
            assert!(is_hidden(c), "U+{u:04X}");
        }
    }

    #[test]
    fn long_runs_of_combining_marks_are_cut() {
        let zalgo = format!("a{}b", "\u{0301}\u{0316}\u{0327}\u{0358}\u{0300}".repeat(20));
        assert_eq!(sanitize(&zalgo), "a\u{0301}\u{0316}\u{0327}?b");
        // Enclosing marks count too, and a run starts again after any other character.
        let run = "\u{20DD}".repeat(5);
        assert_eq!(
            sanitize(&format!("x{run}y{run}")),
            "x\u{20DD}\u{20DD}\u{20DD}?y\u{20DD}\u{20DD}\u{20DD}?"
        );
        // Up to the bound nothing changes.
        let three = "e\u{0323}\u{0302}\u{0301}";
        assert_eq!(sanitize(three), three);
    }

    #[test]
    fn ordinary_text_passes_unchanged() {
        for s in [
            "résumé.pdf",
            "Re\u{0301}sume\u{0301}.pdf",
            "Tiếng Việt",
            "日本語のファイル.txt",
            "한국어 파일",
            "שָׁלוֹם",
            "بِسْمِ",
            "ภาษาไทย",
            "हिन्दी",
            "photo 🦀 ❤\u{FE0F} 1\u{FE0F}\u{20E3} 👍🏽 🇫🇷.jpg",
            "tab-free, quote's \"fine\" \\ too",
        ] {
            assert_eq!(sanitize(s), s);
        }
        // Documented cost: a ZWJ emoji sequence shows its joiner.
        assert_eq!(sanitize("👩\u{200D}💻"), "👩?💻");
    }

    /// Issue 14, item 4: a name cannot read as two.
    #[test]
    fn a_quoted_name_cannot_read_as_two() {
        assert_eq!(quote("report.pdf"), "'report.pdf'");
        assert_eq!(quote("a', 'b"), r"'a\', \'b'");
        assert_eq!(quote(r"a\', 'b"), r"'a\\\', \'b'");
        assert_eq!(quote("a\x1b[2J"), "'a?[2J'");
        // The quoted name has exactly two unescaped quotes: its own.
        let q = quote(r"x' 'y\' \\'z");
        let unescaped = q
            .char_indices()
            .filter(|&(i, c)| {
                c == '\'' && q[..i].chars().rev().take_while(|&p| p == '\\').count() % 2 == 0
            })
            .count();
        assert_eq!(unescaped, 2, "{q}");
    }

    #[test]
    fn printable_hides_line_breaks_and_keeps_long_lines() {
        assert_eq!(printable("a\nb\r\x1b]52;c;x\x07"), "a?b??]52;c;x?");
        let long = "y".repeat(1000);
        assert_eq!(printable(&long), long, "longer than a peer string, not cut");
        assert!(printable(&"z".repeat(MAX_LINE + 5)).ends_with('…'));
    }
}
