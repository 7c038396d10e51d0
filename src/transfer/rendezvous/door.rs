//! The sender's side of the rendezvous: the [`Listener`] takes incoming session
//! streams and runs their handshakes side by side through a [`Door`], which bounds what
//! strangers can hold.
//!
//! A stream goes through two stages, each with its own places:
//!
//! 1. **Waiting for its hello** ([`read_hello`], at most [`PRE_AUTH_TIMEOUT`]): at most
//!    [`MAX_WAITING_HELLOS`] streams, [`MAX_WAITING_HELLOS_PER_ORIGIN`] per origin and
//!    [`MAX_HANDSHAKES_PER_PEER`] per peer. When a newcomer finds no room, the oldest
//!    stream that has been silent for [`HELLO_GRACE`] yields its place (it is told
//!    "busy"); without one, the newcomer is told "busy".
//! 2. **The handshake proper** ([`Session::answer`]: the hello's checks, SPAKE2, key
//!    confirmation): at most [`MAX_CONCURRENT_HANDSHAKES`], [`MAX_HANDSHAKES_PER_ORIGIN`]
//!    per origin and [`MAX_HANDSHAKES_PER_PEER`] per peer; a hello past them is
//!    answered "busy".
//!
//! While a session runs ([`Listener::refuse_others`]) every other stream is told "busy",
//! except that once the data went to a receiver, a single-receiver sender tells every
//! other peer "taken": it MUST never serve another, so a latecomer stops asking at once
//! instead of retrying until the sender is gone (issue 15, item 6). "Taken" is said only
//! once the running session proved alive after the newcomer came (a frame from its
//! receiver within [`PROOF_WAIT`]); otherwise the newcomer is told "busy". A receiver
//! killed and rerun at once may be the newcomer: over QUIC its dead session sends
//! nothing, and the sender notices only after [`crate::session::DEAD_AFTER`]. Told
//! "busy", the rerun asks again, and gets in once the sender saw the loss; told
//! "taken", it would stop, though it was the very receiver the sender waits for.
//!
//! So a silent stream never holds a handshake slot, and a real receiver, whose hello
//! comes right after its stream, is never blocked by silent ones. An origin is an IPv4
//! address, an IPv6 /64 or a relay ([`Origin`]): one host cannot take every place with
//! throwaway peer ids. What a stream that reaches the PAKE costs is bounded by
//! [`Guesses`]: its origin gets a few wrong codes, then waits a doubling delay, and the
//! code burns only after the whole budget (see [`crate::session::guesses`]).
//!
//! Invariants:
//! - Every stream the door takes is answered or dropped within [`PRE_AUTH_TIMEOUT`] per
//!   read (its writes, a reply and the fixed-size early frame, within
//!   [`crate::session::DEAD_AFTER`]); the door holds at most [`MAX_WAITING_HELLOS`] + [`MAX_CONCURRENT_HANDSHAKES`]
//!   streams.
//! - A place is given back exactly once: when its stream yields, or when its step ends.
//!
//! [`PRE_AUTH_TIMEOUT`]: crate::session::PRE_AUTH_TIMEOUT

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::{PeerId, Stream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::until;
use crate::code::Code;
use crate::error::Error;
use crate::event::{Event, Events, Origin};
use crate::message::Offer;
use crate::node::{self, Event as NodeEvent, Node};
use crate::session::{self, Guesses, Hello, Rendezvous, Session, SessionError, read_hello};
use crate::source::Remeasure;

/// Handshakes a sender runs at once.
pub(super) const MAX_CONCURRENT_HANDSHAKES: usize = 8;

/// Streams one peer may have at each stage: a real receiver needs one.
pub(super) const MAX_HANDSHAKES_PER_PEER: usize = 2;

/// Handshakes one origin (IPv4 address, IPv6 /64, relay) may have in flight, whatever
/// peer ids it uses.
pub(super) const MAX_HANDSHAKES_PER_ORIGIN: usize = 4;

/// Streams that may wait for their hello at once. Cheap (a stream and a timer), so
/// more than the handshakes: a few jamming origins cannot fill them.
pub(super) const MAX_WAITING_HELLOS: usize = 32;

/// Streams one origin may have waiting for their hello.
pub(super) const MAX_WAITING_HELLOS_PER_ORIGIN: usize = 8;

/// How long a stream may stay silent before it yields its place to a newcomer that
/// finds no room. A real receiver sends its hello as soon as its stream opens.
pub(super) const HELLO_GRACE: Duration = Duration::from_secs(1);

/// How long a newcomer waits, while a session runs, for that session's receiver to show
/// it is alive before it is told "taken" rather than "busy": a live receiver sends an
/// `Ack` or a `Keepalive` at least every 2 s (`transfer::KEEPALIVE`).
pub(super) const PROOF_WAIT: Duration = Duration::from_secs(5);

/// How long a sender whose code is burnt still answers hellos for it ("burnt"), so that
/// the receivers in flight and the next to arrive are told why, before it exits.
const BURNT_LINGER: Duration = Duration::from_secs(3);

/// The offer a handshake sends behind its reply, saving the receiver a round trip
/// (issue 16; see [`Session::answer`]), set by the send loop before it waits for a
/// receiver: how to measure it when the handshake sends it (the fixed offer of a source
/// that started, or a file's measured again: see `Outgoing::early_offer`). Empty: the
/// offer follows the receiver's confirmation.
#[derive(Clone, Default)]
pub(in crate::transfer) struct EarlyOffer(Arc<std::sync::Mutex<Option<Remeasure>>>);

impl std::fmt::Debug for EarlyOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EarlyOffer").field(&self.slot().is_some()).finish()
    }
}

impl EarlyOffer {
    /// Measures the early offer with `measure` from now on, or sends none.
    pub(in crate::transfer) fn set(&self, measure: Option<Remeasure>) {
        *self.slot() = measure;
    }

    /// The offer to send now, if any.
    fn current(&self) -> Option<Offer> {
        // Measured outside the lock.
        let measure = self.slot().clone()?;
        measure()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Remeasure>> {
        // Nothing is left half done under the lock: a poisoned one is as good.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A stream's place at one stage.
#[derive(Debug)]
struct Place {
    id: u64,
    peer: PeerId,
    origin: Origin,
    since: Instant,
    /// Cancelled to make a silent stream yield (stage 1 only).
    yield_to: CancellationToken,
}

/// The places of one stage, and its caps.
#[derive(Debug)]
struct Places {
    held: Vec<Place>,
    all: usize,
    per_origin: usize,
    per_peer: usize,
}

impl Places {
    fn new(all: usize, per_origin: usize, per_peer: usize) -> Places {
        Places { held: Vec::new(), all, per_origin, per_peer }
    }

    /// Whether a stream from `peer` at `origin` fits, leaving `except` out of the count.
    fn fits(&self, peer: PeerId, origin: &Origin, except: Option<u64>) -> bool {
        let (mut all, mut of_peer, mut of_origin) = (0, 0, 0);
        for p in self.held.iter().filter(|p| Some(p.id) != except) {
            all += 1;
            of_peer += usize::from(p.peer == peer);
            of_origin += usize::from(p.origin == *origin);
        }
        all < self.all && of_peer < self.per_peer && of_origin < self.per_origin
    }

    /// The oldest place silent for [`HELLO_GRACE`] whose release lets `peer` at
    /// `origin` in.
    fn stale_for(&self, peer: PeerId, origin: &Origin, now: Instant) -> Option<u64> {
        self.held
            .iter()
            .filter(|p| now.duration_since(p.since) >= HELLO_GRACE)
            .filter(|p| self.fits(peer, origin, Some(p.id)))
            .min_by_key(|p| p.since)
            .map(|p| p.id)
    }

    fn take(&mut self, place: Place) {
        self.held.push(place);
    }

    fn give_back(&mut self, id: u64) -> Option<Place> {
        let at = self.held.iter().position(|p| p.id == id)?;
        Some(self.held.swap_remove(at))
    }
}

/// What one step of a stream came to.
enum Step<S> {
    /// Its hello, or why none came (a stream told to yield: [`SessionError::Busy`]).
    Heard { id: u64, stream: S, hello: Result<Hello, SessionError> },
    /// Its handshake.
    Done { id: u64, result: Result<Session<S>, SessionError> },
}

/// A stream the door took, ended: its handshake's result, or why it never had one.
#[derive(Debug)]
pub(super) struct Knocked<S> {
    pub(super) peer: PeerId,
    pub(super) origin: Origin,
    pub(super) result: Result<Session<S>, SessionError>,
}

/// Whether a hello's rendezvous (channel and time slot) is one this sender serves.
pub(super) type Serving = Arc<dyn Fn(Rendezvous) -> bool + Send + Sync>;

/// Takes streams and runs their handshakes within the places of the module docs.
pub(super) struct Door<S> {
    code: Code,
    me: PeerId,
    guesses: Arc<Guesses>,
    serving: Serving,
    waiting: Places,
    running: Places,
    next_id: u64,
    steps: FuturesUnordered<BoxFuture<'static, Step<S>>>,
    /// What a handshake sends behind its reply, if the sender knows it already.
    early: EarlyOffer,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Door<S> {
    pub(super) fn new(code: Code, me: PeerId, guesses: Arc<Guesses>, serving: Serving) -> Door<S> {
        Door {
            code,
            me,
            guesses,
            serving,
            waiting: Places::new(
                MAX_WAITING_HELLOS,
                MAX_WAITING_HELLOS_PER_ORIGIN,
                MAX_HANDSHAKES_PER_PEER,
            ),
            running: Places::new(
                MAX_CONCURRENT_HANDSHAKES,
                MAX_HANDSHAKES_PER_ORIGIN,
                MAX_HANDSHAKES_PER_PEER,
            ),
            next_id: 0,
            steps: FuturesUnordered::new(),
            early: EarlyOffer::default(),
        }
    }

    /// The door, sending `early`'s offer behind each handshake's reply while it holds
    /// one (see [`Session::answer`]).
    pub(super) fn with_early(mut self, early: EarlyOffer) -> Door<S> {
        self.early = early;
        self
    }

    /// Whether no stream is in.
    pub(super) fn is_idle(&self) -> bool {
        self.steps.is_empty()
    }

    /// Takes a new stream to wait for its hello, making a silent one yield if need be;
    /// false if there is no room (the stream is told "busy").
    pub(super) fn knock(&mut self, peer: PeerId, origin: Origin, mut stream: S) -> bool {
        let now = Instant::now();
        if !self.waiting.fits(peer, &origin, None) {
            let Some(stale) = self.waiting.stale_for(peer, &origin, now) else {
                tokio::spawn(Session::refuse_busy(stream));
                return false;
            };
            if let Some(p) = self.waiting.give_back(stale) {
                tracing::debug!(peer = %p.peer, origin = %p.origin, "a silent stream yields its place");
                p.yield_to.cancel();
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let yield_to = CancellationToken::new();
        let yielded = yield_to.clone();
        self.waiting.take(Place { id, peer, origin, since: now, yield_to });
        self.steps.push(Box::pin(async move {
            let hello = tokio::select! {
                h = read_hello(&mut stream) => h,
                () = yielded.cancelled() => Err(SessionError::Busy),
            };
            Step::Heard { id, stream, hello }
        }));
        true
    }

    /// The next stream that ended, its handshake run or not; `None` once no stream is
    /// in.
    ///
    /// # Cancel safety
    /// Cancel safe: the steps are kept between calls.
    pub(super) async fn next(&mut self) -> Option<Knocked<S>> {
        loop {
            match self.steps.next().await? {
                Step::Heard { id, stream, hello } => {
                    // A stream told to yield has given its place back already, even if
                    // its hello came in the same instant: it is told "busy".
                    let Some(place) = self.waiting.give_back(id) else {
                        tokio::spawn(Session::refuse_busy(stream));
                        continue;
                    };
                    match hello {
                        Ok(hello) => {
                            if let Some(ended) = self.run(place, stream, hello) {
                                return Some(ended);
                            }
                        }
                        Err(e) => {
                            return Some(Knocked {
                                peer: place.peer,
                                origin: place.origin,
                                result: Err(e),
                            });
                        }
                    }
                }
                Step::Done { id, result } => {
                    let p = self.running.give_back(id).expect("a running handshake has a place");
                    return Some(Knocked { peer: p.peer, origin: p.origin, result });
                }
            }
        }
    }

    /// Starts the handshake of a stream whose hello came, if it fits; else it is told
    /// "busy" and returned as ended.
    fn run(&mut self, mut place: Place, stream: S, hello: Hello) -> Option<Knocked<S>> {
        if !self.running.fits(place.peer, &place.origin, None) {
            tokio::spawn(Session::refuse_busy(stream));
            return Some(Knocked {
                peer: place.peer,
                origin: place.origin,
                result: Err(SessionError::Busy),
            });
        }
        let (code, me, guesses, serving) =
            (self.code.clone(), self.me, Arc::clone(&self.guesses), Arc::clone(&self.serving));
        // Taken now: the offer as the sender knows it when this handshake starts.
        let early = self.early.current();
        let (id, peer, origin) = (place.id, place.peer, place.origin.clone());
        place.since = Instant::now();
        self.running.take(place);
        self.steps.push(Box::pin(async move {
            let who = (me, peer, &origin);
            let result =
                Session::answer(stream, &hello, &code, &*serving, who, &guesses, early.as_ref())
                    .await;
            Step::Done { id, result }
        }));
        None
    }
}

/// The sender's side of the rendezvous: incoming session streams and the node's
/// events, for as long as the transfer runs.
pub(in crate::transfer) struct Listener {
    node: Node,
    incoming: libp2p_stream::IncomingStreams,
    found: mpsc::Receiver<NodeEvent>,
    code: Code,
    me: PeerId,
    pub(super) guesses: Arc<Guesses>,
    events: Events,
    /// The discovery slot's length, for the hellos' rendezvous.
    slot_secs: u64,
    /// The door [`Listener::next_of_many`] keeps between sessions.
    kept: Option<Door<Stream>>,
    /// Places for newcomers waiting for a running session's proof of life
    /// ([`Listener::refuse_others`]); their tasks outlive the session they wait on.
    proving: Arc<Semaphore>,
    /// What handshakes send behind their reply (a single-receiver send sets it).
    early: EarlyOffer,
}

impl Listener {
    pub(in crate::transfer) fn new(
        node: &Node,
        found: mpsc::Receiver<NodeEvent>,
        code: Code,
        events: Events,
        slot_secs: u64,
    ) -> Result<Listener, Error> {
        let incoming = node
            .control()
            .accept(session::PROTOCOL)
            .map_err(|_| node::NodeError::Transport("the session protocol is taken".into()))?;
        let me = node.peer_id();
        let budget = session::guesses::budget_for(code.word_count());
        let guesses = Arc::new(Guesses::new(budget));
        Ok(Listener {
            node: node.clone(),
            incoming,
            found,
            code,
            me,
            guesses,
            events,
            slot_secs,
            kept: None,
            proving: Arc::new(Semaphore::new(MAX_WAITING_HELLOS)),
            early: EarlyOffer::default(),
        })
    }

    /// The offer handshakes send behind their reply, for the send loop to set.
    pub(in crate::transfer) fn early(&self) -> &EarlyOffer {
        &self.early
    }

    /// Accepts streams until one passes the PAKE. Handshakes run side by side, so a
    /// stalled or slow peer cannot hold up the real receiver; past the places of the
    /// [`Door`], newcomers are told we are busy, at no cost to the code. Each wrong code
    /// is reported with where it came from ([`Event::FailedAttempt`]).
    ///
    /// When the code burns, this goes on for [`BURNT_LINGER`] answering every hello for
    /// it "burnt" (see [`Guesses`]), then fails with [`Error::CodeBurnt`].
    pub(in crate::transfer) async fn next_session(&mut self) -> Result<Session<Stream>, Error> {
        let mut door = self.door();
        self.next_session_through(&mut door).await
    }

    /// [`Listener::next_session`] for a send that serves many receivers: the door is
    /// kept between calls, so handshakes that run side by side while one session
    /// comes out are not cut off, and come out next.
    ///
    /// # Cancel safety
    /// Not cancel safe (the handshakes in flight would be lost): the caller runs it in
    /// a task of its own.
    pub(in crate::transfer) async fn next_of_many(&mut self) -> Result<Session<Stream>, Error> {
        let mut door = self.kept.take().unwrap_or_else(|| self.door());
        let next = self.next_session_through(&mut door).await;
        self.kept = Some(door);
        next
    }

    fn door(&self) -> Door<Stream> {
        let len = self.slot_secs;
        let serving: Serving = Arc::new(move |at| super::slot_ok(at, len));
        Door::new(self.code.clone(), self.me, Arc::clone(&self.guesses), serving)
            .with_early(self.early.clone())
    }

    async fn next_session_through(
        &mut self,
        door: &mut Door<Stream>,
    ) -> Result<Session<Stream>, Error> {
        let guesses = Arc::clone(&self.guesses);
        let mut burnt_at = guesses.burnt().then(|| Instant::now() + BURNT_LINGER);
        loop {
            tokio::select! {
                () = until(burnt_at) => return Err(Error::CodeBurnt { tried: guesses.tally() }),
                next = self.incoming.next() => {
                    let Some((peer, stream)) = next else {
                        return Err(node::NodeError::Stopped.into());
                    };
                    // Not known yet (the connection is still being reported): counted
                    // per peer, as a transport without addresses is.
                    let addr = self.node.remote_addr(peer).await.ok().flatten();
                    if door.knock(peer, Origin::of(addr.as_ref(), peer), stream) {
                        self.events.emit(Event::Authenticating { peer });
                    }
                }
                Some(ev) = self.found.recv() => super::report_network(ev, self.me, &self.events),
                Some(k) = door.next(), if !door.is_idle() => match k.result {
                    Ok(s) => return Ok(s),
                    Err(SessionError::PeerWrongCode { peer }) if burnt_at.is_none() => {
                        let left = guesses.left();
                        self.events.emit(Event::WrongCode { peer, left });
                        let from_there = guesses.failed_from(&k.origin);
                        tracing::info!(%peer, from = %k.origin, from_there, left, "a wrong code");
                        self.events.emit(Event::FailedAttempt { peer, from: k.origin, from_there, left });
                        if left == 0 {
                            burnt_at = Some(Instant::now() + BURNT_LINGER);
                        } else if door.is_idle() {
                            // Back to waiting (issue 15, item 8): the status line does
                            // not stay on the receiver that failed.
                            self.events.emit(Event::Searching);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(peer = %k.peer, origin = %k.origin, error = %e, "handshake refused");
                        if door.is_idle() {
                            // Back to waiting, so the status does not stay on a stranger.
                            self.events.emit(Event::Searching);
                        }
                    }
                },
            }
        }
    }

    /// While a session runs: refuses every other stream and passes the node's events
    /// on. Never returns. A stream is told "busy" (try again) while `taken` is `None`,
    /// and from its own peer (a receiver reconnecting before the sender saw the loss);
    /// once `taken` names the receiver the data went to, any other peer is told
    /// "taken" (it can never be served, issue 15, item 6), but only once `heard` ticks
    /// within [`PROOF_WAIT`]: the running session is alive. Otherwise "busy" (see the
    /// module docs). At most [`MAX_WAITING_HELLOS`] newcomers wait for that at once,
    /// each in a task of its own, so that it is answered even when the session ends
    /// first (a latecomer in a transfer's last seconds is still told "taken"); more
    /// are told "busy" at once.
    pub(in crate::transfer) async fn refuse_others(
        &mut self,
        taken: impl Fn() -> Option<PeerId>,
        heard: &watch::Receiver<()>,
    ) {
        let (me, events) = (self.me, &self.events);
        let network = async {
            while let Some(ev) = self.found.recv().await {
                super::report_network(ev, me, events);
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = refuse_all(&mut self.incoming, &self.proving, taken, heard) => {}
            () = network => {}
        }
    }
}

/// [`Listener::refuse_others`] for the streams of `incoming`; never returns. A
/// newcomer that waits for proof holds a place of `proving` until it is answered.
async fn refuse_all<S>(
    incoming: &mut (impl futures::Stream<Item = (PeerId, S)> + Unpin),
    proving: &Arc<Semaphore>,
    taken: impl Fn() -> Option<PeerId>,
    heard: &watch::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    while let Some((peer, stream)) = incoming.next().await {
        let place = match taken() {
            Some(to) if to != peer => Arc::clone(proving).try_acquire_owned().ok(),
            _ => None,
        };
        if let Some(place) = place {
            // From now on: a frame already heard proves nothing.
            let mut heard = heard.clone();
            heard.mark_unchanged();
            tokio::spawn(async move {
                refuse_once_proven(stream, heard).await;
                drop(place);
            });
        } else {
            tokio::spawn(Session::refuse_busy(stream));
        }
    }
    std::future::pending::<()>().await;
}

/// Tells a newcomer "taken" if `heard` ticks within [`PROOF_WAIT`] (the running
/// session is alive), else "busy".
async fn refuse_once_proven<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    mut heard: watch::Receiver<()>,
) {
    let alive = matches!(tokio::time::timeout(PROOF_WAIT, heard.changed()).await, Ok(Ok(())));
    // Bounded: a peer that never reads cannot keep its place.
    let told = Session::refuse_with(stream, alive);
    if tokio::time::timeout(session::PRE_AUTH_TIMEOUT, told).await.is_err() {
        tracing::debug!("a newcomer did not take its refusal in time");
    }
}

#[cfg(test)]
mod tests {
    //! The door over in-memory pipes, on tokio's paused clock: no network, no sleeps.

    use futures::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    use super::*;

    type Pipe = Compat<tokio::io::DuplexStream>;

    const CODE: &str = "bubble-enemy-result-increase";
    const WRONG: &str = "bubble-enemy-result-abandon";

    fn v4(s: &str) -> Origin {
        Origin::Ipv4(s.parse().expect("ip"))
    }

    /// Issue 16: the early offer is measured by each handshake that sends it (a file's
    /// size as it is then), and none is sent once the slot is emptied.
    #[test]
    fn the_early_offer_is_measured_when_a_handshake_sends_it() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let size = Arc::new(AtomicU64::new(1));
        let measure: Remeasure = {
            let size = Arc::clone(&size);
            Arc::new(move || {
                Some(crate::message::Offer {
                    kind: crate::message::Kind::File,
                    name: "growing.log".into(),
                    size: Some(size.load(Ordering::Relaxed)),
                    entries: Vec::new(),
                    chunk_size: 1 << 20,
                    files: None,
                    kinds: Vec::new(),
                })
            })
        };
        let early = EarlyOffer::default();
        assert_eq!(early.current(), None);
        early.set(Some(measure));
        assert_eq!(early.current().and_then(|o| o.size), Some(1));
        size.store(5, Ordering::Relaxed);
        assert_eq!(early.current().and_then(|o| o.size), Some(5), "measured again");
        early.set(None);
        assert_eq!(early.current(), None);
    }

    fn door(budget: u32) -> (Door<Pipe>, PeerId) {
        let me = PeerId::random();
        let code: Code = CODE.parse().expect("code");
        (
            Door::new(
                code,
                me,
                Arc::new(Guesses::new(budget)),
                Arc::new(|r: Rendezvous| r.slot == 300),
            ),
            me,
        )
    }

    /// A stream from `peer` at `origin` into the door; the receiver's end is returned.
    fn knock(d: &mut Door<Pipe>, peer: PeerId, origin: &Origin) -> (bool, Pipe) {
        let (a, b) = tokio::io::duplex(1 << 16);
        (d.knock(peer, origin.clone(), a.compat()), b.compat())
    }

    /// The receiver's side of a handshake with `code` over `end`.
    async fn connect(
        end: Pipe,
        code: &str,
        me: PeerId,
        sender: PeerId,
    ) -> Result<(), SessionError> {
        let code: Code = code.parse().expect("code");
        let at = Rendezvous { channel: code.channel(), slot: 300 };
        Session::connect(end, &code, at, me, sender).await.map(drop)
    }

    /// Drives the door and the receiver `peer` until both sides are done with its
    /// stream; the door's ended streams meanwhile (that one last).
    async fn meet(
        d: &mut Door<Pipe>,
        peer: PeerId,
        receiver: impl std::future::Future<Output = Result<(), SessionError>>,
    ) -> (Result<(), SessionError>, Vec<Knocked<Pipe>>) {
        let mut ended = Vec::new();
        let mut result = None;
        tokio::pin!(receiver);
        loop {
            tokio::select! {
                r = &mut receiver, if result.is_none() => result = Some(r),
                Some(k) = d.next(), if !d.is_idle() => {
                    let mine = k.peer == peer;
                    ended.push(k);
                    if mine {
                        let r = match result {
                            Some(r) => r,
                            None => receiver.await,
                        };
                        return (r, ended);
                    }
                }
            }
        }
    }

    /// The one status byte a refused stream reads.
    async fn status(mut end: Pipe) -> Option<u8> {
        let mut b = [0u8; 1];
        end.read_exact(&mut b).await.ok().map(|()| b[0])
    }

    /// A pipe pair as the door's stream and the newcomer's end.
    fn pipe() -> (Pipe, Pipe) {
        let (a, b) = tokio::io::duplex(64);
        (a.compat(), b.compat())
    }

    /// A newcomer while a session runs is told "taken" only once that session's
    /// receiver is heard from after it came; a session that stays silent (a receiver
    /// killed over QUIC, not yet noticed) gets it "busy", so that the receiver's own
    /// rerun asks again instead of stopping (CHANGELOG, the race of stop 20).
    #[tokio::test(start_paused = true)]
    async fn taken_is_said_only_for_a_session_that_proves_alive() {
        let heard = watch::Sender::new(());
        let (stream, end) = pipe();
        let mut rx = heard.subscribe();
        // A frame heard before the newcomer came proves nothing.
        heard.send_replace(());
        rx.mark_unchanged();
        let started = Instant::now();
        let told = tokio::spawn(refuse_once_proven(stream, rx));
        tokio::time::advance(Duration::from_secs(1)).await;
        heard.send_replace(());
        assert_eq!(status(end).await, Some(6), "told taken");
        told.await.expect("refused");
        assert!(started.elapsed() < PROOF_WAIT);

        let (stream, end) = pipe();
        let mut rx = heard.subscribe();
        rx.mark_unchanged();
        let started = Instant::now();
        let told = tokio::spawn(refuse_once_proven(stream, rx));
        assert_eq!(status(end).await, Some(2), "told busy");
        told.await.expect("refused");
        assert_eq!(started.elapsed(), PROOF_WAIT);
    }

    /// While a session runs: before its data went anywhere every newcomer is told
    /// "busy"; once it went to receiver A, A's own new stream (its rerun) is told
    /// "busy", and other peers wait for the session's proof of life, at most
    /// [`MAX_WAITING_HELLOS`] at once: the next is told "busy" at once, and those
    /// waiting hear "taken" when the session's receiver is heard from.
    #[tokio::test(start_paused = true)]
    async fn while_a_session_runs_others_are_told_busy_or_taken() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let taken = std::sync::Mutex::new(None);
        let heard = watch::Sender::new(());
        let proving = Arc::new(Semaphore::new(MAX_WAITING_HELLOS));
        let (mut streams, mut incoming) = futures::channel::mpsc::channel(4);
        let newcomer = |peer: PeerId| {
            let (stream, end) = pipe();
            let mut streams = streams.clone();
            async move {
                futures::SinkExt::send(&mut streams, (peer, stream)).await.expect("taken in");
                end
            }
        };
        // On the paused clock, every answer below comes without a timer: at once.
        let started = Instant::now();
        let test = async {
            assert_eq!(status(newcomer(b).await).await, Some(2), "busy before any data");
            *taken.lock().expect("lock") = Some(a);
            assert_eq!(status(newcomer(a).await).await, Some(2), "its own rerun: busy");
            assert_eq!(started.elapsed(), Duration::ZERO, "its own rerun waited");
            let mut waiting = Vec::new();
            for _ in 0..MAX_WAITING_HELLOS {
                waiting.push(newcomer(b).await);
            }
            assert_eq!(status(newcomer(b).await).await, Some(2), "no place: busy");
            assert_eq!(started.elapsed(), Duration::ZERO, "told at once, not after the wait");
            heard.send_replace(());
            for end in waiting {
                assert_eq!(status(end).await, Some(6), "taken, once the session proved alive");
            }
            assert_eq!(started.elapsed(), Duration::ZERO);
        };
        let taken = || *taken.lock().expect("lock");
        let rx = heard.subscribe();
        tokio::select! {
            () = test => {}
            () = refuse_all(&mut incoming, &proving, taken, &rx) => unreachable!(),
        }
        streams.close_channel();
    }

    /// Issue 14, item 5: a silent stream yields its place after about a second to a
    /// newcomer that finds no room, and a real receiver then gets through.
    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_yields_its_place_after_the_grace() {
        let (mut d, me) = door(256);
        let jammer = v4("198.18.0.66");
        let mut silent = Vec::new();
        for _ in 0..MAX_WAITING_HELLOS_PER_ORIGIN / MAX_HANDSHAKES_PER_PEER {
            let peer = PeerId::random();
            for _ in 0..MAX_HANDSHAKES_PER_PEER {
                let (taken, end) = knock(&mut d, peer, &jammer);
                assert!(taken);
                silent.push(end);
            }
        }
        tokio::time::advance(HELLO_GRACE / 2).await;
        let (taken, end) = knock(&mut d, PeerId::random(), &jammer);
        assert!(!taken, "no silent stream is past its grace yet");
        assert_eq!(status(end).await, Some(2), "told busy");

        tokio::time::advance(HELLO_GRACE / 2).await;
        let started = Instant::now();
        let peer = PeerId::random();
        let (taken, end) = knock(&mut d, peer, &jammer);
        assert!(taken, "the oldest silent stream yields");
        let (r, ended) = meet(&mut d, peer, connect(end, CODE, peer, me)).await;
        r.expect("the real receiver, from the jammer's own address, gets through");
        assert!(ended.last().is_some_and(|k| k.result.is_ok()), "{ended:?}");
        assert_eq!(started.elapsed(), Duration::ZERO, "at once");
        assert_eq!(status(silent.remove(0)).await, Some(2), "the yielded stream was told busy");
    }

    /// Issue 14, item 5: places count per IPv4 address, per IPv6 /64 and per relay;
    /// another origin still gets in.
    #[test]
    fn places_count_per_origin_and_per_peer() {
        let origin = |a: &str| Origin::of(Some(&a.parse().expect("addr")), PeerId::random());
        let now = Instant::now();
        let place = |id, peer, origin: &Origin| Place {
            id,
            peer,
            origin: origin.clone(),
            since: now,
            yield_to: CancellationToken::new(),
        };
        let relay = "/ip4/198.18.0.9/tcp/4001/p2p-circuit/p2p/12D3KooWDgtWNX3aqxVRU9xTuUAjugigwg8sxGX5MXFEhHYsTDrF";
        for (a, b) in [
            ("/ip4/198.18.0.9/tcp/1", "/ip4/198.18.0.9/tcp/2"),
            ("/ip6/2001:db8::1/tcp/1", "/ip6/2001:db8::ffff:2/udp/2/quic-v1"),
            (relay, "/ip4/198.18.0.9/tcp/4001/p2p-circuit"),
        ] {
            let mut p = Places::new(
                MAX_CONCURRENT_HANDSHAKES,
                MAX_HANDSHAKES_PER_ORIGIN,
                MAX_HANDSHAKES_PER_PEER,
            );
            let (one, other) = (origin(a), origin(b));
            assert_eq!(one, other, "{a} and {b} are one origin");
            let peer = PeerId::random();
            for id in 0..MAX_HANDSHAKES_PER_PEER as u64 {
                assert!(p.fits(peer, &one, None));
                p.take(place(id, peer, &one));
            }
            assert!(!p.fits(peer, &one, None), "a third from one peer");
            for id in 2..MAX_HANDSHAKES_PER_ORIGIN as u64 {
                let peer = PeerId::random();
                assert!(p.fits(peer, &other, None), "{b}");
                p.take(place(id, peer, &other));
            }
            assert!(!p.fits(PeerId::random(), &other, None), "one more from {b}");
            assert!(p.fits(PeerId::random(), &origin("/ip4/198.18.0.10/tcp/1"), None));
            assert!(p.fits(PeerId::random(), &origin("/ip6/2001:db8:0:1::1/tcp/1"), None));
            p.give_back(0);
            assert!(p.fits(PeerId::random(), &one, None), "a place given back is free again");
        }
    }

    /// Issue 14, item 5: streams that stall after their hello hold at most an origin's
    /// handshake slots; a receiver from elsewhere still gets through at once.
    #[tokio::test(start_paused = true)]
    async fn an_origin_cannot_take_every_handshake_slot() {
        let (mut d, me) = door(256);
        let jammer = v4("198.18.0.66");
        let code: Code = CODE.parse().expect("code");
        let mut stalled = Vec::new();
        for _ in 0..MAX_CONCURRENT_HANDSHAKES {
            let peer = PeerId::random();
            let (taken, mut end) = knock(&mut d, peer, &jammer);
            assert!(taken);
            // A hello for our channel with a real SPAKE2 message, then silence: it would
            // hold a slot for 5 s.
            let (_, msg) = spake2::Spake2::<spake2::Ed25519Group>::start_b(
                &spake2::Password::new(b"guess-guess-guess"),
                &spake2::Identity::new(b"a"),
                &spake2::Identity::new(b"b"),
            );
            let mut hello = b"pcp".to_vec();
            hello.push(session::VERSION);
            hello.extend_from_slice(&code.channel().to_be_bytes());
            hello.extend_from_slice(&300u64.to_be_bytes());
            hello.extend_from_slice(&msg);
            end.write_all(&hello).await.expect("hello");
            stalled.push(end);
        }
        let peer = PeerId::random();
        let (taken, end) = knock(&mut d, peer, &v4("198.18.0.2"));
        assert!(taken);
        let started = Instant::now();
        let (r, ended) = meet(&mut d, peer, connect(end, CODE, peer, me)).await;
        r.expect("the real receiver gets through");
        assert_eq!(started.elapsed(), Duration::ZERO, "at once");
        // Past the origin's handshake slots its hellos were told "busy" (and past its
        // free guesses, "try later").
        let busy = ended.iter().filter(|k| matches!(k.result, Err(SessionError::Busy))).count();
        assert_eq!(busy, MAX_CONCURRENT_HANDSHAKES - MAX_HANDSHAKES_PER_ORIGIN, "{ended:?}");
    }

    /// Issue 14, item 6: a guesser gets a few tries and then waits, while the right
    /// receiver from another address is not delayed at all; the code burns only at the
    /// budget.
    #[tokio::test(start_paused = true)]
    async fn a_guesser_waits_and_the_right_receiver_elsewhere_does_not() {
        let (mut d, me) = door(3);
        let guesser = v4("198.18.0.66");
        let mut told = Vec::new();
        for _ in 0..session::guesses::FREE_PER_ORIGIN + 1 {
            let peer = PeerId::random();
            let (_, end) = knock(&mut d, peer, &guesser);
            let (r, ended) = meet(&mut d, peer, connect(end, WRONG, peer, me)).await;
            told.push(r.expect_err("a wrong code"));
            assert!(ended.iter().all(|k| k.result.is_err()));
        }
        assert!(matches!(told[0], SessionError::WrongCode), "{told:?}");
        assert!(matches!(told[1], SessionError::WrongCode), "{told:?}");
        assert!(matches!(told[2], SessionError::TryLater { secs: 1 }), "{told:?}");
        assert_eq!(d.guesses.left(), 1, "waiting cost nothing");

        let started = Instant::now();
        let peer = PeerId::random();
        let (_, end) = knock(&mut d, peer, &v4("198.18.0.2"));
        let (r, _) = meet(&mut d, peer, connect(end, CODE, peer, me)).await;
        r.expect("the right receiver from another address");
        assert_eq!(started.elapsed(), Duration::ZERO, "not delayed");

        // After its wait the guesser's next wrong code is the last of the budget.
        tokio::time::advance(session::guesses::FIRST_WAIT).await;
        let peer = PeerId::random();
        let (_, end) = knock(&mut d, peer, &guesser);
        let (r, _) = meet(&mut d, peer, connect(end, WRONG, peer, me)).await;
        assert!(matches!(r, Err(SessionError::Burnt)), "{r:?}");
        assert!(d.guesses.burnt());
    }
}
