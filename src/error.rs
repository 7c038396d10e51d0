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
    #[error("{}", path.display())]
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
    /// The code did not parse.
    #[error(transparent)]
    Code(#[from] crate::code::ParseCodeError),
    /// The network stack failed.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// The handshake or the session failed.
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    /// A frame failed.
    #[error(transparent)]
    Frame(#[from] crate::framing::FrameError),
    /// A message from the peer failed to decode or came out of turn.
    #[error(transparent)]
    Message(#[from] crate::message::MessageError),
    /// The data phase failed.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// Writing what was received failed.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// Packing or extracting an archive failed.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// The sender saw too many wrong codes and stopped.
    #[error("{} wrong codes were tried: this code is burnt", crate::transfer::MAX_FAILED_ATTEMPTS)]
    CodeBurnt,
    /// The receiver declined the offer.
    #[error("the offer was declined: {0}")]
    Declined(String),
    /// The peer reported a failure.
    #[error("the peer failed: {0}")]
    Remote(String),
    /// The sender's source is not what the receiver holds part of.
    #[error("the source changed: {0}")]
    SourceChanged(&'static str),
    /// No peer came back within `--reconnect-timeout`.
    #[error("the connection was lost and did not come back within {0} s")]
    ReconnectTimeout(u64),
    /// Resume state could not be read or written.
    #[error(transparent)]
    Resume(#[from] crate::resume::ResumeError),
    /// The peer closed the connection while we waited for it.
    #[error("the peer went away {0}")]
    PeerGone(&'static str),
    /// A target already exists and `--force` was not given.
    #[error("{} already exists", crate::term::sanitize(&.0.display().to_string()))]
    Exists(PathBuf),
    /// The peer announced something unsafe to write.
    #[error("{0}")]
    Unsafe(String),
    /// The peer could be reached only through a relay and hole punching failed.
    #[error(
        "peer {0} is reachable only through a relay, and hole punching failed: a relay \
         carries too little for the data"
    )]
    RelayOnly(libp2p::PeerId),
    /// Confirmation is needed but there is no terminal to ask on.
    #[error("no terminal to confirm the offer on")]
    NoTerminal,
}

impl Error {
    /// The exit status for this error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        use crate::session::SessionError;
        match self {
            Error::Usage(_) | Error::Code(_) | Error::NoTerminal => exit::USAGE,
            Error::Interrupted => exit::INTERRUPTED,
            Error::CodeBurnt
            | Error::Session(SessionError::WrongCode | SessionError::PeerWrongCode { .. }) => {
                exit::AUTH
            }
            Error::Declined(_) => exit::DECLINED,
            _ => exit::FAILURE,
        }
    }

    /// A recommendation printed under the error, where one helps.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        use crate::session::SessionError;
        match self {
            Error::Code(e) => e.hint(),
            Error::Session(SessionError::WrongCode) => Some(
                "check the code with the sender; the sender allows a few attempts per code".into(),
            ),
            Error::CodeBurnt => Some("run pcp send again for a new code".into()),
            Error::Exists(_) => Some("use --force to overwrite, or choose another -o / -C".into()),
            Error::NoTerminal => Some("pass -y to accept without asking".into()),
            Error::SourceChanged(_) => Some(
                "send the same data as before, or remove the receiver's .pcp-part file (or use --force there) to start over".into(),
            ),
            Error::ReconnectTimeout(_) => Some(
                "with -o, run pcp receive -o again (any code) with a new pcp send to resume".into(),
            ),
            Error::Resume(crate::resume::ResumeError::OtherTransfer(_)) => {
                Some("use --force to start over, or choose another -o".into())
            }
            Error::RelayOnly(_) => Some(
                "both sides are behind NATs that could not be punched through; use \
                 --allow-relay with a relay that allows it, or put one side on a reachable \
                 address (--listen on a forwarded port, --peer)"
                    .into(),
            ),
            Error::Archive(e) => e.hint().map(str::to_owned),
            Error::Sink(crate::sink::SinkError::Exists(_)) => {
                Some("use --force to overwrite, or choose another -o / -C".into())
            }
            Error::Sink(crate::sink::SinkError::Archive(e)) => e.hint().map(str::to_owned),
            _ => None,
        }
    }

    /// True for a broken pipe on stdout: the reader went away, which is not a failure.
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == io::ErrorKind::BrokenPipe,
            Error::Sink(e) => e.is_broken_pipe(),
            _ => false,
        }
    }
}

/// Shorthand for the crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionError;

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::NoTerminal.exit_code(), 2);
        assert_eq!(Error::Session(SessionError::WrongCode).exit_code(), 3);
        assert_eq!(Error::CodeBurnt.exit_code(), 3);
        assert_eq!(Error::Declined("no".into()).exit_code(), 4);
        assert_eq!(Error::Interrupted.exit_code(), 130);
        assert_eq!(Error::Remote("disk full".into()).exit_code(), 1);
        assert_eq!(Error::Session(SessionError::NotServing).exit_code(), 1);
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let e = Error::Sink(crate::sink::SinkError::Stdout(io::ErrorKind::BrokenPipe.into()));
        assert!(e.is_broken_pipe());
        assert!(!Error::Interrupted.is_broken_pipe());
    }
}
