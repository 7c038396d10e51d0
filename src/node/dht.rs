//! Rendezvous on the Kademlia DHT: bootstrap, advertise a code's slot, look it up.
//!
//! # Key format
//!
//! For a code whose first word has BIP39 index `channel`, and a time slot `slot` (unix
//! seconds truncated to a multiple of 300, see [`crate::code::slot`]), the rendezvous
//! key is the sha2-256 multihash of the ASCII string `/pcp/{slot}/{channel}`, both
//! numbers in decimal:
//!
//! | bytes | value                                   |
//! |-------|-----------------------------------------|
//! | 0     | `0x12` (multihash code of sha2-256)     |
//! | 1     | `0x20` (digest length, 32)              |
//! | 2..34 | `sha256("/pcp/{slot}/{channel}")`       |
//!
//! It is published as a Kademlia provider record (`ADD_PROVIDER`); Go pcp's key string
//! differs (nanoseconds), and the two cannot interoperate anyway.
//!
//! # Roles
//!
//! - The sender provides the key of the current slot once it has a confirmed external
//!   address (a provider record carries only those, and is useless without one), and
//!   again whenever the slot changes.
//! - The receiver looks up the current and the previous slot, again and again until the
//!   caller stops it, and reports each provider at once: the provider's addresses live
//!   only inside the running query, so the node dials it on the spot.
//! - Both run Kademlia in client mode; `pcp node` runs it in server mode.
//! - The sender also asks every bootstrap node that speaks the relay hop protocol (every
//!   `pcp node`) for a reservation; the relay client then confirms a `/p2p-circuit`
//!   address, and the record is published again, since it carries the addresses known
//!   when it was published. A receiver behind another NAT reaches the sender there,
//!   and DCUtR takes over (see `Node::link`).
//!
//! # External addresses
//!
//! On the public network, AutoNAT (v1) probes confirm an address, or a relay
//! reservation yields a `/p2p-circuit` address. When every bootstrap address is a
//! private one (RFC 1918, RFC 6598, 198.18.0.0/15, link-local, IPv6 ULA: a group's own
//! `pcp node`s on their network), AutoNAT servers would refuse to probe (and take
//! seconds when they don't), so the node takes its own non-loopback listen addresses as
//! confirmed: on a private network they are what peers dial. That is what makes the
//! namespace tests find each other within a second.
//!
//! Depends on: [`crate::code`] for slots; the parent module owns the swarm.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm};
use sha2::{Digest, Sha256};

use super::{Behaviour, Event};
use crate::event::{DhtStatus, Via};

/// The public IPFS bootstrap nodes, the default when `--bootstrap` is not given.
pub(crate) const PUBLIC_BOOTSTRAP: [&str; 5] = [
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

/// Pause between two rounds of lookups that found nothing.
const LOOKUP_PAUSE: Duration = Duration::from_millis(500);

/// How the node takes part in the DHT.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Nodes to join through (with `/p2p/` ids where known).
    pub bootstrap: Vec<Multiaddr>,
    /// The code's channel, for send and receive; `None` for `pcp node`.
    pub channel: Option<u16>,
    /// Advertise the channel (the sender).
    pub provide: bool,
    /// Look the channel up (the receiver).
    pub lookup: bool,
    /// The time slot's length, in seconds (at least one).
    pub slot_secs: u64,
}

/// The rendezvous key of `slot` and `channel`; see the module docs.
#[must_use]
pub(crate) fn rendezvous_key(slot: u64, channel: u16) -> RecordKey {
    let digest = Sha256::digest(format!("/pcp/{slot}/{channel}").as_bytes());
    let mut mh = Vec::with_capacity(34);
    mh.extend_from_slice(&[0x12, 0x20]);
    mh.extend_from_slice(&digest);
    RecordKey::new(&mh)
}

/// True for an address that can only be reached on a private network.
#[must_use]
pub(crate) fn is_private(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => !is_global(IpAddr::V4(ip)),
        Some(Protocol::Ip6(ip)) => !is_global(IpAddr::V6(ip)),
        _ => false,
    }
}

fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_documentation()
                || ip.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

fn is_loopback_or_unspecified(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback() || ip.is_unspecified(),
        _ => false,
    }
}

/// Link-local addresses need a zone to be dialled, which multiaddrs do not carry.
fn is_link_local(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_link_local(),
        Some(Protocol::Ip6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        _ => false,
    }
}

/// True for a peer's listen address worth a direct dial from elsewhere: not relayed,
/// not loopback or unspecified, not link-local.
pub(super) fn is_direct_candidate(addr: &Multiaddr) -> bool {
    !is_loopback_or_unspecified(addr)
        && !is_link_local(addr)
        && !addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Splits a trailing `/p2p/ID` off an address.
fn split_peer(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut base = addr.clone();
    match base.pop() {
        Some(Protocol::P2p(id)) => (base, Some(id)),
        Some(other) => {
            base.push(other);
            (base, None)
        }
        None => (base, None),
    }
}

/// The DHT state the event loop drives; see the module docs.
pub(super) struct Dht {
    config: Config,
    /// Take our own listen addresses as confirmed external ones (private bootstrap).
    trust_listen: bool,
    /// How many bootstrap nodes were given (distinct peers).
    total: usize,
    /// Bootstrap peers by id, and whether we are connected to each.
    boot: HashMap<PeerId, bool>,
    /// Where each bootstrap peer was dialled, for a relay reservation through it.
    boot_addrs: HashMap<PeerId, Multiaddr>,
    /// Relays we asked for a reservation.
    relays: HashSet<PeerId>,
    /// Bootstrap dials without a known peer id.
    boot_dials: HashMap<ConnectionId, Multiaddr>,
    /// Bootstrap nodes whose dial failed.
    failed: usize,
    /// Whether the failure was reported.
    failure_reported: bool,
    /// Whether `kad.bootstrap()` ran.
    bootstrapped: bool,
    /// The slot whose record we last published, and with which external addresses (a
    /// record carries them, so a new one, such as a relay circuit, means publishing
    /// again).
    provided: Option<(u64, Vec<Multiaddr>)>,
    /// Lookups in flight.
    lookups: HashSet<QueryId>,
    /// When the next round of lookups may start.
    next_lookup: tokio::time::Instant,
    /// Peers already reported, so each is reported once per round.
    reported: HashSet<PeerId>,
}

impl Dht {
    pub(super) fn new(config: Config) -> Dht {
        let trust_listen = !config.bootstrap.is_empty() && config.bootstrap.iter().all(is_private);
        Dht {
            config,
            trust_listen,
            total: 0,
            boot: HashMap::new(),
            boot_addrs: HashMap::new(),
            relays: HashSet::new(),
            boot_dials: HashMap::new(),
            failed: 0,
            failure_reported: false,
            bootstrapped: false,
            provided: None,
            lookups: HashSet::new(),
            next_lookup: tokio::time::Instant::now(),
            reported: HashSet::new(),
        }
    }

    /// Adds the bootstrap nodes and dials them.
    pub(super) fn start(&mut self, swarm: &mut Swarm<Behaviour>, emit: &mut dyn FnMut(Event)) {
        if self.config.bootstrap.is_empty() {
            return;
        }
        // One dial per bootstrap node, with all its addresses (TCP and QUIC, say).
        let mut by_peer: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        let mut anonymous = Vec::new();
        for addr in &self.config.bootstrap {
            match split_peer(addr) {
                (base, Some(p)) => match by_peer.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, addrs)) => addrs.push(base),
                    None => by_peer.push((p, vec![base])),
                },
                (base, None) => anonymous.push(base),
            }
        }
        self.total = by_peer.len() + anonymous.len();
        let mut dials = Vec::new();
        for (p, addrs) in by_peer {
            if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
                for a in &addrs {
                    kad.add_address(&p, a.clone());
                }
            }
            self.boot.insert(p, false);
            self.boot_addrs.insert(p, addrs[0].clone());
            dials.push(DialOpts::peer_id(p).addresses(addrs).build());
        }
        for base in anonymous {
            let opts = DialOpts::unknown_peer_id().address(base.clone()).build();
            self.boot_dials.insert(opts.connection_id(), base);
            dials.push(opts);
        }
        for opts in dials {
            let id = opts.connection_id();
            if let Err(e) = swarm.dial(opts) {
                tracing::debug!(error = %e, "bootstrap dial refused");
                self.boot_dials.remove(&id);
                self.failed += 1;
            }
        }
        emit(Event::Dht(DhtStatus::Bootstrap { connected: 0, total: self.total }));
        self.check_failed(emit);
    }

    fn connected(&self) -> usize {
        self.boot.values().filter(|c| **c).count()
    }

    fn check_failed(&mut self, emit: &mut dyn FnMut(Event)) {
        let total = self.total;
        if !self.failure_reported && self.connected() == 0 && self.failed >= total {
            self.failure_reported = true;
            emit(Event::Dht(DhtStatus::BootstrapFailed { total }));
        }
    }

    /// A connection came up.
    pub(super) fn on_connected(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        id: ConnectionId,
        emit: &mut dyn FnMut(Event),
    ) {
        if let Some(addr) = self.boot_dials.remove(&id) {
            if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
                kad.add_address(&peer, addr.clone());
            }
            self.boot.insert(peer, false);
            self.boot_addrs.insert(peer, addr);
        }
        match self.boot.get_mut(&peer) {
            Some(c) if !*c => *c = true,
            _ => return,
        }
        emit(Event::Dht(DhtStatus::Bootstrap { connected: self.connected(), total: self.total }));
        if !self.bootstrapped {
            self.bootstrapped = true;
            if let Some(kad) = swarm.behaviour_mut().kad.as_mut()
                && let Err(e) = kad.bootstrap()
            {
                tracing::debug!(error = %e, "kad bootstrap");
            }
        }
        self.tick(swarm, emit);
    }

    /// An outgoing connection failed.
    pub(super) fn on_dial_failed(
        &mut self,
        peer: Option<PeerId>,
        id: ConnectionId,
        emit: &mut dyn FnMut(Event),
    ) {
        let ours = self.boot_dials.remove(&id).is_some()
            || peer.is_some_and(|p| self.boot.get(&p) == Some(&false));
        if ours {
            self.failed += 1;
            self.check_failed(emit);
        }
    }

    /// We listen on a new address.
    pub(super) fn on_listen_addr(&self, swarm: &mut Swarm<Behaviour>, addr: &Multiaddr) {
        if self.trust_listen
            && !is_loopback_or_unspecified(addr)
            && !is_link_local(addr)
            && !addr.iter().any(|p| p == Protocol::P2pCircuit)
        {
            tracing::debug!(%addr, "taking a listen address as external (private bootstrap)");
            swarm.add_external_address(addr.clone());
        }
    }

    /// Identify told us about a peer: a DHT server goes into the routing table, and a
    /// sender reserves a slot on a bootstrap node that is a relay, so that a receiver
    /// behind another NAT can reach it (and DCUtR can punch a hole from there).
    pub(super) fn on_identify(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        info: &libp2p::identify::Info,
    ) {
        if self.config.provide
            && info.protocols.contains(&libp2p::relay::HOP_PROTOCOL_NAME)
            && let Some(addr) = self.boot_addrs.get(&peer)
            && self.relays.insert(peer)
        {
            let circuit = addr.clone().with(Protocol::P2p(peer)).with(Protocol::P2pCircuit);
            match swarm.listen_on(circuit.clone()) {
                Ok(_) => tracing::debug!(%circuit, "asking the relay for a reservation"),
                Err(e) => tracing::debug!(%circuit, error = %e, "relay reservation refused"),
            }
        }
        if !info.protocols.contains(&kad::PROTOCOL_NAME) {
            return;
        }
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            for addr in &info.listen_addrs {
                if !is_loopback_or_unspecified(addr) {
                    kad.add_address(&peer, addr.clone());
                }
            }
        }
    }

    /// Once a second, and whenever something changed: (re)publish and (re)look up.
    pub(super) fn tick(&mut self, swarm: &mut Swarm<Behaviour>, emit: &mut dyn FnMut(Event)) {
        let Some(channel) = self.config.channel else { return };
        if self.connected() == 0 && !self.bootstrapped {
            return;
        }
        let current = crate::code::current_slot(self.config.slot_secs);
        let external: Vec<Multiaddr> = swarm.external_addresses().cloned().collect();
        let Some(kad) = swarm.behaviour_mut().kad.as_mut() else { return };
        let stale = self.provided.as_ref().is_none_or(|(s, a)| *s != current || *a != external);
        if self.config.provide && !external.is_empty() && stale {
            if let Some((old, _)) = self.provided.replace((current, external))
                && old != current
            {
                kad.stop_providing(&rendezvous_key(old, channel));
            }
            match kad.start_providing(rendezvous_key(current, channel)) {
                Ok(_) => emit(Event::Dht(DhtStatus::Advertising { slot: current })),
                Err(e) => tracing::warn!(error = %e, "cannot store the provider record"),
            }
        }
        if self.config.lookup
            && self.lookups.is_empty()
            && tokio::time::Instant::now() >= self.next_lookup
        {
            let previous = current.saturating_sub(self.config.slot_secs);
            self.reported.clear();
            for slot in [current, previous] {
                self.lookups.insert(kad.get_providers(rendezvous_key(slot, channel)));
            }
            emit(Event::Dht(DhtStatus::Searching { current, previous }));
        }
    }

    /// A Kademlia event.
    pub(super) fn on_kad(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        ev: kad::Event,
        emit: &mut dyn FnMut(Event),
    ) {
        let kad::Event::OutboundQueryProgressed { id, result, step, stats } = ev else {
            tracing::trace!(?ev, "kad event");
            return;
        };
        if step.last {
            // What each phase costs on a real DHT (benches/dht.sh reads these): the
            // requests it sent, how many were answered, and how long it took.
            let query = match &result {
                QueryResult::Bootstrap(_) => "bootstrap",
                QueryResult::StartProviding(_) => "publish",
                QueryResult::GetProviders(_) => "lookup",
                _ => "other",
            };
            tracing::debug!(
                query,
                requests = stats.num_requests(),
                answered = stats.num_successes(),
                failed = stats.num_failures(),
                ms = stats.duration().map_or(0, |d| d.as_millis()),
                "DHT query finished"
            );
        }
        match result {
            QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) => {
                let me = *swarm.local_peer_id();
                for peer in providers {
                    if peer == me || !self.reported.insert(peer) {
                        continue;
                    }
                    tracing::debug!(
                        %peer,
                        requests = stats.num_requests(),
                        answered = stats.num_successes(),
                        ms = stats.duration().map_or(0, |d| d.as_millis()),
                        "DHT provider found"
                    );
                    // The addresses exist only while the query runs: dial now.
                    let opts = DialOpts::peer_id(peer)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(e) = swarm.dial(opts) {
                        tracing::debug!(%peer, error = %e, "dialling a provider");
                    }
                    emit(Event::Discovered { peer, via: Via::Dht });
                }
            }
            QueryResult::GetProviders(r) => tracing::trace!(?r, "get_providers"),
            QueryResult::StartProviding(r) => {
                let slot = self.provided.as_ref().map_or(0, |(s, _)| *s);
                match r {
                    Ok(_) => emit(Event::Dht(DhtStatus::Advertised { slot, ok: true })),
                    Err(e) => {
                        tracing::debug!(error = %e, "publishing the provider record");
                        emit(Event::Dht(DhtStatus::Advertised { slot, ok: false }));
                    }
                }
            }
            QueryResult::Bootstrap(r) => tracing::trace!(?r, "kad bootstrap step"),
            other => tracing::trace!(?other, "kad query"),
        }
        if step.last && self.lookups.remove(&id) && self.lookups.is_empty() {
            self.next_lookup = tokio::time::Instant::now() + LOOKUP_PAUSE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_the_sha256_multihash_of_the_slot_string() {
        let key = rendezvous_key(1_800_000_000, 7);
        let bytes = key.to_vec();
        assert_eq!(bytes.len(), 34);
        assert_eq!(&bytes[..2], &[0x12, 0x20]);
        assert_eq!(&bytes[2..], Sha256::digest(b"/pcp/1800000000/7").as_slice());
        assert_ne!(rendezvous_key(1_800_000_300, 7), key);
        assert_ne!(rendezvous_key(1_800_000_000, 8), key);
    }

    #[test]
    fn private_addresses() {
        for a in [
            "/ip4/10.0.0.1/tcp/1",
            "/ip4/198.18.0.1/tcp/4001",
            "/ip4/192.168.1.2/udp/1/quic-v1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
        ] {
            assert!(is_private(&a.parse().expect("addr")), "{a}");
        }
        for a in [
            "/ip4/104.131.131.82/tcp/4001",
            "/dnsaddr/bootstrap.libp2p.io",
            "/ip6/2001:4860::1/tcp/1",
        ] {
            assert!(!is_private(&a.parse().expect("addr")), "{a}");
        }
    }

    #[test]
    fn public_list_parses() {
        for a in PUBLIC_BOOTSTRAP {
            let addr: Multiaddr = a.parse().expect("static multiaddr");
            assert!(split_peer(&addr).1.is_some(), "{a} has a peer id");
        }
    }
}
