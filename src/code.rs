//! Code words: the short secret the sender shows and the receiver types.
//!
//! This module owns generating, parsing and splitting the code. A code is three or more
//! words from the BIP39 English list (2048 words, so 11 bits each), for example
//! `bubble-enemy-result-increase`. It depends only on `bip39` (for the word list),
//! `rand` (for generation) and `zeroize`.
//!
//! The first word picks the **channel**, the word's index in the list (0..=2047), which
//! the discovery layer uses to find the peer ([`Code::channel`]). The remaining words
//! are the **password** for SPAKE2 ([`Code::password`]). With the minimum of three words
//! the password carries 22 bits, and SPAKE2 allows one online guess per handshake.
//!
//! # Invariants
//!
//! - A [`Code`] holds at least [`MIN_WORDS`] words, each a valid lowercase BIP39 English
//!   word. It is never constructed any other way.
//! - The code MUST never be logged: its [`Debug`](std::fmt::Debug) output is
//!   `Code(<redacted>)`. Only [`Display`](std::fmt::Display) reveals it, for showing it to
//!   the user who is meant to pass it on.
//! - The word indices are wiped from memory when a [`Code`] is dropped, and
//!   [`Code::password`] hands out a string that is wiped on drop too.
//! - Parsing is lenient in form (case, dashes, spaces, surrounding whitespace) but
//!   never guesses a word: a typo is an error carrying suggestions, never a silent fix.
//!
//! # Format
//!
//! Text, not bytes, since a person carries it from one terminal to another:
//!
//! | part      | words  | meaning                                         |
//! |-----------|--------|-------------------------------------------------|
//! | word 1    | 1      | channel: index of the word in the BIP39 list    |
//! | words 2.. | 2 or more | password: the words joined with `-`          |
//!
//! [`Display`](std::fmt::Display) joins all words with `-`. [`FromStr`] and
//! [`Code::from_words`] accept any mix of `-` and whitespace as separators, in any case.
//!
//! The discovery layer rendezvouses in time slots of [`SLOT_SECS`]; see [`slot`].

use std::fmt;
use std::str::FromStr;

use bip39::Language;
use rand::Rng;
use zeroize::Zeroizing;

/// The fewest words a code may have: one for the channel, at least two for the password.
pub const MIN_WORDS: usize = 3;

/// How many words [`Code::generate`] is usually asked for (the CLI's default).
pub const DEFAULT_WORDS: usize = 4;

/// Length in seconds of a discovery time slot: the default of
/// [`crate::NetworkOptions::slot`], which every pcp uses.
pub const SLOT_SECS: u64 = 300;

/// The slot (unix seconds at its start) we are in now, for slots of `slot_secs`
/// ([`SLOT_SECS`] unless [`crate::NetworkOptions::slot`] says otherwise).
///
/// # Panics
///
/// If `slot_secs` is 0.
#[must_use]
pub fn current_slot(slot_secs: u64) -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    slot(secs, slot_secs)
}

/// The most suggestions a [`ParseCodeError::UnknownWord`] carries.
const MAX_SUGGESTIONS: usize = 3;

/// BIP39 English words are unique by their first this many letters.
const UNIQUE_PREFIX: usize = 4;

/// Words further than this (in edits) from the typed one are not suggested.
const MAX_SUGGESTION_DISTANCE: usize = 2;

/// The longest BIP39 English word, in letters.
const MAX_WORD_LEN: usize = 8;

/// A typed word longer than this (in characters) is kept in a [`ParseCodeError`] only up
/// to here, with `…` after: whatever was pasted, the error stays one short line.
const MAX_SHOWN_WORD: usize = 32;

/// The start of the time slot containing `unix_secs`: `unix_secs` rounded down to a
/// multiple of `slot_secs`.
///
/// # Panics
///
/// If `slot_secs` is 0.
#[must_use]
pub fn slot(unix_secs: u64, slot_secs: u64) -> u64 {
    assert!(slot_secs > 0, "a time slot must last at least one second");
    unix_secs / slot_secs * slot_secs
}

/// A validated code: at least [`MIN_WORDS`] BIP39 English words.
///
/// Build one with [`Code::generate`], [`str::parse`] or [`Code::from_words`].
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    /// Index of each word in the BIP39 English list; always at least `MIN_WORDS` long,
    /// every index below 2048. Wiped on drop.
    indices: Zeroizing<Vec<u16>>,
}

impl Code {
    /// A fresh random code of `words` words, drawn uniformly from the operating system's
    /// random number generator.
    ///
    /// # Panics
    ///
    /// If `words` is below [`MIN_WORDS`] (the CLI only allows 3 to 24).
    #[must_use]
    pub fn generate(words: usize) -> Code {
        assert!(words >= MIN_WORDS, "a code needs at least {MIN_WORDS} words, not {words}");
        let list_len = u16::try_from(word_list().len()).expect("the BIP39 list has 2048 words");
        let mut rng = rand::rngs::OsRng;
        let indices = (0..words).map(|_| rng.gen_range(0..list_len)).collect();
        Code { indices: Zeroizing::new(indices) }
    }

    /// Parse a code given as several command-line arguments, each a word or several words
    /// joined with `-` or spaces: `["bubble", "enemy-result"]` is the same code as
    /// `"bubble-enemy-result"`.
    ///
    /// # Errors
    ///
    /// As for [`FromStr`]: [`ParseCodeError::UnknownWord`] for the first word not in the
    /// list (its position counts words across all arguments, from 1), otherwise
    /// [`ParseCodeError::TooFewWords`].
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Result<Code, ParseCodeError> {
        Code::from_tokens(words.iter().flat_map(|arg| tokens(arg.as_ref())))
    }

    /// The channel: the index (0..=2047) of the first word in the BIP39 English list.
    #[must_use]
    pub fn channel(&self) -> u16 {
        self.indices[0]
    }

    /// The SPAKE2 password: every word after the first, joined with `-`.
    ///
    /// The string is wiped from memory when dropped.
    #[must_use]
    pub fn password(&self) -> Zeroizing<String> {
        join(&self.indices[1..])
    }

    /// The words, in order.
    pub fn words(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.indices.iter().map(|&i| word(i))
    }

    /// How many words the code has (at least [`MIN_WORDS`]).
    #[must_use]
    pub fn word_count(&self) -> usize {
        self.indices.len()
    }

    /// Validate `tokens` (already split, not yet lowercased) into a code.
    fn from_tokens<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<Code, ParseCodeError> {
        let mut indices = Zeroizing::new(Vec::new());
        for (i, token) in tokens.enumerate() {
            // The lowercased copy is part of the secret, so it is wiped as well.
            let lower = Zeroizing::new(token.to_lowercase());
            match Language::English.find_word(&lower) {
                Some(index) => indices.push(index),
                None => {
                    return Err(ParseCodeError::UnknownWord {
                        suggestions: suggest(&lower),
                        word: shortened(token),
                        position: i + 1,
                    });
                }
            }
        }
        if indices.len() < MIN_WORDS {
            return Err(ParseCodeError::TooFewWords { found: indices.len(), min: MIN_WORDS });
        }
        Ok(Code { indices })
    }
}

impl FromStr for Code {
    type Err = ParseCodeError;

    /// Parse `bubble-enemy-result`, `Bubble Enemy Result`, ` bubble - enemy result `, ….
    ///
    /// Case is ignored, surrounding whitespace is trimmed, and words may be separated by
    /// `-`, whitespace, or both.
    fn from_str(s: &str) -> Result<Code, ParseCodeError> {
        Code::from_tokens(tokens(s))
    }
}

impl fmt::Display for Code {
    /// The words joined with `-`. This reveals the code: use it only to show the code to
    /// the user, never in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join(&self.indices))
    }
}

impl fmt::Debug for Code {
    /// `Code(<redacted>)`: the code is a secret and never logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

/// Why a string is not a valid code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseCodeError {
    /// The code has fewer than [`MIN_WORDS`] words.
    #[error("the code has {found} word{s}, but a code has at least {min}", s = plural(*found))]
    TooFewWords {
        /// How many words were given.
        found: usize,
        /// The minimum, [`MIN_WORDS`].
        min: usize,
    },
    /// A word is not in the BIP39 English list.
    #[error("word {position} of the code, {word:?}, is not a code word")]
    UnknownWord {
        /// The word as typed; past 32 characters, its first 32 and `…`.
        word: String,
        /// Where it is in the code, counting from 1.
        position: usize,
        /// The closest valid words, best first; at most three, possibly none.
        suggestions: Vec<String>,
    },
}

impl ParseCodeError {
    /// A recommendation to print under the error, such as `did you mean "enemy"?`.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            ParseCodeError::TooFewWords { .. } => Some(
                "copy the whole code from the sender, e.g. bubble-enemy-result-increase".to_owned(),
            ),
            ParseCodeError::UnknownWord { suggestions, .. } => match suggestions.as_slice() {
                [] => Some("codes use only words from the BIP39 English list".to_owned()),
                [only] => Some(format!("did you mean {only:?}?")),
                [init @ .., last] => {
                    let init: Vec<String> = init.iter().map(|w| format!("{w:?}")).collect();
                    Some(format!("did you mean {} or {last:?}?", init.join(", ")))
                }
            },
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn word_list() -> &'static [&'static str; 2048] {
    Language::English.word_list()
}

/// The word at `index`, which is always below 2048 by construction of [`Code`].
fn word(index: u16) -> &'static str {
    word_list()[usize::from(index)]
}

/// The words at `indices` joined with `-`, in a string allocated once at its final size so
/// no unwiped copy is left behind by a reallocation.
fn join(indices: &[u16]) -> Zeroizing<String> {
    let len = indices.iter().map(|&i| word(i).len() + 1).sum::<usize>().saturating_sub(1);
    let mut out = Zeroizing::new(String::with_capacity(len));
    for (n, &i) in indices.iter().enumerate() {
        if n > 0 {
            out.push('-');
        }
        out.push_str(word(i));
    }
    out
}

/// Split on `-` and whitespace, dropping empty pieces (so `a - b` and `a--b` are fine).
fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == '-' || c.is_whitespace()).filter(|t| !t.is_empty())
}

/// `word`, or its first [`MAX_SHOWN_WORD`] characters and `…` when it is longer.
fn shortened(word: &str) -> String {
    match word.char_indices().nth(MAX_SHOWN_WORD) {
        Some((cut, _)) => format!("{}…", &word[..cut]),
        None => word.to_owned(),
    }
}

/// Up to [`MAX_SUGGESTIONS`] valid words close to `typed` (lowercase), best first.
///
/// The work is bounded whatever was typed: a word longer than any code word by more
/// than [`MAX_SUGGESTION_DISTANCE`] letters is no typo of one and gets no suggestion, and
/// the edit distance (quadratic in the lengths) is computed only for prefix matches
/// (which are ranked by it) and words whose length is within [`MAX_SUGGESTION_DISTANCE`]
/// of the typed one's: any other is further away than that.
///
/// Words sharing `typed`'s first (up to) four letters come first: BIP39 words are unique by
/// their first four letters, so for a typo late in the word this is usually exactly one.
/// The rest are the words fewest edits away, at most [`MAX_SUGGESTION_DISTANCE`], where
/// swapping two adjacent letters counts as one edit (optimal string alignment distance):
/// `atil` is one edit from `tail`, as `enemx` is from `enemy`. Ties keep word-list
/// (alphabetical) order.
fn suggest(typed: &str) -> Vec<String> {
    // Counting stops early, so a pasted megabyte costs no more than a short word.
    let typed_len = typed.chars().take(MAX_WORD_LEN + MAX_SUGGESTION_DISTANCE + 1).count();
    if typed_len > MAX_WORD_LEN + MAX_SUGGESTION_DISTANCE {
        return Vec::new();
    }
    let typed_bytes = typed.as_bytes();
    let prefix = &typed_bytes[..typed_bytes.len().min(UNIQUE_PREFIX)];
    let mut scored: Vec<(bool, usize, &'static str)> = word_list()
        .iter()
        .filter_map(|&w| {
            let by_prefix = !prefix.is_empty() && w.as_bytes().starts_with(prefix);
            // Code words are ASCII: their length in bytes is their length in characters.
            let distance = if !by_prefix && typed_len.abs_diff(w.len()) > MAX_SUGGESTION_DISTANCE {
                usize::MAX
            } else {
                strsim::osa_distance(typed, w)
            };
            (by_prefix || distance <= MAX_SUGGESTION_DISTANCE).then_some((!by_prefix, distance, w))
        })
        .collect();
    // Stable sort: prefix matches first, then by distance, ties in list order.
    scored.sort_by_key(|&(not_prefix, distance, _)| (not_prefix, distance));
    scored.into_iter().take(MAX_SUGGESTIONS).map(|(_, _, w)| w.to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Code, ParseCodeError> {
        s.parse()
    }

    #[test]
    fn generate_display_parse_round_trip() {
        for words in [MIN_WORDS, DEFAULT_WORDS, 12, 24] {
            for _ in 0..50 {
                let code = Code::generate(words);
                assert_eq!(code.word_count(), words);
                let text = code.to_string();
                assert_eq!(text.split('-').count(), words);
                assert_eq!(parse(&text).expect("a generated code parses"), code);
            }
        }
    }

    #[test]
    #[should_panic(expected = "at least 3 words")]
    fn generate_refuses_too_few_words() {
        let _ = Code::generate(2);
    }

    #[test]
    fn generated_codes_differ() {
        // 44 bits each: a collision among a handful means the generator is broken.
        let codes: Vec<String> =
            (0..8).map(|_| Code::generate(DEFAULT_WORDS).to_string()).collect();
        for (i, a) in codes.iter().enumerate() {
            for b in &codes[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn channel_is_the_first_words_index() {
        let code = parse("zoo-abandon-ability").expect("valid");
        assert_eq!(code.channel(), 2047);
        let code = parse("abandon-zoo-zoo").expect("valid");
        assert_eq!(code.channel(), 0);
        let code = parse("bubble-enemy-result").expect("valid");
        assert_eq!(Some(code.channel()), Language::English.find_word("bubble"));
        for _ in 0..100 {
            assert!(Code::generate(MIN_WORDS).channel() < 2048);
        }
    }

    #[test]
    fn same_first_word_same_channel() {
        let a = parse("bubble-enemy-result").expect("valid");
        let b = parse("bubble-zoo-abandon-ability").expect("valid");
        let c = parse("enemy-bubble-result").expect("valid");
        assert_eq!(a.channel(), b.channel());
        assert_ne!(a.channel(), c.channel());
    }

    #[test]
    fn password_is_the_words_after_the_first() {
        let code = parse("bubble-enemy-result-increase").expect("valid");
        assert_eq!(code.password().as_str(), "enemy-result-increase");
        let code = parse("bubble enemy result").expect("valid");
        assert_eq!(code.password().as_str(), "enemy-result");
        assert_eq!(code.password().capacity(), code.password().len(), "allocated once");
    }

    #[test]
    fn words_and_display() {
        let code = parse("bubble-enemy-result").expect("valid");
        assert_eq!(code.words().collect::<Vec<_>>(), ["bubble", "enemy", "result"]);
        assert_eq!(code.to_string(), "bubble-enemy-result");
    }

    #[test]
    fn parsing_ignores_case_and_whitespace() {
        let want = parse("bubble-enemy-result").expect("valid");
        for s in [
            "BUBBLE-ENEMY-RESULT",
            "Bubble-Enemy-Result",
            "  bubble-enemy-result\n",
            "bubble enemy result",
            "bubble \t enemy   result",
            "bubble - enemy - result",
            "bubble--enemy-result-",
            "-bubble-enemy result",
        ] {
            assert_eq!(parse(s).as_ref(), Ok(&want), "{s:?}");
        }
    }

    #[test]
    fn from_words_joins_arguments() {
        let want = parse("bubble-enemy-result-increase").expect("valid");
        let separate = ["bubble", "enemy", "result", "increase"].map(String::from);
        assert_eq!(Code::from_words(&separate).as_ref(), Ok(&want));
        let mixed = ["Bubble-enemy", "RESULT", " increase "].map(String::from);
        assert_eq!(Code::from_words(&mixed).as_ref(), Ok(&want));
        assert_eq!(Code::from_words(&["bubble-enemy-result-increase"]).as_ref(), Ok(&want));
    }

    #[test]
    fn from_words_counts_positions_across_arguments() {
        let err = Code::from_words(&["bubble-enemy", "resolt", "increase"]).expect_err("typo");
        assert!(matches!(err, ParseCodeError::UnknownWord { position: 3, .. }), "{err:?}");
    }

    #[test]
    fn too_few_words() {
        assert_eq!(parse("bubble-enemy"), Err(ParseCodeError::TooFewWords { found: 2, min: 3 }));
        assert_eq!(parse("   "), Err(ParseCodeError::TooFewWords { found: 0, min: 3 }));
        assert_eq!(parse(""), Err(ParseCodeError::TooFewWords { found: 0, min: 3 }));
        assert_eq!(
            Code::from_words::<String>(&[]),
            Err(ParseCodeError::TooFewWords { found: 0, min: 3 })
        );
        let err = parse("bubble").expect_err("one word");
        assert_eq!(err.to_string(), "the code has 1 word, but a code has at least 3");
        assert!(err.hint().is_some());
    }

    #[test]
    fn unknown_word_suggests_the_prefix_match_first() {
        let err = parse("bubble-enemx-result").expect_err("typo");
        let ParseCodeError::UnknownWord { word, position, suggestions } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(word, "enemx");
        assert_eq!(*position, 2);
        assert_eq!(suggestions.first().map(String::as_str), Some("enemy"));
        assert!(suggestions.len() <= MAX_SUGGESTIONS);
        assert!(err.hint().expect("a hint").starts_with("did you mean \"enemy\""));
        assert_eq!(err.to_string(), "word 2 of the code, \"enemx\", is not a code word");
    }

    #[test]
    fn unknown_word_suggests_transpositions() {
        let err = parse("bubbel-enemy-result").expect_err("typo");
        let ParseCodeError::UnknownWord { position, suggestions, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*position, 1);
        assert_eq!(suggestions.first().map(String::as_str), Some("bubble"));
    }

    #[test]
    fn unknown_word_keeps_what_was_typed() {
        let err = parse("bubble-ENEMX-result").expect_err("typo");
        let ParseCodeError::UnknownWord { word, suggestions, .. } = &err else { panic!("{err:?}") };
        assert_eq!(word, "ENEMX");
        assert_eq!(suggestions.first().map(String::as_str), Some("enemy"));
    }

    #[test]
    fn unknown_word_suggests_by_distance_without_prefix() {
        // "xnemy" shares no prefix with "enemy" but is one substitution away.
        let err = parse("bubble-xnemy-result").expect_err("typo");
        let ParseCodeError::UnknownWord { suggestions, .. } = &err else { panic!("{err:?}") };
        assert!(suggestions.iter().any(|s| s == "enemy"), "{suggestions:?}");
    }

    #[test]
    fn unknown_word_without_anything_close() {
        let err = parse("bubble-qqqqqqqqqq-result").expect_err("garbage");
        let ParseCodeError::UnknownWord { suggestions, .. } = &err else { panic!("{err:?}") };
        assert!(suggestions.is_empty(), "{suggestions:?}");
        assert_eq!(err.hint().as_deref(), Some("codes use only words from the BIP39 English list"));
    }

    #[test]
    fn the_longest_code_word_is_max_word_len() {
        let longest = word_list().iter().map(|w| w.len()).max();
        assert_eq!(longest, Some(MAX_WORD_LEN));
        assert!(word_list().iter().all(|w| w.is_ascii()));
    }

    #[test]
    fn a_huge_word_gets_no_suggestion_and_a_short_error() {
        // Before the bound, this cost 2048 edit distances over 10,000 letters, and the
        // prefix "aban" suggested "abandon" for it.
        let huge = format!("abandon{}", "x".repeat(10_000 - 7));
        let err = parse(&format!("bubble-{huge}-result")).expect_err("not a code word");
        let ParseCodeError::UnknownWord { word, position, suggestions } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*position, 2);
        assert!(suggestions.is_empty(), "{suggestions:?}");
        assert_eq!(word, &format!("abandon{}…", "x".repeat(25)));
        assert!(err.to_string().len() < 100, "{err}");
        // Up to two letters past the longest word is still a typo worth a suggestion.
        let err = parse("bubble-abandonxx-result").expect_err("typo");
        let ParseCodeError::UnknownWord { suggestions, .. } = &err else { panic!("{err:?}") };
        assert_eq!(suggestions.first().map(String::as_str), Some("abandon"));
        let err = parse("bubble-abandonxxxxx-result").expect_err("not a typo");
        let ParseCodeError::UnknownWord { suggestions, .. } = &err else { panic!("{err:?}") };
        assert!(suggestions.is_empty(), "{suggestions:?}");
    }

    #[test]
    fn the_length_bound_keeps_every_suggestion() {
        // Skipping words of another length changes nothing: compare with the full scan.
        for typed in ["enemx", "xnemy", "atil", "bubbel", "abandonxx", "ab", "zzzzzzzzzz"] {
            let full: Vec<&str> = {
                let prefix = &typed.as_bytes()[..typed.len().min(UNIQUE_PREFIX)];
                let mut v: Vec<(bool, usize, &str)> = word_list()
                    .iter()
                    .filter_map(|&w| {
                        let p = w.as_bytes().starts_with(prefix);
                        let d = strsim::osa_distance(typed, w);
                        (p || d <= MAX_SUGGESTION_DISTANCE).then_some((!p, d, w))
                    })
                    .collect();
                v.sort_by_key(|&(p, d, _)| (p, d));
                v.into_iter().take(MAX_SUGGESTIONS).map(|(_, _, w)| w).collect()
            };
            assert_eq!(suggest(typed), full, "{typed}");
        }
    }

    #[test]
    fn unknown_word_reports_the_first_bad_word() {
        let err = parse("bubble-enemx-resolt").expect_err("two typos");
        assert!(matches!(err, ParseCodeError::UnknownWord { position: 2, .. }), "{err:?}");
    }

    #[test]
    fn unknown_word_checked_before_word_count() {
        let err = parse("enemx").expect_err("typo");
        assert!(matches!(err, ParseCodeError::UnknownWord { position: 1, .. }), "{err:?}");
    }

    #[test]
    fn unknown_non_ascii_word_does_not_panic() {
        let err = parse("bübble-énemy-résult").expect_err("not BIP39");
        assert!(matches!(err, ParseCodeError::UnknownWord { position: 1, .. }), "{err:?}");
        let err = parse("bubble-€€€€€-result").expect_err("not BIP39");
        assert!(matches!(err, ParseCodeError::UnknownWord { position: 2, .. }), "{err:?}");
    }

    #[test]
    fn error_escapes_control_characters() {
        let err = parse("bubble-en\u{1b}[2Jemy-result").expect_err("not BIP39");
        assert!(!err.to_string().contains('\u{1b}'), "{err}");
    }

    #[test]
    fn short_prefix_gives_several_suggestions() {
        let suggestions = suggest("bu");
        assert_eq!(suggestions.len(), MAX_SUGGESTIONS);
        assert!(suggestions.iter().all(|s| s.starts_with("bu")), "{suggestions:?}");
    }

    #[test]
    fn hint_lists_several_suggestions() {
        let err = ParseCodeError::UnknownWord {
            word: "x".into(),
            position: 1,
            suggestions: vec!["a".into(), "b".into(), "c".into()],
        };
        assert_eq!(err.hint().as_deref(), Some("did you mean \"a\", \"b\" or \"c\"?"));
        let err = ParseCodeError::UnknownWord {
            word: "x".into(),
            position: 1,
            suggestions: vec!["a".into(), "b".into()],
        };
        assert_eq!(err.hint().as_deref(), Some("did you mean \"a\" or \"b\"?"));
    }

    #[test]
    fn debug_is_redacted() {
        let code = parse("bubble-enemy-result").expect("valid");
        let debug = format!("{code:?} {code:#?}");
        assert_eq!(format!("{code:?}"), "Code(<redacted>)");
        for word in ["bubble", "enemy", "result"] {
            assert!(!debug.contains(word), "{debug}");
        }
        let index = Language::English.find_word("bubble").expect("a BIP39 word");
        assert!(!debug.contains(&index.to_string()), "{debug}");
    }

    #[test]
    fn a_swap_is_one_edit() {
        assert_eq!(strsim::osa_distance("atil", "tail"), 1);
        assert_eq!(strsim::osa_distance("bubbel", "bubble"), 1);
        assert_eq!(strsim::osa_distance("enmy", "enemy"), 1);
        assert_eq!(strsim::osa_distance("é", "e"), 1);
    }

    #[test]
    fn unknown_word_suggests_a_swap_of_the_first_letters() {
        // No word starts with "atil", and acid, aim and air are two edits away: the
        // swap must rank first.
        let err = parse("atil-enemy-result").expect_err("typo");
        let ParseCodeError::UnknownWord { suggestions, .. } = &err else { panic!("{err:?}") };
        assert_eq!(suggestions.first().map(String::as_str), Some("tail"), "{suggestions:?}");
    }

    #[test]
    fn slot_rounds_down() {
        assert_eq!(slot(0, SLOT_SECS), 0);
        assert_eq!(slot(299, SLOT_SECS), 0);
        assert_eq!(slot(300, SLOT_SECS), 300);
        assert_eq!(slot(1_800_000_123, SLOT_SECS), 1_800_000_000);
        assert_eq!(slot(u64::MAX, SLOT_SECS) % SLOT_SECS, 0);
        assert_eq!(slot(17, 1), 17);
    }

    #[test]
    #[should_panic(expected = "at least one second")]
    fn slot_of_zero_seconds_panics() {
        let _ = slot(1, 0);
    }
}
