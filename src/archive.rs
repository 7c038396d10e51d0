//! Tar packing for the sender and safe unpacking for the receiver.
//!
//! This module owns the archive format of a file or directory transfer and the rules for
//! writing a peer's archive to disk. It depends on `tar` for the format and `filetime` for
//! timestamps, and on nothing else in pcp: the pipeline carries the archive as opaque bytes.
//! All I/O here is blocking std I/O; callers run it on a blocking thread.
//!
//! # Format
//!
//! A plain GNU tar stream (GNU long-name and long-link headers for long names):
//!
//! | Part           | Size                  | Contents                                  |
//! |----------------|-----------------------|-------------------------------------------|
//! | header         | 512 B                 | name, mode, mtime, size, type, link target |
//! | data           | size, padded to 512 B | file contents; none for dirs and links    |
//! | more entries   |                       | a directory before its children, by name  |
//! | end marker     | 2 × 512 B             | zeros                                     |
//!
//! Every entry name is `<top>/<relative path>`: `/`-separated UTF-8 whose first component
//! is one of the top-level names announced in the offer ([`top_level_names`]).
//!
//! # Invariants
//!
//! - The sender MUST never buffer the whole archive: [`pack`] streams each file through
//!   `out` as it reads it.
//! - The sender never sends sockets, fifos or devices, nor a symlink the receiver would
//!   refuse; it skips them with a warning, so a tree with one absolute link still transfers.
//! - On a pack error the archive is left without its end marker, so a truncated archive
//!   is never mistaken for a complete one.
//! - The receiver MUST refuse a GNU long-name/long-link or PAX header whose body exceeds
//!   64 KiB before the `tar` crate reads that body (which it does whole, into memory):
//!   see `archive/guard.rs`, which also refuses PAX `size` records and GNU sparse entries
//!   so that it always knows where the next header is.
//! - The receiver MUST validate every entry name and link target BEFORE creating anything
//!   for it, and never writes outside its staging directory (inside `dest`: the sink's
//!   `dest/.pcp-<id>.partial`, kept for a resume; a test's `dest/.pcp-staging-<hex>`)
//!   until [`Unpacker::commit`].
//! - A resumed unpacker ([`Unpacker::resumable`]) starts at an entry's first header, and
//!   its first entry may replace what an earlier run left at that entry's path (never
//!   a directory, never following a symlink); any later entry that finds its path taken
//!   is refused as before. The directory modes and mtimes an earlier run saw come back
//!   from the journal and meet the same name rules at commit.
//! - The receiver never writes through a symlink: every ancestor of a new entry inside
//!   staging MUST be a real directory.
//! - A symlink target MUST be relative, MUST be some `..` components followed only by names
//!   (resolved lexically, a `..` after a name could climb out through another symlink),
//!   and MUST stay inside the top-level entry that contains the link.
//! - A hard link MUST point to a regular file extracted earlier from the same archive.
//! - Ownership, setuid, setgid and sticky bits are never restored: only the `0o777`
//!   permission bits and the mtime travel, and the permission bits MUST be masked with
//!   the receiver's umask (read once per [`Unpacker`]), as `tar` does for a non-root
//!   user: a sender cannot create world-writable files or directories.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use tar::{Builder, EntryType, Header, HeaderMode};

mod guard;
use guard::HeaderGuard;

use crate::fsx::shown;
use crate::term::sanitize;

/// A tar block: headers and data are padded to it.
const BLOCK: u64 = 512;
/// The staging directory's name in `dest`, before its random suffix.
#[cfg(any(test, feature = "fuzzing"))]
const STAGING_PREFIX: &str = ".pcp-staging-";
/// The permission bits that travel; setuid, setgid and sticky never do.
const MODE_MASK: u32 = 0o777;
/// A directory's mode while its entries are being extracted and moved: owner only, and
/// always writable, so a read-only directory in the archive cannot block its own children.
const WORKING_DIR_MODE: u32 = 0o700;

/// Everything that can go wrong packing or unpacking an archive.
///
/// Every name and path in a message goes through [`crate::term::sanitize`]: on the
/// receiver they come from the peer (entries, and paths under the target), and on the
/// sender from a local tree that may hold any byte.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A path given to send does not exist.
    #[error("{}: no such file or directory", shown(.path))]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A path given to send has no final component, even canonicalized (`/`).
    #[error("{} has no file name to send it under", shown(.path))]
    NoName {
        /// The path as given.
        path: PathBuf,
    },
    /// A file name to send is not UTF-8; the receiver would refuse it.
    #[error("{}: file name is not valid UTF-8", shown(.path))]
    NonUtf8 {
        /// The local path.
        path: PathBuf,
    },
    /// A path given to send is a socket, fifo or device.
    #[error("{} is not a regular file, directory or symlink", shown(.path))]
    Special {
        /// The path as given.
        path: PathBuf,
    },
    /// Two paths given to send have the same final component.
    #[error("{} and {} would both be sent as {}", shown(.first), shown(.second), sanitize(.name))]
    DuplicateName {
        /// The shared top-level name.
        name: String,
        /// The first path with that name.
        first: PathBuf,
        /// The second path with that name.
        second: PathBuf,
    },
    /// Reading a local file or directory failed while packing.
    #[error("cannot read {}", shown(.path))]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing the archive stream failed.
    #[error("cannot write the archive stream")]
    Write {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading the archive stream failed, or it holds a corrupt header.
    #[error("cannot read the archive stream")]
    Stream {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The archive stream ended inside an entry's data.
    #[error("the archive ended inside \"{}\"", sanitize(.entry))]
    Truncated {
        /// The entry's name, from the peer.
        entry: String,
    },
    /// The peer's archive holds an entry that could write outside the target, or that pcp
    /// does not accept. Nothing was written for it.
    #[error("refused archive entry \"{}\": {reason}", sanitize(.entry))]
    Unsafe {
        /// The entry's name (`name -> target` for a hard link), from the peer.
        entry: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The peer's archive holds an extension header (GNU long name or long link, PAX)
    /// larger than pcp accepts; refused from its header, before its body was read.
    #[error("refused archive: a {what} of {size} bytes, over the {max}-byte limit")]
    ExtensionTooLarge {
        /// Which kind of extension header.
        what: &'static str,
        /// The size its header claims.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The peer's archive holds a header pcp does not accept (see `archive/guard.rs`).
    #[error("refused archive: {0}")]
    BadHeader(&'static str),
    /// The archive ended without a top-level entry the sender announced.
    #[error("the archive ended without the announced entry \"{}\"", sanitize(.name))]
    Incomplete {
        /// The announced name, from the peer.
        name: String,
    },
    /// The staging directory could not be created.
    #[error("cannot create a staging directory in {}", shown(.dest))]
    Staging {
        /// The target directory.
        dest: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing an entry into the staging directory failed.
    #[error("cannot extract \"{}\"", shown(.path))]
    Extract {
        /// The path in staging.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A final path already exists and `force` was not given.
    #[error("\"{}\" already exists", shown(.path))]
    Exists {
        /// The final path.
        path: PathBuf,
    },
    /// Moving an entry to its final path, or setting a directory's mode and mtime there,
    /// failed.
    #[error("cannot move \"{}\" into place", shown(.path))]
    Commit {
        /// The final path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// True when the peer's archive itself is at fault (a refused entry or header, a
    /// broken stream): the same bytes would fail the same way again, so nothing of it
    /// is worth keeping for a resume.
    #[must_use]
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            ArchiveError::Unsafe { .. }
                | ArchiveError::ExtensionTooLarge { .. }
                | ArchiveError::BadHeader(_)
                | ArchiveError::Stream { .. }
                | ArchiveError::Truncated { .. }
                | ArchiveError::Incomplete { .. }
        )
    }

    /// A recommendation printed under the error, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ArchiveError::Exists { .. } => {
                Some("use --force to overwrite, or -C DIR to extract elsewhere")
            }
            ArchiveError::Unsafe { .. } => Some(
                "the sender's archive tries to write outside the target; \
                 nothing was extracted outside it",
            ),
            _ => None,
        }
    }
}

/// The top-level names [`pack`] will give `paths`, in order, for the offer shown to the
/// receiver.
///
/// A name is the path's final component (`photos/` is `photos`); a path without one
/// (`.`, `..`, `dir/..`) is canonicalized first.
///
/// # Errors
///
/// [`ArchiveError::NotFound`] for a missing path, [`ArchiveError::Special`] for a socket,
/// fifo or device, [`ArchiveError::NoName`] for `/`, [`ArchiveError::NonUtf8`] for a
/// non-UTF-8 name and [`ArchiveError::DuplicateName`] when two paths share a name.
pub(crate) fn top_level_names(paths: &[PathBuf]) -> Result<Vec<String>, ArchiveError> {
    let mut names: Vec<String> = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let name = top_level_name(path)?;
        if let Some(j) = names.iter().position(|n| *n == name) {
            return Err(ArchiveError::DuplicateName {
                name,
                first: paths[j].clone(),
                second: paths[i].clone(),
            });
        }
        names.push(name);
    }
    Ok(names)
}

/// What a metadata walk of `paths` finds, without reading a byte of any file: the
/// number of entries (files, directories, links) and the length of the tar stream
/// [`pack`] will write for them (headers, GNU long-name headers, padding and the end
/// marker). It MUST follow what [`pack`] does (the symlinks it follows, the entries it
/// skips): the length is the offer's size, which the receiver holds the stream to, and
/// the sender stops with "changed while sending" if its tar would differ from it.
pub(crate) fn measure(paths: &[PathBuf]) -> (u64, u64) {
    let padded = |n: u64| n.div_ceil(BLOCK) * BLOCK;
    // A name that does not fit the header's 100 bytes gets a GNU long-name entry.
    let name_cost = |len: usize| if len > 100 { BLOCK + padded(len as u64 + 1) } else { 0 };
    let (mut entries, mut bytes) = (0u64, 2 * BLOCK);
    // (path, name in the archive, given as a path: `pack` follows those if symlinks).
    let mut todo: Vec<(PathBuf, String, bool)> =
        paths.iter().filter_map(|p| top_level_name(p).ok().map(|n| (p.clone(), n, true))).collect();
    while let Some((path, name, given)) = todo.pop() {
        let meta = if given { fs::metadata(&path) } else { fs::symlink_metadata(&path) };
        let Ok(meta) = meta else { continue };
        let kind = meta.file_type();
        // What `pack` skips costs nothing: sockets, fifos, devices, and links the
        // receiver would refuse.
        let target = if kind.is_symlink() {
            let target = fs::read_link(&path).map(|t| t.to_string_lossy().into_owned());
            let components: Vec<&str> = name.split('/').collect();
            match target {
                Ok(t) if check_symlink_target(&components, &t).is_ok() => Some(t),
                _ => continue,
            }
        } else if kind.is_file() || kind.is_dir() {
            None
        } else {
            continue;
        };
        entries += 1;
        // `pack` names a directory without a trailing slash: 100 bytes still fit.
        bytes += BLOCK + name_cost(name.len());
        if meta.is_file() {
            bytes += padded(meta.len());
        } else if let Some(target) = target {
            bytes += name_cost(target.len());
        } else if meta.is_dir()
            && let Ok(dir) = fs::read_dir(&path)
        {
            for e in dir.flatten() {
                let child = e.file_name().to_string_lossy().into_owned();
                todo.push((e.path(), format!("{name}/{child}"), false));
            }
        }
    }
    (entries, bytes)
}

fn top_level_name(path: &Path) -> Result<String, ArchiveError> {
    // Stat first, so a missing path is reported as missing rather than as nameless. This
    // follows a symlink, as `pack` does for the paths it is given.
    let meta = fs::metadata(path).map_err(|e| read_error(path, e))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(ArchiveError::Special { path: path.to_owned() });
    }
    let canonical;
    let name = match path.file_name() {
        Some(name) => name,
        None => {
            canonical = fs::canonicalize(path).map_err(|e| read_error(path, e))?;
            canonical.file_name().ok_or_else(|| ArchiveError::NoName { path: path.to_owned() })?
        }
    };
    name.to_str().map(str::to_owned).ok_or_else(|| ArchiveError::NonUtf8 { path: path.to_owned() })
}

fn read_error(path: &Path, source: io::Error) -> ArchiveError {
    if source.kind() == io::ErrorKind::NotFound {
        ArchiveError::NotFound { path: path.to_owned() }
    } else {
        ArchiveError::Read { path: path.to_owned(), source }
    }
}

/// Writes a tar archive of `paths` to `out`, streaming, and returns `out` flushed.
///
/// Each path becomes a top-level entry named as [`top_level_names`] says. Directories are
/// walked recursively in name order (so the same tree gives the same archive), empty ones
/// included. Modes and mtimes are kept. A symlink given in `paths` is followed, as
/// `cp -rH` does: the receiver refuses a top-level symlink, since its target would lie
/// outside what was sent. Symlinks inside a directory are stored as links, never followed;
/// one the receiver would refuse (absolute, or pointing outside its top-level entry) is
/// skipped with a warning, as are sockets, fifos and devices. Hard links are sent as
/// separate copies.
///
/// # Errors
///
/// The errors of [`top_level_names`], checked before anything is written;
/// [`ArchiveError::Read`] or [`ArchiveError::NonUtf8`] for a file in the tree; and
/// [`ArchiveError::Write`] when `out` fails. After an error, `out` holds a partial
/// archive without its end marker.
pub(crate) fn pack<W: Write>(paths: &[PathBuf], out: W) -> Result<W, ArchiveError> {
    let names = top_level_names(paths)?;
    let mut builder = Builder::new(Tracked { inner: out, failed: false, poisoned: false });
    builder.mode(HeaderMode::Complete);
    builder.follow_symlinks(false);
    // Holes go as zeros, which zstd squeezes to almost nothing downstream; this keeps the
    // stream to the entry types the receiver accepts.
    builder.sparse(false);

    let mut result = Ok(());
    for (path, name) in paths.iter().zip(names) {
        result = fs::metadata(path)
            .map_err(|e| read_error(path, e))
            .and_then(|meta| append_tree(&mut builder, path, &meta, &mut vec![name]));
        if result.is_err() {
            break;
        }
    }
    if let Err(e) = result {
        // `Builder`'s drop writes the end marker; a poisoned writer drops it instead.
        builder.get_mut().poisoned = true;
        return Err(e);
    }
    let mut out = builder.into_inner().map_err(|source| ArchiveError::Write { source })?.inner;
    out.flush().map_err(|source| ArchiveError::Write { source })?;
    Ok(out)
}

/// Appends `src`, stored as `rel` joined with `/`, and everything below it.
fn append_tree<W: Write>(
    builder: &mut Builder<Tracked<W>>,
    src: &Path,
    meta: &Metadata,
    rel: &mut Vec<String>,
) -> Result<(), ArchiveError> {
    let name = rel.join("/");
    let file_type = meta.file_type();
    if file_type.is_dir() {
        let mut header = header_for(meta, EntryType::Directory);
        append(builder, src, |b| b.append_data(&mut header, &name, io::empty()))?;
        let mut children = fs::read_dir(src)
            .and_then(|dir| dir.collect::<io::Result<Vec<_>>>())
            .map_err(|e| read_error(src, e))?;
        children.sort_unstable_by_key(fs::DirEntry::file_name);
        for child in children {
            let path = child.path();
            let child_name = child
                .file_name()
                .into_string()
                .map_err(|_| ArchiveError::NonUtf8 { path: path.clone() })?;
            // `DirEntry::metadata` does not follow symlinks.
            let child_meta = child.metadata().map_err(|e| read_error(&path, e))?;
            rel.push(child_name);
            append_tree(builder, &path, &child_meta, rel)?;
            rel.pop();
        }
        Ok(())
    } else if file_type.is_file() {
        let mut file = File::open(src).map_err(|e| read_error(src, e))?;
        // The open file's own stat, so the size matches what we read.
        let meta = file.metadata().map_err(|e| read_error(src, e))?;
        let size = meta.len();
        let mut header = header_for(&meta, EntryType::Regular);
        header.set_size(size);
        // Exactly `size` bytes whatever happens to the file meanwhile: a file that grows
        // or shrinks while packing would otherwise desynchronise the whole stream.
        let data = (&mut file).take(size).chain(io::repeat(0)).take(size);
        append(builder, src, |b| b.append_data(&mut header, &name, data))?;
        if file.metadata().is_ok_and(|m| m.len() != size) {
            tracing::warn!(path = %src.display(), "file changed size while it was being sent");
        }
        Ok(())
    } else if file_type.is_symlink() {
        let target = fs::read_link(src).map_err(|e| read_error(src, e))?;
        let Some(target_str) = target.to_str() else {
            return Err(ArchiveError::NonUtf8 { path: src.to_owned() });
        };
        if let Err(reason) = check_symlink_target(rel, target_str) {
            tracing::warn!(
                path = %src.display(),
                target = %target.display(),
                reason,
                "skipping a symlink the receiver would refuse"
            );
            return Ok(());
        }
        let mut header = header_for(meta, EntryType::Symlink);
        append(builder, src, |b| b.append_link(&mut header, &name, &target))
    } else {
        tracing::warn!(path = %src.display(), "skipping a socket, fifo or device");
        Ok(())
    }
}

fn header_for(meta: &Metadata, kind: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_metadata_in_mode(meta, HeaderMode::Complete);
    header.set_entry_type(kind);
    header.set_size(0);
    header
}

/// Runs one `Builder` call and blames the failure on the stream or on `src`.
fn append<W: Write>(
    builder: &mut Builder<Tracked<W>>,
    src: &Path,
    op: impl FnOnce(&mut Builder<Tracked<W>>) -> io::Result<()>,
) -> Result<(), ArchiveError> {
    op(builder).map_err(|source| {
        if builder.get_ref().failed {
            ArchiveError::Write { source }
        } else {
            ArchiveError::Read { path: src.to_owned(), source }
        }
    })
}

/// The archive writer: remembers whether `out` failed, to tell a read error on a local file
/// from a write error on the stream, and refuses all writes once poisoned.
struct Tracked<W> {
    inner: W,
    failed: bool,
    poisoned: bool,
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(io::Error::other("archive abandoned after an error"));
        }
        let result = self.inner.write(buf);
        if result.as_ref().is_err_and(|e| e.kind() != io::ErrorKind::Interrupted) {
            self.failed = true;
        }
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.poisoned {
            return Ok(());
        }
        self.inner.flush()
    }
}

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
/// Dropping an `Unpacker` that was not committed removes its staging directory, so an
/// interrupt or an error never leaves anything under a final name.
#[derive(Debug)]
pub(crate) struct Unpacker {
    dest: PathBuf,
    staging: PathBuf,
    /// The announced top-level names, once each, in the order announced (the order of
    /// the commit).
    allowed_top: Vec<String>,
    /// The same names, for the check of every entry: an Offer may announce 65,536 names
    /// and an archive hold millions of entries, so a linear search per entry (or per
    /// name at commit) would let a peer buy minutes of CPU with a few MiB.
    allowed: HashSet<String>,
    /// Directory entries, to get their own mode and mtime once everything is in place.
    dirs: Vec<DirMeta>,
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

/// A directory entry's own mode and mtime, applied at commit (until then every staged
/// directory is `0o700`). The resume journal keeps them, so that a rerun still knows the
/// directories an earlier run extracted.
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
    /// Its mode and mtime, when it is a directory.
    pub(crate) dir: Option<DirMeta>,
}

impl Unpacker {
    /// Creates the staging directory `dest/.pcp-staging-<random hex>`; being inside `dest`,
    /// it is on the same filesystem, so committing is a rename.
    ///
    /// `allowed_top` lists the top-level names the sender announced; an entry outside them
    /// is refused.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::Unsafe`] if an announced name is not a [`plain_name`], and
    /// [`ArchiveError::Staging`] if the directory cannot be
    /// created (for instance, `dest` does not exist).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn new(dest: &Path, allowed_top: Vec<String>) -> Result<Unpacker, ArchiveError> {
        let staging = dest.join(format!("{STAGING_PREFIX}{:016x}", rand::random::<u64>()));
        Unpacker::resumable(dest, staging, allowed_top, None).map(|mut u| {
            // A staging directory of our own making, named at random: nobody resumes it.
            u.done = false;
            u
        })
    }

    /// An unpacker whose staging directory `staging` (in `dest`) survives it, for a
    /// later run to resume: dropping it without a commit leaves staging as it is.
    ///
    /// Without `resumed`, staging is created (`0o700`, and it MUST not exist yet). With
    /// the directories an earlier run recorded, staging MUST already be a real
    /// directory (never a symlink), and the first entry extracted may replace what
    /// that run left of it.
    ///
    /// # Errors
    /// [`ArchiveError::Unsafe`] if an announced name is not a [`plain_name`];
    /// [`ArchiveError::Staging`] when staging cannot be created or is not what it must be.
    pub(crate) fn resumable(
        dest: &Path,
        staging: PathBuf,
        allowed_top: Vec<String>,
        resumed: Option<Vec<DirMeta>>,
    ) -> Result<Unpacker, ArchiveError> {
        if let Some(bad) = allowed_top.iter().find(|name| plain_name(name).is_none()) {
            return Err(ArchiveError::Unsafe {
                entry: bad.clone(),
                reason: "an announced top-level name is not a plain file name",
            });
        }
        let mut allowed = HashSet::with_capacity(allowed_top.len());
        let allowed_top: Vec<String> =
            allowed_top.into_iter().filter(|name| allowed.insert(name.clone())).collect();
        let fail = |source| ArchiveError::Staging { dest: dest.to_owned(), source };
        match &resumed {
            None => DirBuilder::new().mode(WORKING_DIR_MODE).create(&staging).map_err(fail)?,
            Some(_) if fs::symlink_metadata(&staging).is_ok_and(|m| m.is_dir()) => {}
            Some(_) => return Err(fail(io::Error::other("is not a directory"))),
        }
        Ok(Unpacker {
            dest: dest.to_owned(),
            staging,
            allowed,
            allowed_top,
            replace_next: resumed.is_some(),
            dirs: resumed.unwrap_or_default(),
            buf: Vec::new(),
            umask: crate::fsx::umask(),
            done: true,
        })
    }

    /// The staging directory entries are extracted into.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn staging(&self) -> &Path {
        &self.staging
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
            .filter(|path| fs::symlink_metadata(path).is_ok())
            .collect()
    }

    /// Extracts every entry of the tar stream `r` into staging, then reads `r` to its end.
    ///
    /// Regular files, directories, symlinks and hard links are accepted. Files get their
    /// mode (`0o777` bits only, less the umask) and mtime now; directories stay `0o700`
    /// until commit.
    /// Ownership is never restored.
    ///
    /// Reading `r` to the end (tar's second zero block and any padding after it) means the
    /// producer never blocks on a full pipe.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::Unsafe`] for an entry that breaks a rule in the module docs,
    /// [`ArchiveError::ExtensionTooLarge`] or [`ArchiveError::BadHeader`] for a header the
    /// guard refuses, [`ArchiveError::Stream`] or [`ArchiveError::Truncated`] for a broken
    /// stream, and
    /// [`ArchiveError::Extract`] for a local write error. After an error `r` is left
    /// partly read; the caller MUST abandon the stream, and staging holds only what came
    /// before the failing entry.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn unpack<R: Read>(&mut self, r: R) -> Result<(), ArchiveError> {
        self.unpack_from(r, 0, |_| Ok::<(), ArchiveError>(()))
    }

    /// Unpacks the tar stream that `r` delivers from offset `base` on (an
    /// entry's first header: where an earlier run stopped), calling `done` after each
    /// entry is extracted whole, before the next one is read.
    ///
    /// # Errors
    /// [`ArchiveError::Unsafe`] for a refused entry, [`ArchiveError::Extract`] for a local
    /// write error, and whatever `done` returns.
    pub(crate) fn unpack_from<R: Read, E: From<ArchiveError>>(
        &mut self,
        r: R,
        base: u64,
        done: impl FnMut(&Checkpoint) -> Result<(), E>,
    ) -> Result<(), E> {
        let stream = |source| ArchiveError::Stream { source };
        // The guard refuses oversized extension headers before the tar crate reads them.
        // It starts at a header, as the crate does, so the two agree from `base` on.
        let mut archive = tar::Archive::new(HeaderGuard::new(r));
        let result = self.extract_all(&mut archive, base, done);
        let mut guarded = archive.into_inner();
        if let Some(refusal) = guarded.refused() {
            return Err(refusal.into());
        }
        result?;
        // tar stops reading at the first zero block.
        io::copy(&mut guarded, &mut io::sink()).map_err(stream)?;
        Ok(())
    }

    fn extract_all<R: Read, E: From<ArchiveError>>(
        &mut self,
        archive: &mut tar::Archive<R>,
        base: u64,
        mut done: impl FnMut(&Checkpoint) -> Result<(), E>,
    ) -> Result<(), E> {
        let stream = |source| ArchiveError::Stream { source };
        for entry in archive.entries().map_err(stream)? {
            let mut entry = entry.map_err(stream)?;
            let dirs = self.dirs.len();
            self.extract(&mut entry)?;
            // The crate skips the data's padding before the next header.
            let end = entry.raw_file_position() + entry.size().next_multiple_of(BLOCK);
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let dir = self.dirs.get(dirs).cloned();
            done(&Checkpoint { next: base + end, name, dir })?;
        }
        Ok(())
    }

    /// Checks one entry and creates it in staging.
    fn extract<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ArchiveError> {
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let refuse = |reason| ArchiveError::Unsafe { entry: name.clone(), reason };
        let parts = entry_parts(&raw_name, &self.allowed).map_err(refuse)?;
        if std::mem::take(&mut self.replace_next) {
            self.clear_partial(&parts, &name)?;
        }
        let header = entry.header();
        let stream = |source| ArchiveError::Stream { source };
        // chmod ignores the umask: apply it here, as the kernel does for a create.
        let mode = header.mode().map_err(stream)? & MODE_MASK & !self.umask;
        let mtime = i64::try_from(header.mtime().map_err(stream)?).unwrap_or(i64::MAX);

        match header.entry_type() {
            EntryType::Regular | EntryType::Continuous => {
                self.extract_file(entry, &parts, &name, mode, mtime)
            }
            EntryType::Directory => self.extract_dir(&parts, &name, mode, mtime),
            EntryType::Symlink => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| refuse("symlink has no target"))?;
                let target = std::str::from_utf8(&target)
                    .map_err(|_| refuse("symlink target is not valid UTF-8"))?;
                check_symlink_target(&parts, target).map_err(refuse)?;
                let path = self.vacant(&parts, &name)?;
                let extract = |source| ArchiveError::Extract { path: path.clone(), source };
                std::os::unix::fs::symlink(target, &path).map_err(extract)?;
                let mtime = FileTime::from_unix_time(mtime, 0);
                filetime::set_symlink_file_times(&path, mtime, mtime).map_err(extract)
            }
            EntryType::Link => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| refuse("hard link has no target"))?;
                self.extract_hard_link(&parts, &name, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                Err(refuse("device and fifo entries are not accepted"))
            }
            _ => Err(refuse("unsupported entry type")),
        }
    }

    fn extract_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parts: &[String],
        name: &str,
        mode: u32,
        mtime: i64,
    ) -> Result<(), ArchiveError> {
        let path = self.vacant(parts, name)?;
        let extract = |source| ArchiveError::Extract { path: path.clone(), source };
        // `create_new` never opens an existing file or follows a symlink at `path`.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(extract)?;
        self.buf.resize(64 * 1024, 0);
        let mut copied = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(ArchiveError::Stream { source }),
            };
            file.write_all(&self.buf[..n]).map_err(extract)?;
            copied += n as u64;
        }
        // tar's reader just stops short when the stream ends inside the data.
        if copied != entry.size() {
            return Err(ArchiveError::Truncated { entry: name.to_owned() });
        }
        file.set_permissions(Permissions::from_mode(mode)).map_err(extract)?;
        let mtime = FileTime::from_unix_time(mtime, 0);
        filetime::set_file_handle_times(&file, None, Some(mtime)).map_err(extract)
    }

    fn extract_dir(
        &mut self,
        parts: &[String],
        name: &str,
        mode: u32,
        mtime: i64,
    ) -> Result<(), ArchiveError> {
        let path = self.parent_of(parts, name)?;
        match fs::symlink_metadata(&path) {
            // Created earlier as the parent of an entry that came first.
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ArchiveError::Unsafe {
                    entry: name.to_owned(),
                    reason: "the entry appears twice",
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                .mode(WORKING_DIR_MODE)
                .create(&path)
                .map_err(|source| ArchiveError::Extract { path: path.clone(), source })?,
            Err(source) => return Err(ArchiveError::Extract { path, source }),
        }
        self.dirs.push(DirMeta { parts: parts.to_vec(), mode, mtime });
        Ok(())
    }

    /// Removes what an earlier run left at the path of the entry it stopped in: that
    /// entry comes again whole. A directory stays (the entry finds it, as it would a
    /// parent made for an earlier child); anything else is unlinked, never followed.
    fn clear_partial(&self, parts: &[String], name: &str) -> Result<(), ArchiveError> {
        let path = self.parent_of(parts, name)?;
        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_dir() => {
                fs::remove_file(&path).map_err(|source| ArchiveError::Extract { path, source })
            }
            _ => Ok(()),
        }
    }

    fn extract_hard_link(
        &self,
        parts: &[String],
        name: &str,
        raw_target: &[u8],
    ) -> Result<(), ArchiveError> {
        let both = format!("{name} -> {}", String::from_utf8_lossy(raw_target));
        let refuse = |reason| ArchiveError::Unsafe { entry: both.clone(), reason };
        let target_parts = entry_parts(raw_target, &self.allowed).map_err(refuse)?;
        // The target MUST be a regular file we extracted: no directory, no symlink (whose
        // relative target would be re-read from the new link's directory), and nothing
        // reached through a symlink.
        let target = self.existing(&target_parts).map_err(refuse)?;
        let path = self.vacant(parts, name)?;
        fs::hard_link(&target, &path).map_err(|source| ArchiveError::Extract { path, source })
    }

    /// The staging path for `parts`, after making sure each parent is a real directory
    /// (creating missing ones). Never follows a symlink.
    fn parent_of(&self, parts: &[String], name: &str) -> Result<PathBuf, ArchiveError> {
        let refuse = |reason| ArchiveError::Unsafe { entry: name.to_owned(), reason };
        let (last, parents) = parts.split_last().ok_or_else(|| refuse("empty path"))?;
        let mut path = self.staging.clone();
        for part in parents {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(refuse("a parent directory is a symlink"));
                }
                Ok(_) => return Err(refuse("a parent is not a directory")),
                // A parent without an entry of its own: default mode, like `mkdir -p`.
                Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                    .mode(0o777)
                    .create(&path)
                    .map_err(|source| ArchiveError::Extract { path: path.clone(), source })?,
                Err(source) => return Err(ArchiveError::Extract { path, source }),
            }
        }
        path.push(last);
        Ok(path)
    }

    /// Like [`Unpacker::parent_of`], and the path itself MUST not exist yet: the archive
    /// naming a path twice is refused, so nothing is ever opened over an earlier entry.
    fn vacant(&self, parts: &[String], name: &str) -> Result<PathBuf, ArchiveError> {
        let path = self.parent_of(parts, name)?;
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path),
            Ok(_) => Err(ArchiveError::Unsafe {
                entry: name.to_owned(),
                reason: "the entry appears twice",
            }),
            Err(source) => Err(ArchiveError::Extract { path, source }),
        }
    }

    /// The staging path of an extracted regular file, reached through real directories only.
    fn existing(&self, parts: &[String]) -> Result<PathBuf, &'static str> {
        const REASON: &str = "hard link target is not a regular file extracted earlier";
        let mut path = self.staging.clone();
        let (last, parents) = parts.split_last().ok_or(REASON)?;
        for part in parents {
            path.push(part);
            if !fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir()) {
                return Err(REASON);
            }
        }
        path.push(last);
        if fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_file()) {
            Ok(path)
        } else {
            Err(REASON)
        }
    }

    /// Moves each announced top-level entry from staging into `dest`, gives directories
    /// their own modes and mtimes (deepest first, so a read-only directory is made
    /// read-only only after everything below it is done), and removes staging.
    ///
    /// Returns the final paths, in announced order. Without `force` every target is
    /// checked before anything moves, so a refusal leaves `dest` untouched, and each
    /// move is a rename that never replaces (see [`crate::fsx::rename_noreplace`]): what
    /// another process creates under a final name after the check stays, and the commit
    /// fails with [`ArchiveError::Exists`]. With `force`,
    /// a directory merges into an existing directory (recursively; files replaced), and
    /// anything else replaces what is there. A directory merged into keeps its own mode
    /// and mtime: it is the receiver's, and may carry bits (setgid on a shared
    /// directory) the sender's mode would drop. Commit is not atomic across several
    /// top-level entries, but each entry that lands on a free name lands in one rename.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::Incomplete`] if an announced entry never arrived,
    /// [`ArchiveError::Exists`] if a target exists and `force` is false, and
    /// [`ArchiveError::Commit`] if a move fails.
    pub(crate) fn commit(mut self, force: bool) -> Result<Vec<PathBuf>, ArchiveError> {
        // `new` kept each announced name once.
        let names = &self.allowed_top;
        for name in names {
            if fs::symlink_metadata(self.staging.join(name)).is_err() {
                return Err(ArchiveError::Incomplete { name: name.clone() });
            }
            let target = self.dest.join(name);
            if !force && fs::symlink_metadata(&target).is_ok() {
                return Err(ArchiveError::Exists { path: target });
            }
        }
        let mut placed = Vec::with_capacity(names.len());
        let mut merged = HashSet::new();
        for name in names {
            let target = self.dest.join(name);
            place(&self.staging.join(name), &target, &mut merged, force)?;
            placed.push(target);
        }

        // Stable sort: a later entry for the same directory still wins.
        self.dirs.sort_by_key(|dir| std::cmp::Reverse(dir.parts.len()));
        for dir in &self.dirs {
            // Recorded by an earlier run, the parts come from a file on disk: held to the
            // rule every entry name meets.
            let Ok(parts) = entry_parts(dir.parts.join("/").as_bytes(), &self.allowed) else {
                continue;
            };
            let path = self.dest.join(parts.iter().collect::<PathBuf>());
            // A directory merged into is the receiver's. Anything but a directory here
            // means the path was replaced under `force`: never follow a symlink.
            if merged.contains(&path) || !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let mtime = FileTime::from_unix_time(dir.mtime, 0);
            filetime::set_file_mtime(&path, mtime)
                .and_then(|()| {
                    fs::set_permissions(&path, Permissions::from_mode(dir.mode & MODE_MASK))
                })
                .map_err(|source| ArchiveError::Commit { path, source })?;
        }

        self.done = true;
        if let Err(e) = fs::remove_dir_all(&self.staging) {
            // Everything is in place; a leftover empty directory is not worth failing for.
            tracing::warn!(path = %self.staging.display(), error = %e, "cannot remove staging");
        }
        Ok(placed)
    }
}

impl Drop for Unpacker {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Directories are still 0o700 here (modes are applied by commit), so removal
        // cannot trip over a read-only one.
        if let Err(e) = fs::remove_dir_all(&self.staging)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.staging.display(), error = %e, "cannot remove staging");
        }
    }
}

/// Moves `src` to `target`. With `force` it replaces what is there, and a directory onto
/// a directory merges (the directories merged into are added to `merged`). Without
/// `force`, anything at `target`, even one that appeared after [`Unpacker::commit`]
/// checked, is refused with [`ArchiveError::Exists`] and never replaced.
fn place(
    src: &Path,
    target: &Path,
    merged: &mut HashSet<PathBuf>,
    force: bool,
) -> Result<(), ArchiveError> {
    let fail = |source| ArchiveError::Commit { path: target.to_owned(), source };
    if !force {
        return crate::fsx::rename_noreplace(src, target).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => ArchiveError::Exists { path: target.to_owned() },
            _ => fail(source),
        });
    }
    let src_is_dir = fs::symlink_metadata(src).map_err(fail)?.is_dir();
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
        Ok(meta) if meta.is_dir() && src_is_dir => {
            merged.insert(target.to_owned());
            for child in fs::read_dir(src).map_err(fail)? {
                let child = child.map_err(fail)?;
                place(&child.path(), &target.join(child.file_name()), merged, force)?;
            }
            return Ok(());
        }
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(target).map_err(fail)?,
        Ok(_) if src_is_dir => fs::remove_file(target).map_err(fail)?,
        // A file or symlink onto a file or symlink: rename replaces it atomically.
        Ok(_) => {}
    }
    fs::rename(src, target).map_err(fail)
}

/// Splits a peer's entry name into components, checking the rules in the module docs.
fn entry_parts(raw: &[u8], allowed_top: &HashSet<String>) -> Result<Vec<String>, &'static str> {
    let name = std::str::from_utf8(raw).map_err(|_| "name is not valid UTF-8")?;
    if name.starts_with('/') {
        return Err("absolute path");
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("path has a `..` component"),
            _ => parts.push(part.to_owned()),
        }
    }
    let top = parts.first().ok_or("empty path")?;
    if !allowed_top.contains(top) {
        return Err("not under a top-level name the sender announced");
    }
    Ok(parts)
}

/// `name` if it is one plain path component, safe to create under a target directory:
/// not empty, not `.` or `..`, and no `/`, `\\` or NUL anywhere. This is the one rule
/// for every top-level name a sender announces (a file's name, an archive's entries).
///
/// It works on the string, never through `Path::components`, which normalises `a/`,
/// `a//` and `a/.` to `a` and would let them through. `\\` is refused although it is an
/// ordinary character on Unix, because it is a separator on Windows.
pub(crate) fn plain_name(name: &str) -> Option<&str> {
    let plain =
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    plain.then_some(name)
}

/// Checks a symlink's target against the rules in the module docs; `link` is the link's
/// own name, split into components.
fn check_symlink_target<S: AsRef<str>>(link: &[S], target: &str) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("symlink target is empty");
    }
    if target.starts_with('/') {
        return Err("symlink target is absolute");
    }
    // The link's directory: everything but its own name. A top-level symlink has none.
    let depth = link.len().saturating_sub(1);
    if depth == 0 {
        return Err("a top-level entry is a symlink");
    }
    let mut ups = 0;
    let mut seen_name = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if seen_name => return Err("symlink target has `..` after a name"),
            ".." => ups += 1,
            _ => seen_name = true,
        }
    }
    // Climbing to the link's directory's `depth`-th ancestor would leave the top-level
    // entry; `depth - 1` levels up is the top-level entry itself.
    if ups >= depth {
        return Err("symlink target escapes its top-level entry");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::symlink;

    use tempfile::TempDir;

    /// The offer's size for a folder comes from `measure`: it must be the length `pack`
    /// writes, long names, links and empty directories included.
    #[test]
    fn measure_predicts_the_tar_stream_length() {
        let dir = TempDir::new().unwrap();
        let tree = dir.path().join("tree");
        let deep = tree.join("d".repeat(60)).join("e".repeat(60));
        fs::create_dir_all(&deep).unwrap();
        fs::create_dir_all(tree.join("empty")).unwrap();
        fs::write(tree.join("a"), vec![1u8; 1000]).unwrap();
        fs::write(deep.join("f".repeat(90)), vec![2u8; 513]).unwrap();
        fs::write(tree.join("zero"), b"").unwrap();
        std::os::unix::fs::symlink("a", tree.join("link")).unwrap();
        std::os::unix::fs::symlink("x".repeat(150), tree.join("long-link")).unwrap();
        let other = dir.path().join("single.txt");
        fs::write(&other, b"hello").unwrap();
        let paths = [tree, other];
        let packed = pack(&paths, Vec::new()).unwrap();
        let (entries, bytes) = measure(&paths);
        assert_eq!(bytes, packed.len() as u64);
        assert_eq!(entries, 10);
    }

    /// The offer's size is a bound the receiver holds the sender to (issue 14, item 3):
    /// `measure` MUST skip what `pack` skips (fifos, links the receiver would refuse)
    /// and follow a symlink given as a path, as `pack` does, or an honest transfer
    /// fails; names at the header's 100-byte edge cost what `pack` makes of them.
    #[test]
    fn measure_matches_pack_where_pack_skips_or_follows() {
        let dir = TempDir::new().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tree.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        symlink("/etc/passwd", tree.join("absolute")).unwrap();
        symlink("../../outside", tree.join("sub/escaping")).unwrap();
        symlink("../sub", tree.join("sub/fine")).unwrap();
        // `tree/` is 5 bytes: these names put the entry at 99, 100 and 101 bytes.
        for len in [94, 95, 96] {
            fs::write(tree.join("f".repeat(len)), b"x").unwrap();
            fs::create_dir(tree.join("d".repeat(len))).unwrap();
        }
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::write(real.join("inside"), vec![3u8; 700]).unwrap();
        let via_link = dir.path().join("via-link");
        symlink(&real, &via_link).unwrap();
        let file_link = dir.path().join("file-link");
        symlink(real.join("inside"), &file_link).unwrap();
        let all = [tree, via_link, file_link];
        // Each alone, and together (errors of opposite signs must not cancel out).
        for paths in all.iter().map(std::slice::from_ref).chain([&all[..]]) {
            let packed = pack(paths, Vec::new()).unwrap();
            let (entries, bytes) = measure(paths);
            assert_eq!(bytes, packed.len() as u64, "{paths:?}");
            let mut archive = tar::Archive::new(&packed[..]);
            assert_eq!(entries, archive.entries().unwrap().count() as u64, "{paths:?}");
        }
    }

    #[test]
    fn top_level_names_use_the_final_component() {
        let dir = TempDir::new().unwrap();
        fs::create_dir(dir.path().join("photos")).unwrap();
        fs::write(dir.path().join("a.txt"), b"a").unwrap();
        let with_slash = PathBuf::from(format!("{}/photos/", dir.path().display()));
        let dot_dot = dir.path().join("photos/..");
        let names =
            top_level_names(&[with_slash, dir.path().join("a.txt"), dot_dot.clone()]).unwrap();
        let own = dir.path().file_name().unwrap().to_str().unwrap();
        assert_eq!(names, ["photos", "a.txt", own]);
    }

    #[test]
    fn top_level_names_refuse_duplicates_and_missing_paths() {
        let dir = TempDir::new().unwrap();
        for sub in ["x/same", "y/same"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let err =
            top_level_names(&[dir.path().join("x/same"), dir.path().join("y/same")]).unwrap_err();
        assert!(matches!(err, ArchiveError::DuplicateName { ref name, .. } if name == "same"));

        let missing = dir.path().join("nope");
        let err = top_level_names(std::slice::from_ref(&missing)).unwrap_err();
        assert!(matches!(err, ArchiveError::NotFound { ref path } if *path == missing));
        assert!(err.to_string().contains("nope"), "{err}");

        let err = top_level_names(&[PathBuf::from("/")]).unwrap_err();
        assert!(matches!(err, ArchiveError::NoName { .. }), "{err:?}");
    }

    #[test]
    fn errors_show_peer_names_without_escapes() {
        let bad = "a\x1b[2Jb\u{202E}txt";
        let path = PathBuf::from(format!("dir/{bad}"));
        let io = || io::Error::other("x");
        let errors = [
            ArchiveError::NotFound { path: path.clone() },
            ArchiveError::NoName { path: path.clone() },
            ArchiveError::NonUtf8 { path: path.clone() },
            ArchiveError::Special { path: path.clone() },
            ArchiveError::DuplicateName {
                name: bad.into(),
                first: path.clone(),
                second: path.clone(),
            },
            ArchiveError::Read { path: path.clone(), source: io() },
            ArchiveError::Truncated { entry: bad.into() },
            ArchiveError::Unsafe { entry: bad.into(), reason: "r" },
            ArchiveError::Incomplete { name: bad.into() },
            ArchiveError::Staging { dest: path.clone(), source: io() },
            ArchiveError::Extract { path: path.clone(), source: io() },
            ArchiveError::Exists { path: path.clone() },
            ArchiveError::Commit { path: path.clone(), source: io() },
        ];
        for e in errors {
            let shown = e.to_string();
            assert!(!shown.contains(['\x1b', '\u{202E}']), "{shown:?}");
            assert!(shown.contains("a?[2Jb?txt"), "{shown:?}");
        }
    }

    #[test]
    fn symlink_targets_must_stay_in_their_top_level_entry() {
        assert_eq!(check_symlink_target(&["d", "l"], "x"), Ok(()));
        assert_eq!(check_symlink_target(&["d", "s", "l"], "../x/y"), Ok(()));
        assert_eq!(check_symlink_target(&["d", "l"], "."), Ok(()));
        assert!(check_symlink_target(&["d", "l"], "../x").is_err());
        assert!(check_symlink_target(&["d", "s", "l"], "../../x").is_err());
        assert!(check_symlink_target(&["d", "l"], "/etc").is_err());
        assert!(check_symlink_target(&["d", "l"], "").is_err());
        assert!(check_symlink_target(&["d", "l"], "a/../x").is_err());
        assert!(check_symlink_target(&["l"], "x").is_err());
    }

    #[test]
    fn pack_skips_links_the_receiver_would_refuse() {
        let dir = TempDir::new().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("f"), b"f").unwrap();
        symlink("/etc/passwd", tree.join("abs")).unwrap();
        symlink("../outside", tree.join("up")).unwrap();
        symlink("f", tree.join("ok")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(tree.join("sock")).unwrap();

        let tar = pack(std::slice::from_ref(&tree), Vec::new()).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
            .collect();
        assert_eq!(names, ["tree", "tree/f", "tree/ok"]);
    }

    #[test]
    fn pack_checks_every_path_before_writing() {
        let dir = TempDir::new().unwrap();
        let paths = [dir.path().join("a"), dir.path().join("b")];
        fs::write(&paths[0], b"a").unwrap();
        let mut out = Vec::new();
        let err = pack(&paths, &mut out).unwrap_err();
        assert!(matches!(err, ArchiveError::NotFound { ref path } if *path == paths[1]));
        assert!(out.is_empty());
    }

    #[test]
    fn pack_leaves_no_end_marker_after_an_error() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;

        let dir = TempDir::new().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("a"), b"a").unwrap();
        fs::write(tree.join(OsStr::from_bytes(b"\xff")), b"b").unwrap();
        let mut out = Vec::new();
        let err = pack(std::slice::from_ref(&tree), &mut out).unwrap_err();
        assert!(matches!(err, ArchiveError::NonUtf8 { .. }), "{err:?}");
        // `tree` and `tree/a` (header and one data block), then nothing.
        assert_eq!(out.len(), 3 * 512);
    }

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
        assert!(err.hint().is_some());
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
        assert_eq!(err.hint(), Some("use --force to overwrite, or -C DIR to extract elsewhere"));
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
        // A file where the archive has a directory is replaced.
        fs::write(tree.join("sub"), b"in the way").unwrap();

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
        let dir = TempDir::new().unwrap();
        let src = dir.path().join("staged");
        let target = dir.path().join("target");
        fs::write(&src, b"sent").unwrap();
        // Created after commit's check, before the move: another process's file.
        fs::write(&target, b"precious").unwrap();
        let err = place(&src, &target, &mut HashSet::new(), false).unwrap_err();
        assert!(matches!(err, ArchiveError::Exists { .. }), "{err:?}");
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        // The same for a directory.
        fs::create_dir(dir.path().join("sdir")).unwrap();
        fs::create_dir(dir.path().join("tdir")).unwrap();
        let err =
            place(&dir.path().join("sdir"), &dir.path().join("tdir"), &mut HashSet::new(), false)
                .unwrap_err();
        assert!(matches!(err, ArchiveError::Exists { .. }), "{err:?}");
        // With force, it is replaced.
        place(&src, &target, &mut HashSet::new(), true).unwrap();
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
        assert_eq!(seen[0].dir.as_ref().map(|d| d.parts.clone()), Some(vec!["tree".into()]));
        assert!(seen[1].dir.is_none());
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
        fs::write(staging.join("tree/b"), b"earlier").unwrap();
        let mut unpacker = resume(&staging);
        let err =
            unpacker.unpack_from(&tar[at[1] as usize..], at[1], |_| Ok::<(), ArchiveError>(()));
        assert!(matches!(err, Err(ArchiveError::Unsafe { .. })), "{err:?}");
        assert!(staging.exists(), "kept for a later run");
    }

    #[test]
    fn a_resumed_unpacker_needs_a_real_staging_directory() {
        let dest = TempDir::new().unwrap();
        let staging = dest.path().join("s");
        symlink(dest.path(), &staging).unwrap();
        let r = Unpacker::resumable(dest.path(), staging.clone(), vec!["t".into()], Some(vec![]));
        assert!(matches!(r, Err(ArchiveError::Staging { .. })), "{r:?}");
        let r = Unpacker::resumable(dest.path(), staging, vec!["t".into()], None);
        assert!(matches!(r, Err(ArchiveError::Staging { .. })), "a fresh one is created anew");
    }
}
