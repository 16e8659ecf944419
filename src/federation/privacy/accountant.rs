//! The RDP accountant of the (subsampled) Gaussian mechanism, and the conversion to (ε, δ)-DP.
//!
//! Why home-made: no maintained Rust crate implements it, and the math is short. It follows Mironov, Talwar and
//! Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism" (2019, §3.3), as the reference
//! implementations do (TF-Privacy's `rdp_accountant`, Opacus' `analysis/rdp.py`, Google's `dp_accounting`), for
//! integer orders α:
//!
//!   A_α = Σ_{i=0..α} C(α, i) (1 − q)^{α − i} q^i exp((i² − i) / (2σ²)),   RDP(α) = ln A_α / (α − 1)
//!
//! (for q = 1 this is α / (2σ²), the Gaussian mechanism's), summed in log space. Compositions add RDP per order.
//! ε(δ) = min over α of RDP(α) + ln((α − 1)/α) − (ln δ + ln α)/(α − 1) (Balle et al. 2020, Theorem 21, the
//! conversion `dp_accounting` and Opacus use). The tests compare with values computed by `dp_accounting`.

/// The orders α the accountant tracks: 2..=64 and a few larger ones (small ε needs large orders).
pub const ORDERS: &[u32] = &[
    2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128, 160, 192, 256, 384,
    512,
];

/// ln(e^a + e^b) without overflow.
fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// ln C(n, k).
fn ln_binomial(n: u32, k: u32) -> f64 {
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

/// ln Γ(x) for x ≥ 1 (Lanczos, g = 7, n = 9; relative error < 1e-13 here).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// RDP at integer order `alpha` ≥ 2 of one application of the Gaussian mechanism with noise multiplier `sigma`
/// (noise std / sensitivity), applied to a Poisson sample with rate `q` ∈ (0, 1].
pub fn rdp_subsampled_gaussian(q: f64, sigma: f64, alpha: u32) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if sigma <= 0.0 {
        return f64::INFINITY;
    }
    if q >= 1.0 {
        return alpha as f64 / (2.0 * sigma * sigma);
    }
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let term = ln_binomial(alpha, i)
            + i as f64 * q.ln()
            + (alpha - i) as f64 * (-q).ln_1p()
            + (i as f64 * i as f64 - i as f64) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, term);
    }
    log_a / (alpha as f64 - 1.0)
}

/// ε at `delta` of a total RDP curve (one value per [`ORDERS`] entry), and the order that attains it.
pub fn epsilon(rdp: &[f64], delta: f64) -> (f64, u32) {
    let mut best = (f64::INFINITY, ORDERS[0]);
    for (&a, &r) in ORDERS.iter().zip(rdp) {
        let a_f = a as f64;
        let eps = r + ((a_f - 1.0) / a_f).ln() - (delta.ln() + a_f.ln()) / (a_f - 1.0);
        if eps < best.0 {
            best = (eps.max(0.0), a);
        }
    }
    best
}

/// RDP at integer order `alpha` ≥ 2 of the Skellam mechanism: integer noise of variance `variance` (a symmetric
/// Skellam, the difference of two Poisson(variance/2)) on an integer query of L1 / L2 sensitivity `l1` / `l2`, all
/// in the same (code) units. Agarwal, Kairouz and Liu, "The Skellam Mechanism for Differentially Private Federated
/// Learning" (NeurIPS 2021, Theorem 3.5 / Corollary 3.6), with μ the variance:
///
///   ε(α) ≤ α·Δ₂²/(2μ) + min( ((2α − 1)·Δ₂² + 6·Δ₁) / (4μ²),  3·Δ₁/(2μ) )
///
/// The first term is the Gaussian mechanism's at σ² = μ; the second what the integers cost on top.
pub fn rdp_skellam(l1: f64, l2: f64, variance: f64, alpha: u32) -> f64 {
    if l2 <= 0.0 && l1 <= 0.0 {
        return 0.0;
    }
    if variance.is_nan() || variance <= 0.0 {
        return f64::INFINITY;
    }
    let a = alpha as f64;
    let gaussian = a * l2 * l2 / (2.0 * variance);
    let discrete =
        (((2.0 * a - 1.0) * l2 * l2 + 6.0 * l1) / (4.0 * variance * variance)).min(3.0 * l1 / (2.0 * variance));
    gaussian + discrete
}

/// One release of a round's aggregate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Release {
    /// The Gaussian mechanism with noise multiplier `sigma` (noise std / sensitivity) on a sample of rate `q`.
    Gaussian { q: f64, sigma: f64 },
    /// The Skellam mechanism (noise added by the sites under secure aggregation, `federation::secagg`): L1 / L2
    /// sensitivity and noise variance, in code units.
    Skellam { l1: f64, l2: f64, variance: f64 },
}

impl Release {
    /// The Gaussian mechanism on every site (q = 1) at multiplier `z`.
    pub fn gaussian(z: f64) -> Self {
        Release::Gaussian { q: 1.0, sigma: z }
    }

    /// RDP at order `alpha`.
    pub fn rdp(&self, alpha: u32) -> f64 {
        match *self {
            Release::Gaussian { q, sigma } => rdp_subsampled_gaussian(q, sigma, alpha),
            Release::Skellam { l1, l2, variance } => rdp_skellam(l1, l2, variance, alpha),
        }
    }
}

/// The RDP curve of a sequence of releases (composition: RDP adds up per order).
pub fn rdp_of(releases: impl IntoIterator<Item = Release>) -> Vec<f64> {
    let mut total = vec![0.0; ORDERS.len()];
    for r in releases {
        for (t, &a) in total.iter_mut().zip(ORDERS) {
            *t += r.rdp(a);
        }
    }
    total
}

/// ε(δ) after `releases`.
pub fn epsilon_of(releases: impl IntoIterator<Item = Release>, delta: f64) -> f64 {
    epsilon(&rdp_of(releases), delta).0
}

/// The smallest noise multiplier (to 0.1 %) for which `rounds` releases at rate `q` stay within ε `target` at
/// `delta`; `None` when no multiplier up to 1000 does.
pub fn noise_for_epsilon(target: f64, delta: f64, q: f64, rounds: u64) -> Option<f64> {
    let eps = |sigma: f64| epsilon_of(std::iter::repeat_n(Release::Gaussian { q, sigma }, rounds as usize), delta);
    let (mut lo, mut hi) = (0.01, 1000.0);
    if eps(hi) > target {
        return None;
    }
    while hi / lo > 1.001 {
        let mid = (lo * hi).sqrt();
        if eps(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        ((a - b) / b).abs() < rel
    }

    #[test]
    fn the_full_batch_gaussian_is_alpha_over_two_sigma_squared() {
        for (sigma, alpha) in [(1.0, 2), (0.5, 7), (4.0, 64)] {
            let want = alpha as f64 / (2.0 * sigma * sigma);
            assert!(close(rdp_subsampled_gaussian(1.0, sigma, alpha), want, 1e-12));
            // The sum formula at q → 1 agrees with the closed form.
            assert!(close(rdp_subsampled_gaussian(1.0 - 1e-12, sigma, alpha), want, 1e-6));
        }
        assert_eq!(rdp_subsampled_gaussian(0.0, 1.0, 8), 0.0);
    }

    /// ε from Google's `dp_accounting` 0.4 (`RdpAccountant(ORDERS)`, the same orders; PoissonSampledDpEvent of a
    /// GaussianDpEvent, or the GaussianDpEvent alone for q = 1), to 3 significant digits. The first row is
    /// TF-Privacy's MNIST DP-SGD example (60 000 images, batch 256, σ 1.1, 60 epochs).
    #[test]
    fn epsilon_matches_the_reference_accountant() {
        let cases = [
            (256.0 / 60000.0, 1.1, 14062, 1e-5, 2.5969811785948815),
            (0.01, 1.0, 1000, 1e-5, 2.1077530754515745),
            (0.1, 2.0, 100, 1e-5, 2.5866521781675305),
            (1.0, 5.0, 50, 1e-5, 7.087861628831665),
            (1.0, 1.0, 1, 1e-5, 4.752728336819822),
            (0.5, 3.0, 200, 1e-6, 14.893279207990311),
        ];
        for (q, sigma, steps, delta, want) in cases {
            let got = epsilon_of(std::iter::repeat_n(Release::Gaussian { q, sigma }, steps), delta);
            assert!(close(got, want, 5e-4), "q {q} σ {sigma} T {steps} δ {delta}: ε {got}, reference {want}");
        }
    }

    #[test]
    fn the_noise_found_for_a_target_meets_it_and_barely() {
        let z = noise_for_epsilon(3.0, 1e-5, 1.0, 20).expect("reachable");
        let at = |z: f64| epsilon_of(std::iter::repeat_n(Release::gaussian(z), 20), 1e-5);
        assert!(at(z) <= 3.0 && at(z * 0.99) > 3.0, "z {z}: ε {} / {}", at(z), at(z * 0.99));
        assert_eq!(noise_for_epsilon(1e-6, 1e-5, 1.0, 1000), None, "an unreachable target says so");
    }

    /// The Skellam bound is the Gaussian one at σ² = μ plus the integers' surcharge: vanishing as the variance
    /// grows against the sensitivity (the regime the sites' noise runs in), dominant when it is small. Values of the
    /// formula worked by hand: α = 2, Δ₁ = 4, Δ₂ = 2, μ = 8: 2·4/16 + min((3·4 + 24)/256, 12/16) = 0.5 + 0.140625.
    #[test]
    fn skellam_rdp_is_the_gaussians_plus_a_vanishing_surcharge() {
        assert!(close(rdp_skellam(4.0, 2.0, 8.0, 2), 0.640625, 1e-12));
        assert!(close(rdp_skellam(1000.0, 1.0, 0.25, 3), 6.0 + 6000.0, 1e-12), "small μ: the min takes 3Δ₁/(2μ)");
        for (z, l2, p) in [(1.0f64, 1e6f64, 1e6f64), (0.7, 3e5, 1e7), (3.0, 5e6, 1e5)] {
            let (l1, variance) = (p.sqrt() * l2, (z * l2) * (z * l2));
            for &a in ORDERS {
                let g = rdp_subsampled_gaussian(1.0, z, a);
                let s = rdp_skellam(l1, l2, variance, a);
                assert!(s >= g && close(s, g, 1e-4), "z {z} Δ₂ {l2} α {a}: {s} vs {g}");
            }
        }
        let skellam = Release::Skellam { l1: 1e9, l2: 1e6, variance: 1e12 };
        let e = epsilon_of(std::iter::repeat_n(skellam, 10), 1e-5);
        let g = epsilon_of(std::iter::repeat_n(Release::gaussian(1.0), 10), 1e-5);
        assert!(e >= g && close(e, g, 1e-3), "{e} vs {g}");
        assert_eq!(rdp_skellam(0.0, 0.0, 1.0, 2), 0.0);
        assert_eq!(rdp_skellam(1.0, 1.0, 0.0, 2), f64::INFINITY);
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut f = 1.0f64;
        for n in 1..30u32 {
            f *= n as f64;
            assert!((ln_gamma(n as f64 + 1.0) - f.ln()).abs() < 1e-12 * f.ln().max(1.0), "{n}");
        }
    }
}
