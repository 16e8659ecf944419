//! The aggregator thread: every update decoded, validated and folded, and every round aggregated, off the actor.
//!
//! Why: an update is tens of MB (40 MB at 10 M parameters). Decoding it, checking its distance to the global and
//! folding it into the strategy takes a noticeable fraction of a second; on the actor that time would hold up
//! heartbeats, admissions and `/pulse` behind it (and, with `block_in_place`, a tokio worker too). The thread owns
//! the strategy, the only mutable aggregation state, and works its jobs in the order they were queued, so a round's
//! `Begin` comes before its folds and its `Finish` after them. The actor keeps the bookkeeping (`RoundState`: who is
//! in check, who counted), the thread the arithmetic; answers come back as ordinary messages.
//!
//! Decoding and validating an update needs only the round's global weights, so it runs on tokio's blocking pool, up
//! to [`CHECKS_AT_ONCE`] updates at a time (a bound on the decoded copies held in memory, on top of the bulk plane's
//! upload slots), while the thread folds the ones already checked: on a machine with cores to spare, checking the
//! next update overlaps folding the last. Folding into one accumulator is sequential anyway, so one thread owns it.
//! The A/B against the old on-actor path is in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::ActorRef;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::actors::messages::{
    Aggregated, Folded, RoundAggregate, ServerMsg, SiteRound, UnmaskedRound, PROTOCOL_VERSION,
};
use crate::actors::worker::{Submitter, Worker};
use crate::cluster::bulk::Upload;
use crate::federation::secagg::{apply_sum, quant_step, SecureRound, Unmasked};
use crate::federation::strategy::{AggregateError, SecureNoise, SiteHints, SkellamNoise, Strategy};
use crate::federation::validate::{validate_update, Refused, RejectReason, UpdateHeader, ValidationPolicy};
use crate::federation::weights::{Weights, WeightsError};
use crate::records::RoundSecure;

/// Prefix of a strategy's tensor state (`Strategy::state_weights`) in the bundle handed to the checkpoint writer;
/// saved as the checkpoint's `strategy` part.
pub const STRATEGY_STATE: &str = "strategy.";

/// A job of the thread.
enum Job {
    /// A round (or a retry of one) starts from `global`.
    Begin(Arc<Weights>),
    /// Fold one checked update.
    Fold { update: Weights, num_samples: u64 },
    /// Produce the new global and reset for the next round.
    Finish,
    /// Encode the global weights (the next round's blob), after `Finish` answered so that the checkpoint writer
    /// starts at once.
    Encode,
    /// Remove a secure round's masks and fold the mean of the survivors' updates into the strategy as one update,
    /// then finish as `Finish` does.
    Unmask(Box<UnmaskJob>),
}

/// What unmasking a secure round needs besides the protocol's state.
pub(super) struct UnmaskJob {
    pub(super) secure: SecureRound,
    /// The survivors' sample counts (from their uploads' metadata) and the participants' total the sites divided
    /// by: a survivor's weight is n_i / total.
    pub(super) samples: BTreeMap<u32, u64>,
    pub(super) total: u64,
    /// Every site weighed 1/n instead (differential privacy's unweighted mean).
    pub(super) uniform: bool,
    /// The bound on the mean update's norm (`federation.max_update_norm`).
    pub(super) max_norm: Option<f64>,
}

/// What the thread answers.
enum Done {
    Begun,
    Folded(Result<f64, (Refused, String)>),
    Finished(Result<RoundAggregate, AggregateError>),
    Encoded(Option<(Arc<Vec<u8>>, String)>),
    Unmasked(Result<RoundAggregate, String>),
}

/// Updates decoded and validated at once (each holds a decoded copy of the model until it is folded).
pub(super) const CHECKS_AT_ONCE: usize = 2;

/// What the thread holds.
struct Desk {
    strategy: Box<dyn Strategy>,
    /// The global weights the current round started from.
    global: Arc<Weights>,
}

/// The actor's handle on the thread.
pub(super) struct Aggregator {
    worker: Worker<Job, Done>,
    submit: Submitter<Job, Done>,
    checks: Arc<Semaphore>,
    policy: ValidationPolicy,
    name: &'static str,
    hints: SiteHints,
    /// The round whose new global is being encoded.
    pub(super) encoding: Option<u64>,
}

impl Aggregator {
    /// Starts the thread, which takes the strategy over.
    pub(super) fn spawn(
        strategy: Box<dyn Strategy>,
        global: Arc<Weights>,
        policy: ValidationPolicy,
    ) -> std::io::Result<Self> {
        let (name, hints) = (strategy.name(), strategy.site_hints());
        let desk = Desk { strategy, global };
        let worker = Worker::spawn("aggregator", 1, move || desk, work)?;
        let submit = worker.submitter().ok_or_else(|| std::io::Error::other("the aggregator thread ended at once"))?;
        let checks = Arc::new(Semaphore::new(CHECKS_AT_ONCE));
        Ok(Self { worker, submit, checks, policy, name, hints, encoding: None })
    }

    /// How updates are validated (the secure path applies its sample bound to masked inputs' claims).
    pub(super) fn policy(&self) -> &ValidationPolicy {
        &self.policy
    }

    /// The strategy's name (fixed for the run).
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// What the strategy sends to sites with the next round (as of its last aggregation).
    pub(super) fn hints(&self) -> SiteHints {
        self.hints.clone()
    }

    /// Queues the start of a round from `global`; the strategy resets after the folds queued before.
    pub(super) fn begin(&mut self, global: Arc<Weights>) -> Result<(), String> {
        self.worker.submit(Job::Begin(global)).map(drop).ok_or_else(|| self.worker.death_reason())
    }

    /// Checks one upload against the round's `global` (on the blocking pool) and queues the fold; the answer comes
    /// back as [`ServerMsg::Folded`].
    pub(super) fn fold(
        &mut self,
        me: &ActorRef<ServerMsg>,
        upload: Upload,
        check: Check,
        site: SiteRound,
        attempt: u32,
    ) {
        let (me, submit, checks, policy) = (me.clone(), self.submit.clone(), self.checks.clone(), self.policy.clone());
        tokio::spawn(async move {
            let round = check.header.round;
            let msg = match check_and_fold(submit, checks, policy, upload, check).await {
                Some(outcome) => ServerMsg::Folded(Box::new(Folded { site, round, attempt, outcome })),
                None => ServerMsg::AggregatorGone,
            };
            let _ = me.cast(msg);
        });
    }

    /// Queues the round's aggregation, then the encoding of the new global; the answers come back in that order as
    /// [`ServerMsg::Aggregated`] and [`ServerMsg::Encoded`].
    pub(super) fn finish(&mut self, me: &ActorRef<ServerMsg>, round: u64) -> Result<(), String> {
        let aggregated = self.worker.submit(Job::Finish).ok_or_else(|| self.worker.death_reason())?;
        let encoded = self.worker.submit(Job::Encode).ok_or_else(|| self.worker.death_reason())?;
        self.encoding = Some(round);
        let me = me.clone();
        tokio::spawn(async move {
            let msg = match aggregated.await {
                Ok(Done::Finished(result)) => ServerMsg::Aggregated(Box::new(Aggregated { round, result })),
                _ => ServerMsg::AggregatorGone,
            };
            let _ = me.cast(msg);
            let msg = match encoded.await {
                Ok(Done::Encoded(blob)) => ServerMsg::Encoded { round, blob },
                _ => ServerMsg::AggregatorGone,
            };
            let _ = me.cast(msg);
        });
        Ok(())
    }

    /// Queues the unmasking of secure round `round` (attempt `attempt`), and on success the encoding of the new
    /// global; the answers come back as [`ServerMsg::Unmasked`] and [`ServerMsg::Encoded`]. A failed unmasking
    /// leaves the strategy as the round began (the round is retried).
    pub(super) fn unmask(
        &mut self,
        me: &ActorRef<ServerMsg>,
        round: u64,
        attempt: u32,
        job: UnmaskJob,
    ) -> Result<(), String> {
        let unmasked = self.worker.submit(Job::Unmask(Box::new(job))).ok_or_else(|| self.worker.death_reason())?;
        self.encoding = Some(round);
        let (me, submit) = (me.clone(), self.submit.clone());
        tokio::spawn(async move {
            let result = match unmasked.await {
                Ok(Done::Unmasked(result)) => result,
                _ => return drop(me.cast(ServerMsg::AggregatorGone)),
            };
            let ok = result.is_ok();
            let _ = me.cast(ServerMsg::Unmasked(Box::new(UnmaskedRound { round, attempt, result })));
            if !ok {
                // Nothing new to encode: the actor drops `encoding` when it retries the round.
                return;
            }
            let msg = match submit.submit(Job::Encode) {
                Some(encoded) => match encoded.await {
                    Ok(Done::Encoded(blob)) => ServerMsg::Encoded { round, blob },
                    _ => ServerMsg::AggregatorGone,
                },
                None => ServerMsg::AggregatorGone,
            };
            let _ = me.cast(msg);
        });
        Ok(())
    }

    /// The round's aggregation arrived: the hints for the next round come with it.
    pub(super) fn aggregated(&mut self, aggregate: &RoundAggregate) {
        self.hints = aggregate.hints.clone();
    }

    /// Why the thread is gone (after [`ServerMsg::AggregatorGone`]).
    pub(super) fn death_reason(&mut self) -> String {
        self.worker.death_reason()
    }
}

/// The global weights as safetensors bytes and their SHA-256 (what a blob on the bulk plane carries).
pub(super) fn encode(global: &Weights) -> Result<(Arc<Vec<u8>>, String), WeightsError> {
    let bytes = global.to_safetensors(None)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok((Arc::new(bytes), sha256))
}

/// What an upload is checked against.
pub(super) struct Check {
    pub(super) header: UpdateHeader,
    /// The round's global weights (the update must have their layout and stay within the norm bound of them).
    pub(super) global: Arc<Weights>,
}

/// Decodes and validates on the blocking pool, then folds on the thread. `None`: the thread is gone.
async fn check_and_fold(
    submit: Submitter<Job, Done>,
    checks: Arc<Semaphore>,
    policy: ValidationPolicy,
    upload: Upload,
    check: Check,
) -> Option<Result<f64, (Refused, String)>> {
    // Held until the fold answered: at most CHECKS_AT_ONCE decoded updates exist besides the strategy's own.
    let _permit = checks.acquire_owned().await.ok()?;
    let num_samples = check.header.num_samples;
    let update = match tokio::task::spawn_blocking(move || decode_and_validate(upload, &check, &policy)).await {
        Ok(Ok(update)) => update,
        Ok(Err(refused)) => return Some(Err(refused)),
        Err(e) => return Some(Err((Refused::Invalid(RejectReason::Malformed), format!("checking it panicked: {e}")))),
    };
    match submit.submit(Job::Fold { update, num_samples })?.await.ok()? {
        Done::Folded(outcome) => Some(outcome),
        _ => None,
    }
}

fn decode_and_validate(upload: Upload, check: &Check, policy: &ValidationPolicy) -> Result<Weights, (Refused, String)> {
    let decoded = Weights::from_safetensors(&upload.body);
    // Dropping the upload frees its slot on the bulk plane: the next one may come in while this one is checked.
    drop(upload);
    let (w, _) = decoded.map_err(|e| (Refused::Invalid(RejectReason::Malformed), format!("malformed weights: {e}")))?;
    validate_update(PROTOCOL_VERSION, check.header.round, &check.header, &check.global, &w, policy)
        .map_err(|r| (Refused::Invalid(r.reason), r.to_string()))?;
    Ok(w)
}

fn work(desk: &mut Desk, job: Job) -> Done {
    match job {
        Job::Begin(global) => {
            desk.strategy.begin_round(&global);
            desk.global = global;
            Done::Begun
        }
        Job::Fold { update, num_samples } => {
            let t = Instant::now();
            Done::Folded(
                desk.strategy
                    .accumulate(update, num_samples)
                    .map(|()| t.elapsed().as_secs_f64())
                    .map_err(|e| (Refused::Aggregation, format!("aggregation refused it: {e}"))),
            )
        }
        Job::Finish => Done::Finished(finish(desk)),
        Job::Unmask(job) => Done::Unmasked(unmask(desk, *job)),
        Job::Encode => Done::Encoded(match encode(&desk.global) {
            Ok(blob) => Some(blob),
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise the round's weights");
                None
            }
        }),
    }
}

/// The masks off, the survivors' mean update folded into the strategy as one update of their total samples (a
/// mean of one is itself, so FedAvg and the server optimisers do what they do with the updates seen one by one),
/// then the round finished.
fn unmask(desk: &mut Desk, job: UnmaskJob) -> Result<RoundAggregate, String> {
    let t = Instant::now();
    let params = job.secure.params();
    let (neighbours, threshold) = (params.degree(), params.threshold);
    let n = params.participants.len().max(1) as f64;
    // What quantization can add to one site's update: each value rounds by less than a step of the weighted update,
    // i.e. step / weight of the update itself (weight 1/n when uniform).
    let step = quant_step(params.clip_range, params.quant_bits);
    let site_noise = params.noise;
    let Unmasked { sum, survivors, dropped, bad_holders } = job.secure.finish().map_err(|e| e.to_string())?;
    drop(job.secure);
    let mut weight = 0.0;
    let mut samples = 0u64;
    for s in &survivors {
        let ns = *job.samples.get(s).ok_or_else(|| format!("survivor {s} has no sample count"))?;
        weight += if job.uniform { 1.0 / n } else { ns as f64 / job.total as f64 };
        samples += ns;
    }
    let mean = apply_sum(&desk.global, &sum, weight, job.max_norm).map_err(|e| e.to_string())?;
    let noise = match site_noise {
        None => SecureNoise::ToAdd { slack: step * n * (sum.len() as f64).sqrt() },
        // The sites' noise: every survivor's share is in the sum.
        Some(site) => SecureNoise::Added(SkellamNoise {
            l1_sensitivity: site.l1_sensitivity,
            l2_sensitivity: site.l2_sensitivity,
            variance: site.total_variance(survivors.len()),
            contributors: survivors.len(),
        }),
    };
    drop(sum);
    desk.strategy
        .accumulate_mean(mean, survivors.len(), samples, noise)
        .map_err(|e| format!("the strategy refused the unmasked mean: {e}"))?;
    let unmask_secs = t.elapsed().as_secs_f64();
    let mut aggregate = finish(desk).map_err(|e| e.to_string())?;
    aggregate.secs += unmask_secs;
    aggregate.secure = Some(RoundSecure { survivors, dropped, bad_shares: bad_holders, neighbours, threshold });
    Ok(aggregate)
}

fn finish(desk: &mut Desk) -> Result<RoundAggregate, AggregateError> {
    let t = Instant::now();
    let global = Arc::new(desk.strategy.finish()?);
    let step = global.l2_distance(&desk.global).unwrap_or(f64::NAN);
    // A server optimiser's moments travel with the round's checkpoint (its `strategy` part), so a restarted server
    // resumes them; without state the global weights go as they are (shared, never copied).
    let checkpoint = match desk.strategy.state_weights() {
        None => global.clone(),
        Some(state) => match Weights::join_prefixed(&[("", &global), (STRATEGY_STATE, &state)]) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot add the strategy's state to the checkpoint");
                global.clone()
            }
        },
    };
    desk.global = global.clone();
    Ok(RoundAggregate {
        global,
        step,
        strategy_state: desk.strategy.state(),
        checkpoint,
        hints: desk.strategy.site_hints(),
        dp: desk.strategy.released(),
        secure: None,
        secs: t.elapsed().as_secs_f64(),
    })
}
