//! NAT traversal: sender and receiver each behind a NAT router namespace (nftables
//! masquerade, unsolicited inbound dropped as a home router does), a `pcp node` relay and
//! DHT server on the outer segment.
//!
//! ```text
//!   sender 10.0.1.2 ── r1 (lan 10.0.1.1, wan 198.18.0.11) ─┐
//!                                                           ├─ br0 ── node 198.18.0.1
//! receiver 10.0.2.2 ── r2 (lan 10.0.2.1, wan 198.18.0.12) ─┘
//! ```
//!
//! The sender reserves a slot on the node's relay and advertises its circuit address on
//! the DHT; the receiver reaches it through the relay, and DCUtR tries to punch a hole.
//! The transfer MUST either complete over a direct connection or fail with the clear
//! relay-only message, never stall. Needs root and `nft`; run under `tests/isolated`.

mod util;

use std::process::{Command, Stdio};

use tempfile::TempDir;
use util::{
    MIB, Proc, StderrLines, TIMEOUT, assert_bytes_eq, clean_env, pcp_bin, read, write_random_file,
};

const CODE: &str = "bubble-enemy-result-increase";

/// A namespace deleted on drop.
struct Ns(String);

impl Ns {
    fn new(net: usize, role: &str) -> Ns {
        let name = format!("pcpnat-{}-{net}-{role}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Ns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        run(Command::new("ip").args(["-n", &self.0]).args(args));
    }

    fn exec(&self, program: &str, args: &[&str]) {
        run(Command::new("ip").args(["netns", "exec", &self.0, program]).args(args));
    }

    /// `pcp ARGS…` in this namespace, clean environment, DHT allowed.
    fn pcp(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("setsid");
        cmd.args(["ip", "netns", "exec", &self.0, pcp_bin()]).args(args).stdin(Stdio::null());
        clean_env(&mut cmd);
        cmd.env_remove("PCP_NO_DHT");
        cmd
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
}

/// A veth pair from `a` (named `an`) to `b` (named `bn`).
fn link(a: &Ns, an: &str, b: &Ns, bn: &str) {
    a.ip(&["link", "add", an, "type", "veth", "peer", "name", bn, "netns", &b.0]);
    a.ip(&["link", "set", an, "up"]);
    b.ip(&["link", "set", bn, "up"]);
}

/// `MASQ` is `masquerade` (ports kept where free: a "cone" NAT that can be punched) or
/// `masquerade fully-random` (a new random port per destination: symmetric, cannot).
const NAT_RULES: &str = "\
table ip nat {
  chain natpost { type nat hook postrouting priority 100; oifname \"wan\" MASQ; }
}
table inet filter {
  chain natfwd {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname \"lan\" accept
  }
  chain natin {
    type filter hook input priority 0; policy accept;
    iifname \"wan\" ct state new drop
  }
}
";

/// The topology in the module docs; field order is drop order (hosts before the hub).
struct Net {
    sender: Ns,
    receiver: Ns,
    _r1: Ns,
    _r2: Ns,
    node: Ns,
    _hub: Ns,
}

impl Net {
    fn new(symmetric: bool) -> Net {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hub = Ns::new(n, "hub");
        hub.ip(&["link", "add", "br0", "type", "bridge"]);
        hub.ip(&["link", "set", "br0", "up"]);
        let node = Ns::new(n, "node");
        let (r1, r2) = (Ns::new(n, "r1"), Ns::new(n, "r2"));
        let (sender, receiver) = (Ns::new(n, "s"), Ns::new(n, "v"));
        for (ns, port, addr) in [
            (&node, "p0", "198.18.0.1/24"),
            (&r1, "p1", "198.18.0.11/24"),
            (&r2, "p2", "198.18.0.12/24"),
        ] {
            let wan = if port == "p0" { "eth0" } else { "wan" };
            link(&hub, port, ns, wan);
            hub.ip(&["link", "set", port, "master", "br0"]);
            ns.ip(&["addr", "add", addr, "dev", wan]);
        }
        for (router, host, net) in [(&r1, &sender, "1"), (&r2, &receiver, "2")] {
            link(router, "lan", host, "eth0");
            router.ip(&["addr", "add", &format!("10.0.{net}.1/24"), "dev", "lan"]);
            host.ip(&["addr", "add", &format!("10.0.{net}.2/24"), "dev", "eth0"]);
            host.ip(&["route", "add", "default", "via", &format!("10.0.{net}.1")]);
            router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
            let rules =
                std::env::temp_dir().join(format!("pcpnat-{}-{n}-{net}.nft", std::process::id()));
            let masq = if symmetric { "masquerade fully-random" } else { "masquerade" };
            std::fs::write(&rules, NAT_RULES.replace("MASQ", masq)).expect("write the nft rules");
            router.exec("nft", &["-f", rules.to_str().expect("utf-8")]);
            let _ = std::fs::remove_file(&rules);
        }
        Net { sender, receiver, _r1: r1, _r2: r2, node, _hub: hub }
    }
}

/// Starts the node, the sender and the receiver; returns the receiver's exit status and
/// stderr, the sender (still running or done), the node and the data sent.
fn run_behind_nats(
    net: &Net,
    out: &std::path::Path,
    src: &std::path::Path,
) -> (std::process::ExitStatus, String, Proc, Proc) {
    let mut cmd = net.node.pcp(&[
        "node",
        "--listen",
        "/ip4/198.18.0.1/tcp/4001",
        "--listen",
        "/ip4/198.18.0.1/udp/4001/quic-v1",
    ]);
    cmd.stdout(Stdio::piped());
    let mut node = Proc::spawn("node", &mut cmd);
    let mut lines =
        StderrLines::spawn(node.child.stdout.take().expect("piped")).named("node stdout");
    let tcp = lines.wait_for_line(|l| l.contains("/tcp/"), TIMEOUT);
    let id = tcp.rsplit('/').next().expect("an id").to_owned();
    let boot = format!("{tcp},/ip4/198.18.0.1/udp/4001/quic-v1/p2p/{id}");

    let mut cmd = net.sender.pcp(&[
        "send",
        "--no-mdns",
        "--json",
        "--code",
        CODE,
        src.to_str().expect("utf-8"),
    ]);
    cmd.env("PCP_BOOTSTRAP", &boot).env("PCP_LOG", "pcp=debug");
    let mut sender = Proc::spawn("sender", &mut cmd);
    // Advertised with the relay circuit address: a receiver behind a NAT needs it.
    sender.stderr.wait_for_line(
        |l| l.contains("p2p-circuit") && l.contains("external address confirmed"),
        TIMEOUT,
    );

    let mut cmd = net.receiver.pcp(&[
        "receive",
        "--no-mdns",
        "--json",
        "-y",
        "-o",
        out.to_str().expect("utf-8"),
        CODE,
    ]);
    cmd.env("PCP_BOOTSTRAP", &boot).env("PCP_LOG", "pcp=debug").stdout(Stdio::null());
    let mut receiver = Proc::spawn("receiver", &mut cmd);
    let (status, rstderr) = receiver.finish(TIMEOUT);
    (status, rstderr, sender, node)
}

/// Port-preserving NATs: DCUtR punches a hole and the data goes direct (or, should the
/// punch fail on some kernel, the receiver says why and stops).
#[test]
fn behind_two_nats_the_transfer_is_hole_punched_or_fails_clearly() {
    let net = Net::new(false);
    let tmp = TempDir::new().expect("tempdir");
    let (src, out) = (tmp.path().join("in.bin"), tmp.path().join("out.bin"));
    let data = write_random_file(&src, 2 * MIB);

    let (status, rstderr, mut sender, _node) = run_behind_nats(&net, &out, &src);
    if status.success() {
        sender.expect_exit(0);
        assert_bytes_eq("received file", &data, &read(&out));
        assert!(
            rstderr.contains("closing the relayed connection"),
            "the data went over the direct connection, not the relay:\n{rstderr}"
        );
    } else {
        sender.stderr.drain_ready();
        assert_relay_only(status, &rstderr);
        eprintln!("hole punching failed here; sender:\n{}", sender.stderr.seen());
    }
}

/// Symmetric NATs (a random port per destination): punching cannot work, and the
/// receiver MUST say so and stop, not stall or push the data through the relay.
#[test]
fn behind_two_symmetric_nats_the_receiver_fails_clearly() {
    let net = Net::new(true);
    let tmp = TempDir::new().expect("tempdir");
    let (src, out) = (tmp.path().join("in.bin"), tmp.path().join("out.bin"));
    write_random_file(&src, 2 * MIB);

    let (status, rstderr, _sender, _node) = run_behind_nats(&net, &out, &src);
    assert_relay_only(status, &rstderr);
    assert!(!out.exists(), "nothing was written");
}

fn assert_relay_only(status: std::process::ExitStatus, rstderr: &str) {
    assert_eq!(status.code(), Some(1), "receiver:\n{rstderr}");
    assert!(
        rstderr.contains("reachable only through a relay") && rstderr.contains("--allow-relay"),
        "a clear relay-only message with a hint:\n{rstderr}"
    );
}
