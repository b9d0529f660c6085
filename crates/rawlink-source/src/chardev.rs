//! A poll()/read() character device such as the reference `/dev/camera`, or a FIFO.
//!
//! The device is opened non-blocking. The source waits with `poll()` for POLLIN and
//! reads until exactly one whole frame is assembled, since reads may be short.
//! POLLHUP, POLLERR or end of file end the stream; a partial frame at that point is
//! discarded with a warning (never delivered half-filled).

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

    #[test]
    fn missing_device_is_a_clear_error() {
        let err =
            CharDevSource::open(Path::new("/nonexistent/camera"), &Default::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/camera"), "{err}");
    }
}
