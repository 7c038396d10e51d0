//! The sending side: serve the code, authenticate receivers, send the offer and the
//! chunks, and pick up where the receiver stands after any reconnection.
//!
//! State that outlives a session ([`Outgoing`]): the source, the chunks read but not yet
//! acknowledged (at most [`pipeline::window_chunks`], with each one's hash and the root
//! hash before it), the running root hash, and the counters for `--verbose`.
//!
//! Invariants:
//! - No source byte is read before a receiver accepted or asked to resume.
//! - A chunk is dropped from memory only once the receiver acknowledged it, so any
//!   point a receiver can resume from (at least its last Ack, at most what was sent) is
//!   still at hand, for stdin as for files.
//! - Before skipping or resending, the prefix the receiver holds is checked against
//!   the root hash of the same prefix of our source: a changed source is an error,
//!   never mixed into the receiver's file.
//! - Every counter of a session's sealer is used once: frames are sealed only through
//!   it, and a new session brings a new key.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::message::Resume;

/// One chunk read from the source and not yet acknowledged.
struct Kept {
    raw: Arc<Vec<u8>>,
    /// Known once the chunk was first sealed.
    hash: Option<[u8; 32]>,
    /// The root over chunks before this one; known with `hash`.
    root_before: Option<RootHash>,
}

/// Counters for `--verbose` and the final event.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stats {
    pub(super) sent: u64,
    pub(super) resent: u64,
    pub(super) skipped: u64,
    pub(super) reconnects: u64,
}

/// Everything the sender keeps across sessions.
struct Outgoing {
    offer: Offer,
    chunk_size: u32,
    compression: Compression,
    source: Option<Source>,
    chunks: Option<mpsc::Receiver<std::io::Result<Vec<u8>>>>,
    source_done: bool,
    /// Chunks `acked..read` (oldest first).
    kept: VecDeque<Kept>,
    /// Chunks the receiver acknowledged (or held when it resumed).
    acked: u64,
    /// Chunks read from the source.
    read: u64,
    /// Bytes read from the source.
    bytes_read: u64,
    /// Chunks whose hash went into `root`.
    hashed: u64,
    root: RootHash,
    /// One past the highest chunk index ever sent.
    high: u64,
    stats: Stats,
}

/// How a session ended.
enum Ending {
    /// The receiver confirmed everything.
    Done,
    /// The connection died; the transfer goes on after a reconnection.
    Lost(&'static str),
}

/// `pcp send`.
///
/// # Errors
/// Usage errors, authentication failures, a declined offer, transfer failures, and
/// `--reconnect-timeout` running out.
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

    let mut out = Outgoing {
        offer,
        chunk_size,
        compression: if args.no_compress {
            Compression::Off
        } else {
            Compression::Zstd(args.level)
        },
        source: Some(source),
        chunks: None,
        source_done: false,
        kept: VecDeque::new(),
        acked: 0,
        read: 0,
        bytes_read: 0,
        hashed: 0,
        root: RootHash::default(),
        high: 0,
        stats: Stats::default(),
    };
    let me = node.peer_id();
    let mut failures = 0;
    let reconnect_timeout = Duration::from_secs(args.common.reconnect_timeout);
    let mut started: Option<Instant> = None;
    loop {
        let waiting = authenticate(&mut incoming, &mut events, &code, me, &mut failures, rep);
        let mut session = if started.is_none() {
            waiting.await?
        } else {
            tokio::time::timeout(reconnect_timeout, waiting)
                .await
                .map_err(|_| Error::ReconnectTimeout(reconnect_timeout.as_secs()))??
        };
        tracing::info!(peer = %session.peer(), "authenticated");
        session.send(&Control::Offer(out.offer.clone())).await?;
        if started.is_none() {
            rep.emit(Event::AwaitingAccept);
        }
        // A first answer may wait for a person; after a reconnection the receiver
        // answers at once, and silence means it died meanwhile.
        let reply = if started.is_none() {
            session.recv().await
        } else {
            tokio::time::timeout(DEAD_AFTER, session.recv())
                .await
                .unwrap_or(Err(SessionError::Timeout))
        };
        let from = match reply.map_err(|e| gone(e, "before accepting")) {
            Ok(Control::Accept) => Resume { chunks: 0, root: RootHash::default().finish() },
            Ok(Control::Resume(r)) => r,
            Ok(Control::Decline(reason)) => return Err(Error::Declined(term::sanitize(&reason))),
            Ok(other) => return Err(unexpected(&other, "Accept")),
            Err(e) if started.is_some() && error_is_lost(&e) => continue,
            Err(e) => return Err(e),
        };
        if out.chunks.is_none() {
            let source = out.source.take().expect("the source is spawned once");
            out.chunks = Some(source.spawn(chunk_size as usize)?);
        }
        if let Err(e) = out.position(&from, &mut session).await {
            let _ = session.send(&Control::Error(e.to_string())).await;
            session.linger(LINGER).await;
            return Err(e);
        }
        if started.is_none() {
            started = Some(Instant::now());
            rep.emit(Event::Started { total: out.offer.size });
        }
        match out.run(session, &mut incoming, &mut events, rep).await? {
            Ending::Done => break,
            Ending::Lost(why) => {
                tracing::debug!(why, "session lost");
                out.stats.reconnects += 1;
                rep.emit(Event::Notice("connection lost, reconnecting…".into()));
            }
        }
    }
    let s = out.stats;
    rep.emit(Event::Finished {
        bytes: out.bytes_read,
        wire: s.sent,
        chunks: out.read,
        elapsed: started.map_or(Duration::ZERO, |t| t.elapsed()),
        stats: vec![
            ("sent", s.sent),
            ("resent", s.resent),
            ("skipped", s.skipped),
            ("reconnects", s.reconnects),
        ],
    });
    Ok(())
}

/// Accepts streams until one passes the PAKE. Handshakes run side by side, so a
/// stalled or slow peer cannot hold up the real receiver; past the cap, newcomers are
/// told we are busy.
async fn authenticate(
    incoming: &mut libp2p_stream::IncomingStreams,
    events: &mut mpsc::Receiver<NodeEvent>,
    code: &Code,
    me: PeerId,
    failures: &mut u32,
    rep: &Reporter,
) -> Result<Session<Stream>, Error> {
    let mut pending = FuturesUnordered::new();
    loop {
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
                pending.push(async move {
                    (peer, Session::accept(stream, code, slot_ok, me, peer).await)
                });
            }
            Some(ev) = events.recv() => report_network(ev, rep),
            Some((peer, result)) = pending.next(), if !pending.is_empty() => match result {
                Ok(s) => return Ok(s),
                Err(SessionError::PeerWrongCode { peer }) => {
                    *failures += 1;
                    rep.emit(Event::WrongCode { peer, left: MAX_FAILED_ATTEMPTS - *failures });
                    if *failures >= MAX_FAILED_ATTEMPTS {
                        return Err(Error::CodeBurnt);
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "handshake refused"),
            },
        }
    }
}

impl Outgoing {
    /// Moves to the receiver's position: checks the prefix it holds against our source
    /// and sets things up to send from there. A fresh sender (a rerun) reads and hashes
    /// the chunks the receiver already has without sending them.
    async fn position(
        &mut self,
        from: &Resume,
        session: &mut Session<Stream>,
    ) -> Result<(), Error> {
        let n = from.chunks;
        let oldest = self.read - self.kept.len() as u64;
        if n < oldest {
            return Err(Error::Usage(format!(
                "the receiver holds {n} chunks but only chunks from {oldest} on are still kept: \
                 run pcp send again to start over"
            )));
        }
        let chunks = self.chunks.as_mut().expect("spawned before positioning");
        let mut last_sign_of_life = Instant::now();
        while self.read < n {
            // Catching up on a rerun: the receiver already has these chunks.
            let Some(raw) = chunks.recv().await else {
                return Err(Error::SourceChanged("it is shorter than what the receiver holds"));
            };
            let raw =
                raw.map_err(|source| Error::Io { context: "cannot read the source", source })?;
            let len = raw.len() as u64;
            let hash = tokio::task::spawn_blocking(move || *blake3::hash(&raw).as_bytes())
                .await
                .map_err(|_| PipelineError::Worker)?;
            self.root.push(&hash);
            self.bytes_read += len;
            self.stats.skipped += len;
            self.read += 1;
            self.hashed += 1;
            if last_sign_of_life.elapsed() >= KEEPALIVE {
                session.send(&Control::Keepalive).await?;
                last_sign_of_life = Instant::now();
            }
        }
        let root_at_n = if n == self.hashed {
            Some(self.root.finish())
        } else {
            self.kept
                .get((n - oldest) as usize)
                .and_then(|k| k.root_before.as_ref().map(RootHash::finish))
        };
        if root_at_n != Some(from.root) {
            return Err(Error::SourceChanged(
                "its first chunks differ from what the receiver holds",
            ));
        }
        // The receiver holds everything before n: forget it.
        while self.read - (self.kept.len() as u64) < n {
            self.kept.pop_front();
        }
        self.acked = n;
        Ok(())
    }

    /// One session's data phase: send from `acked` on, within the window, until the
    /// receiver confirms, or the connection dies.
    async fn run(
        &mut self,
        session: Session<Stream>,
        incoming: &mut libp2p_stream::IncomingStreams,
        events: &mut mpsc::Receiver<NodeEvent>,
        rep: &Reporter,
    ) -> Result<Ending, Error> {
        let parts = session.into_parts();
        let (reader, mut writer) = parts.stream.split();
        let (acked_tx, mut acked_rx) = watch::channel(self.acked);
        let mut replies = tokio::spawn(read_replies(reader, parts.opener, acked_tx));
        let mut sealer = parts.sealer;
        let key = parts.send_key;
        let window = pipeline::window_chunks(self.chunk_size);
        let depth = pipeline::depth();
        let mut inflight: VecDeque<(u64, JoinHandle<Result<SealedChunk, PipelineError>>)> =
            VecDeque::new();
        // Next chunk to hand to a seal job; everything before it is sealed or sent.
        let mut queued = self.acked;
        let mut last_write = Instant::now();
        let mut tick = tokio::time::interval(KEEPALIVE);
        let mut failed: Option<Error> = None;
        let ending = loop {
            // Seal what we hold and have not queued yet (a resend, or fresh chunks).
            while inflight.len() < depth && queued < self.read {
                let oldest = self.read - self.kept.len() as u64;
                let raw = Arc::clone(&self.kept[(queued - oldest) as usize].raw);
                let counter = sealer.reserve(false)?;
                let (key, compression, i) = (key.clone(), self.compression, queued);
                inflight.push_back((
                    i,
                    tokio::task::spawn_blocking(move || {
                        pipeline::seal_chunk(i, &raw, compression, &key, counter)
                    }),
                ));
                queued += 1;
            }
            if inflight.is_empty() && queued == self.read {
                if let Some(e) = failed.take() {
                    // Every earlier frame is out, so the next counter is in order.
                    let mut buf = Control::Error(e.to_string()).encode();
                    if let Ok(h) = sealer.seal_next(&mut buf, true) {
                        let _ = framing::write_frame(&mut writer, h, &buf).await;
                        let _ = writer.close().await;
                        let _ = tokio::time::timeout(LINGER, &mut replies).await;
                    }
                    return Err(e);
                }
                if self.source_done {
                    break None;
                }
            }
            let may_read = !self.source_done
                && queued == self.read
                && self.read < self.acked + window
                && inflight.len() < depth;
            let chunks = self.chunks.as_mut().expect("spawned before the data phase");
            tokio::select! {
                biased;
                done = wait_front(&mut inflight), if !inflight.is_empty() => {
                    let (i, sealed) = done;
                    let sealed = sealed.map_err(|_| PipelineError::Worker)??;
                    let write = framing::write_frame(&mut writer, sealed.header, &sealed.frame);
                    match tokio::time::timeout(DEAD_AFTER, write).await {
                        Ok(Ok(())) => {}
                        _ => break Some(self.lost_or_failed(&mut replies).await),
                    }
                    last_write = Instant::now();
                    self.record_sent(i, &sealed);
                    rep.emit(Event::Progress { bytes: self.high.min(self.read) * u64::from(self.chunk_size) });
                }
                chunk = chunks.recv(), if may_read => match chunk {
                    Some(Ok(raw)) => {
                        self.bytes_read += raw.len() as u64;
                        self.kept.push_back(Kept { raw: Arc::new(raw), hash: None, root_before: None });
                        self.read += 1;
                    }
                    Some(Err(source)) => {
                        // Stop reading; the error goes out once the chunks in flight are.
                        failed = Some(Error::Io { context: "cannot read the source", source });
                        self.source_done = true;
                    }
                    None => self.source_done = true,
                },
                changed = acked_rx.changed() => match changed {
                    Ok(()) => {
                        let acked = (*acked_rx.borrow()).min(self.high);
                        self.forget_until(acked);
                    }
                    Err(_) => break Some(self.lost_or_failed(&mut replies).await),
                },
                _ = tick.tick() => {
                    // Only with nothing in flight: the sealed chunks hold the earlier
                    // counters, and frames MUST go out in counter order.
                    if inflight.is_empty() && last_write.elapsed() >= KEEPALIVE {
                        let mut buf = Control::Keepalive.encode();
                        let h = sealer.seal_next(&mut buf, false)?;
                        let write = framing::write_frame(&mut writer, h, &buf);
                        if !matches!(tokio::time::timeout(DEAD_AFTER, write).await, Ok(Ok(()))) {
                            break Some(self.lost_or_failed(&mut replies).await);
                        }
                        last_write = Instant::now();
                    }
                }
                next = incoming.next() => {
                    if let Some((_, stream)) = next {
                        tokio::spawn(Session::refuse_busy(stream));
                    }
                }
                Some(ev) = events.recv() => report_network(ev, rep),
            }
        };
        if let Some(ending) = ending {
            return ending;
        }

        let end = Control::End(End {
            chunks: self.read,
            bytes: self.bytes_read,
            root: self.root.finish(),
        });
        let mut buf = end.encode();
        let header = sealer.seal_next(&mut buf, true)?;
        let write = async {
            framing::write_frame(&mut writer, header, &buf).await?;
            writer.flush().await.map_err(FrameError::Io)
        };
        if !matches!(tokio::time::timeout(DEAD_AFTER, write).await, Ok(Ok(()))) {
            return self.lost_or_failed(&mut replies).await;
        }
        let last = (&mut replies).await.map_err(|_| PipelineError::Worker)?;
        let _ = writer.close().await;
        match last {
            Ok(Control::Done) => Ok(Ending::Done),
            Ok(Control::Error(m)) => Err(Error::Remote(term::sanitize(&m))),
            Ok(other) => Err(unexpected(&other, "Done")),
            Err(e) if is_lost(&e) => Ok(Ending::Lost("the receiver went silent after End")),
            Err(e) => Err(e.into()),
        }
    }

    /// Bookkeeping once chunk `i` is on the wire: its hash into the root (the first
    /// time), and the counters.
    fn record_sent(&mut self, i: u64, sealed: &SealedChunk) {
        let oldest = self.read - self.kept.len() as u64;
        if i == self.hashed {
            if let Some(k) = self.kept.get_mut((i - oldest) as usize) {
                k.root_before = Some(self.root.clone());
                k.hash = Some(sealed.hash);
            }
            self.root.push(&sealed.hash);
            self.hashed += 1;
        }
        let len = sealed.raw_len as u64;
        self.stats.sent += len;
        if i < self.high {
            self.stats.resent += len;
        } else {
            self.high = i + 1;
        }
    }

    /// Drops chunks the receiver acknowledged.
    fn forget_until(&mut self, acked: u64) {
        if acked <= self.acked {
            return;
        }
        self.acked = acked;
        while self.read - (self.kept.len() as u64) < acked {
            self.kept.pop_front();
        }
    }

    /// The data phase broke: the receiver's own error when it sent one (fatal), else a
    /// lost connection (resumable).
    async fn lost_or_failed(
        &self,
        replies: &mut JoinHandle<Result<Control, SessionError>>,
    ) -> Result<Ending, Error> {
        match tokio::time::timeout(LINGER, &mut *replies).await {
            Ok(Ok(Ok(Control::Error(m)))) => Err(Error::Remote(term::sanitize(&m))),
            Ok(Ok(Ok(other))) => Err(unexpected(&other, "Ack")),
            Ok(Ok(Err(e))) if !is_lost(&e) => Err(e.into()),
            _ => {
                replies.abort();
                Ok(Ending::Lost("the connection died"))
            }
        }
    }
}

/// Passes the node's DHT status to the user; the rest is for `-v`.
fn report_network(ev: NodeEvent, rep: &Reporter) {
    if let NodeEvent::Dht(s) = ev {
        rep.emit(Event::Dht(s));
    } else {
        tracing::debug!(?ev, "network event");
    }
}

/// Waits for the oldest seal job without taking it off the queue until it is done, so
/// that `select!` may drop this future safely.
async fn wait_front(
    inflight: &mut VecDeque<(u64, JoinHandle<Result<SealedChunk, PipelineError>>)>,
) -> (u64, Result<Result<SealedChunk, PipelineError>, tokio::task::JoinError>) {
    let (i, handle) = inflight.front_mut().expect("guarded by !is_empty()");
    let i = *i;
    let r = handle.await;
    inflight.pop_front();
    (i, r)
}

/// Reads the receiver's side of the data phase: `Ack`s, published on `acked`, and
/// `Keepalive`s, until its LAST frame (`Done` or `Error`), which is returned. Silence
/// for [`DEAD_AFTER`] is a dead connection.
pub(super) async fn read_replies<R: futures::AsyncRead + Unpin>(
    mut reader: R,
    mut opener: framing::Opener,
    acked: watch::Sender<u64>,
) -> Result<Control, SessionError> {
    loop {
        let (h, mut buf) =
            match tokio::time::timeout(DEAD_AFTER, framing::read_frame(&mut reader)).await {
                Ok(frame) => frame?.ok_or(FrameError::Truncated)?,
                Err(_) => return Err(SessionError::Timeout),
            };
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
            Control::Keepalive if !h.last => {}
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
