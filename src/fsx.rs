//! File-system primitives for the files a receiver creates or resumes in a directory it
//! may share with others (its target directory, `-C DIR`, the directory of `-o FILE`).
//!
//! Someone who can write there can plant a name before pcp gets to it: a symlink to a
//! victim file, a FIFO, a device. The rules here make such a name fail loudly instead of
//! being followed, blocked on or read forever:
//!
//! - Every open uses `O_NOFOLLOW`: a symlink as the last component fails (`ELOOP`, shown
//!   as "is a symbolic link"), whatever it points to.
//! - A file pcp creates is created with `O_CREAT | O_EXCL` (`create_new`) and mode `0600`:
//!   it never opens what is already there, and the sender's (possibly private) bytes are
//!   the owner's only.
//! - A file pcp reopens (a part file, a manifest, a kept identity, `pcp node --key`) is
//!   opened with [`open_ours`]: `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` (a FIFO cannot block
//!   the open), then checked with `fstat` on the opened descriptor, so that nothing can
//!   be swapped in between, before a byte is read or written. It MUST be a regular file,
//!   owned by the effective uid, with no group or other write bit (`mode & 0o022 == 0`)
//!   and exactly one link (`st_nlink == 1`). Anything else is refused with an
//!   [`OwnershipError`] that names the path and what is wrong: a file another local user
//!   planted (in `/tmp`, in a shared download directory), left writable for others, or
//!   hard-linked to a name pcp does not control is never taken for pcp's own state.
//!   The directory holding it is not checked here (see `crate::archive` for staging).
//!
//! - A result is moved under its final name with [`rename_noreplace`] unless the user
//!   gave `--force`: a file that appears under that name after pcp checked it is free is
//!   never replaced (`renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the
//!   filesystem lacks it).
//! - A mode that comes from a peer is applied with `chmod`, which the umask does not
//!   filter: it MUST first be masked with [`umask`], so that a sender cannot create
//!   world-writable files or directories on the receiver.
//!
//! Only `std` and `rustix` (for the flag values and calls std lacks) are used; there is
//! no unsafe code.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::OFlags;
use rustix::io::Errno;

/// Mode of the files pcp creates for a peer's data: the owner's only.
pub(crate) const PRIVATE_MODE: u32 = 0o600;

/// `O_NOFOLLOW` (and more) for [`OpenOptionsExt::custom_flags`].
fn flags(f: OFlags) -> i32 {
    // The flag values are small positive constants; the cast cannot wrap.
    f.bits() as i32
}

/// `ELOOP` from an `O_NOFOLLOW` open means the name is a symlink: say so.
fn explain(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
        io::Error::new(io::ErrorKind::InvalidInput, "is a symbolic link")
    } else {
        e
    }
}

/// Creates `path` for writing, mode `0600`, failing if anything exists under that name
/// (a symlink included, dangling or not).
///
/// # Errors
/// `AlreadyExists` when the name is taken; other I/O errors.
pub(crate) fn create_new_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .custom_flags(flags(OFlags::NOFOLLOW))
        .open(path)
        .map_err(explain)
}

/// Why a file pcp would reopen is not one it can take for its own (see the module docs).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OwnershipError {
    /// A symbolic link is at the name.
    #[error("{} is a symbolic link", shown(.0))]
    Symlink(PathBuf),
    /// A directory, FIFO, device or socket is at the name.
    #[error("{} is not a regular file", shown(.0))]
    NotRegular(PathBuf),
    /// Another user owns it.
    #[error("{} is owned by uid {uid}, not you", shown(.path))]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Its group or everyone may write it.
    #[error("{} is writable by {} (mode {mode:04o})", shown(.path), writers(*.mode))]
    Writable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It has other names, which pcp does not control.
    #[error("{} has {links} links", shown(.path))]
    Links {
        /// The file.
        path: PathBuf,
        /// Its link count.
        links: u64,
    },
    /// Opening or examining it failed (`NotFound` included: see [`Self::is_not_found`]).
    #[error("{}", shown(.path))]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl OwnershipError {
    /// Nothing is at the name.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, OwnershipError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Who may write a file of `mode`, in words: "others" whenever everyone may.
fn writers(mode: u32) -> &'static str {
    if mode & 0o002 != 0 { "others" } else { "its group" }
}

/// Opens an existing file that pcp left for itself, for reading or for writing (without
/// truncating it), refusing anything another user could have planted or can change:
/// see the module docs for the rules. Never follows a symlink, never blocks on a FIFO.
///
/// `O_CLOEXEC` is std's default for every open; `O_NONBLOCK` only covers the open and is
/// cleared afterwards.
///
/// # Errors
/// [`OwnershipError`] naming the path: the rule broken, or the I/O error (`NotFound`
/// when nothing is there).
pub(crate) fn open_ours(path: &Path, write: bool) -> Result<File, OwnershipError> {
    let io_err = |source: io::Error| {
        if source.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
            OwnershipError::Symlink(path.to_owned())
        } else {
            OwnershipError::Io { path: path.to_owned(), source }
        }
    };
    let file = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(flags(OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC))
        .open(path)
        .map_err(io_err)?;
    check_ours(path, &file.metadata().map_err(io_err)?)?;
    // O_NONBLOCK only had to cover the open; drop it so the file behaves as any other.
    let fl = rustix::fs::fcntl_getfl(&file).map_err(|e| io_err(e.into()))?;
    rustix::fs::fcntl_setfl(&file, fl - OFlags::NONBLOCK).map_err(|e| io_err(e.into()))?;
    Ok(file)
}

/// The checks of [`open_ours`] on an opened file's metadata, in the order a user would
/// fix them.
fn check_ours(path: &Path, meta: &std::fs::Metadata) -> Result<(), OwnershipError> {
    let path = || path.to_owned();
    if !meta.is_file() {
        return Err(OwnershipError::NotRegular(path()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(OwnershipError::Owner { path: path(), uid: meta.uid() });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(OwnershipError::Writable { path: path(), mode });
    }
    if meta.nlink() != 1 {
        return Err(OwnershipError::Links { path: path(), links: meta.nlink() });
    }
    Ok(())
}

/// True when the test runs as root, which it needs to give a file to another uid;
/// otherwise says why the rest of `test` is skipped.
#[cfg(test)]
pub(crate) fn as_root(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{test}: skipped the part that needs root (chown to uid 65534)");
        }
    }
    root
}

/// Makes a FIFO at `path`, for tests (rustix has no `mknodat` on every Unix).
#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Renames `from` to `to`, failing with `AlreadyExists` if anything (a dangling symlink
/// included) is at `to`, atomically: what another process creates there in between is
/// never replaced.
///
/// `renameat2(RENAME_NOREPLACE)` (`renameatx_np(RENAME_EXCL)` on macOS). Where the
/// filesystem or kernel lacks it (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`: some network and FUSE
/// filesystems), a file is moved with `link` then `unlink`, which is just as safe; a
/// directory (which cannot be hard-linked) and a filesystem without hard links fall
/// back to checking that `to` is free and renaming, the one case with a window.
///
/// # Errors
/// `AlreadyExists` when `to` is taken; other I/O errors.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            Err(e) if [Errno::INVAL, Errno::NOSYS, Errno::NOTSUP].contains(&e) => {}
            other => return other.map_err(io::Error::from),
        }
    }
    link_then_unlink(from, to)
}

/// [`rename_noreplace`] without `renameat2`.
fn link_then_unlink(from: &Path, to: &Path) -> io::Result<()> {
    if !std::fs::symlink_metadata(from)?.is_dir() {
        // link(2) never replaces `to` and, without AT_SYMLINK_FOLLOW, links a symlink
        // itself rather than its target.
        match std::fs::hard_link(from, to) {
            Ok(()) => {
                if let Err(e) = std::fs::remove_file(from) {
                    // In place under its final name; only the old name is left over.
                    tracing::warn!(path = %from.display(), error = %e, "cannot remove after moving");
                }
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            // No hard links here (EPERM, EOPNOTSUPP, EXDEV...): check and rename below.
            Err(_) => {}
        }
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "already exists"));
    }
    std::fs::rename(from, to)
}

/// `path` as an error message may show it: through [`crate::term::sanitize`], since a
/// path under the receiver's target holds names the peer chose.
pub(crate) fn shown(path: &Path) -> String {
    crate::term::sanitize(&path.to_string_lossy())
}

/// The process umask, read once.
///
/// From `Umask:` in `/proc/self/status` (Linux 4.7+), which reads it without changing it.
/// Elsewhere the only way is `umask(2)`, which sets it: it is set to `0o077` and put back
/// at once, so a file another thread creates in that instant is more private, never less.
pub(crate) fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        proc_umask().unwrap_or_else(|| {
            let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
            rustix::process::umask(old);
            // mode_t is u16 on some Unixes (macOS), u32 on Linux.
            #[allow(clippy::useless_conversion)]
            u32::from(old.as_raw_mode())
        })
    })
}

fn proc_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok().filter(|m| *m <= 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn created_files_are_private_and_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        create_new_private(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = create_new_private(&path).expect_err("exists");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);

        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        let link = dir.path().join("link");
        symlink(&victim, &link).expect("plant");
        assert!(create_new_private(&link).is_err());
        symlink(dir.path().join("nowhere"), dir.path().join("dangling")).expect("plant");
        assert!(create_new_private(&dir.path().join("dangling")).is_err());
        assert!(!dir.path().join("nowhere").exists(), "a dangling link is not followed");
        assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
    }

    #[test]
    fn umask_is_what_the_kernel_applies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("probe");
        OpenOptions::new().write(true).create_new(true).mode(0o777).open(&path).expect("create");
        let applied = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(applied, 0o777 & !umask());
    }

    #[test]
    fn rename_noreplace_never_replaces() {
        for rename in [rename_noreplace, link_then_unlink] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (from, to) = (dir.path().join("from"), dir.path().join("to"));
            std::fs::write(&from, b"new").expect("write");
            std::fs::write(&to, b"precious").expect("write");
            let e = rename(&from, &to).expect_err("a file is there");
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(std::fs::read(&to).expect("read"), b"precious");
            assert_eq!(std::fs::read(&from).expect("read"), b"new", "nothing moved");

            std::fs::remove_file(&to).expect("rm");
            symlink("nowhere", &to).expect("plant");
            let e = rename(&from, &to).expect_err("a dangling symlink is there");
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
            std::fs::remove_file(&to).expect("rm");

            rename(&from, &to).expect("a free name");
            assert_eq!(std::fs::read(&to).expect("read"), b"new");
            assert!(std::fs::symlink_metadata(&from).is_err(), "moved, not copied");

            let (d, e) = (dir.path().join("d"), dir.path().join("e"));
            std::fs::create_dir(&d).expect("mkdir");
            std::fs::create_dir(&e).expect("mkdir");
            let err = rename(&d, &e).expect_err("a directory is there");
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
            std::fs::remove_dir(&e).expect("rm");
            rename(&d, &e).expect("a directory to a free name");
            assert!(e.is_dir() && !d.exists());
        }
    }

    #[test]
    fn only_regular_files_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"data").expect("write");
        open_ours(&path, true).expect("a regular file of ours opens");
        let link = dir.path().join("link");
        symlink(&path, &link).expect("plant");
        let e = open_ours(&link, false).expect_err("symlink");
        assert!(matches!(e, OwnershipError::Symlink(_)), "{e:?}");
        assert_eq!(e.to_string(), format!("{} is a symbolic link", link.display()));
        let e = open_ours(dir.path(), false).expect_err("directory");
        assert!(e.to_string().ends_with("is not a regular file"), "{e}");
        let e = open_ours(Path::new("/dev/null"), false).expect_err("device");
        assert!(matches!(e, OwnershipError::NotRegular(_)), "{e:?}");
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let e = open_ours(&fifo, false).expect_err("a FIFO, without blocking");
        assert!(matches!(e, OwnershipError::NotRegular(_)), "{e:?}");
        let e = open_ours(&dir.path().join("none"), false).expect_err("missing");
        assert!(e.is_not_found(), "{e:?}");
    }

    #[test]
    fn a_file_others_may_write_is_not_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.pcp-part");
        std::fs::write(&path, b"planted").expect("write");
        for (mode, who) in [(0o666, "others"), (0o620, "its group"), (0o602, "others")] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let e = open_ours(&path, false).expect_err("writable by others");
            assert!(matches!(e, OwnershipError::Writable { .. }), "{e:?}");
            let want = format!("{} is writable by {who} (mode {mode:04o})", path.display());
            assert_eq!(e.to_string(), want);
        }
        // Read bits are no reason to refuse: the file is still only ours to change.
        for mode in [0o600, 0o644, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            open_ours(&path, false).expect("ours");
        }
    }

    #[test]
    fn a_hard_linked_file_is_not_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.pcp-part");
        std::fs::write(&path, b"data").expect("write");
        std::fs::hard_link(&path, dir.path().join("elsewhere")).expect("link");
        let e = open_ours(&path, true).expect_err("two links");
        assert!(matches!(e, OwnershipError::Links { links: 2, .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("{} has 2 links", path.display()));
        std::fs::remove_file(dir.path().join("elsewhere")).expect("rm");
        open_ours(&path, true).expect("one link again");
    }

    #[test]
    fn a_file_another_user_owns_is_not_ours() {
        if !as_root("a_file_another_user_owns_is_not_ours") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.pcp-part");
        std::fs::write(&path, b"planted").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
        let e = open_ours(&path, false).expect_err("someone else's");
        assert!(matches!(e, OwnershipError::Owner { uid: 65534, .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("{} is owned by uid 65534, not you", path.display()));
    }
}
