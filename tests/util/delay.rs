//! A delay line: what netem would do, for a kernel without netem. [`DelayLine`] sits in
//! a router namespace between two veth ends, reads every Ethernet frame from one with an
//! `AF_PACKET` socket and writes it to the other a fixed time later, in both directions,
//! with a delay and an optional loss rate of its own per direction.
//!
//! It is a wire, not a router: it forwards every frame as it came (ARP, multicast and
//! mDNS included), so the two hosts share one /24 as on a [`super::Lan`] pair.
//!
//! Invariants:
//! - Frames of one direction leave in the order they arrived (one FIFO per direction;
//!   the delay of a direction is constant, so FIFO order is due order). The line never
//!   reorders or duplicates; it drops only by its loss rate, while [`DelayLine::cut`],
//!   or when a direction's queue is full ([`QUEUE`] frames: tail drop, as a router
//!   would).
//! - Loss is deterministic: each direction draws from its own xorshift generator seeded
//!   from [`Link::seed`], so a lossy run drops the same frame numbers every time.
//! - The hosts' veth ends MUST have tx checksum offload, TSO and GSO off
//!   ([`disable_offloads`]): a frame read from a veth with them on carries an
//!   unfinished checksum (or is a 64 KiB super-frame), and the far host drops it.
//! - The frames the router namespace itself sends out of its ends (IPv6 neighbour
//!   discovery, …) are never forwarded: a socket filter keeps only incoming frames.
//!
//! Threads: one reader per end (blocking `read`, stamps the due time, queues) and one
//! writer per end (waits for the head frame's due time, `write`s). The sockets are made
//! on a thread that first joins the router's namespace (`setns`); a socket stays in the
//! namespace it was made in, so the other threads never switch. Stopping
//! ([`Drop`]) sets a flag and takes the router's ends down: the kernel then wakes each
//! blocked reader with `ENETDOWN`.
//!
//! The sockets come from the `afpacket` crate, which opens them without `CLOEXEC`:
//! processes the tests spawn meanwhile inherit them, harmlessly (they never read them),
//! and the sockets close when the last of those exits.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use afpacket::sync::RawPacketStream;
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use super::netns::Netns;

/// Frames one direction holds at most: 1 Gbit/s of 1500-byte frames for 390 ms.
pub const QUEUE: usize = 32 * 1024;

/// The largest frame read: with offloads off a frame is at most MTU + 14 bytes, but
/// a larger buffer costs nothing and never truncates.
const FRAME_MAX: usize = 64 * 1024;

/// What a [`DelayLine`] does to each direction. A is the first end, B the second.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// One-way delay of frames from A to B.
    pub a_to_b: Duration,
    /// One-way delay of frames from B to A.
    pub b_to_a: Duration,
    /// Share of A→B frames dropped, 0.0 ..= 1.0.
    pub loss_a_to_b: f64,
    /// Share of B→A frames dropped, 0.0 ..= 1.0.
    pub loss_b_to_a: f64,
    /// Seeds the loss draws (see the module documentation).
    pub seed: u64,
}

impl Link {
    /// A round trip of `rtt`, half of it each way, no loss.
    #[must_use]
    pub fn rtt(rtt: Duration) -> Link {
        Link { a_to_b: rtt / 2, b_to_a: rtt / 2, loss_a_to_b: 0.0, loss_b_to_a: 0.0, seed: 1 }
    }

    /// This link with `loss` (0.0 ..= 1.0) of the frames dropped in each direction.
    #[must_use]
    pub fn with_loss(self, loss: f64) -> Link {
        assert!((0.0..=1.0).contains(&loss), "loss is a share, 0.0 ..= 1.0, not {loss}");
        Link { loss_a_to_b: loss, loss_b_to_a: loss, ..self }
    }
}

/// Frame counts of one direction.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames read from the ingress end.
    pub read: AtomicU64,
    /// Frames written to the egress end.
    pub written: AtomicU64,
    /// Bytes written to the egress end (Ethernet header included).
    pub bytes: AtomicU64,
    /// Frames dropped: loss, cut, a full queue, or a failed write.
    pub dropped: AtomicU64,
}

/// A running delay line; stops on drop (see the module documentation).
#[derive(Debug)]
pub struct DelayLine {
    router: String,
    ends: [String; 2],
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    /// A→B, then B→A.
    counters: [Arc<Counters>; 2],
    threads: Vec<JoinHandle<()>>,
}

impl DelayLine {
    /// Starts forwarding between `end_a` and `end_b`, two interfaces of `router`, with
    /// the delays and losses of `link`. Brings both ends up.
    ///
    /// # Panics
    ///
    /// If the sockets cannot be made or bound (not root, no such interface).
    #[must_use]
    pub fn start(router: &Netns, end_a: &str, end_b: &str, link: Link) -> DelayLine {
        for end in [end_a, end_b] {
            // Promiscuous, so that no frame is filtered by destination before the
            // socket sees it.
            router.ip(&["link", "set", end, "promisc", "on", "up"]);
        }
        let ends = [end_a.to_owned(), end_b.to_owned()];
        let names = ends.clone();
        let [sock_a, sock_b] = in_netns(router, move || names.map(|end| open(&end)))
            .join()
            .expect("the delay line's sockets could not be opened");
        let (sock_a, sock_b) = (Arc::new(sock_a), Arc::new(sock_b));

        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let counters = [Arc::default(), Arc::default()];
        let mut threads = Vec::with_capacity(4);
        let directions = [
            (&sock_a, &sock_b, link.a_to_b, link.loss_a_to_b, "a→b"),
            (&sock_b, &sock_a, link.b_to_a, link.loss_b_to_a, "b→a"),
        ];
        for (i, (from, to, delay, loss, name)) in directions.into_iter().enumerate() {
            let (tx, rx) = sync_channel(QUEUE);
            let reader = Reader {
                from: Arc::clone(from),
                delay,
                loss: Xorshift::threshold(loss),
                rng: Xorshift::new(link.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                queue: tx,
                stop: Arc::clone(&stop),
                cut: Arc::clone(&cut),
                counters: Arc::clone(&counters[i]),
            };
            let writer = Writer {
                to: Arc::clone(to),
                queue: rx,
                cut: Arc::clone(&cut),
                counters: Arc::clone(&counters[i]),
            };
            threads.push(spawn(&format!("delay {name} read"), move || reader.run()));
            threads.push(spawn(&format!("delay {name} write"), move || writer.run()));
        }
        DelayLine { router: router.name().to_owned(), ends, stop, cut, counters, threads }
    }

    /// While `true`, every frame is dropped, those already on the line too: the cable
    /// between the hosts is cut, but each host's own link stays up (no carrier change
    /// tells either kernel).
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    /// Cuts the line for `down_for` (the sleep *is* the fault, not a wait), then
    /// splices it again.
    pub fn cut(&self, down_for: Duration) {
        self.set_cut(true);
        thread::sleep(down_for);
        self.set_cut(false);
    }

    /// The counts of A→B (`0`) or B→A (`1`).
    #[must_use]
    pub fn counters(&self, direction: usize) -> &Counters {
        &self.counters[direction]
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for end in &self.ends {
            // Wakes the reader blocked on this end with ENETDOWN (module documentation).
            let status = std::process::Command::new("ip")
                .args(["-n", &self.router, "link", "set", end, "down"])
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("warning: delay line: cannot take {end} down: {status:?}");
            }
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() && !thread::panicking() {
                eprintln!("warning: a delay line thread panicked");
            }
        }
    }
}

/// Runs `f` on a new thread that has joined `ns`'s network namespace first, so the
/// sockets `f` opens are `ns`'s. The calling thread stays where it is.
///
/// # Panics
///
/// On the new thread, if the namespace cannot be joined.
pub fn in_netns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{}", ns.name());
    spawn(&format!("in {}", ns.name()), move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::Builder::new().name(name.to_owned()).spawn(f).expect("spawn a thread")
}

/// Turns off tx checksum offload, TSO and GSO on `dev` in `ns` (see the module
/// documentation for why). Needs `ethtool`.
pub fn disable_offloads(ns: &Netns, dev: &str) {
    ns.run("ethtool", &["-K", dev, "tx", "off", "tso", "off", "gso", "off"]);
}

/// A packet socket of this thread's namespace bound to `end`, which sees only the
/// frames that arrive there, and nothing queued before it was bound.
fn open(end: &str) -> RawPacketStream {
    // Classic BPF: A = pkttype (SKF_AD_OFF + SKF_AD_PKTTYPE); drop PACKET_OUTGOING (4),
    // keep the rest whole.
    const FILTER: [(u16, u8, u8, u32); 4] = [
        (0x30, 0, 0, 0xffff_f004), // ld b [pkttype]
        (0x15, 0, 1, 4),           // jeq #4, drop, keep
        (0x06, 0, 0, 0),           // drop: ret #0
        (0x06, 0, 0, 0x0004_0000), // keep: ret #262144
    ];
    let mut sock = RawPacketStream::new().expect("open an AF_PACKET socket (root?)");
    sock.set_bpf_filter(FILTER.to_vec()).expect("attach the outgoing-frame filter");
    sock.bind(end).unwrap_or_else(|e| panic!("bind a packet socket to {end}: {e}"));
    // Until bind, the socket saw every interface's frames: forward none of them.
    sock.drain();
    sock
}

/// One direction's ingress: reads, decides loss, stamps the due time, queues.
struct Reader {
    from: Arc<RawPacketStream>,
    delay: Duration,
    loss: u64,
    rng: Xorshift,
    queue: SyncSender<(Instant, Vec<u8>)>,
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl Reader {
    fn run(mut self) {
        let mut buf = vec![0u8; FRAME_MAX];
        loop {
            let len = match (&*self.from).read(&mut buf) {
                Ok(len) => len,
                Err(_) if self.stop.load(Ordering::SeqCst) => return,
                // ENETDOWN when the router's end went down, or a transient error.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => continue,
            };
            let due = Instant::now() + self.delay;
            self.counters.read.fetch_add(1, Ordering::Relaxed);
            // Draw for every frame, cut or not, so the drop pattern depends on the
            // frame number alone.
            let lost = self.loss != 0 && self.rng.next() < self.loss;
            if lost || self.cut.load(Ordering::Relaxed) {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match self.queue.try_send((due, buf[..len].to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// One direction's egress: writes each frame when it is due.
struct Writer {
    to: Arc<RawPacketStream>,
    queue: Receiver<(Instant, Vec<u8>)>,
    cut: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl Writer {
    fn run(self) {
        // Ends when the reader has gone (stop) and the queue is empty.
        while let Ok((due, frame)) = self.queue.recv() {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if self.cut.load(Ordering::Relaxed) {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // A failed write (the far host's link is down: ENOBUFS, …) loses the frame,
            // as the wire would.
            // A packet socket writes a frame whole or not at all.
            match (&*self.to).write(&frame) {
                Ok(n) if n == frame.len() => {
                    self.counters.written.fetch_add(1, Ordering::Relaxed);
                    self.counters.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
                Ok(_) | Err(_) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// xorshift64*: deterministic, fast, good enough to drop frames by.
struct Xorshift(u64);

impl Xorshift {
    fn new(seed: u64) -> Xorshift {
        // The state must never be 0.
        Xorshift(seed | 1)
    }

    /// A draw below which a frame is lost, for a loss share of `loss`.
    fn threshold(loss: f64) -> u64 {
        // The cast saturates: 1.0 drops every frame but a draw of u64::MAX.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let t = (loss * u64::MAX as f64) as u64;
        t
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
