//! Packed sample layouts: rawlink's wire packing ([`Packing::PackedLsb`]: each row a
//! little-endian bit stream, least significant bit first, padded to a whole byte) and
//! MIPI CSI-2 packing ([`Packing::Mipi`], V4L2's `SRGGB10P`/`12P`/`14P`), both ways.

use crate::{mipi_group, Frame, FrameError, FrameHeader, Packing};
use bytes::Bytes;

/// Packs `src` (`bits`-bit samples) into `dst`, which must hold
/// `ceil(src.len() * bits / 8)` bytes. Bits above `bits` are ignored.
pub fn pack_row(src: &[u16], bits: u8, dst: &mut [u8]) {
    match bits {
        12 => {
            let mut pairs = src.chunks_exact(2);
            let mut out = dst.chunks_exact_mut(3);
            for (p, o) in (&mut pairs).zip(&mut out) {
                let (a, b) = (p[0] & 0xfff, p[1] & 0xfff);
                o[0] = a as u8;
                o[1] = ((a >> 8) | (b << 4)) as u8;
                o[2] = (b >> 4) as u8;
            }
            if let [a] = pairs.remainder() {
                let n = src.len() / 2 * 3;
                dst[n] = *a as u8;
                dst[n + 1] = ((a >> 8) & 0xf) as u8;
            }
        }
        16 => {
            for (s, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
                o.copy_from_slice(&s.to_le_bytes());
            }
        }
        _ => {
            let mask = (1u64 << bits) - 1;
            let (mut acc, mut nbits, mut k) = (0u64, 0u32, 0usize);
            for &s in src {
                acc |= (s as u64 & mask) << nbits;
                nbits += bits as u32;
                while nbits >= 8 {
                    dst[k] = acc as u8;
                    k += 1;
                    acc >>= 8;
                    nbits -= 8;
                }
            }
            if nbits > 0 {
                dst[k] = acc as u8;
            }
        }
    }
}

/// Unpacks `dst.len()` samples of `bits` bits from `src`.
pub fn unpack_row(src: &[u8], bits: u8, dst: &mut [u16]) {
    match bits {
        12 => {
            let n = dst.len();
            let mut out = dst.chunks_exact_mut(2);
            for (o, i) in (&mut out).zip(src.chunks_exact(3)) {
                o[0] = i[0] as u16 | ((i[1] as u16 & 0xf) << 8);
                o[1] = (i[1] as u16 >> 4) | ((i[2] as u16) << 4);
            }
            if n % 2 == 1 {
                let k = n / 2 * 3;
                dst[n - 1] = src[k] as u16 | ((src[k + 1] as u16 & 0xf) << 8);
            }
        }
        16 => {
            for (d, i) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = u16::from_le_bytes([i[0], i[1]]);
            }
        }
        _ => {
            let mask = (1u64 << bits) - 1;
            let (mut acc, mut nbits, mut k) = (0u64, 0u32, 0usize);
            for d in dst.iter_mut() {
                while nbits < bits as u32 {
                    acc |= (src[k] as u64) << nbits;
                    k += 1;
                    nbits += 8;
                }
                *d = (acc & mask) as u16;
                acc >>= bits;
                nbits -= bits as u32;
            }
        }
    }
}

/// Packs `src` into MIPI CSI-2 groups at `bits` (10, 12 or 14) in `dst`, which must
/// hold `Packing::Mipi.row_bytes(src.len(), bits)` bytes; a partial last group is
/// zero-padded. Bits above `bits` are ignored.
pub fn pack_row_mipi(src: &[u16], bits: u8, dst: &mut [u8]) -> Result<(), FrameError> {
    let (px, bytes) = mipi_group(bits).ok_or(FrameError::BadBitDepth(bits))?;
    let (px, bytes) = (px as usize, bytes as usize);
    let low = bits - 8;
    let mask = (1u16 << bits) - 1;
    for (g, out) in src.chunks(px).zip(dst.chunks_exact_mut(bytes)) {
        let mut p = [0u16; 4];
        for (d, s) in p.iter_mut().zip(g) {
            *d = s & mask;
        }
        // The high 8 bits of each pixel, one byte each.
        for k in 0..px {
            out[k] = (p[k] >> low) as u8;
        }
        // Then the low bits of every pixel, packed LSB first from pixel 0.
        let lowmask = (1u32 << low) - 1;
        let mut acc = 0u32;
        for (k, v) in p[..px].iter().enumerate() {
            acc |= (*v as u32 & lowmask) << (k as u32 * low as u32);
        }
        for (k, o) in out[px..].iter_mut().enumerate() {
            *o = (acc >> (8 * k)) as u8;
        }
    }
    Ok(())
}

/// Unpacks `dst.len()` samples from MIPI CSI-2 groups at `bits` (10, 12 or 14).
pub fn unpack_row_mipi(src: &[u8], bits: u8, dst: &mut [u16]) -> Result<(), FrameError> {
    let (px, bytes) = mipi_group(bits).ok_or(FrameError::BadBitDepth(bits))?;
    let (px, bytes) = (px as usize, bytes as usize);
    let low = bits - 8;
    let lowmask = (1u32 << low) - 1;
    for (d, g) in dst.chunks_mut(px).zip(src.chunks_exact(bytes)) {
        let mut acc = 0u32;
        for (k, b) in g[px..].iter().enumerate() {
            acc |= (*b as u32) << (8 * k);
        }
        for (k, v) in d.iter_mut().enumerate() {
            let lsb = (acc >> (k as u32 * low as u32)) & lowmask;
            *v = ((g[k] as u16) << low) | lsb as u16;
        }
    }
    Ok(())
}

/// Re-lays an unpacked (16-bit container) frame out in `packing`; fails if a sample
/// does not fit its bit depth (packing would change it) or the depth has no such layout.
pub fn pack_frame_as(frame: &Frame, packing: Packing) -> Result<Frame, FrameError> {
    let h = frame.header;
    let raw = frame.raw()?;
    let max = h.format.max_value();
    let mut fmt = h.format;
    fmt.packing = packing;
    let stride = packing.row_bytes(h.width, fmt.bits) as usize;
    let (w, hh) = (h.width as usize, h.height as usize);
    let mut out = vec![0u8; stride * hh];
    let mut row = vec![0u16; w];
    for (y, dst) in out.chunks_exact_mut(stride).enumerate() {
        raw.read_row(y, &mut row);
        if row.iter().any(|&v| v > max) {
            return Err(FrameError::BadBitDepth(fmt.bits));
        }
        match packing {
            Packing::U16Le => {
                for (o, v) in dst.chunks_exact_mut(2).zip(&row) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            Packing::PackedLsb => pack_row(&row, fmt.bits, dst),
            Packing::Mipi => pack_row_mipi(&row, fmt.bits, dst)?,
        }
    }
    let header = FrameHeader {
        stride: stride as u32,
        format: fmt,
        ..h
    };
    Frame::new(header, Bytes::from(out))
}

/// Packs an unpacked frame for the wire. Fails if a sample does not fit its bit depth
/// (packing would change it), so callers can fall back to sending it unpacked.
pub fn pack_frame(frame: &Frame) -> Result<Frame, FrameError> {
    pack_frame_as(frame, Packing::PackedLsb)
}

/// Unpacks a [`Packing::PackedLsb`] or [`Packing::Mipi`] frame (or one with padded
/// rows) into plain 16-bit containers; unpacked frames are returned as they are.
pub fn unpack_frame(frame: Frame) -> Result<Frame, FrameError> {
    let h = frame.header;
    if h.format.packing == Packing::U16Le && h.stride == h.width * 2 {
        return Ok(frame);
    }
    let (w, hh) = (h.width as usize, h.height as usize);
    let mut out = vec![0u8; w * hh * 2];
    let mut row = vec![0u16; w];
    for (y, dst) in out.chunks_exact_mut(w * 2).enumerate() {
        let src = &frame.payload[y * h.stride as usize..][..h.stride as usize];
        match h.format.packing {
            Packing::U16Le => unpack_row(src, 16, &mut row),
            Packing::PackedLsb => unpack_row(src, h.format.bits, &mut row),
            Packing::Mipi => unpack_row_mipi(src, h.format.bits, &mut row)?,
        }
        for (o, v) in dst.chunks_exact_mut(2).zip(&row) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    }
    let mut fmt = h.format;
    fmt.packing = Packing::U16Le;
    let header = FrameHeader {
        stride: (w * 2) as u32,
        format: fmt,
        ..h
    };
    Frame::new(header, Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BayerPattern, PixelFormat};
    use proptest::prelude::*;

    /// Golden vectors written out by hand from the bit layout.
    #[test]
    fn golden_vectors() {
        let mut b = [0u8; 3];
        pack_row(&[0xABC, 0x123], 12, &mut b);
        assert_eq!(b, [0xBC, 0x3A, 0x12]);
        let mut b = [0u8; 5];
        pack_row(&[0x3FF, 0x000, 0x155, 0x2AA], 10, &mut b);
        assert_eq!(b, [0xFF, 0x03, 0x50, 0x95, 0xAA]);
        let mut b = [0u8; 2];
        pack_row(&[0xAB, 0xCD], 8, &mut b);
        assert_eq!(b, [0xAB, 0xCD]);
        // 14-bit: 0x3FFF then 0x0001 -> bits 0..13 ones, bit 14 one.
        let mut b = [0u8; 4];
        pack_row(&[0x3FFF, 0x0001], 14, &mut b);
        assert_eq!(b, [0xFF, 0x7F, 0x00, 0x00]);
        let mut u = [0u16; 4];
        unpack_row(&[0xFF, 0x03, 0x50, 0x95, 0xAA], 10, &mut u);
        assert_eq!(u, [0x3FF, 0x000, 0x155, 0x2AA]);
        // Odd width at 12 bits: the last sample takes 1.5 bytes.
        let mut b = [0u8; 5];
        pack_row(&[0x123, 0x456, 0x789], 12, &mut b);
        assert_eq!(b, [0x23, 0x61, 0x45, 0x89, 0x07]);
        let mut u = [0u16; 3];
        unpack_row(&b, 12, &mut u);
        assert_eq!(u, [0x123, 0x456, 0x789]);
    }

    #[test]
    fn twelve_bit_frames_are_three_quarters_the_size() {
        let fmt = PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap();
        let payload: Vec<u8> = (0..640 * 4u32)
            .flat_map(|i| ((i * 7) as u16 & 0xfff).to_le_bytes())
            .collect();
        let f = Frame::new(FrameHeader::new(1, 640, 4, fmt), payload.into()).unwrap();
        let p = pack_frame(&f).unwrap();
        assert_eq!(p.payload.len() * 4, f.payload.len() * 3);
        assert_eq!(unpack_frame(p).unwrap().payload, f.payload);
        // A sample above the depth cannot be packed.
        let mut bad = f.payload.to_vec();
        bad[0] = 0xff;
        bad[1] = 0xff;
        let bad = Frame::new(f.header, bad.into()).unwrap();
        assert!(pack_frame(&bad).is_err());
    }

    /// MIPI CSI-2 golden vectors, written out by hand from the CSI-2 / V4L2 `*P` format
    /// definitions (not from this code).
    #[test]
    fn mipi_golden_vectors() {
        // RAW10: bytes 0..3 = P[9:2]; byte 4 = P0[1:0] | P1[1:0]<<2 | P2[1:0]<<4 | P3[1:0]<<6.
        // 0x3FF -> FF,11; 0x000 -> 00,00; 0x155 -> 55,01; 0x2AA -> AA,10.
        // byte 4 = 0b10_01_00_11 = 0x93.
        let px10 = [0x3FF, 0x000, 0x155, 0x2AA];
        let raw10 = [0xFF, 0x00, 0x55, 0xAA, 0x93];
        // A second group: 0x001, 0x002, 0x203, 0x3FC -> 00,01; 00,10; 80,11; FF,00.
        let px10b = [0x001, 0x002, 0x203, 0x3FC];
        let raw10b = [0x00, 0x00, 0x80, 0xFF, 0b00_11_10_01];
        // RAW12: byte 0 = P0[11:4], byte 1 = P1[11:4], byte 2 = P1[3:0]<<4 | P0[3:0].
        let px12 = [0xABC, 0x123];
        let raw12 = [0xAB, 0x12, 0x3C];
        // RAW14: bytes 0..3 = P[13:6]; bytes 4..6 = P0[5:0] | P1[5:0]<<6 | P2[5:0]<<12 |
        // P3[5:0]<<18, little-endian. P = 0x3FFF, 0x0001, 0x2AAA, 0x1555:
        // high bytes FF, 00, AA, 55; lows 0x3F, 0x01, 0x2A, 0x15 ->
        // 0x3F | 0x01<<6 | 0x2A<<12 | 0x15<<18 = 0x56A07F -> 7F, A0, 56. (V4L2's table:
        // byte 6 = P3low<<2 | P2low[5:4] = 0x54 | 0x2 = 0x56.)
        let px14 = [0x3FFF, 0x0001, 0x2AAA, 0x1555];
        let raw14 = [0xFF, 0x00, 0xAA, 0x55, 0x7F, 0xA0, 0x56];
        for (bits, px, raw) in [
            (10u8, &px10[..], &raw10[..]),
            (10, &px10b[..], &raw10b[..]),
            (12, &px12[..], &raw12[..]),
            (14, &px14[..], &raw14[..]),
        ] {
            let mut b = vec![0u8; raw.len()];
            pack_row_mipi(px, bits, &mut b).unwrap();
            assert_eq!(b, raw, "pack RAW{bits}");
            let mut u = vec![0u16; px.len()];
            unpack_row_mipi(raw, bits, &mut u).unwrap();
            assert_eq!(u, px, "unpack RAW{bits}");
        }
        // A partial group is zero-padded: 5 RAW10 pixels take two groups (10 bytes).
        assert_eq!(Packing::Mipi.row_bytes(5, 10), 10);
        assert_eq!(Packing::Mipi.row_bytes(640, 12), 960);
        assert_eq!(Packing::Mipi.row_bytes(640, 14), 1120);
        let mut b = vec![0xEEu8; 10];
        pack_row_mipi(&[0x3FF, 0, 0x155, 0x2AA, 0x3FF], 10, &mut b).unwrap();
        assert_eq!(b, [0xFF, 0x00, 0x55, 0xAA, 0x93, 0xFF, 0, 0, 0, 0x03]);
        assert!(pack_row_mipi(&[1], 12 + 1, &mut b).is_err());
    }

    /// The V4L2 unpacked layouts, by hand from their definitions: 8-bit is one byte per
    /// sample; 10/12/14/16-bit are little-endian 16-bit words with the value in the low
    /// bits (`SRGGB10`: "each pixel stored in a 16-bit word, with 6 unused high bits").
    #[test]
    fn v4l2_unpacked_golden_vectors() {
        let fmt = |cc: &[u8; 4]| crate::PixelFormat::from_fourcc(*cc).unwrap();
        let cases: [(&[u8; 4], &[u16], &[u8]); 5] = [
            (b"RGGB", &[0xAB, 0x01], &[0xAB, 0x01]),
            (b"RG10", &[0x3FF, 0x155], &[0xFF, 0x03, 0x55, 0x01]),
            (b"BA12", &[0xABC, 0x001], &[0xBC, 0x0A, 0x01, 0x00]),
            (b"GR14", &[0x3FFF, 0x2AAA], &[0xFF, 0x3F, 0xAA, 0x2A]),
            (b"BYR2", &[0xFFFF, 0x1234], &[0xFF, 0xFF, 0x34, 0x12]),
        ];
        for (cc, px, bytes) in cases {
            let f = fmt(cc);
            let unpacked = PixelFormat::unpacked(f.pattern, f.bits).unwrap();
            let payload: Vec<u8> = px.iter().flat_map(|v| v.to_le_bytes()).collect();
            let frame =
                Frame::new(FrameHeader::new(1, 2, 1, unpacked), payload.clone().into()).unwrap();
            let p = pack_frame_as(&frame, f.packing).unwrap();
            assert_eq!(&p.payload[..], bytes, "{}", String::from_utf8_lossy(cc));
            assert_eq!(unpack_frame(p).unwrap().payload, payload);
        }
    }

    /// Every V4L2 fourcc, through its own layout: frame -> that layout -> unpacked gives
    /// the same samples, and the packed row size is V4L2's bytesperline for that format.
    #[test]
    fn every_v4l2_format_round_trips() {
        for (cc, fmt) in crate::V4L2_BAYER_FORMATS {
            let (w, h) = (12u32, 3u32);
            let unpacked = PixelFormat::unpacked(fmt.pattern, fmt.bits).unwrap();
            let max = unpacked.max_value() as u32;
            let payload: Vec<u8> = (0..w * h)
                .flat_map(|i| ((i.wrapping_mul(2654435761) % (max + 1)) as u16).to_le_bytes())
                .collect();
            let f = Frame::new(FrameHeader::new(1, w, h, unpacked), payload.into()).unwrap();
            let p = pack_frame_as(&f, fmt.packing).unwrap();
            let bpl = match (fmt.bits, fmt.packing) {
                (8, _) => w,
                (_, Packing::U16Le) => 2 * w,
                (10, Packing::Mipi) => w * 5 / 4,
                (12, Packing::Mipi) => w * 3 / 2,
                (14, Packing::Mipi) => w * 7 / 4,
                other => panic!("unexpected {other:?}"),
            };
            let name = String::from_utf8_lossy(&cc).into_owned();
            assert_eq!(p.header.stride, bpl, "{name}");
            assert_eq!(p.header.format, fmt, "{name}");
            assert_eq!(PixelFormat::from_fourcc(cc), Some(fmt), "{name}");
            assert_eq!(fmt.fourcc(), Some(cc), "{name}");
            assert_eq!(unpack_frame(p).unwrap().payload, f.payload, "{name}");
        }
    }

    proptest! {
        #[test]
        fn mipi_round_trip(bits in prop::sample::select(vec![10u8, 12, 14]), w in 1usize..40, seed: u64) {
            let max = (1u32 << bits) - 1;
            let mut s = seed | 1;
            let px: Vec<u16> = (0..w).map(|_| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                (s % (max as u64 + 1)) as u16
            }).collect();
            let mut b = vec![0u8; Packing::Mipi.row_bytes(w as u32, bits) as usize];
            pack_row_mipi(&px, bits, &mut b).unwrap();
            let mut u = vec![0u16; w];
            unpack_row_mipi(&b, bits, &mut u).unwrap();
            prop_assert_eq!(u, px);
        }

        #[test]
        fn round_trip_every_depth(bits in 8u8..=16, w in 1usize..70, h in 1usize..5, seed: u64) {
            let fmt = PixelFormat::unpacked(BayerPattern::Gbrg, bits).unwrap();
            let max = fmt.max_value() as u64;
            let mut s = seed | 1;
            let payload: Vec<u8> = (0..w * h).flat_map(|_| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                ((s % (max + 1)) as u16).to_le_bytes()
            }).collect();
            let f = Frame::new(FrameHeader::new(9, w as u32, h as u32, fmt), payload.into()).unwrap();
            let p = pack_frame(&f).unwrap();
            prop_assert_eq!(p.header.stride as usize, (w * bits as usize).div_ceil(8));
            let u = unpack_frame(p).unwrap();
            prop_assert_eq!(u.header, f.header);
            prop_assert_eq!(u.payload, f.payload);
        }
    }
}
