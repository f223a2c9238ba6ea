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
//! start proves complete.

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

/// Where the first frame in a byte stream ends, as far as is known.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The next frame has begun here: the first one is whole.
    Proven(usize),
    /// The first frame ends here if it has been written whole.
    IfWritten(usize),
}

/// The program's bytes, cut into frames.
#[derive(Debug, Default)]
pub struct Splitter {
    pending: Vec<u8>,
    /// Frames the program said it had written.
    announced: u64,
    /// Frames handed on.
    handed: u64,
}

impl Splitter {
    /// Takes bytes read from the program's stdout.
    pub fn bytes(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// Takes the program's word that `frames` more frames are written.
    pub fn announced(&mut self, frames: u64) {
        self.announced += frames;
    }

    /// The next frame, once it is known to be whole.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        let end = match first_frame_end(&self.pending)? {
            End::Proven(end) => end,
            End::IfWritten(end) if self.announced > self.handed => end,
            End::IfWritten(_) => return None,
        };
        self.handed += 1;
        let rest = self.pending.split_off(end);
        Some(std::mem::replace(&mut self.pending, rest))
    }
}

/// Where the first frame (access unit) in `data` ends; None before a
/// picture. A frame ends where a NAL unit that begins the next one starts,
/// by `h264parse`'s rule: after a slice, an SEI, SPS, PPS or delimiter
/// (types 6-9, 14-18), or a slice that starts a picture (its first
/// macroblock 0: the first bit after the header set). A NAL unit too short
/// to tell belongs to the next frame if this one is written whole (no unit
/// of a whole frame is that short), as do zero bytes at the end (a NAL unit
/// never ends in one: they can only start the next start code).
fn first_frame_end(data: &[u8]) -> Option<End> {
    let mut picture = false;
    for (code, header) in start_codes(data) {
        let Some(kind) = data.get(header).map(|b| b & 0x1f) else {
            return picture.then_some(End::IfWritten(code));
        };
        let slice = matches!(kind, 1 | 2 | 5);
        if picture {
            let starts_picture = data.get(header + 1).map(|b| b & 0x80 != 0);
            match starts_picture {
                _ if matches!(kind, 6..=9 | 14..=18) => return Some(End::Proven(code)),
                Some(true) if slice => return Some(End::Proven(code)),
                None if slice => return Some(End::IfWritten(code)),
                _ => {}
            }
        }
        picture |= slice;
    }
    let written = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    picture.then_some(End::IfWritten(written))
}

/// The start codes in `data`: where each begins (with the leading zero of
/// a four-byte one) and where its NAL unit's header is.
fn start_codes(data: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    data.windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0, 0, 1])
        .map(|(i, _)| {
            let code = if i > 0 && data[i - 1] == 0 { i - 1 } else { i };
            (code, i + 3)
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
    fn announcement_lines_are_counted_across_reads() {
        let mut lines = Lines::default();
        assert_eq!(lines.count(b"# timecode format v2\n0.000\n33.3"), 1);
        assert_eq!(lines.count(b"33\n66.666\n"), 2);
        assert_eq!(lines.count(b""), 0);
    }
}
