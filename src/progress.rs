//! What the user sees on standard error while pcp works: the only module that knows
//! indicatif.
//!
//! The library reports [`Event`]s to a [`Reporter`]; the reporter decides what to draw.
//! Rules: the code is always shown when pcp made it up (without it the transfer cannot
//! happen), status and progress only when stderr is a terminal and `--quiet` is off,
//! and notices (warnings the user must see) unless `--quiet`. Nothing here writes to
//! stdout, which carries data.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use libp2p::PeerId;

use crate::node::Via;
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
    },
    /// A line the user should see unless `--quiet`.
    Notice(String),
    /// Transfer statistics (`key=value …`), shown with `--verbose`.
    Stats(String),
}

/// Draws events on stderr.
#[derive(Debug)]
pub struct Reporter {
    quiet: bool,
    verbose: bool,
    tty: bool,
    bar: Mutex<Option<ProgressBar>>,
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
        Reporter { quiet, verbose: false, tty, bar: Mutex::new(None) }
    }

    /// Also shows [`Event::Stats`].
    #[must_use]
    pub fn verbose(mut self, verbose: bool) -> Reporter {
        self.verbose = verbose;
        self
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
            Event::Searching => self.status("looking for the peer on the local network…"),
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
            Event::Finished { bytes, wire, chunks, elapsed } => {
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
            Event::Stats(s) => {
                if self.verbose {
                    self.line(&format!("pcp: stats: {s}"));
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
