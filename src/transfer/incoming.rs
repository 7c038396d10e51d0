//! The receiver's data phase, over any session stream: frames in, opened on worker
//! threads, verified chunks into the sink in order, acks out, and the commit once the
//! sender's totals match.
//!
//! State that outlives a session ([`Incoming`]): the sink, the offer, and the verified
//! prefix (chunk count, bytes, root hash).
//!
//! Invariants:
//! - A chunk reaches the sink only after it was opened and its index, length and hash
//!   checked; the file or extraction is committed only after `End`'s totals and root
//!   hash matched.
//! - The offer's size is what the user accepted, for a folder as for a file, whatever
//!   the sink (a file, an extraction, standard output): a chunk that would take the
//!   stream past it is refused before it is counted or written, and a stream that ends
//!   short of it is refused at `End`. (A file or folder offer without a size is refused
//!   before the prompt, in `receive`.)
//! - Once the commit has started it runs to its end: cancelling is checked only while
//!   chunks arrive.

use futures::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{KEEPALIVE, LINGER, unexpected};
use crate::error::Error;
use crate::event::{Event, Events, Role, Stats};
use crate::framing::{FrameKey, FrameReader, FrameWriter, Header, TAG_LEN};
use crate::message::{CHUNK_HEADER_LEN, Control, End, FileMeta, MIN_CHUNK_FRAME_LEN, Offer};
use crate::pipeline::{self, OpenedChunk, PipelineError, RootHash};
use crate::pool::Pool;
use crate::session::{self, Session, SessionError};
use crate::sink::{Sink, Written};

/// Everything the receiver keeps across sessions.
pub(super) struct Incoming {
    pub(super) offer: Offer,
    /// Taken when the transfer commits (or aborts).
    pub(super) sink: Option<Sink>,
    /// The part file the sink keeps for a later run if the transfer stops (the sink's
    /// own [`Sink::kept`]), remembered here because a failed commit has consumed the sink.
    pub(super) part: Option<crate::resume::Part>,
    /// What the sink wrote, once committed.
    pub(super) written: Option<Written>,
    /// Verified chunks so far.
    pub(super) count: u64,
    pub(super) bytes: u64,
    pub(super) root: RootHash,
    /// Bytes on the wire for this run's chunks.
    pub(super) wire: u64,
    /// A chunk shorter than the chunk size arrived: it must have been the last.
    pub(super) short: bool,
    pub(super) stats: Stats,
}

/// How a session's data phase ended.
pub(super) enum Ending {
    /// The sender's closing totals matched and the output is committed.
    End,
    /// The connection died; resume after a reconnection.
    Lost,
}

/// One step of the data phase, in wire order.
enum Inbound {
    Chunk(JoinHandle<Result<OpenedChunk, PipelineError>>),
    Last(Header, Vec<u8>, u64),
    Failed(Error),
}

impl Incoming {
    /// One session's data phase: chunks in, acks out, until `End` (then verify, commit,
    /// `Done`), a lost connection, a failure (then `Error` to the sender) or `cancel`
    /// (then `Cancel`).
    pub(super) async fn run<S>(
        &mut self,
        session: Session<S>,
        events: &Events,
        cancel: &CancellationToken,
    ) -> Result<Ending, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (_, mut reader, mut writer) = session.into_parts();
        // A chunk frame holds at most a chunk (pcp sends compressed payloads only when
        // smaller): anything longer is refused before its body is read, so a peer
        // cannot make the frames in flight cost 16 MiB each.
        let longest = CHUNK_HEADER_LEN as u32 + self.offer.chunk_size + TAG_LEN as u32;
        reader.set_max_len(longest);
        let (tx, mut rx) = mpsc::channel(pipeline::depth());
        let key = reader.key().clone();
        let reading = tokio::spawn(read_frames(reader, self.offer.chunk_size, self.count, tx));
        let outcome = async {
            let meta = self.take_chunks(&mut rx, &key, &mut writer, events, cancel).await?;
            // A file's mode and time, for a file offer only: never given to a stream
            // or an archive written to `-o FILE`.
            let meta = meta.filter(|_| self.offer.kind == crate::message::Kind::File);
            self.commit(&mut writer, meta).await
        }
        .await;
        // The reader may be blocked handing us a frame: let it go before waiting for it.
        drop(rx);
        let last = match outcome {
            Ok(()) => Control::Done,
            Err(e) if e.is_transient() => {
                reading.abort();
                return Ok(Ending::Lost);
            }
            Err(Error::Cancelled) => Control::Cancel,
            Err(ref e) => Control::Error(crate::error::last_word(e)),
        };
        let _ = session::send(&mut writer, &last).await;
        writer.close().await;
        // A flushed frame may still sit in the connection's buffers, and exiting now
        // could drop it: the sender closes once it has read our last word. Bounded: a
        // sender that keeps the stream open must not hold us.
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut reading = reading;
        match tokio::time::timeout_at(deadline, &mut reading).await {
            Ok(Ok(mut reader)) => {
                let _ = tokio::time::timeout_at(deadline, reader.drain(LINGER)).await;
            }
            _ => reading.abort(),
        }
        outcome.map(|()| Ending::End)
    }

    /// Verified chunks into the sink until the sender's LAST frame, which must be `End`
    /// with totals that match; returns the file metadata it carries, if any.
    async fn take_chunks<W: AsyncWrite + Unpin>(
        &mut self,
        rx: &mut mpsc::Receiver<Inbound>,
        key: &FrameKey,
        writer: &mut FrameWriter<W>,
        events: &Events,
        cancel: &CancellationToken,
    ) -> Result<Option<FileMeta>, Error> {
        let ack_every = pipeline::ack_every(self.offer.chunk_size);
        let mut tick = tokio::time::interval(KEEPALIVE);
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                () = cancel.cancelled() => return Err(Error::Cancelled),
                _ = tick.tick() => {
                    // Proof of life while the sender has nothing to send us.
                    session::send(writer, &Control::Ack(self.count)).await?;
                    continue;
                }
            };
            match item.ok_or(crate::framing::FrameError::Truncated)? {
                Inbound::Chunk(job) => {
                    let chunk = job.await.map_err(PipelineError::Task)??;
                    self.write(chunk).await?;
                    events.emit(Event::Progress { bytes: self.bytes });
                    if self.count.is_multiple_of(ack_every) {
                        // The chunk is in the sink's bounded queue: the sender may send more.
                        session::send(writer, &Control::Ack(self.count)).await?;
                    }
                }
                Inbound::Last(header, mut buf, counter) => {
                    key.open(counter, header, &mut buf)?;
                    return match Control::decode(&buf)? {
                        Control::End(end) => self.check_end(&end).map(|()| end.meta),
                        Control::Error(message) => {
                            Err(SessionError::Remote { from: Role::Sender, message }.into())
                        }
                        Control::Cancel => Err(Error::PeerCancelled(Role::Sender)),
                        other => Err(unexpected(&other, "End")),
                    };
                }
                Inbound::Failed(e) => return Err(e),
            }
        }
    }

    /// Counts a verified chunk and hands it to the sink. Only the last chunk may be
    /// short, and none may be empty: anything else is refused before it is written.
    async fn write(&mut self, chunk: OpenedChunk) -> Result<(), Error> {
        let len = chunk.data.len() as u64;
        if self.short || len == 0 {
            return Err(
                PipelineError::ShortChunk { index: self.count, len: chunk.data.len() }.into()
            );
        }
        // Before anything is counted or written: what the receiver keeps (and a rerun
        // resumes from) is only what verified within the offer.
        if let Some(offered) = self.offer.size
            && self.bytes.saturating_add(len) > offered
        {
            return Err(PipelineError::OverOffer { offered }.into());
        }
        self.short = len < u64::from(self.offer.chunk_size);
        self.root.push(&chunk.hash);
        self.bytes += len;
        self.stats.received += len;
        self.wire += chunk.wire_len as u64 + 4;
        self.count += 1;
        let sink = self.sink.as_mut().ok_or(PipelineError::Gone("output writer"))?;
        sink.write(chunk.data, chunk.hash).await?;
        Ok(())
    }

    /// The sender's totals against what arrived, and what arrived against the offer.
    fn check_end(&self, end: &End) -> Result<(), Error> {
        let checks = [
            (end.chunks == self.count, "chunk count"),
            (end.bytes == self.bytes, "byte count"),
            (end.root == self.root.finish(), "root hash"),
        ];
        if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(PipelineError::EndMismatch { what }.into());
        }
        match self.offer.size {
            Some(offered) if offered != self.bytes => {
                Err(PipelineError::ShortOfOffer { offered, sent: self.bytes }.into())
            }
            _ => Ok(()),
        }
    }

    /// Commits the output. It may take a while (fsync, moving an extraction): acks keep
    /// the sender from taking our silence for a dead link.
    async fn commit<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut FrameWriter<W>,
        meta: Option<FileMeta>,
    ) -> Result<(), Error> {
        let sink = self.sink.take().ok_or(PipelineError::Gone("output writer"))?;
        let finish = sink.finish_with(meta);
        tokio::pin!(finish);
        let mut tick = tokio::time::interval(KEEPALIVE);
        let written = loop {
            tokio::select! {
                r = &mut finish => break r?,
                _ = tick.tick() => {
                    let _ = session::send(writer, &Control::Ack(self.count)).await;
                }
            }
        };
        self.written = Some(written);
        Ok(())
    }
}

/// Reads frames, assigns counters and starts an open job per chunk, until the LAST
/// frame, which goes to the caller unopened. Frames too short to be chunks are control
/// messages opened here (only `Keepalive` is expected). It owns the read half (the only
/// reader) and hands it back at the end, for [`FrameReader::drain`].
async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    chunk_size: u32,
    first_index: u64,
    tx: mpsc::Sender<Inbound>,
) -> FrameReader<R> {
    let key = reader.key().clone();
    let mut index = first_index;
    // Frame buffers come back here from the sink (or the open job, for a compressed
    // chunk), so each is allocated and faulted in once per transfer, not once per chunk.
    let pool = Pool::for_chunks(chunk_size);
    loop {
        let mut buf = pool.take();
        let (counter, header) = match reader.next_sealed_into(buf.vec_mut()).await {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(Inbound::Failed(e.into())).await;
                return reader;
            }
        };
        if header.last {
            let _ = tx.send(Inbound::Last(header, std::mem::take(buf.vec_mut()), counter)).await;
            return reader;
        }
        if (header.len as usize) < MIN_CHUNK_FRAME_LEN {
            let control = key
                .open(counter, header, buf.vec_mut())
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
