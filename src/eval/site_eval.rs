//! Federated evaluation: each site scores the global generator on its own validation split, the server combines
//! the scores weighted by the sites' sample counts (Flower's `evaluate` phase, for a generator).
//!
//! Why at the sites: the server's evaluator only sees the held-out data it holds; under a non-IID partition the
//! sites hold classes and stain styles it may hardly see, and their data cannot leave them. A site therefore
//! generates as many images per class as its validation split holds (so the synthetic set has the site's class mix)
//! and measures, in the fixed feature space every process can build without data or weights
//! (`models::simple_features`): the Fréchet distance overall and per class, and Kynkäänniemi precision/recall.
//! Only these numbers leave the site.
//!
//! The combined numbers are sample-weighted means of the sites' values, which is what a federated evaluation can
//! honestly report: the FD of the pooled data is not the mean of per-site FDs (and per-site FDs from small splits
//! are biased upwards), so compare combined values across rounds and runs with the same sites, not with the
//! server's single-set FD.
//!
//! Pure tensor code (no actors, no sockets): the site's evaluator actor runs [`LocalEvaluator`] on its own
//! thread, and the server folds the answers with [`aggregate`].

use std::time::Instant;

use tch::{Device, Kind, Tensor};
use thiserror::Error;

use crate::data::Dataset;
use crate::eval::quality::frechet::frechet_report;
use crate::eval::quality::precision_recall::precision_recall;
use crate::eval::quality::QualityError;
use crate::federation::evaluation::{ClassScore, SiteEval};
use crate::federation::weights::Weights;
use crate::models::{simple_features, Gan, ModelConfig, ModelError};

/// Neighbours defining the precision/recall manifolds (the quality suite's k).
pub const PR_K: usize = 3;
/// Images generated per forward pass (bounds the evaluator's memory whatever the split size).
const GENERATE_CHUNK: i64 = 256;

#[derive(Debug, Error)]
pub enum FederatedEvalError {
    #[error("the site's validation split holds {got} images; federated evaluation needs at least {need}")]
    TooFewImages { got: usize, need: usize },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Quality(#[from] QualityError),
}

/// A site's scorer: the model shell to load each round's global weights into, and the site's validation split
/// embedded once.
pub struct LocalEvaluator {
    gan: Gan,
    real_features: Tensor,
    labels: Vec<i64>,
    names: Vec<String>,
    seed: i64,
}

impl LocalEvaluator {
    /// Fails when `val` is too small to score (fewer than [`PR_K`] + 1 images would leave only an FD of noise).
    pub fn new(cfg: &ModelConfig, device: Device, val: &Dataset, seed: u64) -> Result<Self, FederatedEvalError> {
        let need = PR_K + 1;
        if val.len() < need {
            return Err(FederatedEvalError::TooFewImages { got: val.len(), need });
        }
        let gan = Gan::new(cfg, device, seed as i64)?;
        let all: Vec<usize> = (0..val.len()).collect();
        let (x, _) = crate::train::batch_tensors(val, &all, device);
        let real_features = tch::no_grad(|| simple_features(&x));
        let names = (0..cfg.num_classes as usize)
            .map(|c| val.classes.get(c).cloned().unwrap_or_else(|| format!("class-{c}")))
            .collect();
        Ok(Self {
            gan,
            real_features,
            labels: val.labels.iter().map(|&l| i64::from(l)).collect(),
            names,
            seed: seed as i64,
        })
    }

    pub fn val_samples(&self) -> usize {
        self.labels.len()
    }

    /// Scores `global` (round `round`'s global generator): one synthetic image per validation image, with its label.
    pub fn evaluate(&mut self, round: u64, global: &Weights) -> Result<SiteEval, FederatedEvalError> {
        let start = Instant::now();
        self.gan.load_weights(global)?;
        self.gan.settle_generator_statistics()?;
        let n = self.labels.len() as i64;
        // The same latent vectors every round: the scores move with the model, not with the noise.
        let z = self.gan.latent(n, self.seed ^ 0x00fe_d0e7);
        let labels = Tensor::from_slice(&self.labels);
        let mut feats = Vec::new();
        let mut at = 0;
        while at < n {
            let len = GENERATE_CHUNK.min(n - at);
            let fake = self.gan.try_generate(&z.narrow(0, at, len), &labels.narrow(0, at, len))?;
            feats.push(tch::no_grad(|| simple_features(&fake)).to_kind(Kind::Float));
            at += len;
        }
        let fake_features = Tensor::cat(&feats, 0);
        let fd = frechet_report(&self.real_features, &self.labels, &fake_features, &self.labels, &self.names)?;
        let pr = precision_recall(&self.real_features, &fake_features, PR_K, 512)?;
        let per_class = fd
            .per_class
            .iter()
            .filter(|c| c.real_count > 0)
            .map(|c| ClassScore { class: c.class, count: c.real_count as u64, frechet_distance: c.frechet_distance })
            .collect();
        Ok(SiteEval {
            round,
            val_samples: n as u64,
            frechet_distance: fd.overall,
            precision: Some(pr.precision),
            recall: Some(pr.recall),
            per_class,
            secs: start.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_scores_the_global_generator_on_its_split() {
        use crate::data::synth::{generate, SynthConfig};
        tch::set_num_threads(1);
        use crate::models::{DiscKind, GanKind};
        let cfg = ModelConfig::preset("tiny", GanKind::Cgan, DiscKind::Cnn, 3).unwrap();
        let synth = SynthConfig { num_classes: 3, per_class: 6, size: cfg.image_size as u32, ..SynthConfig::default() };
        let val = generate(&synth).unwrap();
        let val = val.subset(&(0..val.len()).filter(|i| val.labels[*i] < 2).collect::<Vec<_>>());
        let global = Gan::new(&cfg, Device::Cpu, 7).unwrap().weights().unwrap();
        let mut ev = LocalEvaluator::new(&cfg, Device::Cpu, &val, 1).unwrap();
        let a = ev.evaluate(3, &global).unwrap();
        assert_eq!(a.val_samples, val.len() as u64);
        a.check(3, cfg.num_classes as usize).unwrap();
        // Only the classes this site holds are scored.
        assert_eq!(a.per_class.iter().map(|c| c.class).collect::<Vec<_>>(), vec![0, 1]);
        assert!(a.per_class.iter().all(|c| c.frechet_distance.is_some()));
        // Deterministic: the same weights give the same scores.
        assert_eq!(ev.evaluate(3, &global).unwrap().frechet_distance, a.frechet_distance);
        let tiny = val.subset(&[0, 1]);
        assert!(matches!(
            LocalEvaluator::new(&cfg, Device::Cpu, &tiny, 1),
            Err(FederatedEvalError::TooFewImages { got: 2, need: 4 })
        ));
    }
}
