//! Pre-flight checks: before a pipeline starts, say exactly what is missing —
//! a GStreamer plugin (and the package that has it), an ALSA device (and the
//! cards that exist), a camera program.

use std::path::PathBuf;

use gstreamer as gst;

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
    ("x264enc", "gstreamer1.0-plugins-ugly"),
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
}
