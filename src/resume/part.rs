//! A receiver's part: the one owner of what a receiver keeps for a resume, and of every
//! name it is kept under.
//!
//! | what | a file `NAME` | a folder in `DIR` |
//! |------|---------------|-------------------|
//! | the part | `NAME.pcp-part` (the verified bytes so far) | `DIR/.pcp-ID.partial/` (staging) |
//! | its manifest | `….manifest` | `….manifest` |
//! | the manifest's temporary | `….manifest.tmp` | `….manifest.tmp` |
//! | the kept identity | `….key` | `….key` |
//!
//! `ID` is the first 16 hex digits of blake3 over the offer's entry names joined by NUL,
//! so that a rerun of the same transfer finds its staging again.
//!
//! # Invariants
//! - Every one of these names is computed here, and only here: the sink, the receiver,
//!   [`mod@crate::leftovers`] and the manifest code ask a [`Part`] (or use the suffixes
//!   below), never append a suffix of their own.
//! - A file kept here is reopened only if it is ours ([`fsx::open_ours`]: a regular file
//!   owned by the effective uid, no group or other write bit, one link, never through a
//!   symlink). A key file, the receiver's kept identity or `pcp node --key`, is read by
//!   one reader ([`read_key_file`]), which applies those rules and reads at most
//!   [`MAX_KEY_FILE`] bytes.
//! - [`Part::discard`] removes the part (a staging directory with everything in it) and
//!   every side file; it never follows a symlink at any of the names.

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libp2p::identity::{DecodingError, Keypair};

use super::{JournalKey, Prefix, Records, ResumeError};
use crate::fsx::{self, OwnershipError};
use crate::message::Offer;

/// Suffix of a file's part.
pub(crate) const PART_SUFFIX: &str = ".pcp-part";
/// Prefix of a folder's staging directory.
pub(crate) const STAGING_PREFIX: &str = ".pcp-";
/// Suffix of a folder's staging directory.
pub(crate) const STAGING_SUFFIX: &str = ".partial";
/// Suffix of a part's manifest.
pub(crate) const MANIFEST_SUFFIX: &str = ".manifest";
/// Suffix of a manifest's temporary, beside the manifest.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// Suffix of a part's kept identity.
pub(crate) const KEY_SUFFIX: &str = ".key";

/// The most a key file may hold: an ed25519 key is 68 bytes encoded.
pub(crate) const MAX_KEY_FILE: u64 = 4096;

/// `path` with `suffix` appended to its last component.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A receiver's part file or staging directory, and the side files beside it (see the
/// module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    path: PathBuf,
}

impl Part {
    /// The part a file received as `dest` is written through.
    #[must_use]
    pub(crate) fn for_file(dest: &Path) -> Part {
        Part { path: with_suffix(dest, PART_SUFFIX) }
    }

    /// The staging directory a folder whose entries are `names` is extracted into, in
    /// `dir`.
    #[must_use]
    pub(crate) fn for_folder(dir: &Path, names: &[String]) -> Part {
        let id = blake3::hash(names.join("\0").as_bytes()).to_hex();
        Part { path: dir.join(format!("{STAGING_PREFIX}{}{STAGING_SUFFIX}", &id[..16])) }
    }

    /// The part at `path`, as found on disk (a leftover, a test's).
    #[must_use]
    pub(crate) fn at(path: impl Into<PathBuf>) -> Part {
        Part { path: path.into() }
    }

    /// The part whose manifest is `manifest`, if that is a manifest's name.
    #[must_use]
    pub(crate) fn of_manifest(manifest: &Path) -> Option<Part> {
        let part = manifest.to_str()?.strip_suffix(MANIFEST_SUFFIX)?;
        Some(Part::at(part))
    }

    /// The part file or staging directory.
    #[must_use]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Its manifest.
    #[must_use]
    pub(crate) fn manifest(&self) -> PathBuf {
        with_suffix(&self.path, MANIFEST_SUFFIX)
    }

    /// Its manifest's temporary, written whole and renamed over [`Part::manifest`].
    #[must_use]
    pub(crate) fn manifest_tmp(&self) -> PathBuf {
        with_suffix(&self.manifest(), TMP_SUFFIX)
    }

    /// Its kept identity.
    #[must_use]
    pub(crate) fn key(&self) -> PathBuf {
        with_suffix(&self.path, KEY_SUFFIX)
    }

    /// Whether anything is at the part's name (a symlink included: never followed).
    #[must_use]
    pub(crate) fn is_there(&self) -> bool {
        self.path.symlink_metadata().is_ok()
    }

    /// What of it can be resumed for `offer`: [`super::load`].
    ///
    /// # Errors
    /// As [`super::load`].
    pub(crate) fn load(&self, offer: &Offer, key: &JournalKey) -> Result<Prefix, ResumeError> {
        super::load(&self.path, offer, key)
    }

    /// The identity an earlier run kept beside the part: `None` when there is none, or
    /// when our own key file holds no key (damaged, or longer than [`MAX_KEY_FILE`]), so
    /// that a fresh identity is used and replaces it.
    ///
    /// # Errors
    /// [`ResumeError::NotOurs`] when the file at the key's name is not ours
    /// ([`fsx::open_ours`]): it MUST never become the receiver's identity; other I/O
    /// errors.
    pub(crate) fn load_identity(&self) -> Result<Option<Keypair>, ResumeError> {
        match read_key_file(&self.key())? {
            KeyFile::Missing => Ok(None),
            KeyFile::TooLarge => {
                let path = self.key();
                tracing::info!(path = %path.display(), "the kept identity is too long: a fresh one");
                Ok(None)
            }
            KeyFile::Read { key, .. } => Ok(key.ok().map(|k| *k)),
        }
    }

    /// Keeps `key` beside the part for a later run ([`Part::load_identity`]), replacing
    /// what was there (never writing through it).
    ///
    /// # Errors
    /// I/O errors, naming the key file.
    pub(crate) fn save_identity(&self, key: &Keypair) -> Result<(), ResumeError> {
        let path = self.key();
        let err = |source| ResumeError::Io { path: path.clone(), source };
        if matches!(self.load_identity(), Ok(Some(k)) if k.public() == key.public()) {
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

    /// The offer an earlier run's manifest names, if that manifest is ours and its
    /// header verifies under the identity kept beside it (also ours): what says which
    /// transfer a leftover belongs to ([`mod@crate::leftovers`]). `None` for anything
    /// else.
    #[must_use]
    pub(crate) fn kept_offer(&self) -> Option<Offer> {
        let identity = self.load_identity().ok().flatten()?;
        let file = super::open_manifest(&self.path).ok().flatten()?;
        Records::open(file, &JournalKey::of(&identity)).ok().flatten().map(|(offer, _)| offer)
    }

    /// Removes the part file, or the staging directory with everything in it (never
    /// following a symlink at its name). Best effort.
    pub(crate) fn discard_data(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.is_dir() => {
                // Directories extracted so far are still 0o700: nothing blocks the removal.
                let _ = std::fs::remove_dir_all(&self.path);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
            Err(_) => {}
        }
    }

    /// Removes the files kept beside the part for a resume (manifest and identity).
    /// Best effort.
    pub(crate) fn discard_side_files(&self) {
        let _ = std::fs::remove_file(self.manifest());
        let _ = std::fs::remove_file(self.key());
    }

    /// Removes everything: the part ([`Part::discard_data`]) and its side files.
    pub(crate) fn discard(&self) {
        self.discard_side_files();
        self.discard_data();
    }
}

/// What [`read_key_file`] found at a key file's name.
#[derive(Debug)]
pub(crate) enum KeyFile {
    /// Nothing is there.
    Missing,
    /// A file of ours, larger than [`MAX_KEY_FILE`]: no key.
    TooLarge,
    /// A file of ours: its key (or why it holds none), and its permission bits.
    Read {
        /// The key, decoded from libp2p's protobuf encoding (boxed: a keypair is large).
        key: Result<Box<Keypair>, DecodingError>,
        /// `st_mode & 0o7777` of the opened file.
        mode: u32,
    },
}

/// Reads a key file: the receiver's kept identity, or `pcp node --key`. The one reader
/// of key files: it opens the file with [`fsx::open_ours`] (never through a symlink; a
/// regular file owned by the effective uid, with no group or other write bit and one
/// link) and reads at most [`MAX_KEY_FILE`] bytes of it.
///
/// # Errors
/// [`OwnershipError`] when the file is not ours, or when opening or reading it fails
/// (never for a missing file: [`KeyFile::Missing`]).
pub(crate) fn read_key_file(path: &Path) -> Result<KeyFile, OwnershipError> {
    let io = |source| OwnershipError::Io { path: path.to_owned(), source };
    let file = match fsx::open_ours(path, false) {
        Ok(file) => file,
        Err(e) if e.is_not_found() => return Ok(KeyFile::Missing),
        Err(e) => return Err(e),
    };
    let mode = file.metadata().map_err(io)?.mode() & 0o7777;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Ok(KeyFile::TooLarge);
    }
    Ok(KeyFile::Read { key: Keypair::from_protobuf_encoding(&bytes).map(Box::new), mode })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::leftovers::{LeftoverKind, kind_of};
    use crate::message::Kind;

    fn name(path: &Path) -> &str {
        path.file_name().and_then(|n| n.to_str()).expect("a UTF-8 name")
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn offer(kind: Kind) -> Offer {
        Offer {
            kind,
            name: "a.bin".into(),
            size: Some(1 << 20),
            entries: vec!["d".into()],
            chunk_size: crate::pipeline::MIN_CHUNK_SIZE,
            files: None,
            kinds: Vec::new(),
        }
    }

    /// Every name a part is kept under comes from here, and is what `pcp clean` (the
    /// leftovers) recognises, of the right kind; a manifest leads back to its part.
    #[test]
    fn names_are_computed_once_and_recognised_as_leftovers() {
        let dir = Path::new("/somewhere");
        let file = Part::for_file(&dir.join("a.bin"));
        assert_eq!(file.path(), dir.join("a.bin.pcp-part"));
        let folder = Part::for_folder(dir, &["d".into(), "e.txt".into()]);
        assert_eq!(folder.path().parent(), Some(dir));
        assert!(
            name(folder.path()).starts_with(".pcp-") && name(folder.path()).ends_with(".partial")
        );
        assert_eq!(name(folder.path()).len(), ".pcp-".len() + 16 + ".partial".len());
        assert_eq!(
            folder,
            Part::for_folder(dir, &["d".into(), "e.txt".into()]),
            "a rerun finds it"
        );
        assert_ne!(folder, Part::for_folder(dir, &["d".into()]), "another transfer's is another");
        for (part, kind) in [(&file, LeftoverKind::Part), (&folder, LeftoverKind::Staging)] {
            assert_eq!(kind_of(name(part.path())), Some(kind), "{part:?}");
            assert_eq!(kind_of(name(&part.manifest())), Some(LeftoverKind::Manifest));
            assert_eq!(kind_of(name(&part.manifest_tmp())), Some(LeftoverKind::Manifest));
            assert_eq!(kind_of(name(&part.key())), Some(LeftoverKind::Key));
            assert_eq!(part.manifest().parent(), Some(dir));
            assert_eq!(part.key().parent(), Some(dir));
            assert_eq!(Part::of_manifest(&part.manifest()).as_ref(), Some(part));
            assert_eq!(Part::at(part.path()), *part);
        }
        assert_eq!(Part::of_manifest(&file.key()), None, "a key file is no manifest");
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// `discard` leaves nothing of a part: the part file or the staging directory (with
    /// a read-only directory inside), the manifest and the kept identity; and follows no
    /// symlink planted at the part's name.
    #[test]
    fn discard_removes_the_part_and_every_side_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mac = JournalKey::of(&key);
        let file = Part::for_file(&dir.path().join("a.bin"));
        std::fs::write(file.path(), b"12345").expect("write");
        let folder = Part::for_folder(dir.path(), &["d".into()]);
        std::fs::create_dir_all(folder.path().join("d/sub")).expect("mkdir");
        std::fs::write(folder.path().join("d/sub/f"), b"abc").expect("write");
        chmod(&folder.path().join("d/sub"), 0o700);
        for (part, kind) in [(&file, Kind::File), (&folder, Kind::Archive)] {
            super::super::Journal::create(part.path(), &offer(kind), &Prefix::default(), &mac)
                .expect("journal");
            part.save_identity(&key).expect("identity");
            assert!(part.is_there() && part.manifest().exists() && part.key().exists());
        }
        assert_eq!(names_in(dir.path()).len(), 6, "{:?}", names_in(dir.path()));
        file.discard();
        folder.discard();
        assert!(!file.is_there() && !folder.is_there());
        assert_eq!(names_in(dir.path()), Vec::<String>::new(), "nothing stays");

        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).expect("mkdir");
        std::fs::write(victim.join("keep"), b"x").expect("write");
        std::os::unix::fs::symlink(&victim, folder.path()).expect("plant");
        folder.discard();
        assert!(!folder.is_there(), "the symlink itself goes");
        assert!(victim.join("keep").exists(), "never what it points to");
    }

    /// The one reader of key files, which `pcp node --key` and the receiver's kept
    /// identity both go through: a key file writable by its group or others, or a
    /// symlink to a good key, is refused by both; one readable by its group is read.
    #[test]
    fn the_one_key_reader_refuses_a_writable_or_symlinked_key_file_for_both_users() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = Part::for_file(&dir.path().join("a.bin"));
        let node_key = dir.path().join("node.key");
        let key = libp2p::identity::Keypair::generate_ed25519();
        let bytes = key.to_protobuf_encoding().expect("encode");
        assert!(matches!(read_key_file(&part.key()), Ok(KeyFile::Missing)));
        for path in [part.key(), node_key.clone()] {
            std::fs::write(&path, &bytes).expect("write");
            chmod(&path, 0o640);
            match read_key_file(&path).expect("ours") {
                KeyFile::Read { key: Ok(k), mode } => {
                    assert_eq!(k.public(), key.public());
                    assert_eq!(mode, 0o640);
                }
                other => panic!("{other:?}"),
            }
        }
        for mode in [0o620, 0o602] {
            chmod(&part.key(), mode);
            chmod(&node_key, mode);
            let e = read_key_file(&part.key()).expect_err("writable by others");
            assert!(matches!(e, OwnershipError::Writable { .. }), "{e:?}");
            let e = part.load_identity().expect_err("never an identity");
            assert!(matches!(e, ResumeError::NotOurs(OwnershipError::Writable { .. })), "{e:?}");
            let e = crate::server::load_or_create_key(&node_key).expect_err("never a node key");
            assert!(
                matches!(e, crate::server::KeyError::NotOurs(OwnershipError::Writable { .. })),
                "{e:?}"
            );
        }
        chmod(&node_key, 0o600);
        let good = dir.path().join("good.key");
        std::fs::rename(&node_key, &good).expect("mv");
        std::fs::remove_file(part.key()).expect("rm");
        std::os::unix::fs::symlink(&good, part.key()).expect("plant");
        std::os::unix::fs::symlink(&good, &node_key).expect("plant");
        let e = read_key_file(&part.key()).expect_err("a symlink");
        assert!(matches!(e, OwnershipError::Symlink(_)), "{e:?}");
        let e = part.load_identity().expect_err("never an identity");
        assert!(matches!(e, ResumeError::NotOurs(OwnershipError::Symlink(_))), "{e:?}");
        let e = crate::server::load_or_create_key(&node_key).expect_err("never a node key");
        assert!(matches!(e, crate::server::KeyError::NotOurs(OwnershipError::Symlink(_))), "{e:?}");
        assert!(matches!(read_key_file(&good), Ok(KeyFile::Read { key: Ok(_), .. })));
    }
}
