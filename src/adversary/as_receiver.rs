//! The receiver's cases: acknowledgements beyond what was sent, resumes that claim
//! what they do not hold.

use super::*;

pub(super) async fn play_receiver(
    case: AsReceiver,
    node: &Node,
    peer: PeerId,
    code: &Code,
    mut s: Session<Stream>,
    out: &mut Outcome,
) -> Held {
    match s.recv().await {
        Ok(Control::Offer(o)) => out.note(format!("offered {:?}, {:?} bytes", o.name, o.size)),
        Ok(other) => {
            out.note(format!("the sender opened with {}", other.name()));
            return Box::new(s);
        }
        Err(e) => {
            out.note(format!("no Offer: {e}"));
            return Box::new(s);
        }
    }
    let answer = match case {
        AsReceiver::ResumeBeyond => Control::Resume(Resume { chunks: u64::MAX, root: [0; 32] }),
        AsReceiver::ResumeWrongRoot => Control::Resume(Resume { chunks: 2, root: [0x55; 32] }),
        _ => Control::Accept,
    };
    if let Err(e) = s.send(&answer).await {
        out.note(format!("cannot answer the Offer: {e}"));
        return Box::new(s);
    }
    let (_, mut reader, mut writer) = s.into_parts();
    if case == AsReceiver::AckBeyondThenResumeFromZero {
        return ack_beyond_then_resume(node, peer, code, reader, writer, out).await;
    }
    match receiver_step(case, &mut reader, &mut writer).await {
        Ok(hold) => {
            out.delivered = true;
            if hold {
                // Neither read nor write again: both halves stay as they are.
                return Box::new((reader, writer));
            }
        }
        Err(e) => out.note(format!("the script stopped: {e}")),
    }
    let reader = drain(reader, out).await;
    Box::new((reader, writer))
}

/// The misbehaviour after the answer to the Offer; true if the adversary must then
/// go silent, without even reading.
pub(super) async fn receiver_step(
    case: AsReceiver,
    reader: &mut Reader,
    writer: &mut Writer,
) -> Step {
    match case {
        AsReceiver::ResumeBeyond | AsReceiver::ResumeWrongRoot => {}
        AsReceiver::AckBeyondThenResumeFromZero => unreachable!("played on its own"),
        AsReceiver::DoneEarly => session::send(writer, &Control::Done).await?,
        AsReceiver::GarbageFrame => {
            next_chunk(reader).await?;
            let body: Vec<u8> = (0..512 + TAG_LEN).map(|_| rand::random::<u8>()).collect();
            writer.reserve().map_err(frame_err)?;
            let header = Header { len: body.len() as u32, last: false };
            writer.write_sealed(header, &body).await.map_err(frame_err)?;
            writer.raw().flush().await.map_err(io_err)?;
        }
        AsReceiver::HangMidFrame => {
            for _ in 0..2 {
                next_chunk(reader).await?;
            }
            let mut plain = Control::Ack(2).encode();
            let counter = writer.reserve().map_err(frame_err)?;
            let header = writer.key().seal(counter, false, &mut plain).map_err(frame_err)?;
            let raw = writer.raw();
            raw.write_all(&header.to_bytes()).await.map_err(io_err)?;
            raw.write_all(&plain[..plain.len() / 2]).await.map_err(io_err)?;
            raw.flush().await.map_err(io_err)?;
            return Ok(true);
        }
        AsReceiver::ErrorWithEscapes => {
            session::send(writer, &Control::Error(ESCAPE_NAME.into())).await?;
        }
    }
    Ok(false)
}

/// Reads frames, unopened, until one long enough to be a chunk (keepalives are not).
pub(super) async fn next_chunk(reader: &mut Reader) -> Result<(), Error> {
    loop {
        let (_, header, _) = reader.next_sealed().await.map_err(frame_err)?;
        if header.len as usize >= message::MIN_CHUNK_FRAME_LEN {
            return Ok(());
        }
    }
}

/// Issue 9, item 4, from outside: acknowledge far past what was sent, hang up, and come
/// back for chunks the sender has been told it may forget.
pub(super) async fn ack_beyond_then_resume(
    node: &Node,
    peer: PeerId,
    code: &Code,
    mut reader: Reader,
    mut writer: Writer,
    out: &mut Outcome,
) -> Held {
    let mut read = 0;
    let first: Result<(), Error> = async {
        // Past the chunks a sender keeps below an ack (`pipeline::ACK_LEAD`), so that
        // the ack makes it forget chunk 0.
        for _ in 0..4 + pipeline::ACK_LEAD {
            next_chunk(&mut reader).await?;
            read += 1;
        }
        session::send(&mut writer, &Control::Ack(u64::MAX)).await?;
        // The sender clamps the ack to what it wrote (9 or a little more: the stream's
        // window holds it back), then sends a window beyond it. Reading past the first
        // window shows that it took the ack; it then waits for more acks. (The tests
        // send random data: a window of chunks that do not compress holds a raw
        // window's count of them; compressible ones would come in greater number.)
        for _ in 0..pipeline::window_chunks(DEFAULT_CHUNK_SIZE) {
            next_chunk(&mut reader).await?;
            read += 1;
        }
        Ok(())
    }
    .await;
    out.note(format!("read {read} chunks in the first session"));
    if let Err(e) = first {
        out.note(format!("the first session stopped: {e}"));
        return Box::new((reader, writer));
    }
    out.note("acknowledged u64::MAX and read past the window; hanging up");
    writer.close().await;
    // Until the sender gives the session up.
    let reader = drain(reader, out).await;
    drop((reader, writer));
    let mut s = match connect(node, peer, code).await {
        Ok(s) => s,
        Err(e) => {
            out.note(format!("could not come back: {e}"));
            return Box::new(());
        }
    };
    out.note("authenticated again");
    match s.recv().await {
        Ok(Control::Offer(_)) => {}
        Ok(other) => {
            out.note(format!("the sender reopened with {}", other.name()));
            return Box::new(s);
        }
        Err(e) => {
            out.note(format!("no second Offer: {e}"));
            return Box::new(s);
        }
    }
    let from_zero = Resume { chunks: 0, root: RootHash::default().finish() };
    if let Err(e) = s.send(&Control::Resume(from_zero)).await {
        out.note(format!("cannot resume: {e}"));
        return Box::new(s);
    }
    out.delivered = true;
    let (_, reader, writer) = s.into_parts();
    let reader = drain(reader, out).await;
    Box::new((reader, writer))
}
