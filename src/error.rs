//! The engine's error: what ended a transfer, with the layer's own error kept as its
//! cause, and a stable [`ErrorKind`] a caller can act on.
//!
//! Each layer has its own error enum ([`FrameError`], [`SessionError`], [`SourceError`],
//! [`SinkError`], …, exported here so that a caller can match on them); none of them
//! knows this type. They roll up here through `#[from]`, each kept whole as the cause.
//! Every enum is `#[non_exhaustive]`: a new case is not a breaking change.
//!
//! Messages state what happened, in the engine's terms. They never give advice in a
//! front end's terms (a flag, a command to run): the `pcp` binary adds its hints
//! (`src/cli/hint.rs`) from the error's structure, and another front end words its own.

use std::io;

use crate::event::Role;
use crate::term;

pub use crate::archive::ArchiveError;
pub use crate::framing::FrameError;
pub use crate::fsx::OwnershipError;
pub use crate::message::MessageError;
pub use crate::node::NodeError;
pub use crate::pipeline::PipelineError;
pub use crate::resume::ResumeError;
pub use crate::server::KeyError;
pub use crate::session::SessionError;
pub use crate::sink::SinkError;
pub use crate::source::SourceError;

/// What kind of failure, for a caller that decides what to do next (and for the
/// binary's exit status and the `kind` of its JSON `error` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The options were wrong (a bad chunk size, `-` mixed with paths, …).
    Usage,
    /// The code was wrong.
    WrongCode,
    /// Too many wrong codes were tried: the sender stopped taking the code (on the
    /// sender, and on a receiver the sender told so).
    CodeBurnt,
    /// Several peers posing as the sender failed to prove they knew the code: someone
    /// is guessing it, and the receiver stopped.
    Guessing,
    /// The receiver declined.
    Declined,
    /// We were cancelled.
    Cancelled,
    /// The peer was cancelled by its user.
    PeerCancelled,
    /// The target already exists (and force was not given).
    Exists,
    /// Something local failed: a file, the disk, standard input or output.
    Io,
    /// The network failed, or the peer went away and did not come back.
    Network,
    /// The peer sent something wrong, unsafe or inconsistent.
    Protocol,
    /// The peer reported a failure of its own.
    Remote,
    /// The peer did not turn up within the caller's timeout
    /// ([`crate::NetworkOptions::timeout`]).
    Timeout,
}

impl ErrorKind {
    /// A stable lowercase name (`wrong_code`, `declined`, `io`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::WrongCode => "wrong_code",
            ErrorKind::CodeBurnt => "code_burnt",
            ErrorKind::Guessing => "guessing",
            ErrorKind::Declined => "declined",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::PeerCancelled => "peer_cancelled",
            ErrorKind::Exists => "exists",
            ErrorKind::Io => "io",
            ErrorKind::Network => "network",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Remote => "remote",
            ErrorKind::Timeout => "timeout",
        }
    }
}

/// Everything that can end a transfer early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The options cannot work.
    #[error("{0}")]
    InvalidOptions(String),
    /// The source cannot be read.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// The network stack failed.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// The handshake or a control message failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The data phase failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Writing what was received failed.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// Resume state could not be read or written.
    #[error(transparent)]
    Resume(#[from] crate::resume::ResumeError),
    /// The sender saw too many wrong codes and stopped. (A receiver told so by the
    /// sender fails with a session error of the same [`ErrorKind::CodeBurnt`].) They
    /// may be the user's own typos as well as someone else's guesses: the message says
    /// how many came from where, and lets the user judge.
    #[error(
        "{} wrong code{} tried ({}); the code is burnt: start again with a new one",
        tried_total(.tried),
        if tried_total(.tried) == 1 { " was" } else { "s were" },
        tried_list(.tried)
    )]
    CodeBurnt {
        /// Wrong codes per origin, most first.
        tried: Vec<(crate::event::Origin, u32)>,
    },
    /// The receiver stopped looking without meeting the sender: the only peers that
    /// answered failed before the key exchange (one said the code is burnt, which
    /// anyone can say), and no other turned up.
    #[error(
        "the sender was not found{}",
        if *.said_burnt > 0 {
            format!(
                ": {} said this code is burnt, without proving it knew the code",
                if *.said_burnt == 1 { "a peer".to_owned() } else { format!("{} peers", .said_burnt) }
            )
        } else {
            String::new()
        }
    )]
    NotFound {
        /// Peers that said "burnt" before any key exchange.
        said_burnt: usize,
    },
    /// The offer was declined: at our prompt ("declined"), or by the receiver (its
    /// reason, as it sent it).
    #[error("{}", term::sanitize(.0))]
    Declined(String),
    /// The caller cancelled.
    #[error("interrupted")]
    Cancelled,
    /// The peer's user stopped it on purpose.
    #[error("the {} cancelled", match .0 { Role::Sender => "sender", Role::Receiver => "receiver" })]
    PeerCancelled(Role),
    /// The caller's consent callback failed.
    #[error("cannot ask whether to accept")]
    Consent(#[source] io::Error),
    /// The sender's source is not what the receiver holds part of.
    #[error("the source changed: {0}")]
    SourceChanged(&'static str),
    /// A resuming receiver holds less than the sender still keeps in memory.
    #[error("the receiver holds {held} chunks but only chunks from {oldest} on are still kept")]
    ResumeTooOld {
        /// Chunks the receiver holds.
        held: u64,
        /// The oldest chunk the sender keeps.
        oldest: u64,
    },
    /// After a reconnection the sender offered something else.
    #[error("after reconnecting, the sender offered something else")]
    OfferChanged,
    /// No peer came back within the reconnect timeout.
    #[error("the connection was lost and did not come back within {0} s")]
    ReconnectTimeout(u64),
    /// The receiver of a stream went away for good, and another one came with the
    /// code: what the first one took cannot be read again (issue 15, item 2).
    #[error(
        "the receiver went away after {delivered} bytes of the stream, and a stream cannot \
         be restarted for another receiver"
    )]
    StreamLost {
        /// Bytes read from the stream so far.
        delivered: u64,
    },
    /// The peer did not turn up within [`crate::NetworkOptions::timeout`].
    #[error(
        "{} within {}",
        match .peer { Role::Sender => "no sender was found", Role::Receiver => "no receiver came" },
        crate::event::duration_words(*.after)
    )]
    TimedOut {
        /// Whom we waited for.
        peer: Role,
        /// How long.
        after: std::time::Duration,
    },
    /// The peer closed the connection while we waited for it.
    #[error("the peer went away {0}")]
    PeerGone(&'static str),
    /// The peer could be reached only through a relay and hole punching failed.
    #[error(
        "peer {0} is reachable only through a relay, and hole punching failed: a relay \
         carries too little for the data"
    )]
    RelayOnly(libp2p::PeerId),
}

impl Error {
    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidOptions(_)
            | Error::Sink(SinkError::Unnamed)
            | Error::Source(crate::source::SourceError::Usage(_)) => ErrorKind::Usage,
            Error::Session(SessionError::WrongCode | SessionError::PeerWrongCode { .. }) => {
                ErrorKind::WrongCode
            }
            Error::CodeBurnt { .. } | Error::Session(SessionError::Burnt) => ErrorKind::CodeBurnt,
            Error::Session(SessionError::Guessing { .. }) => ErrorKind::Guessing,
            Error::Declined(_) => ErrorKind::Declined,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::PeerCancelled(_) | Error::Session(SessionError::Cancelled) => {
                ErrorKind::PeerCancelled
            }
            Error::Sink(SinkError::Exists(_)) => ErrorKind::Exists,
            Error::TimedOut { .. } => ErrorKind::Timeout,
            Error::Sink(SinkError::UnsafeName(_)) => ErrorKind::Protocol,
            Error::Session(SessionError::Remote { .. }) => ErrorKind::Remote,
            Error::Source(_) | Error::Sink(_) | Error::Resume(_) | Error::Consent(_) => {
                ErrorKind::Io
            }
            Error::Node(_)
            | Error::NotFound { .. }
            | Error::ReconnectTimeout(_)
            | Error::PeerGone(_)
            | Error::StreamLost { .. }
            | Error::RelayOnly(_) => ErrorKind::Network,
            e if e.is_transient() => ErrorKind::Network,
            _ => ErrorKind::Protocol,
        }
    }

    /// Whether this is a lost connection, after which the transfer resumes, rather
    /// than a failure that ends it.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Session(e) => e.is_transient(),
            Error::Pipeline(PipelineError::Frame(e)) => e.is_transient(),
            Error::PeerGone(_) => true,
            _ => false,
        }
    }

    /// True for a broken pipe on the receiver's writer: its reader went away, which is
    /// not a failure of the transfer.
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Sink(e) => e.is_broken_pipe(),
            _ => false,
        }
    }
}

/// An error and its causes, joined with `: ` (`error: cause: cause…`): how pcp tells
/// the peer why it stops, and how the binary prints a failure.
///
/// The text is as each level made it: a dependency's error (the `tar` crate's, which
/// quotes a header's raw bytes) may hold anything. Show it only through
/// [`crate::printable`], as the binary does.
#[must_use]
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// What a side that stops on `e` tells its peer in an `Error` message: the whole cause,
/// cut to what the peer accepts ([`crate::message::MAX_REASON_LEN`]). The peer shows it
/// as "the sender reported: …" (or receiver), so it names no side itself.
pub(crate) fn last_word(e: &Error) -> String {
    chain(e)
}

fn tried_total(tried: &[(crate::event::Origin, u32)]) -> u32 {
    tried.iter().map(|(_, n)| n).fold(0, |a, n| a.saturating_add(*n))
}

/// `3 from 198.18.0.2, 1 from 2001:db8::/64`.
fn tried_list(tried: &[(crate::event::Origin, u32)]) -> String {
    let each: Vec<String> = tried.iter().map(|(o, n)| format!("{n} from {o}")).collect();
    each.join(", ")
}

/// Shorthand for the engine's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Error {
        Error::Session(SessionError::Frame(e))
    }
}

impl From<crate::message::MessageError> for Error {
    fn from(e: crate::message::MessageError) -> Error {
        Error::Session(SessionError::Message(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_error_is_shown_as_its_words_sanitized_and_short() {
        // A sender trying to pass its words off as pcp's own, with escapes and length.
        let forged =
            format!("wrong code\n\x1b[2Kpcp: run pcp receive --code x{}", "y".repeat(5000));
        let e = Error::Session(SessionError::Remote { from: Role::Sender, message: forged });
        let shown = e.to_string();
        assert!(shown.starts_with("the sender reported: wrong code??[2Kpcp: "), "{shown}");
        assert!(!shown.contains(['\n', '\x1b']), "{shown:?}");
        assert!(shown.chars().count() < 250, "{} characters", shown.chars().count());
        let e = Error::Session(SessionError::Remote {
            from: Role::Receiver,
            message: "disk full".into(),
        });
        assert_eq!(e.to_string(), "the receiver reported: disk full");
    }

    #[test]
    fn kinds() {
        assert_eq!(Error::InvalidOptions("x".into()).kind(), ErrorKind::Usage);
        assert_eq!(Error::Session(SessionError::WrongCode).kind(), ErrorKind::WrongCode);
        assert_eq!(Error::CodeBurnt { tried: Vec::new() }.kind(), ErrorKind::CodeBurnt);
        assert_eq!(Error::Session(SessionError::Guessing { peers: 3 }).kind(), ErrorKind::Guessing);
        assert_eq!(Error::NotFound { said_burnt: 1 }.kind(), ErrorKind::Network);
        let said = Error::NotFound { said_burnt: 1 }.to_string();
        assert_eq!(
            said,
            "the sender was not found: a peer said this code is burnt, without proving it knew the code"
        );
        assert!(!said.contains("someone else tried"), "{said}");
        assert_eq!(Error::Declined("no".into()).kind(), ErrorKind::Declined);
        assert_eq!(Error::Cancelled.kind(), ErrorKind::Cancelled);
        assert_eq!(Error::PeerCancelled(Role::Sender).kind(), ErrorKind::PeerCancelled);
        assert_eq!(
            Error::Session(SessionError::Remote {
                from: Role::Sender,
                message: "disk full".into()
            })
            .kind(),
            ErrorKind::Remote
        );
        assert_eq!(Error::Session(SessionError::NotServing).kind(), ErrorKind::Protocol);
        assert_eq!(Error::Session(SessionError::Timeout).kind(), ErrorKind::Network);
        assert_eq!(Error::Sink(crate::sink::SinkError::Unnamed).kind(), ErrorKind::Usage);
        let unsafe_name = crate::sink::SinkError::UnsafeName("..".into());
        assert_eq!(Error::Sink(unsafe_name).kind(), ErrorKind::Protocol);
    }

    /// Issue 15, item 8: the user's own typos are not "someone else": the sender says
    /// how many wrong codes came from where.
    #[test]
    fn a_burnt_code_says_how_many_wrong_codes_came_from_where() {
        use crate::event::Origin;
        let e = Error::CodeBurnt {
            tried: vec![
                (Origin::Ipv4([198, 18, 0, 2].into()), 3),
                (Origin::Ipv4([198, 18, 0, 3].into()), 1),
            ],
        };
        assert_eq!(
            e.to_string(),
            "4 wrong codes were tried (3 from 198.18.0.2, 1 from 198.18.0.3); the code is \
             burnt: start again with a new one"
        );
        assert!(!e.to_string().contains("someone else"), "{e}");
    }

    #[test]
    fn lost_connections_are_transient_and_tampering_is_not() {
        assert!(Error::from(FrameError::Truncated).is_transient());
        assert!(Error::Pipeline(PipelineError::Frame(FrameError::Timeout)).is_transient());
        assert!(!Error::from(FrameError::Decrypt).is_transient());
        assert!(!Error::Pipeline(PipelineError::HashMismatch { index: 0 }).is_transient());
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let e = Error::Sink(crate::sink::SinkError::Writer(io::ErrorKind::BrokenPipe.into()));
        assert!(e.is_broken_pipe());
        assert!(!Error::Cancelled.is_broken_pipe());
    }
}
