//! [`Wan`]: two hosts joined through a router namespace that runs a [`DelayLine`], so
//! that they are a round trip of tens or hundreds of milliseconds apart, as across the
//! internet.
//!
//! ```text
//!   host a (198.18.0.1/24)          router             host b (198.18.0.2/24)
//!   eth0 ──────────────── a0 ═══ delay line ═══ b0 ──────────────── eth0
//! ```
//!
//! The hosts share one /24 (the line forwards ARP and multicast, so mDNS works across
//! it) and have no other route. Their `eth0`s have tx checksum offload, TSO and GSO off
//! (see `delay.rs`). A rate limit is the hosts' own ([`Host::rate_limit`], a token bucket
//! on egress), as on a [`super::Lan`].

use std::net::Ipv4Addr;

use super::delay::{DelayLine, Link, offloads_off};
use super::netns::{Host, Netns};

/// Two hosts a delay line apart; everything is deleted on drop. Declare it before the
/// processes that run on it, so they are killed first.
#[derive(Debug)]
pub struct Wan {
    // Field order is drop order: the line (it takes the router's ends down), the hosts,
    // then the router.
    line: DelayLine,
    hosts: [Host; 2],
    router: Netns,
}

impl Wan {
    /// Hosts 198.18.0.1 (`host(0)`, the line's end A) and 198.18.0.2 (`host(1)`, end B)
    /// joined by `link`.
    ///
    /// # Panics
    ///
    /// Without root, `ip` or `ethtool`, in a namespace with a default route, or if a
    /// command fails.
    #[must_use]
    pub fn new(link: Link) -> Wan {
        let net = Netns::unique_net();
        let router = Netns::new(net, "r");
        let hosts = ["a", "b"].map(|role| Netns::new(net, role));
        router.add_veth("a0", &hosts[0], "eth0");
        router.add_veth("b0", &hosts[1], "eth0");
        let hosts = {
            let [a, b] = hosts;
            [Host::new(a, Ipv4Addr::new(198, 18, 0, 1)), Host::new(b, Ipv4Addr::new(198, 18, 0, 2))]
        };
        for host in &hosts {
            let ns = host.netns();
            ns.run("ethtool", &offloads_off("eth0"));
            ns.ip(&["addr", "add", &format!("{}/24", host.addr()), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "multicast", "on"]);
            ns.set_up("eth0");
        }
        let line = DelayLine::start(router.name(), "a0", "b0", link);
        Wan { line, hosts, router }
    }

    /// Host `i`: 0 is end A (198.18.0.1), 1 is end B (198.18.0.2).
    #[must_use]
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The delay line, to cut it or read its counters.
    #[must_use]
    pub fn line(&self) -> &DelayLine {
        &self.line
    }

    /// The router's namespace.
    #[must_use]
    pub fn router(&self) -> &Netns {
        &self.router
    }
}
