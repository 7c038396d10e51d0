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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use tar::EntryType;
    use tempfile::TempDir;

    use super::*;
    use crate::archive::unpack::commit;
    use crate::archive::unpack::tests::{dir, mode, names_in, raw_entry, set_mode};

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
}
