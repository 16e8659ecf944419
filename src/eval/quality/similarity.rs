//! Which class does a synthetic image resemble? The confusion matrix of conditioning label × reference prediction,
//! the K×K inter-class Fréchet matrix, and a heatmap picture for both.
//!
//! Why both: the confusion matrix says what the reference classifier *decides* for each image (sharp, per sample);
//! the Fréchet matrix compares whole distributions — entry (i, j) = FD(real class i, synthetic class j) — so it also
//! shows a class whose samples are "between" two real classes. For a good conditional generator the diagonal is the
//! smallest entry of each column: what was generated for class j is closest to real class j.
//!
//! The heatmap follows the `plots` rules: the embedded font (no system fonts in slim images), every failure is an
//! error rather than a lost run, and a panic inside the plotting library is caught.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::frechet::class_frechet;
use super::{class_indices, QualityError};
use crate::federation::checkpoint::write_atomic;
use crate::util::draw::{rasterize, DrawError, FAMILY};

/// Size of every heatmap PNG.
pub const HEATMAP_WIDTH: u32 = 900;
pub const HEATMAP_HEIGHT: u32 = 760;

/// Counts of synthetic samples: row = conditioning label, column = reference prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub counts: Vec<Vec<usize>>,
}

impl ConfusionMatrix {
    /// Each row divided by its sum (a row with no samples stays 0).
    pub fn row_normalized(&self) -> Vec<Vec<f64>> {
        self.counts
            .iter()
            .map(|row| {
                let s = row.iter().sum::<usize>().max(1) as f64;
                row.iter().map(|&c| c as f64 / s).collect()
            })
            .collect()
    }
}

/// Confusion matrix of conditioning labels × predicted classes (entries outside 0..k are ignored).
pub fn confusion_matrix(conditioning: &[i64], predictions: &[usize], k: usize) -> ConfusionMatrix {
    let mut counts = vec![vec![0usize; k]; k];
    for (&c, &p) in conditioning.iter().zip(predictions) {
        if let Some(cell) = usize::try_from(c).ok().and_then(|c| counts.get_mut(c)).and_then(|row| row.get_mut(p)) {
            *cell += 1;
        }
    }
    ConfusionMatrix { counts }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterClassFrechet {
    /// matrix[i][j] = FD(real class i, synthetic class j); None where a side has fewer than 2 samples.
    pub matrix: Vec<Vec<Option<f64>>>,
    /// Per synthetic class j: is matrix[j][j] the smallest value of column j (None when undefined)?
    pub diagonal_smallest: Vec<Option<bool>>,
    /// Share of the defined columns whose diagonal is smallest.
    pub diagonal_smallest_share: Option<f64>,
}

/// The K×K matrix of FD(real class i, synthetic class j).
pub fn inter_class_frechet(
    real: &Tensor,
    real_labels: &[i64],
    synth: &Tensor,
    synth_labels: &[i64],
    k: usize,
) -> Result<InterClassFrechet, QualityError> {
    let (real_by, syn_by) = (class_indices(real_labels, k), class_indices(synth_labels, k));
    let mut matrix = vec![vec![None; k]; k];
    for (i, row) in matrix.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = class_frechet(real, &real_by[i], synth, &syn_by[j])?.ok();
        }
    }
    let diagonal_smallest: Vec<Option<bool>> = (0..k)
        .map(|j| {
            let diag = matrix[j][j]?;
            Some((0..k).filter_map(|i| matrix[i][j]).all(|v| diag <= v))
        })
        .collect();
    let defined: Vec<bool> = diagonal_smallest.iter().flatten().copied().collect();
    let diagonal_smallest_share =
        (!defined.is_empty()).then(|| defined.iter().filter(|&&b| b).count() as f64 / defined.len() as f64);
    Ok(InterClassFrechet { matrix, diagonal_smallest, diagonal_smallest_share })
}

/// Writes [`heatmap_png_bytes`] to `path` atomically (the directory must exist). Returns the path.
pub fn heatmap_png(matrix: &[Vec<f64>], labels: &[String], title: &str, path: &Path) -> Result<PathBuf, QualityError> {
    let png = heatmap_png_bytes(matrix, labels, title)?;
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| QualityError::Input {
        what: "heatmap path".into(),
        detail: format!("{} has no file name", path.display()),
    })?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(write_atomic(dir, name, &png)?)
}

/// A K×K heatmap (rows and columns both labelled by `labels`) as a [`HEATMAP_WIDTH`]×[`HEATMAP_HEIGHT`] PNG. Cells
/// are coloured on a viridis-like scale between the smallest and largest finite value, with the value written in
/// when cells are large enough; non-finite cells are grey.
pub fn heatmap_png_bytes(matrix: &[Vec<f64>], labels: &[String], title: &str) -> Result<Vec<u8>, QualityError> {
    let k = labels.len();
    if k == 0 || matrix.len() != k || matrix.iter().any(|row| row.len() != k) {
        let shape: Vec<usize> = matrix.iter().map(Vec::len).collect();
        return Err(QualityError::Input {
            what: "heatmap matrix".into(),
            detail: format!("must be {k}×{k} to match the {k} labels, got rows of lengths {shape:?}"),
        });
    }
    let plot = || title.chars().take(40).collect::<String>();
    rasterize("heatmap", HEATMAP_WIDTH, HEATMAP_HEIGHT, |rgb| draw_heatmap(rgb, matrix, labels, title)).map_err(|e| {
        match e {
            DrawError::Draw { detail, .. } => QualityError::Draw { plot: plot(), detail },
            DrawError::Encode { source, .. } => {
                QualityError::Draw { plot: plot(), detail: format!("PNG encoding: {source}") }
            }
            DrawError::Font => QualityError::Font,
        }
    })
}

/// Viridis, sampled at 5 points and interpolated linearly.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 5] = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let x = t * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn fit(label: &str, max_chars: usize) -> String {
    let max_chars = max_chars.max(1);
    if label.chars().count() <= max_chars {
        label.to_string()
    } else {
        let mut s: String = label.chars().take(max_chars.saturating_sub(1).max(1)).collect();
        s.push('…');
        s
    }
}

fn format_value(v: f64, integers: bool) -> String {
    if !v.is_finite() {
        "–".into()
    } else if integers || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn draw_heatmap(rgb: &mut [u8], matrix: &[Vec<f64>], labels: &[String], title: &str) -> Result<(), String> {
    let (w, h) = (HEATMAP_WIDTH as i32, HEATMAP_HEIGHT as i32);
    let k = labels.len() as i32;
    let (left, top, right, bottom) = (180, 64, 130, 70);
    let (gw, gh) = (w - left - right, h - top - bottom);
    let (cw, ch) = (f64::from(gw) / f64::from(k), f64::from(gh) / f64::from(k));
    let finite: Vec<f64> = matrix.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let integers = finite.iter().all(|v| v.fract() == 0.0);
    let scale = |v: f64| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };

    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(rgb, (HEATMAP_WIDTH, HEATMAP_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let text = |size: i32, color: RGBColor, pos: Pos| TextStyle {
        font: (FAMILY, size).into_font(),
        color: color.to_backend_color(),
        pos,
    };
    let centre = Pos::new(HPos::Center, VPos::Center);
    root.draw(&Text::new(fit(title, 90), (w / 2, 28), text(18, BLACK, centre))).map_err(|e| err(&e))?;

    let show_values = cw >= 34.0 && ch >= 16.0;
    let value_size = (ch * 0.4).clamp(10.0, 16.0) as i32;
    for (i, row) in matrix.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let x0 = left + (j as f64 * cw).round() as i32;
            let x1 = left + ((j + 1) as f64 * cw).round() as i32;
            let y0 = top + (i as f64 * ch).round() as i32;
            let y1 = top + ((i + 1) as f64 * ch).round() as i32;
            let (fill, ink) = if v.is_finite() {
                let t = scale(v);
                (viridis(t), if t > 0.6 { BLACK } else { WHITE })
            } else {
                (RGBColor(200, 200, 200), BLACK)
            };
            root.draw(&Rectangle::new([(x0, y0), (x1, y1)], fill.filled())).map_err(|e| err(&e))?;
            if show_values {
                let label = format_value(v, integers);
                let style = text(value_size, ink, centre);
                root.draw(&Text::new(label, ((x0 + x1) / 2, (y0 + y1) / 2), style)).map_err(|e| err(&e))?;
            }
        }
    }
    let label_size = (ch * 0.5).clamp(9.0, 14.0) as i32;
    let row_style = text(label_size, BLACK, Pos::new(HPos::Right, VPos::Center));
    let col_style = text(label_size, BLACK, Pos::new(HPos::Center, VPos::Top));
    let col_chars = (cw / (f64::from(label_size) * 0.6)) as usize;
    for (i, name) in labels.iter().enumerate() {
        let y = top + ((i as f64 + 0.5) * ch).round() as i32;
        root.draw(&Text::new(fit(name, 22), (left - 8, y), row_style.clone())).map_err(|e| err(&e))?;
        let x = left + ((i as f64 + 0.5) * cw).round() as i32;
        let col = if col_chars >= 3 { fit(name, col_chars) } else { i.to_string() };
        root.draw(&Text::new(col, (x, top + gh + 6), col_style.clone())).map_err(|e| err(&e))?;
    }
    // Colour bar with its extreme values.
    let (bx0, bx1) = (w - right + 24, w - right + 44);
    let steps = 64;
    for s in 0..steps {
        let y0 = top + gh * s / steps;
        let y1 = top + gh * (s + 1) / steps;
        let color = viridis(1.0 - f64::from(s) / f64::from(steps - 1));
        root.draw(&Rectangle::new([(bx0, y0), (bx1, y1)], color.filled())).map_err(|e| err(&e))?;
    }
    if !finite.is_empty() {
        let tick = text(12, BLACK, Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(format_value(hi, integers), (bx1 + 6, top + 6), tick.clone())).map_err(|e| err(&e))?;
        root.draw(&Text::new(format_value(lo, integers), (bx1 + 6, top + gh - 6), tick)).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
