//! The WebRTC uplink's requests: the VideoRoom room the agent publishes in,
//! its publisher (a handle of its own per PeerConnection, joined and
//! published with the uplink pipeline's offer, whose answer goes back to
//! it), and the forwarders that copy what it publishes into the mountpoint
//! on Janus's own machine, with an RTCP port so that viewers' keyframe
//! requests reach the Pi's encoder.

use std::time::Duration;

use super::actions::{presence, Conforming, Janus};
use super::error::PassError;
use super::plan::{Action, EdgeForward, Forwards, LivePublisher, Observed, Publisher, Session};
use crate::janus::audiobridge::Created;
use crate::janus::rooms::{Holding, RoomPlugin};
use crate::janus::videoroom::{self, ForwardSpec, Forwarders, VideoRoom, VideoRoomSpec};
use crate::janus::{Handle, SessionId};
use crate::rtp::Medium;
use crate::secret::SrtpKey;
use crate::signalling::OfferId;
use crate::state::{Owner, Presence, UplinkKind};

/// What is missing for WebRTC on Janus's side.
const NO_VIDEOROOM: &str =
    "Janus has no VideoRoom plugin (janus.plugin.videoroom): load libjanus_videoroom.so (conf/janus does)";
/// Janus's core error when it cannot gather candidates for a PeerConnection.
const ICE_SETUP_FAILED: u16 = 490;
/// What that means.
const NO_ICE: &str =
    "Janus cannot set up ICE (error 490: no address to gather candidates on besides loopback?)";
/// How long a published PeerConnection may take to come up.
const CONNECT_WITHIN: Duration = Duration::from_secs(8);
/// Publishers in a row that never came up, after which `auto` gives up on WebRTC.
const UNCONNECTED_TRIES: u8 = 2;
/// What that means.
const NO_PATH: &str =
    "the WebRTC uplink never connected (ICE found no path to Janus: is UDP between them blocked?)";

/// The mids of the live publisher's media, as Janus took them from its offer.
#[derive(Debug, Clone, Default)]
pub(super) struct Mids {
    publisher: u64,
    video: Option<String>,
    audio: Option<String>,
}

impl Janus {
    /// Which uplink a new session uses (`stream.transport`), and the
    /// VideoRoom handle for it: WebRTC where asked for and both ends can.
    pub(super) fn choose_uplink(
        &self,
        id: SessionId,
    ) -> Result<(Option<Handle>, UplinkKind, Option<&'static str>), PassError> {
        use crate::config::Transport;
        let transport = self.settings.stream.transport;
        if transport == Transport::Rtp || !self.settings.sends_media() {
            return Ok((None, UplinkKind::Rtp, None));
        }
        let missing = match self.local_webrtc {
            Some(missing) => Some(missing),
            None => match self.client.attach(id, videoroom::PLUGIN) {
                Ok(handle) => return Ok((Some(handle), UplinkKind::Webrtc, None)),
                Err(e) if e.is_plugin_unavailable() => Some(NO_VIDEOROOM),
                Err(e) => return Err(e.into()),
            },
        };
        match (transport, missing) {
            (Transport::Webrtc, Some(missing)) => Err(PassError::NoWebrtc(missing)),
            (_, missing) => Ok((None, UplinkKind::Rtp, missing)),
        }
    }

    /// Performs one of the uplink's actions.
    pub(super) fn uplink(
        &self,
        session: Session,
        action: Action,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        // The planner asks for these only with the WebRTC uplink, whose
        // sessions have the handle.
        let Some(handle) = session.videoroom else {
            observed.uplink.publisher = Publisher::Absent;
            return Ok(());
        };
        let room = VideoRoom::new(&self.client, handle);
        match action {
            Action::CheckVideoRoom => self.check_video_room(&room, observed)?,
            Action::CreateVideoRoom => self.create_video_room(&room, observed)?,
            Action::DestroyVideoRoom => {
                let settings = &self.settings.room;
                room.destroy(settings.id, settings.secret.as_ref())?;
                log::info!("video room {}: destroyed", settings.id);
                observed.uplink.room = Presence::Absent;
                observed.conformed.video_room = false;
            }
            Action::Publish(offer) => self.publish(session.id, offer, observed)?,
            Action::Unpublish => self.unpublish(observed)?,
            Action::CheckUplinkForwarders => {
                let settings = &self.settings.room;
                let list = room.control(settings.id, settings.secret.as_ref())?;
                self.record_uplink_forwarders(&list, observed);
            }
            Action::ForwardUplink => self.forward_uplink(&room, observed)?,
            Action::Conform(_) => {
                if self.conform(&room, "video room")? == Conforming::Remake {
                    let settings = &self.settings.room;
                    room.destroy(settings.id, settings.secret.as_ref())?;
                    observed.uplink.room = Presence::Absent;
                    observed.uplink.forwards = Presence::Absent;
                }
                observed.conformed.video_room =
                    observed.uplink.room == Presence::Present(Owner::Us);
            }
            Action::StopUplinkForwarders => self.stop_uplink_forwarders(&room, observed)?,
            Action::ForwardEdge(n) => self.forward_edge(&room, n, observed)?,
            Action::StopEdgeForward(n) => self.stop_edge_forward(&room, n, observed)?,
            _ => {}
        }
        Ok(())
    }

    /// Whether the VideoRoom room exists and is ours, with its forwarders.
    fn check_video_room(
        &self,
        room: &VideoRoom<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let settings = &self.settings.room;
        let holding = room.holding(settings.id, settings.secret.as_ref())?;
        observed.uplink.room = presence(&holding);
        match holding {
            Holding::Ours(list) => self.record_uplink_forwarders(&list, observed),
            Holding::Absent => observed.uplink.forwards = Presence::Absent,
            _ => {}
        }
        Ok(())
    }

    fn create_video_room(
        &self,
        room: &VideoRoom<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let settings = &self.settings.room;
        let spec = VideoRoomSpec {
            id: settings.id,
            description: &settings.description,
            secret: settings.secret.as_ref(),
            pin: settings.pin.as_ref(),
            admin_key: settings.admin_key.as_ref(),
        };
        let made =
            self.lockdown
                .create(videoroom::PLUGIN, spec.id, spec.admin_key, |admin_key| {
                    room.create(&VideoRoomSpec { admin_key, ..spec })
                })?;
        observed.uplink.room = match made {
            Created::New => {
                log::info!("video room {}: created (the WebRTC uplink's)", settings.id);
                observed.conformed.video_room = true;
                Presence::Present(Owner::Us)
            }
            // Made by someone meanwhile: check whose it is.
            Created::Existing => Presence::Unknown,
        };
        Ok(())
    }

    /// The live publisher's forwarders into the mountpoint, from the room's list.
    fn record_uplink_forwarders(&self, list: &[Forwarders], observed: &mut Observed) {
        let Publisher::Live(live) = observed.uplink.publisher else {
            observed.uplink.forwards = Presence::Absent;
            return;
        };
        let stream = &self.settings.stream;
        let ours = list.iter().find(|p| p.publisher == live.id);
        let port = |port: u16| {
            ours.and_then(|p| p.forwarders.iter().find(|f| f.is_local_to(port)))
                .map(|f| f.stream_id)
        };
        let forwards = Forwards {
            video: port(stream.video_port),
            audio: port(stream.audio_port),
            stale: false,
        };
        observed.uplink.forwards = match forwards {
            Forwards {
                video: None,
                audio: None,
                ..
            } => Presence::Absent,
            some => Presence::Present(some),
        };
    }

    /// Publishes the uplink's offer with a handle of its own, and hands
    /// Janus's answer back to the uplink.
    fn publish(
        &self,
        session: SessionId,
        offer: OfferId,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        if observed.uplink.unconnected >= UNCONNECTED_TRIES {
            return self.without_webrtc(observed, NO_PATH);
        }
        let Some(sdp) = self.signalling.take(offer) else {
            return Ok(()); // withdrawn meanwhile: the planner sees the next
        };
        let settings = &self.settings.room;
        let handle = self.client.attach(session, videoroom::PLUGIN)?;
        let publisher = VideoRoom::new(&self.client, handle);
        let joined = publisher
            .join(settings.id, settings.pin.as_ref())
            .and_then(|id| Ok((id, self.publish_in_place(&publisher, id, &sdp)?)));
        let (id, published) = match joined {
            Ok(done) => done,
            Err(e) => {
                let _ = self.client.detach(handle);
                if e.code() == Some(ICE_SETUP_FAILED) {
                    return self.without_webrtc(observed, NO_ICE);
                }
                return Err(e.into());
            }
        };
        *self
            .mids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Mids {
            publisher: id,
            video: published.video_mid,
            audio: published.audio_mid,
        };
        observed.uplink.publisher = Publisher::Live(LivePublisher {
            handle,
            id,
            offer,
            connected: false,
            since: std::time::Instant::now(),
        });
        observed.uplink.forwards = Presence::Absent;
        if self.signalling.answer(offer, published.answer) {
            log::info!("video room {}: publishing (publisher {id})", settings.id);
        }
        Ok(())
    }

    /// Publishes `sdp` as publisher `id`; when the room's one publishing
    /// place is held (by the publisher of an earlier run of the agent,
    /// until Janus times its session out), frees it and tries once more.
    fn publish_in_place(
        &self,
        publisher: &VideoRoom<'_>,
        id: u64,
        sdp: &str,
    ) -> Result<videoroom::Published, crate::janus::JanusError> {
        match publisher.publish(sdp) {
            Err(e) if e.code() == Some(videoroom::code::PUBLISHERS_FULL) => {
                let room = &self.settings.room;
                for other in publisher
                    .publishers(room.id)?
                    .into_iter()
                    .filter(|p| *p != id)
                {
                    publisher.kick(room.id, other, room.secret.as_ref())?;
                    log::info!(
                        "video room {}: removed publisher {other}, which held the room's one publishing place (an earlier run's?)",
                        room.id
                    );
                }
                publisher.publish(sdp)
            }
            other => other,
        }
    }

    /// WebRTC cannot work here (`why`): with `stream.transport = "auto"`
    /// this session falls back to plain RTP; with `"webrtc"` that is an
    /// error (retried slowly).
    fn without_webrtc(&self, observed: &mut Observed, why: &'static str) -> Result<(), PassError> {
        if self.settings.stream.transport == crate::config::Transport::Webrtc {
            observed.uplink.unconnected = 0;
            return Err(PassError::NoWebrtc(why));
        }
        observed.uplink.kind = Some((UplinkKind::Rtp, Some(why)));
        Ok(())
    }

    /// A publisher that did not come up within [`CONNECT_WITHIN`] is over:
    /// it is published again (and counted, for `auto`'s fallback).
    pub(super) fn expire_unconnected(&self, observed: &mut Observed) {
        let uplink = &mut observed.uplink;
        if let Publisher::Live(live) = uplink.publisher {
            if !live.connected && live.since.elapsed() > CONNECT_WITHIN {
                log::warn!(
                    "video room {}: the WebRTC uplink did not connect within {} s; publishing again",
                    self.settings.room.id,
                    CONNECT_WITHIN.as_secs()
                );
                uplink.publisher = Publisher::Over(live.handle);
                uplink.unconnected = uplink.unconnected.saturating_add(1);
            }
        }
    }

    /// Detaches the publisher's handle: Janus ends its PeerConnection and
    /// takes it out of the room.
    fn unpublish(&self, observed: &mut Observed) -> Result<(), PassError> {
        let handle = match observed.uplink.publisher {
            Publisher::Live(live) if live.connected => live.handle,
            Publisher::Live(live) => {
                observed.uplink.unconnected = observed.uplink.unconnected.saturating_add(1);
                live.handle
            }
            Publisher::Over(handle) => handle,
            Publisher::Absent => return Ok(()),
        };
        match self.client.detach(handle) {
            Ok(()) => {}
            // Gone with its PeerConnection already.
            Err(e) if e.code() == Some(crate::janus::code::HANDLE_NOT_FOUND) => {}
            Err(e) => return Err(e.into()),
        }
        log::info!("video room {}: publisher left", self.settings.room.id);
        observed.uplink.publisher = Publisher::Absent;
        observed.uplink.forwards = Presence::Absent;
        Ok(())
    }

    /// Has the VideoRoom forward the live publisher's media into the
    /// mountpoint's ports, on Janus's own machine.
    fn forward_uplink(
        &self,
        room: &VideoRoom<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let Publisher::Live(live) = observed.uplink.publisher else {
            return Ok(());
        };
        let stream = &self.settings.stream;
        let ports = [stream.video_port, stream.audio_port, stream.video_rtcp_port];
        let (video, audio) =
            self.forward_to(room, &live, "127.0.0.1", ports, observed.srtp_key.as_ref())?;
        log::info!(
            "video room {}: forwarding the publisher into mountpoint {}",
            self.settings.room.id,
            self.settings.room.id,
        );
        observed.uplink.forwards = Presence::Present(Forwards {
            video,
            audio,
            stale: false,
        });
        Ok(())
    }

    /// Has the VideoRoom forward the live publisher's video and audio (with
    /// the mids Janus gave them) to `host`'s video, audio and video RTCP
    /// `ports` (RTCP 0: none); Janus's ids for the two forwarders.
    fn forward_to(
        &self,
        room: &VideoRoom<'_>,
        live: &LivePublisher,
        host: &str,
        [video, audio, rtcp]: [u16; 3],
        srtp: Option<&SrtpKey>,
    ) -> Result<(Option<u64>, Option<u64>), PassError> {
        let mids = self
            .mids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let known = mids.publisher == live.id;
        let settings = &self.settings.room;
        let rtcp = (rtcp != 0).then_some(rtcp);
        let spec = ForwardSpec {
            room: settings.id,
            publisher: live.id,
            host,
            video: mids
                .video
                .as_deref()
                .filter(|_| known)
                .map(|mid| (mid, video, rtcp)),
            audio: mids
                .audio
                .as_deref()
                .filter(|_| known)
                .map(|mid| (mid, audio)),
            srtp,
            secret: settings.secret.as_ref(),
            admin_key: settings.admin_key.as_ref(),
        };
        let made = room.rtp_forward(&spec)?;
        if made.len() < 2 {
            log::warn!(
                "video room {}: {} of the publisher's 2 streams forwarded to {host}",
                settings.id,
                made.len()
            );
        }
        let id_of = |medium| made.iter().find(|(m, _)| *m == medium).map(|(_, id)| *id);
        Ok((id_of(Medium::Video), id_of(Medium::Audio)))
    }

    /// Stops the forwarders `ids` of publisher `publisher`.
    fn stop_forwards(
        &self,
        room: &VideoRoom<'_>,
        publisher: u64,
        ids: [Option<u64>; 2],
    ) -> Result<(), PassError> {
        let settings = &self.settings.room;
        for stream_id in ids.into_iter().flatten() {
            room.stop_rtp_forward(
                settings.id,
                publisher,
                stream_id,
                settings.secret.as_ref(),
                settings.admin_key.as_ref(),
            )?;
        }
        Ok(())
    }

    fn stop_uplink_forwarders(
        &self,
        room: &VideoRoom<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let (Publisher::Live(live), Presence::Present(forwards)) =
            (observed.uplink.publisher, observed.uplink.forwards)
        else {
            return Ok(());
        };
        self.stop_forwards(room, live.id, [forwards.video, forwards.audio])?;
        observed.uplink.forwards = Presence::Absent;
        Ok(())
    }

    /// Forwards the live publisher into edge `n`'s mountpoint (its host and
    /// ports in `[[relay]]`), video with the RTCP port that carries the
    /// edge's viewers' keyframe requests back.
    fn forward_edge(
        &self,
        room: &VideoRoom<'_>,
        n: usize,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let (Publisher::Live(live), Some(generation), Some(relay)) = (
            observed.uplink.publisher,
            observed.edge_targets[n],
            self.settings.relays.get(n),
        ) else {
            return Ok(());
        };
        let ports = [relay.video_port, relay.audio_port, relay.video_rtcp_port];
        let (video, audio) = self.forward_to(room, &live, relay.host(), ports, None)?;
        log::info!(
            "video room {}: forwarding the publisher to edge {}",
            self.settings.room.id,
            relay.url
        );
        observed.uplink.edges[n] = Some(EdgeForward {
            publisher: live.id,
            generation,
            video,
            audio,
        });
        Ok(())
    }

    /// Stops the publisher's forwards into edge `n`.
    fn stop_edge_forward(
        &self,
        room: &VideoRoom<'_>,
        n: usize,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        match observed.uplink.edges[n].take() {
            Some(forward) => {
                self.stop_forwards(room, forward.publisher, [forward.video, forward.audio])
            }
            None => Ok(()),
        }
    }
}
