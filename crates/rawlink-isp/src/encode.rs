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
    w: W,
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
    let mut enc = png::Encoder::new(w, width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    if speed == PngSpeed::Best {
        enc.set_compression(png::Compression::Best);
    }
    for (k, v) in text {
        enc.add_text_chunk(k.to_string(), v.clone())?;
    }
    let mut writer = enc.write_header()?;
    match speed {
        PngSpeed::Best => writer.write_image_data(rgb)?,
        PngSpeed::Fast => {
            // The stream is built in a per-thread buffer kept between images: a frame's
            // worth of output is not allocated and faulted in afresh for every frame.
            thread_local! {
                static ZLIB: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            ZLIB.with_borrow_mut(|z| -> Result<(), IspError> {
                let n = crate::pngz::compress_up(rgb, width * 3, z);
                // A chunk holds at most 2^31 - 1 bytes; a stream may span several IDATs.
                for part in z[..n].chunks(1 << 30) {
                    writer.write_chunk(png::chunk::IDAT, part)?;
                }
                Ok(())
            })?;
        }
    }
    writer.finish()?;
    Ok(())
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
    fn a_sample_buffer_of_the_wrong_size_is_an_error() {
        let mut out = Vec::new();
        let e = write_png_rgb8(&mut out, 4, 4, &[0; 47], &[], PngSpeed::Fast).unwrap_err();
        assert!(e.to_string().contains("47 bytes"), "{e}");
        assert!(write_png_rgb8(&mut out, 4, 4, &[0; 48], &[], PngSpeed::Best).is_ok());
    }
}
