//! FedAvg and FedProx: the sample-weighted mean, folded as updates arrive in O(P) memory. FedProx aggregates like
//! FedAvg; its difference is the proximal term the sites add, which it asks for through [`SiteHints`] — so it is
//! FedAvg with a `mu`, not a type of its own.

use super::aggregate::Mean;
use super::api::{AggregateError, SiteHints, Strategy, Summation};
use crate::federation::weights::Weights;

/// Federated averaging (McMahan et al. 2017): the sample-weighted mean of the sites' weights; with a proximal `mu`,
/// FedProx (Li et al. 2020): sites add `mu/2 · ‖w − w_global‖²` to their loss, the server aggregates the same way.
#[derive(Debug)]
pub struct FedAvg {
    proximal_mu: Option<f64>,
    inner: Mean,
}

impl Default for FedAvg {
    fn default() -> Self {
        Self::new()
    }
}

impl FedAvg {
    /// FedAvg with the fast f32 fold.
    pub fn new() -> Self {
        Self::with(Summation::Fast, None)
    }

    /// FedProx with proximal weight `mu` and the fast f32 fold.
    pub fn proximal(mu: f64) -> Self {
        Self::with(Summation::Fast, Some(mu))
    }

    /// FedAvg (`mu` None) or FedProx in the given arithmetic.
    pub fn with(summation: Summation, proximal_mu: Option<f64>) -> Self {
        Self { proximal_mu, inner: Mean::new(summation) }
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
