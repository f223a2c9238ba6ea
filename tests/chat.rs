//! The room's chat: a TextRoom room with the room's id, secret and pin,
//! made and removed with the room on a real Janus, re-made after a Janus
//! restart, and never taken from someone else.

mod common;

use std::time::Duration;

use common::janus::{Janus, JanusConfig};
use common::{no_media_config, ports, wait_for, Agent, Extra};
use serde_json::json;

const SECRET: &str = "chat-secret";

fn config(janus: &Janus, room: u64) -> String {
    let extra = Extra {
        room: "pin = \"chat-pin\"\nchat = true",
        ..Extra::default()
    };
    no_media_config(&janus.url(), room, SECRET, ports(1), extra)
}

fn wait_chat(probe: &common::janus::Probe, room: u64, present: bool) {
    let what = format!("chat room {room} {}", if present { "made" } else { "gone" });
    wait_for(Duration::from_secs(5), &what, || {
        (probe.chat_exists(room) == present).then_some(())
    });
}

#[test]
fn the_chat_follows_the_room_and_a_janus_restart() {
    let mut janus = Janus::start();
    let mut probe = janus.probe();
    let agent = Agent::start(&config(&janus, 81));
    wait_chat(&probe, 81, true);
    // Guarded by the room's secret and pin, like the room.
    let edit =
        |secret: &str| probe.textroom(json!({ "request": "edit", "room": 81, "secret": secret }));
    assert_eq!(edit(SECRET)["textroom"], "edited", "{}", edit(SECRET));
    assert_eq!(edit("guess")["error_code"], 419);
    let listed = probe.textroom(json!({ "request": "list" }));
    assert!(
        !listed.to_string().contains("\"room\":81"),
        "a private room is listed: {listed}"
    );

    let (status, _, err) = agent.control(&["close"]);
    assert!(status.success(), "{err}");
    wait_chat(&probe, 81, false);
    let (status, _, err) = agent.control(&["open"]);
    assert!(status.success(), "{err}");
    wait_chat(&probe, 81, true);

    janus.kill();
    janus.restart();
    probe.connect();
    wait_chat(&probe, 81, true);
}

#[test]
fn a_chat_room_someone_else_holds_is_left_alone() {
    let janus = Janus::start();
    let probe = janus.probe();
    let made = probe.textroom(json!({
        "request": "create", "room": 82, "secret": "theirs", "is_private": true
    }));
    assert_eq!(made["textroom"], "created", "{made}");
    let mut agent = Agent::start(&config(&janus, 82));
    let line = agent.wait_log(
        Duration::from_secs(5),
        "chat room 82 on Janus is not this agent's",
    );
    assert!(line.contains("Janus refuses room.secret"), "{line}");
    assert!(agent.stop(Duration::from_secs(10)).success());
    // Still theirs, still there.
    let edit = probe.textroom(json!({ "request": "edit", "room": 82, "secret": "theirs" }));
    assert_eq!(edit["textroom"], "edited", "{edit}");
}

#[test]
fn without_the_textroom_plugin_the_room_runs_without_chat() {
    let janus = Janus::start_with(JanusConfig {
        without_textroom: true,
        ..JanusConfig::default()
    });
    let probe = janus.probe();
    // `chat` is on by default.
    let speaker = ports(1);
    let mut agent = Agent::start(&no_media_config(
        &janus.url(),
        83,
        SECRET,
        speaker,
        Extra::default(),
    ));
    probe.wait_all_present(83, SECRET, speaker, Duration::from_secs(5));
    let status = agent.status_json();
    assert_eq!(status["room"]["chat"], "unavailable", "{status}");
    assert!(
        agent.status_text().contains("room runs without chat"),
        "{}",
        agent.status_text()
    );
    // Closed and opened again on the same session: still no chat, said once.
    for command in ["close", "open"] {
        let (status, _, err) = agent.control(&[command]);
        assert!(status.success(), "{err}");
        probe.wait_room(83, SECRET, command == "open");
    }
    probe.wait_all_present(83, SECRET, speaker, Duration::from_secs(5));
    let warnings = agent.warnings("janus.plugin.textroom");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // Stopping cleans up in one go and leaves no session behind.
    assert!(agent.stop(Duration::from_secs(10)).success());
    assert!(probe.nothing_left(83, SECRET));
    let incomplete = agent.warnings("clean-up incomplete");
    assert!(incomplete.is_empty(), "{incomplete:?}");
    let left: Vec<_> = janus
        .sessions()
        .into_iter()
        .filter(|s| *s != probe.session())
        .collect();
    assert!(left.is_empty(), "Janus still holds sessions {left:?}");
}
