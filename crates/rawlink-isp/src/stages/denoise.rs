//! Fast edge-preserving denoise that treats luma and chroma separately.
//!
//! With `Y = (R + 2G + B)/4`, `Cr = R − Y`, `Cb = B − Y` (and `G = Y − (Cr + Cb)/2`):
//! - luma: a 3×3 range-weighted mean (a small bilateral): neighbours whose luma differs
//!   by much more than `luma_sigma` get almost no weight, so edges stay sharp;
//! - chroma: a 5×5 binomial blur, mixed in by `chroma`. The eye barely resolves chroma
//!   detail, and sensor noise is strongest there after white balance.
//!
//! [`DenoiseSharpen`] runs the unsharp mask on the denoised rows as they come, in the
//! same pass (the pipeline's default when `lumachroma` is followed by `unsharp`).

use crate::stages::pad::reflect;
use crate::stages::sat_u16;
use crate::stages::sharpen::{LumaRow, Unsharp, UnsharpRow};
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

/// Halo rows: 2 for the 5-tap chroma blur (the 3×3 luma filter needs 1).
const HALO: usize = 2;
/// Rows of luma and chroma kept per thread: a ring of the `2 · HALO + 1` rows an output
/// row reads, rounded up to a power of two (row `j` lives in slot `j & (RING − 1)`).
const RING: usize = 8;

/// The luma filter's range kernel: the weight of a neighbour whose luma differs by `d`
/// is `(1 − d²/32σ²)₊^16`, the compact form `(1 − x/16)^16` of the Gaussian
/// `exp(−d²/2σ²)`: within 0.018 of it everywhere, exactly 1 at `d = 0`, falling
/// monotonically to exactly 0 at `d ≈ 5.7σ`. A multiply-add, a clamp and four
/// squarings, all of which vectorise (a table lookup per weight does not, and an
/// accurate `exp` takes about twice the operations; see NOTES.md). This returns
/// `−1/32σ²`.
fn range_coef(luma_sigma: f32, top: f32) -> f32 {
    let sigma = (luma_sigma * top).max(1e-3);
    -1.0 / (32.0 * sigma * sigma)
}

/// The range weight between luma samples `a` and `b` (`k` from [`range_coef`]);
/// `weight(k, a, b) = weight(k, b, a)` bit for bit, so one weight serves both ends of
/// an edge.
#[inline(always)]
fn weight(k: f32, a: f32, b: f32) -> f32 {
    let d = a - b;
    let u = (1.0 + k * (d * d)).max(0.0);
    let u = u * u;
    let u = u * u;
    let u = u * u;
    u * u
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

/// Per-thread working rows of one group: rings of [`RING`] rows.
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

impl Scratch {
    fn new(w: usize) -> Self {
        let pw = w + 2;
        Scratch {
            y: vec![0.0; RING * pw],
            cr: vec![0.0; RING * w],
            cb: vec![0.0; RING * w],
            hcr: vec![0.0; RING * w],
            hcb: vec![0.0; RING * w],
            y2: vec![0.0; w],
            row_w: vec![0.0; pw],
            pair_w: [vec![0.0; 3 * pw], vec![0.0; 3 * pw]],
            vcr: vec![0.0; w],
            vcb: vec![0.0; w],
        }
    }

    /// Luma and chroma of one R, G, B row (and the chroma's horizontal blur when `k > 0`)
    /// into ring slot `slot`.
    #[inline(always)]
    fn fill(&mut self, slot: usize, [r, g, b]: [&[u16]; 3], w: usize, k: f32) {
        let pw = w + 2;
        let yrow = &mut self.y[slot * pw..(slot + 1) * pw];
        let crow = &mut self.cr[slot * w..(slot + 1) * w];
        let brow = &mut self.cb[slot * w..(slot + 1) * w];
        let (r, g, b) = (&r[..w], &g[..w], &b[..w]);
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
            hblur_row(crow, &mut self.hcr[slot * w..(slot + 1) * w]);
            hblur_row(brow, &mut self.hcb[slot * w..(slot + 1) * w]);
        }
    }
}

/// Weights of the horizontal edges of a padded luma row: `out[k]` between `r[k]` and
/// `r[k + 1]`.
#[inline(always)]
fn row_weights(kc: f32, r: &[f32], out: &mut [f32]) {
    let out = &mut out[..r.len() - 1];
    for (k, o) in out.iter_mut().enumerate() {
        *o = weight(kc, r[k + 1], r[k]);
    }
}

/// Weights of the edges between an upper row `u` and the lower row `l` below it, as
/// three runs of `pw`: vertical `u[k]–l[k]`, down-right `u[k]–l[k + 1]`, down-left
/// `u[k + 1]–l[k]`. Each edge is used by the output pixels at both of its ends, so the
/// filter computes 4 weights per pixel instead of 8.
#[inline(always)]
fn pair_weights(kc: f32, u: &[f32], l: &[f32], out: &mut [f32]) {
    let pw = u.len();
    let (v, rest) = out.split_at_mut(pw);
    let (d, a) = rest.split_at_mut(pw);
    let l = &l[..pw];
    for k in 0..pw {
        v[k] = weight(kc, u[k], l[k]);
    }
    for k in 0..pw - 1 {
        d[k] = weight(kc, u[k], l[k + 1]);
        a[k] = weight(kc, u[k + 1], l[k]);
    }
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

/// One row of the vertical 5-tap binomial blur from the ring `p`: rows `j - 2 ..= j + 2`.
#[inline(always)]
fn vblur_row(p: &[f32], j: usize, w: usize, o: &mut [f32]) {
    let r = |d: usize| &p[((j + d - 2) & (RING - 1)) * w..][..w];
    let (a, b, c, d, e) = (r(0), r(1), r(2), r(3), r(4));
    let o = &mut o[..w];
    for x in 0..w {
        o[x] = K5[0] * (a[x] + e[x]) + K5[1] * (b[x] + d[x]) + K5[2] * c[x];
    }
}

/// One group's work, as a `pulp` kernel: compiled for AVX2 (and NEON) as well as the
/// baseline and picked at run time; the same arithmetic on every path.
struct Group<'a> {
    stage: &'a LumaChroma,
    /// The range kernel's coefficient ([`range_coef`]).
    kc: f32,
    /// The group's context rows outside it, as saved before any group was written: the
    /// `ctx` rows above, then the `ctx` rows below, each as R, G, B rows of `w`.
    halo: &'a [u16],
    ctx: usize,
    w: usize,
    top: f32,
    sc: &'a mut Scratch,
    out: [&'a mut [u16]; 3],
    /// The unsharp mask fused after the denoise, if any.
    sharpen: Option<Fused<'a>>,
}

/// An unsharp mask run on a group's denoised rows as they come (see [`Group::run`]).
struct Fused<'a> {
    stage: &'a Unsharp,
    /// Threshold in codes.
    thr: f32,
    /// Whether image rows lie above and below the group (else its edge rows clamp).
    above: bool,
    below: bool,
    /// Rings of [`SHARP_RING`] rows of luma, and of denoised R, G, B rows of `w` each
    /// (only the rows just outside the group use the latter; the group's own denoised
    /// rows are written into the image and sharpened there).
    rgb: &'a mut [u16],
    luma: &'a mut [f32],
}

/// Denoised rows kept for the fused unsharp mask: the 3 it reads (the newest among
/// them), rounded up to a power of two.
const SHARP_RING: usize = 4;

impl pulp::WithSimd for Group<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.run()
    }
}

impl Group<'_> {
    /// Streams over the group's rows. Source row `v` of the group (`−ctx ≤ v < n + ctx`;
    /// outside `0..n`, a saved context row) is converted into ring row `v + ctx` just
    /// before denoised row `v − 2`, its first reader (rows `v − 2 ..= v + 2` read it);
    /// every image row is therefore read before any output row at or below it is
    /// written.
    ///
    /// Without a fused unsharp mask, denoised row `r` is written in place. With one, it
    /// goes into a small ring with its luma, and the unsharp mask of row `r − 1` (which
    /// reads the luma of rows `r − 2 ..= r`) writes the image row; the group then also
    /// denoises the row just above and just below it (from three saved context rows,
    /// `ctx` = 3), which the mask reads, without writing them.
    #[inline(always)]
    fn run(self) {
        const SP: [[f32; 3]; 3] = [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]];
        let Group {
            stage,
            kc,
            halo,
            ctx,
            w,
            top,
            sc,
            out: [o_r, o_g, o_b],
            mut sharpen,
        } = self;
        let luma_on = stage.luma_sigma > 0.0;
        let k = stage.chroma;
        let pw = w + 2;
        let n = o_r.len() / w;
        let mask = RING - 1;
        let c = ctx as isize;
        // Denoised rows: the group's, and with a mask the rows just outside it.
        let (r0, r1) = match &sharpen {
            Some(f) => (-isize::from(f.above), n as isize + isize::from(f.below)),
            None => (0, n as isize),
        };
        for v in r0 - HALO as isize..r0 + HALO as isize {
            fill(
                sc,
                [&*o_r, &*o_g, &*o_b],
                halo,
                ctx,
                n,
                (v + c) as usize,
                w,
                k,
            );
        }
        // pair_w[upper] holds the weights between rows r - 1 and r, the other those
        // between r and r + 1; the latter become the former for the next row.
        let mut upper = 0;
        for r in r0..r1 {
            let j = (r + c) as usize;
            fill(sc, [&*o_r, &*o_g, &*o_b], halo, ctx, n, j + HALO, w, k);
            let Scratch {
                y,
                cr,
                cb,
                hcr,
                hcb,
                y2,
                vcr,
                vcb,
                row_w,
                pair_w,
            } = &mut *sc;
            let ya = &y[((j - 1) & mask) * pw..][..pw];
            let yb = &y[(j & mask) * pw..][..pw];
            let yc = &y[((j + 1) & mask) * pw..][..pw];
            let y2 = &mut y2[..w];
            if luma_on {
                if r == r0 {
                    pair_weights(kc, ya, yb, &mut pair_w[upper]);
                }
                pair_weights(kc, yb, yc, &mut pair_w[1 - upper]);
                row_weights(kc, yb, row_w);
                let (ab, bc) = (&pair_w[upper], &pair_w[1 - upper]);
                let (vab, dab, aab) = (&ab[..pw], &ab[pw..2 * pw], &ab[2 * pw..3 * pw]);
                let (vbc, dbc, abc) = (&bc[..pw], &bc[pw..2 * pw], &bc[2 * pw..3 * pw]);
                let hb = &row_w[..pw];
                let w0 = weight(kc, 0.0, 0.0);
                // The 9 taps in the whole-frame formulation's order, each weight the
                // spatial factor times the range weight of the edge to the centre.
                for x in 0..w {
                    let taps = [
                        (SP[0][0] * dab[x], ya[x]),
                        (SP[0][1] * vab[x + 1], ya[x + 1]),
                        (SP[0][2] * aab[x + 1], ya[x + 2]),
                        (SP[1][0] * hb[x], yb[x]),
                        (SP[1][1] * w0, yb[x + 1]),
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
            let cr = &cr[(j & mask) * w..][..w];
            let cb = &cb[(j & mask) * w..][..w];
            let (vcr, vcb) = (&mut vcr[..w], &mut vcb[..w]);
            if k > 0.0 {
                vblur_row(hcr, j, w, vcr);
                vblur_row(hcb, j, w, vcb);
            } else {
                vcr.copy_from_slice(cr);
                vcb.copy_from_slice(cb);
            }
            // The group's own rows go straight into the image (their source rows have
            // all been read into the rings by now), where the mask then sharpens them
            // in place; the rows just outside the group, which the mask only reads,
            // into the group's ring.
            let own = (0..n as isize).contains(&r);
            let [dr, dg, db] = match &mut sharpen {
                Some(f) if !own => sharp_rows(f.rgb, r, w),
                _ => {
                    let at = r as usize * w;
                    [
                        &mut o_r[at..][..w],
                        &mut o_g[at..][..w],
                        &mut o_b[at..][..w],
                    ]
                }
            };
            for x in 0..w {
                [dr[x], dg[x], db[x]] = combine(y2[x], [cr[x], cb[x]], [vcr[x], vcb[x]], k, top);
            }
            if let Some(f) = &mut sharpen {
                let slot = r.rem_euclid(SHARP_RING as isize) as usize;
                let at = r.max(0) as usize * w;
                let src = if own {
                    [&o_r[at..][..w], &o_g[at..][..w], &o_b[at..][..w]]
                } else {
                    let [dr, dg, db] = sharp_rows(f.rgb, r, w);
                    [&*dr, &*dg, &*db]
                };
                LumaRow {
                    src,
                    out: &mut f.luma[slot * w..][..w],
                }
                .run();
                if r > 0 {
                    // Row r − 1 has its rows above and below now (at the top of the
                    // image, row 0 is its own row above).
                    let up = if r - 2 >= r0 { r - 2 } else { r - 1 };
                    sharpen_row(f, [&mut *o_r, &mut *o_g, &mut *o_b], [up, r - 1, r], w, top);
                }
            }
        }
        if let Some(f) = &mut sharpen {
            // The group's last row, when no image row lies below it: its own row below.
            if !f.below {
                let s = n as isize - 1;
                let up = if s > r0 { s - 1 } else { s };
                sharpen_row(f, [&mut *o_r, &mut *o_g, &mut *o_b], [up, s, s], w, top);
            }
        }
    }
}

/// Denoised row `r` of a group's ring of [`SHARP_RING`] rows, as R, G, B rows.
#[inline(always)]
fn sharp_rows(ring: &mut [u16], r: isize, w: usize) -> [&mut [u16]; 3] {
    let slot = r.rem_euclid(SHARP_RING as isize) as usize;
    let row = &mut ring[slot * 3 * w..][..3 * w];
    let (a, rest) = row.split_at_mut(w);
    let (b, c) = rest.split_at_mut(w);
    [a, b, c]
}

/// The unsharp mask of a group's denoised row `s` (`rows` = `[up, s, dn]`, the rows
/// whose luma it reads), in place in the group's image row `s`.
#[inline(always)]
fn sharpen_row(f: &mut Fused<'_>, out: [&mut [u16]; 3], rows: [isize; 3], w: usize, top: f32) {
    let [up, s, dn] = rows;
    let at = s as usize * w;
    let [o_r, o_g, o_b] = out;
    let (o_r, o_g, o_b) = (
        &mut o_r[at..][..w],
        &mut o_g[at..][..w],
        &mut o_b[at..][..w],
    );
    let slot = |r: isize| r.rem_euclid(SHARP_RING as isize) as usize * w;
    UnsharpRow {
        stage: f.stage,
        thr: f.thr,
        top,
        up: &f.luma[slot(up)..][..w],
        mid: &f.luma[slot(s)..][..w],
        dn: &f.luma[slot(dn)..][..w],
        rgb: [o_r, o_g, o_b],
    }
    .run();
}

/// Ring row `j` of a group of `n` rows with `ctx` context rows on each side: source row
/// `j − ctx` of the group, an image row of the group `o` (not yet written) or one of its
/// saved context rows `halo`. A function, not a closure: closures are compiled outside
/// the `pulp` dispatch (scalar, with bounds checks).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill(
    sc: &mut Scratch,
    o: [&[u16]; 3],
    halo: &[u16],
    ctx: usize,
    n: usize,
    j: usize,
    w: usize,
    k: f32,
) {
    let src = if (ctx..n + ctx).contains(&j) {
        let at = (j - ctx) * w;
        o.map(|p| &p[at..][..w])
    } else {
        rgb_rows(halo, if j < ctx { j } else { j - n }, w)
    };
    sc.fill(j & (RING - 1), src, w, k);
}

impl RgbStage for LumaChroma {
    fn name(&self) -> &'static str {
        "denoise"
    }

    /// Group-wise and fused: each group of rows streams through per-thread rings of
    /// luma and chroma rows, and the luma filter, the chroma blur and the recombination
    /// write its output rows in place. Bit-identical to the whole-frame formulation
    /// (tested): the same operations in the same order.
    fn apply(&self, img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let rows = group_rows(img.height);
        self.apply_in_groups(img, ctx, rows, None)
    }
}

/// Rows per group of a frame `h` rows high. Only the context rows outside each group
/// are saved before any group writes, and a group recomputes its context rows, so
/// groups are tall; but there are enough of them to balance the threads.
fn group_rows(h: usize) -> usize {
    h.div_ceil(GROUPS_PER_THREAD * rayon::current_num_threads())
        .max(MIN_GROUP_ROWS)
}

/// Groups per thread: two, so that a thread that starts late does not hold up the
/// stage by a whole half of the frame. Measured (2 threads, 5–7 interleaved rounds,
/// denoise ms at 640×480 / 1080p / 4K): 8 per thread 0.87 / 5.61 / 21.2, 4 0.85 / 5.52 /
/// 20.9, 2 0.81 / 5.43 / 20.9, 1 0.80 / 5.40 / –.
const GROUPS_PER_THREAD: usize = 2;
/// The fewest rows per group: a group converts its 2 · HALO context rows again (with the
/// fused mask, 2 more, and denoises 2 rows outside it), a small share of 32 rows.
const MIN_GROUP_ROWS: usize = 32;

/// The luma/chroma denoise followed by the unsharp mask, in one pass: each group's
/// denoised rows are sharpened as they come, so the denoised frame is never written
/// out and read back. The same output as the two stages one after the other (tested).
#[derive(Debug, Clone)]
pub struct DenoiseSharpen {
    /// The denoise.
    pub denoise: LumaChroma,
    /// The unsharp mask after it.
    pub sharpen: Unsharp,
}

impl RgbStage for DenoiseSharpen {
    fn name(&self) -> &'static str {
        "denoise"
    }

    fn apply(&self, img: RgbImage, ctx: &mut FrameContext) -> RgbImage {
        let rows = group_rows(img.height);
        self.apply_in_groups(img, ctx, rows)
    }
}

impl DenoiseSharpen {
    /// [`RgbStage::apply`] with groups of `rows` rows.
    fn apply_in_groups(&self, img: RgbImage, ctx: &FrameContext, rows: usize) -> RgbImage {
        let sharpen = (img.width >= 3 && img.height >= 3 && self.sharpen.amount != 0.0)
            .then_some(&self.sharpen);
        // Otherwise the mask leaves the frame as it is.
        self.denoise.apply_in_groups(img, ctx, rows, sharpen)
    }
}

impl LumaChroma {
    /// [`RgbStage::apply`] with groups of `group_rows` rows (any height gives the same
    /// output; tests try several), with `sharpen` fused after it if given (frames at
    /// least 3×3).
    fn apply_in_groups(
        &self,
        mut img: RgbImage,
        ctx: &FrameContext,
        group_rows: usize,
        sharpen: Option<&Unsharp>,
    ) -> RgbImage {
        let (w, h) = (img.width, img.height);
        let top = ctx.max_value as f32;
        let kc = range_coef(self.luma_sigma, top);
        // Context rows on each side of a group: one more with the mask (it reads the
        // denoised rows just outside the group).
        let c = HALO + usize::from(sharpen.is_some());
        let row3 = 3 * w;
        let per_group = 2 * c * row3;
        // Context rows of every group: the `c` above it, then the `c` below it.
        let context = |y0: usize, n: usize| {
            (0..2 * c).map(move |slot| {
                let j = if slot < c { slot } else { n + slot };
                reflect((y0 + j) as isize - c as isize, h)
            })
        };
        let mut saved = vec![0u16; h.div_ceil(group_rows) * per_group];
        saved
            .par_chunks_mut(per_group)
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
        let thr = sharpen.map_or(0.0, |s| s.threshold * top);
        or.par_chunks_mut(group_rows * w)
            .zip(og.par_chunks_mut(group_rows * w))
            .zip(ob.par_chunks_mut(group_rows * w))
            .zip(saved.par_chunks(per_group))
            .enumerate()
            .for_each_init(
                || {
                    let rings = sharpen
                        .map(|_| (vec![0u16; SHARP_RING * row3], vec![0f32; SHARP_RING * w]));
                    (Scratch::new(w), rings)
                },
                |(sc, rings), (g, (((o_r, o_g), o_b), halo))| {
                    let y0 = g * group_rows;
                    let y1 = y0 + o_r.len() / w;
                    let sharpen = sharpen
                        .zip(rings.as_mut())
                        .map(|(stage, (rgb, luma))| Fused {
                            stage,
                            thr,
                            above: y0 > 0,
                            below: y1 < h,
                            rgb,
                            luma,
                        });
                    arch.dispatch(Group {
                        stage: self,
                        kc,
                        halo,
                        ctx: c,
                        w,
                        top,
                        sc,
                        out: [o_r, o_g, o_b],
                        sharpen,
                    })
                },
            );
        img
    }
}

impl LumaChroma {
    /// The whole-frame formulation (seven full-frame planes), kept as the oracle the
    /// group-wise kernel must match bit for bit.
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
        // Luma: 3×3 range-weighted mean, Gaussian range weights of |Δluma|.
        let kc = range_coef(self.luma_sigma, top);
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
                            let wgt = sp * weight(kc, r[xx], c);
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
    fn range_kernel_is_a_compact_gaussian() {
        let sigma = 0.02 * 65535.0f64;
        let k = range_coef(0.02, 65535.0);
        let at = |d: f64| weight(k, (1000.0 + d) as f32, 1000.0);
        assert_eq!(at(0.0), 1.0);
        let mut prev = 1.0f32;
        for i in 0..=8000 {
            let d = i as f64;
            let got = at(d);
            let gauss = (-d * d / (2.0 * sigma * sigma)).exp();
            assert!((got as f64 - gauss).abs() < 0.02, "d {d}: {got} vs {gauss}");
            assert!(got <= prev, "not monotonic at d {d}");
            assert_eq!(
                got,
                weight(k, 1000.0, (1000.0 + d) as f32),
                "symmetric at {d}"
            );
            prev = got;
        }
        // Zero from √32·σ on; a weight sum never is, as the centre's weight is 1.
        assert!(at(5.6 * sigma) > 0.0);
        assert_eq!(at(5.7 * sigma), 0.0);
        assert_eq!(at(65535.0), 0.0);
        // The smallest σ allowed still gives finite weights.
        let k = range_coef(0.0, 65535.0);
        assert_eq!(weight(k, 0.0, 0.0), 1.0);
        assert_eq!(weight(k, 65535.0, 0.0), 0.0);
    }

    #[test]
    fn groups_equal_the_whole_frame_bit_for_bit() {
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
            (7, 1, 0.02, 1.0),
            (1, 1, 0.02, 1.0),
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
            for group_rows in [1, 2, 3, 5, 32, 64, 96] {
                assert_eq!(
                    st.apply_in_groups(img.clone(), &ctx, group_rows, None),
                    want,
                    "{w}x{h} sigma {sigma} chroma {chroma}, {group_rows} rows per group"
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
    fn fused_sharpen_equals_the_two_stages_bit_for_bit() {
        let mut s = 17u32;
        for (w, h) in [
            (37usize, 53usize),
            (3, 3),
            (5, 4),
            (2, 9),
            (9, 2),
            (40, 40),
            (23, 97),
            (64, 7),
        ] {
            let mut img = RgbImage::new(w, h);
            for p in img.planes.iter_mut() {
                for (i, v) in p.iter_mut().enumerate() {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    // A ramp across the row plus noise, so the threshold matters.
                    *v = ((i % w) * 1500 + (s >> 22) as usize).min(65535) as u16;
                }
            }
            for (amount, threshold, chroma, luma_sigma) in [
                (0.6f32, 0.002f32, 1.0f32, 0.02f32),
                (1.5, 0.0, 0.0, 0.02),
                (0.0, 0.002, 1.0, 0.02),
                (0.6, 0.002, 0.5, 0.0),
            ] {
                let denoise = LumaChroma { luma_sigma, chroma };
                let sharpen = Unsharp { amount, threshold };
                let mut ctx = FrameContext::new(BayerPattern::Rggb, 65535);
                let want =
                    sharpen.apply(denoise.apply_whole_frame(img.clone(), &mut ctx), &mut ctx);
                let fused = DenoiseSharpen { denoise, sharpen };
                for rows in [1, 2, 3, 5, 32, 200] {
                    assert_eq!(
                        fused.apply_in_groups(img.clone(), &ctx, rows),
                        want,
                        "{w}x{h} amount {amount} threshold {threshold}, {rows} rows per group"
                    );
                }
                assert_eq!(fused.apply(img.clone(), &mut ctx), want, "{w}x{h}");
            }
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
