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

use crate::archive;
use crate::error::Error;
use crate::message::{Kind, Offer};

/// Chunks that may wait between the reader thread and the pipeline.
const AHEAD: usize = 2;

/// What the sender was asked to send.
#[derive(Debug, Clone)]
pub enum Source {
    /// Standard input.
    Stdin,
    /// One regular file.
    File(PathBuf),
    /// Files and directories, packed as tar.
    Archive(Vec<PathBuf>),
}

impl Source {
    /// Classifies the command line's paths, checking that they exist.
    ///
    /// # Errors
    /// A missing or unreadable path, or `-` mixed with paths.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Source, Error> {
        let stdin = |p: &PathBuf| p.as_os_str() == "-";
        if paths.is_empty() || (paths.len() == 1 && stdin(&paths[0])) {
            return Ok(Source::Stdin);
        }
        if paths.iter().any(stdin) {
            return Err(Error::Usage("`-` (stdin) cannot be sent together with paths".into()));
        }
        for p in paths {
            std::fs::symlink_metadata(p)
                .map_err(|source| Error::Path { path: p.clone(), source })?;
        }
        if paths.len() == 1 {
            let meta = std::fs::metadata(&paths[0])
                .map_err(|source| Error::Path { path: paths[0].clone(), source })?;
            if meta.is_file() {
                return Ok(Source::File(paths[0].clone()));
            }
        }
        Ok(Source::Archive(paths.to_vec()))
    }

    /// The offer for this source.
    ///
    /// # Errors
    /// Unreadable metadata, or names that cannot be sent.
    pub fn offer(&self, chunk_size: u32) -> Result<Offer, Error> {
        Ok(match self {
            Source::Stdin => Offer {
                kind: Kind::Stream,
                name: "stdin".into(),
                size: None,
                entries: Vec::new(),
                chunk_size,
            },
            Source::File(p) => {
                let meta = std::fs::metadata(p)
                    .map_err(|source| Error::Path { path: p.clone(), source })?;
                Offer {
                    kind: Kind::File,
                    name: file_name(p)?,
                    size: Some(meta.len()),
                    entries: Vec::new(),
                    chunk_size,
                }
            }
            Source::Archive(paths) => {
                let entries = archive::top_level_names(paths)?;
                let name = match entries.as_slice() {
                    [one] => one.clone(),
                    many => format!("{} items", many.len()),
                };
                Offer { kind: Kind::Archive, name, size: None, entries, chunk_size }
            }
        })
    }

    /// Starts the reader thread; chunks (or the error that ended reading) arrive on the
    /// returned channel, which closes after the last chunk.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn spawn(self, chunk_size: usize) -> Result<mpsc::Receiver<io::Result<Vec<u8>>>, Error> {
        let (tx, rx) = mpsc::channel(AHEAD);
        match self {
            Source::Stdin => {
                std::thread::spawn(move || read_chunks(io::stdin().lock(), chunk_size, &tx));
            }
            Source::File(p) => {
                let f = File::open(&p).map_err(|source| Error::Path { path: p.clone(), source })?;
                std::thread::spawn(move || read_chunks(f, chunk_size, &tx));
            }
            Source::Archive(paths) => {
                std::thread::spawn(move || {
                    let mut w = ChunkWriter { buf: Vec::with_capacity(chunk_size), chunk_size, tx };
                    let packed = archive::pack(&paths, &mut w)
                        .map_err(|e| io::Error::other(e.to_string()))
                        .and_then(|w| w.flush_last());
                    if let Err(e) = packed {
                        let _ = w.tx.blocking_send(Err(e));
                    }
                });
            }
        }
        Ok(rx)
    }
}

fn file_name(p: &Path) -> Result<String, Error> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_owned).ok_or_else(|| {
        Error::Usage(format!("{}: cannot send a file without a UTF-8 name", p.display()))
    })
}

fn read_chunks(mut r: impl Read, chunk_size: usize, tx: &mpsc::Sender<io::Result<Vec<u8>>>) {
    loop {
        let mut buf = vec![0u8; chunk_size];
        let filled = match read_full(&mut r, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        // A closed channel means the transfer ended; stop reading.
        if tx.blocking_send(Ok(buf)).is_err() || filled < chunk_size {
            return;
        }
    }
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
    buf: Vec<u8>,
    chunk_size: usize,
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
}

impl ChunkWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk_size));
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
        self.buf.extend_from_slice(&data[..n]);
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

    fn collect(mut rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = rx.blocking_recv() {
            out.push(c.expect("chunk"));
        }
        out
    }

    #[test]
    fn files_are_cut_into_full_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [0usize, 1, 999, 1000, 1001, 5000] {
            let p = dir.path().join(format!("f{len}"));
            std::fs::write(&p, vec![7u8; len]).expect("write");
            let chunks = collect(Source::File(p).spawn(1000).expect("spawn"));
            assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), len);
            assert_eq!(chunks.len(), len.div_ceil(1000));
            assert!(chunks.iter().rev().skip(1).all(|c| c.len() == 1000));
        }
    }

    #[test]
    fn classification() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.txt");
        std::fs::write(&f, b"x").expect("write");
        assert!(matches!(Source::from_paths(&[]), Ok(Source::Stdin)));
        assert!(matches!(Source::from_paths(&["-".into()]), Ok(Source::Stdin)));
        assert!(matches!(Source::from_paths(std::slice::from_ref(&f)), Ok(Source::File(_))));
        assert!(matches!(Source::from_paths(&[dir.path().into()]), Ok(Source::Archive(_))));
        assert!(matches!(Source::from_paths(&[f.clone(), f.clone()]), Ok(Source::Archive(_))));
        assert!(matches!(Source::from_paths(&[f.clone(), "-".into()]), Err(Error::Usage(_))));
        assert!(matches!(
            Source::from_paths(&[dir.path().join("missing")]),
            Err(Error::Path { .. })
        ));
        let offer = Source::File(f).offer(1 << 20).expect("offer");
        assert_eq!((offer.kind, offer.name.as_str(), offer.size), (Kind::File, "a.txt", Some(1)));
    }
}
