//! Recording the host broadcast on the Pi: the camera's H.264 and the
//! microphone's Opus, exactly as they are sent (no second encode), into
//! segmented Matroska files with both streams, within a disk budget.
//!
//! ```text
//! video pipeline:  ... encoder ! h264parse(config-interval=-1) ! tee ! rtph264pay ! ... udpsink
//!                                                                 └─ queue(leaky) ! appsink ─┐
//! microphone:      ... opusenc ! tee ! rtpopuspay ! ... udpsink                              │
//!                                   └─ queue(leaky) ! appsink ─┐                             │
//!                                                              │  Feed (restamps, drops     │
//! recorder:  appsrc(audio) ────────────────────────────────────┘  while no recorder runs)   │
//!            appsrc(video) ! h264parse ─────────────────────────────────────────────────────┘
//!                 └──> splitmuxsink(matroskamux, max-size-time = segment_s)
//! ```
//!
//! Why a pipeline of its own, fed through appsink/appsrc: the capture
//! pipelines are separate (a dead camera must not silence the microphone),
//! yet a segment must hold both streams, so the muxer cannot live in either.
//! And the recorder must be able to fail — a full disk, a directory that
//! vanished — without touching the live stream: its errors stay on its own
//! bus and its supervisor restarts it with backoff, while the capture
//! pipelines only ever see a leaky queue and an appsink that drops. The
//! feed stamps each buffer with the recorder's running time when it
//! arrives, which puts both streams on one timeline whatever clocks the
//! capture pipelines run on; video waits for a keyframe after each
//! (re)start so that every segment begins decodable.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{devices, element, Built, Given, MediaError, Recipe, Supervision};
use crate::config::Settings;
use crate::rtp::Medium;

/// Segment files are named `broadcast-sNNNNNN-YYYYMMDD-HHMMSS.mkv`: a
/// sequence number that only grows (one more than the highest in the
/// folder), then the wall-clock time (UTC) for people. Age is the sequence,
/// never the time: a Pi without a real-time clock starts in the past at
/// every boot until NTP steps it. Older names
/// (`broadcast-YYYYMMDD-HHMMSS-NNNN.mkv`) count as older than any sequence.
const PREFIX: &str = "broadcast-";
/// Marks the sequence number after [`PREFIX`].
const SEQUENCE: char = 's';
const SUFFIX: &str = ".mkv";
/// How much a recording branch may hold while the recorder is slow.
const BRANCH_QUEUE: Duration = Duration::from_secs(2);
/// What an appsrc may queue before it drops (the recorder stalled).
const SOURCE_QUEUE_BYTES: u64 = 8 << 20;

/// Where the capture pipelines' recording branches deliver, and the
/// recorder's inputs while it runs. Shared by the capture pipelines and the recorder.
#[derive(Default)]
pub struct Feed {
    inputs: Mutex<Inputs>,
}

#[derive(Default)]
struct Inputs {
    video: Option<gst_app::AppSrc>,
    audio: Option<gst_app::AppSrc>,
    /// Video is dropped until a keyframe after the recorder (re)starts.
    video_needs_keyframe: bool,
}

impl Feed {
    /// The recording branch of a capture pipeline: a leaky queue and an
    /// appsink that hands each buffer to the feed and never fails, so
    /// nothing the recorder does can stop the live stream.
    pub fn branch(self: &Arc<Self>, medium: Medium) -> Result<[gst::Element; 2], MediaError> {
        let queue = element("queue")?;
        queue.set_property_from_str("leaky", "downstream");
        queue.set_property("max-size-buffers", 0u32);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property(
            "max-size-time",
            u64::try_from(BRANCH_QUEUE.as_nanos()).unwrap_or(u64::MAX),
        );
        let feed = Arc::downgrade(self);
        let sink = super::hand_over(move |sample| {
            if let Some(feed) = feed.upgrade() {
                feed.push(medium, sample);
            }
        });
        Ok([queue, sink.upcast()])
    }

    /// Hands one encoded buffer to the recorder, if one runs.
    fn push(&self, medium: Medium, sample: &gst::Sample) {
        let Ok(mut inputs) = self.inputs.lock() else {
            return;
        };
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps_owned()) else {
            return;
        };
        if medium == Medium::Video && inputs.video_needs_keyframe {
            if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                return;
            }
            inputs.video_needs_keyframe = false;
        }
        let src = match medium {
            Medium::Video => inputs.video.as_ref(),
            Medium::Audio => inputs.audio.as_ref(),
        };
        let Some(src) = src else { return };
        // Not playing (starting, or stopped after a failure): drop.
        let Some(now) = src.current_running_time() else {
            return;
        };
        let mut buffer = buffer.copy();
        {
            let buffer = buffer.make_mut();
            buffer.set_pts(now);
            buffer.set_dts(now);
        }
        let restamped = gst::Sample::builder().buffer(&buffer).caps(&caps).build();
        // A full or flushing appsrc drops the buffer; the live stream goes on.
        let _ = src.push_sample(&restamped);
    }

    /// Makes `video`/`audio` the recorder's inputs (replacing a previous run's).
    fn attach(&self, video: Option<gst_app::AppSrc>, audio: Option<gst_app::AppSrc>) {
        if let Ok(mut inputs) = self.inputs.lock() {
            *inputs = Inputs {
                video,
                audio,
                video_needs_keyframe: true,
            };
        }
    }
}

/// The recorder pipeline, supervised like the others.
pub struct Recorder {
    settings: Arc<Settings>,
    feed: Arc<Feed>,
    video: bool,
    audio: bool,
}

impl Recorder {
    /// Records what the configured capture pipelines deliver into `feed`.
    pub fn new(settings: &Arc<Settings>, feed: Arc<Feed>, video: bool, audio: bool) -> Self {
        Self {
            settings: Arc::clone(settings),
            feed,
            video,
            audio,
        }
    }

    fn dir(&self) -> &Path {
        &self.settings.recording.dir
    }

    fn source(&self, name: &str) -> gst_app::AppSrc {
        let src = gst_app::AppSrc::builder()
            .name(name)
            .is_live(true)
            .format(gst::Format::Time)
            .max_bytes(SOURCE_QUEUE_BYTES)
            .block(false)
            .build();
        src.set_property_from_str("leaky-type", "downstream");
        src
    }
}

impl Recipe for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn preflight(&self) -> Result<(), MediaError> {
        for factory in ["appsrc", "h264parse", "splitmuxsink", "matroskamux"] {
            devices::require_element(factory)?;
        }
        fs::create_dir_all(self.dir()).map_err(|e| MediaError::Recording {
            dir: self.dir().to_owned(),
            reason: e.to_string(),
        })
    }

    fn build(&self, _: &Given) -> Result<Built, MediaError> {
        let recording = &self.settings.recording;
        let pipeline = gst::Pipeline::with_name("recorder");
        let mux = element("splitmuxsink")?;
        mux.set_property("muxer", element("matroskamux")?);
        mux.set_property(
            "max-size-time",
            u64::try_from(recording.segment_length.as_nanos()).unwrap_or(u64::MAX),
        );
        mux.set_property(
            "location",
            self.dir()
                .join(format!("{PREFIX}%05d{SUFFIX}"))
                .to_string_lossy()
                .as_ref(),
        );
        let (dir, budget) = (self.dir().to_owned(), recording.max_total_bytes());
        mux.connect("format-location", false, move |_| {
            prune(&dir, budget);
            let path = dir.join(segment_name(next_sequence(&dir), SystemTime::now()));
            Some(path.to_string_lossy().into_owned().to_value())
        });
        pipeline
            .add(&mux)
            .map_err(|e| MediaError::build("recorder", e))?;
        let link = |from: &gst::Element, pad: &str| -> Result<(), MediaError> {
            let sink = mux
                .request_pad_simple(pad)
                .ok_or_else(|| MediaError::Build(format!("splitmuxsink has no {pad} pad")))?;
            from.static_pad("src")
                .ok_or_else(|| MediaError::Build("no src pad".into()))?
                .link(&sink)
                .map(drop)
                .map_err(|e| MediaError::build(&format!("cannot link the recorder's {pad}"), e))
        };
        let video = if self.video {
            let src = self.source("video");
            let parse = element("h264parse")?;
            pipeline
                .add_many([src.upcast_ref(), &parse])
                .map_err(|e| MediaError::build("recorder", e))?;
            src.link(&parse)
                .map_err(|e| MediaError::build("recorder video", e))?;
            link(&parse, "video")?;
            Some(src)
        } else {
            None
        };
        let audio = if self.audio {
            let src = self.source("audio");
            pipeline
                .add(&src)
                .map_err(|e| MediaError::build("recorder", e))?;
            link(src.upcast_ref(), "audio_%u")?;
            Some(src)
        } else {
            None
        };
        prune(self.dir(), recording.max_total_bytes());
        self.feed.attach(video, audio);
        Ok(Built::plain(pipeline))
    }

    fn supervision(&self) -> Supervision {
        Supervision {
            drain_on_stop: true,
            ..Supervision::default()
        }
    }
}

/// The name of segment `sequence`, started at `at`, e.g.
/// `broadcast-s000042-20261125-161300.mkv` (UTC).
fn segment_name(sequence: u64, at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{PREFIX}{SEQUENCE}{sequence:06}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}{SUFFIX}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// How a segment's name orders it: by sequence; names without one (an
/// older agent's) first, among themselves by name.
fn age_key(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let sequence = rest
        .strip_prefix(SEQUENCE)
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse::<u64>().ok());
    Some(sequence.map_or((0, name), |n| (n, "")))
}

/// The agent's segments in `dir` with their sizes, oldest first.
fn segments(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<((u64, String), PathBuf, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (n, tie) = age_key(&name)?;
            let key = (n, tie.to_owned());
            Some((key, e.path(), e.metadata().ok()?.len()))
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|(_, path, size)| (path, size))
        .collect()
}

/// One more than the highest sequence number in `dir` (1 in an empty one).
fn next_sequence(dir: &Path) -> u64 {
    let names = fs::read_dir(dir).into_iter().flatten().flatten();
    let highest = names
        .filter_map(|e| Some(age_key(&e.file_name().to_string_lossy())?.0))
        .max();
    highest.unwrap_or(0) + 1
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Deletes the oldest segments until those left, plus room for one more
/// the size of the newest, fit in `budget` bytes. Only the agent's own
/// files (`broadcast-*.mkv`) are touched; failures are logged, not fatal.
fn prune(dir: &Path, budget: u64) {
    let segments = segments(dir);
    let newest = segments.last().map_or(0, |(_, size)| *size);
    let mut total: u64 = segments.iter().map(|(_, size)| size).sum();
    for (path, size) in segments {
        if total.saturating_add(newest) <= budget {
            break;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                total -= size;
                log::info!(
                    "recording: deleted {} to stay within recording.max_total_mb",
                    path.display()
                );
            }
            Err(e) => {
                log::warn!("recording: cannot delete {}: {e}", path.display());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_carry_sequence_and_time() {
        let at = UNIX_EPOCH + Duration::from_secs(1_764_087_180);
        assert_eq!(segment_name(3, at), "broadcast-s000003-20251125-161300.mkv");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn prune_deletes_the_oldest_beyond_the_budget() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The clock stepped back between segments 9 and 10 (a Pi without
        // RTC, rebooted): the sequence, not the time, says which is newer.
        for (name, size) in [
            ("broadcast-20250101-000000-0000.mkv", 100),
            ("broadcast-s000009-20250601-120000.mkv", 100),
            ("broadcast-s000010-19700101-000012.mkv", 100),
            ("broadcast-s000011-19700101-000022.mkv", 100),
            ("notes.txt", 1000),
        ] {
            fs::write(dir.path().join(name), vec![0u8; size]).expect("write");
        }
        assert_eq!(next_sequence(dir.path()), 12);
        prune(dir.path(), 350);
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .expect("read dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "broadcast-s000010-19700101-000012.mkv",
                "broadcast-s000011-19700101-000022.mkv",
                "notes.txt"
            ]
        );
    }
}
