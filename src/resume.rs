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
//! never through a symlink) and read only if it is a regular file; a missing or damaged
//! one only means a fresh identity, which a rerun sender accepts anyway.
//!
//! # Manifest format
//!
//! | bytes | field |
//! |-------|-------|
//! | 8     | magic `b"PCPMAN2\n"` |
//! | 4     | header length `n`, big-endian |
//! | n     | postcard [`Offer`]: what this part file is a part of (kind, size, chunk size, entries) |
//! | 4     | check: the first 4 bytes of blake3(`"pcp manifest header"` ‖ the `n` bytes) |
//! | …     | records, each `tag` (1) ‖ body length `m` (4, big-endian) ‖ body (`m`) ‖ check (4) |
//!
//! A record's check is the first 4 bytes of blake3(`"pcp manifest record"` ‖ `i` as u64
//! big-endian ‖ tag ‖ body), `i` being the record's position among all records. Tags:
//!
//! | tag | body | written |
//! |-----|------|---------|
//! | `c` | the next chunk's blake3 hash (32): the `k`-th `c` record is chunk `k` | when the chunk's bytes are in the part file (a file), or handed to the extraction (a directory) |
//! | `d` | postcard [`DirMeta`]: a directory entry's mode and mtime | with the `e` record of that entry, in one write |
//! | `e` | postcard `(u64, String)`: the tar-stream offset where the next entry begins, and the name of the entry just extracted whole | after each entry |
//!
//! A manifest of the first format (`PCPMAN1`, 36-byte chunk records) reads as damaged: a
//! file's part is then re-hashed; a directory's staging cannot be trusted and is kept
//! until `--force` or removal.
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
//! - Nothing in the manifest is trusted on its own: on load the part file is re-hashed
//!   chunk by chunk, and only the longest prefix whose hashes match the records (or, when
//!   the records are damaged, whatever the part file holds in whole chunks) is kept. The
//!   sender then checks that prefix's root hash against its own source before it skips
//!   anything, so a changed source is reported, never mixed in. (A directory's staging
//!   cannot be re-hashed: its records up to the first damaged one are what it resumes
//!   from.)
//! - A valid header that names another offer means the part file belongs to another
//!   transfer: [`ResumeError::OtherTransfer`], never a silent restart.
//! - The manifest is written whole to a temporary name (created anew, `0600`, never
//!   through a planted symlink) and renamed into place when a run (re)starts, then only
//!   appended to, through the descriptor that wrote it.
//! - [`load`] opens the part file and the manifest with `O_NOFOLLOW | O_NONBLOCK` and reads
//!   them only if they are regular files (see [`crate::fsx`]): a symlink, FIFO or device
//!   planted at either name is refused, never followed, blocked on or read forever.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::archive::{Checkpoint, DirMeta, Extracted};
use crate::fsx;
use crate::message::{Kind, Offer};
use crate::pipeline::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, RootHash};

const MAGIC: &[u8; 8] = b"PCPMAN2\n";
/// A record's tag, length and check.
const RECORD_OVERHEAD: usize = 1 + 4 + 4;
/// A chunk record, whole.
const CHUNK_RECORD_LEN: usize = RECORD_OVERHEAD + 32;
/// Record tags: see the module docs.
const CHUNK: u8 = b'c';
const DIR: u8 = b'd';
const ENTRY: u8 = b'e';

/// Errors reading or writing resume state.
#[derive(Debug, thiserror::Error)]
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

/// The identity file's path for a part file.
#[must_use]
pub(crate) fn key_path(part: &Path) -> PathBuf {
    let mut s = part.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

/// The identity an earlier run kept beside `part`, if a readable one is there.
#[must_use]
pub(crate) fn load_identity(part: &Path) -> Option<libp2p::identity::Keypair> {
    let file = fsx::open_regular(&key_path(part), false).ok()?;
    let mut bytes = Vec::new();
    // An ed25519 key is 68 bytes encoded: anything much longer is not one.
    file.take(4096).read_to_end(&mut bytes).ok()?;
    libp2p::identity::Keypair::from_protobuf_encoding(&bytes).ok()
}

/// Keeps `key` beside `part` for a later run ([`load_identity`]), replacing what was
/// there (never writing through it).
///
/// # Errors
/// I/O errors, naming the key file.
pub(crate) fn save_identity(
    part: &Path,
    key: &libp2p::identity::Keypair,
) -> Result<(), ResumeError> {
    let path = key_path(part);
    let err = |source| ResumeError::Io { path: path.clone(), source };
    if load_identity(part).is_some_and(|k| k.public() == key.public()) {
        return Ok(());
    }
    let bytes = key.to_protobuf_encoding().map_err(|e| err(io::Error::other(e)))?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let mut file = fsx::create_new_private(&path).map_err(err)?;
    file.write_all(&bytes).map_err(err)
}

/// Removes the files kept beside `part` for a resume (manifest and identity).
pub(crate) fn remove_side_files(part: &Path) {
    let _ = std::fs::remove_file(manifest_path(part));
    let _ = std::fs::remove_file(key_path(part));
}

/// The manifest's path for a part file.
#[must_use]
pub(crate) fn manifest_path(part: &Path) -> PathBuf {
    let mut s = part.as_os_str().to_owned();
    s.push(".manifest");
    PathBuf::from(s)
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
    /// Every directory entry extracted so far.
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

fn check4(domain: &[u8], parts: &[&[u8]]) -> [u8; 4] {
    let mut h = blake3::Hasher::new();
    h.update(domain);
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 4];
    out.copy_from_slice(&h.finalize().as_bytes()[..4]);
    out
}

/// Record `index` (its position among all records) with `tag` and `body`.
fn record(index: u64, tag: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("records are far smaller than 4 GiB");
    let mut r = Vec::with_capacity(RECORD_OVERHEAD + body.len());
    r.push(tag);
    r.extend_from_slice(&len.to_be_bytes());
    r.extend_from_slice(body);
    r.extend_from_slice(&check4(b"pcp manifest record", &[&index.to_be_bytes(), &[tag], body]));
    r
}

/// The next record of `bytes`, if whole and intact: its tag, body, and what follows.
fn take_record(index: u64, bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len.checked_add(4)? {
        return None;
    }
    let (body, rest) = rest.split_at(len);
    let (check, rest) = rest.split_at(4);
    let want = check4(b"pcp manifest record", &[&index.to_be_bytes(), &[tag], body]);
    (check == want).then_some((tag, body, rest))
}

/// Whether two offers can be the same transfer: same kind, size, chunk size and
/// archive entries. The name is left out on purpose (a renamed file is still the same
/// data); whether the bytes are the same is for the prefix root hash to say.
#[must_use]
pub(crate) fn same_transfer(a: &Offer, b: &Offer) -> bool {
    a.kind == b.kind && a.size == b.size && a.chunk_size == b.chunk_size && a.entries == b.entries
}

/// Whether `bytes` holds a whole record (intact or not) at its start.
fn is_whole(bytes: &[u8]) -> bool {
    let len = bytes.get(1..5).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
    len.is_some_and(|len| bytes.len() as u64 >= RECORD_OVERHEAD as u64 + u64::from(len))
}

/// What a manifest says, as far as it can be trusted.
#[derive(Default)]
struct Parsed {
    offer: Option<Offer>,
    /// Chunk records up to the first damaged record; `damaged` tells whether one was.
    hashes: Vec<[u8; 32]>,
    damaged: bool,
    /// Directory records, and the last entry record, up to there.
    dirs: Vec<DirMeta>,
    entry: Option<(u64, String)>,
}

fn parse(bytes: &[u8]) -> Parsed {
    let bad = Parsed { damaged: true, ..Parsed::default() };
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else { return bad };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else { return bad };
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len + 4 {
        return bad;
    }
    let (header, rest) = rest.split_at(len);
    let (check, mut records) = rest.split_at(4);
    if check != check4(b"pcp manifest header", &[header]) {
        return bad;
    }
    let Ok((offer, [])) = postcard::take_from_bytes::<Offer>(header) else { return bad };
    // A header no pcp writes (a chunk size outside the limits) is damage, not another
    // transfer: the part file is re-hashed under the offer's own chunk size instead.
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&offer.chunk_size) {
        return bad;
    }
    let mut parsed = Parsed { offer: Some(offer), ..Parsed::default() };
    let mut index = 0;
    while !records.is_empty() {
        let Some((tag, body, more)) = take_record(index, records) else {
            // A torn last record (the process died mid-append) is not damage.
            parsed.damaged = is_whole(records);
            break;
        };
        if !parsed.take(tag, body) {
            parsed.damaged = true;
            break;
        }
        records = more;
        index += 1;
    }
    parsed
}

impl Parsed {
    /// Takes in one intact record; false if its body makes no sense.
    fn take(&mut self, tag: u8, body: &[u8]) -> bool {
        match tag {
            CHUNK => match <[u8; 32]>::try_from(body) {
                Ok(hash) => self.hashes.push(hash),
                Err(_) => return false,
            },
            DIR => match postcard::from_bytes(body) {
                Ok(dir) => self.dirs.push(dir),
                Err(_) => return false,
            },
            ENTRY => match postcard::from_bytes(body) {
                Ok(entry) => self.entry = Some(entry),
                Err(_) => return false,
            },
            _ => return false,
        }
        true
    }
}

/// The offer an intact manifest header names: the pure parser behind [`load`], for the
/// fuzz targets (`fuzz/`), which need it to call [`load`] with a matching offer.
#[cfg(feature = "fuzzing")]
pub(crate) fn manifest_offer(bytes: &[u8]) -> Option<Offer> {
    parse(bytes).offer
}

/// Works out what of `part` can be resumed for `offer`.
///
/// Re-hashes the part file in chunks of the offer's chunk size; keeps the longest
/// prefix that agrees with the manifest's records, or every whole chunk when the
/// manifest is missing or damaged. A short last piece counts only when it completes
/// a file of the offered size.
///
/// # Errors
/// [`ResumeError::ChunkSize`] when `offer`'s chunk size is outside pcp's limits (the
/// loop below would never advance on 0); [`ResumeError::OtherTransfer`] when a valid
/// manifest names another offer; I/O errors.
pub(crate) fn load(part: &Path, offer: &Offer) -> Result<Prefix, ResumeError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&offer.chunk_size) {
        return Err(ResumeError::ChunkSize(offer.chunk_size));
    }
    let parsed = read_manifest(part, offer)?;
    if offer.kind == Kind::Archive {
        return Ok(extraction(part, offer, parsed));
    }
    if parsed.offer.is_some() && !parsed.damaged {
        tracing::debug!(records = parsed.hashes.len(), "manifest is intact");
    } else {
        tracing::info!("manifest missing or damaged: re-hashing the part file");
    }

    let io_err = |source| ResumeError::Io { path: part.to_owned(), source };
    let mut file = fsx::open_regular(part, false).map_err(io_err)?;
    let chunk = offer.chunk_size as usize;
    let mut prefix = Prefix::default();
    let mut buf = vec![0u8; chunk];
    loop {
        let filled = crate::source::read_full(&mut file, &mut buf).map_err(io_err)?;
        let whole = filled == chunk
            || (filled > 0
                && offer.kind == Kind::File
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

/// The manifest beside `part`, parsed (empty and damaged when there is none).
///
/// # Errors
/// [`ResumeError::OtherTransfer`] when its header names another offer; I/O errors.
fn read_manifest(part: &Path, offer: &Offer) -> Result<Parsed, ResumeError> {
    let manifest = manifest_path(part);
    let io_err = |source| ResumeError::Io { path: manifest.clone(), source };
    let parsed = match fsx::open_regular(&manifest, false) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io_err)?;
            parse(&bytes)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Parsed { damaged: true, ..Parsed::default() }
        }
        Err(e) => return Err(io_err(e)),
    };
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
    let (next, last) = parsed.entry.map_or((0, None), |(next, name)| (next, Some(name)));
    let chunk = u64::from(offer.chunk_size);
    let (n, inside) = (next / chunk, next % chunk != 0);
    let Ok(n) = usize::try_from(n) else { return Prefix::default() };
    if parsed.hashes.len() < n + usize::from(inside) {
        return Prefix::default();
    }
    let held = inside.then(|| parsed.hashes[n]);
    let mut hashes = parsed.hashes;
    hashes.truncate(n);
    Prefix {
        bytes: n as u64 * chunk,
        hashes,
        extraction: Some(Extraction { next, last, dirs: parsed.dirs, chunk: held }),
    }
}

/// Appends chunk records to a manifest.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    records: Records,
}

/// Numbers records as they are written (a record's check covers its position).
#[derive(Debug, Default)]
struct Records {
    written: u64,
}

impl Records {
    /// Appends the next record to `out`.
    fn push(&mut self, out: &mut Vec<u8>, tag: u8, body: &[u8]) {
        out.extend_from_slice(&record(self.written, tag, body));
        self.written += 1;
    }

    /// Appends the records of an entry extracted whole: its directory record, if it is
    /// a directory, then where the next entry begins.
    fn push_entry(&mut self, out: &mut Vec<u8>, dir: Option<&DirMeta>, next: u64, name: &str) {
        if let Some(dir) = dir {
            let body = postcard::to_stdvec(dir).expect("serializing a DirMeta cannot fail");
            self.push(out, DIR, &body);
        }
        let body = postcard::to_stdvec(&(next, name)).expect("serializing cannot fail");
        self.push(out, ENTRY, &body);
    }
}

impl Journal {
    /// Writes a fresh manifest for `offer` holding `prefix` (and, for a directory, where
    /// its extraction stands), atomically, and opens it for appending.
    ///
    /// # Errors
    /// I/O errors, naming the manifest.
    pub(crate) fn create(
        part: &Path,
        offer: &Offer,
        prefix: &Prefix,
    ) -> Result<Journal, ResumeError> {
        let path = manifest_path(part);
        let err = |source| ResumeError::Io { path: path.clone(), source };
        let header = postcard::to_stdvec(offer).expect("serializing an offer cannot fail");
        let len = u32::try_from(header.len()).expect("an offer is far smaller than 4 GiB");
        let mut bytes =
            Vec::with_capacity(16 + header.len() + CHUNK_RECORD_LEN * prefix.hashes.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&check4(b"pcp manifest header", &[&header]));
        let mut records = Records::default();
        for h in &prefix.hashes {
            records.push(&mut bytes, CHUNK, h);
        }
        if let Some(x) = &prefix.extraction {
            // The chunk holding `next` stays recorded: a later rerun checks it again.
            if let Some(h) = &x.chunk {
                records.push(&mut bytes, CHUNK, h);
            }
            for dir in &x.dirs {
                records.push(&mut bytes, DIR, &postcard::to_stdvec(dir).expect("serializes"));
            }
            if let Some(name) = &x.last {
                records.push_entry(&mut bytes, None, x.next, name);
            }
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let tmp_err = |source| ResumeError::Io { path: tmp.clone(), source };
        // Whatever holds the temporary name (a run that died here, or a symlink planted to
        // redirect the write) is unlinked, never written through; should something appear
        // again before the create, `create_new` fails instead of following it.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(tmp_err(e)),
            _ => {}
        }
        let mut file = fsx::create_new_private(&tmp).map_err(tmp_err)?;
        file.write_all(&bytes).map_err(tmp_err)?;
        // rename replaces a symlink at the manifest's name, never its target. The open
        // descriptor is the renamed file: records are appended through it, with no reopen
        // by name.
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(Journal { file, path, records })
    }

    /// Records the next chunk's hash. Call only after its bytes are in the part file
    /// (for a directory: handed to the extraction).
    ///
    /// # Errors
    /// I/O errors, naming the manifest.
    pub(crate) fn append(&mut self, hash: &[u8; 32]) -> Result<(), ResumeError> {
        let mut bytes = Vec::with_capacity(CHUNK_RECORD_LEN);
        self.records.push(&mut bytes, CHUNK, hash);
        self.write(&bytes)
    }

    /// Records an entry extracted whole. Call only once it is whole in staging.
    ///
    /// # Errors
    /// I/O errors, naming the manifest.
    pub(crate) fn extracted(&mut self, done: &Checkpoint) -> Result<(), ResumeError> {
        let mut bytes = Vec::new();
        let dir = match &done.entry {
            Extracted::Dir(d) => Some(d),
            _ => None,
        };
        self.records.push_entry(&mut bytes, dir, done.next, &done.name);
        // One write: a directory's record never lands without the entry record after it.
        self.write(&bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ResumeError> {
        self.file
            .write_all(bytes)
            .map_err(|source| ResumeError::Io { path: self.path.clone(), source })
    }

    /// Removes the manifest, and the identity kept beside it: the transfer completed
    /// (or its part file is gone).
    pub(crate) fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(part) = self.path.to_str().and_then(|p| p.strip_suffix(".manifest")) {
            let _ = std::fs::remove_file(key_path(Path::new(part)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(size: u64) -> Offer {
        Offer {
            kind: Kind::File,
            name: "f".into(),
            size: Some(size),
            entries: vec![],
            chunk_size: 1 << 16,
            files: None,
            kinds: Vec::new(),
        }
    }

    fn write_part(part: &Path, data: &[u8], offer: &Offer, records: usize) {
        std::fs::write(part, data).expect("part");
        let mut j = Journal::create(part, offer, &Prefix::default()).expect("journal");
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
        let p = load(&part, &o).expect("load");
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
        let p = load(&part, &o).expect("load");
        assert_eq!(p.chunks(), 5, "every whole chunk of the part file, re-hashed");
        assert_eq!(p.hashes[4], *blake3::hash(&data[4 << 16..5 << 16]).as_bytes());

        std::fs::write(&m, b"garbage").expect("write");
        assert_eq!(load(&part, &o).expect("load").chunks(), 5);
        std::fs::remove_file(&m).expect("rm");
        assert_eq!(load(&part, &o).expect("load").chunks(), 5);
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
        assert_eq!(load(&part, &o).expect("load").chunks(), 2);
    }

    #[test]
    fn another_transfer_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        write_part(&part, &random(1 << 16), &offer(10 << 16), 1);
        let r = load(&part, &offer(11 << 16));
        assert!(matches!(r, Err(ResumeError::OtherTransfer(_))));
    }

    #[test]
    fn a_short_last_chunk_counts_only_when_it_completes_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        let data = random((2 << 16) + 10);
        let o = offer(data.len() as u64);
        write_part(&part, &data, &o, 3);
        assert_eq!(load(&part, &o).expect("load").chunks(), 3);
        let bigger = offer(data.len() as u64 + 5);
        write_part(&part, &data, &bigger, 3);
        assert_eq!(load(&part, &bigger).expect("load").chunks(), 2);
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
        let mut j = Journal::create(&part, &o, &Prefix::default()).expect("journal");
        j.append(&[7; 32]).expect("append");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious", "the target is untouched");
        assert!(std::fs::symlink_metadata(manifest_path(&part)).expect("manifest").is_file());
    }

    /// Runs [`load`] on a thread: what it refuses must not block or loop forever.
    fn load_in_time(part: &Path, offer: &Offer) -> Result<Prefix, ResumeError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (part, offer) = (part.to_owned(), offer.clone());
        std::thread::spawn(move || {
            let _ = tx.send(load(&part, &offer));
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
        assert!(matches!(e, ResumeError::Io { .. }), "{e:?}");
        std::fs::remove_file(&part).expect("rm");

        std::os::unix::fs::symlink("/dev/zero", &part).expect("plant");
        let e = load_in_time(&part, &o).expect_err("a symlink to a device is refused");
        assert!(matches!(e, ResumeError::Io { .. }), "{e:?}");
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
        Journal::create(&part, &zero, &Prefix::default()).expect("journal");
        let p = load_in_time(&part, &o).expect("re-hashed, not another transfer");
        assert_eq!(p.chunks(), 3);
    }

    #[test]
    fn the_identity_is_kept_privately_and_never_through_a_planted_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("x.pcp-part");
        assert!(load_identity(&part).is_none(), "none yet");
        let key = libp2p::identity::Keypair::generate_ed25519();
        save_identity(&part, &key).expect("save");
        let meta = std::fs::symlink_metadata(key_path(&part)).expect("key file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(load_identity(&part).expect("load").public(), key.public());

        // A symlink planted at the key's name is replaced, never written through, and
        // never read as a key.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("victim");
        std::fs::remove_file(key_path(&part)).expect("rm");
        std::os::unix::fs::symlink(&victim, key_path(&part)).expect("plant");
        assert!(load_identity(&part).is_none(), "a symlink is not followed");
        save_identity(&part, &key).expect("save");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        assert!(std::fs::symlink_metadata(key_path(&part)).expect("key").is_file());

        // Damaged: no identity (a fresh one is used), no error.
        std::fs::write(key_path(&part), b"garbage").expect("write");
        assert!(load_identity(&part).is_none());

        // Removing the journal removes the identity with it.
        save_identity(&part, &key).expect("save");
        let j = Journal::create(&part, &offer(1 << 16), &Prefix::default()).expect("journal");
        j.remove();
        assert!(!manifest_path(&part).exists() && !key_path(&part).exists());
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
            kinds: Vec::new(),
        }
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
        let mut j = Journal::create(&staging, &o, &Prefix::default()).expect("journal");
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
        j.extracted(&Checkpoint { next, name: "t/d/f".into(), entry: Extracted::HardLink })
            .expect("entry");
        j.append(&hashes[3]).expect("append");
        (staging, hashes, next)
    }

    #[test]
    fn a_directory_resumes_at_the_chunk_holding_the_last_entry_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, hashes, next) = journaled(dir.path());
        let p = load(&staging, &archive_offer()).expect("load");
        assert_eq!(p.hashes, hashes[..2], "the chunks before the one holding the offset");
        assert_eq!(p.bytes, 2 << 16);
        let x = p.extraction.clone().expect("an extraction");
        assert_eq!(x.next, next);
        assert_eq!(x.last.as_deref(), Some("t/d/f"));
        assert_eq!(x.dirs, [dir_meta("d")]);
        assert_eq!(x.chunk, Some(hashes[2]), "the chunk holding the offset, to check again");
        assert_eq!(x.skip(1 << 16), 1536);

        // The journal a resumed run writes says the same, and takes records after it.
        let mut j = Journal::create(&staging, &archive_offer(), &p).expect("rewrite");
        assert_eq!(load(&staging, &archive_offer()).expect("load"), p);
        j.append(&hashes[3]).expect("append");
        j.extracted(&Checkpoint {
            next: 3 << 16,
            name: "t/e".into(),
            entry: Extracted::Dir(dir_meta("e")),
        })
        .expect("entry");
        let q = load(&staging, &archive_offer()).expect("load");
        assert_eq!(q.hashes, hashes[..3]);
        let y = q.extraction.expect("an extraction");
        assert_eq!((y.next, y.chunk), (3 << 16, None), "at a chunk boundary nothing is skipped");
        assert_eq!(y.dirs, [dir_meta("d"), dir_meta("e")]);
    }

    #[test]
    fn a_directory_journal_stops_at_a_damaged_record_and_a_torn_one_is_no_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, _, next) = journaled(dir.path());
        let m = manifest_path(&staging);
        let whole = std::fs::read(&m).expect("read");
        // Torn inside the last chunk record: the entry records before it stand.
        std::fs::write(&m, &whole[..whole.len() - 10]).expect("write");
        let x = load(&staging, &archive_offer()).expect("load").extraction.expect("extraction");
        assert_eq!(x.next, next);
        // A flipped byte in the last entry record: the one before it is where we stand.
        let at = whole.len() - CHUNK_RECORD_LEN - 6;
        let mut bad = whole.clone();
        bad[at] ^= 0xff;
        std::fs::write(&m, &bad).expect("write");
        let p = load(&staging, &archive_offer()).expect("load");
        let x = p.extraction.expect("extraction");
        assert_eq!((x.next, x.last.as_deref()), (512, Some("t/d")));
        assert_eq!(p.hashes.len(), 0, "offset 512 is inside chunk 0");
    }

    #[test]
    fn a_directory_without_a_journal_or_staging_has_nothing_to_resume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, _, _) = journaled(dir.path());
        std::fs::remove_file(manifest_path(&staging)).expect("rm");
        assert_eq!(load(&staging, &archive_offer()).expect("load"), Prefix::default());

        let dir = tempfile::tempdir().expect("tempdir");
        let (staging, _, _) = journaled(dir.path());
        std::fs::remove_dir(&staging).expect("rmdir");
        std::os::unix::fs::symlink(dir.path(), &staging).expect("plant");
        let p = load(&staging, &archive_offer()).expect("load");
        assert_eq!(p, Prefix::default(), "a symlink at the staging name is not resumed");
        let mut other = archive_offer();
        other.entries = vec!["u".into()];
        assert!(matches!(load(&staging, &other), Err(ResumeError::OtherTransfer(_))));
    }
}
