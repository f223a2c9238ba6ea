//! What is wrong with the agent, and what to do about it: the lines
//! `broadcast-agent status` shows right after the room's phase (and
//! `status --json` as `problems`). Derived from the published state and
//! the pipelines' statuses, most important first.

use serde::Serialize;

use crate::media::supervisor::RunState;
use crate::media::PipelineStatus;
use crate::relay::{Edge, EdgePhase};
use crate::state::{ErrorClass, RoomState, UplinkKind};

/// Something wrong, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl Problem {
    fn new(problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// Every problem of `room`, `pipelines` and `edges`: the room's id held by
/// someone else, a room kept closed by a fault, the last failure talking to
/// Janus, no chat, failing pipelines, media not reaching Janus, the fallback
/// to plain RTP, and edges not fed.
pub fn of(room: &RoomState, pipelines: &[PipelineStatus], edges: &[Edge]) -> Vec<Problem> {
    let mut found = Vec::new();
    if let Some(conflict) = room.conflict() {
        found.push(Problem::new(conflict.problem(), conflict_fix()));
    }
    if let Some((reason, fix)) = room.closed_by.and_then(|r| r.fix().map(|fix| (r, fix))) {
        found.push(Problem::new(reason.words(), fix));
    }
    if let Some(e) = room
        .last_error
        .as_ref()
        .filter(|e| e.class != ErrorClass::Conflict)
    {
        found.push(Problem::new(
            format!("{}: {}", e.class.words(), e.cause),
            e.class.fix(),
        ));
    }
    if let Some((trouble, fix)) = room.chat.trouble() {
        found.push(Problem::new(trouble, fix));
    }
    if room.wants_open() {
        found.extend(pipelines.iter().filter_map(pipeline_problem));
        found.extend(pipelines.iter().filter_map(|p| {
            p.network.map(|note| {
                Problem::new(
                    format!("{}: {note}", p.name),
                    "check that UDP from this machine reaches Janus (a firewall or NAT between them?); \
                     the pipeline keeps running and checks again",
                )
            })
        }));
    }
    if let Some(why) = room
        .uplink
        .filter(|u| u.kind == UplinkKind::Rtp)
        .and_then(|u| u.fallback)
    {
        found.push(Problem::new(
            format!("plain RTP instead of WebRTC: {why}"),
            "fix that for the WebRTC uplink, or set stream.transport = \"rtp\" to choose plain RTP",
        ));
    }
    found.extend(edges.iter().filter_map(edge_problem));
    found
}

/// An edge that should carry viewers and does not.
fn edge_problem(edge: &Edge) -> Option<Problem> {
    let (problem, fix) = match edge.phase {
        EdgePhase::Unreachable => (
            format!(
                "edge {} cannot be reached: {}",
                edge.url,
                edge.error.as_deref().unwrap_or("no answer")
            ),
            "start its Janus, or check the [[relay]] url and credentials; it is retried on its own"
                .to_owned(),
        ),
        EdgePhase::Conflict => (
            format!("edge {}: a mountpoint with the room's id there is not this agent's", edge.url),
            "remove it on that Janus if it is a leftover, or give this room another id".to_owned(),
        ),
        EdgePhase::NeedsWebrtc => (
            format!("edge {} is not fed: the uplink is plain RTP", edge.url),
            "set stream.transport = \"webrtc\" (or \"auto\") so the origin can forward to the edges"
                .to_owned(),
        ),
        EdgePhase::Idle | EdgePhase::Opening | EdgePhase::Live => return None,
    };
    Some(Problem::new(problem, fix))
}

/// A conflict's fix, and how the agent learns of a changed room.id.
fn conflict_fix() -> String {
    format!(
        "{}; after changing room.id: `sudo systemctl reload broadcast-agent`",
        crate::state::Conflict::FIX
    )
}

/// A pipeline that failed, and where to look.
fn pipeline_problem(p: &PipelineStatus) -> Option<Problem> {
    if p.state != RunState::Failed {
        return None;
    }
    let check = match p.name {
        "video" => "check the camera ([video] source and device)",
        "microphone" => "check [microphone] device (`arecord -l` lists capture devices)",
        "speaker" => "check [speaker] device (`aplay -l` lists playback devices)",
        "recorder" => "check that recording.dir is writable and has space",
        _ => "check its settings",
    };
    Some(Problem::new(
        format!(
            "the {} pipeline failed and is restarted ({} restarts so far)",
            p.name, p.restarts
        ),
        format!("{check}; its error is below, `journalctl -u broadcast-agent` has the rest"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CloseReason, Desired, Failure, Uplink};

    #[test]
    fn a_fresh_install_says_to_set_the_room_secret() {
        let mut room = RoomState::new(1, Desired::Closed);
        room.closed_by = Some(CloseReason::Unconfigured);
        let found = of(&room, &[], &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].problem.starts_with("room.secret is not set"));
        assert!(found[0].fix.starts_with("set room.secret"));
    }

    #[test]
    fn a_room_closed_on_purpose_is_no_problem() {
        let room = RoomState::new(1, Desired::Closed);
        assert_eq!(
            of(&room, &[PipelineStatus::stopped("video")], &[]),
            Vec::new()
        );
    }

    #[test]
    fn a_failed_pass_is_named_by_its_class_and_cause() {
        let mut room = RoomState::new(1, Desired::Open);
        room.last_error = Some(Failure {
            message: "cannot reach Janus at http://x/janus: io: Connection refused".into(),
            cause: "connection refused".into(),
            class: ErrorClass::Unreachable,
        });
        room.uplink = Some(Uplink::new(UplinkKind::Rtp, Some("no VideoRoom")));
        let found = of(&room, &[], &[]);
        assert_eq!(
            found[0].problem,
            "Janus cannot be reached: connection refused"
        );
        assert!(found[0].fix.starts_with("start Janus"));
        assert_eq!(
            found[1].problem,
            "plain RTP instead of WebRTC: no VideoRoom"
        );
    }
}
