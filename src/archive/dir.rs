//! Directory handles: every file-system call of extraction and commit is made relative
//! to an open directory, never by a path resolved again from the target directory.
//!
//! A [`Dir`] is a directory opened with `O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC`. What it
//! names is fixed when it is opened: renaming it, or putting a symlink where it was,
//! changes nothing for calls made through it. This is what keeps a local user who can
//! write the target directory from redirecting extraction (issue 14): the staging
//! directory is opened once, and every entry is created beneath that handle.
//!
//! # Invariants
//!
//! - Every call here names one plain component relative to a handle (`openat`,
//!   `mkdirat`, `symlinkat`, `linkat`, `unlinkat`, `renameat2`, `statat`, `utimensat`), or
//!   works on a handle itself (`fchmod`, `futimens`, `fstat`). None follows a symlink:
//!   opens use `O_NOFOLLOW`, `statat`/`utimensat` use `AT_SYMLINK_NOFOLLOW`, `linkat` is
//!   called without `AT_SYMLINK_FOLLOW`, and `unlinkat`/`renameat` never follow by
//!   definition.
//! - A path of several components is opened with [`Dir::open_beneath`]: `openat2` with
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` where the kernel
//!   has it (Linux 5.6+), else (`ENOSYS`, other systems) one component at a time with
//!   `O_NOFOLLOW`. Either way a symlink or `..` anywhere on the way fails the open.
//! - Callers pass components that passed [`super::names`]' rules: no `/`, no `..`, not
//!   empty. A NUL byte fails the call (`EINVAL`), never truncates the name.
//!
//! Only `rustix` (safe wrappers over the system calls) is used; no unsafe code.
//! `cap-std` was weighed: its `Dir` resolves paths beneath a handle too, but it lacks
//! `RENAME_NOREPLACE` and `RESOLVE_NO_SYMLINKS` semantics (it follows symlinks that stay
//! inside), and would add about ten crates for the few calls used here.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

/// An open directory; see the module docs.
#[derive(Debug)]
pub(super) struct Dir {
    fd: OwnedFd,
}

/// Which file this is: device and inode, as `fstat` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    // The field types differ between systems; both fit in a u64.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    pub(super) fn of(st: &Stat) -> Identity {
        Identity { dev: st.st_dev as u64, ino: st.st_ino as u64 }
    }
}

/// The kind of file `st` describes.
pub(super) fn kind(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// `st`'s permission bits (and setuid, setgid, sticky).
#[allow(clippy::useless_conversion)]
pub(super) fn perm(st: &Stat) -> u32 {
    u32::from(st.st_mode) & 0o7777
}

/// `st`'s mtime, in seconds.
#[allow(clippy::useless_conversion)]
pub(super) fn mtime(st: &Stat) -> i64 {
    i64::from(st.st_mtime)
}

const DIR_FLAGS: OFlags =
    OFlags::DIRECTORY.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC).union(OFlags::RDONLY);

fn mode(bits: u32) -> Mode {
    // Permission bits only; they fit any system's mode_t.
    #[allow(clippy::cast_possible_truncation, clippy::useless_conversion)]
    Mode::from_raw_mode((bits & 0o7777) as _)
}

fn times(mtime: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
        last_modification: Timespec { tv_sec: mtime, tv_nsec: 0 },
    }
}

/// One path component that names something in a directory: not empty, `.`, `..`, and
/// no `/`.
fn is_plain(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// Whether the kernel lacks `openat2` (learned from its first `ENOSYS`).
#[cfg(any(target_os = "linux", target_os = "android"))]
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl Dir {
    /// Opens `path` (absolute, or relative to the working directory) as a directory;
    /// a symlink as its last component fails (`ELOOP`).
    #[cfg(test)]
    pub(super) fn open_path(path: &std::path::Path) -> io::Result<Dir> {
        let fd = rustix::fs::openat(rustix::fs::CWD, path, DIR_FLAGS, Mode::empty())?;
        Ok(Dir { fd })
    }

    /// Opens `path` as a directory, following a symlink: for the target directory the
    /// user named, never for anything beneath it.
    pub(super) fn open_following(path: &std::path::Path) -> io::Result<Dir> {
        let flags = DIR_FLAGS - OFlags::NOFOLLOW;
        Ok(Dir { fd: rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty())? })
    }

    /// Sets this directory's permission bits.
    pub(super) fn set_mode(&self, bits: u32) -> io::Result<()> {
        Ok(rustix::fs::fchmod(&self.fd, mode(bits))?)
    }

    /// Opens the directory `name` in this one, never through a symlink.
    pub(super) fn open(&self, name: &str) -> io::Result<Dir> {
        // One plain component, whatever a caller passes: never `..`, never a path.
        if !is_plain(name) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a plain name"));
        }
        Ok(Dir { fd: rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())? })
    }

    /// Opens the directory at `parts` beneath this one; a symlink or anything but a
    /// directory on the way fails. No parts: this directory again.
    pub(super) fn open_beneath<S: AsRef<str>>(&self, parts: &[S]) -> io::Result<Dir> {
        // RESOLVE_BENEATH lets a `..` that stays beneath through: plain names only.
        if parts.iter().any(|p| !is_plain(p.as_ref())) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a plain name"));
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if parts.len() > 1 && !NO_OPENAT2.load(Ordering::Relaxed) {
            use rustix::fs::ResolveFlags;
            let path = parts.iter().map(AsRef::as_ref).collect::<Vec<&str>>().join("/");
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.fd, path.as_str(), DIR_FLAGS, Mode::empty(), resolve) {
                Ok(fd) => return Ok(Dir { fd }),
                // Not on this kernel (or refused by a seccomp filter): go step by step.
                Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                // A rename raced the lookup: the step by step walk below is as safe.
                Err(Errno::AGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.open_step_by_step(parts)
    }

    /// [`Dir::open_beneath`] without `openat2`.
    pub(super) fn open_step_by_step<S: AsRef<str>>(&self, parts: &[S]) -> io::Result<Dir> {
        // "." is this directory itself: a new handle to it.
        let mut dir = Dir { fd: rustix::fs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())? };
        for part in parts {
            dir = dir.open(part.as_ref())?;
        }
        Ok(dir)
    }

    /// Whether `name` here is a symlink: what an `O_NOFOLLOW | O_DIRECTORY` open's
    /// `ELOOP` or `ENOTDIR` meant (Linux gives `ENOTDIR` for a symlink too).
    pub(super) fn is_symlink(&self, name: &str) -> bool {
        self.stat(name).is_ok_and(|st| kind(&st) == FileType::Symlink)
    }

    /// Makes the directory `name` with `bits` (less the umask, as the kernel does).
    pub(super) fn mkdir(&self, name: &str, bits: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(&self.fd, name, mode(bits))?)
    }

    /// Creates the regular file `name` for writing, mode `bits`: never opens what is
    /// there already (`O_EXCL`), a dangling symlink included.
    pub(super) fn create_file(&self, name: &str, bits: u32) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(&self.fd, name, flags | OFlags::CLOEXEC, mode(bits))?;
        Ok(File::from(fd))
    }

    /// Opens the regular file `name` for reading: never a symlink, and a FIFO or
    /// device is refused without blocking on it.
    pub(super) fn open_file(&self, name: &str) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = File::from(rustix::fs::openat(&self.fd, name, flags, Mode::empty())?);
        if kind(&rustix::fs::fstat(&file)?) != FileType::RegularFile {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "is not a regular file"));
        }
        Ok(file)
    }

    /// Makes the symlink `name` pointing to `target`.
    pub(super) fn symlink(&self, target: &str, name: &str) -> io::Result<()> {
        Ok(rustix::fs::symlinkat(target, &self.fd, name)?)
    }

    /// Makes `name` here a hard link to `from_name` in `from` (the file itself, were it a
    /// symlink: `AT_SYMLINK_FOLLOW` is never given).
    pub(super) fn hard_link(&self, from: &Dir, from_name: &str, name: &str) -> io::Result<()> {
        Ok(rustix::fs::linkat(&from.fd, from_name, &self.fd, name, AtFlags::empty())?)
    }

    /// `lstat` of `name` here.
    pub(super) fn stat(&self, name: &str) -> io::Result<Stat> {
        Ok(rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// `fstat` of this directory.
    pub(super) fn fstat(&self) -> io::Result<Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// Gives this directory its mode and mtime.
    pub(super) fn set_meta(&self, bits: u32, mtime: i64) -> io::Result<()> {
        rustix::fs::fchmod(&self.fd, mode(bits))?;
        Ok(rustix::fs::futimens(&self.fd, &times(mtime))?)
    }

    /// Sets the mtime of `name` here, a symlink's own included.
    pub(super) fn set_mtime_at(&self, name: &str, mtime: i64) -> io::Result<()> {
        Ok(rustix::fs::utimensat(&self.fd, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Removes `name` here, which is not a directory.
    pub(super) fn unlink(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// Removes the empty directory `name` here.
    pub(super) fn rmdir(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?)
    }

    /// Moves `name` here to `to_name` in `to`, replacing a file or symlink there.
    pub(super) fn rename(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, name, &to.fd, to_name)?)
    }

    /// Moves `name` here to `to_name` in `to`, failing with `AlreadyExists` if anything
    /// is there, atomically: `renameat2(RENAME_NOREPLACE)`. Where the filesystem lacks it,
    /// as [`crate::fsx::rename_noreplace`] does: a file by `linkat` then `unlinkat`, a
    /// directory by a check then `renameat` (the one case with a window).
    pub(super) fn rename_noreplace(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        {
            use rustix::fs::RenameFlags;
            match rustix::fs::renameat_with(&self.fd, name, &to.fd, to_name, RenameFlags::NOREPLACE)
            {
                Err(e) if [Errno::INVAL, Errno::NOSYS, Errno::NOTSUP].contains(&e) => {}
                other => return Ok(other?),
            }
        }
        if kind(&self.stat(name)?) != FileType::Directory {
            match to.hard_link(self, name, to_name) {
                Ok(()) => return self.unlink(name),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
                Err(_) => {}
            }
        }
        if to.stat(to_name).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "already exists"));
        }
        self.rename(name, to, to_name)
    }

    /// The names in this directory (`.` and `..` left out), at most `max` of them, from
    /// the start: a caller that removes what it is given calls again until none are left.
    pub(super) fn names(&self, max: usize) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            // Everything under staging passed the UTF-8 rule; anything else is not ours.
            let name = std::str::from_utf8(name)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a non-UTF-8 name"))?;
            out.push(name.to_owned());
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }

    /// Removes everything in this directory, through handles: a subdirectory is opened
    /// (never through a symlink), emptied and removed. Memory stays bounded by the depth.
    pub(super) fn clear(&self) -> io::Result<()> {
        loop {
            let names = self.names(1024)?;
            if names.is_empty() {
                return Ok(());
            }
            for name in names {
                self.remove_all(&name)?;
            }
        }
    }

    /// Removes `name` here, whatever it is; a directory with everything in it.
    pub(super) fn remove_all(&self, name: &str) -> io::Result<()> {
        match self.unlink(name) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // EISDIR on Linux, EPERM where POSIX allows it.
            Err(_) => {}
        }
        let sub = match self.open(name) {
            Ok(sub) => sub,
            // A directory without owner rights (never one of ours): give them back.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                rustix::fs::chmodat(&self.fd, name, mode(0o700), AtFlags::empty())?;
                self.open(name)?
            }
            Err(e) => return Err(e),
        };
        sub.clear()?;
        self.rmdir(name)
    }
}

/// Raises the soft limit on open files towards the hard one (at most 8,192): the
/// unpacker holds a handle per directory level, up to [`super::unpack::MAX_DEPTH`].
pub(super) fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let limit = getrlimit(Resource::Nofile);
        let want = limit.maximum.map_or(8192, |max| max.min(8192));
        if limit.current.is_some_and(|cur| cur < want) {
            let _ = setrlimit(
                Resource::Nofile,
                rustix::process::Rlimit { current: Some(want), maximum: limit.maximum },
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::symlink;

    #[test]
    fn open_beneath_never_follows_a_symlink_either_way() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("a/b/c")).expect("mkdir");
        let outside = tempfile::tempdir().expect("tempdir");
        symlink(outside.path(), root.path().join("a/link")).expect("symlink");
        symlink("b", root.path().join("a/rel")).expect("symlink");
        let dir = Dir::open_path(root.path()).expect("open");
        for step in [false, true] {
            let open = |parts: &[&str]| {
                if step { dir.open_step_by_step(parts) } else { dir.open_beneath(parts) }
            };
            let c = open(&["a", "b", "c"]).expect("a real path");
            let inner = Identity::of(&c.fstat().expect("fstat"));
            let want = std::fs::symlink_metadata(root.path().join("a/b/c")).expect("stat");
            use std::os::unix::fs::MetadataExt;
            assert_eq!(inner, Identity { dev: want.dev(), ino: want.ino() });
            assert!(open(&["a", "link"]).is_err(), "an absolute symlink");
            assert!(open(&["a", "rel", "c"]).is_err(), "a relative symlink on the way");
            assert!(open(&["a", "..", "a"]).is_err(), "dot-dot");
        }
        assert!(Dir::open_path(&root.path().join("a/link")).is_err(), "the last component");
    }

    #[test]
    fn rename_noreplace_and_clear_work_through_handles() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = Dir::open_path(root.path()).expect("open");
        dir.mkdir("d", 0o700).expect("mkdir");
        let d = dir.open("d").expect("open d");
        drop(d.create_file("f", 0o600).expect("create"));
        assert!(d.create_file("f", 0o600).is_err(), "never opens what is there");
        d.symlink("nowhere", "l").expect("symlink");
        dir.mkdir("e", 0o700).expect("mkdir");
        let e = dir.open("e").expect("open e");
        drop(e.create_file("f", 0o600).expect("create"));
        let err = d.rename_noreplace("f", &e, "f").expect_err("taken");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        d.rename_noreplace("l", &e, "l").expect("free");
        assert!(e.stat("l").is_ok() && d.stat("l").is_err());
        dir.remove_all("e").expect("remove");
        assert!(dir.stat("e").is_err());
        assert_eq!(dir.names(10).expect("names"), ["d"]);
    }
}
