//! The two sides of a transfer, from code to last byte, split by what each part owns:
//!
//! - [`rendezvous`]: finding and racing candidate senders (the receiver) and the
//!   handshake slots of the sender's listener;
//! - [`outgoing`] / [`incoming`]: the data phase of each side, over any
//!   `AsyncRead + AsyncWrite` session, so it runs over `tokio::io::duplex` in tests;
//! - [`send`](mod@send) / [`receive`](mod@receive): the engine's entry points, which tie the two together
//!   across reconnections;
//! - [`many`]: a send that serves many receivers with one code.
//!
//! Data phase (sender → receiver): `Chunk`… then `End` in the LAST frame; the receiver
//! sends an `Ack` every [`pipeline::ack_every`] chunks it has verified and handed to its
//! output, and `Done` (or `Error`, or `Cancel`) in its LAST frame. The sender keeps at
//! most [`pipeline::WINDOW_BYTES`] of wire bytes beyond the last `Ack` in flight, so a
//! receiver whose output is slower than the link never buffers more than that window.
//! Both sides read while they write and the reverse direction carries only small acks,
//! which keeps clear of yamux's both-sides-writing stall (rust-libp2p#5410).
//!
//! Invariants:
//! - The sender reads no source byte before the receiver accepted.
//! - The receiver writes a chunk only after it opened and verified it, and commits a
//!   file or an extraction only after `End`'s totals and root hash matched.
//! - The sender's code burns after [`guess_budget`] wrong codes (each network, a few
//!   at a time; see [`crate::session::guesses`]); the receiver stops after a few peers
//!   failed to prove the code.
//! - Acks only ever move forward, and never past what this session sent; the sender
//!   ignores one that goes back and clamps one that goes too far.
//! - A deliberate stop (cancellation) is said to the peer with `Cancel`, which then
//!   stops at once; a lost connection is a pause, resumed after a reconnection.
//!
//! [`guess_budget`]: crate::guess_budget
//! [`pipeline::ack_every`]: crate::pipeline::ack_every
//! [`pipeline::WINDOW_BYTES`]: crate::pipeline::WINDOW_BYTES

use std::time::Duration;

use crate::code::{self, Code};
use crate::message::Control;
use crate::node;
use crate::options::NetworkOptions;
use crate::session::Rendezvous;

mod incoming;
mod many;
mod outgoing;
mod receive;
mod rendezvous;
mod send;

pub use receive::receive;
pub use send::send;

/// How long a side waits for the peer to close after its own LAST frame, so that the
/// frame is not cut off by the process exiting.
const LINGER: Duration = Duration::from_secs(2);

/// A side that has sent nothing for this long sends a `Keepalive` (the sender) or a
/// repeated `Ack` (the receiver), so that silence means a dead link.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// A hello's slot is ours if it is the current one or a neighbour (clock skew and a
/// rollover during the wait).
fn slot_ok(at: Rendezvous, len: u64) -> bool {
    // `at.slot` comes from the peer: checked arithmetic, never a panic.
    let now = code::current_slot(len);
    at.slot == now || at.slot.checked_add(len) == Some(now) || now.checked_add(len) == Some(at.slot)
}

/// The slot length of `net`, in whole seconds, at least one.
fn slot_secs(net: &NetworkOptions) -> u64 {
    net.slot.as_secs().max(1)
}

/// The node for one side: `provide` for the sender, which advertises the code's
/// channel on the DHT; the receiver looks it up. `query`: the mDNS query interval.
fn node_config(net: &NetworkOptions, query: Duration, code: &Code, provide: bool) -> node::Config {
    let bootstrap = if net.bootstrap.is_empty() {
        node::dht::PUBLIC_BOOTSTRAP.iter().map(|a| a.parse().expect("static multiaddr")).collect()
    } else {
        net.bootstrap.clone()
    };
    node::Config {
        listen: net.listen.clone(),
        mdns: net.mdns,
        mdns_query_interval: query,
        dht: net.dht.then(|| node::dht::Config {
            bootstrap,
            channel: Some(code.channel()),
            provide,
            lookup: !provide,
            slot_secs: slot_secs(net),
        }),
        serve: false,
        keypair: None,
        allow_relay: net.allow_relay,
    }
}

fn unexpected(got: &Control, expected: &'static str) -> crate::Error {
    crate::message::MessageError::Unexpected { got: got.name(), expected }.into()
}

#[cfg(test)]
mod tests {
    //! The data phase of both sides over an in-memory duplex stream: no network, no
    //! root. Rendezvous over libp2p's memory transport is in `tests` of `send`.

    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use libp2p::PeerId;
    use tokio::io::DuplexStream;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
    use tokio_util::sync::CancellationToken;

    use super::incoming::{self, Incoming};
    use super::outgoing::{self, Outgoing};
    use super::*;
    use crate::event::{Event, Events, Role, Stats};
    use crate::message::{Control, Resume};
    use crate::pipeline::{Compression, MIN_CHUNK_SIZE, RootHash};
    use crate::session::{Session, SessionError};
    use crate::sink::{Sink, Target};
    use crate::source::Source;

    type Side = Session<Compat<DuplexStream>>;

    const CODE: &str = "bubble-enemy-result-increase";

    /// An authenticated session pair over a duplex pipe: (sender, receiver).
    async fn sessions() -> (Side, Side) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let code: Code = CODE.parse().expect("code");
        let at = Rendezvous { channel: code.channel(), slot: 300 };
        let (s, r) = tokio::join!(
            Session::accept(a.compat(), &code, |_| true, s_id, r_id),
            Session::connect(b.compat(), &code, at, r_id, s_id)
        );
        (s.expect("sender side"), r.expect("receiver side"))
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    async fn sender(bytes: Vec<u8>) -> Outgoing {
        let source =
            Source::new(crate::options::Source::Reader(Box::new(std::io::Cursor::new(bytes))))
                .expect("source");
        let mut out = Outgoing::new(MIN_CHUNK_SIZE, Compression::Zstd(1), source);
        out.offer().await.expect("offer");
        out
    }

    /// A sender of `bytes` as a file (re-readable, unlike a stream); the directory
    /// holds the file and must outlive the sender.
    async fn file_sender(bytes: &[u8]) -> (Outgoing, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.bin");
        std::fs::write(&path, bytes).expect("write");
        let source = Source::new(crate::options::Source::Paths(vec![path])).expect("source");
        let mut out = Outgoing::new(MIN_CHUNK_SIZE, Compression::Zstd(1), source);
        out.offer().await.expect("offer");
        (out, dir)
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

    fn receiver(out: &Outgoing, into: Shared) -> Incoming {
        incoming_for(out.offered().expect("offered").clone(), into)
    }

    /// A receiver of `offer` that writes into `into`, as to standard output.
    fn incoming_for(offer: crate::message::Offer, into: Shared) -> Incoming {
        let sink = Sink::start(Target::Writer(Box::new(into)), false, None).expect("sink");
        Incoming {
            offer,
            sink: Some(sink),
            part: None,
            written: None,
            count: 0,
            bytes: 0,
            root: RootHash::default(),
            wire: 0,
            short: false,
            stats: Stats::default(),
        }
    }

    fn start() -> Resume {
        Resume { chunks: 0, root: RootHash::default().finish() }
    }

    fn quiet() -> Events {
        Events::new(|_| {})
    }

    #[tokio::test]
    async fn a_stream_arrives_whole_over_a_duplex() {
        let bytes = data(5 * MIN_CHUNK_SIZE as usize + 123);
        let (mut s, r) = sessions().await;
        let mut out = sender(bytes.clone()).await;
        let got = Shared::default();
        let mut inc = receiver(&out, got.clone());
        out.position(&start(), &mut s).await.expect("position");
        let (none, ev) = (CancellationToken::new(), quiet());
        let (a, b) = tokio::join!(out.run(s, &ev, &none), inc.run(r, &ev, &none));
        assert!(matches!(a, Ok(outgoing::Ending::Done)));
        assert!(matches!(b, Ok(incoming::Ending::End)));
        assert_eq!(*got.0.lock().expect("lock"), bytes);
        assert_eq!(inc.count, 6);
        assert_eq!(out.stats.sent, bytes.len() as u64);
    }

    /// Issue 15: senders that share a budget keep no more chunks between them than it
    /// holds, however many they are, and every receiver still gets everything (slowed
    /// to its timed acks, not stalled).
    #[tokio::test]
    async fn many_senders_keep_no_more_than_their_shared_budget() {
        const BUDGET: usize = 4;
        let budget = outgoing::Budget::new(BUDGET);
        let bytes = data(5 * MIN_CHUNK_SIZE as usize + 7);
        let one = |budget: outgoing::Budget| {
            let bytes = bytes.clone();
            async move {
                let (mut s, r) = sessions().await;
                let mut out = sender(bytes).await.within(budget, (2, 3));
                let got = Shared::default();
                let mut inc = receiver(&out, got.clone());
                out.position(&start(), &mut s).await.expect("position");
                let (none, ev) = (CancellationToken::new(), quiet());
                let (a, b) = tokio::join!(out.run(s, &ev, &none), inc.run(r, &ev, &none));
                assert!(matches!(a, Ok(outgoing::Ending::Done)), "{:?}", a.err());
                assert!(matches!(b, Ok(incoming::Ending::End)), "{:?}", b.err());
                got.0.lock().expect("lock").clone()
            }
        };
        let (a, b, c) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            tokio::join!(one(budget.clone()), one(budget.clone()), one(budget.clone()))
        })
        .await
        .expect("every receiver done within a minute");
        for got in [a, b, c] {
            assert_eq!(got, bytes);
        }
        // Three windows of 256 chunks each would hold all 18 chunks at once.
        let peak = budget.peak();
        assert!(peak <= BUDGET as u64, "kept {peak} chunks with a budget of {BUDGET}");
        assert!(peak > 0, "nothing was counted");
    }

    /// Cancels `side` at the start of a long transfer; returns (sender, receiver)
    /// results.
    async fn cancel(
        side: Role,
    ) -> (crate::Result<outgoing::Ending>, crate::Result<incoming::Ending>) {
        let bytes = data(64 * MIN_CHUNK_SIZE as usize);
        let (mut s, r) = sessions().await;
        let mut out = sender(bytes).await;
        let mut inc = receiver(&out, Shared::default());
        out.position(&start(), &mut s).await.expect("position");
        let (cancelled, none, ev) = (CancellationToken::new(), CancellationToken::new(), quiet());
        cancelled.cancel();
        let (s_cancel, r_cancel) =
            if side == Role::Sender { (&cancelled, &none) } else { (&none, &cancelled) };
        tokio::join!(out.run(s, &ev, s_cancel), inc.run(r, &ev, r_cancel))
    }

    #[tokio::test]
    async fn a_cancelled_receiver_stops_the_sender_at_once() {
        let (a, b) = cancel(Role::Receiver).await;
        assert!(matches!(b, Err(crate::Error::Cancelled)), "{:?}", b.err());
        assert!(matches!(a, Err(crate::Error::PeerCancelled(Role::Receiver))), "{:?}", a.err());
    }

    #[tokio::test]
    async fn a_cancelled_sender_stops_the_receiver_at_once() {
        let (a, b) = cancel(Role::Sender).await;
        assert!(matches!(a, Err(crate::Error::Cancelled)), "{:?}", a.err());
        assert!(matches!(b, Err(crate::Error::PeerCancelled(Role::Sender))), "{:?}", b.err());
    }

    /// Issue 9, item 4: a receiver that resumes below what was sent and then
    /// acknowledges past it must not make the sender forget chunks it has not sent
    /// again (that underflowed and panicked).
    #[tokio::test]
    async fn an_ack_past_what_was_resent_cannot_panic_the_sender() {
        let bytes = data(32 * MIN_CHUNK_SIZE as usize);
        let mut out = sender(bytes).await;
        // First session: the scripted receiver reads a few chunks, then the link dies.
        let (mut s, r) = sessions().await;
        out.position(&start(), &mut s).await.expect("position");
        let (none, ev) = (CancellationToken::new(), quiet());
        let script = async move {
            let (_, mut reader, _writer) = r.into_parts();
            for _ in 0..8 {
                reader.next_sealed().await.expect("a chunk");
            }
            // Dropping both halves ends the stream: a lost connection.
        };
        let (first, ()) = tokio::join!(out.run(s, &ev, &none), script);
        assert!(matches!(first, Ok(outgoing::Ending::Lost)), "{:?}", first.err());
        // Second session: resume from 0, then acknowledge far beyond, then cancel.
        let (mut s, r) = sessions().await;
        out.position(&start(), &mut s).await.expect("position");
        let script = async move {
            let (_, _reader, mut writer) = r.into_parts();
            crate::session::send(&mut writer, &Control::Ack(1_000)).await.expect("ack");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            crate::session::send(&mut writer, &Control::Cancel).await.expect("cancel");
        };
        let (second, ()) = tokio::join!(out.run(s, &ev, &none), script);
        assert!(
            matches!(second, Err(crate::Error::PeerCancelled(Role::Receiver))),
            "{:?}",
            second.err()
        );
    }

    /// Issue 16: the window counts wire bytes. Chunks that compress well are kept
    /// compressed, so more than a raw window of them go out before the first Ack (a raw
    /// window held 3 MiB of text on the wire, too little for a long round trip); after
    /// the connection is lost, a receiver that starts over gets them resent from what
    /// was kept, byte for byte.
    #[tokio::test]
    async fn compressible_chunks_fill_the_window_by_wire_bytes_and_resend_whole() {
        let window = crate::pipeline::window_chunks(MIN_CHUNK_SIZE) as usize;
        let bytes = data(3 * window * MIN_CHUNK_SIZE as usize + 99);
        let mut out = sender(bytes.clone()).await;
        let (mut s, r) = sessions().await;
        out.position(&start(), &mut s).await.expect("position");
        let (none, ev) = (CancellationToken::new(), quiet());
        // Twice a raw window, never acknowledged: only a window of wire bytes lets
        // these out.
        let script = async move {
            let (_, mut reader, _writer) = r.into_parts();
            for _ in 0..2 * window {
                reader.next_sealed().await.expect("more than a raw window goes out without an Ack");
            }
        };
        let first = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            tokio::join!(out.run(s, &ev, &none), script).0
        })
        .await
        .expect("more than a raw window went out without an Ack");
        assert!(matches!(first, Ok(outgoing::Ending::Lost)), "{:?}", first.err());
        assert!(out.read as usize >= 2 * window, "read {} chunks", out.read);
        // A receiver that holds nothing: every chunk sent so far comes again.
        let (mut s, r) = sessions().await;
        out.position(&start(), &mut s).await.expect("resume from the start");
        let got = Shared::default();
        let mut inc = receiver(&out, got.clone());
        let (a, b) = tokio::join!(out.run(s, &ev, &none), inc.run(r, &ev, &none));
        assert!(matches!(a, Ok(outgoing::Ending::Done)), "{:?}", a.err());
        assert!(matches!(b, Ok(incoming::Ending::End)), "{:?}", b.err());
        assert!(out.stats.resent >= (2 * window) as u64 * u64::from(MIN_CHUNK_SIZE));
        assert!(*got.0.lock().expect("lock") == bytes, "the resent stream differs");
    }

    /// A receiver acknowledges chunks still queued for its writer, so a killed one can
    /// come back holding a few less than it acknowledged: the sender still has the last
    /// `ACK_LEAD` below the ack (a rerun at once was told "only chunks from 16 on are
    /// still kept"), and no more.
    #[tokio::test]
    async fn a_receiver_may_resume_a_few_chunks_below_its_last_ack() {
        use crate::pipeline::ACK_LEAD;
        let chunk = MIN_CHUNK_SIZE as usize;
        let bytes = data(32 * chunk);
        let mut out = sender(bytes.clone()).await;
        let (mut s, r) = sessions().await;
        out.position(&start(), &mut s).await.expect("position");
        let (none, ev) = (CancellationToken::new(), quiet());
        let script = async move {
            let (_, mut reader, mut writer) = r.into_parts();
            for _ in 0..12 {
                reader.next_sealed().await.expect("a chunk");
            }
            crate::session::send(&mut writer, &Control::Ack(12)).await.expect("ack");
            // Still reading, so that the ack is taken before the connection goes.
            reader.next_sealed().await.expect("a chunk");
        };
        let (first, ()) = tokio::join!(out.run(s, &ev, &none), script);
        assert!(matches!(first, Ok(outgoing::Ending::Lost)), "{:?}", first.err());
        let held = |n: u64| {
            let mut root = RootHash::default();
            for c in bytes.chunks(chunk).take(n as usize) {
                root.push(blake3::hash(c).as_bytes());
            }
            Resume { chunks: n, root: root.finish() }
        };
        let (mut s, _r) = sessions().await;
        match out.position(&held(12 - ACK_LEAD - 1), &mut s).await {
            Err(crate::Error::ResumeTooOld { held, oldest }) => {
                assert_eq!((held, oldest), (12 - ACK_LEAD - 1, 12 - ACK_LEAD));
            }
            other => panic!("resumed below what is kept: {:?}", other.err()),
        }
        out.position(&held(12 - ACK_LEAD), &mut s).await.expect("resumes from what is kept");
    }

    /// A scripted sender that seals chunks of these lengths; returns how the receiver
    /// ended.
    async fn receive_chunks(lens: &[usize]) -> crate::Result<incoming::Ending> {
        let (s, r) = sessions().await;
        let out = sender(Vec::new()).await;
        let mut inc = receiver(&out, Shared::default());
        let lens = lens.to_vec();
        let script = async move {
            let (_, reader, mut w) = s.into_parts();
            for (i, len) in lens.into_iter().enumerate() {
                let counter = w.reserve().expect("counter");
                let raw = data(len);
                let sealed =
                    crate::pipeline::seal_chunk(i as u64, &raw, Compression::Off, w.key(), counter)
                        .expect("seal");
                w.write_sealed(sealed.header, &sealed.frame).await.expect("write");
            }
            // Kept open until the receiver is done, like a sender waiting for acks.
            (reader, w)
        };
        let (none, ev) = (CancellationToken::new(), quiet());
        tokio::join!(inc.run(r, &ev, &none), script).0
    }

    /// A folder of `offered` bytes, as a receiver accepts it.
    fn folder(offered: u64) -> crate::message::Offer {
        crate::message::Offer {
            kind: crate::message::Kind::Archive,
            name: "top".into(),
            size: Some(offered),
            entries: vec!["top".into()],
            chunk_size: MIN_CHUNK_SIZE,
            files: Some(2),
            kinds: vec![crate::message::TopKind::Folder],
        }
    }

    /// A scripted sender that offers a folder of `offered` bytes and then sends chunks
    /// of zeros of these lengths (compressed: they cost it next to nothing) and an `End`
    /// whose totals match them. Returns how the receiver ended and what it wrote to its
    /// output, a writer as standard output is.
    async fn receive_folder(
        offered: u64,
        lens: &[usize],
    ) -> (crate::Result<incoming::Ending>, Vec<u8>) {
        let (s, r) = sessions().await;
        let got = Shared::default();
        let mut inc = incoming_for(folder(offered), got.clone());
        let lens = lens.to_vec();
        let script = async move {
            let (_, reader, mut w) = s.into_parts();
            let mut root = RootHash::default();
            let mut bytes = 0;
            for (i, len) in lens.iter().enumerate() {
                let counter = w.reserve().expect("counter");
                let raw = vec![0u8; *len];
                let sealed = crate::pipeline::seal_chunk(
                    i as u64,
                    &raw,
                    Compression::Zstd(1),
                    w.key(),
                    counter,
                )
                .expect("seal");
                // The receiver may stop before the last chunks: they go nowhere then.
                if w.write_sealed(sealed.header, &sealed.frame).await.is_err() {
                    return (reader, w);
                }
                root.push(&sealed.hash);
                bytes += *len as u64;
            }
            let end = crate::message::End {
                chunks: lens.len() as u64,
                bytes,
                root: root.finish(),
                meta: None,
            };
            let _ = crate::session::send(&mut w, &Control::End(end)).await;
            // Kept open until the receiver is done, like a sender waiting for its verdict.
            (reader, w)
        };
        let (none, ev) = (CancellationToken::new(), quiet());
        let ended = tokio::join!(inc.run(r, &ev, &none), script).0;
        let written = got.0.lock().expect("lock").clone();
        (ended, written)
    }

    /// Issue 14, item 3: a folder's size in the offer is a bound, as a file's is. The
    /// chunk that would pass it is refused before it reaches the output (here a writer,
    /// as standard output is: the tar stream of a folder is bounded too), and the
    /// error says what was offered.
    #[tokio::test]
    async fn a_folder_longer_than_its_offer_is_refused_before_the_chunk_past_it() {
        let full = MIN_CHUNK_SIZE as usize;
        let offered = full as u64 + 2560;
        let (ended, written) = receive_folder(offered, &[full; 64]).await;
        match ended {
            Err(crate::Error::Pipeline(
                ref e @ crate::pipeline::PipelineError::OverOffer { offered: o },
            )) => {
                assert_eq!(o, offered);
                assert_eq!(
                    e.to_string(),
                    format!("the sender sent more than the {offered} bytes it offered")
                );
            }
            other => panic!("not refused for its size: {:?}", other.err()),
        }
        assert_eq!(written.len(), full, "only the chunk within the offer was written");
    }

    /// Issue 14, item 3: a folder whose stream ends short of its offer is refused at
    /// `End`, as a file is, even when `End`'s own totals are consistent.
    #[tokio::test]
    async fn a_folder_shorter_than_its_offer_is_refused_at_the_end() {
        let full = MIN_CHUNK_SIZE as usize;
        let (ended, _) = receive_folder(3 * full as u64, &[full, full]).await;
        match ended {
            Err(crate::Error::Pipeline(
                ref e @ crate::pipeline::PipelineError::ShortOfOffer { offered, sent },
            )) => {
                assert_eq!((offered, sent), (3 * full as u64, 2 * full as u64));
                assert!(e.to_string().contains("fewer than"), "{e}");
            }
            other => panic!("not refused for its size: {:?}", other.err()),
        }
        // Exactly the offer is taken.
        let (ended, written) = receive_folder(2 * full as u64 + 1, &[full, full, 1]).await;
        assert!(matches!(ended, Ok(incoming::Ending::End)), "{:?}", ended.err());
        assert_eq!(written.len(), 2 * full + 1);
    }

    /// Issue 14, item 3: a file that grows after its offer was sent stops the sender
    /// with "changed while sending", which the receiver hears; nothing past the offer
    /// reaches the receiver's output.
    #[tokio::test]
    async fn a_file_grown_after_its_offer_stops_the_sender_as_changed_while_sending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let before = data(3 * MIN_CHUNK_SIZE as usize + 5);
        std::fs::write(&path, &before).expect("write");
        let source =
            Source::new(crate::options::Source::Paths(vec![path.clone()])).expect("source");
        let mut out = Outgoing::new(MIN_CHUNK_SIZE, Compression::Zstd(1), source);
        let offered = out.offer().await.expect("offer").size;
        assert_eq!(offered, Some(before.len() as u64));
        let got = Shared::default();
        let mut inc = receiver(&out, got.clone());
        // After the offer, before the receiver's answer starts the reading.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&data(2 * MIN_CHUNK_SIZE as usize)))
            .expect("append");
        let (mut s, r) = sessions().await;
        out.position(&start(), &mut s).await.expect("position");
        let (none, ev) = (CancellationToken::new(), quiet());
        let (a, b) = tokio::join!(out.run(s, &ev, &none), inc.run(r, &ev, &none));
        match a {
            Err(crate::Error::Source(crate::source::SourceError::Changed { path: p })) => {
                assert_eq!(p, path);
            }
            other => panic!("the sender went on: {:?}", other.err()),
        }
        match b {
            Err(crate::Error::Session(crate::session::SessionError::Remote {
                message, ..
            })) => {
                assert!(message.ends_with("changed while sending"), "{message}");
            }
            other => panic!("the receiver was not told: {:?}", other.err()),
        }
        let got = got.0.lock().expect("lock");
        assert!(got.len() <= before.len() && before.starts_with(&got), "{} bytes", got.len());
    }

    /// Issue 9, item 6: chunks are cut at fixed offsets, so only the last may be short.
    #[tokio::test]
    async fn a_short_or_empty_chunk_before_the_last_is_refused() {
        let full = MIN_CHUNK_SIZE as usize;
        let r = receive_chunks(&[full - 1, full]).await;
        assert!(
            matches!(
                r,
                Err(crate::Error::Pipeline(crate::pipeline::PipelineError::ShortChunk {
                    index: 1,
                    ..
                }))
            ),
            "{:?}",
            r.err()
        );
        let r = receive_chunks(&[0, full]).await;
        assert!(
            matches!(
                r,
                Err(crate::Error::Pipeline(crate::pipeline::PipelineError::ShortChunk {
                    index: 0,
                    ..
                }))
            ),
            "{:?}",
            r.err()
        );
    }

    /// Issue 9, item 9: after a lost connection, another peer id is turned away even when
    /// it knows the code and holds the data (it answers Resume with the right prefix):
    /// the rest goes only to the receiver that authenticated (a rerun of it comes back
    /// under its kept identity). The sender keeps waiting.
    #[tokio::test]
    async fn after_a_loss_another_peer_id_with_the_data_is_turned_away() {
        let (s, mut r) = sessions().await;
        let source = data(4 * MIN_CHUNK_SIZE as usize);
        let mut root = RootHash::default();
        root.push(blake3::hash(&source[..MIN_CHUNK_SIZE as usize]).as_bytes());
        let held = Resume { chunks: 1, root: root.finish() };
        let (mut out, _dir) = file_sender(&source).await;
        let started = std::sync::OnceLock::from(std::time::Instant::now());
        let someone_else = Some(PeerId::random());
        let (none, ev) = (CancellationToken::new(), quiet());
        let stranger = async move {
            assert!(matches!(r.recv().await, Ok(Control::Offer(_))));
            r.send(&Control::Resume(held)).await.expect("resume");
            r.recv().await
        };
        let both = async {
            tokio::join!(send::serve(&mut out, s, (&started, someone_else), &ev, &none), stranger)
        };
        let (served, answer) =
            tokio::time::timeout(std::time::Duration::from_secs(20), both).await.expect("in time");
        assert!(matches!(served, Ok(outgoing::Ending::Refused)), "{:?}", served.err());
        assert!(
            matches!(answer, Err(SessionError::Remote { ref message, .. }) if message.contains("another receiver already took")),
            "{answer:?}"
        );
        assert_eq!(out.read, 0, "nothing was read for the stranger");
    }

    /// A rerun receiver that leaves to come back under its kept identity (Refuse after a
    /// loss) does not end the transfer: the sender keeps waiting.
    #[tokio::test]
    async fn after_a_loss_a_refusal_keeps_the_sender_waiting() {
        let (s, mut r) = sessions().await;
        let mut out = sender(data(4 * MIN_CHUNK_SIZE as usize)).await;
        let started = std::sync::OnceLock::from(std::time::Instant::now());
        let (none, ev) = (CancellationToken::new(), quiet());
        let rerun = async move {
            assert!(matches!(r.recv().await, Ok(Control::Offer(_))));
            r.send(&Control::Refuse("back as the run that holds the data".into()))
                .await
                .expect("refuse");
        };
        let peer = Some(PeerId::random());
        let (served, ()) =
            tokio::join!(send::serve(&mut out, s, (&started, peer), &ev, &none), rerun);
        assert!(matches!(served, Ok(outgoing::Ending::Refused)), "{:?}", served.err());
    }

    /// Issue 9, item 9: after a lost connection, another peer that knows the code but
    /// does not hold the data (it answers Accept, not Resume with the prefix) is turned
    /// away, and the sender keeps waiting.
    #[tokio::test]
    async fn after_a_loss_a_stranger_without_the_data_is_turned_away() {
        let (s, mut r) = sessions().await;
        let (mut out, _dir) = file_sender(&data(4 * MIN_CHUNK_SIZE as usize)).await;
        let started = std::sync::OnceLock::from(std::time::Instant::now());
        let someone_else = Some(PeerId::random());
        let (none, ev) = (CancellationToken::new(), quiet());
        let stranger = async move {
            assert!(matches!(r.recv().await, Ok(Control::Offer(_))));
            r.send(&Control::Accept).await.expect("accept");
            r.recv().await
        };
        let (served, answer) =
            tokio::join!(send::serve(&mut out, s, (&started, someone_else), &ev, &none), stranger);
        assert!(matches!(served, Ok(outgoing::Ending::Refused)), "{:?}", served.err());
        assert!(
            matches!(answer, Err(SessionError::Remote { ref message, .. }) if message.contains("another receiver already took")),
            "{answer:?}"
        );
        assert_eq!(out.read, 0, "nothing was read for the stranger");
    }

    /// Issue 15, item 2: the receiver of a stream is gone (another peer accepts after
    /// the loss): the newcomer is told the stream cannot be restarted, and the sender
    /// stops at once instead of waiting out its reconnect timeout.
    #[tokio::test]
    async fn a_stream_whose_receiver_is_gone_ends_both_sides_at_once() {
        let (s, mut r) = sessions().await;
        let mut out = sender(data(4 * MIN_CHUNK_SIZE as usize)).await;
        let started = std::sync::OnceLock::from(std::time::Instant::now());
        let someone_else = Some(PeerId::random());
        let (none, ev) = (CancellationToken::new(), quiet());
        let newcomer = async move {
            assert!(matches!(r.recv().await, Ok(Control::Offer(_))));
            r.send(&Control::Accept).await.expect("accept");
            r.recv().await
        };
        let (served, answer) =
            tokio::join!(send::serve(&mut out, s, (&started, someone_else), &ev, &none), newcomer);
        assert!(
            matches!(served, Err(crate::Error::StreamLost { .. })),
            "{served:?}",
            served = served.as_ref().err()
        );
        let e = served.err().expect("an error");
        assert_eq!(e.kind(), crate::ErrorKind::Network);
        assert!(e.to_string().contains("cannot be restarted"), "{e}");
        let Err(SessionError::Remote { message, .. }) = answer else {
            panic!("the newcomer was not told why: {answer:?}")
        };
        assert_eq!(
            message,
            "this stream was already partly delivered to another receiver and cannot be restarted"
        );
    }

    /// Issue 15, item 7: a receiver that comes back under the identity of the run that
    /// holds the data is not a refusal: the sender says a transfer begun earlier
    /// resumes.
    #[tokio::test]
    async fn a_receiver_coming_back_as_an_earlier_run_is_not_a_refusal() {
        let (s, mut r) = sessions().await;
        let (mut out, _dir) = file_sender(&data(4 * MIN_CHUNK_SIZE as usize)).await;
        let started = std::sync::OnceLock::new();
        let (none, (ev, seen)) = (CancellationToken::new(), recorded());
        let rerun = async move {
            assert!(matches!(r.recv().await, Ok(Control::Offer(_))));
            r.send(&Control::Refuse(receive::REIDENTIFY.into())).await.expect("refuse");
        };
        let (served, ()) =
            tokio::join!(send::serve(&mut out, s, (&started, None), &ev, &none), rerun);
        assert!(matches!(served, Ok(outgoing::Ending::Refused)), "{:?}", served.err());
        let seen = seen.lock().expect("lock");
        assert!(seen.iter().any(|e| matches!(e, Event::ResumingEarlier)), "{seen:?}");
        assert!(!seen.iter().any(|e| matches!(e, Event::Refused { .. })), "{seen:?}");
    }

    #[test]
    fn slots_tolerate_skew() {
        let len = code::SLOT_SECS;
        let now = code::current_slot(len);
        assert!(slot_ok(Rendezvous { channel: 0, slot: now }, len));
        assert!(slot_ok(Rendezvous { channel: 0, slot: now - len }, len));
        assert!(!slot_ok(Rendezvous { channel: 0, slot: now - 3 * len }, len));
        assert!(
            !slot_ok(Rendezvous { channel: 0, slot: u64::MAX }, len),
            "no overflow on peer input"
        );
        // A shorter slot (tests, a private group) is its own clock.
        let short = code::current_slot(3);
        assert!(slot_ok(Rendezvous { channel: 0, slot: short }, 3));
        assert!(!slot_ok(Rendezvous { channel: 0, slot: short - 9 }, 3));
    }
}
