//! Connection limits: how many connections the node accepts, in total, per peer and per
//! remote IP, so one host cannot take every slot of a `pcp node` (or of a sender).
//!
//! libp2p's `connection_limits` behaviour counts pending and established connections
//! in total and per peer id; a peer id costs nothing, so [`IpLimit`] also counts inbound
//! connections per remote IP address (IPv6 per /64: one host is usually given a whole
//! /64, so counting its single addresses would count nothing). Both deny a connection
//! beyond the limit before any other behaviour sees it (they come first in the
//! behaviour), and a denied connection is closed at once.
//!
//! | limit                         | `pcp node` | send / receive | why |
//! |-------------------------------|-----------:|---------------:|-----|
//! | pending inbound (handshaking) |        128 |             32 | a noise + yamux handshake takes a round trip or two |
//! | established inbound           |        512 |            128 | a community node's clients, each connected for a minute at most when idle |
//! | established in total          |        640 |           none | the node's own dials (bootstrap, Kademlia, AutoNAT dial-backs) get the rest |
//! | established per peer id       |          4 |              8 | one connection carries libp2p-stream, Kademlia and the relay; TCP and QUIC dialled at once, or an AutoNAT dial-back, make two; a sender may also hold a relayed and a punched one |
//! | inbound per IP (v6: per /64)  |         32 |             32 | a few users behind one NAT; not thousands of throwaway ids from one host |
//!
//! Relayed connections are not counted per IP: their address is the relay's, whose own
//! limits apply. Connections over libp2p's memory transport have no IP and are not
//! counted either.
//!
//! # The relay of `pcp node`
//! A reservation lets a peer behind a NAT be reached through the node; a circuit is one
//! connection relayed to it. libp2p's `relay::Config::default()` counts per peer id
//! (free) and rate-limits per exact IP address (an IPv6 host has a whole /64), so one
//! host could take all 128 reservations and all 16 circuits. [`RelayLimits::SERVE`]:
//!
//! | relay limit                                   | `pcp node`                 | why |
//! |-----------------------------------------------|---------------------------:|-----|
//! | reservations in total                         |                        128 | libp2p's default: a little state per connection, and pcp peers hold one only while they wait behind a NAT |
//! | reservations per peer id                      | 1 (libp2p admits one more) | a pcp peer reserves once per relay; libp2p denies only past `count > max`, so 2 |
//! | reservations per IP (v6: per /64), at once    |                          8 | a few users behind one NAT; one host holds 1/16 of the node at most |
//! | reservation requests per peer id              |   4 at once, then 1/2 min  | renewals count too: the client renews at 3/4 of the 1 h lifetime |
//! | reservation requests per IP (v6: per /64)     |  16 at once, then 1/30 s   | a NAT's users starting together; no churn of throwaway ids from one host |
//! | reservation lifetime                          |                        1 h | libp2p's default; the client renews it |
//! | circuits in total                             |                         64 | each carries at most 128 KiB for at most 2 min (libp2p's defaults, kept: pcp moves data only over direct connections), so 8 MiB in flight at most |
//! | circuits per peer id                          | 2 (libp2p admits one more) | one rendezvous (hello, PAKE, hole punching) needs one; a retry another |
//! | circuit requests per peer id                  |   4 at once, then 1/30 s   | a receiver tries a sender once or twice |
//! | circuit requests per IP (v6: per /64)         |   6 at once, then 1/30 s   | a circuit lives 2 min at most, so one host holds at most 6 + 4 = 10 of the 64 |
//!
//! The per-IP counts use the same key as [`IpLimit`] (IPv4 address, IPv6 /64; IPv4-mapped
//! IPv6 as IPv4; none for relayed or memory connections). Reservations held per IP are
//! counted per connection ([`HeldReservations`]): admitted by the relay's last rate
//! limiter, which libp2p asks only once every other check passed (so an admitted
//! request is accepted), and released by [`IpLimit`] when that connection closes. A
//! reservation that expires on a connection that stays open is counted until it
//! closes: the count errs on the side of the node.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionClosed, ListenFailure};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId, connection_limits, relay};

/// The numbers of the table in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Inbound connections still handshaking.
    pub pending_inbound: u32,
    /// Established inbound connections.
    pub established_inbound: u32,
    /// Established connections, both ways; `None` for no limit.
    pub established_total: Option<u32>,
    /// Established connections per peer id, both ways.
    pub per_peer: u32,
    /// Inbound connections (pending or established) per remote IP, IPv6 per /64.
    pub per_ip: usize,
}

impl Limits {
    /// For `pcp node`, which serves anyone who finds it.
    pub(crate) const SERVE: Limits = Limits {
        pending_inbound: 128,
        established_inbound: 512,
        established_total: Some(640),
        per_peer: 4,
        per_ip: 32,
    };

    /// For a sender or a receiver, which only a few peers have reason to reach.
    pub(crate) const CLIENT: Limits = Limits {
        pending_inbound: 32,
        established_inbound: 128,
        established_total: None,
        per_peer: 8,
        per_ip: 32,
    };

    /// libp2p's behaviour for the limits it knows: all but the per-IP one.
    pub(crate) fn connection_limits(&self) -> connection_limits::Behaviour {
        connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(self.pending_inbound))
                .with_max_established_incoming(Some(self.established_inbound))
                .with_max_established(self.established_total)
                .with_max_established_per_peer(Some(self.per_peer)),
        )
    }
}

/// A token bucket's size and refill: `burst` requests at once, then one per `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Requests allowed at once.
    pub burst: u32,
    /// One more allowed per this much time.
    pub every: Duration,
}

/// The numbers of the relay table in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RelayLimits {
    /// Reservations held in total.
    pub reservations: usize,
    /// libp2p's `max_reservations_per_peer` (it admits one more than this).
    pub reservations_per_peer: usize,
    /// Reservations held at once per IP (IPv6: per /64).
    pub reservations_per_ip: usize,
    /// Reservation requests, renewals included, per peer id.
    pub reservation_rate_per_peer: Rate,
    /// Reservation requests, renewals included, per IP (IPv6: per /64).
    pub reservation_rate_per_ip: Rate,
    /// Circuits open in total.
    pub circuits: usize,
    /// libp2p's `max_circuits_per_peer` (it admits one more than this).
    pub circuits_per_peer: usize,
    /// Circuit requests per source peer id.
    pub circuit_rate_per_peer: Rate,
    /// Circuit requests per source IP (IPv6: per /64).
    pub circuit_rate_per_ip: Rate,
}

impl RelayLimits {
    /// For `pcp node`.
    pub(crate) const SERVE: RelayLimits = RelayLimits {
        reservations: 128,
        reservations_per_peer: 1,
        reservations_per_ip: 8,
        reservation_rate_per_peer: Rate { burst: 4, every: Duration::from_secs(120) },
        reservation_rate_per_ip: Rate { burst: 16, every: Duration::from_secs(30) },
        circuits: 64,
        circuits_per_peer: 2,
        circuit_rate_per_peer: Rate { burst: 4, every: Duration::from_secs(30) },
        circuit_rate_per_ip: Rate { burst: 6, every: Duration::from_secs(30) },
    };

    /// The relay's configuration, and the reservations it admits per IP, which the
    /// node's [`IpLimit`] MUST release as connections close ([`IpLimit::releasing`]).
    /// Lifetimes and a circuit's bytes and duration stay libp2p's defaults.
    pub(crate) fn config(&self) -> (relay::Config, HeldReservations) {
        let held = HeldReservations::new(self.reservations_per_ip);
        let config = relay::Config {
            max_reservations: self.reservations,
            max_reservations_per_peer: self.reservations_per_peer,
            reservation_rate_limiters: vec![
                Box::new(Buckets::per_peer(self.reservation_rate_per_peer)),
                Box::new(Buckets::per_ip(self.reservation_rate_per_ip)),
                // Last: libp2p asks it only when every other check passed.
                Box::new(held.clone()),
            ],
            max_circuits: self.circuits,
            max_circuits_per_peer: self.circuits_per_peer,
            circuit_src_rate_limiters: vec![
                Box::new(Buckets::per_peer(self.circuit_rate_per_peer)),
                Box::new(Buckets::per_ip(self.circuit_rate_per_ip)),
            ],
            ..relay::Config::default()
        };
        (config, held)
    }
}

/// How many keys a [`Buckets`] tracks at most; full buckets are forgotten first, and a
/// new key is refused while every tracked one is still refilling.
const MAX_BUCKETS: usize = 4096;

/// Token buckets per key (a peer id, or an IP as [`ip_key`] counts it), for the relay.
struct Buckets<K> {
    rate: Rate,
    key: fn(PeerId, &Multiaddr) -> Option<K>,
    /// Tokens left, and when they were last counted. A key absent is a full bucket.
    tokens: HashMap<K, (u32, Instant)>,
}

impl Buckets<PeerId> {
    fn per_peer(rate: Rate) -> Buckets<PeerId> {
        Buckets { rate, key: |peer, _| Some(peer), tokens: HashMap::new() }
    }
}

impl Buckets<IpAddr> {
    fn per_ip(rate: Rate) -> Buckets<IpAddr> {
        Buckets { rate, key: |_, addr| ip_key(addr), tokens: HashMap::new() }
    }
}

/// Adds the tokens earned since `since` (never past the burst).
fn refill(rate: Rate, (tokens, since): &mut (u32, Instant), now: Instant) {
    let every = rate.every.as_nanos().max(1);
    let earned = now.saturating_duration_since(*since).as_nanos() / every;
    if earned == 0 {
        return;
    }
    if u128::from(*tokens) + earned >= u128::from(rate.burst) {
        (*tokens, *since) = (rate.burst, now);
    } else {
        // Less than the burst, a u32: the casts cannot wrap.
        *tokens += earned as u32;
        *since += rate.every * earned as u32;
    }
}

impl<K: Hash + Eq> Buckets<K> {
    fn take(&mut self, key: K, now: Instant) -> bool {
        let rate = self.rate;
        if self.tokens.len() >= MAX_BUCKETS && !self.tokens.contains_key(&key) {
            self.tokens.retain(|_, b| {
                refill(rate, b, now);
                b.0 < rate.burst
            });
            if self.tokens.len() >= MAX_BUCKETS {
                return false;
            }
        }
        let bucket = self.tokens.entry(key).or_insert((rate.burst, now));
        refill(rate, bucket, now);
        match bucket.0.checked_sub(1) {
            Some(left) => {
                bucket.0 = left;
                true
            }
            None => false,
        }
    }
}

impl<K: Hash + Eq + Send> relay::RateLimiter for Buckets<K> {
    fn try_next(&mut self, peer: PeerId, addr: &Multiaddr, now: Instant) -> bool {
        match (self.key)(peer, addr) {
            Some(key) => self.take(key, now),
            // No IP (memory transport): nothing to count by.
            None => true,
        }
    }
}

/// The relay's reservations held per IP (IPv6: per /64), counted per connection, a
/// connection known by its peer id and remote address: admitted as the relay's last
/// rate limiter, released by [`IpLimit`] when the connection closes (see the module
/// docs). Cloning shares the count.
///
/// Invariant: every connection in `conns` is counted once in `per_ip`, and every count
/// is positive.
#[derive(Debug, Clone)]
pub(crate) struct HeldReservations(Arc<Mutex<Held>>);

#[derive(Debug)]
struct Held {
    max: usize,
    conns: HashMap<(PeerId, Multiaddr), IpAddr>,
    per_ip: HashMap<IpAddr, usize>,
}

impl HeldReservations {
    fn new(max: usize) -> HeldReservations {
        let held = Held { max, conns: HashMap::new(), per_ip: HashMap::new() };
        HeldReservations(Arc::new(Mutex::new(held)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `peer`'s connection from `addr` may hold a reservation: it holds one
    /// already (a renewal), or its IP holds fewer than the limit.
    fn admit(&self, peer: PeerId, addr: &Multiaddr) -> bool {
        let Some(ip) = ip_key(addr) else { return true };
        let mut held = self.lock();
        let conn = (peer, addr.clone());
        if held.conns.contains_key(&conn) {
            return true;
        }
        let max = held.max;
        let count = held.per_ip.entry(ip).or_default();
        if *count >= max {
            tracing::debug!(%ip, limit = max, "refusing a relay reservation");
            if *count == 0 {
                held.per_ip.remove(&ip);
            }
            return false;
        }
        *count += 1;
        held.conns.insert(conn, ip);
        true
    }

    /// The connection of `peer` from `addr` closed: its reservation, if any, is gone.
    fn release(&self, peer: PeerId, addr: &Multiaddr) {
        let mut held = self.lock();
        let Some(ip) = held.conns.remove(&(peer, addr.clone())) else { return };
        if let Some(count) = held.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                held.per_ip.remove(&ip);
            }
        }
    }
}

impl relay::RateLimiter for HeldReservations {
    fn try_next(&mut self, peer: PeerId, addr: &Multiaddr, _now: Instant) -> bool {
        self.admit(peer, addr)
    }
}

/// An inbound connection refused because its IP (or /64) has too many already.
#[derive(Debug, thiserror::Error)]
#[error("too many connections from {ip}: at most {limit}")]
pub(crate) struct TooManyFromIp {
    /// The address, or its /64.
    pub ip: IpAddr,
    /// The limit.
    pub limit: usize,
}

/// What inbound connections are counted under: the IPv4 address, or the IPv6 /64.
/// `None` for relayed connections and transports without an IP.
fn ip_key(remote: &Multiaddr) -> Option<IpAddr> {
    if remote.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    match remote.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(match ip.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(ip) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        }),
        _ => None,
    }
}

/// A [`NetworkBehaviour`] that denies an inbound connection when its remote IP (IPv6:
/// its /64) already has `max` inbound connections, pending or established.
///
/// Invariant: every connection in `conns` is counted once in `per_ip`, and every count
/// is positive; a connection leaves both when it fails its handshake (`ListenFailure`)
/// or closes.
#[derive(Debug)]
pub(crate) struct IpLimit {
    max: usize,
    conns: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, usize>,
    /// The relay's reservations per IP, released here as connections close.
    held: Option<HeldReservations>,
}

impl IpLimit {
    pub(crate) fn new(max: usize) -> IpLimit {
        IpLimit { max, conns: HashMap::new(), per_ip: HashMap::new(), held: None }
    }

    /// Also releases the relay's reservations of each connection that closes.
    pub(crate) fn releasing(mut self, held: Option<HeldReservations>) -> IpLimit {
        self.held = held;
        self
    }

    fn admit(&mut self, id: ConnectionId, remote: &Multiaddr) -> Result<(), TooManyFromIp> {
        let Some(ip) = ip_key(remote) else { return Ok(()) };
        let count = self.per_ip.entry(ip).or_default();
        if *count >= self.max {
            tracing::debug!(%ip, limit = self.max, "refusing an inbound connection");
            return Err(TooManyFromIp { ip, limit: self.max });
        }
        *count += 1;
        self.conns.insert(id, ip);
        Ok(())
    }

    fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.conns.remove(&id) else { return };
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

impl NetworkBehaviour for IpLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(connection_id, remote_addr).map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.release(connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                connection_id,
                peer_id,
                endpoint,
                ..
            }) => {
                self.release(connection_id);
                if let Some(held) = &self.held {
                    held.release(peer_id, endpoint.get_remote_address());
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use libp2p::core::ConnectedPoint;
    use libp2p::multiaddr::Protocol;
    use libp2p::swarm::ListenError;

    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    fn pending(limit: &mut IpLimit, id: usize, remote: &str) -> bool {
        let local = addr("/ip4/198.18.0.1/tcp/4001");
        limit
            .handle_pending_inbound_connection(
                ConnectionId::new_unchecked(id),
                &local,
                &addr(remote),
            )
            .is_ok()
    }

    fn failed(limit: &mut IpLimit, id: usize) {
        let a = addr("/ip4/198.18.0.1/tcp/4001");
        limit.on_swarm_event(FromSwarm::ListenFailure(ListenFailure {
            local_addr: &a,
            send_back_addr: &a,
            error: &ListenError::Aborted,
            connection_id: ConnectionId::new_unchecked(id),
            peer_id: None,
        }));
    }

    fn closed(limit: &mut IpLimit, id: usize) {
        let a = addr("/ip4/198.18.0.1/tcp/4001");
        let endpoint = ConnectedPoint::Listener { local_addr: a.clone(), send_back_addr: a };
        limit.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: PeerId::random(),
            connection_id: ConnectionId::new_unchecked(id),
            endpoint: &endpoint,
            cause: None,
            remaining_established: 0,
        }));
    }

    #[test]
    fn denies_beyond_the_limit_per_ip_and_frees_slots() {
        let mut limit = IpLimit::new(3);
        for id in 0..3 {
            assert!(pending(&mut limit, id, "/ip4/198.18.0.9/tcp/5000"));
        }
        assert!(!pending(&mut limit, 3, "/ip4/198.18.0.9/udp/5000/quic-v1"));
        // Another host is not affected.
        assert!(pending(&mut limit, 4, "/ip4/198.18.0.10/tcp/5000"));
        // A handshake that failed and a connection that closed both free their slot.
        failed(&mut limit, 0);
        closed(&mut limit, 1);
        assert!(pending(&mut limit, 5, "/ip4/198.18.0.9/tcp/5001"));
        assert!(pending(&mut limit, 6, "/ip4/198.18.0.9/tcp/5002"));
        assert!(!pending(&mut limit, 7, "/ip4/198.18.0.9/tcp/5003"));
        // A denied connection is reported as a listen failure too: nothing to free.
        failed(&mut limit, 7);
        assert_eq!(limit.per_ip[&"198.18.0.9".parse::<IpAddr>().expect("ip")], 3);
        for id in [2, 4, 5, 6] {
            closed(&mut limit, id);
        }
        assert!(limit.conns.is_empty() && limit.per_ip.is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let mut limit = IpLimit::new(2);
        assert!(pending(&mut limit, 0, "/ip6/2001:db8:1:2::1/tcp/1"));
        assert!(pending(&mut limit, 1, "/ip6/2001:db8:1:2:ffff::9/tcp/1"));
        assert!(!pending(&mut limit, 2, "/ip6/2001:db8:1:2:abcd::1/udp/1/quic-v1"));
        assert!(pending(&mut limit, 3, "/ip6/2001:db8:1:3::1/tcp/1"));

        assert!(pending(&mut limit, 4, "/ip4/198.18.0.9/tcp/1"));
        assert!(pending(&mut limit, 5, "/ip6/::ffff:198.18.0.9/tcp/1"));
        assert!(!pending(&mut limit, 6, "/ip4/198.18.0.9/tcp/2"));
    }

    #[test]
    fn relayed_and_memory_connections_are_not_counted() {
        let mut limit = IpLimit::new(1);
        let relayed = "/ip4/198.18.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit";
        for id in 0..5 {
            assert!(pending(&mut limit, id, relayed));
            assert!(pending(&mut limit, 10 + id, "/memory/1234"));
        }
        assert!(limit.conns.is_empty());
    }

    /// A rate as the table in the module docs writes it.
    fn rate_cell(r: Rate) -> String {
        let every = match r.every.as_secs() {
            s if s % 60 == 0 => format!("{} min", s / 60),
            s => format!("{s} s"),
        };
        format!("{} at once, then 1/{every}", r.burst)
    }

    /// Issue 14, item 9: the relay runs with the numbers the module docs give, not
    /// libp2p's defaults.
    #[test]
    fn the_relay_config_is_what_the_docs_say() {
        let l = RelayLimits::SERVE;
        let docs = include_str!("limits.rs");
        let row = |label: &str| {
            docs.lines()
                .find(|line| line.starts_with(&format!("//! | {label} ")))
                .unwrap_or_else(|| panic!("no row {label:?} in the docs"))
                .split('|')
                .nth(2)
                .expect("a value cell")
                .trim()
                .to_owned()
        };
        assert_eq!(row("reservations in total"), l.reservations.to_string());
        assert!(
            row("reservations per peer id").starts_with(&format!("{} (", l.reservations_per_peer))
        );
        assert_eq!(
            row("reservations per IP (v6: per /64), at once"),
            l.reservations_per_ip.to_string()
        );
        assert_eq!(row("reservation requests per peer id"), rate_cell(l.reservation_rate_per_peer));
        assert_eq!(
            row("reservation requests per IP (v6: per /64)"),
            rate_cell(l.reservation_rate_per_ip)
        );
        assert_eq!(row("circuits in total"), l.circuits.to_string());
        assert!(row("circuits per peer id").starts_with(&format!("{} (", l.circuits_per_peer)));
        assert_eq!(row("circuit requests per peer id"), rate_cell(l.circuit_rate_per_peer));
        assert_eq!(row("circuit requests per IP (v6: per /64)"), rate_cell(l.circuit_rate_per_ip));
        assert_eq!(row("reservation lifetime"), "1 h");

        let (c, _) = l.config();
        assert_eq!((c.max_reservations, c.max_reservations_per_peer), (128, 1));
        assert_eq!((c.max_circuits, c.max_circuits_per_peer), (64, 2));
        assert_eq!(c.reservation_duration, Duration::from_secs(3600));
        assert_eq!(c.max_circuit_duration, Duration::from_secs(120));
        assert_eq!(c.max_circuit_bytes, 128 << 10, "the 128 KiB pcp's docs rely on");
        assert_eq!(c.reservation_rate_limiters.len(), 3, "per peer, per IP, held per IP");
        assert_eq!(c.circuit_src_rate_limiters.len(), 2, "per peer, per IP");
    }

    #[test]
    fn rates_count_per_64_refill_and_forget_nothing_they_need() {
        use relay::RateLimiter;
        let mut b = Buckets::per_ip(Rate { burst: 2, every: Duration::from_secs(30) });
        let t0 = Instant::now();
        let (peer, host) = (PeerId::random(), addr("/ip6/2001:db8:1:2::1/tcp/1"));
        assert!(b.try_next(peer, &host, t0));
        // Another address of the same /64, and another peer id: the same bucket.
        assert!(b.try_next(PeerId::random(), &addr("/ip6/2001:db8:1:2::9/udp/1/quic-v1"), t0));
        assert!(!b.try_next(peer, &host, t0), "past the burst");
        assert!(b.try_next(peer, &addr("/ip6/2001:db8:1:3::1/tcp/1"), t0), "another /64");
        assert!(b.try_next(peer, &addr("/memory/7"), t0), "no IP, nothing to count");
        let t1 = t0 + Duration::from_secs(29);
        assert!(!b.try_next(peer, &host, t1), "not refilled yet");
        let t2 = t0 + Duration::from_secs(30);
        assert!(b.try_next(peer, &host, t2), "one token per 30 s");
        assert!(!b.try_next(peer, &host, t2));
        let t3 = t2 + Duration::from_secs(3600);
        assert!(b.try_next(peer, &host, t3) && b.try_next(peer, &host, t3), "full again");
        assert!(!b.try_next(peer, &host, t3), "never past the burst");

        let mut p = Buckets::per_peer(Rate { burst: 1, every: Duration::from_secs(60) });
        let a = addr("/ip4/198.18.0.9/tcp/1");
        for _ in 0..MAX_BUCKETS {
            assert!(p.try_next(PeerId::random(), &a, t0));
        }
        assert!(!p.try_next(PeerId::random(), &a, t0), "a full table takes no new peer");
        let later = t0 + Duration::from_secs(60);
        assert!(p.try_next(PeerId::random(), &a, later), "refilled buckets are forgotten");
        assert_eq!(p.tokens.len(), 1);
    }

    fn closed_from(limit: &mut IpLimit, id: usize, peer: PeerId, remote: &str) {
        let local = addr("/ip4/198.18.0.1/tcp/4001");
        let endpoint = ConnectedPoint::Listener { local_addr: local, send_back_addr: addr(remote) };
        limit.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(id),
            endpoint: &endpoint,
            cause: None,
            remaining_established: 0,
        }));
    }

    #[test]
    fn reservations_held_per_ip_are_capped_and_freed_when_their_connection_closes() {
        use relay::RateLimiter;
        let (_, held) = RelayLimits::SERVE.config();
        let mut gate = held.clone();
        let mut limit = IpLimit::new(32).releasing(Some(held));
        let now = Instant::now();
        let conns: Vec<(PeerId, String)> = (0..RelayLimits::SERVE.reservations_per_ip)
            .map(|i| (PeerId::random(), format!("/ip6/2001:db8::{i}/tcp/{}", 5000 + i)))
            .collect();
        for (peer, remote) in &conns {
            assert!(gate.try_next(*peer, &addr(remote), now));
        }
        let stranger = PeerId::random();
        let more = "/ip6/2001:db8::ff/tcp/9";
        assert!(!gate.try_next(stranger, &addr(more), now), "the /64 holds its share");
        assert!(gate.try_next(conns[0].0, &addr(&conns[0].1), now), "a renewal is no new one");
        assert!(gate.try_next(stranger, &addr("/ip4/198.18.0.9/tcp/1"), now), "another host");
        assert!(gate.try_next(stranger, &addr("/memory/3"), now), "no IP, nothing to count");

        // A connection without a reservation closing frees nothing; one with it does.
        closed_from(&mut limit, 1, PeerId::random(), "/ip6/2001:db8::77/tcp/1");
        assert!(!gate.try_next(stranger, &addr(more), now));
        closed_from(&mut limit, 2, conns[3].0, &conns[3].1);
        assert!(gate.try_next(stranger, &addr(more), now), "its slot is free again");
        assert!(!gate.try_next(PeerId::random(), &addr("/ip6/2001:db8::fe/tcp/1"), now));
    }

    /// Issue 14, item 9, end to end over loopback TCP: peers from one IP (each with its
    /// own peer id, as one host would make them) get that IP's share of the relay's
    /// reservations and no more, while the relay has room for others.
    #[tokio::test]
    async fn one_host_cannot_take_more_than_its_share_of_the_relay() {
        use futures::StreamExt;
        use libp2p::swarm::SwarmEvent;
        use libp2p::{noise, tcp, yamux};

        let config = crate::node::Config {
            listen: vec![addr("/ip4/127.0.0.1/tcp/0")],
            mdns: false,
            mdns_query_interval: Duration::from_secs(300),
            dht: None,
            serve: true,
            keypair: None,
            allow_relay: false,
        };
        let (relay_node, mut events) = crate::node::Node::start(config).expect("relay");
        let at = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(crate::node::Event::Listening(a)) = events.recv().await {
                    break a;
                }
            }
        })
        .await
        .expect("the relay listens");
        let circuit = at.with(Protocol::P2p(relay_node.peer_id())).with(Protocol::P2pCircuit);

        // A new peer id on this host asks for a reservation; it is kept (its swarm
        // polled) while the task runs. Returns whether the relay accepted.
        let reserve = |circuit: Multiaddr| async move {
            let mut swarm = libp2p::SwarmBuilder::with_new_identity()
                .with_tokio()
                .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
                .expect("tcp")
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .expect("relay client")
                .with_behaviour(|_, client| client)
                .expect("behaviour")
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                .build();
            swarm.listen_on(circuit).expect("listen through the relay");
            let accepted = loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(relay::client::Event::ReservationReqAccepted {
                        ..
                    }) => break true,
                    SwarmEvent::ListenerClosed { reason: Err(_), .. } => break false,
                    _ => {}
                }
            };
            let keep = tokio::spawn(async move {
                loop {
                    swarm.select_next_some().await;
                }
            });
            (accepted, keep)
        };
        let share = RelayLimits::SERVE.reservations_per_ip;
        assert!(share < RelayLimits::SERVE.reservations, "the relay has room for others");
        let mut kept = Vec::new();
        for i in 0..=share {
            let (accepted, keep) =
                tokio::time::timeout(Duration::from_secs(20), reserve(circuit.clone()))
                    .await
                    .expect("the relay answers");
            assert_eq!(accepted, i < share, "reservation {} of one host", i + 1);
            kept.push(keep);
        }
        for k in kept {
            k.abort();
        }
    }
}
