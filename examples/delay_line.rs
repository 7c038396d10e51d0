//! The tests' delay line (`tests/util/delay.rs`) as a process, for benches written in
//! shell (issue 16): it forwards every Ethernet frame between two interfaces of a
//! router namespace a set time later, until it is killed.
//!
//! ```text
//! delay_line ROUTER_NETNS END_A END_B MS_A_TO_B MS_B_TO_A [LOSS_A_TO_B LOSS_B_TO_A [SEED]]
//! ```
//!
//! Run it as root from any namespace: it opens its sockets in `/run/netns/ROUTER_NETNS`
//! (`ip netns add`). The hosts' ends facing it need their offloads off first:
//! `ip netns exec HOST ethtool -K eth0 tx off tso off gso off`. Losses are shares
//! (0.01 = 1 %). It prints the frame counts of each direction every 10 s on stderr.
//! Build it with `cargo build --release --example delay_line`.
#![allow(dead_code, unreachable_pub)] // the module is shared with the tests, which use all of it

#[path = "../tests/util/delay.rs"]
mod delay;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use delay::{DelayLine, Link};

const USAGE: &str = "usage: delay_line ROUTER_NETNS END_A END_B MS_A_TO_B MS_B_TO_A \
                     [LOSS_A_TO_B LOSS_B_TO_A [SEED]]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((router, end_a, end_b, link)) = parse(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let line = DelayLine::start(router, end_a, end_b, link);
    eprintln!("delay_line: forwarding {end_a} <-> {end_b} in {router}: {link:?}");
    loop {
        thread::sleep(Duration::from_secs(10));
        for (i, name) in ["a->b", "b->a"].iter().enumerate() {
            let c = line.counters(i);
            eprintln!(
                "delay_line: {name}: read {} written {} ({} bytes) dropped {}",
                c.read.load(Ordering::Relaxed),
                c.written.load(Ordering::Relaxed),
                c.bytes.load(Ordering::Relaxed),
                c.dropped.load(Ordering::Relaxed),
            );
        }
    }
}

fn parse(args: &[String]) -> Option<(&str, &str, &str, Link)> {
    let [router, end_a, end_b, ab, ba, rest @ ..] = args else { return None };
    let ms = |s: &str| s.parse::<u64>().ok().map(Duration::from_millis);
    let share = |s: &str| s.parse::<f64>().ok().filter(|l| (0.0..=1.0).contains(l));
    let mut link = Link::rtt(Duration::ZERO);
    link.a_to_b = ms(ab)?;
    link.b_to_a = ms(ba)?;
    match rest {
        [] => {}
        [lab, lba, seed @ ..] if seed.len() <= 1 => {
            link.loss_a_to_b = share(lab)?;
            link.loss_b_to_a = share(lba)?;
            if let [seed] = seed {
                link.seed = seed.parse().ok()?;
            }
        }
        _ => return None,
    }
    Some((router, end_a, end_b, link))
}
