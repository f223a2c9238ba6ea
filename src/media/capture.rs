//! The capture pipelines: camera to the mountpoint's video port as H.264 RTP,
//! microphone to its audio port as Opus RTP. Built element by element from
//! typed settings, never from a string a user wrote.
//!
//! ```text
//! test:      videotestsrc ! caps ! [videoflip] ! x264enc ! caps(baseline) ─┐
//! v4l2:      v4l2src ! caps ! videoconvert ! [videoflip] ! encoder ! caps ─┤
//! rpicamsrc: rpicamsrc ! caps(h264) ! h264parse ───────────────────────────┤
//! raspivid / rpicam-vid ... -o - | fdsrc ! caps(h264) ! h264parse ─────────┴─> rtph264pay ! udpsink
//!
//! alsasrc | audiotestsrc ! audioconvert ! audioresample ! caps ! opusenc ! rtpopuspay ! udpsink
//! ```
//!
//! Both share one tail ([`Capture`]): with `stream.srtp`, an `srtpenc` keyed
//! with the mountpoint's key sits between the payloader and `udpsink`; with
//! `recording.enabled`, a `tee` before the payloader feeds the recorder (see
//! `recorder.rs`).

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::devices::{self, Direction};
use super::recorder::Feed;
use super::{
    assemble, caps_filter, element, Built, Flow, Helper, JanusCheck, MediaError, Recipe,
    Supervision,
};
use crate::config::{MicrophoneSettings, Settings, VideoSource};
use crate::rtp::Medium;
use crate::secret::SrtpKey;

/// RTP packets stay well under a typical path MTU (and VPN overheads).
const RTP_MTU: u32 = 1200;

/// `srtpenc` for AES_CM_128_HMAC_SHA1_80 with `key` (what Janus's
/// `srtpsuite = 80` expects), RTCP likewise.
fn srtp_encoder(key: &SrtpKey) -> Result<gst::Element, MediaError> {
    let enc = element("srtpenc")?;
    enc.set_property("key", gst::Buffer::from_slice(*key.expose()));
    for (property, value) in [
        ("rtp-cipher", "aes-128-icm"),
        ("rtp-auth", "hmac-sha1-80"),
        ("rtcp-cipher", "aes-128-icm"),
        ("rtcp-auth", "hmac-sha1-80"),
    ] {
        enc.set_property_from_str(property, value);
    }
    Ok(enc)
}

/// What both capture pipelines share: one medium of the mountpoint, sent
/// to its port as RTP (SRTP with `stream.srtp`), watched for stalls and for
/// what Janus receives, and copied to the recorder when one runs.
struct Capture {
    medium: Medium,
    host: String,
    port: u16,
    supervision: Supervision,
    recording: Option<Arc<Feed>>,
}

impl Capture {
    fn new(settings: &Settings, medium: Medium, recording: Option<Arc<Feed>>) -> Self {
        let stream = &settings.stream;
        let host = settings.stream_host().to_owned();
        Self {
            medium,
            port: match medium {
                Medium::Video => stream.video_port,
                Medium::Audio => stream.audio_port,
            },
            supervision: Supervision {
                srtp: stream.srtp,
                stall_timeout: Some(stream.stall_timeout),
                janus: Some(JanusCheck {
                    medium,
                    within: stream.janus_media_timeout,
                    host: host.clone(),
                }),
                drain_on_stop: false,
                forward: false,
            },
            host,
            recording,
        }
    }

    /// Checks the elements of the shared tail, after the source's own.
    fn preflight(&self, source: &[&'static str]) -> Result<(), MediaError> {
        let srtp = self.supervision.srtp.then_some("srtpenc");
        for factory in source.iter().copied().chain(["udpsink"]).chain(srtp) {
            devices::require_element(factory)?;
        }
        Ok(())
    }

    /// Assembles the pipeline from its source `chain` and the shared tail:
    /// `chain ! [tee ─> recorder] ! pay ! [srtpenc] ! udpsink`.
    fn assemble(
        &self,
        mut chain: Vec<gst::Element>,
        pay: gst::Element,
        srtp: Option<&SrtpKey>,
    ) -> Result<(gst::Pipeline, Flow), MediaError> {
        pay.set_property("pt", u32::from(self.medium.payload_type()));
        let tee = match &self.recording {
            Some(_) => Some(element("tee")?),
            None => None,
        };
        chain.extend(tee.clone());
        chain.push(pay);
        if let Some(key) = srtp {
            chain.push(srtp_encoder(key)?);
        }
        let sink = self.sink()?;
        let flow = sink
            .static_pad("sink")
            .map(|pad| Flow::watch(&pad))
            .ok_or_else(|| MediaError::Build("udpsink without a sink pad".into()))?;
        chain.push(sink);
        let name = match self.medium {
            Medium::Video => "video",
            Medium::Audio => "microphone",
        };
        let pipeline = assemble(name, &chain)?;
        if let (Some(tee), Some(feed)) = (tee, &self.recording) {
            let branch = feed.branch(self.medium)?;
            pipeline
                .add_many(&branch)
                .map_err(|e| MediaError::build("cannot add the recording branch", e))?;
            gst::Element::link_many([&tee, &branch[0], &branch[1]])
                .map_err(|e| MediaError::build("cannot link the recording branch", e))?;
        }
        Ok((pipeline, flow))
    }

    /// `udpsink` to the mountpoint's port, not synchronised to the clock: a
    /// live source already paces the stream.
    fn sink(&self) -> Result<gst::Element, MediaError> {
        let sink = element("udpsink")?;
        sink.set_property("host", &self.host);
        sink.set_property("port", i32::from(self.port));
        sink.set_property("sync", false);
        sink.set_property("async", false);
        Ok(sink)
    }
}

/// The command-line flags of a camera program that writes H.264 to stdout.
struct CameraFlags {
    /// Run forever, no preview, SPS/PPS inline, baseline profile.
    fixed: &'static [&'static str],
    width: &'static str,
    height: &'static str,
    framerate: &'static str,
    /// In bit/s.
    bitrate: &'static str,
    keyframe_interval: &'static str,
    rotation: &'static str,
    hflip: &'static str,
    vflip: &'static str,
}

/// `raspivid` (legacy camera stack).
const RASPIVID: CameraFlags = CameraFlags {
    fixed: &["-t", "0", "-n", "-ih", "-pf", "baseline"],
    width: "-w",
    height: "-h",
    framerate: "-fps",
    bitrate: "-b",
    keyframe_interval: "-g",
    rotation: "-rot",
    hflip: "-hf",
    vflip: "-vf",
};

/// `rpicam-vid` / `libcamera-vid` (Raspberry Pi OS Bookworm).
const RPICAM_VID: CameraFlags = CameraFlags {
    fixed: &[
        "-t",
        "0",
        "-n",
        "--inline",
        "--codec",
        "h264",
        "--profile",
        "baseline",
    ],
    width: "--width",
    height: "--height",
    framerate: "--framerate",
    bitrate: "--bitrate",
    keyframe_interval: "--intra",
    rotation: "--rotation",
    hflip: "--hflip",
    vflip: "--vflip",
};

/// The camera pipeline.
pub struct Video {
    settings: Arc<Settings>,
    base: Capture,
}

impl Video {
    /// The camera pipeline for `settings`; it also feeds `recording`, if given.
    pub fn new(settings: &Arc<Settings>, recording: Option<Arc<Feed>>) -> Self {
        Self {
            settings: Arc::clone(settings),
            base: Capture::new(settings, Medium::Video, recording),
        }
    }

    /// The camera program for a piped source, as (candidates, package).
    fn program(&self) -> Option<(&'static [&'static str], &'static str)> {
        match self.settings.video.source {
            VideoSource::Raspivid => {
                Some((&["raspivid"], "libraspberrypi-bin (legacy camera stack)"))
            }
            VideoSource::Libcamera => Some((&["rpicam-vid", "libcamera-vid"], "rpicam-apps")),
            _ => None,
        }
    }

    /// The arguments that make the camera program write baseline H.264 to stdout.
    fn program_args(&self, program: &str) -> Vec<String> {
        let v = &self.settings.video;
        let flags = if program == "raspivid" {
            &RASPIVID
        } else {
            &RPICAM_VID
        };
        let mut args: Vec<String> = flags.fixed.iter().map(|s| (*s).to_owned()).collect();
        let valued = [
            (flags.width, v.width),
            (flags.height, v.height),
            (flags.framerate, v.framerate),
            (flags.bitrate, v.bitrate_kbps * 1000),
            (flags.keyframe_interval, v.framerate * 2),
            (flags.rotation, v.rotation.degrees()),
        ];
        for (flag, value) in valued {
            args.extend([flag.to_owned(), value.to_string()]);
        }
        let mirrors = [(v.hflip, flags.hflip), (v.vflip, flags.vflip)];
        args.extend(
            mirrors
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| (*f).to_owned()),
        );
        args.extend(["-o", "-"].map(String::from));
        args
    }

    /// Raw video caps at the configured size and rate.
    fn raw_caps(&self) -> gst::Caps {
        let v = &self.settings.video;
        gst::Caps::builder("video/x-raw")
            .field("width", dimension(v.width))
            .field("height", dimension(v.height))
            .field("framerate", gst::Fraction::new(dimension(v.framerate), 1))
            .build()
    }

    /// `videoflip`s for rotation and mirroring, for sources that do not do it themselves.
    fn flips(&self) -> Result<Vec<gst::Element>, MediaError> {
        use crate::config::Rotation;
        let v = &self.settings.video;
        let rotation = match v.rotation {
            Rotation::Deg90 => Some("clockwise"),
            Rotation::Deg180 => Some("rotate-180"),
            Rotation::Deg270 => Some("counterclockwise"),
            Rotation::Deg0 => None,
        };
        let mirrors = [
            v.hflip.then_some("horizontal-flip"),
            v.vflip.then_some("vertical-flip"),
        ];
        std::iter::once(rotation)
            .chain(mirrors)
            .flatten()
            .map(|method| {
                let flip = element("videoflip")?;
                flip.set_property_from_str("method", method);
                Ok(flip)
            })
            .collect()
    }

    /// H.264 encoder for raw sources: the Pi's hardware encoder when present,
    /// else x264 tuned for latency; constrained baseline either way, as the
    /// mountpoint's fmtp says.
    fn encoder(&self) -> Result<Vec<gst::Element>, MediaError> {
        let v = &self.settings.video;
        let keyframe_interval = (v.framerate * 2).max(1);
        let encoder = if self.settings.video.source == VideoSource::V4l2
            && gst::ElementFactory::find("v4l2h264enc").is_some()
        {
            let enc = element("v4l2h264enc")?;
            let controls = gst::Structure::builder("controls")
                .field(
                    "video_bitrate",
                    i32::try_from(v.bitrate_kbps * 1000).unwrap_or(i32::MAX),
                )
                .field("h264_i_frame_period", dimension(keyframe_interval))
                .build();
            enc.set_property("extra-controls", controls);
            enc
        } else {
            let enc = element("x264enc")?;
            enc.set_property_from_str("tune", "zerolatency");
            enc.set_property_from_str("speed-preset", "ultrafast");
            enc.set_property("bitrate", v.bitrate_kbps);
            enc.set_property("key-int-max", keyframe_interval);
            enc
        };
        let profile = caps_filter(
            gst::Caps::builder("video/x-h264")
                .field("profile", "constrained-baseline")
                .build(),
        )?;
        Ok(vec![encoder, profile])
    }

    /// Starts the camera program and reads its stdout with `fdsrc`.
    fn piped_source(
        &self,
        candidates: &[&'static str],
        package: &'static str,
    ) -> Result<(Vec<gst::Element>, Helper), MediaError> {
        let (program, path) =
            devices::find_program(candidates).ok_or(MediaError::MissingProgram {
                program: candidates[0],
                package,
            })?;
        let mut child = Command::new(&path)
            .args(self.program_args(program))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| MediaError::build(&format!("cannot start {}", path.display()), e))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(MediaError::Build(format!("{program} has no stdout pipe")));
        };
        let src = element("fdsrc")?;
        src.set_property("fd", stdout.as_raw_fd());
        src.set_property("do-timestamp", true);
        let caps = caps_filter(
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .build(),
        )?;
        let helper = Helper {
            child,
            _stdout: stdout,
        };
        Ok((vec![src, caps, element("h264parse")?], helper))
    }
}

impl Recipe for Video {
    fn name(&self) -> &'static str {
        "video"
    }

    fn preflight(&self) -> Result<(), MediaError> {
        if let Some((candidates, package)) = self.program() {
            devices::find_program(candidates).ok_or(MediaError::MissingProgram {
                program: candidates[0],
                package,
            })?;
        }
        let source = match self.settings.video.source {
            VideoSource::Test => "videotestsrc",
            VideoSource::V4l2 => "v4l2src",
            VideoSource::Rpicamsrc => "rpicamsrc",
            VideoSource::Raspivid | VideoSource::Libcamera | VideoSource::None => "fdsrc",
        };
        self.base.preflight(&[source, "h264parse", "rtph264pay"])
    }

    fn build(&self, srtp: Option<&SrtpKey>) -> Result<Built, MediaError> {
        let v = &self.settings.video;
        let mut helper = None;
        let mut chain = match v.source {
            VideoSource::Test => {
                let src = element("videotestsrc")?;
                src.set_property("is-live", true);
                let mut chain = vec![src, caps_filter(self.raw_caps())?];
                chain.extend(self.flips()?);
                chain.extend(self.encoder()?);
                chain
            }
            VideoSource::V4l2 => {
                let src = element("v4l2src")?;
                src.set_property("device", &v.device);
                let mut chain = vec![src, caps_filter(self.raw_caps())?, element("videoconvert")?];
                chain.extend(self.flips()?);
                chain.extend(self.encoder()?);
                chain
            }
            VideoSource::Rpicamsrc => {
                let src = element("rpicamsrc")?;
                src.set_property(
                    "bitrate",
                    i32::try_from(v.bitrate_kbps * 1000).unwrap_or(i32::MAX),
                );
                src.set_property("preview", false);
                src.set_property("rotation", dimension(v.rotation.degrees()));
                src.set_property("hflip", v.hflip);
                src.set_property("vflip", v.vflip);
                src.set_property("keyframe-interval", dimension(v.framerate * 2));
                let caps = gst::Caps::builder("video/x-h264")
                    .field("width", dimension(v.width))
                    .field("height", dimension(v.height))
                    .field("framerate", gst::Fraction::new(dimension(v.framerate), 1))
                    .field("profile", "constrained-baseline")
                    .build();
                vec![src, caps_filter(caps)?, element("h264parse")?]
            }
            VideoSource::Raspivid | VideoSource::Libcamera => {
                let (candidates, package) = self.program().ok_or_else(|| {
                    MediaError::Build("piped source without a camera program".into())
                })?;
                let (chain, child) = self.piped_source(candidates, package)?;
                helper = Some(child);
                chain
            }
            VideoSource::None => return Err(MediaError::Build("video.source is none".into())),
        };
        let pay = element("rtph264pay")?;
        pay.set_property("config-interval", 1i32);
        pay.set_property("mtu", RTP_MTU);
        // Recording: SPS/PPS before every keyframe, so that each segment
        // (and a recorder that starts late) can be decoded on its own.
        if self.base.recording.is_some() {
            let parse = element("h264parse")?;
            parse.set_property("config-interval", -1i32);
            chain.push(parse);
        }
        let (pipeline, flow) = self.base.assemble(chain, pay, srtp)?;
        Ok(Built {
            pipeline,
            flow: Some(flow),
            helper,
        })
    }

    fn supervision(&self) -> Supervision {
        self.base.supervision.clone()
    }
}

/// The microphone pipeline.
pub struct Microphone {
    settings: Arc<Settings>,
    base: Capture,
}

impl Microphone {
    /// The microphone pipeline for `settings`; it also feeds `recording`, if given.
    pub fn new(settings: &Arc<Settings>, recording: Option<Arc<Feed>>) -> Self {
        Self {
            settings: Arc::clone(settings),
            base: Capture::new(settings, Medium::Audio, recording),
        }
    }

    fn is_test(&self) -> bool {
        self.settings.microphone.device == MicrophoneSettings::TEST_DEVICE
    }
}

impl Recipe for Microphone {
    fn name(&self) -> &'static str {
        "microphone"
    }

    fn preflight(&self) -> Result<(), MediaError> {
        let source = if self.is_test() {
            "audiotestsrc"
        } else {
            "alsasrc"
        };
        self.base.preflight(&[source, "opusenc", "rtpopuspay"])?;
        if !self.is_test() {
            devices::check_alsa(
                "microphone.device",
                &self.settings.microphone.device,
                Direction::Capture,
            )?;
        }
        Ok(())
    }

    fn build(&self, srtp: Option<&SrtpKey>) -> Result<Built, MediaError> {
        let mic = &self.settings.microphone;
        let src = if self.is_test() {
            let src = element("audiotestsrc")?;
            src.set_property("is-live", true);
            src.set_property("freq", 440.0f64);
            src.set_property("volume", 0.3f64);
            src
        } else {
            let src = element("alsasrc")?;
            src.set_property("device", &mic.device);
            src
        };
        let caps = gst::Caps::builder("audio/x-raw")
            .field("rate", 48_000i32)
            .field("channels", 1i32)
            .build();
        let enc = element("opusenc")?;
        enc.set_property(
            "bitrate",
            i32::try_from(mic.bitrate_kbps * 1000).unwrap_or(i32::MAX),
        );
        let chain = vec![
            src,
            element("audioconvert")?,
            element("audioresample")?,
            caps_filter(caps)?,
            enc,
        ];
        let (pipeline, flow) = self.base.assemble(chain, element("rtpopuspay")?, srtp)?;
        Ok(Built {
            pipeline,
            flow: Some(flow),
            helper: None,
        })
    }

    fn supervision(&self) -> Supervision {
        self.base.supervision.clone()
    }
}

/// A validated setting as the `i32` GStreamer's caps and properties take.
fn dimension(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(rotation: u32, hflip: bool) -> Video {
        let mut settings = Settings::default();
        settings.video.width = 640;
        settings.video.height = 480;
        settings.video.framerate = 25;
        settings.video.bitrate_kbps = 1500;
        settings.video.rotation =
            crate::config::Rotation::try_from(rotation).expect("a valid rotation");
        settings.video.hflip = hflip;
        Video::new(&Arc::new(settings), None)
    }

    #[test]
    fn rpicam_vid_writes_inline_baseline_h264_to_stdout() {
        let args = video(180, true).program_args("rpicam-vid").join(" ");
        assert_eq!(
            args,
            "-t 0 -n --inline --codec h264 --profile baseline --width 640 --height 480 \
             --framerate 25 --bitrate 1500000 --intra 50 --rotation 180 --hflip -o -"
        );
    }

    #[test]
    fn raspivid_has_its_own_flags() {
        let args = video(90, false).program_args("raspivid").join(" ");
        assert_eq!(
            args,
            "-t 0 -n -ih -pf baseline -w 640 -h 480 -fps 25 -b 1500000 -g 50 -rot 90 -o -"
        );
    }
}
