//! Distributed differential privacy: the sites add the noise, in the integer domain, before masking.
//!
//! Why Skellam: with secure aggregation the server sees only the sum, so the noise can be added by the sites and
//! the server never holds a noise-free aggregate. Noise that survives the modular sum must be integer; the sum of
//! independent symmetric Skellam variables (Poisson(μ/2) − Poisson(μ/2), variance μ) is again symmetric Skellam,
//! so m sites each adding variance μ_site give exactly the Skellam mechanism of variance m·μ_site, whose Rényi
//! DP is known in closed form (Agarwal, Kairouz and Liu, "The Skellam Mechanism for Differentially Private Federated
//! Learning", NeurIPS 2021; the accountant is `federation::privacy::rdp_skellam`). A continuous Gaussian added
//! before quantization would not be: stochastic rounding after the noise is not the Gaussian mechanism the
//! accountant charges.
//!
//! Calibration, in code units (one quantization step = 1): a site's weighted update w·Δ (‖Δ‖ ≤ C after its DP
//! clipping, w = 1/n) becomes codes within one unit of w·Δ/step per value, so replacing it by a zero update moves
//! the sum by at most Δ₂ = C·w/step + 2√P in L2 and Δ₁ = √P·Δ₂ in L1 (P values). Every site adds variance
//! (z·Δ₂)²/m_min, m_min being the fewest contributors a round can complete with (the threshold or the quorum), so
//! any completed round carries at least the noise of the Gaussian mechanism with multiplier z; a round with more
//! contributors carries more, and the ledger charges the variance the round really had.
//!
//! The modular sum must not wrap: the sum of n codes spans n·(2^q − 1) and the noise is unbounded, so the
//! parameters keep a headroom of [`tail_bound`] on either side, beyond which the total noise of a single value
//! falls with probability below 2⁻⁴⁰ even over 2³² values (a Bernstein bound: Skellam is sub-gamma).

use rand::SeedableRng;
use rand_distr::{Distribution, Poisson};
use serde::{Deserialize, Serialize};

use super::SecAggError;

/// What a run configures for noise at the sites (from `[privacy]` with `privacy.noise = "sites"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseOptions {
    /// C: the L2 norm each site clips its update to.
    pub clip_norm: f64,
    /// z: the Gaussian-equivalent noise multiplier of a round with the fewest contributors.
    pub noise_multiplier: f64,
    /// The fewest contributors a round completes with (the run's quorum); the threshold raises it.
    pub min_contributors: usize,
}

/// The noise of one secure round, in code units, the same at the server and every site.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteNoise {
    /// The variance of the symmetric Skellam noise each site adds to every value.
    pub site_variance: f64,
    /// Δ₂: how far one site's update can move the sum (L2), replaced by a zero update.
    pub l2_sensitivity: f64,
    /// Δ₁: the same in L1.
    pub l1_sensitivity: f64,
    /// The contributors the noise is calibrated for (a round completes with at least this many).
    pub min_contributors: usize,
}

impl SiteNoise {
    /// The noise for `n` participants, `values` values and quantization `step` (code width of the weighted update).
    pub fn calibrate(opts: &NoiseOptions, n: usize, threshold: usize, values: u64, step: f64) -> Self {
        let weight = 1.0 / n.max(1) as f64;
        let root_p = (values as f64).sqrt();
        let l2 = opts.clip_norm * weight / step + 2.0 * root_p;
        let min_contributors = opts.min_contributors.max(threshold).clamp(1, n.max(1));
        let total = (opts.noise_multiplier * l2).powi(2);
        SiteNoise {
            site_variance: total / min_contributors as f64,
            l2_sensitivity: l2,
            l1_sensitivity: root_p * l2,
            min_contributors,
        }
    }

    /// The variance of the sum's noise when `contributors` sites' inputs are in it.
    pub fn total_variance(&self, contributors: usize) -> f64 {
        self.site_variance * contributors as f64
    }
}

/// t such that one value of a symmetric Skellam sum of variance `variance` exceeds t in magnitude with probability
/// at most 2⁻⁴⁰ / 2³² (so that none of up to 2³² values does, with probability 1 − 2⁻⁴⁰). Bernstein's inequality
/// for a sub-gamma variable of variance μ and scale ⅓: P(|X| ≥ t) ≤ 2·exp(−t² / (2(μ + t/3))).
pub fn tail_bound(variance: f64) -> f64 {
    if variance <= 0.0 {
        return 0.0;
    }
    let a = 73.0 * std::f64::consts::LN_2; // ln(2 · 2³² · 2⁴⁰)
    a / 3.0 + (a * a / 9.0 + 2.0 * a * variance).sqrt()
}

/// Adds symmetric Skellam noise of variance `variance` to every code, modulo 2³², split over up to `threads`
/// threads (each with its own OS-seeded ChaCha12 stream: the draws must be unpredictable to the server).
pub fn add_skellam(values: &mut [u32], variance: f64, threads: usize) -> Result<(), SecAggError> {
    if variance == 0.0 || values.is_empty() {
        return Ok(());
    }
    let poisson = Poisson::new(variance / 2.0)
        .map_err(|e| SecAggError::Params(format!("Skellam noise of variance {variance}: {e}")))?;
    let threads = threads.clamp(1, values.len().div_ceil(1 << 16).max(1));
    let part = values.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for chunk in values.chunks_mut(part) {
            scope.spawn(move || {
                let mut rng = rand_chacha::ChaCha12Rng::from_os_rng();
                for v in chunk.iter_mut() {
                    let up: f64 = poisson.sample(&mut rng);
                    let down: f64 = poisson.sample(&mut rng);
                    // Both are integers below 2⁵³; their difference fits an i64 and wraps into the modular sum.
                    *v = v.wrapping_add((up as i64 - down as i64) as u32);
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skellam_noise_is_centred_with_the_asked_variance_and_wraps_below_zero() {
        let n = 200_000;
        let mut v = vec![0u32; n];
        add_skellam(&mut v, 50.0, 2).unwrap();
        let x: Vec<f64> = v.iter().map(|&c| f64::from(c as i32)).collect();
        let mean = x.iter().sum::<f64>() / n as f64;
        let var = x.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert!((var / 50.0 - 1.0).abs() < 0.03, "variance {var}");
        assert!(x.iter().any(|&a| a < 0.0) && x.iter().all(|a| a.fract() == 0.0), "integers, negative ones wrapped");
        // Fresh draws every call (OS-seeded), never the same noise twice.
        let mut w = vec![0u32; 64];
        add_skellam(&mut w, 50.0, 1).unwrap();
        assert_ne!(&v[..64], &w[..]);
    }

    #[test]
    fn the_tail_bound_is_a_few_dozen_deviations_and_holds_empirically() {
        let t = tail_bound(1e12);
        let sd = 1e6;
        assert!(t > 9.0 * sd && t < 11.0 * sd, "{} sd", t / sd);
        assert_eq!(tail_bound(0.0), 0.0);
        // Far beyond what a sample of this size reaches.
        let mut v = vec![0u32; 100_000];
        add_skellam(&mut v, 4.0, 1).unwrap();
        let max = v.iter().map(|&c| (c as i32).unsigned_abs()).max().unwrap_or(0);
        assert!(f64::from(max) < tail_bound(4.0), "{max} vs {}", tail_bound(4.0));
    }

    #[test]
    fn calibration_gives_the_fewest_contributors_the_gaussian_noise_of_multiplier_z() {
        let opts = NoiseOptions { clip_norm: 2.0, noise_multiplier: 1.5, min_contributors: 2 };
        let (n, values, step) = (4, 10_000u64, 1e-6);
        let s = SiteNoise::calibrate(&opts, n, 3, values, step);
        // The threshold (3) is above the quorum (2): any round that completes has 3 contributors or more.
        assert_eq!(s.min_contributors, 3);
        let l2 = 2.0 / 4.0 / 1e-6 + 200.0;
        assert!((s.l2_sensitivity - l2).abs() < 1e-6 && (s.l1_sensitivity - 100.0 * l2).abs() < 1e-3);
        assert!((s.total_variance(3).sqrt() / s.l2_sensitivity - 1.5).abs() < 1e-12, "σ = z·Δ₂ with 3 sites");
        assert!(s.total_variance(4) > s.total_variance(3));
    }
}
