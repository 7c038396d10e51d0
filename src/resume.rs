//! What a receiver keeps so that a later run can resume.
//!
//! A file: `FILE.pcp-part` (the verified bytes so far) and `FILE.pcp-part.manifest`
//! beside it. A directory: its staging directory `DIR/.pcp-<id>.partial/`, where entries
//! are extracted as chunks verify (see [`crate::sink`]), and
//! `DIR/.pcp-<id>.partial.manifest`. The tar bytes themselves are not kept: the manifest
//! holds the chunk hashes (so that the sender can still prove the prefix unchanged by its
//! root hash) and where extraction stands.
//!
//! A file's receiver also keeps `FILE.pcp-part.key`, its libp2p identity (its protobuf
//! encoding).
//!
//! # Why the identity is kept
//! Once a receiver has authenticated, the sender takes the rest of the transfer only
//! from the same peer id. A receiver killed and run again is a new process: it finds the
//! part file's key and reconnects under that identity, so that a sender still running
//! takes it back, and only it. The key file is created like the manifest (`0600`, anew,
//! never through a symlink) and read only if it is ours ([`fsx::open_ours`]: a regular
//! file, owned by us, writable by no one else, one link) and at most 4 KiB; a missing or
//! damaged one only means a fresh identity, which a rerun sender accepts anyway. One
//! that is not ours (planted by another user, say in `/tmp`) MUST never become the
//! receiver's identity: [`Part::load_identity`] refuses it, and the receiver stops with an
//! error naming it rather than silently resuming under another identity.
//!
//! # Manifest format
//!
//! | bytes | field |
//! |-------|-------|
//! | 8     | magic `b"PCPMAN3\n"` |
//! | 4     | header length `n`, big-endian, at most [`MAX_HEADER_LEN`] |
//! | n     | postcard [`Offer`]: what this part file is a part of (kind, size, chunk size, entries) |
//! | 16    | MAC: keyed blake3(`"pcp manifest header"` ‖ the `n` bytes), first 16 bytes |
//! | …     | records, each `tag` (1) ‖ body length `m` (4, big-endian, at most [`MAX_RECORD_LEN`]) ‖ body (`m`) ‖ MAC (16) |
//!
//! A record's MAC is the first 16 bytes of keyed blake3(`"pcp manifest record"` ‖ `i` as
//! u64 big-endian ‖ tag ‖ body), `i` being the record's position among all records.
//! The key ([`JournalKey`]) is derived from the receiver's libp2p identity, which is
//! kept beside the part file in the `0600` key file: only the run that holds that key
//! can write records a later run believes, so a manifest anyone else wrote (or edited)
//! reads as damage. Tags:
//!
//! | tag | body | written |
//! |-----|------|---------|
//! | `c` | the next chunk's blake3 hash (32): the `k`-th `c` record is chunk `k` | when the chunk's bytes are in the part file (a file), or handed to the extraction (a directory) |
//! | `e` | postcard [`EntryRecord`]: the tar-stream offset where the next entry begins, the name of the entry just extracted whole, and what it is ([`Extracted`]: a file's size and blake3, a directory's mode and mtime, a link) | after each entry |
//!
//! A manifest of an earlier format (`PCPMAN1`, `PCPMAN2`: unkeyed checks) reads as
//! damaged: a file's part is then re-hashed; a directory's staging cannot be trusted and
//! is kept until `--force` or removal.
//!
//! # Reading
//! A manifest is read as a stream, record by record, never whole: the journal of a
//! million entries is ~100 MB, and a receiver stays within its memory bound on resume.
//! What a directory's resume keeps in memory is bounded by the tree's depth: the
//! directories still open at the last entry (its ancestors, whose mode and mtime are
//! applied when extraction leaves them) and the few whose mode lacks owner `rwx`
//! (applied at commit), at most [`MAX_EXCEPTIONS`]. Every entry record is checked
//! against staging by a second pass ([`for_each_entry`]) before anything is resumed.
//!
//! # Invariants
//! - A record is appended only after its chunk's bytes were written to the part file, so
//!   a record never claims data the part file lacks.
//! - For a directory, an `e` record follows the `c` records of every chunk up to its
//!   offset (the chunks were handed over before their bytes were extracted), and is
//!   written only once its entry is whole in staging. So staging holds whole every entry
//!   before the last offset, and at most one entry after it, partly: the one that
//!   starts there. A rerun asks the sender to resume at the chunk holding that offset,
//!   checks that chunk's hash against its `c` record (the bytes before the offset came
//!   from it, and are not part of the prefix the sender proves), skips to the offset,
//!   and replaces that one entry.
//! - A resumed directory's manifest is rewritten with the prefix's `c` records first and
//!   then every `e` record of the earlier runs, so that each later rerun still checks
//!   every entry extracted so far.
//! - Nothing in the manifest is trusted on its own: on load the part file is re-hashed
//!   chunk by chunk, and only the longest prefix whose hashes match the records (or, when
//!   the records are damaged, whatever the part file holds in whole chunks) is kept. The
//!   sender then checks that prefix's root hash against its own source before it skips
//!   anything, so a changed source is reported, never mixed in. (A directory's staging
//!   cannot be re-hashed as a stream: each entry it holds is checked against its record
//!   instead — type, size, and a file's blake3.)
//! - A valid header that names another offer means the part file belongs to another
//!   transfer: [`ResumeError::OtherTransfer`], never a silent restart.
//! - The manifest is written whole to a temporary name (created anew, `0600`, never
//!   through a planted symlink) and renamed into place when a run (re)starts, then only
//!   appended to, through the descriptor that wrote it.
//! - [`load`] opens the part file and the manifest with [`fsx::open_ours`] and reads them
//!   only if they are ours: regular files owned by the effective uid, writable by no one
//!   else, with one link. A symlink, FIFO or device planted at either name is refused,
//!   never followed, blocked on or read forever; a file another user planted or can
//!   change is refused ([`ResumeError::NotOurs`]), never resumed from.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::archive::{Checkpoint, DirMeta, Extracted};
use crate::fsx;
use crate::message::{Kind, MAX_OFFER_LEN, Offer};
use crate::pipeline::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, RootHash};

pub(crate) mod part;
pub(crate) use part::Part;

const MAGIC: &[u8; 8] = b"PCPMAN3\n";
/// The longest manifest header: an offer, which is at most this long on the wire too.
pub(crate) const MAX_HEADER_LEN: usize = MAX_OFFER_LEN;
/// The longest record body: an entry record holds one tar name (the archive guard
/// refuses names over 64 KiB) and a few numbers. A longer length is damage, never an
/// allocation.
pub(crate) const MAX_RECORD_LEN: usize = 80 * 1024;
/// Directories whose mode lacks owner `rwx` that a resume keeps in memory, to apply at
/// commit; more in one journal is damage (the extraction refuses more than it allows).
pub(crate) const MAX_EXCEPTIONS: usize = 65_536;
/// A MAC's length in bytes.
const MAC_LEN: usize = 16;
/// A record's tag, length and MAC.
const RECORD_OVERHEAD: usize = 1 + 4 + MAC_LEN;
/// A chunk record, whole.
const CHUNK_RECORD_LEN: usize = RECORD_OVERHEAD + 32;
/// Record tags: see the module docs.
const CHUNK: u8 = b'c';
const ENTRY: u8 = b'e';
/// Domain strings of the MACs.
const HEADER_DOMAIN: &[u8] = b"pcp manifest header";
const RECORD_DOMAIN: &[u8] = b"pcp manifest record";

/// The key a receiver's journal is authenticated under: derived from the libp2p
/// identity kept beside the part file, so only a run holding that identity writes a
/// journal a later run trusts.
#[derive(Clone)]
pub(crate) struct JournalKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournalKey(..)")
    }
}

impl JournalKey {
    /// The journal key of `identity`.
    ///
    /// # Panics
    /// Never for pcp's own identities, which are ed25519 (the only kind that derives).
    #[must_use]
    pub(crate) fn of(identity: &libp2p::identity::Keypair) -> JournalKey {
        let key = identity
            .derive_secret(b"pcp/v1 resume journal mac")
            .expect("pcp identities are ed25519, which derive secrets");
        JournalKey(Zeroizing::new(key))
    }

    /// A key from raw bytes, for tests and the fuzz targets.
    #[cfg(any(test, feature = "fuzzing"))]
    #[must_use]
    pub(crate) fn from_bytes(key: [u8; 32]) -> JournalKey {
        JournalKey(Zeroizing::new(key))
    }

    fn mac(&self, domain: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(domain);
        for p in parts {
            h.update(p);
        }
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&h.finalize().as_bytes()[..MAC_LEN]);
        out
    }

    fn record_mac(&self, index: u64, tag: u8, body: &[u8]) -> [u8; MAC_LEN] {
        self.mac(RECORD_DOMAIN, &[&index.to_be_bytes(), &[tag], body])
    }
}

/// The key tests and the fuzz targets write and read journals under.
#[cfg(any(test, feature = "fuzzing"))]
#[must_use]
pub(crate) fn test_key() -> JournalKey {
    JournalKey::from_bytes([7; 32])
}

/// What an `e` record says: an entry extracted whole.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct EntryRecord {
    /// Tar-stream offset where the next entry begins.
    pub(crate) next: u64,
    /// The entry's name, as the archive gives it.
    pub(crate) name: String,
    /// What it is, with what is needed to check it in staging.
    pub(crate) what: Extracted,
}

/// Errors reading or writing resume state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The part file is from another transfer (another kind, size or chunk size).
    #[error("{} holds part of another transfer", crate::fsx::shown(.0))]
    OtherTransfer(PathBuf),
    /// The offer's chunk size is outside pcp's limits: loading with it would read
    /// nothing per step (0) or allocate without bound, so nothing is read at all.
    #[error(
        "a chunk size of {0} bytes is outside pcp's limits ({MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE})"
    )]
    ChunkSize(u32),
    /// A file is at the part, manifest or key file's name that is not ours to resume
    /// from (another user's, writable by others, hard-linked, not a regular file).
    #[error(transparent)]
    NotOurs(fsx::OwnershipError),
    /// Reading or writing the files failed.
    #[error("{}", crate::fsx::shown(.path))]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl From<fsx::OwnershipError> for ResumeError {
    fn from(e: fsx::OwnershipError) -> ResumeError {
        match e {
            fsx::OwnershipError::Io { path, source } => ResumeError::Io { path, source },
            not_ours => ResumeError::NotOurs(not_ours),
        }
    }
}

/// The verified prefix a receiver holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// Hashes of chunks `0..hashes.len()`.
    pub hashes: Vec<[u8; 32]>,
    /// Their total length in bytes.
    pub bytes: u64,
    /// For a directory whose staging an earlier run left: where its extraction stands.
    pub extraction: Option<Extraction>,
}

/// Where a directory's extraction stands (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extraction {
    /// Tar-stream offset where the next entry begins; everything before it is in staging.
    pub next: u64,
    /// The name of the last entry extracted whole, if any.
    pub last: Option<String>,
    /// How many entries were extracted whole (the `e` records).
    pub entries: u64,
    /// The directories whose own mode and mtime are still to be applied: those open at
    /// the last entry (its ancestors, and itself if a directory), outermost first, then
    /// those whose mode lacks owner `rwx` (applied only at commit). Bounded by the depth
    /// and [`MAX_EXCEPTIONS`], never one per directory of the tree.
    pub dirs: Vec<DirMeta>,
    /// The hash of the chunk that holds `next`, when `next` is inside it (not at its
    /// start): the bytes before `next` came from it.
    pub chunk: Option<[u8; 32]>,
}

impl Extraction {
    /// Bytes of the first chunk resent that were extracted already.
    #[must_use]
    pub(crate) fn skip(&self, chunk_size: u32) -> usize {
        // Less than a chunk, which is at most 16 MiB.
        (self.next % u64::from(chunk_size)) as usize
    }
}

impl Prefix {
    /// Chunks held.
    #[must_use]
    pub(crate) fn chunks(&self) -> u64 {
        self.hashes.len() as u64
    }

    /// The root hash over the held chunks, as the sender computes it over its source.
    #[must_use]
    pub(crate) fn root(&self) -> RootHash {
        let mut root = RootHash::default();
        for h in &self.hashes {
            root.push(h);
        }
        root
    }
}

/// Record `index` (its position among all records) with `tag` and `body`, appended to
/// `out`.
fn push_record(out: &mut Vec<u8>, key: &JournalKey, index: u64, tag: u8, body: &[u8]) {
    let len = u32::try_from(body.len()).expect("records are far smaller than 4 GiB");
    out.push(tag);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&key.record_mac(index, tag, body));
}

/// Whether two offers can be the same transfer: same kind, size, chunk size and
/// archive entries. The name is left out on purpose (a renamed file is still the same
/// data); whether the bytes are the same is for the prefix root hash to say.
#[must_use]
pub(crate) fn same_transfer(a: &Offer, b: &Offer) -> bool {
    a.kind == b.kind && a.size == b.size && a.chunk_size == b.chunk_size && a.entries == b.entries
}

/// Reads a manifest record by record, checking each MAC; never holds more than one
/// record.
struct Records<R> {
    r: R,
    key: JournalKey,
    /// The next record's position among all records.
    index: u64,
    /// Bytes read so far: where the next record starts.
    at: u64,
}

/// What the next record of a manifest is.
enum Next {
    /// An intact record: its tag; the body is in the caller's buffer.
    Record(u8),
    /// The manifest ends here, cleanly.
    End,
    /// The manifest ends inside a record: the process died mid-append. Not damage.
    Torn,
    /// A whole record whose MAC fails, or a length no pcp writes.
    Damaged,
}

impl<R: BufRead> Records<R> {
    /// Opens a manifest: its offer, if the header is intact, and the records after it.
    /// `None` when the header is damaged (or of another format).
    fn open(mut r: R, key: &JournalKey) -> io::Result<Option<(Offer, Records<R>)>> {
        let mut magic = [0u8; 8];
        let mut len = [0u8; 4];
        if !read_all(&mut r, &mut magic)? || &magic != MAGIC || !read_all(&mut r, &mut len)? {
            return Ok(None);
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_HEADER_LEN {
            return Ok(None);
        }
        let mut header = vec![0u8; n];
        let mut mac = [0u8; MAC_LEN];
        if !read_all(&mut r, &mut header)? || !read_all(&mut r, &mut mac)? {
            return Ok(None);
        }
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            &mac[..],
            &key.mac(HEADER_DOMAIN, &[&header])[..],
        )) {
            return Ok(None);
        }
        let Ok((offer, [])) = postcard::take_from_bytes::<Offer>(&header) else { return Ok(None) };
        // A header no pcp writes (a chunk size outside the limits) is damage, not another
        // transfer: the part file is re-hashed under the offer's own chunk size instead.
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&offer.chunk_size) {
            return Ok(None);
        }
        let at = (8 + 4 + n + MAC_LEN) as u64;
        Ok(Some((offer, Records { r, key: key.clone(), index: 0, at })))
    }

    /// Reads the next record's body into `body`.
    fn next(&mut self, body: &mut Vec<u8>) -> io::Result<Next> {
        let mut tag = [0u8; 1];
        if self.r.fill_buf()?.is_empty() {
            return Ok(Next::End);
        }
        let mut len = [0u8; 4];
        if !read_all(&mut self.r, &mut tag)? || !read_all(&mut self.r, &mut len)? {
            return Ok(Next::Torn);
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_RECORD_LEN {
            return Ok(Next::Damaged);
        }
        body.resize(len, 0);
        let mut mac = [0u8; MAC_LEN];
        if !read_all(&mut self.r, body)? || !read_all(&mut self.r, &mut mac)? {
            return Ok(Next::Torn);
        }
        let want = self.key.record_mac(self.index, tag[0], body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &want[..])) {
            return Ok(Next::Damaged);
        }
        self.index += 1;
        self.at += (RECORD_OVERHEAD + len) as u64;
        Ok(Next::Record(tag[0]))
    }
}

/// Fills `buf` from `r`: false if `r` ends first (after a partial read or none).
fn read_all(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// What a manifest says, as far as it can be trusted.
#[derive(Debug, Default)]
struct Parsed {
    offer: Option<Offer>,
    /// Chunk records up to the first damaged record; `damaged` tells whether one was.
    hashes: Vec<[u8; 32]>,
    damaged: bool,
    /// The last entry record up to there: where the next entry begins, and its name.
    entry: Option<(u64, String)>,
    /// Entry records up to there.
    entries: u64,
    /// The directories open at the last entry, outermost first.
    open: Vec<DirMeta>,
    /// The directories left whose mode lacks owner `rwx`: applied only at commit.
    exceptions: Vec<DirMeta>,
}

impl Parsed {
    /// Takes in one intact record; false if its body makes no sense.
    fn take(&mut self, tag: u8, body: &[u8]) -> bool {
        match tag {
            CHUNK => match <[u8; 32]>::try_from(body) {
                Ok(hash) => self.hashes.push(hash),
                Err(_) => return false,
            },
            ENTRY => match postcard::from_bytes::<EntryRecord>(body) {
                Ok(e) => return self.entry(e),
                Err(_) => return false,
            },
            _ => return false,
        }
        true
    }

    /// An entry extracted whole: the directories open are now its ancestors (and it,
    /// if a directory).
    fn entry(&mut self, e: EntryRecord) -> bool {
        let parts = name_parts(&e.name);
        let parent = &parts[..parts.len().saturating_sub(1)];
        while let Some(top) = self.open.last() {
            let inside = top.parts.len() <= parent.len()
                && top.parts.iter().zip(parent).all(|(a, b)| a.as_str() == *b);
            if inside {
                break;
            }
            let left = self.open.pop().expect("the loop saw it");
            if left.mode & 0o700 != 0o700 {
                if self.exceptions.len() == MAX_EXCEPTIONS {
                    return false;
                }
                self.exceptions.push(left);
            }
        }
        if let Extracted::Dir(meta) = e.what {
            self.open.push(meta);
        }
        self.entry = Some((e.next, e.name));
        self.entries += 1;
        true
    }
}

/// A tar entry name's components, as the extraction splits it (`""` and `.` dropped).
fn name_parts(name: &str) -> Vec<&str> {
    name.split('/').filter(|p| !p.is_empty() && *p != ".").collect()
}

/// Reads the manifest from `r` (empty and damaged when it is not one of ours).
fn parse(r: impl BufRead, key: &JournalKey) -> io::Result<Parsed> {
    let Some((offer, mut records)) = Records::open(r, key)? else {
        return Ok(Parsed { damaged: true, ..Parsed::default() });
    };
    let mut parsed = Parsed { offer: Some(offer), ..Parsed::default() };
    let mut body = Vec::new();
    loop {
        match records.next(&mut body)? {
            Next::Record(tag) if parsed.take(tag, &body) => {}
            Next::Record(_) | Next::Damaged => {
                parsed.damaged = true;
                break;
            }
            Next::End | Next::Torn => break,
        }
    }
    Ok(parsed)
}

/// The offer an intact manifest header names: the pure parser behind [`load`], for the
/// fuzz targets (`fuzz/`), which need it to call [`load`] with a matching offer.
#[cfg(feature = "fuzzing")]
pub(crate) fn manifest_offer(bytes: &[u8], key: &JournalKey) -> Option<Offer> {
    Records::open(bytes, key).ok().flatten().map(|(offer, _)| offer)
}

/// Works out what of `part` can be resumed for `offer`, trusting only a manifest
/// written under `key`.
///
/// Re-hashes the part file in chunks of the offer's chunk size; keeps the longest
/// prefix that agrees with the manifest's records, or every whole chunk when the
/// manifest is missing or damaged. A short last piece counts only when it completes
/// a file of the offered size. For a directory, says where its extraction stands;
/// the caller MUST check staging against the entry records ([`for_each_entry`])
/// before resuming from it.
///
/// # Errors
/// [`ResumeError::ChunkSize`] when `offer`'s chunk size is outside pcp's limits (the
/// loop below would never advance on 0); [`ResumeError::OtherTransfer`] when a valid
/// manifest names another offer; I/O errors.
pub(crate) fn load(part: &Path, offer: &Offer, key: &JournalKey) -> Result<Prefix, ResumeError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&offer.chunk_size) {
        return Err(ResumeError::ChunkSize(offer.chunk_size));
    }
    let parsed = read_manifest(part, offer, key)?;
    if offer.kind == Kind::Archive {
        return Ok(extraction(part, offer, parsed));
    }
    if parsed.offer.is_some() && !parsed.damaged {
        tracing::debug!(records = parsed.hashes.len(), "manifest is intact");
    } else {
        tracing::info!("manifest missing or damaged: re-hashing the part file");
    }

    let io_err = |source| ResumeError::Io { path: part.to_owned(), source };
    let mut file = fsx::open_ours(part, false)?;
    let chunk = offer.chunk_size as usize;
    let mut prefix = Prefix::default();
    let mut buf = vec![0u8; chunk];
    loop {
        let filled = crate::source::read_full(&mut file, &mut buf).map_err(io_err)?;
        let whole = filled == chunk
            || (filled > 0
                && matches!(offer.kind, Kind::File | Kind::Text)
                && offer.size == Some(prefix.bytes + filled as u64));
        if !whole {
            break;
        }
        let hash = *blake3::hash(&buf[..filled]).as_bytes();
        let i = prefix.hashes.len();
        let trusted = parsed.offer.is_some() && !parsed.damaged;
        if trusted && parsed.hashes.get(i) != Some(&hash) {
            // Past the records (data written, record not yet) or disagreeing: stop at
            // what the manifest vouches for.
            break;
        }
        prefix.hashes.push(hash);
        prefix.bytes += filled as u64;
        if filled < chunk {
            break;
        }
    }
    Ok(prefix)
}

/// Opens the manifest beside `part` for reading: `None` when there is none.
fn open_manifest(part: &Path) -> Result<Option<BufReader<File>>, ResumeError> {
    match fsx::open_ours(&Part::at(part).manifest(), false) {
        Ok(file) => Ok(Some(BufReader::with_capacity(64 * 1024, file))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The manifest beside `part`, parsed (empty and damaged when there is none).
///
/// # Errors
/// [`ResumeError::OtherTransfer`] when its header names another offer; I/O errors.
fn read_manifest(part: &Path, offer: &Offer, key: &JournalKey) -> Result<Parsed, ResumeError> {
    let Some(file) = open_manifest(part)? else {
        return Ok(Parsed { damaged: true, ..Parsed::default() });
    };
    let io_err = |source| ResumeError::Io { path: Part::at(part).manifest(), source };
    let parsed = parse(file, key).map_err(io_err)?;
    if let Some(theirs) = &parsed.offer
        && !same_transfer(theirs, offer)
    {
        return Err(ResumeError::OtherTransfer(part.to_owned()));
    }
    Ok(parsed)
}

/// A directory's resume point: the chunks before the one holding the last recorded
/// offset are the prefix. Nothing to resume (an empty prefix and no extraction) when
/// the manifest's header is unreadable, when `staging` is not a real directory, or when
/// the records do not cover the offset (which pcp never writes).
fn extraction(staging: &Path, offer: &Offer, parsed: Parsed) -> Prefix {
    let real_dir = std::fs::symlink_metadata(staging).is_ok_and(|m| m.is_dir());
    if parsed.offer.is_none() || !real_dir {
        return Prefix::default();
    }
    let next = parsed.entry.as_ref().map_or(0, |(next, _)| *next);
    let chunk = u64::from(offer.chunk_size);
    let (n, inside) = (next / chunk, !next.is_multiple_of(chunk));
    let Ok(n) = usize::try_from(n) else { return Prefix::default() };
    if parsed.hashes.len() < n + usize::from(inside) {
        return Prefix::default();
    }
    let held = inside.then(|| parsed.hashes[n]);
    let Parsed { mut hashes, entry, entries, mut open, exceptions, .. } = parsed;
    hashes.truncate(n);
    let last = entry.map(|(_, name)| name);
    open.extend(exceptions);
    Prefix {
        bytes: n as u64 * chunk,
        hashes,
        extraction: Some(Extraction { next, last, entries, dirs: open, chunk: held }),
    }
}

/// Calls `each` with every entry record of the manifest beside `part`, in order, up to
/// the first damaged one: the entries [`load`] counted (`extraction.entries` of them).
/// Reads the manifest as a stream.
///
/// # Errors
/// I/O errors reading the manifest, and whatever `each` returns.
pub(crate) fn for_each_entry<E: From<ResumeError>>(
    part: &Path,
    key: &JournalKey,
    upto: u64,
    mut each: impl FnMut(&EntryRecord) -> Result<(), E>,
) -> Result<(), E> {
    let io_err = |source| ResumeError::Io { path: Part::at(part).manifest(), source };
    let Some(file) = open_manifest(part)? else { return Ok(()) };
    let Some((_, mut records)) = Records::open(file, key).map_err(io_err)? else {
        return Ok(());
    };
    let mut body = Vec::new();
    let mut seen = 0;
    while seen < upto {
        let Next::Record(tag) = records.next(&mut body).map_err(io_err)? else { break };
        if tag == ENTRY {
            let Ok(e) = postcard::from_bytes::<EntryRecord>(&body) else { break };
            each(&e)?;
            seen += 1;
        }
    }
    Ok(())
}

/// Appends records to a manifest.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    /// The part it is the manifest of.
    part: Part,
    /// The manifest.
    path: PathBuf,
    key: JournalKey,
    /// Records written so far: a record's MAC covers its position.
    written: u64,
}

impl Journal {
    /// Writes a fresh manifest for `offer` holding `prefix` (and, for a directory, where
    /// its extraction stands: every entry record of the earlier runs is carried over,
    /// read from the manifest being replaced), atomically, and opens it for appending.
    ///
    /// # Errors
    /// I/O errors, naming the manifest.
    pub(crate) fn create(
        part: &Path,
        offer: &Offer,
        prefix: &Prefix,
        key: &JournalKey,
    ) -> Result<Journal, ResumeError> {
        let part = Part::at(part);
        let path = part.manifest();
        let err = |source| ResumeError::Io { path: path.clone(), source };
        let tmp = part.manifest_tmp();
        let tmp_err = |source| ResumeError::Io { path: tmp.clone(), source };
        // Whatever holds the temporary name (a run that died here, or a symlink planted to
        // redirect the write) is unlinked, never written through; should something appear
        // again before the create, `create_new` fails instead of following it.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(tmp_err(e)),
            _ => {}
        }
        let file = fsx::create_new_private(&tmp).map_err(tmp_err)?;
        let mut journal =
            Journal { file, part: part.clone(), path: path.clone(), key: key.clone(), written: 0 };
        let mut out = BufWriter::with_capacity(64 * 1024, &journal.file);
        let header = postcard::to_stdvec(offer).expect("serializing an offer cannot fail");
        let len = u32::try_from(header.len()).expect("an offer is far smaller than 4 GiB");
        let mut bytes = Vec::with_capacity(16 + header.len() + CHUNK_RECORD_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&key.mac(HEADER_DOMAIN, &[&header]));
        out.write_all(&bytes).map_err(tmp_err)?;
        let mut push = |out: &mut BufWriter<&File>, tag: u8, body: &[u8]| {
            let mut bytes = Vec::with_capacity(RECORD_OVERHEAD + body.len());
            push_record(&mut bytes, key, journal.written, tag, body);
            journal.written += 1;
            out.write_all(&bytes)
        };
        for h in &prefix.hashes {
            push(&mut out, CHUNK, h).map_err(tmp_err)?;
        }
        if let Some(x) = &prefix.extraction {
            // The chunk holding `next` stays recorded: a later rerun checks it again.
            if let Some(h) = &x.chunk {
                push(&mut out, CHUNK, h).map_err(tmp_err)?;
            }
            let copied = for_each_entry(part.path(), key, x.entries, |e| {
                let body = postcard::to_stdvec(e).expect("serializing an entry cannot fail");
                push(&mut out, ENTRY, &body).map_err(tmp_err)
            });
            copied?;
        }
        out.flush().map_err(tmp_err)?;
        drop(out);
        // rename replaces a symlink at the manifest's name, never its target. The open
        // descriptor is the renamed file: records are appended through it, with no reopen
        // by name.
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(journal)
    }

    /// Records the next chunk's hash. Call only after its bytes are in the part file
    /// (for a directory: handed to the extraction).
    ///
    /// # Errors
    /// I/O errors, naming the manifest.
    pub(crate) fn append(&mut self, hash: &[u8; 32]) -> Result<(), ResumeError> {
        self.write(CHUNK, hash)
    }

    /// Records an entry extracted whole. Call only once it is whole in staging.
    ///
    /// # Errors
    /// I/O errors, naming the manifest.
    pub(crate) fn extracted(&mut self, done: &Checkpoint) -> Result<(), ResumeError> {
        let record =
            EntryRecord { next: done.next, name: done.name.clone(), what: done.entry.clone() };
        let body = postcard::to_stdvec(&record).expect("serializing an entry cannot fail");
        self.write(ENTRY, &body)
    }

    /// Appends one record, in one write.
    fn write(&mut self, tag: u8, body: &[u8]) -> Result<(), ResumeError> {
        let mut bytes = Vec::with_capacity(RECORD_OVERHEAD + body.len());
        push_record(&mut bytes, &self.key, self.written, tag, body);
        self.written += 1;
        self.file
            .write_all(&bytes)
            .map_err(|source| ResumeError::Io { path: self.path.clone(), source })
    }

    /// Removes the manifest, and the identity kept beside it: the transfer completed
    /// (or its part file is gone).
    pub(crate) fn remove(self) {
        self.part.discard_side_files();
    }
}

#[cfg(test)]
mod tests {
    use super::part::MAX_KEY_FILE;
    use super::*;

    fn manifest_path(part: &Path) -> PathBuf {
        Part::at(part).manifest()
    }

    fn key_path(part: &Path) -> PathBuf {
        Part::at(part).key()
    }

    fn load_identity(part: &Path) -> Result<Option<libp2p::identity::Keypair>, ResumeError> {
        Part::at(part).load_identity()
    }

    fn save_identity(part: &Path, key: &libp2p::identity::Keypair) -> Result<(), ResumeError> {
        Part::at(part).save_identity(key)
    }

    fn offer(size: u64) -> Offer {
        Offer {
            kind: Kind::File,
            name: "f".into(),
            size: Some(size),
            entries: vec![],
            chunk_size: 1 << 16,
            files: None,
            kinds: vec![],
        }
    }

    fn write_part(part: &Path, data: &[u8], offer: &Offer, records: usize) {
        std::fs::write(part, data).expect("part");
        let mut j = Journal::create(part, offer, &Prefix::default(), &test_key()).expect("journal");
        for c in data.chunks(offer.chunk_size as usize).take(records) {
            j.append(blake3::hash(c).as_bytes()).expect("append");
        }
    }

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::Rng::fill(&mut rand::thread_rng(), v.as_mut_slice());
        v
    }

    #[test]
    fn intact_manifest_gives_the_recorded_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        let o = offer(10 << 16);
        let data = random(5 << 16);
        write_part(&part, &data, &o, 4);
        let p = load(&part, &o, &test_key()).expect("load");
        assert_eq!(p.chunks(), 4, "data past the last record is not trusted");
        assert_eq!(p.bytes, 4 << 16);
        assert_eq!(p.hashes[3], *blake3::hash(&data[3 << 16..4 << 16]).as_bytes());
    }

    #[test]
    fn damaged_manifest_means_rehashing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        let o = offer(10 << 16);
        let data = random((5 << 16) + 100);
        write_part(&part, &data, &o, 5);
        let m = manifest_path(&part);
        let mut bytes = std::fs::read(&m).expect("read");
        let mid = bytes.len() - 2 * CHUNK_RECORD_LEN + 5;
        bytes[mid] ^= 0xff;
        std::fs::write(&m, &bytes).expect("write");
        let p = load(&part, &o, &test_key()).expect("load");
        assert_eq!(p.chunks(), 5, "every whole chunk of the part file, re-hashed");
        assert_eq!(p.hashes[4], *blake3::hash(&data[4 << 16..5 << 16]).as_bytes());

        std::fs::write(&m, b"garbage").expect("write");
        assert_eq!(load(&part, &o, &test_key()).expect("load").chunks(), 5);
        std::fs::remove_file(&m).expect("rm");
        assert_eq!(load(&part, &o, &test_key()).expect("load").chunks(), 5);
    }

    #[test]
    fn a_changed_part_file_stops_the_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        let o = offer(10 << 16);
        let mut data = random(6 << 16);
        write_part(&part, &data, &o, 6);
        data[(2 << 16) + 7] ^= 1;
        std::fs::write(&part, &data).expect("rewrite");
        assert_eq!(load(&part, &o, &test_key()).expect("load").chunks(), 2);
    }

    #[test]
    fn another_transfer_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        write_part(&part, &random(1 << 16), &offer(10 << 16), 1);
        let r = load(&part, &offer(11 << 16), &test_key());
        assert!(matches!(r, Err(ResumeError::OtherTransfer(_))));
    }

    #[test]
    fn a_short_last_chunk_counts_only_when_it_completes_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        let data = random((2 << 16) + 10);
        let o = offer(data.len() as u64);
        write_part(&part, &data, &o, 3);
        assert_eq!(load(&part, &o, &test_key()).expect("load").chunks(), 3);
        let bigger = offer(data.len() as u64 + 5);
        write_part(&part, &data, &bigger, 3);
        assert_eq!(load(&part, &bigger, &test_key()).expect("load").chunks(), 2);
    }

    #[test]
    fn a_symlink_planted_at_the_manifest_temporary_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("victim");
        let mut tmp = manifest_path(&part).into_os_string();
        tmp.push(".tmp");
        std::os::unix::fs::symlink(&victim, &tmp).expect("plant");
        let o = offer(10 << 16);
        let mut j = Journal::create(&part, &o, &Prefix::default(), &test_key()).expect("journal");
        j.append(&[7; 32]).expect("append");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious", "the target is untouched");
        assert!(std::fs::symlink_metadata(manifest_path(&part)).expect("manifest").is_file());
    }

    /// Runs [`load`] on a thread: what it refuses must not block or loop forever.
    fn load_in_time(part: &Path, offer: &Offer) -> Result<Prefix, ResumeError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (part, offer) = (part.to_owned(), offer.clone());
        std::thread::spawn(move || {
            let _ = tx.send(load(&part, &offer, &test_key()));
        });
        rx.recv_timeout(std::time::Duration::from_secs(5)).expect("load returns in time")
    }

    #[test]
    fn load_refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        let o = offer(10 << 16);

        crate::fsx::mkfifo(&part);
        let e = load_in_time(&part, &o).expect_err("a FIFO is refused, without blocking");
        assert!(matches!(e, ResumeError::NotOurs(_)), "{e:?}");
        std::fs::remove_file(&part).expect("rm");

        std::os::unix::fs::symlink("/dev/zero", &part).expect("plant");
        let e = load_in_time(&part, &o).expect_err("a symlink to a device is refused");
        assert!(matches!(e, ResumeError::NotOurs(_)), "{e:?}");
        std::fs::remove_file(&part).expect("rm");

        let real = dir.path().join("real");
        std::fs::write(&real, random(2 << 16)).expect("write");
        std::os::unix::fs::symlink(&real, &part).expect("plant");
        assert!(load_in_time(&part, &o).is_err(), "a symlink to a regular file is refused");
        std::fs::remove_file(&part).expect("rm");

        // A planted manifest is refused the same way.
        std::fs::write(&part, random(2 << 16)).expect("write");
        crate::fsx::mkfifo(&manifest_path(&part));
        assert!(load_in_time(&part, &o).is_err(), "a FIFO manifest is refused");
        std::fs::remove_file(manifest_path(&part)).expect("rm");
        std::os::unix::fs::symlink("/dev/zero", manifest_path(&part)).expect("plant");
        assert!(load_in_time(&part, &o).is_err(), "a symlinked manifest is refused");
        std::fs::remove_file(manifest_path(&part)).expect("rm");
        assert_eq!(load_in_time(&part, &o).expect("a plain part file loads").chunks(), 2);
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// Issue 14, item 7: a part file or manifest another user planted (with the true
    /// first chunk, say) or can still change is refused, never resumed from.
    #[test]
    fn load_refuses_a_part_or_manifest_that_is_not_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        let o = offer(10 << 16);
        let data = random(2 << 16);
        write_part(&part, &data, &o, 2);
        assert_eq!(load(&part, &o, &test_key()).expect("ours").chunks(), 2);

        let not_ours = |what: &str| {
            let e = load(&part, &o, &test_key()).expect_err(what);
            assert!(matches!(e, ResumeError::NotOurs(_)), "{what}: {e:?}");
            e.to_string()
        };
        chmod(&part, 0o666);
        assert!(not_ours("a planted 0666 part file").contains("is writable by"));
        chmod(&part, 0o600);
        let manifest = manifest_path(&part);
        chmod(&manifest, 0o606);
        assert!(not_ours("a manifest others may write").contains(".manifest is writable by"));
        chmod(&manifest, 0o600);

        let other = dir.path().join("other-name");
        std::fs::hard_link(&part, &other).expect("link");
        assert!(not_ours("a hard-linked part file").ends_with("has 2 links"));
        std::fs::remove_file(&other).expect("rm");
        assert_eq!(load(&part, &o, &test_key()).expect("ours again").chunks(), 2);

        if crate::fsx::as_root("load_refuses_a_part_or_manifest_that_is_not_ours") {
            std::os::unix::fs::chown(&part, Some(65534), None).expect("chown");
            assert!(not_ours("another user's part").ends_with("is owned by uid 65534, not you"));
            std::os::unix::fs::chown(&part, Some(0), None).expect("chown");
            std::os::unix::fs::chown(&manifest, Some(65534), None).expect("chown");
            assert!(not_ours("another user's manifest").contains(".manifest is owned by uid"));
        }
    }

    #[test]
    fn errors_show_peer_names_without_escapes() {
        let path = PathBuf::from("dir/a\x1b[2Jb\u{202E}txt.pcp-part");
        let errors = [
            ResumeError::Io { path: path.clone(), source: io::Error::other("x") },
            ResumeError::OtherTransfer(path),
        ];
        for e in errors {
            let shown = e.to_string();
            assert!(!shown.contains(['\x1b', '\u{202E}']), "{shown:?}");
            assert!(shown.contains("?[2J"), "{shown:?}");
        }
    }

    #[test]
    fn absurd_chunk_sizes_are_refused_not_looped_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        std::fs::write(&part, random(3 << 16)).expect("part");
        for size in [0, 1, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, u32::MAX] {
            let mut o = offer(10 << 16);
            o.chunk_size = size;
            let e = load_in_time(&part, &o).expect_err("an absurd chunk size is refused");
            assert!(matches!(e, ResumeError::ChunkSize(s) if s == size), "{e:?}");
            assert!(e.to_string().contains("outside pcp's limits"), "{e}");
        }
    }

    #[test]
    fn a_manifest_naming_an_absurd_chunk_size_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        let o = offer(10 << 16);
        std::fs::write(&part, random(3 << 16)).expect("part");
        let mut zero = o.clone();
        zero.chunk_size = 0;
        // A well-formed header with a valid check, as no pcp writes it.
        Journal::create(&part, &zero, &Prefix::default(), &test_key()).expect("journal");
        let p = load_in_time(&part, &o).expect("re-hashed, not another transfer");
        assert_eq!(p.chunks(), 3);
    }

    #[test]
    fn the_identity_is_kept_privately_and_never_through_a_planted_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        assert!(load_identity(&part).expect("none").is_none(), "none yet");
        let key = libp2p::identity::Keypair::generate_ed25519();
        save_identity(&part, &key).expect("save");
        let meta = std::fs::symlink_metadata(key_path(&part)).expect("key file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let loaded = load_identity(&part).expect("load").expect("a key");
        assert_eq!(loaded.public(), key.public());

        // A symlink planted at the key's name is replaced, never written through, and
        // never read as a key.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("victim");
        std::fs::remove_file(key_path(&part)).expect("rm");
        std::os::unix::fs::symlink(&victim, key_path(&part)).expect("plant");
        let e = load_identity(&part).expect_err("a symlink is not followed");
        assert!(matches!(e, ResumeError::NotOurs(_)), "{e:?}");
        save_identity(&part, &key).expect("save");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        assert!(std::fs::symlink_metadata(key_path(&part)).expect("key").is_file());

        // Damaged: no identity (a fresh one is used), no error.
        std::fs::write(key_path(&part), b"garbage").expect("write");
        assert!(load_identity(&part).expect("damaged").is_none());
        std::fs::write(key_path(&part), vec![0u8; MAX_KEY_FILE as usize + 1]).expect("write");
        assert!(load_identity(&part).expect("too long").is_none());

        // Removing the journal removes the identity with it.
        save_identity(&part, &key).expect("save");
        let j = Journal::create(&part, &offer(1 << 16), &Prefix::default(), &test_key())
            .expect("journal");
        j.remove();
        assert!(!manifest_path(&part).exists() && !key_path(&part).exists());
    }

    /// Issue 14, item 7: a key file another user planted, or can change, never becomes
    /// the receiver's identity: it is refused, not read.
    #[test]
    fn a_planted_key_file_is_never_an_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        let planted = libp2p::identity::Keypair::generate_ed25519();
        let bytes = planted.to_protobuf_encoding().expect("encode");
        std::fs::write(key_path(&part), &bytes).expect("plant");
        chmod(&key_path(&part), 0o666);
        let e = load_identity(&part).expect_err("a key file others may write");
        assert!(matches!(e, ResumeError::NotOurs(_)), "{e:?}");
        assert!(e.to_string().contains(".key is writable by"), "{e}");
        chmod(&key_path(&part), 0o600);
        std::fs::hard_link(key_path(&part), dir.path().join("copy")).expect("link");
        assert!(load_identity(&part).is_err(), "a hard-linked key file");
        std::fs::remove_file(dir.path().join("copy")).expect("rm");
        assert!(load_identity(&part).expect("ours").is_some());
        if crate::fsx::as_root("a_planted_key_file_is_never_an_identity") {
            std::os::unix::fs::chown(key_path(&part), Some(65534), Some(65534)).expect("chown");
            let e = load_identity(&part).expect_err("another user's key file");
            assert!(e.to_string().ends_with("is owned by uid 65534, not you"), "{e}");
        }
    }

    #[test]
    fn prefix_root_matches_a_fresh_root() {
        let hashes = vec![[1u8; 32], [2u8; 32]];
        let mut r = RootHash::default();
        r.push(&hashes[0]);
        r.push(&hashes[1]);
        assert_eq!(Prefix { hashes, bytes: 0, extraction: None }.root().finish(), r.finish());
    }

    fn archive_offer() -> Offer {
        Offer {
            kind: Kind::Archive,
            name: "t".into(),
            size: None,
            entries: vec!["t".into()],
            chunk_size: 1 << 16,
            files: None,
            kinds: vec![crate::message::TopKind::Folder],
        }
    }

    fn file_entry() -> Extracted {
        Extracted::File { size: 3, hash: *blake3::hash(b"abc").as_bytes() }
    }

    fn dir_meta(name: &str) -> DirMeta {
        DirMeta { parts: vec!["t".into(), name.into()], mode: 0o750, mtime: 1_700_000_000 }
    }

    /// A staging directory and a journal: chunks 0..4 handed over, then `t/d` (a
    /// directory) and `t/d/f` extracted whole, the next entry starting inside chunk 2.
    fn journaled(dir: &Path) -> (PathBuf, Vec<[u8; 32]>, u64) {
        let staging = dir.join(".pcp-x.partial");
        std::fs::create_dir(&staging).expect("mkdir");
        let o = archive_offer();
        let mut j =
            Journal::create(&staging, &o, &Prefix::default(), &test_key()).expect("journal");
        let hashes: Vec<[u8; 32]> = (0..4u8).map(|i| [i; 32]).collect();
        let next = (2 << 16) + 1536;
        for h in &hashes[..3] {
            j.append(h).expect("append");
        }
        j.extracted(&Checkpoint {
            next: 512,
            name: "t/d".into(),
            entry: Extracted::Dir(dir_meta("d")),
        })
        .expect("entry");
        j.extracted(&Checkpoint { next, name: "t/d/f".into(), entry: file_entry() })
            .expect("entry");
        j.append(&hashes[3]).expect("append");
        (staging, hashes, next)
    }

    #[test]
    fn a_directory_resumes_at_the_chunk_holding_the_last_entry_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, hashes, next) = journaled(dir.path());
        let p = load(&staging, &archive_offer(), &test_key()).expect("load");
        assert_eq!(p.hashes, hashes[..2], "the chunks before the one holding the offset");
        assert_eq!(p.bytes, 2 << 16);
        let x = p.extraction.clone().expect("an extraction");
        assert_eq!(x.next, next);
        assert_eq!(x.last.as_deref(), Some("t/d/f"));
        assert_eq!(x.dirs, [dir_meta("d")], "t/d is open: its last entry t/d/f is inside it");
        assert_eq!(x.chunk, Some(hashes[2]), "the chunk holding the offset, to check again");
        assert_eq!(x.skip(1 << 16), 1536);

        // The journal a resumed run writes says the same, and takes records after it.
        let mut j = Journal::create(&staging, &archive_offer(), &p, &test_key()).expect("rewrite");
        assert_eq!(load(&staging, &archive_offer(), &test_key()).expect("load"), p);
        j.append(&hashes[3]).expect("append");
        j.extracted(&Checkpoint {
            next: 3 << 16,
            name: "t/e".into(),
            entry: Extracted::Dir(dir_meta("e")),
        })
        .expect("entry");
        let q = load(&staging, &archive_offer(), &test_key()).expect("load");
        assert_eq!(q.hashes, hashes[..3]);
        let y = q.extraction.expect("an extraction");
        assert_eq!((y.next, y.chunk), (3 << 16, None), "at a chunk boundary nothing is skipped");
        // `t/d` was left when `t/e` came: its mode was applied then, and only the
        // directory still open is to be applied later.
        assert_eq!(y.dirs, [dir_meta("e")]);
        assert_eq!(y.entries, 3);
        let mut names = Vec::new();
        for_each_entry(&staging, &test_key(), y.entries, |e| {
            names.push(e.name.clone());
            Ok::<_, ResumeError>(())
        })
        .expect("entries");
        assert_eq!(names, ["t/d", "t/d/f", "t/e"], "a rewrite carries every earlier entry over");
    }

    #[test]
    fn a_journal_written_under_another_key_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, _, _) = journaled(dir.path());
        let other = JournalKey::from_bytes([8; 32]);
        assert_eq!(load(&staging, &archive_offer(), &other).expect("load"), Prefix::default());

        // A file's part under a foreign key is re-hashed whole: the records vouch for
        // nothing.
        let part = dir.path().join("x.pcp-part");
        let o = offer(10 << 16);
        let data = random(5 << 16);
        write_part(&part, &data, &o, 2);
        assert_eq!(load(&part, &o, &test_key()).expect("load").chunks(), 2);
        assert_eq!(load(&part, &o, &other).expect("load").chunks(), 5);
    }

    #[test]
    fn a_forged_record_stops_the_journal_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, hashes, _) = journaled(dir.path());
        let m = manifest_path(&staging);
        let mut bytes = std::fs::read(&m).expect("read");
        // Someone who can write the file but lacks the key appends an entry record with
        // a well-formed body and an unkeyed check.
        let forged = EntryRecord { next: 9 << 16, name: "t/evil".into(), what: Extracted::Symlink };
        let body = postcard::to_stdvec(&forged).expect("serialize");
        let mut record = vec![ENTRY];
        record.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
        record.extend_from_slice(&body);
        record.extend_from_slice(&blake3::hash(&body).as_bytes()[..MAC_LEN]);
        bytes.extend_from_slice(&record);
        std::fs::write(&m, &bytes).expect("write");
        let x = load(&staging, &archive_offer(), &test_key()).expect("load");
        let e = x.extraction.expect("extraction");
        assert_eq!(e.last.as_deref(), Some("t/d/f"), "the forged entry is not believed");
        assert_eq!(x.hashes, hashes[..2]);
    }

    #[test]
    fn a_record_longer_than_any_pcp_writes_is_damage_not_an_allocation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, _, next) = journaled(dir.path());
        let m = manifest_path(&staging);
        let mut bytes = std::fs::read(&m).expect("read");
        bytes.push(ENTRY);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        bytes.extend_from_slice(&[0; 64]);
        std::fs::write(&m, &bytes).expect("write");
        let x = load(&staging, &archive_offer(), &test_key()).expect("load");
        assert_eq!(x.extraction.expect("extraction").next, next);
    }

    #[test]
    fn only_open_and_read_only_directories_are_kept_for_a_deep_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = dir.path().join(".pcp-x.partial");
        std::fs::create_dir(&staging).expect("mkdir");
        let o = archive_offer();
        let mut j = Journal::create(&staging, &o, &Prefix::default(), &test_key()).expect("j");
        // The chunks that hold the entries' 5,000 KiB of headers.
        for _ in 0..80 {
            j.append(&[0; 32]).expect("append");
        }
        // 200 chains of 50 directories each, depth first; the 7th chain's top is read-only.
        let mut at = 0;
        for chain in 0..200 {
            let mut parts = vec!["t".to_owned(), format!("c{chain}")];
            for depth in 0..50 {
                if depth > 0 {
                    parts.push(format!("d{depth}"));
                }
                let mode = if chain == 7 && depth == 0 { 0o555 } else { 0o755 };
                let meta = DirMeta { parts: parts.clone(), mode, mtime: 1 };
                at += 512;
                let done =
                    Checkpoint { next: at, name: parts.join("/"), entry: Extracted::Dir(meta) };
                j.extracted(&done).expect("entry");
            }
        }
        let x = load(&staging, &o, &test_key()).expect("load").extraction.expect("extraction");
        assert_eq!(x.entries, 200 * 50);
        assert_eq!(x.dirs.len(), 50 + 1, "the last chain's 50, and the read-only one");
        assert_eq!(x.dirs[0].parts, ["t", "c199"]);
        assert_eq!(x.dirs[50].parts, ["t", "c7"]);
        assert_eq!(x.dirs[50].mode, 0o555);
    }

    #[test]
    fn a_directory_journal_stops_at_a_damaged_record_and_a_torn_one_is_no_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, _, next) = journaled(dir.path());
        let m = manifest_path(&staging);
        let whole = std::fs::read(&m).expect("read");
        // Torn inside the last chunk record: the entry records before it stand.
        std::fs::write(&m, &whole[..whole.len() - 10]).expect("write");
        let x = load(&staging, &archive_offer(), &test_key())
            .expect("load")
            .extraction
            .expect("extraction");
        assert_eq!(x.next, next);
        // A flipped byte in the last entry record: the one before it is where we stand.
        let at = whole.len() - CHUNK_RECORD_LEN - 6;
        let mut bad = whole.clone();
        bad[at] ^= 0xff;
        std::fs::write(&m, &bad).expect("write");
        let p = load(&staging, &archive_offer(), &test_key()).expect("load");
        let x = p.extraction.expect("extraction");
        assert_eq!((x.next, x.last.as_deref()), (512, Some("t/d")));
        assert_eq!(p.hashes.len(), 0, "offset 512 is inside chunk 0");
    }

    #[test]
    fn a_directory_without_a_journal_or_staging_has_nothing_to_resume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, _, _) = journaled(dir.path());
        std::fs::remove_file(manifest_path(&staging)).expect("rm");
        assert_eq!(load(&staging, &archive_offer(), &test_key()).expect("load"), Prefix::default());

        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, _, _) = journaled(dir.path());
        std::fs::remove_dir(&staging).expect("rmdir");
        std::os::unix::fs::symlink(dir.path(), &staging).expect("plant");
        let p = load(&staging, &archive_offer(), &test_key()).expect("load");
        assert_eq!(p, Prefix::default(), "a symlink at the staging name is not resumed");
        let mut other = archive_offer();
        other.entries = vec!["u".into()];
        assert!(matches!(load(&staging, &other, &test_key()), Err(ResumeError::OtherTransfer(_))));
    }
}
