//! One authenticated session over one libp2p stream: hello, SPAKE2, key confirmation,
//! then encrypted frames.
//!
//! The stream runs inside libp2p's own noise channel, so both peer ids are authenticated
//! before the first byte here; what this layer proves is that both sides know the code.
//!
//! # Wire format (plaintext, inside noise)
//!
//! | step | direction | bytes |
//! |------|-----------|-------|
//! | hello   | R → S | `b"pcp"` ‖ version `u8` (= 2; 1 is still answered) ‖ channel `u16` ‖ slot `u64` ‖ SPAKE2 message B (33) |
//! | reply   | S → R | status `u8`; if 0 (OK) or 7 (OK, early frame): SPAKE2 message A (33) ‖ sender confirmation (32), and after 7 the early frame (the sender's first, below); if 5 (try later): seconds `u16` |
//! | confirm | R → S | receiver confirmation (32) |
//! | verdict | S → R | only after a confirmation that does not match: status 4 if the code is burnt now, else nothing (the sender closes) |
//!
//! Integers are big-endian. Status: 0 OK, 1 not this channel or slot, 2 busy with another
//! receiver, 3 unsupported version, 4 the code is burnt (too many wrong codes; see
//! [`Guesses`]), 5 try again in N seconds (wrong codes came from the receiver's network
//! lately, or every guess left is being tried; see [`guesses`]), 6 taken (a single-receiver
//! sender whose data went to another receiver: it takes no other peer, and ends when that
//! one is done; issue 15, item 6), 7 OK with the early frame (below). A receiver that predates
//! status 5 or 6 takes it for a broken hello and retries after its usual pause. After the
//! confirmation both directions carry [`crate::framing`] frames.
//!
//! Status 7 saves a round trip (issue 16): a sender that already knows what it offers
//! sends its `Offer` right behind its reply, instead of after the receiver's
//! confirmation, in the early frame: sealed under the new session key (frame counter 0),
//! its plaintext always [`EARLY_PLAIN_LEN`] bytes, a length `u16` ‖ the `Offer` message
//! (length 0: no offer yet; it comes after the confirmation, as with status 0) ‖ zeros.
//! Every version-2 hello gets status 7 and the early frame, with or without an offer, so
//! neither the status nor the frame's length says anything about what is offered. A
//! version-1 hello gets status 0 and the offer after its confirmation, as before. A
//! receiver whose check of the sender's confirmation fails skips the early frame
//! unopened (reading at most its fixed length) before it reads the verdict.
//!
//! # Security
//! - SPAKE2 (Ed25519 group) with the sender as side A and the receiver as side B; the
//!   identities are `"pcp/1 sender " ‖ sender peer id` and `"pcp/1 receiver " ‖ receiver
//!   peer id`, so a relay or a man in the middle cannot splice two sessions.
//! - HKDF-SHA256, salt = the whole handshake transcript (hello and both SPAKE2 messages),
//!   gives one frame key per direction and one confirmation value per side.
//! - `spake2::finish` succeeds with a wrong password (it just yields another key), so each
//!   side MUST check the peer's confirmation, in constant time, before it decrypts or
//!   writes anything. A hello that does not match costs the sender no attempt; a failed
//!   confirmation does.
//! - Each side sends its confirmation without waiting for the other's: SPAKE2 allows
//!   one online guess per handshake whatever the order. [`guesses`] bounds how many
//!   handshakes may fail on each side.
//! - The early frame (status 7) goes out before the receiver proved the code, sealed
//!   under a key only the code's holder can derive, and of one length whatever it
//!   holds: a guesser learns from it no more than from the sender's confirmation beside
//!   it (with a wrong guess neither opens, and testing another guess offline needs the
//!   sender's SPAKE2 secret), and it is never opened by a receiver whose check of the
//!   sender failed.
//! - Every status before the SPAKE2 step, "burnt" included, is unauthenticated: anyone
//!   can send it. A receiver MUST NOT take a "burnt" hello answer as proof that the
//!   sender it wants is done ([`SessionError::SaidBurnt`]); only a peer that ran the
//!   key exchange can end its search.

pub(crate) mod guesses;

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hkdf::Hkdf;
use libp2p::{PeerId, StreamProtocol};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use futures::io::{ReadHalf, WriteHalf};

use crate::code::Code;
use crate::event::Origin;
use crate::event::Role;
use crate::framing::{FrameError, FrameKey, FrameReader, FrameWriter, Opener, Sealer};
use crate::message::{Control, MessageError, Offer};

pub(crate) use guesses::{Gate, Guesses, Impostors, Ticket};

/// Silence (or a write that cannot finish) for this long means the connection is dead:
/// both sides go back to discovery and resume. Well above the 2 s keepalive, well within
/// the 15 s a user should wait to hear about it.
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(10);

/// The libp2p protocol the session runs on.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/pcp/transfer/1");

/// Protocol version carried in the hello.
pub(crate) const VERSION: u8 = 2;

/// The oldest hello version a sender answers (version 1 gets no early offer).
const OLDEST_VERSION: u8 = 1;

/// The first version whose receivers take the offer behind the reply (status 7).
const EARLY_OFFER_VERSION: u8 = 2;

const MAGIC: &[u8; 3] = b"pcp";

/// The early frame's plaintext length (see the module docs): room for a file's or a
/// stream's offer (a name is at most 255 bytes on most file systems) and a small tree's;
/// a larger offer comes after the confirmation instead.
const EARLY_PLAIN_LEN: usize = 4096;

/// The early frame on the wire: its fixed plaintext and the tag.
const EARLY_FRAME_LEN: u32 = (EARLY_PLAIN_LEN + crate::framing::TAG_LEN) as u32;
const SPAKE_MSG_LEN: usize = 33;
const CONFIRM_LEN: usize = 32;
const HELLO_LEN: usize = 3 + 1 + 2 + 8 + SPAKE_MSG_LEN;

/// How long one handshake may take before the peer is dropped, so that a stalled
/// stranger cannot hold the sender.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the sender waits for each of a stranger's handshake messages (the hello,
/// then the confirmation). A real receiver sends each at once; a silent stream holds
/// one of the sender's few handshake slots, so it is dropped early.
pub(crate) const PRE_AUTH_TIMEOUT: Duration = Duration::from_secs(5);

mod status {
    pub(super) const OK: u8 = 0;
    pub(super) const NOT_SERVING: u8 = 1;
    pub(super) const BUSY: u8 = 2;
    pub(super) const VERSION: u8 = 3;
    /// The code is burnt: too many wrong codes were tried. Also the one byte a sender
    /// writes after the confirmation that burnt it (see [`super::Guesses`]).
    pub(super) const BURNT: u8 = 4;
    /// Try again in the seconds that follow (`u16`).
    pub(super) const TRY_LATER: u8 = 5;
    /// Taken: this sender sends to another receiver, and will take no other.
    pub(super) const TAKEN: u8 = 6;
    /// OK, and the early frame (perhaps with the sender's offer) follows the reply.
    pub(super) const OFFERED: u8 = 7;
}

/// The longest a receiver waits when a sender asks it to try again later, whatever the
/// sender says.
pub(crate) const MAX_TRY_LATER: Duration = guesses::MAX_WAIT;

/// How long a receiver whose confirmation of the sender failed waits for the sender's
/// verdict byte (the sender writes it at once, or closes).
const VERDICT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a session could not be set up or continued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The receiver's check of the sender's confirmation failed.
    #[error("wrong code: the sender could not be authenticated")]
    WrongCode,
    /// The sender stopped taking this code: too many wrong codes were tried. What a
    /// receiver is told by a sender whose code is burnt, after the key exchange (the
    /// sender itself ends with [`crate::Error::CodeBurnt`]).
    #[error(
        "the sender stopped taking this code after too many wrong tries: someone else \
         tried this code; start again with a new one"
    )]
    Burnt,
    /// A peer answered our hello "burnt", before any key exchange: unproven, since
    /// anyone can say it. The search goes on.
    #[error("a peer said this code is burnt, without proving it knew the code")]
    SaidBurnt,
    /// The sender asked us to try again later: wrong codes came from our network, or
    /// every guess it still takes is being tried.
    #[error("the sender asks to try again in {secs} s")]
    TryLater {
        /// Seconds, as the sender said.
        secs: u16,
    },
    /// Peers whose key confirmation failed reached the limit: someone posing as the
    /// sender is guessing the code, and the receiver stops before it gives more guesses.
    #[error(
        "someone is guessing: {peers} peers failed to prove they knew this code; start \
         again with a new code"
    )]
    Guessing {
        /// How many.
        peers: u32,
    },
    /// The sender's check of the receiver's confirmation failed.
    #[error("a receiver ({peer}) tried a wrong code")]
    PeerWrongCode {
        /// Who tried.
        peer: PeerId,
    },
    /// The peer does not speak pcp at all.
    #[error("peer does not speak pcp")]
    Unsupported,
    /// The peer is a pcp node, but not serving this code's channel and time slot.
    #[error("peer does not serve this code")]
    NotServing,
    /// The peer is serving another receiver.
    #[error("the sender is busy with another receiver")]
    Busy,
    /// The peer sends to another receiver and takes no other (it said so before any
    /// key exchange: unproven).
    #[error("the sender is already sending to another receiver, and takes no other")]
    Taken,
    /// The peer speaks another protocol version.
    #[error("the peer runs an incompatible pcp version")]
    Version,
    /// The peer broke the handshake.
    #[error("the peer broke the handshake: {0}")]
    Protocol(&'static str),
    /// The handshake took too long.
    #[error("the handshake timed out")]
    Timeout,
    /// The stream failed.
    #[error("connection failed")]
    Io(#[from] std::io::Error),
    /// A frame failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A message failed to decode.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The peer reported an error. Its words are the peer's to choose, so they are shown
    /// only sanitized (and cut short), after "the sender reported: " or "the receiver
    /// reported: ": never as a line that could pass for one of pcp's own.
    #[error(
        "the {} reported: {}",
        match .from { Role::Sender => "sender", Role::Receiver => "receiver" },
        crate::term::sanitize(.message)
    )]
    Remote {
        /// Which side sent it: the peer.
        from: Role,
        /// Its words, as received (unsanitized).
        message: String,
    },
    /// The peer's user stopped it on purpose.
    #[error("the peer cancelled")]
    Cancelled,
}

impl SessionError {
    /// Whether this is a lost connection (resume after a reconnection) rather than a
    /// refusal, tampering or a bug (stop).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            SessionError::Io(_) | SessionError::Timeout => true,
            SessionError::Frame(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// What the hello names: the code's channel and the time slot the receiver is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rendezvous {
    /// Index of the code's first word.
    pub channel: u16,
    /// Unix seconds at the start of the slot.
    pub slot: u64,
}

/// The keys one handshake produced.
struct Keys {
    send: FrameKey,
    recv: FrameKey,
    confirm_mine: Zeroizing<[u8; CONFIRM_LEN]>,
    confirm_theirs: Zeroizing<[u8; CONFIRM_LEN]>,
}

fn identities(sender: &PeerId, receiver: &PeerId) -> (Identity, Identity) {
    let mut a = b"pcp/1 sender ".to_vec();
    a.extend_from_slice(&sender.to_bytes());
    let mut b = b"pcp/1 receiver ".to_vec();
    b.extend_from_slice(&receiver.to_bytes());
    (Identity::new(&a), Identity::new(&b))
}

/// Derives the session keys from the SPAKE2 key and the transcript.
fn derive(shared: &[u8], transcript: &[u8], i_am_sender: bool) -> Keys {
    let hk = Hkdf::<Sha256>::new(Some(transcript), shared);
    let expand = |label: &[u8]| {
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(label, out.as_mut()).expect("32 bytes is a valid HKDF-SHA256 length");
        out
    };
    let s2r = expand(b"pcp/1 key sender->receiver");
    let r2s = expand(b"pcp/1 key receiver->sender");
    let c_s = expand(b"pcp/1 confirm sender");
    let c_r = expand(b"pcp/1 confirm receiver");
    if i_am_sender {
        Keys {
            send: FrameKey::new(*s2r),
            recv: FrameKey::new(*r2s),
            confirm_mine: c_s,
            confirm_theirs: c_r,
        }
    } else {
        Keys {
            send: FrameKey::new(*r2s),
            recv: FrameKey::new(*s2r),
            confirm_mine: c_r,
            confirm_theirs: c_s,
        }
    }
}

/// An authenticated, encrypted session over a stream, split into its two directions.
pub(crate) struct Session<S> {
    peer: PeerId,
    /// The peer's role: who an `Error` message came from.
    them: Role,
    reader: FrameReader<ReadHalf<S>>,
    writer: FrameWriter<WriteHalf<S>>,
    /// The sender's offer that went out in its early frame (status 7).
    /// (Boxed: rarely there, and the session moves through the door's queue.)
    offered: Option<Box<Offer>>,
    /// The receiver's: its early frame's plaintext, opened after the check of the
    /// sender passed; [`Session::recv`] decodes it first, as if its offer came after
    /// the confirmation (and fails there, as on a bad first message, if it is
    /// malformed: the sender proved the code, so this is not a peer to search past).
    pending: Option<Vec<u8>>,
}

impl<S> std::fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// [`Session::connect_counted`] with no limit on failed confirmations.
    ///
    /// # Errors
    /// As for [`Session::connect_counted`].
    #[cfg(any(test, feature = "adversary"))]
    pub(crate) async fn connect(
        stream: S,
        code: &Code,
        at: Rendezvous,
        me: PeerId,
        sender: PeerId,
    ) -> Result<Session<S>, SessionError> {
        Self::connect_counted(stream, code, at, me, sender, &Impostors::new(u32::MAX)).await
    }

    /// Receiver side: says hello, runs SPAKE2 and checks the sender's confirmation,
    /// booking a failed one in `impostors`, which the receiver's concurrent attempts
    /// share; once it is exhausted, no more of the senders' confirmations are checked.
    ///
    /// # Errors
    /// [`SessionError::WrongCode`] when the sender's confirmation does not match
    /// ([`SessionError::Burnt`] when the sender then says its code burnt),
    /// [`SessionError::Guessing`] once `impostors` is exhausted, the hello refusals
    /// ([`SessionError::SaidBurnt`] and [`SessionError::TryLater`] among them), and
    /// stream failures. Nothing is decrypted before the check.
    pub(crate) async fn connect_counted(
        mut stream: S,
        code: &Code,
        at: Rendezvous,
        me: PeerId,
        sender: PeerId,
        impostors: &Impostors,
    ) -> Result<Session<S>, SessionError> {
        let (id_a, id_b) = identities(&sender, &me);
        let (spake, msg_b) = Spake2::<Ed25519Group>::start_b(
            &Password::new(code.password().as_bytes()),
            &id_a,
            &id_b,
        );
        let hello = hello_bytes(VERSION, at, &msg_b);
        stream.write_all(&hello).await?;
        stream.flush().await?;

        let mut st = [0u8; 1];
        stream.read_exact(&mut st).await?;
        let early = match st[0] {
            status::OK => false,
            status::OFFERED => true,
            status::NOT_SERVING => return Err(SessionError::NotServing),
            status::BUSY => return Err(SessionError::Busy),
            status::TAKEN => return Err(SessionError::Taken),
            status::VERSION => return Err(SessionError::Version),
            status::BURNT => return Err(SessionError::SaidBurnt),
            status::TRY_LATER => {
                let mut secs = [0u8; 2];
                stream.read_exact(&mut secs).await?;
                return Err(SessionError::TryLater { secs: u16::from_be_bytes(secs) });
            }
            _ => return Err(SessionError::Protocol("unknown hello status")),
        };
        let mut reply = [0u8; SPAKE_MSG_LEN + CONFIRM_LEN];
        stream.read_exact(&mut reply).await?;
        // Checking the peer's confirmation is where an impostor's guess is tested: not
        // once the limit is reached.
        if impostors.exhausted() {
            let _ = stream.close().await;
            return Err(SessionError::Guessing { peers: impostors.count() });
        }
        let (msg_a, their_confirm) = reply.split_at(SPAKE_MSG_LEN);
        let shared = Zeroizing::new(
            spake.finish(msg_a).map_err(|_| SessionError::Protocol("bad SPAKE2 message"))?,
        );
        let transcript = [&hello[..], msg_a].concat();
        let keys = derive(&shared, &transcript, false);
        let confirmed = bool::from(keys.confirm_theirs.as_ref().ct_eq(their_confirm));
        if !confirmed {
            // Booked before the next await, so that attempts running side by side
            // cannot all pass the check above (see `guesses`).
            impostors.book();
        }
        // Send ours first, whatever theirs says, so that a sender facing a wrong code
        // counts the attempt instead of waiting for a timeout.
        stream.write_all(keys.confirm_mine.as_ref()).await?;
        stream.flush().await?;
        if !confirmed {
            // The sender says in one byte whether this guess burnt its code (or came
            // after); a close or silence means a plain wrong code. The early frame comes
            // first: skipped unopened, and no longer than it can be.
            let said = tokio::time::timeout(VERDICT_TIMEOUT, async {
                if early {
                    let mut skipped = Vec::new();
                    crate::framing::read_frame_into(&mut stream, &mut skipped, EARLY_FRAME_LEN)
                        .await
                        .map_err(|_| ())?;
                }
                let mut verdict = [0u8; 1];
                stream.read_exact(&mut verdict).await.map_err(|_| ())?;
                Ok::<u8, ()>(verdict[0])
            });
            return Err(match said.await {
                Ok(Ok(status::BURNT)) => SessionError::Burnt,
                _ => SessionError::WrongCode,
            });
        }
        let mut session = Session::new(stream, sender, Role::Sender, keys);
        if early {
            let (plain, _) = session.reader.next_open().await?;
            session.pending = Some(plain);
        }
        Ok(session)
    }

    /// Sender side: reads the hello, answers it, runs SPAKE2 and checks the receiver's
    /// confirmation. `serving` decides whether a hello's slot is ours. Each read has its
    /// own [`PRE_AUTH_TIMEOUT`].
    ///
    /// # Errors
    /// [`SessionError::NotServing`] and failures before the reply (no attempt spent);
    /// [`SessionError::PeerWrongCode`] for any failure after it (an attempt spent).
    #[cfg(any(test, feature = "adversary"))]
    pub(crate) async fn accept(
        mut stream: S,
        code: &Code,
        serving: impl Fn(Rendezvous) -> bool,
        me: PeerId,
        receiver: PeerId,
    ) -> Result<Session<S>, SessionError> {
        let hello = read_hello(&mut stream).await?;
        let guesses = Guesses::new(u32::MAX);
        let origin = Origin::Peer(receiver);
        Self::answer(stream, &hello, code, serving, (me, receiver, &origin), &guesses, None).await
    }

    /// The sender's handshake after the [`Hello`]: answers it, runs SPAKE2 and checks
    /// the receiver's confirmation, within what `guesses` (shared by the sender's
    /// concurrent handshakes) lets the receiver's `origin` do: a hello from an origin
    /// that must wait is answered [`status::TRY_LATER`], and once the code is burnt one
    /// is answered [`status::BURNT`] ([`SessionError::Burnt`] here), both before any
    /// SPAKE2 message. `early`, the offer if the sender knows it already, goes out
    /// behind the reply to a receiver that takes it there, if it fits the early frame
    /// (status 7, see the module docs; [`Session::take_offered`] says whether it did).
    ///
    /// # Errors
    /// [`SessionError::NotServing`], [`SessionError::TryLater`] and failures before the
    /// reply (no attempt spent); [`SessionError::PeerWrongCode`] for any failure after it
    /// (an attempt spent); and [`SessionError::Burnt`].
    pub(crate) async fn answer(
        mut stream: S,
        hello: &Hello,
        code: &Code,
        serving: impl Fn(Rendezvous) -> bool,
        (me, receiver, origin): (PeerId, PeerId, &Origin),
        guesses: &Guesses,
        early: Option<&Offer>,
    ) -> Result<Session<S>, SessionError> {
        let hello = &hello.0;
        Self::check_hello(&mut stream, hello, code, serving).await?;
        // Said before our SPAKE2 message, so nothing can be tested.
        let mut ticket = Self::gate(&mut stream, guesses, origin).await?;
        // A peer that already hung up (or sent more than a hello) gets no reply: without
        // our SPAKE2 message and confirmation it cannot test a guess, so this costs the
        // code nothing. A real receiver waits for the reply. (One that hangs up later
        // has had its guess, and pays below.)
        let mut probe = [0u8; 1];
        if futures::FutureExt::now_or_never(stream.read(&mut probe)).is_some() {
            return Err(SessionError::Protocol("the peer hung up after its hello"));
        }
        let msg_b = &hello[14..];
        let (id_a, id_b) = identities(&me, &receiver);
        let (spake, msg_a) = Spake2::<Ed25519Group>::start_a(
            &Password::new(code.password().as_bytes()),
            &id_a,
            &id_b,
        );
        let shared = Zeroizing::new(
            spake.finish(msg_b).map_err(|_| SessionError::Protocol("bad SPAKE2 message"))?,
        );
        let transcript = [&hello[..], &msg_a[..]].concat();
        let keys = derive(&shared, &transcript, true);
        // Every receiver that takes the early frame gets one, with or without an offer.
        let early = (hello[3] >= EARLY_OFFER_VERSION).then(|| early_frame(early));
        let mut reply = Vec::with_capacity(1 + SPAKE_MSG_LEN + CONFIRM_LEN);
        reply.push(if early.is_some() { status::OFFERED } else { status::OK });
        reply.extend_from_slice(&msg_a);
        reply.extend_from_slice(keys.confirm_mine.as_ref());
        let confirm_theirs = keys.confirm_theirs.clone();
        // From here on the peer may hold our SPAKE2 message and confirmation: it has had
        // its one guess. Anything but a matching confirmation (a wrong one, a closed
        // stream, silence, this future dropped) MUST count as a failed attempt, or a
        // guesser could hang up after each try and never burn the code.
        ticket.arm();
        // The session's halves from here, so that the early frame is its frame 0.
        let mut session = Session::new(stream, receiver, Role::Receiver, keys);
        let (early_plain, offered) = early.unzip();
        let written = async {
            session.writer.raw().write_all(&reply).await?;
            match early_plain {
                // `send` flushes.
                Some(plain) => session.writer.send(plain, false).await?,
                None => session.writer.raw().flush().await?,
            }
            Ok::<(), SessionError>(())
        };
        if written.await.is_err() {
            // Armed: the peer may have had its guess. A stream that broke under our
            // reply has no ear for the verdict.
            ticket.fail();
            return Err(SessionError::PeerWrongCode { peer: receiver });
        }
        let mut theirs = [0u8; CONFIRM_LEN];
        let read = session.reader.raw().read_exact(&mut theirs);
        let confirmed = tokio::time::timeout(PRE_AUTH_TIMEOUT, read).await;
        if !matches!(confirmed, Ok(Ok(()))) || !bool::from(confirm_theirs.as_ref().ct_eq(&theirs)) {
            // Spent before anything is written back, so that the byte below is decided
            // by the count alone.
            if ticket.fail() {
                refuse(session.writer.raw(), status::BURNT).await;
            } else {
                let _ = session.writer.raw().close().await;
            }
            return Err(SessionError::PeerWrongCode { peer: receiver });
        }
        // The right code cannot find the code burnt here: its own guess was in flight,
        // so the others could not spend the whole budget (see `guesses`).
        ticket.succeed();
        session.offered = offered.flatten().map(Box::new);
        Ok(session)
    }

    /// A hello this sender answers: pcp's, of our version, for our code's channel and a
    /// slot we serve. Anything else is refused (told so where the peer can use it)
    /// before any SPAKE2 message.
    async fn check_hello(
        stream: &mut S,
        hello: &[u8; HELLO_LEN],
        code: &Code,
        serving: impl Fn(Rendezvous) -> bool,
    ) -> Result<(), SessionError> {
        if &hello[..3] != MAGIC {
            return Err(SessionError::Protocol("bad hello"));
        }
        if !(OLDEST_VERSION..=VERSION).contains(&hello[3]) {
            refuse(stream, status::VERSION).await;
            return Err(SessionError::Version);
        }
        let channel = u16::from_be_bytes([hello[4], hello[5]]);
        let mut slot = [0u8; 8];
        slot.copy_from_slice(&hello[6..14]);
        let at = Rendezvous { channel, slot: u64::from_be_bytes(slot) };
        if at.channel != code.channel() || !serving(at) {
            refuse(stream, status::NOT_SERVING).await;
            return Err(SessionError::NotServing);
        }
        Ok(())
    }

    /// The origin's turn at the code: a ticket for one guess, or the refusal (burnt, or
    /// come back later) said to the peer.
    async fn gate<'g>(
        stream: &mut S,
        guesses: &'g Guesses,
        origin: &Origin,
    ) -> Result<Ticket<'g>, SessionError> {
        match guesses.gate(origin) {
            Gate::Open(ticket) => Ok(ticket),
            Gate::Burnt => {
                refuse(stream, status::BURNT).await;
                Err(SessionError::Burnt)
            }
            Gate::Wait(d) => {
                let secs = u16::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u16::MAX).max(1);
                let [a, b] = secs.to_be_bytes();
                // Best effort, like every refusal.
                let _ = stream.write_all(&[status::TRY_LATER, a, b]).await;
                let _ = stream.close().await;
                Err(SessionError::TryLater { secs })
            }
        }
    }

    /// Tells a peer that this sender is busy, and closes the stream.
    pub(crate) async fn refuse_busy(mut stream: S) {
        refuse(&mut stream, status::BUSY).await;
    }

    /// Tells a peer "taken" (this sender sends to another receiver and will take no
    /// other) or else "busy", and closes the stream.
    pub(crate) async fn refuse_with(mut stream: S, taken: bool) {
        refuse(&mut stream, if taken { status::TAKEN } else { status::BUSY }).await;
    }

    fn new(stream: S, peer: PeerId, them: Role, keys: Keys) -> Session<S> {
        let (r, w) = stream.split();
        Session {
            peer,
            them,
            // Waiting for a person (the consent prompt) is the only open-ended wait;
            // the callers that need it lift the deadline with `recv_within(None)`.
            reader: FrameReader::new(r, Opener::new(keys.recv), Some(DEAD_AFTER)),
            writer: FrameWriter::new(w, Sealer::new(keys.send), Some(DEAD_AFTER)),
            offered: None,
            pending: None,
        }
    }

    /// The offer this sender's session sent in the handshake's early frame (see the
    /// module docs), if it did: then it MUST NOT send one again.
    pub(crate) fn take_offered(&mut self) -> Option<Offer> {
        self.offered.take().map(|o| *o)
    }

    /// The authenticated peer.
    #[must_use]
    pub(crate) fn peer(&self) -> PeerId {
        self.peer
    }

    /// Seals and writes one control message; messages that end a direction go in a
    /// LAST frame.
    ///
    /// # Errors
    /// Stream failures, and a write that does not finish within [`DEAD_AFTER`].
    pub(crate) async fn send(&mut self, msg: &Control) -> Result<(), SessionError> {
        send(&mut self.writer, msg).await
    }

    /// Reads, opens and decodes one control message, waiting at most [`DEAD_AFTER`].
    ///
    /// # Errors
    /// As for [`Session::recv_within`].
    pub(crate) async fn recv(&mut self) -> Result<Control, SessionError> {
        self.recv_within(Some(DEAD_AFTER)).await
    }

    /// Reads, opens and decodes one control message, waiting at most `limit` (none:
    /// as long as it takes, for an answer that waits for a person).
    ///
    /// # Errors
    /// EOF ([`FrameError::Truncated`]), silence ([`FrameError::Timeout`]),
    /// authentication failures, malformed messages, an `Error` message from the peer
    /// ([`SessionError::Remote`]) and a `Cancel` ([`SessionError::Cancelled`]).
    pub(crate) async fn recv_within(
        &mut self,
        limit: Option<Duration>,
    ) -> Result<Control, SessionError> {
        if let Some(plain) = self.pending.take()
            && let Some(offer) = early_offer_of(&plain)?
        {
            return Ok(Control::Offer(offer));
        }
        self.reader.set_deadline(limit);
        let got = self.reader.next_open().await;
        self.reader.set_deadline(Some(DEAD_AFTER));
        let (plain, _) = got?;
        match Control::decode(&plain)? {
            Control::Error(message) => Err(SessionError::Remote { from: self.them, message }),
            Control::Cancel => Err(SessionError::Cancelled),
            other => Ok(other),
        }
    }

    /// Waits until the peer sends something or its side ends, reading no message:
    /// what it sent is the next [`Session::recv`]'s. For a wait on our own user,
    /// during which an honest peer sends nothing but keepalives and a last word
    /// (`Cancel`, `Error`).
    ///
    /// # Cancel safety
    /// Cancel safe (see `FrameReader::stirred`).
    pub(crate) async fn stirred(&mut self) {
        if self.pending.is_none() {
            self.reader.stirred().await;
        }
    }

    /// After our last frame: closes our side and waits, at most `limit`, for the peer
    /// to close its own, so that the frame is not lost when the process exits.
    pub(crate) async fn linger(&mut self, limit: Duration) {
        self.writer.close().await;
        self.reader.drain(limit).await;
    }

    /// Sends a LAST message (Decline, Cancel, Error) and lingers; best effort, since
    /// the peer may be gone already.
    pub(crate) async fn say_last(&mut self, msg: &Control, limit: Duration) {
        if self.send(msg).await.is_ok() {
            self.linger(limit).await;
        }
    }

    /// Splits the session for the data phase: the peer and both directions.
    pub(crate) fn into_parts(
        self,
    ) -> (PeerId, FrameReader<ReadHalf<S>>, FrameWriter<WriteHalf<S>>) {
        (self.peer, self.reader, self.writer)
    }
}

/// Seals and writes one control message through `w`, in a LAST frame when the message
/// ends a direction.
///
/// # Errors
/// Stream failures and [`FrameError::Timeout`].
pub(crate) async fn send<W: AsyncWrite + Unpin>(
    w: &mut FrameWriter<W>,
    msg: &Control,
) -> Result<(), SessionError> {
    Ok(w.send(msg.encode(), msg.is_last()).await?)
}

/// A receiver's hello: magic, version, the rendezvous it looks for, its SPAKE2 message
/// (the wire format in the module docs).
fn hello_bytes(version: u8, at: Rendezvous, msg_b: &[u8]) -> [u8; HELLO_LEN] {
    let mut hello = [0u8; HELLO_LEN];
    let (magic, rest) = hello.split_at_mut(MAGIC.len());
    magic.copy_from_slice(MAGIC);
    rest[0] = version;
    rest[1..3].copy_from_slice(&at.channel.to_be_bytes());
    rest[3..11].copy_from_slice(&at.slot.to_be_bytes());
    rest[11..].copy_from_slice(msg_b);
    hello
}

/// The early frame's plaintext (see the module docs) for `offer`, and the offer if it
/// fitted (else the frame carries none and the offer comes after the confirmation).
fn early_frame(offer: Option<&Offer>) -> (Vec<u8>, Option<Offer>) {
    let mut plain = vec![0u8; EARLY_PLAIN_LEN];
    if let Some(offer) = offer {
        let msg = Control::Offer(offer.clone()).encode();
        if let Ok(len) = u16::try_from(msg.len())
            && msg.len() <= EARLY_PLAIN_LEN - 2
        {
            plain[..2].copy_from_slice(&len.to_be_bytes());
            plain[2..2 + msg.len()].copy_from_slice(&msg);
            return (plain, Some(offer.clone()));
        }
    }
    (plain, None)
}

/// The offer in an opened early frame, if it holds one.
///
/// # Errors
/// [`SessionError::Protocol`] for a frame of another length, a length past its end or a
/// message that is not an `Offer`; malformed messages.
fn early_offer_of(plain: &[u8]) -> Result<Option<Offer>, SessionError> {
    let bad = SessionError::Protocol("malformed early frame");
    if plain.len() != EARLY_PLAIN_LEN {
        return Err(bad);
    }
    let len = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
    if len == 0 {
        return Ok(None);
    }
    match Control::decode(plain.get(2..2 + len).ok_or(bad)?)? {
        Control::Offer(offer) => Ok(Some(offer)),
        _ => Err(SessionError::Protocol("the early frame holds no offer")),
    }
}

/// A receiver's hello, as read; [`Session::answer`] checks it.
#[derive(Debug, Clone)]
pub(crate) struct Hello([u8; HELLO_LEN]);

/// Reads a receiver's hello, waiting at most [`PRE_AUTH_TIMEOUT`]: a sender reads it
/// before it knows whether the stream deserves a handshake slot for longer.
///
/// # Errors
/// [`SessionError::Timeout`] and stream failures.
pub(crate) async fn read_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Hello, SessionError> {
    let mut hello = [0u8; HELLO_LEN];
    match tokio::time::timeout(PRE_AUTH_TIMEOUT, stream.read_exact(&mut hello)).await {
        Ok(r) => r?,
        Err(_) => return Err(SessionError::Timeout),
    }
    Ok(Hello(hello))
}

/// Answers a hello "burnt" whatever it says, before any key exchange, as anyone can:
/// for the tests and the adversary.
///
/// # Errors
/// As for [`read_hello`].
#[cfg(any(test, feature = "adversary"))]
pub(crate) async fn claim_burnt<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
) -> Result<(), SessionError> {
    read_hello(&mut stream).await?;
    refuse(&mut stream, status::BURNT).await;
    Ok(())
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, code: u8) {
    // Best effort: the peer may already be gone, and this refusal is a courtesy.
    let _ = stream.write_all(&[code]).await;
    let _ = stream.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    /// An in-memory duplex pipe, both ends futures-io.
    fn duplex() -> (impl AsyncRead + AsyncWrite + Unpin, impl AsyncRead + AsyncWrite + Unpin) {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (a, b) = tokio::io::duplex(1 << 16);
        (a.compat(), b.compat())
    }

    fn code(s: &str) -> Code {
        s.parse().expect("valid code")
    }

    async fn pair(
        sender_code: &str,
        receiver_code: &str,
    ) -> (
        Result<Session<impl AsyncRead + AsyncWrite + Unpin>, SessionError>,
        Result<Session<impl AsyncRead + AsyncWrite + Unpin>, SessionError>,
    ) {
        let (a, b) = duplex();
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let sc = code(sender_code);
        let rc = code(receiver_code);
        let at = Rendezvous { channel: rc.channel(), slot: 300 };
        tokio::join!(
            Session::accept(a, &sc, |r| r.slot == 300, s_id, r_id),
            Session::connect(b, &rc, at, r_id, s_id)
        )
    }

    #[tokio::test]
    async fn right_code_talks() {
        let (s, r) = pair("bubble-enemy-result-increase", "bubble-enemy-result-increase").await;
        let (mut s, mut r) = (s.expect("sender ok"), r.expect("receiver ok"));
        s.send(&Control::Accept).await.expect("send");
        assert_eq!(r.recv().await.expect("recv"), Control::Accept);
        r.send(&Control::Done).await.expect("send");
        assert_eq!(s.recv().await.expect("recv"), Control::Done);
    }

    /// One handshake from `origin` against a sender that shares `guesses`: (sender
    /// side, receiver side).
    async fn counted(
        guesses: &Guesses,
        receiver_code: &str,
        origin: &Origin,
    ) -> (Result<(), SessionError>, Result<(), SessionError>) {
        counted_offering(guesses, receiver_code, origin, None).await
    }

    /// [`counted`], the sender offering `early` behind its reply.
    async fn counted_offering(
        guesses: &Guesses,
        receiver_code: &str,
        origin: &Origin,
        early: Option<&Offer>,
    ) -> (Result<(), SessionError>, Result<(), SessionError>) {
        let (mut a, b) = duplex();
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let sc = code("bubble-enemy-result-increase");
        let rc = code(receiver_code);
        let at = Rendezvous { channel: rc.channel(), slot: 300 };
        let sender = async {
            let hello = read_hello(&mut a).await?;
            let who = (s_id, r_id, origin);
            Session::answer(a, &hello, &sc, |r| r.slot == 300, who, guesses, early).await
        };
        let (s, r) = tokio::join!(sender, Session::connect(b, &rc, at, r_id, s_id));
        (s.map(drop), r.map(drop))
    }

    fn an_offer() -> Offer {
        Offer {
            kind: crate::message::Kind::File,
            name: "report.pdf".into(),
            size: Some(12_345),
            entries: Vec::new(),
            chunk_size: 1 << 20,
            files: None,
            kinds: Vec::new(),
        }
    }

    /// An archive offer of 1000 top-level entries: more than the early frame holds.
    fn an_archive_too_large_to_come_early() -> Offer {
        let many: Vec<String> = (0..1000).map(|i| format!("part-{i:04}")).collect();
        Offer {
            kind: crate::message::Kind::Archive,
            kinds: vec![crate::message::TopKind::File; many.len()],
            entries: many,
            files: Some(1000),
            ..an_offer()
        }
    }

    /// A hand-made sender's reply to `hello` with `password` (status 7, its SPAKE2
    /// message and confirmation), and its session keys.
    fn hand_made_reply(
        hello: &Hello,
        password: &[u8],
        s_id: PeerId,
        r_id: PeerId,
    ) -> (Vec<u8>, Keys) {
        let (id_a, id_b) = identities(&s_id, &r_id);
        let (spake, msg_a) =
            Spake2::<Ed25519Group>::start_a(&Password::new(password), &id_a, &id_b);
        let shared = spake.finish(&hello.0[14..]).expect("finish");
        let keys = derive(&shared, &[&hello.0[..], &msg_a[..]].concat(), true);
        let mut reply = vec![status::OFFERED];
        reply.extend_from_slice(&msg_a);
        reply.extend_from_slice(keys.confirm_mine.as_ref());
        (reply, keys)
    }

    /// The rendezvous of `c` in slot 300, where the tests' hellos look.
    fn at_300(c: &Code) -> Rendezvous {
        Rendezvous { channel: c.channel(), slot: 300 }
    }

    /// A version-`version` hello from a receiver holding `c`, and its SPAKE2 state.
    fn hello_of(
        version: u8,
        c: &Code,
        s_id: PeerId,
        r_id: PeerId,
    ) -> (Spake2<Ed25519Group>, Vec<u8>) {
        let (id_a, id_b) = identities(&s_id, &r_id);
        let (spake, msg_b) =
            Spake2::<Ed25519Group>::start_b(&Password::new(c.password().as_bytes()), &id_a, &id_b);
        (spake, hello_bytes(version, at_300(c), &msg_b).to_vec())
    }

    /// Issue 16: a sender that knows its offer sends it behind the reply (status 7),
    /// before the receiver has confirmed: the receiver reads it without a round trip
    /// more, opens it only after its check of the sender passed, and the sender knows
    /// not to send it again.
    #[tokio::test]
    async fn the_offer_comes_behind_the_reply_before_the_receivers_confirmation() {
        let (a, mut b) = duplex();
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let c = code("bubble-enemy-result-increase");
        let offer = an_offer();
        let receiver = async {
            let (spake, hello) = hello_of(VERSION, &c, s_id, r_id);
            b.write_all(&hello).await.expect("hello");
            let mut reply = [0u8; 1 + SPAKE_MSG_LEN + CONFIRM_LEN];
            b.read_exact(&mut reply).await.expect("reply");
            assert_eq!(reply[0], status::OFFERED);
            // Before our confirmation: a sender that waited for it would never send
            // this (the timeout is the failure, not a wait for something).
            let mut body = Vec::new();
            let max = crate::framing::MAX_FRAME_LEN;
            let read = crate::framing::read_frame_into(&mut b, &mut body, max);
            let frame = tokio::time::timeout(Duration::from_secs(10), read).await;
            let frame = frame.expect("no frame before the confirmation").expect("a frame");
            assert_eq!(frame.map(|h| h.len), Some(EARLY_FRAME_LEN));
            let msg_a = &reply[1..=SPAKE_MSG_LEN];
            let shared = spake.finish(msg_a).expect("finish");
            let keys = derive(&shared, &[&hello[..], msg_a].concat(), false);
            assert!(bool::from(keys.confirm_theirs.as_ref().ct_eq(&reply[1 + SPAKE_MSG_LEN..])));
            b.write_all(keys.confirm_mine.as_ref()).await.expect("confirm");
            b.flush().await.expect("flush");
        };
        let sending = async {
            let mut a = a;
            let hello = read_hello(&mut a).await.expect("hello");
            let who = (s_id, r_id, &anywhere());
            let guesses = Guesses::new(3);
            Session::answer(a, &hello, &c, |r| r.slot == 300, who, &guesses, Some(&offer))
                .await
                .map(|mut s| s.take_offered())
        };
        let (offered, ()) = tokio::join!(sending, receiver);
        assert_eq!(offered.expect("the handshake"), Some(an_offer()), "the session knows");

        // Through the library's receiver: the offer is its first message.
        let (a, b) = duplex();
        let at = Rendezvous { channel: c.channel(), slot: 300 };
        let sending = async {
            let mut a = a;
            let hello = read_hello(&mut a).await?;
            let who = (s_id, r_id, &anywhere());
            let guesses = Guesses::new(3);
            Session::answer(a, &hello, &c, |r| r.slot == 300, who, &guesses, Some(&offer)).await
        };
        let (s, r) = tokio::join!(sending, Session::connect(b, &c, at, r_id, s_id));
        let (_s, mut r) = (s.expect("sender"), r.expect("receiver"));
        assert_eq!(r.recv().await.expect("the first frame"), Control::Offer(an_offer()));
    }

    /// Review of issue 16: every version-2 hello gets status 7 and an early frame of one
    /// length, whatever it holds (no offer, a file's, a long name's, an archive's too
    /// large for it), so that a guesser, who cannot open it, learns nothing from it. An
    /// offer that did not fit is not taken as sent.
    #[tokio::test]
    async fn the_early_frame_is_one_length_whatever_it_holds() {
        let long = Offer { name: "n".repeat(255), ..an_offer() };
        let archive = an_archive_too_large_to_come_early();
        let guesses = Guesses::new(u32::MAX);
        for early in [None, Some(&an_offer()), Some(&long), Some(&archive)] {
            let (mut a, mut b) = duplex();
            let (s_id, r_id) = (PeerId::random(), PeerId::random());
            let guesser = async {
                let (_, hello) =
                    hello_of(VERSION, &code("bubble-enemy-result-abandon"), s_id, r_id);
                b.write_all(&hello).await.expect("hello");
                let mut reply = [0u8; 1 + SPAKE_MSG_LEN + CONFIRM_LEN];
                b.read_exact(&mut reply).await.expect("reply");
                let mut body = Vec::new();
                let max = crate::framing::MAX_FRAME_LEN;
                let frame = crate::framing::read_frame_into(&mut b, &mut body, max).await;
                b.close().await.expect("hang up");
                (reply[0], frame.expect("the early frame").map(|h| h.len))
            };
            let sending = async {
                let c = code("bubble-enemy-result-increase");
                let hello = read_hello(&mut a).await.expect("hello");
                let who = (s_id, r_id, &anywhere());
                Session::answer(a, &hello, &c, |r| r.slot == 300, who, &guesses, early).await
            };
            let (s, seen) = tokio::join!(sending, guesser);
            assert!(matches!(s, Err(SessionError::PeerWrongCode { .. })), "{s:?}");
            assert_eq!(
                seen,
                (status::OFFERED, Some(EARLY_FRAME_LEN)),
                "{:?}",
                early.map(|o| &o.name)
            );
        }
        // What each frame holds, as the right code opens it.
        assert_eq!(early_offer_of(&early_frame(None).0).expect("none"), None);
        for fits in [an_offer(), long] {
            let (plain, sent) = early_frame(Some(&fits));
            assert_eq!(sent.as_ref(), Some(&fits));
            assert_eq!(early_offer_of(&plain).expect("opens"), Some(fits));
        }
        let (plain, sent) = early_frame(Some(&archive));
        assert_eq!((sent, early_offer_of(&plain).expect("opens")), (None, None), "too large");
    }

    /// Review of issue 16: a peer that takes the reply's start but never reads on (here
    /// the early frame cannot be written) has had its guess: the handshake fails as a
    /// wrong code, which the sender counts and reports, not as a stream error.
    #[tokio::test(start_paused = true)]
    async fn a_reply_that_cannot_be_written_is_a_spent_guess() {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (a, b) = tokio::io::duplex(1024);
        let (mut a, mut b) = (a.compat(), b.compat());
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let c = code("bubble-enemy-result-increase");
        let (_, hello) = hello_of(VERSION, &c, s_id, r_id);
        b.write_all(&hello).await.expect("hello");
        let guesses = Guesses::new(3);
        let hello = read_hello(&mut a).await.expect("hello");
        let who = (s_id, r_id, &anywhere());
        let started = tokio::time::Instant::now();
        let s = Session::answer(a, &hello, &c, |r| r.slot == 300, who, &guesses, None).await;
        assert!(matches!(s, Err(SessionError::PeerWrongCode { .. })), "{s:?}");
        assert_eq!(started.elapsed(), DEAD_AFTER, "the write gave up, not the read after it");
        assert_eq!(guesses.left(), 2);
        drop(b);
    }

    /// A receiver with a wrong code skips the early frame reading no more than the
    /// early frame's length: a longer one ends the handshake as a wrong code, unread
    /// (with the general frame limit it would read on and hear "burnt").
    #[tokio::test]
    async fn a_wrong_code_skips_no_more_than_an_early_frame() {
        let (mut a, b) = duplex();
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let c = code("bubble-enemy-result-increase");
        let sender = async {
            let hello = read_hello(&mut a).await.expect("hello");
            let (mut out, _) = hand_made_reply(&hello, b"not the code", s_id, r_id);
            let len = EARLY_FRAME_LEN + 1;
            out.extend_from_slice(&len.to_be_bytes());
            out.resize(out.len() + len as usize, 0);
            out.push(status::BURNT);
            a.write_all(&out).await.expect("reply");
            a.flush().await.expect("flush");
            a
        };
        let (_a, r) = tokio::join!(sender, Session::connect(b, &c, at_300(&c), r_id, s_id));
        assert!(matches!(r, Err(SessionError::WrongCode)), "{r:?}");
    }

    /// A sender that proved the code but sends a malformed early frame fails the
    /// receiver's first message, as any bad first message does: not the handshake,
    /// which the search would retry against the same sender.
    #[tokio::test]
    async fn a_malformed_early_frame_fails_the_first_message() {
        let (mut a, b) = duplex();
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let c = code("bubble-enemy-result-increase");
        let sender = async {
            let hello = read_hello(&mut a).await.expect("hello");
            let (reply, keys) = hand_made_reply(&hello, c.password().as_bytes(), s_id, r_id);
            let mut s = Session::new(a, r_id, Role::Receiver, keys);
            s.writer.raw().write_all(&reply).await.expect("reply");
            s.writer.send(vec![0xff; 16], false).await.expect("early frame");
            s
        };
        let (_s, r) = tokio::join!(sender, Session::connect(b, &c, at_300(&c), r_id, s_id));
        let mut r = r.expect("the handshake itself succeeds");
        assert!(matches!(r.recv().await, Err(SessionError::Protocol(_))));
    }

    /// An offer too large for the early frame is not taken as sent: the sender sends
    /// it after the confirmation, and it is the receiver's first message all the same.
    #[tokio::test]
    async fn an_offer_too_large_for_the_early_frame_comes_after_the_confirmation() {
        let (mut a, b) = duplex();
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let c = code("bubble-enemy-result-increase");
        let archive = an_archive_too_large_to_come_early();
        let guesses = Guesses::new(3);
        let sending = async {
            let hello = read_hello(&mut a).await?;
            let who = (s_id, r_id, &anywhere());
            Session::answer(a, &hello, &c, |r| r.slot == 300, who, &guesses, Some(&archive)).await
        };
        let (s, r) = tokio::join!(sending, Session::connect(b, &c, at_300(&c), r_id, s_id));
        let (mut s, mut r) = (s.expect("sender"), r.expect("receiver"));
        assert_eq!(s.take_offered(), None, "not sent early");
        s.send(&Control::Offer(archive.clone())).await.expect("the offer");
        assert_eq!(r.recv().await.expect("the first message"), Control::Offer(archive));
    }

    /// An early frame that says more than it holds, or holds something else than an
    /// offer, is a broken handshake, not a panic.
    #[test]
    fn a_malformed_early_frame_is_refused() {
        let mut plain = early_frame(None).0;
        plain[..2].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(early_offer_of(&plain), Err(SessionError::Protocol(_))));
        let accept = Control::Accept.encode();
        let mut plain = vec![0u8; EARLY_PLAIN_LEN];
        plain[..2].copy_from_slice(&(accept.len() as u16).to_be_bytes());
        plain[2..2 + accept.len()].copy_from_slice(&accept);
        assert!(matches!(early_offer_of(&plain), Err(SessionError::Protocol(_))));
        assert!(matches!(early_offer_of(&[0u8; 16]), Err(SessionError::Protocol(_))));
    }

    /// A version-1 receiver (before status 7) gets the plain reply, whatever the
    /// sender knows.
    #[tokio::test]
    async fn a_version_one_hello_gets_no_early_offer() {
        let (mut a, mut b) = duplex();
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let c = code("bubble-enemy-result-increase");
        let offer = an_offer();
        let receiver = async {
            let (_, hello) = hello_of(1, &c, s_id, r_id);
            b.write_all(&hello).await.expect("hello");
            let mut reply = [0u8; 1 + SPAKE_MSG_LEN + CONFIRM_LEN];
            b.read_exact(&mut reply).await.expect("reply");
            b.close().await.expect("hang up");
            reply[0]
        };
        let sending = async {
            let hello = read_hello(&mut a).await.expect("hello");
            let who = (s_id, r_id, &anywhere());
            let guesses = Guesses::new(3);
            Session::answer(a, &hello, &c, |r| r.slot == 300, who, &guesses, Some(&offer)).await
        };
        let (s, st) = tokio::join!(sending, receiver);
        assert_eq!(st, status::OK);
        assert!(matches!(s, Err(SessionError::PeerWrongCode { .. })), "{s:?}");
    }

    /// A wrong code facing an early offer: the receiver skips the frame it cannot
    /// open, and still hears the verdict, "burnt" for the guess that burns the code.
    #[tokio::test]
    async fn a_wrong_code_skips_the_early_offer_and_hears_the_verdict() {
        const WRONG: &str = "bubble-enemy-result-abandon";
        let guesses = Guesses::new(2);
        let offer = an_offer();
        let (s, r) = counted_offering(&guesses, WRONG, &anywhere(), Some(&offer)).await;
        assert!(matches!(s, Err(SessionError::PeerWrongCode { .. })), "{s:?}");
        assert!(matches!(r, Err(SessionError::WrongCode)), "{r:?}");
        let (s, r) = counted_offering(&guesses, WRONG, &anywhere(), Some(&offer)).await;
        assert!(matches!(s, Err(SessionError::PeerWrongCode { .. })), "{s:?}");
        assert!(matches!(r, Err(SessionError::Burnt)), "the last guess: {r:?}");
    }

    fn anywhere() -> Origin {
        Origin::Peer(PeerId::random())
    }

    /// Issue 9, item 9: the receiver whose guess burns the code, and any after it, are
    /// told "burnt" (not a plain wrong code); before that, a wrong code is just that.
    #[tokio::test]
    async fn the_guess_that_burns_the_code_is_told_so_and_so_is_any_later_hello() {
        const WRONG: &str = "bubble-enemy-result-abandon";
        const BUDGET: u32 = 3;
        let guesses = Guesses::new(BUDGET);
        for left in (1..BUDGET).rev() {
            let (s, r) = counted(&guesses, WRONG, &anywhere()).await;
            assert!(matches!(s, Err(SessionError::PeerWrongCode { .. })), "{s:?}");
            assert!(matches!(r, Err(SessionError::WrongCode)), "{r:?}");
            assert_eq!(guesses.left(), left);
        }
        let (s, r) = counted(&guesses, WRONG, &anywhere()).await;
        assert!(matches!(s, Err(SessionError::PeerWrongCode { .. })), "{s:?}");
        assert!(matches!(r, Err(SessionError::Burnt)), "the last guess: {r:?}");
        assert!(guesses.burnt());
        let e = crate::Error::Session(r.expect_err("burnt"));
        assert_eq!(e.kind(), crate::ErrorKind::CodeBurnt);
        assert!(e.to_string().contains("someone else tried this code; start again with a new one"));

        // Later hellos are refused before any SPAKE2 message: no guess can be tested,
        // and even the right code is told the code is burnt (which it cannot take as
        // proven: anyone can say so before the key exchange).
        for later in [WRONG, "bubble-enemy-result-increase"] {
            let (s, r) = counted(&guesses, later, &anywhere()).await;
            assert!(matches!(s, Err(SessionError::Burnt)), "{s:?}");
            assert!(matches!(r, Err(SessionError::SaidBurnt)), "{r:?}");
        }
        assert_eq!(guesses.left(), 0);
    }

    /// Issue 14, item 6: past its free tries an origin is told on the wire to try again
    /// later, at no cost to the code, while another origin goes straight through.
    #[tokio::test]
    async fn an_origin_past_its_free_tries_is_told_to_try_later() {
        const WRONG: &str = "bubble-enemy-result-abandon";
        let guesses = Guesses::new(256);
        let guesser = Origin::Ipv4("198.18.0.2".parse().expect("ip"));
        for _ in 0..guesses::FREE_PER_ORIGIN {
            let (s, _) = counted(&guesses, WRONG, &guesser).await;
            assert!(matches!(s, Err(SessionError::PeerWrongCode { .. })), "{s:?}");
        }
        let (s, r) = counted(&guesses, "bubble-enemy-result-increase", &guesser).await;
        assert!(matches!(s, Err(SessionError::TryLater { secs: 1 })), "{s:?}");
        assert!(matches!(r, Err(SessionError::TryLater { secs: 1 })), "{r:?}");
        assert_eq!(guesses.left(), 256 - guesses::FREE_PER_ORIGIN, "waiting costs nothing");
        let elsewhere = Origin::Ipv4("198.18.0.3".parse().expect("ip"));
        let (s, r) = counted(&guesses, "bubble-enemy-result-increase", &elsewhere).await;
        assert!(s.is_ok() && r.is_ok(), "{s:?} {r:?}");
    }

    /// Issue 14, item 5: a receiver checks the confirmations of at most
    /// [`guesses::MAX_IMPOSTORS`] peers that do not know the code; past that it stops
    /// without testing another guess.
    #[tokio::test]
    async fn a_receiver_tests_a_bounded_number_of_impostors() {
        let impostors = Impostors::new(guesses::MAX_IMPOSTORS);
        let rc = code("bubble-enemy-result-increase");
        let at = Rendezvous { channel: rc.channel(), slot: 300 };
        let one = |sender_code: &'static str| {
            let (rc, impostors) = (&rc, &impostors);
            async move {
                let (a, b) = duplex();
                let (s_id, r_id) = (PeerId::random(), PeerId::random());
                let sc = code(sender_code);
                let (_, r) = tokio::join!(
                    Session::accept(a, &sc, |r| r.slot == 300, s_id, r_id),
                    Session::connect_counted(b, rc, at, r_id, s_id, impostors)
                );
                r.map(drop)
            }
        };
        for _ in 0..guesses::MAX_IMPOSTORS {
            let r = one("bubble-enemy-result-abandon").await;
            assert!(matches!(r, Err(SessionError::WrongCode)), "{r:?}");
        }
        let r = one("bubble-enemy-result-abandon").await;
        assert!(matches!(r, Err(SessionError::Guessing { peers: 3 })), "{r:?}");
        let e = crate::Error::Session(r.expect_err("stopped"));
        assert_eq!(e.kind(), crate::ErrorKind::Guessing);
        assert!(e.to_string().starts_with("someone is guessing: "), "{e}");
    }

    #[tokio::test]
    async fn wrong_code_fails_on_both_sides() {
        let (s, r) = pair("bubble-enemy-result-increase", "bubble-enemy-result-abandon").await;
        assert!(matches!(s, Err(SessionError::PeerWrongCode { .. })));
        assert!(matches!(r, Err(SessionError::WrongCode)));
    }

    #[tokio::test]
    async fn hanging_up_after_the_reply_spends_an_attempt() {
        // A guesser reads the sender's reply (its one guess) and closes instead of
        // confirming: the sender must still count the attempt.
        let (a, mut b) = duplex();
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let c = code("bubble-enemy-result-increase");
        let guesser = async move {
            let (_, msg_b) = Spake2::<Ed25519Group>::start_b(
                &Password::new(b"guess-guess-guess"),
                &identities(&s_id, &r_id).0,
                &identities(&s_id, &r_id).1,
            );
            let hello = hello_bytes(VERSION, at_300(&c), &msg_b);
            b.write_all(&hello).await.expect("hello");
            let mut reply = [0u8; 1 + SPAKE_MSG_LEN + CONFIRM_LEN];
            b.read_exact(&mut reply).await.expect("reply");
            b.close().await.expect("close");
        };
        let c2 = code("bubble-enemy-result-increase");
        let (r, ()) = tokio::join!(Session::accept(a, &c2, |r| r.slot == 300, s_id, r_id), guesser);
        assert!(matches!(r, Err(SessionError::PeerWrongCode { .. })));
    }

    /// Issue 9, item 7: a silent stranger holds a handshake slot for the pre-auth
    /// deadline only, not the 20 s of a whole handshake.
    #[tokio::test(start_paused = true)]
    async fn a_silent_stranger_is_dropped_after_the_pre_auth_deadline() {
        let (a, _b) = duplex();
        let c = code("bubble-enemy-result-increase");
        let started = tokio::time::Instant::now();
        let r = Session::accept(a, &c, |_| true, PeerId::random(), PeerId::random()).await;
        assert!(matches!(r, Err(SessionError::Timeout)), "{r:?}");
        assert_eq!(started.elapsed(), PRE_AUTH_TIMEOUT);
    }

    /// Issue 9, item 9: a stranger that sends a hello and hangs up at once never gets
    /// the reply, so it had no guess and the code is not spent.
    #[tokio::test]
    async fn hanging_up_right_after_the_hello_costs_nothing() {
        let (a, mut b) = duplex();
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let c = code("bubble-enemy-result-increase");
        let hello = hello_bytes(VERSION, at_300(&c), &[7u8; SPAKE_MSG_LEN]);
        b.write_all(&hello).await.expect("hello");
        b.close().await.expect("hang up");
        let r = Session::accept(a, &c, |r| r.slot == 300, s_id, r_id).await;
        assert!(matches!(r, Err(SessionError::Protocol(_))), "{r:?}");
        let mut reply = Vec::new();
        let _ = b.read_to_end(&mut reply).await;
        assert!(reply.is_empty(), "the sender replied to a peer that hung up");
    }

    #[tokio::test]
    async fn other_channel_is_refused_before_the_pake() {
        let (s, r) = pair("bubble-enemy-result-increase", "abandon-enemy-result-increase").await;
        assert!(matches!(s, Err(SessionError::NotServing)));
        assert!(matches!(r, Err(SessionError::NotServing)));
    }

    #[tokio::test]
    async fn garbage_hello_is_refused() {
        let (s_id, r_id) = (PeerId::random(), PeerId::random());
        let junk = Cursor::new(vec![0x42u8; HELLO_LEN + 100]);
        struct Rw(Cursor<Vec<u8>>, Vec<u8>);
        impl AsyncRead for Rw {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
            }
        }
        impl AsyncWrite for Rw {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.1.extend_from_slice(buf);
                std::task::Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
        let c = code("bubble-enemy-result-increase");
        let r = Session::accept(Rw(junk, Vec::new()), &c, |_| true, s_id, r_id).await;
        assert!(matches!(r, Err(SessionError::Protocol(_))));
    }

    #[tokio::test]
    async fn tampered_frame_is_refused() {
        let (s, r) = pair("bubble-enemy-result-increase", "bubble-enemy-result-increase").await;
        let (mut s, r) = (s.expect("sender ok"), r.expect("receiver ok"));
        // A frame altered on the way must not open.
        let (_, _, mut w) = r.into_parts();
        w.send(Control::Accept.encode(), false).await.expect("send");
        let mut buf = Control::Accept.encode();
        let h = w.key().seal(1, false, &mut buf).expect("seal");
        buf[0] ^= 1;
        w.write_sealed(h, &buf).await.expect("write");
        assert_eq!(s.recv().await.expect("first frame is fine"), Control::Accept);
        assert!(matches!(s.recv().await, Err(SessionError::Frame(FrameError::Decrypt))));
    }
}
