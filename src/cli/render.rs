//! What the user sees on standard error while pcp works: the only module that knows
//! indicatif, and the one that writes `--json`.
//!
//! The library reports [`Event`]s; the binary hands them to a [`Reporter`], which
//! decides what to draw. Strings from the peer are sanitized here before they are shown,
//! and peer names [`pcp::quote`]d (`'name'`, `\'` and `\\` inside), so that none reads
//! as two.
//!
//! # The printing boundary
//!
//! Every line that reaches the terminal passes through [`pcp::printable`] (see
//! `pcp::term` for the rule), whatever it holds and wherever it came from: text lines
//! through [`eprint_line`], the progress bar's printed lines and status messages in
//! [`Reporter::line`] and [`Reporter::status`], `--json` events through [`eprint_json`],
//! which cleans every string in the event, and the consent question in
//! `prompt::confirm`. Nothing else in the binary writes to stderr or `/dev/tty` (a unit
//! test in `main.rs` checks the sources). A line break inside a line is hidden too: each
//! line the binary means is printed on its own.
//!
//! `--json` strings are cleaned by the same rule (see [`json`]).
//! Rules: the code is always shown when pcp made it up (without it the transfer cannot
//! happen), status and progress only when stderr is a terminal and `--quiet` is off,
//! and notices (warnings the user must see) unless `--quiet`. A sender with neither
//! mDNS nor the DHT also prints, unless `--quiet`, each listen address another host can
//! dial, once, for the receiver's `--peer` (this-host-only ones when there is no other).
//! Nothing here writes to stdout, which carries data.
//!
//! With `--json` ([`Reporter::json`]) every event is instead one JSON object on its own
//! line of stderr (see [`json`]).

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use libp2p::Multiaddr;
use pcp::event::DhtStatus;
use pcp::{Event, OfferKind, Report, Role};
use serde_json::json;

mod announce;
mod json;
mod many;
mod words;

pub(crate) use json::{eprint_json, error_json, write_json};
use many::{Receiver, ReceiverState};
use words::{
    bar_style, failed_attempt_line, listening_line, offline_line, reachable_from_elsewhere,
    sending_label, stats_fields, stdout_notice, totals,
};

use super::prompt::{human_bytes, peer_id, sanitize};
use pcp::{printable, quote};

/// Draws events on stderr.
#[derive(Debug)]
pub(crate) struct Reporter {
    quiet: bool,
    verbose: bool,
    tty: bool,
    json: bool,
    /// `pcp node`: listen addresses go to stdout, and a lone node is no warning.
    node: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// JSON: when progress was last printed, and the last DHT search shown (both sides
    /// repeat these often; they are shown when they change).
    last: Mutex<(Option<Instant>, Option<u64>, Option<u64>)>,
    /// Since when this side has been looking for its peer, shown after a status that
    /// says so (`looking for the peer… 12 s`); `None` once it is found.
    since: std::sync::Arc<Mutex<Option<Instant>>>,
    /// Whether the status shown is one of looking for the peer.
    looking: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// What the binary knows that the events do not say, and what was said once.
    ctx: Mutex<Context>,
    /// This reporter, for the timers it starts ([`Reporter::shared`]); empty in tests.
    me: Weak<Reporter>,
    /// The timers running: stopped when the run ends or the screen is cleared.
    timers: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// The reporter's memory beyond single events.
#[derive(Debug, Default)]
struct Context {
    /// Print the addresses a receiver can give to `--peer`: neither mDNS nor the DHT
    /// is on, so they are the only way to this sender.
    announce: bool,
    /// Listen addresses reported so far (the engine may report one twice).
    seen: Vec<Multiaddr>,
    /// Whether an address reachable from another host was printed.
    shown_reachable: bool,
    /// Held addresses were flushed: from now on print them as they come.
    flushed: bool,
    /// The receiver writes the data to standard output, which is not a terminal.
    to_stdout: bool,
    /// What the receiver was offered.
    offer_kind: Option<OfferKind>,
    /// What the sender sends, in words for its last line (`'report.pdf'`, `stdin`).
    sending: Option<String>,
    /// The timer that flushes held addresses was started.
    hold_timer: bool,
    /// The timer of the still-looking hint was started.
    looking_timer: bool,
    /// The code, and whether pcp made it up, once known while announcing: the
    /// receiver's command (`pcp receive --peer ADDR CODE`) waits for an address.
    code: Option<(String, bool)>,
    /// The plain `pcp receive CODE` was printed (discovery was on at the time).
    plain_command: bool,
    /// The `pcp receive --peer ADDR CODE` command was printed.
    peer_command: bool,
    /// Addresses printed, in the command or on a line of their own.
    printed: Vec<Multiaddr>,
    /// How this side looks for its peer, when the binary said so.
    discovery: Option<Discovery>,
    /// The DHT's bootstrap failure was said (once per run: each reconnection starts
    /// a node of its own, which fails again).
    said_offline: bool,
    /// The receiver was offered something: the sender was found.
    offered: bool,
    /// The progress bar is drawn (not the status spinner).
    transferring: bool,
    /// `--many`: every receiver so far, in the order they came.
    receivers: Vec<Receiver>,
}

/// How one side looks for its peer: what makes the DHT's failure, and the hint of a
/// receiver that finds nothing, true.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Discovery {
    /// Which side this is.
    pub(crate) role: Role,
    /// mDNS is on.
    pub(crate) mdns: bool,
    /// The DHT is on.
    pub(crate) dht: bool,
    /// The receiver dials `--peer` addresses.
    pub(crate) peers: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Reporter {
    /// A reporter for this process's stderr.
    #[must_use]
    pub(crate) fn new(quiet: bool) -> Reporter {
        Reporter::with_terminal(quiet, std::io::stderr().is_terminal())
    }

    /// A reporter that believes stderr is (or is not) a terminal.
    #[must_use]
    pub(crate) fn with_terminal(quiet: bool, tty: bool) -> Reporter {
        Reporter {
            quiet,
            verbose: false,
            tty,
            json: false,
            node: false,
            bar: Mutex::new(None),
            last: Mutex::new((None, None, None)),
            since: std::sync::Arc::default(),
            looking: std::sync::Arc::default(),
            ctx: Mutex::new(Context::default()),
            me: Weak::new(),
            timers: Mutex::new(Vec::new()),
        }
    }

    /// How this side looks for its peer (see [`Discovery`]).
    pub(crate) fn discovery(&self, d: Discovery) {
        lock(&self.ctx).discovery = Some(d);
    }

    /// The receiver writes what it gets to standard output: say so once the data
    /// starts (unless `--quiet`), as `2>&1 | tee log` would otherwise be a surprise.
    pub(crate) fn data_to_stdout(&self) {
        lock(&self.ctx).to_stdout = true;
    }

    /// Says where the bytes go, when they go to standard output.
    fn tell_where_the_bytes_go(&self) {
        let kind = {
            let mut ctx = lock(&self.ctx);
            if !std::mem::take(&mut ctx.to_stdout) {
                return;
            }
            ctx.offer_kind
        };
        if let Some(kind) = kind {
            self.emit_line(stdout_notice(kind));
        }
    }

    /// Also shows the `pcp: stats:` line of [`Event::Finished`].
    #[must_use]
    pub(crate) fn verbose(mut self, verbose: bool) -> Reporter {
        self.verbose = verbose;
        self
    }

    /// Reports as JSON lines instead (`--json`).
    #[must_use]
    pub(crate) fn json(mut self, on: bool) -> Reporter {
        self.json = on;
        self
    }

    /// Whether `-v` was given.
    pub(crate) fn is_verbose(&self) -> bool {
        self.verbose
    }

    /// Reports for `pcp node`.
    #[must_use]
    pub(crate) fn node(mut self) -> Reporter {
        self.node = true;
        self
    }

    /// The line a notice-like event prints (unless `--quiet`), also the `message` of its
    /// JSON `notice`.
    fn notice(&self, ev: &Event) -> Option<String> {
        Some(match ev {
            Event::ConnectionLost => "connection lost, reconnecting…".into(),
            Event::Reconnected => "reconnected".into(),
            Event::Refused { reason } => format!(
                "the receiver refused: {}; still waiting for it to try again with the same code",
                sanitize(reason)
            ),
            Event::ResumingEarlier => "resuming a transfer begun earlier".into(),
            Event::SenderBusy { tries, max } => {
                format!("the sender is busy with another receiver; retrying ({tries}/{max})")
            }
            Event::TryLater { secs } => format!(
                "the sender asks to try again in {secs} s (wrong codes were tried from this \
                 network); retrying then"
            ),
            Event::OtherSenders { count } => format!(
                "found {count} sender{} on the network, but not for this code: check the \
                 first word; still looking",
                if *count == 1 { "" } else { "s" }
            ),
            Event::Resuming { bytes } => {
                format!("resuming: {} already received", human_bytes(*bytes))
            }
            Event::Written { path } => format!("wrote {}", quote(&path.display().to_string())),
            Event::Kept { path, bytes } => format!(
                "kept {} in {}: run the same pcp receive again (any code), against a rerun \
                 pcp send of the same data, to resume",
                human_bytes(*bytes),
                quote(&path.display().to_string())
            ),
            Event::Dht(DhtStatus::BootstrapFailed { total }) if self.node => {
                format!("could not reach any of the {total} bootstrap node(s); serving alone")
            }
            Event::Dht(DhtStatus::BootstrapFailed { total }) => {
                let mut ctx = lock(&self.ctx);
                if std::mem::replace(&mut ctx.said_offline, true) {
                    return None;
                }
                offline_line(*total, ctx.discovery)
            }
            _ => return None,
        })
    }

    fn live(&self) -> bool {
        self.tty && !self.quiet
    }

    /// A notice from the binary itself: a line unless `--quiet`, or a JSON `notice`.
    pub(crate) fn emit_line(&self, s: &str) {
        if self.json {
            eprint_json(json!({"event": "notice", "message": s}));
        } else if !self.quiet {
            self.line(s);
        }
    }

    /// Prints one line, cleaned ([`pcp::printable`]), without tearing a progress bar.
    fn line(&self, s: &str) {
        let bar = lock(&self.bar);
        match bar.as_ref() {
            Some(b) => b.println(printable(s)),
            None => eprint_line(s),
        }
    }

    /// A status line: the spinner and `s`.
    fn status(&self, s: &str) {
        self.looking.store(false, std::sync::atomic::Ordering::Relaxed);
        self.draw_status(s);
    }

    /// A status line that says this side is looking for its peer: the time it has
    /// been looking follows (`looking for the peer… 12 s`), from the first such status
    /// until the peer is found.
    fn looking(&self, s: &str) {
        lock(&self.since).get_or_insert_with(Instant::now);
        self.looking.store(true, std::sync::atomic::Ordering::Relaxed);
        self.draw_status(s);
    }

    fn draw_status(&self, s: &str) {
        if !self.live() {
            return;
        }
        let mut bar = lock(&self.bar);
        let b = bar.get_or_insert_with(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let (since, looking) = (self.since.clone(), self.looking.clone());
            let style = ProgressStyle::with_template("{spinner} {msg}{waited}")
                .expect("static template is valid")
                .with_key(
                    "waited",
                    move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let since = *lock(&since);
                        if let (Some(t), true) =
                            (since, looking.load(std::sync::atomic::Ordering::Relaxed))
                        {
                            let waited = pcp::event::duration_words(t.elapsed());
                            let _ = write!(w, " {}", printable(&waited));
                        }
                    },
                );
            b.set_style(style);
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        b.set_message(printable(s));
    }

    /// The peer was found (or the data flows): no more time spent looking.
    fn found(&self) {
        *lock(&self.since) = None;
        self.looking.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// The connection was lost: the bar keeps its position, and shows how long ago the
    /// connection was lost where it showed a rate and an ETA, which would be stale.
    fn lost(&self) {
        if !lock(&self.ctx).transferring {
            return;
        }
        if let Some(b) = lock(&self.bar).as_ref() {
            let at = Instant::now();
            let template = match b.length() {
                Some(_) => "{bar:30} {percent:>3}% {bytes}/{total_bytes} reconnecting… {lost}",
                None => "{spinner} {bytes} reconnecting… {lost}",
            };
            let style =
                ProgressStyle::with_template(template).expect("static template is valid").with_key(
                    "lost",
                    move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let ago = pcp::event::duration_words(at.elapsed());
                        let _ = write!(w, "{}", printable(&format!("(lost {ago} ago)")));
                    },
                );
            b.set_style(style);
            b.enable_steady_tick(Duration::from_secs(1));
        }
    }

    /// The connection is back: the bar shows the rate and the ETA again, both of this
    /// connection (the seconds without one would hold the rate down, and stretch the
    /// ETA, long after the link is back).
    fn back(&self) {
        if let Some(b) = lock(&self.bar).as_ref() {
            if lock(&self.ctx).transferring {
                b.disable_steady_tick();
                b.set_style(bar_style(b.length()));
            }
            b.reset_eta();
        }
    }

    /// Reports one event.
    pub(crate) fn emit(&self, ev: Event) {
        if let Event::Receiver { id, event } = ev {
            self.receiver(id, *event);
            return;
        }
        match &ev {
            Event::Offer(o) => {
                let mut ctx = lock(&self.ctx);
                ctx.offer_kind = Some(o.kind);
                ctx.offered = true;
                drop(ctx);
                self.found();
            }
            Event::AwaitingAccept => self.found(),
            Event::Started { .. } => {
                self.found();
                self.tell_where_the_bytes_go();
            }
            Event::ConnectionLost => self.lost(),
            Event::Reconnected => self.back(),
            _ => {}
        }
        if let (true, Event::Listening { addr }) = (self.node, &ev) {
            // A node's addresses are its output: stdout, flushed at once.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{addr}").and_then(|()| out.flush());
            return;
        }
        self.start_timers(&ev);
        if let Event::Sending { kind, name, items } = &ev {
            // For the line that ends a transfer: `sent 'report.pdf', 2.9 MiB in 1.2 s`.
            lock(&self.ctx).sending = Some(sending_label(*kind, name, *items));
        }
        if self.json {
            if let Some(v) = self.to_json(&ev) {
                eprint_json(v);
            }
            return;
        }
        if let Event::Dht(DhtStatus::BootstrapFailed { .. }) = ev {
            self.offline();
        }
        if let Some(m) = self.notice(&ev) {
            if !self.quiet {
                self.line(&m);
            }
            return;
        }
        match ev {
            Event::Code { code, made_up } => self.code(code, made_up),
            Event::Listening { addr } => {
                tracing::info!(%addr, "listening");
                self.listening(addr);
            }
            Event::Searching => self.looking("looking for the peer…"),
            Event::Found { peer, via } => {
                self.status(&format!("found {} via {via}", peer_id(&peer, self.verbose)));
            }
            Event::Authenticating { peer } => {
                self.status(&format!("authenticating {}…", peer_id(&peer, self.verbose)));
            }
            Event::FailedAttempt { peer, from, from_there, left } if !self.quiet => {
                self.line(&failed_attempt_line(&peer, &from, from_there, left, self.verbose));
            }
            Event::AwaitingAccept => self.status("waiting for the receiver to accept…"),
            Event::Dht(s) => self.dht(s),
            Event::Started { total, done } => self.start_bar(total, done),
            Event::Progress { bytes } => {
                if let Some(b) = lock(&self.bar).as_ref() {
                    b.set_position(bytes);
                }
            }
            Event::Finished(r) => self.finished(&r),
            _ => {}
        }
    }

    /// The DHT could not be joined: the status says where this side still looks, and
    /// a sender with mDNS off, which a receiver can now reach only with `--peer`,
    /// prints the command with its address as one with neither method does.
    fn offline(&self) {
        let d = lock(&self.ctx).discovery;
        let status = match d {
            Some(Discovery { mdns: false, peers: true, .. }) => "trying the --peer address(es)…",
            Some(Discovery { mdns: false, role: Role::Sender, .. }) => {
                "waiting for a receiver to dial this computer…"
            }
            Some(Discovery { mdns: false, .. }) => "looking for the peer…",
            _ => "looking for the peer on the local network…",
        };
        self.looking(status);
        if let Some(Discovery { mdns: false, role: Role::Sender, .. }) = d {
            {
                let mut ctx = lock(&self.ctx);
                ctx.announce = true;
                // The node has been up for as long as the bootstrap dials took.
                ctx.flushed = true;
            }
            self.announce_step();
        }
    }

    fn dht(&self, s: DhtStatus) {
        match s {
            DhtStatus::Bootstrap { connected, total } => self.looking(&format!(
                "joining the DHT: {connected} of {total} bootstrap node(s) connected…"
            )),
            DhtStatus::BootstrapFailed { .. } => {}
            DhtStatus::Advertising { slot } => {
                self.looking(&format!("advertising on the DHT (slot {slot})…"));
            }
            DhtStatus::Advertised { ok: false, .. } => {
                self.looking("advertising on the DHT failed; waiting on the local network…");
            }
            DhtStatus::Advertised { ok: true, .. } => {
                self.looking("advertised on the DHT; waiting for the receiver…");
            }
            DhtStatus::Searching { current, previous } => {
                let mut last = lock(&self.last);
                if last.2 != Some(current) {
                    last.2 = Some(current);
                    drop(last);
                    self.looking(&format!(
                        "searching the DHT (slots {current} and {previous}) and the local network…"
                    ));
                }
            }
        }
    }

    /// The progress bar, from `done` bytes on: what an earlier run moved counts for the
    /// position but not for the rate or the ETA.
    fn start_bar(&self, total: Option<u64>, done: u64) {
        if !self.live() {
            return;
        }
        let mut bar = lock(&self.bar);
        if let Some(old) = bar.take() {
            old.finish_and_clear();
        }
        // Hidden until the rate estimator knows `done`: indicatif takes the rate from the
        // steps between two ticks, so the tick that books `done` rates it as moved in
        // an instant (a resumed run drew 684 GiB/s on a 2 MB/s link), and reset_eta only
        // forgets that rate once it may have been drawn.
        let b = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
        b.set_style(bar_style(total));
        b.set_position(done);
        b.tick();
        b.reset_eta();
        b.set_draw_target(ProgressDrawTarget::stderr());
        *bar = Some(b);
        lock(&self.ctx).transferring = true;
    }

    fn finished(&self, r: &Report) {
        if self.verbose {
            let fields: Vec<String> =
                stats_fields(r).iter().map(|(k, v)| format!("{k}={v}")).collect();
            let transport = r.transport.map_or("unknown", pcp::Transport::as_str);
            self.line(&format!("pcp: stats: {} transport={transport}", fields.join(" ")));
        }
        self.clear();
        tracing::info!(
            bytes = r.bytes,
            wire = r.wire,
            chunks = r.chunks,
            secs = r.elapsed.as_secs_f64(),
            "transfer finished"
        );
        let totals = totals(r);
        match r.role {
            // A sender's stderr is often a log, where this line is all that says it
            // worked: shown terminal or not.
            Role::Sender if !self.quiet => {
                let ctx = lock(&self.ctx);
                let what = ctx.sending.clone().unwrap_or_else(|| "the data".into());
                let done = ctx.receivers.iter().filter(|r| r.state == ReceiverState::Done);
                let to = match (ctx.receivers.is_empty(), done.count()) {
                    (true, _) => String::new(),
                    (false, 1) => " to 1 receiver".into(),
                    (false, n) => format!(" to {n} receivers"),
                };
                drop(ctx);
                self.line(&format!("sent {what}{to}, {totals}"));
            }
            Role::Receiver if self.live() => self.line(&format!("done: {totals}")),
            _ => {}
        }
    }

    /// Runs `f` (a write to the terminal) with any bar put aside, so neither tears the
    /// other.
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match lock(&self.bar).as_ref() {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// Clears any bar (before an error is printed or a question asked).
    pub(crate) fn clear(&self) {
        self.stop_timers();
        if let Some(b) = lock(&self.bar).take() {
            b.finish_and_clear();
        }
    }
}

/// Writes one line on stderr, cleaned by [`pcp::printable`]: with [`eprint_json`], the
/// only way the binary writes to stderr (indicatif's own drawing aside).
pub(crate) fn eprint_line(line: &str) {
    write_line(&mut std::io::stderr().lock(), line);
}

/// [`eprint_line`] to any writer.
pub(crate) fn write_line(w: &mut impl Write, line: &str) {
    let _ = writeln!(w, "{}", printable(line));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::prompt::describe_short;

    /// Issue 14, item 4: a written path is one quoted name.
    #[test]
    fn written_paths_are_quoted() {
        let rep = Reporter::with_terminal(false, false);
        let line = rep.notice(&Event::Written { path: "out/a', 'b".into() }).expect("a notice");
        assert_eq!(line, r"wrote 'out/a\', \'b'");
    }

    /// Issue 14, item 6: each wrong code is shown with where it came from, once.
    #[test]
    fn a_wrong_code_is_shown_with_its_address() {
        let peer = libp2p::PeerId::random();
        let from = pcp::Origin::Ipv4("198.18.0.2".parse().expect("ip"));
        let line = failed_attempt_line(&peer, &from, 2, 254, false);
        assert!(line.starts_with("a wrong code was tried from 198.18.0.2 by "), "{line}");
        assert!(line.ends_with("(2 from there so far; the code burns after 254 more)"), "{line}");
        let rep = Reporter::with_terminal(false, false).json(true);
        assert!(rep.to_json(&Event::WrongCode { peer, left: 254 }).is_none(), "said once");
        let ev = Event::FailedAttempt { peer, from, from_there: 2, left: 254 };
        let v = rep.to_json(&ev).expect("printed");
        assert_eq!(v["event"], "wrong_code");
        assert_eq!((v["from"].as_str(), v["from_there"].as_u64()), (Some("198.18.0.2"), Some(2)));
        assert_eq!(v["left"], 254);
    }

    /// Issue 15, item 9: said once per run (each reconnection starts a node that fails
    /// again), and true: under --no-mdns nothing but --peer is left.
    #[test]
    fn the_dht_failure_is_said_once_and_true() {
        let failed = Event::Dht(DhtStatus::BootstrapFailed { total: 5 });
        let rep = Reporter::with_terminal(false, false);
        let first = rep.notice(&failed).expect("said the first time");
        assert!(first.ends_with("looking on the local network only"), "{first}");
        assert_eq!(rep.notice(&failed), None, "said again");
        let rep = Reporter::with_terminal(false, false);
        rep.discovery(Discovery { role: Role::Receiver, mdns: false, dht: true, peers: false });
        let line = rep.notice(&failed).expect("said");
        assert!(!line.contains("local network"), "{line}");
        assert!(line.contains("--peer"), "{line}");
    }

    #[test]
    fn offers_are_described_without_the_peers_escapes() {
        let o = pcp::OfferInfo {
            kind: pcp::OfferKind::File,
            name: "a\x1b[2Jb".into(),
            size: Some(1),
            entries: Vec::new(),
            kinds: Vec::new(),
            files: None,
            peer: libp2p::PeerId::random(),
            addr: None,
        };
        assert!(!describe_short(&o).contains('\x1b'));
    }
}
