//! The receiving side: find the sender, authenticate, consent, and take in verified
//! chunks; after a lost connection, find the sender again and resume; with `-o`, resume
//! across runs from the part file and its manifest (see [`crate::resume`]).
//!
//! State that outlives a session ([`Incoming`]): the sink, the offer, and the verified
//! prefix (chunk count, bytes, root hash). A reconnection starts a fresh libp2p node,
//! so no stream can land on the dead connection, runs the PAKE again (fresh keys and
//! counters) and answers the sender's offer with `Resume` instead of asking the user
//! again.
//!
//! Invariants:
//! - A chunk reaches the sink only after it was opened and its index, length and hash
//!   checked; the file or extraction is committed only after `End`'s totals and root
//!   hash matched.
//! - A reconnection is accepted only for the same offer; anything else is an error.

use std::time::Instant;

use super::*;
use crate::message::Resume;
use crate::resume::{self, Prefix};
use crate::sink::Written;

/// Everything the receiver keeps across sessions.
struct Incoming {
    offer: Offer,
    /// Taken when the transfer commits.
    sink: Option<Sink>,
    /// What the sink wrote, once committed.
    written: Option<Written>,
    /// Verified chunks so far.
    count: u64,
    bytes: u64,
    root: RootHash,
    /// Bytes received over the network (not those resumed from a part file).
    received: u64,
    wire: u64,
    skipped: u64,
    reconnects: u64,
}

/// How a session's data phase ended.
enum Ending {
    /// The sender's closing totals.
    End(End),
    /// The connection died; resume after a reconnection.
    Lost(&'static str),
}

/// `pcp receive`.
///
/// # Errors
/// Usage errors, a wrong code, a refused offer, transfer failures, and
/// `--reconnect-timeout` running out (with `-o`, the part file is kept).
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
    let reconnect_timeout = Duration::from_secs(args.common.reconnect_timeout);

    let mut state: Option<Incoming> = None;
    let mut started = Instant::now();
    let end = loop {
        let (node, events) =
            Node::start(node_config(&args.common, Duration::from_secs(3), &code, false))?;
        for addr in &args.peer {
            node.dial(addr.clone()).await?;
        }
        rep.emit(Event::Searching);
        let search = find_sender(&node, events, &code, rep);
        let mut session = match &state {
            None => search.await?,
            Some(_) => tokio::time::timeout(reconnect_timeout, search)
                .await
                .map_err(|_| Error::ReconnectTimeout(reconnect_timeout.as_secs()))??,
        };
        let peer = session.peer();
        tracing::info!(%peer, "authenticated");
        // The sender offers right after the PAKE; silence means it died meanwhile.
        let offer = tokio::time::timeout(DEAD_AFTER, session.recv())
            .await
            .unwrap_or(Err(SessionError::Timeout));
        let offer = match offer {
            Ok(Control::Offer(o)) => o,
            Ok(other) => return Err(unexpected(&other, "Offer")),
            Err(e) if state.is_some() && is_lost(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some(inc) = state.as_mut() {
            if !resume::same_transfer(&inc.offer, &offer) {
                decline(&mut session, "the sender offers something else than before").await;
                return Err(Error::Usage(
                    "after reconnecting, the sender offered something else".into(),
                ));
            }
            let at = Resume { chunks: inc.count, root: inc.root.finish() };
            session.send(&Control::Resume(at)).await?;
        } else {
            rep.emit(Event::Offer { peer, what: describe_short(&offer), size: offer.size });
            let (inc, answer) = first_contact(args, &mut session, offer, stdout_tty, rep).await?;
            session.send(&answer).await?;
            started = Instant::now();
            rep.emit(Event::Started { total: inc.offer.size });
            state = Some(inc);
        }
        let inc = state.as_mut().expect("set just above");
        match run(inc, session, rep).await? {
            Ending::End(end) => break end,
            Ending::Lost(why) => {
                tracing::debug!(why, "session lost");
                inc.reconnects += 1;
                rep.emit(Event::Notice("connection lost, reconnecting…".into()));
            }
        }
    };
    let inc = state.expect("a transfer ended, so it started");
    tracing::debug!(?end, "verified");
    let stats =
        vec![("received", inc.received), ("skipped", inc.skipped), ("reconnects", inc.reconnects)];
    let (bytes, wire, chunks) = (inc.bytes, inc.wire, inc.count);
    let written = inc.written.unwrap_or_default();
    rep.emit(Event::Finished { bytes, wire, chunks, elapsed: started.elapsed(), stats });
    for p in written.paths {
        rep.emit(Event::Notice(format!("wrote {}", term::sanitize(&p.display().to_string()))));
    }
    Ok(())
}

/// The first session's offer: decide where it goes, resume from a part file if one
/// fits, ask the user, start the sink. Returns the state and the answer to send
/// (`Accept`, or `Resume` when a part file holds a prefix).
async fn first_contact(
    args: &ReceiveArgs,
    session: &mut Session<Stream>,
    offer: Offer,
    stdout_tty: bool,
    rep: &Reporter,
) -> Result<(Incoming, Control), Error> {
    let peer = session.peer();
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
        // An existing part file is what we resume from, not a conflict.
        let resuming = target.resume_part().filter(|p| p.exists());
        let conflicts = if args.force { Vec::new() } else { target.conflicts() };
        let first = conflicts.into_iter().find(|c| Some(c) != resuming.as_ref());
        if let Some(first) = first {
            return Err((Error::Exists(first), "the receiver already has something by that name"));
        }
        let prefix = match &resuming {
            Some(part) if !args.force => resume::load(part, &offer)
                .map_err(|e| (e.into(), "the receiver holds part of another transfer"))?,
            _ => Prefix::default(),
        };
        Ok((target, prefix))
    })();
    let (target, prefix) = match prepared {
        Ok(t) => t,
        Err((e, reason)) => {
            decline(session, reason).await;
            return Err(e);
        }
    };
    if prefix.chunks() > 0 {
        rep.emit(Event::Notice(format!(
            "resuming: {} already received",
            term::bytes(prefix.bytes)
        )));
    }
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
                decline(session, "the receiver declined").await;
                return Err(Error::Declined("you declined".into()));
            }
            Err(source) => {
                decline(session, "the receiver could not be asked").await;
                return Err(Error::Io { context: "cannot ask on the terminal", source });
            }
        }
    }
    let journal = target.resume_part().is_some().then_some((&offer, &prefix));
    let sink = match Sink::start(target, args.force, journal) {
        Ok(sink) => sink,
        Err(e) => {
            decline(session, "the receiver cannot write its output").await;
            return Err(e.into());
        }
    };
    let answer = if prefix.chunks() > 0 {
        Control::Resume(Resume { chunks: prefix.chunks(), root: prefix.root().finish() })
    } else {
        Control::Accept
    };
    let inc = Incoming {
        sink: Some(sink),
        written: None,
        count: prefix.chunks(),
        bytes: prefix.bytes,
        root: prefix.root(),
        received: 0,
        wire: 0,
        skipped: prefix.bytes,
        reconnects: 0,
        offer,
    };
    Ok((inc, answer))
}

/// One session's data phase: chunks in, acks out, until `End` (then verify, commit,
/// `Done`), a lost connection, or a failure (then `Error` to the sender).
async fn run(
    inc: &mut Incoming,
    session: Session<Stream>,
    rep: &Reporter,
) -> Result<Ending, Error> {
    let parts = session.into_parts();
    let (reader, mut writer) = parts.stream.split();
    let (tx, mut rx) = mpsc::channel(pipeline::depth());
    let recv_key = parts.recv_key.clone();
    let reading = tokio::spawn(read_frames(
        reader,
        parts.opener,
        recv_key.clone(),
        inc.offer.chunk_size,
        inc.count,
        tx,
    ));
    let mut mailer = parts.sealer;
    let mut tick = tokio::time::interval(KEEPALIVE);
    let mut say = Mailer { writer: &mut writer, sealer: &mut mailer };

    let outcome = async {
        let end = take_chunks(inc, &mut rx, &recv_key, &mut say, &mut tick, rep).await?;
        let checks = [
            (end.chunks == inc.count, "chunk count"),
            (end.bytes == inc.bytes, "byte count"),
            (limit(&inc.offer).is_none_or(|n| n == inc.bytes), "size in the offer"),
            (end.root == inc.root.finish(), "root hash"),
        ];
        if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(Error::Pipeline(PipelineError::EndMismatch { what }));
        }
        // Committing may take a while (fsync, moving an extraction): keep the sender
        // from taking our silence for a dead link.
        let sink = inc.sink.take().ok_or(PipelineError::Worker)?;
        let finish = sink.finish();
        tokio::pin!(finish);
        let written = loop {
            tokio::select! {
                r = &mut finish => break r?,
                _ = tick.tick() => {
                    let _ = say.send(Control::Ack(inc.count), false).await;
                }
            }
        };
        inc.written = Some(written);
        Ok(end)
    }
    .await;

    // The reader may be blocked handing us a frame: let it go before waiting for it.
    drop(rx);
    match outcome {
        Ok(end) => {
            let _ = say.send(Control::Done, true).await;
            let _ = writer.close().await;
            // A flushed frame may still sit in the connection's buffers, and exiting
            // now could drop it: the sender closes once it has read our Done.
            if let Ok(mut reader) = reading.await {
                session::wait_for_close(&mut reader, LINGER).await;
            }
            Ok(Ending::End(end))
        }
        Err(e) if error_is_lost(&e) => {
            reading.abort();
            Ok(Ending::Lost("the connection died"))
        }
        Err(e) => {
            let _ = say.send(Control::Error(e.to_string()), true).await;
            let _ = writer.close().await;
            if let Ok(mut reader) = reading.await {
                session::wait_for_close(&mut reader, LINGER).await;
            }
            Err(e)
        }
    }
}

/// The receiver's outgoing direction during the data phase.
struct Mailer<'a> {
    writer: &'a mut futures::io::WriteHalf<Stream>,
    sealer: &'a mut framing::Sealer,
}

impl Mailer<'_> {
    /// Seals and writes one message; a write that does not finish within
    /// [`DEAD_AFTER`] means a dead connection.
    async fn send(&mut self, msg: Control, last: bool) -> Result<(), Error> {
        let mut buf = msg.encode();
        let h = self.sealer.seal_next(&mut buf, last)?;
        let write = async {
            framing::write_frame(self.writer, h, &buf).await?;
            self.writer.flush().await.map_err(FrameError::Io)
        };
        match tokio::time::timeout(DEAD_AFTER, write).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::Session(SessionError::Timeout)),
        }
    }
}

/// A file's announced size is what the user agreed to: more is refused.
fn limit(offer: &Offer) -> Option<u64> {
    if offer.kind == Kind::File { offer.size } else { None }
}

/// Verified chunks into the sink until the sender's LAST frame; returns `End`.
async fn take_chunks(
    inc: &mut Incoming,
    rx: &mut mpsc::Receiver<Inbound>,
    recv_key: &FrameKey,
    say: &mut Mailer<'_>,
    tick: &mut tokio::time::Interval,
    rep: &Reporter,
) -> Result<End, Error> {
    let ack_every = pipeline::ack_every(inc.offer.chunk_size);
    let limit = limit(&inc.offer);
    loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = tick.tick() => {
                // Proof of life while the sender has nothing to send us.
                say.send(Control::Ack(inc.count), false).await?;
                continue;
            }
        };
        let Some(item) = item else {
            return Err(Error::Frame(FrameError::Truncated));
        };
        match item {
            Inbound::Chunk(job) => {
                let chunk: OpenedChunk = job.await.map_err(|_| PipelineError::Worker)??;
                inc.root.push(&chunk.hash);
                inc.bytes += chunk.data.len() as u64;
                inc.received += chunk.data.len() as u64;
                inc.wire += chunk.wire_len as u64 + 4;
                inc.count += 1;
                if limit.is_some_and(|n| inc.bytes > n) {
                    return Err(Error::Pipeline(PipelineError::EndMismatch {
                        what: "more bytes than offered",
                    }));
                }
                let sink = inc.sink.as_mut().ok_or(PipelineError::Worker)?;
                sink.write(chunk.data, chunk.hash).await?;
                rep.emit(Event::Progress { bytes: inc.bytes });
                if inc.count.is_multiple_of(ack_every) {
                    // The chunk is in the sink's bounded queue: the sender may send more.
                    say.send(Control::Ack(inc.count), false).await?;
                }
            }
            Inbound::Last(header, mut buf, counter) => {
                recv_key.open(counter, header, &mut buf)?;
                return match Control::decode(&buf)? {
                    Control::End(end) => Ok(end),
                    Control::Error(m) => Err(Error::Remote(term::sanitize(&m))),
                    other => Err(unexpected(&other, "End")),
                };
            }
            Inbound::Failed(e) => return Err(e),
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
/// frame, which goes to the caller unopened. Frames too short to be chunks are control
/// messages opened here (only `Keepalive` is expected). Silence for [`DEAD_AFTER`] is a
/// dead connection. It owns the read half (the only reader) and hands it back at the
/// end, for [`session::wait_for_close`].
async fn read_frames(
    mut reader: futures::io::ReadHalf<Stream>,
    mut opener: framing::Opener,
    key: FrameKey,
    chunk_size: u32,
    first_index: u64,
    tx: mpsc::Sender<Inbound>,
) -> futures::io::ReadHalf<Stream> {
    let mut index = first_index;
    loop {
        let frame = match tokio::time::timeout(DEAD_AFTER, framing::read_frame(&mut reader)).await {
            Ok(Ok(Some(f))) => Ok(f),
            Ok(Ok(None)) => Err(Error::Frame(FrameError::Truncated)),
            Ok(Err(e)) => Err(Error::Frame(e)),
            Err(_) => Err(Error::Session(SessionError::Timeout)),
        };
        let (counter, header, mut buf) =
            match frame.and_then(|(h, b)| Ok((opener.reserve(h)?, h, b))) {
                Ok((counter, header, buf)) if header.last => {
                    let _ = tx.send(Inbound::Last(header, buf, counter)).await;
                    return reader;
                }
                Ok(parts) => parts,
                Err(e) => {
                    let _ = tx.send(Inbound::Failed(e)).await;
                    return reader;
                }
            };
        if (header.len as usize) < MIN_CHUNK_FRAME_LEN {
            let control = key
                .open(counter, header, &mut buf)
                .map_err(Error::from)
                .and_then(|()| Control::decode(&buf).map_err(Error::from));
            match control {
                Ok(Control::Keepalive) => continue,
                Ok(other) => {
                    let _ = tx.send(Inbound::Failed(unexpected(&other, "a chunk"))).await;
                    return reader;
                }
                Err(e) => {
                    let _ = tx.send(Inbound::Failed(e)).await;
                    return reader;
                }
            }
        }
        let key = key.clone();
        let i = index;
        index += 1;
        let job = tokio::task::spawn_blocking(move || {
            pipeline::open_chunk(&key, counter, header, buf, i, chunk_size)
        });
        if tx.send(Inbound::Chunk(job)).await.is_err() {
            return reader;
        }
    }
}

/// Declines an offer and waits (bounded) for the sender to read it.
async fn decline(session: &mut Session<Stream>, reason: &str) {
    if session.send(&Control::Decline(reason.to_owned())).await.is_ok() {
        session.linger(LINGER).await;
    }
}
