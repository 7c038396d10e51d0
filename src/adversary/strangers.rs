//! Strangers at the rendezvous (issue 14, item 10): they know no code, only what
//! anyone can send before the key exchange, or a wrong code.

use super::*;

/// Silent session streams each jammer peer holds: what one peer may hold at a sender.
pub const JAM_STREAMS_PER_PEER: usize = 2;

/// How long a jammer waits before it opens a new stream in place of one the sender
/// dropped.
pub(super) const JAM_REOPEN: Duration = Duration::from_millis(100);

/// Starts a stranger on 127.0.0.1 that answers every hello, for any code, "burnt",
/// before any key exchange, as anyone can (issue 14, item 5). Its outcome comes once it
/// has said so to someone; it goes on saying it until its runtime stops.
///
/// # Errors
/// A node that cannot start or listen.
pub async fn impostor_burnt() -> Result<Adversary, Error> {
    let (node, mut found) = Node::start(node_config())?;
    let mut incoming = node
        .control()
        .accept(session::PROTOCOL)
        .map_err(|_| NodeError::Transport("the session protocol is taken".into()))?;
    let addr = listen_addr(&node, &mut found).await?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let _keep = (&node, found);
        while let Some((peer, stream)) = incoming.next().await {
            if session::claim_burnt(stream).await.is_ok()
                && let Some(tx) = tx.take()
            {
                let mut out = Outcome { delivered: true, ..Outcome::default() };
                out.note(format!("told {peer} the code is burnt"));
                let _ = tx.send(out);
            }
        }
    });
    Ok(Adversary { addr: Some(addr), outcome: rx })
}

/// Our first listen address, with our `/p2p/` id.
pub(super) async fn listen_addr(
    node: &Node,
    found: &mut tokio::sync::mpsc::Receiver<NodeEvent>,
) -> Result<String, Error> {
    let listening = async {
        while let Some(ev) = found.recv().await {
            if let NodeEvent::Listening(a) = ev {
                return Some(a);
            }
        }
        None
    };
    let addr = tokio::time::timeout(STEP, listening)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| NodeError::Transport("the adversary never listened".into()))?;
    Ok(addr.with(Protocol::P2p(node.peer_id())).to_string())
}

/// Dials `addr` until it connects; the peer there.
pub(super) async fn reach(
    node: &Node,
    found: &mut tokio::sync::mpsc::Receiver<NodeEvent>,
    addr: &Multiaddr,
) -> Option<PeerId> {
    let connected = async {
        node.dial(addr.clone()).await.ok()?;
        while let Some(ev) = found.recv().await {
            match ev {
                NodeEvent::Discovered { peer, .. } => return Some(peer),
                NodeEvent::DialFailed { .. } => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    node.dial(addr.clone()).await.ok()?;
                }
                _ => {}
            }
        }
        None
    };
    tokio::time::timeout(STEP, connected).await.ok().flatten()
}

pub(super) fn parse_addr(addr: &str) -> Result<Multiaddr, Error> {
    addr.parse().map_err(|e: libp2p::multiaddr::Error| Error::InvalidOptions(e.to_string()))
}

/// Starts a jammer of an honest sender's handshake places: one peer id per address of
/// `addrs` (all of this host), each holding [`JAM_STREAMS_PER_PEER`] session streams on
/// which it never says hello, and opening a new one shortly after the sender drops one
/// (issue 14, item 5). Its outcome comes once every stream was opened; it jams on until
/// its runtime stops.
///
/// # Errors
/// A malformed address, and a node that cannot start.
pub async fn jammer(addrs: &[String]) -> Result<Adversary, Error> {
    let addrs = addrs.iter().map(|a| parse_addr(a)).collect::<Result<Vec<_>, _>>()?;
    let (tx, rx) = oneshot::channel();
    let (opened_tx, mut opened) = tokio::sync::mpsc::channel::<()>(64);
    let mut nodes = Vec::new();
    for addr in addrs {
        let (node, mut found) = Node::start(node_config())?;
        let opened_tx = opened_tx.clone();
        let jam = node.clone();
        tokio::spawn(async move {
            let Some(peer) = reach(&jam, &mut found, &addr).await else { return };
            for _ in 0..JAM_STREAMS_PER_PEER {
                let (node, opened_tx) = (jam.clone(), opened_tx.clone());
                tokio::spawn(async move {
                    let mut first = true;
                    loop {
                        let stream = node.control().open_stream(peer, session::PROTOCOL).await;
                        let Ok(mut stream) = stream else {
                            tokio::time::sleep(JAM_REOPEN).await;
                            continue;
                        };
                        if std::mem::take(&mut first) {
                            let _ = opened_tx.send(()).await;
                        }
                        // Silent until the sender drops it (or says "busy").
                        let mut sink = Vec::new();
                        let _ = futures::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
                        tokio::time::sleep(JAM_REOPEN).await;
                    }
                });
            }
            // The node's events are read no more, but the channel stays open.
            let _found = found;
            std::future::pending::<()>().await;
        });
        nodes.push(node);
    }
    drop(opened_tx);
    let want = nodes.len() * JAM_STREAMS_PER_PEER;
    tokio::spawn(async move {
        let mut out = Outcome::default();
        let mut n = 0;
        while n < want && tokio::time::timeout(STEP, opened.recv()).await.ok().flatten().is_some() {
            n += 1;
        }
        out.delivered = n == want;
        out.note(format!("{n} of {want} silent streams open"));
        let _ = tx.send(out);
        let _keep = nodes;
        std::future::pending::<()>().await;
    });
    Ok(Adversary { addr: None, outcome: rx })
}

/// Starts a guesser against an honest sender at `addr`: `tries` times the code `wrong`
/// (same first word as the sender's, another password), each from a fresh peer id,
/// trying again when told to and after the delay it is told (issue 14, item 6). Its
/// outcome comes once it is done: a log line `answer: …` for each answer, and the last
/// one in `told`.
///
/// # Errors
/// A malformed code or address.
pub async fn guesser(wrong: &str, addr: &str, tries: u32) -> Result<Adversary, Error> {
    let code = parse_code(wrong)?;
    let addr = parse_addr(addr)?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut out = Outcome::default();
        let mut done = 0;
        while done < tries {
            let Ok((node, mut found)) = Node::start(node_config()) else {
                out.note("a node did not start");
                break;
            };
            let Some(peer) = reach(&node, &mut found, &addr).await else {
                out.note(format!("could not reach {addr}"));
                break;
            };
            let said = loop {
                match connect(&node, peer, &code).await {
                    Err(SessionError::TryLater { secs }) => {
                        out.note(format!("answer: try again in {secs} s"));
                        tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
                    }
                    other => break other,
                }
            };
            let said = match said {
                Ok(_) => "authenticated".to_owned(),
                Err(e) => e.to_string(),
            };
            out.note(format!("answer: {said}"));
            out.told = Some(said);
            done += 1;
        }
        out.delivered = done == tries;
        let _ = tx.send(out);
        std::future::pending::<()>().await;
    });
    Ok(Adversary { addr: None, outcome: rx })
}
