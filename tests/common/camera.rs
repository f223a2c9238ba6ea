//! Stand-ins for the Pi's camera programs (`tests/standins/camera.py`):
//! `rpicam-vid` and `raspivid` on a PATH of their own, on a machine of the
//! test's choosing, following upstream's rules (strict flags, the Pi 5's
//! libav path, stdout buffered unless flushed, the level in the SPS).

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use super::{repo, scratch};

/// Which Raspberry Pi the stand-ins (and the agent) believe they run on.
#[derive(Debug, Clone, Copy)]
pub enum Machine {
    /// A Pi 4: the VideoCore's hardware H.264 encoder.
    Pi4,
    /// A Pi 5: no H.264 encoder, libx264 through libav.
    Pi5,
}

impl Machine {
    /// The device tree's `compatible` list, as the board has it.
    pub fn compatible(self) -> &'static [u8] {
        match self {
            Self::Pi4 => b"raspberrypi,4-model-b\0brcm,bcm2711\0",
            Self::Pi5 => b"raspberrypi,5-model-b\0brcm,bcm2712\0",
        }
    }
}

/// The stand-in camera programs, installed in a scratch directory.
pub struct StandIns {
    dir: tempfile::TempDir,
    version: String,
}

impl StandIns {
    /// `rpicam-vid` (of rpicam-apps `version`, e.g. "1.5.2") and `raspivid`
    /// on a `machine`.
    pub fn install(machine: Machine, version: &str) -> Self {
        let dir = scratch();
        let script = repo().join("tests/standins/camera.py");
        for program in ["rpicam-vid", "raspivid"] {
            std::os::unix::fs::symlink(&script, dir.path().join(program))
                .expect("link the stand-in");
        }
        fs::write(dir.path().join("compatible"), machine.compatible()).expect("device tree");
        Self {
            dir,
            version: version.to_owned(),
        }
    }

    /// The environment the agent (and so the stand-ins) must run with:
    /// the stand-ins first on PATH, the machine's device tree, the version.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let path = format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        vec![
            ("PATH", path),
            ("BROADCAST_AGENT_DEVICE_TREE", self.path("compatible")),
            ("STANDIN_RPICAM_VERSION", self.version.clone()),
            ("STANDIN_LOG", self.path("runs.jsonl")),
        ]
    }

    /// [`StandIns::env`] and the GStreamer elements' stand-ins
    /// (`libcamerasrc`; `v4l2h264enc`, which a Pi 5 has not:
    /// tests/standins/gst), with a registry of their own.
    pub fn env_with_elements(&self) -> Vec<(&'static str, String)> {
        let elements = repo().join("tests/standins/gst");
        let mut env = self.env();
        env.push(("GST_PLUGIN_PATH", elements.display().to_string()));
        env.push(("GST_REGISTRY", self.path("registry.bin")));
        env
    }

    /// A stand-in, to run directly.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.dir.path().join(program));
        command.envs(self.env());
        command
    }

    /// One entry per time a stand-in started streaming: its program,
    /// `args`, `encoder`, the `level` it writes, whether it `flush`es.
    pub fn runs(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.path("runs.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// A file in the stand-ins' directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The directory (for `PathBuf`s).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// `env` as the `&[(&str, &str)]` the agent fixture takes, plus `more`.
pub fn env_refs<'a>(
    env: &'a [(&'static str, String)],
    more: &[(&'static str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    env.iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(more.iter().copied())
        .collect()
}
