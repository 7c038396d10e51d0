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

use std::net::Ipv4Addr;
use std::process::Stdio;

use tempfile::TempDir;
use util::{
    CODE, Host, MIB, Netns, Proc, StderrLines, TIMEOUT, assert_bytes_eq, read, write_random_file,
};

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
    sender: Host,
    receiver: Host,
    _r1: Netns,
    _r2: Netns,
    node: Host,
    _hub: Netns,
}

impl Net {
    fn new(symmetric: bool) -> Net {
        let n = Netns::unique_net();
        let hub = Netns::new(n, "hub");
        hub.ip(&["link", "add", "br0", "type", "bridge"]);
        hub.set_up("br0");
        let node = Netns::new(n, "node");
        let (r1, r2) = (Netns::new(n, "r1"), Netns::new(n, "r2"));
        let (sender, receiver) = (Netns::new(n, "s"), Netns::new(n, "v"));
        for (ns, port, addr) in [
            (&node, "p0", "198.18.0.1/24"),
            (&r1, "p1", "198.18.0.11/24"),
            (&r2, "p2", "198.18.0.12/24"),
        ] {
            let wan = if port == "p0" { "eth0" } else { "wan" };
            hub.add_bridge_port("br0", port, ns, wan);
            ns.set_up(wan);
            ns.ip(&["addr", "add", addr, "dev", wan]);
        }
        let masq = if symmetric { "masquerade fully-random" } else { "masquerade" };
        for (router, host, net) in [(&r1, &sender, "1"), (&r2, &receiver, "2")] {
            router.add_veth("lan", host, "eth0");
            router.set_up("lan");
            host.set_up("eth0");
            router.ip(&["addr", "add", &format!("10.0.{net}.1/24"), "dev", "lan"]);
            host.ip(&["addr", "add", &format!("10.0.{net}.2/24"), "dev", "eth0"]);
            host.ip(&["route", "add", "default", "via", &format!("10.0.{net}.1")]);
            router.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
            router.nft(&NAT_RULES.replace("MASQ", masq));
        }
        Net {
            sender: Host::new(sender, Ipv4Addr::new(10, 0, 1, 2)),
            receiver: Host::new(receiver, Ipv4Addr::new(10, 0, 2, 2)),
            _r1: r1,
            _r2: r2,
            node: Host::new(node, Ipv4Addr::new(198, 18, 0, 1)),
            _hub: hub,
        }
    }
}

/// Starts the node, the sender and the receiver; returns the receiver's exit status and
/// stderr, the sender (still running or done), the node and the data sent.
fn run_behind_nats(
    net: &Net,
    out: &std::path::Path,
    src: &std::path::Path,
) -> (std::process::ExitStatus, String, Proc, Proc) {
    let mut cmd = net.node.dht_cmd([
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

    let mut cmd = net.sender.dht_cmd([
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

    let mut cmd = net.receiver.dht_cmd([
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
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
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
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
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
