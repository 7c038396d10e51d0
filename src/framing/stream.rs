//! Frames in order over a `futures::io` stream: [`Sealer`] and [`Opener`] hand out one
//! direction's frame counters, [`read_frame_within`] and [`write_frame`] move one frame,
//! and [`FrameWriter`] and [`FrameReader`] hold a direction's counters, its half of the
//! stream and a deadline. Each frame is sealed and opened by `framing/format.rs`, which
//! documents the wire format.
//!
//! # Invariants
//!
//! - Counters start at 0 for each key and only go up, so none is used twice. Keys are
//!   fresh for every session (a resume runs a new PAKE), so counters are never persisted.
//! - A stream is complete only once a LAST frame has been opened (`Opener::finish`).
//!   Frames after it are refused ([`FrameError::AfterLast`]), and so is an end of stream
//!   before it ([`FrameError::Truncated`]).
//! - The announced length is checked against [`MAX_FRAME_LEN`] before any buffer is
//!   allocated, so a peer can never make us allocate more than that per frame.
//! - After any [`FrameError::Decrypt`] the whole stream MUST be abandoned.
//! - A byte [`FrameReader::stirred`] read ahead is the next byte every read of the
//!   reader sees: waiting for the peer to speak loses nothing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::format::{FrameError, FrameKey, HEADER_LEN, Header, MAX_FRAME_LEN};

/// The next counter after `counter`.
fn successor(counter: u64) -> u64 {
    counter.checked_add(1).expect("2^64 frames of at least 16 bytes cannot be sent")
}

/// The sending side of one direction: hands out frame counters in order, never twice, and
/// none after the LAST frame.
#[derive(Debug)]
pub(crate) struct Sealer {
    key: FrameKey,
    next: u64,
    finished: bool,
}

impl Sealer {
    /// A sealer starting at counter 0. `key` MUST be fresh: never used to seal before.
    #[must_use]
    pub(crate) fn new(key: FrameKey) -> Sealer {
        Sealer { key, next: 0, finished: false }
    }

    /// Seal `buf` in place as the next frame, marked LAST if `last`; see [`FrameKey::seal`].
    ///
    /// # Errors
    ///
    /// [`FrameError::AfterLast`] once a LAST frame was sealed or reserved, and
    /// [`FrameError::TooLong`] for an oversized `buf`. Neither uses up a counter.
    pub(crate) fn seal_next(
        &mut self,
        buf: &mut Vec<u8>,
        last: bool,
    ) -> Result<Header, FrameError> {
        if self.finished {
            return Err(FrameError::AfterLast);
        }
        Header::for_plaintext(buf.len(), last)?;
        let counter = self.reserve(last)?;
        self.key.seal(counter, last, buf)
    }

    /// Take the next counter for a frame sealed elsewhere with [`FrameKey::seal`] (on a
    /// worker thread, say), marked LAST if `last`.
    ///
    /// # Errors
    ///
    /// [`FrameError::AfterLast`] once a LAST frame was sealed or reserved.
    pub(crate) fn reserve(&mut self, last: bool) -> Result<u64, FrameError> {
        if self.finished {
            return Err(FrameError::AfterLast);
        }
        let counter = self.next;
        self.next = successor(counter);
        self.finished = last;
        Ok(counter)
    }

    /// The key, for sealing reserved frames on other threads.
    #[must_use]
    pub(crate) fn key(&self) -> &FrameKey {
        &self.key
    }

    /// The counter the next frame will get.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn next_counter(&self) -> u64 {
        self.next
    }

    /// Whether the LAST frame has been sealed or reserved.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }
}

/// The receiving side of one direction: expects frame counters in order, refuses frames
/// after the LAST one, and tells a complete stream from a truncated one.
#[derive(Debug)]
pub(crate) struct Opener {
    key: FrameKey,
    next: u64,
    finished: bool,
}

impl Opener {
    /// An opener expecting counter 0 first.
    #[must_use]
    pub(crate) fn new(key: FrameKey) -> Opener {
        Opener { key, next: 0, finished: false }
    }

    /// Verify and decrypt the next frame in place; see [`FrameKey::open`]. The opener only
    /// moves on (and only counts a LAST flag) once the frame has authenticated.
    ///
    /// # Errors
    ///
    /// [`FrameError::AfterLast`] once the LAST frame has been opened, and the errors of
    /// [`FrameKey::open`]. After [`FrameError::Decrypt`] the stream MUST be abandoned.
    pub(crate) fn open_next(
        &mut self,
        header: Header,
        buf: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        if self.finished {
            return Err(FrameError::AfterLast);
        }
        self.key.open(self.next, header, buf)?;
        self.reserve(header)?;
        Ok(())
    }

    /// Take the counter for the next frame, received with `header`, to be opened elsewhere
    /// with [`FrameKey::open`] (on a worker thread, say).
    ///
    /// # Security
    ///
    /// The header is not authenticated yet; its LAST flag is trusted only because the
    /// caller MUST abandon the stream if opening this frame fails.
    ///
    /// # Errors
    ///
    /// [`FrameError::AfterLast`] once a LAST frame has been opened or reserved.
    pub(crate) fn reserve(&mut self, header: Header) -> Result<u64, FrameError> {
        if self.finished {
            return Err(FrameError::AfterLast);
        }
        let counter = self.next;
        self.next = successor(counter);
        self.finished = header.last;
        Ok(counter)
    }

    /// Check, at the end of the stream, that its LAST frame was seen.
    ///
    /// # Errors
    ///
    /// [`FrameError::Truncated`] if no LAST frame was opened or reserved.
    #[cfg(test)]
    pub(crate) fn finish(&self) -> Result<(), FrameError> {
        if self.finished { Ok(()) } else { Err(FrameError::Truncated) }
    }

    /// The key, for opening reserved frames on other threads.
    #[must_use]
    pub(crate) fn key(&self) -> &FrameKey {
        &self.key
    }

    /// The counter the next frame is expected to have.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn next_counter(&self) -> u64 {
        self.next
    }

    /// Whether the LAST frame has been opened or reserved.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }
}

/// [`read_frame_within`] with no bound tighter than [`MAX_FRAME_LEN`].
#[cfg(test)]
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<(Header, Vec<u8>)>, FrameError> {
    read_frame_within(r, MAX_FRAME_LEN).await
}

/// Read one frame of at most `max` bytes (at most [`MAX_FRAME_LEN`]): its header and its body (ciphertext plus tag), still sealed.
///
/// Returns `Ok(None)` on a clean end of stream, before the first header byte; whether that
/// end was legitimate is for the caller to say (a LAST frame came, or not).
///
/// # Errors
///
/// - [`FrameError::TooLong`] (over `max`) or [`FrameError::TooShort`] for an out-of-range header,
///   detected before the body is allocated or read.
/// - [`FrameError::Truncated`] if the stream ends inside the header or the body.
/// - [`FrameError::Io`] if reading fails.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future part way loses the bytes read so far, and the
/// stream can no longer be framed.
pub(crate) async fn read_frame_within<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<(Header, Vec<u8>)>, FrameError> {
    let mut body = Vec::new();
    Ok(read_frame_into(r, &mut body, max).await?.map(|header| (header, body)))
}

/// Like [`read_frame_within`], but reads the body into `buf`, so one buffer can be reused
/// for every frame. `buf` is resized to the body's length, not cleared first: only growth
/// is zeroed, and every byte of the body is then read over. It is empty after a clean end
/// of stream; after an error its contents are unspecified.
///
/// # Errors
///
/// As for [`read_frame_within`].
///
/// # Cancel safety
///
/// Not cancel safe, as for [`read_frame_within`].
pub async fn read_frame_into<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: u32,
) -> Result<Option<Header>, FrameError> {
    let mut bytes = [0u8; HEADER_LEN];
    match read_full(r, &mut bytes).await? {
        0 => {
            buf.clear();
            return Ok(None);
        }
        HEADER_LEN => {}
        _ => return Err(FrameError::Truncated),
    }
    // The length is checked here, before the body is allocated.
    let header = Header::from_bytes(bytes)?;
    if header.len > max {
        return Err(FrameError::TooLong { len: u64::from(header.len), max });
    }
    buf.resize(header.len as usize, 0);
    if read_full(r, buf).await? < buf.len() {
        return Err(FrameError::Truncated);
    }
    Ok(Some(header))
}

/// Fill `buf` from `r` unless the stream ends first; return how many bytes were read.
///
/// Unlike `AsyncReadExt::read_exact`, this retries on `Interrupted` (as `std`'s does) and
/// tells an end of stream at the very start apart from one in the middle.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Write one frame: `header`, then `body` (ciphertext plus tag, as left by
/// [`FrameKey::seal`]).
///
/// This does not flush: a frame may sit in the writer's buffer until the caller flushes or
/// closes it, which it MUST do after the LAST frame (closing a libp2p stream flushes it).
/// A small body is copied behind its header and written at once; a large one is two
/// writes ([`FrameWriter::write_framed`] avoids that for chunks).
///
/// # Errors
///
/// - [`FrameError::TooLong`] or [`FrameError::TooShort`] for an out-of-range header, and
///   [`FrameError::LengthMismatch`] if `body` is not `header.len` bytes; nothing is
///   written then.
/// - [`FrameError::Io`] if writing fails.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future part way may leave half a frame written.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    header: Header,
    body: &[u8],
) -> Result<(), FrameError> {
    header.check()?;
    if header.len as usize != body.len() {
        return Err(FrameError::LengthMismatch { header: header.len, body: body.len() });
    }
    if body.len() <= SMALL_FRAME {
        // One write for a control message: each write into the stream is at least one
        // yamux frame.
        let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
        frame.extend_from_slice(&header.to_bytes());
        frame.extend_from_slice(body);
        w.write_all(&frame).await?;
    } else {
        w.write_all(&header.to_bytes()).await?;
        w.write_all(body).await?;
    }
    Ok(())
}

/// Write a whole frame, `header` then its body in one buffer as [`FrameKey::seal_framed`]
/// leaves them, in one write (see [`FrameWriter::write_framed`]).
///
/// # Errors
/// [`FrameError::LengthMismatch`] if `frame` is not `header` followed by its body
/// (nothing is written then), and I/O failures.
pub async fn write_framed<W: AsyncWrite + Unpin>(
    w: &mut W,
    header: Header,
    frame: &[u8],
) -> Result<(), FrameError> {
    header.check()?;
    let body = frame.len().saturating_sub(HEADER_LEN);
    if frame.len() < HEADER_LEN || frame[..HEADER_LEN] != header.to_bytes() {
        return Err(FrameError::LengthMismatch { header: header.len, body });
    }
    if header.len as usize != body {
        return Err(FrameError::LengthMismatch { header: header.len, body });
    }
    w.write_all(frame).await?;
    Ok(())
}

/// Bodies up to this size are copied behind their header and written at once.
const SMALL_FRAME: usize = 4096;

/// Runs `io` with an optional deadline; running out is [`FrameError::Timeout`].
async fn within<T>(
    deadline: Option<Duration>,
    io: impl Future<Output = Result<T, FrameError>>,
) -> Result<T, FrameError> {
    match deadline {
        Some(limit) => tokio::time::timeout(limit, io).await.unwrap_or(Err(FrameError::Timeout)),
        None => io.await,
    }
}

/// The sending half of one direction: the stream's write half, its [`Sealer`] and a
/// deadline per write. Every frame of a session goes out through here, in counter
/// order; a write that cannot finish within the deadline means a dead connection.
#[derive(Debug)]
pub(crate) struct FrameWriter<W> {
    w: W,
    sealer: Sealer,
    deadline: Option<Duration>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer whose writes must each finish within `deadline` (none: wait forever).
    pub(crate) fn new(w: W, sealer: Sealer, deadline: Option<Duration>) -> FrameWriter<W> {
        FrameWriter { w, sealer, deadline }
    }

    /// Seals `plaintext` in place as the next frame (LAST if `last`), writes and
    /// flushes it.
    ///
    /// # Errors
    /// [`FrameError::AfterLast`], [`FrameError::TooLong`], I/O failures and
    /// [`FrameError::Timeout`].
    pub(crate) async fn send(
        &mut self,
        mut plaintext: Vec<u8>,
        last: bool,
    ) -> Result<(), FrameError> {
        let header = self.sealer.seal_next(&mut plaintext, last)?;
        let FrameWriter { w, deadline, .. } = self;
        within(*deadline, async {
            write_frame(w, header, &plaintext).await?;
            w.flush().await?;
            Ok(())
        })
        .await
    }

    /// Writes a frame sealed elsewhere under a counter from [`FrameWriter::reserve`],
    /// without flushing (the next frames follow at once).
    ///
    /// # Errors
    /// As for [`write_frame`], and [`FrameError::Timeout`].
    #[cfg(any(test, feature = "adversary"))]
    pub(crate) async fn write_sealed(
        &mut self,
        header: Header,
        body: &[u8],
    ) -> Result<(), FrameError> {
        let FrameWriter { w, deadline, .. } = self;
        within(*deadline, write_frame(w, header, body)).await
    }

    /// Writes a whole frame sealed elsewhere with [`FrameKey::seal_framed`] (header and
    /// body in one buffer) under a counter from [`FrameWriter::reserve`], in one write
    /// and without flushing. One write, not two: each write into the stream becomes at
    /// least one yamux frame, and the 4-byte header would be one of its own.
    ///
    /// # Errors
    /// [`FrameError::LengthMismatch`] if `frame` is not `header` followed by its body
    /// (nothing is written then), I/O failures, and [`FrameError::Timeout`].
    pub(crate) async fn write_framed(
        &mut self,
        header: Header,
        frame: &[u8],
    ) -> Result<(), FrameError> {
        let FrameWriter { w, deadline, .. } = self;
        within(*deadline, write_framed(w, header, frame)).await
    }

    /// Takes the next counter for a frame to be sealed on another thread; see
    /// [`Sealer::reserve`]. Such frames MUST be written in counter order.
    ///
    /// # Errors
    /// [`FrameError::AfterLast`].
    pub(crate) fn reserve(&mut self) -> Result<u64, FrameError> {
        self.sealer.reserve(false)
    }

    /// The key, for sealing reserved frames on other threads.
    #[must_use]
    pub(crate) fn key(&self) -> &FrameKey {
        self.sealer.key()
    }

    /// The stream's write half, for a handshake's bytes before the frames, and the test
    /// adversary's that no honest peer writes (garbage, a header over the limit, half a
    /// frame).
    pub(crate) fn raw(&mut self) -> &mut W {
        &mut self.w
    }

    /// Closes our direction (best effort, within the deadline).
    pub(crate) async fn close(&mut self) {
        let FrameWriter { w, deadline, .. } = self;
        let _ = within(*deadline, async { Ok(w.close().await?) }).await;
    }
}

/// The receiving half of one direction: the stream's read half, its [`Opener`] and a
/// deadline per frame, so that silence means a dead connection.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    r: Ahead<R>,
    opener: Opener,
    deadline: Option<Duration>,
    /// The longest frame accepted (at most [`MAX_FRAME_LEN`]).
    max: u32,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader that waits at most `deadline` for each frame (none: forever).
    pub(crate) fn new(r: R, opener: Opener, deadline: Option<Duration>) -> FrameReader<R> {
        FrameReader { r: Ahead { byte: None, r }, opener, deadline, max: MAX_FRAME_LEN }
    }

    /// The stream under the frames, for the bytes a handshake reads before them.
    pub(crate) fn raw(&mut self) -> &mut R {
        // Before the frames nothing is read ahead; a byte here would be skipped.
        debug_assert!(self.r.byte.is_none(), "raw bytes read after a byte read ahead");
        &mut self.r.r
    }

    /// Waits until the peer sends something or the stream ends (or fails), reading
    /// ahead at most one byte, which the next frame read gets first: a side that waits
    /// for its own user can see the peer leave, and go on reading frames if the user
    /// answers first.
    ///
    /// # Cancel safety
    /// Cancel safe: a byte is kept in the same poll that reads it.
    pub(crate) async fn stirred(&mut self) {
        if self.r.byte.is_some() {
            return;
        }
        let mut one = [0u8; 1];
        loop {
            match self.r.r.read(&mut one).await {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(1) => {
                    self.r.byte = Some(one[0]);
                    return;
                }
                // An end or an error: the next frame read meets it again.
                _ => return,
            }
        }
    }

    /// Refuses frames longer than `max` from now on, before reading their body: the
    /// data phase knows how long a chunk frame can be.
    pub(crate) fn set_max_len(&mut self, max: u32) {
        self.max = max.min(MAX_FRAME_LEN);
    }

    /// Changes the deadline for the frames to come.
    pub(crate) fn set_deadline(&mut self, deadline: Option<Duration>) {
        self.deadline = deadline;
    }

    /// Reads the next frame and takes its counter, leaving it sealed for another thread
    /// to open ([`Opener::reserve`]: the caller MUST abandon the stream if opening it
    /// fails). An end of stream here is [`FrameError::Truncated`].
    ///
    /// # Errors
    /// Header, I/O and ordering failures, and [`FrameError::Timeout`].
    #[cfg(any(test, feature = "adversary"))]
    pub(crate) async fn next_sealed(&mut self) -> Result<(u64, Header, Vec<u8>), FrameError> {
        let mut body = Vec::new();
        let (counter, header) = self.next_sealed_into(&mut body).await?;
        Ok((counter, header, body))
    }

    /// Reads the next frame, reserving its counter, into `body` (see [`read_frame_into`]),
    /// so that a recycled buffer is neither allocated nor zeroed again.
    ///
    /// # Errors
    /// Header, I/O and ordering failures, and [`FrameError::Timeout`].
    pub(crate) async fn next_sealed_into(
        &mut self,
        body: &mut Vec<u8>,
    ) -> Result<(u64, Header), FrameError> {
        let FrameReader { r, deadline, max, .. } = self;
        let header = within(*deadline, read_frame_into(r, body, *max))
            .await?
            .ok_or(FrameError::Truncated)?;
        let counter = self.opener.reserve(header)?;
        Ok((counter, header))
    }

    /// Reads and opens the next frame; returns its plaintext and whether it was LAST.
    ///
    /// # Errors
    /// As for [`FrameReader::next_sealed_into`], and [`FrameError::Decrypt`].
    pub(crate) async fn next_open(&mut self) -> Result<(Vec<u8>, bool), FrameError> {
        let FrameReader { r, deadline, max, .. } = self;
        let (header, mut body) =
            within(*deadline, read_frame_within(r, *max)).await?.ok_or(FrameError::Truncated)?;
        self.opener.open_next(header, &mut body)?;
        Ok((body, header.last))
    }

    /// The key, for opening reserved frames on other threads.
    #[must_use]
    pub(crate) fn key(&self) -> &FrameKey {
        self.opener.key()
    }

    /// Reads and discards whatever the peer still sends until it closes (or fails), for
    /// at most `limit`. After our LAST frame, the peer closing is the sign that the frame
    /// arrived, so the process may exit without dropping it.
    pub(crate) async fn drain(&mut self, limit: Duration) {
        let mut sink = [0u8; 4096];
        let r = &mut self.r;
        let _ = tokio::time::timeout(limit, async {
            while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// A read half with at most one byte read ahead ([`FrameReader::stirred`]), handed out
/// before the stream's own.
#[derive(Debug)]
struct Ahead<R> {
    byte: Option<u8>,
    r: R,
}

impl<R: AsyncRead + Unpin> AsyncRead for Ahead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if let (Some(b), Some(first)) = (self.byte, buf.first_mut()) {
            *first = b;
            self.byte = None;
            return Poll::Ready(Ok(1));
        }
        Pin::new(&mut self.r).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;

    use super::*;
    use crate::framing::fixtures::{OTHER_KEY, data, key};
    use crate::framing::format::{KEY_LEN, MAX_PLAINTEXT_LEN, TAG_LEN};

    /// Seal `chunks` as one stream with the LAST flag on the final chunk if `last`, and
    /// return the bytes on the wire.
    fn seal_stream(key: FrameKey, chunks: &[Vec<u8>], last: bool) -> Vec<u8> {
        let mut sealer = Sealer::new(key);
        let mut wire = Cursor::new(Vec::new());
        for (i, chunk) in chunks.iter().enumerate() {
            let mut buf = chunk.clone();
            let is_last = last && i + 1 == chunks.len();
            let header = sealer.seal_next(&mut buf, is_last).expect("seal");
            block_on(write_frame(&mut wire, header, &buf)).expect("write");
        }
        wire.into_inner()
    }

    /// Read and open every frame of `wire`, then check the stream finished.
    fn open_stream(key: FrameKey, wire: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut opener = Opener::new(key);
        let mut r = Cursor::new(wire);
        let mut out = Vec::new();
        while let Some((header, mut buf)) = block_on(read_frame(&mut r))? {
            opener.open_next(header, &mut buf)?;
            out.push(buf);
        }
        opener.finish()?;
        Ok(out)
    }

    /// Split `wire` into its frames (header bytes, body), without opening them.
    fn split_frames(wire: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut r = Cursor::new(wire);
        let mut frames = Vec::new();
        while let Some((header, body)) = block_on(read_frame(&mut r)).expect("well-formed") {
            frames.push((header.to_bytes().to_vec(), body));
        }
        frames
    }

    fn join_frames(frames: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        frames.iter().flat_map(|(h, b)| h.iter().chain(b)).copied().collect()
    }

    #[test]
    fn stream_round_trip_at_sizes() {
        for len in [0, 1, 64 * 1024, 1 << 20] {
            let chunks = vec![data(len), data(len / 2 + 1), data(len)];
            let wire = seal_stream(key(), &chunks, true);
            assert_eq!(
                wire.len(),
                chunks.iter().map(|c| HEADER_LEN + c.len() + TAG_LEN).sum::<usize>()
            );
            assert_eq!(open_stream(key(), &wire).expect("open"), chunks, "len {len}");
        }
    }

    #[test]
    fn single_empty_last_frame_is_a_complete_stream() {
        let wire = seal_stream(key(), &[Vec::new()], true);
        assert_eq!(wire.len(), HEADER_LEN + TAG_LEN);
        assert_eq!(open_stream(key(), &wire).expect("open"), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn empty_stream_is_truncated() {
        assert!(matches!(open_stream(key(), &[]), Err(FrameError::Truncated)));
    }

    #[test]
    fn stream_without_last_frame_is_truncated() {
        let wire = seal_stream(key(), &[data(100), data(100)], false);
        assert!(matches!(open_stream(key(), &wire), Err(FrameError::Truncated)));
    }

    #[test]
    fn stream_cut_after_a_frame_is_truncated() {
        let wire = seal_stream(key(), &[data(100), data(100), data(100)], true);
        let frames = split_frames(&wire);
        let cut = join_frames(&frames[..2]);
        assert!(matches!(open_stream(key(), &cut), Err(FrameError::Truncated)));
    }

    #[test]
    fn eof_inside_a_frame_is_truncated() {
        let wire = seal_stream(key(), &[data(100)], true);
        for cut in [1, 2, 3, HEADER_LEN, HEADER_LEN + 1, wire.len() - 1] {
            let mut r = Cursor::new(&wire[..cut]);
            let got = block_on(read_frame(&mut r));
            assert!(matches!(got, Err(FrameError::Truncated)), "cut at {cut}: {got:?}");
        }
    }

    #[test]
    fn clean_eof_is_none() {
        let mut r = Cursor::new(&[][..]);
        assert!(matches!(block_on(read_frame(&mut r)), Ok(None)));
    }

    #[test]
    fn reordered_frames_fail() {
        let chunks = [data(10), data(20)];
        let mut sealer = Sealer::new(key());
        let mut first = chunks[0].clone();
        let h0 = sealer.seal_next(&mut first, false).expect("seal");
        let mut second = chunks[1].clone();
        let h1 = sealer.seal_next(&mut second, true).expect("seal");

        // Frame 1 opened as frame 0 fails.
        let mut buf = second.clone();
        assert!(matches!(key().open(0, h1, &mut buf), Err(FrameError::Decrypt)));

        // And so does the swapped stream, through the opener.
        let mut opener = Opener::new(key());
        let mut buf = second.clone();
        assert!(matches!(opener.open_next(h1, &mut buf), Err(FrameError::Decrypt)));
        assert_eq!(opener.next_counter(), 0, "a failed frame does not advance the opener");
        assert!(!opener.is_finished(), "an unauthenticated LAST flag is not counted");
        assert!(matches!(opener.finish(), Err(FrameError::Truncated)));

        // In order, they open.
        let mut opener = Opener::new(key());
        opener.open_next(h0, &mut first).expect("frame 0");
        opener.open_next(h1, &mut second).expect("frame 1");
        opener.finish().expect("complete");
        assert_eq!([first, second], chunks);
    }

    #[test]
    fn swapped_frames_on_the_wire_fail() {
        let wire = seal_stream(key(), &[data(10), data(10), data(10)], true);
        let mut frames = split_frames(&wire);
        frames.swap(0, 1);
        assert!(matches!(open_stream(key(), &join_frames(&frames)), Err(FrameError::Decrypt)));
    }

    #[test]
    fn dropped_frame_fails() {
        let wire = seal_stream(key(), &[data(10), data(10), data(10)], true);
        let mut frames = split_frames(&wire);
        frames.remove(1);
        assert!(matches!(open_stream(key(), &join_frames(&frames)), Err(FrameError::Decrypt)));
    }

    #[test]
    fn replayed_frame_fails() {
        let wire = seal_stream(key(), &[data(10), data(10)], true);
        let mut frames = split_frames(&wire);
        frames.insert(1, frames[0].clone());
        assert!(matches!(open_stream(key(), &join_frames(&frames)), Err(FrameError::Decrypt)));
    }

    #[test]
    fn flipped_bits_fail() {
        let wire = seal_stream(key(), &[data(50), data(50)], true);
        let frame_len = HEADER_LEN + 50 + TAG_LEN;
        // Every bit of ciphertext and tag, in both frames.
        for frame in 0..2 {
            for byte in HEADER_LEN..frame_len {
                for bit in 0..8 {
                    let mut bad = wire.clone();
                    bad[frame * frame_len + byte] ^= 1 << bit;
                    let got = open_stream(key(), &bad);
                    assert!(matches!(got, Err(FrameError::Decrypt)), "frame {frame} byte {byte}");
                }
            }
        }
    }

    #[test]
    fn flipped_last_flag_fails() {
        let wire = seal_stream(key(), &[data(50), data(50)], true);
        let frame_len = HEADER_LEN + 50 + TAG_LEN;

        // Setting LAST on the first frame, to cut the stream short there.
        let mut bad = wire.clone();
        bad[0] ^= 0x80;
        assert!(matches!(open_stream(key(), &bad[..frame_len]), Err(FrameError::Decrypt)));
        assert!(matches!(open_stream(key(), &bad), Err(FrameError::Decrypt)));

        // Clearing LAST on the final frame, to make the stream look unfinished.
        let mut bad = wire.clone();
        bad[frame_len] ^= 0x80;
        assert!(matches!(open_stream(key(), &bad), Err(FrameError::Decrypt)));
    }

    #[test]
    fn header_length_is_authenticated() {
        // A header that lies about the length by one byte breaks the framing or the tag.
        let wire = seal_stream(key(), &[data(50)], true);
        for delta in [1u8, 2] {
            let mut bad = wire.clone();
            bad[3] ^= delta;
            assert!(open_stream(key(), &bad).is_err());
        }
        // Open directly with a header that differs only in length.
        let mut buf = data(50);
        let header = key().seal(0, true, &mut buf).expect("seal");
        buf.pop();
        let shorter = Header { len: header.len - 1, ..header };
        assert!(matches!(key().open(0, shorter, &mut buf), Err(FrameError::Decrypt)));
    }

    #[test]
    fn data_after_last_frame_is_refused() {
        // A valid frame sealed after the LAST one (as if by a broken or hostile sender).
        let mut frames = Vec::new();
        for (counter, last) in [(0, true), (1, false)] {
            let mut buf = data(10);
            let header = key().seal(counter, last, &mut buf).expect("seal");
            frames.push((header.to_bytes().to_vec(), buf));
        }
        assert!(matches!(open_stream(key(), &join_frames(&frames)), Err(FrameError::AfterLast)));

        // Reserving past the LAST frame is refused too.
        let mut opener = Opener::new(key());
        assert_eq!(opener.reserve(Header { len: 16, last: false }).expect("first"), 0);
        assert_eq!(opener.reserve(Header { len: 16, last: true }).expect("last"), 1);
        opener.finish().expect("complete");
        assert!(matches!(
            opener.reserve(Header { len: 16, last: false }),
            Err(FrameError::AfterLast)
        ));
    }

    #[test]
    fn garbage_after_last_frame_is_refused() {
        let mut wire = seal_stream(key(), &[data(10)], true);
        wire.extend_from_slice(&[0, 0, 0, 16]);
        wire.extend_from_slice(&[0; 16]);
        assert!(matches!(open_stream(key(), &wire), Err(FrameError::AfterLast)));
    }

    #[test]
    fn sealer_refuses_frames_after_last() {
        let mut sealer = Sealer::new(key());
        let mut buf = data(10);
        sealer.seal_next(&mut buf, true).expect("last");
        assert!(sealer.is_finished());
        let mut buf = data(10);
        assert!(matches!(sealer.seal_next(&mut buf, false), Err(FrameError::AfterLast)));
        assert_eq!(buf, data(10), "left untouched");
        assert!(matches!(sealer.reserve(false), Err(FrameError::AfterLast)));
        assert!(matches!(sealer.reserve(true), Err(FrameError::AfterLast)));
    }

    #[test]
    fn reserve_hands_out_counters_in_order() {
        let mut sealer = Sealer::new(key());
        let counters: Vec<u64> = (0..5).map(|i| sealer.reserve(i == 4).expect("reserve")).collect();
        assert_eq!(counters, [0, 1, 2, 3, 4]);
        assert_eq!(sealer.next_counter(), 5);

        // Frames sealed out of order with reserved counters open in counter order.
        let mut sealed: Vec<(u64, Header, Vec<u8>)> = counters
            .iter()
            .rev()
            .map(|&c| {
                let mut buf = data(c as usize * 7);
                let header = sealer.key().seal(c, c == 4, &mut buf).expect("seal");
                (c, header, buf)
            })
            .collect();
        sealed.sort_by_key(|(c, ..)| *c);
        let mut opener = Opener::new(key());
        for (c, header, mut buf) in sealed {
            let counter = opener.reserve(header).expect("reserve");
            assert_eq!(counter, c);
            opener.key().open(counter, header, &mut buf).expect("open");
            assert_eq!(buf, data(c as usize * 7));
        }
        opener.finish().expect("complete");
    }

    #[test]
    fn oversized_plaintext_is_refused() {
        let mut buf = vec![0; MAX_PLAINTEXT_LEN + 1];
        assert!(matches!(
            key().seal(0, false, &mut buf),
            Err(FrameError::TooLong { len, max: MAX_FRAME_LEN }) if len == u64::from(MAX_FRAME_LEN) + 1
        ));
        assert_eq!(buf.len(), MAX_PLAINTEXT_LEN + 1, "left untouched");

        let mut sealer = Sealer::new(key());
        assert!(matches!(sealer.seal_next(&mut buf, true), Err(FrameError::TooLong { .. })));
        assert_eq!(sealer.next_counter(), 0, "no counter used up");
        assert!(!sealer.is_finished());

        buf.pop();
        let header = key().seal(0, true, &mut buf).expect("the largest frame");
        assert_eq!(header.len, MAX_FRAME_LEN);
    }

    /// A reader holding only a header; reading on into the body is a test failure.
    struct HeaderOnly {
        header: [u8; HEADER_LEN],
        pos: usize,
    }

    impl AsyncRead for HeaderOnly {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            assert!(self.pos < HEADER_LEN, "read_frame read past an invalid header");
            let n = buf.len().min(HEADER_LEN - self.pos);
            buf[..n].copy_from_slice(&self.header[self.pos..self.pos + n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn huge_header_is_refused_before_reading_the_body() {
        // The largest lengths the header can announce: the whole u32 (4 GiB with the LAST
        // bit), and 2 GiB without it. Neither is allocated or read.
        for header in [[0xff; 4], [0x7f, 0xff, 0xff, 0xff], (MAX_FRAME_LEN + 1).to_be_bytes()] {
            let mut r = HeaderOnly { header, pos: 0 };
            let got = block_on(read_frame(&mut r));
            assert!(matches!(got, Err(FrameError::TooLong { .. })), "{got:?}");
        }
        let mut r = HeaderOnly { header: [0, 0, 0, 15], pos: 0 };
        assert!(matches!(block_on(read_frame(&mut r)), Err(FrameError::TooShort)));
    }

    #[test]
    fn wrong_key_fails() {
        let wire = seal_stream(key(), &[data(100)], true);
        let got = open_stream(FrameKey::new(OTHER_KEY), &wire);
        assert!(matches!(got, Err(FrameError::Decrypt)), "{got:?}");
    }

    #[test]
    fn write_frame_checks_the_header() {
        let mut w = Cursor::new(Vec::new());
        let got = block_on(write_frame(&mut w, Header { len: 20, last: false }, &[0; 19]));
        assert!(matches!(got, Err(FrameError::LengthMismatch { header: 20, body: 19 })));
        let got = block_on(write_frame(&mut w, Header { len: 4, last: false }, &[0; 4]));
        assert!(matches!(got, Err(FrameError::TooShort)));
        let got = block_on(write_frame(&mut w, Header { len: u32::MAX, last: false }, &[]));
        assert!(matches!(got, Err(FrameError::TooLong { .. })));
        assert!(w.into_inner().is_empty(), "nothing written");
    }

    #[test]
    fn a_framed_seal_is_the_header_then_the_same_frame() {
        let mut plain = data(100);
        let header = key().seal(3, true, &mut plain).expect("seal");
        let mut framed = [&[0u8; HEADER_LEN][..], &data(100)].concat();
        let framed_header = key().seal_framed(3, true, &mut framed).expect("seal");
        assert_eq!(framed_header, header);
        assert_eq!(framed[..HEADER_LEN], header.to_bytes());
        assert_eq!(framed[HEADER_LEN..], plain[..]);

        // It goes out in one write, and only whole and matching.
        let sealer = Sealer::new(key());
        let mut w = FrameWriter::new(Cursor::new(Vec::new()), sealer, None);
        block_on(w.write_framed(header, &framed)).expect("write");
        let wrong = Header { len: header.len - 1, ..header };
        assert!(matches!(
            block_on(w.write_framed(wrong, &framed)),
            Err(FrameError::LengthMismatch { .. })
        ));
        assert!(matches!(
            block_on(w.write_framed(header, &framed[..framed.len() - 1])),
            Err(FrameError::LengthMismatch { .. })
        ));
        assert_eq!(w.w.into_inner(), framed, "the frame, once");
    }

    #[test]
    fn read_frame_into_reuses_the_buffer() {
        let wire = seal_stream(key(), &[data(1000), data(10)], true);
        let mut r = Cursor::new(&wire[..]);
        let mut buf = Vec::new();
        let mut opener = Opener::new(key());
        let h = block_on(read_frame_into(&mut r, &mut buf, MAX_FRAME_LEN))
            .expect("read")
            .expect("a frame");
        opener.open_next(h, &mut buf).expect("open");
        assert_eq!(buf, data(1000));
        let h = block_on(read_frame_into(&mut r, &mut buf, MAX_FRAME_LEN))
            .expect("read")
            .expect("a frame");
        opener.open_next(h, &mut buf).expect("open");
        assert_eq!(buf, data(10));
        assert!(
            block_on(read_frame_into(&mut r, &mut buf, MAX_FRAME_LEN)).expect("read").is_none()
        );
        assert!(buf.is_empty());
        opener.finish().expect("complete");
    }

    /// A reader that hands out one byte per call and is interrupted in between.
    struct Trickle<'a> {
        data: &'a [u8],
        interrupt: bool,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Poll::Ready(Err(io::ErrorKind::Interrupted.into()));
            }
            let Some((&first, rest)) = self.data.split_first() else { return Poll::Ready(Ok(0)) };
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            buf[0] = first;
            self.data = rest;
            Poll::Ready(Ok(1))
        }
    }

    #[test]
    fn short_and_interrupted_reads_are_fine() {
        let wire = seal_stream(key(), &[data(40), data(3)], true);
        let mut r = Trickle { data: &wire, interrupt: false };
        let mut opener = Opener::new(key());
        let mut got = Vec::new();
        while let Some((header, mut buf)) = block_on(read_frame(&mut r)).expect("read") {
            opener.open_next(header, &mut buf).expect("open");
            got.push(buf);
        }
        opener.finish().expect("complete");
        assert_eq!(got, [data(40), data(3)]);
    }

    /// Waiting for the peer to speak reads one byte ahead (an interrupted read is
    /// tried again), waiting again reads no more, and the frames read next still get
    /// that byte; at the end, waiting returns and the next read meets the end.
    #[test]
    fn waiting_for_the_peer_to_speak_loses_no_byte() {
        let wire = seal_stream(key(), &[data(40), data(3)], true);
        let trickle = Trickle { data: &wire, interrupt: false };
        let mut reader = FrameReader::new(trickle, Opener::new(key()), None);
        block_on(reader.stirred());
        assert_eq!(reader.r.byte, wire.first().copied(), "one byte read ahead");
        block_on(reader.stirred());
        assert_eq!(reader.r.r.data.len(), wire.len() - 1, "waiting again read no more");
        let (first, last) = block_on(reader.next_open()).expect("the first frame");
        assert_eq!((first, last), (data(40), false));
        block_on(reader.stirred());
        let (second, last) = block_on(reader.next_open()).expect("the second frame");
        assert_eq!((second, last), (data(3), true));
        block_on(reader.stirred());
        assert!(matches!(block_on(reader.next_open()), Err(FrameError::Truncated)));
    }

    #[test]
    fn io_errors_pass_through() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
        }
        let got = block_on(read_frame(&mut Broken));
        assert!(
            matches!(&got, Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset),
            "{got:?}"
        );
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let key = FrameKey::new([0xab; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "FrameKey(<redacted>)");
        let debug = format!("{:?} {:#?}", Sealer::new(key.clone()), Opener::new(key));
        assert!(!debug.contains("171") && !debug.to_lowercase().contains("ab, ab"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
