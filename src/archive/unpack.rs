//! The receiver's side: a peer's tar stream extracted into staging, then committed.
//!
//! This file holds the [`Unpacker`] and its entry state machine: each entry of the stream
//! is named, counted against the offer, checked against the rules in the module docs of
//! `archive`, and created in staging, one at a time and in stream order. The rest is in
//! parts, each documenting what it keeps:
//!
//! - `unpack/announced.rs`: what the offer announced ([`Announced`]), which every entry
//!   and the commit are held to.
//! - `unpack/stack.rs`: the stack of open directories every entry is created through,
//!   and the directory modes and mtimes applied as the stream leaves them.
//! - `unpack/journal.rs`: what the resume journal records after each entry
//!   ([`Checkpoint`]), and what a resumed run takes back from it and checks.
//! - `unpack/commit.rs`: the staged entries moved into the target.
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

use std::collections::HashMap;
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
use crate::message::TopKind;

mod announced;
mod commit;
mod journal;
mod stack;

pub(crate) use announced::Announced;
use announced::Rules;
pub(crate) use journal::{Checkpoint, DirMeta, Extracted};
use journal::{open_resumed, resumed_metas};
use stack::{Exceptions, Frame, Meta};

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

// Peaks are per process: never in a run with other tests (`--include-ignored`).
#[cfg(all(test, feature = "scale"))]
mod scale;

#[cfg(test)]
mod tests;
