//! The two sides of a transfer, from code to last byte: discovery, session, offer,
//! consent, and the data phase through the [`crate::pipeline`].
//!
//! Data phase (sender → receiver): `Chunk`… then `End` in the LAST frame; the receiver
//! sends an `Ack` every [`pipeline::ack_every`] chunks it has verified and handed to its
//! output, and `Done` (or `Error`) in its LAST frame. The sender keeps at most
//! [`pipeline::window_chunks`] chunks beyond the last `Ack` in flight, so a receiver
//! whose output is slower than the link never buffers more than that window. Both
//! sides read while they write and the reverse direction carries only small acks,
//! which keeps clear of yamux's both-sides-writing stall (rust-libp2p#5410).
//!
//! Invariants:
//! - The sender reads no source byte before the receiver accepted.
//! - The receiver writes a chunk only after it opened and verified it, and commits a
//!   file or an extraction only after `End`'s totals and root hash matched.
//! - The sender gives up after [`MAX_FAILED_ATTEMPTS`] wrong codes: the code is burnt.
//! - Acks only ever move forward; the sender ignores one that goes back.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::cli::{ReceiveArgs, SendArgs};
use crate::code::{self, Code};
use crate::error::Error;
use crate::framing::{self, FrameError, FrameKey};
use crate::message::{Control, End, Kind, MIN_CHUNK_FRAME_LEN, MessageError, Offer};
use crate::node::{self, Event as NodeEvent, Node};
use crate::pipeline::{
    self, Compression, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, OpenedChunk, PipelineError, RootHash,
    SealedChunk,
};
use crate::progress::{Event, Reporter};
use crate::session::{self, HANDSHAKE_TIMEOUT, Rendezvous, Session, SessionError};
use crate::sink::{Sink, Target};
use crate::source::Source;
use crate::term;

mod receive;
mod send;

pub use receive::receive;
pub use send::send;

/// Wrong codes a sender tolerates before it stops.
pub const MAX_FAILED_ATTEMPTS: u32 = 3;

/// Handshakes a sender runs at once.
const MAX_CONCURRENT_HANDSHAKES: usize = 8;

/// How long a receiver waits for the sender to close after `Done`, so that its last
/// frame is not cut off by the process exiting.
const LINGER: Duration = Duration::from_secs(2);

/// A side that has sent nothing for this long sends a `Keepalive` (the sender) or a
/// repeated `Ack` (the receiver), so that silence means a dead link.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// Silence (or a write that cannot finish) for this long means the connection is dead:
/// both sides go back to discovery and resume. Well above [`KEEPALIVE`], well within
/// the 15 s the user should wait to hear about it.
const DEAD_AFTER: Duration = Duration::from_secs(10);

/// Pause before redialling a `--peer` address that failed.
const REDIAL: Duration = Duration::from_secs(1);

/// Pause before trying again a peer that was busy, in another slot, or unreachable.
const RETRY: Duration = Duration::from_secs(2);

/// How long a receiver keeps looking after a peer rejected its code.
const WRONG_CODE_GRACE: Duration = Duration::from_secs(2);

/// The same slot source as the DHT rendezvous ([`code::slot_secs`]), so a shortened
/// test slot applies to the hello too.
fn now_slot() -> u64 {
    code::current_slot()
}

/// A hello's slot is ours if it is the current one or a neighbour (clock skew and a
/// rollover during the wait).
fn slot_ok(at: Rendezvous) -> bool {
    // `at.slot` comes from the peer: checked arithmetic, never a panic.
    let (now, len) = (now_slot(), code::slot_secs());
    at.slot == now || at.slot.checked_add(len) == Some(now) || now.checked_add(len) == Some(at.slot)
}

/// The node for one side: `provide` for the sender, which advertises the code's
/// channel on the DHT; the receiver looks it up.
fn node_config(
    common: &crate::cli::CommonArgs,
    query: Duration,
    code: &Code,
    provide: bool,
) -> node::Config {
    let bootstrap = if common.bootstrap.is_empty() {
        node::dht::PUBLIC_BOOTSTRAP.iter().map(|a| a.parse().expect("static multiaddr")).collect()
    } else {
        common.bootstrap.clone()
    };
    node::Config {
        listen: common.listen.clone(),
        mdns: !common.no_mdns,
        mdns_query_interval: query,
        dht: (!common.no_dht).then(|| node::dht::Config {
            bootstrap,
            channel: Some(code.channel()),
            provide,
            lookup: !provide,
        }),
        serve: false,
        keypair: None,
        allow_relay: common.allow_relay,
    }
}

/// A stream that ended (or broke) while we waited for the peer's answer means the peer
/// went away; say so instead of reporting truncated data.
fn gone(e: SessionError, when: &'static str) -> Error {
    match e {
        SessionError::Frame(FrameError::Truncated | FrameError::Io(_)) | SessionError::Io(_) => {
            Error::PeerGone(when)
        }
        other => other.into(),
    }
}

/// Whether a session failure is a lost connection (resume) rather than a refusal,
/// tampering or a bug (stop).
fn is_lost(e: &SessionError) -> bool {
    matches!(
        e,
        SessionError::Io(_)
            | SessionError::Timeout
            | SessionError::Frame(FrameError::Truncated | FrameError::Io(_))
    )
}

/// [`is_lost`] for the crate's error.
fn error_is_lost(e: &Error) -> bool {
    match e {
        Error::Session(s) => is_lost(s),
        Error::Frame(FrameError::Truncated | FrameError::Io(_)) | Error::PeerGone(_) => true,
        _ => false,
    }
}

fn unexpected(got: &Control, expected: &'static str) -> Error {
    Error::Message(MessageError::Unexpected { got: got.name(), expected })
}

/// Races every candidate peer until one passes the PAKE.
///
/// A peer that refused for a passing reason (busy, another slot, unreachable) is tried
/// again after [`RETRY`]; one that failed the PAKE is not. After a wrong code the search
/// goes on for [`WRONG_CODE_GRACE`] in case another peer is the real sender, then the
/// receiver gives up with exit 3.
async fn find_sender(
    node: &Node,
    mut events: mpsc::Receiver<NodeEvent>,
    code: &Code,
    rep: &Reporter,
) -> Result<Session<Stream>, Error> {
    let me = node.peer_id();
    let mut tried = HashSet::new();
    let mut attempts = FuturesUnordered::new();
    let mut retries = FuturesUnordered::new();
    let mut wrong_code_by: Option<tokio::time::Instant> = None;
    loop {
        let give_up = async {
            match wrong_code_by {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = events.recv() => match ev {
                Some(NodeEvent::Discovered { peer, via }) => {
                    if tried.insert(peer) {
                        rep.emit(Event::Found { peer, via });
                        attempts.push(attempt(node.clone(), peer, code.clone(), me));
                    }
                }
                Some(NodeEvent::DialFailed { addr, error }) => {
                    tracing::debug!(%addr, %error, "dial failed; retrying");
                    let node = node.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(REDIAL).await;
                        let _ = node.dial(addr).await;
                    });
                }
                Some(NodeEvent::Listening(_)) => {}
                Some(NodeEvent::Dht(s)) => rep.emit(Event::Dht(s)),
                Some(NodeEvent::RelayOnly { peer }) => return Err(Error::RelayOnly(peer)),
                None => return Err(Error::Node(node::NodeError::Stopped)),
            },
            Some((peer, result)) = attempts.next(), if !attempts.is_empty() => match result {
                Ok(s) => return Ok(s),
                Err(SessionError::WrongCode) => {
                    tracing::debug!(%peer, "wrong code");
                    wrong_code_by.get_or_insert(tokio::time::Instant::now() + WRONG_CODE_GRACE);
                }
                Err(SessionError::Unsupported) => tracing::trace!(%peer, "not a pcp peer"),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "not ready; will retry");
                    if matches!(e, SessionError::Busy) {
                        rep.emit(Event::Notice("the sender is busy with another receiver; retrying".into()));
                    }
                    retries.push(async move {
                        tokio::time::sleep(RETRY).await;
                        peer
                    });
                }
            },
            Some(peer) = retries.next(), if !retries.is_empty() => {
                attempts.push(attempt(node.clone(), peer, code.clone(), me));
            }
            () = give_up => return Err(Error::Session(SessionError::WrongCode)),
        }
    }
}

type Attempt = (PeerId, Result<Session<Stream>, SessionError>);

async fn attempt(node: Node, peer: PeerId, code: Code, me: PeerId) -> Attempt {
    // The slot is taken now, not when the receiver started: the sender may show up in
    // a later one.
    let at = Rendezvous { channel: code.channel(), slot: now_slot() };
    let mut control = node.control();
    let run = async {
        // The session stream MUST ride a direct connection unless --allow-relay: it
        // carries the data, and a relay stops after 128 KiB. `link` waits for DCUtR and
        // closes the relayed connection; libp2p-stream would pick one at random.
        match node.link(peer).await {
            Ok(node::Link::Direct | node::Link::Relayed) => {}
            Ok(node::Link::Unreachable) => {
                return Err(SessionError::Io(std::io::Error::other("peer unreachable")));
            }
            // The node reported it (Event::RelayOnly); this peer is not tried again.
            Ok(node::Link::RelayOnly) => return Err(SessionError::Unsupported),
            Err(_) => return Err(SessionError::Io(std::io::Error::other("network task gone"))),
        }
        let stream = control.open_stream(peer, session::PROTOCOL).await.map_err(|e| match e {
            libp2p_stream::OpenStreamError::UnsupportedProtocol(_) => SessionError::Unsupported,
            libp2p_stream::OpenStreamError::Io(e) => SessionError::Io(e),
            other => SessionError::Io(std::io::Error::other(other.to_string())),
        })?;
        Session::connect(stream, &code, at, me, peer).await
    };
    let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(SessionError::Timeout),
    };
    (peer, result)
}

/// A name the sender announced, if it is one plain path component.
fn plain_name(name: &str) -> Option<&str> {
    let mut comps = Path::new(name).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('\\') && !name.contains('\0') => {
            Some(name)
        }
        _ => None,
    }
}

fn choose_target(args: &ReceiveArgs, offer: &Offer, stdout_tty: bool) -> Result<Target, Error> {
    if let Some(o) = &args.output {
        return Ok(Target::File { path: o.clone(), keep_part: true });
    }
    if args.directory.is_none() && !stdout_tty {
        return Ok(Target::Stdout);
    }
    let dir = args.directory.clone().unwrap_or_else(|| PathBuf::from("."));
    match offer.kind {
        Kind::Stream => Err(Error::Usage(
            "a stream has no name to save it under: redirect stdout or use -o FILE".into(),
        )),
        Kind::File => {
            let name = plain_name(&offer.name).ok_or_else(|| {
                Error::Unsafe(format!(
                    "the sender announced an unsafe file name {:?}",
                    term::sanitize(&offer.name)
                ))
            })?;
            // The part file and manifest stay on failure, so a rerun resumes.
            Ok(Target::File { path: dir.join(name), keep_part: true })
        }
        Kind::Archive => {
            if offer.entries.is_empty() || offer.entries.iter().any(|e| plain_name(e).is_none()) {
                return Err(Error::Unsafe("the sender announced unsafe entry names".into()));
            }
            Ok(Target::Extract { dir, entries: offer.entries.clone() })
        }
    }
}

fn describe_short(offer: &Offer) -> String {
    let name = term::sanitize(&offer.name);
    let size = offer.size.map(|s| format!(", {}", term::bytes(s))).unwrap_or_default();
    match offer.kind {
        Kind::Stream => "a stream".to_owned(),
        Kind::File => format!("file '{name}'{size}"),
        Kind::Archive => {
            // Show what will be written, not the sender's summary of it.
            let shown: Vec<String> =
                offer.entries.iter().take(3).map(|e| format!("'{}'", term::sanitize(e))).collect();
            let more = offer.entries.len().saturating_sub(3);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            format!("{}{more} (tar stream)", shown.join(", "))
        }
    }
}

fn describe(offer: &Offer, peer: PeerId) -> String {
    format!("Accept {} from {peer}?", describe_short(offer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain() {
        assert_eq!(plain_name("a.txt"), Some("a.txt"));
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "x\0y"] {
            assert_eq!(plain_name(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn acks_only_move_forward_and_the_last_frame_ends_the_replies() {
        let key = FrameKey::new([3; 32]);
        let mut sealer = framing::Sealer::new(key.clone());
        let mut wire = Vec::new();
        for (msg, last) in [
            (Control::Ack(4), false),
            (Control::Ack(2), false),
            (Control::Ack(8), false),
            (Control::Done, true),
        ] {
            let mut buf = msg.encode();
            let h = sealer.seal_next(&mut buf, last).expect("seal");
            wire.extend_from_slice(&h.to_bytes());
            wire.extend_from_slice(&buf);
        }
        let (tx, rx) = watch::channel(0);
        let last =
            send::read_replies(futures::io::Cursor::new(wire), framing::Opener::new(key), tx)
                .await
                .expect("replies");
        assert_eq!(last, Control::Done);
        assert_eq!(*rx.borrow(), 8, "the ack that went back was ignored");
    }

    #[tokio::test]
    async fn replies_that_are_not_acks_are_refused() {
        let key = FrameKey::new([3; 32]);
        let mut sealer = framing::Sealer::new(key.clone());
        let mut buf = Control::Accept.encode();
        let h = sealer.seal_next(&mut buf, false).expect("seal");
        let mut wire = h.to_bytes().to_vec();
        wire.extend_from_slice(&buf);
        let (tx, _rx) = watch::channel(0);
        let r =
            send::read_replies(futures::io::Cursor::new(wire), framing::Opener::new(key), tx).await;
        assert!(matches!(r, Err(SessionError::Message(MessageError::Unexpected { .. }))));
    }

    #[test]
    fn slots_tolerate_skew() {
        let now = now_slot();
        assert!(slot_ok(Rendezvous { channel: 0, slot: now }));
        assert!(slot_ok(Rendezvous { channel: 0, slot: now - code::slot_secs() }));
        assert!(!slot_ok(Rendezvous { channel: 0, slot: now - 3 * code::slot_secs() }));
        assert!(!slot_ok(Rendezvous { channel: 0, slot: u64::MAX }), "no overflow on peer input");
    }
}
