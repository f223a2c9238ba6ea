//! Whole frames from a camera program's pipe, handed on as soon as written.
//!
//! A camera program writes H.264 as a byte stream, where a frame's end shows
//! only as the next frame's start: one frame interval later (33 ms at 30
//! fps), which is how long `h264parse` alone holds every frame. `rpicam-vid`
//! with the hardware encoder can say when a frame is whole: with
//! `--save-pts FILE` it writes a line to FILE after each frame it wrote (and
//! flushed, with `--flush`; rpicam-apps `output/output.cpp`). The agent
//! gives the program a pipe as its stdin and FILE = [`ANNOUNCEMENTS`]
//! (opened for writing, a pipe reached through `/proc` is the pipe itself),
//! reads the lines next to the video and hands each frame on whole, as one
//! buffer (`alignment=au`, which `h264parse` passes on at once).
//!
//! Without the lines (raspivid; libav on a Pi 5, which refuses `--save-pts`
//! with `-o -`), or when one is late, a frame leaves when the next one
//! starts, as with `h264parse` alone. A frame is never cut: bytes leave only
//! up to the end of a frame that was announced or that the next frame's
//! start proves complete. A line for a buffer without a picture (an empty
//! one) stops counting once all that was read has left; only read together
//! with the next frame's first bytes does it let that frame leave half-read,
//! and the rest of that frame is dropped, so that no other frame suffers.
//! Output in which no frame ends is dropped beyond `MAX_PENDING` bytes
//! rather than kept.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::{ChildStdout, Stdio};
use std::thread;

use gstreamer as gst;
use gstreamer_app as gst_app;

/// Where the camera program writes a line per frame: the pipe the agent
/// gives it as stdin.
pub const ANNOUNCEMENTS: &str = "/dev/stdin";

/// How long one wait for the program's output lasts before it is renewed.
const POLL_MS: i32 = 1000;

/// How much of the program's output may wait for a frame's end: 8 times
/// the largest frame the Pi's hardware encoder writes (rpicam-apps gives it
/// capture buffers of 512 KiB, `encoder/h264_encoder.cpp`). Beyond it the
/// output has no frame boundary: it is dropped, and the bytes after it up
/// to the next start code.
const MAX_PENDING: usize = 4 << 20;

/// Where the first frame in a byte stream ends, as far as is known.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The next frame has begun here: the first one is whole.
    Proven(usize),
    /// The first frame ends here if it has been written whole.
    IfWritten(usize),
}

/// The program's bytes, cut into frames.
///
/// A frame leaves when the next one begins, or when the program announced
/// more frames than were handed on. The count is resynchronised when no
/// picture waits (see [`Splitter::announced`]): a line for a buffer without
/// a picture would otherwise keep it ahead for good, and every frame caught
/// half-read would leave as whole.
#[derive(Debug, Default)]
pub struct Splitter {
    /// Bytes read and not yet handed on: from a start code (or zeros that
    /// may begin one).
    pending: Vec<u8>,
    /// How far `pending` was searched for its first frame's end.
    scan: Scan,
    /// Frames the program said it had written.
    announced: u64,
    /// Frames handed on.
    handed: u64,
    /// Bytes were dropped since a frame last left (logged once).
    lost: bool,
}

impl Splitter {
    /// Takes bytes read from the program's stdout.
    pub fn bytes(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        if !starts_with_start_code(&self.pending) {
            // Only after a frame was cut (dropped, or it left half-read):
            // up to the next start code, the bytes are of no whole frame.
            self.skip_to_start_code();
        }
        if self.pending.len() > MAX_PENDING {
            self.drop_pending();
        }
    }

    /// Takes the program's word that `frames` more frames are written.
    ///
    /// A frame's line follows its bytes: call this once all that was
    /// written before the lines has been given to [`Splitter::bytes`]. Then
    /// each announced frame not yet handed on has its picture pending, and
    /// when none is, lines in excess were of buffers without one:
    /// `rpicam-vid` writes its `--save-pts` line even for an empty buffer
    /// (rpicam-apps `output/output.cpp`, `Output::OutputReady`, writes the
    /// line after `outputBuffer`, which in `output/file_output.cpp`,
    /// `FileOutput::outputBuffer`, writes only `if (fp_ && size)`).
    pub fn announced(&mut self, frames: u64) {
        self.announced += frames;
    }

    /// The next frame, once it is known to be whole.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        let Some(end) = first_frame_end(&self.pending, &mut self.scan) else {
            // No picture waits: lines in excess were of buffers without one.
            self.announced = self.announced.min(self.handed);
            return None;
        };
        let end = match end {
            End::Proven(end) => end,
            End::IfWritten(end) if self.announced > self.handed => end,
            End::IfWritten(_) => return None,
        };
        self.handed += 1;
        self.scan = Scan::default();
        self.lost = false;
        let rest = self.pending.split_off(end);
        Some(std::mem::replace(&mut self.pending, rest))
    }

    /// Drops what waits (no frame ended in it), but for zeros that may
    /// begin a start code; what follows goes too, up to a start code.
    fn drop_pending(&mut self) {
        let dropped = self.pending.len() - trailing_zeros(&self.pending);
        if self.lost {
            log::debug!("video: dropped {dropped} more bytes of the camera program's output");
        } else {
            log::warn!(
                "video: no frame ended in {dropped} bytes of the camera program's output: \
                 dropped them"
            );
        }
        self.pending.drain(..dropped);
        self.scan = Scan::default();
        self.lost = true;
    }

    /// Drops the bytes before the first start code pending, keeping the
    /// zeros at the end if there is none (they may begin one).
    fn skip_to_start_code(&mut self) {
        let at = start_codes(&self.pending, 0)
            .next()
            .map(|(_, code, _)| code);
        let at = at.unwrap_or(self.pending.len() - trailing_zeros(&self.pending));
        self.pending.drain(..at);
        self.scan = Scan::default();
    }
}

/// How many of the last three bytes of `data` are zeros that may begin a
/// start code.
fn trailing_zeros(data: &[u8]) -> usize {
    data.iter().rev().take(3).take_while(|&&b| b == 0).count()
}

/// Whether `data` begins with a three- or four-byte start code.
fn starts_with_start_code(data: &[u8]) -> bool {
    data.starts_with(&[0, 0, 1]) || data.starts_with(&[0, 0, 0, 1])
}

/// How far a byte stream was searched for its first frame's end: each read
/// searches only what is new (and the start codes it completes).
#[derive(Debug, Default)]
struct Scan {
    /// Where the next start code to look at may begin (its `0, 0, 1`).
    from: usize,
    /// Whether a slice was found before `from`.
    picture: bool,
}

/// Where the first frame (access unit) in `data` ends; None before a
/// picture. A frame ends where a NAL unit that begins the next one starts,
/// by `h264parse`'s rule: after a slice, an SEI, SPS, PPS or delimiter
/// (types 6-9, 14-18), or a slice that starts a picture (its first
/// macroblock 0: the first bit after the header set). A NAL unit too short
/// to tell belongs to the next frame if this one is written whole (no unit
/// of a whole frame is that short), as do zero bytes at the end (a NAL unit
/// never ends in one: they can only start the next start code).
///
/// The search starts where `scan` says the last one stopped, and `scan`
/// is left where this one did; it belongs to `data` until the frame leaves.
fn first_frame_end(data: &[u8], scan: &mut Scan) -> Option<End> {
    for (at, code, header) in start_codes(data, scan.from) {
        scan.from = at;
        let Some(kind) = data.get(header).map(|b| b & 0x1f) else {
            return scan.picture.then_some(End::IfWritten(code));
        };
        let slice = matches!(kind, 1 | 2 | 5);
        if scan.picture {
            let starts_picture = data.get(header + 1).map(|b| b & 0x80 != 0);
            match starts_picture {
                _ if matches!(kind, 6..=9 | 14..=18) => return Some(End::Proven(code)),
                Some(true) if slice => return Some(End::Proven(code)),
                None if slice => return Some(End::IfWritten(code)),
                _ => {}
            }
        }
        scan.picture |= slice;
    }
    // The next start code can begin no earlier than two bytes from the end.
    scan.from = scan.from.max(data.len().saturating_sub(2));
    let written = || data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    scan.picture.then(|| End::IfWritten(written()))
}

/// The start codes in `data` whose `0, 0, 1` begins at `from` or later:
/// where that is, where the code begins (with the leading zero of a
/// four-byte one) and where its NAL unit's header is.
fn start_codes(data: &[u8], from: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    data.get(from..)
        .unwrap_or_default()
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0, 0, 1])
        .map(move |(i, _)| {
            let at = from + i;
            let code = if at > 0 && data[at - 1] == 0 {
                at - 1
            } else {
                at
            };
            (at, code, at + 3)
        })
}

/// The pipe the camera program announces its frames on.
#[derive(Debug)]
pub struct Announcements {
    lines: File,
    /// Held so that the pipe does not read as ended before the program
    /// has opened it.
    _open: OwnedFd,
}

impl Announcements {
    /// A new pipe, and the program's stdin to give it.
    pub fn pipe() -> io::Result<(Self, Stdio)> {
        let mut fds = [-1; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2(2) writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are new descriptors, owned by nothing else.
        let (lines, open) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let stdin = Stdio::from(lines.try_clone()?);
        let lines = File::from(lines);
        Ok((Self { lines, _open: open }, stdin))
    }
}

/// Reads the program's stdout and its announcements on a thread of its own
/// and pushes each whole frame into `src`, until the program's output ends
/// (then end of stream) or the pipeline no longer takes buffers.
pub fn spawn(
    video: ChildStdout,
    announcements: Option<Announcements>,
    src: gst_app::AppSrc,
) -> io::Result<()> {
    thread::Builder::new()
        .name("camera-frames".into())
        .spawn(move || {
            if let Err(e) = read_frames(video, announcements, &src) {
                log::warn!("video: reading the camera program: {e}");
            }
            let _ = src.end_of_stream();
        })
        .map(drop)
}

fn read_frames(
    mut video: ChildStdout,
    mut announcements: Option<Announcements>,
    src: &gst_app::AppSrc,
) -> io::Result<()> {
    let mut splitter = Splitter::default();
    let mut lines = Lines::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let lines_fd = announcements.as_ref().map(|a| a.lines.as_fd());
        let [_, announced] = wait(video.as_fd(), lines_fd, POLL_MS)?;
        if announced {
            if let Some(pipe) = announcements.as_mut() {
                match pipe.lines.read(&mut buf)? {
                    0 => announcements = None,
                    n => splitter.announced(lines.count(&buf[..n])),
                }
            }
        }
        // An announced frame's bytes were written before its line: read
        // all the pipe holds now, so they are all in.
        while wait(video.as_fd(), None, 0)?[0] {
            match video.read(&mut buf)? {
                0 => return Ok(()),
                n => splitter.bytes(&buf[..n]),
            }
        }
        while let Some(frame) = splitter.next_frame() {
            if src.push_buffer(gst::Buffer::from_mut_slice(frame)).is_err() {
                return Ok(());
            }
        }
    }
}

/// Whether `video` and `announcements` have something to read (or have
/// ended), waiting up to `timeout_ms`.
fn wait(
    video: BorrowedFd<'_>,
    announcements: Option<BorrowedFd<'_>>,
    timeout_ms: i32,
) -> io::Result<[bool; 2]> {
    let watch = |fd: i32| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [
        watch(video.as_raw_fd()),
        watch(announcements.map_or(-1, |p| p.as_raw_fd())),
    ];
    // SAFETY: `fds` is a valid array of two pollfd for the call's duration;
    // a negative fd is ignored by poll(2).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    match n {
        -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Ok([false; 2]),
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(fds.map(|p| p.revents != 0)),
    }
}

/// Counts the announcement lines (`--save-pts`: a header line starting with
/// `#`, then one time stamp per frame) in text read in pieces.
#[derive(Debug, Default)]
struct Lines {
    /// The line begun but not yet ended.
    partial: Vec<u8>,
}

impl Lines {
    fn count(&mut self, data: &[u8]) -> u64 {
        let mut frames = 0;
        for &b in data {
            if b != b'\n' {
                self.partial.push(b);
                continue;
            }
            if self.partial.first().is_some_and(u8::is_ascii_digit) {
                frames += 1;
            }
            self.partial.clear();
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0x8c];
    const PPS: &[u8] = &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x21, 0x7f];
    const P: &[u8] = &[0, 0, 0, 1, 0x41, 0x9a, 0x02, 0x04, 0x13];
    /// A second slice of the same picture: first macroblock not 0.
    const P_SLICE_2: &[u8] = &[0, 0, 1, 0x41, 0x4d, 0x10, 0x27];

    fn keyframe() -> Vec<u8> {
        [SPS, PPS, IDR].concat()
    }

    fn splitter(data: &[u8]) -> Splitter {
        let mut s = Splitter::default();
        s.bytes(data);
        s
    }

    #[test]
    fn a_frame_leaves_when_announced() {
        let mut s = splitter(&keyframe());
        assert_eq!(s.next_frame(), None, "not yet announced");
        s.announced(1);
        assert_eq!(s.next_frame(), Some(keyframe()));
        assert_eq!(s.next_frame(), None);
    }

    #[test]
    fn the_next_frame_s_start_proves_a_frame_whole() {
        let mut s = splitter(&[keyframe().as_slice(), P, &P[..6]].concat());
        assert_eq!(s.next_frame(), Some(keyframe()));
        assert_eq!(s.next_frame(), Some(P.to_vec()));
        assert_eq!(s.next_frame(), None, "the third frame may go on");
    }

    #[test]
    fn frames_of_several_slices_stay_whole() {
        let two_slices = [P, P_SLICE_2].concat();
        let mut s = splitter(&[two_slices.as_slice(), P].concat());
        assert_eq!(s.next_frame(), Some(two_slices));
    }

    #[test]
    fn an_announcement_read_before_the_next_frame_s_bytes_cuts_nothing() {
        // Frame 1 was announced, frame 2 has begun: 2's bytes stay.
        let mut s = splitter(&[keyframe().as_slice(), &P[..5]].concat());
        s.announced(1);
        assert_eq!(s.next_frame(), Some(keyframe()));
        assert_eq!(s.pending, P[..5]);
        assert_eq!(s.next_frame(), None, "frame 2 is not announced");
    }

    #[test]
    fn a_frame_handed_on_early_is_not_counted_twice() {
        // Frame 1 left when frame 2 began, before its own line was read.
        let mut s = splitter(&[keyframe().as_slice(), &P[..7]].concat());
        assert_eq!(s.next_frame(), Some(keyframe()));
        s.announced(1);
        assert_eq!(s.next_frame(), None, "frame 2 is not whole");
        s.bytes(&P[7..]);
        s.announced(1);
        assert_eq!(s.next_frame(), Some(P.to_vec()));
    }

    #[test]
    fn a_start_code_split_between_reads_stays_with_its_frame() {
        for cut in 1..=5 {
            let mut s = splitter(&[keyframe().as_slice(), &P[..cut]].concat());
            s.announced(1);
            assert_eq!(s.next_frame(), Some(keyframe()), "cut after {cut} bytes");
            s.bytes(&P[cut..]);
            s.announced(1);
            assert_eq!(s.next_frame(), Some(P.to_vec()), "cut after {cut} bytes");
        }
    }

    #[test]
    fn nothing_leaves_before_a_picture() {
        let mut s = splitter(&[SPS, PPS].concat());
        s.announced(1);
        assert_eq!(s.next_frame(), None);
    }

    #[test]
    fn a_line_for_an_empty_buffer_lets_no_half_frame_go() {
        // The keyframe's line and an empty buffer's, read together or apart.
        for lines in [&[2][..], &[1, 1]] {
            let mut s = splitter(&keyframe());
            for (i, &n) in lines.iter().enumerate() {
                s.announced(n);
                assert_eq!(s.next_frame(), Some(keyframe()).filter(|_| i == 0));
                assert_eq!(s.next_frame(), None);
            }
            s.bytes(&P[..6]);
            assert_eq!(s.next_frame(), None, "half a frame, after {lines:?}");
            s.bytes(&P[6..]);
            s.announced(1);
            assert_eq!(s.next_frame(), Some(P.to_vec()));
        }
    }

    #[test]
    fn a_frame_cut_costs_no_other() {
        // The empty buffer's line comes with the next frame's first bytes:
        // the count cannot tell, and that frame leaves half-read.
        let mut s = splitter(&[keyframe().as_slice(), &P[..6]].concat());
        s.announced(2);
        assert_eq!(s.next_frame(), Some(keyframe()));
        assert_eq!(s.next_frame(), Some(P[..6].to_vec()));
        // Its tail goes nowhere, and the next frame leaves whole.
        s.bytes(&P[6..]);
        s.announced(1);
        assert_eq!(s.next_frame(), None);
        s.bytes(&P[..6]);
        assert_eq!(s.next_frame(), None, "half a frame");
        s.bytes(&P[6..]);
        s.announced(1);
        assert_eq!(s.next_frame(), Some(P.to_vec()));
    }

    #[test]
    fn a_line_for_parameter_sets_alone_lets_no_half_frame_go() {
        let mut s = splitter(&[SPS, PPS].concat());
        s.announced(1);
        assert_eq!(s.next_frame(), None);
        s.bytes(&IDR[..6]);
        assert_eq!(s.next_frame(), None, "half a picture");
        s.bytes(&IDR[6..]);
        s.announced(1);
        assert_eq!(s.next_frame(), Some(keyframe()));
    }

    /// A slice that never ends: a start code, then `len` bytes without one.
    fn endless_slice(len: usize) -> Vec<u8> {
        let mut data = P.to_vec();
        data.resize(len, 0x5a);
        data
    }

    #[test]
    fn each_read_is_searched_once() {
        let mut s = Splitter::default();
        let data = endless_slice(1 << 20);
        for (i, read) in data.chunks(4096).enumerate() {
            s.bytes(read);
            assert_eq!(s.next_frame(), None);
            let read = (i + 1) * 4096;
            assert_eq!(s.scan.from, read - 2, "the next search begins near the end");
        }
        // Searches resumed wherever a read ends find the frames one would.
        let frames = [keyframe(), [P, P_SLICE_2].concat(), P.to_vec(), keyframe()];
        let stream = [frames.concat().as_slice(), P].concat();
        for size in 1..=9 {
            let mut s = Splitter::default();
            let mut out = Vec::new();
            for read in stream.chunks(size) {
                s.bytes(read);
                out.extend(std::iter::from_fn(|| s.next_frame()));
            }
            assert_eq!(out, frames, "reads of {size} bytes");
        }
    }

    #[test]
    fn a_stream_without_a_frame_boundary_stays_bounded() {
        let mut s = Splitter::default();
        // A slice that never ends, then bytes without a start code at all.
        let endless = endless_slice(3 * MAX_PENDING / 2);
        let noise = vec![0x5a; MAX_PENDING + 1];
        for read in endless.chunks(65536).chain(noise.chunks(65536)) {
            s.bytes(read);
            assert!(
                s.pending.len() <= MAX_PENDING,
                "{} bytes wait",
                s.pending.len()
            );
            assert_eq!(s.next_frame(), None);
        }
        // The next frame leaves whole, without the noise before it.
        s.bytes(&[&P[4..], keyframe().as_slice(), P].concat());
        assert_eq!(s.next_frame(), Some(keyframe()));
        assert_eq!(s.next_frame(), None, "P is not announced");
    }

    /// Time per read of `stream` in `read`-byte pieces, with a line for
    /// each frame that ends (at one of `ends`) in the read (the median of
    /// 11 runs).
    fn time_per_read(stream: &[u8], read: usize, ends: &[usize]) -> std::time::Duration {
        let mut times: Vec<_> = (0..11)
            .map(|_| {
                let mut s = Splitter::default();
                let start = std::time::Instant::now();
                for (i, piece) in stream.chunks(read).enumerate() {
                    s.bytes(piece);
                    let done = i * read..i * read + piece.len();
                    s.announced(ends.iter().filter(|&&e| done.contains(&(e - 1))).count() as u64);
                    while let Some(frame) = s.next_frame() {
                        std::hint::black_box(frame);
                    }
                }
                start.elapsed() / stream.len().div_ceil(read) as u32
            })
            .collect();
        times.sort();
        times[5]
    }

    /// What the splitter costs per read (`cargo test --release --bin
    /// broadcast-agent splitter_cost_per_read -- --ignored --nocapture`):
    /// docs/measurements/frame-splitter.md.
    #[test]
    #[ignore = "a benchmark: prints the time a read takes"]
    fn splitter_cost_per_read() {
        // 300 frames of 20 kB (5 Mbit/s at 30 fps), read 4 kB at a time,
        // each announced when its last byte is read.
        let frame = endless_slice(20_000);
        let stream = frame.repeat(300);
        let ends: Vec<usize> = (1..=300).map(|i| i * frame.len()).collect();
        println!(
            "frames of 20 kB, 4 kB reads: {:?} a read",
            time_per_read(&stream, 4096, &ends)
        );
        // 4 MB without a frame boundary, read 64 kB at a time.
        let endless = endless_slice(MAX_PENDING - 65536);
        println!(
            "4 MB without a boundary, 64 kB reads: {:?} a read",
            time_per_read(&endless, 65536, &[])
        );
    }

    #[test]
    fn announcement_lines_are_counted_across_reads() {
        let mut lines = Lines::default();
        assert_eq!(lines.count(b"# timecode format v2\n0.000\n33.3"), 1);
        assert_eq!(lines.count(b"33\n66.666\n"), 2);
        assert_eq!(lines.count(b""), 0);
    }
}
