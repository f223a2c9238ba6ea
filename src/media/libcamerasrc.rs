//! The Pi camera in-process through GStreamer's `libcamerasrc` (Raspberry
//! Pi OS Bookworm, package `gstreamer1.0-libcamera`), raw frames from the
//! ISP straight into the encoder the agent runs — the Pi's `v4l2h264enc`
//! up to a Pi 4, `x264enc` on a Pi 5 — so a viewer's keyframe request and
//! a bitrate change reach the encoder, which a camera program behind a
//! pipe cannot take.
//!
//! ```text
//! libcamerasrc ! video/x-raw,format=NV12,WxH,F/1,colorimetry ! [videoflip] ! encoder ! caps
//! ```
//!
//! What the caps ask, and why (upstream's rules, read in libcamera's
//! `src/gstreamer` and the Raspberry Pi pipeline handler):
//!
//! - **NV12**: both ISPs (the VideoCore's up to a Pi 4, the PiSP of a Pi 5)
//!   write it, and both encoders take it as it is: `v4l2h264enc`'s
//!   bcm2835-codec natively, x264 as its internal format (no conversion).
//! - **Size and rate as configured**: libcamerasrc takes the first structure
//!   downstream accepts; the ISP scales to any even size, and the frame
//!   rate becomes the sensor's frame duration limits.
//! - **Colorimetry**: left to the camera, which gives the video role
//!   Rec. 709 (limited range) — what the encoders write into the SPS.
//!
//! A camera that is missing, or held by another program, is found before
//! the pipeline is built: libcamerasrc acquires the camera when it goes to
//! READY, and says why it cannot.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::camera::Encoder;
use super::{caps_filter, element, MediaError};
use crate::config::VideoSettings;

/// The element.
pub const ELEMENT: &str = "libcamerasrc";

/// The raw format asked of the camera, for either encoder.
const FORMAT: &str = "NV12";

/// What the agent asks libcamerasrc for, on a machine whose H.264 encoder
/// is `encoder`.
pub fn caps(video: &VideoSettings, encoder: Encoder) -> gst::Caps {
    let _ = encoder;
    gst::Caps::builder("video/x-raw")
        .field("format", FORMAT)
        .field("width", dimension(video.width))
        .field("height", dimension(video.height))
        .field(
            "framerate",
            gst::Fraction::new(dimension(video.framerate), 1),
        )
        .build()
}

/// `libcamerasrc` and the caps it is to produce.
pub fn source(video: &VideoSettings, encoder: Encoder) -> Result<Vec<gst::Element>, MediaError> {
    let src = element(ELEMENT)?;
    Ok(vec![src, caps_filter(caps(video, encoder))?])
}

/// Acquires the camera for a moment (`libcamerasrc` at READY), so a
/// missing or busy camera is one line before anything starts.
pub fn check_camera() -> Result<(), MediaError> {
    let src = element(ELEMENT)?;
    let bus = gst::Bus::new();
    src.set_bus(Some(&bus));
    let result = src.set_state(gst::State::Ready);
    let _ = src.set_state(gst::State::Null);
    if result.is_ok() {
        return Ok(());
    }
    let said = bus
        .iter()
        .find_map(|message| match message.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "it did not start".into());
    Err(MediaError::Camera(format!(
        "libcamerasrc: {said} (is the camera's ribbon cable seated? `rpicam-hello --list-cameras` lists what libcamera sees)"
    )))
}

/// A validated setting as the `i32` GStreamer's caps take.
fn dimension(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}
