//! Per-run outputs of a translator: a Markdown table of sample translations and greyscale
//! attention heatmaps (rows = output characters, columns = input characters).

use super::TrainError;
use super::metrics::example_error;
use super::seq2seq::Evaluation;
use crate::data::pairs::ParallelData;
use crate::data::vocab::EOS;
use crate::events::{EventSink, RunEvent};
use crate::spec::{DecodeSpec, DecodeStrategy};
use crate::store::RunDir;
use std::fmt::Write as _;
use std::path::Path;

/// Dev sentences shown in the sample table.
const SAMPLES: usize = 12;
/// Dev sentences drawn as attention heatmaps.
const HEATMAPS: usize = 4;
/// Pixels per heatmap cell, so a 15x20 matrix is readable at a glance.
const CELL: usize = 16;

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// A greyscale image of `weights` (rows x cols, values in [0, 1]); white = all attention.
pub fn heatmap(weights: &[Vec<f32>], cols: usize) -> (u32, u32, Vec<u8>) {
    let (w, h) = (cols * CELL, weights.len() * CELL);
    let mut px = vec![0u8; w * h];
    for (r, row) in weights.iter().enumerate() {
        for (c, &v) in row.iter().take(cols).enumerate() {
            let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            for y in r * CELL..(r + 1) * CELL {
                px[y * w + c * CELL..y * w + (c + 1) * CELL].fill(g);
            }
        }
    }
    (w as u32, h as u32, px)
}

fn write_png(path: &Path, width: u32, height: u32, pixels: &[u8]) -> Result<(), TrainError> {
    let file = std::fs::File::create(path).map_err(|e| TrainError::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let as_io = |e: png::EncodingError| TrainError::io(path, std::io::Error::other(e));
    let mut writer = enc.write_header().map_err(as_io)?;
    writer.write_image_data(pixels).map_err(as_io)?;
    writer.finish().map_err(as_io)
}

/// Writes `artifacts/samples.md` and, with attention, `artifacts/attention_<i>.png`, and
/// emits them as Text and Image events.
pub fn write_artifacts(
    run_dir: &RunDir,
    sink: &mut dyn EventSink,
    data: &ParallelData,
    dev: &Evaluation,
    decode: &DecodeSpec,
    step: u64,
) -> Result<(), TrainError> {
    let dir = run_dir.artifacts();
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let strategy = match decode.strategy {
        DecodeStrategy::Greedy => "greedy".to_string(),
        DecodeStrategy::Beam => format!(
            "beam, width {}, length penalty {}",
            decode.beam_width, decode.length_penalty
        ),
    };
    let mut md = format!(
        "# Sample translations\n\nFirst {SAMPLES} dev sentences, {strategy} decoding. \
         Error = Levenshtein(prediction, gold) / len(gold).\n\n\
         | # | source | gold | prediction | error |\n| ---: | --- | --- | --- | ---: |\n"
    );
    let shown = dev.predictions.iter().zip(&data.dev.pairs).take(SAMPLES);
    for (i, (pred, pair)) in shown.enumerate() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.3} |",
            i + 1,
            cell(&pair.source),
            cell(&pair.target),
            cell(pred),
            example_error(pred, &pair.target)
        );
    }
    let mut images = Vec::new();
    let with_attention = dev.hypotheses.iter().any(|h| !h.attention.is_empty());
    if with_attention {
        md.push_str(
            "\n## Attention\n\nRows are output characters, columns input characters; \
             white = all weight.\n\n",
        );
        for (i, h) in dev.hypotheses.iter().take(HEATMAPS).enumerate() {
            let src = &data.dev.examples[i].src;
            let (w, hgt, px) = heatmap(&h.attention, src.len());
            let name = format!("attention_{i}.png");
            write_png(&dir.join(&name), w, hgt, &px)?;
            let rows: Vec<String> = h
                .tokens
                .iter()
                .chain(h.finished.then_some(&EOS))
                .map(|&t| data.tgt_vocab.label(t))
                .collect();
            let _ = writeln!(
                md,
                "- `{name}`: {} -> {} (rows `{}`)",
                cell(&data.dev.pairs[i].source),
                cell(&dev.predictions[i]),
                rows.join("·")
            );
            images.push((format!("attention/{i}"), w, hgt, px));
        }
    }
    let path = dir.join("samples.md");
    std::fs::write(&path, &md).map_err(|e| TrainError::io(&path, e))?;
    sink.emit(&RunEvent::Text {
        step,
        tag: "samples/translations".into(),
        text: md,
    })?;
    for (tag, width, height, pixels) in images {
        sink.emit(&RunEvent::Image {
            step,
            tag,
            width,
            height,
            channels: 1,
            pixels,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_scales_cells_and_maps_weight_to_grey() {
        let (w, h, px) = heatmap(&[vec![1.0, 0.0], vec![0.5, 0.5]], 2);
        assert_eq!((w, h), (2 * CELL as u32, 2 * CELL as u32));
        assert_eq!(px[0], 255);
        assert_eq!(px[CELL], 0);
        assert_eq!(px[CELL * w as usize], 128);
    }
}
