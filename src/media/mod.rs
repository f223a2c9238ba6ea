//! Media: the camera and microphone going to the mountpoint, and the room's
//! audio coming out of the speaker.
//!
//! Each pipeline (video, microphone, the recorder they feed, speaker) is
//! built from typed settings by a [`Recipe`] and run by its own supervisor,
//! so a dead camera never silences the speaker. Pipelines run while the room is wanted
//! open, whether or not Janus answers at the moment: RTP sent to a Janus that
//! is restarting is simply lost, and media flows again the moment the
//! mountpoint is back, without restarting the camera.

pub mod bitrate;
pub mod camera;
pub mod capture;
pub mod devices;
pub mod echo;
pub mod encoder;
pub mod feedback;
pub mod frames;
pub mod libcamerasrc;
pub mod priority;
pub mod recorder;
pub mod rtx;
pub mod speaker;
pub mod supervisor;
pub mod uplink;

use std::net::IpAddr;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Settings, VideoSource};
use crate::rtp::{Medium, SequenceGaps};
use crate::secret::SrtpKey;
use crate::signalling::Signalling;
use crate::state::{RoomState, UplinkKind};
pub use supervisor::PipelineStatus;

/// Why a pipeline cannot start or stopped running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// A GStreamer plugin is not installed.
    #[error("GStreamer element {element} is missing: install {package}")]
    MissingElement {
        element: &'static str,
        package: &'static str,
    },
    /// An ALSA device cannot be opened.
    #[error("{key} = {device:?}: {reason}; ALSA cards here: {cards}")]
    AlsaDevice {
        key: &'static str,
        device: String,
        reason: String,
        cards: String,
    },
    /// A camera program is not installed.
    #[error("camera program {program} not found on PATH: install {package}")]
    MissingProgram {
        program: &'static str,
        package: &'static str,
    },
    /// The pipeline could not be assembled or started.
    #[error("{0}")]
    Build(String),
    /// An element reported an error while running.
    #[error("{element}: {message} ({debug})")]
    Bus {
        element: String,
        message: String,
        debug: String,
    },
    /// The source ended (a camera program exited, a device went away).
    #[error("{0}")]
    Ended(String),
    /// The recording directory cannot be used.
    #[error("recording.dir {dir}: {reason}")]
    Recording {
        dir: std::path::PathBuf,
        reason: String,
    },
    /// Nothing left the pipeline for too long while it was playing.
    #[error("no data sent for {0} s while playing (stalled)")]
    Stalled(u64),
    /// Janus reports it receives nothing although the pipeline sends.
    #[error("Janus has received no {} for {secs} s although the pipeline runs: {hint}", medium.name())]
    NotReceived {
        medium: Medium,
        secs: u64,
        /// What to check.
        hint: String,
    },
    /// The camera cannot be had: none found, or held by another program.
    #[error("{0}")]
    Camera(String),
    /// A setting the camera, its program or its encoder cannot do here.
    #[error("{key}: {reason}")]
    Setting { key: &'static str, reason: String },
}

impl MediaError {
    fn build(what: &str, e: impl std::fmt::Display) -> Self {
        Self::Build(format!("{what}: {e}"))
    }
}

/// What leaves a pipeline: the time of the last buffer, as milliseconds
/// since `origin`, the RTP packets counted by sequence number, and for
/// video the keyframes.
#[derive(Debug, Clone)]
pub struct Flow {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
    rtp: SequenceGaps,
    keyframes: Option<feedback::Keyframes>,
}

impl Flow {
    /// Watches the RTP packets leaving through `pad`; `keyframes` are
    /// counted elsewhere in the pipeline, if it has them.
    fn watch(pad: &gst::Pad, keyframes: Option<feedback::Keyframes>) -> Self {
        let flow = Self {
            origin: Instant::now(),
            last_ms: Arc::default(),
            rtp: SequenceGaps::default(),
            keyframes,
        };
        let (origin, last, rtp) = (flow.origin, Arc::clone(&flow.last_ms), flow.rtp.clone());
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                last.store(millis(origin.elapsed()), Ordering::Relaxed);
                match &info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => rtp.record(buffer),
                    Some(gst::PadProbeData::BufferList(list)) => {
                        list.iter().for_each(|b| rtp.record(b))
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        flow
    }

    /// How long since the last buffer (or since the pipeline was built).
    pub fn idle(&self) -> Duration {
        let now = millis(self.origin.elapsed());
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// The RTP packets sent so far, and the gaps in their sequence numbers.
    pub fn rtp(&self) -> &SequenceGaps {
        &self.rtp
    }

    /// The keyframes sent and requested so far, for video.
    pub fn keyframes(&self) -> Option<&feedback::Keyframes> {
        self.keyframes.as_ref()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A camera program feeding a pipeline through a pipe; killed with the pipeline.
#[derive(Debug)]
pub struct Helper {
    child: Child,
}

impl Helper {
    /// How the camera program ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipeline ready to play, with what keeps it fed.
pub struct Built {
    /// The pipeline.
    pub pipeline: gst::Pipeline,
    /// Buffers leaving the pipeline, for stall detection.
    pub flow: Option<Flow>,
    /// The camera program feeding it, if any.
    pub helper: Option<Helper>,
    /// What the speaker played late or made up (the speaker pipeline).
    pub playout: Option<speaker::Playout>,
    /// What the pipeline runs without, said in the status (an element
    /// that is not installed).
    pub without: Option<String>,
    /// The echo's delay, for the microphone when it cancels echo.
    pub echo: Option<&'static echo::Tracker>,
    /// The PeerConnection, for the WebRTC uplink.
    pub peer: Option<uplink::Peer>,
    /// The encoder's bitrate, for video.
    pub bitrate: Option<Arc<bitrate::Bitrate>>,
}

impl Built {
    /// A pipeline that only its bus tells about: no flow watched, no camera program.
    pub fn plain(pipeline: gst::Pipeline) -> Self {
        Self {
            pipeline,
            flow: None,
            helper: None,
            playout: None,
            without: None,
            echo: None,
            peer: None,
            bitrate: None,
        }
    }
}

impl Drop for Built {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// How a supervisor watches a pipeline, beyond its bus.
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    /// The pipeline encrypts with the mountpoint's SRTP key: it waits for
    /// one, and restarts when the key changes.
    pub srtp: bool,
    /// The pipeline plays the room's forwarder (the published
    /// [`Forward`](crate::state::Forward)): it waits for one, and restarts
    /// when it changes (a new key, a new address).
    pub forward: bool,
    /// Sending nothing for this long while playing is a stall. None:
    /// silence is normal for it.
    pub stall_timeout: Option<Duration>,
    /// What Janus should be receiving from it.
    pub janus: Option<JanusCheck>,
    /// A stop sends end-of-stream first and waits (briefly) for it to come
    /// through, so that files are finished, not cut off.
    pub drain_on_stop: bool,
    /// The pipeline's tail depends on the uplink: it waits until the
    /// reconciler has chosen one, and restarts when it changes.
    pub uplink: bool,
    /// The pipeline runs only with this uplink.
    pub only_with: Option<UplinkKind>,
}

/// A medium of the mountpoint that Janus should receive from a pipeline.
#[derive(Debug, Clone)]
pub struct JanusCheck {
    /// Which one.
    pub medium: Medium,
    /// Janus reporting nothing received for this long is a failure.
    pub within: Duration,
    /// The uplink the check is about: it applies only while that one is
    /// in use (a capture pipeline cannot mend a WebRTC uplink).
    pub via: UplinkKind,
    /// What to check, for the error.
    pub hint: String,
}

/// How one pipeline is checked, built and watched.
pub trait Recipe: Send + Sync + 'static {
    /// `video`, `microphone`, `recorder` or `speaker`.
    fn name(&self) -> &'static str;
    /// Says exactly what is missing before anything starts.
    fn preflight(&self) -> Result<(), MediaError>;
    /// Builds the pipeline (not yet playing) with what the room gave it.
    fn build(&self, given: &Given) -> Result<Built, MediaError>;
    /// What a failure of this pipeline means in the settings' terms,
    /// where the recipe can tell; by default the failure as it is.
    fn explain(&self, error: MediaError) -> MediaError {
        error
    }
    /// How the pipeline is watched; by default, by its bus alone.
    fn supervision(&self) -> Supervision {
        Supervision::default()
    }
}

/// What a pipeline takes from the published state when it is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given {
    /// The key to encrypt with, when [`Supervision::srtp`] says the
    /// pipeline needs one.
    pub srtp: Option<SrtpKey>,
    /// The uplink, when [`Supervision::uplink`] says the pipeline needs it.
    pub uplink: Option<UplinkKind>,
}

/// Live status of each pipeline that is configured.
#[derive(Debug, Clone, Default)]
pub struct MediaStatus {
    /// One receiver per pipeline, in the order video, microphone, recorder,
    /// speaker, uplink.
    pub pipelines: Vec<watch::Receiver<PipelineStatus>>,
}

impl MediaStatus {
    /// A snapshot of every pipeline.
    pub fn snapshot(&self) -> Vec<PipelineStatus> {
        self.pipelines.iter().map(|p| p.borrow().clone()).collect()
    }
}

/// A validated setting as the `i32` GStreamer's caps and properties take.
fn dimension(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Initialises GStreamer (once; later calls do nothing).
pub fn init() -> Result<(), MediaError> {
    gst::init().map_err(|e| MediaError::build("cannot initialise GStreamer", e))
}

/// What this machine lacks for the configured camera source — its program,
/// or a GStreamer element and the package that has it — in one line; for
/// `check`, which does not acquire the camera (the service may hold it).
pub fn camera_missing(settings: &Arc<Settings>) -> Option<MediaError> {
    if settings.video.source == VideoSource::None {
        return None;
    }
    if let Err(e) = init() {
        return Some(e);
    }
    capture::Video::new(settings, None, Arc::default())
        .check_installed()
        .err()
}

/// Starts a supervisor per configured pipeline; `signalling` carries the
/// WebRTC uplink's offers and answers.
pub fn spawn(
    settings: &Arc<Settings>,
    room: &watch::Receiver<RoomState>,
    signalling: &Arc<Signalling>,
) -> Result<(MediaStatus, Vec<JoinHandle<()>>), MediaError> {
    init()?;
    let mut recipes: Vec<Arc<dyn Recipe>> = Vec::new();
    let (video, audio) = (
        settings.video.source != VideoSource::None,
        settings.microphone.enabled,
    );
    let feed = settings
        .recording
        .enabled
        .then(|| Arc::new(recorder::Feed::default()));
    let uplink = Arc::new(uplink::Feed::default());
    let mut bitrate = None;
    if video {
        let recipe = capture::Video::new(settings, feed.clone(), Arc::clone(&uplink));
        bitrate = Some(recipe.bitrate());
        recipes.push(Arc::new(recipe));
    }
    if audio {
        recipes.push(Arc::new(capture::Microphone::new(
            settings,
            feed.clone(),
            Arc::clone(&uplink),
        )));
    }
    if let Some(feed) = feed {
        recipes.push(Arc::new(recorder::Recorder::new(
            settings, feed, video, audio,
        )));
    }
    if settings.speaker.enabled {
        recipes.push(Arc::new(speaker::Speaker::new(settings, room.clone())));
    }
    if settings.sends_media() && settings.stream.transport != crate::config::Transport::Rtp {
        recipes.push(Arc::new(
            uplink::Uplink::new(settings, uplink, Arc::clone(signalling)).with_bitrate(bitrate),
        ));
    }
    let mut status = MediaStatus::default();
    let mut tasks = Vec::new();
    for recipe in recipes {
        let (tx, rx) = watch::channel(PipelineStatus::stopped(recipe.name()));
        status.pipelines.push(rx);
        tasks.push(tokio::spawn(supervisor::supervise(
            recipe,
            room.clone(),
            tx,
        )));
    }
    Ok((status, tasks))
}

/// Makes an element, naming the package to install when its plugin is missing.
fn element(factory: &'static str) -> Result<gst::Element, MediaError> {
    devices::require_element(factory)?;
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|e| MediaError::build(factory, e))
}

/// Adds `elements` to a new pipeline called `name` and links them in order.
fn assemble(name: &str, elements: &[gst::Element]) -> Result<gst::Pipeline, MediaError> {
    let pipeline = gst::Pipeline::with_name(name);
    pipeline
        .add_many(elements)
        .map_err(|e| MediaError::build("cannot add elements", e))?;
    gst::Element::link_many(elements).map_err(|e| {
        let names: Vec<_> = elements.iter().map(|e| e.name().to_string()).collect();
        MediaError::build(&format!("cannot link {}", names.join(" ! ")), e)
    })?;
    Ok(pipeline)
}

/// An appsink that hands each sample to `take` on the streaming thread
/// and never holds its pipeline up: not synchronised, not waited for in a
/// state change, dropping the oldest when `take` falls behind.
fn hand_over(take: impl Fn(&gst::Sample) + Send + Sync + 'static) -> gstreamer_app::AppSink {
    let sink = gstreamer_app::AppSink::builder()
        .sync(false)
        .max_buffers(64)
        .drop(true)
        .callbacks(
            gstreamer_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    if let Ok(sample) = sink.pull_sample() {
                        take(&sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build();
    sink.set_property("async", false);
    sink
}

/// Drops what `src` (a `udpsrc`) receives from anywhere but `from`; the
/// first time, logs `warning` with the sender.
fn only_from(src: &gst::Element, from: IpAddr, warning: &'static str) -> Result<(), MediaError> {
    let pad = src
        .static_pad("src")
        .ok_or_else(|| MediaError::Build("udpsrc without a src pad".into()))?;
    let warned = AtomicBool::new(false);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let sender = sender_of(buffer);
        if sender.is_some_and(|ip| ip.to_canonical() == from.to_canonical()) {
            return gst::PadProbeReturn::Ok;
        }
        if !warned.swap(true, Ordering::Relaxed) {
            let sender = sender.map_or_else(|| "an unknown sender".into(), |ip| ip.to_string());
            log::warn!("{warning}: dropped a datagram from {sender} (only {from} is heard)");
        }
        gst::PadProbeReturn::Drop
    });
    Ok(())
}

/// The address a datagram came from, as `udpsrc` records it.
fn sender_of(buffer: &gst::BufferRef) -> Option<IpAddr> {
    use gstreamer_net::gio::prelude::InetSocketAddressExt;
    let meta = buffer.meta::<gstreamer_net::NetAddressMeta>()?;
    let address = meta
        .addr()
        .downcast::<gstreamer_net::gio::InetSocketAddress>()
        .ok()?;
    Some(IpAddr::from(address.address()))
}

/// A `capsfilter` with `caps`.
fn caps_filter(caps: gst::Caps) -> Result<gst::Element, MediaError> {
    let filter = element("capsfilter")?;
    filter.set_property("caps", caps);
    Ok(filter)
}
