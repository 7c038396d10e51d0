//! Helpers for process-level tests of the real `pcp` binary.
//!
//! - [`Lan`] builds a virtual LAN out of network namespaces (`ip netns`): each [`Host`]
//!   gets `eth0` with an address in 198.18.0.0/24 (RFC 2544 benchmarking space, never
//!   routed), joined by a veth pair (two hosts) or a bridge in a hub namespace (more).
//!   No namespace has a default route, so nothing a test runs can leave the host.
//! - [`Host::cmd`] runs `pcp` inside a host with a clean environment and no terminal.
//! - [`ChildGuard`] kills and reaps its child on drop; [`StderrLines`] reads a child's
//!   stderr on a thread; [`wait_with_timeout`] and friends put a deadline on every wait.
//! - [`random_bytes`], [`make_sample_tree`] and [`assert_trees_eq`] make and check data.
//! - Faults on a host's `eth0`: [`Host::rate_limit`] (a token bucket on its egress, so a
//!   transfer lasts long enough to be interrupted), [`Host::link_down`] /
//!   [`Host::link_up`] / [`Host::pull_cable`], and [`Host::change_addr`]. To act at some
//!   point of a transfer, [`wait_for_len`] polls the size of what the receiver has written.
//!
//! The namespace helpers need root and `ip` (iproute2), and refuse to run in a network
//! namespace with a default route: run the tests under `tests/isolated`.
#![allow(dead_code)] // each test binary uses a different subset
#![allow(unreachable_pub)] // a test crate has no public API; `pub` shares helpers across its modules

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::RngCore;

/// The deadline for every wait in a process-level test.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// How often deadline-bounded waits poll.
const POLL: Duration = Duration::from_millis(10);

/// 1 MiB, the default chunk size.
pub const MIB: usize = 1 << 20;

/// The `pcp` binary cargo built for this test run.
#[must_use]
pub fn pcp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pcp")
}

// ---------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------

/// Panics with a clear message unless namespaces can be made here: `ip` exists, we are
/// root, and this network namespace has no default route (so we are inside
/// `tests/isolated`, not on the host's real network). Checked once per test binary.
fn require_isolated_root() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = CHECK.get_or_init(check_isolated_root) {
        panic!("{why}");
    }
}

fn check_isolated_root() -> Result<(), String> {
    const HOW: &str = "network tests run as root inside a fresh network namespace: \
                       `tests/isolated cargo test --locked` (or `.ci/run`)";
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(format!("`ip -V` failed ({}); {HOW}", out.status)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("the `ip` command is missing: install iproute2; {HOW}"));
        }
        Err(e) => return Err(format!("cannot run `ip`: {e}; {HOW}")),
    }
    if effective_uid() != Some(0) {
        return Err(format!("creating network namespaces needs root; {HOW}"));
    }
    for family in ["-4", "-6"] {
        // A failure (no IPv6 in this kernel) prints nothing on stdout: no route either.
        let out = Command::new("ip")
            .args([family, "route", "show", "default"])
            .output()
            .map_err(|e| format!("cannot run `ip route`: {e}"))?;
        let routes = String::from_utf8_lossy(&out.stdout);
        if !routes.trim().is_empty() {
            return Err(format!(
                "refusing to run: this network namespace has a default route ({}), so pcp's \
                 traffic could leave the host; {HOW}",
                routes.trim()
            ));
        }
    }
    Ok(())
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // "Uid: real effective saved filesystem"
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Runs a set-up command to completion and panics with its stderr if it fails.
fn run_checked(cmd: &mut Command) {
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

/// A named network namespace (`ip netns add`) with `lo` up; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `pcpt-<pid>-<lan>-<role>`; `lan` keeps names unique within this process.
    fn new(lan: usize, role: &str) -> Netns {
        let name = format!("pcpt-{}-{lan}-{role}", std::process::id());
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` knows it.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> ARGS…` and panics if it fails.
    fn ip(&self, args: &[&str]) {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// `program` inside this namespace, in a session of its own (no controlling terminal,
    /// so `/dev/tty` cannot be opened), with a clean environment (see [`clean_env`]) and
    /// stdin from /dev/null. `setsid` and `ip netns exec` both exec, so the child's pid
    /// is the program's: signals sent to it reach the program.
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("setsid");
        cmd.args(["ip", "netns", "exec", &self.name]).arg(program).stdin(Stdio::null());
        clean_env(&mut cmd);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it.
        let out = Command::new("ip").args(["netns", "del", &self.name]).output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}

/// One machine on a [`Lan`]: a namespace with `lo` and `eth0` up.
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    /// A `Cell`, so that [`Host::change_addr`] works through the `&Host` a [`Lan`] lends.
    addr: Cell<Ipv4Addr>,
}

impl Host {
    /// The host's address on `eth0` (198.18.0.1 for the first host, …, unless
    /// [`Host::change_addr`] changed it).
    #[must_use]
    pub fn addr(&self) -> Ipv4Addr {
        self.addr.get()
    }

    /// The host's namespace.
    #[must_use]
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// `pcp ARGS…` on this host (see [`Netns::command`] for the environment).
    #[must_use]
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.ns.command(pcp_bin());
        cmd.args(args);
        cmd
    }

    /// Any other program on this host, e.g. `ping` or `script`.
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.ns.command(program)
    }

    /// `/ip4/<addr>/tcp/<port>`, for `--peer`.
    #[must_use]
    pub fn tcp_multiaddr(&self, port: u16) -> String {
        format!("/ip4/{}/tcp/{port}", self.addr())
    }

    /// Runs `program ARGS…` on this host to completion.
    ///
    /// # Panics
    ///
    /// If it cannot be started or fails, with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) {
        run_checked(self.command(program).args(args));
    }

    /// Limits `eth0`'s egress to `rate` (tc syntax: "50mbit", "400mbit") with a token
    /// bucket: `tc qdisc replace dev eth0 root tbf rate RATE burst 256kb latency 50ms`.
    /// Replaces any earlier limit; it survives [`Host::link_down`] and `link_up`.
    pub fn rate_limit(&self, rate: &str) {
        let tbf = ["qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate];
        self.run("tc", &[&tbf[..], &["burst", "256kb", "latency", "50ms"]].concat());
    }

    /// Removes a limit set by [`Host::rate_limit`].
    pub fn clear_rate_limit(&self) {
        self.run("tc", &["qdisc", "del", "dev", "eth0", "root"]);
    }

    /// Takes `eth0` down. On a veth pair the peer's end loses its carrier too, so no
    /// packet crosses in either direction until [`Host::link_up`]. The address stays.
    pub fn link_down(&self) {
        self.ns.ip(&["link", "set", "eth0", "down"]);
    }

    /// Brings `eth0` back up after [`Host::link_down`].
    pub fn link_up(&self) {
        self.ns.ip(&["link", "set", "eth0", "up"]);
    }

    /// Pulls the cable: `eth0` down for `down_for` (the sleep *is* the fault, not a
    /// wait), then up again.
    pub fn pull_cable(&self, down_for: Duration) {
        self.link_down();
        thread::sleep(down_for);
        self.link_up();
    }

    /// Moves `eth0` from its address to `new` (same /24): the old address is deleted
    /// first, so connections bound to it are dead for good (TCP; a QUIC connection may
    /// migrate to the new address instead).
    pub fn change_addr(&self, new: Ipv4Addr) {
        let (old, new_cidr) = (format!("{}/24", self.addr()), format!("{new}/24"));
        self.ns.ip(&["addr", "del", &old, "dev", "eth0"]);
        self.ns.ip(&["addr", "add", &new_cidr, "dev", "eth0"]);
        self.addr.set(new);
    }
}

/// A virtual LAN: `n` hosts with addresses 198.18.0.1/24, 198.18.0.2/24, …, multicast on
/// (so mDNS works between them), and no route anywhere else.
///
/// Two hosts are joined by one veth pair. More hosts each get a veth pair to a bridge
/// `br0` in a hub namespace (multicast snooping off, so mDNS floods to every port).
/// Everything is deleted on drop; drop the processes running in it first (declare the
/// `Lan` before the [`ChildGuard`]s).
#[derive(Debug)]
pub struct Lan {
    // Field order is drop order: the hosts, then the hub.
    hosts: Vec<Host>,
    hub: Option<Netns>,
}

impl Lan {
    /// Two hosts on one veth pair.
    #[must_use]
    pub fn pair() -> Lan {
        Lan::new(2)
    }

    /// `n` hosts (2 ≤ n ≤ 254).
    ///
    /// # Panics
    ///
    /// Without root or `ip`, in a namespace with a default route, or if `ip` fails.
    #[must_use]
    pub fn new(n: usize) -> Lan {
        assert!((2..=254).contains(&n), "a Lan has 2 to 254 hosts, not {n}");
        require_isolated_root();
        static NEXT_LAN: AtomicUsize = AtomicUsize::new(0);
        let id = NEXT_LAN.fetch_add(1, Ordering::Relaxed);

        // Each namespace is owned as soon as it exists, so a failure further on still
        // deletes everything made so far while the panic unwinds.
        let mut lan = Lan { hosts: Vec::with_capacity(n), hub: None };
        for i in 0..n {
            let role = host_role(i);
            let last_octet = u8::try_from(i + 1).expect("n ≤ 254");
            lan.hosts.push(Host {
                ns: Netns::new(id, &role),
                addr: Cell::new(Ipv4Addr::new(198, 18, 0, last_octet)),
            });
        }
        if n == 2 {
            let b = lan.hosts[1].ns.name();
            lan.hosts[0]
                .ns
                .ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b]);
        } else {
            let hub = Netns::new(id, "hub");
            hub.ip(&["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
            hub.ip(&["link", "set", "br0", "up"]);
            for (i, host) in lan.hosts.iter().enumerate() {
                let port = format!("h{i}");
                hub.ip(&[
                    "link",
                    "add",
                    &port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    host.ns.name(),
                ]);
                hub.ip(&["link", "set", &port, "master", "br0"]);
                hub.ip(&["link", "set", &port, "up"]);
            }
            lan.hub = Some(hub);
        }
        for host in &lan.hosts {
            let cidr = format!("{}/24", host.addr());
            host.ns.ip(&["addr", "add", &cidr, "dev", "eth0"]);
            host.ns.ip(&["link", "set", "eth0", "multicast", "on"]);
            host.ns.ip(&["link", "set", "eth0", "up"]);
        }
        lan
    }

    /// Host `i` (0-based; its address ends in `i + 1`).
    #[must_use]
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// All hosts.
    #[must_use]
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
}

/// "a", "b", … "z", then "h26", "h27", …
fn host_role(i: usize) -> String {
    match u8::try_from(i) {
        Ok(i) if i < 26 => char::from(b'a' + i).to_string(),
        _ => format!("h{i}"),
    }
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

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

/// How many bytes of `path` hold data: its length, but no more than the blocks it
/// occupies, so a file preallocated sparse with `set_len` does not count as written;
/// 0 while it does not exist.
#[must_use]
pub fn data_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len().min(m.blocks() * 512))
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

// ---------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------

/// `len` random bytes.
#[must_use]
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

/// Writes `len` random bytes to `path` and returns them.
///
/// # Panics
///
/// If the file cannot be written.
pub fn write_random_file(path: &Path, len: usize) -> Vec<u8> {
    let data = random_bytes(len);
    fs::write(path, &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    data
}

/// Reads a whole file, panicking with its path if that fails.
#[must_use]
pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts two byte strings are equal, reporting lengths and the first differing offset
/// rather than megabytes of bytes.
///
/// # Panics
///
/// If they differ.
pub fn assert_bytes_eq(what: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    let first = expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    panic!(
        "{what}: {} bytes expected, {} received, first difference at offset {first}",
        expected.len(),
        actual.len()
    );
}

/// Sets a path's permission bits.
///
/// # Panics
///
/// If that fails.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Makes `parent/name`, a tree with what a directory transfer must keep, and returns its
/// path:
///
/// ```text
/// name/                    0755
/// ├── bin/                 0755
/// │   └── run.sh           0755
/// ├── secret.txt           0600
/// ├── empty/               0755  (empty)
/// ├── private/             0700
/// │   └── key              0600
/// ├── sub/                 0755
/// │   ├── zero             0644  (0 bytes)
/// │   ├── note.txt         0644
/// │   ├── up -> ../secret.txt
/// │   └── deep/            0755
/// │       └── data.bin     0644  (1.5 MiB random: crosses chunk boundaries)
/// └── link -> sub/deep/data.bin
/// ```
///
/// # Panics
///
/// If any of it cannot be made.
pub fn make_sample_tree(parent: &Path, name: &str) -> PathBuf {
    let root = parent.join(name);
    let mkdir = |rel: &str| {
        let dir = root.join(rel);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    };
    let file = |rel: &str, data: &[u8], mode: u32| {
        let path = root.join(rel);
        fs::write(&path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        chmod(&path, mode);
    };
    let link = |target: &str, rel: &str| {
        let path = root.join(rel);
        symlink(target, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    };
    for dir in ["bin", "empty", "private", "sub/deep"] {
        mkdir(dir);
    }
    file("bin/run.sh", b"#!/bin/sh\necho hello\n", 0o755);
    file("secret.txt", &random_bytes(1000), 0o600);
    file("private/key", &random_bytes(32), 0o600);
    file("sub/zero", b"", 0o644);
    file("sub/note.txt", "a note, with UTF-8: é ü ß\n".as_bytes(), 0o644);
    file("sub/deep/data.bin", &random_bytes(MIB + MIB / 2), 0o644);
    link("../secret.txt", "sub/up");
    link("sub/deep/data.bin", "link");
    // Directory modes last: the umask decided them at creation.
    for (dir, mode) in [
        ("bin", 0o755),
        ("empty", 0o755),
        ("private", 0o700),
        ("sub/deep", 0o755),
        ("sub", 0o755),
        ("", 0o755),
    ] {
        chmod(&root.join(dir), mode);
    }
    root
}

/// What the tree comparison looks at for one path.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    File { mode: u32, bytes: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: PathBuf },
    Other { kind: String },
}

impl Node {
    fn describe(&self) -> String {
        match self {
            Node::File { mode, bytes } => format!("file {mode:04o}, {} bytes", bytes.len()),
            Node::Dir { mode } => format!("directory {mode:04o}"),
            Node::Symlink { target } => format!("symlink -> {}", target.display()),
            Node::Other { kind } => kind.clone(),
        }
    }
}

/// Every path under `root` ("." for the root itself), not following symlinks.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        let path = root.join(rel);
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kind = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        let node = if kind.is_symlink() {
            Node::Symlink {
                target: fs::read_link(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            }
        } else if kind.is_file() {
            Node::File { mode, bytes: read(&path) }
        } else if kind.is_dir() {
            let entries = fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for entry in entries {
                let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                walk(root, &rel.join(entry.file_name()), out);
            }
            Node::Dir { mode }
        } else {
            Node::Other { kind: format!("{kind:?}") }
        };
        out.insert(rel.to_owned(), node);
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new("."), &mut out);
    out
}

/// The differences between two trees, one line each: missing or extra paths (an empty
/// directory counts), file types, file bytes, permission bits of files and directories,
/// and symlink targets (never followed). Empty when identical.
#[must_use]
pub fn tree_diff(expected: &Path, actual: &Path) -> Vec<String> {
    let (want, got) = (snapshot(expected), snapshot(actual));
    let mut diffs = Vec::new();
    for (rel, w) in &want {
        match (w, got.get(rel)) {
            (_, None) => diffs.push(format!("{}: missing ({})", rel.display(), w.describe())),
            (_, Some(g)) if g == w => {}
            (Node::File { mode: wm, bytes: wb }, Some(Node::File { mode: gm, bytes: gb })) => {
                let mut what = Vec::new();
                if gm != wm {
                    what.push(format!("mode {gm:04o}, expected {wm:04o}"));
                }
                if gb != wb {
                    what.push(format!(
                        "contents differ ({} bytes, expected {})",
                        gb.len(),
                        wb.len()
                    ));
                }
                diffs.push(format!("{}: {}", rel.display(), what.join("; ")));
            }
            (_, Some(g)) => diffs.push(format!(
                "{}: {}, expected {}",
                rel.display(),
                g.describe(),
                w.describe()
            )),
        }
    }
    for (rel, g) in &got {
        if !want.contains_key(rel) {
            diffs.push(format!("{}: unexpected ({})", rel.display(), g.describe()));
        }
    }
    diffs
}

/// Asserts that `actual` is a faithful copy of `expected` (see [`tree_diff`]).
///
/// # Panics
///
/// With every difference, if there are any.
pub fn assert_trees_eq(expected: &Path, actual: &Path) {
    let diffs = tree_diff(expected, actual);
    assert!(
        diffs.is_empty(),
        "{} differs from {}:\n  {}",
        actual.display(),
        expected.display(),
        diffs.join("\n  ")
    );
}

/// The names in a directory, sorted.
///
/// # Panics
///
/// If it cannot be listed.
#[must_use]
pub fn list_dir(dir: &Path) -> Vec<String> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
