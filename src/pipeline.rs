//! The chunk pipeline: `source → chunk → blake3 → zstd → seal` on the sender and
//! `open → unzstd → blake3 check → sink` on the receiver.
//!
//! The functions here are pure CPU work on one chunk ([`seal_chunk`], [`open_chunk`]).
//! The transfer runs them on tokio's blocking pool, several at once, and passes their
//! join handles through a channel [`depth`] deep; the other end awaits them in order,
//! so both cores work while the wire order stays fixed.
//!
//! Invariants:
//! - Each chunk is hashed as it is sealed; there is no pass over the source before the
//!   first byte is sent.
//! - A receiver MUST check a chunk's index, its raw length against the offer's chunk
//!   size (before decompressing into a buffer of that size), and its blake3 hash before
//!   the chunk reaches a sink.
//! - At most [`depth`] chunks are in flight per side, so memory stays flat
//!   whatever the transfer size.
//! - zstd is skipped for a chunk when a sample of it does not compress, and the raw
//!   chunk is sent whenever compression does not shrink it.
//! - An adaptive sender's level follows this transfer's goodput, never the rest of the
//!   machine's load ([`governor`]).
//!
//! The root hash is blake3 over the concatenated 32-byte chunk hashes, in order.

use std::cell::RefCell;

use crate::framing::{FrameError, FrameKey, HEADER_LEN, Header, TAG_LEN};
use crate::message::{CHUNK_HEADER_LEN, ChunkHeader, FLAG_ZSTD, MessageError};
use crate::pool::Buf;

mod governor;

pub(crate) use governor::{Found, Governor};

/// Default chunk size: 1 MiB (see `benches/pipeline.rs` for the sweep).
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Smallest chunk size accepted from a peer or the command line.
pub const MIN_CHUNK_SIZE: u32 = 1 << 16;
/// Largest chunk size accepted from a peer or the command line.
pub const MAX_CHUNK_SIZE: u32 = 1 << 23;

/// Bytes of a chunk compressed at level 1 to decide whether the rest is worth it.
const SAMPLE_LEN: usize = 64 << 10;
/// A sample that shrinks to more than this share (in 1/100) is deemed incompressible.
const SAMPLE_KEEP_PERCENT: usize = 95;

/// Errors of the data phase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A chunk's content does not match its hash.
    #[error("chunk {index} failed its blake3 check")]
    HashMismatch {
        /// The chunk.
        index: u64,
    },
    /// A chunk came with an unexpected index.
    #[error("chunk {got} arrived where chunk {expected} was expected")]
    OutOfOrder {
        /// Index in the chunk.
        got: u64,
        /// Index the receiver counted.
        expected: u64,
    },
    /// A chunk claims more raw bytes than the offer allows.
    #[error("chunk {index} claims {len} bytes, more than the chunk size {max}")]
    TooLarge {
        /// The chunk.
        index: u64,
        /// Claimed length.
        len: u32,
        /// The offer's chunk size.
        max: u32,
    },
    /// zstd failed, or produced another length than announced.
    #[error("chunk {index} did not decompress")]
    Decompress {
        /// The chunk.
        index: u64,
    },
    /// The closing totals do not match what arrived.
    #[error("the stream's totals do not match: {what}")]
    EndMismatch {
        /// Which total.
        what: &'static str,
    },
    /// The sender sent more than its offer's size, which is what the receiver
    /// accepted: the chunk that would pass it was not written.
    #[error("the sender sent more than the {offered} bytes it offered")]
    OverOffer {
        /// The size in the offer.
        offered: u64,
    },
    /// The sender's stream ended short of its offer's size.
    #[error("the sender sent {sent} bytes, fewer than the {offered} it offered")]
    ShortOfOffer {
        /// The size in the offer.
        offered: u64,
        /// What arrived.
        sent: u64,
    },
    /// A frame failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A message failed to decode.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A task the pipeline handed CPU work to ended without its result: it panicked, or
    /// the runtime is shutting down.
    #[error("a pipeline task ended without its result")]
    Task(#[source] tokio::task::JoinError),
    /// A part of this transfer that it waits on went away without answering: it
    /// stopped first (its own error, if any, is the one reported) or was never there.
    #[error("the {0} went away without answering")]
    Gone(&'static str),
    /// A chunk other than the last was short or empty: chunks are cut at fixed offsets.
    #[error("chunk {index} is short ({len} bytes) but is not the last")]
    ShortChunk {
        /// The chunk after the short one, or the empty one.
        index: u64,
        /// Its length.
        len: usize,
    },
}

/// Compression setting for the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Never compress.
    Off,
    /// zstd at this level, where it pays.
    Zstd(i32),
    /// Per chunk, from none up to zstd level 6, by the goodput this transfer gets at
    /// each: less when compressing holds the transfer back, more while the link does
    /// and a level up moves more of the input per second (the governor in
    /// `pipeline/governor.rs`). Where it
    /// pays, as for [`Compression::Zstd`].
    Adaptive,
}

impl Compression {
    /// The zstd level for one chunk; [`Compression::Adaptive`] outside a transfer's
    /// [`Governor`] (a bench, a test) is level 1.
    fn level(self) -> Option<i32> {
        match self {
            Compression::Off => None,
            Compression::Zstd(level) => Some(level),
            Compression::Adaptive => Some(1),
        }
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    /// Where the level-1 sample goes; only its length is looked at.
    static SAMPLE_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `data` at `level` into `out` from byte `at` on (into its spare capacity:
/// nothing is zeroed first), and returns the compressed length; `None` when zstd fails
/// or the result does not fit in `out`'s capacity.
fn zstd_compress_into(data: &[u8], level: i32, out: &mut Vec<u8>, at: usize) -> Option<usize> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            None => *slot = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c)),
            // The same context at another level: no new tables to allocate and fault in
            // when an adaptive sender changes level.
            Some((l, c)) if *l != level => {
                c.set_compression_level(level).ok()?;
                *l = level;
            }
            Some(_) => {}
        }
        let (_, c) = slot.as_mut()?;
        out.truncate(at);
        let mut cursor = std::io::Cursor::new(out);
        cursor.set_position(at as u64);
        c.compress_to_buffer(data, &mut cursor).ok()
    })
}

/// Whether a level-1 sample of `raw` says that compressing it is worth trying.
#[must_use]
pub fn worth_compressing(raw: &[u8]) -> bool {
    if raw.len() <= 2 * SAMPLE_LEN {
        return true;
    }
    let mid = raw.len() / 2 - SAMPLE_LEN / 2;
    let sample = &raw[mid..mid + SAMPLE_LEN];
    SAMPLE_OUT.with(|cell| {
        let mut out = cell.borrow_mut();
        out.reserve(zstd::zstd_safe::compress_bound(SAMPLE_LEN));
        zstd_compress_into(sample, 1, &mut out, 0)
            .is_some_and(|packed| packed * 100 <= sample.len() * SAMPLE_KEEP_PERCENT)
    })
}

/// Compresses `raw` when that pays: a level-1 sample first, then the whole chunk at
/// `level`, kept only when smaller.
#[must_use]
pub fn maybe_compress(raw: &[u8], compression: Compression) -> Option<Vec<u8>> {
    let level = compression.level()?;
    if !worth_compressing(raw) {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let n = zstd_compress_into(raw, level, &mut out, 0)?;
    (n < raw.len()).then_some(out)
}

/// One sealed chunk frame, ready for the wire.
#[derive(Debug)]
pub struct SealedChunk {
    /// The frame header.
    pub header: Header,
    /// Ciphertext and tag (preceded in its buffer by the header: see
    /// [`SealedChunk::wire`]).
    pub frame: Buf,
    /// blake3 of the raw chunk.
    pub hash: [u8; 32],
    /// Raw length.
    pub raw_len: usize,
    /// Whether zstd was used (the tests and benches look).
    #[allow(dead_code)]
    pub compressed: bool,
    /// The plaintext of a compressed chunk's frame (chunk header and zstd payload),
    /// when the sealer was asked to keep it: a sender keeps this instead of the raw
    /// chunk for a resend ([`reseal_into`]), so that its window holds wire bytes.
    pub(crate) plain: Option<Vec<u8>>,
}

impl SealedChunk {
    /// The whole frame as it goes on the wire: header, ciphertext and tag.
    #[must_use]
    pub fn wire(&self) -> &[u8] {
        self.frame.full()
    }
}

/// Hashes, maybe compresses, and seals one chunk under frame counter `counter`, into a
/// buffer of its own.
///
/// # Errors
/// A frame over the maximum length.
pub fn seal_chunk(
    index: u64,
    raw: &[u8],
    compression: Compression,
    key: &FrameKey,
    counter: u64,
) -> Result<SealedChunk, PipelineError> {
    seal_chunk_into(index, raw, (compression, true), key, counter, Buf::default())
}

/// [`seal_chunk`] into `out` (emptied first; from a [`crate::pool::Pool`], so that no
/// memory is allocated or faulted in): the payload is compressed or copied straight after
/// room for the frame and chunk headers, and sealed in place there, so that the buffer
/// ends up holding the whole frame for one write. With `sample`, a chunk is compressed
/// only if a level-1 sample of its middle shrinks ([`worth_compressing`]); without, it
/// is always tried whole (and kept compressed only if that is smaller).
///
/// # Errors
/// A frame over the maximum length.
pub fn seal_chunk_into(
    index: u64,
    raw: &[u8],
    compression: (Compression, bool),
    key: &FrameKey,
    counter: u64,
    out: Buf,
) -> Result<SealedChunk, PipelineError> {
    seal_keeping(index, raw, compression, (key, counter), out, false)
}

/// [`seal_chunk_into`], and with `keep`, a copy of the frame's plaintext when the chunk
/// was compressed ([`SealedChunk::plain`]): smaller than the raw chunk, and all a
/// resend needs.
pub(crate) fn seal_keeping(
    index: u64,
    raw: &[u8],
    (compression, sample): (Compression, bool),
    (key, counter): (&FrameKey, u64),
    mut out: Buf,
    keep: bool,
) -> Result<SealedChunk, PipelineError> {
    let raw_len = u32::try_from(raw.len())
        .map_err(|_| FrameError::TooLong { len: raw.len() as u64, max: MAX_CHUNK_SIZE })?;
    let hash = *blake3::hash(raw).as_bytes();
    // Frame header, chunk header, payload: the payload goes in at `at`.
    let at = HEADER_LEN + CHUNK_HEADER_LEN;
    let buf = out.vec_mut();
    buf.clear();
    buf.reserve(at + raw.len() + TAG_LEN);
    let packed = match compression.level() {
        Some(level) if !sample || worth_compressing(raw) => {
            zstd_compress_into(raw, level, buf, at).filter(|&n| n < raw.len())
        }
        _ => None,
    };
    if packed.is_none() {
        buf.truncate(at);
        buf.resize(at, 0);
        buf.extend_from_slice(raw);
    }
    let header =
        ChunkHeader { index, flags: if packed.is_some() { FLAG_ZSTD } else { 0 }, raw_len, hash };
    let head: &mut [u8; CHUNK_HEADER_LEN] =
        (&mut buf[HEADER_LEN..at]).try_into().expect("the buffer starts with room for the headers");
    header.write(head);
    let plain = (keep && packed.is_some()).then(|| buf[HEADER_LEN..].to_vec());
    sealed(out, (key, counter), &header, plain)
}

/// Seals in place the frame plaintext that `out` holds after room for the frame
/// header (a chunk described by `head`), and hands the frame on: the last step of
/// [`seal_keeping`] and [`reseal_into`] alike.
fn sealed(
    mut out: Buf,
    (key, counter): (&FrameKey, u64),
    head: &ChunkHeader,
    plain: Option<Vec<u8>>,
) -> Result<SealedChunk, PipelineError> {
    let frame_header = key.seal_framed(counter, false, out.vec_mut())?;
    out.set_start(HEADER_LEN);
    Ok(SealedChunk {
        header: frame_header,
        frame: out,
        hash: head.hash,
        raw_len: head.raw_len as usize,
        compressed: head.flags & FLAG_ZSTD != 0,
        plain,
    })
}

/// Seals a chunk again under frame counter `counter` from the plaintext its first
/// sealing kept ([`SealedChunk::plain`]): no hashing, no compression, only the cipher.
///
/// # Errors
/// A plaintext that does not start with a chunk header, or a frame over the maximum
/// length.
pub(crate) fn reseal_into(
    plain: &[u8],
    key: &FrameKey,
    counter: u64,
    mut out: Buf,
) -> Result<SealedChunk, PipelineError> {
    let (head, _) = ChunkHeader::parse(plain)?;
    let buf = out.vec_mut();
    buf.clear();
    buf.reserve(HEADER_LEN + plain.len() + TAG_LEN);
    buf.resize(HEADER_LEN, 0);
    buf.extend_from_slice(plain);
    sealed(out, (key, counter), &head, None)
}

/// One opened and verified chunk.
#[derive(Debug)]
pub struct OpenedChunk {
    /// The raw bytes, verified.
    pub data: Buf,
    /// Their blake3 hash.
    pub hash: [u8; 32],
    /// Bytes that crossed the wire for it (ciphertext and tag).
    pub wire_len: usize,
}

/// Opens one chunk frame, checks index and length, decompresses and verifies the hash.
///
/// The frame is opened in place; a raw chunk is handed on in the frame's own buffer,
/// starting after the chunk header (not moved), and a compressed one is decompressed
/// into a buffer from the frame buffer's pool.
///
/// # Errors
/// Authentication, framing, ordering, size, decompression and hash failures.
pub fn open_chunk(
    key: &FrameKey,
    counter: u64,
    header: Header,
    frame: impl Into<Buf>,
    expected_index: u64,
    chunk_size: u32,
) -> Result<OpenedChunk, PipelineError> {
    // The frame is what the buffer reads as (a sealed chunk's buffer has its frame
    // header before it).
    let mut frame = frame.into();
    let from = frame.start();
    let wire_len = frame.len();
    key.open_from(counter, header, frame.vec_mut(), from)?;
    let (head, payload) = ChunkHeader::parse(&frame)?;
    if head.index != expected_index {
        return Err(PipelineError::OutOfOrder { got: head.index, expected: expected_index });
    }
    if head.raw_len > chunk_size {
        return Err(PipelineError::TooLarge {
            index: head.index,
            len: head.raw_len,
            max: chunk_size,
        });
    }
    let raw_len = head.raw_len as usize;
    let data = if head.flags & FLAG_ZSTD != 0 {
        let mut out = frame.sibling();
        let buf = out.vec_mut();
        // Exactly the checked raw length (zeroed only where the buffer grows): a zstd
        // bomb cannot write past it.
        buf.resize(raw_len, 0);
        let n = DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = zstd::bulk::Decompressor::new().ok();
            }
            slot.as_mut().and_then(|d| d.decompress_to_buffer(payload, &mut buf[..]).ok())
        });
        if n != Some(raw_len) {
            return Err(PipelineError::Decompress { index: head.index });
        }
        out
    } else {
        if payload.len() != raw_len {
            return Err(PipelineError::Decompress { index: head.index });
        }
        // The chunk stays where it is: the buffer reads from after the header.
        frame.set_start(from + CHUNK_HEADER_LEN);
        frame
    };
    let hash = *blake3::hash(&data).as_bytes();
    if hash != head.hash {
        return Err(PipelineError::HashMismatch { index: head.index });
    }
    Ok(OpenedChunk { data, hash, wire_len })
}

/// Accumulates chunk hashes into the root hash.
#[derive(Debug, Default, Clone)]
pub(crate) struct RootHash(blake3::Hasher);

impl RootHash {
    /// Adds the next chunk's hash.
    pub(crate) fn push(&mut self, chunk_hash: &[u8; 32]) {
        self.0.update(chunk_hash);
    }

    /// The root over every chunk pushed so far.
    #[must_use]
    pub(crate) fn finish(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// Wire bytes the sender may have sent beyond the receiver's last acknowledgement:
/// the chunks it keeps for a resend, each as it went out (compressed, or raw where
/// zstd did not pay). This, not the transport's auto-tuned window, bounds what can
/// pile up at a receiver whose output is slower than the link; it also covers the
/// bandwidth-delay product of a 100 ms, 1 Gbit/s path. Counted in wire bytes, not raw
/// ones, because the wire is what fills: a raw window of 16 MiB held only 3 MiB of
/// text at zstd's 5-6×, less than the kernel's own send buffer, and text through
/// 100 Mbit/s at 200 ms moved at 1.35× the link rate.
pub(crate) const WINDOW_BYTES: u64 = 16 << 20;

/// The send window in chunks for a chunk size when no chunk compresses (at least 4):
/// what the receiver's acknowledgements are paced by.
#[must_use]
pub(crate) fn window_chunks(chunk_size: u32) -> u64 {
    (WINDOW_BYTES / u64::from(chunk_size.max(1))).max(4)
}

/// The most chunks a window holds however well they compress: eight windows of raw
/// chunks, so that the raw data in flight (what a resend may have to cover, what the
/// receiver's bookkeeping counts) stays bounded too.
#[must_use]
pub(crate) fn most_chunks(chunk_size: u32) -> u64 {
    8 * window_chunks(chunk_size)
}

/// Bytes that the windows of every receiver of one `send --many` may keep between
/// them: four receivers' full windows; more receivers share it.
pub(crate) const MANY_BYTES: u64 = 4 * WINDOW_BYTES;

/// [`MANY_BYTES`] in chunks, never less than one receiver's full window.
#[must_use]
pub(crate) fn many_chunks(chunk_size: u32) -> usize {
    let chunks = (MANY_BYTES / u64::from(chunk_size.max(1))).max(window_chunks(chunk_size));
    usize::try_from(chunks).unwrap_or(usize::MAX)
}

/// Chunks a receiver may have acknowledged without having recorded them for a resume
/// yet: it acknowledges a chunk once the chunk is queued for its output (so that the
/// sender can go on while a disk catches up), and the writer's queue
/// (`sink::QUEUE`) plus the chunk being written are not in its manifest yet. A sender
/// keeps this many chunks below the last acknowledgement, so that a receiver killed
/// and rerun at once still finds them ("the receiver holds 15 chunks but only chunks
/// from 16 on are still kept" was the failure without).
pub(crate) const ACK_LEAD: u64 = 5;

/// How often the receiver acknowledges, in chunks: a quarter of the window, so the
/// sender never runs dry while an ack is on its way, and the reverse direction stays
/// small (see rust-libp2p#5410).
#[must_use]
pub(crate) fn ack_every(chunk_size: u32) -> u64 {
    (window_chunks(chunk_size) / 4).max(1)
}

/// How many chunks may be in flight on one side: as many as the machine has cores, plus
/// one so they stay busy. The pipeline's bounded channels are this deep.
#[must_use]
pub(crate) fn depth() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FrameKey {
        FrameKey::new([7u8; 32])
    }

    fn round_trip(raw: &[u8], compression: Compression) -> (OpenedChunk, bool) {
        let k = key();
        let sealed = seal_chunk(5, raw, compression, &k, 9).expect("seal");
        let compressed = sealed.compressed;
        let opened =
            open_chunk(&k, 9, sealed.header, sealed.frame, 5, DEFAULT_CHUNK_SIZE).expect("open");
        assert_eq!(opened.data, raw);
        assert_eq!(opened.hash, *blake3::hash(raw).as_bytes());
        (opened, compressed)
    }

    fn random(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        rand::Rng::fill(&mut rand::thread_rng(), v.as_mut_slice());
        v
    }

    #[test]
    fn sizes_round_trip() {
        let n = DEFAULT_CHUNK_SIZE as usize;
        for len in [0, 1, 4096, n - 1, n] {
            round_trip(&random(len), Compression::Zstd(3));
            round_trip(&vec![b'a'; len], Compression::Zstd(3));
            round_trip(&random(len), Compression::Off);
        }
    }

    #[test]
    fn compression_only_where_it_pays() {
        let (_, c) = round_trip(&vec![b'x'; 1 << 20], Compression::Zstd(3));
        assert!(c, "repetitive data is compressed");
        let (_, c) = round_trip(&random(1 << 20), Compression::Zstd(3));
        assert!(!c, "random data is sent raw");
        let (_, c) = round_trip(&vec![b'x'; 1 << 20], Compression::Off);
        assert!(!c, "--no-compress is obeyed");
    }

    #[test]
    fn wrong_index_and_oversize_are_refused() {
        let k = key();
        let s = seal_chunk(5, b"hello", Compression::Off, &k, 0).expect("seal");
        let e = open_chunk(&k, 0, s.header, s.frame, 6, DEFAULT_CHUNK_SIZE).expect_err("index");
        assert!(matches!(e, PipelineError::OutOfOrder { got: 5, expected: 6 }));

        let big = random(MIN_CHUNK_SIZE as usize + 1);
        let s = seal_chunk(0, &big, Compression::Off, &k, 0).expect("seal");
        let e = open_chunk(&k, 0, s.header, s.frame, 0, MIN_CHUNK_SIZE).expect_err("size");
        assert!(matches!(e, PipelineError::TooLarge { .. }));
    }

    #[test]
    fn without_the_sample_a_chunk_with_a_random_middle_is_still_compressed() {
        // Text, a random middle (what the sample sees), text again.
        let text: Vec<u8> = b"pcp moves bytes to a peer found by code words; ".repeat(7_000);
        let mut raw = text.clone();
        raw.extend(random(SAMPLE_LEN * 2));
        raw.extend(&text);
        assert!(!worth_compressing(&raw), "the sample sees only the random middle");
        let k = key();
        let sampled = seal_chunk_into(0, &raw, (Compression::Zstd(6), true), &k, 0, Buf::default())
            .expect("seal");
        assert!(!sampled.compressed);
        let whole = seal_chunk_into(0, &raw, (Compression::Zstd(6), false), &k, 0, Buf::default())
            .expect("seal");
        assert!(whole.compressed && whole.wire().len() < raw.len() / 2, "{}", whole.wire().len());
        let opened =
            open_chunk(&k, 0, whole.header, whole.frame, 0, DEFAULT_CHUNK_SIZE).expect("open");
        assert_eq!(opened.data, raw[..]);
    }

    /// A resend seals what the first sealing kept, under a new counter: it opens to
    /// the same chunk, and is only as long as the compressed frame.
    #[test]
    fn a_kept_plaintext_reseals_to_the_same_chunk() {
        let k = key();
        let raw: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let first =
            seal_keeping(7, &raw, (Compression::Zstd(1), true), (&k, 3), Buf::default(), true)
                .expect("seal");
        let plain = first.plain.expect("a compressed chunk keeps its plaintext");
        assert!(plain.len() < raw.len() / 4, "kept {} bytes", plain.len());
        let again = reseal_into(&plain, &k, 11, Buf::default()).expect("reseal");
        assert_eq!((again.hash, again.raw_len, again.compressed), (first.hash, raw.len(), true));
        assert_eq!(again.frame.len(), first.frame.len());
        let opened = open_chunk(&k, 11, again.header, again.frame, 7, MIN_CHUNK_SIZE << 2)
            .expect("opens under the new counter");
        assert_eq!(&opened.data[..], &raw[..]);
        // Incompressible data keeps nothing: the raw chunk is what a resend needs.
        let mut noise = vec![0u8; 100_000];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        let sealed =
            seal_keeping(0, &noise, (Compression::Zstd(1), false), (&k, 0), Buf::default(), true)
                .expect("seal");
        assert!(!sealed.compressed && sealed.plain.is_none());
    }

    #[test]
    fn many_receivers_share_64_mib_and_never_less_than_one_window() {
        assert_eq!(many_chunks(DEFAULT_CHUNK_SIZE), 64);
        assert_eq!(many_chunks(MIN_CHUNK_SIZE), 1024);
        for size in [MIN_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, 64 << 20] {
            assert!(many_chunks(size) as u64 >= window_chunks(size), "{size}");
        }
    }

    #[test]
    fn acks_come_well_within_the_window() {
        for size in [MIN_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE] {
            let (w, a) = (window_chunks(size), ack_every(size));
            assert!(w >= 4 && a >= 1 && a * 2 <= w, "size {size}: window {w}, ack every {a}");
        }
    }

    #[test]
    fn forged_hash_is_refused() {
        // A sender bug (or a malicious sender with the keys) that lies about the hash:
        // the chunk must not reach the sink.
        let k = key();
        let mut plain = [0u8; CHUNK_HEADER_LEN].to_vec();
        let mut head = [0u8; CHUNK_HEADER_LEN];
        ChunkHeader { index: 0, flags: 0, raw_len: 3, hash: [1; 32] }.write(&mut head);
        plain[..].copy_from_slice(&head);
        plain.extend_from_slice(b"abc");
        let h = k.seal(0, false, &mut plain).expect("seal");
        let e = open_chunk(&k, 0, h, plain, 0, DEFAULT_CHUNK_SIZE).expect_err("hash");
        assert!(matches!(e, PipelineError::HashMismatch { index: 0 }));
    }

    #[test]
    fn zstd_bomb_is_bounded() {
        // Claims 10 bytes but decompresses to 1 MiB: refused, not allocated.
        let k = key();
        let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).expect("compress");
        let mut plain = vec![0u8; CHUNK_HEADER_LEN];
        let mut head = [0u8; CHUNK_HEADER_LEN];
        ChunkHeader { index: 0, flags: FLAG_ZSTD, raw_len: 10, hash: [0; 32] }.write(&mut head);
        plain.copy_from_slice(&head);
        plain.extend_from_slice(&bomb);
        let h = k.seal(0, false, &mut plain).expect("seal");
        let e = open_chunk(&k, 0, h, plain, 0, DEFAULT_CHUNK_SIZE).expect_err("bomb");
        assert!(matches!(e, PipelineError::Decompress { index: 0 }));
    }
}
