//! Child processes with a deadline on every wait: [`ChildGuard`] kills and reaps its
//! child on drop, so a failed assertion never leaves a process behind; [`StderrLines`]
//! reads a child's stderr on a thread; [`Proc`] is the two together, named for failure
//! messages. [`clean_env`] gives every `pcp` the same environment, whatever the
//! caller's.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::data::{MIB, data_len, random_bytes};

/// The deadline for every wait in a process-level test.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// How often deadline-bounded waits poll.
const POLL: Duration = Duration::from_millis(10);

/// The `pcp` binary cargo built for this test run.
#[must_use]
pub fn pcp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pcp")
}

/// Runs a set-up command to completion and panics with its stderr if it fails.
pub(super) fn run_checked(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Removes what could change pcp's behaviour from a command's environment: every
/// `PCP_*` variable, `RUST_LOG` and `NO_COLOR`. Sets `PCP_NO_DHT=1`, so no test ever
/// tries the DHT (there is no route to it anyway).
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("PCP_") || name == "RUST_LOG" || name == "NO_COLOR" {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PCP_NO_DHT", "1")
}

/// A child's stdin read from the file at `path`.
///
/// # Panics
///
/// If it cannot be opened.
#[must_use]
pub fn stdin_from(path: &Path) -> Stdio {
    File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into()
}

/// A child's stdout written to a new file at `path` (truncated if it exists).
///
/// # Panics
///
/// If it cannot be created.
#[must_use]
pub fn stdout_to(path: &Path) -> Stdio {
    File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into()
}

/// A child process that is killed (SIGKILL) and reaped when the guard drops, so a failed
/// assertion never leaves a pcp process behind.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    /// Spawns `cmd`.
    ///
    /// # Panics
    ///
    /// If the command cannot be started.
    #[must_use]
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ChildGuard { child }
    }

    /// Sends `signal` (a name such as "INT" or "TERM") with kill(1).
    ///
    /// # Panics
    ///
    /// If kill fails (the process is already reaped, for instance).
    pub fn signal(&self, signal: &str) {
        run_checked(Command::new("kill").args(["-s", signal, &self.child.id().to_string()]));
    }
}

impl Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Fails only if it already exited, which is fine; wait() reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit, polling `try_wait`, up to `timeout`; `None` if it is still
/// running then (it is left running: the [`ChildGuard`] kills it).
///
/// # Panics
///
/// If `try_wait` fails.
pub fn try_wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on our own child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// Waits for `child` to exit, up to `timeout`.
///
/// # Panics
///
/// If it has not exited by then.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    try_wait_timeout(child, timeout)
        .unwrap_or_else(|| panic!("process {} still running after {timeout:?}", child.id()))
}

/// Polls `done` until it returns true, up to `timeout`.
///
/// # Panics
///
/// With `what` in the message if `done` never returned true.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(POLL);
    }
}

/// Lines a child writes on a stream (normally stderr), read on a thread of their own.
///
/// The thread sends each line into a bounded channel; a child that writes more than
/// `CAPACITY` lines nobody reads blocks on its stderr, as it would on a full pipe. Once
/// this reader is dropped the thread keeps draining the stream, so the child never sees
/// EPIPE on its stderr.
#[derive(Debug)]
pub struct StderrLines {
    name: &'static str,
    rx: Receiver<String>,
    seen: Vec<String>,
    closed: bool,
}

impl StderrLines {
    const CAPACITY: usize = 4096;

    /// Starts reading `stream` (`child.stderr.take()`) line by line.
    #[must_use]
    pub fn spawn(stream: impl Read + Send + 'static) -> StderrLines {
        let (tx, rx) = sync_channel(Self::CAPACITY);
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned();
                if tx.send(line).is_err() {
                    let _ = io::copy(&mut reader, &mut io::sink());
                    return;
                }
            }
        });
        StderrLines { name: "child", rx, seen: Vec::new(), closed: false }
    }

    /// Names the process in failure messages ("sender", "receiver").
    #[must_use]
    pub fn named(mut self, name: &'static str) -> StderrLines {
        self.name = name;
        self
    }

    /// Takes `child`'s stderr (which must have been `Stdio::piped()`) and reads it.
    ///
    /// # Panics
    ///
    /// If stderr was not piped, or was taken already.
    #[must_use]
    pub fn of(child: &mut Child) -> StderrLines {
        StderrLines::spawn(child.stderr.take().expect("stderr is Stdio::piped() and not taken yet"))
    }

    /// Waits up to `timeout` for a line matching `pred` and returns it. Lines before it
    /// are consumed (and kept for [`StderrLines::seen`]).
    ///
    /// # Panics
    ///
    /// On timeout, or if the stream ends first, with everything read so far.
    pub fn wait_for_line(&mut self, pred: impl FnMut(&str) -> bool, timeout: Duration) -> String {
        self.wait_for("a matching line", pred, timeout)
    }

    /// [`StderrLines::wait_for_line`], with `what` it waits for in the failure message.
    fn wait_for(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no {what} on stderr within {timeout:?}; stderr so far:\n{}",
                    self.name,
                    self.seen()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = true;
                    panic!(
                        "{}: stderr ended (the process exited?) before {what}; stderr:\n{}",
                        self.name,
                        self.seen()
                    )
                }
            }
        }
    }

    /// Reads until the stream ends (the child exited), up to `timeout`, and returns all of
    /// it, lines already consumed included.
    ///
    /// # Panics
    ///
    /// On timeout, with everything read so far.
    pub fn read_to_end(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: stderr still open after {timeout:?}; stderr so far:\n{}",
                        self.name,
                        self.seen()
                    )
                }
            }
        }
        self.seen()
    }

    /// Every line read so far, joined with newlines (without waiting for more).
    #[must_use]
    pub fn seen(&self) -> String {
        self.seen.join("\n")
    }

    /// Moves the lines that have already arrived into [`StderrLines::seen`], without
    /// waiting; for error messages.
    pub fn drain_ready(&mut self) {
        self.seen.extend(self.rx.try_iter());
    }
}

/// Waits for the sender's `Code is: word-word-word-word` line and returns the code.
///
/// # Panics
///
/// On timeout or end of stream, with everything read so far.
pub fn wait_for_code(stderr: &mut StderrLines, timeout: Duration) -> String {
    const MARK: &str = "Code is: ";
    let line = stderr.wait_for("the `Code is: …` line", |l| l.contains(MARK), timeout);
    let (_, rest) = line.split_once(MARK).expect("the line matched");
    let code = rest.split_whitespace().next().unwrap_or_default().to_owned();
    assert!(
        code.split('-').count() >= 3
            && code.split('-').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())),
        "malformed code in {line:?}"
    );
    code
}

/// A running `pcp` (or other) process with its stderr being read: a [`ChildGuard`] and
/// a [`StderrLines`] together, named for failure messages.
#[derive(Debug)]
pub struct Proc {
    /// Name used in failure messages ("sender", "receiver").
    pub name: &'static str,
    /// The process; killed on drop.
    pub child: ChildGuard,
    /// Its stderr.
    pub stderr: StderrLines,
}

impl Proc {
    /// Spawns `cmd` with stderr piped and read.
    #[must_use]
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let mut child = ChildGuard::spawn(cmd.stderr(Stdio::piped()));
        let stderr = StderrLines::of(&mut child).named(name);
        Proc { name, child, stderr }
    }

    /// Waits for the `Code is: …` line (see [`wait_for_code`]).
    pub fn wait_for_code(&mut self) -> String {
        wait_for_code(&mut self.stderr, TIMEOUT)
    }

    /// Waits (up to [`TIMEOUT`]) until a sender prints its `Ready:` line, so a receiver
    /// started now finds it; returns the line.
    ///
    /// # Panics
    ///
    /// On timeout or if the sender exits first, with its stderr.
    pub fn wait_until_ready(&mut self) -> String {
        self.stderr.wait_for_line(|l| l.starts_with("Ready:"), TIMEOUT)
    }

    /// Waits up to `timeout` for the process to exit; returns its status and all of its
    /// stderr.
    ///
    /// # Panics
    ///
    /// On timeout, with the stderr seen so far.
    pub fn finish(&mut self, timeout: Duration) -> (ExitStatus, String) {
        finish_all(&mut [self], timeout).pop().expect("one process")
    }

    /// Waits for the process to exit (up to [`TIMEOUT`]) and checks its exit code;
    /// returns its stderr.
    ///
    /// # Panics
    ///
    /// If it exits otherwise (killed by a signal included), with its stderr.
    pub fn expect_exit(&mut self, code: i32) -> String {
        let (status, stderr) = self.finish(TIMEOUT);
        assert_eq!(
            status.code(),
            Some(code),
            "{} exited with {status}, not {code}; stderr:\n{stderr}",
            self.name
        );
        stderr
    }

    /// Panics, with its stderr, if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait on our own child") {
            let stderr = self.stderr.read_to_end(TIMEOUT);
            panic!("{} exited early with {status}; stderr:\n{stderr}", self.name);
        }
    }
}

/// Waits until [`data_len`] of `path` (a receiver's `.pcp-part`, or the file its stdout
/// goes to) reaches `at_least`, up to `timeout`, and returns it. Meanwhile it drains the
/// stderr of every process in `procs` (so a verbose one never blocks on a full pipe) and
/// panics, with that stderr, if one of them exits.
///
/// # Panics
///
/// On timeout or if a process exits, with the stderr of all of `procs`.
pub fn wait_for_len(path: &Path, at_least: u64, timeout: Duration, procs: &mut [&mut Proc]) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let len = data_len(path);
        if len >= at_least {
            return len;
        }
        for proc in procs.iter_mut() {
            proc.stderr.drain_ready();
            proc.assert_running();
        }
        if Instant::now() >= deadline {
            let stderr: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {} stderr:\n{}", p.name, p.stderr.seen()))
                .collect();
            panic!(
                "{} holds {len} bytes after {timeout:?}, not yet {at_least}\n{}",
                path.display(),
                stderr.join("\n")
            );
        }
        thread::sleep(POLL);
    }
}

/// Waits up to `timeout` for every process in `procs` to exit, draining all their stderr
/// meanwhile (so one that logs a lot never blocks on a full pipe while another is being
/// waited for); returns the status and whole stderr of each, in order.
///
/// # Panics
///
/// On timeout, with the stderr seen so far of those still running.
pub fn finish_all(procs: &mut [&mut Proc], timeout: Duration) -> Vec<(ExitStatus, String)> {
    let deadline = Instant::now() + timeout;
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; procs.len()];
    loop {
        for (proc, status) in procs.iter_mut().zip(&mut statuses) {
            proc.stderr.drain_ready();
            if status.is_none() {
                *status = proc.child.try_wait().expect("try_wait on our own child");
            }
        }
        if statuses.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() >= deadline {
            let running: Vec<String> = procs
                .iter()
                .zip(&statuses)
                .filter(|(_, s)| s.is_none())
                .map(|(p, _)| {
                    format!("{} still running; stderr so far:\n{}", p.name, p.stderr.seen())
                })
                .collect();
            panic!("after {timeout:?}: {}", running.join("\n"));
        }
        thread::sleep(POLL);
    }
    procs
        .iter_mut()
        .zip(statuses)
        .map(|(proc, status)| (status.expect("all exited"), proc.stderr.read_to_end(timeout)))
        .collect()
}

/// Writes random bytes into `stdin` until writing fails (the process exited or closed
/// it): an endless stream for interruption tests.
#[must_use]
pub fn spawn_endless_writer(mut stdin: ChildStdin) -> JoinHandle<()> {
    thread::spawn(move || {
        let block = random_bytes(MIB);
        while stdin.write_all(&block).is_ok() {}
    })
}
