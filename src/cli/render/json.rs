//! The `--json` form of pcp's events: one object per line of stderr, every string in
//! it cleaned as the terminal's lines are.
//!
//! With `--json` ([`Reporter::json`](super::Reporter::json)) every event is one JSON
//! object on its own line of stderr, terminal or not, `--quiet` or not:
//! `{"event":"phase","phase":…}` for phase changes (`searching`, `advertising`,
//! `searching_dht`, `authenticating`, `awaiting_accept`, `transferring`), `sending`
//! (the sender's `kind`, `name` and `items`, before its code), `bootstrap`,
//! `bootstrap_failed`, `advertised`, `listening`, `peer_found`, `wrong_code` (`peer`,
//! `from`: the address or network it came from, `from_there`: how many from there so
//! far, `left`: how many more the sender takes before the code is burnt), `offer`
//! (`name`, `kind` — `file`, `folder`, `stream` or `text` —, `size`, `entries`: a
//! folder's top-level names, `files`: how many entries it holds, and `what` in words),
//! `progress` (at most once a second), `done` with the totals, `code` and `notice`; a
//! send to many receivers adds `dropped` (`message`, `fell_behind`) and a `receiver`
//! number on each of a receiver's events. A failure is the last event: `error`, with
//! `kind`, `message`, `exit` and perhaps `hint` ([`error_json`]; `main` prints it
//! instead of the `pcp: error:` lines).
//!
//! `--json` strings are cleaned by the same rule as the terminal's lines, not merely
//! JSON-escaped: JSON escapes control characters (`\u001b`), but a script that prints
//! a `message` would pass them on decoded, and JSON leaves bidi and invisible
//! characters as they are. So a JSON field meant for people says exactly what the
//! terminal would have said.

use std::io::Write;
use std::time::{Duration, Instant};

use pcp::event::DhtStatus;
use pcp::{Event, OfferKind, Report, printable};
use serde_json::json;

use super::{Reporter, lock, stats_fields};
use crate::cli::prompt::{describe_short, sanitize};

impl Reporter {
    /// The JSON form of an event of receiver `id` of a `--many` send (its progress
    /// only when `show_progress`), which carries the receiver's number.
    pub(super) fn receiver_json(
        &self,
        id: u32,
        ev: &Event,
        show_progress: bool,
    ) -> Option<serde_json::Value> {
        let mut v = match ev {
            Event::Dropped { reason, fell_behind } => {
                json!({"event": "dropped", "message": reason, "fell_behind": fell_behind})
            }
            Event::Progress { bytes } if show_progress => {
                json!({"event": "progress", "bytes": bytes})
            }
            Event::Progress { .. } => return None,
            other => self.to_json(other)?,
        };
        v["receiver"] = json!(id);
        Some(v)
    }

    /// The JSON form of an event, or `None` when it is not printed now.
    pub(super) fn to_json(&self, ev: &Event) -> Option<serde_json::Value> {
        let phase = |p: &str| json!({"event": "phase", "phase": p});
        if let Some(m) = self.notice(ev) {
            if let Event::Dht(DhtStatus::BootstrapFailed { total }) = ev {
                return Some(json!({"event": "bootstrap_failed", "total": total}));
            }
            return Some(json!({"event": "notice", "message": m}));
        }
        Some(match ev {
            Event::Sending { kind, name, items } => json!({
                "event": "sending", "kind": kind_name(*kind), "name": sanitize(name), "items": items,
            }),
            Event::Code { code, made_up: true } => json!({"event": "code", "code": code}),
            Event::Code { made_up: false, .. } => json!({"event": "ready"}),
            Event::Listening { addr } => {
                let mut ctx = lock(&self.ctx);
                if ctx.seen.contains(addr) {
                    return None;
                }
                ctx.seen.push(addr.clone());
                json!({"event": "listening", "addr": addr.to_string()})
            }
            Event::Searching => phase("searching"),
            Event::Found { peer, via } => {
                json!({"event": "peer_found", "peer": peer.to_string(), "via": via.to_string()})
            }
            Event::Authenticating { peer } => {
                json!({"event": "phase", "phase": "authenticating", "peer": peer.to_string()})
            }
            // Said with where it came from, by the FailedAttempt that follows.
            Event::WrongCode { .. } => return None,
            Event::FailedAttempt { peer, from, from_there, left } => json!({
                "event": "wrong_code", "peer": peer.to_string(), "from": from.to_string(),
                "from_there": from_there, "left": left,
            }),
            Event::AwaitingAccept => phase("awaiting_accept"),
            Event::Offer(o) => json!({
                "event": "offer", "peer": o.peer.to_string(), "what": describe_short(o),
                "name": sanitize(&o.name),
                "kind": kind_name(o.kind),
                "size": o.size,
                "entries": o.entries.iter().map(|e| sanitize(e)).collect::<Vec<_>>(),
                "files": o.files,
            }),
            Event::Dht(s) => self.dht_json(s)?,
            Event::Started { total, done } => {
                json!({"event": "phase", "phase": "transferring", "total": total, "done": done})
            }
            Event::Progress { bytes } => {
                let mut last = lock(&self.last);
                if last.0.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                    return None;
                }
                last.0 = Some(Instant::now());
                json!({"event": "progress", "bytes": bytes})
            }
            Event::Finished(r) => done_json(r),
            _ => return None,
        })
    }

    fn dht_json(&self, s: &DhtStatus) -> Option<serde_json::Value> {
        Some(match s {
            DhtStatus::Bootstrap { connected, total } => {
                json!({"event": "bootstrap", "connected": connected, "total": total})
            }
            DhtStatus::BootstrapFailed { total } => {
                json!({"event": "bootstrap_failed", "total": total})
            }
            DhtStatus::Advertising { slot } => {
                json!({"event": "phase", "phase": "advertising", "slot": slot})
            }
            DhtStatus::Advertised { slot, ok } => {
                json!({"event": "advertised", "slot": slot, "ok": ok})
            }
            DhtStatus::Searching { current, previous } => {
                let mut last = lock(&self.last);
                if last.1 == Some(*current) {
                    return None;
                }
                last.1 = Some(*current);
                json!({"event": "phase", "phase": "searching_dht", "current": current, "previous": previous})
            }
        })
    }
}

/// An offer's kind, as `--json` names it.
fn kind_name(kind: OfferKind) -> &'static str {
    match kind {
        OfferKind::Stream => "stream",
        OfferKind::File => "file",
        OfferKind::Folder => "folder",
        OfferKind::Text => "text",
    }
}

/// Writes one JSON event on its own line of stderr, every string value in it cleaned
/// by [`pcp::printable`] first (the keys are pcp's own).
pub(crate) fn eprint_json(event: serde_json::Value) {
    write_json(&mut std::io::stderr().lock(), event);
}

/// [`eprint_json`] to any writer.
pub(crate) fn write_json(w: &mut impl Write, mut event: serde_json::Value) {
    clean_json(&mut event);
    let _ = writeln!(w, "{event}");
}

/// Every string value in `v`, at any depth, through [`pcp::printable`].
fn clean_json(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) => *s = printable(s),
        Value::Array(items) => items.iter_mut().for_each(clean_json),
        Value::Object(fields) => fields.values_mut().for_each(clean_json),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The JSON `error` event that ends a run: `{"event":"error","kind":…,"message":…,
/// "exit":N}`, and `hint` when there is one. `kind` is `pcp::ErrorKind::as_str` (or
/// `usage` for a command line clap refused); `exit` is the process's exit status.
pub(crate) fn error_json(
    kind: &str,
    message: &str,
    hint: Option<&str>,
    exit: u8,
) -> serde_json::Value {
    let mut v = json!({"event": "error", "kind": kind, "message": message, "exit": exit});
    if let Some(hint) = hint {
        v["hint"] = json!(hint);
    }
    v
}

/// The `done` JSON event: totals and the side's resume accounting.
fn done_json(r: &Report) -> serde_json::Value {
    let mut done = json!({
        "event": "done", "bytes": r.bytes, "wire": r.wire, "chunks": r.chunks,
        "seconds": r.elapsed.as_secs_f64(),
        "transport": r.transport.map(pcp::Transport::as_str),
    });
    for (k, v) in stats_fields(r) {
        done[k] = json!(v);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcp::Role;

    #[test]
    fn the_done_event_carries_the_resume_accounting() {
        let rep = Reporter::with_terminal(false, false).json(true);
        let stats = pcp::Stats { sent: 90, resent: 10, skipped: 20, received: 0, reconnects: 1 };
        let done = rep
            .to_json(&Event::Finished(Report {
                role: Role::Sender,
                bytes: 100,
                wire: 120,
                chunks: 2,
                elapsed: Duration::from_millis(1500),
                transport: Some(pcp::Transport::Quic),
                stats,
                written: Vec::new(),
            }))
            .expect("done is always printed");
        assert_eq!(done["event"], "done");
        assert_eq!(done["bytes"], 100);
        assert_eq!(done["sent"], 90);
        assert_eq!(done["resent"], 10);
        assert_eq!(done["skipped"], 20);
        assert_eq!(done["reconnects"], 1);
        assert_eq!(done["transport"], "quic");
    }

    #[test]
    fn the_offer_event_has_its_parts_in_fields() {
        let rep = Reporter::with_terminal(false, false).json(true);
        let offer = rep
            .to_json(&Event::Offer(pcp::OfferInfo {
                kind: pcp::OfferKind::Folder,
                name: "2 items".into(),
                size: None,
                entries: vec!["a".into(), "b\x1b".into()],
                kinds: vec![pcp::EntryKind::Folder, pcp::EntryKind::File],
                files: Some(7),
                peer: libp2p::PeerId::random(),
                addr: None,
            }))
            .expect("printed");
        assert_eq!(offer["kind"], "folder");
        assert_eq!(offer["name"], "2 items");
        assert!(offer["size"].is_null());
        assert_eq!(offer["entries"], json!(["a", "b?"]));
        assert_eq!(offer["files"], 7);
    }

    /// Issue 14, item 4: `--json` strings meant for people carry what the terminal
    /// would show: no escape, bidi or invisible character, even JSON-escaped.
    #[test]
    fn json_events_are_cleaned_at_every_depth() {
        let mut out = Vec::new();
        let event = json!({"event": "notice", "message": "a\u{202E}b\x1b[2J",
                           "entries": ["\x07x", {"deep": "\u{200B}y"}], "size": 3});
        write_json(&mut out, event);
        let line = String::from_utf8(out).expect("UTF-8");
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        assert_eq!(
            v,
            json!({"event": "notice", "message": "a?b?[2J",
                   "entries": ["?x", {"deep": "?y"}], "size": 3})
        );
    }

    #[test]
    fn the_error_event() {
        let e = error_json("wrong_code", "the code was wrong", Some("check it"), 3);
        assert_eq!(
            e,
            json!({"event": "error", "kind": "wrong_code", "message": "the code was wrong",
                   "exit": 3, "hint": "check it"})
        );
        assert!(error_json("usage", "x", None, 2).get("hint").is_none());
    }

    #[test]
    fn a_given_code_is_not_echoed_in_json() {
        let rep = Reporter::with_terminal(false, false).json(true);
        let ready = rep
            .to_json(&Event::Code { code: "bubble-enemy-result-increase".into(), made_up: false })
            .expect("printed");
        assert!(!ready.to_string().contains("bubble"), "{ready}");
    }
}
