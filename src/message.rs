//! The messages carried inside encrypted frames, after the handshake.
//!
//! Every frame's plaintext starts with a one-byte tag. Control messages encode their
//! body with [postcard](https://postcard.jamesmunns.com/wire-format) (varint integers,
//! length-prefixed strings); a chunk has a fixed binary header so that the pipeline can
//! build and seal it in place without copying the payload.
//!
//! | tag  | message | direction | body |
//! |------|---------|-----------|------|
//! | 0x01 | Offer   | S → R | postcard [`Offer`] |
//! | 0x02 | Accept  | R → S | empty |
//! | 0x03 | Decline | R → S | postcard `String` reason (LAST frame) |
//! | 0x04 | Chunk   | S → R | see below |
//! | 0x05 | End     | S → R | postcard [`End`]: totals, then a file's mode and mtime for a file offer (LAST frame) |
//! | 0x06 | Error   | both  | postcard `String` (LAST frame) |
//! | 0x07 | Done    | R → S | empty: everything verified and written (LAST frame) |
//! | 0x08 | Ack     | R → S | postcard `u64`: how many chunks the receiver has verified and handed to its output |
//! | 0x09 | Resume  | R → S | postcard [`Resume`]: instead of Accept, continue after the chunks the receiver holds |
//! | 0x0a | Keepalive | both | empty: sent by a side that has been silent for a while, so silence means a dead link |
//! | 0x0c | Refuse  | R → S | postcard `String` reason: the receiver cannot take the offer where it stands (the name exists, a stream to a terminal); it may try again with the same code, so the sender keeps waiting (LAST frame) |
//! | 0x0b | Cancel  | both  | empty: the user stopped this side on purpose (Ctrl-C, SIGTERM); the peer stops too instead of waiting to reconnect (LAST frame) |
//!
//! Chunk body, big-endian:
//!
//! | bytes | field |
//! |-------|-------|
//! | 8     | chunk index, from 0, consecutive |
//! | 1     | flags: bit 0 = payload is zstd-compressed; other bits MUST be 0 |
//! | 4     | raw length: the chunk's length before compression, at most the offer's chunk size |
//! | 32    | blake3 hash of the raw chunk |
//! | rest  | payload |
//!
//! Invariants: a receiver never trusts a length it did not check against the offer's
//! chunk size, and never writes a chunk whose blake3 hash does not match.
//!
//! Limits: an Offer body is at most [`MAX_OFFER_LEN`] (1 MiB) bytes, announces at most
//! [`MAX_ENTRIES`] (65,536) entries, and its name and each entry are at most
//! [`MAX_NAME_LEN`] (4096) bytes. All three are checked before the memory they would
//! cost is allocated (an empty entry is one byte on the wire but 24 in memory), and an
//! Offer over them is refused with [`MessageError::OverLimit`]. The reason an `Error`,
//! `Decline` or `Refuse` carries is at most [`MAX_REASON_LEN`] (1024) bytes, checked the
//! same way; a side cuts its own longer reasons to that before sending.

use serde::{Deserialize, Serialize};

/// Errors decoding a message the peer sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The frame was empty or carried an unknown tag.
    #[error("peer sent an unknown message (tag {0:#04x})")]
    UnknownTag(u8),
    /// A message arrived where another was expected.
    #[error("peer sent {got} where {expected} was expected")]
    Unexpected {
        /// What arrived.
        got: &'static str,
        /// What the protocol step needs.
        expected: &'static str,
    },
    /// The body did not decode.
    #[error("peer sent a malformed {what} message")]
    Malformed {
        /// Which message.
        what: &'static str,
    },
    /// The message is over one of pcp's limits (see the module docs); refused before
    /// whatever it claims was allocated.
    #[error("the peer's {what} has {limit}")]
    OverLimit {
        /// Which message.
        what: &'static str,
        /// Which limit, in words.
        limit: &'static str,
    },
}

/// The largest Offer body accepted, in bytes.
pub(crate) const MAX_OFFER_LEN: usize = 1 << 20;
/// The most top-level entries an Offer may announce.
pub(crate) const MAX_ENTRIES: usize = 65_536;
/// The longest name (the Offer's name, or one of its entries), in bytes.
pub(crate) const MAX_NAME_LEN: usize = 4096;
/// The longest reason an `Error`, `Decline` or `Refuse` carries, in bytes. Longer
/// reasons of our own are cut (on a character boundary) before they are sent.
pub(crate) const MAX_REASON_LEN: usize = 1024;

/// Decoding with limits: the Offer's name and entries are checked as postcard reads
/// them, before anything is allocated for them.
mod bounded {
    use std::cell::Cell;
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, SeqAccess, Visitor};

    use super::{MAX_ENTRIES, MAX_NAME_LEN, MAX_REASON_LEN};

    thread_local! {
        /// The limit the last failed decode on this thread hit. postcard drops a
        /// deserializer's own error message, so [`super::Control::decode`] reads the
        /// reason here; decoding runs on one thread, start to end.
        static HIT: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    fn over<E: de::Error>(limit: &'static str) -> E {
        HIT.set(Some(limit));
        E::custom(limit)
    }

    /// Forgets any limit hit before, and returns it.
    pub(super) fn take_hit() -> Option<&'static str> {
        HIT.take()
    }

    struct Name;

    impl Visitor<'_> for Name {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a string of at most {MAX_NAME_LEN} bytes")
        }

        // postcard hands over the borrowed bytes: checked before they are copied.
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            if v.len() > MAX_NAME_LEN {
                return Err(over("a name longer than 4096 bytes"));
            }
            Ok(v.to_owned())
        }
    }

    /// A name of at most [`MAX_NAME_LEN`] bytes.
    pub(super) fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_str(Name)
    }

    struct Reason;

    impl Visitor<'_> for Reason {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a string of at most {MAX_REASON_LEN} bytes")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            if v.len() > MAX_REASON_LEN {
                return Err(over("a reason longer than 1024 bytes"));
            }
            Ok(v.to_owned())
        }
    }

    /// A reason (`Error`, `Decline`, `Refuse`) of at most [`MAX_REASON_LEN`] bytes.
    pub(super) struct BoundedReason(pub(super) String);

    impl<'de> de::Deserialize<'de> for BoundedReason {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BoundedReason, D::Error> {
            d.deserialize_str(Reason).map(BoundedReason)
        }
    }

    struct BoundedName(String);

    impl<'de> de::Deserialize<'de> for BoundedName {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BoundedName, D::Error> {
            name(d).map(BoundedName)
        }
    }

    struct Entries;

    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "at most {MAX_ENTRIES} names")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            const TOO_MANY: &str = "more than 65536 entries";
            // postcard knows the count from its length prefix: refuse before iterating.
            let hint = seq.size_hint().unwrap_or(0);
            if hint > MAX_ENTRIES {
                return Err(over(TOO_MANY));
            }
            let mut out = Vec::with_capacity(hint.min(1024));
            while let Some(BoundedName(n)) = seq.next_element()? {
                if out.len() == MAX_ENTRIES {
                    return Err(over(TOO_MANY));
                }
                out.push(n);
            }
            Ok(out)
        }
    }

    /// At most [`MAX_ENTRIES`] names of at most [`MAX_NAME_LEN`] bytes each.
    pub(super) fn entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(Entries)
    }

    struct Kinds;

    impl<'de> Visitor<'de> for Kinds {
        type Value = Vec<super::TopKind>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "at most {MAX_ENTRIES} kinds")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            const TOO_MANY: &str = "more than 65536 kinds";
            let hint = seq.size_hint().unwrap_or(0);
            if hint > MAX_ENTRIES {
                return Err(over(TOO_MANY));
            }
            let mut out = Vec::with_capacity(hint.min(1024));
            while let Some(kind) = seq.next_element()? {
                if out.len() == MAX_ENTRIES {
                    return Err(over(TOO_MANY));
                }
                out.push(kind);
            }
            Ok(out)
        }
    }

    /// At most [`MAX_ENTRIES`] kinds; [`super::Control::decode`] then requires exactly
    /// one per entry.
    pub(super) fn kinds<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<super::TopKind>, D::Error> {
        d.deserialize_seq(Kinds)
    }
}

/// What kind of thing is offered; decides how the receiver writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// A byte stream of unknown length (the sender's stdin).
    Stream,
    /// One regular file.
    File,
    /// A tar stream of one or more files and directories.
    Archive,
    /// UTF-8 text of the offered size, meant to be read, not saved: a receiver at a
    /// terminal prints it (cleaned) instead of writing a file. Appended last, so that
    /// the postcard encoding of the other kinds (their variant index) is unchanged; a
    /// receiver that predates it refuses the offer as malformed.
    Text,
}

/// The sender's offer, shown to the receiver before any data flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Offer {
    /// What is offered.
    pub kind: Kind,
    /// The file's name, or a summary for an archive; never a path.
    #[serde(deserialize_with = "bounded::name")]
    pub name: String,
    /// Size in bytes: a file's size, or an archive's tar stream length from a metadata
    /// walk, measured when the offer is sent; `None` for a stream only. It is what the
    /// receiver accepts and MUST be exact: the receiver refuses a stream that passes it
    /// or ends short of it, and a file or archive offer without one.
    pub size: Option<u64>,
    /// For an archive, the top-level names it contains; the receiver refuses others.
    #[serde(deserialize_with = "bounded::entries")]
    pub entries: Vec<String>,
    /// Chunk size in bytes: the most a chunk's raw length may be.
    pub chunk_size: u32,
    /// For an archive, how many entries (files, directories, links) it holds, from the
    /// same metadata walk.
    pub files: Option<u64>,
    /// For an archive, what each top-level entry is, parallel to `entries` (the same
    /// length, checked on decode); the receiver refuses an entry of another kind.
    #[serde(deserialize_with = "bounded::kinds")]
    pub kinds: Vec<TopKind>,
}

/// What a top-level entry of an archive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TopKind {
    /// A regular file.
    File,
    /// A directory and what is in it.
    Folder,
}

impl TopKind {
    /// The kind as a message names it.
    #[must_use]
    pub(crate) fn noun(self) -> &'static str {
        match self {
            TopKind::File => "a file",
            TopKind::Folder => "a folder",
        }
    }
}

/// The sender's closing totals, checked by the receiver.
///
/// Wire form: postcard `chunks`, `bytes`, `root`, then, only when `meta` is set, a
/// postcard [`FileMeta`]. An End without it is the form senders sent before it
/// existed, and decodes with `meta: None` (see [`End::decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End {
    /// Number of chunks sent.
    pub chunks: u64,
    /// Total raw bytes.
    pub bytes: u64,
    /// blake3 over the concatenated 32-byte chunk hashes, in order.
    pub root: [u8; 32],
    /// For a file offer, the file's permissions and modification time, which the
    /// receiver gives the file it writes (issue 15, item 10).
    pub meta: Option<FileMeta>,
}

/// The totals of an [`End`], as postcard encodes them.
#[derive(Serialize, Deserialize)]
struct Totals {
    chunks: u64,
    bytes: u64,
    root: [u8; 32],
}

/// A sent file's permissions and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileMeta {
    /// Permission bits (`st_mode & 0o7777`); the receiver keeps only `0o777` of them,
    /// under its umask.
    pub mode: u32,
    /// Seconds since the Unix epoch (negative before it).
    pub mtime: i64,
    /// Nanoseconds within that second; the receiver ignores a time whose value is not
    /// below 1,000,000,000.
    pub mtime_nanos: u32,
}

impl FileMeta {
    /// The modification time, if it is a valid one.
    pub(crate) fn modified(&self) -> Option<std::time::SystemTime> {
        use std::time::{Duration, UNIX_EPOCH};
        if self.mtime_nanos >= 1_000_000_000 {
            return None;
        }
        let secs = Duration::from_secs(self.mtime.unsigned_abs());
        let at = if self.mtime >= 0 {
            UNIX_EPOCH.checked_add(secs)
        } else {
            UNIX_EPOCH.checked_sub(secs)
        };
        at?.checked_add(Duration::from_nanos(u64::from(self.mtime_nanos)))
    }

    /// A file's, as its metadata says.
    #[cfg(unix)]
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileMeta {
        use std::os::unix::fs::MetadataExt;
        FileMeta {
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            mtime_nanos: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        }
    }
}

impl End {
    fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let totals = Totals { chunks: self.chunks, bytes: self.bytes, root: self.root };
        let mut out = postcard::to_stdvec(&totals)?;
        if let Some(meta) = &self.meta {
            out.extend_from_slice(&postcard::to_stdvec(meta)?);
        }
        Ok(out)
    }

    /// Either form: with or without the trailing [`FileMeta`].
    fn decode(body: &[u8]) -> Result<End, MessageError> {
        let bad = MessageError::Malformed { what: "End" };
        let (t, rest) = postcard::take_from_bytes::<Totals>(body).map_err(|_| bad)?;
        let meta = match rest {
            [] => None,
            rest => match postcard::take_from_bytes::<FileMeta>(rest) {
                Ok((meta, [])) => Some(meta),
                _ => return Err(MessageError::Malformed { what: "End" }),
            },
        };
        Ok(End { chunks: t.chunks, bytes: t.bytes, root: t.root, meta })
    }
}

/// The receiver's answer to an offer it has partly received already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resume {
    /// Chunks the receiver holds, verified: chunks `0..chunks`.
    pub chunks: u64,
    /// blake3 over their 32-byte hashes, in order (the root hash of that prefix): the
    /// sender checks its source against it before sending anything.
    pub root: [u8; 32],
}

/// A control message (everything but a chunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// See [`Offer`].
    Offer(Offer),
    /// The receiver accepts the offer.
    Accept,
    /// The receiver declines, with a reason for the sender's user.
    Decline(String),
    /// See [`End`].
    End(End),
    /// The peer failed and says why.
    Error(String),
    /// The receiver verified and wrote everything.
    Done,
    /// The receiver verified and handed to its output this many chunks; the sender
    /// keeps at most a window of chunks beyond it in flight.
    Ack(u64),
    /// See [`Resume`].
    Resume(Resume),
    /// Nothing to say; proof of life.
    Keepalive,
    /// The peer's user stopped it on purpose: stop, do not wait for a reconnection.
    Cancel,
    /// The receiver cannot take the offer for a local reason and may try again: the
    /// sender keeps waiting with the same code.
    Refuse(String),
}

/// Tag bytes.
pub(crate) mod tag {
    /// [`super::Control::Offer`]
    pub(crate) const OFFER: u8 = 0x01;
    /// [`super::Control::Accept`]
    pub(crate) const ACCEPT: u8 = 0x02;
    /// [`super::Control::Decline`]
    pub(crate) const DECLINE: u8 = 0x03;
    /// A chunk.
    pub(crate) const CHUNK: u8 = 0x04;
    /// [`super::Control::End`]
    pub(crate) const END: u8 = 0x05;
    /// [`super::Control::Error`]
    pub(crate) const ERROR: u8 = 0x06;
    /// [`super::Control::Done`]
    pub(crate) const DONE: u8 = 0x07;
    /// [`super::Control::Ack`]
    pub(crate) const ACK: u8 = 0x08;
    /// [`super::Control::Resume`]
    pub(crate) const RESUME: u8 = 0x09;
    /// [`super::Control::Keepalive`]
    pub(crate) const KEEPALIVE: u8 = 0x0a;
    /// [`super::Control::Cancel`]
    pub(crate) const CANCEL: u8 = 0x0b;
    /// [`super::Control::Refuse`]
    pub(crate) const REFUSE: u8 = 0x0c;
}

impl Control {
    /// The message's name, for errors.
    #[must_use]
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Control::Offer(_) => "Offer",
            Control::Accept => "Accept",
            Control::Decline(_) => "Decline",
            Control::End(_) => "End",
            Control::Error(_) => "Error",
            Control::Done => "Done",
            Control::Ack(_) => "Ack",
            Control::Resume(_) => "Resume",
            Control::Keepalive => "Keepalive",
            Control::Cancel => "Cancel",
            Control::Refuse(_) => "Refuse",
        }
    }

    /// True for messages that MUST travel in the LAST frame of their direction.
    #[must_use]
    pub(crate) fn is_last(&self) -> bool {
        matches!(
            self,
            Control::Decline(_)
                | Control::End(_)
                | Control::Error(_)
                | Control::Done
                | Control::Cancel
                | Control::Refuse(_)
        )
    }

    /// Tag byte followed by the body.
    #[must_use]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Control::Offer(o) => (tag::OFFER, postcard::to_stdvec(o)),
            Control::Accept => (tag::ACCEPT, Ok(Vec::new())),
            Control::Decline(r) => (tag::DECLINE, postcard::to_stdvec(cut(r))),
            Control::End(e) => (tag::END, e.encode()),
            Control::Error(m) => (tag::ERROR, postcard::to_stdvec(cut(m))),
            Control::Done => (tag::DONE, Ok(Vec::new())),
            Control::Ack(n) => (tag::ACK, postcard::to_stdvec(n)),
            Control::Resume(r) => (tag::RESUME, postcard::to_stdvec(r)),
            Control::Keepalive => (tag::KEEPALIVE, Ok(Vec::new())),
            Control::Cancel => (tag::CANCEL, Ok(Vec::new())),
            Control::Refuse(r) => (tag::REFUSE, postcard::to_stdvec(cut(r))),
        };
        let body = body.expect("serializing plain structs to a Vec cannot fail");
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(tag);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a control message; a chunk tag is [`MessageError::Unexpected`].
    ///
    /// # Errors
    /// Unknown tags, trailing bytes and malformed bodies.
    pub(crate) fn decode(buf: &[u8]) -> Result<Control, MessageError> {
        let (&tag, body) = buf.split_first().ok_or(MessageError::UnknownTag(0))?;
        fn body_of<'a, T: Deserialize<'a>>(
            body: &'a [u8],
            what: &'static str,
        ) -> Result<T, MessageError> {
            match postcard::take_from_bytes(body) {
                Ok((v, [])) => Ok(v),
                _ => Err(MessageError::Malformed { what }),
            }
        }
        fn empty(body: &[u8], what: &'static str, v: Control) -> Result<Control, MessageError> {
            if body.is_empty() { Ok(v) } else { Err(MessageError::Malformed { what }) }
        }
        fn reason(body: &[u8], what: &'static str) -> Result<String, MessageError> {
            bounded::take_hit();
            body_of::<bounded::BoundedReason>(body, what).map(|r| r.0).map_err(|e| {
                match bounded::take_hit() {
                    Some(limit) => MessageError::OverLimit { what, limit },
                    None => e,
                }
            })
        }
        match tag {
            tag::OFFER => {
                if body.len() > MAX_OFFER_LEN {
                    return Err(MessageError::OverLimit {
                        what: "Offer",
                        limit: "over 1048576 bytes",
                    });
                }
                bounded::take_hit();
                let offer: Offer =
                    body_of(body, "Offer").map_err(|e| match bounded::take_hit() {
                        Some(limit) => MessageError::OverLimit { what: "Offer", limit },
                        None => e,
                    })?;
                // One kind per top-level entry, or none at all for a file or a stream.
                if offer.kinds.len() != offer.entries.len() {
                    return Err(MessageError::Malformed { what: "Offer" });
                }
                Ok(Control::Offer(offer))
            }
            tag::ACCEPT => empty(body, "Accept", Control::Accept),
            tag::DECLINE => Ok(Control::Decline(reason(body, "Decline")?)),
            tag::END => Ok(Control::End(End::decode(body)?)),
            tag::ERROR => Ok(Control::Error(reason(body, "Error")?)),
            tag::DONE => empty(body, "Done", Control::Done),
            tag::ACK => Ok(Control::Ack(body_of(body, "Ack")?)),
            tag::RESUME => Ok(Control::Resume(body_of(body, "Resume")?)),
            tag::KEEPALIVE => empty(body, "Keepalive", Control::Keepalive),
            tag::CANCEL => empty(body, "Cancel", Control::Cancel),
            tag::REFUSE => Ok(Control::Refuse(reason(body, "Refuse")?)),
            tag::CHUNK => {
                Err(MessageError::Unexpected { got: "a chunk", expected: "a control message" })
            }
            other => Err(MessageError::UnknownTag(other)),
        }
    }
}

/// `reason`, cut to at most [`MAX_REASON_LEN`] bytes on a character boundary, so that
/// the peer decodes it.
fn cut(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Length of a chunk frame's plaintext before the payload: tag + fixed header.
pub(crate) const CHUNK_HEADER_LEN: usize = 1 + 8 + 1 + 4 + 32;

/// A frame shorter than this (ciphertext and tag) cannot hold a chunk, so a reader may
/// open it inline as a control message without handing it to a chunk worker.
pub(crate) const MIN_CHUNK_FRAME_LEN: usize = CHUNK_HEADER_LEN + 16;

/// Flag bit: the payload is zstd-compressed.
pub(crate) const FLAG_ZSTD: u8 = 0x01;

/// The fixed header of a chunk message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkHeader {
    /// Chunk index.
    pub index: u64,
    /// Flags ([`FLAG_ZSTD`]).
    pub flags: u8,
    /// Raw (uncompressed) length.
    pub raw_len: u32,
    /// blake3 of the raw chunk.
    pub hash: [u8; 32],
}

impl ChunkHeader {
    /// Writes tag and header into the first [`CHUNK_HEADER_LEN`] bytes of `out`.
    pub(crate) fn write(&self, out: &mut [u8; CHUNK_HEADER_LEN]) {
        out[0] = tag::CHUNK;
        out[1..9].copy_from_slice(&self.index.to_be_bytes());
        out[9] = self.flags;
        out[10..14].copy_from_slice(&self.raw_len.to_be_bytes());
        out[14..46].copy_from_slice(&self.hash);
    }

    /// Parses a chunk message's plaintext into header and payload.
    ///
    /// # Errors
    /// A non-chunk tag, a short frame, or unknown flag bits.
    pub(crate) fn parse(buf: &[u8]) -> Result<(ChunkHeader, &[u8]), MessageError> {
        if buf.len() < CHUNK_HEADER_LEN {
            return match buf.first() {
                Some(&tag::CHUNK) | None => Err(MessageError::Malformed { what: "Chunk" }),
                Some(&t) => Err(MessageError::UnknownTag(t)),
            };
        }
        let (head, payload) = buf.split_at(CHUNK_HEADER_LEN);
        if head[0] != tag::CHUNK {
            return Err(MessageError::Unexpected { got: "a control message", expected: "a chunk" });
        }
        let flags = head[9];
        if flags & !FLAG_ZSTD != 0 {
            return Err(MessageError::Malformed { what: "Chunk" });
        }
        let mut index = [0u8; 8];
        index.copy_from_slice(&head[1..9]);
        let mut raw_len = [0u8; 4];
        raw_len.copy_from_slice(&head[10..14]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&head[14..46]);
        Ok((
            ChunkHeader {
                index: u64::from_be_bytes(index),
                flags,
                raw_len: u32::from_be_bytes(raw_len),
                hash,
            },
            payload,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_round_trips() {
        let msgs = [
            Control::Offer(Offer {
                kind: Kind::Archive,
                name: "photos".into(),
                size: None,
                entries: vec!["photos".into()],
                chunk_size: 1 << 20,
                files: Some(3),
                kinds: vec![TopKind::Folder],
            }),
            Control::Offer(Offer {
                kind: Kind::Text,
                name: "text".into(),
                size: Some(5),
                entries: Vec::new(),
                chunk_size: 1 << 20,
                files: None,
                kinds: Vec::new(),
            }),
            Control::Accept,
            Control::Decline("no".into()),
            Control::End(End { chunks: 3, bytes: 3 << 20, root: [7; 32], meta: None }),
            Control::End(End {
                chunks: 3,
                bytes: 3 << 20,
                root: [7; 32],
                meta: Some(FileMeta { mode: 0o755, mtime: -1, mtime_nanos: 999_999_999 }),
            }),
            Control::Error("disk full".into()),
            Control::Done,
            Control::Ack(0),
            Control::Ack(u64::MAX),
            Control::Resume(Resume { chunks: 7, root: [1; 32] }),
            Control::Keepalive,
            Control::Cancel,
            Control::Refuse("exists".into()),
        ];
        for m in msgs {
            assert_eq!(Control::decode(&m.encode()).expect("decodes"), m);
        }
    }

    /// Issue 15, item 10: an End as senders sent it before it carried a file's mode
    /// and time (the same bytes as one without them now) still decodes.
    #[test]
    fn an_end_without_file_metadata_is_the_earlier_form() {
        let earlier = Totals { chunks: 2, bytes: 9, root: [5; 32] };
        let mut frame = vec![tag::END];
        frame.extend_from_slice(&postcard::to_stdvec(&earlier).expect("encode"));
        let end = End { chunks: 2, bytes: 9, root: [5; 32], meta: None };
        assert_eq!(Control::decode(&frame).expect("decodes"), Control::End(end));
        assert_eq!(Control::End(end).encode(), frame);
        let meta = FileMeta { mode: 0o640, mtime: 1_700_000_000, mtime_nanos: 5 };
        let at = meta.modified().expect("a valid time");
        assert_eq!(
            at.duration_since(std::time::UNIX_EPOCH).expect("after").as_nanos(),
            1_700_000_000_000_000_005
        );
        assert_eq!(FileMeta { mtime_nanos: 1_000_000_000, ..meta }.modified(), None);
    }

    /// Issue 15: the kinds keep their wire values (postcard's variant index), so an
    /// offer of an older sender still decodes; text is the next one.
    #[test]
    fn kinds_keep_their_wire_values() {
        let index = |k: Kind| postcard::to_stdvec(&k).expect("encode");
        assert_eq!(index(Kind::Stream), [0]);
        assert_eq!(index(Kind::File), [1]);
        assert_eq!(index(Kind::Archive), [2]);
        assert_eq!(index(Kind::Text), [3]);
        assert!(postcard::from_bytes::<Kind>(&[4]).is_err());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(Control::decode(&[]), Err(MessageError::UnknownTag(0))));
        assert!(matches!(Control::decode(&[0x99, 1, 2]), Err(MessageError::UnknownTag(0x99))));
        assert!(Control::decode(&[tag::ACCEPT, 0]).is_err(), "trailing bytes");
        assert!(Control::decode(&[tag::OFFER, 0xff, 0xff]).is_err());
        let mut end = Control::End(End { chunks: 1, bytes: 1, root: [0; 32], meta: None }).encode();
        end.truncate(end.len() - 1);
        assert!(Control::decode(&end).is_err(), "truncated body");
        let meta = Some(FileMeta { mode: 0o644, mtime: 1, mtime_nanos: 0 });
        let mut end = Control::End(End { chunks: 1, bytes: 1, root: [0; 32], meta }).encode();
        end.push(0);
        assert!(Control::decode(&end).is_err(), "trailing bytes after the file's metadata");
    }

    fn varint(out: &mut Vec<u8>, mut v: usize) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// An Offer frame by hand, as a peer may send it: an archive with a name of
    /// `name_len` bytes and `n` entries of `len` bytes each.
    fn offer_frame(name_len: usize, n: usize, len: usize) -> Vec<u8> {
        let mut b = vec![tag::OFFER, 2];
        varint(&mut b, name_len);
        b.resize(b.len() + name_len, b'n');
        b.push(0);
        varint(&mut b, n);
        for _ in 0..n {
            varint(&mut b, len);
            b.resize(b.len() + len, b'a');
        }
        varint(&mut b, 1 << 20);
        // files: None
        b.push(0);
        // kinds: one per entry (a folder each)
        varint(&mut b, n);
        b.resize(b.len() + n, 1);
        b
    }

    /// The error decoding `frame`; never prints what did decode (it may be huge).
    fn refused(frame: &[u8], why: &str) -> MessageError {
        match Control::decode(frame) {
            Ok(_) => panic!("{why}: decoded"),
            Err(e) => e,
        }
    }

    #[test]
    fn offers_are_bounded_before_they_are_decoded() {
        let at_limits = Control::decode(&offer_frame(4096, 65_536, 1)).expect("at the limits");
        assert!(matches!(at_limits, Control::Offer(ref o) if o.entries.len() == 65_536));
        let long = Control::decode(&offer_frame(1, 1, 4096)).expect("an entry at the limit");
        assert!(matches!(long, Control::Offer(ref o) if o.entries[0].len() == 4096));

        // Empty entries cost a byte each on the wire and 24 in memory.
        let e = refused(&offer_frame(0, 65_537, 0), "too many entries");
        assert!(e.to_string().contains("65536 entries"), "{e}");
        let e = refused(&offer_frame(4097, 1, 1), "a long name");
        assert!(e.to_string().contains("4096 bytes"), "{e}");
        let e = refused(&offer_frame(1, 1, 4097), "a long entry");
        assert!(e.to_string().contains("4096 bytes"), "{e}");
        // Refused on its length, before any decoding.
        let e = refused(&offer_frame(0, 2 << 20, 0), "over 1 MiB");
        assert!(e.to_string().contains("1048576 bytes"), "{e}");
    }

    #[test]
    fn reasons_are_bounded_both_ways() {
        for (make, what) in [
            (Control::Error as fn(String) -> Control, "Error"),
            (Control::Decline, "Decline"),
            (Control::Refuse, "Refuse"),
        ] {
            // A peer's long reason is refused before it is copied.
            let mut frame = make(String::new()).encode();
            frame.truncate(1);
            let long = "é".repeat(MAX_REASON_LEN);
            frame.extend_from_slice(&postcard::to_stdvec(&long).expect("encode"));
            let e = refused(&frame, "a long reason");
            assert!(matches!(e, MessageError::OverLimit { what: w, .. } if w == what), "{e}");
            assert!(e.to_string().contains("1024 bytes"), "{e}");
            // Our own long reasons are cut on a character boundary, and decode.
            let (Control::Error(got) | Control::Decline(got) | Control::Refuse(got)) =
                Control::decode(&make(long.clone()).encode()).expect("a cut reason decodes")
            else {
                panic!("{what} decoded as something else")
            };
            assert_eq!(got.len(), MAX_REASON_LEN);
            assert!(long.starts_with(&got));
        }
    }

    #[test]
    fn chunk_header_round_trips_and_checks() {
        let h = ChunkHeader { index: 42, flags: FLAG_ZSTD, raw_len: 1000, hash: [9; 32] };
        let mut buf = [0u8; CHUNK_HEADER_LEN];
        h.write(&mut buf);
        let mut frame = buf.to_vec();
        frame.extend_from_slice(b"payload");
        let (got, payload) = ChunkHeader::parse(&frame).expect("parses");
        assert_eq!(got, h);
        assert_eq!(payload, b"payload");

        assert!(ChunkHeader::parse(&frame[..10]).is_err(), "short");
        frame[9] = 0x80;
        assert!(ChunkHeader::parse(&frame).is_err(), "unknown flag");
        assert!(ChunkHeader::parse(&Control::Done.encode()).is_err(), "not a chunk");
    }
}
