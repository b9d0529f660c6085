//! Ratio-corrected, direction-weighted demosaic (the RCD family; after the ideas of
//! Luis Sanz Rodríguez's "Ratio Corrected Demosaicing"), written from its published
//! description:
//!
//! 1. **Direction.** At every pixel, vertical and horizontal activity
//!    (`Σ (|∂| + |∂²|)²` along each axis over 3 samples) give `vh = V/(V+H)`: near 1 on
//!    a vertical-varying (horizontal) edge, so interpolate horizontally there.
//! 2. **Green at R/B sites.** Four one-sided estimates (N, S, W, E): the neighbouring
//!    green scaled by the ratio of a low-pass "luminance" at the centre and at the
//!    same-colour sample beyond it. Each axis blends its two sides by inverse gradients;
//!    the axes are blended by `vh` (or by the mean of the diagonal neighbours' `vh` when
//!    that is more decided).
//! 3. **R at B and B at R.** Colour differences (C − G) at the four diagonal neighbours,
//!    blended the same way along the two diagonals, with a diagonal direction map.
//! 4. **R and B at green sites.** Colour differences at the four axial neighbours (all
//!    now known), blended with the step-1 direction.
//!
//! Works in `f32` with reflect-101 padding (CFA parity is kept), row by row over
//! planes of a few rows each (see `rows_in`).

use crate::stages::blc::NormCode;
use crate::stages::gamma::CodeMap;
use crate::stages::pad::reflect;
use crate::stages::sat_u16;
use crate::{Deferred, FrameContext, RawPlane, RgbImage, FULL_SCALE};
use rawlink_frame::{BayerPattern, Channel};
use rayon::prelude::*;

const B: usize = 6;
const EPS: f32 = 1e-5;
/// The working range's top code, as the white balance's clamp.
const FULL: f32 = FULL_SCALE as f32;

/// Rows each strip outputs at most, and the extra rows of context computed above and
/// below it. An output pixel depends on source rows at most 12 away through the passes,
/// adding up each step's farthest read: green reads the mosaic 4 rows away (its decided
/// direction reaches 4 too), R and B at the R/B sites read that green 2 rows away (6),
/// R and B at the green sites read those 3 rows away (9), and the refined green reads
/// these 3 rows away (12). The farthest taps do not all line up on one path, so the
/// real reach is shorter: the strip test below, on noise with edges, passes with 10 halo
/// rows and fails with 8. 14 rows (even, to keep the CFA phase) cover the bound, so
/// strip results equal full-frame results exactly. The halo is recomputed by both
/// strips it borders, so taller strips do less extra work; a tile's planes are rings of
/// a few rows (see [`Lag`]), so their size does not grow with the strip. 512 rows: 4K,
/// 1080p and 640×480 get 6, 4 and 2 strips on 2 threads (see `NOTES.md`).
const STRIP_ROWS: usize = 512;
const HALO_ROWS: usize = 14;

/// Output columns of each tile at most. Strips wider than this are cut into column
/// tiles, with [`HALO_COLS`] columns of context on each inner side, so a tile's ring
/// planes stay a few MB at any width. Up to 4K no frame is cut: each step's per-row
/// setup (its taps' slices) costs the same at any width, so long rows are cheaper per
/// pixel, and the ring planes of a 4K row (~3 MB) fit the caches well enough (see
/// `NOTES.md`: 768-column tiles were 15 % slower).
const TILE_COLS: usize = 4096;
/// Context columns on each inner side of a tile: the horizontal dependency depth equals
/// the vertical one (the steps are symmetric in x and y), and even keeps the CFA phase.
const HALO_COLS: usize = HALO_ROWS;

/// RCD-style demosaic of `raw` (codes up to `max`), processed in horizontal strips in
/// parallel (cut into column tiles when wider than `TILE_COLS`) and written straight
/// into the output: a tile's working planes stay small and memory does not grow with
/// the frame beyond the output.
pub fn demosaic_rcd(raw: &RawPlane, pattern: BayerPattern, max: u16) -> RgbImage {
    demosaic_rcd_mapped(raw, pattern, max, None)
}

/// [`demosaic_rcd`] with every output code then mapped through `curve`, row by row as
/// the rows are written (the same result as mapping the finished image, without a
/// second pass over it).
pub fn demosaic_rcd_mapped(
    raw: &RawPlane,
    pattern: BayerPattern,
    max: u16,
    curve: Option<&CodeMap>,
) -> RgbImage {
    demosaic_rcd_prepared(raw, pattern, max, curve, None)
}

/// [`demosaic_rcd_mapped`] of the mosaic `pre` makes of `raw` (its samples mapped as
/// the input loop reads them).
fn demosaic_rcd_prepared(
    raw: &RawPlane,
    pattern: BayerPattern,
    max: u16,
    curve: Option<&CodeMap>,
    pre: Option<&Deferred>,
) -> RgbImage {
    // As many strips as `STRIP_ROWS` needs, rounded up to a multiple of the threads so
    // they share the strips evenly, of an even height each.
    let threads = rayon::current_num_threads().max(1);
    let strips = raw.height.div_ceil(STRIP_ROWS).next_multiple_of(threads);
    let strip_rows = (raw.height.div_ceil(strips) + 1) & !1;
    demosaic_rcd_tiled(raw, pattern, max, strip_rows.max(2), TILE_COLS, curve, pre)
}

/// [`demosaic_rcd`] with the strip height and tile width as parameters (tests use small
/// ones to cover many tile edges).
fn demosaic_rcd_tiled(
    raw: &RawPlane,
    pattern: BayerPattern,
    max: u16,
    strip_rows: usize,
    tile_cols: usize,
    curve: Option<&CodeMap>,
    pre: Option<&Deferred>,
) -> RgbImage {
    let (w, h) = (raw.width, raw.height);
    let halo_rows = HALO_ROWS;
    if w < 8 || h <= strip_rows + 2 * halo_rows {
        return rcd_full_prepared(raw, pattern, max, curve, pre);
    }
    // Tiles of equal even width (the last takes the rest), so each keeps the CFA phase.
    let n_tiles = w.div_ceil(tile_cols);
    let tile_w = (w.div_ceil(n_tiles) + 1) & !1;
    let mut out = RgbImage::for_overwrite(w, h);
    let [r, g, b] = &mut out.planes;
    r.par_chunks_mut(strip_rows * w)
        .zip(g.par_chunks_mut(strip_rows * w))
        .zip(b.par_chunks_mut(strip_rows * w))
        .enumerate()
        .for_each(|(k, ((r, g), b))| {
            let y0 = k * strip_rows;
            let y1 = y0 + r.len() / w;
            // Both bounds even, so the sub-image keeps the CFA phase.
            let s0 = y0.saturating_sub(halo_rows);
            let s1 = (y1 + halo_rows).min(h);
            for x0 in (0..w).step_by(tile_w) {
                let x1 = (x0 + tile_w).min(w);
                let c0 = x0.saturating_sub(HALO_COLS);
                let c1 = (x1 + HALO_COLS).min(w);
                let tile = Tile {
                    data: &raw.data[s0 * w + c0..s1 * w],
                    stride: w,
                    w: c1 - c0,
                    h: s1 - s0,
                };
                let cols = (x0 - c0, x1 - x0);
                Rows {
                    tile,
                    pattern,
                    max,
                    skip: y0 - s0,
                    cols,
                    out: [&mut r[x0..], &mut g[x0..], &mut b[x0..]],
                    curve,
                    pre,
                }
                .run();
            }
        });
    out
}

/// A `w`×`h` window of a mosaic whose rows are `stride` samples apart.
#[derive(Clone, Copy)]
struct Tile<'a> {
    data: &'a [u16],
    stride: usize,
    w: usize,
    h: usize,
}

/// A padded `f32` plane split by column parity, so that every CFA site of one colour in
/// a row is contiguous: `half[q]` holds padded columns `px` with `px % 2 == q`, at
/// `slot * hw + px / 2`. A tap at a fixed offset from a run of same-parity pixels is then
/// a plain slice, and each step below is a loop over slices that the compiler vectorises
/// (no strided access, no per-pixel test of the site's colour). `B` is even, so padded
/// and image columns have the same parity.
///
/// Only the last `mask + 1` rows (a power of two) are kept, as a ring: row `y` lives in
/// slot `(y + B) & mask`. The steps run row by row, each a fixed number of rows behind
/// the one it reads (see [`Lag`]), so a plane needs only the rows between its newest
/// write and its consumers' oldest read, and every plane of a tile stays in the core's
/// cache. Planes whose border rows are mirror images of their interior (`mirror`) do not
/// store those rows: a read of row `y` outside `0..h` reads row `reflect(y)`.
struct Split {
    h: usize,
    hw: usize,
    mask: usize,
    mirror: bool,
    /// Each padding column with the image column it mirrors, both as padded columns
    /// (the same for every row, so worked out once).
    border: [(usize, usize); 2 * B],
    /// The same per half: `pads[q]` pairs each padding sample's index in a row of
    /// `half[q]` with the index of the sample it mirrors (parity is kept, so both are
    /// in the same half).
    pads: [[(u32, u32); B]; 2],
    half: [Vec<f32>; 2],
}

thread_local! {
    /// Plane buffers of finished tiles, reused by the next tile on this thread: no
    /// allocation, page faults or fill per plane.
    static POOL: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers kept per thread at most (the planes of one tile).
const POOL_MAX: usize = 32;

/// A buffer of `n` samples from this thread's pool (or new), contents unspecified.
fn pooled(n: usize) -> Vec<f32> {
    let mut v = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    if cfg!(debug_assertions) {
        v.clear();
        v.resize(n, f32::NAN);
    } else if v.len() >= n {
        v.truncate(n);
    } else {
        v.resize(n, 0.0);
    }
    v
}

impl Drop for Split {
    fn drop(&mut self) {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            for half in &mut self.half {
                if p.len() < POOL_MAX {
                    p.push(std::mem::take(half));
                }
            }
        });
    }
}

impl Split {
    /// A plane of `w`×`h` pixels keeping at least `rows` rows (`mirror`: see the type).
    /// Its samples are unspecified: every step writes each sample it (or a later step)
    /// reads before reading it, so buffers are reused from this thread's pool as they
    /// are. Debug builds fill them with NaN, so a read of a sample no step wrote would
    /// poison the output and fail the bit-exact tests.
    fn new(w: usize, h: usize, rows: usize, mirror: bool) -> Self {
        let hw = (w + 2 * B).div_ceil(2);
        let rows = rows.next_power_of_two();
        let mut border = [(0, 0); 2 * B];
        for (b, px) in border.iter_mut().zip((0..B).chain(w + B..w + 2 * B)) {
            *b = (px, reflect(px as isize - B as isize, w) + B);
        }
        let mut pads = [[(0, 0); B]; 2];
        let mut used = [0; 2];
        for (px, sx) in border {
            let q = px & 1;
            pads[q][used[q]] = ((px / 2) as u32, (sx / 2) as u32);
            used[q] += 1;
        }
        Self {
            h,
            hw,
            mask: rows - 1,
            mirror,
            border,
            pads,
            half: [pooled(hw * rows), pooled(hw * rows)],
        }
    }

    /// The offset of image row `y`'s slot in each half.
    #[inline(always)]
    fn row_at(&self, y: isize) -> usize {
        let h = self.h as isize;
        let y = if !self.mirror || (0..h).contains(&y) {
            y
        } else if y < 0 {
            -y
        } else {
            2 * h - 2 - y
        };
        // Two's complement: `& mask` is the remainder for negative rows as well.
        ((y + B as isize) as usize & self.mask) * self.hw
    }

    /// The `n` samples at offset (`dy`, `dx`) from image pixels `(y, xs), (y, xs + 2), …`.
    #[inline(always)]
    fn tap(&self, y: isize, xs: isize, dy: isize, dx: isize, n: usize) -> &[f32] {
        let px = (xs + dx + B as isize) as usize;
        &self.half[px & 1][self.row_at(y + dy) + px / 2..][..n]
    }

    /// Image row `y` (which may be a padding row) as `[even columns, odd columns]`.
    fn row_mut(&mut self, y: isize) -> [&mut [f32]; 2] {
        let (o, hw) = (self.row_at(y), self.hw);
        let [e, od] = &mut self.half;
        [&mut e[o..o + hw], &mut od[o..o + hw]]
    }

    /// Fills row `y`'s left and right padding by reflect-101 (parity is kept).
    fn fill_cols(&mut self, y: isize) {
        let (o, hw) = (self.row_at(y), self.hw);
        for (half, pads) in self.half.iter_mut().zip(&self.pads) {
            let row = &mut half[o..o + hw];
            for &(d, s) in pads {
                row[d as usize] = row[s as usize];
            }
        }
    }
}

/// The pixels of parity `p` in image columns `xa..xb`: the first column and the count.
fn span(xa: isize, xb: isize, p: usize) -> (isize, usize) {
    let xs = xa + (p as isize - xa).rem_euclid(2);
    (xs, ((xb - xs).max(0) as usize).div_ceil(2))
}

/// The output run of a row: samples `(xs + B) / 2 ..` of the half of `xs`'s parity.
#[inline(always)]
fn run<'a>(row: &'a mut [&mut [f32]; 2], xs: isize, n: usize) -> &'a mut [f32] {
    let px = (xs + B as isize) as usize;
    &mut row[px & 1][px / 2..][..n]
}

/// Where a row kernel works: image row `y`, pixels `xs, xs + 2, …`, `n` of them.
#[derive(Clone, Copy)]
struct At {
    y: isize,
    xs: isize,
    n: usize,
}

impl At {
    /// The plane `m` at offset (`dy`, `dx`) from every pixel of the run.
    #[inline(always)]
    fn tap<'a>(&self, m: &'a Split, dy: isize, dx: isize) -> &'a [f32] {
        m.tap(self.y, self.xs, dy, dx, self.n)
    }

    /// `[m(-u), m(u), m(-2u), m(-3u), m(-4u)]` for the direction `u = (uy, ux)`.
    #[inline(always)]
    fn line<'a>(&self, m: &'a Split, uy: isize, ux: isize) -> [&'a [f32]; 5] {
        [
            self.tap(m, -uy, -ux),
            self.tap(m, uy, ux),
            self.tap(m, -2 * uy, -2 * ux),
            self.tap(m, -3 * uy, -3 * ux),
            self.tap(m, -4 * uy, -4 * ux),
        ]
    }

    /// `[m(-u), m(u), m(-3u)]`: the taps of a colour's line that the colour-difference
    /// steps read (only the taps a step reads are built: each costs its slice's setup
    /// once per row).
    #[inline(always)]
    fn colour_line<'a>(&self, m: &'a Split, uy: isize, ux: isize) -> [&'a [f32]; 3] {
        [
            self.tap(m, -uy, -ux),
            self.tap(m, uy, ux),
            self.tap(m, -3 * uy, -3 * ux),
        ]
    }

    /// `[g(-u), g(-2u)]`: the green taps the colour-difference steps read.
    #[inline(always)]
    fn green_line<'a>(&self, g: &'a Split, uy: isize, ux: isize) -> [&'a [f32]; 2] {
        [self.tap(g, -uy, -ux), self.tap(g, -2 * uy, -2 * ux)]
    }

    /// The centre and the four diagonal neighbours of a direction map (what [`disc`]
    /// reads).
    #[inline(always)]
    fn diag5<'a>(&self, m: &'a Split) -> [&'a [f32]; 5] {
        [
            self.tap(m, 0, 0),
            self.tap(m, -1, -1),
            self.tap(m, -1, 1),
            self.tap(m, 1, -1),
            self.tap(m, 1, 1),
        ]
    }

    /// The 3×3 neighbourhood of `m`, row by row.
    #[inline(always)]
    fn box3<'a>(&self, m: &'a Split) -> [&'a [f32]; 9] {
        [
            self.tap(m, -1, -1),
            self.tap(m, -1, 0),
            self.tap(m, -1, 1),
            self.tap(m, 0, -1),
            self.tap(m, 0, 0),
            self.tap(m, 0, 1),
            self.tap(m, 1, -1),
            self.tap(m, 1, 0),
            self.tap(m, 1, 1),
        ]
    }
}

/// A direction map's value, or the mean of its four diagonal neighbours when that is
/// further from 0.5 (more decided). `b` is [`At::diag5`] of the map.
#[inline(always)]
fn disc(b: &[&[f32]; 5], i: usize) -> f32 {
    let central = b[0][i];
    let neigh = 0.25 * (b[1][i] + b[2][i] + b[3][i] + b[4][i]);
    if (0.5 - central).abs() < (0.5 - neigh).abs() {
        neigh
    } else {
        central
    }
}

/// Inverse-gradient blend of one axis of colour differences of `p` against green `g`,
/// at pixel `i`: `fwd`/`back` are `At::colour_line(p, ±u)`, `gf`/`gb`
/// `At::green_line(g, ±u)`, and `g0` the green at the pixel.
#[inline(always)]
fn axis(
    fwd: &[&[f32]; 3],
    back: &[&[f32]; 3],
    gf: &[&[f32]; 2],
    gb: &[&[f32]; 2],
    g0: f32,
    i: usize,
) -> f32 {
    // `|p(−u) − p(u)|` starts both gradients (`|a − b| = |b − a|` exactly).
    let across = (fwd[0][i] - fwd[1][i]).abs();
    let ga = EPS + across + (g0 - gf[1][i]).abs() + (fwd[0][i] - fwd[2][i]).abs();
    let gbk = EPS + across + (g0 - gb[1][i]).abs() + (back[0][i] - back[2][i]).abs();
    let ea = fwd[0][i] - gf[0][i];
    let eb = back[0][i] - gb[0][i];
    (gbk * ea + ga * eb) / (ga + gbk)
}

/// The lines of `p` and of `g` along `u` and `-u`, for one axis.
type AxisTaps<'a> = ([[&'a [f32]; 3]; 2], [[&'a [f32]; 2]; 2]);

/// The taps of both axes' colour differences of `p` against green `g`.
struct Axes<'a> {
    h: AxisTaps<'a>,
    v: AxisTaps<'a>,
}

impl<'a> Axes<'a> {
    #[inline(always)]
    fn new(at: &At, p: &'a Split, g: &'a Split) -> Self {
        Self {
            h: Self::along(at, p, g, 0, 1),
            v: Self::along(at, p, g, 1, 0),
        }
    }

    /// The lines of `p` and `g` along `u = (uy, ux)` and `-u`. A function, not a closure:
    /// closures were compiled out of line, and the loops then lost the slices' lengths.
    #[inline(always)]
    fn along(at: &At, p: &'a Split, g: &'a Split, uy: isize, ux: isize) -> AxisTaps<'a> {
        (
            [at.colour_line(p, uy, ux), at.colour_line(p, -uy, -ux)],
            [at.green_line(g, uy, ux), at.green_line(g, -uy, -ux)],
        )
    }

    /// The horizontal and vertical colour differences at pixel `i` (`g0`: its green).
    #[inline(always)]
    fn at(&self, g0: f32, i: usize) -> (f32, f32) {
        let ([a, b], [c, d]) = &self.h;
        let ([e, f], [g, h]) = &self.v;
        (axis(a, b, c, d, g0, i), axis(e, f, g, h, g0, i))
    }
}

/// One row job of the algorithm: which step, its planes, and its output run.
enum Job<'a> {
    /// The input row `src`, scaled to `0..=1` and split into its even and odd columns.
    Input {
        src: &'a [u16],
        scale: f32,
        even: &'a mut [f32],
        odd: &'a mut [f32],
        /// The deferred normalisation and gains of the row's even and odd sites.
        pre: Option<[(NormCode, f32); 2]>,
    },
    /// Step 1a: squared vertical and horizontal activity.
    Activity {
        c: &'a Split,
        dv2: &'a mut [f32],
        dh2: &'a mut [f32],
    },
    /// Step 1b: `vh = V / (V + H)` from the 3×3 sums of the squared activities.
    Direction {
        dv2: &'a Split,
        dh2: &'a Split,
        out: &'a mut [f32],
    },
    /// Step 1c: the direction each later step blends its axes by: `vh`, or the mean of
    /// its four diagonal neighbours when that is more decided ([`disc`]). Every step
    /// that reads the direction reads it at its own pixel, so it is worked out once per
    /// pixel here rather than in each of them (up to four times per green site).
    Decided { vh: &'a Split, out: &'a mut [f32] },
    /// Step 2: green at R/B sites, four one-sided estimates blended by inverse
    /// gradients, the axes by the decided direction (step 1c).
    Green {
        c: &'a Split,
        d: &'a Split,
        out: &'a mut [f32],
    },
    /// Step 3a, first half: the squared activity along each diagonal at R/B sites. Each
    /// site's is read by three sites of step 3a (its own and two diagonal neighbours'),
    /// so it is computed once here.
    DiagActivity {
        c: &'a Split,
        p: &'a mut [f32],
        q: &'a mut [f32],
    },
    /// Step 3a: diagonal direction `P / (P + Q)` from the squared diagonal activities of
    /// the site and its two neighbours along each diagonal.
    Diagonal {
        pa: &'a Split,
        qa: &'a Split,
        out: &'a mut [f32],
    },
    /// Step 3b: the missing one of R/B at B/R sites, from colour differences along the
    /// diagonals.
    Cross {
        c: &'a Split,
        gp: &'a Split,
        pq: &'a Split,
        out: &'a mut [f32],
    },
    /// Step 4: R or B (`p`) at green sites, `G + Δx·d + Δy·(1 − d)`.
    AtGreen {
        p: &'a Split,
        g: &'a Split,
        d: &'a Split,
        out: &'a mut [f32],
    },
    /// Step 5: green at R/B sites again, `C − (Δx·d + Δy·(1 − d))`, from the site's own
    /// colour (now complete): `site` holds it at the R/B sites (step 3's plane), `own`
    /// at the green sites (step 4's).
    Refine {
        site: &'a Split,
        own: &'a Split,
        g: &'a Split,
        d: &'a Split,
        out: &'a mut [f32],
    },
    /// Output: both parities of one plane's row from column `xs` (even), scaled to codes
    /// and interleaved; the even columns from `src[0]`, the odd ones from `src[1]` (R and
    /// B take their green sites' samples from the last fill, their R/B sites' from the
    /// plane it read, so those are not copied).
    Codes {
        src: [&'a Split; 2],
        top: f32,
        out: &'a mut [u16],
    },
}

/// A job at a place, as a `pulp` kernel: [`Row::run`] compiles every step for each
/// instruction set and picks the best at run time.
struct Row<'a> {
    at: At,
    job: Job<'a>,
}

impl Row<'_> {
    /// Runs the job, compiled for the instruction set `simd` (the tile's loop runs in
    /// one dispatch, see [`Rows`], so a job is inlined into it rather than dispatched
    /// on its own).
    #[inline(always)]
    fn run<S: pulp::Simd>(self, simd: S) {
        pulp::WithSimd::with_simd(self, simd)
    }
}

impl pulp::WithSimd for Row<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let at = self.at;
        let n = at.n;
        match self.job {
            Job::Input {
                src,
                scale,
                even,
                odd,
                pre: Some([(n0, k0), (n1, k1)]),
            } => {
                let pairs = src.chunks_exact(2);
                if let [last] = pairs.remainder() {
                    even[src.len() / 2] = prepared(n0, k0, *last) * scale;
                }
                for ((pair, e), o) in pairs.zip(even.iter_mut()).zip(odd.iter_mut()) {
                    *e = prepared(n0, k0, pair[0]) * scale;
                    *o = prepared(n1, k1, pair[1]) * scale;
                }
            }
            Job::Input {
                src,
                scale,
                even,
                odd,
                pre: None,
            } => {
                let pairs = src.chunks_exact(2);
                if let [last] = pairs.remainder() {
                    even[src.len() / 2] = *last as f32 * scale;
                }
                for ((pair, e), o) in pairs.zip(even.iter_mut()).zip(odd.iter_mut()) {
                    *e = pair[0] as f32 * scale;
                    *o = pair[1] as f32 * scale;
                }
            }
            Job::Activity { c, dv2, dh2 } => {
                let c0 = at.tap(c, 0, 0);
                let (n1, s1, n2, s2) = (
                    at.tap(c, -1, 0),
                    at.tap(c, 1, 0),
                    at.tap(c, -2, 0),
                    at.tap(c, 2, 0),
                );
                let (w1, e1, w2, e2) = (
                    at.tap(c, 0, -1),
                    at.tap(c, 0, 1),
                    at.tap(c, 0, -2),
                    at.tap(c, 0, 2),
                );
                let (dv2, dh2) = (&mut dv2[..n], &mut dh2[..n]);
                for i in 0..n {
                    let dv = (n1[i] - s1[i]).abs() + (2.0 * c0[i] - n2[i] - s2[i]).abs();
                    let dh = (w1[i] - e1[i]).abs() + (2.0 * c0[i] - w2[i] - e2[i]).abs();
                    dv2[i] = dv * dv;
                    dh2[i] = dh * dh;
                }
            }
            Job::Direction { dv2, dh2, out } => {
                let (a, b) = (at.box3(dv2), at.box3(dh2));
                let out = &mut out[..n];
                for i in 0..n {
                    let v = EPS + sum9(&a, i);
                    let hh = EPS + sum9(&b, i);
                    out[i] = v / (v + hh);
                }
            }
            Job::Decided { vh, out } => {
                let d = at.diag5(vh);
                let out = &mut out[..n];
                for i in 0..n {
                    out[i] = disc(&d, i);
                }
            }
            Job::Green { c, d, out } => {
                let c0 = at.tap(c, 0, 0);
                let (sn, ss) = (at.line(c, 1, 0), at.line(c, -1, 0));
                let (sw, se) = (at.line(c, 0, 1), at.line(c, 0, -1));
                let d = &at.tap(d, 0, 0)[..n];
                let out = &mut out[..n];
                for i in 0..n {
                    // Each axis's two gradients start with the same term.
                    let (v0, h0) = ((sn[0][i] - sn[1][i]).abs(), (sw[0][i] - sw[1][i]).abs());
                    let (ng, sg) = (green_grad(&sn, v0, c0[i], i), green_grad(&ss, v0, c0[i], i));
                    let (wg, eg) = (green_grad(&sw, h0, c0[i], i), green_grad(&se, h0, c0[i], i));
                    let v =
                        (sg * green_est(&sn, c0[i], i) + ng * green_est(&ss, c0[i], i)) / (ng + sg);
                    let hz =
                        (eg * green_est(&sw, c0[i], i) + wg * green_est(&se, c0[i], i)) / (wg + eg);
                    let d = d[i];
                    out[i] = (hz * d + v * (1.0 - d)).clamp(0.0, 1.0);
                }
            }
            Job::DiagActivity { c, p, q } => {
                let (tp, tq) = (diag_taps(&at, c, 1), diag_taps(&at, c, -1));
                let (p, q) = (&mut p[..n], &mut q[..n]);
                for i in 0..n {
                    p[i] = diag_sq(&tp, i);
                    q[i] = diag_sq(&tq, i);
                }
            }
            Job::Diagonal { pa, qa, out } => {
                // Along (1, 1) and (1, −1): the neighbour before, the site, the one after.
                let p = [at.tap(pa, -1, -1), at.tap(pa, 0, 0), at.tap(pa, 1, 1)];
                let q = [at.tap(qa, -1, 1), at.tap(qa, 0, 0), at.tap(qa, 1, -1)];
                let out = &mut out[..n];
                for i in 0..n {
                    let pp = p[0][i] + p[1][i] + p[2][i] + EPS;
                    let qq = q[0][i] + q[1][i] + q[2][i] + EPS;
                    out[i] = pp / (pp + qq);
                }
            }
            Job::Cross { c, gp, pq, out } => {
                let g0 = at.tap(gp, 0, 0);
                let (nw, se, ne, sw) = (
                    at.colour_line(c, 1, 1),
                    at.colour_line(c, -1, -1),
                    at.colour_line(c, 1, -1),
                    at.colour_line(c, -1, 1),
                );
                let (gnw, gse, gne, gsw) = (
                    at.green_line(gp, 1, 1),
                    at.green_line(gp, -1, -1),
                    at.green_line(gp, 1, -1),
                    at.green_line(gp, -1, 1),
                );
                let d = at.diag5(pq);
                let out = &mut out[..n];
                for i in 0..n {
                    // Each diagonal's two gradients start with the same term.
                    let (p0, q0) = ((nw[0][i] - nw[1][i]).abs(), (ne[0][i] - ne[1][i]).abs());
                    let (g_nw, g_se) = (
                        cross_grad(&nw, &gnw, p0, g0[i], i),
                        cross_grad(&se, &gse, p0, g0[i], i),
                    );
                    let (g_ne, g_sw) = (
                        cross_grad(&ne, &gne, q0, g0[i], i),
                        cross_grad(&sw, &gsw, q0, g0[i], i),
                    );
                    let p_est = (g_se * (nw[0][i] - gnw[0][i]) + g_nw * (se[0][i] - gse[0][i]))
                        / (g_nw + g_se);
                    let q_est = (g_sw * (ne[0][i] - gne[0][i]) + g_ne * (sw[0][i] - gsw[0][i]))
                        / (g_ne + g_sw);
                    let d = disc(&d, i);
                    out[i] = (g0[i] + p_est * (1.0 - d) + q_est * d).clamp(0.0, 1.0);
                }
            }
            Job::AtGreen { p, g, d, out } => {
                let g0 = at.tap(g, 0, 0);
                let axes = Axes::new(&at, p, g);
                let d = &at.tap(d, 0, 0)[..n];
                let out = &mut out[..n];
                for i in 0..n {
                    let dsc = d[i];
                    let (dx, dy) = axes.at(g0[i], i);
                    out[i] = (g0[i] + dx * dsc + dy * (1.0 - dsc)).clamp(0.0, 1.0);
                }
            }
            Job::Refine {
                site,
                own,
                g,
                d,
                out,
            } => {
                // The site's own colour: `site` holds the CFA sample there; the axes read
                // `own` at odd offsets only, which are green sites.
                let (g0, c0) = (at.tap(g, 0, 0), at.tap(site, 0, 0));
                let axes = Axes::new(&at, own, g);
                let d = &at.tap(d, 0, 0)[..n];
                let out = &mut out[..n];
                for i in 0..n {
                    let dsc = d[i];
                    let (dx, dy) = axes.at(g0[i], i);
                    out[i] = (c0[i] - (dx * dsc + dy * (1.0 - dsc))).clamp(0.0, 1.0);
                }
            }
            Job::Codes { src, top, out } => {
                let w = out.len();
                let even = src[0].tap(at.y, at.xs, 0, 0, w.div_ceil(2));
                let odd = src[1].tap(at.y, at.xs + 1, 0, 0, w / 2);
                let half = w / 2;
                let (pairs, (e, o)) = (&mut out[..2 * half], (&even[..half], &odd[..half]));
                for ((pair, &e), &o) in pairs.chunks_exact_mut(2).zip(e).zip(o) {
                    pair[0] = sat_u16(round_non_negative(e * top));
                    pair[1] = sat_u16(round_non_negative(o * top));
                }
                if w % 2 == 1 {
                    out[w - 1] = sat_u16(round_non_negative(even[w / 2] * top));
                }
            }
        }
    }
}

/// The sum of a 3×3 neighbourhood at pixel `i`, row by row, left to right.
#[inline(always)]
fn sum9(a: &[&[f32]; 9], i: usize) -> f32 {
    a[0][i] + a[1][i] + a[2][i] + a[3][i] + a[4][i] + a[5][i] + a[6][i] + a[7][i] + a[8][i]
}

/// Step 2's gradient along `u` (`s = At::line(c, u)`, `c0` the centre, `across` =
/// `|s[0] − s[1]|`, the same for `u` and `−u`, so the caller works it out once).
#[inline(always)]
fn green_grad(s: &[&[f32]; 5], across: f32, c0: f32, i: usize) -> f32 {
    EPS + across + (c0 - s[2][i]).abs() + (s[0][i] - s[3][i]).abs() + (s[2][i] - s[4][i]).abs()
}

/// Step 2's one-sided green estimate from the `-u` side.
#[inline(always)]
fn green_est(s: &[&[f32]; 5], c0: f32, i: usize) -> f32 {
    s[0][i] + 0.5 * (c0 - s[2][i])
}

/// Step 3a's taps for the activity along the diagonal `u = (1, sx)`:
/// `c(−u), c(u), c(0), c(−2u), c(2u)`.
#[inline(always)]
fn diag_taps<'a>(at: &At, c: &'a Split, sx: isize) -> [&'a [f32]; 5] {
    [
        at.tap(c, -1, -sx),
        at.tap(c, 1, sx),
        at.tap(c, 0, 0),
        at.tap(c, -2, -2 * sx),
        at.tap(c, 2, 2 * sx),
    ]
}

/// Squared diagonal activity `(|c(o − u) − c(o + u)| + |2c(o) − c(o − 2u) − c(o + 2u)|)²`.
#[inline(always)]
fn diag_sq(a: &[&[f32]; 5], i: usize) -> f32 {
    let d = (a[0][i] - a[1][i]).abs() + (2.0 * a[2][i] - a[3][i] - a[4][i]).abs();
    d * d
}

/// Step 3b's gradient along the diagonal `u` (`s = At::colour_line(c, u)`,
/// `g = At::green_line(gp, u)`, `across` = `|s[0] − s[1]|`, the same for `u` and `−u`).
#[inline(always)]
fn cross_grad(s: &[&[f32]; 3], g: &[&[f32]; 2], across: f32, g0: f32, i: usize) -> f32 {
    EPS + across + (s[0][i] - s[2][i]).abs() + (g0 - g[1][i]).abs()
}

/// `f32::round` for non-negative values, in a form that vectorises: the fraction
/// `x − trunc(x)` is exact, and ties go up (away from zero), as `round` does.
#[inline(always)]
fn round_non_negative(x: f32) -> f32 {
    let t = x.trunc();
    if x - t >= 0.5 {
        t + 1.0
    } else {
        t
    }
}

/// The whole-frame algorithm on the mosaic as it is (the tests' reference for the
/// strip and tile paths).
#[cfg(test)]
fn rcd_full(raw: &RawPlane, pattern: BayerPattern, max: u16) -> RgbImage {
    rcd_full_prepared(raw, pattern, max, None, None)
}

/// [`rcd_full`] of the mosaic `pre` makes of `raw`, with its output codes mapped
/// through `curve` as each row is written. `pre` maps the mosaic as the input loop
/// reads it (frames of at most one strip take this path, e.g. every 640×480 frame on
/// one thread, as the receiver's workers run), or, for the Malvar fallback of frames
/// under 8×8, a mapped copy.
fn rcd_full_prepared(
    raw: &RawPlane,
    pattern: BayerPattern,
    max: u16,
    curve: Option<&CodeMap>,
    pre: Option<&Deferred>,
) -> RgbImage {
    let (w, h) = (raw.width, raw.height);
    if w < 8 || h < 8 {
        return crate::stages::malvar::demosaic_malvar_prepared(raw, pattern, max, curve, pre);
    }
    let mut out = RgbImage::for_overwrite(w, h);
    let [r, g, b] = &mut out.planes;
    let tile = Tile {
        data: &raw.data,
        stride: w,
        w,
        h,
    };
    Rows {
        tile,
        pattern,
        max,
        skip: 0,
        cols: (0, w),
        out: [r, g, b],
        curve,
        pre,
    }
    .run();
    out
}

/// How many rows each step runs behind the input: at time `t` the tile's loop converts
/// input row `t` and runs each step on row `t − lag`. A step reads its inputs at most
/// 4 rows away (the CFA plane up to 4, the colour planes 3, green 2, the direction maps
/// and activities 1), so a step's lag is at least each input's lag plus that reach:
/// whatever it reads is already written. The lags are set from the output back, each
/// the least of its readers' lags minus their reach, so that the rows each step computes
/// for a strip (its output rows widened by `OUT − lag`, see `rows_in`) are exactly the
/// rows its readers reach, no more.
struct Lag;

impl Lag {
    const ACTIVITY: isize = 8;
    const DIRECTION: isize = 9;
    const DIAG_ACTIVITY: isize = 10;
    const DIAGONAL: isize = 11;
    /// The decided direction reads `vh` one row away; the green step, at the same lag,
    /// reads it at its own row only, and runs after it in each turn of the loop.
    const DECIDED: isize = 10;
    const GREEN: isize = 10;
    const CROSS: isize = 12;
    const FILL: isize = 15;
    /// The refined green reads the fills up to 3 rows away; the output, at the same lag,
    /// reads it (and the fills) at its own row only, and runs after it in each turn.
    const REFINE: isize = 18;
    const OUT: isize = 18;

    /// Rows a plane written at lag `written` must keep for consumers whose oldest read is
    /// `last` rows behind the input.
    const fn ring(written: isize, last: isize) -> usize {
        (last - written + 1) as usize
    }
}

/// The row a step at `lag` works on at time `t`, if it is in its `rows`.
#[inline(always)]
fn due(rows: &std::ops::Range<isize>, t: isize, lag: isize) -> Option<isize> {
    Some(t - lag).filter(|y| rows.contains(y))
}

/// The algorithm on one tile, as one `pulp` kernel ([`Rows::run`]): the whole loop over
/// the tile's rows is compiled for each instruction set and picked once per tile, so the
/// row jobs ([`Row`]) are inlined into it. Dispatching each job on its own cost a call
/// and a copy of the job per step and row (~20 per row; `perf`: ~1.5 % of a 640×480
/// `demo`).
struct Rows<'a, 'b> {
    tile: Tile<'a>,
    pattern: BayerPattern,
    max: u16,
    skip: usize,
    cols: (usize, usize),
    out: [&'b mut [u16]; 3],
    curve: Option<&'a CodeMap>,
    pre: Option<&'a Deferred>,
}

impl Rows<'_, '_> {
    /// Runs [`rows_in`] with the best instruction set this CPU has.
    fn run(self) {
        pulp::Arch::new().dispatch(self)
    }
}

impl pulp::WithSimd for Rows<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        rows_in(simd, self)
    }
}

/// R or B (`src`, read at R/B sites only) at the green sites (those of parity `gq`) of
/// row `y`, from `src`'s colour differences against `g`, into `dst`. `dst`'s R/B sites
/// are not written: its readers take them from `src` (no copy). A function, not a
/// closure, so that it is compiled inside the tile's dispatch.
#[inline(always)]
fn fill_green_sites<S: pulp::Simd>(
    simd: S,
    dst: &mut Split,
    src: &Split,
    g: &Split,
    d: &Split,
    (y, w, gq): (isize, isize, usize),
) {
    let mut row = dst.row_mut(y);
    let (xs, n) = span(0, w, gq);
    Row {
        at: At { y, xs, n },
        job: Job::AtGreen {
            p: src,
            g,
            d,
            out: run(&mut row, xs, n),
        },
    }
    .run(simd);
}

/// The algorithm on the mosaic window `tile` (at least 8×8), for the instruction set
/// `simd`, writing its rows `skip..`, columns `cols.0..cols.0 + cols.1` (`cols.0` even)
/// into `out`: rows `stride` apart, as many as `out` holds. `curve` maps the output
/// codes as they are written; `pre` maps each mosaic sample as the input loop reads it
/// (the deferred normalisation and white-balance gains).
///
/// The steps run interleaved, row by row (see [`Lag`]), on ring planes of a few rows
/// each; each step computes only the rows that lead to output rows (its output rows
/// widened by its distance from the output, `OUT − lag`, which the lags make equal to
/// the reach of its readers), so the halo rows of a strip cost less the later the
/// step. Every computed sample is the same as in a whole-tile, step-by-step run (the
/// strip and golden tests).
#[inline(always)]
fn rows_in<S: pulp::Simd>(simd: S, rows: Rows) {
    let Rows {
        tile,
        pattern,
        max,
        skip,
        cols,
        out,
        curve,
        pre,
    } = rows;
    let Tile { data, stride, w, h } = tile;
    let (wi, hi) = (w as isize, h as isize);
    let scale = 1.0 / max.max(1) as f32;
    let cell = pattern.cell();
    // Column parity of the green sites in image row y; the other parity is R or B.
    let green_col = |y: isize| usize::from(cell[(y & 1) as usize][0] != Channel::G);
    let site = |y: isize| cell[(y & 1) as usize][1 - green_col(y)];

    // Output rows, and the rows each step must compute for them, within the rows the
    // step covers: the output's rows widened by the step's distance from the output,
    // `Lag::OUT − lag`. A reader's lag is at least its input's lag plus how far it reads,
    // so that distance covers every row its readers reach.
    let [or, og, ob] = out;
    let (lo, hi_out) = (skip as isize, (skip + or.len().div_ceil(stride)) as isize);
    let need = |lag: isize, a: isize, b: isize| {
        let reach = Lag::OUT - lag;
        (lo - reach).max(a)..(hi_out + reach).min(b)
    };
    let bi = B as isize;
    let r_out = need(Lag::OUT, 0, hi);
    let r_refine = need(Lag::REFINE, 0, hi);
    let r_fill = need(Lag::FILL, 0, hi);
    let r_cross = need(Lag::CROSS, 0, hi);
    let r_diag = need(Lag::DIAGONAL, -1, hi + 1);
    let r_dact = need(Lag::DIAG_ACTIVITY, -2, hi + 2);
    let r_green = need(Lag::GREEN, 0, hi);
    let r_dir = need(Lag::DIRECTION, -1, hi + 1);
    let r_decided = need(Lag::DECIDED, 0, hi);
    let r_act = need(Lag::ACTIVITY, -2, hi + 2);
    let r_c = need(0, -bi, hi + bi);

    // The planes, each keeping the rows between its writer and its last reader.
    // CFA, normalised, padded and split by parity: read last by step 3b.
    // (Step 3b reads it 3 rows behind its own lag, 15 behind the input; step 2, 4
    // behind its lag, 14.)
    let mut c = Split::new(w, h, Lag::ring(0, Lag::CROSS + 3), false);
    // Step 1: squared activities, the direction map, and the decided direction (read
    // last by the output's fill).
    let mut dv2 = Split::new(w, h, Lag::ring(Lag::ACTIVITY, Lag::DIRECTION + 1), false);
    let mut dh2 = Split::new(w, h, Lag::ring(Lag::ACTIVITY, Lag::DIRECTION + 1), false);
    let mut vh = Split::new(w, h, Lag::ring(Lag::DIRECTION, Lag::DECIDED + 1), false);
    let mut dd = Split::new(w, h, Lag::ring(Lag::DECIDED, Lag::OUT), false);
    // Step 2: green everywhere.
    let mut gp = Split::new(w, h, Lag::ring(Lag::GREEN, Lag::REFINE + 4), true);
    // Step 3: diagonal activities and direction, then R and B at R/B sites.
    let mut pa = Split::new(
        w,
        h,
        Lag::ring(Lag::DIAG_ACTIVITY, Lag::DIAGONAL + 1),
        false,
    );
    let mut qa = Split::new(
        w,
        h,
        Lag::ring(Lag::DIAG_ACTIVITY, Lag::DIAGONAL + 1),
        false,
    );
    let mut pq = Split::new(w, h, Lag::ring(Lag::DIAGONAL, Lag::CROSS + 1), false);
    // R and B at the R/B sites are read from these planes to the end (by step 4's fills,
    // 3 rows away, then by step 5 and the codes at their own row), so the later planes
    // hold only green sites.
    let mut rp = Split::new(w, h, Lag::ring(Lag::CROSS, Lag::FILL + 4), true);
    let mut bp = Split::new(w, h, Lag::ring(Lag::CROSS, Lag::FILL + 4), true);
    // Step 4: R and B at the green sites (read by step 5, 3 rows away, and the codes).
    let mut rf = Split::new(w, h, Lag::ring(Lag::FILL, Lag::REFINE + 4), true);
    let mut bf = Split::new(w, h, Lag::ring(Lag::FILL, Lag::REFINE + 4), true);
    // Step 5: green refined at the R/B sites, read by the codes only, at its own row
    // and columns (no padding). The output takes R and B from steps 3 and 4:
    // recomputing them at the green sites from the refined green cost ~12 % of the
    // demosaic and scored 0.09 dB lower (NOTES.md).
    let mut g2 = Split::new(w, h, Lag::ring(Lag::REFINE, Lag::OUT), false);

    let top = max as f32;
    let (x0, n_cols) = cols;
    for t in r_c.start..r_out.end + Lag::OUT {
        if let Some(y) = due(&r_c, t, 0) {
            let border = c.border;
            let [even, odd] = c.row_mut(y);
            let sy = reflect(y, h);
            let src = &data[sy * stride..][..w];
            // The tile starts on an even row and column, so its CFA phase is the frame's.
            let pre = pre.map(|p| {
                [0, 1].map(|x| {
                    let ch = cell[sy & 1][x] as usize;
                    (p.norm[ch], p.gains[ch])
                })
            });
            // Interior: a de-interleaving loop (image column x is padded column x + B,
            // of the same parity since B is even); then the margins, reflected.
            Row {
                at: At { y, xs: 0, n: w },
                job: Job::Input {
                    src,
                    scale,
                    even: &mut even[B / 2..],
                    odd: &mut odd[B / 2..],
                    pre,
                },
            }
            .run(simd);
            let row = [even, odd];
            for (px, sx) in border {
                let v = src[sx - B];
                let v = match pre {
                    Some(p) => {
                        let (n, k) = p[(sx - B) & 1];
                        prepared(n, k, v)
                    }
                    None => v as f32,
                };
                row[px & 1][px / 2] = v * scale;
            }
        }
        if let Some(y) = due(&r_act, t, Lag::ACTIVITY) {
            let (mut v, mut hh) = (dv2.row_mut(y), dh2.row_mut(y));
            for p in 0..2 {
                let (xs, n) = span(-2, wi + 2, p);
                Row {
                    at: At { y, xs, n },
                    job: Job::Activity {
                        c: &c,
                        dv2: run(&mut v, xs, n),
                        dh2: run(&mut hh, xs, n),
                    },
                }
                .run(simd);
            }
        }
        if let Some(y) = due(&r_dir, t, Lag::DIRECTION) {
            let mut row = vh.row_mut(y);
            for p in 0..2 {
                let (xs, n) = span(-1, wi + 1, p);
                Row {
                    at: At { y, xs, n },
                    job: Job::Direction {
                        dv2: &dv2,
                        dh2: &dh2,
                        out: run(&mut row, xs, n),
                    },
                }
                .run(simd);
            }
        }
        if let Some(y) = due(&r_dact, t, Lag::DIAG_ACTIVITY) {
            // At the R/B sites of the rows and columns that step 3a reads.
            let (mut p, mut q) = (pa.row_mut(y), qa.row_mut(y));
            let (xs, n) = span(-2, wi + 2, 1 - green_col(y));
            Row {
                at: At { y, xs, n },
                job: Job::DiagActivity {
                    c: &c,
                    p: run(&mut p, xs, n),
                    q: run(&mut q, xs, n),
                },
            }
            .run(simd);
        }
        if let Some(y) = due(&r_diag, t, Lag::DIAGONAL) {
            // Read only at R/B sites (the centre and diagonal neighbours of one are R/B
            // sites).
            let mut row = pq.row_mut(y);
            let (xs, n) = span(-1, wi + 1, 1 - green_col(y));
            Row {
                at: At { y, xs, n },
                job: Job::Diagonal {
                    pa: &pa,
                    qa: &qa,
                    out: run(&mut row, xs, n),
                },
            }
            .run(simd);
        }
        if let Some(y) = due(&r_decided, t, Lag::DECIDED) {
            let mut row = dd.row_mut(y);
            for p in 0..2 {
                let (xs, n) = span(0, wi, p);
                Row {
                    at: At { y, xs, n },
                    job: Job::Decided {
                        vh: &vh,
                        out: run(&mut row, xs, n),
                    },
                }
                .run(simd);
            }
        }
        if let Some(y) = due(&r_green, t, Lag::GREEN) {
            let mut row = gp.row_mut(y);
            let gq = green_col(y);
            let (xs, n) = span(0, wi, gq);
            run(&mut row, xs, n).copy_from_slice(c.tap(y, xs, 0, 0, n));
            let (xs, n) = span(0, wi, 1 - gq);
            Row {
                at: At { y, xs, n },
                job: Job::Green {
                    c: &c,
                    d: &dd,
                    out: run(&mut row, xs, n),
                },
            }
            .run(simd);
            gp.fill_cols(y);
        }
        if let Some(y) = due(&r_cross, t, Lag::CROSS) {
            let (mut rrow, mut brow) = (rp.row_mut(y), bp.row_mut(y));
            let (xs, n) = span(0, wi, 1 - green_col(y));
            let (own, other) = if site(y) == Channel::R {
                (run(&mut rrow, xs, n), run(&mut brow, xs, n))
            } else {
                (run(&mut brow, xs, n), run(&mut rrow, xs, n))
            };
            own.copy_from_slice(c.tap(y, xs, 0, 0, n));
            Row {
                at: At { y, xs, n },
                job: Job::Cross {
                    c: &c,
                    gp: &gp,
                    pq: &pq,
                    out: other,
                },
            }
            .run(simd);
            rp.fill_cols(y);
            bp.fill_cols(y);
        }
        if let Some(y) = due(&r_fill, t, Lag::FILL) {
            let at = (y, wi, green_col(y));
            fill_green_sites(simd, &mut rf, &rp, &gp, &dd, at);
            fill_green_sites(simd, &mut bf, &bp, &gp, &dd, at);
            rf.fill_cols(y);
            bf.fill_cols(y);
        }
        if let Some(y) = due(&r_refine, t, Lag::REFINE) {
            // Green at R/B sites again, from the (now complete) colour differences of
            // its axial neighbours, along the same direction.
            let mut row = g2.row_mut(y);
            let (xs, n) = span(0, wi, green_col(y));
            run(&mut row, xs, n).copy_from_slice(gp.tap(y, xs, 0, 0, n));
            let (xs, n) = span(0, wi, 1 - green_col(y));
            let (site, own) = if site(y) == Channel::R {
                (&rp, &rf)
            } else {
                (&bp, &bf)
            };
            Row {
                at: At { y, xs, n },
                job: Job::Refine {
                    site,
                    own,
                    g: &gp,
                    d: &dd,
                    out: run(&mut row, xs, n),
                },
            }
            .run(simd);
        }
        if let Some(y) = due(&r_out, t, Lag::OUT) {
            // R and B: step 4's at the green sites, step 3's at the R/B sites.
            let gq = green_col(y);
            let at = At {
                y,
                xs: x0 as isize,
                n: n_cols,
            };
            // `x0` is even: the green sites are the even columns when `gq` is 0.
            let (mut rs, mut bs) = ([&rf, &rp], [&bf, &bp]);
            if gq == 1 {
                rs.reverse();
                bs.reverse();
            }
            let k = (y - lo) as usize * stride;
            for (out, src) in
                [&mut or[k..], &mut og[k..], &mut ob[k..]]
                    .into_iter()
                    .zip([rs, [&g2, &g2], bs])
            {
                let out = &mut out[..n_cols];
                Row {
                    at,
                    job: Job::Codes { src, top, out },
                }
                .run(simd);
                if let Some(c) = curve {
                    c.apply_row(out);
                }
            }
        }
    }
}

/// A raw code normalised and white-balanced (the codes [`crate::stages::blc::Normalize`]
/// and [`crate::stages::wb::WhiteBalance`] would have written), as a float.
/// `gain(n.code(v), k, 65535) as f32`, without the round trip through an integer: the
/// code is a whole float already, and `gain`'s clamp and truncation of a float are
/// `max`, `min` and `floor` (its `min` with the top first, as there, for NaN).
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` would keep a NaN (a NaN gain); `gain` maps it to the top
fn prepared(n: NormCode, k: f32, v: u16) -> f32 {
    (n.code_f32(v) * k + 0.5).min(FULL).max(0.0).floor()
}

/// The RCD stage.
#[derive(Debug, Clone, Default)]
pub struct Rcd {
    /// A per-code curve folded into the output (the pipeline puts the tone curve here
    /// when nothing runs between the two).
    pub curve: Option<CodeMap>,
}

impl crate::DemosaicStage for Rcd {
    fn name(&self) -> &'static str {
        "demosaic"
    }
    fn apply(&self, raw: &RawPlane, ctx: &mut FrameContext) -> RgbImage {
        let pre = ctx.deferred.as_ref();
        demosaic_rcd_prepared(raw, ctx.pattern, ctx.max_value, self.curve.as_ref(), pre)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The previous formulation (whole padded planes, one index per tap, loops over
    /// CFA parity with a stride of two): the oracle the split-plane kernels must equal
    /// bit for bit.
    mod oracle {
        use super::super::{B, EPS};
        use crate::stages::pad::reflect;
        use crate::{RawPlane, RgbImage};
        use rawlink_frame::{BayerPattern, Channel};
        use rayon::prelude::*;

        struct Padded {
            w: usize,
            h: usize,
            pw: usize,
        }

        impl Padded {
            #[inline(always)]
            fn at(&self, y: usize, x: usize) -> usize {
                (y + B) * self.pw + x + B
            }
        }

        /// The image rows of a padded plane, in parallel: `(y, padded row)` for `y` in `0..h`.
        fn interior_rows<'a>(
            p: &'a mut [f32],
            g: &Padded,
        ) -> impl IndexedParallelIterator<Item = (usize, &'a mut [f32])> + 'a {
            p[B * g.pw..(B + g.h) * g.pw]
                .par_chunks_mut(g.pw)
                .enumerate()
        }

        /// Fills the border of a padded plane by reflect-101 from its interior.
        fn refill_border(p: &mut [f32], g: &Padded) {
            let (w, h, pw) = (g.w, g.h, g.pw);
            // Left and right margins of the interior rows.
            for py in B..h + B {
                let row = py * pw;
                for px in (0..B).chain(w + B..w + 2 * B) {
                    p[row + px] = p[row + reflect(px as isize - B as isize, w) + B];
                }
            }
            // Whole rows above and below, copied from their (now complete) mirror rows.
            for py in (0..B).chain(h + B..h + 2 * B) {
                let sy = reflect(py as isize - B as isize, h) + B;
                p.copy_within(sy * pw..(sy + 1) * pw, py * pw);
            }
        }

        /// The whole-frame algorithm (also used per strip).
        pub fn rcd_full(raw: &RawPlane, pattern: BayerPattern, max: u16) -> RgbImage {
            let (w, h) = (raw.width, raw.height);
            if w < 8 || h < 8 {
                return crate::stages::malvar::demosaic_malvar(raw, pattern, max);
            }
            let g = Padded {
                w,
                h,
                pw: w + 2 * B,
            };
            let n = g.pw * (h + 2 * B);
            let pw = g.pw;
            let scale = 1.0 / max.max(1) as f32;
            let cell = pattern.cell();
            // Column parity of the green sites in row y; the other parity is R or B.
            let green_col = |y: usize| if cell[y & 1][0] == Channel::G { 0 } else { 1 };

            // CFA, normalised and padded.
            let mut cfa = vec![0f32; n];
            cfa.par_chunks_mut(pw).enumerate().for_each(|(py, row)| {
                let sy = reflect(py as isize - B as isize, h);
                let src = &raw.data[sy * w..(sy + 1) * w];
                for (px, d) in row.iter_mut().enumerate() {
                    *d = src[reflect(px as isize - B as isize, w)] as f32 * scale;
                }
            });
            let c = &cfa;

            // Step 1: vertical/horizontal direction at every pixel (interior ± 1): squared
            // activities per pixel first (interior ± 2), then their 3×3 sums.
            let mut dv2 = vec![0f32; n];
            let mut dh2 = vec![0f32; n];
            dv2.par_chunks_mut(pw)
                .zip(dh2.par_chunks_mut(pw))
                .enumerate()
                .for_each(|(py, (vrow, hrow))| {
                    if py < B - 2 || py > h + B + 1 {
                        return;
                    }
                    for px in B - 2..w + B + 2 {
                        let i = py * pw + px;
                        let dv = (c[i - pw] - c[i + pw]).abs()
                            + (2.0 * c[i] - c[i - 2 * pw] - c[i + 2 * pw]).abs();
                        let dh =
                            (c[i - 1] - c[i + 1]).abs() + (2.0 * c[i] - c[i - 2] - c[i + 2]).abs();
                        vrow[px] = dv * dv;
                        hrow[px] = dh * dh;
                    }
                });
            let box3 = |p: &[f32], i: usize| {
                p[i - pw - 1]
                    + p[i - pw]
                    + p[i - pw + 1]
                    + p[i - 1]
                    + p[i]
                    + p[i + 1]
                    + p[i + pw - 1]
                    + p[i + pw]
                    + p[i + pw + 1]
            };
            let mut vh = vec![0.5f32; n];
            vh.par_chunks_mut(pw).enumerate().for_each(|(py, vrow)| {
                if py < B - 1 || py > h + B {
                    return;
                }
                for px in B - 1..w + B + 1 {
                    let i = py * pw + px;
                    let v = EPS + box3(&dv2, i);
                    let hh = EPS + box3(&dh2, i);
                    vrow[px] = v / (v + hh);
                }
            });
            drop((dv2, dh2));
            let vh = &vh;
            let disc = |map: &[f32], i: usize| {
                let central = map[i];
                let neigh =
                    0.25 * (map[i - pw - 1] + map[i - pw + 1] + map[i + pw - 1] + map[i + pw + 1]);
                if (0.5 - central).abs() < (0.5 - neigh).abs() {
                    neigh
                } else {
                    central
                }
            };

            // Step 2: green everywhere.
            let mut gp = vec![0f32; n];
            interior_rows(&mut gp, &g).for_each(|(y, row)| {
                let gq = green_col(y);
                for x in (gq..w).step_by(2) {
                    row[x + B] = c[g.at(y, x)];
                }
                for x in (1 - gq..w).step_by(2) {
                    let i = g.at(y, x);
                    let s = |k: isize| (i as isize + k) as usize;
                    let grad = |d: isize| {
                        EPS + (c[s(-d)] - c[s(d)]).abs()
                            + (c[i] - c[s(-2 * d)]).abs()
                            + (c[s(-d)] - c[s(-3 * d)]).abs()
                            + (c[s(-2 * d)] - c[s(-4 * d)]).abs()
                    };
                    let est = |d: isize| c[s(-d)] + 0.5 * (c[i] - c[s(-2 * d)]);
                    let (pwi, one) = (pw as isize, 1isize);
                    let (ng, sg, wg, eg) = (grad(pwi), grad(-pwi), grad(one), grad(-one));
                    let v = (sg * est(pwi) + ng * est(-pwi)) / (ng + sg);
                    let hz = (eg * est(one) + wg * est(-one)) / (wg + eg);
                    let d = disc(vh, i);
                    row[x + B] = (hz * d + v * (1.0 - d)).clamp(0.0, 1.0);
                }
            });
            refill_border(&mut gp, &g);
            let gp = &gp;

            // Step 3: R at B sites and B at R sites, along the diagonals.
            let mut pq = vec![0.5f32; n];
            pq.par_chunks_mut(pw).enumerate().for_each(|(py, row)| {
                if py < B - 1 || py > h + B {
                    return;
                }
                for px in B - 1..w + B + 1 {
                    let i = py * pw + px;
                    let dp = |i: usize| {
                        (c[i - pw - 1] - c[i + pw + 1]).abs()
                            + (2.0 * c[i] - c[i - 2 * pw - 2] - c[i + 2 * pw + 2]).abs()
                    };
                    let dq = |i: usize| {
                        (c[i - pw + 1] - c[i + pw - 1]).abs()
                            + (2.0 * c[i] - c[i - 2 * pw + 2] - c[i + 2 * pw - 2]).abs()
                    };
                    let p = dp(i - pw - 1).powi(2) + dp(i).powi(2) + dp(i + pw + 1).powi(2) + EPS;
                    let q = dq(i - pw + 1).powi(2) + dq(i).powi(2) + dq(i + pw - 1).powi(2) + EPS;
                    row[px] = p / (p + q);
                }
            });
            let pq = &pq;
            let mut rp = vec![0f32; n];
            let mut bp = vec![0f32; n];
            rp.par_chunks_mut(pw)
                .zip(bp.par_chunks_mut(pw))
                .enumerate()
                .for_each(|(py, (rrow, brow))| {
                    if py < B || py >= h + B {
                        return;
                    }
                    let y = py - B;
                    let gq = green_col(y);
                    let site = cell[y & 1][1 - gq];
                    for x in (1 - gq..w).step_by(2) {
                        let i = g.at(y, x);
                        let s = |k: isize| (i as isize + k) as usize;
                        let grad = |d: isize| {
                            EPS + (c[s(-d)] - c[s(d)]).abs()
                                + (c[s(-d)] - c[s(-3 * d)]).abs()
                                + (gp[i] - gp[s(-2 * d)]).abs()
                        };
                        let est = |d: isize| c[s(-d)] - gp[s(-d)];
                        let (nw, ne) = (pw as isize + 1, pw as isize - 1);
                        let (g_nw, g_se, g_ne, g_sw) = (grad(nw), grad(-nw), grad(ne), grad(-ne));
                        let p_est = (g_se * est(nw) + g_nw * est(-nw)) / (g_nw + g_se);
                        let q_est = (g_sw * est(ne) + g_ne * est(-ne)) / (g_ne + g_sw);
                        let d = disc(pq, i);
                        let other = (gp[i] + p_est * (1.0 - d) + q_est * d).clamp(0.0, 1.0);
                        if site == Channel::R {
                            rrow[x + B] = c[i];
                            brow[x + B] = other;
                        } else {
                            brow[x + B] = c[i];
                            rrow[x + B] = other;
                        }
                    }
                });
            refill_border(&mut rp, &g);
            refill_border(&mut bp, &g);

            // Step 4: R and B at green sites, from colour differences at the axial neighbours.
            let pwi = pw as isize;
            let axis = |p: &[f32], gpl: &[f32], i: usize, d: isize| {
                let s = |k: isize| (i as isize + k) as usize;
                let grad = |d: isize| {
                    EPS + (p[s(-d)] - p[s(d)]).abs()
                        + (gpl[i] - gpl[s(-2 * d)]).abs()
                        + (p[s(-d)] - p[s(-3 * d)]).abs()
                };
                let est = |d: isize| p[s(-d)] - gpl[s(-d)];
                let (ga, gb) = (grad(d), grad(-d));
                (gb * est(d) + ga * est(-d)) / (ga + gb)
            };
            let fill_green_sites = |src: &[f32], gpl: &[f32]| -> Vec<f32> {
                let mut out = src.to_vec();
                interior_rows(&mut out, &g).for_each(|(y, row)| {
                    for x in (green_col(y)..w).step_by(2) {
                        let i = g.at(y, x);
                        let dsc = disc(vh, i);
                        let v = gpl[i]
                            + axis(src, gpl, i, 1) * dsc
                            + axis(src, gpl, i, pwi) * (1.0 - dsc);
                        row[x + B] = v.clamp(0.0, 1.0);
                    }
                });
                out
            };
            let mut rf = fill_green_sites(&rp, gp);
            let mut bf = fill_green_sites(&bp, gp);
            refill_border(&mut rf, &g);
            refill_border(&mut bf, &g);

            // Step 5: refine green at R/B sites from the (now complete) colour differences of
            // its axial neighbours, along the same direction.
            let mut g2 = gp.to_vec();
            interior_rows(&mut g2, &g).for_each(|(y, row)| {
                let gq = green_col(y);
                let site = cell[y & 1][1 - gq];
                for x in (1 - gq..w).step_by(2) {
                    let i = g.at(y, x);
                    let own = if site == Channel::R { &rf } else { &bf };
                    // axis() gives (own - G) differences; G = own - difference.
                    let dsc = disc(vh, i);
                    let d = axis(own, gp, i, 1) * dsc + axis(own, gp, i, pwi) * (1.0 - dsc);
                    row[x + B] = (c[i] - d).clamp(0.0, 1.0);
                }
            });

            let mut out = RgbImage::new(w, h);
            let top = max as f32;
            out.par_rows_mut().for_each(|(y, [orow, grow, brow])| {
                for x in 0..w {
                    let i = g.at(y, x);
                    orow[x] = (rf[i] * top).round() as u16;
                    grow[x] = (g2[i] * top).round() as u16;
                    brow[x] = (bf[i] * top).round() as u16;
                }
            });
            out
        }
    }

    /// FNV-1a over the output codes.
    fn digest(img: &RgbImage) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for p in &img.planes {
            for &v in p {
                for b in v.to_le_bytes() {
                    h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        h
    }

    /// Golden lock, tolerance zero: the kernels' speed work must not change a single code.
    /// The digests are the whole-plane, index-per-tap formulation's (`oracle`, which the
    /// kernels equal: the next test). They last changed with the algorithm itself, when
    /// R and B at the green sites stopped being recomputed from the refined green.
    #[test]
    fn output_is_unchanged_bit_for_bit() {
        let (w, h) = (203usize, 157usize);
        let mut s = 11u32;
        let data = (0..w * h)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let (x, y) = (i % w, i / w);
                let scene = if (x / 16 + y / 16) % 2 == 0 {
                    600
                } else {
                    3000
                } + x * 4;
                (scene + (s >> 24) as usize).min(4095) as u16
            })
            .collect();
        let raw = RawPlane::new(w, h, data).unwrap();
        let got: Vec<u64> = BayerPattern::ALL
            .iter()
            .map(|&p| digest(&rcd_full(&raw, p, 4095)))
            .collect();
        assert_eq!(got, GOLDEN, "{got:#x?}");
    }

    /// The split-plane kernels equal the previous formulation on every pattern, on odd
    /// and even sizes down to the smallest RCD accepts, on noise with edges.
    #[test]
    fn split_planes_equal_the_strided_formulation() {
        for (w, h) in [
            (8usize, 8usize),
            (9, 13),
            (16, 11),
            (33, 40),
            (64, 31),
            (127, 66),
        ] {
            let mut s = (w * 31 + h) as u32;
            let data = (0..w * h)
                .map(|i| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let (x, y) = (i % w, i / w);
                    let edge = if x * 2 + y * 3 > w + h { 3500 } else { 300 };
                    (edge + (s >> 21) as usize).min(4095) as u16
                })
                .collect();
            let raw = RawPlane::new(w, h, data).unwrap();
            for p in BayerPattern::ALL {
                assert_eq!(
                    rcd_full(&raw, p, 4095),
                    oracle::rcd_full(&raw, p, 4095),
                    "{w}x{h} {p}"
                );
            }
        }
    }

    /// A curve folded into the output equals the curve applied to the finished image,
    /// on the strip path and the small-image path.
    #[test]
    fn folded_curve_equals_a_separate_pass() {
        let table: Vec<u16> = (0..4096u32).map(|v| ((v * 7919) % 4096) as u16).collect();
        let curve = CodeMap::new(&table);
        // Strips and tiles; one whole-frame tile; the Malvar fallback under 8×8.
        for (w, h) in [(96usize, 300usize), (12, 10), (6, 7)] {
            let data = (0..w * h)
                .map(|i| ((i * 37 + (i / w) * 11) % 4096) as u16)
                .collect();
            let raw = RawPlane::new(w, h, data).unwrap();
            let mut want = demosaic_rcd(&raw, BayerPattern::Grbg, 4095);
            curve.apply(&mut want);
            assert_eq!(
                demosaic_rcd_tiled(&raw, BayerPattern::Grbg, 4095, 64, 32, Some(&curve), None),
                want,
                "{w}x{h}"
            );
        }
    }

    const GOLDEN: [u64; 4] = [
        0x546b_1e04_67ca_8e10,
        0x47a8_eda2_c442_f204,
        0x2014_98dd_5f98_0e80,
        0xa957_69c4_9639_0a44,
    ];

    #[test]
    fn strips_and_tiles_equal_the_whole_frame() {
        for (w, h) in [(97usize, 700usize), (64, 610)] {
            let mut s = 7u32;
            let data = (0..w * h)
                .map(|i| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let edge = if (i % w) * 3 + (i / w) * 2 > 180 {
                        3000
                    } else {
                        500
                    };
                    (edge + (s >> 22) as usize) as u16
                })
                .collect();
            let raw = RawPlane::new(w, h, data).unwrap();
            for p in BayerPattern::ALL {
                let whole = rcd_full(&raw, p, 4095);
                assert_eq!(demosaic_rcd(&raw, p, 4095), whole, "{w}x{h} {p}");
                // Narrow tiles: many tile edges, and a last tile narrower than the rest.
                for tile_cols in [20, 32] {
                    assert_eq!(
                        demosaic_rcd_tiled(&raw, p, 4095, 64, tile_cols, None, None),
                        whole,
                        "{w}x{h} {p} tiles of {tile_cols}"
                    );
                }
            }
        }
    }
    /// The normalisation and white balance left to RCD's input loop (and the white
    /// balance's statistics) give the codes, gains and image of the two stages run on
    /// the mosaic first: every pattern, grey-world, robust and manual gains, codes
    /// above the white level and the largest code, odd sizes, many strip and tile
    /// edges, and frames small enough for the whole-frame fallbacks. The same for
    /// Malvar's row split (bands of 32 rows: 300 and 161 rows cross many band edges).
    #[test]
    fn deferred_normalisation_and_gains_equal_the_stages() {
        use crate::config::WbMode;
        use crate::stages::blc::Normalize;
        use crate::stages::wb::WhiteBalance;
        use crate::RawStage;
        for (w, h) in [(97usize, 300usize), (64, 161), (21, 13), (7, 5)] {
            let mut s = 11u32;
            let data = (0..w * h)
                .map(|i| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let base = if (i % w) * 2 + (i / w) > 60 {
                        2400
                    } else {
                        300
                    };
                    // Now and then past the 12-bit range: clamped as the table clamps.
                    if s >> 28 == 0 {
                        4095 + (s >> 20) as u16
                    } else {
                        (base + (s >> 22)) as u16
                    }
                })
                .collect();
            let raw = RawPlane::new(w, h, data).unwrap();
            for p in BayerPattern::ALL {
                for (mode, gains) in [
                    (WbMode::Grayworld, None),
                    (WbMode::Robust, None),
                    (WbMode::Manual, Some([1.9, 1.0, 0.6])),
                ] {
                    let wb = WhiteBalance { mode, gains };
                    let norm = Normalize::new(p, [64, 60, 75], 3900, 4095);
                    let mut staged = raw.clone();
                    let mut want_ctx = FrameContext::new(p, 4095);
                    norm.apply(&mut staged, &mut want_ctx);
                    wb.apply(&mut staged, &mut want_ctx);
                    let mut ctx = FrameContext::new(p, 4095);
                    let mut untouched = raw.clone();
                    Normalize::deferred([64, 60, 75], 3900, 4095).apply(&mut untouched, &mut ctx);
                    wb.apply(&mut untouched, &mut ctx);
                    let what = format!("{w}x{h} {p} {mode:?}");
                    assert_eq!(untouched, raw, "{what}: the mosaic is left as it is");
                    assert_eq!(ctx.stats.wb_gains, want_ctx.stats.wb_gains, "{what}");
                    assert_eq!(ctx.max_value, want_ctx.max_value, "{what}");
                    let pre = ctx.deferred.expect("deferred");
                    for (strip_rows, tile_cols) in [(64, 20), (64, 32), (300, 4096)] {
                        assert_eq!(
                            demosaic_rcd_tiled(
                                &raw,
                                p,
                                65535,
                                strip_rows,
                                tile_cols,
                                None,
                                Some(&pre)
                            ),
                            demosaic_rcd_tiled(
                                &staged, p, 65535, strip_rows, tile_cols, None, None
                            ),
                            "{what}, strips {strip_rows}, tiles {tile_cols}"
                        );
                    }
                    assert_eq!(
                        crate::stages::malvar::demosaic_malvar_prepared(
                            &raw,
                            p,
                            65535,
                            None,
                            Some(&pre)
                        ),
                        crate::stages::malvar::demosaic_malvar(&staged, p, 65535),
                        "{what}, Malvar"
                    );
                }
            }
        }
    }
}
