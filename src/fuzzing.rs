//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer); built only with
//! the `fuzzing` feature, and no part of pcp's API.
//!
//! Each function takes the fuzzer's bytes, feeds them to one decoder of peer (or on-disk)
//! input, and throws the result away: an `Err` is the decoder doing its job. What the
//! fuzzer looks for is a panic, a hang, or an allocation beyond libFuzzer's limit. On top
//! of that, each function asserts properties that MUST hold for any input (a decoded
//! message re-encodes to the same message, the unpacker never leaves anything outside its
//! directory, …), so a panic here is either a bug in pcp or a wrong property: both are
//! worth a regression test.
//!
//! | function     | target   | input                                                   |
//! |--------------|----------|---------------------------------------------------------|
//! | [`frame`]    | frame    | bytes on the wire, read and opened with [`KEY`]         |
//! | [`control`]  | control  | a frame's plaintext, as a control message               |
//! | [`chunk`]    | chunk    | a selector byte, then a chunk frame's plaintext          |
//! | [`code`]     | code     | a code as typed (UTF-8)                                 |
//! | [`manifest`] | manifest | manifest length (u16 BE), the manifest, the part file   |
//! | [`unpack`]   | unpack   | a tar stream                                            |
//! | [`resume`]   | resume   | a staging tree, a journal, then a tar stream; see there |
//!
//! The seed corpus in `fuzz/corpus/<target>/` comes from the ignored test
//! `fuzzing::tests::write_seed_corpus`; see `fuzz/README.md`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use futures::executor::block_on;
use futures::io::Cursor;

use crate::archive::{ArchiveError, Unpacker};
use crate::code::{Code, MIN_WORDS};
use crate::framing::{FrameKey, FrameReader, Header, Opener};
use crate::message::{ChunkHeader, Control, Kind, Offer};
use crate::pipeline::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use crate::resume::{self, Journal, ResumeError};

mod resumed;

pub use resumed::{journal_op, resume, resume_flags, staging_kind, staging_op};

/// The frame key the targets open with. Public and fixed: the fuzzer plays a peer that
/// knows the session key (a malicious sender) or does not (anyone on the path), and the
/// seed corpus holds frames sealed with it.
pub const KEY: [u8; 32] = *b"pcp fuzzing key: public, fixed.!";

/// The frame counter [`chunk`] seals and opens its plaintext under.
const CHUNK_COUNTER: u64 = 5;

/// The top-level names [`unpack`] announces; any other entry is refused.
pub const TOP: [&str; 2] = ["d", "f"];

/// Where the targets that write files should make their directory for each input:
/// `$TMPDIR` if set, else `/dev/shm` when it exists, else the system's temporary
/// directory. A tmpfs matters: [`unpack`] ran at ~3900 inputs/s in `/dev/shm` and ~680
/// in a disk-backed `/tmp`.
#[must_use]
pub fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if std::env::var_os("TMPDIR").is_none() && shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// Frame decoding: [`Header::from_bytes`] on the first 4 bytes, then a [`FrameReader`]
/// (what a session reads with) over the whole input, opening each frame under [`KEY`]
/// and decoding what opens, until the input ends or a frame fails.
pub fn frame(data: &[u8]) {
    if let Some(first) = data.first_chunk()
        && let Ok(header) = Header::from_bytes(*first)
    {
        // The header is exactly the 4 bytes: length and flag, nothing else.
        assert_eq!(header.to_bytes(), *first, "a decoded header re-encodes to its bytes");
    }
    // No deadline: reading a slice never waits.
    let mut reader = FrameReader::new(Cursor::new(data), Opener::new(FrameKey::new(KEY)), None);
    block_on(async {
        // After a LAST frame the next read fails (AfterLast, or Truncated at the end).
        while let Ok((plaintext, _last)) = reader.next_open().await {
            let _ = Control::decode(&plaintext);
            let _ = ChunkHeader::parse(&plaintext);
        }
    });
}

/// [`Control::decode`]; what decodes MUST re-encode to a message that decodes the same.
pub fn control(data: &[u8]) {
    let Ok(msg) = Control::decode(data) else { return };
    let again = Control::decode(&msg.encode()).expect("an encoded message decodes");
    assert_eq!(again, msg, "a decoded message survives a round trip");
    let _ = (msg.name(), msg.is_last());
}

/// [`ChunkHeader::parse`] and [`open_chunk`] on a chunk frame's plaintext, sealed here
/// under [`KEY`] so that the fuzzer reaches what comes after authentication: the index
/// and length checks, zstd, and the hash check.
///
/// The first byte selects the offer's chunk size (bits 0..=2: [`MIN_CHUNK_SIZE`] shifted
/// left by them) and, with bit 7, an expected index one past the chunk's own.
///
/// [`open_chunk`]: crate::pipeline::open_chunk
pub fn chunk(data: &[u8]) {
    let Some((&select, plaintext)) = data.split_first() else { return };
    let chunk_size = MIN_CHUNK_SIZE << (select & 0x07);
    let expected = match ChunkHeader::parse(plaintext) {
        Ok((head, _)) if select & 0x80 == 0 => head.index,
        Ok((head, _)) => head.index.wrapping_add(1),
        Err(_) => 0,
    };
    let key = FrameKey::new(KEY);
    let mut frame = plaintext.to_vec();
    let Ok(header) = key.seal(CHUNK_COUNTER, false, &mut frame) else { return };
    let Ok(opened) =
        crate::pipeline::open_chunk(&key, CHUNK_COUNTER, header, frame, expected, chunk_size)
    else {
        return;
    };
    let (head, _) = ChunkHeader::parse(plaintext).expect("an opened chunk parses");
    assert_eq!(head.index, expected, "an opened chunk has the expected index");
    assert_eq!(opened.data.len(), head.raw_len as usize, "an opened chunk has its raw length");
    assert!(opened.data.len() <= chunk_size as usize, "an opened chunk fits the chunk size");
    assert_eq!(opened.hash, *blake3::hash(&opened.data).as_bytes());
    assert_eq!(opened.hash, head.hash, "an opened chunk has the announced hash");
}

/// The code parser: [`Code`]'s `FromStr` on the input, and [`Code::from_words`] on its
/// lines, which MUST agree (a newline is whitespace, so it only splits arguments). A
/// parsed code MUST survive a round trip through its `Display`.
pub fn code(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = text.parse::<Code>();
    let args: Vec<&str> = text.split('\n').collect();
    assert!(Code::from_words(&args) == parsed, "from_words and FromStr agree");
    match parsed {
        Ok(code) => {
            assert!(code.word_count() >= MIN_WORDS);
            assert!(code.channel() < 2048);
            let shown = code.to_string();
            assert!(shown.parse::<Code>().as_ref() == Ok(&code), "a code survives Display");
            assert_eq!(code.words().collect::<Vec<_>>().join("-"), shown);
            assert_eq!(code.password().split('-').count() + 1, code.word_count());
        }
        Err(e) => {
            let _ = (e.to_string(), e.hint());
        }
    }
}

/// The manifest loader: the input is a manifest length `n` (u16 big-endian), `n` bytes
/// of manifest, then the part file. Both are written into `dir` (which MUST be empty) and
/// [`resume::load`]ed with the manifest's own offer, or, when it names none (or one a
/// receiver would refuse), a file offer of the part file's size. Manifests are read and
/// written under the fixed [`resume::test_key`]: the seeds are written under it, so the
/// fuzzer starts from records whose MACs hold.
///
/// Properties: the loaded prefix is whole chunks of the part file with their true
/// hashes, and a fresh manifest written for it ([`Journal::create`]) loads the same.
pub fn manifest(data: &[u8], dir: &Path) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else { return };
    let n = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (manifest, part_data) = rest.split_at(n);
    let part = dir.join("f.pcp-part");
    fs::write(&part, part_data).expect("write the part file");
    fs::write(resume::Part::at(&part).manifest(), manifest).expect("write the manifest");

    // The receiver refuses an offer with any other chunk size before it loads.
    let theirs = resume::manifest_offer(manifest, &resume::test_key())
        .filter(|o| (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&o.chunk_size));
    let offer = theirs.clone().unwrap_or_else(|| Offer {
        kind: Kind::File,
        name: "f".into(),
        size: Some(part_data.len() as u64),
        entries: Vec::new(),
        chunk_size: MIN_CHUNK_SIZE,
        files: None,
        kinds: Vec::new(),
    });
    let prefix = match resume::load(&part, &offer, &resume::test_key()) {
        Ok(prefix) => prefix,
        Err(ResumeError::OtherTransfer(_)) if theirs.is_none() => return,
        Err(e) => panic!("loading files just written failed: {e:?}"),
    };

    let chunk = offer.chunk_size as usize;
    assert!(prefix.bytes <= part_data.len() as u64, "the prefix is inside the part file");
    let held = &part_data[..usize::try_from(prefix.bytes).expect("within the part file")];
    assert_eq!(held.chunks(chunk).count(), prefix.hashes.len(), "one hash per chunk");
    for (i, (piece, hash)) in held.chunks(chunk).zip(&prefix.hashes).enumerate() {
        assert_eq!(blake3::hash(piece).as_bytes(), hash, "chunk {i} has its true hash");
        let last = i + 1 == prefix.hashes.len();
        assert!(
            piece.len() == chunk || (last && offer.size == Some(prefix.bytes)),
            "only a file's final chunk may be short"
        );
    }

    // A chunk size no receiver accepts is refused by the loader itself, never looped on.
    let absurd = Offer { chunk_size: 0, ..offer.clone() };
    let refused = resume::load(&part, &absurd, &resume::test_key());
    assert!(matches!(refused, Err(ResumeError::ChunkSize(0))), "{refused:?}");

    let _ = Journal::create(&part, &offer, &prefix, &resume::test_key())
        .expect("write a fresh manifest");
    let again = resume::load(&part, &offer, &resume::test_key()).expect("load a fresh manifest");
    assert_eq!(again, prefix, "a fresh manifest for a prefix loads that prefix");
}

/// The tar unpacker: extracts the input with an [`Unpacker`] into `dir/dest` (announcing
/// [`TOP`]), commits if that worked, and checks that nothing was written outside
/// `dir/dest`: a canary directory beside it stays untouched, every symlink stays inside
/// its top-level entry, every hard link's other names are in the tree, no setuid, setgid
/// or sticky bit is set, and no permission bit the umask clears. `dir` MUST be empty;
/// afterwards every directory under it is owner-writable, so it can be removed.
pub fn unpack(data: &[u8], dir: &Path) {
    const CANARY: &[u8] = b"pcp never writes here";
    let dest = dir.join("dest");
    let canary = dir.join("canary");
    fs::create_dir(&dest).expect("create dest");
    fs::create_dir(&canary).expect("create the canary directory");
    fs::write(canary.join("file"), CANARY).expect("write the canary");

    let top: Vec<String> = TOP.iter().map(|&name| name.to_owned()).collect();
    let mut unpacker = Unpacker::new(&dest, top).expect("create staging in an empty directory");
    let [staging] = names_in(&dest).try_into().expect("staging is all there is in dest");
    let staging = dest.join(staging);
    let unpacked = unpacker.unpack(data);
    check_tree(&staging);
    assert_eq!(names_in(&dest), [staging.file_name().expect("a name").to_owned()]);

    if unpacked.is_ok() {
        match unpacker.commit(false) {
            Ok(placed) => {
                let want: Vec<PathBuf> = TOP.iter().map(|name| dest.join(name)).collect();
                assert_eq!(placed, want, "commit places the announced names");
                check_tree(&dest);
                let mut names = names_in(&dest);
                names.sort();
                assert_eq!(names, TOP, "after commit dest holds the announced names only");
            }
            Err(ArchiveError::Incomplete { .. }) => {
                assert!(names_in(&dest).is_empty(), "a refused commit leaves nothing");
            }
            Err(e) => panic!("commit into an empty directory failed: {e:?}"),
        }
    } else {
        drop(unpacker);
        assert!(names_in(&dest).is_empty(), "a failed unpack leaves nothing");
    }

    let mut names = names_in(dir);
    names.sort();
    assert_eq!(names, ["canary", "dest"], "nothing appears beside dest");
    assert_eq!(names_in(&canary), ["file"], "nothing appears in the canary directory");
    let meta = fs::symlink_metadata(canary.join("file")).expect("the canary");
    assert!(meta.is_file() && meta.nlink() == 1, "the canary is not linked");
    assert_eq!(fs::read(canary.join("file")).expect("the canary"), CANARY);
}

/// The names in `dir`, unsorted.
fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
    fs::read_dir(dir)
        .expect("read a directory in the fuzz tree")
        .map(|entry| entry.expect("read a directory entry").file_name())
        .collect()
}

/// Every path under `root`, without following symlinks; makes each directory
/// owner-accessible first (a committed directory may be read-only, or mode 0).
fn walk(root: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
    for name in names_in(root) {
        let path = root.join(name);
        let meta = fs::symlink_metadata(&path).expect("stat an entry in the fuzz tree");
        let (is_dir, mode) = (meta.is_dir(), meta.mode());
        out.push((path.clone(), meta));
        if is_dir {
            fs::set_permissions(&path, fs::Permissions::from_mode((mode & 0o7777) | 0o700))
                .expect("make a directory owner-accessible");
            walk(&path, out);
        }
    }
}

/// Checks the unpacker's invariants on the tree under `root` (staging, or dest after
/// commit), whose children are the top-level entries.
fn check_tree(root: &Path) {
    let mut entries = Vec::new();
    fs::set_permissions(root, fs::Permissions::from_mode(0o700)).expect("open the root");
    walk(root, &mut entries);
    let real_root = fs::canonicalize(root).expect("canonicalize the root");
    let umask = crate::fsx::umask();
    // (device, inode) -> (link count, names seen in the tree)
    let mut files: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    for (path, meta) in &entries {
        let rel: Vec<&str> = path
            .strip_prefix(root)
            .expect("walked from root")
            .iter()
            .map(|c| c.to_str().expect("the unpacker accepts UTF-8 names only"))
            .collect();
        assert!(TOP.contains(&rel[0]), "{path:?} is under an announced name");
        assert_eq!(meta.mode() & 0o7000, 0, "{path:?} has no setuid, setgid or sticky bit");
        if !meta.file_type().is_symlink() {
            let extra = meta.mode() & umask & 0o777;
            assert_eq!(extra, 0, "{path:?} has mode bits {extra:o} the umask clears");
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(path).expect("read a symlink");
            assert!(stays_inside(&rel, &target), "symlink {path:?} -> {target:?} escapes");
            if let Ok(real) = fs::canonicalize(path) {
                assert!(
                    real.starts_with(real_root.join(rel[0])),
                    "symlink {path:?} resolves outside its top-level entry, to {real:?}"
                );
            }
        } else if meta.is_file() {
            files.entry((meta.dev(), meta.ino())).or_insert((meta.nlink(), 0)).1 += 1;
        } else {
            assert!(meta.is_dir(), "{path:?} is a file, directory or symlink");
        }
    }
    for (nlink, seen) in files.values() {
        assert_eq!(nlink, seen, "every name of a hard-linked file is inside the tree");
    }
}

/// Whether symlink `link` (components from the top-level entry down to its own name)
/// pointing to `target` stays inside its top-level entry, resolving `target` lexically.
fn stays_inside(link: &[&str], target: &Path) -> bool {
    // A top-level symlink is inside no entry: it is refused whatever its target.
    let Some((_, parents)) = link.split_last().filter(|(_, parents)| !parents.is_empty()) else {
        return false;
    };
    let mut dir: Vec<&str> = parents.to_vec();
    for part in target.components() {
        match part {
            Component::Normal(name) => dir.push(name.to_str().unwrap_or("")),
            Component::CurDir => {}
            Component::ParentDir => {
                dir.pop();
                if dir.is_empty() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    !dir.is_empty()
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::resumed::tests::resume_seeds;
    use super::*;
    use crate::framing::Sealer;
    use crate::message::{CHUNK_HEADER_LEN, End, FLAG_ZSTD, Resume};
    use crate::resume::Prefix;

    /// Where the seeds go: `fuzz/corpus/<target>/<name>`.
    fn seed(target: &str, name: &str, bytes: &[u8]) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        fs::create_dir_all(&dir).expect("create the corpus directory");
        fs::write(dir.join(name), bytes).expect("write a seed");
    }

    fn offer() -> Offer {
        Offer {
            kind: Kind::Archive,
            name: "d".into(),
            size: None,
            entries: vec!["d".into(), "f".into()],
            chunk_size: MIN_CHUNK_SIZE,
            files: Some(6),
            kinds: vec![crate::message::TopKind::Folder, crate::message::TopKind::File],
        }
    }

    /// Frames sealed under [`KEY`] from counter 0, as they go on the wire.
    fn frames(messages: &[(&[u8], bool)]) -> Vec<u8> {
        let mut sealer = Sealer::new(FrameKey::new(KEY));
        let mut wire = Vec::new();
        for &(plaintext, last) in messages {
            let mut body = plaintext.to_vec();
            let header = sealer.seal_next(&mut body, last).expect("seal");
            wire.extend_from_slice(&header.to_bytes());
            wire.extend_from_slice(&body);
        }
        wire
    }

    /// A chunk frame's plaintext.
    fn chunk_plaintext(index: u64, raw: &[u8], zstd: bool) -> Vec<u8> {
        let payload = if zstd { zstd::bulk::compress(raw, 3).expect("zstd") } else { raw.to_vec() };
        let head = ChunkHeader {
            index,
            flags: if zstd { FLAG_ZSTD } else { 0 },
            raw_len: u32::try_from(raw.len()).expect("small"),
            hash: *blake3::hash(raw).as_bytes(),
        };
        let mut bytes = [0u8; CHUNK_HEADER_LEN];
        head.write(&mut bytes);
        [&bytes[..], &payload].concat()
    }

    pub(super) fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        h
    }

    /// A tar of `d/` with a file, a symlink, a hard link and a long-named file in it,
    /// and a top-level file `f`.
    fn good_tar() -> Vec<u8> {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let mut b = tar::Builder::new(Vec::new());
        let data = b"hello, fuzzer\n";
        let long = format!("d/{}", "long-name-".repeat(15));
        b.append_data(&mut tar_header(Directory, 0o755, 0), "d", io::empty()).expect("dir");
        b.append_data(&mut tar_header(Regular, 0o644, 14), "d/file", &data[..]).expect("file");
        b.append_link(&mut tar_header(Symlink, 0o777, 0), "d/link", "file").expect("symlink");
        b.append_link(&mut tar_header(Link, 0o644, 0), "d/hard", "d/file").expect("hard link");
        b.append_data(&mut tar_header(Regular, 0o600, 14), &long, &data[..]).expect("long");
        b.append_data(&mut tar_header(Regular, 0o644, 2), "f", &b"f\n"[..]).expect("top file");
        b.into_inner().expect("finish the tar")
    }

    /// A tar whose second entry is a symlink climbing out of `d`, then a file through it.
    fn escaping_tar() -> Vec<u8> {
        use tar::EntryType::{Directory, Regular, Symlink};
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut tar_header(Directory, 0o755, 0), "d", io::empty()).expect("dir");
        b.append_link(&mut tar_header(Symlink, 0o777, 0), "d/up", "../..").expect("symlink");
        b.append_data(&mut tar_header(Regular, 0o644, 1), "d/up/x", &b"x"[..]).expect("file");
        b.into_inner().expect("finish the tar")
    }

    /// A manifest (with `records` chunk records of `part`) and the part file, in the
    /// layout of [`manifest`].
    fn manifest_input(part: &[u8], offer: &Offer, records: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.pcp-part");
        let mut journal = Journal::create(&path, offer, &Prefix::default(), &resume::test_key())
            .expect("journal");
        for piece in part.chunks(offer.chunk_size.max(1) as usize).take(records) {
            journal.append(blake3::hash(piece).as_bytes()).expect("append");
        }
        let manifest = fs::read(resume::Part::at(&path).manifest()).expect("read the manifest");
        let mut out = u16::try_from(manifest.len()).expect("small").to_be_bytes().to_vec();
        out.extend_from_slice(&manifest);
        out.extend_from_slice(part);
        out
    }

    /// Writes the seed corpus and checks that each seed gets as far as it should.
    /// Run it after changing a wire or file format:
    /// `cargo test --lib --features fuzzing -- --ignored write_seed_corpus`.
    #[test]
    #[ignore = "writes fuzz/corpus; run by hand to regenerate the seeds"]
    fn write_seed_corpus() {
        // frame: whole streams that open to the end, and a truncated one.
        let offer_msg = Control::Offer(offer()).encode();
        let end = Control::End(End { chunks: 1, bytes: 5, root: [3; 32], meta: None }).encode();
        let chunk0 = chunk_plaintext(0, b"hello", false);
        let stream = frames(&[(&offer_msg, false), (&chunk0, false), (&end, true)]);
        for (name, wire) in [
            ("offer-chunk-end", stream.clone()),
            ("done", frames(&[(&Control::Done.encode(), true)])),
            ("truncated", stream[..stream.len() - 3].to_vec()),
        ] {
            seed("frame", name, &wire);
        }
        let mut reader =
            FrameReader::new(Cursor::new(&stream[..]), Opener::new(FrameKey::new(KEY)), None);
        for want_last in [false, false, true] {
            let (_, last) = block_on(reader.next_open()).expect("a seed frame opens");
            assert_eq!(last, want_last);
        }

        // control: one message of each kind.
        let controls = [
            ("offer", Control::Offer(offer())),
            ("accept", Control::Accept),
            ("decline", Control::Decline("no thanks".into())),
            ("end", Control::End(End { chunks: 3, bytes: 3 << 16, root: [7; 32], meta: None })),
            ("error", Control::Error("disk full".into())),
            ("done", Control::Done),
            ("ack", Control::Ack(300)),
            ("resume", Control::Resume(Resume { chunks: 2, root: [1; 32] })),
            ("keepalive", Control::Keepalive),
            ("cancel", Control::Cancel),
            ("refuse", Control::Refuse("the name exists".into())),
        ];
        for (name, msg) in controls {
            seed("control", name, &msg.encode());
        }

        // chunk: selector byte, then the plaintext.
        let raw = b"hello, chunk";
        let zstd_raw = vec![b'a'; 300];
        let chunks = [
            ("raw", [&[0u8][..], &chunk_plaintext(3, raw, false)].concat()),
            ("zstd", [&[0x02][..], &chunk_plaintext(7, &zstd_raw, true)].concat()),
            ("wrong-index", [&[0x80][..], &chunk_plaintext(3, raw, false)].concat()),
        ];
        for (name, input) in &chunks {
            seed("chunk", name, input);
        }
        for (input, want) in [(&chunks[0].1, &raw[..]), (&chunks[1].1, &zstd_raw[..])] {
            let key = FrameKey::new(KEY);
            let mut frame = input[1..].to_vec();
            let header = key.seal(CHUNK_COUNTER, false, &mut frame).expect("seal");
            let (head, _) = ChunkHeader::parse(&input[1..]).expect("parse");
            let opened = crate::pipeline::open_chunk(
                &key,
                CHUNK_COUNTER,
                header,
                frame,
                head.index,
                MIN_CHUNK_SIZE << (input[0] & 7),
            )
            .expect("a seed chunk opens");
            assert_eq!(opened.data, want);
        }

        // code: valid in several spellings, a typo, too few words.
        for (name, text) in [
            ("dashes", "bubble-enemy-result-increase"),
            ("spaces", " Bubble  ENEMY result\tincrease "),
            ("lines", "zoo\nabandon-ability\nzoo"),
            ("typo", "bubbel-enemy-result"),
            ("short", "bubble-enemy"),
        ] {
            seed("code", name, text.as_bytes());
        }

        // manifest: an intact one with a record per chunk, one without records, one for
        // another transfer, one damaged, and one whose valid header names a chunk size of 0.
        let part = b"the first and only chunk of a short file";
        let file_offer = Offer {
            kind: Kind::File,
            name: "f".into(),
            size: Some(part.len() as u64),
            entries: Vec::new(),
            chunk_size: MIN_CHUNK_SIZE,
            files: None,
            kinds: Vec::new(),
        };
        let intact = manifest_input(part, &file_offer, 1);
        let mut damaged = intact.clone();
        let at = damaged.len() - part.len() - 3;
        damaged[at] ^= 0x40;
        for (name, input) in [
            ("intact", intact.clone()),
            ("no-records", manifest_input(part, &file_offer, 0)),
            ("archive", manifest_input(part, &offer(), 0)),
            ("damaged", damaged),
            ("zero-chunk", manifest_input(part, &Offer { chunk_size: 0, ..file_offer.clone() }, 0)),
        ] {
            seed("manifest", name, &input);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        manifest(&intact, dir.path());
        let loaded = resume::load(&dir.path().join("f.pcp-part"), &file_offer, &resume::test_key())
            .expect("load");
        assert_eq!(loaded.chunks(), 1, "the intact seed holds its one chunk");

        // unpack: a good tree and an escape attempt.
        let good = good_tar();
        seed("unpack", "tree", &good);
        seed("unpack", "escape", &escaping_tar());
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path();
        let mut unpacker = Unpacker::new(dest, TOP.map(str::to_owned).to_vec()).expect("new");
        unpacker.unpack(&good[..]).expect("the tree seed unpacks");
        unpacker.commit(false).expect("the tree seed commits");
        assert!(fs::symlink_metadata(dest.join("d/link")).expect("link").is_symlink());
        let mut unpacker = Unpacker::new(dest, vec!["d".into()]).expect("new");
        let refused = unpacker.unpack(&escaping_tar()[..]).expect_err("the escape is refused");
        assert!(matches!(refused, ArchiveError::Unsafe { .. }), "{refused:?}");

        // resume: a resumed journal with its staging and the whole tar, and hostile cases
        // (checked by resume_seeds_get_as_far_as_they_should).
        for (name, input, _) in resume_seeds() {
            seed("resume", name, &input.bytes());
        }
    }

    /// Every seed passes its target without tripping a property.
    #[test]
    fn seeds_pass_their_targets() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = fn(&[u8], &Path);
        let targets: [(&str, Target); 7] = [
            ("frame", |d, _| frame(d)),
            ("control", |d, _| control(d)),
            ("chunk", |d, _| chunk(d)),
            ("code", |d, _| code(d)),
            ("manifest", manifest),
            ("unpack", unpack),
            ("resume", resume),
        ];
        for (target, run) in targets {
            let dir = corpus.join(target);
            let seeds = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in seeds {
                let path = entry.expect("a corpus entry").path();
                let tmp = tempfile::tempdir().expect("tempdir");
                run(&fs::read(&path).expect("read a seed"), tmp.path());
            }
        }
    }
}
