//! The server role: owns the global model and the round loop. Each round it broadcasts the global weights to the
//! sites that said hello, validates and folds in their updates through the configured `Strategy`, closes the round
//! when every participant answered or the deadline passed with quorum, writes a checkpoint, asks its evaluator for
//! a quality number and a sample grid, and records the round in the report. Membership comes from the cluster's
//! process groups (a killed site leaves at once) and from heartbeats (a hung or partitioned site stops answering
//! pings and is declared lost within two periods; when it answers again it is back). The quorum rules live in the
//! pure `federation::round` module.
//!
//! Weights move on the bulk plane (`cluster::bulk`): the round's global weights are published once and fetched by
//! every participant; updates arrive as uploads, at most a bounded number held at once. The control connection
//! carries only small frames, so heartbeats are never stuck behind a model.
//!
//! Updates are decoded, validated and folded off this mailbox by the [`aggregator`] (the blocking pool and a thread
//! that owns the strategy), and the round's aggregation runs there too; their answers come back as messages, and
//! `federation::round` holds a round open while an update that arrived in time is still being checked. `/pulse`
//! times a round trip through this mailbox, so "never blocked by a model" is measurable (tests/federation.rs).
//!
//! Two children do the other slow work: the checkpoint writer (a round counts as completed
//! only once it is on disk) and the evaluator (its score is added to the round's record when it arrives). Both
//! are supervised under the restart policy: a dead child is restarted after a backoff; past the budget a failing
//! writer ends the run with a clear error (rounds that cannot be made durable are not reported as done) and a
//! failing evaluator is switched off with an event in the report.
//!
//! Extension roles (`crate::roles`) join the `histofed.roles` group and say `RoleHello`; the server admits them
//! as download-only readers of the bulk plane and, each time a round becomes durable, casts them a `RoundEvent`
//! with the round's summary and its global weights, which stay downloadable for the last [`ROLE_BLOBS_KEPT`]
//! rounds. Their `RoleReport`s are added to the round's record (report.json `roles`) and to `/metrics`, whenever
//! they arrive. At the end of a run the server waits (bounded, like for the last evaluation) for the roles'
//! reports on the last round before it exits, so the last round's weights are still there to be fetched. Nothing
//! here knows what a role does.
//!
//! Federated evaluation (`evaluation.at_sites`): on the rounds the evaluator runs its suite (and always the last),
//! the durable round's weights are retained on the bulk plane and every member site is asked to score them on its
//! own validation split (`ToSite::Evaluate`). Answers are checked like updates (`SiteEval::check`) and folded
//! (`federation::evaluation::aggregate`, sample-weighted) into the round's record once every site asked has answered or
//! been lost; the run's end waits for them (bounded) like for the last evaluation.
//!
//! Files by concern: [`state`], [`rounds`], [`ingest`], [`aggregator`], [`persistence`], [`evaluation`], [`roles`]; this file is the
//! actor: start-up, supervision events and the message dispatch, each arm a call into one of them.

mod admission;
mod aggregator;
mod evaluation;
mod ingest;
mod liveness;
mod nodeloss;
mod persistence;
pub mod resume;
mod roles;
mod rounds;
mod secure;
mod secure_state;
mod state;

pub use aggregator::STRATEGY_STATE;
pub use nodeloss::Remediation;
pub use state::{round_summary, ServerState, CHECKPOINT_PARTS, ROLE_BLOBS_KEPT, ROLE_BLOB_KEY, ROLE_READER_BASE};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use ractor::{pg, Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::Instrument;

use crate::actors::evaluator::{EvaluatorActor, EvaluatorArgs};
use crate::actors::messages::ServerChild;
use crate::actors::messages::{
    role_from_actor_name, site_actor_name, site_id_from_name, ServerMsg, SiteHello, SiteMsg, ToServer, ToSite,
    ROLES_GROUP, SERVER_GROUP, SITES_GROUP,
};
use crate::actors::restart_policy::{Decision, RestartPolicy, RestartTracker};
use crate::actors::{is_child, spawn_configured_child, Exit};
use crate::cluster::bulk::{BulkLimits, BulkOp, BulkServer, BulkTls, Inbound, UploadSink};
use crate::config::Config;
use crate::federation::checkpoint::CheckpointStore;
use crate::federation::fencing::{Fencing, FrameCheck, HelloDecision};
use crate::federation::strategy::Strategy;
use crate::federation::validate::{Refused, ValidationPolicy};
use crate::federation::weights::Weights;
use crate::observability::{Metrics, Pulse, PulseReply, Readiness, SiteEvent, StatusHandle};
use crate::records::RunReport;
use admission::{check_site_hello, refuse_site, HelloChecks};
use evaluation::*;
use ingest::*;
use liveness::{answer_limit, lost_sites, CHECKS_PER_PERIOD};
use persistence::*;
use roles::*;
use rounds::*;
use state::*;

pub struct ServerActor;

pub struct ServerArgs {
    pub config: Config,
    /// This process's cluster node, to check which certificate a site's session presented.
    pub node: ActorRef<ractor_cluster::NodeServerMessage>,
    pub mtls: bool,
    pub out_dir: PathBuf,
    pub initial: Weights,
    pub completed_rounds: u64,
    pub report: RunReport,
    pub store: CheckpointStore,
    pub strategy: Box<dyn Strategy>,
    pub evaluator: Option<EvaluatorArgs>,
    pub exit: Exit,
    /// Where the bulk plane listens (port 0 picks one; sites learn it from each `Train`).
    pub bulk_listen: SocketAddr,
    pub bulk_tls: BulkTls,
    pub bulk_limits: BulkLimits,
    /// Restart policy of the server's children (evaluator, checkpoint writer) and of checkpoint-write retries.
    pub restart_policy: RestartPolicy,
    /// Shared with the HTTP endpoint: what `/metrics`, `/status` and `/readyz` show.
    pub obs: Observed,
    /// After a successful run, stay up and tell every site that (re)joins that the run is over (under a
    /// Deployment/StatefulSet, which restart whatever exits).
    pub stay_up: bool,
    /// Force-delete site pods stranded on a dead node (Kubernetes, `k8s.remediate_lost_nodes`).
    pub remediation: Option<Remediation>,
}

/// The handles the server keeps current for its HTTP endpoint (cheap clones of shared state).
#[derive(Clone)]
pub struct Observed {
    pub metrics: Metrics,
    pub status: StatusHandle,
    pub readiness: Readiness,
    /// `/pulse`: the actor installs how to ask it (a bounded round trip through its mailbox).
    pub pulse: Pulse,
}

impl Actor for ServerActor {
    type Msg = ServerMsg;
    type State = ServerState;
    type Arguments = ServerArgs;

    async fn pre_start(&self, me: ActorRef<ServerMsg>, a: ServerArgs) -> Result<ServerState, ActorProcessingErr> {
        pg::join(SERVER_GROUP.to_string(), vec![me.get_cell()]);
        pg::monitor(SITES_GROUP.to_string(), me.get_cell());
        pg::monitor(ROLES_GROUP.to_string(), me.get_cell());
        let evaluator = spawn_configured_child(EvaluatorActor, &a.evaluator, me.get_cell()).await?;
        let writer = spawn_writer(&me, &a.store).await?;
        let uploads = me.clone();
        let sink: UploadSink = Box::new(move |inbound| {
            let msg = match inbound {
                Inbound::Upload(up) => ServerMsg::Upload(up),
                Inbound::Fenced { site_id, token, op } => ServerMsg::FencedTransfer { site_id, token, op },
            };
            uploads.cast(msg).map_err(|e| e.to_string())
        });
        let bulk = BulkServer::start(a.bulk_listen, a.bulk_tls, a.bulk_limits, sink).await?;
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>7} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let rounds = multi.add(ProgressBar::new(a.config.federation.rounds));
        rounds.set_style(style.clone());
        rounds.set_prefix("rounds");
        rounds.set_position(a.completed_rounds);
        let sites = multi.add(ProgressBar::new(u64::from(a.config.federation.sites)));
        sites.set_style(style);
        sites.set_prefix("sites");
        sites.set_message("joining");
        me.send_after(Duration::from_secs_f64(a.config.federation.join_timeout_secs), || ServerMsg::JoinTimeout);
        let check_every = Duration::from_secs_f64(a.config.federation.heartbeat_secs / CHECKS_PER_PERIOD as f64);
        me.send_interval(check_every, || ServerMsg::Heartbeat { at: Instant::now() });
        a.obs.metrics.set_rounds_configured(a.config.federation.rounds);
        a.obs.metrics.set_sites_expected(a.config.federation.sites as usize);
        a.obs.status.update(|s| {
            s.role = "server".into();
            s.round = a.completed_rounds;
            s.rounds_configured = a.config.federation.rounds;
            s.expected = (0..a.config.federation.sites).map(site_actor_name).collect();
            s.phase = "waiting for sites".into();
        });
        let global = Arc::new(a.initial);
        let policy = ValidationPolicy { max_update_norm: a.config.federation.max_update_norm, max_samples: None };
        let aggregator = aggregator::Aggregator::spawn(a.strategy, global.clone(), policy)?;
        // The starting global's blob, encoded once off the runtime's workers; every round then reuses the bytes the
        // aggregator encodes.
        let (round, to_encode) = (a.completed_rounds, global.clone());
        let round_blob = tokio::task::spawn_blocking(move || aggregator::encode(&to_encode))
            .await?
            .map(|(bytes, sha256)| RoundBlob { round, bytes, sha256 })?;
        let probe = me.clone();
        a.obs.pulse.install(move || {
            let probe = probe.clone();
            Box::pin(async move { ractor::call!(probe, ServerMsg::Pulse).ok() })
        });
        a.obs.readiness.set_ready();
        // A resumed run's privacy ledger is in its round records: /metrics shows its ε from the start.
        if let Some(last) = a.report.rounds.iter().rev().find_map(|r| r.privacy) {
            a.obs.metrics.dp_epsilon(last.epsilon);
        }
        Ok(ServerState {
            heartbeat_ticks: 0,
            ping_seq: 0,
            grace_armed: false,
            process_start: Instant::now(),
            completed: a.completed_rounds,
            global,
            out_dir: a.out_dir,
            attempt: 0,
            current: None,
            round_started: Instant::now(),
            contributors: Vec::new(),
            rejected: Vec::new(),
            aggregate_secs: 0.0,
            sites: BTreeMap::new(),
            waiting_to_start: true,
            join_deadlines_missed: 0,
            aggregator,
            closing: None,
            saved_early: None,
            report: a.report,
            evaluator,
            evaluator_args: a.evaluator,
            evaluator_restarts: RestartTracker::new(a.restart_policy.clone(), 1),
            writer: Some(writer),
            writer_store: a.store,
            writer_restarts: RestartTracker::new(a.restart_policy, 2),
            persisting: None,
            pending_eval: BTreeSet::new(),
            finishing: None,
            bulk,
            bulk_seen: (0, 0),
            obs: a.obs,
            stay_up: a.stay_up,
            finished: None,
            fencing: Fencing::new(now_ms() / 1000),
            cluster: nodeloss::ClusterView::new(a.remediation),
            zombies_seen: BTreeSet::new(),
            dp: a.config.privacy()?,
            secagg: a.config.secagg()?,
            secure: None,
            blob: None,
            roles: BTreeMap::new(),
            next_reader: ROLE_READER_BASE,
            round_blob: Some(round_blob),
            last_event: None,
            pending_roles: BTreeSet::new(),
            site_evals: BTreeMap::new(),
            num_classes: a.config.model_config().map(|m| m.num_classes as usize)?,
            progress: Progress { rounds, sites },
            started: Instant::now(),
            exit: a.exit,
            node: a.node,
            mtls: a.mtls,
            cfg: a.config,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<ServerMsg>,
        msg: ServerMsg,
        st: &mut ServerState,
    ) -> Result<(), ActorProcessingErr> {
        // Every log line while handling a message carries the round (and site): JSON logs filter by them.
        let span =
            tracing::info_span!("server", round = st.current.as_ref().map(|c| c.round).unwrap_or(st.completed + 1));
        dispatch(me, msg, st).instrument(span).await
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<ServerMsg>,
        evt: SupervisionEvent,
        st: &mut ServerState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ProcessGroupChanged(pg::GroupChangeMessage::Leave(_, group, cells))
                if group == SITES_GROUP =>
            {
                for cell in cells {
                    let Some(id) = cell.get_name().as_deref().and_then(site_id_from_name) else { continue };
                    if st.sites.get(&id).map(|s| s.actor.get_id()) == Some(cell.get_id()) {
                        st.lose(id, "site-disconnected", "left the cluster (connection closed)".into());
                    }
                }
                check_round(&me, st)?;
            }
            SupervisionEvent::ProcessGroupChanged(pg::GroupChangeMessage::Leave(_, group, cells))
                if group == ROLES_GROUP =>
            {
                for cell in cells {
                    let Some(name) = cell.get_name().as_deref().and_then(role_from_actor_name).map(str::to_string)
                    else {
                        continue;
                    };
                    if st.roles.get(&name).map(|r| r.actor.get_id()) == Some(cell.get_id()) {
                        st.drop_role(&name, "left the cluster (connection closed)");
                        role_settled(&me, st, &name);
                    }
                }
            }
            SupervisionEvent::ActorFailed(cell, err) if is_child(&st.evaluator, &cell) => {
                st.evaluator = None;
                // Whatever it was scoring is lost; the round's record simply has no score.
                st.pending_eval.clear();
                match st.evaluator_restarts.on_failure(Instant::now()) {
                    Decision::Restart { attempt, delay } => {
                        tracing::error!(error = %err, attempt, ?delay, "evaluator failed; restarting it");
                        st.event(None, "evaluator-restarted", err.to_string());
                        me.send_after(delay, || ServerMsg::RestartChild(ServerChild::Evaluator));
                    }
                    Decision::Escalate { failures_in_window } => {
                        let detail = format!("failed {failures_in_window} times, last: {err}; evaluation is off");
                        tracing::error!(%detail, "evaluator restart budget exhausted");
                        st.event(None, "evaluator-gave-up", detail);
                        st.evaluator_args = None;
                    }
                }
                if let Some(outcome) = st.finishing.take() {
                    st.finish_run(&me, outcome);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) if is_child(&st.writer, &cell) => {
                st.writer = None;
                tracing::error!(error = %err, "checkpoint writer failed");
                writer_failed(&me, st, err.to_string());
            }
            _ => {}
        }
        Ok(())
    }
}

async fn dispatch(me: ActorRef<ServerMsg>, msg: ServerMsg, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    if let ServerMsg::FromSite(Ok(frame)) = &msg {
        if let Some((site_id, generation)) = frame.site_generation() {
            if !gate(st, site_id, generation, matches!(frame, ToServer::Pong { .. }))? {
                return Ok(());
            }
        }
    }
    match msg {
        ServerMsg::FromSite(Ok(ToServer::Hello(hello))) => on_hello(&me, st, hello).await?,
        ServerMsg::FencedTransfer { site_id, token, op } => on_fenced_transfer(st, site_id, token, op),
        ServerMsg::JoinTimeout => on_join_timeout(&me, st)?,
        ServerMsg::StartRound => start_round(&me, st)?,
        ServerMsg::Upload(up) => on_upload(&me, st, up),
        ServerMsg::Folded(f) => {
            on_folded(st, *f);
            check_round(&me, st)?;
        }
        ServerMsg::Aggregated(done) => on_aggregated(&me, st, *done)?,
        ServerMsg::Encoded { round, blob } => on_encoded(&me, st, round, blob).await?,
        ServerMsg::AggregatorGone => return Err(st.aggregator.death_reason().into()),
        ServerMsg::Pulse(reply) => {
            let _ = reply.send(PulseReply {
                round: st.current.as_ref().map(|c| c.round).unwrap_or(st.completed + 1),
                // Folds run only for the open round (it does not close while one is in check), and a closed round
                // waits in `closing` exactly while the aggregator works on it.
                updates_in_check: st.current.as_ref().map_or(0, |c| c.checking().len()),
                aggregating: st.closing.is_some(),
            });
        }
        ServerMsg::Saved { round, result } => on_saved(&me, st, round, result).await?,
        ServerMsg::Evaluated { round, result } => on_evaluated(&me, st, round, *result),
        ServerMsg::RestartChild(which) => restart_child(&me, st, which).await?,
        ServerMsg::Kube(ev) => nodeloss::on_kube(&me, st, ev)?,
        ServerMsg::Remediated(r) => nodeloss::on_remediated(st, r),
        ServerMsg::FinishNow => on_finish_now(&me, st),
        ServerMsg::FromSite(Ok(ToServer::RoleHello { protocol, role })) => on_role_hello(st, protocol, role).await?,
        ServerMsg::FromSite(Ok(ToServer::Evaluated { site_id, round, result, .. })) => {
            on_site_evaluated(&me, st, site_id, round, result)
        }
        ServerMsg::FromSite(Ok(ToServer::RoleReport { role, round, report })) => {
            on_role_report(&me, st, role, round, report)
        }
        ServerMsg::FromSite(Ok(ToServer::OutOfRound { site_id, round, reason, .. })) => {
            tracing::warn!(site_id, round, %reason, "site is out of the round");
            if st.current.as_ref().is_some_and(|c| c.round == round) {
                st.drop_from_round(site_id);
            }
            check_round(&me, st)?;
        }
        ServerMsg::FromSite(Ok(ToServer::SecAgg { site_id, round, attempt, stage, .. })) => {
            let after = secure::on_frame(&me, st, site_id, round, attempt, stage)?;
            after_secure(&me, st, after)?
        }
        ServerMsg::SecAggDeadline { round, attempt, stage } => {
            let after = secure::on_deadline(&me, st, round, attempt, stage)?;
            after_secure(&me, st, after)?
        }
        ServerMsg::Masked(m) => {
            let after = secure::on_masked(&me, st, *m)?;
            after_secure(&me, st, after)?
        }
        ServerMsg::Unmasked(u) => {
            let after = secure::on_unmasked(st, *u);
            after_secure(&me, st, after)?
        }
        ServerMsg::FromSite(Err(e)) => {
            st.obs.metrics.bad_frame();
            tracing::warn!(error = %e, "dropped a malformed frame");
            // A frame that does not decode is no update of any site: an event of the run, not a rejected update.
            st.event(None, "malformed-frame", e.to_string());
        }
        ServerMsg::FromSite(Ok(ToServer::Pong { site_id, seq, .. })) => on_pong(st, site_id, seq),
        ServerMsg::Heartbeat { .. } if st.finished.is_some() => {}
        ServerMsg::Heartbeat { at: now } => on_heartbeat(&me, st, now).await?,
        ServerMsg::GraceExpired { round, attempt } => close_round(&me, st, round, attempt, Closing::Grace)?,
        ServerMsg::RoundDeadline { round, attempt } => close_round(&me, st, round, attempt, Closing::Deadline)?,
    }
    // Decisions of the secure aggregation taken where no actor reference was at hand (a site lost).
    let after = secure::drain(&me, st)?;
    after_secure(&me, st, after)
}

/// Whether a site frame sent under admission `generation` goes on to its handler. The site's current admission's
/// frames do; a frame of a process the site was taken from is dropped and that process told to stop; a stale one
/// (an earlier admission of the current process) is dropped. A pong of the current process after it was declared
/// lost re-admits it (it answers again: a partition healed, a hung process woke up).
fn gate(st: &mut ServerState, site_id: u32, generation: u64, pong: bool) -> Result<bool, ActorProcessingErr> {
    match st.fencing.check(site_id, generation) {
        FrameCheck::Current(_) if st.sites.contains_key(&site_id) => Ok(true),
        FrameCheck::Current(adm) if pong => {
            let actor = ServerState::site_actor(site_id, adm.instance);
            if let Some(actor) = actor.filter(|_| st.report.site_classes.contains_key(&site_id)) {
                if let Some(adm) = st.fencing.readmit(site_id, rand::random()) {
                    st.admit(site_id, actor, adm)?;
                }
            }
            Ok(false)
        }
        FrameCheck::Current(_) => Ok(true),
        FrameCheck::Fenced { instance, current } => {
            tracing::warn!(site_id, generation, instance = format!("{instance:016x}"), "frame of a fenced process");
            // Once per process in the report (a zombie's pongs would repeat it every heartbeat).
            if st.zombies_seen.insert((site_id, instance)) {
                let detail = format!(
                    "a frame of process {instance:016x} (generation {generation}) refused: the site is held by \
                     process {:016x} (generation {})",
                    current.instance, current.generation
                );
                st.event(Some(site_id), "fenced-frame", detail);
            }
            st.tell_fenced(site_id, instance, current);
            Ok(false)
        }
        FrameCheck::Stale | FrameCheck::Unknown => Ok(false),
    }
}

/// The bulk plane refused a transfer made with a fenced token: count it (an upload is a rejected update), record
/// it, and tell that process again to stop.
fn on_fenced_transfer(st: &mut ServerState, site_id: u32, token: u64, op: BulkOp) {
    let instance = st.fencing.instance_of_token(site_id, token);
    let who = instance.map_or("an unknown process".to_string(), |i| format!("process {i:016x}"));
    let detail = format!("{op:?} by {who} refused: the site is held by another process");
    tracing::warn!(site_id, %detail, "fenced transfer");
    if op == BulkOp::Upload {
        st.obs.metrics.update_rejected(Refused::Fenced.label());
        st.rejected.push((site_id, detail.clone()));
    }
    st.event(Some(site_id), "fenced-transfer", detail);
    if let (Some(instance), Some(current)) = (instance, st.fencing.current(site_id)) {
        st.tell_fenced(site_id, instance, current);
    }
}

/// A site said hello: admitted (and the first round started once all are in), told the run is over, refused, or
/// fenced (another process holds the site more recently). A fresh process takes the site over from the one that
/// held it.
async fn on_hello(me: &ActorRef<ServerMsg>, st: &mut ServerState, h: SiteHello) -> Result<(), ActorProcessingErr> {
    let (site_id, instance) = (h.site_id, h.instance);
    let Some(actor) = ServerState::site_actor(site_id, instance) else {
        tracing::warn!(site_id, "hello from a site that is not in the sites group; ignored");
        return Ok(());
    };
    if let Some(reason) = &st.finished {
        let _ = actor.cast(SiteMsg::FromServer(Ok(ToSite::Shutdown { reason: reason.clone() })));
        return Ok(());
    }
    if let Err(refusal) = check_site_hello(HelloChecks::of(st), &actor, h.protocol, site_id).await {
        refuse_site(st, site_id, &actor, &refusal);
        return Ok(());
    }
    let admission = match st.fencing.hello(site_id, instance, h.held, rand::random()) {
        HelloDecision::Fenced { current } => {
            let reason = format!(
                "site {site_id} is held by a more recent process ({:016x}, generation {}); this process \
                 ({instance:016x}, last generation {}) is fenced and must stop",
                current.instance,
                current.generation,
                h.held.map_or("none".to_string(), |g| g.to_string())
            );
            tracing::error!(site_id, %reason, "refusing a fenced process");
            st.event(Some(site_id), "site-fenced", reason.clone());
            st.obs.metrics.site_event(SiteEvent::Fenced);
            let _ = actor.cast(SiteMsg::FromServer(Ok(ToSite::Fenced { reason })));
            return Ok(());
        }
        HelloDecision::Admit { admission, supersedes } => {
            if let Some(old) = supersedes {
                st.fence(site_id, old, admission);
            }
            admission
        }
    };
    let (num_samples, generation) = (h.num_samples, admission.generation);
    tracing::info!(site_id, num_samples, generation, instance = format!("{instance:016x}"), "site joined");
    // A new process for a site seen before (a restart, a replacement pod): say what it starts from.
    if h.held.is_none() && st.report.site_classes.contains_key(&site_id) {
        let detail = match h.local_state {
            None => format!(
                "process {instance:016x} has no local state (new or lost volume): it starts from the current global \
                 weights (round {})",
                st.completed
            ),
            Some(r) => format!("process {instance:016x} has local state of round {r}: it resumes from it if that round is the one open"),
        };
        st.event(Some(site_id), "site-process-start", detail);
    }
    st.sites.remove(&site_id);
    st.admit(site_id, actor, admission)?;
    st.report.site_classes.insert(site_id, h.class_counts);
    st.progress.sites.set_message(format!("{} joined", st.sites.len()));
    if st.waiting_to_start && st.sites.len() as u32 >= st.cfg.federation.sites {
        st.waiting_to_start = false;
        me.cast(ServerMsg::StartRound)?;
    }
    Ok(())
}

/// The join deadline passed: start with a quorum, wait again, or give up after `max_round_retries` deadlines.
fn on_join_timeout(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    if st.waiting_to_start {
        if st.sites.len() as u32 >= st.cfg.federation.min_sites {
            tracing::warn!(joined = st.sites.len(), "starting with a quorum of sites");
            st.waiting_to_start = false;
            me.cast(ServerMsg::StartRound)?;
        } else {
            st.join_deadlines_missed += 1;
            if st.join_deadlines_missed > st.cfg.federation.max_round_retries {
                let msg = format!(
                    "only {} of the {} sites needed joined in time",
                    st.sites.len(),
                    st.cfg.federation.min_sites
                );
                st.finish_run(me, Err(msg));
                return Ok(());
            }
            me.send_after(Duration::from_secs_f64(st.cfg.federation.join_timeout_secs), || ServerMsg::JoinTimeout);
        }
    }
    Ok(())
}

/// The bounded wait at the end of the run is over: finish without whatever has not come back.
fn on_finish_now(me: &ActorRef<ServerMsg>, st: &mut ServerState) {
    if let Some(outcome) = st.finishing.take() {
        if !st.pending_eval.is_empty() {
            tracing::warn!("the final evaluation did not come back in time; finishing without it");
        }
        if !st.pending_roles.is_empty() {
            let late: Vec<String> = std::mem::take(&mut st.pending_roles).into_iter().collect();
            tracing::warn!(roles = ?late, "roles did not report on the last round in time; finishing");
            st.event(None, "roles-late", late.join(", "));
        }
        st.pending_eval.clear();
        if !st.site_evals.is_empty() {
            tracing::warn!("sites did not all answer the last federated evaluation in time; finishing");
            st.settle_site_evals(true);
        }
        st.finish_run(me, outcome);
    }
}

/// A heartbeat answer of a member (the gate re-admitted a lost site that answers again): pings answered.
fn on_pong(st: &mut ServerState, site_id: u32, seq: u64) {
    if let Some(site) = st.sites.get_mut(&site_id) {
        for sent in site.pings.answered(seq) {
            st.obs.metrics.heartbeat_answered(sent.elapsed().as_secs_f64());
        }
    }
}

/// A heartbeat tick (enqueued at `now`): ping every member, lose the ones whose oldest ping is overdue.
async fn on_heartbeat(me: &ActorRef<ServerMsg>, st: &mut ServerState, now: Instant) -> Result<(), ActorProcessingErr> {
    st.heartbeat_ticks += 1;
    let period = st.cfg.federation.heartbeat_secs;
    st.ping_seq += 1;
    let seq = st.ping_seq;
    // A ping is stamped when it really leaves; the check below uses the tick's enqueue time. A server
    // that was blocked sends its pings late and then works through the ticks queued meanwhile: judged
    // by when they were enqueued, those ticks cannot blame a site for a ping that left after them.
    let sent = Instant::now();
    for site in st.sites.values_mut() {
        site.pings.sent(seq, sent);
        let _ = site.actor.cast(SiteMsg::FromServer(Ok(ToSite::Ping { seq })));
    }
    // (`now` is the tick's enqueue time; pings sent after it have waited 0.)
    let hung = lost_sites(st.sites.iter().map(|(id, s)| (*id, &s.pings)), now, answer_limit(period));
    for (id, waited) in hung {
        st.obs.metrics.heartbeat_missed();
        let detail = format!("no heartbeat answer for {:.2} s (period {period} s)", waited.as_secs_f64());
        st.lose(id, "site-unresponsive", detail);
    }
    nodeloss::remediate(me, st, now);
    // Sites lost since a federated evaluation was asked will not answer it.
    st.settle_site_evals(false);
    finish_if_settled(me, st);
    check_round(me, st)?;
    Ok(())
}

/// Why an open round stops waiting for absent sites.
enum Closing {
    /// Quorum was in and the grace period for stragglers passed.
    Grace,
    /// The round's deadline passed.
    Deadline,
}

/// The grace period or the deadline of attempt `attempt` of `round` passed: close it with quorum, retry it without;
/// updates still in check are waited for. A timer of an attempt that is over does nothing.
fn close_round(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    round: u64,
    attempt: u32,
    why: Closing,
) -> Result<(), ActorProcessingErr> {
    let Some(current) = st.current.as_mut().filter(|c| c.round == round && c.attempt == attempt) else {
        return Ok(());
    };
    let (received, in_check) = (current.received().len(), current.checking().len());
    match why {
        Closing::Grace => tracing::info!(round, "grace period over; closing the round with the updates in hand"),
        Closing::Deadline => tracing::warn!(round, attempt, received, in_check, "round deadline passed"),
    }
    current.close();
    check_round(me, st)
}
