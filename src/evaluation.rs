//! Evaluating the global generator once per round: a class-by-sample grid people can look at, and a number that
//! tracks quality — the Fréchet distance between real held-out images and generated ones in a fixed feature space.
//! Pure library code run on the evaluator's dedicated thread; the evaluator actor only schedules it.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use thiserror::Error;

use crate::data::{grid, DataError, Dataset};
use crate::federation::weights::Weights;
use crate::models::{frechet_distance, simple_features, Gan, ModelConfig, ModelError};

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
}

pub struct GanEvaluator {
    gan: Gan,
    real_features: Tensor,
    num_classes: i64,
    per_class: i64,
    size: u32,
    out_dir: PathBuf,
    seed: i64,
}

/// Converts generator output ([N,3,H,W] in [-1,1]) to HWC RGB bytes.
pub fn to_rgb_bytes(images: &Tensor) -> Vec<u8> {
    let u8s = ((images.clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8)
        .permute([0, 2, 3, 1])
        .contiguous()
        .to_device(Device::Cpu);
    let n = u8s.numel();
    let mut out = vec![0u8; n];
    u8s.copy_data(&mut out, n);
    out
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
        let (pixels, _) = real.batch_f32(&all);
        let size = i64::from(real.size);
        let x = Tensor::from_slice(&pixels).view([real.len() as i64, 3, size, size]).to_device(device);
        let real_features = tch::no_grad(|| simple_features(&x));
        Ok(Self {
            gan,
            real_features,
            num_classes: cfg.num_classes,
            per_class: per_class.max(1) as i64,
            size: real.size,
            out_dir,
            seed: seed as i64,
        })
    }

    pub fn evaluate(&mut self, round: u64, weights: &Weights) -> Result<EvalReport, EvalError> {
        let start = Instant::now();
        self.gan.load_weights(weights)?;
        // Same latent vectors every round, so the grids show the model changing, not the noise.
        let n = self.num_classes * self.per_class;
        let z = self.gan.latent(n, self.seed);
        let labels = Tensor::arange(self.num_classes, (Kind::Int64, Device::Cpu))
            .repeat_interleave_self_int(self.per_class, Some(0), None::<i64>)
            .to_device(self.real_features.device());
        let fake = self.gan.generate(&z, &labels);
        let fake_features = tch::no_grad(|| simple_features(&fake));
        let fd = frechet_distance(&self.real_features, &fake_features)?;
        let bytes = to_rgb_bytes(&fake);
        let img = grid::image_grid(&bytes, self.size, n as usize, self.per_class as usize);
        let dir = self.out_dir.join("samples");
        std::fs::create_dir_all(&dir).map_err(|source| EvalError::Io { path: dir.clone(), source })?;
        let rel = format!("samples/round-{round:03}.png");
        grid::save_png(&img, &self.out_dir.join(&rel))?;
        Ok(EvalReport { round, frechet_distance: fd, samples_png: rel, eval_secs: start.elapsed().as_secs_f64() })
    }
}
