//! What interrupted runs leave in a directory: found so that `pcp clean` can list and
//! remove it, and so that the run that completes a folder removes what earlier runs of
//! the same transfer left under another staging name (issue 15, item 11).
//!
//! The names (see the `resume` and `sink` modules): a file's `NAME.pcp-part`,
//! `NAME.pcp-part.manifest`, `NAME.pcp-part.key`; a folder's staging directory
//! `.pcp-ID.partial/` with `.pcp-ID.partial.manifest` and `.pcp-ID.partial.key`; a
//! manifest's temporary (`….manifest.tmp`) when a run died while writing it.
//!
//! # Invariants
//! - Only an entry owned by the effective user, of the type its name says (a regular
//!   file; a real directory for a staging directory), is ever listed or removed. A
//!   symlink is never followed, listed or removed: it may point anywhere.
//! - The type and owner are checked again just before removal, from the entry itself
//!   (`lstat`), and a staging directory is removed with [`std::fs::remove_dir_all`],
//!   which never follows a symlink inside.
//! - `remove_earlier` removes a set (staging, manifest, key) only when its manifest
//!   verifies under the key kept beside it and names the same transfer
//!   (`resume::same_transfer`): an unrelated or unreadable set is never touched.
//! - The size of a staging directory is what its regular files hold, walked without
//!   following symlinks.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::message::Offer;
use crate::resume::part::{
    KEY_SUFFIX, MANIFEST_SUFFIX, PART_SUFFIX as PART, STAGING_PREFIX, STAGING_SUFFIX as STAGING,
    TMP_SUFFIX,
};
use crate::resume::{self, Part};

/// Which kind of leftover an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftoverKind {
    /// A file's verified bytes so far (`NAME.pcp-part`).
    Part,
    /// A folder's staging directory (`.pcp-ID.partial/`).
    Staging,
    /// A resume manifest (`….manifest`), or its temporary (`….manifest.tmp`).
    Manifest,
    /// A receiver's kept identity (`….key`).
    Key,
}

/// One entry an interrupted run left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Where it is.
    pub path: PathBuf,
    /// What it is.
    pub kind: LeftoverKind,
    /// Its size in bytes (a staging directory: the sum of its regular files).
    pub bytes: u64,
}

/// What kind of leftover `name` would be, by name alone (the names are [`Part`]'s).
pub(crate) fn kind_of(name: &str) -> Option<LeftoverKind> {
    let base = name
        .strip_suffix(TMP_SUFFIX)
        .and_then(|b| b.strip_suffix(MANIFEST_SUFFIX))
        .or_else(|| name.strip_suffix(MANIFEST_SUFFIX))
        .map(|b| (b, LeftoverKind::Manifest))
        .or_else(|| name.strip_suffix(KEY_SUFFIX).map(|b| (b, LeftoverKind::Key)));
    let (base, side) = match base {
        Some((b, k)) => (b, Some(k)),
        None => (name, None),
    };
    let staging =
        base.starts_with(STAGING_PREFIX) && base.len() > STAGING_PREFIX.len() + STAGING.len();
    match side {
        Some(k) if base.ends_with(PART) || (staging && base.ends_with(STAGING)) => Some(k),
        Some(_) => None,
        None if base.ends_with(PART) && base.len() > PART.len() => Some(LeftoverKind::Part),
        None if staging && base.ends_with(STAGING) => Some(LeftoverKind::Staging),
        None => None,
    }
}

/// Whether `meta` (from `lstat`) is ours and of the type `kind` names.
fn fits(meta: &std::fs::Metadata, kind: LeftoverKind) -> bool {
    let typed = match kind {
        LeftoverKind::Staging => meta.file_type().is_dir(),
        _ => meta.file_type().is_file(),
    };
    typed && meta.uid() == rustix::process::geteuid().as_raw()
}

/// The bytes the regular files under `dir` hold, never following a symlink.
fn size_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// What interrupted runs left in `dir` (not below it), sorted by name: only entries
/// owned by the effective user, of the type their name says, never a symlink.
///
/// # Errors
/// `dir` cannot be read.
pub fn leftovers(dir: &Path) -> io::Result<Vec<Leftover>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(kind) = entry.file_name().to_str().and_then(kind_of) else { continue };
        // `DirEntry::metadata` does not follow a symlink.
        let Ok(meta) = entry.metadata() else { continue };
        if !fits(&meta, kind) {
            continue;
        }
        let path = entry.path();
        let bytes = if kind == LeftoverKind::Staging { size_under(&path) } else { meta.len() };
        found.push(Leftover { path, kind, bytes });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Removes `leftover`, after checking again that it is ours and of its type.
///
/// # Errors
/// It changed since it was found (no longer ours, or of another type), or the removal
/// failed.
pub fn remove(leftover: &Leftover) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(&leftover.path)?;
    if !fits(&meta, leftover.kind) {
        return Err(io::Error::other("changed since it was listed"));
    }
    match leftover.kind {
        LeftoverKind::Staging => std::fs::remove_dir_all(&leftover.path),
        _ => std::fs::remove_file(&leftover.path),
    }
}

/// After a folder arrived whole through `staging`: removes what earlier runs of the
/// same transfer (`offer`) left beside it under another staging name, each set only
/// when its manifest verifies under its own kept key and names this transfer. Returns
/// what was removed. Failures are logged and skipped: the transfer itself succeeded.
pub(crate) fn remove_earlier(staging: &Part, offer: &Offer) -> Vec<PathBuf> {
    let Some(dir) = staging.path().parent() else { return Vec::new() };
    let found = match leftovers(dir) {
        Ok(found) => found,
        Err(e) => {
            tracing::info!(dir = %dir.display(), error = %e, "cannot look for earlier runs");
            return Vec::new();
        }
    };
    let mut removed = Vec::new();
    for manifest in found.iter().filter(|l| l.kind == LeftoverKind::Manifest) {
        let Some(part) = Part::of_manifest(&manifest.path) else { continue };
        let is_staging = part
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| kind_of(n) == Some(LeftoverKind::Staging));
        if part == *staging || !is_staging {
            continue;
        }
        if !part.kept_offer().is_some_and(|theirs| resume::same_transfer(&theirs, offer)) {
            continue;
        }
        let key = part.key();
        let set = found
            .iter()
            .filter(|l| l.path == part.path() || l.path == key || l.path == manifest.path);
        // The manifest last: without it a set is no longer recognised as this transfer's.
        let mut set: Vec<&Leftover> = set.collect();
        set.sort_by_key(|l| l.kind == LeftoverKind::Manifest);
        for l in set {
            match remove(l) {
                Ok(()) => removed.push(l.path.clone()),
                Err(e) => tracing::info!(path = %l.path.display(), error = %e, "cannot remove"),
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_told_apart() {
        let cases = [
            ("a.bin.pcp-part", Some(LeftoverKind::Part)),
            ("a.bin.pcp-part.manifest", Some(LeftoverKind::Manifest)),
            ("a.bin.pcp-part.manifest.tmp", Some(LeftoverKind::Manifest)),
            ("a.bin.pcp-part.key", Some(LeftoverKind::Key)),
            (".pcp-0123456789abcdef.partial", Some(LeftoverKind::Staging)),
            (".pcp-0123456789abcdef.partial.manifest", Some(LeftoverKind::Manifest)),
            (".pcp-0123456789abcdef.partial.key", Some(LeftoverKind::Key)),
            (".pcp-part", None),
            ("notes.partial", None),
            ("notes.partial.key", None),
            ("a.key", None),
            ("a.manifest", None),
            ("a.bin", None),
        ];
        for (name, want) in cases {
            assert_eq!(kind_of(name), want, "{name}");
        }
    }

    #[test]
    fn only_our_regular_entries_are_listed_and_symlinks_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("a.pcp-part"), b"12345").expect("write");
        std::fs::write(d.join("a.pcp-part.key"), b"k").expect("write");
        std::fs::write(d.join("keep.txt"), b"x").expect("write");
        let staging = d.join(".pcp-0123456789abcdef.partial");
        std::fs::create_dir_all(staging.join("sub")).expect("mkdir");
        std::fs::write(staging.join("sub/f"), b"abc").expect("write");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("big"), vec![0u8; 1000]).expect("write");
        std::os::unix::fs::symlink(outside.path(), staging.join("link")).expect("symlink");
        // Symlinks under leftover names: neither listed nor followed.
        std::os::unix::fs::symlink(outside.path().join("big"), d.join("b.pcp-part"))
            .expect("symlink");
        std::os::unix::fs::symlink(outside.path(), d.join(".pcp-fedcba9876543210.partial"))
            .expect("symlink");
        // A directory under a file's name, a file under a staging name: not ours to list.
        std::fs::create_dir(d.join("c.pcp-part")).expect("mkdir");
        std::fs::write(d.join(".pcp-aaaaaaaaaaaaaaaa.partial"), b"x").expect("write");

        let found = leftovers(d).expect("list");
        let got: Vec<(String, LeftoverKind, u64)> = found
            .iter()
            .map(|l| (l.path.file_name().unwrap().to_string_lossy().into_owned(), l.kind, l.bytes))
            .collect();
        assert_eq!(
            got,
            [
                (".pcp-0123456789abcdef.partial".into(), LeftoverKind::Staging, 3),
                ("a.pcp-part".into(), LeftoverKind::Part, 5),
                ("a.pcp-part.key".into(), LeftoverKind::Key, 1),
            ]
        );
        for l in &found {
            remove(l).expect("remove");
        }
        assert!(outside.path().join("big").exists(), "a symlink's target survives");
        let mut left: Vec<_> = std::fs::read_dir(d)
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".pcp-aaaaaaaaaaaaaaaa.partial",
                ".pcp-fedcba9876543210.partial",
                "b.pcp-part",
                "c.pcp-part",
                "keep.txt"
            ]
        );
    }

    #[test]
    fn a_leftover_swapped_for_a_symlink_is_not_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("a.pcp-part");
        std::fs::write(&part, b"1").expect("write");
        let found = leftovers(dir.path()).expect("list");
        std::fs::remove_file(&part).expect("rm");
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep").expect("write");
        std::os::unix::fs::symlink(&target, &part).expect("symlink");
        assert!(remove(&found[0]).is_err());
        assert!(part.symlink_metadata().is_ok() && target.exists());
    }
}
