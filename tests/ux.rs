//! What a person sees, from the first command to the last line (issue 10, "Nobody waits
//! without knowing why"): each test drives the real binary as a user would and checks
//! the words it prints.
//!
//! Two tiers, as everywhere (see README.md, "Tests: two tiers"): the command-line tests
//! fail before any networking and run as any user; the transfer tests build a two-host
//! LAN (`util::Lan`) and are `#[ignore]`d, to run as root under `tests/isolated` with
//! `--include-ignored`.

mod util;

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
