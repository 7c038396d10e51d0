//! Commit: the staged top-level entries moved into the target, between handles.
//!
//! # Invariants
//!
//! - Nothing moves unless staging's name in the target still leads to the directory
//!   opened as staging (same device and inode): otherwise
//!   [`ArchiveError::StagingReplaced`], and nothing is written.
//! - Without `force`, each move is `renameat2(RENAME_NOREPLACE)`: what another process
//!   creates under a final name after the check stays.
//! - With `force`, a directory onto a directory merges, and a file or symlink onto a
//!   file or symlink replaces it (`renameat`, which replaces the link itself, never
//!   its target). A directory never replaces a non-directory, nor the reverse
//!   ([`ArchiveError::KindClash`]).
//! - Read-only directories get their modes last, deepest first, each through a handle
//!   opened beneath the target without following a symlink, and only if it is the very
//!   directory staged: a directory merged into keeps the receiver's mode and mtime.

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use super::{ArchiveError, Dir, Identity, Unpacker, dir};

impl Unpacker {
    /// Moves each announced top-level entry from staging into `dest`, gives read-only
    /// directories their modes, and removes staging.
    ///
    /// Returns the final paths, in announced order. Without `force` every target is
    /// checked before anything moves, so a refusal leaves `dest` untouched. Commit is not
    /// atomic across several top-level entries, but each entry that lands on a free name
    /// lands in one rename. See the module docs for `force`.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::Incomplete`] if an announced entry never arrived,
    /// [`ArchiveError::Exists`] if a target exists and `force` is false,
    /// [`ArchiveError::StagingReplaced`], [`ArchiveError::KindClash`], and
    /// [`ArchiveError::Commit`] if a move fails.
    pub(crate) fn commit(mut self, force: bool) -> Result<Vec<PathBuf>, ArchiveError> {
        // An unpacker committed without reaching the end of a stream still leaves its
        // open directories first.
        while !self.stack.is_empty() {
            self.pop()?;
        }
        for name in &self.announced.top {
            if self.staging.stat(name).is_err() {
                return Err(ArchiveError::Incomplete { name: name.clone() });
            }
            let target = self.dest_path.join(name);
            if !force && self.dest.stat(name).is_ok() {
                return Err(ArchiveError::Exists { path: target });
            }
        }
        self.check_staging()?;
        let mut placed = Vec::with_capacity(self.announced.top.len());
        for name in &self.announced.top {
            let target = self.dest_path.join(name);
            place(&self.staging, name, &self.dest, &target, force)?;
            placed.push(target);
        }
        self.apply_exceptions()?;
        self.done = true;
        if let Err(e) = self.remove_staging() {
            // Everything is in place; a leftover empty directory is not worth failing for.
            tracing::warn!(path = %self.staging_path.display(), error = %e, "cannot remove staging");
        }
        Ok(placed)
    }

    /// Gives each read-only directory its mode and mtime, deepest first.
    fn apply_exceptions(&mut self) -> Result<(), ArchiveError> {
        let mut list = std::mem::take(&mut self.exceptions.list);
        // Stable: of two records for one directory, the later still wins.
        list.sort_by_key(|(parts, _, _)| std::cmp::Reverse(parts.len()));
        for (parts, meta, id) in list {
            let path = || {
                let mut path = self.dest_path.clone();
                path.extend(&parts);
                path
            };
            // Gone, replaced, or merged into the receiver's own directory: not ours.
            let Ok(dir) = self.dest.open_beneath(&parts) else { continue };
            let st = dir.fstat().map_err(|source| ArchiveError::Commit { path: path(), source })?;
            if Identity::of(&st) != id {
                continue;
            }
            dir.set_meta(meta.mode, meta.mtime)
                .map_err(|source| ArchiveError::Commit { path: path(), source })?;
        }
        Ok(())
    }

    /// Empties staging through its handle, then removes its name if it still leads there.
    fn remove_staging(&self) -> io::Result<()> {
        self.staging.clear()?;
        if self.check_staging().is_ok() {
            self.dest.rmdir(&self.staging_name)?;
        }
        Ok(())
    }
}

impl Drop for Unpacker {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Every staged directory keeps the owner's rwx (read-only ones get their modes at
        // commit), so removal cannot trip over one.
        if let Err(e) = self.remove_staging()
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.staging_path.display(), error = %e, "cannot remove staging");
        }
    }
}

/// What a file type is called in a message.
fn noun(kind: FileType) -> &'static str {
    match kind {
        FileType::Directory => "a directory",
        FileType::RegularFile => "a file",
        FileType::Symlink => "a symlink",
        _ => "a special file",
    }
}

/// Moves `name` from `from` to the same name in `to` (whose final path is `target`).
/// See the module docs.
pub(super) fn place(
    from: &Dir,
    name: &str,
    to: &Dir,
    target: &Path,
    force: bool,
) -> Result<(), ArchiveError> {
    let fail = |source| ArchiveError::Commit { path: target.to_owned(), source };
    let exists = || ArchiveError::Exists { path: target.to_owned() };
    if !force {
        return from.rename_noreplace(name, to, name).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => exists(),
            _ => fail(source),
        });
    }
    let ours = dir::kind(&from.stat(name).map_err(fail)?);
    let theirs = match to.stat(name) {
        Ok(st) => dir::kind(&st),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return from.rename_noreplace(name, to, name).map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => exists(),
                _ => fail(source),
            });
        }
        Err(e) => return Err(fail(e)),
    };
    let ours_dir = ours == FileType::Directory;
    let theirs_dir = theirs == FileType::Directory;
    if ours_dir != theirs_dir {
        return Err(ArchiveError::KindClash {
            path: target.to_owned(),
            name: name.to_owned(),
            theirs: noun(theirs),
            ours: noun(ours),
        });
    }
    if !ours_dir {
        // A file or symlink onto a file or symlink: rename replaces it atomically.
        return from.rename(name, to, name).map_err(fail);
    }
    let sub_from = from.open(name).map_err(fail)?;
    let sub_to = to.open(name).map_err(fail)?;
    loop {
        // What is moved leaves the listing: read again until nothing is left.
        let names = sub_from.names(1024).map_err(fail)?;
        if names.is_empty() {
            // Emptied: gone from staging, so that the listing above moves on.
            return from.rmdir(name).map_err(fail);
        }
        for child in names {
            place(&sub_from, &child, &sub_to, &target.join(&child), force)?;
        }
    }
}
