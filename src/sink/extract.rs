//! A directory extracted as its chunks verify: the writer thread feeds each verified
//! chunk's plaintext, in order, to [`Unpacker`] (which holds every rule for writing a
//! peer's tar stream), extracting into a staging directory `DIR/.pcp-<id>.partial/` that
//! the commit moves into place. The tar bytes are never stored: one write of every byte,
//! free disk of about the tree's size.
//!
//! Invariants:
//! - The tar crate pulls bytes through [`Chunks`], a blocking reader over the sink's
//!   bounded channel: extraction runs on the writer thread, never on the async reactor,
//!   and a slow disk slows the sender through that channel and the acks.
//! - A chunk's record goes to the journal when the reader takes the chunk, before any of
//!   its bytes are extracted; an entry's record, once the entry is whole in staging
//!   ([`crate::resume`] says why this makes a rerun safe).
//! - A resumed extraction starts at the recorded entry offset inside the first chunk
//!   resent, and only if that chunk is the one recorded: the bytes before the offset,
//!   extracted by the earlier run, came from it, and the sender's prefix proof does not
//!   cover them.
//! - Staging and the journal outlive a failure or an abort, for a later run; they go
//!   only with a commit.

use std::cell::RefCell;
use std::io::{self, Read};
use std::path::Path;

use tokio::sync::mpsc;

use super::{Msg, SinkError, Written};
use crate::archive::{Announced, ArchiveError, Unpacker};
use crate::message::Offer;
use crate::pool::Buf;
use crate::resume::{Journal, JournalKey, Part, Prefix};

/// An extraction ready to take chunks.
pub(super) struct Extraction {
    unpacker: Unpacker,
    staging: Part,
    journal: Option<Journal>,
    /// Tar-stream offset of the first byte extraction gets.
    base: u64,
    /// Bytes of the first chunk that were extracted already.
    skip: usize,
    /// The hash the first chunk must have, when `skip` bytes of it were extracted.
    resent: Option<[u8; 32]>,
    force: bool,
}

impl Extraction {
    /// Opens `staging` to resume where the journal's prefix says, or creates it (with
    /// `force`, over whatever was there).
    ///
    /// # Errors
    /// Staging exists but cannot be resumed ([`SinkError::Exists`] without `force`), or
    /// cannot be created; the journal cannot be written.
    pub(super) fn open(
        dir: &Path,
        staging: Part,
        announced: Announced,
        journal: Option<(&Offer, &Prefix, &JournalKey)>,
        force: bool,
    ) -> Result<Extraction, SinkError> {
        let resumed = journal.and_then(|(_, prefix, _)| prefix.extraction.clone());
        if resumed.is_none() && force {
            staging.discard_data();
        }
        let dirs = resumed.as_ref().map(|r| r.dirs.clone());
        let unpacker = Unpacker::resumable(dir, staging.path().to_owned(), announced, dirs)
            .map_err(|e| match e {
                ArchiveError::Staging { source, .. }
                    if source.kind() == io::ErrorKind::AlreadyExists =>
                {
                    SinkError::Exists(staging.path().to_owned())
                }
                e => e.into(),
            })?;
        let mut unpacker = unpacker;
        if let (Some(r), Some((_, _, key))) = (&resumed, journal) {
            unpacker.resumed_after(Some(r.entries));
            // Staging is adopted only as the journal describes it: every entry an earlier
            // run extracted whole is checked against its record (type, size, a file's
            // blake3) beneath the staging handle, before anything is resumed from it.
            crate::resume::for_each_entry(staging.path(), key, r.entries, |e| {
                let parts: Vec<String> = e
                    .name
                    .split('/')
                    .filter(|p| !p.is_empty() && *p != ".")
                    .map(str::to_owned)
                    .collect();
                unpacker.check(&parts, &e.what).map_err(SinkError::from)
            })?;
        }
        let chunk_size = journal.map(|(offer, _, _)| offer.chunk_size);
        let journal = match journal {
            Some((offer, prefix, key)) => {
                Some(Journal::create(staging.path(), offer, prefix, key)?)
            }
            None => None,
        };
        let (base, skip, resent) = match (chunk_size, resumed) {
            (Some(size), Some(r)) => (r.next, r.skip(size), r.chunk),
            _ => (0, 0, None),
        };
        Ok(Extraction { unpacker, staging, journal, base, skip, resent, force })
    }

    /// Extracts chunks as they come; on `Commit`, moves the result into place. An
    /// archive refused as unsafe or broken leaves nothing: resuming it would only fail
    /// the same way. Anything else (a local error, a stop) keeps staging for a rerun.
    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>) -> Result<Written, SinkError> {
        let journal = RefCell::new(self.journal.take());
        let staging = self.staging.clone();
        let result = self.extract(rx, &journal);
        if let Err(SinkError::Archive(e)) = &result
            && e.is_refusal()
        {
            staging.discard_data();
            if let Some(j) = journal.into_inner() {
                j.remove();
            }
        }
        result
    }

    fn extract(
        self,
        rx: mpsc::Receiver<Msg>,
        journal: &RefCell<Option<Journal>>,
    ) -> Result<Written, SinkError> {
        let mut unpacker = self.unpacker;
        let mut chunks = Chunks {
            rx,
            held: None,
            at: 0,
            skip: self.skip,
            resent: self.resent,
            journal,
            committed: false,
            failed: None,
        };
        let record = |done: &_| -> Result<(), SinkError> {
            match journal.borrow_mut().as_mut() {
                Some(j) => Ok(j.extracted(done)?),
                None => Ok(()),
            }
        };
        let unpacked = unpacker.unpack_from(&mut chunks, self.base, record);
        // The reader's own failure says more than the I/O error the tar crate made of it.
        if let Some(e) = chunks.failed.take() {
            return Err(e);
        }
        unpacked?;
        let paths = unpacker.commit(self.force)?;
        if let Some(j) = journal.take() {
            j.remove();
        }
        Ok(Written { paths })
    }
}

/// The verified chunks, as one byte stream for the tar crate; see the module docs.
struct Chunks<'a> {
    rx: mpsc::Receiver<Msg>,
    /// The chunk being read, and how far.
    held: Option<Buf>,
    at: usize,
    skip: usize,
    resent: Option<[u8; 32]>,
    journal: &'a RefCell<Option<Journal>>,
    /// `Commit` arrived: the stream is whole, and every later read is its end.
    committed: bool,
    failed: Option<SinkError>,
}

impl Chunks<'_> {
    /// Takes in the next chunk: checks or records it, and skips what was extracted.
    fn take(&mut self, data: Buf, hash: [u8; 32]) -> Result<(), SinkError> {
        match self.resent.take() {
            Some(want) if want != hash => return Err(SinkError::Diverged),
            // Recorded by the earlier run, and kept in the journal written for this one.
            Some(_) => {}
            None => {
                if let Some(j) = self.journal.borrow_mut().as_mut() {
                    j.append(&hash)?;
                }
            }
        }
        self.at = std::mem::take(&mut self.skip).min(data.len());
        self.held = Some(data);
        Ok(())
    }

    fn fail(&mut self, e: SinkError) -> io::Error {
        let shown = io::Error::other(e.to_string());
        self.failed = Some(e);
        shown
    }
}

impl Read for Chunks<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(held) = &self.held
                && self.at < held.len()
            {
                let n = out.len().min(held.len() - self.at);
                out[..n].copy_from_slice(&held[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            // Its buffer goes back to the receiver's pool.
            self.held = None;
            if self.committed {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Msg::Data(data, hash)) => {
                    if let Err(e) = self.take(data, hash) {
                        return Err(self.fail(e));
                    }
                }
                Some(Msg::Commit(_)) => self.committed = true,
                None => return Err(self.fail(SinkError::Stopped)),
            }
        }
    }
}
