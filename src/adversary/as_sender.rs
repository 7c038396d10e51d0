//! The sender's cases: an offer, then chunks that break one rule each (frames that
//! are garbage, too long or cut short, padding, a zstd bomb, more than was offered).

use super::*;

pub(super) async fn play_sender(case: AsSender, mut s: Session<Stream>, out: &mut Outcome) -> Held {
    // The Offer cases end at the Offer: the honest side must refuse it.
    if matches!(case, AsSender::OfferTooManyEntries | AsSender::OfferTooLarge) {
        return bad_offer(case, s, out).await;
    }
    let offer = offer_for(case);
    if !offer_accepted(&mut s, offer.clone(), out).await {
        // A name with escapes is misbehaviour enough: the receiver has shown it, and a
        // refusal names it again.
        out.delivered = case == AsSender::EscapeOfferName;
        return Box::new(s);
    }
    let (_, reader, writer) = s.into_parts();
    let drained = tokio::spawn(async move {
        let mut seen = Outcome::default();
        let reader = drain(reader, &mut seen).await;
        (reader, seen)
    });
    let mut w = Chunks::new(writer, DEFAULT_CHUNK_SIZE);
    match script(case, &mut w, &offer).await {
        Ok(delivered) => out.delivered = delivered,
        Err(e) => out.note(format!("the script stopped: {e}")),
    }
    out.note(format!("{} chunks sent", w.index));
    // The honest side's last word, once it has said it (or gone).
    let reader = match tokio::time::timeout(Duration::from_secs(120), drained).await {
        Ok(Ok((reader, seen))) => {
            out.told = seen.told;
            out.log.extend(seen.log);
            Some(reader)
        }
        _ => {
            out.note("the honest side neither ended nor went away");
            None
        }
    };
    Box::new((reader, w.w))
}

/// An Offer over a limit (too many entries, or a whole frame of them), as raw bytes.
async fn bad_offer(case: AsSender, s: Session<Stream>, out: &mut Outcome) -> Held {
    let plain = if case == AsSender::OfferTooManyEntries {
        raw_offer(MAX_ENTRIES as u64 + 1)
    } else {
        // As many empty entries as one frame can carry.
        let max = crate::framing::MAX_PLAINTEXT_LEN as u64;
        raw_offer(max - (raw_offer(0).len() as u64 + 4))
    };
    out.note(format!("Offer of {} bytes", plain.len()));
    let (_, reader, mut writer) = s.into_parts();
    if let Err(e) = writer.send(plain, false).await {
        out.note(format!("cannot send the Offer: {e}"));
        return Box::new((reader, writer));
    }
    out.delivered = true;
    let reader = drain(reader, out).await;
    Box::new((reader, writer))
}

/// What each case offers.
fn offer_for(case: AsSender) -> Offer {
    let file = |name: &str, chunks: u64| Offer {
        kind: Kind::File,
        name: name.into(),
        size: Some(chunks * u64::from(DEFAULT_CHUNK_SIZE)),
        entries: Vec::new(),
        chunk_size: DEFAULT_CHUNK_SIZE,
        files: None,
        kinds: Vec::new(),
    };
    match case {
        AsSender::PaddedFrames => file("padded.bin", PADDED_CHUNKS),
        AsSender::EscapeOfferName => file(ESCAPE_NAME, FILE_CHUNKS),
        AsSender::LongName => sized(folder("x", None), &TarGen::long_name()),
        AsSender::OfferAtLimit => offer_at_limit(),
        AsSender::ManyEntries => sized(folder("many", Some(MANY_ENTRIES + 1)), &TarGen::many()),
        AsSender::EscapeTarNames => sized(folder(ESCAPE_TOP, Some(3)), &TarGen::escapes()),
        AsSender::OversizeArchive => {
            Offer { size: Some(OVERSIZE_OFFERED), ..folder("top", Some(2)) }
        }
        AsSender::HostileTarHeader => sized(folder("top", Some(2)), &TarGen::hostile_header()),
        AsSender::DeepTree => {
            sized(folder("deep", Some(1 + DEEP_CHAINS * (DEEP_LEVELS + 1))), &TarGen::deep())
        }
        _ => file("data.bin", FILE_CHUNKS),
    }
}

/// What each case sends once its offer is accepted: whether the misbehaviour went out.
async fn script(case: AsSender, w: &mut Chunks, offer: &Offer) -> Step {
    match case {
        AsSender::GarbageFrame => garbage_after(w, 2).await,
        AsSender::OversizedHeader => oversized_header(w).await,
        AsSender::PaddedFrames => padded(w).await,
        AsSender::ZstdBomb => bomb(w).await,
        AsSender::HangMidFrame => half_frame_after(w, 1).await,
        AsSender::EscapeOfferName => w.data(FILE_CHUNKS).await.map(|()| true),
        AsSender::LongName => w.tar(TarGen::long_name()).await,
        AsSender::OfferAtLimit => w.tar(TarGen::one_dir(&offer.entries[0])).await,
        AsSender::ManyEntries => w.tar(TarGen::many()).await,
        AsSender::EscapeTarNames => w.tar(TarGen::escapes()).await,
        AsSender::OversizeArchive => oversize(w).await,
        AsSender::HostileTarHeader => w.tar(TarGen::hostile_header()).await,
        AsSender::DeepTree => w.tar(TarGen::deep()).await,
        AsSender::OfferTooManyEntries | AsSender::OfferTooLarge => {
            unreachable!("the Offer cases end at the Offer")
        }
    }
}

/// Sends the Offer and waits for the answer; true if it is `Accept`.
pub(super) async fn offer_accepted(
    s: &mut Session<Stream>,
    offer: Offer,
    out: &mut Outcome,
) -> bool {
    if let Err(e) = s.send(&Control::Offer(offer)).await {
        out.note(format!("cannot send the Offer: {e}"));
        return false;
    }
    match s.recv_within(Some(STEP)).await {
        Ok(Control::Accept) => {
            out.note("accepted");
            true
        }
        Ok(Control::Decline(m) | Control::Refuse(m)) => {
            out.note("refused");
            out.told = Some(m);
            false
        }
        Ok(other) => {
            out.note(format!("answered {}", other.name()));
            false
        }
        Err(SessionError::Remote { message: m, .. }) => {
            out.told = Some(m);
            false
        }
        Err(e) => {
            out.note(format!("no answer to the Offer: {e}"));
            false
        }
    }
}

/// The honest side's frames until its last one (whose words are kept) or until it goes
/// away; the reader is handed back to be held.
pub(super) async fn drain(mut reader: Reader, out: &mut Outcome) -> Reader {
    reader.set_deadline(Some(STEP));
    let mut frames = 0u64;
    loop {
        match reader.next_sealed().await {
            Ok((counter, header, mut body)) => {
                frames += 1;
                if !header.last {
                    continue;
                }
                let word = reader
                    .key()
                    .open(counter, header, &mut body)
                    .ok()
                    .and_then(|()| Control::decode(&body).ok());
                match word {
                    Some(Control::Error(m) | Control::Decline(m) | Control::Refuse(m)) => {
                        out.note(format!("the honest side's last word: {m:?}"));
                        out.told = Some(m);
                    }
                    Some(other) => out.note(format!("the honest side ended with {}", other.name())),
                    None => out.note("the honest side's last frame did not open"),
                }
                break;
            }
            Err(e) => {
                out.note(format!("after {frames} frames from the honest side: {e}"));
                break;
            }
        }
    }
    reader
}

/// The writing half with the stream's running totals.
pub(super) struct Chunks {
    w: Writer,
    chunk_size: u32,
    index: u64,
    bytes: u64,
    root: RootHash,
}

pub(super) type Step = Result<bool, Error>;

pub(super) fn frame_err(e: FrameError) -> Error {
    SessionError::from(e).into()
}

pub(super) fn io_err(e: io::Error) -> Error {
    frame_err(FrameError::Io(e))
}

/// A blocking task of the adversary's own that panicked: a bug here, said as I/O.
pub(super) fn joined(e: tokio::task::JoinError) -> Error {
    io_err(io::Error::other(e))
}

impl Chunks {
    pub(super) fn new(w: Writer, chunk_size: u32) -> Chunks {
        Chunks { w, chunk_size, index: 0, bytes: 0, root: RootHash::default() }
    }

    /// One good chunk, sealed (and compressed where it pays) like pcp does.
    pub(super) async fn good(&mut self, raw: Vec<u8>) -> Result<(), Error> {
        let counter = self.w.reserve().map_err(frame_err)?;
        let (key, i) = (self.w.key().clone(), self.index);
        let sealed = tokio::task::spawn_blocking(move || {
            pipeline::seal_chunk(i, &raw, Compression::Zstd(1), &key, counter)
        })
        .await
        .map_err(joined)??;
        self.w.write_sealed(sealed.header, &sealed.frame).await.map_err(frame_err)?;
        self.root.push(&sealed.hash);
        self.bytes += sealed.raw_len as u64;
        self.index += 1;
        self.flush().await
    }

    /// A chunk with this header and payload, sealed as the next frame.
    pub(super) async fn custom(&mut self, head: ChunkHeader, payload: &[u8]) -> Result<(), Error> {
        let mut plain = chunk_plaintext(head, payload);
        let counter = self.w.reserve().map_err(frame_err)?;
        let header = self.w.key().seal(counter, false, &mut plain).map_err(frame_err)?;
        self.w.write_sealed(header, &plain).await.map_err(frame_err)?;
        self.flush().await
    }

    /// `n` good chunks of the default file data, then `End`.
    pub(super) async fn data(&mut self, n: u64) -> Result<(), Error> {
        for i in 0..n {
            self.good(file_chunk(i)).await?;
        }
        self.end().await
    }

    /// A whole tar stream in chunks, then `End`.
    pub(super) async fn tar(&mut self, mut tar: TarGen) -> Step {
        loop {
            let mut raw = vec![0u8; self.chunk_size as usize];
            let n = read_full(&mut tar, &mut raw);
            raw.truncate(n);
            if n == 0 {
                break;
            }
            self.good(raw).await?;
            if n < self.chunk_size as usize {
                break;
            }
        }
        self.end().await?;
        Ok(true)
    }

    pub(super) async fn end(&mut self) -> Result<(), Error> {
        let end =
            End { chunks: self.index, bytes: self.bytes, root: self.root.finish(), meta: None };
        session::send(&mut self.w, &Control::End(end)).await?;
        Ok(())
    }

    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        self.w.raw().flush().await.map_err(io_err)
    }
}

/// A chunk message's plaintext: its header, then `payload`, with room for the tag.
pub(super) fn chunk_plaintext(head: ChunkHeader, payload: &[u8]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(CHUNK_HEADER_LEN + payload.len() + TAG_LEN);
    let mut bytes = [0u8; CHUNK_HEADER_LEN];
    head.write(&mut bytes);
    plain.extend_from_slice(&bytes);
    plain.extend_from_slice(payload);
    plain
}

/// Chunk `i` of the file an adversary sender offers (default chunk size): a repeating
/// pattern that compresses. What verified of it must still be in the honest
/// receiver's part file after the misbehaviour.
#[must_use]
pub fn file_chunk(i: u64) -> Vec<u8> {
    (0..DEFAULT_CHUNK_SIZE as usize).map(|j| ((j as u64 / 64 + i * 7) % 251) as u8).collect()
}

pub(super) async fn garbage_after(w: &mut Chunks, good: u64) -> Step {
    for i in 0..good {
        w.good(file_chunk(i)).await?;
    }
    // Well-formed framing, a counter in sequence, but bytes no key sealed.
    let body: Vec<u8> = (0..4096 + TAG_LEN).map(|_| rand::random::<u8>()).collect();
    w.w.reserve().map_err(frame_err)?;
    let header = Header { len: body.len() as u32, last: false };
    w.w.write_sealed(header, &body).await.map_err(frame_err)?;
    w.flush().await?;
    Ok(true)
}

pub(super) async fn oversized_header(w: &mut Chunks) -> Step {
    w.good(file_chunk(0)).await?;
    let raw = w.w.raw();
    raw.write_all(&(MAX_FRAME_LEN + 1).to_be_bytes()).await.map_err(io_err)?;
    raw.write_all(&[0x42; 1024]).await.map_err(io_err)?;
    w.flush().await?;
    Ok(true)
}

pub(super) async fn half_frame_after(w: &mut Chunks, good: u64) -> Step {
    for i in 0..good {
        w.good(file_chunk(i)).await?;
    }
    let raw = file_chunk(good);
    let hash = *blake3::hash(&raw).as_bytes();
    let mut plain =
        chunk_plaintext(ChunkHeader { index: good, flags: 0, raw_len: w.chunk_size, hash }, &raw);
    let counter = w.w.reserve().map_err(frame_err)?;
    let header = w.w.key().seal(counter, false, &mut plain).map_err(frame_err)?;
    let raw = w.w.raw();
    raw.write_all(&header.to_bytes()).await.map_err(io_err)?;
    raw.write_all(&plain[..plain.len() / 2]).await.map_err(io_err)?;
    w.flush().await?;
    Ok(true)
}

/// zstd's skippable frame: magic, then a length, then that many bytes a decoder skips.
pub(super) fn skippable(len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + len);
    f.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
    f.extend_from_slice(&u32::try_from(len).expect("a frame is far below 4 GiB").to_le_bytes());
    f.resize(8 + len, 0);
    f
}

/// The payload of a valid chunk padded to fill a frame of [`MAX_FRAME_LEN`].
pub(super) fn padded_payload(raw: &[u8]) -> Vec<u8> {
    let mut payload = zstd::bulk::compress(raw, 1).expect("zstd compresses into a Vec");
    let room = crate::framing::MAX_PLAINTEXT_LEN - CHUNK_HEADER_LEN - payload.len() - 8;
    payload.extend_from_slice(&skippable(room));
    payload
}

/// Keepalives [`AsSender::PaddedFrames`] may send while it seals: one every 2 s, so
/// that the honest receiver does not take the wait for a dead link.
pub(super) const PADDING_KEEPALIVES: u64 = 30;

pub(super) async fn padded(w: &mut Chunks) -> Step {
    // All frames are sealed first and then written back to back, so the honest receiver
    // gets them as fast as the link goes, whatever sealing costs here. Frames go out in
    // counter order, so the keepalives that cover the wait take the first counters.
    let key = w.w.key().clone();
    let mut keepalives = VecDeque::new();
    for _ in 0..PADDING_KEEPALIVES {
        let mut plain = Control::Keepalive.encode();
        let counter = w.w.reserve().map_err(frame_err)?;
        keepalives.push_back((key.seal(counter, false, &mut plain).map_err(frame_err)?, plain));
    }
    let mut frames = Vec::new();
    for i in 0..PADDED_CHUNKS {
        let raw = file_chunk(i);
        let hash = *blake3::hash(&raw).as_bytes();
        let head = ChunkHeader { index: i, flags: FLAG_ZSTD, raw_len: w.chunk_size, hash };
        let counter = w.w.reserve().map_err(frame_err)?;
        let key = key.clone();
        frames.push(tokio::task::spawn_blocking(move || {
            let mut plain = chunk_plaintext(head, &padded_payload(&raw));
            key.seal(counter, false, &mut plain).map(|header| (header, plain))
        }));
        w.root.push(&hash);
    }
    while !frames.iter().all(tokio::task::JoinHandle::is_finished) {
        let Some((header, body)) = keepalives.pop_front() else { break };
        w.w.write_sealed(header, &body).await.map_err(frame_err)?;
        w.flush().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for (header, body) in keepalives {
        w.w.write_sealed(header, &body).await.map_err(frame_err)?;
    }
    for frame in frames {
        let (header, body) = frame.await.map_err(joined)?.map_err(frame_err)?;
        // Straight to the stream, without the writer's deadline: a receiver slow to open
        // 16 MiB frames (seconds each in a debug build) must not make the adversary give
        // up first.
        let raw = w.w.raw();
        raw.write_all(&header.to_bytes()).await.map_err(io_err)?;
        raw.write_all(&body).await.map_err(io_err)?;
        w.bytes += u64::from(w.chunk_size);
        w.index += 1;
    }
    w.flush().await?;
    w.end().await?;
    Ok(true)
}

/// `len` zeros through zstd, fed a MiB at a time: the bomb is never whole in memory
/// before it is compressed.
pub(super) fn zeros_compressed(len: u64) -> io::Result<Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1)?;
    let block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        enc.write_all(&block[..n])?;
        left -= n as u64;
    }
    enc.finish()
}

pub(super) async fn bomb(w: &mut Chunks) -> Step {
    w.good(file_chunk(0)).await?;
    let payload = tokio::task::spawn_blocking(|| zeros_compressed(BOMB_LEN))
        .await
        .map_err(joined)?
        .map_err(io_err)?;
    let zeros = vec![0u8; w.chunk_size as usize];
    let head = ChunkHeader {
        index: w.index,
        flags: FLAG_ZSTD,
        raw_len: w.chunk_size,
        hash: *blake3::hash(&zeros).as_bytes(),
    };
    w.custom(head, &payload).await?;
    Ok(true)
}

/// The whole oversize tar in good chunks. The honest receiver may hang up as soon as
/// the first chunk past the offer arrives: the misbehaviour is out once it is sent.
pub(super) async fn oversize(w: &mut Chunks) -> Step {
    match w.tar(TarGen::oversize()).await {
        Err(_) if w.bytes > OVERSIZE_OFFERED => Ok(true),
        other => other,
    }
}
