//! The systemd unit (systemd/broadcast-agent.service): `systemd-analyze verify`
//! accepts it without a word, `systemd-analyze security` rates its sandbox
//! "OK", and it keeps the settings the agent and the packaging rely on.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::finish;

const UNIT_NAME: &str = "broadcast-agent.service";
/// The installed binary; the test copy points at the one cargo built instead,
/// since `verify` checks that the executable exists.
const EXEC_START: &str =
    "ExecStart=/usr/bin/broadcast-agent run --config /etc/broadcast-agent/agent.toml";
/// Highest acceptable "Overall exposure level" (0 = locked down, 10 = none).
/// systemd calls up to 4.9 "OK"; the unit measures about 1.5 with systemd 252.
const MAX_EXPOSURE: f64 = 2.5;
/// Longest wait for one systemd-analyze run.
const TIMEOUT: Duration = Duration::from_secs(60);

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(UNIT_NAME);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes the unit, with ExecStart= on the freshly built binary, into `dir`.
fn test_copy(dir: &Path) -> PathBuf {
    let text = unit_text();
    assert_eq!(
        text.lines().filter(|l| *l == EXEC_START).count(),
        1,
        "the unit must have exactly the line {EXEC_START:?}"
    );
    let exe = env!("CARGO_BIN_EXE_broadcast-agent");
    assert!(!exe.contains(char::is_whitespace), "binary path {exe:?}");
    let copy = text.replace(
        "ExecStart=/usr/bin/broadcast-agent ",
        &format!("ExecStart={exe} "),
    );
    let path = dir.join(UNIT_NAME);
    std::fs::write(&path, copy).expect("write unit copy");
    path
}

/// Runs systemd-analyze with `args`; returns (success, stdout, stderr).
/// Killed, and the test failed, after TIMEOUT.
fn systemd_analyze(args: &[&str]) -> (bool, String, String) {
    let child = Command::new("systemd-analyze")
        .args(args)
        .env_remove("SYSTEMD_LOG_LEVEL")
        .env("SYSTEMD_PAGER", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze (package systemd, see deploy/install-deps.sh): {e}")
        });
    let (status, out, err) = finish(child, &format!("systemd-analyze {args:?}"), TIMEOUT);
    (status.success(), out, err)
}

/// The values of `key=` in the unit, in order (comments skipped).
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

#[test]
fn systemd_analyze_verify_is_silent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = test_copy(dir.path());
    let (ok, out, err) = systemd_analyze(&["verify", unit.to_str().expect("utf-8 path")]);
    assert!(ok, "verify failed\nstdout: {out}\nstderr: {err}");
    assert!(err.is_empty(), "verify warned:\n{err}");
}

#[test]
fn sandbox_exposure_is_low() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = test_copy(dir.path());
    let (ok, out, err) = systemd_analyze(&[
        "security",
        "--offline=true",
        "--no-pager",
        unit.to_str().expect("utf-8 path"),
    ]);
    assert!(ok, "security failed\nstdout: {out}\nstderr: {err}");
    // "→ Overall exposure level for broadcast-agent.service: 1.5 OK 🙂"
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}\n{err}"));
    let score: f64 = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}; the findings:\n{out}"
    );
}

#[test]
fn unit_keeps_what_the_agent_relies_on() {
    let text = unit_text();
    let one = |key: &str| -> String {
        let v = values(&text, key);
        assert_eq!(v.len(), 1, "{key}= should be set once, found {v:?}");
        v[0].clone()
    };
    let words = |key: &str| -> Vec<String> {
        values(&text, key)
            .iter()
            .flat_map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
            .collect()
    };

    // sd_notify READY=1 and WATCHDOG=1 from the agent's main process.
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    let watchdog = one("WatchdogSec");
    assert!(
        !watchdog.is_empty() && watchdog != "0" && watchdog != "infinity",
        "WatchdogSec={watchdog}"
    );
    // Exit status 78 is a config error: no restart loop.
    assert_eq!(one("Restart"), "on-failure");
    assert!(words("RestartPreventExitStatus").contains(&"78".to_string()));
    // /run/broadcast-agent/control.sock.
    assert_eq!(one("RuntimeDirectory"), "broadcast-agent");
    assert_eq!(one("User"), "broadcast-agent");
    // /var/lib/broadcast-agent: control.state_dir's default (the owner's
    // last open/close) is writable under ProtectSystem=strict.
    assert_eq!(one("StateDirectory"), "broadcast-agent");
    let conf =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/agent.toml"))
            .expect("conf/agent.toml");
    assert!(conf.contains("\nstate_dir = \"/var/lib/broadcast-agent\"\n"));
    let groups = words("SupplementaryGroups");
    for group in ["audio", "video", "gpio"] {
        assert!(groups.iter().any(|g| g == group), "{group} in {groups:?}");
    }

    // The devices, read-write: ALSA, camera, GPIO.
    assert_eq!(one("DevicePolicy"), "closed");
    let allowed: Vec<(String, String)> = values(&text, "DeviceAllow")
        .iter()
        .map(|v| match v.split_whitespace().collect::<Vec<_>>()[..] {
            [dev, access] => (dev.to_string(), access.to_string()),
            _ => panic!("DeviceAllow={v}: want a device and its access"),
        })
        .collect();
    for wanted in ["char-alsa", "char-video4linux", "gpiomem", "char-gpiochip"] {
        assert!(
            allowed
                .iter()
                .any(|(dev, access)| dev.contains(wanted) && access.contains("rw")),
            "no read-write DeviceAllow for {wanted} in {allowed:?}"
        );
    }
}
