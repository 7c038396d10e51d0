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

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionClosed, ListenFailure};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId, connection_limits};

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
}

impl IpLimit {
    pub(crate) fn new(max: usize) -> IpLimit {
        IpLimit { max, conns: HashMap::new(), per_ip: HashMap::new() }
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
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. })
            | FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.release(connection_id);
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
}
