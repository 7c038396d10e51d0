//! `pcp node`: a long-lived Kademlia server, circuit relay v2 server and AutoNAT
//! server, for a group that runs its own rendezvous infrastructure (and for tests).
//!
//! It prints each address it listens on, with `/p2p/<id>` appended, on stdout, one per
//! line and flushed as soon as it is known, so a script can read the first line and
//! hand it to others as `--bootstrap`. It then serves until interrupted.
//!
//! Identity: with `--key FILE`, the ed25519 keypair in FILE (libp2p's protobuf key
//! encoding); a missing FILE is created with mode 0600 and a new key. Without it, a new
//! identity per run.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;

use crate::cli::NodeArgs;
use crate::error::Error;
use crate::node::{self, DhtStatus, Event as NodeEvent, Node};
use crate::progress::{Event, Reporter};

/// Where a node listens when no `--listen` is given.
const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"];

/// Runs `pcp node` until the process is interrupted.
///
/// # Errors
/// A key file that cannot be read, parsed or created, and listen failures.
pub async fn run(args: &NodeArgs, rep: &Reporter) -> Result<(), Error> {
    let keypair = match &args.key {
        Some(path) => load_or_create_key(path)?,
        None => Keypair::generate_ed25519(),
    };
    let listen = if args.listen.is_empty() {
        DEFAULT_LISTEN.iter().map(|a| a.parse().expect("static multiaddr")).collect()
    } else {
        args.listen.clone()
    };
    let config = node::Config {
        listen,
        mdns: false,
        mdns_query_interval: Duration::from_secs(300),
        dht: Some(node::dht::Config {
            bootstrap: args.bootstrap.clone(),
            channel: None,
            provide: false,
            lookup: false,
        }),
        serve: true,
        keypair: Some(keypair),
        allow_relay: false,
    };
    let (node, mut events) = Node::start(config)?;
    let me = node.peer_id();
    tracing::info!(peer = %me, "node started");
    while let Some(ev) = events.recv().await {
        match ev {
            NodeEvent::Listening(addr) => print_addr(&addr.with(Protocol::P2p(me)))?,
            NodeEvent::Dht(DhtStatus::BootstrapFailed { total }) => rep.emit(Event::Notice(
                format!("could not reach any of the {total} bootstrap node(s); serving alone"),
            )),
            NodeEvent::Dht(DhtStatus::Bootstrap { connected, total }) if connected > 0 => {
                tracing::info!(connected, total, "joined the DHT");
            }
            other => tracing::debug!(?other, "node event"),
        }
    }
    Err(Error::Node(node::NodeError::Stopped))
}

fn print_addr(addr: &Multiaddr) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{addr}")
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io { context: "cannot write to standard output", source })
}

/// Reads the node's key from `path`, or creates it there (mode 0600) when missing.
fn load_or_create_key(path: &Path) -> Result<Keypair, Error> {
    let bad = |source| Error::Path { path: path.to_owned(), source };
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            bad(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a key: {e}")))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt;
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| bad(std::io::Error::other(e)))?;
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
