//! Image encoders: PNG (8- or 16-bit RGB) with optional text metadata.

use crate::IspError;
use std::io::Write;

/// PNG compression effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PngSpeed {
    /// Fastest: this crate's static-Huffman coder for `Up`-filtered rows (`pngz`; measured
    /// against the `png` crate's fdeflate in docs/BENCHMARKS.md); the right choice for
    /// streaming.
    #[default]
    Fast,
    /// Smaller files, slower.
    Best,
}

/// Encodes interleaved 8-bit RGB as PNG into `w`, with `text` as tEXt chunks.
///
/// [`PngSpeed::Fast`] compresses with this crate's static-Huffman coder for `Up`-filtered
/// rows (`pngz`), [`PngSpeed::Best`] with the `png` crate's zlib at its best setting.
pub fn write_png_rgb8<W: Write>(
    mut w: W,
    width: usize,
    height: usize,
    rgb: &[u8],
    text: &[(&str, String)],
    speed: PngSpeed,
) -> Result<(), IspError> {
    let expected = width.checked_mul(height).and_then(|n| n.checked_mul(3));
    if expected != Some(rgb.len()) {
        return Err(IspError::BadParam(format!(
            "PNG: {} bytes of samples for a {width}x{height} RGB image",
            rgb.len()
        )));
    }
    if speed == PngSpeed::Fast && rgb.len() + height < FAST_IN_PLACE_MAX {
        // The file is built in a per-thread buffer kept between images: a frame's worth
        // of output is not allocated and faulted in afresh for every frame.
        thread_local! {
            static FILE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        return FILE.with_borrow_mut(|f| {
            let end = write_png_rgb8_fast_at(f, 0, width, height, rgb, text)?;
            Ok(w.write_all(&f[..end]).map_err(png::EncodingError::from)?)
        });
    }
    let mut writer = png_head(w, width, height, text, speed)?;
    match speed {
        PngSpeed::Best => writer.write_image_data(rgb)?,
        PngSpeed::Fast => {
            // Past `FAST_IN_PLACE_MAX` the stream may need several IDAT chunks (one
            // holds at most 2^31 − 1 bytes).
            let mut z = Vec::new();
            let n = crate::pngz::compress_up(rgb, width * 3, &mut z, 0);
            for part in z[..n].chunks(1 << 30) {
                writer.write_chunk(png::chunk::IDAT, part)?;
            }
        }
    }
    writer.finish()?;
    Ok(())
}

/// Filtered bytes (samples plus a filter byte per row) up to which a
/// [`PngSpeed::Fast`] stream is sure to fit one IDAT chunk (at most 13 bits per byte:
/// 1.63 GiB < 2^31 − 1).
const FAST_IN_PLACE_MAX: usize = 1 << 30;

/// A PNG encoder for 8-bit RGB with its text chunks, its header written to `w`.
fn png_head<W: Write>(
    w: W,
    width: usize,
    height: usize,
    text: &[(&str, String)],
    speed: PngSpeed,
) -> Result<png::Writer<W>, IspError> {
    let mut enc = png::Encoder::new(w, width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    if speed == PngSpeed::Best {
        enc.set_compression(png::Compression::Best);
    }
    for (k, v) in text {
        enc.add_text_chunk(k.to_string(), v.clone())?;
    }
    Ok(enc.write_header()?)
}

/// Encodes interleaved 8-bit RGB as a [`PngSpeed::Fast`] PNG written into `out` from
/// index `at`, and returns the index just past its end: the image data is coded straight
/// into its place in the file, with no intermediate buffer to copy from (the receiver
/// places `at` on a block boundary and writes the file from there with direct I/O).
///
/// `out` is grown as needed and never shrunk, so a buffer kept between images is not
/// zeroed again; bytes before `at` and past the returned end are not part of the file.
/// The file is the one [`write_png_rgb8`] writes with [`PngSpeed::Fast`]. Images whose
/// filtered bytes reach 2^30 (more than ~350 megapixels) are coded through a separate
/// buffer, since their stream may need several IDAT chunks.
pub fn write_png_rgb8_fast_at(
    out: &mut Vec<u8>,
    at: usize,
    width: usize,
    height: usize,
    rgb: &[u8],
    text: &[(&str, String)],
) -> Result<usize, IspError> {
    let expected = width.checked_mul(height).and_then(|n| n.checked_mul(3));
    if expected != Some(rgb.len()) {
        return Err(IspError::BadParam(format!(
            "PNG: {} bytes of samples for a {width}x{height} RGB image",
            rgb.len()
        )));
    }
    if rgb.len() + height >= FAST_IN_PLACE_MAX {
        let mut file = Vec::new();
        write_png_rgb8(&mut file, width, height, rgb, text, PngSpeed::Fast)?;
        return Ok(put(out, at, &file));
    }
    fast_file_at(out, at, width, height, text, |out, data| {
        crate::pngz::compress_up(rgb, width * 3, out, data)
    })
}

/// [`write_png_rgb8_fast_at`] for a pipeline's output, its 8-bit rows made one at a time
/// as they are coded (the values of [`crate::PipelineOutput::to_rgb8`]): the whole
/// 8-bit frame is neither written nor read back. The file is the one
/// [`write_png_rgb8_fast_at`] writes for `image.to_rgb8()`.
pub fn write_png_output_fast_at(
    out: &mut Vec<u8>,
    at: usize,
    image: &crate::PipelineOutput,
    text: &[(&str, String)],
) -> Result<usize, IspError> {
    let (width, height) = (image.image.width, image.image.height);
    if image
        .image
        .planes
        .iter()
        .any(|p| Some(p.len()) != width.checked_mul(height))
    {
        return Err(IspError::BadParam(format!(
            "PNG: the image's planes do not hold {width}x{height} samples"
        )));
    }
    if width
        .saturating_mul(3)
        .saturating_add(1)
        .saturating_mul(height)
        >= FAST_IN_PLACE_MAX
    {
        return write_png_rgb8_fast_at(out, at, width, height, &image.to_rgb8(), text);
    }
    fast_file_at(out, at, width, height, text, |out, data| {
        image.with_rgb8_rows(|rows| crate::pngz::compress_rows(rows, out, data))
    })
}

/// Most bytes [`write_png_rgb8_fast_at`] or [`write_png_output_fast_at`] write past `at`
/// (or size the buffer to) for a `width`×`height` image with `text`: a buffer with that
/// much room past `at` is never reallocated, so it stays where it was placed (on a
/// block boundary, say). Only address space is reserved: the pages the file does not
/// reach are never touched.
pub fn fast_png_bound(width: usize, height: usize, text: &[(&str, String)]) -> usize {
    // Signature, IHDR, each tEXt chunk (length, type, keyword, NUL, text, CRC), the
    // IDAT chunk's length, type and CRC, IEND; 256 bytes to spare for the header.
    let chunks: usize = text.iter().map(|(k, v)| 13 + k.len() + v.len()).sum();
    let row = width.saturating_mul(3);
    8 + 25 + chunks + 12 + 12 + 256 + crate::pngz::stream_bound(row, height)
}

/// The IEND chunk, which ends every PNG: empty, with its CRC.
const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];

/// Writes `bytes` into `out` at `at` (grown as needed); returns the end.
fn put(out: &mut Vec<u8>, at: usize, bytes: &[u8]) -> usize {
    let end = at + bytes.len();
    if out.len() < end {
        out.resize(end, 0);
    }
    out[at..end].copy_from_slice(bytes);
    end
}

/// A [`PngSpeed::Fast`] PNG file written into `out` from `at`, its image data one IDAT
/// chunk that `stream` codes in place: `stream(out, data)` writes the zlib stream at
/// `out[data..]` and returns its end. Returns the file's end.
fn fast_file_at(
    out: &mut Vec<u8>,
    at: usize,
    width: usize,
    height: usize,
    text: &[(&str, String)],
    stream: impl FnOnce(&mut Vec<u8>, usize) -> usize,
) -> Result<usize, IspError> {
    // The signature, header and text chunks from the `png` crate: written and finished
    // with no image data, then everything before its IEND kept.
    let mut head = Vec::new();
    png_head(&mut head, width, height, text, PngSpeed::Fast)?.finish()?;
    let head = head.strip_suffix(&IEND).ok_or_else(|| {
        IspError::BadParam("PNG: the encoder's header does not end with IEND".into())
    })?;
    // One IDAT chunk: its length (known once the stream is coded), type, the stream
    // coded in place, and the CRC of type and stream.
    let idat = put(out, at, head);
    let data = put(out, idat + 4, b"IDAT");
    let end = stream(out, data);
    // A chunk holds at most 2^31 − 1 bytes.
    let len = u32::try_from(end - data)
        .ok()
        .filter(|&n| n <= 0x7FFF_FFFF)
        .ok_or_else(|| IspError::BadParam("PNG: the image data does not fit one chunk".into()))?;
    out[idat..idat + 4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32fast::hash(&out[idat + 4..end]);
    let end = put(out, end, &crc.to_be_bytes());
    Ok(put(out, end, &IEND))
}

/// Encodes interleaved 16-bit RGB as PNG (samples big-endian on disk, as PNG requires).
pub fn write_png_rgb16<W: Write>(
    w: W,
    width: usize,
    height: usize,
    rgb: &[u16],
    text: &[(&str, String)],
) -> Result<(), IspError> {
    let mut enc = png::Encoder::new(w, width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Sixteen);
    enc.set_compression(png::Compression::Fast);
    for (k, v) in text {
        enc.add_text_chunk(k.to_string(), v.clone())?;
    }
    let mut writer = enc.write_header()?;
    let bytes: Vec<u8> = rgb.iter().flat_map(|v| v.to_be_bytes()).collect();
    writer.write_image_data(&bytes)?;
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>, Vec<(String, String)>) {
        let mut r = png::Decoder::new(png_bytes).read_info().unwrap();
        let mut px = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut px).unwrap();
        px.truncate(info.buffer_size());
        let text = r
            .info()
            .uncompressed_latin1_text
            .iter()
            .map(|t| (t.keyword.clone(), t.text.clone()))
            .collect();
        (info, px, text)
    }

    /// The photographs of the quality tests, as 8-bit RGB.
    fn photos() -> Vec<(String, usize, usize, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/photos");
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "png") {
                let (info, px, _) = decode(&std::fs::read(&p).unwrap());
                assert_eq!(info.color_type, png::ColorType::Rgb);
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                v.push((name, info.width as usize, info.height as usize, px));
            }
        }
        assert_eq!(v.len(), 6);
        v
    }

    #[test]
    fn fast_png_decodes_to_the_samples_and_compresses_like_fdeflate() {
        for (name, w, h, rgb) in photos() {
            let text = [("Software", "rawlink test".to_string())];
            let mut ours = Vec::new();
            write_png_rgb8(&mut ours, w, h, &rgb, &text, PngSpeed::Fast).unwrap();
            let (info, px, got_text) = decode(&ours);
            assert_eq!(
                (info.width as usize, info.height as usize),
                (w, h),
                "{name}"
            );
            assert_eq!(info.bit_depth, png::BitDepth::Eight);
            assert!(px == rgb, "{name}: decoded samples differ");
            assert_eq!(got_text, vec![("Software".into(), "rawlink test".into())]);

            // The png crate's fast mode (fdeflate) on the same rows, which this coder
            // replaced: the files may be at most 4 % larger (measured: −0.4 % to +3.0 %;
            // fdeflate codes medium zero runs a few bits shorter).
            let mut theirs = Vec::new();
            let mut e = png::Encoder::new(&mut theirs, w as u32, h as u32);
            e.set_color(png::ColorType::Rgb);
            e.set_depth(png::BitDepth::Eight);
            e.set_compression(png::Compression::Fast);
            e.set_filter(png::FilterType::Up);
            e.write_header().unwrap().write_image_data(&rgb).unwrap();
            let ratio = ours.len() as f64 / theirs.len() as f64;
            assert!(
                ratio < 1.04,
                "{name}: {} vs {} bytes",
                ours.len(),
                theirs.len()
            );
            // And the files are compressed at all: well below the raw samples.
            assert!(ours.len() < rgb.len() * 9 / 10, "{name}");
        }
    }

    #[test]
    fn fast_png_in_place_is_the_png_crates_framing_of_the_stream() {
        let text = [("Software", "rawlink test".to_string()), ("k", "v".into())];
        for (name, w, h, rgb) in photos().into_iter().take(2).chain([
            ("1x1".into(), 1, 1, vec![7, 8, 9]),
            (
                "5x3".into(),
                5,
                3,
                (0..45).map(|i| (i * 37) as u8).collect(),
            ),
        ]) {
            // The file as the `png` crate frames the coded stream in one IDAT chunk.
            let mut z = Vec::new();
            let n = crate::pngz::compress_up(&rgb, w * 3, &mut z, 0);
            let mut want = Vec::new();
            let mut wr = png_head(&mut want, w, h, &text, PngSpeed::Fast).unwrap();
            wr.write_chunk(png::chunk::IDAT, &z[..n]).unwrap();
            wr.finish().unwrap();
            // In place, at an offset into a longer buffer of other bytes, which stay.
            let mut out = vec![0xEE; 3 * want.len()];
            let end = write_png_rgb8_fast_at(&mut out, 100, w, h, &rgb, &text).unwrap();
            assert!(out[100..end] == want[..], "{name}");
            assert!(
                out[..100].iter().chain(&out[end..]).all(|&b| b == 0xEE),
                "{name}"
            );
            // Into an empty buffer, and through the writer.
            let mut empty = Vec::new();
            let end = write_png_rgb8_fast_at(&mut empty, 0, w, h, &rgb, &text).unwrap();
            let mut through = Vec::new();
            write_png_rgb8(&mut through, w, h, &rgb, &text, PngSpeed::Fast).unwrap();
            assert!(empty[..end] == want[..] && through == want, "{name}");
            assert!(decode(&want).1 == rgb, "{name}");
        }
        let e = write_png_rgb8_fast_at(&mut Vec::new(), 0, 4, 4, &[0; 47], &[]).unwrap_err();
        assert!(e.to_string().contains("47 bytes"), "{e}");
    }

    #[test]
    fn output_png_rows_made_as_coded_are_the_same_file() {
        let text = [("Software", "rawlink test".to_string())];
        // Full 16-bit scale (arithmetic) and 12-bit (per-code table), rounded or
        // truncated, codes above the scale included; odd sizes and one row or column.
        for (w, h) in [(1, 1), (7, 3), (640, 2), (1, 9), (33, 17)] {
            for (max_value, round_8bit) in [(65535, true), (4095, false), (4095, true)] {
                let n = w * h;
                let plane = |k: usize| -> Vec<u16> {
                    (0..n)
                        .map(|i| ((i * 2654435761 + k * 977) % 70_000).min(65535) as u16)
                        .map(|v| if max_value == 65535 { v } else { v % 4200 })
                        .collect()
                };
                let img = crate::PipelineOutput {
                    image: crate::RgbImage {
                        width: w,
                        height: h,
                        planes: [plane(0), plane(1), plane(2)],
                    },
                    max_value,
                    round_8bit,
                    timings: Vec::new(),
                    stats: Default::default(),
                };
                let mut want = Vec::new();
                let end =
                    write_png_rgb8_fast_at(&mut want, 0, w, h, &img.to_rgb8(), &text).unwrap();
                let mut got = vec![0x33; 10];
                let got_end = write_png_output_fast_at(&mut got, 10, &img, &text).unwrap();
                assert!(got[10..got_end] == want[..end], "{w}x{h}, max {max_value}");
                assert_eq!(decode(&want[..end]).1, img.to_rgb8());
            }
        }
        // Planes that do not hold the image: an error, not a panic.
        let bad = crate::PipelineOutput {
            image: crate::RgbImage {
                width: 4,
                height: 4,
                planes: [vec![0; 16], vec![0; 15], vec![0; 16]],
            },
            max_value: 4095,
            round_8bit: false,
            timings: Vec::new(),
            stats: Default::default(),
        };
        let e = write_png_output_fast_at(&mut Vec::new(), 0, &bad, &[]).unwrap_err();
        assert!(e.to_string().contains("4x4"), "{e}");
    }

    #[test]
    fn the_bound_holds_and_the_buffer_never_moves() {
        // Noise (the worst case for the coder: about 13/8 of the samples), flat and
        // photographic content, odd sizes, long text.
        let text = [("Software", "x".repeat(300)), ("k", "v".into())];
        let noise = |n: usize| -> Vec<u8> {
            let mut s = 0x9E37_79B9u32;
            (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    s as u8
                })
                .collect()
        };
        let mut images = vec![
            ("noise 1x1".to_string(), 1, 1, noise(3)),
            ("noise 97x31".into(), 97, 31, noise(97 * 31 * 3)),
            ("flat 64x8".into(), 64, 8, vec![7; 64 * 8 * 3]),
        ];
        images.extend(photos().into_iter().take(1));
        for (name, w, h, rgb) in images {
            let bound = fast_png_bound(w, h, &text);
            let mut out = Vec::with_capacity(bound + 10);
            let at_start = out.as_ptr();
            let end = write_png_rgb8_fast_at(&mut out, 10, w, h, &rgb, &text).unwrap();
            assert!(end - 10 <= bound && out.len() - 10 <= bound, "{name}");
            assert_eq!(out.as_ptr(), at_start, "{name}: the buffer moved");
            assert!(decode(&out[10..end]).1 == rgb, "{name}");
        }
    }

    #[test]
    fn a_sample_buffer_of_the_wrong_size_is_an_error() {
        let mut out = Vec::new();
        let e = write_png_rgb8(&mut out, 4, 4, &[0; 47], &[], PngSpeed::Fast).unwrap_err();
        assert!(e.to_string().contains("47 bytes"), "{e}");
        assert!(write_png_rgb8(&mut out, 4, 4, &[0; 48], &[], PngSpeed::Best).is_ok());
    }
}
