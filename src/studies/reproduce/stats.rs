//! Bootstrap confidence intervals over seeds, the statistics every verdict of `claims` rests on.
//!
//! Why a hierarchical bootstrap: a reproduction's numbers vary with two independent kinds of randomness — the GAN's
//! training seed and the classifier's — and the GAN seed is the larger one. Resampling the pooled numbers as if
//! they were independent would make the intervals too narrow; resampling GAN seeds first and then classifier seeds
//! within them (Davison & Hinkley 1997, §3.8) keeps each source's share. Percentile intervals, a fixed number of
//! resamples and a fixed seed, so the same numbers always give the same interval.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A mean with its 95 % bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// How many independent units (seeds) the interval rests on.
    pub n: usize,
}

impl Interval {
    pub fn excludes_zero_below(&self) -> bool {
        self.hi < 0.0
    }

    pub fn excludes_zero_above(&self) -> bool {
        self.lo > 0.0
    }

    /// `+1.2 [−0.3, +2.5]` scaled by `scale` (e.g. 100 for points, 1000 for KID × 10³).
    pub fn show(&self, scale: f64) -> String {
        format!("{:+.2} [{:+.2}, {:+.2}]", scale * self.mean, scale * self.lo, scale * self.hi)
    }
}

/// The arithmetic mean; NaN for no values (never a number that could pass a rule).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// The 2.5 % and 97.5 % percentiles of `stats` (sorted in place).
fn percentiles(stats: &mut [f64]) -> (f64, f64) {
    stats.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        let i = ((stats.len() as f64 - 1.0) * q).round() as usize;
        stats.get(i).copied().unwrap_or(f64::NAN)
    };
    (at(0.025), at(0.975))
}

/// Mean of `groups` (outer = GAN seeds, inner = classifier seeds within it) with a two-level bootstrap interval:
/// each resample draws outer units with replacement, then inner values with replacement within each drawn unit.
/// Groups with no values are ignored; no values at all give NaN bounds.
pub fn hierarchical(groups: &[Vec<f64>], resamples: usize, seed: u64) -> Interval {
    let groups: Vec<&Vec<f64>> = groups.iter().filter(|g| !g.is_empty()).collect();
    let all: Vec<f64> = groups.iter().flat_map(|g| g.iter().copied()).collect();
    let n = groups.len();
    if n == 0 {
        return Interval { mean: f64::NAN, lo: f64::NAN, hi: f64::NAN, n: 0 };
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = Vec::with_capacity(resamples.max(1));
    for _ in 0..resamples.max(1) {
        let mut sum = 0.0;
        let mut count = 0usize;
        for _ in 0..n {
            let g = groups[rng.random_range(0..n)];
            for _ in 0..g.len() {
                sum += g[rng.random_range(0..g.len())];
                count += 1;
            }
        }
        stats.push(sum / count.max(1) as f64);
    }
    let (lo, hi) = percentiles(&mut stats);
    Interval { mean: mean(&all), lo, hi, n }
}

/// Mean of independent values (one per seed) with a percentile bootstrap interval.
pub fn simple(values: &[f64], resamples: usize, seed: u64) -> Interval {
    let groups: Vec<Vec<f64>> = values.iter().map(|&v| vec![v]).collect();
    hierarchical(&groups, resamples, seed)
}

/// mean(a) − mean(b) for two independent samples (e.g. two models' KID over their own seeds): each resample draws
/// each side with replacement on its own.
pub fn difference(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Interval {
    if a.is_empty() || b.is_empty() {
        return Interval { mean: f64::NAN, lo: f64::NAN, hi: f64::NAN, n: 0 };
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let draw = |xs: &[f64], rng: &mut StdRng| -> f64 {
        (0..xs.len()).map(|_| xs[rng.random_range(0..xs.len())]).sum::<f64>() / xs.len() as f64
    };
    let mut stats: Vec<f64> = (0..resamples.max(1)).map(|_| draw(a, &mut rng) - draw(b, &mut rng)).collect();
    let (lo, hi) = percentiles(&mut stats);
    Interval { mean: mean(a) - mean(b), lo, hi, n: a.len().min(b.len()) }
}

/// Sample mean and standard deviation (n − 1), for tables.
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let m = mean(xs);
    if xs.len() < 2 {
        return (m, 0.0);
    }
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    (m, v.sqrt())
}

/// A deterministic per-purpose seed, so two intervals never share their random draws by accident.
pub fn seed_for(label: &str) -> u64 {
    label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_covers_its_mean_and_shrinks_with_more_seeds() {
        let few = simple(&[1.0, 2.0, 3.0], 4000, 1);
        assert!((few.mean - 2.0).abs() < 1e-12);
        assert!(few.lo < 2.0 && few.hi > 2.0, "{few:?}");
        let many: Vec<f64> = (0..30).map(|i| 1.0 + (i % 3) as f64).collect();
        let tight = simple(&many, 4000, 1);
        assert!(tight.hi - tight.lo < few.hi - few.lo, "{tight:?} vs {few:?}");
    }

    #[test]
    fn a_clear_effect_excludes_zero_and_noise_does_not() {
        let clear = simple(&[0.5, 0.6, 0.55, 0.52], 4000, 2);
        assert!(clear.excludes_zero_above(), "{clear:?}");
        let noise = simple(&[-0.3, 0.4, 0.1, -0.2], 4000, 2);
        assert!(!noise.excludes_zero_above() && !noise.excludes_zero_below(), "{noise:?}");
        let d = difference(&[1.0, 1.1, 0.9], &[2.0, 2.1, 1.9], 4000, 3);
        assert!(d.excludes_zero_below(), "{d:?}");
        assert!((d.mean + 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_hierarchical_interval_is_wider_than_pooling_when_the_outer_level_varies() {
        // Three GAN seeds far apart, three classifier seeds each nearly equal: the spread is between GAN seeds.
        let groups = vec![vec![0.0, 0.01, 0.02], vec![1.0, 1.01, 1.02], vec![2.0, 2.01, 2.02]];
        let h = hierarchical(&groups, 4000, 4);
        let pooled: Vec<f64> = groups.iter().flatten().copied().collect();
        let p = simple(&pooled, 4000, 4);
        assert!(h.hi - h.lo > p.hi - p.lo, "hierarchical {h:?} vs pooled {p:?}");
        assert_eq!(h.n, 3);
    }

    #[test]
    fn the_same_numbers_give_the_same_interval() {
        let a = hierarchical(&[vec![1.0, 2.0], vec![3.0]], 1000, 9);
        let b = hierarchical(&[vec![1.0, 2.0], vec![3.0]], 1000, 9);
        assert_eq!(a, b);
        assert!(hierarchical(&[], 100, 1).mean.is_nan());
        assert_ne!(seed_for("claim 1"), seed_for("claim 2"));
    }
}
