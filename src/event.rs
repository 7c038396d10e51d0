//! What the engine tells its caller while it works: the one vocabulary of phases,
//! progress and statistics.
//!
//! The library never prints. [`crate::send`], [`crate::receive`] and [`crate::serve`]
//! hand every [`Event`] to the caller's callback, in order, from the task doing the
//! work; the callback MUST return quickly (draw, queue, or drop the event). The `pcp`
//! binary renders them as a terminal status line and progress bar, or as JSON lines
//! with `--json`.
//!
//! Strings in events that came from the peer ([`OfferInfo::name`],
//! [`OfferInfo::entries`]) are as the peer sent them: sanitize them before showing them
//! on a terminal (the binary does).
//!
//! This module owns the data types the network node reports as well ([`Via`],
//! [`DhtStatus`], [`Transport`]): `node` imports them from here and this module never
//! imports `node`, so that the two do not depend on each other.

use std::path::PathBuf;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};

/// Which side of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `pcp send`.
    Sender,
    /// `pcp receive`.
    Receiver,
}

/// What kind of thing is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferKind {
    /// A byte stream of unknown length (standard input).
    Stream,
    /// One regular file.
    File,
    /// Files and directories, sent as a tar stream.
    Folder,
    /// UTF-8 text of a known size, to be shown rather than saved (`pcp send --text`, or
    /// a short stdin); what arrives is the peer's: clean it before a terminal sees it.
    Text,
}

/// What a top-level entry of a folder offer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory and what is in it.
    Folder,
}

/// An offer as the receiver sees it, before it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferInfo {
    /// What is offered.
    pub kind: OfferKind,
    /// Its name as announced (a file's name; for a folder the one top-level name or
    /// "N items").
    pub name: String,
    /// Its size in bytes, when known: a file's size, or a folder's tar stream as
    /// measured by the sender before the first byte.
    pub size: Option<u64>,
    /// A folder's top-level names.
    pub entries: Vec<String>,
    /// What each of them is, parallel to `entries`; the receiver refuses an entry that
    /// arrives as another kind.
    pub kinds: Vec<EntryKind>,
    /// How many entries (files, directories, links) a folder holds.
    pub files: Option<u64>,
    /// The sender.
    pub peer: PeerId,
    /// Where the sender's connection comes from, when known.
    pub addr: Option<Multiaddr>,
}

impl OfferInfo {
    /// The IP address the offer came from, when known.
    #[must_use]
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.addr.as_ref().and_then(ip_of)
    }
}

/// The IP address in a multiaddr, if it has one.
fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// Counters of one side's transfer, resume included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Raw bytes sent in frames (the sender), resends included.
    pub sent: u64,
    /// Raw bytes sent again after a reconnection (the sender).
    pub resent: u64,
    /// Raw bytes not sent or received because the receiver already held them.
    pub skipped: u64,
    /// Raw bytes received over the network in this run (the receiver).
    pub received: u64,
    /// Connections lost and found again.
    pub reconnects: u64,
}

/// How a transfer ended, returned by [`crate::send`] and [`crate::receive`] and
/// reported as [`Event::Finished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Which side this is.
    pub role: Role,
    /// Raw bytes of the whole transfer (what the receiver holds at the end).
    pub bytes: u64,
    /// Bytes that crossed the wire in frames.
    pub wire: u64,
    /// Chunks.
    pub chunks: u64,
    /// Time from the first to the last byte of this run.
    pub elapsed: Duration,
    /// Resume accounting.
    pub stats: Stats,
    /// Where the receiver put what it got (empty for a writer or for the sender).
    pub written: Vec<PathBuf>,
    /// What carried the last session's data, when known.
    pub transport: Option<Transport>,
}

/// What carried a session: the transport of the connection its stream rode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// TCP (noise, yamux).
    Tcp,
    /// QUIC v1.
    Quic,
    /// A circuit through a relay (`--allow-relay`).
    Relayed,
    /// libp2p's in-process memory transport.
    Memory,
    /// Something else.
    Other,
}

impl Transport {
    /// The transport of a connection to `addr` (its remote address).
    #[must_use]
    pub fn of(addr: &libp2p::Multiaddr) -> Transport {
        use libp2p::multiaddr::Protocol;
        let mut found = Transport::Other;
        for p in addr {
            match p {
                Protocol::P2pCircuit => return Transport::Relayed,
                Protocol::QuicV1 => found = Transport::Quic,
                Protocol::Tcp(_) if found == Transport::Other => found = Transport::Tcp,
                Protocol::Memory(_) => found = Transport::Memory,
                _ => {}
            }
        }
        found
    }

    /// A stable lowercase name: `tcp`, `quic`, `relayed`, `memory`, `other`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
            Transport::Relayed => "relayed",
            Transport::Memory => "memory",
            Transport::Other => "other",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// mDNS on the local network.
    Mdns,
    /// A `--peer` address we dialled.
    Direct,
    /// A provider record on the Kademlia DHT.
    Dht,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Mdns => "mDNS",
            Via::Direct => "direct address",
            Via::Dht => "DHT",
        })
    }
}

/// What the DHT side reports, for the progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtStatus {
    /// Connected to `connected` of `total` bootstrap nodes.
    Bootstrap {
        /// Reached so far.
        connected: usize,
        /// Given.
        total: usize,
    },
    /// No bootstrap node could be reached; only mDNS and `--peer` are left.
    BootstrapFailed {
        /// How many were tried.
        total: usize,
    },
    /// Publishing the provider record of this slot.
    Advertising {
        /// The slot.
        slot: u64,
    },
    /// The provider record is stored on this many DHT nodes (0: publishing failed).
    Advertised {
        /// The slot.
        slot: u64,
        /// Whether the DHT took it.
        ok: bool,
    },
    /// Looking up the current and the previous slot.
    Searching {
        /// The current slot.
        current: u64,
        /// The previous slot.
        previous: u64,
    },
}

/// Where a handshake comes from, as a sender counts them: the unit of its per-source
/// limits (handshake slots and wrong codes; see [`crate::send`]).
///
/// One host usually owns one IPv4 address but a whole IPv6 /64, and every peer that
/// comes through a relay shares the relay's address: counting single IPv6 addresses or
/// relayed peer ids would count nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// An IPv4 address (IPv4-mapped IPv6 addresses count here too).
    Ipv4(std::net::Ipv4Addr),
    /// An IPv6 /64: the address with its last 64 bits cleared.
    Ipv6(std::net::Ipv6Addr),
    /// A relay, by its address (everything before `/p2p-circuit`): every peer that comes
    /// through it counts as one.
    Relay(Multiaddr),
    /// A peer whose address is not known, or has no IP (libp2p's memory transport).
    Peer(PeerId),
}

impl Origin {
    /// The origin of a connection from `peer` whose remote address is `addr`.
    #[must_use]
    pub fn of(addr: Option<&Multiaddr>, peer: PeerId) -> Origin {
        use libp2p::multiaddr::Protocol;
        let Some(addr) = addr else { return Origin::Peer(peer) };
        if addr.iter().any(|p| p == Protocol::P2pCircuit) {
            let relay: Multiaddr = addr.iter().take_while(|p| *p != Protocol::P2pCircuit).collect();
            return Origin::Relay(relay);
        }
        match addr.iter().next() {
            Some(Protocol::Ip4(ip)) => Origin::Ipv4(ip),
            Some(Protocol::Ip6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => Origin::Ipv4(v4),
                None => Origin::Ipv6((u128::from(ip) & !u128::from(u64::MAX)).into()),
            },
            _ => Origin::Peer(peer),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Ipv4(ip) => write!(f, "{ip}"),
            Origin::Ipv6(net) => write!(f, "{net}/64"),
            Origin::Relay(addr) => write!(f, "the relay {addr}"),
            Origin::Peer(peer) => write!(f, "peer {peer}"),
        }
    }
}

/// Something worth telling the user.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// What the sender sends, said before its code: its size is measured only when a
    /// receiver comes, for the offer.
    Sending {
        /// What kind of offer it becomes (standard input that turns out short text is
        /// offered as text all the same).
        kind: OfferKind,
        /// Its name as a receiver is offered it: a file's or folder's name, `N items`
        /// for several paths, `stdin`, or `text`.
        name: String,
        /// How many paths it holds: 1 but for several paths.
        items: usize,
    },
    /// The sender is ready. `made_up`: pcp generated the code, so it must be shown; a
    /// code the caller chose need not be repeated.
    Code {
        /// The code.
        code: String,
        /// Whether pcp generated it.
        made_up: bool,
    },
    /// The node listens on this address (with our `/p2p/` id), for a receiver's
    /// `--peer` or another node's `--bootstrap`.
    Listening {
        /// The address.
        addr: Multiaddr,
    },
    /// Waiting for peers.
    Searching,
    /// A candidate peer was found.
    Found {
        /// The peer.
        peer: PeerId,
        /// How.
        via: Via,
    },
    /// Running the PAKE with a peer.
    Authenticating {
        /// The peer.
        peer: PeerId,
    },
    /// A receiver tried a wrong code. Always followed by [`Event::FailedAttempt`], which
    /// also says where it came from.
    WrongCode {
        /// Who.
        peer: PeerId,
        /// Attempts left before the code is burnt.
        left: u32,
    },
    /// A receiver tried a wrong code (the sender's side), and where it came from: each
    /// [`Origin`] gets a few tries, then waits a doubling delay between tries; the code
    /// burns only once the whole budget is spent.
    FailedAttempt {
        /// Who.
        peer: PeerId,
        /// Where from.
        from: Origin,
        /// Wrong codes from there so far, this one included.
        from_there: u32,
        /// Wrong codes the sender still takes before the code is burnt.
        left: u32,
    },
    /// The sender asked us to try again later (wrong codes were tried from our network,
    /// or as many as it still takes are being tried); the receiver does, after `secs`.
    TryLater {
        /// Seconds until the next try.
        secs: u64,
    },
    /// The sender is busy with another receiver; the receiver tries again, up to `max`
    /// times.
    SenderBusy {
        /// Busy answers so far.
        tries: u32,
        /// Answers after which the receiver gives up on that sender.
        max: u32,
    },
    /// Only pcp senders of other codes answered so far (the first word picks the
    /// channel: a wrong first word looks like this); the receiver keeps looking.
    OtherSenders {
        /// How many such senders.
        count: usize,
    },
    /// The sender waits for the receiver to accept.
    AwaitingAccept,
    /// The receiver could not take the offer where it stands (its reason, as sent);
    /// the sender keeps waiting with the same code for it to try again.
    Refused {
        /// Why, in the receiver's words.
        reason: String,
    },
    /// The receiver holds part of this transfer from an earlier run and comes back
    /// under that run's identity (the sender waits for it): not a refusal.
    ResumingEarlier,
    /// The receiver got an offer (before consent is asked).
    Offer(OfferInfo),
    /// The receiver resumes: it already holds this many bytes of the offer.
    Resuming {
        /// Bytes held from an earlier run.
        bytes: u64,
    },
    /// Progress of the DHT rendezvous.
    Dht(DhtStatus),
    /// Data starts flowing.
    Started {
        /// Total bytes, when known.
        total: Option<u64>,
        /// Bytes the receiver already holds (resumed from an earlier run): progress
        /// starts there, and a rate counts only what moves from now on.
        done: u64,
    },
    /// Bytes so far.
    Progress {
        /// Raw bytes done.
        bytes: u64,
    },
    /// The connection was lost; both sides look for each other again.
    ConnectionLost,
    /// The peer is back after a lost connection, and the transfer goes on.
    Reconnected,
    /// The transfer is done and verified.
    Finished(Report),
    /// The transfer stopped early and the receiver keeps what arrived here, for a
    /// later run to resume from.
    Kept {
        /// The part file, or for a directory its staging directory.
        path: PathBuf,
        /// Verified bytes it holds.
        bytes: u64,
    },
    /// The receiver wrote this path.
    Written {
        /// The path.
        path: PathBuf,
    },
    /// An event of one receiver of a send that serves many
    /// ([`crate::Receivers::Many`]): its session's phases, progress, losses and end,
    /// each receiver numbered from 1 in the order it authenticated. The first event of
    /// a receiver is [`Event::Authenticating`] with its peer id; its last is
    /// [`Event::Finished`] or [`Event::Dropped`]. Events of the code as a whole (the
    /// code, wrong codes, the network) and the send's own [`Event::Finished`], with the
    /// totals of every receiver, are not wrapped.
    Receiver {
        /// The receiver's number, from 1.
        id: u32,
        /// What happened to it.
        event: Box<Event>,
    },
    /// A receiver of a send that serves many stopped before it had everything (it
    /// declined, failed, fell behind, or did not come back in time); the others go on.
    /// Only inside [`Event::Receiver`].
    Dropped {
        /// Why, as pcp says it (peer text sanitized).
        reason: String,
        /// It fell behind: it kept the buffer it shares with the others (standard
        /// input, text) full for longer than the `lag` of [`crate::Receivers::Many`]
        /// allows; a longer bound lets a slow receiver catch up.
        fell_behind: bool,
    },
}

/// A duration as a person says it, to the second: `45 s`, `2 min 05 s`, `1 h 02 min`.
#[must_use]
pub fn duration_words(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// The caller's event callback, shared by the tasks of one transfer.
#[derive(Clone)]
pub(crate) struct Events(std::sync::Arc<dyn Fn(Event) + Send + Sync>);

impl Events {
    pub(crate) fn new(f: impl Fn(Event) + Send + Sync + 'static) -> Events {
        Events(std::sync::Arc::new(f))
    }

    pub(crate) fn emit(&self, ev: Event) {
        (self.0)(ev);
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

#[cfg(test)]
mod tests {
    use super::Transport;

    #[test]
    fn durations_read_as_a_person_says_them() {
        use std::time::Duration;
        let w = |s| super::duration_words(Duration::from_secs(s));
        assert_eq!(w(0), "0 s");
        assert_eq!(w(59), "59 s");
        assert_eq!(w(65), "1 min 05 s");
        assert_eq!(w(3720), "1 h 02 min");
    }

    #[test]
    fn a_connection_s_transport_is_read_from_its_address() {
        let of = |a: &str| Transport::of(&a.parse().expect("a multiaddr"));
        assert_eq!(of("/ip4/198.18.0.1/tcp/4001"), Transport::Tcp);
        assert_eq!(
            of("/ip6/::1/tcp/4001/p2p/12D3KooWDgtWNX3aqxVRU9xTuUAjugigwg8sxGX5MXFEhHYsTDrF"),
            Transport::Tcp
        );
        assert_eq!(of("/ip4/198.18.0.1/udp/4001/quic-v1"), Transport::Quic);
        assert_eq!(
            of(
                "/ip4/198.18.0.9/tcp/4001/p2p/12D3KooWDgtWNX3aqxVRU9xTuUAjugigwg8sxGX5MXFEhHYsTDrF/p2p-circuit"
            ),
            Transport::Relayed
        );
        assert_eq!(of("/memory/7"), Transport::Memory);
        assert_eq!(of("/dns4/example.org"), Transport::Other);
        assert_eq!(Transport::Quic.to_string(), "quic");
    }
}
