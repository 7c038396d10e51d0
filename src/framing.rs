//! Authenticated, encrypted frames on the wire (ChaCha20-Poly1305, STREAM-style).
//!
//! This module owns the frame format and its nonces: sealing and opening one frame
//! ([`FrameKey`]), handing out frame counters in order ([`Sealer`], [`Opener`]), and moving
//! frames over a `futures::io` stream ([`read_frame_within`], [`write_frame`]), which is what a
//! libp2p stream is. [`FrameWriter`] and [`FrameReader`] put a direction's counter state,
//! its half of the stream and a deadline together: every frame of a session is written
//! and read through them, so silence or a stuck write is a dead connection
//! ([`FrameError::Timeout`]) in one place. It depends on `chacha20poly1305` and `futures` only; the keys come
//! from the session layer (SPAKE2 then HKDF, one key per direction).
//!
//! It has two parts, each documenting the invariants it keeps:
//!
//! - `framing/format.rs`, one frame as bytes: the size limits, [`Header`], [`FrameKey`]
//!   (seal and open one frame under a counter the caller gives) and [`FrameError`]. The
//!   wire format, the nonce and the associated data are documented there.
//! - `framing/stream.rs`, frames in order over a stream: [`Sealer`] and [`Opener`] (one
//!   direction's counters), reading and writing one frame, and [`FrameWriter`] and
//!   [`FrameReader`] (with deadlines). What makes a stream complete, truncated or
//!   refused is documented there.

// `FrameKey` is public only for the benches (`pcp::bench`, hidden from the docs); its
// docs may name the module's private items.
#![allow(rustdoc::private_intra_doc_links)]

mod format;
mod stream;

pub use format::FrameError;
pub use format::FrameKey;
#[cfg(any(test, feature = "adversary"))]
pub(crate) use format::MAX_FRAME_LEN;
#[cfg(feature = "adversary")]
pub(crate) use format::MAX_PLAINTEXT_LEN;
pub(crate) use format::{HEADER_LEN, Header, TAG_LEN};
pub(crate) use stream::{FrameReader, FrameWriter, Opener, Sealer};
pub use stream::{read_frame_into, write_framed};
#[cfg(doc)]
use stream::{read_frame_within, write_frame};

/// The keys and data both halves' tests use.
#[cfg(test)]
mod fixtures {
    use super::format::{FrameKey, KEY_LEN};

    pub(super) const KEY: [u8; KEY_LEN] = [7; KEY_LEN];
    pub(super) const OTHER_KEY: [u8; KEY_LEN] = [9; KEY_LEN];

    pub(super) fn key() -> FrameKey {
        FrameKey::new(KEY)
    }

    /// Deterministic, non-repeating test data.
    pub(super) fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }
}
