//! Server-side optimisers (Reddi et al. 2021, "Adaptive Federated Optimization"): FedAvgM and FedAdam.
//!
//! Why: FedAvg replaces the global model by the sites' mean, which is plain SGD with step 1 on the pseudo-gradient
//! Δ = mean − global. Under non-IID data that pseudo-gradient swings from round to round with the sites' drift;
//! momentum on the server smooths it (FedAvgM lifted the most skewed CIFAR-10 split from 30.1 % to 76.9 %, Hsu et
//! al. 2019) and Adam on the server rescales it per coordinate (FedAdam/FedYogi beat FedAvg in Reddi et al.).
//!
//! What moves and what is only averaged: the update rule applies to trained parameters only. Statistics that are not
//! parameters — BatchNorm running means and variances, spectral-norm power-iteration vectors, and the generator's
//! exponential moving average (`generator.ema.*`) — are set to the sites' plain mean: momentum on a running variance
//! could push it negative, and the EMA is itself an average of parameters, not a parameter.
//!
//! The math is in pure functions over slices ([`momentum_step`], [`adam_step`]) so it can be checked by hand; the
//! aggregation underneath is FedAvg's streaming sample-weighted mean, or any other mean strategy
//! ([`ServerOpt::over`]): under differential privacy it is DP-FedAvg's noisy mean, and the optimiser's step is
//! post-processing of what DP-FedAvg released, so the privacy ledger is the same. The optimiser state (momentum, second moment)
//! is O(P) and lives in the strategy; it is exposed as [`Weights`] (`Strategy::state_weights`) and saved as the
//! `strategy` part of every round's checkpoint, so a restarted server resumes with the same moments.

use super::api::{AggregateError, SecureNoise, Strategy, Summation};
use super::fedavg::FedAvg;
use crate::federation::weights::{NamedTensor, Weights};

/// Which server optimiser.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ServerOptKind {
    /// m ← β·m + Δ; w ← w + η·m.
    Momentum { lr: f64, beta: f64 },
    /// m ← β₁m + (1 − β₁)Δ; v ← β₂v + (1 − β₂)Δ²; w ← w + η·m / (√v + τ).
    Adam { lr: f64, beta1: f64, beta2: f64, tau: f64 },
}

/// Whether `name` is a statistic rather than a trained parameter (averaged, never stepped).
pub fn is_statistic(name: &str) -> bool {
    name.contains(".ema.")
        || ["running_mean", "running_var", "num_batches_tracked", "weight_u", "weight_v"]
            .iter()
            .any(|leaf| name.rsplit('.').next() == Some(leaf))
}

/// One FedAvgM step over a tensor: `m ← β·m + (avg − w)`, `w ← w + η·m`, in place.
pub fn momentum_step(w: &mut [f32], avg: &[f32], m: &mut [f32], lr: f32, beta: f32) {
    for ((w, &a), m) in w.iter_mut().zip(avg).zip(m.iter_mut()) {
        *m = beta * *m + (a - *w);
        *w += lr * *m;
    }
}

/// One FedAdam step over a tensor (Reddi et al. 2021, Algorithm 2, no bias correction), in place.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(w: &mut [f32], avg: &[f32], m: &mut [f32], v: &mut [f32], lr: f32, b1: f32, b2: f32, tau: f32) {
    for (((w, &a), m), v) in w.iter_mut().zip(avg).zip(m.iter_mut()).zip(v.iter_mut()) {
        let d = a - *w;
        *m = b1 * *m + (1.0 - b1) * d;
        *v = b2 * *v + (1.0 - b2) * d * d;
        *w += lr * *m / (v.sqrt() + tau);
    }
}

/// FedAvgM or FedAdam: a mean strategy's output (FedAvg's by default), then a server optimiser step from the round's
/// global weights.
pub struct ServerOpt {
    kind: ServerOptKind,
    mean: Box<dyn Strategy>,
    global: Option<Weights>,
    /// First moment (momentum) and second moment (Adam), one buffer per tensor, created at the first round.
    m: Option<Weights>,
    v: Option<Weights>,
}

impl std::fmt::Debug for ServerOpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOpt").field("kind", &self.kind).field("mean", &self.mean.name()).finish()
    }
}

impl ServerOpt {
    /// The optimiser over FedAvg's mean in the given arithmetic.
    pub fn new(kind: ServerOptKind, summation: Summation) -> Result<Self, AggregateError> {
        Self::over(kind, Box::new(FedAvg::with(summation, None)))
    }

    /// The optimiser over another mean strategy (DP-FedAvg): its hints, its release and its clip norm pass through.
    pub fn over(kind: ServerOptKind, mean: Box<dyn Strategy>) -> Result<Self, AggregateError> {
        let bad = |m: String| Err(AggregateError::InvalidParameter(m));
        let unit = |x: f64| x.is_finite() && (0.0..1.0).contains(&x);
        match kind {
            ServerOptKind::Momentum { lr, beta } => {
                if !(lr.is_finite() && lr > 0.0) {
                    return bad(format!("fedavgm server learning rate must be > 0, got {lr}"));
                }
                if !unit(beta) {
                    return bad(format!("fedavgm momentum must be in [0, 1), got {beta}"));
                }
            }
            ServerOptKind::Adam { lr, beta1, beta2, tau } => {
                if !(lr.is_finite() && lr > 0.0) {
                    return bad(format!("fedadam server learning rate must be > 0, got {lr}"));
                }
                if !unit(beta1) || !unit(beta2) {
                    return bad(format!("fedadam betas must be in [0, 1), got {beta1} and {beta2}"));
                }
                if !(tau.is_finite() && tau > 0.0) {
                    return bad(format!("fedadam tau must be > 0, got {tau}"));
                }
            }
        }
        Ok(ServerOpt { kind, mean, global: None, m: None, v: None })
    }

    /// The optimiser state to checkpoint: the moments under `m.` and `v.` (None before the first round).
    pub fn moments(&self) -> Option<Weights> {
        let m = self.m.as_ref()?;
        let mut parts = vec![("m.", m)];
        if let Some(v) = &self.v {
            parts.push(("v.", v));
        }
        Weights::join_prefixed(&parts).ok()
    }

    /// Restores a state written by [`ServerOpt::moments`].
    pub fn restore_moments(&mut self, state: &Weights) {
        let m = state.strip_prefix("m.");
        let v = state.strip_prefix("v.");
        self.m = (!m.is_empty()).then_some(m);
        self.v = (!v.is_empty()).then_some(v);
    }

    fn zeros_like(w: &Weights) -> Result<Weights, AggregateError> {
        let tensors = w
            .tensors()
            .iter()
            .map(|t| NamedTensor::new(t.name.clone(), t.shape.clone(), vec![0.0; t.data.len()]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AggregateError::Layout(e.to_string()))?;
        Weights::new(tensors).map_err(|e| AggregateError::Layout(e.to_string()))
    }
}

impl Strategy for ServerOpt {
    fn name(&self) -> &'static str {
        match self.kind {
            ServerOptKind::Momentum { .. } => "fedavgm",
            ServerOptKind::Adam { .. } => "fedadam",
        }
    }

    fn site_hints(&self) -> super::api::SiteHints {
        self.mean.site_hints()
    }

    fn begin_round(&mut self, global: &Weights) {
        self.mean.begin_round(global);
        self.global = Some(global.clone());
    }

    fn accumulate(&mut self, update: Weights, num_samples: u64) -> Result<(), AggregateError> {
        self.mean.accumulate(update, num_samples)
    }

    fn accumulate_mean(
        &mut self,
        mean: Weights,
        updates: usize,
        num_samples: u64,
        noise: SecureNoise,
    ) -> Result<(), AggregateError> {
        self.mean.accumulate_mean(mean, updates, num_samples, noise)
    }

    fn count(&self) -> usize {
        self.mean.count()
    }

    fn finish(&mut self) -> Result<Weights, AggregateError> {
        let avg = self.mean.finish()?;
        let mut w = self.global.take().ok_or(AggregateError::NoUpdates)?;
        w.check_same_layout(&avg).map_err(|e| AggregateError::Layout(e.to_string()))?;
        let fresh = |s: &Option<Weights>| match s {
            Some(s) if s.check_same_layout(&avg).is_ok() => Ok(s.clone()),
            _ => Self::zeros_like(&avg),
        };
        let mut m = fresh(&self.m)?;
        let mut v = match self.kind {
            ServerOptKind::Adam { .. } => Some(fresh(&self.v)?),
            ServerOptKind::Momentum { .. } => None,
        };
        for (i, a) in avg.tensors().iter().enumerate() {
            let wt = &mut w.tensors_mut()[i];
            if is_statistic(&a.name) {
                wt.data.copy_from_slice(&a.data);
                continue;
            }
            let mt = &mut m.tensors_mut()[i].data;
            match (self.kind, v.as_mut()) {
                (ServerOptKind::Momentum { lr, beta }, _) => {
                    momentum_step(&mut wt.data, &a.data, mt, lr as f32, beta as f32)
                }
                (ServerOptKind::Adam { lr, beta1, beta2, tau }, Some(v)) => adam_step(
                    &mut wt.data,
                    &a.data,
                    mt,
                    &mut v.tensors_mut()[i].data,
                    lr as f32,
                    beta1 as f32,
                    beta2 as f32,
                    tau as f32,
                ),
                (ServerOptKind::Adam { .. }, None) => return Err(AggregateError::NoUpdates),
            }
        }
        if let Some(bad) = w.first_non_finite() {
            return Err(AggregateError::NonFinite(bad.to_string()));
        }
        self.m = Some(m);
        self.v = v;
        Ok(w)
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "kind": format!("{:?}", self.kind), "has_moments": self.m.is_some() })
    }

    fn state_weights(&self) -> Option<Weights> {
        self.moments()
    }

    fn restore_state_weights(&mut self, state: &Weights) {
        self.restore_moments(state);
    }

    fn released(&self) -> Option<super::api::DpRelease> {
        self.mean.released()
    }

    fn resume_clip_norm(&mut self, clip_norm: f64) {
        self.mean.resume_clip_norm(clip_norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(pairs: &[(&str, &[f32])]) -> Weights {
        Weights::new(pairs.iter().map(|(n, d)| NamedTensor::new(*n, vec![d.len()], d.to_vec()).unwrap()).collect())
            .unwrap()
    }

    /// Over DP-FedAvg: the optimiser steps from the clipped (noisy) mean, and the hints and the release pass through.
    #[test]
    fn over_dp_fedavg_it_steps_from_the_clipped_mean_and_passes_the_release_on() {
        use super::super::DpFedAvg;
        let global = w(&[("t", &[0.0, 0.0])]);
        let dp = DpFedAvg::new(1.0, 0.0, true).unwrap();
        let mut s = ServerOpt::over(ServerOptKind::Momentum { lr: 2.0, beta: 0.0 }, Box::new(dp)).unwrap();
        assert_eq!(s.site_hints().dp_clip_norm, Some(1.0));
        s.begin_round(&global);
        s.accumulate(w(&[("t", &[30.0, 40.0])]), 1).unwrap();
        s.accumulate(w(&[("t", &[0.0, 0.0])]), 1).unwrap();
        let out = s.finish().unwrap();
        // Clipped to (0.6, 0.8), mean (0.3, 0.4), server step 2 × that.
        assert!((out.tensors()[0].data[0] - 0.6).abs() < 1e-6 && (out.tensors()[0].data[1] - 0.8).abs() < 1e-6);
        let r = s.released().expect("the DP release passes through");
        assert_eq!((r.updates, r.clipped, r.clip_norm), (2, 1, 1.0));
    }

    #[test]
    fn momentum_with_lr_1_and_beta_0_is_fedavg_and_statistics_are_averaged() {
        let global = w(&[("g.conv.weight", &[0.0, 0.0]), ("g.bn.running_var", &[1.0, 1.0])]);
        let mut s = ServerOpt::new(ServerOptKind::Momentum { lr: 1.0, beta: 0.0 }, Summation::Fast).unwrap();
        s.begin_round(&global);
        s.accumulate(w(&[("g.conv.weight", &[1.0, 2.0]), ("g.bn.running_var", &[2.0, 4.0])]), 1).unwrap();
        s.accumulate(w(&[("g.conv.weight", &[3.0, 4.0]), ("g.bn.running_var", &[4.0, 8.0])]), 1).unwrap();
        let out = s.finish().unwrap();
        assert_eq!(out.get("g.conv.weight").unwrap().data, vec![2.0, 3.0]);
        assert_eq!(out.get("g.bn.running_var").unwrap().data, vec![3.0, 6.0]);
    }

    #[test]
    fn momentum_accumulates_over_rounds_by_hand() {
        // Round 1: Δ = 1 → m = 1, w = 0 + 0.5·1 = 0.5. Round 2: avg = 1.5, Δ = 1 → m = 0.9 + 1 = 1.9, w = 1.45.
        let mut s = ServerOpt::new(ServerOptKind::Momentum { lr: 0.5, beta: 0.9 }, Summation::Fast).unwrap();
        let mut global = w(&[("x", &[0.0])]);
        for (avg, expect) in [(1.0f32, 0.5f32), (1.5, 1.45)] {
            s.begin_round(&global);
            s.accumulate(w(&[("x", &[avg])]), 3).unwrap();
            global = s.finish().unwrap();
            assert!((global.get("x").unwrap().data[0] - expect).abs() < 1e-6);
        }
        // The state survives a restart: a new strategy restored from it continues the same trajectory.
        let state = Strategy::state_weights(&s).unwrap();
        let mut t = ServerOpt::new(ServerOptKind::Momentum { lr: 0.5, beta: 0.9 }, Summation::Fast).unwrap();
        t.restore_state_weights(&state);
        for x in [&mut s, &mut t] {
            x.begin_round(&global);
            x.accumulate(w(&[("x", &[2.0])]), 1).unwrap();
        }
        assert_eq!(s.finish().unwrap(), t.finish().unwrap());
    }

    #[test]
    fn adam_step_by_hand_and_bad_parameters_are_named() {
        // Δ = 2: m = 0.1·2 = 0.2, v = 0.01·4 = 0.04, w = 0 + 0.1·0.2/(0.2 + 0.001).
        let mut s =
            ServerOpt::new(ServerOptKind::Adam { lr: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 }, Summation::Fast)
                .unwrap();
        s.begin_round(&w(&[("x", &[0.0])]));
        s.accumulate(w(&[("x", &[2.0])]), 1).unwrap();
        let out = s.finish().unwrap();
        let expect = 0.1 * 0.2 / (0.2 + 1e-3);
        assert!((f64::from(out.get("x").unwrap().data[0]) - expect).abs() < 1e-6);
        assert!(ServerOpt::new(ServerOptKind::Momentum { lr: 0.0, beta: 0.9 }, Summation::Fast)
            .unwrap_err()
            .to_string()
            .contains("rate"));
        assert!(ServerOpt::new(ServerOptKind::Adam { lr: 0.1, beta1: 1.0, beta2: 0.9, tau: 1e-3 }, Summation::Fast)
            .unwrap_err()
            .to_string()
            .contains("betas"));
        assert!(is_statistic("generator.ema.fc.weight") && is_statistic("discriminator.blocks.0.conv.weight_u"));
        assert!(!is_statistic("generator.fc.weight"));
    }
}
