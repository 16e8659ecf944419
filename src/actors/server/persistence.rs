//! Durability: the checkpoint writer child (a round counts as completed only once it is on disk), its failures and
//! retries under the restart policy, restarting either child, and what happens once a round is saved.

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::aggregator::STRATEGY_STATE;
use super::state::*;
use crate::actors::checkpoint_writer::CheckpointWriter;
use crate::actors::evaluator::EvaluatorActor;
use crate::actors::messages::ServerChild;
use crate::actors::messages::{EvaluatorMsg, ServerMsg, WriterMsg};
use crate::actors::restart_policy::Decision;
use crate::actors::spawn_configured_child;
use crate::federation::checkpoint::CheckpointStore;

pub(super) async fn spawn_writer(
    me: &ActorRef<ServerMsg>,
    store: &CheckpointStore,
) -> Result<ActorRef<WriterMsg>, ActorProcessingErr> {
    Ok(Actor::spawn_linked(None, CheckpointWriter, store.clone(), me.get_cell()).await?.0)
}

/// Hands the round waiting in `persisting` to the checkpoint writer (again, after a failure).
pub(super) fn send_save(me: &ActorRef<ServerMsg>, st: &mut ServerState) {
    let (Some(p), Some(writer)) = (&st.persisting, &st.writer) else { return };
    let mut parts: Vec<(String, String)> =
        CHECKPOINT_PARTS.iter().map(|(n, prefix)| (n.to_string(), prefix.to_string())).collect();
    if p.weights.tensors().iter().any(|t| t.name.starts_with(STRATEGY_STATE)) {
        parts.push(("strategy".into(), STRATEGY_STATE.into()));
    }
    let msg = WriterMsg::Save { meta: p.meta.clone(), weights: p.weights.clone(), parts, reply_to: me.clone() };
    if let Err(e) = writer.cast(msg) {
        tracing::error!(error = %e, "checkpoint writer unreachable");
    }
}

/// The writer (or its save) failed: retry under the restart policy, or end the run — a round that cannot be made
/// durable must not be reported as completed.
pub(super) fn writer_failed(me: &ActorRef<ServerMsg>, st: &mut ServerState, reason: String) {
    let round = st.persisting.as_ref().map(|p| p.record.round).unwrap_or(st.completed + 1);
    match st.writer_restarts.on_failure(Instant::now()) {
        Decision::Restart { attempt, delay } => {
            tracing::warn!(round, attempt, ?delay, %reason, "checkpoint not written; retrying");
            st.event(None, "checkpoint-retry", reason);
            me.send_after(delay, || ServerMsg::RestartChild(ServerChild::CheckpointWriter));
        }
        Decision::Escalate { failures_in_window } => {
            let msg = format!(
                "cannot write the checkpoint of round {round} ({failures_in_window} attempts): {reason}; \
                 rounds up to {} are safe on disk",
                st.completed
            );
            tracing::error!(%msg);
            st.event(None, "checkpoint-failed", msg.clone());
            st.persisting = None;
            st.finish_run(me, Err(msg));
        }
    }
}

pub(super) async fn restart_child(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    which: ServerChild,
) -> Result<(), ActorProcessingErr> {
    match which {
        ServerChild::Evaluator => {
            st.evaluator = spawn_configured_child(EvaluatorActor, &st.evaluator_args, me.get_cell()).await?
        }
        ServerChild::CheckpointWriter => {
            if st.writer.is_none() {
                st.writer = Some(spawn_writer(me, &st.writer_store).await?);
            }
            send_save(me, st);
        }
    }
    Ok(())
}

/// The checkpoint of a round is on disk (or failed): only now the round is completed.
pub(super) async fn on_saved(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    round: u64,
    result: Result<String, String>,
) -> Result<(), ActorProcessingErr> {
    if st.persisting.as_ref().map(|p| p.record.round) != Some(round) {
        return Ok(());
    }
    if st.aggregator.encoding == Some(round) {
        // The round's blob is still being encoded: go on once it is there (roles and the next round need it).
        st.saved_early = Some((round, result));
        return Ok(());
    }
    let checkpoint = match result {
        Ok(name) => name,
        Err(reason) => {
            writer_failed(me, st, reason);
            return Ok(());
        }
    };
    let Some(Persisting { mut record, .. }) = st.persisting.take() else { return Ok(()) };
    record.checkpoint = checkpoint;
    record.completed_unix_ms = now_ms();
    st.obs.metrics.checkpoint_written();
    st.obs.metrics.round_completed(round, record.wall_secs);
    let mean_losses = record.mean_losses;
    st.report.rounds.push(record);
    st.completed = round;
    st.attempt = 0;
    st.report.total_secs += st.started.elapsed().as_secs_f64();
    st.started = Instant::now();
    st.write_report();
    st.publish_status("");
    st.progress.rounds.set_position(round);
    tracing::info!(round, d_loss = mean_losses.d_loss, g_loss = mean_losses.g_loss, "round complete");
    st.announce_round(round);
    st.ask_sites_to_evaluate(round);
    if let Some(ev) = &st.evaluator {
        let msg = EvaluatorMsg::Evaluate { round, weights: st.global.clone(), reply_to: me.clone() };
        match ev.cast(msg) {
            Ok(()) => {
                st.pending_eval.insert(round);
            }
            Err(e) => tracing::warn!(round, error = %e, "evaluator unreachable"),
        }
    }
    if st.completed >= st.cfg.federation.rounds {
        st.finish_run(me, Ok(format!("all {} rounds completed", st.completed)));
    } else {
        me.cast(ServerMsg::StartRound)?;
    }
    Ok(())
}
