//! Where the sender's bytes come from: stdin, one file, or a tar of paths, cut into
//! fixed-size chunks on a dedicated thread.
//!
//! Invariants: the reader thread hands over full chunks (only the last may be short,
//! and an empty source yields no chunk at all) through a bounded channel, so it never
//! reads more than two chunks ahead of the network. Nothing is read before the session
//! is accepted, and the source is read once, front to back: there is no pre-pass. The
//! one exception is a reader (stdin): its first [`TEXT_PEEK`] + 1 bytes are read ahead
//! on a thread of their own from the start, so that a short text piped in (`echo hi |
//! pcp send`) is offered as text (a receiver at a terminal prints it). It is text only
//! if the reader ended within [`TEXT_PEEK`] bytes by the time the offer is sent, is not
//! empty and is UTF-8; otherwise it is a stream, and the bytes read ahead come first.
//!
//! The offer's size is a promise the receiver holds the sender to (issue 14, item 3).
//! It is measured by [`Source::offer`] when the offer is sent (metadata only), and a
//! source started with that size MUST hand over exactly that many bytes: the chunk that
//! would pass it is never handed over, and a source that ends short of it ends with
//! [`SourceError::Changed`] instead of its last chunk, so the sender says on its own
//! side what the receiver would refuse.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::archive::{self, ArchiveError};
use crate::message::{Kind, Offer};

/// Measures a source's offer again, cheaply, when a handshake sends it
/// ([`Source::remeasure`]); `None` if its metadata cannot be read then.
pub(crate) type Remeasure = Arc<dyn Fn() -> Option<Offer> + Send + Sync>;
use crate::pool::{Buf, Pool};
use crate::term;

/// Chunks that may wait between the reader thread and the pipeline.
pub(crate) const AHEAD: usize = 2;

/// The longest stdin that is offered as text without `--text`: about a screenful.
pub const TEXT_PEEK: usize = 4096;

/// Errors reading what is to be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// What is sent changed after the offer was measured: its bytes would pass the
    /// size the receiver accepted, or end short of it.
    #[error("{} changed while sending", term::sanitize(&path.display().to_string()))]
    Changed {
        /// The file, or the path given to send that holds what changed.
        path: PathBuf,
    },
    /// `--many` with standard input or text: this receiver kept the buffer shared
    /// with the others full, taking nothing, for the whole bound, and was dropped so
    /// that they go on.
    #[error(
        "this receiver kept the {mib} MiB buffer it shares with the other receivers full \
         and took nothing for {secs} s; it was dropped so that they go on"
    )]
    Lagged {
        /// The shared buffer, in MiB.
        mib: u64,
        /// The bound, in seconds.
        secs: u64,
    },
}

/// What the sender was asked to send, checked and (for a file) opened before the code
/// is shown, so that an unreadable source fails at once.
pub(crate) enum Source {
    /// A reader of unknown length (standard input), its first bytes read ahead.
    Reader(Stdin),
    /// Text given as such (`--text`).
    Text(Vec<u8>),
    /// One regular file, open.
    File {
        /// Its path.
        path: PathBuf,
        /// The open file.
        file: File,
    },
    /// Files and directories, packed as tar.
    Archive {
        /// The paths given to send.
        paths: Vec<PathBuf>,
        /// The tar length of each path alone, end marker not included, as last
        /// measured: to tell which one changed.
        measured: Vec<u64>,
    },
}

impl Source {
    /// Checks the caller's source: every path exists, a single regular file opens, and
    /// the names can be sent. Nothing is measured yet: see [`Source::offer`].
    ///
    /// # Errors
    /// No path, a missing or unreadable path, names that cannot be sent.
    pub(crate) fn new(source: crate::options::Source) -> Result<Source, SourceError> {
        let paths = match source {
            crate::options::Source::Reader(r) => return Ok(Source::Reader(Stdin::new(r))),
            crate::options::Source::Text(t) => return Ok(Source::Text(t.into_bytes())),
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
                let source = Source::File { path: one.clone(), file };
                source.check()?;
                return Ok(source);
            }
        }
        let source = Source::Archive { paths, measured: Vec::new() };
        source.check()?;
        Ok(source)
    }

    /// Whether [`Source::offer`] can be measured before a receiver comes and measured
    /// again when one does at the cost of a look at metadata ([`Source::remeasure`]):
    /// text, a file, and standard input once its first bytes are in (whether it is
    /// short text is decided). A tree is walked only when a receiver is there, and a
    /// stdin still being peeked at may yet turn out to be text.
    pub(crate) fn offer_is_settled(&mut self) -> bool {
        match self {
            Source::Text(_) | Source::File { .. } => true,
            Source::Reader(stdin) => stdin.poll().is_some(),
            Source::Archive { .. } => false,
        }
    }

    /// Given `offer`, just measured from this settled source ([`Source::offer_is_settled`]):
    /// how to measure it again, as it is when a handshake sends it. A file's size is its
    /// open file's then (it may grow while the code is shown: issue 14, item 3); text
    /// and a stdin stream stay as they were. `None` for any other source.
    pub(crate) fn remeasure(&mut self, offer: &Offer) -> Option<Remeasure> {
        let offer = offer.clone();
        let settled = self.offer_is_settled();
        match self {
            Source::Text(_) => Some(Arc::new(move || Some(offer.clone()))),
            Source::Reader(_) if settled => Some(Arc::new(move || Some(offer.clone()))),
            Source::File { file, .. } => {
                let file = file.try_clone().ok()?;
                Some(Arc::new(move || {
                    let size = file.metadata().ok()?.len();
                    Some(Offer { size: Some(size), ..offer.clone() })
                }))
            }
            Source::Reader(_) | Source::Archive { .. } => None,
        }
    }

    /// What is sent, for [`crate::Event::Sending`]: cheap, before the code is shown.
    pub(crate) fn sending(&self) -> crate::Event {
        use crate::event::OfferKind;
        let (kind, name, items) = match self {
            Source::Reader(_) => (OfferKind::Stream, "stdin".to_owned(), 1),
            Source::Text(_) => (OfferKind::Text, "text".to_owned(), 1),
            Source::File { path, .. } => (OfferKind::File, file_name(path).unwrap_or_default(), 1),
            Source::Archive { paths, .. } => {
                let names = archive::top_level_names(paths).unwrap_or_default();
                let name = match names.as_slice() {
                    [one] => one.clone(),
                    many => format!("{} items", many.len()),
                };
                (OfferKind::Folder, name, paths.len())
            }
        };
        crate::Event::Sending { kind, name, items }
    }

    /// Checks what can be checked before a code is shown: names the offer cannot
    /// carry. Cheap (no walk of a tree).
    ///
    /// # Errors
    /// Names that cannot be sent, too many paths.
    fn check(&self) -> Result<Vec<String>, SourceError> {
        match self {
            Source::Reader(_) | Source::Text(_) => Ok(Vec::new()),
            Source::File { path, .. } => Ok(vec![file_name(path)?]),
            Source::Archive { paths, .. } => {
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
                Ok(entries)
            }
        }
    }

    /// A file's permissions and modification time, as they are now, for the receiver
    /// to give the file it writes (issue 15, item 10); `None` for anything else.
    pub(crate) fn file_meta(&self) -> Option<crate::message::FileMeta> {
        match self {
            Source::File { file, .. } => {
                file.metadata().ok().map(|m| crate::message::FileMeta::of(&m))
            }
            _ => None,
        }
    }

    /// The offer for this source as it is now: a file's size, or a walk of the tree
    /// (metadata only, no file is read). The sender calls it when it sends the offer,
    /// so that what is offered is what is read next; the size is then the bound its
    /// chunks are held to (see [`Source::spawn`]).
    ///
    /// # Errors
    /// Unreadable metadata, or names that cannot be sent.
    pub(crate) fn offer(&mut self, chunk_size: u32) -> Result<Offer, SourceError> {
        let checked = self.check()?;
        // A reader that turned out short text is offered (and read) as text.
        if let Source::Reader(stdin) = self
            && let Some(text) = stdin.text()
        {
            *self = Source::Text(text);
        }
        Ok(match self {
            Source::Text(text) => Offer {
                kind: Kind::Text,
                name: "text".into(),
                size: Some(text.len() as u64),
                entries: Vec::new(),
                chunk_size,
                files: None,
                kinds: Vec::new(),
            },
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
                // The open file's own size: it is what the reader thread reads.
                let meta = file
                    .metadata()
                    .map_err(|source| SourceError::Path { path: path.clone(), source })?;
                Offer {
                    kind: Kind::File,
                    name: checked.into_iter().next().expect("check names the file"),
                    size: Some(meta.len()),
                    entries: Vec::new(),
                    chunk_size,
                    files: None,
                    kinds: Vec::new(),
                }
            }
            Source::Archive { paths, measured } => {
                let entries = checked;
                // Each path alone, to tell later which one changed; the end marker once.
                let end = archive::measure(&[]).1;
                let each: Vec<(u64, u64)> =
                    paths.iter().map(|p| archive::measure(std::slice::from_ref(p))).collect();
                *measured = each.iter().map(|(_, bytes)| bytes - end).collect();
                let files = each.iter().map(|(files, _)| files).sum();
                let bytes = measured.iter().sum::<u64>() + end;
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
                    kinds: archive::top_level_kinds(paths),
                }
            }
        })
    }

    /// Starts the reader thread; chunks (or the error that ended reading) arrive on the
    /// returned channel, which closes after the last chunk. Chunks are read into
    /// buffers from `pool`.
    ///
    /// `offered`: the size in the offer this source was sent under. A file or tar that
    /// would pass it, or ends short of it, ends with [`SourceError::Changed`] instead of
    /// the chunk that would hold the difference.
    pub(crate) fn spawn(self, chunk_size: usize, pool: Pool, offered: Option<u64>) -> Chunks {
        let (tx, rx) = mpsc::channel(AHEAD);
        match self {
            Source::Reader(r) => {
                let bound = offered.map(|size| (size, PathBuf::from("standard input")));
                std::thread::spawn(move || read_chunks(r.reader(), chunk_size, &pool, &tx, bound));
            }
            Source::Text(text) => {
                let bound = offered.map(|size| (size, PathBuf::from("the text")));
                std::thread::spawn(move || {
                    read_chunks(io::Cursor::new(text), chunk_size, &pool, &tx, bound);
                });
            }
            Source::File { file, path } => {
                let bound = offered.map(|size| (size, path));
                std::thread::spawn(move || read_chunks(file, chunk_size, &pool, &tx, bound));
            }
            Source::Archive { paths, measured } => {
                std::thread::spawn(move || {
                    let buf = pool.take_empty();
                    let limit = offered.unwrap_or(u64::MAX);
                    let mut w =
                        ChunkWriter { buf, chunk_size, pool, tx, limit, total: 0, overran: false };
                    let packed = archive::pack(&paths, &mut w).map(|_| ());
                    let result = match packed {
                        // Our own refusal, surfacing as the tar's write error.
                        Err(_) if w.overran => Err(changed(&paths, &measured)),
                        Err(e) => Err(SourceError::Archive(e)),
                        Ok(()) if offered.is_some_and(|size| w.total != size) => {
                            Err(changed(&paths, &measured))
                        }
                        Ok(()) => w.flush_last().map_err(SourceError::Read),
                    };
                    if let Err(e) = result {
                        let _ = w.tx.blocking_send(Err(e));
                    }
                });
            }
        }
        rx
    }
}

/// Standard input, its first [`TEXT_PEEK`] + 1 bytes read on a thread of their own
/// from the start (see the module docs).
pub(crate) struct Stdin {
    state: Peek,
}

enum Peek {
    /// The thread is still reading.
    Pending(std::sync::mpsc::Receiver<Peeked>),
    /// What it read, and the reader to go on with.
    Ready(Peeked),
}

struct Peeked {
    head: Vec<u8>,
    /// The reader ended within the head.
    ended: bool,
    /// Why reading the head stopped early, handed over after the head.
    error: Option<io::Error>,
    rest: Box<dyn Read + Send>,
}

impl Stdin {
    fn new(mut r: Box<dyn Read + Send>) -> Stdin {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut head = vec![0; TEXT_PEEK + 1];
            let (n, error) = match read_full(&mut r, &mut head) {
                Ok(n) => (n, None),
                Err(e) => (0, Some(e)),
            };
            head.truncate(n);
            let ended = error.is_none() && n <= TEXT_PEEK;
            // The receiving end is gone only when the send was dropped: nothing to do.
            let _ = tx.send(Peeked { head, ended, error, rest: r });
        });
        Stdin { state: Peek::Pending(rx) }
    }

    /// Waits for the peek to be over.
    #[cfg(test)]
    fn settle(&mut self) {
        if let Peek::Pending(rx) = &self.state {
            let p = rx.recv().expect("the peek thread reports");
            self.state = Peek::Ready(p);
        }
    }

    /// Whether the peek is over (without waiting for it).
    fn poll(&mut self) -> Option<&mut Peeked> {
        if let Peek::Pending(rx) = &self.state
            && let Ok(p) = rx.try_recv()
        {
            self.state = Peek::Ready(p);
        }
        match &mut self.state {
            Peek::Ready(p) => Some(p),
            Peek::Pending(_) => None,
        }
    }

    /// The whole input, if it already ended and is short, non-empty UTF-8 text.
    fn text(&mut self) -> Option<Vec<u8>> {
        let p = self.poll()?;
        (p.ended && !p.head.is_empty() && std::str::from_utf8(&p.head).is_ok())
            .then(|| std::mem::take(&mut p.head))
    }

    /// The input from its first byte: what was read ahead, then the rest (waiting for
    /// the peek if it is still reading: the caller is the reader thread).
    fn reader(self) -> Box<dyn Read + Send> {
        let p = match self.state {
            Peek::Ready(p) => p,
            Peek::Pending(rx) => match rx.recv() {
                Ok(p) => p,
                Err(_) => {
                    let e = io::Error::other("reading ahead failed");
                    return Box::new(Failed(Some(e)));
                }
            },
        };
        let head = io::Cursor::new(p.head);
        match p.error {
            Some(e) => Box::new(head.chain(Failed(Some(e)))),
            None => Box::new(head.chain(p.rest)),
        }
    }
}

/// A reader that fails with the error it holds, then ends.
struct Failed(Option<io::Error>);

impl Read for Failed {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        self.0.take().map_or(Ok(0), Err)
    }
}

/// What a source's reader thread hands over: chunks, or the error that ended reading.
pub(crate) type Chunks = mpsc::Receiver<Result<Buf, SourceError>>;

/// The path to blame when a tar's length is not what was offered: the first path given
/// whose own tar length differs now from when the offer was measured, else the first.
fn changed(paths: &[PathBuf], measured: &[u64]) -> SourceError {
    let end = archive::measure(&[]).1;
    let now = |p: &PathBuf| archive::measure(std::slice::from_ref(p)).1 - end;
    let path = paths
        .iter()
        .zip(measured)
        .find(|(p, then)| now(p) != **then)
        .or_else(|| paths.iter().zip(measured).next())
        .map_or_else(PathBuf::new, |(p, _)| p.clone());
    SourceError::Changed { path }
}

fn file_name(p: &Path) -> Result<String, SourceError> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_owned).ok_or_else(|| {
        SourceError::Usage(format!(
            "{}: cannot send a file without a UTF-8 name",
            term::sanitize(&p.display().to_string())
        ))
    })
}

/// Reads `r` in chunks onto `tx`. `bound`: the size offered and the path to name if
/// `r` passes it or ends short of it; the chunk that shows it is not handed over.
fn read_chunks(
    mut r: impl Read,
    chunk_size: usize,
    pool: &Pool,
    tx: &mpsc::Sender<Result<Buf, SourceError>>,
    bound: Option<(u64, PathBuf)>,
) {
    let mut total = 0u64;
    loop {
        let mut buf = pool.take_empty();
        let filled = match read_chunk(&mut r, chunk_size, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(SourceError::Read(e)));
                return;
            }
        };
        total += filled as u64;
        let at_end = filled < chunk_size;
        if let Some((size, path)) = &bound
            && (total > *size || (at_end && total < *size))
        {
            let _ = tx.blocking_send(Err(SourceError::Changed { path: path.clone() }));
            return;
        }
        if filled == 0 {
            return;
        }
        // A closed channel means the transfer ended; stop reading.
        if tx.blocking_send(Ok(buf)).is_err() || at_end {
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

/// Cuts what tar writes into chunks, and refuses a write past `limit` (the offered
/// size): what passes it never reaches a chunk.
struct ChunkWriter {
    buf: Buf,
    chunk_size: usize,
    pool: Pool,
    tx: mpsc::Sender<Result<Buf, SourceError>>,
    limit: u64,
    /// Bytes taken so far, at most `limit`.
    total: u64,
    /// A write was refused: the tar would have passed `limit`.
    overran: bool,
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
        let room = self.limit - self.total;
        if !data.is_empty() && room == 0 {
            self.overran = true;
            return Err(io::Error::other("the archive is longer than offered"));
        }
        let n = data
            .len()
            .min(self.chunk_size - self.buf.len())
            .min(room.try_into().unwrap_or(usize::MAX));
        self.total += n as u64;
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

    /// The chunks a source hands over, and the error that ended it, if one did.
    fn drain(mut rx: Chunks) -> (Vec<Vec<u8>>, Option<SourceError>) {
        let mut out = Vec::new();
        while let Some(c) = rx.blocking_recv() {
            match c {
                Ok(c) => out.push(c.to_vec()),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    fn collect(rx: Chunks) -> Vec<Vec<u8>> {
        match drain(rx) {
            (chunks, None) => chunks,
            (_, Some(e)) => panic!("the source failed: {e}"),
        }
    }

    fn source(paths: &[PathBuf]) -> Source {
        Source::new(crate::options::Source::Paths(paths.to_vec())).expect("source")
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("open");
        f.write_all(bytes).expect("append");
    }

    #[test]
    fn files_are_cut_into_full_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [0usize, 1, 999, 1000, 1001, 5000] {
            let p = dir.path().join(format!("f{len}"));
            std::fs::write(&p, vec![7u8; len]).expect("write");
            let mut src = source(&[p]);
            let size = src.offer(1000).expect("offer").size;
            assert_eq!(size, Some(len as u64));
            let chunks = collect(src.spawn(1000, Pool::new(1000, 2), size));
            assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), len);
            assert_eq!(chunks.len(), len.div_ceil(1000));
            assert!(chunks.iter().rev().skip(1).all(|c| c.len() == 1000));
        }
    }

    /// Issue 14, item 3: the offer is measured when it is sent, so a file that grew
    /// before then (after the code was shown) is offered at its new size.
    #[test]
    fn the_offer_is_measured_when_asked_not_when_the_source_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 1500]).expect("write");
        let mut src = source(std::slice::from_ref(&p));
        append(&p, &[2u8; 700]);
        let size = src.offer(1000).expect("offer").size;
        assert_eq!(size, Some(2200));
        let chunks = collect(src.spawn(1000, Pool::new(1000, 2), size));
        assert_eq!(chunks.concat().len(), 2200);
    }

    /// Issue 16 with issue 14, item 3: the offer a handshake sends early is a file's as
    /// it is then, not when the sender started waiting; text stays as it was, and a
    /// tree is not measured before a receiver comes.
    #[test]
    fn an_early_offer_is_measured_again_when_it_is_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("growing.log");
        std::fs::write(&p, vec![7u8; 1000]).expect("write");
        let mut src = source(std::slice::from_ref(&p));
        assert!(src.offer_is_settled());
        let offer = src.offer(1 << 16).expect("offer");
        let measure = src.remeasure(&offer).expect("a file is measured again cheaply");
        assert_eq!(measure().and_then(|o| o.size), Some(1000));
        append(&p, &[1u8; 24]);
        let again = measure().expect("measured");
        assert_eq!(again.size, Some(1024));
        assert_eq!(again.name, offer.name);

        let mut text = Source::new(crate::options::Source::Text("hi".into())).expect("text");
        let offer = text.offer(1 << 16).expect("offer");
        let measure = text.remeasure(&offer).expect("text");
        assert_eq!(measure(), Some(offer));

        std::fs::create_dir(dir.path().join("tree")).expect("mkdir");
        let mut tree = source(&[dir.path().join("tree")]);
        assert!(!tree.offer_is_settled(), "a tree is walked only when a receiver is there");
    }

    /// Issue 14, item 3: a file that grows or shrinks after its offer was measured ends
    /// with "changed while sending", and the chunk that would pass the offer is never
    /// handed over.
    #[test]
    fn a_file_that_changes_size_after_its_offer_is_changed_while_sending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        for (len, change) in [(2500usize, 10i64), (2500, 600), (2000, 1), (2500, -1), (2500, -2500)]
        {
            std::fs::write(&p, vec![1u8; len]).expect("write");
            let mut src = source(std::slice::from_ref(&p));
            let size = src.offer(1000).expect("offer").size;
            if change > 0 {
                append(&p, &vec![2u8; change as usize]);
            } else {
                let f = std::fs::OpenOptions::new().write(true).open(&p).expect("open");
                f.set_len((len as i64 + change) as u64).expect("truncate");
            }
            let (chunks, e) = drain(src.spawn(1000, Pool::new(1000, 2), size));
            let what = format!("{len} bytes, then {change:+}");
            match e {
                Some(e @ SourceError::Changed { .. }) => {
                    assert_eq!(e.to_string(), format!("{} changed while sending", p.display()));
                }
                other => panic!("{what}: {other:?}"),
            }
            let sent = chunks.concat();
            assert!(sent.len() <= len, "{what}: {} bytes handed over", sent.len());
            assert!(sent.iter().all(|b| *b == 1), "{what}: a changed byte was handed over");
        }
    }

    /// Issue 14, item 3: a file that grows while it is being read (here, after its
    /// first chunk was handed over) ends with "changed while sending".
    #[test]
    fn a_file_that_grows_while_it_is_read_is_changed_while_sending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 10_000]).expect("write");
        let mut src = source(std::slice::from_ref(&p));
        let size = src.offer(1000).expect("offer").size;
        let mut rx = src.spawn(1000, Pool::new(1000, 2), size);
        // The reader stays at most a few chunks ahead: it has not reached the end yet.
        assert!(matches!(rx.blocking_recv(), Some(Ok(_))));
        append(&p, b"more");
        let (chunks, e) = drain(rx);
        assert!(matches!(e, Some(SourceError::Changed { .. })), "{e:?}");
        // Everything offered, nothing of what came after.
        assert_eq!(chunks.concat(), vec![1u8; 9000]);
    }

    /// Issue 14, item 3: a folder's tar is held to the offer as a file is; the path to
    /// blame is the path given to send that changed.
    #[test]
    fn a_folder_that_changes_after_its_offer_is_changed_while_sending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).expect("mkdir");
            std::fs::write(d.join("f"), vec![1u8; 3000]).expect("write");
        }
        // Unchanged: exactly the offer, and a whole tar.
        let mut src = source(&[a.clone(), b.clone()]);
        let offer = src.offer(1024).expect("offer");
        let chunks = collect(src.spawn(1024, Pool::new(1024, 2), offer.size));
        assert_eq!(Some(chunks.concat().len() as u64), offer.size);
        assert_eq!(offer.files, Some(4));
        // Grown past its last tar block, or by an entry, or shrunk. (Growth within
        // the padding of its last block keeps the tar's length: that tar, consistent
        // with itself, is what the receiver accepted.)
        type Change = fn(&Path);
        let changes: [(&str, Change); 3] = [
            ("grown", |d| append(&d.join("f"), &[2u8; 600])),
            ("new entry", |d| std::fs::write(d.join("g"), b"").expect("write")),
            ("shrunk", |d| std::fs::write(d.join("f"), b"short").expect("write")),
        ];
        for (what, change) in changes {
            let mut src = source(&[a.clone(), b.clone()]);
            let offered = src.offer(1024).expect("offer").size.expect("a size");
            change(&b);
            let (chunks, e) = drain(src.spawn(1024, Pool::new(1024, 2), Some(offered)));
            match e {
                Some(SourceError::Changed { path }) => assert_eq!(path, b, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
            let sent = chunks.concat().len() as u64;
            assert!(sent <= offered, "{what}: {sent} of {offered} bytes handed over");
            let _ = std::fs::remove_file(b.join("g"));
            std::fs::write(b.join("f"), vec![1u8; 3000]).expect("write");
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
        assert!(matches!(paths(&[dir.path().into()]), Ok(Source::Archive { .. })));
        // Two paths with one name: refused before a code is shown.
        assert!(matches!(
            paths(&[f.clone(), f.clone()]),
            Err(SourceError::Archive(ArchiveError::DuplicateName { .. }))
        ));
        assert!(matches!(paths(&[]), Err(SourceError::Usage(_))));
        assert!(matches!(paths(&[dir.path().join("missing")]), Err(SourceError::Path { .. })));
        let offer = paths(std::slice::from_ref(&f)).expect("file").offer(1 << 20).expect("offer");
        assert_eq!((offer.kind, offer.name.as_str(), offer.size), (Kind::File, "a.txt", Some(1)));
    }

    /// A reader that hands out what the test sends it, and blocks until then.
    struct Fed(std::sync::mpsc::Receiver<Vec<u8>>, io::Cursor<Vec<u8>>);

    impl Read for Fed {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            loop {
                let n = self.1.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                match self.0.recv() {
                    Ok(more) => self.1 = io::Cursor::new(more),
                    Err(_) => return Ok(0),
                }
            }
        }
    }

    fn stdin(r: impl Read + Send + 'static) -> Source {
        Source::new(crate::options::Source::Reader(Box::new(r))).expect("source")
    }

    /// What a reader source offers once its peek is over, and the bytes it hands over.
    fn settled(bytes: &[u8]) -> (Kind, Option<u64>, Vec<u8>) {
        let mut s = stdin(io::Cursor::new(bytes.to_vec()));
        if let Source::Reader(r) = &mut s {
            r.settle();
        }
        let offer = s.offer(MIN_CHUNK).expect("offer");
        let got =
            collect(s.spawn(MIN_CHUNK as usize, Pool::new(MIN_CHUNK as usize, 2), offer.size))
                .concat();
        (offer.kind, offer.size, got)
    }

    const MIN_CHUNK: u32 = crate::pipeline::MIN_CHUNK_SIZE;

    /// Issue 15: a short UTF-8 stdin that has ended is offered as text, with its size;
    /// anything else stays a stream, its bytes whole and in order.
    #[test]
    fn a_short_text_on_stdin_is_offered_as_text() {
        let text = "héllo\n".repeat(TEXT_PEEK / 7);
        let long = "x".repeat(TEXT_PEEK + 1);
        let at_limit = "x".repeat(TEXT_PEEK);
        let mut binary = b"hi".to_vec();
        binary.push(0xff);
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for (bytes, kind) in [
            (b"hi\n".as_slice(), Kind::Text),
            (text.as_bytes(), Kind::Text),
            (at_limit.as_bytes(), Kind::Text),
            (long.as_bytes(), Kind::Stream),
            (&binary, Kind::Stream),
            (b"", Kind::Stream),
            (&big, Kind::Stream),
        ] {
            let (got_kind, size, got) = settled(bytes);
            assert_eq!(got_kind, kind, "{} bytes", bytes.len());
            let want_size = (kind == Kind::Text).then_some(bytes.len() as u64);
            assert_eq!(size, want_size, "{} bytes", bytes.len());
            assert!(got == bytes, "{} bytes handed over as {} bytes", bytes.len(), got.len());
        }
    }

    /// A stdin still open when the offer is sent is a stream, however short it turns
    /// out: the offer does not wait for it.
    #[test]
    fn an_open_stdin_is_a_stream() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(b"hi".to_vec()).expect("feed");
        let mut s = stdin(Fed(rx, io::Cursor::new(Vec::new())));
        let offer = s.offer(MIN_CHUNK).expect("offer");
        assert_eq!((offer.kind, offer.size), (Kind::Stream, None));
        let chunks = s.spawn(MIN_CHUNK as usize, Pool::new(MIN_CHUNK as usize, 2), None);
        tx.send(b" there".to_vec()).expect("feed");
        drop(tx);
        assert_eq!(collect(chunks).concat(), b"hi there");
    }

    #[test]
    fn text_is_offered_as_text() {
        let mut s = Source::new(crate::options::Source::Text("hello".into())).expect("source");
        let offer = s.offer(MIN_CHUNK).expect("offer");
        assert_eq!((offer.kind, offer.name.as_str(), offer.size), (Kind::Text, "text", Some(5)));
        assert_eq!(
            collect(s.spawn(MIN_CHUNK as usize, Pool::new(MIN_CHUNK as usize, 2), offer.size))
                .concat(),
            b"hello"
        );
    }
}
