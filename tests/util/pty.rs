//! A program on a terminal: [`Pty`] runs `pcp` under script(1), which gives it a
//! pseudo-terminal as controlling terminal (so the consent prompt can open `/dev/tty`)
//! and as stdin, stdout and stderr (so the status spinner and the progress bar are
//! drawn), copies everything written to that terminal to its own stdout, and passes
//! what is written to its stdin on as keys typed.
//!
//! What the terminal showed is kept raw ([`Pty::raw`]) and as [`Pty::text`]: escape
//! sequences removed and every carriage return made a line break, so each redraw of a
//! progress bar is a line of its own.

use std::io::{Read, Write};
use std::process::{ChildStdin, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::netns::Host;
use super::process::{ChildGuard, pcp_bin, wait_with_timeout};

/// How often [`Pty::wait_for`] looks at the screen again.
const POLL: Duration = Duration::from_millis(20);

/// `pcp ARGS…` running on a terminal of its own, on a [`Host`].
#[derive(Debug)]
pub struct Pty {
    name: &'static str,
    /// script(1), whose child is pcp; killed on drop.
    pub child: ChildGuard,
    /// Kept open: script(1) would pass an end of file on to the terminal.
    keys: ChildStdin,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    /// Starts `pcp ARGS…` on `host`, on a 160-column terminal with `TERM=xterm`.
    ///
    /// # Panics
    ///
    /// If an argument holds a single quote (the command line is quoted for sh), or if
    /// script(1) cannot be started.
    #[must_use]
    pub fn spawn(name: &'static str, host: &Host, args: &[&str]) -> Pty {
        Pty::start(name, host.command("script"), args)
    }

    /// [`Pty::spawn`] in this test's own network namespace, for a peer that runs in the
    /// test process (`tests/adversary.rs`); the caller checks that it is isolated.
    ///
    /// # Panics
    ///
    /// As [`Pty::spawn`].
    #[must_use]
    pub fn spawn_here(name: &'static str, cwd: &std::path::Path, args: &[&str]) -> Pty {
        let mut cmd = std::process::Command::new("script");
        super::process::clean_env(&mut cmd).current_dir(cwd);
        Pty::start(name, cmd, args)
    }

    fn start(name: &'static str, mut cmd: std::process::Command, args: &[&str]) -> Pty {
        let quote = |a: &str| {
            assert!(!a.contains('\''), "argument {a:?} holds a quote");
            format!("'{a}'")
        };
        let line: Vec<String> =
            std::iter::once(pcp_bin()).chain(args.iter().copied()).map(quote).collect();
        // A terminal whose size is known, so a bar is not cut short.
        let shell = format!("stty cols 160 rows 40; exec {}", line.join(" "));
        cmd.args(["-q", "-e", "-c", &shell, "/dev/null"])
            .env("TERM", "xterm")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn(&mut cmd);
        let keys = child.stdin.take().expect("stdin is piped");
        let mut out = child.stdout.take().expect("stdout is piped");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let copy = Arc::clone(&screen);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                copy.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(&buf[..n]);
            }
        });
        Pty { name, child, keys, screen }
    }

    /// Everything the terminal got so far, escape sequences and all.
    #[must_use]
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }

    /// What the terminal showed so far, as lines (see the module documentation).
    #[must_use]
    pub fn text(&self) -> String {
        plain(&self.raw())
    }

    /// Waits up to `timeout` until `done` holds for [`Pty::text`]; returns that text.
    ///
    /// # Panics
    ///
    /// On timeout, or if the program exits first, with what the terminal showed.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if done(&text) {
                return text;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait on our own child") {
                // The last bytes may still be on their way from the reader thread.
                thread::sleep(Duration::from_millis(200));
                let text = self.text();
                if done(&text) {
                    return text;
                }
                panic!("{}: exited ({status}) before {what}; its terminal:\n{text}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {timeout:?}; its terminal:\n{text}",
                self.name
            );
            thread::sleep(POLL);
        }
    }

    /// Sends `signal` ("KILL", "INT", …) to pcp itself, script(1)'s child, and waits up
    /// to `timeout` for script(1) to exit, which it does when pcp has.
    ///
    /// # Panics
    ///
    /// If pcp is not running, or script(1) does not exit in time.
    pub fn signal_program(&mut self, signal: &str, timeout: Duration) -> ExitStatus {
        let script = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{script}/task/{script}/children"))
            .unwrap_or_else(|e| panic!("{}: the children of script(1): {e}", self.name));
        let pid = children.split_whitespace().next().unwrap_or_else(|| {
            panic!("{}: pcp is not running; its terminal:\n{}", self.name, self.text())
        });
        let status = std::process::Command::new("kill")
            .args(["-s", signal, pid])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -s {signal} {pid} failed");
        wait_with_timeout(&mut self.child, timeout)
    }

    /// Types `line` and Enter.
    ///
    /// # Panics
    ///
    /// If script(1) no longer reads its stdin.
    pub fn type_line(&mut self, line: &str) {
        self.keys.write_all(format!("{line}\n").as_bytes()).expect("type on the terminal");
        self.keys.flush().expect("flush the keys");
    }

    /// Types `keys` as they are, without Enter (`\x03` is Ctrl-C).
    ///
    /// # Panics
    ///
    /// If script(1) no longer reads its stdin.
    pub fn type_keys(&mut self, keys: &[u8]) {
        self.keys.write_all(keys).expect("type on the terminal");
        self.keys.flush().expect("flush the keys");
    }

    /// Waits up to `timeout` for pcp to exit; returns its status and the terminal's text.
    ///
    /// # Panics
    ///
    /// On timeout.
    pub fn finish(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let status = wait_with_timeout(&mut self.child, timeout);
        // script(1) has copied everything by the time it exits; the reader thread may
        // still be appending the last read.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut len = self.raw().len();
        loop {
            thread::sleep(Duration::from_millis(50));
            let now = self.raw().len();
            if now == len || Instant::now() >= deadline {
                break;
            }
            len = now;
        }
        (status, self.text())
    }

    /// [`Pty::finish`] within `timeout`, and checks pcp's exit status (script(1) `-e`
    /// exits with it).
    ///
    /// # Panics
    ///
    /// On timeout or another status, with the terminal's text.
    pub fn expect_exit(&mut self, code: i32, timeout: Duration) -> String {
        let (status, text) = self.finish(timeout);
        assert_eq!(
            status.code(),
            Some(code),
            "{} exited with {status}; its terminal:\n{text}",
            self.name
        );
        text
    }
}

/// `raw` terminal output without escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL`,
/// and two-byte ones), carriage returns made line breaks, and empty lines dropped.
#[must_use]
pub fn plain(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    let _ = chars.by_ref().find(|c| ('@'..='~').contains(c));
                }
                Some(']') => {
                    let _ = chars.by_ref().find(|&c| c == '\x07');
                }
                _ => {}
            },
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join("\n")
}
