//! Meeting the peer: the receiver races every candidate until one passes the PAKE
//! ([`find_sender`]); the sender's [`Listener`] runs incoming handshakes side by side
//! in a bounded number of slots and counts wrong codes.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;

use super::slot_ok;
use crate::code::{self, Code};
use crate::error::Error;
use crate::event::{Event, Events};
use crate::node::{self, Event as NodeEvent, Node};
use crate::session::{self, Guesses, HANDSHAKE_TIMEOUT, Rendezvous, Session, SessionError};

/// Handshakes a sender runs at once.
const MAX_CONCURRENT_HANDSHAKES: usize = 8;

/// Handshakes one peer may have in flight: a real receiver needs one.
const MAX_HANDSHAKES_PER_PEER: usize = 2;

/// Handshakes one remote address may have in flight, whatever peer ids it uses.
const MAX_HANDSHAKES_PER_IP: usize = 4;

/// Pause before redialling a `--peer` address that failed.
const REDIAL: Duration = Duration::from_secs(1);

/// Pause before trying again a peer that was busy, in another slot, or unreachable.
const RETRY: Duration = Duration::from_secs(2);

/// How long a receiver keeps looking after a candidate failed for good (a wrong code,
/// a relay-only peer), for the real sender to show up.
const SETTLE: Duration = Duration::from_secs(3);

/// How long a sender whose code is burnt still answers hellos for it ("burnt"), so that
/// the receivers in flight and the next to arrive are told why, before it exits.
const BURNT_LINGER: Duration = Duration::from_secs(3);

/// Busy answers from one sender before the receiver stops asking it (about a minute).
const MAX_BUSY_TRIES: u32 = 30;

/// How long only senders of other codes may answer before the receiver says so.
const OTHER_SENDERS_AFTER: Duration = Duration::from_secs(3);

/// Races every candidate peer until one passes the PAKE.
///
/// A peer that refused for a passing reason (busy, another slot, unreachable) is tried
/// again after [`RETRY`] (a busy one at most [`MAX_BUSY_TRIES`] times); one that failed
/// for good (a wrong code, reachable only through a relay) is not. One such failure
/// does not end the search: an impostor or a far peer must not hide the real sender.
/// Only once nothing is in flight for [`SETTLE`] after the last failure does the
/// receiver give up, with the most telling error: a wrong code before a relay-only
/// peer before a sender that stayed busy.
pub(super) async fn find_sender(
    node: &Node,
    mut found: mpsc::Receiver<NodeEvent>,
    code: &Code,
    events: &Events,
) -> Result<Session<Stream>, Error> {
    let me = node.peer_id();
    let mut s = Search::default();
    let mut attempts = FuturesUnordered::new();
    let mut retries = FuturesUnordered::new();
    loop {
        let give_up = until(s.give_up_at);
        let other_senders = until(s.tell_at);
        tokio::select! {
            ev = found.recv() => match ev {
                Some(NodeEvent::Discovered { peer, via }) => {
                    if s.tried.insert(peer) {
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
                Some(NodeEvent::Dht(st)) => events.emit(Event::Dht(st)),
                Some(NodeEvent::RelayOnly { peer }) => s.failed(Failure::RelayOnly(peer)),
                None => return Err(node::NodeError::Stopped.into()),
            },
            Some((peer, result)) = attempts.next(), if !attempts.is_empty() => {
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
            }
            Some(peer) = retries.next(), if !retries.is_empty() => {
                attempts.push(attempt(node.clone(), peer, code.clone(), me));
            }
            () = other_senders => {
                s.tell_at = None;
                events.emit(Event::OtherSenders { count: s.not_serving.len() });
            }
            () = give_up => {
                if attempts.is_empty() {
                    return Err(s.verdict());
                }
                // A handshake is still under way: it may be the real sender.
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

/// A candidate that failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// It stayed busy with another receiver.
    Busy,
    /// Reachable only through a relay, and hole punching failed.
    RelayOnly(PeerId),
    /// It rejected our code (or was not the sender at all).
    WrongCode,
    /// It said its code is burnt: too many wrong codes were tried.
    Burnt,
}

/// What the receiver's search knows so far.
#[derive(Default)]
struct Search {
    tried: HashSet<PeerId>,
    /// Busy answers per peer.
    busy: HashMap<PeerId, u32>,
    /// pcp senders that serve another code.
    not_serving: HashSet<PeerId>,
    /// The most telling failure so far.
    worst: Option<Failure>,
    give_up_at: Option<tokio::time::Instant>,
    /// When to say that only senders of other codes answered.
    tell_at: Option<tokio::time::Instant>,
    told: bool,
}

impl Search {
    fn failed(&mut self, f: Failure) {
        self.worst = self.worst.max(Some(f));
        self.give_up_at.get_or_insert(tokio::time::Instant::now() + SETTLE);
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
            SessionError::Unsupported => {
                tracing::trace!(%peer, "not a pcp peer");
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
            SessionError::NotServing => {
                if self.not_serving.insert(peer) && !self.told {
                    self.told = true;
                    self.tell_at = Some(tokio::time::Instant::now() + OTHER_SENDERS_AFTER);
                }
                Some(RETRY)
            }
            e => {
                tracing::debug!(%peer, error = %e, "not ready; will retry");
                Some(RETRY)
            }
        }
    }

    fn verdict(&self) -> Error {
        match self.worst {
            Some(Failure::Burnt) => SessionError::Burnt.into(),
            Some(Failure::WrongCode) | None => SessionError::WrongCode.into(),
            Some(Failure::RelayOnly(peer)) => Error::RelayOnly(peer),
            Some(Failure::Busy) => SessionError::Busy.into(),
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
    node: Node,
    incoming: libp2p_stream::IncomingStreams,
    found: mpsc::Receiver<NodeEvent>,
    code: Code,
    me: PeerId,
    guesses: Guesses,
    events: Events,
}

/// Handshakes in flight, counted per peer and per remote IP address.
#[derive(Default)]
struct Slots {
    per_peer: HashMap<PeerId, usize>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Slots {
    /// Takes a slot for a handshake from `peer` at `ip`, unless one of the caps is
    /// reached.
    fn take(&mut self, peer: PeerId, ip: Option<IpAddr>, in_flight: usize) -> bool {
        let peer_n = self.per_peer.get(&peer).copied().unwrap_or(0);
        let ip_n = ip.and_then(|ip| self.per_ip.get(&ip).copied()).unwrap_or(0);
        if in_flight >= MAX_CONCURRENT_HANDSHAKES
            || peer_n >= MAX_HANDSHAKES_PER_PEER
            || ip_n >= MAX_HANDSHAKES_PER_IP
        {
            return false;
        }
        *self.per_peer.entry(peer).or_default() += 1;
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_default() += 1;
        }
        true
    }

    fn give_back(&mut self, peer: PeerId, ip: Option<IpAddr>) {
        fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K) {
            if let Some(n) = m.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&k);
                }
            }
        }
        dec(&mut self.per_peer, peer);
        if let Some(ip) = ip {
            dec(&mut self.per_ip, ip);
        }
    }
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
        let me = node.peer_id();
        let guesses = Guesses::default();
        Ok(Listener { node: node.clone(), incoming, found, code, me, guesses, events })
    }

    /// Accepts streams until one passes the PAKE. Handshakes run side by side, so a
    /// stalled or slow peer cannot hold up the real receiver; past the caps (in all, per
    /// peer, per address), newcomers are told we are busy, at no cost to the code.
    ///
    /// When the code burns, this goes on for [`BURNT_LINGER`] answering every hello for
    /// it "burnt" (see [`Guesses`]), then fails with [`Error::CodeBurnt`].
    pub(super) async fn next_session(&mut self) -> Result<Session<Stream>, Error> {
        let mut pending = FuturesUnordered::new();
        let mut slots = Slots::default();
        let (code, me, guesses) = (&self.code, self.me, &self.guesses);
        let mut burnt_at = guesses.burnt().then(|| tokio::time::Instant::now() + BURNT_LINGER);
        loop {
            tokio::select! {
                () = until(burnt_at) => return Err(Error::CodeBurnt),
                next = self.incoming.next() => {
                    let Some((peer, stream)) = next else {
                        return Err(node::NodeError::Stopped.into());
                    };
                    let ip = self.node.remote_addr(peer).await.ok().flatten().as_ref().and_then(node::ip_of);
                    if !slots.take(peer, ip, pending.len()) {
                        tokio::spawn(Session::refuse_busy(stream));
                        continue;
                    }
                    self.events.emit(Event::Authenticating { peer });
                    pending.push(async move {
                        let accepted =
                            Session::accept_counted(stream, code, slot_ok, me, peer, guesses);
                        (peer, ip, accepted.await)
                    });
                }
                Some(ev) = self.found.recv() => report_network(ev, self.me, &self.events),
                Some((peer, ip, result)) = pending.next(), if !pending.is_empty() => {
                    slots.give_back(peer, ip);
                    match result {
                        Ok(s) => return Ok(s),
                        Err(SessionError::PeerWrongCode { peer }) if burnt_at.is_none() => {
                            let left = guesses.left();
                            self.events.emit(Event::WrongCode { peer, left });
                            if left == 0 {
                                burnt_at = Some(tokio::time::Instant::now() + BURNT_LINGER);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "handshake refused");
                            if pending.is_empty() {
                                // Back to waiting, so the status does not stay on a stranger.
                                self.events.emit(Event::Searching);
                            }
                        }
                    }
                }
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
                Some(ev) = self.found.recv() => report_network(ev, self.me, &self.events),
            }
        }
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

    use super::*;
    use crate::MAX_FAILED_ATTEMPTS;
    use crate::options::NetworkOptions;

    fn memory() -> NetworkOptions {
        NetworkOptions::local(vec!["/memory/0".parse().expect("multiaddr")])
    }

    /// A sender's node and listener, and the address a receiver can dial.
    async fn listener(code: &Code) -> (Node, Listener, libp2p::Multiaddr) {
        listener_with(code, Events::new(|_| {})).await
    }

    /// [`listener`], reporting to `events`.
    async fn listener_with(code: &Code, events: Events) -> (Node, Listener, libp2p::Multiaddr) {
        let cfg = super::super::node_config(&memory(), Duration::from_secs(60), code, true);
        let (node, mut found) = Node::start(cfg).expect("node");
        let listening = async {
            loop {
                match found.recv().await {
                    Some(NodeEvent::Listening(a)) => return a,
                    Some(_) => {}
                    None => panic!("the node stopped"),
                }
            }
        };
        let addr =
            tokio::time::timeout(Duration::from_secs(10), listening).await.expect("listening");
        let listener = Listener::new(&node, found, code.clone(), events).expect("listener");
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

    /// Issue 9, item 8: an impostor that fails the PAKE does not end the search while
    /// the real sender is there too.
    #[tokio::test]
    async fn an_impostor_does_not_hide_the_real_sender() {
        let code: Code = "bubble-enemy-result-increase".parse().expect("code");
        let other: Code = "bubble-enemy-result-abandon".parse().expect("code");
        let (_n1, mut impostor, bad) = listener(&other).await;
        let (node, mut real, good) = listener(&code).await;
        let cfg = super::super::node_config(&memory(), Duration::from_secs(3), &code, false);
        let (receiver, found) = Node::start(cfg).expect("node");
        receiver.dial(bad).await.expect("dial");
        let search = async {
            // The impostor answers first; the real sender turns up a moment later.
            tokio::time::sleep(Duration::from_millis(500)).await;
            receiver.dial(good).await.expect("dial");
            find_sender(&receiver, found, &code, &Events::new(|_| {})).await
        };
        let r = tokio::select! {
            r = search => r,
            _ = impostor.next_session() => panic!("the impostor authenticated"),
            _ = real.next_session() => futures::future::pending().await,
        };
        assert_eq!(r.expect("found the real sender").peer(), node.peer_id());
    }

    /// Issue 10, item 2: senders of other codes answering is said, not waited on in
    /// silence.
    #[tokio::test]
    async fn only_senders_of_other_codes_are_reported() {
        let code: Code = "bubble-enemy-result-increase".parse().expect("code");
        let other: Code = "drill-enemy-result-increase".parse().expect("code");
        let (_node, mut l, addr) = listener(&other).await;
        let cfg = super::super::node_config(&memory(), Duration::from_secs(3), &code, false);
        let (receiver, found) = Node::start(cfg).expect("node");
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
                _ = find_sender(&receiver, found, &code, &events) => panic!("search ended"),
                _ = l.next_session() => panic!("a session with another code"),
            }
        })
        .await
        .expect("told within 20 s");
        assert_eq!(count, 1);
    }

    /// Issue 9, item 7: one peer, or one address with many peer ids, cannot take every
    /// handshake slot.
    #[test]
    fn handshake_slots_are_capped_per_peer_and_per_address() {
        let mut slots = Slots::default();
        let ip: Option<IpAddr> = Some("198.18.0.9".parse().expect("ip"));
        let one = PeerId::random();
        assert!(slots.take(one, ip, 0) && slots.take(one, ip, 1));
        assert!(!slots.take(one, ip, 2), "a third handshake from one peer");
        let (two, three) = (PeerId::random(), PeerId::random());
        assert!(slots.take(two, ip, 2) && slots.take(three, ip, 3));
        assert!(!slots.take(PeerId::random(), ip, 4), "a fifth from one address");
        let elsewhere: Option<IpAddr> = Some("198.18.0.10".parse().expect("ip"));
        assert!(slots.take(PeerId::random(), elsewhere, 4), "another address still gets in");
        assert!(!slots.take(PeerId::random(), None, MAX_CONCURRENT_HANDSHAKES), "8 in all");
        slots.give_back(one, ip);
        assert!(slots.take(one, ip, 4), "a slot given back is free again");
    }

    #[test]
    fn a_busy_sender_is_asked_a_bounded_number_of_times() {
        let mut s = Search::default();
        let peer = PeerId::random();
        let events = Events::new(|_| {});
        for _ in 1..MAX_BUSY_TRIES {
            assert_eq!(s.outcome(peer, SessionError::Busy, &events), Some(RETRY));
        }
        assert_eq!(s.outcome(peer, SessionError::Busy, &events), None, "no more tries");
        assert!(matches!(s.verdict(), Error::Session(SessionError::Busy)));
        s.failed(Failure::RelayOnly(peer));
        assert!(matches!(s.verdict(), Error::RelayOnly(_)), "a relay-only peer says more");
        s.failed(Failure::WrongCode);
        assert!(matches!(s.verdict(), Error::Session(SessionError::WrongCode)));
    }

    /// Issue 9, item 9: the burnt code is said on both sides: by the sender, to the
    /// receiver whose guess burnt it, and to a receiver that arrives just after (even
    /// with the right code).
    #[tokio::test]
    async fn three_wrong_codes_burn_the_code_and_both_sides_say_so() {
        let code: Code = "bubble-enemy-result-increase".parse().expect("code");
        let wrong: Code = "bubble-enemy-result-abandon".parse().expect("code");
        let (tx, mut rx) = mpsc::channel(256);
        let events = Events::new(move |ev| {
            let _ = tx.try_send(ev);
        });
        let (_node, mut l, addr) = listener_with(&code, events).await;
        let late = async {
            // Right after the sender counted the guess that burnt its code.
            while let Some(ev) = rx.recv().await {
                if matches!(ev, Event::WrongCode { left: 0, .. }) {
                    return search(&code, addr.clone()).await.expect_err("too late");
                }
            }
            panic!("the sender never burnt its code")
        };
        let guesses = async {
            for _ in 1..MAX_FAILED_ATTEMPTS {
                let r = search(&wrong, addr.clone()).await;
                assert!(matches!(r, Err(Error::Session(SessionError::WrongCode))), "{r:?}");
            }
            let last = search(&wrong, addr.clone()).await.expect_err("the last guess fails");
            assert!(matches!(last, Error::Session(SessionError::Burnt)), "{last:?}");
            assert_eq!(last.kind(), crate::ErrorKind::CodeBurnt);
        };
        let (burnt, (), late) = tokio::join!(l.next_session(), guesses, late);
        assert!(matches!(late, Error::Session(SessionError::Burnt)), "{late:?}");
        let burnt = burnt.expect_err("the sender gives up");
        assert!(matches!(burnt, Error::CodeBurnt), "{burnt:?}");
        assert!(
            burnt.to_string().contains("someone else tried this code; start again with a new one")
        );
    }
}
