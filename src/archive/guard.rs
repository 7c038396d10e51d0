//! A watch on a peer's tar stream, below the `tar` crate: it reads each 512-byte header
//! as the stream passes and refuses what the crate would otherwise trust.
//!
//! The `tar` crate reads the body of a GNU long-name (`L`) or long-link (`K`) entry and
//! of a PAX extended header (`x`) whole into memory, sized by the header: a 1 GiB `L`
//! entry of zeros is 1 GiB allocated. [`HeaderGuard`] refuses any extension entry (`L`,
//! `K`, `x`, `g`) whose size field exceeds [`MAX_EXTENSION`] when the last byte of its
//! header passes, so the crate never gets that header, let alone its body.
//!
//! # Invariants
//!
//! - The guard MUST know where every header starts, exactly as the crate does: the
//!   next header is `512 + size rounded up to 512` after this one. Two things would move
//!   it elsewhere in the crate, and both are refused, so the two never disagree: a PAX
//!   `size` record (which overrides the next entry's size; the guard refuses any PAX body
//!   holding `size=`), and a GNU sparse entry (whose extension blocks follow its header).
//!   pcp's own [`super::pack()`] writes neither.
//! - After the first all-zero block (the crate's end of archive) nothing is inspected:
//!   the rest is padding that [`super::Unpacker::unpack_from`] reads and drops.
//! - A refusal is sticky: every later read fails too, and [`HeaderGuard::refused`] holds
//!   the typed error, which `unpack` returns instead of the crate's I/O error.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use tar::{EntryType, Header};

use super::ArchiveError;

/// Largest extension body accepted, in bytes: 16 times `PATH_MAX`, far more than any
/// name pcp could write on the receiver.
pub(super) const MAX_EXTENSION: u64 = 64 * 1024;

const BLOCK: u64 = 512;

/// See the module docs.
pub(super) struct HeaderGuard<R> {
    inner: R,
    /// Stream offset of the next byte `inner` returns.
    pos: u64,
    /// Stream offset of the next header block.
    next_header: u64,
    /// The header being read.
    header: [u8; BLOCK as usize],
    /// The PAX body being read, to look for a `size` record: where it ends, and its bytes.
    pax: Option<(u64, Vec<u8>)>,
    /// The end-of-archive block has passed.
    ended: bool,
    refused: Option<ArchiveError>,
    probe: Probe,
}

/// What the guard saw, for telling the tar crate's errors apart once it has the guard:
/// a corrupt header (peer bytes, shown as fixed text) from a failed read (ours).
#[derive(Debug, Clone, Default)]
pub(super) struct Probe(Rc<Seen>);

#[derive(Debug, Default)]
struct Seen {
    /// Stream offset of the last header block that arrived whole.
    last_header: Cell<u64>,
    /// The inner reader failed.
    read_failed: Cell<bool>,
}

impl Probe {
    /// The archive error for an error the tar crate returned, with `base` the stream
    /// offset the guard started at. A header error's text holds the peer's bytes (a
    /// name, a field): it is logged sanitized, and the error says only where.
    pub(super) fn error(&self, base: u64, source: io::Error) -> ArchiveError {
        if self.0.read_failed.get() {
            return ArchiveError::Stream { source };
        }
        let offset = base + self.0.last_header.get();
        tracing::debug!(offset, detail = %crate::term::sanitize(&source.to_string()), "corrupt tar header");
        ArchiveError::CorruptHeader { offset }
    }
}

impl<R: Read> HeaderGuard<R> {
    pub(super) fn new(inner: R) -> HeaderGuard<R> {
        HeaderGuard {
            inner,
            pos: 0,
            next_header: 0,
            header: [0; BLOCK as usize],
            pax: None,
            ended: false,
            refused: None,
            probe: Probe::default(),
        }
    }

    /// A view of what the guard sees, that outlives the guard's move into the crate.
    pub(super) fn probe(&self) -> Probe {
        self.probe.clone()
    }

    /// Why the stream was refused, if it was.
    pub(super) fn refused(&mut self) -> Option<ArchiveError> {
        self.refused.take()
    }

    /// Follows `data`, which starts at stream offset `self.pos`.
    fn watch(&mut self, mut data: &[u8]) -> Result<(), ArchiveError> {
        let mut at = self.pos;
        while !data.is_empty() && !self.ended {
            if at < self.next_header {
                // An entry's data (or its padding).
                let n =
                    usize::try_from(self.next_header - at).unwrap_or(usize::MAX).min(data.len());
                if let Some((end, body)) = self.pax.as_mut() {
                    let want = usize::try_from(end.saturating_sub(at)).unwrap_or(usize::MAX);
                    body.extend_from_slice(&data[..n.min(want)]);
                    if at + n as u64 >= *end {
                        check_pax(body)?;
                        self.pax = None;
                    }
                }
                data = &data[n..];
                at += n as u64;
                continue;
            }
            // In the header block at `next_header`; `off` bytes of it seen already.
            let off = (at - self.next_header) as usize;
            let n = (BLOCK as usize - off).min(data.len());
            self.header[off..off + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            at += n as u64;
            if off + n == BLOCK as usize {
                self.inspect()?;
            }
        }
        Ok(())
    }

    /// A whole header has arrived: refuse it, or work out where the next one starts.
    fn inspect(&mut self) -> Result<(), ArchiveError> {
        let body_start = self.next_header + BLOCK;
        self.probe.0.last_header.set(self.next_header);
        if self.header.iter().all(|&b| b == 0) {
            self.ended = true;
            return Ok(());
        }
        let header = Header::from_byte_slice(&self.header);
        let Ok(size) = header.entry_size() else {
            // The crate fails on this header too: nothing more to follow.
            self.ended = true;
            return Ok(());
        };
        let kind = header.entry_type();
        let what = match kind {
            EntryType::GNULongName => Some("GNU long name"),
            EntryType::GNULongLink => Some("GNU long link"),
            EntryType::XHeader => Some("PAX extended header"),
            EntryType::XGlobalHeader => Some("PAX global header"),
            _ => None,
        };
        if let Some(what) = what
            && size > MAX_EXTENSION
        {
            return Err(ArchiveError::ExtensionTooLarge { what, size, max: MAX_EXTENSION });
        }
        if kind == EntryType::GNUSparse {
            return Err(ArchiveError::BadHeader("GNU sparse entries are not accepted"));
        }
        if matches!(kind, EntryType::XHeader | EntryType::XGlobalHeader) {
            self.pax = Some((body_start + size, Vec::with_capacity(size as usize)));
            if size == 0 {
                self.pax = None;
            }
        }
        let padded = size
            .checked_next_multiple_of(BLOCK)
            .ok_or(ArchiveError::BadHeader("an entry's size overflows the stream offset"))?;
        self.next_header = body_start
            .checked_add(padded)
            .ok_or(ArchiveError::BadHeader("an entry's size overflows the stream offset"))?;
        Ok(())
    }
}

/// A PAX body MUST NOT carry a `size` record: the crate would take the next entry's size
/// from it, and the guard would lose track of the headers. Looking for the bytes `size=`
/// anywhere (which also catches `GNU.sparse.size=`) is stricter than any record parser.
fn check_pax(body: &[u8]) -> Result<(), ArchiveError> {
    if body.windows(5).any(|w| w == b"size=") {
        return Err(ArchiveError::BadHeader("PAX size records are not accepted"));
    }
    Ok(())
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.refused.is_some() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the archive was refused"));
        }
        let n = self.inner.read(buf).inspect_err(|_| self.probe.0.read_failed.set(true))?;
        if let Err(e) = self.watch(&buf[..n]) {
            // The bytes are withheld: the crate never sees the refused header whole.
            let msg = e.to_string();
            self.refused = Some(e);
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EntryType, size: u64) -> Vec<u8> {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..1].copy_from_slice(b"x");
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    /// Reads `stream` through a guard in reads of `step` bytes.
    fn through(stream: &[u8], step: usize) -> Result<usize, ArchiveError> {
        let mut g = HeaderGuard::new(stream);
        let mut buf = vec![0u8; step];
        let mut total = 0;
        loop {
            match g.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(_) => return Err(g.refused().expect("a refusal is recorded")),
            }
        }
    }

    #[test]
    fn follows_headers_across_any_read_size() {
        // A file of 1000 bytes whose data holds what looks like a huge `L` header: the
        // guard knows it is data.
        let mut s = header(EntryType::Regular, 1000);
        let mut data = header(EntryType::GNULongName, 1 << 30);
        data.resize(1000, 7);
        s.extend_from_slice(&data);
        s.resize(s.len().next_multiple_of(512), 0);
        // A long name at the limit is fine, and so is the entry it names.
        s.extend_from_slice(&header(EntryType::GNULongName, MAX_EXTENSION));
        s.resize(s.len() + MAX_EXTENSION as usize, b'n');
        s.extend_from_slice(&header(EntryType::Regular, 0));
        let ok_len = s.len();
        s.extend_from_slice(&[0; 1024]);
        // After the end, anything goes.
        s.extend_from_slice(&header(EntryType::GNULongName, 1 << 30));
        for step in [1, 7, 511, 512, 513, 4096, 1 << 20] {
            assert_eq!(through(&s, step).expect("accepted"), s.len(), "step {step}");
        }

        // The same stream with the last header before the end made too large.
        let mut bad = s[..ok_len - 512].to_vec();
        bad.extend_from_slice(&header(EntryType::XHeader, MAX_EXTENSION + 1));
        for step in [1, 100, 512, 4096] {
            let err = through(&bad, step).expect_err("refused");
            assert!(matches!(err, ArchiveError::ExtensionTooLarge { .. }), "{err:?}");
        }
    }

    #[test]
    fn refuses_pax_size_records_and_sparse_entries() {
        let record = b"12 size=100\n";
        let mut s = header(EntryType::XHeader, record.len() as u64);
        s.extend_from_slice(record);
        s.resize(1024, 0);
        for step in [1, 5, 4096] {
            let err = through(&s, step).expect_err("refused");
            assert!(matches!(err, ArchiveError::BadHeader(_)), "{err:?}");
        }
        let record = b"20 path=a/long/name\n";
        let mut s = header(EntryType::XHeader, record.len() as u64);
        s.extend_from_slice(record);
        s.resize(1024, 0);
        assert!(through(&s, 3).is_ok(), "other records pass");

        let err = through(&header(EntryType::GNUSparse, 0), 512).expect_err("refused");
        assert!(matches!(err, ArchiveError::BadHeader(_)), "{err:?}");
    }
}
