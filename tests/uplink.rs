//! The WebRTC uplink against a real Janus: the agent publishes its test
//! camera and microphone with webrtcbin into a VideoRoom of its own, which
//! forwards them into the mountpoint; the reconciler puts it back after
//! each fault (Janus killed, the mountpoint destroyed, the PeerConnection
//! cut) with exactly one publisher and one forwarder per medium, and falls
//! back to plain RTP (or refuses, when told to use WebRTC) on a Janus
//! without the VideoRoom plugin.
//!
//! Janus and the agent share a private network namespace with a veth pair
//! (`Netns::with_lan`): WebRTC needs addresses other than loopback. Each
//! test runs whole inside it.

mod common;

use std::time::{Duration, Instant};

use common::janus::{Janus, JanusConfig};
use common::netns::Netns;
use common::{head_over, ports, small_video, wait_for, Agent};

const ROOM: u64 = 7331;
const SECRET: &str = "uplink-secret";

/// The agent on the test pattern and tone, publishing over `transport`.
fn config(janus: &Janus, base: u16, transport: &str) -> String {
    let head = head_over(&janus.url(), ROOM, SECRET, base, transport);
    format!(
        "{head}{}\n[microphone]\ndevice = \"test\"\n[speaker]\nenabled = false\n",
        small_video("test")
    )
}

/// Janus holds what the uplink needs, once each: one publisher with media
/// up, a video and an audio forwarder into the mountpoint's ports, and the
/// mountpoint receives video (last packet under 500 ms ago).
fn uplink_whole(janus: &Janus, base: u16) -> Option<()> {
    let probe = janus.probe();
    let publishers = probe.publishers(ROOM);
    let [publisher] = publishers.as_slice() else {
        return None;
    };
    let mut forwarders = probe.uplink_forwarders(ROOM, SECRET);
    forwarders.sort();
    let wanted = [
        (*publisher, "audio".to_owned(), u64::from(base + 1)),
        (*publisher, "video".to_owned(), u64::from(base)),
    ];
    if forwarders != wanted {
        return None;
    }
    let age = probe.media_age(ROOM, SECRET, "video")?;
    (age < 500).then_some(())
}

/// Waits for [`uplink_whole`]; how long it took.
fn wait_whole(janus: &Janus, base: u16, within: Duration, what: &str) -> Duration {
    let start = Instant::now();
    wait_for(within, what, || uplink_whole(janus, base));
    start.elapsed()
}

/// Runs `test` inside a network namespace of its own with a LAN.
fn in_lan(test: impl FnOnce(&Netns)) {
    let _cores = common::shared();
    let netns = Netns::with_lan();
    netns.run(|| test(&netns));
}

#[test]
fn webrtc_publishes_into_the_video_room_and_forwards_into_the_mountpoint() {
    in_lan(|_| {
        let janus = Janus::start();
        let base = ports(3);
        let agent = Agent::start(&config(&janus, base, "webrtc"));
        wait_whole(&janus, base, Duration::from_secs(15), "the WebRTC uplink");
        // The PeerConnection's figures arrive with the pipeline's next checks.
        let status = wait_for(Duration::from_secs(3), "the peer's figures", || {
            let status = agent.status_json();
            let peer = status["pipelines"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == "uplink")
                .map(|p| p["uplink"].clone())?;
            let sent = peer["packets_sent"].as_u64().unwrap_or_default();
            (peer["connected"] == true && sent > 0).then_some(status)
        });
        let uplink = &status["room"]["uplink"];
        assert_eq!(uplink["kind"], "webrtc", "{status}");
        assert_eq!(uplink["publisher"], "connected", "{status}");
        assert!(
            agent.status_text().contains("uplink: webrtc"),
            "{}",
            agent.status_text()
        );

        // Closing leaves nothing of the uplink on Janus.
        let (closed, _, err) = agent.control(&["close"]);
        assert!(closed.success(), "{err}");
        wait_for(Duration::from_secs(5), "the video room gone", || {
            let probe = janus.probe();
            (!probe.video_room_exists(ROOM) && probe.nothing_left(ROOM, SECRET)).then_some(())
        });
    });
}

#[test]
fn the_uplink_comes_back_after_each_fault_with_one_publisher_and_its_forwarders() {
    in_lan(|netns| {
        let mut janus = Janus::start();
        let base = ports(3);
        let _agent = Agent::start(&config(&janus, base, "webrtc"));
        wait_whole(&janus, base, Duration::from_secs(15), "the WebRTC uplink");

        // Janus killed and back: within 2 s of it answering.
        janus.kill();
        std::thread::sleep(Duration::from_secs(1));
        janus.restart();
        let took = wait_whole(
            &janus,
            base,
            Duration::from_secs(2),
            "the uplink after Janus's restart",
        );
        eprintln!("after Janus's restart: {took:?}");

        // The mountpoint destroyed by someone with the secret.
        let destroyed = janus.probe().streaming(serde_json::json!({
            "request": "destroy", "id": ROOM, "secret": SECRET
        }));
        assert_eq!(destroyed["streaming"], "destroyed", "{destroyed}");
        let took = wait_whole(
            &janus,
            base,
            Duration::from_secs(3),
            "the uplink into a new mountpoint",
        );
        eprintln!("after the mountpoint was destroyed: {took:?}");

        // The PeerConnection cut for 10 s.
        netns.cut_lan_udp(true);
        std::thread::sleep(Duration::from_secs(10));
        netns.cut_lan_udp(false);
        let took = wait_whole(
            &janus,
            base,
            Duration::from_secs(12),
            "the uplink after the cut",
        );
        eprintln!("after the cut: {took:?}");
        // And it stays whole: one publisher, its two forwarders.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            uplink_whole(&janus, base),
            Some(()),
            "the uplink settles whole"
        );
    });
}

#[test]
fn without_the_video_room_plugin_auto_falls_back_and_webrtc_refuses() {
    in_lan(|_| {
        let janus = Janus::start_with(JanusConfig {
            without_videoroom: true,
            ..JanusConfig::default()
        });
        let base = ports(3);
        let auto = Agent::start(&config(&janus, base, "auto"));
        wait_for(Duration::from_secs(15), "video over plain RTP", || {
            let age = janus.probe().media_age(ROOM, SECRET, "video")?;
            (age < 500).then_some(())
        });
        let status = auto.status_json();
        assert_eq!(status["room"]["uplink"]["kind"], "rtp", "{status}");
        let text = auto.status_text();
        assert!(
            text.contains("rtp (stream.transport = \"auto\": Janus has no VideoRoom plugin"),
            "{text}"
        );
        assert_eq!(
            auto.warnings("uplink: plain RTP").len(),
            1,
            "{}",
            auto.log()
        );
        drop(auto);

        let base = ports(3);
        let webrtc = Agent::start(&config(&janus, base, "webrtc"));
        let log = webrtc.wait_log(Duration::from_secs(10), "stream.transport = \"webrtc\"");
        assert!(log.contains("Janus has no VideoRoom plugin"), "{log}");
        let status = webrtc.status_json();
        assert_ne!(status["phase"], "live", "{status}");
    });
}

#[test]
fn a_restarted_agent_takes_the_publishing_place_of_its_killed_run() {
    in_lan(|_| {
        let janus = Janus::start();
        let base = ports(3);
        let with_pin = config(&janus, base, "webrtc").replacen(
            "check_interval_ms = 500\n",
            "check_interval_ms = 500\npin = \"2580\"\n",
            1,
        );
        let mut first = Agent::start(&with_pin);
        wait_whole(
            &janus,
            base,
            Duration::from_secs(15),
            "the first run's uplink",
        );
        let killed = janus.probe().publishers(ROOM);
        // Killed: its session, and its publisher, stay on Janus until they time out.
        first.signal("KILL");
        first.wait(Duration::from_secs(5));
        let start = Instant::now();
        // With a PIN, the room the killed run left is kept (its listing
        // edited), and the publishing place taken back; without one it
        // would be made again (Janus cannot remove a VideoRoom's PIN).
        let second = Agent::start(&with_pin);
        wait_for(
            Duration::from_secs(10),
            "the second run's publisher alone",
            || {
                let now = janus.probe().publishers(ROOM);
                (now.len() == 1 && now != killed).then_some(())
            },
        );
        wait_whole(
            &janus,
            base,
            Duration::from_secs(5),
            "the second run's uplink",
        );
        eprintln!("the second run published after {:?}", start.elapsed());
        assert!(
            second
                .log()
                .contains("held the room's one publishing place"),
            "{}",
            second.log()
        );
    });
}

/// A keyframe request that reaches the VideoRoom (as a viewer's reaches it
/// through the mountpoint's forwarder) makes the agent's encoder send one.
#[test]
fn a_keyframe_request_through_the_video_room_reaches_the_encoder() {
    in_lan(|_| {
        let janus = Janus::start();
        let base = ports(3);
        let agent = Agent::start(&config(&janus, base, "webrtc"));
        wait_whole(&janus, base, Duration::from_secs(15), "the WebRTC uplink");
        let probe = janus.probe();
        let publisher = probe.publishers(ROOM)[0];
        // A forwarder of the test's own, with an RTCP port, as the mountpoint has.
        let media = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rtcp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = |s: &std::net::UdpSocket| s.local_addr().expect("addr").port();
        let made = probe.videoroom(serde_json::json!({
            "request": "rtp_forward", "room": ROOM, "publisher_id": publisher,
            "secret": SECRET, "host": "127.0.0.1",
            "streams": [{ "mid": "video0", "port": port(&media), "rtcp_port": port(&rtcp) }]
        }));
        let local_rtcp = made["forwarders"][0]["local_rtcp_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("no local RTCP port: {made}"));
        let keyframes = |status: &serde_json::Value| {
            let video = status["pipelines"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == "video")?;
            video["keyframes"]["sent"].as_u64()
        };
        let before = keyframes(&agent.status_json()).unwrap_or_default();
        // PLI (RTCP payload-specific feedback, format 1).
        let mut pli = vec![0x81, 206, 0, 2];
        pli.extend(1u32.to_be_bytes());
        pli.extend(0u32.to_be_bytes());
        rtcp.send_to(&pli, ("127.0.0.1", local_rtcp))
            .expect("send PLI");
        wait_for(Duration::from_secs(2), "a keyframe on request", || {
            let status = agent.status_json();
            let uplink = status["pipelines"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == "uplink")?["uplink"]
                .clone();
            let asked = uplink["keyframe_requests"].as_u64()? > 0;
            (asked && keyframes(&status)? > before).then_some(())
        });
    });
}

/// With `admin_key` and `lock_rtp_forward` on the plugins (the VideoRoom
/// too), the agent makes its video room and forwarders with the key.
#[test]
fn with_admin_keys_on_janus_the_uplink_is_made_with_them() {
    in_lan(|_| {
        let key = "uplink-admin-key";
        let janus = Janus::start_with(JanusConfig {
            admin_key: Some(key.into()),
            ..JanusConfig::default()
        });
        let base = ports(3);
        let text = config(&janus, base, "webrtc").replace(
            &format!("secret = \"{SECRET}\"\n"),
            &format!("secret = \"{SECRET}\"\nadmin_key = \"{key}\"\n"),
        );
        let _agent = Agent::start(&text);
        wait_whole(
            &janus,
            base,
            Duration::from_secs(15),
            "the uplink with admin keys",
        );
    });
}

/// With `auto`, a WebRTC uplink that never connects (UDP to the LAN's
/// addresses dropped from the start; plain RTP to the mountpoint on
/// loopback still passes) gives way to plain RTP after two tries.
#[test]
fn auto_falls_back_to_rtp_when_the_peer_connection_never_comes_up() {
    in_lan(|netns| {
        netns.cut_lan_udp(true);
        let janus = Janus::start();
        let base = ports(3);
        let agent = Agent::start(&config(&janus, base, "auto"));
        let start = Instant::now();
        let fallback = "rtp (stream.transport = \"auto\": the WebRTC uplink never connected";
        wait_for(Duration::from_secs(45), "the fallback to plain RTP", || {
            agent.status_text().contains(fallback).then_some(())
        });
        eprintln!("plain RTP chosen after {:?}", start.elapsed());
        // The mountpoint is older than that: a young age is packets arriving.
        wait_for(Duration::from_secs(5), "video over plain RTP", || {
            let age = janus.probe().media_age(ROOM, SECRET, "video")?;
            (age < 500).then_some(())
        });
        assert!(
            janus.probe().publishers(ROOM).is_empty(),
            "a publisher left behind"
        );
    });
}

/// With 5 % of the WebRTC uplink's datagrams lost, Janus asks for the lost
/// packets (NACK) and the agent sends each of them twice.
#[test]
fn under_loss_each_lost_packet_is_asked_for_and_sent_twice() {
    in_lan(|netns| {
        let janus = Janus::start();
        let base = ports(3);
        let agent = Agent::start(&config(&janus, base, "webrtc"));
        wait_whole(&janus, base, Duration::from_secs(15), "the WebRTC uplink");
        netns.lose_lan_udp(Some(5));
        let peer = wait_for(Duration::from_secs(20), "NACKs answered", || {
            let status = agent.status_json();
            let peer = status["pipelines"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == "uplink")?["uplink"]
                .clone();
            (peer["nacks_received"].as_u64()? >= 20).then_some(peer)
        });
        netns.lose_lan_udp(None);
        let nacks = peer["nacks_received"].as_u64().unwrap_or_default();
        let sent = peer["retransmitted"].as_u64().unwrap_or_default();
        eprintln!("{nacks} NACKs, {sent} retransmissions");
        // Twice each, less those asked for just now (the second is 10 ms
        // later) or already out of the buffer.
        assert!(
            sent * 10 >= nacks * 17,
            "{nacks} NACKs, {sent} retransmissions: {peer}"
        );
        assert!(
            sent <= nacks * 2,
            "{nacks} NACKs, {sent} retransmissions: {peer}"
        );
    });
}
