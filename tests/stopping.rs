//! Ending a transfer on purpose, as a user would: Ctrl-C on either side tells the peer,
//! which stops at once instead of reconnecting for ten minutes; a receiver that cannot
//! take an offer where it stands refuses without burning the sender's code.
//!
//! Two hosts on a virtual LAN (network namespaces: the netns tier, run as root under
//! `tests/isolated` with `--include-ignored`).

mod util;

use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use util::{CODE, Lan, MIB, Proc, TIMEOUT, arg, data_len, exit, part_path, read, wait_for_len};
use util::{start_receiver, start_sender, write_random_file};

/// Well under the 10 s after which silence means a lost connection: the peer was told.
const AT_ONCE: Duration = Duration::from_secs(8);

/// A sender of a 64 MiB file held to 40 Mbit/s (a transfer of about 13 s), and a
/// receiver writing it with `-o`, both running once a few MiB have arrived.
struct Running {
    _dir: TempDir,
    out: std::path::PathBuf,
    sender: Proc,
    receiver: Proc,
    // Dropped last: the processes run inside it.
    _lan: Lan,
}

fn running() -> Running {
    let lan = Lan::pair();
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, out) = (dir.path().join("big.bin"), dir.path().join("out.bin"));
    write_random_file(&src, 64 * MIB);
    lan.host(0).rate_limit("40mbit");
    let sender = start_sender(lan.host(0), CODE, &[arg(&src)], Stdio::null());
    let receiver = start_receiver(lan.host(1), &["-y", "-o", arg(&out), CODE], Stdio::null());
    let mut r = Running { _dir: dir, out, sender, receiver, _lan: lan };
    wait_for_len(
        &part_path(&r.out),
        2 * MIB as u64,
        TIMEOUT,
        &mut [&mut r.sender, &mut r.receiver],
    );
    r
}

#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn ctrl_c_on_the_receiver_stops_the_sender_at_once() {
    let mut r = running();
    r.receiver.child.signal("INT");
    let at = Instant::now();
    let receiver = r.receiver.expect_exit(exit::INTERRUPTED);
    let sender = r.sender.expect_exit(exit::FAILURE);
    assert!(at.elapsed() < AT_ONCE, "the sender took {:?} to stop", at.elapsed());
    assert!(sender.contains("the receiver cancelled"), "sender:\n{sender}");
    assert!(!sender.contains("reconnecting"), "a deliberate stop is not a lost link:\n{sender}");
    // The receiver says what it kept, and it is there to resume from.
    assert!(receiver.contains("kept ") && receiver.contains("out.bin.pcp-part"), "{receiver}");
    assert!(data_len(&part_path(&r.out)) > 0);
}

#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn sigterm_on_the_sender_stops_the_receiver_at_once() {
    let mut r = running();
    r.sender.child.signal("TERM");
    let at = Instant::now();
    let sender = r.sender.expect_exit(exit::INTERRUPTED);
    let receiver = r.receiver.expect_exit(exit::FAILURE);
    assert!(at.elapsed() < AT_ONCE, "the receiver took {:?} to stop", at.elapsed());
    assert!(receiver.contains("the sender cancelled"), "receiver:\n{receiver}");
    assert!(!receiver.contains("reconnecting"), "{receiver}");
    assert!(!sender.contains("reconnecting"), "{sender}");
    assert!(receiver.contains("kept "), "the receiver says what it kept:\n{receiver}");
}

/// Issue 10, item 6: a name that exists is the receiver's local problem. The sender
/// hears why and keeps waiting with the same code; the receiver retries with --force.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn a_refusal_for_a_local_reason_keeps_the_sender_waiting() {
    let lan = Lan::pair();
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dest) = (dir.path().join("report.pdf"), dir.path().join("dest"));
    std::fs::create_dir(&dest).expect("mkdir");
    let data = write_random_file(&src, MIB + 7);
    std::fs::write(dest.join("report.pdf"), b"precious").expect("write");
    let mut sender = start_sender(lan.host(0), CODE, &[arg(&src)], Stdio::null());

    let mut first = start_receiver(lan.host(1), &["-y", "-C", arg(&dest), CODE], Stdio::null());
    let refused = first.expect_exit(exit::FAILURE);
    assert!(refused.contains("already exists") && refused.contains("same code"), "{refused}");
    sender.stderr.wait_for_line(|l| l.contains("the receiver refused"), TIMEOUT);
    sender.assert_running();
    assert_eq!(read(&dest.join("report.pdf")), b"precious", "nothing was overwritten");

    let args = ["-y", "--force", "-C", arg(&dest), CODE];
    let mut second = start_receiver(lan.host(1), &args, Stdio::null());
    second.expect_exit(exit::OK);
    sender.expect_exit(exit::OK);
    assert_eq!(read(&dest.join("report.pdf")), data);
}

/// Issue 10, item 1: a file the sender cannot read, found only while it packs a
/// folder, stops the receiver at once with the reason, and leaves no empty part file.
/// The sender runs as `nobody`: root reads any file.
#[test]
#[ignore = "netns tier: needs root; run under tests/isolated with --include-ignored"]
fn an_unreadable_file_stops_the_receiver_at_once_with_the_reason() {
    use std::os::unix::fs::PermissionsExt;
    let lan = Lan::pair();
    let dir = tempfile::tempdir().expect("tempdir");
    let (tree, dest) = (dir.path().join("album"), dir.path().join("dest"));
    std::fs::create_dir_all(&tree).expect("mkdir");
    std::fs::create_dir(&dest).expect("mkdir");
    std::fs::write(tree.join("a.txt"), b"readable").expect("write");
    std::fs::write(tree.join("locked.txt"), b"secret").expect("write");
    std::fs::set_permissions(tree.join("locked.txt"), std::fs::Permissions::from_mode(0o000))
        .expect("chmod");
    for d in [dir.path(), tree.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    let mut cmd = lan.host(0).command("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", util::pcp_bin()]).args([
        "send",
        "--code",
        CODE,
        arg(&tree),
    ]);
    let mut sender = Proc::spawn("sender", &mut cmd);
    sender.wait_until_ready();
    let mut receiver = start_receiver(lan.host(1), &["-y", "-C", arg(&dest), CODE], Stdio::null());
    let said = receiver.expect_exit(exit::FAILURE);
    assert!(
        said.contains("the sender reported: cannot read") && said.contains("locked.txt"),
        "{said}"
    );
    assert!(!said.contains("reconnecting"), "{said}");
    let sent = sender.expect_exit(exit::FAILURE);
    assert!(sent.contains("locked.txt"), "{sent}");
    assert!(util::list_dir(&dest).is_empty(), "left behind: {:?}", util::list_dir(&dest));
}
