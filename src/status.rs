//! What the agent reports about itself, derived from the reconciler's
//! published state and the pipelines' statuses: the systemd STATUS line, the
//! LED pattern, and `broadcast-agent status` (JSON and text). Nothing here is
//! stored: everything is computed from the one published state.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::media::supervisor::RunState;
use crate::media::{MediaStatus, PipelineStatus};
use crate::problems::{self, Problem};
use crate::relay::{Board, Edge, EdgePhase};
use crate::state::{CloseReason, Desired, Phase, RoomState, Uplink, UplinkKind};

/// Where the status comes from.
#[derive(Debug, Clone)]
pub struct StatusSource {
    room: watch::Receiver<RoomState>,
    media: MediaStatus,
    edges: Arc<Board>,
    started: Instant,
    viewer_url: Option<String>,
}

impl StatusSource {
    /// A source over the reconciler's and the pipelines' published states.
    pub fn new(
        room: watch::Receiver<RoomState>,
        media: MediaStatus,
        edges: Arc<Board>,
        viewer_url: Option<String>,
    ) -> Self {
        Self {
            room,
            media,
            edges,
            started: Instant::now(),
            viewer_url,
        }
    }

    /// The status right now.
    pub fn snapshot(&self) -> AgentStatus {
        let room = self.room.borrow().clone();
        let pipelines = self.media.snapshot();
        let edges = self.edges.edges();
        AgentStatus {
            version: env!("CARGO_PKG_VERSION"),
            phase: room.phase(),
            problems: problems::of(&room, &pipelines, &edges),
            viewer_url: (room.phase() == Phase::Live)
                .then(|| self.viewer_url.clone())
                .flatten(),
            room,
            pipelines,
            edges,
            uptime_s: self.started.elapsed().as_secs(),
        }
    }
}

/// A snapshot of everything the agent knows about itself.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    /// The agent's version.
    pub version: &'static str,
    /// The room in one word.
    pub phase: Phase,
    /// What is wrong and what to do, most important first.
    pub problems: Vec<Problem>,
    /// Desired and observed state of room, mountpoint and forwarder.
    pub room: RoomState,
    /// Each configured pipeline.
    pub pipelines: Vec<PipelineStatus>,
    /// Each edge Janus (`[[relay]]`).
    pub edges: Vec<Edge>,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// Where viewers watch, while the room is live.
    pub viewer_url: Option<String>,
}

/// What the status LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Led {
    /// The room is closed.
    Off,
    /// Opening, closing, or recovering from a failure.
    Blinking,
    /// Live, and every pipeline runs.
    On,
}

impl AgentStatus {
    /// A status of `room` and `pipelines` at start-up, for tests.
    #[cfg(test)]
    pub(crate) fn of(room: RoomState, pipelines: Vec<PipelineStatus>) -> Self {
        Self {
            version: "0",
            phase: room.phase(),
            problems: problems::of(&room, &pipelines, &[]),
            room,
            pipelines,
            edges: Vec::new(),
            uptime_s: 0,
            viewer_url: None,
        }
    }

    fn pipelines_ok(&self) -> bool {
        self.pipelines.iter().all(|p| p.state == RunState::Running)
    }

    /// The LED pattern for this status.
    pub fn led(&self) -> Led {
        match self.phase {
            Phase::Closed => Led::Off,
            Phase::Live if self.pipelines_ok() => Led::On,
            _ => Led::Blinking,
        }
    }

    /// A short line for systemd's STATUS=, e.g.
    /// `live room 4556 | video ok | microphone ok | speaker ok`.
    /// It never contains a secret: only states and error texts, which carry none.
    pub fn line(&self) -> String {
        let id = self.room.room_id;
        let mut line = match (self.phase, &self.room.last_error) {
            (Phase::Live, _) => format!("live room {id}"),
            (Phase::Closed, _) => match self.room.closed_by {
                Some(reason) if reason != CloseReason::Command => {
                    format!("closed room {id} ({})", reason.words())
                }
                _ => format!("closed room {id}"),
            },
            (Phase::Conflict, _) => match self.room.conflict() {
                Some(c) => format!("conflict: {} {id} is not this agent's", c.what),
                None => format!("conflict room {id}"),
            },
            (_, Some(error)) => format!("waiting for Janus: {}", error.cause),
            (Phase::Opening, None) => format!("opening room {id}"),
            (Phase::Closing, None) => format!("closing room {id}"),
        };
        if self.room.desired == Desired::Open {
            for p in &self.pipelines {
                let state = match p.state {
                    RunState::Running => "ok",
                    other => other.label(),
                };
                let _ = write!(line, " | {} {state}", p.name);
            }
            if let Some(note) = self.network() {
                let _ = write!(line, " | network: {note}");
            }
        }
        line
    }

    /// A network problem a running pipeline reports, if any.
    fn network(&self) -> Option<&'static str> {
        self.pipelines.iter().find_map(|p| p.network)
    }

    /// Text for a person: `broadcast-agent status`. The first line is the
    /// room's phase; then each problem and what to do about it; then the
    /// details.
    pub fn text(&self) -> String {
        let r = &self.room;
        let mut out = format!(
            "room {}: {} (wanted {})\n",
            r.room_id,
            self.phase.label(),
            if r.desired == Desired::Open {
                "open"
            } else {
                "closed"
            }
        );
        if self.problems.is_empty() {
            out.push_str("  problems: none\n");
        }
        for Problem { problem, fix } in &self.problems {
            let _ = writeln!(out, "  problem: {problem}\n       do: {fix}");
        }
        // A reason with a fix is a problem above.
        if let Some(reason) = r.closed_by.filter(|r| r.fix().is_none()) {
            let _ = writeln!(out, "  closed: {}", reason.words());
        }
        if let Some(n) = r.participants {
            let _ = writeln!(out, "  participants: {n}");
        }
        let _ = writeln!(
            out,
            "  janus: session {} | room {} | mountpoint {} | forwarder {} | chat {}",
            if r.session { "yes" } else { "no" },
            r.room.label(),
            r.mountpoint.label(),
            match r.forwarding {
                true => r.forwarder.label(),
                false => "off (no speaker)",
            },
            r.chat.label()
        );
        let _ = writeln!(out, "  uplink: {}", uplink_text(r.uplink));
        if let (Some(video), Some(audio)) = (r.media_age.video_ms, r.media_age.audio_ms) {
            let _ = writeln!(
                out,
                "  received by Janus: video {video} ms ago, audio {audio} ms ago"
            );
        }
        for p in &self.pipelines {
            pipeline_text(&mut out, p);
        }
        for edge in &self.edges {
            edge_text(&mut out, edge);
        }
        if let Some(note) = self.network() {
            let _ = writeln!(out, "  network: {note}");
        }
        if let Some(e) = &r.last_error {
            let _ = writeln!(out, "  last error: {}", e.message);
        }
        if let Some(url) = &self.viewer_url {
            let _ = writeln!(out, "  viewers: {url}");
        }
        let _ = writeln!(
            out,
            "  uptime {}",
            uptime(Duration::from_secs(self.uptime_s))
        );
        out
    }
}

/// The uplink in words: which one, why, and its parts on Janus.
fn uplink_text(uplink: Option<Uplink>) -> String {
    let Some(uplink) = uplink else {
        return "not chosen yet (Janus has not answered)".into();
    };
    match (uplink.kind, uplink.fallback) {
        (UplinkKind::Rtp, Some(why)) => format!("rtp (stream.transport = \"auto\": {why})"),
        (UplinkKind::Rtp, None) => "rtp".into(),
        (UplinkKind::Webrtc, _) => format!(
            "webrtc | video room {} | publisher {} | forwarders {}",
            uplink.room.label(),
            uplink.publisher.label(),
            uplink.forwarders.label()
        ),
    }
}

/// One pipeline's lines of [`AgentStatus::text`].
fn pipeline_text(out: &mut String, p: &PipelineStatus) {
    let _ = write!(
        out,
        "  {}: {} (restarts {})",
        p.name,
        p.state.label(),
        p.restarts
    );
    match &p.last_error {
        Some(e) => {
            let _ = writeln!(out, ": {e}");
        }
        None => out.push('\n'),
    }
    if let Some(without) = &p.without {
        let _ = writeln!(out, "    running without {without}");
    }
    if let Some(u) = &p.uplink {
        let rtt = u.rtt_ms.map_or("unknown".into(), |ms| format!("{ms} ms"));
        let _ = writeln!(
            out,
            "    peer: {} | packets sent {} | NACKs received {} | retransmitted {} | keyframe requests {} | round trip {rtt}",
            if u.connected { "connected" } else { "not connected" },
            u.packets_sent,
            u.nacks_received,
            u.retransmitted,
            u.keyframe_requests
        );
    }
    if let Some(b) = &p.bitrate {
        bitrate_text(out, b);
    }
    if let Some(echo) = &p.echo {
        let heard = echo.heard_ms.map_or("not yet heard".into(), |ms| {
            format!("heard {ms} ms after the speaker's account")
        });
        let _ = writeln!(
            out,
            "    echo: {heard}; the canceller's reference {} ms later",
            echo.shift_ms
        );
    }
}

/// The video's bitrate line: what the encoder runs at, and what it follows.
fn bitrate_text(out: &mut String, b: &crate::media::bitrate::BitrateStatus) {
    let _ = write!(out, "    bitrate: {} kbit/s", b.kbps);
    match b.fixed {
        Some(why) => {
            let _ = writeln!(out, ", fixed ({})", why.words());
        }
        None => {
            let _ = write!(
                out,
                ", adaptive {}..{} kbit/s",
                b.min_kbps, b.configured_kbps
            );
            if let Some(loss) = b.loss_percent {
                let _ = write!(out, " | loss {loss} %");
            }
            if let Some(rtt) = b.rtt_ms {
                let _ = write!(out, " | round trip {rtt} ms");
            }
            if let Some(remb) = b.remb_kbps {
                let _ = write!(out, " | REMB {remb} kbit/s");
            }
            let _ = writeln!(out, " | reports {} | REMBs {}", b.reports, b.rembs);
        }
    }
}

fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

/// One edge's line: `edge <url>: live, video 40 ms ago`.
fn edge_text(out: &mut String, edge: &Edge) {
    let phase = match edge.phase {
        EdgePhase::Idle => "idle",
        EdgePhase::Opening => "opening",
        EdgePhase::Live => "live",
        EdgePhase::Unreachable => "unreachable",
        EdgePhase::Conflict => {
            "conflict (a mountpoint with the room's id that is not this agent's)"
        }
        EdgePhase::NeedsWebrtc => "not fed: edges need the WebRTC uplink (stream.transport)",
    };
    let _ = write!(out, "  edge {}: {phase}", edge.url);
    if let Some(age) = edge.media_age_ms {
        let _ = write!(out, ", video {age} ms ago");
    }
    if let Some(error) = &edge.error {
        let _ = write!(out, " ({error})");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_shows_only_the_cause_of_a_failure() {
        let mut room = RoomState::new(7, Desired::Open);
        room.last_error = Some(crate::state::Failure {
            message: "cannot reach Janus at http://x/janus: io: Connection refused".into(),
            cause: "connection refused".into(),
            class: crate::state::ErrorClass::Unreachable,
        });
        let status = AgentStatus::of(room, vec![PipelineStatus::stopped("video")]);
        assert_eq!(
            status.line(),
            "waiting for Janus: connection refused | video stopped"
        );
        assert!(status
            .text()
            .contains("last error: cannot reach Janus at http://x/janus"));
        assert_eq!(status.led(), Led::Blinking);
    }

    #[test]
    fn a_conflict_is_named_in_every_output() {
        let mut room = RoomState::new(4556, Desired::Open);
        room.room = crate::state::Presence::Present(crate::state::Owner::Foreign(
            crate::state::Foreign::OtherSecret,
        ));
        let status = AgentStatus::of(room, Vec::new());
        assert_eq!(status.line(), "conflict: room 4556 is not this agent's");
        let text = status.text();
        assert!(text.contains("room 4556: conflict"), "{text}");
        assert!(text.contains("pick another room.id"), "{text}");
        assert_eq!(status.led(), Led::Blinking);
        let json = serde_json::to_value(&status).expect("serializes");
        assert_eq!(json["phase"], "conflict");
    }

    #[test]
    fn the_video_bitrate_is_shown_with_what_it_follows() {
        use crate::media::bitrate::{BitrateStatus, Fixed};
        let mut video = PipelineStatus::stopped("video");
        let mut bitrate = BitrateStatus {
            kbps: 950,
            configured_kbps: 2000,
            min_kbps: 300,
            fixed: None,
            loss_percent: Some(3.1),
            rtt_ms: Some(12),
            remb_kbps: None,
            reports: 40,
            rembs: 0,
        };
        video.bitrate = Some(bitrate);
        let status = AgentStatus::of(RoomState::new(7, Desired::Open), vec![video.clone()]);
        let text = status.text();
        assert!(
            text.contains(
                "    bitrate: 950 kbit/s, adaptive 300..2000 kbit/s | loss 3.1 % | round trip 12 ms | reports 40 | REMBs 0\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&status).expect("serializes");
        assert_eq!(json["pipelines"][0]["bitrate"]["kbps"], 950);
        bitrate.fixed = Some(Fixed::CameraProgram);
        bitrate.kbps = 2000;
        video.bitrate = Some(bitrate);
        let text = AgentStatus::of(RoomState::new(7, Desired::Open), vec![video]).text();
        assert!(
            text.contains("bitrate: 2000 kbit/s, fixed (the camera program encodes behind a pipe"),
            "{text}"
        );
    }

    #[test]
    fn uptime_reads_well() {
        assert_eq!(uptime(Duration::from_secs(3723)), "1h02m03s");
    }
}
