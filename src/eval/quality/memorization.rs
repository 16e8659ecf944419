//! Memorization: does the generator hand back (near-)copies of training images?
//!
//! Why it matters here: the training images are patients' slides that never leave their hospital; a federated GAN
//! that memorizes them leaks them through its samples. For each synthetic image we find its nearest training image,
//! in the reference classifier's feature space (semantic copies) and in pixel space (literal copies). A raw distance
//! means little on its own, so it is divided by the typical distance a *fresh real* image has to the training set:
//! the median over test images of their nearest-training distance, in the same space. A ratio well below 1 (default
//! threshold 0.5) means the synthetic image is closer to a training image than unseen real images ever are — it is
//! flagged as suspiciously close. The report keeps the share of flagged samples, the median ratio and the top-N
//! closest pairs; [`closest_pairs_png`] puts each pair side by side for a person to judge.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::distances::{knn, to_vec};
use super::{guard, median, QualityError, QualityOptions};
use crate::data::grid;

/// The three sets of one space: synthetic and training rows, and test rows for the baseline (None: no baseline).
#[derive(Debug, Clone, Copy)]
pub struct SpaceSets<'a> {
    pub synthetic: &'a Tensor,
    pub train: &'a Tensor,
    pub test: Option<&'a Tensor>,
}

/// Per-sample nearest-training results in one space.
#[derive(Debug, Clone, PartialEq)]
pub struct NearestScan {
    /// Distance of each synthetic sample to its nearest training sample.
    pub distances: Vec<f64>,
    /// Index of that training sample.
    pub nearest: Vec<usize>,
    /// Median over test samples of their nearest-training distance.
    pub baseline_median: f64,
    /// `distances / baseline_median`.
    pub ratios: Vec<f64>,
}

impl NearestScan {
    /// Indices of the synthetic samples whose ratio is below `threshold`.
    pub fn suspicious(&self, threshold: f64) -> Vec<usize> {
        self.ratios.iter().enumerate().filter(|(_, &r)| r < threshold).map(|(i, _)| i).collect()
    }
}

/// One synthetic sample and its nearest training sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosePair {
    pub synthetic: usize,
    pub train: usize,
    pub distance: f64,
    pub ratio: f64,
}

/// Summary of one space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceMemorization {
    /// Median test→train nearest distance: what "close" is measured against.
    pub baseline_median: f64,
    pub median_distance: f64,
    pub median_ratio: f64,
    pub min_ratio: f64,
    pub suspicious_count: usize,
    /// Share of synthetic samples with ratio < threshold.
    pub suspicious_share: f64,
    /// The top-N closest pairs, closest first.
    pub closest: Vec<ClosePair>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorizationReport {
    pub threshold: f64,
    pub feature: Option<SpaceMemorization>,
    pub feature_skipped: Option<String>,
    pub pixel: Option<SpaceMemorization>,
    pub pixel_skipped: Option<String>,
}

/// Nearest training sample of every synthetic sample, and ratios to the test→train baseline. `Ok(Err(reason))`
/// when there is no usable baseline (no test set, or test samples that coincide with training samples).
pub fn scan_space(sets: &SpaceSets<'_>, chunk: usize) -> Result<Result<NearestScan, String>, QualityError> {
    let Some(test) = sets.test else {
        return Ok(Err("no test samples in this space to measure the typical test→train distance".into()));
    };
    if sets.train.size()[0] == 0 || test.size()[0] == 0 {
        return Ok(Err("the training or test set is empty".into()));
    }
    let base = knn(test, sets.train, 1, chunk)?;
    let Some(baseline_median) = median(&to_vec::<f64>(&base.distances)?) else {
        return Ok(Err("the test→train distances are not finite".into()));
    };
    if baseline_median <= f64::EPSILON {
        return Ok(
            Err("the median test→train nearest distance is 0 (test samples duplicate training samples?)".into()),
        );
    }
    let nn = knn(sets.synthetic, sets.train, 1, chunk)?;
    let distances = to_vec::<f64>(&nn.distances)?;
    let nearest = to_vec::<i64>(&nn.indices)?.into_iter().map(|i| i.max(0) as usize).collect();
    let ratios = distances.iter().map(|d| d / baseline_median).collect();
    Ok(Ok(NearestScan { distances, nearest, baseline_median, ratios }))
}

/// Report summary of one scan.
pub fn summarize_space(scan: &NearestScan, threshold: f64, top_n: usize) -> SpaceMemorization {
    let n = scan.ratios.len();
    let suspicious_count = scan.suspicious(threshold).len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scan.distances[a].total_cmp(&scan.distances[b]));
    let closest = order
        .iter()
        .take(top_n)
        .map(|&i| ClosePair {
            synthetic: i,
            train: scan.nearest[i],
            distance: scan.distances[i],
            ratio: scan.ratios[i],
        })
        .collect();
    SpaceMemorization {
        baseline_median: scan.baseline_median,
        median_distance: median(&scan.distances).unwrap_or(0.0),
        median_ratio: median(&scan.ratios).unwrap_or(0.0),
        min_ratio: scan.ratios.iter().copied().fold(f64::INFINITY, f64::min).min(f64::MAX),
        suspicious_count,
        suspicious_share: suspicious_count as f64 / n.max(1) as f64,
        closest,
    }
}

/// Memorization in feature space and, when pixel sets are given, in pixel space.
pub fn memorization(
    features: &SpaceSets<'_>,
    pixels: Option<&SpaceSets<'_>>,
    opts: &QualityOptions,
) -> Result<MemorizationReport, QualityError> {
    let one = |sets: &SpaceSets<'_>| -> Result<(Option<SpaceMemorization>, Option<String>), QualityError> {
        Ok(match scan_space(sets, opts.chunk_size)? {
            Ok(scan) => (Some(summarize_space(&scan, opts.memorization_threshold, opts.top_n)), None),
            Err(reason) => (None, Some(reason)),
        })
    };
    let (feature, feature_skipped) = one(features)?;
    let (pixel, pixel_skipped) = match pixels {
        Some(p) => one(p)?,
        None => (None, Some("no training and synthetic pixels were given".into())),
    };
    Ok(MemorizationReport { threshold: opts.memorization_threshold, feature, feature_skipped, pixel, pixel_skipped })
}

/// A PNG with one row per pair: [synthetic image | nearest training image], from images [N, 3, S, S] in [-1, 1].
/// Returns the written path.
pub fn closest_pairs_png(
    synthetic: &Tensor,
    train: &Tensor,
    pairs: &[ClosePair],
    path: &Path,
) -> Result<PathBuf, QualityError> {
    let img = closest_pairs_image(synthetic, train, pairs)?;
    grid::save_png(&img, path)?;
    Ok(path.to_path_buf())
}

/// The picture of [`closest_pairs_png`] (2 columns, `pairs.len()` rows, [`grid::GRID_PAD`] between tiles).
pub fn closest_pairs_image(
    synthetic: &Tensor,
    train: &Tensor,
    pairs: &[ClosePair],
) -> Result<image::RgbImage, QualityError> {
    let (ss, ts) = (synthetic.size(), train.size());
    if ss.len() != 4 || ts.len() != 4 || ss[1..] != ts[1..] || ss[1] != 3 || ss[2] != ss[3] {
        return Err(QualityError::Input {
            what: "closest pairs pixels".into(),
            detail: format!("need square RGB images [N, 3, S, S] of one size, got {ss:?} and {ts:?}"),
        });
    }
    for p in pairs {
        if p.synthetic as i64 >= ss[0] || p.train as i64 >= ts[0] {
            return Err(QualityError::Input {
                what: "closest pairs".into(),
                detail: format!(
                    "pair ({}, {}) is out of range of {} synthetic and {} training images",
                    p.synthetic, p.train, ss[0], ts[0]
                ),
            });
        }
    }
    if pairs.is_empty() {
        return Ok(grid::image_grid(&[], ss[2] as u32, 0, 2));
    }
    let bytes = guard("closest pairs picture", || {
        let si: Vec<i64> = pairs.iter().map(|p| p.synthetic as i64).collect();
        let ti: Vec<i64> = pairs.iter().map(|p| p.train as i64).collect();
        let s = synthetic.index_select(0, &Tensor::from_slice(&si).to_device(synthetic.device()));
        let t = train.index_select(0, &Tensor::from_slice(&ti).to_device(train.device())).to_device(s.device());
        // Interleave: row r is [synthetic r, train r].
        let both = Tensor::stack(&[s, t], 1).flatten(0, 1);
        Ok(to_rgb_bytes(&both))
    })?;
    Ok(grid::image_grid(&bytes, ss[2] as u32, pairs.len() * 2, 2))
}

/// Images [N, 3, H, W] in [-1, 1] → HWC RGB bytes. The same mapping as `evaluation::to_rgb_bytes`, repeated here
/// because this module sits below `evaluation` (the evaluator is meant to call it), and imports point down only.
fn to_rgb_bytes(images: &Tensor) -> Vec<u8> {
    let u8s = ((images.clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(tch::Kind::Uint8)
        .permute([0, 2, 3, 1])
        .contiguous()
        .to_device(tch::Device::Cpu);
    let n = u8s.numel();
    let mut out = vec![0u8; n];
    u8s.copy_data(&mut out, n);
    out
}
