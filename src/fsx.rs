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
//! - A file pcp reopens is opened with `O_NONBLOCK` too, so that a FIFO cannot block the
//!   open, and MUST be a regular file (`fstat` on the opened descriptor, so nothing can be
//!   swapped in between) before a byte is read or written.
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
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
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

/// Opens an existing regular file, for reading or for writing (without truncating it),
/// refusing a symlink, FIFO, device, socket or directory without blocking on it.
///
/// # Errors
/// `InvalidInput` for anything but a regular file; other I/O errors (`NotFound` included).
pub(crate) fn open_regular(path: &Path, write: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(flags(OFlags::NOFOLLOW | OFlags::NONBLOCK))
        .open(path)
        .map_err(explain)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "is not a regular file"));
    }
    // O_NONBLOCK only had to cover the open; drop it so the file behaves as any other.
    let fl = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, fl - OFlags::NONBLOCK)?;
    Ok(file)
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
        open_regular(&path, true).expect("a regular file opens");
        let link = dir.path().join("link");
        symlink(&path, &link).expect("plant");
        let e = open_regular(&link, false).expect_err("symlink");
        assert_eq!(e.to_string(), "is a symbolic link");
        let e = open_regular(dir.path(), false).expect_err("directory");
        assert_eq!(e.to_string(), "is not a regular file");
        let e = open_regular(Path::new("/dev/null"), false).expect_err("device");
        assert_eq!(e.to_string(), "is not a regular file");
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let e = open_regular(&fifo, false).expect_err("a FIFO, without blocking");
        assert_eq!(e.to_string(), "is not a regular file");
    }
}
