//! A send that serves many receivers with one code ([`Receivers::Many`]).
//!
//! One [`Listener`] takes every handshake, in a task of its own that keeps its door
//! between sessions, so the code's wrong-code budget ([`crate::guess_budget`]) is the
//! code's, shared by every receiver and every origin, never one per receiver. Each
//! receiver that proves the code gets a task with its own [`Outgoing`]: its own source,
//! opened and read again from the start, its own window, acks and resume, exactly as
//! a single receiver has in [`super::send`](mod@super::send).
//!
//! Sessions are routed by peer id: a receiver that lost its connection comes back under
//! the same peer id (the same process, or a rerun under the identity it kept with its
//! part file) and is handed to its own task; any other peer is a new receiver.
//!
//! Invariants:
//! - With a count N, at most N receivers are ever served: running plus finished never
//!   passes N, and a receiver past it is told so before any offer.
//! - A receiver that fails (declines, errs, does not come back within the reconnect
//!   timeout) is dropped with [`Event::Dropped`]; the others go on, and its place is
//!   free again.
//! - Every event of one receiver is wrapped in [`Event::Receiver`] with its number;
//!   the send's own [`Event::Finished`] carries the sum of every finished receiver.
//! - Every receiver's window draws on one [`Budget`] of
//!   [`pipeline::many_chunks`](crate::pipeline::many_chunks) chunks (64 MiB): the
//!   chunks kept for all receivers together never pass it, however many receivers
//!   there are; each one's own window stays at most 16 MiB. Each receiver's
//!   read-ahead and seal buffers are in it too: a receiver reserves them from the
//!   budget before its offer (sending keepalives while it waits), and keeps them until
//!   it ends.
//! - Standard input and text are read once, into one bounded buffer shared by every
//!   receiver ([`fanout`]), within the same budget: the slowest receiver paces the
//!   reader, and one that keeps the others waiting for the lag bound is dropped. A
//!   newcomer after the stream's first chunk left the buffer is told that it cannot be
//!   restarted, before any offer.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(super) mod fanout;

use self::fanout::{Cursor, Fanout};
use super::outgoing::{Budget, Ending, Held, Outgoing};
use super::rendezvous::Listener;
use super::send::{STREAM_TAKEN, finished, serve};
use super::{KEEPALIVE, LINGER, node_config};
use crate::code::Code;
use crate::error::Error;
use crate::event::{Event, Events, Report, Role, Stats, Transport};
use crate::message::Control;
use crate::node::Node;
use crate::options::{Receivers, SendOptions, Source};
use crate::pipeline::Compression;
use crate::session::Session;

/// Idle buffers a receiver's pool keeps (counted in its reservation).
const KEEP: usize = 2;

/// Chunks one receiver seals at once at most: its seal buffers are reserved from the
/// budget, and many receivers share the cores anyway.
const DEPTH: usize = 3;

/// What every receiver's task needs to know of the send.
#[derive(Clone)]
struct Plan {
    /// Read again for each receiver, or
    paths: Vec<PathBuf>,
    /// read once for all of them.
    fanout: Option<Fanout>,
    chunk_size: u32,
    compression: Compression,
    reconnect_timeout: Duration,
    node: Node,
    /// Shared by every receiver's window.
    budget: Budget,
}

/// A receiver being served: its number and where its next session goes.
struct Serving {
    id: u32,
    sessions: mpsc::Sender<Session<Stream>>,
}

/// [`crate::send`] with [`Receivers::Many`]: serves every receiver that proves the
/// code until `count` of them have finished, or until cancelled (see the module docs).
pub(super) async fn send(
    options: SendOptions,
    events: Events,
    cancel: CancellationToken,
) -> Result<Report, Error> {
    let Receivers::Many { count, lag } = options.receivers else {
        unreachable!("called for many receivers only")
    };
    let budget = Budget::new(crate::pipeline::many_chunks(options.chunk_size));
    let (paths, fanout) =
        sources(options.source, count, lag, options.chunk_size, &budget, &events)?;
    let _stop_reading = StopOnDrop(fanout.clone());
    let made_up = options.code.is_none();
    let code = options.code.unwrap_or_else(|| Code::generate(options.words));
    let net = &options.network;
    let (node, found) = Node::start(node_config(net, Duration::from_secs(60), &code, true))?;
    let listener =
        Listener::new(&node, found, code.clone(), events.clone(), super::slot_secs(net))?;
    events.emit(Event::Code { code: code.to_string(), made_up });
    events.emit(Event::Searching);
    let (mut sessions, _stop_listening) = listen(listener);

    let plan = Plan {
        paths,
        fanout,
        chunk_size: options.chunk_size,
        compression: options.compression,
        reconnect_timeout: net.reconnect_timeout,
        node,
        budget,
    };
    let mut served = Served::new(plan, count, events, cancel.clone());
    let mut listening = true;
    // The listener's failure (the code burnt, the node gone) ends the send once the
    // receivers being served have finished.
    let mut listen_error: Option<Error> = None;
    while !served.over(listening) {
        tokio::select! {
            // The tasks' tokens are children of `cancel`: each tells its receiver.
            () = cancel.cancelled(), if listening => listening = false,
            next = sessions.recv(), if listening => match next {
                Some(Ok(session)) => served.admit(session),
                Some(Err(e)) => {
                    listening = false;
                    listen_error = Some(e);
                }
                None => listening = false,
            },
            Some(joined) = served.tasks.join_next() => {
                let (peer, result) = joined.map_err(crate::pipeline::PipelineError::Task)?;
                served.ended(peer, result);
            },
        }
    }
    served.report(listen_error)
}

/// What the send reads for its receivers: paths read again for each one, or one
/// reader or text fanned out to all of them. Checked now, as a single send checks
/// it, so that a source that cannot be sent fails before a code is shown.
fn sources(
    source: Source,
    count: Option<NonZeroU32>,
    lag: Duration,
    chunk_size: u32,
    budget: &Budget,
    events: &Events,
) -> Result<(Vec<PathBuf>, Option<Fanout>), Error> {
    if let Source::Paths(paths) = source {
        let checked = crate::source::Source::new(Source::Paths(paths.clone()))?;
        events.emit(checked.sending());
        return Ok((paths, None));
    }
    let source = crate::source::Source::new(source)?;
    events.emit(source.sending());
    // With a count, the stream starts once that many receivers are there.
    let quorum = count.map_or(1, |n| u64::from(n.get()));
    let fanout = Fanout::new(source, chunk_size, budget.clone(), (lag, fed_reserve(), quorum));
    Ok((Vec::new(), Some(fanout)))
}

/// The listener in a task of its own: it is not cancel safe, and it keeps taking
/// handshakes while the sessions before run. It ends with the send, however that ends.
fn listen(mut listener: Listener) -> (mpsc::Receiver<Result<Session<Stream>, Error>>, AbortOnDrop) {
    let (to_us, sessions) = mpsc::channel(1);
    let listening = tokio::spawn(async move {
        loop {
            let next = listener.next_of_many().await;
            let ended = next.is_err();
            if to_us.send(next).await.is_err() || ended {
                break;
            }
        }
    });
    (sessions, AbortOnDrop(listening))
}

/// The send's receivers: who is being served, who finished, who was dropped.
struct Served {
    plan: Plan,
    count: Option<NonZeroU32>,
    events: Events,
    cancel: CancellationToken,
    serving: HashMap<PeerId, Serving>,
    /// Receivers the shared buffer dropped, and why: one that comes back (its
    /// connection died while it lagged) is told that, not that the stream moved on.
    lagged: HashMap<PeerId, String>,
    tasks: JoinSet<(PeerId, Result<Option<Report>, Error>)>,
    next_id: u32,
    finished: u32,
    total: Totals,
    /// A receiver was cut off mid-way by the cancellation.
    cut_off: bool,
    first_at: Option<Instant>,
}

impl Served {
    fn new(
        plan: Plan,
        count: Option<NonZeroU32>,
        events: Events,
        cancel: CancellationToken,
    ) -> Self {
        Served {
            plan,
            count,
            events,
            cancel,
            serving: HashMap::new(),
            lagged: HashMap::new(),
            tasks: JoinSet::new(),
            next_id: 1,
            finished: 0,
            total: Totals::default(),
            cut_off: false,
            first_at: None,
        }
    }

    /// Whether the send is over: the count reached, or no longer listening and
    /// nobody left to serve.
    fn over(&self, listening: bool) -> bool {
        self.count.is_some_and(|n| self.finished >= n.get())
            || (!listening && self.tasks.is_empty())
    }

    /// A session that proved the code: handed to its receiver's task, or a new
    /// receiver, or told why it cannot be served.
    fn admit(&mut self, session: Session<Stream>) {
        let peer = session.peer();
        if let Some(s) = self.serving.get(&peer) {
            // Back after a loss: its task takes it once it noticed the loss itself;
            // one that comes again meanwhile retries.
            let _ = s.sessions.try_send(session);
        } else if let Some(why) = self.lagged.get(&peer) {
            tokio::spawn(refuse(session, why.clone()));
        } else if full(self.count, self.finished, self.serving.len()) {
            tracing::info!(%peer, "a receiver past the count; told so");
            tokio::spawn(refuse_full(session, self.count));
        } else {
            match self.feed() {
                Ok(fed) => self.serve(session, fed),
                Err(why) => {
                    tracing::info!(%peer, %why, "a receiver refused");
                    tokio::spawn(refuse(session, why.into()));
                }
            }
        }
    }

    /// A new receiver's place in the shared buffer, if there is one: joined now, at
    /// the stream's first chunk if it is still held, and with its seal buffers at once
    /// (waiting for them, its cursor would pin the buffer that the room must come
    /// from). What to tell it when it cannot have the stream.
    fn feed(&self) -> Result<Option<(Cursor, Held)>, &'static str> {
        match self.plan.fanout.as_ref() {
            None => Ok(None),
            Some(f) => place(f, &self.plan.budget).map(Some),
        }
    }

    /// Starts serving a new receiver in a task of its own.
    fn serve(&mut self, session: Session<Stream>, fed: Option<(Cursor, Held)>) {
        let peer = session.peer();
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        self.first_at.get_or_insert_with(Instant::now);
        let (tx, rx) = mpsc::channel(1);
        self.serving.insert(peer, Serving { id, sessions: tx });
        let tagged = tagged(&self.events, id);
        let (plan, cancel) = (self.plan.clone(), self.cancel.child_token());
        self.tasks
            .spawn(async move { (peer, receiver(session, rx, plan, fed, tagged, cancel).await) });
    }

    /// A receiver's task ended: finished, or refused before anything was sent (a
    /// rerun that comes back under the identity it kept: its place is free), or
    /// dropped.
    fn ended(&mut self, peer: PeerId, result: Result<Option<Report>, Error>) {
        let Some(s) = self.serving.remove(&peer) else { return };
        match result {
            Ok(Some(report)) => {
                self.finished += 1;
                self.total.add(&report);
            }
            Ok(None) => {}
            Err(e) => {
                self.cut_off |= matches!(e, Error::Cancelled);
                let reason = crate::error::last_word(&e);
                let fell_behind =
                    matches!(e, Error::Source(crate::source::SourceError::Lagged { .. }));
                if fell_behind {
                    self.lagged.insert(peer, reason.clone());
                }
                tracing::info!(receiver = s.id, %peer, %reason, "receiver dropped");
                emit_for(&self.events, s.id, Event::Dropped { reason, fell_behind });
            }
        }
    }

    /// The send's result once it is over: the sum of every finished receiver, or the
    /// listener's failure.
    fn report(self, listen_error: Option<Error>) -> Result<Report, Error> {
        let most = crate::pipeline::many_chunks(self.plan.chunk_size);
        tracing::info!(
            peak = self.plan.budget.peak(),
            budget = most,
            "chunks held at most for all receivers"
        );
        if let Some(e) = listen_error {
            return Err(e);
        }
        // Cancelled with a count not reached, or with receivers cut off mid-way: an
        // interruption. Without a count and nobody cut off, Ctrl-C is how it ends.
        let short = self.count.is_some_and(|n| self.finished < n.get());
        if self.cancel.is_cancelled() && (self.cut_off || short) {
            return Err(Error::Cancelled);
        }
        let total = self.total;
        let report = Report {
            role: Role::Sender,
            bytes: total.bytes,
            wire: total.wire,
            chunks: total.chunks,
            elapsed: self.first_at.map_or(Duration::ZERO, |t| t.elapsed()),
            stats: total.stats,
            written: Vec::new(),
            transport: None,
        };
        self.events.emit(Event::Finished(report.clone()));
        Ok(report)
    }
}

/// A new receiver's cursor in the shared buffer and its seal buffers from the budget,
/// or what to tell it: the stream's start has left the buffer, or the budget has no
/// room for its seal buffers (the others hold it all).
fn place(fanout: &Fanout, budget: &Budget) -> Result<(Cursor, Held), &'static str> {
    match (budget.try_reserve(fed_reserve()), fanout.join()) {
        (Some(held), Some(cursor)) => Ok((cursor, held)),
        (_, None) => Err(STREAM_TAKEN),
        (None, Some(_)) => Err(NO_ROOM),
    }
}

/// Whether a new receiver would pass the count.
fn full(count: Option<NonZeroU32>, finished: u32, serving: usize) -> bool {
    count.is_some_and(|n| u64::from(finished) + serving as u64 >= u64::from(n.get()))
}

/// The sum of the finished receivers.
#[derive(Default)]
struct Totals {
    bytes: u64,
    wire: u64,
    chunks: u64,
    stats: Stats,
}

impl Totals {
    fn add(&mut self, r: &Report) {
        self.bytes += r.bytes;
        self.wire += r.wire;
        self.chunks += r.chunks;
        self.stats.sent += r.stats.sent;
        self.stats.resent += r.stats.resent;
        self.stats.skipped += r.stats.skipped;
        self.stats.reconnects += r.stats.reconnects;
    }
}

/// Stops the shared buffer's reader when dropped: it ends with the send.
struct StopOnDrop(Option<Fanout>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            f.stop();
        }
    }
}

/// Aborts a task when dropped: the listener ends with the send, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn emit_for(events: &Events, id: u32, event: Event) {
    events.emit(Event::Receiver { id, event: Box::new(event) });
}

/// The caller's events, each wrapped as receiver `id`'s.
fn tagged(events: &Events, id: u32) -> Events {
    let events = events.clone();
    Events::new(move |event| emit_for(&events, id, event))
}

/// Tells a receiver past the count that this send serves no more, before any offer
/// (it sees the sender's error and stops).
async fn refuse_full(mut session: Session<Stream>, count: Option<NonZeroU32>) {
    let n = count.map_or(0, NonZeroU32::get);
    let why = format!("this sender serves {n} receiver{} and has no place left", plural(n));
    session.say_last(&Control::Error(why), LINGER).await;
}

/// Tells a receiver why it cannot be served, before any offer: it comes after the
/// stream's first chunk left the shared buffer, or the budget has no room for it.
async fn refuse(mut session: Session<Stream>, why: String) {
    session.say_last(&Control::Error(why), LINGER).await;
}

/// What a receiver of standard input is told when the budget has no room for its seal
/// buffers (the others hold it all).
const NO_ROOM: &str = "this sender's buffer for standard input has no room for one more \
                       receiver; the others are served";

/// Seal jobs a receiver runs at once, and the chunks it reserves from the budget when
/// it reads from the shared buffer (its seal buffers and its pool's idle ones).
fn depth() -> usize {
    crate::pipeline::depth().min(DEPTH)
}

fn fed_reserve() -> usize {
    depth() + KEEP
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Reserves from the budget a receiver's read-ahead, seal buffers and idle buffers,
/// keeping its session alive while the others hold the room.
async fn reserve(
    session: &mut Session<Stream>,
    budget: &Budget,
    depth: usize,
    cancel: &CancellationToken,
) -> Result<Held, Error> {
    let reserving = budget.reserve(crate::source::AHEAD + 1 + depth + KEEP);
    tokio::pin!(reserving);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        tokio::select! {
            held = &mut reserving => return Ok(held),
            _ = tick.tick() => session.send(&Control::Keepalive).await?,
            () = cancel.cancelled() => {
                session.say_last(&Control::Cancel, LINGER).await;
                return Err(Error::Cancelled);
            }
        }
    }
}

/// One receiver, from its first session to its last byte, across reconnections: its
/// report, `None` if it refused before anything was sent, or why it was dropped.
async fn receiver(
    mut session: Session<Stream>,
    mut more: mpsc::Receiver<Session<Stream>>,
    plan: Plan,
    fed: Option<(Cursor, Held)>,
    events: Events,
    cancel: CancellationToken,
) -> Result<Option<Report>, Error> {
    let peer = session.peer();
    events.emit(Event::Authenticating { peer });
    // Seal buffers (and, reading its own source, read-ahead) are counted too.
    let depth = depth();
    let (cursor, reserved) = match fed {
        Some((cursor, held)) => (Some(cursor), Some(held)),
        None => (None, None),
    };
    let _reserved = match reserved {
        Some(held) => held,
        None => reserve(&mut session, &plan.budget, depth, &cancel).await?,
    };
    let dropped = cursor.as_ref().map(Cursor::dropped);
    let mut out = match (cursor, &plan.fanout) {
        (Some(cursor), Some(fanout)) => {
            let offer = fanout.offer().await?;
            Outgoing::fed(plan.chunk_size, plan.compression, offer, cursor, (KEEP, depth))
        }
        _ => {
            let source = crate::source::Source::new(Source::Paths(plan.paths))?;
            Outgoing::new(plan.chunk_size, plan.compression, source)
                .within(plan.budget, (KEEP, depth))
        }
    };
    let started: OnceLock<Instant> = OnceLock::new();
    let mut pinned: Option<PeerId> = None;
    let mut transport: Option<Transport> = None;
    loop {
        let ending = serve(&mut out, session, (&started, pinned), &events, &cancel).await?;
        if let Ok(Some(addr)) = plan.node.remote_addr(peer).await {
            transport = Some(Transport::of(&addr));
        }
        match ending {
            Ending::Done => break,
            Ending::Refused if started.get().is_none() => return Ok(None),
            Ending::Refused => {}
            Ending::Lost => {
                pinned = Some(peer);
                out.stats.reconnects += 1;
                events.emit(Event::ConnectionLost);
            }
        }
        session = tokio::select! {
            () = cancel.cancelled() => return Err(Error::Cancelled),
            // Dropped by the shared buffer while away: its window is given back now,
            // not after the reconnect timeout.
            why = async {
                match &dropped {
                    Some(d) => d.wait().await,
                    None => std::future::pending().await,
                }
            } => return Err(why.into()),
            next = tokio::time::timeout(plan.reconnect_timeout, more.recv()) => match next {
                Ok(Some(s)) => s,
                Ok(None) => return Err(crate::node::NodeError::Stopped.into()),
                Err(_) => return Err(Error::ReconnectTimeout(plan.reconnect_timeout.as_secs())),
            },
        };
    }
    let report = finished(out, &started, transport, &events);
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::MIN_CHUNK_SIZE;

    /// Issue 15: a receiver of standard input that comes while the others hold the
    /// whole budget is told there is no room for it (and gets no place in the buffer);
    /// once room is given back, the next one gets its place.
    #[tokio::test]
    async fn a_receiver_finds_no_room_while_the_others_hold_the_budget() {
        let given = Source::Reader(Box::new(std::io::Cursor::new(vec![7u8; 1 << 20])));
        let source = crate::source::Source::new(given).expect("a source");
        let budget = Budget::new(64);
        let fanout = Fanout::new(source, MIN_CHUNK_SIZE, budget.clone(), (LAG, fed_reserve(), 2));
        let mut others = Vec::new();
        while let Some(held) = budget.try_reserve(fed_reserve()) {
            others.push(held);
        }
        assert!(!others.is_empty(), "the budget had room to begin with");
        assert_eq!(place(&fanout, &budget).err(), Some(NO_ROOM));
        others.pop();
        let placed = place(&fanout, &budget);
        assert!(placed.is_ok(), "{:?}", placed.err());
    }

    const LAG: Duration = Duration::from_secs(60);
}
