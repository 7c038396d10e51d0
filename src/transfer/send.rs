//! [`send`]: serve the code, authenticate receivers, send the offer and the chunks, and
//! pick up where the receiver stands after any reconnection.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::outgoing::{Ending, Outgoing};
use super::rendezvous::Listener;
use super::{KEEPALIVE, LINGER, node_config, unexpected};
use crate::code::Code;
use crate::error::Error;
use crate::event::{Event, Events, Report, Role, Transport};
use crate::message::{Control, Resume};
use crate::node::Node;
use crate::options::{Receivers, SendOptions};
use crate::pipeline::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, RootHash};
use crate::session::{Session, SessionError};
use crate::source::Source;

/// Sends what `options` names to the receiver that comes with the code.
///
/// Events go to `on_event` as the transfer goes (the code first, in
/// [`Event::Code`]); `cancel` stops the transfer, telling the receiver, and the result is
/// then [`Error::Cancelled`].
///
/// # Errors
/// Invalid options, an unreadable source, authentication failures (the code burnt),
/// a declined offer, transfer failures, a cancelled receiver, and the reconnect timeout
/// running out.
pub async fn send(
    options: SendOptions,
    on_event: impl Fn(Event) + Send + Sync + 'static,
    cancel: CancellationToken,
) -> Result<Report, Error> {
    let events = Events::new(on_event);
    check(&options)?;
    let chunk_size = options.chunk_size;
    if options.receivers != Receivers::One {
        return super::many::send(options, events, cancel).await;
    }
    // Checked now, so that a source that cannot be sent fails before a code is shown;
    // measured when the offer is sent (see `Outgoing::offer`): where that costs a look
    // at metadata, by each handshake again (see `Outgoing::early_offer`).
    // A stream's receiver cannot be told apart from a newcomer once it is gone (it keeps
    // no identity), so a newcomer is told "busy" while the session lives, not "taken":
    // it is either refused for good once the loss shows (`serve`) or was a live
    // receiver's typo'd twin, and a live transfer is not ended for it.
    let stream = matches!(options.source, crate::options::Source::Reader(_));
    let source = Source::new(options.source)?;
    events.emit(source.sending());
    let made_up = options.code.is_none();
    let code = options.code.unwrap_or_else(|| Code::generate(options.words));
    let net = &options.network;
    let (node, found) = Node::start(node_config(net, Duration::from_secs(60), &code, true))?;
    let mut listener =
        Listener::new(&node, found, code.clone(), events.clone(), super::slot_secs(net))?;
    events.emit(Event::Code { code: code.to_string(), made_up });
    events.emit(Event::Searching);

    let mut out = Outgoing::new(chunk_size, options.compression, source);
    // Ticks with every frame the receiver sends: "taken" only for a live session.
    let heard = out.heard();
    // Shared with `refuse_others`, which reads it while `serve` sets it.
    let started: OnceLock<Instant> = OnceLock::new();
    // After a lost connection: the receiver that has the data so far.
    let mut pinned: Option<libp2p::PeerId> = None;
    let mut transport: Option<Transport>;
    // `--timeout`: until a receiver authenticates; a person at its prompt is not timed.
    let deadline = net.timeout.map(|t| (tokio::time::Instant::now() + t, t));
    loop {
        let timeout = match started.get() {
            None => {
                deadline.map(|(at, after)| (at, Error::TimedOut { peer: Role::Receiver, after }))
            }
            Some(_) => Some((
                tokio::time::Instant::now() + net.reconnect_timeout,
                Error::ReconnectTimeout(net.reconnect_timeout.as_secs()),
            )),
        };
        // A receiver gets the offer behind the handshake's reply, a round trip sooner,
        // when the handshake can measure it without us (`Outgoing::early_offer`).
        listener.early().set(out.early_offer().await?);
        let session = next_session(&mut listener, timeout, &cancel).await?;
        let peer = session.peer();
        transport = node.remote_addr(peer).await.ok().flatten().map(|a| Transport::of(&a));
        tracing::info!(%peer, transport = %transport.map_or("unknown", Transport::as_str), "authenticated");
        let served = tokio::select! {
            r = serve(&mut out, session, (&started, pinned), &events, &cancel) => r?,
            // Once a file's or folder's data went to `peer`, no one else can ever be
            // served: told so. A stream's newcomer waits for the verdict (see above).
            () = listener.refuse_others(|| started.get().filter(|_| !stream).map(|_| peer), &heard) => {
                unreachable!("refuse_others never returns")
            }
        };
        // Asked again at the end: the session's stream can reach us before the node has
        // seen its connection come up (the stream is handed over from the connection's
        // own task), and by now the receiver has closed a QUIC connection beside a TCP
        // one (see node::EventLoop::settle). After a loss there is none: keep the last.
        if let Ok(Some(addr)) = node.remote_addr(peer).await {
            transport = Some(Transport::of(&addr));
        }
        match served {
            Ending::Done => break,
            Ending::Refused => events.emit(Event::Searching),
            Ending::Lost => {
                pinned = Some(peer);
                out.stats.reconnects += 1;
                events.emit(Event::ConnectionLost);
            }
        }
    }
    let report = finished(out, &started, transport, &events);
    Ok(report)
}

/// The next receiver that proves the code, by the deadline when there is one (with
/// the error to give at it).
async fn next_session(
    listener: &mut Listener,
    timeout: Option<(tokio::time::Instant, Error)>,
    cancel: &CancellationToken,
) -> Result<Session<libp2p::Stream>, Error> {
    let waiting = listener.next_session();
    tokio::select! {
        () = cancel.cancelled() => Err(Error::Cancelled),
        s = async {
            match timeout {
                Some((at, late)) => tokio::time::timeout_at(at, waiting).await.unwrap_or(Err(late)),
                None => waiting.await,
            }
        } => s,
    }
}

/// Options [`send`] refuses before anything starts.
fn check(options: &SendOptions) -> Result<(), Error> {
    let chunk_size = options.chunk_size;
    if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(Error::InvalidOptions(format!(
            "chunk size must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"
        )));
    }
    if options.code.is_none() && options.words < crate::code::MIN_WORDS {
        return Err(Error::InvalidOptions(format!(
            "a code needs at least {} words",
            crate::code::MIN_WORDS
        )));
    }
    Ok(())
}

/// The sender's report of a transfer that ended well, also emitted as
/// [`Event::Finished`]: one send and each receiver of a `--many` send end alike.
pub(super) fn finished(
    out: Outgoing,
    started: &OnceLock<Instant>,
    transport: Option<Transport>,
    events: &Events,
) -> Report {
    let report = Report {
        role: Role::Sender,
        bytes: out.bytes_read,
        wire: out.stats.sent,
        chunks: out.read,
        elapsed: started.get().copied().map_or(Duration::ZERO, |t| t.elapsed()),
        stats: out.stats,
        written: Vec::new(),
        transport,
    };
    events.emit(Event::Finished(report.clone()));
    report
}

/// One session: the offer, the receiver's answer (accept, or where it resumes), and
/// the data phase.
pub(super) async fn serve<S>(
    out: &mut Outgoing,
    mut session: Session<S>,
    (started, pinned): (&OnceLock<Instant>, Option<libp2p::PeerId>),
    events: &Events,
    cancel: &CancellationToken,
) -> Result<Ending, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Sent behind the handshake's reply already (`Listener::early`, set from `out`
    // just before), or now.
    if let Some(sent) = session.take_offered() {
        tracing::debug!("the offer went behind the handshake's reply");
        out.adopt(sent);
    } else {
        let offer = measured(out, &mut session, cancel).await?;
        session.send(&Control::Offer(offer)).await?;
    }
    let first = started.get().is_none();
    if first {
        events.emit(Event::AwaitingAccept);
    }
    let from = match answer(&mut session, first, events, cancel).await? {
        Ok(from) => from,
        Err(ending) => return Ok(ending),
    };
    let stream = out.offered().is_some_and(|o| o.kind == crate::message::Kind::Stream);
    if let Some(turned_away) = turn_away(&mut session, pinned, (stream, out.bytes_read)).await {
        return turned_away;
    }
    // Catching up on a rerun reads the whole prefix: it too must stop when told.
    let positioned = tokio::select! {
        r = out.position(&from, &mut session) => r,
        () = cancel.cancelled() => Err(Error::Cancelled),
    };
    if let Err(e) = positioned {
        let last = match e {
            Error::Cancelled => Control::Cancel,
            ref e => Control::Error(crate::error::last_word(e)),
        };
        session.say_last(&last, LINGER).await;
        return Err(e);
    }
    if first {
        let _ = started.set(Instant::now());
        let total = out.offered().and_then(|o| o.size);
        events.emit(Event::Started { total, done: out.bytes_read });
    } else {
        events.emit(Event::Reconnected);
    }
    out.run(session, events, cancel).await
}

/// The offer, measured (once) while keepalives tell the receiver that we are still
/// here: a large tree takes a while to walk, and the receiver waits for the offer only
/// so long.
async fn measured<S>(
    out: &mut Outgoing,
    session: &mut Session<S>,
    cancel: &CancellationToken,
) -> Result<crate::message::Offer, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let measuring = out.offer();
    tokio::pin!(measuring);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        tokio::select! {
            offer = &mut measuring => return Ok(offer?.clone()),
            _ = tick.tick() => session.send(&Control::Keepalive).await?,
            () = cancel.cancelled() => {
                session.say_last(&Control::Cancel, LINGER).await;
                return Err(Error::Cancelled);
            }
        }
    }
}

/// The receiver's answer to the offer: where the data starts (`Accept` is the start,
/// `Resume` where it stands), or how this session ends without data.
async fn answer<S>(
    session: &mut Session<S>,
    first: bool,
    events: &Events,
    cancel: &CancellationToken,
) -> Result<Result<Resume, Ending>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A first answer may wait for a person; after a reconnection the receiver answers
    // at once, and silence means it died meanwhile. Meanwhile we say nothing but our
    // last word: the receiver watches for it while its user is asked, and takes any
    // message but a keepalive for a protocol error (`receive::consented`).
    let reply = tokio::select! {
        r = session.recv_within(if first { None } else { Some(crate::session::DEAD_AFTER) }) => r,
        () = cancel.cancelled() => {
            session.say_last(&Control::Cancel, LINGER).await;
            return Err(Error::Cancelled);
        }
    };
    match reply {
        Ok(Control::Accept) => Ok(Ok(Resume { chunks: 0, root: RootHash::default().finish() })),
        Ok(Control::Resume(r)) => Ok(Ok(r)),
        Ok(Control::Decline(reason)) => Err(declined(reason)),
        Ok(Control::Refuse(reason)) => {
            // After a lost connection this is a rerun receiver going to come back under
            // the identity it kept with its part file: nothing to tell the user. Before
            // one, the same words say that a transfer begun earlier resumes (issue 15,
            // item 7): not a refusal.
            if first && reason == super::receive::REIDENTIFY {
                events.emit(Event::ResumingEarlier);
            } else if first {
                events.emit(Event::Refused { reason });
            }
            Ok(Err(Ending::Refused))
        }
        Ok(other) => Err(unexpected(&other, "Accept")),
        Err(SessionError::Cancelled) => Err(Error::PeerCancelled(Role::Receiver)),
        Err(e) if !first && e.is_transient() => Ok(Err(Ending::Lost)),
        Err(e) if e.is_transient() => Err(Error::PeerGone("before accepting")),
        Err(e) => Err(e.into()),
    }
}

/// Once a receiver lost its connection, the rest goes only to its peer id: the same
/// process, or a rerun of it, which reconnects under the identity it kept with its
/// part file (see `crate::resume`). Anyone else who knows the code is turned away,
/// whatever it claims to hold, and the sender keeps waiting.
///
/// A stream is the exception (issue 15, item 2): its receiver wrote what it got to
/// its output and kept no identity to come back under (a rerun with `-o` leaves
/// with `Refuse` and comes back as the pinned peer), so a newcomer that accepts
/// means the first receiver is gone for good, and what it took cannot be read again.
/// Both sides stop at once and say so, instead of the sender waiting out its
/// reconnect timeout.
async fn turn_away<S>(
    session: &mut Session<S>,
    pinned: Option<libp2p::PeerId>,
    (stream, delivered): (bool, u64),
) -> Option<Result<Ending, Error>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if pinned.is_none_or(|p| p == session.peer()) {
        return None;
    }
    let why = if stream { STREAM_TAKEN } else { TAKEN };
    session.say_last(&Control::Error(why.into()), LINGER).await;
    if stream {
        return Some(Err(Error::StreamLost { delivered }));
    }
    Some(Ok(Ending::Refused))
}

/// What a newcomer is told when a stream it asks for went partly to another receiver
/// that is gone (issue 15, item 2).
pub(crate) const STREAM_TAKEN: &str =
    "this stream was already partly delivered to another receiver and cannot be restarted";

/// What a newcomer is told after a lost connection, while the sender waits for the
/// receiver that has the data so far.
const TAKEN: &str = "another receiver already took this transfer; the sender waits for it";

/// The receiver's `Decline`, as the sender shows it: a pcp receiver says only "the
/// receiver declined"; any other reason is the peer's own text, so it comes after that
/// phrase (sanitized and cut short by [`Error::Declined`]'s display), never as a line
/// that could pass for one of pcp's own.
fn declined(reason: String) -> Error {
    const PLAIN: &str = "the receiver declined";
    if reason == PLAIN {
        Error::Declined(reason)
    } else {
        Error::Declined(format!("{PLAIN}: {reason}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_receiver_s_own_decline_text_follows_pcp_s_phrase() {
        let plain = super::declined("the receiver declined".into());
        assert_eq!(plain.to_string(), "the receiver declined");
        let own = super::declined("pcp: error: disk full\x1b[2K".into());
        assert!(
            own.to_string().starts_with("the receiver declined: pcp: error: disk full"),
            "{own}"
        );
        assert!(!own.to_string().contains('\x1b'), "{own:?}");
    }
}
