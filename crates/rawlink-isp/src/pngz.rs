//! The zlib stream of an 8-bit PNG's image data, `Up`-filtered and Huffman-coded with a
//! fixed code: what `PngSpeed::Fast` writes.
//!
//! Filtered photographic rows are mostly small differences from the row above, so a
//! static code that gives short codes to small signed differences compresses them about
//! as well as a general compressor's fast modes (within a few per cent of fdeflate's
//! output on the test photographs and the simulated frames), without any search. The
//! only repetition looked for is runs of zero bytes, the flat areas of an image (and a
//! whole frame when the lens is capped), found eight bytes at a time and coded as
//! matches at distance 1.
//!
//! Why not the `png` crate's own fast mode (fdeflate), which this replaced: measured on
//! the receiver's 640×480 frames, it spends ~3 ms per frame (filter, compressor, growing
//! output buffers) where this spends about half, with the bit buffer in registers, a table
//! of code and length per pair of bytes, the filter fused into the row pass, and an output
//! buffer kept from frame to frame (docs/BENCHMARKS.md). The `png` crate still writes
//! the chunks around the stream.
//!
//! Stream layout (RFC 1950 and RFC 1951): a zlib header, one final dynamic-Huffman
//! block whose header transmits the code below, every row as its filter byte (2, `Up`)
//! followed by the filtered samples, the end-of-block code, and the Adler-32 of the
//! filtered bytes.

use std::sync::OnceLock;

/// End of block.
const EOB: usize = 256;
/// Size of the literal/length alphabet transmitted (symbols 0..=285).
const NLIT: usize = 286;
/// Code length of each signed difference's magnitude class, in the order
/// 0, +1, −1, +2, −2, …, −127, +128: `(how many symbols, bits)`.
const STAIRCASE: [(usize, u8); 12] = [
    (1, 2),
    (2, 3),
    (2, 4),
    (4, 5),
    (4, 6),
    (6, 7),
    (10, 8),
    (14, 9),
    (18, 10),
    (21, 11),
    (173, 12),
    (1, 13),
];
/// Code lengths of the match lengths 3..=257 (symbols 257..=284), of the 258-byte match
/// (285), the one that long runs repeat, and of the end of block. With the literals'
/// staircase they fill the code space exactly (a complete prefix code, which zlib
/// requires; checked by a test).
const LEN_BITS: u8 = 13;
const LEN_258_BITS: u8 = 11;
const EOB_BITS: u8 = 13;
/// Longest code: four literals and a partial byte fit the 64-bit buffer.
const MAX_BITS: u8 = 13;
/// Low bits of a [`Code::pairs`] entry that hold its length (at most `2 · MAX_BITS`);
/// the code's bits above them fill the rest of the `u32`.
const PAIR_LEN_BITS: u32 = 5;
const _: () = assert!(2 * MAX_BITS as u32 + PAIR_LEN_BITS <= 32 && 2 * MAX_BITS < 32);
// `Out::put8` appends four codes at once: at most 56 bits.
const _: () = assert!(4 * MAX_BITS as u32 <= 56);
/// The first match length of each length symbol 257..=285 and its extra bits
/// (RFC 1951, 3.2.5).
const LEN_BASE: [(u16, u8); 29] = [
    (3, 0),
    (4, 0),
    (5, 0),
    (6, 0),
    (7, 0),
    (8, 0),
    (9, 0),
    (10, 0),
    (11, 1),
    (13, 1),
    (15, 1),
    (17, 1),
    (19, 2),
    (23, 2),
    (27, 2),
    (31, 2),
    (35, 3),
    (43, 3),
    (51, 3),
    (59, 3),
    (67, 4),
    (83, 4),
    (99, 4),
    (115, 4),
    (131, 5),
    (163, 5),
    (195, 5),
    (227, 5),
    (258, 0),
];
/// Runs of zero bytes up to this long are coded as literal zeros (2 bits each); longer
/// ones as a literal zero and matches at distance 1 (a match costs 14 to 19 bits).
const MIN_MATCH_RUN: usize = 8;

/// The code: per literal/length symbol, the code bits as written (bit-reversed, first
/// bit lowest) in the upper bits and the length in the low byte; per match length, the
/// whole match the same way (length code, extra bits, distance code); and the block
/// header.
struct Code {
    sym: [u32; NLIT],
    /// `pairs[a | b << 8]`: the literals `a` then `b`, as one code of up to
    /// `2 · MAX_BITS` bits: the bits (first bit lowest) above [`PAIR_LEN_BITS`] bits of
    /// length. Half the lookups and the shifts of coding byte by byte (256 KiB, which
    /// stays in L2 cache).
    pairs: Box<[u32; 1 << 16]>,
    /// `matches[l]`: a match of `l` bytes at distance 1, for `l` in 3..=258.
    matches: [u32; 259],
    /// The block header (BFINAL, BTYPE, the code-length code and the code lengths) as
    /// whole bytes, then `header_bits` more bits in `header_tail`.
    header: Vec<u8>,
    header_tail: u64,
    header_bits: u32,
}

/// Code lengths of the literal/length alphabet.
fn lengths() -> [u8; NLIT] {
    let mut len = [0u8; NLIT];
    // Symbols in order of magnitude: 0, 1, 255 (−1), 2, 254 (−2), …, 128.
    let order = (0..256usize).map(|k| {
        if k % 2 == 1 {
            k.div_ceil(2)
        } else {
            (256 - k / 2) % 256
        }
    });
    let mut bits = STAIRCASE
        .iter()
        .flat_map(|&(n, b)| std::iter::repeat_n(b, n));
    for s in order {
        len[s] = bits.next().unwrap_or(MAX_BITS);
    }
    len[EOB] = EOB_BITS;
    len[257..285].fill(LEN_BITS);
    len[285] = LEN_258_BITS;
    len
}

/// Canonical Huffman codes for `len` (RFC 1951, 3.2.2), bit-reversed for writing.
fn canonical(len: &[u8]) -> Vec<u32> {
    let mut count = [0u32; 16];
    for &l in len.iter().filter(|&&l| l > 0) {
        count[usize::from(l)] += 1;
    }
    let mut next = [0u32; 16];
    let mut code = 0;
    for b in 1..16 {
        code = (code + count[b - 1]) << 1;
        next[b] = code;
    }
    len.iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let c = next[usize::from(l)];
            next[usize::from(l)] += 1;
            c.reverse_bits() >> (32 - u32::from(l))
        })
        .collect()
}

/// A bit writer for building the block header (not the hot path).
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, v: u32, n: u32) {
        self.acc |= u64::from(v) << self.n;
        self.n += n;
        while self.n >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
}

impl Code {
    fn get() -> &'static Code {
        static CODE: OnceLock<Code> = OnceLock::new();
        CODE.get_or_init(Code::build)
    }

    fn build() -> Code {
        let len = lengths();
        let codes = canonical(&len);
        let mut sym = [0u32; NLIT];
        for s in 0..NLIT {
            sym[s] = (codes[s] << 8) | u32::from(len[s]);
        }
        // Distance 1 is distance code 0, the only one, of one bit (0) and no extra bits.
        let mut matches = [0u32; 259];
        for (i, &(base, extra)) in LEN_BASE.iter().enumerate() {
            let (code, bits) = (codes[257 + i], u32::from(len[257 + i]));
            let span = if i + 1 < LEN_BASE.len() {
                1 << extra
            } else {
                1
            };
            for k in 0..span {
                let l = usize::from(base) + k;
                let whole = code | (k as u32) << bits;
                matches[l] = (whole << 8) | (bits + u32::from(extra) + 1);
            }
        }
        // The code lengths (286 literal/length, then 1 distance: distance 1's code, one
        // bit) are sent with a code-length code in which each of the lengths 0..=15 has
        // a 4-bit code (symbols 16–18, the repeats, unused): complete and simple; the
        // header costs ~150 bytes per image.
        let cl_len = [4u8; 16];
        let cl_code = canonical(&cl_len);
        let mut b = Bits::default();
        b.put(1, 1); // BFINAL
        b.put(2, 2); // BTYPE = dynamic
        b.put((NLIT - 257) as u32, 5); // HLIT
        b.put(0, 5); // HDIST: one distance code
                     // HCLEN: the code-length code's lengths in the RFC's order; 15 comes last.
        const ORDER: [usize; 19] = [
            16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
        ];
        b.put(19 - 4, 4);
        for &s in &ORDER {
            b.put(if s < 16 { 4 } else { 0 }, 3);
        }
        for &l in len.iter().chain(&[1u8]) {
            b.put(cl_code[usize::from(l)], 4);
        }
        let pairs = (0..1usize << 16)
            .map(|ab| {
                let (a, b) = (sym[ab & 0xFF], sym[ab >> 8]);
                let bits = (a >> 8) | (b >> 8) << (a & 0xFF);
                (bits << PAIR_LEN_BITS) | ((a & 0xFF) + (b & 0xFF))
            })
            .collect::<Box<[u32]>>()
            .try_into()
            .unwrap_or_else(|_| unreachable!("65 536 pairs"));
        Code {
            sym,
            pairs,
            matches,
            header: b.bytes,
            header_tail: b.acc,
            header_bits: b.n,
        }
    }
}

/// The output of [`compress_up`]: a little-endian bit writer over a buffer sized for the
/// worst case up front, so a flush is an unconditional 8-byte store.
struct Out<'a> {
    buf: &'a mut [u8],
    pos: usize,
    acc: u64,
    n: u32,
}

impl Out<'_> {
    /// Appends `n` ≤ 56 bits (fewer than 8 are pending after every call).
    #[inline(always)]
    fn put(&mut self, v: u64, n: u32) {
        self.acc |= v << self.n;
        self.n += n;
        self.buf[self.pos..self.pos + 8].copy_from_slice(&self.acc.to_le_bytes());
        let whole = self.n / 8;
        self.pos += whole as usize;
        // `whole` ≤ 7, so the shift is below 64.
        self.acc >>= whole * 8;
        self.n -= whole * 8;
    }

    /// Eight literals, the bytes of `v` from the lowest, from four pair codes: one
    /// append where they fit 56 bits, else two of four (≤ 52 bits each).
    #[inline(always)]
    fn put8(&mut self, pairs: &[u32; 1 << 16], v: u64) {
        const MASK: u32 = (1 << PAIR_LEN_BITS) - 1;
        let pair = |k: u32| pairs[((v >> (16 * k)) & 0xFFFF) as usize];
        let (p0, p1, p2, p3) = (pair(0), pair(1), pair(2), pair(3));
        let (l0, l2) = (p0 & MASK, p2 & MASK);
        let (a, la) = (
            u64::from(p0 >> PAIR_LEN_BITS) | u64::from(p1 >> PAIR_LEN_BITS) << l0,
            l0 + (p1 & MASK),
        );
        let (b, lb) = (
            u64::from(p2 >> PAIR_LEN_BITS) | u64::from(p3 >> PAIR_LEN_BITS) << l2,
            l2 + (p3 & MASK),
        );
        // Photographs' small differences mostly fit one append (the usual branch).
        if la + lb <= 56 {
            self.put(a | b << la, la + lb);
        } else {
            self.put(a, la);
            self.put(b, lb);
        }
    }

    /// `run` zero bytes: a literal zero, then matches at distance 1 (258 bytes at a
    /// time), or, for short runs, literal zeros. Zero's code is all zero bits (the
    /// shortest code is the first canonical one), so literal zeros only advance the bit
    /// count.
    #[inline(always)]
    fn zeros(&mut self, c: &Code, mut run: usize) {
        let zero_bits = c.sym[0] & 0xFF;
        if run > MIN_MATCH_RUN {
            self.put(0, zero_bits);
            run -= 1;
            while run >= 3 {
                let l = run.min(258);
                let m = c.matches[l];
                self.put(u64::from(m >> 8), m & 0xFF);
                run -= l;
            }
        }
        // At most 8 literal zeros.
        self.put(0, zero_bits * run as u32);
    }
}

/// Most bytes the stream of `rows` rows of `row_len` bytes can take, and the most the
/// coder ever sizes its buffer to past the stream's start (so a buffer with that much
/// room is never moved).
pub(crate) fn stream_bound(row_len: usize, rows: usize) -> usize {
    let head = 2 + Code::get().header.len();
    (head + rows * coded_bound(row_len + 1) + 16 + 4).max(first_guess(row_len, rows))
}

/// The room the coder first sizes its buffer to past the stream's start, grown by half
/// as needed (photographs code to about 40 % of their samples; a larger guess only adds
/// memory that is zeroed and never used).
fn first_guess(row_len: usize, rows: usize) -> usize {
    2 + Code::get().header.len() + (row_len + 1) * rows / 4 + 64
}

/// Worst-case length of `bytes` filtered bytes once coded: every byte a literal of the
/// longest code (a run is never longer than its literals), and 8 bytes of slack for the
/// unconditional 8-byte stores.
fn coded_bound(bytes: usize) -> usize {
    (bytes * usize::from(MAX_BITS)).div_ceil(8) + 8
}

/// Writes the zlib stream of `data` (rows of `row_len` bytes) filtered with PNG's `Up`
/// filter into `out` from index `start`, and returns the index just past its end.
///
/// `out` is grown as the rows need, never shrunk or cleared, so a buffer kept between
/// frames is neither allocated nor zeroed again (sizing it for the worst case up front
/// zeroed 1.6 times the image per frame: `memset` was 2.3 % of a `demo` run). Bytes
/// before `start` and past the returned end are not part of the stream.
pub(crate) fn compress_up(data: &[u8], row_len: usize, out: &mut Vec<u8>, start: usize) -> usize {
    pulp::Arch::new().dispatch(CompressUp {
        data,
        row_len,
        out,
        start,
    })
}

/// Makes the rows of an image for [`compress_rows`] one at a time, so that the whole
/// image never exists as bytes.
pub(crate) trait FillRow {
    /// Rows in the image.
    fn rows(&self) -> usize;
    /// Bytes in a row.
    fn row_len(&self) -> usize;
    /// Writes row `y` into `row` (exactly [`FillRow::row_len`] bytes), in code compiled
    /// for `simd`.
    fn fill<S: pulp::Simd>(&self, simd: S, y: usize, row: &mut [u8]);
}

/// [`compress_up`] for rows made one at a time by `rows`: the stream is the same as for
/// the image they make.
pub(crate) fn compress_rows<R: FillRow>(rows: &R, out: &mut Vec<u8>, start: usize) -> usize {
    pulp::Arch::new().dispatch(CompressRows { rows, out, start })
}

/// [`compress_up`] as a `pulp` kernel: compiled for x86-64-v3 (AVX2 and BMI2, whose
/// three-operand variable shifts the bit buffer uses on every append) and v4 as well as
/// the baseline, and picked at run time.
struct CompressUp<'a> {
    data: &'a [u8],
    row_len: usize,
    out: &'a mut Vec<u8>,
    start: usize,
}

impl pulp::WithSimd for CompressUp<'_> {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> usize {
        let Self {
            data,
            row_len,
            out,
            start,
        } = self;
        let rows = data.len().checked_div(row_len).unwrap_or(0);
        let mut z = Coder::begin(out, start, row_len, rows);
        let mut above: &[u8] = &[];
        for cur in data.chunks_exact(row_len.max(1)).take(rows) {
            filter_up(&mut z.row[1..], cur, above);
            above = cur;
            z.code_row();
        }
        z.finish()
    }
}

/// [`compress_rows`] as a `pulp` kernel (as [`CompressUp`]); the rows are made in the
/// same compiled code.
struct CompressRows<'a, R> {
    rows: &'a R,
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<R: FillRow> pulp::WithSimd for CompressRows<'_, R> {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> usize {
        let Self { rows, out, start } = self;
        let (n, row_len) = (rows.rows(), rows.row_len());
        let mut z = Coder::begin(out, start, row_len, n);
        // This row and the one above, swapped after each row.
        let (mut cur, mut above) = (vec![0u8; row_len], vec![0u8; row_len]);
        for y in 0..n {
            rows.fill(simd, y, &mut cur);
            filter_up(&mut z.row[1..], &cur, if y == 0 { &[] } else { &above });
            std::mem::swap(&mut cur, &mut above);
            z.code_row();
        }
        z.finish()
    }
}

/// PNG's `Up` filter: `cur` less the row `above` (empty for the first row), byte by byte.
#[inline(always)]
fn filter_up(filtered: &mut [u8], cur: &[u8], above: &[u8]) {
    if above.is_empty() {
        filtered.copy_from_slice(cur);
    } else {
        for ((d, &c), &a) in filtered.iter_mut().zip(cur).zip(above) {
            *d = c.wrapping_sub(a);
        }
    }
}

/// The zlib stream being written: the bit writer's state between rows, the checksum,
/// and the row being coded (its filter byte, then the filtered bytes).
struct Coder<'o> {
    code: &'static Code,
    out: &'o mut Vec<u8>,
    pos: usize,
    acc: u64,
    n: u32,
    adler: simd_adler32::Adler32,
    row: Vec<u8>,
    /// Most bytes one coded row can take.
    row_bound: usize,
}

impl<'o> Coder<'o> {
    /// Starts the stream at `out[start]`, for `rows` rows of `row_len` bytes: the zlib
    /// header and the block header with its code.
    #[inline(always)]
    fn begin(out: &'o mut Vec<u8>, start: usize, row_len: usize, rows: usize) -> Self {
        let code = Code::get();
        let head = code.header.len();
        let row_bound = coded_bound(row_len + 1);
        // The first guess, and at least room for the headers and one row.
        let room = (start + first_guess(row_len, rows)).max(start + 2 + head + row_bound);
        if out.len() < room {
            out.resize(room, 0);
        }
        out[start] = 0x78; // deflate, 32 KiB window
        out[start + 1] = 0x01; // fastest; (0x78 · 256 + 0x01) % 31 == 0
        out[start + 2..start + 2 + head].copy_from_slice(&code.header);
        let mut row = vec![0u8; row_len + 1];
        row[0] = 2; // `Up`
        Self {
            code,
            out,
            pos: start + 2 + head,
            acc: code.header_tail,
            n: code.header_bits,
            adler: simd_adler32::Adler32::new(),
            row,
            row_bound,
        }
    }

    /// Codes `self.row`, whose filtered bytes the caller has written.
    #[inline(always)]
    fn code_row(&mut self) {
        self.adler.write(&self.row);
        if self.out.len() < self.pos + self.row_bound {
            // By half, within the capacity there is before the buffer has to move.
            let grown = (self.out.len() + self.out.len() / 2)
                .min(self.out.capacity())
                .max(self.pos + self.row_bound);
            self.out.resize(grown, 0);
        }
        let mut w = Out {
            buf: self.out.as_mut_slice(),
            pos: self.pos,
            acc: self.acc,
            n: self.n,
        };
        encode_row(&mut w, self.code, &self.row);
        (self.pos, self.acc, self.n) = (w.pos, w.acc, w.n);
    }

    /// Ends the stream: the end of block, the last bits flushed to a whole byte, and
    /// the checksum. Returns the index just past the stream.
    #[inline(always)]
    fn finish(self) -> usize {
        let t = &self.code.sym;
        let out = self.out;
        if out.len() < self.pos + 16 {
            out.resize(self.pos + 16, 0);
        }
        let mut w = Out {
            buf: out.as_mut_slice(),
            pos: self.pos,
            acc: self.acc,
            n: self.n,
        };
        w.put(u64::from(t[EOB] >> 8), t[EOB] & 0xFF);
        w.put(0, (8 - w.n % 8) % 8);
        let pos = w.pos;
        out[pos..pos + 4].copy_from_slice(&self.adler.finish().to_be_bytes());
        pos + 4
    }
}

/// Codes one filtered row eight bytes at a time: a zero word extends the current run of
/// zeros; the zero bytes that open the word ending a run extend it too.
#[inline(always)]
fn encode_row(w: &mut Out, c: &Code, row: &[u8]) {
    let t = &c.sym;
    let mut run = 0usize;
    let mut words = row.chunks_exact(8);
    for word in &mut words {
        let v = u64::from_le_bytes(word.try_into().unwrap_or_default());
        if v == 0 {
            run += 8;
            continue;
        }
        if run > 0 {
            // Little-endian: the word's first bytes are its low bits.
            let lead = (v.trailing_zeros() / 8) as usize;
            w.zeros(c, run + lead);
            run = 0;
            if lead > 0 {
                for &b in &word[lead..] {
                    let e = t[usize::from(b)];
                    w.put(u64::from(e >> 8), e & 0xFF);
                }
                continue;
            }
        }
        w.put8(&c.pairs, v);
    }
    if run > 0 {
        w.zeros(c, run);
    }
    for &b in words.remainder() {
        let e = t[usize::from(b)];
        w.put(u64::from(e >> 8), e & 0xFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

    /// Inflates a zlib stream with an independent decoder (zlib-compatible, checks the
    /// Adler-32).
    fn inflate(z: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        flate2::read::ZlibDecoder::new(z)
            .read_to_end(&mut v)
            .expect("a valid zlib stream");
        v
    }

    /// `Up`-filtered rows, each with its filter byte: what the stream must inflate to.
    fn filtered(data: &[u8], row_len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let mut above = vec![0u8; row_len];
        for cur in data.chunks_exact(row_len) {
            v.push(2);
            v.extend(cur.iter().zip(&above).map(|(c, a)| c.wrapping_sub(*a)));
            above = cur.to_vec();
        }
        v
    }

    fn round_trip(data: &[u8], row_len: usize) {
        // A buffer left over from a larger image: only its start is the stream.
        let mut z = vec![0xA5; 3 * data.len() + 300];
        let n = compress_up(data, row_len, &mut z, 0);
        assert!(n <= 2 + 200 + coded_bound(data.len() + data.len() / row_len) + 6);
        assert_eq!(inflate(&z[..n]), filtered(data, row_len));
        // Written further on, into a buffer too short for it: the same stream there,
        // and the bytes before it untouched.
        let mut y = vec![0x5A; 7];
        let end = compress_up(data, row_len, &mut y, 7);
        assert_eq!((&y[..7], &y[7..end]), (&[0x5A; 7][..], &z[..n]));
    }

    #[test]
    fn the_code_is_complete_and_short_enough() {
        let len = lengths();
        let kraft: u64 = len
            .iter()
            .filter(|&&l| l > 0)
            .map(|&l| 1u64 << (MAX_BITS - l))
            .sum();
        assert_eq!(
            kraft,
            1 << MAX_BITS,
            "the code must fill the code space exactly"
        );
        assert!(len.iter().all(|&l| l <= MAX_BITS));
        assert_eq!(STAIRCASE.iter().map(|s| s.0).sum::<usize>(), 256);
        // Magnitudes get longer codes: 0 shortest, ±1 next, ±128 among the longest.
        assert_eq!((len[0], len[1], len[255]), (2, 3, 3));
        assert_eq!(len[128], MAX_BITS);
        assert!(len[1..=128].windows(2).all(|p| p[0] <= p[1]));
        assert!(len[128..256].windows(2).all(|p| p[0] >= p[1]));
    }

    #[test]
    fn zero_runs_of_every_length_round_trip() {
        // Runs around the word size, the 258-byte match and several matches, at every
        // alignment, between non-zero bytes.
        for run in [
            1, 7, 8, 9, 15, 16, 17, 257, 258, 259, 260, 516, 517, 1000, 3000,
        ] {
            for lead in 0..8 {
                let mut row = vec![9u8; lead];
                row.extend(std::iter::repeat_n(0, run));
                row.extend([200, 0, 3]);
                // The first row is coded as it is (nothing above), so runs are runs.
                round_trip(&row, row.len());
            }
        }
    }

    #[test]
    fn flat_frames_compress_far_below_literals() {
        let (w, h) = (640 * 3, 480);
        let black = vec![0u8; w * h];
        let mut z = Vec::new();
        let n = compress_up(&black, w, &mut z, 0);
        assert_eq!(inflate(&z[..n]), filtered(&black, w));
        // Zero runs as matches: ~40 bytes a row, where literal zeros take 480.
        assert!(n < 40 * h, "{n} bytes");
        let grey = vec![117u8; w * h];
        round_trip(&grey, w);
    }

    #[test]
    fn the_worst_case_fits_the_bound() {
        // Rows alternating 128 and 0: every filtered byte is 128, the longest code.
        let (w, h) = (61, 9);
        let data: Vec<u8> = (0..w * h)
            .map(|i| if (i / w) % 2 == 0 { 128 } else { 0 })
            .collect();
        let mut z = Vec::new();
        let n = compress_up(&data, w, &mut z, 0);
        assert_eq!(inflate(&z[..n]), filtered(&data, w));
        assert!(
            n + 16 > (w * h * usize::from(MAX_BITS)) / 8,
            "{n}: not the worst case"
        );
        // The buffer grew past its first guess, by whole rows' bounds.
        assert!(
            z.len() >= n && z.len() < n + 2 * coded_bound(w + 1) + 64,
            "{}",
            z.len()
        );
    }

    #[test]
    fn empty_and_tiny_images() {
        round_trip(&[], 1);
        round_trip(&[5], 1);
        round_trip(&[1, 2, 3], 3);
        round_trip(&[255; 6], 3);
    }

    proptest! {
        #[test]
        fn any_rows_round_trip(
            row_len in 1usize..70,
            rows in 1usize..12,
            seed in proptest::collection::vec(any::<u8>(), 1..64),
            zeros in 0u8..4,
        ) {
            // Bytes from the seed, some of them zeroed in stretches, so that runs,
            // partial words and every byte value all occur.
            let data: Vec<u8> = (0..row_len * rows)
                .map(|i| {
                    let b = seed[i % seed.len()].wrapping_mul(i as u8 | 1);
                    if (i / 13) % 4 < usize::from(zeros) { 0 } else { b }
                })
                .collect();
            let mut z = Vec::new();
            let n = compress_up(&data, row_len, &mut z, 0);
            prop_assert_eq!(inflate(&z[..n]), filtered(&data, row_len));
        }
    }
}
