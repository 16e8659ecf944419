//! FedAvg and FedProx: the sample-weighted mean, folded as updates arrive in O(P) memory. FedProx aggregates like
//! FedAvg; its difference is the proximal term the sites add, which it asks for through [`SiteHints`] — so it is
//! FedAvg with a `mu`, not a type of its own.

use super::aggregate::StreamingMean;
use super::api::{AggregateError, SiteHints, Strategy};
use crate::federation::weights::Weights;

/// Federated averaging (McMahan et al. 2017): the sample-weighted mean of the sites' weights; with a proximal `mu`,
/// FedProx (Li et al. 2020): sites add `mu/2 · ‖w − w_global‖²` to their loss, the server aggregates the same way.
#[derive(Debug, Default)]
pub struct FedAvg {
    proximal_mu: Option<f64>,
    inner: StreamingMean,
}

impl FedAvg {
    pub fn new() -> Self {
        Self::default()
    }

    /// FedProx with proximal weight `mu`.
    pub fn proximal(mu: f64) -> Self {
        Self { proximal_mu: Some(mu), inner: StreamingMean::default() }
    }
}

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        if self.proximal_mu.is_some() {
            "fedprox"
        } else {
            "fedavg"
        }
    }
    fn site_hints(&self) -> SiteHints {
        SiteHints { proximal_mu: self.proximal_mu, dp_clip_norm: None }
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
