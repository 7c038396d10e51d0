//! The receiver's side: a peer's tar stream extracted into staging, then committed.
//!
//! # How extraction walks the tree
//!
//! Staging and the target directory are opened once, as [`Dir`] handles, and every
//! entry is created relative to a handle: nothing is resolved again by path, so a
//! staging directory renamed away (or replaced by a symlink) while entries arrive
//! cannot redirect them; [`Unpacker::commit`] then finds the name no longer leads to its
//! handle and moves nothing.
//!
//! The unpacker keeps a stack of open directories, from a top-level entry down to the
//! parent of the last entry (pcp's own tar is depth-first, so the stack follows the
//! stream). When the next entry's parent differs, frames are popped down to the common
//! prefix, and each popped directory gets its own mode and mtime through its handle as
//! the stream leaves it; new frames are pushed (an existing directory opened with
//! `O_NOFOLLOW`, or a missing one made). So an entry costs O(1) system calls beyond
//! its new path components, and memory holds one frame per level, never a list of all
//! directories.
//!
//! Other orders are accepted: a directory entered again after the stream left it is
//! `fstat`ed when it is entered, and that mode and mtime are restored when it is left
//! again (adding children changes its mtime). A directory whose final mode lacks the
//! owner's `rwx` (a read-only directory) is staged with `mode | 0o700`, so its children
//! can still be written and removed, and kept in a bounded list of exceptions whose
//! modes are applied at commit, deepest first, through handles beneath the target and
//! only to the very directory staged (same device and inode).
//!
//! # Limits
//!
//! - [`MAX_DEPTH`] path components per entry (one open handle per level).
//! - [`MAX_EXCEPTIONS`] read-only directories, and [`MAX_EXCEPTION_BYTES`] of their
//!   names.
//! - The offer's entry count: one entry more is refused, and an archive that ends with
//!   fewer is refused too (the sender counts the same walk it packs).
//!
//! Past a limit the archive is refused ([`ArchiveError::Limit`]).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use rustix::io::Errno;
use tar::EntryType;

#[cfg(any(test, feature = "fuzzing"))]
use super::STAGING_PREFIX;
use super::dir::{self, Dir, Identity};
use super::guard::{HeaderGuard, Probe};
use super::names::{check_symlink_target, entry_parts, plain_name};
use super::{ArchiveError, BLOCK, MODE_MASK, WORKING_DIR_MODE};
use crate::message::{Offer, TopKind};

mod commit;

/// The deepest entry accepted, in path components.
pub(crate) const MAX_DEPTH: usize = 1024;
/// The most read-only directories kept for commit.
pub(crate) const MAX_EXCEPTIONS: usize = 65_536;
/// The most bytes of names those directories' paths may hold together.
pub(crate) const MAX_EXCEPTION_BYTES: usize = 8 << 20;

/// Extracts a peer's archive into a staging directory inside `dest`, then moves its
/// top-level entries into place with [`Unpacker::commit`].
///
/// # Security
///
/// Every entry is checked against the rules in the module docs before anything is created
/// for it; an entry that breaks one fails [`Unpacker::unpack_from`] with
/// [`ArchiveError::Unsafe`], having written nothing outside staging.
///
/// # Cancel safety
///
/// Dropping an `Unpacker` made by `Unpacker::new` that was not committed removes its
/// staging directory, so an interrupt or an error never leaves anything under a final
/// name.
#[derive(Debug)]
pub(crate) struct Unpacker {
    dest_path: PathBuf,
    staging_path: PathBuf,
    /// Staging's name in `dest`.
    staging_name: String,
    dest: Dir,
    staging: Dir,
    /// What staging was when it was opened: commit checks the name still leads there.
    staging_id: Identity,
    /// What the offer announced.
    announced: Rules,
    /// Open directories, from a top-level entry down; see the module docs.
    stack: Vec<Frame>,
    /// Read-only directories, for commit.
    exceptions: Exceptions,
    /// Directory metas an earlier run recorded, taken as the first entry walks its
    /// parents; the rest are applied at once after it (the stream has left them).
    resumed: HashMap<Vec<String>, Meta>,
    /// Entries seen, and whether from the stream's start (a resumed run starts later).
    seen: u64,
    counted_from_start: bool,
    buf: Vec<u8>,
    /// The receiver's umask, applied to every mode the archive carries.
    umask: u32,
    /// Set once `commit` has removed staging itself, or when staging outlives this
    /// unpacker for a later resume ([`Unpacker::resumable`]).
    done: bool,
    /// The next entry may have been partly extracted by an earlier run that stopped
    /// inside it: whatever (but a directory) sits at its path is removed first.
    replace_next: bool,
}

/// What the offer announced, and the archive MUST match.
#[derive(Debug, Clone, Default)]
pub(crate) struct Announced {
    /// The top-level names, in order.
    pub(crate) names: Vec<String>,
    /// Their kinds, parallel to `names`; empty: not checked.
    pub(crate) kinds: Vec<TopKind>,
    /// How many entries the archive holds; `None`: not checked.
    pub(crate) entries: Option<u64>,
}

impl Announced {
    /// What an archive offer announces.
    pub(crate) fn of(offer: &Offer) -> Announced {
        Announced { names: offer.entries.clone(), kinds: offer.kinds.clone(), entries: offer.files }
    }
}

impl From<Vec<String>> for Announced {
    fn from(names: Vec<String>) -> Announced {
        Announced { names, ..Announced::default() }
    }
}

/// [`Announced`], in the form every entry is checked against.
#[derive(Debug)]
struct Rules {
    /// The announced top-level names, once each, in the order announced (the order of
    /// the commit).
    top: Vec<String>,
    /// The same names, for the check of every entry: an Offer may announce 65,536 names
    /// and an archive hold millions of entries, so a linear search per entry (or per
    /// name at commit) would let a peer buy minutes of CPU with a few MiB.
    allowed: HashSet<String>,
    /// Each name's announced kind (empty: not checked).
    kinds: HashMap<String, TopKind>,
    entries: Option<u64>,
}

/// A directory's own permission bits (already masked) and mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    mode: u32,
    mtime: i64,
}

/// An open directory on the stack.
#[derive(Debug)]
struct Frame {
    name: String,
    dir: Dir,
    /// Applied when the stream leaves it: its entry's, an earlier run's, or what it had
    /// when it was entered again.
    meta: Option<Meta>,
}

/// Read-only directories to finish at commit; see the module docs.
#[derive(Debug, Default)]
struct Exceptions {
    list: Vec<(Vec<String>, Meta, Identity)>,
    index: HashMap<Identity, usize>,
    bytes: usize,
}

/// A directory entry's own mode and mtime, as the resume journal keeps them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DirMeta {
    /// Path components, relative to staging, and to `dest` after commit.
    pub(crate) parts: Vec<String>,
    /// Permission bits, already masked with the umask.
    pub(crate) mode: u32,
    /// Seconds since the epoch.
    pub(crate) mtime: i64,
}

/// An entry extracted whole: what the resume journal records after each entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Offset in the tar stream where the next entry (its first header) begins.
    pub(crate) next: u64,
    /// The entry's name, as the archive gives it.
    pub(crate) name: String,
    /// What was extracted.
    pub(crate) entry: Extracted,
}

/// What an entry became in staging, enough to check it again ([`Unpacker::check`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Extracted {
    /// A regular file: its size, and the blake3 hash of its bytes.
    File {
        /// Bytes.
        size: u64,
        /// blake3 of the bytes, computed while writing them.
        hash: [u8; 32],
    },
    /// A directory, with its own mode and mtime. One whose mode lacks the owner's `rwx`
    /// MUST be kept by the journal until commit (its mode is applied only then).
    Dir(DirMeta),
    /// A symlink.
    Symlink,
    /// A hard link to a file extracted earlier.
    HardLink,
}

fn refuse(entry: &str, reason: &'static str) -> ArchiveError {
    ArchiveError::Unsafe { entry: entry.to_owned(), reason }
}

fn limit(entry: &str, reason: &'static str) -> ArchiveError {
    ArchiveError::Limit { entry: entry.to_owned(), reason }
}

impl Unpacker {
    /// Creates the staging directory `dest/.pcp-staging-<random hex>`; being inside `dest`,
    /// it is on the same filesystem, so committing is a rename.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::Unsafe`] if an announced name is not a [`plain_name`], and
    /// [`ArchiveError::Staging`] if the directory cannot be
    /// created (for instance, `dest` does not exist).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn new(
        dest: &Path,
        announced: impl Into<Announced>,
    ) -> Result<Unpacker, ArchiveError> {
        let staging = dest.join(format!("{STAGING_PREFIX}{:016x}", rand::random::<u64>()));
        Unpacker::resumable(dest, staging, announced, None).map(|mut u| {
            // A staging directory of our own making, named at random: nobody resumes it.
            u.done = false;
            u
        })
    }

    /// An unpacker whose staging directory `staging` (a name in `dest`) survives it, for
    /// a later run to resume: dropping it without a commit leaves staging as it is.
    ///
    /// Without `resumed`, staging is created (`0o700`, and it MUST not exist yet). With
    /// `resumed` (the directories an earlier run left open, and its read-only ones),
    /// staging MUST be a real directory (never a symlink), owned by the effective user,
    /// mode exactly `0o700`; the first entry extracted may replace what that run left of
    /// it. Recorded modes are masked with the umask again.
    ///
    /// # Errors
    /// [`ArchiveError::Unsafe`] if an announced name is not a [`plain_name`];
    /// [`ArchiveError::Staging`] when staging cannot be created or opened;
    /// [`ArchiveError::UntrustedStaging`] when a resumed staging is not ours alone;
    /// [`ArchiveError::Limit`] for more recorded directories than a run keeps.
    pub(crate) fn resumable(
        dest: &Path,
        staging: PathBuf,
        announced: impl Into<Announced>,
        resumed: Option<Vec<DirMeta>>,
    ) -> Result<Unpacker, ArchiveError> {
        let announced = Rules::new(announced.into())?;
        dir::raise_open_file_limit();
        let fail = |source| ArchiveError::Staging { dest: dest.to_owned(), source };
        let staging_name = staging
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|_| staging.parent() == Some(dest))
            .ok_or_else(|| fail(io::Error::other("staging is not a name in the target")))?
            .to_owned();
        // The target is the user's choice: a symlink there (say `-C ~/downloads`) is
        // followed, once, here. Everything beneath it is reached through handles.
        let dest_dir = Dir::open_following(dest).map_err(fail)?;
        let staging_dir = match &resumed {
            None => {
                dest_dir.mkdir(&staging_name, WORKING_DIR_MODE).map_err(fail)?;
                let dir = dest_dir.open(&staging_name).map_err(fail)?;
                // The umask may have taken the owner's bits; staging is exactly 0o700.
                dir.set_mode(WORKING_DIR_MODE).map_err(fail)?;
                dir
            }
            Some(_) => open_resumed(&dest_dir, &staging_name, &staging)?,
        };
        let staging_id = Identity::of(&staging_dir.fstat().map_err(fail)?);
        let umask = crate::fsx::umask();
        let is_resumed = resumed.is_some();
        let resumed = resumed_metas(resumed.as_deref(), &announced.allowed, umask)?;
        Ok(Unpacker {
            dest_path: dest.to_owned(),
            staging_path: staging,
            staging_name,
            dest: dest_dir,
            staging: staging_dir,
            staging_id,
            announced,
            stack: Vec::new(),
            exceptions: Exceptions::default(),
            replace_next: is_resumed,
            resumed,
            seen: 0,
            counted_from_start: true,
            buf: Vec::new(),
            umask,
            done: true,
        })
    }

    /// A resumed unpacker does not know how many entries came before its first one:
    /// until told, it checks only that the rest do not exceed the offer.
    pub(crate) fn resumed_after(&mut self, entries_before: Option<u64>) {
        match entries_before {
            Some(n) => {
                self.seen = n;
                self.counted_from_start = true;
            }
            None => self.counted_from_start = false,
        }
    }

    /// The staging directory entries are extracted into.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn staging(&self) -> &Path {
        &self.staging_path
    }

    /// Which of `names` already exist in `dest` (as anything, a dangling symlink included).
    ///
    /// The receiver asks this before accepting an offer. Names that are not plain file
    /// names are left out: [`Unpacker::resumable`] refuses them anyway.
    #[must_use]
    pub(crate) fn conflicts(dest: &Path, names: &[String]) -> Vec<PathBuf> {
        names
            .iter()
            .filter(|name| plain_name(name).is_some())
            .map(|name| dest.join(name))
            .filter(|path| std::fs::symlink_metadata(path).is_ok())
            .collect()
    }

    /// Extracts every entry of the tar stream `r` into staging, then reads `r` to its end.
    ///
    /// # Errors
    /// As [`Unpacker::unpack_from`].
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn unpack<R: Read>(&mut self, r: R) -> Result<(), ArchiveError> {
        self.unpack_from(r, 0, |_| Ok::<(), ArchiveError>(()))
    }

    /// Unpacks the tar stream that `r` delivers from offset `base` on (an
    /// entry's first header: where an earlier run stopped), calling `done` after each
    /// entry is extracted whole, before the next one is read.
    ///
    /// Regular files, directories, symlinks and hard links are accepted. Files get their
    /// mode (`0o777` bits only, less the umask) and mtime at once, directories when the
    /// stream leaves them (read-only ones at commit). Ownership is never restored.
    /// Reading `r` to the end (tar's second zero block and any padding after it) means
    /// the producer never blocks on a full pipe.
    ///
    /// # Errors
    /// [`ArchiveError::Unsafe`] for an entry that breaks a rule in the module docs,
    /// [`ArchiveError::ExtensionTooLarge`] or [`ArchiveError::BadHeader`] for a header the
    /// guard refuses, [`ArchiveError::CorruptHeader`] for one the tar crate cannot read,
    /// [`ArchiveError::Stream`] or [`ArchiveError::Truncated`] for a broken stream,
    /// the offer's bounds ([`ArchiveError::TooManyEntries`], [`ArchiveError::FewerEntries`],
    /// [`ArchiveError::KindMismatch`]), [`ArchiveError::Limit`],
    /// [`ArchiveError::StagingReplaced`], [`ArchiveError::Extract`] for a local write
    /// error, and whatever `done` returns. After an error `r` is left partly read; the
    /// caller MUST abandon the stream, and staging holds only what came before the
    /// failing entry.
    pub(crate) fn unpack_from<R: Read, E: From<ArchiveError>>(
        &mut self,
        r: R,
        base: u64,
        done: impl FnMut(&Checkpoint) -> Result<(), E>,
    ) -> Result<(), E> {
        let stream = |source| ArchiveError::Stream { source };
        // The guard refuses oversized extension headers before the tar crate reads them.
        // It starts at a header, as the crate does, so the two agree from `base` on.
        let guard = HeaderGuard::new(r);
        let probe = guard.probe();
        let mut archive = tar::Archive::new(guard);
        let result = self.extract_all(&mut archive, base, &probe, done);
        let mut guarded = archive.into_inner();
        if let Some(refusal) = guarded.refused() {
            return Err(refusal.into());
        }
        result?;
        // tar stops reading at the first zero block.
        io::copy(&mut guarded, &mut io::sink()).map_err(stream)?;
        self.finish()?;
        Ok(())
    }

    fn extract_all<R: Read, E: From<ArchiveError>>(
        &mut self,
        archive: &mut tar::Archive<R>,
        base: u64,
        probe: &Probe,
        mut done: impl FnMut(&Checkpoint) -> Result<(), E>,
    ) -> Result<(), E> {
        let tar_error = |source: io::Error| probe.error(base, source);
        for entry in archive.entries().map_err(tar_error)? {
            let mut entry = entry.map_err(tar_error)?;
            let at = base + entry.raw_header_position();
            let extracted = self.extract(&mut entry, at)?;
            // The crate skips the data's padding before the next header.
            let end = entry.raw_file_position() + entry.size().next_multiple_of(BLOCK);
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            done(&Checkpoint { next: base + end, name, entry: extracted })?;
        }
        Ok(())
    }

    /// Checks one entry and creates it in staging; `at` is its header's offset.
    fn extract<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        at: u64,
    ) -> Result<Extracted, ArchiveError> {
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let parts =
            entry_parts(&raw_name, &self.announced.allowed).map_err(|r| refuse(&name, r))?;
        self.count()?;
        if parts.len() > MAX_DEPTH {
            return Err(limit(&name, "deeper than 1024 path components"));
        }
        let header = entry.header();
        let corrupt = |e: io::Error| {
            tracing::debug!(offset = at, detail = %crate::term::sanitize(&e.to_string()), "tar header");
            ArchiveError::CorruptHeader { offset: at }
        };
        // chmod ignores the umask: apply it here, as the kernel does for a create.
        let mode = header.mode().map_err(corrupt)? & MODE_MASK & !self.umask;
        let mtime = i64::try_from(header.mtime().map_err(corrupt)?).unwrap_or(i64::MAX);
        let kind = header.entry_type();
        if parts.len() == 1 && kind != EntryType::Directory {
            self.announced.check_kind(&parts[0], TopKind::File)?;
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                self.walk(&parts, &name, None)?;
                self.extract_file(entry, &parts, &name, mode, mtime)
            }
            EntryType::Directory => {
                self.walk(&parts, &name, Some(Meta { mode, mtime }))?;
                Ok(Extracted::Dir(DirMeta { parts, mode, mtime }))
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&name, "symlink has no target"))?;
                let target = std::str::from_utf8(&target)
                    .map_err(|_| refuse(&name, "symlink target is not valid UTF-8"))?;
                check_symlink_target(&parts, target).map_err(|r| refuse(&name, r))?;
                let last = self.walk(&parts, &name, None)?;
                let parent = self.current();
                let made =
                    parent.symlink(target, last).and_then(|()| parent.set_mtime_at(last, mtime));
                made.map_err(|e| self.created_error(&parts, &name, e))?;
                Ok(Extracted::Symlink)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&name, "hard link has no target"))?;
                self.extract_hard_link(&parts, &name, &target)?;
                Ok(Extracted::HardLink)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                Err(refuse(&name, "device and fifo entries are not accepted"))
            }
            _ => Err(refuse(&name, "unsupported entry type")),
        }
    }

    /// Counts an entry against the offer.
    fn count(&mut self) -> Result<(), ArchiveError> {
        self.seen += 1;
        match self.announced.entries {
            Some(offered) if self.seen > offered => Err(ArchiveError::TooManyEntries { offered }),
            _ => Ok(()),
        }
    }

    /// The directory the last walk ended in: the parent of the entry being extracted.
    fn current(&self) -> &Dir {
        self.stack.last().map_or(&self.staging, |f| &f.dir)
    }

    /// The staging path of `parts`, for messages.
    fn staged_path(&self, parts: &[String]) -> PathBuf {
        staged(&self.staging_path, parts)
    }

    /// An error creating the entry `parts`: the name taken is the archive naming a path
    /// twice; anything else is local.
    fn created_error(&self, parts: &[String], name: &str, e: io::Error) -> ArchiveError {
        if e.kind() == io::ErrorKind::AlreadyExists {
            refuse(name, "the entry appears twice")
        } else {
            ArchiveError::Extract { path: self.staged_path(parts), source: e }
        }
    }

    /// Makes the stack hold the directories of `parts`: all of them for a directory
    /// entry (`own` is its meta), all but the last otherwise. Returns the entry's last
    /// component. Pops what the stream left (applying metas), pushes what it enters.
    fn walk<'p>(
        &mut self,
        parts: &'p [String],
        name: &str,
        own: Option<Meta>,
    ) -> Result<&'p str, ArchiveError> {
        let (last, parents) = parts.split_last().ok_or_else(|| refuse(name, "empty path"))?;
        let dirs = if own.is_some() { parts } else { parents };
        let common =
            self.stack.iter().zip(dirs).take_while(|(frame, part)| frame.name == **part).count();
        while self.stack.len() > common {
            self.pop()?;
        }
        for depth in common..dirs.len() {
            let is_own = own.is_some() && depth + 1 == dirs.len();
            self.push(&dirs[..=depth], name, is_own)?;
        }
        if let (Some(meta), Some(frame)) = (own, self.stack.last_mut()) {
            frame.meta = Some(meta);
        }
        if !self.resumed.is_empty() {
            self.settle_resumed()?;
        }
        if std::mem::take(&mut self.replace_next) && own.is_none() {
            // Unlinked, never followed; a directory there stays (and fails the create).
            match self.current().unlink(last) {
                Err(e) if !ignorable_unlink(&e) => {
                    return Err(ArchiveError::Extract { path: self.staged_path(parts), source: e });
                }
                _ => {}
            }
        }
        Ok(last)
    }

    /// Enters the directory `path` (the last of its components), making it if missing.
    fn push(&mut self, path: &[String], name: &str, is_own: bool) -> Result<(), ArchiveError> {
        let part = &path[path.len() - 1];
        if path.len() == 1 {
            self.announced.check_kind(part, TopKind::Folder)?;
        }
        let parent = self.current();
        let extract = |source| ArchiveError::Extract { path: self.staged_path(path), source };
        let opened = match parent.open(part) {
            Ok(dir) => Some(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) if is_not_dir(&e) => {
                return Err(refuse(
                    name,
                    if parent.is_symlink(part) {
                        "a parent directory is a symlink"
                    } else if is_own {
                        "the entry appears twice"
                    } else {
                        "a parent is not a directory"
                    },
                ));
            }
            Err(e) => return Err(extract(e)),
        };
        let (dir, meta) = match opened {
            // Entered again, or made by an earlier run: what it has now is restored
            // when the stream leaves it (an earlier run's record, if any, wins).
            Some(dir) => {
                let st = dir.fstat().map_err(extract)?;
                let recorded = self.resumed.remove(path);
                (dir, recorded.or(Some(Meta { mode: dir::perm(&st), mtime: dir::mtime(&st) })))
            }
            None => {
                // A directory entry's own directory stays owner-only until the stream
                // leaves it; a parent without an entry of its own gets the default mode,
                // like `mkdir -p`.
                let bits = if is_own { WORKING_DIR_MODE } else { 0o777 };
                parent.mkdir(part, bits).map_err(extract)?;
                (parent.open(part).map_err(extract)?, None)
            }
        };
        self.stack.push(Frame { name: part.clone(), dir, meta });
        Ok(())
    }

    /// Leaves the deepest open directory, giving it its meta.
    fn pop(&mut self) -> Result<(), ArchiveError> {
        let Some(frame) = self.stack.pop() else { return Ok(()) };
        let Some(meta) = frame.meta else { return Ok(()) };
        let path = || {
            let mut parts: Vec<String> = self.stack.iter().map(|f| f.name.clone()).collect();
            parts.push(frame.name.clone());
            parts
        };
        let extract = |source| ArchiveError::Extract { path: self.staged_path(&path()), source };
        if meta.mode & 0o700 == 0o700 {
            return frame.dir.set_meta(meta.mode, meta.mtime).map_err(extract);
        }
        frame.dir.set_meta(meta.mode | 0o700, meta.mtime).map_err(extract)?;
        let id = Identity::of(&frame.dir.fstat().map_err(extract)?);
        let parts = path();
        self.exceptions.add(parts, meta, id)
    }

    /// Applies the metas an earlier run recorded that the first walk did not take: the
    /// stream has left those directories.
    fn settle_resumed(&mut self) -> Result<(), ArchiveError> {
        for (parts, meta) in std::mem::take(&mut self.resumed) {
            let Ok(dir) = self.staging.open_beneath(&parts) else { continue };
            let frame = Frame { name: String::new(), dir, meta: Some(meta) };
            let extract = |source| ArchiveError::Extract { path: self.staged_path(&parts), source };
            if meta.mode & 0o700 == 0o700 {
                frame.dir.set_meta(meta.mode, meta.mtime).map_err(extract)?;
            } else {
                frame.dir.set_meta(meta.mode | 0o700, meta.mtime).map_err(extract)?;
                let id = Identity::of(&frame.dir.fstat().map_err(extract)?);
                self.exceptions.add(parts, meta, id)?;
            }
        }
        Ok(())
    }

    fn extract_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parts: &[String],
        name: &str,
        mode: u32,
        mtime: i64,
    ) -> Result<Extracted, ArchiveError> {
        let last = &parts[parts.len() - 1];
        let mut file = self
            .current()
            .create_file(last, 0o600)
            .map_err(|e| self.created_error(parts, name, e))?;
        let staging = &self.staging_path;
        let extract = |source| ArchiveError::Extract { path: staged(staging, parts), source };
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(64 * 1024, 0);
        let mut hash = blake3::Hasher::new();
        let mut copied = 0u64;
        let copy = loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => break Err(ArchiveError::Stream { source }),
            };
            if let Err(e) = file.write_all(&buf[..n]) {
                break Err(extract(e));
            }
            hash.update(&buf[..n]);
            copied += n as u64;
        };
        self.buf = buf;
        copy?;
        // tar's reader just stops short when the stream ends inside the data.
        if copied != entry.size() {
            return Err(ArchiveError::Truncated { entry: name.to_owned() });
        }
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(extract)?;
        let mtime = filetime::FileTime::from_unix_time(mtime, 0);
        filetime::set_file_handle_times(&file, None, Some(mtime)).map_err(extract)?;
        Ok(Extracted::File { size: copied, hash: *hash.finalize().as_bytes() })
    }

    fn extract_hard_link(
        &mut self,
        parts: &[String],
        name: &str,
        raw_target: &[u8],
    ) -> Result<(), ArchiveError> {
        const REASON: &str = "hard link target is not a regular file extracted earlier";
        let both = format!("{name} -> {}", String::from_utf8_lossy(raw_target));
        let target =
            entry_parts(raw_target, &self.announced.allowed).map_err(|r| refuse(&both, r))?;
        // The target MUST be a regular file we extracted: no directory, no symlink (whose
        // relative target would be re-read from the new link's directory), and nothing
        // reached through a symlink.
        let (target_last, target_dirs) =
            target.split_last().ok_or_else(|| refuse(&both, REASON))?;
        let from = self.staging.open_beneath(target_dirs).map_err(|_| refuse(&both, REASON))?;
        match from.stat(target_last) {
            Ok(st) if dir::kind(&st) == FileType::RegularFile => {}
            _ => return Err(refuse(&both, REASON)),
        }
        let last = self.walk(parts, name, None)?;
        self.current()
            .hard_link(&from, target_last, last)
            .map_err(|e| self.created_error(parts, name, e))
    }

    /// The stream ended: leaves every open directory, and checks the offer's count and
    /// that staging is still where it was.
    fn finish(&mut self) -> Result<(), ArchiveError> {
        while !self.stack.is_empty() {
            self.pop()?;
        }
        self.settle_resumed()?;
        if let Some(offered) = self.announced.entries
            && self.counted_from_start
            && self.seen < offered
        {
            return Err(ArchiveError::FewerEntries { offered, got: self.seen });
        }
        self.check_staging()
    }

    /// Staging's name in the target MUST still lead to the directory opened as staging.
    fn check_staging(&self) -> Result<(), ArchiveError> {
        match self.dest.stat(&self.staging_name) {
            Ok(st) if Identity::of(&st) == self.staging_id => Ok(()),
            _ => Err(ArchiveError::StagingReplaced { path: self.staging_path.clone() }),
        }
    }

    /// Checks that what an earlier run recorded for the entry `parts` is in staging:
    /// the same type, and for a file the same size and blake3 hash. Nothing is
    /// followed: a symlink on the way, or in place of a directory, fails.
    ///
    /// # Errors
    /// [`ArchiveError::Mismatch`] naming the entry and what differs.
    // The resume journal's reader (src/resume.rs) calls it before resuming.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn check(&self, parts: &[String], what: &Extracted) -> Result<(), ArchiveError> {
        let name = parts.join("/");
        let differs = |reason| ArchiveError::Mismatch { entry: name.clone(), reason };
        let (last, dirs) = parts.split_last().ok_or_else(|| differs("an empty path"))?;
        let parent = self
            .staging
            .open_beneath(dirs)
            .map_err(|_| differs("a parent is not a real directory"))?;
        let st = parent.stat(last).map_err(|_| differs("it is missing"))?;
        let kind = dir::kind(&st);
        match what {
            Extracted::Dir(_) if kind == FileType::Directory => Ok(()),
            Extracted::Symlink if kind == FileType::Symlink => Ok(()),
            Extracted::HardLink if kind == FileType::RegularFile => Ok(()),
            Extracted::File { size, hash } if kind == FileType::RegularFile => {
                #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
                if st.st_size as u64 != *size {
                    return Err(differs("its size differs"));
                }
                let file = parent.open_file(last).map_err(|_| differs("it cannot be read"))?;
                let mut hasher = blake3::Hasher::new();
                hasher.update_reader(file).map_err(|_| differs("it cannot be read"))?;
                if hasher.finalize().as_bytes() != hash {
                    return Err(differs("its bytes differ"));
                }
                Ok(())
            }
            _ => Err(differs("its type differs")),
        }
    }
}

/// The path of `parts` under `staging`, for messages.
fn staged(staging: &Path, parts: &[String]) -> PathBuf {
    let mut path = staging.to_owned();
    path.extend(parts);
    path
}

/// `ELOOP` or `ENOTDIR` from opening a directory: something else is there.
fn is_not_dir(e: &io::Error) -> bool {
    [Errno::LOOP, Errno::NOTDIR].iter().any(|x| e.raw_os_error() == Some(x.raw_os_error()))
}

/// Nothing there, or a directory (`EISDIR` on Linux, `EPERM` where POSIX allows it).
fn ignorable_unlink(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || [Errno::ISDIR, Errno::PERM].iter().any(|x| e.raw_os_error() == Some(x.raw_os_error()))
}

impl Rules {
    fn new(announced: Announced) -> Result<Rules, ArchiveError> {
        if let Some(bad) = announced.names.iter().find(|name| plain_name(name).is_none()) {
            return Err(ArchiveError::Unsafe {
                entry: bad.clone(),
                reason: "an announced top-level name is not a plain file name",
            });
        }
        let mut allowed = HashSet::with_capacity(announced.names.len());
        let kinds: HashMap<String, TopKind> = if announced.kinds.len() == announced.names.len() {
            announced.names.iter().cloned().zip(announced.kinds.iter().copied()).collect()
        } else {
            HashMap::new()
        };
        let top: Vec<String> =
            announced.names.into_iter().filter(|name| allowed.insert(name.clone())).collect();
        Ok(Rules { top, allowed, kinds, entries: announced.entries })
    }

    /// A top-level entry MUST be what the offer said it is.
    fn check_kind(&self, name: &str, arrived: TopKind) -> Result<(), ArchiveError> {
        match self.kinds.get(name) {
            Some(&announced) if announced != arrived => Err(ArchiveError::KindMismatch {
                name: name.to_owned(),
                announced: announced.noun(),
                arrived: arrived.noun(),
            }),
            _ => Ok(()),
        }
    }
}

impl Exceptions {
    fn add(&mut self, parts: Vec<String>, meta: Meta, id: Identity) -> Result<(), ArchiveError> {
        if let Some(&i) = self.index.get(&id) {
            self.list[i].1 = meta;
            return Ok(());
        }
        let bytes: usize = parts.iter().map(|p| p.len() + 24).sum();
        if self.list.len() == MAX_EXCEPTIONS || self.bytes + bytes > MAX_EXCEPTION_BYTES {
            return Err(limit(&parts.join("/"), "more read-only directories than pcp keeps"));
        }
        self.bytes += bytes;
        self.index.insert(id, self.list.len());
        self.list.push((parts, meta, id));
        Ok(())
    }
}

/// Opens a staging directory an earlier run left, if it is ours alone: a directory
/// (never a symlink), owned by the effective user, mode exactly `0o700`.
fn open_resumed(dest: &Dir, name: &str, path: &Path) -> Result<Dir, ArchiveError> {
    let untrusted = |why| ArchiveError::UntrustedStaging { path: path.to_owned(), why };
    let dir = match dest.open(name) {
        Ok(dir) => dir,
        Err(e) if is_not_dir(&e) && dest.is_symlink(name) => {
            return Err(untrusted("it is a symbolic link"));
        }
        Err(e) if is_not_dir(&e) => return Err(untrusted("it is not a directory")),
        Err(source) => return Err(ArchiveError::Staging { dest: path.to_owned(), source }),
    };
    let st =
        dir.fstat().map_err(|source| ArchiveError::Staging { dest: path.to_owned(), source })?;
    if st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(untrusted("it is owned by another user"));
    }
    if dir::perm(&st) != WORKING_DIR_MODE {
        return Err(untrusted("its mode is not 0700"));
    }
    Ok(dir)
}

/// The directory metas an earlier run recorded, held to the rule every entry name
/// meets (they come from a file on disk) and masked with the umask again.
fn resumed_metas(
    resumed: Option<&[DirMeta]>,
    allowed: &HashSet<String>,
    umask: u32,
) -> Result<HashMap<Vec<String>, Meta>, ArchiveError> {
    let Some(resumed) = resumed else { return Ok(HashMap::new()) };
    if resumed.len() > MAX_DEPTH + MAX_EXCEPTIONS {
        return Err(limit("", "more recorded directories than a run keeps"));
    }
    let mut out = HashMap::with_capacity(resumed.len());
    for dir in resumed {
        let Ok(parts) = entry_parts(dir.parts.join("/").as_bytes(), allowed) else { continue };
        if parts.len() > MAX_DEPTH {
            continue;
        }
        out.insert(parts, Meta { mode: dir.mode & MODE_MASK & !umask, mtime: dir.mtime });
    }
    Ok(out)
}

// Peaks are per process: never in a run with other tests (`--include-ignored`).
#[cfg(all(test, feature = "scale"))]
mod scale;

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs::{self, OpenOptions, Permissions};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};

    use filetime::FileTime;
    use tar::Header;
    use tempfile::TempDir;

    use crate::archive::{pack, top_level_names};

    // ---- round trips ----

    /// Packs `paths` and unpacks them into `dest` through the whole public API.
    fn round_trip(paths: &[PathBuf], dest: &Path) -> Vec<PathBuf> {
        let names = top_level_names(paths).unwrap();
        let tar = pack(paths, Vec::new()).unwrap();
        let mut unpacker = Unpacker::new(dest, names).unwrap();
        unpacker.unpack(&tar[..]).unwrap();
        unpacker.commit(false).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn mtime(path: &Path) -> i64 {
        FileTime::from_last_modification_time(&fs::symlink_metadata(path).unwrap()).unix_seconds()
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn round_trip_keeps_tree_modes_links_and_mtimes() {
        let src = TempDir::new().unwrap();
        let dest = TempDir::new().unwrap();
        let tree = src.path().join("tree");
        fs::create_dir_all(tree.join("sub/nested")).unwrap();
        fs::write(tree.join("sub/nested/deep.txt"), b"deep").unwrap();
        fs::create_dir(tree.join("empty")).unwrap();
        fs::write(tree.join("run.sh"), b"#!/bin/sh\n").unwrap();
        set_mode(&tree.join("run.sh"), 0o755);
        fs::write(tree.join("secret"), b"key").unwrap();
        set_mode(&tree.join("secret"), 0o600);
        fs::create_dir(tree.join("ro")).unwrap();
        fs::write(tree.join("ro/inside.txt"), b"inside").unwrap();
        symlink("sub/nested/deep.txt", tree.join("link")).unwrap();
        filetime::set_file_mtime(tree.join("secret"), FileTime::from_unix_time(1_500_000_000, 0))
            .unwrap();
        filetime::set_file_mtime(tree.join("sub"), FileTime::from_unix_time(1_400_000_000, 0))
            .unwrap();
        filetime::set_file_mtime(tree.join("ro"), FileTime::from_unix_time(1_300_000_000, 0))
            .unwrap();
        set_mode(&tree.join("ro"), 0o555);

        let placed = round_trip(std::slice::from_ref(&tree), dest.path());
        let out = dest.path().join("tree");
        assert_eq!(placed, std::slice::from_ref(&out));
        assert_eq!(names_in(dest.path()), ["tree"], "staging is gone");
        assert_eq!(names_in(&out), ["empty", "link", "ro", "run.sh", "secret", "sub"]);
        assert_eq!(fs::read(out.join("sub/nested/deep.txt")).unwrap(), b"deep");
        assert!(names_in(&out.join("empty")).is_empty());
        assert_eq!(mode(&out.join("run.sh")), 0o755);
        assert_eq!(mode(&out.join("secret")), 0o600);
        assert_eq!(mode(&out.join("ro")), 0o555);
        assert_eq!(fs::read(out.join("ro/inside.txt")).unwrap(), b"inside");
        assert!(fs::symlink_metadata(out.join("link")).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("sub/nested/deep.txt"));
        assert_eq!(mtime(&out.join("secret")), 1_500_000_000);
        assert_eq!(mtime(&out.join("sub")), 1_400_000_000);
        assert_eq!(mtime(&out.join("ro")), 1_300_000_000);
        assert_eq!(mtime(&out.join("ro/inside.txt")), mtime(&tree.join("ro/inside.txt")));

        // Let TempDir clean up when the tests do not run as root.
        set_mode(&tree.join("ro"), 0o755);
        set_mode(&out.join("ro"), 0o755);
    }

    #[test]
    fn round_trip_long_names_and_link_targets() {
        // Over tar's 100-byte name field: GNU long-name and long-link headers, which the
        // guard lets through.
        let src = TempDir::new().unwrap();
        let dest = TempDir::new().unwrap();
        let long = "n".repeat(200);
        let tree = src.path().join("tree");
        fs::create_dir_all(tree.join(&long)).unwrap();
        fs::write(tree.join(&long).join(&long), b"deep").unwrap();
        symlink(format!("{long}/{long}"), tree.join("link")).unwrap();
        round_trip(std::slice::from_ref(&tree), dest.path());
        let out = dest.path().join("tree");
        assert_eq!(fs::read(out.join(&long).join(&long)).unwrap(), b"deep");
        assert_eq!(fs::read(out.join("link")).unwrap(), b"deep");
    }

    #[test]
    fn round_trip_several_top_level_paths() {
        let src = TempDir::new().unwrap();
        let dest = TempDir::new().unwrap();
        fs::create_dir(src.path().join("dir")).unwrap();
        fs::write(src.path().join("dir/in.txt"), b"in").unwrap();
        fs::write(src.path().join("file.txt"), b"file").unwrap();
        let paths = [src.path().join("dir"), src.path().join("file.txt")];
        let placed = round_trip(&paths, dest.path());
        assert_eq!(placed, [dest.path().join("dir"), dest.path().join("file.txt")]);
        assert_eq!(fs::read(dest.path().join("dir/in.txt")).unwrap(), b"in");
        assert_eq!(fs::read(dest.path().join("file.txt")).unwrap(), b"file");
        assert_eq!(names_in(dest.path()), ["dir", "file.txt"]);
    }

    #[test]
    fn round_trip_single_file_and_top_level_symlink() {
        let src = TempDir::new().unwrap();
        let dest = TempDir::new().unwrap();
        fs::write(src.path().join("one.bin"), [0u8, 1, 2, 255]).unwrap();
        symlink("one.bin", src.path().join("alias")).unwrap();
        let paths = [src.path().join("one.bin")];
        assert_eq!(round_trip(&paths, dest.path()), [dest.path().join("one.bin")]);
        assert_eq!(fs::read(dest.path().join("one.bin")).unwrap(), [0u8, 1, 2, 255]);

        // A symlink named on the command line is sent as what it points to.
        round_trip(&[src.path().join("alias")], dest.path());
        let alias = dest.path().join("alias");
        assert!(fs::symlink_metadata(&alias).unwrap().is_file());
        assert_eq!(fs::read(alias).unwrap(), [0u8, 1, 2, 255]);
    }

    #[test]
    fn large_file_streams_through_a_pipe() {
        /// Records the largest single write, to show `pack` never hands over the archive
        /// in one piece.
        struct Largest<W> {
            inner: W,
            largest: usize,
        }
        impl<W: Write> Write for Largest<W> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = self.inner.write(buf)?;
                self.largest = self.largest.max(n);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.inner.flush()
            }
        }

        const SIZE: usize = 5 * 1024 * 1024 + 123;
        let src = TempDir::new().unwrap();
        let dest = TempDir::new().unwrap();
        let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
        let path = src.path().join("big.bin");
        fs::write(&path, &data).unwrap();

        let (mut reader, writer) = io::pipe().unwrap();
        let paths = vec![path];
        let mut unpacker = Unpacker::new(dest.path(), top_level_names(&paths).unwrap()).unwrap();
        let sender = std::thread::spawn(move || {
            let out = pack(&paths, Largest { inner: writer, largest: 0 }).unwrap();
            out.largest
            // The writer drops here, closing the pipe.
        });
        unpacker.unpack(&mut reader).unwrap();
        let largest = sender.join().unwrap();
        assert!(largest < SIZE / 4, "largest write {largest} of {SIZE}");
        // unpack read the pipe to its end.
        assert_eq!(reader.read(&mut [0u8; 16]).unwrap(), 0);
        unpacker.commit(false).unwrap();
        assert!(fs::read(dest.path().join("big.bin")).unwrap() == data);
    }

    #[test]
    fn unpack_reads_trailing_padding() {
        let src = TempDir::new().unwrap();
        let dest = TempDir::new().unwrap();
        fs::write(src.path().join("f"), b"f").unwrap();
        let mut tar = pack(&[src.path().join("f")], Vec::new()).unwrap();
        // GNU tar pads to a 10 KiB record.
        tar.resize(10240, 0);
        let mut cursor = io::Cursor::new(&tar);
        let mut unpacker = Unpacker::new(dest.path(), vec!["f".into()]).unwrap();
        unpacker.unpack(&mut cursor).unwrap();
        assert_eq!(cursor.position(), 10240);
    }

    // ---- hostile archives ----

    /// Appends one entry with raw `name` and `link` bytes, which `Header::set_path` would
    /// refuse to write.
    fn raw_entry(tar: &mut Vec<u8>, kind: EntryType, name: &[u8], link: &[u8], data: &[u8]) {
        let mut header = Header::new_gnu();
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
        header.set_mtime(1_600_000_000);
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }

    fn dir(tar: &mut Vec<u8>, name: &str) {
        raw_entry(tar, EntryType::Directory, name.as_bytes(), b"", b"");
    }

    fn file(tar: &mut Vec<u8>, name: &str) {
        raw_entry(tar, EntryType::Regular, name.as_bytes(), b"", b"evil");
    }

    fn link(tar: &mut Vec<u8>, kind: EntryType, name: &str, target: &str) {
        raw_entry(tar, kind, name.as_bytes(), target.as_bytes(), b"");
    }

    /// Unpacks `tar` allowing only `d`, expects [`ArchiveError::Unsafe`], and checks that
    /// nothing appeared outside staging and that dropping the unpacker leaves nothing.
    fn assert_refused(mut tar: Vec<u8>) -> ArchiveError {
        tar.extend_from_slice(&[0; 1024]);
        let root = TempDir::new().unwrap();
        let dest = root.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let mut unpacker = Unpacker::new(&dest, vec!["d".into()]).unwrap();
        let err = unpacker.unpack(&tar[..]).unwrap_err();
        assert!(matches!(err, ArchiveError::Unsafe { .. }), "{err:?}");
        assert_eq!(names_in(root.path()), ["dest"]);
        let staging = unpacker.staging().file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(names_in(&dest), [staging]);
        drop(unpacker);
        assert!(names_in(&dest).is_empty());
        err
    }

    /// Issue 9, item 14 (found by `tests/adversary.rs`): an Offer may announce 65,536
    /// names. Looking each entry's top-level name up in a list, and deduplicating the
    /// list at commit, cost O(names) per entry and O(names²) at commit: 34 s of CPU for
    /// one such Offer in a debug build, and far more with many entries. Both are set
    /// lookups now.
    #[test]
    fn many_announced_names_cost_no_more_than_a_few() {
        let root = TempDir::new().unwrap();
        let mut names: Vec<String> = (0..65_536).map(|i| format!("e{i:014}")).collect();
        names.push(names[0].clone());
        let last = names[65_535].clone();
        let mut tar = Vec::new();
        dir(&mut tar, &format!("{last}/"));
        for i in 0..1_000 {
            raw_entry(&mut tar, EntryType::Regular, format!("{last}/{i}").as_bytes(), b"", b"");
        }
        tar.extend_from_slice(&[0; 1024]);
        let started = std::time::Instant::now();
        let mut unpacker = Unpacker::new(root.path(), names).unwrap();
        unpacker.unpack(&tar[..]).unwrap();
        let err = unpacker.commit(false).unwrap_err();
        assert!(matches!(err, ArchiveError::Incomplete { ref name } if name == "e00000000000000"));
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    }

    #[test]
    fn refuses_parent_components() {
        let mut tar = Vec::new();
        file(&mut tar, "../evil");
        assert_refused(tar);
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        file(&mut tar, "d/../../evil");
        assert_refused(tar);
    }

    #[test]
    fn refuses_absolute_paths() {
        let mut tar = Vec::new();
        file(&mut tar, "/etc/evil");
        assert_refused(tar);
        assert!(!Path::new("/etc/evil").exists());
        let mut tar = Vec::new();
        file(&mut tar, "/d/evil");
        assert_refused(tar);
    }

    #[test]
    fn refuses_names_outside_the_announced_ones() {
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        file(&mut tar, "other/evil");
        let err = assert_refused(tar);
        assert!(err.to_string().contains("\"other/evil\""), "{err}");
    }

    #[test]
    fn refuses_non_utf8_names_and_devices() {
        let mut tar = Vec::new();
        raw_entry(&mut tar, EntryType::Regular, b"d/\xff", b"", b"x");
        assert_refused(tar);
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        raw_entry(&mut tar, EntryType::Fifo, b"d/fifo", b"", b"");
        assert_refused(tar);
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        raw_entry(&mut tar, EntryType::Char, b"d/null", b"", b"");
        assert_refused(tar);
    }

    #[test]
    fn refuses_absolute_symlink_and_writes_through_it() {
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        link(&mut tar, EntryType::Symlink, "d/link", "/etc");
        file(&mut tar, "d/link/passwd");
        assert_refused(tar);
    }

    #[test]
    fn never_writes_through_a_symlink_even_one_inside() {
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        link(&mut tar, EntryType::Symlink, "d/self", ".");
        file(&mut tar, "d/self/f");
        let err = assert_refused(tar);
        assert!(matches!(err, ArchiveError::Unsafe { ref entry, .. } if entry == "d/self/f"));
    }

    #[test]
    fn refuses_escaping_symlinks() {
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        link(&mut tar, EntryType::Symlink, "d/up", "../../x");
        assert_refused(tar);
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        link(&mut tar, EntryType::Symlink, "d/up", "..");
        assert_refused(tar);
        // Lexically inside, but `b/..` climbs out if `d/b` is a symlink to a subdirectory.
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        link(&mut tar, EntryType::Symlink, "d/s", "b/../..");
        assert_refused(tar);
    }

    #[test]
    fn refuses_hard_links_outside_and_to_symlinks() {
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        link(&mut tar, EntryType::Link, "d/hl", "../x");
        assert_refused(tar);
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        link(&mut tar, EntryType::Link, "d/hl", "/etc/passwd");
        assert_refused(tar);
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        link(&mut tar, EntryType::Symlink, "d/s", "x");
        link(&mut tar, EntryType::Link, "d/hl", "d/s");
        assert_refused(tar);
    }

    #[test]
    fn refuses_an_entry_twice() {
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        link(&mut tar, EntryType::Symlink, "d/f", "g");
        file(&mut tar, "d/f");
        assert_refused(tar);
    }

    #[test]
    fn accepts_hard_links_and_missing_parent_entries() {
        let dest = TempDir::new().unwrap();
        let mut tar = Vec::new();
        file(&mut tar, "d/a/f");
        link(&mut tar, EntryType::Link, "d/g", "d/a/f");
        tar.extend_from_slice(&[0; 1024]);
        let mut unpacker = Unpacker::new(dest.path(), vec!["d".into()]).unwrap();
        unpacker.unpack(&tar[..]).unwrap();
        unpacker.commit(false).unwrap();
        assert_eq!(fs::read(dest.path().join("d/g")).unwrap(), b"evil");
        assert_eq!(mode(&dest.path().join("d/a/f")), 0o644);
    }

    /// The process umask as the kernel applies it: the mode a file asked to be `0o777`
    /// gets, complemented.
    fn probed_umask() -> u32 {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("probe");
        OpenOptions::new().write(true).create_new(true).mode(0o777).open(&path).unwrap();
        !mode(&path) & 0o777
    }

    #[test]
    fn extracted_modes_honour_the_umask() {
        let umask = probed_umask();
        // With a zero umask there is nothing to show; test runners use 022 or stricter.
        assert_ne!(umask, 0, "run the tests under a non-zero umask");
        let dest = TempDir::new().unwrap();
        let mut tar = Vec::new();
        for (kind, name) in [(EntryType::Directory, "d"), (EntryType::Regular, "d/f")] {
            let mut header = Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(kind);
            header.set_mode(0o777);
            header.set_size(0);
            header.set_cksum();
            tar.extend_from_slice(header.as_bytes());
        }
        tar.extend_from_slice(&[0; 1024]);
        let mut unpacker = Unpacker::new(dest.path(), vec!["d".into()]).unwrap();
        unpacker.unpack(&tar[..]).unwrap();
        unpacker.commit(false).unwrap();
        assert_eq!(mode(&dest.path().join("d")), 0o777 & !umask, "a directory");
        assert_eq!(mode(&dest.path().join("d/f")), 0o777 & !umask, "a file");
    }

    #[test]
    fn refuses_bad_announced_names() {
        let dest = TempDir::new().unwrap();
        let bad = ["", ".", "..", "a/b", "/etc", "a/", "a//", "a/.", "./a", "a\\b", "..\\x", "a\0"];
        for bad in bad {
            assert_eq!(plain_name(bad), None, "{bad:?}");
            let err = Unpacker::new(dest.path(), vec![bad.into()]).unwrap_err();
            assert!(matches!(err, ArchiveError::Unsafe { .. }), "{bad:?}: {err:?}");
            assert!(Unpacker::conflicts(dest.path(), &[bad.into()]).is_empty());
        }
        assert!(names_in(dest.path()).is_empty());
        for good in ["a", "a.b", "..a", "a..", ".hidden", "a b", "ä"] {
            assert_eq!(plain_name(good), Some(good));
        }
    }

    /// A tar stream made of `head` then zeros without end, produced as it is read and
    /// failing past 1 MiB, so that a test cannot allocate what a header claims.
    struct Endless {
        head: Vec<u8>,
        pos: usize,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos > 1 << 20 {
                return Err(io::Error::other("read past 1 MiB"));
            }
            let n = buf.len().min(4096);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = self.head.get(self.pos + i).copied().unwrap_or(0);
            }
            self.pos += n;
            Ok(n)
        }
    }

    fn extension_header(kind: EntryType, size: u64) -> Vec<u8> {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(size);
        header.set_cksum();
        header.as_bytes().to_vec()
    }

    #[test]
    fn refuses_huge_extension_headers_from_the_header_alone() {
        let kinds = [
            EntryType::GNULongName,
            EntryType::GNULongLink,
            EntryType::XHeader,
            EntryType::XGlobalHeader,
        ];
        for kind in kinds {
            // A `d` entry first, so the refusal is not of the first block.
            let mut head = Vec::new();
            dir(&mut head, "d");
            head.extend_from_slice(&extension_header(kind, 1 << 30));
            let dest = TempDir::new().unwrap();
            let mut unpacker = Unpacker::new(dest.path(), vec!["d".into()]).unwrap();
            let mut stream = Endless { head, pos: 0 };
            let err = unpacker.unpack(&mut stream).unwrap_err();
            assert!(stream.pos <= 64 << 10, "{kind:?}: read {} bytes", stream.pos);
            assert!(matches!(err, ArchiveError::ExtensionTooLarge { .. }), "{kind:?}: {err:?}");
            assert!(err.to_string().contains("1073741824"), "{err}");
        }
    }

    #[test]
    fn truncated_entry_is_an_error() {
        let dest = TempDir::new().unwrap();
        let mut tar = Vec::new();
        raw_entry(&mut tar, EntryType::Regular, b"d", b"", &[7; 2000]);
        tar.truncate(512 + 1000);
        let mut unpacker = Unpacker::new(dest.path(), vec!["d".into()]).unwrap();
        let err = unpacker.unpack(&tar[..]).unwrap_err();
        assert!(matches!(err, ArchiveError::Truncated { .. }), "{err:?}");
    }

    // ---- commit ----

    /// An unpacker for `dest` holding `tree/new.txt` and `tree/sub/a.txt`, ready to commit.
    fn staged(dest: &Path) -> Unpacker {
        let mut tar = Vec::new();
        raw_entry(&mut tar, EntryType::Directory, b"tree", b"", b"");
        raw_entry(&mut tar, EntryType::Regular, b"tree/new.txt", b"", b"new");
        raw_entry(&mut tar, EntryType::Directory, b"tree/sub", b"", b"");
        raw_entry(&mut tar, EntryType::Regular, b"tree/sub/a.txt", b"", b"sent");
        tar.extend_from_slice(&[0; 1024]);
        let mut unpacker = Unpacker::new(dest, vec!["tree".into()]).unwrap();
        unpacker.unpack(&tar[..]).unwrap();
        unpacker
    }

    #[test]
    fn conflicts_lists_existing_names() {
        let dest = TempDir::new().unwrap();
        fs::create_dir(dest.path().join("tree")).unwrap();
        symlink("nowhere", dest.path().join("dangling")).unwrap();
        let names: Vec<String> =
            ["tree", "free", "dangling", ".."].into_iter().map(String::from).collect();
        assert_eq!(
            Unpacker::conflicts(dest.path(), &names),
            [dest.path().join("tree"), dest.path().join("dangling")]
        );
    }

    #[test]
    fn commit_without_force_refuses_and_changes_nothing() {
        let dest = TempDir::new().unwrap();
        fs::create_dir(dest.path().join("tree")).unwrap();
        fs::write(dest.path().join("tree/mine.txt"), b"mine").unwrap();
        let unpacker = staged(dest.path());
        let err = unpacker.commit(false).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Exists { ref path } if *path == dest.path().join("tree"))
        );
        assert_eq!(names_in(dest.path()), ["tree"], "staging removed on drop");
        assert_eq!(names_in(&dest.path().join("tree")), ["mine.txt"]);
    }

    #[test]
    fn commit_with_force_merges_directories() {
        let dest = TempDir::new().unwrap();
        let tree = dest.path().join("tree");
        fs::create_dir(&tree).unwrap();
        set_mode(&tree, 0o2770);
        fs::write(tree.join("mine.txt"), b"mine").unwrap();
        fs::write(tree.join("new.txt"), b"old").unwrap();

        let placed = staged(dest.path()).commit(true).unwrap();
        assert_eq!(placed, std::slice::from_ref(&tree));
        assert_eq!(names_in(dest.path()), ["tree"]);
        assert_eq!(names_in(&tree), ["mine.txt", "new.txt", "sub"]);
        assert_eq!(fs::read(tree.join("mine.txt")).unwrap(), b"mine");
        assert_eq!(fs::read(tree.join("new.txt")).unwrap(), b"new");
        assert_eq!(fs::read(tree.join("sub/a.txt")).unwrap(), b"sent");
        assert_eq!(mode(&tree), 0o2770, "a directory merged into keeps its mode");
        assert_eq!(mode(&tree.join("sub")), 0o755, "a directory placed gets the sent mode");

        // Nested directories merge too: files the archive has are replaced, others stay.
        fs::write(tree.join("sub/a.txt"), b"edited").unwrap();
        fs::write(tree.join("sub/keep.txt"), b"keep").unwrap();
        staged(dest.path()).commit(true).unwrap();
        assert_eq!(names_in(&tree.join("sub")), ["a.txt", "keep.txt"]);
        assert_eq!(fs::read(tree.join("sub/a.txt")).unwrap(), b"sent");
        assert_eq!(fs::read(tree.join("sub/keep.txt")).unwrap(), b"keep");
        assert_eq!(names_in(dest.path()), ["tree"]);
    }

    /// Issue 14 item 8: `--force` replaced a directory with a file (`remove_dir_all`),
    /// at the top level or inside a merge, and a file with a directory.
    #[test]
    fn force_never_turns_a_directory_into_a_file_or_back() {
        // Inside a merge: the receiver's `tree/sub` is a file, the sender's a directory;
        // the receiver's `tree/new.txt` is a directory, the sender's a file.
        for (mine, clash) in [("sub", "a directory"), ("new.txt", "a file")] {
            let dest = TempDir::new().unwrap();
            let tree = dest.path().join("tree");
            fs::create_dir(&tree).unwrap();
            if mine == "sub" {
                fs::write(tree.join(mine), b"in the way").unwrap();
            } else {
                fs::create_dir(tree.join(mine)).unwrap();
                fs::write(tree.join(mine).join("keep"), b"keep").unwrap();
            }
            let err = staged(dest.path()).commit(true).unwrap_err();
            let ArchiveError::KindClash { ref path, ours, .. } = err else { panic!("{err:?}") };
            assert_eq!(*path, tree.join(mine));
            assert_eq!(ours, clash);
            assert!(err.to_string().ends_with("; not replaced"), "{err}");
            if mine == "sub" {
                assert_eq!(fs::read(tree.join("sub")).unwrap(), b"in the way");
            } else {
                assert_eq!(fs::read(tree.join("new.txt/keep")).unwrap(), b"keep");
            }
        }
        // At the top level: a directory `tree` where the sender's `tree` is a file.
        let dest = TempDir::new().unwrap();
        fs::create_dir(dest.path().join("tree")).unwrap();
        fs::write(dest.path().join("tree/keep"), b"keep").unwrap();
        let mut tar = Vec::new();
        raw_entry(&mut tar, EntryType::Regular, b"tree", b"", b"file");
        tar.extend_from_slice(&[0; 1024]);
        let mut unpacker = Unpacker::new(dest.path(), vec!["tree".into()]).unwrap();
        unpacker.unpack(&tar[..]).unwrap();
        let err = unpacker.commit(true).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("tree is a directory and the sender's tree is a file"), "{shown}");
        assert_eq!(fs::read(dest.path().join("tree/keep")).unwrap(), b"keep");
        // And the reverse.
        let dest = TempDir::new().unwrap();
        fs::write(dest.path().join("tree"), b"mine").unwrap();
        let err = staged(dest.path()).commit(true).unwrap_err();
        assert!(err.to_string().contains("tree is a file and the sender's tree is a directory"));
        assert_eq!(fs::read(dest.path().join("tree")).unwrap(), b"mine");
    }

    #[test]
    fn commit_refuses_a_missing_announced_entry() {
        let dest = TempDir::new().unwrap();
        let mut tar = Vec::new();
        dir(&mut tar, "a");
        tar.extend_from_slice(&[0; 1024]);
        let mut unpacker = Unpacker::new(dest.path(), vec!["a".into(), "b".into()]).unwrap();
        unpacker.unpack(&tar[..]).unwrap();
        let err = unpacker.commit(false).unwrap_err();
        assert!(matches!(err, ArchiveError::Incomplete { ref name } if name == "b"));
        assert!(names_in(dest.path()).is_empty());
    }

    #[test]
    fn place_without_force_never_replaces_what_appeared_after_the_check() {
        let root = TempDir::new().unwrap();
        fs::create_dir_all(root.path().join("staged/d")).unwrap();
        fs::create_dir_all(root.path().join("target/d")).unwrap();
        fs::write(root.path().join("staged/f"), b"sent").unwrap();
        // Created after commit's check, before the move: another process's file.
        fs::write(root.path().join("target/f"), b"precious").unwrap();
        let from = Dir::open_path(&root.path().join("staged")).unwrap();
        let to = Dir::open_path(&root.path().join("target")).unwrap();
        let target = root.path().join("target/f");
        let err = commit::place(&from, "f", &to, &target, false).unwrap_err();
        assert!(matches!(err, ArchiveError::Exists { .. }), "{err:?}");
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        // The same for a directory.
        let err = commit::place(&from, "d", &to, &root.path().join("target/d"), false).unwrap_err();
        assert!(matches!(err, ArchiveError::Exists { .. }), "{err:?}");
        // With force, it is replaced.
        commit::place(&from, "f", &to, &target, true).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"sent");
    }

    #[test]
    fn drop_removes_staging() {
        let dest = TempDir::new().unwrap();
        let unpacker = staged(dest.path());
        let staging = unpacker.staging().to_owned();
        assert!(staging.starts_with(dest.path()));
        assert!(staging.join("tree/sub/a.txt").is_file());
        drop(unpacker);
        assert!(!staging.exists());
        assert!(names_in(dest.path()).is_empty());
    }

    // ---- resumable extraction ----

    /// `tree` (a directory), `tree/a`, `tree/b`, the end: and the offset of each entry.
    fn three_entries() -> (Vec<u8>, Vec<u64>) {
        let mut tar = Vec::new();
        let mut at = Vec::new();
        for (kind, name, data) in [
            (EntryType::Directory, "tree", &b""[..]),
            (EntryType::Regular, "tree/a", b"first"),
            (EntryType::Regular, "tree/b", b"second"),
        ] {
            at.push(tar.len() as u64);
            raw_entry(&mut tar, kind, name.as_bytes(), b"", data);
        }
        tar.extend_from_slice(&[0; 1024]);
        (tar, at)
    }

    #[test]
    fn checkpoints_give_where_each_next_entry_begins() {
        let dest = TempDir::new().unwrap();
        let (tar, at) = three_entries();
        let staging = dest.path().join("s");
        let mut unpacker =
            Unpacker::resumable(dest.path(), staging.clone(), vec!["tree".into()], None).unwrap();
        let mut seen = Vec::new();
        unpacker
            .unpack_from(&tar[..], 0, |c: &Checkpoint| {
                seen.push(c.clone());
                Ok::<(), ArchiveError>(())
            })
            .unwrap();
        let nexts: Vec<u64> = seen.iter().map(|c| c.next).collect();
        assert_eq!(nexts, [at[1], at[2], tar.len() as u64 - 1024]);
        assert!(
            matches!(&seen[0].entry, Extracted::Dir(d) if d.parts == ["tree"]),
            "{:?}",
            seen[0]
        );
        let first = Extracted::File { size: 5, hash: *blake3::hash(b"first").as_bytes() };
        assert_eq!(seen[1].entry, first, "a file's size and the hash of its bytes");
        assert_eq!(seen[2].name, "tree/b");
        drop(unpacker);
        assert!(staging.join("tree/b").is_file(), "a resumable staging outlives its unpacker");
    }

    #[test]
    fn a_resumed_unpacker_replaces_the_entry_it_stopped_in_and_only_that_one() {
        let dest = TempDir::new().unwrap();
        let (tar, at) = three_entries();
        let staging = dest.path().join("s");
        fs::create_dir_all(staging.join("tree")).unwrap();
        set_mode(&staging, 0o700);
        fs::write(staging.join("tree/a"), b"first").unwrap();
        // What the earlier run left of `tree/b`: part of it, or a planted symlink, which
        // is unlinked, never written through.
        let victim = dest.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        symlink(&victim, staging.join("tree/b")).unwrap();
        let dirs = vec![DirMeta { parts: vec!["tree".into()], mode: 0o750, mtime: 1 }];
        let resume = |staging: &Path| {
            Unpacker::resumable(
                dest.path(),
                staging.to_owned(),
                vec!["tree".into()],
                Some(dirs.clone()),
            )
            .unwrap()
        };
        let mut unpacker = resume(&staging);
        unpacker
            .unpack_from(&tar[at[2] as usize..], at[2], |_| Ok::<(), ArchiveError>(()))
            .unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(staging.join("tree/b")).unwrap(), b"second");
        let placed = unpacker.commit(false).unwrap();
        assert_eq!(placed, [dest.path().join("tree")]);
        assert_eq!(mode(&dest.path().join("tree")), 0o750, "the recorded directory's mode");
        assert!(!staging.exists());

        // Only the first entry after the resume point is replaced: a later one that
        // exists is the archive naming a path twice.
        let staging = dest.path().join("s2");
        fs::create_dir_all(staging.join("tree")).unwrap();
        set_mode(&staging, 0o700);
        fs::write(staging.join("tree/b"), b"earlier").unwrap();
        let mut unpacker = resume(&staging);
        let err =
            unpacker.unpack_from(&tar[at[1] as usize..], at[1], |_| Ok::<(), ArchiveError>(()));
        assert!(matches!(err, Err(ArchiveError::Unsafe { .. })), "{err:?}");
        assert!(staging.exists(), "kept for a later run");
    }

    /// Issue 14: another local user who can write the target renamed staging away
    /// mid-extraction and put a symlink to a directory outside in its place. Entries
    /// went through the symlink, and the run committed what was left, exit 0.
    #[test]
    fn staging_swapped_for_a_symlink_mid_run_writes_nothing_outside_and_fails() {
        let root = TempDir::new().unwrap();
        let dest = root.path().join("dest");
        let outside = root.path().join("outside");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&outside).unwrap();
        let (tar, _) = three_entries();
        let staging = dest.join(".pcp-x.partial");
        let moved = dest.join("moved");
        let mut unpacker =
            Unpacker::resumable(&dest, staging.clone(), vec!["tree".into()], None).unwrap();
        let mut swapped = false;
        let err = unpacker
            .unpack_from(&tar[..], 0, |_: &Checkpoint| {
                // Between the first entry and the next: the other user's move.
                if !std::mem::replace(&mut swapped, true) {
                    fs::rename(&staging, &moved).unwrap();
                    symlink(&outside, &staging).unwrap();
                }
                Ok::<(), ArchiveError>(())
            })
            .unwrap_err();
        assert!(names_in(&outside).is_empty(), "nothing outside: {:?}", names_in(&outside));
        let ArchiveError::StagingReplaced { ref path } = err else { panic!("{err:?}") };
        assert_eq!(*path, staging);
        assert!(err.to_string().contains("was replaced while receiving; nothing was moved"));
        assert!(!err.is_refusal(), "the peer is not at fault");
        // The entries went where staging really is, and commit moves none of it.
        assert_eq!(names_in(&moved.join("tree")), ["a", "b"]);
        let err = unpacker.commit(false).unwrap_err();
        assert!(matches!(err, ArchiveError::StagingReplaced { .. }), "{err:?}");
        assert_eq!(names_in(&dest), [".pcp-x.partial", "moved"]);
        assert!(names_in(&outside).is_empty());
    }

    #[test]
    fn top_level_kinds_and_the_entry_count_are_held_to_the_offer() {
        use crate::message::TopKind;
        let announce = |kinds: Vec<TopKind>, entries| Announced {
            names: vec!["d".into(), "f".into()],
            kinds,
            entries: Some(entries),
        };
        let good = || {
            let mut tar = Vec::new();
            dir(&mut tar, "d");
            file(&mut tar, "d/x");
            file(&mut tar, "f");
            tar.extend_from_slice(&[0; 1024]);
            tar
        };
        let unpack = |announced: Announced, tar: &[u8]| {
            let dest = TempDir::new().unwrap();
            let mut unpacker = Unpacker::new(dest.path(), announced).unwrap();
            unpacker.unpack(tar).map(|()| unpacker.commit(false).unwrap().len())
        };
        assert_eq!(unpack(announce(vec![TopKind::Folder, TopKind::File], 3), &good()).unwrap(), 2);
        // `d` announced as a file, `f` as a folder.
        for kinds in [vec![TopKind::File, TopKind::File], vec![TopKind::Folder, TopKind::Folder]] {
            let err = unpack(announce(kinds, 3), &good()).unwrap_err();
            assert!(matches!(err, ArchiveError::KindMismatch { .. }), "{err:?}");
            assert!(err.is_refusal());
            let shown = err.to_string();
            assert!(shown.contains("announced as a f"), "{shown}");
        }
        let err = unpack(announce(vec![TopKind::Folder, TopKind::File], 2), &good()).unwrap_err();
        assert!(matches!(err, ArchiveError::TooManyEntries { offered: 2 }), "{err:?}");
        assert_eq!(err.to_string(), "refused archive: more entries than the 2 offered");
        let err = unpack(announce(vec![TopKind::Folder, TopKind::File], 4), &good()).unwrap_err();
        assert!(matches!(err, ArchiveError::FewerEntries { offered: 4, got: 3 }), "{err:?}");
    }

    /// Issue 14 item 4: the tar crate's header errors carry the header's raw text.
    #[test]
    fn a_corrupt_header_is_fixed_text_without_peer_bytes() {
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        let mut bad = Header::new_gnu();
        let name = b"d/]52;c;cGNw[2J";
        bad.as_old_mut().name[..name.len()].copy_from_slice(name);
        bad.set_entry_type(EntryType::Regular);
        bad.set_size(0);
        bad.set_cksum();
        let mut bytes = bad.as_bytes().to_vec();
        // A checksum field of escapes: the crate quotes it in its error.
        bytes[148..156].copy_from_slice(b"\x1b[31m!!!");
        tar.extend_from_slice(&bytes);
        tar.extend_from_slice(&[0; 1024]);
        let dest = TempDir::new().unwrap();
        let mut unpacker = Unpacker::new(dest.path(), vec!["d".into()]).unwrap();
        let err = unpacker.unpack(&tar[..]).unwrap_err();
        assert!(matches!(err, ArchiveError::CorruptHeader { offset: 512 }), "{err:?}");
        assert_eq!(err.to_string(), "refused archive: a corrupt tar header at offset 512");
        assert!(std::error::Error::source(&err).is_none(), "no cause carries the header");
        assert!(err.is_refusal());
    }

    /// Depth-first and other orders: modes and mtimes land whatever the order, a
    /// read-only directory included, and a directory entered again keeps its own.
    #[test]
    fn modes_and_mtimes_land_in_any_order() {
        let mut tar = Vec::new();
        let entry = |tar: &mut Vec<u8>, kind, name: &str, mode: u32, mtime: u64| {
            let mut h = Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_mtime(mtime);
            h.set_size(0);
            h.set_cksum();
            tar.extend_from_slice(h.as_bytes());
        };
        entry(&mut tar, EntryType::Directory, "t", 0o755, 1_000);
        entry(&mut tar, EntryType::Directory, "t/ro", 0o555, 2_000);
        entry(&mut tar, EntryType::Regular, "t/ro/f", 0o644, 3_000);
        entry(&mut tar, EntryType::Directory, "t/a", 0o750, 4_000);
        entry(&mut tar, EntryType::Directory, "t/a/b", 0o700, 5_000);
        // Back into `t/ro` (read-only, left already) and `t/a`, then deep again.
        entry(&mut tar, EntryType::Regular, "t/ro/g", 0o600, 6_000);
        entry(&mut tar, EntryType::Regular, "t/a/h", 0o600, 7_000);
        entry(&mut tar, EntryType::Regular, "t/a/b/c/i", 0o600, 8_000);
        tar.extend_from_slice(&[0; 1024]);
        let dest = TempDir::new().unwrap();
        let mut unpacker = Unpacker::new(dest.path(), vec!["t".into()]).unwrap();
        unpacker.unpack(&tar[..]).unwrap();
        unpacker.commit(false).unwrap();
        let t = dest.path().join("t");
        let umask = probed_umask();
        for (path, want_mode, want_mtime) in [
            ("", 0o755, 1_000),
            ("ro", 0o555, 2_000),
            ("a", 0o750, 4_000),
            ("a/b", 0o700, 5_000),
            ("ro/f", 0o644, 3_000),
            ("ro/g", 0o600, 6_000),
        ] {
            let p = t.join(path);
            assert_eq!(mode(&p), want_mode & !umask, "mode of t/{path}");
            assert_eq!(mtime(&p), want_mtime, "mtime of t/{path}");
        }
        assert!(t.join("a/b/c/i").is_file());
        set_mode(&t.join("ro"), 0o755);
    }

    #[test]
    fn check_finds_what_was_recorded_and_nothing_else() {
        let dest = TempDir::new().unwrap();
        let staging = dest.path().join("s");
        let (tar, _) = three_entries();
        let mut unpacker =
            Unpacker::resumable(dest.path(), staging.clone(), vec!["tree".into()], None).unwrap();
        let mut seen = Vec::new();
        unpacker
            .unpack_from(&tar[..], 0, |c: &Checkpoint| {
                seen.push(c.clone());
                Ok::<(), ArchiveError>(())
            })
            .unwrap();
        let parts = |name: &str| name.split('/').map(str::to_owned).collect::<Vec<_>>();
        for c in &seen {
            unpacker.check(&parts(&c.name), &c.entry).unwrap();
        }
        let a = &seen[1];
        fs::write(staging.join("tree/a"), b"firsT").unwrap();
        let err = unpacker.check(&parts(&a.name), &a.entry).unwrap_err();
        assert!(err.to_string().ends_with("its bytes differ"), "{err}");
        fs::remove_file(staging.join("tree/a")).unwrap();
        symlink(dest.path().join("elsewhere"), staging.join("tree/a")).unwrap();
        let err = unpacker.check(&parts(&a.name), &a.entry).unwrap_err();
        assert!(err.to_string().ends_with("its type differs"), "{err}");
        // A symlink in place of a parent directory is never followed.
        fs::rename(staging.join("tree"), staging.join("real")).unwrap();
        symlink("real", staging.join("tree")).unwrap();
        let err = unpacker.check(&parts(&seen[2].name), &seen[2].entry).unwrap_err();
        assert!(err.to_string().contains("not a real directory"), "{err}");
    }

    #[test]
    fn a_resumed_unpacker_needs_a_real_staging_directory() {
        let dest = TempDir::new().unwrap();
        let staging = dest.path().join("s");
        symlink(dest.path(), &staging).unwrap();
        let resume = |staging: &Path| {
            Unpacker::resumable(dest.path(), staging.to_owned(), vec!["t".into()], Some(vec![]))
        };
        let untrusted = |r: Result<Unpacker, ArchiveError>, why: &str| {
            let err = r.unwrap_err();
            assert!(matches!(err, ArchiveError::UntrustedStaging { .. }), "{err:?}");
            let shown = err.to_string();
            assert!(shown.contains(&staging.display().to_string()), "names the path: {shown}");
            assert!(shown.contains(why), "{shown}");
            assert!(!shown.contains("--force"), "the flag is the binary's word: {shown}");
        };
        untrusted(resume(&staging), "symbolic link");
        let r = Unpacker::resumable(dest.path(), staging.clone(), vec!["t".into()], None);
        assert!(matches!(r, Err(ArchiveError::Staging { .. })), "a fresh one is created anew");

        fs::remove_file(&staging).unwrap();
        fs::create_dir(&staging).unwrap();
        set_mode(&staging, 0o755);
        untrusted(resume(&staging), "mode");
        set_mode(&staging, 0o700);
        assert!(resume(&staging).is_ok(), "a 0700 directory of ours is resumed");
        if rustix::process::geteuid().is_root() {
            let nobody = rustix::process::Uid::from_raw(65534);
            rustix::fs::chown(&staging, Some(nobody), None).unwrap();
            untrusted(resume(&staging), "owned by another user");
        } else {
            #[allow(clippy::print_stderr)] // say the case was skipped, not passed
            {
                eprintln!("not root: the other-owner case is skipped");
            }
        }
    }
}
