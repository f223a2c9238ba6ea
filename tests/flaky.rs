//! A flaky world with real parts: a Janus that answers every request late
//! (a delaying TCP proxy in front of a real Janus), one that accepts and
//! never answers, and a resolver that never answers (a private mount
//! namespace whose resolv.conf names a silent UDP port). The agent must keep
//! its watchdog fed, stop within systemd's stop timeout and answer `status`.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::janus::Janus;
use common::proxy::DelayProxy;
use common::{
    no_media_config, ports, repo, run_agent, scratch, wait_for, write_private, Agent, Extra,
};

const SECRET: &str = "flaky-secret";

/// Collects sd-notify datagrams in the background.
fn notify_socket() -> (tempfile::TempDir, String, UnixDatagram) {
    let dir = scratch();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let path = path.to_str().expect("utf-8").to_owned();
    (dir, path, socket)
}

/// A Janus answering each request 2 s late keeps the agent up under
/// `WatchdogSec=10` for 60 s: pings at most 10 s apart, the room goes live.
#[test]
fn a_slow_janus_never_trips_the_watchdog() {
    let janus = Janus::start();
    let proxy = DelayProxy::start(janus.port, Duration::from_secs(2));
    let url = format!("http://127.0.0.1:{}/janus", proxy.port);
    let (_dir, path, socket) = notify_socket();
    let config = no_media_config(&url, 61, SECRET, ports(1), Extra::default());
    let mut agent = Agent::start_with(
        &config,
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "10000000")],
    );
    let start = Instant::now();
    let mut pings = vec![start];
    let mut live = None;
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]);
            if message.trim() == "WATCHDOG=1" {
                pings.push(Instant::now());
            }
            if live.is_none() && message.contains("STATUS=live room 61") {
                live = Some(start.elapsed());
            }
        }
        assert!(agent.is_running(), "the agent died: {}", agent.log());
    }
    let gaps: Vec<_> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    println!(
        "slow Janus (2 s per request): {} watchdog pings in 60 s, longest gap {} ms, live after {:?}, {} requests held",
        pings.len() - 1,
        longest.as_millis(),
        live,
        proxy.held()
    );
    assert!(longest < Duration::from_secs(10), "gaps {gaps:?}");
    assert!(pings.len() > 10, "{} pings", pings.len());
    let live = live.unwrap_or_else(|| panic!("never live: {}", agent.log()));
    // A session, the room and the mountpoint take at least three requests
    // one after another: every one of them was held.
    assert!(live >= Duration::from_secs(6), "live after {live:?}");
}

/// `TimeoutStopSec` of the shipped unit.
fn stop_timeout() -> Duration {
    let unit = std::fs::read_to_string(repo().join("systemd/broadcast-agent.service"))
        .expect("read the unit");
    let secs = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().parse().ok())
        .expect("TimeoutStopSec in the unit");
    Duration::from_secs(secs)
}

/// SIGTERM while a request hangs on a Janus that never answers (and whose
/// timeout is longer than the stop budget): the agent exits within the
/// unit's `TimeoutStopSec` all the same.
#[test]
fn sigterm_during_a_blackholed_request_exits_in_time() {
    let blackhole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/janus", blackhole.local_addr().expect("addr"));
    let config = no_media_config(
        &url,
        62,
        SECRET,
        ports(1),
        Extra {
            janus: "request_timeout_ms = 60000",
            ..Extra::default()
        },
    );
    let mut agent = Agent::start(&config);
    agent.wait_log(Duration::from_secs(5), "running: room 62");
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    let status = agent.stop(stop_timeout());
    let took = asked.elapsed();
    println!(
        "SIGTERM during a blackholed request: exited in {} ms (TimeoutStopSec {} s)",
        took.as_millis(),
        stop_timeout().as_secs()
    );
    assert!(status.success(), "{status:?}: {}", agent.log());
    drop(blackhole);
}

/// Runs the agent in a private mount namespace where /etc/resolv.conf names
/// `nameserver` only.
fn agent_with_resolver(config: &str, resolv: &std::path::Path) -> (Child, tempfile::TempDir) {
    let dir = scratch();
    let path = dir.path().join("agent.toml");
    write_private(&path, config);
    let child = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/resolv.conf && shift && exec \"$@\"")
        .arg("sh")
        .arg(resolv)
        .arg(env!("CARGO_BIN_EXE_broadcast-agent"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "debug")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).expect("log"))
        .spawn()
        .expect("start the agent under unshare");
    (child, dir)
}

/// `stream.host` is a name whose resolver never answers: the camera and
/// microphone cannot start, but `status` answers within 1 s throughout.
#[test]
fn a_silent_resolver_blocks_nothing() {
    // Port 53 on an address of our own that takes queries and never answers.
    let silent = UdpSocket::bind("127.0.0.153:53").expect("bind 127.0.0.153:53 (needs root)");
    let dir = scratch();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.153\noptions timeout:30 attempts:1\n",
    )
    .expect("write resolv.conf");
    let janus = Janus::start();
    let socket = dir.path().join("control.sock");
    let config = no_media_config(
        &janus.url(),
        63,
        SECRET,
        ports(1),
        Extra {
            rest: &format!("[control]\nsocket = \"{}\"\n", socket.display()),
            ..Extra::default()
        },
    )
    .replace("[stream]\n", "[stream]\nhost = \"janus.flaky.test\"\n")
    .replace(
        "source = \"none\"",
        "source = \"test\"\nwidth = 320\nheight = 240\nframerate = 15",
    )
    .replace(
        "[microphone]\nenabled = false",
        "[microphone]\ndevice = \"test\"",
    );
    let (mut child, agent_dir) = agent_with_resolver(&config, &resolv);
    let log = || std::fs::read_to_string(agent_dir.path().join("agent.log")).unwrap_or_default();
    let socket = socket.to_str().expect("utf-8").to_owned();
    wait_for(Duration::from_secs(10), "the control socket", || {
        std::path::Path::new(&socket).exists().then_some(())
    });
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(8) {
        let asked = Instant::now();
        let (status, out, err) = run_agent(&["status", "--socket", &socket], &[]);
        let took = asked.elapsed();
        slowest = slowest.max(took);
        assert!(status.success(), "{err}\n{}", log());
        assert!(
            took < Duration::from_secs(1),
            "status took {took:?}\n{}",
            log()
        );
        last = out;
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "silent resolver: slowest status answer {} ms",
        slowest.as_millis()
    );
    assert!(
        last.contains("cannot resolve janus.flaky.test"),
        "{last}\n{}",
        log()
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(silent);
}
