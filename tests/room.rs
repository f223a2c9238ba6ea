//! The agent core against a real Janus: it opens the room, adopts what an
//! earlier run left, recovers from a Janus restart, cleans up on SIGTERM,
//! explains what it cannot fix, and leaks no session.

mod common;

use std::time::{Duration, Instant};

use common::janus::{Janus, JanusConfig};
use common::{assert_first_retry_is_slow, no_media_config, ports, wait_for, Agent, Extra};
use serde_json::json;

const SECRET: &str = "room-secret-for-tests";

/// An agent config for `janus` with its own room id and ports.
fn config(janus: &Janus, room: u64, speaker_port: u16) -> String {
    config_with(janus, room, speaker_port, "")
}

/// [`config`] with more `[room]` keys.
fn config_with(janus: &Janus, room: u64, speaker_port: u16, room_lines: &str) -> String {
    let extra = Extra {
        janus: "request_timeout_ms = 2000",
        room: room_lines,
        ..Extra::default()
    };
    no_media_config(&janus.url(), room, SECRET, speaker_port, extra)
}

#[test]
fn open_creates_room_mountpoint_and_forwarder() {
    let janus = Janus::start();
    let probe = janus.probe();
    let speaker = ports(1);
    let started = Instant::now();
    let _agent = Agent::start(&config(&janus, 4556, speaker));
    probe.wait_all_present(4556, SECRET, speaker, Duration::from_secs(2));
    println!(
        "live on Janus {} ms after start",
        started.elapsed().as_millis()
    );

    let info = probe.mountpoint(4556, SECRET).expect("mountpoint");
    let media = info["media"].as_array().expect("media array");
    assert_eq!(media[0]["codec"], "h264");
    assert_eq!(media[1]["codec"], "opus");
    let forwarder = &probe.forwarders(4556, SECRET)[0];
    assert_eq!(forwarder["ip"], "127.0.0.1");
    assert_eq!(forwarder["codec"], "opus");
}

#[test]
fn existing_room_and_mountpoint_are_adopted() {
    let janus = Janus::start();
    let probe = janus.probe();
    let speaker = ports(1);
    let config = config(&janus, 777, speaker);
    // What an earlier run (killed before it could clean up) left behind,
    // marked so that a replacement would show.
    const LEFT: &str = "left by an earlier run";
    let created = probe.audiobridge(json!({
        "request": "create", "room": 777, "secret": SECRET, "sampling_rate": 48000,
        "description": LEFT
    }));
    assert_eq!(created["audiobridge"], "created", "{created}");
    let port = |key: &str| {
        config
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(" = ")?
                    .parse::<u16>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{key} in the config"))
    };
    let created = probe.streaming(json!({
        "request": "create", "type": "rtp", "id": 777, "secret": SECRET, "description": LEFT,
        "media": [
            { "type": "video", "mid": "v", "port": port("video_port"), "pt": 96, "codec": "h264",
              "rtcpport": port("video_rtcp_port") },
            { "type": "audio", "mid": "a", "port": port("audio_port"), "pt": 111, "codec": "opus" }
        ]
    }));
    assert_eq!(created["streaming"], "created", "{created}");

    let mut agent = Agent::start(&config);
    probe.wait_all_present(777, SECRET, speaker, Duration::from_secs(3));
    // Adopted: the agent went live in the very room and mountpoint left
    // behind, neither made anew nor replaced, only given the configured
    // description (and PIN).
    const CONFIGURED: &str = "Raspberry Pi broadcast";
    wait_for(Duration::from_secs(3), "the configured description", || {
        let room = probe.room(777)?;
        let mountpoint = probe.mountpoint(777, SECRET)?;
        (room["description"] == CONFIGURED && mountpoint["description"] == CONFIGURED).then_some(())
    });
    assert!(
        probe.room(777).is_some(),
        "the public room left behind (the agent makes private ones)"
    );
    for made in ["room 777: created", "mountpoint 777: created"] {
        assert!(!agent.log().contains(made), "{}", agent.log());
    }
    assert!(agent.stop(Duration::from_secs(10)).success());
    assert!(
        probe.nothing_left(777, SECRET),
        "SIGTERM left the room behind"
    );
}

#[test]
fn recovers_after_janus_restart() {
    let mut janus = Janus::start();
    let speaker = ports(1);
    let mut agent = Agent::start(&config(&janus, 4242, speaker));
    let probe = janus.probe();
    probe.wait_all_present(4242, SECRET, speaker, Duration::from_secs(3));

    janus.kill();
    agent.wait_log(Duration::from_secs(5), "cannot reach Janus");
    // Down for a while, so the agent is deep in its backoff.
    std::thread::sleep(Duration::from_secs(3));
    janus.restart();
    let answering = Instant::now();
    let probe = janus.probe();
    probe.wait_all_present(4242, SECRET, speaker, Duration::from_secs(3));
    println!(
        "back {} ms after Janus answered again",
        answering.elapsed().as_millis()
    );
    assert!(agent.is_running());
    assert!(agent.log().contains("Janus answers again"));
    // The outage is logged when its error changes (reset, then refused),
    // not once per retry (the agent retried about every second).
    let outage_warnings = agent.warnings("cannot reach Janus").len();
    assert!((1..=2).contains(&outage_warnings), "{}", agent.log());
}

#[test]
fn sigterm_removes_everything_and_exits_zero() {
    let janus = Janus::start();
    let probe = janus.probe();
    let speaker = ports(1);
    let mut agent = Agent::start(&config(&janus, 9001, speaker));
    probe.wait_all_present(9001, SECRET, speaker, Duration::from_secs(3));
    let stopping = Instant::now();
    let status = agent.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    println!("stopped in {} ms", stopping.elapsed().as_millis());
    assert!(probe.nothing_left(9001, SECRET));
    assert!(probe.forwarders(9001, SECRET).is_empty());
}

#[test]
fn no_session_leaks_over_ten_restarts() {
    let janus = Janus::start();
    let probe = janus.probe();
    let speaker = ports(1);
    let config = config(&janus, 5151, speaker);
    for _ in 0..10 {
        let mut agent = Agent::start(&config);
        probe.wait_all_present(5151, SECRET, speaker, Duration::from_secs(3));
        assert!(agent.stop(Duration::from_secs(10)).success());
    }
    let stale: Vec<_> = janus
        .sessions()
        .into_iter()
        .filter(|s| *s != probe.session())
        .collect();
    assert!(stale.is_empty(), "Janus still holds sessions {stale:?}");
}

#[test]
fn wrong_api_secret_is_a_clear_error_and_backs_off() {
    let janus = Janus::start_with(JanusConfig {
        api_secret: Some("right-secret".into()),
        ..JanusConfig::default()
    });
    let config = config(&janus, 3131, ports(1)).replace(
        "request_timeout_ms = 2000",
        "request_timeout_ms = 2000\napi_secret = \"wrong-secret\"",
    );
    let mut agent = Agent::start(&config);
    let log = agent.wait_log(Duration::from_secs(3), "Janus error 403");
    std::thread::sleep(Duration::from_secs(4));
    assert!(agent.is_running(), "the agent must keep retrying");
    let log = agent.log() + &log;
    assert!(
        !log.contains("wrong-secret"),
        "the secret reached the log:\n{log}"
    );
    let warnings = agent.warnings("Janus error 403");
    assert_eq!(
        warnings.len(),
        1,
        "logged once per change, not per retry:\n{log}"
    );
    // Slow retries for an operator error.
    assert_first_retry_is_slow(&warnings[0]);
    assert!(!janus.probe().room_exists(3131));
}

#[test]
fn unreachable_janus_is_retried_until_it_appears() {
    // Reserve Janus's ports but start it only later.
    let janus_later = || Janus::start();
    let speaker = ports(1);
    let closed = ports(1);
    let media = ports(3);
    let config = format!(
        "[janus]\nurl = \"http://127.0.0.1:{closed}/janus\"\n[room]\nid = 6161\nsecret = \"{SECRET}\"\n\
         [stream]\ntransport = \"rtp\"\nvideo_port = {media}\naudio_port = {}\nvideo_rtcp_port = {}\n\
         [speaker]\nport = {speaker}\ndevice = \"null\"\n[video]\nsource = \"none\"\n[microphone]\nenabled = false\n",
        media + 1,
        media + 2
    );
    let mut agent = Agent::start(&config);
    let log = agent.wait_log(Duration::from_secs(3), "cannot reach Janus");
    assert!(log.contains("Connection refused"), "{log}");
    assert!(agent.is_running());
    drop(agent);

    // The same agent finds a Janus that comes up after it.
    let janus = janus_later();
    let config = config.replace(
        &format!("127.0.0.1:{closed}"),
        &format!("127.0.0.1:{}", janus.port),
    );
    let mut agent = Agent::start(&config.replace("[room]", "[room]\ncheck_interval_ms = 500"));
    let probe = janus.probe();
    probe.wait_all_present(6161, SECRET, speaker, Duration::from_secs(3));
    assert!(agent.stop(Duration::from_secs(10)).success());
}

#[test]
fn an_empty_room_closes_after_its_idle_timeout_and_reopens() {
    let janus = Janus::start();
    let probe = janus.probe();
    let speaker = ports(1);
    let agent = Agent::start(&config_with(&janus, 8101, speaker, "idle_timeout_s = 2"));
    probe.wait_all_present(8101, SECRET, speaker, Duration::from_secs(3));
    let live = Instant::now();
    wait_for(Duration::from_secs(5), "the idle room to close", || {
        (!probe.room_exists(8101)).then_some(())
    });
    let closed_after = live.elapsed();
    println!(
        "idle room closed {} ms after going live",
        closed_after.as_millis()
    );
    assert!(
        closed_after >= Duration::from_millis(1500),
        "{closed_after:?}"
    );
    agent.wait_log(
        Duration::from_secs(1),
        "no participants for 2 s (room.idle_timeout_s): closing",
    );
    let status = agent.status_json();
    assert_eq!(status["phase"], "closed");
    assert_eq!(status["room"]["closed_by"], "idle_timeout");
    let text = agent.status_text();
    assert!(text.contains("closed: idle timeout"), "{text}");

    // `open` (as the button does) reopens it, with a fresh idle timer.
    let (status, _, err) = agent.control(&["open"]);
    assert!(status.success(), "{err}");
    probe.wait_all_present(8101, SECRET, speaker, Duration::from_secs(3));
    let reopened = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(probe.room_exists(8101), "closed too early after reopening");
    wait_for(
        Duration::from_secs(5),
        "the idle room to close again",
        || (!probe.room_exists(8101)).then_some(()),
    );
    assert!(reopened.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn a_participant_keeps_an_idle_room_open_until_its_max_duration() {
    let janus = Janus::start();
    let probe = janus.probe();
    let speaker = ports(1);
    let timers = "idle_timeout_s = 2\nmax_duration_s = 5\nallow_rtp_participants = true";
    let agent = Agent::start(&config_with(&janus, 8102, speaker, timers));
    let opened = Instant::now();
    probe.wait_all_present(8102, SECRET, speaker, Duration::from_secs(3));
    // A plain-RTP participant (a stand-in for a browser); its port stays
    // open so Janus keeps it.
    let local = ports(1);
    let _socket = std::net::UdpSocket::bind(("127.0.0.1", local)).expect("participant port");
    probe.join_rtp(8102, local);
    wait_for(Duration::from_secs(3), "the participant counted", || {
        (agent.status_json()["room"]["participants"] == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(probe.room_exists(8102), "closed although someone is in it");
    assert!(!agent.log().contains("idle_timeout_s"), "{}", agent.log());

    wait_for(
        Duration::from_secs(4),
        "max_duration to close the room",
        || (!probe.room_exists(8102)).then_some(()),
    );
    let open_for = opened.elapsed();
    println!(
        "room closed {} ms after opening (max 5 s)",
        open_for.as_millis()
    );
    assert!(open_for >= Duration::from_secs(5), "{open_for:?}");
    agent.wait_log(
        Duration::from_secs(1),
        "open for 5 s (room.max_duration_s): closing",
    );
    assert_eq!(agent.status_json()["room"]["closed_by"], "max_duration");
}

/// An agent config for `janus` whose `speaker.host` is `host`.
fn config_with_speaker_host(janus: &Janus, room: u64, speaker_port: u16, host: &str) -> String {
    config(janus, room, speaker_port).replace("[speaker]", &format!("[speaker]\nhost = \"{host}\""))
}

/// A name /etc/hosts gives 127.0.0.1, other than `localhost`.
fn hosts_name_for_loopback() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let mut words = line.split('#').next()?.split_whitespace();
        (words.next()? == "127.0.0.1")
            .then(|| words.find(|name| *name != "localhost").map(str::to_owned))
            .flatten()
    })
}

#[test]
fn one_forwarder_whatever_the_speaker_host_spelling() {
    let janus = Janus::start();
    let probe = janus.probe();
    let mut spellings = vec![
        "localhost".to_owned(),
        "127.0.0.1".into(),
        "::ffff:127.0.0.1".into(),
    ];
    spellings.extend(hosts_name_for_loopback());
    let agents: Vec<_> = spellings
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let room = 7300 + i as u64;
            let speaker = ports(1);
            let agent = Agent::start(&config_with_speaker_host(&janus, room, speaker, host));
            (host, room, speaker, agent)
        })
        .collect();
    // 8 s at a check every 500 ms: 16 checks, each of which would add one.
    std::thread::sleep(Duration::from_secs(8));
    let counts: Vec<_> = agents
        .iter()
        .map(|(host, room, _, _)| (host.as_str(), probe.forwarders(*room, SECRET).len()))
        .collect();
    println!("forwarders on Janus after 8 s per speaker.host: {counts:?}");
    for ((host, room, speaker, agent), (_, count)) in agents.iter().zip(&counts) {
        assert_eq!(*count, 1, "speaker.host = {host:?}:\n{}", agent.log());
        let forwarder = &probe.forwarders(*room, SECRET)[0];
        assert_eq!(forwarder["ip"], "127.0.0.1", "{forwarder}");
        assert_eq!(forwarder["port"], *speaker);
    }
}

/// Creates AudioBridge room `room` as an earlier run would have, and
/// returns a way to forward it: `(host, port)` to the new forwarder's id.
fn room_with_forwarders(probe: &common::janus::Probe, room: u64) -> impl Fn(&str, u16) -> u64 + '_ {
    let created = probe.audiobridge(json!({
        "request": "create", "room": room, "secret": SECRET, "sampling_rate": 48000
    }));
    assert_eq!(created["audiobridge"], "created", "{created}");
    move |host, port| {
        let reply = probe.audiobridge(json!({
            "request": "rtp_forward", "room": room, "secret": SECRET,
            "host": host, "port": port, "codec": "opus", "ptype": 100
        }));
        reply["stream_id"].as_u64().expect("stream id")
    }
}

#[test]
fn the_forwarder_to_an_old_address_is_stopped() {
    let janus = Janus::start();
    let probe = janus.probe();
    let speaker = ports(1);
    let room = 7400;
    // An earlier run, when the Pi had another address (127.0.0.2), left the
    // room with its forwarder; someone else forwards to a port of theirs.
    let forward = room_with_forwarders(&probe, room);
    let old = forward("127.0.0.2", speaker);
    let theirs_port = ports(1);
    let theirs = forward("127.0.0.3", theirs_port);
    // speaker.host empty: the agent detects 127.0.0.1 (its route to Janus).
    let _agent = Agent::start(&config(&janus, room, speaker));
    wait_for(Duration::from_secs(3), "the old forwarder gone", || {
        let list = probe.forwarders(room, SECRET);
        let ids: Vec<_> = list
            .iter()
            .filter_map(|f| f["stream_id"].as_u64())
            .collect();
        (!ids.contains(&old) && list.iter().any(|f| f["ip"] == "127.0.0.1")).then_some(list)
    });
    std::thread::sleep(Duration::from_secs(2));
    let list = probe.forwarders(room, SECRET);
    println!("forwarders after the address change: {list:?}");
    let to_speaker: Vec<_> = list.iter().filter(|f| f["port"] == speaker).collect();
    assert_eq!(to_speaker.len(), 1, "{list:?}");
    assert_eq!(to_speaker[0]["ip"], "127.0.0.1");
    assert!(
        list.iter().any(|f| f["stream_id"] == theirs),
        "a forwarder to another port is not the agent's: {list:?}"
    );
}

/// The mountpoint's ports as the holder of `secret` sees them.
fn mountpoint_ports(probe: &common::janus::Probe, id: u64, secret: &str) -> Option<Vec<u64>> {
    let info = probe.mountpoint(id, secret)?;
    info["media"]
        .as_array()?
        .iter()
        .map(|m| m["port"].as_u64())
        .collect()
}

/// How often the agent created or destroyed something on Janus.
fn churn(agent: &Agent) -> usize {
    agent
        .log()
        .lines()
        .filter(|l| l.contains(": created") || l.contains(": destroyed") || l.contains(": adopted"))
        .count()
}

#[test]
fn a_room_someone_else_made_is_neither_adopted_nor_destroyed() {
    let janus = Janus::start();
    let probe = janus.probe();
    // Anybody with API access made room 4600 without secret or PIN, and
    // mountpoint 4601 with a secret of theirs on ports of theirs.
    let created = probe.audiobridge(json!({
        "request": "create", "room": 4600, "sampling_rate": 48000
    }));
    assert_eq!(created["audiobridge"], "created", "{created}");
    let theirs = ports(2);
    let created = probe.streaming(json!({
        "request": "create", "type": "rtp", "id": 4601, "secret": "theirs",
        "media": [
            { "type": "video", "mid": "v", "port": theirs, "pt": 96, "codec": "h264" },
            { "type": "audio", "mid": "a", "port": theirs + 1, "pt": 111, "codec": "opus" }
        ]
    }));
    assert_eq!(created["streaming"], "created", "{created}");

    let mut agents: Vec<_> = [(4600, "room"), (4601, "mountpoint")]
        .into_iter()
        .map(|(id, what)| (id, what, Agent::start(&config(&janus, id, ports(1)))))
        .collect();
    for (id, what, agent) in &agents {
        let status = wait_for(Duration::from_secs(5), "the conflict", || {
            let status = agent.status_json();
            (status["phase"] == "conflict").then_some(status)
        });
        let error = status["room"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        println!("{what} {id}: {error}");
        assert!(error.contains(&format!("{what} {id}")), "{error}");
        assert!(error.contains("room.id"), "says what to do: {error}");
        let (_, text, _) = agent.control(&["status"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("room {id}: conflict (wanted open)"),
            "{text}"
        );
        let problem = format!("  problem: {what} {id} on Janus is not this agent's");
        assert!(lines[1].starts_with(&problem), "{text}");
        assert!(
            lines[2].starts_with("       do: pick another room.id"),
            "{text}"
        );
    }
    // Slow retries, one warning; then SIGTERM removes nothing of theirs.
    std::thread::sleep(Duration::from_secs(3));
    for (id, what, agent) in &mut agents {
        assert_eq!(
            agent.warnings("is not this agent's").len(),
            1,
            "{}",
            agent.log()
        );
        assert!(agent.stop(Duration::from_secs(10)).success());
        println!("{what} {id}: {} create/destroy lines", churn(agent));
    }
    assert!(probe.room_exists(4600), "the stranger's room was destroyed");
    assert!(
        !probe.forwarders(4600, "").iter().any(|_| true),
        "a forwarder was added"
    );
    assert_eq!(
        mountpoint_ports(&probe, 4601, "theirs"),
        Some(vec![u64::from(theirs), u64::from(theirs) + 1]),
        "the stranger's mountpoint was changed"
    );
}

#[test]
fn two_agents_with_one_id_leave_each_other_alone() {
    let janus = Janus::start();
    let probe = janus.probe();
    let first_speaker = ports(1);
    let first_config = config(&janus, 4556, first_speaker);
    let first = Agent::start(&first_config);
    wait_for(Duration::from_secs(3), "the first agent live", || {
        probe.all_present(4556, SECRET, first_speaker).then_some(())
    });
    let first_ports = mountpoint_ports(&probe, 4556, SECRET).expect("first mountpoint");
    let first_churn = churn(&first);
    // A second agent with the same id: one with a secret of its own, one
    // with the same secret but other ports.
    let second = [
        Agent::start(&config(&janus, 4556, ports(1)).replace(SECRET, "another-secret")),
        Agent::start(&config(&janus, 4556, ports(1))),
    ];
    let watched = Instant::now();
    let mut changes = 0;
    let mut last = first_ports.clone();
    while watched.elapsed() < Duration::from_secs(10) {
        let now = mountpoint_ports(&probe, 4556, SECRET).unwrap_or_default();
        if now != last {
            changes += 1;
            last = now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let churn_second: Vec<_> = second.iter().map(churn).collect();
    println!(
        "over 10 s: first agent's mountpoint changed {changes} times; create/destroy lines: first {}, second {churn_second:?}",
        churn(&first) - first_churn
    );
    assert_eq!(changes, 0, "{}", first.log());
    assert_eq!(churn(&first), first_churn, "{}", first.log());
    assert_eq!(first.status_json()["phase"], "live");
    for agent in &second {
        assert_eq!(agent.status_json()["phase"], "conflict", "{}", agent.log());
        assert_eq!(churn(agent), 0, "{}", agent.log());
    }
    assert!(probe.all_present(4556, SECRET, first_speaker));
}

#[test]
fn without_a_room_secret_the_agent_warns_at_start() {
    let janus = Janus::start();
    let config = config(&janus, 4700, ports(1)).replace(&format!("secret = \"{SECRET}\""), "");
    let agent = Agent::start(&config);
    let log = agent.wait_log(Duration::from_secs(3), "can take the room over");
    assert!(log.contains("room.secret is not set"), "{log}");
}

#[test]
fn without_a_speaker_the_room_forwards_nothing_to_the_pi() {
    let janus = Janus::start();
    let probe = janus.probe();
    let speaker = ports(1);
    let room = 7410;
    // An earlier run with the speaker on left the room and its forwarder
    // to the Pi; someone else forwards the room to a port of theirs.
    let forward = room_with_forwarders(&probe, room);
    let ours = forward("127.0.0.1", speaker);
    let theirs = forward("127.0.0.1", ports(1));
    let agent = Agent::start_with(
        &config(&janus, room, speaker),
        &[("BROADCAST_AGENT__SPEAKER__ENABLED", "false")],
    );
    wait_for(Duration::from_secs(3), "the Pi's forwarder stopped", || {
        let list = probe.forwarders(room, SECRET);
        (!list.iter().any(|f| f["stream_id"] == ours)).then_some(())
    });
    assert!(
        probe.mountpoint(room, SECRET).is_some(),
        "the mountpoint is up"
    );
    std::thread::sleep(Duration::from_secs(2));
    let list = probe.forwarders(room, SECRET);
    assert_eq!(
        list.len(),
        1,
        "only someone else's forwarder stays: {list:?}"
    );
    assert_eq!(list[0]["stream_id"], theirs);
    assert_eq!(agent.status_json()["phase"], "live");
    let text = agent.status_text();
    assert!(text.contains("forwarder off (no speaker)"), "{text}");
}

/// A room kept on Janus (`destroy_on_close = false`, a crash, a power cut)
/// is adopted with the PIN the configuration has now: after the owner
/// changes `room.pin`, the old PIN no longer lets anybody in, the new one
/// does, and the mountpoint asks for the new one too.
#[test]
fn an_adopted_room_takes_the_pin_of_the_configuration() {
    let janus = Janus::start();
    let probe = janus.probe();
    let speaker = ports(1);
    let config = config_with(
        &janus,
        371,
        speaker,
        "destroy_on_close = false\nallow_rtp_participants = true\npin = \"1111\"",
    );
    let mut agent = Agent::start(&config);
    probe.wait_all_present(371, SECRET, speaker, Duration::from_secs(5));
    assert!(agent.stop(Duration::from_secs(10)).success());
    assert!(
        probe.room_exists(371),
        "destroy_on_close = false keeps the room"
    );

    let agent = Agent::start(&config.replace("pin = \"1111\"", "pin = \"2468\""));
    agent.wait_log(Duration::from_secs(5), "room 371: made before this run");
    wait_for(Duration::from_secs(5), "the mountpoint's new PIN", || {
        let info = probe.mountpoint(371, SECRET)?;
        (info["pin"] == "2468").then_some(())
    });
    let old = janus.probe().join(371, Some("1111"), ports(1));
    assert!(
        old.get("error_code").is_some(),
        "the old PIN still joins: {old}"
    );
    let new = janus.probe().join(371, Some("2468"), ports(1));
    assert_eq!(new["audiobridge"], "joined", "{new}");
    assert!(!agent.log().contains("2468"), "the PIN was logged");
    drop(agent);

    // Without a PIN now: the room loses it; the chat, whose TextRoom edit
    // cannot remove one, is made again.
    let agent = Agent::start(&config.replace("pin = \"1111\"", ""));
    agent.wait_log(
        Duration::from_secs(5),
        "chat 371: made before this run, perhaps with a PIN: made again without one",
    );
    wait_for(
        Duration::from_secs(5),
        "the mountpoint without a PIN",
        || {
            let info = probe.mountpoint(371, SECRET)?;
            info.get("pin").is_none().then_some(())
        },
    );
    let open = janus.probe().join(371, None, ports(1));
    assert_eq!(open["audiobridge"], "joined", "{open}");
}
