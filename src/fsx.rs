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
