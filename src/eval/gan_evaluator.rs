//! Evaluating the global generator once per round: a class-by-sample grid people can look at, and a number that
//! tracks quality — the Fréchet distance between real held-out images and generated ones in a fixed feature space.
//! Pure library code run on the evaluator's dedicated thread; the evaluator actor only schedules it.
//!
//! Every `evaluation.eval_every` rounds and after the last one it also runs the full quality suite
//! (`assessment`): reference-classifier features, per-class Fréchet distances, precision/recall, memorization, mode
//! collapse and class similarity, with their pictures under `quality/round-NNN/`. The reference classifier is
//! trained (or loaded from its cache) when the evaluator starts, on the evaluator's own thread, so the rounds run
//! meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use thiserror::Error;

use super::sampling::to_rgb_bytes;
use crate::data::{grid, DataError, Dataset};
use crate::eval::assessment::{AssessError, AssessOptions, Assessor};
use crate::federation::weights::Weights;
use crate::models::{frechet_distance, simple_features, Gan, ModelConfig, ModelError};
pub use crate::records::RoundQuality;

#[derive(Debug, Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("the evaluator holds no real images")]
    NoRealImages,
    #[error("cannot create {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Boxed: the reference classifier's errors include centralized training's, which include this enum.
    #[error(transparent)]
    Assess(Box<AssessError>),
}

impl From<AssessError> for EvalError {
    fn from(e: AssessError) -> Self {
        EvalError::Assess(Box::new(e))
    }
}

/// When and against what the evaluator runs the full quality suite.
#[derive(Debug, Clone)]
pub struct QualitySetup {
    /// The real training split (the reference classifier's training data and the memorization check's haystack).
    pub train: Arc<Dataset>,
    pub options: AssessOptions,
    /// Every this many rounds (> 0), and at `last_round`.
    pub every: u64,
    pub last_round: u64,
}

impl QualitySetup {
    pub fn due(&self, round: u64) -> bool {
        self.every > 0 && (round.is_multiple_of(self.every) || round == self.last_round)
    }
}

/// What the evaluator measured for one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub round: u64,
    /// Fréchet distance between real held-out and generated images in the evaluator's feature space.
    pub frechet_distance: f64,
    /// Path of the sample grid, relative to the run directory.
    pub samples_png: String,
    pub eval_secs: f64,
    /// The full quality suite, on rounds where it ran.
    #[serde(default)]
    pub quality: Option<RoundQuality>,
}

pub struct GanEvaluator {
    gan: Gan,
    real_features: Tensor,
    num_classes: i64,
    per_class: i64,
    size: u32,
    out_dir: PathBuf,
    seed: i64,
    quality: Option<(QualitySetup, Assessor)>,
}

impl GanEvaluator {
    /// `real` is the held-out set the generated images are compared with; grids go to `out_dir/samples/`.
    pub fn new(
        cfg: &ModelConfig,
        device: Device,
        real: &Dataset,
        per_class: usize,
        out_dir: PathBuf,
        seed: u64,
    ) -> Result<Self, EvalError> {
        if real.is_empty() {
            return Err(EvalError::NoRealImages);
        }
        let gan = Gan::new(cfg, device, seed as i64)?;
        let all: Vec<usize> = (0..real.len()).collect();
        let (x, _) = crate::train::batch_tensors(real, &all, device);
        let real_features = tch::no_grad(|| simple_features(&x));
        Ok(Self {
            gan,
            real_features,
            num_classes: cfg.num_classes,
            per_class: per_class.max(1) as i64,
            size: real.size,
            out_dir,
            seed: seed as i64,
            quality: None,
        })
    }

    /// Adds the full quality suite: loads or trains the reference classifier now and embeds the real splits.
    pub fn enable_quality(&mut self, setup: QualitySetup, test: &Dataset) -> Result<(), EvalError> {
        let assessor = Assessor::new(&setup.train, test, setup.options.clone())?;
        tracing::info!(
            test_accuracy = assessor.reference_test_accuracy(),
            cached = assessor.info.cache_hit,
            "reference classifier ready"
        );
        self.quality = Some((setup, assessor));
        Ok(())
    }

    pub fn evaluate(&mut self, round: u64, weights: &Weights) -> Result<EvalReport, EvalError> {
        let start = Instant::now();
        self.gan.load_weights(weights)?;
        self.gan.settle_generator_statistics()?;
        // Same latent vectors every round, so the grids show the model changing, not the noise.
        let n = self.num_classes * self.per_class;
        let z = self.gan.latent(n, self.seed);
        let labels = Tensor::arange(self.num_classes, (Kind::Int64, Device::Cpu))
            .repeat_interleave_self_int(self.per_class, Some(0), None::<i64>)
            .to_device(self.real_features.device());
        let fake = self.gan.generate(&z, &labels);
        let fake_features = tch::no_grad(|| simple_features(&fake));
        let fd = frechet_distance(&self.real_features, &fake_features)?;
        let rel = format!("samples/round-{round:03}.png");
        save_grid(&fake, self.size, self.per_class, &self.out_dir.join(&rel))?;
        let quality = match &self.quality {
            Some((setup, assessor)) if setup.due(round) => Some(self.full_quality(round, assessor)?),
            _ => None,
        };
        Ok(EvalReport {
            round,
            frechet_distance: fd,
            samples_png: rel,
            eval_secs: start.elapsed().as_secs_f64(),
            quality,
        })
    }

    fn full_quality(&self, round: u64, assessor: &Assessor) -> Result<RoundQuality, EvalError> {
        let rel_dir = format!("quality/round-{round:03}");
        let dir = self.out_dir.join(&rel_dir);
        let a = assessor.assess(&self.gan, self.seed ^ 0x5eed, &dir)?;
        let json = serde_json::to_vec_pretty(&a.report).unwrap_or_default();
        crate::federation::checkpoint::write_atomic(&dir, "quality.json", &json)
            .map_err(|e| EvalError::Io { path: dir.join("quality.json"), source: std::io::Error::other(e) })?;
        tracing::info!(
            round,
            fd = a.summary.fd,
            precision = a.summary.precision,
            recall = a.summary.recall,
            memorized = a.summary.memorized_share,
            coverage = a.summary.class_coverage,
            "quality suite"
        );
        Ok(RoundQuality {
            summary: a.summary,
            reference_test_accuracy: assessor.reference_test_accuracy(),
            report_json: format!("{rel_dir}/quality.json"),
            pictures: a.pictures.iter().map(|p| format!("{rel_dir}/{p}")).collect(),
            secs: a.secs,
        })
    }
}

/// Grid tiles are at least this many pixels wide: smaller images are enlarged (nearest neighbour, so no detail is
/// invented) for a person to see their structure.
const MIN_TILE: u32 = 64;

fn save_grid(images: &Tensor, size: u32, per_class: i64, path: &Path) -> Result<(), EvalError> {
    let n = images.size()[0] as usize;
    let (images, size) = if size > 0 && size < MIN_TILE {
        let s = i64::from(MIN_TILE / size * size);
        (images.upsample_nearest2d([s, s], None, None), s as u32)
    } else {
        (images.shallow_clone(), size)
    };
    let bytes = to_rgb_bytes(&images);
    let img = grid::image_grid(&bytes, size, n, per_class.max(1) as usize);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| EvalError::Io { path: dir.to_path_buf(), source })?;
    }
    grid::save_png(&img, path)?;
    Ok(())
}

/// A class-by-sample grid (`per_class` images of every class, one class per row) of `gan`, fixed by `seed`.
pub fn sample_grid(gan: &Gan, per_class: i64, seed: i64, path: &Path) -> Result<(), EvalError> {
    let k = gan.config().num_classes;
    let z = gan.latent(k * per_class, seed);
    let labels =
        Tensor::arange(k, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(per_class, Some(0), None::<i64>);
    let fake = gan.try_generate(&z, &labels)?;
    save_grid(&fake, gan.config().image_size as u32, per_class, path)
}
