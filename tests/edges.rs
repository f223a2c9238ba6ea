//! Edge Janus servers (`[[relay]]`) with three real Janus instances: the
//! origin holds the room and the WebRTC uplink's publisher, which forwards
//! the broadcast into a mountpoint the agent keeps on each edge. An edge
//! that dies and comes back is fed again on its own, without disturbing the
//! other; an edge holding a foreign mountpoint with the room's id is a
//! conflict for that edge only.
//!
//! Everything runs in a private network namespace with a LAN
//! (`Netns::with_lan`): WebRTC needs addresses other than loopback.

mod common;

use std::time::{Duration, Instant};

use common::janus::Janus;
use common::netns::Netns;
use common::{head_over, ports, small_video, wait_for, Agent};
use serde_json::json;

const ROOM: u64 = 7441;
const SECRET: &str = "edge-secret";

/// A `[[relay]]` table for `edge`, its mountpoint on `base`, `base + 1`
/// and `base + 2`.
fn relay(edge: &Janus, base: u16) -> String {
    format!(
        "[[relay]]\nurl = \"{}\"\nvideo_port = {base}\naudio_port = {}\nvideo_rtcp_port = {}\n",
        edge.url(),
        base + 1,
        base + 2
    )
}

/// The agent on the test pattern and tone, publishing over `transport`
/// into `origin`, with `relays`.
fn config(origin: &Janus, transport: &str, relays: &str) -> String {
    let head = head_over(&origin.url(), ROOM, SECRET, ports(3), transport);
    format!(
        "{head}{}\n[microphone]\ndevice = \"test\"\n[speaker]\nenabled = false\n{relays}",
        small_video("test")
    )
}

/// Milliseconds since `edge`'s mountpoint (the agent's: its ports show
/// with the room's secret) last received video.
fn edge_video_age(edge: &Janus) -> Option<u64> {
    edge.probe().media_age(ROOM, SECRET, "video")
}

/// Waits until `edge` receives the broadcast (video under 500 ms old).
fn wait_fed(edge: &Janus, within: Duration, what: &str) -> Duration {
    let start = Instant::now();
    wait_for(within, what, || {
        edge_video_age(edge).filter(|&age| age < 500).map(drop)
    });
    start.elapsed()
}

/// Samples `edge`'s video age for `window`: it never reaches 500 ms
/// (its viewers see no freeze).
fn assert_steady(edge: &Janus, window: Duration, when: &str) {
    let start = Instant::now();
    let mut ages = Vec::new();
    while start.elapsed() < window {
        ages.push(edge_video_age(edge).unwrap_or(u64::MAX));
        std::thread::sleep(Duration::from_millis(100));
    }
    let worst = ages.iter().copied().max().unwrap_or_default();
    println!("the second edge {when}: video ages {ages:?} ms");
    assert!(
        worst < 500,
        "the second edge froze {when}: video {worst} ms old"
    );
}

/// The edges as `status --json` lists them: (url, phase).
fn edge_phases(agent: &Agent) -> Vec<(String, String)> {
    let status = agent.status_json();
    status["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let text = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
            (text("url"), text("phase"))
        })
        .collect()
}

/// Waits until edge `n` shows `phase` in `status`.
fn wait_phase(agent: &Agent, n: usize, phase: &str) {
    wait_for(
        Duration::from_secs(10),
        &format!("edge {n} {phase}"),
        || {
            let phases = edge_phases(agent);
            (phases.get(n).map(|(_, p)| p.as_str()) == Some(phase)).then_some(())
        },
    );
}

/// Runs `test` inside a network namespace of its own with a LAN.
fn in_lan(test: impl FnOnce()) {
    let _cores = common::shared();
    let netns = Netns::with_lan();
    netns.run(test);
}

#[test]
fn each_edge_gets_the_broadcast_and_one_that_restarts_disturbs_nothing_else() {
    in_lan(|| {
        let origin = Janus::start();
        let mut first = Janus::start();
        let second = Janus::start();
        let relays = relay(&first, ports(3)) + &relay(&second, ports(3));
        let mut agent = Agent::start(&config(&origin, "webrtc", &relays));
        wait_fed(
            &first,
            Duration::from_secs(20),
            "the broadcast at the first edge",
        );
        wait_fed(
            &second,
            Duration::from_secs(5),
            "the broadcast at the second edge",
        );
        wait_phase(&agent, 0, "live");
        wait_phase(&agent, 1, "live");
        let text = agent.status_text();
        assert!(
            text.contains(&format!("edge {}: live", first.url())),
            "{text}"
        );

        // The first edge dies: the second keeps receiving without a gap.
        // Settled first: the uplink's first seconds have a gap of their own
        // (at the origin's mountpoint as much as at the edges).
        let mut calm = 0;
        wait_for(Duration::from_secs(10), "a steady second edge", || {
            let steady = edge_video_age(&second).is_some_and(|age| age < 200);
            calm = if steady { calm + 1 } else { 0 };
            std::thread::sleep(Duration::from_millis(100));
            (calm >= 10).then_some(())
        });
        first.kill();
        assert_steady(&second, Duration::from_secs(4), "during the first's fault");
        wait_phase(&agent, 0, "unreachable");

        // Back: its mountpoint and the forward into it within 2 s of it answering.
        first.restart();
        let back = wait_fed(&first, Duration::from_secs(10), "the first edge fed again");
        println!(
            "first edge fed again {} ms after it answered",
            back.as_millis()
        );
        assert!(back < Duration::from_secs(2), "{} ms", back.as_millis());
        // Its forward made again disturbs the other edge no more.
        assert_steady(&second, Duration::from_secs(2), "as the first is fed again");

        // A clean stop leaves nothing on the edges.
        assert!(agent.stop(Duration::from_secs(10)).success());
        for edge in [&first, &second] {
            assert!(edge.probe().mountpoint(ROOM, SECRET).is_none());
        }
    });
}

#[test]
fn an_edge_holding_someone_elses_mountpoint_is_a_conflict_for_that_edge_only() {
    in_lan(|| {
        let origin = Janus::start();
        let fine = Janus::start();
        let taken = Janus::start();
        let theirs = taken.probe().streaming(json!({
            "request": "create", "type": "rtp", "id": ROOM, "secret": "theirs",
            "media": [{ "type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus" }]
        }));
        assert_eq!(theirs["streaming"], "created", "{theirs}");
        let relays = relay(&fine, ports(3)) + &relay(&taken, ports(3));
        let agent = Agent::start(&config(&origin, "webrtc", &relays));
        wait_fed(
            &fine,
            Duration::from_secs(20),
            "the broadcast at the free edge",
        );
        wait_phase(&agent, 1, "conflict");
        wait_for(Duration::from_secs(5), "the origin live", || {
            (agent.status_json()["phase"] == "live").then_some(())
        });
        // Theirs, untouched.
        let edit = taken.probe().streaming(json!({
            "request": "edit", "id": ROOM, "secret": "theirs", "new_description": "still theirs"
        }));
        assert_eq!(edit["streaming"], "edited", "{edit}");
    });
}

#[test]
fn over_plain_rtp_the_edges_are_said_to_need_webrtc() {
    let _cores = common::shared();
    let origin = Janus::start();
    let edge = Janus::start();
    let agent = Agent::start(&config(&origin, "rtp", &relay(&edge, ports(3))));
    wait_phase(&agent, 0, "needs_webrtc");
    assert!(edge.probe().mountpoint(ROOM, SECRET).is_none());
    let text = agent.status_text();
    assert!(text.contains("edges need the WebRTC uplink"), "{text}");
    // Said as a problem, with what to do.
    assert!(
        text.contains(&format!(
            "problem: edge {} is not fed: the uplink is plain RTP",
            edge.url()
        )),
        "{text}"
    );
    assert!(text.contains("set stream.transport = \"webrtc\""), "{text}");
}
