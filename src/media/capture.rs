//! The capture pipelines: camera to the mountpoint's video port as H.264 RTP,
//! microphone to its audio port as Opus RTP. Built element by element from
//! typed settings, never from a string a user wrote.
//!
//! ```text
//! test:      videotestsrc ! caps ! [videoflip] ! x264enc ! caps(baseline) ─┐
//! v4l2:      v4l2src ! caps ! videoconvert ! [videoflip] ! encoder ! caps ─┤
//! libcamerasrc: libcamerasrc ! caps(NV12) ! [videoflip] ! encoder ! caps ─┤
//! rpicamsrc: rpicamsrc ! caps(h264) ! h264parse ───────────────────────────┤
//! raspivid / rpicam-vid ... -o - | appsrc(whole frames) ! h264parse ───────┴─> rtph264pay ! udpsink
//!
//! alsasrc | audiotestsrc ! [audioconvert ! audioresample ! caps(32 kHz) ! webrtcdsp]
//!   ! audioconvert ! audioresample ! caps ! opusenc(10 ms, inband-fec) ! rtpopuspay ! udpsink
//! ```
//!
//! Both share one tail ([`Capture`]): with `stream.srtp`, an `srtpenc` keyed
//! with the mountpoint's key sits between the payloader and `udpsink`; with
//! `recording.enabled`, a `tee` before the payloader feeds the recorder (see
//! `recorder.rs`). The video's payloader feeds an RTP session that exchanges
//! RTCP with the mountpoint (`stream.video_rtcp_port`, not with SRTP), so
//! that viewers' keyframe requests reach the encoder (see `feedback.rs`).
//! Camera programs behind a pipe cannot take a request: they make a keyframe
//! every second instead of every two.

use std::process::{Command, Stdio};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::bitrate::Bitrate;
use super::camera;
use super::devices::{self, CameraFormat, Direction};
use super::echo;
use super::encoder::{self, Encoder};
use super::feedback::{self, Keyframes};
use super::frames;
use super::libcamerasrc;
use super::recorder::Feed;
use super::uplink;
use super::{
    assemble, caps_filter, dimension, element, Built, Flow, Given, Helper, JanusCheck, MediaError,
    Recipe, Supervision,
};
use crate::config::{MicrophoneSettings, Settings, Transport, VideoSource};
use crate::resolve;
use crate::rtp::Medium;
use crate::secret::SrtpKey;
use crate::state::UplinkKind;

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
    /// Where the medium's RTCP goes, when it has a return path.
    rtcp_port: Option<u16>,
    supervision: Supervision,
    recording: Option<Arc<Feed>>,
    /// Where the RTP goes with the WebRTC uplink.
    uplink: Arc<uplink::Feed>,
}

impl Capture {
    fn new(
        settings: &Settings,
        medium: Medium,
        recording: Option<Arc<Feed>>,
        uplink: Arc<uplink::Feed>,
    ) -> Self {
        let stream = &settings.stream;
        let host = settings.stream_host().to_owned();
        Self {
            medium,
            port: match medium {
                Medium::Video => stream.video_port,
                Medium::Audio => stream.audio_port,
            },
            rtcp_port: match medium {
                Medium::Video => (stream.video_rtcp_port != 0).then_some(stream.video_rtcp_port),
                Medium::Audio => None,
            },
            supervision: Supervision {
                srtp: stream.srtp,
                stall_timeout: Some(stream.stall_timeout),
                janus: Some(JanusCheck {
                    medium,
                    within: stream.janus_media_timeout,
                    via: UplinkKind::Rtp,
                    hint: format!("check stream.host ({host}) and firewalls"),
                }),
                drain_on_stop: false,
                forward: false,
                uplink: stream.transport != Transport::Rtp,
                only_with: None,
            },
            host,
            recording,
            uplink,
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
    /// `chain ! [tee ─> recorder] ! pay ! [srtpenc] ! udpsink`, or with
    /// the WebRTC uplink `pay ! appsink` (see `uplink.rs`).
    fn assemble(
        &self,
        chain: Vec<gst::Element>,
        pay: gst::Element,
        given: &Given,
    ) -> Result<(gst::Pipeline, Flow), MediaError> {
        self.assemble_with(chain, pay, None, given)
    }

    /// [`Capture::assemble`], counting the `keyframes` the payloader takes
    /// and, when the medium has an RTCP port and no SRTP, with the RTCP
    /// return path after the payloader (`pay ! feedback ! udpsink`).
    fn assemble_with(
        &self,
        mut chain: Vec<gst::Element>,
        pay: gst::Element,
        keyframes: Option<&Keyframes>,
        given: &Given,
    ) -> Result<(gst::Pipeline, Flow), MediaError> {
        pay.set_property("pt", u32::from(self.medium.payload_type()));
        let tee = match &self.recording {
            Some(_) => Some(element("tee")?),
            None => None,
        };
        chain.extend(tee.clone());
        if let (Some(keyframes), Some(pad)) = (keyframes, pay.static_pad("sink")) {
            keyframes.count_sent(&pad);
        }
        let sink = if given.uplink == Some(UplinkKind::Webrtc) {
            let sink = self.uplink.tail(self.medium, &pay);
            chain.push(pay);
            sink
        } else {
            chain.push(pay);
            self.rtp_tail(&mut chain, keyframes, given)?
        };
        let flow = sink
            .static_pad("sink")
            .map(|pad| Flow::watch(&pad, keyframes.cloned()))
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

    /// The plain RTP tail after the payloader: `[srtpenc | feedback] !
    /// udpsink` to the mountpoint's ports (its `udpsink` returned).
    fn rtp_tail(
        &self,
        chain: &mut Vec<gst::Element>,
        keyframes: Option<&Keyframes>,
        given: &Given,
    ) -> Result<gst::Element, MediaError> {
        let address = resolve::address(&self.host, resolve::TIMEOUT)
            .map_err(|e| MediaError::build("stream.host", e))?;
        match (given.srtp.as_ref(), self.rtcp_port, keyframes) {
            (Some(key), _, _) => chain.push(srtp_encoder(key)?),
            (None, Some(port), Some(keyframes)) => {
                chain.push(feedback::bin(address, port, keyframes)?);
            }
            _ => {}
        }
        self.sink(address)
    }

    /// `udpsink` to the mountpoint's port, not synchronised to the clock: a
    /// live source already paces the stream. It gets an address, looked up
    /// by the caller with a time limit: given a name, `udpsink` would
    /// resolve it itself, for as long as the resolver takes.
    fn sink(&self, address: std::net::IpAddr) -> Result<gst::Element, MediaError> {
        let sink = element("udpsink")?;
        sink.set_property("host", address.to_string());
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
    /// H.264 level: 4, 4.1 or 4.2 on the hardware encoder.
    level: &'static str,
    /// Flush stdout after each frame: a pipe is otherwise fully buffered,
    /// and the tail of each frame waits there for the next ones.
    flush: &'static str,
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
    level: "-lev",
    flush: "-fl",
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
    level: "--level",
    flush: "--flush",
};

/// The camera pipeline.
pub struct Video {
    settings: Arc<Settings>,
    base: Capture,
    /// The encoder's rate, following the link (see `bitrate/`).
    bitrate: Arc<Bitrate>,
}

impl Video {
    /// The camera pipeline for `settings`; it also feeds `recording`, if
    /// given, and `uplink` with the WebRTC uplink.
    pub fn new(
        settings: &Arc<Settings>,
        recording: Option<Arc<Feed>>,
        uplink: Arc<uplink::Feed>,
    ) -> Self {
        Self {
            settings: Arc::clone(settings),
            base: Capture::new(settings, Medium::Video, recording, uplink),
            bitrate: Arc::new(Bitrate::new(&settings.video)),
        }
    }

    /// The video's bitrate, for the uplink's reports to reach.
    pub fn bitrate(&self) -> Arc<Bitrate> {
        Arc::clone(&self.bitrate)
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

    /// The arguments that make the camera program write baseline H.264 to
    /// stdout, flushed frame by frame, a keyframe every second (it cannot
    /// make one when a viewer asks); `machine` are the flags this machine
    /// needs (see `camera.rs`).
    fn program_args(&self, program: &str, machine: &[&str]) -> Vec<String> {
        let v = &self.settings.video;
        let flags = if program == "raspivid" {
            &RASPIVID
        } else {
            &RPICAM_VID
        };
        let mut args: Vec<String> = flags.fixed.iter().map(|s| (*s).to_owned()).collect();
        let valued = [
            (flags.width, v.width.to_string()),
            (flags.height, v.height.to_string()),
            (flags.framerate, v.framerate.to_string()),
            (flags.bitrate, (v.bitrate_kbps * 1000).to_string()),
            (flags.keyframe_interval, v.framerate.max(1).to_string()),
            (flags.rotation, v.rotation.degrees().to_string()),
            (flags.level, v.h264_level().to_string()),
        ];
        for (flag, value) in valued {
            args.extend([flag.to_owned(), value]);
        }
        let switches = [
            (v.hflip, flags.hflip),
            (v.vflip, flags.vflip),
            (true, flags.flush),
        ];
        args.extend(
            switches
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| (*f).to_owned()),
        );
        args.extend(machine.iter().map(|f| (*f).to_owned()));
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

    /// The Pi camera through rpicamsrc, which encodes on the GPU itself.
    fn rpicamsrc(&self) -> Result<Vec<gst::Element>, MediaError> {
        let v = &self.settings.video;
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
        // SPS/PPS before every keyframe: a viewer joining later can decode.
        src.set_property("inline-headers", true);
        let caps = gst::Caps::builder("video/x-h264")
            .field("width", dimension(v.width))
            .field("height", dimension(v.height))
            .field("framerate", gst::Fraction::new(dimension(v.framerate), 1))
            .field("profile", "constrained-baseline")
            .build();
        Ok(vec![src, caps_filter(caps)?, element("h264parse")?])
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

    /// The H.264 encoder for raw sources, with the caps after it (see
    /// `encoder.rs`).
    fn encoder(&self) -> Result<Vec<gst::Element>, MediaError> {
        let v = &self.settings.video;
        let kind = self.encoder_kind();
        log::info!(
            "video: {}x{} at {} kbit/s, encoded by {}",
            v.width,
            v.height,
            v.bitrate_kbps,
            kind.factory()
        );
        Encoder::new(v, kind)?.elements(v)
    }

    /// The encoder a raw source feeds: the Pi's for its cameras (`v4l2`,
    /// `libcamerasrc`) where it has one, x264 otherwise.
    fn encoder_kind(&self) -> encoder::Kind {
        let v = &self.settings.video;
        let camera = matches!(v.source, VideoSource::V4l2 | VideoSource::Libcamerasrc);
        let machine = if camera {
            camera::Encoder::of_this_machine()
        } else {
            camera::Encoder::Software
        };
        let present = gst::ElementFactory::find("v4l2h264enc").is_some();
        encoder::Kind::choose(v, machine, present)
    }

    /// What follows `v4l2src` up to raw video: the camera's `format` at the
    /// configured size and rate, a JPEG decoder for MJPEG (the Pi's
    /// `v4l2jpegdec` when present, else `jpegdec`), and `videoconvert`.
    fn v4l2_raw(&self, format: CameraFormat) -> Result<Vec<gst::Element>, MediaError> {
        let mut chain = vec![caps_filter(devices::caps_as(&self.raw_caps(), format))?];
        if format == CameraFormat::Jpeg {
            let decoder = if gst::ElementFactory::find("v4l2jpegdec").is_some() {
                "v4l2jpegdec"
            } else {
                "jpegdec"
            };
            chain.push(element(decoder)?);
        }
        chain.push(element("videoconvert")?);
        Ok(chain)
    }

    /// Checks that the camera program or elements the source needs are
    /// installed (the camera itself is not asked: see `preflight`).
    pub fn check_installed(&self) -> Result<(), MediaError> {
        if let Some((candidates, package)) = self.program() {
            devices::find_program(candidates).ok_or(MediaError::MissingProgram {
                program: candidates[0],
                package,
            })?;
        }
        let source = match self.settings.video.source {
            VideoSource::Test => "videotestsrc",
            VideoSource::V4l2 => "v4l2src",
            VideoSource::Libcamerasrc => libcamerasrc::ELEMENT,
            VideoSource::Rpicamsrc => "rpicamsrc",
            VideoSource::Raspivid | VideoSource::Libcamera | VideoSource::None => "appsrc",
        };
        self.base.preflight(&[source, "h264parse", "rtph264pay"])?;
        let raw = matches!(
            self.settings.video.source,
            VideoSource::Test | VideoSource::V4l2 | VideoSource::Libcamerasrc
        );
        if raw {
            devices::require_element(self.encoder_kind().factory())?;
        }
        Ok(())
    }

    /// Starts the camera program and reads its stdout into `appsrc`, frame
    /// by frame (see `frames.rs`).
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
        let machine = if program == "raspivid" {
            Vec::new()
        } else {
            camera::rpicam_vid_flags_here(&path, &self.settings.video)?
        };
        let (announcements, stdin) = if machine.starts_with(&camera::ANNOUNCE_FRAMES) {
            let (pipe, stdin) = frames::Announcements::pipe()
                .map_err(|e| MediaError::build("cannot make a pipe for the camera program", e))?;
            (Some(pipe), stdin)
        } else {
            (None, Stdio::null())
        };
        let mut child = Command::new(&path)
            .args(self.program_args(program, &machine))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| MediaError::build(&format!("cannot start {}", path.display()), e))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(MediaError::Build(format!("{program} has no stdout pipe")));
        };
        let src = gstreamer_app::AppSrc::builder()
            .caps(
                &gst::Caps::builder("video/x-h264")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build(),
            )
            .is_live(true)
            .do_timestamp(true)
            .format(gst::Format::Time)
            .block(true)
            .build();
        let helper = Helper { child };
        frames::spawn(stdout, announcements, src.clone())
            .map_err(|e| MediaError::build("cannot start the camera's reader", e))?;
        Ok((vec![src.upcast(), element("h264parse")?], helper))
    }
}

impl Recipe for Video {
    fn name(&self) -> &'static str {
        "video"
    }

    fn preflight(&self) -> Result<(), MediaError> {
        self.check_installed()?;
        if self.settings.video.source == VideoSource::Libcamerasrc {
            libcamerasrc::check_camera()?;
        }
        Ok(())
    }

    fn build(&self, given: &Given) -> Result<Built, MediaError> {
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
                let format = devices::v4l2_format(&v.device, &self.raw_caps())?;
                let src = element("v4l2src")?;
                src.set_property("device", &v.device);
                let mut chain = vec![src];
                chain.extend(self.v4l2_raw(format)?);
                chain.extend(self.flips()?);
                chain.extend(self.encoder()?);
                chain
            }
            VideoSource::Libcamerasrc => {
                let mut chain = libcamerasrc::source(v)?;
                chain.extend(self.flips()?);
                chain.extend(self.encoder()?);
                chain
            }
            VideoSource::Rpicamsrc => self.rpicamsrc()?,
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
        let keyframes = Keyframes::default();
        let (pipeline, flow) = self
            .base
            .assemble_with(chain, pay, Some(&keyframes), given)?;
        self.bitrate.attach(&pipeline);
        let mut built = Built::plain(pipeline);
        built.flow = Some(flow);
        built.helper = helper;
        built.bitrate = Some(self.bitrate());
        Ok(built)
    }

    fn explain(&self, error: MediaError) -> MediaError {
        match self.settings.video.source {
            VideoSource::Libcamerasrc => libcamerasrc::explain(error, &self.settings.video),
            _ => error,
        }
    }

    fn supervision(&self) -> Supervision {
        self.base.supervision.clone()
    }
}

/// The microphone pipeline.
pub struct Microphone {
    settings: Arc<Settings>,
    base: Capture,
    /// Voice processing is configured but `webrtcdsp` is missing: logged once.
    warned: std::sync::atomic::AtomicBool,
}

/// Opus in-band FEC is tuned for this much loss (`packet-loss-percentage`):
/// each packet carries a coarse copy of the one before.
const EXPECTED_LOSS_PERCENT: i32 = 10;

impl Microphone {
    /// The microphone pipeline for `settings`; it also feeds `recording`,
    /// if given, and `uplink` with the WebRTC uplink.
    pub fn new(
        settings: &Arc<Settings>,
        recording: Option<Arc<Feed>>,
        uplink: Arc<uplink::Feed>,
    ) -> Self {
        Self {
            settings: Arc::clone(settings),
            base: Capture::new(settings, Medium::Audio, recording, uplink),
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn is_test(&self) -> bool {
        self.settings.microphone.device == MicrophoneSettings::TEST_DEVICE
    }

    /// What the status says when voice processing is configured but
    /// cannot run here; None when it runs or is not wanted.
    fn without_processing(&self) -> Option<String> {
        let wanted = self
            .settings
            .microphone
            .processes(self.settings.echo_cancel());
        (wanted && !echo::available()).then(|| {
            format!(
                "echo cancellation, noise suppression and gain control: \
                 webrtcdsp is missing (install {})",
                echo::PACKAGE
            )
        })
    }

    /// `webrtcdsp` at [`echo::RATE`] between resamplers, as configured;
    /// nothing when no processing is wanted or possible.
    fn processing(&self) -> Result<Vec<gst::Element>, MediaError> {
        let mic = &self.settings.microphone;
        let echo_cancel = self.settings.echo_cancel();
        if !mic.processes(echo_cancel) || !echo::available() {
            return Ok(Vec::new());
        }
        let dsp = element("webrtcdsp")?;
        dsp.set_property("echo-cancel", echo_cancel);
        dsp.set_property("noise-suppression", mic.noise_suppression);
        dsp.set_property("gain-control", mic.gain_control);
        if echo_cancel {
            // Makes the probe if the speaker has not yet: it must exist
            // when `webrtcdsp` starts, and gives silence until fed.
            echo::probe()?;
            dsp.set_property("probe", echo::PROBE);
        }
        let filter = caps_filter(echo::caps())?;
        if echo_cancel {
            echo::attach_microphone(&filter, echo::tracker(mic))?;
        }
        Ok(vec![
            element("audioconvert")?,
            element("audioresample")?,
            filter,
            dsp,
        ])
    }

    /// `opusenc` at `microphone.bitrate_kbps` with in-band FEC, in 10 ms
    /// frames: the sound leaves 10 ms sooner than in Opus's default 20 ms
    /// (lip sync: the sound is the later of the two), for about 7 % more CPU
    /// in the encoder and 16 kbit/s more of packet headers.
    fn encoder(&self) -> Result<gst::Element, MediaError> {
        let enc = element("opusenc")?;
        enc.set_property(
            "bitrate",
            i32::try_from(self.settings.microphone.bitrate_kbps * 1000).unwrap_or(i32::MAX),
        );
        enc.set_property("inband-fec", true);
        enc.set_property_from_str("frame-size", "10");
        enc.set_property("packet-loss-percentage", EXPECTED_LOSS_PERCENT);
        Ok(enc)
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
        if let Some(missing) = self.without_processing() {
            if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::warn!("microphone: running without {missing}");
            }
        }
        if !self.is_test() {
            devices::check_alsa(
                "microphone.device",
                &self.settings.microphone.device,
                Direction::Capture,
            )?;
        }
        Ok(())
    }

    fn build(&self, given: &Given) -> Result<Built, MediaError> {
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
            // Time stamps from the pipeline's clock: the echo canceller lines
            // the microphone up with the speaker by them. A driver's own
            // (ALSA's `pulse` plugin: wall-clock time) would be decades off
            // the shared system clock, and the reference never found.
            src.set_property("use-driver-timestamps", false);
            src
        };
        let caps = gst::Caps::builder("audio/x-raw")
            .field("rate", 48_000i32)
            .field("channels", 1i32)
            .build();
        let processing = self.processing()?;
        let shares_clock = self.settings.echo_cancel() && !processing.is_empty();
        let mut chain = vec![src];
        chain.extend(processing);
        chain.extend([
            element("audioconvert")?,
            element("audioresample")?,
            caps_filter(caps)?,
            self.encoder()?,
        ]);
        let (pipeline, flow) = self.base.assemble(chain, element("rtpopuspay")?, given)?;
        if shares_clock {
            echo::share_clock(&pipeline);
        }
        let mut built = Built::plain(pipeline);
        built.flow = Some(flow);
        built.without = self.without_processing();
        built.echo = shares_clock.then(|| echo::tracker(mic));
        Ok(built)
    }

    fn supervision(&self) -> Supervision {
        self.base.supervision.clone()
    }
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
        Video::new(&Arc::new(settings), None, Arc::default())
    }

    #[test]
    fn rpicam_vid_writes_inline_baseline_h264_to_stdout() {
        // A Pi 4: the hardware encoder, no machine flags.
        let args = video(180, true).program_args("rpicam-vid", &[]).join(" ");
        assert_eq!(
            args,
            "-t 0 -n --inline --codec h264 --profile baseline --width 640 --height 480 \
             --framerate 25 --bitrate 1500000 --intra 25 --rotation 180 --level 4 --hflip --flush -o -"
        );
    }

    #[test]
    fn a_pi_5_gets_its_flags_before_the_output() {
        let machine =
            camera::rpicam_vid_flags(camera::Encoder::Software, Some(camera::Version(1, 6, 0)));
        let args = video(0, false)
            .program_args("rpicam-vid", &machine)
            .join(" ");
        assert!(
            args.ends_with("--level 4 --flush --libav-format h264 --low-latency -o -"),
            "{args}"
        );
    }

    #[test]
    fn raspivid_has_its_own_flags() {
        let args = video(90, false).program_args("raspivid", &[]).join(" ");
        assert_eq!(
            args,
            "-t 0 -n -ih -pf baseline -w 640 -h 480 -fps 25 -b 1500000 -g 25 -rot 90 -lev 4 -fl -o -"
        );
    }

    /// x264enc refuses caps whose level is too low for the frame; the level
    /// given must let a real pipeline run. (Not under qemu: the cross
    /// sysroot has no gstreamer1.0-plugins-ugly.)
    #[test]
    fn x264_takes_the_level_it_is_given() {
        gst::init().expect("GStreamer initialises");
        if gst::ElementFactory::find("x264enc").is_none() {
            eprintln!("skipped: no x264enc here (gstreamer1.0-plugins-ugly)");
            return;
        }
        let mut settings = Settings::default();
        settings.video.source = VideoSource::Test;
        settings.video.width = 320;
        settings.video.height = 240;
        settings.video.framerate = 15;
        let video = Video::new(&Arc::new(settings), None, Arc::default());
        let mut chain = vec![
            element("videotestsrc").expect("videotestsrc"),
            caps_filter(video.raw_caps()).expect("caps"),
        ];
        chain.extend(video.encoder().expect("encoder"));
        let sink = element("appsink").expect("appsink");
        chain.push(sink.clone());
        let pipeline = assemble("x264-level", &chain).expect("pipeline");
        pipeline.set_state(gst::State::Playing).expect("plays");
        let appsink = sink
            .dynamic_cast::<gstreamer_app::AppSink>()
            .expect("an appsink");
        let sample = appsink
            .try_pull_sample(gst::ClockTime::from_seconds(5))
            .expect("an encoded frame");
        let _ = pipeline.set_state(gst::State::Null);
        let caps = sample.caps().expect("caps");
        let s = caps.structure(0).expect("one structure");
        assert_eq!(s.get::<&str>("level"), Ok("4"), "{caps}");
        // The SPS's level_idc, as the AVC configuration record repeats it.
        let record = s.get::<gst::Buffer>("codec_data").expect("avc codec_data");
        let record = record.map_readable().expect("readable");
        assert_eq!(record.as_slice().get(3), Some(&40), "the SPS says level 4");
    }

    /// A webcam that sends MJPEG (here `jpegenc` stands in for the camera
    /// after `v4l2src`) is decoded to raw video by a real pipeline.
    #[test]
    fn mjpeg_from_a_webcam_is_decoded() {
        gst::init().expect("GStreamer initialises");
        let mut settings = Settings::default();
        settings.video.source = VideoSource::V4l2;
        settings.video.width = 640;
        settings.video.height = 360;
        settings.video.framerate = 15;
        let video = Video::new(&Arc::new(settings), None, Arc::default());
        let src = element("videotestsrc").expect("videotestsrc");
        let raw = caps_filter(video.raw_caps()).expect("caps");
        let jpeg = gst::ElementFactory::make("jpegenc")
            .build()
            .expect("jpegenc");
        let mut chain = vec![src, raw, jpeg];
        chain.extend(video.v4l2_raw(CameraFormat::Jpeg).expect("chain"));
        let names: Vec<String> = chain
            .iter()
            .filter_map(|e| e.factory().map(|f| f.name().to_string()))
            .collect();
        assert!(names.iter().any(|n| n.ends_with("jpegdec")), "{names:?}");
        let sink = element("appsink").expect("appsink");
        chain.push(sink.clone());
        let pipeline = assemble("mjpeg", &chain).expect("pipeline");
        pipeline.set_state(gst::State::Playing).expect("plays");
        let appsink = sink
            .dynamic_cast::<gstreamer_app::AppSink>()
            .expect("an appsink");
        let sample = appsink.try_pull_sample(gst::ClockTime::from_seconds(5));
        let _ = pipeline.set_state(gst::State::Null);
        let caps = sample
            .expect("a decoded frame")
            .caps()
            .expect("caps")
            .to_string();
        assert!(
            caps.starts_with("video/x-raw") && caps.contains("width=(int)640"),
            "{caps}"
        );
    }
}
