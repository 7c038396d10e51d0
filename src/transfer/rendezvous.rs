//! Meeting the peer: the receiver races every candidate until one passes the PAKE
//! ([`find_sender`]); the sender's [`Listener`] runs incoming handshakes side by side
//! in a bounded number of slots and counts wrong codes.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;

use super::{MAX_FAILED_ATTEMPTS, slot_ok};
use crate::code::{self, Code};
use crate::error::Error;
use crate::event::{Event, Events};
use crate::node::{self, Event as NodeEvent, Node};
use crate::session::{self, HANDSHAKE_TIMEOUT, Rendezvous, Session, SessionError};

/// Handshakes a sender runs at once.
const MAX_CONCURRENT_HANDSHAKES: usize = 8;

/// Pause before redialling a `--peer` address that failed.
const REDIAL: Duration = Duration::from_secs(1);

/// Pause before trying again a peer that was busy, in another slot, or unreachable.
const RETRY: Duration = Duration::from_secs(2);

/// How long a receiver keeps looking after a peer rejected its code.
const WRONG_CODE_GRACE: Duration = Duration::from_secs(2);

/// Races every candidate peer until one passes the PAKE.
///
/// A peer that refused for a passing reason (busy, another slot, unreachable) is tried
/// again after [`RETRY`]; one that failed the PAKE is not. After a wrong code the search
/// goes on for [`WRONG_CODE_GRACE`] in case another peer is the real sender, then the
/// receiver gives up.
pub(super) async fn find_sender(
    node: &Node,
    mut found: mpsc::Receiver<NodeEvent>,
    code: &Code,
    events: &Events,
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
            ev = found.recv() => match ev {
                Some(NodeEvent::Discovered { peer, via }) => {
                    if tried.insert(peer) {
                        events.emit(Event::Found { peer, via });
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
                Some(NodeEvent::Dht(s)) => events.emit(Event::Dht(s)),
                Some(NodeEvent::RelayOnly { peer }) => return Err(Error::RelayOnly(peer)),
                None => return Err(node::NodeError::Stopped.into()),
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
                        events.emit(Event::SenderBusy);
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
            () = give_up => return Err(SessionError::WrongCode.into()),
        }
    }
}

type Attempt = (PeerId, Result<Session<Stream>, SessionError>);

async fn attempt(node: Node, peer: PeerId, code: Code, me: PeerId) -> Attempt {
    // The slot is taken now, not when the receiver started: the sender may show up in
    // a later one.
    let at = Rendezvous { channel: code.channel(), slot: code::current_slot() };
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
    let result =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, run).await.unwrap_or(Err(SessionError::Timeout));
    (peer, result)
}

/// The sender's side of the rendezvous: incoming session streams and the node's
/// events, for as long as the transfer runs.
pub(super) struct Listener {
    incoming: libp2p_stream::IncomingStreams,
    found: mpsc::Receiver<NodeEvent>,
    code: Code,
    me: PeerId,
    failures: u32,
    events: Events,
}

impl Listener {
    pub(super) fn new(
        node: &Node,
        found: mpsc::Receiver<NodeEvent>,
        code: Code,
        events: Events,
    ) -> Result<Listener, Error> {
        let incoming = node
            .control()
            .accept(session::PROTOCOL)
            .map_err(|_| node::NodeError::Transport("the session protocol is taken".into()))?;
        Ok(Listener { incoming, found, code, me: node.peer_id(), failures: 0, events })
    }

    /// Accepts streams until one passes the PAKE. Handshakes run side by side, so a
    /// stalled or slow peer cannot hold up the real receiver; past the cap, newcomers
    /// are told we are busy.
    pub(super) async fn next_session(&mut self) -> Result<Session<Stream>, Error> {
        let mut pending = FuturesUnordered::new();
        let (code, me) = (&self.code, self.me);
        loop {
            tokio::select! {
                next = self.incoming.next() => {
                    let Some((peer, stream)) = next else {
                        return Err(node::NodeError::Stopped.into());
                    };
                    if pending.len() >= MAX_CONCURRENT_HANDSHAKES {
                        tokio::spawn(Session::refuse_busy(stream));
                        continue;
                    }
                    self.events.emit(Event::Authenticating { peer });
                    pending.push(async move {
                        (peer, Session::accept(stream, code, slot_ok, me, peer).await)
                    });
                }
                Some(ev) = self.found.recv() => report_network(ev, &self.events),
                Some((peer, result)) = pending.next(), if !pending.is_empty() => match result {
                    Ok(s) => return Ok(s),
                    Err(SessionError::PeerWrongCode { peer }) => {
                        self.failures += 1;
                        let left = MAX_FAILED_ATTEMPTS.saturating_sub(self.failures);
                        self.events.emit(Event::WrongCode { peer, left });
                        if left == 0 {
                            return Err(Error::CodeBurnt);
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "handshake refused"),
                },
            }
        }
    }

    /// While a session runs: refuses every other stream as busy and passes the node's
    /// events on. Never returns.
    pub(super) async fn refuse_others(&mut self) {
        loop {
            tokio::select! {
                next = self.incoming.next() => match next {
                    Some((_, stream)) => { tokio::spawn(Session::refuse_busy(stream)); }
                    None => std::future::pending::<()>().await,
                },
                Some(ev) = self.found.recv() => report_network(ev, &self.events),
            }
        }
    }
}

/// Passes the node's DHT status to the caller; the rest is for `-v`.
fn report_network(ev: NodeEvent, events: &Events) {
    if let NodeEvent::Dht(s) = ev {
        events.emit(Event::Dht(s));
    } else {
        tracing::debug!(?ev, "network event");
    }
}

#[cfg(test)]
mod tests {
    //! Rendezvous over libp2p's memory transport: real nodes, real streams, no network.

    use super::*;
    use crate::options::NetworkOptions;

    fn memory() -> NetworkOptions {
        NetworkOptions::local(vec!["/memory/0".parse().expect("multiaddr")])
    }

    /// A sender's node and listener, and the address a receiver can dial.
    async fn listener(code: &Code) -> (Node, Listener, libp2p::Multiaddr) {
        let cfg = super::super::node_config(&memory(), Duration::from_secs(60), code, true);
        let (node, found) = Node::start(cfg).expect("node");
        let addr = node.listen_addrs().await.expect("addrs").pop().expect("an address");
        let listener =
            Listener::new(&node, found, code.clone(), Events::new(|_| {})).expect("listener");
        (node, listener, addr)
    }

    /// A receiver that dials `addr` and searches with `code`.
    async fn search(code: &Code, addr: libp2p::Multiaddr) -> Result<Session<Stream>, Error> {
        let cfg = super::super::node_config(&memory(), Duration::from_secs(3), code, false);
        let (node, found) = Node::start(cfg).expect("node");
        node.dial(addr).await.expect("dial");
        find_sender(&node, found, code, &Events::new(|_| {})).await
    }

    #[tokio::test]
    async fn the_right_code_meets_the_sender_over_memory() {
        let code: Code = "bubble-enemy-result-increase".parse().expect("code");
        let (node, mut l, addr) = listener(&code).await;
        let (s, r) = tokio::join!(l.next_session(), search(&code, addr));
        let (s, r) = (s.expect("sender side"), r.expect("receiver side"));
        assert_eq!(r.peer(), node.peer_id(), "the receiver authenticated the sender");
        assert_ne!(s.peer(), node.peer_id());
    }

    #[tokio::test]
    async fn three_wrong_codes_burn_the_code() {
        let code: Code = "bubble-enemy-result-increase".parse().expect("code");
        let wrong: Code = "bubble-enemy-result-abandon".parse().expect("code");
        let (_node, mut l, addr) = listener(&code).await;
        let guesses = async {
            for _ in 0..MAX_FAILED_ATTEMPTS {
                let r = search(&wrong, addr.clone()).await;
                assert!(matches!(r, Err(Error::Session(SessionError::WrongCode))), "{r:?}");
            }
        };
        let (burnt, ()) = tokio::join!(l.next_session(), guesses);
        assert!(matches!(burnt, Err(Error::CodeBurnt)), "{:?}", burnt.err());
    }
}
