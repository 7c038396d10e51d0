//! What wrong codes cost: the sender's budget of failed key confirmations and its rate
//! limit per [`Origin`] ([`Guesses`]), and the receiver's count of peers that failed to
//! prove they knew the code ([`Impostors`]).
//!
//! SPAKE2 gives an active attacker one online guess per handshake, on either side: a
//! stranger posing as a receiver tests one password against the sender, one posing as
//! a sender tests one against the receiver. Nothing else about the code leaks. So what
//! bounds an attacker's odds is how many handshakes each side lets fail.
//!
//! # The sender's budget
//!
//! The password is words 2..n of the code, 11 bits a word: 33 bits for the default 4
//! words, 22 for `--words 3`. The code burns after [`guess_budget`] failed
//! confirmations in all, `B = 2^(bits − 25)` clamped to [`MIN_BUDGET`]..=[`MAX_BUDGET`],
//! so that an attacker's odds over the whole budget, `B / 2^bits`, stay at or below
//! 2^-25 for 4 words and more:
//!
//! | words | bits | budget | odds of one attacker over the whole budget |
//! |------:|-----:|-------:|-----------------------------------------------|
//! | 3     | 22   | 3      | 3 · 2^-22 ≈ 2^-20.4 (the floor: fewer would let one stranger end a send) |
//! | 4     | 33   | 256    | 2^8 · 2^-33 = 2^-25 |
//! | 5     | 44   | 1024   | 2^10 · 2^-44 = 2^-34 (the ceiling) |
//!
//! The hidden, test-only environment variable `PCP_GUESS_BUDGET` can lower the budget
//! (never raise it), so that the tests can burn a code with a few guesses.
//!
//! # The rate limit per origin
//!
//! A budget alone would let one host burn a code in a second. So each origin (an IPv4
//! address, an IPv6 /64, a relay; see [`Origin`]) gets [`FREE_PER_ORIGIN`] tries, and
//! after that one at a time, each [`FIRST_WAIT`] · 2^(k − [`FREE_PER_ORIGIN`]) after its
//! k-th failure ([`MAX_WAIT`] at most). A hello from an origin that must wait is
//! answered "try again in N s" before any SPAKE2 message, at no cost to the code, and an
//! honest receiver there does so. Other origins are never slowed down by it.
//!
//! # Invariants
//!
//! - A guess is reserved ([`Ticket::arm`]) before the sender's SPAKE2 message goes out,
//!   and spent unless the receiver's confirmation matched (a ticket dropped armed is
//!   spent). `spent + in flight ≤ budget` at all times, so at most `budget` guesses are
//!   ever tested, however many handshakes run at once; and the right code, once in
//!   flight, cannot be overtaken by others burning the code.
//! - An origin holds an entry only while it has a failure or a guess in flight: at most
//!   `budget` + the sender's concurrent handshakes entries.
//! - The receiver checks a sender's confirmation only while fewer than
//!   [`MAX_IMPOSTORS`] have failed, and books a failure before its next await: at most
//!   that many wrong guesses are ever tested against it in one search.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::event::Origin;

/// Tries an origin gets before it waits between tries.
pub(crate) const FREE_PER_ORIGIN: u32 = 2;

/// The wait after an origin's first failure past [`FREE_PER_ORIGIN`]; each further
/// failure doubles it.
pub(crate) const FIRST_WAIT: Duration = Duration::from_secs(1);

/// The longest an origin waits between tries.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(300);

/// How long a hello waits when every guess left is in flight, or its origin already has
/// one in flight past its free tries.
pub(crate) const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// The smallest budget: `--words 3`.
pub(crate) const MIN_BUDGET: u32 = 3;

/// The largest budget: 5 words and more.
pub(crate) const MAX_BUDGET: u32 = 1024;

/// The attacker's odds over a whole budget, as a power of two: 2^-25.
const TARGET_ODDS_BITS: u32 = 25;

/// Bits of password per word: the BIP39 list has 2048 words.
const BITS_PER_WORD: u32 = 11;

/// Peers whose key confirmation failed before a receiver stops: someone is guessing.
pub(crate) const MAX_IMPOSTORS: u32 = 3;

/// Failed key confirmations a sender takes before its code burns, for a code of `words`
/// words (see the module docs for the arithmetic).
#[must_use]
pub fn guess_budget(words: usize) -> u32 {
    let words = u32::try_from(words).unwrap_or(u32::MAX);
    let bits = words.saturating_sub(1).saturating_mul(BITS_PER_WORD);
    let exp = bits.saturating_sub(TARGET_ODDS_BITS);
    if bits < TARGET_ODDS_BITS {
        return MIN_BUDGET;
    }
    1u32.checked_shl(exp).unwrap_or(u32::MAX).clamp(MIN_BUDGET, MAX_BUDGET)
}

/// The budget for a code of `words` words in this process: [`guess_budget`], lowered by
/// `PCP_GUESS_BUDGET` when that holds a smaller positive number (tests).
pub(crate) fn budget_for(words: usize) -> u32 {
    let own = guess_budget(words);
    std::env::var("PCP_GUESS_BUDGET")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&n| n > 0)
        .map_or(own, |n| n.min(own))
}

/// The guesses a sender's code has cost, shared by the handshakes it runs side by side:
/// the budget in all and the rate limit per origin (see the module docs).
///
/// Once the budget is spent the code is burnt: every later hello for it is answered
/// "burnt" before any SPAKE2 message, so no more guesses can be tested, and the guess
/// that burns it is told so in one byte after its failed confirmation. Neither answer
/// says anything about the code.
#[derive(Debug)]
pub(crate) struct Guesses {
    budget: u32,
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    spent: u32,
    in_flight: u32,
    by_origin: HashMap<Origin, Tally>,
}

/// One origin's record.
#[derive(Debug, Default)]
struct Tally {
    failed: u32,
    in_flight: u32,
    /// No new try before this, once past the free tries.
    until: Option<Instant>,
}

/// What a hello from an origin may do now.
#[derive(Debug)]
pub(crate) enum Gate<'a> {
    /// Go on to the PAKE, holding this ticket.
    Open(Ticket<'a>),
    /// Come back after this long.
    Wait(Duration),
    /// The code is burnt.
    Burnt,
}

impl Guesses {
    /// A sender's guesses, burning after `budget` failures (at least 1).
    pub(crate) fn new(budget: u32) -> Guesses {
        Guesses { budget: budget.max(1), ledger: Mutex::new(Ledger::default()) }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the code is burnt.
    pub(crate) fn burnt(&self) -> bool {
        self.ledger().spent >= self.budget
    }

    /// Failures left before the code is burnt.
    pub(crate) fn left(&self) -> u32 {
        self.budget.saturating_sub(self.ledger().spent)
    }

    /// Failures from `origin` so far.
    pub(crate) fn failed_from(&self, origin: &Origin) -> u32 {
        self.ledger().by_origin.get(origin).map_or(0, |t| t.failed)
    }

    /// Wrong codes per origin so far, most first (then by origin, for a stable order).
    pub(crate) fn tally(&self) -> Vec<(Origin, u32)> {
        let l = self.ledger();
        let mut all: Vec<(Origin, u32)> = l
            .by_origin
            .iter()
            .filter(|(_, t)| t.failed > 0)
            .map(|(o, t)| (o.clone(), t.failed))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.to_string().cmp(&b.0.to_string())));
        all
    }

    /// Whether a hello from `origin` may go on to the PAKE now; if so, the returned
    /// ticket holds its place (see [`Ticket`]).
    pub(crate) fn gate(&self, origin: &Origin) -> Gate<'_> {
        let now = Instant::now();
        let mut l = self.ledger();
        if l.spent >= self.budget {
            return Gate::Burnt;
        }
        if l.spent + l.in_flight >= self.budget {
            return Gate::Wait(IN_FLIGHT_WAIT);
        }
        let tally = l.by_origin.entry(origin.clone()).or_default();
        if tally.failed + tally.in_flight >= FREE_PER_ORIGIN {
            if tally.in_flight > 0 {
                return Gate::Wait(IN_FLIGHT_WAIT);
            }
            if let Some(until) = tally.until.filter(|u| *u > now) {
                return Gate::Wait(until - now);
            }
        }
        tally.in_flight += 1;
        l.in_flight += 1;
        Gate::Open(Ticket { guesses: self, origin: origin.clone(), armed: false, settled: false })
    }

    /// Ends a ticket: a failure is spent (true when that burnt the code), anything else
    /// gives its place back.
    fn settle(&self, origin: &Origin, failed: bool) -> bool {
        let now = Instant::now();
        let mut l = self.ledger();
        l.in_flight = l.in_flight.saturating_sub(1);
        if failed {
            l.spent = l.spent.saturating_add(1);
        }
        let burnt = l.spent >= self.budget;
        if let Some(tally) = l.by_origin.get_mut(origin) {
            tally.in_flight = tally.in_flight.saturating_sub(1);
            if failed {
                tally.failed = tally.failed.saturating_add(1);
                if tally.failed >= FREE_PER_ORIGIN {
                    tally.until = Some(now + wait_after(tally.failed));
                }
            }
            if tally.failed == 0 && tally.in_flight == 0 {
                l.by_origin.remove(origin);
            }
        }
        burnt
    }
}

/// How long an origin waits after its `failed`-th failure (at least
/// [`FREE_PER_ORIGIN`]).
fn wait_after(failed: u32) -> Duration {
    let doublings = failed.saturating_sub(FREE_PER_ORIGIN);
    let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
    FIRST_WAIT.saturating_mul(factor).min(MAX_WAIT)
}

/// One handshake's place among the guesses in flight. Dropped unarmed, it gives the
/// place back; armed (our SPAKE2 message is going out), it is spent unless
/// [`Ticket::succeed`] says the receiver's confirmation matched.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    guesses: &'a Guesses,
    origin: Origin,
    armed: bool,
    settled: bool,
}

impl Ticket<'_> {
    /// From here on the peer may hold our SPAKE2 message: it has had its guess.
    pub(crate) fn arm(&mut self) {
        self.armed = true;
    }

    /// The receiver's confirmation matched.
    pub(crate) fn succeed(mut self) {
        self.settled = true;
        self.guesses.settle(&self.origin, false);
    }

    /// The guess failed; true when it burnt the code.
    pub(crate) fn fail(mut self) -> bool {
        self.settled = true;
        self.guesses.settle(&self.origin, true)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.guesses.settle(&self.origin, self.armed);
        }
    }
}

/// The receiver's count of peers whose key confirmation failed, shared by the attempts
/// it runs side by side (see the module invariants).
#[derive(Debug)]
pub(crate) struct Impostors {
    failed: AtomicU32,
    limit: u32,
}

impl Impostors {
    /// A count that stops at `limit` failures.
    pub(crate) fn new(limit: u32) -> Impostors {
        Impostors { failed: AtomicU32::new(0), limit }
    }

    /// Whether no more confirmations may be checked.
    pub(crate) fn exhausted(&self) -> bool {
        self.failed.load(Relaxed) >= self.limit
    }

    /// Books a failed confirmation.
    pub(crate) fn book(&self) {
        let _ = self.failed.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_add(1)));
    }

    /// Failed confirmations so far.
    pub(crate) fn count(&self) -> u32 {
        self.failed.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Origin {
        Origin::Ipv4(s.parse().expect("ip"))
    }

    /// The README's arithmetic: 4 words keep a whole budget at 2^-25, 3 words at the
    /// floor, long codes at the ceiling.
    #[test]
    fn the_budget_keeps_the_odds() {
        assert_eq!(guess_budget(3), 3);
        assert_eq!(guess_budget(4), 256);
        assert_eq!(guess_budget(5), 1024);
        assert_eq!(guess_budget(24), 1024);
        for words in 4..=24 {
            let bits = 11 * (words as i32 - 1);
            let odds = f64::from(guess_budget(words)).log2() - f64::from(bits);
            assert!(odds <= -25.0, "{words} words: 2^{odds}");
        }
    }

    fn spend(g: &Guesses, o: &Origin) -> bool {
        match g.gate(o) {
            Gate::Open(mut t) => {
                t.arm();
                t.fail()
            }
            other => panic!("{o} was not let in: {other:?}"),
        }
    }

    /// Issue 14, item 6: each origin gets a few tries, then waits a doubling delay; the
    /// code burns only after the budget.
    #[tokio::test(start_paused = true)]
    async fn an_origin_gets_a_few_tries_then_doubling_waits() {
        let g = Guesses::new(256);
        let o = v4("198.18.0.2");
        for _ in 0..FREE_PER_ORIGIN {
            assert!(!spend(&g, &o));
        }
        for k in 0..6u32 {
            let wait = FIRST_WAIT * 2u32.pow(k);
            let Gate::Wait(d) = g.gate(&o) else { panic!("try {} was let in at once", k + 3) };
            assert_eq!(d, wait, "after {} failures", k + 2);
            tokio::time::advance(wait - Duration::from_millis(1)).await;
            assert!(matches!(g.gate(&o), Gate::Wait(_)), "let in early");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(!spend(&g, &o), "let in after the wait, and not burnt");
        }
        assert_eq!(g.failed_from(&o), FREE_PER_ORIGIN + 6);
        assert_eq!(g.left(), 256 - 8);
        assert!(!g.burnt(), "one origin never burns a 4-word code");
        assert_eq!(wait_after(40), MAX_WAIT);
    }

    /// Issue 14, item 6: a stranger's failures never delay a receiver from elsewhere.
    #[tokio::test(start_paused = true)]
    async fn another_origin_is_never_slowed_down() {
        let g = Guesses::new(256);
        let (guesser, right) = (v4("198.18.0.2"), v4("198.18.0.3"));
        for _ in 0..FREE_PER_ORIGIN + 1 {
            if let Gate::Wait(d) = g.gate(&guesser) {
                tokio::time::advance(d).await;
            }
            spend(&g, &guesser);
        }
        assert!(matches!(g.gate(&guesser), Gate::Wait(_)));
        let Gate::Open(t) = g.gate(&right) else { panic!("the right receiver waits") };
        t.succeed();
        assert_eq!(g.failed_from(&right), 0);
        // A /64 is one origin; the next /64 is another.
        let net = |s: &str| Origin::of(Some(&s.parse().expect("addr")), libp2p::PeerId::random());
        let a = net("/ip6/2001:db8:0:1::a/tcp/1");
        assert_eq!(a, net("/ip6/2001:db8:0:1:ffff::b/tcp/2"));
        assert_ne!(a, net("/ip6/2001:db8:0:2::a/tcp/1"));
        for _ in 0..FREE_PER_ORIGIN {
            spend(&g, &a);
        }
        assert!(matches!(g.gate(&net("/ip6/2001:db8:0:1::c/tcp/3")), Gate::Wait(_)));
        assert!(matches!(g.gate(&net("/ip6/2001:db8:0:2::c/tcp/3")), Gate::Open(_)));
    }

    /// Issue 14, item 6: the code burns at the budget, counted across origins, and never
    /// more guesses than the budget are in flight.
    #[tokio::test(start_paused = true)]
    async fn the_code_burns_at_the_budget_and_no_guess_runs_past_it() {
        let g = Guesses::new(3);
        let origins: Vec<Origin> = (1..=5).map(|i| v4(&format!("198.18.0.{i}"))).collect();
        let held: Vec<Ticket<'_>> = origins[..3]
            .iter()
            .map(|o| match g.gate(o) {
                Gate::Open(mut t) => {
                    t.arm();
                    t
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(matches!(g.gate(&origins[3]), Gate::Wait(IN_FLIGHT_WAIT)), "a 4th in flight");
        let mut burnt = Vec::new();
        for t in held {
            burnt.push(t.fail());
        }
        assert_eq!(burnt, [false, false, true]);
        assert!(g.burnt());
        assert!(matches!(g.gate(&origins[4]), Gate::Burnt));
    }

    /// A ticket dropped before our SPAKE2 message went out costs nothing; one dropped
    /// after it is spent (the peer had its guess).
    #[test]
    fn a_dropped_ticket_is_spent_only_once_armed() {
        let g = Guesses::new(3);
        let o = Origin::Peer(libp2p::PeerId::random());
        drop(g.gate(&o));
        assert_eq!((g.left(), g.failed_from(&o)), (3, 0));
        if let Gate::Open(mut t) = g.gate(&o) {
            t.arm();
        }
        assert_eq!((g.left(), g.failed_from(&o)), (2, 1));
    }

    #[test]
    fn impostors_are_counted_up_to_the_limit() {
        let i = Impostors::new(MAX_IMPOSTORS);
        for _ in 0..MAX_IMPOSTORS {
            assert!(!i.exhausted());
            i.book();
        }
        assert!(i.exhausted());
        assert_eq!(i.count(), MAX_IMPOSTORS);
    }
}
