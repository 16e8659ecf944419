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
    /// Fault injection: panic instead of training (tests and chaos scenarios only).
    pub inject_panic: bool,
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
        if job.inject_panic {
            panic!("injected trainer panic (site {}, round {})", self.site_id, job.round);
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
