//! Where the receiver's verified bytes go: stdout, a file through `NAME.pcp-part`, or a
//! tar extraction into a staging directory; each runs on a dedicated writer thread.
//!
//! Invariants:
//! - Only verified chunks reach a sink (the pipeline checks them).
//! - A file appears under its final name only after [`Sink::finish_with`], i.e. after the
//!   whole stream verified; until then it is `NAME.pcp-part`.
//! - An archive's tar stream is extracted as its chunks verify, through [`Unpacker`]'s
//!   checks, into the staging directory `DIR/.pcp-<id>.partial` (see `sink/extract.rs`),
//!   and moved into place by [`Sink::finish_with`]. The tar bytes are not kept: a rerun
//!   resumes from the journal's last entry extracted whole (see [`crate::resume`]).
//! - A sink aborted ([`Sink::abort`]) or dropped without `finish` keeps its part file
//!   (and manifest) for a later resume, unless told not to (`keep_part: false`). Only
//!   `abort` waits for the writer thread to have cleaned up; dropping never blocks.
//! - A staged tar stream whose extraction is refused for its content
//!   ([`ArchiveError::is_refusal`]) is removed with its manifest: a rerun would fetch the
//!   same refused stream. One whose commit failed locally (disk full, a name taken
//!   meanwhile) stays, like any part file, and the receiver says where
//!   ([`crate::Event::Kept`]).
//! - Part files are created `0600` with `create_new`, and a resumed one is reopened only
//!   if it is ours ([`crate::fsx::open_ours`]: a regular file owned by the effective uid,
//!   writable by no one else, with one link), never through a symlink.
//! - A resumed part file is opened with its write cursor at the verified prefix and is cut
//!   to it only when the first new chunk is written, or at commit: by then the sender has
//!   checked the prefix's root hash against its source. Until then the bytes after the
//!   prefix stay, so a run the sender refuses changes nothing.
//! - Nothing is overwritten without `force`.
//! - Which target an offer gets, and which announced names are safe to write, is decided
//!   here ([`Target::for_offer`]), with the one name rule of [`crate::archive`].

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use std::io::Seek;

use crate::archive::plain_name;
use crate::archive::{Announced, ArchiveError, Unpacker};

mod extract;
use crate::message::{FileMeta, Kind, Offer};
use crate::options::Destination;
use crate::pool::Buf;
use crate::resume::{Journal, JournalKey, Part, Prefix, ResumeError};
use extract::Extraction;

/// Chunks that may wait for the writer thread.
const QUEUE: usize = 4;
// What the receiver acknowledges may run ahead of its manifest by the queue and the
// chunk being written: the sender keeps that many below the last acknowledgement.
const _: () = assert!((QUEUE as u64) < crate::pipeline::ACK_LEAD);

/// Errors writing what was received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Writing to the caller's writer (standard output) failed, a closed pipe included.
    #[error("cannot write to standard output")]
    Writer(#[source] io::Error),
    /// A file operation failed.
    #[error("{}", crate::fsx::shown(.path))]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file at the part file's name is not ours to resume into (another user's,
    /// writable by others, hard-linked, not a regular file).
    #[error(transparent)]
    NotOurs(crate::fsx::OwnershipError),
    /// The target exists and `--force` was not given.
    #[error("{} already exists", crate::fsx::shown(.0))]
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
    /// A stream has no name to save it under.
    #[error("a stream has no name to save it under")]
    Unnamed,
    /// A resumed directory's staging was extracted from other bytes than the sender
    /// sends now (its source changed after the point the sender proved unchanged).
    #[error("the sender's data changed since the earlier run extracted part of it")]
    Diverged,
    /// The sender announced a name that is unsafe to write.
    #[error("the sender announced an unsafe name {:?}", crate::term::sanitize(.0))]
    UnsafeName(String),
}

impl From<crate::fsx::OwnershipError> for SinkError {
    fn from(e: crate::fsx::OwnershipError) -> SinkError {
        match e {
            crate::fsx::OwnershipError::Io { path, source } => SinkError::File { path, source },
            not_ours => SinkError::NotOurs(not_ours),
        }
    }
}

impl SinkError {
    /// True when the writer's reader went away (a closed pipe).
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, SinkError::Writer(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Where to put the bytes.
pub(crate) enum Target {
    /// The caller's writer (standard output), as they come.
    Writer(Box<dyn Write + Send>),
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
        /// What the sender announced: top-level names and kinds, and the entry count.
        announced: Announced,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Writer(_) => f.write_str("Writer"),
            Target::File { path, .. } => f.debug_tuple("File").field(path).finish(),
            Target::Extract { dir, .. } => f.debug_tuple("Extract").field(dir).finish(),
        }
    }
}

impl Target {
    /// Where an offer goes, given the caller's destination: `-o FILE` takes anything; a
    /// directory saves a file under its announced name or extracts a folder, and only
    /// plain announced names (one path component) are accepted.
    ///
    /// # Errors
    /// A stream for a directory ([`SinkError::Unnamed`]), and unsafe names.
    pub(crate) fn for_offer(dest: Destination, offer: &Offer) -> Result<Target, SinkError> {
        let dir = match dest {
            Destination::Writer(w) => return Ok(Target::Writer(w)),
            Destination::File(path) => return Ok(Target::File { path, keep_part: true }),
            Destination::Directory(dir) => dir,
        };
        match offer.kind {
            Kind::Stream | Kind::Text => Err(SinkError::Unnamed),
            Kind::File => {
                let name = plain_name(&offer.name)
                    .ok_or_else(|| SinkError::UnsafeName(offer.name.clone()))?;
                // The part file and manifest stay on failure, so a rerun resumes.
                Ok(Target::File { path: dir.join(name), keep_part: true })
            }
            Kind::Archive => {
                if offer.entries.is_empty() {
                    return Err(SinkError::UnsafeName(String::new()));
                }
                if let Some(bad) = offer.entries.iter().find(|e| plain_name(e).is_none()) {
                    return Err(SinkError::UnsafeName(bad.clone()));
                }
                Ok(Target::Extract { dir, announced: Announced::of(offer) })
            }
        }
    }

    /// What this target writes through and keeps for a resume, if anything:
    /// `NAME.pcp-part` for a file, and for an archive its staging directory,
    /// `DIR/.pcp-<id>.partial`, where `<id>` comes from the entry names, so that a rerun
    /// finds it again ([`Part`] names them).
    #[must_use]
    pub(crate) fn resume_part(&self) -> Option<Part> {
        match self {
            Target::Writer(_) => None,
            Target::File { path, .. } => Some(Part::for_file(path)),
            Target::Extract { dir, announced } => Some(Part::for_folder(dir, &announced.names)),
        }
    }

    /// What already exists where this target would write.
    #[must_use]
    pub(crate) fn conflicts(&self) -> Vec<PathBuf> {
        match self {
            Target::Writer(_) => Vec::new(),
            // The part file counts too: it may be an earlier run's kept data.
            Target::File { path, .. } => [path.clone(), Part::for_file(path).path().to_owned()]
                .into_iter()
                .filter(|p| p.symlink_metadata().is_ok())
                .collect(),
            Target::Extract { dir, announced } => Unpacker::conflicts(dir, &announced.names),
        }
    }

    /// What already exists where this target would write, other than its own part:
    /// that is what a resume continues from, never a conflict (whether it is resumed is
    /// decided after consent).
    #[must_use]
    pub(crate) fn taken(&self) -> Vec<PathBuf> {
        let part = self.resume_part();
        let mut taken = self.conflicts();
        taken.retain(|c| part.as_ref().is_none_or(|p| c != p.path()));
        taken
    }
}

enum Msg {
    /// A verified chunk (its buffer goes back to the receiver's pool once written).
    Data(Buf, [u8; 32]),
    /// Commit; a file target first gives its file these permissions and this time.
    Commit(Option<FileMeta>),
}

/// What a finished sink produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct Written {
    /// Final paths (empty for stdout).
    pub paths: Vec<PathBuf>,
}

/// A running writer thread.
#[derive(Debug)]
pub(crate) struct Sink {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<Result<Written, SinkError>>>,
    /// The part file kept if the transfer stops here.
    kept: Option<Part>,
}

impl Sink {
    /// Starts the writer for `target`.
    ///
    /// # Errors
    /// The part file or staging directory cannot be created.
    ///
    /// With `journal`, a file target keeps a resume manifest beside its part file, and an
    /// archive beside its staging directory (see [`crate::resume`]), and continues after
    /// the given verified prefix (an archive: at the entry its extraction records).
    pub(crate) fn start(
        target: Target,
        force: bool,
        journal: Option<(&Offer, &Prefix, &JournalKey)>,
    ) -> Result<Sink, SinkError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let part = target.resume_part();
        let kept = match &target {
            Target::File { keep_part: true, .. } | Target::Extract { .. } => part.clone(),
            _ => None,
        };
        let thread = match (target, part) {
            (Target::Writer(w), _) => std::thread::spawn(move || write_to(w, rx)),
            (_, None) => unreachable!("files and extractions always keep something for resume"),
            (Target::File { path, keep_part }, Some(part)) => {
                let (file, journal) = open_part(part.path(), journal, force)?;
                std::thread::spawn(move || {
                    let commit = |part: &Path| -> Result<Written, SinkError> {
                        // Without force, a name taken in the meantime is never replaced.
                        let moved = if force {
                            std::fs::rename(part, &path)
                        } else {
                            crate::fsx::rename_noreplace(part, &path)
                        };
                        moved.map_err(|source| match source.kind() {
                            io::ErrorKind::AlreadyExists => SinkError::Exists(path.clone()),
                            _ => SinkError::File { path: path.clone(), source },
                        })?;
                        Ok(Written { paths: vec![path.clone()] })
                    };
                    write_part(rx, file, journal, part.path(), keep_part, commit)
                })
            }
            (Target::Extract { dir, announced }, Some(staging)) => {
                let extraction = Extraction::open(&dir, staging, announced, journal, force)?;
                std::thread::spawn(move || extraction.run(rx))
            }
        };
        Ok(Sink { tx: Some(tx), thread: Some(thread), kept })
    }

    /// The part file that stays if the transfer stops before [`Sink::finish_with`].
    pub(crate) fn kept(&self) -> Option<&Part> {
        self.kept.as_ref()
    }

    /// Hands a verified chunk, with its hash, to the writer.
    ///
    /// # Errors
    /// The writer failed; [`Sink::finish_with`] tells why.
    pub(crate) async fn write(&mut self, data: Buf, hash: [u8; 32]) -> Result<(), SinkError> {
        let tx = self.tx.as_ref().ok_or(SinkError::Stopped)?;
        if tx.send(Msg::Data(data, hash)).await.is_err() {
            return Err(self.join_error().await);
        }
        Ok(())
    }

    /// Commits: flushes, renames the part file or moves the extraction into place.
    /// The commit runs on the writer thread to its end even if this future is dropped,
    /// so an interrupt never leaves a half-moved extraction.
    ///
    /// # Errors
    /// Whatever the writer met.
    #[cfg(test)]
    pub(crate) async fn finish(self) -> Result<Written, SinkError> {
        self.finish_with(None).await
    }

    /// Commits as `finish` does (flushes, renames or moves into place); a file target first gives the file `meta`'s permissions
    /// (under the umask) and modification time, through its handle (issue 15, item 10).
    ///
    /// # Errors
    /// Whatever the writer met.
    pub(crate) async fn finish_with(
        mut self,
        meta: Option<FileMeta>,
    ) -> Result<Written, SinkError> {
        if let Some(tx) = self.tx.take() {
            // A closed channel means the writer already ended with an error, which
            // joining reports.
            let _ = tx.send(Msg::Commit(meta)).await;
        }
        let thread = self.thread.take().ok_or(SinkError::Stopped)?;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|_| SinkError::Stopped)?
            .map_err(|_| SinkError::Stopped)?
    }

    /// Hands `chunks` (each with its blake3 hash, as the pipeline verified it) to the
    /// writer thread, then commits, or with `commit` false stops as [`Sink::abort`] does,
    /// and waits for the writer's result: [`Sink::write`] and [`Sink::finish_with`] without an
    /// async runtime, for the fuzz targets. A panic on the writer thread is resumed here.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn run_blocking(
        mut self,
        chunks: impl IntoIterator<Item = Vec<u8>>,
        commit: bool,
    ) -> Result<Written, SinkError> {
        if let Some(tx) = self.tx.take() {
            for chunk in chunks {
                let hash = *blake3::hash(&chunk).as_bytes();
                // A closed channel: the writer stopped; its error comes from the join.
                if tx.blocking_send(Msg::Data(chunk.into(), hash)).is_err() {
                    break;
                }
            }
            if commit {
                let _ = tx.blocking_send(Msg::Commit(None));
            }
        }
        let thread = self.thread.take().ok_or(SinkError::Stopped)?;
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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

    /// Stops without committing and waits (off the reactor) for the writer to clean
    /// up: the part file and manifest stay when they are kept for resume, anything else
    /// is removed.
    pub(crate) async fn abort(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Closing the channel without a commit makes the writer clean up on its own
        // thread. Never join here: this may run on the reactor. Callers that must know
        // the clean-up is done use `abort`.
        self.tx = None;
    }
}

fn write_to(
    mut out: Box<dyn Write + Send>,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<Written, SinkError> {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(d, _) => out.write_all(&d).map_err(SinkError::Writer)?,
            Msg::Commit(_) => {
                out.flush().map_err(SinkError::Writer)?;
                return Ok(Written::default());
            }
        }
    }
    out.flush().map_err(SinkError::Writer)?;
    Err(SinkError::Stopped)
}

/// Gives the part file, through its handle, the sent file's permission bits (only
/// `0o777`: never set-id bits from a peer, and under our umask, as a new file would
/// be) and its modification time. The part file is ours and 0600 until here, so the
/// name is never looked up again.
fn keep_meta(file: &File, meta: &FileMeta) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.mode & 0o777 & !crate::fsx::umask();
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    if let Some(at) = meta.modified() {
        file.set_times(std::fs::FileTimes::new().set_modified(at))?;
    }
    Ok(())
}

/// Opens a part file: positioned after a resumed prefix (nothing is cut yet: see
/// [`write_part`]), or created anew; and opens its manifest when resume state is kept.
fn open_part(
    part: &Path,
    journal: Option<(&Offer, &Prefix, &JournalKey)>,
    force: bool,
) -> Result<(File, Option<Journal>), SinkError> {
    let err = |source| SinkError::File { path: part.to_owned(), source };
    let file = match &journal {
        Some((_, prefix, _)) if prefix.chunks() > 0 => {
            // Ours, and not followed through a symlink: see crate::fsx.
            let file = crate::fsx::open_ours(part, true)?;
            if file.metadata().map_err(err)?.len() < prefix.bytes {
                return Err(err(io::Error::other("is shorter than when it was checked")));
            }
            (&file).seek(io::SeekFrom::Start(prefix.bytes)).map_err(err)?;
            file
        }
        _ => {
            // create_new: never follow a symlink planted at the part name, never
            // truncate a part file that is someone's data.
            if force {
                let _ = std::fs::remove_file(part);
            }
            crate::fsx::create_new_private(part).map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => SinkError::Exists(part.to_owned()),
                _ => SinkError::File { path: part.to_owned(), source },
            })?
        }
    };
    let journal = match journal {
        Some((offer, prefix, key)) => Some(Journal::create(part, offer, prefix, key)?),
        None => None,
    };
    Ok((file, journal))
}

/// Writes verified chunks to a part file (and their records to its manifest), then on
/// `Commit` syncs it and hands it to `commit`, which moves the result into place.
fn write_part(
    mut rx: mpsc::Receiver<Msg>,
    mut file: File,
    mut journal: Option<Journal>,
    part: &Path,
    keep_part: bool,
    commit: impl FnOnce(&Path) -> Result<Written, SinkError>,
) -> Result<Written, SinkError> {
    let file_err = |source| SinkError::File { path: part.to_owned(), source };
    // A resumed part file is cut after its prefix only once the sender has checked that
    // prefix against its source, i.e. when a new chunk arrives (or at commit): a sender
    // that finds its source changed leaves the part file as it was.
    let mut cut = false;
    let mut cut_here = |file: &mut File| -> Result<(), SinkError> {
        if !cut {
            let at = file.stream_position().map_err(file_err)?;
            file.set_len(at).map_err(file_err)?;
            cut = true;
        }
        Ok(())
    };
    let result = (|| {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Data(d, hash) => {
                    cut_here(&mut file)?;
                    // Unbuffered on purpose: the chunk's bytes reach the file before its
                    // manifest record, so a record never claims missing data.
                    file.write_all(&d).map_err(file_err)?;
                    if let Some(j) = journal.as_mut() {
                        j.append(&hash)?;
                    }
                }
                Msg::Commit(meta) => {
                    cut_here(&mut file)?;
                    if let Some(meta) = meta {
                        keep_meta(&file, &meta).map_err(file_err)?;
                    }
                    file.sync_all().map_err(file_err)?;
                    let written = commit(part)?;
                    if let Some(j) = journal.take() {
                        j.remove();
                    }
                    return Ok(written);
                }
            }
        }
        Err(SinkError::Stopped)
    })();
    // A verified stream refused for what it holds is no use to a rerun.
    let refused = matches!(&result, Err(SinkError::Archive(e)) if e.is_refusal());
    if result.is_err() && (!keep_part || refused) {
        let _ = std::fs::remove_file(part);
        if let Some(j) = journal {
            j.remove();
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::test_key;

    fn part_path(path: &Path) -> PathBuf {
        Part::for_file(path).path().to_owned()
    }

    fn manifest_path(part: &Path) -> PathBuf {
        Part::at(part).manifest()
    }

    #[tokio::test]
    async fn file_appears_only_on_finish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.bin");
        let mut sink =
            Sink::start(Target::File { path: path.clone(), keep_part: false }, false, None)
                .expect("start");
        sink.write(b"hello ".to_vec().into(), [0; 32]).await.expect("write");
        sink.write(b"world".to_vec().into(), [0; 32]).await.expect("write");
        assert!(!path.exists(), "no file under the final name before finish");
        sink.finish().await.expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), b"hello world");
        assert!(!part_path(&path).exists());
    }

    /// Issue 15, item 10: a file is committed with the sent mode (only `0o777` of it,
    /// under the umask) and mtime.
    #[tokio::test]
    async fn a_file_keeps_the_sent_mode_and_time() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.bin");
        let mut sink =
            Sink::start(Target::File { path: path.clone(), keep_part: true }, false, None)
                .expect("start");
        sink.write(b"hello".to_vec().into(), [0; 32]).await.expect("write");
        let meta = FileMeta { mode: 0o4755, mtime: 1_600_000_000, mtime_nanos: 42 };
        sink.finish_with(Some(meta)).await.expect("finish");
        let got = std::fs::metadata(&path).expect("stat");
        assert_eq!(got.permissions().mode() & 0o7777, 0o755 & !crate::fsx::umask());
        assert_eq!(got.modified().expect("mtime"), meta.modified().expect("valid"));
    }

    #[tokio::test]
    async fn dropped_sink_cleans_up_or_keeps_the_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a");
        let mut sink =
            Sink::start(Target::File { path: path.clone(), keep_part: false }, false, None)
                .expect("start");
        sink.write(vec![1; 10].into(), [0; 32]).await.expect("write");
        sink.abort().await;
        assert!(!path.exists() && !part_path(&path).exists());

        let mut sink =
            Sink::start(Target::File { path: path.clone(), keep_part: true }, false, None)
                .expect("start");
        sink.write(vec![1; 10].into(), [0; 32]).await.expect("write");
        sink.abort().await;
        assert!(!path.exists());
        assert_eq!(std::fs::read(part_path(&path)).expect("part kept").len(), 10);
    }

    #[tokio::test]
    async fn existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a");
        std::fs::write(&path, b"precious").expect("write");
        let t = || Target::File { path: path.clone(), keep_part: false };
        assert_eq!(t().conflicts(), vec![path.clone()]);
        std::fs::write(part_path(&path), b"an earlier run's part").expect("write");
        assert_eq!(t().conflicts(), vec![path.clone(), part_path(&path)]);
        assert!(matches!(Sink::start(t(), false, None), Err(SinkError::Exists(_))));
        assert_eq!(std::fs::read(part_path(&path)).expect("kept"), b"an earlier run's part");
        std::fs::remove_file(part_path(&path)).expect("rm");
        let mut sink = Sink::start(t(), false, None).expect("start");
        sink.write(b"new".to_vec().into(), [0; 32]).await.expect("write");
        assert!(matches!(sink.finish().await, Err(SinkError::Exists(_))));
        assert_eq!(std::fs::read(&path).expect("read"), b"precious");

        let mut sink = Sink::start(t(), true, None).expect("start");
        sink.write(b"new".to_vec().into(), [0; 32]).await.expect("write");
        sink.finish().await.expect("forced");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }

    fn file_offer(size: u64) -> Offer {
        Offer {
            kind: crate::message::Kind::File,
            name: "out".into(),
            size: Some(size),
            entries: vec![],
            chunk_size: 1 << 16,
            files: None,
            kinds: Vec::new(),
        }
    }

    /// The verified prefix of `data` in whole chunks of the offer's chunk size.
    fn prefix_of(data: &[u8], chunks: usize) -> Prefix {
        let hashes: Vec<[u8; 32]> =
            data.chunks(1 << 16).take(chunks).map(|c| *blake3::hash(c).as_bytes()).collect();
        Prefix { bytes: (hashes.len() << 16) as u64, hashes, extraction: None }
    }

    #[tokio::test]
    async fn a_resumed_part_is_cut_only_once_the_sender_sends_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let part = part_path(&path);
        let data: Vec<u8> = (0..3 << 16).map(|i| (i % 251) as u8).collect();
        std::fs::write(&part, &data).expect("part");
        let offer = file_offer(4 << 16);
        let prefix = prefix_of(&data, 2);
        let target = || Target::File { path: path.clone(), keep_part: true };

        // The sender has not confirmed the prefix yet (it may find its source changed):
        // nothing of the part file is lost.
        let sink =
            Sink::start(target(), false, Some((&offer, &prefix, &test_key()))).expect("start");
        assert_eq!(std::fs::metadata(&part).expect("part").len(), 3 << 16, "not cut at start");
        sink.abort().await;
        assert_eq!(std::fs::read(&part).expect("part"), data, "kept whole when refused");

        // Confirmed: the first new chunk goes right after the prefix.
        let mut sink =
            Sink::start(target(), false, Some((&offer, &prefix, &test_key()))).expect("start");
        let new = vec![9u8; 2 << 16];
        for c in new.chunks(1 << 16) {
            sink.write(c.to_vec().into(), *blake3::hash(c).as_bytes()).await.expect("write");
        }
        sink.finish().await.expect("finish");
        let mut want = data[..2 << 16].to_vec();
        want.extend_from_slice(&new);
        assert_eq!(std::fs::read(&path).expect("read"), want);
    }

    #[tokio::test]
    async fn a_resumed_part_file_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let victim = dir.path().join("victim");
        let precious = vec![3u8; 2 << 16];
        std::fs::write(&victim, &precious).expect("victim");
        std::os::unix::fs::symlink(&victim, part_path(&path)).expect("plant");
        let offer = file_offer(4 << 16);
        let prefix = prefix_of(&precious, 1);
        let target = Target::File { path: path.clone(), keep_part: true };
        assert!(Sink::start(target, false, Some((&offer, &prefix, &test_key()))).is_err());
        assert_eq!(std::fs::read(&victim).expect("victim"), precious, "the target is untouched");
    }

    /// Issue 14, item 7: a part file planted with the true first chunk, or one another
    /// user can still write or owns, or one hard-linked elsewhere, never collects the
    /// rest of the transfer, even with a prefix that names it.
    #[tokio::test]
    async fn a_resumed_part_file_that_is_not_ours_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let part = part_path(&path);
        let first = vec![3u8; 1 << 16];
        std::fs::write(&part, &first).expect("plant");
        let offer = file_offer(4 << 16);
        let prefix = prefix_of(&first, 1);
        let start = || {
            let target = Target::File { path: path.clone(), keep_part: true };
            Sink::start(target, false, Some((&offer, &prefix, &test_key())))
        };
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let e = start().expect_err("a 0666 part file");
        assert!(matches!(e, SinkError::NotOurs(_)), "{e:?}");
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o600)).expect("chmod");

        let elsewhere = dir.path().join("elsewhere");
        std::fs::hard_link(&part, &elsewhere).expect("link");
        let e = start().expect_err("a hard-linked part file");
        assert!(matches!(e, SinkError::NotOurs(_)), "{e:?}");
        std::fs::remove_file(&elsewhere).expect("rm");

        if crate::fsx::as_root("a_resumed_part_file_that_is_not_ours_is_refused") {
            std::os::unix::fs::chown(&part, Some(65534), Some(65534)).expect("chown");
            let e = start().expect_err("another user's part file");
            assert!(e.to_string().ends_with("is owned by uid 65534, not you"), "{e}");
            std::os::unix::fs::chown(&part, Some(0), Some(0)).expect("chown");
        }
        assert_eq!(std::fs::read(&part).expect("part"), first, "nothing was written to it");
        drop(start().expect("ours: resumed"));
    }

    #[tokio::test]
    async fn part_files_and_the_staged_archive_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let offer = file_offer(10);
        let target = Target::File { path: path.clone(), keep_part: true };
        let sink = Sink::start(target, false, Some((&offer, &Prefix::default(), &test_key())))
            .expect("start");
        assert_eq!(mode(&part_path(&path)), 0o600, "the part file");
        assert_eq!(mode(&manifest_path(&part_path(&path))), 0o600, "its manifest");
        drop(sink);

        let target =
            Target::Extract { dir: dir.path().to_owned(), announced: vec!["t".into()].into() };
        let staging =
            target.resume_part().expect("an archive has a staging directory").path().to_owned();
        let sink = Sink::start(target, false, Some((&offer, &Prefix::default(), &test_key())))
            .expect("start");
        assert_eq!(mode(&staging), 0o700, "the staging directory");
        assert_eq!(mode(&manifest_path(&staging)), 0o600, "its manifest");
        drop(sink);
    }

    #[test]
    fn errors_show_peer_names_without_escapes() {
        let path = PathBuf::from("dir/a\x1b[2Jb\u{202E}txt");
        let errors = [
            SinkError::File { path: path.clone(), source: io::Error::other("x") },
            SinkError::Exists(path.clone()),
            SinkError::UnsafeName("a\x1b[2J".into()),
        ];
        for e in errors {
            let shown = e.to_string();
            assert!(!shown.contains(['\x1b', '\u{202E}']), "{shown:?}");
            assert!(shown.contains("?[2J"), "{shown:?}");
        }
    }

    /// A tree whose tar stream spans several 64 KiB chunks: `tree/c`, then `tree/sub/a`
    /// (300,000 bytes, ending inside chunk 4), then `tree/sub/b`.
    fn sample_tar() -> (tempfile::TempDir, Vec<u8>) {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().expect("tempdir");
        let tree = src.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).expect("mkdir");
        std::fs::write(tree.join("c"), b"c").expect("write");
        std::fs::write(tree.join("sub/a"), vec![5u8; 300_000]).expect("write");
        let b: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(tree.join("sub/b"), b).expect("write");
        std::fs::set_permissions(tree.join("sub"), std::fs::Permissions::from_mode(0o750))
            .expect("chmod");
        let tar = crate::archive::pack(&[tree], Vec::new()).expect("pack");
        (src, tar)
    }

    fn archive_offer() -> Offer {
        Offer { name: "tree".into(), ..archive_offer_of(&["tree"]) }
    }

    async fn send_chunks(sink: &mut Sink, chunks: &[&[u8]]) {
        for c in chunks {
            sink.write(c.to_vec().into(), *blake3::hash(c).as_bytes()).await.expect("write");
        }
    }

    fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> =
            std::fs::read_dir(dir).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn an_archive_is_extracted_as_chunks_arrive_and_resumes_after_an_abort() {
        use std::os::unix::fs::PermissionsExt;
        let (src, tar) = sample_tar();
        let chunks: Vec<&[u8]> = tar.chunks(1 << 16).collect();
        let dest = tempfile::tempdir().expect("tempdir");
        let target = || Target::Extract {
            dir: dest.path().to_owned(),
            announced: vec!["tree".into()].into(),
        };
        let staging =
            target().resume_part().expect("an archive has a staging directory").path().to_owned();
        let offer = archive_offer();

        // Stopped inside `tree/sub/b`: what came whole is already in staging, nothing is
        // under the final name, and staging and the journal stay.
        let mut sink =
            Sink::start(target(), false, Some((&offer, &Prefix::default(), &test_key())))
                .expect("start");
        send_chunks(&mut sink, &chunks[..5]).await;
        sink.abort().await;
        assert!(!dest.path().join("tree").exists());
        let a = std::fs::read(staging.join("tree/sub/a")).expect("extracted before the end");
        assert_eq!(a.len(), 300_000);
        assert!(staging.join("tree/sub/b").exists(), "the entry it stopped in, partly");

        // The rerun resumes at the chunk holding `tree/sub/b`'s header.
        let prefix = crate::resume::load(&staging, &offer, &test_key()).expect("load");
        let x = prefix.extraction.clone().expect("an extraction to resume");
        assert_eq!(x.last.as_deref(), Some("tree/sub/a"));
        assert_eq!(tar[x.next as usize..][..10], *b"tree/sub/b", "a header starts there");
        assert_eq!(prefix.chunks(), x.next >> 16, "the prefix ends at the chunk holding it");
        assert!(x.chunk.is_some(), "the offset is inside that chunk");
        let mut sink =
            Sink::start(target(), false, Some((&offer, &prefix, &test_key()))).expect("start");
        send_chunks(&mut sink, &chunks[prefix.chunks() as usize..]).await;
        sink.finish().await.expect("finish");

        let got = dest.path().join("tree");
        for f in ["c", "sub/a", "sub/b"] {
            let want = std::fs::read(src.path().join("tree").join(f)).expect("source");
            assert!(std::fs::read(got.join(f)).expect("received") == want, "{f} differs");
        }
        let mode = std::fs::metadata(got.join("sub")).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o750 & !crate::fsx::umask(), "a resumed directory's mode");
        assert_eq!(listing(dest.path()), ["tree"], "staging and its journal are gone");
    }

    #[tokio::test]
    async fn a_resumed_archive_refuses_a_changed_chunk_it_extracted_from() {
        let (_src, tar) = sample_tar();
        let chunks: Vec<&[u8]> = tar.chunks(1 << 16).collect();
        let dest = tempfile::tempdir().expect("tempdir");
        let target = || Target::Extract {
            dir: dest.path().to_owned(),
            announced: vec!["tree".into()].into(),
        };
        let staging =
            target().resume_part().expect("an archive has a staging directory").path().to_owned();
        let offer = archive_offer();
        let mut sink =
            Sink::start(target(), false, Some((&offer, &Prefix::default(), &test_key())))
                .expect("start");
        send_chunks(&mut sink, &chunks[..5]).await;
        sink.abort().await;

        let prefix = crate::resume::load(&staging, &offer, &test_key()).expect("load");
        let mut changed = chunks[prefix.chunks() as usize].to_vec();
        changed[0] ^= 1;
        let mut sink =
            Sink::start(target(), false, Some((&offer, &prefix, &test_key()))).expect("start");
        send_chunks(&mut sink, &[&changed]).await;
        let err = sink.finish().await.expect_err("refused");
        assert!(matches!(err, SinkError::Diverged), "{err:?}");
        assert!(!dest.path().join("tree").exists());
    }

    #[tokio::test]
    async fn an_archive_staging_without_a_journal_is_not_taken_over() {
        let dest = tempfile::tempdir().expect("tempdir");
        let target = || Target::Extract {
            dir: dest.path().to_owned(),
            announced: vec!["tree".into()].into(),
        };
        let staging =
            target().resume_part().expect("an archive has a staging directory").path().to_owned();
        std::fs::create_dir(&staging).expect("mkdir");
        std::fs::write(staging.join("someone's"), b"x").expect("write");
        let offer = archive_offer();
        let prefix = crate::resume::load(&staging, &offer, &test_key()).expect("load");
        assert_eq!(prefix, Prefix::default(), "nothing to resume without a journal");
        let started = Sink::start(target(), false, Some((&offer, &prefix, &test_key())));
        assert!(matches!(started, Err(SinkError::Exists(_))), "{started:?}");
        assert!(staging.join("someone's").exists());
        let sink =
            Sink::start(target(), true, Some((&offer, &prefix, &test_key()))).expect("forced");
        assert!(!staging.join("someone's").exists(), "--force starts over");
        drop(sink);
    }

    #[tokio::test]
    async fn a_refused_archive_leaves_neither_staging_nor_journal() {
        let (_src, tar) = sample_tar();
        let chunks: Vec<&[u8]> = tar.chunks(1 << 16).collect();
        let dest = tempfile::tempdir().expect("tempdir");
        // Announced as `other`: the first entry, `tree`, is refused.
        let target =
            Target::Extract { dir: dest.path().to_owned(), announced: vec!["other".into()].into() };
        let mut offer = archive_offer();
        offer.entries = vec!["other".into()];
        let mut sink = Sink::start(target, false, Some((&offer, &Prefix::default(), &test_key())))
            .expect("start");
        let mut refused = None;
        for c in &chunks {
            if let Err(e) = sink.write(c.to_vec().into(), *blake3::hash(c).as_bytes()).await {
                refused = Some(e);
                break;
            }
        }
        // The writer's error comes from the write it stopped, or else from finish.
        let err = match refused {
            Some(e) => e,
            None => sink.finish().await.expect_err("refused"),
        };
        assert!(matches!(err, SinkError::Archive(ArchiveError::Unsafe { .. })), "{err:?}");
        assert!(listing(dest.path()).is_empty(), "{:?}", listing(dest.path()));
    }

    fn archive_offer_of(entries: &[&str]) -> Offer {
        Offer {
            kind: crate::message::Kind::Archive,
            name: "x".into(),
            size: None,
            entries: entries.iter().map(|&e| e.to_owned()).collect(),
            chunk_size: 1 << 16,
            files: None,
            kinds: Vec::new(),
        }
    }

    /// Starts an extraction of `tar` into `dir` with a manifest, hands it every chunk,
    /// and finishes.
    async fn extract(dir: &Path, entries: &[&str], tar: &[u8], before: impl FnOnce()) -> SinkError {
        let offer = archive_offer_of(entries);
        let target = Target::Extract { dir: dir.to_owned(), announced: Announced::of(&offer) };
        let mut sink = Sink::start(target, false, Some((&offer, &Prefix::default(), &test_key())))
            .expect("start");
        for c in tar.chunks(1 << 16) {
            sink.write(c.to_vec().into(), *blake3::hash(c).as_bytes()).await.expect("write");
        }
        before();
        sink.finish().await.expect_err("the commit fails")
    }

    #[tokio::test]
    async fn a_refused_extraction_leaves_nothing_behind() {
        // A symlink climbing out of `d`, then a file through it.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "d", io::empty()).expect("dir");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, "d/up", "../..").expect("symlink");
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(1);
        b.append_data(&mut h, "d/up/x", &b"x"[..]).expect("file");
        let tar = b.into_inner().expect("tar");

        let dest = tempfile::tempdir().expect("tempdir");
        let e = extract(dest.path(), &["d"], &tar, || {}).await;
        assert!(matches!(e, SinkError::Archive(ArchiveError::Unsafe { .. })), "{e:?}");
        // The stream itself was refused: a rerun would fetch it again.
        assert!(listing(dest.path()).is_empty(), "left behind: {:?}", listing(dest.path()));
    }

    #[tokio::test]
    async fn a_commit_that_fails_locally_keeps_the_staging_directory() {
        let src = tempfile::tempdir().expect("tempdir");
        let tree = src.path().join("tree");
        std::fs::create_dir(&tree).expect("mkdir");
        std::fs::write(tree.join("a"), b"data").expect("write");
        let tar = crate::archive::pack(&[tree], Vec::new()).expect("pack");
        let dest = tempfile::tempdir().expect("tempdir");
        // The name is taken after the receiver checked it, before the commit.
        let taken = dest.path().join("tree");
        let e =
            extract(dest.path(), &["tree"], &tar, || std::fs::write(&taken, b"mine").expect("w"))
                .await;
        assert!(matches!(e, SinkError::Archive(ArchiveError::Exists { .. })), "{e:?}");
        let part =
            Target::Extract { dir: dest.path().to_owned(), announced: vec!["tree".into()].into() }
                .resume_part()
                .expect("part")
                .path()
                .to_owned();
        // What was extracted stays for a rerun, with its journal.
        assert_eq!(std::fs::read(part.join("tree/a")).expect("staged entry"), b"data");
        assert!(manifest_path(&part).exists());
        assert_eq!(std::fs::read(&taken).expect("read"), b"mine");
    }
}
