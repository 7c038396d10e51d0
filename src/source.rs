//! Where the sender's bytes come from: stdin, one file, or a tar of paths, cut into
//! fixed-size chunks on a dedicated thread.
//!
//! Invariants: the reader thread hands over full chunks (only the last may be short,
//! and an empty source yields no chunk at all) through a bounded channel, so it never
//! reads more than two chunks ahead of the network. Nothing is read before the session
//! is accepted, and the source is read once, front to back: there is no pre-pass.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::archive::{self, ArchiveError};
use crate::message::{Kind, Offer};
use crate::pool::{Buf, Pool};
use crate::term;

/// Chunks that may wait between the reader thread and the pipeline.
const AHEAD: usize = 2;

/// Errors reading what is to be sent.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The paths cannot be sent as given.
    #[error("{0}")]
    Usage(String),
    /// A path cannot be read.
    #[error("{}", term::sanitize(&path.display().to_string()))]
    Path {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading the source failed part way.
    #[error("cannot read its source")]
    Read(#[source] io::Error),
    /// Packing a directory failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// What the sender was asked to send, checked and (for a file) opened before the code
/// is shown, so that an unreadable source fails at once.
pub(crate) enum Source {
    /// A reader of unknown length (standard input).
    Reader(Box<dyn Read + Send>),
    /// One regular file, open.
    File {
        /// Its path.
        path: PathBuf,
        /// The open file.
        file: File,
    },
    /// Files and directories, packed as tar.
    Archive(Vec<PathBuf>),
}

impl Source {
    /// Checks the caller's source: every path exists, a single regular file opens.
    ///
    /// # Errors
    /// No path, a missing or unreadable path.
    pub(crate) fn new(source: crate::options::Source) -> Result<Source, SourceError> {
        let paths = match source {
            crate::options::Source::Reader(r) => return Ok(Source::Reader(r)),
            crate::options::Source::Paths(p) => p,
        };
        let path_err = |path: &Path| {
            let path = path.to_owned();
            move |source| SourceError::Path { path, source }
        };
        if paths.is_empty() {
            return Err(SourceError::Usage("nothing to send".into()));
        }
        for p in &paths {
            std::fs::symlink_metadata(p).map_err(path_err(p))?;
        }
        if let [one] = paths.as_slice() {
            let meta = std::fs::metadata(one).map_err(path_err(one))?;
            if meta.is_file() {
                let file = File::open(one).map_err(path_err(one))?;
                return Ok(Source::File { path: one.clone(), file });
            }
        }
        Ok(Source::Archive(paths))
    }

    /// The offer for this source.
    ///
    /// # Errors
    /// Unreadable metadata, or names that cannot be sent.
    pub(crate) fn offer(&self, chunk_size: u32) -> Result<Offer, SourceError> {
        Ok(match self {
            Source::Reader(_) => Offer {
                kind: Kind::Stream,
                name: "stdin".into(),
                size: None,
                entries: Vec::new(),
                chunk_size,
                files: None,
                kinds: Vec::new(),
            },
            Source::File { path, file } => {
                let meta = file
                    .metadata()
                    .map_err(|source| SourceError::Path { path: path.clone(), source })?;
                Offer {
                    kind: Kind::File,
                    name: file_name(path)?,
                    size: Some(meta.len()),
                    entries: Vec::new(),
                    chunk_size,
                    files: None,
                    kinds: Vec::new(),
                }
            }
            Source::Archive(paths) => {
                let entries = archive::top_level_names(paths)?;
                // The receiver refuses an offer past these bounds before decoding it:
                // say so here, before a code is shown.
                if entries.len() > crate::message::MAX_ENTRIES {
                    return Err(SourceError::Usage(format!(
                        "{} paths are more than one offer can name ({}): send the \
                         directory that holds them",
                        entries.len(),
                        crate::message::MAX_ENTRIES
                    )));
                }
                if let Some(bad) = entries.iter().find(|e| archive::plain_name(e).is_none()) {
                    return Err(SourceError::Usage(format!(
                        "{}: a name with a backslash cannot be sent",
                        term::sanitize(bad)
                    )));
                }
                let (files, bytes) = archive::measure(paths);
                let kinds = archive::top_level_kinds(paths);
                let name = match entries.as_slice() {
                    [one] => one.clone(),
                    many => format!("{} items", many.len()),
                };
                Offer {
                    kind: Kind::Archive,
                    name,
                    size: Some(bytes),
                    entries,
                    chunk_size,
                    files: Some(files),
                    kinds,
                }
            }
        })
    }

    /// Starts the reader thread; chunks (or the error that ended reading) arrive on the
    /// returned channel, which closes after the last chunk. Chunks are read into
    /// buffers from `pool`.
    pub(crate) fn spawn(self, chunk_size: usize, pool: Pool) -> mpsc::Receiver<io::Result<Buf>> {
        let (tx, rx) = mpsc::channel(AHEAD);
        match self {
            Source::Reader(r) => {
                std::thread::spawn(move || read_chunks(r, chunk_size, &pool, &tx));
            }
            Source::File { file, .. } => {
                std::thread::spawn(move || read_chunks(file, chunk_size, &pool, &tx));
            }
            Source::Archive(paths) => {
                std::thread::spawn(move || {
                    let buf = pool.take_empty();
                    let mut w = ChunkWriter { buf, chunk_size, pool, tx };
                    let packed = archive::pack(&paths, &mut w)
                        .map_err(|e| io::Error::other(e.to_string()))
                        .and_then(|w| w.flush_last());
                    if let Err(e) = packed {
                        let _ = w.tx.blocking_send(Err(e));
                    }
                });
            }
        }
        rx
    }
}

fn file_name(p: &Path) -> Result<String, SourceError> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_owned).ok_or_else(|| {
        SourceError::Usage(format!(
            "{}: cannot send a file without a UTF-8 name",
            term::sanitize(&p.display().to_string())
        ))
    })
}

fn read_chunks(
    mut r: impl Read,
    chunk_size: usize,
    pool: &Pool,
    tx: &mpsc::Sender<io::Result<Buf>>,
) {
    loop {
        let mut buf = pool.take_empty();
        let filled = match read_chunk(&mut r, chunk_size, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if filled == 0 {
            return;
        }
        // A closed channel means the transfer ended; stop reading.
        if tx.blocking_send(Ok(buf)).is_err() || filled < chunk_size {
            return;
        }
    }
}

/// Appends up to `chunk_size` bytes from `r` to `buf`, into its spare capacity (nothing
/// is zeroed first), and returns how many: fewer only at the end of `r`. `read_to_end`
/// retries `Interrupted` and stops only at the limit or the end, so chunks are cut at
/// fixed offsets whatever sizes a pipe or a file hands out.
///
/// # Errors
/// The reader's errors.
pub fn read_chunk(r: &mut impl Read, chunk_size: usize, buf: &mut Buf) -> io::Result<usize> {
    r.take(chunk_size as u64).read_to_end(buf.vec_mut())
}

/// Reads until `buf` is full or the reader is at its end; returns how much was read.
/// Chunks are cut at fixed offsets only if every read fills them, whatever sizes a pipe
/// or a file hands out.
///
/// # Errors
/// The reader's errors, except `Interrupted`, which is retried.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Cuts what tar writes into chunks.
struct ChunkWriter {
    buf: Buf,
    chunk_size: usize,
    pool: Pool,
    tx: mpsc::Sender<io::Result<Buf>>,
}

impl ChunkWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, self.pool.take_empty());
        self.tx
            .blocking_send(Ok(full))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "transfer ended"))
    }

    fn flush_last(&mut self) -> io::Result<()> {
        if self.buf.is_empty() { Ok(()) } else { self.send_buf() }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.chunk_size - self.buf.len());
        self.buf.vec_mut().extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk_size {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(mut rx: mpsc::Receiver<io::Result<Buf>>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = rx.blocking_recv() {
            out.push(c.expect("chunk").to_vec());
        }
        out
    }

    #[test]
    fn files_are_cut_into_full_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [0usize, 1, 999, 1000, 1001, 5000] {
            let p = dir.path().join(format!("f{len}"));
            std::fs::write(&p, vec![7u8; len]).expect("write");
            let src = Source::new(crate::options::Source::Paths(vec![p])).expect("source");
            let chunks = collect(src.spawn(1000, Pool::new(1000, 2)));
            assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), len);
            assert_eq!(chunks.len(), len.div_ceil(1000));
            assert!(chunks.iter().rev().skip(1).all(|c| c.len() == 1000));
        }
    }

    #[test]
    fn classification() {
        use crate::options::Source as Given;
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.txt");
        std::fs::write(&f, b"x").expect("write");
        let paths = |p: &[PathBuf]| Source::new(Given::Paths(p.to_vec()));
        assert!(matches!(Source::new(Given::Reader(Box::new(io::empty()))), Ok(Source::Reader(_))));
        assert!(matches!(paths(std::slice::from_ref(&f)), Ok(Source::File { .. })));
        assert!(matches!(paths(&[dir.path().into()]), Ok(Source::Archive(_))));
        assert!(matches!(paths(&[f.clone(), f.clone()]), Ok(Source::Archive(_))));
        assert!(matches!(paths(&[]), Err(SourceError::Usage(_))));
        assert!(matches!(paths(&[dir.path().join("missing")]), Err(SourceError::Path { .. })));
        let offer = paths(std::slice::from_ref(&f)).expect("file").offer(1 << 20).expect("offer");
        assert_eq!((offer.kind, offer.name.as_str(), offer.size), (Kind::File, "a.txt", Some(1)));
    }
}
