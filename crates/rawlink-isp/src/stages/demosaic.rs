//! Bilinear demosaic with edge clamping, for all four Bayer patterns.
//!
//! At a red or blue site, green is the mean of the 4 neighbours (`cross`) and the
//! other colour the mean of the 4 diagonals (`diag`). At a green site, the colour
//! that shares its row is the mean of left and right (`horiz`), the other the mean of
//! up and down (`vert`). Means are integer sums with truncating division; neighbours
//! outside the frame are replaced by the nearest edge sample.
//!
//! Traversal: one output row at a time (rows in parallel). Each row is split by
//! column parity, so the colour of every site in an inner loop is known before the
//! loop starts: no per-pixel branch on the CFA colour.

use crate::stages::gamma::CodeMap;
use crate::{DemosaicStage, FrameContext, RawPlane, RgbImage};
use rawlink_frame::{BayerPattern, Channel};
use rayon::prelude::*;

/// Bilinear demosaic (the reference ISP's, generalised to every pattern), with the
/// tone curve folded into its output when `curve` is set.
#[derive(Debug, Clone, Default)]
pub struct Bilinear {
    /// The tone curve, applied to every output code as it is written.
    pub curve: Option<CodeMap>,
}

impl DemosaicStage for Bilinear {
    fn name(&self) -> &'static str {
        "demosaic"
    }
    fn apply(&self, raw: &RawPlane, ctx: &mut FrameContext) -> RgbImage {
        demosaic_bilinear_curve(raw, ctx.pattern, self.curve.as_ref())
    }
}

/// Bilinear demosaic of `raw` with CFA `pattern`.
pub fn demosaic_bilinear(raw: &RawPlane, pattern: BayerPattern) -> RgbImage {
    demosaic_bilinear_curve(raw, pattern, None)
}

/// [`demosaic_bilinear`], with every output code then mapped through `curve` as its row
/// is written (the tone curve folded in: one pass over the image less).
///
/// Each output row reads its three source rows (edge clamped) split by column parity,
/// with the clamped edge samples in place: even padded columns in one array, odd in
/// the other. Every neighbour of a site of one parity is then the same offset into one
/// of those arrays, so each of the two passes (even and odd output columns) is a plain
/// loop over equal-length slices, compiled for AVX2 where present; the two passes'
/// results are interleaved into the output row at the end.
pub fn demosaic_bilinear_curve(
    raw: &RawPlane,
    pattern: BayerPattern,
    curve: Option<&CodeMap>,
) -> RgbImage {
    let (w, h) = (raw.width, raw.height);
    let arch = pulp::Arch::new();
    // Per row: 3 source rows × 2 parities of `half + 1` samples, and 2 passes × 2
    // interpolated colours of `half`.
    let half = w.div_ceil(2);
    demosaic_rows(
        raw,
        pattern,
        curve,
        6 * (half + 1) + 4 * half,
        |y, scratch, out| {
            let row = |yy: usize| &raw.data[yy * w..(yy + 1) * w];
            arch.dispatch(BilinearRow {
                rows: [row(y.saturating_sub(1)), row(y), row((y + 1).min(h - 1))],
                scratch,
                out,
            })
        },
    )
}

/// The bilinear kernel's row driver: output rows in parallel, each handed to
/// `row(y, scratch, out)` with a per-thread scratch buffer of `scratch_len` samples and
/// its [`RowOut`] (Malvar, whose five source rows are worth splitting once each, runs
/// bands of rows instead).
pub(crate) fn demosaic_rows<F>(
    raw: &RawPlane,
    pattern: BayerPattern,
    curve: Option<&CodeMap>,
    scratch_len: usize,
    row: F,
) -> RgbImage
where
    F: Fn(usize, &mut [u16], RowOut<'_>) + Sync,
{
    let mut out = RgbImage::for_overwrite(raw.width, raw.height);
    let cell = pattern.cell();
    out.par_rows_mut().for_each_init(
        || vec![0u16; scratch_len],
        |scratch, (y, planes)| {
            row(
                y,
                scratch,
                RowOut {
                    sites: cell[y & 1],
                    other: cell[1 - (y & 1)],
                    curve,
                    planes,
                },
            )
        },
    );
    out
}

/// One output row of a split-parity demosaic kernel and what writing it needs.
pub(crate) struct RowOut<'a> {
    /// Colours of the row's even and odd sites, and of the rows above and below.
    pub sites: [Channel; 2],
    pub other: [Channel; 2],
    /// The tone curve folded in, if any.
    pub curve: Option<&'a CodeMap>,
    /// The row of each output plane.
    pub planes: [&'a mut [u16]; 3],
}

/// One output row of the bilinear demosaic, as a `pulp` kernel.
struct BilinearRow<'a> {
    /// Source rows above, at and below the output row (edge clamped).
    rows: [&'a [u16]; 3],
    scratch: &'a mut [u16],
    out: RowOut<'a>,
}

/// Splits `row` padded by one clamped sample on each side into its even and odd
/// padded columns: `even[k]` = padded column 2k = row[2k − 1], `odd[k]` = row[2k]
/// (indices clamped to the row), for k in 0..=half.
#[inline(always)]
fn split_padded(row: &[u16], even: &mut [u16], odd: &mut [u16]) {
    let w = row.len();
    let half = even.len() - 1;
    for (k, pair) in row.chunks_exact(2).enumerate() {
        odd[k] = pair[0];
        even[k + 1] = pair[1];
    }
    even[0] = row[0];
    if w % 2 == 1 {
        odd[half - 1] = row[w - 1];
        even[half] = row[w - 1];
    }
    odd[half] = row[w - 1];
}

/// The two colours one pass interpolates (its own colour is the centre row itself).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn site_pass(
    green_site: bool,
    l: &[u16],
    r: &[u16],
    u: &[u16],
    d: &[u16],
    diag: [&[u16]; 4],
    a: &mut [u16],
    b: &mut [u16],
) {
    let n = a.len();
    let (l, r, u, d) = (&l[..n], &r[..n], &u[..n], &d[..n]);
    let [ul, ur, dl, dr] = diag.map(|s| &s[..n]);
    let b = &mut b[..n];
    if green_site {
        // a: the colour sharing the row (left, right); b: sharing the column.
        for k in 0..n {
            a[k] = ((l[k] as u32 + r[k] as u32) / 2) as u16;
            b[k] = ((u[k] as u32 + d[k] as u32) / 2) as u16;
        }
    } else {
        // a: green from the 4 neighbours; b: the other of R and B from the diagonals.
        for k in 0..n {
            a[k] = ((l[k] as u32 + r[k] as u32 + u[k] as u32 + d[k] as u32) / 4) as u16;
            b[k] = ((ul[k] as u32 + ur[k] as u32 + dl[k] as u32 + dr[k] as u32) / 4) as u16;
        }
    }
}

impl pulp::WithSimd for BilinearRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { rows, scratch, out } = self;
        let sites = out.sites;
        let w = rows[1].len();
        let (ne, no) = (w.div_ceil(2), w / 2);
        let (src, res) = scratch.split_at_mut(6 * (ne + 1));
        let (res_e, res_o) = res.split_at_mut(2 * ne);
        let mut split = src.chunks_exact_mut(ne + 1);
        let mut take = || split.next().expect("six rows");
        let (ue, uo, me, mo, de, dox) = (take(), take(), take(), take(), take(), take());
        split_padded(rows[0], ue, uo);
        split_padded(rows[1], me, mo);
        split_padded(rows[2], de, dox);
        // Per pass (even, odd output columns): the two colours it interpolates.
        let (ae, be) = res_e.split_at_mut(ne);
        let (ao, bo) = res_o.split_at_mut(ne);
        // Even output columns 2k: centre odd[k], left even[k], right even[k + 1].
        site_pass(
            sites[0] == Channel::G,
            &me[..ne],
            &me[1..],
            &uo[..ne],
            &dox[..ne],
            [&ue[..ne], &ue[1..], &de[..ne], &de[1..]],
            &mut ae[..ne],
            be,
        );
        // Odd output columns 2k + 1: centre even[k + 1], left odd[k], right odd[k + 1].
        site_pass(
            sites[1] == Channel::G,
            &mo[..no],
            &mo[1..],
            &ue[1..],
            &de[1..],
            [&uo[..no], &uo[1..], &dox[..no], &dox[1..]],
            &mut ao[..no],
            bo,
        );
        let results = [[&mo[..ne], &*ae, &*be], [&me[1..], &*ao, &*bo]];
        out.write(results);
    }
}

impl RowOut<'_> {
    /// Writes the row from its two passes' results: for the even (`results[0]`) and odd
    /// (`results[1]`) columns, the site's own colour, then `a` and `b` as the kernels'
    /// `site_pass` defines them (at a green site the colour sharing its row, then the one
    /// sharing its column; at a red or blue site green, then the other of red and blue),
    /// every code through the curve if one is folded in.
    #[inline(always)]
    pub(crate) fn write(self, results: [[&[u16]; 3]; 2]) {
        let Self {
            sites,
            other,
            curve,
            planes,
        } = self;
        let chans = |q: usize| -> [usize; 3] {
            match sites[q] {
                Channel::G => [1, sites[1 - q] as usize, other[q] as usize],
                s => [s as usize, 1, 2 - s as usize],
            }
        };
        let [ce, co] = [chans(0), chans(1)];
        for (ch, plane) in planes.into_iter().enumerate() {
            let je = ce.iter().position(|&c| c == ch).expect("every channel");
            let jo = co.iter().position(|&c| c == ch).expect("every channel");
            interleave(plane, results[0][je], results[1][jo], curve);
        }
    }
}

/// Interleaves one plane's even and odd output columns into `plane`, through `curve`.
#[inline(always)]
fn interleave(plane: &mut [u16], even: &[u16], odd: &[u16], curve: Option<&CodeMap>) {
    let w = plane.len();
    let pairs = plane.chunks_exact_mut(2).zip(even).zip(odd);
    match curve {
        Some(m) => pairs.for_each(|((p, &e), &o)| {
            p[0] = m.get(e);
            p[1] = m.get(o);
        }),
        None => pairs.for_each(|((p, &e), &o)| {
            p[0] = e;
            p[1] = o;
        }),
    }
    if w % 2 == 1 {
        let e = even[w / 2];
        plane[w - 1] = curve.map_or(e, |m| m.get(e));
    }
}

/// The previous row-by-row formulation, kept as the oracle of [`demosaic_bilinear`].
#[cfg(test)]
fn demosaic_bilinear_strided(raw: &RawPlane, pattern: BayerPattern) -> RgbImage {
    let (w, h) = (raw.width, raw.height);
    let mut out = RgbImage::new(w, h);
    let cell = pattern.cell();
    let padded_row = |y: usize, out: &mut [u32]| {
        let row = &raw.data[y * w..(y + 1) * w];
        out[0] = row[0] as u32;
        for (o, &v) in out[1..=w].iter_mut().zip(row) {
            *o = v as u32;
        }
        out[w + 1] = row[w - 1] as u32;
    };
    out.par_rows_mut().for_each_init(
        || vec![0u32; 3 * (w + 2)],
        |scratch, (y, [r, g, b])| {
            let (up, rest) = scratch.split_at_mut(w + 2);
            let (mid, dn) = rest.split_at_mut(w + 2);
            padded_row(y.saturating_sub(1), up);
            padded_row(y, mid);
            padded_row((y + 1).min(h - 1), dn);
            let mut planes = [r, g, b];
            for q in 0..2 {
                let site = cell[y & 1][q];
                match site {
                    Channel::G => {
                        let hc = cell[y & 1][1 - q] as usize;
                        let vc = cell[1 - (y & 1)][q] as usize;
                        let [p0, p1, p2] = &mut planes;
                        let (gp, hp, vp) = pick3(p0, p1, p2, 1, hc, vc);
                        for x in (q..w).step_by(2) {
                            let c = x + 1;
                            gp[x] = mid[c] as u16;
                            hp[x] = ((mid[c - 1] + mid[c + 1]) / 2) as u16;
                            vp[x] = ((up[c] + dn[c]) / 2) as u16;
                        }
                    }
                    _ => {
                        let sc = site as usize;
                        let oc = 2 - sc;
                        let [p0, p1, p2] = &mut planes;
                        let (sp, gp, op) = pick3(p0, p1, p2, sc, 1, oc);
                        for x in (q..w).step_by(2) {
                            let c = x + 1;
                            sp[x] = mid[c] as u16;
                            gp[x] = ((mid[c - 1] + mid[c + 1] + up[c] + dn[c]) / 4) as u16;
                            op[x] = ((up[c - 1] + up[c + 1] + dn[c - 1] + dn[c + 1]) / 4) as u16;
                        }
                    }
                }
            }
        },
    );
    out
}

/// Mutable references to three distinct planes chosen by index.
#[cfg(test)]
fn pick3<'a>(
    p0: &'a mut [u16],
    p1: &'a mut [u16],
    p2: &'a mut [u16],
    a: usize,
    b: usize,
    c: usize,
) -> (&'a mut [u16], &'a mut [u16], &'a mut [u16]) {
    debug_assert!(a != b && b != c && a != c);
    let mut slots = [Some(p0), Some(p1), Some(p2)];
    (
        slots[a].take().expect("distinct"),
        slots[b].take().expect("distinct"),
        slots[c].take().expect("distinct"),
    )
}

/// Checks a split-parity demosaic kernel, `fast(raw, pattern, max, curve)`, against its
/// per-pixel oracle `slow(raw, pattern, max)` on every pattern, each size and each code
/// ceiling in `maxes`, on noise from seed `seed`: without a curve it must equal the
/// oracle, and with one folded in, the oracle's output mapped through that curve.
#[cfg(test)]
pub(crate) fn check_against_oracle(
    seed: u32,
    sizes: &[(usize, usize)],
    maxes: &[u16],
    fast: impl Fn(&RawPlane, BayerPattern, u16, Option<&CodeMap>) -> RgbImage,
    slow: impl Fn(&RawPlane, BayerPattern, u16) -> RgbImage,
) {
    let curve = CodeMap::new(
        &(0..=65535u32)
            .map(|v| (v * 7 / 11) as u16)
            .collect::<Vec<_>>(),
    );
    let mut s = seed;
    for &(w, h) in sizes {
        for &max in maxes {
            let data = (0..w * h)
                .map(|_| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((s >> 16) as u16).min(max)
                })
                .collect();
            let raw = RawPlane::new(w, h, data).unwrap();
            for p in BayerPattern::ALL {
                let want = slow(&raw, p, max);
                assert_eq!(fast(&raw, p, max, None), want, "{w}x{h} {p} {max}");
                let mut mapped = want.clone();
                curve.apply(&mut mapped);
                assert_eq!(
                    fast(&raw, p, max, Some(&curve)),
                    mapped,
                    "{w}x{h} {p} {max} curve"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split-parity kernel equals the strided formulation on every pattern, on even
    /// and odd sizes down to 1×1, with 16-bit noise (sums that overflow `u16`); with a
    /// curve folded in, it equals the curve applied afterwards.
    #[test]
    fn split_rows_equal_the_strided_oracle() {
        let sizes = [
            (1, 1),
            (2, 1),
            (1, 3),
            (3, 2),
            (5, 5),
            (8, 6),
            (33, 7),
            (64, 9),
        ];
        check_against_oracle(
            7,
            &sizes,
            &[65535],
            |raw, p, _, curve| demosaic_bilinear_curve(raw, p, curve),
            |raw, p, _| demosaic_bilinear_strided(raw, p),
        );
    }

    #[test]
    fn flat_field_stays_flat_for_every_pattern() {
        for p in BayerPattern::ALL {
            // A grey scene seen through the CFA with R=100, G=200, B=300.
            let (w, h) = (10, 8);
            let data = (0..h)
                .flat_map(|y| {
                    (0..w).map(move |x| match p.channel_at(y, x) {
                        Channel::R => 100,
                        Channel::G => 200,
                        Channel::B => 300,
                    })
                })
                .collect();
            let raw = RawPlane::new(w, h, data).unwrap();
            let rgb = demosaic_bilinear(&raw, p);
            for (c, want) in [100u16, 200, 300].iter().enumerate() {
                // Edge clamping mixes colours on the border; the interior is exact.
                for y in 1..h - 1 {
                    for x in 1..w - 1 {
                        assert_eq!(rgb.planes[c][y * w + x], *want, "{p} c{c} ({y},{x})");
                    }
                }
            }
        }
    }
}
