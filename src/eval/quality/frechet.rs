//! Fréchet distance between real and synthetic features: overall and per class.
//!
//! Why per class: a conditional generator can reach a good overall FD by producing the right mixture of images with
//! the wrong labels, or by being excellent on the frequent classes and poor on a rare one. Comparing real class k
//! with the images generated *for* class k exposes both. The distance itself is `models::frechet_distance` (f64,
//! eigh-based); a class with fewer than 2 samples on either side has no covariance and is skipped with a reason
//! rather than failing the whole report. Per-class values from few samples are biased upwards (FD's known
//! small-sample bias), so compare them across generators evaluated with the same counts, not across counts.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{class_indices, select_rows, QualityError};
use crate::models::frechet_distance;

/// FD of one class (or a pair of classes in the inter-class matrix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassFrechet {
    pub class: usize,
    pub name: String,
    pub real_count: usize,
    pub synthetic_count: usize,
    /// None when skipped.
    pub frechet_distance: Option<f64>,
    /// Why the class was skipped.
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrechetReport {
    /// All real vs all synthetic samples.
    pub overall: f64,
    pub per_class: Vec<ClassFrechet>,
    /// Mean over the classes that have a value.
    pub mean_per_class: Option<f64>,
    /// The class with the largest per-class FD.
    pub worst_class: Option<usize>,
}

/// FD between the real rows `real_idx` and the synthetic rows `synth_idx` (e.g. one class each), or the reason it
/// is skipped (fewer than 2 rows on a side).
pub fn class_frechet(
    real: &Tensor,
    real_idx: &[i64],
    synth: &Tensor,
    synth_idx: &[i64],
) -> Result<Result<f64, String>, QualityError> {
    if real_idx.len() < 2 || synth_idx.len() < 2 {
        return Ok(Err(format!(
            "needs at least 2 samples per side, has {} real and {} synthetic",
            real_idx.len(),
            synth_idx.len()
        )));
    }
    let fd = frechet_distance(&select_rows(real, real_idx)?, &select_rows(synth, synth_idx)?)?;
    Ok(Ok(fd))
}

/// Overall and per-class FD. `names` has one entry per class (its length is the number of classes).
pub fn frechet_report(
    real: &Tensor,
    real_labels: &[i64],
    synth: &Tensor,
    synth_labels: &[i64],
    names: &[String],
) -> Result<FrechetReport, QualityError> {
    let overall = frechet_distance(real, synth)?;
    let k = names.len();
    let (real_by, syn_by) = (class_indices(real_labels, k), class_indices(synth_labels, k));
    let mut per_class = Vec::with_capacity(k);
    for (class, name) in names.iter().enumerate() {
        let fd = class_frechet(real, &real_by[class], synth, &syn_by[class])?;
        per_class.push(ClassFrechet {
            class,
            name: name.clone(),
            real_count: real_by[class].len(),
            synthetic_count: syn_by[class].len(),
            frechet_distance: fd.as_ref().ok().copied(),
            skipped: fd.err(),
        });
    }
    let values: Vec<(usize, f64)> =
        per_class.iter().filter_map(|c| c.frechet_distance.map(|fd| (c.class, fd))).collect();
    let mean_per_class = (!values.is_empty()).then(|| values.iter().map(|v| v.1).sum::<f64>() / values.len() as f64);
    let worst_class = values.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|v| v.0);
    Ok(FrechetReport { overall, per_class, mean_per_class, worst_class })
}
