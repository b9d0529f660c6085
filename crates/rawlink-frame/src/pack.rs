//! Bit packing of samples for the wire ([`Packing::PackedLsb`]): each row a
//! little-endian bit stream, least significant bit first, padded to a whole byte.

use crate::{Frame, FrameError, FrameHeader, Packing};
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

/// Packs an unpacked frame for the wire. Fails if a sample does not fit its bit depth
/// (packing would change it), so callers can fall back to sending it unpacked.
pub fn pack_frame(frame: &Frame) -> Result<Frame, FrameError> {
    let h = frame.header;
    let raw = frame.raw()?;
    let max = h.format.max_value();
    let mut fmt = h.format;
    fmt.packing = Packing::PackedLsb;
    let stride = fmt.packing.row_bytes(h.width, fmt.bits) as usize;
    let (w, hh) = (h.width as usize, h.height as usize);
    let mut out = vec![0u8; stride * hh];
    let mut row = vec![0u16; w];
    for (y, dst) in out.chunks_exact_mut(stride).enumerate() {
        raw.read_row(y, &mut row);
        if row.iter().any(|&v| v > max) {
            return Err(FrameError::BadBitDepth(fmt.bits));
        }
        pack_row(&row, fmt.bits, dst);
    }
    let header = FrameHeader {
        stride: stride as u32,
        format: fmt,
        ..h
    };
    Frame::new(header, Bytes::from(out))
}

/// Unpacks a [`Packing::PackedLsb`] frame into 16-bit containers; other frames are
/// returned as they are.
pub fn unpack_frame(frame: Frame) -> Result<Frame, FrameError> {
    let h = frame.header;
    if h.format.packing == Packing::U16Le {
        return Ok(frame);
    }
    let (w, hh) = (h.width as usize, h.height as usize);
    let mut out = vec![0u8; w * hh * 2];
    let mut row = vec![0u16; w];
    for (y, dst) in out.chunks_exact_mut(w * 2).enumerate() {
        let src = &frame.payload[y * h.stride as usize..][..h.stride as usize];
        unpack_row(src, h.format.bits, &mut row);
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

    proptest! {
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
