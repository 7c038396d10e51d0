//! Network namespaces: [`Netns`] (one namespace, deleted on drop), [`Host`] (a namespace
//! with an address on `eth0`, which runs `pcp` and takes faults), and [`Lan`] (hosts on
//! one virtual Ethernet segment).
//!
//! Every namespace is made through [`Netns::new`], which first checks that this process
//! is root inside a network namespace without a default route (`tests/isolated`), so a
//! test never makes a namespace, or runs `pcp`, next to the host's real network.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use super::process::{clean_env, pcp_bin, run_checked};

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
                       `tests/isolated cargo test --locked -- --include-ignored` (or `.ci/run`)";
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
    check_no_default_route(HOW)
}

/// Panics with a clear message unless this network namespace has no default route, so
/// that a `pcp` run here, on loopback, cannot reach a real network (`tests/isolated`).
/// For tests that run pcp in the current namespace instead of making their own.
pub fn require_isolated() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    const HOW: &str = "these tests run pcp on loopback in a fresh network namespace: \
                       `tests/isolated cargo test …` (or `.ci/run`)";
    if let Err(why) = CHECK.get_or_init(|| check_no_default_route(HOW)) {
        panic!("{why}");
    }
}

fn check_no_default_route(how: &str) -> Result<(), String> {
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
                 traffic could leave the host; {how}",
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

/// A named network namespace (`ip netns add`) with `lo` up; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A number no other network of this test process has, for [`Netns::new`]: every
    /// namespace of one network gets the same, so their names stay unique and tell
    /// which namespaces belong together.
    #[must_use]
    pub fn unique_net() -> usize {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates `pcpt-<pid>-<net>-<role>` with `lo` up; `net` comes from
    /// [`Netns::unique_net`].
    ///
    /// # Panics
    ///
    /// Without root or `ip`, in a namespace with a default route, or if `ip` fails.
    #[must_use]
    pub fn new(net: usize, role: &str) -> Netns {
        require_isolated_root();
        let name = format!("pcpt-{}-{net}-{role}", std::process::id());
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

    /// Runs `ip -n <ns> ARGS…`.
    ///
    /// # Panics
    ///
    /// If it fails, with its stderr.
    pub fn ip(&self, args: &[&str]) {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// Brings interface `dev` up.
    pub fn set_up(&self, dev: &str) {
        self.ip(&["link", "set", dev, "up"]);
    }

    /// Takes interface `dev` down.
    pub fn set_down(&self, dev: &str) {
        self.ip(&["link", "set", dev, "down"]);
    }

    /// Adds a veth pair: `dev` here, `peer_dev` in `peer`, both still down (so addresses
    /// and flags can be set first).
    pub fn add_veth(&self, dev: &str, peer: &Netns, peer_dev: &str) {
        self.ip(&[
            "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns", &peer.name,
        ]);
    }

    /// Plugs `peer` into `bridge`, a bridge in this namespace: a veth pair whose end
    /// `port` here is enslaved to the bridge and up, and whose end `peer_dev` in `peer`
    /// is left down for the caller to configure.
    pub fn add_bridge_port(&self, bridge: &str, port: &str, peer: &Netns, peer_dev: &str) {
        self.add_veth(port, peer, peer_dev);
        self.ip(&["link", "set", port, "master", bridge]);
        self.set_up(port);
    }

    /// Runs `program ARGS…` in this namespace to completion (see [`Netns::command`]).
    ///
    /// # Panics
    ///
    /// If it cannot be started or fails, with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) {
        run_checked(self.command(program).args(args));
    }

    /// Loads an nftables ruleset (`nft -f`) into this namespace.
    ///
    /// # Panics
    ///
    /// If the rules cannot be written to a temporary file, or `nft` rejects them.
    pub fn nft(&self, rules: &str) {
        let mut file = tempfile::Builder::new()
            .prefix(&format!("{}-", self.name))
            .suffix(".nft")
            .tempfile()
            .expect("create a temporary file for the nft rules");
        file.write_all(rules.as_bytes()).expect("write the nft rules");
        let path = file.path().to_str().expect("temporary paths are UTF-8");
        self.run("nft", &["-f", path]);
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

/// One machine: a namespace whose `eth0` has an address in a /24, on a [`Lan`] or on a
/// network a test builds itself.
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    /// A `Cell`, so that [`Host::change_addr`] works through the `&Host` a [`Lan`] lends.
    addr: Cell<Ipv4Addr>,
}

impl Host {
    /// The host in `ns`, whose `eth0` has (or is about to get) `addr`/24.
    #[must_use]
    pub fn new(ns: Netns, addr: Ipv4Addr) -> Host {
        Host { ns, addr: Cell::new(addr) }
    }

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

    /// `pcp ARGS…` on this host with the DHT allowed: [`Host::cmd`] without the
    /// `PCP_NO_DHT` that [`clean_env`] sets. Only for tests that bootstrap from their own
    /// `pcp node`s on the test network (there is no route to the public ones anyway).
    #[must_use]
    pub fn dht_cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.cmd(args);
        cmd.env_remove("PCP_NO_DHT");
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
        self.ns.run(program, args);
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
        self.ns.set_down("eth0");
    }

    /// Brings `eth0` back up after [`Host::link_down`].
    pub fn link_up(&self) {
        self.ns.set_up("eth0");
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
        let net = Netns::unique_net();

        // Each namespace is owned as soon as it exists, so a failure further on still
        // deletes everything made so far while the panic unwinds.
        let mut lan = Lan { hosts: Vec::with_capacity(n), hub: None };
        for i in 0..n {
            let last_octet = u8::try_from(i + 1).expect("n ≤ 254");
            let ns = Netns::new(net, &host_role(i));
            lan.hosts.push(Host::new(ns, Ipv4Addr::new(198, 18, 0, last_octet)));
        }
        if n == 2 {
            lan.hosts[0].ns.add_veth("eth0", &lan.hosts[1].ns, "eth0");
        } else {
            let hub = Netns::new(net, "hub");
            hub.ip(&["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
            hub.set_up("br0");
            for (i, host) in lan.hosts.iter().enumerate() {
                hub.add_bridge_port("br0", &format!("h{i}"), &host.ns, "eth0");
            }
            lan.hub = Some(hub);
        }
        for host in &lan.hosts {
            let cidr = format!("{}/24", host.addr());
            host.ns.ip(&["addr", "add", &cidr, "dev", "eth0"]);
            host.ns.ip(&["link", "set", "eth0", "multicast", "on"]);
            host.ns.set_up("eth0");
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

    /// Limits what reaches host `i` to `rate` (tc syntax: "10mbit") with a token bucket
    /// on the bridge's port toward it, as a slow link of that host alone would: the
    /// others keep their speed. Only on a bridged LAN (three hosts or more).
    ///
    /// # Panics
    ///
    /// On a pair, or if `tc` fails.
    pub fn limit_to(&self, i: usize, rate: &str) {
        let hub = self.hub.as_ref().expect("limit_to needs a bridged LAN of three hosts or more");
        let port = format!("h{i}");
        let tbf = ["qdisc", "replace", "dev", &port, "root", "tbf", "rate", rate];
        hub.run("tc", &[&tbf[..], &["burst", "256kb", "latency", "50ms"]].concat());
    }

    /// Removes a limit set by [`Lan::limit_to`].
    pub fn clear_limit(&self, i: usize) {
        let hub = self.hub.as_ref().expect("clear_limit needs a bridged LAN");
        hub.run("tc", &["qdisc", "del", "dev", &format!("h{i}"), "root"]);
    }
}

/// "a", "b", … "z", then "h26", "h27", …
fn host_role(i: usize) -> String {
    match u8::try_from(i) {
        Ok(i) if i < 26 => char::from(b'a' + i).to_string(),
        _ => format!("h{i}"),
    }
}
