//! What `-v` writes: logs on standard error, coloured only on a terminal and never
//! with `NO_COLOR` set (issue 7). The receiver dials an address where nothing listens,
//! so it logs its retries without end; the test reads a few and stops it.
//!
//! Netns tier: run as root under `tests/isolated` with `--include-ignored`.

mod util;

use std::process::Stdio;
use std::time::Duration;

use util::{CODE, Lan, Proc, TIMEOUT};

/// The receiver's `-v` log, dialling a port nobody listens on.
fn dialling(lan: &Lan, tty: bool, no_color: bool) -> String {
    let args = ["receive", "-v", "-y", "--no-mdns", "--peer", "/ip4/198.18.0.2/tcp/9", CODE];
    let mut cmd = if tty {
        // script(1) gives pcp a terminal for stderr and copies what it writes.
        let line = format!("exec '{}' {}", util::pcp_bin(), args.join(" "));
        let mut c = lan.host(0).command("script");
        c.args(["-q", "-e", "-c", &line, "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped());
        c
    } else {
        lan.host(0).cmd(args)
    };
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let mut receiver = Proc::spawn("receiver", &mut cmd);
    let out = if tty {
        // Under script(1) the log arrives on script's stdout.
        let stdout = receiver.child.stdout.take().expect("piped stdout");
        let mut lines = util::StderrLines::spawn(stdout);
        lines.wait_for_line(|l| l.contains("dial failed"), TIMEOUT);
        lines.seen()
    } else {
        receiver.stderr.wait_for_line(|l| l.contains("dial failed"), TIMEOUT);
        receiver.stderr.seen()
    };
    receiver.child.signal("KILL");
    let _ = receiver.finish(Duration::from_secs(10));
    out
}

/// Whether `s` holds an SGR (colour) sequence, `ESC [ digits;… m`. A terminal also gets
/// the status spinner's cursor controls, which are not colour.
fn has_colour(s: &str) -> bool {
    s.match_indices("\x1b[").any(|(i, _)| {
        let rest = s[i + 2..].trim_start_matches(|c: char| c.is_ascii_digit() || c == ';');
        rest.starts_with('m')
    })
}

#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn logs_to_a_pipe_carry_no_colour() {
    let lan = Lan::pair();
    let log = dialling(&lan, false, false);
    assert!(!log.contains('\x1b'), "escape codes in a piped log:\n{log:?}");
}

#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn no_color_keeps_a_terminal_log_plain() {
    let lan = Lan::pair();
    let plain = dialling(&lan, true, true);
    assert!(!has_colour(&plain), "colour despite NO_COLOR:\n{plain:?}");
    // The same run on a terminal without NO_COLOR is coloured: the check can fail.
    let coloured = dialling(&lan, true, false);
    assert!(has_colour(&coloured), "no colour on a terminal:\n{coloured:?}");
}
