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

pub use accountant::{epsilon_of, noise_for_epsilon, rdp_skellam, Release};

/// ε at `delta` of the rounds in a ledger (`records::RoundPrivacy`, each as [`round_release`]), plus `next` more
/// releases like `upcoming`. Every site takes part in every round, so no amplification by sampling is claimed
/// (q = 1): the bound holds whichever sites the rounds really had.
pub fn ledger_epsilon(ledger: impl IntoIterator<Item = Release>, next: usize, upcoming: Release, delta: f64) -> f64 {
    epsilon_of(ledger.into_iter().chain(std::iter::repeat_n(upcoming, next)), delta)
}

/// What a round charged: the Skellam mechanism when the sites added the noise (its sensitivities and variance in
/// code units), else the Gaussian mechanism at noise multiplier `z`.
pub fn round_release(z: f64, skellam: Option<(f64, f64, f64)>) -> Release {
    match skellam {
        Some((l1, l2, variance)) => Release::Skellam { l1, l2, variance },
        None => Release::gaussian(z),
    }
}
