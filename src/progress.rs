//! What the user sees on standard error while pcp works: the only module that knows
//! indicatif.
//!
//! The library reports [`Event`]s to a [`Reporter`]; the reporter decides what to draw.
//! Rules: the code is always shown when pcp made it up (without it the transfer cannot
//! happen), status and progress only when stderr is a terminal and `--quiet` is off,
//! and notices (warnings the user must see) unless `--quiet`. Nothing here writes to
//! stdout, which carries data.
//!
//! With `--json` ([`Reporter::json`]) every event is instead one JSON object on its own
//! line of stderr, terminal or not, `--quiet` or not: `{"event":"phase","phase":…}` for
//! phase changes (`searching`, `advertising`, `searching_dht`, `authenticating`,
//! `awaiting_accept`, `transferring`), `bootstrap`, `bootstrap_failed`, `advertised`,
//! `peer_found`, `wrong_code`, `offer`, `progress` (at most once a second), `done` with
//! the totals, `code` and `notice`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use libp2p::PeerId;
use serde_json::json;

use crate::node::{DhtStatus, Via};
use crate::term;

/// Something worth telling the user.
#[derive(Debug, Clone)]
pub enum Event {
    /// The sender is ready. `made_up`: pcp generated the code, so it must be shown; a
    /// code from `--code` / `PCP_CODE` is not repeated.
    Code {
        /// The code.
        code: String,
        /// Whether pcp generated it.
        made_up: bool,
    },
    /// Waiting for peers.
    Searching,
    /// A candidate peer was found.
    Found {
        /// The peer.
        peer: PeerId,
        /// How.
        via: Via,
    },
    /// Running the PAKE with a peer.
    Authenticating {
        /// The peer.
        peer: PeerId,
    },
    /// A receiver tried a wrong code.
    WrongCode {
        /// Who.
        peer: PeerId,
        /// Attempts left before the code is burnt.
        left: u32,
    },
    /// Waiting for the receiver to accept.
    AwaitingAccept,
    /// The receiver got an offer.
    Offer {
        /// From whom.
        peer: PeerId,
        /// What, in words (`file 'x', 1.0 MiB`).
        what: String,
        /// Its size, when known.
        size: Option<u64>,
    },
    /// Progress of the DHT rendezvous.
    Dht(DhtStatus),
    /// Data starts flowing.
    Started {
        /// Total bytes, when known.
        total: Option<u64>,
    },
    /// Bytes so far.
    Progress {
        /// Raw bytes done.
        bytes: u64,
    },
    /// Done.
    Finished {
        /// Raw bytes.
        bytes: u64,
        /// Bytes on the wire (frames).
        wire: u64,
        /// Chunks.
        chunks: u64,
        /// Time from the first to the last byte.
        elapsed: Duration,
        /// Resume accounting (`sent`, `resent`, `skipped`, `received`, `reconnects`):
        /// a `pcp: stats:` line with `--verbose`, fields of the `done` JSON event.
        stats: Vec<(&'static str, u64)>,
    },
    /// A line the user should see unless `--quiet`.
    Notice(String),
}

/// Draws events on stderr.
#[derive(Debug)]
pub struct Reporter {
    quiet: bool,
    verbose: bool,
    tty: bool,
    json: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// JSON: when progress was last printed, and the last DHT search shown (both sides
    /// repeat these often; they are shown when they change).
    last: Mutex<(Option<Instant>, Option<u64>, Option<u64>)>,
}

impl Reporter {
    /// A reporter for this process's stderr.
    #[must_use]
    pub fn new(quiet: bool) -> Reporter {
        Reporter::with_terminal(quiet, std::io::stderr().is_terminal())
    }

    /// A reporter that believes stderr is (or is not) a terminal.
    #[must_use]
    pub fn with_terminal(quiet: bool, tty: bool) -> Reporter {
        Reporter {
            quiet,
            verbose: false,
            tty,
            json: false,
            bar: Mutex::new(None),
            last: Mutex::new((None, None, None)),
        }
    }

    /// Also shows the `pcp: stats:` line of [`Event::Finished`].
    #[must_use]
    pub fn verbose(mut self, verbose: bool) -> Reporter {
        self.verbose = verbose;
        self
    }

    /// Reports as JSON lines instead (`--json`).
    #[must_use]
    pub fn json(mut self, on: bool) -> Reporter {
        self.json = on;
        self
    }

    /// The JSON form of an event, or `None` when it is not printed now.
    fn to_json(&self, ev: &Event) -> Option<serde_json::Value> {
        let phase = |p: &str| json!({"event": "phase", "phase": p});
        Some(match ev {
            Event::Code { code, made_up } => {
                if *made_up {
                    json!({"event": "code", "code": code})
                } else {
                    json!({"event": "ready"})
                }
            }
            Event::Searching => phase("searching"),
            Event::Found { peer, via } => {
                json!({"event": "peer_found", "peer": peer.to_string(), "via": via.to_string()})
            }
            Event::Authenticating { peer } => {
                json!({"event": "phase", "phase": "authenticating", "peer": peer.to_string()})
            }
            Event::WrongCode { peer, left } => {
                json!({"event": "wrong_code", "peer": peer.to_string(), "left": left})
            }
            Event::AwaitingAccept => phase("awaiting_accept"),
            Event::Offer { peer, what, size } => {
                json!({"event": "offer", "peer": peer.to_string(), "what": what, "size": size})
            }
            Event::Dht(s) => match s {
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
                    let mut last =
                        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if last.1 == Some(*current) {
                        return None;
                    }
                    last.1 = Some(*current);
                    json!({"event": "phase", "phase": "searching_dht", "current": current, "previous": previous})
                }
            },
            Event::Started { total } => {
                json!({"event": "phase", "phase": "transferring", "total": total})
            }
            Event::Progress { bytes } => {
                let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.0.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                    return None;
                }
                last.0 = Some(Instant::now());
                json!({"event": "progress", "bytes": bytes})
            }
            Event::Finished { bytes, wire, chunks, elapsed, stats } => {
                let mut done = json!({
                    "event": "done", "bytes": bytes, "wire": wire, "chunks": chunks,
                    "seconds": elapsed.as_secs_f64(),
                });
                for (k, v) in stats {
                    done[*k] = json!(v);
                }
                done
            }
            Event::Notice(m) => json!({"event": "notice", "message": m}),
        })
    }

    fn live(&self) -> bool {
        self.tty && !self.quiet
    }

    /// Prints a line without tearing a progress bar.
    fn line(&self, s: &str) {
        let bar = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match bar.as_ref() {
            Some(b) => b.println(s),
            None => {
                let _ = writeln!(std::io::stderr(), "{s}");
            }
        }
    }

    fn status(&self, s: &str) {
        if !self.live() {
            return;
        }
        let mut bar = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = bar.get_or_insert_with(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("static template is valid"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        b.set_message(s.to_owned());
    }

    /// Reports one event.
    pub fn emit(&self, ev: Event) {
        if self.json {
            if let Some(v) = self.to_json(&ev) {
                let _ = writeln!(std::io::stderr().lock(), "{v}");
            }
            if let Event::Finished { bytes, wire, chunks, elapsed, .. } = ev {
                tracing::info!(
                    bytes,
                    wire,
                    chunks,
                    secs = elapsed.as_secs_f64(),
                    "transfer finished"
                );
            }
            return;
        }
        match ev {
            Event::Code { code, made_up } => {
                if made_up {
                    self.line(&format!(
                        "Code is: {code}\nOn the other computer run:\n    pcp receive {code}"
                    ));
                } else if !self.quiet {
                    // A code the user chose is never echoed: stderr may be a log.
                    self.line("Ready: waiting for a receiver with the given code");
                }
            }
            Event::Searching => self.status("looking for the peer…"),
            Event::Found { peer, via } => self.status(&format!("found {peer} via {via}")),
            Event::Authenticating { peer } => self.status(&format!("authenticating {peer}…")),
            Event::WrongCode { peer, left } => {
                if !self.quiet {
                    self.line(&format!(
                        "a receiver ({peer}) tried a wrong code; {left} attempt(s) left"
                    ));
                }
            }
            Event::AwaitingAccept => self.status("waiting for the receiver to accept…"),
            Event::Offer { .. } => {}
            Event::Dht(s) => match s {
                DhtStatus::Bootstrap { connected, total } => self.status(&format!(
                    "joining the DHT: {connected} of {total} bootstrap node(s) connected…"
                )),
                DhtStatus::BootstrapFailed { total } => {
                    self.status("looking for the peer on the local network…");
                    if !self.quiet {
                        self.line(&format!(
                            "could not reach any of the {total} DHT bootstrap node(s); \
                             looking on the local network only"
                        ));
                    }
                }
                DhtStatus::Advertising { slot } => {
                    self.status(&format!("advertising on the DHT (slot {slot})…"));
                }
                DhtStatus::Advertised { ok: false, .. } => {
                    self.status("advertising on the DHT failed; waiting on the local network…");
                }
                DhtStatus::Advertised { ok: true, .. } => {
                    self.status("advertised on the DHT; waiting for the receiver…");
                }
                DhtStatus::Searching { current, previous } => {
                    let mut last =
                        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if last.2 != Some(current) {
                        last.2 = Some(current);
                        drop(last);
                        self.status(&format!(
                            "searching the DHT (slots {current} and {previous}) and the local network…"
                        ));
                    }
                }
            },
            Event::Started { total } => {
                if !self.live() {
                    return;
                }
                let mut bar = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(old) = bar.take() {
                    old.finish_and_clear();
                }
                let (b, template) = match total {
                    Some(n) => (
                        ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
                        "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    ),
                    None => (
                        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                        "{spinner} {bytes} {bytes_per_sec} {elapsed}",
                    ),
                };
                b.set_style(ProgressStyle::with_template(template).expect("static template"));
                *bar = Some(b);
            }
            Event::Progress { bytes } => {
                if let Some(b) =
                    self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref()
                {
                    b.set_position(bytes);
                }
            }
            Event::Finished { bytes, wire, chunks, elapsed, stats } => {
                if self.verbose {
                    let fields: Vec<String> =
                        stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    self.line(&format!("pcp: stats: {}", fields.join(" ")));
                }
                if let Some(b) =
                    self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
                {
                    b.finish_and_clear();
                }
                let secs = elapsed.as_secs_f64().max(1e-6);
                tracing::info!(bytes, wire, chunks, secs, "transfer finished");
                if self.live() {
                    self.line(&format!(
                        "done: {} in {:.1} s ({}/s), {} on the wire",
                        term::bytes(bytes),
                        secs,
                        term::bytes((bytes as f64 / secs) as u64),
                        term::bytes(wire)
                    ));
                }
            }
            Event::Notice(s) => {
                if !self.quiet {
                    self.line(&s);
                }
            }
        }
    }

    /// Clears any bar (before an error is printed).
    pub fn clear(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_done_event_carries_the_resume_accounting() {
        let rep = Reporter::with_terminal(false, false).json(true);
        let done = rep
            .to_json(&Event::Finished {
                bytes: 100,
                wire: 120,
                chunks: 2,
                elapsed: Duration::from_millis(1500),
                stats: vec![("sent", 90), ("resent", 10), ("skipped", 20), ("reconnects", 1)],
            })
            .expect("done is always printed");
        assert_eq!(done["event"], "done");
        assert_eq!(done["bytes"], 100);
        assert_eq!(done["sent"], 90);
        assert_eq!(done["resent"], 10);
        assert_eq!(done["skipped"], 20);
        assert_eq!(done["reconnects"], 1);
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
