//! Reading the RTCP Janus sends about the video: report blocks (loss, round
//! trip) and REMB.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RTCP payload types (RFC 3550, 4585).
const SR: u8 = 200;
const RR: u8 = 201;
const PSFB: u8 = 206;
/// PSFB format of application-layer feedback, where REMB lives.
const AFB: u8 = 15;

/// One report block of a sender or receiver report (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The SSRC the block is about.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 256ths.
    pub fraction_lost: u8,
    /// The middle 32 bits of the NTP time of the last sender report
    /// received from that source (0: none yet).
    pub lsr: u32,
    /// Delay since that sender report, in 65536ths of a second.
    pub dlsr: u32,
}

impl ReportBlock {
    /// The round trip this block shows, if it refers to a sender report:
    /// `now - LSR - DLSR` (RFC 3550 6.4.1), `now` as the NTP time's middle
    /// 32 bits. None for an absurd one (over 10 s, or negative).
    pub fn rtt(&self, now_ntp_middle: u32) -> Option<Duration> {
        if self.lsr == 0 {
            return None;
        }
        let ticks = now_ntp_middle
            .wrapping_sub(self.lsr)
            .wrapping_sub(self.dlsr);
        let rtt = Duration::from_secs_f64(f64::from(ticks) / 65536.0);
        (rtt < Duration::from_secs(10)).then_some(rtt)
    }
}

/// What a compound RTCP packet says about the stream's path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feedback {
    /// Report blocks of sender and receiver reports.
    pub blocks: Vec<ReportBlock>,
    /// The bitrate of a REMB, in bit/s.
    pub remb: Option<u64>,
}

/// The report blocks and REMB in a compound RTCP packet; a malformed
/// part ends the reading.
pub fn parse(mut rtcp: &[u8]) -> Feedback {
    let mut out = Feedback::default();
    while let [first, kind, high, low, ..] = *rtcp {
        let length = 4 * (usize::from(u16::from_be_bytes([high, low])) + 1);
        if first >> 6 != 2 || length > rtcp.len() {
            break;
        }
        let packet = &rtcp[..length];
        let count = usize::from(first & 0x1F);
        match kind {
            SR => out.blocks.extend(blocks(packet.get(28..), count)),
            RR => out.blocks.extend(blocks(packet.get(8..), count)),
            PSFB if count == usize::from(AFB) => out.remb = remb(packet).or(out.remb),
            _ => {}
        }
        rtcp = &rtcp[length..];
    }
    out
}

/// Up to `count` report blocks of 24 bytes from `data`.
fn blocks(data: Option<&[u8]>, count: usize) -> Vec<ReportBlock> {
    let word = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    data.unwrap_or_default()
        .chunks_exact(24)
        .take(count)
        .map(|b| ReportBlock {
            ssrc: word(b, 0),
            fraction_lost: b[4],
            lsr: word(b, 16),
            dlsr: word(b, 20),
        })
        .collect()
}

/// The bitrate of a REMB (draft-alvestrand-rmcat-remb): after the sender
/// and media SSRCs, `REMB`, the SSRC count, a 6-bit exponent and an
/// 18-bit mantissa.
fn remb(packet: &[u8]) -> Option<u64> {
    let fci = packet.get(12..20)?;
    if &fci[..4] != b"REMB" {
        return None;
    }
    let exponent = u32::from(fci[5] >> 2);
    let mantissa = (u64::from(fci[5] & 0x03) << 16) | (u64::from(fci[6]) << 8) | u64::from(fci[7]);
    mantissa.checked_shl(exponent)
}

/// The middle 32 bits of the NTP time now (the wall clock), as LSR holds
/// a sender report's.
pub(super) fn ntp_middle_now() -> u32 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs() + 2_208_988_800;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    ((seconds << 16) as u32) | ((fraction >> 16) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_blocks_and_remb_are_read_from_compound_rtcp() {
        // Janus's receiver report (janus_ice_outgoing_rtcp_handle): sender
        // SSRC, one block about 0x11223344, 25 % lost (64/256), cumulative
        // 7, highest 1000, jitter 5, LSR 0x12345678, DLSR 0x8000 (0.5 s).
        let rr = [
            0x81, 201, 0, 7, 0xAA, 0xBB, 0xCC, 0xDD, 0x11, 0x22, 0x33, 0x44, 64, 0, 0, 7, 0, 0,
            0x03, 0xE8, 0, 0, 0, 5, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x80, 0,
        ];
        // The Streaming plugin's REMB (janus_rtcp_remb, then fix_ssrc with
        // sender 1, media 0 and the source's SSRC): 1 SSRC, 400000 bit/s =
        // mantissa 200000 (0x30D40) << exponent 1.
        let remb = [
            0x8F, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 1, 0x07, 0x0D, 0x40,
            0x11, 0x22, 0x33, 0x44,
        ];
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        let f = parse(&[&rr[..], &pli, &remb].concat());
        assert_eq!(
            f.blocks,
            vec![ReportBlock {
                ssrc: 0x1122_3344,
                fraction_lost: 64,
                lsr: 0x1234_5678,
                dlsr: 0x8000,
            }]
        );
        assert_eq!(f.remb, Some(400_000));
        // The round trip: now = LSR + DLSR + 0.25 s.
        let now = 0x1234_5678u32 + 0x8000 + 0x4000;
        assert_eq!(f.blocks[0].rtt(now), Some(Duration::from_millis(250)));
        assert_eq!(f.blocks[0].rtt(0x1234_5678), None, "negative: none");
        // A sender report's blocks follow its 20 bytes of sender info.
        let mut sr = vec![0x81, 200, 0, 12, 0, 0, 0, 9];
        sr.extend([0u8; 20]);
        sr.extend(&rr[8..]);
        assert_eq!(parse(&sr).blocks.len(), 1);
        // Not a REMB; a length past the end stops the reading.
        let afb = [&remb[..12], b"ABCD", &remb[16..]].concat();
        assert_eq!(parse(&afb).remb, None);
        assert_eq!(parse(&rr[..20]), Feedback::default());
    }

    #[test]
    fn janus_builds_its_remb_as_this_parser_reads_it() {
        // janus_rtcp_remb_ssrcs: the smallest exponent whose mantissa
        // fits 18 bits; 2 000 000 bit/s = 0x3D090 << 3 is 0x7A12 << 6.
        let bitrate: u32 = 2_000_000;
        let exp = (0..32).find(|b| bitrate <= (0x3FFFFu32 << b)).unwrap_or(31);
        let mantissa = bitrate >> exp;
        let mut remb = vec![0x8F, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0];
        remb.extend(b"REMB");
        remb.extend([
            1,
            ((exp << 2) as u8) + ((mantissa >> 16) & 0x03) as u8,
            (mantissa >> 8) as u8,
            mantissa as u8,
        ]);
        remb.extend([0, 0, 0, 7]);
        assert_eq!(parse(&remb).remb, Some(u64::from(mantissa << exp)));
        assert!(2_000_000 - parse(&remb).remb.unwrap_or(0) < 8);
    }
}
