//! A delay line: what netem would do, for a kernel without netem. [`DelayLine`] sits in
//! a router namespace between two veth ends, reads every Ethernet frame from one with an
//! `AF_PACKET` socket and writes it to the other a fixed time later, in both directions,
//! with a delay and an optional loss rate of its own per direction.
//!
//! It is a wire, not a router: it forwards every frame as it came (ARP, multicast and
//! mDNS included), so the two hosts share one /24 as on a `Lan` pair.
//!
//! Invariants:
//! - A frame leaves at most [`GRANULE`] before its due time, and late only by what
//!   the scheduler adds.
//! - Frames of one direction leave in the order they arrived (one FIFO per direction;
//!   the delay of a direction is constant, so FIFO order is due order). The line never
//!   reorders or duplicates; it drops only by its loss rate, while [`DelayLine::cut`],
//!   or when a direction's queue is full ([`QUEUE`] frames: tail drop, as a router
//!   would).
//! - Loss is deterministic: each direction draws from its own xorshift generator seeded
//!   from [`Link::seed`], so a lossy run drops the same frame numbers every time.
//! - The hosts' veth ends MUST have tx checksum offload, TSO and GSO off
//!   (`ethtool` [`offloads_off`]): a frame read from a veth with them on carries an
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
//! Measured (`tests/wan.rs`, `delay_line_throughput`, debug build, a 2-core machine
//! under other load): one TCP stream at 0.93–1.2 Gbit/s in 1500-byte frames, ~90,000
//! frames/s each way, the four threads using ~1 s of CPU per second. That CPU includes
//! the receiving host's TCP input, which the kernel runs in the writer's `write`.
//!
//! The sockets come from the `afpacket` crate, which opens them without `CLOEXEC`:
//! processes the tests spawn meanwhile inherit them, harmlessly (they never read them),
//! and the sockets close when the last of those exits.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use afpacket::sync::RawPacketStream;
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Frames one direction holds at most: 1 Gbit/s of 1500-byte frames for 390 ms.
pub const QUEUE: usize = 32 * 1024;

/// How early a writer may send a frame rather than sleep until it is due: a frame is
/// never late by the line's doing, and at most this much early (0.25 ms on delays of
/// tens of milliseconds).
const GRANULE: Duration = Duration::from_micros(250);

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
    /// The forwarding threads' kernel ids, for [`DelayLine::cpu_time`].
    tids: Arc<Mutex<Vec<i32>>>,
}

impl DelayLine {
    /// Starts forwarding between `end_a` and `end_b`, two interfaces of the namespace
    /// named `router` (`ip netns`, so `/run/netns/ROUTER`), with
    /// the delays and losses of `link`. Brings both ends up.
    ///
    /// # Panics
    ///
    /// If the sockets cannot be made or bound (not root, no such interface).
    #[must_use]
    pub fn start(router: &str, end_a: &str, end_b: &str, link: Link) -> DelayLine {
        for end in [end_a, end_b] {
            // Promiscuous, so that no frame is filtered by destination before the
            // socket sees it.
            let status = Command::new("ip")
                .args(["-n", router, "link", "set", end, "promisc", "on", "up"])
                .status()
                .expect("run ip");
            assert!(status.success(), "ip -n {router} link set {end} up: {status}");
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
        let tids = Arc::new(Mutex::new(Vec::with_capacity(4)));
        let directions = [
            (&sock_a, &sock_b, link.a_to_b, link.loss_a_to_b, "ab"),
            (&sock_b, &sock_a, link.b_to_a, link.loss_b_to_a, "ba"),
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
            let tids_r = Arc::clone(&tids);
            threads.push(spawn(&format!("delay {name} rd"), move || {
                register(&tids_r);
                reader.run();
            }));
            let tids_w = Arc::clone(&tids);
            threads.push(spawn(&format!("delay {name} wr"), move || {
                register(&tids_w);
                writer.run();
            }));
        }
        DelayLine { router: router.to_owned(), ends, stop, cut, counters, threads, tids }
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

    /// The CPU time (user and system) the forwarding threads have used so far, from
    /// `/proc/self/task/TID/stat`, in clock ticks of 10 ms (`USER_HZ`).
    ///
    /// # Panics
    ///
    /// If a thread's stat cannot be read or parsed.
    #[must_use]
    pub fn cpu_time(&self) -> Duration {
        let tids = self.tids.lock().unwrap_or_else(PoisonError::into_inner);
        let ticks: u64 = tids
            .iter()
            .map(|tid| {
                let path = format!("/proc/self/task/{tid}/stat");
                let stat = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // After the ")" that closes the name: state is field 3, utime 14, stime 15.
                let (_, rest) = stat.rsplit_once(')').expect("a stat line has the name in ()");
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let field = |n: usize| fields[n - 3].parse::<u64>().expect("a tick count");
                field(14) + field(15)
            })
            .sum();
        Duration::from_millis(ticks * 10)
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
            let status =
                Command::new("ip").args(["-n", &self.router, "link", "set", end, "down"]).status();
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

/// Runs `f` on a new thread that has joined the network namespace named `ns` (`ip
/// netns`) first, so the sockets `f` opens are `ns`'s. The calling thread stays where
/// it is.
///
/// # Panics
///
/// On the new thread, if the namespace cannot be joined.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    spawn(&format!("in {ns}"), move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

/// Records the calling thread's kernel id in `tids`.
fn register(tids: &Mutex<Vec<i32>>) {
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    tids.lock().unwrap_or_else(PoisonError::into_inner).push(tid);
}

fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::Builder::new().name(name.to_owned()).spawn(f).expect("spawn a thread")
}

/// The `ethtool` arguments that turn off tx checksum offload, TSO and GSO on `dev`
/// (see the module documentation for why).
#[must_use]
pub fn offloads_off(dev: &str) -> [&str; 8] {
    ["-K", dev, "tx", "off", "tso", "off", "gso", "off"]
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
            // A frame due within GRANULE goes now: one sleep per frame would cost a
            // timer and two context switches per frame, most of the line's CPU.
            let now = Instant::now();
            if due > now + GRANULE {
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
