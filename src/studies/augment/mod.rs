//! The augmentation study — the paper's main result: does adding images from the (federated) GAN to the training
//! set make the downstream ViT tissue classifier better on real held-out tiles?
//!
//! Design choices, and why:
//! * **Same budget for every condition.** Each condition trains the classifier for the same number of steps with
//!   the same batch size and the same initial weights per seed; only the training *pool* changes (real only, or real
//!   plus `ratio ×` as many synthetic images per class). A gain can then not come from extra compute.
//! * **Per-class ratios.** Synthetic images per class are `round(ratio × real images of that class)`, so the class
//!   balance of the real split is kept and the ratio means the same thing on any dataset.
//! * **Paired seeds.** Seed `s` fixes the classifier's initial weights, batch order and augmentation and the latent
//!   draws of the synthetic set, in every condition; the gain over "real only" is computed per seed and its mean
//!   and standard deviation reported, which is far less noisy than the difference of two means.
//! * **Macro-F1 beside accuracy.** Tissue classes are imbalanced; macro-F1 weighs every class alike.
//! * **Federated version.** The training split is partitioned over the sites exactly as the federation does
//!   (`data::partition` with the config's scheme and `federation.seed`), and the classifier is trained by FedAvg
//!   in-process (`federation::strategy::FedAvg` over `Weights`, samples-weighted, `local_steps` per site per round).
//!   Each site keeps its own classifier (its AdamW moments and learning-rate schedule persist across rounds, as in
//!   the GAN federation) and loads the global weights at the start of every round. In the synthetic condition each
//!   site receives from the global generator `ratio ×` *its own* per-class counts — the site can only ask for what it
//!   knows, and a site with a rare class gets more of exactly that class, which is the point of a shared generator
//!   under label skew. (Synthetic data carries no site stain shift; real shards are taken from the unshifted split.)
//! * **Reference check.** When asked for, the cached reference classifier ([`crate::eval::reference`]) measures the
//!   synthetic images themselves: how often it assigns them their conditioning class, and the Fréchet distance to
//!   the real test split in its feature space.
//!
//! Torch work runs on the calling thread; the caller sets the thread budget. Output files are written atomically.
//!
//! Files: [`classify`] (training and scoring the classifier), [`markdown`] (augment.md); this file holds the
//! options, the records and the study itself.

mod classify;
mod markdown;

pub use classify::{
    confusion, confusion_accuracy, macro_f1, predict, scaled_counts, score, train_classifier, train_classifier_once,
    Confusion,
};
pub use markdown::{to_markdown, write_report};

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};
use thiserror::Error;

use crate::data::partition::{partition, Partition};
use crate::data::{DataError, Dataset};
use crate::eval::reference::{ReferenceError, ReferenceExtractor, ReferenceOptions};
use crate::eval::sampling::{describe_model, synthesize, LoadedGenerator, SamplingError};
use crate::federation::strategy::AggregateError;
use crate::models::{frechet_distance, ClassifierConfig, Gan, ModelError};
use classify::*;

/// The `condition` index of the reference check's synthetic draw (apart from every study condition).
const REFERENCE_DRAW: usize = 999;

#[derive(Debug, Error)]
pub enum AugmentError {
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Aggregate(#[from] AggregateError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("invalid augmentation study options: {0}")]
    Options(String),
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// Mean and sample standard deviation (n − 1; 0 for a single value).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

impl Stat {
    pub fn of(values: &[f64]) -> Stat {
        if values.is_empty() {
            return Stat::default();
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Stat { mean, std }
    }
}

/// One trained-and-tested classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub seed: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Images in the training pool (all sites together in the federated setting).
    pub train_images: usize,
    pub synthetic_images: usize,
    pub secs: f64,
}

/// One condition (real only, or real + synthetic at one ratio) over all seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// `real` or `real+synthetic×RATIO`.
    pub name: String,
    /// Synthetic images per real image of the same class (0 for real only).
    pub ratio: f64,
    pub runs: Vec<RunResult>,
    pub accuracy: Stat,
    pub macro_f1: Stat,
    /// Per-seed difference to "real only" (mean, std of the difference); absent for "real only" itself.
    pub gain_accuracy: Option<Stat>,
    pub gain_macro_f1: Option<Stat>,
}

/// The federated half of the study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FederatedReport {
    pub sites: usize,
    pub partition: String,
    pub partition_seed: u64,
    pub rounds: u64,
    pub local_steps: u64,
    /// Real training images per site and class `[site][class]`.
    pub site_class_counts: Vec<Vec<usize>>,
    /// How synthetic images are shared out.
    pub synthetic_policy: String,
    pub conditions: Vec<Condition>,
}

/// What the reference classifier says about the synthetic images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceCheck {
    pub key: String,
    pub cache_hit: bool,
    pub steps: u64,
    /// The reference classifier's accuracy on the real test split.
    pub test_accuracy: f64,
    /// Fraction of synthetic images (as many per class as the test split has) the reference classifier assigns to
    /// their conditioning class.
    pub synthetic_label_agreement: f64,
    /// Fréchet distance between those synthetic images and the real test split in the reference feature space.
    pub frechet_distance: Option<f64>,
    pub warnings: Vec<String>,
}

/// The study's result (`augment.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentReport {
    pub generator: String,
    pub generator_round: Option<u64>,
    pub model: String,
    pub classes: Vec<String>,
    pub train_class_counts: Vec<usize>,
    pub test_images: usize,
    pub classifier_preset: String,
    pub steps: u64,
    pub batch_size: usize,
    pub seeds: Vec<u64>,
    pub ratios: Vec<f64>,
    pub reference: Option<ReferenceCheck>,
    pub centralized: Vec<Condition>,
    pub federated: Option<FederatedReport>,
    pub secs: f64,
}

/// Federated-setting options.
#[derive(Clone, Debug, PartialEq)]
pub struct FederatedOptions {
    pub sites: usize,
    pub partition: Partition,
    /// Seed of the partition (the federation's `federation.seed`, so the shards are the federation's).
    pub partition_seed: u64,
    pub rounds: u64,
    pub local_steps: u64,
}

/// Study options. The torch thread budget is the caller's.
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentOptions {
    pub classifier_preset: String,
    /// Synthetic-to-real ratios per class (each > 0).
    pub ratios: Vec<f64>,
    /// Seeds `base_seed .. base_seed + num_seeds`.
    pub num_seeds: u32,
    pub base_seed: u64,
    /// Classifier steps per centralized run.
    pub steps: u64,
    pub batch_size: usize,
    pub device: Device,
    pub federated: Option<FederatedOptions>,
    /// Reference classifier options and its cache directory; `None` skips the reference check.
    pub reference: Option<(ReferenceOptions, PathBuf)>,
}

impl AugmentOptions {
    fn validate(&self) -> Result<(), AugmentError> {
        let bad = |m: String| Err(AugmentError::Options(m));
        if self.ratios.is_empty() || self.ratios.iter().any(|r| !(r.is_finite() && *r > 0.0 && *r <= 100.0)) {
            return bad(format!("ratios must be finite, > 0 and <= 100, got {:?}", self.ratios));
        }
        if self.num_seeds == 0 || self.steps == 0 || self.batch_size == 0 {
            return bad("seeds, steps and batch size must be at least 1".into());
        }
        if let Some(f) = &self.federated {
            if f.sites == 0 || f.rounds == 0 || f.local_steps == 0 {
                return bad("federated sites, rounds and local steps must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// Progress of a study, for a caller's progress bar or log.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// What just finished, e.g. `centralized real+synthetic×1 seed 2: accuracy 0.81, macro-F1 0.79`.
    pub message: String,
    pub done: usize,
    pub total: usize,
}

/// A seed for one synthetic draw: distinct per (study seed, condition, site) and stable across runs.
fn draw_seed(seed: u64, condition: usize, site: usize) -> i64 {
    let c = (condition as u64).wrapping_add(1).wrapping_mul(1_000);
    seed.wrapping_mul(1_000_003).wrapping_add(c).wrapping_add(site as u64) as i64
}

fn condition_name(ratio: Option<f64>) -> String {
    match ratio {
        None => "real".to_string(),
        Some(r) => format!("real+synthetic×{r}"),
    }
}

fn result(seed: u64, m: &Confusion, train_images: usize, synthetic_images: usize, start: Instant) -> RunResult {
    RunResult {
        seed,
        accuracy: confusion_accuracy(m),
        macro_f1: macro_f1(m),
        train_images,
        synthetic_images,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// Conditions from per-condition runs (index 0 = real only), with paired per-seed gains over real only.
fn summarise(ratios: &[f64], runs: Vec<Vec<RunResult>>) -> Vec<Condition> {
    let base: Vec<RunResult> = runs.first().cloned().unwrap_or_default();
    runs.into_iter()
        .enumerate()
        .map(|(c, runs)| {
            let ratio = if c == 0 { None } else { ratios.get(c - 1).copied() };
            let acc: Vec<f64> = runs.iter().map(|r| r.accuracy).collect();
            let f1: Vec<f64> = runs.iter().map(|r| r.macro_f1).collect();
            let gain = |f: fn(&RunResult) -> f64| {
                let d: Vec<f64> = runs.iter().zip(&base).map(|(r, b)| f(r) - f(b)).collect();
                Stat::of(&d)
            };
            Condition {
                name: condition_name(ratio),
                ratio: ratio.unwrap_or(0.0),
                accuracy: Stat::of(&acc),
                macro_f1: Stat::of(&f1),
                gain_accuracy: (c > 0).then(|| gain(|r| r.accuracy)),
                gain_macro_f1: (c > 0).then(|| gain(|r| r.macro_f1)),
                runs,
            }
        })
        .collect()
}

fn reference_check(
    gan: &Gan,
    train: &Dataset,
    test: &Dataset,
    ref_opts: &ReferenceOptions,
    cache_dir: &Path,
    seed: u64,
    device: Device,
) -> Result<ReferenceCheck, AugmentError> {
    let (ext, info) = ReferenceExtractor::load_or_train(train, test, ref_opts, cache_dir)?;
    let synth = synthesize(gan, &test.class_counts(), &test.classes, test.size, draw_seed(seed, REFERENCE_DRAW, 0))?;
    let mut warnings = info.warnings.clone();
    let logits = map_chunks(&synth, device, |x| ext.logits(x))?;
    let pred = Vec::<i64>::try_from(logits.argmax(-1, false).to_kind(Kind::Int64))
        .map_err(ModelError::torch("reading reference predictions"))?;
    let agree = pred.iter().zip(&synth.labels).filter(|(&p, &l)| p == i64::from(l)).count();
    let agreement = agree as f64 / synth.len().max(1) as f64;
    let fake = map_chunks(&synth, device, |x| ext.features(x))?;
    let real = map_chunks(test, device, |x| ext.features(x))?;
    let frechet_distance = match frechet_distance(&real, &fake) {
        Ok(fd) => Some(fd),
        Err(e) => {
            warnings.push(format!("no Fréchet distance in the reference feature space: {e}"));
            None
        }
    };
    Ok(ReferenceCheck {
        key: info.key,
        cache_hit: info.cache_hit,
        steps: info.steps,
        test_accuracy: info.test_accuracy,
        synthetic_label_agreement: agreement,
        frechet_distance,
        warnings,
    })
}

/// Runs the whole study: the reference check (if asked for), the centralized conditions and the federated ones (if
/// asked for), every condition over every seed. `progress` is called after each trained classifier.
pub fn run_study(
    generator: &LoadedGenerator,
    train: &Dataset,
    test: &Dataset,
    opts: &AugmentOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<AugmentReport, AugmentError> {
    let start = Instant::now();
    opts.validate()?;
    let gan = &generator.gan;
    check_inputs(gan, train, test)?;
    let k = train.num_classes();
    let counts = train.class_counts();
    let seeds: Vec<u64> = (0..u64::from(opts.num_seeds)).map(|s| opts.base_seed.wrapping_add(s)).collect();
    let conditions = 1 + opts.ratios.len();
    let per_setting = seeds.len() * conditions;
    let total = per_setting * (1 + usize::from(opts.federated.is_some())) + usize::from(opts.reference.is_some());
    let mut ticker = Ticker { done: 0, total };

    let mut ccfg = ClassifierConfig::preset(&opts.classifier_preset, i64::from(train.size), k as i64)?;
    ccfg.total_steps = opts.steps as i64;

    let reference = match &opts.reference {
        Some((ref_opts, dir)) => {
            let check = reference_check(gan, train, test, ref_opts, dir, opts.base_seed, opts.device)?;
            ticker.tick(
                format!(
                    "reference classifier ({}): test accuracy {:.3}, synthetic label agreement {:.3}",
                    if check.cache_hit { "cached" } else { "trained" },
                    check.test_accuracy,
                    check.synthetic_label_agreement
                ),
                progress,
            );
            Some(check)
        }
        None => None,
    };
    let arm = Arm { gan, train, test, ccfg: &ccfg, seeds: &seeds, opts };
    let centralized = arm.centralized(&mut ticker, progress)?;
    let federated = match &opts.federated {
        None => None,
        Some(fed) => Some(arm.federated(fed, &mut ticker, progress)?),
    };

    Ok(AugmentReport {
        generator: generator.source.clone(),
        generator_round: generator.round,
        model: describe_model(gan.config()),
        classes: train.classes.clone(),
        train_class_counts: counts,
        test_images: test.len(),
        classifier_preset: opts.classifier_preset.clone(),
        steps: opts.steps,
        batch_size: opts.batch_size,
        seeds,
        ratios: opts.ratios.clone(),
        reference,
        centralized,
        federated,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// The study's inputs must fit each other: both splits non-empty, alike in size and classes, and the generator's.
fn check_inputs(gan: &Gan, train: &Dataset, test: &Dataset) -> Result<(), AugmentError> {
    if train.is_empty() || test.is_empty() {
        return Err(AugmentError::Options("the training and test splits must both hold images".into()));
    }
    if train.size != test.size || train.classes != test.classes {
        return Err(AugmentError::Options("the training and test splits differ in image size or classes".into()));
    }
    let k = train.num_classes();
    if gan.config().image_size != i64::from(train.size) || gan.config().num_classes != k as i64 {
        return Err(AugmentError::Options(format!(
            "the data has {} px images of {k} classes but the generator makes {} px images of {} classes",
            train.size,
            gan.config().image_size,
            gan.config().num_classes
        )));
    }
    Ok(())
}

/// Counts finished runs for the progress callback.
struct Ticker {
    done: usize,
    total: usize,
}

impl Ticker {
    fn tick(&mut self, message: String, progress: &mut dyn FnMut(&Progress)) {
        self.done += 1;
        progress(&Progress { message, done: self.done, total: self.total });
    }
}

/// What both arms of the study share.
struct Arm<'a> {
    gan: &'a Gan,
    train: &'a Dataset,
    test: &'a Dataset,
    ccfg: &'a ClassifierConfig,
    seeds: &'a [u64],
    opts: &'a AugmentOptions,
}

impl Arm<'_> {
    /// Centralized: the whole training split, plus ratio × its per-class counts of synthetic images.
    fn centralized(
        &self,
        ticker: &mut Ticker,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Vec<Condition>, AugmentError> {
        let Arm { gan, train, test, ccfg, seeds, opts } = *self;
        let ccfg = ccfg.clone();
        let counts = train.class_counts();
        let conditions = 1 + opts.ratios.len();
        let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); conditions];
        for &seed in seeds {
            for (c, slot) in runs.iter_mut().enumerate() {
                let t0 = Instant::now();
                let ratio = c.checked_sub(1).and_then(|i| opts.ratios.get(i).copied());
                let (m, pool_len, n_synth) = match ratio {
                    None => (train_central(&ccfg, train, test, seed, opts)?, train.len(), 0),
                    Some(r) => {
                        let synth = synthesize(
                            gan,
                            &scaled_counts(&counts, r),
                            &train.classes,
                            train.size,
                            draw_seed(seed, c, 0),
                        )?;
                        let mut pool = train.clone();
                        pool.extend_from(&synth)?;
                        (train_central(&ccfg, &pool, test, seed, opts)?, pool.len(), synth.len())
                    }
                };
                let r = result(seed, &m, pool_len, n_synth, t0);
                ticker.tick(
                    format!(
                        "centralized {} seed {seed}: accuracy {:.3}, macro-F1 {:.3}",
                        condition_name(ratio),
                        r.accuracy,
                        r.macro_f1
                    ),
                    progress,
                );
                slot.push(r);
            }
        }
        Ok(summarise(&opts.ratios, runs))
    }

    /// Federated: the training split partitioned like the federation, each site's pool topped up by the global
    /// generator with ratio × its own per-class counts, the classifier trained by in-process FedAvg.
    fn federated(
        &self,
        fed: &FederatedOptions,
        ticker: &mut Ticker,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<FederatedReport, AugmentError> {
        let Arm { gan, train, test, ccfg, seeds, opts } = *self;
        let k = train.num_classes();
        let conditions = 1 + opts.ratios.len();
        let parts = partition(&train.labels, k, fed.sites, &fed.partition, fed.partition_seed)?;
        let shards: Vec<Dataset> = parts.iter().map(|idx| train.subset(idx)).collect();
        let mut fcfg = ccfg.clone();
        fcfg.total_steps = (fed.rounds * fed.local_steps) as i64;
        let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); conditions];
        for &seed in seeds {
            for (c, slot) in runs.iter_mut().enumerate() {
                let t0 = Instant::now();
                let ratio = c.checked_sub(1).and_then(|i| opts.ratios.get(i).copied());
                let mut pools = shards.clone();
                let mut n_synth = 0;
                if let Some(r) = ratio {
                    for (site, pool) in pools.iter_mut().enumerate() {
                        let want = scaled_counts(&pool.class_counts(), r);
                        let synth = synthesize(gan, &want, &train.classes, train.size, draw_seed(seed, c, site + 1))?;
                        n_synth += synth.len();
                        pool.extend_from(&synth)?;
                    }
                }
                let m = train_federated(&fcfg, &pools, test, seed, fed, opts)?;
                let pool_len = pools.iter().map(Dataset::len).sum();
                let r = result(seed, &m, pool_len, n_synth, t0);
                ticker.tick(
                    format!(
                        "federated {} seed {seed}: accuracy {:.3}, macro-F1 {:.3}",
                        condition_name(ratio),
                        r.accuracy,
                        r.macro_f1
                    ),
                    progress,
                );
                slot.push(r);
            }
        }
        Ok(FederatedReport {
            sites: fed.sites,
            partition: fed.partition.to_string(),
            partition_seed: fed.partition_seed,
            rounds: fed.rounds,
            local_steps: fed.local_steps,
            site_class_counts: shards.iter().map(Dataset::class_counts).collect(),
            synthetic_policy: "each site receives round(ratio × its own real images of each class) from the \
                               global generator"
                .into(),
            conditions: summarise(&opts.ratios, runs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load, DataSource, LoadOptions};
    use crate::eval::sampling::load_generator;
    use crate::models::{DiscKind, GanKind, ModelConfig};

    fn tiny_model(classes: i64) -> ModelConfig {
        ModelConfig::preset("tiny", GanKind::Cgan, DiscKind::Cnn, classes).unwrap()
    }

    #[test]
    fn macro_f1_of_a_hand_made_confusion() {
        // class 0: TP 3, FP 1, FN 1 → 6/8; class 1: TP 2, FP 1, FN 2 → 4/7; class 2: TP 2, FP 1, FN 0 → 4/5;
        // class 3 never occurs and is never predicted → left out of the average.
        let m = vec![vec![3, 1, 0, 0], vec![1, 2, 1, 0], vec![0, 0, 2, 0], vec![0, 0, 0, 0]];
        let want = (6.0 / 8.0 + 4.0 / 7.0 + 4.0 / 5.0) / 3.0;
        assert!((macro_f1(&m) - want).abs() < 1e-12, "{} vs {want}", macro_f1(&m));
        assert!((confusion_accuracy(&m) - 7.0 / 10.0).abs() < 1e-12);
        // A class that occurs but is never predicted counts with F1 = 0.
        let m = vec![vec![2, 0], vec![2, 0]];
        assert!((macro_f1(&m) - (4.0 / 6.0 + 0.0) / 2.0).abs() < 1e-12);
        assert_eq!(macro_f1(&[vec![0, 0], vec![0, 0]]), 0.0);
        assert_eq!(macro_f1(&[vec![5]]), 1.0);
        let s = Stat::of(&[1.0, 2.0, 3.0]);
        assert!((s.mean - 2.0).abs() < 1e-12 && (s.std - 1.0).abs() < 1e-12);
        assert_eq!(Stat::of(&[0.5]), Stat { mean: 0.5, std: 0.0 });
        assert_eq!(scaled_counts(&[4, 3, 0], 0.5), vec![2, 2, 0]);
    }

    #[test]
    fn tiny_study_end_to_end() {
        tch::set_num_threads(1);
        let dir = tempfile::tempdir().unwrap();
        let opts = LoadOptions {
            size: 32,
            synth_per_class: 10,
            synth_num_classes: 3,
            val_fraction: 0.0,
            test_fraction: 0.3,
            seed: 7,
            ..LoadOptions::default()
        };
        let splits = load(&DataSource::Synthetic, &opts).unwrap();
        let (train, test) = (splits.train, splits.test);
        let model = tiny_model(3);
        let file = dir.path().join("generator.safetensors");
        let g = Gan::new(&model, Device::Cpu, 3).unwrap().generator_weights().unwrap();
        std::fs::write(&file, g.to_safetensors(None).unwrap()).unwrap();
        let generator = load_generator(&file, &model, Device::Cpu, 1).unwrap();

        let ref_opts = ReferenceOptions {
            preset: "tiny".into(),
            steps: 4,
            batch_size: 8,
            seed: 1,
            device: Device::Cpu,
            standardise_input: false,
        };
        let study = AugmentOptions {
            classifier_preset: "tiny".into(),
            ratios: vec![0.5, 1.0],
            num_seeds: 2,
            base_seed: 10,
            steps: 4,
            batch_size: 8,
            device: Device::Cpu,
            federated: Some(FederatedOptions {
                sites: 2,
                partition: "dirichlet:0.5".parse().unwrap(),
                partition_seed: 42,
                rounds: 2,
                local_steps: 2,
            }),
            reference: Some((ref_opts, dir.path().join("refcache"))),
        };
        let mut events = Vec::new();
        let report = run_study(&generator, &train, &test, &study, &mut |p| events.push(p.clone())).unwrap();

        // 1 reference + 2 settings × 2 seeds × 3 conditions.
        assert_eq!(events.len(), 13);
        assert!(events.iter().enumerate().all(|(i, p)| p.done == i + 1 && p.total == 13));
        assert_eq!(report.seeds, vec![10, 11]);
        let counts = train.class_counts();
        assert_eq!(report.train_class_counts, counts);
        let fed = report.federated.as_ref().unwrap();
        for conds in [&report.centralized, &fed.conditions] {
            let names: Vec<&str> = conds.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["real", "real+synthetic×0.5", "real+synthetic×1"]);
            for c in conds.iter() {
                assert_eq!(c.runs.len(), 2);
                assert_eq!(c.runs.iter().map(|r| r.seed).collect::<Vec<_>>(), vec![10, 11]);
                for r in &c.runs {
                    assert!((0.0..=1.0).contains(&r.accuracy) && (0.0..=1.0).contains(&r.macro_f1), "{r:?}");
                    assert_eq!(r.train_images, train.len() + r.synthetic_images);
                }
                let acc: Vec<f64> = c.runs.iter().map(|r| r.accuracy).collect();
                assert_eq!(c.accuracy, Stat::of(&acc));
            }
            assert!(conds[0].gain_accuracy.is_none() && conds[0].runs.iter().all(|r| r.synthetic_images == 0));
            let d: Vec<f64> = conds[2].runs.iter().zip(&conds[0].runs).map(|(a, b)| a.macro_f1 - b.macro_f1).collect();
            assert_eq!(conds[2].gain_macro_f1, Some(Stat::of(&d)));
        }
        // Centralized ratio 1 doubles every class; federated sites each double their own classes (same total).
        assert_eq!(report.centralized[2].runs[0].synthetic_images, train.len());
        assert_eq!(report.centralized[1].runs[0].synthetic_images, scaled_counts(&counts, 0.5).iter().sum::<usize>());
        assert_eq!(fed.conditions[2].runs[0].synthetic_images, train.len());
        let per_class: Vec<usize> = (0..3).map(|k| fed.site_class_counts.iter().map(|s| s[k]).sum()).collect();
        assert_eq!(per_class, counts);
        let reference = report.reference.as_ref().unwrap();
        assert!(!reference.cache_hit && (0.0..=1.0).contains(&reference.synthetic_label_agreement));
        assert!(reference.frechet_distance.is_some_and(|f| f.is_finite() && f >= 0.0));

        let out = dir.path().join("out");
        let (j, m) = write_report(&report, &out).unwrap();
        let back: AugmentReport = serde_json::from_slice(&std::fs::read(j).unwrap()).unwrap();
        assert_eq!(back.centralized.len(), 3);
        let md = std::fs::read_to_string(m).unwrap();
        assert!(md.contains("| real |") && md.contains("## Federated") && md.contains("real+synthetic×0.5"), "{md}");

        // A generator for another image size is refused before any training.
        let mut small = test.clone();
        small.size = 16;
        small.images.truncate(small.len() * 16 * 16 * 3);
        let e = run_study(&generator, &small, &small, &study, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("16 px"), "{e}");
    }
}
