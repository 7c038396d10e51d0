//! The libp2p node: one task owns the [`Swarm`]; a cloneable [`Node`] handle talks to it
//! over bounded channels, and discovery reaches the caller as [`Event`]s.
//!
//! Transports: TCP (noise, yamux), QUIC v1, libp2p's in-process memory transport
//! (noise, yamux; `/memory/N`), DNS, and circuit relay v2 (client).
//! Behaviours: connection limits ([`limits`]: total, per peer, per IP; strict for
//! `pcp node`), libp2p-stream for the session streams, identify, ping, mDNS (optional),
//! Kademlia with the rendezvous of [`dht`] and the bounded provider store of [`store`]
//! (optional), AutoNAT v1, DCUtR, and for `pcp node` ([`Config::serve`]) a relay v2
//! server, its reservations and circuits limited per peer and per IP ([`limits`]). Data streams are opened with a [`libp2p_stream::Control`], which needs no
//! round trip through the event loop.
//!
//! [`Node::link`] settles how a peer is connected before a session stream opens: a
//! direct connection, waiting for DCUtR to punch one (bounded) and closing the relayed
//! one, because libp2p-stream opens a stream on a random connection to the peer and a
//! relay carries 128 KiB per circuit.
//!
//! Invariants:
//! - The swarm is polled only by `EventLoop::run`; nothing else touches it.
//! - The event loop never blocks on the caller: events go out with `try_send` on a
//!   bounded channel ([`EVENT_CAPACITY`]). A discovery that finds it full waits in the
//!   [`Outbox`], at most one per peer and [`MAX_HELD_DISCOVERIES`] in all, and goes out
//!   in order as the caller reads: a flood of made-up peers cannot push the real one
//!   out (mDNS reports a peer once, so a dropped discovery would be lost for minutes).
//!   Any other event that finds the channel full is dropped with a warning: those
//!   repeat, or only inform.
//! - Closing every [`Node`] handle ends the loop.

pub(crate) mod dht;
mod limits;
mod store;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use crate::event::Transport;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle};
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, dcutr, identify, kad, mdns, noise, ping, relay, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

pub use dht::Status as DhtStatus;

/// How long a Kademlia query of `pcp send`/`receive` may run; lookups repeat anyway.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the DHT side checks for a new slot or a finished lookup round.
const DHT_TICK: Duration = Duration::from_millis(250);

/// How long an idle connection stays open. The receiver's y/n prompt runs with the
/// session stream open, so this only bounds connections nobody uses.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many events may wait for the caller in the channel.
const EVENT_CAPACITY: usize = 256;

/// How many discoveries may wait in the [`Outbox`] once the channel is full, one per
/// peer; past this, new peers are dropped with a warning.
const MAX_HELD_DISCOVERIES: usize = 16_384;

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

/// How a peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// mDNS on the local network.
    Mdns,
    /// A `--peer` address we dialled.
    Direct,
    /// A provider record on the Kademlia DHT.
    Dht,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Mdns => "mDNS",
            Via::Direct => "direct address",
            Via::Dht => "DHT",
        })
    }
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

/// What connects us to a peer, once [`Node::link`] has settled it.
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

/// The IP address in a multiaddr, if it has one.
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// How long a link with only a direct QUIC connection waits for a `--peer` TCP dial in
/// flight (see [`EventLoop::settle`]).
const TCP_WAIT: Duration = Duration::from_secs(1);

/// How long to wait for DCUtR to turn a relayed connection into a direct one.
const HOLE_PUNCH_WAIT: Duration = Duration::from_secs(15);

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
        let keypair = config.keypair.clone().unwrap_or_else(Keypair::generate_ed25519);
        let mdns_cfg =
            mdns::Config { query_interval: config.mdns_query_interval, ..mdns::Config::default() };
        let serve = config.serve;
        let with_kad = serve || config.dht.is_some();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .map_err(|e| NodeError::Transport(e.to_string()))?
            .with_quic()
            // libp2p's in-process transport: `/memory/N` addresses, for tests and for
            // programs that run both sides in one process. Unused otherwise.
            .with_other_transport(|key| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    libp2p::core::Transport::upgrade(
                        libp2p::core::transport::MemoryTransport::default(),
                        libp2p::core::upgrade::Version::V1,
                    )
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()),
                )
            })
            .map_err(|e| NodeError::Transport(e.to_string()))?
            .with_dns()
            .map_err(|e| NodeError::Transport(format!("DNS resolver: {e}")))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| NodeError::Transport(e.to_string()))?
            .with_behaviour(|key, relay_client| {
                let id = key.public().to_peer_id();
                let mdns = if config.mdns {
                    Some(mdns::tokio::Behaviour::new(mdns_cfg, id)?)
                } else {
                    None
                };
                let kad = with_kad.then(|| {
                    let mut kcfg = kad::Config::new(kad::PROTOCOL_NAME);
                    if !serve {
                        kcfg.set_query_timeout(QUERY_TIMEOUT);
                    }
                    // Records live for a slot or two; pcp re-provides per slot itself.
                    kcfg.set_provider_record_ttl(Some(Duration::from_secs(15 * 60)));
                    kcfg.set_provider_publication_interval(None);
                    let store = store::ProviderStore::new(id, store::Limits::default());
                    let mut kad = kad::Behaviour::with_config(id, store, kcfg);
                    kad.set_mode(Some(if serve { kad::Mode::Server } else { kad::Mode::Client }));
                    kad
                });
                let autonat = with_kad.then(|| {
                    autonat::Behaviour::new(
                        id,
                        autonat::Config {
                            boot_delay: Duration::from_secs(1),
                            // A group's own nodes on a private network serve it too.
                            only_global_ips: !serve,
                            ..autonat::Config::default()
                        },
                    )
                });
                // Reservations and circuits per peer and per IP: see limits.rs.
                let (relay_server, held) = serve
                    .then(|| {
                        let (config, held) = limits::RelayLimits::SERVE.config();
                        (relay::Behaviour::new(id, config), held)
                    })
                    .unzip();
                let conn_limits =
                    if serve { limits::Limits::SERVE } else { limits::Limits::CLIENT };
                Ok(Behaviour {
                    limits: conn_limits.connection_limits(),
                    ip_limit: limits::IpLimit::new(conn_limits.per_ip).releasing(held),
                    stream: libp2p_stream::Behaviour::new(),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/pcp/1".into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    mdns: mdns.into(),
                    kad: kad.into(),
                    autonat: autonat.into(),
                    relay_client,
                    relay_server: relay_server.into(),
                    dcutr: dcutr::Behaviour::new(id),
                })
            })
            .map_err(|e| NodeError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
            .build();

        let listen = if config.listen.is_empty() {
            [
                "/ip4/0.0.0.0/tcp/0",
                "/ip4/0.0.0.0/udp/0/quic-v1",
                "/ip6/::/tcp/0",
                "/ip6/::/udp/0/quic-v1",
            ]
            .iter()
            .map(|a| a.parse().expect("static multiaddr"))
            .collect()
        } else {
            config.listen.clone()
        };
        let explicit = !config.listen.is_empty();
        for addr in listen {
            if let Err(e) = swarm.listen_on(addr.clone()) {
                // The defaults include IPv6, which a host may lack; only an address
                // the user asked for is worth failing over.
                if explicit {
                    return Err(NodeError::Listen { addr, source: e });
                }
                tracing::debug!(%addr, error = %e, "default listen address unavailable");
            }
        }

        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_CAPACITY);
        let dht = config.dht.clone().map(dht::Dht::new);
        let mut event_loop = EventLoop {
            swarm,
            commands: cmd_rx,
            events: Outbox::new(ev_tx),
            dials: HashMap::new(),
            dht,
            serve,
            allow_relay: config.allow_relay,
            conns: HashMap::new(),
            remote: HashMap::new(),
            links: HashMap::new(),
            relayed_peer_addrs: HashMap::new(),
            prefer_tcp: HashSet::new(),
        };
        if let Some(mut d) = event_loop.dht.take() {
            let events = &mut event_loop.events;
            d.start(&mut event_loop.swarm, &mut |ev| events.emit(ev));
            event_loop.dht = Some(d);
        }
        tokio::spawn(event_loop.run());
        Ok((Node { peer_id, control, commands: cmd_tx }, ev_rx))
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
    /// Whether data may go over a relay.
    allow_relay: bool,
    /// Open connections per peer: id and whether it is relayed.
    conns: HashMap<PeerId, Vec<(ConnectionId, bool)>>,
    /// The remote address of each open connection.
    remote: HashMap<ConnectionId, Multiaddr>,
    /// [`Node::link`] callers waiting for a peer's connection to settle.
    links: HashMap<PeerId, Pending>,
    /// The direct listen addresses identify reported for peers we reach only through a
    /// relay (a few at most), until their last connection closes; see [`Pending`].
    relayed_peer_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers whose link settled on a direct TCP connection: a QUIC connection to them
    /// that comes up later is closed, so the session stream stays on TCP.
    prefer_tcp: HashSet<PeerId>,
}

/// A peer whose link is not settled yet: who waits, since when, and how far the
/// attempts at a direct connection got.
///
/// A relayed connection can win the race against the direct addresses of the same dial
/// (the swarm then drops the others), typically when we are already connected to the
/// peer's relay. DCUtR then tries to punch a hole, which fails where there is nothing
/// to punch (both sides on one LAN, or a public peer). So once identify has told us the
/// peer's listen addresses, they are dialled directly, once; the verdict
/// [`Link::RelayOnly`] waits until both that dial and DCUtR have failed (or
/// [`HOLE_PUNCH_WAIT`] has passed).
struct Pending {
    since: tokio::time::Instant,
    waiters: Vec<oneshot::Sender<Link>>,
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

/// How many of a peer's listen addresses [`EventLoop::dial_direct`] dials at most (they
/// come from the peer).
const MAX_DIRECT_ADDRS: usize = 8;

/// The event loop's end of the event channel: discoveries that find it full are held,
/// one per peer, and sent in order as room comes (see the module invariants).
#[derive(Debug)]
struct Outbox {
    tx: mpsc::Sender<Event>,
    held: VecDeque<(PeerId, Via)>,
    held_peers: HashSet<PeerId>,
}

impl Outbox {
    fn new(tx: mpsc::Sender<Event>) -> Outbox {
        Outbox { tx, held: VecDeque::new(), held_peers: HashSet::new() }
    }

    fn emit(&mut self, ev: Event) {
        if let Event::Discovered { peer, via } = ev {
            // Behind those held already, so that discoveries keep their order.
            self.flush();
            if self.held.is_empty() {
                match self.tx.try_send(ev) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                    Err(mpsc::error::TrySendError::Full(_)) => {}
                }
            }
            self.hold(peer, via);
            return;
        }
        match self.tx.try_send(ev) {
            Ok(()) => {}
            // Nobody listens any more (the transfer is under way): nothing to report.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(e) => tracing::warn!(error = %e, "dropping a network event"),
        }
    }

    fn hold(&mut self, peer: PeerId, via: Via) {
        if self.held_peers.contains(&peer) {
            return;
        }
        if self.held.len() >= MAX_HELD_DISCOVERIES {
            tracing::warn!(%peer, "too many discoveries waiting; dropping one");
            return;
        }
        self.held_peers.insert(peer);
        self.held.push_back((peer, via));
    }

    /// Sends held discoveries while the channel has room.
    fn flush(&mut self) {
        while let Some(&(peer, via)) = self.held.front() {
            match self.tx.try_reserve() {
                Ok(permit) => permit.send(Event::Discovered { peer, via }),
                Err(mpsc::error::TrySendError::Full(())) => return,
                Err(mpsc::error::TrySendError::Closed(())) => {}
            }
            self.held.pop_front();
            self.held_peers.remove(&peer);
        }
    }
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
                    self.expire_links();
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
            Command::Dial { addr } => {
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
                        self.dials.insert(id, addr);
                    }
                    Err(e) => self.emit(Event::DialFailed { addr, error: e.to_string() }),
                }
            }
            #[cfg(test)]
            Command::Emit(events) => {
                for ev in events {
                    self.emit(ev);
                }
            }
            Command::RemoteAddr { peer, reply } => {
                // The direct connection's address when there is one (TCP first, as
                // `settle` keeps it): that is where the session runs.
                let conns = self.conns.get(&peer).map(Vec::as_slice).unwrap_or_default();
                let pick = |relayed: bool| {
                    let mut of_kind = conns.iter().filter(|(_, r)| *r == relayed);
                    of_kind
                        .clone()
                        .find(|(id, _)| self.is(*id, Transport::Tcp))
                        .or_else(|| of_kind.next())
                        .and_then(|(id, _)| self.remote.get(id))
                };
                let _ = reply.send(pick(false).or_else(|| pick(true)).cloned());
            }
            Command::Link { peer, reply } => {
                let since = tokio::time::Instant::now();
                self.links
                    .entry(peer)
                    .or_insert_with(|| Pending {
                        since,
                        waiters: Vec::new(),
                        direct_dial: None,
                        direct_tried: false,
                        punch_failed: false,
                    })
                    .waiters
                    .push(reply);
                if !self.swarm.is_connected(&peer) {
                    let opts = DialOpts::peer_id(peer)
                        .condition(
                            libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing,
                        )
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, error = %e, "cannot dial");
                        if !matches!(e, libp2p::swarm::DialError::DialPeerConditionFalse(_)) {
                            self.settle(peer, Some(Link::Unreachable));
                        }
                    }
                } else {
                    self.settle(peer, None);
                    self.dial_direct(peer);
                }
            }
        }
    }

    /// Answers the [`Node::link`] callers waiting on `peer`, if the state allows: with
    /// `verdict` when given, else from the peer's connections.
    fn settle(&mut self, peer: PeerId, verdict: Option<Link>) {
        let Some(pending) = self.links.get(&peer) else { return };
        let since = pending.since;
        let conns = self.conns.get(&peer).cloned().unwrap_or_default();
        let direct = conns.iter().any(|(_, relayed)| !relayed);
        let link = match verdict {
            Some(v) => v,
            // Only QUIC so far, with a `--peer` TCP dial still in flight: wait a little
            // for it, so that the session can ride TCP (see below). A failed dial, or
            // the tick after TCP_WAIT, settles it on QUIC.
            None if direct && !self.has_direct_tcp(&conns) && self.dialling_tcp() => {
                if since.elapsed() < TCP_WAIT {
                    return;
                }
                Link::Direct
            }
            None if direct => Link::Direct,
            None if conns.is_empty() => return,
            None if self.allow_relay => Link::Relayed,
            // Relayed only: DCUtR is at work; wait for it (bounded).
            None if since.elapsed() < HOLE_PUNCH_WAIT => return,
            None => Link::RelayOnly,
        };
        if link == Link::Direct {
            // Both a TCP and a QUIC connection often come up (each side may dial the
            // other), and libp2p-stream opens the session stream on one at random. Bulk
            // data moves about 1.35x as fast over TCP (noise, yamux) as over QUIC here
            // (benches/ab.sh, OLD_TRANSPORT=tcp NEW_TRANSPORT=quic), so keep TCP.
            let tcp = self.has_direct_tcp(&conns);
            for (id, relayed) in conns {
                if relayed {
                    tracing::debug!(%peer, "closing the relayed connection: a direct one exists");
                    self.swarm.close_connection(id);
                } else if tcp && self.is(id, Transport::Quic) {
                    tracing::debug!(%peer, "closing the QUIC connection: a TCP one exists");
                    self.swarm.close_connection(id);
                }
            }
            if tcp {
                self.prefer_tcp.insert(peer);
            }
        }
        if link == Link::RelayOnly {
            self.emit(Event::RelayOnly { peer });
        }
        if let Some(pending) = self.links.remove(&peer) {
            for w in pending.waiters {
                let _ = w.send(link);
            }
        }
    }

    /// Whether one of `conns` is a direct TCP connection.
    fn has_direct_tcp(&self, conns: &[(ConnectionId, bool)]) -> bool {
        conns.iter().any(|&(id, relayed)| !relayed && self.is(id, Transport::Tcp))
    }

    /// Whether a `--peer` dial to a TCP address is still in flight.
    fn dialling_tcp(&self) -> bool {
        self.dials.values().any(|a| Transport::of(a) == Transport::Tcp)
    }

    /// Whether connection `id` runs over `transport`.
    fn is(&self, id: ConnectionId, transport: Transport) -> bool {
        self.remote.get(&id).is_some_and(|a| Transport::of(a) == transport)
    }

    /// Whether every connection to `peer` is relayed (and there is one).
    fn relayed_only(&self, peer: &PeerId) -> bool {
        self.conns.get(peer).is_some_and(|c| !c.is_empty() && c.iter().all(|(_, r)| *r))
    }

    /// If `peer`'s link waits on a relayed connection only and identify has told us its
    /// listen addresses, dials the direct ones, once (see [`Pending`]).
    fn dial_direct(&mut self, peer: PeerId) {
        if !self.relayed_only(&peer) {
            return;
        }
        let Some(addrs) = self.relayed_peer_addrs.get(&peer) else { return };
        let Some(pending) = self.links.get_mut(&peer) else { return };
        if pending.direct_tried {
            return;
        }
        pending.direct_tried = true;
        if !addrs.is_empty() {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs.clone())
                .condition(libp2p::swarm::dial_opts::PeerCondition::NotDialing)
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%peer, "relayed only: dialling its listen addresses");
                    pending.direct_dial = Some(id);
                }
                Err(e) => tracing::debug!(%peer, error = %e, "cannot dial directly"),
            }
        }
        if pending.exhausted() {
            self.settle(peer, Some(Link::RelayOnly));
        }
    }

    fn expire_links(&mut self) {
        let peers: Vec<PeerId> = self.links.keys().copied().collect();
        for peer in peers {
            self.settle(peer, None);
        }
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::ConnectionClosed { peer_id, connection_id, .. } => {
                self.remote.remove(&connection_id);
                if let Some(list) = self.conns.get_mut(&peer_id) {
                    list.retain(|(id, _)| *id != connection_id);
                    if list.is_empty() {
                        self.conns.remove(&peer_id);
                        self.relayed_peer_addrs.remove(&peer_id);
                        self.prefer_tcp.remove(&peer_id);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(ev)) => match ev.result {
                Ok(_) => tracing::debug!(peer = %ev.remote_peer_id, "hole punching succeeded"),
                Err(e) => {
                    let peer = ev.remote_peer_id;
                    tracing::debug!(%peer, error = %e, "hole punching failed");
                    if !self.allow_relay
                        && !self
                            .conns
                            .get(&peer)
                            .is_some_and(|c| c.iter().any(|(_, relayed)| !relayed))
                        && let Some(pending) = self.links.get_mut(&peer)
                    {
                        pending.punch_failed = true;
                        if pending.exhausted() {
                            self.settle(peer, Some(Link::RelayOnly));
                        }
                    }
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                let mut seen = Vec::new();
                for (peer, addr) in list {
                    tracing::trace!(%peer, %addr, "mDNS discovered");
                    if !seen.contains(&peer) {
                        seen.push(peer);
                        self.emit(Event::Discovered { peer, via: Via::Mdns });
                    }
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                tracing::trace!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                if self.dials.remove(&connection_id).is_some() {
                    self.emit(Event::Discovered { peer: peer_id, via: Via::Direct });
                }
                self.conns.entry(peer_id).or_default().push((connection_id, endpoint.is_relayed()));
                self.remote.insert(connection_id, remote_of(peer_id, &endpoint));
                if self.prefer_tcp.contains(&peer_id)
                    && self.is(connection_id, Transport::Quic)
                    && !endpoint.is_relayed()
                {
                    tracing::debug!(peer = %peer_id, "closing a late QUIC connection: the link is on TCP");
                    self.swarm.close_connection(connection_id);
                }
                self.settle(peer_id, None);
                self.with_dht(|d, swarm, emit| d.on_connected(swarm, peer_id, connection_id, emit));
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                tracing::trace!(peer = ?peer_id, %error, "outgoing connection failed");
                if let Some(addr) = self.dials.remove(&connection_id) {
                    self.emit(Event::DialFailed { addr, error: error.to_string() });
                }
                self.with_dht(|d, _, emit| d.on_dial_failed(peer_id, connection_id, emit));
                if let Some(peer) = peer_id {
                    if !self.swarm.is_connected(&peer) {
                        self.settle(peer, Some(Link::Unreachable));
                    } else if let Some(pending) = self.links.get_mut(&peer)
                        && pending.direct_dial == Some(connection_id)
                    {
                        pending.direct_dial = None;
                        if pending.exhausted() {
                            self.settle(peer, Some(Link::RelayOnly));
                        }
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::trace!(%address, "listening");
                if self.serve
                    && !address.iter().any(|p| p == libp2p::multiaddr::Protocol::P2pCircuit)
                {
                    // `pcp node` is meant to be reachable where it listens.
                    self.swarm.add_external_address(address.clone());
                }
                if let Some(d) = self.dht.as_ref() {
                    d.on_listen_addr(&mut self.swarm, &address);
                }
                self.emit(Event::Listening(address));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if self.relayed_only(&peer_id) {
                    // Peer input: only plausible addresses, and only a few.
                    let addrs = info
                        .listen_addrs
                        .iter()
                        .filter(|a| dht::is_direct_candidate(a))
                        .take(MAX_DIRECT_ADDRS)
                        .cloned()
                        .collect();
                    self.relayed_peer_addrs.insert(peer_id, addrs);
                    self.dial_direct(peer_id);
                }
                if let Some(d) = self.dht.as_mut() {
                    d.on_identify(&mut self.swarm, peer_id, &info);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => {
                self.with_dht(|d, swarm, emit| d.on_kad(swarm, ev, emit));
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::debug!(%address, "external address confirmed");
                self.with_dht(|d, swarm, emit| d.tick(swarm, emit));
            }
            other => tracing::trace!(?other, "swarm event"),
        }
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

    /// Issue 14, item 5: a burst of made-up peers larger than the channel does not push
    /// out the real one that comes after them; a peer found twice waits once.
    #[test]
    fn a_flood_of_discoveries_is_coalesced_not_dropped() {
        let (tx, mut rx) = mpsc::channel(EVENT_CAPACITY);
        let mut out = Outbox::new(tx);
        let fakes: Vec<PeerId> = (0..10 * EVENT_CAPACITY).map(|_| PeerId::random()).collect();
        for &peer in fakes.iter().chain(&fakes) {
            out.emit(Event::Discovered { peer, via: Via::Mdns });
        }
        let real = PeerId::random();
        out.emit(Event::Discovered { peer: real, via: Via::Mdns });
        // Other events still go, or are dropped, as before: never held.
        out.emit(Event::Dht(DhtStatus::BootstrapFailed { total: 1 }));
        let mut seen = Vec::new();
        loop {
            while let Ok(ev) = rx.try_recv() {
                if let Event::Discovered { peer, .. } = ev {
                    seen.push(peer);
                }
            }
            if out.held.is_empty() {
                break;
            }
            out.flush();
        }
        // Each fake once (the second round found them sent or held), then the real one.
        assert_eq!(seen.len(), fakes.len() + 1 + EVENT_CAPACITY, "{}", seen.len());
        assert_eq!(seen.last(), Some(&real), "in order, the real one last");
        let unique: HashSet<&PeerId> = seen.iter().collect();
        assert_eq!(unique.len(), fakes.len() + 1);
    }

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
