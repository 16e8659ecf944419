//! `histofed train --centralized`: the GAN trained on the whole training split in one process (the paper's
//! centralized baseline), with the same local trainer the sites run and the same evaluator the server runs (grid +
//! fixed-feature FD every `every` steps); the final generator is saved for the studies.
//!
//! Why in `eval`: it is a training loop interleaved with evaluation, so it sits above both.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Device;
use thiserror::Error;

use super::gan_evaluator::{EvalError, GanEvaluator};
use crate::data::Dataset;
use crate::faults::InjectedFault;
use crate::federation::strategy::SiteHints;
use crate::models::gan::GENERATOR_PREFIX;
use crate::models::{Gan, ModelConfig, ModelError};
use crate::train::{LocalJob, LocalTrainer, TrainError};

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
    /// Stop at the first evaluation point after this much training time (a time-boxed run, e.g. the GPU check's),
    /// even if `steps` are not done.
    pub max_secs: Option<f64>,
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
        if run.max_secs.is_some_and(|m| start.elapsed().as_secs_f64() >= m) {
            break;
        }
    }
    let path = run.out_dir.join("generator.safetensors");
    let generator = weights.strip_prefix(GENERATOR_PREFIX);
    let bytes = generator.to_safetensors(None).map_err(ModelError::from)?;
    std::fs::write(&path, bytes).map_err(|e| CentralError::Write { path: path.clone(), message: e.to_string() })?;
    Ok(points)
}
