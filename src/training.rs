//! Local training at a site: load the global weights, run the round's GAN steps on the site's shard, hand back the
//! new weights. Pure library code (tensors and images, no actors, no sockets) so the trainer actor stays a thin
//! shell around it and the loop can be tested and benchmarked on its own. Everything here runs on the trainer's
//! dedicated OS thread: `Tensor` is Send but not Sync and must never sit on a tokio worker.

use std::sync::Arc;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};
use thiserror::Error;

use crate::data::Dataset;
use crate::federation::strategy::SiteHints;
use crate::federation::weights::Weights;
use crate::models::{Gan, ModelConfig, ModelError};

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the site holds no training images")]
    EmptyShard,
    #[error("trained weights hold a non-finite value in `{0}`")]
    NonFiniteWeights(String),
}

/// Why a local job failed, reduced to what the site's supervisor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainFailureKind {
    /// Device out of memory: retry with a smaller batch.
    OutOfMemory,
    /// NaN/Inf losses or weights: restart from the round's starting weights.
    NonFinite,
    /// Anything else (bad data, bad weights, a crash).
    Other,
}

#[derive(Debug, Clone, PartialEq, Error)]
#[error("{kind:?}: {message}")]
pub struct TrainFailure {
    pub kind: TrainFailureKind,
    pub message: String,
}

impl From<TrainError> for TrainFailure {
    fn from(e: TrainError) -> Self {
        let kind = match &e {
            TrainError::Model(ModelError::OutOfMemory { .. }) => TrainFailureKind::OutOfMemory,
            TrainError::Model(ModelError::NonFinite { .. }) | TrainError::NonFiniteWeights(_) => {
                TrainFailureKind::NonFinite
            }
            _ => TrainFailureKind::Other,
        };
        TrainFailure { kind, message: e.to_string() }
    }
}

/// A fault injected into a job on purpose (tests and chaos scenarios only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InjectedFault {
    #[default]
    None,
    /// Panic instead of training.
    Panic,
    /// Fail as if the losses had become NaN.
    NonFinite,
    /// Fail as if the device ran out of memory (unless the batch is already at or below `floor`).
    OutOfMemory { floor: u32 },
}

/// Mean losses over a site's local steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct LossSummary {
    pub d_loss: f64,
    pub g_loss: f64,
}

/// One round's local work.
#[derive(Debug, Clone)]
pub struct LocalJob {
    pub round: u64,
    pub global: Weights,
    pub local_steps: u32,
    pub batch_size: u32,
    pub hints: SiteHints,
    /// Fault injection (tests and chaos scenarios only).
    pub fault: InjectedFault,
}

/// What a round's local work produced.
#[derive(Debug)]
pub struct LocalResult {
    pub round: u64,
    pub weights: Weights,
    pub losses: LossSummary,
    pub steps: u32,
    pub train_secs: f64,
}

pub struct LocalTrainer {
    gan: Gan,
    data: Arc<Dataset>,
    site_id: u32,
    seed: u64,
    device: Device,
}

impl LocalTrainer {
    pub fn new(
        cfg: &ModelConfig,
        device: Device,
        data: Arc<Dataset>,
        site_id: u32,
        seed: u64,
    ) -> Result<Self, TrainError> {
        if data.is_empty() {
            return Err(TrainError::EmptyShard);
        }
        let gan = Gan::new(cfg, device, seed as i64 + i64::from(site_id))?;
        Ok(Self { gan, data, site_id, seed, device })
    }

    pub fn run(&mut self, job: &LocalJob) -> Result<LocalResult, TrainError> {
        match job.fault {
            InjectedFault::None => {}
            InjectedFault::Panic => panic!("injected trainer panic (site {}, round {})", self.site_id, job.round),
            InjectedFault::NonFinite => {
                return Err(TrainError::Model(ModelError::NonFinite {
                    what: "injected d_loss".into(),
                    step: 0,
                    value: f64::NAN,
                }))
            }
            InjectedFault::OutOfMemory { floor } if job.batch_size > floor => {
                return Err(TrainError::Model(ModelError::OutOfMemory {
                    context: "injected".into(),
                    message: format!("CUDA out of memory (injected at batch {})", job.batch_size),
                }))
            }
            InjectedFault::OutOfMemory { .. } => {}
        }
        let start = Instant::now();
        self.gan.load_weights(&job.global)?;
        self.gan.set_proximal(job.hints.proximal_mu);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (u64::from(self.site_id) << 32) ^ job.round);
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        order.shuffle(&mut rng);
        let batch = (job.batch_size as usize).min(self.data.len()).max(1);
        let size = i64::from(self.data.size);
        let (mut d_sum, mut g_sum) = (0.0, 0.0);
        let mut cursor = 0;
        for _ in 0..job.local_steps {
            if cursor + batch > order.len() {
                order.shuffle(&mut rng);
                cursor = 0;
            }
            let idx = &order[cursor..cursor + batch];
            cursor += batch;
            let (pixels, labels) = self.data.batch_f32(idx);
            let x = Tensor::from_slice(&pixels).view([batch as i64, 3, size, size]).to_device(self.device);
            let y = Tensor::from_slice(&labels).to_device(self.device);
            let losses = self.gan.train_step(&x, &y)?;
            d_sum += losses.d_loss;
            g_sum += losses.g_loss;
        }
        let weights = self.gan.weights()?;
        if let Some(name) = weights.first_non_finite() {
            return Err(TrainError::NonFiniteWeights(name.to_string()));
        }
        let n = f64::from(job.local_steps.max(1));
        Ok(LocalResult {
            round: job.round,
            weights,
            losses: LossSummary { d_loss: d_sum / n, g_loss: g_sum / n },
            steps: job.local_steps,
            train_secs: start.elapsed().as_secs_f64(),
        })
    }
}
