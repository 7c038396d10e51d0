//! `pcp node`: a long-lived Kademlia server, circuit relay v2 server and AutoNAT
//! server, for a group that runs its own rendezvous infrastructure (and for tests).
//!
//! [`serve`] reports each address it listens on, with `/p2p/<id>` appended, as an
//! [`Event::Listening`] as soon as it is known (the binary prints them on stdout, one
//! per line, so a script can hand the first to others as `--bootstrap`). It then
//! serves until cancelled.
//!
//! Identity: [`load_or_create_key`] keeps the ed25519 keypair in a file (libp2p's
//! protobuf key encoding); a missing file is created anew with mode 0600 and a new key,
//! never through a symlink. Without one, a new identity per run.
//!
//! # Security
//! An existing key file is read by the one reader of key files, the receiver's kept
//! identity's too ([`crate::resume::part::read_key_file`]): only if it is ours, by the
//! same rule as every file pcp reopens ([`crate::fsx::open_ours`]): not a symlink, a
//! regular file owned by the effective uid, with no group or other write bit and one
//! link; and only up to [`MAX_KEY_FILE`] bytes (4 KiB). Anything else is refused ([`KeyError`]): whoever can write
//! or replace the file chooses the node's identity. A key readable by its group or by
//! others is used, with a warning in the words of ssh's "UNPROTECTED PRIVATE KEY FILE"
//! ([`NodeKey::warning`]). ssh refuses such a private key outright; `pcp node` only
//! warns, because its key names a rendezvous node and guards no data or account:
//! whoever reads it can run a node under the same peer id, which the warning says,
//! and operators keep service keys group-readable on purpose.
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

use crate::resume::part::{KeyFile, MAX_KEY_FILE, read_key_file};

/// A key file that cannot be used: not ours, too large, no key, or unreadable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file is not ours to trust: a symlink, not a regular file, another user's,
    /// writable by others, or hard-linked.
    #[error(transparent)]
    NotOurs(crate::fsx::OwnershipError),
    /// The file is larger than any key.
    #[error("{} is larger than {MAX_KEY_FILE} bytes: not a key file", shown(.0))]
    TooLarge(PathBuf),
    /// The file holds no key pcp can read.
    #[error("{} holds no key", shown(.path))]
    NotAKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: libp2p::identity::DecodingError,
    },
    /// Reading or creating the file failed.
    #[error("{}", shown(.path))]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl From<crate::fsx::OwnershipError> for KeyError {
    fn from(e: crate::fsx::OwnershipError) -> KeyError {
        match e {
            crate::fsx::OwnershipError::Io { path, source } => KeyError::Io { path, source },
            not_ours => KeyError::NotOurs(not_ours),
        }
    }
}

/// A node's key, and what is wrong with its file short of refusing it.
#[derive(Debug)]
#[non_exhaustive]
pub struct NodeKey {
    /// The identity.
    pub keypair: Keypair,
    /// Say this to the user: the key file is readable by its group or others.
    pub warning: Option<String>,
}

fn shown(path: &Path) -> String {
    term::sanitize(&path.display().to_string())
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
            slot_secs: crate::code::SLOT_SECS,
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

/// Reads a node's key from `path`, or creates it there (mode 0600) when missing. The
/// file is trusted only if it is ours (see the module docs); a key others can read is
/// used, with a [`NodeKey::warning`].
///
/// # Errors
/// A file that is not ours, larger than 4 KiB, holds no key, or cannot be read or
/// created.
pub fn load_or_create_key(path: &Path) -> Result<NodeKey, KeyError> {
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    let (key, mode) = match read_key_file(path)? {
        KeyFile::Read { key, mode } => (key, mode),
        KeyFile::TooLarge => return Err(KeyError::TooLarge(path.to_owned())),
        KeyFile::Missing => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair.to_protobuf_encoding().map_err(|e| io(io::Error::other(e)))?;
            // Anew, 0600, and never through a symlink planted meanwhile.
            let mut file = crate::fsx::create_new_private(path).map_err(io)?;
            file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(io)?;
            return Ok(NodeKey { keypair, warning: None });
        }
    };
    let keypair = *key.map_err(|source| KeyError::NotAKey { path: path.to_owned(), source })?;
    // Said by the caller (the binary prints it as a notice); the library never prints.
    let warning = readable_by_others(path, mode);
    Ok(NodeKey { keypair, warning })
}

/// The warning for a key file of `mode` that others can read, ssh's words first.
fn readable_by_others(path: &Path, mode: u32) -> Option<String> {
    let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
        (_, true) => "others",
        (true, false) => "its group",
        (false, false) => return None,
    };
    Some(format!(
        "UNPROTECTED PRIVATE KEY FILE: {} is readable by {who} (mode {:04o}); whoever can \
         read it can run a node under this identity: chmod 600 it",
        shown(path),
        mode & 0o7777
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_key_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let a = load_or_create_key(&path).expect("create");
        assert!(a.warning.is_none());
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create_key(&path).expect("read");
        assert_eq!(a.keypair.public().to_peer_id(), b.keypair.public().to_peer_id());
        assert!(b.warning.is_none(), "a 0600 key is no warning");
        std::fs::write(&path, b"junk").expect("write");
        let e = load_or_create_key(&path).expect_err("junk");
        assert!(matches!(e, KeyError::NotAKey { .. }), "{e:?}");
    }

    /// Issue 14, item 7: `pcp node --key` reads no key through a symlink, whatever it
    /// points to, and creates none through a dangling one.
    #[test]
    fn a_node_key_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.key");
        load_or_create_key(&real).expect("create");
        let link = dir.path().join("node.key");
        std::os::unix::fs::symlink(&real, &link).expect("plant");
        let e = load_or_create_key(&link).expect_err("a symlink to a key");
        assert!(matches!(e, KeyError::NotOurs(_)), "{e:?}");
        assert!(e.to_string().ends_with("is a symbolic link"), "{e}");

        let dangling = dir.path().join("dangling.key");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &dangling).expect("plant");
        assert!(load_or_create_key(&dangling).is_err());
        assert!(!dir.path().join("elsewhere").exists(), "nothing created through it");
    }

    #[test]
    fn an_oversized_node_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let key = Keypair::generate_ed25519().to_protobuf_encoding().expect("encode");
        let mut big = key.clone();
        big.resize(MAX_KEY_FILE as usize + 1, 0);
        std::fs::write(&path, &big).expect("write");
        chmod(&path, 0o600);
        let e = load_or_create_key(&path).expect_err("too large");
        assert!(matches!(e, KeyError::TooLarge(_)), "{e:?}");
        assert!(e.to_string().contains("is larger than 4096 bytes"), "{e}");
    }

    /// Readable by others: used, with ssh's warning; writable by others, another
    /// user's, or hard-linked: refused.
    #[test]
    fn a_node_key_others_can_read_is_warned_and_one_they_can_write_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let made = load_or_create_key(&path).expect("create").keypair;
        for (mode, who) in [(0o640, "its group"), (0o644, "others"), (0o604, "others")] {
            chmod(&path, mode);
            let key = load_or_create_key(&path).expect("readable by others: still used");
            assert_eq!(key.keypair.public(), made.public());
            let w = key.warning.expect("a warning");
            assert!(w.starts_with("UNPROTECTED PRIVATE KEY FILE: "), "{w}");
            assert!(w.contains(&format!("is readable by {who} (mode {mode:04o})")), "{w}");
        }
        for mode in [0o620, 0o602, 0o666] {
            chmod(&path, mode);
            let e = load_or_create_key(&path).expect_err("writable by others");
            assert!(e.to_string().contains("is writable by"), "{e}");
        }
        chmod(&path, 0o600);
        std::fs::hard_link(&path, dir.path().join("copy")).expect("link");
        let e = load_or_create_key(&path).expect_err("hard-linked");
        assert!(e.to_string().ends_with("has 2 links"), "{e}");
        std::fs::remove_file(dir.path().join("copy")).expect("rm");
        if crate::fsx::as_root(
            "a_node_key_others_can_read_is_warned_and_one_they_can_write_refused",
        ) {
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
            let e = load_or_create_key(&path).expect_err("another user's");
            assert!(e.to_string().ends_with("is owned by uid 65534, not you"), "{e}");
        }
    }
}
