//! The sender's side: a tar stream of local paths, written as it is read.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header, HeaderMode};

use super::names::check_symlink_target;
use super::{ArchiveError, BLOCK};
use crate::message::TopKind;

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

/// What each of `paths` is, in order, as [`pack()`] will send it (a symlink given is
/// followed): for the offer, whose receiver refuses a top-level entry of another kind.
pub(crate) fn top_level_kinds(paths: &[PathBuf]) -> Vec<TopKind> {
    paths
        .iter()
        .map(|p| {
            if fs::metadata(p).is_ok_and(|m| m.is_dir()) { TopKind::Folder } else { TopKind::File }
        })
        .collect()
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

    /// The receiver holds the sender to its count: what `pack` skips (sockets, links it
    /// would refuse) is not counted, and a symlink given is followed, as `pack` does.
    #[test]
    fn measure_counts_what_pack_sends() {
        let dir = TempDir::new().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("f"), b"f").unwrap();
        symlink("/etc/passwd", tree.join("abs")).unwrap();
        symlink("../outside", tree.join("up")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(tree.join("sock")).unwrap();
        let alias = dir.path().join("alias");
        symlink(&tree, &alias).unwrap();
        for paths in [vec![tree.clone()], vec![alias.clone()]] {
            let packed = pack(&paths, Vec::new()).unwrap();
            let sent = tar::Archive::new(&packed[..]).entries().unwrap().count() as u64;
            assert_eq!(measure(&paths), (sent, packed.len() as u64), "{paths:?}");
        }
        assert_eq!(top_level_kinds(&[tree.join("f"), alias]), [TopKind::File, TopKind::Folder]);
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
