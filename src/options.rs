//! What the caller asks for: plain structs with defaults, no parsing, no terminal.
//!
//! The `pcp` binary maps its flags onto these; a program that drives pcp fills them in
//! itself (see the crate-level example).

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;

use crate::code::Code;
use crate::pipeline::{Compression, DEFAULT_CHUNK_SIZE};

/// How a side finds and reaches its peer.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// Addresses to listen on; empty means all interfaces, random ports, TCP and QUIC.
    /// `/memory/N` addresses (libp2p's in-process transport) work too.
    pub listen: Vec<Multiaddr>,
    /// Look for peers on the local network (mDNS).
    pub mdns: bool,
    /// Meet on the Kademlia DHT.
    pub dht: bool,
    /// DHT bootstrap nodes; empty means the public IPFS list.
    pub bootstrap: Vec<Multiaddr>,
    /// Let the data go through a relay when no direct connection can be made.
    pub allow_relay: bool,
    /// After a lost connection, how long to look for the peer again.
    pub reconnect_timeout: Duration,
    /// How long to wait for the peer to turn up at all before giving up with
    /// [`crate::Error::TimedOut`]: a receiver until it meets its sender, a sender until
    /// a receiver authenticates. `None` (the default) waits until cancelled. A person
    /// deciding at a prompt is never cut short by it.
    pub timeout: Option<Duration>,
    /// The length of the discovery time slot (see [`crate::code::slot`]): peers meet
    /// only if they agree on it, so leave it at its default,
    /// [`crate::code::SLOT_SECS`], unless every peer is yours. Tests shorten it to see a
    /// slot roll over during a wait. Whole seconds; under one second counts as one.
    pub slot: Duration,
}

impl Default for NetworkOptions {
    fn default() -> NetworkOptions {
        NetworkOptions {
            listen: Vec::new(),
            mdns: true,
            dht: true,
            bootstrap: Vec::new(),
            allow_relay: false,
            reconnect_timeout: Duration::from_secs(600),
            timeout: None,
            slot: Duration::from_secs(crate::code::SLOT_SECS),
        }
    }
}

impl NetworkOptions {
    /// Only the given listen addresses and dialled peers: no mDNS, no DHT. With
    /// `/memory/0`, a transfer inside one process (tests, examples).
    #[must_use]
    pub fn local(listen: Vec<Multiaddr>) -> NetworkOptions {
        NetworkOptions { listen, mdns: false, dht: false, ..NetworkOptions::default() }
    }
}

/// What the sender sends.
pub enum Source {
    /// Bytes from a reader, of any length, offered as a stream named "stdin" (the
    /// binary passes standard input).
    Reader(Box<dyn Read + Send>),
    /// Paths: one regular file is sent as itself; a directory or several paths as a
    /// tar stream.
    Paths(Vec<PathBuf>),
    /// Text, offered as text (`pcp send --text`): a receiver at a terminal shows it
    /// instead of saving it (see [`ReceiveOptions::text`]).
    Text(String),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Reader(_) => f.write_str("Reader"),
            Source::Paths(p) => f.debug_tuple("Paths").field(p).finish(),
            Source::Text(t) => f.debug_tuple("Text").field(&t.len()).finish(),
        }
    }
}

/// `pcp send`.
#[derive(Debug)]
pub struct SendOptions {
    /// What to send.
    pub source: Source,
    /// The code; `None` makes one up of [`SendOptions::words`] words.
    pub code: Option<Code>,
    /// Words in a made-up code (at least [`crate::code::MIN_WORDS`]).
    pub words: usize,
    /// Compression.
    pub compression: Compression,
    /// Chunk size in bytes: a power of two from [`crate::MIN_CHUNK_SIZE`] to
    /// [`crate::MAX_CHUNK_SIZE`].
    pub chunk_size: u32,
    /// Finding the receiver.
    pub network: NetworkOptions,
    /// How many receivers get it: one (the default), or many with the same code.
    pub receivers: Receivers,
}

/// How many receivers one send serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Receivers {
    /// The first receiver that proves the code, and only it (resumes included).
    #[default]
    One,
    /// Every receiver that proves the code, each with its own session, window and
    /// resume, until `count` of them have finished (`None`: until cancelled). Paths
    /// are read again for each one; a reader or text is read once into one bounded
    /// buffer that every receiver reads at its own pace. The wrong-code budget is the
    /// code's, shared by all of them.
    Many {
        /// Receivers to finish before the send ends; `None` serves until cancelled.
        count: Option<std::num::NonZeroU32>,
        /// A reader or text only: how long the shared buffer may stay full because of
        /// one receiver that takes nothing before that receiver is dropped.
        lag: std::time::Duration,
    },
}

impl SendOptions {
    /// Defaults: a 4-word code, compression that adapts to the link
    /// ([`Compression::Adaptive`]), 1 MiB chunks, mDNS and the public DHT.
    #[must_use]
    pub fn new(source: Source) -> SendOptions {
        SendOptions {
            source,
            code: None,
            words: crate::code::DEFAULT_WORDS,
            compression: Compression::Adaptive,
            chunk_size: DEFAULT_CHUNK_SIZE,
            network: NetworkOptions::default(),
            receivers: Receivers::One,
        }
    }
}

/// Where the receiver puts what it gets.
pub enum Destination {
    /// Write the bytes to this writer as they verify: a stream, a file's bytes, or a
    /// folder's tar stream. Nothing is resumable across runs.
    Writer(Box<dyn Write + Send>),
    /// Write to this file (whatever the offer), through `FILE.pcp-part`, renamed into
    /// place once everything verified; a later run resumes from the part file.
    File(PathBuf),
    /// Save a file under its announced name, or extract a folder, in this directory.
    /// A stream has no name and is refused.
    Directory(PathBuf),
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Writer(_) => f.write_str("Writer"),
            Destination::File(p) => f.debug_tuple("File").field(p).finish(),
            Destination::Directory(p) => f.debug_tuple("Directory").field(p).finish(),
        }
    }
}

/// `pcp receive`.
pub struct ReceiveOptions {
    /// The sender's code.
    pub code: Code,
    /// Where the data goes.
    pub destination: Destination,
    /// Overwrite existing files, and start over instead of resuming.
    pub force: bool,
    /// Dial these addresses as well as searching (a `/p2p/` suffix pins the peer).
    pub peers: Vec<Multiaddr>,
    /// Finding the sender.
    pub network: NetworkOptions,
    /// Where a text offer goes when the destination is a directory (the binary: its
    /// terminal, through [`crate::printable_text`]); the bytes arrive
    /// verified, as they come, and may split a UTF-8 character between two writes.
    /// `None`: a text offer is refused there, like a stream. A `Writer` or `File`
    /// destination takes a text as it takes anything.
    pub text: Option<Box<dyn Write + Send>>,
}

impl fmt::Debug for ReceiveOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiveOptions")
            .field("code", &self.code)
            .field("destination", &self.destination)
            .field("force", &self.force)
            .field("peers", &self.peers)
            .field("network", &self.network)
            .field("text", &self.text.as_ref().map(|_| "Writer"))
            .finish()
    }
}

impl ReceiveOptions {
    /// Defaults: no `--force`, mDNS and the public DHT.
    #[must_use]
    pub fn new(code: Code, destination: Destination) -> ReceiveOptions {
        ReceiveOptions {
            code,
            destination,
            force: false,
            peers: Vec::new(),
            network: NetworkOptions::default(),
            text: None,
        }
    }
}

/// `pcp node`.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Addresses to listen on; empty means TCP and QUIC port 4001 on all IPv4
    /// interfaces.
    pub listen: Vec<Multiaddr>,
    /// Other nodes to join into one DHT.
    pub bootstrap: Vec<Multiaddr>,
    /// A stable identity ([`crate::load_or_create_key`]); a fresh one when `None`.
    pub keypair: Option<Keypair>,
}
