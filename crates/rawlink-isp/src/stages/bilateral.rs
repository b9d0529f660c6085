//! The reference joint-RGB bilateral filter: fast and within ±1 LSB, or exact to the bit.
//!
//! `out_c = Σ w·p_c / Σ w` over a (2r+1)² window, `w = spatial(dx,dy) · range(|Δrgb|²)`,
//! with `r = ceil(2σs)`, `spatial = expf((dx²+dy²)·(−0.5/σs²))` and
//! `range = expf(d·(−0.5/σr²))` for the integer squared colour distance `d`.
//! Sums are float32, accumulated tap by tap in dy-major, dx-minor order, as the
//! reference does; the quotient is clamped to `[0, max]` and truncated.
//!
//! Two ways to get the weights ([`Bilateral::bit_exact`]):
//! - **exact:** the range weight depends only on the integer distance, so it is a table
//!   lookup (the table ends at the first weight that underflows to 0); the spatial
//!   weights are a (2r+1)² table. Both tables come from a bit-exact model of glibc's
//!   `expf`, and the sums multiply and add separately, as the reference rounds;
//! - **fast (the default):** each weight is computed, `2^(d·r' + (dx²+dy²)·s')`, by a
//!   polynomial that vectorises (the table lookups were scalar loads from a 748 KB
//!   table), and the sums use fused multiply-add. The quotients move by less than
//!   0.1 LSB, so the truncated output is the reference's or one away from it.
//!
//! Each lane of the inner loops is a different pixel, so vectorising over pixels keeps
//! every pixel's tap order. The weight of a pair of pixels serves both (tap (a, b) of
//! one is tap (−a, −b) of the other, with the same float weight), so each weight is
//! computed once: 40 distances and weights per pixel instead of 80 (`TileKernel`).

use crate::expf::{exp2_nonpositive, expf_glibc};
use crate::stages::sat_u16;
use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

/// Bilateral filter with precomputed weight tables.
#[derive(Debug, Clone)]
pub struct Bilateral {
    radius: usize,
    /// Spatial weights of the window, dy-major (the kernel reads them through `fwd`;
    /// the test oracle reads them directly).
    #[cfg(test)]
    spatial: Vec<f32>,
    /// Range weights by integer distance, zero-padded to `mask + 1` entries so a
    /// masked index needs no bounds check. Built when first needed (the bit-exact
    /// path and [`Bilateral::range_table`]): the computed weights need only `used`.
    range: std::sync::OnceLock<Vec<f32>>,
    /// Entries of the range table up to and including the first zero.
    used: usize,
    /// `used` rounded up to a power of two, minus 1.
    mask: usize,
    r_coeff: f32,
    /// The forward taps, and where each window tap finds its weight ([`tap_plan`]).
    fwd: Vec<Forward>,
    plan: Vec<TapWeight>,
    /// `−0.5/σr²` and `−0.5/σs²` in base-2 units (times log₂ e), for computed weights.
    r_log2: f32,
    s_log2: f32,
    /// Weights from the tables and separate multiply and add, as the reference rounds
    /// ([`Bilateral::bit_exact`]).
    exact: bool,
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
        // The first distance whose weight underflows to 0: the weight falls as the
        // distance grows, so a doubling search then a bisection find it.
        let zero = |d: u32| expf_glibc(d as f32 * r_coeff) == 0.0;
        let mut hi = 1u32;
        while !zero(hi) {
            // The kernel sums three clamped squares in u32; the padded table length
            // keeps that below 2^32 for any table shorter than 2^30 (σr below ~70 000
            // code values).
            assert!(hi < 1 << 30, "range sigma {sigma_r} is too large");
            hi *= 2;
        }
        let mut lo = hi / 2; // not zero (or 0, whose weight is 1)
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if zero(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let used = hi as usize + 1;
        let (fwd, plan) = tap_plan(&spatial, radius, expf_glibc(0.0));
        Self {
            radius,
            #[cfg(test)]
            spatial,
            range: std::sync::OnceLock::new(),
            used,
            mask: used.next_power_of_two() - 1,
            r_coeff,
            fwd,
            plan,
            r_log2: r_coeff * std::f32::consts::LOG2_E,
            s_log2: s_coeff * std::f32::consts::LOG2_E,
            exact: false,
        }
    }

    /// Bit-exact to the reference (`true`), or within ±1 LSB of it and ~1.7× faster
    /// (`false`, the default). Exact: every weight is the reference's float (from the
    /// tables), multiplied and added separately in its order. Fast: each pair weight
    /// `range · spatial` is one computed `2^(d·r' + (a²+b²)·s')` (a degree-4 polynomial,
    /// relative error below 3·10⁻⁶) and the sums use fused multiply-add, so a quotient
    /// moves by less than 0.1 LSB and its truncation by at most one.
    pub fn bit_exact(mut self, exact: bool) -> Self {
        self.exact = exact;
        self
    }

    /// Whether the output is bit-exact to the reference ([`Bilateral::bit_exact`]).
    pub fn is_bit_exact(&self) -> bool {
        self.exact
    }

    /// Window radius in pixels.
    pub fn radius(&self) -> usize {
        self.radius
    }

    /// Range-weight table (ends with one 0.0).
    pub fn range_table(&self) -> &[f32] {
        &self.table()[..self.used]
    }

    /// The range table, padded to `mask + 1` entries with zeros (built on first use).
    fn table(&self) -> &[f32] {
        self.range.get_or_init(|| {
            let mut t: Vec<f32> = (0..self.used as u32)
                .map(|d| expf_glibc(d as f32 * self.r_coeff))
                .collect();
            t.resize(self.mask + 1, 0.0);
            t
        })
    }
}

/// One output row of the bilateral filter, every tap's weight computed for every pixel
/// (the previous formulation, kept as the oracle of [`TileKernel`]).
#[cfg(test)]
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

#[cfg(test)]
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
        let mask = filter.mask;
        let range = &filter.table()[..mask + 1];
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

/// A forward tap: offset (`a` rows down, `b` columns right) with `a > 0`, or `a == 0` and
/// `b > 0`, and its spatial weight. The weight of the pair (p, p + (a, b)) serves both
/// p's tap (a, b) and the tap (−a, −b) of p + (a, b): the squared colour distance is
/// symmetric and the spatial weight depends on a² + b² alone, so both products
/// `range[d] · spatial` are the same float.
#[derive(Debug, Clone, Copy)]
struct Forward {
    a: usize,
    b: isize,
    spatial: f32,
}

/// Where each tap of the window (dy-major) finds its weights.
#[derive(Debug, Clone, Copy)]
enum TapWeight {
    /// The centre: `range[0] · spatial(0, 0)`.
    Centre(f32),
    /// Forward tap `t`, on the output row itself.
    Forward(usize),
    /// The mirror of forward tap `t`: its weights on row `y − a`, shifted by `−b`.
    Backward(usize),
}

/// The forward taps of radius `r` and, per window tap in the reference's order, where
/// its weights come from.
fn tap_plan(spatial: &[f32], r: usize, range0: f32) -> (Vec<Forward>, Vec<TapWeight>) {
    let ri = r as isize;
    let side = 2 * r + 1;
    let sw = |dy: isize, dx: isize| spatial[(dy + ri) as usize * side + (dx + ri) as usize];
    let mut fwd = Vec::new();
    for a in 0..=ri {
        for b in -ri..=ri {
            if a > 0 || b > 0 {
                fwd.push(Forward {
                    a: a as usize,
                    b,
                    spatial: sw(a, b),
                });
            }
        }
    }
    let find = |a: isize, b: isize| {
        fwd.iter()
            .position(|f| f.a as isize == a && f.b == b)
            .expect("every non-centre tap or its mirror is forward")
    };
    let mut plan = Vec::new();
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            plan.push(if (dy, dx) == (0, 0) {
                TapWeight::Centre(range0 * sw(0, 0))
            } else if dy > 0 || (dy == 0 && dx > 0) {
                TapWeight::Forward(find(dy, dx))
            } else {
                TapWeight::Backward(find(-dy, -dx))
            });
        }
    }
    (fwd, plan)
}

/// Per-thread buffers of [`TileKernel`].
#[derive(Default)]
struct TileScratch {
    /// Pair weights: per forward tap, a ring of `r + 1` rows of `tile width + 2r`, and
    /// one row of the centre tap's weight.
    ring: Vec<f32>,
    /// Squared colour distances of one pair row.
    dist: Vec<u32>,
}

/// What [`Pairs::row`] needs: the forward taps, the padded planes and the ring layout.
struct Pairs<'a> {
    fwd: &'a [Forward],
    padded: [&'a [u16]; 3],
    pw: usize,
    cols: (usize, usize),
    r: usize,
    rw: usize,
    /// The range table, `mask + 1` entries (empty for computed weights).
    range: &'a [f32],
    mask: usize,
    /// Table weights (range only) or computed ones (range times spatial).
    exact: bool,
    r_log2: f32,
    s_log2: f32,
}

impl Pairs<'_> {
    /// Pair weights of forward tap `t` for the pixels of padded row `py` (image row
    /// py − r) that need them: columns x0 + min(0, −b) .. x1 + max(0, −b), into the
    /// tap's ring row `py % (r + 1)`. A function, not a closure, so that it is inlined
    /// into the dispatched kernel and compiled with its target features.
    #[inline(always)]
    fn row(&self, py: usize, t: usize, ring: &mut [f32], dist: &mut [u32]) {
        let (x0, x1) = self.cols;
        let ri = self.r as isize;
        let mask = self.mask;
        let last = mask as u32;
        let f = self.fwd[t];
        let lo = x0 as isize + (-f.b).min(0);
        let hi = x1 as isize + (-f.b).max(0);
        let n = (hi - lo) as usize;
        let pc = py * self.pw + (lo + ri) as usize;
        let qc = (py + f.a) * self.pw + (lo + f.b + ri) as usize;
        let dist = &mut dist[..n];
        let [p0, p1, p2] = self.padded.map(|p| &p[pc..][..n]);
        let [q0, q1, q2] = self.padded.map(|p| &p[qc..][..n]);
        // Squared colour distance in integers, each term and the sum clamped to the
        // table's last (zero) entry. The reference's float sum of the same integer
        // squares is exact wherever its weight is non-zero, so the index is the same.
        for (i, d) in dist.iter_mut().enumerate() {
            let a0 = (q0[i] as i32 - p0[i] as i32).unsigned_abs();
            let a1 = (q1[i] as i32 - p1[i] as i32).unsigned_abs();
            let a2 = (q2[i] as i32 - p2[i] as i32).unsigned_abs();
            *d = ((a0 * a0).min(last) + (a1 * a1).min(last) + (a2 * a2).min(last)).min(last);
        }
        let at =
            (t * (self.r + 1) + py % (self.r + 1)) * self.rw + (lo - x0 as isize + ri) as usize;
        let ring = &mut ring[at..][..n];
        if self.exact {
            // Range weights only: the spatial factor is applied where they are summed.
            let range = &self.range[..=mask];
            for (g, &d) in ring.iter_mut().zip(dist.iter()) {
                *g = range[d as usize & mask];
            }
        } else {
            // The whole weight, `2^(d·r' + s')`: distances past the table's end give
            // ~2^−125 instead of 0, which no 16-bit quotient can see.
            let c = self.r_log2;
            let s = (f.a * f.a + (f.b * f.b) as usize) as f32 * self.s_log2;
            for (g, &d) in ring.iter_mut().zip(dist.iter()) {
                *g = exp2_nonpositive((d as i32 as f32).mul_add(c, s));
            }
        }
    }
}

/// Output rows `rows` × columns `cols` of the bilateral filter, as a `pulp` kernel.
/// Rows are visited in order; for each, the pair weights of its forward taps are
/// computed once into a ring of the last `r + 1` rows, and then every pixel accumulates
/// its 81 taps in the reference's order, reading each tap's weight from the ring
/// (forward taps on its own row, mirrored taps on the row `a` above). Half the distances
/// and lookups of computing each tap's weight for each pixel, the same floats.
struct TileKernel<'a> {
    filter: &'a Bilateral,
    fwd: &'a [Forward],
    plan: &'a [TapWeight],
    padded: [&'a [u16]; 3],
    pw: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    top: f32,
    sc: &'a mut TileScratch,
    /// The output rows `rows.0..rows.1`, full width `w` each.
    out: [&'a mut [u16]; 3],
    w: usize,
}

impl pulp::WithSimd for TileKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self {
            filter,
            fwd,
            plan,
            padded,
            pw,
            rows: (y0, y1),
            cols: (x0, x1),
            top,
            sc,
            out,
            w,
        } = self;
        let r = filter.radius;
        let ri = r as isize;
        let tw = x1 - x0;
        let rw = tw + 2 * r;
        let slots = r + 1;
        sc.ring.resize((fwd.len() * slots + 1) * rw, 0.0);
        sc.dist.resize(rw, 0);
        let TileScratch { ring, dist } = sc;

        let pairs = Pairs {
            fwd,
            padded,
            pw,
            cols: (x0, x1),
            r,
            rw,
            range: if filter.exact { filter.table() } else { &[] },
            mask: filter.mask,
            exact: filter.exact,
            r_log2: filter.r_log2,
            s_log2: filter.s_log2,
        };
        // Rows above the first output row: only the taps that reach down into it.
        for k in (1..=r).rev() {
            let py = y0 + r - k;
            for t in 0..fwd.len() {
                if fwd[t].a >= k {
                    pairs.row(py, t, ring, dist);
                }
            }
        }
        let [o0, o1, o2] = out;
        let side = 2 * r + 1;
        // The centre tap's weight as one more ring row, so that every tap reads its
        // weights the same way.
        let centre_at = fwd.len() * slots * rw;
        let centre = plan.iter().find_map(|t| match *t {
            TapWeight::Centre(c) => Some(c),
            _ => None,
        });
        ring[centre_at..].fill(centre.unwrap_or(0.0));
        // Per tap, in the reference's order: its spatial factor (computed weights
        // include it) and, for each phase of the ring (py % slots), where its weights
        // start in the ring and where its samples start from the output row's (padded
        // row y, column x0). Worked out once per tile; the accumulation reads by offset.
        let n_taps = plan.len();
        let mut spatial = Vec::with_capacity(n_taps);
        let mut tap_at = vec![[0; 2]; slots * n_taps];
        for (k, tap) in plan.iter().enumerate() {
            spatial.push(match *tap {
                TapWeight::Forward(t) | TapWeight::Backward(t) if filter.exact => fwd[t].spatial,
                _ => 1.0,
            });
            for ph in 0..slots {
                let weights = match *tap {
                    TapWeight::Centre(_) => centre_at,
                    TapWeight::Forward(t) => (t * slots + ph) * rw + r,
                    TapWeight::Backward(t) => {
                        // Row y − a; column x − b, i.e. ring index (x − x0) − b + r.
                        let f = fwd[t];
                        (t * slots + (ph + slots - f.a) % slots) * rw + (ri - f.b) as usize
                    }
                };
                tap_at[ph * n_taps + k] = [weights, (k / side) * pw + k % side];
            }
        }
        for y in y0..y1 {
            let py = y + r;
            for t in 0..fwd.len() {
                pairs.row(py, t, ring, dist);
            }
            let at = (y - y0) * w + x0;
            let outs = [
                &mut o0[at..at + tw],
                &mut o1[at..at + tw],
                &mut o2[at..at + tw],
            ];
            let taps = Taps {
                ring,
                at: &tap_at[py % slots * n_taps..][..n_taps],
                spatial: &spatial,
                planes: padded.map(|p| &p[y * pw + x0..]),
            };
            accumulate_row(taps, top, filter.exact, outs);
        }
    }
}

/// The taps of one output row of a tile, by offset: tap `k`'s weights are
/// `ring[at[k][0]..]` and its samples `planes[c][at[k][1]..]`, over the tile's width,
/// scaled by `spatial[k]`.
struct Taps<'a> {
    ring: &'a [f32],
    at: &'a [[usize; 2]],
    spatial: &'a [f32],
    /// The padded planes from the output row's first sample (padded row y, column x0).
    planes: [&'a [u16]; 3],
}

/// Pixels per block of [`accumulate_row`]: four sums of this many lanes stay in
/// registers (two AVX2 vectors each) across the 81 taps.
const BLOCK: usize = 16;

/// Every pixel of one output row of a tile: the sums over all taps, in the reference's
/// order, then the quotient. The row is done in blocks of [`BLOCK`] pixels, each block
/// running through every tap with its sums in registers (the last block overlaps the
/// one before it when the width is not a multiple; its pixels come out the same).
/// Narrower rows go tap by tap over the whole row.
#[inline(always)]
fn accumulate_row(taps: Taps, top: f32, exact: bool, outs: [&mut [u16]; 3]) {
    let Taps {
        ring,
        at,
        spatial,
        planes: [p0, p1, p2],
    } = taps;
    // One length for the three planes, so that one check covers a tap's three slices.
    let n = p0.len().min(p1.len()).min(p2.len());
    let (p0, p1, p2) = (&p0[..n], &p1[..n], &p2[..n]);
    let [o0, o1, o2] = outs;
    let tw = o0.len();
    let taps = || at.iter().zip(spatial);
    if tw < BLOCK {
        let mut acc = [[0f32; BLOCK]; 4];
        for (&[ro, so], &sp) in taps() {
            let rv = &ring[ro..][..tw];
            let (n0, n1, n2) = (&p0[so..][..tw], &p1[so..][..tw], &p2[so..][..tw]);
            for x in 0..tw {
                let wv = rv[x] * sp;
                let n = [n0[x] as f32, n1[x] as f32, n2[x] as f32];
                for c in 0..3 {
                    // The same rounding as the blocks below.
                    acc[c][x] = if exact {
                        acc[c][x] + wv * n[c]
                    } else {
                        wv.mul_add(n[c], acc[c][x])
                    };
                }
                acc[3][x] += wv;
            }
        }
        for (q, a) in [(o0, &acc[0]), (o1, &acc[1]), (o2, &acc[2])] {
            for (x, o) in q.iter_mut().enumerate() {
                *o = sat_u16((a[x] / acc[3][x]).clamp(0.0, top));
            }
        }
        return;
    }
    let mut xb = 0;
    while xb < tw {
        let x = xb.min(tw - BLOCK);
        xb += BLOCK;
        let mut a0 = [0f32; BLOCK];
        let mut a1 = [0f32; BLOCK];
        let mut a2 = [0f32; BLOCK];
        let mut aw = [0f32; BLOCK];
        for (&[ro, so], &sp) in taps() {
            let rv = &ring[ro + x..][..BLOCK];
            let s = so + x;
            let (n0, n1, n2) = (&p0[s..][..BLOCK], &p1[s..][..BLOCK], &p2[s..][..BLOCK]);
            if exact {
                // Multiply then add (no fused multiply-add), as the reference rounds.
                for i in 0..BLOCK {
                    let wv = rv[i] * sp;
                    a0[i] += wv * n0[i] as f32;
                    a1[i] += wv * n1[i] as f32;
                    a2[i] += wv * n2[i] as f32;
                    aw[i] += wv;
                }
            } else {
                // The weights are whole (`sp` is 1); fused multiply-add.
                for i in 0..BLOCK {
                    let wv = rv[i];
                    a0[i] = wv.mul_add(n0[i] as f32, a0[i]);
                    a1[i] = wv.mul_add(n1[i] as f32, a1[i]);
                    a2[i] = wv.mul_add(n2[i] as f32, a2[i]);
                    aw[i] += wv;
                }
            }
        }
        for i in 0..BLOCK {
            o0[x + i] = sat_u16((a0[i] / aw[i]).clamp(0.0, top));
            o1[x + i] = sat_u16((a1[i] / aw[i]).clamp(0.0, top));
            o2[x + i] = sat_u16((a2[i] / aw[i]).clamp(0.0, top));
        }
    }
}

impl RgbStage for Bilateral {
    fn name(&self) -> &'static str {
        "denoise"
    }
    fn apply(&self, img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let h = img.height;
        let padded = self.padded_planes(&img);
        let top = ctx.max_value as f32;
        // Row chunks for the threads (each chunk recomputes the pair rows of the `r`
        // rows above it: ~9 % more pairs at 32 rows), and column tiles so a tile's
        // weight ring (40 taps × 5 rows) stays in the per-core cache at any width.
        let threads = rayon::current_num_threads().max(1);
        let chunk_rows = (h / (8 * threads)).clamp(8, 64);
        // The input's planes take the output: every sample is written, and all reads
        // come from the padded copies.
        self.filter_padded(&padded, img, top, chunk_rows, TILE_COLS)
    }
}

impl Bilateral {
    /// Edge-padded copies of the planes, so taps need no bounds logic. Codes stay u16
    /// and convert exactly to f32 where they are summed: measured, f32 planes (no
    /// conversions) were ~10 % slower, the larger footprint costing more than it saves.
    fn padded_planes(&self, img: &RgbImage) -> Vec<Vec<u16>> {
        let (w, h, r) = (img.width, img.height, self.radius);
        let pw = w + 2 * r;
        img.planes
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
            .collect()
    }

    /// The filter on edge-padded planes into `out` (its size gives the image's; every
    /// sample is overwritten), in chunks of `chunk_rows` rows and tiles of at most
    /// `tile_cols` columns (any sizes give the same output; tests try several).
    fn filter_padded(
        &self,
        padded: &[Vec<u16>],
        mut out: RgbImage,
        top: f32,
        chunk_rows: usize,
        tile_cols: usize,
    ) -> RgbImage {
        let (w, r) = (out.width, self.radius);
        let pw = w + 2 * r;
        let n_tiles = w.div_ceil(tile_cols);
        let tile_w = w.div_ceil(n_tiles);
        // Runtime dispatch: the kernel is compiled for AVX2/AVX-512 too and the best is
        // picked at run time. Contraction into fused multiply-add stays off, so the
        // results are the same on every path.
        let arch = pulp::Arch::new();
        let [or, og, ob] = &mut out.planes;
        or.par_chunks_mut(chunk_rows * w)
            .zip(og.par_chunks_mut(chunk_rows * w))
            .zip(ob.par_chunks_mut(chunk_rows * w))
            .enumerate()
            .for_each_init(TileScratch::default, |sc, (k, ((q0, q1), q2))| {
                let y0 = k * chunk_rows;
                let y1 = y0 + q0.len() / w;
                for x0 in (0..w).step_by(tile_w) {
                    arch.dispatch(TileKernel {
                        filter: self,
                        fwd: &self.fwd,
                        plan: &self.plan,
                        padded: [&padded[0], &padded[1], &padded[2]],
                        pw,
                        rows: (y0, y1),
                        cols: (x0, (x0 + tile_w).min(w)),
                        top,
                        sc,
                        out: [&mut *q0, &mut *q1, &mut *q2],
                        w,
                    });
                }
            });
        out
    }

    /// The previous traversal (every tap's weight for every pixel, row by row): the
    /// oracle of [`Bilateral::filter_padded`].
    #[cfg(test)]
    fn filter_padded_rows(&self, padded: &[Vec<u16>], w: usize, h: usize, top: f32) -> RgbImage {
        let pw = w + 2 * self.radius;
        let mut out = RgbImage::new(w, h);
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

/// Output columns per tile at most.
const TILE_COLS: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    /// Pair-shared weights in row chunks and column tiles equal the per-pixel weights of
    /// the previous traversal bit for bit: chunks and tiles of several sizes (down to
    /// one row, and tiles narrower than the window), images narrower and shorter than
    /// the window, 16-bit noise (squares beyond the table clamp) and a sharp edge.
    #[test]
    fn shared_pair_weights_equal_per_pixel_weights() {
        let b = Bilateral::new(2.0, 30.0).bit_exact(true);
        let mut s = 3u32;
        for (w, h) in [(1usize, 1usize), (3, 2), (9, 13), (40, 17), (67, 45)] {
            let img = test_image(w, h, &mut s);
            let padded = b.padded_planes(&img);
            // The output buffer's old contents must not show through.
            let mut garbage = img.clone();
            garbage.planes.iter_mut().for_each(|p| p.fill(u16::MAX));
            let want = b.filter_padded_rows(&padded, w, h, 4095.0);
            for (chunk_rows, tile_cols) in [(1, 512), (8, 512), (5, 3), (64, 16), (7, 1)] {
                assert_eq!(
                    b.filter_padded(&padded, garbage.clone(), 4095.0, chunk_rows, tile_cols),
                    want,
                    "{w}x{h}, chunks of {chunk_rows} rows, tiles of {tile_cols} columns"
                );
            }
        }
    }

    /// The fast weights against the exact filter: never more than 1 LSB away, at 12-bit
    /// scale the same in almost every sample, and the same whatever the chunks and
    /// tiles (each pixel's arithmetic does not depend on them). Noise with 16-bit
    /// outliers beside an edge, at 12-bit and 16-bit scale.
    #[test]
    fn fast_weights_are_within_one_of_the_exact_filter() {
        let exact = Bilateral::new(2.0, 30.0).bit_exact(true);
        let fast = Bilateral::new(2.0, 30.0);
        assert!(exact.is_bit_exact() && !fast.is_bit_exact());
        let mut s = 7u32;
        for (w, h, top) in [
            (67usize, 45usize, 4095.0f32),
            (150, 40, 65535.0),
            (9, 13, 4095.0),
        ] {
            let (mut total, mut moved) = (0usize, 0usize);
            let mut img = test_image(w, h, &mut s);
            if top > 4095.0 {
                for p in &mut img.planes {
                    p.iter_mut().for_each(|v| *v = v.saturating_mul(13));
                }
            }
            let padded = exact.padded_planes(&img);
            let want = exact.filter_padded(&padded, img.clone(), top, 8, 512);
            let mut first = None;
            for (chunk_rows, tile_cols) in [(8, 512), (5, 3), (64, 16)] {
                let got = fast.filter_padded(&padded, img.clone(), top, chunk_rows, tile_cols);
                for (g, e) in got.planes.iter().zip(&want.planes) {
                    for (a, b) in g.iter().zip(e) {
                        let d = (*a as i32 - *b as i32).abs();
                        assert!(d <= 1, "{w}x{h}: {a} against the exact {b}");
                        total += 1;
                        moved += (d != 0) as usize;
                    }
                }
                assert_eq!(*first.get_or_insert_with(|| got.clone()), got, "{w}x{h}");
            }
            // At 12-bit scale few quotients come near enough to an integer to move
            // (about 0.05 % here). At 16-bit scale the float sums' own rounding is
            // 16 times larger against one code, and more move (about 14 %).
            let most = if top > 4095.0 { 25 } else { 1 };
            assert!(
                moved * 100 < total * most,
                "{w}x{h}: {moved} of {total} moved"
            );
        }
    }

    /// Noise (a third of the samples 16-bit, so squares clamp at the table's end) beside
    /// a sharp edge, per channel.
    fn test_image(w: usize, h: usize, s: &mut u32) -> RgbImage {
        let mut img = RgbImage::new(w, h);
        for (c, p) in img.planes.iter_mut().enumerate() {
            for (i, v) in p.iter_mut().enumerate() {
                *s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let edge = if (i % w) * 2 > w {
                    2500
                } else {
                    300 + 400 * c as u32
                };
                *v = if i % 3 == 0 {
                    (*s >> 16) as u16
                } else {
                    (edge + (*s >> 26)) as u16
                };
            }
        }
        img
    }

    /// The table's end, found by bisection, is the first distance a linear scan finds
    /// with a zero weight, for several range sigmas.
    #[test]
    fn table_end_matches_a_linear_scan() {
        for sigma_r in [0.5f32, 1.0, 7.0, 30.0, 90.0] {
            let r_coeff = -0.5f32 / (sigma_r * sigma_r);
            let first_zero = (0u32..)
                .find(|&d| expf_glibc(d as f32 * r_coeff) == 0.0)
                .unwrap();
            let b = Bilateral::new(2.0, sigma_r);
            assert_eq!(
                b.range_table().len(),
                first_zero as usize + 1,
                "σr {sigma_r}"
            );
            assert!((b.mask + 1).is_power_of_two() && b.mask + 1 >= b.used);
        }
    }

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
