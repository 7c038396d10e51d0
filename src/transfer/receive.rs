//! [`receive`]: find the sender, authenticate, ask for consent, and take in verified
//! chunks; after a lost connection, find the sender again and resume; with a file or
//! directory destination, resume across runs from the part file and its manifest (see
//! [`crate::resume`]).
//!
//! A reconnection starts a fresh libp2p node, so no stream can land on the dead
//! connection, runs the PAKE again (fresh keys and counters) and answers the sender's
//! offer with `Resume` instead of asking again. It is accepted only for the same offer.

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
/// thread and decides (`Ok(true)` accepts). `cancel` stops the transfer, telling the
/// sender; what arrived stays in the part file when the destination keeps one (an
/// [`Event::Kept`] says where), and the result is then [`Error::Cancelled`].
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
    match &options.destination {
        Destination::File(o) if !options.force && o.symlink_metadata().is_ok() => {
            return Err(SinkError::Exists(o.clone()).into());
        }
        Destination::Directory(d) if !d.is_dir() => {
            return Err(Error::InvalidOptions(format!(
                "{} is not a directory",
                crate::term::sanitize(&d.display().to_string())
            )));
        }
        _ => {}
    }
    let ReceiveOptions { code, destination, force, peers, network } = options;
    // One identity for every reconnection: the sender takes the rest of a transfer
    // only from the receiver that started it. A rerun that resumes a part file takes
    // that run's identity over (see `first_contact`).
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let mut search = Search { code, peers, network, keypair };
    let mut state: Option<Incoming> = None;
    let mut first = Some((destination, consent));
    let mut started = Instant::now();
    let mut transport = None;
    let result = async {
        loop {
            // The node lives as long as this round: dropping it closes the connection.
            let (_node, met) = meet(&search, state.is_some(), &events, &cancel).await?;
            let (session, offer, addr) = match met {
                Met::Offer(so) => *so,
                Met::Lost => continue,
            };
            transport = addr.as_ref().map(Transport::of);
            tracing::info!(
                transport = %transport.map_or("unknown", Transport::as_str),
                "the sender's offer arrived"
            );
            let session = match (&mut state, first.take()) {
                (Some(inc), _) => {
                    let session = resume_with(inc, session, &offer).await?;
                    events.emit(Event::Reconnected);
                    session
                }
                (None, Some((dest, consent))) => {
                    let contact = first_contact(
                        session,
                        (offer, addr),
                        (dest, consent),
                        (force, &search.keypair),
                        &events,
                        &cancel,
                    )
                    .await?;
                    let (inc, s) = match contact {
                        Contact::Started(started) => *started,
                        Contact::Reidentify(keypair, again) => {
                            tracing::info!(
                                peer = %keypair.public().to_peer_id(),
                                "resuming under the identity kept with the part file"
                            );
                            search.keypair = *keypair;
                            first = Some(again);
                            continue;
                        }
                    };
                    started = Instant::now();
                    events.emit(Event::Started { total: inc.offer.size, done: inc.bytes });
                    state = Some(inc);
                    s
                }
                (None, None) => unreachable!("the first contact sets the state"),
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

/// What finding the sender again needs.
struct Search {
    code: crate::code::Code,
    peers: Vec<libp2p::Multiaddr>,
    network: crate::options::NetworkOptions,
    keypair: libp2p::identity::Keypair,
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
    let search = find_sender(&node, found, &options.code, events);
    let mut session = tokio::select! {
        () = cancel.cancelled() => return Err(Error::Cancelled),
        s = async {
            if resuming {
                tokio::time::timeout(net.reconnect_timeout, search)
                    .await
                    .unwrap_or(Err(Error::ReconnectTimeout(net.reconnect_timeout.as_secs())))
            } else {
                search.await
            }
        } => s?,
    };
    tracing::info!(peer = %session.peer(), "authenticated");
    // The sender offers right after the PAKE; silence means it died meanwhile.
    let addr = node.remote_addr(session.peer()).await.ok().flatten();
    let met = match session.recv().await {
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

/// How a first contact went.
enum Contact<C> {
    /// The transfer started.
    Started(Box<(Incoming, Session<Stream>)>),
    /// A part file to resume was kept by a run under another identity: meet the sender
    /// again as that run's peer id (a sender still running takes the rest only from it),
    /// with the destination and consent handed back.
    Reidentify(Box<libp2p::identity::Keypair>, (Destination, C)),
}

/// What the receiver tells a sender it leaves to come back under its earlier identity.
const REIDENTIFY: &str = "the receiver reconnects as the run that holds the data";

/// The first session's offer: decide where it goes, resume from a part file if one
/// fits (under the identity kept with it), ask for consent, start the sink, and answer
/// (`Accept`, or `Resume` when a part file holds a prefix).
async fn first_contact<C>(
    mut session: Session<Stream>,
    (offer, addr): (Offer, Option<libp2p::Multiaddr>),
    (dest, consent): (Destination, C),
    (force, keypair): (bool, &libp2p::identity::Keypair),
    events: &Events,
    cancel: &CancellationToken,
) -> Result<Contact<C>, Error>
where
    C: FnOnce(&OfferInfo) -> io::Result<bool> + Send + 'static,
{
    let kept = crate::sink::resume_part_for(&dest, &offer)
        .filter(|part| !force && part.exists())
        .and_then(|part| resume::load_identity(&part))
        .filter(|saved| saved.public() != keypair.public());
    if let Some(saved) = kept {
        session.say_last(&Control::Refuse(REIDENTIFY.into()), LINGER).await;
        return Ok(Contact::Reidentify(Box::new(saved), (dest, consent)));
    }
    let info = offer_info(&offer, session.peer(), addr);
    events.emit(Event::Offer(info.clone()));
    let (target, prefix) = match prepare(&offer, dest, force) {
        Ok(t) => t,
        Err((e, reason)) => {
            session.say_last(&refusal(&e, reason), LINGER).await;
            return Err(e);
        }
    };
    if prefix.chunks() > 0 {
        events.emit(Event::Resuming { bytes: prefix.bytes });
    }
    let asked = tokio::task::spawn_blocking(move || consent(&info));
    let answer = tokio::select! {
        a = asked => a.map_err(|_| PipelineError::Worker)?,
        () = cancel.cancelled() => {
            session.say_last(&Control::Cancel, LINGER).await;
            return Err(Error::Cancelled);
        }
    };
    match answer {
        Ok(true) => {}
        Ok(false) => {
            session.say_last(&Control::Decline("the receiver declined".into()), LINGER).await;
            return Err(Error::Declined("declined".into()));
        }
        Err(e) => {
            let reason = "the receiver could not be asked".into();
            session.say_last(&Control::Refuse(reason), LINGER).await;
            return Err(Error::Consent(e));
        }
    }
    let part = target.resume_part();
    let journal = part.is_some().then_some((&offer, &prefix));
    let started = Sink::start(target, force, journal).and_then(|sink| {
        // Kept with the part file, so that a rerun comes back as this peer id.
        if let Some(part) = &part {
            resume::save_identity(part, keypair)?;
        }
        Ok(sink)
    });
    let sink = match started {
        Ok(sink) => sink,
        Err(e) => {
            let reason = "the receiver cannot write its output".into();
            session.say_last(&Control::Refuse(reason), LINGER).await;
            return Err(e.into());
        }
    };
    let answer = if prefix.chunks() > 0 {
        Control::Resume(Resume { chunks: prefix.chunks(), root: prefix.root().finish() })
    } else {
        Control::Accept
    };
    session.send(&answer).await?;
    let inc = Incoming {
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
    };
    Ok(Contact::Started(Box::new((inc, session))))
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

/// Everything the receiver can refuse, it refuses before asking, and tells the sender
/// why in words meant for the sender's user.
fn prepare(
    offer: &Offer,
    dest: Destination,
    force: bool,
) -> Result<(Target, Prefix), (Error, &'static str)> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&offer.chunk_size) {
        let e = crate::message::MessageError::Malformed { what: "Offer" };
        return Err((e.into(), "the offer was malformed"));
    }
    let target = Target::for_offer(dest, offer)
        .map_err(|e| (e.into(), "the receiver cannot write this kind of offer where it is"))?;
    // An existing part file is what we resume from, not a conflict.
    let resuming = target.resume_part().filter(|p| p.exists());
    let conflicts = if force { Vec::new() } else { target.conflicts() };
    if let Some(first) = conflicts.into_iter().find(|c| Some(c) != resuming.as_ref()) {
        let e = SinkError::Exists(first).into();
        return Err((e, "the receiver already has something by that name"));
    }
    let prefix = match &resuming {
        Some(part) if !force => resume::load(part, offer)
            .map_err(|e| (e.into(), "the receiver holds part of another transfer"))?,
        _ => Prefix::default(),
    };
    Ok((target, prefix))
}

/// The offer as the caller sees it.
fn offer_info(offer: &Offer, peer: libp2p::PeerId, addr: Option<libp2p::Multiaddr>) -> OfferInfo {
    OfferInfo {
        kind: match offer.kind {
            Kind::Stream => OfferKind::Stream,
            Kind::File => OfferKind::File,
            Kind::Archive => OfferKind::Folder,
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
        match inc.part.take().filter(|p| p.symlink_metadata().is_ok()) {
            // Nothing verified arrived: a part file would only be litter.
            Some(part) if inc.bytes == 0 => {
                resume::remove_side_files(&part);
                crate::sink::discard(&part);
            }
            Some(path) => events.emit(Event::Kept { path, bytes: inc.bytes }),
            None => {}
        }
        return Err(e);
    }
    tracing::debug!(chunks = inc.count, bytes = inc.bytes, "verified");
    let written = inc.written.take().unwrap_or_default().paths;
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
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::pipeline::RootHash;
    use crate::sink::part_path;

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
