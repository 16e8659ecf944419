//! Curves of a run as PNG images: GAN losses per round (global means and each site's discriminator loss) and the
//! Fréchet distance per evaluated round. `report::html` embeds them; `histofed` can also write them next to
//! `report.json`.
//!
//! The font and the canvas are `util::draw`'s (embedded DejaVu Sans, so a slim image without fontconfig still
//! draws).
//!
//! Plotting is best-effort reporting, never a reason to lose a run: every failure is a [`PlotError`], non-finite
//! values (a diverged round) are left out of the curves, and a panic inside the plotting library is caught and
//! returned as an error.

use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use thiserror::Error;

use crate::federation::checkpoint::{write_atomic, CheckpointError};
use crate::records::RunReport;
use crate::util::draw::{rasterize, DrawError, FAMILY};

pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 480;
/// Per-site line colours (a muted categorical palette without the blue and red of the means).
const SITE_COLORS: [RGBColor; 8] = [
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Per-site curves get a legend entry each up to this many sites, then one entry for all.
const MAX_SITE_LEGEND: usize = 8;

#[derive(Debug, Error)]
pub enum PlotError {
    #[error(transparent)]
    Draw(#[from] DrawError),
    #[error("plot output path {0} has no file name")]
    InvalidPath(PathBuf),
    #[error("writing plot: {0}")]
    Write(#[from] CheckpointError),
}

/// Mean D and G loss per round, and each site's D loss as a thin line, as PNG bytes. `None` when no round has a
/// finite loss to show.
pub fn loss_curves_png_bytes(report: &RunReport) -> Result<Option<Vec<u8>>, PlotError> {
    let mean_d = series(report.rounds.iter().map(|r| (r.round, r.mean_losses.d_loss)));
    let mean_g = series(report.rounds.iter().map(|r| (r.round, r.mean_losses.g_loss)));
    let mut sites: std::collections::BTreeMap<u32, Vec<(f64, f64)>> = std::collections::BTreeMap::new();
    for r in &report.rounds {
        for c in &r.contributors {
            sites.entry(c.site_id).or_default().extend(series([(r.round, c.losses.d_loss)]));
        }
    }
    sites.retain(|_, points| !points.is_empty());
    if mean_d.is_empty() && mean_g.is_empty() && sites.is_empty() {
        return Ok(None);
    }
    let mut lines = vec![
        Line { label: Some("mean D loss".into()), points: mean_d, color: BLUE.to_rgba(), width: 3, markers: true },
        Line { label: Some("mean G loss".into()), points: mean_g, color: RED.to_rgba(), width: 3, markers: true },
    ];
    let many = sites.len() > MAX_SITE_LEGEND;
    let per_site: Vec<Line> = sites
        .into_iter()
        .enumerate()
        .map(|(i, (site, points))| Line {
            label: match (many, i) {
                (false, _) => Some(format!("site {site} D loss")),
                (true, 0) => Some("per-site D loss".into()),
                (true, _) => None,
            },
            points,
            color: SITE_COLORS[i % SITE_COLORS.len()].mix(0.75),
            width: 1,
            markers: false,
        })
        .collect();
    // Site lines first, so the means are drawn on top.
    lines.splice(0..0, per_site);
    let title = format!("{} — GAN losses per round", short(&report.run));
    render("loss", &title, "loss", &lines).map(Some)
}

/// Fréchet distance per evaluated round, as PNG bytes. `None` when no round has a finite value.
pub fn frechet_png_bytes(report: &RunReport) -> Result<Option<Vec<u8>>, PlotError> {
    let points = series(report.rounds.iter().filter_map(|r| r.frechet_distance.map(|fd| (r.round, fd))));
    if points.is_empty() {
        return Ok(None);
    }
    let lines = [Line { label: None, points, color: RGBColor(0, 110, 60).to_rgba(), width: 3, markers: true }];
    let title = format!("{} — Fréchet distance of the global generator", short(&report.run));
    render("Fréchet distance", &title, "Fréchet distance", &lines).map(Some)
}

/// Writes [`loss_curves_png_bytes`] to `path` atomically; `Ok(None)` (nothing written) when there is nothing to plot.
pub fn loss_curves_png(report: &RunReport, path: &Path) -> Result<Option<PathBuf>, PlotError> {
    loss_curves_png_bytes(report)?.map(|png| write_to(path, &png)).transpose()
}

/// Writes [`frechet_png_bytes`] to `path` atomically; `Ok(None)` (nothing written) when no round has a value.
pub fn frechet_png(report: &RunReport, path: &Path) -> Result<Option<PathBuf>, PlotError> {
    frechet_png_bytes(report)?.map(|png| write_to(path, &png)).transpose()
}

fn write_to(path: &Path, png: &[u8]) -> Result<PathBuf, PlotError> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| PlotError::InvalidPath(path.to_path_buf()))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(write_atomic(dir, name, png)?)
}

struct Line {
    label: Option<String>,
    points: Vec<(f64, f64)>,
    color: RGBAColor,
    width: u32,
    markers: bool,
}

/// Finite points only, rounds as plot coordinates.
fn series(points: impl IntoIterator<Item = (u64, f64)>) -> Vec<(f64, f64)> {
    points.into_iter().filter(|(_, v)| v.is_finite()).map(|(r, v)| (r as f64, v)).collect()
}

fn short(run: &str) -> String {
    let mut s: String = run.chars().take(60).collect();
    if run.chars().count() > 60 {
        s.push('…');
    }
    if s.is_empty() {
        "run".into()
    } else {
        s
    }
}

/// Draws `lines` on one chart and encodes it as PNG.
fn render(plot: &'static str, title: &str, y_desc: &str, lines: &[Line]) -> Result<Vec<u8>, PlotError> {
    Ok(rasterize(plot, WIDTH, HEIGHT, |rgb| draw(rgb, title, y_desc, lines))?)
}

fn draw(rgb: &mut [u8], title: &str, y_desc: &str, lines: &[Line]) -> Result<(), String> {
    let all = lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        (x0, x1) = (x0.min(x), x1.max(x));
        (y0, y1) = (y0.min(y), y1.max(y));
    }
    if !(x0.is_finite() && x1.is_finite() && y0.is_finite() && y1.is_finite()) {
        return Err("no finite points".into());
    }
    // Rounds are integers: pad the x range so the end markers are not clipped, and label whole rounds only.
    let rounds = x1 - x0 + 1.0;
    let (x0, x1) = (x0 - 0.35, x1 + 0.35);
    let span = y1 - y0;
    let pad = if span > 0.0 && span.is_finite() { span * 0.06 } else { y0.abs().max(1.0) * 0.1 };
    let (y0, y1) = (y0 - pad, y1 + pad);

    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = frame(&root, title, x0..x1, y0..y1)?;
    let x_labels = if rounds < 12.0 { rounds as usize + 1 } else { 12 };
    let whole = |v: &f64| if (v - v.round()).abs() < 1e-6 { format!("{:.0}", v.round()) } else { String::new() };
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc(y_desc)
        .x_labels(x_labels)
        .x_label_formatter(&whole)
        .y_labels(8)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&e))?;
    let mut any_label = false;
    for line in lines.iter().filter(|l| !l.points.is_empty()) {
        let style = ShapeStyle { color: line.color, filled: true, stroke_width: line.width };
        let series = chart.draw_series(LineSeries::new(line.points.iter().copied(), style)).map_err(|e| err(&e))?;
        if let Some(label) = &line.label {
            any_label = true;
            series.label(label.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        }
        if line.markers {
            chart
                .draw_series(line.points.iter().map(|&p| Circle::new(p, 3, line.color.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    if any_label {
        legend(&mut chart)?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The frame every chart here shares: title, margins, label areas, f64 axes.
fn frame<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, 'b>, String> {
    ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(|e| e.to_string())
}

/// The series legend, upper right, on a light box.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<(), String> {
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())
}

/// One named series of a grouped bar chart: one value per group (non-finite values are left out).
pub struct BarSeries {
    pub label: String,
    pub values: Vec<f64>,
}

/// A grouped bar chart (e.g. one group per model, one bar per setting) written atomically to `path` as PNG.
pub fn grouped_bars_png(
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[BarSeries],
    path: &Path,
) -> Result<PathBuf, PlotError> {
    let png = rasterize("bar", WIDTH, HEIGHT, |rgb| draw_bars(rgb, title, y_desc, groups, series))?;
    write_to(path, &png)
}

fn draw_bars(rgb: &mut [u8], title: &str, y_desc: &str, groups: &[String], series: &[BarSeries]) -> Result<(), String> {
    let values = series.iter().flat_map(|s| s.values.iter().copied()).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if groups.is_empty() || series.is_empty() {
        return Err("nothing to plot".into());
    }
    let pad = ((hi - lo) * 0.08).max(1e-6);
    // Headroom above the tallest bar for the legend.
    let (y0, y1) = (if lo < 0.0 { lo - pad } else { 0.0 }, hi + 4.0 * pad);
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let n = groups.len();
    let mut chart = frame(&root, title, 0f64..n as f64, y0..y1)?;
    let names = groups.to_vec();
    let label = move |v: &f64| {
        let i = v.floor();
        if (v - i - 0.5).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&label)
        .y_desc(y_desc)
        .y_labels(8)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&e))?;
    let width = 0.8 / series.len() as f64;
    for (k, s) in series.iter().enumerate() {
        let color = SITE_COLORS[k % SITE_COLORS.len()];
        let bars = s.values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(g, &v)| {
            let x = g as f64 + 0.1 + k as f64 * width;
            Rectangle::new([(x, 0.0f64.max(y0)), (x + width * 0.92, v)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| err(&e))?
            .label(s.label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    legend(&mut chart)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::LossSummary;
    use crate::records::{RoundRecord, SiteRound};

    pub(crate) fn synthetic_report(rounds: u64, sites: u32) -> RunReport {
        let mut rep = RunReport { run: "plots-test".into(), rounds_configured: rounds, ..Default::default() };
        for r in 1..=rounds {
            let contributors = (0..sites)
                .map(|s| SiteRound {
                    site_id: s,
                    losses: LossSummary { d_loss: 1.0 / r as f64 + 0.1 * f64::from(s), g_loss: 2.0 - 0.1 * r as f64 },
                    ..Default::default()
                })
                .collect();
            rep.rounds.push(RoundRecord {
                round: r,
                attempts: 1,
                contributors,
                mean_losses: LossSummary { d_loss: 1.0 / r as f64, g_loss: 2.0 - 0.1 * r as f64 },
                frechet_distance: (r % 2 == 1).then(|| 100.0 / r as f64),
                ..Default::default()
            });
        }
        rep
    }

    /// Decodes a PNG and checks it has the plot's size and real content: many non-white pixels in several colours.
    pub(crate) fn assert_real_plot(png: &[u8]) {
        let img = image::load_from_memory_with_format(png, image::ImageFormat::Png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        assert!(non_white > 2_000, "only {non_white} non-white pixels");
        assert!(colours.len() > 20, "only {} colours", colours.len());
    }

    #[test]
    fn writes_decodable_non_blank_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let mut rep = synthetic_report(5, 3);
        rep.rounds[2].mean_losses.d_loss = f64::NAN; // a diverged round is left out, not an error
        let loss = loss_curves_png(&rep, &dir.path().join("loss.png")).unwrap().unwrap();
        let fd = frechet_png(&rep, &dir.path().join("fd.png")).unwrap().unwrap();
        for path in [loss, fd] {
            assert_real_plot(&std::fs::read(path).unwrap());
        }
        // Text is really rendered: the caption row holds dark anti-aliased glyph pixels.
        let img = image::load_from_memory(&std::fs::read(dir.path().join("loss.png")).unwrap()).unwrap().to_rgb8();
        let caption_dark = (0..WIDTH)
            .flat_map(|x| (0..48).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 120))
            .count();
        assert!(caption_dark > 100, "caption not drawn ({caption_dark} dark pixels)");
    }

    #[test]
    fn nothing_to_plot_is_none_and_single_round_and_many_sites_work() {
        let mut rep = synthetic_report(4, 2);
        for r in &mut rep.rounds {
            r.frechet_distance = None;
        }
        assert!(frechet_png_bytes(&rep).unwrap().is_none());
        assert!(loss_curves_png_bytes(&RunReport::default()).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        assert!(frechet_png(&rep, &dir.path().join("fd.png")).unwrap().is_none());
        assert!(!dir.path().join("fd.png").exists());

        assert_real_plot(&loss_curves_png_bytes(&synthetic_report(1, 1)).unwrap().unwrap());
        assert_real_plot(&frechet_png_bytes(&synthetic_report(1, 1)).unwrap().unwrap());
        assert_real_plot(&loss_curves_png_bytes(&synthetic_report(3, 20)).unwrap().unwrap());
        let mut flat = synthetic_report(3, 1);
        for r in &mut flat.rounds {
            r.mean_losses = LossSummary { d_loss: 0.5, g_loss: 0.5 };
            r.contributors.clear();
        }
        assert_real_plot(&loss_curves_png_bytes(&flat).unwrap().unwrap());
    }
}
