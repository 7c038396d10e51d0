//! What a person sees, from the first command to the last line (issue 10, "Nobody waits
//! without knowing why"): each test drives the real binary as a user would and checks
//! the words it prints.
//!
//! Two tiers, as everywhere (see README.md, "Tests: two tiers"): the command-line tests
//! fail before any networking and run as any user; the transfer tests build a two-host
//! LAN (`util::Lan`) and are `#[ignore]`d, to run as root under `tests/isolated` with
//! `--include-ignored`.

mod util;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use util::clean_env;

/// Runs `pcp ARGS…` to completion with a clean environment, no stdin and no terminal.
fn pcp(args: &[&str]) -> Output {
    let mut cmd = Command::new(util::pcp_bin());
    clean_env(&mut cmd).args(args).stdin(Stdio::null()).output().expect("pcp runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// --- 14: typo hints count a swap as one edit ---------------------------------------------

#[test]
fn a_swapped_pair_of_letters_suggests_the_word() {
    let o = pcp(&["receive", "-y", "atil-enemy-result-increase"]);
    assert_eq!(o.status.code(), Some(util::exit::USAGE));
    let e = stderr(&o);
    assert!(e.contains("hint: did you mean \"tail\""), "tail is not the first suggestion:\n{e}");
}

// --- 13: -C names a directory that is not there ------------------------------------------

#[test]
fn a_missing_directory_is_said_to_be_missing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nowhere");
    let o = pcp(&["receive", "-y", "-C", util::arg(&missing), util::CODE]);
    assert_eq!(o.status.code(), Some(util::exit::USAGE));
    let e = stderr(&o);
    assert!(e.contains("nowhere does not exist"), "{e}");
    assert!(!e.contains("not a directory"), "{e}");
    assert!(!missing.exists(), "-C DIR is not created");

    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let o = pcp(&["receive", "-y", "-C", util::arg(&file), util::CODE]);
    assert_eq!(o.status.code(), Some(util::exit::USAGE));
    assert!(stderr(&o).contains("file is not a directory"), "{}", stderr(&o));
}

// --- 12: the shell, and flags before the subcommand ------------------------------------

/// Types `line`, a Tab and Enter into an interactive bash on a terminal (a pty from
/// script(1)) that has the committed `completions/pcp.bash` loaded and `pcp` defined as
/// a function that prints its arguments, in `cwd`; returns what that `pcp` was run with.
fn complete_in_bash(cwd: &Path, line: &str) -> String {
    // The shell's own files stay out of `cwd`, where they would be completed too.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let rc = dir.join("bashrc");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions/pcp.bash");
    fs::write(
        &rc,
        format!(
            "PS1='$ '\npcp() {{ printf 'ARGS<%s>\\n' \"$*\"; }}\nsource '{}'\n",
            util::arg(&script)
        ),
    )
    .expect("write the rc file");
    let shell = format!("exec bash --noprofile --rcfile '{}' -i", util::arg(&rc));
    let tty_log = dir.join("tty.log");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &shell, "/dev/null"])
        .current_dir(cwd)
        .env("INPUTRC", "/dev/null")
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(util::stdout_to(&tty_log))
        .stderr(Stdio::null());
    let mut bash = util::ChildGuard::spawn(&mut cmd);
    // Kept open until bash exits: script(1) would pass an EOF on to the terminal.
    let mut keys = bash.stdin.take().expect("stdin is piped");
    keys.write_all(format!("{line}\t\nexit\n").as_bytes()).expect("type");
    let status = util::wait_with_timeout(&mut bash, util::TIMEOUT);
    drop(keys);
    let terminal = String::from_utf8_lossy(&util::read(&tty_log)).into_owned();
    assert!(status.success(), "bash exited with {status}; terminal:\n{terminal}");
    let start = terminal.find("ARGS<").unwrap_or_else(|| panic!("pcp never ran:\n{terminal}"));
    let rest = &terminal[start + "ARGS<".len()..];
    rest[..rest.find('>').expect("the line ends")].to_owned()
}

#[test]
fn bash_completes_a_file_to_send() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(tmp.path().join("report.pdf"), b"x").expect("write");
    assert_eq!(complete_in_bash(tmp.path(), "pcp send "), "send report.pdf");
}

#[test]
fn bash_does_not_complete_hidden_flags() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert_eq!(complete_in_bash(tmp.path(), "pcp send --ch"), "send --ch");
    assert_eq!(complete_in_bash(tmp.path(), "pcp send --no-c"), "send --no-compress");
}

#[test]
fn no_completion_script_offers_hidden_flags() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions");
    for entry in fs::read_dir(&dir).expect("completions/") {
        let path = entry.expect("entry").path();
        let text = fs::read_to_string(&path).expect("read");
        assert!(!text.contains("chunk-size"), "{} offers --chunk-size", path.display());
    }
}

#[test]
fn output_flags_are_taken_before_the_subcommand() {
    // Each fails after parsing, before any networking, with its own error: so `-q`, `-v`
    // and `-vv` before the subcommand were accepted.
    let o = pcp(&["-q", "send", "/nonexistent/file"]);
    assert_eq!(o.status.code(), Some(util::exit::FAILURE), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/file"), "{}", stderr(&o));

    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nowhere");
    let o = pcp(&["-vv", "receive", "-y", "-C", util::arg(&missing), util::CODE]);
    assert_eq!(o.status.code(), Some(util::exit::USAGE), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));

    // pcp node has no JSON output, wherever --json is put.
    for args in [&["--json", "node"][..], &["node", "--json"]] {
        let o = pcp(args);
        assert_eq!(o.status.code(), Some(util::exit::USAGE), "{args:?}: {}", stderr(&o));
    }
}

// --- 15: help and man pages -------------------------------------------------------------

/// Whether `text` mentions the flag `flag` (`-o`), not just a longer word holding it.
fn mentions_flag(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + flag.len()..].chars().next();
        before.is_none_or(|c| c.is_whitespace() || c == '(' || c == '`')
            && after.is_none_or(|c| !c.is_alphanumeric() && c != '-')
    })
}

/// The long help of `-q` in `pcp SUBCOMMAND --help`: from its line to the next blank one.
fn quiet_help(subcommand: &str) -> String {
    let o = pcp(&[subcommand, "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    let start = help.find("-q, --quiet").unwrap_or_else(|| panic!("no -q in:\n{help}"));
    let rest = &help[start..];
    rest[..rest.find("\n\n").unwrap_or(rest.len())].to_owned()
}

#[test]
fn send_help_does_not_speak_of_receive_flags() {
    let o = pcp(&["send", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("--reconnect-timeout"), "{help}");
    assert!(
        !mentions_flag(&help, "-o"),
        "send --help mentions -o, which only receive has:\n{help}"
    );
    assert!(mentions_flag("a (-o FILE)", "-o") && !mentions_flag("--no-compress -of", "-o"));
}

#[test]
fn quiet_is_described_for_each_side() {
    assert!(quiet_help("send").contains("code"), "{}", quiet_help("send"));
    let receive = quiet_help("receive");
    assert!(!receive.contains("code"), "receive -q speaks of a code pcp made up: {receive}");
}

#[test]
fn man_pages_have_examples_and_exit_status_sections_and_value_names() {
    let man = |page: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man").join(page);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    for page in ["pcp-send.1", "pcp-receive.1", "pcp-node.1"] {
        let text = man(page);
        assert!(!text.contains(".SH EXTRA"), "{page} has an EXTRA section");
        assert!(text.contains(".SH EXAMPLES\n"), "{page} has no EXAMPLES section");
        assert!(text.contains(".SH \"EXIT STATUS\"\n"), "{page} has no EXIT STATUS section");
        assert!(
            text.contains(r"[\fB\-\-listen\fR \fIMULTIADDR\fR]"),
            "{page}'s synopsis shows --listen without its value"
        );
    }
    assert!(man("pcp.1").contains(".SH \"EXIT STATUS\"\n"));
}
