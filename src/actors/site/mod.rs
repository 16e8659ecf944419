//! The site role: one per hospital (one per pod). It owns the local data shard, keeps a connection to the server
//! (reconnecting with backoff when it is lost), answers heartbeats and the server's rounds, and supervises its
//! generator-trainer:
//! - a trainer that panics or whose job produced NaN/Inf is restarted under the restart policy and handed the
//!   round's job again — from the round's starting weights, its last local checkpoint;
//! - a job that ran out of device memory is retried at once with half the batch, down to `min_batch_size`;
//! - past the restart budget the site tells the server it is out of this round instead of vanishing.
//!
//! Weights never ride the control connection: the site fetches a round's global weights from the server's bulk
//! endpoint (checking their SHA-256) and uploads its update there with the token it got at admission. It keeps
//! its progress on disk (`federation::site_store`): a restarted trainer or a restarted site process resumes the
//! round from its last local checkpoint, and a finished update is re-sent as it was instead of trained again.
//! A site that hears nothing from the server for `cluster.site_give_up_secs` stops with an error instead of
//! reconnecting forever.
//!
//! Federated evaluation: when the server asks (`ToSite::Evaluate`), the site fetches that round's global weights
//! and has its evaluator child (`actors::evaluator::SiteEvaluatorActor`, supervised like the trainer) score them on
//! the site's validation split; only the scores go back (`ToServer::Evaluated`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use ractor::{pg, Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::NodeServerMessage;
use tracing::Instrument;

use crate::actors::evaluator::{SiteEvaluatorActor, SiteEvaluatorArgs};
use crate::actors::link::{Connect, ServerLink};
use crate::actors::messages::{
    BlobRef, LocalJob, SiteEvaluatorMsg, SiteHello, SiteMsg, SiteRound, ToServer, ToSite, TrainerMsg, UpdateMeta,
    SERVER_GROUP, SITES_GROUP,
};
use crate::actors::restart_policy::{Decision, RestartPolicy, RestartTracker};
use crate::actors::trainer::TrainerArgs;
use crate::actors::{is_child, set_exit, spawn_configured_child, Exit};
use crate::cluster::bulk::{self, ClientOpts};
use crate::cluster::{self, NodeEvent};
use crate::faults::InjectedFault;
use crate::faults::{self, FaultPlan};
use crate::federation::site_store::{Finished, SiteStore};
use crate::federation::strategy::SiteHints;
use crate::federation::weights::Weights;
use crate::observability::Metrics;
use crate::train::LocalResult;

mod ending;
mod secure;
mod supervise;
mod upload;
use ending::{on_fenced, on_give_up_check, on_shutdown};
use supervise::{on_job_failure, restart_or_escalate, spawn_trainer};
use upload::Uploader;

pub struct SiteActor;

pub struct SiteArgs {
    pub site_id: u32,
    /// The newest round of the site's local state when the process started (`None`: none).
    pub local_state: Option<u64>,
    pub node: ActorRef<NodeServerMessage>,
    pub security: cluster::Security,
    pub server_addr: SocketAddr,
    pub reconnect: Duration,
    pub num_samples: u64,
    pub class_counts: Vec<u64>,
    pub trainer: TrainerArgs,
    /// Federated evaluation on the site's validation split; `None`: this site does not evaluate (it says so when
    /// asked).
    pub evaluator: Option<SiteEvaluatorArgs>,
    pub restart_policy: RestartPolicy,
    /// Smallest batch an out-of-memory retry may use.
    pub min_batch: u32,
    /// Faults to inject (tests and chaos scenarios).
    pub faults: FaultPlan,
    /// How this site's process ends: `Ok` after the server's shutdown, `Err` when refused or given up.
    pub exit: Exit,
    /// Bulk-plane client settings (TLS material, stall timeout, size limit).
    pub bulk: ClientOpts,
    /// Durable local state (finished updates); `None` keeps nothing on disk.
    pub store: Option<SiteStore>,
    /// Keep each finished update in `store` (`federation.keep_finished_update`).
    pub keep_finished: bool,
    /// This process's `/metrics`: the last round trained and its training time, losses, trainer restarts, OOM
    /// retries, bytes downloaded and uploaded.
    pub metrics: Metrics,
    /// Stop after hearing nothing from the server for this long (`None`: never).
    pub give_up: Option<Duration>,
    /// Protocol version this site announces (always `PROTOCOL_VERSION` except in compatibility tests).
    pub protocol: u32,
    /// Secure aggregation as this site's own configuration sets it: it takes part only in rounds that match it
    /// (`None`: no secure rounds; `Some`: no round in the clear, and only with the parameters these options give).
    pub secagg: Option<crate::federation::secagg::SecAggOptions>,
    /// After the server ends the run, stay idle instead of exiting (a StatefulSet restarts whatever exits).
    pub stay_up: bool,
    /// This process (random per process; the actor is registered as `site_process_name(site_id, instance)`), so
    /// the server can tell it from another process claiming the same site.
    pub instance: u64,
}

/// A round the server asked for whose weights are still being fetched.
struct PendingRound {
    round: u64,
    local_steps: u32,
    batch_size: u32,
    hints: SiteHints,
    sha256: String,
}

pub struct SiteState {
    args: SiteArgs,
    trainer: Option<ActorRef<TrainerMsg>>,
    link: ServerLink,
    job: Option<LocalJob>,
    restarts: RestartTracker,
    restarts_this_job: u32,
    oom_retries: u32,
    token: Option<u64>,
    /// The current admission's generation (every frame carries it); `held` the last one this process ever had.
    generation: Option<u64>,
    held: Option<u64>,
    bulk_port: Option<u16>,
    /// An injected control-plane partition (`Fault::ControlPartition`): nothing is heard or said until then.
    deaf_until: Option<Instant>,
    pending: Option<PendingRound>,
    last_contact: Instant,
    finished: bool,
    evaluator: Option<ActorRef<SiteEvaluatorMsg>>,
    eval_restarts: RestartTracker,
    /// The round being evaluated and its weights (handed to a restarted evaluator again).
    eval_job: Option<(u64, Weights)>,
    /// The announced round's secure aggregation, when it has one.
    secure: Option<secure::SiteSecure>,
}

impl SiteState {
    fn send(&self, frame: ToServer) {
        if self.deaf() {
            tracing::debug!("control link cut (injected partition): frame not sent");
            return;
        }
        self.link.send(frame);
    }

    /// Tells the server this site cannot contribute to round `round`, and why.
    fn out_of_round(&self, round: u64, reason: String) {
        self.send(ToServer::OutOfRound { site_id: self.args.site_id, generation: self.generation(), round, reason });
    }

    /// Whether an injected control-plane partition is in force.
    fn deaf(&self) -> bool {
        self.deaf_until.is_some_and(|t| Instant::now() < t)
    }

    /// The generation frames are sent under: the current admission's (or the last one, between admissions).
    fn generation(&self) -> u64 {
        self.generation.or(self.held).unwrap_or(0)
    }

    /// Hands the current job (if any) to the trainer, with whatever fault the plan injects into this attempt.
    fn dispatch(&mut self, me: &ActorRef<SiteMsg>) -> Result<(), ActorProcessingErr> {
        let (Some(trainer), Some(job)) = (&self.trainer, self.job.as_mut()) else { return Ok(()) };
        job.fault = self.args.faults.job_fault(job.round, job.batch_size);
        if job.fault != InjectedFault::None {
            tracing::warn!(round = job.round, fault = ?job.fault, "injecting a fault into this job");
        }
        trainer.cast(TrainerMsg::Train { job: job.clone(), reply_to: me.clone() })?;
        Ok(())
    }

    fn bulk_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.args.server_addr.ip(), port)
    }

    /// Fetches the round's global weights on the bulk plane (off this actor), then `done(round, result)` (a
    /// `SiteMsg::GlobalFetched` for training, `SiteMsg::EvalFetched` for an evaluation).
    fn fetch(
        &self,
        me: &ActorRef<SiteMsg>,
        round: u64,
        blob: BlobRef,
        done: fn(u64, Result<Weights, String>) -> SiteMsg,
    ) {
        let Some(token) = self.token else {
            tracing::warn!(round, "asked for a round before admission; waiting for the server to re-send");
            return;
        };
        let (me, opts, addr, site_id, metrics) = (
            me.clone(),
            self.args.bulk.clone(),
            self.bulk_addr(blob.port),
            self.args.site_id,
            self.args.metrics.clone(),
        );
        tokio::spawn(async move {
            let result = match bulk::download(addr, &opts, site_id, token, blob.key).await {
                Ok(bytes) => {
                    metrics.bytes_received(bytes.len() as u64);
                    tokio::task::spawn_blocking(move || decode_global(&bytes, &blob))
                        .await
                        .unwrap_or_else(|e| Err(format!("decoding the global weights failed: {e}")))
                }
                Err(e) => Err(e.to_string()),
            };
            let _ = me.cast(done(round, result));
        });
    }

    /// Keeps the finished update on disk (when `global_sha256` is given), then uploads it (off this actor).
    fn upload(&mut self, me: &ActorRef<SiteMsg>, meta: UpdateMeta, update: Weights, global_sha256: Option<String>) {
        let round = meta.round;
        let Some((uploader, generation)) = Uploader::of(self, me) else {
            tracing::warn!(round, "no admission token or bulk endpoint yet; the update waits for the round's resend");
            return;
        };
        let mut meta = meta;
        meta.generation = generation;
        let (me, store) = (me.clone(), self.kept_store());
        // Injected bad updates (tests, chaos) corrupt what is sent, never what is kept on disk: a re-sent update is
        // the real one.
        let corruption = self.args.faults.bad_update(round);
        tokio::spawn(async move {
            // Upload first, keep on disk after: the copy on disk only serves a re-send after a restart, so it must
            // not delay the update (writing a model with fsync takes as long as sending it).
            let prepared = tokio::task::spawn_blocking(move || -> Result<_, String> {
                let clean = meta.encode()?;
                // One encoding serves the upload and the copy on disk (the server ignores the part metadata).
                let kept = Arc::new(SiteStore::encode_update(meta.round, &update).map_err(|e| e.to_string())?);
                let (claimed, meta_bytes, body) = match corruption {
                    None => (meta.round, clean.clone(), kept.clone()),
                    Some(what) => {
                        tracing::warn!(round = meta.round, ?what, "injecting a bad update");
                        let mut bad = update;
                        let mut bad_meta = meta.clone();
                        bad_meta.round = faults::corrupt(&mut bad, meta.round, what);
                        let body = bad.to_safetensors(None).map_err(|e| e.to_string())?;
                        (bad_meta.round, bad_meta.encode()?, Arc::new(body))
                    }
                };
                Ok((claimed, meta_bytes, body, clean, kept))
            })
            .await
            .unwrap_or_else(|e| Err(format!("encoding the update failed: {e}")));
            let (result, keep) = match prepared {
                // The upload names the round the metadata claims (a stale-round injection claims an older one).
                Ok((claimed, meta_bytes, body, clean, kept)) => {
                    (uploader.send(claimed, &meta_bytes, &body).await, Some((clean, kept)))
                }
                Err(e) => (Err(format!("cannot encode the update: {e}")), None),
            };
            let _ = me.cast(SiteMsg::Uploaded { round, result });
            if let (Some(store), Some(sha), Some((clean, kept))) = (store, global_sha256, keep) {
                let f = Finished { round, global_sha256: sha, meta_hex: hex::encode(clean) };
                let saved = tokio::task::spawn_blocking(move || store.save_finished_encoded(&f, &kept)).await;
                if let Ok(Err(e)) = saved {
                    tracing::warn!(round, error = %e, "cannot keep the finished update on disk");
                }
            }
        });
    }

    /// Where finished updates are kept, unless the configuration says not to keep them.
    fn kept_store(&self) -> Option<SiteStore> {
        self.args.store.clone().filter(|_| self.args.keep_finished)
    }

    fn hello(&self) -> ToServer {
        ToServer::Hello(SiteHello {
            protocol: self.args.protocol,
            site_id: self.args.site_id,
            instance: self.args.instance,
            held: self.held,
            local_state: self.args.local_state,
            num_samples: self.args.num_samples,
            class_counts: self.args.class_counts.clone(),
        })
    }

    /// Hands the evaluation job (if any) to the site's evaluator.
    fn dispatch_eval(&mut self, me: &ActorRef<SiteMsg>) {
        let (Some(ev), Some((round, weights))) = (&self.evaluator, &self.eval_job) else { return };
        let fault = self.args.faults.eval_fault(*round);
        if fault != InjectedFault::None {
            tracing::warn!(round, ?fault, "injecting a fault into the site's evaluator");
        }
        let msg = SiteEvaluatorMsg::Evaluate { round: *round, weights: weights.clone(), fault, reply_to: me.clone() };
        if let Err(e) = ev.cast(msg) {
            tracing::warn!(round, error = %e, "cannot reach the site's evaluator");
        }
    }

    fn send_evaluated(&self, round: u64, result: Result<crate::federation::evaluation::SiteEval, String>) {
        match &result {
            Ok(e) => {
                tracing::info!(round, fd = e.frechet_distance, val_samples = e.val_samples, "round evaluated here")
            }
            Err(reason) => tracing::warn!(round, %reason, "cannot evaluate the round here"),
        }
        self.send(ToServer::Evaluated { site_id: self.args.site_id, generation: self.generation(), round, result });
    }

    /// Adopts the remote server actor if one is in the server group.
    fn find_server(&mut self) {
        if self.link.find_server() {
            self.say_hello();
        }
    }

    fn say_hello(&self) {
        tracing::info!(site = self.args.site_id, "found the server; saying hello");
        self.send(self.hello());
    }
}

impl Actor for SiteActor {
    type Msg = SiteMsg;
    type State = SiteState;
    type Arguments = SiteArgs;

    async fn pre_start(&self, me: ActorRef<SiteMsg>, args: SiteArgs) -> Result<SiteState, ActorProcessingErr> {
        pg::join(SITES_GROUP.to_string(), vec![me.get_cell()]);
        pg::monitor(SERVER_GROUP.to_string(), me.get_cell());
        let trainer = spawn_trainer(&me, &args.trainer).await?;
        let events = me.clone();
        cluster::subscribe(&args.node, &format!("site-{}", args.site_id), move |ev| {
            let _ = events.cast(SiteMsg::Node(ev));
        });
        me.cast(SiteMsg::Connect)?;
        if let Some(limit) = args.give_up {
            me.send_interval((limit / 4).max(Duration::from_millis(100)), || SiteMsg::GiveUpCheck);
        }
        let restarts = RestartTracker::new(args.restart_policy.clone(), u64::from(args.site_id));
        let eval_restarts = RestartTracker::new(args.restart_policy.clone(), u64::from(args.site_id) ^ 0xe7a1);
        let evaluator = spawn_configured_child(SiteEvaluatorActor, &args.evaluator, me.get_cell()).await?;
        Ok(SiteState {
            evaluator,
            eval_restarts,
            eval_job: None,
            link: ServerLink::new(args.node.clone(), args.security.clone(), args.server_addr, args.reconnect),
            args,
            trainer: Some(trainer),
            job: None,
            restarts,
            restarts_this_job: 0,
            oom_retries: 0,
            token: None,
            generation: None,
            held: None,
            bulk_port: None,
            deaf_until: None,
            pending: None,
            last_contact: Instant::now(),
            finished: false,
            secure: None,
        })
    }

    async fn handle(&self, me: ActorRef<SiteMsg>, msg: SiteMsg, st: &mut SiteState) -> Result<(), ActorProcessingErr> {
        // Every log line while handling a message carries the round (and site): JSON logs filter by them.
        let span = tracing::info_span!(
            "site",
            site_id = st.args.site_id,
            round = st.job.as_ref().map(|j| j.round).or(st.pending.as_ref().map(|p| p.round))
        );
        dispatch(me, msg, st).instrument(span).await
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<SiteMsg>,
        evt: SupervisionEvent,
        st: &mut SiteState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) if is_child(&st.trainer, &cell) => {
                tracing::warn!(error = %err, "trainer failed");
                st.trainer = None;
                restart_or_escalate(&me, st, err.to_string());
            }
            SupervisionEvent::ActorTerminated(cell, _, _) if is_child(&st.trainer, &cell) => {
                st.trainer = None;
                me.send_after(st.args.reconnect, || SiteMsg::RestartTrainer);
            }
            SupervisionEvent::ActorFailed(cell, err) if is_child(&st.evaluator, &cell) => {
                tracing::warn!(error = %err, "site evaluator failed");
                st.evaluator = None;
                match st.eval_restarts.on_failure(Instant::now()) {
                    Decision::Restart { attempt, delay } => {
                        tracing::warn!(attempt, ?delay, "restarting the site evaluator");
                        me.send_after(delay, || SiteMsg::RestartEvaluator);
                    }
                    Decision::Escalate { failures_in_window } => {
                        // Past the budget this site stops evaluating (training goes on); the server hears why.
                        let reason = format!("the site's evaluator failed {failures_in_window} times: {err}");
                        tracing::error!(%reason, "federated evaluation is off at this site");
                        st.args.evaluator = None;
                        if let Some((round, _)) = st.eval_job.take() {
                            st.send_evaluated(round, Err(reason));
                        }
                    }
                }
            }
            SupervisionEvent::ProcessGroupChanged(change) if change.get_group() == SERVER_GROUP => match change {
                pg::GroupChangeMessage::Join(..) => st.find_server(),
                pg::GroupChangeMessage::Leave(_, _, cells) => st.link.left(&cells),
            },
            _ => {}
        }
        Ok(())
    }
}

/// Checks a downloaded blob against what the `Train` frame announced and decodes it.
fn decode_global(bytes: &[u8], blob: &BlobRef) -> Result<Weights, String> {
    if bytes.len() as u64 != blob.len {
        return Err(format!("global weights are {} bytes, the server announced {}", bytes.len(), blob.len));
    }
    let sha = hex::encode(Sha256::digest(bytes));
    if sha != blob.sha256 {
        return Err(format!("global weights have SHA-256 {sha}, the server announced {}", blob.sha256));
    }
    Weights::from_safetensors(bytes).map(|(w, _)| w).map_err(|e| format!("undecodable global weights: {e}"))
}

async fn dispatch(me: ActorRef<SiteMsg>, msg: SiteMsg, st: &mut SiteState) -> Result<(), ActorProcessingErr> {
    if matches!(msg, SiteMsg::FromServer(_)) && st.deaf() {
        tracing::debug!("control link cut (injected partition): frame from the server dropped");
        return Ok(());
    }
    match msg {
        SiteMsg::Connect => match st.link.connect().await {
            Connect::Wait => {}
            Connect::RetryIn(delay) => {
                me.send_after(delay, || SiteMsg::Connect);
            }
            Connect::GiveUp(reason) => {
                set_exit(&st.args.exit, Err(reason.clone()));
                me.stop(Some(reason));
            }
        },
        SiteMsg::Node(NodeEvent::Ready { peer, .. }) => {
            tracing::info!(%peer, "session ready");
            st.last_contact = Instant::now();
            if st.link.ready() {
                st.say_hello();
            }
        }
        SiteMsg::Node(NodeEvent::Disconnected { peer, .. }) => {
            tracing::warn!(%peer, "lost the server; reconnecting");
            st.job = None;
            st.pending = None;
            st.token = None;
            st.generation = None;
            st.eval_job = None;
            if let Some(delay) = st.link.lost() {
                me.send_after(delay, || SiteMsg::Connect);
            }
        }
        SiteMsg::FromServer(Ok(ToSite::Welcome { protocol, token, generation })) => {
            st.last_contact = Instant::now();
            if protocol != st.args.protocol {
                tracing::error!(protocol, "server speaks another protocol version");
                return Ok(());
            }
            tracing::info!(site = st.args.site_id, generation, "admitted by the server");
            st.token = Some(token);
            st.generation = Some(generation);
            st.held = Some(generation);
        }
        SiteMsg::FromServer(Ok(ToSite::SecAgg { round, attempt, stage })) => {
            st.last_contact = Instant::now();
            secure::on_stage(&me, st, round, attempt, stage)?
        }
        SiteMsg::Masked { round, attempt, protocol, meta, result } => {
            secure::on_masked(&me, st, round, attempt, protocol, meta, result)
        }
        SiteMsg::FromServer(Ok(ToSite::Train { protocol, round, local_steps, batch_size, hints, weights, secure })) => {
            if secure::begin(st, round, secure) {
                on_train(&me, st, protocol, round, local_steps, batch_size, hints, weights)
            }
        }
        SiteMsg::FromServer(Ok(ToSite::Evaluate { protocol, round, weights })) => {
            st.last_contact = Instant::now();
            if protocol != st.args.protocol {
                tracing::error!(protocol, "server speaks another protocol version");
                return Ok(());
            }
            if st.args.evaluator.is_none() {
                st.send_evaluated(round, Err("this site holds no validation split to evaluate on".into()));
                return Ok(());
            }
            st.fetch(&me, round, weights, |round, result| SiteMsg::EvalFetched { round, result });
        }
        SiteMsg::EvalFetched { round, result } => match result {
            Ok(weights) => {
                // A newer request replaces an older one still waiting (the server has moved on from it).
                if let Some((old, _)) = st.eval_job.replace((round, weights)) {
                    st.send_evaluated(old, Err(format!("superseded by the evaluation of round {round}")));
                }
                st.dispatch_eval(&me);
            }
            Err(reason) => st.send_evaluated(round, Err(format!("cannot fetch the weights: {reason}"))),
        },
        SiteMsg::LocalEvaluated { round, result } => {
            if st.eval_job.as_ref().map(|j| j.0) == Some(round) {
                st.eval_job = None;
                st.send_evaluated(round, result);
            }
        }
        SiteMsg::RestartEvaluator => {
            st.evaluator = spawn_configured_child(SiteEvaluatorActor, &st.args.evaluator, me.get_cell()).await?;
            st.dispatch_eval(&me);
        }
        SiteMsg::GlobalFetched { round, result } => on_global_fetched(&me, st, round, result)?,
        SiteMsg::Uploaded { round, result } => match result {
            Ok(()) => {
                tracing::info!(round, "update delivered");
                st.args.faults.exit_at(round, crate::faults::ExitPoint::AfterUpload);
            }
            Err(reason) => tracing::warn!(round, %reason, "update not delivered"),
        },
        SiteMsg::GiveUpCheck => on_give_up_check(&me, st),
        SiteMsg::FromServer(Ok(ToSite::Ping { seq })) => {
            st.last_contact = Instant::now();
            st.send(ToServer::Pong { site_id: st.args.site_id, generation: st.generation(), seq });
        }
        SiteMsg::FromServer(Ok(ToSite::Refused { reason })) => {
            tracing::error!(%reason, "the server refused this site");
            set_exit(&st.args.exit, Err(format!("refused by the server: {reason}")));
            me.stop(Some(reason));
        }
        SiteMsg::FromServer(Ok(ToSite::Shutdown { reason })) => on_shutdown(&me, st, reason),
        SiteMsg::FromServer(Ok(ToSite::Fenced { reason })) | SiteMsg::FencedTransfer { reason } => {
            on_fenced(&me, st, reason)
        }
        SiteMsg::FromServer(Err(e)) => tracing::warn!(error = %e, "dropped a malformed frame from the server"),
        SiteMsg::TrainerDone(Ok(result)) => on_trained(&me, st, result),
        SiteMsg::TrainerDone(Err(failure)) => on_job_failure(&me, st, failure)?,
        SiteMsg::RestartTrainer => {
            st.trainer = Some(spawn_trainer(&me, &st.args.trainer).await?);
            st.dispatch(&me)?;
        }
    }
    Ok(())
}

/// A round was announced: re-send an update finished before a restart, or fetch the global weights.
#[allow(clippy::too_many_arguments)]
fn on_train(
    me: &ActorRef<SiteMsg>,
    st: &mut SiteState,
    protocol: u32,
    round: u64,
    local_steps: u32,
    batch_size: u32,
    hints: SiteHints,
    weights: BlobRef,
) {
    st.last_contact = Instant::now();
    if protocol != st.args.protocol {
        tracing::error!(protocol, "server speaks another protocol version");
        return;
    }
    tracing::info!(round, local_steps, bytes = weights.len, "round announced; fetching the global weights");
    st.job = None;
    st.bulk_port = Some(weights.port);
    st.pending = Some(PendingRound { round, local_steps, batch_size, hints, sha256: weights.sha256.clone() });
    // A secure round's masked input is made with this attempt's keys: a finished update is masked anew, not re-sent.
    let finished =
        st.args.store.as_ref().filter(|_| st.secure.is_none()).and_then(|s| s.load_finished(round, &weights.sha256));
    if let Some((finished, update)) = finished {
        // Trained before a restart (ours or the server's): send the same update again.
        match hex::decode(&finished.meta_hex).map_err(|e| e.to_string()).and_then(|b| UpdateMeta::decode(&b)) {
            Ok(mut meta) => {
                tracing::info!(round, "re-sending the update finished before a restart");
                st.pending = None;
                meta.site.from_local_checkpoint = true;
                st.upload(me, meta, update, None);
                return;
            }
            Err(e) => tracing::warn!(round, error = %e, "ignoring an unreadable finished update"),
        }
    }
    st.fetch(me, round, weights, |round, result| SiteMsg::GlobalFetched { round, result });
    if let Some(cut) = st.args.faults.control_partition(round) {
        tracing::warn!(round, secs = cut.as_secs_f64(), "injecting a control-plane partition");
        st.deaf_until = Some(Instant::now() + cut);
    }
}

/// The round's global weights arrived (or could not be fetched): hand the job to the trainer, or drop out.
fn on_global_fetched(
    me: &ActorRef<SiteMsg>,
    st: &mut SiteState,
    round: u64,
    result: Result<Weights, String>,
) -> Result<(), ActorProcessingErr> {
    let Some(p) = st.pending.take_if(|p| p.round == round) else { return Ok(()) };
    match result {
        Ok(global) => {
            st.job = Some(LocalJob {
                round,
                global,
                local_steps: p.local_steps,
                batch_size: p.batch_size,
                hints: p.hints,
                global_sha256: p.sha256,
                fault: InjectedFault::None,
            });
            st.restarts_this_job = 0;
            st.oom_retries = 0;
            st.dispatch(me)?;
        }
        Err(reason) => {
            tracing::error!(round, %reason, "cannot fetch the global weights");
            st.out_of_round(round, reason);
        }
    }
    Ok(())
}

/// The trainer finished the round's job: upload the update with what the site reports about its round.
fn on_trained(me: &ActorRef<SiteMsg>, st: &mut SiteState, result: LocalResult) {
    let Some(job) = st.job.take() else { return };
    if job.round != result.round {
        return;
    }
    tracing::info!(
        round = job.round,
        d_loss = result.losses.d_loss,
        g_loss = result.losses.g_loss,
        secs = result.train_secs,
        resumed_from_step = result.resumed_from_step,
        "round trained"
    );
    st.args.metrics.round_completed(job.round, result.train_secs);
    st.args.metrics.gan_losses(result.losses.d_loss, result.losses.g_loss);
    let meta = UpdateMeta {
        protocol: st.args.protocol,
        round: job.round,
        // Set when it is sent (the admission it goes under).
        generation: 0,
        site: SiteRound {
            site_id: st.args.site_id,
            num_samples: st.args.num_samples,
            losses: result.losses,
            steps: result.steps,
            train_secs: result.train_secs,
            trainer_restarts: st.restarts_this_job,
            batch_size: job.batch_size,
            oom_retries: st.oom_retries,
            resumed_from_step: result.resumed_from_step,
            from_local_checkpoint: false,
        },
        masked: None,
    };
    let weights = match job.hints.dp_clip_norm {
        // Differential privacy, clipping here: the update leaves this site within C of the round's global weights.
        Some(c) => match crate::federation::strategy::clip_update(result.weights, &job.global, c) {
            Ok((w, norm)) => {
                tracing::debug!(round = job.round, norm, clip_norm = c, "update clipped for differential privacy");
                w
            }
            Err(e) => {
                tracing::error!(round = job.round, error = %e, "cannot clip the update; it is not sent");
                st.out_of_round(job.round, format!("cannot clip the update for differential privacy: {e}"));
                return;
            }
        },
        None => result.weights,
    };
    let Some((meta, weights)) = secure::on_trained(me, st, meta, weights, job.global) else { return };
    st.args.faults.exit_at(meta.round, crate::faults::ExitPoint::BeforeUpload);
    st.upload(me, meta, weights, Some(job.global_sha256));
}
