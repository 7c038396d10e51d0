//! What the tests know of pcp's interface: its exit statuses, the files `-o` writes
//! beside the output, and how a sender and a receiver are started on a [`Host`].

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::netns::Host;
use super::process::Proc;

/// The code most senders are given with `--code` (four valid BIP39 words).
pub const CODE: &str = "bubble-enemy-result-increase";

/// pcp's exit statuses, as documented in the man pages (EXIT STATUS).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const AUTH: i32 = 3;
    pub const DECLINED: i32 = 4;
    pub const TIMEOUT: i32 = 5;
    pub const INTERRUPTED: i32 = 130;
}

/// A path as a command-line argument (temporary paths are UTF-8).
///
/// # Panics
///
/// If it is not UTF-8.
#[must_use]
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where `-o OUT` keeps the data until it has verified.
#[must_use]
pub fn part_path(out: &Path) -> PathBuf {
    with_suffix(out, ".pcp-part")
}

/// The manifest beside the part file (chunk size, offer, hash of every verified chunk).
#[must_use]
pub fn manifest_path(out: &Path) -> PathBuf {
    with_suffix(out, ".pcp-part.manifest")
}

/// The receiver's identity kept beside the part file, so that a rerun resumes as the
/// same peer id.
#[must_use]
pub fn key_path(out: &Path) -> PathBuf {
    with_suffix(out, ".pcp-part.key")
}

/// Starts `pcp send --code CODE ARGS…` on `host` with `stdin`, named "sender", without
/// waiting for it.
#[must_use]
pub fn spawn_sender(host: &Host, code: &str, args: &[&str], stdin: Stdio) -> Proc {
    let mut cmd = host.cmd(["send", "--code", code]);
    cmd.args(args).stdin(stdin);
    Proc::spawn("sender", &mut cmd)
}

/// [`spawn_sender`], then waits until the sender is ready for a receiver
/// ([`Proc::wait_until_ready`]).
#[must_use]
pub fn start_sender(host: &Host, code: &str, args: &[&str], stdin: Stdio) -> Proc {
    let mut sender = spawn_sender(host, code, args, stdin);
    sender.wait_until_ready();
    sender
}

/// Starts `pcp receive ARGS…` on `host` with its stdout going to `stdout`, named
/// "receiver".
#[must_use]
pub fn start_receiver(host: &Host, args: &[&str], stdout: Stdio) -> Proc {
    let mut cmd = host.cmd(["receive"]);
    cmd.args(args).stdout(stdout);
    Proc::spawn("receiver", &mut cmd)
}
