//! `pcp send --many`: one code, many receivers, each with its own session and resume
//! (issue 15).
//!
//! The netns tests build one bridged LAN (`util::Lan`), run `pcp send --many N` on host
//! 0 and a `pcp receive -y` on each other host; they find each other with real mDNS.
//! Links are slowed with a token bucket on the bridge's port toward one host
//! (`Lan::limit_to`), so the others keep their speed; the cut is an address change
//! (`Host::change_addr`), which kills the connection for good, so the receiver must
//! come back and resume. Progress is measured on the receivers' part files, never
//! guessed with a sleep.
//!
//! Needs root, so those tests are `#[ignore]`d: run them under `tests/isolated` with
//! `--include-ignored` (see README.md, "Tests: two tiers").

mod util;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use util::{
    CODE, Lan, MIB, Proc, TIMEOUT, arg, assert_bytes_eq, assert_trees_eq, exit, finish_all,
    part_path, read, spawn_endless_writer, spawn_sender, start_receiver, start_sender, stdin_from,
    stdout_to, wait_for_len, write_random_file, write_random_tree,
};

/// Long enough for a debug build on a loaded machine, with a reconnection.
const FINISH: Duration = Duration::from_secs(240);

const NAMES: [&str; 5] = ["receiver 1", "receiver 2", "receiver 3", "receiver 4", "receiver 5"];

/// `pcp receive -v -y ARGS… CODE` on host `i`, named after it.
fn receive(lan: &Lan, i: usize, args: &[&str]) -> Proc {
    let args = [&["-v", "-y"], args, &[CODE]].concat();
    let mut p = start_receiver(lan.host(i), &args, Stdio::null());
    p.name = NAMES[i - 1];
    p
}

/// Every process's status and stderr, for failure messages.
fn everything(procs: &[&mut Proc], results: &[(std::process::ExitStatus, String)]) -> String {
    procs
        .iter()
        .zip(results)
        .map(|(p, (status, stderr))| format!("--- {} ({status}) stderr:\n{stderr}", p.name))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Issue 15: five receivers on five hosts of one bridge take one file from one sender
/// with one code; one of them on a 10 Mbit/s link, one cut mid-way (its address
/// changes, so its connection is dead) and resumed. Every copy is identical, and the
/// sender ends by itself once the five have finished.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn five_receivers_one_slow_one_cut_all_identical() {
    let lan = Lan::new(6);
    let tmp = TempDir::new().expect("a temporary directory");
    let src = tmp.path().join("src.bin");
    let data = write_random_file(&src, 12 * MIB);
    lan.limit_to(1, "10mbit");
    lan.limit_to(2, "40mbit");
    let outs: Vec<PathBuf> = (1..=5).map(|i| tmp.path().join(format!("out{i}.bin"))).collect();

    let mut sender =
        start_sender(lan.host(0), CODE, &["-v", "--many", "5", arg(&src)], Stdio::null());
    let mut receivers: Vec<Proc> =
        (1..=5).map(|i| receive(&lan, i, &["-o", arg(&outs[i - 1])])).collect();

    // Receiver 2 is cut at about a third of the file.
    {
        let (first, rest) = receivers.split_at_mut(2);
        let mut watched: Vec<&mut Proc> = vec![&mut sender, &mut first[1]];
        watched.extend(rest.iter_mut());
        wait_for_len(&part_path(&outs[1]), 4 * MIB as u64, FINISH, &mut watched);
    }
    lan.host(2).change_addr(Ipv4Addr::new(198, 18, 0, 102));

    let mut all: Vec<&mut Proc> = vec![&mut sender];
    all.extend(receivers.iter_mut());
    let results = finish_all(&mut all, FINISH);
    let said = everything(&all, &results);
    for (p, (status, _)) in all.iter().zip(&results) {
        assert_eq!(status.code(), Some(exit::OK), "{} exited with {status}\n{said}", p.name);
    }
    for out in &outs {
        assert_bytes_eq(arg(out), &data, &read(out));
    }
    let sender_said = &results[0].1;
    assert!(sender_said.contains("sent 'src.bin' to 5 receivers"), "{said}");
    assert!(sender_said.contains("connection lost, reconnecting"), "the cut was seen\n{said}");
    assert!(results[2].1.contains("connection lost"), "receiver 2 reconnected\n{said}");
    for id in 1..=5 {
        assert!(sender_said.contains(&format!("receiver #{id}: done")), "#{id}\n{said}");
    }
}

/// A folder is packed again for each receiver: two receivers extract the same tree.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn a_folder_to_two_receivers() {
    let lan = Lan::new(3);
    let tmp = TempDir::new().expect("a temporary directory");
    let tree = write_random_tree(tmp.path(), "tree", 20, 64 * 1024);
    let dirs: Vec<PathBuf> = (1..=2).map(|i| tmp.path().join(format!("into{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir(d).expect("mkdir");
    }
    let mut sender =
        spawn_sender(lan.host(0), CODE, &["--json", "--many", "2", arg(&tree)], Stdio::null());
    sender.stderr.wait_for_line(|l| l.contains(r#""event":"ready""#), TIMEOUT);
    let mut r1 = receive(&lan, 1, &["-C", arg(&dirs[0])]);
    let mut r2 = receive(&lan, 2, &["-C", arg(&dirs[1])]);
    let mut all = [&mut sender, &mut r1, &mut r2];
    let results = finish_all(&mut all, FINISH);
    let said = everything(&all, &results);
    for (p, (status, _)) in all.iter().zip(&results) {
        assert_eq!(status.code(), Some(exit::OK), "{} exited with {status}\n{said}", p.name);
    }
    for d in &dirs {
        assert_trees_eq(&tree, &d.join("tree"));
    }
    // --json: each receiver's events carry its number.
    for id in 1..=2 {
        let done = results[0]
            .1
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["event"] == "done" && v["receiver"] == id);
        assert!(done, "no done event for receiver {id}\n{said}");
    }
}

/// With `--many 1`, a second receiver that comes while the first is served is told
/// there is no place left, and the first still gets everything.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn a_receiver_past_the_count_is_told_so() {
    let lan = Lan::new(3);
    let tmp = TempDir::new().expect("a temporary directory");
    let src = tmp.path().join("src.bin");
    let data = write_random_file(&src, 8 * MIB);
    lan.limit_to(1, "10mbit");
    let (out1, out2) = (tmp.path().join("out1.bin"), tmp.path().join("out2.bin"));
    let mut sender = start_sender(lan.host(0), CODE, &["--many", "1", arg(&src)], Stdio::null());
    let mut r1 = receive(&lan, 1, &["-o", arg(&out1)]);
    wait_for_len(&part_path(&out1), MIB as u64, FINISH, &mut [&mut sender, &mut r1]);
    let mut r2 = receive(&lan, 2, &["-o", arg(&out2)]);
    let told = r2.expect_exit(exit::FAILURE);
    assert!(told.contains("no place left"), "{told}");
    assert!(!out2.exists(), "nothing written for the second receiver");
    let mut all = [&mut sender, &mut r1];
    let results = finish_all(&mut all, FINISH);
    let said = everything(&all, &results);
    for (p, (status, _)) in all.iter().zip(&results) {
        assert_eq!(status.code(), Some(exit::OK), "{} exited with {status}\n{said}", p.name);
    }
    assert_bytes_eq(arg(&out1), &data, &read(&out1));
}

/// `pcp receive -v -y CODE > out` on host `i`, named after it.
fn receive_to(lan: &Lan, i: usize, out: &std::path::Path) -> Proc {
    let mut p = start_receiver(lan.host(i), &["-v", "-y", CODE], stdout_to(out));
    p.name = NAMES[i - 1];
    p
}

/// Every process exited 0; else their stderr.
fn all_ok(all: &[&mut Proc], results: &[(std::process::ExitStatus, String)]) {
    let said = everything(all, results);
    for (p, (status, _)) in all.iter().zip(results) {
        assert_eq!(status.code(), Some(exit::OK), "{} exited with {status}\n{said}", p.name);
    }
}

/// The sender's `peak=N budget=M` log line (at `-v`): chunks held at most for all
/// receivers, and the budget.
fn peak(sender_said: &str) -> (u64, u64) {
    let line = sender_said
        .lines()
        .find(|l| l.contains("chunks held at most"))
        .unwrap_or_else(|| panic!("no peak logged\n{sender_said}"));
    let field = |name: &str| -> u64 {
        let at = line.find(&format!("{name}=")).expect("the field") + name.len() + 1;
        let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().expect("a number")
    };
    (field("peak"), field("budget"))
}

/// Issue 15: standard input is read once and fanned out to three receivers, each of
/// which gets it byte for byte. (The old code refused `--many` with standard input.)
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn stdin_to_three_receivers_all_identical() {
    let lan = Lan::new(4);
    let tmp = TempDir::new().expect("a temporary directory");
    let src = tmp.path().join("src.bin");
    let data = write_random_file(&src, 24 * MIB);
    let outs: Vec<PathBuf> = (1..=3).map(|i| tmp.path().join(format!("out{i}.bin"))).collect();
    let mut sender = start_sender(lan.host(0), CODE, &["-v", "--many", "3", "-"], stdin_from(&src));
    let mut receivers: Vec<Proc> = (1..=3).map(|i| receive_to(&lan, i, &outs[i - 1])).collect();
    let mut all: Vec<&mut Proc> = vec![&mut sender];
    all.extend(receivers.iter_mut());
    let results = finish_all(&mut all, FINISH);
    all_ok(&all, &results);
    for out in &outs {
        assert_bytes_eq(arg(out), &data, &read(out));
    }
    let said = everything(&all, &results);
    for id in 1..=3 {
        assert!(results[0].1.contains(&format!("receiver #{id}: done")), "#{id}\n{said}");
    }
    let (peak, budget) = peak(&results[0].1);
    assert!(peak <= budget, "held {peak} chunks with a budget of {budget}\n{said}");
}

/// Issue 15: a receiver of standard input fanned out to two whose connection is cut
/// mid-way (its address changes) comes back and resumes from the chunks the shared
/// buffer still holds for it; both get every byte, and the stream is read only once.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn a_cut_stdin_receiver_resumes_from_the_shared_buffer() {
    let lan = Lan::new(3);
    let tmp = TempDir::new().expect("a temporary directory");
    let src = tmp.path().join("src.bin");
    let data = write_random_file(&src, 24 * MIB);
    // Slow enough that the cut comes mid-way, however fast the machine.
    lan.limit_to(2, "40mbit");
    let outs: Vec<PathBuf> = (1..=2).map(|i| tmp.path().join(format!("out{i}.bin"))).collect();
    let mut sender = start_sender(lan.host(0), CODE, &["-v", "--many", "2", "-"], stdin_from(&src));
    let mut receivers: Vec<Proc> = (1..=2).map(|i| receive_to(&lan, i, &outs[i - 1])).collect();
    {
        let mut watched: Vec<&mut Proc> = vec![&mut sender];
        watched.extend(receivers.iter_mut());
        wait_for_len(&outs[1], 4 * MIB as u64, FINISH, &mut watched);
    }
    lan.host(2).change_addr(Ipv4Addr::new(198, 18, 0, 102));
    let mut all: Vec<&mut Proc> = vec![&mut sender];
    all.extend(receivers.iter_mut());
    let results = finish_all(&mut all, FINISH);
    all_ok(&all, &results);
    for out in &outs {
        assert_bytes_eq(arg(out), &data, &read(out));
    }
    let said = everything(&all, &results);
    assert!(results[0].1.contains("connection lost, reconnecting"), "the cut was seen\n{said}");
    assert!(results[2].1.contains("connection lost"), "receiver 2 reconnected\n{said}");
    assert!(!results[0].1.contains("dropped"), "the cut receiver was not dropped\n{said}");
}

/// Issue 15: a receiver on a slow link paces the reader of standard input (the
/// stream is longer than the shared buffer, so the others wait for it), the buffer
/// never passes its budget, and every receiver gets every byte.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn a_slow_receiver_paces_stdin_and_all_finish() {
    let lan = Lan::new(4);
    let tmp = TempDir::new().expect("a temporary directory");
    let src = tmp.path().join("src.bin");
    let data = write_random_file(&src, 96 * MIB);
    lan.limit_to(1, "100mbit");
    let outs: Vec<PathBuf> = (1..=3).map(|i| tmp.path().join(format!("out{i}.bin"))).collect();
    let mut sender = start_sender(lan.host(0), CODE, &["-v", "--many", "3", "-"], stdin_from(&src));
    let mut receivers: Vec<Proc> = (1..=3).map(|i| receive_to(&lan, i, &outs[i - 1])).collect();
    let mut all: Vec<&mut Proc> = vec![&mut sender];
    all.extend(receivers.iter_mut());
    let results = finish_all(&mut all, FINISH);
    all_ok(&all, &results);
    for out in &outs {
        assert_bytes_eq(arg(out), &data, &read(out));
    }
    let said = everything(&all, &results);
    assert!(!results[0].1.contains("dropped"), "a pacing receiver is not dropped\n{said}");
    let (peak, budget) = peak(&results[0].1);
    assert!(peak <= budget, "held {peak} chunks with a budget of {budget}\n{said}");
    // The slow link held the others back: the buffer filled up to its budget.
    assert!(peak + 8 >= budget, "held only {peak} of {budget}: nothing was paced\n{said}");
}

/// Issue 15: once the stream's first chunk has left the shared buffer, a new receiver
/// is told at once that it cannot have the stream, and the first one goes on.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn a_receiver_after_the_stream_moved_on_is_refused() {
    let lan = Lan::new(3);
    let tmp = TempDir::new().expect("a temporary directory");
    let (out1, out2) = (tmp.path().join("out1.bin"), tmp.path().join("out2.bin"));
    let mut sender = spawn_sender(lan.host(0), CODE, &["-v", "--many", "-"], Stdio::piped());
    let _writer = spawn_endless_writer(sender.child.stdin.take().expect("stdin is piped"));
    sender.wait_until_ready();
    let mut r1 = receive_to(&lan, 1, &out1);
    // Past the 64 MiB buffer: its first chunks are gone.
    wait_for_len(&out1, 80 * MIB as u64, FINISH, &mut [&mut sender, &mut r1]);
    let mut r2 = receive_to(&lan, 2, &out2);
    let told = r2.expect_exit(exit::FAILURE);
    assert!(told.contains("already partly delivered to another receiver"), "{told}");
    assert_eq!(std::fs::metadata(&out2).map(|m| m.len()).unwrap_or(0), 0, "nothing written");
    let before = util::data_len(&out1);
    wait_for_len(&out1, before + 8 * MIB as u64, FINISH, &mut [&mut sender, &mut r1]);
}

/// Issue 15: a receiver that stops taking (here, its process stopped) while the others
/// go on fills the shared buffer; after `--many-lag` it is dropped, with its reason on
/// the sender, the other one finishes with every byte, and the stopped one, once it
/// runs again, is told why it was dropped.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn a_stalled_receiver_is_dropped_after_the_lag_and_the_other_finishes() {
    let lan = Lan::new(3);
    let tmp = TempDir::new().expect("a temporary directory");
    let src = tmp.path().join("src.bin");
    let data = write_random_file(&src, 112 * MIB);
    let (out1, out2) = (tmp.path().join("out1.bin"), tmp.path().join("out2.bin"));
    let args = ["-v", "--many", "2", "--many-lag", "3", "-"];
    let mut sender = start_sender(lan.host(0), CODE, &args, stdin_from(&src));
    // Both come at once, so that both have the stream from its start.
    let mut r1 = receive_to(&lan, 1, &out1);
    let mut r2 = receive_to(&lan, 2, &out2);
    wait_for_len(&out2, MIB as u64, FINISH, &mut [&mut sender, &mut r1, &mut r2]);
    r2.child.signal("STOP");
    let (status, said1) = r1.finish(FINISH);
    assert_eq!(status.code(), Some(exit::OK), "receiver 1: {status}\n{said1}");
    assert_bytes_eq(arg(&out1), &data, &read(&out1));
    let dropped = sender.stderr.wait_for_line(|l| l.contains(" dropped: "), TIMEOUT);
    assert!(dropped.contains("--many-lag"), "{dropped}");
    r2.child.signal("CONT");
    let told = r2.expect_exit(exit::FAILURE);
    // The fact, not the sender's flag: the receiver cannot change it.
    assert!(told.contains("took nothing for 3 s"), "receiver 2 is told why\n{told}");
}
