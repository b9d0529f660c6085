//! Replay of headerless `.raw` files (little-endian `u16`, `W*H` samples each).

use crate::{stamp, FrameSource, Pacer, SourceError, SourceOptions};
use bytes::Bytes;
use rawlink_frame::{Frame, FrameHeader};
use std::path::PathBuf;
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
        let template = opts.header_template()?;
        let mut files: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|e| SourceError::BadOptions(format!("bad glob {pattern:?}: {e}")))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(SourceError::NoFiles(pattern.to_string()));
        }
        let interval = Duration::from_millis(opts.interval_ms);
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
        let data = std::fs::read(path).map_err(|error| SourceError::Io {
            path: path.clone(),
            error,
        })?;
        let expected = self.template.payload_len();
        if data.len() as u64 != expected {
            return Err(SourceError::FileSize {
                path: path.clone(),
                actual: data.len() as u64,
                expected,
                width: self.template.width,
                height: self.template.height,
            });
        }
        self.seq += 1;
        Ok(Some(Frame::new(
            stamp(self.template, self.seq),
            Bytes::from(data),
        )?))
    }
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
        std::fs::write(dir.path().join("z.raw"), vec![0u8; 5]).unwrap();
        let opts = SourceOptions {
            width: 4,
            height: 2,
            interval_ms: 0,
            ..Default::default()
        };
        let glob = format!("{}/*.raw", dir.path().display());
        let mut src = FileSource::new(&glob, &opts).unwrap();
        let stop = AtomicBool::new(false);
        for want in 1..=3u8 {
            let f = src.next_frame(&stop).unwrap().unwrap();
            assert_eq!(f.payload[0], want);
        }
        let err = src.next_frame(&stop).unwrap_err();
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
}
