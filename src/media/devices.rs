//! Pre-flight checks: before a pipeline starts, say exactly what is missing —
//! a GStreamer plugin (and the package that has it), an ALSA device (and the
//! cards that exist), a camera program, a size and rate a V4L2 camera does
//! not offer (and what it offers).

use std::path::PathBuf;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::MediaError;

/// The Debian / Raspberry Pi OS package that provides each element the agent uses.
const PACKAGES: &[(&str, &str)] = &[
    ("alsasink", "gstreamer1.0-alsa"),
    ("alsasrc", "gstreamer1.0-alsa"),
    ("audioconvert", "gstreamer1.0-plugins-base"),
    ("audioresample", "gstreamer1.0-plugins-base"),
    ("audiotestsrc", "gstreamer1.0-plugins-base"),
    ("opusdec", "gstreamer1.0-plugins-base"),
    ("opusenc", "gstreamer1.0-plugins-base"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
    ("videotestsrc", "gstreamer1.0-plugins-base"),
    ("rtph264pay", "gstreamer1.0-plugins-good"),
    ("rtpjitterbuffer", "gstreamer1.0-plugins-good"),
    ("rtpopusdepay", "gstreamer1.0-plugins-good"),
    ("rtpopuspay", "gstreamer1.0-plugins-good"),
    ("udpsink", "gstreamer1.0-plugins-good"),
    ("udpsrc", "gstreamer1.0-plugins-good"),
    ("v4l2src", "gstreamer1.0-plugins-good"),
    ("videoflip", "gstreamer1.0-plugins-good"),
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("splitmuxsink", "gstreamer1.0-plugins-good"),
    ("matroskamux", "gstreamer1.0-plugins-good"),
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("tee", "libgstreamer1.0-0"),
    ("queue", "libgstreamer1.0-0"),
    ("srtpenc", "gstreamer1.0-plugins-bad"),
    ("webrtcdsp", "gstreamer1.0-plugins-bad"),
    ("webrtcechoprobe", "gstreamer1.0-plugins-bad"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    ("jpegdec", "gstreamer1.0-plugins-good"),
    ("v4l2jpegdec", "gstreamer1.0-plugins-good"),
    ("libcamerasrc", "gstreamer1.0-libcamera"),
    (
        "v4l2h264enc",
        "gstreamer1.0-plugins-good (a Pi 4 or earlier: the VideoCore's encoder)",
    ),
    (
        "rpicamsrc",
        "gstreamer1.0-plugins-good from Raspberry Pi OS with the legacy camera stack",
    ),
];

/// Fails with the package to install when GStreamer lacks `factory`.
pub fn require_element(factory: &'static str) -> Result<(), MediaError> {
    if gst::ElementFactory::find(factory).is_some() {
        return Ok(());
    }
    let package = PACKAGES
        .iter()
        .find(|(name, _)| *name == factory)
        .map_or("the GStreamer plugin package that provides it", |(_, p)| *p);
    Err(MediaError::MissingElement {
        element: factory,
        package,
    })
}

/// Whether ALSA is asked to capture or to play.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// A microphone.
    Capture,
    /// A speaker.
    Playback,
}

/// Opens (and closes at once) an ALSA device, so a typo or a missing card is
/// reported with the list of cards that do exist.
pub fn check_alsa(key: &'static str, device: &str, direction: Direction) -> Result<(), MediaError> {
    let alsa_direction = match direction {
        Direction::Capture => alsa::Direction::Capture,
        Direction::Playback => alsa::Direction::Playback,
    };
    // Catch alsa-lib's own messages on this thread (it would print them to
    // stderr on every retry) and put them in the one error we report.
    let lib_messages = alsa::Output::local_error_handler().ok();
    match alsa::PCM::new(device, alsa_direction, true) {
        Ok(_) => Ok(()),
        Err(e) => {
            let detail = lib_messages
                .map(|m| m.borrow().to_string().trim().replace('\n', "; "))
                .filter(|d| !d.is_empty());
            Err(MediaError::AlsaDevice {
                key,
                device: device.to_owned(),
                reason: match detail {
                    Some(detail) => format!("{e} ({detail})"),
                    None => e.to_string(),
                },
                cards: alsa_cards(),
            })
        }
    }
}

/// "0: bcm2835 Headphones, 1: USB PnP Sound Device" or "none".
pub fn alsa_cards() -> String {
    let cards: Vec<String> = alsa::card::Iter::new()
        .filter_map(Result::ok)
        .map(|card| {
            let name = card.get_name().unwrap_or_else(|_| "?".into());
            format!("{}: {name}", card.get_index())
        })
        .collect();
    if cards.is_empty() {
        "none".into()
    } else {
        cards.join(", ")
    }
}

/// The first of `programs` found on `PATH`.
pub fn find_program(programs: &[&'static str]) -> Option<(&'static str, PathBuf)> {
    let path = std::env::var_os("PATH")?;
    programs.iter().find_map(|program| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
            .map(|found| (*program, found))
    })
}

/// How a V4L2 camera delivers the configured size and rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraFormat {
    /// Raw video, encoded as it is.
    Raw,
    /// Motion JPEG, decoded before encoding: most cheap webcams offer
    /// 720p and 1080p only this way (USB 2 bandwidth).
    Jpeg,
}

impl CameraFormat {
    /// The media type V4L2 caps give the format.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Raw => "video/x-raw",
            Self::Jpeg => "image/jpeg",
        }
    }
}

/// What the V4L2 device at `device` offers (its probed caps), read with
/// `v4l2src` opened and closed again.
pub fn v4l2_caps(device: &str) -> Result<gst::Caps, MediaError> {
    let unusable = |reason: String| MediaError::Setting {
        key: "video.device",
        reason: format!("{device}: {reason}"),
    };
    let src = gst::ElementFactory::make("v4l2src")
        .property("device", device)
        .build()
        .map_err(|e| unusable(e.to_string()))?;
    let probe = gst::Pipeline::with_name("v4l2-probe");
    probe.add(&src).map_err(|e| unusable(e.to_string()))?;
    let opened = probe.set_state(gst::State::Ready);
    let caps = src.static_pad("src").map(|pad| pad.query_caps(None));
    let failure = probe
        .bus()
        .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]));
    let _ = probe.set_state(gst::State::Null);
    match (opened, caps, failure) {
        (Ok(_), Some(caps), None) => Ok(caps),
        (_, _, Some(message)) => Err(unusable(match message.view() {
            gst::MessageView::Error(e) => e.error().to_string(),
            _ => "cannot be opened".into(),
        })),
        _ => Err(unusable("cannot be opened".into())),
    }
}

/// How the V4L2 camera at `device` delivers `wanted` (raw caps at the
/// configured size and rate); when it cannot, the error lists what it offers.
pub fn v4l2_format(device: &str, wanted: &gst::Caps) -> Result<CameraFormat, MediaError> {
    let offered = v4l2_caps(device)?;
    camera_format(&offered, wanted).ok_or_else(|| MediaError::Setting {
        key: "video.device",
        reason: format!(
            "{device} offers no {} as raw video or MJPEG; it offers {}",
            describe_wanted(wanted),
            describe_offers(&offered)
        ),
    })
}

/// How `offered` caps deliver `wanted`: raw if offered, else as JPEG;
/// `None` if neither.
pub fn camera_format(offered: &gst::Caps, wanted: &gst::Caps) -> Option<CameraFormat> {
    [CameraFormat::Raw, CameraFormat::Jpeg]
        .into_iter()
        .find(|format| offered.can_intersect(&caps_as(wanted, *format)))
}

/// `caps` with the media type of `format`.
pub fn caps_as(caps: &gst::Caps, format: CameraFormat) -> gst::Caps {
    let mut caps = caps.copy();
    if let Some(s) = caps.make_mut().structure_mut(0) {
        s.set_name(format.media_type());
    }
    caps
}

/// "1280x720 at 30 fps".
fn describe_wanted(wanted: &gst::Caps) -> String {
    match wanted.structure(0) {
        Some(s) => match (s.get::<i32>("width"), s.get::<i32>("height")) {
            (Ok(w), Ok(h)) => format!("{w}x{h} at {} fps", rates(s)),
            _ => wanted.to_string(),
        },
        None => "video".into(),
    }
}

/// "YUY2 640x480 (30, 15 fps), 1280x720 (10 fps); MJPEG 1280x720 (30 fps)":
/// what a V4L2 device offers, one line, grouped by format in its order.
pub fn describe_offers(offered: &gst::Caps) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for s in offered.iter() {
        let format = match s.name().as_str() {
            "video/x-raw" => s.get::<&str>("format").unwrap_or("raw").to_owned(),
            "image/jpeg" => "MJPEG".to_owned(),
            other => other.trim_start_matches("video/x-").to_uppercase(),
        };
        let size = match (s.get::<i32>("width"), s.get::<i32>("height")) {
            (Ok(w), Ok(h)) => format!("{w}x{h}"),
            _ => "any size".to_owned(),
        };
        let entry = format!("{size} ({} fps)", rates(s));
        match groups.iter_mut().find(|(f, _)| *f == format) {
            Some((_, entries)) => entries.push(entry),
            None => groups.push((format, vec![entry])),
        }
    }
    if groups.is_empty() {
        return "nothing".into();
    }
    groups
        .iter()
        .map(|(format, entries)| format!("{format} {}", entries.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A caps structure's frame rates: "30, 15", "5-30", or "any".
fn rates(s: &gst::StructureRef) -> String {
    let show = |f: gst::Fraction| {
        if f.denom() == 1 {
            f.numer().to_string()
        } else {
            format!("{}/{}", f.numer(), f.denom())
        }
    };
    if let Ok(rate) = s.get::<gst::Fraction>("framerate") {
        return show(rate);
    }
    if let Ok(list) = s.get::<gst::List>("framerate") {
        let all: Vec<_> = list
            .iter()
            .filter_map(|v| v.get::<gst::Fraction>().ok())
            .map(show)
            .collect();
        return all.join(", ");
    }
    if let Ok(range) = s.get::<gst::FractionRange>("framerate") {
        return format!("{}-{}", show(range.min()), show(range.max()));
    }
    "any".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_element_names_its_package() {
        gst::init().expect("GStreamer initialises");
        let e = require_element("x265enc-not-a-real-element").expect_err("missing");
        assert!(e
            .to_string()
            .contains("x265enc-not-a-real-element is missing"));
        require_element("videotestsrc").expect("gstreamer1.0-plugins-base is installed");
    }

    #[test]
    fn unknown_alsa_device_lists_cards() {
        let e = check_alsa("speaker.device", "hw:CARD=NoSuchCard", Direction::Playback)
            .expect_err("no such card");
        let text = e.to_string();
        assert!(
            text.starts_with("speaker.device = \"hw:CARD=NoSuchCard\""),
            "{text}"
        );
        assert!(text.contains("ALSA cards here:"), "{text}");
    }

    #[test]
    fn programs_are_found_on_path() {
        assert!(find_program(&["sh"]).is_some());
        assert!(find_program(&["no-such-camera-program"]).is_none());
    }

    /// Caps as `v4l2src` reports them for a typical cheap USB webcam: raw
    /// YUY2 only at small sizes, 720p and 1080p only as MJPEG.
    const MJPEG_WEBCAM: &str = "image/jpeg, width=(int)1920, height=(int)1080, \
        pixel-aspect-ratio=(fraction)1/1, framerate=(fraction){ 30/1, 25/1, 20/1, 15/1 }; \
        image/jpeg, width=(int)1280, height=(int)720, pixel-aspect-ratio=(fraction)1/1, \
        framerate=(fraction){ 30/1, 25/1, 15/1 }; \
        video/x-raw, format=(string)YUY2, width=(int)640, height=(int)480, \
        pixel-aspect-ratio=(fraction)1/1, framerate=(fraction){ 30/1, 15/1 }; \
        video/x-raw, format=(string)YUY2, width=(int)1280, height=(int)720, \
        pixel-aspect-ratio=(fraction)1/1, framerate=(fraction)10/1";

    fn raw(width: i32, height: i32, fps: i32) -> gst::Caps {
        gst::Caps::builder("video/x-raw")
            .field("width", width)
            .field("height", height)
            .field("framerate", gst::Fraction::new(fps, 1))
            .build()
    }

    #[test]
    fn raw_is_taken_where_offered_else_mjpeg() {
        gst::init().expect("GStreamer initialises");
        let offered: gst::Caps = MJPEG_WEBCAM.parse().expect("caps parse");
        let format = |w, h, fps| camera_format(&offered, &raw(w, h, fps));
        assert_eq!(format(640, 480, 30), Some(CameraFormat::Raw));
        assert_eq!(format(1280, 720, 10), Some(CameraFormat::Raw));
        // 720p at 30 fps only as MJPEG (raw 720p only at 10 fps).
        assert_eq!(format(1280, 720, 30), Some(CameraFormat::Jpeg));
        assert_eq!(format(1920, 1080, 25), Some(CameraFormat::Jpeg));
        assert_eq!(format(1920, 1080, 60), None);
        assert_eq!(format(800, 600, 30), None);
    }

    #[test]
    fn offers_are_listed_on_one_line() {
        gst::init().expect("GStreamer initialises");
        let offered: gst::Caps = MJPEG_WEBCAM.parse().expect("caps parse");
        assert_eq!(
            describe_offers(&offered),
            "MJPEG 1920x1080 (30, 25, 20, 15 fps), 1280x720 (30, 25, 15 fps); \
             YUY2 640x480 (30, 15 fps), 1280x720 (10 fps)"
        );
        let ranged: gst::Caps = "video/x-raw, format=(string)NV12, width=(int)[ 16, 4096 ], \
            height=(int)[ 16, 4096 ], framerate=(fraction)[ 1/1, 60/1 ]"
            .parse()
            .expect("caps parse");
        assert_eq!(describe_offers(&ranged), "NV12 any size (1-60 fps)");
        assert_eq!(
            camera_format(&ranged, &raw(1280, 720, 30)),
            Some(CameraFormat::Raw)
        );
    }

    #[test]
    fn a_missing_v4l2_device_is_named() {
        gst::init().expect("GStreamer initialises");
        let e = v4l2_caps("/dev/video-none").expect_err("no such device");
        let text = e.to_string();
        assert!(
            text.starts_with("video.device: /dev/video-none: "),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }
}
