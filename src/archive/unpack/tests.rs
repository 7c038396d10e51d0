use super::*;

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};

use filetime::FileTime;
use tar::Header;
use tempfile::TempDir;

use crate::archive::{pack, top_level_names};

// ---- round trips ----

/// Packs `paths` and unpacks them into `dest` through the whole public API.
fn round_trip(paths: &[PathBuf], dest: &Path) -> Vec<PathBuf> {
    let names = top_level_names(paths).unwrap();
    let tar = pack(paths, Vec::new()).unwrap();
    let mut unpacker = Unpacker::new(dest, names).unwrap();
    unpacker.unpack(&tar[..]).unwrap();
    unpacker.commit(false).unwrap()
}

pub(super) fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn mtime(path: &Path) -> i64 {
    FileTime::from_last_modification_time(&fs::symlink_metadata(path).unwrap()).unix_seconds()
}

pub(super) fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

pub(super) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

#[test]
fn round_trip_keeps_tree_modes_links_and_mtimes() {
    let src = TempDir::new().unwrap();
    let dest = TempDir::new().unwrap();
    let tree = src.path().join("tree");
    fs::create_dir_all(tree.join("sub/nested")).unwrap();
    fs::write(tree.join("sub/nested/deep.txt"), b"deep").unwrap();
    fs::create_dir(tree.join("empty")).unwrap();
    fs::write(tree.join("run.sh"), b"#!/bin/sh\n").unwrap();
    set_mode(&tree.join("run.sh"), 0o755);
    fs::write(tree.join("secret"), b"key").unwrap();
    set_mode(&tree.join("secret"), 0o600);
    fs::create_dir(tree.join("ro")).unwrap();
    fs::write(tree.join("ro/inside.txt"), b"inside").unwrap();
    symlink("sub/nested/deep.txt", tree.join("link")).unwrap();
    filetime::set_file_mtime(tree.join("secret"), FileTime::from_unix_time(1_500_000_000, 0))
        .unwrap();
    filetime::set_file_mtime(tree.join("sub"), FileTime::from_unix_time(1_400_000_000, 0)).unwrap();
    filetime::set_file_mtime(tree.join("ro"), FileTime::from_unix_time(1_300_000_000, 0)).unwrap();
    set_mode(&tree.join("ro"), 0o555);

    let placed = round_trip(std::slice::from_ref(&tree), dest.path());
    let out = dest.path().join("tree");
    assert_eq!(placed, std::slice::from_ref(&out));
    assert_eq!(names_in(dest.path()), ["tree"], "staging is gone");
    assert_eq!(names_in(&out), ["empty", "link", "ro", "run.sh", "secret", "sub"]);
    assert_eq!(fs::read(out.join("sub/nested/deep.txt")).unwrap(), b"deep");
    assert!(names_in(&out.join("empty")).is_empty());
    assert_eq!(mode(&out.join("run.sh")), 0o755);
    assert_eq!(mode(&out.join("secret")), 0o600);
    assert_eq!(mode(&out.join("ro")), 0o555);
    assert_eq!(fs::read(out.join("ro/inside.txt")).unwrap(), b"inside");
    assert!(fs::symlink_metadata(out.join("link")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_link(out.join("link")).unwrap(), Path::new("sub/nested/deep.txt"));
    assert_eq!(mtime(&out.join("secret")), 1_500_000_000);
    assert_eq!(mtime(&out.join("sub")), 1_400_000_000);
    assert_eq!(mtime(&out.join("ro")), 1_300_000_000);
    assert_eq!(mtime(&out.join("ro/inside.txt")), mtime(&tree.join("ro/inside.txt")));

    // Let TempDir clean up when the tests do not run as root.
    set_mode(&tree.join("ro"), 0o755);
    set_mode(&out.join("ro"), 0o755);
}

#[test]
fn round_trip_long_names_and_link_targets() {
    // Over tar's 100-byte name field: GNU long-name and long-link headers, which the
    // guard lets through.
    let src = TempDir::new().unwrap();
    let dest = TempDir::new().unwrap();
    let long = "n".repeat(200);
    let tree = src.path().join("tree");
    fs::create_dir_all(tree.join(&long)).unwrap();
    fs::write(tree.join(&long).join(&long), b"deep").unwrap();
    symlink(format!("{long}/{long}"), tree.join("link")).unwrap();
    round_trip(std::slice::from_ref(&tree), dest.path());
    let out = dest.path().join("tree");
    assert_eq!(fs::read(out.join(&long).join(&long)).unwrap(), b"deep");
    assert_eq!(fs::read(out.join("link")).unwrap(), b"deep");
}

#[test]
fn round_trip_several_top_level_paths() {
    let src = TempDir::new().unwrap();
    let dest = TempDir::new().unwrap();
    fs::create_dir(src.path().join("dir")).unwrap();
    fs::write(src.path().join("dir/in.txt"), b"in").unwrap();
    fs::write(src.path().join("file.txt"), b"file").unwrap();
    let paths = [src.path().join("dir"), src.path().join("file.txt")];
    let placed = round_trip(&paths, dest.path());
    assert_eq!(placed, [dest.path().join("dir"), dest.path().join("file.txt")]);
    assert_eq!(fs::read(dest.path().join("dir/in.txt")).unwrap(), b"in");
    assert_eq!(fs::read(dest.path().join("file.txt")).unwrap(), b"file");
    assert_eq!(names_in(dest.path()), ["dir", "file.txt"]);
}

#[test]
fn round_trip_single_file_and_top_level_symlink() {
    let src = TempDir::new().unwrap();
    let dest = TempDir::new().unwrap();
    fs::write(src.path().join("one.bin"), [0u8, 1, 2, 255]).unwrap();
    symlink("one.bin", src.path().join("alias")).unwrap();
    let paths = [src.path().join("one.bin")];
    assert_eq!(round_trip(&paths, dest.path()), [dest.path().join("one.bin")]);
    assert_eq!(fs::read(dest.path().join("one.bin")).unwrap(), [0u8, 1, 2, 255]);

    // A symlink named on the command line is sent as what it points to.
    round_trip(&[src.path().join("alias")], dest.path());
    let alias = dest.path().join("alias");
    assert!(fs::symlink_metadata(&alias).unwrap().is_file());
    assert_eq!(fs::read(alias).unwrap(), [0u8, 1, 2, 255]);
}

#[test]
fn large_file_streams_through_a_pipe() {
    /// Records the largest single write, to show `pack` never hands over the archive
    /// in one piece.
    struct Largest<W> {
        inner: W,
        largest: usize,
    }
    impl<W: Write> Write for Largest<W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.largest = self.largest.max(n);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    const SIZE: usize = 5 * 1024 * 1024 + 123;
    let src = TempDir::new().unwrap();
    let dest = TempDir::new().unwrap();
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let path = src.path().join("big.bin");
    fs::write(&path, &data).unwrap();

    let (mut reader, writer) = io::pipe().unwrap();
    let paths = vec![path];
    let mut unpacker = Unpacker::new(dest.path(), top_level_names(&paths).unwrap()).unwrap();
    let sender = std::thread::spawn(move || {
        let out = pack(&paths, Largest { inner: writer, largest: 0 }).unwrap();
        out.largest
        // The writer drops here, closing the pipe.
    });
    unpacker.unpack(&mut reader).unwrap();
    let largest = sender.join().unwrap();
    assert!(largest < SIZE / 4, "largest write {largest} of {SIZE}");
    // unpack read the pipe to its end.
    assert_eq!(reader.read(&mut [0u8; 16]).unwrap(), 0);
    unpacker.commit(false).unwrap();
    assert!(fs::read(dest.path().join("big.bin")).unwrap() == data);
}

#[test]
fn unpack_reads_trailing_padding() {
    let src = TempDir::new().unwrap();
    let dest = TempDir::new().unwrap();
    fs::write(src.path().join("f"), b"f").unwrap();
    let mut tar = pack(&[src.path().join("f")], Vec::new()).unwrap();
    // GNU tar pads to a 10 KiB record.
    tar.resize(10240, 0);
    let mut cursor = io::Cursor::new(&tar);
    let mut unpacker = Unpacker::new(dest.path(), vec!["f".into()]).unwrap();
    unpacker.unpack(&mut cursor).unwrap();
    assert_eq!(cursor.position(), 10240);
}

// ---- hostile archives ----

/// Appends one entry with raw `name` and `link` bytes, which `Header::set_path` would
/// refuse to write.
pub(super) fn raw_entry(tar: &mut Vec<u8>, kind: EntryType, name: &[u8], link: &[u8], data: &[u8]) {
    let mut header = Header::new_gnu();
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name);
    old.linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
    header.set_mtime(1_600_000_000);
    header.set_size(data.len() as u64);
    header.set_cksum();
    tar.extend_from_slice(header.as_bytes());
    tar.extend_from_slice(data);
    tar.resize(tar.len().next_multiple_of(512), 0);
}

pub(super) fn dir(tar: &mut Vec<u8>, name: &str) {
    raw_entry(tar, EntryType::Directory, name.as_bytes(), b"", b"");
}

fn file(tar: &mut Vec<u8>, name: &str) {
    raw_entry(tar, EntryType::Regular, name.as_bytes(), b"", b"evil");
}

fn link(tar: &mut Vec<u8>, kind: EntryType, name: &str, target: &str) {
    raw_entry(tar, kind, name.as_bytes(), target.as_bytes(), b"");
}

/// Unpacks `tar` allowing only `d`, expects [`ArchiveError::Unsafe`], and checks that
/// nothing appeared outside staging and that dropping the unpacker leaves nothing.
fn assert_refused(mut tar: Vec<u8>) -> ArchiveError {
    tar.extend_from_slice(&[0; 1024]);
    let root = TempDir::new().unwrap();
    let dest = root.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let mut unpacker = Unpacker::new(&dest, vec!["d".into()]).unwrap();
    let err = unpacker.unpack(&tar[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::Unsafe { .. }), "{err:?}");
    assert_eq!(names_in(root.path()), ["dest"]);
    let staging = unpacker.staging().file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(names_in(&dest), [staging]);
    drop(unpacker);
    assert!(names_in(&dest).is_empty());
    err
}

/// Issue 9, item 14 (found by `tests/adversary.rs`): an Offer may announce 65,536
/// names. Looking each entry's top-level name up in a list, and deduplicating the
/// list at commit, cost O(names) per entry and O(names²) at commit: 34 s of CPU for
/// one such Offer in a debug build, and far more with many entries. Both are set
/// lookups now.
#[test]
fn many_announced_names_cost_no_more_than_a_few() {
    let root = TempDir::new().unwrap();
    let mut names: Vec<String> = (0..65_536).map(|i| format!("e{i:014}")).collect();
    names.push(names[0].clone());
    let last = names[65_535].clone();
    let mut tar = Vec::new();
    dir(&mut tar, &format!("{last}/"));
    for i in 0..1_000 {
        raw_entry(&mut tar, EntryType::Regular, format!("{last}/{i}").as_bytes(), b"", b"");
    }
    tar.extend_from_slice(&[0; 1024]);
    let started = std::time::Instant::now();
    let mut unpacker = Unpacker::new(root.path(), names).unwrap();
    unpacker.unpack(&tar[..]).unwrap();
    let err = unpacker.commit(false).unwrap_err();
    assert!(matches!(err, ArchiveError::Incomplete { ref name } if name == "e00000000000000"));
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
}

#[test]
fn refuses_parent_components() {
    let mut tar = Vec::new();
    file(&mut tar, "../evil");
    assert_refused(tar);
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    file(&mut tar, "d/../../evil");
    assert_refused(tar);
}

#[test]
fn refuses_absolute_paths() {
    let mut tar = Vec::new();
    file(&mut tar, "/etc/evil");
    assert_refused(tar);
    assert!(!Path::new("/etc/evil").exists());
    let mut tar = Vec::new();
    file(&mut tar, "/d/evil");
    assert_refused(tar);
}

#[test]
fn refuses_names_outside_the_announced_ones() {
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    file(&mut tar, "other/evil");
    let err = assert_refused(tar);
    assert!(err.to_string().contains("\"other/evil\""), "{err}");
}

#[test]
fn refuses_non_utf8_names_and_devices() {
    let mut tar = Vec::new();
    raw_entry(&mut tar, EntryType::Regular, b"d/\xff", b"", b"x");
    assert_refused(tar);
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    raw_entry(&mut tar, EntryType::Fifo, b"d/fifo", b"", b"");
    assert_refused(tar);
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    raw_entry(&mut tar, EntryType::Char, b"d/null", b"", b"");
    assert_refused(tar);
}

#[test]
fn refuses_absolute_symlink_and_writes_through_it() {
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    link(&mut tar, EntryType::Symlink, "d/link", "/etc");
    file(&mut tar, "d/link/passwd");
    assert_refused(tar);
}

#[test]
fn never_writes_through_a_symlink_even_one_inside() {
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    link(&mut tar, EntryType::Symlink, "d/self", ".");
    file(&mut tar, "d/self/f");
    let err = assert_refused(tar);
    assert!(matches!(err, ArchiveError::Unsafe { ref entry, .. } if entry == "d/self/f"));
}

#[test]
fn refuses_escaping_symlinks() {
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    link(&mut tar, EntryType::Symlink, "d/up", "../../x");
    assert_refused(tar);
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    link(&mut tar, EntryType::Symlink, "d/up", "..");
    assert_refused(tar);
    // Lexically inside, but `b/..` climbs out if `d/b` is a symlink to a subdirectory.
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    link(&mut tar, EntryType::Symlink, "d/s", "b/../..");
    assert_refused(tar);
}

#[test]
fn refuses_hard_links_outside_and_to_symlinks() {
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    link(&mut tar, EntryType::Link, "d/hl", "../x");
    assert_refused(tar);
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    link(&mut tar, EntryType::Link, "d/hl", "/etc/passwd");
    assert_refused(tar);
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    link(&mut tar, EntryType::Symlink, "d/s", "x");
    link(&mut tar, EntryType::Link, "d/hl", "d/s");
    assert_refused(tar);
}

#[test]
fn refuses_an_entry_twice() {
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    link(&mut tar, EntryType::Symlink, "d/f", "g");
    file(&mut tar, "d/f");
    assert_refused(tar);
}

#[test]
fn accepts_hard_links_and_missing_parent_entries() {
    let dest = TempDir::new().unwrap();
    let mut tar = Vec::new();
    file(&mut tar, "d/a/f");
    link(&mut tar, EntryType::Link, "d/g", "d/a/f");
    tar.extend_from_slice(&[0; 1024]);
    let mut unpacker = Unpacker::new(dest.path(), vec!["d".into()]).unwrap();
    unpacker.unpack(&tar[..]).unwrap();
    unpacker.commit(false).unwrap();
    assert_eq!(fs::read(dest.path().join("d/g")).unwrap(), b"evil");
    assert_eq!(mode(&dest.path().join("d/a/f")), 0o644);
}

/// The process umask as the kernel applies it: the mode a file asked to be `0o777`
/// gets, complemented.
fn probed_umask() -> u32 {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("probe");
    OpenOptions::new().write(true).create_new(true).mode(0o777).open(&path).unwrap();
    !mode(&path) & 0o777
}

#[test]
fn extracted_modes_honour_the_umask() {
    let umask = probed_umask();
    // With a zero umask there is nothing to show; test runners use 022 or stricter.
    assert_ne!(umask, 0, "run the tests under a non-zero umask");
    let dest = TempDir::new().unwrap();
    let mut tar = Vec::new();
    for (kind, name) in [(EntryType::Directory, "d"), (EntryType::Regular, "d/f")] {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o777);
        header.set_size(0);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
    }
    tar.extend_from_slice(&[0; 1024]);
    let mut unpacker = Unpacker::new(dest.path(), vec!["d".into()]).unwrap();
    unpacker.unpack(&tar[..]).unwrap();
    unpacker.commit(false).unwrap();
    assert_eq!(mode(&dest.path().join("d")), 0o777 & !umask, "a directory");
    assert_eq!(mode(&dest.path().join("d/f")), 0o777 & !umask, "a file");
}

#[test]
fn refuses_bad_announced_names() {
    let dest = TempDir::new().unwrap();
    let bad = ["", ".", "..", "a/b", "/etc", "a/", "a//", "a/.", "./a", "a\\b", "..\\x", "a\0"];
    for bad in bad {
        assert_eq!(plain_name(bad), None, "{bad:?}");
        let err = Unpacker::new(dest.path(), vec![bad.into()]).unwrap_err();
        assert!(matches!(err, ArchiveError::Unsafe { .. }), "{bad:?}: {err:?}");
        assert!(Unpacker::conflicts(dest.path(), &[bad.into()]).is_empty());
    }
    assert!(names_in(dest.path()).is_empty());
    for good in ["a", "a.b", "..a", "a..", ".hidden", "a b", "ä"] {
        assert_eq!(plain_name(good), Some(good));
    }
}

/// A tar stream made of `head` then zeros without end, produced as it is read and
/// failing past 1 MiB, so that a test cannot allocate what a header claims.
struct Endless {
    head: Vec<u8>,
    pos: usize,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos > 1 << 20 {
            return Err(io::Error::other("read past 1 MiB"));
        }
        let n = buf.len().min(4096);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.head.get(self.pos + i).copied().unwrap_or(0);
        }
        self.pos += n;
        Ok(n)
    }
}

fn extension_header(kind: EntryType, size: u64) -> Vec<u8> {
    let mut header = Header::new_gnu();
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_cksum();
    header.as_bytes().to_vec()
}

#[test]
fn refuses_huge_extension_headers_from_the_header_alone() {
    let kinds = [
        EntryType::GNULongName,
        EntryType::GNULongLink,
        EntryType::XHeader,
        EntryType::XGlobalHeader,
    ];
    for kind in kinds {
        // A `d` entry first, so the refusal is not of the first block.
        let mut head = Vec::new();
        dir(&mut head, "d");
        head.extend_from_slice(&extension_header(kind, 1 << 30));
        let dest = TempDir::new().unwrap();
        let mut unpacker = Unpacker::new(dest.path(), vec!["d".into()]).unwrap();
        let mut stream = Endless { head, pos: 0 };
        let err = unpacker.unpack(&mut stream).unwrap_err();
        assert!(stream.pos <= 64 << 10, "{kind:?}: read {} bytes", stream.pos);
        assert!(matches!(err, ArchiveError::ExtensionTooLarge { .. }), "{kind:?}: {err:?}");
        assert!(err.to_string().contains("1073741824"), "{err}");
    }
}

#[test]
fn truncated_entry_is_an_error() {
    let dest = TempDir::new().unwrap();
    let mut tar = Vec::new();
    raw_entry(&mut tar, EntryType::Regular, b"d", b"", &[7; 2000]);
    tar.truncate(512 + 1000);
    let mut unpacker = Unpacker::new(dest.path(), vec!["d".into()]).unwrap();
    let err = unpacker.unpack(&tar[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::Truncated { .. }), "{err:?}");
}

// ---- resumable extraction ----

/// `tree` (a directory), `tree/a`, `tree/b`, the end: and the offset of each entry.
fn three_entries() -> (Vec<u8>, Vec<u64>) {
    let mut tar = Vec::new();
    let mut at = Vec::new();
    for (kind, name, data) in [
        (EntryType::Directory, "tree", &b""[..]),
        (EntryType::Regular, "tree/a", b"first"),
        (EntryType::Regular, "tree/b", b"second"),
    ] {
        at.push(tar.len() as u64);
        raw_entry(&mut tar, kind, name.as_bytes(), b"", data);
    }
    tar.extend_from_slice(&[0; 1024]);
    (tar, at)
}

#[test]
fn checkpoints_give_where_each_next_entry_begins() {
    let dest = TempDir::new().unwrap();
    let (tar, at) = three_entries();
    let staging = dest.path().join("s");
    let mut unpacker =
        Unpacker::resumable(dest.path(), staging.clone(), vec!["tree".into()], None).unwrap();
    let mut seen = Vec::new();
    unpacker
        .unpack_from(&tar[..], 0, |c: &Checkpoint| {
            seen.push(c.clone());
            Ok::<(), ArchiveError>(())
        })
        .unwrap();
    let nexts: Vec<u64> = seen.iter().map(|c| c.next).collect();
    assert_eq!(nexts, [at[1], at[2], tar.len() as u64 - 1024]);
    assert!(matches!(&seen[0].entry, Extracted::Dir(d) if d.parts == ["tree"]), "{:?}", seen[0]);
    let first = Extracted::File { size: 5, hash: *blake3::hash(b"first").as_bytes() };
    assert_eq!(seen[1].entry, first, "a file's size and the hash of its bytes");
    assert_eq!(seen[2].name, "tree/b");
    drop(unpacker);
    assert!(staging.join("tree/b").is_file(), "a resumable staging outlives its unpacker");
}

#[test]
fn a_resumed_unpacker_replaces_the_entry_it_stopped_in_and_only_that_one() {
    let dest = TempDir::new().unwrap();
    let (tar, at) = three_entries();
    let staging = dest.path().join("s");
    fs::create_dir_all(staging.join("tree")).unwrap();
    set_mode(&staging, 0o700);
    fs::write(staging.join("tree/a"), b"first").unwrap();
    // What the earlier run left of `tree/b`: part of it, or a planted symlink, which
    // is unlinked, never written through.
    let victim = dest.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    symlink(&victim, staging.join("tree/b")).unwrap();
    let dirs = vec![DirMeta { parts: vec!["tree".into()], mode: 0o750, mtime: 1 }];
    let resume = |staging: &Path| {
        Unpacker::resumable(
            dest.path(),
            staging.to_owned(),
            vec!["tree".into()],
            Some(dirs.clone()),
        )
        .unwrap()
    };
    let mut unpacker = resume(&staging);
    unpacker.unpack_from(&tar[at[2] as usize..], at[2], |_| Ok::<(), ArchiveError>(())).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(fs::read(staging.join("tree/b")).unwrap(), b"second");
    let placed = unpacker.commit(false).unwrap();
    assert_eq!(placed, [dest.path().join("tree")]);
    assert_eq!(mode(&dest.path().join("tree")), 0o750, "the recorded directory's mode");
    assert!(!staging.exists());

    // Only the first entry after the resume point is replaced: a later one that
    // exists is the archive naming a path twice.
    let staging = dest.path().join("s2");
    fs::create_dir_all(staging.join("tree")).unwrap();
    set_mode(&staging, 0o700);
    fs::write(staging.join("tree/b"), b"earlier").unwrap();
    let mut unpacker = resume(&staging);
    let err = unpacker.unpack_from(&tar[at[1] as usize..], at[1], |_| Ok::<(), ArchiveError>(()));
    assert!(matches!(err, Err(ArchiveError::Unsafe { .. })), "{err:?}");
    assert!(staging.exists(), "kept for a later run");
}

/// Issue 14: another local user who can write the target renamed staging away
/// mid-extraction and put a symlink to a directory outside in its place. Entries
/// went through the symlink, and the run committed what was left, exit 0.
#[test]
fn staging_swapped_for_a_symlink_mid_run_writes_nothing_outside_and_fails() {
    let root = TempDir::new().unwrap();
    let dest = root.path().join("dest");
    let outside = root.path().join("outside");
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&outside).unwrap();
    let (tar, _) = three_entries();
    let staging = dest.join(".pcp-x.partial");
    let moved = dest.join("moved");
    let mut unpacker =
        Unpacker::resumable(&dest, staging.clone(), vec!["tree".into()], None).unwrap();
    let mut swapped = false;
    let err = unpacker
        .unpack_from(&tar[..], 0, |_: &Checkpoint| {
            // Between the first entry and the next: the other user's move.
            if !std::mem::replace(&mut swapped, true) {
                fs::rename(&staging, &moved).unwrap();
                symlink(&outside, &staging).unwrap();
            }
            Ok::<(), ArchiveError>(())
        })
        .unwrap_err();
    assert!(names_in(&outside).is_empty(), "nothing outside: {:?}", names_in(&outside));
    let ArchiveError::StagingReplaced { ref path } = err else { panic!("{err:?}") };
    assert_eq!(*path, staging);
    assert!(err.to_string().contains("was replaced while receiving; nothing was moved"));
    assert!(!err.is_refusal(), "the peer is not at fault");
    // The entries went where staging really is, and commit moves none of it.
    assert_eq!(names_in(&moved.join("tree")), ["a", "b"]);
    let err = unpacker.commit(false).unwrap_err();
    assert!(matches!(err, ArchiveError::StagingReplaced { .. }), "{err:?}");
    assert_eq!(names_in(&dest), [".pcp-x.partial", "moved"]);
    assert!(names_in(&outside).is_empty());
}

#[test]
fn top_level_kinds_and_the_entry_count_are_held_to_the_offer() {
    use crate::message::TopKind;
    let announce = |kinds: Vec<TopKind>, entries| Announced {
        names: vec!["d".into(), "f".into()],
        kinds,
        entries: Some(entries),
    };
    let good = || {
        let mut tar = Vec::new();
        dir(&mut tar, "d");
        file(&mut tar, "d/x");
        file(&mut tar, "f");
        tar.extend_from_slice(&[0; 1024]);
        tar
    };
    let unpack = |announced: Announced, tar: &[u8]| {
        let dest = TempDir::new().unwrap();
        let mut unpacker = Unpacker::new(dest.path(), announced).unwrap();
        unpacker.unpack(tar).map(|()| unpacker.commit(false).unwrap().len())
    };
    assert_eq!(unpack(announce(vec![TopKind::Folder, TopKind::File], 3), &good()).unwrap(), 2);
    // `d` announced as a file, `f` as a folder.
    for kinds in [vec![TopKind::File, TopKind::File], vec![TopKind::Folder, TopKind::Folder]] {
        let err = unpack(announce(kinds, 3), &good()).unwrap_err();
        assert!(matches!(err, ArchiveError::KindMismatch { .. }), "{err:?}");
        assert!(err.is_refusal());
        let shown = err.to_string();
        assert!(shown.contains("announced as a f"), "{shown}");
    }
    let err = unpack(announce(vec![TopKind::Folder, TopKind::File], 2), &good()).unwrap_err();
    assert!(matches!(err, ArchiveError::TooManyEntries { offered: 2 }), "{err:?}");
    assert_eq!(err.to_string(), "refused archive: more entries than the 2 offered");
    let err = unpack(announce(vec![TopKind::Folder, TopKind::File], 4), &good()).unwrap_err();
    assert!(matches!(err, ArchiveError::FewerEntries { offered: 4, got: 3 }), "{err:?}");
}

/// Issue 14 item 4: the tar crate's header errors carry the header's raw text.
#[test]
fn a_corrupt_header_is_fixed_text_without_peer_bytes() {
    let mut tar = Vec::new();
    dir(&mut tar, "d");
    let mut bad = Header::new_gnu();
    let name = b"d/]52;c;cGNw[2J";
    bad.as_old_mut().name[..name.len()].copy_from_slice(name);
    bad.set_entry_type(EntryType::Regular);
    bad.set_size(0);
    bad.set_cksum();
    let mut bytes = bad.as_bytes().to_vec();
    // A checksum field of escapes: the crate quotes it in its error.
    bytes[148..156].copy_from_slice(b"\x1b[31m!!!");
    tar.extend_from_slice(&bytes);
    tar.extend_from_slice(&[0; 1024]);
    let dest = TempDir::new().unwrap();
    let mut unpacker = Unpacker::new(dest.path(), vec!["d".into()]).unwrap();
    let err = unpacker.unpack(&tar[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::CorruptHeader { offset: 512 }), "{err:?}");
    assert_eq!(err.to_string(), "refused archive: a corrupt tar header at offset 512");
    assert!(std::error::Error::source(&err).is_none(), "no cause carries the header");
    assert!(err.is_refusal());
}

/// Depth-first and other orders: modes and mtimes land whatever the order, a
/// read-only directory included, and a directory entered again keeps its own.
#[test]
fn modes_and_mtimes_land_in_any_order() {
    let mut tar = Vec::new();
    let entry = |tar: &mut Vec<u8>, kind, name: &str, mode: u32, mtime: u64| {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_size(0);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
    };
    entry(&mut tar, EntryType::Directory, "t", 0o755, 1_000);
    entry(&mut tar, EntryType::Directory, "t/ro", 0o555, 2_000);
    entry(&mut tar, EntryType::Regular, "t/ro/f", 0o644, 3_000);
    entry(&mut tar, EntryType::Directory, "t/a", 0o750, 4_000);
    entry(&mut tar, EntryType::Directory, "t/a/b", 0o700, 5_000);
    // Back into `t/ro` (read-only, left already) and `t/a`, then deep again.
    entry(&mut tar, EntryType::Regular, "t/ro/g", 0o600, 6_000);
    entry(&mut tar, EntryType::Regular, "t/a/h", 0o600, 7_000);
    entry(&mut tar, EntryType::Regular, "t/a/b/c/i", 0o600, 8_000);
    tar.extend_from_slice(&[0; 1024]);
    let dest = TempDir::new().unwrap();
    let mut unpacker = Unpacker::new(dest.path(), vec!["t".into()]).unwrap();
    unpacker.unpack(&tar[..]).unwrap();
    unpacker.commit(false).unwrap();
    let t = dest.path().join("t");
    let umask = probed_umask();
    for (path, want_mode, want_mtime) in [
        ("", 0o755, 1_000),
        ("ro", 0o555, 2_000),
        ("a", 0o750, 4_000),
        ("a/b", 0o700, 5_000),
        ("ro/f", 0o644, 3_000),
        ("ro/g", 0o600, 6_000),
    ] {
        let p = t.join(path);
        assert_eq!(mode(&p), want_mode & !umask, "mode of t/{path}");
        assert_eq!(mtime(&p), want_mtime, "mtime of t/{path}");
    }
    assert!(t.join("a/b/c/i").is_file());
    set_mode(&t.join("ro"), 0o755);
}

#[test]
fn check_finds_what_was_recorded_and_nothing_else() {
    let dest = TempDir::new().unwrap();
    let staging = dest.path().join("s");
    let (tar, _) = three_entries();
    let mut unpacker =
        Unpacker::resumable(dest.path(), staging.clone(), vec!["tree".into()], None).unwrap();
    let mut seen = Vec::new();
    unpacker
        .unpack_from(&tar[..], 0, |c: &Checkpoint| {
            seen.push(c.clone());
            Ok::<(), ArchiveError>(())
        })
        .unwrap();
    let parts = |name: &str| name.split('/').map(str::to_owned).collect::<Vec<_>>();
    for c in &seen {
        unpacker.check(&parts(&c.name), &c.entry).unwrap();
    }
    let a = &seen[1];
    fs::write(staging.join("tree/a"), b"firsT").unwrap();
    let err = unpacker.check(&parts(&a.name), &a.entry).unwrap_err();
    assert!(err.to_string().ends_with("its bytes differ"), "{err}");
    fs::remove_file(staging.join("tree/a")).unwrap();
    symlink(dest.path().join("elsewhere"), staging.join("tree/a")).unwrap();
    let err = unpacker.check(&parts(&a.name), &a.entry).unwrap_err();
    assert!(err.to_string().ends_with("its type differs"), "{err}");
    // A symlink in place of a parent directory is never followed.
    fs::rename(staging.join("tree"), staging.join("real")).unwrap();
    symlink("real", staging.join("tree")).unwrap();
    let err = unpacker.check(&parts(&seen[2].name), &seen[2].entry).unwrap_err();
    assert!(err.to_string().contains("not a real directory"), "{err}");
}

#[test]
fn a_resumed_unpacker_needs_a_real_staging_directory() {
    let dest = TempDir::new().unwrap();
    let staging = dest.path().join("s");
    symlink(dest.path(), &staging).unwrap();
    let resume = |staging: &Path| {
        Unpacker::resumable(dest.path(), staging.to_owned(), vec!["t".into()], Some(vec![]))
    };
    let untrusted = |r: Result<Unpacker, ArchiveError>, why: &str| {
        let err = r.unwrap_err();
        assert!(matches!(err, ArchiveError::UntrustedStaging { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(shown.contains(&staging.display().to_string()), "names the path: {shown}");
        assert!(shown.contains(why), "{shown}");
        assert!(!shown.contains("--force"), "the flag is the binary's word: {shown}");
    };
    untrusted(resume(&staging), "symbolic link");
    let r = Unpacker::resumable(dest.path(), staging.clone(), vec!["t".into()], None);
    assert!(matches!(r, Err(ArchiveError::Staging { .. })), "a fresh one is created anew");

    fs::remove_file(&staging).unwrap();
    fs::create_dir(&staging).unwrap();
    set_mode(&staging, 0o755);
    untrusted(resume(&staging), "mode");
    set_mode(&staging, 0o700);
    assert!(resume(&staging).is_ok(), "a 0700 directory of ours is resumed");
    if rustix::process::geteuid().is_root() {
        let nobody = rustix::process::Uid::from_raw(65534);
        rustix::fs::chown(&staging, Some(nobody), None).unwrap();
        untrusted(resume(&staging), "owned by another user");
    } else {
        #[allow(clippy::print_stderr)] // say the case was skipped, not passed
        {
            eprintln!("not root: the other-owner case is skipped");
        }
    }
}
