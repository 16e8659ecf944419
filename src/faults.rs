//! Faults injected on purpose, for tests and chaos scenarios: declared in the configuration (`[[faults]]`), turned
//! into a per-site plan, and applied at the exact points where real failures happen (inside the trainer's job, or
//! to the update a site sends). Keeping them declarative and pure means a scenario file, a test and a chaos run all
//! exercise the same code paths as a real crash, NaN or out-of-memory.

use serde::{Deserialize, Serialize};

use crate::federation::weights::{NamedTensor, Weights};

/// A fault injected into a job on purpose (tests and chaos scenarios only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InjectedFault {
    #[default]
    None,
    /// Panic instead of training.
    Panic,
    /// Fail as if the losses had become NaN.
    NonFinite,
    /// Fail as if the device ran out of memory (unless the batch is already at or below `floor`).
    OutOfMemory { floor: u32 },
    /// Stall this long before training (a straggler).
    Slow { delay_ms: u64 },
}

/// A deliberately injected fault, as written in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// The site's trainer panics at the start of its job in `round`, `times` times.
    TrainerPanic { site: u32, round: u64, times: u32 },
    /// The site's job fails with non-finite losses in `round`, `times` times.
    NanLoss { site: u32, round: u64, times: u32 },
    /// The site's job runs out of memory in `round` while its batch is larger than `fits_batch`.
    TrainerOom { site: u32, round: u64, fits_batch: u32 },
    /// The site sends a corrupted update in `round`.
    BadUpdate { site: u32, round: u64, what: BadUpdate },
    /// The site's job in `round` stalls for `secs` before training (a straggler, e.g. past the round deadline).
    SlowSite { site: u32, round: u64, secs: f64 },
    /// The site's evaluator (federated evaluation) panics when it starts scoring `round`, `times` times.
    EvaluatorPanic { site: u32, round: u64, times: u32 },
    /// The site's evaluator stalls for `secs` before scoring `round` (a site that is slow to answer).
    SlowEvaluator { site: u32, round: u64, secs: f64 },
    /// From the moment `round` is announced, the site hears nothing on the control connection and says nothing
    /// there for `secs` (a control-plane partition: it trains, and the bulk plane still reaches the server).
    ControlPartition { site: u32, round: u64, secs: f64 },
    /// The site process dies (SIGKILL to itself) in `round`, at `point` of sending its update.
    SiteExit { site: u32, round: u64, point: ExitPoint },
    /// In `round`'s secure aggregation the site alters one share it reveals (once: a retry of the round is clean).
    TamperShare { site: u32, round: u64 },
}

/// Where in sending its update a site process dies ([`Fault::SiteExit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitPoint {
    /// Trained (and, in a secure round, shared its secrets), the update not sent.
    BeforeUpload,
    /// Right after the update (the masked input) reached the server.
    AfterUpload,
}

/// How a bad update is corrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadUpdate {
    /// A NaN in the first tensor.
    Nan,
    /// The first tensor loses its last value (shape changes).
    WrongShape,
    /// The update claims the previous round.
    StaleRound,
    /// Every value scaled by 1e6 (caught by `federation.max_update_norm`).
    HugeNorm,
}

impl Fault {
    /// The fault's kind as scenarios and reports name it (`bad-update:nan`, `site-exit:after-upload`).
    pub fn label(&self) -> String {
        match self {
            Fault::TrainerPanic { .. } => "trainer-panic".into(),
            Fault::NanLoss { .. } => "nan-loss".into(),
            Fault::TrainerOom { .. } => "trainer-oom".into(),
            Fault::BadUpdate { what, .. } => format!("bad-update:{}", format!("{what:?}").to_lowercase()),
            Fault::SlowSite { .. } => "slow-site".into(),
            Fault::EvaluatorPanic { .. } => "evaluator-panic".into(),
            Fault::SlowEvaluator { .. } => "slow-evaluator".into(),
            Fault::ControlPartition { .. } => "control-partition".into(),
            Fault::SiteExit { point: ExitPoint::BeforeUpload, .. } => "site-exit:before-upload".into(),
            Fault::SiteExit { point: ExitPoint::AfterUpload, .. } => "site-exit:after-upload".into(),
            Fault::TamperShare { .. } => "tamper-share".into(),
        }
    }

    /// The round the fault happens in.
    pub fn round(&self) -> u64 {
        match self {
            Fault::TrainerPanic { round, .. }
            | Fault::NanLoss { round, .. }
            | Fault::TrainerOom { round, .. }
            | Fault::BadUpdate { round, .. }
            | Fault::SlowSite { round, .. }
            | Fault::EvaluatorPanic { round, .. }
            | Fault::SlowEvaluator { round, .. }
            | Fault::ControlPartition { round, .. }
            | Fault::SiteExit { round, .. }
            | Fault::TamperShare { round, .. } => *round,
        }
    }

    /// The site the fault happens at.
    pub fn site(&self) -> u32 {
        match self {
            Fault::TrainerPanic { site, .. }
            | Fault::NanLoss { site, .. }
            | Fault::TrainerOom { site, .. }
            | Fault::BadUpdate { site, .. }
            | Fault::SlowSite { site, .. }
            | Fault::EvaluatorPanic { site, .. }
            | Fault::SlowEvaluator { site, .. }
            | Fault::ControlPartition { site, .. }
            | Fault::SiteExit { site, .. }
            | Fault::TamperShare { site, .. } => *site,
        }
    }
}

/// The faults still to happen at one site.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    pending: Vec<Fault>,
}

impl FaultPlan {
    pub fn for_site(all: &[Fault], site: u32) -> Self {
        Self { pending: all.iter().filter(|f| f.site() == site).cloned().collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The fault to inject into the next job attempt of `round` at `batch` (consuming counted faults).
    pub fn job_fault(&mut self, round: u64, batch: u32) -> InjectedFault {
        for f in self.pending.iter_mut() {
            match f {
                Fault::TrainerPanic { round: r, times, .. } if *r == round && *times > 0 => {
                    *times -= 1;
                    return InjectedFault::Panic;
                }
                Fault::NanLoss { round: r, times, .. } if *r == round && *times > 0 => {
                    *times -= 1;
                    return InjectedFault::NonFinite;
                }
                Fault::TrainerOom { round: r, fits_batch, .. } if *r == round && batch > *fits_batch => {
                    return InjectedFault::OutOfMemory { floor: *fits_batch };
                }
                Fault::SlowSite { round: r, secs, .. } if *r == round && *secs > 0.0 => {
                    let delay_ms = (*secs * 1000.0) as u64;
                    *secs = 0.0;
                    return InjectedFault::Slow { delay_ms };
                }
                _ => {}
            }
        }
        InjectedFault::None
    }

    /// The fault to inject into the next evaluation attempt of `round` (consuming it): `Panic`, `Slow` or `None`.
    pub fn eval_fault(&mut self, round: u64) -> InjectedFault {
        for f in self.pending.iter_mut() {
            match f {
                Fault::EvaluatorPanic { round: r, times, .. } if *r == round && *times > 0 => {
                    *times -= 1;
                    return InjectedFault::Panic;
                }
                Fault::SlowEvaluator { round: r, secs, .. } if *r == round && *secs > 0.0 => {
                    let delay_ms = (*secs * 1000.0) as u64;
                    *secs = 0.0;
                    return InjectedFault::Slow { delay_ms };
                }
                _ => {}
            }
        }
        InjectedFault::None
    }

    /// How long the site's control connection is cut once `round` is announced, if at all (it happens once).
    pub fn control_partition(&mut self, round: u64) -> Option<std::time::Duration> {
        let i =
            self.pending.iter().position(|f| matches!(f, Fault::ControlPartition { round: r, .. } if *r == round))?;
        match self.pending.remove(i) {
            Fault::ControlPartition { secs, .. } => std::time::Duration::try_from_secs_f64(secs.max(0.0)).ok(),
            _ => None,
        }
    }

    /// Dies here if the plan says this process dies in `round` at `point` (SIGKILL to itself: no destructor, no
    /// goodbye on any connection, exactly like a killed pod).
    pub fn exit_at(&self, round: u64, point: ExitPoint) {
        if self
            .pending
            .iter()
            .any(|f| matches!(f, Fault::SiteExit { round: r, point: p, .. } if *r == round && *p == point))
        {
            tracing::warn!(round, ?point, "injected fault: this site process dies now");
            // SAFETY: raise() with a valid signal number has no memory-safety preconditions.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
    }

    /// Whether to alter a share revealed in `round` (happens once).
    pub fn tamper_share(&mut self, round: u64) -> bool {
        let i = self.pending.iter().position(|f| matches!(f, Fault::TamperShare { round: r, .. } if *r == round));
        i.map(|i| self.pending.remove(i)).is_some()
    }

    /// The corruption to apply to the update of `round`, if any (each happens once).
    pub fn bad_update(&mut self, round: u64) -> Option<BadUpdate> {
        let i = self.pending.iter().position(|f| matches!(f, Fault::BadUpdate { round: r, .. } if *r == round))?;
        match self.pending.remove(i) {
            Fault::BadUpdate { what, .. } => Some(what),
            _ => None,
        }
    }
}

/// Applies `what` to an update; returns the round the update should claim.
pub fn corrupt(weights: &mut Weights, round: u64, what: BadUpdate) -> u64 {
    match what {
        BadUpdate::Nan => {
            if let Some(v) = weights.tensors_mut().first_mut().and_then(|t| t.data.first_mut()) {
                *v = f32::NAN;
            }
            round
        }
        BadUpdate::WrongShape => {
            let mut tensors = std::mem::take(weights).into_tensors();
            if let Some(t) = tensors.first_mut() {
                t.data.pop();
                let n = t.data.len();
                *t = NamedTensor { name: t.name.clone(), shape: vec![n], data: std::mem::take(&mut t.data) };
            }
            *weights = Weights::new(tensors).unwrap_or_default();
            round
        }
        BadUpdate::StaleRound => round.saturating_sub(1),
        BadUpdate::HugeNorm => {
            for t in weights.tensors_mut() {
                for v in &mut t.data {
                    *v *= 1e6;
                }
            }
            round
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_consume_counted_faults_per_site_and_round() {
        let all = vec![
            Fault::TrainerPanic { site: 1, round: 2, times: 2 },
            Fault::NanLoss { site: 0, round: 1, times: 1 },
            Fault::TrainerOom { site: 1, round: 3, fits_batch: 8 },
            Fault::BadUpdate { site: 1, round: 4, what: BadUpdate::StaleRound },
        ];
        let mut p = FaultPlan::for_site(&all, 1);
        assert_eq!(p.job_fault(1, 32), InjectedFault::None);
        assert_eq!(p.job_fault(2, 32), InjectedFault::Panic);
        assert_eq!(p.job_fault(2, 32), InjectedFault::Panic);
        assert_eq!(p.job_fault(2, 32), InjectedFault::None);
        assert_eq!(p.job_fault(3, 32), InjectedFault::OutOfMemory { floor: 8 });
        assert_eq!(p.job_fault(3, 8), InjectedFault::None, "fits once the batch is small enough");
        assert_eq!(p.bad_update(3), None);
        assert_eq!(p.bad_update(4), Some(BadUpdate::StaleRound));
        assert_eq!(p.bad_update(4), None, "once");
        let mut p0 = FaultPlan::for_site(&all, 0);
        assert_eq!(p0.job_fault(1, 32), InjectedFault::NonFinite);
        let evaluator_faults = [
            Fault::EvaluatorPanic { site: 2, round: 3, times: 1 },
            Fault::SlowEvaluator { site: 2, round: 4, secs: 1.5 },
        ];
        let mut e = FaultPlan::for_site(&evaluator_faults, 2);
        assert_eq!(e.eval_fault(2), InjectedFault::None);
        assert_eq!(e.eval_fault(3), InjectedFault::Panic);
        assert_eq!(e.eval_fault(3), InjectedFault::None, "once");
        assert_eq!(e.eval_fault(4), InjectedFault::Slow { delay_ms: 1500 });
        assert_eq!(e.eval_fault(4), InjectedFault::None, "once");
        assert_eq!(e.job_fault(3, 32), InjectedFault::None, "training is not affected");
    }

    #[test]
    fn corruptions_do_what_they_say() {
        let w = Weights::new(vec![NamedTensor::new("a", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap()]).unwrap();
        let mut nan = w.clone();
        assert_eq!(corrupt(&mut nan, 5, BadUpdate::Nan), 5);
        assert_eq!(nan.first_non_finite(), Some("a"));
        let mut shape = w.clone();
        corrupt(&mut shape, 5, BadUpdate::WrongShape);
        assert!(w.check_same_layout(&shape).is_err());
        let mut stale = w.clone();
        assert_eq!(corrupt(&mut stale, 5, BadUpdate::StaleRound), 4);
        let mut huge = w.clone();
        corrupt(&mut huge, 5, BadUpdate::HugeNorm);
        assert!(huge.l2_norm() > 1e6);
    }

    #[test]
    fn faults_parse_from_toml() {
        #[derive(Deserialize)]
        struct F {
            faults: Vec<Fault>,
        }
        let f: F = toml::from_str(
            "[[faults]]\nkind = \"bad-update\"\nsite = 2\nround = 1\nwhat = \"wrong-shape\"\n\n[[faults]]\nkind = \"trainer-oom\"\nsite = 0\nround = 2\nfits_batch = 4\n",
        )
        .unwrap();
        assert_eq!(f.faults[0], Fault::BadUpdate { site: 2, round: 1, what: BadUpdate::WrongShape });
        assert!(toml::from_str::<F>("[[faults]]\nkind = \"explode\"\nsite = 1\n").is_err());
    }
}
