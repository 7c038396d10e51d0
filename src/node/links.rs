//! The link preference: which of a peer's connections carries its session, as a state
//! machine fed plain facts (a connection came up or went, a dial failed, hole punching
//! failed, identify reported addresses, time passed) that answers with [`Action`]s for
//! the event loop to carry out. It holds no swarm, so it is tested on its own.
//!
//! The preference, for a peer someone called [`Node::link`](super::Node::link) on:
//! - A direct connection wins. Relayed connections to the peer are then closed, because
//!   libp2p-stream opens a stream on a random connection to the peer and a relay carries
//!   only 128 KiB per circuit.
//! - Among direct connections TCP wins over QUIC: the QUIC ones are closed, and so is a
//!   QUIC connection that comes up later, while the peer stays connected. With only QUIC
//!   up and a `--peer` TCP dial in flight, the link waits for it, at most [`TCP_WAIT`].
//! - With only a relayed connection, `--allow-relay` takes it at once. Without it the
//!   link waits while DCUtR punches a hole and the peer's listen addresses (from
//!   identify) are dialled directly, once; it settles on [`Link::RelayOnly`] once both
//!   have failed, or after [`HOLE_PUNCH_WAIT`].
//! - Without any connection a dial that fails settles on [`Link::Unreachable`].
//!
//! Invariants: every [`Action::Settled`] names a peer that was waiting and is waiting no
//! more, so the waiters of one [`Links::want`] are answered exactly once. A fact about a
//! peer nobody waits on only updates the bookkeeping. Time comes in as an argument
//! (`now`), never from a clock read here.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use crate::event::Transport;

/// How long a link with only a direct QUIC connection waits for a `--peer` TCP dial in
/// flight.
pub(super) const TCP_WAIT: Duration = Duration::from_secs(1);

/// How long to wait for DCUtR to turn a relayed connection into a direct one.
pub(super) const HOLE_PUNCH_WAIT: Duration = Duration::from_secs(15);

/// How many of a peer's listen addresses are dialled directly at most (they come from
/// the peer).
const MAX_DIRECT_ADDRS: usize = 8;

/// What connects us to a peer, once [`Node::link`](super::Node::link) has settled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// A direct connection (any relayed one to the peer was closed).
    Direct,
    /// Only a relayed connection, and `--allow-relay` lets us use it.
    Relayed,
    /// Only a relayed connection, and hole punching failed: the data cannot go there.
    RelayOnly,
    /// The peer could not be reached at all.
    Unreachable,
}

/// What the event loop is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Dial the peer by its id, unless connected or dialling it already; if the swarm
    /// refuses for another reason, report [`Links::dial_refused`].
    Dial(PeerId),
    /// Dial these listen addresses of the peer, unless dialling it already; report the
    /// dial's connection, or `None` if refused, with [`Links::direct_dialled`].
    DialDirect {
        /// The peer.
        peer: PeerId,
        /// Its direct listen addresses (a few).
        addrs: Vec<Multiaddr>,
    },
    /// Close this connection: another one to the same peer is preferred.
    Close(ConnectionId),
    /// The link to `peer` is settled: answer whoever waits for it.
    Settled {
        /// The peer.
        peer: PeerId,
        /// How it is linked.
        link: Link,
    },
}

/// One open connection.
#[derive(Debug)]
struct Conn {
    id: ConnectionId,
    relayed: bool,
    /// What the remote address is taken to be (see `remote_of` in the parent).
    addr: Multiaddr,
}

impl Conn {
    fn is(&self, transport: Transport) -> bool {
        Transport::of(&self.addr) == transport
    }
}

/// A peer whose link is not settled yet: since when, and how far the attempts at a
/// direct connection got.
///
/// A relayed connection can win the race against the direct addresses of the same dial
/// (the swarm then drops the others), typically when we are already connected to the
/// peer's relay. DCUtR then tries to punch a hole, which fails where there is nothing
/// to punch (both sides on one LAN, or a public peer). So once identify has told us the
/// peer's listen addresses, they are dialled directly, once; the verdict
/// [`Link::RelayOnly`] waits until both that dial and DCUtR have failed (or
/// [`HOLE_PUNCH_WAIT`] has passed).
#[derive(Debug)]
struct Pending {
    since: Instant,
    /// The direct dial in flight, if any.
    direct_dial: Option<ConnectionId>,
    /// Whether the direct dial was made, or found nothing to dial.
    direct_tried: bool,
    /// Whether DCUtR reported a failure.
    punch_failed: bool,
}

impl Pending {
    /// True once nothing is left that could still make a direct connection.
    fn exhausted(&self) -> bool {
        self.punch_failed && self.direct_tried && self.direct_dial.is_none()
    }
}

/// The connections to each peer, the links waiting to settle, and what the preference
/// remembers; see the module docs.
#[derive(Debug)]
pub(super) struct Links {
    /// Whether data may go over a relay.
    allow_relay: bool,
    /// Open connections per peer.
    conns: HashMap<PeerId, Vec<Conn>>,
    /// Links waiting to settle.
    pending: HashMap<PeerId, Pending>,
    /// The direct listen addresses identify reported for peers we reach only through a
    /// relay (a few at most), until their last connection closes; see [`Pending`].
    relayed_peer_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers whose link settled on a direct TCP connection: a QUIC connection to them
    /// that comes up later is closed, so the session stream stays on TCP.
    prefer_tcp: HashSet<PeerId>,
    /// `--peer` dials to a TCP address still in flight.
    tcp_dials: HashSet<ConnectionId>,
}

impl Links {
    pub(super) fn new(allow_relay: bool) -> Links {
        Links {
            allow_relay,
            conns: HashMap::new(),
            pending: HashMap::new(),
            relayed_peer_addrs: HashMap::new(),
            prefer_tcp: HashSet::new(),
            tcp_dials: HashSet::new(),
        }
    }

    /// Someone wants the link to `peer` (`connected`: the swarm has a connection to it).
    /// A second call while the first waits joins it, keeping its start.
    pub(super) fn want(&mut self, peer: PeerId, connected: bool, now: Instant) -> Vec<Action> {
        self.pending.entry(peer).or_insert(Pending {
            since: now,
            direct_dial: None,
            direct_tried: false,
            punch_failed: false,
        });
        if !connected {
            return vec![Action::Dial(peer)];
        }
        let mut out = Vec::new();
        self.decide(peer, now, &mut out);
        self.dial_direct(peer, &mut out);
        out
    }

    /// The [`Action::Dial`] of `peer` was refused (other than for being connected or
    /// dialling already).
    pub(super) fn dial_refused(&mut self, peer: PeerId) -> Vec<Action> {
        let mut out = Vec::new();
        self.settle(peer, Link::Unreachable, &mut out);
        out
    }

    /// The [`Action::DialDirect`] of `peer` is under way as connection `dial`, or was
    /// refused (`None`).
    pub(super) fn direct_dialled(
        &mut self,
        peer: PeerId,
        dial: Option<ConnectionId>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(pending) = self.pending.get_mut(&peer) {
            pending.direct_dial = dial;
            if pending.exhausted() {
                self.settle(peer, Link::RelayOnly, &mut out);
            }
        }
        out
    }

    /// A `--peer` dial to `addr` is under way as connection `id`.
    pub(super) fn peer_dial(&mut self, id: ConnectionId, addr: &Multiaddr) {
        if Transport::of(addr) == Transport::Tcp {
            self.tcp_dials.insert(id);
        }
    }

    /// Connection `id` to `peer` came up; `addr` is its remote address as `remote_of`
    /// in the parent takes it.
    pub(super) fn established(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        addr: Multiaddr,
        relayed: bool,
        now: Instant,
    ) -> Vec<Action> {
        self.tcp_dials.remove(&id);
        let conn = Conn { id, relayed, addr };
        let mut out = Vec::new();
        if self.prefer_tcp.contains(&peer) && conn.is(Transport::Quic) && !relayed {
            tracing::debug!(%peer, "closing a late QUIC connection: the link is on TCP");
            out.push(Action::Close(id));
        }
        self.conns.entry(peer).or_default().push(conn);
        self.decide(peer, now, &mut out);
        out
    }

    /// Connection `id` to `peer` closed.
    pub(super) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(list) = self.conns.get_mut(&peer) {
            list.retain(|c| c.id != id);
            if list.is_empty() {
                self.conns.remove(&peer);
                self.relayed_peer_addrs.remove(&peer);
                self.prefer_tcp.remove(&peer);
            }
        }
    }

    /// Outgoing connection `id` (to `peer`, when known) failed; `connected`: the swarm
    /// still has a connection to the peer.
    pub(super) fn dial_failed(
        &mut self,
        peer: Option<PeerId>,
        id: ConnectionId,
        connected: bool,
    ) -> Vec<Action> {
        self.tcp_dials.remove(&id);
        let mut out = Vec::new();
        let Some(peer) = peer else { return out };
        if !connected {
            self.settle(peer, Link::Unreachable, &mut out);
        } else if let Some(pending) = self.pending.get_mut(&peer)
            && pending.direct_dial == Some(id)
        {
            pending.direct_dial = None;
            if pending.exhausted() {
                self.settle(peer, Link::RelayOnly, &mut out);
            }
        }
        out
    }

    /// DCUtR failed to punch a hole to `peer`.
    pub(super) fn punch_failed(&mut self, peer: PeerId) -> Vec<Action> {
        let mut out = Vec::new();
        let direct = self.conns.get(&peer).is_some_and(|c| c.iter().any(|c| !c.relayed));
        if !self.allow_relay
            && !direct
            && let Some(pending) = self.pending.get_mut(&peer)
        {
            pending.punch_failed = true;
            if pending.exhausted() {
                self.settle(peer, Link::RelayOnly, &mut out);
            }
        }
        out
    }

    /// Identify told us `peer`'s listen addresses (peer input).
    pub(super) fn identified(&mut self, peer: PeerId, listen: &[Multiaddr]) -> Vec<Action> {
        let mut out = Vec::new();
        if self.relayed_only(&peer) {
            // Peer input: only plausible addresses, and only a few.
            let addrs = listen
                .iter()
                .filter(|a| super::dht::is_direct_candidate(a))
                .take(MAX_DIRECT_ADDRS)
                .cloned()
                .collect();
            self.relayed_peer_addrs.insert(peer, addrs);
            self.dial_direct(peer, &mut out);
        }
        out
    }

    /// Time passed: settles the links whose waits are over.
    pub(super) fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let peers: Vec<PeerId> = self.pending.keys().copied().collect();
        for peer in peers {
            self.decide(peer, now, &mut out);
        }
        out
    }

    /// The remote address of our connection to `peer`: the direct one if any, TCP
    /// first, as [`Links::settle`] keeps it (that is where the session runs).
    pub(super) fn remote_addr(&self, peer: &PeerId) -> Option<Multiaddr> {
        let conns = self.conns.get(peer).map(Vec::as_slice).unwrap_or_default();
        let pick = |relayed: bool| {
            let mut of_kind = conns.iter().filter(|c| c.relayed == relayed);
            of_kind.clone().find(|c| c.is(Transport::Tcp)).or_else(|| of_kind.next())
        };
        pick(false).or_else(|| pick(true)).map(|c| c.addr.clone())
    }

    /// Settles `peer`'s link if it waits and its connections and how long it has
    /// waited at `now` allow.
    fn decide(&mut self, peer: PeerId, now: Instant, out: &mut Vec<Action>) {
        let Some(pending) = self.pending.get(&peer) else { return };
        let waited = now.saturating_duration_since(pending.since);
        let conns = self.conns.get(&peer).map(Vec::as_slice).unwrap_or_default();
        let direct = conns.iter().any(|c| !c.relayed);
        let link = if direct {
            // Only QUIC so far, with a `--peer` TCP dial still in flight: wait a little
            // for it, so that the session can ride TCP (see `settle`). A failed dial, or
            // the tick after TCP_WAIT, settles it on QUIC.
            if !has_direct_tcp(conns) && !self.tcp_dials.is_empty() && waited < TCP_WAIT {
                return;
            }
            Link::Direct
        } else if conns.is_empty() {
            return;
        } else if self.allow_relay {
            Link::Relayed
        } else if waited < HOLE_PUNCH_WAIT {
            // Relayed only: DCUtR is at work; wait for it (bounded).
            return;
        } else {
            Link::RelayOnly
        };
        self.settle(peer, link, out);
    }

    /// Settles `peer`'s link on `link` if it waits, closing the connections a direct
    /// link does not ride.
    fn settle(&mut self, peer: PeerId, link: Link, out: &mut Vec<Action>) {
        if self.pending.remove(&peer).is_none() {
            return;
        }
        let conns = self.conns.get(&peer).map(Vec::as_slice).unwrap_or_default();
        let tcp = has_direct_tcp(conns);
        if link == Link::Direct {
            // Both a TCP and a QUIC connection often come up (each side may dial the
            // other), and libp2p-stream opens the session stream on one at random. Bulk
            // data moves about 1.35x as fast over TCP (noise, yamux) as over QUIC here
            // (benches/ab.sh, OLD_TRANSPORT=tcp NEW_TRANSPORT=quic), so keep TCP.
            for c in conns {
                if c.relayed {
                    tracing::debug!(%peer, "closing the relayed connection: a direct one exists");
                    out.push(Action::Close(c.id));
                } else if tcp && c.is(Transport::Quic) {
                    tracing::debug!(%peer, "closing the QUIC connection: a TCP one exists");
                    out.push(Action::Close(c.id));
                }
            }
            if tcp {
                self.prefer_tcp.insert(peer);
            }
        }
        out.push(Action::Settled { peer, link });
    }

    /// Whether every connection to `peer` is relayed (and there is one).
    fn relayed_only(&self, peer: &PeerId) -> bool {
        self.conns.get(peer).is_some_and(|c| !c.is_empty() && c.iter().all(|c| c.relayed))
    }

    /// If `peer`'s link waits on a relayed connection only and identify has told us its
    /// listen addresses, dials the direct ones, once (see [`Pending`]).
    fn dial_direct(&mut self, peer: PeerId, out: &mut Vec<Action>) {
        if !self.relayed_only(&peer) {
            return;
        }
        let Some(addrs) = self.relayed_peer_addrs.get(&peer) else { return };
        let Some(pending) = self.pending.get_mut(&peer) else { return };
        if pending.direct_tried {
            return;
        }
        pending.direct_tried = true;
        if !addrs.is_empty() {
            // The outcome comes back through `direct_dialled`, which also checks whether
            // anything is left to try.
            out.push(Action::DialDirect { peer, addrs: addrs.clone() });
        } else if pending.exhausted() {
            self.settle(peer, Link::RelayOnly, out);
        }
    }
}

/// Whether one of `conns` is a direct TCP connection.
fn has_direct_tcp(conns: &[Conn]) -> bool {
    conns.iter().any(|c| !c.relayed && c.is(Transport::Tcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("a multiaddr")
    }

    fn tcp() -> Multiaddr {
        addr("/ip4/198.18.0.2/tcp/4001")
    }

    fn quic() -> Multiaddr {
        addr("/ip4/198.18.0.2/udp/4001/quic-v1")
    }

    fn circuit() -> Multiaddr {
        addr("/ip4/198.18.0.9/tcp/4001/p2p-circuit")
    }

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    /// How the link to `peer` settled in `actions`, if it did.
    fn settled(actions: &[Action], peer: PeerId) -> Option<Link> {
        actions.iter().find_map(|a| match a {
            Action::Settled { peer: p, link } if *p == peer => Some(*link),
            _ => None,
        })
    }

    fn closed(actions: &[Action]) -> Vec<ConnectionId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Close(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tcp_is_kept_over_quic_when_both_are_up() {
        let mut links = Links::new(false);
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert!(links.established(peer, conn(1), quic(), false, t0).is_empty(), "nobody waits");
        assert!(links.established(peer, conn(2), tcp(), false, t0).is_empty());
        assert_eq!(links.remote_addr(&peer), Some(tcp()), "the TCP address, where data runs");
        let actions = links.want(peer, true, t0);
        assert_eq!(settled(&actions, peer), Some(Link::Direct));
        assert_eq!(closed(&actions), [conn(1)], "the QUIC connection goes");
        // A QUIC connection that comes up later goes too; the link stays on TCP.
        let late = links.established(peer, conn(3), quic(), false, t0);
        assert_eq!(late, [Action::Close(conn(3))]);
        // Once the peer is gone, so is the preference.
        for id in [1, 2, 3] {
            links.closed(peer, conn(id));
        }
        assert_eq!(links.remote_addr(&peer), None);
        assert!(links.established(peer, conn(4), quic(), false, t0).is_empty());
    }

    #[test]
    fn a_quic_link_waits_for_a_tcp_dial_in_flight() {
        let mut links = Links::new(false);
        let peer = PeerId::random();
        let t0 = Instant::now();
        links.peer_dial(conn(9), &tcp());
        assert_eq!(links.want(peer, false, t0), [Action::Dial(peer)]);
        let quic_up = links.established(peer, conn(1), quic(), false, t0);
        assert_eq!(settled(&quic_up, peer), None, "a TCP dial is in flight");
        assert!(links.tick(t0 + TCP_WAIT / 2).is_empty());
        let tcp_up = links.established(peer, conn(9), tcp(), false, t0 + TCP_WAIT / 2);
        assert_eq!(settled(&tcp_up, peer), Some(Link::Direct));
        assert_eq!(closed(&tcp_up), [conn(1)]);
    }

    #[test]
    fn a_quic_link_settles_on_quic_once_the_tcp_wait_is_over() {
        let mut links = Links::new(false);
        let peer = PeerId::random();
        let t0 = Instant::now();
        links.peer_dial(conn(9), &tcp());
        links.want(peer, false, t0);
        links.established(peer, conn(1), quic(), false, t0);
        assert!(links.tick(t0 + TCP_WAIT - Duration::from_millis(1)).is_empty());
        let actions = links.tick(t0 + TCP_WAIT);
        assert_eq!(actions, [Action::Settled { peer, link: Link::Direct }], "QUIC is kept");
    }

    #[test]
    fn a_failed_tcp_dial_ends_the_tcp_wait() {
        let mut links = Links::new(false);
        let peer = PeerId::random();
        let t0 = Instant::now();
        links.peer_dial(conn(9), &tcp());
        links.want(peer, false, t0);
        links.established(peer, conn(1), quic(), false, t0);
        assert!(links.dial_failed(Some(peer), conn(9), true).is_empty());
        // The next tick settles it, well before TCP_WAIT.
        let actions = links.tick(t0 + Duration::from_millis(250));
        assert_eq!(settled(&actions, peer), Some(Link::Direct));
    }

    #[test]
    fn a_relayed_link_waits_for_a_hole_punch_up_to_the_bound() {
        let mut links = Links::new(false);
        let peer = PeerId::random();
        let t0 = Instant::now();
        links.want(peer, false, t0);
        assert!(links.established(peer, conn(1), circuit(), true, t0).is_empty());
        assert!(links.tick(t0 + HOLE_PUNCH_WAIT - Duration::from_millis(1)).is_empty());
        let actions = links.tick(t0 + HOLE_PUNCH_WAIT);
        assert_eq!(actions, [Action::Settled { peer, link: Link::RelayOnly }]);
        assert!(links.tick(t0 + 2 * HOLE_PUNCH_WAIT).is_empty(), "answered once");
    }

    #[test]
    fn allow_relay_takes_the_relayed_connection_at_once() {
        let mut links = Links::new(true);
        let peer = PeerId::random();
        let t0 = Instant::now();
        links.want(peer, false, t0);
        let actions = links.established(peer, conn(1), circuit(), true, t0);
        assert_eq!(actions, [Action::Settled { peer, link: Link::Relayed }]);
        assert_eq!(links.remote_addr(&peer), Some(circuit()));
    }

    #[test]
    fn a_direct_connection_during_the_relay_wait_wins() {
        let mut links = Links::new(false);
        let peer = PeerId::random();
        let t0 = Instant::now();
        links.want(peer, false, t0);
        links.established(peer, conn(1), circuit(), true, t0);
        assert!(links.tick(t0 + HOLE_PUNCH_WAIT / 2).is_empty());
        // DCUtR punched a hole: the direct connection comes up.
        let actions = links.established(peer, conn(2), quic(), false, t0 + HOLE_PUNCH_WAIT / 2);
        assert_eq!(settled(&actions, peer), Some(Link::Direct));
        assert_eq!(closed(&actions), [conn(1)], "the relayed connection goes");
        assert_eq!(links.remote_addr(&peer), Some(quic()));
    }

    #[test]
    fn hole_punch_and_direct_dial_failing_settle_on_the_relay_before_the_bound() {
        let mut links = Links::new(false);
        let peer = PeerId::random();
        let t0 = Instant::now();
        links.want(peer, false, t0);
        links.established(peer, conn(1), circuit(), true, t0);
        let listen = [addr("/ip4/127.0.0.1/tcp/4001"), tcp(), circuit()];
        let actions = links.identified(peer, &listen);
        assert_eq!(actions, [Action::DialDirect { peer, addrs: vec![tcp()] }], "plausible only");
        assert!(links.direct_dialled(peer, Some(conn(5))).is_empty());
        assert!(links.identified(peer, &listen).is_empty(), "dialled once");
        assert!(links.punch_failed(peer).is_empty(), "the direct dial may still work");
        let actions = links.dial_failed(Some(peer), conn(5), true);
        assert_eq!(actions, [Action::Settled { peer, link: Link::RelayOnly }]);
    }

    #[test]
    fn a_hole_punch_failure_alone_waits_for_the_direct_dial() {
        let mut links = Links::new(false);
        let peer = PeerId::random();
        let t0 = Instant::now();
        links.want(peer, false, t0);
        links.established(peer, conn(1), circuit(), true, t0);
        assert!(links.punch_failed(peer).is_empty(), "identify has not spoken yet");
        // Nothing worth dialling: nothing is left to try.
        let actions = links.identified(peer, &[addr("/ip4/127.0.0.1/tcp/4001")]);
        assert_eq!(actions, [Action::Settled { peer, link: Link::RelayOnly }]);
    }

    #[test]
    fn a_refused_direct_dial_counts_as_failed() {
        let mut links = Links::new(false);
        let peer = PeerId::random();
        let t0 = Instant::now();
        links.want(peer, false, t0);
        links.established(peer, conn(1), circuit(), true, t0);
        links.punch_failed(peer);
        assert_eq!(links.identified(peer, &[tcp()]).len(), 1);
        let actions = links.direct_dialled(peer, None);
        assert_eq!(actions, [Action::Settled { peer, link: Link::RelayOnly }]);
    }

    #[test]
    fn a_peer_that_cannot_be_dialled_is_unreachable() {
        let mut links = Links::new(false);
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert_eq!(links.want(a, false, t0), [Action::Dial(a)]);
        let actions = links.dial_failed(Some(a), conn(1), false);
        assert_eq!(actions, [Action::Settled { peer: a, link: Link::Unreachable }]);
        links.want(b, false, t0);
        assert_eq!(links.dial_refused(b), [Action::Settled { peer: b, link: Link::Unreachable }]);
        assert!(links.dial_failed(Some(a), conn(1), false).is_empty(), "nobody waits");
    }

    #[test]
    fn a_connected_peer_with_a_relay_dials_its_known_addresses_at_once() {
        let mut links = Links::new(false);
        let peer = PeerId::random();
        let t0 = Instant::now();
        links.established(peer, conn(1), circuit(), true, t0);
        assert!(links.identified(peer, &[tcp()]).is_empty(), "nobody waits yet");
        let actions = links.want(peer, true, t0);
        assert_eq!(actions, [Action::DialDirect { peer, addrs: vec![tcp()] }]);
    }
}
