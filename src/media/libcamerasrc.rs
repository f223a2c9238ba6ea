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

use super::{caps_filter, dimension, element, MediaError};
use crate::config::VideoSettings;

/// The element.
pub const ELEMENT: &str = "libcamerasrc";

/// The raw format asked of the camera, for either encoder.
const FORMAT: &str = "NV12";

/// The colour space asked: Rec. 709, limited range, the camera's own for
/// video (and what the encoders' SPS says).
const COLORIMETRY: &str = "bt709";

/// What the agent asks libcamerasrc for, on any Pi: one structure, every
/// field fixed (libcamerasrc takes the frame rate of the first structure
/// only when fixed, 30 fps otherwise).
pub fn caps(video: &VideoSettings) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", FORMAT)
        .field("width", dimension(video.width))
        .field("height", dimension(video.height))
        .field(
            "framerate",
            gst::Fraction::new(dimension(video.framerate), 1),
        )
        .field("colorimetry", COLORIMETRY)
        .build()
}

/// `libcamerasrc` and the caps it is to produce.
pub fn source(video: &VideoSettings) -> Result<Vec<gst::Element>, MediaError> {
    let src = element(ELEMENT)?;
    Ok(vec![src, caps_filter(caps(video))?])
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

/// Names the setting when libcamerasrc stops because what it can give is
/// not what the agent asked (`not-negotiated`): its sensor modes limit the
/// frame rate at each size (a Camera Module 3 gives 56 fps at 1080p).
pub fn explain(error: MediaError, video: &VideoSettings) -> MediaError {
    let refused = matches!(&error, MediaError::Bus { element, debug, .. }
        if element.contains(ELEMENT) && debug.contains("not-negotiated"));
    if !refused {
        return error;
    }
    MediaError::Setting {
        key: "video.framerate",
        reason: format!(
            "the camera cannot give {}x{} at {} fps (libcamerasrc: not-negotiated); \
             its sensor modes limit the rate at each size: try a lower video.framerate \
             or a smaller video.width and video.height",
            video.width, video.height, video.framerate
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each Pi's ISP writes for the video role and what its encoder
    /// takes (read in the bcm2835-isp and pisp drivers, v4l2h264enc's
    /// bcm2835-codec and x264enc's sink template; see the stand-ins in
    /// tests/standins/gst for the sources).
    const PI_4_ISP: &[&str] = &[
        "I420", "YV12", "NV12", "NV21", "YUY2", "UYVY", "YVYU", "VYUY",
    ];
    const PI_4_ENCODER: &[&str] = &["I420", "YV12", "NV12", "NV21", "YUY2", "YVYU", "UYVY"];
    const PI_5_ISP: &[&str] = &[
        "I420", "YV12", "NV12", "NV21", "YUY2", "UYVY", "Y42B", "Y444",
    ];
    const X264: &[&str] = &["Y444", "Y42B", "I420", "YV12", "NV12"];

    #[test]
    fn each_pi_s_camera_and_encoder_take_the_caps_asked() {
        gst::init().expect("GStreamer initialises");
        let video = VideoSettings {
            width: 1280,
            height: 720,
            framerate: 30,
            ..VideoSettings::default()
        };
        let caps = caps(&video);
        assert_eq!(caps.size(), 1, "{caps}");
        assert!(caps.is_fixed(), "{caps}");
        let s = caps.structure(0).expect("one structure");
        let format = s.get::<&str>("format").expect("a format");
        for (model, isp, encoder) in [("Pi 4", PI_4_ISP, PI_4_ENCODER), ("Pi 5", PI_5_ISP, X264)] {
            assert!(
                isp.contains(&format),
                "{model}'s ISP does not write {format}"
            );
            assert!(
                encoder.contains(&format),
                "{model}'s encoder does not take {format}"
            );
        }
        assert_eq!(s.get::<i32>("width"), Ok(1280));
        assert_eq!(s.get::<i32>("height"), Ok(720));
        assert_eq!(
            s.get::<gst::Fraction>("framerate"),
            Ok(gst::Fraction::new(30, 1))
        );
        // The camera's own for video: asked, not left to a default.
        assert_eq!(s.get::<&str>("colorimetry"), Ok("bt709"));
    }

    #[test]
    fn a_rate_the_camera_cannot_give_names_the_setting() {
        let video = VideoSettings {
            width: 1920,
            height: 1080,
            framerate: 60,
            ..VideoSettings::default()
        };
        let refused = MediaError::Bus {
            element: "/GstPipeline:video/GstLibcameraSrc:libcamerasrc0".into(),
            message: "Internal data stream error.".into(),
            debug: "streaming stopped, reason not-negotiated (-4)".into(),
        };
        let said = explain(refused, &video).to_string();
        assert!(
            said.starts_with("video.framerate: the camera cannot give 1920x1080 at 60 fps"),
            "{said}"
        );
        let other = MediaError::Ended("the source ended".into());
        assert_eq!(explain(other.clone(), &video), other);
    }
}
