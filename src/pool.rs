//! Recycled chunk buffers, so that the data phase does not allocate, fault in and zero
//! a fresh megabyte for every chunk.
//!
//! Measured in issue 8 (perf, 512 MiB random transfer): the kernel clearing freshly
//! faulted pages, plus `memset` of `vec![0; n]`, took about 5 % of the sender's CPU and
//! 10 % of the receiver's. A [`Pool`] hands out [`Buf`]s that go back to it when dropped,
//! wherever that happens (the sink's writer thread, a seal job, an acknowledgement).
//!
//! Invariants:
//! - A buffer taken from the pool holds stale bytes of this same transfer (its `len` is
//!   kept, so that `resize` zeroes only growth). Every user overwrites what it reads
//!   back: a frame is read over its whole length or refused, a chunk is read into an
//!   emptied buffer, seal output and decompression start from an empty one.
//! - The pool keeps at most [`Pool::new`]'s `keep` idle buffers and frees the rest, so
//!   memory stays bounded by what is in flight (bounded elsewhere) plus `keep` buffers.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// A shared free list of buffers of one capacity.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    idle: Mutex<Vec<Vec<u8>>>,
    capacity: usize,
    keep: usize,
}

impl Pool {
    /// A pool of buffers of `capacity` bytes, keeping at most `keep` idle ones.
    #[must_use]
    pub fn new(capacity: usize, keep: usize) -> Pool {
        Pool(Arc::new(Inner { idle: Mutex::new(Vec::with_capacity(keep)), capacity, keep }))
    }

    /// A pool for chunks of `chunk_size` bytes: room for a whole frame (its header, the
    /// chunk header, the chunk and the tag), and about 16 MiB of idle buffers at most.
    #[must_use]
    pub fn for_chunks(chunk_size: u32) -> Pool {
        settle_malloc();
        let capacity = chunk_size as usize + FRAME_ROOM;
        Pool::new(capacity, ((16 << 20) / capacity).clamp(2, 8))
    }

    /// A buffer as its last user left it (or a new, empty one), with at least the
    /// pool's capacity.
    #[must_use]
    pub fn take(&self) -> Buf {
        let reused = self.0.idle.lock().ok().and_then(|mut idle| idle.pop());
        let vec = reused.unwrap_or_else(|| Vec::with_capacity(self.0.capacity));
        Buf { vec, start: 0, pool: Some(self.clone()) }
    }

    /// An empty buffer with at least the pool's capacity.
    #[must_use]
    pub fn take_empty(&self) -> Buf {
        let mut buf = self.take();
        buf.vec.clear();
        buf
    }

    fn give(&self, vec: Vec<u8>) {
        if vec.capacity() < self.0.capacity {
            return;
        }
        if let Ok(mut idle) = self.0.idle.lock()
            && idle.len() < self.0.keep
        {
            idle.push(vec);
        }
    }

    /// Idle buffers (the tests look).
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.0.idle.lock().map_or(0, |idle| idle.len())
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("capacity", &self.0.capacity).finish_non_exhaustive()
    }
}

/// Frees one large block, so that glibc's malloc sets its thresholds for a process that
/// moves megabytes (and does nothing elsewhere).
///
/// glibc serves blocks above its mmap threshold (128 KiB at start) with `mmap`, and gives
/// the top of its heap back to the kernel whenever more than the trim threshold (also
/// 128 KiB) is free there; it raises both only when a block above the threshold is
/// freed. Before the pool, a freed chunk buffer did that by accident. Since chunk
/// buffers are recycled, nothing did, and the heap from which the transport allocates
/// every 16 KiB yamux frame was trimmed and faulted in again all the time: measured in
/// issue 8, 40,000 more page faults per 256 MiB and 20 % more CPU in the receiver.
/// Freeing one 8 MiB block sets the mmap threshold to 8 MiB and the trim threshold to
/// 16 MiB, as a long-running allocation-heavy process ends up with anyway. The block is
/// never touched, so it costs no memory.
fn settle_malloc() {
    let block: Vec<u8> = Vec::with_capacity(8 << 20);
    // Keeps the allocation from being optimised away.
    drop(std::hint::black_box(block));
}

/// Bytes a frame needs beyond its chunk: the frame header, the chunk header, the tag,
/// and some slack for zstd's output bound on a chunk that does not shrink.
pub(crate) const FRAME_ROOM: usize =
    crate::framing::HEADER_LEN + crate::message::CHUNK_HEADER_LEN + crate::framing::TAG_LEN + 1024;

/// A byte buffer that returns to its pool when dropped. It reads as the bytes from
/// `start` on, so a header in front of the data can be skipped without moving the data.
#[derive(Default)]
pub struct Buf {
    vec: Vec<u8>,
    start: usize,
    pool: Option<Pool>,
}

impl Buf {
    /// The whole underlying vector, including the bytes before `start`.
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.vec
    }

    /// The whole underlying vector.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn vec(&self) -> &Vec<u8> {
        &self.vec
    }

    /// Every byte, including those before `start`.
    #[must_use]
    pub(crate) fn full(&self) -> &[u8] {
        &self.vec
    }

    /// Where the bytes it reads as begin in the underlying vector.
    #[must_use]
    pub(crate) fn start(&self) -> usize {
        self.start
    }

    /// Reads as the bytes from `start` on.
    ///
    /// # Panics
    /// If `start` is past the end.
    pub(crate) fn set_start(&mut self, start: usize) {
        assert!(start <= self.vec.len(), "buffer start {start} past its end {}", self.vec.len());
        self.start = start;
    }

    /// An empty buffer from the same pool (or a new one).
    #[must_use]
    pub(crate) fn sibling(&self) -> Buf {
        self.pool.as_ref().map_or_else(Buf::default, Pool::take_empty)
    }
}

impl From<Vec<u8>> for Buf {
    /// A buffer of no pool: it is simply freed when dropped.
    fn from(vec: Vec<u8>) -> Buf {
        Buf { vec, start: 0, pool: None }
    }
}

impl Deref for Buf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.vec[self.start..]
    }
}

impl AsRef<[u8]> for Buf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give(std::mem::take(&mut self.vec));
        }
    }
}

impl fmt::Debug for Buf {
    /// The length only: the bytes may be anyone's data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buf({} bytes)", self.len())
    }
}

impl PartialEq for Buf {
    fn eq(&self, other: &Buf) -> bool {
        **self == **other
    }
}

impl PartialEq<[u8]> for Buf {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<&[u8]> for Buf {
    fn eq(&self, other: &&[u8]) -> bool {
        **self == **other
    }
}

impl PartialEq<Vec<u8>> for Buf {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_keep_their_length() {
        let pool = Pool::new(100, 2);
        let mut a = pool.take();
        assert!(a.is_empty() && a.vec().capacity() >= 100);
        a.vec_mut().extend_from_slice(&[7; 50]);
        let ptr = a.vec().as_ptr();
        drop(a);
        assert_eq!(pool.idle(), 1);
        let b = pool.take();
        assert_eq!((b.vec().as_ptr(), b.len()), (ptr, 50), "the same buffer, as it was left");
        drop(b);
        assert!(pool.take_empty().is_empty());
    }

    #[test]
    fn at_most_keep_idle_and_no_small_ones() {
        let pool = Pool::new(100, 2);
        let bufs: Vec<Buf> = (0..5).map(|_| pool.take()).collect();
        drop(bufs);
        assert_eq!(pool.idle(), 2);
        let mut small = pool.take_empty();
        *small.vec_mut() = Vec::with_capacity(10);
        drop(small);
        assert_eq!(pool.idle(), 1, "a shrunk buffer is freed, not kept");
    }

    #[test]
    fn start_skips_a_header() {
        let mut b = Buf::from(b"headbody".to_vec());
        b.set_start(4);
        assert_eq!(b, b"body"[..]);
        assert_eq!(format!("{b:?}"), "Buf(4 bytes)");
        assert!(b.sibling().is_empty());
    }
}
