//! Assessing a generator end to end: train (or load from cache) the reference classifier, embed the real splits
//! once, then per generator synthesize a fixed class-balanced set, embed it and run the whole `quality` suite, with
//! its pictures. The evaluator role calls this every `evaluation.eval_every` rounds; `histofed reproduce` once per
//! grid cell — one code path, so a number in a round report and in reproduction.md mean the same thing.
//!
//! Why the real features are computed once: the reference network never changes during a run, and embedding the
//! training split is the most expensive part of an evaluation after the reference's own training.
//!
//! Why pixels are pooled to at most 32×32 for the pixel-space memorization check: exact or near copies stay copies
//! after pooling, and it bounds memory (the training split in f32 at 128 px would be gigabytes at paper scale).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use thiserror::Error;

use super::sampling::{synthesize, SamplingError};
use crate::data::Dataset;
use crate::eval::quality::{assess, kid, write_pictures, QualityError, QualityInputs, QualityOptions, QualityReport};
use crate::eval::reference::{ReferenceError, ReferenceExtractor, ReferenceInfo, ReferenceOptions};
use crate::models::{frechet_distance, random_cnn_features, Gan, ModelError};
pub use crate::records::QualitySummary;
use crate::train::batch_tensors;

/// Largest side of the images the pixel-space memorization check compares.
const PIXEL_SIDE: i64 = 32;

#[derive(Debug, Error)]
pub enum AssessError {
    #[error("reference classifier: {0}")]
    Reference(#[from] ReferenceError),
    #[error("quality metrics: {0}")]
    Quality(#[from] QualityError),
    #[error("synthesizing images: {0}")]
    Synthesize(#[from] SamplingError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the {0} split is empty")]
    EmptySplit(&'static str),
}

/// How an assessment is made.
#[derive(Debug, Clone)]
pub struct AssessOptions {
    pub reference: ReferenceOptions,
    pub cache_dir: PathBuf,
    pub quality: QualityOptions,
    /// Synthetic images per class.
    pub samples_per_class: usize,
    /// What the reference classifier learns from when not the training split: an independent draw with the same
    /// classes and size (`data::synthetic_reference_set`, `evaluation.reference_per_class`). The memorization check
    /// still compares against the training split — what the generators saw.
    pub reference_train: Option<Arc<Dataset>>,
}

/// A generator's assessment: the summary, the full report and the pictures (relative to the output directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub summary: QualitySummary,
    pub report: QualityReport,
    pub pictures: Vec<String>,
    pub secs: f64,
}

/// The reference network and the real splits embedded in its feature space.
pub struct Assessor {
    reference: ReferenceExtractor,
    pub info: ReferenceInfo,
    train_features: Tensor,
    train_labels: Vec<i64>,
    train_pixels: Tensor,
    test_features: Tensor,
    test_labels: Vec<i64>,
    test_pixels: Tensor,
    /// The test split in the second feature space (a fixed random CNN, `models::random_cnn_features`).
    test_random: Tensor,
    /// Per-channel mean and standard deviation of the training pixels (the noise baseline's colours).
    pixel_stats: (Tensor, Tensor),
    classes: Vec<String>,
    size: u32,
    device: Device,
    opts: AssessOptions,
}

/// A reference point every table shows beside the generators (see [`Assessor::baseline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// Real images the reference classifier never saw (the validation split), as many per class as a generator is
    /// asked for: how close a perfect generator could come at this sample size — the floor.
    RealFloor,
    /// Gaussian pixel noise with the training set's per-channel mean and spread: what a generator that learned
    /// only the average colour scores — the null baseline.
    Noise,
}

impl Baseline {
    pub fn as_str(self) -> &'static str {
        match self {
            Baseline::RealFloor => "real images (floor)",
            Baseline::Noise => "colour-matched noise (null)",
        }
    }
}

/// Random-CNN features of images [N,3,H,W], in chunks so memory stays bounded.
fn random_features(x: &Tensor) -> Tensor {
    let n = x.size()[0];
    let parts: Vec<Tensor> =
        (0..n).step_by(256).map(|i| random_cnn_features(&x.narrow(0, i, (n - i).min(256)))).collect();
    Tensor::cat(&parts, 0).to_device(Device::Cpu).to_kind(Kind::Float)
}

fn images_tensor(ds: &Dataset, device: Device) -> Tensor {
    let all: Vec<usize> = (0..ds.len()).collect();
    batch_tensors(ds, &all, device).0
}

fn pooled(x: &Tensor) -> Tensor {
    let side = x.size()[3];
    if side > PIXEL_SIDE { x.adaptive_avg_pool2d([PIXEL_SIDE, PIXEL_SIDE]) } else { x.shallow_clone() }
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
}

fn labels_of(ds: &Dataset) -> Vec<i64> {
    ds.labels.iter().map(|&l| i64::from(l)).collect()
}

impl Assessor {
    /// Loads the cached reference classifier for (its training set, test, options) or trains it, and embeds both
    /// splits. Its training set is `opts.reference_train`, else `train`.
    pub fn new(train: &Dataset, test: &Dataset, opts: AssessOptions) -> Result<Self, AssessError> {
        if train.is_empty() {
            return Err(AssessError::EmptySplit("training"));
        }
        if test.is_empty() {
            return Err(AssessError::EmptySplit("test"));
        }
        let judged_by = opts.reference_train.as_deref().unwrap_or(train);
        if judged_by.is_empty() {
            return Err(AssessError::EmptySplit("reference training"));
        }
        let (reference, info) = ReferenceExtractor::load_or_train(judged_by, test, &opts.reference, &opts.cache_dir)?;
        for w in &info.warnings {
            tracing::warn!(warning = %w, "reference classifier cache");
        }
        let device = opts.reference.device;
        let embed = |ds: &Dataset| -> (Tensor, Tensor) {
            let x = images_tensor(ds, device);
            let f = reference.features(&x).to_device(Device::Cpu).to_kind(Kind::Float);
            (f, pooled(&x))
        };
        let (train_features, train_pixels) = embed(train);
        let (test_features, test_pixels) = embed(test);
        let test_random = random_features(&images_tensor(test, device));
        let pixel_stats = {
            let x = images_tensor(train, Device::Cpu);
            let per_channel = x.transpose(0, 1).flatten(1, -1);
            (
                per_channel.mean_dim([1i64].as_slice(), false, Kind::Float),
                per_channel.std_dim([1i64].as_slice(), true, false),
            )
        };
        Ok(Self {
            reference,
            info,
            train_features,
            train_labels: labels_of(train),
            train_pixels,
            test_features,
            test_labels: labels_of(test),
            test_pixels,
            test_random,
            pixel_stats,
            classes: train.classes.clone(),
            size: train.size,
            device,
            opts,
        })
    }

    /// Synthetic images per class each assessment draws.
    pub fn samples_per_class(&self) -> usize {
        self.opts.samples_per_class
    }

    pub fn reference_test_accuracy(&self) -> f64 {
        self.reference.test_accuracy()
    }

    /// Synthesizes `samples_per_class` images per class from `gan` (fixed by `seed`) and measures them; pictures go
    /// under `out_dir/quality/`.
    pub fn assess(&self, gan: &Gan, seed: i64, out_dir: &Path) -> Result<Assessment, AssessError> {
        let start = Instant::now();
        let counts = vec![self.opts.samples_per_class; self.classes.len()];
        let synth = synthesize(gan, &counts, &self.classes, self.size, seed)?;
        self.assess_dataset(&synth, out_dir, start)
    }

    /// Measures an already synthesized set (labels = the classes the images were conditioned on).
    pub fn assess_dataset(&self, synth: &Dataset, out_dir: &Path, start: Instant) -> Result<Assessment, AssessError> {
        let x = images_tensor(synth, self.device);
        let (features, logits) = self.reference.features_and_logits(&x);
        let inputs = QualityInputs {
            train_features: self.train_features.shallow_clone(),
            train_labels: self.train_labels.clone(),
            test_features: self.test_features.shallow_clone(),
            test_labels: self.test_labels.clone(),
            synthetic_features: features.to_device(Device::Cpu).to_kind(Kind::Float),
            synthetic_labels: labels_of(synth),
            synthetic_logits: logits.to_device(Device::Cpu).to_kind(Kind::Float),
            train_pixels: Some(self.train_pixels.shallow_clone()),
            test_pixels: Some(self.test_pixels.shallow_clone()),
            synthetic_pixels: Some(pooled(&x)),
            num_classes: self.classes.len(),
            class_names: self.classes.clone(),
        };
        let report = assess(&inputs, &self.opts.quality)?;
        let synth_random = random_features(&x);
        let q = &self.opts.quality;
        let random_kid = kid(&self.test_random, &synth_random, q.kid_subsets, q.kid_subset_size, 0x4b1d)?;
        let random_fd = frechet_distance(&self.test_random, &synth_random)?;
        let pictures = match write_pictures(&inputs, &report, out_dir) {
            Ok(p) => p,
            Err(e) => {
                // Pictures are for people; a failed drawing never loses the numbers.
                tracing::warn!(error = %e, "cannot draw the quality pictures");
                Vec::new()
            }
        };
        let mut summary = summarize(&report);
        summary.kid_random_cnn = Some(random_kid.mean);
        summary.kid_random_cnn_std = Some(random_kid.std);
        summary.fd_random_cnn = Some(random_fd);
        Ok(Assessment { summary, report, pictures, secs: start.elapsed().as_secs_f64() })
    }

    /// Measures a baseline exactly as a generator is measured: `held_out` real images (the validation split, never
    /// seen by the reference classifier; up to `samples_per_class` per class) for the floor, or colour-matched
    /// Gaussian noise (fixed by `seed`) for the null baseline.
    pub fn baseline(
        &self,
        which: Baseline,
        held_out: &Dataset,
        seed: i64,
        out_dir: &Path,
    ) -> Result<Assessment, AssessError> {
        let start = Instant::now();
        let per_class = self.opts.samples_per_class;
        let set = match which {
            Baseline::RealFloor => {
                let idx = held_out.first_per_class(per_class, |_| true);
                if idx.len() < 2 {
                    return Err(AssessError::EmptySplit("validation (the real floor's images)"));
                }
                held_out.subset(&idx)
            }
            Baseline::Noise => {
                let k = self.classes.len();
                let n = (per_class * k) as i64;
                let s = i64::from(self.size);
                let (mean, std) = &self.pixel_stats;
                let z = crate::models::rng::SeededRng::new(seed).normal_tensor(&[n, 3, s, s], Device::Cpu);
                let x = (z * std.view([1, 3, 1, 1]) + mean.view([1, 3, 1, 1])).clamp(-1.0, 1.0);
                let labels: Vec<u32> = (0..n as usize).map(|i| (i / per_class) as u32).collect();
                Dataset::new(self.size, self.classes.clone(), crate::eval::sampling::to_rgb_bytes(&x), labels)
                    .map_err(|e| AssessError::Synthesize(SamplingError::Options(e.to_string())))?
            }
        };
        self.assess_dataset(&set, out_dir, start)
    }
}

/// The headline numbers of a full report.
pub fn summarize(r: &QualityReport) -> QualitySummary {
    QualitySummary {
        fd: r.frechet.overall,
        precision: r.precision_recall.precision,
        recall: r.precision_recall.recall,
        memorized_share: r.memorization.feature.as_ref().map_or(0.0, |m| m.suspicious_share),
        memorized_share_pixels: r.memorization.pixel.as_ref().map(|m| m.suspicious_share),
        class_coverage: r.coverage.covered_share,
        label_agreement: r.coverage.agreement,
        diversity_ratio: r.diversity.mean_ratio.unwrap_or(f64::NAN),
        layout_diversity_ratio: r.diversity.mean_layout_ratio,
        texture_diversity_min: r
            .diversity
            .per_class
            .iter()
            .filter_map(|c| c.texture_ratio.map(|ratio| (c.name.clone(), ratio)))
            .min_by(|a, b| a.1.total_cmp(&b.1)),
        edge_excess: r.edges.as_ref().and_then(|e| {
            let worst = e.per_class.get(e.worst_class?)?;
            Some((worst.name.clone(), worst.excess?))
        }),
        kid: r.kid.map(|k| k.mean),
        kid_std: r.kid.map(|k| k.std),
        kid_random_cnn: None,
        kid_random_cnn_std: None,
        fd_random_cnn: None,
        class_agreement: r
            .coverage
            .per_class_agreement
            .iter()
            .enumerate()
            .filter_map(|(k, a)| {
                let name = r.class_names.get(k).cloned().unwrap_or_else(|| format!("class {k}"));
                a.map(|a| (name, a))
            })
            .collect(),
    }
}
