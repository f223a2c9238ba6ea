//! Prometheus metrics for node exporter's textfile collector (`[metrics]`):
//! a task that renders the agent's status — the published room state and
//! the pipelines' statuses, as `broadcast-agent status` shows them — in the
//! text exposition format, and replaces the file atomically
//! ([`crate::replace`]: a fresh temporary file, fsync, rename) every
//! `interval_s`, and at once when the room's phase or the class of its
//! Janus error changes, so that an alert on the phase need not wait for
//! the next interval.
//!
//! Janus errors are counted by class as the room state shows them: once per
//! change of error, as the reconciler logs them, not once per retry.
//!
//! The file stays as last written when the agent stops: node exporter's
//! `node_textfile_mtime_seconds` tells a stale file.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::path::PathBuf;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::MetricsSettings;
use crate::media::supervisor::RunState;
use crate::relay::EdgePhase;
use crate::state::{ErrorClass, Phase, Presence, RoomState, UplinkKind};
use crate::status::{AgentStatus, StatusSource};

/// Every pipeline state, for the state-set metric.
const RUN_STATES: [RunState; 4] = [
    RunState::Stopped,
    RunState::Starting,
    RunState::Running,
    RunState::Failed,
];

/// The file's mode: node exporter, another user, reads it.
const MODE: u32 = 0o644;

/// Starts writing metrics, if `[metrics] textfile` is set. The task ends
/// when the reconciler does (its room watch closes).
pub fn spawn(
    settings: &MetricsSettings,
    room: watch::Receiver<RoomState>,
    status: StatusSource,
) -> Option<JoinHandle<()>> {
    if !settings.enabled() {
        return None;
    }
    let mut textfile = Textfile::new(settings.textfile.clone(), status);
    let interval = settings.interval;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        let mut room = room;
        loop {
            tokio::select! {
                // Time to write the file.
                _ = tick.tick() => {}
                // The room changed: count a new error, if it is one, and
                // write at once if the file no longer shows its headline.
                changed = room.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !textfile.saw(&room.borrow_and_update()) {
                        continue;
                    }
                }
            }
            textfile.write().await;
        }
    }))
}

/// What a change of makes the file be written at once: the room's phase
/// and the class of its Janus error.
type Headline = (Phase, Option<ErrorClass>);

fn headline(room: &RoomState) -> Headline {
    (room.phase(), room.last_error.as_ref().map(|f| f.class))
}

/// The textfile and what it was last written with.
struct Textfile {
    path: PathBuf,
    status: StatusSource,
    tally: Tally,
    /// The headline of the last write, once written.
    shown: Option<Headline>,
    /// The error of the last write, while writes fail.
    failing: Option<String>,
}

impl Textfile {
    fn new(path: PathBuf, status: StatusSource) -> Self {
        Self {
            path,
            status,
            tally: Tally::default(),
            shown: None,
            failing: None,
        }
    }

    /// Records a published room state; true when the file should be
    /// written now (its phase or error class differs from the file's).
    fn saw(&mut self, room: &RoomState) -> bool {
        self.tally.saw(room);
        self.shown.is_some_and(|shown| shown != headline(room))
    }

    /// Writes the file with the status as it is now.
    async fn write(&mut self) {
        let status = self.status.snapshot();
        self.shown = Some(headline(&status.room));
        let text = render(&status, &self.tally);
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || {
            crate::replace::replace(&path, text.as_bytes(), MODE)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.report(written);
    }

    /// Logs a failed write once per change of error, and the recovery.
    fn report(&mut self, written: std::io::Result<()>) {
        let path = self.path.display();
        match written {
            Ok(()) => {
                if self.failing.take().is_some() {
                    log::info!("metrics.textfile {path}: written again");
                }
            }
            Err(e) => {
                let text = e.to_string();
                if self.failing.as_deref() != Some(&text) {
                    let hint = match e.kind() {
                        std::io::ErrorKind::PermissionDenied => {
                            " (the folder must be writable by the agent's user: see docs/metrics.md)"
                        }
                        _ => "",
                    };
                    log::warn!("metrics.textfile {path}: cannot write: {text}{hint}");
                }
                self.failing = Some(text);
            }
        }
    }
}

/// Janus errors seen so far, by class: each change to a new error counts once.
#[derive(Debug, Default)]
struct Tally {
    counts: BTreeMap<ErrorClass, u64>,
    /// The error last seen, while there is one.
    last: Option<String>,
}

impl Tally {
    /// Records the room state as published.
    fn saw(&mut self, room: &RoomState) {
        let message = room.last_error.as_ref().map(|f| &f.message);
        if let Some(failure) = &room.last_error {
            if self.last.as_ref() != message {
                *self.counts.entry(failure.class).or_default() += 1;
            }
        }
        self.last = message.cloned();
    }

    fn count(&self, class: ErrorClass) -> u64 {
        self.counts.get(&class).copied().unwrap_or(0)
    }
}

/// The metrics text of `status`, with `errors` counted so far.
fn render(status: &AgentStatus, errors: &Tally) -> String {
    let mut out = Exposition::default();
    let room = &status.room;
    let id = room.room_id.to_string();
    out.family("build_info", "gauge", "The agent's version.");
    out.sample("build_info", &[("version", status.version)], 1);
    out.family(
        "uptime_seconds",
        "gauge",
        "Seconds since the agent (re)started.",
    );
    out.sample("uptime_seconds", &[], status.uptime_s);
    out.family(
        "room_wanted_open",
        "gauge",
        "1 while the owner wants the room open.",
    );
    out.sample(
        "room_wanted_open",
        &[("room", &id)],
        u8::from(room.wants_open()),
    );
    out.family(
        "room_phase",
        "gauge",
        "The room's phase: 1 for the current one.",
    );
    for phase in Phase::ALL {
        let value = u8::from(phase == status.phase);
        out.sample(
            "room_phase",
            &[("room", &id), ("phase", phase.label())],
            value,
        );
    }
    room_on_janus(&mut out, room);
    janus_errors(&mut out, room, errors);
    pipelines(&mut out, status);
    video_bitrate(&mut out, status);
    uplink(&mut out, status);
    edges(&mut out, status);
    out.text
}

/// Each edge Janus (`[[relay]]`): its phase and how fresh its video is.
fn edges(out: &mut Exposition, status: &AgentStatus) {
    if status.edges.is_empty() {
        return;
    }
    out.family(
        "edge_live",
        "gauge",
        "1 while the edge Janus holds the agent's mountpoint (the origin forwards into it).",
    );
    for edge in &status.edges {
        let live = u8::from(edge.phase == EdgePhase::Live);
        out.sample("edge_live", &[("edge", &edge.url)], live);
    }
    out.family(
        "edge_media_age_seconds",
        "gauge",
        "Time since the edge's mountpoint last received video.",
    );
    for edge in &status.edges {
        if let Some(ms) = edge.media_age_ms {
            out.sample(
                "edge_media_age_seconds",
                &[("edge", &edge.url)],
                Seconds(ms),
            );
        }
    }
}

/// The video encoder's bitrate now, and whether it follows the link.
fn video_bitrate(out: &mut Exposition, status: &AgentStatus) {
    let Some(bitrate) = status.pipelines.iter().find_map(|p| p.bitrate) else {
        return;
    };
    out.family(
        "video_bitrate_bits_per_second",
        "gauge",
        "The bitrate the video encoder is set to now (adaptive: between video.min_bitrate_kbps and video.bitrate_kbps).",
    );
    out.sample(
        "video_bitrate_bits_per_second",
        &[],
        u64::from(bitrate.kbps) * 1000,
    );
    out.family(
        "video_bitrate_adaptive",
        "gauge",
        "1 while the video's bitrate follows the link; 0 when it is fixed (configured, or a camera program).",
    );
    out.sample(
        "video_bitrate_adaptive",
        &[],
        u8::from(bitrate.fixed.is_none()),
    );
}

/// Which uplink runs and, with WebRTC, its PeerConnection and repairs.
fn uplink(out: &mut Exposition, status: &AgentStatus) {
    let Some(chosen) = status.room.uplink else {
        return;
    };
    out.family(
        "uplink",
        "gauge",
        "The uplink camera and microphone take to Janus: 1 for the one in use.",
    );
    for (kind, name) in [(UplinkKind::Rtp, "rtp"), (UplinkKind::Webrtc, "webrtc")] {
        out.sample(
            "uplink",
            &[("transport", name)],
            u8::from(chosen.kind == kind),
        );
    }
    if let Some(peer) = status.pipelines.iter().find_map(|p| p.uplink) {
        peer_connection(out, &peer);
    }
}

/// The WebRTC uplink's PeerConnection: up or not, what it sent and repaired.
fn peer_connection(out: &mut Exposition, peer: &crate::media::uplink::UplinkCounts) {
    let counters = [
        (
            "uplink_connected",
            "gauge",
            "1 while the WebRTC uplink's ICE and DTLS are up.",
            u64::from(peer.connected),
        ),
        (
            "uplink_packets_sent_total",
            "counter",
            "RTP packets the WebRTC uplink sent since it (re)started.",
            peer.packets_sent,
        ),
        (
            "uplink_nacks_received_total",
            "counter",
            "Packets Janus asked the WebRTC uplink for again (NACK).",
            peer.nacks_received,
        ),
        (
            "uplink_retransmitted_total",
            "counter",
            "Packets the WebRTC uplink sent again (RTX).",
            peer.retransmitted,
        ),
        (
            "uplink_keyframe_requests_total",
            "counter",
            "Keyframes Janus asked the WebRTC uplink for.",
            peer.keyframe_requests,
        ),
    ];
    for (name, kind, help, value) in counters {
        out.family(name, kind, help);
        out.sample(name, &[], value);
    }
    if let Some(ms) = peer.rtt_ms {
        out.family(
            "uplink_rtt_seconds",
            "gauge",
            "Round-trip time to Janus, from its receiver reports.",
        );
        out.sample("uplink_rtt_seconds", &[], Seconds(u64::from(ms)));
    }
}

/// What exists on Janus: session, room parts, participants, media age.
fn room_on_janus(out: &mut Exposition, room: &RoomState) {
    out.family(
        "janus_session",
        "gauge",
        "1 while the agent holds a Janus session.",
    );
    out.sample("janus_session", &[], u8::from(room.session));
    out.family(
        "janus_present",
        "gauge",
        "1 when Janus last said this part of the room exists.",
    );
    let present = |p: bool| u8::from(p);
    for (what, value) in [
        ("room", present(matches!(room.room, Presence::Present(_)))),
        (
            "mountpoint",
            present(matches!(room.mountpoint, Presence::Present(_))),
        ),
        (
            "forwarder",
            present(matches!(room.forwarder, Presence::Present(_))),
        ),
    ] {
        out.sample("janus_present", &[("what", what)], value);
    }
    if let Some(n) = room.participants {
        out.family(
            "room_participants",
            "gauge",
            "Participants in the AudioBridge room (viewers who joined it).",
        );
        out.sample("room_participants", &[], n);
    }
    let ages = [
        ("video", room.media_age.video_ms),
        ("audio", room.media_age.audio_ms),
    ];
    if ages.iter().any(|(_, ms)| ms.is_some()) {
        out.family(
            "media_age_seconds",
            "gauge",
            "Seconds since Janus last received the medium from the agent.",
        );
    }
    for (medium, ms) in ages {
        if let Some(ms) = ms {
            out.sample("media_age_seconds", &[("medium", medium)], Seconds(ms));
        }
    }
}

/// The current Janus error and the errors counted so far, by class.
fn janus_errors(out: &mut Exposition, room: &RoomState, errors: &Tally) {
    let current = room.last_error.as_ref().map(|f| f.class);
    out.family(
        "janus_error",
        "gauge",
        "1 for the class of the error the last pass failed with.",
    );
    for class in ErrorClass::ALL {
        let value = u8::from(current == Some(class));
        out.sample("janus_error", &[("class", class.label())], value);
    }
    out.family(
        "janus_errors_total",
        "counter",
        "Errors met talking to Janus, counted once per change of error.",
    );
    for class in ErrorClass::ALL {
        let value = errors.count(class);
        out.sample("janus_errors_total", &[("class", class.label())], value);
    }
}

/// Each pipeline's state, restarts and RTP packets.
fn pipelines(out: &mut Exposition, status: &AgentStatus) {
    if status.pipelines.is_empty() {
        return;
    }
    out.family(
        "pipeline_state",
        "gauge",
        "The pipeline's state: 1 for the current one.",
    );
    for p in &status.pipelines {
        for state in RUN_STATES {
            let value = u8::from(p.state == state);
            let labels = [("pipeline", p.name), ("state", state.label())];
            out.sample("pipeline_state", &labels, value);
        }
    }
    out.family(
        "pipeline_restarts_total",
        "counter",
        "Restarts of the pipeline after failures.",
    );
    for p in &status.pipelines {
        out.sample(
            "pipeline_restarts_total",
            &[("pipeline", p.name)],
            p.restarts,
        );
    }
    let sending: Vec<_> = status
        .pipelines
        .iter()
        .filter_map(|p| Some((p.name, p.rtp?)))
        .collect();
    if sending.is_empty() {
        return;
    }
    out.family(
        "pipeline_rtp_packets_total",
        "counter",
        "RTP packets sent since the pipeline last (re)started.",
    );
    for (name, rtp) in &sending {
        out.sample(
            "pipeline_rtp_packets_total",
            &[("pipeline", name)],
            rtp.packets,
        );
    }
    out.family(
        "pipeline_rtp_missing_total",
        "counter",
        "Gaps in the sequence numbers sent since the pipeline last (re)started.",
    );
    for (name, rtp) in &sending {
        out.sample(
            "pipeline_rtp_missing_total",
            &[("pipeline", name)],
            rtp.missing,
        );
    }
}

/// Milliseconds shown as seconds.
struct Seconds(u64);

impl Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// Prometheus's text format, every name prefixed with `broadcast_agent_`.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    const PREFIX: &'static str = "broadcast_agent_";

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let prefix = Self::PREFIX;
        let _ = writeln!(self.text, "# HELP {prefix}{name} {help}");
        let _ = writeln!(self.text, "# TYPE {prefix}{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        let _ = write!(self.text, "{}{name}", Self::PREFIX);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.text, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value as the text format quotes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::PipelineStatus;
    use crate::state::{Desired, Failure};

    fn failure(message: &str, class: ErrorClass) -> Failure {
        Failure {
            message: message.into(),
            cause: message.into(),
            class,
        }
    }

    #[test]
    fn the_uplink_and_its_repairs_are_exposed() {
        let mut room = RoomState::new(7, Desired::Open);
        room.uplink = Some(crate::state::Uplink::new(UplinkKind::Webrtc, None));
        let mut uplink = PipelineStatus::stopped("uplink");
        uplink.uplink = Some(crate::media::uplink::UplinkCounts {
            connected: true,
            packets_sent: 900,
            nacks_received: 12,
            retransmitted: 11,
            keyframe_requests: 2,
            rtt_ms: Some(3),
        });
        let text = render(&AgentStatus::of(room, vec![uplink]), &Tally::default());
        for line in [
            "broadcast_agent_uplink{transport=\"rtp\"} 0",
            "broadcast_agent_uplink{transport=\"webrtc\"} 1",
            "broadcast_agent_uplink_connected 1",
            "broadcast_agent_uplink_packets_sent_total 900",
            "broadcast_agent_uplink_nacks_received_total 12",
            "broadcast_agent_uplink_retransmitted_total 11",
            "broadcast_agent_uplink_keyframe_requests_total 2",
            "broadcast_agent_uplink_rtt_seconds 0.003",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn the_video_bitrate_is_exposed() {
        let mut video = PipelineStatus::stopped("video");
        video.bitrate = Some(crate::media::bitrate::BitrateStatus {
            kbps: 950,
            configured_kbps: 2000,
            min_kbps: 300,
            fixed: None,
            loss_percent: None,
            rtt_ms: None,
            remb_kbps: None,
            reports: 0,
            rembs: 0,
        });
        let room = RoomState::new(7, Desired::Open);
        let text = render(&AgentStatus::of(room, vec![video]), &Tally::default());
        for line in [
            "broadcast_agent_video_bitrate_bits_per_second 950000",
            "broadcast_agent_video_bitrate_adaptive 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn an_error_counts_once_per_change_not_per_retry() {
        let mut tally = Tally::default();
        let mut room = RoomState::new(1, Desired::Open);
        room.last_error = Some(failure("refused", ErrorClass::Unreachable));
        tally.saw(&room);
        tally.saw(&room);
        room.last_error = Some(failure("403", ErrorClass::Core));
        tally.saw(&room);
        room.last_error = None;
        tally.saw(&room);
        room.last_error = Some(failure("refused", ErrorClass::Unreachable));
        tally.saw(&room);
        assert_eq!(tally.count(ErrorClass::Unreachable), 2);
        assert_eq!(tally.count(ErrorClass::Core), 1);
        assert_eq!(tally.count(ErrorClass::Plugin), 0);
    }

    #[test]
    fn the_text_holds_one_sample_per_state_and_escapes_labels() {
        let mut room = RoomState::new(7, Desired::Open);
        room.participants = Some(2);
        room.media_age.video_ms = Some(1500);
        let status = AgentStatus {
            version: "1.0 \"x\"",
            uptime_s: 3,
            ..AgentStatus::of(room, vec![PipelineStatus::stopped("video")])
        };
        let text = render(&status, &Tally::default());
        for line in [
            "broadcast_agent_build_info{version=\"1.0 \\\"x\\\"\"} 1",
            "broadcast_agent_room_phase{room=\"7\",phase=\"opening\"} 1",
            "broadcast_agent_room_phase{room=\"7\",phase=\"live\"} 0",
            "broadcast_agent_room_participants 2",
            "broadcast_agent_media_age_seconds{medium=\"video\"} 1.500",
            "broadcast_agent_pipeline_state{pipeline=\"video\",state=\"stopped\"} 1",
            "broadcast_agent_pipeline_restarts_total{pipeline=\"video\"} 0",
            "broadcast_agent_janus_errors_total{class=\"tls\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains("medium=\"audio\""), "{text}");
    }
}
