//! The command line as a user meets it: help, version, and every usage error that must
//! fail fast, before any network activity, with a one-line error and a hint.
//!
//! These runs never reach the network code (they fail in parsing or in local checks),
//! and the whole suite runs inside `tests/isolated` anyway.

use std::process::{Command, Output};

fn pcp(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pcp"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PCP_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().expect("pcp runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_and_version() {
    let o = pcp(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("send") && out.contains("receive") && out.contains("EXIT STATUS"));
    let o = pcp(&["--version"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("pcp "));
}

#[test]
fn unknown_word_is_refused_with_a_suggestion() {
    let o = pcp(&["receive", "-y", "bubble-enemx-result-increase"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("pcp: error:") && e.contains("enemx"), "{e}");
    assert!(e.contains("hint:") && e.contains("enemy"), "no suggestion:\n{e}");
    assert!(o.stdout.is_empty());
}

#[test]
fn too_few_words_is_a_usage_error() {
    let o = pcp(&["receive", "-y", "bubble-enemy"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pcp: error:"));
    let o = pcp(&["send", "--words", "2", "-"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn separate_words_parse_like_a_joined_code() {
    // Both forms fail identically on the same typo, so both were parsed as one code.
    let a = pcp(&["receive", "-y", "bubble", "enemx", "result", "increase"]);
    let b = pcp(&["receive", "-y", "bubble-enemx-result-increase"]);
    assert_eq!(a.status.code(), Some(2));
    assert_eq!(stderr(&a), stderr(&b));
}

#[test]
fn missing_source_fails_clearly() {
    let o = pcp(&["send", "--code", "bubble-enemy-result-increase", "/nonexistent/file"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("/nonexistent/file"), "{e}");
    assert!(!e.contains("Code is:"), "no code is shown for a transfer that cannot start");
}

#[test]
fn stdin_mixed_with_paths_is_a_usage_error() {
    let o = pcp(&["send", "--code", "bubble-enemy-result-increase", "-", "Cargo.toml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn existing_output_is_not_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("exists");
    std::fs::write(&out, b"precious").expect("write");
    let o =
        pcp(&["receive", "-y", "-o", out.to_str().expect("utf-8"), "bubble-enemy-result-increase"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&out).expect("read"), b"precious");
}

#[test]
fn output_and_directory_conflict() {
    let o = pcp(&["receive", "-y", "-o", "x", "-C", "/tmp", "bubble-enemy-result-increase"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Issue 14, item 7: `pcp node --key` through a symlink (to a real key of ours) is
/// refused before the node starts, with what is wrong and what to do.
#[test]
fn a_node_key_through_a_symlink_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real.key");
    pcp::load_or_create_key(&real).expect("a key of ours");
    let link = dir.path().join("node.key");
    std::os::unix::fs::symlink(&real, &link).expect("plant");
    let o = pcp(&["node", "--key", link.to_str().expect("utf-8"), "--listen", "/memory/1"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("node.key is a symbolic link"), "{e}");
    assert!(e.contains("hint:") && e.contains("chmod 600"), "{e}");
}
