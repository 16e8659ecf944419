//! How a site supervises its generator-trainer: a failed job is retried with half the batch when it ran out of
//! memory, else the trainer is restarted under the restart policy, and past the budget the site tells the server it
//! is out of the round (the policy itself is `actors::restart_policy`, pure).

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::SiteState;
use crate::actors::messages::{SiteMsg, TrainFailure, TrainFailureKind, TrainerMsg};
use crate::actors::restart_policy::Decision;
use crate::actors::trainer::{TrainerActor, TrainerArgs};

pub(super) async fn spawn_trainer(
    me: &ActorRef<SiteMsg>,
    args: &TrainerArgs,
) -> Result<ActorRef<TrainerMsg>, ActorProcessingErr> {
    let (trainer, _) = Actor::spawn_linked(None, TrainerActor, args.clone(), me.get_cell()).await?;
    Ok(trainer)
}

/// A job came back failed while its trainer is alive.
pub(super) fn on_job_failure(
    me: &ActorRef<SiteMsg>,
    st: &mut SiteState,
    failure: TrainFailure,
) -> Result<(), ActorProcessingErr> {
    tracing::warn!(kind = ?failure.kind, reason = %failure.message, "trainer job failed");
    if failure.kind == TrainFailureKind::OutOfMemory {
        if let Some(job) = st.job.as_mut() {
            let half = (job.batch_size / 2).max(st.args.min_batch);
            if half < job.batch_size {
                tracing::warn!(
                    round = job.round,
                    from = job.batch_size,
                    to = half,
                    "out of memory; retrying with half the batch"
                );
                job.batch_size = half;
                st.oom_retries += 1;
                st.args.metrics.oom_retried();
                return st.dispatch(me);
            }
        }
    }
    restart_or_escalate(me, st, failure.to_string());
    Ok(())
}

/// Applies the restart policy to a failed trainer (crash, NaN, or out of memory at the smallest batch).
pub(super) fn restart_or_escalate(me: &ActorRef<SiteMsg>, st: &mut SiteState, reason: String) {
    match st.restarts.on_failure(Instant::now()) {
        Decision::Restart { attempt, delay } => {
            st.restarts_this_job += 1;
            st.args.metrics.trainer_restarted();
            tracing::warn!(attempt, ?delay, %reason, "restarting the trainer");
            // A failed job leaves the old trainer alive: stop it so only the new one holds the model.
            if let Some(old) = st.trainer.take() {
                old.stop(None);
            }
            me.send_after(delay, || SiteMsg::RestartTrainer);
        }
        Decision::Escalate { failures_in_window } => {
            tracing::error!(failures_in_window, %reason, "restart budget exhausted; out of this round");
            if let Some(job) = st.job.take() {
                st.out_of_round(job.round, format!("trainer failed {failures_in_window} times: {reason}"));
            }
            if st.trainer.is_none() {
                me.send_after(st.args.reconnect, || SiteMsg::RestartTrainer);
            }
        }
    }
}
