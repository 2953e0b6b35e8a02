//! Activation-map figures (homework Q2.5): the first convolution's feature maps for one
//! image, tiled into a single grey PNG, and the input image beside it.
//!
//! Each map is stretched on its own from its minimum to its maximum onto 0..255 (a constant
//! map is black), then every pixel is drawn as a `scale x scale` square; maps are separated
//! by white lines.

use std::path::Path;

/// An 8-bit grey image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreyImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// Maps `values` linearly from their min..max onto 0..255.
pub fn normalise(values: &[f32]) -> Vec<u8> {
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = hi - lo;
    values
        .iter()
        .map(|&v| {
            if range > 0.0 && range.is_finite() {
                (((v - lo) / range) * 255.0).round().clamp(0.0, 255.0) as u8
            } else {
                0
            }
        })
        .collect()
}

/// Tiles `maps` (each `rows x cols` bytes) in a grid of `columns`, each pixel drawn
/// `scale x scale`, with `gap` white pixels between and around maps.
pub fn tile(
    maps: &[Vec<u8>],
    rows: usize,
    cols: usize,
    columns: usize,
    scale: usize,
    gap: usize,
) -> GreyImage {
    let columns = columns.clamp(1, maps.len().max(1));
    let grid_rows = maps.len().div_ceil(columns).max(1);
    let (cell_w, cell_h) = (cols * scale, rows * scale);
    let width = columns * cell_w + (columns + 1) * gap;
    let height = grid_rows * cell_h + (grid_rows + 1) * gap;
    let mut pixels = vec![255u8; width * height];
    for (k, map) in maps.iter().enumerate() {
        let (x0, y0) = (
            gap + (k % columns) * (cell_w + gap),
            gap + (k / columns) * (cell_h + gap),
        );
        for y in 0..cell_h {
            for x in 0..cell_w {
                pixels[(y0 + y) * width + x0 + x] = map[(y / scale) * cols + x / scale];
            }
        }
    }
    GreyImage {
        width: width as u32,
        height: height as u32,
        pixels,
    }
}

/// Encodes `image` as an 8-bit grey PNG.
pub fn encode_png(image: &GreyImage) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, image.width, image.height);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&image.pixels)?;
        writer.finish()?;
    }
    Ok(out)
}

/// Writes `bytes` to `path` atomically (see [`crate::store::write_atomic`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::store::write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_stretches_each_map() {
        assert_eq!(normalise(&[-1.0, 0.0, 1.0]), vec![0, 128, 255]);
        assert_eq!(normalise(&[3.0, 3.0]), vec![0, 0]);
    }

    #[test]
    fn tile_places_upscaled_maps_with_gaps() {
        let maps = vec![
            vec![0u8, 10, 20, 30],
            vec![40, 50, 60, 70],
            vec![80, 90, 100, 110],
        ];
        let img = tile(&maps, 2, 2, 2, 2, 1);
        // 2 columns of 4-pixel cells + 3 gaps; 2 rows likewise.
        assert_eq!((img.width, img.height), (11, 11));
        let at = |x: usize, y: usize| img.pixels[y * 11 + x];
        assert_eq!(at(0, 0), 255);
        assert_eq!((at(1, 1), at(2, 2), at(3, 1), at(4, 4)), (0, 0, 10, 30));
        assert_eq!(at(6, 1), 40);
        assert_eq!(at(1, 6), 80);
        // The fourth cell is empty: white.
        assert_eq!(at(7, 7), 255);
    }

    #[test]
    fn png_decodes_back() {
        let img = tile(&[vec![0, 255, 128, 7]], 2, 2, 1, 3, 0);
        let bytes = encode_png(&img).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (6, 6));
        assert_eq!(&buf[..info.buffer_size()], img.pixels.as_slice());
    }
}
