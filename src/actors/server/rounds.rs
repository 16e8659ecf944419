//! The round loop: starting a round (publish the global, tell the participants), checking whether it can close,
//! retrying one without quorum, and aggregating a closed round into the next global model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{ActorProcessingErr, ActorRef};

use super::persistence::{on_saved, send_save};
use super::secure;
use super::state::*;
use crate::actors::messages::{Aggregated, LossSummary, ServerMsg, SiteMsg};
use crate::federation::checkpoint::CheckpointMeta;
use crate::federation::round::{RoundState, RoundStatus};
use crate::federation::secagg::Stage;
use crate::records::{RoundPrivacy, RoundRecord, SkellamCharge};

pub(super) fn start_round(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    let round = st.completed + 1;
    if let Some(msg) = over_budget(st, round) {
        tracing::warn!(round, %msg, "privacy budget");
        st.event(None, "privacy-budget", msg.clone());
        st.finish_run(me, Ok(msg));
        return Ok(());
    }
    let participants: Vec<u32> = st.sites.keys().copied().collect();
    if (participants.len() as u32) < st.cfg.federation.min_sites {
        tracing::warn!(round, have = participants.len(), "not enough sites to start the round; waiting");
        st.waiting_to_start = true;
        me.send_after(Duration::from_secs_f64(st.cfg.federation.join_timeout_secs), || ServerMsg::JoinTimeout);
        return Ok(());
    }
    let samples: BTreeMap<u32, u64> = participants
        .iter()
        .map(|id| (*id, st.report.site_classes.get(id).map_or(0, |c| c.iter().sum::<u64>())))
        .collect();
    let quorum = st.cfg.federation.min_sites as usize;
    let uniform = st.dp.is_some();
    match secure::begin(st.secagg, round, st.attempt, &samples, st.global.num_values(), quorum, uniform) {
        Ok(open) => st.secure = open,
        Err(e) => {
            tracing::warn!(round, error = %e, "cannot open the round's secure aggregation");
            st.event(None, "secagg-failed", format!("round {round} cannot be aggregated securely: {e}"));
            return retry_round(me, st, 0, quorum);
        }
    }
    st.publish_global(round)?;
    let frame = st.train_frame(round)?;
    st.aggregator.begin(st.global.clone())?;
    for id in &participants {
        if let Some(site) = st.sites.get(id) {
            if let Err(e) = site.actor.cast(SiteMsg::FromServer(Ok(frame.clone()))) {
                tracing::warn!(site_id = id, error = %e, "cannot send the round");
            }
        }
    }
    tracing::info!(round, attempt = st.attempt, sites = ?participants, "round started");
    st.progress.sites.set_length(participants.len() as u64);
    st.progress.sites.set_position(0);
    st.progress.sites.set_message(format!("round {round}"));
    st.current = Some(RoundState::new(round, st.attempt, participants, st.cfg.federation.min_sites as usize));
    st.publish_status(&format!("training round {round}"));
    st.round_started = Instant::now();
    st.grace_armed = false;
    st.contributors.clear();
    // Not `st.rejected`: an update refused between rounds (a fenced or stale upload that lands while the last
    // round is checkpointed) belongs to the next round's record; clearing here lost it. `round_record` takes it.
    st.aggregate_secs = 0.0;
    secure::arm(me, st, Stage::Advertise);
    let attempt = st.attempt;
    me.send_after(Duration::from_secs_f64(st.cfg.federation.round_deadline_secs), move || ServerMsg::RoundDeadline {
        round,
        attempt,
    });
    Ok(())
}

pub(super) fn check_round(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    let Some(current) = &st.current else { return Ok(()) };
    match current.status() {
        RoundStatus::Waiting if current.has_quorum() && !st.grace_armed => {
            // Quorum is in: give the stragglers a bounded grace period, then close with what we have.
            st.grace_armed = true;
            let (round, attempt) = (current.round, current.attempt);
            me.send_after(Duration::from_secs_f64(st.cfg.federation.grace_secs), move || ServerMsg::GraceExpired {
                round,
                attempt,
            });
            Ok(())
        }
        RoundStatus::Waiting => Ok(()),
        // Secure: the masked inputs are in; the protocol's last stages close the round.
        RoundStatus::Complete if st.secure.is_some() => {
            let after = secure::close_mask(me, st)?;
            after_secure(me, st, after)
        }
        RoundStatus::Complete => finish_round(me, st),
        RoundStatus::Failed { received, needed } => retry_round(me, st, received, needed),
    }
}

/// Carries out what a step of the secure aggregation left to the round loop.
pub(super) fn after_secure(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    after: secure::After,
) -> Result<(), ActorProcessingErr> {
    match after {
        secure::After::Nothing => Ok(()),
        secure::After::Retry { received, needed } => retry_round(me, st, received, needed),
        secure::After::Aggregated(done) => on_aggregated(me, st, *done),
        secure::After::CheckRound => check_round(me, st),
    }
}

pub(super) fn retry_round(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    received: usize,
    needed: usize,
) -> Result<(), ActorProcessingErr> {
    let round = st.completed + 1;
    st.current = None;
    st.secure = None;
    st.attempt += 1;
    if st.attempt > st.cfg.federation.max_round_retries {
        let msg = format!("round {round} missed quorum {} times ({received} of {needed} updates)", st.attempt);
        tracing::error!(%msg, "giving up");
        st.finish_run(me, Err(msg));
        return Ok(());
    }
    tracing::warn!(round, received, needed, attempt = st.attempt, "round missed quorum; retrying");
    st.obs.metrics.round_retried();
    st.event(None, "round-retried", format!("{received} of {needed} updates"));
    // Back off before the next attempt (longer each time): an immediate retry would meet the same conditions —
    // the same sites missing, the same bad update — and burn the retry budget in milliseconds.
    let delay = Duration::from_secs_f64(st.cfg.federation.retry_backoff_secs * f64::from(st.attempt));
    st.publish_status(&format!("round {round} missed quorum; retrying in {:.1} s", delay.as_secs_f64()));
    me.send_after(delay, || ServerMsg::StartRound);
    Ok(())
}

/// The round closed: its aggregation goes to the aggregator thread, after the folds queued before it; the rest
/// happens in [`on_aggregated`] when the new global comes back.
pub(super) fn finish_round(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    let Some(current) = st.current.take() else { return Ok(()) };
    let round = current.round;
    st.aggregator.finish(me, round)?;
    st.closing = Some(current);
    st.publish_status(&format!("aggregating round {round}"));
    Ok(())
}

/// The aggregator thread answered: record the round, hand its checkpoint to the writer, keep its blob.
pub(super) fn on_aggregated(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    done: Aggregated,
) -> Result<(), ActorProcessingErr> {
    let Some(current) = st.closing.take().filter(|c| c.round == done.round) else {
        tracing::warn!(round = done.round, "an aggregation for a round that is not closing; ignored");
        return Ok(());
    };
    let aggregate = done.result?;
    st.aggregator.aggregated(&aggregate);
    let round = current.round;
    st.aggregate_secs += aggregate.secs;
    st.global = aggregate.global;
    let meta = CheckpointMeta {
        round,
        strategy: st.aggregator.name().to_string(),
        strategy_state: aggregate.strategy_state,
        membership: st.membership(),
        config_hash: st.report.config_hash.clone(),
        created_unix_ms: now_ms(),
        extra: serde_json::json!({ "contributors": st.contributors.iter().map(|c| c.site_id).collect::<Vec<_>>() }),
    };
    let mut record = round_record(st, &current, aggregate.step);
    record.secure = aggregate.secure;
    if let (Some(rel), Some(dp)) = (aggregate.dp, st.dp) {
        let skellam = rel.skellam.map(|s| (s.l1_sensitivity, s.l2_sensitivity, s.variance));
        let this = crate::federation::privacy::round_release(rel.noise_multiplier, skellam);
        let epsilon = crate::federation::privacy::ledger_epsilon(ledger(st), 1, this, dp.delta);
        tracing::info!(
            round,
            epsilon,
            delta = dp.delta,
            updates = rel.updates,
            clipped = rel.clipped,
            clip_norm = rel.clip_norm,
            next_clip_norm = rel.next_clip_norm,
            "privacy ledger"
        );
        st.obs.metrics.dp_epsilon(epsilon);
        record.privacy = Some(RoundPrivacy {
            noise_multiplier: rel.noise_multiplier,
            clip_norm: rel.clip_norm,
            updates: rel.updates,
            clipped: rel.clipped,
            delta: dp.delta,
            epsilon,
            update_noise_multiplier: rel.fitted_share.map(|_| rel.update_noise_multiplier),
            fitted_share: rel.fitted_share,
            next_clip_norm: rel.fitted_share.map(|_| rel.next_clip_norm),
            skellam: rel.skellam.map(|s| SkellamCharge {
                l1_sensitivity: s.l1_sensitivity,
                l2_sensitivity: s.l2_sensitivity,
                variance: s.variance,
                contributors: s.contributors,
            }),
        });
    }
    let m = &st.obs.metrics;
    m.aggregation(record.aggregate_secs);
    m.gan_losses(record.mean_losses.d_loss, record.mean_losses.g_loss);
    for c in &record.contributors {
        (0..c.trainer_restarts).for_each(|_| m.trainer_restarted());
        (0..c.oom_retries).for_each(|_| m.oom_retried());
    }
    st.count_bytes();
    // The round's record travels inside its checkpoint: a server killed after the checkpoint is durable but before
    // the report is rewritten still has the record when it resumes from that checkpoint.
    let mut meta = meta;
    let mut stored = record.clone();
    stored.checkpoint = format!("round-{round:06}.json");
    stored.completed_unix_ms = now_ms();
    if let (Some(extra), Ok(r)) = (meta.extra.as_object_mut(), serde_json::to_value(&stored)) {
        extra.insert("record".into(), r);
    }
    st.persisting = Some(Persisting { record, meta, weights: aggregate.checkpoint });
    st.publish_status(&format!("writing the checkpoint of round {round}"));
    st.progress.sites.set_message(format!("round {round}: writing the checkpoint"));
    send_save(me, st);
    Ok(())
}

/// The aggregator encoded the new global (while the writer saves the round): the bytes serve the roles and the
/// next round's publish. A checkpoint that became durable first was waiting for them.
pub(super) async fn on_encoded(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    round: u64,
    blob: Option<(Arc<Vec<u8>>, String)>,
) -> Result<(), ActorProcessingErr> {
    st.aggregator.encoding = None;
    st.round_blob = blob.map(|(bytes, sha256)| RoundBlob { round, bytes, sha256 });
    match st.saved_early.take() {
        Some((saved, result)) if saved == round => on_saved(me, st, saved, result).await,
        other => {
            st.saved_early = other;
            Ok(())
        }
    }
}

/// The record of a closed round, from its bookkeeping and what the server collected while it was open.
/// With `privacy.max_epsilon`: why round `round` must not run (it would take ε past the budget).
fn over_budget(st: &ServerState, round: u64) -> Option<String> {
    let dp = st.dp?;
    let max = dp.max_epsilon?;
    let f = &st.cfg.federation;
    let sites = (f.min_sites.max(2) as usize)..=(f.sites as usize);
    let upcoming = secure::upcoming_release(st.secagg, dp, sites, round, st.global.num_values());
    let now = crate::federation::privacy::ledger_epsilon(ledger(st), 0, upcoming, dp.delta);
    let next = crate::federation::privacy::ledger_epsilon(ledger(st), 1, upcoming, dp.delta);
    (next > max).then(|| {
        format!(
            "privacy budget reached: round {round} would take epsilon from {now:.3} to {next:.3}, past \
             privacy.max_epsilon = {max} (delta {}); the run ends after round {}",
            dp.delta,
            round - 1
        )
    })
}

/// What the rounds recorded so far charged.
fn ledger(st: &ServerState) -> impl Iterator<Item = crate::federation::privacy::Release> + '_ {
    st.report.rounds.iter().filter_map(|r| {
        r.privacy.map(|p| crate::federation::privacy::round_release(p.noise_multiplier, p.skellam_parts()))
    })
}

fn round_record(st: &mut ServerState, current: &RoundState, step: f64) -> RoundRecord {
    let n = st.contributors.len().max(1) as f64;
    let mean_losses = LossSummary {
        d_loss: st.contributors.iter().map(|c| c.losses.d_loss).sum::<f64>() / n,
        g_loss: st.contributors.iter().map(|c| c.losses.g_loss).sum::<f64>() / n,
    };
    let mut contributors = std::mem::take(&mut st.contributors);
    contributors.sort_by_key(|c| c.site_id);
    RoundRecord {
        round: current.round,
        attempts: current.attempt + 1,
        participants: current.participants().iter().copied().collect(),
        contributors,
        dropped: current.dropped().iter().copied().collect(),
        rejected: std::mem::take(&mut st.rejected),
        mean_losses,
        frechet_distance: None,
        samples_png: None,
        quality: None,
        checkpoint: String::new(),
        global_step_norm: step,
        wall_secs: st.round_started.elapsed().as_secs_f64(),
        aggregate_secs: st.aggregate_secs,
        completed_unix_ms: 0,
        roles: BTreeMap::new(),
        federated_eval: None,
        privacy: None,
        secure: None,
    }
}
