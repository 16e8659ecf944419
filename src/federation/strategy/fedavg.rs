//! FedAvg and FedProx: the sample-weighted mean, folded as updates arrive in O(P) memory. FedProx aggregates like
//! FedAvg; its difference is the proximal term the sites add, which it asks for through [`SiteHints`].

use super::aggregate::StreamingMean;
use super::api::{AggregateError, SiteHints, Strategy};
use crate::federation::weights::Weights;

/// Federated averaging (McMahan et al. 2017): the sample-weighted mean of the sites' weights.
#[derive(Debug, Default)]
pub struct FedAvg {
    inner: StreamingMean,
}

impl FedAvg {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }
    fn begin_round(&mut self, global: &Weights) {
        self.inner.begin(global);
    }
    fn accumulate(&mut self, update: Weights, num_samples: u64) -> Result<(), AggregateError> {
        self.inner.push(update, num_samples)
    }
    fn count(&self) -> usize {
        self.inner.count()
    }
    fn finish(&mut self) -> Result<Weights, AggregateError> {
        self.inner.finish()
    }
}

/// FedProx (Li et al. 2020): sites add a proximal term `mu/2 · ‖w − w_global‖²`; the server aggregates like FedAvg.
#[derive(Debug)]
pub struct FedProx {
    mu: f64,
    inner: StreamingMean,
}

impl FedProx {
    pub fn new(mu: f64) -> Self {
        Self { mu, inner: StreamingMean::default() }
    }
}

impl Strategy for FedProx {
    fn name(&self) -> &'static str {
        "fedprox"
    }
    fn site_hints(&self) -> SiteHints {
        SiteHints { proximal_mu: Some(self.mu) }
    }
    fn begin_round(&mut self, global: &Weights) {
        self.inner.begin(global);
    }
    fn accumulate(&mut self, update: Weights, num_samples: u64) -> Result<(), AggregateError> {
        self.inner.push(update, num_samples)
    }
    fn count(&self) -> usize {
        self.inner.count()
    }
    fn finish(&mut self) -> Result<Weights, AggregateError> {
        self.inner.finish()
    }
}
