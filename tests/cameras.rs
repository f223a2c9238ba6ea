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
    let env = standins.env();
    let agent = Agent::start_with(&config(janus, room, source, base), &env_refs(&env, &[]));
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

/// The frame number the stand-in puts in an SEI at the start of each frame
/// (`STANDIN_FRAME_LOG`), if this RTP packet carries it (alone or in a STAP-A).
fn frame_number(packet: &[u8]) -> Option<u32> {
    const UUID: [u8; 16] = *b"ABCDEFGHIJKLMNOP";
    let csrcs = usize::from(*packet.first()? & 0x0f);
    let payload = packet.get(12 + 4 * csrcs..)?;
    let sei = payload.windows(2).position(|w| w == [0x06, 0x05])?;
    let at = sei + payload[sei..].windows(16).position(|w| w == UUID)? + 16;
    let bytes = payload.get(at..at + 4)?;
    Some(bytes.iter().fold(0, |n, b| (n << 7) | u32::from(b & 0x7f)))
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
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a timeout");
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
    // Per frame: when its last packet (RTP marker) arrived; and how many
    // frames ended without a number (the tail of a frame cut in two).
    let (mut sent, mut unnumbered, mut current) = (Vec::new(), 0, None);
    let mut buf = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs(20);
    while sent.len() < 45 && Instant::now() < end {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        current = frame_number(&buf[..n]).or(current);
        if n > 1 && buf[1] & 0x80 != 0 {
            match current.take() {
                Some(number) => sent.push((number, monotonic_ns())),
                None if !sent.is_empty() => unnumbered += 1,
                None => {}
            }
        }
    }
    assert!(sent.len() >= 45, "{} frames in 20 s", sent.len());
    assert_eq!(unnumbered, 0, "frames cut in two");
    let written: std::collections::HashMap<u32, u64> = std::fs::read_to_string(&frame_log)
        .expect("the frame log")
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ').map(str::parse::<u64>);
            Some((u32::try_from(f.next()?.ok()?).ok()?, f.next()?.ok()?))
        })
        .collect();
    let numbers: Vec<u32> = sent.iter().map(|(n, _)| *n).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    // Sent before the next frame was written (that is, within 67 ms at 15
    // fps, mostly within a few ms): all but the odd one a busy machine delays.
    let early = sent
        .iter()
        .filter(|(n, at)| written.get(&(n + 1)).is_none_or(|next| at < next))
        .count();
    assert!(
        early * 10 >= sent.len() * 9,
        "{early} of {} frames",
        sent.len()
    );
}
