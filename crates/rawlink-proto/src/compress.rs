//! Lossless compression tuned for Bayer data (codec 1, "rawlink CFA-LZ4").
//!
//! Generic LZ gains almost nothing on noisy 12-bit samples. This codec first makes the
//! data predictable, then lets LZ4 take the redundancy that is left:
//!
//! 1. **CFA-aware prediction.** Each sample is predicted by the previous sample of the
//!    *same colour* in its row (two columns back), the first two of a row by the same
//!    column two rows up (same colour again); the residual is taken mod 2^16.
//! 2. **Zigzag.** Residuals map to `0, 1, 2, …` for `0, −1, 1, …`, so small residuals of
//!    either sign have a zero high byte.
//! 3. **Byte shuffle.** All high bytes, then all low bytes. The high-byte stream is
//!    mostly zeros and compresses to almost nothing with LZ4; the low-byte stream is
//!    close to noise and is stored raw unless LZ4 actually shrinks it.
//!
//! Payload layout: `u8` low-stream mode (0 raw, 1 LZ4), `u32` LE length of the LZ4
//! high-byte stream, that stream, then the low-byte stream. The decoded size is always
//! `stride × height` of the frame header, so decompression never allocates more than the
//! header allows.

/// Codec id carried in header byte 14 (flags bit 0 set).
pub const CODEC_CFA_LZ4: u8 = 1;

/// Why a compressed payload could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompressError {
    /// The payload is shorter than its own structure says.
    #[error("compressed payload truncated")]
    Truncated,
    /// LZ4 data is corrupt or decodes to the wrong size.
    #[error("corrupt LZ4 stream: {0}")]
    Lz4(String),
    /// Unknown low-stream mode.
    #[error("unknown low-byte stream mode {0}")]
    BadMode(u8),
    /// The unpacked size is not whole 16-bit rows.
    #[error("geometry does not describe 16-bit rows")]
    Geometry,
}

#[inline]
fn zigzag(d: u16) -> u16 {
    let d = d as i16;
    ((d << 1) ^ (d >> 15)) as u16
}

#[inline]
fn unzigzag(z: u16) -> u16 {
    ((z >> 1) as i16 ^ -((z & 1) as i16)) as u16
}

/// Compresses `w × h` little-endian u16 samples (`stride = 2w`).
pub fn compress(data: &[u8], w: usize, h: usize) -> Vec<u8> {
    let n = w * h;
    debug_assert_eq!(data.len(), n * 2);
    let mut hi = vec![0u8; n];
    let mut lo = vec![0u8; n];
    // Rows y-2, y-1 and y as u16, reused.
    let mut rows = [vec![0u16; w], vec![0u16; w], vec![0u16; w]];
    for y in 0..h {
        let [r0, r1, r2] = &mut rows;
        std::mem::swap(r0, r1); // r0 <- y-2, r1 <- y-1 (after the next swap)
        std::mem::swap(r1, r2);
        let (up2, cur) = (&*r0, &mut *r2);
        for (c, b) in cur
            .iter_mut()
            .zip(data[2 * y * w..2 * (y + 1) * w].chunks_exact(2))
        {
            *c = u16::from_le_bytes([b[0], b[1]]);
        }
        let (hrow, lrow) = (&mut hi[y * w..(y + 1) * w], &mut lo[y * w..(y + 1) * w]);
        for x in 0..w.min(2) {
            let pred = if y >= 2 { up2[x] } else { 0 };
            let z = zigzag(cur[x].wrapping_sub(pred));
            hrow[x] = (z >> 8) as u8;
            lrow[x] = z as u8;
        }
        for x in 2..w {
            let z = zigzag(cur[x].wrapping_sub(cur[x - 2]));
            hrow[x] = (z >> 8) as u8;
            lrow[x] = z as u8;
        }
    }
    let hi_c = lz4_flex::block::compress(&hi);
    // The low bytes of noisy data are close to random: try LZ4 on a sample first and
    // store them raw when it would not pay (it saves most of the encode time).
    let sample = &lo[..lo.len().min(16 * 1024)];
    let worth_it = lz4_flex::block::compress(sample).len() * 100 < sample.len() * 97;
    let (mode, lo_out) = match worth_it.then(|| lz4_flex::block::compress(&lo)) {
        Some(lo_c) if lo_c.len() < lo.len() => (1u8, lo_c),
        _ => (0u8, lo),
    };
    let mut out = Vec::with_capacity(5 + hi_c.len() + lo_out.len());
    out.push(mode);
    out.extend_from_slice(&(hi_c.len() as u32).to_le_bytes());
    out.extend_from_slice(&hi_c);
    out.extend_from_slice(&lo_out);
    out
}

/// Decompresses into exactly `out_len` bytes of `w`-wide u16 rows.
pub fn decompress(payload: &[u8], w: usize, out_len: usize) -> Result<Vec<u8>, CompressError> {
    if w == 0 || !out_len.is_multiple_of(2 * w) {
        return Err(CompressError::Geometry);
    }
    let n = out_len / 2;
    let (&mode, rest) = payload.split_first().ok_or(CompressError::Truncated)?;
    if rest.len() < 4 {
        return Err(CompressError::Truncated);
    }
    let hi_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    if rest.len() < hi_len {
        return Err(CompressError::Truncated);
    }
    let (hi_c, lo_in) = rest.split_at(hi_len);
    let mut hi = vec![0u8; n];
    let got = lz4_flex::block::decompress_into(hi_c, &mut hi)
        .map_err(|e| CompressError::Lz4(e.to_string()))?;
    if got != n {
        return Err(CompressError::Lz4(format!("high bytes: {got} of {n}")));
    }
    let lo: std::borrow::Cow<'_, [u8]> = match mode {
        0 if lo_in.len() == n => lo_in.into(),
        0 => return Err(CompressError::Truncated),
        1 => {
            let mut lo = vec![0u8; n];
            let got = lz4_flex::block::decompress_into(lo_in, &mut lo)
                .map_err(|e| CompressError::Lz4(e.to_string()))?;
            if got != n {
                return Err(CompressError::Lz4(format!("low bytes: {got} of {n}")));
            }
            lo.into()
        }
        m => return Err(CompressError::BadMode(m)),
    };
    let mut out = vec![0u8; out_len];
    let h = n / w;
    let mut rows = [vec![0u16; w], vec![0u16; w], vec![0u16; w]];
    for y in 0..h {
        let [r0, r1, r2] = &mut rows;
        std::mem::swap(r0, r1);
        std::mem::swap(r1, r2);
        let (up2, cur) = (&*r0, &mut *r2);
        let (hrow, lrow) = (&hi[y * w..(y + 1) * w], &lo[y * w..(y + 1) * w]);
        for x in 0..w {
            let z = ((hrow[x] as u16) << 8) | lrow[x] as u16;
            let pred = if x >= 2 {
                cur[x - 2]
            } else if y >= 2 {
                up2[x]
            } else {
                0
            };
            cur[x] = pred.wrapping_add(unzigzag(z));
        }
        for (o, v) in out[2 * y * w..2 * (y + 1) * w]
            .chunks_exact_mut(2)
            .zip(cur.iter())
        {
            o.copy_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zigzag_maps_small_residuals_to_small_codes() {
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(0xffff), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(0x8000), 0xffff);
        for v in [0u16, 1, 2, 0x7fff, 0x8000, 0xffff, 1234] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn corrupt_payloads_are_errors_not_panics() {
        let data: Vec<u8> = (0..64u16).flat_map(|v| (v * 37).to_le_bytes()).collect();
        let c = compress(&data, 8, 8);
        assert_eq!(decompress(&c, 8, 128).unwrap(), data);
        assert!(decompress(&c[..3], 8, 128).is_err());
        assert!(decompress(&c, 8, 130).is_err());
        let mut bad = c.clone();
        bad[0] = 7;
        assert_eq!(decompress(&bad, 8, 128), Err(CompressError::BadMode(7)));
    }

    proptest! {
        #[test]
        fn round_trip_is_exact(w in 1usize..40, h in 1usize..12, noise in 0u16..4096, seed: u64) {
            let mut s = seed | 1;
            let data: Vec<u8> = (0..w * h).flat_map(|i| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                let base = ((i % w) * 50 + (i / w) * 3) as u16;
                base.wrapping_add((s % (noise as u64 + 1)) as u16).to_le_bytes()
            }).collect();
            let c = compress(&data, w, h);
            prop_assert_eq!(decompress(&c, w, data.len()).unwrap(), data);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), w in 1usize..16, h in 1usize..16) {
            let _ = decompress(&bytes, w, w * h * 2);
        }
    }
}
