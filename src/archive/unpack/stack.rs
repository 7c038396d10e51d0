//! The stack of open directories every entry is created through, and the modes and
//! mtimes of directories, applied as the stream leaves them.
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

use std::collections::HashMap;
use std::io;

use rustix::io::Errno;

use super::{
    ArchiveError, Dir, Identity, MAX_EXCEPTION_BYTES, MAX_EXCEPTIONS, Unpacker, WORKING_DIR_MODE,
    dir, is_not_dir, limit, refuse,
};
use crate::message::TopKind;

/// A directory's own permission bits (already masked) and mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) mtime: i64,
}

/// An open directory on the stack.
#[derive(Debug)]
pub(super) struct Frame {
    name: String,
    dir: Dir,
    /// Applied when the stream leaves it: its entry's, an earlier run's, or what it had
    /// when it was entered again.
    meta: Option<Meta>,
}

/// Read-only directories to finish at commit; see the module docs.
#[derive(Debug, Default)]
pub(super) struct Exceptions {
    pub(super) list: Vec<(Vec<String>, Meta, Identity)>,
    index: HashMap<Identity, usize>,
    bytes: usize,
}

impl Unpacker {
    /// The directory the last walk ended in: the parent of the entry being extracted.
    pub(super) fn current(&self) -> &Dir {
        self.stack.last().map_or(&self.staging, |f| &f.dir)
    }

    /// Makes the stack hold the directories of `parts`: all of them for a directory
    /// entry (`own` is its meta), all but the last otherwise. Returns the entry's last
    /// component. Pops what the stream left (applying metas), pushes what it enters.
    pub(super) fn walk<'p>(
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
    pub(super) fn pop(&mut self) -> Result<(), ArchiveError> {
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
    pub(super) fn settle_resumed(&mut self) -> Result<(), ArchiveError> {
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

/// Nothing there, or a directory (`EISDIR` on Linux, `EPERM` where POSIX allows it).
fn ignorable_unlink(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || [Errno::ISDIR, Errno::PERM].iter().any(|x| e.raw_os_error() == Some(x.raw_os_error()))
}
