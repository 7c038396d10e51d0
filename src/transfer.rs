//! The two sides of a transfer, from code to last byte: discovery, session, offer,
//! consent, and the data phase through the [`crate::pipeline`].
//!
//! Data phase (sender → receiver): `Chunk`… then `End` in the LAST frame; the receiver
//! sends an `Ack` every [`pipeline::ack_every`] chunks it has verified and handed to its
//! output, and `Done` (or `Error`) in its LAST frame. The sender keeps at most
//! [`pipeline::window_chunks`] chunks beyond the last `Ack` in flight, so a receiver
//! whose output is slower than the link never buffers more than that window. Both
//! sides read while they write and the reverse direction carries only small acks,
//! which keeps clear of yamux's both-sides-writing stall (rust-libp2p#5410).
//!
//! Invariants:
//! - The sender reads no source byte before the receiver accepted.
//! - The receiver writes a chunk only after it opened and verified it, and commits a
//!   file or an extraction only after `End`'s totals and root hash matched.
//! - The sender gives up after [`MAX_FAILED_ATTEMPTS`] wrong codes: the code is burnt.
//! - Acks only ever move forward; the sender ignores one that goes back.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, watch};
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

/// Handshakes a sender runs at once.
const MAX_CONCURRENT_HANDSHAKES: usize = 8;

/// How long a receiver waits for the sender to close after `Done`, so that its last
/// frame is not cut off by the process exiting.
const LINGER: Duration = Duration::from_secs(2);

/// Pause before redialling a `--peer` address that failed.
const REDIAL: Duration = Duration::from_secs(1);

/// Pause before trying again a peer that was busy, in another slot, or unreachable.
const RETRY: Duration = Duration::from_secs(2);

/// How long a receiver keeps looking after a peer rejected its code.
const WRONG_CODE_GRACE: Duration = Duration::from_secs(2);

/// The same slot source as the DHT rendezvous ([`code::slot_secs`]), so a shortened
/// test slot applies to the hello too.
fn now_slot() -> u64 {
    code::current_slot()
}

/// A hello's slot is ours if it is the current one or a neighbour (clock skew and a
/// rollover during the wait).
fn slot_ok(at: Rendezvous) -> bool {
    // `at.slot` comes from the peer: checked arithmetic, never a panic.
    let (now, len) = (now_slot(), code::slot_secs());
    at.slot == now || at.slot.checked_add(len) == Some(now) || now.checked_add(len) == Some(at.slot)
}

/// The node for one side: `provide` for the sender, which advertises the code's
/// channel on the DHT; the receiver looks it up.
fn node_config(
    common: &crate::cli::CommonArgs,
    query: Duration,
    code: &Code,
    provide: bool,
) -> node::Config {
    let bootstrap = if common.bootstrap.is_empty() {
        node::dht::PUBLIC_BOOTSTRAP.iter().map(|a| a.parse().expect("static multiaddr")).collect()
    } else {
        common.bootstrap.clone()
    };
    node::Config {
        listen: common.listen.clone(),
        mdns: !common.no_mdns,
        mdns_query_interval: query,
        dht: (!common.no_dht).then(|| node::dht::Config {
            bootstrap,
            channel: Some(code.channel()),
            provide,
            lookup: !provide,
        }),
        serve: false,
        keypair: None,
        allow_relay: common.allow_relay,
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

    let (node, mut events) =
        Node::start(node_config(&args.common, Duration::from_secs(60), &code, true))?;
    let mut incoming = node
        .control()
        .accept(session::PROTOCOL)
        .map_err(|_| Error::Usage("protocol registered twice".into()))?;
    for addr in node.listen_addrs().await.unwrap_or_default() {
        tracing::info!(%addr, "listening");
    }
    rep.emit(Event::Code { code: code.to_string(), made_up: args.code.is_none() });
    rep.emit(Event::Searching);

    let me = node.peer_id();
    let mut failures = 0;
    // Handshakes run side by side, so a stalled or slow peer cannot hold up the real
    // receiver; past the cap, newcomers are told we are busy.
    let mut pending = FuturesUnordered::new();
    let session = loop {
        tokio::select! {
            next = incoming.next() => {
                let Some((peer, stream)) = next else {
                    return Err(Error::Node(node::NodeError::Stopped));
                };
                if pending.len() >= MAX_CONCURRENT_HANDSHAKES {
                    tokio::spawn(Session::refuse_busy(stream));
                    continue;
                }
                rep.emit(Event::Authenticating { peer });
                let code = &code;
                pending.push(async move {
                    (peer, Session::accept(stream, code, slot_ok, me, peer).await)
                });
            }
            Some(ev) = events.recv() => {
                if let NodeEvent::Dht(s) = ev {
                    rep.emit(Event::Dht(s));
                } else {
                    tracing::debug!(?ev, "network event");
                }
            }
            Some((peer, result)) = pending.next(), if !pending.is_empty() => match result {
                Ok(s) => break s,
                Err(SessionError::PeerWrongCode { peer }) => {
                    failures += 1;
                    rep.emit(Event::WrongCode { peer, left: MAX_FAILED_ATTEMPTS - failures });
                    if failures >= MAX_FAILED_ATTEMPTS {
                        return Err(Error::CodeBurnt);
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "handshake refused"),
            },
        }
    };
    drop(pending);
    tokio::spawn(log_events(events));
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
    match session.recv().await.map_err(|e| gone(e, "before accepting"))? {
        Control::Accept => {}
        Control::Decline(reason) => return Err(Error::Declined(term::sanitize(&reason))),
        other => return Err(unexpected(&other, "Accept")),
    }

    let compression =
        if args.no_compress { Compression::Off } else { Compression::Zstd(args.level) };
    let chunks = source.spawn(chunk_size as usize)?;
    let parts = session.into_parts();
    let (reader, mut writer) = parts.stream.split();
    let (tx, mut rx) =
        mpsc::channel::<JoinHandle<Result<SealedChunk, PipelineError>>>(pipeline::depth());
    let producer =
        tokio::spawn(produce(chunks, tx, parts.sealer, parts.send_key.clone(), compression));
    let (acked_tx, mut acked) = watch::channel(0u64);
    let mut replies = tokio::spawn(read_replies(reader, parts.opener, acked_tx));
    let window = pipeline::window_chunks(chunk_size);

    rep.emit(Event::Started { total: offer.size });
    let started = Instant::now();
    let (mut bytes, mut wire, mut count) = (0u64, 0u64, 0u64);
    let mut root = RootHash::default();
    while let Some(job) = rx.recv().await {
        let sealed = job.await.map_err(|_| PipelineError::Worker)??;
        // Flow control: at most `window` chunks beyond the receiver's last Ack.
        while count >= *acked.borrow() + window {
            if acked.changed().await.is_err() {
                // The reply reader stopped: the receiver failed or went away.
                return Err(reply_error(&mut replies).await);
            }
        }
        if framing::write_frame(&mut writer, sealed.header, &sealed.frame).await.is_err() {
            return Err(reply_error(&mut replies).await);
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
    framing::write_frame(&mut writer, header, &buf).await?;
    writer.flush().await.map_err(FrameError::Io)?;
    if let Err(e) = produced {
        let _ = writer.close().await;
        let _ = tokio::time::timeout(LINGER, &mut replies).await;
        return Err(e);
    }
    let last = (&mut replies).await.map_err(|_| PipelineError::Worker)?;
    let _ = writer.close().await;
    match last.map_err(|e| gone(e, "before confirming the transfer"))? {
        Control::Done => {}
        Control::Error(m) => return Err(Error::Remote(term::sanitize(&m))),
        other => return Err(unexpected(&other, "Done")),
    }
    rep.emit(Event::Finished { bytes, wire, chunks: count, elapsed: started.elapsed() });
    Ok(())
}

/// Reads the receiver's side of the data phase: `Ack`s, published on `acked`, until
/// its LAST frame (`Done` or `Error`), which is returned.
async fn read_replies<R: futures::AsyncRead + Unpin>(
    mut reader: R,
    mut opener: framing::Opener,
    acked: watch::Sender<u64>,
) -> Result<Control, SessionError> {
    loop {
        let (h, mut buf) = framing::read_frame(&mut reader).await?.ok_or(FrameError::Truncated)?;
        opener.open_next(h, &mut buf)?;
        match Control::decode(&buf)? {
            Control::Ack(n) if !h.last => {
                // Only forward: an ack that goes back is ignored, not trusted.
                acked.send_if_modified(|a| {
                    let newer = n > *a;
                    if newer {
                        *a = n;
                    }
                    newer
                });
            }
            last if h.last => return Ok(last),
            other => {
                return Err(SessionError::Message(MessageError::Unexpected {
                    got: other.name(),
                    expected: "Ack, Done or Error",
                }));
            }
        }
    }
}

/// Why the data phase broke, as the reply reader saw it: the receiver's own error
/// message when it sent one, else that it went away.
async fn reply_error(replies: &mut JoinHandle<Result<Control, SessionError>>) -> Error {
    match tokio::time::timeout(LINGER, replies).await {
        Ok(Ok(Ok(Control::Error(m)))) => Error::Remote(term::sanitize(&m)),
        Ok(Ok(Ok(other))) => unexpected(&other, "Ack"),
        Ok(Ok(Err(e))) => gone(e, "during the transfer"),
        _ => Error::PeerGone("during the transfer"),
    }
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

/// A stream that ended (or broke) while we waited for the peer's answer means the peer
/// went away; say so instead of reporting truncated data.
fn gone(e: SessionError, when: &'static str) -> Error {
    match e {
        SessionError::Frame(FrameError::Truncated | FrameError::Io(_)) | SessionError::Io(_) => {
            Error::PeerGone(when)
        }
        other => other.into(),
    }
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

    let (node, events) =
        Node::start(node_config(&args.common, Duration::from_secs(3), &code, false))?;
    for addr in &args.peer {
        node.dial(addr.clone()).await?;
    }
    rep.emit(Event::Searching);
    let mut session = find_sender(&node, events, &code, rep).await?;
    let peer = session.peer();
    tracing::info!(%peer, "authenticated");

    let offer = match session.recv().await {
        Ok(Control::Offer(o)) => o,
        Ok(other) => return Err(unexpected(&other, "Offer")),
        Err(e) => return Err(e.into()),
    };
    rep.emit(Event::Offer { peer, what: describe_short(&offer), size: offer.size });
    // Everything the receiver can refuse, it refuses before asking the user, and tells
    // the sender why in words meant for the sender's user.
    let prepared = (|| {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&offer.chunk_size) {
            return Err((
                Error::Message(MessageError::Malformed { what: "Offer" }),
                "the offer was malformed",
            ));
        }
        let target = choose_target(args, &offer, stdout_tty)
            .map_err(|e| (e, "the receiver cannot write this kind of offer where it is"))?;
        let conflicts = if args.force { Vec::new() } else { target.conflicts() };
        if let Some(first) = conflicts.into_iter().next() {
            return Err((Error::Exists(first), "the receiver already has something by that name"));
        }
        Ok(target)
    })();
    let target = match prepared {
        Ok(t) => t,
        Err((e, reason)) => {
            decline(&mut session, reason).await;
            return Err(e);
        }
    };
    if args.yes {
        rep.emit(Event::Notice(format!("receiving {}", describe_short(&offer))));
    } else {
        let question = describe(&offer, peer);
        rep.clear();
        let answer = tokio::task::spawn_blocking(move || term::confirm(&question))
            .await
            .map_err(|_| PipelineError::Worker)?;
        match answer {
            Ok(true) => {}
            Ok(false) => {
                decline(&mut session, "the receiver declined").await;
                return Err(Error::Declined("you declined".into()));
            }
            Err(source) => {
                decline(&mut session, "the receiver could not be asked").await;
                return Err(Error::Io { context: "cannot ask on the terminal", source });
            }
        }
    }
    let sink = match Sink::start(target, args.force) {
        Ok(sink) => sink,
        Err(e) => {
            decline(&mut session, "the receiver cannot write its output").await;
            return Err(e.into());
        }
    };
    session.send(&Control::Accept).await?;

    let parts = session.into_parts();
    let (reader, mut writer) = parts.stream.split();
    let (tx, rx) = mpsc::channel(pipeline::depth());
    let recv_key = parts.recv_key.clone();
    let reading =
        tokio::spawn(read_frames(reader, parts.opener, recv_key.clone(), offer.chunk_size, tx));
    let mut mailer = parts.sealer;

    let started = Instant::now();
    let outcome = receive_data(&offer, rx, &recv_key, sink, (&mut writer, &mut mailer), rep).await;
    let closing = match &outcome {
        Ok(_) => Control::Done,
        Err(e) => Control::Error(e.to_string()),
    };
    let mut buf = closing.encode();
    if let Ok(h) = mailer.seal_next(&mut buf, true) {
        let _ = framing::write_frame(&mut writer, h, &buf).await;
        let _ = writer.flush().await;
    }
    let _ = writer.close().await;
    // A flushed frame may still sit in the connection's buffers, and exiting now could
    // drop it. The sender closes once it has read our last frame: wait for that.
    if let Ok(mut reader) = reading.await {
        session::wait_for_close(&mut reader, LINGER).await;
    }
    let (bytes, wire, chunks, written) = outcome?;
    rep.emit(Event::Finished { bytes, wire, chunks, elapsed: started.elapsed() });
    for p in written.paths {
        rep.emit(Event::Notice(format!("wrote {}", term::sanitize(&p.display().to_string()))));
    }
    Ok(())
}

/// Declines an offer and waits (bounded) for the sender to read it.
async fn decline(session: &mut Session<Stream>, reason: &str) {
    if session.send(&Control::Decline(reason.to_owned())).await.is_ok() {
        session.linger(LINGER).await;
    }
}

/// The data phase on the receiver: verified chunks into the sink, then the totals.
/// Returns raw bytes, wire bytes, chunks and what was written.
async fn receive_data(
    offer: &Offer,
    mut rx: mpsc::Receiver<Inbound>,
    recv_key: &FrameKey,
    mut sink: Sink,
    (writer, mailer): (&mut futures::io::WriteHalf<Stream>, &mut framing::Sealer),
    rep: &Reporter,
) -> Result<(u64, u64, u64, crate::sink::Written), Error> {
    let ack_every = pipeline::ack_every(offer.chunk_size);
    rep.emit(Event::Started { total: offer.size });
    let (mut bytes, mut wire, mut count) = (0u64, 0u64, 0u64);
    let mut root = RootHash::default();
    // A file's announced size is what the user agreed to: more is refused.
    let limit = if offer.kind == Kind::File { offer.size } else { None };
    let end = loop {
        let Some(item) = rx.recv().await else {
            return Err(Error::Pipeline(PipelineError::Truncated));
        };
        match item {
            Inbound::Chunk(job) => {
                let chunk: OpenedChunk = job.await.map_err(|_| PipelineError::Worker)??;
                root.push(&chunk.hash);
                bytes += chunk.data.len() as u64;
                wire += chunk.wire_len as u64 + 4;
                count += 1;
                if limit.is_some_and(|n| bytes > n) {
                    return Err(Error::Pipeline(PipelineError::EndMismatch {
                        what: "more bytes than offered",
                    }));
                }
                sink.write(chunk.data).await?;
                rep.emit(Event::Progress { bytes });
                if count % ack_every == 0 {
                    // The chunk is in the sink's bounded queue: the sender may send more.
                    let mut buf = Control::Ack(count).encode();
                    let h = mailer.seal_next(&mut buf, false)?;
                    framing::write_frame(writer, h, &buf).await?;
                    writer.flush().await.map_err(FrameError::Io)?;
                }
            }
            Inbound::Last(header, mut buf, counter) => {
                recv_key.open(counter, header, &mut buf)?;
                match Control::decode(&buf)? {
                    Control::End(end) => break end,
                    Control::Error(m) => return Err(Error::Remote(term::sanitize(&m))),
                    other => return Err(unexpected(&other, "End")),
                }
            }
            Inbound::Failed(e) => return Err(e),
        }
    };
    let checks = [
        (end.chunks == count, "chunk count"),
        (end.bytes == bytes, "byte count"),
        (limit.is_none_or(|n| n == bytes), "size in the offer"),
        (end.root == root.finish(), "root hash"),
    ];
    if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(Error::Pipeline(PipelineError::EndMismatch { what }));
    }
    let written = sink.finish().await?;
    Ok((bytes, wire, count, written))
}

/// Races every candidate peer until one passes the PAKE.
///
/// A peer that refused for a passing reason (busy, another slot, unreachable) is tried
/// again after [`RETRY`]; one that failed the PAKE is not. After a wrong code the search
/// goes on for [`WRONG_CODE_GRACE`] in case another peer is the real sender, then the
/// receiver gives up with exit 3.
async fn find_sender(
    node: &Node,
    mut events: mpsc::Receiver<NodeEvent>,
    code: &Code,
    rep: &Reporter,
) -> Result<Session<Stream>, Error> {
    let me = node.peer_id();
    let mut tried = HashSet::new();
    let mut attempts = FuturesUnordered::new();
    let mut retries = FuturesUnordered::new();
    let mut wrong_code_by: Option<tokio::time::Instant> = None;
    loop {
        let give_up = async {
            match wrong_code_by {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = events.recv() => match ev {
                Some(NodeEvent::Discovered { peer, via }) => {
                    if tried.insert(peer) {
                        rep.emit(Event::Found { peer, via });
                        attempts.push(attempt(node.clone(), peer, code.clone(), me));
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
                Some(NodeEvent::Dht(s)) => rep.emit(Event::Dht(s)),
                Some(NodeEvent::RelayOnly { peer }) => return Err(Error::RelayOnly(peer)),
                None => return Err(Error::Node(node::NodeError::Stopped)),
            },
            Some((peer, result)) = attempts.next(), if !attempts.is_empty() => match result {
                Ok(s) => return Ok(s),
                Err(SessionError::WrongCode) => {
                    tracing::debug!(%peer, "wrong code");
                    wrong_code_by.get_or_insert(tokio::time::Instant::now() + WRONG_CODE_GRACE);
                }
                Err(SessionError::Unsupported) => tracing::trace!(%peer, "not a pcp peer"),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "not ready; will retry");
                    if matches!(e, SessionError::Busy) {
                        rep.emit(Event::Notice("the sender is busy with another receiver; retrying".into()));
                    }
                    retries.push(async move {
                        tokio::time::sleep(RETRY).await;
                        peer
                    });
                }
            },
            Some(peer) = retries.next(), if !retries.is_empty() => {
                attempts.push(attempt(node.clone(), peer, code.clone(), me));
            }
            () = give_up => return Err(Error::Session(SessionError::WrongCode)),
        }
    }
}

/// One step of the receiver's data phase, in wire order.
enum Inbound {
    Chunk(JoinHandle<Result<OpenedChunk, PipelineError>>),
    Last(framing::Header, Vec<u8>, u64),
    Failed(Error),
}

/// Reads frames, assigns counters and starts an open job per chunk, until the LAST
/// frame, which goes to the caller unopened. It owns the read half (the only reader)
/// and hands it back at the end, for [`session::wait_for_close`].
async fn read_frames(
    mut reader: futures::io::ReadHalf<Stream>,
    mut opener: framing::Opener,
    key: FrameKey,
    chunk_size: u32,
    tx: mpsc::Sender<Inbound>,
) -> futures::io::ReadHalf<Stream> {
    let mut index = 0u64;
    loop {
        let frame = match framing::read_frame(&mut reader).await {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(Error::Frame(FrameError::Truncated)),
            Err(e) => Err(Error::Frame(e)),
        };
        let (header, buf) = match frame.and_then(|(h, b)| Ok((opener.reserve(h)?, h, b))) {
            Ok((counter, header, buf)) if header.last => {
                let _ = tx.send(Inbound::Last(header, buf, counter)).await;
                return reader;
            }
            Ok((counter, header, buf)) => ((header, counter), buf),
            Err(e) => {
                let _ = tx.send(Inbound::Failed(e)).await;
                return reader;
            }
        };
        let ((header, counter), key, i) = (header, key.clone(), index);
        index += 1;
        let job = tokio::task::spawn_blocking(move || {
            pipeline::open_chunk(&key, counter, header, buf, i, chunk_size)
        });
        if tx.send(Inbound::Chunk(job)).await.is_err() {
            return reader;
        }
    }
}

type Attempt = (PeerId, Result<Session<Stream>, SessionError>);

async fn attempt(node: Node, peer: PeerId, code: Code, me: PeerId) -> Attempt {
    // The slot is taken now, not when the receiver started: the sender may show up in
    // a later one.
    let at = Rendezvous { channel: code.channel(), slot: now_slot() };
    let mut control = node.control();
    let run = async {
        // The session stream MUST ride a direct connection unless --allow-relay: it
        // carries the data, and a relay stops after 128 KiB. `link` waits for DCUtR and
        // closes the relayed connection; libp2p-stream would pick one at random.
        match node.link(peer).await {
            Ok(node::Link::Direct | node::Link::Relayed) => {}
            Ok(node::Link::Unreachable) => {
                return Err(SessionError::Io(std::io::Error::other("peer unreachable")));
            }
            // The node reported it (Event::RelayOnly); this peer is not tried again.
            Ok(node::Link::RelayOnly) => return Err(SessionError::Unsupported),
            Err(_) => return Err(SessionError::Io(std::io::Error::other("network task gone"))),
        }
        let stream = control.open_stream(peer, session::PROTOCOL).await.map_err(|e| match e {
            libp2p_stream::OpenStreamError::UnsupportedProtocol(_) => SessionError::Unsupported,
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
        Kind::Archive => {
            // Show what will be written, not the sender's summary of it.
            let shown: Vec<String> =
                offer.entries.iter().take(3).map(|e| format!("'{}'", term::sanitize(e))).collect();
            let more = offer.entries.len().saturating_sub(3);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            format!("{}{more} (tar stream)", shown.join(", "))
        }
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

    #[tokio::test]
    async fn acks_only_move_forward_and_the_last_frame_ends_the_replies() {
        let key = FrameKey::new([3; 32]);
        let mut sealer = framing::Sealer::new(key.clone());
        let mut wire = Vec::new();
        for (msg, last) in [
            (Control::Ack(4), false),
            (Control::Ack(2), false),
            (Control::Ack(8), false),
            (Control::Done, true),
        ] {
            let mut buf = msg.encode();
            let h = sealer.seal_next(&mut buf, last).expect("seal");
            wire.extend_from_slice(&h.to_bytes());
            wire.extend_from_slice(&buf);
        }
        let (tx, rx) = watch::channel(0);
        let last = read_replies(futures::io::Cursor::new(wire), framing::Opener::new(key), tx)
            .await
            .expect("replies");
        assert_eq!(last, Control::Done);
        assert_eq!(*rx.borrow(), 8, "the ack that went back was ignored");
    }

    #[tokio::test]
    async fn replies_that_are_not_acks_are_refused() {
        let key = FrameKey::new([3; 32]);
        let mut sealer = framing::Sealer::new(key.clone());
        let mut buf = Control::Accept.encode();
        let h = sealer.seal_next(&mut buf, false).expect("seal");
        let mut wire = h.to_bytes().to_vec();
        wire.extend_from_slice(&buf);
        let (tx, _rx) = watch::channel(0);
        let r = read_replies(futures::io::Cursor::new(wire), framing::Opener::new(key), tx).await;
        assert!(matches!(r, Err(SessionError::Message(MessageError::Unexpected { .. }))));
    }

    #[test]
    fn slots_tolerate_skew() {
        let now = now_slot();
        assert!(slot_ok(Rendezvous { channel: 0, slot: now }));
        assert!(slot_ok(Rendezvous { channel: 0, slot: now - code::slot_secs() }));
        assert!(!slot_ok(Rendezvous { channel: 0, slot: now - 3 * code::slot_secs() }));
        assert!(!slot_ok(Rendezvous { channel: 0, slot: u64::MAX }), "no overflow on peer input");
    }
}
