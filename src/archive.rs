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
//! - The sender MUST never buffer the whole archive: [`pack()`] streams each file through
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

mod dir;
mod error;
mod guard;
mod names;
mod pack;
mod unpack;

pub use error::ArchiveError;
pub(crate) use names::plain_name;
pub(crate) use pack::{measure, pack, top_level_kinds, top_level_names};
pub(crate) use unpack::{Announced, Checkpoint, DirMeta, Extracted, Unpacker};

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
