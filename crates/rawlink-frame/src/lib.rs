//! The value types that travel through rawlink: [`Frame`], [`FrameHeader`],
//! [`PixelFormat`] and [`BayerPattern`]. No I/O, no async.
//!
//! A [`Frame`] is a header plus a reference-counted payload ([`bytes::Bytes`]),
//! so a frame fanned out to N clients is never copied N times.
//!
//! ```
//! use rawlink_frame::{BayerPattern, Frame, FrameHeader, PixelFormat};
//!
//! let fmt = PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap();
//! let header = FrameHeader::new(1, 4, 2, fmt);
//! let payload: Vec<u8> = (0..8u16).flat_map(|v| (v * 16).to_le_bytes()).collect();
//! let frame = Frame::new(header, payload.into()).unwrap();
//! let raw = frame.raw().unwrap();
//! assert_eq!(raw.get(0, 1), 16);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod crc;
mod pack;
pub use crc::{crc32c, Crc32c};
pub use pack::{
    pack_frame, pack_frame_as, pack_row, pack_row_mipi, unpack_frame, unpack_row, unpack_row_mipi,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Errors raised when a header, format or payload is inconsistent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Bit depth outside 8..=16.
    #[error("bit depth {0} is not supported (8..=16; 10, 12 or 14 when MIPI-packed)")]
    BadBitDepth(u8),
    /// Unknown Bayer pattern name or code.
    #[error("unknown Bayer pattern {0:?} (expected rggb, bggr, grbg or gbrg)")]
    BadPattern(String),
    /// Unknown packing code.
    #[error("unknown packing code {0}")]
    BadPacking(u8),
    /// Zero or absurd geometry.
    #[error("invalid geometry {width}x{height} (stride {stride} bytes)")]
    BadGeometry {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Row stride in bytes.
        stride: u32,
    },
    /// Payload length does not match the geometry.
    #[error("payload is {actual} bytes but {width}x{height} {format} needs {expected}")]
    PayloadSize {
        /// Bytes present.
        actual: usize,
        /// Bytes required by the header.
        expected: usize,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Pixel format.
        format: PixelFormat,
    },
}

/// The colour of the top-left 2×2 cell of the colour filter array, read row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BayerPattern {
    /// R G / G B
    Rggb = 0,
    /// B G / G R
    Bggr = 1,
    /// G R / B G
    Grbg = 2,
    /// G B / R G
    Gbrg = 3,
}

/// Colour channel of a CFA site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Red.
    R = 0,
    /// Green.
    G = 1,
    /// Blue.
    B = 2,
}

impl BayerPattern {
    /// All four patterns.
    pub const ALL: [BayerPattern; 4] = [Self::Rggb, Self::Bggr, Self::Grbg, Self::Gbrg];

    /// Wire code of the pattern.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Pattern from its wire code.
    pub fn from_code(code: u8) -> Result<Self, FrameError> {
        Self::ALL
            .get(code as usize)
            .copied()
            .ok_or_else(|| FrameError::BadPattern(format!("code {code}")))
    }

    /// Lower-case name (`rggb`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rggb => "rggb",
            Self::Bggr => "bggr",
            Self::Grbg => "grbg",
            Self::Gbrg => "gbrg",
        }
    }

    /// Channel at (row parity, column parity): `cell()[row & 1][col & 1]`.
    pub fn cell(self) -> [[Channel; 2]; 2] {
        use Channel::*;
        match self {
            Self::Rggb => [[R, G], [G, B]],
            Self::Bggr => [[B, G], [G, R]],
            Self::Grbg => [[G, R], [B, G]],
            Self::Gbrg => [[G, B], [R, G]],
        }
    }

    /// Channel of the pixel at (`row`, `col`).
    pub fn channel_at(self, row: usize, col: usize) -> Channel {
        self.cell()[row & 1][col & 1]
    }

    /// Position (row parity, column parity) of the red site within the 2×2 cell.
    pub fn red_offset(self) -> (usize, usize) {
        match self {
            Self::Rggb => (0, 0),
            Self::Bggr => (1, 1),
            Self::Grbg => (0, 1),
            Self::Gbrg => (1, 0),
        }
    }
}

impl fmt::Display for BayerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BayerPattern {
    type Err = FrameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rggb" => Ok(Self::Rggb),
            "bggr" => Ok(Self::Bggr),
            "grbg" => Ok(Self::Grbg),
            "gbrg" => Ok(Self::Gbrg),
            _ => Err(FrameError::BadPattern(s.to_string())),
        }
    }
}

/// How samples are laid out in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Packing {
    /// One little-endian `u16` per sample, value in the low `bits` bits.
    U16Le = 0,
    /// rawlink's wire packing: each row is a little-endian bit stream of `bits`-bit
    /// samples, least significant bit first, padded to a whole byte. 12-bit: 2 samples
    /// in 3 bytes; 10-bit: 4 samples in 5 bytes. (Not the MIPI CSI-2 layout.) At 8 bits
    /// this is one byte per sample, V4L2's `SRGGB8` family.
    PackedLsb = 1,
    /// MIPI CSI-2 packing, V4L2's `SRGGB10P`/`12P`/`14P` families (10, 12 or 14 bits
    /// only): each group of pixels stores their 8 most significant bits one byte each,
    /// then their low bits together. RAW10: 4 pixels in 5 bytes, byte 4 holding the
    /// 2 LSBs of pixel k in bits 2k+1..2k; RAW12: 2 pixels in 3 bytes, byte 2 holding the
    /// 4 LSBs of pixel 0 in bits 3..0 and of pixel 1 in bits 7..4; RAW14: 4 pixels in
    /// 7 bytes, bytes 4..6 holding the 6-bit LSBs of pixels 0..3 as one little-endian
    /// 24-bit field. A row is a whole number of groups (the last one zero-padded).
    Mipi = 2,
}

impl Packing {
    /// Wire code.
    pub fn code(self) -> u8 {
        self as u8
    }
    /// Packing from its wire code.
    pub fn from_code(code: u8) -> Result<Self, FrameError> {
        match code {
            0 => Ok(Self::U16Le),
            1 => Ok(Self::PackedLsb),
            2 => Ok(Self::Mipi),
            c => Err(FrameError::BadPacking(c)),
        }
    }
    /// Minimum bytes per row for `width` samples of `bits` bits.
    pub fn row_bytes(self, width: u32, bits: u8) -> u64 {
        match self {
            Self::U16Le => width as u64 * 2,
            Self::PackedLsb => (width as u64 * bits as u64).div_ceil(8),
            Self::Mipi => {
                let (pixels, bytes) = mipi_group(bits).unwrap_or((1, 2));
                (width as u64).div_ceil(pixels) * bytes
            }
        }
    }
}

/// Pixels and bytes per MIPI CSI-2 group at `bits` (10, 12 or 14).
pub fn mipi_group(bits: u8) -> Option<(u64, u64)> {
    match bits {
        10 => Some((4, 5)),
        12 => Some((2, 3)),
        14 => Some((4, 7)),
        _ => None,
    }
}

/// Bayer pattern, bit depth and packing of a raw frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PixelFormat {
    /// Colour filter array pattern.
    pub pattern: BayerPattern,
    /// Significant bits per sample (8..=16).
    pub bits: u8,
    /// Payload layout.
    pub packing: Packing,
}

impl PixelFormat {
    /// An unpacked (16-bit container) format, checking the bit depth.
    pub fn unpacked(pattern: BayerPattern, bits: u8) -> Result<Self, FrameError> {
        if !(8..=16).contains(&bits) {
            return Err(FrameError::BadBitDepth(bits));
        }
        Ok(Self {
            pattern,
            bits,
            packing: Packing::U16Le,
        })
    }

    /// Largest sample value, `2^bits - 1`.
    pub fn max_value(self) -> u16 {
        ((1u32 << self.bits) - 1) as u16
    }

    /// The V4L2 fourcc of this format, if V4L2 defines one (see [`V4L2_BAYER_FORMATS`]).
    pub fn fourcc(self) -> Option<[u8; 4]> {
        V4L2_BAYER_FORMATS
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(cc, _)| *cc)
    }

    /// The format for a V4L2 Bayer fourcc.
    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<Self> {
        V4L2_BAYER_FORMATS
            .iter()
            .find(|(cc, _)| *cc == fourcc)
            .map(|(_, f)| *f)
    }
}

const fn v4l2(pattern: BayerPattern, bits: u8, packing: Packing) -> PixelFormat {
    PixelFormat {
        pattern,
        bits,
        packing,
    }
}

/// Every V4L2 Bayer format rawlink reads, with its fourcc, as `videodev2.h` defines
/// them: 8-bit (one byte per sample), 10/12/14/16-bit in little-endian 16-bit
/// containers, and the MIPI CSI-2 packed 10/12/14-bit families. Note the irregular
/// names: GRBG is `BA10`/`BA12` but `GR14`/`GR16`, and 16-bit BGGR is `BYR2`.
pub const V4L2_BAYER_FORMATS: [([u8; 4], PixelFormat); 32] = {
    use BayerPattern::{Bggr as B, Gbrg as GB, Grbg as GR, Rggb as R};
    use Packing::{Mipi as P, PackedLsb as L, U16Le as U};
    [
        (*b"RGGB", v4l2(R, 8, L)),
        (*b"BA81", v4l2(B, 8, L)),
        (*b"GRBG", v4l2(GR, 8, L)),
        (*b"GBRG", v4l2(GB, 8, L)),
        (*b"RG10", v4l2(R, 10, U)),
        (*b"BG10", v4l2(B, 10, U)),
        (*b"BA10", v4l2(GR, 10, U)),
        (*b"GB10", v4l2(GB, 10, U)),
        (*b"pRAA", v4l2(R, 10, P)),
        (*b"pBAA", v4l2(B, 10, P)),
        (*b"pgAA", v4l2(GR, 10, P)),
        (*b"pGAA", v4l2(GB, 10, P)),
        (*b"RG12", v4l2(R, 12, U)),
        (*b"BG12", v4l2(B, 12, U)),
        (*b"BA12", v4l2(GR, 12, U)),
        (*b"GB12", v4l2(GB, 12, U)),
        (*b"pRCC", v4l2(R, 12, P)),
        (*b"pBCC", v4l2(B, 12, P)),
        (*b"pgCC", v4l2(GR, 12, P)),
        (*b"pGCC", v4l2(GB, 12, P)),
        (*b"RG14", v4l2(R, 14, U)),
        (*b"BG14", v4l2(B, 14, U)),
        (*b"GR14", v4l2(GR, 14, U)),
        (*b"GB14", v4l2(GB, 14, U)),
        (*b"pREE", v4l2(R, 14, P)),
        (*b"pBEE", v4l2(B, 14, P)),
        (*b"pgEE", v4l2(GR, 14, P)),
        (*b"pGEE", v4l2(GB, 14, P)),
        (*b"RG16", v4l2(R, 16, U)),
        (*b"BYR2", v4l2(B, 16, U)),
        (*b"GR16", v4l2(GR, 16, U)),
        (*b"GB16", v4l2(GB, 16, U)),
    ]
};

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.pattern, self.bits)
    }
}

/// The clock a timestamp was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockId {
    /// Unknown or unspecified.
    Unknown = 0,
    /// `CLOCK_REALTIME`: nanoseconds since the Unix epoch.
    Realtime = 1,
    /// `CLOCK_MONOTONIC` of the capturing host.
    Monotonic = 2,
}

impl ClockId {
    /// Clock from its wire code; unknown codes map to [`ClockId::Unknown`].
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Realtime,
            2 => Self::Monotonic,
            _ => Self::Unknown,
        }
    }
}

/// Everything known about one frame apart from its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameHeader {
    /// Sequence number assigned at capture, starting at 1.
    pub seq: u64,
    /// Capture time in nanoseconds on [`FrameHeader::clock`].
    pub timestamp_ns: u64,
    /// The clock of `timestamp_ns`.
    pub clock: ClockId,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from the start of one row to the next.
    pub stride: u32,
    /// Pattern, depth and packing.
    pub format: PixelFormat,
    /// Exposure time in microseconds (0 if unknown).
    pub exposure_us: u32,
    /// Analog gain as a linear factor (1.0 if unknown).
    pub analog_gain: f32,
    /// Black level in sample units.
    pub black_level: u16,
    /// White (saturation) level in sample units.
    pub white_level: u16,
}

/// Largest accepted width or height, a sanity limit for untrusted headers.
pub const MAX_DIMENSION: u32 = 65_535;

impl FrameHeader {
    /// A header with tight stride, black 0, white `2^bits-1` and no timestamp.
    pub fn new(seq: u64, width: u32, height: u32, format: PixelFormat) -> Self {
        Self {
            seq,
            timestamp_ns: 0,
            clock: ClockId::Unknown,
            width,
            height,
            stride: format.packing.row_bytes(width, format.bits) as u32,
            format,
            exposure_us: 0,
            analog_gain: 1.0,
            black_level: 0,
            white_level: format.max_value(),
        }
    }

    /// Payload bytes this header implies (`stride * height`).
    pub fn payload_len(&self) -> u64 {
        self.stride as u64 * self.height as u64
    }

    /// Checks geometry: non-zero, within [`MAX_DIMENSION`], stride holds a row.
    pub fn validate(&self) -> Result<(), FrameError> {
        let bad = self.width == 0
            || self.height == 0
            || self.width > MAX_DIMENSION
            || self.height > MAX_DIMENSION
            || (self.stride as u64) < self.format.packing.row_bytes(self.width, self.format.bits);
        if bad {
            return Err(FrameError::BadGeometry {
                width: self.width,
                height: self.height,
                stride: self.stride,
            });
        }
        if !(8..=16).contains(&self.format.bits)
            || (self.format.packing == Packing::Mipi && mipi_group(self.format.bits).is_none())
        {
            return Err(FrameError::BadBitDepth(self.format.bits));
        }
        Ok(())
    }
}

/// One captured frame: header plus shared payload.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Metadata.
    pub header: FrameHeader,
    /// Pixel bytes as laid out by `header.format.packing` and `header.stride`.
    pub payload: Bytes,
    /// CRC32C of `payload`, if its producer computed it while the bytes were still in
    /// cache (the wire encoder then skips a second pass over the frame); `None`: the
    /// encoder computes it.
    pub payload_crc32c: Option<u32>,
}

impl Frame {
    /// Attaches the payload's CRC32C, computed by the producer. It must be the CRC32C
    /// (Castagnoli) of exactly `payload`: receivers reject the frame otherwise.
    pub fn with_payload_crc32c(mut self, crc: u32) -> Self {
        self.payload_crc32c = Some(crc);
        self
    }

    /// Builds a frame, checking that the payload matches the header.
    pub fn new(header: FrameHeader, payload: Bytes) -> Result<Self, FrameError> {
        header.validate()?;
        let expected = header.payload_len();
        if payload.len() as u64 != expected {
            return Err(FrameError::PayloadSize {
                actual: payload.len(),
                expected: expected as usize,
                width: header.width,
                height: header.height,
                format: header.format,
            });
        }
        Ok(Self {
            header,
            payload,
            payload_crc32c: None,
        })
    }

    /// A checked view of the samples (unpacked frames only; see [`unpack_frame`]).
    pub fn raw(&self) -> Result<RawImage<'_>, FrameError> {
        if self.header.format.packing != Packing::U16Le {
            return Err(FrameError::BadPacking(self.header.format.packing.code()));
        }
        RawImage::new(
            &self.payload,
            self.header.width as usize,
            self.header.height as usize,
            self.header.stride as usize,
        )
    }
}

/// A borrowed view of unpacked little-endian `u16` samples.
#[derive(Debug, Clone, Copy)]
pub struct RawImage<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
}

impl<'a> RawImage<'a> {
    /// Checks that `data` holds `height` rows of `stride` bytes, each with `width` samples.
    pub fn new(
        data: &'a [u8],
        width: usize,
        height: usize,
        stride: usize,
    ) -> Result<Self, FrameError> {
        let geometry_ok = width > 0 && height > 0 && stride >= width * 2;
        if !geometry_ok {
            return Err(FrameError::BadGeometry {
                width: width as u32,
                height: height as u32,
                stride: stride as u32,
            });
        }
        // The last row only needs `width * 2` bytes.
        let need = stride * (height - 1) + width * 2;
        if data.len() < need {
            return Err(FrameError::PayloadSize {
                actual: data.len(),
                expected: need,
                width: width as u32,
                height: height as u32,
                format: PixelFormat::unpacked(BayerPattern::Rggb, 16).expect("16 is a valid depth"),
            });
        }
        Ok(Self {
            data,
            width,
            height,
            stride,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }
    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Sample at (`row`, `col`). Panics if out of range.
    pub fn get(&self, row: usize, col: usize) -> u16 {
        let o = row * self.stride + col * 2;
        u16::from_le_bytes([self.data[o], self.data[o + 1]])
    }

    /// Decodes row `row` into `out` (`out.len() == width`).
    pub fn read_row(&self, row: usize, out: &mut [u16]) {
        let start = row * self.stride;
        let bytes = &self.data[start..start + self.width * 2];
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = u16::from_le_bytes([b[0], b[1]]);
        }
    }

    /// All samples as a tightly packed vector, row by row.
    pub fn to_vec(&self) -> Vec<u16> {
        // Filled as it is read: no zeroing pass over a frame-sized buffer first.
        let mut v = Vec::with_capacity(self.width * self.height);
        for r in 0..self.height {
            let start = r * self.stride;
            v.extend(
                self.data[start..start + self.width * 2]
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]])),
            );
        }
        v
    }
}

/// Encodes samples as little-endian `u16` bytes.
pub fn samples_to_le_bytes(samples: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pattern_names_round_trip() {
        for p in BayerPattern::ALL {
            assert_eq!(p.name().parse::<BayerPattern>().unwrap(), p);
            assert_eq!(BayerPattern::from_code(p.code()).unwrap(), p);
        }
        assert!("rgbg".parse::<BayerPattern>().is_err());
        assert!(BayerPattern::from_code(4).is_err());
    }

    #[test]
    fn every_pattern_has_one_red_two_green_one_blue() {
        for p in BayerPattern::ALL {
            let cell = p.cell();
            let flat = [cell[0][0], cell[0][1], cell[1][0], cell[1][1]];
            assert_eq!(flat.iter().filter(|&&c| c == Channel::R).count(), 1);
            assert_eq!(flat.iter().filter(|&&c| c == Channel::G).count(), 2);
            assert_eq!(flat.iter().filter(|&&c| c == Channel::B).count(), 1);
            let (ry, rx) = p.red_offset();
            assert_eq!(cell[ry][rx], Channel::R);
        }
    }

    #[test]
    fn fourcc_round_trip() {
        let f = PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap();
        assert_eq!(&f.fourcc().unwrap(), b"RG12");
        assert_eq!(PixelFormat::from_fourcc(*b"RG12"), Some(f));
        let b16 = PixelFormat::unpacked(BayerPattern::Bggr, 16).unwrap();
        assert_eq!(&b16.fourcc().unwrap(), b"BYR2");
        assert_eq!(PixelFormat::from_fourcc(*b"BYR2"), Some(b16));
        assert_eq!(PixelFormat::from_fourcc(*b"XXXX"), None);
    }

    #[test]
    fn bad_depth_rejected() {
        assert_eq!(
            PixelFormat::unpacked(BayerPattern::Rggb, 7),
            Err(FrameError::BadBitDepth(7))
        );
        assert!(PixelFormat::unpacked(BayerPattern::Rggb, 17).is_err());
        assert_eq!(
            PixelFormat::unpacked(BayerPattern::Rggb, 10)
                .unwrap()
                .max_value(),
            1023
        );
    }

    #[test]
    fn frame_checks_payload_size() {
        let fmt = PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap();
        let h = FrameHeader::new(1, 4, 2, fmt);
        assert!(Frame::new(h, Bytes::from(vec![0u8; 16])).is_ok());
        let err = Frame::new(h, Bytes::from(vec![0u8; 15])).unwrap_err();
        assert!(matches!(err, FrameError::PayloadSize { actual: 15, .. }));
        let mut zero = h;
        zero.width = 0;
        assert!(matches!(
            Frame::new(zero, Bytes::new()),
            Err(FrameError::BadGeometry { .. })
        ));
    }

    proptest! {
        #[test]
        fn raw_view_reads_what_was_written(w in 1usize..20, h in 1usize..20, pad in 0usize..4, seed: u16) {
            let stride = w * 2 + pad * 2;
            let mut data = vec![0u8; stride * h];
            let mut expect = Vec::new();
            for r in 0..h {
                for c in 0..w {
                    let v = seed.wrapping_add((r * 31 + c * 7) as u16);
                    data[r * stride + c * 2..r * stride + c * 2 + 2].copy_from_slice(&v.to_le_bytes());
                    expect.push(v);
                }
            }
            let img = RawImage::new(&data, w, h, stride).unwrap();
            prop_assert_eq!(img.to_vec(), expect);
        }
    }
}
