//! `orchestrate report`: PNG figures for a homework report, drawn with plotters.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (`assets/fonts`, Bitstream Vera
//! licence), so figures look the same on machines without system fonts. Images are rendered
//! into a memory buffer and written with the `png` crate the project already uses, which keeps
//! plotters' image-encoder dependencies out.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Once;

use super::SummaryError;
use super::experiment::{ExperimentSummary, RunEntry, show_value, state_name};

const FONT: &str = "sans-serif";
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 620;
const WINNER: RGBColor = RGBColor(214, 39, 40);
/// Runs that cannot win (failed, diverged, ...) are drawn in grey.
const SET_APART: RGBColor = RGBColor(150, 150, 150);
/// Tableau's categorical colours without red, which marks the winner; yellow is too pale.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

static FONT_ONCE: Once = Once::new();

/// Registers the embedded font with plotters (once per process).
fn register_font() {
    FONT_ONCE.call_once(|| {
        // The bytes are a valid TrueType file checked in with the code; a failure here would
        // only drop text from figures, never crash.
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../assets/fonts/DejaVuSans.ttf"),
        );
    });
}

/// Writes every figure that applies to `summary` into `out_dir`; returns the files written.
pub fn write_report(
    summary: &ExperimentSummary,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, SummaryError> {
    register_font();
    std::fs::create_dir_all(out_dir).map_err(|source| SummaryError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let runs: Vec<&RunEntry> = summary.all_runs().collect();
    let metric = summary.select.metric.as_str();
    let mut files = Vec::new();
    for tag in ["train/loss", metric] {
        if runs.iter().any(|r| !series(r, tag).is_empty()) {
            let path = out_dir.join(format!("{}.png", file_stem(tag)));
            // Put the legend where the curves are not: losses fall, so they leave the top
            // right free; a rising metric leaves the bottom right free.
            let rising = tag == metric && summary.select.mode == crate::spec::SelectMode::Max;
            let corner = if rising {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            };
            render(&path, |root| epoch_figure(root, summary, tag, corner))?;
            files.push(path);
        }
    }
    let bars: Vec<Bar> = runs
        .iter()
        .filter_map(|r| {
            let v = r.metrics.best?.get();
            let label = match r.rank {
                Some(_) => r.label().to_string(),
                None => format!("{} ({})", r.label(), state_name(r.state)),
            };
            let fill = if r.winner {
                WINNER
            } else if r.rank.is_none() {
                SET_APART
            } else {
                RGBColor(70, 110, 180)
            };
            v.is_finite().then_some(Bar {
                label,
                value: v,
                fill,
            })
        })
        .collect();
    if !bars.is_empty() {
        let path = out_dir.join(format!("final_{}.png", file_stem(metric)));
        let title = format!("{} per grid point (best epoch)", metric);
        render(&path, |root| bar_figure(root, &title, metric, &bars))?;
        files.push(path);
    }
    if let Some((group_key, bar_key)) = two_axes(&runs) {
        let test_tag = test_counterpart(metric);
        for tag in [Some(metric.to_string()), test_tag].into_iter().flatten() {
            let value = |r: &RunEntry| {
                if tag == metric {
                    r.metrics.best.map(|v| v.get())
                } else {
                    r.metrics.test.get(&tag).map(|v| v.get())
                }
            };
            if runs.iter().filter_map(|r| value(r)).all(|v| !v.is_finite()) {
                continue;
            }
            let path = out_dir.join(format!(
                "{}_by_{}_and_{}.png",
                file_stem(&tag),
                file_stem(&group_key),
                file_stem(&bar_key)
            ));
            render(&path, |root| {
                grouped_figure(root, &runs, &group_key, &bar_key, &tag, &value)
            })?;
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(SummaryError::Usage(format!(
            "experiment `{}` has no metrics to draw yet",
            summary.experiment
        )));
    }
    Ok(files)
}

/// Which epochs' weights the runs' test values were measured on: ` (epoch 43)` when they
/// agree, ` (epochs 43, 50)` when not, nothing when no run has one.
fn test_epochs_note(runs: &[&RunEntry]) -> String {
    let epochs: std::collections::BTreeSet<usize> =
        runs.iter().filter_map(|r| r.metrics.test_epoch).collect();
    let list: Vec<String> = epochs.iter().map(usize::to_string).collect();
    match list.len() {
        0 => String::new(),
        1 => format!(" (epoch {})", list[0]),
        _ => format!(" (epochs {})", list.join(", ")),
    }
}

/// `dev/accuracy` -> `dev_accuracy`.
fn file_stem(tag: &str) -> String {
    tag.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `dev/accuracy` -> `test/accuracy`.
fn test_counterpart(metric: &str) -> Option<String> {
    metric
        .split_once('/')
        .map(|(_, rest)| format!("test/{rest}"))
        .filter(|t| t != metric)
}

/// (epoch, value) points of `tag` in one run, finite values only.
fn series(r: &RunEntry, tag: &str) -> Vec<(f64, f64)> {
    r.metrics
        .epochs
        .iter()
        .filter_map(|row| row.values.get(tag).map(|v| (row.epoch as f64, v.get())))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// The two varied keys of a two-axis grid (Q3: attention x decoding), the group key first.
fn two_axes(runs: &[&RunEntry]) -> Option<(String, String)> {
    let keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.varied.keys()).collect();
    let keys: Vec<&String> = keys.into_iter().collect();
    if keys.len() != 2 {
        return None;
    }
    // Group by what was trained and put evaluation-only settings (decode.*) side by side.
    if keys[0].starts_with("decode.") && !keys[1].starts_with("decode.") {
        Some((keys[1].clone(), keys[0].clone()))
    } else {
        Some((keys[0].clone(), keys[1].clone()))
    }
}

fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> SummaryError + '_ {
    move |e| SummaryError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), String>;

/// Draws into an RGB buffer with `draw` and writes it as a PNG.
fn render(path: &Path, draw: impl FnOnce(&Area) -> DrawResult) -> Result<(), SummaryError> {
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err(path))?;
        draw(&root).map_err(draw_err(path))?;
        root.present().map_err(draw_err(path))?;
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(draw_err(path))?;
        writer.write_image_data(&buf).map_err(draw_err(path))?;
    }
    super::atomic_write(path, &bytes)
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A value range with a little air, never empty.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = (hi - lo).abs();
    let pad = if span > 0.0 {
        span * 0.08
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad, hi + pad)
}

/// `tag` per epoch for every run; the winner drawn last, thick and red.
fn epoch_figure(
    root: &Area,
    summary: &ExperimentSummary,
    tag: &str,
    corner: SeriesLabelPosition,
) -> DrawResult {
    let runs: Vec<&RunEntry> = summary.all_runs().collect();
    let all: Vec<(f64, f64)> = runs.iter().flat_map(|r| series(r, tag)).collect();
    let max_epoch = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = padded(
        all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
        all.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
    );
    let title = format!("{tag} per epoch: {}", summary.experiment);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0.8f64..max_epoch + 0.2, lo..hi)
        .map_err(s)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(tag)
        .x_labels((max_epoch as usize).clamp(2, 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(s)?;
    let mut order: Vec<&RunEntry> = runs.iter().copied().filter(|r| !r.winner).collect();
    order.extend(runs.iter().copied().filter(|r| r.winner));
    let legend = runs.len() <= 12;
    for (i, r) in order.iter().enumerate() {
        let pts = series(r, tag);
        if pts.is_empty() {
            continue;
        }
        let style = if r.winner {
            WINNER.stroke_width(4)
        } else {
            let c = if r.rank.is_none() {
                SET_APART
            } else {
                color(i)
            };
            c.mix(0.85).stroke_width(2)
        };
        let label = if r.winner {
            format!("{} (winner)", r.label())
        } else {
            r.label().to_string()
        };
        let drawn = chart
            .draw_series(LineSeries::new(pts.clone(), style))
            .map_err(s)?;
        if legend || r.winner {
            drawn
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        let size = if r.winner { 4 } else { 3 };
        chart
            .draw_series(
                pts.into_iter()
                    .map(|p| Circle::new(p, size, style.filled())),
            )
            .map_err(s)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(corner)
        .draw()
        .map_err(s)?;
    Ok(())
}

/// One bar of the per-run chart.
struct Bar {
    label: String,
    value: f64,
    fill: RGBColor,
}

/// Horizontal bars, one per run, names on the left, values at the bar ends.
fn bar_figure(root: &Area, title: &str, metric: &str, bars: &[Bar]) -> DrawResult {
    let n = bars.len();
    let longest = bars
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(4);
    let label_px = (longest as u32 * 8 + 24).clamp(60, 360);
    let (lo, hi) = value_axis(bars.iter().map(|b| b.value));
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(label_px)
        .build_cartesian_2d(lo..hi, 0f64..n as f64)
        .map_err(s)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(metric)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(s)?;
    // The best run at the top: row 0 is drawn highest.
    for (i, bar) in bars.iter().enumerate() {
        let (name, v) = (&bar.label, &bar.value);
        let y = (n - 1 - i) as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(lo.min(0.0).max(lo), y + 0.15), (*v, y + 0.85)],
                bar.fill.filled(),
            )))
            .map_err(s)?;
        let (px, py) = chart.backend_coord(&(lo, y + 0.5));
        let name_style = TextStyle::from((FONT, 14))
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(name.clone(), (px - 8, py), name_style))
            .map_err(s)?;
        let (vx, vy) = chart.backend_coord(&(*v, y + 0.5));
        let value_style = TextStyle::from((FONT, 13))
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(
            super::num::fmt_metric(*v),
            (vx + 4, vy),
            value_style,
        ))
        .map_err(s)?;
    }
    Ok(())
}

/// An axis from 0 (or the lowest negative value) to a little past the highest value.
fn value_axis(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    (lo, hi + (hi - lo) * 0.15)
}

/// Bars grouped by `group_key`, one colour per value of `bar_key` (Q3: attention x decoding).
fn grouped_figure(
    root: &Area,
    runs: &[&RunEntry],
    group_key: &str,
    bar_key: &str,
    tag: &str,
    value: &dyn Fn(&RunEntry) -> Option<f64>,
) -> DrawResult {
    let values_of = |key: &str| -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        let mut sorted: Vec<&&RunEntry> = runs.iter().collect();
        sorted.sort_by_key(|r| r.index);
        for r in sorted {
            let v = show_value(r.varied.get(key));
            if !seen.contains(&v) {
                seen.push(v);
            }
        }
        seen
    };
    let (groups, kinds) = (values_of(group_key), values_of(bar_key));
    let (lo, hi) = value_axis(
        runs.iter()
            .filter_map(|r| value(r))
            .filter(|v| v.is_finite()),
    );
    let mut title = format!("{tag} by {group_key} and {bar_key}");
    if tag.starts_with(super::run::TEST_PREFIX) {
        title.push_str(&test_epochs_note(runs));
    }
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..groups.len() as f64, lo..hi)
        .map_err(s)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(tag)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(s)?;
    let width = 0.8 / kinds.len() as f64;
    for (k, kind) in kinds.iter().enumerate() {
        let color = color(k);
        let mut rects = Vec::new();
        let mut labels = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let run = runs.iter().find(|r| {
                show_value(r.varied.get(group_key)) == *group
                    && show_value(r.varied.get(bar_key)) == *kind
            });
            let Some(v) = run.and_then(|r| value(r)).filter(|v| v.is_finite()) else {
                continue;
            };
            let x0 = g as f64 + 0.1 + k as f64 * width;
            let winner = run.is_some_and(|r| r.winner);
            rects.push((x0, v, winner));
            labels.push((x0 + width / 2.0, v));
        }
        let drawn = chart
            .draw_series(rects.iter().map(|&(x0, v, _)| {
                Rectangle::new([(x0, lo.min(0.0)), (x0 + width * 0.92, v)], color.filled())
            }))
            .map_err(s)?;
        drawn
            .label(format!("{bar_key} = {kind}"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        // The winner gets a red outline.
        chart
            .draw_series(rects.iter().filter(|r| r.2).map(|&(x0, v, _)| {
                Rectangle::new(
                    [(x0, lo.min(0.0)), (x0 + width * 0.92, v)],
                    WINNER.stroke_width(3),
                )
            }))
            .map_err(s)?;
        for (x, v) in labels {
            let (px, py) = chart.backend_coord(&(x, v));
            let style = TextStyle::from((FONT, 13))
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            root.draw(&Text::new(super::num::fmt_metric(v), (px, py - 3), style))
                .map_err(s)?;
        }
    }
    for (g, group) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(g as f64 + 0.5, lo));
        let style = TextStyle::from((FONT, 15))
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(
            format!("{group_key} = {group}"),
            (px, py + 8),
            style,
        ))
        .map_err(s)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(s)?;
    Ok(())
}
