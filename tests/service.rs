//! The agent as a system service: control socket and CLI, GPIO buttons
//! (simulated pins, real Janus), sd-notify, journald logging, SIGHUP.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::janus::Janus;
use common::{no_media_config, ports, run_agent, scratch, wait_for, Agent, Extra};
use serde_json::Value;

const SECRET: &str = "service-secret";

/// An agent config for `janus` without media (this file tests the service).
fn config(janus_url: &str, room: u64, extra: &str) -> String {
    let extra = Extra {
        rest: extra,
        ..Extra::default()
    };
    no_media_config(janus_url, room, SECRET, ports(1), extra)
}

#[test]
fn close_and_open_over_the_control_socket() {
    let janus = Janus::start();
    let probe = janus.probe();
    let agent = Agent::start(&config(&janus.url(), 41, ""));
    probe.wait_room(41, SECRET, true);

    let (status, out, _) = agent.control(&["status"]);
    assert!(status.success());
    assert!(
        out.starts_with("room 41: live (wanted open)\n  problems: none\n"),
        "{out}"
    );

    let (status, _, err) = agent.control(&["close"]);
    assert!(status.success(), "{err}");
    probe.wait_room(41, SECRET, false);
    wait_for(Duration::from_secs(2), "status closed", || {
        (agent.status_json()["phase"] == "closed").then_some(())
    });

    let (status, _, err) = agent.control(&["open"]);
    assert!(status.success(), "{err}");
    probe.wait_room(41, SECRET, true);
    let json = agent.status_json();
    assert_eq!(json["room"]["desired"], "open");
    assert!(
        !json.to_string().contains(SECRET),
        "the secret reached status"
    );
}

/// With Janus unreachable, `status` says so right after the room's phase,
/// and what to do about it (`status --json` too).
#[test]
fn status_says_what_is_wrong_and_what_to_do() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/janus", closed.local_addr().expect("address"));
    drop(closed);
    let agent = Agent::start(&config(&url, 40, ""));
    let text = wait_for(Duration::from_secs(5), "the failure in status", || {
        let text = agent.status_text();
        text.contains("problem:").then_some(text)
    });
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "room 40: opening (wanted open)", "{text}");
    assert!(
        lines[1].starts_with("  problem: Janus cannot be reached: connection refused"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("       do: start Janus, or set janus.url to where it listens"),
        "{text}"
    );
    assert!(
        text.contains("  last error: cannot reach Janus at"),
        "{text}"
    );
    let problems = &agent.status_json()["problems"];
    let first = problems[0]["problem"].as_str().unwrap_or_default();
    assert!(
        first.starts_with("Janus cannot be reached: connection refused"),
        "{problems}"
    );
}

#[test]
fn status_follows_a_janus_restart() {
    let mut janus = Janus::start();
    let agent = Agent::start(&config(&janus.url(), 42, ""));
    wait_for(Duration::from_secs(5), "live", || {
        (agent.status_json()["phase"] == "live").then_some(())
    });
    janus.kill();
    let down = wait_for(Duration::from_secs(5), "status to show the outage", || {
        let json = agent.status_json();
        (json["phase"] == "opening").then_some(json)
    });
    let error = down["room"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot reach Janus"), "{down}");
    janus.restart();
    wait_for(Duration::from_secs(5), "live again", || {
        let json = agent.status_json();
        (json["phase"] == "live" && json["room"]["last_error"].is_null()).then_some(())
    });
}

#[test]
fn malformed_requests_get_an_error_and_block_nothing() {
    let janus = Janus::start();
    let mut agent = Agent::start(&config(&janus.url(), 43, ""));
    let socket = agent.socket().to_owned();
    wait_for(Duration::from_secs(5), "the control socket", || {
        UnixStream::connect(&socket).ok()
    });
    // A client that connects and says nothing does not hold up the others.
    let _silent = UnixStream::connect(&socket).expect("connect");
    for garbage in [
        "hello\n",
        "{\"command\":\"reboot\"}\n",
        "{\"command\":\n",
        "\n",
    ] {
        let reply = ask(&socket, garbage.as_bytes());
        assert_bad_request(&reply, &format!("{garbage:?}"));
    }
    // An oversized request is cut off at the limit (4 KiB) and answered,
    // although its line never ends: not buffered until the client's
    // deadline, which would drop it without a reply.
    let asked = Instant::now();
    let reply = ask(&socket, &[b'x'; 64 * 1024]);
    assert_bad_request(&reply, "64 KiB without a newline");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        asked.elapsed()
    );
    assert_eq!(agent.status_json()["room"]["room_id"], 43);
    assert!(agent.is_running());
}

/// Sends `request` on a connection of its own to the control socket, and
/// reads the one reply line (bounded in time); `Value::Null` when none came.
fn ask(socket: &Path, request: &[u8]) -> Value {
    let mut stream = UnixStream::connect(socket).expect("connect");
    for timeout in [
        stream.set_read_timeout(Some(Duration::from_secs(10))),
        stream.set_write_timeout(Some(Duration::from_secs(10))),
    ] {
        timeout.expect("socket timeout");
    }
    // The agent may stop reading (and close) before all of it is sent.
    let _ = stream.write_all(request);
    // One line: after it, the agent may close with part of the request
    // unread, which a read past the line reports as a reset.
    let mut reply = String::new();
    let _ = BufReader::new(stream).read_line(&mut reply);
    serde_json::from_str(&reply).unwrap_or(Value::Null)
}

fn assert_bad_request(reply: &Value, request: &str) {
    assert_eq!(reply["ok"], false, "{request} -> {reply}");
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("bad request: "), "{request} -> {reply}");
}

#[test]
fn cli_without_an_agent_says_so() {
    let dir = scratch();
    let socket = dir.path().join("nobody.sock");
    let (status, _, err) = run_agent(
        &["status", "--socket", socket.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("cannot talk to the agent"), "{err}");
    assert!(
        err.contains(
            "the agent is not running there: start it with `sudo systemctl start broadcast-agent`"
        ),
        "says what to do: {err}"
    );
}

/// Collects sd-notify datagrams sent to a socket of the test's.
struct NotifySocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = scratch();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        Self {
            socket,
            path: path.to_str().expect("utf-8").to_owned(),
            _dir: dir,
        }
    }

    /// Every message received during `window`, with its arrival time.
    fn collect(&self, window: Duration) -> Vec<(Instant, String)> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        got
    }
}

fn count(messages: &[(Instant, String)], needle: &str) -> usize {
    messages.iter().filter(|(_, m)| m.contains(needle)).count()
}

#[test]
fn systemd_gets_ready_status_and_watchdog() {
    let janus = Janus::start();
    let notify = NotifySocket::bind();
    // A request may not outlast the watchdog period: 350 ms for 400 ms.
    let mut agent = Agent::start_with(
        &config(&janus.url(), 44, "").replace("[janus]\n", "[janus]\nrequest_timeout_ms = 350\n"),
        &[("NOTIFY_SOCKET", &notify.path), ("WATCHDOG_USEC", "400000")],
    );
    let messages = notify.collect(Duration::from_secs(3));
    assert_eq!(count(&messages, "READY=1"), 1, "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|(_, m)| m.contains("STATUS=live room 44")),
        "{messages:?}"
    );
    // Half of WATCHDOG_USEC: a ping every 200 ms, so about 15 in 3 s.
    let pings: Vec<_> = messages
        .iter()
        .filter(|(_, m)| m.trim() == "WATCHDOG=1")
        .collect();
    assert!(pings.len() >= 10, "{} pings: {messages:?}", pings.len());
    let gaps: Vec<_> = pings.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(400)),
        "gaps {gaps:?}"
    );

    agent.signal("TERM");
    let stopping = notify.collect(Duration::from_secs(2));
    assert!(count(&stopping, "STOPPING=1") == 1, "{stopping:?}");
    assert!(agent.wait(Duration::from_secs(10)).success());
    let all: String = messages
        .iter()
        .chain(&stopping)
        .map(|(_, m)| m.as_str())
        .collect();
    assert!(!all.contains(SECRET));
}

#[test]
fn a_silent_janus_does_not_starve_the_watchdog() {
    // A "Janus" that accepts connections and never answers: each request
    // waits its full timeout, and the loop keeps answering the watchdog.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/janus", silent.local_addr().expect("addr"));
    let notify = NotifySocket::bind();
    let mut agent = Agent::start_with(
        &config(&url, 45, "").replace("[janus]\n", "[janus]\nrequest_timeout_ms = 1500\n"),
        &[
            ("NOTIFY_SOCKET", &notify.path),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let messages = notify.collect(Duration::from_secs(6));
    // READY does not wait for Janus.
    assert_eq!(count(&messages, "READY=1"), 1, "{messages:?}");
    let pings: Vec<_> = messages
        .iter()
        .filter(|(_, m)| m.trim() == "WATCHDOG=1")
        .map(|(at, _)| *at)
        .collect();
    // Every 1 s (half of WatchdogSec), never a gap systemd would act on.
    assert!(pings.len() >= 4, "{messages:?}");
    let gaps: Vec<_> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1500)),
        "gaps {gaps:?}"
    );
    assert!(agent.is_running());
    assert!(agent.warnings("not feeding the watchdog").is_empty());
    drop(silent);
}

#[test]
fn a_request_timeout_beyond_the_watchdog_is_refused() {
    let agent_config = config("http://127.0.0.1:9/janus", 47, "")
        .replace("[janus]\n", "[janus]\nrequest_timeout_ms = 30000\n");
    let mut agent = Agent::start_with(&agent_config, &[("WATCHDOG_USEC", "10000000")]);
    let status = agent.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(78), "{}", agent.log());
    assert!(
        agent.log().contains(
            "config error: janus.request_timeout_ms: 30000 ms is not below the watchdog period \
             (WatchdogSec = 10000 ms)"
        ),
        "{}",
        agent.log()
    );
}

#[test]
fn journald_lines_carry_priorities_and_no_timestamp() {
    let agent = Agent::start_with(
        &config("http://127.0.0.1:9/janus", 46, ""),
        &[("JOURNAL_STREAM", "8:12345")],
    );
    let log = agent.wait_log(Duration::from_secs(5), "cannot reach Janus");
    let info = log
        .lines()
        .find(|l| l.contains("running: room 46"))
        .expect("start line");
    assert!(info.starts_with("<6>broadcast-agent"), "{info}");
    let warning = log
        .lines()
        .find(|l| l.contains("cannot reach Janus"))
        .expect("warning");
    assert!(warning.starts_with("<4>room 46: "), "{warning}");
    assert!(log.lines().all(|l| l.starts_with('<')), "{log}");
}

/// Sends simulated level changes to the agent's GPIO socket.
fn gpio(path: &Path, messages: &[&str]) {
    let sender = UnixDatagram::unbound().expect("socket");
    for m in messages {
        sender
            .send_to(m.as_bytes(), path)
            .expect("send to simulated GPIO");
    }
}

#[test]
fn buttons_open_and_close_the_room_with_debounce() {
    let janus = Janus::start();
    let probe = janus.probe();
    let dir = scratch();
    let pins = dir.path().join("gpio.sock");
    let extra = format!(
        "[gpio]\nenabled = true\nopen_pin = 17\nclose_pin = 27\ntoggle_pin = 22\nled_pin = 23\ndebounce_ms = 50\nsimulate = \"{}\"\n",
        pins.display()
    );
    let agent = Agent::start(&config(&janus.url(), 47, &extra));
    probe.wait_room(47, SECRET, true);
    wait_for(Duration::from_secs(2), "the GPIO socket", || {
        pins.exists().then_some(())
    });

    // Toggle, pressed with contact bounce: one press, so the room closes
    // (three falling edges counted as presses would leave it open).
    gpio(&pins, &["22 0", "22 1", "22 0", "22 1", "22 0"]);
    probe.wait_room(47, SECRET, false);
    std::thread::sleep(Duration::from_millis(800));
    assert!(!probe.room_exists(47), "a bounce counted as a second press");
    assert_eq!(agent.status_json()["room"]["desired"], "closed");

    // Release, then a second, clean press: open again.
    gpio(&pins, &["22 1"]);
    std::thread::sleep(Duration::from_millis(100));
    gpio(&pins, &["22 0"]);
    probe.wait_room(47, SECRET, true);

    // The dedicated buttons do what they say, however often pressed.
    gpio(&pins, &["22 1", "27 0"]);
    probe.wait_room(47, SECRET, false);
    std::thread::sleep(Duration::from_millis(100));
    gpio(&pins, &["27 1"]);
    std::thread::sleep(Duration::from_millis(100));
    gpio(&pins, &["27 0"]);
    std::thread::sleep(Duration::from_millis(600));
    assert!(!probe.room_exists(47));
    gpio(&pins, &["17 0"]);
    probe.wait_room(47, SECRET, true);
    assert!(
        agent.log().contains("button on GPIO 17 pressed: Open"),
        "{}",
        agent.log()
    );
}

#[test]
fn gpio_without_a_header_is_a_config_error() {
    let dir = scratch();
    let path = dir.path().join("agent.toml");
    common::write_private(
        &path,
        &(config(
            "http://127.0.0.1:9/janus",
            48,
            "[gpio]\nenabled = true\nopen_pin = 17\n",
        ) + &format!(
            "[control]\nsocket = \"{}\"\n",
            dir.path().join("c.sock").display()
        )),
    );
    let (status, _, err) = run_agent(&["run", "--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(
        err.contains("gpio.enabled = true but this machine's GPIO cannot be used"),
        "{err}"
    );
}

#[test]
fn sighup_reloads_a_good_config_and_refuses_a_bad_one() {
    let janus = Janus::start();
    let probe = janus.probe();
    let mut agent = Agent::start(&config(&janus.url(), 49, ""));
    probe.wait_room(49, SECRET, true);
    let path = agent.config_path();
    let original = std::fs::read_to_string(&path).expect("read config");

    std::fs::write(&path, original.replace("id = 49", "id = 0")).expect("write bad config");
    agent.signal("HUP");
    agent.wait_log(Duration::from_secs(3), "SIGHUP: ");
    assert!(
        agent.log().contains("room.id: must not be 0"),
        "{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.is_running() && probe.room_exists(49));

    std::fs::write(&path, original.replace("id = 49", "id = 50")).expect("write new config");
    agent.signal("HUP");
    probe.wait_room(50, SECRET, true);
    probe.wait_room(49, SECRET, false);
    assert!(agent.stop(Duration::from_secs(10)).success());
    probe.wait_room(50, SECRET, false);
}

/// The config of [`a_closed_room_stays_closed_across_restarts`]: a live
/// microphone.
fn remembering_config(janus: &Janus, room: u64, open_on_start: bool) -> String {
    let extra = Extra {
        room: &format!("open_on_start = {open_on_start}"),
        ..Extra::default()
    };
    no_media_config(&janus.url(), room, SECRET, ports(1), extra).replace(
        "[microphone]\nenabled = false",
        "[microphone]\ndevice = \"test\"",
    )
}

/// Starts an agent whose state directory is `dir` (kept across agents).
fn remembering_agent(config: &str, dir: &Path) -> Agent {
    let dir = dir.to_str().expect("utf-8 path");
    Agent::start_with(config, &[("BROADCAST_AGENT__CONTROL__STATE_DIR", dir)])
}

#[test]
fn a_closed_room_stays_closed_across_restarts() {
    let janus = Janus::start();
    let probe = janus.probe();
    let dir = scratch();
    let mut agent = remembering_agent(&remembering_config(&janus, 51, true), dir.path());
    probe.wait_room(51, SECRET, true);
    let (status, _, err) = agent.control(&["close"]);
    assert!(status.success(), "{err}");
    probe.wait_room(51, SECRET, false);
    assert!(agent.stop(Duration::from_secs(10)).success());

    // open_on_start = true, but the owner closed it: it stays closed, and
    // the microphone stays off.
    let mut agent = remembering_agent(&remembering_config(&janus, 51, true), dir.path());
    let json = agent.status_json();
    std::thread::sleep(Duration::from_secs(2));
    assert!(!probe.room_exists(51) && probe.mountpoint(51, SECRET).is_none());
    assert_eq!(json["room"]["desired"], "closed", "{json}");
    assert_eq!(json["room"]["closed_by"], "restored", "{json}");
    let pipelines = json["pipelines"].as_array().expect("pipelines");
    assert!(!pipelines.is_empty(), "{json}");
    assert!(pipelines.iter().all(|p| p["state"] == "stopped"), "{json}");
    let (_, out, _) = agent.control(&["status"]);
    assert!(
        out.contains("closed by the owner before the agent restarted"),
        "{out}"
    );

    // Opened again, it stays open across a reload and a restart, whatever
    // open_on_start says.
    assert!(agent.control(&["open"]).0.success());
    probe.wait_room(51, SECRET, true);
    agent.signal("HUP");
    agent.wait_log(Duration::from_secs(5), "SIGHUP: configuration reloaded");
    probe.wait_room(51, SECRET, true);
    assert!(agent.stop(Duration::from_secs(10)).success());
    let agent = remembering_agent(&remembering_config(&janus, 51, false), dir.path());
    probe.wait_room(51, SECRET, true);
    assert_eq!(agent.status_json()["room"]["desired"], "open");
}

/// Waits up to 2 s for the room to be closed, then holds for a second
/// more: nothing of it appears on Janus. Returns the status as JSON.
fn stays_closed(agent: &Agent, probe: &common::janus::Probe, room: u64) -> serde_json::Value {
    common::wait_for(Duration::from_secs(2), "a closed room", || {
        let json = agent.status_json();
        (json["phase"] == "closed").then_some(json)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(!probe.room_exists(room) && probe.mountpoint(room, SECRET).is_none());
    agent.status_json()
}

/// The owner's choice is never guessed: a saved choice that cannot be
/// read, or a state directory the agent cannot write (the next choice
/// would be lost), keeps the room closed until opened, and says why.
#[test]
fn a_choice_the_agent_cannot_be_sure_of_keeps_the_room_closed() {
    let janus = Janus::start();
    let probe = janus.probe();
    let dir = scratch();
    std::fs::write(dir.path().join("room.json"), "{\"room\":").expect("write");
    let agent = remembering_agent(&remembering_config(&janus, 52, true), dir.path());
    let json = stays_closed(&agent, &probe, 52);
    assert_eq!(json["room"]["closed_by"], "unreadable", "{json}");
    let log = agent.log();
    let errors: Vec<_> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("room.json"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("is not a saved choice"), "{errors:?}");
    assert!(agent
        .status_text()
        .contains("cannot be read: closed until opened"));
    // Opened by the owner, it is saved whole again.
    assert!(agent.control(&["open"]).0.success());
    probe.wait_room(52, SECRET, true);
    drop(agent);

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    let agent = remembering_agent(&remembering_config(&janus, 53, true), &file.join("state"));
    let json = stays_closed(&agent, &probe, 53);
    assert_eq!(json["room"]["closed_by"], "unwritable", "{json}");
    assert!(agent.log().contains("control.state_dir: cannot write"));
}

/// A room its idle timeout closed stays closed after a restart, and is
/// said to be the timeout's, not the owner's.
#[test]
fn a_room_closed_by_its_timeout_is_said_so_after_a_restart() {
    let janus = Janus::start();
    let probe = janus.probe();
    let dir = scratch();
    let saved = "{\"room\":\"closed\",\"reason\":\"idle_timeout\"}\n";
    std::fs::write(dir.path().join("room.json"), saved).expect("write");
    let agent = remembering_agent(&remembering_config(&janus, 54, true), dir.path());
    let json = stays_closed(&agent, &probe, 54);
    assert_eq!(json["room"]["closed_by"], "restored", "{json}");
    let text = agent.status_text();
    assert!(
        text.contains("closed by its idle timeout (room.idle_timeout_s)"),
        "{text}"
    );
    assert!(
        agent.log().contains("closed by its idle timeout"),
        "{}",
        agent.log()
    );
}

/// A fresh install (no room secret, no choice yet) broadcasts nothing by
/// itself, whatever open_on_start says; `status` says why, and the owner
/// can still open it.
#[test]
fn without_a_room_secret_nothing_opens_by_itself() {
    let janus = Janus::start();
    let probe = janus.probe();
    let dir = scratch();
    let config =
        remembering_config(&janus, 55, true).replace(&format!("secret = \"{SECRET}\""), "");
    let agent = remembering_agent(&config, dir.path());
    let json = stays_closed(&agent, &probe, 55);
    assert_eq!(json["room"]["closed_by"], "unconfigured", "{json}");
    assert!(
        agent
            .status_text()
            .contains("room.secret is not set: nothing opens by itself"),
        "{}",
        agent.status_text()
    );
    assert!(agent.control(&["open"]).0.success());
    common::wait_for(
        Duration::from_secs(5),
        "the room opened by the owner",
        || probe.room_exists(55).then_some(()),
    );
}

/// `[gpio]` lines for simulated pins at `pins`: a close button on 27, an
/// open button on 17, and `more`.
fn simulated_gpio(pins: &Path, more: &str) -> String {
    format!(
        "[gpio]\nenabled = true\nopen_pin = 17\nclose_pin = 27\ndebounce_ms = 20\nsimulate = \"{}\"\n{more}\n",
        pins.display()
    )
}

/// Presses (and releases) the active-low button on `pin`.
fn press(pins: &Path, pin: u8) {
    gpio(pins, &[&format!("{pin} 0")]);
    std::thread::sleep(Duration::from_millis(60));
    gpio(pins, &[&format!("{pin} 1")]);
}

#[test]
fn buttons_work_without_a_status_led() {
    let janus = Janus::start();
    let probe = janus.probe();
    let dir = scratch();
    let pins = dir.path().join("gpio.sock");
    let agent = Agent::start(&config(&janus.url(), 53, &simulated_gpio(&pins, "")));
    probe.wait_room(53, SECRET, true);
    press(&pins, 27);
    probe.wait_room(53, SECRET, false);
    press(&pins, 17);
    probe.wait_room(53, SECRET, true);
    assert!(agent.log().contains("button on GPIO 27 pressed: Close"));
}

#[test]
fn a_reload_with_gpio_takes_the_pins_again() {
    let janus = Janus::start();
    let probe = janus.probe();
    let dir = scratch();
    let pins = dir.path().join("gpio.sock");
    let mut agent = Agent::start(&config(
        &janus.url(),
        54,
        &simulated_gpio(&pins, "led_pin = 23"),
    ));
    probe.wait_room(54, SECRET, true);
    for reloads in 1..=2 {
        agent.signal("HUP");
        wait_for(Duration::from_secs(5), "the reloaded agent", || {
            let log = agent.log();
            (log.matches("running: room 54").count() > reloads || log.contains("exit"))
                .then_some(())
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.is_running(), "{}", agent.log());
    assert!(!agent.log().contains("already in use"), "{}", agent.log());
    probe.wait_room(54, SECRET, true);
    press(&pins, 27);
    probe.wait_room(54, SECRET, false);
    assert!(agent.stop(Duration::from_secs(10)).success());
}

#[test]
fn check_refuses_a_recording_dir_the_unit_cannot_write_and_warns_of_space() {
    let dir = scratch();
    let path = dir.path().join("agent.toml");
    let check = |recording: &str| {
        let text = config("http://127.0.0.1:9/janus", 55, recording).replace(
            "[microphone]\nenabled = false",
            "[microphone]\ndevice = \"test\"",
        );
        common::write_private(&path, &text);
        run_agent(&["check", "--config", path.to_str().expect("utf-8")], &[])
    };
    let outside = format!(
        "[recording]\nenabled = true\ndir = \"{}\"\n",
        dir.path().join("rec").display()
    );
    let (status, _, err) = check(&outside);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(
        err.contains("recording.dir: ") && err.contains("ReadWritePaths="),
        "{err}"
    );

    let (status, _, err) = check("[recording]\nenabled = true\nmax_total_mb = 1e12\n");
    assert!(status.success(), "{err}");
    assert!(err.contains("less than recording.max_total_mb"), "{err}");
    let (status, _, err) = check("[recording]\nenabled = true\nmax_total_mb = 1\n");
    assert!(status.success() && !err.contains("max_total_mb"), "{err}");
}

/// The configuration the .deb installs, untouched but for where Janus is:
/// the service starts, and nothing is broadcast until the owner has set a
/// room secret (or opened the room); `status` says so.
#[test]
fn a_fresh_install_broadcasts_nothing() {
    let janus = Janus::start();
    let probe = janus.probe();
    let shipped = std::fs::read_to_string(common::repo().join("conf/agent.toml")).expect("shipped");
    // The test's own control socket and state directory instead of /run's and /var/lib's.
    let mut config = String::new();
    let mut in_control = false;
    for line in shipped.lines() {
        if line.starts_with('[') {
            in_control = line == "[control]";
        }
        if !in_control {
            config.push_str(line);
            config.push('\n');
        }
    }
    let room: u64 = 4556;
    let agent = Agent::start_with(&config, &[("BROADCAST_AGENT__JANUS__URL", &janus.url())]);
    let json = stays_closed(&agent, &probe, room);
    assert_eq!(json["room"]["closed_by"], "unconfigured", "{json}");
    assert!(!probe.chat_exists(room));
    let text = agent.status_text();
    assert!(text.contains("room.secret is not set"), "{text}");
}
