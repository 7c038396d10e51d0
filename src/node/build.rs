//! Building the node: the transports and behaviours of a [`Config`], and where it
//! listens. The parent module spawns the event loop that owns the result.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, dcutr, identify, kad, mdns, noise, ping, relay, tcp, yamux,
};

use super::{Behaviour, Config, NodeError, limits, store};

/// How long a Kademlia query of `pcp send`/`receive` may run; lookups repeat anyway.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle connection stays open. The receiver's y/n prompt runs with the
/// session stream open, so this only bounds connections nobody uses.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The swarm of `config`: its transports and [`Behaviour`], not yet listening.
pub(super) fn swarm(config: &Config) -> Result<Swarm<Behaviour>, NodeError> {
    let keypair = config.keypair.clone().unwrap_or_else(Keypair::generate_ed25519);
    Ok(libp2p::SwarmBuilder::with_existing_identity(keypair)
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
        .with_behaviour(|key, relay_client| behaviour(key, relay_client, config))
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_swarm_config(|c| {
            let c = c.with_idle_connection_timeout(IDLE_TIMEOUT);
            if lazy_streams(config) {
                c.with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
            } else {
                c
            }
        })
        .build())
}

/// Whether the node opens its streams with lazy multistream-select: the protocol's name
/// goes out with the stream's first bytes instead of a round trip before them. Each of
/// our streams offers one protocol, which is where lazy negotiation is safe, and a peer
/// that does not speak it refuses on our first read instead (the session's search maps
/// that back to "does not speak pcp"). It saves the receiver a round trip before its
/// hello, and on every lookup request.
///
/// Only for a node that publishes nothing and serves no one: a receiver, or a sender
/// without the DHT (`--no-dht`, found by mDNS only). With it on
/// every node, tests/nat.rs (one `pcp node`) failed in 3 of 11 runs: the receiver's
/// lookups were answered without the sender's provider record; 0 of 4 runs failed
/// without it, and 0 of 8 with it on receivers only. The suspected cause, not
/// confirmed: Kademlia's `ADD_PROVIDER` is the one request that expects no answer, and
/// its stream is closed and dropped at once, possibly before the listener has confirmed
/// the protocol.
fn lazy_streams(config: &Config) -> bool {
    !config.serve && !config.dht.as_ref().is_some_and(|d| d.provide)
}

/// The behaviours of `config`, around the relay client the transport made.
fn behaviour(
    key: &Keypair,
    relay_client: relay::client::Behaviour,
    config: &Config,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let id = key.public().to_peer_id();
    let serve = config.serve;
    let with_kad = serve || config.dht.is_some();
    let mdns = if config.mdns {
        let mdns_cfg =
            mdns::Config { query_interval: config.mdns_query_interval, ..mdns::Config::default() };
        Some(mdns::tokio::Behaviour::new(mdns_cfg, id)?)
    } else {
        None
    };
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
    let conn_limits = if serve { limits::Limits::SERVE } else { limits::Limits::CLIENT };
    Ok(Behaviour {
        limits: conn_limits.connection_limits(),
        ip_limit: limits::IpLimit::new(conn_limits.per_ip).releasing(held),
        stream: libp2p_stream::Behaviour::new(),
        identify: identify::Behaviour::new(identify::Config::new("/pcp/1".into(), key.public())),
        ping: ping::Behaviour::new(ping::Config::new()),
        mdns: mdns.into(),
        kad: with_kad.then(|| kademlia(id, serve)).into(),
        autonat: autonat.into(),
        relay_client,
        relay_server: relay_server.into(),
        dcutr: dcutr::Behaviour::new(id),
    })
}

/// Kademlia for peer `id`: a server for `pcp node` (`serve`), else a client whose
/// queries time out early.
fn kademlia(id: PeerId, serve: bool) -> kad::Behaviour<store::ProviderStore> {
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
}

/// Starts listening on `addrs`, or when empty on all interfaces, random ports, TCP and
/// QUIC, IPv4 and IPv6.
///
/// # Errors
/// [`NodeError::Listen`] for an address of `addrs` that is refused.
pub(super) fn listen(swarm: &mut Swarm<Behaviour>, addrs: &[Multiaddr]) -> Result<(), NodeError> {
    let explicit = !addrs.is_empty();
    let addrs = if explicit {
        addrs.to_vec()
    } else {
        [
            "/ip4/0.0.0.0/tcp/0",
            "/ip4/0.0.0.0/udp/0/quic-v1",
            "/ip6/::/tcp/0",
            "/ip6/::/udp/0/quic-v1",
        ]
        .iter()
        .map(|a| a.parse().expect("static multiaddr"))
        .collect()
    };
    for addr in addrs {
        if let Err(e) = swarm.listen_on(addr.clone()) {
            // The defaults include IPv6, which a host may lack; only an address
            // the user asked for is worth failing over.
            if explicit {
                return Err(NodeError::Listen { addr, source: e });
            }
            tracing::debug!(%addr, error = %e, "default listen address unavailable");
        }
    }
    Ok(())
}
