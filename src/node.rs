//! The libp2p node: one task owns the [`Swarm`]; a cloneable [`Node`] handle talks to it
//! over bounded channels, and discovery reaches the caller as [`Event`]s.
//!
//! Transports: TCP (noise, yamux), QUIC v1, libp2p's in-process memory transport
//! (noise, yamux; `/memory/N`), DNS, and circuit relay v2 (client), put together in
//! [`build`].
//! Behaviours: connection limits ([`limits`]: total, per peer, per IP; strict for
//! `pcp node`), libp2p-stream for the session streams, identify, ping, mDNS (optional),
//! Kademlia with the rendezvous of [`dht`] and the bounded provider store of [`store`]
//! (optional), AutoNAT v1, DCUtR, and for `pcp node` ([`Config::serve`]) a relay v2
//! server, its reservations and circuits limited per peer and per IP ([`limits`]). Data
//! streams are opened with a [`libp2p_stream::Control`], which needs no round trip
//! through the event loop.
//!
//! [`Node::link`] settles how a peer is connected before a session stream opens: a
//! direct connection, waiting for DCUtR to punch one (bounded) and closing the relayed
//! one, because libp2p-stream opens a stream on a random connection to the peer and a
//! relay carries 128 KiB per circuit. That preference (TCP over QUIC too) is the state
//! machine of [`links`]; the event loop feeds it facts and carries out its actions.
//!
//! Invariants:
//! - The swarm is polled only by `EventLoop::run`; nothing else touches it.
//! - The event loop never blocks on the caller: events go out with `try_send` on a
//!   bounded channel ([`EVENT_CAPACITY`]). A discovery that finds it full waits in the
//!   [`Outbox`], at most one per peer and a bounded number in all, and goes out
//!   in order as the caller reads: a flood of made-up peers cannot push the real one
//!   out (mDNS reports a peer once, so a dropped discovery would be lost for minutes).
//!   Any other event that finds the channel full is dropped with a warning: those
//!   repeat, or only inform.
//! - Closing every [`Node`] handle ends the loop.

mod build;
pub(crate) mod dht;
mod limits;
mod links;
mod outbox;
mod store;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, identify, kad, mdns, ping, relay};
use tokio::sync::{mpsc, oneshot};

use crate::event::{DhtStatus, Via};
pub(crate) use links::Link;
use links::{Action, Links};
use outbox::Outbox;

/// How often the DHT side checks for a new slot or a finished lookup round.
const DHT_TICK: Duration = Duration::from_millis(250);

/// How many events may wait for the caller in the channel.
const EVENT_CAPACITY: usize = 256;

/// Errors starting or talking to the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The transport stack could not be built.
    #[error("could not set up the network stack: {0}")]
    Transport(String),
    /// A listen address was refused.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        source: libp2p::TransportError<std::io::Error>,
    },
    /// The event loop is gone.
    #[error("the network task stopped")]
    Stopped,
}

/// How the node is set up.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Addresses to listen on; empty means all interfaces, random ports, TCP and QUIC.
    pub listen: Vec<Multiaddr>,
    /// Whether to run mDNS.
    pub mdns: bool,
    /// mDNS query interval: short for a receiver that may start before the sender.
    pub mdns_query_interval: Duration,
    /// The DHT, if any (`--no-dht` leaves it out).
    pub dht: Option<dht::Config>,
    /// Serve others, as `pcp node` does: Kademlia server mode, relay v2 server, AutoNAT
    /// server, and our listen addresses taken as external ones.
    pub serve: bool,
    /// A stable identity; a fresh one when `None`.
    pub keypair: Option<Keypair>,
    /// Let session data go over a relayed connection (`--allow-relay`).
    pub allow_relay: bool,
}

/// What the node reports.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// A peer that might be the one we want.
    Discovered {
        /// The peer.
        peer: PeerId,
        /// How it was found.
        via: Via,
    },
    /// A direct dial failed.
    DialFailed {
        /// The address dialled.
        addr: Multiaddr,
        /// Why.
        error: String,
    },
    /// We listen on a new address.
    Listening(Multiaddr),
    /// Progress of the DHT rendezvous.
    Dht(DhtStatus),
    /// The peer is reachable only through a relay, hole punching failed, and
    /// `--allow-relay` was not given.
    RelayOnly {
        /// The peer.
        peer: PeerId,
    },
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    // The limits come first, so a connection they deny reaches no other behaviour.
    limits: libp2p::connection_limits::Behaviour,
    ip_limit: limits::IpLimit,
    stream: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    kad: Toggle<kad::Behaviour<store::ProviderStore>>,
    autonat: Toggle<autonat::Behaviour>,
    relay_client: relay::client::Behaviour,
    relay_server: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
}

enum Command {
    Dial {
        addr: Multiaddr,
    },
    Link {
        peer: PeerId,
        reply: oneshot::Sender<Link>,
    },
    RemoteAddr {
        peer: PeerId,
        reply: oneshot::Sender<Option<Multiaddr>>,
    },
    /// Events to report as if the swarm had produced them, all at once (tests).
    #[cfg(test)]
    Emit(Vec<Event>),
}

/// A handle on the running node.
#[derive(Clone)]
pub(crate) struct Node {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

impl Node {
    /// Builds the swarm, starts listening and spawns the event loop on the current
    /// tokio runtime.
    ///
    /// # Errors
    /// Transport set-up failures and refused listen addresses.
    pub(crate) fn start(config: Config) -> Result<(Node, mpsc::Receiver<Event>), NodeError> {
        let mut swarm = build::swarm(&config)?;
        build::listen(&mut swarm, &config.listen)?;
        Ok(spawn(swarm, &config))
    }

    /// Our peer id.
    #[must_use]
    pub(crate) fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A stream control, for opening or accepting session streams.
    #[must_use]
    pub(crate) fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Dials an address; success shows up as [`Event::Discovered`] with [`Via::Direct`],
    /// failure as [`Event::DialFailed`].
    ///
    /// # Errors
    /// [`NodeError::Stopped`] when the event loop is gone.
    pub(crate) async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.commands.send(Command::Dial { addr }).await.map_err(|_| NodeError::Stopped)
    }

    /// The remote address of our connection to `peer` (the direct one if any), for
    /// telling the user where a peer is and for per-address limits.
    ///
    /// # Errors
    /// [`NodeError::Stopped`] when the event loop is gone.
    pub(crate) async fn remote_addr(&self, peer: PeerId) -> Result<Option<Multiaddr>, NodeError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::RemoteAddr { peer, reply };
        self.commands.send(cmd).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Connects to `peer` (dialling it if need be) and settles how: a direct connection
    /// when there is one or DCUtR makes one (relayed connections to the peer are then
    /// closed, because libp2p-stream picks a connection at random and a relay carries
    /// only 128 KiB), else see [`Link`].
    ///
    /// # Errors
    /// [`NodeError::Stopped`] when the event loop is gone.
    pub(crate) async fn link(&self, peer: PeerId) -> Result<Link, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Link { peer, reply }).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Has the event loop report `events` in one go, as a burst of discoveries would.
    #[cfg(test)]
    pub(crate) async fn emit(&self, events: Vec<Event>) {
        let _ = self.commands.send(Command::Emit(events)).await;
    }
}

/// Spawns the event loop that owns `swarm` on the current tokio runtime and starts the
/// DHT side of `config`, if any.
fn spawn(swarm: Swarm<Behaviour>, config: &Config) -> (Node, mpsc::Receiver<Event>) {
    let peer_id = *swarm.local_peer_id();
    let control = swarm.behaviour().stream.new_control();
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_CAPACITY);
    let mut event_loop = EventLoop {
        swarm,
        commands: cmd_rx,
        events: Outbox::new(ev_tx),
        dials: HashMap::new(),
        dht: None,
        serve: config.serve,
        links: Links::new(config.allow_relay),
        waiters: HashMap::new(),
    };
    if let Some(mut d) = config.dht.clone().map(dht::Dht::new) {
        let events = &mut event_loop.events;
        d.start(&mut event_loop.swarm, &mut |ev| events.emit(ev));
        event_loop.dht = Some(d);
    }
    tokio::spawn(event_loop.run());
    (Node { peer_id, control, commands: cmd_tx }, ev_rx)
}

/// Owns the swarm; see the module invariants.
struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: Outbox,
    /// Outstanding `--peer` dials, by connection.
    dials: HashMap<ConnectionId, Multiaddr>,
    /// The DHT rendezvous, if any.
    dht: Option<dht::Dht>,
    /// Whether we serve others (`pcp node`).
    serve: bool,
    /// The connections to each peer and the link preference.
    links: Links,
    /// [`Node::link`] callers waiting for a peer's link to settle: exactly the peers
    /// `links` has waiting.
    waiters: HashMap<PeerId, Vec<oneshot::Sender<Link>>>,
}

impl EventLoop {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(DHT_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = tick.tick() => {
                    self.with_dht(|d, swarm, emit| d.tick(swarm, emit));
                    let actions = self.links.tick(tokio::time::Instant::now());
                    self.apply(actions);
                }
            }
            // The caller may have made room for held discoveries meanwhile (at the
            // latest, the next tick comes within DHT_TICK).
            self.events.flush();
        }
        tracing::debug!("network task done");
    }

    fn emit(&mut self, ev: Event) {
        self.events.emit(ev);
    }

    /// Runs `f` on the DHT state, if there is one, with the swarm and an emitter.
    fn with_dht(
        &mut self,
        f: impl FnOnce(&mut dht::Dht, &mut Swarm<Behaviour>, &mut dyn FnMut(Event)),
    ) {
        if let Some(d) = self.dht.as_mut() {
            let events = &mut self.events;
            f(d, &mut self.swarm, &mut |ev| events.emit(ev));
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { addr } => self.dial(addr),
            #[cfg(test)]
            Command::Emit(events) => {
                for ev in events {
                    self.emit(ev);
                }
            }
            Command::RemoteAddr { peer, reply } => {
                let _ = reply.send(self.links.remote_addr(&peer));
            }
            Command::Link { peer, reply } => {
                self.waiters.entry(peer).or_default().push(reply);
                let connected = self.swarm.is_connected(&peer);
                let actions = self.links.want(peer, connected, tokio::time::Instant::now());
                self.apply(actions);
            }
        }
    }

    /// Dials a `--peer` address.
    fn dial(&mut self, addr: Multiaddr) {
        let peer = addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        });
        let opts = match peer {
            Some(p) => DialOpts::peer_id(p).addresses(vec![addr.clone()]).build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.links.peer_dial(id, &addr);
                self.dials.insert(id, addr);
            }
            Err(e) => self.emit(Event::DialFailed { addr, error: e.to_string() }),
        }
    }

    /// Carries out what the link preference decided, and what follows from it.
    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Dial(peer) => {
                    let opts = DialOpts::peer_id(peer)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, error = %e, "cannot dial");
                        if !matches!(e, libp2p::swarm::DialError::DialPeerConditionFalse(_)) {
                            let more = self.links.dial_refused(peer);
                            self.apply(more);
                        }
                    }
                }
                Action::DialDirect { peer, addrs } => {
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(PeerCondition::NotDialing)
                        .build();
                    let id = opts.connection_id();
                    let dial = match self.swarm.dial(opts) {
                        Ok(()) => {
                            tracing::debug!(%peer, "relayed only: dialling its listen addresses");
                            Some(id)
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "cannot dial directly");
                            None
                        }
                    };
                    let more = self.links.direct_dialled(peer, dial);
                    self.apply(more);
                }
                Action::Close(id) => {
                    self.swarm.close_connection(id);
                }
                Action::Settled { peer, link } => {
                    if link == Link::RelayOnly {
                        self.emit(Event::RelayOnly { peer });
                    }
                    for w in self.waiters.remove(&peer).unwrap_or_default() {
                        let _ = w.send(link);
                    }
                }
            }
        }
    }

    /// Hands each swarm event to its handler.
    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                self.on_connected(peer_id, connection_id, &endpoint);
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, .. } => {
                self.links.closed(peer_id, connection_id);
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                tracing::trace!(peer = ?peer_id, %error, "outgoing connection failed");
                if let Some(addr) = self.dials.remove(&connection_id) {
                    self.emit(Event::DialFailed { addr, error: error.to_string() });
                }
                self.with_dht(|d, _, emit| d.on_dial_failed(peer_id, connection_id, emit));
                let connected = peer_id.is_some_and(|p| self.swarm.is_connected(&p));
                let actions = self.links.dial_failed(peer_id, connection_id, connected);
                self.apply(actions);
            }
            SwarmEvent::NewListenAddr { address, .. } => self.on_listen_addr(address),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::debug!(%address, "external address confirmed");
                self.with_dht(|d, swarm, emit| d.tick(swarm, emit));
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    /// Hands each behaviour's event to its handler.
    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Dcutr(ev) => match ev.result {
                Ok(_) => tracing::debug!(peer = %ev.remote_peer_id, "hole punching succeeded"),
                Err(e) => {
                    let peer = ev.remote_peer_id;
                    tracing::debug!(%peer, error = %e, "hole punching failed");
                    let actions = self.links.punch_failed(peer);
                    self.apply(actions);
                }
            },
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                let mut seen = Vec::new();
                for (peer, addr) in list {
                    tracing::trace!(%peer, %addr, "mDNS discovered");
                    if !seen.contains(&peer) {
                        seen.push(peer);
                        self.emit(Event::Discovered { peer, via: Via::Mdns });
                    }
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let actions = self.links.identified(peer_id, &info.listen_addrs);
                self.apply(actions);
                if let Some(d) = self.dht.as_mut() {
                    d.on_identify(&mut self.swarm, peer_id, &info);
                }
            }
            BehaviourEvent::Kad(ev) => self.with_dht(|d, swarm, emit| d.on_kad(swarm, ev, emit)),
            other => tracing::trace!(?other, "behaviour event"),
        }
    }

    fn on_connected(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &libp2p::core::ConnectedPoint,
    ) {
        tracing::trace!(%peer, addr = %endpoint.get_remote_address(), "connected");
        if self.dials.remove(&id).is_some() {
            self.emit(Event::Discovered { peer, via: Via::Direct });
        }
        let now = tokio::time::Instant::now();
        let actions =
            self.links.established(peer, id, remote_of(peer, endpoint), endpoint.is_relayed(), now);
        self.apply(actions);
        self.with_dht(|d, swarm, emit| d.on_connected(swarm, peer, id, emit));
    }

    fn on_listen_addr(&mut self, address: Multiaddr) {
        tracing::trace!(%address, "listening");
        if self.serve && !address.iter().any(|p| p == libp2p::multiaddr::Protocol::P2pCircuit) {
            // `pcp node` is meant to be reachable where it listens.
            self.swarm.add_external_address(address.clone());
        }
        if let Some(d) = self.dht.as_ref() {
            d.on_listen_addr(&mut self.swarm, &address);
        }
        self.emit(Event::Listening(address));
    }
}

/// What a connection's remote address is taken to be: its own, except for an inbound
/// relayed connection, whose remote address names only the peer (`/p2p/ID`): there it
/// is our circuit address through the relay, then the peer, so that the relay it came
/// through shows (the sender counts handshakes and wrong codes per relay).
fn remote_of(peer: PeerId, endpoint: &libp2p::core::ConnectedPoint) -> Multiaddr {
    match endpoint {
        libp2p::core::ConnectedPoint::Listener { local_addr, .. } if endpoint.is_relayed() => {
            local_addr.clone().with(libp2p::multiaddr::Protocol::P2p(peer))
        }
        _ => endpoint.get_remote_address().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Transport;

    #[test]
    fn an_inbound_relayed_connection_names_its_relay() {
        let peer = PeerId::random();
        let local: Multiaddr = "/ip4/198.18.0.9/tcp/4001/p2p-circuit".parse().expect("addr");
        let relayed = libp2p::core::ConnectedPoint::Listener {
            local_addr: local.clone(),
            send_back_addr: Multiaddr::empty().with(libp2p::multiaddr::Protocol::P2p(peer)),
        };
        let addr = remote_of(peer, &relayed);
        assert_eq!(addr, local.with(libp2p::multiaddr::Protocol::P2p(peer)));
        assert_eq!(Transport::of(&addr), Transport::Relayed);
        let direct: Multiaddr = "/ip4/198.18.0.2/tcp/5000".parse().expect("addr");
        let plain = libp2p::core::ConnectedPoint::Listener {
            local_addr: "/ip4/198.18.0.1/tcp/4001".parse().expect("addr"),
            send_back_addr: direct.clone(),
        };
        assert_eq!(remote_of(peer, &plain), direct);
    }
}
