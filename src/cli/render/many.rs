//! The status of a send to many receivers: each receiver's state, its lines, and the
//! status line that lists them all.

use std::time::{Duration, Instant};

use pcp::Event;

use super::{Reporter, eprint_json, lock, peer_id, stats_fields, totals};
use crate::cli::prompt::human_bytes;

/// One receiver of a `--many` send, as its status shows it.
#[derive(Debug)]
pub(super) struct Receiver {
    pub(super) id: u32,
    pub(super) state: ReceiverState,
    /// Its offer's size, once data flows.
    pub(super) total: Option<u64>,
    pub(super) bytes: u64,
    /// `--json`: when its progress was last printed.
    pub(super) shown: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReceiverState {
    Connecting,
    Sending,
    Reconnecting,
    Done,
    Dropped,
}

impl Reporter {
    /// An event of one receiver of a `--many` send: a line for what changes its
    /// course, and the status line that lists every receiver.
    pub(super) fn receiver(&self, id: u32, ev: Event) {
        let show_progress = self.track(id, &ev);
        if self.json {
            if let Some(v) = self.receiver_json(id, &ev, show_progress) {
                eprint_json(v);
            }
            return;
        }
        let line = match &ev {
            Event::Authenticating { peer } => {
                Some(format!("receiver #{id}: {} connected", peer_id(peer, self.verbose)))
            }
            Event::Dropped { reason, fell_behind: false } => {
                Some(format!("receiver #{id} dropped: {reason}"))
            }
            // The library states the fact; the flag that changes it is the binary's.
            Event::Dropped { reason, fell_behind: true } => Some(format!(
                "receiver #{id} dropped: {reason} (a longer --many-lag lets a slow receiver \
                 catch up)"
            )),
            Event::Finished(r) => {
                if self.verbose {
                    let fields: Vec<String> =
                        stats_fields(r).iter().map(|(k, v)| format!("{k}={v}")).collect();
                    self.line(&format!("pcp: stats: receiver={id} {}", fields.join(" ")));
                }
                Some(format!("receiver #{id}: done, {}", totals(r)))
            }
            other => self.notice(other).map(|m| format!("receiver #{id}: {m}")),
        };
        if let (Some(line), false) = (line, self.quiet) {
            self.line(&line);
        }
        let status = receivers_status(&lock(&self.ctx).receivers);
        self.status(&status);
    }

    /// Keeps receiver `id`'s state; whether its progress is due in `--json`.
    pub(super) fn track(&self, id: u32, ev: &Event) -> bool {
        let mut ctx = lock(&self.ctx);
        let at = match ctx.receivers.iter().position(|r| r.id == id) {
            Some(at) => at,
            None => {
                ctx.receivers.push(Receiver {
                    id,
                    state: ReceiverState::Connecting,
                    total: None,
                    bytes: 0,
                    shown: None,
                });
                ctx.receivers.len() - 1
            }
        };
        let r = &mut ctx.receivers[at];
        match ev {
            Event::Started { total, done } => {
                (r.state, r.total, r.bytes) = (ReceiverState::Sending, *total, *done);
            }
            Event::Progress { bytes } => {
                r.bytes = *bytes;
                if r.shown.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    r.shown = Some(Instant::now());
                    return true;
                }
            }
            Event::ConnectionLost => r.state = ReceiverState::Reconnecting,
            Event::Reconnected => r.state = ReceiverState::Sending,
            Event::Finished(_) => r.state = ReceiverState::Done,
            Event::Dropped { .. } => r.state = ReceiverState::Dropped,
            _ => {}
        }
        false
    }
}

/// The status line of a `--many` send: every receiver and where it stands.
pub(super) fn receivers_status(receivers: &[Receiver]) -> String {
    let each: Vec<String> = receivers
        .iter()
        .map(|r| {
            let state = match (r.state, r.total) {
                (ReceiverState::Connecting, _) => "connecting".to_owned(),
                (ReceiverState::Sending, Some(total)) if total > 0 => {
                    format!("{}%", r.bytes.saturating_mul(100) / total)
                }
                (ReceiverState::Sending, _) => human_bytes(r.bytes),
                (ReceiverState::Reconnecting, _) => "reconnecting".to_owned(),
                (ReceiverState::Done, _) => "done".to_owned(),
                (ReceiverState::Dropped, _) => "dropped".to_owned(),
            };
            format!("#{} {state}", r.id)
        })
        .collect();
    format!("receivers: {} · waiting for more…", each.join(" · "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: with `--many`, every event of a receiver carries its number in
    /// `--json`, and the status lists every receiver.
    #[test]
    fn many_receivers_are_numbered() {
        let rep = Reporter::with_terminal(false, false);
        let of = |id, event| Event::Receiver { id, event: Box::new(event) };
        rep.emit(of(1, Event::Started { total: Some(200), done: 0 }));
        rep.emit(of(1, Event::Progress { bytes: 50 }));
        rep.emit(of(2, Event::ConnectionLost));
        rep.emit(of(
            3,
            Event::Dropped { reason: "the receiver declined".into(), fell_behind: false },
        ));
        let status = receivers_status(&lock(&rep.ctx).receivers);
        assert_eq!(status, "receivers: #1 25% · #2 reconnecting · #3 dropped · waiting for more…");
        let json = Reporter::with_terminal(false, false).json(true);
        assert!(json.track(4, &Event::Progress { bytes: 1 }), "the first progress shows");
        assert!(!json.track(4, &Event::Progress { bytes: 2 }), "then once a second");
        assert!(json.track(5, &Event::Progress { bytes: 1 }), "each receiver its own");
    }
}
