//! The `[secagg]` section: secure aggregation (`federation::secagg`), resolved into the [`SecAggSettings`] a run
//! uses and checked against the rest of the run before anything starts.
//!
//! Why check here, not when a round begins: a neighbour count, threshold or quantization that cannot work for the
//! run's sites (an odd ring degree, a threshold above the holders, sums that could overflow 32 bits) would otherwise
//! fail a round an hour into a run; and secure aggregation hides single updates from the server, which rules out
//! what needs to see them (robust rules, clipping at the server, adaptive clipping's count).

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};
use crate::federation::secagg::{NoiseOptions, SecAggOptions};
use crate::federation::strategy::StrategyConfig;

/// Secure aggregation: off unless `enabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecAggConfig {
    pub enabled: bool,
    /// Each value of a site's weighted update (Δ · n_i/N) is clipped to [−clip_range, clip_range] before it is
    /// quantized. Required when enabled.
    pub clip_range: Option<f64>,
    /// k: neighbours each site masks with (default: every other site up to 10 sites, else 2·⌈log₂ n⌉).
    pub neighbours: Option<usize>,
    /// t: shares needed to rebuild a secret (default: a strict majority of its k + 1 holders).
    pub threshold: Option<usize>,
    /// Quantization bits per value (default: the most that cannot overflow, at most 24).
    pub quant_bits: Option<u32>,
    /// How long the server waits for the key, share and unmasking stages (the masked inputs arrive within the
    /// round's deadline, since they follow training).
    pub stage_deadline_secs: f64,
}

impl Default for SecAggConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            clip_range: None,
            neighbours: None,
            threshold: None,
            quant_bits: None,
            stage_deadline_secs: 30.0,
        }
    }
}

/// Secure aggregation as a run applies it, resolved from [`SecAggConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecAggSettings {
    pub options: SecAggOptions,
    pub stage_deadline_secs: f64,
}

impl Config {
    /// The secure-aggregation settings, `None` when it is off. Checks the keys, that every round size the run can
    /// have (federation.min_sites ..= federation.sites) gets working parameters, and that nothing else in the run
    /// needs to see single updates.
    pub fn secagg(&self) -> Result<Option<SecAggSettings>, ConfigError> {
        let s = &self.secagg;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !s.enabled {
            if s.clip_range.is_some() || s.neighbours.is_some() || s.threshold.is_some() || s.quant_bits.is_some() {
                return bad("secagg.clip_range / neighbours / threshold / quant_bits are set but secure aggregation \
                            is off: set secagg.enabled = true too (or remove them)"
                    .into());
            }
            return Ok(None);
        }
        let Some(clip_range) = s.clip_range.filter(|c| c.is_finite() && *c > 0.0 && *c <= f64::from(f32::MAX)) else {
            return bad(format!(
                "secure aggregation needs secagg.clip_range, a positive bound on each value of a weighted update \
                 (got {:?})",
                s.clip_range
            ));
        };
        if !(s.stage_deadline_secs.is_finite() && s.stage_deadline_secs > 0.0) {
            return bad(format!("secagg.stage_deadline_secs = {} must be a positive number", s.stage_deadline_secs));
        }
        let f = &self.federation;
        let dp = self.privacy()?;
        let noise = dp.filter(|d| d.noise_at_sites).map(|d| NoiseOptions {
            clip_norm: d.clip_norm,
            noise_multiplier: d.noise_multiplier,
            min_contributors: f.min_sites.max(1) as usize,
        });
        let options = SecAggOptions {
            clip_range: clip_range as f32,
            neighbours: s.neighbours,
            threshold: s.threshold,
            quant_bits: s.quant_bits,
            noise,
        };
        if f.sites < 2 {
            return bad(format!("secure aggregation needs at least 2 sites (federation.sites = {})", f.sites));
        }
        for n in f.min_sites.max(2)..=f.sites {
            let ids: Vec<u32> = (0..n).collect();
            // The model's size is not known here; the noise's headroom is checked for a billion values (fewer
            // need less noise, so a round of the real model fits when this does).
            if let Err(e) = options.params(1, &ids, 1 << 30) {
                return bad(format!("secagg: with {n} site(s) in a round: {e}"));
            }
        }
        match self.strategy()? {
            StrategyConfig::FedMedian | StrategyConfig::TrimmedMean { .. } | StrategyConfig::Krum { .. } => {
                return bad(format!(
                    "secagg cannot be combined with federation.strategy = {:?}: a robust rule needs every update on its \
                     own, and secure aggregation shows the server only their sum; use fedavg, fedprox, fedavgm or \
                     fedadam",
                    self.federation.strategy
                ));
            }
            _ => {}
        }
        if let Some(dp) = dp {
            if !dp.at_sites {
                return bad(
                    "secagg with privacy.clipping = \"server\": the server cannot clip updates it cannot see; \
                            use privacy.clipping = \"site\""
                        .into(),
                );
            }
            if dp.adaptive.is_some() {
                return bad("secagg with adaptive clipping (privacy.target_quantile): the server cannot count the \
                            updates that fitted in C without seeing them; use a fixed privacy.clip_norm"
                    .into());
            }
        }
        Ok(Some(SecAggSettings { options, stage_deadline_secs: s.stage_deadline_secs }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn with(sets: &[&str]) -> Result<Config, String> {
        let mut cfg = Config::default();
        cfg.apply_overrides(&sets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    fn err(sets: &[&str]) -> String {
        with(sets).expect_err("should be refused")
    }

    #[test]
    fn secure_aggregation_settings_resolve_or_name_the_conflict() {
        assert_eq!(Config::default().secagg().unwrap(), None, "off by default");
        let on =
            with(&["secagg.enabled=true", "secagg.clip_range=0.5", "federation.sites=5", "federation.min_sites=3"])
                .unwrap()
                .secagg()
                .unwrap()
                .expect("on");
        assert_eq!((on.options.clip_range, on.options.neighbours, on.stage_deadline_secs), (0.5, None, 30.0));
        assert!(err(&["secagg.enabled=true"]).contains("secagg.clip_range"));
        assert!(err(&["secagg.clip_range=0.5"]).contains("secagg.enabled"));
        assert!(err(&["secagg.enabled=true", "secagg.clip_range=-1.0"]).contains("secagg.clip_range"));
        assert!(err(&["secagg.enabled=true", "secagg.clip_range=1.0", "secagg.stage_deadline_secs=0.0"])
            .contains("stage_deadline_secs"));
        // Parameters that cannot work for some round size the run can have.
        let odd = ["secagg.enabled=true", "secagg.clip_range=1.0", "federation.sites=20", "secagg.neighbours=5"];
        assert!(err(&odd).contains("must be even"), "{}", err(&odd));
        let overflow = ["secagg.enabled=true", "secagg.clip_range=1.0", "federation.sites=300", "secagg.quant_bits=24"];
        assert!(err(&overflow).contains("overflow"), "{}", err(&overflow));
        let t = ["secagg.enabled=true", "secagg.clip_range=1.0", "federation.sites=4", "secagg.threshold=5"];
        assert!(err(&t).contains("threshold"), "{}", err(&t));
        // What needs to see single updates.
        let base = ["secagg.enabled=true", "secagg.clip_range=1.0"];
        let krum = err(&[&base[..], &["federation.strategy=\"krum:1\""]].concat());
        assert!(krum.contains("secagg") && krum.contains("robust"), "{krum}");
        let dp = ["privacy.noise_multiplier=1.0", "privacy.clip_norm=1.0"];
        assert!(with(&[&base[..], &dp[..]].concat()).unwrap().secagg().unwrap().is_some(), "DP clipping at the sites");
        let server = err(&[&base[..], &dp[..], &["privacy.clipping=\"server\""]].concat());
        assert!(server.contains("privacy.clipping"), "{server}");
        let adaptive = err(&[&base[..], &dp[..], &["privacy.target_quantile=0.5"]].concat());
        assert!(adaptive.contains("target_quantile"), "{adaptive}");
        // Noise at the sites: only under secure aggregation, without a norm bound the noise would trip, named.
        let sites = ["privacy.noise=\"sites\""];
        let on = with(&[&base[..], &dp[..], &sites[..]].concat()).unwrap().secagg().unwrap().expect("on");
        let noise = on.options.noise.expect("the sites add the noise");
        assert_eq!((noise.clip_norm, noise.noise_multiplier, noise.min_contributors), (1.0, 1.0, 2));
        assert_eq!(with(&[&base[..], &dp[..]].concat()).unwrap().secagg().unwrap().unwrap().options.noise, None);
        let clear = err(&[&dp[..], &sites[..]].concat());
        assert!(clear.contains("secagg.enabled"), "{clear}");
        let bound = err(&[&base[..], &dp[..], &sites[..], &["federation.max_update_norm=10.0"]].concat());
        assert!(bound.contains("max_update_norm"), "{bound}");
        let typo = err(&[&base[..], &dp[..], &["privacy.noise=\"clients\""]].concat());
        assert!(typo.contains("privacy.noise"), "{typo}");
    }
}
