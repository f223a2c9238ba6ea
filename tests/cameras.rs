//! The Pi's camera programs as they really are, through stand-ins that follow
//! upstream's rules (`tests/standins/camera.py`): first the stand-ins
//! themselves (so that a wrong flag, a Pi 5 without `--libav-format` or a
//! missing `--flush` does fail), then the agent driving them on a Pi 4 and a
//! Pi 5 into a real Janus, whose mountpoint advertises the level the camera
//! writes.

mod common;

use std::io::Read;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::camera::{env_refs, Machine, StandIns};
use common::janus::{Janus, Probe};
use common::{ports, wait_for, Agent};

const SECRET: &str = "camera-secret";

fn run(standins: &StandIns, program: &str, args: &[&str]) -> Output {
    standins
        .command(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the stand-in")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

#[test]
fn standins_reject_what_upstream_rejects() {
    let pi4 = StandIns::install(Machine::Pi4, "1.5.2");
    let out = run(&pi4, "rpicam-vid", &["-t", "0", "--nonsense", "-o", "-"]);
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(
        stderr(&out),
        "ERROR: *** unrecognised option '--nonsense' ***"
    );
    // --low-latency came with rpicam-apps 1.6.
    let out = run(&pi4, "rpicam-vid", &["--low-latency", "-o", "-"]);
    assert_eq!(
        stderr(&out),
        "ERROR: *** unrecognised option '--low-latency' ***"
    );
    // The hardware encoder's levels and bitrates.
    let out = run(&pi4, "rpicam-vid", &["--level", "5", "-o", "-"]);
    assert_eq!(stderr(&out), "ERROR: *** no such level 5 ***");
    let out = run(&pi4, "rpicam-vid", &["--bitrate", "30000000", "-o", "-"]);
    assert_eq!(stderr(&out), "ERROR: *** failed to set bitrate ***");
    let out = run(&pi4, "raspivid", &["-t", "0", "--nonsense", "-o", "-"]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(stderr(&out), "Invalid command line option (--nonsense)");

    // A Pi 5 encodes with libav, which cannot pick a format for `-o -`.
    let pi5 = StandIns::install(Machine::Pi5, "1.6.0");
    let out = run(
        &pi5,
        "rpicam-vid",
        &["-t", "0", "--codec", "h264", "-o", "-"],
    );
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(
        stderr(&out),
        "ERROR: *** libav: cannot allocate output context, try setting with --libav-format ***"
    );
    // Nor time stamps (--save-pts) unless it writes an elementary stream to a file.
    let out = run(
        &pi5,
        "rpicam-vid",
        &[
            "-t",
            "0",
            "--libav-format",
            "h264",
            "--save-pts",
            "/dev/null",
            "-o",
            "-",
        ],
    );
    assert_eq!(
        stderr(&out),
        "ERROR: *** libav: Incompatible options selected. ***"
    );
    let out = run(&pi5, "rpicam-vid", &["--version"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("rpicam-apps build: v1.6.0 "),
        "{out:?}"
    );
}

/// What reading a stand-in's stdout pipe returns: the byte count at the end
/// of each read, and the byte count at the end of each frame it wrote.
fn read_boundaries(standins: &StandIns, program: &str, args: &[&str]) -> (Vec<usize>, Vec<usize>) {
    let frames = standins.path("frames.log");
    let _ = std::fs::remove_file(&frames);
    let mut child = standins
        .command(program)
        .args(args)
        .env("STANDIN_FRAME_LOG", &frames)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the stand-in");
    let mut stdout = child.stdout.take().expect("stdout");
    let (mut reads, mut total, mut buf) = (Vec::new(), 0, vec![0u8; 1 << 20]);
    while let Ok(n) = stdout.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
        reads.push(total);
    }
    assert!(child.wait().expect("exit").success());
    let mut ends = Vec::new();
    let mut sum = 0;
    for line in std::fs::read_to_string(&frames).expect("frame log").lines() {
        sum += line
            .split(' ')
            .nth(2)
            .and_then(|n| n.parse::<usize>().ok())
            .expect("size");
        ends.push(sum);
    }
    (reads, ends)
}

/// rpicam-vid flags for `ms` of 320x240 at 15 fps.
fn small_stream(ms: &'static str) -> [&'static str; 8] {
    [
        "-t",
        ms,
        "--width",
        "320",
        "--height",
        "240",
        "--framerate",
        "15",
    ]
}

#[test]
fn standins_buffer_stdout_unless_flushed() {
    let pi4 = StandIns::install(Machine::Pi4, "1.6.0");
    // 320x240 at 300 kbit/s: frames of ~2.5 kB, smaller than the 4 kB buffer.
    let base = [
        &small_stream("2000")[..],
        &["--bitrate", "300000", "--inline", "-o", "-"],
    ]
    .concat();
    let (reads, frames) = read_boundaries(&pi4, "rpicam-vid", &base);
    let (last, whole) = reads.split_last().expect("some output");
    assert!(
        whole.iter().all(|n| n % 4096 == 0),
        "unflushed reads: {reads:?}"
    );
    assert_eq!(Some(last), frames.last());
    // With --flush every frame leaves whole, when it is written.
    let (reads, frames) = read_boundaries(&pi4, "rpicam-vid", &[&base[..], &["--flush"]].concat());
    let at_frame_ends = reads.iter().filter(|n| frames.contains(n)).count();
    assert!(
        reads.len() >= 20 && at_frame_ends * 10 >= reads.len() * 9,
        "{reads:?} {frames:?}"
    );
    // raspivid likewise, with -fl.
    let raspivid = [
        "-t", "2000", "-w", "320", "-h", "240", "-fps", "15", "-b", "300000", "-ih", "-o", "-",
    ];
    let (reads, _) = read_boundaries(&pi4, "raspivid", &raspivid);
    assert!(
        reads[..reads.len() - 1].iter().all(|n| n % 4096 == 0),
        "{reads:?}"
    );
    let (reads, frames) = read_boundaries(&pi4, "raspivid", &[&raspivid[..], &["-fl"]].concat());
    assert!(reads.iter().filter(|n| frames.contains(n)).count() * 10 >= reads.len() * 9);
}

/// The `level_idc` of the first SPS in an H.264 byte stream.
fn sps_level(stream: &[u8]) -> Option<u8> {
    let at = stream.windows(4).position(|w| w == [0, 0, 1, 0x67])?;
    stream.get(at + 6).copied()
}

#[test]
fn standins_write_the_level_the_encoder_was_given() {
    let pi4 = StandIns::install(Machine::Pi4, "1.6.0");
    let small = [&small_stream("1000")[..], &["-o", "-"]].concat();
    // The hardware's default is level 4, whatever the size.
    let out = run(&pi4, "rpicam-vid", &small);
    assert_eq!(sps_level(&out.stdout), Some(40));
    let out = run(
        &pi4,
        "rpicam-vid",
        &[&small[..], &["--level", "4.2"]].concat(),
    );
    assert_eq!(sps_level(&out.stdout), Some(42));
    // libx264 on a Pi 5 picks the lowest level that fits unless told.
    let pi5 = StandIns::install(Machine::Pi5, "1.6.0");
    let libav = [&small[..], &["--libav-format", "h264"]].concat();
    let out = run(&pi5, "rpicam-vid", &libav);
    assert!(
        sps_level(&out.stdout).is_some_and(|l| l < 40),
        "{:?}",
        sps_level(&out.stdout)
    );
    let out = run(
        &pi5,
        "rpicam-vid",
        &[&libav[..], &["--level", "4"]].concat(),
    );
    assert_eq!(sps_level(&out.stdout), Some(40));
}

/// Video only, from `source`, to a mountpoint `room` on ports `base` to `base + 2`.
fn config(janus: &Janus, room: u64, source: &str, base: u16) -> String {
    let sections = common::Extra {
        stream: "stall_timeout_ms = 2000",
        ..common::Extra::default()
    };
    format!(
        r#"{head}
[speaker]
enabled = false
[microphone]
enabled = false
{video}"#,
        head = common::config_head(&janus.url(), room, SECRET, base, sections),
        video = common::small_video(source),
    )
}

/// Starts an agent on `source` with the stand-ins and waits until Janus
/// receives its video.
fn stream_through(janus: &Janus, standins: &StandIns, room: u64, source: &str) -> Agent {
    stream_on(janus, standins, room, source, ports(3))
}

/// [`stream_through`] with the mountpoint on ports `base` to `base + 2`.
fn stream_on(janus: &Janus, standins: &StandIns, room: u64, source: &str, base: u16) -> Agent {
    stream_with(
        janus,
        &standins.env(),
        room,
        &config(janus, room, source, base),
    )
}

/// Starts an agent on `config` in `env` and waits until Janus receives
/// the video of `room`.
fn stream_with(janus: &Janus, env: &[(&'static str, String)], room: u64, config: &str) -> Agent {
    let agent = Agent::start_with(config, &env_refs(env, &[]));
    let probe = janus.probe();
    let started = Instant::now();
    wait_for(Duration::from_secs(5), "the mountpoint", || {
        probe.mountpoint(room, SECRET)
    });
    // age_ms counts from creation while nothing arrived: judge after 2 s.
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(started.elapsed()));
    wait_for(Duration::from_secs(15), "video at Janus", || {
        probe
            .media_age(room, SECRET, "video")
            .filter(|age| *age < 500)
    });
    agent
}

/// The flags the stand-in was last started with.
fn last_args(standins: &StandIns) -> Vec<String> {
    let runs = standins.runs();
    let run = runs.last().expect("the camera program ran");
    run["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// The level in the mountpoint's profile-level-id, as Janus offers viewers.
fn advertised_level(probe: &Probe, room: u64) -> u64 {
    let info = probe.mountpoint(room, SECRET).expect("the mountpoint");
    let video = info["media"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["type"] == "video"))
        .cloned()
        .expect("a video medium");
    let fmtp = video["fmtp"].as_str().unwrap_or_default().to_owned();
    let id = fmtp
        .split(';')
        .find_map(|p| p.strip_prefix("profile-level-id="))
        .unwrap_or_else(|| panic!("no profile-level-id in {video}"));
    u64::from_str_radix(&id[4..], 16).expect("hex level")
}

#[test]
fn a_pi_4_streams_through_rpicam_vid() {
    let janus = Janus::start();
    let probe = janus.probe();
    // A mountpoint left by an earlier version, offering level 3.1: the
    // agent must replace it, not adopt it.
    let base = ports(3);
    let created = probe.streaming(serde_json::json!({
        "request": "create", "type": "rtp", "id": 1700, "secret": SECRET,
        "media": [
            { "type": "video", "mid": "v", "port": base, "pt": 96, "codec": "h264",
              "fmtp": "profile-level-id=42e01f;packetization-mode=1" },
            { "type": "audio", "mid": "a", "port": base + 1, "pt": 111, "codec": "opus" }
        ]
    }));
    assert_eq!(created["streaming"], "created", "{created}");
    assert_eq!(advertised_level(&probe, 1700), 0x1f);
    let pi4 = StandIns::install(Machine::Pi4, "1.6.0");
    let agent = stream_on(&janus, &pi4, 1700, "libcamera", base);
    assert!(
        agent.log().contains("another H.264 level"),
        "{}",
        agent.log()
    );
    let args = last_args(&pi4).join(" ");
    println!("rpicam-vid {args}");
    assert!(
        args.contains("--flush") && args.contains("--level 4"),
        "{args}"
    );
    assert!(!args.contains("--libav-format"), "{args}");
    let run = pi4.runs().pop().expect("a run");
    assert_eq!(run["encoder"], "hardware");
    // What Janus advertises is what the camera writes in its SPS.
    assert_eq!(
        run["level"].as_u64(),
        Some(advertised_level(&janus.probe(), 1700))
    );
}

#[test]
fn a_pi_5_streams_through_rpicam_vid_with_libav() {
    let janus = Janus::start();
    let pi5 = StandIns::install(Machine::Pi5, "1.6.0");
    let agent = stream_through(&janus, &pi5, 1710, "libcamera");
    let args = last_args(&pi5).join(" ");
    println!("rpicam-vid 1.6.0 on a Pi 5: {args}");
    assert!(
        args.contains("--libav-format h264") && args.contains("--low-latency"),
        "{args}"
    );
    let run = pi5.runs().pop().expect("a run");
    assert_eq!(run["encoder"], "libx264");
    assert_eq!(
        run["level"].as_u64(),
        Some(advertised_level(&janus.probe(), 1710))
    );
    drop(agent);

    // An older rpicam-vid has no --low-latency: asked, not guessed.
    let old = StandIns::install(Machine::Pi5, "1.5.2");
    let _agent = stream_through(&janus, &old, 1711, "libcamera");
    let args = last_args(&old).join(" ");
    println!("rpicam-vid 1.5.2 on a Pi 5: {args}");
    assert!(
        args.contains("--libav-format h264") && !args.contains("--low-latency"),
        "{args}"
    );
}

#[test]
fn raspivid_streams_flushed_at_level_4() {
    let janus = Janus::start();
    let pi4 = StandIns::install(Machine::Pi4, "1.6.0");
    let _agent = stream_through(&janus, &pi4, 1720, "raspivid");
    let args = last_args(&pi4).join(" ");
    println!("raspivid {args}");
    assert!(args.contains("-fl") && args.contains("-lev 4"), "{args}");
    let run = pi4.runs().pop().expect("a run");
    assert_eq!(
        run["level"].as_u64(),
        Some(advertised_level(&janus.probe(), 1720))
    );
}

#[test]
fn a_pi_4_is_not_asked_more_than_its_encoder_does() {
    let janus = Janus::start();
    let pi4 = StandIns::install(Machine::Pi4, "1.6.0");
    let env = pi4.env();
    let config = config(&janus, 1730, "libcamera", ports(3))
        .replace("bitrate_kbps = 300", "bitrate_kbps = 30000");
    let agent = Agent::start_with(&config, &env_refs(&env, &[]));
    let line = agent.wait_log(
        Duration::from_secs(5),
        "video.bitrate_kbps: 30000 is more than the Pi's hardware H.264 encoder takes (25000)",
    );
    println!("{line}");
    // Said before rpicam-vid would have failed with "failed to set bitrate".
    assert!(pi4.runs().is_empty(), "{:?}", pi4.runs());
}

/// The Pi camera in-process (`libcamerasrc`, its stand-in) on a Pi 4, into
/// the VideoCore's encoder (`v4l2h264enc`'s stand-in), and on a Pi 5, into
/// x264: each streams, at the level the mountpoint advertises.
#[test]
fn libcamerasrc_streams_on_a_pi_4_and_a_pi_5() {
    let janus = Janus::start();
    for (machine, room, encoder) in [
        (Machine::Pi4, 1740, "v4l2h264enc"),
        (Machine::Pi5, 1741, "x264enc"),
    ] {
        let standins = StandIns::install(machine, "1.6.0");
        let settings = config(&janus, room, "libcamerasrc", ports(3));
        let agent = stream_with(&janus, &standins.env_with_elements(), room, &settings);
        let log = agent.log();
        let line = log.lines().find(|l| l.contains("encoded by"));
        println!("{machine:?}: {line:?}");
        assert!(
            line.is_some_and(|l| l.ends_with(&format!("encoded by {encoder}"))),
            "{log}"
        );
        assert_eq!(advertised_level(&janus.probe(), room), 40);
    }
}

/// What libcamerasrc says when it cannot start, as one line in `status`:
/// no camera (found when it is acquired, before anything starts), and a
/// frame rate the camera's sensor cannot give at that size (a Camera
/// Module 3 gives 56 fps at 1080p; libcamerasrc's caps then say 56, which
/// the agent's refuse).
#[test]
fn libcamerasrc_says_what_it_cannot_do() {
    let janus = Janus::start();
    let standins = StandIns::install(Machine::Pi4, "1.6.0");
    let mut env = standins.env_with_elements();
    env.push(("STANDIN_NO_CAMERA", "1".into()));
    let no_camera = config(&janus, 1750, "libcamerasrc", ports(3));
    let agent = Agent::start_with(&no_camera, &env_refs(&env, &[]));
    let log = agent.wait_log(
        Duration::from_secs(15),
        "libcamerasrc: Could not find any supported camera on this system.",
    );
    assert!(log.contains("rpicam-hello --list-cameras"), "{log}");
    let status = agent.status_text();
    println!("{status}");
    assert!(
        status.contains("Could not find any supported camera"),
        "{status}"
    );
    drop(agent);

    let fast = config(&janus, 1751, "libcamerasrc", ports(3)).replace(
        "width = 320\nheight = 240\nframerate = 15",
        "width = 1920\nheight = 1080\nframerate = 60",
    );
    assert!(fast.contains("framerate = 60"), "{fast}");
    let agent = Agent::start_with(&fast, &env_refs(&standins.env_with_elements(), &[]));
    agent.wait_log(
        Duration::from_secs(15),
        "video.framerate: the camera cannot give 1920x1080 at 60 fps",
    );
}

/// The payload of an RTP packet (after its CSRCs and header extension).
fn rtp_payload(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    let mut at = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = packet.get(at + 2..at + 4)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    packet.get(at..)
}

/// The frame number the stand-in puts in an SEI at the start of each frame
/// (`STANDIN_FRAME_LOG`), if this RTP payload carries it (alone or in a STAP-A).
fn frame_number(payload: &[u8]) -> Option<u32> {
    const UUID: [u8; 16] = *b"ABCDEFGHIJKLMNOP";
    let sei = payload.windows(2).position(|w| w == [0x06, 0x05])?;
    let at = sei + payload[sei..].windows(16).position(|w| w == UUID)? + 16;
    let bytes = payload.get(at..at + 4)?;
    Some(bytes.iter().fold(0, |n, b| (n << 7) | u32::from(b & 0x7f)))
}

/// The bytes of slice NAL units (types 1 and 5) an RTP payload carries
/// (alone, in a STAP-A or as a fragment of an FU-A), as the stand-in counts
/// them: without start codes.
fn slice_bytes(payload: &[u8]) -> usize {
    let is_slice = |header: u8| matches!(header & 0x1f, 1 | 5);
    match payload.first().map(|b| b & 0x1f) {
        Some(24) => {
            let (mut at, mut sum) = (1, 0);
            while let Some(size) = payload.get(at..at + 2) {
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                sum += payload
                    .get(at + 2)
                    .filter(|h| is_slice(**h))
                    .map_or(0, |_| size);
                at += 2 + size;
            }
            sum
        }
        // Its header goes with the first fragment.
        Some(28) => match payload.get(1) {
            Some(&fu) if is_slice(fu) => payload.len() - 2 + usize::from(fu & 0x80 != 0),
            _ => 0,
        },
        Some(_) if is_slice(payload[0]) => payload.len(),
        _ => 0,
    }
}

/// A frame as it left the agent over RTP.
struct Sent {
    /// The stand-in's number for it, if it carried one.
    number: Option<u32>,
    /// When its last packet (RTP marker) arrived, CLOCK_MONOTONIC ns.
    at_ns: u64,
    /// The bytes of its slices, as [`slice_bytes`] counts them.
    slice_bytes: usize,
    /// A packet of it (or before it) did not arrive: the RTP sequence
    /// numbers skip.
    lossy: bool,
}

/// The frames that arrive on `socket`, from the first numbered one, until
/// `count` numbered ones have or `within` has passed.
fn receive_frames(socket: &std::net::UdpSocket, count: usize, within: Duration) -> Vec<Sent> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a timeout");
    let (mut frames, mut numbered, mut next_seq) = (Vec::new(), 0, None);
    let fresh = || Sent {
        number: None,
        at_ns: 0,
        slice_bytes: 0,
        lossy: false,
    };
    let mut current = fresh();
    let mut buf = [0u8; 2048];
    let end = Instant::now() + within;
    while numbered < count && Instant::now() < end {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let Some(payload) = rtp_payload(&buf[..n]) else {
            continue;
        };
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        current.lossy |= next_seq.is_some_and(|next| next != seq);
        next_seq = Some(seq.wrapping_add(1));
        current.number = frame_number(payload).or(current.number);
        current.slice_bytes += slice_bytes(payload);
        if buf[1] & 0x80 == 0 {
            continue;
        }
        current.at_ns = monotonic_ns();
        let frame = std::mem::replace(&mut current, fresh());
        if frame.number.is_some() || numbered > 0 {
            numbered += usize::from(frame.number.is_some());
            frames.push(frame);
        }
    }
    frames
}

/// What the stand-in's frame log (`STANDIN_FRAME_LOG`) says of each frame
/// by number: when it was written (CLOCK_MONOTONIC ns) and the bytes of its
/// slices.
fn frames_written(log: &str) -> std::collections::HashMap<u32, (u64, usize)> {
    std::fs::read_to_string(log)
        .expect("the frame log")
        .lines()
        .filter_map(|l| {
            let f: Vec<u64> = l.split(' ').filter_map(|f| f.parse().ok()).collect();
            let number = u32::try_from(*f.first()?).ok()?;
            Some((number, (*f.get(1)?, usize::try_from(*f.get(3)?).ok()?)))
        })
        .collect()
}

/// CLOCK_MONOTONIC in ns, the stand-in's clock for its frame log.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) },
        0
    );
    u64::try_from(t.tv_sec).expect("time") * 1_000_000_000 + u64::try_from(t.tv_nsec).expect("ns")
}

#[test]
fn a_pi_4_s_frames_leave_whole_as_soon_as_written() {
    // rpicam-vid announces each frame it wrote (--save-pts): the agent sends
    // it at once, whole, instead of when the next frame's start shows where
    // it ended (a frame interval later). Nothing listens at the Janus URL:
    // the agent sends anyway, to this socket in Janus's place.
    let pi4 = StandIns::install(Machine::Pi4, "1.6.0");
    let base = ports(3);
    let socket = std::net::UdpSocket::bind(("127.0.0.1", base)).expect("a UDP port");
    let janus_url = format!("http://127.0.0.1:{}/janus", ports(1));
    let config = format!(
        "{head}\n[speaker]\nenabled = false\n[microphone]\nenabled = false\n{video}",
        head = common::config_head(&janus_url, 1710, SECRET, base, common::Extra::default()),
        video = common::small_video("libcamera"),
    );
    let frame_log = pi4.path("frames.log");
    let env = pi4.env();
    let _agent = Agent::start_with(
        &config,
        &env_refs(&env, &[("STANDIN_FRAME_LOG", &frame_log)]),
    );
    let frames = receive_frames(&socket, 45, Duration::from_secs(20));
    let sent: Vec<(u32, u64)> = frames
        .iter()
        .filter_map(|f| Some((f.number?, f.at_ns)))
        .collect();
    assert!(sent.len() >= 45, "{} frames in 20 s", sent.len());
    // The tail of a frame cut in two would end without a number.
    let unnumbered = frames.len() - sent.len();
    assert_eq!(unnumbered, 0, "frames cut in two");
    let written = frames_written(&frame_log);
    let numbers: Vec<u32> = sent.iter().map(|(n, _)| *n).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    // Sent before the next frame was written (that is, within 67 ms at 15
    // fps, mostly within a few ms): all but the odd one a busy machine delays.
    let early = sent
        .iter()
        .filter(|(n, at)| written.get(&(n + 1)).is_none_or(|(next, _)| at < next))
        .count();
    assert!(
        early * 10 >= sent.len() * 9,
        "{early} of {} frames",
        sent.len()
    );
}

#[test]
fn standins_write_a_line_for_an_empty_buffer() {
    // rpicam-vid writes its --save-pts line for every buffer the encoder
    // hands over, bytes or none (output/output.cpp, Output::OutputReady).
    let pi4 = StandIns::install(Machine::Pi4, "1.6.0");
    let (pts, frames) = (pi4.path("pts.txt"), pi4.path("frames.log"));
    let out = pi4
        .command("rpicam-vid")
        .args(small_stream("1000"))
        .args(["--save-pts", &pts, "-o", "-"])
        .env("STANDIN_EMPTY_BUFFERS", "5")
        .env("STANDIN_FRAME_LOG", &frames)
        .stdin(Stdio::null())
        .output()
        .expect("run the stand-in");
    assert!(out.status.success(), "{}", stderr(&out));
    let written = frames_written(&frames).len();
    let text = std::fs::read_to_string(&pts).expect("the time stamps");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"# timecode format v2"));
    assert!(written >= 10, "{written} frames");
    assert_eq!(lines.len() - 1, written + written / 5, "{text}");
    // The empty buffer's line comes after its frame's, with its time.
    assert_eq!(lines[5], lines[6], "{text}");
}

#[test]
fn a_pi_4_s_empty_buffers_let_no_half_frame_go() {
    // rpicam-vid's line for an empty buffer must not count as a frame: if it
    // did, each frame read half-written would leave cut, and here every
    // frame is (noise at 10 Mbit/s: more than a pipe holds). Nothing listens
    // at the Janus URL: the agent sends anyway, to this socket in Janus's
    // place, which sees each frame's slices as the agent sent them.
    let pi4 = StandIns::install(Machine::Pi4, "1.6.0");
    let base = ports(3);
    let socket = std::net::UdpSocket::bind(("127.0.0.1", base)).expect("a UDP port");
    let janus_url = format!("http://127.0.0.1:{}/janus", ports(1));
    let config = format!(
        "{head}\n[speaker]\nenabled = false\n[microphone]\nenabled = false\n\
         [video]\nsource = \"libcamera\"\nwidth = 640\nheight = 480\nframerate = 15\n\
         bitrate_kbps = 10000\n",
        head = common::config_head(&janus_url, 1740, SECRET, base, common::Extra::default()),
    );
    let frame_log = pi4.path("frames.log");
    let env = pi4.env();
    let _agent = Agent::start_with(
        &config,
        &env_refs(
            &env,
            &[
                ("STANDIN_FRAME_LOG", &frame_log),
                ("STANDIN_PATTERN", "snow"),
                ("STANDIN_EMPTY_BUFFERS", "10"),
            ],
        ),
    );
    let frames = receive_frames(&socket, 60, Duration::from_secs(30));
    let written = frames_written(&frame_log);
    // Frames whose packets all arrived (at 10 Mbit/s, the socket may drop some).
    let numbered: Vec<(u32, usize)> = frames
        .iter()
        .filter(|f| !f.lossy)
        .filter_map(|f| Some((f.number?, f.slice_bytes)))
        .collect();
    println!(
        "{} of {} frames arrived whole",
        numbered.len(),
        frames.len()
    );
    assert!(numbered.len() >= 40, "{} whole in 30 s", numbered.len());
    // Well past the first empty buffer (after frame 10).
    assert!(
        numbered.last().is_some_and(|(n, _)| *n > 40),
        "{numbered:?}"
    );
    let cut: Vec<_> = numbered
        .iter()
        .filter(|(n, got)| written.get(n).is_none_or(|(_, whole)| got != whole))
        .map(|(n, got)| (n, got, written.get(n).map(|(_, whole)| whole)))
        .collect();
    assert!(
        cut.is_empty(),
        "{} of {} frames cut (number, slice bytes sent, written): {cut:?}",
        cut.len(),
        numbered.len()
    );
}
