//! The seam itself: the [`Strategy`] trait the server's round loop drives, what it sends to sites with the weights
//! ([`SiteHints`]), and the one error type of configuring and aggregating.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::federation::weights::Weights;

/// Errors of configuring a strategy or aggregating a round.
#[derive(Debug, Error, PartialEq)]
pub enum AggregateError {
    #[error("no updates to aggregate")]
    NoUpdates,
    #[error("update layout differs from the round's model: {0}")]
    Layout(String),
    #[error("the updates' sample counts sum to zero")]
    ZeroSamples,
    #[error("Krum needs at least {need} updates for this configuration but has {have}")]
    TooFewForKrum { have: usize, need: usize },
    #[error("invalid strategy parameter: {0}")]
    InvalidParameter(String),
    #[error("tensor `{0}` holds a value that is not finite")]
    NonFinite(String),
    #[error(
        "an update with values up to {largest} over {samples} samples in all is beyond the exact mean's range \
         (sum of samples × largest value below 2^54)"
    )]
    OutOfRange { largest: f32, samples: u128 },
}

/// The arithmetic of FedAvg's (and FedProx's, FedAvgM's, FedAdam's) sample-weighted mean
/// (`federation.summation`).
///
/// Why two: the f32 fold is memory bound and fast, but its last bits depend on the order the updates arrive in, and
/// one bit is enough for a GAN federation's later rounds to diverge, so two runs with the same seed differ. The exact
/// sum gives the same model whatever the order, at 16 bytes per value and several times the fold's time
/// (BENCHMARKS.md, P3). Differential privacy's noise is random either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Summation {
    /// Running mean in f32, folded as updates arrive.
    #[default]
    Fast,
    /// Every `n·x` on a 2⁻⁷² fixed-point grid, summed as integers: bit-reproducible.
    Exact,
}

impl Summation {
    pub fn is_fast(&self) -> bool {
        *self == Summation::Fast
    }
}

/// Settings sent to sites together with the round's weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteHints {
    /// FedProx proximal term weight: sites add `mu/2 · ‖w − w_global‖²` to their local loss.
    pub proximal_mu: Option<f64>,
    /// Differential privacy with clipping at the sites: each site clips its update to this L2 distance from the
    /// round's global weights before it leaves (`clip_update`), so the server never receives the raw update.
    #[serde(default)]
    pub dp_clip_norm: Option<f64>,
}

/// What a differentially private strategy released in its last round: the Gaussian mechanism with multiplier
/// `noise_multiplier` on the mean of `updates` updates clipped to `clip_norm` (`clipped` of them were longer when
/// they reached the server), and with adaptive clipping the noisy count that moved the clip norm.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpRelease {
    /// z, what the accountant charges for the round (with adaptive clipping: the updates' and the count's noise
    /// together).
    pub noise_multiplier: f64,
    /// z_Δ, the multiplier of the noise on the mean of the updates (= z with fixed clipping).
    pub update_noise_multiplier: f64,
    pub clip_norm: f64,
    pub updates: usize,
    pub clipped: usize,
    /// Adaptive clipping: the noisy share of the updates that fitted in `clip_norm`.
    pub fitted_share: Option<f64>,
    /// The clip norm of the next round (= `clip_norm` with fixed clipping).
    pub next_clip_norm: f64,
    /// The sites added the noise (distributed DP under secure aggregation): the round is the Skellam mechanism
    /// with these numbers, not the Gaussian at `noise_multiplier`.
    #[serde(default)]
    pub skellam: Option<SkellamNoise>,
}

/// The Skellam noise the sites put into a securely summed mean, in quantization code units.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkellamNoise {
    /// Δ₁, Δ₂: how far one site's update can move the integer sum.
    pub l1_sensitivity: f64,
    pub l2_sensitivity: f64,
    /// The variance of the noise in the sum (all its contributors' shares).
    pub variance: f64,
    pub contributors: usize,
}

/// How a securely summed mean stands with differential privacy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SecureNoise {
    /// No noise in it yet: a differentially private strategy adds it, each update's sensitivity widened by `slack`
    /// (what quantizing the updates could add to their norm).
    ToAdd { slack: f64 },
    /// The sites added it (`federation::secagg::SiteNoise`): the strategy adds none and charges this.
    Added(SkellamNoise),
}

/// How the server combines a round's updates.
pub trait Strategy: Send {
    fn name(&self) -> &'static str;
    /// Settings sent to sites with the round's weights (e.g. FedProx's mu).
    fn site_hints(&self) -> SiteHints {
        SiteHints::default()
    }
    /// Starts a round from the current global weights.
    fn begin_round(&mut self, global: &Weights);
    /// Folds in one validated update (full weights, not a delta) with its sample count.
    fn accumulate(&mut self, update: Weights, num_samples: u64) -> Result<(), AggregateError>;
    /// Folds in the mean of `updates` updates that the server never saw one by one (secure aggregation): FedAvg
    /// and the server optimisers treat it as one update of all their samples; a differentially private strategy
    /// releases it as the mean of `updates`, adding noise scaled to them or charging the noise the sites added
    /// ([`SecureNoise`]).
    fn accumulate_mean(
        &mut self,
        mean: Weights,
        _updates: usize,
        num_samples: u64,
        _noise: SecureNoise,
    ) -> Result<(), AggregateError> {
        self.accumulate(mean, num_samples)
    }
    /// Number of updates folded in so far this round.
    fn count(&self) -> usize;
    /// Produces the new global weights and resets for the next round.
    fn finish(&mut self) -> Result<Weights, AggregateError>;
    /// Serializable state to put into checkpoints (most strategies: none).
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Tensor state that must survive a server restart (a server optimiser's moments), saved with each round's
    /// checkpoint as its `strategy` part. Most strategies: none.
    fn state_weights(&self) -> Option<Weights> {
        None
    }
    /// Restores what [`Strategy::state_weights`] returned, from the checkpoint a server resumes from.
    fn restore_state_weights(&mut self, _state: &Weights) {}
    /// For a differentially private strategy, what its last [`Strategy::finish`] released (the privacy ledger's
    /// entry); `None` for the others.
    fn released(&self) -> Option<DpRelease> {
        None
    }
    /// A restarted server hands an adaptive-clipping strategy the clip norm its ledger says comes next (the last
    /// durable round's `next_clip_norm`); the others ignore it.
    fn resume_clip_norm(&mut self, _clip_norm: f64) {}
}
