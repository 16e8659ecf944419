//! DP-FedAvg as a [`Strategy`]: clip each update around the round's global weights, take the unweighted mean, add
//! Gaussian noise to the mean. The math is pure ([`clip_update`], [`AdaptiveClipping`]); the noise comes from a
//! ChaCha20 generator seeded from the operating system for every round, so no one can replay it from a config seed.
//!
//! Why adaptive clipping: the right C depends on the model, the data and the local steps (the demo's updates are
//! ≈ 1.7 long, ≈ 25 before [`held_back`] tensors left the release; a C of 0.01 keeps almost nothing of them, a C
//! of 100 spends the noise on empty space). Andrew et al.
//! 2019 ("Differentially private learning with adaptive clipping") track a quantile of the update norms instead:
//! each round the server counts the updates that fit in C, adds Gaussian noise to the count, and moves C
//! geometrically towards the target quantile. The count is a second Gaussian release of sensitivity ½ (the bit is
//! centred), so the update noise is raised to keep the two together at the configured multiplier z.

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::aggregate::StreamingMean;
use super::api::{AggregateError, DpRelease, SecureNoise, SiteHints, Strategy};
use crate::federation::weights::Weights;

/// Whether tensor `name` is held back from a DP release: spectral normalisation's power-iteration vectors
/// (`…weight_u`, `…weight_v`) and the generator's BatchNorm running statistics (`generator.…running_mean`,
/// `generator.…running_var`, its EMA's included).
///
/// Why: neither is a trained parameter, and both took the clip budget. The power-iteration vectors are a warm start
/// for the estimate of σ(W), refreshed from the weights at every training step; they are unit vectors whose
/// direction wanders, so in `reproduce --preset cpu` (CGAN × CNN, no DP) they made 82 % of the squared norm of the
/// global model's step between rounds. Held back alone, the generator's running statistics took the budget next
/// (100 % of every clipped step: all sites move them from their initial values the same way). Those depend on the
/// generator's weights alone, never on data (its input is noise and labels), so every sampler derives them
/// (`models::Gan::settle_generator_statistics`). Held back, they leave no site (each update carries the global's
/// values), count nothing towards the norm and get no noise; the global keeps its initial values. The
/// discriminator's statistics do see data and stay in the release.
pub fn held_back(name: &str) -> bool {
    let leaf = name.rsplit('.').next();
    matches!(leaf, Some("weight_u" | "weight_v"))
        || (name.starts_with("generator.") && matches!(leaf, Some("running_mean" | "running_var")))
}

/// `update` clipped to L2 distance `clip_norm` from `global` over all released tensors together (Andrew et al.
/// 2019, as Flower's fixed clipping): `global + Δ · min(1, C/‖Δ‖)`; tensors [`held_back`] take the global's
/// values. Returns the clipped weights and ‖Δ‖ before clipping (over the released tensors).
pub fn clip_update(update: Weights, global: &Weights, clip_norm: f64) -> Result<(Weights, f64), AggregateError> {
    let mut update = update;
    restore_held_back(&mut update, global)?;
    let mut squared = 0.0f64;
    // The held-back tensors now equal the global's: they add nothing to the norm.
    for (t, g) in update.tensors().iter().zip(global.tensors()).filter(|(t, _)| !held_back(&t.name)) {
        squared += t.data.iter().zip(&g.data).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>();
    }
    let norm = squared.sqrt();
    if norm <= clip_norm || norm == 0.0 {
        return Ok((update, norm));
    }
    let scale = (clip_norm / norm) as f32;
    for (t, g) in update.tensors_mut().iter_mut().zip(global.tensors()) {
        for (v, &w) in t.data.iter_mut().zip(&g.data) {
            *v = w + (*v - w) * scale;
        }
    }
    Ok((update, norm))
}

/// Relative slack before an update counts as clipped at the server (f32 rounding of a site-clipped update).
const CLIP_SLACK: f64 = 1e-3;

/// Adaptive clipping (Andrew et al. 2019): after each round `C ← C · exp(−η (b̃ − γ))`, where b̃ is the noisy share
/// of the round's updates that fitted in C. The privacy of a round is that of the update noise z_Δ and the count
/// noise σ_b together: z⁻² = z_Δ⁻² + (2σ_b)⁻², so z_Δ = (z⁻² − (2σ_b)⁻²)^(−½) is what goes on the updates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveClipping {
    /// γ: the share of updates that should fit in C (0.5: the median norm).
    pub target_quantile: f64,
    /// η: the geometric step of C per round.
    pub learning_rate: f64,
    /// σ_b: the std of the Gaussian noise on the count of updates that fitted.
    pub count_stddev: f64,
}

impl AdaptiveClipping {
    /// Checks the parameters against the total noise multiplier `z`: the count's noise must leave some privacy for
    /// the updates (2σ_b > z).
    pub fn validate(&self, z: f64) -> Result<(), AggregateError> {
        let bad = |m: String| Err(AggregateError::InvalidParameter(m));
        if !(self.target_quantile > 0.0 && self.target_quantile < 1.0) {
            return bad(format!("adaptive clipping: target quantile {} is not in (0, 1)", self.target_quantile));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!("adaptive clipping: learning rate {} must be > 0", self.learning_rate));
        }
        if !(self.count_stddev.is_finite() && self.count_stddev > 0.0) {
            return bad(format!("adaptive clipping: count noise std {} must be > 0", self.count_stddev));
        }
        if 2.0 * self.count_stddev <= z {
            return bad(format!(
                "adaptive clipping: the count noise std {} leaves no privacy for the updates at noise multiplier {z} \
                 (it must exceed z/2 = {})",
                self.count_stddev,
                z / 2.0
            ));
        }
        Ok(())
    }

    /// z_Δ, the multiplier of the noise on the mean of the updates, for a total multiplier `z` (0 stays 0).
    pub fn update_noise_multiplier(&self, z: f64) -> f64 {
        if z == 0.0 {
            return 0.0;
        }
        (z.powi(-2) - (2.0 * self.count_stddev).powi(-2)).powf(-0.5)
    }

    /// The next clip norm from this round's `clip_norm` and noisy share `fitted` of updates that fitted in it.
    pub fn next_clip_norm(&self, clip_norm: f64, fitted: f64) -> f64 {
        clip_norm * (-self.learning_rate * (fitted - self.target_quantile)).exp()
    }
}

/// Client-level DP-FedAvg with fixed or adaptive clipping (McMahan et al. 2018; Andrew et al. 2019). Sites' sample counts are ignored: a weighted
/// mean would let a large site move the model by more than C/m.
pub struct DpFedAvg {
    clip_norm: f64,
    /// Sites clip before sending (the server clips again: a no-op for a site that did, a bound for one that did not).
    at_sites: bool,
    /// z, the multiplier the accountant charges (the updates' and the count's noise together).
    noise_multiplier: f64,
    adaptive: Option<AdaptiveClipping>,
    mean: StreamingMean,
    global: Option<Weights>,
    /// Updates the server had to clip (a site clipping at the sites sends none).
    clipped: usize,
    /// Updates that fitted in C before any clipping (at the sites: did not reach the bound).
    fitted: usize,
    last: Option<DpRelease>,
    /// This round's mean came from secure aggregation: (updates it averages, its noise).
    secure: Option<(usize, SecureNoise)>,
}

impl DpFedAvg {
    /// `at_sites`: ask the sites to clip their updates before they leave (the server clips again either way).
    pub fn new(clip_norm: f64, noise_multiplier: f64, at_sites: bool) -> Result<Self, AggregateError> {
        Self::with_clipping(clip_norm, noise_multiplier, at_sites, None)
    }

    /// [`DpFedAvg::new`] with adaptive clipping when `adaptive` is set (`clip_norm` is then the first round's C).
    pub fn with_clipping(
        clip_norm: f64,
        noise_multiplier: f64,
        at_sites: bool,
        adaptive: Option<AdaptiveClipping>,
    ) -> Result<Self, AggregateError> {
        if !(clip_norm.is_finite() && clip_norm > 0.0) {
            return Err(AggregateError::InvalidParameter(format!("DP clip norm must be > 0, got {clip_norm}")));
        }
        if !(noise_multiplier.is_finite() && noise_multiplier >= 0.0) {
            return Err(AggregateError::InvalidParameter(format!(
                "DP noise multiplier must be >= 0, got {noise_multiplier}"
            )));
        }
        if let Some(a) = &adaptive {
            a.validate(noise_multiplier)?;
        }
        Ok(Self {
            clip_norm,
            at_sites,
            noise_multiplier,
            adaptive,
            mean: StreamingMean::default(),
            global: None,
            clipped: 0,
            fitted: 0,
            last: None,
            secure: None,
        })
    }

    /// The clip norm the next round uses.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// z_Δ: the multiplier of the noise added to the mean of the updates.
    fn update_noise_multiplier(&self) -> f64 {
        self.adaptive.map_or(self.noise_multiplier, |a| a.update_noise_multiplier(self.noise_multiplier))
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
        self.fitted = 0;
        self.secure = None;
    }
    /// The unmasked mean of `updates` updates the sites clipped to C. Without noise in it: clipped again here (a
    /// mean of vectors within C is within C, so this only bites if a site did not clip — the one check left on
    /// updates the server cannot see), and noised in `finish` as the mean of `updates`, at C + slack. With the
    /// sites' noise in it: kept as it is (clipping a noisy mean would cut the noise, and a site that did not clip is
    /// bounded only by the per-value clip range of secure aggregation) and charged as the sites' Skellam mechanism.
    fn accumulate_mean(
        &mut self,
        mean: Weights,
        updates: usize,
        _num_samples: u64,
        noise: SecureNoise,
    ) -> Result<(), AggregateError> {
        let valid = match noise {
            SecureNoise::ToAdd { slack } => slack.is_finite() && slack >= 0.0,
            SecureNoise::Added(s) => s.variance.is_finite() && s.variance > 0.0 && s.contributors == updates,
        };
        if updates == 0 || self.mean.count() > 0 || !valid {
            return Err(AggregateError::InvalidParameter(format!(
                "a secure mean of {updates} updates ({noise:?}) after {} updates this round",
                self.mean.count()
            )));
        }
        let global = self.global.as_ref().ok_or(AggregateError::NoUpdates)?;
        let mean = match noise {
            SecureNoise::Added(_) => mean,
            SecureNoise::ToAdd { slack } => {
                let (clipped, norm) = clip_update(mean, global, self.clip_norm)?;
                if norm > (self.clip_norm + slack) * (1.0 + CLIP_SLACK) {
                    tracing::warn!(
                        norm,
                        clip_norm = self.clip_norm,
                        "the unmasked mean was longer than C: a site did not clip"
                    );
                    self.clipped += 1;
                }
                clipped
            }
        };
        self.secure = Some((updates, noise));
        self.mean.push(mean, 1)
    }
    fn accumulate(&mut self, update: Weights, _num_samples: u64) -> Result<(), AggregateError> {
        if self.secure.is_some() {
            return Err(AggregateError::InvalidParameter("an update after this round's secure mean".into()));
        }
        let global = self.global.as_ref().ok_or(AggregateError::NoUpdates)?;
        let (clipped, norm) = clip_update(update, global, self.clip_norm)?;
        // For choosing the clip norm by hand; not part of the report (an unnoised statistic of a site's data).
        tracing::debug!(norm, clip_norm = self.clip_norm, "update norm before clipping");
        // A site that clipped to C sends f32 weights whose rounding can put the update a hair past C (relative
        // (ulp/Δ)²/2, ~1e-4 for C = 1e-4 here): that is not an unclipped update.
        if norm > self.clip_norm * (1.0 + CLIP_SLACK) {
            self.clipped += 1;
        }
        // An update a site clipped arrives at C (within rounding): it did not fit.
        if norm < self.clip_norm * (1.0 - CLIP_SLACK) {
            self.fitted += 1;
        }
        self.mean.push(clipped, 1)
    }
    fn count(&self) -> usize {
        self.mean.count()
    }
    fn finish(&mut self) -> Result<Weights, AggregateError> {
        let (m, noise) = self.secure.take().unwrap_or((self.mean.count(), SecureNoise::ToAdd { slack: 0.0 }));
        let mut mean = self.mean.finish()?;
        let z_update = self.update_noise_multiplier();
        let (slack, skellam) = match noise {
            SecureNoise::ToAdd { slack } => (slack, None),
            SecureNoise::Added(s) => (0.0, Some(s)),
        };
        if skellam.is_some() {
            // The sites' noise covers every value, also the tensors held back from the release, which every site
            // sent unchanged: they take the global's values (post-processing).
            restore_held_back(&mut mean, self.global.as_ref().ok_or(AggregateError::NoUpdates)?)?;
        }
        let std = if skellam.is_some() { 0.0 } else { z_update * (self.clip_norm + slack) / m as f64 };
        let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
        if std > 0.0 {
            let normal = Normal::new(0.0f64, std)
                .map_err(|e| AggregateError::InvalidParameter(format!("DP noise std {std}: {e}")))?;
            for t in mean.tensors_mut().iter_mut().filter(|t| !held_back(&t.name)) {
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
        let (fitted_share, next_clip_norm) = match self.adaptive {
            None => (None, self.clip_norm),
            Some(a) => {
                let noise = Normal::new(0.0f64, a.count_stddev)
                    .map_err(|e| AggregateError::InvalidParameter(format!("count noise std: {e}")))?;
                let share = (self.fitted as f64 + noise.sample(&mut rng)) / m as f64;
                (Some(share), a.next_clip_norm(self.clip_norm, share))
            }
        };
        self.last = Some(DpRelease {
            noise_multiplier: self.noise_multiplier,
            update_noise_multiplier: z_update,
            clip_norm: self.clip_norm,
            updates: m,
            clipped: self.clipped,
            fitted_share,
            next_clip_norm,
            skellam,
        });
        self.clip_norm = next_clip_norm;
        self.global = None;
        Ok(mean)
    }
    fn released(&self) -> Option<DpRelease> {
        self.last
    }
    fn resume_clip_norm(&mut self, clip_norm: f64) {
        if self.adaptive.is_some() && clip_norm.is_finite() && clip_norm > 0.0 {
            self.clip_norm = clip_norm;
        }
    }
}

/// The [`held_back`] tensors of `weights` set to the global's (whose layout `weights` must have).
fn restore_held_back(weights: &mut Weights, global: &Weights) -> Result<(), AggregateError> {
    weights.check_same_layout(global).map_err(|e| AggregateError::Layout(e.to_string()))?;
    for (t, g) in weights.tensors_mut().iter_mut().zip(global.tensors()) {
        if held_back(&t.name) {
            t.data.copy_from_slice(&g.data);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::strategy::SkellamNoise;
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

    /// A secure round's mean is noised as the mean of the updates it averages (std z·(C + slack)/m, not z·C/1),
    /// released as m updates, and clipped to C if a site did not clip.
    #[test]
    fn a_secure_mean_is_noised_as_the_mean_of_its_updates() {
        let n = 20_000;
        let global = w(&vec![0.0; n]);
        let mut s = DpFedAvg::new(1.0, 2.0, true).unwrap();
        s.begin_round(&global);
        s.accumulate_mean(w(&vec![0.0; n]), 4, 400, SecureNoise::ToAdd { slack: 0.5 }).unwrap();
        assert!(s.accumulate(w(&vec![0.0; n]), 1).is_err(), "nothing else joins a secure mean");
        let out = s.finish().unwrap();
        let d = &out.tensors()[0].data;
        let std = (d.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / n as f64).sqrt();
        let want = 2.0 * 1.5 / 4.0;
        assert!((std / want - 1.0).abs() < 0.05, "noise std {std}, want {want}");
        let rel = s.released().unwrap();
        assert_eq!((rel.updates, rel.clipped), (4, 0));
        // A mean longer than C: some site did not clip; it is clipped to C and counted.
        let mut s = DpFedAvg::new(1.0, 0.0, true).unwrap();
        s.begin_round(&global);
        s.accumulate_mean(w(&vec![1.0; n]), 3, 300, SecureNoise::ToAdd { slack: 0.0 }).unwrap();
        let out = s.finish().unwrap();
        assert!((out.l2_distance(&global).unwrap() - 1.0).abs() < 1e-3);
        assert_eq!(s.released().unwrap().clipped, 1);
    }

    /// A mean the sites already noised (distributed DP) is released as it is — no second noise, no clipping of
    /// the noisy mean, the held-back tensors back at the global's — and the round is charged as the sites'
    /// Skellam mechanism.
    #[test]
    fn a_mean_the_sites_noised_is_released_unchanged_and_charged_as_skellam() {
        let global = Weights::new(vec![
            NamedTensor::new("generator.fc.weight", vec![4], vec![0.0; 4]).unwrap(),
            NamedTensor::new("generator.fc_bn.bn.running_var", vec![2], vec![1.0; 2]).unwrap(),
        ])
        .unwrap();
        let noisy = Weights::new(vec![
            NamedTensor::new("generator.fc.weight", vec![4], vec![3.0, -4.0, 0.5, 0.0]).unwrap(),
            NamedTensor::new("generator.fc_bn.bn.running_var", vec![2], vec![1.3, 0.6]).unwrap(),
        ])
        .unwrap();
        let mut s = DpFedAvg::new(1.0, 2.0, true).unwrap();
        s.begin_round(&global);
        let charge = SkellamNoise { l1_sensitivity: 10.0, l2_sensitivity: 5.0, variance: 80.0, contributors: 3 };
        assert!(
            s.accumulate_mean(noisy.clone(), 2, 0, SecureNoise::Added(charge)).is_err(),
            "3 sites' noise, 2 updates"
        );
        s.accumulate_mean(noisy, 3, 0, SecureNoise::Added(charge)).unwrap();
        let out = s.finish().unwrap();
        assert_eq!(out.tensors()[0].data, vec![3.0, -4.0, 0.5, 0.0], "longer than C, and kept: it is mostly noise");
        assert_eq!(out.tensors()[1].data, vec![1.0, 1.0], "held back: the global's");
        let rel = s.released().unwrap();
        assert_eq!((rel.updates, rel.clipped, rel.skellam), (3, 0, Some(charge)));
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
        let released = s.released().unwrap();
        assert_eq!((released.noise_multiplier, released.clip_norm, released.updates), (0.0, 0.5, 4));
        assert_eq!((released.clipped, released.fitted_share, released.next_clip_norm), (1, None, 0.5));
    }

    /// Power-iteration vectors do not leave a site under DP: they take the global's values, count nothing
    /// towards the norm, and get no noise.
    #[test]
    fn power_iteration_vectors_are_held_back() {
        let bundle = |u: f32, x: f32| {
            Weights::new(vec![
                NamedTensor::new("d.conv.weight_orig", vec![2], vec![x, 0.0]).unwrap(),
                NamedTensor::new("d.conv.weight_u", vec![2], vec![u, 1.0 - u]).unwrap(),
                NamedTensor::new("d.conv.weight_v", vec![1], vec![u]).unwrap(),
            ])
            .unwrap()
        };
        let global = bundle(0.0, 0.0);
        let (c, norm) = clip_update(bundle(1.0, 3.0), &global, 1.0).unwrap();
        assert!((norm - 3.0).abs() < 1e-9, "the norm counts only released tensors: {norm}");
        assert_eq!(c.get("d.conv.weight_u").unwrap().data, vec![0.0, 1.0]);
        assert_eq!(c.get("d.conv.weight_v").unwrap().data, vec![0.0]);
        assert_eq!(c.get("d.conv.weight_orig").unwrap().data, vec![1.0, 0.0]);
        let mut s = DpFedAvg::new(1.0, 5.0, false).unwrap();
        s.begin_round(&global);
        s.accumulate(bundle(0.7, 0.5), 1).unwrap();
        let out = s.finish().unwrap();
        assert_eq!(out.get("d.conv.weight_u").unwrap().data, vec![0.0, 1.0], "no noise on a held-back tensor");
        assert_ne!(out.get("d.conv.weight_orig").unwrap().data, vec![0.5, 0.0], "noise on the released ones");
        assert!(held_back("discriminator.blocks.0.conv.weight_v") && !held_back("generator.fc.weight"));
        assert!(held_back("generator.ema.blocks.0.bn1.bn.running_var") && held_back("generator.fc_bn.bn.running_mean"));
        assert!(!held_back("discriminator.blocks.1.norm.running_var"), "the discriminator's statistics see data");
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

    fn adaptive(target_quantile: f64, count_stddev: f64) -> AdaptiveClipping {
        AdaptiveClipping { target_quantile, learning_rate: 0.2, count_stddev }
    }

    /// One round of updates at L2 distances `norms` from 0 (one tensor of 2 values each).
    fn round_of(s: &mut DpFedAvg, norms: &[f64]) -> DpRelease {
        let global = w(&[0.0, 0.0]);
        s.begin_round(&global);
        for &n in norms {
            s.accumulate(w(&[n as f32, 0.0]), 1).unwrap();
        }
        s.finish().unwrap();
        s.released().unwrap()
    }

    /// Without noise, C follows the target quantile of the norms: it settles between the norms on either side of it
    /// (Andrew et al. 2019), from far above or far below, and the ledger chains each round's C to the next.
    #[test]
    fn adaptive_clipping_tracks_the_target_quantile() {
        let norms: Vec<f64> = (1..=10).map(f64::from).collect();
        for start in [0.01, 500.0] {
            let mut s = DpFedAvg::with_clipping(start, 0.0, false, Some(adaptive(0.3, 1.0))).unwrap();
            let mut c = start;
            for _ in 0..200 {
                let r = round_of(&mut s, &norms);
                assert_eq!(r.clip_norm, c, "each round uses the C the previous one chose");
                assert_eq!(r.update_noise_multiplier, 0.0);
                c = r.next_clip_norm;
            }
            // 30 % of the norms fit: C sits around the 3rd smallest norm (noise on the count: σ_b = 1 of 10).
            assert!((2.0..=5.0).contains(&c), "from {start}: C = {c}");
        }
    }

    /// The count is noised (σ_b), the updates get z_Δ > z, and the release charges z.
    #[test]
    fn adaptive_clipping_noises_the_count_and_raises_the_update_noise() {
        let mut s = DpFedAvg::with_clipping(1.0, 1.0, true, Some(adaptive(0.5, 1.0))).unwrap();
        let shares: Vec<f64> = (0..400).map(|_| round_of(&mut s, &[0.0; 4]).fitted_share.unwrap()).collect();
        let mean = shares.iter().sum::<f64>() / shares.len() as f64;
        let sd = (shares.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / shares.len() as f64).sqrt();
        // Four updates fit (norm 0): share 1 + N(0, 1)/4.
        assert!((mean - 1.0).abs() < 0.05 && (sd / 0.25 - 1.0).abs() < 0.15, "share {mean} ± {sd}");
        let r = s.released().unwrap();
        assert_eq!(r.noise_multiplier, 1.0, "the accountant charges z");
        assert!((r.update_noise_multiplier - (1.0f64 - 0.25).powf(-0.5)).abs() < 1e-12);
        // A restarted server resumes the clip norm from the ledger; fixed clipping ignores it.
        s.resume_clip_norm(7.5);
        assert_eq!(s.clip_norm(), 7.5);
        let mut fixed = DpFedAvg::new(1.0, 1.0, true).unwrap();
        fixed.resume_clip_norm(7.5);
        assert_eq!(fixed.clip_norm(), 1.0);
        assert!(DpFedAvg::with_clipping(1.0, 2.0, true, Some(adaptive(0.5, 1.0))).is_err(), "2σ_b must exceed z");
        assert!(DpFedAvg::with_clipping(1.0, 0.5, true, Some(adaptive(0.0, 1.0))).is_err());
    }

    /// Clipping at the sites: an update that arrives at C counts as not fitting (the site clipped it), and is not
    /// "clipped" by the server.
    #[test]
    fn a_site_clipped_update_counts_as_not_fitting() {
        let mut s = DpFedAvg::with_clipping(2.0, 0.0, true, Some(adaptive(0.5, 1e-9))).unwrap();
        let r = round_of(&mut s, &[2.0, 2.0, 0.5, 9.0]);
        assert_eq!(r.clipped, 1, "only the update longer than C was clipped at the server");
        assert!((r.fitted_share.unwrap() - 0.25).abs() < 1e-6, "{:?}", r.fitted_share);
        assert!(r.next_clip_norm > 2.0, "fewer fit than the target: C grows");
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
