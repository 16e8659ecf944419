//! Mode collapse: diversity inside each class, and coverage of the classes.
//!
//! Why two views: a collapsed conditional generator either produces nearly the same image for a class (within-class
//! collapse: its samples' mean pairwise feature distance is much smaller than the real class's, ratio ≪ 1), or emits
//! images of a few classes whatever label it is given (between-class collapse: the reference classifier's
//! predictions on synthetic images pile up on those classes). The second is measured against what the generator
//! was *asked* for — the histogram of conditioning labels — so an imbalanced request is not mistaken for collapse.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::distances::mean_pairwise_distance;
use super::{class_indices, select_rows, QualityError, QualityOptions};

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

/// Per-class mean pairwise distance of synthetic vs real features. `names` has one entry per class.
pub fn class_diversity(
    real: &Tensor,
    real_labels: &[i64],
    synth: &Tensor,
    synth_labels: &[i64],
    names: &[String],
    opts: &QualityOptions,
) -> Result<DiversityReport, QualityError> {
    let k = names.len();
    let (real_by, syn_by) = (class_indices(real_labels, k), class_indices(synth_labels, k));
    let mut per_class = Vec::with_capacity(k);
    for (class, name) in names.iter().enumerate() {
        let mean = |x: &Tensor, idx: &[i64]| -> Result<Option<f64>, QualityError> {
            if idx.len() < 2 {
                return Ok(None);
            }
            mean_pairwise_distance(&select_rows(x, &subsample(idx, opts.max_diversity_samples))?, opts.chunk_size)
        };
        let real_mean_distance = mean(real, &real_by[class])?;
        let synthetic_mean_distance = mean(synth, &syn_by[class])?;
        let (ratio, skipped) = match (real_mean_distance, synthetic_mean_distance) {
            (Some(r), Some(s)) if r > 0.0 => (Some(s / r), None),
            (Some(_), Some(_)) => (None, Some("the real samples of this class are all identical".to_string())),
            _ => (
                None,
                Some(format!(
                    "needs at least 2 samples per side, has {} real and {} synthetic",
                    real_by[class].len(),
                    syn_by[class].len()
                )),
            ),
        };
        per_class.push(ClassDiversity {
            class,
            name: name.clone(),
            real_count: real_by[class].len(),
            synthetic_count: syn_by[class].len(),
            real_mean_distance,
            synthetic_mean_distance,
            ratio,
            collapsed: ratio.is_some_and(|r| r < opts.collapse_ratio),
            skipped,
        });
    }
    let collapsed_classes = per_class.iter().filter(|c| c.collapsed).map(|c| c.class).collect();
    let ratios: Vec<f64> = per_class.iter().filter_map(|c| c.ratio).collect();
    let mean_ratio = (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64);
    Ok(DiversityReport { per_class, collapse_ratio: opts.collapse_ratio, collapsed_classes, mean_ratio })
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
