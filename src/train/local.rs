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
use crate::faults::InjectedFault;
use crate::federation::site_store::{Progress, SiteStore};
use crate::federation::strategy::SiteHints;
use crate::federation::weights::Weights;
use crate::models::{Gan, ModelConfig, ModelError};
use crate::records::LossSummary;

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

/// One round's local work.
#[derive(Debug, Clone)]
pub struct LocalJob {
    pub round: u64,
    pub global: Weights,
    pub local_steps: u32,
    pub batch_size: u32,
    pub hints: SiteHints,
    /// SHA-256 of the global weights (hex): with the round, it names this job's local checkpoints.
    pub global_sha256: String,
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
    /// Step this run resumed from (a local checkpoint of the same round and global weights); 0 = from the start.
    pub resumed_from_step: u32,
}

/// Where and how often a trainer checkpoints its progress within a round.
#[derive(Debug, Clone)]
pub struct LocalCheckpoints {
    pub store: SiteStore,
    /// Save every this many local steps (0 = never mid-round).
    pub every: u32,
}

pub struct LocalTrainer {
    gan: Gan,
    data: Arc<Dataset>,
    site_id: u32,
    seed: u64,
    device: Device,
    checkpoints: Option<LocalCheckpoints>,
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
        Ok(Self { gan, data, site_id, seed, device, checkpoints: None })
    }

    /// Checkpoint progress within a round to `c.store`, and resume from it.
    pub fn with_checkpoints(mut self, c: Option<LocalCheckpoints>) -> Self {
        self.checkpoints = c;
        self
    }

    fn save_progress(&self, p: &Progress) {
        let Some(c) = &self.checkpoints else { return };
        match self.gan.weights() {
            Ok(w) if w.first_non_finite().is_none() => {
                if let Err(e) = c.store.save_progress(p, &w) {
                    tracing::warn!(round = p.round, step = p.steps_done, error = %e, "cannot save local progress");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read weights for a local checkpoint"),
        }
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
            InjectedFault::Slow { delay_ms } => std::thread::sleep(std::time::Duration::from_millis(delay_ms)),
        }
        let start = Instant::now();
        let resumed = self.checkpoints.as_ref().and_then(|c| c.store.load_progress(job.round, &job.global_sha256));
        let (mut d_sum, mut g_sum) = (0.0, 0.0);
        let mut first_step = 0;
        self.gan.load_weights(&job.global)?;
        // FedProx's anchor is the round's global weights, also when resuming.
        self.gan.set_proximal(job.hints.proximal_mu);
        if let Some((p, w)) = resumed.filter(|(p, _)| p.steps_done <= job.local_steps) {
            tracing::info!(round = job.round, step = p.steps_done, "resuming the round from a local checkpoint");
            self.gan.restore_weights(&w)?;
            (first_step, d_sum, g_sum) = (p.steps_done, p.d_sum, p.g_sum);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ (u64::from(self.site_id) << 32) ^ job.round ^ (u64::from(first_step) << 48),
        );
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        order.shuffle(&mut rng);
        let batch = (job.batch_size as usize).min(self.data.len()).max(1);
        let every = self.checkpoints.as_ref().map(|c| c.every).unwrap_or(0);
        let mut cursor = 0;
        for step in first_step..job.local_steps {
            if cursor + batch > order.len() {
                order.shuffle(&mut rng);
                cursor = 0;
            }
            let idx = &order[cursor..cursor + batch];
            cursor += batch;
            let (x, y) = batch_tensors(&self.data, idx, self.device);
            let losses = self.gan.train_step(&x, &y)?;
            d_sum += losses.d_loss;
            g_sum += losses.g_loss;
            let done = step + 1;
            if every > 0 && done % every == 0 && done < job.local_steps {
                self.save_progress(&Progress {
                    round: job.round,
                    global_sha256: job.global_sha256.clone(),
                    steps_done: done,
                    batch_size: job.batch_size,
                    d_sum,
                    g_sum,
                });
            }
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
            resumed_from_step: first_step,
        })
    }
}

/// Images `idx` of `ds` as a [N, 3, H, W] f32 tensor in [-1, 1] and their labels as Int64 [N], on `device`.
pub fn batch_tensors(ds: &Dataset, idx: &[usize], device: Device) -> (Tensor, Tensor) {
    let (pixels, labels) = ds.batch_f32(idx);
    let s = i64::from(ds.size);
    (
        Tensor::from_slice(&pixels).view([idx.len() as i64, 3, s, s]).to_device(device),
        Tensor::from_slice(&labels).to_device(device),
    )
}

/// The bench model: `params` random values in ten tensors under the generator/discriminator prefixes, so the
/// federation code (bulk plane, strategies, checkpoints) sees the same shape of bundle as a real model.
pub fn bench_weights(params: u64, seed: u64) -> Result<Weights, TrainError> {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let parts = 10u64.min(params);
    let mut tensors = Vec::new();
    for i in 0..parts {
        let n = (params / parts + u64::from(i < params % parts)) as usize;
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(-0.1f32..0.1)).collect();
        let prefix = if i < parts / 2 { crate::models::GENERATOR_PREFIX } else { crate::models::DISCRIMINATOR_PREFIX };
        let t = crate::federation::weights::NamedTensor::new(format!("{prefix}w{i:02}"), vec![n], data)
            .map_err(|e| TrainError::Model(ModelError::Weights(e.to_string())))?;
        tensors.push(t);
    }
    Weights::new(tensors).map_err(|e| TrainError::Model(ModelError::Weights(e.to_string())))
}

/// The bench "training": the global weights plus a small random perturbation (so every update differs, as real
/// ones do, and no transport can deduplicate them).
pub fn bench_step(job: &LocalJob, site_id: u32) -> LocalResult {
    use rand::Rng;
    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(job.round ^ (u64::from(site_id) << 40));
    let mut weights = job.global.clone();
    // Uniform noise in [-1e-3, 1e-3) from the raw 32-bit draws (a signed integer scaled once): the same change as
    // `random_range`, at a third of its cost on 10M values — this stands in for training, so it should be cheap.
    const SCALE: f32 = 1e-3 / 2_147_483_648.0;
    let mut buf = [0u32; 1024];
    for t in weights.tensors_mut() {
        for chunk in t.data.chunks_mut(buf.len()) {
            rng.fill(&mut buf[..chunk.len()]);
            for (v, r) in chunk.iter_mut().zip(&buf) {
                *v += (*r as i32) as f32 * SCALE;
            }
        }
    }
    LocalResult {
        round: job.round,
        weights,
        losses: LossSummary::default(),
        steps: job.local_steps,
        train_secs: start.elapsed().as_secs_f64(),
        resumed_from_step: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_step_changes_every_value_a_little_and_differently_per_site() {
        let global = bench_weights(5_000, 1).unwrap();
        let job = LocalJob {
            round: 3,
            global: global.clone(),
            local_steps: 1,
            batch_size: 1,
            hints: SiteHints::default(),
            global_sha256: String::new(),
            fault: InjectedFault::default(),
        };
        let a = bench_step(&job, 0).weights;
        let b = bench_step(&job, 1).weights;
        assert_eq!(a, bench_step(&job, 0).weights, "deterministic per round and site");
        assert_ne!(a, b);
        let deltas: Vec<f32> = global
            .tensors()
            .iter()
            .zip(a.tensors())
            .flat_map(|(g, u)| g.data.iter().zip(&u.data).map(|(x, y)| y - x))
            .collect();
        assert!(deltas.iter().all(|d| d.abs() <= 1.001e-3), "noise within ±1e-3");
        let mean = deltas.iter().sum::<f32>() / deltas.len() as f32;
        let spread = deltas.iter().map(|d| d.abs()).sum::<f32>() / deltas.len() as f32;
        assert!(mean.abs() < 5e-5, "centred: mean {mean}");
        assert!((spread - 5e-4).abs() < 5e-5, "uniform on ±1e-3 has mean |x| 5e-4, got {spread}");
    }
}
