//! Test data and checks on what arrived: random bytes and files, a sample directory tree
//! with everything a directory transfer must keep, and comparisons that report the
//! first difference instead of megabytes of bytes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use rand::RngCore;

/// 1 MiB, the default chunk size.
pub const MIB: usize = 1 << 20;

/// `len` random bytes.
#[must_use]
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    rand::thread_rng().fill_bytes(&mut data);
    data
}

/// Writes `len` random bytes to `path` and returns them.
///
/// # Panics
///
/// If the file cannot be written.
pub fn write_random_file(path: &Path, len: usize) -> Vec<u8> {
    let data = random_bytes(len);
    fs::write(path, &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    data
}

/// Reads a whole file, panicking with its path if that fails.
#[must_use]
pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts two byte strings are equal, reporting lengths and the first differing offset
/// rather than megabytes of bytes.
///
/// # Panics
///
/// If they differ.
pub fn assert_bytes_eq(what: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    let first = expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    panic!(
        "{what}: {} bytes expected, {} received, first difference at offset {first}",
        expected.len(),
        actual.len()
    );
}

/// Sets a path's permission bits.
///
/// # Panics
///
/// If that fails.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Makes `parent/name`, a tree with what a directory transfer must keep, and returns its
/// path:
///
/// ```text
/// name/                    0755
/// ├── bin/                 0755
/// │   └── run.sh           0755
/// ├── secret.txt           0600
/// ├── empty/               0755  (empty)
/// ├── private/             0700
/// │   └── key              0600
/// ├── sub/                 0755
/// │   ├── zero             0644  (0 bytes)
/// │   ├── note.txt         0644
/// │   ├── up -> ../secret.txt
/// │   └── deep/            0755
/// │       └── data.bin     0644  (1.5 MiB random: crosses chunk boundaries)
/// └── link -> sub/deep/data.bin
/// ```
///
/// # Panics
///
/// If any of it cannot be made.
pub fn make_sample_tree(parent: &Path, name: &str) -> PathBuf {
    let root = parent.join(name);
    let mkdir = |rel: &str| {
        let dir = root.join(rel);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    };
    let file = |rel: &str, data: &[u8], mode: u32| {
        let path = root.join(rel);
        fs::write(&path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        chmod(&path, mode);
    };
    let link = |target: &str, rel: &str| {
        let path = root.join(rel);
        symlink(target, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    };
    for dir in ["bin", "empty", "private", "sub/deep"] {
        mkdir(dir);
    }
    file("bin/run.sh", b"#!/bin/sh\necho hello\n", 0o755);
    file("secret.txt", &random_bytes(1000), 0o600);
    file("private/key", &random_bytes(32), 0o600);
    file("sub/zero", b"", 0o644);
    file("sub/note.txt", "a note, with UTF-8: é ü ß\n".as_bytes(), 0o644);
    file("sub/deep/data.bin", &random_bytes(MIB + MIB / 2), 0o644);
    link("../secret.txt", "sub/up");
    link("sub/deep/data.bin", "link");
    // Directory modes last: the umask decided them at creation.
    for (dir, mode) in [
        ("bin", 0o755),
        ("empty", 0o755),
        ("private", 0o700),
        ("sub/deep", 0o755),
        ("sub", 0o755),
        ("", 0o755),
    ] {
        chmod(&root.join(dir), mode);
    }
    root
}

/// What the tree comparison looks at for one path.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    File { mode: u32, bytes: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: PathBuf },
    Other { kind: String },
}

impl Node {
    fn describe(&self) -> String {
        match self {
            Node::File { mode, bytes } => format!("file {mode:04o}, {} bytes", bytes.len()),
            Node::Dir { mode } => format!("directory {mode:04o}"),
            Node::Symlink { target } => format!("symlink -> {}", target.display()),
            Node::Other { kind } => kind.clone(),
        }
    }
}

/// Every path under `root` ("." for the root itself), not following symlinks.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        let path = root.join(rel);
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kind = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        let node = if kind.is_symlink() {
            Node::Symlink {
                target: fs::read_link(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            }
        } else if kind.is_file() {
            Node::File { mode, bytes: read(&path) }
        } else if kind.is_dir() {
            let entries = fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for entry in entries {
                let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                walk(root, &rel.join(entry.file_name()), out);
            }
            Node::Dir { mode }
        } else {
            Node::Other { kind: format!("{kind:?}") }
        };
        out.insert(rel.to_owned(), node);
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new("."), &mut out);
    out
}

/// The differences between two trees, one line each: missing or extra paths (an empty
/// directory counts), file types, file bytes, permission bits of files and directories,
/// and symlink targets (never followed). Empty when identical.
#[must_use]
pub fn tree_diff(expected: &Path, actual: &Path) -> Vec<String> {
    let (want, got) = (snapshot(expected), snapshot(actual));
    let mut diffs = Vec::new();
    for (rel, w) in &want {
        match (w, got.get(rel)) {
            (_, None) => diffs.push(format!("{}: missing ({})", rel.display(), w.describe())),
            (_, Some(g)) if g == w => {}
            (Node::File { mode: wm, bytes: wb }, Some(Node::File { mode: gm, bytes: gb })) => {
                let mut what = Vec::new();
                if gm != wm {
                    what.push(format!("mode {gm:04o}, expected {wm:04o}"));
                }
                if gb != wb {
                    what.push(format!(
                        "contents differ ({} bytes, expected {})",
                        gb.len(),
                        wb.len()
                    ));
                }
                diffs.push(format!("{}: {}", rel.display(), what.join("; ")));
            }
            (_, Some(g)) => diffs.push(format!(
                "{}: {}, expected {}",
                rel.display(),
                g.describe(),
                w.describe()
            )),
        }
    }
    for (rel, g) in &got {
        if !want.contains_key(rel) {
            diffs.push(format!("{}: unexpected ({})", rel.display(), g.describe()));
        }
    }
    diffs
}

/// Asserts that `actual` is a faithful copy of `expected` (see [`tree_diff`]).
///
/// # Panics
///
/// With every difference, if there are any.
pub fn assert_trees_eq(expected: &Path, actual: &Path) {
    let diffs = tree_diff(expected, actual);
    assert!(
        diffs.is_empty(),
        "{} differs from {}:\n  {}",
        actual.display(),
        expected.display(),
        diffs.join("\n  ")
    );
}

/// The names in a directory, sorted.
///
/// # Panics
///
/// If it cannot be listed.
#[must_use]
pub fn list_dir(dir: &Path) -> Vec<String> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// How many bytes of `path` hold data: its length, but no more than the blocks it
/// occupies, so a file preallocated sparse with `set_len` does not count as written;
/// 0 while it does not exist.
#[must_use]
pub fn data_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len().min(m.blocks() * 512))
}

/// Writes a tree of `files` random files of `each` bytes under `parent/name`, spread over
/// a few subdirectories, with a mix of file and directory modes; returns its root.
///
/// # Panics
///
/// If it cannot be written.
pub fn write_random_tree(parent: &Path, name: &str, files: usize, each: usize) -> PathBuf {
    let root = parent.join(name);
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 4));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(format!("f{i:03}"));
        write_random_file(&path, each);
        chmod(&path, if i % 3 == 0 { 0o755 } else { 0o640 });
    }
    for (i, dir) in (0..files.min(4)).map(|i| (i, root.join(format!("d{i}")))) {
        chmod(&dir, if i % 2 == 0 { 0o750 } else { 0o755 });
    }
    root
}

/// The bytes of every regular file under `dir`, recursively (0 if it does not exist).
#[must_use]
pub fn file_bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .map(|e| e.expect("read a directory entry"))
        .map(|e| match e.file_type().expect("file type") {
            t if t.is_dir() => file_bytes_under(&e.path()),
            t if t.is_file() => e.metadata().expect("stat").len(),
            _ => 0,
        })
        .sum()
}
