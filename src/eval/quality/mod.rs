//! Sample quality of a conditional generator, measured against real images in the feature space of a reference
//! classifier (a ViT trained on the real training split).
//!
//! Why several numbers instead of one FID: a federated GAN fails in distinct ways that a single distance blurs
//! together. A generator can be sharp but cover only part of the data (precision high, recall low), copy training
//! images (memorization — a privacy problem for hospital data), emit one class whatever it is asked for (coverage,
//! agreement), collapse inside one class (diversity), or mix classes up (confusion matrix, inter-class Fréchet
//! matrix). Each concept lives in its own file:
//! - [`frechet`]: overall and per-class Fréchet distance;
//! - [`kid`]: kernel inception distance, unbiased at small sample sizes (mean ± sd over subsets);
//! - [`precision_recall`]: improved precision/recall with k-NN manifolds (Kynkäänniemi et al. 2019);
//! - [`memorization`]: nearest training image of each synthetic one, in feature and pixel space;
//! - [`diversity`]: within-class diversity ratio (in features and in layout) and class coverage;
//! - [`edges`]: border artefacts, the fine detail of a class's outer ring against the data's;
//! - [`similarity`]: confusion matrix, inter-class Fréchet matrix and the heatmap picture;
//! - [`distances`]: the chunked distance engine under the k-NN metrics (bounded memory).
//!
//! [`assess`] runs them all on one [`QualityInputs`] and returns a serialisable [`QualityReport`] for the JSON run
//! report; [`write_pictures`] draws what a person should look at.
//!
//! Everything here is pure tensor code: it receives features, logits and pixels as tensors and never runs a model,
//! so the caller decides which device and which reference network produce them. Distances run on the device of the
//! query tensors; Fréchet distances on the CPU in f64 (`models::frechet_distance`).
//!
//! Which real set is the reference: by default the held-out test split ([`RealSplit::Test`]). The reference
//! classifier was trained on the training split, so its features of training images are tighter than those of
//! unseen images and would reward or penalise the generator for the classifier's overfitting. The training split is
//! what memorization compares against (a copy can only be of an image the generator was trained on).

pub mod distances;
pub mod diversity;
pub mod edges;
pub mod frechet;
pub mod kid;
pub mod memorization;
pub mod precision_recall;
pub mod similarity;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use thiserror::Error;

use crate::data::DataError;
use crate::federation::checkpoint::CheckpointError;
use crate::models::ModelError;

pub use diversity::{
    class_coverage, class_diversity, ClassDiversity, Coverage, DiversityReport, LayoutPixels, LAYOUT_CONTRAST_FLOOR,
};
pub use edges::{edge_excess, ClassEdges, EdgeReport, EDGE_RING_SHARE};
pub use frechet::{class_frechet, frechet_report, ClassFrechet, FrechetReport};
pub use kid::{kid, Kid};
pub use memorization::{
    closest_pairs_image, closest_pairs_png, memorization, scan_space, summarize_space, ClosePair, MemorizationReport,
    NearestScan, SpaceMemorization, SpaceSets,
};
pub use precision_recall::{manifold_radii, precision_recall, PrecisionRecall};
pub use similarity::{
    confusion_matrix, heatmap_png, heatmap_png_bytes, inter_class_frechet, ConfusionMatrix, InterClassFrechet,
    HEATMAP_HEIGHT, HEATMAP_WIDTH,
};

/// Everything that can go wrong measuring sample quality. Shape and label errors name the input that is wrong.
#[derive(Debug, Error)]
pub enum QualityError {
    /// An input tensor has the wrong rank, size or values; `what` names the input.
    #[error("quality input `{what}`: {detail}")]
    Input { what: String, detail: String },
    /// Too few samples for a metric that needs more.
    #[error("{metric}: {what} has {got} samples, needs at least {need}")]
    TooFewSamples { metric: &'static str, what: String, got: usize, need: usize },
    /// A class label outside 0..num_classes.
    #[error("quality input `{what}`: label {label} at index {index} is outside 0..{num_classes}")]
    Label { what: String, index: usize, label: i64, num_classes: usize },
    /// An option is out of range; `field` names it.
    #[error("invalid quality option `{field}`: {message}")]
    Option { field: &'static str, message: String },
    /// The Fréchet distance (`models::frechet_distance`) failed.
    #[error("Fréchet distance: {0}")]
    Model(#[from] ModelError),
    /// Writing a picture failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The embedded font did not load.
    #[error("the embedded plot font does not load")]
    Font,
    /// A picture could not be written.
    #[error("writing a picture: {0}")]
    Write(#[from] CheckpointError),
    /// Drawing a heatmap failed (including a panic inside the plotting library).
    #[error("drawing the heatmap '{plot}': {detail}")]
    Draw { plot: String, detail: String },
    /// libtorch failed (a panic inside tch is caught and lands here).
    #[error("torch error during {context}: {message}")]
    Torch { context: String, message: String },
    /// Creating the pictures directory failed.
    #[error("cannot create {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Runs tensor code, turning a panic inside libtorch (tch's infallible wrappers unwrap) into an error.
pub(crate) fn guard<T>(context: &str, f: impl FnOnce() -> Result<T, QualityError>) -> Result<T, QualityError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(QualityError::Torch { context: context.into(), message })
        }
    }
}

/// Which real split the generator is compared with for Fréchet distances, precision/recall and diversity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RealSplit {
    #[default]
    Test,
    Train,
}

/// Knobs of [`assess`]; the defaults are the ones the literature and our reports use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QualityOptions {
    /// Real split used as the reference distribution.
    pub real: RealSplit,
    /// k of the k-NN manifolds for precision/recall (Kynkäänniemi et al. use 3).
    pub k: usize,
    /// A synthetic sample is suspiciously close to the training set when its nearest-training distance is below
    /// this fraction of the median test→train nearest distance.
    pub memorization_threshold: f64,
    /// How many closest (synthetic, training) pairs the report lists and the picture shows.
    pub top_n: usize,
    /// A class is covered when its share of predictions reaches this fraction of the share it was requested at.
    pub coverage_min_fraction: f64,
    /// A class counts as collapsed when its synthetic/real diversity ratio is below this.
    pub collapse_ratio: f64,
    /// At most this many samples per class and side enter the mean pairwise distance (evenly spaced subsample).
    pub max_diversity_samples: usize,
    /// Rows per block of pairwise distances (memory is O(chunk² + chunk·D), not O(N·M)).
    pub chunk_size: usize,
    /// Compute the K×K inter-class Fréchet matrix (K² Fréchet distances).
    pub inter_class_fd: bool,
    /// KID: random subsets drawn, and rows per subset (capped by the smaller set).
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
}

impl Default for QualityOptions {
    fn default() -> Self {
        QualityOptions {
            real: RealSplit::Test,
            k: 3,
            memorization_threshold: 0.5,
            top_n: 8,
            coverage_min_fraction: 0.5,
            collapse_ratio: 0.5,
            max_diversity_samples: 1000,
            chunk_size: 1024,
            inter_class_fd: true,
            kid_subsets: 100,
            kid_subset_size: 1000,
        }
    }
}

impl QualityOptions {
    /// Checks every option; the error names the bad one.
    pub fn validate(&self) -> Result<(), QualityError> {
        let bad = |field, message: &str| Err(QualityError::Option { field, message: message.into() });
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.k == 0 {
            return bad("k", "must be at least 1");
        }
        if !positive(self.memorization_threshold) {
            return bad("memorization_threshold", "must be a positive number");
        }
        if !positive(self.coverage_min_fraction) {
            return bad("coverage_min_fraction", "must be a positive number");
        }
        if !positive(self.collapse_ratio) {
            return bad("collapse_ratio", "must be a positive number");
        }
        if self.max_diversity_samples < 2 {
            return bad("max_diversity_samples", "must be at least 2");
        }
        if self.chunk_size == 0 {
            return bad("chunk_size", "must be at least 1");
        }
        if self.kid_subsets == 0 {
            return bad("kid_subsets", "must be at least 1");
        }
        if self.kid_subset_size < 2 {
            return bad("kid_subset_size", "must be at least 2");
        }
        Ok(())
    }
}

/// What [`assess`] measures. Features are [N, D] (any float kind, one D for all sets), labels are class indices in
/// 0..num_classes, logits [N_syn, K]; pixels are images [N, 3, H, W] in [-1, 1] with the same rows as the features
/// of their set. Pixels are optional: without train and synthetic pixels there is no pixel-space memorization and no
/// closest-pairs picture; without test pixels the pixel-space ratio has no baseline and is skipped with a reason.
#[derive(Debug)]
pub struct QualityInputs {
    pub train_features: Tensor,
    pub train_labels: Vec<i64>,
    pub test_features: Tensor,
    pub test_labels: Vec<i64>,
    pub synthetic_features: Tensor,
    /// The class each synthetic image was conditioned on.
    pub synthetic_labels: Vec<i64>,
    /// The reference classifier's logits on the synthetic images.
    pub synthetic_logits: Tensor,
    pub train_pixels: Option<Tensor>,
    pub test_pixels: Option<Tensor>,
    pub synthetic_pixels: Option<Tensor>,
    pub num_classes: usize,
    /// One name per class; empty means "class 0", "class 1", ...
    pub class_names: Vec<String>,
}

impl QualityInputs {
    /// Class names, generated when none were given.
    pub fn names(&self) -> Vec<String> {
        if self.class_names.is_empty() {
            (0..self.num_classes).map(|k| format!("class {k}")).collect()
        } else {
            self.class_names.clone()
        }
    }

    fn real(&self, split: RealSplit) -> (&Tensor, &[i64]) {
        match split {
            RealSplit::Test => (&self.test_features, &self.test_labels),
            RealSplit::Train => (&self.train_features, &self.train_labels),
        }
    }

    /// Checks every shape, label and value [`assess`] relies on; the error names the offending input.
    pub fn validate(&self) -> Result<(), QualityError> {
        let k = self.num_classes;
        if k == 0 {
            return Err(input("num_classes", "must be at least 1"));
        }
        if !self.class_names.is_empty() && self.class_names.len() != k {
            return Err(input(
                "class_names",
                format!("{} names for num_classes = {k} (give one per class, or none)", self.class_names.len()),
            ));
        }
        let mut dim = None;
        for (what, x, labels, need) in [
            ("train_features", &self.train_features, &self.train_labels, 1),
            ("test_features", &self.test_features, &self.test_labels, 1),
            ("synthetic_features", &self.synthetic_features, &self.synthetic_labels, 2),
        ] {
            let s = x.size();
            if s.len() != 2 {
                return Err(input(what, format!("must be [N, D], got shape {s:?}")));
            }
            if s[1] == 0 {
                return Err(input(what, "has feature dimension 0"));
            }
            match dim {
                None => dim = Some(s[1]),
                Some(d) if d != s[1] => {
                    return Err(input(what, format!("has feature dimension {} but train_features has {d}", s[1])))
                }
                Some(_) => {}
            }
            if (s[0] as usize) < need {
                let got = s[0] as usize;
                return Err(QualityError::TooFewSamples { metric: "quality", what: what.into(), got, need });
            }
            let label_what = what.replace("features", "labels");
            if labels.len() != s[0] as usize {
                return Err(input(&label_what, format!("has {} labels for {} feature rows", labels.len(), s[0])));
            }
            check_labels(&label_what, labels, k)?;
            check_finite(what, x)?;
        }
        let ls = self.synthetic_logits.size();
        let ns = self.synthetic_features.size()[0];
        if ls.len() != 2 || ls[0] != ns || ls[1] != k as i64 {
            return Err(input(
                "synthetic_logits",
                format!("must be [{ns}, {k}] (synthetic rows × classes), got {ls:?}"),
            ));
        }
        check_finite("synthetic_logits", &self.synthetic_logits)?;
        let mut hw = None;
        for (what, px, rows) in [
            ("train_pixels", &self.train_pixels, self.train_features.size()[0]),
            ("test_pixels", &self.test_pixels, self.test_features.size()[0]),
            ("synthetic_pixels", &self.synthetic_pixels, ns),
        ] {
            let Some(px) = px else { continue };
            let s = px.size();
            if s.len() != 4 || s[1] != 3 || s[0] != rows {
                return Err(input(what, format!("must be [{rows}, 3, H, W] (one image per feature row), got {s:?}")));
            }
            match hw {
                None => hw = Some((s[2], s[3])),
                Some(h) if h != (s[2], s[3]) => {
                    return Err(input(what, format!("images are {}×{}, other pixel sets {}×{}", s[2], s[3], h.0, h.1)))
                }
                Some(_) => {}
            }
            check_finite(what, px)?;
        }
        Ok(())
    }
}

fn input(what: &str, detail: impl Into<String>) -> QualityError {
    QualityError::Input { what: what.into(), detail: detail.into() }
}

fn check_labels(what: &str, labels: &[i64], k: usize) -> Result<(), QualityError> {
    match labels.iter().enumerate().find(|(_, &l)| l < 0 || l >= k as i64) {
        Some((index, &label)) => Err(QualityError::Label { what: what.into(), index, label, num_classes: k }),
        None => Ok(()),
    }
}

fn check_finite(what: &str, x: &Tensor) -> Result<(), QualityError> {
    let finite = guard(what, || Ok(x.isfinite().all().int64_value(&[]) != 0))?;
    if finite {
        Ok(())
    } else {
        Err(input(what, "contains NaN or infinite values"))
    }
}

/// Row indices of each class 0..k (labels outside are ignored).
pub(crate) fn class_indices(labels: &[i64], k: usize) -> Vec<Vec<i64>> {
    let mut out = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(v) = usize::try_from(l).ok().and_then(|l| out.get_mut(l)) {
            v.push(i as i64);
        }
    }
    out
}

/// `numerator / denominator` when both exist and the denominator is positive (synthetic over real of a spread or an
/// energy).
pub(crate) fn positive_ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

/// The rows `idx` of `x` (on `x`'s device).
pub(crate) fn select_rows(x: &Tensor, idx: &[i64]) -> Result<Tensor, QualityError> {
    guard("selecting rows", || Ok(x.index_select(0, &Tensor::from_slice(idx).to_device(x.device()))))
}

/// Arg-max class of each row of `logits` [N, K].
pub fn predicted_classes(logits: &Tensor) -> Result<Vec<usize>, QualityError> {
    let pred = guard("arg-max of logits", || Ok(logits.argmax(1, false).to_kind(Kind::Int64)))?;
    Ok(distances::to_vec::<i64>(&pred)?.into_iter().map(|p| p.max(0) as usize).collect())
}

/// Median of the finite values (mean of the two middle ones for an even count); None when there are none.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Sample counts and dimensions the report was computed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityCounts {
    pub train: usize,
    pub test: usize,
    pub synthetic: usize,
    pub feature_dim: usize,
    pub num_classes: usize,
}

/// Every quality number of one generator; serialisable into the run report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    pub counts: QualityCounts,
    pub class_names: Vec<String>,
    pub options: QualityOptions,
    pub frechet: FrechetReport,
    pub precision_recall: PrecisionRecall,
    pub memorization: MemorizationReport,
    pub diversity: DiversityReport,
    pub coverage: Coverage,
    pub confusion: ConfusionMatrix,
    /// None when `options.inter_class_fd` is off.
    pub inter_class_fd: Option<InterClassFrechet>,
    /// KID, real split vs synthetic (absent in reports written before it existed).
    #[serde(default)]
    pub kid: Option<Kid>,
    /// Border artefacts, synthetic vs the real split (absent without real and synthetic pixels, and in reports written
    /// before it existed).
    #[serde(default)]
    pub edges: Option<EdgeReport>,
}

/// Runs every metric of this module on `inputs` (validated first; errors name the bad input or option).
pub fn assess(inputs: &QualityInputs, opts: &QualityOptions) -> Result<QualityReport, QualityError> {
    opts.validate()?;
    inputs.validate()?;
    let names = inputs.names();
    let k = inputs.num_classes;
    let (real, real_labels) = inputs.real(opts.real);
    let synth = &inputs.synthetic_features;
    let syn_labels = &inputs.synthetic_labels;

    let frechet = frechet_report(real, real_labels, synth, syn_labels, &names)?;
    let kid = kid::kid(real, synth, opts.kid_subsets, opts.kid_subset_size, 0x4b1d)?;
    let precision_recall = precision_recall(real, synth, opts.k, opts.chunk_size)?;
    let pixel = match (&inputs.synthetic_pixels, &inputs.train_pixels) {
        (Some(s), Some(t)) => Some(SpaceSets { synthetic: s, train: t, test: inputs.test_pixels.as_ref() }),
        _ => None,
    };
    let features = SpaceSets { synthetic: synth, train: &inputs.train_features, test: Some(&inputs.test_features) };
    let memorization = memorization(&features, pixel.as_ref(), opts)?;
    let real_pixels = match opts.real {
        RealSplit::Test => inputs.test_pixels.as_ref(),
        RealSplit::Train => inputs.train_pixels.as_ref(),
    };
    let layout = match (real_pixels, inputs.synthetic_pixels.as_ref()) {
        (Some(real), Some(synthetic)) => Some(LayoutPixels { real, synthetic }),
        _ => None,
    };
    let diversity = class_diversity(real, real_labels, synth, syn_labels, layout, &names, opts)?;
    let edges = match layout {
        Some(p) => Some(edge_excess(p.real, real_labels, p.synthetic, syn_labels, &names)?),
        None => None,
    };
    let predictions = predicted_classes(&inputs.synthetic_logits)?;
    let coverage = class_coverage(&predictions, syn_labels, k, opts.coverage_min_fraction);
    let confusion = confusion_matrix(syn_labels, &predictions, k);
    let inter_class_fd =
        if opts.inter_class_fd { Some(inter_class_frechet(real, real_labels, synth, syn_labels, k)?) } else { None };
    Ok(QualityReport {
        counts: QualityCounts {
            train: inputs.train_labels.len(),
            test: inputs.test_labels.len(),
            synthetic: syn_labels.len(),
            feature_dim: synth.size()[1] as usize,
            num_classes: k,
        },
        class_names: names,
        options: opts.clone(),
        frechet,
        precision_recall,
        memorization,
        diversity,
        coverage,
        confusion,
        inter_class_fd,
        kid: Some(kid),
        edges,
    })
}

/// File names [`write_pictures`] uses, relative to its `out_dir`.
pub const CLOSEST_PAIRS_PNG: &str = "quality/closest-pairs.png";
pub const FD_HEATMAP_PNG: &str = "quality/inter-class-fd.png";
pub const CONFUSION_HEATMAP_PNG: &str = "quality/confusion.png";

/// Draws under `out_dir/quality/`: the closest (synthetic, training) pairs — pixel-space pairs when they were
/// measured, else feature-space pairs; needs train and synthetic pixels —, the inter-class Fréchet heatmap (when
/// computed) and the confusion heatmap. Returns the written files' names relative to `out_dir`.
pub fn write_pictures(
    inputs: &QualityInputs,
    report: &QualityReport,
    out_dir: &Path,
) -> Result<Vec<String>, QualityError> {
    let dir = out_dir.join("quality");
    std::fs::create_dir_all(&dir).map_err(|source| QualityError::Io { path: dir.clone(), source })?;
    let mut written = Vec::new();
    if let (Some(syn), Some(train)) = (&inputs.synthetic_pixels, &inputs.train_pixels) {
        let mem = &report.memorization;
        let pairs = mem.pixel.as_ref().or(mem.feature.as_ref()).map(|s| s.closest.as_slice()).unwrap_or_default();
        if !pairs.is_empty() {
            closest_pairs_png(syn, train, pairs, &out_dir.join(CLOSEST_PAIRS_PNG))?;
            written.push(CLOSEST_PAIRS_PNG.to_string());
        }
    }
    if let Some(fd) = &report.inter_class_fd {
        let m: Vec<Vec<f64>> =
            fd.matrix.iter().map(|row| row.iter().map(|v| v.unwrap_or(f64::NAN)).collect()).collect();
        let title = "Fréchet distance: real class (row) vs synthetic class (column)";
        heatmap_png(&m, &report.class_names, title, &out_dir.join(FD_HEATMAP_PNG))?;
        written.push(FD_HEATMAP_PNG.to_string());
    }
    let counts: Vec<Vec<f64>> =
        report.confusion.counts.iter().map(|row| row.iter().map(|&c| c as f64).collect()).collect();
    let title = "Synthetic samples: conditioning label (row) vs reference prediction (column)";
    heatmap_png(&counts, &report.class_names, title, &out_dir.join(CONFUSION_HEATMAP_PNG))?;
    written.push(CONFUSION_HEATMAP_PNG.to_string());
    Ok(written)
}

#[cfg(test)]
mod tests;
