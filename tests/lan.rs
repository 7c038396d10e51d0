//! Checks of the test network itself (`util::Lan`), without pcp: hosts reach each other,
//! commands run without a terminal, and everything is gone after drop.
//!
//! Needs root, `ip` and `ping`; run under `tests/isolated` like every network test.

mod util;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use util::{Host, Lan, Proc};

/// One ping, with a 2 s reply deadline, from `from` to `to`.
fn ping(from: &Host, to: Ipv4Addr) {
    let mut cmd = from.command("ping");
    cmd.args(["-n", "-c1", "-W2", &to.to_string()]).stdout(Stdio::null());
    let mut ping = Proc::spawn("ping", &mut cmd);
    ping.expect_exit(0);
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
fn two_hosts_reach_each_other() {
    let lan = Lan::pair();
    assert_eq!(lan.host(0).addr(), Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(lan.host(1).addr(), Ipv4Addr::new(198, 18, 0, 2));
    ping(lan.host(0), lan.host(1).addr());
    ping(lan.host(1), lan.host(0).addr());
}

#[test]
fn four_hosts_on_a_bridge_reach_each_other() {
    let lan = Lan::new(4);
    ping(lan.host(0), lan.host(3).addr());
    ping(lan.host(2), lan.host(1).addr());
}

#[test]
fn hosts_have_no_route_off_the_lan() {
    let lan = Lan::pair();
    let mut cmd = lan.host(0).command("ip");
    cmd.args(["route", "get", "192.0.2.1"]).stdout(Stdio::null());
    let mut route = Proc::spawn("ip route get", &mut cmd);
    let stderr = route.expect_exit(2);
    assert!(stderr.contains("unreachable"), "{stderr}");
}

#[test]
fn commands_run_without_a_terminal() {
    let lan = Lan::pair();
    let mut cmd = lan.host(0).command("sh");
    cmd.args(["-c", "exec 3</dev/tty"]);
    let mut sh = Proc::spawn("sh", &mut cmd);
    let (status, stderr) = sh.finish(util::TIMEOUT);
    assert!(!status.success(), "/dev/tty opened inside a test host; stderr:\n{stderr}");
}

#[test]
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
