//! The shared buffer of a `--many` send of standard input or text (issue 15): the
//! source is read once, into a ring of chunks that every receiver's window reads
//! through a [`Cursor`] of its own, at its own pace.
//!
//! Invariants:
//! - Every chunk read takes one permit of the send's [`Budget`] (shared with the
//!   reservations of every receiver's seal buffers and of the reader's own
//!   read-ahead), held until neither the ring nor any window holds the chunk: the
//!   chunks held for all receivers together never pass the budget, and the slowest
//!   receiver paces the reader.
//! - The reader leaves `spare` permits free for one more receiver's seal buffers, so
//!   that a newcomer can join while the stream's first chunk is held.
//! - A chunk leaves the ring only when the reader needs its room, and only once every
//!   receiver's cursor has passed it. Until chunk 0 has left, a new receiver gets the
//!   whole stream ([`Fanout::join`]); after, it is refused (it cannot be restarted).
//! - A receiver that a rerun resumes catches up from the ring while the chunks it
//!   holds are still there; its window keeps what it was sent until it acknowledged it,
//!   so a reconnection resumes as with a single receiver.
//! - When the reader has waited for room for the whole lag bound without any permit
//!   coming back, the receiver holding the oldest chunk among those that took nothing
//!   and acknowledged nothing for the bound, if another receiver is ahead of it, is
//!   dropped: its window stops with [`SourceError::Lagged`], said to both
//!   sides, and the others go on. One receiver alone, or all equally slow, only set
//!   the pace.
//! - Nothing is read before `quorum` receivers have joined (`--many N`: N), so that
//!   all of them get the stream from its start however far apart they come.
//! - The offer is measured once, for the first receiver that authenticates, and every
//!   receiver gets the same offer.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::message::Offer;
use crate::pipeline::PipelineError;
use crate::pool::{FRAME_ROOM, Pool};
use crate::source::{AHEAD, Chunks, Source, SourceError};
use crate::transfer::outgoing::{Budget, Piece};

/// Idle buffers the reader's pool keeps (counted in its reservation).
const KEEP: usize = 2;

/// One source read once for many receivers: see the module docs. Cloning it gives
/// another handle to the same buffer.
#[derive(Clone)]
pub(crate) struct Fanout(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    /// Bumped at every change: a chunk in, a cursor moved, joined, left or dropped.
    news: watch::Sender<()>,
    budget: Budget,
    lag: Duration,
    /// Permits the reader leaves free (see the module docs).
    spare: usize,
    /// Receivers that join before anything is read (see the module docs).
    quorum: u64,
    chunk_size: u32,
    /// Measured once, for every receiver.
    offer: tokio::sync::Mutex<Option<Offer>>,
}

struct State {
    /// The source, until the offer is measured and then until the reader starts.
    source: Option<Source>,
    /// The size offered, which the reader holds the source to.
    size: Option<u64>,
    /// Chunks `base .. base + ring.len()`.
    ring: VecDeque<Piece>,
    base: u64,
    /// `Some(None)`: the source ended well; `Some(Some(why))`: it failed.
    end: Option<Option<String>>,
    cursors: HashMap<u64, Mark>,
    next_id: u64,
    reader: Option<tokio::task::JoinHandle<()>>,
}

/// Where one receiver stands.
struct Mark {
    /// The next chunk its window takes.
    next: u64,
    /// The oldest chunk its window still holds.
    low: u64,
    /// When it last took a chunk or gave one back.
    moved: Instant,
    dropped: CancellationToken,
}

impl State {
    fn read(&self) -> u64 {
        self.base + self.ring.len() as u64
    }

    fn live(&self) -> impl Iterator<Item = &Mark> {
        self.cursors.values().filter(|m| !m.dropped.is_cancelled())
    }
}

impl Fanout {
    /// A buffer for `source`, within `budget`; `lag`, `spare` and `quorum`: see the
    /// module docs.
    pub(crate) fn new(
        source: Source,
        chunk_size: u32,
        budget: Budget,
        (lag, spare, quorum): (Duration, usize, u64),
    ) -> Fanout {
        let state = State {
            source: Some(source),
            size: None,
            ring: VecDeque::new(),
            base: 0,
            end: None,
            cursors: HashMap::new(),
            next_id: 0,
            reader: None,
        };
        Fanout(Arc::new(Inner {
            state: Mutex::new(state),
            news: watch::Sender::new(()),
            budget,
            lag,
            spare,
            quorum,
            chunk_size,
            offer: tokio::sync::Mutex::new(None),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding it is a bug elsewhere; the state stays usable.
        self.0.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The offer, measured for the first receiver that asks (see [`Source::offer`]),
    /// the same for every one after.
    ///
    /// # Errors
    /// Unreadable metadata.
    pub(crate) async fn offer(&self) -> Result<Offer, Error> {
        let mut offer = self.0.offer.lock().await;
        if let Some(o) = offer.as_ref() {
            return Ok(o.clone());
        }
        let mut source = self.state().source.take().ok_or(PipelineError::Gone("shared source"))?;
        let chunk_size = self.0.chunk_size;
        let (source, measured) = tokio::task::spawn_blocking(move || {
            let measured = source.offer(chunk_size);
            (source, measured)
        })
        .await
        .map_err(PipelineError::Task)?;
        let mut st = self.state();
        st.source = Some(source);
        let measured = measured?;
        st.size = measured.size;
        drop(st);
        *offer = Some(measured.clone());
        Ok(measured)
    }

    /// A cursor at the stream's first chunk for a new receiver, or `None` if that chunk
    /// has left the buffer: the stream cannot be restarted for it.
    pub(crate) fn join(&self) -> Option<Cursor> {
        let mut st = self.state();
        if st.base > 0 {
            return None;
        }
        let id = st.next_id;
        st.next_id += 1;
        let dropped = CancellationToken::new();
        let mark = Mark { next: 0, low: 0, moved: Instant::now(), dropped: dropped.clone() };
        st.cursors.insert(id, mark);
        drop(st);
        self.0.news.send_replace(());
        Some(Cursor { fanout: self.clone(), id, next: 0, news: self.0.news.subscribe(), dropped })
    }

    /// Starts the reader, once.
    fn start(&self) {
        let mut st = self.state();
        if st.reader.is_some() {
            return;
        }
        let Some(source) = st.source.take() else { return };
        let size = st.size;
        let chunk_size = self.0.chunk_size as usize;
        let pool = Pool::new(chunk_size + FRAME_ROOM, KEEP);
        let chunks = source.spawn(chunk_size, pool, size);
        st.reader = Some(tokio::spawn(read(self.clone(), chunks)));
    }

    /// Stops the reader (the send is over).
    pub(crate) fn stop(&self) {
        if let Some(r) = self.state().reader.take() {
            r.abort();
        }
    }

    /// Drops chunks that every live cursor has passed.
    fn evict(&self) {
        let mut st = self.state();
        let Some(min) = st.live().map(|m| m.next).min() else { return };
        while st.base < min && st.ring.pop_front().is_some() {
            st.base += 1;
        }
    }

    /// The reader waited the whole bound: drops the receiver that holds the oldest
    /// chunk among those that took nothing and gave nothing back for the bound, if
    /// another one is ahead of it (a newcomer catching up is moving, so it is never
    /// the one). Whether one was dropped.
    fn drop_laggard(&self) -> bool {
        let st = self.state();
        let at = |m: &Mark| (m.low, m.next);
        let idle = st.live().filter(|m| m.moved.elapsed() >= self.0.lag);
        let Some(laggard) = idle.min_by_key(|m| at(m)) else { return false };
        let ahead = st.live().any(|m| at(m) > at(laggard));
        if ahead {
            tracing::info!(low = laggard.low, read = st.read(), "a receiver lags; dropped");
            laggard.dropped.cancel();
        }
        drop(st);
        if ahead {
            self.0.news.send_replace(());
        }
        ahead
    }

    /// A permit for the next chunk: at once if one is free; else once chunks every
    /// cursor passed are dropped and their windows gave them back. Drops a laggard
    /// after the whole bound without one.
    async fn room(&self, news: &mut watch::Receiver<()>) -> OwnedSemaphorePermit {
        let budget = &self.0.budget;
        if let Some(p) = budget.try_permit(self.0.spare) {
            return p;
        }
        let mut since = tokio::time::Instant::now();
        loop {
            let freed = budget.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            news.borrow_and_update();
            self.evict();
            if let Some(p) = budget.try_permit(self.0.spare) {
                return p;
            }
            tokio::select! {
                () = &mut freed => {}
                // A cursor moved: maybe more can leave the ring.
                changed = news.changed() => if changed.is_err() {
                    return std::future::pending().await;
                },
                () = tokio::time::sleep_until(since + self.0.lag) => {
                    self.drop_laggard();
                    since = tokio::time::Instant::now();
                }
            }
        }
    }

    fn lagged(&self) -> SourceError {
        let mib = crate::pipeline::MANY_BYTES >> 20;
        SourceError::Lagged { mib, secs: self.0.lag.as_secs() }
    }
}

/// The reader: one chunk at a time from the source into the ring, each with its
/// permit, until the source ends.
async fn read(fanout: Fanout, mut chunks: Chunks) {
    // The chunks between the reader thread and here, and its pool's idle buffers.
    let _ahead = fanout.0.budget.reserve(AHEAD + 1 + KEEP).await;
    let mut news = fanout.0.news.subscribe();
    // The windows that joined send keepalives while they wait.
    while fanout.state().next_id < fanout.0.quorum {
        news.borrow_and_update();
        if fanout.state().next_id >= fanout.0.quorum || news.changed().await.is_err() {
            break;
        }
    }
    loop {
        let permit = fanout.room(&mut news).await;
        let next = chunks.recv().await;
        let mut st = fanout.state();
        let ended = match next {
            Some(Ok(buf)) => {
                let held = Arc::new(fanout.0.budget.keep(Some(permit)));
                st.ring.push_back(Piece { raw: Arc::new(buf), held: Some(held) });
                false
            }
            Some(Err(e)) => {
                st.end = Some(Some(crate::error::last_word(&Error::from(e))));
                true
            }
            None => {
                st.end = Some(None);
                true
            }
        };
        drop(st);
        fanout.0.news.send_replace(());
        if ended {
            return;
        }
    }
}

/// One receiver's place in a [`Fanout`]; leaves it when dropped.
pub(crate) struct Cursor {
    fanout: Fanout,
    id: u64,
    next: u64,
    news: watch::Receiver<()>,
    dropped: CancellationToken,
}

/// Fires when the buffer drops a receiver, with the reason.
pub(crate) struct Dropped {
    token: CancellationToken,
    why: Fanout,
}

impl Dropped {
    /// Waits until the receiver is dropped; why.
    pub(crate) async fn wait(&self) -> SourceError {
        self.token.cancelled().await;
        self.why.lagged()
    }
}

impl Cursor {
    /// The next chunk, the error that ended the source, or `None` at its end. Starts
    /// the reader if it has not started.
    ///
    /// # Cancel safety
    /// Cancel safe: the cursor moves only when a chunk is returned.
    pub(crate) async fn recv(&mut self) -> Option<Result<Piece, SourceError>> {
        self.fanout.start();
        loop {
            self.news.borrow_and_update();
            if self.dropped.is_cancelled() {
                return Some(Err(self.fanout.lagged()));
            }
            {
                let mut st = self.fanout.state();
                if self.next < st.base {
                    // Never: a live cursor pins what it has not taken.
                    return Some(Err(self.fanout.lagged()));
                }
                let at = usize::try_from(self.next - st.base).unwrap_or(usize::MAX);
                if let Some(piece) = st.ring.get(at).cloned() {
                    self.next += 1;
                    if let Some(m) = st.cursors.get_mut(&self.id) {
                        m.next = self.next;
                        m.moved = Instant::now();
                    }
                    drop(st);
                    self.fanout.0.news.send_replace(());
                    return Some(Ok(piece));
                }
                match &st.end {
                    Some(None) => return None,
                    Some(Some(why)) => {
                        return Some(Err(SourceError::Read(io::Error::other(why.clone()))));
                    }
                    None => {}
                }
            }
            if self.news.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Its window holds nothing before chunk `low` any more.
    pub(crate) fn passed(&self, low: u64) {
        if let Some(m) = self.fanout.state().cursors.get_mut(&self.id)
            && low > m.low
        {
            m.low = low;
            m.moved = Instant::now();
        }
        self.fanout.0.news.send_replace(());
    }

    /// What fires when the buffer drops this receiver.
    pub(crate) fn dropped(&self) -> Dropped {
        Dropped { token: self.dropped.clone(), why: self.fanout.clone() }
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.fanout.state().cursors.remove(&self.id);
        self.fanout.0.news.send_replace(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::MIN_CHUNK_SIZE;

    const CHUNK: usize = MIN_CHUNK_SIZE as usize;

    /// Left free for a newcomer.
    const SPARE: usize = 2;

    /// The reader's own reservation and the spare: a budget of this much plus `ring`
    /// leaves the ring `ring` chunks.
    const READER: usize = AHEAD + 1 + KEEP + SPARE;

    fn data(chunks: usize) -> Vec<u8> {
        (0..chunks * CHUNK).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    /// A fanout of `bytes` read from a reader (a stream, as standard input is), its
    /// offer measured.
    async fn fanout(bytes: Vec<u8>, ring: usize, lag: Duration) -> (Fanout, Budget) {
        let given = crate::options::Source::Reader(Box::new(io::Cursor::new(bytes)));
        let source = Source::new(given).expect("source");
        let budget = Budget::new(READER + ring);
        let f = Fanout::new(source, MIN_CHUNK_SIZE, budget.clone(), (lag, SPARE, 1));
        f.offer().await.expect("offer");
        (f, budget)
    }

    /// The next chunk within `within`, `None` if none came (the buffer holds it back).
    async fn next(c: &mut Cursor, within: Duration) -> Option<Option<Piece>> {
        match tokio::time::timeout(within, c.recv()).await {
            Ok(Some(Ok(p))) => Some(Some(p)),
            Ok(None) => Some(None),
            Ok(Some(Err(e))) => panic!("the source failed: {e}"),
            Err(_) => None,
        }
    }

    const NEVER: Duration = Duration::from_secs(3600);
    const BRIEF: Duration = Duration::from_millis(300);

    /// Issue 15: the buffer holds at most what its budget leaves it; a chunk leaves it
    /// only once every cursor passed it; until chunk 0 left, a newcomer gets the whole
    /// stream, after, it is refused.
    #[tokio::test]
    async fn the_buffer_is_bounded_and_frees_a_chunk_only_once_every_cursor_passed_it() {
        const RING: usize = 3;
        let bytes = data(12);
        let (f, budget) = fanout(bytes.clone(), RING, NEVER).await;
        let (mut a, mut b) = (f.join().expect("a joins"), f.join().expect("b joins"));
        // `a` reads ahead alone: RING chunks, then nothing more while `b` holds them.
        let mut got_a = Vec::new();
        for _ in 0..RING {
            let p = tokio::time::timeout(TIMEOUT, a.recv()).await.expect("a chunk in time");
            got_a.push(p.expect("not the end").expect("a chunk").raw);
        }
        assert!(next(&mut a, BRIEF).await.is_none(), "read past a full buffer");
        assert!(budget.peak() <= (READER + RING) as u64, "peak {}", budget.peak());
        // Chunk 0 is still held: a newcomer gets the whole stream.
        let mut c = f.join().expect("c joins while chunk 0 is held");
        // `b` and `c` pass chunk 0: it leaves, and `a` gets one more.
        for cur in [&mut b, &mut c] {
            let p = next(cur, TIMEOUT).await.expect("in time").expect("a chunk");
            assert_eq!(&p.raw[..], &bytes[..CHUNK]);
        }
        drop(got_a.remove(0));
        let p = next(&mut a, TIMEOUT).await.expect("room once all passed chunk 0");
        got_a.push(p.expect("a chunk").raw);
        assert!(next(&mut a, BRIEF).await.is_none(), "only one chunk left the buffer");
        assert!(f.join().is_none(), "a newcomer after chunk 0 left is refused");
        // Everyone reads to the end, each the whole stream.
        let whole = |mut cur: Cursor, mut got: Vec<u8>| async move {
            while let Some(p) = next(&mut cur, TIMEOUT).await.expect("in time") {
                got.extend_from_slice(&p.raw[..]);
            }
            got
        };
        let first: Vec<u8> = got_a.iter().flat_map(|r| r[..].to_vec()).collect();
        drop(got_a);
        let c_first = bytes[..CHUNK].to_vec();
        let (ga, gb, gc) = tokio::join!(
            whole(a, bytes[..CHUNK].iter().copied().chain(first).collect()),
            whole(b, bytes[..CHUNK].to_vec()),
            whole(c, c_first),
        );
        for got in [ga, gb, gc] {
            assert!(got == bytes, "{} bytes of {}", got.len(), bytes.len());
        }
        assert!(budget.peak() <= (READER + RING) as u64, "peak {}", budget.peak());
    }

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// Issue 15: a cursor that holds the full buffer and takes nothing for the lag
    /// bound is dropped, with its reason, and the other one goes on to the end; a
    /// cursor alone is never dropped, however slow.
    #[tokio::test]
    async fn the_laggard_is_dropped_and_the_others_go_on() {
        const LAG: Duration = Duration::from_millis(200);
        let bytes = data(10);
        let (f, _) = fanout(bytes.clone(), 2, LAG).await;
        let (mut fast, slow) = (f.join().expect("joins"), f.join().expect("joins"));
        let dropped = slow.dropped();
        let mut got = Vec::new();
        while let Some(p) = next(&mut fast, TIMEOUT).await.expect("the laggard is dropped in time")
        {
            got.extend_from_slice(&p.raw[..]);
            // Acknowledged at once, as a fast receiver's window would.
            fast.passed((got.len() / CHUNK) as u64);
        }
        assert!(got == bytes, "{} bytes of {}", got.len(), bytes.len());
        let why = tokio::time::timeout(TIMEOUT, dropped.wait()).await.expect("told");
        assert!(matches!(why, SourceError::Lagged { .. }), "{why}");
        assert!(why.to_string().contains("took nothing for"), "{why}");
        let mut slow = slow;
        assert!(matches!(slow.recv().await, Some(Err(SourceError::Lagged { .. }))));

        // Alone: it only sets the pace.
        let (f, _) = fanout(bytes.clone(), 2, LAG).await;
        let mut alone = f.join().expect("joins");
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(next(&mut alone, TIMEOUT).await.expect("in time").expect("a chunk"));
        }
        let dropped = alone.dropped();
        assert!(
            tokio::time::timeout(LAG * 5, dropped.wait()).await.is_err(),
            "a receiver alone was dropped"
        );
        drop(held);
        let mut got = bytes[..2 * CHUNK].to_vec();
        while let Some(p) = next(&mut alone, TIMEOUT).await.expect("in time") {
            got.extend_from_slice(&p.raw[..]);
        }
        assert!(got == bytes, "{} bytes of {}", got.len(), bytes.len());
    }

    /// Issue 15: with `--many N`, nothing is read before N receivers joined, so the
    /// last one to come still gets the stream from its start.
    #[tokio::test]
    async fn nothing_is_read_before_the_count_joined() {
        let bytes = data(4);
        let given = crate::options::Source::Reader(Box::new(io::Cursor::new(bytes.clone())));
        let source = Source::new(given).expect("source");
        let f = Fanout::new(source, MIN_CHUNK_SIZE, Budget::new(READER + 2), (NEVER, SPARE, 2));
        f.offer().await.expect("offer");
        let mut first = f.join().expect("joins");
        assert!(next(&mut first, BRIEF).await.is_none(), "read before the second joined");
        assert!(f.state().ring.is_empty(), "read before the second joined");
        let second = f.join().expect("the second joins at the start");
        let whole = |mut cur: Cursor| async move {
            let mut got = Vec::new();
            while let Some(p) = next(&mut cur, TIMEOUT).await.expect("in time") {
                got.extend_from_slice(&p.raw[..]);
            }
            got
        };
        let (a, b) = tokio::join!(whole(first), whole(second));
        for got in [a, b] {
            assert!(got == bytes, "{} bytes of {}", got.len(), bytes.len());
        }
    }
}
