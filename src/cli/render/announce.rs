//! What a side says while it looks for its peer, beyond single events: the addresses a
//! receiver can give to `--peer` (held back a moment for one another host can dial),
//! the receiver's command, and the hint for a receiver that keeps looking; and the
//! timers this takes, which the reporter starts and stops itself.

use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use pcp::{Event, Role};

use super::{Reporter, listening_line, lock, reachable_from_elsewhere};

/// How long a receiver looks for its sender before it says what may be wrong.
const STILL_LOOKING: Duration = Duration::from_secs(30);

/// How long the sender keeps loopback addresses back, waiting for one another host
/// can dial: a node reports all its addresses within milliseconds of starting.
const HOLD_LOCAL_ADDRESSES: Duration = Duration::from_millis(500);

impl Reporter {
    /// The reporter, shared with the timers it starts itself: the held addresses are
    /// printed [`HOLD_LOCAL_ADDRESSES`] after the code, and a receiver that has not
    /// found its sender [`STILL_LOOKING`] after it began to look says what may be wrong.
    #[must_use]
    pub(crate) fn shared(self) -> Arc<Reporter> {
        Arc::new_cyclic(|me| Reporter { me: me.clone(), ..self })
    }

    /// Calls `then` on this reporter after `delay`, unless the run ends first (or this
    /// reporter is not [`Reporter::shared`], or there is no runtime to wait on).
    pub(super) fn after(&self, delay: Duration, then: fn(&Reporter)) {
        let me = self.me.clone();
        if me.strong_count() == 0 || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let timer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(rep) = me.upgrade() {
                then(&rep);
            }
        });
        lock(&self.timers).push(timer.abort_handle());
    }

    /// Stops the timers: the run ended, or a question or an error takes the screen.
    pub(super) fn stop_timers(&self) {
        for t in lock(&self.timers).drain(..) {
            t.abort();
        }
    }

    /// The timers an event starts: the held addresses after the code (announcing), and
    /// the hint for a receiver that keeps looking after it began to.
    pub(super) fn start_timers(&self, ev: &Event) {
        let mut ctx = lock(&self.ctx);
        match ev {
            Event::Code { .. } if ctx.announce && !ctx.hold_timer => {
                ctx.hold_timer = true;
                drop(ctx);
                self.after(HOLD_LOCAL_ADDRESSES, Reporter::flush_held_addresses);
            }
            Event::Searching
                if !ctx.looking_timer
                    && ctx.discovery.is_some_and(|d| d.role == Role::Receiver) =>
            {
                ctx.looking_timer = true;
                drop(ctx);
                self.after(STILL_LOOKING, |rep| rep.still_looking(STILL_LOOKING));
            }
            Event::Finished(_) => {
                drop(ctx);
                self.stop_timers();
            }
            _ => {}
        }
    }

    /// Prints the listen addresses for a receiver's `--peer` as they are reported:
    /// those another host can dial, or, if there are none, the rest
    /// ([`Reporter::flush_held_addresses`]).
    pub(crate) fn announce_addresses(&self) {
        lock(&self.ctx).announce = true;
    }

    /// Prints the this-host-only addresses held back, unless an address another host
    /// can dial was printed; later ones are printed as they come. Called once the node
    /// has had time to report its addresses.
    pub(super) fn flush_held_addresses(&self) {
        lock(&self.ctx).flushed = true;
        self.announce_step();
    }

    /// Prints what announcing has to print now: once the code and an address are known,
    /// the receiver's command with that address; then each further address on a line
    /// of its own. An address another host can dial comes first; this-host-only ones
    /// only once held long enough ([`Reporter::flush_held_addresses`]) with no other.
    pub(super) fn announce_step(&self) {
        let mut lines = Vec::new();
        {
            let mut ctx = lock(&self.ctx);
            let Some((code, made_up)) = ctx.code.clone() else { return };
            // Not quiet, or quiet with a made-up code: that one is always shown, and
            // with it the command that works.
            if !ctx.announce || (self.quiet && !made_up) {
                return;
            }
            let shown_reachable = ctx.shown_reachable;
            let flushed = ctx.flushed;
            let mut ready: Vec<Multiaddr> = ctx
                .seen
                .iter()
                .filter(|a| !ctx.printed.contains(a))
                .filter(|a| reachable_from_elsewhere(a) || (flushed && !shown_reachable))
                .cloned()
                .collect();
            ready.sort_by_key(|a| !reachable_from_elsewhere(a));
            for addr in ready {
                ctx.shown_reachable |= reachable_from_elsewhere(&addr);
                ctx.printed.push(addr.clone());
                if !ctx.peer_command {
                    ctx.peer_command = true;
                    let word = if made_up { code.clone() } else { "CODE".to_owned() };
                    lines.push(match (made_up, ctx.plain_command) {
                        (true, false) => "On the other computer run:".to_owned(),
                        (true, true) => "On the other computer run instead:".to_owned(),
                        (false, _) => {
                            "On the other computer run, with the code given to --code for CODE:"
                                .to_owned()
                        }
                    });
                    lines.push(format!("    pcp receive --peer {addr} {word}"));
                } else if !self.quiet {
                    lines.push(listening_line(&addr));
                }
            }
        }
        for l in lines {
            self.line(&l);
        }
    }

    /// A listen address was reported: once per address, and only when announcing.
    pub(super) fn listening(&self, addr: Multiaddr) {
        {
            let mut ctx = lock(&self.ctx);
            if ctx.seen.contains(&addr) {
                return;
            }
            ctx.seen.push(addr);
        }
        self.announce_step();
    }

    /// The code is known: say it, and how the receiver gets to this sender. With
    /// neither mDNS nor the DHT the receiver's command needs `--peer` and an address,
    /// printed once one is known ([`Reporter::announce_step`]).
    pub(super) fn code(&self, code: String, made_up: bool) {
        let announce = {
            let mut ctx = lock(&self.ctx);
            ctx.code = Some((code.clone(), made_up));
            ctx.plain_command = made_up && !ctx.announce;
            ctx.announce
        };
        if made_up {
            self.line(&format!("Code is: {code}"));
            if !announce {
                self.line("On the other computer run:");
                self.line(&format!("    pcp receive {code}"));
            }
        } else if !self.quiet {
            // A code the user chose is never echoed: stderr may be a log.
            self.line("Ready: waiting for a receiver with the given code");
        }
        self.announce_step();
    }

    /// The receiver has looked for its sender for a while without finding it: says
    /// once what may be wrong, and the way with `--peer` (unless the sender was found,
    /// or `--quiet`).
    pub(super) fn still_looking(&self, after: Duration) {
        let d = {
            let ctx = lock(&self.ctx);
            if ctx.offered || self.quiet {
                return;
            }
            ctx.discovery
        };
        let (mdns, dht, peers) = d.map_or((true, true, false), |d| (d.mdns, d.dht, d.peers));
        let mut lines =
            vec![format!("no sender found after {}; perhaps:", pcp::event::duration_words(after))];
        lines.push(
            "  - pcp send is not running on the other computer (it may have finished, with \
             another receiver), or shows another code"
                .into(),
        );
        if peers {
            lines.push(
                "  - the --peer address is not the sender's, or not reachable from here".into(),
            );
        }
        if mdns {
            lines.push(format!(
                "  - it is on another network{}, or mDNS (UDP port 5353) is blocked here or there \
                 (a firewall, a guest Wi-Fi)",
                if dht { " and the DHT did not bring you together" } else { "" }
            ));
        } else if !dht && !peers {
            lines.push("  - with --no-mdns and --no-dht only --peer can find it".into());
        }
        lines.push(
            "  - either way: run pcp send --no-mdns --no-dht there; it prints the command to \
             run here, pcp receive --peer ADDR CODE"
                .into(),
        );
        for l in lines {
            self.emit_line(&l);
        }
    }
}
