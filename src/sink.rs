//! Where the receiver's verified bytes go: stdout, a file through `NAME.pcp-part`, or a
//! staged tar extraction; each runs on a dedicated writer thread.
//!
//! Invariants:
//! - Only verified chunks reach a sink (the pipeline checks them).
//! - A file appears under its final name only after [`Sink::finish`], i.e. after the
//!   whole stream verified; until then it is `NAME.pcp-part`.
//! - An archive is extracted into a staging directory inside the target and moved into
//!   place only by [`Sink::finish`].
//! - A sink dropped or aborted without `finish` removes what it wrote, except a `-o`
//!   part file, which is kept for a later resume.
//! - Nothing is overwritten without `force`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use std::io::Seek;

use crate::archive::{ArchiveError, Unpacker};
use crate::message::Offer;
use crate::resume::{Journal, Prefix, ResumeError};

/// Chunks that may wait for the writer thread.
const QUEUE: usize = 4;

/// Suffix of a file being received.
pub const PART_SUFFIX: &str = ".pcp-part";

/// Errors writing what was received.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing to stdout failed (a closed pipe included).
    #[error("cannot write to standard output")]
    Stdout(#[source] io::Error),
    /// A file operation failed.
    #[error("{}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The target exists and `--force` was not given.
    #[error("{} already exists", crate::term::sanitize(&.0.display().to_string()))]
    Exists(PathBuf),
    /// Extraction failed or was refused.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The resume manifest could not be written.
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// The writer thread is gone (it failed earlier; its error comes from `finish`).
    #[error("the output writer stopped")]
    Stopped,
}

impl SinkError {
    /// True when stdout's reader went away.
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, SinkError::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Where to put the bytes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Standard output, as they come.
    Stdout,
    /// A file: written to `path.pcp-part`, renamed to `path` when verified.
    File {
        /// The final name.
        path: PathBuf,
        /// Keep the part file on failure (the user chose the name with `-o`).
        keep_part: bool,
    },
    /// Extract a tar stream under `dir`, accepting only these top-level names.
    Extract {
        /// Target directory.
        dir: PathBuf,
        /// Names the sender announced.
        entries: Vec<String>,
    },
}

impl Target {
    /// What already exists where this target would write.
    #[must_use]
    pub fn conflicts(&self) -> Vec<PathBuf> {
        match self {
            Target::Stdout => Vec::new(),
            // The part file counts too: it may be an earlier run's kept data.
            Target::File { path, .. } => [path.clone(), part_path(path)]
                .into_iter()
                .filter(|p| p.symlink_metadata().is_ok())
                .collect(),
            Target::Extract { dir, entries } => Unpacker::conflicts(dir, entries),
        }
    }
}

enum Msg {
    Data(Vec<u8>, [u8; 32]),
    Commit,
}

/// What a finished sink produced.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Final paths (empty for stdout).
    pub paths: Vec<PathBuf>,
}

/// A running writer thread.
#[derive(Debug)]
pub struct Sink {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<Result<Written, SinkError>>>,
}

impl Sink {
    /// Starts the writer for `target`.
    ///
    /// # Errors
    /// The part file or staging directory cannot be created.
    ///
    /// With `journal`, a file target keeps a resume manifest beside its part file (see
    /// [`crate::resume`]) and continues after the given verified prefix.
    pub fn start(
        target: Target,
        force: bool,
        journal: Option<(&Offer, &Prefix)>,
    ) -> Result<Sink, SinkError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = match target {
            Target::Stdout => std::thread::spawn(move || write_stdout(rx)),
            Target::File { path, keep_part } => {
                let part = part_path(&path);
                let file = match &journal {
                    // Resuming: the part file holds `prefix.bytes` verified bytes; cut
                    // anything after them and append.
                    Some((_, prefix)) if prefix.chunks() > 0 => {
                        let file = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&part)
                            .map_err(|source| SinkError::File { path: part.clone(), source })?;
                        file.set_len(prefix.bytes)
                            .and_then(|()| (&file).seek(io::SeekFrom::End(0)))
                            .map_err(|source| SinkError::File { path: part.clone(), source })?;
                        file
                    }
                    _ => {
                        // create_new: never follow a symlink planted at the part name,
                        // never truncate a part file that is someone's data.
                        if force {
                            let _ = std::fs::remove_file(&part);
                        }
                        std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&part)
                            .map_err(|source| match source.kind() {
                                io::ErrorKind::AlreadyExists => SinkError::Exists(part.clone()),
                                _ => SinkError::File { path: part.clone(), source },
                            })?
                    }
                };
                let journal = match journal {
                    Some((offer, prefix)) => Some(Journal::create(&part, offer, prefix)?),
                    None => None,
                };
                std::thread::spawn(move || {
                    write_file(rx, file, journal, &part, &path, keep_part, force)
                })
            }
            Target::Extract { dir, entries } => {
                let unpacker = Unpacker::new(&dir, entries)?;
                std::thread::spawn(move || extract(rx, unpacker, force))
            }
        };
        Ok(Sink { tx: Some(tx), thread: Some(thread) })
    }

    /// Hands a verified chunk, with its hash, to the writer.
    ///
    /// # Errors
    /// The writer failed; [`Sink::finish`] tells why.
    pub async fn write(&mut self, data: Vec<u8>, hash: [u8; 32]) -> Result<(), SinkError> {
        let tx = self.tx.as_ref().ok_or(SinkError::Stopped)?;
        if tx.send(Msg::Data(data, hash)).await.is_err() {
            return Err(self.join_error().await);
        }
        Ok(())
    }

    /// Commits: flushes, renames the part file or moves the extraction into place.
    /// From here until the process exits, [`committing`] is true: an interrupt then
    /// waits for the commit rather than leave a half-moved extraction.
    ///
    /// # Errors
    /// Whatever the writer met.
    pub async fn finish(mut self) -> Result<Written, SinkError> {
        COMMITTING.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(tx) = self.tx.take() {
            // A closed channel means the writer already ended with an error, which
            // joining reports.
            let _ = tx.send(Msg::Commit).await;
        }
        let thread = self.thread.take().ok_or(SinkError::Stopped)?;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|_| SinkError::Stopped)?
            .map_err(|_| SinkError::Stopped)?
    }

    /// The error that stopped the writer.
    async fn join_error(&mut self) -> SinkError {
        self.tx = None;
        let Some(thread) = self.thread.take() else { return SinkError::Stopped };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(Err(e))) => e,
            _ => SinkError::Stopped,
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Closing the channel without a commit makes the writer clean up; wait for it
        // so that an interrupted run leaves nothing behind when the process exits.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

static COMMITTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True once a sink has started to commit its output.
#[must_use]
pub fn committing() -> bool {
    COMMITTING.load(std::sync::atomic::Ordering::SeqCst)
}

/// `path` with [`PART_SUFFIX`] appended.
#[must_use]
pub fn part_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(PART_SUFFIX);
    PathBuf::from(s)
}

fn write_stdout(mut rx: mpsc::Receiver<Msg>) -> Result<Written, SinkError> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(d, _) => out.write_all(&d).map_err(SinkError::Stdout)?,
            Msg::Commit => {
                out.flush().map_err(SinkError::Stdout)?;
                return Ok(Written::default());
            }
        }
    }
    out.flush().map_err(SinkError::Stdout)?;
    Err(SinkError::Stopped)
}

fn write_file(
    mut rx: mpsc::Receiver<Msg>,
    mut file: File,
    mut journal: Option<Journal>,
    part: &Path,
    path: &Path,
    keep_part: bool,
    force: bool,
) -> Result<Written, SinkError> {
    let file_err = |source| SinkError::File { path: part.to_owned(), source };
    let result = (|| {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Data(d, hash) => {
                    // Unbuffered on purpose: the chunk's bytes reach the file before its
                    // manifest record, so a record never claims missing data.
                    file.write_all(&d).map_err(file_err)?;
                    if let Some(j) = journal.as_mut() {
                        j.append(&hash)?;
                    }
                }
                Msg::Commit => {
                    file.sync_all().map_err(file_err)?;
                    if !force && path.symlink_metadata().is_ok() {
                        return Err(SinkError::Exists(path.to_owned()));
                    }
                    std::fs::rename(part, path)
                        .map_err(|source| SinkError::File { path: path.to_owned(), source })?;
                    if let Some(j) = journal.take() {
                        j.remove();
                    }
                    return Ok(Written { paths: vec![path.to_owned()] });
                }
            }
        }
        Err(SinkError::Stopped)
    })();
    if result.is_err() && !keep_part {
        let _ = std::fs::remove_file(part);
    }
    result
}

/// Feeds the channel's chunks to tar as one byte stream. EOF comes with `Commit`; a
/// channel closed without it is an error, so an aborted transfer never extracts a
/// truncated archive as if it were whole.
struct ChannelReader {
    rx: mpsc::Receiver<Msg>,
    current: Vec<u8>,
    pos: usize,
    committed: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.committed {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Msg::Data(d, _)) => {
                    self.current = d;
                    self.pos = 0;
                }
                Some(Msg::Commit) => self.committed = true,
                None => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "transfer aborted"));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn extract(
    rx: mpsc::Receiver<Msg>,
    mut unpacker: Unpacker,
    force: bool,
) -> Result<Written, SinkError> {
    let mut reader = ChannelReader { rx, current: Vec::new(), pos: 0, committed: false };
    unpacker.unpack(&mut reader)?;
    // The archive may end before the stream does (tar padding): wait for the commit so
    // that nothing is moved into place before the whole stream verified.
    io::copy(&mut reader, &mut io::sink())
        .map_err(|source| SinkError::File { path: unpacker.staging().to_owned(), source })?;
    let paths = unpacker.commit(force)?;
    Ok(Written { paths })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_appears_only_on_finish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.bin");
        let mut sink =
            Sink::start(Target::File { path: path.clone(), keep_part: false }, false, None)
                .expect("start");
        sink.write(b"hello ".to_vec(), [0; 32]).await.expect("write");
        sink.write(b"world".to_vec(), [0; 32]).await.expect("write");
        assert!(!path.exists(), "no file under the final name before finish");
        sink.finish().await.expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), b"hello world");
        assert!(!part_path(&path).exists());
    }

    #[tokio::test]
    async fn dropped_sink_cleans_up_or_keeps_the_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a");
        let mut sink =
            Sink::start(Target::File { path: path.clone(), keep_part: false }, false, None)
                .expect("start");
        sink.write(vec![1; 10], [0; 32]).await.expect("write");
        drop(sink);
        assert!(!path.exists() && !part_path(&path).exists());

        let mut sink =
            Sink::start(Target::File { path: path.clone(), keep_part: true }, false, None)
                .expect("start");
        sink.write(vec![1; 10], [0; 32]).await.expect("write");
        drop(sink);
        assert!(!path.exists());
        assert_eq!(std::fs::read(part_path(&path)).expect("part kept").len(), 10);
    }

    #[tokio::test]
    async fn existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a");
        std::fs::write(&path, b"precious").expect("write");
        let t = Target::File { path: path.clone(), keep_part: false };
        assert_eq!(t.conflicts(), vec![path.clone()]);
        std::fs::write(part_path(&path), b"an earlier run's part").expect("write");
        assert_eq!(t.conflicts(), vec![path.clone(), part_path(&path)]);
        assert!(matches!(Sink::start(t.clone(), false, None), Err(SinkError::Exists(_))));
        assert_eq!(std::fs::read(part_path(&path)).expect("kept"), b"an earlier run's part");
        std::fs::remove_file(part_path(&path)).expect("rm");
        let mut sink = Sink::start(t.clone(), false, None).expect("start");
        sink.write(b"new".to_vec(), [0; 32]).await.expect("write");
        assert!(matches!(sink.finish().await, Err(SinkError::Exists(_))));
        assert_eq!(std::fs::read(&path).expect("read"), b"precious");

        let mut sink = Sink::start(t, true, None).expect("start");
        sink.write(b"new".to_vec(), [0; 32]).await.expect("write");
        sink.finish().await.expect("forced");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }
}
