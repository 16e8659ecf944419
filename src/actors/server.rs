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
//! Two children do the slow work so this mailbox keeps moving: the checkpoint writer (a round counts as completed
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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use ractor::{pg, Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::actors::checkpoint_writer::CheckpointWriter;
use crate::actors::evaluator::{EvaluatorActor, EvaluatorArgs};
use crate::actors::messages::{
    role_actor_name, role_from_actor_name, site_actor_name, site_id_from_name, BlobRef, EvaluatorMsg, LossSummary,
    RoleMsg, RoleReport, RoundEvent, RoundSummary, ServerMsg, SiteEval, SiteMsg, ToRole, ToServer, ToSite, UpdateMeta,
    WriterMsg, PROTOCOL_VERSION, ROLES_GROUP, SERVER_GROUP, SITES_GROUP,
};
use crate::actors::restart_policy::{Decision, RestartPolicy, RestartTracker};
use crate::actors::{is_child, set_exit, spawn_configured_child, Exit};
use crate::cluster::bulk::{BulkLimits, BulkServer, BulkTls, Upload, UploadSink};
use crate::config::Config;
use crate::eval::gan_evaluator::EvalReport;
use crate::federation::checkpoint::{CheckpointMeta, CheckpointStore};
use crate::federation::round::{RoundState, RoundStatus, UpdateVerdict};
use crate::federation::strategy::Strategy;
use crate::federation::validate::{validate_update, UpdateHeader, ValidationPolicy};
use crate::federation::weights::{Weights, WeightsError};
use crate::kube::membership::MembershipEvent;
use crate::models::{DISCRIMINATOR_PREFIX, GENERATOR_PREFIX};
use crate::observability::{Metrics, Readiness, RoleReportOutcome, SiteEvent, StatusHandle};
use crate::records::{RoleOutcome, RoundRecord, RunEvent, RunReport, SiteRound};

/// Completed rounds whose global weights stay downloadable for roles (while roles are joined; otherwise only the
/// newest, which is the same bytes as the next round's starting blob and costs nothing extra). A role has about
/// this many rounds to fetch an event's weights.
pub const ROLE_BLOBS_KEPT: usize = 3;
/// Bulk keys of completed-round blobs: this bit set, the round below it (never equal to a `Train` key).
pub const ROLE_BLOB_KEY: u64 = 1 << 63;
/// Bulk-plane ids of role readers start here (site ids are small).
pub const ROLE_READER_BASE: u32 = 0x8000_0000;
/// Most roles admitted at once (names become metric labels).
pub const MAX_ROLES: usize = 16;
/// Limits of one role report: metrics, artifact paths, and the length of a name or path.
const MAX_ROLE_METRICS: usize = 64;
const MAX_ROLE_ARTIFACTS: usize = 64;
const MAX_ROLE_TEXT: usize = 512;

/// Why a role report is refused, if it is ( non-finite values, too many or too long entries).
pub fn check_role_report(report: &RoleReport) -> Result<(), String> {
    if report.metrics.len() > MAX_ROLE_METRICS || report.artifacts.len() > MAX_ROLE_ARTIFACTS {
        return Err(format!(
            "{} metrics and {} artifacts (at most {MAX_ROLE_METRICS} and {MAX_ROLE_ARTIFACTS})",
            report.metrics.len(),
            report.artifacts.len()
        ));
    }
    if let Some((k, v)) = report.metrics.iter().find(|(k, v)| !v.is_finite() || k.is_empty() || k.len() > 64) {
        return Err(format!("metric {k:?} = {v}: names are 1..64 characters, values finite"));
    }
    if report.artifacts.iter().any(|a| a.len() > MAX_ROLE_TEXT) {
        return Err(format!("an artifact path is longer than {MAX_ROLE_TEXT} characters"));
    }
    Ok(())
}

/// The summary of a completed round that roles receive.
pub fn round_summary(r: &RoundRecord) -> RoundSummary {
    RoundSummary {
        attempts: r.attempts,
        participants: r.participants.clone(),
        contributors: r.contributors.iter().map(|c| c.site_id).collect(),
        dropped: r.dropped.clone(),
        rejected: r.rejected.len() as u32,
        mean_losses: r.mean_losses,
        frechet_distance: r.frechet_distance,
        global_step_norm: r.global_step_norm,
        wall_secs: r.wall_secs,
        checkpoint: r.checkpoint.clone(),
        completed_unix_ms: r.completed_unix_ms,
        num_samples: r.contributors.iter().map(|c| c.num_samples).sum(),
    }
}

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
}

/// The handles the server keeps current for its HTTP endpoint (cheap clones of shared state).
#[derive(Clone)]
pub struct Observed {
    pub metrics: Metrics,
    pub status: StatusHandle,
    pub readiness: Readiness,
}

/// A round that is aggregated and waits for its checkpoint to be written.
struct Persisting {
    record: RoundRecord,
    meta: CheckpointMeta,
    /// The round's global weights (shared with the server, the writer and the evaluator: never copied).
    weights: Arc<Weights>,
}

/// Checkpoint parts of the GAN bundle: (part name, tensor-name prefix).
pub const CHECKPOINT_PARTS: [(&str, &str); 2] =
    [("generator", GENERATOR_PREFIX), ("discriminator", DISCRIMINATOR_PREFIX)];
/// Prefix of a strategy's tensor state (`Strategy::state_weights`) in the bundle handed to the checkpoint writer;
/// saved as the checkpoint's `strategy` part.
pub const STRATEGY_STATE: &str = "strategy.";

struct RoleEntry {
    actor: ActorRef<RoleMsg>,
    reader_id: u32,
}

/// The global weights of the last completed round, serialised once: retained for roles and reused as the next
/// round's starting blob (the global does not change in between).
struct RoundBlob {
    round: u64,
    bytes: Arc<Vec<u8>>,
    sha256: String,
}

/// A federated evaluation in progress: the sites asked, those lost since, what they answered.
#[derive(Default)]
struct SiteEvalRound {
    asked: BTreeSet<u32>,
    lost: BTreeSet<u32>,
    answers: BTreeMap<u32, Result<SiteEval, String>>,
}

impl SiteEvalRound {
    fn complete(&self) -> bool {
        self.asked.iter().all(|id| self.answers.contains_key(id) || self.lost.contains(id))
    }
}

struct SiteEntry {
    actor: ActorRef<SiteMsg>,
    /// Pings sent and not answered yet, oldest first.
    unanswered: VecDeque<(u64, Instant)>,
}

impl SiteEntry {
    fn new(actor: ActorRef<SiteMsg>) -> Self {
        Self { actor, unanswered: VecDeque::new() }
    }
}

/// Pings (and checks) per heartbeat period. A site is lost when a ping stays unanswered for 1.5 periods; the first
/// ping it misses left at most 1/4 period after it hung, and the check runs every 1/4 period, so a hung site is
/// declared lost at most 1/4 + 1.5 + 1/4 = 2 periods after it stopped, while a healthy but busy site has 1.5
/// periods to answer.
const CHECKS_PER_PERIOD: u64 = 4;
const ANSWER_WITHIN_PERIODS: f64 = 1.5;

struct Progress {
    rounds: ProgressBar,
    sites: ProgressBar,
}

pub struct ServerState {
    cfg: Config,
    node: ActorRef<ractor_cluster::NodeServerMessage>,
    mtls: bool,
    out_dir: PathBuf,
    global: Arc<Weights>,
    completed: u64,
    attempt: u32,
    current: Option<RoundState>,
    round_started: Instant,
    contributors: Vec<SiteRound>,
    rejected: Vec<(u32, String)>,
    aggregate_secs: f64,
    sites: BTreeMap<u32, SiteEntry>,
    waiting_to_start: bool,
    join_deadlines_missed: u32,
    heartbeat_ticks: u64,
    ping_seq: u64,
    grace_armed: bool,
    process_start: Instant,
    strategy: Box<dyn Strategy>,
    report: RunReport,
    evaluator: Option<ActorRef<EvaluatorMsg>>,
    evaluator_args: Option<EvaluatorArgs>,
    evaluator_restarts: RestartTracker,
    writer: Option<ActorRef<WriterMsg>>,
    writer_store: CheckpointStore,
    writer_restarts: RestartTracker,
    persisting: Option<Persisting>,
    /// Rounds sent to the evaluator and not scored yet.
    pending_eval: BTreeSet<u64>,
    /// The run is over and waits only for the last round's evaluation.
    finishing: Option<Result<String, String>>,
    bulk: BulkServer,
    bulk_seen: (u64, u64),
    obs: Observed,
    stay_up: bool,
    /// The run ended successfully (with `stay_up`): why, for sites that join later.
    finished: Option<String>,
    tokens: HashMap<u32, u64>,
    blob: Option<BlobRef>,
    roles: BTreeMap<String, RoleEntry>,
    next_reader: u32,
    round_blob: Option<RoundBlob>,
    /// The last round event sent, for roles that join later.
    last_event: Option<RoundEvent>,
    /// Roles that have not reported on the last round yet (the run waits for them, bounded).
    pending_roles: BTreeSet<String>,
    /// Federated evaluations asked of the sites and not settled yet, by round.
    site_evals: BTreeMap<u64, SiteEvalRound>,
    num_classes: usize,
    progress: Progress,
    started: Instant,
    exit: Exit,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl ServerState {
    fn event(&mut self, site: Option<u32>, kind: &str, detail: String) {
        let round = self.current.as_ref().map(|c| c.round).unwrap_or(self.completed);
        self.report.events.push(RunEvent {
            at_secs: self.process_start.elapsed().as_secs_f64(),
            at_unix_ms: now_ms(),
            round,
            site,
            kind: kind.to_string(),
            detail,
        });
    }

    /// Refreshes `/status` and the membership gauges.
    fn publish_status(&self, phase: &str) {
        let (membership, round, rounds) = (self.membership(), self.completed, self.cfg.federation.rounds);
        self.obs.metrics.set_sites_joined(self.sites.len());
        self.obs.status.update(|s| {
            s.membership = membership;
            s.round = round;
            s.rounds_configured = rounds;
            if !phase.is_empty() {
                s.phase = phase.to_string();
            }
        });
    }

    /// Moves the bulk plane's byte counters into the metrics.
    fn count_bytes(&mut self) {
        let (sent, received, _) = self.bulk.stats();
        self.obs.metrics.bytes_sent(sent.saturating_sub(self.bulk_seen.0));
        self.obs.metrics.bytes_received(received.saturating_sub(self.bulk_seen.1));
        self.bulk_seen = (sent, received);
    }

    /// report.json/.md, and for people: report.html with the loss and Fréchet curves, partition.png.
    fn write_report(&self) {
        if let Err(e) = self.report.write(&self.out_dir) {
            tracing::error!(error = %e, "cannot write the report");
            return;
        }
        let report = self.report.clone();
        let out = self.out_dir.clone();
        // Pictures are for people: a failure is a warning, never the run's problem; off the mailbox.
        tokio::task::spawn_blocking(move || write_pictures(&report, &out));
    }

    /// The remote actor of site `id`, from the sites process group.
    fn site_actor(id: u32) -> Option<ActorRef<SiteMsg>> {
        pg::get_members(&SITES_GROUP.to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local() && c.get_name().as_deref() == Some(&site_actor_name(id)))
            .map(ActorRef::<SiteMsg>::from)
    }

    fn train_frame(&self, round: u64) -> Result<ToSite, ActorProcessingErr> {
        let weights = self.blob.clone().ok_or("no global weights published")?;
        Ok(ToSite::Train {
            protocol: PROTOCOL_VERSION,
            round,
            local_steps: self.cfg.federation.local_steps,
            batch_size: self.cfg.federation.batch_size,
            hints: self.strategy.site_hints(),
            weights,
        })
    }

    /// The global weights as safetensors bytes and their SHA-256 (what a blob on the bulk plane carries).
    fn encode_global(&self) -> Result<(Arc<Vec<u8>>, String), WeightsError> {
        let bytes = tokio::task::block_in_place(|| self.global.to_safetensors(None))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok((Arc::new(bytes), sha256))
    }

    /// Publishes the global weights of `round` on the bulk plane (one copy, shared by every download).
    fn publish_global(&mut self, round: u64) -> Result<(), ActorProcessingErr> {
        let (bytes, sha256) = match &self.round_blob {
            // The global has not changed since the previous round completed: same bytes, no second copy.
            Some(b) if b.round + 1 == round => (b.bytes.clone(), b.sha256.clone()),
            _ => self.encode_global()?,
        };
        let key = (round << 16) | u64::from(self.attempt & 0xffff);
        let blob = BlobRef { port: self.bulk.local_addr().port(), key, len: bytes.len() as u64, sha256 };
        self.bulk.publish(key, bytes);
        self.blob = Some(blob);
        Ok(())
    }

    /// Encodes and hashes the global weights of the round just aggregated, while the checkpoint writer writes the
    /// same round on its thread: the bytes then serve the roles and the next round's publish without a second pass.
    fn prepare_round_blob(&mut self, round: u64) {
        self.round_blob = match self.encode_global() {
            Ok((bytes, sha256)) => Some(RoundBlob { round, bytes, sha256 }),
            Err(e) => {
                tracing::warn!(round, error = %e, "cannot serialise the round's weights");
                None
            }
        };
    }

    /// Keeps the just-completed round's global weights downloadable and returns where they are.
    fn retain_round_blob(&mut self, round: u64) -> Option<BlobRef> {
        if self.round_blob.as_ref().map(|b| b.round) != Some(round) {
            self.prepare_round_blob(round);
        }
        let b = self.round_blob.as_ref()?;
        let key = ROLE_BLOB_KEY | round;
        let keep = if self.roles.is_empty() { 1 } else { ROLE_BLOBS_KEPT };
        self.bulk.retain(key, b.bytes.clone(), keep);
        Some(BlobRef { port: self.bulk.local_addr().port(), key, len: b.bytes.len() as u64, sha256: b.sha256.clone() })
    }

    /// Round `round` is durable and recorded: tell every role (and remember it for roles that join later).
    fn announce_round(&mut self, round: u64) {
        let weights = self.retain_round_blob(round);
        let Some(record) = self.report.rounds.iter().find(|r| r.round == round) else { return };
        let event = RoundEvent {
            round,
            rounds_configured: self.cfg.federation.rounds,
            summary: round_summary(record),
            weights,
        };
        for (name, role) in &self.roles {
            if let Err(e) = role.actor.cast(RoleMsg::FromServer(Ok(ToRole::Round(Box::new(event.clone()))))) {
                tracing::warn!(role = %name, round, error = %e, "cannot send the round event");
            }
        }
        if round >= self.cfg.federation.rounds {
            self.pending_roles = self.roles.keys().cloned().collect();
        }
        self.last_event = Some(event);
    }

    fn broadcast_run_over(&self, reason: &str) {
        for role in self.roles.values() {
            let _ = role.actor.cast(RoleMsg::FromServer(Ok(ToRole::RunOver { reason: reason.to_string() })));
        }
    }

    /// Drops a role (it left the cluster or rejoined under a new session).
    fn drop_role(&mut self, name: &str, why: &str) {
        if let Some(old) = self.roles.remove(name) {
            self.bulk.revoke_reader(old.reader_id);
            tracing::info!(role = %name, %why, "role left");
            self.event(None, "role-left", format!("{name}: {why}"));
            self.obs.metrics.set_roles_joined(self.roles.len());
        }
    }

    /// A site (re)joined: record it, give it its bulk token, and if a round is open, bring it into that round.
    fn admit(&mut self, id: u32, actor: ActorRef<SiteMsg>) -> Result<(), ActorProcessingErr> {
        let rejoin = self.report.site_classes.contains_key(&id) && !self.sites.contains_key(&id);
        self.sites.insert(id, SiteEntry::new(actor.clone()));
        let token: u64 = rand::random();
        self.tokens.insert(id, token);
        self.bulk.grant(id, token);
        actor.cast(SiteMsg::FromServer(Ok(ToSite::Welcome { protocol: PROTOCOL_VERSION, token })))?;
        if rejoin {
            tracing::info!(site_id = id, "site rejoined");
            self.event(Some(id), "site-rejoined", "answers again".into());
            self.obs.metrics.site_event(SiteEvent::Rejoined);
        } else {
            self.obs.metrics.site_event(SiteEvent::Joined);
        }
        self.publish_status("");
        let Some(current) = self.current.as_mut() else { return Ok(()) };
        if !current.add_participant(id) {
            return Ok(());
        }
        let round = current.round;
        tracing::info!(site_id = id, round, "bringing the site into the open round");
        actor.cast(SiteMsg::FromServer(Ok(self.train_frame(round)?)))?;
        Ok(())
    }

    /// Drops a site from the membership (and from the open round).
    fn lose(&mut self, id: u32, kind: &str, detail: String) {
        if self.sites.remove(&id).is_none() {
            return;
        }
        self.tokens.remove(&id);
        self.bulk.revoke(id);
        tracing::warn!(site_id = id, %detail, "site lost");
        self.event(Some(id), kind, detail);
        self.obs.metrics.site_event(SiteEvent::Lost);
        self.publish_status("");
        if let Some(current) = self.current.as_mut() {
            current.on_site_dropped(id);
        }
        for e in self.site_evals.values_mut() {
            e.lost.insert(id);
        }
        self.progress.sites.set_message(format!("{} joined", self.sites.len()));
    }

    fn membership(&self) -> Vec<String> {
        self.sites.keys().map(|id| site_actor_name(*id)).collect()
    }

    fn broadcast_shutdown(&self, reason: &str) {
        for site in self.sites.values() {
            let _ = site.actor.cast(SiteMsg::FromServer(Ok(ToSite::Shutdown { reason: reason.to_string() })));
        }
    }

    /// Nothing about completed rounds is still being computed (evaluator, roles, sites' evaluations).
    fn nothing_pending(&self) -> bool {
        self.pending_eval.is_empty() && self.pending_roles.is_empty() && self.site_evals.is_empty()
    }

    /// Round `round` is durable: ask every site to score its global generator on its validation split, when the
    /// configuration says this round is evaluated at the sites. Older evaluations still open are settled first
    /// with the answers they have (a site that rejoined meanwhile will not answer them).
    fn ask_sites_to_evaluate(&mut self, round: u64) {
        let e = &self.cfg.evaluation;
        if self.cfg.model.bench_params.is_some() || !e.at_sites_due(round, self.cfg.federation.rounds) {
            return;
        }
        self.settle_site_evals(true);
        let Some(weights) = self.retain_round_blob(round) else {
            tracing::warn!(round, "cannot publish the round's weights; no federated evaluation of it");
            return;
        };
        let frame = ToSite::Evaluate { protocol: PROTOCOL_VERSION, round, weights };
        let mut asked = BTreeSet::new();
        for (id, site) in &self.sites {
            match site.actor.cast(SiteMsg::FromServer(Ok(frame.clone()))) {
                Ok(()) => {
                    asked.insert(*id);
                }
                Err(e) => tracing::warn!(site_id = id, round, error = %e, "cannot ask the site to evaluate"),
            }
        }
        if !asked.is_empty() {
            tracing::info!(round, sites = ?asked, "federated evaluation asked");
            self.site_evals.insert(round, SiteEvalRound { asked, ..SiteEvalRound::default() });
        }
    }

    /// Folds the federated evaluations that have every answer (with `force`: all of them, with what they have)
    /// into their rounds' records and `/metrics`.
    fn settle_site_evals(&mut self, force: bool) {
        let ready: Vec<u64> =
            self.site_evals.iter().filter(|(_, e)| force || e.complete()).map(|(round, _)| *round).collect();
        for round in ready {
            let Some(e) = self.site_evals.remove(&round) else { continue };
            let missing: Vec<u32> = e.asked.iter().filter(|id| !e.answers.contains_key(id)).copied().collect();
            match crate::federation::evaluation::aggregate(round, self.num_classes, &e.answers, missing) {
                Some(f) => {
                    tracing::info!(
                        round,
                        fd = f.frechet_distance,
                        precision = f.precision,
                        recall = f.recall,
                        sites = f.sites.len(),
                        failed = f.failed.len(),
                        missing = f.missing.len(),
                        "federated evaluation"
                    );
                    self.obs.metrics.federated_eval(&f);
                    if let Some(r) = self.report.rounds.iter_mut().find(|r| r.round == round) {
                        r.federated_eval = Some(f);
                    }
                    self.write_report();
                }
                None => {
                    let why: Vec<String> = e
                        .answers
                        .iter()
                        .filter_map(|(id, a)| a.as_ref().err().map(|w| format!("site {id}: {w}")))
                        .collect();
                    tracing::warn!(round, reasons = ?why, "no site could evaluate the round");
                    self.event(None, "federated-eval-failed", format!("round {round}: {}", why.join("; ")));
                }
            }
        }
    }

    fn finish_run(&mut self, me: &ActorRef<ServerMsg>, outcome: Result<String, String>) {
        let waiting = !self.nothing_pending();
        if outcome.is_ok() && waiting && self.finishing.is_none() {
            // The last round's score or role reports are still being computed: wait for them (bounded).
            self.finishing = Some(outcome);
            me.send_after(Duration::from_secs_f64(self.cfg.federation.round_deadline_secs), || ServerMsg::FinishNow);
            return;
        }
        self.finishing = None;
        self.report.finished = outcome.is_ok();
        self.report.total_secs += self.started.elapsed().as_secs_f64();
        self.started = Instant::now();
        if let Err(e) = self.report.write(&self.out_dir) {
            tracing::error!(error = %e, "cannot write the report");
        }
        // The last pictures are drawn before the process ends (not in the background).
        tokio::task::block_in_place(|| write_pictures(&self.report, &self.out_dir));
        self.count_bytes();
        self.publish_status(if outcome.is_ok() { "finished" } else { "failed" });
        let reason = match &outcome {
            Ok(s) | Err(s) => s.clone(),
        };
        self.broadcast_shutdown(&reason);
        self.broadcast_run_over(&reason);
        self.progress.rounds.finish();
        self.progress.sites.finish_and_clear();
        let ok = outcome.is_ok();
        set_exit(&self.exit, outcome);
        if ok && self.stay_up {
            tracing::info!("run finished; staying up: sites that join are told so");
            self.finished = Some(reason);
            return;
        }
        // Let the shutdown frames leave before the node goes down.
        stop_after(me, Duration::from_millis(300));
    }
}

fn stop_after(me: &ActorRef<ServerMsg>, d: Duration) {
    let me = me.clone();
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        me.stop(None);
    });
}

async fn spawn_writer(
    me: &ActorRef<ServerMsg>,
    store: &CheckpointStore,
) -> Result<ActorRef<WriterMsg>, ActorProcessingErr> {
    Ok(Actor::spawn_linked(None, CheckpointWriter, store.clone(), me.get_cell()).await?.0)
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
        let sink: UploadSink = Box::new(move |up| uploads.cast(ServerMsg::Upload(up)).map_err(|e| e.to_string()));
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
        a.obs.readiness.set_ready();
        Ok(ServerState {
            heartbeat_ticks: 0,
            ping_seq: 0,
            grace_armed: false,
            process_start: Instant::now(),
            completed: a.completed_rounds,
            global: Arc::new(a.initial),
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
            strategy: a.strategy,
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
            tokens: HashMap::new(),
            blob: None,
            roles: BTreeMap::new(),
            next_reader: ROLE_READER_BASE,
            round_blob: None,
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
                check_round(&me, st).await?;
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
                        me.send_after(delay, || ServerMsg::RestartChild("evaluator"));
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

fn start_round(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    let round = st.completed + 1;
    let participants: Vec<u32> = st.sites.keys().copied().collect();
    if (participants.len() as u32) < st.cfg.federation.min_sites {
        tracing::warn!(round, have = participants.len(), "not enough sites to start the round; waiting");
        st.waiting_to_start = true;
        me.send_after(Duration::from_secs_f64(st.cfg.federation.join_timeout_secs), || ServerMsg::JoinTimeout);
        return Ok(());
    }
    st.publish_global(round)?;
    let frame = st.train_frame(round)?;
    st.strategy.begin_round(&st.global);
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
    st.rejected.clear();
    st.aggregate_secs = 0.0;
    let attempt = st.attempt;
    me.send_after(Duration::from_secs_f64(st.cfg.federation.round_deadline_secs), move || ServerMsg::RoundDeadline {
        round,
        attempt,
    });
    Ok(())
}

async fn check_round(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
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
        RoundStatus::Complete => finish_round(me, st).await,
        RoundStatus::Failed { received, needed } => retry_round(me, st, received, needed),
    }
}

fn retry_round(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    received: usize,
    needed: usize,
) -> Result<(), ActorProcessingErr> {
    let round = st.completed + 1;
    st.current = None;
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

async fn finish_round(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    let Some(current) = st.current.take() else { return Ok(()) };
    let round = current.round;
    let t = Instant::now();
    let new_global = tokio::task::block_in_place(|| st.strategy.finish())?;
    st.aggregate_secs += t.elapsed().as_secs_f64();
    let step = new_global.l2_distance(&st.global).unwrap_or(f64::NAN);
    st.global = Arc::new(new_global);
    let meta = CheckpointMeta {
        round,
        strategy: st.strategy.name().to_string(),
        strategy_state: st.strategy.state(),
        membership: st.membership(),
        config_hash: st.report.config_hash.clone(),
        created_unix_ms: now_ms(),
        extra: serde_json::json!({ "contributors": st.contributors.iter().map(|c| c.site_id).collect::<Vec<_>>() }),
    };
    let n = st.contributors.len().max(1) as f64;
    let mean_losses = LossSummary {
        d_loss: st.contributors.iter().map(|c| c.losses.d_loss).sum::<f64>() / n,
        g_loss: st.contributors.iter().map(|c| c.losses.g_loss).sum::<f64>() / n,
    };
    let mut contributors = std::mem::take(&mut st.contributors);
    contributors.sort_by_key(|c| c.site_id);
    let record = RoundRecord {
        round,
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
    };
    let m = &st.obs.metrics;
    m.aggregation(record.aggregate_secs);
    m.gan_losses(mean_losses.d_loss, mean_losses.g_loss);
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
    // A server optimiser's moments travel with the round's checkpoint (its `strategy` part), so a restarted server
    // resumes them; without state the global weights go as they are (shared, never copied).
    let weights = match st.strategy.state_weights() {
        None => st.global.clone(),
        Some(state) => match Weights::join_prefixed(&[("", &st.global), (STRATEGY_STATE, &state)]) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot add the strategy's state to the checkpoint");
                st.global.clone()
            }
        },
    };
    st.persisting = Some(Persisting { record, meta, weights });
    st.publish_status(&format!("writing the checkpoint of round {round}"));
    st.progress.sites.set_message(format!("round {round}: writing the checkpoint"));
    send_save(me, st);
    st.prepare_round_blob(round);
    Ok(())
}

/// Hands the round waiting in `persisting` to the checkpoint writer (again, after a failure).
fn send_save(me: &ActorRef<ServerMsg>, st: &mut ServerState) {
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
fn writer_failed(me: &ActorRef<ServerMsg>, st: &mut ServerState, reason: String) {
    let round = st.persisting.as_ref().map(|p| p.record.round).unwrap_or(st.completed + 1);
    match st.writer_restarts.on_failure(Instant::now()) {
        Decision::Restart { attempt, delay } => {
            tracing::warn!(round, attempt, ?delay, %reason, "checkpoint not written; retrying");
            st.event(None, "checkpoint-retry", reason);
            me.send_after(delay, || ServerMsg::RestartChild("checkpoint-writer"));
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

async fn restart_child(me: &ActorRef<ServerMsg>, st: &mut ServerState, which: &str) -> Result<(), ActorProcessingErr> {
    match which {
        "evaluator" => st.evaluator = spawn_configured_child(EvaluatorActor, &st.evaluator_args, me.get_cell()).await?,
        _ => {
            if st.writer.is_none() {
                st.writer = Some(spawn_writer(me, &st.writer_store).await?);
            }
            send_save(me, st);
        }
    }
    Ok(())
}

/// The checkpoint of a round is on disk (or failed): only now the round is completed.
async fn on_saved(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    round: u64,
    result: Result<String, String>,
) -> Result<(), ActorProcessingErr> {
    if st.persisting.as_ref().map(|p| p.record.round) != Some(round) {
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

/// A round's score came back: add it to the round's record.
fn on_evaluated(me: &ActorRef<ServerMsg>, st: &mut ServerState, round: u64, result: Result<EvalReport, String>) {
    st.pending_eval.remove(&round);
    match result {
        Ok(eval) => {
            if let Some(r) = st.report.rounds.iter_mut().find(|r| r.round == round) {
                r.frechet_distance = Some(eval.frechet_distance);
                r.samples_png = Some(eval.samples_png.clone());
                r.quality = eval.quality.clone();
            }
            if let Some(q) = &eval.quality {
                st.obs.metrics.quality(&q.summary);
            }
            st.progress.rounds.set_message(format!("FD {:.3}", eval.frechet_distance));
            tracing::info!(round, frechet_distance = eval.frechet_distance, "round evaluated");
            st.obs.metrics.frechet_distance(eval.frechet_distance);
            st.write_report();
        }
        Err(e) => tracing::warn!(round, error = %e, "evaluation failed"),
    }
    finish_if_settled(me, st);
}

/// The run waits for the last round's evaluations and reports: end it once none is pending.
fn finish_if_settled(me: &ActorRef<ServerMsg>, st: &mut ServerState) {
    if st.nothing_pending() {
        if let Some(outcome) = st.finishing.take() {
            st.finish_run(me, outcome);
        }
    }
}

/// A site's scores of a round's global generator (federated evaluation).
fn on_site_evaluated(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    site_id: u32,
    round: u64,
    result: Result<SiteEval, String>,
) {
    let num_classes = st.num_classes;
    let Some(e) = st.site_evals.get_mut(&round) else {
        tracing::info!(site_id, round, "a late or unasked evaluation; ignored");
        return;
    };
    if !e.asked.contains(&site_id) {
        tracing::warn!(site_id, round, "an evaluation from a site that was not asked; ignored");
        return;
    }
    // A peer's numbers are checked like its updates before they reach the report.
    let result =
        result.and_then(|ev| ev.check(round, num_classes).map(|()| ev).map_err(|why| format!("refused: {why}")));
    if let Err(why) = &result {
        tracing::warn!(site_id, round, reason = %why, "the site has no usable evaluation");
    }
    e.answers.insert(site_id, result);
    st.settle_site_evals(false);
    finish_if_settled(me, st);
}

/// Role `name` has nothing more to say about the last round (it reported or left): maybe the run can end now.
fn role_settled(me: &ActorRef<ServerMsg>, st: &mut ServerState, name: &str) {
    if st.pending_roles.remove(name) {
        finish_if_settled(me, st);
    }
}

/// A role's host said hello: admit it as a download-only reader and bring it up to date with the last round.
async fn on_role_hello(st: &mut ServerState, protocol: u32, name: String) -> Result<(), ActorProcessingErr> {
    let wanted = role_actor_name(&name);
    let Some(actor) = pg::get_members(&ROLES_GROUP.to_string())
        .into_iter()
        .find(|c| !c.get_id().is_local() && c.get_name().as_deref() == Some(wanted.as_str()))
        .map(ActorRef::<RoleMsg>::from)
    else {
        tracing::warn!(role = %name, "hello from a role that is not in the roles group; ignored");
        return Ok(());
    };
    let refuse = |st: &mut ServerState, reason: String| {
        tracing::warn!(role = %name, %reason, "refusing role");
        st.event(None, "role-refused", format!("{name}: {reason}"));
        let _ = actor.cast(RoleMsg::FromServer(Ok(ToRole::Refused { reason })));
    };
    if let Some(reason) = &st.finished {
        let _ = actor.cast(RoleMsg::FromServer(Ok(ToRole::RunOver { reason: reason.clone() })));
        return Ok(());
    }
    if protocol != PROTOCOL_VERSION {
        refuse(st, format!("protocol version {protocol} is not supported (server speaks {PROTOCOL_VERSION})"));
        return Ok(());
    }
    if !crate::actors::messages::valid_role_name(&name) {
        refuse(st, format!("role name {name:?} is not a lowercase DNS label of at most 48 characters"));
        return Ok(());
    }
    if !st.roles.contains_key(&name) && st.roles.len() >= MAX_ROLES {
        refuse(st, format!("{MAX_ROLES} roles are joined already"));
        return Ok(());
    }
    // With mTLS the reader is bound to the certificate its session proved; without, the cookie is all there is.
    let identity = if st.mtls {
        match crate::cluster::verified_node(&st.node, actor.get_id().node()).await {
            Some(id) => Some(id),
            None => {
                refuse(st, "its session presented no verified certificate".into());
                return Ok(());
            }
        }
    } else {
        None
    };
    st.drop_role(&name, "rejoined");
    let reader_id = st.next_reader;
    st.next_reader = st.next_reader.checked_add(1).unwrap_or(ROLE_READER_BASE);
    let token: u64 = rand::random();
    st.bulk.grant_reader(reader_id, token, identity);
    actor.cast(RoleMsg::FromServer(Ok(ToRole::Welcome { protocol: PROTOCOL_VERSION, reader_id, token })))?;
    tracing::info!(role = %name, reader_id, "role joined");
    st.event(None, "role-joined", name.clone());
    if let Some(event) = &st.last_event {
        // Catch up with the newest completed round (older ones' weights may be gone).
        let _ = actor.cast(RoleMsg::FromServer(Ok(ToRole::Round(Box::new(event.clone())))));
    }
    st.roles.insert(name, RoleEntry { actor, reader_id });
    st.obs.metrics.set_roles_joined(st.roles.len());
    Ok(())
}

/// A role's report on round `round`: add it to the round's record (however late), export its numbers.
fn on_role_report(me: &ActorRef<ServerMsg>, st: &mut ServerState, name: String, round: u64, report: RoleReport) {
    if !st.roles.contains_key(&name) {
        tracing::warn!(role = %name, round, "report from a role that is not joined; ignored");
        return;
    }
    if let Err(why) = check_role_report(&report) {
        tracing::warn!(role = %name, round, %why, "role report refused");
        st.obs.metrics.role_report(&name, RoleReportOutcome::Invalid);
        role_settled(me, st, &name);
        return;
    }
    match st.report.rounds.iter_mut().find(|r| r.round == round) {
        Some(record) => {
            for (metric, value) in &report.metrics {
                st.obs.metrics.role_metric(&name, metric, *value);
            }
            record.roles.insert(name.clone(), RoleOutcome { metrics: report.metrics, artifacts: report.artifacts });
            st.obs.metrics.role_report(&name, RoleReportOutcome::Recorded);
            tracing::info!(role = %name, round, "role report recorded");
            if st.finishing.is_none() {
                st.write_report();
            }
        }
        None => {
            tracing::warn!(role = %name, round, "role report for a round the report does not hold; counted only");
            st.obs.metrics.role_report(&name, RoleReportOutcome::Unknown);
        }
    }
    if round >= st.cfg.federation.rounds {
        role_settled(me, st, &name);
    }
}

/// An update arrived on the bulk plane: check it, fold it in, and let go of it (which frees its upload slot).
fn on_upload(st: &mut ServerState, up: Upload) {
    let (accepted, rejected) = (st.contributors.len(), st.rejected.len());
    fold_upload(st, up);
    if st.contributors.len() > accepted {
        st.obs.metrics.update_accepted();
    }
    for (_, why) in st.rejected.iter().skip(rejected) {
        st.obs.metrics.update_rejected(rejection_kind(why));
    }
}

/// A short, bounded label for a rejection reason (the metric's `reason`); the full text is in the report.
fn rejection_kind(why: &str) -> &'static str {
    const KINDS: [(&str, &str); 9] = [
        ("NonFinite", "non-finite"),
        ("non-finite", "non-finite"),
        ("WrongShape", "wrong-shape"),
        ("shape", "wrong-shape"),
        ("StaleRound", "stale-round"),
        ("round", "wrong-round"),
        ("NormBound", "norm-bound"),
        ("malformed", "malformed"),
        ("metadata", "malformed"),
    ];
    KINDS.iter().find(|(k, _)| why.contains(k)).map(|(_, v)| *v).unwrap_or("other")
}

/// Kubernetes says a site's pod is gone or not ready: drop it at once (before TCP notices); a new pod for the same
/// ordinal rejoins through the usual hello.
async fn on_kube(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    ev: MembershipEvent,
) -> Result<(), ActorProcessingErr> {
    match ev {
        MembershipEvent::Gone { site_id, pod, reason } => {
            st.lose(site_id, "site-pod-gone", format!("pod {pod}: {reason:?}"));
            check_round(me, st).await?;
        }
        MembershipEvent::Expected { site_id, pod } => st.event(Some(site_id), "site-pod-expected", pod),
        MembershipEvent::Ready { site_id, pod } => st.event(Some(site_id), "site-pod-ready", pod),
    }
    Ok(())
}

fn write_pictures(report: &RunReport, out: &std::path::Path) {
    if let Err(e) = crate::report::plots::loss_curves_png(report, &out.join("losses.png")) {
        tracing::warn!(error = %e, "cannot draw the loss curves");
    }
    if let Err(e) = crate::report::plots::frechet_png(report, &out.join("frechet.png")) {
        tracing::warn!(error = %e, "cannot draw the Fréchet-distance curve");
    }
    if !report.site_classes.is_empty() {
        let hist: Vec<Vec<usize>> =
            report.site_classes.values().map(|c| c.iter().map(|&n| n as usize).collect()).collect();
        if let Err(e) = crate::data::partition::stacked_bar_png(&report.classes, &hist, &out.join("partition.png")) {
            tracing::warn!(error = %e, "cannot draw the partition");
        }
    }
    if let Err(e) = crate::report::html::write_report_html(report, out) {
        tracing::warn!(error = %e, "cannot write report.html");
    }
}

fn fold_upload(st: &mut ServerState, up: Upload) {
    let site_id = up.site_id;
    let meta = match UpdateMeta::decode(&up.meta) {
        Ok(m) if m.site_id == site_id && m.round == up.round => m,
        Ok(m) => {
            let why = format!(
                "metadata names site {} round {}, the upload site {site_id} round {}",
                m.site_id, m.round, up.round
            );
            tracing::warn!(site_id, %why, "update rejected");
            st.rejected.push((site_id, why));
            return;
        }
        Err(why) => {
            tracing::warn!(site_id, %why, "update rejected");
            st.rejected.push((site_id, why));
            return;
        }
    };
    let round = meta.round;
    let Some(current) = st.current.as_mut() else {
        st.rejected.push((site_id, format!("update for round {round} while no round is open")));
        return;
    };
    let expected_round = current.round;
    let decoded = tokio::task::block_in_place(|| Weights::from_safetensors(&up.body)).map(|(w, _)| w);
    drop(up);
    let check = match &decoded {
        Ok(w) => validate_update(
            PROTOCOL_VERSION,
            expected_round,
            &UpdateHeader { protocol_version: meta.protocol, round, num_samples: meta.num_samples },
            &st.global,
            w,
            &ValidationPolicy { max_update_norm: st.cfg.federation.max_update_norm, max_samples: None },
        )
        .map_err(|r| r.to_string()),
        Err(e) => Err(format!("malformed weights: {e}")),
    };
    if let Err(why) = check {
        tracing::warn!(site_id, round, %why, "update rejected");
        st.rejected.push((site_id, why));
        if round == expected_round {
            current.on_site_dropped(site_id);
        }
        return;
    }
    match current.on_update(site_id, round) {
        UpdateVerdict::Accept => {
            let Ok(w) = decoded else { return };
            let t = Instant::now();
            let folded = tokio::task::block_in_place(|| st.strategy.accumulate(w, meta.num_samples));
            st.aggregate_secs += t.elapsed().as_secs_f64();
            match folded {
                Ok(()) => {
                    st.contributors.push(SiteRound {
                        site_id,
                        num_samples: meta.num_samples,
                        losses: meta.losses,
                        steps: meta.steps,
                        train_secs: meta.train_secs,
                        trainer_restarts: meta.trainer_restarts,
                        batch_size: meta.batch_size,
                        oom_retries: meta.oom_retries,
                        resumed_from_step: meta.resumed_from_step,
                        from_local_checkpoint: meta.from_local_checkpoint,
                    });
                    st.progress.sites.inc(1);
                }
                Err(e) => st.rejected.push((site_id, format!("aggregation refused it: {e}"))),
            }
        }
        verdict => {
            tracing::warn!(site_id, round, ?verdict, "update refused");
            st.rejected.push((site_id, format!("{verdict:?}")));
        }
    }
}

async fn dispatch(me: ActorRef<ServerMsg>, msg: ServerMsg, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    match msg {
        ServerMsg::FromSite(Ok(ToServer::Hello { protocol, site_id, num_samples, class_counts })) => {
            let Some(actor) = ServerState::site_actor(site_id) else {
                tracing::warn!(site_id, "hello from a site that is not in the sites group; ignored");
                return Ok(());
            };
            if let Some(reason) = &st.finished {
                let _ = actor.cast(SiteMsg::FromServer(Ok(ToSite::Shutdown { reason: reason.clone() })));
                return Ok(());
            }
            if protocol != PROTOCOL_VERSION {
                let reason = format!("protocol version {protocol} is not supported (server speaks {PROTOCOL_VERSION})");
                tracing::warn!(site_id, %reason, "refusing site");
                st.event(Some(site_id), "site-refused", reason.clone());
                st.obs.metrics.site_event(SiteEvent::Refused);
                let _ = actor.cast(SiteMsg::FromServer(Ok(ToSite::Refused { reason })));
                return Ok(());
            }
            if st.mtls {
                // The certificate, not the actor name, says who this is.
                let expected = crate::cluster::certs::site_name(site_id);
                let proven = crate::cluster::verified_node(&st.node, actor.get_id().node()).await;
                if proven.as_deref() != Some(expected.as_str()) {
                    let reason = format!(
                        "claims site {site_id} but its certificate is for {}",
                        proven.as_deref().unwrap_or("nobody")
                    );
                    tracing::warn!(site_id, %reason, "refusing site");
                    st.event(Some(site_id), "site-refused", reason.clone());
                    st.obs.metrics.site_event(SiteEvent::Refused);
                    let _ = actor.cast(SiteMsg::FromServer(Ok(ToSite::Refused { reason })));
                    return Ok(());
                }
            }
            if site_id >= st.cfg.federation.sites {
                let reason = format!("site id {site_id} is outside 0..{}", st.cfg.federation.sites);
                let _ = actor.cast(SiteMsg::FromServer(Ok(ToSite::Refused { reason })));
                return Ok(());
            }
            tracing::info!(site_id, num_samples, "site joined");
            st.sites.remove(&site_id);
            st.admit(site_id, actor)?;
            st.report.site_classes.insert(site_id, class_counts);
            st.progress.sites.set_message(format!("{} joined", st.sites.len()));
            if st.waiting_to_start && st.sites.len() as u32 >= st.cfg.federation.sites {
                st.waiting_to_start = false;
                me.cast(ServerMsg::StartRound)?;
            }
        }
        ServerMsg::JoinTimeout => {
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
                        st.finish_run(&me, Err(msg));
                        return Ok(());
                    }
                    me.send_after(Duration::from_secs_f64(st.cfg.federation.join_timeout_secs), || {
                        ServerMsg::JoinTimeout
                    });
                }
            }
        }
        ServerMsg::StartRound => start_round(&me, st)?,
        ServerMsg::Upload(up) => {
            on_upload(st, up);
            check_round(&me, st).await?;
        }
        ServerMsg::Saved { round, result } => on_saved(&me, st, round, result).await?,
        ServerMsg::Evaluated { round, result } => on_evaluated(&me, st, round, result),
        ServerMsg::RestartChild(which) => restart_child(&me, st, which).await?,
        ServerMsg::Kube(ev) => on_kube(&me, st, ev).await?,
        ServerMsg::FinishNow => {
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
                st.finish_run(&me, outcome);
            }
        }
        ServerMsg::FromSite(Ok(ToServer::RoleHello { protocol, role })) => on_role_hello(st, protocol, role).await?,
        ServerMsg::FromSite(Ok(ToServer::Evaluated { site_id, round, result })) => {
            on_site_evaluated(&me, st, site_id, round, result)
        }
        ServerMsg::FromSite(Ok(ToServer::RoleReport { role, round, report })) => {
            on_role_report(&me, st, role, round, report)
        }
        ServerMsg::FromSite(Ok(ToServer::OutOfRound { site_id, round, reason })) => {
            tracing::warn!(site_id, round, %reason, "site is out of the round");
            if let Some(current) = st.current.as_mut() {
                if current.round == round {
                    current.on_site_dropped(site_id);
                }
            }
            check_round(&me, st).await?;
        }
        ServerMsg::FromSite(Err(e)) => {
            st.obs.metrics.bad_frame();
            tracing::warn!(error = %e, "dropped a malformed frame");
            st.rejected.push((u32::MAX, format!("malformed frame: {e}")));
        }
        ServerMsg::FromSite(Ok(ToServer::Pong { site_id, seq })) => match st.sites.get_mut(&site_id) {
            Some(site) => {
                while let Some((_, sent)) = site.unanswered.front().filter(|(s, _)| *s <= seq).copied() {
                    st.obs.metrics.heartbeat_answered(sent.elapsed().as_secs_f64());
                    site.unanswered.pop_front();
                }
            }
            None => {
                // A site we declared lost (hung, partitioned) answers again: it is back.
                if let Some(actor) = ServerState::site_actor(site_id) {
                    if st.report.site_classes.contains_key(&site_id) {
                        st.admit(site_id, actor)?;
                    }
                }
            }
        },
        ServerMsg::Heartbeat { .. } if st.finished.is_some() => {}
        ServerMsg::Heartbeat { at: now } => {
            st.heartbeat_ticks += 1;
            let period = st.cfg.federation.heartbeat_secs;
            st.ping_seq += 1;
            let seq = st.ping_seq;
            // A ping is stamped when it really leaves; the check below uses the tick's enqueue time. A server
            // that was blocked sends its pings late and then works through the ticks queued meanwhile: judged
            // by when they were enqueued, those ticks cannot blame a site for a ping that left after them.
            let sent = Instant::now();
            for site in st.sites.values_mut() {
                site.unanswered.push_back((seq, sent));
                let _ = site.actor.cast(SiteMsg::FromServer(Ok(ToSite::Ping { seq })));
            }
            let limit = Duration::from_secs_f64(ANSWER_WITHIN_PERIODS * period);
            let hung: Vec<(u32, f64)> = st
                .sites
                .iter()
                .filter_map(|(id, s)| {
                    let (_, sent) = s.unanswered.front()?;
                    let waited = now.saturating_duration_since(*sent);
                    // (`now` is the tick's enqueue time; pings sent after it have waited 0.)
                    (waited > limit).then_some((*id, waited.as_secs_f64()))
                })
                .collect();
            for (id, waited) in hung {
                st.obs.metrics.heartbeat_missed();
                let detail = format!("no heartbeat answer for {waited:.2} s (period {period} s)");
                st.lose(id, "site-unresponsive", detail);
            }
            // Sites lost since a federated evaluation was asked will not answer it.
            st.settle_site_evals(false);
            finish_if_settled(&me, st);
            check_round(&me, st).await?;
        }
        ServerMsg::GraceExpired { round, attempt } => {
            let open = st.current.as_ref().is_some_and(|c| c.round == round && c.attempt == attempt);
            if open {
                tracing::info!(round, "grace period over; closing the round with the updates in hand");
                finish_round(&me, st).await?;
            }
        }
        ServerMsg::RoundDeadline { round, attempt } => {
            let Some(current) = &st.current else { return Ok(()) };
            if current.round != round || current.attempt != attempt {
                return Ok(());
            }
            tracing::warn!(round, attempt, received = current.received().len(), "round deadline passed");
            match current.status_at_deadline() {
                RoundStatus::Complete => finish_round(&me, st).await?,
                RoundStatus::Failed { received, needed } => retry_round(&me, st, received, needed)?,
                RoundStatus::Waiting => {}
            }
        }
    }
    Ok(())
}
