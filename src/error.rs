//! The crate's error type and the one place that maps errors to exit codes.
//!
//! Each layer has its own error enum (`code::ParseCodeError`, `framing::FrameError`,
//! `session::SessionError`, `archive::ArchiveError`, …); they roll up into [`Error`]
//! through `#[from]`. `main.rs` prints `pcp: error: {chain}` and, where one helps, a
//! `hint: …` line, then exits with [`Error::exit_code`].

use std::io;
use std::path::PathBuf;

/// Process exit statuses, documented in the man pages' EXIT STATUS section.
pub mod exit {
    /// The transfer completed and verified.
    pub const SUCCESS: u8 = 0;
    /// The transfer failed, or local I/O did.
    pub const FAILURE: u8 = 1;
    /// The command line was wrong (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// The peer could not be authenticated: wrong code, or too many failed attempts.
    pub const AUTH: u8 = 3;
    /// The receiver declined the offer.
    pub const DECLINED: u8 = 4;
    /// Interrupted by SIGINT.
    pub const INTERRUPTED: u8 = 130;
}

/// Everything that can end a pcp run early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A usage problem the parser could not catch (conflicting sources, bad code, …).
    #[error("{0}")]
    Usage(String),
    /// Local I/O on a named path failed.
    #[error("{path}: {source}")]
    Path {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Other local I/O failed (stdin, stdout, the terminal).
    #[error("{context}")]
    Io {
        /// What pcp was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// The exit status for this error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Path { .. } | Error::Io { .. } => exit::FAILURE,
        }
    }

    /// A recommendation printed under the error, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        None
    }

    /// True for a broken pipe on stdout: the reader went away, which is not a failure.
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Shorthand for the crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
