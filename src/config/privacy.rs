//! The `[privacy]` section: client-level differential privacy, resolved into the [`DpSettings`] the server applies
//! and the strategy it runs (`federation::strategy::DpFedAvg`).

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};
use crate::federation::strategy::{AdaptiveClipping, StrategyConfig};

/// Client-level differential privacy (DP-FedAvg, `federation::privacy`): off unless `noise_multiplier` or
/// `epsilon` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// L2 norm C every site's update is clipped to, around the round's global weights (all tensors together).
    pub clip_norm: Option<f64>,
    /// Noise multiplier z: Gaussian noise of std z·C/m on the mean of m updates. Set this or `epsilon`.
    pub noise_multiplier: Option<f64>,
    /// Target ε over `federation.rounds`: the smallest z that meets it at `delta` is used. Set this or
    /// `noise_multiplier`.
    pub epsilon: Option<f64>,
    /// δ of the (ε, δ) guarantee.
    pub delta: f64,
    /// The run stops cleanly before a round that would take ε past this (default: `epsilon`; none without it).
    pub max_epsilon: Option<f64>,
    /// Where updates are clipped: `site` (before they leave; the server never sees a raw update) or `server`.
    /// The server clips in both modes (a site that did not is still bounded).
    pub clipping: String,
    /// Adaptive clipping (Andrew et al. 2019): the share of updates that should fit in C; `clip_norm` is then the
    /// first round's C, and C follows this quantile of the update norms. Unset: C stays fixed.
    pub target_quantile: Option<f64>,
    /// Adaptive clipping: the geometric step of C per round, η in C ← C·exp(−η(b̃ − γ)) (default 0.2).
    pub clip_lr: Option<f64>,
    /// Adaptive clipping: the std of the noise on the count of updates that fitted (default: federation.sites/20
    /// as published, raised to the noise multiplier when that is smaller, which costs the updates 15 % more noise).
    pub clipped_count_stddev: Option<f64>,
    /// Who adds the noise: `server` (Gaussian on the mean; with secure aggregation the server sees the noise-free
    /// sum) or `sites` (distributed DP: each site adds integer Skellam noise before masking, so no party ever holds
    /// a noise-free aggregate; needs `[secagg]`).
    pub noise: String,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            clip_norm: None,
            noise_multiplier: None,
            epsilon: None,
            delta: 1e-5,
            max_epsilon: None,
            clipping: "site".into(),
            target_quantile: None,
            clip_lr: None,
            clipped_count_stddev: None,
            noise: "server".into(),
        }
    }
}

/// Differential privacy as the server applies it, resolved from [`PrivacyConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSettings {
    pub clip_norm: f64,
    pub noise_multiplier: f64,
    pub delta: f64,
    pub max_epsilon: Option<f64>,
    /// Clipping at the sites (else at the server only).
    pub at_sites: bool,
    /// Adaptive clipping (`clip_norm` is then the first round's).
    pub adaptive: Option<AdaptiveClipping>,
    /// The sites add the noise under secure aggregation (distributed DP), not the server.
    pub noise_at_sites: bool,
}

impl Config {
    /// The differential-privacy settings, `None` when DP is off. Checks that the keys fit together and with the
    /// strategy (DP-FedAvg needs a mean: robust rules and FedProx are refused by name; FedAvgM and FedAdam step from
    /// the noisy mean).
    pub fn privacy(&self) -> Result<Option<DpSettings>, ConfigError> {
        let p = &self.privacy;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let z = match (p.noise_multiplier, p.epsilon) {
            (None, None) => {
                if p.clip_norm.is_some() || p.max_epsilon.is_some() || p.target_quantile.is_some() {
                    return bad("privacy.clip_norm / max_epsilon / target_quantile are set but DP is off: set \
                                privacy.noise_multiplier or privacy.epsilon too"
                        .into());
                }
                return Ok(None);
            }
            (Some(_), Some(_)) => {
                return bad("privacy.noise_multiplier and privacy.epsilon are both set: choose one".into());
            }
            (Some(z), None) if !(z.is_finite() && z > 0.0) => {
                return bad(format!("privacy.noise_multiplier = {z} must be a positive number"));
            }
            (Some(z), None) => z,
            (None, Some(e)) if !(e.is_finite() && e > 0.0) => {
                return bad(format!("privacy.epsilon = {e} must be a positive number"));
            }
            (None, Some(e)) => {
                if !(p.delta > 0.0 && p.delta < 1.0) {
                    return bad(format!("privacy.delta = {} must be in (0, 1)", p.delta));
                }
                let rounds = self.federation.rounds;
                crate::federation::privacy::noise_for_epsilon(e, p.delta, 1.0, rounds).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "privacy.epsilon = {e} is out of reach for {rounds} rounds at delta {} (a noise multiplier \
                         above 1000 would be needed): raise it or run fewer rounds",
                        p.delta
                    ))
                })?
            }
        };
        if !(p.delta > 0.0 && p.delta < 1.0) {
            return bad(format!("privacy.delta = {} must be in (0, 1)", p.delta));
        }
        let Some(clip_norm) = p.clip_norm.filter(|c| c.is_finite() && *c > 0.0) else {
            return bad(format!("privacy needs privacy.clip_norm, a positive L2 norm (got {:?})", p.clip_norm));
        };
        if let Some(m) = p.max_epsilon.filter(|m| !(m.is_finite() && *m > 0.0)) {
            return bad(format!("privacy.max_epsilon = {m} must be a positive number"));
        }
        match self.strategy()? {
            // Server optimisers step from DP-FedAvg's noisy mean: post-processing, the same guarantee.
            StrategyConfig::FedAvg | StrategyConfig::FedAvgM { .. } | StrategyConfig::FedAdam { .. } => {}
            StrategyConfig::FedMedian | StrategyConfig::TrimmedMean { .. } | StrategyConfig::Krum { .. } => {
                return bad(format!(
                    "privacy (DP-FedAvg) cannot be combined with federation.strategy = {:?}: a robust rule's output \
                     is not a mean, so clipping does not bound one site's influence by C/m as the noise assumes; \
                     use strategy fedavg (clipping is the robustness)",
                    self.federation.strategy
                ));
            }
            _ => {
                return bad(format!(
                    "privacy (DP-FedAvg) is implemented over fedavg, fedavgm and fedadam, not federation.strategy = \
                     {:?} (FedProx's proximal term is not accounted for)",
                    self.federation.strategy
                ));
            }
        }
        let at_sites = match p.clipping.as_str() {
            "site" => true,
            "server" => false,
            other => return bad(format!("privacy.clipping = {other:?}: expected \"site\" or \"server\"")),
        };
        let noise_at_sites = match p.noise.as_str() {
            "server" => false,
            "sites" => {
                if !self.secagg.enabled {
                    return bad("privacy.noise = \"sites\" needs secure aggregation (secagg.enabled = true): without \
                                it the server would see every site's update with only that site's share of the noise"
                        .into());
                }
                if let Some(n) = self.federation.max_update_norm {
                    return bad(format!(
                        "privacy.noise = \"sites\" with federation.max_update_norm = {n}: the unmasked mean carries the \
                         sites' noise, so a bound on its length cannot tell a bad update from the noise; remove it \
                         (clipping at the sites bounds each update)"
                    ));
                }
                true
            }
            other => return bad(format!("privacy.noise = {other:?}: expected \"server\" or \"sites\"")),
        };
        let adaptive = match p.target_quantile {
            None => {
                if p.clip_lr.is_some() || p.clipped_count_stddev.is_some() {
                    return bad("privacy.clip_lr / clipped_count_stddev are for adaptive clipping: set \
                                privacy.target_quantile too (or remove them)"
                        .into());
                }
                None
            }
            Some(target_quantile) => {
                let a = AdaptiveClipping {
                    target_quantile,
                    learning_rate: p.clip_lr.unwrap_or(0.2),
                    count_stddev: p.clipped_count_stddev.unwrap_or((self.federation.sites as f64 / 20.0).max(z)),
                };
                a.validate(z).map_err(|e| ConfigError::Invalid(format!("privacy: {e}")))?;
                Some(a)
            }
        };
        Ok(Some(DpSettings {
            clip_norm,
            noise_multiplier: z,
            delta: p.delta,
            max_epsilon: p.max_epsilon.or(p.epsilon),
            at_sites,
            adaptive,
            noise_at_sites,
        }))
    }

    /// The server's strategy: `federation.strategy`, wrapped by DP-FedAvg when privacy is on.
    pub fn build_strategy(&self) -> Result<Box<dyn crate::federation::strategy::Strategy>, ConfigError> {
        if let Some(dp) = self.privacy()? {
            let s = crate::federation::strategy::DpFedAvg::with_clipping(
                dp.clip_norm,
                dp.noise_multiplier,
                dp.at_sites,
                dp.adaptive,
            )
            .map_err(|e| ConfigError::Invalid(format!("privacy: {e}")))?;
            return match self.strategy()?.server_opt_kind() {
                None => Ok(Box::new(s)),
                Some(kind) => crate::federation::strategy::ServerOpt::over(kind, Box::new(s))
                    .map(|o| Box::new(o) as Box<dyn crate::federation::strategy::Strategy>)
                    .map_err(|e| ConfigError::Invalid(format!("federation.strategy: {e}"))),
            };
        }
        self.strategy()?
            .build_with(self.federation.summation)
            .map_err(|e| ConfigError::Invalid(format!("federation.strategy: {e}")))
    }
}
