//! Checks of the test network itself (`util::Lan`), without pcp: hosts reach each other,
//! commands run without a terminal, everything is gone after drop, and the faults the
//! resume tests inject (`tests/resume.rs`) take effect and can be undone.
//!
//! Needs root, `ip`, `tc` and `ping`; run under `tests/isolated` like every network test.

mod util;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use std::time::Duration;

use util::{Host, Lan, Proc};

/// One ping, with a 2 s reply deadline, from `from` to `to`.
fn ping(from: &Host, to: Ipv4Addr) {
    let mut cmd = from.command("ping");
    cmd.args(["-n", "-c1", "-W2", &to.to_string()]).stdout(Stdio::null());
    let mut ping = Proc::spawn("ping", &mut cmd);
    ping.expect_exit(0);
}

/// One ping from `from` to `to` gets no reply (or cannot even be sent) within 1 s.
fn no_ping(from: &Host, to: Ipv4Addr) {
    let mut cmd = from.command("ping");
    cmd.args(["-n", "-c1", "-W1", &to.to_string()]).stdout(Stdio::null());
    let mut ping = Proc::spawn("ping", &mut cmd);
    let (status, stderr) = ping.finish(util::TIMEOUT);
    assert!(!status.success(), "{to} answered a ping from {}; stderr:\n{stderr}", from.addr());
}

/// What `tc qdisc show dev eth0` prints on `host`.
fn qdisc(host: &Host) -> String {
    let out = host.command("tc").args(["qdisc", "show", "dev", "eth0"]).output().expect("tc");
    assert!(out.status.success(), "tc qdisc show: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names `ip netns list` shows (each line is "NAME" or "NAME (id: N)").
fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn two_hosts_reach_each_other() {
    let lan = Lan::pair();
    assert_eq!(lan.host(0).addr(), Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(lan.host(1).addr(), Ipv4Addr::new(198, 18, 0, 2));
    ping(lan.host(0), lan.host(1).addr());
    ping(lan.host(1), lan.host(0).addr());
}

#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn four_hosts_on_a_bridge_reach_each_other() {
    let lan = Lan::new(4);
    ping(lan.host(0), lan.host(3).addr());
    ping(lan.host(2), lan.host(1).addr());
}

#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn hosts_have_no_route_off_the_lan() {
    let lan = Lan::pair();
    let mut cmd = lan.host(0).command("ip");
    cmd.args(["route", "get", "192.0.2.1"]).stdout(Stdio::null());
    let mut route = Proc::spawn("ip route get", &mut cmd);
    let stderr = route.expect_exit(2);
    assert!(stderr.contains("unreachable"), "{stderr}");
}

#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn commands_run_without_a_terminal() {
    let lan = Lan::pair();
    let mut cmd = lan.host(0).command("sh");
    cmd.args(["-c", "exec 3</dev/tty"]);
    let mut sh = Proc::spawn("sh", &mut cmd);
    let (status, stderr) = sh.finish(util::TIMEOUT);
    assert!(!status.success(), "/dev/tty opened inside a test host; stderr:\n{stderr}");
}

#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn namespaces_are_deleted_on_drop() {
    let lan = Lan::new(3);
    let mut names: Vec<String> = lan.hosts().iter().map(|h| h.netns().name().to_owned()).collect();
    let hub = names[0].strip_suffix("-a").expect("host 0 is role a").to_owned() + "-hub";
    names.push(hub);
    let before = netns_list();
    for name in &names {
        assert!(before.contains(name), "{name} not in `ip netns list`: {before:?}");
    }
    drop(lan);
    let after = netns_list();
    for name in &names {
        assert!(!after.contains(name), "{name} still in `ip netns list` after drop: {after:?}");
    }
}

/// A pulled cable stops traffic both ways, whichever end is taken down, and plugging it
/// back restores it.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn link_down_cuts_both_ways_and_link_up_restores() {
    let lan = Lan::pair();
    let (a, b) = (lan.host(0), lan.host(1));
    for (down, other) in [(b, a), (a, b)] {
        down.link_down();
        no_ping(a, b.addr());
        no_ping(b, a.addr());
        down.link_up();
        // The carrier and the routes come back asynchronously: allow a few seconds.
        util::wait_until("the link to come back", util::TIMEOUT, || {
            other
                .command("ping")
                .args(["-n", "-c1", "-W1", &down.addr().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        ping(down, other.addr());
    }
}

/// `pull_cable` holds the link down for the time given, then brings it back.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn pull_cable_holds_the_link_down() {
    let lan = Lan::pair();
    let (a, b) = (lan.host(0), lan.host(1));
    let start = std::time::Instant::now();
    b.pull_cable(Duration::from_millis(300));
    assert!(start.elapsed() >= Duration::from_millis(300));
    util::wait_until("the link to come back", util::TIMEOUT, || {
        a.command("ping")
            .args(["-n", "-c1", "-W1", &b.addr().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
}

/// After `change_addr` the host answers on its new address only, and `addr()` says so.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn change_addr_moves_the_host() {
    let lan = Lan::pair();
    let (a, b) = (lan.host(0), lan.host(1));
    let (old, new) = (b.addr(), Ipv4Addr::new(198, 18, 0, 12));
    b.change_addr(new);
    assert_eq!(b.addr(), new);
    ping(a, new);
    ping(b, a.addr());
    no_ping(a, old);
}

/// `rate_limit` installs a token bucket that survives the link going down and up, and
/// `clear_rate_limit` removes it. (That it really slows a transfer is checked with pcp
/// itself in `tests/resume.rs`, `rate_limit_slows_a_plain_transfer`.)
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn rate_limit_installs_a_token_bucket() {
    let lan = Lan::pair();
    let a = lan.host(0);
    a.rate_limit("50mbit");
    let shown = qdisc(a);
    assert!(shown.contains("tbf") && shown.contains("50Mbit"), "{shown}");
    a.rate_limit("400mbit");
    let shown = qdisc(a);
    assert!(shown.contains("400Mbit"), "replace did not replace: {shown}");
    a.pull_cable(Duration::from_millis(100));
    let shown = qdisc(a);
    assert!(shown.contains("tbf"), "the limit did not survive link down/up: {shown}");
    a.clear_rate_limit();
    let shown = qdisc(a);
    assert!(!shown.contains("tbf"), "still limited: {shown}");
    ping(a, lan.host(1).addr());
}
