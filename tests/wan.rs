//! pcp across a wide-area round trip (issue 16): two hosts joined through a delay line
//! (`util::Wan`, `tests/util/delay.rs`), since this kernel has no netem.
//!
//! - [`rtt_200_ms_a_few_mib_cross`]: the short latency test CI runs, so that a
//!   regression in flow-control windows shows as a slow or failed transfer. It first
//!   checks that the round trip is real (ping), so it cannot pass with the line
//!   bypassed.
//! - [`rtt_200_ms_cut_for_12_s_resumes`]: the line cut mid-transfer for longer than
//!   pcp's dead-connection limit (10 s), so both sides reconnect and resume.
//! - [`delay_line_throughput`]: what the line carries (TCP through it, 1 ms each way).
//! - [`each_direction_has_its_own_delay_and_loss`]: asymmetric delays and a loss rate
//!   do what they say.
//!
//! The tests run one at a time (see [`serial`]), each timed by its own progress; every
//! wait has a deadline. Needs root, `ip`, `ethtool`, `tc` and `ping`, so every test is
//! `#[ignore]`d: run them under `tests/isolated` with `--include-ignored`.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use util::{
    CODE, Host, Link, MIB, Proc, Wan, arg, assert_bytes_eq, exit, finish_all, in_netns, part_path,
    read, start_receiver, start_sender, wait_for_len, write_random_file,
};

/// The round trip of the WAN tests.
const RTT: Duration = Duration::from_millis(200);

/// A measured round trip below this means the line is not in the path.
const RTT_FLOOR: Duration = Duration::from_millis(190);

/// What each side prints on stderr when it notices a dead connection.
const LOST: &str = "connection lost, reconnecting";

/// How long the short latency test's transfer may take, start to finish: well above
/// what it takes, well below what it would take through small windows.
const LATENCY_BUDGET: Duration = Duration::from_secs(15);

/// How long a whole transfer may take, faults and rediscovery included.
const FINISH_TIMEOUT: Duration = Duration::from_secs(300);

/// One test at a time. A test that failed poisons the lock; the next one runs anyway.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The round trips of three pings from `from` to `to`, each as ping reports it.
fn ping_times(from: &Host, to: Ipv4Addr) -> Vec<Duration> {
    // -w: ping's own deadline, so this cannot hang.
    let out = from
        .command("ping")
        .args(["-n", "-c3", "-i0.2", "-w10", &to.to_string()])
        .stdout(Stdio::piped())
        .output()
        .expect("run ping");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping {to} failed ({}):\n{stdout}", out.status);
    let times: Vec<Duration> = stdout
        .lines()
        .filter_map(|l| l.split_once("time=")?.1.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    assert_eq!(times.len(), 3, "three replies expected:\n{stdout}");
    times
}

/// Asserts that the round trip between the hosts of `wan` is at least [`RTT_FLOOR`].
fn assert_rtt_is_real(wan: &Wan) {
    let times = ping_times(wan.host(0), wan.host(1).addr());
    for t in &times {
        assert!(
            *t >= RTT_FLOOR,
            "a ping took {t:?}, less than {RTT_FLOOR:?}: the line is bypassed"
        );
    }
    eprintln!("ping round trips: {times:?}");
}

/// Waits for `procs` to exit and asserts each exited with 0; returns their stderr.
fn expect_success(procs: &mut [&mut Proc], timeout: Duration) -> Vec<String> {
    let names: Vec<&str> = procs.iter().map(|p| p.name).collect();
    let results = finish_all(procs, timeout);
    let all: String = names
        .iter()
        .zip(&results)
        .map(|(name, (status, stderr))| format!("--- {name} ({status}):\n{stderr}\n"))
        .collect();
    for (name, (status, _)) in names.iter().zip(&results) {
        assert_eq!(status.code(), Some(exit::OK), "{name} exited with {status}\n{all}");
    }
    results.into_iter().map(|(_, stderr)| stderr).collect()
}

/// `pcp send -v --code CODE SRC` on host 0, once it is ready.
fn send(wan: &Wan, src: &Path) -> Proc {
    start_sender(wan.host(0), CODE, &["-v", arg(src)], Stdio::null())
}

/// `pcp receive -v -y -o OUT CODE` on host 1.
fn receive(wan: &Wan, out: &Path) -> Proc {
    start_receiver(wan.host(1), &["-v", "-y", "-o", arg(out), CODE], Stdio::null())
}

/// The short latency test (issue 16, "CI runs a short latency test"): 4 MiB of random
/// data across a 200 ms round trip arrives intact, and the round trip is real.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn rtt_200_ms_a_few_mib_cross() {
    let _serial = serial();
    let wan = Wan::new(Link::rtt(RTT));
    assert_rtt_is_real(&wan);

    let tmp = tempfile::tempdir().expect("create a temporary directory");
    let (src, out) = (tmp.path().join("src.bin"), tmp.path().join("out.bin"));
    let data = write_random_file(&src, 4 * MIB);
    let written_before = wan.line().counters(0).bytes.load(Ordering::Relaxed);

    let started = Instant::now();
    let mut sender = send(&wan, &src);
    let mut receiver = receive(&wan, &out);
    expect_success(&mut [&mut sender, &mut receiver], FINISH_TIMEOUT);
    let elapsed = started.elapsed();
    eprintln!("4 MiB across a {RTT:?} round trip in {elapsed:?}");
    // Discovery, handshake and 4 MiB took 4.7 s here. Windows that shrank to 64 KiB
    // would need 12.8 s for the data alone (4 MiB / (64 KiB per 200 ms)).
    assert!(elapsed < LATENCY_BUDGET, "4 MiB took {elapsed:?}: flow-control windows?");

    assert_bytes_eq(arg(&out), &data, &read(&out));
    // Everything crossed the line (the only path between the hosts anyway).
    let carried = wan.line().counters(0).bytes.load(Ordering::Relaxed) - written_before;
    assert!(carried >= data.len() as u64, "the line carried only {carried} bytes a→b");
}

/// At a 200 ms round trip, the line cut at ~30 % for 12 s (past pcp's 10 s
/// dead-connection limit, and neither host's link goes down): both sides give the
/// connection up, find each other again across the line, and finish the file intact.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn rtt_200_ms_cut_for_12_s_resumes() {
    const SIZE: usize = 16 * MIB;
    let _serial = serial();
    let wan = Wan::new(Link::rtt(RTT));
    // 16 MiB at 20 Mbit/s: at least 6.7 s on the wire, long enough to cut it.
    wan.host(0).rate_limit("20mbit");
    assert_rtt_is_real(&wan);

    let tmp = tempfile::tempdir().expect("create a temporary directory");
    let (src, out) = (tmp.path().join("src.bin"), tmp.path().join("out.bin"));
    let data = write_random_file(&src, SIZE);

    let started = Instant::now();
    let mut sender = send(&wan, &src);
    let mut receiver = receive(&wan, &out);
    let at30 = (SIZE / 10 * 3) as u64;
    wait_for_len(&part_path(&out), at30, FINISH_TIMEOUT, &mut [&mut sender, &mut receiver]);
    let dropped_before = wan.line().counters(0).dropped.load(Ordering::Relaxed);
    wan.line().cut(Duration::from_secs(12));
    let dropped = wan.line().counters(0).dropped.load(Ordering::Relaxed) - dropped_before;

    let stderr = expect_success(&mut [&mut sender, &mut receiver], FINISH_TIMEOUT);
    eprintln!("16 MiB with a 12 s cut in {:?}", started.elapsed());
    assert_bytes_eq(arg(&out), &data, &read(&out));
    assert!(dropped > 0, "the cut dropped nothing a→b: was the transfer already over?");
    for (who, stderr) in ["sender", "receiver"].iter().zip(&stderr) {
        assert!(stderr.contains(LOST), "the {who} never noticed the cut:\n{stderr}");
        assert!(
            stderr.lines().any(|l| l.trim() == "reconnected"),
            "the {who} did not say it reconnected:\n{stderr}"
        );
    }
}

/// Moves `size` bytes (a multiple of 1 MiB) over one TCP connection from host 0 to
/// host 1 of `wan`, from threads of this process that joined the hosts' namespaces;
/// returns how long it took, from connect to the receiver's end of stream.
fn tcp_transfer(wan: &Wan, size: u64) -> Duration {
    let to = SocketAddr::from((wan.host(1).addr(), 5001));
    let listener = in_netns(wan.host(1).netns().name(), move || {
        TcpListener::bind(to).unwrap_or_else(|e| panic!("bind {to}: {e}"))
    })
    .join()
    .expect("listen on host 1");
    let sink = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(30))).expect("set a read timeout");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match conn.read(&mut buf).expect("read") {
                0 => return total,
                n => total += n as u64,
            }
        }
    });

    let started = Instant::now();
    in_netns(wan.host(0).netns().name(), move || {
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect");
        conn.set_write_timeout(Some(Duration::from_secs(30))).expect("set a write timeout");
        let buf = vec![0x5au8; 1 << 20];
        for _ in 0..size >> 20 {
            conn.write_all(&buf).expect("write");
        }
    })
    .join()
    .expect("send from host 0");
    let received = sink.join().expect("receive on host 1");
    assert_eq!(received, size, "bytes received");
    started.elapsed()
}

/// What the line carries: one TCP stream from host 0 to host 1 for 512 MiB at 1 ms each
/// way, in 1500-byte frames (the hosts' offloads are off). Prints the rate; asserts a
/// floor well below the 1 Gbit/s goal (measured 1.2 Gbit/s, on a 2-core machine whose
/// cores also run both TCP ends), so that a loaded CI machine passes but a line that
/// falls back to a crawl does not.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn delay_line_throughput() {
    const SIZE: u64 = 512 * MIB as u64;
    let _serial = serial();
    let wan = Wan::new(Link::rtt(Duration::from_millis(2)));
    let cpu_before = wan.line().cpu_time();
    let secs = tcp_transfer(&wan, SIZE).as_secs_f64();
    let cpu = (wan.line().cpu_time() - cpu_before).as_secs_f64();

    let mbit = SIZE as f64 * 8.0 / secs / 1e6;
    let a_to_b = wan.line().counters(0);
    let frames = a_to_b.written.load(Ordering::Relaxed);
    let bytes = a_to_b.bytes.load(Ordering::Relaxed);
    let dropped = a_to_b.dropped.load(Ordering::Relaxed);
    eprintln!(
        "delay line: {SIZE} bytes of TCP payload in {secs:.2} s = {mbit:.0} Mbit/s; \
         a→b {frames} frames ({:.0} frames/s, mean {} bytes), {dropped} dropped; \
         the line's threads used {cpu:.2} s of CPU ({:.0} Mbit/s per core)",
        frames as f64 / secs,
        bytes / frames.max(1),
        SIZE as f64 * 8.0 / cpu.max(0.01) / 1e6,
    );
    assert!(mbit >= 300.0, "the delay line carried only {mbit:.0} Mbit/s");
}

/// One UDP datagram from `from` to `to` (port 5002): how long it took, on this
/// machine's one monotonic clock (both ends are threads of this process). A lossy
/// direction may drop it (the line drops by frame number, and how many frames came
/// before varies from run to run: ARP, neighbour discovery), so it is sent again, up
/// to 5 times, each time after a second without it: longer than any delay here, so a
/// datagram that arrives is the one just sent.
fn one_way(from: &Host, to: &Host) -> Duration {
    let dst = SocketAddr::from((to.addr(), 5002));
    let src = SocketAddr::from((from.addr(), 0));
    let rx = in_netns(to.netns().name(), move || UdpSocket::bind(dst).expect("bind udp"))
        .join()
        .unwrap();
    let tx = in_netns(from.netns().name(), move || UdpSocket::bind(src).expect("bind udp"))
        .join()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(1))).expect("set a read timeout");
    let mut buf = [0u8; 16];
    for _ in 0..5 {
        let sent = Instant::now();
        tx.send_to(b"when", dst).expect("send a datagram");
        match rx.recv_from(&mut buf) {
            Ok(_) => return sent.elapsed(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("receiving the datagram: {e}"),
        }
    }
    panic!("none of 5 datagrams arrived, a second apart");
}

/// Each direction has its own delay and loss: 150 ms and 2 % loss from A to B, 10 ms
/// and none back. The one-way times show the delays; the counters show the share
/// dropped, and TCP still delivers every byte through the loss.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn each_direction_has_its_own_delay_and_loss() {
    let _serial = serial();
    let link = Link {
        a_to_b: Duration::from_millis(150),
        b_to_a: Duration::from_millis(10),
        loss_a_to_b: 0.02,
        loss_b_to_a: 0.0,
        seed: 7,
    };
    let wan = Wan::new(link);
    // Resolves ARP both ways first, so the datagrams below wait for nothing else.
    let rtt = ping_times(wan.host(0), wan.host(1).addr());
    assert!(rtt[1] >= Duration::from_millis(160), "round trip {rtt:?}");

    let (a, b) = (wan.host(0), wan.host(1));
    let ab = one_way(a, b);
    let ba = one_way(b, a);
    eprintln!("one way: a→b {ab:?}, b→a {ba:?}");
    assert!(ab >= Duration::from_millis(150) && ab < Duration::from_millis(300), "a→b {ab:?}");
    assert!(ba >= Duration::from_millis(10) && ba < Duration::from_millis(100), "b→a {ba:?}");

    let elapsed = tcp_transfer(&wan, 16 * MIB as u64);
    let (ab, ba) = (wan.line().counters(0), wan.line().counters(1));
    let (read, dropped) = (ab.read.load(Ordering::Relaxed), ab.dropped.load(Ordering::Relaxed));
    let share = dropped as f64 / read as f64;
    eprintln!("16 MiB over TCP through 2 % loss in {elapsed:?}: a→b dropped {dropped} of {read}");
    assert!((0.01..0.03).contains(&share), "a→b dropped {dropped} of {read} frames");
    assert_eq!(ba.dropped.load(Ordering::Relaxed), 0, "b→a has no loss");
}
