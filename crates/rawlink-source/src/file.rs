//! Replay of headerless `.raw` files (little-endian `u16`, `W*H` samples each).

use crate::{stamp, FrameSource, Pacer, SourceError, SourceOptions, REFERENCE_BLACK_12};
use bytes::Bytes;
use rawlink_frame::{Frame, FrameHeader};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// File replay source. Files are replayed in name order.
#[derive(Debug)]
pub struct FileSource {
    pattern: String,
    files: Vec<PathBuf>,
    next: usize,
    looped: bool,
    template: FrameHeader,
    pacer: Pacer,
    interval: Duration,
    seq: u64,
}

impl FileSource {
    /// Expands `pattern` and checks that it matches at least one file.
    pub fn new(pattern: &str, opts: &SourceOptions) -> Result<Self, SourceError> {
        // The reference driver's black level, unless --black-level says otherwise.
        let template = opts.leveled_template(REFERENCE_BLACK_12)?;
        let mut files: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|e| SourceError::BadOptions(format!("bad glob {pattern:?}: {e}")))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(SourceError::NoFiles(pattern.to_string()));
        }
        // Every file's size is checked now, so a wrong one fails at start rather than
        // in the middle of a replay (and before anything is read into memory).
        for path in &files {
            let actual = std::fs::metadata(path)
                .map_err(|error| SourceError::Io {
                    path: path.clone(),
                    error,
                })?
                .len();
            check_size(path, actual, &template)?;
        }
        let interval = opts.interval;
        Ok(Self {
            pattern: pattern.to_string(),
            files,
            next: 0,
            looped: opts.looped,
            template,
            pacer: Pacer::new(interval),
            interval,
            seq: 0,
        })
    }

    /// The files that will be replayed.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl FrameSource for FileSource {
    fn describe(&self) -> String {
        format!(
            "file:{} ({} files) {}x{} {}",
            self.pattern,
            self.files.len(),
            self.template.width,
            self.template.height,
            self.template.format
        )
    }
    fn stream_header(&self) -> FrameHeader {
        self.template
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    fn is_live(&self) -> bool {
        false
    }
    fn next_frame(&mut self, stop: &AtomicBool) -> Result<Option<Frame>, SourceError> {
        if self.next == self.files.len() {
            if !self.looped {
                return Ok(None);
            }
            self.next = 0;
        }
        if !self.pacer.wait(stop) {
            return Ok(None);
        }
        let path = &self.files[self.next];
        self.next += 1;
        let data = read_frame_file(path, &self.template)?;
        self.seq += 1;
        Ok(Some(Frame::new(
            stamp(self.template, self.seq),
            Bytes::from(data),
        )?))
    }
}

/// Refuses a file of other than the frame's size.
fn check_size(path: &Path, actual: u64, template: &FrameHeader) -> Result<(), SourceError> {
    let expected = template.payload_len();
    if actual != expected {
        return Err(SourceError::FileSize {
            path: path.to_path_buf(),
            actual,
            expected,
            width: template.width,
            height: template.height,
        });
    }
    Ok(())
}

/// Reads one frame file: its size is checked before reading (it may have changed since
/// the start), at most one byte more than a frame is read whatever the file is, and
/// every sample must fit in the declared depth.
fn read_frame_file(path: &Path, template: &FrameHeader) -> Result<Vec<u8>, SourceError> {
    let io = |error| SourceError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_file() {
        check_size(path, meta.len(), template)?;
    }
    let expected = template.payload_len();
    let mut data = Vec::with_capacity(expected as usize);
    file.take(expected + 1).read_to_end(&mut data).map_err(io)?;
    check_size(path, data.len() as u64, template)?;
    let bits = template.format.bits;
    let max = template.format.max_value();
    if let Some((offset, value)) = crate::first_above(&data, max) {
        return Err(SourceError::SampleRange {
            path: path.to_path_buf(),
            value,
            offset,
            bits,
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_in_name_order_and_checks_size() {
        let dir = tempfile::tempdir().unwrap();
        for (name, v) in [("b.raw", 2u8), ("a.raw", 1), ("c.raw", 3)] {
            std::fs::write(dir.path().join(name), vec![v; 2 * 4 * 2]).unwrap();
        }
        let opts = SourceOptions {
            width: 4,
            height: 2,
            interval: Duration::ZERO,
            ..Default::default()
        };
        let glob = format!("{}/*.raw", dir.path().display());
        let mut src = FileSource::new(&glob, &opts).unwrap();
        let stop = AtomicBool::new(false);
        for want in 1..=3u8 {
            let f = src.next_frame(&stop).unwrap().unwrap();
            assert_eq!(f.payload[0], want);
            // The reference driver's black level, as sim has.
            assert_eq!(f.header.black_level, 64);
        }
        // A file of the wrong size anywhere in the glob fails at start.
        std::fs::write(dir.path().join("z.raw"), vec![0u8; 5]).unwrap();
        let err = FileSource::new(&glob, &opts).unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::FileSize {
                    actual: 5,
                    expected: 16,
                    ..
                }
            ),
            "{err}"
        );
        assert!(FileSource::new(&format!("{}/*.none", dir.path().display()), &opts).is_err());
    }

    #[test]
    fn a_huge_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("a.raw")).unwrap();
        // Sparse: 1 GiB that would be read into memory if the size were checked after.
        f.set_len(1 << 30).unwrap();
        let opts = SourceOptions {
            width: 4,
            height: 2,
            ..Default::default()
        };
        let err = FileSource::new(&format!("{}/a.raw", dir.path().display()), &opts).unwrap_err();
        assert!(
            matches!(err, SourceError::FileSize { actual, expected: 16, .. } if actual == 1 << 30),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_grew_after_the_start_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.raw");
        std::fs::write(&path, [0u8; 16]).unwrap();
        let opts = SourceOptions {
            width: 4,
            height: 2,
            interval: Duration::ZERO,
            ..Default::default()
        };
        let mut src = FileSource::new(&format!("{}", path.display()), &opts).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let err = src.next_frame(&AtomicBool::new(false)).unwrap_err();
        assert!(matches!(err, SourceError::FileSize { .. }), "{err}");
        // Whatever the file is (a device such as /dev/zero), at most a frame and a byte
        // are read.
        let h = opts.header_template().unwrap();
        let err = read_frame_file(Path::new("/dev/zero"), &h).unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::FileSize {
                    actual: 17,
                    expected: 16,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn samples_above_the_depth_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 16];
        data[6..8].copy_from_slice(&4096u16.to_le_bytes());
        std::fs::write(dir.path().join("a.raw"), &data).unwrap();
        let opts = SourceOptions {
            width: 4,
            height: 2,
            bits: 12,
            interval: Duration::ZERO,
            ..Default::default()
        };
        let mut src = FileSource::new(&format!("{}/a.raw", dir.path().display()), &opts).unwrap();
        let err = src.next_frame(&AtomicBool::new(false)).unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::SampleRange {
                    value: 4096,
                    offset: 6,
                    bits: 12,
                    ..
                }
            ),
            "{err}"
        );
        let opts16 = SourceOptions { bits: 16, ..opts };
        let mut src = FileSource::new(&format!("{}/a.raw", dir.path().display()), &opts16).unwrap();
        assert!(src.next_frame(&AtomicBool::new(false)).unwrap().is_some());
    }

    #[test]
    fn levels_can_be_overridden_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.raw"), [0u8; 16]).unwrap();
        let glob = format!("{}/a.raw", dir.path().display());
        let opts = SourceOptions {
            width: 4,
            height: 2,
            bits: 10,
            black_level: Some(32),
            white_level: Some(1000),
            ..Default::default()
        };
        let src = FileSource::new(&glob, &opts).unwrap();
        let h = src.stream_header();
        assert_eq!((h.black_level, h.white_level), (32, 1000));
        // Default: 64 at 12 bits scaled to 10 bits.
        let src = FileSource::new(
            &glob,
            &SourceOptions {
                black_level: None,
                white_level: None,
                ..opts.clone()
            },
        )
        .unwrap();
        assert_eq!(src.stream_header().black_level, 16);
        for (b, w) in [
            (Some(1000), Some(1000)),
            (None, Some(1024)),
            (Some(2000), None),
        ] {
            let o = SourceOptions {
                black_level: b,
                white_level: w,
                ..opts.clone()
            };
            let err = FileSource::new(&glob, &o).unwrap_err();
            assert!(
                matches!(err, SourceError::BadOptions(_)),
                "{b:?} {w:?}: {err}"
            );
        }
    }
}
