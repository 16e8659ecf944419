//! Mode collapse: diversity inside each class, and coverage of the classes.
//!
//! Why two views: a collapsed conditional generator either produces nearly the same image for a class (within-class
//! collapse: its samples' mean pairwise feature distance is much smaller than the real class's, ratio ≪ 1), or emits
//! images of a few classes whatever label it is given (between-class collapse: the reference classifier's
//! predictions on synthetic images pile up on those classes). The second is measured against what the generator
//! was *asked* for — the histogram of conditioning labels — so an imbalanced request is not mistaken for collapse.
//!
//! Why a layout view beside the feature view: the reference classifier's features are trained to be invariant to
//! where things are in a tile, and generated images that sit off the real manifold spread out in that space. A
//! generator that draws the same arrangement for every noise vector of a class — the rows of a grid repeating one
//! picture with small colour changes — then scores a feature ratio near or above 1. The layout view compares the
//! images themselves (pooled pixels), each centred per channel and scaled to unit contrast, so neither colour nor
//! contrast counts: two real tiles of a class are nearly uncorrelated (distance ≈ √2), two samples of one repeated
//! layout are close. Images with less than [`LAYOUT_CONTRAST_FLOOR`] of the real class's mean contrast are not
//! scaled up to unit contrast (flat squares are not "diverse layouts"), they stay near the origin and near each other.
//!
//! Why a texture view as well: a generator can also repeat one motif at different places in each sample; those
//! samples are nearly uncorrelated pixel by pixel, so the layout view reads them as diverse. The texture view
//! compares the amplitudes of the layout vectors' 2-D Fourier transforms, which a shift does not change.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::distances::mean_pairwise_distance;
use super::{class_indices, guard, positive_ratio, select_rows, QualityError, QualityOptions};

/// Share of the real class's mean contrast (norm of the channel-centred image) below which an image is not scaled
/// up to unit contrast in the layout view.
pub const LAYOUT_CONTRAST_FLOOR: f64 = 0.2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassDiversity {
    pub class: usize,
    pub name: String,
    pub real_count: usize,
    pub synthetic_count: usize,
    /// Mean pairwise feature distance among the class's real samples.
    pub real_mean_distance: Option<f64>,
    /// Mean pairwise feature distance among the samples generated for the class.
    pub synthetic_mean_distance: Option<f64>,
    /// synthetic / real; ≪ 1 means collapse, ≈ 1 real-like variety.
    pub ratio: Option<f64>,
    /// Layout view (pooled pixels, per-image centred and contrast-normalised): mean pairwise distance among the
    /// class's real images, and among its synthetic ones (absent without pixels).
    #[serde(default)]
    pub real_layout_distance: Option<f64>,
    #[serde(default)]
    pub synthetic_layout_distance: Option<f64>,
    /// synthetic / real in the layout view; ≪ 1 means the samples repeat one arrangement.
    #[serde(default)]
    pub layout_ratio: Option<f64>,
    /// synthetic / real in the texture view (the layout vectors' Fourier amplitudes, blind to where things are):
    /// ≪ 1 when the samples repeat one motif even at shifted places. Reported, not part of `collapsed`: it has not
    /// yet been compared with what people see on enough grids.
    #[serde(default)]
    pub texture_ratio: Option<f64>,
    /// The feature or the layout ratio below the collapse ratio.
    pub collapsed: bool,
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiversityReport {
    pub per_class: Vec<ClassDiversity>,
    /// Ratio below which a class counts as collapsed.
    pub collapse_ratio: f64,
    pub collapsed_classes: Vec<usize>,
    /// Mean ratio over classes that have one.
    pub mean_ratio: Option<f64>,
    /// Mean layout ratio over classes that have one (absent without pixels).
    #[serde(default)]
    pub mean_layout_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// How many synthetic images the reference classifier assigns to each class.
    pub predicted_histogram: Vec<usize>,
    /// How many synthetic images were conditioned on each class.
    pub requested_histogram: Vec<usize>,
    pub min_fraction: f64,
    /// Per class: predicted share ≥ min_fraction × requested share (None for classes never requested).
    pub covered: Vec<Option<bool>>,
    /// Share of the requested classes that are covered.
    pub covered_share: f64,
    /// Share of synthetic images whose predicted class equals their conditioning label.
    pub agreement: f64,
    /// Agreement per conditioning class (None for classes never requested).
    pub per_class_agreement: Vec<Option<f64>>,
}

/// At most `max` indices, evenly spaced over `idx` (deterministic).
fn subsample(idx: &[i64], max: usize) -> Vec<i64> {
    if idx.len() <= max {
        return idx.to_vec();
    }
    (0..max).map(|i| idx[i * idx.len() / max]).collect()
}

/// Images [N,3,H,W] centred per channel (f64, same shape).
fn centred(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Double);
    &x - x.mean_dim([2i64, 3].as_slice(), true, Kind::Double)
}

/// The contrast of each centred image: its norm → [N, 1, 1, 1].
fn contrast(centred: &Tensor) -> Tensor {
    centred.norm_scalaropt_dim(2, [1i64, 2, 3].as_slice(), true)
}

/// Layout images [N,3,H,W] as texture vectors: their per-channel 2-D Fourier amplitudes, which a circular shift
/// leaves unchanged (and a motif moved inside the tile nearly so) → [N, 3·H·(W/2+1)] (f64).
fn texture_vectors(layout: &Tensor) -> Tensor {
    layout.fft_rfft2(None::<&[i64]>, [-2i64, -1].as_slice(), "ortho").abs().flatten(1, -1)
}

/// Mean pairwise distances of one class's real and synthetic images in one view.
#[derive(Debug, Clone, Copy, Default)]
struct ViewDistances {
    real: Option<f64>,
    synthetic: Option<f64>,
}

/// Real and synthetic images of one class in the layout view and the texture view.
fn pixel_view_distances(
    real: &Tensor,
    synth: &Tensor,
    chunk: usize,
) -> Result<(ViewDistances, ViewDistances), QualityError> {
    let (rc, sc) = guard("centring", || Ok((centred(real), centred(synth))))?;
    let real_contrast = guard("layout contrast", || Ok(contrast(&rc)))?;
    let floor = LAYOUT_CONTRAST_FLOOR * real_contrast.mean(Kind::Double).double_value(&[]);
    if floor <= 0.0 {
        let flat = ViewDistances { real: Some(0.0), synthetic: None };
        return Ok((flat, flat));
    }
    // Each image divided by its contrast or by the floor, whichever is larger: the layout images [N,3,H,W].
    let (r, s) =
        guard("layout vectors", || Ok((rc / real_contrast.clamp_min(floor), &sc / contrast(&sc).clamp_min(floor))))?;
    let (rt, st) = guard("texture vectors", || Ok((texture_vectors(&r), texture_vectors(&s))))?;
    let (r, s) = (r.flatten(1, -1), s.flatten(1, -1));
    let layout =
        ViewDistances { real: mean_pairwise_distance(&r, chunk)?, synthetic: mean_pairwise_distance(&s, chunk)? };
    let texture =
        ViewDistances { real: mean_pairwise_distance(&rt, chunk)?, synthetic: mean_pairwise_distance(&st, chunk)? };
    Ok((layout, texture))
}

/// Real and synthetic pooled pixels [N,3,H,W] for the layout view of [`class_diversity`], row-aligned with the
/// features.
#[derive(Debug, Clone, Copy)]
pub struct LayoutPixels<'a> {
    pub real: &'a Tensor,
    pub synthetic: &'a Tensor,
}

/// Per-class mean pairwise distance of synthetic vs real features, and in the layout view when `pixels` are given.
/// `names` has one entry per class.
pub fn class_diversity(
    real: &Tensor,
    real_labels: &[i64],
    synth: &Tensor,
    synth_labels: &[i64],
    pixels: Option<LayoutPixels<'_>>,
    names: &[String],
    opts: &QualityOptions,
) -> Result<DiversityReport, QualityError> {
    let k = names.len();
    let (real_by, syn_by) = (class_indices(real_labels, k), class_indices(synth_labels, k));
    let mut per_class = Vec::with_capacity(k);
    for (class, name) in names.iter().enumerate() {
        let (ridx, sidx) = (
            subsample(&real_by[class], opts.max_diversity_samples),
            subsample(&syn_by[class], opts.max_diversity_samples),
        );
        let enough = ridx.len() >= 2 && sidx.len() >= 2;
        let (real_mean_distance, synthetic_mean_distance) = if enough {
            (
                mean_pairwise_distance(&select_rows(real, &ridx)?, opts.chunk_size)?,
                mean_pairwise_distance(&select_rows(synth, &sidx)?, opts.chunk_size)?,
            )
        } else {
            (None, None)
        };
        let (layout, texture) = match pixels {
            Some(p) if enough => {
                pixel_view_distances(&select_rows(p.real, &ridx)?, &select_rows(p.synthetic, &sidx)?, opts.chunk_size)?
            }
            _ => Default::default(),
        };
        let ratio = positive_ratio(synthetic_mean_distance, real_mean_distance);
        let layout_ratio = positive_ratio(layout.synthetic, layout.real);
        let skipped = if !enough {
            Some(format!(
                "needs at least 2 samples per side, has {} real and {} synthetic",
                real_by[class].len(),
                syn_by[class].len()
            ))
        } else if ratio.is_none() {
            Some("the real samples of this class are all identical".to_string())
        } else {
            None
        };
        let below = |r: Option<f64>| r.is_some_and(|r| r < opts.collapse_ratio);
        per_class.push(ClassDiversity {
            class,
            name: name.clone(),
            real_count: real_by[class].len(),
            synthetic_count: syn_by[class].len(),
            real_mean_distance,
            synthetic_mean_distance,
            ratio,
            real_layout_distance: layout.real,
            synthetic_layout_distance: layout.synthetic,
            layout_ratio,
            texture_ratio: positive_ratio(texture.synthetic, texture.real),
            collapsed: below(ratio) || below(layout_ratio),
            skipped,
        });
    }
    let collapsed_classes = per_class.iter().filter(|c| c.collapsed).map(|c| c.class).collect();
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let mean_ratio = mean(per_class.iter().filter_map(|c| c.ratio).collect());
    let mean_layout_ratio = mean(per_class.iter().filter_map(|c| c.layout_ratio).collect());
    Ok(DiversityReport {
        per_class,
        collapse_ratio: opts.collapse_ratio,
        collapsed_classes,
        mean_ratio,
        mean_layout_ratio,
    })
}

/// Class coverage from the reference classifier's predictions on synthetic images and their conditioning labels
/// (both in 0..k; labels outside are ignored).
pub fn class_coverage(predictions: &[usize], conditioning: &[i64], k: usize, min_fraction: f64) -> Coverage {
    let mut predicted_histogram = vec![0usize; k];
    let mut requested_histogram = vec![0usize; k];
    let mut agree = vec![0usize; k];
    let mut counted = 0usize;
    for (&p, &c) in predictions.iter().zip(conditioning) {
        let Some(c) = usize::try_from(c).ok().filter(|&c| c < k) else { continue };
        counted += 1;
        requested_histogram[c] += 1;
        if let Some(h) = predicted_histogram.get_mut(p) {
            *h += 1;
        }
        if p == c {
            agree[c] += 1;
        }
    }
    let total = counted.max(1) as f64;
    let covered: Vec<Option<bool>> = (0..k)
        .map(|c| {
            (requested_histogram[c] > 0)
                .then(|| predicted_histogram[c] as f64 / total >= min_fraction * requested_histogram[c] as f64 / total)
        })
        .collect();
    let requested = covered.iter().flatten().count();
    let covered_share = covered.iter().flatten().filter(|&&b| b).count() as f64 / requested.max(1) as f64;
    let per_class_agreement =
        (0..k).map(|c| (requested_histogram[c] > 0).then(|| agree[c] as f64 / requested_histogram[c] as f64)).collect();
    Coverage {
        agreement: agree.iter().sum::<usize>() as f64 / total,
        predicted_histogram,
        requested_histogram,
        min_fraction,
        covered,
        covered_share,
        per_class_agreement,
    }
}
