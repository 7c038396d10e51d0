//! Hints: what the user of the `pcp` command can do about an error, in this command's
//! flags and subcommands.
//!
//! The engine's messages state what happened and name no flag (see `pcp::error`), so
//! that a GUI or a script calling the library is not told about `--force`. The advice
//! lives here, keyed on the error's structure: the layer enums `pcp::error` exports.
//! One hint keys on a peer's words (the sender's "the source changed"): it only adds
//! advice, so a peer that mimics them gains nothing.
//!
//! Each hint is one line, printed as `hint: …` under the error.

use pcp::error::{ArchiveError, KeyError, OwnershipError, ResumeError, SessionError, SinkError};
use pcp::{Error, Role};

/// For a part file, manifest, key or staging directory pcp will not take as its own.
const NOT_OURS: &str = "move it away or pass --force to start over";

/// What to do about an engine error, where a hint helps.
pub(crate) fn hint(e: &Error) -> Option<String> {
    session(e).or_else(|| local(e)).or_else(|| network(e)).map(str::to_owned)
}

/// The code, the sender and its answer.
fn session(e: &Error) -> Option<&'static str> {
    Some(match e {
        Error::Session(SessionError::WrongCode) => {
            "check the code with the sender; the sender allows a few attempts per code"
        }
        Error::Session(SessionError::Burnt) => {
            "ask the sender to run pcp send again, and use the new code it shows"
        }
        Error::Session(SessionError::Taken) => {
            "this code went to another receiver; ask the sender for a new code (or for \
             pcp send --many, which serves several receivers)"
        }
        Error::Session(SessionError::Guessing { .. }) => {
            "ask the sender to run pcp send again, and give the new code only to the receiver"
        }
        Error::NotFound { said_burnt } if *said_burnt > 0 => {
            "if the sender says its code is burnt, run pcp send again for a new one; \
             otherwise check the code, and that both sides are on the same network"
        }
        Error::CodeBurnt { .. } => {
            "start again with a new code: run pcp send again, and give the code only to the \
             receiver"
        }
        Error::SourceChanged(_) => {
            "send the same data as before, or remove the receiver's .pcp-part file (or use \
             --force there) to start over"
        }
        Error::Session(SessionError::Remote { from: Role::Sender, message })
            if message.starts_with("the source changed") =>
        {
            "the sender's data is not what the part file here holds: run pcp receive again \
             with --force to start over, or remove the .pcp-part (or .pcp-ID.partial) \
             entries and their .manifest and .key"
        }
        Error::ResumeTooOld { .. } => "run pcp send again to start over",
        Error::StreamLost { .. } => {
            "run pcp send again with the data from the start, and keep the receiver running \
             (or use -o FILE there, which resumes)"
        }
        _ => return None,
    })
}

/// The files on this side.
fn local(e: &Error) -> Option<&'static str> {
    match e {
        Error::Sink(SinkError::Exists(_)) => Some(
            "use --force to overwrite, or choose another -o / -C; the sender keeps waiting, \
             so run pcp receive again with the same code",
        ),
        Error::Sink(SinkError::Unnamed) => Some(
            "the sender keeps waiting: run pcp receive again with the same code, with stdout \
             redirected or -o FILE",
        ),
        Error::Sink(SinkError::Diverged) => {
            Some("run pcp receive again with --force to start over")
        }
        Error::Resume(ResumeError::NotOurs(e))
        | Error::Sink(SinkError::NotOurs(e) | SinkError::Resume(ResumeError::NotOurs(e))) => {
            not_ours(e)
        }
        Error::Resume(ResumeError::OtherTransfer(_)) => {
            Some("use --force to start over, or choose another -o")
        }
        Error::Sink(SinkError::Archive(e)) | Error::Source(pcp::error::SourceError::Archive(e)) => {
            archive(e)
        }
        _ => None,
    }
}

/// Finding and reaching the peer.
fn network(e: &Error) -> Option<&'static str> {
    match e {
        Error::ReconnectTimeout(_) => {
            Some("with -o, run pcp receive -o again (any code) with a new pcp send to resume")
        }
        Error::RelayOnly(_) => Some(
            "both sides are behind NATs that could not be punched through; use --allow-relay \
             with a relay that allows it, or put one side on a reachable address (--listen on \
             a forwarded port, --peer)",
        ),
        _ => None,
    }
}

/// A file pcp would reopen but cannot take for its own; nothing for an I/O error.
fn not_ours(e: &OwnershipError) -> Option<&'static str> {
    match e {
        OwnershipError::Io { .. } => None,
        _ => Some(NOT_OURS),
    }
}

/// What to do about an archive the receiver refused or could not put in place.
fn archive(e: &ArchiveError) -> Option<&'static str> {
    match e {
        ArchiveError::Exists { .. } => {
            Some("use --force to overwrite, or -C DIR to extract elsewhere")
        }
        ArchiveError::UntrustedStaging { .. } | ArchiveError::Mismatch { .. } => Some(NOT_OURS),
        ArchiveError::KindClash { .. } => Some("move it away, or extract elsewhere with -C DIR"),
        ArchiveError::Unsafe { .. } => Some(
            "the sender's archive tries to write outside the target; nothing was extracted \
             outside it",
        ),
        _ => None,
    }
}

/// What to do about `pcp node --key FILE`.
pub(crate) fn key(e: &KeyError) -> Option<&'static str> {
    match e {
        KeyError::NotOurs(_) => Some(
            "a node's key file must be yours alone: a regular file you own, one link, no \
             write bit for group or others (chmod 600); or remove it to start with a new \
             identity",
        ),
        KeyError::TooLarge(_) | KeyError::NotAKey { .. } => {
            Some("give --key the file pcp node created, or a new path to create one")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn writable() -> OwnershipError {
        OwnershipError::Writable { path: PathBuf::from("x.pcp-part"), mode: 0o666 }
    }

    /// Issue 15, item 11: a changed source shows the way out on the receiver too.
    #[test]
    fn a_changed_source_has_a_hint_on_both_sides() {
        let sender = Error::SourceChanged("its first chunks differ from what the receiver holds");
        assert!(hint(&sender).is_some_and(|h| h.contains("--force")));
        let receiver = Error::Session(SessionError::Remote {
            from: Role::Sender,
            message: pcp::error::chain(&sender),
        });
        let h = hint(&receiver).expect("a hint on the receiver");
        assert!(h.contains("--force") && h.contains(".pcp-part"), "{h}");
    }

    #[test]
    fn a_file_that_is_not_ours_can_be_moved_away_or_forced() {
        let e = Error::Sink(SinkError::Resume(ResumeError::NotOurs(writable())));
        assert_eq!(hint(&e).as_deref(), Some(NOT_OURS));
        assert_eq!(NOT_OURS, "move it away or pass --force to start over");
        let io = OwnershipError::Io { path: "x".into(), source: std::io::Error::other("eio") };
        assert_eq!(hint(&Error::Resume(ResumeError::NotOurs(io))), None);
    }

    #[test]
    fn archive_refusals_point_at_force_or_another_directory() {
        let exists = ArchiveError::Exists { path: "tree".into() };
        assert_eq!(
            archive(&exists),
            Some("use --force to overwrite, or -C DIR to extract elsewhere")
        );
        let untrusted = ArchiveError::UntrustedStaging { path: "s".into(), why: "a symbolic link" };
        assert_eq!(archive(&untrusted), Some(NOT_OURS));
        let unsafe_entry = ArchiveError::Unsafe { entry: "../x".into(), reason: "escapes" };
        let e = Error::Sink(SinkError::Archive(unsafe_entry));
        assert!(hint(&e).is_some_and(|h| h.contains("nothing was extracted outside")));
    }

    /// The messages that used to carry the advice now state only what happened.
    #[test]
    fn advice_moved_out_of_the_messages_is_a_hint() {
        for (e, flag) in [
            (Error::Sink(SinkError::Unnamed), "-o FILE"),
            (Error::Sink(SinkError::Diverged), "--force"),
            (Error::ResumeTooOld { held: 3, oldest: 9 }, "pcp send"),
        ] {
            let said = e.to_string();
            assert!(!said.contains(flag) && !said.contains("pcp "), "{said}");
            assert!(hint(&e).is_some_and(|h| h.contains(flag)), "{e:?}");
        }
    }

    #[test]
    fn a_node_key_that_is_not_ours_says_how_to_make_it_so() {
        let h = key(&KeyError::NotOurs(writable())).expect("a hint");
        assert!(h.contains("chmod 600"), "{h}");
        assert!(!h.contains("  "), "one line, single spaces: {h:?}");
    }
}
