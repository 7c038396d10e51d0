//! What the resume journal keeps of an extraction, and what a resumed run takes back.
//!
//! After each entry, [`Unpacker::unpack_from`] hands the journal a [`Checkpoint`]: where
//! the next entry begins and what this one became ([`Extracted`]). A resumed run opens the
//! staging directory an earlier run left only if it is ours alone ([`open_resumed`]),
//! takes back the directory modes and mtimes that run recorded ([`resumed_metas`]), and
//! the journal's reader checks that staging still holds what was recorded
//! ([`Unpacker::check`]).
//!
//! # Invariants
//!
//! - A resumed staging directory MUST be a real directory (never a symlink), owned by
//!   the effective user, mode exactly `0o700`.
//! - Recorded directories come from a file on disk: they MUST meet the rule every entry
//!   name meets, and their modes are masked with the umask again.
//! - A directory whose mode lacks the owner's `rwx` MUST be kept by the journal until
//!   commit, which is when its mode is applied.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rustix::fs::FileType;

use super::stack::Meta;
use super::{
    ArchiveError, Dir, MAX_DEPTH, MAX_EXCEPTIONS, MODE_MASK, Unpacker, WORKING_DIR_MODE, dir,
    entry_parts, is_not_dir, limit,
};

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

impl Unpacker {
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

/// Opens a staging directory an earlier run left, if it is ours alone: a directory
/// (never a symlink), owned by the effective user, mode exactly `0o700`.
pub(super) fn open_resumed(dest: &Dir, name: &str, path: &Path) -> Result<Dir, ArchiveError> {
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
pub(super) fn resumed_metas(
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
