//! The generator-trainer role: a child of its site (`spawn_linked`) that runs local GAN epochs on a dedicated tch
//! thread and sends the result back to the site. It holds no policy: if its thread panics it fails, and the site
//! (its supervisor) decides whether and when to start a new one.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tch::Device;

use crate::actors::messages::{LocalJob, LocalResult, SiteMsg, TrainFailure, TrainFailureKind, TrainerMsg};
use crate::actors::worker::Worker;
use crate::data::Dataset;
use crate::models::ModelConfig;
use crate::train::{LocalCheckpoints, LocalTrainer};

pub struct TrainerActor;

#[derive(Clone)]
pub struct TrainerArgs {
    pub site_id: u32,
    pub model: ModelConfig,
    pub device: Device,
    pub data: Arc<Dataset>,
    pub seed: u64,
    pub threads: i32,
    /// Checkpoints within a round (resume after a restart of this trainer or of the whole site process).
    pub checkpoints: Option<LocalCheckpoints>,
    /// Benchmark mode (`model.bench_params`): no GAN; a job perturbs the global weights instead of training.
    pub bench: bool,
}

pub struct TrainerState {
    worker: Worker<LocalJob, Result<LocalResult, TrainFailure>>,
}

impl Actor for TrainerActor {
    type Msg = TrainerMsg;
    type State = TrainerState;
    type Arguments = TrainerArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<TrainerMsg>,
        args: TrainerArgs,
    ) -> Result<TrainerState, ActorProcessingErr> {
        let name = format!("trainer-{}", args.site_id);
        let site_id = args.site_id;
        let worker = Worker::spawn(
            &name,
            args.threads,
            move || {
                if args.bench {
                    return Ok(None);
                }
                LocalTrainer::new(&args.model, args.device, args.data, args.site_id, args.seed)
                    .map(|t| Some(t.with_checkpoints(args.checkpoints)))
                    .map_err(|e| TrainFailure {
                        kind: TrainFailureKind::Other,
                        message: format!("cannot build the local model: {e}"),
                    })
            },
            move |trainer: &mut Result<Option<LocalTrainer>, TrainFailure>, job: LocalJob| match trainer {
                Ok(Some(t)) => t.run(&job).map_err(TrainFailure::from),
                Ok(None) => Ok(crate::train::bench_step(&job, site_id)),
                Err(e) => Err(e.clone()),
            },
        )?;
        Ok(TrainerState { worker })
    }

    async fn handle(
        &self,
        _me: ActorRef<TrainerMsg>,
        msg: TrainerMsg,
        state: &mut TrainerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TrainerMsg::Train { job, reply_to } => {
                // A dead thread (panic) becomes this actor's failure, which its supervisor (the site) handles.
                let result = state.worker.run(job).await?;
                reply_to.cast(SiteMsg::TrainerDone(result))?;
            }
        }
        Ok(())
    }
}
