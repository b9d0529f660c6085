//! DNG 1.4 for rawlink's Bayer frames: a writer (uncompressed 16-bit CFA in one strip,
//! with the CFA pattern, black and white levels, AsShotNeutral, ColorMatrix1, capture
//! time, exposure and gain) and a reader for uncompressed 8- or 16-bit CFA DNGs (the
//! raw image in IFD 0 or in a SubIFD, either byte order).
//!
//! A DNG is a TIFF file; the tags used are in TIFF 6.0, TIFF/EP, EXIF 2.3 and DNG 1.4.
//! This is a small writer of our own rather than a TIFF crate: rawlink needs one fixed
//! layout, and the tags it writes are listed in one place, [`write_dng`].
//!
//! ```
//! use rawlink_dng::{read_dng, write_dng, DngMeta};
//! use rawlink_frame::BayerPattern;
//! let samples: Vec<u16> = (0..16).map(|i| i * 100).collect();
//! let meta = DngMeta { width: 4, height: 4, pattern: BayerPattern::Grbg, bits: 12, ..DngMeta::default() };
//! let bytes = write_dng(&meta, &samples).unwrap();
//! let back = read_dng(&bytes).unwrap();
//! assert_eq!(back.samples, samples);
//! assert_eq!(back.meta.pattern, BayerPattern::Grbg);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use rawlink_frame::BayerPattern;

/// What can go wrong reading or writing a DNG.
#[derive(Debug, thiserror::Error)]
pub enum DngError {
    /// Not a TIFF file at all.
    #[error("not a DNG/TIFF file (bad byte-order mark or magic)")]
    NotTiff,
    /// The structure points outside the file or is inconsistent.
    #[error("corrupt DNG: {0}")]
    Corrupt(String),
    /// A valid DNG this reader does not handle.
    #[error("unsupported DNG: {0}")]
    Unsupported(String),
    /// Bad arguments to the writer.
    #[error("cannot write DNG: {0}")]
    Invalid(String),
}

/// Everything rawlink stores in, or reads from, a DNG besides the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct DngMeta {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// CFA pattern of the top-left 2×2 block.
    pub pattern: BayerPattern,
    /// Significant bits per sample (stored in 16-bit samples).
    pub bits: u8,
    /// Black level, in sample units.
    pub black_level: u16,
    /// White (saturation) level, in sample units.
    pub white_level: u16,
    /// Camera-space neutral (AsShotNeutral): the white-balance gains are `1 / neutral`,
    /// normalised to green.
    pub as_shot_neutral: [f64; 3],
    /// ColorMatrix1 (XYZ D65 → camera), row-major; `None` to omit it.
    pub color_matrix: Option<[[f64; 3]; 3]>,
    /// Capture time, ns since the Unix epoch (UTC); 0 if unknown.
    pub timestamp_ns: u64,
    /// Exposure time in µs; 0 if unknown.
    pub exposure_us: u32,
    /// Analog gain (1.0 = unity); written as ISO 100 × gain.
    pub analog_gain: f32,
    /// Camera model text (Model and UniqueCameraModel).
    pub model: String,
    /// Free text (ImageDescription), e.g. the frame's sequence number.
    pub description: String,
    /// How to turn the image for display (TIFF/EXIF Orientation, 1–8; 1 = as stored).
    /// The reader gives the file's value as it is (an unknown one included); the
    /// samples are always as stored.
    pub orientation: u16,
}

impl Default for DngMeta {
    fn default() -> Self {
        Self {
            width: 0,
            height: 0,
            pattern: BayerPattern::Rggb,
            bits: 12,
            black_level: 0,
            white_level: 4095,
            as_shot_neutral: [1.0; 3],
            color_matrix: None,
            timestamp_ns: 0,
            exposure_us: 0,
            analog_gain: 1.0,
            model: "rawlink".into(),
            description: String::new(),
            orientation: 1,
        }
    }
}

/// The XYZ (D65) → linear sRGB matrix (IEC 61966-2-1).
pub const SRGB_FROM_XYZ: [[f64; 3]; 3] = [
    [3.2404542, -1.5371385, -0.4985314],
    [-0.9692660, 1.8760108, 0.0415560],
    [0.0556434, -0.2040259, 1.0572252],
];

/// The linear sRGB → XYZ (D65) matrix.
pub const XYZ_FROM_SRGB: [[f64; 3]; 3] = [
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
];

/// 3×3 matrix product.
pub fn mat_mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

/// 3×3 matrix inverse; `None` if singular.
pub fn mat_inv(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let c = |r: usize, k: usize| {
        let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
        let (k1, k2) = ((k + 1) % 3, (k + 2) % 3);
        m[r1][k1] * m[r2][k2] - m[r1][k2] * m[r2][k1]
    };
    let det: f64 = (0..3).map(|k| m[0][k] * c(0, k)).sum();
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    let mut inv = [[0.0; 3]; 3];
    for (i, row) in inv.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = c(j, i) / det;
        }
    }
    Some(inv)
}

/// ColorMatrix1 for a camera whose colour correction to linear sRGB is `ccm`
/// (camera RGB → sRGB): camera = ccm⁻¹ · sRGB_from_XYZ · XYZ.
pub fn color_matrix_from_ccm(ccm: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    Some(mat_mul(&mat_inv(ccm)?, &SRGB_FROM_XYZ))
}

/// The camera RGB → linear sRGB matrix a ColorMatrix1 implies, rows normalised so that
/// camera white (1, 1, 1) maps to sRGB white.
pub fn ccm_from_color_matrix(cm: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let cam_from_srgb = mat_mul(cm, &XYZ_FROM_SRGB);
    // Normalise so that sRGB white gives camera white.
    let mut n = cam_from_srgb;
    for row in n.iter_mut() {
        let s: f64 = row.iter().sum();
        if s.abs() < 1e-12 {
            return None;
        }
        for v in row.iter_mut() {
            *v /= s;
        }
    }
    mat_inv(&n)
}

// TIFF field types.
const BYTE: u16 = 1;
const ASCII: u16 = 2;
const SHORT: u16 = 3;
const LONG: u16 = 4;
const RATIONAL: u16 = 5;
const SRATIONAL: u16 = 10;

fn type_size(t: u16) -> Option<usize> {
    Some(match t {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 => 4,
        5 | 10 | 12 => 8,
        _ => return None,
    })
}

/// One IFD entry being written: tag, type, count, and the value bytes (little-endian).
struct Entry {
    tag: u16,
    typ: u16,
    count: u32,
    data: Vec<u8>,
}

fn ascii(tag: u16, s: &str) -> Entry {
    let mut data: Vec<u8> = s
        .bytes()
        .map(|b| if b.is_ascii() && b != 0 { b } else { b'?' })
        .collect();
    data.push(0);
    Entry {
        tag,
        typ: ASCII,
        count: data.len() as u32,
        data,
    }
}

fn shorts(tag: u16, v: &[u16]) -> Entry {
    Entry {
        tag,
        typ: SHORT,
        count: v.len() as u32,
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn longs(tag: u16, v: &[u32]) -> Entry {
    Entry {
        tag,
        typ: LONG,
        count: v.len() as u32,
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn bytes(tag: u16, v: &[u8]) -> Entry {
    Entry {
        tag,
        typ: BYTE,
        count: v.len() as u32,
        data: v.to_vec(),
    }
}

/// Nearest fraction with a fixed denominator (enough for levels and matrices).
fn rationals(tag: u16, v: &[f64], signed: bool) -> Entry {
    let den: i64 = 1_000_000;
    let data = v
        .iter()
        .flat_map(|x| {
            let num = (x * den as f64).round();
            let mut b = Vec::with_capacity(8);
            if signed {
                b.extend((num.clamp(i32::MIN as f64, i32::MAX as f64) as i32).to_le_bytes());
                b.extend((den as i32).to_le_bytes());
            } else {
                b.extend((num.clamp(0.0, u32::MAX as f64) as u32).to_le_bytes());
                b.extend((den as u32).to_le_bytes());
            }
            b
        })
        .collect();
    Entry {
        tag,
        typ: if signed { SRATIONAL } else { RATIONAL },
        count: v.len() as u32,
        data,
    }
}

/// Serialises an IFD at `at`, with its out-of-line values right after it; returns the
/// bytes (whose length tells where the next block may go).
fn ifd_bytes(mut entries: Vec<Entry>, at: u32, next_ifd: u32) -> Vec<u8> {
    entries.sort_by_key(|e| e.tag);
    let table = 2 + entries.len() * 12 + 4;
    let mut out = Vec::with_capacity(table);
    let mut extra: Vec<u8> = Vec::new();
    out.extend((entries.len() as u16).to_le_bytes());
    for e in &entries {
        out.extend(e.tag.to_le_bytes());
        out.extend(e.typ.to_le_bytes());
        out.extend(e.count.to_le_bytes());
        if e.data.len() <= 4 {
            let mut v = e.data.clone();
            v.resize(4, 0);
            out.extend(v);
        } else {
            let off = at + table as u32 + extra.len() as u32;
            out.extend(off.to_le_bytes());
            extra.extend(&e.data);
            if extra.len() % 2 == 1 {
                extra.push(0); // values start on word boundaries
            }
        }
    }
    out.extend(next_ifd.to_le_bytes());
    out.extend(extra);
    out
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

/// EXIF date-time text (`YYYY:MM:DD HH:MM:SS`, UTC) and the sub-second digits (ms).
pub fn exif_time(ns: u64) -> (String, String) {
    let secs = (ns / 1_000_000_000) as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    (
        format!(
            "{y:04}:{mo:02}:{d:02} {:02}:{:02}:{:02}",
            t / 3600,
            t / 60 % 60,
            t % 60
        ),
        format!("{:03}", ns / 1_000_000 % 1000),
    )
}

/// Writes an uncompressed DNG 1.4 of `samples` (row-major, one per pixel).
pub fn write_dng(meta: &DngMeta, samples: &[u16]) -> Result<Vec<u8>, DngError> {
    let (w, h) = (meta.width, meta.height);
    if w == 0 || h == 0 || samples.len() != w as usize * h as usize {
        return Err(DngError::Invalid(format!(
            "{} samples for {w}x{h}",
            samples.len()
        )));
    }
    if !(8..=16).contains(&meta.bits) {
        return Err(DngError::Invalid(format!("bit depth {}", meta.bits)));
    }
    let max = ((1u32 << meta.bits) - 1) as u16;
    let (black, white) = (meta.black_level, meta.white_level);
    if white == 0 || white > max || black >= white {
        return Err(DngError::Invalid(format!(
            "black level {black} and white level {white}: need black < white <= {max}"
        )));
    }
    let strip_len = samples.len() as u64 * 2;
    if strip_len > u32::MAX as u64 / 2 {
        return Err(DngError::Invalid("image too large for a TIFF strip".into()));
    }
    let cfa: Vec<u8> = meta
        .pattern
        .cell()
        .iter()
        .flatten()
        .map(|c| *c as u8)
        .collect();
    let (date, subsec) = exif_time(meta.timestamp_ns);
    let neutral = meta.as_shot_neutral;
    if neutral.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(DngError::Invalid(format!("AsShotNeutral {neutral:?}")));
    }
    // Layout: header, IFD 0 (+ its values), EXIF IFD (+ values), then the strip.
    let exif = |at: u32| {
        let mut e = vec![
            ascii(36867, &date),    // DateTimeOriginal
            ascii(37521, &subsec),  // SubSecTimeOriginal
            ascii(36881, "+00:00"), // OffsetTimeOriginal
            shorts(
                34855,
                &[(meta.analog_gain.max(0.0) * 100.0).round().min(65535.0) as u16],
            ), // ISO
        ];
        if meta.exposure_us > 0 {
            e.push(Entry {
                tag: 33434, // ExposureTime
                typ: RATIONAL,
                count: 1,
                data: [meta.exposure_us.to_le_bytes(), 1_000_000u32.to_le_bytes()].concat(),
            });
        }
        ifd_bytes(e, at, 0)
    };
    let ifd0 = |exif_at: u32, strip_at: u32| {
        let mut e = vec![
            longs(254, &[0]),                 // NewSubFileType: main image
            longs(256, &[w]),                 // ImageWidth
            longs(257, &[h]),                 // ImageLength
            shorts(258, &[16]),               // BitsPerSample
            shorts(259, &[1]),                // Compression: none
            shorts(262, &[32803]),            // PhotometricInterpretation: CFA
            ascii(271, "rawlink"),            // Make
            ascii(272, &meta.model),          // Model
            longs(273, &[strip_at]),          // StripOffsets
            shorts(274, &[meta.orientation]), // Orientation
            shorts(277, &[1]),                // SamplesPerPixel
            longs(278, &[h]),                 // RowsPerStrip
            longs(279, &[strip_len as u32]),  // StripByteCounts
            // MaxSampleValue: the samples' depth, which a WhiteLevel below the top of
            // the range does not give (a 12-bit frame with white 2000).
            shorts(281, &[((1u32 << meta.bits.clamp(8, 16)) - 1) as u16]),
            shorts(284, &[1]), // PlanarConfiguration
            ascii(305, concat!("rawlink ", env!("CARGO_PKG_VERSION"))), // Software
            ascii(306, &date), // DateTime
            shorts(33421, &[2, 2]), // CFARepeatPatternDim
            bytes(33422, &cfa), // CFAPattern
            longs(34665, &[exif_at]), // ExifIFD
            bytes(50706, &[1, 4, 0, 0]), // DNGVersion
            bytes(50707, &[1, 1, 0, 0]), // DNGBackwardVersion
            ascii(50708, &meta.model), // UniqueCameraModel
            bytes(50710, &[0, 1, 2]), // CFAPlaneColor
            shorts(50711, &[1]), // CFALayout: rectangular
            shorts(50713, &[1, 1]), // BlackLevelRepeatDim
            longs(50714, &[meta.black_level as u32]), // BlackLevel
            longs(50717, &[meta.white_level as u32]), // WhiteLevel
            rationals(50728, &neutral, false), // AsShotNeutral
        ];
        if !meta.description.is_empty() {
            e.push(ascii(270, &meta.description)); // ImageDescription
        }
        if let Some(cm) = meta.color_matrix {
            let flat: Vec<f64> = cm.iter().flatten().copied().collect();
            e.push(rationals(50721, &flat, true)); // ColorMatrix1
            e.push(shorts(50778, &[21])); // CalibrationIlluminant1: D65
        }
        ifd_bytes(e, 8, 0)
    };
    // Sizes do not depend on the offsets, so lay out once with zeros, then for real.
    let ifd0_len = ifd0(0, 0).len() as u32;
    let exif_at = 8 + ifd0_len + (ifd0_len % 2);
    let exif_len = exif(exif_at).len() as u32;
    let strip_at = (exif_at + exif_len).next_multiple_of(16);
    let mut out = Vec::with_capacity(strip_at as usize + strip_len as usize);
    out.extend(b"II");
    out.extend(42u16.to_le_bytes());
    out.extend(8u32.to_le_bytes());
    out.extend(ifd0(exif_at, strip_at));
    out.resize(exif_at as usize, 0);
    out.extend(exif(exif_at));
    out.resize(strip_at as usize, 0);
    for s in samples {
        out.extend(s.to_le_bytes());
    }
    Ok(out)
}

/// A DNG read back: metadata and samples.
#[derive(Debug, Clone)]
pub struct DngImage {
    /// Metadata (fields the file lacks keep [`DngMeta::default`] values; `bits` is the
    /// smallest depth that holds the white level, every sample and the file's
    /// MaxSampleValue, which rawlink writes).
    pub meta: DngMeta,
    /// Black levels per colour (R, G, B) where the file gives one per CFA site that are
    /// not all equal (`meta.black_level` is then their mean); `None` otherwise.
    pub black_per_channel: Option<[u16; 3]>,
    /// Row-major samples.
    pub samples: Vec<u16>,
}

/// A field as read: type, count and where its value bytes are.
#[derive(Debug, Clone, Copy)]
struct Field {
    typ: u16,
    count: u32,
    at: usize,
}

struct Tiff<'a> {
    d: &'a [u8],
    le: bool,
}

impl<'a> Tiff<'a> {
    fn bytes(&self, at: usize, n: usize) -> Result<&'a [u8], DngError> {
        self.d
            .get(
                at..at
                    .checked_add(n)
                    .ok_or_else(|| corrupt("offset overflow"))?,
            )
            .ok_or_else(|| corrupt(&format!("{n} bytes at {at} are past the end of the file")))
    }
    fn u16(&self, at: usize) -> Result<u16, DngError> {
        let b = self.bytes(at, 2)?;
        Ok(if self.le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    }
    fn u32(&self, at: usize) -> Result<u32, DngError> {
        let b = self.bytes(at, 4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }

    /// The entries of the IFD at `at`, by tag.
    fn ifd(&self, at: usize) -> Result<Vec<(u16, Field)>, DngError> {
        let n = self.u16(at)? as usize;
        if n > 4096 {
            return Err(corrupt(&format!("IFD with {n} entries")));
        }
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let e = at + 2 + 12 * i;
            let (tag, typ, count) = (self.u16(e)?, self.u16(e + 2)?, self.u32(e + 4)?);
            let Some(size) = type_size(typ) else {
                continue; // unknown type: skip, as TIFF readers must
            };
            let len = size as u64 * count as u64;
            let at = if len <= 4 {
                e + 8
            } else {
                let off = self.u32(e + 8)? as usize;
                self.bytes(off, len as usize)?;
                off
            };
            v.push((tag, Field { typ, count, at }));
        }
        Ok(v)
    }

    /// Value `i` of a numeric field, as f64.
    fn num(&self, f: Field, i: u32) -> Result<f64, DngError> {
        if i >= f.count {
            return Err(corrupt("field has too few values"));
        }
        let i = i as usize;
        Ok(match f.typ {
            BYTE | 7 => self.bytes(f.at + i, 1)?[0] as f64,
            6 => self.bytes(f.at + i, 1)?[0] as i8 as f64,
            SHORT => self.u16(f.at + 2 * i)? as f64,
            8 => self.u16(f.at + 2 * i)? as i16 as f64,
            LONG => self.u32(f.at + 4 * i)? as f64,
            9 => self.u32(f.at + 4 * i)? as i32 as f64,
            RATIONAL | SRATIONAL => {
                let (n, d) = (self.u32(f.at + 8 * i)?, self.u32(f.at + 8 * i + 4)?);
                let (n, d) = if f.typ == SRATIONAL {
                    (n as i32 as f64, d as i32 as f64)
                } else {
                    (n as f64, d as f64)
                };
                if d == 0.0 {
                    return Err(corrupt("rational with a zero denominator"));
                }
                n / d
            }
            _ => return Err(corrupt(&format!("field type {} is not numeric", f.typ))),
        })
    }
}

fn corrupt(s: &str) -> DngError {
    DngError::Corrupt(s.to_string())
}

fn find(ifd: &[(u16, Field)], tag: u16) -> Option<Field> {
    ifd.iter().find(|(t, _)| *t == tag).map(|(_, f)| *f)
}

/// Largest image this reader accepts (pixels), so a forged size cannot exhaust memory.
pub const MAX_PIXELS: u64 = 16384 * 16384;

/// Reads an uncompressed CFA DNG.
pub fn read_dng(data: &[u8]) -> Result<DngImage, DngError> {
    let le = match data.get(..4) {
        Some([b'I', b'I', 42, 0]) => true,
        Some([b'M', b'M', 0, 42]) => false,
        _ => return Err(DngError::NotTiff),
    };
    let t = Tiff { d: data, le };
    let ifd0 = t.ifd(t.u32(4)? as usize)?;
    // The raw image: IFD 0 if it is the CFA main image, else the first CFA SubIFD.
    let is_raw = |ifd: &[(u16, Field)]| -> Result<bool, DngError> {
        Ok(match find(ifd, 262) {
            Some(f) => t.num(f, 0)? == 32803.0,
            None => false,
        })
    };
    let raw = if is_raw(&ifd0)? {
        ifd0.clone()
    } else {
        let mut found = None;
        if let Some(subs) = find(&ifd0, 330) {
            for i in 0..subs.count.min(16) {
                let sub = t.ifd(t.num(subs, i)? as usize)?;
                if is_raw(&sub)? {
                    found = Some(sub);
                    break;
                }
            }
        }
        found.ok_or_else(|| {
            DngError::Unsupported("no CFA raw image (PhotometricInterpretation 32803) found".into())
        })?
    };
    let get = |tag: u16, name: &str| {
        find(&raw, tag).ok_or_else(|| corrupt(&format!("the raw image has no {name}")))
    };
    let width = t.num(get(256, "ImageWidth")?, 0)? as u64;
    let height = t.num(get(257, "ImageLength")?, 0)? as u64;
    if width == 0 || height == 0 || width * height > MAX_PIXELS {
        return Err(corrupt(&format!("image size {width}x{height}")));
    }
    let bps = t.num(get(258, "BitsPerSample")?, 0)? as u32;
    let compression = find(&raw, 259)
        .map(|f| t.num(f, 0))
        .transpose()?
        .unwrap_or(1.0);
    if compression != 1.0 {
        return Err(DngError::Unsupported(format!(
            "compression {compression} (only uncompressed DNGs are read; LJ92 is not)"
        )));
    }
    if bps != 8 && bps != 16 {
        return Err(DngError::Unsupported(format!(
            "{bps}-bit samples (8 and 16 are read)"
        )));
    }
    if find(&raw, 322).is_some() {
        return Err(DngError::Unsupported("tiled images".into()));
    }
    let spp = find(&raw, 277)
        .map(|f| t.num(f, 0))
        .transpose()?
        .unwrap_or(1.0);
    if spp != 1.0 {
        return Err(DngError::Unsupported(format!("{spp} samples per pixel")));
    }
    // CFA pattern: 2x2, colours 0/1/2.
    let dim = find(&raw, 33421)
        .or_else(|| find(&ifd0, 33421))
        .ok_or_else(|| corrupt("no CFARepeatPatternDim"))?;
    if (t.num(dim, 0)?, t.num(dim, 1)?) != (2.0, 2.0) {
        return Err(DngError::Unsupported(
            "CFA repeat pattern other than 2x2".into(),
        ));
    }
    let cfa = find(&raw, 33422)
        .or_else(|| find(&ifd0, 33422))
        .ok_or_else(|| corrupt("no CFAPattern"))?;
    let colors: Vec<u8> = (0..4)
        .map(|i| t.num(cfa, i).map(|v| v as u8))
        .collect::<Result<_, _>>()?;
    let pattern = BayerPattern::ALL
        .into_iter()
        .find(|p| {
            p.cell()
                .iter()
                .flatten()
                .map(|c| *c as u8)
                .eq(colors.iter().copied())
        })
        .ok_or_else(|| DngError::Unsupported(format!("CFA pattern {colors:?}")))?;
    // Strips, in order.
    let offs = get(273, "StripOffsets")?;
    let counts = get(279, "StripByteCounts")?;
    let bytes_per = (bps / 8) as u64;
    let need = width * height * bytes_per;
    // An uncompressed image cannot be larger than its file: checked before anything is
    // allocated, so a small file cannot claim a huge image.
    if need > t.d.len() as u64 {
        return Err(corrupt(&format!(
            "the {width}x{height} image needs {need} bytes, but the whole file has {}",
            t.d.len()
        )));
    }
    // Every strip must lie inside the file, and no two may share bytes (strips that
    // all point at the same bytes would otherwise make a large image of a small file).
    let mut strips = Vec::new();
    for i in 0..offs.count {
        let (o, n) = (t.num(offs, i)? as usize, t.num(counts, i)? as usize);
        t.bytes(o, n)?;
        if n > 0 {
            strips.push((o, n, i));
        }
    }
    let mut sorted = strips.clone();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        let ((o1, n1, i1), (o2, _, i2)) = (w[0], w[1]);
        if o1 + n1 > o2 {
            return Err(corrupt(&format!(
                "strips {} and {} overlap (bytes {o2}..{})",
                i1.min(i2),
                i1.max(i2),
                o1 + n1
            )));
        }
    }
    let mut pixels = Vec::with_capacity(need as usize);
    for (o, n, _) in strips {
        let take = n.min(need as usize - pixels.len());
        pixels.extend_from_slice(t.bytes(o, take)?);
    }
    if (pixels.len() as u64) < need {
        return Err(corrupt(&format!(
            "strips hold {} bytes, the image needs {need}",
            pixels.len()
        )));
    }
    let samples: Vec<u16> = if bps == 8 {
        pixels.iter().map(|&b| b as u16).collect()
    } else {
        pixels
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect()
    };
    let (samples, width, height) = linearize_and_crop(&t, &raw, samples, width, height)?;
    // Per-column or per-row black levels are not applied, so a file that has any is
    // refused rather than processed with the wrong black.
    for (tag, name) in [(50715, "BlackLevelDeltaH"), (50716, "BlackLevelDeltaV")] {
        if let Some(f) = find(&raw, tag) {
            for i in 0..f.count.min(65536) {
                if t.num(f, i)? != 0.0 {
                    return Err(DngError::Unsupported(format!(
                        "{name} (per-column or per-row black levels)"
                    )));
                }
            }
        }
    }
    let level = |tag: u16| -> Result<Option<f64>, DngError> {
        let Some(f) = find(&raw, tag) else {
            return Ok(None);
        };
        let n = f.count.clamp(1, 4);
        let sum: f64 = (0..n).map(|i| t.num(f, i)).sum::<Result<f64, _>>()?;
        Ok(Some(sum / n as f64))
    };
    let max = if bps == 8 { 255.0 } else { 65535.0 };
    // A white level above the sample range is read as the range's top; one of 0, or a
    // black level at or above white, leaves no range at all and is refused.
    let white = level(50717)?.unwrap_or(max);
    if white.is_nan() || white < 1.0 {
        return Err(DngError::Corrupt(format!("WhiteLevel {white} is below 1")));
    }
    let white = white.min(max);
    let black = level(50714)?.unwrap_or(0.0).max(0.0);
    let black_per_channel =
        per_site_black(&t, &raw, pattern)?.map(|b| b.map(|v| v.clamp(0.0, 65535.0).round() as u16));
    if black >= white {
        return Err(DngError::Corrupt(format!(
            "BlackLevel {black} is not below WhiteLevel {white}"
        )));
    }
    // The depth: the smallest that holds the white level, the largest sample, and the
    // MaxSampleValue if the file gives one (rawlink writes it).
    let largest = samples.iter().copied().max().unwrap_or(0) as f64;
    // Only the raw image's own MaxSampleValue, only below the container's top (TIFF's
    // default, which many writers state), and only for samples stored as they are (a
    // LinearizationTable maps them, and the tag is in stored units).
    let stated = match find(&raw, 281) {
        Some(f) if find(&raw, 50712).is_none() => {
            let v = t.num(f, 0)?;
            if v < max {
                v
            } else {
                0.0
            }
        }
        _ => 0.0,
    };
    let top = white.max(largest).max(stated);
    let bits = (8..=16u8)
        .find(|b| top <= ((1u32 << b) - 1) as f64)
        .unwrap_or(16);
    let as_shot_neutral = match find(&ifd0, 50728) {
        Some(f) if f.count >= 3 => {
            let n = [t.num(f, 0)?, t.num(f, 1)?, t.num(f, 2)?];
            if n.iter().all(|v| v.is_finite() && *v > 0.0) {
                n
            } else {
                [1.0; 3]
            }
        }
        _ => [1.0; 3],
    };
    let color_matrix = match find(&ifd0, 50721) {
        Some(f) if f.count >= 9 => {
            let mut m = [[0.0; 3]; 3];
            for (i, v) in m.iter_mut().flatten().enumerate() {
                *v = t.num(f, i as u32)?;
            }
            Some(m)
        }
        _ => None,
    };
    let text = |tag: u16| -> String {
        find(&ifd0, tag)
            .and_then(|f| t.bytes(f.at, f.count as usize).ok())
            .map(|b| {
                String::from_utf8_lossy(b)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .unwrap_or_default()
    };
    Ok(DngImage {
        meta: DngMeta {
            width: width as u32,
            height: height as u32,
            pattern,
            bits,
            black_level: black.round() as u16,
            white_level: white.round() as u16,
            as_shot_neutral,
            color_matrix,
            model: text(50708),
            description: text(270),
            // A malformed tag is an unknown orientation (0), not an unreadable file: the
            // image does not depend on it.
            orientation: match find(&ifd0, 274).or_else(|| find(&raw, 274)) {
                Some(f) => t.num(f, 0).map_or(0, |v| v.clamp(0.0, 65535.0) as u16),
                None => 1,
            },
            ..DngMeta::default()
        },
        black_per_channel,
        samples,
    })
}

/// Black levels that differ by CFA site (BlackLevelRepeatDim 2×2 with four BlackLevel
/// values, relative to the active area as the CFA pattern is), per colour R, G, B (the
/// two green sites averaged); `None` for one level for all sites.
fn per_site_black(
    t: &Tiff<'_>,
    raw: &[(u16, Field)],
    pattern: BayerPattern,
) -> Result<Option<[f64; 3]>, DngError> {
    let (Some(dim), Some(f)) = (find(raw, 50713), find(raw, 50714)) else {
        return Ok(None);
    };
    if dim.count != 2 || (t.num(dim, 0)?, t.num(dim, 1)?) != (2.0, 2.0) || f.count != 4 {
        return Ok(None);
    }
    let v = [t.num(f, 0)?, t.num(f, 1)?, t.num(f, 2)?, t.num(f, 3)?];
    if v.iter().all(|&x| x == v[0]) {
        return Ok(None);
    }
    let (mut sum, mut n) = ([0.0f64; 3], [0u32; 3]);
    for (i, c) in pattern.cell().iter().flatten().enumerate() {
        sum[*c as usize] += v[i];
        n[*c as usize] += 1;
    }
    Ok(Some([0, 1, 2].map(|c| sum[c] / n[c].max(1) as f64)))
}

/// Applies the raw image's LinearizationTable (each stored sample is an index into it;
/// the levels are in the table's units) and crops to its ActiveArea (the masked border
/// rows and columns some cameras store). The CFA pattern is the active area's (it is
/// given relative to the area's top-left corner, as dcraw and LibRaw read it), so it
/// does not move. Returns the samples and the new size.
fn linearize_and_crop(
    t: &Tiff,
    raw: &[(u16, Field)],
    mut samples: Vec<u16>,
    width: u64,
    height: u64,
) -> Result<(Vec<u16>, u64, u64), DngError> {
    if let Some(f) = find(raw, 50712) {
        if f.count == 0 || f.count > 65536 {
            return Err(corrupt(&format!(
                "LinearizationTable of {} entries",
                f.count
            )));
        }
        let table: Vec<u16> = (0..f.count)
            .map(|i| t.num(f, i).map(|v| v.clamp(0.0, 65535.0) as u16))
            .collect::<Result<_, _>>()?;
        let last = table.len() - 1;
        for s in &mut samples {
            *s = table[usize::from(*s).min(last)];
        }
    }
    let Some(f) = find(raw, 50829) else {
        return Ok((samples, width, height));
    };
    if f.count != 4 {
        return Err(corrupt(&format!("ActiveArea of {} values", f.count)));
    }
    let [top, left, bottom, right] = [0, 1, 2, 3].map(|i| t.num(f, i).map(|v| v as u64));
    let (top, left, bottom, right) = (top?, left?, bottom?, right?);
    if top >= bottom || left >= right || bottom > height || right > width {
        return Err(corrupt(&format!(
            "ActiveArea {top},{left},{bottom},{right} of a {width}x{height} image"
        )));
    }
    if (top, left, bottom, right) == (0, 0, height, width) {
        return Ok((samples, width, height));
    }
    let (w, h) = (right - left, bottom - top);
    let mut out = Vec::with_capacity((w * h) as usize);
    for row in samples
        .chunks_exact(width as usize)
        .skip(top as usize)
        .take(h as usize)
    {
        out.extend_from_slice(&row[left as usize..right as usize]);
    }
    Ok((out, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(w: u32, h: u32, pattern: BayerPattern, bits: u8) -> DngMeta {
        DngMeta {
            width: w,
            height: h,
            pattern,
            bits,
            black_level: 64,
            white_level: ((1u32 << bits) - 1) as u16,
            as_shot_neutral: [0.52, 1.0, 0.71],
            color_matrix: color_matrix_from_ccm(&[
                [1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [0.0, 0.0, 1.0],
            ]),
            timestamp_ns: 1_764_000_000_123_000_000,
            exposure_us: 10_000,
            analog_gain: 2.0,
            model: "rawlink sim".into(),
            description: "seq=7".into(),
            orientation: 6,
        }
    }

    #[test]
    fn layout_is_a_little_endian_tiff_with_sorted_tags() {
        let m = meta(4, 2, BayerPattern::Rggb, 12);
        let d = write_dng(&m, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(&d[..8], &[b'I', b'I', 42, 0, 8, 0, 0, 0]);
        let t = Tiff { d: &d, le: true };
        let ifd = t.ifd(8).unwrap();
        let tags: Vec<u16> = ifd.iter().map(|(t, _)| *t).collect();
        let mut sorted = tags.clone();
        sorted.sort();
        assert_eq!(tags, sorted);
        // The strip is the samples, little-endian, where StripOffsets says.
        let off = t.num(find(&ifd, 273).unwrap(), 0).unwrap() as usize;
        assert_eq!(&d[off..off + 4], &[1, 0, 2, 0]);
        assert_eq!(d.len(), off + 16);
        // CFAPattern of RGGB is 0 1 1 2.
        let cfa = find(&ifd, 33422).unwrap();
        assert_eq!(t.bytes(cfa.at, 4).unwrap(), &[0, 1, 1, 2]);
    }

    #[test]
    fn exif_time_is_utc_civil_time() {
        assert_eq!(exif_time(0).0, "1970:01:01 00:00:00");
        // 2026-11-25 20:43:26.5 UTC.
        let (d, s) = exif_time(1_795_639_406_500_000_000);
        assert_eq!((d.as_str(), s.as_str()), ("2026:11:25 20:43:26", "500"));
        assert_eq!(exif_time(951_782_400_000_000_000).0, "2000:02:29 00:00:00");
    }

    #[test]
    fn matrices_invert_and_round_trip() {
        let ccm = [[1.6, -0.4, -0.2], [-0.3, 1.5, -0.2], [0.0, -0.5, 1.5]];
        let cm = color_matrix_from_ccm(&ccm).unwrap();
        let back = ccm_from_color_matrix(&cm).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                assert!((back[i][j] - ccm[i][j]).abs() < 1e-6, "{back:?}");
            }
        }
        assert!(mat_inv(&[[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]]).is_none());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert!(matches!(read_dng(b"hello"), Err(DngError::NotTiff)));
        let mut d = write_dng(&meta(4, 2, BayerPattern::Rggb, 12), &[0; 8]).unwrap();
        d.truncate(d.len() - 4);
        let e = read_dng(&d).unwrap_err().to_string();
        assert!(
            e.contains("past the end") || e.contains("strips hold"),
            "{e}"
        );
    }

    #[test]
    fn levels_without_a_range_are_refused() {
        let m = meta(4, 2, BayerPattern::Rggb, 12);
        for (black, white) in [(0, 0), (64, 64), (100, 64), (0, 4096)] {
            let bad = DngMeta {
                black_level: black,
                white_level: white,
                ..m.clone()
            };
            assert!(write_dng(&bad, &[0; 8]).is_err(), "{black}/{white} written");
        }
        // Files from elsewhere: patch the written tags (both LONG values in IFD 0).
        let good = write_dng(&m, &[0; 8]).unwrap();
        assert_eq!(&good[..4], b"II*\0");
        let patch = |tag: u16, v: u32| {
            let mut d = good.clone();
            patch_field(&mut d, tag, 1, v);
            d
        };
        let e = read_dng(&patch(50717, 0)).unwrap_err().to_string();
        assert!(e.contains("WhiteLevel 0"), "{e}");
        let e = read_dng(&patch(50714, 5000)).unwrap_err().to_string();
        assert!(e.contains("BlackLevel 5000"), "{e}");
        assert_eq!(read_dng(&patch(50714, 100)).unwrap().meta.black_level, 100);
    }

    /// The depth comes back from MaxSampleValue when the white level is lower (a 12-bit
    /// frame with white 2000 is 12-bit, not 11); without the tag, from the white level
    /// and the samples.
    #[test]
    fn the_depth_reads_back_when_white_is_below_the_range() {
        let m = DngMeta {
            white_level: 2000,
            black_level: 256,
            ..meta(4, 2, BayerPattern::Rggb, 12)
        };
        let mut d = write_dng(&m, &[300, 2000, 256, 1999, 300, 400, 500, 600]).unwrap();
        assert_eq!(read_dng(&d).unwrap().meta.bits, 12);
        retag(&mut d, 281, 65000); // a private tag: no MaxSampleValue
        assert_eq!(read_dng(&d).unwrap().meta.bits, 11);
        let d = write_dng(&m, &[300, 2000, 256, 3000, 300, 400, 500, 600]).unwrap();
        let mut d2 = d.clone();
        retag(&mut d2, 281, 65000);
        assert_eq!(read_dng(&d2).unwrap().meta.bits, 12, "a sample above white");
    }

    /// Black levels per CFA site (BlackLevelRepeatDim 2×2) come back per colour, on the
    /// sites the CFA pattern gives them; equal ones are one level.
    #[test]
    fn per_site_black_levels_are_read_per_colour() {
        let per_site = |pattern, levels: [u32; 4]| {
            let mut d = write_dng(&meta(4, 2, pattern, 12), &[0; 8]).unwrap();
            let e = entry(&d, 50713);
            d[e + 8..e + 10].copy_from_slice(&2u16.to_le_bytes());
            d[e + 10..e + 12].copy_from_slice(&2u16.to_le_bytes());
            let at = append_longs(&mut d, &levels);
            patch_field(&mut d, 50714, 4, at);
            read_dng(&d).unwrap()
        };
        // GRBG: G R / B G.
        let r = per_site(BayerPattern::Grbg, [60, 100, 28, 68]);
        assert_eq!(r.black_per_channel, Some([100, 64, 28]));
        assert_eq!(r.meta.black_level, 64); // the mean
        let r = per_site(BayerPattern::Rggb, [100, 64, 64, 28]);
        assert_eq!(r.black_per_channel, Some([100, 64, 28]));
        let r = per_site(BayerPattern::Bggr, [50, 50, 50, 50]);
        assert_eq!((r.black_per_channel, r.meta.black_level), (None, 50));
    }

    /// Where the IFD 0 entry of `tag` starts in a little-endian file.
    fn entry(d: &[u8], tag: u16) -> usize {
        let ifd = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize;
        let n = u16::from_le_bytes([d[ifd], d[ifd + 1]]) as usize;
        (0..n)
            .map(|i| ifd + 2 + 12 * i)
            .find(|&e| u16::from_le_bytes([d[e], d[e + 1]]) == tag)
            .unwrap()
    }

    /// Sets field `tag` of IFD 0 of a little-endian file to LONG `count` `value`.
    fn patch_field(d: &mut [u8], tag: u16, count: u32, value: u32) {
        let e = entry(d, tag);
        d[e + 2..e + 4].copy_from_slice(&4u16.to_le_bytes());
        d[e + 4..e + 8].copy_from_slice(&count.to_le_bytes());
        d[e + 8..e + 12].copy_from_slice(&value.to_le_bytes());
    }

    /// Gives the IFD 0 entry of `from` the tag `to` (a field the writer does not write,
    /// without rebuilding the file).
    fn retag(d: &mut [u8], from: u16, to: u16) {
        let e = entry(d, from);
        d[e..e + 2].copy_from_slice(&to.to_le_bytes());
    }

    /// Appends LONG values to the file; returns their offset.
    fn append_longs(d: &mut Vec<u8>, v: &[u32]) -> u32 {
        let at = d.len() as u32;
        for x in v {
            d.extend_from_slice(&x.to_le_bytes());
        }
        at
    }

    #[test]
    fn orientation_is_read_and_a_malformed_one_is_unknown() {
        let m = meta(4, 2, BayerPattern::Rggb, 12);
        let mut d = write_dng(&m, &[0; 8]).unwrap();
        assert_eq!(read_dng(&d).unwrap().meta.orientation, 6);
        patch_field(&mut d, 274, 1, 3);
        assert_eq!(read_dng(&d).unwrap().meta.orientation, 3);
        // No values at all: the file still reads, with an unknown orientation.
        patch_field(&mut d, 274, 0, 0);
        let r = read_dng(&d).unwrap();
        assert_eq!((r.meta.orientation, r.samples.len()), (0, 8));
        retag(&mut d, 274, 275);
        assert_eq!(
            read_dng(&d).unwrap().meta.orientation,
            1,
            "absent: as stored"
        );
    }

    #[test]
    fn linearization_active_area_and_black_deltas() {
        // 4x4 RGGB, samples 0..16 row by row.
        let samples: Vec<u16> = (0..16).collect();
        let good = write_dng(&meta(4, 4, BayerPattern::Rggb, 12), &samples).unwrap();
        // A LinearizationTable doubling every code (entries past the table's end map to
        // its last entry).
        let mut d = good.clone();
        let table: Vec<u32> = (0..10).map(|v| v * 2).collect();
        let at = append_longs(&mut d, &table);
        retag(&mut d, 274, 50712);
        patch_field(&mut d, 50712, table.len() as u32, at);
        let r = read_dng(&d).unwrap();
        let want: Vec<u16> = (0..16).map(|v: u16| v.min(9) * 2).collect();
        assert_eq!(r.samples, want);
        // An ActiveArea of rows 1..4, columns 1..3 (the pattern is the area's own).
        let mut d = good.clone();
        let at = append_longs(&mut d, &[1, 1, 4, 3]);
        retag(&mut d, 274, 50829);
        patch_field(&mut d, 50829, 4, at);
        let r = read_dng(&d).unwrap();
        assert_eq!((r.meta.width, r.meta.height), (2, 3));
        assert_eq!(r.samples, vec![5, 6, 9, 10, 13, 14]);
        assert_eq!(r.meta.pattern, BayerPattern::Rggb);
        // The whole image as the active area changes nothing; one past it is corrupt.
        let mut d = good.clone();
        let at = append_longs(&mut d, &[0, 0, 4, 4]);
        retag(&mut d, 274, 50829);
        patch_field(&mut d, 50829, 4, at);
        assert_eq!(read_dng(&d).unwrap().samples, samples);
        let mut bad = d.clone();
        let at = append_longs(&mut bad, &[0, 0, 5, 4]);
        patch_field(&mut bad, 50829, 4, at);
        assert!(read_dng(&bad)
            .unwrap_err()
            .to_string()
            .contains("ActiveArea"));
        // Non-zero per-row black levels are refused; all-zero ones are harmless.
        for (v, ok) in [(0, true), (3, false)] {
            let mut d = good.clone();
            let at = append_longs(&mut d, &[v; 4]);
            retag(&mut d, 274, 50716);
            patch_field(&mut d, 50716, 4, at);
            match read_dng(&d) {
                Ok(_) => assert!(ok),
                Err(e) => assert!(!ok && e.to_string().contains("BlackLevelDeltaV"), "{e}"),
            }
        }
    }

    #[test]
    fn an_image_larger_than_its_file_is_refused_before_allocating() {
        let mut d = write_dng(&meta(4, 2, BayerPattern::Rggb, 12), &[0; 8]).unwrap();
        // 16384 x 16384 16-bit samples (512 MiB) claimed by a file of a few hundred bytes.
        patch_field(&mut d, 256, 1, 16384);
        patch_field(&mut d, 257, 1, 16384);
        let e = read_dng(&d).unwrap_err().to_string();
        assert!(
            e.contains("image needs 536870912 bytes, but the whole file has"),
            "{e}"
        );
    }

    #[test]
    fn overlapping_strips_and_strips_outside_the_file_are_refused() {
        let good = write_dng(&meta(4, 2, BayerPattern::Rggb, 12), &[7; 8]).unwrap();
        let t = Tiff { d: &good, le: true };
        let ifd = t.ifd(8).unwrap();
        let off = t.num(find(&ifd, 273).unwrap(), 0).unwrap() as u32;
        // Two 16-byte strips at the same offset for a 4x4 image (32 bytes).
        let mut d = good.clone();
        let arrays = d.len() as u32;
        for v in [off, off, 16, 16] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        patch_field(&mut d, 257, 1, 4);
        patch_field(&mut d, 273, 2, arrays);
        patch_field(&mut d, 279, 2, arrays + 8);
        let e = read_dng(&d).unwrap_err().to_string();
        assert!(e.contains("strips 0 and 1 overlap"), "{e}");
        // The same strips one after the other are read.
        let mut ok = d.clone();
        let second = arrays + 4;
        ok[second as usize..second as usize + 4].copy_from_slice(&(off + 16).to_le_bytes());
        let r = read_dng(&ok).unwrap();
        assert_eq!((r.meta.height, &r.samples[..8]), (4, &[7u16; 8][..]));
        // A strip that runs past the end of the file, even if the image needs less.
        let mut d = good.clone();
        patch_field(&mut d, 279, 1, 1 << 20);
        let e = read_dng(&d).unwrap_err().to_string();
        assert!(e.contains("past the end of the file"), "{e}");
    }

    proptest! {
        #[test]
        fn write_read_round_trip(
            w in 1u32..24, h in 1u32..24,
            p in 0usize..4, bits in prop::sample::select(vec![8u8, 10, 12, 14, 16]),
            seed: u64,
        ) {
            let pattern = BayerPattern::ALL[p];
            let m = meta(w, h, pattern, bits);
            let max = m.white_level as u64;
            let mut s = seed | 1;
            let samples: Vec<u16> = (0..w * h).map(|_| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                (s % (max + 1)) as u16
            }).collect();
            let d = write_dng(&m, &samples).unwrap();
            let r = read_dng(&d).unwrap();
            prop_assert_eq!(&r.samples, &samples);
            prop_assert_eq!(r.meta.pattern, pattern);
            prop_assert_eq!((r.meta.width, r.meta.height, r.meta.bits), (w, h, bits));
            prop_assert_eq!((r.meta.black_level, r.meta.white_level), (64, m.white_level));
            for i in 0..3 {
                prop_assert!((r.meta.as_shot_neutral[i] - m.as_shot_neutral[i]).abs() < 1e-6);
            }
            prop_assert_eq!(r.meta.model.as_str(), "rawlink sim");
            prop_assert_eq!(r.meta.description.as_str(), "seq=7");
            prop_assert_eq!(r.meta.orientation, 6);
            prop_assert!(r.meta.color_matrix.is_some());
        }

        /// Any bytes: an error or an image, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(mut d in proptest::collection::vec(any::<u8>(), 0..400), le: bool) {
            if d.len() >= 8 {
                d[..4].copy_from_slice(if le { b"II*\0" } else { b"MM\0*" });
                d[4..8].copy_from_slice(&if le { 8u32.to_le_bytes() } else { 8u32.to_be_bytes() });
            }
            let _ = read_dng(&d);
        }
    }
}
