//! The sender's data phase, over any session stream: the window of unacknowledged
//! chunks, sealing on worker threads, resending after a reconnection, and the end.
//!
//! State that outlives a session ([`Outgoing`]): the offer, the source's chunk channel, the chunks
//! read but not yet acknowledged (with the root hash before each), the running root
//! hash, and the counters.
//!
//! Invariants:
//! - No source byte is read before a receiver accepted or asked to resume.
//! - The offer is measured when it is sent (after authentication), as long as the
//!   source has not started; from then on every session gets the same offer, since the
//!   stream it describes is under way. The source is held to its size: see
//!   [`crate::source`].
//! - A chunk is dropped from memory only once the receiver acknowledged it and
//!   [`pipeline::ACK_LEAD`] more after it, so any point a receiver can resume from (at
//!   least its last Ack less what its writer had not recorded yet, at most what was
//!   sent) is still at hand, for stdin as for files. Those last few below the Ack are
//!   not counted in the window. Within a [`Budget`] (many receivers) the last Ack is
//!   the bound: permits held below every receiver's Ack could leave none for the
//!   chunks that would move the Acks on.
//! - The window is counted in wire bytes: a chunk is kept raw until it was first
//!   sealed, then, if zstd shrank it, as its frame's plaintext (chunk header and zstd
//!   payload), which is all a resend needs ([`pipeline::reseal_into`]). A new chunk is
//!   read only while the kept bytes leave room for a raw one within
//!   [`pipeline::WINDOW_BYTES`], and never past [`pipeline::most_chunks`] (within a
//!   [`Budget`], which counts chunks, never past [`pipeline::window_chunks`]). A window
//!   fed from a shared buffer keeps the raw chunks it shares instead (a copy per
//!   receiver would cost more than it saves) and so counts them raw.
//! - An Ack never moves past what this session wrote: a receiver cannot make the
//!   sender forget chunks it has not been sent again.
//! - Before skipping or resending, the prefix the receiver holds is checked against
//!   the root hash of the same prefix of our source: a changed source is an error,
//!   never mixed into the receiver's file.
//! - Frames go out in counter order: seal jobs take their counters in order and are
//!   written in that order; a control frame is sealed only when none is in flight.
//! - With a [`Budget`] (many receivers, [`super::many`]), a chunk is read into the
//!   window only with one of the budget's permits, held until the chunk is forgotten:
//!   every session sharing the budget keeps at most its size in chunks between them,
//!   however many they are. A session short of permits waits; its receiver's timed
//!   acks (every [`KEEPALIVE`]) free what it holds, so it slows, never stalls.
//! - A window fed from a shared buffer ([`Feed::Shared`], standard input to many
//!   receivers) takes no permit of its own: each chunk carries the one the buffer took
//!   for it, given back once no window and not the buffer hold it. Such a window tells
//!   the buffer how far its receiver acknowledged, and stops with the buffer's reason
//!   when the buffer drops its receiver.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{KEEPALIVE, LINGER, unexpected};
use crate::error::Error;
use crate::event::{Event, Events, Role, Stats};
use crate::framing::{FrameReader, FrameWriter};
use crate::message::{Control, End, FileMeta, MessageError, Offer, Resume};
use crate::pipeline::{self, Compression, Found, Governor, PipelineError, RootHash, SealedChunk};
use crate::pool::{Buf, Pool};
use crate::session::{self, Session, SessionError};
use crate::source::{Chunks, Remeasure, Source, SourceError};

/// How long a cancelled sender waits for the receiver to have read its `Cancel`.
const CANCEL_LINGER: Duration = Duration::from_secs(5);

/// One chunk read from the source and not yet acknowledged.
struct Kept {
    body: Body,
    /// The root over chunks before this one; known once the chunk was first sealed.
    root_before: Option<RootHash>,
    /// Its place in the shared budget, if there is one; given back when the last
    /// holder drops it.
    _held: Option<Arc<Held>>,
}

/// What a window keeps of a chunk for a resend.
enum Body {
    /// The chunk as read: not sealed yet, or zstd did not shrink it, or shared.
    Raw(Arc<Buf>),
    /// The plaintext of its frame, compressed ([`SealedChunk::plain`]).
    Packed(Arc<Vec<u8>>),
}

impl Body {
    /// Bytes it holds, which is about what its frame puts on the wire.
    fn len(&self) -> u64 {
        match self {
            Body::Raw(raw) => raw.len() as u64,
            Body::Packed(plain) => plain.len() as u64,
        }
    }
}

/// A chunk as a window takes it: its bytes, and its place in a budget if it came with
/// one (from a shared buffer).
#[derive(Clone)]
pub(super) struct Piece {
    pub(super) raw: Arc<Buf>,
    pub(super) held: Option<Arc<Held>>,
}

/// Where a window's chunks come from.
pub(super) enum Feed {
    /// Its own source's reader thread.
    Own(Chunks),
    /// A buffer shared with other receivers' windows.
    Shared(super::many::fanout::Cursor),
}

impl Feed {
    /// The next chunk, the error that ended the source, or `None` at its end.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped, it takes nothing.
    async fn recv(&mut self) -> Option<Result<Piece, SourceError>> {
        match self {
            Feed::Own(rx) => {
                rx.recv().await.map(|c| c.map(|buf| Piece { raw: Arc::new(buf), held: None }))
            }
            Feed::Shared(cursor) => cursor.recv().await,
        }
    }

    /// Fed from a shared buffer: what fires when the buffer drops this receiver.
    fn dropped(&self) -> Option<super::many::fanout::Dropped> {
        match self {
            Feed::Own(_) => None,
            Feed::Shared(c) => Some(c.dropped()),
        }
    }
}

/// Chunks that the windows of many sessions may keep between them: a semaphore of
/// chunk permits, and a count of chunks kept under it (with its high-water mark), so
/// that the bound can be observed.
#[derive(Clone)]
pub(crate) struct Budget(Arc<Shared>);

struct Shared {
    permits: Arc<Semaphore>,
    kept: AtomicU64,
    peak: AtomicU64,
    /// Told whenever chunks are given back.
    freed: tokio::sync::Notify,
}

impl Budget {
    /// A budget of `chunks` chunks (at least one).
    pub(crate) fn new(chunks: usize) -> Budget {
        Budget(Arc::new(Shared {
            permits: Arc::new(Semaphore::new(chunks.max(1))),
            kept: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            freed: tokio::sync::Notify::new(),
        }))
    }

    /// The most chunks ever kept at once under this budget.
    pub(crate) fn peak(&self) -> u64 {
        self.0.peak.load(Ordering::Relaxed)
    }

    /// A permit if more than `spare` are free now: `spare` stay free for others.
    pub(super) fn try_permit(&self, spare: usize) -> Option<OwnedSemaphorePermit> {
        if self.0.permits.available_permits() <= spare {
            return None;
        }
        Arc::clone(&self.0.permits).try_acquire_owned().ok()
    }

    /// Fires once chunks are given back after it was enabled (see
    /// [`tokio::sync::Notify::notified`]).
    pub(super) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.freed.notified()
    }

    /// Waits for `n` permits at once, kept until the [`Held`] is dropped: what a
    /// sender holds besides its window (read-ahead and seal buffers). Cancel safe.
    pub(super) async fn reserve(&self, n: usize) -> Held {
        let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        let permit = match Arc::clone(&self.0.permits).acquire_many_owned(n).await {
            Ok(p) => p,
            Err(_) => std::future::pending().await,
        };
        self.count(u64::from(n), Some(permit))
    }

    /// [`Budget::reserve`] if `n` permits are free now.
    pub(super) fn try_reserve(&self, n: usize) -> Option<Held> {
        let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.0.permits).try_acquire_many_owned(n).ok()?;
        Some(self.count(u64::from(n), Some(permit)))
    }

    /// Waits for a permit. Cancel safe: dropped, it takes nothing.
    pub(super) async fn permit(&self) -> OwnedSemaphorePermit {
        match Arc::clone(&self.0.permits).acquire_owned().await {
            Ok(p) => p,
            // Never closed: wait forever rather than read past the bound.
            Err(_) => std::future::pending().await,
        }
    }

    /// Counts one chunk kept (with its permit, if it has one).
    pub(super) fn keep(&self, permit: Option<OwnedSemaphorePermit>) -> Held {
        self.count(1, permit)
    }

    fn count(&self, chunks: u64, permit: Option<OwnedSemaphorePermit>) -> Held {
        let now = self.0.kept.fetch_add(chunks, Ordering::Relaxed) + chunks;
        self.0.peak.fetch_max(now, Ordering::Relaxed);
        Held { permit, chunks, budget: self.clone() }
    }
}

/// Chunks' place in a [`Budget`]: one kept chunk, or a reservation.
pub(crate) struct Held {
    permit: Option<OwnedSemaphorePermit>,
    chunks: u64,
    budget: Budget,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.0.kept.fetch_sub(self.chunks, Ordering::Relaxed);
        // The permit goes back first: whoever is told finds it.
        drop(self.permit.take());
        self.budget.0.freed.notify_waiters();
    }
}

/// A wait for a permit, kept across turns of the send loop so that it keeps its place
/// in the semaphore's queue (dropped and made again, it would go to the back).
type PermitWait = std::pin::Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>;

type SealJob = (u64, JoinHandle<Result<SealedChunk, PipelineError>>);

/// How a session's data phase ended.
pub(super) enum Ending {
    /// The receiver confirmed everything.
    Done,
    /// The connection died; the transfer goes on after a reconnection.
    Lost,
    /// The receiver refused for a local reason before anything was sent; it may try
    /// again with the same code.
    Refused,
}

/// Everything the sender keeps across sessions.
pub(super) struct Outgoing {
    /// What was last offered: set by [`Outgoing::offer`].
    offer: Option<Offer>,
    /// A file's permissions and time when it was offered, sent in `End`.
    meta: Option<FileMeta>,
    chunk_size: u32,
    /// Each chunk's compression, adapted to what the link takes.
    governor: Governor,
    /// The source until a receiver accepts; then its chunks.
    source: Option<Source>,
    chunks: Option<Feed>,
    /// Buffers for chunks read and frames sealed, recycled: see [`crate::pool`].
    pool: Pool,
    source_done: bool,
    /// A source error, sent to the receiver once the chunks before it are out.
    failed: Option<SourceError>,
    /// Chunks `read - kept.len() .. read` (oldest first).
    kept: VecDeque<Kept>,
    /// What `kept` holds, in bytes ([`Body::len`]).
    kept_bytes: u64,
    /// Chunks the receiver acknowledged (or held when it resumed).
    acked: u64,
    /// Chunks read from the source.
    pub(super) read: u64,
    /// Bytes read from the source.
    pub(super) bytes_read: u64,
    /// Chunks whose hash went into `root`.
    hashed: u64,
    root: RootHash,
    /// One past the highest chunk index ever sent.
    high: u64,
    pub(super) stats: Stats,
    /// Shared with other sessions' windows, if any (see the module invariants).
    budget: Option<Budget>,
    /// A permit of `budget` taken for the next chunk read.
    permit: Option<OwnedSemaphorePermit>,
    /// Seal jobs in flight at most (each with an output buffer).
    depth: usize,
    /// Ticks with every frame a receiver sends in the data phase: how the door tells a
    /// live session from one whose peer vanished without a word ([`Outgoing::heard`]).
    heard: watch::Sender<()>,
}

/// The chunks of one session between the window and the wire: seal jobs in counter
/// order, and the next chunk to hand to one.
struct Flight {
    jobs: VecDeque<SealJob>,
    queued: u64,
}

impl Flight {
    /// Chunks this session wrote to the wire so far, from the resume point on.
    fn written(&self) -> u64 {
        self.queued - self.jobs.len() as u64
    }
}

impl Outgoing {
    pub(super) fn new(chunk_size: u32, compression: Compression, source: Source) -> Outgoing {
        Outgoing::from(chunk_size, compression, Some(source), Pool::for_chunks(chunk_size))
    }

    /// A window fed from a shared buffer (see [`Feed::Shared`]), with the offer the
    /// buffer's source was measured at once for every receiver. Its own pool keeps at
    /// most `keep` idle buffers and it seals at most `depth` chunks at once: its seal
    /// buffers are counted against the budget.
    pub(super) fn fed(
        chunk_size: u32,
        compression: Compression,
        offer: Offer,
        cursor: super::many::fanout::Cursor,
        (keep, depth): (usize, usize),
    ) -> Outgoing {
        let pool = Pool::new(chunk_size as usize + crate::pool::FRAME_ROOM, keep);
        let mut out = Outgoing::from(chunk_size, compression, None, pool);
        out.depth = depth.max(1);
        out.offer = Some(offer);
        out.chunks = Some(Feed::Shared(cursor));
        out
    }

    fn from(chunk_size: u32, compression: Compression, source: Option<Source>, pool: Pool) -> Self {
        Outgoing {
            offer: None,
            meta: None,
            chunk_size,
            governor: Governor::new(compression, pipeline::depth()),
            source,
            chunks: None,
            pool,
            source_done: false,
            failed: None,
            kept: VecDeque::new(),
            kept_bytes: 0,
            acked: 0,
            read: 0,
            bytes_read: 0,
            hashed: 0,
            root: RootHash::default(),
            high: 0,
            stats: Stats::default(),
            budget: None,
            permit: None,
            depth: pipeline::depth(),
            heard: watch::Sender::new(()),
        }
    }

    /// Marks every frame the receiver sends in a data phase, from now on: acks and
    /// keepalives come at least every [`KEEPALIVE`] while it lives.
    pub(super) fn heard(&self) -> watch::Receiver<()> {
        self.heard.subscribe()
    }

    /// Keeps this window within `budget`, shared with other senders' windows; its
    /// pool then keeps at most `keep` idle buffers, and it seals at most `depth`
    /// chunks at once (both counted by the caller's reservation, see
    /// [`Budget::reserve`]).
    pub(super) fn within(mut self, budget: Budget, (keep, depth): (usize, usize)) -> Outgoing {
        self.budget = Some(budget);
        self.depth = depth.max(1);
        self.pool = Pool::new(self.chunk_size as usize + crate::pool::FRAME_ROOM, keep);
        self
    }

    /// The offer for a receiver that just authenticated. While the source has not
    /// started, it is measured now (a walk of a tree's metadata, on a blocking thread),
    /// so that it describes what will be read, however long ago the code was shown:
    /// a receiver that refused or went away before anything was read leaves the next
    /// one a fresh measure. Once the source has started, the same offer as before.
    ///
    /// # Errors
    /// Unreadable metadata.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped while it measures, it loses the source, and the
    /// transfer cannot go on (which a caller that drops it ends anyway).
    pub(super) async fn offer(&mut self) -> Result<&Offer, Error> {
        if let Some(mut source) = self.source.take() {
            let chunk_size = self.chunk_size;
            let (source, offer, meta) = tokio::task::spawn_blocking(move || {
                let offer = source.offer(chunk_size);
                let meta = source.file_meta();
                (source, offer, meta)
            })
            .await
            .map_err(PipelineError::Task)?;
            self.source = Some(source);
            self.offer = Some(offer?);
            self.meta = meta;
        }
        self.offer.as_ref().ok_or_else(|| PipelineError::Gone("source's offer").into())
    }

    /// What was last offered, if anything was.
    pub(super) fn offered(&self) -> Option<&Offer> {
        self.offer.as_ref()
    }

    /// How a handshake measures the offer it sends before the receiver's confirmation,
    /// if that can be done without us: the offer of a source that has started (it never
    /// changes again), or a settled source's, measured now and again, cheaply, by each
    /// handshake ([`crate::source::Source::remeasure`]). A session that sent one hands
    /// it to [`Outgoing::adopt`].
    ///
    /// # Errors
    /// As for [`Outgoing::offer`].
    pub(super) async fn early_offer(&mut self) -> Result<Option<Remeasure>, Error> {
        match self.source.as_mut().map(Source::offer_is_settled) {
            None => {
                Ok(self.offer.clone().map(|o| -> Remeasure { Arc::new(move || Some(o.clone())) }))
            }
            Some(true) => {
                let offer = self.offer().await?.clone();
                Ok(self.source.as_mut().and_then(|s| s.remeasure(&offer)))
            }
            Some(false) => Ok(None),
        }
    }

    /// The offer a handshake sent (see [`Outgoing::early_offer`]): what we offer from
    /// now on, as if measured when it was sent. Once the source started, that is the
    /// offer we hold already.
    pub(super) fn adopt(&mut self, offer: Offer) {
        if let Some(source) = &self.source {
            self.meta = source.file_meta();
            self.offer = Some(offer);
        }
    }

    fn oldest(&self) -> u64 {
        self.read - self.kept.len() as u64
    }

    /// Moves to the receiver's position: checks the prefix it holds against our source
    /// and sets things up to send from there. A fresh sender (a rerun) reads and hashes
    /// the chunks the receiver already has without sending them.
    pub(super) async fn position<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        from: &Resume,
        session: &mut Session<S>,
    ) -> Result<(), Error> {
        let n = from.chunks;
        if n < self.oldest() {
            return Err(Error::ResumeTooOld { held: n, oldest: self.oldest() });
        }
        if let Some(source) = self.source.take() {
            // The first receiver accepted: only now is the source read, held to the
            // size it was offered at.
            let size = self.offer.as_ref().expect("offered before a receiver answers").size;
            let chunks = source.spawn(self.chunk_size as usize, self.pool.clone(), size);
            self.chunks = Some(Feed::Own(chunks));
        }
        let chunks = self.chunks.as_mut().expect("spawned just above or before");
        let mut last_sign_of_life = Instant::now();
        while self.read < n {
            // Catching up on a rerun: the receiver already has these chunks.
            let Some(raw) = chunks.recv().await else {
                return Err(Error::SourceChanged("it is shorter than what the receiver holds"));
            };
            let raw = raw?.raw;
            let len = raw.len() as u64;
            let hash = tokio::task::spawn_blocking(move || *blake3::hash(&raw).as_bytes())
                .await
                .map_err(PipelineError::Task)?;
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
            let k = self.kept.get((n - self.oldest()) as usize);
            k.and_then(|k| k.root_before.as_ref().map(RootHash::finish))
        };
        if root_at_n != Some(from.root) {
            return Err(Error::SourceChanged(
                "its first chunks differ from what the receiver holds",
            ));
        }
        // The receiver holds everything before n: forget it.
        self.forget_until(n);
        self.acked = n;
        Ok(())
    }

    /// One session's data phase: send from `acked` on, within the window, until the
    /// receiver confirms, the connection dies, or `cancel` fires.
    pub(super) async fn run<S>(
        &mut self,
        session: Session<S>,
        events: &Events,
        cancel: &CancellationToken,
    ) -> Result<Ending, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (_, reader, mut writer) = session.into_parts();
        let (acked_tx, mut acked_rx) = watch::channel(self.acked);
        let mut replies = tokio::spawn(read_replies(reader, acked_tx, self.heard.clone()));
        let mut flight = Flight { jobs: VecDeque::new(), queued: self.acked };
        let depth = self.depth;
        let mut last_write = Instant::now();
        let mut tick = tokio::time::interval(KEEPALIVE);
        // The raw length of the frame just written and how long the write took, until
        // the governor heard of it.
        let mut wrote = None;
        self.governor.reconnected();
        let mut waiting: Option<PermitWait> = None;
        // Fed from a shared buffer: fires when the buffer drops this receiver.
        let dropped = self.chunks.as_ref().and_then(Feed::dropped);
        loop {
            if let Some((raw, writing)) = wrote.take() {
                self.observe(&flight, raw, writing, last_write);
            }
            self.seal_more(&mut flight, &mut writer, depth)?;
            if flight.jobs.is_empty() && flight.queued == self.read {
                if let Some(e) = self.failed.take() {
                    // Every earlier frame is out, so the next counter is in order.
                    return Err(tell_failure(writer, &mut replies, e.into()).await);
                }
                if self.source_done {
                    return self.finish(writer, replies).await;
                }
            }
            let (may_read, want_permit) = self.may_read(&flight, depth, &mut waiting);
            let chunks = self.chunks.as_mut().expect("positioned before the data phase");
            tokio::select! {
                biased;
                () = cancel.cancelled() => return self.cancel(flight, writer, replies).await,
                (i, sealed) = wait_front(&mut flight.jobs), if !flight.jobs.is_empty() => {
                    let mut sealed = sealed.map_err(PipelineError::Task)??;
                    let began = Instant::now();
                    if writer.write_framed(sealed.header, sealed.wire()).await.is_err() {
                        return self.lost(&mut replies, &acked_rx, &flight).await;
                    }
                    last_write = Instant::now();
                    wrote = Some((sealed.raw_len, last_write - began));
                    self.record_sent(i, &mut sealed, events);
                }
                permit = async { waiting.as_mut().expect("set above").await }, if want_permit => {
                    waiting = None;
                    self.permit = Some(permit);
                }
                chunk = chunks.recv(), if may_read => self.take(chunk),
                why = async { dropped.as_ref().expect("checked").wait().await }, if dropped.is_some() && !self.source_done => {
                    // Out once the chunks in flight are, as a source error is.
                    self.failed = Some(why);
                    self.source_done = true;
                }
                changed = acked_rx.changed() => match changed {
                    // Never past what this session wrote (see the module invariants).
                    Ok(()) => self.forget_until((*acked_rx.borrow()).min(flight.written())),
                    Err(_) => return self.lost(&mut replies, &acked_rx, &flight).await,
                },
                _ = tick.tick() => {
                    // Only with nothing in flight: the sealed chunks hold the earlier
                    // counters, and frames MUST go out in counter order.
                    if flight.jobs.is_empty() && last_write.elapsed() >= KEEPALIVE {
                        if session::send(&mut writer, &Control::Keepalive).await.is_err() {
                            return self.lost(&mut replies, &acked_rx, &flight).await;
                        }
                        last_write = Instant::now();
                    }
                }
            }
        }
    }

    /// A frame was written (`raw` bytes of data, in `writing`): the governor hears how.
    /// Free to write again: was the next frame sealed already (the link is what holds
    /// us back), still being sealed (the CPU is), or not on its way at all (the source
    /// or the window is)?
    fn observe(&mut self, flight: &Flight, raw: usize, writing: Duration, at: Instant) {
        let found = match flight.jobs.front() {
            Some((_, next)) if next.is_finished() => Found::Sealed,
            Some(_) => Found::Sealing,
            None => Found::Nothing,
        };
        self.governor.observe(found, raw, writing, at);
    }

    /// Whether the next chunk may be read now (the source has more, the window and the
    /// seal queue have room, and within a budget a permit is in hand), and whether a
    /// permit is wanted first; the wait for one starts here.
    fn may_read(
        &self,
        flight: &Flight,
        depth: usize,
        waiting: &mut Option<PermitWait>,
    ) -> (bool, bool) {
        let may_read = !self.source_done
            && flight.queued == self.read
            && self.window_has_room()
            && flight.jobs.len() < depth;
        // Within a budget, a chunk is read only with a permit in hand.
        let want_permit = may_read && self.budget.is_some() && self.permit.is_none();
        let may_read = may_read && (self.budget.is_none() || self.permit.is_some());
        if want_permit
            && waiting.is_none()
            && let Some(budget) = self.budget.clone()
        {
            *waiting = Some(Box::pin(async move { budget.permit().await }));
        }
        (may_read, want_permit)
    }

    /// Whether the window has room for one more raw chunk (see the module invariants):
    /// always for the first few, whatever the chunk size. Within a [`Budget`], which
    /// counts chunks, not bytes, a window keeps at most a raw window's count of them,
    /// so that one receiver of compressible data cannot hold every permit.
    fn window_has_room(&self) -> bool {
        // The few kept below the last ack (see the module invariants) are not in flight.
        let below = usize::try_from(self.acked.saturating_sub(self.oldest())).unwrap_or(0);
        let below_bytes: u64 = self.kept.iter().take(below).map(|k| k.body.len()).sum();
        let chunks = (self.kept.len() - below.min(self.kept.len())) as u64;
        let bytes = self.kept_bytes - below_bytes;
        let most = if self.budget.is_some() {
            pipeline::window_chunks(self.chunk_size)
        } else {
            pipeline::most_chunks(self.chunk_size)
        };
        chunks < 4
            || (bytes + u64::from(self.chunk_size) <= pipeline::WINDOW_BYTES && chunks < most)
    }

    /// Hands chunks we hold and have not queued yet (a resend, or fresh ones) to seal
    /// jobs, up to `depth` in flight.
    fn seal_more<W: AsyncWrite + Unpin>(
        &mut self,
        flight: &mut Flight,
        writer: &mut FrameWriter<W>,
        depth: usize,
    ) -> Result<(), Error> {
        while flight.jobs.len() < depth && flight.queued < self.read {
            let i = flight.queued;
            let counter = writer.reserve()?;
            let key = writer.key().clone();
            let out = self.pool.take();
            let job = match &self.kept[(i - self.oldest()) as usize].body {
                Body::Raw(raw) => {
                    let raw = Arc::clone(raw);
                    let compression = (self.governor.current(), self.governor.sample());
                    // A shared raw chunk stays as it is (see the module invariants).
                    let keep = !matches!(self.chunks, Some(Feed::Shared(_)));
                    tokio::task::spawn_blocking(move || {
                        pipeline::seal_keeping(i, &raw, compression, (&key, counter), out, keep)
                    })
                }
                Body::Packed(plain) => {
                    let plain = Arc::clone(plain);
                    tokio::task::spawn_blocking(move || {
                        pipeline::reseal_into(&plain, &key, counter, out)
                    })
                }
            };
            flight.jobs.push_back((i, job));
            flight.queued += 1;
        }
        Ok(())
    }

    /// A chunk (or the end, or an error) from the source.
    fn take(&mut self, chunk: Option<Result<Piece, SourceError>>) {
        match chunk {
            Some(Ok(Piece { raw, held })) => {
                self.bytes_read += raw.len() as u64;
                let held = held
                    .or_else(|| self.budget.as_ref().map(|b| Arc::new(b.keep(self.permit.take()))));
                self.kept_bytes += raw.len() as u64;
                self.kept.push_back(Kept { body: Body::Raw(raw), root_before: None, _held: held });
                self.read += 1;
            }
            Some(Err(e)) => {
                // Stop reading; the error goes out once the chunks in flight are.
                self.failed = Some(e);
                self.source_done = true;
            }
            None => self.source_done = true,
        }
    }

    /// Bookkeeping once chunk `i` is on the wire: its hash into the root (the first
    /// time), and the counters.
    fn record_sent(&mut self, i: u64, sealed: &mut SealedChunk, events: &Events) {
        let oldest = self.oldest();
        let kept = i.checked_sub(oldest).and_then(|at| self.kept.get_mut(at as usize));
        if let Some(k) = kept {
            if i == self.hashed {
                k.root_before = Some(self.root.clone());
            }
            // From now on the window keeps the chunk as it went out.
            if let Some(plain) = sealed.plain.take() {
                self.kept_bytes = self.kept_bytes - k.body.len() + plain.len() as u64;
                k.body = Body::Packed(Arc::new(plain));
            }
        }
        if i == self.hashed {
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
        let bytes = (self.high.min(self.read)) * u64::from(self.chunk_size);
        events.emit(Event::Progress { bytes: bytes.min(self.bytes_read) });
    }

    /// The session ended without a verdict ([`lost_or_failed`]). An ack that came in
    /// while the writer was busy still counts: the receiver may resume from below it
    /// only within what is kept (see the module invariants).
    async fn lost<R>(
        &mut self,
        replies: &mut JoinHandle<Result<(Control, FrameReader<R>), SessionError>>,
        acked: &watch::Receiver<u64>,
        flight: &Flight,
    ) -> Result<Ending, Error> {
        let ended = lost_or_failed(replies).await;
        if matches!(ended, Ok(Ending::Lost)) {
            self.forget_until((*acked.borrow()).min(flight.written()));
        }
        ended
    }

    /// Drops chunks the receiver acknowledged, but for the last [`pipeline::ACK_LEAD`]
    /// (see the module invariants).
    fn forget_until(&mut self, acked: u64) {
        if acked <= self.acked {
            return;
        }
        self.acked = acked;
        // Not within a budget: permits held below every receiver's ack could leave none
        // for the chunks that would move those acks on.
        let lead = if self.budget.is_none() { pipeline::ACK_LEAD } else { 0 };
        let keep_from = acked.saturating_sub(lead);
        while self.oldest() < keep_from
            && let Some(k) = self.kept.pop_front()
        {
            self.kept_bytes -= k.body.len();
        }
        if let Some(Feed::Shared(c)) = &self.chunks {
            c.passed(self.oldest());
        }
    }

    /// Everything is out: `End` in our LAST frame, then the receiver's verdict.
    async fn finish<R, W>(
        &mut self,
        mut writer: FrameWriter<W>,
        mut replies: JoinHandle<Result<(Control, FrameReader<R>), SessionError>>,
    ) -> Result<Ending, Error>
    where
        W: AsyncWrite + Unpin,
    {
        let end = End {
            chunks: self.read,
            bytes: self.bytes_read,
            root: self.root.finish(),
            meta: self.meta,
        };
        if session::send(&mut writer, &Control::End(end)).await.is_err() {
            return lost_or_failed(&mut replies).await;
        }
        let last =
            (&mut replies).await.map_err(|_| PipelineError::Gone("receiver's reply reader"))?;
        writer.close().await;
        match last {
            Ok((Control::Done, _)) => Ok(Ending::Done),
            Ok((other, _)) => Err(verdict(other, false)),
            Err(e) if e.is_transient() => Ok(Ending::Lost),
            Err(e) => Err(e.into()),
        }
    }

    /// Cancelled: the frames in flight hold the earlier counters, so they go out first
    /// (a few chunks at most), then `Cancel` in our LAST frame. The receiver reads it
    /// only after what the connection still buffers ahead of it (a slow link may hold
    /// seconds of it): wait, bounded, for its last word before the process may exit
    /// and drop the connection.
    async fn cancel<R, W: AsyncWrite + Unpin>(
        &mut self,
        mut flight: Flight,
        mut writer: FrameWriter<W>,
        replies: JoinHandle<Result<(Control, FrameReader<R>), SessionError>>,
    ) -> Result<Ending, Error> {
        while !flight.jobs.is_empty() {
            let (_, sealed) = wait_front(&mut flight.jobs).await;
            match sealed {
                Ok(Ok(s)) if writer.write_framed(s.header, s.wire()).await.is_ok() => {}
                _ => return Err(Error::Cancelled),
            }
        }
        if session::send(&mut writer, &Control::Cancel).await.is_ok() {
            let _ = tokio::time::timeout(CANCEL_LINGER, replies).await;
        }
        writer.close().await;
        Err(Error::Cancelled)
    }
}

/// A source error, told to the receiver in our LAST frame once every earlier frame is
/// out (issue 10, item 1: the receiver stops at once and says why).
async fn tell_failure<R, W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    replies: &mut JoinHandle<Result<(Control, FrameReader<R>), SessionError>>,
    e: Error,
) -> Error {
    let why = crate::error::last_word(&e);
    let _ = session::send(&mut writer, &Control::Error(why)).await;
    writer.close().await;
    let _ = tokio::time::timeout(LINGER, &mut *replies).await;
    e
}

/// What a receiver's LAST message other than `Done` after our `End` means. `early`:
/// it came while we were still sending, so even `Done` is out of turn.
fn verdict(last: Control, early: bool) -> Error {
    match last {
        Control::Error(message) => SessionError::Remote { from: Role::Receiver, message }.into(),
        Control::Cancel => Error::PeerCancelled(Role::Receiver),
        other if early => unexpected(&other, "acks while the data was still being sent"),
        other => unexpected(&other, "Done"),
    }
}

/// The data phase broke: the receiver's own last word when it sent one (fatal), else a
/// lost connection (resumable).
async fn lost_or_failed<R>(
    replies: &mut JoinHandle<Result<(Control, FrameReader<R>), SessionError>>,
) -> Result<Ending, Error> {
    match tokio::time::timeout(LINGER, &mut *replies).await {
        Ok(Ok(Ok((last, _)))) => Err(verdict(last, true)),
        Ok(Ok(Err(e))) if !e.is_transient() => Err(e.into()),
        _ => {
            replies.abort();
            Ok(Ending::Lost)
        }
    }
}

/// Waits for the oldest seal job without taking it off the queue until it is done, so
/// that `select!` may drop this future safely.
async fn wait_front(
    jobs: &mut VecDeque<SealJob>,
) -> (u64, Result<Result<SealedChunk, PipelineError>, tokio::task::JoinError>) {
    let (i, handle) = jobs.front_mut().expect("guarded by !is_empty()");
    let i = *i;
    let r = handle.await;
    jobs.pop_front();
    (i, r)
}

/// Reads the receiver's side of the data phase: `Ack`s, published on `acked`, and
/// `Keepalive`s, until its LAST frame (`Done`, `Error` or `Cancel`), which is returned
/// with the reader. Silence for the reader's deadline is a dead connection.
pub(super) async fn read_replies<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    acked: watch::Sender<u64>,
    heard: watch::Sender<()>,
) -> Result<(Control, FrameReader<R>), SessionError> {
    loop {
        let (plain, last) = reader.next_open().await?;
        heard.send_replace(());
        match Control::decode(&plain)? {
            Control::Ack(n) if !last => {
                // Only forward: an ack that goes back is ignored, not trusted.
                acked.send_if_modified(|a| {
                    let newer = n > *a;
                    if newer {
                        *a = n;
                    }
                    newer
                });
            }
            Control::Keepalive if !last => {}
            msg if last => return Ok((msg, reader)),
            other => {
                return Err(SessionError::Message(MessageError::Unexpected {
                    got: other.name(),
                    expected: "Ack, Done or Error",
                }));
            }
        }
    }
}
