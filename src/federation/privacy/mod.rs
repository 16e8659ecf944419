//! Client-level differential privacy for the federation (DP-FedAvg, McMahan et al. 2018): each site's update is
//! clipped to an L2 norm C around the round's global weights, the server averages the clipped updates without
//! sample weighting and adds Gaussian noise of std z·C/m to the mean of m updates; each round is then the Gaussian
//! mechanism with noise multiplier z on a sensitivity of one site, whatever m is. The strategy is
//! `federation::strategy::DpFedAvg`; the [`accountant`] turns the rounds released so far into ε(δ).
//!
//! Why the ledger is the round records: a round's noisy aggregate is released when the round completes (its
//! checkpoint durable, the new global sent out), and the round records are what a restarted server resumes from —
//! so ε recomputed from them is exact across kills, retried rounds (never released, never charged) and rounds that
//! closed with fewer sites (the same z).

pub mod accountant;

pub use accountant::{epsilon_of, noise_for_epsilon, Release};

/// ε at `delta` of the rounds in a ledger (their noise multipliers, `records::RoundPrivacy`), plus `next` more
/// releases with noise multiplier `z` (0 for none). Every site takes part in every round, so no amplification by
/// sampling is claimed (q = 1): the bound holds whichever sites the rounds really had.
pub fn ledger_epsilon(ledger: impl IntoIterator<Item = f64>, next: usize, z: f64, delta: f64) -> f64 {
    let past = ledger.into_iter().map(|sigma| Release { q: 1.0, sigma });
    epsilon_of(past.chain(std::iter::repeat_n(Release { q: 1.0, sigma: z }, next)), delta)
}
