//! The archive layer's error type.

use std::io;
use std::path::PathBuf;

use crate::fsx::shown;
use crate::term::sanitize;

/// Everything that can go wrong packing or unpacking an archive.
///
/// Every name and path in a message goes through [`crate::term::sanitize`]: on the
/// receiver they come from the peer (entries, and paths under the target), and on the
/// sender from a local tree that may hold any byte.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The tar crate could not read a header. Its own message holds the header's bytes
    /// (a peer's name and fields), so it goes to the debug log, sanitized, and this
    /// says only where.
    #[error("refused archive: a corrupt tar header at offset {offset}")]
    CorruptHeader {
        /// Stream offset of the header.
        offset: u64,
    },
    /// An entry past one of the unpacker's documented limits (depth, read-only
    /// directories).
    #[error("refused archive entry \"{}\": {reason}", sanitize(.entry))]
    Limit {
        /// The entry's name, from the peer.
        entry: String,
        /// Which limit.
        reason: &'static str,
    },
    /// The archive holds more entries than the offer said.
    #[error("refused archive: more entries than the {offered} offered")]
    TooManyEntries {
        /// The offer's count.
        offered: u64,
    },
    /// The archive ended with fewer entries than the offer said.
    #[error("refused archive: it ended after {got} of the {offered} entries offered")]
    FewerEntries {
        /// The offer's count.
        offered: u64,
        /// Entries that arrived.
        got: u64,
    },
    /// A top-level entry is not what the offer announced (a file for a folder, or the
    /// reverse).
    #[error("refused archive entry \"{}\": announced as {announced}, arrived as {arrived}", sanitize(.name))]
    KindMismatch {
        /// The top-level name, from the peer.
        name: String,
        /// What the offer said (`a file`, `a folder`).
        announced: &'static str,
        /// What arrived.
        arrived: &'static str,
    },
    /// Staging's name in the target no longer leads to the staging directory this run
    /// opened: someone renamed or replaced it. Nothing was moved into place.
    #[error(
        "the staging directory {} was replaced while receiving; nothing was moved",
        shown(.path)
    )]
    StagingReplaced {
        /// Staging's path.
        path: PathBuf,
    },
    /// A staging directory an earlier run left is not ours alone, so it is not resumed.
    #[error("{} cannot be resumed: {why}", shown(.path))]
    UntrustedStaging {
        /// Staging's path.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A staged entry is not what the resume journal recorded.
    #[error("the staged \"{}\" is not what was recorded: {reason}", sanitize(.entry))]
    Mismatch {
        /// The entry's path in staging, from the peer.
        entry: String,
        /// What differs.
        reason: &'static str,
    },
    /// With `force`, a directory would replace a non-directory or the reverse: never.
    #[error("{} is {theirs} and the sender's {} is {ours}; not replaced", shown(.path), sanitize(.name))]
    KindClash {
        /// The final path.
        path: PathBuf,
        /// The entry's name in its directory, from the peer.
        name: String,
        /// What is at the final path.
        theirs: &'static str,
        /// What the sender sent.
        ours: &'static str,
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
                | ArchiveError::CorruptHeader { .. }
                | ArchiveError::Limit { .. }
                | ArchiveError::TooManyEntries { .. }
                | ArchiveError::FewerEntries { .. }
                | ArchiveError::KindMismatch { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ArchiveError::Limit { entry: bad.into(), reason: "r" },
            ArchiveError::KindMismatch { name: bad.into(), announced: "a", arrived: "b" },
            ArchiveError::StagingReplaced { path: path.clone() },
            ArchiveError::UntrustedStaging { path: path.clone(), why: "w" },
            ArchiveError::Mismatch { entry: bad.into(), reason: "r" },
            ArchiveError::KindClash {
                path: path.clone(),
                name: bad.into(),
                theirs: "a",
                ours: "b",
            },
        ];
        for e in errors {
            let shown = e.to_string();
            assert!(!shown.contains(['\x1b', '\u{202E}']), "{shown:?}");
            assert!(shown.contains("a?[2Jb?txt"), "{shown:?}");
        }
    }
}
