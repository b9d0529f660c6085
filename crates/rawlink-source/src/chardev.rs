//! A poll()/read() character device such as the reference `/dev/camera`, or a FIFO.
//!
//! The device is opened non-blocking. The source waits with `poll()` for POLLIN and
//! reads until exactly one whole frame is assembled, since reads may be short.
//! POLLHUP, POLLERR or end of file end the stream; a partial frame at that point is
//! discarded with a warning (never delivered half-filled).
//!
//! Every sample must fit in the declared depth (`--bits`). A frame with one that does
//! not is discarded with a warning (a glitch on the device); [`MAX_BAD_IN_A_ROW`] such
//! frames in a row end the stream with the error, since then the depth is wrong.

use crate::{stamp, FrameSource, SourceError, SourceOptions, REFERENCE_BLACK_12};
use bytes::Bytes;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rawlink_frame::{Frame, FrameHeader};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Frames in a row with samples above the depth that end the stream.
pub const MAX_BAD_IN_A_ROW: u32 = 8;

/// Character-device source.
#[derive(Debug)]
pub struct CharDevSource {
    path: PathBuf,
    file: File,
    template: FrameHeader,
    frame_len: usize,
    seq: u64,
    /// Partial frames discarded at hang-up.
    pub discarded_partial: u64,
    /// Frames discarded for samples above the depth.
    pub discarded_out_of_range: u64,
    /// Such frames since the last good one.
    bad_in_a_row: u32,
}

impl CharDevSource {
    /// Opens `path` for non-blocking reads.
    pub fn open(path: &Path, opts: &SourceOptions) -> Result<Self, SourceError> {
        // The reference driver's black level, unless --black-level says otherwise.
        let template = opts.leveled_template(REFERENCE_BLACK_12)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(|error| SourceError::Io {
                path: path.to_path_buf(),
                error,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            template,
            frame_len: template.payload_len() as usize,
            seq: 0,
            discarded_partial: 0,
            discarded_out_of_range: 0,
            bad_in_a_row: 0,
        })
    }

    fn io(&self, error: std::io::Error) -> SourceError {
        SourceError::Io {
            path: self.path.clone(),
            error,
        }
    }
}

impl FrameSource for CharDevSource {
    fn describe(&self) -> String {
        format!(
            "chardev:{} {}x{} {}",
            self.path.display(),
            self.template.width,
            self.template.height,
            self.template.format
        )
    }
    fn stream_header(&self) -> FrameHeader {
        self.template
    }
    fn interval(&self) -> Duration {
        Duration::ZERO
    }
    fn next_frame(&mut self, stop: &AtomicBool) -> Result<Option<Frame>, SourceError> {
        let mut buf = vec![0u8; self.frame_len];
        let mut got = 0usize;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let revents = {
                let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(100u16)) {
                    Ok(0) => continue,
                    Ok(_) => fds[0].revents().unwrap_or(PollFlags::empty()),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(self.io(e.into())),
                }
            };
            if revents.contains(PollFlags::POLLIN) {
                match self.file.read(&mut buf[got..]) {
                    Ok(0) => return Ok(self.hang_up(got, "end of file")),
                    Ok(n) => {
                        got += n;
                        if got == self.frame_len {
                            if !self.in_range(&buf)? {
                                got = 0;
                                continue;
                            }
                            self.seq += 1;
                            let h = stamp(self.template, self.seq);
                            return Ok(Some(Frame::new(h, Bytes::from(buf))?));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.io(e)),
                }
            } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                let why = if revents.contains(PollFlags::POLLERR) {
                    "POLLERR"
                } else {
                    "POLLHUP"
                };
                return Ok(self.hang_up(got, why));
            } else if revents.contains(PollFlags::POLLNVAL) {
                return Err(self.io(std::io::Error::other("poll: POLLNVAL")));
            }
        }
    }
}

impl CharDevSource {
    /// Whether every sample of a whole frame fits in the depth. A frame that does not is
    /// counted and logged (`false`); the [`MAX_BAD_IN_A_ROW`]th in a row is the error.
    fn in_range(&mut self, frame: &[u8]) -> Result<bool, SourceError> {
        let bits = self.template.format.bits;
        let Some((offset, value)) = crate::first_above(frame, self.template.format.max_value())
        else {
            self.bad_in_a_row = 0;
            return Ok(true);
        };
        self.bad_in_a_row += 1;
        self.discarded_out_of_range += 1;
        if self.bad_in_a_row >= MAX_BAD_IN_A_ROW {
            return Err(SourceError::SampleRange {
                path: self.path.clone(),
                value,
                offset,
                bits,
            });
        }
        let n = self.discarded_out_of_range;
        if n <= 3 || n.is_power_of_two() {
            tracing::warn!(
                device = %self.path.display(),
                "frame discarded: sample {value} at byte {offset} does not fit in {bits} bits \
                 ({n} discarded so far; {MAX_BAD_IN_A_ROW} in a row end the stream)"
            );
        }
        Ok(false)
    }

    fn hang_up(&mut self, got: usize, why: &str) -> Option<Frame> {
        if got > 0 {
            self.discarded_partial += 1;
            tracing::warn!(
                device = %self.path.display(),
                "{why}: discarding partial frame ({got} of {} bytes)",
                self.frame_len
            );
        } else {
            tracing::info!(device = %self.path.display(), "{why}: end of stream");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn assembles_frames_from_short_writes_and_ends_on_hangup() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("camera");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let opts = SourceOptions {
            width: 8,
            height: 4,
            ..Default::default()
        };
        let mut src = CharDevSource::open(&fifo, &opts).unwrap();
        let frames: Vec<Vec<u8>> = (0..3u8).map(|k| vec![k + 1; 64]).collect();
        let writer_frames = frames.clone();
        let path = fifo.clone();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            for f in &writer_frames {
                for piece in f.chunks(7) {
                    w.write_all(piece).unwrap();
                    w.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            w.write_all(&[9u8; 10]).unwrap(); // a partial frame, then hang up
        });
        let stop = AtomicBool::new(false);
        for (k, want) in frames.iter().enumerate() {
            let f = src.next_frame(&stop).unwrap().expect("frame");
            assert_eq!(f.header.seq, k as u64 + 1);
            assert_eq!(&f.payload[..], &want[..]);
            // The reference driver's black level (64 at 12 bits), as sim has.
            assert_eq!(f.header.black_level, 64);
        }
        writer.join().unwrap();
        assert!(src.next_frame(&stop).unwrap().is_none());
        assert_eq!(src.discarded_partial, 1);
    }

    /// Writes `frames` into a new FIFO from a thread, then hangs up.
    fn fifo_with(frames: Vec<Vec<u8>>, opts: &SourceOptions) -> (tempfile::TempDir, CharDevSource) {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("camera");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let src = CharDevSource::open(&fifo, opts).unwrap();
        std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            for f in &frames {
                // The reader may stop early (the error test): a broken pipe is expected.
                if w.write_all(f).is_err() {
                    return;
                }
            }
        });
        (dir, src)
    }

    /// A 4×2 frame of 12-bit samples, all `v`, with sample `at` set to `bad`.
    fn frame_12(v: u16, at: usize, bad: u16) -> Vec<u8> {
        let mut s = [v; 8];
        s[at] = bad;
        s.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn frames_with_samples_above_the_depth_are_discarded_then_refused() {
        let opts = SourceOptions {
            width: 4,
            height: 2,
            ..Default::default()
        };
        let stop = AtomicBool::new(false);
        // A glitch: one bad frame between good ones is skipped, the stream goes on.
        let frames = vec![
            frame_12(1, 0, 7),
            frame_12(2, 5, 4096),
            frame_12(3, 0, 4095),
        ];
        let (_d, mut src) = fifo_with(frames, &opts);
        let a = src.next_frame(&stop).unwrap().expect("frame");
        assert_eq!(&a.payload[..2], &7u16.to_le_bytes());
        let b = src.next_frame(&stop).unwrap().expect("frame");
        assert_eq!(
            &b.payload[..2],
            &4095u16.to_le_bytes(),
            "the 4096 frame was skipped"
        );
        assert_eq!(b.header.seq, 2, "sequence numbers stay dense");
        assert_eq!(src.discarded_out_of_range, 1);
        assert!(src.next_frame(&stop).unwrap().is_none());
        // A wrong depth: every frame is bad, and the stream ends with the error.
        let frames = vec![frame_12(9, 3, 5000); MAX_BAD_IN_A_ROW as usize + 2];
        let (_d, mut src) = fifo_with(frames, &opts);
        let err = src.next_frame(&stop).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("sample 5000 at byte 6 does not fit in 12 bits (--bits)"),
            "{msg}"
        );
        assert_eq!(src.discarded_out_of_range, u64::from(MAX_BAD_IN_A_ROW));
    }

    #[test]
    fn first_above_finds_the_first_sample_in_any_block() {
        let mut data = vec![0u8; 3 * 4096 + 10];
        assert_eq!(crate::first_above(&data, 0), None);
        let last = data.len() - 2;
        for at in [0usize, 2, 4094, 4096, 8190, 3 * 4096 + 6] {
            data.fill(0);
            data[at..at + 2].copy_from_slice(&300u16.to_le_bytes());
            data[last..].copy_from_slice(&400u16.to_le_bytes());
            assert_eq!(
                crate::first_above(&data, 255),
                Some((at as u64, 300)),
                "{at}"
            );
            assert_eq!(crate::first_above(&data, 300), Some((last as u64, 400)));
            assert_eq!(crate::first_above(&data, 400), None);
        }
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let err =
            CharDevSource::open(Path::new("/nonexistent/camera"), &Default::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/camera"), "{err}");
    }
}
