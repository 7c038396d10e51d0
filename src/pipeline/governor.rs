//! The adaptive compression governor: which zstd level [`Compression::Adaptive`] seals
//! the next chunk at, decided from what this transfer achieves.
//!
//! The sender's writer reports every frame it wrote ([`Governor::observe`]): the raw
//! (uncompressed) bytes the frame carried, how long the write took (the transport
//! blocks it while the link is busy), when it returned, and what it found next
//! ([`Found`]): the next frame already sealed, still being sealed, or none on its way
//! (the source or the receiver's window holds the transfer back). The time until the
//! next write began is then time the writer waited for the compressors, if the next
//! frame was being sealed.
//!
//! Frames are grouped into epochs of at least [`EPOCH_FRAMES`] frames and at least
//! [`EPOCH_TIME`]. An epoch's *goodput* is the raw bytes written in it over its
//! duration: what the user gets, whatever the level. An epoch is *link-bound* when its
//! writer spent at least half of it in writes, and at least 3 times as long as
//! waiting for the compressors; *CPU-bound* when it waited for the compressors at
//! least as long as it wrote. Time, not a count of frames: the transport takes frames
//! in bursts (a write returns at once while its buffers have room, then blocks), and
//! in a burst the next frame is often still being sealed although the link is what
//! holds the transfer back.
//!
//! The decision rule, at the end of each epoch:
//! - Link-bound, and no hold: *probe* one step up [`LADDER`]. The first epoch at the new
//!   level keeps it if it is link-bound too (the link takes bytes as fast as before,
//!   and each carries more input), or else if its goodput is at least [`GAIN`] times
//!   the epoch before the probe's; then, if it was link-bound, the next step is probed
//!   against it at once. Two epochs' goodput is compared only when the level above
//!   could not keep up with the link, because it is noisy: the data compress better
//!   in one epoch than in the next (a tar of /usr/include and /usr/share through
//!   100 Mbit/s moved between 12 and 54 MB/s in 200 ms epochs at levels 1 to 3). A
//!   level that keeps up with the link is kept even if it compresses no better (it
//!   costs CPU, never goodput). A probe that does not pay reverts and starts a
//!   *hold*: no probe for the next [`HOLD_FIRST`] epochs, doubling with every failure
//!   up to [`HOLD_MAX`], back to [`HOLD_FIRST`] once a probe pays.
//! - CPU-bound: one step down, and a hold as after a failed probe, unless the step
//!   below is known (from the probe that left it, less than [`HOLD_MAX`] epochs ago)
//!   to give less: [`GAIN`] times less than this epoch.
//! - Otherwise nothing changes.
//!
//! Invariants:
//! - The level never moves for a fixed setting ([`Compression::Off`],
//!   [`Compression::Zstd`]).
//! - Nothing but this transfer's own frames and clock goes into a decision: never
//!   another process's CPU use, never the wall clock read here (the caller passes the
//!   time, so tests drive the governor with a simulated clock).
//! - After a change, the frames already sealed or being sealed at the old level (up to
//!   the pipeline's depth) are never counted in the next epoch, nor is the time
//!   spent reconnecting ([`Governor::reconnected`]).
//! - At most one step per epoch, between [`LADDER`]'s ends.

use std::time::{Duration, Instant};

use super::Compression;

/// The settings [`Compression::Adaptive`] moves between, cheapest first. Measured in
/// issue 8 on 1 MiB chunks of text (a tar of /usr/include and /usr/share): level 1
/// shrinks it 5.2×, 2: 5.6×, 3: 5.9×, 5: 6.4×, 6: 6.6×, at about 1/1, 1/1.3, 1/1.7,
/// 1/2.4 and 1/2.9 of level 1's speed; 7 and up gain little more for much more time
/// and memory. On a fast link none beats level 1 (a 2-core machine sent text 1.35× as
/// fast uncompressed as at level 3); at 100 Mbit/s level 7 beat level 3 by 1.10×.
const LADDER: [Compression; 6] = [
    Compression::Off,
    Compression::Zstd(1),
    Compression::Zstd(2),
    Compression::Zstd(3),
    Compression::Zstd(5),
    Compression::Zstd(6),
];

/// Where [`Compression::Adaptive`] starts on [`LADDER`]: level 1, cheap and worth it on
/// all but the fastest links.
const LADDER_START: usize = 1;

/// From this step of [`LADDER`] up (zstd 5 and 6), [`Compression::Adaptive`] tries every
/// chunk whole instead of trusting the level-1 sample of its middle: the governor only
/// gets there when the link is the bottleneck and the CPU keeps up, and there the
/// sample's misses cost the most. On 256 MiB of text (the tar of /usr/include and
/// /usr/share that benches/compare.sh sends through 100 Mbit/s), 33 of 256 chunks had an
/// incompressible middle but would have shrunk by 9.6 MB in all at level 6: the
/// transfer moved 2.85x the link rate with the sample, against the 3.2x that level 6
/// allows (1 MiB blocks compress 3.37x there).
const THOROUGH_FROM: usize = 4;

/// Fewest frames in an epoch.
const EPOCH_FRAMES: u32 = 4;

/// Shortest epoch: a few frames of a fast link say more about the scheduler than
/// about the link.
const EPOCH_TIME: Duration = Duration::from_millis(200);

/// How much more goodput a level must give than the one below it to be kept: less is
/// within what the data's own compressibility varies by between two epochs, and the
/// level above costs CPU.
const GAIN: f64 = 1.03;

/// Epochs without a probe after the first failure.
const HOLD_FIRST: u32 = 2;

/// Most epochs without a probe (with [`EPOCH_TIME`], about 13 s): a link that got
/// slower, or a machine that got less busy, is noticed within that.
const HOLD_MAX: u32 = 64;

/// What the writer found when it was free to write again, after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// The next frame was sealed already: the link holds the transfer back.
    Sealed,
    /// The next frame was still being sealed: compression holds the transfer back.
    Sealing,
    /// No frame was on its way: the source, or the receiver's window, holds it back.
    Nothing,
}

/// What an epoch says about the bottleneck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Link,
    Cpu,
    Neither,
}

/// The frames of the epoch under way.
#[derive(Debug, Clone, Copy)]
struct Epoch {
    /// When it started: the write that ended the epoch (or the skipped frames) before.
    start: Instant,
    frames: u32,
    raw: u64,
    /// Time in writes, and waiting for the compressors.
    writing: Duration,
    sealing: Duration,
}

impl Epoch {
    fn new(start: Instant) -> Epoch {
        Epoch { start, frames: 0, raw: 0, writing: Duration::ZERO, sealing: Duration::ZERO }
    }

    fn bound(&self, elapsed: Duration) -> Bound {
        if self.writing >= self.sealing * 3 && self.writing * 2 >= elapsed {
            Bound::Link
        } else if self.sealing >= self.writing && !self.sealing.is_zero() {
            Bound::Cpu
        } else {
            Bound::Neither
        }
    }
}

/// What the governor is doing between epochs.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Staying at the current step.
    Steady,
    /// Trying the current step, one above `from`, against `baseline` (raw bytes/s at
    /// `from`).
    Probing { from: usize, baseline: f64 },
}

/// Chooses each chunk's compression, for [`Compression::Adaptive`], by the goodput
/// this transfer gets at each level: see the module docs for the rule.
#[derive(Debug)]
pub(crate) struct Governor {
    /// A fixed setting, or `None` to adapt.
    fixed: Option<Compression>,
    step: usize,
    state: State,
    /// Frames still to write that were sealed before the last change.
    skip: u32,
    in_flight: u32,
    /// `None` until the first counted frame's write (the start of the first epoch).
    epoch: Option<Epoch>,
    /// When the last write returned, and what the writer found next.
    last: Option<(Instant, Found)>,
    /// Epochs left before the next probe up, and the next hold's length.
    hold: u32,
    hold_next: u32,
    /// The goodput of the step below, measured by the probe that left it, and epochs
    /// since.
    below: Option<(f64, u32)>,
}

impl Governor {
    /// A governor for `compression`, with up to `in_flight` chunks sealed ahead of the
    /// writer.
    #[must_use]
    pub(crate) fn new(compression: Compression, in_flight: usize) -> Governor {
        let fixed = (compression != Compression::Adaptive).then_some(compression);
        let in_flight = u32::try_from(in_flight).unwrap_or(u32::MAX);
        Governor {
            fixed,
            step: LADDER_START,
            state: State::Steady,
            skip: in_flight,
            in_flight,
            epoch: None,
            last: None,
            hold: 0,
            hold_next: HOLD_FIRST,
            below: None,
        }
    }

    /// The setting for the next chunk to seal.
    #[must_use]
    pub(crate) fn current(&self) -> Compression {
        self.fixed.unwrap_or(LADDER[self.step])
    }

    /// Whether the next chunk's compression should first be tried on a sample (see
    /// [`THOROUGH_FROM`]; a fixed setting always samples).
    #[must_use]
    pub(crate) fn sample(&self) -> bool {
        self.fixed.is_some() || self.step < THOROUGH_FROM
    }

    /// The writer wrote a frame of `raw` uncompressed bytes in a write that took
    /// `writing` and returned at `now`, and it `found` the next frame as it says.
    pub(crate) fn observe(&mut self, found: Found, raw: usize, writing: Duration, now: Instant) {
        if self.fixed.is_some() {
            return;
        }
        // Between the last write and this one the writer waited for what it found then.
        let began = now.checked_sub(writing).unwrap_or(now);
        let waited = match self.last.replace((now, found)) {
            Some((at, Found::Sealing)) => began.saturating_duration_since(at),
            _ => Duration::ZERO,
        };
        if self.skip > 0 {
            // Sealed at the level before: the epoch starts after the last of them.
            self.skip -= 1;
            self.epoch = None;
            return;
        }
        let Some(epoch) = self.epoch.as_mut() else {
            // The first frame at this level: its write began before, so it only
            // starts the clock.
            self.epoch = Some(Epoch::new(now));
            return;
        };
        epoch.frames += 1;
        epoch.raw += raw as u64;
        epoch.writing += writing;
        epoch.sealing += waited;
        let elapsed = now.saturating_duration_since(epoch.start);
        if epoch.frames < EPOCH_FRAMES || elapsed < EPOCH_TIME {
            return;
        }
        let (bound, goodput) = (epoch.bound(elapsed), epoch.raw as f64 / elapsed.as_secs_f64());
        self.epoch = Some(Epoch::new(now));
        self.decide(bound, goodput);
    }

    /// A new session (after a reconnection) is about to write: the time since the last
    /// frame went to finding the peer again, not to the link or the compressors, so
    /// the epoch under way is dropped.
    pub(crate) fn reconnected(&mut self) {
        self.epoch = None;
        self.last = None;
    }

    /// The rule of the module docs, at the end of an epoch.
    fn decide(&mut self, bound: Bound, goodput: f64) {
        self.below = self.below.filter(|&(_, age)| age < HOLD_MAX).map(|(b, age)| (b, age + 1));
        let top = LADDER.len() - 1;
        match self.state {
            State::Probing { from, baseline }
                if bound == Bound::Link || goodput >= baseline * GAIN =>
            {
                tracing::debug!(from = ?LADDER[from], to = ?LADDER[self.step], goodput, baseline, "compression kept");
                self.hold_next = HOLD_FIRST;
                self.below = Some((baseline, 0));
                self.state = State::Steady;
                if bound == Bound::Link && self.step < top {
                    self.probe(goodput);
                }
            }
            State::Probing { from, baseline } => {
                tracing::debug!(from = ?LADDER[self.step], to = ?LADDER[from], goodput, baseline, "compression reverted");
                self.state = State::Steady;
                self.change(from);
                self.start_hold();
            }
            State::Steady => match bound {
                Bound::Link if self.hold > 0 => self.hold -= 1,
                Bound::Link if self.step < top => self.probe(goodput),
                Bound::Cpu
                    if self.step > 0
                        && self.below.is_none_or(|(below, _)| goodput < below * GAIN) =>
                {
                    tracing::debug!(from = ?LADDER[self.step], to = ?LADDER[self.step - 1], goodput, "compression lowered");
                    self.change(self.step - 1);
                    self.below = None;
                    self.start_hold();
                }
                _ => self.hold = self.hold.saturating_sub(1),
            },
        }
    }

    /// Tries the next step up against `baseline`.
    fn probe(&mut self, baseline: f64) {
        self.state = State::Probing { from: self.step, baseline };
        self.change(self.step + 1);
    }

    fn start_hold(&mut self) {
        self.hold = self.hold_next;
        self.hold_next = (self.hold_next * 2).min(HOLD_MAX);
    }

    fn change(&mut self, step: usize) {
        self.step = step;
        self.skip = self.in_flight;
        self.epoch = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = (1 << 20) as f64;

    /// A transfer's bottlenecks: a link of `link` wire bytes/s behind a send buffer
    /// of [`BUFFER`], and compressors that seal `cpu[step]` raw bytes/s between them
    /// at [`LADDER`]'s `step`, shrinking them `ratio[step]` times.
    #[derive(Debug, Clone, Copy)]
    struct Model {
        link: f64,
        cpu: [f64; 6],
        ratio: [f64; 6],
    }

    /// Wire bytes a write may leave queued for the link before it blocks (a socket's
    /// send buffer).
    const BUFFER: f64 = MIB;

    /// Level 1 to 6 on text, as measured in issue 8 (see [`LADDER`]).
    const TEXT_RATIO: [f64; 6] = [1.0, 5.2, 5.6, 5.9, 6.4, 6.6];
    /// 100 Mbit/s.
    const SLOW_LINK: f64 = 12.5e6;

    /// Two idle cores: level 1 at 400 MB/s on each, the others slower as measured in
    /// issue 8; no compression costs hashing and sealing only.
    fn idle_cpu() -> [f64; 6] {
        let l1 = 800e6;
        [2000e6, l1, l1 / 1.3, l1 / 1.7, l1 / 2.4, l1 / 2.9]
    }

    /// What a run did: the step each chunk was sealed at, and the governor.
    struct Run {
        steps: Vec<usize>,
        governor: Governor,
    }

    impl Run {
        /// Chunks sealed at `step` among the last `n`.
        fn share_at(&self, step: usize, n: usize) -> f64 {
            let tail = &self.steps[self.steps.len() - n..];
            tail.iter().filter(|&&s| s == step).count() as f64 / n as f64
        }
    }

    /// Sends `chunks` 1 MiB chunks through `model` with a simulated clock, `depth`
    /// seal jobs in flight and the compressors working through them in order, the
    /// writer writing each as soon as it is sealed, the write returning once the
    /// send buffer has room for it (the link draining it); `model_at(i)` gives the
    /// model from chunk `i` on.
    fn simulate(mut governor: Governor, chunks: usize, model_at: impl Fn(usize) -> Model) -> Run {
        let depth = 3;
        let t0 = Instant::now();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        // (step, sealed at) of the jobs in flight, oldest first.
        let mut jobs = std::collections::VecDeque::new();
        let (mut now, mut cpu_free, mut link_free) = (0.0f64, 0.0f64, 0.0f64);
        let mut steps = Vec::with_capacity(chunks);
        let mut spawned = 0;
        for i in 0..chunks {
            while jobs.len() < depth && spawned < chunks {
                let m = model_at(spawned);
                let step = LADDER.iter().position(|&c| c == governor.current()).unwrap_or(0);
                cpu_free = cpu_free.max(now) + MIB / m.cpu[step];
                jobs.push_back((step, cpu_free));
                steps.push(step);
                spawned += 1;
            }
            let (step, sealed) = jobs.pop_front().expect("filled above");
            let m = model_at(i);
            let began = now.max(sealed);
            link_free = link_free.max(began) + MIB / m.ratio[step] / m.link;
            now = began.max(link_free - BUFFER / m.link);
            let found = match jobs.front() {
                Some(&(_, next)) if next <= now => Found::Sealed,
                Some(_) => Found::Sealing,
                None => Found::Nothing,
            };
            let writing = Duration::from_secs_f64(now - began);
            governor.observe(found, MIB as usize, writing, at(now));
        }
        Run { steps, governor }
    }

    #[test]
    fn on_a_slow_link_with_cpu_to_spare_it_climbs_until_goodput_stops_rising() {
        // Level 6 seals 60 MB/s, less than the link would take (82.5): goodput rises
        // from 1 to 5 (65, 70, 73.75, 80 MB/s), then falls.
        let mut cpu = idle_cpu();
        cpu[5] = 60e6;
        let model = Model { link: SLOW_LINK, cpu, ratio: TEXT_RATIO };
        let run = simulate(Governor::new(Compression::Adaptive, 3), 3000, |_| model);
        assert_eq!(run.governor.current(), Compression::Zstd(5));
        assert!(run.share_at(4, 2000) > 0.9, "{}", run.share_at(4, 2000));
        // With the measured ratios every step pays: all the way up.
        let model = Model { link: SLOW_LINK, cpu: idle_cpu(), ratio: TEXT_RATIO };
        let run = simulate(Governor::new(Compression::Adaptive, 3), 500, |_| model);
        assert_eq!(run.governor.current(), Compression::Zstd(6));
        assert!(!run.governor.sample(), "up there every chunk is tried whole");
    }

    #[test]
    fn on_a_slow_link_it_climbs_while_the_machine_is_busy() {
        // Other processes keep both cores busy: the compressors get about half of the
        // machine. Level 6 still keeps up with 100 Mbit/s (82 MB/s of text), and this
        // transfer's goodput is what counts, not how busy the machine is.
        let cpu = idle_cpu().map(|c| c / 2.0);
        let model = Model { link: SLOW_LINK, cpu, ratio: TEXT_RATIO };
        let run = simulate(Governor::new(Compression::Adaptive, 3), 500, |_| model);
        assert_eq!(run.governor.current(), Compression::Zstd(6));
        // Most of the transfer ran at 3× the link rate or more.
        assert!(run.steps.iter().filter(|&&s| s >= 3).count() > 400);
    }

    #[test]
    fn a_level_that_lowers_goodput_is_left_again() {
        // Level 5 seals only 60 MB/s here (less than level 3 moves through the link,
        // 5.9 × 12.5 MB/s): the probe of 5 loses, and the governor stays at 3.
        let mut cpu = idle_cpu();
        (cpu[4], cpu[5]) = (60e6, 45e6);
        let model = Model { link: SLOW_LINK, cpu, ratio: TEXT_RATIO };
        let run = simulate(Governor::new(Compression::Adaptive, 3), 3000, |_| model);
        assert_eq!(run.governor.current(), Compression::Zstd(3));
        assert_eq!(run.steps.iter().filter(|&&s| s == 5).count(), 0, "never past 5");
        // Probes of 5 come back ever more rarely: most of the time is spent at 3.
        assert!(run.share_at(3, 2000) > 0.9, "{}", run.share_at(3, 2000));
        assert!(run.share_at(4, 2000) > 0.0, "it keeps probing, rarely");
    }

    #[test]
    fn a_cpu_bound_level_that_beats_the_one_below_is_kept() {
        // Level 3 is CPU-bound at 76 MB/s (the link would take 82), more than level 2
        // moves through the link (67.5 MB/s): kept, although the writer waits for the
        // compressors.
        let mut cpu = idle_cpu();
        (cpu[3], cpu[4], cpu[5]) = (76e6, 50e6, 40e6);
        let ratio = [1.0, 5.2, 5.4, 6.6, 6.8, 7.0];
        let model = Model { link: SLOW_LINK, cpu, ratio };
        let run = simulate(Governor::new(Compression::Adaptive, 3), 2000, |_| model);
        assert_eq!(run.governor.current(), Compression::Zstd(3));
        assert!(run.share_at(3, 1000) > 0.9, "{}", run.share_at(3, 1000));
    }

    #[test]
    fn cpu_bound_at_level_1_it_steps_down_and_stays() {
        // A fast link (1 GB/s): compression is what holds the transfer back.
        let model = Model { link: 1e9, cpu: idle_cpu(), ratio: TEXT_RATIO };
        let run = simulate(Governor::new(Compression::Adaptive, 3), 20_000, |_| model);
        assert_eq!(run.governor.current(), Compression::Off);
        // Level 1 is tried again now and then, ever more rarely.
        assert!(run.share_at(0, 10_000) > 0.95, "{}", run.share_at(0, 10_000));
        assert!(run.governor.sample());
        // Even none is CPU-bound (hashing and sealing): it stays there.
        let model = Model { link: 10e9, cpu: idle_cpu(), ratio: TEXT_RATIO };
        let run = simulate(Governor::new(Compression::Adaptive, 3), 1000, |_| model);
        assert_eq!(run.share_at(0, 800), 1.0);
    }

    #[test]
    fn it_follows_a_link_that_slows_down() {
        // A fast link at first, then 100 Mbit/s: from none back up.
        let fast = Model { link: 1e9, cpu: idle_cpu(), ratio: TEXT_RATIO };
        let slow = Model { link: SLOW_LINK, ..fast };
        let run = simulate(Governor::new(Compression::Adaptive, 3), 3000, |i| {
            if i < 2000 { fast } else { slow }
        });
        let fast_end =
            Run { steps: run.steps[..2000].to_vec(), governor: Governor::new(Compression::Off, 3) };
        assert!(fast_end.share_at(0, 1000) > 0.8, "{}", fast_end.share_at(0, 1000));
        assert_eq!(run.governor.current(), Compression::Zstd(6));
    }

    #[test]
    fn a_fixed_setting_never_moves() {
        let models = [
            Model { link: SLOW_LINK, cpu: idle_cpu(), ratio: TEXT_RATIO },
            Model { link: 1e9, cpu: idle_cpu(), ratio: TEXT_RATIO },
        ];
        for c in [Compression::Off, Compression::Zstd(1), Compression::Zstd(9)] {
            for model in models {
                let run = simulate(Governor::new(c, 3), 500, |_| model);
                assert_eq!(run.governor.current(), c);
                assert!(run.governor.sample());
            }
        }
    }

    /// Feeds `g` the frames still in flight from before a change (if any), then one
    /// epoch of frames at `step`'s goodput in `rates`, each finding the next frame as
    /// `found[step]` says, and returns the step it leaves the governor at.
    fn epoch(g: &mut Governor, now: &mut Instant, found: &[Found; 6], rates: &[f64; 6]) -> usize {
        let step = g.step;
        let dt = EPOCH_TIME / EPOCH_FRAMES;
        let raw = (rates[step] * dt.as_secs_f64()) as usize;
        let frames = g.skip + u32::from(g.epoch.is_none()) + EPOCH_FRAMES;
        for _ in 0..frames {
            *now += dt;
            // A write that waited for the link takes most of the frame's time; else
            // the writer waited for the compressors or for nothing.
            let writing = if found[step] == Found::Sealed { dt } else { dt / 10 };
            g.observe(found[step], raw, writing, *now);
            if g.step != step {
                break;
            }
        }
        g.step
    }

    /// Link-bound at none and level 1, CPU-bound above.
    const LINK_TO_1: [Found; 6] = {
        use Found::{Sealed, Sealing};
        [Sealed, Sealed, Sealing, Sealing, Sealing, Sealing]
    };

    #[test]
    fn the_hold_doubles_after_each_failed_probe() {
        // Link-bound at level 1; level 2 is CPU-bound and always gives less.
        let rates = [12.5e6, 65e6, 40e6, 40e6, 40e6, 40e6];
        let mut g = Governor::new(Compression::Adaptive, 3);
        let mut now = Instant::now();
        let mut gaps = Vec::new();
        let mut since = 0;
        for _ in 0..400 {
            let step = epoch(&mut g, &mut now, &LINK_TO_1, &rates);
            if step == 2 {
                // The probe's epoch: it loses and reverts.
                assert_eq!(epoch(&mut g, &mut now, &LINK_TO_1, &rates), 1);
                gaps.push(since);
                since = 0;
            } else {
                since += 1;
            }
        }
        // The first probe straight away, then holds of 2, 4, … 64 epochs.
        assert_eq!(gaps[..8], [0, 2, 4, 8, 16, 32, 64, 64]);
    }

    #[test]
    fn a_probe_that_pays_resets_the_hold() {
        let mut rates = [12.5e6, 65e6, 40e6, 40e6, 40e6, 40e6];
        let mut g = Governor::new(Compression::Adaptive, 3);
        let mut now = Instant::now();
        for _ in 0..40 {
            epoch(&mut g, &mut now, &LINK_TO_1, &rates);
        }
        assert!(g.hold_next > HOLD_FIRST);
        // The link got slower for level 1 only (another data set): level 2 pays now.
        rates[1] = 30e6;
        for _ in 0..70 {
            epoch(&mut g, &mut now, &LINK_TO_1, &rates);
            if g.step == 2 && matches!(g.state, State::Steady) {
                break;
            }
        }
        assert_eq!(g.current(), Compression::Zstd(2));
        assert_eq!(g.hold_next, HOLD_FIRST, "back to the first hold when 2 paid");
    }

    #[test]
    fn the_time_of_a_reconnection_is_not_counted() {
        // Link-bound at level 1, level 2 gives less; a reconnection of 10 s in the
        // middle of the epoch that measures level 1 must not make level 2 look better.
        let rates = [12.5e6, 65e6, 40e6, 40e6, 40e6, 40e6];
        let mut g = Governor::new(Compression::Adaptive, 3);
        let mut now = Instant::now();
        let dt = EPOCH_TIME / EPOCH_FRAMES;
        for _ in 0..g.skip + 1 + EPOCH_FRAMES / 2 {
            now += dt;
            g.observe(Found::Sealed, (rates[1] * dt.as_secs_f64()) as usize, dt, now);
        }
        now += Duration::from_secs(10);
        g.reconnected();
        // The epoch that measures level 1, then the probe of 2.
        assert_eq!(epoch(&mut g, &mut now, &LINK_TO_1, &rates), 2);
        assert_eq!(epoch(&mut g, &mut now, &LINK_TO_1, &rates), 1);
        assert!(g.below.is_none(), "the probe of 2 was not kept");
    }

    #[test]
    fn a_probe_that_keeps_the_link_busy_is_kept_whatever_the_data() {
        // Level 2's epoch found the link the bottleneck, but its data compressed worse
        // than level 1's epoch's: its goodput is lower, and yet it sent more input per
        // byte than level 1 would have on the same data. Kept, and 3 probed at once.
        let rates = [12.5e6, 65e6, 50e6, 48e6, 47e6, 46e6];
        let mut g = Governor::new(Compression::Adaptive, 3);
        let mut now = Instant::now();
        let link = [Found::Sealed; 6];
        assert_eq!(epoch(&mut g, &mut now, &link, &rates), 2);
        assert_eq!(epoch(&mut g, &mut now, &link, &rates), 3);
        // Where the level above cannot keep up, goodput decides: 5 (48 → 47 MB/s) not.
        let mut found = link;
        found[4] = Found::Sealing;
        assert_eq!(epoch(&mut g, &mut now, &found, &rates), 4);
        assert_eq!(epoch(&mut g, &mut now, &found, &rates), 3);
    }

    #[test]
    fn a_link_that_takes_frames_in_bursts_is_the_bottleneck() {
        // The transport's buffers take three frames at once, then the fourth write
        // blocks for as long as the link needs for all four; the writer waits a little
        // for each frame's seal, so most frames find the next one still being sealed.
        // It is the link that holds the transfer back: climb, never drop to none.
        let mut g = Governor::new(Compression::Adaptive, 3);
        let mut now = Instant::now();
        let seal = Duration::from_millis(3);
        for _ in 0..200 {
            for blocked in [false, false, false, true] {
                now += seal;
                let writing = if blocked { Duration::from_millis(60) } else { Duration::ZERO };
                now += writing;
                g.observe(Found::Sealing, MIB as usize, writing, now);
                assert_ne!(g.current(), Compression::Off);
            }
        }
        assert_eq!(g.current(), Compression::Zstd(6));
    }

    #[test]
    fn frames_without_a_bottleneck_move_nothing() {
        let rates = [50e6; 6];
        let mut g = Governor::new(Compression::Adaptive, 3);
        let mut now = Instant::now();
        for _ in 0..50 {
            assert_eq!(epoch(&mut g, &mut now, &[Found::Nothing; 6], &rates), LADDER_START);
        }
    }
}
