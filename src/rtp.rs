//! RTP as the agent speaks it: the two media of the mountpoint, the payload
//! types both sides of each stream agree on, and [`SequenceGaps`], which reads
//! the sequence numbers of the packets a pipeline sends or receives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer_rtp::RTPBuffer;
use serde::Serialize;

/// RTP payload type the room's mix is forwarded with (and the speaker expects).
pub const SPEAKER_PAYLOAD_TYPE: u8 = 100;

/// A medium of the mountpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    /// The camera's H.264.
    Video,
    /// The microphone's Opus.
    Audio,
}

impl Medium {
    /// The name Janus's Streaming plugin uses for it (`type` of a media entry).
    pub fn name(self) -> &'static str {
        match self {
            Self::Video => "video",
            Self::Audio => "audio",
        }
    }

    /// Its RTP clock, in ticks per second.
    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Video => 90_000,
            Self::Audio => 48_000,
        }
    }

    /// The payload type the agent sends it with and the mountpoint expects.
    pub fn payload_type(self) -> u8 {
        match self {
            Self::Video => 96,
            Self::Audio => 111,
        }
    }
}

/// Counts RTP packets and the packets missing between them, from their
/// sequence numbers, as they pass a pad. Cheap to clone: clones share counts.
#[derive(Debug, Clone, Default)]
pub struct SequenceGaps {
    inner: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    packets: AtomicU64,
    missing: AtomicU64,
    /// The last sequence number seen, plus one so that 0 means "none yet".
    last: AtomicU64,
}

impl SequenceGaps {
    /// Packets seen.
    pub fn packets(&self) -> u64 {
        self.inner.packets.load(Ordering::Relaxed)
    }

    /// Packets missing between those seen (a sender's gaps, or loss).
    pub fn missing(&self) -> u64 {
        self.inner.missing.load(Ordering::Relaxed)
    }

    /// Records one buffer; anything that is not RTP is ignored.
    pub fn record(&self, buffer: &gst::BufferRef) {
        let Ok(rtp) = RTPBuffer::from_buffer_readable(buffer) else {
            return;
        };
        self.record_seq(rtp.seq());
    }

    /// Counts `seq`; only a step forward moves on, so a late or repeated
    /// packet is no gap. One pad's streaming thread calls it at a time.
    fn record_seq(&self, seq: u16) {
        let counts = &self.inner;
        counts.packets.fetch_add(1, Ordering::Relaxed);
        if let Some(previous) = counts.last.load(Ordering::Relaxed).checked_sub(1) {
            // u16 arithmetic wraps as the sequence numbers do.
            let step = seq.wrapping_sub(previous as u16);
            if step == 0 || step >= 0x8000 {
                return;
            }
            counts
                .missing
                .fetch_add(u64::from(step - 1), Ordering::Relaxed);
        }
        counts.last.store(u64::from(seq) + 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_rtp::prelude::RTPBufferExt;

    #[test]
    fn gaps_are_counted_across_the_wrap() {
        let gaps = SequenceGaps::default();
        for seq in [65_533, 65_534, 1, 2, 2, 1, 5] {
            gaps.record_seq(seq);
        }
        // Missing: 65535 and 0 (wrap), then 3 and 4; the repeat and the
        // step back are not gaps.
        assert_eq!((gaps.packets(), gaps.missing()), (7, 2 + 2));
    }

    #[test]
    fn real_rtp_buffers_are_read() {
        gst::init().expect("GStreamer initialises");
        let gaps = SequenceGaps::default();
        for seq in [10u16, 11, 14] {
            let mut buffer = gst::Buffer::new_rtp_with_sizes(4, 0, 0).expect("allocates");
            {
                let buf = buffer.get_mut().expect("writable");
                let mut rtp = RTPBuffer::from_buffer_writable(buf).expect("rtp");
                rtp.set_seq(seq);
            }
            gaps.record(&buffer);
        }
        gaps.record(&gst::Buffer::from_slice([0u8; 3]));
        assert_eq!((gaps.packets(), gaps.missing()), (3, 2));
    }
}
