//! `pcp node`: a long-lived Kademlia server, circuit relay v2 server and AutoNAT
//! server, for a group that runs its own rendezvous infrastructure (and for tests).
//!
//! [`serve`] reports each address it listens on, with `/p2p/<id>` appended, as an
//! [`Event::Listening`] as soon as it is known (the binary prints them on stdout, one
//! per line, so a script can hand the first to others as `--bootstrap`). It then
//! serves until cancelled.
//!
//! Identity: [`load_or_create_key`] keeps the ed25519 keypair in a file (libp2p's
//! protobuf key encoding); a missing file is created with mode 0600 and a new key.
//! Without one, a new identity per run.
//!
//! Under load: a node takes at most 512 inbound connections (640 in all), 4 per peer
//! id and 32 per remote IP (IPv6: per /64), and keeps at most 4096 provider records, 20
//! per key and 16 per provider peer id; when full, the stalest record of the provider
//! holding the most goes first, so a few throwaway peer ids cannot crowd out a real
//! sender. It stores no value records. The numbers, and why, are in `node/limits.rs`
//! and `node/store.rs`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use tokio_util::sync::CancellationToken;

use crate::event::{DhtStatus, Event, Events};
use crate::node::{self, Event as NodeEvent, Node, NodeError};
use crate::options::NodeOptions;
use crate::term;

/// Where a node listens when no address is given.
const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"];

/// A key file that cannot be read, parsed or created.
#[derive(Debug, thiserror::Error)]
#[error("{}", term::sanitize(&path.display().to_string()))]
pub struct KeyError {
    /// The key file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Runs a node until `cancel` fires.
///
/// # Errors
/// Listen failures, and the network task stopping.
pub async fn serve(
    options: NodeOptions,
    on_event: impl Fn(Event) + Send + Sync + 'static,
    cancel: CancellationToken,
) -> Result<(), NodeError> {
    let events = Events::new(on_event);
    let listen = if options.listen.is_empty() {
        DEFAULT_LISTEN.iter().map(|a| a.parse().expect("static multiaddr")).collect()
    } else {
        options.listen
    };
    let config = node::Config {
        listen,
        mdns: false,
        mdns_query_interval: Duration::from_secs(300),
        dht: Some(node::dht::Config {
            bootstrap: options.bootstrap,
            channel: None,
            provide: false,
            lookup: false,
        }),
        serve: true,
        keypair: options.keypair,
        allow_relay: false,
    };
    let (node, mut found) = Node::start(config)?;
    let me = node.peer_id();
    tracing::info!(peer = %me, "node started");
    loop {
        let ev = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            ev = found.recv() => ev.ok_or(NodeError::Stopped)?,
        };
        match ev {
            NodeEvent::Listening(addr) => {
                events.emit(Event::Listening { addr: addr.with(Protocol::P2p(me)) });
            }
            NodeEvent::Dht(s @ DhtStatus::BootstrapFailed { .. }) => events.emit(Event::Dht(s)),
            NodeEvent::Dht(DhtStatus::Bootstrap { connected, total }) if connected > 0 => {
                tracing::info!(connected, total, "joined the DHT");
            }
            other => tracing::debug!(?other, "node event"),
        }
    }
}

/// Reads a node's key from `path`, or creates it there (mode 0600) when missing.
///
/// # Errors
/// A file that cannot be read or created, or that holds no key.
pub fn load_or_create_key(path: &Path) -> Result<Keypair, KeyError> {
    let bad = |source| KeyError { path: path.to_owned(), source };
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            bad(io::Error::new(io::ErrorKind::InvalidData, format!("not a key: {e}")))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt;
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| bad(io::Error::other(e)))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(bad)?;
            file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(bad)?;
            Ok(key)
        }
        Err(e) => Err(bad(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let a = load_or_create_key(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create_key(&path).expect("read");
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        std::fs::write(&path, b"junk").expect("write");
        assert!(load_or_create_key(&path).is_err());
    }
}
