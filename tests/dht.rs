//! Discovery through a private Kademlia DHT made of `pcp node`s, with mDNS off.
//!
//! Four hosts on one bridge (`util::Lan::new(4)`, 198.18.0.1–4): two `pcp node`s form
//! the DHT, a sender and a receiver on the other two find each other through it alone.
//! Only these local nodes are ever given as `--bootstrap`; the public list is never
//! used (and there is no route to it). `clean_env` sets `PCP_NO_DHT=1` for every test
//! process; the commands here remove it again (`Host::dht_cmd`).
//!
//! `junk_from_a_few_peer_ids_does_not_stop_a_transfer` floods a node with provider
//! records first. Its junk publisher speaks Kademlia with libp2p directly, and runs on a
//! host of its own: this test binary runs itself there again, as the `junk_publisher`
//! "test" with `PCP_TEST_JUNK_NODE` set (without it, that test does nothing).
//!
//! Needs root; run under `tests/isolated`.

mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::kad::{self, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, noise, tcp, yamux};
use tempfile::TempDir;
use util::{
    CODE, Host, Lan, MIB, Proc, StderrLines, TIMEOUT, assert_bytes_eq, read, write_random_file,
};

/// The issue's goal for the private DHT: the receiver is done within this of its start.
const DHT_BUDGET: Duration = Duration::from_secs(3);

/// A running `pcp node` and the first address it printed.
struct DhtNode {
    _proc: Proc,
    addr: String,
}

/// Starts `pcp node --listen /ip4/<host>/tcp/4001 [--bootstrap B]` and reads the first
/// address it prints on stdout.
fn start_node(host: &Host, bootstrap: Option<&str>) -> DhtNode {
    let listen = host.tcp_multiaddr(4001);
    let mut args = vec!["node", "--listen", &listen];
    if let Some(b) = bootstrap {
        args.extend(["--bootstrap", b]);
    }
    let mut cmd = host.dht_cmd(args);
    cmd.stdout(Stdio::piped());
    let mut proc = Proc::spawn("node", &mut cmd);
    let stdout = proc.child.stdout.take().expect("stdout is piped");
    let mut lines = StderrLines::spawn(stdout).named("node stdout");
    let addr = lines.wait_for_line(|l| l.contains("/p2p/"), TIMEOUT);
    assert!(addr.starts_with(&listen), "node printed {addr:?}, expected {listen}/p2p/…");
    DhtNode { _proc: proc, addr }
}

/// The JSON events a process printed with `--json`.
fn json_events(stderr: &str) -> Vec<serde_json::Value> {
    stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// `pcp send --no-mdns --json --bootstrap BOOT --code CODE SRC` on `host`, DHT allowed.
fn dht_sender(host: &Host, boot: &str, src: &Path) -> Command {
    let mut cmd =
        host.dht_cmd(["send", "--no-mdns", "--json", "--bootstrap", boot, "--code", CODE]);
    cmd.arg(src);
    cmd
}

/// `pcp receive --no-mdns --json --bootstrap BOOT -y -o OUT CODE` on `host`, DHT allowed.
fn dht_receiver(host: &Host, boot: &str, out: &Path) -> Command {
    let mut cmd = host.dht_cmd(["receive", "--no-mdns", "--json", "--bootstrap", boot, "-y", "-o"]);
    cmd.arg(out).arg(CODE);
    cmd
}

fn has_event(events: &[serde_json::Value], event: &str, phase: Option<&str>) -> bool {
    events.iter().any(|e| e["event"] == event && phase.is_none_or(|p| e["phase"] == p))
}

/// The issue's "done when": nodes on hosts 1 and 2, sender on 3, receiver on 4.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn sender_and_receiver_meet_through_two_pcp_nodes() {
    let lan = Lan::new(4);
    let tmp = TempDir::new().expect("tempdir");
    let (src, out) = (tmp.path().join("in.bin"), tmp.path().join("out.bin"));
    let data = write_random_file(&src, MIB);

    let a = start_node(lan.host(0), None);
    let b = start_node(lan.host(1), Some(&a.addr));

    let mut sender =
        Proc::spawn("sender", dht_sender(lan.host(2), &a.addr, &src).stdin(Stdio::null()));
    // The sender is findable once its record is stored.
    sender.stderr.wait_for_line(
        |l| l.contains(r#""event":"advertised""#) && l.contains(r#""ok":true"#),
        TIMEOUT,
    );

    let started = Instant::now();
    let mut receiver =
        Proc::spawn("receiver", dht_receiver(lan.host(3), &b.addr, &out).stdout(Stdio::null()));
    let rstderr = receiver.expect_exit(0);
    let took = started.elapsed();
    let sstderr = sender.expect_exit(0);
    assert_bytes_eq("received file", &data, &read(&out));

    let revents = json_events(&rstderr);
    assert!(
        revents.iter().any(|e| e["event"] == "peer_found" && e["via"] == "DHT"),
        "the receiver found the sender through the DHT:\n{rstderr}"
    );
    for (event, phase) in [
        ("bootstrap", None),
        ("phase", Some("searching_dht")),
        ("offer", None),
        ("phase", Some("transferring")),
        ("done", None),
    ] {
        assert!(
            has_event(&revents, event, phase),
            "receiver printed no {event} {phase:?}:\n{rstderr}"
        );
    }
    let sevents = json_events(&sstderr);
    assert!(has_event(&sevents, "phase", Some("advertising")), "sender:\n{sstderr}");
    assert!(has_event(&sevents, "done", None), "sender:\n{sstderr}");
    assert!(took <= DHT_BUDGET, "the receiver took {took:?}, more than {DHT_BUDGET:?}:\n{rstderr}");
    drop((a, b));
}

/// With a 3-second slot the sender re-advertises at each new slot, and a receiver that
/// starts after a rollover still finds it (current or previous slot).
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn a_slot_rollover_during_the_wait() {
    let lan = Lan::new(4);
    let tmp = TempDir::new().expect("tempdir");
    let (src, out) = (tmp.path().join("in.bin"), tmp.path().join("out.bin"));
    let data = write_random_file(&src, 100_000);

    let a = start_node(lan.host(0), None);
    let b = start_node(lan.host(1), Some(&a.addr));

    let mut cmd = dht_sender(lan.host(2), &a.addr, &src);
    cmd.env("PCP_SLOT_SECS", "3").stdin(Stdio::null());
    let mut sender = Proc::spawn("sender", &mut cmd);
    let advertising = |l: &str| l.contains(r#""phase":"advertising""#);
    let first = sender.stderr.wait_for_line(advertising, TIMEOUT);
    let second = sender.stderr.wait_for_line(|l| advertising(l) && l != first, TIMEOUT);
    assert_ne!(first, second, "a new slot was advertised");

    let mut cmd = dht_receiver(lan.host(3), &b.addr, &out);
    cmd.env("PCP_SLOT_SECS", "3").stdout(Stdio::null());
    let mut receiver = Proc::spawn("receiver", &mut cmd);
    let rstderr = receiver.expect_exit(0);
    sender.expect_exit(0);
    assert_bytes_eq("received file", &data, &read(&out));
    assert!(rstderr.contains(r#""via":"DHT""#), "found through the DHT:\n{rstderr}");
    drop((a, b));
}

/// A bootstrap node nobody answers at: the user is told, and mDNS still works.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn an_unreachable_bootstrap_is_reported_and_mdns_carries_on() {
    let lan = Lan::pair();
    let tmp = TempDir::new().expect("tempdir");
    let (src, out) = (tmp.path().join("in.bin"), tmp.path().join("out.bin"));
    let data = write_random_file(&src, 1000);
    // Nothing listens on port 9 of a host on the LAN: the dial is refused at once.
    let nowhere = "/ip4/198.18.0.2/tcp/9/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN";

    let mut sender = Proc::spawn(
        "sender",
        lan.host(0)
            .dht_cmd(["send", "--bootstrap", nowhere, "--code", CODE, src.to_str().expect("utf-8")])
            .stdin(Stdio::null()),
    );
    sender.stderr.wait_for_line(|l| l.contains("could not reach any"), TIMEOUT);
    let mut receiver = Proc::spawn(
        "receiver",
        lan.host(1)
            .dht_cmd([
                "receive",
                "--bootstrap",
                nowhere,
                "-y",
                "-o",
                out.to_str().expect("utf-8"),
                CODE,
            ])
            .stdout(Stdio::null()),
    );
    receiver.expect_exit(0);
    sender.expect_exit(0);
    assert_bytes_eq("received file", &data, &read(&out));
}

/// Where `junk_publisher` finds the node it floods (a multiaddr with `/p2p/`).
const JUNK_NODE_VAR: &str = "PCP_TEST_JUNK_NODE";

/// The issue's flood: this many junk provider records, from this many peer ids.
const JUNK_RECORDS: usize = 2000;
const JUNK_IDS: usize = 5;

/// `start_providing` calls each junk identity keeps in flight: each costs the node two
/// inbound Kademlia streams (FIND_NODE, then ADD_PROVIDER), and libp2p-kad keeps at most
/// 32 per connection.
const JUNK_IN_FLIGHT: usize = 8;

/// Issue 9, item 12: one host publishes 2,000 provider records for random keys under 5
/// throwaway peer ids to a `pcp node`, and then a sender and a receiver meet through
/// that node all the same. With libp2p-kad's `MemoryStore` (1024 keys, new ones refused)
/// the sender's record was refused and the receiver never found it.
///
/// One node serves both sides, so the receiver is already connected to the sender's
/// relay when it dials the sender; that is what made the relayed connection win the
/// race against the direct one (see `Pending` in `src/node.rs`).
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn junk_from_a_few_peer_ids_does_not_stop_a_transfer() {
    let lan = Lan::new(4);
    let tmp = TempDir::new().expect("tempdir");
    let (src, out) = (tmp.path().join("in.bin"), tmp.path().join("out.bin"));
    let data = write_random_file(&src, 100_000);
    let node = start_node(lan.host(0), None);

    // The flood, from host 4, to its end.
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = lan.host(3).command(exe);
    cmd.args(["junk_publisher", "--exact", "--include-ignored", "--nocapture"])
        .env(JUNK_NODE_VAR, &node.addr)
        .stdout(Stdio::piped());
    let mut junk = Proc::spawn("junk publisher", &mut cmd);
    let stdout = junk.child.stdout.take().expect("stdout is piped");
    let mut lines = StderrLines::spawn(stdout).named("junk publisher stdout");
    let published = lines.wait_for_line(|l| l.starts_with("junk: published"), TIMEOUT);
    junk.expect_exit(0);
    assert_eq!(
        published,
        format!("junk: published {JUNK_RECORDS} records"),
        "the junk publisher sent every record"
    );

    let mut sender =
        Proc::spawn("sender", dht_sender(lan.host(1), &node.addr, &src).stdin(Stdio::null()));
    sender.stderr.wait_for_line(
        |l| l.contains(r#""event":"advertised""#) && l.contains(r#""ok":true"#),
        TIMEOUT,
    );
    let mut receiver =
        Proc::spawn("receiver", dht_receiver(lan.host(2), &node.addr, &out).stdout(Stdio::null()));
    let rstderr = receiver.expect_exit(0);
    sender.expect_exit(0);
    assert_bytes_eq("received file", &data, &read(&out));
    assert!(rstderr.contains(r#""via":"DHT""#), "found through the DHT:\n{rstderr}");
    drop(node);
}

/// Not a test on its own: the junk publisher of
/// `junk_from_a_few_peer_ids_does_not_stop_a_transfer`, which runs this binary again on
/// a host of the test network with `PCP_TEST_JUNK_NODE` set. Without it, it does nothing.
///
/// Prints `junk: published N records` (N: the `start_providing` calls that succeeded)
/// on stdout, and exits.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn junk_publisher() {
    let Ok(node) = std::env::var(JUNK_NODE_VAR) else { return };
    let node: Multiaddr = node.parse().expect("PCP_TEST_JUNK_NODE is a multiaddr");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let published = runtime.block_on(async {
        let per_id = JUNK_RECORDS / JUNK_IDS;
        let tasks: Vec<_> =
            (0..JUNK_IDS).map(|_| tokio::spawn(publish_junk(node.clone(), per_id))).collect();
        let mut published = 0;
        for task in tasks {
            published += task.await.expect("a junk identity");
        }
        published
    });
    println!("junk: published {published} records");
}

/// Publishes `n` provider records for random keys to `node` under a fresh peer id;
/// returns how many `start_providing` calls succeeded.
async fn publish_junk(node: Multiaddr, n: usize) -> usize {
    let mut base = node.clone();
    let Some(Protocol::P2p(node_id)) = base.pop() else {
        panic!("{node} does not end in /p2p/<id>")
    };
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let store_config =
                kad::store::MemoryStoreConfig { max_provided_keys: n, ..Default::default() };
            let store = kad::store::MemoryStore::with_config(id, store_config);
            let mut kad =
                kad::Behaviour::with_config(id, store, kad::Config::new(kad::PROTOCOL_NAME));
            kad.set_mode(Some(kad::Mode::Client));
            kad.add_address(&node_id, base);
            kad
        })
        .expect("kademlia")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();

    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let (mut started, mut finished, mut ok) = (0, 0, 0);
    while finished < n {
        while started < n && started - finished < JUNK_IN_FLIGHT {
            let key = RecordKey::new(&rand::random::<[u8; 32]>());
            swarm.behaviour_mut().start_providing(key).expect("the local store has room");
            started += 1;
        }
        let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .unwrap_or_else(|_| panic!("publishing took over {TIMEOUT:?}: {finished} of {n}"));
        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
            result: QueryResult::StartProviding(result),
            ..
        }) = ev
        {
            finished += 1;
            ok += usize::from(result.is_ok());
        }
    }
    // A query succeeds once its ADD_PROVIDER is handed to the connection, not sent:
    // keep the swarm running a little so the last ones reach the node.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            swarm.select_next_some().await;
        }
    })
    .await;
    ok
}
