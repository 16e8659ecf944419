//! [`StrategyConfig`]: a strategy as the configuration file and the command line name it, validated, and built.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::aggregate::Collecting;
use super::api::{AggregateError, Strategy, Summation};
use super::coordinate::{FedMedian, TrimmedMean};
use super::fedavg::FedAvg;
use super::krum::Krum;
use super::server_opt::{ServerOpt, ServerOptKind};

/// Strategy selection as it appears in config files (`{"name": "trimmed-mean", "beta": 0.1}`) and on the command line
/// (`trimmed-mean:0.1`, see [`FromStr`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum StrategyConfig {
    FedAvg,
    FedProx {
        mu: f64,
    },
    FedMedian,
    TrimmedMean {
        /// Fraction trimmed on each side, in [0, 0.5).
        beta: f64,
    },
    Krum {
        /// Number of Byzantine updates tolerated (f).
        byzantine: usize,
        /// Number of best-scored updates averaged; 1 = Krum, more = Multi-Krum.
        multi: usize,
    },
    /// FedAvg's mean, then server momentum (Hsu et al. 2019).
    FedAvgM {
        /// Server learning rate η.
        lr: f64,
        /// Momentum β.
        momentum: f64,
    },
    /// FedAvg's mean, then server Adam (Reddi et al. 2021), β₁ = 0.9, β₂ = 0.99.
    FedAdam {
        /// Server learning rate η.
        lr: f64,
        /// Adaptivity τ.
        tau: f64,
    },
}

impl StrategyConfig {
    /// Checks the parameters without building anything.
    pub fn validate(&self) -> Result<(), AggregateError> {
        match *self {
            StrategyConfig::FedAvg | StrategyConfig::FedMedian => Ok(()),
            StrategyConfig::FedProx { mu } => {
                if mu.is_finite() && mu >= 0.0 {
                    Ok(())
                } else {
                    Err(AggregateError::InvalidParameter(format!("FedProx mu must be finite and >= 0, got {mu}")))
                }
            }
            StrategyConfig::TrimmedMean { beta } => {
                if beta.is_finite() && (0.0..0.5).contains(&beta) {
                    Ok(())
                } else {
                    Err(AggregateError::InvalidParameter(format!("trimmed-mean beta must be in [0, 0.5), got {beta}")))
                }
            }
            StrategyConfig::Krum { multi, .. } => {
                if multi >= 1 {
                    Ok(())
                } else {
                    Err(AggregateError::InvalidParameter("multi-krum must average at least 1 update".into()))
                }
            }
            StrategyConfig::FedAvgM { .. } | StrategyConfig::FedAdam { .. } => {
                self.server_opt(Summation::Fast).map(|_| ())
            }
        }
    }

    /// The server optimiser of FedAvgM / FedAdam (None for the other strategies).
    fn server_opt(&self, summation: Summation) -> Result<Option<ServerOpt>, AggregateError> {
        match self.server_opt_kind() {
            Some(kind) => ServerOpt::new(kind, summation).map(Some),
            None => Ok(None),
        }
    }

    /// The server optimiser this strategy names (FedAvgM, FedAdam), if any.
    pub fn server_opt_kind(&self) -> Option<ServerOptKind> {
        match *self {
            StrategyConfig::FedAvgM { lr, momentum } => Some(ServerOptKind::Momentum { lr, beta: momentum }),
            StrategyConfig::FedAdam { lr, tau } => Some(ServerOptKind::Adam { lr, beta1: 0.9, beta2: 0.99, tau }),
            _ => None,
        }
    }

    /// Validates the parameters and builds the strategy, with the fast f32 mean where it has one.
    pub fn build(&self) -> Result<Box<dyn Strategy>, AggregateError> {
        self.build_with(Summation::Fast)
    }

    /// Validates the parameters and builds the strategy; FedAvg, FedProx, FedAvgM and FedAdam take their mean in
    /// `summation` (the order-statistics rules have no running sum, and ignore it).
    pub fn build_with(&self, summation: Summation) -> Result<Box<dyn Strategy>, AggregateError> {
        self.validate()?;
        Ok(match *self {
            StrategyConfig::FedAvg => Box::new(FedAvg::with(summation, None)),
            StrategyConfig::FedProx { mu } => Box::new(FedAvg::with(summation, Some(mu))),
            StrategyConfig::FedMedian => Box::new(Collecting::new(FedMedian)),
            StrategyConfig::TrimmedMean { beta } => Box::new(Collecting::new(TrimmedMean { beta })),
            StrategyConfig::Krum { byzantine, multi } => Box::new(Collecting::new(Krum { byzantine, multi })),
            StrategyConfig::FedAvgM { .. } | StrategyConfig::FedAdam { .. } => match self.server_opt(summation)? {
                Some(s) => Box::new(s),
                None => return Err(AggregateError::InvalidParameter("not a server optimiser".into())),
            },
        })
    }
}

impl fmt::Display for StrategyConfig {
    /// The command-line form accepted by [`FromStr`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StrategyConfig::FedAvg => write!(f, "fedavg"),
            StrategyConfig::FedProx { mu } => write!(f, "fedprox:{mu}"),
            StrategyConfig::FedMedian => write!(f, "fedmedian"),
            StrategyConfig::TrimmedMean { beta } => write!(f, "trimmed-mean:{beta}"),
            StrategyConfig::Krum { byzantine, multi: 1 } => write!(f, "krum:{byzantine}"),
            StrategyConfig::Krum { byzantine, multi } => write!(f, "multi-krum:{byzantine}:{multi}"),
            StrategyConfig::FedAvgM { lr, momentum } => write!(f, "fedavgm:{lr}:{momentum}"),
            StrategyConfig::FedAdam { lr, tau } => write!(f, "fedadam:{lr}:{tau}"),
        }
    }
}

impl FromStr for StrategyConfig {
    type Err = AggregateError;

    /// Parses `fedavg`, `fedprox:MU`, `fedmedian`, `trimmed-mean:BETA`, `krum:F`, `multi-krum:F:M`, `fedavgm:LR:M`,
    /// `fedadam:LR:TAU` (case-insensitive;
    /// the serde names `fed-avg`, `fed-prox`, `fed-median` are accepted too) and validates the parameters.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let mut parts = lower.split(':');
        let head = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        let bad = |what: &str| AggregateError::InvalidParameter(format!("strategy `{s}`: {what}"));
        let float = |a: &str| a.trim().parse::<f64>().map_err(|_| bad(&format!("`{a}` is not a number")));
        let count = |a: &str| a.trim().parse::<usize>().map_err(|_| bad(&format!("`{a}` is not a count")));
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(bad(&format!("expected {n} parameter(s), got {}", args.len())))
            }
        };
        let config = match head {
            "fedavg" | "fed-avg" => {
                arity(0)?;
                StrategyConfig::FedAvg
            }
            "fedprox" | "fed-prox" => {
                arity(1)?;
                StrategyConfig::FedProx { mu: float(args[0])? }
            }
            "fedmedian" | "fed-median" | "median" => {
                arity(0)?;
                StrategyConfig::FedMedian
            }
            "trimmed-mean" | "trimmedmean" => {
                arity(1)?;
                StrategyConfig::TrimmedMean { beta: float(args[0])? }
            }
            "krum" => {
                arity(1)?;
                StrategyConfig::Krum { byzantine: count(args[0])?, multi: 1 }
            }
            "multi-krum" | "multikrum" => {
                arity(2)?;
                StrategyConfig::Krum { byzantine: count(args[0])?, multi: count(args[1])? }
            }
            "fedavgm" => {
                arity(2)?;
                StrategyConfig::FedAvgM { lr: float(args[0])?, momentum: float(args[1])? }
            }
            "fedadam" => {
                arity(2)?;
                StrategyConfig::FedAdam { lr: float(args[0])?, tau: float(args[1])? }
            }
            _ => {
                return Err(bad(
                    "unknown strategy (fedavg, fedprox:MU, fedmedian, trimmed-mean:BETA, krum:F, multi-krum:F:M, \
                     fedavgm:LR:MOMENTUM, fedadam:LR:TAU)",
                ))
            }
        };
        config.validate()?;
        Ok(config)
    }
}
