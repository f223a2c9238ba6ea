//! Keyframes on request, asked for as Janus asks: the test stands where the
//! mountpoint would be (its video RTP and RTCP ports on loopback; nothing
//! answers at `janus.url`, and the agent streams regardless), waits for the
//! agent's sender reports, and sends a PLI back to where they come from, as
//! Janus does when a viewer starts watching or loses packets. And a real
//! Janus: a mountpoint an earlier version made, without the RTCP port, is
//! replaced by one with it.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::camera::{Machine, StandIns};
use common::janus::Janus;
use common::{no_media_config, ports, wait_for, Agent, Extra};

/// The agent with the test pattern (x264enc in-process, a keyframe every
/// 2 s), video only, sending to `base` (RTP) and `base + 2` (RTCP).
fn config(base: u16, closed: u16) -> String {
    config_with(base, closed, "test")
}

/// [`config`] with the video `source`.
fn config_with(base: u16, closed: u16, source: &str) -> String {
    format!(
        "[janus]\nurl = \"http://127.0.0.1:{closed}/janus\"\n\
         [room]\nid = 6262\nsecret = \"kf-secret\"\n\
         [stream]\ntransport = \"rtp\"\nhost = \"127.0.0.1\"\nvideo_port = {base}\naudio_port = {}\nvideo_rtcp_port = {}\n\
         [speaker]\nenabled = false\n[microphone]\nenabled = false\n{}",
        base + 1,
        base + 2,
        common::small_video(source),
    )
}

/// Whether an RTP packet of H.264 starts an IDR picture (single NAL or the
/// first fragment of an FU-A), and its SSRC.
fn idr_start(packet: &[u8]) -> Option<(bool, u32)> {
    let ssrc = u32::from_be_bytes(packet.get(8..12)?.try_into().ok()?);
    let payload = packet.get(12..)?;
    let idr = match payload.first()? & 0x1F {
        5 => true,
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1F == 5),
        _ => false,
    };
    Some((idr, ssrc))
}

/// Reads RTP until the start of an IDR picture, within `timeout`.
fn next_idr(rtp: &UdpSocket, timeout: Duration) -> Option<(Instant, u32)> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let Ok(n) = rtp.recv(&mut buf) else { continue };
        if let Some((true, ssrc)) = idr_start(&buf[..n]) {
            return Some((Instant::now(), ssrc));
        }
    }
    None
}

/// The first RTCP sender report, and where it came from.
fn sender_report(rtcp: &UdpSocket) -> Option<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Ok((n, from)) = rtcp.recv_from(&mut buf) {
            if n >= 8 && buf[1] == 200 {
                return Some(from);
            }
        }
    }
    None
}

fn video_counter(agent: &Agent, key: &str) -> u64 {
    let status = agent.status_json();
    status["pipelines"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "video"))
        .and_then(|v| v["keyframes"][key].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_keyframe_request_brings_a_keyframe_at_once() {
    keyframe_on_request("test", &[]);
}

/// The Pi camera in-process on a Pi 4: `v4l2h264enc` of GStreamer 1.22.0
/// ignores the force-key-unit event; its `force_key_frame` control works.
#[test]
fn libcamerasrc_on_a_pi_4_makes_a_keyframe_when_asked() {
    let standins = StandIns::install(Machine::Pi4, "1.6.0");
    let agent = keyframe_on_request("libcamerasrc", &standins.env_with_elements());
    assert!(
        agent.log().contains("encoded by v4l2h264enc"),
        "{}",
        agent.log()
    );
}

/// ... and on a Pi 5, into x264enc.
#[test]
fn libcamerasrc_on_a_pi_5_makes_a_keyframe_when_asked() {
    let standins = StandIns::install(Machine::Pi5, "1.6.0");
    let agent = keyframe_on_request("libcamerasrc", &standins.env_with_elements());
    assert!(
        agent.log().contains("encoded by x264enc"),
        "{}",
        agent.log()
    );
}

/// The agent on video `source` (and `env`) makes a keyframe at once when
/// a PLI comes where Janus would send it from, and counts both.
fn keyframe_on_request(source: &str, env: &[(&'static str, String)]) -> Agent {
    let base = ports(3);
    let rtp = UdpSocket::bind(("127.0.0.1", base)).expect("RTP port");
    let rtcp = UdpSocket::bind(("127.0.0.1", base + 2)).expect("RTCP port");
    for socket in [&rtp, &rtcp] {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
    }
    let agent = Agent::start_with(
        &config_with(base, ports(1), source),
        &common::camera::env_refs(env, &[]),
    );
    let from = sender_report(&rtcp).expect("a sender report within 15 s");
    // Past the start (whose first frames may be keyframes one after another).
    let _ = next_idr(&rtp, Duration::from_secs(1));
    let (natural, ssrc) = next_idr(&rtp, Duration::from_secs(3)).expect("a keyframe");
    // Ask 200 ms after a keyframe of its own: the next one it makes by
    // itself is 2 s after that one.
    let early = next_idr(
        &rtp,
        Duration::from_millis(200).saturating_sub(natural.elapsed()),
    );
    assert!(early.is_none(), "two keyframes within 200 ms, unasked");
    let before = video_counter(&agent, "sent");
    let mut pli = vec![0x81, 206, 0, 2, 0, 0, 0, 1];
    pli.extend(ssrc.to_be_bytes());
    rtcp.send_to(&pli, from).expect("PLI sent");
    let asked = Instant::now();
    let (answered, _) = next_idr(&rtp, Duration::from_secs(3)).expect("a keyframe after the PLI");
    let took = answered - asked;
    println!("keyframe {} ms after the request", took.as_millis());
    assert!(
        took < Duration::from_millis(600),
        "the keyframe came {} ms after the request (its own interval is 2 s)",
        took.as_millis()
    );
    // Both counted in `status --json`.
    wait_for(Duration::from_secs(2), "the counters", || {
        (video_counter(&agent, "requests") == 1 && video_counter(&agent, "sent") > before)
            .then_some(())
    });
    agent
}

/// The value of `key` (a port) in the `[stream]` lines of `config`.
fn port_in(config: &str, key: &str) -> u64 {
    config
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(" = ")?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in the config"))
}

#[test]
fn a_mountpoint_without_the_rtcp_port_is_replaced_by_one_with_it() {
    let janus = Janus::start();
    let probe = janus.probe();
    let secret = "kf-secret";
    let config = no_media_config(&janus.url(), 1800, secret, ports(1), Extra::default());
    let (video, audio) = (
        port_in(&config, "video_port"),
        port_in(&config, "audio_port"),
    );
    let rtcp = port_in(&config, "video_rtcp_port");
    // As an agent before stream.video_rtcp_port made it: its ports, its
    // secret, no RTCP port.
    let created = probe.streaming(serde_json::json!({
        "request": "create", "type": "rtp", "id": 1800, "secret": secret,
        "media": [
            { "type": "video", "mid": "v", "port": video, "pt": 96, "codec": "h264" },
            { "type": "audio", "mid": "a", "port": audio, "pt": 111, "codec": "opus" }
        ]
    }));
    assert_eq!(created["streaming"], "created", "{created}");
    let agent = Agent::start(&config);
    wait_for(
        Duration::from_secs(10),
        "the mountpoint with its RTCP port",
        || {
            probe
                .mountpoint(1800, secret)
                .and_then(|m| m["media"][0]["rtcpport"].as_u64())
                .filter(|p| *p == rtcp)
        },
    );
    assert!(
        agent.log().contains("another video RTCP port"),
        "{}",
        agent.log()
    );
}

/// A keyframe request from another address than Janus's (here 127.0.0.2;
/// Janus's is the agent's `stream.host`, 127.0.0.1) is dropped: a flood of
/// them would otherwise force a keyframe on almost every frame.
#[test]
fn a_keyframe_request_from_anyone_but_janus_is_ignored() {
    let base = ports(3);
    let rtp = UdpSocket::bind(("127.0.0.1", base)).expect("RTP port");
    let rtcp = UdpSocket::bind(("127.0.0.1", base + 2)).expect("RTCP port");
    let stranger = UdpSocket::bind(("127.0.0.2", 0)).expect("a socket on 127.0.0.2");
    for socket in [&rtp, &rtcp] {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
    }
    let agent = Agent::start(&config(base, ports(1)));
    let to = sender_report(&rtcp).expect("a sender report within 15 s");
    let _ = next_idr(&rtp, Duration::from_secs(1));
    let (_, ssrc) = next_idr(&rtp, Duration::from_secs(3)).expect("a keyframe");
    let mut pli = vec![0x81, 206, 0, 2, 0, 0, 0, 1];
    pli.extend(ssrc.to_be_bytes());
    for _ in 0..5 {
        stranger.send_to(&pli, to).expect("PLI sent");
    }
    // The next keyframe is the encoder's own, 2 s after the last.
    assert!(
        next_idr(&rtp, Duration::from_millis(600)).is_none(),
        "a stranger's request brought a keyframe"
    );
    assert_eq!(video_counter(&agent, "requests"), 0);
    assert_eq!(
        agent.warnings("not taking RTCP from another sender").len(),
        1
    );
}
