//! DP-FedAvg as a [`Strategy`]: clip each update around the round's global weights, take the unweighted mean, add
//! Gaussian noise to the mean. The math is pure ([`clip_update`]); the noise comes from a ChaCha20 generator seeded
//! from the operating system for every round, so no one can replay it from a config seed.

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::aggregate::StreamingMean;
use super::api::{AggregateError, DpRelease, SiteHints, Strategy};
use crate::federation::weights::Weights;

/// `update` clipped to L2 distance `clip_norm` from `global` over all tensors together (Andrew et al. 2019, as
/// Flower's fixed clipping): `global + Δ · min(1, C/‖Δ‖)`. Returns the clipped weights and ‖Δ‖ before clipping.
pub fn clip_update(update: Weights, global: &Weights, clip_norm: f64) -> Result<(Weights, f64), AggregateError> {
    update.check_same_layout(global).map_err(|e| AggregateError::Layout(e.to_string()))?;
    let norm = update.squared_distance(global).sqrt();
    if norm <= clip_norm || norm == 0.0 {
        return Ok((update, norm));
    }
    let scale = (clip_norm / norm) as f32;
    let mut update = update;
    for (t, g) in update.tensors_mut().iter_mut().zip(global.tensors()) {
        for (v, &w) in t.data.iter_mut().zip(&g.data) {
            *v = w + (*v - w) * scale;
        }
    }
    Ok((update, norm))
}

/// Relative slack before an update counts as clipped at the server (f32 rounding of a site-clipped update).
const CLIP_SLACK: f64 = 1e-3;

/// Client-level DP-FedAvg with fixed clipping (McMahan et al. 2018). Sites' sample counts are ignored: a weighted
/// mean would let a large site move the model by more than C/m.
pub struct DpFedAvg {
    clip_norm: f64,
    /// Sites clip before sending (the server clips again: a no-op for a site that did, a bound for one that did not).
    at_sites: bool,
    noise_multiplier: f64,
    mean: StreamingMean,
    global: Option<Weights>,
    clipped: usize,
    last: Option<DpRelease>,
}

impl DpFedAvg {
    /// `at_sites`: ask the sites to clip their updates before they leave (the server clips again either way).
    pub fn new(clip_norm: f64, noise_multiplier: f64, at_sites: bool) -> Result<Self, AggregateError> {
        if !(clip_norm.is_finite() && clip_norm > 0.0) {
            return Err(AggregateError::InvalidParameter(format!("DP clip norm must be > 0, got {clip_norm}")));
        }
        if !(noise_multiplier.is_finite() && noise_multiplier >= 0.0) {
            return Err(AggregateError::InvalidParameter(format!(
                "DP noise multiplier must be >= 0, got {noise_multiplier}"
            )));
        }
        Ok(Self {
            clip_norm,
            at_sites,
            noise_multiplier,
            mean: StreamingMean::default(),
            global: None,
            clipped: 0,
            last: None,
        })
    }
}

impl Strategy for DpFedAvg {
    fn name(&self) -> &'static str {
        "dp-fedavg"
    }
    fn site_hints(&self) -> SiteHints {
        SiteHints { proximal_mu: None, dp_clip_norm: self.at_sites.then_some(self.clip_norm) }
    }
    fn begin_round(&mut self, global: &Weights) {
        self.mean.begin(global);
        self.global = Some(global.clone());
        self.clipped = 0;
    }
    fn accumulate(&mut self, update: Weights, _num_samples: u64) -> Result<(), AggregateError> {
        let global = self.global.as_ref().ok_or(AggregateError::NoUpdates)?;
        let (clipped, norm) = clip_update(update, global, self.clip_norm)?;
        // For choosing the clip norm by hand; not part of the report (an unnoised statistic of a site's data).
        tracing::debug!(norm, clip_norm = self.clip_norm, "update norm before clipping");
        // A site that clipped to C sends f32 weights whose rounding can put the update a hair past C (relative
        // (ulp/Δ)²/2, ~1e-4 for C = 1e-4 here): that is not an unclipped update.
        if norm > self.clip_norm * (1.0 + CLIP_SLACK) {
            self.clipped += 1;
        }
        self.mean.push(clipped, 1)
    }
    fn count(&self) -> usize {
        self.mean.count()
    }
    fn finish(&mut self) -> Result<Weights, AggregateError> {
        let m = self.mean.count();
        let mut mean = self.mean.finish()?;
        let std = self.noise_multiplier * self.clip_norm / m as f64;
        if std > 0.0 {
            let normal = Normal::new(0.0f64, std)
                .map_err(|e| AggregateError::InvalidParameter(format!("DP noise std {std}: {e}")))?;
            let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
            for t in mean.tensors_mut() {
                // A noisy variance can come out negative, and a normalisation layer then divides by the square
                // root of it: clamp at 0. Post-processing of the released mean, so the guarantee is unchanged.
                let variance = t.name.ends_with("running_var");
                for v in t.data.iter_mut() {
                    *v += normal.sample(&mut rng) as f32;
                    if variance {
                        *v = v.max(0.0);
                    }
                }
            }
        }
        self.last = Some(DpRelease {
            noise_multiplier: self.noise_multiplier,
            clip_norm: self.clip_norm,
            updates: m,
            clipped: self.clipped,
        });
        self.global = None;
        Ok(mean)
    }
    fn released(&self) -> Option<DpRelease> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::weights::NamedTensor;

    fn w(values: &[f32]) -> Weights {
        Weights::new(vec![NamedTensor::new("t", vec![values.len()], values.to_vec()).unwrap()]).unwrap()
    }

    #[test]
    fn clipping_bounds_the_distance_and_keeps_the_direction() {
        let global = w(&[1.0, 1.0]);
        let (c, norm) = clip_update(w(&[4.0, 5.0]), &global, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-9);
        assert!((c.l2_distance(&global).unwrap() - 1.0).abs() < 1e-6);
        assert_eq!(c.tensors()[0].data, vec![1.6, 1.8]);
        let (same, _) = clip_update(w(&[1.5, 1.0]), &global, 1.0).unwrap();
        assert_eq!(same.tensors()[0].data, vec![1.5, 1.0], "inside the ball: unchanged");
        assert!(clip_update(w(&[1.0]), &global, 1.0).is_err(), "a layout mismatch is an error");
    }

    /// A site sending a huge update moves the global model by at most C/m (plus noise): with noise 0, exactly.
    #[test]
    fn one_huge_update_moves_the_mean_by_at_most_c_over_m() {
        let global = w(&[0.0; 4]);
        let mut s = DpFedAvg::new(0.5, 0.0, false).unwrap();
        s.begin_round(&global);
        s.accumulate(w(&[1e6, -1e6, 3e5, 0.0]), 10_000).unwrap();
        for _ in 0..3 {
            s.accumulate(global.clone(), 1).unwrap();
        }
        let out = s.finish().unwrap();
        let moved = out.l2_distance(&global).unwrap();
        assert!((moved - 0.5 / 4.0).abs() < 1e-6, "moved {moved}");
        assert_eq!(s.released(), Some(DpRelease { noise_multiplier: 0.0, clip_norm: 0.5, updates: 4, clipped: 1 }));
    }

    /// The noise on the mean has std z·C/m (measured over 20 000 values, within 3 %), and it is fresh every round.
    #[test]
    fn the_noise_on_the_mean_has_std_z_c_over_m() {
        let global = w(&vec![0.0; 20_000]);
        let mut s = DpFedAvg::new(2.0, 1.5, true).unwrap();
        let round = |s: &mut DpFedAvg| {
            s.begin_round(&global);
            s.accumulate(global.clone(), 1).unwrap();
            s.accumulate(global.clone(), 1).unwrap();
            s.finish().unwrap()
        };
        let a = round(&mut s);
        let b = round(&mut s);
        let sd = |x: &Weights| (x.tensors()[0].data.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 20_000.0).sqrt();
        let want = 1.5 * 2.0 / 2.0;
        assert!((sd(&a) / want - 1.0).abs() < 0.03, "sd {} want {want}", sd(&a));
        assert_ne!(a.tensors()[0].data, b.tensors()[0].data, "the noise is not replayed");
    }

    #[test]
    fn noisy_running_variances_stay_non_negative() {
        let global = Weights::new(vec![
            NamedTensor::new("bn.running_var", vec![1000], vec![0.01; 1000]).unwrap(),
            NamedTensor::new("conv.weight", vec![1000], vec![0.0; 1000]).unwrap(),
        ])
        .unwrap();
        let mut s = DpFedAvg::new(1.0, 1.0, false).unwrap();
        s.begin_round(&global);
        s.accumulate(global.clone(), 1).unwrap();
        let out = s.finish().unwrap();
        assert!(out.tensors()[0].data.iter().all(|v| *v >= 0.0), "variances clamped at 0");
        assert!(out.tensors()[1].data.iter().any(|v| *v < 0.0), "other tensors keep their noise");
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(DpFedAvg::new(0.0, 1.0, true).is_err());
        assert!(DpFedAvg::new(1.0, -1.0, true).is_err());
        assert!(DpFedAvg::new(f64::NAN, 1.0, true).is_err());
        assert_eq!(DpFedAvg::new(1.5, 1.0, true).unwrap().site_hints().dp_clip_norm, Some(1.5));
        assert_eq!(DpFedAvg::new(1.5, 1.0, false).unwrap().site_hints().dp_clip_norm, None);
    }
}
