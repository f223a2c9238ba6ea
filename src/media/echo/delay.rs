//! Where the echo is: how long after the speaker pipeline's running time
//! its sound comes back in the microphone, found by cross-correlating the
//! two on their shared running-time axis.
//!
//! The canceller (webrtc-audio-processing 0.3) finds an echo only a few to
//! about 45 ms after the moment the speaker pipeline says a sample is
//! played. What a sound card, a sound server, a loopback or a Bluetooth
//! speaker adds beyond that moves the echo out of reach, by an amount no
//! one reports and that differs from start to start; so the agent measures
//! it from what it plays and hears. Pure computation: `tracker.rs` feeds it.

use std::collections::VecDeque;
use std::time::Duration;

/// Input rate (the canceller's, [`super::RATE`]) over the rate correlated at.
const DECIMATION: usize = 16;
/// One correlated sample: 0.5 ms (2 kHz, the band where voices carry).
const STEP_NS: u64 = 1_000_000_000 / (super::RATE as u64 / DECIMATION as u64);
/// The microphone's sound compared, in correlated samples: 0.5 s.
const WINDOW: usize = 1_000;
/// The longest echo delay looked for, in correlated samples: 500 ms.
const MAX_LAG: usize = 1_000;
/// Sound kept per side: the window plus the longest lag, and some slack.
const CAPACITY: usize = WINDOW + MAX_LAG + 400;
/// A buffer this far from where the last one ended starts the side afresh.
const RESYNC_NS: u64 = 20_000_000;
/// Normalised correlation below which no echo is taken to be heard
/// (uncorrelated sound over 0.5 s stays below ~0.15).
const MIN_MATCH: f32 = 0.3;
/// A second peak this close to the best, over 5 ms from it, makes the
/// match ambiguous (a steady tone, a rhythm): no estimate.
const AMBIGUOUS: f32 = 0.9;
/// Peaks closer than this are the same peak.
const PEAK_WIDTH: usize = 10;

/// One side's recent sound, decimated, on the running-time axis both
/// pipelines share.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Running time (ns) of the first sample since the side (re)started.
    origin: u64,
    /// Decimated samples dropped from the front since then.
    dropped: u64,
    /// Input samples taken since then, for where the next buffer belongs.
    taken: u64,
    samples: VecDeque<f32>,
    /// Sum and count of the input samples of the decimated one being made.
    partial: (f32, usize),
    started: bool,
}

impl Timeline {
    /// Adds a buffer of mono samples at the canceller's rate whose first
    /// sample has running time `pts` (ns). A buffer that does not follow
    /// the last (a restart, a gap) starts the timeline afresh.
    pub fn push(&mut self, pts: u64, input: &[i16]) {
        if !self.started || pts.abs_diff(self.next()) > RESYNC_NS {
            *self = Self {
                origin: pts,
                started: true,
                ..Self::default()
            };
        }
        for &sample in input {
            self.partial.0 += f32::from(sample);
            self.partial.1 += 1;
            if self.partial.1 == DECIMATION {
                self.samples.push_back(self.partial.0 / DECIMATION as f32);
                self.partial = (0.0, 0);
            }
        }
        self.taken += input.len() as u64;
        let excess = self.samples.len().saturating_sub(CAPACITY);
        self.samples.drain(..excess);
        self.dropped += excess as u64;
    }

    /// Running time the next buffer should start at.
    fn next(&self) -> u64 {
        self.origin + self.taken * 1_000_000_000 / super::RATE as u64
    }

    /// Running time of `samples[0]`.
    fn start(&self) -> u64 {
        self.origin + self.dropped * STEP_NS
    }

    /// A copy, to correlate outside the lock the pipelines push under.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            start: self.start(),
            samples: self.samples.iter().copied().collect(),
        }
    }
}

/// A side's decimated sound and the running time of its first sample.
#[derive(Debug, Clone)]
pub struct Snapshot {
    start: u64,
    samples: Vec<f32>,
}

/// How long after the reference's running time its sound is in the
/// microphone's last half second, if it is heard there unambiguously.
pub fn find(reference: &Snapshot, microphone: &Snapshot) -> Option<Duration> {
    let window = microphone
        .samples
        .get(microphone.samples.len().checked_sub(WINDOW)?..)?;
    let window_start = microphone.start + (microphone.samples.len() - WINDOW) as u64 * STEP_NS;
    // The reference sample at the window's start for lag 0.
    let at = i64::try_from(window_start.checked_sub(reference.start)? / STEP_NS).ok()?;
    let scores = correlate(window, &reference.samples, at);
    let (best, score) = peak(&scores, None)?;
    if score < MIN_MATCH {
        return None;
    }
    match peak(&scores, Some(best)) {
        Some((_, second)) if second >= AMBIGUOUS * score => None,
        _ => Some(Duration::from_nanos(best as u64 * STEP_NS)),
    }
}

/// Normalised correlation of `window` with `reference` for each lag
/// 0..=MAX_LAG, where lag k lines `window[0]` up with `reference[at - k]`;
/// lags the reference does not cover score 0.
fn correlate(window: &[f32], reference: &[f32], at: i64) -> Vec<f32> {
    let own: f32 = window.iter().map(|x| x * x).sum();
    // energy[i]: the reference's energy before sample i, for each lag's part.
    let energy: Vec<f64> = std::iter::once(0.0)
        .chain(reference.iter().scan(0.0, |sum, &x| {
            *sum += f64::from(x * x);
            Some(*sum)
        }))
        .collect();
    (0..=MAX_LAG)
        .map(|lag| {
            let Some(from) = usize::try_from(at - lag as i64).ok() else {
                return 0.0;
            };
            let Some(part) = reference.get(from..from + window.len()) else {
                return 0.0;
            };
            let norm = (f64::from(own) * (energy[from + window.len()] - energy[from])).sqrt();
            if norm > 0.0 {
                (f64::from(dot(window, part)) / norm).abs() as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// The dot product, in eight lanes so that it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// The highest score and its lag, away from `besides` if given.
fn peak(scores: &[f32], besides: Option<usize>) -> Option<(usize, f32)> {
    scores
        .iter()
        .enumerate()
        .filter(|(lag, _)| besides.is_none_or(|b| lag.abs_diff(b) > PEAK_WIDTH))
        .map(|(lag, &score)| (lag, score))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Noise with a voice's share of low frequencies, deterministic.
    fn noise(n: usize, seed: u32) -> Vec<i16> {
        let mut state = seed;
        let mut low = 0.0f32;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let white = (state >> 16) as f32 / 65_536.0 - 0.5;
                low = 0.9 * low + white;
                (low * 8_000.0) as i16
            })
            .collect()
    }

    const RATE: usize = super::super::RATE as usize;
    const BUFFER: usize = RATE / 100; // 10 ms buffers, as the pipelines push

    /// Pushes `samples` in 10 ms buffers starting at running time `start`.
    fn feed(timeline: &mut Timeline, start: u64, samples: &[i16]) {
        for (i, chunk) in samples.chunks(BUFFER).enumerate() {
            timeline.push(start + i as u64 * 10_000_000, chunk);
        }
    }

    /// The far end played from running time 1 s, heard `delay_ms` later at
    /// `gain`, with `near` (another voice) on top; what `find` says.
    fn echo_found(delay_ms: usize, gain: f32, near: f32) -> Option<Duration> {
        let far = noise(3 * RATE, 1);
        let other = noise(3 * RATE, 2);
        let shift = delay_ms * RATE / 1000;
        let mic: Vec<i16> = (0..3 * RATE)
            .map(|i| {
                let echo = if i >= shift {
                    f32::from(far[i - shift])
                } else {
                    0.0
                };
                (gain * echo + near * f32::from(other[i])) as i16
            })
            .collect();
        let (mut reference, mut microphone) = (Timeline::default(), Timeline::default());
        feed(&mut reference, 1_000_000_000, &far);
        feed(&mut microphone, 1_000_000_000, &mic);
        find(&reference.snapshot(), &microphone.snapshot())
    }

    #[test]
    fn finds_the_echo_delay_to_a_millisecond() {
        for delay in [0, 37, 93, 250, 480] {
            let found = echo_found(delay, 0.5, 0.0).expect("echo found");
            let error = found.as_secs_f64() * 1000.0 - delay as f64;
            assert!(error.abs() <= 1.0, "{delay} ms found as {found:?}");
        }
    }

    #[test]
    fn finds_it_under_a_near_end_as_loud() {
        let found = echo_found(120, 0.5, 0.5).expect("echo found");
        assert!(found.as_millis().abs_diff(120) <= 1, "{found:?}");
    }

    #[test]
    fn no_echo_beyond_the_longest_delay_or_without_one() {
        assert_eq!(echo_found(700, 0.5, 0.0), None);
        assert_eq!(echo_found(50, 0.0, 0.5), None);
    }

    #[test]
    fn a_steady_tone_is_ambiguous() {
        let tone: Vec<i16> = (0..3 * RATE)
            .map(|i| {
                (8_000.0 * (i as f32 * 440.0 * std::f32::consts::TAU / RATE as f32).sin()) as i16
            })
            .collect();
        let (mut reference, mut microphone) = (Timeline::default(), Timeline::default());
        feed(&mut reference, 0, &tone);
        feed(&mut microphone, 0, &tone);
        assert_eq!(find(&reference.snapshot(), &microphone.snapshot()), None);
    }

    #[test]
    fn a_gap_in_running_time_starts_a_side_afresh() {
        let mut timeline = Timeline::default();
        feed(&mut timeline, 0, &noise(RATE, 3));
        assert_eq!(timeline.snapshot().samples.len(), RATE / DECIMATION);
        // 5 ms of jitter is the same stream; a restart 1 s on is not.
        timeline.push(1_005_000_000, &[0; BUFFER]);
        assert_eq!(
            timeline.snapshot().samples.len(),
            (RATE + BUFFER) / DECIMATION
        );
        timeline.push(3_000_000_000, &[0; BUFFER]);
        let fresh = timeline.snapshot();
        assert_eq!(
            (fresh.start, fresh.samples.len()),
            (3_000_000_000, BUFFER / DECIMATION)
        );
    }

    /// What one look costs (`cargo test --release --bin broadcast-agent
    /// cost_of_one_look -- --ignored --nocapture`): docs/measurements/echo-and-talk-back.md.
    #[test]
    #[ignore = "a benchmark: prints the time one look takes"]
    fn cost_of_one_look() {
        let far = noise(3 * RATE, 1);
        let (mut reference, mut microphone) = (Timeline::default(), Timeline::default());
        feed(&mut reference, 0, &far);
        feed(&mut microphone, 0, &far);
        let (reference, microphone) = (reference.snapshot(), microphone.snapshot());
        let mut times: Vec<_> = (0..101)
            .map(|_| {
                let start = std::time::Instant::now();
                std::hint::black_box(find(&reference, &microphone));
                start.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "one look: median {:?}, min {:?}, max {:?} (two a second)",
            times[50], times[0], times[100]
        );
    }
}
