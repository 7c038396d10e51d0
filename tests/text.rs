//! Issue 15, "What users of the peers expect": text (`pcp send --text`, and a short
//! stdin) shown on the receiver's terminal, and the code asked for on the terminal with
//! Tab completing its words.
//!
//! The transfer tests build a two-host LAN (`util::Lan`) and are `#[ignore]`d, to run as
//! root under `tests/isolated` with `--include-ignored`; the receiver runs on a terminal
//! of its own (`util::Pty`) where the terminal matters.

mod util;

use std::process::{Command, Stdio};

use util::{CODE, Lan, Pty, TIMEOUT, exit, read, start_receiver, start_sender};

/// Text that would clear the screen and write the clipboard (OSC 52) if it reached a
/// terminal as it is.
const HOSTILE: &str = "hello \x1b]52;c;cGNw\x07\x1b[2J world\nsecond\tline";

/// What [`HOSTILE`] may look like on a terminal.
const CLEANED: &str = "hello ?]52;c;cGNw??[2J world";

/// `pcp send --text` to a plain `pcp receive CODE` on a terminal: the text is printed,
/// cleaned, with no question and no file.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn text_is_shown_on_the_receivers_terminal_without_a_question() {
    let lan = Lan::pair();
    let mut sender = start_sender(lan.host(0), CODE, &["--text", HOSTILE], Stdio::null());
    let mut receiver = Pty::spawn("receiver", lan.host(1), &["receive", CODE]);
    let text = receiver.expect_exit(exit::OK, TIMEOUT);
    let stderr = sender.expect_exit(exit::OK);
    assert!(text.contains(CLEANED), "{text}");
    assert!(text.lines().any(|l| l == "second\tline"), "lines and tabs are kept:\n{text}");
    assert!(!text.contains("[y/N]"), "a short text is not asked about:\n{text}");
    let raw = receiver.raw();
    assert!(!raw.contains("\x1b[2J") && !raw.contains("\x1b]52"), "{raw:?}");
    assert!(stderr.contains("sent text, "), "{stderr}");
}

/// Issue 15: `echo hi | pcp send -` to a plain `pcp receive CODE` on a terminal was
/// refused (exit 2): a short stdin is offered as text, and shown.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn a_short_stdin_is_shown_as_text() {
    let lan = Lan::pair();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("in");
    std::fs::write(&src, "hi from stdin\n").expect("write");
    let mut sender = start_sender(lan.host(0), CODE, &["-"], util::stdin_from(&src));
    let mut receiver = Pty::spawn("receiver", lan.host(1), &["receive", CODE]);
    let text = receiver.expect_exit(exit::OK, TIMEOUT);
    sender.expect_exit(exit::OK);
    assert!(text.lines().any(|l| l == "hi from stdin"), "{text}");
}

/// With standard output redirected, the text's bytes go there as they are.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn text_to_a_redirected_stdout_is_its_raw_bytes() {
    let lan = Lan::pair();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let mut sender = start_sender(lan.host(0), CODE, &["--text", HOSTILE], Stdio::null());
    let mut receiver = start_receiver(lan.host(1), &["-y", CODE], util::stdout_to(&out));
    let stderr = receiver.expect_exit(exit::OK);
    sender.expect_exit(exit::OK);
    assert_eq!(read(&out), HOSTILE.as_bytes());
    assert!(stderr.contains("writing the text to standard output"), "{stderr}");
}

/// A text longer than a screenful (4 KiB) is asked about, then shown; `--text` without
/// a value reads it from stdin.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn a_long_text_is_asked_about() {
    let lan = Lan::pair();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("in");
    let long = format!("{}the end\n", "a line of text\n".repeat(400));
    std::fs::write(&src, &long).expect("write");
    let mut sender = start_sender(lan.host(0), CODE, &["--text"], util::stdin_from(&src));
    let mut receiver = Pty::spawn("receiver", lan.host(1), &["receive", CODE]);
    let text = receiver.wait_for("the question", TIMEOUT, |t| t.contains("[y/N]"));
    assert!(text.contains("Accept text, 5.9 KiB from "), "{text}");
    receiver.type_line("y");
    let text = receiver.expect_exit(exit::OK, TIMEOUT);
    sender.expect_exit(exit::OK);
    assert!(text.lines().any(|l| l == "the end"), "{text}");
    assert!(text.matches("a line of text").count() >= 400, "{text}");
}

/// `pcp receive` with no code asks for it on the terminal; Tab completes each word (and
/// adds the dash), and the transfer then runs as with the code on the command line.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn the_code_is_asked_for_with_tab_completion() {
    let lan = Lan::pair();
    let mut sender =
        start_sender(lan.host(0), CODE, &["--text", "asked and answered"], Stdio::null());
    let mut receiver = Pty::spawn("receiver", lan.host(1), &["recv"]);
    receiver.wait_for("the prompt", TIMEOUT, |t| t.contains("Enter the code"));
    // A mistyped word is said so, and the code is asked for again.
    receiver.type_line("bubble-enemx-result-increase");
    receiver.wait_for("a hint and a new prompt", TIMEOUT, |t| {
        t.contains("hint: did you mean") && t.matches("Enter the code").count() == 2
    });
    receiver.type_line("bubb\tenem\tresu\tincr\t");
    let text = receiver.expect_exit(exit::OK, TIMEOUT);
    sender.expect_exit(exit::OK);
    assert!(
        text.contains("Enter the code (Tab completes a word): bubble-enemy-result-increase-"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "asked and answered"), "{text}");
}

/// No code and no terminal to ask on: a usage error that says how to give one. Run in a
/// session of its own (setsid), so it has no controlling terminal whatever runs the test;
/// it fails before any networking.
#[test]
fn no_code_and_no_terminal_is_a_usage_error() {
    let mut cmd = Command::new("setsid");
    util::clean_env(&mut cmd).arg("-w").arg(util::pcp_bin()).arg("receive").stdin(Stdio::null());
    let o = cmd.output().expect("setsid runs pcp");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(exit::USAGE), "{stderr}");
    assert!(
        stderr.contains("pcp: error: no code given, and no terminal to ask for it on"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: give it on the command line (pcp receive CODE)"), "{stderr}");
}
