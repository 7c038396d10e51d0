//! The `resume` fuzz target ([`resume`]): a directory's resume, as the receiver runs it,
//! over a staging tree, a journal and a tar stream that the input makes; the input's
//! layout and the properties checked are in [`resume`]'s docs.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{TOP, names_in, stays_inside, walk};
use crate::archive::{Announced, Checkpoint, DirMeta, Extracted};
use crate::message::{Kind, Offer, TopKind};
use crate::pipeline::MIN_CHUNK_SIZE;
use crate::resume::{self, Journal, JournalKey, Prefix};
use crate::sink::{Sink, Target};

/// What [`resume`]'s flags byte turns on, bit by bit.
pub mod resume_flags {
    /// The receiver runs with `--force`.
    pub const FORCE: u8 = 1 << 0;
    /// The stream ends with a commit; without it the transfer stops (as an abort).
    pub const COMMIT: u8 = 1 << 1;
    /// The journal is written under another key than the receiver's.
    pub const OTHER_KEY: u8 = 1 << 2;
    /// The journal's header names another transfer (other top-level names).
    pub const OTHER_TRANSFER: u8 = 1 << 3;
    /// A symlink to a canary file is planted at the journal's temporary name.
    pub const TMP_SYMLINK: u8 = 1 << 4;
    /// `dest/f` exists beforehand: a symlink to a canary file.
    pub const DEST_TAKEN: u8 = 1 << 5;
    /// No journal at all (the manifest is removed once built).
    pub const NO_JOURNAL: u8 = 1 << 6;
}

/// The staging kinds [`resume`]'s second byte selects (modulo their number).
pub mod staging_kind {
    /// A real directory, mode `0700`, as pcp leaves it.
    pub const DIR: u8 = 0;
    /// A real directory others may read (`0755`).
    pub const OPEN_DIR: u8 = 1;
    /// A symlink to the canary directory.
    pub const SYMLINK: u8 = 2;
    /// A regular file.
    pub const FILE: u8 = 3;
    /// Nothing.
    pub const ABSENT: u8 = 4;
    /// How many kinds there are.
    pub const COUNT: u8 = 5;
}

/// Staging operations of [`resume`]'s input (the op byte modulo 4).
pub mod staging_op {
    /// A directory: path, mode byte.
    pub const DIR: u8 = 0;
    /// A file: path, mode byte, content length (u16 BE), content.
    pub const FILE: u8 = 1;
    /// A symlink: path, then its target (see [`super::resume`]).
    pub const SYMLINK: u8 = 2;
    /// A hard link to a canary file: path, which file.
    pub const HARD_LINK: u8 = 3;
}

/// Journal operations of [`resume`]'s input (the op byte modulo 3).
pub mod journal_op {
    /// A chunk record: a byte `k`; below 0x80 the true hash of the tar's chunk `k` (when
    /// there is one), else `[k; 32]`.
    pub const CHUNK: u8 = 0;
    /// An entry record: `next` (u32 BE), name length (u8), name (lossy UTF-8), then a
    /// byte `w` saying what it was, by `w & 3`: a file (with `w & 0x80` clear, the size
    /// and hash of planted file `w >> 2`; set, a size (u16 BE) and the hash `[w; 32]`),
    /// a directory (a mode byte, an mtime u32 BE), a symlink, a hard link.
    pub const ENTRY: u8 = 1;
    /// An entry record that describes what was planted: `next` (u32 BE), then a byte
    /// choosing the planted entry, whose path, kind, mode and bytes it records.
    pub const PLANTED: u8 = 2;
}

/// The canary's files, which staging may hard-link.
const CANARY_FILES: [&str; 3] = ["file", "ro", "sub/file"];
/// Path components the input picks by a byte below 0x80.
const NAMES: [&str; 8] = ["d", "f", "sub", "file", "link", "x", "hard", "long-name-long-name-long"];
/// Where symlinks planted in staging lead, after their `../`s or under the fuzz
/// directory's absolute path.
const SUFFIXES: [&str; 10] = [
    "canary",
    "canary/file",
    "canary/sub",
    "canary/ro",
    "canary/link",
    "canary/sub/file",
    "dest",
    "",
    "file",
    "d",
];
/// Bounds on what one input may ask for, so that memory and time stay small whatever
/// the lengths in it say.
const MAX_PLANTED: usize = 256;
const MAX_RECORDS: usize = 1024;

/// The input's bytes, taken from the front; past the end every read is zeros or empty.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the input planted in staging, for the journal's [`journal_op::PLANTED`] records
/// and the checks afterwards.
struct Planted {
    parts: Vec<OsString>,
    what: PlantedKind,
}

enum PlantedKind {
    Dir(u32),
    File(Vec<u8>),
    Symlink(PathBuf),
    HardLink,
}

/// A mode from a byte: the owner's bits from the top two, group and other from the rest.
fn mode_of(b: u8, owner: [u32; 4]) -> u32 {
    owner[usize::from(b >> 6)] | u32::from(b & 0o77)
}

/// Staging's (or the target's) path components from the input: 1 to 3 of them; `None`
/// when a raw one is not a plain name.
fn path_of(input: &mut Input<'_>) -> Option<Vec<OsString>> {
    let n = 1 + input.byte() % 3;
    let mut parts = Vec::new();
    for _ in 0..n {
        let c = input.byte();
        let part = if c < 0x80 {
            OsString::from(NAMES[usize::from(c) % NAMES.len()])
        } else {
            let raw = input.take(1 + usize::from(c & 0x0f));
            if raw.is_empty() || raw == b"." || raw == b".." || raw.contains(&b'/') {
                return None;
            }
            if raw.contains(&0) {
                return None;
            }
            OsStr::from_bytes(raw).to_owned()
        };
        parts.push(part);
    }
    Some(parts)
}

/// Makes the missing parents of `parts` under `staging` (`0700`), never through a
/// symlink; the entry's own path, or `None` when a parent is not a real directory or
/// something is at the path already.
fn plant_parents(staging: &Path, parts: &[OsString]) -> Option<PathBuf> {
    let mut at = staging.to_owned();
    for part in &parts[..parts.len() - 1] {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return None,
            Err(_) => fs::create_dir(&at).ok()?,
        }
    }
    at.push(&parts[parts.len() - 1]);
    fs::symlink_metadata(&at).is_err().then_some(at)
}

/// A symlink target from the input, for a link at `parts` under staging, which is
/// `dest/<staging>`: never beyond the fuzz directory `dir`, so that the harness itself
/// can point at nothing but the canary, the target and staging.
fn link_target(input: &mut Input<'_>, parts: &[OsString], dir: &Path) -> Option<PathBuf> {
    let t = input.byte();
    let k = usize::from(t >> 2);
    match t & 3 {
        0 => {
            // From the link's directory: parts.len() - 1 levels to staging, one to dest,
            // one to `dir`.
            let ups = k % (parts.len() + 2);
            let suffix = SUFFIXES[usize::from(input.byte()) % SUFFIXES.len()];
            Some(PathBuf::from(format!("{}{suffix}", "../".repeat(ups))))
        }
        1 => Some(dir.join(SUFFIXES[usize::from(input.byte()) % SUFFIXES.len()])),
        2 => {
            let len = usize::from(input.byte() & 0x1f);
            let raw = input.take(len);
            let climbs = raw.windows(2).any(|w| w == b"..");
            if raw.is_empty() || raw.contains(&0) || raw.starts_with(b"/") || climbs {
                return None;
            }
            Some(PathBuf::from(OsStr::from_bytes(raw)))
        }
        _ => Some(PathBuf::from([".", "..", "../.."][k % 3])),
    }
}

/// Plants what the staging section asks for in `staging`, a real directory; returns it,
/// directories' modes applied last (deepest first), so that everything could be made.
fn plant(section: &[u8], staging: &Path, dir: &Path) -> Vec<Planted> {
    let mut input = Input(section);
    let mut planted = Vec::new();
    while !input.is_empty() && planted.len() < MAX_PLANTED {
        let op = input.byte() % 4;
        let Some(parts) = path_of(&mut input) else { continue };
        let Some(path) = plant_parents(staging, &parts) else { continue };
        let what = match op {
            staging_op::DIR => {
                let mode = mode_of(input.byte(), [0o700, 0o500, 0o300, 0]);
                fs::create_dir(&path).expect("make a planted directory");
                PlantedKind::Dir(mode)
            }
            staging_op::FILE => {
                let mode = mode_of(input.byte(), [0o600, 0o400, 0o700, 0]);
                let len = usize::from(input.u16());
                let bytes = input.take(len).to_vec();
                fs::write(&path, &bytes).expect("write a planted file");
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
                PlantedKind::File(bytes)
            }
            staging_op::SYMLINK => {
                let Some(target) = link_target(&mut input, &parts, dir) else { continue };
                std::os::unix::fs::symlink(&target, &path).expect("plant a symlink");
                PlantedKind::Symlink(target)
            }
            _ => {
                let which = CANARY_FILES[usize::from(input.byte()) % CANARY_FILES.len()];
                fs::hard_link(dir.join("canary").join(which), &path).expect("plant a hard link");
                PlantedKind::HardLink
            }
        };
        planted.push(Planted { parts, what });
    }
    let mut dirs: Vec<&Planted> =
        planted.iter().filter(|p| matches!(p.what, PlantedKind::Dir(_))).collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.parts.len()));
    for p in dirs {
        if let PlantedKind::Dir(mode) = p.what {
            let path: PathBuf = std::iter::once(staging.as_os_str())
                .chain(p.parts.iter().map(|s| s.as_os_str()))
                .collect();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod a dir");
        }
    }
    planted
}

/// Writes the journal the journal section asks for beside `staging`, through the real
/// [`Journal`] API under `key`, with chunk hashes of `tar` where it says so.
fn write_journal(
    section: &[u8],
    staging: &Path,
    offer: &Offer,
    key: &JournalKey,
    tar: &[u8],
    planted: &[Planted],
) {
    let mut journal =
        Journal::create(staging, offer, &Prefix::default(), key).expect("create a journal");
    let mut input = Input(section);
    let mut records = 0;
    while !input.is_empty() && records < MAX_RECORDS {
        records += 1;
        match input.byte() % 3 {
            journal_op::CHUNK => {
                let k = input.byte();
                let real = tar.chunks(MIN_CHUNK_SIZE as usize).nth(usize::from(k));
                let hash = match real {
                    Some(chunk) if k < 0x80 => *blake3::hash(chunk).as_bytes(),
                    _ => [k; 32],
                };
                journal.append(&hash).expect("append a chunk record");
            }
            journal_op::ENTRY => {
                let next = u64::from(input.u32());
                let len = usize::from(input.byte());
                let name = String::from_utf8_lossy(input.take(len)).into_owned();
                let entry = made_up_entry(&mut input, &name, planted);
                journal.extracted(&Checkpoint { next, name, entry }).expect("an entry record");
            }
            _ => {
                let next = u64::from(input.u32());
                let i = usize::from(input.byte());
                let Some(p) = planted.get(i % planted.len().max(1)) else { continue };
                journal.extracted(&planted_entry(next, p)).expect("an entry record");
            }
        }
    }
}

/// A [`journal_op::ENTRY`] record's entry, as the input makes it up: a file with the
/// bytes of a planted file (or a made-up size and hash), a directory, a symlink or a
/// hard link.
fn made_up_entry(input: &mut Input<'_>, name: &str, planted: &[Planted]) -> Extracted {
    let w = input.byte();
    match w & 3 {
        0 if w & 0x80 == 0 => {
            let files: Vec<&[u8]> = planted
                .iter()
                .filter_map(|p| match &p.what {
                    PlantedKind::File(bytes) => Some(&bytes[..]),
                    _ => None,
                })
                .collect();
            let bytes = files.get(usize::from(w >> 2) % files.len().max(1));
            let bytes = bytes.copied().unwrap_or_default();
            Extracted::File { size: bytes.len() as u64, hash: *blake3::hash(bytes).as_bytes() }
        }
        0 => Extracted::File { size: u64::from(input.u16()), hash: [w; 32] },
        1 => Extracted::Dir(DirMeta {
            parts: name
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .map(str::to_owned)
                .collect(),
            mode: mode_of(input.byte(), [0o700, 0o500, 0o300, 0]),
            mtime: i64::from(input.u32()),
        }),
        2 => Extracted::Symlink,
        _ => Extracted::HardLink,
    }
}

/// A [`journal_op::PLANTED`] record: what was planted, recorded as extracted.
fn planted_entry(next: u64, p: &Planted) -> Checkpoint {
    let parts: Vec<String> = p.parts.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    let entry = match &p.what {
        PlantedKind::Dir(mode) => {
            Extracted::Dir(DirMeta { parts: parts.clone(), mode: *mode, mtime: 1 })
        }
        PlantedKind::File(bytes) => {
            Extracted::File { size: bytes.len() as u64, hash: *blake3::hash(bytes).as_bytes() }
        }
        PlantedKind::Symlink(_) => Extracted::Symlink,
        PlantedKind::HardLink => Extracted::HardLink,
    };
    Checkpoint { next, name: parts.join("/"), entry }
}

/// What a file tree holds, keyed by the path under its root: kind, permission bits,
/// mtime, and a file's bytes or a symlink's target. Directories are made
/// owner-accessible on the way (the canary's already are).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, u32, i64, Vec<u8>)> {
    let mut entries = Vec::new();
    walk(root, &mut entries);
    entries
        .into_iter()
        .map(|(path, meta)| {
            let content = if meta.is_file() {
                fs::read(&path).expect("read a canary file")
            } else if meta.file_type().is_symlink() {
                fs::read_link(&path).expect("read a canary link").into_os_string().into_vec()
            } else {
                Vec::new()
            };
            let rel = path.strip_prefix(root).expect("walked from root").to_owned();
            (rel, (meta.mode() & 0o170_000, meta.mode() & 0o7777, meta.mtime(), content))
        })
        .collect()
}

/// Asserts that no error in `e`'s chain shows a control character or one the terminal
/// rule ([`crate::term`]) hides: every peer or on-disk string in them was cleaned.
fn assert_clean(e: &(dyn std::error::Error + 'static)) {
    let mut next = Some(e);
    while let Some(err) = next {
        let shown = err.to_string();
        assert!(
            !shown.chars().any(|c| c.is_control() || crate::term::is_hidden(c)),
            "an error shows a hidden character: {shown:?} ({err:?})"
        );
        next = err.source();
    }
}

/// A directory's resume, as the receiver runs it, over a staging tree, a journal and a
/// tar stream from the input (layout below), in `dir` (which MUST be empty).
///
/// `dir` gets a canary directory (`canary/`: files, a read-only file, a subdirectory, a
/// symlink) and the target `dest/`; the input plants a staging directory in `dest` with
/// entries that may point into the canary (symlinks, hard links), writes a PCPMAN3
/// journal beside it through [`Journal`] (under [`resume::test_key`], or another key),
/// optionally garbles it, then runs the receiver's path: [`resume::load`] (when staging
/// exists and not `force`), [`Sink::start`] on [`Target::Extract`] (which checks every
/// recorded entry against staging, [`Unpacker::resumable`], and rewrites the journal),
/// and the tar stream's chunks from the loaded prefix on, each with its true hash, then
/// a commit or a stop.
///
/// Input: flags ([`resume_flags`]); the staging kind ([`staging_kind`]); the offer's
/// entry count (0: none; `n`: `n - 1`); staging ops ([`staging_op`]: a u16 BE length,
/// then the ops); journal ops ([`journal_op`]: a u16 BE length, then the ops); raw bytes
/// appended to the manifest (a u8 length, then the bytes); a position (u16 BE, 0: none)
/// whose manifest byte is flipped; the rest is the tar stream. A path is a byte (1 to 3
/// components), then per component a byte: below 0x80 a name from a table, else a raw
/// name of `1 + (b & 0x0f)` bytes. A symlink target is a byte `t`: by `t & 3`, `../`
/// repeated (at most up to `dir`) and a suffix byte, `dir`'s absolute path and a suffix
/// byte, a raw target (length `b & 0x1f`; never absolute, never `..`), or `.`/`..`.
///
/// Properties: nothing in the canary changes (its files' bytes and modes, its names,
/// symlinks and mtimes) and nothing appears beside `dest`; `dest` holds only staging,
/// its journal (and the journal's temporary name) and the announced names; a commit
/// places exactly the announced names and leaves no staging or journal; no setuid,
/// setgid or sticky bit appears; every symlink in `dest` that the input did not plant
/// stays inside its top-level entry; and no error's chain shows a hidden character.
pub fn resume(data: &[u8], dir: &Path) {
    let _ = resume_outcome(data, dir);
}

/// [`resume`]'s input, in its sections.
struct Layout<'a> {
    flags: u8,
    kind: u8,
    files: u8,
    staging_ops: &'a [u8],
    journal_ops: &'a [u8],
    garbage: &'a [u8],
    flip: usize,
    tar: &'a [u8],
}

impl<'a> Layout<'a> {
    fn of(data: &'a [u8]) -> Self {
        let mut input = Input(data);
        let flags = input.byte();
        let kind = input.byte() % staging_kind::COUNT;
        let files = input.byte();
        let n = usize::from(input.u16());
        let staging_ops = input.take(n);
        let n = usize::from(input.u16());
        let journal_ops = input.take(n);
        let n = usize::from(input.byte());
        let garbage = input.take(n);
        let flip = usize::from(input.u16());
        Layout { flags, kind, files, staging_ops, journal_ops, garbage, flip, tar: input.0 }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Where one run's files are: the canary and the target beside it, and in the target
/// the staging directory, its journal and the journal's temporary name.
struct Scene {
    canary: PathBuf,
    dest: PathBuf,
    staging: PathBuf,
    manifest: PathBuf,
    tmp: PathBuf,
}

/// The offer of the folder the harness resumes: `tar` is its whole stream; the input's
/// `files` byte, less one, is the offer's file count (0: the offer gives none).
fn offer(tar: &[u8], files: u8) -> Offer {
    Offer {
        kind: Kind::Archive,
        name: "d".into(),
        size: Some(tar.len() as u64),
        entries: TOP.map(str::to_owned).to_vec(),
        chunk_size: MIN_CHUNK_SIZE,
        files: files.checked_sub(1).map(u64::from),
        kinds: vec![TopKind::Folder, TopKind::File],
    }
}

/// [`resume`], saying how far the receiver got: the committed paths, or the first
/// error (its `Debug`), from [`resume::load`], [`Sink::start`] or the extraction.
fn resume_outcome(data: &[u8], dir: &Path) -> Result<Vec<PathBuf>, String> {
    let input = Layout::of(data);
    let (canary, dest) = plant_canary(dir);
    let offer = offer(input.tar, input.files);
    let target = Target::Extract { dir: dest.clone(), announced: Announced::of(&offer) };
    let part = target.resume_part().expect("an extraction has a staging directory");
    let scene = Scene {
        canary,
        dest,
        staging: part.path().to_owned(),
        manifest: part.manifest(),
        tmp: part.manifest_tmp(),
    };
    let planted = plant_staging(&input, &scene.staging, dir);
    plant_journal(&input, &offer, &scene, &planted);

    let before = snapshot(&scene.canary);
    let outcome = receive(&input, target, &offer, &scene.staging);
    assert_eq!(snapshot(&scene.canary), before, "nothing in the canary directory changes");
    check_dest(dir, &scene, &outcome);
    check_links(&input, &scene, planted);
    outcome
}

/// The canary directory (files, a read-only file, a subdirectory, a symlink) and the
/// empty target beside it.
fn plant_canary(dir: &Path) -> (PathBuf, PathBuf) {
    let canary = dir.join("canary");
    let dest = dir.join("dest");
    fs::create_dir(&canary).expect("create the canary directory");
    fs::create_dir(canary.join("sub")).expect("create the canary's subdirectory");
    fs::write(canary.join("file"), b"pcp never writes here").expect("write the canary");
    fs::write(canary.join("ro"), b"nor here").expect("write the canary");
    fs::set_permissions(canary.join("ro"), fs::Permissions::from_mode(0o444)).expect("chmod");
    fs::write(canary.join("sub/file"), b"nor in here").expect("write the canary");
    std::os::unix::fs::symlink("file", canary.join("link")).expect("the canary's symlink");
    fs::create_dir(&dest).expect("create dest");
    (canary, dest)
}

/// Staging, as the input has it: what was planted in it.
fn plant_staging(input: &Layout<'_>, staging: &Path, dir: &Path) -> Vec<Planted> {
    let mut planted = Vec::new();
    match input.kind {
        staging_kind::DIR | staging_kind::OPEN_DIR => {
            fs::create_dir(staging).expect("create staging");
            planted = plant(input.staging_ops, staging, dir);
            let mode = if input.kind == staging_kind::DIR { 0o700 } else { 0o755 };
            fs::set_permissions(staging, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        staging_kind::SYMLINK => {
            std::os::unix::fs::symlink("../canary", staging).expect("plant staging")
        }
        staging_kind::FILE => fs::write(staging, b"not a directory").expect("plant staging"),
        _ => {}
    }
    planted
}

/// The journal, as an earlier run (or someone else) left it, garbled as the input says,
/// and the symlinks it plants at the journal's temporary name and at `dest/f`.
fn plant_journal(input: &Layout<'_>, offer: &Offer, scene: &Scene, planted: &[Planted]) {
    use resume_flags::*;
    let header = if input.has(OTHER_TRANSFER) {
        Offer { entries: vec!["d".into()], kinds: vec![TopKind::Folder], ..offer.clone() }
    } else {
        offer.clone()
    };
    let key =
        if input.has(OTHER_KEY) { JournalKey::from_bytes([8; 32]) } else { resume::test_key() };
    write_journal(input.journal_ops, &scene.staging, &header, &key, input.tar, planted);
    let mut bytes = fs::read(&scene.manifest).expect("read the journal");
    bytes.extend_from_slice(input.garbage);
    if let Some(b) = input.flip.checked_sub(1).and_then(|at| bytes.get_mut(at)) {
        *b ^= 0x5a;
    }
    fs::write(&scene.manifest, &bytes).expect("garble the journal");
    if input.has(NO_JOURNAL) {
        fs::remove_file(&scene.manifest).expect("remove the journal");
    }
    if input.has(TMP_SYMLINK) {
        std::os::unix::fs::symlink("../canary/file", &scene.tmp)
            .expect("plant at the temporary name");
    }
    if input.has(DEST_TAKEN) {
        std::os::unix::fs::symlink("../canary/file", scene.dest.join("f")).expect("take dest/f");
    }
}

/// The receiver's path: what an earlier run kept is looked at only without --force;
/// then the sink, fed the tar stream from the loaded prefix on.
fn receive(
    input: &Layout<'_>,
    target: Target,
    offer: &Offer,
    staging: &Path,
) -> Result<Vec<PathBuf>, String> {
    let force = input.has(resume_flags::FORCE);
    let kept = !force && staging.symlink_metadata().is_ok();
    let key = resume::test_key();
    let prefix = if kept { resume::load(staging, offer, &key) } else { Ok(Prefix::default()) };
    let prefix = prefix.map_err(|e| {
        assert_clean(&e);
        format!("{e:?}")
    })?;
    let skip = usize::try_from(prefix.bytes).expect("a prefix of the tar in memory");
    let rest = input.tar.get(skip..).unwrap_or_default();
    let chunks = rest.chunks(MIN_CHUNK_SIZE as usize).map(<[u8]>::to_vec);
    let commit = input.has(resume_flags::COMMIT);
    Sink::start(target, force, Some((offer, &prefix, &key)))
        .and_then(|sink| sink.run_blocking(chunks, commit))
        .map(|written| written.paths)
        .map_err(|e| {
            assert_clean(&e);
            format!("{e:?}")
        })
}

/// Nothing appears beside `dest`; `dest` holds only staging, its journal (and the
/// journal's temporary name) and the announced names; a commit places exactly the
/// announced names.
fn check_dest(dir: &Path, scene: &Scene, outcome: &Result<Vec<PathBuf>, String>) {
    let mut names = names_in(dir);
    names.sort();
    assert_eq!(names, ["canary", "dest"], "nothing appears beside dest");
    let allowed: HashSet<OsString> = [&scene.staging, &scene.manifest, &scene.tmp]
        .into_iter()
        .map(|p| p.file_name().expect("a name").to_owned())
        .chain(TOP.map(OsString::from))
        .collect();
    for name in names_in(&scene.dest) {
        assert!(allowed.contains(&name), "{name:?} appeared in dest");
    }
    if let Ok(paths) = outcome {
        let want: Vec<PathBuf> = TOP.iter().map(|name| scene.dest.join(name)).collect();
        assert_eq!(*paths, want, "a commit places the announced names");
        let mut names = names_in(&scene.dest);
        names.sort();
        assert_eq!(names, TOP, "after a commit dest holds the announced names only");
    }
}

/// Every symlink in dest that the input did not plant (under staging, or as dest/f)
/// stays inside its top-level entry; no special mode bits anywhere.
fn check_links(input: &Layout<'_>, scene: &Scene, planted: Vec<Planted>) {
    let (dest, staging) = (&scene.dest, &scene.staging);
    let mut planted_links: HashSet<(Vec<OsString>, PathBuf)> = planted
        .into_iter()
        .filter_map(|p| match p.what {
            PlantedKind::Symlink(target) => Some((p.parts, target)),
            _ => None,
        })
        .collect();
    let into_canary = PathBuf::from("../canary/file");
    if input.has(resume_flags::DEST_TAKEN) {
        planted_links.insert((vec![OsString::from("f")], into_canary.clone()));
    }
    if input.has(resume_flags::TMP_SYMLINK) {
        // It stays when the receiver stops before it rewrites the journal.
        let name = scene.tmp.file_name().expect("a name").to_owned();
        planted_links.insert((vec![name], into_canary));
    }
    let staging_is_dir = fs::symlink_metadata(staging).is_ok_and(|m| m.is_dir());
    let mut entries = Vec::new();
    walk(dest, &mut entries);
    for (path, meta) in entries {
        assert_eq!(meta.mode() & 0o7000, 0, "{path:?} has no setuid, setgid or sticky bit");
        if !meta.file_type().is_symlink() {
            continue;
        }
        let under = if staging_is_dir && path.starts_with(staging) { staging } else { dest };
        let rel: Vec<OsString> = path
            .strip_prefix(under)
            .expect("walked from dest")
            .iter()
            .map(OsStr::to_owned)
            .collect();
        if rel.len() == 1 && under == dest && path == *staging {
            continue;
        }
        let target = fs::read_link(&path).expect("read a symlink");
        if planted_links.contains(&(rel.clone(), target.clone())) {
            continue;
        }
        let rel: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap_or("\u{fffd}")).collect();
        assert!(TOP.contains(&rel[0]), "symlink {path:?} is not under an announced name");
        assert!(stays_inside(&rel, &target), "symlink {path:?} -> {target:?} escapes");
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::io;

    use super::*;
    use crate::archive::{ArchiveError, Unpacker};
    use crate::fuzzing::tests::tar_header;

    /// An input for [`resume`], in its layout.
    #[derive(Clone, Default)]
    pub(crate) struct ResumeInput {
        flags: u8,
        kind: u8,
        files: u8,
        staging: Vec<u8>,
        journal: Vec<u8>,
        garbage: Vec<u8>,
        flip: u16,
        tar: Vec<u8>,
    }

    impl ResumeInput {
        pub(crate) fn bytes(&self) -> Vec<u8> {
            let mut out = vec![self.flags, self.kind, self.files];
            for section in [&self.staging, &self.journal] {
                out.extend_from_slice(&u16::try_from(section.len()).expect("small").to_be_bytes());
                out.extend_from_slice(section);
            }
            out.push(u8::try_from(self.garbage.len()).expect("small"));
            out.extend_from_slice(&self.garbage);
            out.extend_from_slice(&self.flip.to_be_bytes());
            out.extend_from_slice(&self.tar);
            out
        }

        fn run(&self) -> Result<Vec<PathBuf>, String> {
            let dir = tempfile::tempdir().expect("tempdir");
            resume_outcome(&self.bytes(), dir.path())
        }
    }

    /// A path in [`resume`]'s encoding: table names by index, others raw.
    fn path(parts: &[&str]) -> Vec<u8> {
        let mut out = vec![u8::try_from(parts.len() - 1).expect("1 to 3 parts")];
        for part in parts {
            match NAMES.iter().position(|n| n == part) {
                Some(i) => out.push(u8::try_from(i).expect("small")),
                None => {
                    out.push(0x80 | u8::try_from(part.len() - 1).expect("up to 16 bytes"));
                    out.extend_from_slice(part.as_bytes());
                }
            }
        }
        out
    }

    fn plant_dir(parts: &[&str], mode: u8) -> Vec<u8> {
        [&[staging_op::DIR][..], &path(parts), &[mode]].concat()
    }

    fn plant_file(parts: &[&str], mode: u8, content: &[u8]) -> Vec<u8> {
        let len = u16::try_from(content.len()).expect("small").to_be_bytes();
        [&[staging_op::FILE][..], &path(parts), &[mode], &len, content].concat()
    }

    /// A symlink `../` × `ups` then [`SUFFIXES`]`[suffix]`.
    fn plant_symlink(parts: &[&str], ups: u8, suffix: u8) -> Vec<u8> {
        [&[staging_op::SYMLINK][..], &path(parts), &[ups << 2, suffix]].concat()
    }

    fn plant_hard_link(parts: &[&str], canary: u8) -> Vec<u8> {
        [&[staging_op::HARD_LINK][..], &path(parts), &[canary]].concat()
    }

    fn chunk_record(k: u8) -> Vec<u8> {
        vec![journal_op::CHUNK, k]
    }

    /// An entry record for the planted entry `i`.
    fn planted_record(next: u64, i: u8) -> Vec<u8> {
        let next = u32::try_from(next).expect("small").to_be_bytes();
        [&[journal_op::PLANTED][..], &next, &[i]].concat()
    }

    /// An entry record of a directory (mode byte `0o055`: `0o755`).
    fn dir_record(next: u64, name: &str) -> Vec<u8> {
        let next = u32::try_from(next).expect("small").to_be_bytes();
        let len = u8::try_from(name.len()).expect("small");
        let mtime = 1_600_000_000u32.to_be_bytes();
        [&[journal_op::ENTRY][..], &next, &[len], name.as_bytes(), &[1, 0o055], &mtime].concat()
    }

    /// An entry record of a symlink named `name`.
    fn symlink_record(next: u64, name: &str) -> Vec<u8> {
        let next = u32::try_from(next).expect("small").to_be_bytes();
        let len = u8::try_from(name.len()).expect("small");
        [&[journal_op::ENTRY][..], &next, &[len], name.as_bytes(), &[2]].concat()
    }

    /// A tar of `d/` with `d/file`, `d/sub/` and `d/sub/x`, a symlink and a hard link, and
    /// the top-level file `f`: seven entries.
    fn resume_tar() -> Vec<u8> {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let mut b = tar::Builder::new(Vec::new());
        let data = b"hello, fuzzer\n";
        b.append_data(&mut tar_header(Directory, 0o755, 0), "d", io::empty()).expect("dir");
        b.append_data(&mut tar_header(Regular, 0o644, 14), "d/file", &data[..]).expect("file");
        b.append_data(&mut tar_header(Directory, 0o755, 0), "d/sub", io::empty()).expect("dir");
        b.append_data(&mut tar_header(Regular, 0o644, 1), "d/sub/x", &b"x"[..]).expect("file");
        b.append_link(&mut tar_header(Symlink, 0o777, 0), "d/link", "file").expect("symlink");
        b.append_link(&mut tar_header(Link, 0o644, 0), "d/hard", "d/file").expect("hard link");
        b.append_data(&mut tar_header(Regular, 0o644, 2), "f", &b"f\n"[..]).expect("top file");
        b.into_inner().expect("finish the tar")
    }

    /// Where each entry of `tar` ends (the next one begins), from a real extraction.
    fn checkpoints(tar: &[u8]) -> Vec<u64> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut unpacker = Unpacker::new(dir.path(), TOP.map(str::to_owned).to_vec()).expect("new");
        let mut next = Vec::new();
        unpacker
            .unpack_from(tar, 0, |c: &Checkpoint| {
                next.push(c.next);
                Ok::<_, ArchiveError>(())
            })
            .expect("the seed tar unpacks");
        next
    }

    /// An earlier run that stopped after `d` and `d/file`: staging holds them (`d` still
    /// `0700`, as extraction leaves a directory it is in), the journal says so, and the
    /// tar is the whole stream, resent from its first chunk.
    fn resumed_input() -> ResumeInput {
        let tar = resume_tar();
        let next = checkpoints(&tar);
        ResumeInput {
            flags: resume_flags::COMMIT,
            kind: staging_kind::DIR,
            files: 8,
            staging: [plant_dir(&["d"], 0), plant_file(&["d", "file"], 0o044, b"hello, fuzzer\n")]
                .concat(),
            journal: [chunk_record(0), dir_record(next[0], "d"), planted_record(next[1], 1)]
                .concat(),
            tar,
            ..ResumeInput::default()
        }
    }

    /// As [`resumed_input`], but the tar's first 130 directories under `d` fill more than
    /// a chunk: the prefix is chunk 0, and chunk 1 is resent and checked.
    fn two_chunk_input() -> ResumeInput {
        use tar::EntryType::{Directory, Regular};
        let names: Vec<String> = (0..130).map(|i| format!("p{i:03}")).collect();
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut tar_header(Directory, 0o755, 0), "d", io::empty()).expect("dir");
        for name in &names {
            let mut h = tar_header(Directory, 0o755, 0);
            b.append_data(&mut h, format!("d/{name}"), io::empty()).expect("dir");
        }
        b.append_data(&mut tar_header(Regular, 0o644, 1), "d/z", &b"z"[..]).expect("file");
        b.append_data(&mut tar_header(Regular, 0o644, 2), "f", &b"f\n"[..]).expect("top file");
        let tar = b.into_inner().expect("finish the tar");
        let next = checkpoints(&tar);
        assert!(next[130] > u64::from(MIN_CHUNK_SIZE), "the resume point is in chunk 1");
        let mut staging = plant_dir(&["d"], 0);
        let mut journal = [chunk_record(0), chunk_record(1), dir_record(next[0], "d")].concat();
        for (i, name) in names.iter().enumerate() {
            staging.extend(plant_dir(&["d", name], 0o055));
            journal.extend(planted_record(next[i + 1], u8::try_from(i + 1).expect("small")));
        }
        ResumeInput {
            flags: resume_flags::COMMIT,
            kind: staging_kind::DIR,
            files: 134,
            staging,
            journal,
            tar,
            ..ResumeInput::default()
        }
    }

    /// The seeds of the resume target, by name, with how far each gets: `Ok` for a
    /// commit, else a piece of the error's `Debug`.
    pub(crate) fn resume_seeds() -> Vec<(&'static str, ResumeInput, Result<(), &'static str>)> {
        use resume_flags::{
            COMMIT, DEST_TAKEN, FORCE, NO_JOURNAL, OTHER_KEY, OTHER_TRANSFER, TMP_SYMLINK,
        };
        let resumed = resumed_input();
        let with = |f: &dyn Fn(&mut ResumeInput)| {
            let mut input = resumed.clone();
            f(&mut input);
            input
        };
        vec![
            ("resumed", resumed.clone(), Ok(())),
            ("resumed-stopped", with(&|i| i.flags = 0), Err("Stopped")),
            (
                "fresh",
                with(&|i| {
                    i.flags = COMMIT | NO_JOURNAL;
                    i.kind = staging_kind::ABSENT;
                }),
                Ok(()),
            ),
            ("forced", with(&|i| i.flags |= FORCE), Ok(())),
            ("other-key", with(&|i| i.flags |= OTHER_KEY), Err("Exists")),
            ("other-transfer", with(&|i| i.flags |= OTHER_TRANSFER), Err("OtherTransfer")),
            (
                // Refused before the journal is rewritten: the symlink at its temporary
                // name stays, pointing where it did.
                "tmp-symlink-kept",
                with(&|i| i.flags |= OTHER_TRANSFER | TMP_SYMLINK),
                Err("OtherTransfer"),
            ),
            ("staging-symlink", with(&|i| i.kind = staging_kind::SYMLINK), Err("Exists")),
            ("planted-names", with(&|i| i.flags |= TMP_SYMLINK | DEST_TAKEN), Err("Exists { path")),
            (
                // A byte of the last record flipped: the run resumes after `d` and replaces
                // `d/file`; and garbage after the records.
                "garbled",
                with(&|i| {
                    // Position 1-based: a byte of the last record's MAC.
                    i.flip = u16::try_from(journal_len(&resumed) - 3).expect("small");
                    i.garbage = vec![b'e', 0, 0, 0, 9, 1, 2, 3];
                }),
                Ok(()),
            ),
            (
                // `d/sub` planted as a symlink into the canary, unrecorded: the next entry
                // is `d/sub`, and is refused rather than followed.
                "symlink-out",
                with(&|i| i.staging.extend(plant_symlink(&["d", "sub"], 3, 2))),
                Err("Unsafe"),
            ),
            (
                // `d/sub/x` planted as a hard link to the canary's file: never written.
                "hard-link-out",
                with(&|i| {
                    i.staging.extend(plant_dir(&["d", "sub"], 0o055));
                    i.staging.extend(plant_hard_link(&["d", "sub", "x"], 0));
                }),
                Err("Unsafe"),
            ),
            (
                // A recorded entry whose name holds escapes, missing from staging.
                "escape-name",
                with(&|i| i.journal.extend(symlink_record(1536, "d/\u{1b}[2J\u{202e}x"))),
                Err("Mismatch"),
            ),
            ("two-chunks", two_chunk_input(), Ok(())),
        ]
    }

    /// The manifest's length for `input`, as [`resume`] writes it.
    fn journal_len(input: &ResumeInput) -> usize {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = dir.path().join("s");
        fs::create_dir(&staging).expect("mkdir");
        let planted = plant(&input.staging, &staging, dir.path());
        let offer = offer(&input.tar, input.files);
        write_journal(&input.journal, &staging, &offer, &resume::test_key(), &input.tar, &planted);
        let len = fs::metadata(resume::Part::at(&staging).manifest()).expect("journal").len();
        walk(dir.path(), &mut Vec::new());
        usize::try_from(len).expect("small")
    }

    /// The resume target over its seeds and hostile cases: each gets as far as it
    /// should, and [`resume`]'s properties (nothing outside the target changes, no
    /// escaping symlink, clean errors) hold for all of them.
    #[test]
    fn resume_seeds_get_as_far_as_they_should() {
        for (name, input, want) in resume_seeds() {
            let got = input.run();
            match (want, &got) {
                (Ok(()), Ok(paths)) => assert_eq!(paths.len(), 2, "{name}"),
                (Err(piece), Err(e)) => assert!(e.contains(piece), "{name}: {e}"),
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// A committed resume holds the whole tree: the entries of the earlier run, adopted,
    /// and the rest extracted after the recorded offset.
    #[test]
    fn a_resumed_seed_commits_the_whole_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        resume_outcome(&resumed_input().bytes(), dir.path()).expect("commits");
        let d = dir.path().join("dest/d");
        assert_eq!(fs::read(d.join("file")).expect("file"), b"hello, fuzzer\n");
        assert_eq!(fs::read(d.join("sub/x")).expect("sub/x"), b"x");
        assert_eq!(fs::read_link(d.join("link")).expect("link"), Path::new("file"));
        assert_eq!(fs::metadata(d.join("hard")).expect("hard").nlink(), 2);
        assert_eq!(fs::read(dir.path().join("dest/f")).expect("f"), b"f\n");
    }
}
