//! One frame as bytes: the size limits, the [`Header`], the nonce and associated data,
//! sealing and opening one frame under a counter the caller gives ([`FrameKey`]), and
//! [`FrameError`]. Stateless: which counter comes next is `framing/stream.rs`'s business.
//!
//! # Wire format
//!
//! A stream is a sequence of frames; the final one has the LAST flag set. One frame:
//!
//! | offset        | bytes      | field                                                  |
//! |---------------|------------|--------------------------------------------------------|
//! | 0             | 4          | header: u32 big-endian, see below                      |
//! | 4             | `len` − 16 | ciphertext (as long as the plaintext, possibly empty)  |
//! | 4 + `len` − 16| 16         | Poly1305 tag                                           |
//!
//! | header bits | meaning                                                             |
//! |-------------|---------------------------------------------------------------------|
//! | 31          | LAST: this is the stream's final frame                              |
//! | 0..=30      | `len`: bytes of ciphertext plus tag, from 16 to [`MAX_FRAME_LEN`]   |
//!
//! The frame counter is not sent; both sides count frames from 0. It makes the nonce and
//! is authenticated along with the header:
//!
//! | input           | bytes | content                                          |
//! |-----------------|-------|--------------------------------------------------|
//! | nonce           | 12    | `00 00 00 00` ‖ counter (u64 big-endian)         |
//! | associated data | 12    | counter (u64 big-endian) ‖ the 4 header bytes    |
//!
//! # Invariants
//!
//! - Each direction MUST have its own key, and a counter MUST never be used twice with
//!   one key ([`Sealer`] hands them out).
//! - The header is authenticated, so a flipped LAST flag or length fails to open. A
//!   reordered, dropped or replayed frame is opened under the wrong counter and fails too.
//! - Plaintext MUST never be used before its frame has opened successfully.
//! - Key material is never printed ([`FrameKey`]'s `Debug` is redacted) and is wiped
//!   from memory when the last copy of a key is dropped.

use std::fmt;
use std::io;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use zeroize::Zeroize;

#[cfg(doc)]
use super::stream::{FrameWriter, Opener, Sealer, write_frame};

/// Bytes in a frame header.
pub(crate) const HEADER_LEN: usize = 4;

/// Bytes in a Poly1305 tag, the smallest possible frame body (an empty plaintext).
pub(crate) const TAG_LEN: usize = 16;

/// The largest frame body (ciphertext plus tag) in bytes: 16 MiB of data plus 1 KiB of
/// room for per-chunk metadata. It bounds what a peer can make us allocate per frame.
pub(crate) const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024 + 1024;

/// The largest plaintext that fits in one frame.
pub(crate) const MAX_PLAINTEXT_LEN: usize = MAX_FRAME_LEN as usize - TAG_LEN;

/// Bit 31 of the header: this is the final frame.
const LAST_FLAG: u32 = 1 << 31;

/// Bytes of key.
pub(crate) const KEY_LEN: usize = 32;

/// What can go wrong with a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is larger than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes is longer than the maximum of {max}")]
    TooLong {
        /// The frame's length (ciphertext plus tag) in bytes.
        len: u64,
        /// The limit, [`MAX_FRAME_LEN`].
        max: u32,
    },
    /// The frame is shorter than its authentication tag.
    #[error("frame is shorter than its 16-byte authentication tag")]
    TooShort,
    /// The tag did not verify: wrong key, wrong counter (a reordered, dropped or
    /// replayed frame), or altered bytes.
    #[error("frame failed authentication: the peer's data was altered or is not from this session")]
    Decrypt,
    /// A frame came (or was to be sent) after the LAST frame.
    #[error("frame after the last one")]
    AfterLast,
    /// The stream ended before its LAST frame, or in the middle of a frame.
    #[error("stream ended before its last frame: the data is incomplete")]
    Truncated,
    /// A header's length does not match the body it was given with.
    #[error("frame header announces {header} bytes but the body has {body}")]
    LengthMismatch {
        /// The length in the header.
        header: u32,
        /// The body's actual length.
        body: usize,
    },
    /// Reading or writing the underlying stream failed.
    #[error("frame i/o failed")]
    Io(#[from] io::Error),
    /// Nothing arrived, or a write could not finish, within the deadline: the
    /// connection is taken for dead.
    #[error("the connection went silent")]
    Timeout,
}

impl FrameError {
    /// Whether this is a lost connection (the transfer may resume after a reconnection)
    /// rather than tampering, a protocol violation or a bug (the transfer stops).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, FrameError::Truncated | FrameError::Io(_) | FrameError::Timeout)
    }
}

/// A frame header: the body length and the LAST flag, sent as 4 bytes before the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of ciphertext plus tag, from [`TAG_LEN`] to [`MAX_FRAME_LEN`].
    pub len: u32,
    /// This is the stream's final frame.
    pub last: bool,
}

impl Header {
    /// The 4 header bytes: `len` big-endian, with bit 31 set for the LAST frame.
    ///
    /// `len` MUST be at most [`MAX_FRAME_LEN`], as it is in every header from
    /// [`FrameKey::seal`] or [`Header::from_bytes`]; [`write_frame`] checks it.
    #[must_use]
    pub(crate) fn to_bytes(self) -> [u8; HEADER_LEN] {
        debug_assert!(self.len <= MAX_FRAME_LEN, "header length {} out of range", self.len);
        let flag = if self.last { LAST_FLAG } else { 0 };
        ((self.len & !LAST_FLAG) | flag).to_be_bytes()
    }

    /// Decode 4 header bytes.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLong`] if the length exceeds [`MAX_FRAME_LEN`],
    /// [`FrameError::TooShort`] if it is below [`TAG_LEN`].
    pub(crate) fn from_bytes(bytes: [u8; HEADER_LEN]) -> Result<Header, FrameError> {
        let raw = u32::from_be_bytes(bytes);
        let header = Header { len: raw & !LAST_FLAG, last: raw & LAST_FLAG != 0 };
        header.check()?;
        Ok(header)
    }

    /// Check that `len` is within bounds.
    pub(super) fn check(self) -> Result<(), FrameError> {
        if self.len > MAX_FRAME_LEN {
            Err(FrameError::TooLong { len: u64::from(self.len), max: MAX_FRAME_LEN })
        } else if (self.len as usize) < TAG_LEN {
            Err(FrameError::TooShort)
        } else {
            Ok(())
        }
    }

    /// The header for a frame holding `plaintext_len` bytes.
    pub(super) fn for_plaintext(plaintext_len: usize, last: bool) -> Result<Header, FrameError> {
        let too_long = || FrameError::TooLong {
            len: u64::try_from(plaintext_len).unwrap_or(u64::MAX).saturating_add(TAG_LEN as u64),
            max: MAX_FRAME_LEN,
        };
        if plaintext_len > MAX_PLAINTEXT_LEN {
            return Err(too_long());
        }
        let len = u32::try_from(plaintext_len + TAG_LEN).map_err(|_| too_long())?;
        Ok(Header { len, last })
    }
}

/// The key for one direction of a session, able to seal and open single frames.
///
/// Stateless: the caller supplies each frame's counter, so worker threads can seal or open
/// frames in parallel while [`Sealer`] or [`Opener`] hands out the counters in order.
/// Cloning is cheap (32 bytes); every clone is wiped on drop.
///
/// # Security
///
/// A counter MUST never be sealed twice under one key, and the two directions MUST use
/// different keys; this type cannot check either.
#[derive(Clone)]
pub struct FrameKey {
    aead: ChaCha20Poly1305,
}

impl FrameKey {
    /// Wrap a 32-byte key. The given bytes are wiped; since `[u8; 32]` is `Copy`, the
    /// caller should keep its own copy in a `Zeroizing` or wipe it too.
    #[must_use]
    pub fn new(mut key: [u8; KEY_LEN]) -> FrameKey {
        let mut array = Key::from(key);
        let aead = ChaCha20Poly1305::new(&array);
        array.as_mut_slice().zeroize();
        key.zeroize();
        FrameKey { aead }
    }

    /// Encrypt `buf` in place as frame number `counter` and append the tag; return the
    /// header to send before it.
    ///
    /// Reserve [`TAG_LEN`] bytes of spare capacity in `buf` to avoid a reallocation.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLong`] if `buf` is longer than [`MAX_PLAINTEXT_LEN`]; `buf` is then
    /// left untouched.
    pub fn seal(&self, counter: u64, last: bool, buf: &mut Vec<u8>) -> Result<Header, FrameError> {
        self.seal_from(counter, last, buf, 0)
    }

    /// Like [`FrameKey::seal`], for a `buf` that starts with [`HEADER_LEN`] bytes of room
    /// before the plaintext: the header is written there, so that `buf` is the whole frame
    /// as it goes on the wire, ready for one write ([`FrameWriter::write_framed`]).
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLong`] if the plaintext is longer than [`MAX_PLAINTEXT_LEN`];
    /// `buf` is then left untouched.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than [`HEADER_LEN`].
    pub fn seal_framed(
        &self,
        counter: u64,
        last: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Header, FrameError> {
        assert!(buf.len() >= HEADER_LEN, "no room for the frame header");
        let header = self.seal_from(counter, last, buf, HEADER_LEN)?;
        buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        Ok(header)
    }

    /// Seals `buf[from..]` in place and appends the tag.
    fn seal_from(
        &self,
        counter: u64,
        last: bool,
        buf: &mut Vec<u8>,
        from: usize,
    ) -> Result<Header, FrameError> {
        let header = Header::for_plaintext(buf.len() - from, last)?;
        let tag = self
            .aead
            .encrypt_inout_detached(
                &nonce(counter),
                &associated_data(counter, header),
                (&mut buf[from..]).into(),
            )
            .expect("a frame is far below ChaCha20-Poly1305's 256 GiB plaintext limit");
        buf.extend_from_slice(&tag);
        Ok(header)
    }

    /// Verify frame number `counter`, received with `header`, and decrypt `buf` (its
    /// ciphertext and tag) in place, truncating the tag.
    ///
    /// # Errors
    ///
    /// - [`FrameError::LengthMismatch`] if `buf` is not `header.len` bytes long.
    /// - [`FrameError::TooLong`] or [`FrameError::TooShort`] for an out-of-range header.
    /// - [`FrameError::Decrypt`] if authentication fails; the contents of `buf` are then
    ///   unspecified and MUST NOT be used.
    pub fn open(&self, counter: u64, header: Header, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        self.open_from(counter, header, buf, 0)
    }

    /// [`FrameKey::open`] on `buf[from..]`, the bytes before it left alone (a frame read
    /// or sealed behind room for something else).
    ///
    /// # Errors
    ///
    /// As for [`FrameKey::open`]; a `from` past the end is a length mismatch.
    pub(crate) fn open_from(
        &self,
        counter: u64,
        header: Header,
        buf: &mut Vec<u8>,
        from: usize,
    ) -> Result<(), FrameError> {
        header.check()?;
        let body = buf.len().saturating_sub(from);
        if from > buf.len() || header.len as usize != body {
            return Err(FrameError::LengthMismatch { header: header.len, body });
        }
        let plaintext_len = buf.len() - TAG_LEN;
        let (ciphertext, tag) = buf.split_at_mut(plaintext_len);
        let ciphertext = &mut ciphertext[from..];
        let tag: [u8; TAG_LEN] =
            (&*tag).try_into().expect("the split leaves exactly TAG_LEN bytes");
        self.aead
            .decrypt_inout_detached(
                &nonce(counter),
                &associated_data(counter, header),
                ciphertext.into(),
                &Tag::from(tag),
            )
            .map_err(|_| FrameError::Decrypt)?;
        buf.truncate(plaintext_len);
        Ok(())
    }
}

impl fmt::Debug for FrameKey {
    /// `FrameKey(<redacted>)`: key material is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameKey(<redacted>)")
    }
}

/// The nonce for frame `counter`: 4 zero bytes, then the counter big-endian.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

/// The associated data for frame `counter`: the counter big-endian, then the header.
fn associated_data(counter: u64, header: Header) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&counter.to_be_bytes());
    aad[8..].copy_from_slice(&header.to_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::fixtures::{KEY, OTHER_KEY, data, key};

    #[test]
    fn header_round_trip() {
        for header in [
            Header { len: TAG_LEN as u32, last: false },
            Header { len: TAG_LEN as u32, last: true },
            Header { len: 65_536 + 16, last: false },
            Header { len: MAX_FRAME_LEN, last: true },
        ] {
            assert_eq!(Header::from_bytes(header.to_bytes()).expect("valid"), header);
        }
        assert_eq!(Header { len: 16, last: true }.to_bytes(), [0x80, 0, 0, 16]);
        assert_eq!(Header { len: 0x00ab_cdef, last: false }.to_bytes(), [0, 0xab, 0xcd, 0xef]);
    }

    #[test]
    fn header_rejects_bad_lengths() {
        assert!(matches!(Header::from_bytes([0, 0, 0, 15]), Err(FrameError::TooShort)));
        assert!(matches!(Header::from_bytes([0x80, 0, 0, 0]), Err(FrameError::TooShort)));
        let too_long = (MAX_FRAME_LEN + 1).to_be_bytes();
        assert!(matches!(
            Header::from_bytes(too_long),
            Err(FrameError::TooLong { len, max: MAX_FRAME_LEN }) if len == u64::from(MAX_FRAME_LEN) + 1
        ));
        assert!(matches!(
            Header::from_bytes([0xff; 4]),
            Err(FrameError::TooLong { len: 0x7fff_ffff, .. })
        ));
    }

    #[test]
    fn seal_open_round_trip_at_sizes() {
        for len in [0, 1, TAG_LEN, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 1 << 20] {
            let plain = data(len);
            let mut buf = plain.clone();
            let header = key().seal(3, len == 0, &mut buf).expect("seal");
            assert_eq!(header, Header { len: (len + TAG_LEN) as u32, last: len == 0 });
            assert_eq!(buf.len(), len + TAG_LEN);
            if len >= 32 {
                assert_ne!(&buf[..len], &plain[..], "encrypted");
            }
            key().open(3, header, &mut buf).expect("open");
            assert_eq!(buf, plain, "len {len}");
        }
    }

    #[test]
    fn seal_matches_the_documented_nonce_and_associated_data() {
        let mut buf = b"hello".to_vec();
        let header = key().seal(0x0102_0304_0506_0708, true, &mut buf).expect("seal");

        let aead = ChaCha20Poly1305::new(&Key::from(KEY));
        let nonce = Nonce::from([0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let aad = [1, 2, 3, 4, 5, 6, 7, 8, 0x80, 0, 0, 21];
        let mut want = b"hello".to_vec();
        let tag =
            aead.encrypt_inout_detached(&nonce, &aad, want.as_mut_slice().into()).expect("encrypt");
        want.extend_from_slice(&tag);

        assert_eq!(header, Header { len: 21, last: true });
        assert_eq!(buf, want);
    }

    #[test]
    fn directions_with_different_keys_differ() {
        let mut a = data(64);
        let mut b = data(64);
        key().seal(0, false, &mut a).expect("seal");
        FrameKey::new(OTHER_KEY).seal(0, false, &mut b).expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn open_rejects_a_body_of_the_wrong_length() {
        let mut buf = data(10);
        let header = key().seal(0, true, &mut buf).expect("seal");
        buf.push(0);
        assert!(matches!(
            key().open(0, header, &mut buf),
            Err(FrameError::LengthMismatch { header: 26, body: 27 })
        ));
        let mut short = vec![0; 15];
        let got = key().open(0, Header { len: 15, last: false }, &mut short);
        assert!(matches!(got, Err(FrameError::TooShort)), "{got:?}");
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            FrameError::Decrypt.to_string(),
            "frame failed authentication: the peer's data was altered or is not from this session"
        );
        assert_eq!(
            FrameError::TooLong { len: 5_000_000_000, max: MAX_FRAME_LEN }.to_string(),
            format!("frame of 5000000000 bytes is longer than the maximum of {MAX_FRAME_LEN}")
        );
    }
}
