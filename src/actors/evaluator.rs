//! The evaluator role: scores the global generator after each round (sample grid + Fréchet distance) on a
//! dedicated tch thread. It runs where the held-out data is — here, beside the server — and is supervised by it
//! under the restart policy. Its answer is a message back to the server, so the server keeps answering heartbeats
//! and taking uploads while an evaluation runs.

use std::path::PathBuf;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tch::Device;

use crate::actors::messages::{EvalReport, EvaluatorMsg, ServerMsg};
use crate::actors::worker::Worker;
use crate::data::Dataset;
use crate::evaluation::{GanEvaluator, QualitySetup};
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

type Job = (u64, Weights);

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
                Ok(result) => reply_to.cast(ServerMsg::Evaluated { round, result })?,
                // The thread died: fail, so the server restarts this evaluator under its policy.
                Err(reason) => return Err(format!("evaluator thread died: {reason}").into()),
            },
        }
        Ok(())
    }
}
