//! The H.264 encoder the agent runs for raw sources (`test`, `v4l2`,
//! `libcamerasrc`): the Pi's `v4l2h264enc` where there is one and the
//! settings fit it, else `x264enc` tuned for latency; constrained baseline
//! at the level the mountpoint advertises either way. And what is asked of
//! it while it runs: a keyframe now, another bitrate (`bitrate/`, through
//! [`set_controls`] on the hardware encoder).
//!
//! Keyframes: `rtpsession` (and the WebRTC uplink) turn a viewer's request
//! into a force-key-unit event travelling upstream. `x264enc` obeys it.
//! `v4l2h264enc` of GStreamer 1.22.0 — Debian 12's and Raspberry Pi OS
//! Bookworm's — ignores it (the handling came in 1.22.4), so the event is
//! taken at its output and turned into the driver's `force_key_frame`
//! control, which every version applies at once.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{camera, caps_filter, dimension, element, MediaError};
use crate::config::VideoSettings;

/// The structure of a force-key-unit event (GstVideo's).
pub const FORCE_KEY_UNIT: &str = "GstForceKeyUnit";

/// The encoder's factory, as chosen for the settings and the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `v4l2h264enc`: the VideoCore's encoder (Pi Zero 2 to Pi 4).
    Hardware,
    /// `x264enc` (ultrafast, zerolatency): a Pi 5, or beyond the hardware.
    X264,
}

impl Kind {
    /// The hardware's when the `machine` has one, its element is
    /// `present` and the settings fit it; else x264.
    pub fn choose(video: &VideoSettings, machine: camera::Encoder, present: bool) -> Self {
        let hardware = machine == camera::Encoder::Hardware && present;
        if hardware && camera::hardware_encoder_takes(video) {
            Self::Hardware
        } else {
            Self::X264
        }
    }

    /// The GStreamer element.
    pub fn factory(self) -> &'static str {
        match self {
            Self::Hardware => "v4l2h264enc",
            Self::X264 => "x264enc",
        }
    }
}

/// An encoder in a pipeline. Cheap to clone: clones drive the same element.
#[derive(Debug, Clone)]
pub struct Encoder {
    element: gst::Element,
}

impl Encoder {
    /// An encoder of `kind` for `video`.
    pub fn new(video: &VideoSettings, kind: Kind) -> Result<Self, MediaError> {
        let enc = element(kind.factory())?;
        match kind {
            Kind::Hardware => {
                enc.set_property("extra-controls", hardware_controls(video));
            }
            Kind::X264 => {
                enc.set_property_from_str("tune", "zerolatency");
                enc.set_property_from_str("speed-preset", "ultrafast");
                enc.set_property("bitrate", video.bitrate_kbps);
                enc.set_property("key-int-max", keyframe_interval(video));
            }
        }
        let encoder = Self { element: enc };
        if kind == Kind::Hardware {
            encoder.take_keyframe_requests();
        }
        Ok(encoder)
    }

    /// The encoder and the caps it must produce, for the pipeline.
    pub fn elements(&self, video: &VideoSettings) -> Result<Vec<gst::Element>, MediaError> {
        Ok(vec![
            self.element.clone(),
            caps_filter(encoded_caps(video))?,
        ])
    }

    /// Makes the hardware encoder's next frame a keyframe.
    fn force_keyframe(&self) {
        set_controls(&self.element, |c| c.set("force_key_frame", 1i32));
        // Not kept: setting the controls again (a bitrate) would force another.
        set_controls(&self.element, |c| c.remove_field("force_key_frame"));
    }

    /// Turns the force-key-unit events reaching the hardware encoder's
    /// output into its `force_key_frame` control (see the module's doc).
    fn take_keyframe_requests(&self) {
        let Some(pad) = self.element.static_pad("src") else {
            return;
        };
        let encoder = self.clone();
        pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let keyframe = event
                .structure()
                .is_some_and(|s| s.name() == FORCE_KEY_UNIT);
            if !keyframe {
                return gst::PadProbeReturn::Ok;
            }
            encoder.force_keyframe();
            gst::PadProbeReturn::Handled
        });
    }
}

/// Changes the controls of a hardware encoder (`v4l2h264enc`), which
/// applies those named at once while its device is open (gstv4l2object.c:
/// `extra-controls` set again); the others keep their values.
pub fn set_controls(encoder: &gst::Element, change: impl FnOnce(&mut gst::StructureRef)) {
    let mut controls = encoder
        .property::<Option<gst::Structure>>("extra-controls")
        .unwrap_or_else(|| gst::Structure::new_empty("controls"));
    change(&mut controls);
    encoder.set_property("extra-controls", controls);
}

/// A keyframe every two seconds when nobody asks for one.
fn keyframe_interval(video: &VideoSettings) -> u32 {
    (video.framerate * 2).max(1)
}

/// `v4l2h264enc`'s `extra-controls`: bitrate, keyframe interval, and SPS/PPS
/// repeated before every keyframe, so that a viewer joining mid-stream gets
/// them from the encoder (GStreamer takes only `int` values here).
fn hardware_controls(video: &VideoSettings) -> gst::Structure {
    gst::Structure::builder("controls")
        .field("video_bitrate", bits_per_second(video.bitrate_kbps))
        .field("h264_i_frame_period", dimension(keyframe_interval(video)))
        .field("repeat_sequence_header", 1i32)
        .build()
}

fn bits_per_second(kbps: u32) -> i32 {
    i32::try_from(u64::from(kbps) * 1000).unwrap_or(i32::MAX)
}

/// What the encoders must produce: constrained baseline, as the mountpoint's
/// fmtp says, at its level. `v4l2h264enc` (since GStreamer 1.18) and
/// `x264enc` take the level from here; without one the hardware encoder
/// negotiates level 1.0.
fn encoded_caps(video: &VideoSettings) -> gst::Caps {
    gst::Caps::builder("video/x-h264")
        .field("profile", "constrained-baseline")
        .field("level", video.h264_level().to_string())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pi_s_encoder_where_it_has_one_and_the_settings_fit() {
        use camera::Encoder::{Hardware, Software};
        let hd = VideoSettings::default();
        assert_eq!(Kind::choose(&hd, Hardware, true), Kind::Hardware);
        // A Pi 5 has none; a Pi 4 without the element cannot use it.
        assert_eq!(Kind::choose(&hd, Software, true), Kind::X264);
        assert_eq!(Kind::choose(&hd, Hardware, false), Kind::X264);
        let wide = VideoSettings {
            width: 2560,
            height: 1440,
            ..VideoSettings::default()
        };
        assert_eq!(Kind::choose(&wide, Hardware, true), Kind::X264);
    }

    #[test]
    fn encoders_get_the_level_and_repeat_their_headers() {
        gst::init().expect("GStreamer initialises");
        let mut v = VideoSettings {
            width: 1920,
            height: 1080,
            framerate: 60,
            ..VideoSettings::default()
        };
        let caps = encoded_caps(&v);
        let s = caps.structure(0).expect("one structure");
        assert_eq!(s.get::<&str>("level"), Ok("4.2"));
        assert_eq!(s.get::<&str>("profile"), Ok("constrained-baseline"));
        let controls = hardware_controls(&v);
        assert_eq!(controls.get::<i32>("repeat_sequence_header"), Ok(1));
        assert_eq!(controls.get::<i32>("h264_i_frame_period"), Ok(120));
        v.bitrate_kbps = 8000;
        assert_eq!(
            hardware_controls(&v).get::<i32>("video_bitrate"),
            Ok(8_000_000)
        );
    }
}
