//! GAN training without a network, for experiments that sweep many configurations: the centralized baseline and an
//! in-process federation that runs exactly the code a real one does — each site's [`LocalTrainer`] on its shard,
//! the configured [`Strategy`] folding the updates weighted by sample count — only with the rounds driven by a loop
//! instead of the server actor, and no bulk plane in between.
//!
//! Why it exists beside the real federation: `histofed reproduce` trains 18 models; 12 of them federated, and
//! launching a server and K site processes per cell would spend the CPU budget on process start-up, torch
//! initialisation and transfers that say nothing about whether federated non-IID training matches centralized
//! training (the claim being measured). The distributed path is covered by its own tests and chaos scenarios; the
//! learning dynamics are identical because the trainer and the strategy are the same code.

use std::sync::Arc;

use tch::Device;

use crate::data::Dataset;
use crate::faults::InjectedFault;
use crate::federation::strategy::{SiteHints, Strategy};
use crate::federation::weights::Weights;
use crate::models::{Gan, ModelConfig};
use crate::records::LossSummary;
use crate::train::{LocalJob, LocalTrainer, TrainError};

/// One round of a simulated run (or one chunk of a centralized run).
#[derive(Debug, Clone, PartialEq)]
pub struct SimRound {
    pub round: u64,
    /// Sample-weighted mean of the sites' local losses.
    pub losses: LossSummary,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("aggregating round {round}: {message}")]
    Aggregate { round: u64, message: String },
    #[error("no site holds any training images")]
    NoSites,
}

/// Trains one GAN on `train` for `steps` steps (in chunks of `chunk` steps, one `on_round` call per chunk).
#[allow(clippy::too_many_arguments)]
pub fn train_centralized(
    model: &ModelConfig,
    device: Device,
    train: Arc<Dataset>,
    steps: u32,
    chunk: u32,
    batch_size: u32,
    seed: u64,
    mut on_round: impl FnMut(&SimRound),
) -> Result<Weights, SimError> {
    let mut trainer = LocalTrainer::new(model, device, train, 0, seed)?;
    let mut weights = initial_weights(model, device, seed)?;
    let (mut done, mut round) = (0u32, 0u64);
    while done < steps {
        let n = chunk.max(1).min(steps - done);
        round += 1;
        let result = trainer.run(&job(round, weights, n, batch_size))?;
        weights = result.weights;
        done += n;
        on_round(&SimRound { round, losses: result.losses });
    }
    Ok(weights)
}

/// Federated training in one process: `rounds` rounds, each site running `local_steps` steps from the global weights
/// on its shard, the updates folded by `strategy` weighted by shard size. Empty shards sit out (as a site with no
/// data could not join).
#[allow(clippy::too_many_arguments)]
pub fn train_federated(
    model: &ModelConfig,
    device: Device,
    shards: &[Arc<Dataset>],
    strategy: &mut dyn Strategy,
    rounds: u32,
    local_steps: u32,
    batch_size: u32,
    seed: u64,
    mut on_round: impl FnMut(&SimRound),
) -> Result<Weights, SimError> {
    let mut sites = Vec::new();
    for (id, shard) in shards.iter().enumerate() {
        if shard.is_empty() {
            continue;
        }
        sites.push((LocalTrainer::new(model, device, shard.clone(), id as u32, seed)?, shard.len() as u64));
    }
    if sites.is_empty() {
        return Err(SimError::NoSites);
    }
    let mut global = initial_weights(model, device, seed)?;
    for round in 1..=u64::from(rounds) {
        strategy.begin_round(&global);
        let (mut d, mut g, mut total) = (0.0, 0.0, 0u64);
        for (trainer, n) in sites.iter_mut() {
            let result = trainer.run(&job(round, global.clone(), local_steps, batch_size))?;
            d += result.losses.d_loss * *n as f64;
            g += result.losses.g_loss * *n as f64;
            total += *n;
            strategy
                .accumulate(result.weights, *n)
                .map_err(|e| SimError::Aggregate { round, message: e.to_string() })?;
        }
        global = strategy.finish().map_err(|e| SimError::Aggregate { round, message: e.to_string() })?;
        let total = total.max(1) as f64;
        on_round(&SimRound { round, losses: LossSummary { d_loss: d / total, g_loss: g / total } });
    }
    Ok(global)
}

/// The starting global model of a run: a fresh GAN from `seed`, as the server makes it.
fn initial_weights(model: &ModelConfig, device: Device, seed: u64) -> Result<Weights, TrainError> {
    Ok(Gan::new(model, device, seed as i64)?.weights()?)
}

fn job(round: u64, global: Weights, local_steps: u32, batch_size: u32) -> LocalJob {
    LocalJob {
        round,
        global,
        local_steps,
        batch_size,
        hints: SiteHints::default(),
        global_sha256: String::new(),
        fault: InjectedFault::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth;
    use crate::federation::strategy::FedAvg;
    use crate::models::{DiscKind, GanKind};

    fn tiny_data(per_class: usize) -> Dataset {
        synth::generate(&synth::SynthConfig { size: 32, per_class, num_classes: 2, seed: 3, ..Default::default() })
            .unwrap()
    }

    #[test]
    fn one_site_federation_equals_centralized_training_and_rounds_are_reported() {
        tch::set_num_threads(1);
        let model = ModelConfig::preset("tiny", GanKind::Cgan, DiscKind::Cnn, 2).unwrap();
        let data = Arc::new(tiny_data(6));
        // A single site, FedAvg over one update, 2 rounds × 2 steps from the same seed = 4 centralized steps in
        // chunks of 2: the same trainer code, so the same weights (the global is the site's own update).
        let mut seen = Vec::new();
        let fed =
            train_federated(&model, Device::Cpu, std::slice::from_ref(&data), &mut FedAvg::new(), 2, 2, 4, 7, |r| {
                seen.push(r.round)
            })
            .unwrap();
        let central = train_centralized(&model, Device::Cpu, data, 4, 2, 4, 7, |_| {}).unwrap();
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(fed.l2_distance(&central).unwrap(), 0.0);
        let empty = Arc::new(Dataset::empty(32, vec!["a".into(), "b".into()]));
        assert!(matches!(
            train_federated(&model, Device::Cpu, &[empty], &mut FedAvg::new(), 1, 1, 4, 7, |_| {}),
            Err(SimError::NoSites)
        ));
    }
}
