//! Fixtures for integration tests with real parts: a Janus server from the
//! Debian package on loopback, the agent binary, and a client that asks Janus
//! what exists, as a viewer would.

#![allow(dead_code)] // each test binary uses its own part of the fixtures

pub mod camera;
pub mod janus;
pub mod netns;
pub mod proxy;
pub mod pulse;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{mpsc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    wait_every(Duration::from_millis(20), timeout, what, check)
}

/// [`wait_for`], polling every `every` (a costly check: a `status` process).
pub fn wait_every<T>(
    every: Duration,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// A block of `count` consecutive UDP/TCP ports for one fixture, distinct
/// within this test process (test binaries run one after another).
pub fn ports(count: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Derive the start from the process id so a leftover process from a
    // crashed run is unlikely to hold the same ports.
    let base = 21_000 + (std::process::id() % 200) as u16 * 100;
    let offset = NEXT.fetch_add(count, Ordering::Relaxed);
    assert!(offset < 9_000, "test port space exhausted");
    base + offset
}

/// Extra lines for the sections of [`no_media_config`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Extra<'a> {
    /// More `[janus]` keys.
    pub janus: &'a str,
    /// More `[room]` keys.
    pub room: &'a str,
    /// More `[stream]` keys.
    pub stream: &'a str,
    /// Whole sections after the others.
    pub rest: &'a str,
}

/// [`config_head`] with `stream.transport = transport` and nothing else
/// added.
pub fn head_over(janus_url: &str, id: u64, secret: &str, base: u16, transport: &str) -> String {
    let stream = format!("transport = \"{transport}\"\n");
    let extra = Extra {
        stream: &stream,
        ..Extra::default()
    };
    config_head(janus_url, id, secret, base, extra)
}

/// The sections every test agent's configuration starts with: `[janus]` on
/// the test's Janus, `[room]` with a secret and a quick check interval,
/// `[stream]` with video, audio and video RTCP on `base`, `base + 1`,
/// `base + 2`, each with `extra`'s lines (`extra.rest` is the caller's to
/// place). The uplink is plain RTP unless `extra.stream` sets
/// `transport`: WebRTC needs addresses other than loopback, which only
/// the tests that make a network of their own have.
pub fn config_head(janus_url: &str, id: u64, secret: &str, base: u16, extra: Extra<'_>) -> String {
    let Extra {
        janus,
        room,
        stream,
        ..
    } = extra;
    format!(
        r#"
[janus]
url = "{janus_url}"
{janus}
[room]
id = {id}
secret = "{secret}"
check_interval_ms = 500
{room}
[stream]
video_port = {base}
audio_port = {audio}
video_rtcp_port = {rtcp}
{transport}
{stream}
"#,
        audio = base + 1,
        rtcp = base + 2,
        transport = if stream.contains("transport") {
            ""
        } else {
            "transport = \"rtp\""
        },
    )
}

/// A `[video]` section for `source` at a size these 2 cores carry beside
/// everything else: 320x240 at 15 frames a second, 300 kbit/s.
pub fn small_video(source: &str) -> String {
    format!(
        "[video]\nsource = \"{source}\"\nwidth = 320\nheight = 240\nframerate = 15\nbitrate_kbps = 300\n"
    )
}

/// An agent configuration for a test that needs no media: no video, no
/// microphone, a speaker playing into ALSA's `null` device (so the room's
/// audio is forwarded), stream ports of its own, a quick check interval.
pub fn no_media_config(
    janus_url: &str,
    room: u64,
    secret: &str,
    speaker_port: u16,
    extra: Extra<'_>,
) -> String {
    let head = config_head(janus_url, room, secret, ports(3), extra);
    format!(
        r#"{head}
[speaker]
device = "null"
port = {speaker_port}
[video]
source = "none"
[microphone]
enabled = false
{rest}
"#,
        rest = extra.rest,
    )
}

/// The machine's cores, as the tests of one binary share them: a test with
/// a tight time bound takes them [`alone`], the others [`shared`], so that
/// no other test of its binary runs beside it (binaries run one by one).
static CORES: RwLock<()> = RwLock::new(());

/// Holds the cores for a timing-bound test until dropped.
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    CORES.write().unwrap_or_else(PoisonError::into_inner)
}

/// Shares the cores with the other tests of the binary until dropped.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    CORES.read().unwrap_or_else(PoisonError::into_inner)
}

/// A scratch directory removed on drop.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("broadcast-agent-test-")
        .tempdir()
        .expect("temporary directory")
}

/// Writes a config file only its owner can read, as one holding secrets
/// must be (the agent refuses a world-readable one).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).expect("write config");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod config");
}

/// The agent binary under test, running with a config file of the test's.
pub struct Agent {
    child: Child,
    log: PathBuf,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `broadcast-agent run` with `config` as its file.
    pub fn start(config: &str) -> Self {
        Self::start_with(config, &[])
    }

    /// Starts `broadcast-agent run` with `config` and extra environment.
    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = scratch();
        let path = dir.path().join("agent.toml");
        let socket = dir.path().join("control.sock");
        // Each agent gets its own control socket and state directory unless
        // the test names them.
        let config = if config.contains("[control]") {
            config.to_owned()
        } else {
            format!(
                "{config}\n[control]\nsocket = \"{}\"\nstate_dir = \"{}\"\n",
                socket.display(),
                dir.path().join("state").display()
            )
        };
        write_private(&path, &config);
        let log = dir.path().join("agent.log");
        let child = agent_command()
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("agent log file"))
            .spawn()
            .expect("start broadcast-agent");
        Self {
            child,
            log,
            socket,
            _dir: dir,
        }
    }

    /// Where the agent's config file is.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("agent.toml")
    }

    /// Runs `broadcast-agent <args> --socket <this agent's socket>`.
    pub fn control(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let socket = self.socket.to_str().expect("utf-8 path");
        let mut all = args.to_vec();
        all.extend(["--socket", socket]);
        run_agent(&all, &[])
    }

    /// `status --json`, once the agent serves its socket.
    pub fn status_json(&self) -> serde_json::Value {
        wait_for(Duration::from_secs(5), "status --json", || {
            let (status, out, _) = self.control(&["status", "--json"]);
            status
                .success()
                .then(|| serde_json::from_str(&out).expect("status --json is JSON"))
        })
    }

    /// `status`, once the agent serves its socket.
    pub fn status_text(&self) -> String {
        wait_for(Duration::from_secs(5), "status", || {
            let (status, out, _) = self.control(&["status"]);
            status.success().then_some(out)
        })
    }

    /// The agent's control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The warnings in the log that mention `needle`.
    pub fn warnings(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the log contains `needle`; returns the log.
    pub fn wait_log(&self, timeout: Duration, needle: &str) -> String {
        wait_for(timeout, &format!("agent log line {needle:?}"), || {
            let log = self.log();
            log.contains(needle).then_some(log)
        })
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (by name, as `kill -s` takes it).
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait(timeout)
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        wait_for(timeout, "the agent to exit", || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
    }
}

/// Asserts that a room warning announces the first retry of an error only
/// the operator can fix: "retrying (attempt 1, next in M ms)", M drawn from
/// the upper half of the agent's first operator delay, 2 s (a transient
/// error is retried within 100 ms).
pub fn assert_first_retry_is_slow(line: &str) {
    let announced = || {
        let (_, rest) = line.split_once("retrying (attempt ")?;
        let (attempt, rest) = rest.split_once(", next in ")?;
        let (millis, _) = rest.split_once(" ms)")?;
        Some((attempt.parse::<u32>().ok()?, millis.parse::<u64>().ok()?))
    };
    let (attempt, millis) = announced().unwrap_or_else(|| panic!("no retry in {line:?}"));
    assert_eq!(attempt, 1, "not the first retry: {line}");
    assert!(
        (1000..=2000).contains(&millis),
        "slow retry expected: {line}"
    );
}

/// Sends the signal `name` (as `kill -s` takes it) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -s {name} {pid} failed");
}

/// `broadcast-agent` as built for this test run.
pub fn agent_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_broadcast-agent"))
}

/// Runs the agent binary to completion with `args`; returns status, stdout
/// and stderr.
pub fn run_agent(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let child = agent_command()
        .args(args)
        .envs(env.iter().copied())
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start broadcast-agent");
    finish(child, "broadcast-agent", Duration::from_secs(20))
}

/// A child's pipe, read to its end on a thread of its own while the child
/// runs: a child whose output fills the pipe (64 KiB) would otherwise block
/// in its write and never exit.
pub struct Drain(mpsc::Receiver<Vec<u8>>);

impl Drain {
    /// Starts reading `pipe`.
    pub fn start(mut pipe: impl Read + Send + 'static) -> Self {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send(bytes);
        });
        Self(receiver)
    }

    /// Everything the pipe gave, once it is closed; panics when it is still
    /// open after `timeout` (a process left behind holds it).
    pub fn bytes(self, timeout: Duration) -> Vec<u8> {
        self.0
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("a child's pipe still open after {timeout:?}: {e}"))
    }

    /// [`Drain::bytes`] as text.
    pub fn text(self, timeout: Duration) -> String {
        String::from_utf8_lossy(&self.bytes(timeout)).into_owned()
    }
}

/// Waits for `child` (`what`), spawned with piped stdout and stderr, reading
/// both while it runs; kills it and fails the test when it runs longer than
/// `timeout`. Returns its status, stdout and stderr.
pub fn finish(mut child: Child, what: &str, timeout: Duration) -> (ExitStatus, String, String) {
    let out = Drain::start(child.stdout.take().expect("stdout piped"));
    let err = Drain::start(child.stderr.take().expect("stderr piped"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let pipes = Duration::from_secs(5);
    (status, out.text(pipes), err.text(pipes))
}

/// The repository root (for the shipped config files).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
