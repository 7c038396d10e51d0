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
//! | Part          | Size          | Contents                                              |
//! |---------------|---------------|-------------------------------------------------------|
//! | header        | 512 B         | name, mode, mtime, size, type, link target            |
//! | data          | size, padded to 512 B | file contents; empty for dirs and links      |
//! | … more entries |              | a directory's entry precedes its children, in name order |
//! | end marker    | 2 × 512 B     | zeros                                                 |
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
//! - The receiver MUST validate every entry name and link target BEFORE creating anything
//!   for it, and never writes outside its staging directory `dest/.pcp-staging-<hex>`
//!   until [`Unpacker::commit`].
//! - The receiver never writes through a symlink: every ancestor of a new entry inside
//!   staging MUST be a real directory.
//! - A symlink target MUST be relative, MUST be some `..` components followed only by names
//!   (resolved lexically, a `..` after a name could climb out through another symlink),
//!   and MUST stay inside the top-level entry that contains the link.
//! - A hard link MUST point to a regular file extracted earlier from the same archive.
//! - Ownership, setuid, setgid and sticky bits are never restored: only the `0o777`
//!   permission bits and the mtime travel.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header, HeaderMode};

/// Everything that can go wrong packing or unpacking an archive.
///
/// Names inside [`ArchiveError::Unsafe`] and [`ArchiveError::Incomplete`] come from the
/// peer; their messages print them with `{:?}`, which escapes control characters.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A path given to send does not exist.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A path given to send has no final component, even canonicalized (`/`).
    #[error("{path} has no file name to send it under")]
    NoName {
        /// The path as given.
        path: PathBuf,
    },
    /// A file name to send is not UTF-8; the receiver would refuse it.
    #[error("{path}: file name is not valid UTF-8")]
    NonUtf8 {
        /// The local path.
        path: PathBuf,
    },
    /// A path given to send is a socket, fifo or device.
    #[error("{path} is not a regular file, directory or symlink")]
    Special {
        /// The path as given.
        path: PathBuf,
    },
    /// Two paths given to send have the same final component.
    #[error("{first} and {second} would both be sent as {name}")]
    DuplicateName {
        /// The shared top-level name.
        name: String,
        /// The first path with that name.
        first: PathBuf,
        /// The second path with that name.
        second: PathBuf,
    },
    /// Reading a local file or directory failed while packing.
    #[error("cannot read {path}")]
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
}

impl ArchiveError {
    /// A recommendation printed under the error, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        None
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
pub fn top_level_names(paths: &[PathBuf]) -> Result<Vec<String>, ArchiveError> {
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
pub fn pack<W: Write>(paths: &[PathBuf], out: W) -> Result<W, ArchiveError> {
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
}
