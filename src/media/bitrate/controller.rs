//! The target bitrate from Janus's reports: when the link is full, how
//! far to cut, how fast to grow back.

use std::time::{Duration, Instant};

/// Loss (a fraction) at or above which the link is taken as full. Janus's
/// receiver reports count a packet RTX mended as lost all the same (5 %
/// random loss showed as 3–8 %): below this, loss may be Wi-Fi's, which a
/// lower rate does not mend (GCC's threshold too).
const LOSS_CUT: f64 = 0.10;
/// Loss below which the rate may grow. In between it holds, unless it is
/// above where the link was last found full.
const LOSS_GROW: f64 = 0.02;
/// A cut leaves this share of what got through: room below the link's
/// rate for its buffer to fill again, so that the keyframe a viewer asks
/// for after the loss gets through whole.
const CUT_MARGIN: f64 = 0.8;
/// Growth per second far from the last congestion: a link that is back is
/// used again quickly.
const GROW_FAST: f64 = 0.30;
/// Growth per second up to the rate where the link was last full; from
/// there it rises to [`GROW_FAST`] at [`FAR`] times that rate.
const GROW_NEAR: f64 = 0.05;
/// Growth per second well below it (a cut that went too deep).
const GROW_BELOW: f64 = 0.12;
/// "Around" the last congestion: within this share of its rate.
const NEAR: f64 = 0.1;
/// Past the last congestion, growth stays slow up to this share above its
/// rate: a receiver report comes a second after what it reports, and a
/// probe that grew fast is deep into loss when it is seen (a freeze for
/// viewers); a slow one is seen while retransmission still mends it.
const PROBE_SLOW: f64 = 0.25;
/// Far from the last congestion: this many times its rate. Passed
/// without loss, the congestion is forgotten.
const FAR: f64 = 1.6;
/// Cuts this close together are one congestion.
const EPISODE: Duration = Duration::from_secs(5);
/// A round trip this much above the lowest one seen holds growth: a queue
/// is filling somewhere before loss shows it.
const RTT_HOLD: Duration = Duration::from_millis(100);
/// ... and this much above it cuts, as loss would.
const RTT_CUT: Duration = Duration::from_millis(300);
/// No second cut sooner than this: the next receiver report still covers
/// much of what was sent before the first.
const CUT_GAP: Duration = Duration::from_millis(1200);
/// Janus's NACKs for this share of the video's packets, over the last
/// quarter second, are loss seen early (a receiver report comes a second
/// later): the link is full (a full one showed 30–100 %). Random loss that
/// RTX mends stays below it: at 10 %, a quarter second of 40 packets
/// reaches it about once in 300.
pub(super) const NACK_CUT: f64 = 0.25;
/// A cut within [`CUT_GAP`] of the last must go below this share of the
/// target.
const DEEPER: f64 = 0.8;
/// The most loss a NACK share is taken for.
const NACK_MOST: f64 = 0.5;
/// After a cut, no growth for this long.
const HOLD_AFTER_CUT: Duration = Duration::from_millis(2000);
/// After a cut, no growth past where the link was full for this long: each
/// probe past it that finds the link still full costs the viewers a
/// freeze, so not more often than about every 10 s.
const PROBE_AFTER: Duration = Duration::from_secs(8);
/// A REMB caps the rate for this long (the VideoRoom repeats its REMB
/// every 5 s, the Streaming plugin every second while viewers send one).
const REMB_VALID: Duration = Duration::from_secs(10);
/// The encoder is told a higher rate at most this often ...
const RAISE_EVERY: Duration = Duration::from_millis(500);
/// ... and only a change of at least this share (or one to a bound).
const MIN_STEP: f64 = 0.03;

/// What one report from Janus says; each part is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Report {
    /// Fraction of packets lost since the previous report (0.0..=1.0).
    pub fraction_lost: Option<f64>,
    /// Round-trip time to Janus.
    pub rtt: Option<Duration>,
    /// The receiver's estimate of what it can take, in kbit/s (REMB).
    pub remb_kbps: Option<u32>,
    /// What the encoder really sent since the previous report, kbit/s.
    pub sent_kbps: Option<u32>,
}

/// The target bitrate, from the reports.
///
/// Loss-based, as GCC's loss controller, but quicker on both sides, since
/// the Pi's link is usually either fine or capped (weak Wi-Fi). Tuned
/// against a real Janus behind an nftables policer (`tests/bitrate.rs`): a
/// cap shows no rising round trip, and its burst allowance (a second's
/// worth) hides it for a while, then loses a lot at once.
///
/// - **NACKs for 25 % or more of the video's packets** over a quarter
///   second (WebRTC): the link is full, seen a second before the receiver
///   report says so; a cut as below, with that share (at most half) as the
///   loss. It says when, not how much: Janus asks again for lost
///   retransmissions too, so the rate where the link was full comes from
///   the receiver reports only.
/// - **Loss ≥ 10 %**: the link is full. What got through,
///   `(1 - loss) × sent` (`sent`: what the encoder really sent meanwhile),
///   is the link's rate; the target goes to 80 % of it at once (at `sent`
///   2000 into a 1000 cap: 50 % loss, 800) — not GCC's `× (1 - loss/2)`,
///   which takes several reports, each a second of loss, and of
///   retransmissions that add to the load. The 20 % left lets the link's
///   buffer fill again, so that the keyframe viewers then ask for gets
///   through. That rate is remembered as where the link was full (in a run
///   of cuts, from the report with the most loss).
/// - **2–10 %**: hold (random loss, which RTX mends: Janus's reports count
///   mended packets as lost too, 3–8 % at 5 % random loss); cut as above
///   only when above where the link was last full (probing past a cap), so
///   that it never settles on a loss.
/// - **Below 2 %**: grow; 12 % a second up to 90 % of where the link was
///   last full, 5 % a second around it (±10 %), past it only 8 s after the
///   last cut (each probe that finds the link still full costs viewers a
///   freeze of a second or two), then faster, up to 25 % a second at 1.6
///   times it, where it is forgotten (the cap is gone). From a cap at 600 to
///   1500: under 20 s even when the last cut came just before the cap went.
/// - **Round trip** 100 ms above the lowest seen holds growth (a queue is
///   filling); 300 ms above cuts by 10 %. An early sign where loss comes
///   late (deep Wi-Fi queues); a policer shows none.
/// - **REMB** caps the target while fresh (10 s).
///
/// Never below the floor nor above the configured rate; a cut at most
/// every 1.2 s unless a much deeper one (below 80 %), growth paused 2 s
/// after one; the encoder is told a higher rate at most twice a second
/// and only steps of 3 % or more.
#[derive(Debug, Clone)]
pub struct Controller {
    floor: f64,
    ceiling: f64,
    target: f64,
    /// The rate where the link was last found full.
    congested_at: Option<f64>,
    last_cut: Option<Instant>,
    /// The most loss reported in the current run of cuts.
    worst_loss: f64,
    /// Growth is allowed (the last loss report was low).
    may_grow: bool,
    grown_at: Option<Instant>,
    min_rtt: Option<Duration>,
    remb: Option<(f64, Instant)>,
    /// What the encoder was last told, and when.
    applied: Option<(u32, Instant)>,
}

impl Controller {
    /// A controller between `floor_kbps` and `ceiling_kbps`, starting at the
    /// ceiling.
    pub fn new(floor_kbps: u32, ceiling_kbps: u32) -> Self {
        let ceiling = f64::from(ceiling_kbps.max(1));
        Self {
            floor: f64::from(floor_kbps.clamp(1, ceiling_kbps.max(1))),
            ceiling,
            target: ceiling,
            congested_at: None,
            last_cut: None,
            worst_loss: 0.0,
            may_grow: true,
            grown_at: None,
            min_rtt: None,
            remb: None,
            applied: None,
        }
    }

    /// The target, in kbit/s.
    pub fn target(&self) -> u32 {
        self.target.round() as u32
    }

    /// Takes a report received at `now`.
    pub fn report(&mut self, now: Instant, report: &Report) {
        if let Some(kbps) = report.remb_kbps {
            let kbps = f64::from(kbps);
            self.remb = Some((kbps, now));
            if self.target > kbps {
                self.target = kbps.max(self.floor);
            }
        }
        // What the loss is a share of: what was really sent while it was
        // measured (the encoder lags its target, and undershoots on a still
        // picture), else the target.
        let base = match report.sent_kbps {
            Some(sent) if sent > 0 => f64::from(sent),
            _ => self.target,
        };
        if let Some(lost) = report.fraction_lost {
            let lost = lost.clamp(0.0, 1.0);
            self.may_grow = lost < LOSS_GROW;
            let above_last = self.congested_at.is_some_and(|c| self.target > c);
            if lost >= LOSS_CUT || (lost >= LOSS_GROW && above_last) {
                // What got through is what the link carries, whether or
                // not the target moves now; in a run of cuts, as the report
                // with the most loss says: the link was surely full then (a
                // report that still covers the time before a cut shows a
                // little loss of a lowered rate, and the first of a cap may
                // show a burst that a buffer let through).
                let through = (1.0 - lost) * base;
                let episode = self.last_cut.is_some_and(|at| now - at < EPISODE);
                if !episode || lost >= self.worst_loss {
                    self.congested_at = Some(through);
                    self.worst_loss = lost;
                }
                self.cut(now, CUT_MARGIN * through);
            }
        }
        if let Some(rtt) = report.rtt {
            let min = self.min_rtt.map_or(rtt, |m| m.min(rtt));
            self.min_rtt = Some(min);
            if rtt > min + RTT_CUT {
                self.cut(now, 0.9 * base.min(self.target));
            }
            if rtt > min + RTT_HOLD {
                self.may_grow = false;
            }
        }
    }

    /// Takes the share of the video's packets Janus asked for again (NACK)
    /// over a short window, and what the encoder sent meanwhile: at
    /// [`NACK_CUT`] or more the link is full, as a receiver report of that
    /// loss would say a second later. Below it, nothing: the receiver
    /// reports decide growth.
    pub fn nacked(&mut self, now: Instant, share: f64, sent_kbps: Option<u32>) {
        if share < NACK_CUT {
            return;
        }
        // Under heavy loss Janus asks again for retransmissions lost too:
        // more NACKs than packets. A share tells the onset, not how much:
        // at most half is taken as lost; the next cut, if NACKs go on,
        // takes more.
        let lost = share.min(NACK_MOST);
        let base = sent_kbps.filter(|s| *s > 0).map_or(self.target, f64::from);
        self.may_grow = false;
        // NACKs go on for a while after a cut (the encoder lags, lost
        // retransmissions are asked for again): one cut per gap.
        if self.last_cut.is_some_and(|at| now - at < CUT_GAP) {
            return;
        }
        self.cut(now, CUT_MARGIN * (1.0 - lost) * base);
    }

    /// Lowers the target to `to` (not below the floor), unless it was cut
    /// less than [`CUT_GAP`] ago and `to` is not much lower (a report still
    /// covering the time before that cut; much heavier loss than it
    /// assumed cuts again).
    fn cut(&mut self, now: Instant, to: f64) {
        let recent = self.last_cut.is_some_and(|at| now - at < CUT_GAP);
        // At the floor already: nothing is cut (and growth is not held).
        if to.max(self.floor) >= self.target || (recent && to > DEEPER * self.target) {
            return;
        }
        self.target = to.max(self.floor);
        self.last_cut = Some(now);
        self.grown_at = None;
    }

    /// The highest the target may be now: the ceiling, or a fresh REMB.
    fn cap(&self, now: Instant) -> f64 {
        match self.remb {
            Some((kbps, at)) if now - at < REMB_VALID => kbps.clamp(self.floor, self.ceiling),
            _ => self.ceiling,
        }
    }

    /// Lets time pass: grows the target when allowed.
    pub fn tick(&mut self, now: Instant) {
        let cap = self.cap(now);
        let held = self.last_cut.is_some_and(|at| now - at < HOLD_AFTER_CUT);
        if !self.may_grow || held || self.target >= cap {
            self.grown_at = None;
            self.target = self.target.min(cap);
            return;
        }
        let Some(since) = self.grown_at.replace(now) else {
            return;
        };
        let rate = self
            .congested_at
            .map_or(GROW_FAST, |c| growth(self.target / c));
        let seconds = (now - since).as_secs_f64().min(1.0);
        let mut most = cap;
        if let (Some(c), Some(at)) = (self.congested_at, self.last_cut) {
            if now - at < PROBE_AFTER {
                most = most.min(c.max(self.target));
            }
        }
        self.target = (self.target * (1.0 + rate).powf(seconds)).min(most);
        if self.congested_at.is_some_and(|c| self.target >= FAR * c) {
            self.congested_at = None;
        }
    }

    /// The rate to give the encoder now, if it should change: any lower
    /// rate at once, a higher one at most every [`RAISE_EVERY`]; steps
    /// under [`MIN_STEP`] wait, unless they reach a bound.
    pub fn due(&mut self, now: Instant) -> Option<u32> {
        let target = self.target();
        let (applied, at) = match self.applied {
            None => {
                self.applied = Some((target, now));
                return Some(target);
            }
            Some(applied) => applied,
        };
        if target == applied {
            return None;
        }
        let step = (f64::from(target) - f64::from(applied)).abs() / f64::from(applied.max(1));
        let bound = target == self.floor.round() as u32 || target == self.ceiling.round() as u32;
        let small = step < MIN_STEP && !bound;
        if small || (target > applied && now - at < RAISE_EVERY) {
            return None;
        }
        self.applied = Some((target, now));
        Some(target)
    }

    /// Forgets what the encoder was told: a new one starts at the target.
    pub fn reset_applied(&mut self) {
        self.applied = None;
    }
}

/// Growth per second at `x` times the rate where the link was last full:
/// [`GROW_BELOW`] well below it, [`GROW_NEAR`] around it, then rising to
/// [`GROW_FAST`] at [`FAR`] times it.
fn growth(x: f64) -> f64 {
    if x < 1.0 - NEAR {
        GROW_BELOW
    } else if x < 1.0 + PROBE_SLOW {
        GROW_NEAR
    } else {
        let far = ((x - 1.0 - PROBE_SLOW) / (FAR - 1.0 - PROBE_SLOW)).clamp(0.0, 1.0);
        GROW_NEAR + (GROW_FAST - GROW_NEAR) * far
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(fraction: f64) -> Report {
        Report {
            fraction_lost: Some(fraction),
            ..Report::default()
        }
    }

    /// Runs `c` for `seconds`, ticking every 250 ms, with a report every
    /// second: `report` of what was sent over that second (the encoder at
    /// the target each tick); the time at the end.
    fn run(
        c: &mut Controller,
        start: Instant,
        seconds: u64,
        report: impl Fn(f64) -> Report,
    ) -> Instant {
        let mut now = start;
        for _ in 0..seconds {
            let mut sent = 0.0;
            for _ in 0..4 {
                sent += c.target / 4.0;
                now += Duration::from_millis(250);
                c.tick(now);
            }
            c.report(now, &report(sent));
        }
        now
    }

    /// A link capped at `cap` kbit/s: what is sent above it is lost.
    fn capped(cap: f64) -> impl Fn(f64) -> Report {
        move |sent: f64| Report {
            fraction_lost: Some(((sent - cap) / sent).max(0.0)),
            sent_kbps: Some(sent as u32),
            ..Report::default()
        }
    }

    #[test]
    fn a_capped_link_brings_the_rate_under_the_cap_at_once_and_keeps_it_near() {
        let mut c = Controller::new(300, 2000);
        let start = Instant::now();
        c.report(start, &loss(0.5));
        assert_eq!(c.target(), 800, "80 % of what got through");
        let mut now = start;
        let (mut above, mut sum, mut trace) = (0, 0, Vec::new());
        for _ in 0..30 {
            now = run(&mut c, now, 1, capped(1000.0));
            assert!(c.target() >= 300);
            above += usize::from(c.target() > 1000);
            sum += c.target();
            trace.push(c.target());
        }
        assert!(sum / 30 > 900, "kept near the cap: {trace:?}");
        let most = trace.iter().max().copied().unwrap_or_default();
        assert!(
            above <= 10 && most < 1020,
            "above the cap {above} of 30 s, at most {most}: {trace:?}"
        );
    }

    #[test]
    fn from_the_floor_back_to_the_configured_rate_within_20_seconds() {
        let mut c = Controller::new(300, 2000);
        let start = Instant::now();
        // A cap at the floor for 30 s.
        let now = run(&mut c, start, 30, capped(250.0));
        assert_eq!(c.target(), 300, "never below the floor");
        // The cap goes.
        let mut now = now;
        let mut took = None;
        for second in 1..=20 {
            now = run(&mut c, now, 1, |_| loss(0.0));
            if c.target() == 2000 {
                took = Some(second);
                break;
            }
        }
        let took = took.expect("back at 2000 within 20 s");
        assert!(took <= 17, "took {took} s");
    }

    #[test]
    fn a_cut_just_before_the_cap_goes_still_recovers_within_20_seconds() {
        let mut c = Controller::new(150, 1500);
        let now = run(&mut c, Instant::now(), 30, capped(600.0));
        // The cap's last loss, just before it goes.
        let heavy = Report {
            fraction_lost: Some(0.3),
            sent_kbps: Some(c.target()),
            ..Report::default()
        };
        let mut now = now + Duration::from_secs(2);
        c.report(now, &heavy);
        let mut took = None;
        for second in 1..=20 {
            now = run(&mut c, now, 1, |_| loss(0.0));
            if c.target() == 1500 {
                took = Some(second);
                break;
            }
        }
        assert!(
            took.is_some_and(|t| t <= 19),
            "took {took:?}: at {}",
            c.target()
        );
    }

    #[test]
    fn small_loss_holds_and_never_goes_above_the_ceiling() {
        let mut c = Controller::new(300, 2000);
        let now = run(&mut c, Instant::now(), 10, |_| loss(0.0));
        assert_eq!(c.target(), 2000, "the ceiling is the most");
        c.report(now, &loss(0.3));
        let cut = c.target();
        assert_eq!(cut, 1120);
        // 3 % loss, no congestion known above: hold.
        let mut c2 = Controller::new(300, 2000);
        c2.target = 1000.0;
        c2.report(now, &loss(0.03));
        let _ = run(&mut c2, now, 10, |_| loss(0.03));
        assert_eq!(c2.target(), 1000, "holds at 3 %");
    }

    #[test]
    fn cuts_are_spaced_and_what_was_sent_is_the_base() {
        let mut c = Controller::new(100, 2000);
        let t = Instant::now();
        let heavy = Report {
            fraction_lost: Some(0.5),
            sent_kbps: Some(600),
            ..Report::default()
        };
        c.report(t, &heavy);
        assert_eq!(c.target(), 240, "80 % of half of the 600 really sent");
        // The next report still covers what was sent before the cut.
        c.report(t + Duration::from_millis(500), &heavy);
        assert_eq!(c.target(), 240, "no second cut within 1.2 s");
        c.report(t + Duration::from_millis(1300), &loss(0.5));
        assert_eq!(c.target(), 100, "not below the floor");
    }

    #[test]
    fn remb_caps_while_fresh_and_a_rising_round_trip_holds_growth() {
        let mut c = Controller::new(300, 2000);
        let t = Instant::now();
        c.report(
            t,
            &Report {
                remb_kbps: Some(800),
                ..Report::default()
            },
        );
        assert_eq!(c.target(), 800);
        let now = run(&mut c, t, 5, |_| loss(0.0));
        assert_eq!(c.target(), 800, "capped by the fresh REMB");
        let now = run(&mut c, now, 15, |_| loss(0.0));
        assert_eq!(c.target(), 2000, "the REMB went stale: grows again");
        // A REMB below the floor leaves the floor.
        c.report(
            now,
            &Report {
                remb_kbps: Some(100),
                ..Report::default()
            },
        );
        assert_eq!(c.target(), 300);

        let mut c = Controller::new(300, 2000);
        c.target = 1000.0;
        let rtt = |ms| Report {
            fraction_lost: Some(0.0),
            rtt: Some(Duration::from_millis(ms)),
            ..Report::default()
        };
        c.report(t, &rtt(20));
        c.report(t, &rtt(150));
        let now = run(&mut c, t, 3, |_| rtt(150));
        assert_eq!(c.target(), 1000, "a queue filling: no growth");
        c.report(now + Duration::from_secs(1), &rtt(400));
        assert_eq!(c.target(), 900, "a long queue: cut by 10 %");
    }

    #[test]
    fn many_nacks_cut_early_and_a_few_do_not() {
        let mut c = Controller::new(300, 2000);
        let t = Instant::now();
        c.nacked(t, 0.1, Some(2000));
        assert_eq!(c.target(), 2000, "random loss that RTX mends");
        c.nacked(t, 0.25, Some(1600));
        assert_eq!(c.target(), 960, "80 % of the 75 % of 1600 that got through");
        // The receiver report of that same loss, a second later: no second cut.
        let same = Report {
            fraction_lost: Some(0.25),
            sent_kbps: Some(1600),
            ..Report::default()
        };
        c.report(t + Duration::from_secs(1), &same);
        assert_eq!(c.target(), 960);
        c.tick(t + Duration::from_secs(2));
        c.tick(t + Duration::from_secs(3));
        assert_eq!(c.target(), 960, "no growth until a clean report");
    }

    #[test]
    fn the_encoder_is_told_seldom() {
        let mut c = Controller::new(300, 2000);
        let t = Instant::now();
        assert_eq!(c.due(t), Some(2000), "the first time, at once");
        assert_eq!(c.due(t), None);
        c.report(t, &loss(0.5));
        assert_eq!(c.due(t), Some(800), "a cut at once");
        let mut changes = 0;
        let mut now = t;
        for tick in 1..=80 {
            now += Duration::from_millis(250);
            if tick % 4 == 0 {
                c.report(now, &loss(0.0));
            }
            c.tick(now);
            changes += usize::from(c.due(now).is_some());
        }
        assert_eq!(c.target(), 2000, "back within 20 s");
        assert!(changes <= 40, "at most twice a second: {changes}");
        assert!(changes >= 4, "{changes}");
    }
}
