//! Image encoders: PNG (8- or 16-bit RGB) with optional text metadata.

use crate::IspError;
use std::io::Write;

/// PNG compression effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PngSpeed {
    /// Fastest (fdeflate); the right choice for streaming.
    #[default]
    Fast,
    /// Smaller files, slower.
    Best,
}

/// Encodes interleaved 8-bit RGB as PNG into `w`, with `text` as tEXt chunks.
pub fn write_png_rgb8<W: Write>(
    w: W,
    width: usize,
    height: usize,
    rgb: &[u8],
    text: &[(&str, String)],
    speed: PngSpeed,
) -> Result<(), IspError> {
    let mut enc = png::Encoder::new(w, width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(match speed {
        PngSpeed::Fast => png::Compression::Fast,
        PngSpeed::Best => png::Compression::Best,
    });
    if speed == PngSpeed::Fast {
        enc.set_filter(png::FilterType::Up);
    }
    for (k, v) in text {
        enc.add_text_chunk(k.to_string(), v.clone())?;
    }
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
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
