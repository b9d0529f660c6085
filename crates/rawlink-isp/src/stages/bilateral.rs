//! The reference joint-RGB bilateral filter, exact to the bit.
//!
//! `out_c = Σ w·p_c / Σ w` over a (2r+1)² window, `w = spatial(dx,dy) · range(|Δrgb|²)`,
//! with `r = ceil(2σs)`, `spatial = expf((dx²+dy²)·(−0.5/σs²))` and
//! `range = expf(d·(−0.5/σr²))` for the integer squared colour distance `d`.
//! Sums are float32, accumulated tap by tap in dy-major, dx-minor order, as the
//! reference does; the quotient is clamped to `[0, max]` and truncated.
//!
//! Exactness and speed: the range weight depends only on the integer distance, so
//! it is a table lookup (the table ends at the first weight that underflows to 0);
//! the spatial weights are a (2r+1)² table. Both tables come from a bit-exact model
//! of glibc's `expf`. Each lane of the inner loop is a different pixel, so
//! vectorising over pixels keeps every pixel's rounding sequence unchanged.

use crate::expf::expf_glibc;
use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

/// Bilateral filter with precomputed weight tables.
#[derive(Debug, Clone)]
pub struct Bilateral {
    radius: usize,
    spatial: Vec<f32>,
    /// Range weights by integer distance, zero-padded to a power-of-two length so a
    /// masked index needs no bounds check.
    range: Vec<f32>,
    /// Entries of `range` up to and including the first zero.
    used: usize,
}

impl Bilateral {
    /// Tables for spatial sigma `sigma_s` and range sigma `sigma_r` (sample units).
    pub fn new(sigma_s: f32, sigma_r: f32) -> Self {
        let radius = (2.0 * sigma_s).ceil() as usize;
        let s_coeff = -0.5f32 / (sigma_s * sigma_s);
        let r_coeff = -0.5f32 / (sigma_r * sigma_r);
        let r = radius as i32;
        let mut spatial = Vec::new();
        for dy in -r..=r {
            for dx in -r..=r {
                spatial.push(expf_glibc((dx * dx + dy * dy) as f32 * s_coeff));
            }
        }
        let mut range = Vec::new();
        for d in 0u32.. {
            let v = expf_glibc(d as f32 * r_coeff);
            range.push(v);
            if v == 0.0 {
                break;
            }
        }
        let used = range.len();
        // The kernel sums three clamped squares in u32; the padded length keeps that
        // below 2^32 for any table shorter than 2^30 (σr below ~70 000 code values).
        assert!(used <= 1 << 30, "range sigma {sigma_r} is too large");
        range.resize(used.next_power_of_two(), 0.0);
        Self {
            radius,
            spatial,
            range,
            used,
        }
    }

    /// Window radius in pixels.
    pub fn radius(&self) -> usize {
        self.radius
    }

    /// Range-weight table (ends with one 0.0).
    pub fn range_table(&self) -> &[f32] {
        &self.range[..self.used]
    }
}

/// One output row of the bilateral filter, as a `pulp` kernel.
struct RowKernel<'a> {
    filter: &'a Bilateral,
    padded: [&'a [u16]; 3],
    pw: usize,
    y: usize,
    top: f32,
    buf: &'a mut [f32],
    dist: &'a mut [u32],
    out: [&'a mut [u16]; 3],
}

impl pulp::WithSimd for RowKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self {
            filter,
            padded,
            pw,
            y,
            top,
            buf,
            dist,
            out,
        } = self;
        let [q0, q1, q2] = out;
        let w = q0.len();
        let r = filter.radius;
        // Every index past the used part of the table reads 0.0, the weight the
        // reference gets from an underflowing expf. The slice of exactly `mask + 1`
        // entries lets the compiler drop the bounds check on `d & mask`.
        let mask = filter.range.len() - 1;
        let range = &filter.range[..mask + 1];
        let last = mask as u32;
        buf.fill(0.0);
        let (a0, rest) = buf.split_at_mut(w);
        let (a1, rest) = rest.split_at_mut(w);
        let (a2, rest) = rest.split_at_mut(w);
        let (aw, rest) = rest.split_at_mut(w);
        let wgt = &mut rest[..w];
        let dist = &mut dist[..w];
        let c0 = &padded[0][(y + r) * pw + r..][..w];
        let c1 = &padded[1][(y + r) * pw + r..][..w];
        let c2 = &padded[2][(y + r) * pw + r..][..w];
        let mut tap = 0;
        for ty in 0..=2 * r {
            for tx in 0..=2 * r {
                let sw = filter.spatial[tap];
                tap += 1;
                let off = (y + ty) * pw + tx;
                let n0 = &padded[0][off..off + w];
                let n1 = &padded[1][off..off + w];
                let n2 = &padded[2][off..off + w];
                // Pass 1 (vectorises): squared colour distance in integers, each term
                // and the sum clamped to the table's last (zero) entry. The reference's
                // float32 sum of the same integer squares is exact wherever its weight
                // is non-zero, so the index is the same.
                for ((((d, &m0), &m1), &m2), ((&k0, &k1), &k2)) in dist
                    .iter_mut()
                    .zip(n0)
                    .zip(n1)
                    .zip(n2)
                    .zip(c0.iter().zip(c1).zip(c2))
                {
                    let a0 = (m0 as i32 - k0 as i32).unsigned_abs();
                    let a1 = (m1 as i32 - k1 as i32).unsigned_abs();
                    let a2 = (m2 as i32 - k2 as i32).unsigned_abs();
                    *d =
                        ((a0 * a0).min(last) + (a1 * a1).min(last) + (a2 * a2).min(last)).min(last);
                }
                // Pass 2: table lookups. Scalar loads: the table (1 MiB at σr = 30)
                // does not fit L1, and AVX2/AVX-512 gathers measured no faster here.
                for (g, &d) in wgt.iter_mut().zip(dist.iter()) {
                    *g = range[d as usize & mask] * sw;
                }
                // Pass 3 (vectorises): accumulate tap by tap in the reference's order,
                // multiply then add (no fused multiply-add).
                for x in 0..w {
                    let wv = wgt[x];
                    a0[x] += wv * n0[x] as f32;
                    a1[x] += wv * n1[x] as f32;
                    a2[x] += wv * n2[x] as f32;
                    aw[x] += wv;
                }
            }
        }
        for (q, a) in [(q0, &*a0), (q1, &*a1), (q2, &*a2)] {
            for x in 0..w {
                q[x] = (a[x] / aw[x]).clamp(0.0, top) as u16;
            }
        }
    }
}

impl RgbStage for Bilateral {
    fn name(&self) -> &'static str {
        "denoise"
    }
    fn apply(&self, img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let (w, h) = (img.width, img.height);
        let r = self.radius;
        let pw = w + 2 * r;
        // Edge-padded planes, so taps need no bounds logic. Codes stay u16 (half the
        // cache footprint of f32) and convert exactly to f32 where they are summed.
        let padded: Vec<Vec<u16>> = img
            .planes
            .par_iter()
            .map(|p| {
                let mut out = vec![0u16; pw * (h + 2 * r)];
                for py in 0..h + 2 * r {
                    let sy = py.saturating_sub(r).min(h - 1);
                    let src = &p[sy * w..(sy + 1) * w];
                    let dst = &mut out[py * pw..(py + 1) * pw];
                    dst[..r].fill(src[0]);
                    dst[r..r + w].copy_from_slice(src);
                    dst[r + w..].fill(src[w - 1]);
                }
                out
            })
            .collect();
        drop(img);
        let top = ctx.max_value as f32;
        let mut out = RgbImage::new(w, h);
        // Runtime dispatch: the row kernel is compiled for AVX2/AVX-512 too and the best
        // is picked at run time. Contraction into fused multiply-add stays off, so the
        // results are the same on every path.
        let arch = pulp::Arch::new();
        out.par_rows_mut().for_each_init(
            || (vec![0f32; 5 * w], vec![0u32; w]),
            |(buf, dist), (y, [q0, q1, q2])| {
                arch.dispatch(RowKernel {
                    filter: self,
                    padded: [&padded[0], &padded[1], &padded[2]],
                    pw,
                    y,
                    top,
                    buf,
                    dist,
                    out: [q0, q1, q2],
                })
            },
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_reference_shape() {
        let b = Bilateral::new(2.0, 30.0);
        assert_eq!(b.radius(), 4);
        assert_eq!(b.spatial.len(), 81);
        assert_eq!(b.spatial[40], 1.0);
        let t = b.range_table();
        assert_eq!(t[0], 1.0);
        assert_eq!(*t.last().unwrap(), 0.0);
        assert!(t[t.len() - 2] > 0.0);
        // expf underflows to 0 just below -103.97, i.e. d ≈ 187 150 at σr = 30.
        assert!((186_000..188_500).contains(&t.len()), "{}", t.len());
    }
}
