//! Centralized training — the baseline the paper compares federated training with, and the quickest way to check
//! that a model configuration learns at all: the GAN (or the ViT classifier) trained on the whole training split in
//! one process, with the same local-training and evaluation code the federation uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Device;
use thiserror::Error;

use crate::data::Dataset;
use crate::evaluation::{EvalError, GanEvaluator};
use crate::federation::strategy::SiteHints;
use crate::models::{Classifier, ClassifierConfig, Gan, ModelConfig, ModelError};
use crate::training::{batch_tensors, InjectedFault, LocalJob, LocalTrainer, TrainError};

#[derive(Debug, Error)]
pub enum CentralError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("the {0} split is empty")]
    EmptySplit(&'static str),
}

/// One evaluation point of a centralized GAN run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanPoint {
    pub step: u64,
    pub d_loss: f64,
    pub g_loss: f64,
    pub frechet_distance: f64,
    pub samples_png: String,
    pub secs: f64,
}

pub struct GanRun<'a> {
    pub model: &'a ModelConfig,
    pub device: Device,
    pub train: Arc<Dataset>,
    pub test: &'a Dataset,
    pub steps: u64,
    pub every: u64,
    pub batch_size: u32,
    pub seed: u64,
    pub grid_per_class: usize,
    pub out_dir: &'a Path,
}

/// Trains the GAN centrally; evaluates (grid + FD) every `every` steps; saves the final weights.
pub fn train_gan(run: &GanRun, mut on_point: impl FnMut(&GanPoint)) -> Result<Vec<GanPoint>, CentralError> {
    let start = Instant::now();
    let mut trainer = LocalTrainer::new(run.model, run.device, run.train.clone(), 0, run.seed)?;
    let mut evaluator =
        GanEvaluator::new(run.model, run.device, run.test, run.grid_per_class, run.out_dir.to_path_buf(), run.seed)?;
    let mut weights = Gan::new(run.model, run.device, run.seed as i64)?.weights()?;
    let mut points = Vec::new();
    let mut done = 0;
    while done < run.steps {
        let chunk = run.every.min(run.steps - done).max(1);
        let job = LocalJob {
            round: done / run.every.max(1) + 1,
            global: weights,
            local_steps: chunk as u32,
            batch_size: run.batch_size,
            hints: SiteHints::default(),
            global_sha256: String::new(),
            fault: InjectedFault::None,
        };
        let result = trainer.run(&job)?;
        done += chunk;
        weights = result.weights;
        let eval = evaluator.evaluate(done, &weights)?;
        let point = GanPoint {
            step: done,
            d_loss: result.losses.d_loss,
            g_loss: result.losses.g_loss,
            frechet_distance: eval.frechet_distance,
            samples_png: eval.samples_png,
            secs: start.elapsed().as_secs_f64(),
        };
        on_point(&point);
        points.push(point);
    }
    let path = run.out_dir.join("generator.safetensors");
    let generator = weights.strip_prefix(crate::actors::server::GENERATOR);
    let bytes = generator.to_safetensors(None).map_err(ModelError::from)?;
    std::fs::write(&path, bytes).map_err(|e| CentralError::Write { path: path.clone(), message: e.to_string() })?;
    Ok(points)
}

/// One evaluation point of a classifier run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierPoint {
    pub step: u64,
    pub loss: f64,
    pub test_accuracy: f64,
    pub secs: f64,
}

/// Test accuracy of a classifier, in batches so memory stays bounded.
pub fn accuracy(clf: &Classifier, ds: &Dataset, device: Device) -> Result<f64, ModelError> {
    let mut correct = 0.0;
    let all: Vec<usize> = (0..ds.len()).collect();
    for chunk in all.chunks(256) {
        let (x, y) = batch_tensors(ds, chunk, device);
        correct += clf.try_accuracy(&x, &y)? * chunk.len() as f64;
    }
    Ok(correct / ds.len().max(1) as f64)
}

pub struct ClassifierRun<'a> {
    pub config: &'a ClassifierConfig,
    pub device: Device,
    pub train: &'a Dataset,
    pub test: &'a Dataset,
    pub steps: u64,
    pub every: u64,
    pub batch_size: usize,
    pub seed: u64,
}

/// Trains the ViT classifier on `train` for `steps`, measuring test accuracy every `every` steps.
pub fn train_classifier(
    run: &ClassifierRun,
    mut on_point: impl FnMut(&ClassifierPoint),
) -> Result<(Classifier, Vec<ClassifierPoint>), CentralError> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let ClassifierRun { config: cfg, device, train, test, steps, every, batch_size, seed } = *run;
    if train.is_empty() {
        return Err(CentralError::EmptySplit("training"));
    }
    if test.is_empty() {
        return Err(CentralError::EmptySplit("test"));
    }
    let start = Instant::now();
    let mut clf = Classifier::new(cfg, device, seed as i64)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let batch = batch_size.clamp(1, train.len());
    let (mut cursor, mut loss_sum, mut n) = (order.len(), 0.0, 0u64);
    let mut points = Vec::new();
    for step in 1..=steps {
        if cursor + batch > order.len() {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let (x, y) = batch_tensors(train, &order[cursor..cursor + batch], device);
        cursor += batch;
        loss_sum += clf.train_step(&x, &y)?;
        n += 1;
        if step % every.max(1) == 0 || step == steps {
            let point = ClassifierPoint {
                step,
                loss: loss_sum / n as f64,
                test_accuracy: accuracy(&clf, test, device)?,
                secs: start.elapsed().as_secs_f64(),
            };
            on_point(&point);
            points.push(point);
            loss_sum = 0.0;
            n = 0;
        }
    }
    Ok((clf, points))
}
