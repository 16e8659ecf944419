//! The classifier side of the study: batches, training runs (centralized, and FedAvg over the sites' shards in
//! process), confusion matrices and their scores (accuracy, macro-F1).

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use super::*;
use crate::data::Dataset;
use crate::federation::strategy::{FedAvg, Strategy};
use crate::models::error::catch_torch;
use crate::models::{Classifier, ClassifierConfig, ModelError};
use crate::train::batch_tensors;

/// Rows per classifier forward pass when evaluating.
pub(super) const EVAL_CHUNK: usize = 256;

/// Per-class synthetic counts: `round(ratio × counts[k])`.
pub fn scaled_counts(counts: &[usize], ratio: f64) -> Vec<usize> {
    counts.iter().map(|&n| (ratio * n as f64).round().max(0.0) as usize).collect()
}

/// Confusion matrix `[true][predicted]`.
pub type Confusion = Vec<Vec<u64>>;

/// Macro-averaged F1 of a confusion matrix `[true][predicted]`: per class `F1 = 2TP / (2TP + FP + FN)`, averaged over
/// the classes that occur among the true labels or the predictions (scikit-learn's default label set); 0 for an
/// empty matrix.
pub fn macro_f1(confusion: &[Vec<u64>]) -> f64 {
    let k = confusion.len();
    let mut sum = 0.0;
    let mut n = 0usize;
    for c in 0..k {
        let tp = confusion[c].get(c).copied().unwrap_or(0);
        let fn_: u64 = confusion[c].iter().sum::<u64>() - tp;
        let fp: u64 = (0..k).filter(|&r| r != c).map(|r| confusion[r].get(c).copied().unwrap_or(0)).sum();
        if tp + fp + fn_ == 0 {
            continue;
        }
        sum += 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64;
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Top-1 accuracy of a confusion matrix; 0 when empty.
pub fn confusion_accuracy(confusion: &[Vec<u64>]) -> f64 {
    let total: u64 = confusion.iter().flatten().sum();
    let diag: u64 = confusion.iter().enumerate().map(|(i, row)| row.get(i).copied().unwrap_or(0)).sum();
    if total == 0 {
        0.0
    } else {
        diag as f64 / total as f64
    }
}

/// Reshuffled-epoch batch sampler over one dataset.
pub(super) struct Batches {
    pub(super) order: Vec<usize>,
    pub(super) cursor: usize,
    pub(super) batch: usize,
    pub(super) rng: rand_chacha::ChaCha8Rng,
}

impl Batches {
    pub(super) fn new(len: usize, batch: usize, seed: u64) -> Self {
        Batches {
            order: (0..len).collect(),
            cursor: len,
            batch: batch.clamp(1, len.max(1)),
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub(super) fn next(&mut self) -> &[usize] {
        if self.cursor + self.batch > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        let b = &self.order[self.cursor..self.cursor + self.batch];
        self.cursor += self.batch;
        b
    }
}

pub(super) fn train_steps(
    clf: &mut Classifier,
    ds: &Dataset,
    batches: &mut Batches,
    steps: u64,
    device: Device,
) -> Result<(), AugmentError> {
    for _ in 0..steps {
        let (x, y) = batch_tensors(ds, batches.next(), device);
        clf.train_step(&x, &y)?;
    }
    Ok(())
}

/// Confusion matrix of `clf` on `test`.
pub fn confusion(clf: &Classifier, test: &Dataset, device: Device) -> Result<Confusion, AugmentError> {
    let k = test.num_classes();
    let mut m = vec![vec![0u64; k]; k];
    for (&t, p) in test.labels.iter().zip(predict(clf, test, device)?) {
        if let (Some(row), Ok(p)) = (m.get_mut(t as usize), usize::try_from(p)) {
            if let Some(cell) = row.get_mut(p) {
                *cell += 1;
            }
        }
    }
    Ok(m)
}

pub(super) fn train_central(
    cfg: &ClassifierConfig,
    pool: &Dataset,
    test: &Dataset,
    seed: u64,
    opts: &AugmentOptions,
) -> Result<Confusion, AugmentError> {
    train_confusion(cfg, pool, test, opts.steps, opts.batch_size, seed, opts.device)
}

/// Trains a fresh classifier on `pool` for `steps` steps and returns its confusion on `test`.
pub(super) fn train_confusion(
    cfg: &ClassifierConfig,
    pool: &Dataset,
    test: &Dataset,
    steps: u64,
    batch_size: usize,
    seed: u64,
    device: Device,
) -> Result<Confusion, AugmentError> {
    let clf = train_classifier(cfg, pool, steps, batch_size, seed, device)?;
    confusion(&clf, test, device)
}

/// A classifier trained on `pool` for `steps` steps (seeded batch order, initialisation and augmentation draws).
pub fn train_classifier(
    cfg: &ClassifierConfig,
    pool: &Dataset,
    steps: u64,
    batch_size: usize,
    seed: u64,
    device: Device,
) -> Result<Classifier, AugmentError> {
    let mut clf = Classifier::new(cfg, device, seed as i64)?;
    let mut batches = Batches::new(pool.len(), batch_size, seed);
    train_steps(&mut clf, pool, &mut batches, steps, device)?;
    Ok(clf)
}

/// (accuracy, macro-F1) of `clf` on `test`.
pub fn score(clf: &Classifier, test: &Dataset, device: Device) -> Result<(f64, f64), AugmentError> {
    let m = confusion(clf, test, device)?;
    Ok((confusion_accuracy(&m), macro_f1(&m)))
}

/// The class `clf` predicts for each image of `ds`.
pub fn predict(clf: &Classifier, ds: &Dataset, device: Device) -> Result<Vec<i64>, AugmentError> {
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut out = Vec::with_capacity(ds.len());
    for chunk in all.chunks(EVAL_CHUNK) {
        let (x, _) = batch_tensors(ds, chunk, device);
        out.extend(catch_torch("classifier predictions", || {
            let p = clf.predict(&x).argmax(-1, false).to_device(Device::Cpu).to_kind(Kind::Int64);
            Vec::<i64>::try_from(p).map_err(ModelError::torch("reading predictions"))
        })?);
    }
    Ok(out)
}

/// One classifier trained on `pool` (real, or real + synthetic) and scored on `test`: the unit both this study and
/// `histofed reproduce` repeat over seeds.
pub fn train_classifier_once(
    cfg: &ClassifierConfig,
    pool: &Dataset,
    test: &Dataset,
    steps: u64,
    batch_size: usize,
    seed: u64,
    device: Device,
) -> Result<RunResult, AugmentError> {
    let start = Instant::now();
    let m = train_confusion(cfg, pool, test, steps, batch_size, seed, device)?;
    Ok(result(seed, &m, pool.len(), 0, start))
}

/// FedAvg over the site pools from a common initialisation; returns the global classifier's confusion on `test`.
pub(super) fn train_federated(
    cfg: &ClassifierConfig,
    pools: &[Dataset],
    test: &Dataset,
    seed: u64,
    fed: &FederatedOptions,
    opts: &AugmentOptions,
) -> Result<Confusion, AugmentError> {
    let device = opts.device;
    let mut global_clf = Classifier::new(cfg, device, seed as i64)?;
    let mut global = global_clf.weights()?;
    let mut sites = Vec::new();
    for (i, pool) in pools.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
        // Per-site seeds give each site its own batch order and augmentation draws; the weights are the global ones.
        let site_seed = seed.wrapping_mul(1_009).wrapping_add(i as u64 + 1);
        let clf = Classifier::new(cfg, device, site_seed as i64)?;
        sites.push((clf, Batches::new(pool.len(), opts.batch_size, site_seed), pool));
    }
    if sites.is_empty() {
        return Err(AugmentError::Options("every site's shard is empty".into()));
    }
    let mut strategy = FedAvg::new();
    for _ in 0..fed.rounds {
        strategy.begin_round(&global);
        for (clf, batches, pool) in sites.iter_mut() {
            clf.load_weights(&global)?;
            train_steps(clf, pool, batches, fed.local_steps, device)?;
            strategy.accumulate(clf.weights()?, pool.len() as u64)?;
        }
        global = strategy.finish()?;
    }
    global_clf.load_weights(&global)?;
    confusion(&global_clf, test, device)
}

/// Images [N,3,S,S] in [-1, 1] of `ds`, through `f` in chunks, concatenated on the CPU.
pub(super) fn map_chunks(ds: &Dataset, device: Device, f: impl Fn(&Tensor) -> Tensor) -> Result<Tensor, AugmentError> {
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut parts = Vec::new();
    for chunk in all.chunks(EVAL_CHUNK) {
        let (x, _) = batch_tensors(ds, chunk, device);
        parts.push(catch_torch("reference forward pass", || Ok(f(&x).to_device(Device::Cpu)))?);
    }
    Ok(catch_torch("concatenating features", || Ok(Tensor::cat(&parts, 0)))?)
}
