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
    let listening = async {
        while let Some(ev) = found.recv().await {
            if let NodeEvent::Listening(a) = ev {
                return Some(a);
            }
        }
        None
    };
    let addr = tokio::time::timeout(STEP, listening)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| NodeError::Transport("the adversary never listened".into()))?;
    let addr = addr.with(Protocol::P2p(node.peer_id())).to_string();
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

// ---------------------------------------------------------------------------------------
// The sender's cases.

async fn play_sender(case: AsSender, mut s: Session<Stream>, out: &mut Outcome) -> Held {
    let chunk = DEFAULT_CHUNK_SIZE;
    let file = |name: &str, chunks: u64| Offer {
        kind: Kind::File,
        name: name.into(),
        size: Some(chunks * u64::from(chunk)),
        entries: Vec::new(),
        chunk_size: chunk,
        files: None,
        kinds: Vec::new(),
    };
    // The Offer cases end at the Offer: the honest side must refuse it.
    match case {
        AsSender::OfferTooManyEntries | AsSender::OfferTooLarge => {
            let plain = if case == AsSender::OfferTooManyEntries {
                raw_offer(MAX_ENTRIES as u64 + 1)
            } else {
                // As many empty entries as one frame can carry.
                let max = crate::framing::MAX_PLAINTEXT_LEN as u64;
                raw_offer(max - (raw_offer(0).len() as u64 + 4))
            };
            out.note(format!("Offer of {} bytes", plain.len()));
            let (_, reader, mut writer) = s.into_parts();
            if let Err(e) = writer.send(plain, false).await {
                out.note(format!("cannot send the Offer: {e}"));
                return Box::new((reader, writer));
            }
            out.delivered = true;
            let reader = drain(reader, out).await;
            return Box::new((reader, writer));
        }
        _ => {}
    }
    let offer = match case {
        AsSender::PaddedFrames => file("padded.bin", PADDED_CHUNKS),
        AsSender::EscapeOfferName => file(ESCAPE_NAME, FILE_CHUNKS),
        AsSender::LongName => sized(folder("x", None), &TarGen::long_name()),
        AsSender::OfferAtLimit => offer_at_limit(),
        AsSender::ManyEntries => sized(folder("many", Some(MANY_ENTRIES + 1)), &TarGen::many()),
        AsSender::EscapeTarNames => sized(folder(ESCAPE_TOP, Some(3)), &TarGen::escapes()),
        AsSender::OversizeArchive => {
            Offer { size: Some(OVERSIZE_OFFERED), ..folder("top", Some(2)) }
        }
        AsSender::HostileTarHeader => sized(folder("top", Some(2)), &TarGen::hostile_header()),
        AsSender::DeepTree => {
            sized(folder("deep", Some(1 + DEEP_CHAINS * (DEEP_LEVELS + 1))), &TarGen::deep())
        }
        _ => file("data.bin", FILE_CHUNKS),
    };
    if !offer_accepted(&mut s, offer.clone(), out).await {
        // A name with escapes is misbehaviour enough: the receiver has shown it, and a
        // refusal names it again.
        out.delivered = case == AsSender::EscapeOfferName;
        return Box::new(s);
    }
    let (_, reader, writer) = s.into_parts();
    let drained = tokio::spawn(async move {
        let mut seen = Outcome::default();
        let reader = drain(reader, &mut seen).await;
        (reader, seen)
    });
    let mut w = Chunks::new(writer, chunk);
    let played = match case {
        AsSender::GarbageFrame => garbage_after(&mut w, 2).await,
        AsSender::OversizedHeader => oversized_header(&mut w).await,
        AsSender::PaddedFrames => padded(&mut w).await,
        AsSender::ZstdBomb => bomb(&mut w).await,
        AsSender::HangMidFrame => half_frame_after(&mut w, 1).await,
        AsSender::EscapeOfferName => w.data(FILE_CHUNKS).await.map(|()| true),
        AsSender::LongName => w.tar(TarGen::long_name()).await,
        AsSender::OfferAtLimit => w.tar(TarGen::one_dir(&offer.entries[0])).await,
        AsSender::ManyEntries => w.tar(TarGen::many()).await,
        AsSender::EscapeTarNames => w.tar(TarGen::escapes()).await,
        AsSender::OversizeArchive => oversize(&mut w).await,
        AsSender::HostileTarHeader => w.tar(TarGen::hostile_header()).await,
        AsSender::DeepTree => w.tar(TarGen::deep()).await,
        AsSender::OfferTooManyEntries | AsSender::OfferTooLarge => unreachable!("handled above"),
    };
    match played {
        Ok(delivered) => out.delivered = delivered,
        Err(e) => out.note(format!("the script stopped: {e}")),
    }
    out.note(format!("{} chunks sent", w.index));
    // The honest side's last word, once it has said it (or gone).
    let reader = match tokio::time::timeout(Duration::from_secs(120), drained).await {
        Ok(Ok((reader, seen))) => {
            out.told = seen.told;
            out.log.extend(seen.log);
            Some(reader)
        }
        _ => {
            out.note("the honest side neither ended nor went away");
            None
        }
    };
    Box::new((reader, w.w))
}

/// Sends the Offer and waits for the answer; true if it is `Accept`.
async fn offer_accepted(s: &mut Session<Stream>, offer: Offer, out: &mut Outcome) -> bool {
    if let Err(e) = s.send(&Control::Offer(offer)).await {
        out.note(format!("cannot send the Offer: {e}"));
        return false;
    }
    match s.recv_within(Some(STEP)).await {
        Ok(Control::Accept) => {
            out.note("accepted");
            true
        }
        Ok(Control::Decline(m) | Control::Refuse(m)) => {
            out.note("refused");
            out.told = Some(m);
            false
        }
        Ok(other) => {
            out.note(format!("answered {}", other.name()));
            false
        }
        Err(SessionError::Remote { message: m, .. }) => {
            out.told = Some(m);
            false
        }
        Err(e) => {
            out.note(format!("no answer to the Offer: {e}"));
            false
        }
    }
}

/// The honest side's frames until its last one (whose words are kept) or until it goes
/// away; the reader is handed back to be held.
async fn drain(mut reader: Reader, out: &mut Outcome) -> Reader {
    reader.set_deadline(Some(STEP));
    let mut frames = 0u64;
    loop {
        match reader.next_sealed().await {
            Ok((counter, header, mut body)) => {
                frames += 1;
                if !header.last {
                    continue;
                }
                let word = reader
                    .key()
                    .open(counter, header, &mut body)
                    .ok()
                    .and_then(|()| Control::decode(&body).ok());
                match word {
                    Some(Control::Error(m) | Control::Decline(m) | Control::Refuse(m)) => {
                        out.note(format!("the honest side's last word: {m:?}"));
                        out.told = Some(m);
                    }
                    Some(other) => out.note(format!("the honest side ended with {}", other.name())),
                    None => out.note("the honest side's last frame did not open"),
                }
                break;
            }
            Err(e) => {
                out.note(format!("after {frames} frames from the honest side: {e}"));
                break;
            }
        }
    }
    reader
}

/// The writing half with the stream's running totals.
struct Chunks {
    w: Writer,
    chunk_size: u32,
    index: u64,
    bytes: u64,
    root: RootHash,
}

type Step = Result<bool, Error>;

fn frame_err(e: FrameError) -> Error {
    SessionError::from(e).into()
}

fn io_err(e: io::Error) -> Error {
    frame_err(FrameError::Io(e))
}

/// A blocking task of the adversary's own that panicked: a bug here, said as I/O.
fn joined(e: tokio::task::JoinError) -> Error {
    io_err(io::Error::other(e))
}

impl Chunks {
    fn new(w: Writer, chunk_size: u32) -> Chunks {
        Chunks { w, chunk_size, index: 0, bytes: 0, root: RootHash::default() }
    }

    /// One good chunk, sealed (and compressed where it pays) like pcp does.
    async fn good(&mut self, raw: Vec<u8>) -> Result<(), Error> {
        let counter = self.w.reserve().map_err(frame_err)?;
        let (key, i) = (self.w.key().clone(), self.index);
        let sealed = tokio::task::spawn_blocking(move || {
            pipeline::seal_chunk(i, &raw, Compression::Zstd(1), &key, counter)
        })
        .await
        .map_err(joined)??;
        self.w.write_sealed(sealed.header, &sealed.frame).await.map_err(frame_err)?;
        self.root.push(&sealed.hash);
        self.bytes += sealed.raw_len as u64;
        self.index += 1;
        self.flush().await
    }

    /// A chunk with this header and payload, sealed as the next frame.
    async fn custom(&mut self, head: ChunkHeader, payload: &[u8]) -> Result<(), Error> {
        let mut plain = chunk_plaintext(head, payload);
        let counter = self.w.reserve().map_err(frame_err)?;
        let header = self.w.key().seal(counter, false, &mut plain).map_err(frame_err)?;
        self.w.write_sealed(header, &plain).await.map_err(frame_err)?;
        self.flush().await
    }

    /// `n` good chunks of the default file data, then `End`.
    async fn data(&mut self, n: u64) -> Result<(), Error> {
        for i in 0..n {
            self.good(file_chunk(i)).await?;
        }
        self.end().await
    }

    /// A whole tar stream in chunks, then `End`.
    async fn tar(&mut self, mut tar: TarGen) -> Step {
        loop {
            let mut raw = vec![0u8; self.chunk_size as usize];
            let n = read_full(&mut tar, &mut raw);
            raw.truncate(n);
            if n == 0 {
                break;
            }
            self.good(raw).await?;
            if n < self.chunk_size as usize {
                break;
            }
        }
        self.end().await?;
        Ok(true)
    }

    async fn end(&mut self) -> Result<(), Error> {
        let end =
            End { chunks: self.index, bytes: self.bytes, root: self.root.finish(), meta: None };
        session::send(&mut self.w, &Control::End(end)).await?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.w.raw().flush().await.map_err(io_err)
    }
}

/// A chunk message's plaintext: its header, then `payload`, with room for the tag.
fn chunk_plaintext(head: ChunkHeader, payload: &[u8]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(CHUNK_HEADER_LEN + payload.len() + TAG_LEN);
    let mut bytes = [0u8; CHUNK_HEADER_LEN];
    head.write(&mut bytes);
    plain.extend_from_slice(&bytes);
    plain.extend_from_slice(payload);
    plain
}

/// Chunk `i` of the file an adversary sender offers (default chunk size): a repeating
/// pattern that compresses. What verified of it must still be in the honest
/// receiver's part file after the misbehaviour.
#[must_use]
pub fn file_chunk(i: u64) -> Vec<u8> {
    (0..DEFAULT_CHUNK_SIZE as usize).map(|j| ((j as u64 / 64 + i * 7) % 251) as u8).collect()
}

async fn garbage_after(w: &mut Chunks, good: u64) -> Step {
    for i in 0..good {
        w.good(file_chunk(i)).await?;
    }
    // Well-formed framing, a counter in sequence, but bytes no key sealed.
    let body: Vec<u8> = (0..4096 + TAG_LEN).map(|_| rand::random::<u8>()).collect();
    w.w.reserve().map_err(frame_err)?;
    let header = Header { len: body.len() as u32, last: false };
    w.w.write_sealed(header, &body).await.map_err(frame_err)?;
    w.flush().await?;
    Ok(true)
}

async fn oversized_header(w: &mut Chunks) -> Step {
    w.good(file_chunk(0)).await?;
    let raw = w.w.raw();
    raw.write_all(&(MAX_FRAME_LEN + 1).to_be_bytes()).await.map_err(io_err)?;
    raw.write_all(&[0x42; 1024]).await.map_err(io_err)?;
    w.flush().await?;
    Ok(true)
}

async fn half_frame_after(w: &mut Chunks, good: u64) -> Step {
    for i in 0..good {
        w.good(file_chunk(i)).await?;
    }
    let raw = file_chunk(good);
    let hash = *blake3::hash(&raw).as_bytes();
    let mut plain =
        chunk_plaintext(ChunkHeader { index: good, flags: 0, raw_len: w.chunk_size, hash }, &raw);
    let counter = w.w.reserve().map_err(frame_err)?;
    let header = w.w.key().seal(counter, false, &mut plain).map_err(frame_err)?;
    let raw = w.w.raw();
    raw.write_all(&header.to_bytes()).await.map_err(io_err)?;
    raw.write_all(&plain[..plain.len() / 2]).await.map_err(io_err)?;
    w.flush().await?;
    Ok(true)
}

/// zstd's skippable frame: magic, then a length, then that many bytes a decoder skips.
fn skippable(len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + len);
    f.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
    f.extend_from_slice(&u32::try_from(len).expect("a frame is far below 4 GiB").to_le_bytes());
    f.resize(8 + len, 0);
    f
}

/// The payload of a valid chunk padded to fill a frame of [`MAX_FRAME_LEN`].
fn padded_payload(raw: &[u8]) -> Vec<u8> {
    let mut payload = zstd::bulk::compress(raw, 1).expect("zstd compresses into a Vec");
    let room = crate::framing::MAX_PLAINTEXT_LEN - CHUNK_HEADER_LEN - payload.len() - 8;
    payload.extend_from_slice(&skippable(room));
    payload
}

/// Keepalives [`AsSender::PaddedFrames`] may send while it seals: one every 2 s, so
/// that the honest receiver does not take the wait for a dead link.
const PADDING_KEEPALIVES: u64 = 30;

async fn padded(w: &mut Chunks) -> Step {
    // All frames are sealed first and then written back to back, so the honest receiver
    // gets them as fast as the link goes, whatever sealing costs here. Frames go out in
    // counter order, so the keepalives that cover the wait take the first counters.
    let key = w.w.key().clone();
    let mut keepalives = VecDeque::new();
    for _ in 0..PADDING_KEEPALIVES {
        let mut plain = Control::Keepalive.encode();
        let counter = w.w.reserve().map_err(frame_err)?;
        keepalives.push_back((key.seal(counter, false, &mut plain).map_err(frame_err)?, plain));
    }
    let mut frames = Vec::new();
    for i in 0..PADDED_CHUNKS {
        let raw = file_chunk(i);
        let hash = *blake3::hash(&raw).as_bytes();
        let head = ChunkHeader { index: i, flags: FLAG_ZSTD, raw_len: w.chunk_size, hash };
        let counter = w.w.reserve().map_err(frame_err)?;
        let key = key.clone();
        frames.push(tokio::task::spawn_blocking(move || {
            let mut plain = chunk_plaintext(head, &padded_payload(&raw));
            key.seal(counter, false, &mut plain).map(|header| (header, plain))
        }));
        w.root.push(&hash);
    }
    while !frames.iter().all(tokio::task::JoinHandle::is_finished) {
        let Some((header, body)) = keepalives.pop_front() else { break };
        w.w.write_sealed(header, &body).await.map_err(frame_err)?;
        w.flush().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for (header, body) in keepalives {
        w.w.write_sealed(header, &body).await.map_err(frame_err)?;
    }
    for frame in frames {
        let (header, body) = frame.await.map_err(joined)?.map_err(frame_err)?;
        // Straight to the stream, without the writer's deadline: a receiver slow to open
        // 16 MiB frames (seconds each in a debug build) must not make the adversary give
        // up first.
        let raw = w.w.raw();
        raw.write_all(&header.to_bytes()).await.map_err(io_err)?;
        raw.write_all(&body).await.map_err(io_err)?;
        w.bytes += u64::from(w.chunk_size);
        w.index += 1;
    }
    w.flush().await?;
    w.end().await?;
    Ok(true)
}

/// `len` zeros through zstd, fed a MiB at a time: the bomb is never whole in memory
/// before it is compressed.
fn zeros_compressed(len: u64) -> io::Result<Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1)?;
    let block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        enc.write_all(&block[..n])?;
        left -= n as u64;
    }
    enc.finish()
}

async fn bomb(w: &mut Chunks) -> Step {
    w.good(file_chunk(0)).await?;
    let payload = tokio::task::spawn_blocking(|| zeros_compressed(BOMB_LEN))
        .await
        .map_err(joined)?
        .map_err(io_err)?;
    let zeros = vec![0u8; w.chunk_size as usize];
    let head = ChunkHeader {
        index: w.index,
        flags: FLAG_ZSTD,
        raw_len: w.chunk_size,
        hash: *blake3::hash(&zeros).as_bytes(),
    };
    w.custom(head, &payload).await?;
    Ok(true)
}

/// The whole oversize tar in good chunks. The honest receiver may hang up as soon as
/// the first chunk past the offer arrives: the misbehaviour is out once it is sent.
async fn oversize(w: &mut Chunks) -> Step {
    match w.tar(TarGen::oversize()).await {
        Err(_) if w.bytes > OVERSIZE_OFFERED => Ok(true),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------
// Offers.

/// A top-level name with escape sequences, for [`AsSender::EscapeTarNames`].
const ESCAPE_TOP: &str = "\u{1b}[31mtop\u{1b}]0;title\u{7}";

fn folder(name: &str, files: Option<u64>) -> Offer {
    Offer {
        kind: Kind::Archive,
        name: name.into(),
        size: None,
        entries: vec![name.into()],
        chunk_size: DEFAULT_CHUNK_SIZE,
        files,
        kinds: vec![TopKind::Folder],
    }
}

/// `offer` with the length of `tar` as its size: the receiver refuses a folder offer
/// without a size (issue 14, item 3), and the cases not about the size tell the truth.
fn sized(offer: Offer, tar: &TarGen) -> Offer {
    Offer { size: Some(tar.len()), ..offer }
}

/// An archive Offer of exactly [`MAX_OFFER_LEN`] bytes announcing [`MAX_ENTRIES`]
/// names, all distinct.
fn offer_at_limit() -> Offer {
    let mut offer = folder("limit", Some(MAX_ENTRIES as u64));
    // 14-byte names: with their length byte and their kind, 16 bytes an entry, 1 MiB in
    // all; the rest of the Offer is taken back from the first few names.
    offer.entries = (0..MAX_ENTRIES).map(|i| format!("e{i:013}")).collect();
    offer.kinds = vec![TopKind::Folder; MAX_ENTRIES];
    // The length of the tar it sends (one directory: the same for any of the names),
    // before the names are shortened to bring the Offer to the limit.
    offer.size = Some(TarGen::one_dir(&offer.entries[0]).len());
    let body = |o: &Offer| Control::Offer(o.clone()).encode().len() - 1;
    let over = body(&offer) - MAX_OFFER_LEN;
    for name in offer.entries.iter_mut().take(over) {
        // Dropping the first zero keeps the names distinct: they differ in length.
        name.remove(1);
    }
    debug_assert_eq!(body(&offer), MAX_OFFER_LEN);
    offer
}

/// An archive Offer's plaintext (tag included) announcing `entries` empty names,
/// written as bytes: 16 million entries must not cost 16 million strings here.
fn raw_offer(entries: u64) -> Vec<u8> {
    let mut b = vec![message::tag::OFFER];
    varint(&mut b, 2); // Kind::Archive
    varint(&mut b, 1);
    b.push(b'x'); // name
    b.push(0); // size: None
    varint(&mut b, entries);
    b.resize(b.len() + entries as usize, 0); // each entry: the empty string
    varint(&mut b, u64::from(DEFAULT_CHUNK_SIZE));
    b.push(0); // files: None
    // kinds: a folder for each entry, as decoding requires; over the limit the entries
    // are refused before the kinds are read, so none are written and the Offer stays
    // one plaintext long.
    let kinds = if entries <= MAX_ENTRIES as u64 { entries } else { 0 };
    varint(&mut b, kinds);
    b.resize(b.len() + kinds as usize, 1); // TopKind::Folder
    b
}

/// postcard's unsigned varint (LEB128).
fn varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

// ---------------------------------------------------------------------------------------
// Tar streams, generated as they are read.

const BLOCK: usize = 512;

/// A tar header block for `name` (raw bytes, at most 100, `..` and escapes allowed).
fn tar_header(kind: tar::EntryType, name: &[u8], size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_mtime(0);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A header for `name`, after a GNU long-name entry when it does not fit in 100 bytes.
fn long_header(kind: tar::EntryType, name: &str) -> Vec<u8> {
    if name.len() <= 100 {
        return tar_header(kind, name.as_bytes(), 0);
    }
    let mut out = tar_header(tar::EntryType::GNULongName, b"././@LongLink", name.len() as u64 + 1);
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
    out.extend_from_slice(&tar_header(kind, &name.as_bytes()[..100], 0));
    out
}

/// The header(s) of level `level` of chain `chain` in [`Piece::Deep`]: a directory for
/// levels below [`DEEP_LEVELS`], the file `f` at the bottom.
fn deep_header(chain: u64, level: u64) -> Vec<u8> {
    let mut name = format!("deep/c{chain:03}");
    for _ in 0..level.min(DEEP_LEVELS - 1) {
        name.push_str("/d");
    }
    let kind = if level < DEEP_LEVELS {
        name.push('/');
        tar::EntryType::Directory
    } else {
        name.push_str("/f");
        tar::EntryType::Regular
    };
    long_header(kind, &name)
}

enum Piece {
    Bytes(Vec<u8>),
    Zeros(u64),
    /// `deep/c000/d/…` chains of directories with a file `f` at the bottom of each,
    /// made one header at a time: chain `chain`, at `level` (`levels` is the file).
    Deep {
        chain: u64,
        level: u64,
    },
    /// Empty files `dir/f000000`, … made one header at a time.
    Files {
        dir: String,
        next: u64,
        count: u64,
    },
}

/// A tar stream made piece by piece as it is read, so that a 1 GiB entry or 100,000
/// headers are never in memory at once.
pub(crate) struct TarGen {
    pieces: VecDeque<Piece>,
    /// The bytes of the current piece, and how many of them were read.
    pending: Vec<u8>,
    at: usize,
}

impl TarGen {
    fn new(pieces: Vec<Piece>) -> TarGen {
        TarGen { pieces: pieces.into(), pending: Vec::new(), at: 0 }
    }

    fn end() -> Piece {
        Piece::Bytes(vec![0; 2 * BLOCK])
    }

    /// The bytes still to be read.
    fn len(&self) -> u64 {
        let pieces: u64 = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len() as u64,
                Piece::Zeros(n) => *n,
                Piece::Files { next, count, .. } => (count - next) * BLOCK as u64,
                Piece::Deep { chain, level } => (*chain..DEEP_CHAINS)
                    .flat_map(|c| {
                        let from = if c == *chain { *level } else { 0 };
                        (from..=DEEP_LEVELS).map(move |l| deep_header(c, l).len() as u64)
                    })
                    .sum(),
            })
            .sum();
        pieces + (self.pending.len() - self.at) as u64
    }

    /// The folder `top`: its directory, then `top/zeros` of [`OVERSIZE_LEN`] zeros.
    fn oversize() -> TarGen {
        use tar::EntryType;
        let pad = OVERSIZE_LEN.next_multiple_of(BLOCK as u64) - OVERSIZE_LEN;
        TarGen::new(vec![
            Piece::Bytes(tar_header(EntryType::Directory, b"top/", 0)),
            Piece::Bytes(tar_header(EntryType::Regular, b"top/zeros", OVERSIZE_LEN)),
            Piece::Zeros(OVERSIZE_LEN + pad),
            TarGen::end(),
        ])
    }

    /// A GNU long-name entry of [`LONG_NAME_LEN`] zeros, then the empty file `x`.
    fn long_name() -> TarGen {
        use tar::EntryType;
        TarGen::new(vec![
            Piece::Bytes(tar_header(EntryType::GNULongName, b"././@LongLink", LONG_NAME_LEN)),
            Piece::Zeros(LONG_NAME_LEN),
            Piece::Bytes(tar_header(EntryType::Regular, b"x", 0)),
            TarGen::end(),
        ])
    }

    fn one_dir(name: &str) -> TarGen {
        TarGen::new(vec![
            Piece::Bytes(tar_header(tar::EntryType::Directory, format!("{name}/").as_bytes(), 0)),
            TarGen::end(),
        ])
    }

    fn many() -> TarGen {
        use tar::EntryType;
        let mut escape = tar_header(EntryType::Regular, b"../escape", 5);
        escape.extend_from_slice(b"pwned");
        escape.resize(2 * BLOCK, 0);
        TarGen::new(vec![
            Piece::Bytes(tar_header(EntryType::Directory, b"many/", 0)),
            Piece::Files { dir: "many".into(), next: 0, count: MANY_ENTRIES },
            Piece::Bytes(escape),
            TarGen::end(),
        ])
    }

    fn deep() -> TarGen {
        TarGen::new(vec![
            Piece::Bytes(tar_header(tar::EntryType::Directory, b"deep/", 0)),
            Piece::Deep { chain: 0, level: 0 },
            TarGen::end(),
        ])
    }

    fn escapes() -> TarGen {
        use tar::EntryType;
        let top = ESCAPE_TOP.as_bytes();
        let inside = [top, b"/\x1b]0;inside\x07\x1b[2Jfile"].concat();
        let climb = [top, b"/../\x1b]52;c;cGNw\x07\x1b[1Aclimb"].concat();
        TarGen::new(vec![
            Piece::Bytes(tar_header(EntryType::Directory, &[top, b"/"].concat(), 0)),
            Piece::Bytes(tar_header(EntryType::Regular, &inside, 0)),
            Piece::Bytes(tar_header(EntryType::Regular, &climb, 0)),
            TarGen::end(),
        ])
    }

    /// `top/`, then a header the `tar` crate refuses for its checksum field, whose name
    /// and field carry escape sequences.
    fn hostile_header() -> TarGen {
        use tar::EntryType;
        let mut bad = tar_header(EntryType::Regular, HOSTILE_TAR_NAME, 0);
        // Offset 148: the checksum field, which the crate parses before anything else.
        bad[148..156].copy_from_slice(HOSTILE_CKSUM);
        TarGen::new(vec![
            Piece::Bytes(tar_header(EntryType::Directory, b"top/", 0)),
            Piece::Bytes(bad),
            TarGen::end(),
        ])
    }
}

impl Read for TarGen {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.at);
                buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            let Some(piece) = self.pieces.front_mut() else { return Ok(0) };
            self.pending.clear();
            self.at = 0;
            match piece {
                Piece::Bytes(b) => {
                    self.pending = std::mem::take(b);
                    self.pieces.pop_front();
                }
                Piece::Zeros(left) => {
                    // Straight into the caller's buffer: a GiB of zeros costs nothing here.
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    buf[..n].fill(0);
                    *left -= n as u64;
                    if *left == 0 {
                        self.pieces.pop_front();
                    }
                    return Ok(n);
                }
                Piece::Deep { chain, level } => {
                    self.pending = deep_header(*chain, *level);
                    *level += 1;
                    if *level > DEEP_LEVELS {
                        (*chain, *level) = (*chain + 1, 0);
                        if *chain == DEEP_CHAINS {
                            self.pieces.pop_front();
                        }
                    }
                }
                Piece::Files { dir, next, count } => {
                    let name = format!("{dir}/f{next:06}");
                    self.pending = tar_header(tar::EntryType::Regular, name.as_bytes(), 0);
                    *next += 1;
                    if next == count {
                        self.pieces.pop_front();
                    }
                }
            }
        }
    }
}

/// Fills `buf` from `r` unless it ends first; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

// ---------------------------------------------------------------------------------------
// The receiver's cases.

async fn play_receiver(
    case: AsReceiver,
    node: &Node,
    peer: PeerId,
    code: &Code,
    mut s: Session<Stream>,
    out: &mut Outcome,
) -> Held {
    match s.recv().await {
        Ok(Control::Offer(o)) => out.note(format!("offered {:?}, {:?} bytes", o.name, o.size)),
        Ok(other) => {
            out.note(format!("the sender opened with {}", other.name()));
            return Box::new(s);
        }
        Err(e) => {
            out.note(format!("no Offer: {e}"));
            return Box::new(s);
        }
    }
    let answer = match case {
        AsReceiver::ResumeBeyond => Control::Resume(Resume { chunks: u64::MAX, root: [0; 32] }),
        AsReceiver::ResumeWrongRoot => Control::Resume(Resume { chunks: 2, root: [0x55; 32] }),
        _ => Control::Accept,
    };
    if let Err(e) = s.send(&answer).await {
        out.note(format!("cannot answer the Offer: {e}"));
        return Box::new(s);
    }
    let (_, mut reader, mut writer) = s.into_parts();
    if case == AsReceiver::AckBeyondThenResumeFromZero {
        return ack_beyond_then_resume(node, peer, code, reader, writer, out).await;
    }
    match receiver_step(case, &mut reader, &mut writer).await {
        Ok(hold) => {
            out.delivered = true;
            if hold {
                // Neither read nor write again: both halves stay as they are.
                return Box::new((reader, writer));
            }
        }
        Err(e) => out.note(format!("the script stopped: {e}")),
    }
    let reader = drain(reader, out).await;
    Box::new((reader, writer))
}

/// The misbehaviour after the answer to the Offer; true if the adversary must then
/// go silent, without even reading.
async fn receiver_step(case: AsReceiver, reader: &mut Reader, writer: &mut Writer) -> Step {
    match case {
        AsReceiver::ResumeBeyond | AsReceiver::ResumeWrongRoot => {}
        AsReceiver::AckBeyondThenResumeFromZero => unreachable!("played on its own"),
        AsReceiver::DoneEarly => session::send(writer, &Control::Done).await?,
        AsReceiver::GarbageFrame => {
            next_chunk(reader).await?;
            let body: Vec<u8> = (0..512 + TAG_LEN).map(|_| rand::random::<u8>()).collect();
            writer.reserve().map_err(frame_err)?;
            let header = Header { len: body.len() as u32, last: false };
            writer.write_sealed(header, &body).await.map_err(frame_err)?;
            writer.raw().flush().await.map_err(io_err)?;
        }
        AsReceiver::HangMidFrame => {
            for _ in 0..2 {
                next_chunk(reader).await?;
            }
            let mut plain = Control::Ack(2).encode();
            let counter = writer.reserve().map_err(frame_err)?;
            let header = writer.key().seal(counter, false, &mut plain).map_err(frame_err)?;
            let raw = writer.raw();
            raw.write_all(&header.to_bytes()).await.map_err(io_err)?;
            raw.write_all(&plain[..plain.len() / 2]).await.map_err(io_err)?;
            raw.flush().await.map_err(io_err)?;
            return Ok(true);
        }
        AsReceiver::ErrorWithEscapes => {
            session::send(writer, &Control::Error(ESCAPE_NAME.into())).await?;
        }
    }
    Ok(false)
}

/// Reads frames, unopened, until one long enough to be a chunk (keepalives are not).
async fn next_chunk(reader: &mut Reader) -> Result<(), Error> {
    loop {
        let (_, header, _) = reader.next_sealed().await.map_err(frame_err)?;
        if header.len as usize >= message::MIN_CHUNK_FRAME_LEN {
            return Ok(());
        }
    }
}

/// Issue 9, item 4, from outside: acknowledge far past what was sent, hang up, and come
/// back for chunks the sender has been told it may forget.
async fn ack_beyond_then_resume(
    node: &Node,
    peer: PeerId,
    code: &Code,
    mut reader: Reader,
    mut writer: Writer,
    out: &mut Outcome,
) -> Held {
    let mut read = 0;
    let first: Result<(), Error> = async {
        for _ in 0..4 {
            next_chunk(&mut reader).await?;
            read += 1;
        }
        session::send(&mut writer, &Control::Ack(u64::MAX)).await?;
        // The sender clamps the ack to what it wrote (4 or a little more: the stream's
        // window holds it back), then sends a window beyond it. Reading past the first
        // window shows that it took the ack; it then waits for more acks.
        for _ in 0..pipeline::window_chunks(DEFAULT_CHUNK_SIZE) {
            next_chunk(&mut reader).await?;
            read += 1;
        }
        Ok(())
    }
    .await;
    out.note(format!("read {read} chunks in the first session"));
    if let Err(e) = first {
        out.note(format!("the first session stopped: {e}"));
        return Box::new((reader, writer));
    }
    out.note("acknowledged u64::MAX and read past the window; hanging up");
    writer.close().await;
    // Until the sender gives the session up.
    let reader = drain(reader, out).await;
    drop((reader, writer));
    let mut s = match connect(node, peer, code).await {
        Ok(s) => s,
        Err(e) => {
            out.note(format!("could not come back: {e}"));
            return Box::new(());
        }
    };
    out.note("authenticated again");
    match s.recv().await {
        Ok(Control::Offer(_)) => {}
        Ok(other) => {
            out.note(format!("the sender reopened with {}", other.name()));
            return Box::new(s);
        }
        Err(e) => {
            out.note(format!("no second Offer: {e}"));
            return Box::new(s);
        }
    }
    let from_zero = Resume { chunks: 0, root: RootHash::default().finish() };
    if let Err(e) = s.send(&Control::Resume(from_zero)).await {
        out.note(format!("cannot resume: {e}"));
        return Box::new(s);
    }
    out.delivered = true;
    let (_, reader, writer) = s.into_parts();
    let reader = drain(reader, out).await;
    Box::new((reader, writer))
}

// ---------------------------------------------------------------------------------------
// Strangers at the rendezvous (issue 14, item 10): they know no code, only what anyone
// can send before the key exchange, or a wrong code.

/// Silent session streams each jammer peer holds: what one peer may hold at a sender.
pub const JAM_STREAMS_PER_PEER: usize = 2;

/// How long a jammer waits before it opens a new stream in place of one the sender
/// dropped.
const JAM_REOPEN: Duration = Duration::from_millis(100);

/// Starts a stranger on 127.0.0.1 that answers every hello, for any code, "burnt",
/// before any key exchange, as anyone can (issue 14, item 5). Its outcome comes once it
/// has said so to someone; it goes on saying it until its runtime stops.
///
/// # Errors
/// A node that cannot start or listen.
pub async fn impostor_burnt() -> Result<Adversary, Error> {
    let (node, mut found) = Node::start(node_config())?;
    let mut incoming = node
        .control()
        .accept(session::PROTOCOL)
        .map_err(|_| NodeError::Transport("the session protocol is taken".into()))?;
    let addr = listen_addr(&node, &mut found).await?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let _keep = (&node, found);
        while let Some((peer, stream)) = incoming.next().await {
            if session::claim_burnt(stream).await.is_ok()
                && let Some(tx) = tx.take()
            {
                let mut out = Outcome { delivered: true, ..Outcome::default() };
                out.note(format!("told {peer} the code is burnt"));
                let _ = tx.send(out);
            }
        }
    });
    Ok(Adversary { addr: Some(addr), outcome: rx })
}

/// Our first listen address, with our `/p2p/` id.
async fn listen_addr(
    node: &Node,
    found: &mut tokio::sync::mpsc::Receiver<NodeEvent>,
) -> Result<String, Error> {
    let listening = async {
        while let Some(ev) = found.recv().await {
            if let NodeEvent::Listening(a) = ev {
                return Some(a);
            }
        }
        None
    };
    let addr = tokio::time::timeout(STEP, listening)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| NodeError::Transport("the adversary never listened".into()))?;
    Ok(addr.with(Protocol::P2p(node.peer_id())).to_string())
}

/// Dials `addr` until it connects; the peer there.
async fn reach(
    node: &Node,
    found: &mut tokio::sync::mpsc::Receiver<NodeEvent>,
    addr: &Multiaddr,
) -> Option<PeerId> {
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
    tokio::time::timeout(STEP, connected).await.ok().flatten()
}

fn parse_addr(addr: &str) -> Result<Multiaddr, Error> {
    addr.parse().map_err(|e: libp2p::multiaddr::Error| Error::InvalidOptions(e.to_string()))
}

/// Starts a jammer of an honest sender's handshake places: one peer id per address of
/// `addrs` (all of this host), each holding [`JAM_STREAMS_PER_PEER`] session streams on
/// which it never says hello, and opening a new one shortly after the sender drops one
/// (issue 14, item 5). Its outcome comes once every stream was opened; it jams on until
/// its runtime stops.
///
/// # Errors
/// A malformed address, and a node that cannot start.
pub async fn jammer(addrs: &[String]) -> Result<Adversary, Error> {
    let addrs = addrs.iter().map(|a| parse_addr(a)).collect::<Result<Vec<_>, _>>()?;
    let (tx, rx) = oneshot::channel();
    let (opened_tx, mut opened) = tokio::sync::mpsc::channel::<()>(64);
    let mut nodes = Vec::new();
    for addr in addrs {
        let (node, mut found) = Node::start(node_config())?;
        let opened_tx = opened_tx.clone();
        let jam = node.clone();
        tokio::spawn(async move {
            let Some(peer) = reach(&jam, &mut found, &addr).await else { return };
            for _ in 0..JAM_STREAMS_PER_PEER {
                let (node, opened_tx) = (jam.clone(), opened_tx.clone());
                tokio::spawn(async move {
                    let mut first = true;
                    loop {
                        let stream = node.control().open_stream(peer, session::PROTOCOL).await;
                        let Ok(mut stream) = stream else {
                            tokio::time::sleep(JAM_REOPEN).await;
                            continue;
                        };
                        if std::mem::take(&mut first) {
                            let _ = opened_tx.send(()).await;
                        }
                        // Silent until the sender drops it (or says "busy").
                        let mut sink = Vec::new();
                        let _ = futures::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
                        tokio::time::sleep(JAM_REOPEN).await;
                    }
                });
            }
            // The node's events are read no more, but the channel stays open.
            let _found = found;
            std::future::pending::<()>().await;
        });
        nodes.push(node);
    }
    drop(opened_tx);
    let want = nodes.len() * JAM_STREAMS_PER_PEER;
    tokio::spawn(async move {
        let mut out = Outcome::default();
        let mut n = 0;
        while n < want && tokio::time::timeout(STEP, opened.recv()).await.ok().flatten().is_some() {
            n += 1;
        }
        out.delivered = n == want;
        out.note(format!("{n} of {want} silent streams open"));
        let _ = tx.send(out);
        let _keep = nodes;
        std::future::pending::<()>().await;
    });
    Ok(Adversary { addr: None, outcome: rx })
}

/// Starts a guesser against an honest sender at `addr`: `tries` times the code `wrong`
/// (same first word as the sender's, another password), each from a fresh peer id,
/// trying again when told to and after the delay it is told (issue 14, item 6). Its
/// outcome comes once it is done: a log line `answer: …` for each answer, and the last
/// one in `told`.
///
/// # Errors
/// A malformed code or address.
pub async fn guesser(wrong: &str, addr: &str, tries: u32) -> Result<Adversary, Error> {
    let code = parse_code(wrong)?;
    let addr = parse_addr(addr)?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut out = Outcome::default();
        let mut done = 0;
        while done < tries {
            let Ok((node, mut found)) = Node::start(node_config()) else {
                out.note("a node did not start");
                break;
            };
            let Some(peer) = reach(&node, &mut found, &addr).await else {
                out.note(format!("could not reach {addr}"));
                break;
            };
            let said = loop {
                match connect(&node, peer, &code).await {
                    Err(SessionError::TryLater { secs }) => {
                        out.note(format!("answer: try again in {secs} s"));
                        tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
                    }
                    other => break other,
                }
            };
            let said = match said {
                Ok(_) => "authenticated".to_owned(),
                Err(e) => e.to_string(),
            };
            out.note(format!("answer: {said}"));
            out.told = Some(said);
            done += 1;
        }
        out.delivered = done == tries;
        let _ = tx.send(out);
        std::future::pending::<()>().await;
    });
    Ok(Adversary { addr: None, outcome: rx })
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
