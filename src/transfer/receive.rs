//! [`receive`]: find the sender, authenticate, ask for consent, and take in verified
//! chunks; after a lost connection, find the sender again and resume; with a file or
//! directory destination, resume across runs from the part file and its manifest (see
//! [`crate::resume`]).
//!
//! A reconnection starts a fresh libp2p node, so no stream can land on the dead
//! connection, runs the PAKE again (fresh keys and counters) and answers the sender's
//! offer with `Resume` instead of asking again. It is accepted only for the same offer.
//!
//! # What an earlier run kept, and consent
//! Whether a part file (with its manifest and kept identity) is here for this offer is
//! decided only after the user accepted the offer: before that, what the sender hears
//! (a refusal for an offer that cannot be written here, a decline, or nothing while the
//! prompt waits) MUST NOT depend on what earlier runs kept, so that a sender cannot probe
//! which kept transfers exist before the prompt. After consent the receiver answers
//! `Accept`, or `Resume` with the prefix it holds; or, once per run at most, it leaves to
//! come back under the identity kept with the part file (a sender still running takes
//! the rest only from that peer id), and then takes the same offer without asking again.
//! A kept identity that is not ours ([`crate::fsx::open_ours`]) is refused with an error
//! naming it: it never becomes the receiver's identity.
//!
//! While the user is asked, the sender says nothing but keepalives and a last word
//! (`Cancel`, an `Error`), or goes: the receiver watches the session meanwhile
//! (reading nothing ahead but a byte the next read gets) and ends the question when it
//! hears either, so that nobody answers an offer that is gone.

use std::io;
use std::time::{Duration, Instant};

use libp2p::Stream;
use tokio_util::sync::CancellationToken;

use super::incoming::{Ending, Incoming};
use super::rendezvous::find_sender;
use super::{LINGER, node_config, unexpected};
use crate::error::Error;
use crate::event::{Event, Events, OfferInfo, OfferKind, Report, Role, Stats, Transport};
use crate::message::{Control, Kind, Offer, Resume};
use crate::node::Node;
use crate::options::{Destination, ReceiveOptions};
use crate::pipeline::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, PipelineError};
use crate::resume::{self, Prefix};
use crate::session::{Session, SessionError};
use crate::sink::{Sink, SinkError, Target};

/// Receives what the sender with `options.code` offers.
///
/// Events go to `on_event`; once the offer is known, `consent` is called on a blocking
/// thread and decides (`Ok(true)` accepts). A sender that cancels, fails or goes while
/// `consent` runs ends the receive at once with that error ([`Error::PeerCancelled`],
/// its error message, [`Error::PeerGone`]; any message but a keepalive is a protocol
/// error): the caller's question is moot, and its answer, if it comes, is dropped.
/// The callback itself runs on until it returns: a tokio runtime waits for it when it
/// shuts down, unless shut down with `shutdown_background` or `shutdown_timeout` (as
/// the `pcp` binary does, whose question reads the terminal).
///
/// `cancel` stops the transfer, telling the sender; what arrived stays in the part
/// file when the destination keeps one (an [`Event::Kept`] says where), and the result
/// is then [`Error::Cancelled`].
///
/// # Errors
/// A wrong code, a refused or unsafe offer, transfer failures, a cancelled sender, and
/// the reconnect timeout running out.
pub async fn receive(
    options: ReceiveOptions,
    on_event: impl Fn(Event) + Send + Sync + 'static,
    consent: impl FnOnce(&OfferInfo) -> io::Result<bool> + Send + 'static,
    cancel: CancellationToken,
) -> Result<Report, Error> {
    let events = Events::new(on_event);
    check_destination(&options)?;
    let ReceiveOptions { code, destination, force, peers, network, text } = options;
    // One identity for every reconnection: the sender takes the rest of a transfer
    // only from the receiver that started it. A rerun that resumes a part file takes
    // that run's identity over (see `first_contact`).
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    // `--timeout`: until the sender is met; the prompt and what follows are not timed.
    let deadline = network.timeout.map(|t| (tokio::time::Instant::now() + t, t));
    let search = Search { code, peers, network, keypair, deadline };
    let mut run = Run {
        search,
        force,
        text,
        first: Some((destination, Consent::Ask(consent))),
        reidentified: false,
    };
    let mut state: Option<Incoming> = None;
    let mut started = Instant::now();
    let mut transport = None;
    let result = async {
        loop {
            // The node lives as long as this round: dropping it closes the connection.
            let (_node, met) = meet(&run.search, state.is_some(), &events, &cancel).await?;
            let (session, offer, addr) = match met {
                Met::Offer(so) => *so,
                Met::Lost => continue,
            };
            transport = addr.as_ref().map(Transport::of);
            tracing::info!(
                transport = %transport.map_or("unknown", Transport::as_str),
                "the sender's offer arrived"
            );
            let session = if let Some(inc) = &state {
                let session = resume_with(inc, session, &offer).await?;
                events.emit(Event::Reconnected);
                session
            } else {
                let Some((inc, s)) = run.start(session, (offer, addr), &events, &cancel).await?
                else {
                    continue;
                };
                started = Instant::now();
                events.emit(Event::Started { total: inc.offer.size, done: inc.bytes });
                state = Some(inc);
                s
            };
            let inc = state.as_mut().expect("set above");
            match inc.run(session, &events, &cancel).await? {
                Ending::End => return Ok(()),
                Ending::Lost => {
                    inc.stats.reconnects += 1;
                    events.emit(Event::ConnectionLost);
                }
            }
        }
    }
    .await;
    finish(result, state, (started, transport), &events).await
}

/// What can be refused before looking for the sender: a file that exists (without
/// force), a directory that is not one.
fn check_destination(options: &ReceiveOptions) -> Result<(), Error> {
    match &options.destination {
        Destination::File(o) if !options.force && o.symlink_metadata().is_ok() => {
            Err(SinkError::Exists(o.clone()).into())
        }
        Destination::Directory(d) if !d.is_dir() => Err(Error::InvalidOptions(format!(
            "{} is not a directory",
            crate::term::sanitize(&d.display().to_string())
        ))),
        _ => Ok(()),
    }
}

/// A receive until its transfer starts: how to find the sender, and the destination
/// and consent for the first offer.
struct Run<C> {
    search: Search,
    force: bool,
    /// Where text goes when the destination is a directory, if the caller said.
    text: Option<Box<dyn io::Write + Send>>,
    /// Taken by the first offer; handed back when the receiver re-identifies.
    first: Option<(Destination, Consent<C>)>,
    /// A run takes a kept identity over once at most.
    reidentified: bool,
}

impl<C> Run<C>
where
    C: FnOnce(&OfferInfo) -> io::Result<bool> + Send + 'static,
{
    /// The first offer: the transfer and its session, or `None` when the receiver
    /// leaves to meet the sender again under the identity kept with a part file.
    async fn start(
        &mut self,
        session: Session<Stream>,
        (offer, addr): (Offer, Option<libp2p::Multiaddr>),
        events: &Events,
        cancel: &CancellationToken,
    ) -> Result<Option<(Incoming, Session<Stream>)>, Error> {
        let (dest, consent) = self.first.take().expect("the first offer has its destination");
        let dest = text_destination(dest, &offer, &mut self.text);
        let contact = first_contact(
            session,
            (offer, addr),
            (dest, consent),
            (self.force, &self.search.keypair, !self.reidentified),
            events,
            cancel,
        )
        .await?;
        match contact {
            Contact::Started(started) => Ok(Some(*started)),
            Contact::Reidentify(keypair, again) => {
                tracing::info!(
                    peer = %keypair.public().to_peer_id(),
                    "resuming under the identity kept with the part file"
                );
                self.reidentified = true;
                self.search.keypair = *keypair;
                self.first = Some(again);
                Ok(None)
            }
        }
    }
}

/// Where an offer goes: text offered to a directory goes to the caller's text writer,
/// when it gave one; everything else where the caller said.
fn text_destination(
    dest: Destination,
    offer: &Offer,
    text: &mut Option<Box<dyn io::Write + Send>>,
) -> Destination {
    match dest {
        Destination::Directory(dir) if offer.kind == Kind::Text => {
            text.take().map_or(Destination::Directory(dir), Destination::Writer)
        }
        other => other,
    }
}

/// What finding the sender again needs.
struct Search {
    code: crate::code::Code,
    peers: Vec<libp2p::Multiaddr>,
    network: crate::options::NetworkOptions,
    keypair: libp2p::identity::Keypair,
    /// When to give up finding the sender the first time, and after how long.
    deadline: Option<(tokio::time::Instant, Duration)>,
}

/// What one round of rendezvous brought.
enum Met {
    /// A session and the sender's offer on it.
    Offer(Box<(Session<Stream>, Offer, Option<libp2p::Multiaddr>)>),
    /// The connection died right after the PAKE (only while resuming).
    Lost,
}

/// Finds the sender (within the reconnect timeout when resuming) and reads its offer;
/// the node carries the session and MUST outlive it.
async fn meet(
    options: &Search,
    resuming: bool,
    events: &Events,
    cancel: &CancellationToken,
) -> Result<(Node, Met), Error> {
    let net = &options.network;
    let mut config = node_config(net, Duration::from_secs(3), &options.code, false);
    config.keypair = Some(options.keypair.clone());
    let (node, found) = Node::start(config)?;
    for addr in &options.peers {
        node.dial(addr.clone()).await?;
    }
    events.emit(Event::Searching);
    let search = find_sender(&node, found, &options.code, events, super::slot_secs(net));
    let mut session = tokio::select! {
        () = cancel.cancelled() => return Err(Error::Cancelled),
        s = async {
            if resuming {
                tokio::time::timeout(net.reconnect_timeout, search)
                    .await
                    .unwrap_or(Err(Error::ReconnectTimeout(net.reconnect_timeout.as_secs())))
            } else if let Some((at, after)) = options.deadline {
                tokio::time::timeout_at(at, search)
                    .await
                    .unwrap_or(Err(Error::TimedOut { peer: crate::event::Role::Sender, after }))
            } else {
                search.await
            }
        } => s?,
    };
    tracing::info!(peer = %session.peer(), "authenticated");
    // The sender offers right after the PAKE; silence means it died meanwhile.
    let addr = node.remote_addr(session.peer()).await.ok().flatten();
    // Keepalives come while the sender measures what it offers (a large tree takes a
    // while to walk); they may go on as long as the user lets them.
    let first = tokio::select! {
        () = cancel.cancelled() => return Err(Error::Cancelled),
        first = async {
            loop {
                match session.recv().await {
                    Ok(Control::Keepalive) => {}
                    other => return other,
                }
            }
        } => first,
    };
    let met = match first {
        Ok(Control::Offer(o)) => Met::Offer(Box::new((session, o, addr))),
        Ok(other) => return Err(unexpected(&other, "Offer")),
        Err(SessionError::Cancelled) => return Err(Error::PeerCancelled(Role::Sender)),
        Err(e) if resuming && e.is_transient() => Met::Lost,
        Err(e) => return Err(e.into()),
    };
    Ok((node, met))
}

/// After a reconnection: the same offer, answered with where we stand.
async fn resume_with(
    inc: &Incoming,
    mut session: Session<Stream>,
    offer: &Offer,
) -> Result<Session<Stream>, Error> {
    if !resume::same_transfer(&inc.offer, offer) {
        let reason = "the sender offers something else than before".to_owned();
        session.say_last(&Control::Decline(reason), LINGER).await;
        return Err(Error::OfferChanged);
    }
    let at = Resume { chunks: inc.count, root: inc.root.finish() };
    session.send(&Control::Resume(at)).await?;
    Ok(session)
}

/// The user's answer to the first offer: not asked yet, or given for this offer (a run
/// asks once; after re-identifying it meets the sender again with the answer given).
enum Consent<C> {
    /// Ask with this callback when the offer arrives.
    Ask(C),
    /// The user accepted this offer.
    Given(Offer),
}

/// How a first contact went.
enum Contact<S, C> {
    /// The transfer started.
    Started(Box<(Incoming, Session<S>)>),
    /// A part file to resume was kept by a run under another identity: meet the sender
    /// again as that run's peer id (a sender still running takes the rest only from it),
    /// with the destination and the consent given handed back.
    Reidentify(Box<libp2p::identity::Keypair>, (Destination, Consent<C>)),
}

/// What the receiver tells a sender it leaves to come back under its earlier identity.
pub(super) const REIDENTIFY: &str = "the receiver reconnects as the run that holds the data";

/// What the receiver tells a sender when what it kept here cannot be resumed from.
const CANNOT_RESUME: &str = "the receiver cannot resume from the data it holds";

/// The first session's offer: decide where it goes, ask for consent (unless given),
/// then, and only then, look at what an earlier run kept: come back under its identity
/// (once per run at most), resume from its part file if one fits, start the sink, and
/// answer (`Accept`, or `Resume` when a part file holds a prefix). See the module docs.
async fn first_contact<S, C>(
    mut session: Session<S>,
    (offer, addr): (Offer, Option<libp2p::Multiaddr>),
    (dest, consent): (Destination, Consent<C>),
    (force, keypair, may_reidentify): (bool, &libp2p::identity::Keypair, bool),
    events: &Events,
    cancel: &CancellationToken,
) -> Result<Contact<S, C>, Error>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
    C: FnOnce(&OfferInfo) -> io::Result<bool> + Send + 'static,
{
    // Handed back if the receiver re-identifies (a writer keeps nothing to resume).
    let again = match &dest {
        Destination::Writer(_) => None,
        Destination::File(p) => Some(Destination::File(p.clone())),
        Destination::Directory(d) => Some(Destination::Directory(d.clone())),
    };
    let target = match prepare(&offer, dest, force) {
        Ok(t) => t,
        Err((e, reason)) => {
            session.say_last(&refusal(&e, reason), LINGER).await;
            return Err(e);
        }
    };
    consented(&mut session, (&offer, addr), consent, events, cancel).await?;
    // Consent is given: from here on, what an earlier run kept may show.
    let part = target.resume_part();
    let kept = part.as_ref().filter(|p| !force && p.is_there());
    if let (Some(kept), true) = (kept, may_reidentify) {
        let saved = refused_on(&mut session, CANNOT_RESUME, kept.load_identity()).await?;
        if let (Some(saved), Some(dest)) = (saved, again)
            && saved.public() != keypair.public()
        {
            session.say_last(&Control::Refuse(REIDENTIFY.into()), LINGER).await;
            return Ok(Contact::Reidentify(Box::new(saved), (dest, Consent::Given(offer))));
        }
    }
    // The journal beside a part file is trusted only under the identity kept with it,
    // which is this run's once it has re-identified.
    let key = resume::JournalKey::of(keypair);
    let prefix = match kept {
        Some(kept) => {
            let loaded = kept.load(&offer, &key);
            let reason = match &loaded {
                Err(resume::ResumeError::OtherTransfer(_)) => {
                    "the receiver holds part of another transfer"
                }
                _ => CANNOT_RESUME,
            };
            refused_on(&mut session, reason, loaded).await?
        }
        None => Prefix::default(),
    };
    if prefix.chunks() > 0 {
        events.emit(Event::Resuming { bytes: prefix.bytes });
    }
    let journal = part.is_some().then_some((&offer, &prefix, &key));
    let started = Sink::start(target, force, journal).and_then(|sink| {
        // Kept with the part file, so that a rerun comes back as this peer id.
        if let Some(part) = &part {
            part.save_identity(keypair)?;
        }
        Ok(sink)
    });
    let sink = refused_on(&mut session, "the receiver cannot write its output", started).await?;
    let answer = if prefix.chunks() > 0 {
        Control::Resume(Resume { chunks: prefix.chunks(), root: prefix.root().finish() })
    } else {
        Control::Accept
    };
    session.send(&answer).await?;
    Ok(Contact::Started(Box::new((incoming(sink, &prefix, offer), session))))
}

/// A step's result; on failure the sender is told `reason` as the receiver's refusal.
async fn refused_on<S, T, E>(
    session: &mut Session<S>,
    reason: &str,
    result: Result<T, E>,
) -> Result<T, Error>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
    Error: From<E>,
{
    match result {
        Ok(t) => Ok(t),
        Err(e) => {
            session.say_last(&Control::Refuse(reason.into()), LINGER).await;
            Err(e.into())
        }
    }
}

/// Asks the user about the offer, or checks it is the one the user already accepted;
/// a no (or a question that could not be asked) is told to the sender.
async fn consented<S, C>(
    session: &mut Session<S>,
    (offer, addr): (&Offer, Option<libp2p::Multiaddr>),
    consent: Consent<C>,
    events: &Events,
    cancel: &CancellationToken,
) -> Result<(), Error>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
    C: FnOnce(&OfferInfo) -> io::Result<bool> + Send + 'static,
{
    let consent = match consent {
        Consent::Ask(consent) => consent,
        // Only what the user accepted, byte for byte (the name included).
        Consent::Given(accepted) if accepted == *offer => return Ok(()),
        Consent::Given(_) => {
            let reason = "the sender offers something else than before".to_owned();
            session.say_last(&Control::Decline(reason), LINGER).await;
            return Err(Error::OfferChanged);
        }
    };
    let info = offer_info(offer, session.peer(), addr);
    events.emit(Event::Offer(info.clone()));
    let mut asked = tokio::task::spawn_blocking(move || consent(&info));
    let answer = loop {
        // `None`: our caller cancelled.
        let heard = tokio::select! {
            a = &mut asked => break a.map_err(PipelineError::Task)?,
            () = cancel.cancelled() => None,
            // The sender says nothing until it has the answer (a keepalive at most)
            // but its last word, or its end: then the question is moot, and left
            // unanswered (the callback's answer, if it ever comes, is dropped) rather
            // than asked of a sender that is gone. The frame is read whole, as an
            // honest sender writes it; one that stalls part way holds the answer up
            // to the frame deadline, not a cancel.
            () = session.stirred() => tokio::select! {
                heard = session.recv() => Some(heard),
                () = cancel.cancelled() => None,
            },
        };
        match heard {
            None => {
                session.say_last(&Control::Cancel, LINGER).await;
                return Err(Error::Cancelled);
            }
            Some(Ok(Control::Keepalive)) => {}
            Some(heard) => return Err(left_while_asked(heard)),
        }
    };
    match answer {
        Ok(true) => Ok(()),
        Ok(false) => {
            let declined = Control::Decline("the receiver declined".into());
            session.say_last(&declined, LINGER).await;
            Err(Error::Declined("declined".into()))
        }
        Err(e) => {
            let reason = "the receiver could not be asked".into();
            session.say_last(&Control::Refuse(reason), LINGER).await;
            Err(Error::Consent(e))
        }
    }
}

/// Why a sender spoke while the user was asked: a `Cancel`, an `Error`, its end, or a
/// message out of turn.
fn left_while_asked(heard: Result<Control, SessionError>) -> Error {
    match heard {
        Err(SessionError::Cancelled) => Error::PeerCancelled(Role::Sender),
        Err(e) if e.is_transient() => Error::PeerGone("before the offer was answered"),
        Err(e) => e.into(),
        Ok(other) => unexpected(&other, "no message"),
    }
}

/// A transfer that starts (or resumes at `prefix`) into `sink`.
fn incoming(sink: Sink, prefix: &Prefix, offer: Offer) -> Incoming {
    Incoming {
        part: sink.kept().cloned(),
        sink: Some(sink),
        written: None,
        count: prefix.chunks(),
        bytes: prefix.bytes,
        root: prefix.root(),
        wire: 0,
        // A resumed prefix holds whole chunks, unless its last one was the last.
        short: !prefix.bytes.is_multiple_of(u64::from(offer.chunk_size)),
        stats: Stats { skipped: prefix.bytes, ..Stats::default() },
        offer,
    }
}

/// How the receiver tells the sender it will not take the offer: a malformed offer is
/// declined (the sender is at fault); a local reason (the name exists, nowhere to put
/// a stream) is a refusal the receiver may retry with other options, with the same code.
fn refusal(e: &Error, reason: &str) -> Control {
    match e {
        Error::Session(SessionError::Message(_)) => Control::Decline(reason.into()),
        _ => Control::Refuse(reason.into()),
    }
}

/// Everything the receiver can refuse before asking, it refuses before asking, and tells
/// the sender why in words meant for the sender's user. Nothing here depends on what an
/// earlier run kept: the part file's name is never a conflict (it is what a resume
/// continues from, decided after consent).
fn prepare(offer: &Offer, dest: Destination, force: bool) -> Result<Target, (Error, &'static str)> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&offer.chunk_size) {
        let e = crate::message::MessageError::Malformed { what: "Offer" };
        return Err((e.into(), "the offer was malformed"));
    }
    // The size is what the user accepts, and the bound the data is held to: a file or
    // a folder without one would be a transfer of any length (issue 14, item 3).
    if offer.kind != Kind::Stream && offer.size.is_none() {
        let e = crate::message::MessageError::Malformed { what: "Offer" };
        return Err((e.into(), "the offer was malformed: a file or folder without its size"));
    }
    let target = Target::for_offer(dest, offer)
        .map_err(|e| (e.into(), "the receiver cannot write this kind of offer where it is"))?;
    let taken = if force { Vec::new() } else { target.taken() };
    if let Some(first) = taken.into_iter().next() {
        let e = SinkError::Exists(first).into();
        return Err((e, "the receiver already has something by that name"));
    }
    Ok(target)
}

/// The offer as the caller sees it.
fn offer_info(offer: &Offer, peer: libp2p::PeerId, addr: Option<libp2p::Multiaddr>) -> OfferInfo {
    OfferInfo {
        kind: match offer.kind {
            Kind::Stream => OfferKind::Stream,
            Kind::File => OfferKind::File,
            Kind::Archive => OfferKind::Folder,
            Kind::Text => OfferKind::Text,
        },
        name: offer.name.clone(),
        size: offer.size,
        entries: offer.entries.clone(),
        kinds: offer
            .kinds
            .iter()
            .map(|k| match k {
                crate::message::TopKind::File => crate::event::EntryKind::File,
                crate::message::TopKind::Folder => crate::event::EntryKind::Folder,
            })
            .collect(),
        files: offer.files,
        peer,
        addr,
    }
}

/// Ends a run: the report on success; on failure the sink is aborted (waiting for its
/// clean-up) and what stays for a later resume is reported.
async fn finish(
    result: Result<(), Error>,
    state: Option<Incoming>,
    (started, transport): (Instant, Option<Transport>),
    events: &Events,
) -> Result<Report, Error> {
    let Some(mut inc) = state else {
        return result.map(|()| unreachable!("a transfer that succeeded had started"));
    };
    if let Err(e) = result {
        if let Some(sink) = inc.sink.take() {
            sink.abort().await;
        }
        // The sink is gone either way now (aborted here, or consumed by a commit that
        // failed): whatever part file is still there stays for a rerun, and is said.
        match inc.part.take().filter(resume::Part::is_there) {
            // Nothing verified arrived: a part file would only be litter.
            Some(part) if inc.bytes == 0 => part.discard(),
            Some(part) => {
                events.emit(Event::Kept { path: part.path().to_owned(), bytes: inc.bytes })
            }
            None => {}
        }
        return Err(e);
    }
    tracing::debug!(chunks = inc.count, bytes = inc.bytes, "verified");
    let written = inc.written.take().unwrap_or_default().paths;
    // Issue 15, item 11: after a success nothing of this transfer may remain, not even
    // what an earlier run of it left under another staging name.
    if inc.offer.kind == Kind::Archive
        && let Some(staging) = &inc.part
    {
        for path in crate::leftovers::remove_earlier(staging, &inc.offer) {
            tracing::debug!(path = %path.display(), "removed an earlier run's leftover");
        }
    }
    let report = Report {
        role: Role::Receiver,
        bytes: inc.bytes,
        wire: inc.wire,
        chunks: inc.count,
        elapsed: started.elapsed(),
        stats: inc.stats,
        written: written.clone(),
        transport,
    };
    events.emit(Event::Finished(report.clone()));
    for path in written {
        events.emit(Event::Written { path });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::pipeline::RootHash;

    fn part_path(path: &std::path::Path) -> std::path::PathBuf {
        resume::Part::for_file(path).path().to_owned()
    }

    /// Issue 14, item 3: the size is the bound, so a file or folder offer must carry
    /// one; a stream has none to give.
    #[test]
    fn a_file_or_folder_offer_without_a_size_is_refused_before_asking() {
        let kinds =
            [(Kind::File, true), (Kind::Archive, true), (Kind::Text, true), (Kind::Stream, false)];
        for (kind, refused) in kinds {
            let offer = Offer {
                kind,
                name: "top".into(),
                size: None,
                entries: vec!["top".into()],
                chunk_size: MIN_CHUNK_SIZE,
                files: None,
                kinds: vec![crate::message::TopKind::Folder],
            };
            let got = prepare(&offer, Destination::Writer(Box::new(io::sink())), false);
            match got {
                Err((Error::Session(SessionError::Message(_)), reason)) if refused => {
                    assert!(reason.contains("without its size"), "{reason}");
                }
                Ok(_) if !refused => {}
                Err((e, _)) => panic!("{kind:?}: {e}"),
                Ok(_) => panic!("{kind:?} without a size was taken"),
            }
        }
    }

    /// Issue 15: text offered to a directory goes to the caller's text writer, once;
    /// without one it is refused like a stream; a file still goes to the directory.
    #[test]
    fn text_goes_to_the_text_writer() {
        let offer = |kind| Offer {
            kind,
            name: "text".into(),
            size: Some(2),
            entries: Vec::new(),
            chunk_size: MIN_CHUNK_SIZE,
            files: None,
            kinds: Vec::new(),
        };
        let dir = || Destination::Directory(".".into());
        let mut text: Option<Box<dyn io::Write + Send>> = Some(Box::new(io::sink()));
        let d = text_destination(dir(), &offer(Kind::File), &mut text);
        assert!(matches!(d, Destination::Directory(_)) && text.is_some());
        let d = text_destination(dir(), &offer(Kind::Text), &mut text);
        assert!(matches!(d, Destination::Writer(_)) && text.is_none());
        let d = text_destination(dir(), &offer(Kind::Text), &mut text);
        assert!(matches!(d, Destination::Directory(_)));
        assert!(matches!(
            prepare(&offer(Kind::Text), d, false),
            Err((Error::Sink(SinkError::Unnamed), _))
        ));
        let d = text_destination(Destination::File("x".into()), &offer(Kind::Text), &mut None);
        assert!(matches!(d, Destination::File(_)));
    }

    type Side = Session<tokio_util::compat::Compat<tokio::io::DuplexStream>>;

    /// An authenticated session pair over a duplex pipe: (sender, receiver).
    async fn sessions() -> (Side, Side) {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (a, b) = tokio::io::duplex(1 << 20);
        let (s_id, r_id) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        let code: crate::code::Code = "bubble-enemy-result-increase".parse().expect("code");
        let at = crate::session::Rendezvous { channel: code.channel(), slot: 300 };
        let (s, r) = tokio::join!(
            Session::accept(a.compat(), &code, |_| true, s_id, r_id),
            Session::connect(b.compat(), &code, at, r_id, s_id)
        );
        (s.expect("sender side"), r.expect("receiver side"))
    }

    fn file_offer() -> Offer {
        Offer {
            kind: Kind::File,
            name: "out".into(),
            size: Some(4 * u64::from(MIN_CHUNK_SIZE)),
            entries: Vec::new(),
            chunk_size: MIN_CHUNK_SIZE,
            files: None,
            kinds: Vec::new(),
        }
    }

    /// What an earlier run of `-o path` keeps: one verified chunk in the part file, its
    /// manifest, and that run's identity, which is returned.
    fn kept_run(path: &std::path::Path) -> libp2p::identity::Keypair {
        let part = part_path(path);
        let chunk = vec![7u8; MIN_CHUNK_SIZE as usize];
        crate::fsx::create_new_private(&part).and_then(|mut f| f.write_all(&chunk)).expect("part");
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mac = resume::JournalKey::of(&key);
        let mut j =
            resume::Journal::create(&part, &file_offer(), &Prefix::default(), &mac).expect("j");
        j.append(blake3::hash(&chunk).as_bytes()).expect("record");
        resume::Part::at(&part).save_identity(&key).expect("identity");
        key
    }

    /// The sender's side of a first contact: offers, and returns what it hears back.
    async fn offer_and_hear(mut s: Side, offer: Offer) -> Control {
        s.send(&Control::Offer(offer)).await.expect("offer");
        s.recv().await.expect("an answer")
    }

    type Asked = Arc<Mutex<u32>>;

    /// A consent callback that counts its calls and answers `yes`.
    fn answering(yes: bool, asked: &Asked) -> impl FnOnce(&OfferInfo) -> io::Result<bool> + use<> {
        let asked = Arc::clone(asked);
        move |_| {
            *asked.lock().expect("lock") += 1;
            Ok(yes)
        }
    }

    /// Runs one first contact of a receiver writing to `-o path` against a sender that
    /// offers `offer`: what the sender heard, and how the contact went.
    async fn contact<C>(
        path: &std::path::Path,
        offer: Offer,
        consent: Consent<C>,
        (keypair, may_reidentify): (&libp2p::identity::Keypair, bool),
    ) -> (Control, Result<Contact<tokio_util::compat::Compat<tokio::io::DuplexStream>, C>, Error>)
    where
        C: FnOnce(&OfferInfo) -> io::Result<bool> + Send + 'static,
    {
        let (s, mut r) = sessions().await;
        let dest = Destination::File(path.to_owned());
        let (none, events) = (CancellationToken::new(), Events::new(|_| {}));
        let receiver = async {
            // As `meet` does: the offer off the wire, then the contact.
            let Ok(Control::Offer(offer)) = r.recv().await else { panic!("an offer") };
            let who = (false, keypair, may_reidentify);
            first_contact(r, (offer, None), (dest, consent), who, &events, &none).await
        };
        let both = async { tokio::join!(offer_and_hear(s, offer), receiver) };
        tokio::time::timeout(Duration::from_secs(20), both).await.expect("in time")
    }

    /// A sender that cancels, or goes, while the user is asked ends the question (a
    /// keepalive does not): the receiver does not wait for an answer that can no longer
    /// matter (the callback, a person who walked away, answers only when the test
    /// ends), and says why.
    #[tokio::test]
    async fn a_sender_that_leaves_while_the_user_is_asked_ends_the_question() {
        for cancels in [true, false] {
            let (mut s, mut r) = sessions().await;
            let (answer, waiting) = std::sync::mpsc::sync_channel::<bool>(1);
            let consent = Consent::Ask(move |_: &OfferInfo| Ok(waiting.recv().unwrap_or(false)));
            let (none, events, offer) =
                (CancellationToken::new(), Events::new(|_| {}), file_offer());
            let sender = async {
                if cancels {
                    // A keepalive first, which does not end the question.
                    s.send(&Control::Keepalive).await.expect("keepalive");
                    s.send(&Control::Cancel).await.expect("cancel");
                }
                drop(s);
            };
            let asked = consented(&mut r, (&offer, None), consent, &events, &none);
            let both = async { tokio::join!(sender, asked) };
            let ((), result) = tokio::time::timeout(Duration::from_secs(20), both)
                .await
                .expect("the question ends without an answer");
            if cancels {
                assert!(matches!(result, Err(Error::PeerCancelled(Role::Sender))), "{result:?}");
            } else {
                assert!(matches!(result, Err(Error::PeerGone(_))), "{result:?}");
            }
            drop(answer);
        }
    }

    /// Issue 14, item 7: before the prompt, a sender hears nothing that depends on what
    /// an earlier run kept here. Declined at the prompt, it hears the same decline
    /// whether or not a part file and an earlier run's identity are there (the old
    /// receiver left at once to come back under the kept identity, unasked).
    #[tokio::test]
    async fn before_consent_a_sender_cannot_tell_whether_a_transfer_was_kept() {
        let mut heard = Vec::new();
        for kept in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("out");
            if kept {
                kept_run(&path);
            }
            let asked = Asked::default();
            let me = libp2p::identity::Keypair::generate_ed25519();
            let consent = Consent::Ask(answering(false, &asked));
            let (said, result) = contact(&path, file_offer(), consent, (&me, true)).await;
            assert_eq!(*asked.lock().expect("lock"), 1, "kept: {kept}: the user was asked");
            assert!(matches!(result, Err(Error::Declined(_))), "kept: {kept}");
            heard.push(said);
        }
        assert_eq!(heard[0], Control::Decline("the receiver declined".into()));
        assert_eq!(heard[0], heard[1], "what the sender heard depends on what was kept");
    }

    /// After consent, the receiver comes back as the run that holds the data, once, and
    /// is not asked again; the sender then hears `Resume` with the kept prefix.
    #[tokio::test]
    async fn a_kept_identity_is_taken_after_consent_once_per_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let earlier = kept_run(&path);
        let me = libp2p::identity::Keypair::generate_ed25519();
        let asked = Asked::default();
        let consent = Consent::Ask(answering(true, &asked));
        let (said, result) = contact(&path, file_offer(), consent, (&me, true)).await;
        assert_eq!(said, Control::Refuse(REIDENTIFY.into()), "only after consent");
        let Ok(Contact::Reidentify(saved, (_, again))) = result else { panic!("re-identifies") };
        assert_eq!(saved.public(), earlier.public());
        assert!(matches!(&again, Consent::Given(o) if *o == file_offer()));

        // The second round: the same offer, under the kept identity, not asked again.
        let (said, result) = contact(&path, file_offer(), again, (&saved, false)).await;
        assert!(matches!(said, Control::Resume(Resume { chunks: 1, .. })), "{said:?}");
        assert!(matches!(result, Ok(Contact::Started(_))));
        assert_eq!(*asked.lock().expect("lock"), 1, "asked once");

        // A second re-identification in one run never happens, whatever the key file
        // says by then: this identity is kept instead.
        let other = libp2p::identity::Keypair::generate_ed25519();
        let given: Consent<fn(&OfferInfo) -> io::Result<bool>> = Consent::Given(file_offer());
        let (said, result) = contact(&path, file_offer(), given, (&other, false)).await;
        assert!(matches!(said, Control::Resume(_)), "{said:?}");
        drop(result);
        let now = resume::Part::for_file(&path).load_identity().expect("ours").expect("a key");
        assert_eq!(now.public(), other.public());

        // Consent given for one offer is not consent for another.
        let mut changed = file_offer();
        changed.name = "other".into();
        let given: Consent<fn(&OfferInfo) -> io::Result<bool>> = Consent::Given(file_offer());
        let (said, result) = contact(&path, changed, given, (&other, false)).await;
        assert!(matches!(said, Control::Decline(_)), "{said:?}");
        assert!(matches!(result, Err(Error::OfferChanged)));
    }

    /// Issue 14, item 7: a key file another user planted, or may write, beside our part
    /// file never becomes the receiver's identity. The receiver stops, after consent,
    /// with an error naming it and the way out, rather than resume under it or quietly
    /// under another.
    #[tokio::test]
    async fn a_planted_key_file_stops_the_resume_with_a_clear_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        kept_run(&path);
        let key = resume::Part::for_file(&path).key();
        let planted = libp2p::identity::Keypair::generate_ed25519();
        std::fs::remove_file(&key).expect("rm");
        std::fs::write(&key, planted.to_protobuf_encoding().expect("encode")).expect("plant");
        let mut cases = vec![("writable by others", 0o666, None)];
        if crate::fsx::as_root("a_planted_key_file_stops_the_resume_with_a_clear_error") {
            cases.push(("owned by uid 65534", 0o600, Some(65534)));
        }
        for (what, mode, owner) in cases {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
            std::os::unix::fs::chown(&key, owner, None).expect("chown");
            let me = libp2p::identity::Keypair::generate_ed25519();
            let asked = Asked::default();
            let consent = Consent::Ask(answering(true, &asked));
            let (said, result) = contact(&path, file_offer(), consent, (&me, true)).await;
            assert_eq!(*asked.lock().expect("lock"), 1, "{what}: asked first");
            assert_eq!(said, Control::Refuse(CANNOT_RESUME.into()), "{what}");
            let Err(e) = result else { panic!("{what}: refused") };
            let shown = crate::error::chain(&e);
            assert!(shown.contains(".pcp-part.key is") && shown.contains(what), "{shown}");
            // The binary's hint (src/cli/hint.rs) keys on this structure.
            assert!(
                matches!(
                    e,
                    crate::Error::Resume(crate::resume::ResumeError::NotOurs(_))
                        | crate::Error::Sink(
                            crate::sink::SinkError::NotOurs(_)
                                | crate::sink::SinkError::Resume(
                                    crate::resume::ResumeError::NotOurs(_)
                                )
                        )
                ),
                "{what}: {e:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_part_file_left_by_a_failed_commit_is_said() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let target = Target::File { path: path.clone(), keep_part: true };
        let mut sink = Sink::start(target, false, None).expect("start");
        let part = sink.kept().cloned();
        sink.write(b"abc".to_vec().into(), [0; 32]).await.expect("write");
        // The name is taken between the check and the commit: the commit fails, having
        // consumed the sink, and the verified part file stays for a rerun.
        std::fs::write(&path, b"mine").expect("write");
        let e = sink.finish().await.expect_err("the name is taken");
        assert!(matches!(e, SinkError::Exists(_)), "{e:?}");
        let inc = Incoming {
            offer: Offer {
                kind: Kind::File,
                name: "out".into(),
                size: Some(3),
                entries: Vec::new(),
                chunk_size: MIN_CHUNK_SIZE,
                files: None,
                kinds: Vec::new(),
            },
            sink: None,
            part,
            written: None,
            count: 1,
            bytes: 3,
            root: RootHash::default(),
            wire: 0,
            short: true,
            stats: Stats::default(),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let events = {
            let seen = Arc::clone(&seen);
            Events::new(move |ev| seen.lock().expect("lock").push(ev))
        };
        let r = finish(Err(e.into()), Some(inc), (Instant::now(), None), &events).await;
        assert!(r.is_err());
        let seen = seen.lock().expect("lock");
        assert!(
            seen.iter().any(
                |ev| matches!(ev, Event::Kept { path: p, bytes: 3 } if *p == part_path(&path))
            ),
            "{seen:?}"
        );
        assert_eq!(std::fs::read(part_path(&path)).expect("kept"), b"abc");
    }
}
