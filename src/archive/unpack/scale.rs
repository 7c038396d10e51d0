//! Scale: the receiver's memory and time for very large trees (issue 14 item 1).
//!
//! Each case generates its tar stream piece by piece as the unpacker reads it (the
//! whole stream is never in memory), extracts it into a temporary directory, and reads
//! the process's peak resident set (`VmHWM`) at the end. `VmHWM` is the whole process's,
//! so they live behind the `scale` feature (never in a run of the rest of the suite) and
//! are `#[ignore]`d besides (minutes, and a million inodes); run one at a time so that
//! each peak is its own:
//!
//! ```text
//! tests/isolated cargo test --locked --release --features scale --lib -- --ignored --exact \
//!     archive::unpack::scale::a_million_flat_entries
//! ```
//!
//! `PCP_SCALE_DIR` puts the tree elsewhere than the system's temporary directory (a
//! tmpfs such as `/dev/shm` takes the disk out of the time).

use std::io::{self, Read};
use std::time::{Duration, Instant};

use tar::{EntryType, Header};

use super::*;

/// The peak a receiver may reach, whatever the tree (issue 14).
const LIMIT_KIB: u64 = 64 * 1024;

/// One entry of a generated stream.
pub(super) type Gen = Box<dyn Iterator<Item = (EntryType, String)>>;

/// A tar stream of empty entries, made as it is read: GNU long-name entries for names
/// over 100 bytes, as `pack` writes them.
pub(super) struct Stream {
    entries: Gen,
    pending: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Stream {
    pub(super) fn new(entries: Gen) -> Stream {
        Stream { entries, pending: Vec::new(), at: 0, ended: false }
    }
}

fn header(kind: EntryType, name: &[u8], size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
    h.set_mtime(1_600_000_000);
    h.set_size(size);
    h.set_cksum();
    h
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.pending.len() {
            if self.ended {
                return Ok(0);
            }
            self.pending.clear();
            self.at = 0;
            match self.entries.next() {
                Some((kind, name)) => {
                    if name.len() > 100 {
                        let long = header(EntryType::GNULongName, b"././@LongLink", 0);
                        let mut long = long;
                        long.set_size(name.len() as u64 + 1);
                        long.set_cksum();
                        self.pending.extend_from_slice(long.as_bytes());
                        self.pending.extend_from_slice(name.as_bytes());
                        self.pending.push(0);
                        self.pending.resize(self.pending.len().next_multiple_of(512), 0);
                        let short = &name.as_bytes()[..100];
                        self.pending.extend_from_slice(header(kind, short, 0).as_bytes());
                    } else {
                        self.pending.extend_from_slice(header(kind, name.as_bytes(), 0).as_bytes());
                    }
                }
                None => {
                    self.pending.resize(1024, 0);
                    self.ended = true;
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `flat/` and `count` empty files in it.
pub(super) fn flat(count: u64) -> Gen {
    let files = (0..count).map(|i| (EntryType::Regular, format!("flat/f{i:07}")));
    Box::new(std::iter::once((EntryType::Directory, "flat/".to_owned())).chain(files))
}

/// `deep/` and `chains` chains of `depth` directories each, depth first, with one empty
/// file at the bottom of each chain.
pub(super) fn deep(chains: u64, depth: usize) -> Gen {
    let top = std::iter::once((EntryType::Directory, "deep/".to_owned()));
    let chains = (0..chains).flat_map(move |c| {
        let mut path = format!("deep/c{c:03}");
        let mut out = Vec::with_capacity(depth + 1);
        for level in 0..depth {
            if level > 0 {
                path.push_str("/d");
            }
            out.push((EntryType::Directory, format!("{path}/")));
        }
        out.push((EntryType::Regular, format!("{path}/f")));
        out
    });
    Box::new(top.chain(chains))
}

/// The process's peak resident set, in KiB.
pub(super) fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("a VmHWM line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number")
}

fn scratch() -> tempfile::TempDir {
    match std::env::var_os("PCP_SCALE_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("tempdir in PCP_SCALE_DIR"),
        None => tempfile::tempdir().expect("tempdir"),
    }
}

/// Extracts `entries` under the top-level name `top` and commits; returns the time taken
/// and the peak resident set.
fn run(top: &str, entries: Gen) -> (Duration, u64) {
    let dir = scratch();
    let started = Instant::now();
    let mut unpacker = Unpacker::new(dir.path(), vec![top.to_owned()]).expect("staging");
    unpacker.unpack(Stream::new(entries)).expect("unpack");
    unpacker.commit(false).expect("commit");
    let took = started.elapsed();
    let peak = vm_hwm_kib();
    #[allow(clippy::print_stderr)] // a measurement the caller reads
    {
        eprintln!("scale {top}: {:.1} s, VmHWM {peak} KiB", took.as_secs_f64());
    }
    (took, peak)
}

#[test]
#[ignore = "a million inodes: run alone, see the module docs"]
fn a_million_flat_entries() {
    let (_, peak) = run("flat", flat(1_000_000));
    assert!(peak < LIMIT_KIB, "VmHWM {peak} KiB");
}

#[test]
#[ignore = "15,000 directories 150 deep: run alone, see the module docs"]
fn fifteen_thousand_directories_150_deep() {
    let (_, peak) = run("deep", deep(100, 150));
    assert!(peak < LIMIT_KIB, "VmHWM {peak} KiB");
}
