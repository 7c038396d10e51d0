//! The two sides of a transfer, from code to last byte: discovery, session, offer,
//! consent, and the data phase through the [`crate::pipeline`].
//!
//! Data phase (sender → receiver): `Chunk`… then `End` in the LAST frame; the receiver
//! answers `Done` (or `Error`) in its LAST frame. The sender's only other inbound
//! messages are `Accept` / `Decline`, so the reverse direction stays small, which keeps
//! clear of yamux's both-sides-writing stall (rust-libp2p#5410).
//!
//! Invariants:
//! - The sender reads no source byte before the receiver accepted.
//! - The receiver writes a chunk only after it opened and verified it, and commits a
//!   file or an extraction only after `End`'s totals and root hash matched.
//! - The sender gives up after [`MAX_FAILED_ATTEMPTS`] wrong codes: the code is burnt.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cli::{ReceiveArgs, SendArgs};
use crate::code::{self, Code};
use crate::error::Error;
use crate::framing::{self, FrameError, FrameKey};
use crate::message::{Control, End, Kind, MessageError, Offer};
use crate::node::{self, Event as NodeEvent, Node};
use crate::pipeline::{
    self, Compression, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, OpenedChunk, PipelineError, RootHash,
    SealedChunk,
};
use crate::progress::{Event, Reporter};
use crate::session::{self, HANDSHAKE_TIMEOUT, Rendezvous, Session, SessionError};
use crate::sink::{Sink, Target};
use crate::source::Source;
use crate::term;

/// Wrong codes a sender tolerates before it stops.
pub const MAX_FAILED_ATTEMPTS: u32 = 3;

/// How long a receiver waits for the sender to close after `Done`, so that its last
/// frame is not cut off by the process exiting.
const LINGER: Duration = Duration::from_secs(2);

/// Pause before redialling a `--peer` address that failed.
const REDIAL: Duration = Duration::from_secs(1);

fn now_slot() -> u64 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    code::slot(secs, code::SLOT_SECS)
}

/// A hello's slot is ours if it is the current one or a neighbour (clock skew and a
/// rollover during the wait).
fn slot_ok(at: Rendezvous) -> bool {
    let now = now_slot();
    at.slot == now || at.slot + code::SLOT_SECS == now || at.slot == now + code::SLOT_SECS
}

fn node_config(common: &crate::cli::CommonArgs, query: Duration) -> node::Config {
    node::Config {
        listen: common.listen.clone(),
        mdns: !common.no_mdns,
        mdns_query_interval: query,
    }
}

/// `pcp send`.
///
/// # Errors
/// Usage errors, authentication failures, a declined offer, and transfer failures.
pub async fn send(args: &SendArgs, rep: &Reporter) -> Result<(), Error> {
    let chunk_size = args.chunk_size;
    if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(Error::Usage(format!(
            "chunk size must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"
        )));
    }
    let source = Source::from_paths(&args.paths)?;
    let offer = source.offer(chunk_size)?;
    let code = match &args.code {
        Some(c) => c.parse::<Code>()?,
        None => Code::generate(usize::from(args.words)),
    };

    let (node, events) = Node::start(node_config(&args.common, Duration::from_secs(60)))?;
    let mut incoming = node
        .control()
        .accept(session::PROTOCOL)
        .map_err(|_| Error::Usage("protocol registered twice".into()))?;
    tokio::spawn(log_events(events));
    for addr in node.listen_addrs().await.unwrap_or_default() {
        tracing::info!(%addr, "listening");
    }
    rep.emit(Event::Code { code: code.to_string(), made_up: args.code.is_none() });
    rep.emit(Event::Searching);

    let me = node.peer_id();
    let mut failures = 0;
    let session = loop {
        let Some((peer, stream)) = incoming.next().await else {
            return Err(Error::Node(node::NodeError::Stopped));
        };
        rep.emit(Event::Authenticating { peer });
        let attempt = Session::accept(stream, &code, slot_ok, me, peer);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
            Ok(Ok(s)) => break s,
            Ok(Err(SessionError::PeerWrongCode { peer })) => {
                failures += 1;
                rep.emit(Event::WrongCode { peer, left: MAX_FAILED_ATTEMPTS - failures });
                if failures >= MAX_FAILED_ATTEMPTS {
                    return Err(Error::CodeBurnt);
                }
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "handshake refused"),
            Err(_) => tracing::debug!(%peer, "handshake timed out"),
        }
    };
    // Later arrivals are told we are busy, promptly, so their users see why.
    tokio::spawn(async move {
        while let Some((_, s)) = incoming.next().await {
            tokio::spawn(Session::refuse_busy(s));
        }
    });

    let mut session = session;
    let peer = session.peer();
    tracing::info!(%peer, "authenticated");
    session.send(&Control::Offer(offer.clone())).await?;
    rep.emit(Event::AwaitingAccept);
    match session.recv().await? {
        Control::Accept => {}
        Control::Decline(reason) => return Err(Error::Declined(term::sanitize(&reason))),
        other => return Err(unexpected(&other, "Accept")),
    }

    let compression =
        if args.no_compress { Compression::Off } else { Compression::Zstd(args.level) };
    let chunks = source.spawn(chunk_size as usize)?;
    let parts = session.into_parts();
    let mut stream = parts.stream;
    let (tx, mut rx) =
        mpsc::channel::<JoinHandle<Result<SealedChunk, PipelineError>>>(pipeline::depth());
    let producer =
        tokio::spawn(produce(chunks, tx, parts.sealer, parts.send_key.clone(), compression));

    rep.emit(Event::Started { total: offer.size });
    let started = Instant::now();
    let (mut bytes, mut wire, mut count) = (0u64, 0u64, 0u64);
    let mut root = RootHash::default();
    let mut opener = parts.opener;
    while let Some(job) = rx.recv().await {
        let sealed = job.await.map_err(|_| PipelineError::Worker)??;
        if let Err(e) = framing::write_frame(&mut stream, sealed.header, &sealed.frame).await {
            return Err(peer_gone(&mut stream, &mut opener, e).await);
        }
        root.push(&sealed.hash);
        bytes += sealed.raw_len as u64;
        wire += sealed.frame.len() as u64 + 4;
        count += 1;
        rep.emit(Event::Progress { bytes });
    }
    let (mut sealer, produced) = producer.await.map_err(|_| PipelineError::Worker)?;
    let closing = match &produced {
        Ok(()) => Control::End(End { chunks: count, bytes, root: root.finish() }),
        // Tell the receiver why, so it does not wait for more.
        Err(e) => Control::Error(e.to_string()),
    };
    let mut buf = closing.encode();
    let header = sealer.seal_next(&mut buf, true)?;
    framing::write_frame(&mut stream, header, &buf).await?;
    stream.flush().await.map_err(FrameError::Io)?;
    produced?;

    let (h, mut buf) = framing::read_frame(&mut stream).await?.ok_or(FrameError::Truncated)?;
    opener.open_next(h, &mut buf)?;
    match Control::decode(&buf)? {
        Control::Done => {}
        Control::Error(m) => return Err(Error::Remote(term::sanitize(&m))),
        other => return Err(unexpected(&other, "Done")),
    }
    let _ = stream.close().await;
    rep.emit(Event::Finished { bytes, wire, chunks: count, elapsed: started.elapsed() });
    Ok(())
}

/// Reads source chunks, assigns frame counters in order and starts a seal job for each.
/// Hands back the sealer, whose next counter belongs to the closing frame (`End`, or
/// `Error` when reading failed): a counter MUST never be used twice under one key.
async fn produce(
    mut chunks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    jobs: mpsc::Sender<JoinHandle<Result<SealedChunk, PipelineError>>>,
    mut sealer: framing::Sealer,
    key: FrameKey,
    compression: Compression,
) -> (framing::Sealer, Result<(), Error>) {
    let mut index = 0u64;
    while let Some(chunk) = chunks.recv().await {
        let raw = match chunk {
            Ok(raw) => raw,
            Err(source) => {
                return (sealer, Err(Error::Io { context: "cannot read the source", source }));
            }
        };
        let counter = match sealer.reserve(false) {
            Ok(c) => c,
            Err(e) => return (sealer, Err(e.into())),
        };
        let key = key.clone();
        let i = index;
        index += 1;
        let job = tokio::task::spawn_blocking(move || {
            pipeline::seal_chunk(i, &raw, compression, &key, counter)
        });
        if jobs.send(job).await.is_err() {
            break;
        }
    }
    (sealer, Ok(()))
}

/// A write failed: the receiver may have said why before it closed.
async fn peer_gone(stream: &mut Stream, opener: &mut framing::Opener, e: FrameError) -> Error {
    let said = tokio::time::timeout(Duration::from_millis(500), framing::read_frame(stream)).await;
    if let Ok(Ok(Some((h, mut buf)))) = said
        && opener.open_next(h, &mut buf).is_ok()
        && let Ok(Control::Error(m)) = Control::decode(&buf)
    {
        return Error::Remote(term::sanitize(&m));
    }
    Error::Frame(e)
}

fn unexpected(got: &Control, expected: &'static str) -> Error {
    Error::Message(MessageError::Unexpected { got: got.name(), expected })
}

async fn log_events(mut events: mpsc::Receiver<NodeEvent>) {
    while let Some(ev) = events.recv().await {
        tracing::debug!(?ev, "network event");
    }
}

/// `pcp receive`.
///
/// # Errors
/// Usage errors, a wrong code, a refused offer, and transfer failures.
pub async fn receive(args: &ReceiveArgs, rep: &Reporter) -> Result<(), Error> {
    let code = match &args.code {
        Some(c) => c.parse::<Code>()?,
        None => Code::from_words(&args.words)?,
    };
    if let Some(o) = &args.output
        && !args.force
        && o.symlink_metadata().is_ok()
    {
        return Err(Error::Exists(o.clone()));
    }
    if let Some(d) = &args.directory
        && !d.is_dir()
    {
        return Err(Error::Usage(format!("{} is not a directory", d.display())));
    }
    if !args.yes && !term::has_tty() {
        return Err(Error::NoTerminal);
    }
    let stdout_tty = std::io::stdout().is_terminal();

    let (node, mut events) = Node::start(node_config(&args.common, Duration::from_secs(3)))?;
    for addr in &args.peer {
        node.dial(addr.clone()).await?;
    }
    rep.emit(Event::Searching);
    let me = node.peer_id();
    let at = Rendezvous { channel: code.channel(), slot: now_slot() };

    let mut tried = HashSet::new();
    let mut attempts = FuturesUnordered::new();
    let mut wrong_code = false;
    let mut session = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(NodeEvent::Discovered { peer, via }) => {
                    if tried.insert(peer) {
                        rep.emit(Event::Found { peer, via });
                        attempts.push(attempt(node.control(), peer, code.clone(), at, me));
                    }
                }
                Some(NodeEvent::DialFailed { addr, error }) => {
                    tracing::debug!(%addr, %error, "dial failed; retrying");
                    let node = node.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(REDIAL).await;
                        let _ = node.dial(addr).await;
                    });
                }
                Some(NodeEvent::Listening(_)) => {}
                None => return Err(Error::Node(node::NodeError::Stopped)),
            },
            Some((peer, result)) = attempts.next(), if !attempts.is_empty() => match result {
                Ok(s) => break s,
                Err(SessionError::WrongCode) => {
                    tracing::debug!(%peer, "wrong code");
                    wrong_code = true;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "not our sender");
                    // A peer that was busy or unreachable may be tried again if it
                    // shows up again; one that failed the PAKE is not.
                    if matches!(e, SessionError::Io(_) | SessionError::Timeout | SessionError::Busy) {
                        tried.remove(&peer);
                    }
                }
            },
        }
        if wrong_code && attempts.is_empty() {
            return Err(Error::Session(SessionError::WrongCode));
        }
    };
    let peer = session.peer();
    tracing::info!(%peer, "authenticated");

    let offer = match session.recv().await? {
        Control::Offer(o) => o,
        other => return Err(unexpected(&other, "Offer")),
    };
    let target = match choose_target(args, &offer, stdout_tty) {
        Ok(t) => t,
        Err(e) => {
            let _ = session.send(&Control::Decline(e.to_string())).await;
            return Err(e);
        }
    };
    let conflicts = if args.force { Vec::new() } else { target.conflicts() };
    if let Some(first) = conflicts.into_iter().next() {
        let _ = session.send(&Control::Decline("the receiver already has it".into())).await;
        return Err(Error::Exists(first));
    }
    if !args.yes {
        let question = describe(&offer, peer);
        rep.clear();
        let yes = tokio::task::spawn_blocking(move || term::confirm(&question))
            .await
            .map_err(|_| PipelineError::Worker)?
            .map_err(|source| Error::Io { context: "cannot ask on the terminal", source })?;
        if !yes {
            let _ = session.send(&Control::Decline("the receiver declined".into())).await;
            return Err(Error::Declined("you declined".into()));
        }
    } else {
        rep.emit(Event::Notice(format!("receiving {}", describe_short(&offer))));
    }
    let mut sink = Sink::start(target, args.force)?;
    session.send(&Control::Accept).await?;

    let parts = session.into_parts();
    let (reader, mut writer) = parts.stream.split();
    let (tx, mut rx) = mpsc::channel(pipeline::depth());
    let recv_key = parts.recv_key.clone();
    let chunk_size = offer.chunk_size;
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(Error::Message(MessageError::Malformed { what: "Offer" }));
    }
    let mut reading =
        tokio::spawn(read_frames(reader, parts.opener, recv_key.clone(), chunk_size, tx));

    rep.emit(Event::Started { total: offer.size });
    let started = Instant::now();
    let (mut bytes, mut wire, mut count) = (0u64, 0u64, 0u64);
    let mut root = RootHash::default();
    let mut mailer = parts.sealer;
    let outcome: Result<End, Error> = async {
        while let Some(item) = rx.recv().await {
            match item {
                Inbound::Chunk(job) => {
                    let chunk: OpenedChunk = job.await.map_err(|_| PipelineError::Worker)??;
                    root.push(&chunk.hash);
                    bytes += chunk.data.len() as u64;
                    wire += chunk.wire_len as u64 + 4;
                    count += 1;
                    sink.write(chunk.data).await?;
                    rep.emit(Event::Progress { bytes });
                }
                Inbound::Last(header, mut buf, counter) => {
                    recv_key.open(counter, header, &mut buf)?;
                    return match Control::decode(&buf)? {
                        Control::End(end) => Ok(end),
                        Control::Error(m) => Err(Error::Remote(term::sanitize(&m))),
                        other => Err(unexpected(&other, "End")),
                    };
                }
            }
        }
        // The reader stopped without a LAST frame: its error says why.
        match (&mut reading).await {
            Ok(Err(e)) => Err(e),
            _ => Err(Error::Pipeline(PipelineError::Truncated)),
        }
    }
    .await;

    let end = match outcome {
        Ok(end) => end,
        Err(e) => {
            let mut buf = Control::Error(e.to_string()).encode();
            if let Ok(h) = mailer.seal_next(&mut buf, true) {
                let _ = framing::write_frame(&mut writer, h, &buf).await;
                let _ = writer.flush().await;
            }
            return Err(e);
        }
    };
    let checks = [
        (end.chunks == count, "chunk count"),
        (end.bytes == bytes, "byte count"),
        (end.root == root.finish(), "root hash"),
    ];
    if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(Error::Pipeline(PipelineError::EndMismatch { what }));
    }
    let written = sink.finish().await?;
    let mut buf = Control::Done.encode();
    let h = mailer.seal_next(&mut buf, true)?;
    framing::write_frame(&mut writer, h, &buf).await?;
    writer.flush().await.map_err(FrameError::Io)?;
    let _ = writer.close().await;
    // A flushed frame may still sit in the connection's buffers: exiting now could
    // drop it and leave the sender unsure. The sender closes once it has read Done.
    let _ = tokio::time::timeout(LINGER, reading).await;
    rep.emit(Event::Finished { bytes, wire, chunks: count, elapsed: started.elapsed() });
    for p in written.paths {
        rep.emit(Event::Notice(format!("wrote {}", p.display())));
    }
    Ok(())
}

/// One step of the receiver's data phase, in wire order.
enum Inbound {
    Chunk(JoinHandle<Result<OpenedChunk, PipelineError>>),
    Last(framing::Header, Vec<u8>, u64),
}

/// Reads frames, assigns counters and starts an open job per chunk, until the LAST
/// frame, which goes to the caller unopened. Cancel-safe by construction: it owns the
/// read half and is the only reader.
async fn read_frames(
    mut reader: futures::io::ReadHalf<Stream>,
    mut opener: framing::Opener,
    key: FrameKey,
    chunk_size: u32,
    tx: mpsc::Sender<Inbound>,
) -> Result<(), Error> {
    let mut index = 0u64;
    loop {
        let (header, buf) = framing::read_frame(&mut reader).await?.ok_or(FrameError::Truncated)?;
        let counter = opener.reserve(header)?;
        if header.last {
            let _ = tx.send(Inbound::Last(header, buf, counter)).await;
            // Wait for the sender to close its side: that is how the receiver knows its
            // Done went out before the process exits (see `receive`).
            let mut rest = [0u8; 1];
            let _ = reader.read(&mut rest).await;
            return Ok(());
        }
        let key = key.clone();
        let i = index;
        index += 1;
        let job = tokio::task::spawn_blocking(move || {
            pipeline::open_chunk(&key, counter, header, buf, i, chunk_size)
        });
        if tx.send(Inbound::Chunk(job)).await.is_err() {
            return Ok(());
        }
    }
}

type Attempt = (PeerId, Result<Session<Stream>, SessionError>);

async fn attempt(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    code: Code,
    at: Rendezvous,
    me: PeerId,
) -> Attempt {
    let run = async {
        let stream = control.open_stream(peer, session::PROTOCOL).await.map_err(|e| match e {
            libp2p_stream::OpenStreamError::UnsupportedProtocol(_) => SessionError::NotServing,
            libp2p_stream::OpenStreamError::Io(e) => SessionError::Io(e),
            other => SessionError::Io(std::io::Error::other(other.to_string())),
        })?;
        Session::connect(stream, &code, at, me, peer).await
    };
    let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(SessionError::Timeout),
    };
    (peer, result)
}

/// A name the sender announced, if it is one plain path component.
fn plain_name(name: &str) -> Option<&str> {
    let mut comps = Path::new(name).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('\\') && !name.contains('\0') => {
            Some(name)
        }
        _ => None,
    }
}

fn choose_target(args: &ReceiveArgs, offer: &Offer, stdout_tty: bool) -> Result<Target, Error> {
    if let Some(o) = &args.output {
        return Ok(Target::File { path: o.clone(), keep_part: true });
    }
    if args.directory.is_none() && !stdout_tty {
        return Ok(Target::Stdout);
    }
    let dir = args.directory.clone().unwrap_or_else(|| PathBuf::from("."));
    match offer.kind {
        Kind::Stream => Err(Error::Usage(
            "a stream has no name to save it under: redirect stdout or use -o FILE".into(),
        )),
        Kind::File => {
            let name = plain_name(&offer.name).ok_or_else(|| {
                Error::Unsafe(format!(
                    "the sender announced an unsafe file name {:?}",
                    term::sanitize(&offer.name)
                ))
            })?;
            Ok(Target::File { path: dir.join(name), keep_part: false })
        }
        Kind::Archive => {
            if offer.entries.is_empty() || offer.entries.iter().any(|e| plain_name(e).is_none()) {
                return Err(Error::Unsafe("the sender announced unsafe entry names".into()));
            }
            Ok(Target::Extract { dir, entries: offer.entries.clone() })
        }
    }
}

fn describe_short(offer: &Offer) -> String {
    let name = term::sanitize(&offer.name);
    let size = offer.size.map(|s| format!(", {}", term::bytes(s))).unwrap_or_default();
    match offer.kind {
        Kind::Stream => "a stream".to_owned(),
        Kind::File => format!("file '{name}'{size}"),
        Kind::Archive => format!("directory '{name}'{size}"),
    }
}

fn describe(offer: &Offer, peer: PeerId) -> String {
    format!("Accept {} from {peer}?", describe_short(offer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain() {
        assert_eq!(plain_name("a.txt"), Some("a.txt"));
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "x\0y"] {
            assert_eq!(plain_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn slots_tolerate_skew() {
        let now = now_slot();
        assert!(slot_ok(Rendezvous { channel: 0, slot: now }));
        assert!(slot_ok(Rendezvous { channel: 0, slot: now - code::SLOT_SECS }));
        assert!(!slot_ok(Rendezvous { channel: 0, slot: now - 3 * code::SLOT_SECS }));
    }
}
