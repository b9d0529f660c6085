//! The reference driver's test pattern.

use crate::{stamp, FrameSource, Pacer, SourceError, SourceOptions};
use bytes::Bytes;
use rawlink_frame::{Frame, FrameHeader};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Sample of frame `n` (1-based) at (`row`, `col`) for a `bits`-deep sensor.
///
/// At 12 bits this is exactly the reference driver: `((i + j + n*10) * 16) % 4096`.
/// Other depths scale the same ramp: `((i + j + 10n) << (bits - 8)) mod 2^bits`.
pub fn driver_sample(n: u64, row: u64, col: u64, bits: u8) -> u16 {
    let ramp = row.wrapping_add(col).wrapping_add(n.wrapping_mul(10));
    let mask = (1u64 << bits) - 1;
    ((ramp << (bits - 8)) & mask) as u16
}

/// Simulated sensor reproducing the reference `/dev/camera` driver.
#[derive(Debug)]
pub struct SimSource {
    template: FrameHeader,
    pacer: Pacer,
    interval: Duration,
    seq: u64,
    /// Every frame the driver can make, as one buffer (built on the first frame); each
    /// frame is a zero-copy slice of it. See [`SimSource::frames_buffer`].
    all_frames: Option<Bytes>,
    /// The CRC32C of each distinct frame, by its first row in [`SimSource::frames_buffer`]
    /// (the frames repeat, so each CRC is computed once, not once per frame).
    crcs: Vec<Option<u32>>,
}

/// The driver's ramp repeats every 256 steps at every bit depth: the value is
/// `(k << (bits - 8)) mod 2^bits`, which depends on `k mod 256` only.
const RAMP_PERIOD: usize = 256;

impl SimSource {
    /// A sim source with the given geometry and pacing.
    pub fn new(opts: &SourceOptions) -> Result<Self, SourceError> {
        // The reference ISP assumes a black level of 64 at 12 bits.
        let mut template = opts.leveled_template(crate::REFERENCE_BLACK_12)?;
        template.exposure_us = 10_000;
        let interval = opts.interval;
        Ok(Self {
            template,
            pacer: Pacer::new(interval),
            interval,
            seq: 0,
            all_frames: None,
            crcs: vec![None; RAMP_PERIOD],
        })
    }

    /// Renders frame `n` without pacing or timestamps: the formula of
    /// [`driver_sample`] written row by row (row `i` is the ramp from step `i + 10n`).
    /// Streaming uses `SimSource::frames_buffer` (private); this is the independent
    /// formulation its tests compare against.
    pub fn render(&self, n: u64) -> Vec<u8> {
        let (w, h) = (self.template.width as usize, self.template.height as usize);
        let ramp = self.ramp(n.wrapping_mul(10), w + h);
        let mut out = Vec::with_capacity(w * h * 2);
        for i in 0..h {
            out.extend_from_slice(&ramp[2 * i..2 * (i + w)]);
        }
        out
    }

    /// `len` samples of the driver's ramp from step `start`, little-endian:
    /// `((start + k) << (bits - 8)) mod 2^bits`, in u16 arithmetic (2^16 is a multiple of
    /// the ramp's period, so wrapping changes nothing).
    fn ramp(&self, start: u64, len: usize) -> Vec<u8> {
        let bits = self.template.format.bits;
        let mask = ((1u32 << bits) - 1) as u16;
        let start = start as u16;
        (0..len)
            .flat_map(|k| ((start.wrapping_add(k as u16) << (bits - 8)) & mask).to_le_bytes())
            .collect()
    }

    /// All frames at once. Row `i` of frame `n` is the ramp from step `i + 10n`, and the
    /// ramp repeats every [`RAMP_PERIOD`] steps, so the `RAMP_PERIOD + height` rows
    /// starting at steps `0, 1, 2, …` contain every frame as a contiguous run of rows:
    /// frame `n` starts at row `10n mod 256`. Like a sensor writing by DMA, the sim then
    /// hands out frames without the CPU copying 16 MB per 4K frame (that copy was a
    /// quarter of a core when streaming 4K as fast as possible).
    fn frames_buffer(&mut self) -> Bytes {
        let (w, h) = (self.template.width as usize, self.template.height as usize);
        if self.all_frames.is_none() {
            let ramp = self.ramp(0, RAMP_PERIOD + h + w);
            let mut all = Vec::with_capacity((RAMP_PERIOD + h) * w * 2);
            for r in 0..RAMP_PERIOD + h {
                all.extend_from_slice(&ramp[2 * r..2 * (r + w)]);
            }
            self.all_frames = Some(Bytes::from(all));
        }
        self.all_frames.clone().unwrap_or_default()
    }

    /// Frame `n` as a slice of [`SimSource::frames_buffer`], with its CRC32C.
    fn frame_slice(&mut self, n: u64) -> (Bytes, u32) {
        let row_bytes = self.template.width as usize * 2;
        let h = self.template.height as usize;
        let first_row = (n.wrapping_mul(10) % RAMP_PERIOD as u64) as usize;
        let payload = self
            .frames_buffer()
            .slice(first_row * row_bytes..(first_row + h) * row_bytes);
        let crc = *self.crcs[first_row].get_or_insert_with(|| rawlink_frame::crc32c(&payload));
        (payload, crc)
    }
}

/// Scales a 12-bit level to `bits`.
pub(crate) fn scale_from_12(v: u16, bits: u8) -> u16 {
    if bits >= 12 {
        v << (bits - 12)
    } else {
        v >> (12 - bits)
    }
}

impl FrameSource for SimSource {
    fn describe(&self) -> String {
        format!(
            "sim {}x{} {}",
            self.template.width, self.template.height, self.template.format
        )
    }
    fn stream_header(&self) -> FrameHeader {
        self.template
    }
    fn interval(&self) -> Duration {
        self.interval
    }
    /// A sim with a frame interval behaves like a sensor; one without (`--interval-ms 0`,
    /// "as fast as possible") has no real-time constraint, so lossless clients pace it
    /// instead of it rendering frames that would only be dropped.
    fn is_live(&self) -> bool {
        !self.interval.is_zero()
    }
    fn next_frame(&mut self, stop: &AtomicBool) -> Result<Option<Frame>, SourceError> {
        if !self.pacer.wait(stop) {
            return Ok(None);
        }
        self.seq += 1;
        let (payload, crc) = self.frame_slice(self.seq);
        let header = stamp(self.template, self.seq);
        Ok(Some(Frame::new(header, payload)?.with_payload_crc32c(crc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_driver_formula() {
        let opts = SourceOptions {
            interval: Duration::ZERO,
            ..Default::default()
        };
        let mut s = SimSource::new(&opts).unwrap();
        let stop = AtomicBool::new(false);
        for n in 1..=3u64 {
            let f = s.next_frame(&stop).unwrap().unwrap();
            assert_eq!(f.header.seq, n);
            let raw = f.raw().unwrap();
            for &(i, j) in &[(0usize, 0usize), (0, 1), (479, 639), (100, 255), (7, 300)] {
                let want = (((i + j) as u64 + n * 10) * 16 % 4096) as u16;
                assert_eq!(raw.get(i, j), want, "frame {n} at ({i},{j})");
            }
        }
    }

    #[test]
    fn fast_render_equals_the_formula() {
        for bits in [8u8, 10, 12, 16] {
            let opts = SourceOptions {
                width: 70,
                height: 9,
                bits,
                interval: Duration::ZERO,
                ..Default::default()
            };
            let s = SimSource::new(&opts).unwrap();
            let out = s.render(7);
            for i in 0..9u64 {
                for j in 0..70u64 {
                    let k = ((i * 70 + j) * 2) as usize;
                    let v = u16::from_le_bytes([out[k], out[k + 1]]);
                    assert_eq!(v, driver_sample(7, i, j, bits), "{bits}-bit ({i},{j})");
                }
            }
        }
    }

    #[test]
    fn zero_copy_frames_equal_the_rendered_ones() {
        for (bits, w, h) in [
            (12u8, 64u32, 8u32),
            (10, 33, 300),
            (16, 5, 3),
            (8, 640, 480),
        ] {
            let opts = SourceOptions {
                width: w,
                height: h,
                bits,
                interval: Duration::ZERO,
                ..Default::default()
            };
            let mut s = SimSource::new(&opts).unwrap();
            let stop = AtomicBool::new(false);
            // More than the 128 distinct phases, so every start row is visited and wraps.
            for n in 1..=300u64 {
                let f = s.next_frame(&stop).unwrap().unwrap();
                assert_eq!(
                    &f.payload[..],
                    &s.render(n)[..],
                    "{bits}-bit {w}x{h} frame {n}"
                );
                assert_eq!(f.payload_crc32c, Some(crc32c::crc32c(&f.payload)));
            }
        }
    }

    #[test]
    fn the_attached_crc_is_the_payloads() {
        let opts = SourceOptions {
            width: 70,
            height: 9,
            interval: Duration::ZERO,
            ..Default::default()
        };
        let mut s = SimSource::new(&opts).unwrap();
        let f = s.next_frame(&AtomicBool::new(false)).unwrap().unwrap();
        assert_eq!(f.payload_crc32c, Some(crc32c::crc32c(&f.payload)));
    }

    #[test]
    fn other_depths_stay_in_range() {
        for bits in 8..=16u8 {
            let max = ((1u32 << bits) - 1) as u16;
            for k in 0..600u64 {
                assert!(driver_sample(1, k, k / 2, bits) <= max);
            }
        }
        assert_eq!(driver_sample(1, 0, 0, 8), 10);
        assert_eq!(driver_sample(1, 0, 0, 16), 2560);
    }
}
