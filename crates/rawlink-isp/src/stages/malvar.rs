//! Malvar-He-Cutler (2004) gradient-corrected linear demosaic.
//!
//! Bilinear interpolation plus a Laplacian correction from the site's own colour,
//! with the paper's 5×5 kernels (×1/8):
//!
//! - G at R/B: `[0 0 -1 0 0; 0 0 2 0 0; -1 2 4 2 -1; 0 0 2 0 0; 0 0 -1 0 0]`
//! - R/B at G, the colour in the same row: `[0 0 ½ 0 0; 0 -1 0 -1 0; -1 4 5 4 -1; 0 -1 0 -1 0; 0 0 ½ 0 0]`
//! - R/B at G, the colour in the same column: the transpose
//! - B at R and R at B: `[0 0 -3/2 0 0; 0 2 0 2 0; -3/2 0 6 0 -3/2; 0 2 0 2 0; 0 0 -3/2 0 0]`
//!
//! Integer arithmetic (×16), clamped to the code range. Borders use reflect-101
//! padding, which keeps the CFA parity.
//!
//! Traversal: bands of output rows in parallel, each band's rows in order. Every
//! source row a band reads is padded and split by column parity once, into a ring of
//! five rows, so every tap of a site of one parity is a fixed offset into one of those
//! arrays; each pass (even, odd output columns) is then a branch-free loop over
//! equal-length slices, compiled for AVX2/AVX-512 (and NEON) as well as the baseline
//! and picked at run time. The passes' results are interleaved into the output row at
//! the end, through the tone curve when it is folded in. A normalisation and white
//! balance deferred to the demosaic (the default profile's `blc` and `wb`) are applied
//! to each source row as it is split.

use crate::stages::demosaic::RowOut;
use crate::stages::gamma::CodeMap;
use crate::stages::pad::reflect;
use crate::{Deferred, FrameContext, RawPlane, RgbImage};
use rawlink_frame::{BayerPattern, Channel};
use rayon::prelude::*;

/// Malvar-He-Cutler demosaic of `raw` (codes up to `max`).
pub fn demosaic_malvar(raw: &RawPlane, pattern: BayerPattern, max: u16) -> RgbImage {
    demosaic_malvar_curve(raw, pattern, max, None)
}

/// [`demosaic_malvar`], with every output code then mapped through `curve` as its row
/// is written (the tone curve folded in: one pass over the image less).
pub fn demosaic_malvar_curve(
    raw: &RawPlane,
    pattern: BayerPattern,
    max: u16,
    curve: Option<&CodeMap>,
) -> RgbImage {
    demosaic_malvar_prepared(raw, pattern, max, curve, None)
}

/// Output rows per band: each band splits its rows and the 4 around them once (32
/// rows: 1.125 splits per row).
const BAND_ROWS: usize = 32;

/// [`demosaic_malvar_curve`] of the mosaic `pre` makes of `raw` (each sample mapped as
/// its row is split).
pub(crate) fn demosaic_malvar_prepared(
    raw: &RawPlane,
    pattern: BayerPattern,
    max: u16,
    curve: Option<&CodeMap>,
    pre: Option<&Deferred>,
) -> RgbImage {
    let w = raw.width;
    let arch = pulp::Arch::new();
    // Per band: a ring of 5 source rows × 2 parities of `half` samples, and 2 passes ×
    // 2 interpolated colours of `ne`.
    let half = (w + 5) / 2;
    let ne = w.div_ceil(2);
    let mut out = RgbImage::for_overwrite(w, raw.height);
    let [r, g, b] = &mut out.planes;
    let band = BAND_ROWS * w.max(1);
    r.par_chunks_mut(band)
        .zip(g.par_chunks_mut(band))
        .zip(b.par_chunks_mut(band))
        .enumerate()
        .for_each_init(
            || vec![0u16; 10 * half + 4 * ne],
            |scratch, (k, ((r, g), b))| {
                arch.dispatch(MalvarBand {
                    raw,
                    cell: pattern.cell(),
                    y0: k * BAND_ROWS,
                    top: max as i32,
                    pre,
                    curve,
                    scratch,
                    planes: [r, g, b],
                })
            },
        );
    out
}

/// One band of output rows, as a `pulp` kernel.
struct MalvarBand<'a> {
    raw: &'a RawPlane,
    cell: [[Channel; 2]; 2],
    /// The band's first row.
    y0: usize,
    /// The code ceiling.
    top: i32,
    /// Applied to each source row as it is split.
    pre: Option<&'a Deferred>,
    curve: Option<&'a CodeMap>,
    scratch: &'a mut [u16],
    /// The band's rows of the output planes.
    planes: [&'a mut [u16]; 3],
}

/// Splits `row` padded by two reflected samples on each side (padded column `p` is
/// `row[reflect(p − 2)]`) into its even and odd padded columns: `even[j]` is padded
/// column `2j`, `odd[j]` padded column `2j + 1`.
#[inline(always)]
fn split_padded(row: &[u16], even: &mut [u16], odd: &mut [u16]) {
    let w = row.len();
    for (k, pair) in row.chunks_exact(2).enumerate() {
        even[k + 1] = pair[0];
        odd[k + 1] = pair[1];
    }
    let mut set = |p: usize| {
        let v = row[reflect(p as isize - 2, w)];
        if p.is_multiple_of(2) {
            even[p / 2] = v;
        } else {
            odd[p / 2] = v;
        }
    };
    for p in [0, 1, w + 2, w + 3] {
        set(p);
    }
    if w % 2 == 1 {
        set(w + 1);
    }
}

/// The taps of one pass: for each of the five rows, the same-parity samples at the
/// site's column − 2 (`s[r]`; the site itself is `s[r][k + 1]`, column + 2 is
/// `s[r][k + 2]`) and the other parity's at column − 1 (`d[r]`; column + 1 is
/// `d[r][k + 1]`).
struct Taps<'a> {
    s: [&'a [u16]; 5],
    d: [&'a [u16]; 5],
}

/// The rounded, clamped code of a sum ×16.
#[inline(always)]
fn code(v: i32, top: i32) -> u16 {
    ((v + 8) >> 4).clamp(0, top) as u16
}

/// `n` samples of `v` from `o` on. A function, not a closure: closures are compiled
/// outside the `pulp` dispatch (scalar, with bounds checks).
#[inline(always)]
fn at(n: usize, v: &[u16], o: usize) -> &[u16] {
    &v[o..o + n]
}

/// Sample `k` of `v`, widened.
#[inline(always)]
fn i(v: &[u16], k: usize) -> i32 {
    v[k] as i32
}

/// Interpolates one pass's two missing colours into `a` and `b` (`n = a.len()` sites).
/// At a green site `a` is the colour sharing its row and `b` the one sharing its
/// column; at a red or blue site, `a` is green and `b` the other of red and blue.
#[inline(always)]
fn site_pass(green_site: bool, t: &Taps<'_>, top: i32, a: &mut [u16], b: &mut [u16]) {
    let n = a.len();
    let b = &mut b[..n];
    let (m2, p2) = (at(n, t.s[0], 1), at(n, t.s[4], 1));
    let (m1, p1) = (at(n, t.s[1], 1), at(n, t.s[3], 1));
    let (cl2, c, cr2) = (at(n, t.s[2], 0), at(n, t.s[2], 1), at(n, t.s[2], 2));
    let (cl, cr) = (at(n, t.d[2], 0), at(n, t.d[2], 1));
    let (m1l, m1r) = (at(n, t.d[1], 0), at(n, t.d[1], 1));
    let (p1l, p1r) = (at(n, t.d[3], 0), at(n, t.d[3], 1));
    if green_site {
        for k in 0..n {
            let cv = i(c, k);
            let diag = i(m1l, k) + i(m1r, k) + i(p1l, k) + i(p1r, k);
            let hsum = 10 * cv + 8 * (i(cl, k) + i(cr, k)) - 2 * diag - 2 * (i(cl2, k) + i(cr2, k))
                + (i(m2, k) + i(p2, k));
            let vsum = 10 * cv + 8 * (i(m1, k) + i(p1, k)) - 2 * diag - 2 * (i(m2, k) + i(p2, k))
                + (i(cl2, k) + i(cr2, k));
            a[k] = code(hsum, top);
            b[k] = code(vsum, top);
        }
    } else {
        for k in 0..n {
            let cv = i(c, k);
            let far = i(cl2, k) + i(cr2, k) + i(m2, k) + i(p2, k);
            let gsum = 8 * cv + 4 * (i(cl, k) + i(cr, k) + i(m1, k) + i(p1, k)) - 2 * far;
            let osum = 12 * cv + 4 * (i(m1l, k) + i(m1r, k) + i(p1l, k) + i(p1r, k)) - 3 * far;
            a[k] = code(gsum, top);
            b[k] = code(osum, top);
        }
    }
}

impl pulp::WithSimd for MalvarBand<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self {
            raw,
            cell,
            y0,
            top,
            pre,
            curve,
            scratch,
            planes: [pr, pg, pb],
        } = self;
        let (w, h) = (raw.width, raw.height);
        let half = (w + 5) / 2;
        let (ne, no) = (w.div_ceil(2), w / 2);
        let (ring, res) = scratch.split_at_mut(10 * half);
        let (ae, rest) = res.split_at_mut(ne);
        let (be, rest) = rest.split_at_mut(ne);
        let (ao, bo) = rest.split_at_mut(ne);
        // Which source row each ring slot holds. The five rows an output row reads
        // are distinct modulo 5 (they lie within five consecutive rows, or the frame
        // has at most five), so row `sy` lives in slot `sy % 5`.
        let mut held = [usize::MAX; 5];
        let rows = pr.len() / w;
        for j in 0..rows {
            let y = y0 + j;
            let mut slot = [0usize; 5];
            for (d, s) in slot.iter_mut().enumerate() {
                let sy = reflect(y as isize + d as isize - 2, h);
                *s = sy % 5;
                if held[*s] != sy {
                    held[*s] = sy;
                    let (e, o) = ring[*s * 2 * half..][..2 * half].split_at_mut(half);
                    split_padded(&raw.data[sy * w..][..w], e, o);
                    if let Some(p) = pre {
                        let [ce, co] = cell[sy & 1];
                        map_codes(p, ce as usize, e);
                        map_codes(p, co as usize, o);
                    }
                }
            }
            let half_of = |d: usize, q: usize| &ring[(slot[d] * 2 + q) * half..][..half];
            let even: [&[u16]; 5] = std::array::from_fn(|d| half_of(d, 0));
            let odd: [&[u16]; 5] = std::array::from_fn(|d| half_of(d, 1));
            let sites = cell[y & 1];
            // Even output columns 2k: the site is even[k + 1], its left neighbour odd[k].
            let t0 = Taps { s: even, d: odd };
            site_pass(sites[0] == Channel::G, &t0, top, ae, be);
            // Odd output columns 2k + 1: the site is odd[k + 1], its left neighbour
            // even[k + 1].
            let t1 = Taps {
                s: odd,
                d: even.map(|e| &e[1..]),
            };
            site_pass(sites[1] == Channel::G, &t1, top, &mut ao[..no], bo);
            let results = [[&even[2][1..], &*ae, &*be], [&odd[2][1..], &*ao, &*bo]];
            let at = j * w;
            RowOut {
                sites,
                other: cell[1 - (y & 1)],
                curve,
                planes: [&mut pr[at..][..w], &mut pg[at..][..w], &mut pb[at..][..w]],
            }
            .write(results);
        }
    }
}

/// Maps every code of `v` (samples of colour `c`) as `pre` says.
#[inline(always)]
fn map_codes(pre: &Deferred, c: usize, v: &mut [u16]) {
    for x in v {
        *x = pre.code(c, *x);
    }
}

/// The previous per-pixel formulation, kept as the oracle of [`demosaic_malvar`].
#[cfg(test)]
fn demosaic_malvar_strided(raw: &RawPlane, pattern: BayerPattern, max: u16) -> RgbImage {
    let (w, h) = (raw.width, raw.height);
    let mut out = RgbImage::new(w, h);
    let cell = pattern.cell();
    let top = max as i32;
    out.par_rows_mut().for_each_init(
        || vec![0i32; 5 * (w + 4)],
        |scratch, (y, [r, g, b])| {
            let rows = crate::stages::pad::padded_rows::<2>(raw, y, scratch);
            let [m2, m1, c0, p1, p2] = rows;
            let planes: [&mut [u16]; 3] = [r, g, b];
            let clamp = |v: i32| ((v + 8) >> 4).clamp(0, top) as u16;
            for q in 0..2 {
                let site = cell[y & 1][q];
                let xs = (q..w).step_by(2);
                match site {
                    Channel::G => {
                        let hc = cell[y & 1][1 - q] as usize;
                        let vc = cell[1 - (y & 1)][q] as usize;
                        for x in xs {
                            let c = x + 2;
                            let cv = c0[c];
                            let diag = m1[c - 1] + m1[c + 1] + p1[c - 1] + p1[c + 1];
                            let hsum = 10 * cv + 8 * (c0[c - 1] + c0[c + 1])
                                - 2 * diag
                                - 2 * (c0[c - 2] + c0[c + 2])
                                + (m2[c] + p2[c]);
                            let vsum =
                                10 * cv + 8 * (m1[c] + p1[c]) - 2 * diag - 2 * (m2[c] + p2[c])
                                    + (c0[c - 2] + c0[c + 2]);
                            planes[1][x] = cv as u16;
                            planes[hc][x] = clamp(hsum);
                            planes[vc][x] = clamp(vsum);
                        }
                    }
                    _ => {
                        let sc = site as usize;
                        let oc = 2 - sc;
                        for x in xs {
                            let c = x + 2;
                            let cv = c0[c];
                            let far = c0[c - 2] + c0[c + 2] + m2[c] + p2[c];
                            let gsum =
                                8 * cv + 4 * (c0[c - 1] + c0[c + 1] + m1[c] + p1[c]) - 2 * far;
                            let osum = 12 * cv
                                + 4 * (m1[c - 1] + m1[c + 1] + p1[c - 1] + p1[c + 1])
                                - 3 * far;
                            planes[sc][x] = cv as u16;
                            planes[1][x] = clamp(gsum);
                            planes[oc][x] = clamp(osum);
                        }
                    }
                }
            }
        },
    );
    out
}

/// The Malvar stage, with the tone curve folded into its output when `curve` is set.
#[derive(Debug, Clone, Default)]
pub struct Malvar {
    /// The tone curve, applied to every output code as it is written.
    pub curve: Option<CodeMap>,
}

impl crate::DemosaicStage for Malvar {
    fn name(&self) -> &'static str {
        "demosaic"
    }
    fn apply(&self, raw: &RawPlane, ctx: &mut FrameContext) -> RgbImage {
        let pre = ctx.deferred.as_ref();
        demosaic_malvar_prepared(raw, ctx.pattern, ctx.max_value, self.curve.as_ref(), pre)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split-parity kernel equals the per-pixel formulation on every pattern, on
    /// even and odd sizes down to 1×1 (where reflection folds more than once) and
    /// across band edges, with 16-bit noise and with codes clamped to 12 bits; and with
    /// a curve folded in, it equals the curve applied afterwards.
    #[test]
    fn split_rows_equal_the_per_pixel_oracle() {
        let sizes = [
            (1, 1),
            (2, 1),
            (1, 3),
            (2, 2),
            (3, 2),
            (4, 5),
            (5, 5),
            (8, 6),
            (33, 7),
            (64, 9),
            (101, 12),
            // Several bands of 32 rows, the last one short.
            (17, 70),
            (40, 97),
        ];
        crate::stages::demosaic::check_against_oracle(
            9,
            &sizes,
            &[65535, 4095],
            demosaic_malvar_curve,
            demosaic_malvar_strided,
        );
    }
}
