//! The event loop's end of the event channel (see the invariants of the parent module):
//! events go out with `try_send`, never waiting on the caller; a discovery that finds
//! the channel full is held, at most one per peer and [`MAX_HELD_DISCOVERIES`] in all,
//! and goes out in order as the caller reads. Any other event that finds the channel
//! full is dropped with a warning.

use std::collections::{HashSet, VecDeque};

use libp2p::PeerId;
use tokio::sync::mpsc;

use super::Event;
use crate::event::Via;

/// How many discoveries may wait in the [`Outbox`] once the channel is full, one per
/// peer; past this, new peers are dropped with a warning.
const MAX_HELD_DISCOVERIES: usize = 16_384;

/// The event loop's end of the event channel: discoveries that find it full are held,
/// one per peer, and sent in order as room comes (see the module invariants).
#[derive(Debug)]
pub(super) struct Outbox {
    tx: mpsc::Sender<Event>,
    held: VecDeque<(PeerId, Via)>,
    held_peers: HashSet<PeerId>,
}

impl Outbox {
    pub(super) fn new(tx: mpsc::Sender<Event>) -> Outbox {
        Outbox { tx, held: VecDeque::new(), held_peers: HashSet::new() }
    }

    pub(super) fn emit(&mut self, ev: Event) {
        if let Event::Discovered { peer, via } = ev {
            // Behind those held already, so that discoveries keep their order.
            self.flush();
            if self.held.is_empty() {
                match self.tx.try_send(ev) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                    Err(mpsc::error::TrySendError::Full(_)) => {}
                }
            }
            self.hold(peer, via);
            return;
        }
        match self.tx.try_send(ev) {
            Ok(()) => {}
            // Nobody listens any more (the transfer is under way): nothing to report.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(e) => tracing::warn!(error = %e, "dropping a network event"),
        }
    }

    fn hold(&mut self, peer: PeerId, via: Via) {
        if self.held_peers.contains(&peer) {
            return;
        }
        if self.held.len() >= MAX_HELD_DISCOVERIES {
            tracing::warn!(%peer, "too many discoveries waiting; dropping one");
            return;
        }
        self.held_peers.insert(peer);
        self.held.push_back((peer, via));
    }

    /// Sends held discoveries while the channel has room.
    pub(super) fn flush(&mut self) {
        while let Some(&(peer, via)) = self.held.front() {
            match self.tx.try_reserve() {
                Ok(permit) => permit.send(Event::Discovered { peer, via }),
                Err(mpsc::error::TrySendError::Full(())) => return,
                Err(mpsc::error::TrySendError::Closed(())) => {}
            }
            self.held.pop_front();
            self.held_peers.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DhtStatus;
    use crate::node::EVENT_CAPACITY;

    /// Issue 14, item 5: a burst of made-up peers larger than the channel does not push
    /// out the real one that comes after them; a peer found twice waits once.
    #[test]
    fn a_flood_of_discoveries_is_coalesced_not_dropped() {
        let (tx, mut rx) = mpsc::channel(EVENT_CAPACITY);
        let mut out = Outbox::new(tx);
        let fakes: Vec<PeerId> = (0..10 * EVENT_CAPACITY).map(|_| PeerId::random()).collect();
        for &peer in fakes.iter().chain(&fakes) {
            out.emit(Event::Discovered { peer, via: Via::Mdns });
        }
        let real = PeerId::random();
        out.emit(Event::Discovered { peer: real, via: Via::Mdns });
        // Other events still go, or are dropped, as before: never held.
        out.emit(Event::Dht(DhtStatus::BootstrapFailed { total: 1 }));
        let mut seen = Vec::new();
        loop {
            while let Ok(ev) = rx.try_recv() {
                if let Event::Discovered { peer, .. } = ev {
                    seen.push(peer);
                }
            }
            if out.held.is_empty() {
                break;
            }
            out.flush();
        }
        // Each fake once (the second round found them sent or held), then the real one.
        assert_eq!(seen.len(), fakes.len() + 1 + EVENT_CAPACITY, "{}", seen.len());
        assert_eq!(seen.last(), Some(&real), "in order, the real one last");
        let unique: HashSet<&PeerId> = seen.iter().collect();
        assert_eq!(unique.len(), fakes.len() + 1);
    }
}
