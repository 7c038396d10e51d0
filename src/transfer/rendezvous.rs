//! Meeting the peer. The receiver races the candidates it finds until one passes the
//! PAKE ([`find_sender`]); the sender's [`Listener`] takes incoming handshakes through
//! a [`door::Door`] that bounds what strangers can hold (see [`door`]).
//!
//! # The receiver's search
//!
//! - Every peer the node reports is queued once (a flood of them is coalesced per peer
//!   on the way: see [`crate::node`]), `--peer` addresses first, and at most
//!   [`MAX_ATTEMPTS`] attempts run at once; past [`MAX_CANDIDATES`] peers, new ones are
//!   ignored.
//! - A peer that refused for a passing reason (busy, another slot, unreachable, "try
//!   later") is tried again after a pause ([`RETRY`], doubling for one that stays
//!   unreachable, up to [`MAX_RETRY`]; a busy one at most [`MAX_BUSY_TRIES`] times). One
//!   that failed for good (a wrong code, reachable only through a relay, "burnt") is
//!   not.
//! - What a failure proves decides how soon the search may end. A peer that ran the key
//!   exchange and failed it (a wrong code, "burnt" after it) may be the real sender:
//!   the search ends [`SETTLE`] after such a failure. Anything said before the key
//!   exchange ("burnt", "busy") is unauthenticated, and a relay-only peer may be anyone:
//!   such failures end the search only after [`NOT_FOUND_AFTER`], and a "burnt" said
//!   that way ends it as "not found", never as "someone else tried this code". Either
//!   clock restarts on each new peer found, and waits for the attempts in flight and
//!   for senders of our channel that asked us to try again later.
//! - Each failed key confirmation is someone who does not know the code testing a
//!   guess against ours. After [`MAX_IMPOSTORS`] of them the receiver stops ("someone
//!   is guessing"), and checks no further confirmation meanwhile (see
//!   [`crate::session::guesses`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;

use super::slot_ok;
use crate::code::{self, Code};
use crate::error::Error;
use crate::event::{Event, Events, Via};
use crate::node::{self, Event as NodeEvent, Node};
use crate::session::guesses::MAX_IMPOSTORS;
use crate::session::{self, HANDSHAKE_TIMEOUT, Impostors, Rendezvous, Session, SessionError};

pub(super) mod door;

pub(super) use door::Listener;

/// Attempts a receiver runs at once.
const MAX_ATTEMPTS: usize = 8;

/// Peers a receiver keeps track of (found, queued or tried); past this many, new ones
/// are ignored. Each costs about a hundred bytes.
const MAX_CANDIDATES: usize = 16_384;

/// Pause before redialling a `--peer` address that failed.
const REDIAL: Duration = Duration::from_secs(1);

/// Pause before trying again a peer that was busy, in another slot, or unreachable.
const RETRY: Duration = Duration::from_secs(2);

/// The longest pause before trying again a peer that stays unreachable.
const MAX_RETRY: Duration = Duration::from_secs(16);

/// How long a receiver keeps looking after a candidate failed the key exchange, for
/// the real sender to show up.
const SETTLE: Duration = Duration::from_secs(3);

/// How long a receiver keeps looking after candidates that failed only before the key
/// exchange (or were reachable only through a relay).
const NOT_FOUND_AFTER: Duration = Duration::from_secs(20);

/// Busy answers from one sender before the receiver stops asking it (about a minute).
const MAX_BUSY_TRIES: u32 = 30;

/// How long only senders of other codes may answer before the receiver says so.
const OTHER_SENDERS_AFTER: Duration = Duration::from_secs(3);

/// How long the search waits after failures, by what they prove.
#[derive(Debug, Clone, Copy)]
pub(super) struct Patience {
    /// After a failed key exchange.
    pub(super) settle: Duration,
    /// After failures before it only.
    pub(super) not_found: Duration,
}

impl Default for Patience {
    fn default() -> Patience {
        Patience { settle: SETTLE, not_found: NOT_FOUND_AFTER }
    }
}

/// Races the candidate peers until one passes the PAKE (see the module docs).
pub(super) async fn find_sender(
    node: &Node,
    found: mpsc::Receiver<NodeEvent>,
    code: &Code,
    events: &Events,
    slot_secs: u64,
) -> Result<Session<Stream>, Error> {
    find_sender_with(node, found, code, events, Patience::default(), slot_secs).await
}

/// [`find_sender`], with its patience given.
async fn find_sender_with(
    node: &Node,
    mut found: mpsc::Receiver<NodeEvent>,
    code: &Code,
    events: &Events,
    patience: Patience,
    slot_secs: u64,
) -> Result<Session<Stream>, Error> {
    let me = node.peer_id();
    let impostors = Arc::new(Impostors::new(MAX_IMPOSTORS));
    let mut s = Search::new(patience);
    let mut attempts = FuturesUnordered::new();
    let mut retries = FuturesUnordered::new();
    loop {
        while let Some(peer) = s.next() {
            let impostors = Arc::clone(&impostors);
            attempts.push(attempt(node.clone(), peer, code.clone(), me, impostors, slot_secs));
        }
        let give_up = until(s.give_up_at);
        let other_senders = until(s.tell_at);
        tokio::select! {
            ev = found.recv() => match ev {
                Some(NodeEvent::Discovered { peer, via }) => {
                    if s.found(peer, via) {
                        events.emit(Event::Found { peer, via });
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
                Some(NodeEvent::Dht(st)) => events.emit(Event::Dht(st)),
                Some(NodeEvent::RelayOnly { peer }) => s.failed(Failure::RelayOnly(peer)),
                None => return Err(node::NodeError::Stopped.into()),
            },
            Some((peer, result)) = attempts.next(), if !attempts.is_empty() => {
                s.in_flight -= 1;
                s.asked_to_wait.remove(&peer);
                match result {
                    Ok(session) => return Ok(session),
                    Err(e) => {
                        if let Some(after) = s.outcome(peer, e, events) {
                            retries.push(async move {
                                tokio::time::sleep(after).await;
                                peer
                            });
                        }
                    }
                }
                if impostors.exhausted() {
                    return Err(SessionError::Guessing { peers: impostors.count() }.into());
                }
            }
            Some(peer) = retries.next(), if !retries.is_empty() => s.due.push_back(peer),
            () = other_senders => {
                s.tell_at = None;
                events.emit(Event::OtherSenders { count: s.not_serving.len() });
            }
            () = give_up => {
                if attempts.is_empty()
                    && s.queue.is_empty()
                    && s.due.is_empty()
                    && s.asked_to_wait.is_empty()
                {
                    return Err(s.verdict());
                }
                // A handshake is still under way or about to start, or a sender of our
                // channel asked us to come back: it may be the real sender.
                s.give_up_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    }
}

/// Sleeps until `at`, or forever.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A candidate that failed for good, from what proves least to what proves most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// It said the code is burnt, before any key exchange: unproven.
    SaidBurnt,
    /// It stayed busy with another receiver.
    Busy,
    /// It said it sends to another receiver and takes no other, before any key
    /// exchange: unproven, but the likeliest reason when no one else answers.
    Taken,
    /// Reachable only through a relay, and hole punching failed.
    RelayOnly(PeerId),
    /// It failed the key exchange: a wrong code, or not the sender at all.
    WrongCode,
    /// It failed the key exchange and said its code is burnt: too many wrong codes.
    Burnt,
}

impl Failure {
    /// Whether the peer ran the key exchange: it may be the real sender.
    fn proven(self) -> bool {
        matches!(self, Failure::WrongCode | Failure::Burnt)
    }
}

/// What the receiver's search knows so far.
#[derive(Debug)]
struct Search {
    patience: Patience,
    /// Every peer found (at most [`MAX_CANDIDATES`]).
    known: HashSet<PeerId>,
    /// Found and not tried yet, in order.
    queue: VecDeque<PeerId>,
    /// To try again, in order.
    due: VecDeque<PeerId>,
    /// Attempts running.
    in_flight: usize,
    /// Busy answers per peer.
    busy: HashMap<PeerId, u32>,
    /// Passing failures per peer (unreachable, timed out…), for the pause before the
    /// next try.
    unreachable: HashMap<PeerId, u32>,
    /// pcp senders that serve another code.
    not_serving: HashSet<PeerId>,
    /// Peers that said "burnt" before any key exchange.
    said_burnt: HashSet<PeerId>,
    /// Senders of our channel that asked us to try again later, until we do.
    asked_to_wait: HashSet<PeerId>,
    /// The most telling failure so far.
    worst: Option<Failure>,
    give_up_at: Option<tokio::time::Instant>,
    /// When to say that only senders of other codes answered.
    tell_at: Option<tokio::time::Instant>,
    told: bool,
}

impl Search {
    fn new(patience: Patience) -> Search {
        Search {
            patience,
            known: HashSet::new(),
            queue: VecDeque::new(),
            due: VecDeque::new(),
            in_flight: 0,
            busy: HashMap::new(),
            unreachable: HashMap::new(),
            not_serving: HashSet::new(),
            said_burnt: HashSet::new(),
            asked_to_wait: HashSet::new(),
            worst: None,
            give_up_at: None,
            tell_at: None,
            told: false,
        }
    }

    /// How long the search waits, after what failed so far.
    fn wait(&self) -> Duration {
        if self.worst.is_some_and(Failure::proven) {
            self.patience.settle
        } else {
            self.patience.not_found
        }
    }

    /// A peer found: queued if it is new (a `--peer` address first). Restarts the
    /// give-up clock: the newcomer may be the real sender.
    fn found(&mut self, peer: PeerId, via: Via) -> bool {
        if self.known.len() >= MAX_CANDIDATES && !self.known.contains(&peer) {
            tracing::debug!(%peer, "too many candidates; ignoring a new one");
            return false;
        }
        if !self.known.insert(peer) {
            return false;
        }
        if via == Via::Direct {
            self.queue.push_front(peer);
        } else {
            self.queue.push_back(peer);
        }
        if let Some(at) = self.give_up_at {
            self.give_up_at = Some(at.max(tokio::time::Instant::now() + self.wait()));
        }
        true
    }

    /// The next peer to try, if an attempt may start: new peers before those tried
    /// again.
    fn next(&mut self) -> Option<PeerId> {
        if self.in_flight >= MAX_ATTEMPTS {
            return None;
        }
        let peer = self.queue.pop_front().or_else(|| self.due.pop_front())?;
        self.in_flight += 1;
        Some(peer)
    }

    fn failed(&mut self, f: Failure) {
        self.worst = self.worst.max(Some(f));
        let at = tokio::time::Instant::now() + self.wait();
        self.give_up_at = Some(self.give_up_at.map_or(at, |t| t.min(at)));
    }

    /// Books a failed attempt; returns when to try this peer again, if ever.
    fn outcome(&mut self, peer: PeerId, e: SessionError, events: &Events) -> Option<Duration> {
        match e {
            SessionError::WrongCode => {
                tracing::debug!(%peer, "wrong code");
                self.failed(Failure::WrongCode);
                None
            }
            SessionError::Burnt => {
                tracing::debug!(%peer, "the code is burnt");
                self.failed(Failure::Burnt);
                None
            }
            SessionError::SaidBurnt => {
                tracing::debug!(%peer, "said the code is burnt, before any key exchange");
                self.said_burnt.insert(peer);
                self.failed(Failure::SaidBurnt);
                None
            }
            SessionError::Unsupported | SessionError::Guessing { .. } => {
                tracing::trace!(%peer, error = %e, "not tried again");
                None
            }
            SessionError::Taken => {
                tracing::debug!(%peer, "sends to another receiver and takes no other");
                self.failed(Failure::Taken);
                None
            }
            SessionError::Busy => {
                let tries = self.busy.entry(peer).or_default();
                *tries += 1;
                events.emit(Event::SenderBusy { tries: *tries, max: MAX_BUSY_TRIES });
                if *tries >= MAX_BUSY_TRIES {
                    self.failed(Failure::Busy);
                    return None;
                }
                Some(RETRY)
            }
            SessionError::TryLater { secs } => {
                let after = Duration::from_secs(u64::from(secs))
                    .clamp(Duration::from_secs(1), crate::session::MAX_TRY_LATER);
                tracing::debug!(%peer, ?after, "asked to try again later");
                events.emit(Event::TryLater { secs: after.as_secs() });
                self.asked_to_wait.insert(peer);
                Some(after)
            }
            SessionError::NotServing => {
                if self.not_serving.insert(peer) && !self.told {
                    self.told = true;
                    self.tell_at = Some(tokio::time::Instant::now() + OTHER_SENDERS_AFTER);
                }
                Some(RETRY)
            }
            e => {
                let n = self.unreachable.entry(peer).or_default();
                *n = n.saturating_add(1);
                let after = RETRY.saturating_mul(1 << (*n - 1).min(8)).min(MAX_RETRY);
                tracing::debug!(%peer, error = %e, ?after, "not ready; will retry");
                Some(after)
            }
        }
    }

    fn verdict(&self) -> Error {
        match self.worst {
            Some(Failure::Burnt) => SessionError::Burnt.into(),
            Some(Failure::WrongCode) => SessionError::WrongCode.into(),
            Some(Failure::RelayOnly(peer)) => Error::RelayOnly(peer),
            Some(Failure::Busy) => SessionError::Busy.into(),
            Some(Failure::Taken) => SessionError::Taken.into(),
            Some(Failure::SaidBurnt) | None => {
                Error::NotFound { said_burnt: self.said_burnt.len() }
            }
        }
    }
}

type Attempt = (PeerId, Result<Session<Stream>, SessionError>);

async fn attempt(
    node: Node,
    peer: PeerId,
    code: Code,
    me: PeerId,
    impostors: Arc<Impostors>,
    slot_secs: u64,
) -> Attempt {
    // The slot is taken now, not when the receiver started: the sender may show up in
    // a later one.
    let at = Rendezvous { channel: code.channel(), slot: code::current_slot(slot_secs) };
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
        Session::connect_counted(stream, &code, at, me, peer, &impostors).await.map_err(refused)
    };
    let result =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, run).await.unwrap_or(Err(SessionError::Timeout));
    (peer, result)
}

/// A peer that does not speak pcp, told as such. Streams open lazily (see
/// `node::build`): the peer's refusal of the protocol comes on our first read, as an
/// I/O error around the negotiation's, not when the stream opens.
fn refused(e: SessionError) -> SessionError {
    use libp2p::core::upgrade::NegotiationError;
    match e {
        SessionError::Io(io)
            if io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<NegotiationError>())
                .is_some_and(|n| matches!(n, NegotiationError::Failed)) =>
        {
            SessionError::Unsupported
        }
        e => e,
    }
}

/// Passes the node's DHT status and listen addresses to the caller; the rest is for
/// `-v`.
fn report_network(ev: NodeEvent, me: PeerId, events: &Events) {
    match ev {
        NodeEvent::Dht(s) => events.emit(Event::Dht(s)),
        NodeEvent::Listening(addr) => {
            events.emit(Event::Listening { addr: addr.with(libp2p::multiaddr::Protocol::P2p(me)) });
        }
        ev => tracing::debug!(?ev, "network event"),
    }
}

#[cfg(test)]
mod tests {
    //! Rendezvous over libp2p's memory transport: real nodes, real streams, no network.

    use std::sync::Mutex;

    use super::*;
    use crate::options::NetworkOptions;
    use crate::session::Guesses;

    fn memory() -> NetworkOptions {
        NetworkOptions::local(vec!["/memory/0".parse().expect("multiaddr")])
    }

    const CODE: &str = "bubble-enemy-result-increase";

    fn code(s: &str) -> Code {
        s.parse().expect("code")
    }

    /// Waits for the node's first listen address.
    async fn listening(found: &mut mpsc::Receiver<NodeEvent>) -> libp2p::Multiaddr {
        let first = async {
            loop {
                match found.recv().await {
                    Some(NodeEvent::Listening(a)) => return a,
                    Some(_) => {}
                    None => panic!("the node stopped"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), first).await.expect("listening")
    }

    /// A sender's node and listener, and the address a receiver can dial.
    async fn listener(code: &Code) -> (Node, Listener, libp2p::Multiaddr) {
        listener_with(code, Events::new(|_| {})).await
    }

    /// [`listener`], reporting to `events`.
    async fn listener_with(code: &Code, events: Events) -> (Node, Listener, libp2p::Multiaddr) {
        let cfg = super::super::node_config(&memory(), Duration::from_secs(60), code, true);
        let (node, mut found) = Node::start(cfg).expect("node");
        let addr = listening(&mut found).await;
        let listener =
            Listener::new(&node, found, code.clone(), events, code::SLOT_SECS).expect("listener");
        (node, listener, addr)
    }

    /// A receiver's node.
    fn receiver(code: &Code) -> (Node, mpsc::Receiver<NodeEvent>) {
        let cfg = super::super::node_config(&memory(), Duration::from_secs(3), code, false);
        Node::start(cfg).expect("node")
    }

    /// A receiver that dials `addr` and searches with `code`.
    async fn search(code: &Code, addr: libp2p::Multiaddr) -> Result<Session<Stream>, Error> {
        search_with(code, addr, Patience::default()).await
    }

    /// [`search`], with its patience given.
    async fn search_with(
        code: &Code,
        addr: libp2p::Multiaddr,
        patience: Patience,
    ) -> Result<Session<Stream>, Error> {
        let (node, found) = receiver(code);
        node.dial(addr).await.expect("dial");
        find_sender_with(&node, found, code, &Events::new(|_| {}), patience, code::SLOT_SECS).await
    }

    /// Events into a vector the test reads.
    fn recorded() -> (Events, Arc<Mutex<Vec<Event>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let events = {
            let seen = Arc::clone(&seen);
            Events::new(move |ev| seen.lock().expect("lock").push(ev))
        };
        (events, seen)
    }

    /// A node that answers every hello "burnt", as anyone can, and says when it did.
    async fn impostor() -> (Node, libp2p::Multiaddr, mpsc::Receiver<()>) {
        let c = code(CODE);
        let cfg = super::super::node_config(&memory(), Duration::from_secs(60), &c, true);
        let (node, mut found) = Node::start(cfg).expect("node");
        let addr = listening(&mut found).await;
        let mut incoming = node.control().accept(session::PROTOCOL).expect("accept");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let _found = found;
            while let Some((_, stream)) = incoming.next().await {
                if session::claim_burnt(stream).await.is_ok() {
                    let _ = tx.try_send(());
                }
            }
        });
        (node, addr, rx)
    }

    /// A peer that does not take pcp's protocol is not tried again, though streams open
    /// lazily and its refusal comes only on the first read: it is not taken for one
    /// that is not reachable yet.
    #[tokio::test]
    async fn a_peer_without_pcp_is_unsupported() {
        let c = code(CODE);
        let cfg = super::super::node_config(&memory(), Duration::from_secs(60), &c, true);
        let (other, mut found) = Node::start(cfg).expect("node");
        let addr = listening(&mut found).await;
        let (receiver, mut heard) = receiver(&c);
        receiver.dial(addr).await.expect("dial");
        let connected = async {
            while let Some(ev) = heard.recv().await {
                if matches!(ev, NodeEvent::Discovered { peer, .. } if peer == other.peer_id()) {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), connected).await.expect("connected");
        let impostors = Arc::new(Impostors::new(u32::MAX));
        let me = receiver.peer_id();
        let (_, result) =
            attempt(receiver, other.peer_id(), c, me, impostors, code::SLOT_SECS).await;
        assert!(matches!(result, Err(SessionError::Unsupported)), "{result:?}");
    }

    #[tokio::test]
    async fn the_right_code_meets_the_sender_over_memory() {
        let c = code(CODE);
        let (node, mut l, addr) = listener(&c).await;
        let (s, r) = tokio::join!(l.next_session(), search(&c, addr));
        let (s, r) = (s.expect("sender side"), r.expect("receiver side"));
        assert_eq!(r.peer(), node.peer_id(), "the receiver authenticated the sender");
        assert_ne!(s.peer(), node.peer_id());
    }

    /// Issue 9, item 8: an impostor that fails the PAKE does not end the search while
    /// the real sender is there too.
    #[tokio::test]
    async fn an_impostor_does_not_hide_the_real_sender() {
        let c = code(CODE);
        let other = code("bubble-enemy-result-abandon");
        let (_n1, mut impostor, bad) = listener(&other).await;
        let (node, mut real, good) = listener(&c).await;
        let (receiver, found) = receiver(&c);
        receiver.dial(bad).await.expect("dial");
        let search = async {
            // The impostor answers first; the real sender turns up a moment later.
            tokio::time::sleep(Duration::from_millis(500)).await;
            receiver.dial(good).await.expect("dial");
            find_sender(&receiver, found, &c, &Events::new(|_| {}), code::SLOT_SECS).await
        };
        let r = tokio::select! {
            r = search => r,
            _ = impostor.next_session() => panic!("the impostor authenticated"),
            _ = real.next_session() => futures::future::pending().await,
        };
        assert_eq!(r.expect("found the real sender").peer(), node.peer_id());
    }

    /// Issue 14, item 5: "burnt" said before any key exchange is anyone's to say: it
    /// does not end the search (the old receiver gave up [`SETTLE`] later with "someone
    /// else tried this code"), and the real sender found later still connects.
    #[tokio::test]
    async fn an_impostor_saying_burnt_does_not_end_the_search() {
        let c = code(CODE);
        let (_imp, bad, mut answered) = impostor().await;
        let (node, mut real, good) = listener(&c).await;
        let (receiver, found) = receiver(&c);
        receiver.dial(bad).await.expect("dial");
        let quiet = Events::new(|_| {});
        let search = find_sender(&receiver, found, &c, &quiet, code::SLOT_SECS);
        tokio::pin!(search);
        let said = tokio::select! {
            r = &mut search => panic!("the search ended before the impostor spoke: {r:?}"),
            said = tokio::time::timeout(Duration::from_secs(10), answered.recv()) => said,
        };
        said.expect("the impostor was tried").expect("and answered");
        // Well past the old SETTLE: the search is still on.
        let still = tokio::time::timeout(SETTLE * 2, &mut search).await;
        assert!(still.is_err(), "the search ended on an unproven \"burnt\": {still:?}");
        receiver.dial(good).await.expect("dial");
        let (r, _) = tokio::join!(search, real.next_session());
        assert_eq!(r.expect("found the real sender").peer(), node.peer_id());
    }

    /// Issue 14, item 5: a receiver that meets only such impostors ends, after its
    /// patience, with "not found" and never with "someone else tried this code".
    #[tokio::test]
    async fn only_an_impostor_saying_burnt_ends_as_not_found() {
        let c = code(CODE);
        let (_imp, bad, _answered) = impostor().await;
        let patience = Patience { settle: SETTLE, not_found: Duration::from_secs(2) };
        let e = search_with(&c, bad, patience).await.expect_err("nothing to find");
        assert!(matches!(e, Error::NotFound { said_burnt: 1 }), "{e:?}");
        assert!(!e.to_string().contains("someone else tried"), "{e}");
        assert_ne!(e.kind(), crate::ErrorKind::CodeBurnt);
    }

    /// Issue 14, item 5: each failed key confirmation is a guess against our code; after
    /// three from different peers the receiver stops with an error of its own.
    #[tokio::test]
    async fn three_failed_confirmations_from_different_peers_stop_the_search() {
        let (_a, mut a, addr_a) = listener(&code("bubble-enemy-result-abandon")).await;
        let (_b, mut b, addr_b) = listener(&code("bubble-ability-result-increase")).await;
        let (_c, mut d, addr_c) = listener(&code("bubble-enemy-able-increase")).await;
        let c = code(CODE);
        let (receiver, found) = receiver(&c);
        for addr in [addr_a, addr_b, addr_c] {
            receiver.dial(addr).await.expect("dial");
        }
        let quiet = Events::new(|_| {});
        let search = find_sender(&receiver, found, &c, &quiet, code::SLOT_SECS);
        let r = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::select! {
                r = search => r,
                _ = a.next_session() => panic!("an impostor authenticated"),
                _ = b.next_session() => panic!("an impostor authenticated"),
                _ = d.next_session() => panic!("an impostor authenticated"),
            }
        })
        .await
        .expect("stopped within 30 s");
        let e = r.expect_err("three impostors");
        assert!(matches!(e, Error::Session(SessionError::Guessing { peers: 3 })), "{e:?}");
        assert_eq!(e.kind(), crate::ErrorKind::Guessing);
        assert!(e.to_string().contains("start again with a new code"), "{e}");
    }

    /// Issue 14, item 5: thousands of made-up peers reported by the node in one burst,
    /// past its channel, do not push out the real sender found after them.
    #[tokio::test]
    async fn a_flood_of_discoveries_does_not_hide_the_real_sender() {
        const FAKES: usize = 5_000;
        let c = code(CODE);
        let (node, mut l, addr) = listener(&c).await;
        let (receiver, found) = receiver(&c);
        let flood = (0..FAKES)
            .map(|_| NodeEvent::Discovered { peer: PeerId::random(), via: Via::Mdns })
            .collect();
        receiver.emit(flood).await;
        receiver.dial(addr).await.expect("dial");
        let (events, seen) = recorded();
        let r = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::select! {
                r = find_sender(&receiver, found, &c, &events, code::SLOT_SECS) => r,
                _ = l.next_session() => futures::future::pending().await,
            }
        })
        .await
        .expect("found within 60 s");
        assert_eq!(r.expect("the real sender").peer(), node.peer_id());
        let found =
            seen.lock().expect("lock").iter().filter(|e| matches!(e, Event::Found { .. })).count();
        assert!(found > FAKES, "every made-up peer was reported too: {found}");
    }

    /// Issue 14, item 5: at most [`MAX_ATTEMPTS`] run at once, whatever was found; a
    /// `--peer` address goes first, new peers before those tried again.
    #[test]
    fn attempts_are_capped_and_new_peers_go_first() {
        let mut s = Search::new(Patience::default());
        let fakes: Vec<PeerId> = (0..1000).map(|_| PeerId::random()).collect();
        for &p in &fakes {
            assert!(s.found(p, Via::Mdns));
        }
        assert!(!s.found(fakes[0], Via::Dht), "a peer found twice is queued once");
        let direct = PeerId::random();
        s.found(direct, Via::Direct);
        let started: Vec<PeerId> = std::iter::from_fn(|| s.next()).collect();
        assert_eq!(started.len(), MAX_ATTEMPTS);
        assert_eq!(started[0], direct);
        s.in_flight -= 1;
        s.due.push_back(fakes[0]);
        assert_eq!(s.next(), Some(fakes[MAX_ATTEMPTS - 1]), "new peers before retries");
        assert_eq!(s.next(), None, "still capped");
    }

    /// Issue 14, item 5: the give-up clock restarts on each new peer, and what a
    /// failure proves sets how long it runs.
    #[tokio::test(start_paused = true)]
    async fn the_give_up_clock_restarts_on_each_new_peer() {
        let p = Patience::default();
        let mut s = Search::new(p);
        let t0 = tokio::time::Instant::now();
        s.failed(Failure::SaidBurnt);
        assert_eq!(s.give_up_at, Some(t0 + p.not_found), "unproven: the long wait");
        tokio::time::advance(Duration::from_secs(5)).await;
        s.found(PeerId::random(), Via::Mdns);
        assert_eq!(s.give_up_at, Some(t0 + Duration::from_secs(5) + p.not_found), "restarted");
        s.failed(Failure::WrongCode);
        let t1 = tokio::time::Instant::now();
        assert_eq!(s.give_up_at, Some(t1 + p.settle), "a failed key exchange: the short one");
        tokio::time::advance(Duration::from_secs(2)).await;
        s.found(PeerId::random(), Via::Dht);
        assert_eq!(s.give_up_at, Some(t1 + Duration::from_secs(2) + p.settle), "restarted");
        assert!(matches!(s.verdict(), Error::Session(SessionError::WrongCode)));
    }

    /// Issue 10, item 2: senders of other codes answering is said, not waited on in
    /// silence.
    #[tokio::test]
    async fn only_senders_of_other_codes_are_reported() {
        let c = code(CODE);
        let other = code("drill-enemy-result-increase");
        let (_node, mut l, addr) = listener(&other).await;
        let (receiver, found) = receiver(&c);
        receiver.dial(addr).await.expect("dial");
        let (tx, mut rx) = mpsc::channel(64);
        let events = Events::new(move |ev| {
            let _ = tx.try_send(ev);
        });
        let told = async {
            while let Some(ev) = rx.recv().await {
                if let Event::OtherSenders { count } = ev {
                    return count;
                }
            }
            0
        };
        let count = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::select! {
                c = told => c,
                _ = find_sender(&receiver, found, &c, &events, code::SLOT_SECS) => panic!("search ended"),
                _ = l.next_session() => panic!("a session with another code"),
            }
        })
        .await
        .expect("told within 20 s");
        assert_eq!(count, 1);
    }

    #[test]
    fn a_busy_sender_is_asked_a_bounded_number_of_times() {
        let mut s = Search::new(Patience::default());
        let peer = PeerId::random();
        let events = Events::new(|_| {});
        assert_eq!(s.outcome(peer, SessionError::SaidBurnt, &events), None);
        assert!(matches!(s.verdict(), Error::NotFound { said_burnt: 1 }));
        for _ in 1..MAX_BUSY_TRIES {
            assert_eq!(s.outcome(peer, SessionError::Busy, &events), Some(RETRY));
        }
        assert_eq!(s.outcome(peer, SessionError::Busy, &events), None, "no more tries");
        assert!(matches!(s.verdict(), Error::Session(SessionError::Busy)), "busy says more");
        // Issue 15, item 6: a sender that took another receiver is not asked again.
        let other = PeerId::random();
        assert_eq!(s.outcome(other, SessionError::Taken, &events), None, "never asked again");
        assert!(matches!(s.verdict(), Error::Session(SessionError::Taken)), "taken says more");
        s.failed(Failure::RelayOnly(peer));
        assert!(matches!(s.verdict(), Error::RelayOnly(_)), "a relay-only peer says more");
        s.failed(Failure::WrongCode);
        assert!(matches!(s.verdict(), Error::Session(SessionError::WrongCode)));
        let later = s.outcome(peer, SessionError::TryLater { secs: 4 }, &events);
        assert_eq!(later, Some(Duration::from_secs(4)), "asked to wait: waits");
        assert!(s.asked_to_wait.contains(&peer), "and does not give up on it meanwhile");
        let huge = s.outcome(peer, SessionError::TryLater { secs: u16::MAX }, &events);
        assert_eq!(huge, Some(crate::session::MAX_TRY_LATER), "but not forever");
    }

    /// Issue 9, item 9, and issue 14, item 6: the code burns at the budget, said on both
    /// sides: by the sender, which shows each wrong code and where it came from, and to
    /// the receiver whose guess burnt it. A receiver that arrives just after (even with
    /// the right code) hears "burnt" only before any key exchange, which proves
    /// nothing: it ends as "not found".
    #[tokio::test]
    async fn the_code_burns_at_the_budget_and_both_sides_say_so() {
        const BUDGET: u32 = 3;
        let c = code(CODE);
        let wrong = code("bubble-enemy-result-abandon");
        let (tx, mut rx) = mpsc::channel(256);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let events = {
            let seen = Arc::clone(&seen);
            Events::new(move |ev| {
                seen.lock().expect("lock").push(ev.clone());
                let _ = tx.try_send(ev);
            })
        };
        let (_node, mut l, addr) = listener_with(&c, events).await;
        l.guesses = Arc::new(Guesses::new(BUDGET));
        let late = async {
            // Right after the sender counted the guess that burnt its code.
            while let Some(ev) = rx.recv().await {
                if matches!(ev, Event::WrongCode { left: 0, .. }) {
                    let patience = Patience { settle: SETTLE, not_found: Duration::from_secs(2) };
                    return search_with(&c, addr.clone(), patience).await.expect_err("too late");
                }
            }
            panic!("the sender never burnt its code")
        };
        let guesses = async {
            for _ in 1..BUDGET {
                let r = search(&wrong, addr.clone()).await;
                assert!(matches!(r, Err(Error::Session(SessionError::WrongCode))), "{r:?}");
            }
            let last = search(&wrong, addr.clone()).await.expect_err("the last guess fails");
            assert!(matches!(last, Error::Session(SessionError::Burnt)), "{last:?}");
            assert_eq!(last.kind(), crate::ErrorKind::CodeBurnt);
        };
        let (burnt, (), late) = tokio::join!(l.next_session(), guesses, late);
        assert!(matches!(late, Error::NotFound { said_burnt: 1 }), "{late:?}");
        let burnt = burnt.expect_err("the sender gives up");
        assert!(matches!(burnt, Error::CodeBurnt { .. }), "{burnt:?}");
        // Issue 15, item 8: how many came from where, not "someone else".
        let said = burnt.to_string();
        assert!(said.starts_with("3 wrong codes were tried (1 from peer "), "{said}");
        assert!(said.ends_with("the code is burnt: start again with a new one"), "{said}");
        let seen = seen.lock().expect("lock");
        // Back to waiting after each failure the code survived: the status line does
        // not stay on "authenticating".
        let after: Vec<bool> = seen
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Event::FailedAttempt { left: 1.., .. }))
            .map(|(i, _)| matches!(seen.get(i + 1), Some(Event::Searching)))
            .collect();
        assert_eq!(after, [true, true], "{seen:?}");
        let failed: Vec<(u32, u32)> = seen
            .iter()
            .filter_map(|e| match e {
                Event::FailedAttempt {
                    from: crate::event::Origin::Peer(_),
                    from_there,
                    left,
                    ..
                } => Some((*from_there, *left)),
                _ => None,
            })
            .collect();
        assert_eq!(failed, [(1, 2), (1, 1), (1, 0)], "each wrong code, and from where");
    }
}
