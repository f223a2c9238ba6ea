//! The WebRTC uplink's signalling, as plain values: the offer the uplink's
//! `webrtcbin` makes (`media/uplink.rs`), and the answer or the hang-up the
//! reconciler (`room/`), which alone talks to Janus, brings back.
//!
//! ```text
//!  uplink pipeline ── offer(sdp, replies) ──> Signalling <── latest / take / answer / retire ── reconciler
//!        ^                                        │
//!        └──── replies.answer(sdp) / replies.hang_up(why) ───┘
//! ```
//!
//! There is one offer at a time: each new `webrtcbin` offers, replacing the
//! one before. The reconciler publishes an offer at most once ([`take`]); a
//! PeerConnection that is over on Janus's side (hung up, its session gone,
//! unpublished for a newer offer) is [`retire`]d, which tells its pipeline
//! to start over with a new `webrtcbin` (GStreamer 1.22 has no ICE restart).
//!
//! [`take`]: Signalling::take
//! [`retire`]: Signalling::retire

use std::sync::Mutex;

use tokio::sync::Notify;

/// Which offer: unique for the agent's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OfferId(pub u64);

/// Takes Janus's answer (SDP text).
pub type AnswerSink = Box<dyn FnOnce(String) + Send>;
/// Told that the PeerConnection is over on Janus's side, and why.
pub type HangUpSink = Box<dyn FnOnce(&str) + Send>;

/// How an uplink hears back about its offer.
pub struct Replies {
    /// Takes Janus's answer.
    pub answer: AnswerSink,
    /// Told when the PeerConnection is over.
    pub hang_up: HangUpSink,
}

/// The latest offer, as the reconciler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    /// Which one.
    pub id: OfferId,
    /// Whether it was taken for publishing already.
    pub taken: bool,
}

/// The offer in waiting, and where its replies go.
struct Pending {
    id: OfferId,
    /// The SDP, until taken.
    sdp: Option<String>,
    answer: Option<AnswerSink>,
    hang_up: Option<HangUpSink>,
}

#[derive(Default)]
struct Inner {
    issued: u64,
    latest: Option<Pending>,
}

/// Shared by the uplink pipeline and the reconciler.
#[derive(Default)]
pub struct Signalling {
    inner: Mutex<Inner>,
    offered: Notify,
}

impl Signalling {
    /// The uplink offers `sdp` (replacing any offer before); the reconciler
    /// is woken.
    pub fn offer(&self, sdp: String, replies: Replies) -> OfferId {
        let id = self.with(|inner| {
            inner.issued += 1;
            let id = OfferId(inner.issued);
            inner.latest = Some(Pending {
                id,
                sdp: Some(sdp),
                answer: Some(replies.answer),
                hang_up: Some(replies.hang_up),
            });
            id
        });
        self.offered.notify_one();
        id
    }

    /// The uplink's pipeline with offer `id` is gone: its offer goes too
    /// (the reconciler then unpublishes it).
    pub fn withdraw(&self, id: OfferId) {
        let withdrawn = self.with(|inner| {
            let ours = inner.latest.as_ref().is_some_and(|p| p.id == id);
            if ours {
                inner.latest = None;
            }
            ours
        });
        if withdrawn {
            self.offered.notify_one();
        }
    }

    /// The latest offer, if any.
    pub fn latest(&self) -> Option<Latest> {
        self.with(|inner| {
            inner.latest.as_ref().map(|p| Latest {
                id: p.id,
                taken: p.sdp.is_none(),
            })
        })
    }

    /// The SDP of offer `id`, for publishing: once only, and only while it
    /// is the latest.
    pub fn take(&self, id: OfferId) -> Option<String> {
        self.with(|inner| {
            inner
                .latest
                .as_mut()
                .filter(|p| p.id == id)
                .and_then(|p| p.sdp.take())
        })
    }

    /// Hands Janus's answer to offer `id` to its uplink; false when that
    /// offer is no longer the latest (its pipeline is gone).
    pub fn answer(&self, id: OfferId, sdp: String) -> bool {
        let sink = self.with(|inner| {
            inner
                .latest
                .as_mut()
                .filter(|p| p.id == id)
                .and_then(|p| p.answer.take())
        });
        sink.map(|answer| answer(sdp)).is_some()
    }

    /// The PeerConnection of offer `id` is over on Janus's side: its uplink
    /// is told (and starts over), and the offer cannot be published again.
    pub fn retire(&self, id: OfferId, why: &str) {
        let sink = self.with(|inner| match &inner.latest {
            Some(p) if p.id == id => inner.latest.take().and_then(|p| p.hang_up),
            _ => None,
        });
        if let Some(hang_up) = sink {
            hang_up(why);
        }
    }

    /// Waits until an offer is made or withdrawn (a wake-up that came while
    /// nobody waited is kept for the next wait).
    pub async fn changed(&self) {
        self.offered.notified().await;
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic while holding the lock aborts the process (panic = "abort"),
        // so the lock is never poisoned in a running agent.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn replies() -> (Replies, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let hung = tx.clone();
        let replies = Replies {
            answer: Box::new(move |sdp| drop(tx.send(format!("answer {sdp}")))),
            hang_up: Box::new(move |why| drop(hung.send(format!("hang-up {why}")))),
        };
        (replies, rx)
    }

    #[test]
    fn an_offer_is_taken_once_and_answered_to_its_uplink() {
        let signalling = Signalling::default();
        let (replies, heard) = replies();
        let id = signalling.offer("v=0 offer".into(), replies);
        assert_eq!(signalling.latest(), Some(Latest { id, taken: false }));
        assert_eq!(signalling.take(id).as_deref(), Some("v=0 offer"));
        assert_eq!(signalling.take(id), None, "published once only");
        assert_eq!(signalling.latest(), Some(Latest { id, taken: true }));
        assert!(signalling.answer(id, "v=0 answer".into()));
        assert_eq!(heard.try_recv().as_deref(), Ok("answer v=0 answer"));
        signalling.retire(id, "Janus hung up");
        assert_eq!(heard.try_recv().as_deref(), Ok("hang-up Janus hung up"));
        assert_eq!(signalling.latest(), None);
    }

    #[test]
    fn a_newer_offer_replaces_the_old_which_hears_nothing_more() {
        let signalling = Signalling::default();
        let (old_replies, old) = replies();
        let first = signalling.offer("first".into(), old_replies);
        let (new_replies, new) = replies();
        let second = signalling.offer("second".into(), new_replies);
        assert_ne!(first, second);
        assert_eq!(signalling.take(first), None);
        assert!(!signalling.answer(first, "late".into()));
        signalling.retire(first, "old");
        assert!(old.try_recv().is_err());
        signalling.withdraw(first);
        assert_eq!(signalling.latest().map(|l| l.id), Some(second));
        signalling.withdraw(second);
        assert_eq!(signalling.latest(), None);
        assert!(new.try_recv().is_err(), "a withdrawn offer hears nothing");
    }
}
