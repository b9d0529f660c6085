//! Fast edge-preserving denoise that treats luma and chroma separately.
//!
//! With `Y = (R + 2G + B)/4`, `Cr = R − Y`, `Cb = B − Y` (and `G = Y − (Cr + Cb)/2`):
//! - luma: a 3×3 range-weighted mean (a small bilateral): neighbours whose luma differs
//!   by much more than `luma_sigma` get almost no weight, so edges stay sharp;
//! - chroma: a 5×5 binomial blur, mixed in by `chroma`. The eye barely resolves chroma
//!   detail, and sensor noise is strongest there after white balance.

use crate::stages::pad::reflect;
use crate::stages::{sat_u16, whole_to_index};
use crate::{FrameContext, RgbImage, RgbStage};
use rayon::prelude::*;

/// Luma/chroma denoise.
#[derive(Debug, Clone)]
pub struct LumaChroma {
    /// Range sigma as a fraction of full scale.
    pub luma_sigma: f32,
    /// Chroma blur mix, 0..=1.
    pub chroma: f32,
}

const K5: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// Separable 5-tap binomial blur (reflect-101 borders), whole frame: the oracle's.
#[cfg(test)]
fn blur5(src: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut tmp = vec![0f32; w * h];
    tmp.par_chunks_mut(w)
        .enumerate()
        .for_each(|(y, out)| hblur_row(&src[y * w..(y + 1) * w], out));
    let mut out = vec![0f32; w * h];
    out.par_chunks_mut(w).enumerate().for_each(|(y, o)| {
        let r = |d: isize| &tmp[reflect(y as isize + d, h) * w..][..w];
        let (a, b, c, d, e) = (r(-2), r(-1), r(0), r(1), r(2));
        for x in 0..w {
            o[x] = K5[0] * (a[x] + e[x]) + K5[1] * (b[x] + d[x]) + K5[2] * c[x];
        }
    });
    out
}

/// Output rows per band: each band recomputes its own luma/chroma rows plus a halo of 2
/// rows above and below, in per-thread scratch (about 2.8 MB at 4K width), so no
/// full-frame intermediate plane exists. 32 rows recompute 1.125× the rows against 16
/// rows' 1.25×: 4K denoise 22.0 → 21.1 ms, 640×480 1.01 → 0.94 (64: no better).
const BAND: usize = 32;
/// Halo rows: 2 for the 5-tap chroma blur (the 3×3 luma filter needs 1).
const HALO: usize = 2;

/// Range weights of the luma filter by `|Δluma| / 4`, out to where they vanish, then
/// the last weight repeated up to a power-of-two length (so a clamp to the last index
/// reads the same weight, and a mask bounds the index for free).
fn range_table(luma_sigma: f32, top: f32) -> Vec<f32> {
    let sigma = (luma_sigma * top).max(1e-3);
    let inv = -0.5 / (sigma * sigma);
    let steps = ((6.0 * sigma / 4.0) as usize + 2).min(16384);
    let mut t: Vec<f32> = (0..steps)
        .map(|k| {
            let d = k as f32 * 4.0;
            (d * d * inv).exp()
        })
        .collect();
    t.resize(steps.next_power_of_two(), t[steps - 1]);
    t
}

/// Luma plus the chroma differences mixed toward their blurred values by `k`, back to
/// R, G, B codes.
#[inline(always)]
fn combine(l: f32, [cr, cb]: [f32; 2], [cr2, cb2]: [f32; 2], k: f32, top: f32) -> [u16; 3] {
    let c_r = cr + k * (cr2 - cr);
    let c_b = cb + k * (cb2 - cb);
    [
        sat_u16((l + c_r + 0.5).clamp(0.0, top)),
        sat_u16((l - 0.5 * (c_r + c_b) + 0.5).clamp(0.0, top)),
        sat_u16((l + c_b + 0.5).clamp(0.0, top)),
    ]
}

/// Saved row triple `k` (R, G, B rows of `w` each, one after another) of `buf`.
fn rgb_rows(buf: &[u16], k: usize, w: usize) -> [&[u16]; 3] {
    let row = &buf[k * 3 * w..][..3 * w];
    [&row[..w], &row[w..2 * w], &row[2 * w..]]
}

/// Per-thread working rows of one band.
struct Scratch {
    /// Luma rows, each padded by one reflected sample on both sides (`w + 2`).
    y: Vec<f32>,
    /// Chroma rows (`w` each).
    cr: Vec<f32>,
    cb: Vec<f32>,
    /// Horizontally blurred chroma rows.
    hcr: Vec<f32>,
    hcb: Vec<f32>,
    /// One output row of filtered luma and of vertically blurred chroma.
    y2: Vec<f32>,
    vcr: Vec<f32>,
    vcb: Vec<f32>,
    /// Range weights of the edges of one luma row (`pw - 1`) and of two row pairs
    /// (vertical, down-right and down-left edges, `pw` each); see [`pair_weights`].
    row_w: Vec<f32>,
    pair_w: [Vec<f32>; 2],
}

/// The table index of the luma filter's range weight between two samples (by `|a − b|`
/// in steps of 4 codes), as a float's bits; [`lookup`] turns it into the weight. Two
/// passes because the index arithmetic vectorises and the table lookup does not.
/// `|a − b| = |b − a|` exactly, so a weight serves both ends of an edge.
#[inline(always)]
fn weight_index(last: f32, a: f32, b: f32) -> f32 {
    // floor(|a − b| / 4), clamped to the last entry: the same index as
    // `(|a − b| as u32 >> 2).min(last)` (floor(floor(x) / 4) = floor(x / 4), and the
    // scaling by 1/4 is exact), in a form that vectorises.
    let q = ((a - b).abs() * 0.25).floor().min(last);
    f32::from_bits(whole_to_index(q) as u32)
}

/// Replaces each index from [`weight_index`] by its weight. The table's length is a
/// power of two, so the mask proves the index in bounds without changing it.
#[inline(always)]
fn lookup(range: &[f32], out: &mut [f32]) {
    let mask = range.len() - 1;
    let range = &range[..mask + 1];
    for o in out {
        *o = range[o.to_bits() as usize & mask];
    }
}

/// Weights of the horizontal edges of a padded luma row: `out[k]` between `r[k]` and
/// `r[k + 1]`.
#[inline(always)]
fn row_weights(range: &[f32], last: f32, r: &[f32], out: &mut [f32]) {
    let out = &mut out[..r.len() - 1];
    for (k, o) in out.iter_mut().enumerate() {
        *o = weight_index(last, r[k + 1], r[k]);
    }
    lookup(range, out);
}

/// Weights of the edges between an upper row `u` and the lower row `l` below it, as
/// three runs of `pw`: vertical `u[k]–l[k]`, down-right `u[k]–l[k + 1]`, down-left
/// `u[k + 1]–l[k]`. Each edge is used by the output pixels at both of its ends, so the
/// filter looks up 4 weights per pixel instead of 8.
#[inline(always)]
fn pair_weights(range: &[f32], last: f32, u: &[f32], l: &[f32], out: &mut [f32]) {
    let pw = u.len();
    let (v, rest) = out.split_at_mut(pw);
    let (d, a) = rest.split_at_mut(pw);
    for k in 0..pw {
        v[k] = weight_index(last, u[k], l[k]);
    }
    for k in 0..pw - 1 {
        d[k] = weight_index(last, u[k], l[k + 1]);
        a[k] = weight_index(last, u[k + 1], l[k]);
    }
    lookup(range, v);
    lookup(range, &mut d[..pw - 1]);
    lookup(range, &mut a[..pw - 1]);
}

/// One row of the 5-tap horizontal binomial blur (reflect-101 at the ends), with the same
/// arithmetic as [`blur5`]. The interior is one branch-free loop; only the two samples at
/// each end reflect.
#[inline(always)]
fn hblur_row(row: &[f32], out: &mut [f32]) {
    let w = row.len();
    let edge = |x: usize| -> f32 {
        (0..5)
            .map(|k| K5[k] * row[reflect(x as isize + k as isize - 2, w)])
            .sum()
    };
    if w < 5 {
        for (x, o) in out.iter_mut().enumerate() {
            *o = edge(x);
        }
        return;
    }
    let out = &mut out[..w];
    for x in 2..w - 2 {
        out[x] =
            K5[0] * (row[x - 2] + row[x + 2]) + K5[1] * (row[x - 1] + row[x + 1]) + K5[2] * row[x];
    }
    for x in [0, 1, w - 2, w - 1] {
        out[x] = edge(x);
    }
}

/// One tap row of the vertical 5-tap binomial blur: rows `j - 2 ..= j + 2` of `p`.
#[inline(always)]
fn vblur_row(p: &[f32], j: usize, w: usize, o: &mut [f32]) {
    let r = |d: usize| &p[(j + d - 2) * w..][..w];
    let (a, b, c, d, e) = (r(0), r(1), r(2), r(3), r(4));
    let o = &mut o[..w];
    for x in 0..w {
        o[x] = K5[0] * (a[x] + e[x]) + K5[1] * (b[x] + d[x]) + K5[2] * c[x];
    }
}

/// One band's work, as a `pulp` kernel: compiled for AVX2 (and NEON) as well as the
/// baseline and picked at run time; the same arithmetic on every path.
struct Band<'a> {
    stage: &'a LumaChroma,
    range: &'a [f32],
    /// The band's context rows outside it, as saved before any band was written: the
    /// `HALO` rows above, then the `HALO` rows below, each as R, G, B rows of `w`.
    halo: &'a [u16],
    w: usize,
    top: f32,
    sc: &'a mut Scratch,
    out: [&'a mut [u16]; 3],
}

impl pulp::WithSimd for Band<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.run()
    }
}

impl Band<'_> {
    #[inline(always)]
    fn run(self) {
        const SP: [[f32; 3]; 3] = [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]];
        let Band {
            stage,
            range,
            halo,
            w,
            top,
            sc,
            out: [o_r, o_g, o_b],
        } = self;
        let last = (range.len() - 1) as f32;
        let luma_on = stage.luma_sigma > 0.0;
        let k = stage.chroma;
        let pw = w + 2;
        let n = o_r.len() / w;
        // Scratch row j holds virtual row y0 - HALO + j, i.e. source row
        // reflect(y0 - HALO + j): the whole-frame version's reflected rows.
        // In place: all of the band's reads (its own rows and the saved context rows)
        // happen here, before its first output row is written.
        for j in 0..n + 2 * HALO {
            let (r, g, b) = if (HALO..n + HALO).contains(&j) {
                let at = (j - HALO) * w;
                (&o_r[at..][..w], &o_g[at..][..w], &o_b[at..][..w])
            } else {
                let slot = if j < HALO { j } else { j - n };
                let at = slot * 3 * w;
                (
                    &halo[at..][..w],
                    &halo[at + w..][..w],
                    &halo[at + 2 * w..][..w],
                )
            };
            let yrow = &mut sc.y[j * pw..(j + 1) * pw];
            let crow = &mut sc.cr[j * w..(j + 1) * w];
            let brow = &mut sc.cb[j * w..(j + 1) * w];
            for x in 0..w {
                let (r, g, b) = (r[x] as f32, g[x] as f32, b[x] as f32);
                let l = 0.25 * (r + 2.0 * g + b);
                yrow[x + 1] = l;
                crow[x] = r - l;
                brow[x] = b - l;
            }
            yrow[0] = yrow[reflect(-1, w) + 1];
            yrow[w + 1] = yrow[reflect(w as isize, w) + 1];
            if k > 0.0 {
                hblur_row(crow, &mut sc.hcr[j * w..(j + 1) * w]);
                hblur_row(brow, &mut sc.hcb[j * w..(j + 1) * w]);
            }
        }
        let Scratch {
            y2,
            vcr,
            vcb,
            row_w,
            pair_w,
            ..
        } = sc;
        // pair_w[upper] holds the weights between rows j - 1 and j, the other those
        // between j and j + 1; the latter become the former for the next row.
        let mut upper = 0;
        for i in 0..n {
            let j = i + HALO;
            let ya = &sc.y[(j - 1) * pw..][..pw];
            let yb = &sc.y[j * pw..][..pw];
            let yc = &sc.y[(j + 1) * pw..][..pw];
            let y2 = &mut y2[..w];
            if luma_on {
                if i == 0 {
                    pair_weights(range, last, ya, yb, &mut pair_w[upper]);
                }
                pair_weights(range, last, yb, yc, &mut pair_w[1 - upper]);
                row_weights(range, last, yb, row_w);
                let (ab, bc) = (&pair_w[upper], &pair_w[1 - upper]);
                let (vab, dab, aab) = (&ab[..pw], &ab[pw..2 * pw], &ab[2 * pw..3 * pw]);
                let (vbc, dbc, abc) = (&bc[..pw], &bc[pw..2 * pw], &bc[2 * pw..3 * pw]);
                let hb = &row_w[..pw];
                let r0 = range[0];
                // The 9 taps in the whole-frame formulation's order, each weight the
                // spatial factor times the range weight of the edge to the centre.
                for x in 0..w {
                    let taps = [
                        (SP[0][0] * dab[x], ya[x]),
                        (SP[0][1] * vab[x + 1], ya[x + 1]),
                        (SP[0][2] * aab[x + 1], ya[x + 2]),
                        (SP[1][0] * hb[x], yb[x]),
                        (SP[1][1] * r0, yb[x + 1]),
                        (SP[1][2] * hb[x + 1], yb[x + 2]),
                        (SP[2][0] * abc[x], yc[x]),
                        (SP[2][1] * vbc[x + 1], yc[x + 1]),
                        (SP[2][2] * dbc[x + 1], yc[x + 2]),
                    ];
                    let (mut s, mut sw) = (0.0f32, 0.0f32);
                    for (wgt, v) in taps {
                        s += wgt * v;
                        sw += wgt;
                    }
                    y2[x] = s / sw;
                }
                upper = 1 - upper;
            } else {
                y2.copy_from_slice(&yb[1..w + 1]);
            }
            let cr = &sc.cr[j * w..][..w];
            let cb = &sc.cb[j * w..][..w];
            let (vcr, vcb) = (&mut vcr[..w], &mut vcb[..w]);
            if k > 0.0 {
                vblur_row(&sc.hcr, j, w, vcr);
                vblur_row(&sc.hcb, j, w, vcb);
            } else {
                vcr.copy_from_slice(cr);
                vcb.copy_from_slice(cb);
            }
            let (r, g, b) = (
                &mut o_r[i * w..][..w],
                &mut o_g[i * w..][..w],
                &mut o_b[i * w..][..w],
            );
            for x in 0..w {
                [r[x], g[x], b[x]] = combine(y2[x], [cr[x], cb[x]], [vcr[x], vcb[x]], k, top);
            }
        }
    }
}

impl RgbStage for LumaChroma {
    fn name(&self) -> &'static str {
        "denoise"
    }

    /// Band-wise and fused: for each band of [`BAND`] rows, luma and chroma of the band and
    /// its halo are computed into per-thread scratch, then the luma filter, the chroma
    /// blur and the recombination write the band's output rows. Bit-identical to the
    /// whole-frame formulation (tested): the same operations in the same order.
    fn apply(&self, img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let h = img.height;
        // Bands run in groups, a group's bands one after another on one thread. Only the
        // context rows outside each group must be saved before any group writes (about
        // 3 MB at 4K, against 12 MB when every band saved its own); inside a group, a
        // band's rows above come from a copy taken before the band above was written,
        // and its rows below are not written yet. Enough groups to balance two threads.
        let group_bands = (h.div_ceil(BAND) / (16 * rayon::current_num_threads())).max(1);
        self.apply_in_groups(img, ctx, group_bands)
    }
}

impl LumaChroma {
    /// [`RgbStage::apply`] with `group_bands` bands per group (any count gives the same
    /// output; tests try several).
    fn apply_in_groups(
        &self,
        mut img: RgbImage,
        ctx: &FrameContext,
        group_bands: usize,
    ) -> RgbImage {
        let (w, h) = (img.width, img.height);
        let top = ctx.max_value as f32;
        let range = range_table(self.luma_sigma, top);
        let rows = BAND + 2 * HALO;
        let pw = w + 2;
        let row3 = 3 * w;
        let per_band = 2 * HALO * row3;
        let group_rows = group_bands * BAND;
        // Context rows of every group: the `HALO` above it, then the `HALO` below it.
        let context = |y0: usize, n: usize| {
            (0..2 * HALO).map(move |slot| {
                let j = if slot < HALO { slot } else { n + slot };
                reflect((y0 + j) as isize - HALO as isize, h)
            })
        };
        let mut saved = vec![0u16; h.div_ceil(group_rows) * per_band];
        saved
            .par_chunks_mut(per_band)
            .enumerate()
            .for_each(|(g, buf)| {
                let y0 = g * group_rows;
                for (rows, sy) in buf
                    .chunks_exact_mut(row3)
                    .zip(context(y0, group_rows.min(h - y0)))
                {
                    for (c, dst) in rows.chunks_exact_mut(w).enumerate() {
                        dst.copy_from_slice(&img.planes[c][sy * w..][..w]);
                    }
                }
            });
        let [or, og, ob] = &mut img.planes;
        let arch = pulp::Arch::new();
        or.par_chunks_mut(group_rows * w)
            .zip(og.par_chunks_mut(group_rows * w))
            .zip(ob.par_chunks_mut(group_rows * w))
            .zip(saved.par_chunks(per_band))
            .enumerate()
            .for_each_init(
                || {
                    let sc = Scratch {
                        y: vec![0.0; rows * pw],
                        cr: vec![0.0; rows * w],
                        cb: vec![0.0; rows * w],
                        hcr: vec![0.0; rows * w],
                        hcb: vec![0.0; rows * w],
                        y2: vec![0.0; w],
                        row_w: vec![0.0; pw],
                        pair_w: [vec![0.0; 3 * pw], vec![0.0; 3 * pw]],
                        vcr: vec![0.0; w],
                        vcb: vec![0.0; w],
                    };
                    // One band's context rows, and the original last rows of the band
                    // before it.
                    (sc, vec![0u16; per_band], vec![0u16; HALO * row3])
                },
                |(sc, halo, carry), (g, (((gr, gg), gb), saved))| {
                    let g0 = g * group_rows;
                    let g1 = g0 + gr.len() / w;
                    let (mut gr, mut gg, mut gb) = (gr, gg, gb);
                    let mut y0 = g0;
                    while y0 < g1 {
                        let n = BAND.min(g1 - y0);
                        let (o_r, rest_r) = std::mem::take(&mut gr).split_at_mut(n * w);
                        let (o_g, rest_g) = std::mem::take(&mut gg).split_at_mut(n * w);
                        let (o_b, rest_b) = std::mem::take(&mut gb).split_at_mut(n * w);
                        for (rows, sy) in halo.chunks_exact_mut(row3).zip(context(y0, n)) {
                            let src: [&[u16]; 3] = if !(g0..g1).contains(&sy) {
                                let k = context(g0, g1 - g0).position(|r| r == sy);
                                rgb_rows(saved, k.expect("a row outside the group is saved"), w)
                            } else if sy < y0 {
                                rgb_rows(carry, sy + HALO - y0, w)
                            } else if sy < y0 + n {
                                let at = (sy - y0) * w;
                                [&o_r[at..][..w], &o_g[at..][..w], &o_b[at..][..w]]
                            } else {
                                let at = (sy - y0 - n) * w;
                                [&rest_r[at..][..w], &rest_g[at..][..w], &rest_b[at..][..w]]
                            };
                            for (dst, src) in rows.chunks_exact_mut(w).zip(src) {
                                dst.copy_from_slice(src);
                            }
                        }
                        // The next band's rows above, before this band overwrites them.
                        if n >= HALO {
                            for (i, rows) in carry.chunks_exact_mut(row3).enumerate() {
                                let at = (n - HALO + i) * w;
                                for (dst, src) in
                                    rows.chunks_exact_mut(w).zip([&*o_r, &*o_g, &*o_b])
                                {
                                    dst.copy_from_slice(&src[at..][..w]);
                                }
                            }
                        }
                        arch.dispatch(Band {
                            stage: self,
                            range: &range,
                            halo,
                            w,
                            top,
                            sc,
                            out: [o_r, o_g, o_b],
                        });
                        (gr, gg, gb) = (rest_r, rest_g, rest_b);
                        y0 += n;
                    }
                },
            );
        img
    }
}

impl LumaChroma {
    /// The whole-frame formulation (seven full-frame planes), kept as the oracle the
    /// band-wise kernel must match bit for bit.
    #[cfg(test)]
    fn apply_whole_frame(&self, mut img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let (w, h) = (img.width, img.height);
        let top = ctx.max_value as f32;
        let n = w * h;
        let [pr, pg, pb] = &img.planes;
        let mut y = vec![0f32; n];
        let mut cr = vec![0f32; n];
        let mut cb = vec![0f32; n];
        y.par_chunks_mut(w)
            .zip(cr.par_chunks_mut(w))
            .zip(cb.par_chunks_mut(w))
            .enumerate()
            .for_each(|(row, ((yy, rr), bb))| {
                for x in 0..w {
                    let i = row * w + x;
                    let (r, g, b) = (pr[i] as f32, pg[i] as f32, pb[i] as f32);
                    let l = 0.25 * (r + 2.0 * g + b);
                    yy[x] = l;
                    rr[x] = r - l;
                    bb[x] = b - l;
                }
            });
        // Luma: 3×3 range-weighted mean; range weights by |Δluma| in steps of 4 codes.
        let range = range_table(self.luma_sigma, top);
        let last = range.len() - 1;
        let mut y2 = vec![0f32; n];
        if self.luma_sigma > 0.0 {
            y2.par_chunks_mut(w).enumerate().for_each(|(row, out)| {
                let rows = [-1isize, 0, 1].map(|d| &y[reflect(row as isize + d, h) * w..][..w]);
                for x in 0..w {
                    let c = rows[1][x];
                    let xs = [reflect(x as isize - 1, w), x, reflect(x as isize + 1, w)];
                    let (mut s, mut sw) = (0.0f32, 0.0f32);
                    for (ry, r) in rows.iter().enumerate() {
                        for (rx, &xx) in xs.iter().enumerate() {
                            let sp = [1.0, 2.0, 1.0][ry] * [1.0, 2.0, 1.0][rx];
                            let d = (r[xx] - c).abs() as usize >> 2;
                            let wgt = sp * range[d.min(last)];
                            s += wgt * r[xx];
                            sw += wgt;
                        }
                    }
                    out[x] = s / sw;
                }
            });
        } else {
            y2.copy_from_slice(&y);
        }
        // Chroma: 5×5 binomial, mixed in.
        let k = self.chroma;
        let blur = |p: &[f32]| blur5(p, w, h);
        let (cr2, cb2) = if k > 0.0 {
            (blur(&cr), blur(&cb))
        } else {
            (cr.clone(), cb.clone())
        };
        img.par_rows_mut().for_each(|(row, [r, g, b])| {
            for x in 0..w {
                let i = row * w + x;
                [r[x], g[x], b[x]] = combine(y2[i], [cr[i], cb[i]], [cr2[i], cb2[i]], k, top);
            }
        });
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawlink_frame::BayerPattern;

    fn noisy_edge() -> RgbImage {
        let (w, h) = (32, 32);
        let mut img = RgbImage::new(w, h);
        let mut s = 1u32;
        for i in 0..w * h {
            let base = if i % w < 16 { 10000.0 } else { 40000.0 };
            for p in img.planes.iter_mut() {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let n = ((s >> 16) as f32 / 65536.0 - 0.5) * 600.0;
                p[i] = (base + n) as u16;
            }
        }
        img
    }

    fn std_dev(v: &[u16], w: usize, cols: std::ops::Range<usize>) -> f32 {
        let vals: Vec<f32> = v
            .iter()
            .enumerate()
            .filter(|(i, _)| cols.contains(&(i % w)))
            .map(|(_, &x)| x as f32)
            .collect();
        let m = vals.iter().sum::<f32>() / vals.len() as f32;
        (vals.iter().map(|x| (x - m).powi(2)).sum::<f32>() / vals.len() as f32).sqrt()
    }

    #[test]
    fn bands_equal_the_whole_frame_bit_for_bit() {
        let mut s = 9u32;
        for (w, h, sigma, chroma) in [
            (37usize, 53usize, 0.02f32, 1.0f32),
            (64, 16, 0.05, 0.5),
            (5, 3, 0.02, 1.0),
            (1, 7, 0.02, 1.0),
            (40, 40, 0.0, 1.0),
            (40, 40, 0.02, 0.0),
            (23, 97, 0.02, 1.0),
            (9, 81, 0.05, 0.7),
            (23, 200, 0.02, 1.0),
        ] {
            let mut img = RgbImage::new(w, h);
            for p in img.planes.iter_mut() {
                for v in p.iter_mut() {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *v = (s >> 16) as u16;
                }
            }
            let st = LumaChroma {
                luma_sigma: sigma,
                chroma,
            };
            let mut ctx = FrameContext::new(BayerPattern::Rggb, 65535);
            let want = st.apply_whole_frame(img.clone(), &mut ctx);
            for group_bands in [1, 2, 3] {
                assert_eq!(
                    st.apply_in_groups(img.clone(), &ctx, group_bands),
                    want,
                    "{w}x{h} sigma {sigma} chroma {chroma}, {group_bands} bands per group"
                );
            }
            assert_eq!(
                st.apply(img, &mut ctx),
                want,
                "{w}x{h} sigma {sigma} chroma {chroma}"
            );
        }
    }

    #[test]
    fn reduces_noise_and_keeps_the_edge() {
        let img = noisy_edge();
        let before = std_dev(&img.planes[0], 32, 2..14);
        let mut ctx = FrameContext::new(BayerPattern::Rggb, 65535);
        let out = LumaChroma {
            luma_sigma: 0.02,
            chroma: 1.0,
        }
        .apply(img, &mut ctx);
        let after = std_dev(&out.planes[0], 32, 2..14);
        assert!(after < 0.7 * before, "noise {before} -> {after}");
        // The step between columns 15 and 16 stays a step.
        let row = 16 * 32;
        assert!(out.planes[1][row + 14] < 12000 && out.planes[1][row + 17] > 38000);
    }
}
