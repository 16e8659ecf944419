//! The evaluator role: scores the global generator after each round (sample grid + Fréchet distance) on a
//! dedicated tch thread. It runs where the held-out data is — here, beside the server — and is supervised by it
//! under the restart policy. Its answer is a message back to the server, so the server keeps answering heartbeats
//! and taking uploads while an evaluation runs.

use std::path::PathBuf;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tch::Device;

use crate::actors::messages::{EvalReport, EvaluatorMsg, InjectedFault, ServerMsg, SiteEvaluatorMsg, SiteMsg};
use crate::actors::worker::Worker;
use crate::data::Dataset;
use crate::eval::gan_evaluator::{GanEvaluator, QualitySetup};
use crate::eval::site_eval::LocalEvaluator;
use crate::federation::evaluation::SiteEval;
use crate::federation::weights::Weights;
use crate::models::ModelConfig;

pub struct EvaluatorActor;

#[derive(Clone)]
pub struct EvaluatorArgs {
    pub model: ModelConfig,
    pub device: Device,
    pub real: Arc<Dataset>,
    pub per_class: usize,
    pub out_dir: PathBuf,
    pub seed: u64,
    pub threads: i32,
    /// The full quality suite (every `evaluation.eval_every` rounds); `None` = grid and fixed-feature FD only.
    pub quality: Option<QualitySetup>,
}

type Job = (u64, Arc<Weights>);

pub struct EvaluatorState {
    worker: Worker<Job, Result<EvalReport, String>>,
}

impl Actor for EvaluatorActor {
    type Msg = EvaluatorMsg;
    type State = EvaluatorState;
    type Arguments = EvaluatorArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<EvaluatorMsg>,
        a: EvaluatorArgs,
    ) -> Result<EvaluatorState, ActorProcessingErr> {
        let worker = Worker::spawn(
            "evaluator",
            a.threads,
            move || {
                let mut ev = GanEvaluator::new(&a.model, a.device, &a.real, a.per_class, a.out_dir, a.seed)
                    .map_err(|e| format!("cannot build the evaluator: {e}"))?;
                if let Some(q) = a.quality {
                    // Without the reference classifier the run still gets its grids and fixed-feature FD.
                    if let Err(e) = ev.enable_quality(q, &a.real) {
                        tracing::error!(error = %e, "the quality suite is off: cannot prepare the reference classifier");
                    }
                }
                Ok(ev)
            },
            |ev: &mut Result<GanEvaluator, String>, (round, weights): Job| match ev {
                Ok(ev) => ev.evaluate(round, &weights).map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            },
        )?;
        Ok(EvaluatorState { worker })
    }

    async fn handle(
        &self,
        _me: ActorRef<EvaluatorMsg>,
        msg: EvaluatorMsg,
        state: &mut EvaluatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EvaluatorMsg::Evaluate { round, weights, reply_to } => match state.worker.run((round, weights)).await {
                Ok(result) => reply_to.cast(ServerMsg::Evaluated { round, result: Box::new(result) })?,
                // The thread died: fail, so the server restarts this evaluator under its policy.
                Err(reason) => return Err(format!("evaluator thread died: {reason}").into()),
            },
        }
        Ok(())
    }
}

/// The evaluator at a site (federated evaluation): a child of the site (`spawn_linked`) that scores the global
/// generator of a round on the site's own validation split, on a dedicated tch thread, and answers the site with
/// `SiteMsg::LocalEvaluated`. Like the trainer it holds no policy: a dead thread fails the actor and the site
/// restarts it under its restart policy. Only numbers leave the site (`federated_eval`).
pub struct SiteEvaluatorActor;

#[derive(Clone)]
pub struct SiteEvaluatorArgs {
    pub site_id: u32,
    pub model: ModelConfig,
    pub device: Device,
    /// The site's validation split.
    pub val: Arc<Dataset>,
    pub seed: u64,
    /// The process's torch thread budget (`runtime.threads`), the trainer's too: libtorch's setting is not per
    /// thread, so the evaluator must not set a different one.
    pub threads: i32,
}

pub struct SiteEvaluatorState {
    worker: Worker<(u64, Weights, InjectedFault), Result<SiteEval, String>>,
}

impl Actor for SiteEvaluatorActor {
    type Msg = SiteEvaluatorMsg;
    type State = SiteEvaluatorState;
    type Arguments = SiteEvaluatorArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<SiteEvaluatorMsg>,
        a: SiteEvaluatorArgs,
    ) -> Result<SiteEvaluatorState, ActorProcessingErr> {
        let worker = Worker::spawn(
            &format!("site-evaluator-{}", a.site_id),
            a.threads,
            move || {
                LocalEvaluator::new(&a.model, a.device, &a.val, a.seed)
                    .map_err(|e| format!("cannot build the site's evaluator: {e}"))
            },
            |ev: &mut Result<LocalEvaluator, String>, (round, weights, fault): (u64, Weights, InjectedFault)| {
                // Only these two are planned for an evaluator (`FaultPlan::eval_fault`).
                match fault {
                    InjectedFault::Panic => panic!("injected fault: the site's evaluator panics on round {round}"),
                    InjectedFault::Slow { delay_ms } => std::thread::sleep(std::time::Duration::from_millis(delay_ms)),
                    _ => {}
                }
                match ev {
                    Ok(ev) => ev.evaluate(round, &weights).map_err(|e| e.to_string()),
                    Err(e) => Err(e.clone()),
                }
            },
        )?;
        Ok(SiteEvaluatorState { worker })
    }

    async fn handle(
        &self,
        _me: ActorRef<SiteEvaluatorMsg>,
        msg: SiteEvaluatorMsg,
        state: &mut SiteEvaluatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SiteEvaluatorMsg::Evaluate { round, weights, fault, reply_to } => {
                match state.worker.run((round, weights, fault)).await {
                    Ok(result) => reply_to.cast(SiteMsg::LocalEvaluated { round, result })?,
                    Err(reason) => return Err(format!("site evaluator thread died: {reason}").into()),
                }
            }
        }
        Ok(())
    }
}

/// The evaluator as a standalone node (`histofed evaluator`): the same [`GanEvaluator`] hosted through the role
/// seam (`actors::role`), like any user-written role — it joins a running federation, receives each completed
/// round's global weights, scores them on the held-out test split it holds (grid + fixed-feature FD every round,
/// the full quality suite every `evaluation.eval_every` rounds and at the last), and reports the numbers back to the
/// server, which records them under `roles.<name>` in report.json and as `histofed_role_metric`.
pub struct EvaluatorRole {
    ev: GanEvaluator,
    out_dir: PathBuf,
}

impl EvaluatorRole {
    /// Builds the evaluator (and, with `quality`, loads or trains the reference classifier) on the calling thread.
    pub fn new(a: &EvaluatorArgs) -> Result<Self, crate::actors::role::RoleError> {
        use crate::actors::role::RoleError;
        let mut ev = GanEvaluator::new(&a.model, a.device, &a.real, a.per_class, a.out_dir.clone(), a.seed)
            .map_err(|e| RoleError::Failed(format!("cannot build the evaluator: {e}")))?;
        if let Some(q) = a.quality.clone() {
            ev.enable_quality(q, &a.real)
                .map_err(|e| RoleError::Failed(format!("cannot prepare the reference classifier: {e}")))?;
        }
        Ok(Self { ev, out_dir: a.out_dir.clone() })
    }
}

impl crate::actors::role::Role for EvaluatorRole {
    fn on_round(
        &mut self,
        event: &crate::actors::role::RoundEvent,
        global: Option<&Weights>,
    ) -> Result<Option<crate::actors::role::RoleReport>, crate::actors::role::RoleError> {
        use crate::actors::role::RoleError;
        let weights = global.ok_or_else(|| RoleError::Failed("the evaluator needs the round's weights".into()))?;
        let r = self.ev.evaluate(event.round, weights).map_err(|e| RoleError::Failed(e.to_string()))?;
        let mut metrics = std::collections::BTreeMap::new();
        metrics.insert("fixed_feature_fd".to_string(), r.frechet_distance);
        metrics.insert("eval_secs".to_string(), r.eval_secs);
        let mut artifacts = vec![self.out_dir.join(&r.samples_png).display().to_string()];
        if let Some(q) = &r.quality {
            let s = &q.summary;
            for (k, v) in [
                ("fd", s.fd),
                ("precision", s.precision),
                ("recall", s.recall),
                ("memorized_share", s.memorized_share),
                ("class_coverage", s.class_coverage),
                ("label_agreement", s.label_agreement),
                ("diversity_ratio", s.diversity_ratio),
                ("layout_diversity_ratio", s.layout_diversity_ratio.unwrap_or(f64::NAN)),
                ("edge_excess", s.edge_excess.as_ref().map_or(f64::NAN, |e| e.1)),
                ("texture_diversity_min", s.texture_diversity_min.as_ref().map_or(f64::NAN, |t| t.1)),
                ("reference_test_accuracy", q.reference_test_accuracy),
            ] {
                // The server refuses non-finite values (an undefined ratio is left out, not sent as NaN).
                if v.is_finite() {
                    metrics.insert(k.to_string(), v);
                }
            }
            artifacts.push(self.out_dir.join(&q.report_json).display().to_string());
            artifacts.extend(q.pictures.iter().map(|p| self.out_dir.join(p).display().to_string()));
        }
        Ok(Some(crate::actors::role::RoleReport { metrics, artifacts }))
    }
}
