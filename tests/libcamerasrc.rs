//! The stand-ins for the Pi's in-process camera path (issue 27):
//! `libcamerasrc` (libcamera 0.5.1+rpt20250722, Bookworm) and the Pi <= 4's
//! `v4l2h264enc` (bcm2835-codec under GStreamer 1.22.0), gst-python elements
//! in `tests/standins/gst/python/`. Each refusal a Pi would make is shown here
//! with the outcome the real elements give, so a pipeline the Pi would refuse
//! fails here too. Each case runs `gst-launch-1.0` with the stand-ins on
//! GST_PLUGIN_PATH and a registry of the test run's own.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::camera::Machine;

/// The scratch directory of this test run: the registry and the device trees.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("broadcast-agent-libcamerasrc-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        for (name, machine) in [("pi4", Machine::Pi4), ("pi5", Machine::Pi5)] {
            std::fs::write(dir.join(name), machine.compatible()).expect("device tree");
        }
        dir
    })
}

/// Fails the test unless gst-python's plugin loader is installed: without
/// it the stand-ins cannot load (deploy/install-deps.sh installs it). Asked
/// once per test run.
fn require_loader() {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        Command::new("gst-inspect-1.0")
            .arg("python")
            .env("GST_REGISTRY", scratch().join("registry.bin"))
            .output()
            .is_ok_and(|out| out.status.success())
    });
    assert!(
        found,
        "GStreamer's python plugin loader is missing \
         (Debian: gstreamer1.0-python3-plugin-loader, see deploy/install-deps.sh)"
    );
}

/// `gst-launch-1.0 PIPELINE` on `machine`, with `env` added; killed after 20 s.
fn launch(machine: Machine, pipeline: &str, env: &[(&str, &str)]) -> Output {
    require_loader();
    let tree = scratch().join(match machine {
        Machine::Pi4 => "pi4",
        Machine::Pi5 => "pi5",
    });
    let mut command = Command::new("timeout");
    command
        .args(["20", "gst-launch-1.0", "-e", "-v"])
        .args(pipeline.split_whitespace())
        .env(
            "GST_PLUGIN_PATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/standins/gst"),
        )
        .env("GST_REGISTRY", scratch().join("registry.bin"))
        .env("BROADCAST_AGENT_DEVICE_TREE", tree);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("gst-launch-1.0 runs")
}

/// stdout and stderr together: gst-launch prints errors on stderr, caps on stdout.
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The caps libcamerasrc pushed, as gst-launch -v prints them.
fn camera_caps(output: &Output) -> String {
    let text = text(output);
    text.lines()
        .find(|line| line.contains("GstLibcameraSrc:libcamerasrc0.GstGhostPad:src: caps"))
        .unwrap_or_else(|| panic!("no caps from libcamerasrc in:\n{text}"))
        .to_owned()
}

/// Asserts libcamerasrc stopped as upstream's does when negotiation fails.
fn assert_not_negotiated(output: &Output) {
    let text = text(output);
    assert!(
        text.contains("GstLibcameraSrc:libcamerasrc0: Internal data stream error.")
            && text.contains("streaming stopped, reason not-negotiated (-4)"),
        "expected libcamerasrc's not-negotiated error, got:\n{text}"
    );
    assert!(!output.status.success());
}

/// Asserts gst-launch could not even link the encoder to the caps given.
fn assert_link_refused(output: &Output, caps: &str) {
    let text = text(output);
    assert!(
        text.contains("could not link") && text.contains(caps),
        "expected a refused link for {caps}, got:\n{text}"
    );
}

/// The NAL units of an H.264 byte stream: (type, level_idc for an SPS).
fn nal_units(stream: &[u8]) -> Vec<(u8, Option<u8>)> {
    stream
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w[..3] == [0, 0, 1])
        .map(|(i, w)| {
            let kind = w[3] & 31;
            (kind, (kind == 7).then(|| stream[i + 6]))
        })
        .collect()
}

/// Runs `pipeline` ending in `! filesink` and returns the file's NAL units.
fn encoded(machine: Machine, pipeline: &str) -> Vec<(u8, Option<u8>)> {
    let file = tempfile::NamedTempFile::new_in(scratch()).expect("output file");
    let path = file.path().display().to_string();
    let output = launch(
        machine,
        &format!("{pipeline} ! identity eos-after=40 ! filesink location={path}"),
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    nal_units(&std::fs::read(file.path()).expect("encoded file"))
}

const CAMERA_TO_FAKESINK: &str = "libcamerasrc ! identity eos-after=3 ! fakesink";

#[test]
fn both_models_offer_i420_1080p_rec709_at_30_when_asked_nothing() {
    for machine in [Machine::Pi4, Machine::Pi5] {
        let caps = camera_caps(&launch(machine, CAMERA_TO_FAKESINK, &[]));
        for field in [
            "format=(string)I420",
            "width=(int)1920",
            "height=(int)1080",
            "colorimetry=(string)bt709",
            "framerate=(fraction)30/1",
        ] {
            assert!(caps.contains(field), "{field} missing in {caps}");
        }
    }
}

#[test]
fn the_isp_formats_differ_per_model() {
    let planar_444 = "libcamerasrc ! video/x-raw,format=Y444 ! identity eos-after=3 ! fakesink";
    assert_not_negotiated(&launch(Machine::Pi4, planar_444, &[]));
    assert!(camera_caps(&launch(Machine::Pi5, planar_444, &[])).contains("format=(string)Y444"));
    let rgb = "libcamerasrc ! video/x-raw,format=BGRx ! identity eos-after=3 ! fakesink";
    let caps = camera_caps(&launch(Machine::Pi4, rgb, &[]));
    // Rec709 made RGB: no matrix, full range.
    assert!(caps.contains("colorimetry=(string)1:1:5:1"), "{caps}");
}

#[test]
fn the_colorimetry_asked_is_kept_when_the_isp_has_it_else_sycc() {
    let asked = |colorimetry: &str| {
        let pipeline = format!(
            "libcamerasrc ! video/x-raw,format=NV12,colorimetry={colorimetry} ! identity eos-after=3 ! fakesink"
        );
        camera_caps(&launch(Machine::Pi4, &pipeline, &[]))
    };
    assert!(asked("bt601").contains("colorimetry=(string)bt601"));
    assert!(asked("bt709").contains("colorimetry=(string)bt709"));
    // BT.2020 is none of sYCC, SMPTE170M, Rec709: validate() makes it sYCC, which
    // a downstream holding on to bt2020 refuses.
    assert_not_negotiated(&launch(
        Machine::Pi4,
        "libcamerasrc ! video/x-raw,format=NV12,colorimetry=bt2020 ! fakesink",
        &[],
    ));
}

#[test]
fn a_framerate_beyond_the_sensor_mode_is_clamped_and_then_refused() {
    // imx708's 2304x1296 mode (the one covering 1080p) does 56.03 fps at most.
    assert_not_negotiated(&launch(
        Machine::Pi4,
        "libcamerasrc ! video/x-raw,width=1920,height=1080,framerate=60/1 ! fakesink",
        &[],
    ));
    let caps = camera_caps(&launch(
        Machine::Pi4,
        "libcamerasrc ! video/x-raw,width=1280,height=720,framerate=60/1 ! identity eos-after=3 ! fakesink",
        &[],
    ));
    assert!(caps.contains("framerate=(fraction)60/1"), "{caps}");
}

#[test]
fn jpeg_is_not_offered() {
    assert_not_negotiated(&launch(
        Machine::Pi4,
        "libcamerasrc ! image/jpeg ! fakesink",
        &[],
    ));
}

#[test]
fn no_camera_and_an_unknown_camera_fail_as_upstream() {
    let none = text(&launch(
        Machine::Pi4,
        CAMERA_TO_FAKESINK,
        &[("STANDIN_NO_CAMERA", "1")],
    ));
    assert!(
        none.contains("Could not find any supported camera on this system."),
        "{none}"
    );
    let unknown = text(&launch(
        Machine::Pi4,
        "libcamerasrc camera-name=/base/imx219@10 ! fakesink",
        &[],
    ));
    assert!(
        unknown.contains("Could not find a camera named '/base/imx219@10'."),
        "{unknown}"
    );
    let known = launch(
        Machine::Pi5,
        "libcamerasrc camera-name=/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a ! identity eos-after=3 ! fakesink",
        &[],
    );
    assert!(known.status.success(), "{}", text(&known));
}

#[test]
fn the_raspberry_pi_documentation_pipeline_makes_h264_at_level_4_1() {
    // The documentation's `v4l2convert` (the VideoCore's ISP) has no stand-in:
    // libcamerasrc's NV12 links to the encoder directly.
    let units = encoded(
        Machine::Pi4,
        "libcamerasrc ! capsfilter caps=video/x-raw,width=1280,height=720,format=NV12 \
         ! v4l2h264enc extra-controls=controls,repeat_sequence_header=1,h264_i_frame_period=10 \
         ! video/x-h264,level=(string)4.1",
    );
    let levels: Vec<_> = units.iter().filter_map(|(_, level)| *level).collect();
    assert!(levels.len() > 1, "an SPS before each key frame: {units:?}");
    assert!(levels.iter().all(|&level| level == 41), "{levels:?}");
}

#[test]
fn without_repeat_sequence_header_the_sps_comes_once() {
    let units = encoded(
        Machine::Pi4,
        "libcamerasrc ! video/x-raw,width=640,height=480,format=I420 \
         ! v4l2h264enc extra-controls=controls,h264_i_frame_period=10 ! video/x-h264,level=(string)3",
    );
    let idr_frames = units
        .windows(2)
        .filter(|w| w[0].0 != 5 && w[1].0 == 5)
        .count();
    assert!(idr_frames > 1, "{units:?}");
    assert_eq!(units.iter().filter(|(kind, _)| *kind == 7).count(), 1);
}

#[test]
fn the_encoder_refuses_more_than_1920_and_levels_above_5_1() {
    assert_link_refused(
        &launch(
            Machine::Pi4,
            "libcamerasrc ! video/x-raw,width=2304,height=1296 ! v4l2h264enc ! fakesink",
            &[],
        ),
        "width=(int)2304",
    );
    assert_link_refused(
        &launch(
            Machine::Pi4,
            "libcamerasrc ! v4l2h264enc ! video/x-h264,level=(string)5.2 ! fakesink",
            &[],
        ),
        "level=(string)5.2",
    );
    assert_link_refused(
        &launch(
            Machine::Pi4,
            "libcamerasrc ! video/x-raw,format=Y42B ! v4l2h264enc ! fakesink",
            &[],
        ),
        "format=(string)Y42B",
    );
}

#[test]
fn the_videocore_refuses_a_level_too_low_for_the_stream() {
    // Nothing downstream names a level: v4l2h264enc takes the menu's first, 1.
    for pipeline in [
        "libcamerasrc ! video/x-raw,width=1280,height=720 ! v4l2h264enc ! fakesink",
        "libcamerasrc ! video/x-raw,width=1280,height=720 ! v4l2h264enc ! video/x-h264,level=(string)3 ! fakesink",
    ] {
        let text = text(&launch(Machine::Pi4, pipeline, &[]));
        assert!(
            text.contains("v4l2h264enc0: Failed to process frame."),
            "{pipeline}:\n{text}"
        );
    }
}

#[test]
fn a_pi_5_encodes_with_x264enc_from_the_camera() {
    let units = encoded(
        Machine::Pi5,
        "libcamerasrc ! video/x-raw,width=1280,height=720,format=I420 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 \
         ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream",
    );
    assert!(units.iter().any(|(kind, _)| *kind == 5), "{units:?}");
}
