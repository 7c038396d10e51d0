//! A test peer that authenticates with the right code and then misbehaves (issue 9,
//! item 14), and strangers at the rendezvous that know no code at all (issue 14, item
//! 10): an impostor that says "burnt" ([`impostor_burnt`]), a jammer of handshake places
//! ([`jammer`]) and a guesser ([`guesser`]).
//!
//! It is built on the engine's own node, session, framing, message and pipeline code,
//! so what it sends is what a modified pcp could send: every frame after the handshake
//! is sealed under the session's real keys, unless the case is about frames that are
//! not (garbage, a header over the limit, half a frame). `tests/adversary.rs` runs it
//! against the real `pcp` binary and checks that the honest side ends with a clear
//! error, no panic, nothing written outside its target, nothing verified lost, and
//! bounded memory.
//!
//! Compiled only with the `adversary` feature, hidden from the docs, and not part of the
//! API: it exists for the tests.
//!
//! # Invariants
//!
//! - The adversary never hangs up on its own after its script: it holds the session
//!   (and silently holds any later stream, such as a reconnection) until its runtime
//!   stops, so whatever end the honest side reaches is its own doing.
//! - It never allocates what it claims: the 1 GiB long name and the zstd bomb are
//!   generated piece by piece, and the 16 MiB Offer is written as bytes, not as a
//!   vector of 16 million strings.
//! - It listens and dials on 127.0.0.1 only, with mDNS and the DHT off (a jammer or a
//!   guesser dials the addresses it is given, on this host).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Duration;

use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, Stream};
use tokio::sync::oneshot;

use crate::code::{self, Code};
use crate::error::Error;
use crate::framing::{FrameError, FrameReader, FrameWriter, Header, MAX_FRAME_LEN, TAG_LEN};
use crate::message::{
    self, CHUNK_HEADER_LEN, ChunkHeader, Control, End, FLAG_ZSTD, Kind, MAX_ENTRIES, MAX_OFFER_LEN,
    Offer, Resume, TopKind,
};
use crate::node::{self, Event as NodeEvent, Node, NodeError};
use crate::pipeline::{self, Compression, DEFAULT_CHUNK_SIZE, RootHash};
use crate::session::{self, Rendezvous, Session, SessionError};

mod as_receiver;
mod as_sender;
mod material;
mod strangers;

use as_receiver::*;
pub use as_sender::*;
use material::*;
pub use strangers::*;

/// A name full of terminal escape sequences: an OSC 52 clipboard write, a screen clear
/// and a colour. None of its ESC or BEL bytes may reach the honest side's terminal.
pub const ESCAPE_NAME: &str = "\u{1b}]52;c;cGNwIHdhcyBoZXJl\u{7}\u{1b}[2J\u{1b}[31mred.txt";

/// The name of the bad header in [`AsSender::HostileTarHeader`]'s tar stream: an OSC 52
/// clipboard write, a screen clear and a colour, under the announced `top/`.
pub const HOSTILE_TAR_NAME: &[u8] = b"top/\x1b]52;c;cGNwIHdhcyBoZXJl\x07\x1b[2J\x1b[31mx";

/// The checksum field (8 bytes) of that header: a screen clear, a BEL and letters, so
/// that it is neither octal nor the header's sum.
pub const HOSTILE_CKSUM: &[u8; 8] = b"\x1b[2J\x07zz\0";

/// Bytes a GNU long-name entry claims in [`AsSender::LongName`]: 1 GiB.
pub const LONG_NAME_LEN: u64 = 1 << 30;

/// Bytes the zstd bomb of [`AsSender::ZstdBomb`] inflates to: 1 GiB.
pub const BOMB_LEN: u64 = 1 << 30;

/// Empty files in the folder of [`AsSender::ManyEntries`].
pub const MANY_ENTRIES: u64 = 100_000;

/// The size [`AsSender::OversizeArchive`] offers: 2.5 KiB, the tar of a folder holding
/// one file of at most 512 bytes.
pub const OVERSIZE_OFFERED: u64 = 2560;

/// The zeros in the file of [`AsSender::OversizeArchive`]: 64 MiB and a bit.
pub const OVERSIZE_LEN: u64 = (64 << 20) + 1;

/// What an adversary sender does once the honest receiver has authenticated. Unless
/// said otherwise it offers a file of [`FILE_CHUNKS`] chunks of the default chunk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsSender {
    /// Two good chunks, then a frame of random bytes.
    GarbageFrame,
    /// One good chunk, then a frame header announcing one byte more than the maximum
    /// frame length.
    OversizedHeader,
    /// [`PADDED_CHUNKS`] good chunks, each padded with a zstd skippable frame to the
    /// maximum frame length (16 MiB on the wire for 1 MiB of data), then `End`.
    PaddedFrames,
    /// One good chunk, then a chunk whose raw length is the chunk size but whose zstd
    /// payload inflates to [`BOMB_LEN`].
    ZstdBomb,
    /// A folder `x` whose tar stream opens with a GNU long-name entry of
    /// [`LONG_NAME_LEN`] zeros, sent whole and verified.
    LongName,
    /// An Offer of exactly 1 MiB announcing 65,536 entries, then a tar stream holding
    /// only the first of them.
    OfferAtLimit,
    /// An Offer announcing 65,537 entries (well under 1 MiB).
    OfferTooManyEntries,
    /// An Offer of 16 MiB: 16 million empty entries.
    OfferTooLarge,
    /// A folder `many` of [`MANY_ENTRIES`] empty files, then an entry `../escape`.
    ManyEntries,
    /// A file named [`ESCAPE_NAME`].
    EscapeOfferName,
    /// A folder whose top-level name and entries carry escape sequences; the last entry
    /// climbs out with `..`.
    EscapeTarNames,
    /// One good chunk, then half of the next frame, then silence.
    HangMidFrame,
    /// A folder `top` offered as 2 entries and [`OVERSIZE_OFFERED`] bytes, whose tar
    /// holds a file of [`OVERSIZE_LEN`] zeros, sent whole: good chunks, compressed (the
    /// zeros cost a few KiB on the wire), then `End` with matching totals (issue 14,
    /// item 3).
    OversizeArchive,
    /// A folder `top` whose tar stream holds, after `top/`, a header whose name carries
    /// an OSC 52 clipboard write and a screen clear and whose checksum field is not a
    /// number but a screen clear and a BEL ([`HOSTILE_TAR_NAME`], [`HOSTILE_CKSUM`]).
    /// The `tar` crate refuses it with an error that quotes both raw (issue 14, item 4).
    HostileTarHeader,
    /// A folder `deep` of [`DEEP_CHAINS`] chains of [`DEEP_LEVELS`] directories each
    /// (15,000 directories 150 deep), a file at the bottom of each; a valid tree, whose
    /// receiver must stay within its memory bound (issue 14).
    DeepTree,
}

/// Chains of directories in [`AsSender::DeepTree`].
pub const DEEP_CHAINS: u64 = 100;

/// Directories in each chain of [`AsSender::DeepTree`].
pub const DEEP_LEVELS: u64 = 150;

/// What an adversary receiver does once it has authenticated with the honest sender
/// and read its Offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsReceiver {
    /// Resume after `u64::MAX` chunks.
    ResumeBeyond,
    /// Resume after 2 chunks, with a root hash that is not theirs.
    ResumeWrongRoot,
    /// Accept, read a few chunks, acknowledge `u64::MAX`, read on past the window, hang
    /// up; then come back with the same peer id and resume from chunk 0.
    AckBeyondThenResumeFromZero,
    /// Accept, then say `Done` before any `End`.
    DoneEarly,
    /// Accept, read one chunk, then send a frame of random bytes.
    GarbageFrame,
    /// Accept, read two chunks, send half an `Ack` frame, then neither read nor write.
    HangMidFrame,
    /// Accept, then send an `Error` whose text is [`ESCAPE_NAME`].
    ErrorWithEscapes,
}

/// Chunks of the file an adversary sender offers by default.
pub const FILE_CHUNKS: u64 = 4;

/// Chunks [`AsSender::PaddedFrames`] sends.
pub const PADDED_CHUNKS: u64 = 8;

/// What the adversary did and saw.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// The handshake with the honest side passed: the misbehaviour came from a peer
    /// that knew the code.
    pub authenticated: bool,
    /// The misbehaviour went out.
    pub delivered: bool,
    /// The honest side's last word (`Error`, `Decline` or `Refuse`), as it sent it.
    pub told: Option<String>,
    /// Step by step, for failure messages.
    pub log: Vec<String>,
}

impl Outcome {
    fn note(&mut self, what: impl Into<String>) {
        self.log.push(what.into());
    }
}

/// A running adversary: its address (a sender's) and, once its script has run, what
/// happened.
#[derive(Debug)]
pub struct Adversary {
    addr: Option<String>,
    outcome: oneshot::Receiver<Outcome>,
}

impl Adversary {
    /// Where an adversary sender listens, with its `/p2p/` id, for `pcp receive --peer`.
    #[must_use]
    pub fn addr(&self) -> Option<&str> {
        self.addr.as_deref()
    }

    /// What happened, once the script has run (at most `limit` from now).
    pub async fn outcome(self, limit: Duration) -> Outcome {
        match tokio::time::timeout(limit, self.outcome).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => {
                Outcome { log: vec!["the adversary task died".into()], ..Outcome::default() }
            }
            Err(_) => Outcome {
                log: vec![format!("the adversary's script did not end within {limit:?}")],
                ..Outcome::default()
            },
        }
    }
}

/// Anything the adversary keeps alive after its script.
type Held = Box<dyn std::any::Any + Send>;

type Reader = FrameReader<ReadHalf<Stream>>;
type Writer = FrameWriter<WriteHalf<Stream>>;

/// How long the adversary waits for the honest side at any one step.
const STEP: Duration = Duration::from_secs(60);

fn node_config() -> node::Config {
    node::Config {
        listen: vec![
            Multiaddr::empty().with(Protocol::Ip4([127, 0, 0, 1].into())).with(Protocol::Tcp(0)),
        ],
        mdns: false,
        mdns_query_interval: Duration::from_secs(60),
        dht: None,
        serve: false,
        keypair: None,
        allow_relay: false,
    }
}

fn parse_code(code: &str) -> Result<Code, Error> {
    code.parse().map_err(|e: code::ParseCodeError| Error::InvalidOptions(e.to_string()))
}

/// Starts an adversary sender for `code` on 127.0.0.1; it plays `case` with the first
/// receiver that authenticates. Call it inside a tokio runtime, which runs it.
///
/// # Errors
/// A malformed code, and a node that cannot start or listen.
pub async fn sender(code: &str, case: AsSender) -> Result<Adversary, Error> {
    let code = parse_code(code)?;
    let (node, mut found) = Node::start(node_config())?;
    let mut incoming = node
        .control()
        .accept(session::PROTOCOL)
        .map_err(|_| NodeError::Transport("the session protocol is taken".into()))?;
    let addr = listen_addr(&node, &mut found).await?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut out = Outcome::default();
        let me = node.peer_id();
        let session = loop {
            let Some((peer, stream)) = incoming.next().await else {
                out.note("the node stopped before anyone authenticated");
                let _ = tx.send(out);
                return;
            };
            match Session::accept(stream, &code, |_| true, me, peer).await {
                Ok(s) => break s,
                Err(e) => out.note(format!("a handshake failed: {e}")),
            }
        };
        out.authenticated = true;
        out.note("authenticated");
        // A reconnection, or anyone else, gets a stream that is never answered.
        let others = tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Some((_, s)) = incoming.next().await {
                streams.push(s);
            }
        });
        let held = play_sender(case, session, &mut out).await;
        let _ = tx.send(out);
        let _keep = (node, held, others);
        std::future::pending::<()>().await;
    });
    Ok(Adversary { addr: Some(addr), outcome: rx })
}

/// Starts an adversary receiver for `code` that dials the honest sender at `addr` (a
/// multiaddr, with or without `/p2p/`) and plays `case`.
///
/// # Errors
/// A malformed code or address, and a node that cannot start.
pub async fn receiver(code: &str, addr: &str, case: AsReceiver) -> Result<Adversary, Error> {
    let code = parse_code(code)?;
    let addr: Multiaddr =
        addr.parse().map_err(|e: libp2p::multiaddr::Error| Error::InvalidOptions(e.to_string()))?;
    let (node, found) = Node::start(node_config())?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut out = Outcome::default();
        let held = match meet(&node, found, addr, &code, &mut out).await {
            Some((peer, session)) => {
                out.authenticated = true;
                out.note("authenticated");
                play_receiver(case, &node, peer, &code, session, &mut out).await
            }
            None => Box::new(()),
        };
        let _ = tx.send(out);
        let _keep = (node, held);
        std::future::pending::<()>().await;
    });
    Ok(Adversary { addr: None, outcome: rx })
}

/// Dials the honest sender until it connects, then authenticates.
async fn meet(
    node: &Node,
    mut found: tokio::sync::mpsc::Receiver<NodeEvent>,
    addr: Multiaddr,
    code: &Code,
    out: &mut Outcome,
) -> Option<(PeerId, Session<Stream>)> {
    let connected = async {
        node.dial(addr.clone()).await.ok()?;
        while let Some(ev) = found.recv().await {
            match ev {
                NodeEvent::Discovered { peer, .. } => return Some(peer),
                NodeEvent::DialFailed { .. } => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    node.dial(addr.clone()).await.ok()?;
                }
                _ => {}
            }
        }
        None
    };
    let Some(peer) = tokio::time::timeout(STEP, connected).await.ok().flatten() else {
        out.note(format!("could not reach {addr}"));
        return None;
    };
    match connect(node, peer, code).await {
        Ok(s) => Some((peer, s)),
        Err(e) => {
            out.note(format!("the handshake failed: {e}"));
            None
        }
    }
}

/// Opens a session stream to `peer` and runs the receiver's side of the PAKE.
async fn connect(node: &Node, peer: PeerId, code: &Code) -> Result<Session<Stream>, SessionError> {
    let stream = node
        .control()
        .open_stream(peer, session::PROTOCOL)
        .await
        .map_err(|e| SessionError::Io(io::Error::other(e.to_string())))?;
    let at = Rendezvous { channel: code.channel(), slot: code::current_slot(code::SLOT_SECS) };
    Session::connect(stream, code, at, node.peer_id(), peer).await
}

#[cfg(test)]
mod tests {
    //! The adversary's own material, checked against the engine's decoders: what it
    //! sends must be what the cases say, or a passing test proves nothing.

    use super::*;
    use crate::framing::{FrameKey, MAX_PLAINTEXT_LEN};
    use crate::message::MessageError;

    #[test]
    fn a_padded_chunk_fills_a_frame_and_still_verifies() {
        let raw = file_chunk(3);
        let payload = padded_payload(&raw);
        assert_eq!(CHUNK_HEADER_LEN + payload.len(), MAX_PLAINTEXT_LEN);
        let key = FrameKey::new([1; 32]);
        let head = ChunkHeader {
            index: 0,
            flags: FLAG_ZSTD,
            raw_len: DEFAULT_CHUNK_SIZE,
            hash: *blake3::hash(&raw).as_bytes(),
        };
        let mut plain = vec![0u8; CHUNK_HEADER_LEN];
        let mut bytes = [0u8; CHUNK_HEADER_LEN];
        head.write(&mut bytes);
        plain.copy_from_slice(&bytes);
        plain.extend_from_slice(&payload);
        let header = key.seal(0, false, &mut plain).expect("seal");
        assert_eq!(header.len, MAX_FRAME_LEN);
        let opened = pipeline::open_chunk(&key, 0, header, plain, 0, DEFAULT_CHUNK_SIZE)
            .expect("zstd skips the padding");
        assert_eq!(opened.data, raw);
    }

    #[test]
    fn the_bomb_is_small_and_inflates_past_the_chunk() {
        let bomb = zeros_compressed(BOMB_LEN).expect("compress");
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let mut dec = zstd::stream::read::Decoder::new(&bomb[..]).expect("decoder");
        let n = io::copy(&mut (&mut dec).take(8 << 20), &mut io::sink()).expect("inflate");
        assert_eq!(n, 8 << 20, "inflates well past one chunk");
    }

    #[test]
    fn the_offer_at_the_limit_is_exactly_at_it_and_decodes() {
        let offer = offer_at_limit();
        let plain = Control::Offer(offer.clone()).encode();
        assert_eq!(plain.len() - 1, MAX_OFFER_LEN);
        assert_eq!(offer.entries.len(), MAX_ENTRIES);
        let unique: std::collections::HashSet<_> = offer.entries.iter().collect();
        assert_eq!(unique.len(), MAX_ENTRIES);
        assert_eq!(Control::decode(&plain).expect("at the limit"), Control::Offer(offer));
    }

    #[test]
    fn the_offers_over_the_limit_are_well_formed_and_refused() {
        // Under the limits, the hand-written encoding is postcard's.
        let small = raw_offer(3);
        let Control::Offer(o) = Control::decode(&small).expect("decodes") else {
            panic!("not an offer")
        };
        assert_eq!((o.kind, o.name.as_str(), o.entries.len()), (Kind::Archive, "x", 3));
        let too_many = raw_offer(MAX_ENTRIES as u64 + 1);
        assert!(matches!(
            Control::decode(&too_many),
            Err(MessageError::OverLimit { limit: "more than 65536 entries", .. })
        ));
        let max = MAX_PLAINTEXT_LEN as u64;
        let huge = raw_offer(max - (raw_offer(0).len() as u64 + 4));
        assert!(huge.len() <= MAX_PLAINTEXT_LEN && huge.len() > MAX_PLAINTEXT_LEN - 8);
        assert!(matches!(
            Control::decode(&huge),
            Err(MessageError::OverLimit { limit: "over 1048576 bytes", .. })
        ));
    }

    fn length(mut tar: TarGen) -> u64 {
        io::copy(&mut tar, &mut io::sink()).expect("generated")
    }

    #[test]
    fn tar_streams_have_the_lengths_they_claim() {
        let b = BLOCK as u64;
        assert_eq!(length(TarGen::long_name()), b + LONG_NAME_LEN + b + 2 * b);
        assert_eq!(length(TarGen::many()), b + MANY_ENTRIES * b + 2 * b + 2 * b);
        for tar in
            [TarGen::long_name, TarGen::many, TarGen::escapes, TarGen::oversize, TarGen::deep]
        {
            assert_eq!(tar().len(), length(tar()));
        }
        assert_eq!(TarGen::one_dir("d").len(), length(TarGen::one_dir("d")));
        assert!(length(TarGen::oversize()) > 64 << 20);
    }

    /// The oversize folder is what its Offer says but for its size: two entries under
    /// `top`, and far more than [`OVERSIZE_OFFERED`] bytes, which its compressed chunks
    /// cost next to nothing.
    #[test]
    fn the_oversize_folder_is_two_entries_of_zeros_that_compress() {
        let mut a = tar::Archive::new(TarGen::oversize());
        let entries: Vec<_> = a
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (e.path_bytes().into_owned(), e.size())
            })
            .collect();
        assert_eq!(entries, [(b"top/".to_vec(), 0), (b"top/zeros".to_vec(), OVERSIZE_LEN)]);
        let mut tar = TarGen::oversize();
        let mut wire = 0;
        let mut raw = vec![0u8; DEFAULT_CHUNK_SIZE as usize];
        loop {
            let n = read_full(&mut tar, &mut raw);
            if n == 0 {
                break;
            }
            wire += zstd::bulk::compress(&raw[..n], 1).expect("compress").len();
        }
        assert!(wire < 1 << 20, "{wire} bytes compressed");
    }

    #[test]
    fn the_tar_streams_read_as_tar() {
        let mut names = Vec::new();
        let mut a = tar::Archive::new(TarGen::escapes());
        for e in a.entries().expect("entries") {
            names.push(e.expect("entry").path_bytes().into_owned());
        }
        assert_eq!(names.len(), 3);
        assert!(names[2].windows(3).any(|w| w == b"../"));
        let mut a = tar::Archive::new(TarGen::many());
        assert_eq!(a.entries().expect("entries").count() as u64, MANY_ENTRIES + 2);
    }

    #[test]
    fn the_hostile_header_is_refused_by_the_crate_with_its_escapes() {
        // What the case is about: the crate's own message carries the raw bytes.
        let mut a = tar::Archive::new(TarGen::hostile_header());
        let mut entries = a.entries().expect("entries");
        let first = entries.next().expect("top/").expect("a good header");
        assert_eq!(&*first.path_bytes(), b"top/");
        drop(first);
        let e = entries.next().expect("a second header").err().expect("refused");
        let text = e.to_string();
        assert!(text.contains("cksum") && text.contains("\x1b]52;") && text.contains('\x07'));
    }
}
