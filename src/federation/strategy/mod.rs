//! Aggregation strategies: the extension seam where a round's site updates become the next global model.
//!
//! Why a trait shaped like Flower's `Strategy`: the server's round loop should not care *how* updates are combined,
//! only that each validated update is handed over once (`accumulate`) and a new global model comes out (`finish`).
//! New robust or personalised schemes then plug in without touching the round loop, sockets or actors, and every
//! strategy is testable on plain [`Weights`].
//!
//! Memory: FedAvg and FedProx fold updates in as they arrive and hold O(P) values (the running mean plus at most one
//! not-yet-folded update), never K copies, which matters when a GAN generator and discriminator are hundreds of MB
//! each. FedMedian, TrimmedMean and (Multi-)Krum are order statistics / pairwise distances over all updates, so they
//! inherently keep all K updates: O(K·P) memory (and Krum O(K²·P) time).
//!
//! Numerics of FedAvg: the running mean is kept in f32 and updated in "delta form",
//! `m ← m + c₁(x − m) + c₂(y − m)` with `cᵢ = nᵢ / N_total`, folding two updates per pass over memory (one update
//! waits until the next arrives; the first update's buffer becomes the mean, so no copy). Why f32 and not f64: the
//! fold is memory bound, and an f64 accumulator moves 2.5× the bytes per update (read f32 update, read and write an
//! f64 sum) against 1× for the paired f32 fold (read two updates, read and write the mean once). Measured with
//! K = 8, P = 10M on a shared 2-core box (`cargo test --release -- --ignored --nocapture fedavg_throughput`): this
//! fold ran at 69–100 % of memcpy bandwidth, a plain f64 sum at 60–81 %. Why delta form: it cannot overflow for
//! finite inputs below ~1e38, needs no final division pass, and returns a consensus exactly (if every site sends the
//! same value the mean is that value, bit for bit). The error per value is bounded by roughly `K · 2⁻²³ · max_k |x_k|`
//! (a few f32 ulps per fold), in practice ~√K ulps, far below the noise of one local epoch. There is no f64 fallback:
//! a non-finite aggregate (only possible with values near f32::MAX) is an error rather than a published model.
//! [`weighted_mean`] accumulates in f64 for evaluators and tests that want a reference value.
//!
//! The fold's last bits depend on the order the updates arrive in, and in a GAN federation one bit grows into a
//! different model a few rounds later: two runs of the same configuration differ. `federation.summation = "exact"`
//! ([`Summation`]) trades speed for reproducibility: every `nᵢ·xᵢ` is put on a 2⁻⁷² fixed-point grid (exact for
//! |x| ≥ 2⁻⁴⁹ and n < 2²⁹) and summed as an i128, so the sum is the same integer in any order and the mean the same
//! f32. It holds 16 bytes per value and reads and writes them per update: several times the fold's time (the
//! numbers are in BENCHMARKS.md, P3). An update beyond its range (`Σ nᵢ·max|xᵢ|` ≥ 2⁵⁴) or with a non-finite value
//! is refused alone; the round goes on with the others.
//!
//! One file per strategy over the pure functions of [`aggregate`]; [`api`] is the seam, [`config`] the names.

mod aggregate;
mod api;
mod config;
mod coordinate;
mod dp_fedavg;
mod fedavg;
mod krum;
pub mod server_opt;
#[cfg(test)]
mod tests;

pub use aggregate::{weighted_mean, Collecting, Combine};
pub use api::{AggregateError, DpRelease, SecureNoise, SiteHints, SkellamNoise, Strategy, Summation};
pub use config::StrategyConfig;
pub use coordinate::{FedMedian, TrimmedMean};
pub use dp_fedavg::{clip_update, held_back, AdaptiveClipping, DpFedAvg};
pub use fedavg::FedAvg;
pub use krum::Krum;
pub use server_opt::{ServerOpt, ServerOptKind};
