//! H.264 levels: which level a frame size, rate and bitrate need (the
//! standard's table A-1), how levels are spelled, and the
//! `profile-level-id` a mountpoint advertises for one. Which level each
//! video source writes is `VideoSettings::h264_level`. Pure: no I/O.

use std::fmt;

/// An H.264 level, as its `level_idc` (10 for 1, 41 for 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(u8);

/// One row of table A-1 (level 1b left out: nothing here needs it).
struct Limits {
    level: Level,
    /// Macroblocks per second.
    max_mbps: u64,
    /// Macroblocks per frame.
    max_fs: u64,
    /// Video bitrate in kbit/s (Baseline, VCL).
    max_kbps: u64,
}

const fn row(idc: u8, max_mbps: u64, max_fs: u64, max_kbps: u64) -> Limits {
    Limits {
        level: Level(idc),
        max_mbps,
        max_fs,
        max_kbps,
    }
}

/// ITU-T H.264 table A-1, lowest level first.
const TABLE: [Limits; 19] = [
    row(10, 1_485, 99, 64),
    row(11, 3_000, 396, 192),
    row(12, 6_000, 396, 384),
    row(13, 11_880, 396, 768),
    row(20, 11_880, 396, 2_000),
    row(21, 19_800, 792, 4_000),
    row(22, 20_250, 1_620, 4_000),
    row(30, 40_500, 1_620, 10_000),
    row(31, 108_000, 3_600, 14_000),
    row(32, 216_000, 5_120, 20_000),
    row(40, 245_760, 8_192, 20_000),
    row(41, 245_760, 8_192, 50_000),
    row(42, 522_240, 8_704, 50_000),
    row(50, 589_824, 22_080, 135_000),
    row(51, 983_040, 36_864, 240_000),
    row(52, 2_073_600, 36_864, 240_000),
    row(60, 4_177_920, 139_264, 240_000),
    row(61, 8_355_840, 139_264, 480_000),
    row(62, 16_711_680, 139_264, 800_000),
];

impl Level {
    /// Level 4: what the Pi's hardware encoder writes by default.
    pub const L4: Self = Self(40);
    /// Level 4.2: the highest `raspivid` and `rpicam-vid` ask the hardware for.
    pub const L4_2: Self = Self(42);
    /// Level 5.1: the highest the hardware encoder's V4L2 driver offers.
    pub const L5_1: Self = Self(51);
    /// The highest level in table A-1.
    pub const MAX: Self = Self(62);

    /// The lowest level whose limits hold `width` x `height` at `fps`
    /// frames per second and `kbps` kbit/s, if any does.
    pub fn fitting(width: u32, height: u32, fps: u32, kbps: u32) -> Option<Self> {
        let (w, h) = (macroblocks(width), macroblocks(height));
        let frame = w * h;
        let rate = frame * u64::from(fps);
        TABLE
            .iter()
            .find(|l| {
                // A frame's sides are bounded too: at most sqrt(8 * MaxFS) macroblocks.
                let side = 8 * l.max_fs;
                frame <= l.max_fs
                    && w * w <= side
                    && h * h <= side
                    && rate <= l.max_mbps
                    && u64::from(kbps) <= l.max_kbps
            })
            .map(|l| l.level)
    }

    /// The fmtp `profile-level-id` for constrained baseline at this level.
    pub fn profile_level_id(self) -> String {
        format!("42e0{:02x}", self.0)
    }
}

/// "4", "4.1": how GStreamer caps, `rpicam-vid --level` and `raspivid -lev`
/// spell a level.
impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = (self.0 / 10, self.0 % 10);
        if minor == 0 {
            write!(f, "{major}")
        } else {
            write!(f, "{major}.{minor}")
        }
    }
}

/// Macroblocks (16 pixels) needed to cover `pixels`.
fn macroblocks(pixels: u32) -> u64 {
    u64::from(pixels).div_ceil(16)
}

/// Macroblocks per second of `width` x `height` at `fps`.
pub fn macroblock_rate(width: u32, height: u32, fps: u32) -> u64 {
    macroblocks(width) * macroblocks(height) * u64::from(fps)
}

/// Whether the Pi's hardware encoder (VideoCore, up to the Pi 4) takes
/// frames of this size: its V4L2 driver stops at 1920x1920.
pub fn hardware_size(width: u32, height: u32) -> bool {
    width <= HARDWARE_MAX_SIDE && height <= HARDWARE_MAX_SIDE
}

/// The hardware encoder's largest width and height.
pub const HARDWARE_MAX_SIDE: u32 = 1920;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_table_a1() {
        // 720p30 is 108000 macroblocks/s: exactly level 3.1.
        assert_eq!(Level::fitting(1280, 720, 30, 2000), Some(Level(31)));
        // 1080p30 (1088 lines coded): 8160 macroblocks, 244800/s: level 4.
        assert_eq!(Level::fitting(1920, 1080, 30, 8000), Some(Level(40)));
        assert_eq!(macroblock_rate(1920, 1080, 30), 244_800);
        // The same at 25 Mbit/s needs 4.1, at 60 fps 4.2.
        assert_eq!(Level::fitting(1920, 1080, 30, 25_000), Some(Level(41)));
        assert_eq!(Level::fitting(1920, 1080, 60, 8000), Some(Level(42)));
        // 1920x1920 is 14400 macroblocks a frame: more than 4.2's 8704.
        assert_eq!(Level::fitting(1920, 1920, 30, 8000), Some(Level(50)));
        // A very long thin frame breaks the sqrt(8 * MaxFS) side limit of
        // level 1 (28 macroblocks) though its area fits.
        assert_eq!(Level::fitting(16 * 29, 16, 1, 10), Some(Level(11)));
        assert_eq!(Level::fitting(8192, 8192, 120, 50_000), None);
    }

    #[test]
    fn levels_are_spelled_as_gstreamer_and_the_camera_programs_do() {
        assert_eq!(Level(40).to_string(), "4");
        assert_eq!(Level(41).to_string(), "4.1");
        assert_eq!(Level(10).to_string(), "1");
        assert_eq!(Level::L4.profile_level_id(), "42e028");
        assert_eq!(Level(31).profile_level_id(), "42e01f");
    }

    #[test]
    fn the_hardware_takes_up_to_1920x1920() {
        assert!(hardware_size(1920, 1920));
        assert!(!hardware_size(2560, 1440));
        assert!(!hardware_size(1080, 1921));
    }
}
