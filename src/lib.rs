//! pcp: peer copy. Send a byte stream, a file or a directory to a peer found by code
//! words, with no server in between.
//!
//! This crate is the engine; the `pcp` binary is one caller of it. The engine takes
//! plain options, reports [`Event`]s through a callback, asks for consent through
//! another, stops when its [`CancellationToken`] fires, and returns a typed
//! [`Report`] or [`Error`]. It never prints and never reads the terminal.
//!
//! ```text
//! send / receive / serve       the entry points: options in, events out
//!  ├─ transfer    rendezvous, the data phase of each side, reconnection and resume
//!  │   ├─ node      owns the libp2p Swarm in one task; mDNS, Kademlia (dht), relay, DCUtR
//!  │   └─ session   hello, SPAKE2 + key confirmation, then framed control messages
//!  │       └─ framing    ChaCha20-Poly1305 frames, counter nonces, deadlines
//!  ├─ message     what the frames carry: offer, chunk, ack, end, cancel, …
//!  ├─ pipeline    chunk → blake3 → zstd → seal   /   open → unzstd → check
//!  │   └─ pool      recycled chunk buffers: no allocation or zeroing per chunk
//!  ├─ source/sink reader, file, tar  /  writer, file via .pcp-part, staged extraction
//!  ├─ archive     tar pack and safe unpack
//!  ├─ resume      part files and their manifests
//!  └─ code        BIP39 code words: generate, parse, channel, password
//! ```
//!
//! # Example
//!
//! A send and a receive in one process, over libp2p's in-memory transport (no mDNS, no
//! DHT: the receiver dials the address the sender reports).
//!
//! ```
//! use pcp::{Destination, Event, NetworkOptions, ReceiveOptions, SendOptions, Source};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let file = dir.path().join("hello.txt");
//! std::fs::write(&file, b"hello, peer")?;
//!
//! // The sender listens in memory and tells us its address and code.
//! let (tx, mut rx) = tokio::sync::mpsc::channel(8);
//! let mut send = SendOptions::new(Source::Paths(vec![file]));
//! send.network = NetworkOptions::local(vec!["/memory/0".parse()?]);
//! let sender = tokio::spawn(pcp::send(
//!     send,
//!     move |ev| match ev {
//!         Event::Listening { addr } => { let _ = tx.try_send((Some(addr), None)); }
//!         Event::Code { code, .. } => { let _ = tx.try_send((None, Some(code))); }
//!         _ => {}
//!     },
//!     CancellationToken::new(),
//! ));
//! let (mut addr, mut code) = (None, None);
//! while addr.is_none() || code.is_none() {
//!     let (a, c) = rx.recv().await.expect("the sender reports both");
//!     addr = addr.or(a);
//!     code = code.or(c);
//! }
//!
//! // The receiver dials it, accepts what it is offered, and saves it in `out`.
//! let out = dir.path().join("out");
//! std::fs::create_dir(&out)?;
//! let code: pcp::Code = code.unwrap().parse()?;
//! let mut receive = ReceiveOptions::new(code, Destination::Directory(out.clone()));
//! receive.network = NetworkOptions::local(vec!["/memory/0".parse()?]);
//! receive.peers = vec![addr.unwrap()];
//! let report = pcp::receive(
//!     receive,
//!     |ev| if let Event::Progress { bytes } = ev { println!("{bytes} bytes") },
//!     |offer| { println!("accepting {}", offer.name); Ok(true) },
//!     CancellationToken::new(),
//! )
//! .await?;
//!
//! assert_eq!(report.bytes, 11);
//! assert_eq!(std::fs::read(out.join("hello.txt"))?, b"hello, peer");
//! sender.await??;
//! # Ok(())
//! # }
//! ```

#![deny(clippy::print_stdout, clippy::print_stderr)]

#[cfg(feature = "adversary")]
#[doc(hidden)]
pub mod adversary;
pub(crate) mod archive;
pub mod code;
pub mod error;
pub mod event;
pub(crate) mod framing;
pub(crate) mod fsx;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod leftovers;
pub(crate) mod message;
pub(crate) mod node;
pub mod options;
pub(crate) mod pipeline;
pub(crate) mod pool;
pub(crate) mod resume;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod term;
pub(crate) mod transfer;

pub use code::{Code, ParseCodeError};
pub use error::{Error, ErrorKind, Result};
pub use event::{EntryKind, Event, OfferInfo, OfferKind, Origin, Report, Role, Stats, Transport};
pub use leftovers::{Leftover, LeftoverKind, leftovers};
pub use node::NodeError;
pub use options::{
    Destination, NetworkOptions, NodeOptions, ReceiveOptions, Receivers, SendOptions, Source,
};
pub use pipeline::{Compression, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
pub use server::{KeyError, NodeKey, load_or_create_key, serve};
pub use session::guesses::guess_budget;
pub use source::TEXT_PEEK;
pub use term::{printable, printable_text, quote, sanitize};
pub use tokio_util::sync::CancellationToken;
pub use transfer::{receive, send};

/// Internals the benches measure; not part of the API, and not covered by semver.
#[doc(hidden)]
pub mod bench {
    pub use crate::framing::{FrameKey, read_frame_into, write_framed};
    pub use crate::pipeline::{
        maybe_compress, open_chunk, seal_chunk, seal_chunk_into, worth_compressing,
    };
    pub use crate::pool::{Buf, Pool};
    pub use crate::source::read_chunk;
}
