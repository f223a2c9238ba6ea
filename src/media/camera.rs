//! Facts about the camera program's machine that its flags depend on: which
//! Raspberry Pi this is, and which `rpicam-vid` is installed.
//!
//! - A Pi 5 (BCM2712) has no H.264 encoder. There `rpicam-vid --codec h264`
//!   encodes with libx264 through libav, which cannot guess a container for
//!   `-o -` and stops ("libav: cannot allocate output context, try setting
//!   with --libav-format") unless told `--libav-format h264`; from
//!   rpicam-apps 1.6 `--low-latency` makes libx264 encode without frame
//!   delay (preset ultrafast, tune zerolatency).
//! - Up to the Pi 4, `rpicam-vid` uses the VideoCore encoder through V4L2,
//!   whose driver takes at most 1920x1920 and 25 Mbit/s.
//!
//! The model is read from the device tree's `compatible` list; tests point
//! [`DEVICE_TREE_VARIABLE`] at a file of their own. `rpicam-vid --version`
//! is asked once per program path and process.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{frames, MediaError};
use crate::config::VideoSettings;
use crate::h264;

/// Where Linux lists what the board is compatible with, NUL-separated.
const DEVICE_TREE: &str = "/proc/device-tree/compatible";

/// Names another file to read instead of [`DEVICE_TREE`] (for tests).
pub const DEVICE_TREE_VARIABLE: &str = "BROADCAST_AGENT_DEVICE_TREE";

/// The Pi 5's SoC in the device tree (also the Pi 500 and CM5).
const BCM2712: &[u8] = b"brcm,bcm2712";

/// The first rpicam-apps release with `--low-latency`.
const LOW_LATENCY_SINCE: Version = Version(1, 6, 0);

/// The hardware encoder's largest bitrate (its V4L2 control's maximum), kbit/s.
const HARDWARE_MAX_KBPS: u32 = 25_000;

/// How long `rpicam-vid --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Which H.264 encoder `rpicam-vid --codec h264` uses on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// The VideoCore's, through V4L2 (Pi 4 and earlier).
    Hardware,
    /// libx264 through libav (Pi 5).
    Software,
}

impl Encoder {
    /// The encoder of this machine: see [`Encoder::from_device_tree`].
    pub fn of_this_machine() -> Self {
        let path = std::env::var_os(DEVICE_TREE_VARIABLE)
            .map_or_else(|| PathBuf::from(DEVICE_TREE), PathBuf::from);
        Self::from_device_tree(&path)
    }

    /// Software when the `compatible` list at `path` names the BCM2712;
    /// hardware otherwise, also when there is no such file (not a Pi).
    pub fn from_device_tree(path: &Path) -> Self {
        let compatible = std::fs::read(path).unwrap_or_default();
        if compatible.split(|b| *b == 0).any(|entry| entry == BCM2712) {
            Self::Software
        } else {
            Self::Hardware
        }
    }
}

/// An rpicam-apps release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// The release `--version` reports: "rpicam-apps build: v1.6.0 4b8b0ab9
    /// 27-11-2024 (12:01:02)" (`libcamera-apps build:` before the rename).
    pub fn from_version_output(text: &str) -> Option<Self> {
        let build = text
            .lines()
            .find_map(|line| line.split_once("-apps build: "))
            .map(|(_, rest)| rest)?;
        let number = build.split_whitespace().next()?.strip_prefix('v')?;
        let mut parts = number.split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        Some(Self(
            parts.next()??,
            parts.next()??,
            parts.next().flatten().unwrap_or(0),
        ))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The version of the rpicam-vid at `program`, asked once per process;
/// `None` when it cannot tell (then no flag that needs a version is used).
pub fn installed_version(program: &Path) -> Option<Version> {
    static ASKED: OnceLock<Mutex<HashMap<PathBuf, Option<Version>>>> = OnceLock::new();
    let asked = ASKED.get_or_init(Mutex::default);
    if let Some(known) = asked.lock().ok()?.get(program) {
        return *known;
    }
    let version = ask_version(program);
    match version {
        Some(v) => log::debug!("{}: rpicam-apps {v}", program.display()),
        None => log::warn!(
            "{}: --version names no rpicam-apps release: not passing --low-latency",
            program.display()
        ),
    }
    asked.lock().ok()?.insert(program.to_owned(), version);
    version
}

/// Runs `program --version`, killed after [`VERSION_TIMEOUT`].
fn ask_version(program: &Path) -> Option<Version> {
    let mut child = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < VERSION_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut text = String::new();
    child.stdout.take()?.read_to_string(&mut text).ok()?;
    Version::from_version_output(&text)
}

/// The flags the `rpicam-vid` at `program` needs on this machine for
/// `video`, or why this machine's encoder cannot do it.
pub fn rpicam_vid_flags_here(
    program: &Path,
    video: &VideoSettings,
) -> Result<Vec<&'static str>, MediaError> {
    let encoder = Encoder::of_this_machine();
    check_encoder(encoder, video)?;
    let version = match encoder {
        Encoder::Software => installed_version(program),
        Encoder::Hardware => None,
    };
    Ok(rpicam_vid_flags(encoder, version))
}

/// The flags that make `rpicam-vid` write a line to the agent's pipe after
/// each frame (see `frames.rs`).
pub const ANNOUNCE_FRAMES: [&str; 2] = ["--save-pts", frames::ANNOUNCEMENTS];

/// The flags `rpicam-vid` needs on a machine with `encoder`, given its
/// `version`: [`ANNOUNCE_FRAMES`] with the hardware encoder;
/// `--libav-format h264` and, from 1.6, `--low-latency` with libx264 (which
/// refuses `--save-pts` when writing to stdout).
pub fn rpicam_vid_flags(encoder: Encoder, version: Option<Version>) -> Vec<&'static str> {
    match encoder {
        Encoder::Hardware => ANNOUNCE_FRAMES.to_vec(),
        Encoder::Software => {
            let mut flags = vec!["--libav-format", "h264"];
            if version.is_some_and(|v| v >= LOW_LATENCY_SINCE) {
                flags.push("--low-latency");
            }
            flags
        }
    }
}

/// Refuses what the hardware encoder cannot do (through `rpicam-vid` it
/// would stop with "failed to set bitrate" or a format error); a Pi 5
/// encodes in software and has no such limits.
pub fn check_encoder(encoder: Encoder, video: &VideoSettings) -> Result<(), MediaError> {
    if encoder == Encoder::Software {
        return Ok(());
    }
    let max = h264::HARDWARE_MAX_SIDE;
    if let Some(key) = video.larger_than(max, max) {
        return Err(MediaError::Setting {
            key,
            reason: format!(
                "{}x{} is larger than the Pi's hardware H.264 encoder takes (1920x1920)",
                video.width, video.height
            ),
        });
    }
    if video.bitrate_kbps > HARDWARE_MAX_KBPS {
        return Err(MediaError::Setting {
            key: "video.bitrate_kbps",
            reason: format!(
                "{} is more than the Pi's hardware H.264 encoder takes ({HARDWARE_MAX_KBPS})",
                video.bitrate_kbps
            ),
        });
    }
    Ok(())
}

/// Whether the hardware encoder's V4L2 driver (`v4l2h264enc`) takes these
/// settings: size and bitrate as above, level at most 5.1 (its menu's top).
pub fn hardware_encoder_takes(video: &VideoSettings) -> bool {
    check_encoder(Encoder::Hardware, video).is_ok() && video.h264_level() <= h264::Level::L5_1
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn device_tree(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(content).expect("write");
        file
    }

    #[test]
    fn a_pi_5_is_told_by_its_soc() {
        // As a Pi 5 and a Pi 4 list themselves (NUL-terminated strings).
        let pi5 = device_tree(b"raspberrypi,5-model-b\0brcm,bcm2712\0");
        assert_eq!(Encoder::from_device_tree(pi5.path()), Encoder::Software);
        let pi4 = device_tree(b"raspberrypi,4-model-b\0brcm,bcm2711\0");
        assert_eq!(Encoder::from_device_tree(pi4.path()), Encoder::Hardware);
        // A prefix of the name is not the name.
        let other = device_tree(b"brcm,bcm27120\0");
        assert_eq!(Encoder::from_device_tree(other.path()), Encoder::Hardware);
        let none = Path::new("/nonexistent/compatible");
        assert_eq!(Encoder::from_device_tree(none), Encoder::Hardware);
    }

    #[test]
    fn versions_are_read_as_rpicam_apps_prints_them() {
        let new = "rpicam-apps build: v1.6.0 4b8b0ab9c5d1 27-11-2024 (12:01:02)\n\
                   rpicam-apps capabilites: egl:1 qt:1 drm:1 libav:1\n\
                   libcamera build: v0.3.2+99-1230f78d\n";
        assert_eq!(Version::from_version_output(new), Some(Version(1, 6, 0)));
        let packaged = "rpicam-apps build: v1.5.2 04-11-2024 (16:45:13)\n";
        assert_eq!(
            Version::from_version_output(packaged),
            Some(Version(1, 5, 2))
        );
        let old = "libcamera-apps build: v1.2.1 0b2c7e7f 10-07-2023 (09:00:00)\n";
        assert_eq!(Version::from_version_output(old), Some(Version(1, 2, 1)));
        assert_eq!(Version::from_version_output("rpicam-vid: 1.6\n"), None);
        assert_eq!(Version(1, 10, 0).to_string(), "1.10.0");
        assert!(Version(1, 10, 0) > LOW_LATENCY_SINCE);
    }

    #[test]
    fn the_pi_5_needs_the_libav_format_and_low_latency_from_1_6() {
        let flags = |encoder, version| rpicam_vid_flags(encoder, version).join(" ");
        assert_eq!(
            flags(Encoder::Hardware, Some(Version(1, 6, 0))),
            "--save-pts /dev/stdin"
        );
        assert_eq!(
            flags(Encoder::Software, Some(Version(1, 6, 0))),
            "--libav-format h264 --low-latency"
        );
        assert_eq!(
            flags(Encoder::Software, Some(Version(1, 5, 3))),
            "--libav-format h264"
        );
        assert_eq!(flags(Encoder::Software, None), "--libav-format h264");
    }

    #[test]
    fn the_version_is_asked_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let program = dir.path().join("rpicam-vid");
        let count = dir.path().join("asked");
        std::fs::write(
            &program,
            format!(
                "#!/bin/sh\necho x >> {}\necho 'rpicam-apps build: v1.7.0 abc 01-01-2025 (00:00:00)'\n",
                count.display()
            ),
        )
        .expect("write program");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(installed_version(&program), Some(Version(1, 7, 0)));
        assert_eq!(installed_version(&program), Some(Version(1, 7, 0)));
        let asked = std::fs::read_to_string(&count).expect("the program ran");
        assert_eq!(asked.lines().count(), 1);
    }

    #[test]
    fn the_hardware_encoder_limits_are_named_by_key() {
        let video = |width, height, bitrate_kbps| VideoSettings {
            width,
            height,
            bitrate_kbps,
            ..VideoSettings::default()
        };
        let e = check_encoder(Encoder::Hardware, &video(2560, 1440, 2000)).expect_err("too wide");
        assert_eq!(
            e.to_string(),
            "video.width: 2560x1440 is larger than the Pi's hardware H.264 encoder takes (1920x1920)"
        );
        let e = check_encoder(Encoder::Hardware, &video(1280, 720, 30_000)).expect_err("too fast");
        assert!(
            e.to_string().starts_with("video.bitrate_kbps: 30000 "),
            "{e}"
        );
        check_encoder(Encoder::Hardware, &video(1920, 1920, 25_000)).expect("at the limits");
        check_encoder(Encoder::Software, &video(2560, 1440, 30_000)).expect("a Pi 5 encodes it");
    }
}
