//! The reproduction loop: reference classifier and baseline once, then each cell — train, assess, score the
//! augmentation gain, write the cell's JSON — then the claims and the report. Runs on the calling thread (tch).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::assessment::{AssessOptions, Assessor};
use crate::augment_study::{scaled_counts, synthesize, train_classifier_once, Stat};
use crate::data::{partition, Dataset, Splits};
use crate::federation::checkpoint::write_atomic;
use crate::federation::strategy::FedAvg;
use crate::models::{ClassifierConfig, DiscKind, Gan, GanKind, ModelConfig};
use crate::quality::QualityOptions;
use crate::reference::ReferenceOptions;
use crate::simulation::{train_centralized, train_federated};

use super::{cell_name, claims, report, Baseline, CellResult, ReproduceError, ReproduceOptions, Reproduction, Setting};

/// Seeds of the classifier runs: the same seeds for the baseline and every cell, so gains are paired.
fn classifier_seeds(opts: &ReproduceOptions) -> Vec<u64> {
    (0..u64::from(opts.preset.seeds.max(1))).map(|i| opts.seed + 1000 + i).collect()
}

fn classifier_config(opts: &ReproduceOptions, train: &Dataset) -> Result<ClassifierConfig, ReproduceError> {
    let mut c = ClassifierConfig::preset(&opts.preset.classifier, i64::from(train.size), train.num_classes() as i64)?;
    c.total_steps = i64::from(opts.preset.classifier_steps.max(1));
    Ok(c)
}

/// Trains the classifier once per seed on `train`, tests on `test`: (accuracy, macro-F1) per seed.
fn classifier_scores(
    opts: &ReproduceOptions,
    train: &Dataset,
    test: &Dataset,
) -> Result<(Vec<f64>, Vec<f64>), ReproduceError> {
    let cfg = classifier_config(opts, train)?;
    let (mut acc, mut f1) = (Vec::new(), Vec::new());
    for seed in classifier_seeds(opts) {
        let r =
            train_classifier_once(&cfg, train, test, u64::from(opts.preset.classifier_steps), 32, seed, opts.device)
                .map_err(|e| ReproduceError::Cell { cell: "classifier".into(), message: e.to_string() })?;
        acc.push(r.accuracy);
        f1.push(r.macro_f1);
    }
    Ok((acc, f1))
}

fn model_config(opts: &ReproduceOptions, gan: &str, disc: &str, classes: usize) -> Result<ModelConfig, ReproduceError> {
    let g: GanKind = gan.parse().map_err(|e| ReproduceError::Cell { cell: gan.into(), message: format!("{e}") })?;
    let d: DiscKind = disc.parse().map_err(|e| ReproduceError::Cell { cell: disc.into(), message: format!("{e}") })?;
    Ok(ModelConfig::preset(&opts.preset.model, g, d, classes as i64)?)
}

/// A key of everything that decides a cell's result: a stored cell with another key is recomputed.
fn cell_key(opts: &ReproduceOptions, splits: &Splits) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_string(&(&opts.preset, opts.seed, crate::reference::dataset_fingerprint(&splits.train)))
        .unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCell {
    key: String,
    cell: CellResult,
}

fn load_cell(dir: &Path, name: &str, key: &str) -> Option<CellResult> {
    let bytes = std::fs::read(dir.join(format!("{name}.json"))).ok()?;
    let stored: StoredCell = serde_json::from_slice(&bytes).ok()?;
    (stored.key == key).then_some(stored.cell)
}

/// Runs the whole grid. `splits` is the data (train/val/test); `progress` hears one line per step.
pub fn run(
    opts: &ReproduceOptions,
    splits: &Splits,
    mut progress: impl FnMut(&str),
) -> Result<Reproduction, ReproduceError> {
    let start = Instant::now();
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let p = &opts.preset;
    if splits.train.is_empty() {
        return Err(ReproduceError::EmptySplit("training"));
    }
    if splits.test.is_empty() {
        return Err(ReproduceError::EmptySplit("test"));
    }
    let cells_dir = opts.out_dir.join("cells");
    std::fs::create_dir_all(&cells_dir)
        .map_err(|e| ReproduceError::Write { path: cells_dir.clone(), message: e.to_string() })?;
    let key = cell_key(opts, splits);

    progress("reference classifier: loading from cache or training");
    let assess_opts = AssessOptions {
        reference: ReferenceOptions {
            preset: p.classifier.clone(),
            steps: u64::from(p.reference_steps),
            batch_size: 32,
            seed: opts.seed,
            device: opts.device,
        },
        cache_dir: opts.reference_cache.clone(),
        quality: QualityOptions::default(),
        samples_per_class: p.eval_per_class,
    };
    let assessor = Assessor::new(&splits.train, &splits.test, assess_opts)
        .map_err(|e| ReproduceError::Reference(e.to_string()))?;
    progress(&format!(
        "reference classifier: test accuracy {:.3} ({})",
        assessor.reference_test_accuracy(),
        if assessor.info.cache_hit { "cached" } else { "trained" }
    ));

    progress("baseline: classifier on real images only");
    let (base_acc, base_f1) = classifier_scores(opts, &splits.train, &splits.test)?;
    let (a, f) = (Stat::of(&base_acc), Stat::of(&base_f1));
    let baseline = Baseline {
        accuracy: a.mean,
        accuracy_std: a.std,
        macro_f1: f.mean,
        macro_f1_std: f.std,
        per_seed_accuracy: base_acc.clone(),
        per_seed_f1: base_f1.clone(),
    };
    progress(&format!("baseline: accuracy {:.3} ± {:.3}, macro-F1 {:.3}", a.mean, a.std, f.mean));

    let train = Arc::new(splits.train.clone());
    let classes = splits.train.num_classes();
    let mut cells = Vec::new();
    let total = Setting::ALL.len() * p.gans.len() * p.discs.len();
    for setting in Setting::ALL {
        let shards: Vec<Arc<Dataset>> = match setting.partition() {
            None => Vec::new(),
            Some(spec) => {
                let scheme = spec.parse::<partition::Partition>()?;
                let parts = partition::partition(&splits.train.labels, classes, p.sites as usize, &scheme, opts.seed)?;
                parts.iter().map(|idx| Arc::new(splits.train.subset(idx))).collect()
            }
        };
        for gan in &p.gans {
            for disc in &p.discs {
                let name = cell_name(gan, disc, setting);
                if let Some(done) = load_cell(&cells_dir, &name, &key) {
                    progress(&format!("[{}/{total}] {name}: done in an earlier run, kept", cells.len() + 1));
                    cells.push(done);
                    continue;
                }
                progress(&format!("[{}/{total}] {name}: training", cells.len() + 1));
                let cell = run_cell(opts, &assessor, &train, &shards, &baseline, gan, disc, setting, &splits.test)
                    .map_err(|e| match e {
                        ReproduceError::Cell { .. } => e,
                        other => ReproduceError::Cell { cell: name.clone(), message: other.to_string() },
                    })?;
                progress(&format!(
                    "[{}/{total}] {name}: FD {:.3}, precision {:.2}, recall {:.2}, gain {:+.1} points ({:.0} s)",
                    cells.len() + 1,
                    cell.fd,
                    cell.precision,
                    cell.recall,
                    100.0 * cell.gain_accuracy,
                    cell.train_secs + cell.eval_secs
                ));
                let bytes = serde_json::to_vec_pretty(&StoredCell { key: key.clone(), cell: cell.clone() })
                    .map_err(|e| ReproduceError::Write { path: cells_dir.clone(), message: e.to_string() })?;
                write_atomic(&cells_dir, &format!("{name}.json"), &bytes)
                    .map_err(|e| ReproduceError::Write { path: cells_dir.clone(), message: e.to_string() })?;
                cells.push(cell);
            }
        }
    }
    let claims = claims::judge(&cells);
    let rep = Reproduction {
        preset: p.clone(),
        data: opts.data_label.clone(),
        commit: opts.commit.clone(),
        started,
        total_secs: start.elapsed().as_secs_f64(),
        reference_test_accuracy: assessor.reference_test_accuracy(),
        baseline,
        cells,
        claims,
    };
    report::write(&opts.out_dir, &rep)?;
    if let Err(e) = report::plots(&opts.out_dir, &rep) {
        tracing::warn!(error = %e, "cannot draw the reproduction plots");
    }
    Ok(rep)
}

#[allow(clippy::too_many_arguments)]
fn run_cell(
    opts: &ReproduceOptions,
    assessor: &Assessor,
    train: &Arc<Dataset>,
    shards: &[Arc<Dataset>],
    baseline: &Baseline,
    gan_name: &str,
    disc: &str,
    setting: Setting,
    test: &Dataset,
) -> Result<CellResult, ReproduceError> {
    let p = &opts.preset;
    let name = cell_name(gan_name, disc, setting);
    let model = model_config(opts, gan_name, disc, train.num_classes())?;
    let t0 = Instant::now();
    let mut last = None;
    let cell_err = |m: String| ReproduceError::Cell { cell: name.clone(), message: m };
    let weights = match setting {
        Setting::Centralized => {
            let chunk = (p.gan_steps / 10).max(1);
            train_centralized(&model, opts.device, train.clone(), p.gan_steps, chunk, p.batch_size, opts.seed, |r| {
                last = Some(r.losses)
            })
        }
        _ => train_federated(
            &model,
            opts.device,
            shards,
            &mut FedAvg::new(),
            p.rounds,
            p.local_steps(),
            p.batch_size,
            opts.seed,
            |r| last = Some(r.losses),
        ),
    }
    .map_err(|e| cell_err(e.to_string()))?;
    let train_secs = t0.elapsed().as_secs_f64();
    let mut gan = Gan::new(&model, opts.device, opts.seed as i64)?;
    gan.load_weights(&weights)?;

    let cell_dir = opts.out_dir.join("cells").join(&name);
    let t1 = Instant::now();
    let a = assessor.assess(&gan, opts.seed as i64, &cell_dir).map_err(|e| cell_err(e.to_string()))?;
    let mut pictures: Vec<String> = a.pictures.iter().map(|f| format!("cells/{name}/{f}")).collect();
    // A sample grid of this cell's generator, for people.
    let grid_rel = format!("cells/{name}/samples.png");
    match crate::evaluation::sample_grid(&gan, 8, opts.seed as i64, &opts.out_dir.join(&grid_rel)) {
        Ok(()) => pictures.insert(0, grid_rel),
        Err(e) => tracing::warn!(cell = %name, error = %e, "cannot draw the sample grid"),
    }

    // Augmentation gain: real + synthetic (ratio × per-class count) vs the real-only baseline, paired by seed.
    let counts = scaled_counts(&train.class_counts(), p.ratio);
    let synth = synthesize(&gan, &counts, &train.classes, train.size, opts.seed as i64 + 17)
        .map_err(|e| cell_err(e.to_string()))?;
    let mut augmented = (**train).clone();
    augmented.extend_from(&synth)?;
    let (acc, f1) = classifier_scores(opts, &augmented, test)?;
    let gains: Vec<f64> = acc.iter().zip(&baseline.per_seed_accuracy).map(|(a, b)| a - b).collect();
    let gains_f1: Vec<f64> = f1.iter().zip(&baseline.per_seed_f1).map(|(a, b)| a - b).collect();
    let (g, gf) = (Stat::of(&gains), Stat::of(&gains_f1));
    let losses = last.unwrap_or_default();
    Ok(CellResult {
        gan: gan_name.into(),
        disc: disc.into(),
        setting,
        fd: a.summary.fd,
        precision: a.summary.precision,
        recall: a.summary.recall,
        memorized_share: a.summary.memorized_share,
        class_coverage: a.summary.class_coverage,
        label_agreement: a.summary.label_agreement,
        diversity_ratio: a.summary.diversity_ratio,
        accuracy: Stat::of(&acc).mean,
        macro_f1: Stat::of(&f1).mean,
        gain_accuracy: g.mean,
        gain_accuracy_std: g.std,
        gain_f1: gf.mean,
        final_d_loss: losses.d_loss,
        final_g_loss: losses.g_loss,
        train_secs,
        eval_secs: t1.elapsed().as_secs_f64(),
        pictures,
        quality: Some(a.report),
    })
}
