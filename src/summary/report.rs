//! `orchestrate report`: PNG figures for a homework report, drawn with plotters.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (`assets/fonts`, Bitstream Vera
//! licence), so figures look the same on machines without system fonts. Images are rendered
//! into a memory buffer and written with the `png` crate the project already uses, which keeps
//! plotters' image-encoder dependencies out.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;

use super::SummaryError;
use super::configurations::{ConfigurationEntry, Stat};
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
        let curves = curves(summary, tag);
        if curves.iter().any(|c| !c.points.is_empty()) {
            let path = out_dir.join(format!("{}.png", file_stem(tag)));
            // Put the legend where the curves are not: losses fall, so they leave the top
            // right free; a rising metric leaves the bottom right free.
            let rising = tag == metric && summary.select.mode == crate::spec::SelectMode::Max;
            let corner = if rising {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            };
            render(&path, |root| {
                epoch_figure(root, summary, &curves, tag, corner)
            })?;
            files.push(path);
        }
    }
    let items = items(summary);
    let bars: Vec<Bar> = items
        .iter()
        .filter_map(|it| {
            let (v, interval) = it.select?;
            let fill = if it.winner {
                WINNER
            } else if it.set_apart {
                SET_APART
            } else {
                RGBColor(70, 110, 180)
            };
            v.is_finite().then(|| Bar {
                label: it.label.clone(),
                value: v,
                interval,
                fill,
            })
        })
        .collect();
    if !bars.is_empty() {
        let path = out_dir.join(format!("final_{}.png", file_stem(metric)));
        let title = if summary.configurations.is_empty() {
            format!("{metric} per grid point (best epoch)")
        } else {
            format!("{metric} per configuration (mean, 95% interval)")
        };
        render(&path, |root| bar_figure(root, &title, metric, &bars))?;
        files.push(path);
    }
    if let Some((group_key, bar_key)) = two_axes(&runs) {
        let test_tag = test_counterpart(metric);
        for tag in [Some(metric.to_string()), test_tag].into_iter().flatten() {
            let value = |it: &Item| {
                if tag == metric {
                    it.select
                } else {
                    it.test.get(&tag).copied()
                }
            };
            if items.iter().filter_map(&value).all(|(v, _)| !v.is_finite()) {
                continue;
            }
            let path = out_dir.join(format!(
                "{}_by_{}_and_{}.png",
                file_stem(&tag),
                file_stem(&group_key),
                file_stem(&bar_key)
            ));
            render(&path, |root| {
                grouped_figure(
                    root,
                    &items,
                    &group_key,
                    &bar_key,
                    &tag,
                    &value,
                    &test_epochs_note(&runs),
                )
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

/// One line of an epoch figure: a run's values, or a configuration's mean over its
/// replicates with their lowest and highest value as a band.
struct Curve {
    label: String,
    winner: bool,
    set_apart: bool,
    points: Vec<BandPoint>,
}

/// A curve's value at one epoch; `low == high == mean` for a single run.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BandPoint {
    epoch: f64,
    mean: f64,
    low: f64,
    high: f64,
}

/// Per epoch, the mean, lowest and highest finite value of `tag` over `runs`, at the epochs
/// any of them recorded (a replicate that stopped early leaves the later epochs to the rest).
fn band(runs: &[&RunEntry], tag: &str) -> Vec<BandPoint> {
    let mut at: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for r in runs {
        for (epoch, v) in series(r, tag) {
            at.entry(epoch as usize).or_default().push(v);
        }
    }
    at.into_iter()
        .map(|(epoch, vs)| BandPoint {
            epoch: epoch as f64,
            mean: vs.iter().sum::<f64>() / vs.len() as f64,
            low: vs.iter().copied().fold(f64::INFINITY, f64::min),
            high: vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
        .collect()
}

/// The curves of `tag`: one per configuration when the experiment has replicates, else one
/// per run.
fn curves(summary: &ExperimentSummary, tag: &str) -> Vec<Curve> {
    let runs: Vec<&RunEntry> = summary.all_runs().collect();
    if summary.configurations.is_empty() {
        return runs
            .iter()
            .map(|r| Curve {
                label: run_label(r),
                winner: r.winner,
                set_apart: r.rank.is_none(),
                points: band(&[r], tag),
            })
            .collect();
    }
    summary
        .configurations
        .iter()
        .map(|c| Curve {
            label: configuration_label(c, &runs),
            winner: c.winner,
            set_apart: c.rank.is_none(),
            points: band(&replicates(&runs, c), tag),
        })
        .collect()
}

/// The runs of configuration `c`.
fn replicates<'a>(runs: &[&'a RunEntry], c: &ConfigurationEntry) -> Vec<&'a RunEntry> {
    runs.iter()
        .copied()
        .filter(|r| r.replicate.is_some() && r.configuration() == c.id)
        .collect()
}

/// A run's name in a legend or beside a bar, with its state when it is set apart
/// (`lr0.01 (pruned)`): a pruned run's curve ends at its rung, and the label says why.
fn run_label(r: &RunEntry) -> String {
    match r.rank {
        Some(_) => r.label().to_string(),
        None => format!("{} ({})", r.label(), state_name(r.state)),
    }
}

/// `lr0.0005 (n=5)`; a configuration set apart says why in a few words, as a run's label
/// does: `lr0.1 (n=2, pruned)` when every replicate ended the same way (a schedule prunes a
/// configuration whole), else the first replicate that sets it apart, `lr0.1 (n=2,
/// lr0.1-rep1 failed)`. The summary's full reason (the prune note) is too long for a legend.
fn configuration_label(c: &ConfigurationEntry, runs: &[&RunEntry]) -> String {
    let n = c.runs.len();
    if c.rank.is_some() {
        return format!("{} (n={n})", c.name);
    }
    let replicates = replicates(runs, c);
    let apart: Vec<&&RunEntry> = replicates.iter().filter(|r| r.rank.is_none()).collect();
    match apart.first() {
        Some(r) if apart.len() == replicates.len() && apart.iter().all(|a| a.state == r.state) => {
            format!("{} (n={n}, {})", c.name, state_name(r.state))
        }
        Some(r) => format!("{} (n={n}, {} {})", c.name, r.label(), state_name(r.state)),
        None => match &c.reason {
            Some(why) => format!("{} (n={n}, {why})", c.name),
            None => format!("{} (n={n})", c.name),
        },
    }
}

/// A value with its 95% interval, when it is a mean of replicates.
type Valued = (f64, Option<(f64, f64)>);

/// One bar of the final-metric figures: a run, or a configuration of replicates.
struct Item {
    label: String,
    index: usize,
    winner: bool,
    set_apart: bool,
    varied: BTreeMap<String, serde_json::Value>,
    /// The select metric at the best epoch (its mean for a configuration).
    select: Option<Valued>,
    test: BTreeMap<String, Valued>,
}

/// The bars of the final-metric figures, best first: configurations when the experiment has
/// replicates, else runs.
fn items(summary: &ExperimentSummary) -> Vec<Item> {
    let stat = |s: &Stat| {
        (
            s.mean.get(),
            s.ci95.as_ref().map(|[lo, hi]| (lo.get(), hi.get())),
        )
    };
    if summary.configurations.is_empty() {
        return summary
            .all_runs()
            .map(|r| Item {
                label: run_label(r),
                index: r.index,
                winner: r.winner,
                set_apart: r.rank.is_none(),
                varied: r.varied.clone(),
                select: r.metrics.best.map(|v| (v.get(), None)),
                test: r
                    .metrics
                    .test
                    .iter()
                    .map(|(k, v)| (k.clone(), (v.get(), None)))
                    .collect(),
            })
            .collect();
    }
    let runs: Vec<&RunEntry> = summary.all_runs().collect();
    summary
        .configurations
        .iter()
        .map(|c| Item {
            label: configuration_label(c, &runs),
            index: c.index,
            winner: c.winner,
            set_apart: c.rank.is_none(),
            varied: c.varied.clone(),
            select: c.select.as_ref().map(stat),
            test: c.test.iter().map(|(k, v)| (k.clone(), stat(v))).collect(),
        })
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

/// `tag` per epoch for every curve; the winner drawn last, thick and red. A configuration's
/// band (its replicates' lowest to highest value) is shaded under its mean.
fn epoch_figure(
    root: &Area,
    summary: &ExperimentSummary,
    curves: &[Curve],
    tag: &str,
    corner: SeriesLabelPosition,
) -> DrawResult {
    let all: Vec<&BandPoint> = curves.iter().flat_map(|c| &c.points).collect();
    let max_epoch = all.iter().map(|p| p.epoch).fold(1.0, f64::max);
    let (lo, hi) = padded(
        all.iter().map(|p| p.low).fold(f64::INFINITY, f64::min),
        all.iter().map(|p| p.high).fold(f64::NEG_INFINITY, f64::max),
    );
    let title = if summary.configurations.is_empty() {
        format!("{tag} per epoch: {}", summary.experiment)
    } else {
        format!(
            "{tag} per epoch: {}, mean and range of replicates",
            summary.experiment
        )
    };
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
    let mut order: Vec<&Curve> = curves.iter().filter(|c| !c.winner).collect();
    order.extend(curves.iter().filter(|c| c.winner));
    let legend = curves.len() <= 12;
    for (i, r) in order.iter().enumerate() {
        if r.points.is_empty() {
            continue;
        }
        let base = if r.winner {
            WINNER
        } else if r.set_apart {
            SET_APART
        } else {
            color(i)
        };
        let style = if r.winner {
            WINNER.stroke_width(4)
        } else {
            base.mix(0.85).stroke_width(2)
        };
        if let [p] = r.points.as_slice()
            && p.high > p.low
        {
            // One epoch (a configuration pruned at its first rung): its range as a whisker,
            // where a band would have no width.
            let whisker = vec![(p.epoch, p.low), (p.epoch, p.high)];
            chart
                .draw_series(std::iter::once(PathElement::new(
                    whisker,
                    base.mix(0.5).stroke_width(2),
                )))
                .map_err(s)?;
        } else if r.points.iter().any(|p| p.high > p.low) {
            let mut outline: Vec<(f64, f64)> = r.points.iter().map(|p| (p.epoch, p.high)).collect();
            outline.extend(r.points.iter().rev().map(|p| (p.epoch, p.low)));
            chart
                .draw_series(std::iter::once(Polygon::new(outline, base.mix(0.18))))
                .map_err(s)?;
        }
        let pts: Vec<(f64, f64)> = r.points.iter().map(|p| (p.epoch, p.mean)).collect();
        let label = if r.winner {
            format!("{} (winner)", r.label)
        } else {
            r.label.clone()
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
    /// The 95% interval of a configuration's mean, drawn as a whisker.
    interval: Option<(f64, f64)>,
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
    let (lo, hi) = value_axis(bars.iter().flat_map(|b| {
        let (l, h) = b.interval.unwrap_or((b.value, b.value));
        [b.value, l, h]
    }));
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
        if let Some((l, h)) = bar.interval {
            let mid = y + 0.5;
            chart
                .draw_series([
                    PathElement::new(vec![(l, mid), (h, mid)], BLACK.stroke_width(2)),
                    PathElement::new(vec![(l, y + 0.35), (l, y + 0.65)], BLACK.stroke_width(2)),
                    PathElement::new(vec![(h, y + 0.35), (h, y + 0.65)], BLACK.stroke_width(2)),
                ])
                .map_err(s)?;
        }
        let (px, py) = chart.backend_coord(&(lo, y + 0.5));
        let name_style = TextStyle::from((FONT, 14))
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(name.clone(), (px - 8, py), name_style))
            .map_err(s)?;
        let end = bar.interval.map_or(*v, |(_, h)| h.max(*v));
        let (vx, vy) = chart.backend_coord(&(end, y + 0.5));
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
    runs: &[Item],
    group_key: &str,
    bar_key: &str,
    tag: &str,
    value: &dyn Fn(&Item) -> Option<Valued>,
    test_note: &str,
) -> DrawResult {
    let values_of = |key: &str| -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        let mut sorted: Vec<&Item> = runs.iter().collect();
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
            .filter_map(value)
            .flat_map(|(v, i)| {
                let (l, h) = i.unwrap_or((v, v));
                [v, l, h]
            })
            .filter(|v| v.is_finite()),
    );
    let mut title = format!("{tag} by {group_key} and {bar_key}");
    if tag.starts_with(super::run::TEST_PREFIX) {
        title.push_str(test_note);
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
        let mut whiskers = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let run = runs.iter().find(|r| {
                show_value(r.varied.get(group_key)) == *group
                    && show_value(r.varied.get(bar_key)) == *kind
            });
            let Some((v, interval)) = run.and_then(value).filter(|v| v.0.is_finite()) else {
                continue;
            };
            let x0 = g as f64 + 0.1 + k as f64 * width;
            let winner = run.is_some_and(|r| r.winner);
            rects.push((x0, v, winner));
            let mid = x0 + width * 0.46;
            if let Some((l, h)) = interval {
                whiskers.push(PathElement::new(
                    vec![(mid, l), (mid, h)],
                    BLACK.stroke_width(2),
                ));
            }
            labels.push((mid, interval.map_or(v, |(_, h)| h.max(v)), v));
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
        chart.draw_series(whiskers).map_err(s)?;
        for (x, top, v) in labels {
            let (px, py) = chart.backend_coord(&(x, top));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunState;

    fn run(name: &str, values: &[(usize, f64)]) -> RunEntry {
        let epochs: Vec<serde_json::Value> = values
            .iter()
            .map(|(e, v)| serde_json::json!({"epoch": e, "values": {"dev/accuracy": v}}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "rank": 1, "winner": false, "id": name, "name": name, "index": 0,
            "state": "done", "attempts": 1, "varied": {}, "config": {},
            "metrics": {"select": "dev/accuracy", "mode": "max", "best_epoch": 1,
                        "best": 0.5, "final": {}, "test": {}, "epochs": epochs},
        }))
        .unwrap()
    }

    /// An experiment of `ranked` runs (the first one the winner) and runs set apart.
    fn experiment(mut ranked: Vec<RunEntry>, excluded: Vec<RunEntry>) -> ExperimentSummary {
        for (i, r) in ranked.iter_mut().enumerate() {
            r.rank = Some(i + 1);
            r.winner = i == 0;
        }
        serde_json::from_value(serde_json::json!({
            "format": 1, "experiment": "prune", "winner": ranked.first().map(|r| &r.id),
            "select": {"metric": "dev/accuracy", "mode": "max"},
            "runs": ranked, "excluded": excluded,
        }))
        .unwrap()
    }

    #[test]
    fn a_pruned_run_is_drawn_apart_with_its_curve_ending_at_its_rung() {
        let done = run("lr0.001", &[(1, 0.6), (2, 0.7), (3, 0.8), (4, 0.85)]);
        let mut pruned = run("lr0.01", &[(1, 0.65)]);
        pruned.rank = None;
        pruned.state = Some(RunState::Pruned);
        pruned.reason = Some("pruned".into());
        let summary = experiment(vec![done], vec![pruned]);
        let curves = curves(&summary, "dev/accuracy");
        let c = curves
            .iter()
            .find(|c| c.label.starts_with("lr0.01"))
            .expect("the pruned run is drawn");
        assert_eq!(c.label, "lr0.01 (pruned)");
        assert!(c.set_apart && !c.winner);
        let epochs: Vec<f64> = c.points.iter().map(|p| p.epoch).collect();
        assert_eq!(epochs, [1.0], "its curve ends at the rung it stopped at");
        let w = curves.iter().find(|c| c.winner).unwrap();
        assert_eq!((w.label.as_str(), w.points.len()), ("lr0.001", 4));
        // The bar of its best epoch is grey and labelled the same way.
        let bars = items(&summary);
        let b = bars.iter().find(|i| i.label == "lr0.01 (pruned)").unwrap();
        assert!(b.set_apart && b.select == Some((0.5, None)));
        // And both figures of the metric are written (the runs have no train/loss).
        let out = tempfile::tempdir().unwrap();
        assert_eq!(write_report(&summary, out.path()).unwrap().len(), 2);
    }

    /// Replicate `k` of configuration `config`, set apart as `state` when given.
    fn replicate(
        config: &str,
        k: u32,
        values: &[(usize, f64)],
        state: Option<RunState>,
    ) -> RunEntry {
        let mut r = run(&format!("{config}-rep{k}"), values);
        r.id = format!("{config}{k}");
        r.replicate = Some(crate::grid::Replicate {
            configuration: config.into(),
            index: k,
        });
        if let Some(s) = state {
            r.rank = None;
            r.state = Some(s);
        }
        r
    }

    #[test]
    fn a_pruned_configuration_is_drawn_apart_in_a_few_words() {
        let kept = [
            replicate("lr0.001", 0, &[(1, 0.5), (2, 0.6), (3, 0.7)], None),
            replicate("lr0.001", 1, &[(1, 0.25), (2, 0.5), (3, 0.75)], None),
        ];
        let pruned = [
            replicate("lr0.1", 0, &[(1, 0.125)], Some(RunState::Pruned)),
            replicate("lr0.1", 1, &[(1, 0.375)], Some(RunState::Pruned)),
        ];
        let mut mixed = replicate("lr0.01", 0, &[(1, 0.5), (2, 0.5), (3, 0.5)], None);
        mixed.rank = Some(3);
        let failed = replicate("lr0.01", 1, &[(1, 0.5)], Some(RunState::Failed));
        let config = |name: &str, rank: Option<usize>, runs: &[&RunEntry]| {
            serde_json::json!({
                "rank": rank, "winner": rank == Some(1), "id": name, "name": name,
                "index": 0, "runs": runs.iter().map(|r| &r.id).collect::<Vec<_>>(),
                "varied": {}, "test": {},
                // The summary's reason: the whole prune note, too long for a legend.
                "reason": rank.is_none().then(|| format!("replicate {}: pruned: at rung 1 \
                    (epoch 1) of successive_halving: dev/accuracy 0.2500 (mean of 2 \
                    replicates) against the cut 0.5000 (1 of 3 configurations kept)",
                    runs[0].name)),
            })
        };
        let mut summary = experiment(
            vec![kept[0].clone(), kept[1].clone(), mixed.clone()],
            vec![pruned[0].clone(), pruned[1].clone(), failed.clone()],
        );
        summary.configurations = serde_json::from_value(serde_json::json!([
            config("lr0.001", Some(1), &[&kept[0], &kept[1]]),
            config("lr0.1", None, &[&pruned[0], &pruned[1]]),
            config("lr0.01", None, &[&mixed, &failed]),
        ]))
        .unwrap();
        let curves = curves(&summary, "dev/accuracy");
        let labels: Vec<&str> = curves.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "lr0.001 (n=2)",
                "lr0.1 (n=2, pruned)",
                "lr0.01 (n=2, lr0.01-rep1 failed)"
            ]
        );
        // The pruned configuration's mean ends at its rung, its band the two replicates'.
        let p = &curves[1];
        assert!(p.set_apart);
        assert_eq!(p.points.len(), 1);
        assert_eq!((p.points[0].epoch, p.points[0].mean), (1.0, 0.25));
        assert_eq!((p.points[0].low, p.points[0].high), (0.125, 0.375));
        let bars = items(&summary);
        assert_eq!(bars[1].label, "lr0.1 (n=2, pruned)");
    }

    #[test]
    fn a_band_is_the_mean_and_range_of_the_replicates_at_each_epoch() {
        let a = run("a", &[(1, 0.5), (2, 0.7), (3, 0.8)]);
        // `b` stopped after two epochs and has a NaN at the first: the band at epoch 1 and 3
        // is `a`'s alone.
        let b = run("b", &[(1, f64::NAN), (2, 0.9)]);
        let got = band(&[&a, &b], "dev/accuracy");
        let point = |epoch, mean, low, high| BandPoint {
            epoch,
            mean,
            low,
            high,
        };
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], point(1.0, 0.5, 0.5, 0.5));
        assert!((got[1].mean - 0.8).abs() < 1e-12);
        assert_eq!((got[1].low, got[1].high), (0.7, 0.9));
        assert_eq!(got[2], point(3.0, 0.8, 0.8, 0.8));
        assert!(band(&[&a], "train/loss").is_empty());
    }
}
