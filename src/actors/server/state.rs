//! What the server knows between messages: `ServerState` (membership, the open round, the children, the report,
//! roles, pending evaluations) and the small steps on it that every concern shares (events, status, the round's
//! blob on the bulk plane, admitting and losing a site, ending the run).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use ractor::{pg, ActorProcessingErr, ActorRef};

use super::aggregator::Aggregator;
use super::liveness::Pings;
use super::Observed;
use crate::actors::evaluator::EvaluatorArgs;
use crate::actors::messages::{
    site_actor_name, site_process_name, BlobRef, EvaluatorMsg, RoleMsg, RoundEvent, RoundSummary, ServerMsg, SiteEval,
    SiteMsg, ToRole, ToSite, WriterMsg, PROTOCOL_VERSION, SITES_GROUP,
};
use crate::actors::restart_policy::RestartTracker;
use crate::actors::{set_exit, Exit};
use crate::cluster::bulk::BulkServer;
use crate::config::Config;
use crate::federation::checkpoint::{CheckpointMeta, CheckpointStore};
use crate::federation::fencing::{Admission, Fencing};
use crate::federation::round::RoundState;
use crate::federation::weights::Weights;
use crate::models::{DISCRIMINATOR_PREFIX, GENERATOR_PREFIX};
use crate::observability::SiteEvent;
use crate::records::{RoundRecord, RunEvent, RunReport, SiteRound};

/// Completed rounds whose global weights stay downloadable for roles (while roles are joined; otherwise only the
/// newest, which is the same bytes as the next round's starting blob and costs nothing extra). A role has about
/// this many rounds to fetch an event's weights.
pub const ROLE_BLOBS_KEPT: usize = 3;

/// Bulk keys of completed-round blobs: this bit set, the round below it (never equal to a `Train` key).
pub const ROLE_BLOB_KEY: u64 = 1 << 63;

/// Bulk-plane ids of role readers start here (site ids are small).
pub const ROLE_READER_BASE: u32 = 0x8000_0000;

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

/// A round that is aggregated and waits for its checkpoint to be written.
pub(super) struct Persisting {
    pub(super) record: RoundRecord,
    pub(super) meta: CheckpointMeta,
    /// The round's global weights (shared with the server, the writer and the evaluator: never copied).
    pub(super) weights: Arc<Weights>,
}

/// Checkpoint parts of the GAN bundle: (part name, tensor-name prefix).
pub const CHECKPOINT_PARTS: [(&str, &str); 2] =
    [("generator", GENERATOR_PREFIX), ("discriminator", DISCRIMINATOR_PREFIX)];

pub(super) struct RoleEntry {
    pub(super) actor: ActorRef<RoleMsg>,
    pub(super) reader_id: u32,
}

/// The global weights of the last completed round, serialised once: retained for roles and reused as the next
/// round's starting blob (the global does not change in between).
pub(super) struct RoundBlob {
    pub(super) round: u64,
    pub(super) bytes: Arc<Vec<u8>>,
    pub(super) sha256: String,
}

/// A federated evaluation in progress: the sites asked, those lost since, what they answered.
#[derive(Default)]
pub(super) struct SiteEvalRound {
    pub(super) asked: BTreeSet<u32>,
    pub(super) lost: BTreeSet<u32>,
    pub(super) answers: BTreeMap<u32, Result<SiteEval, String>>,
}

impl SiteEvalRound {
    pub(super) fn complete(&self) -> bool {
        self.asked.iter().all(|id| self.answers.contains_key(id) || self.lost.contains(id))
    }
}

pub(super) struct SiteEntry {
    pub(super) actor: ActorRef<SiteMsg>,
    /// Pings sent and not answered yet, oldest first.
    pub(super) pings: Pings,
    /// The admission this membership is (generation, process, transfer token).
    pub(super) admission: Admission,
}

impl SiteEntry {
    pub(super) fn new(actor: ActorRef<SiteMsg>, admission: Admission) -> Self {
        Self { actor, pings: Pings::default(), admission }
    }
}

pub(super) struct Progress {
    pub(super) rounds: ProgressBar,
    pub(super) sites: ProgressBar,
}

pub struct ServerState {
    pub(super) cfg: Config,
    pub(super) node: ActorRef<ractor_cluster::NodeServerMessage>,
    pub(super) mtls: bool,
    pub(super) out_dir: PathBuf,
    pub(super) global: Arc<Weights>,
    pub(super) completed: u64,
    pub(super) attempt: u32,
    pub(super) current: Option<RoundState>,
    pub(super) round_started: Instant,
    pub(super) contributors: Vec<SiteRound>,
    /// Updates refused since the last round record was written (taken by `round_record`).
    pub(super) rejected: Vec<(u32, String)>,
    pub(super) aggregate_secs: f64,
    pub(super) sites: BTreeMap<u32, SiteEntry>,
    pub(super) waiting_to_start: bool,
    pub(super) join_deadlines_missed: u32,
    pub(super) heartbeat_ticks: u64,
    pub(super) ping_seq: u64,
    pub(super) grace_armed: bool,
    pub(super) process_start: Instant,
    /// The thread that decodes, validates and folds updates and aggregates rounds (it owns the strategy).
    pub(super) aggregator: Aggregator,
    /// The round whose aggregation runs on the aggregator thread (taken from `current` when it closed).
    pub(super) closing: Option<RoundState>,
    /// The writer's answer for a round whose blob was still being encoded.
    pub(super) saved_early: Option<(u64, Result<String, String>)>,
    pub(super) report: RunReport,
    pub(super) evaluator: Option<ActorRef<EvaluatorMsg>>,
    pub(super) evaluator_args: Option<EvaluatorArgs>,
    pub(super) evaluator_restarts: RestartTracker,
    pub(super) writer: Option<ActorRef<WriterMsg>>,
    pub(super) writer_store: CheckpointStore,
    pub(super) writer_restarts: RestartTracker,
    pub(super) persisting: Option<Persisting>,
    /// Rounds sent to the evaluator and not scored yet.
    pub(super) pending_eval: BTreeSet<u64>,
    /// The run is over and waits only for the last round's evaluation.
    pub(super) finishing: Option<Result<String, String>>,
    pub(super) bulk: BulkServer,
    pub(super) bulk_seen: (u64, u64),
    pub(super) obs: Observed,
    pub(super) stay_up: bool,
    /// The run ended successfully (with `stay_up`): why, for sites that join later.
    pub(super) finished: Option<String>,
    /// Who holds each site (a site identity is active in one process at a time).
    pub(super) fencing: Fencing,
    /// What Kubernetes says about the site pods and nodes (empty without a pod watch).
    pub(super) cluster: super::nodeloss::ClusterView,
    /// Fenced processes whose frames were already recorded in the report, by (site, instance).
    pub(super) zombies_seen: BTreeSet<(u32, u64)>,
    /// Differential privacy as configured (`None`: off).
    pub(super) dp: Option<crate::config::DpSettings>,
    /// Secure aggregation as configured (`None`: off).
    pub(super) secagg: Option<crate::config::SecAggSettings>,
    /// The open round's secure aggregation (from the round's start until it is unmasked or fails).
    pub(super) secure: Option<super::secure_state::OpenSecure>,
    pub(super) blob: Option<BlobRef>,
    pub(super) roles: BTreeMap<String, RoleEntry>,
    pub(super) next_reader: u32,
    pub(super) round_blob: Option<RoundBlob>,
    /// The last round event sent, for roles that join later.
    pub(super) last_event: Option<RoundEvent>,
    /// Roles that have not reported on the last round yet (the run waits for them, bounded).
    pub(super) pending_roles: BTreeSet<String>,
    /// Federated evaluations asked of the sites and not settled yet, by round.
    pub(super) site_evals: BTreeMap<u64, SiteEvalRound>,
    pub(super) num_classes: usize,
    pub(super) progress: Progress,
    pub(super) started: Instant,
    pub(super) exit: Exit,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(super) fn stop_after(me: &ActorRef<ServerMsg>, d: Duration) {
    let me = me.clone();
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        me.stop(None);
    });
}

/// The run waits for the last round's evaluations and reports: end it once none is pending.
pub(super) fn finish_if_settled(me: &ActorRef<ServerMsg>, st: &mut ServerState) {
    if st.nothing_pending() {
        if let Some(outcome) = st.finishing.take() {
            st.finish_run(me, outcome);
        }
    }
}

pub(super) fn write_pictures(report: &RunReport, out: &std::path::Path) {
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

impl ServerState {
    pub(super) fn event(&mut self, site: Option<u32>, kind: &str, detail: String) {
        let round = self.current.as_ref().map(|c| c.round).unwrap_or(self.completed);
        self.event_in(round, site, kind, detail);
    }

    /// An event of round `round` (for a round that is closing: no longer `current`, not yet completed).
    pub(super) fn event_in(&mut self, round: u64, site: Option<u32>, kind: &str, detail: String) {
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
    pub(super) fn publish_status(&self, phase: &str) {
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
    pub(super) fn count_bytes(&mut self) {
        let (sent, received, _) = self.bulk.stats();
        self.obs.metrics.bytes_sent(sent.saturating_sub(self.bulk_seen.0));
        self.obs.metrics.bytes_received(received.saturating_sub(self.bulk_seen.1));
        self.bulk_seen = (sent, received);
    }

    /// report.json/.md, and for people: report.html with the loss and Fréchet curves, partition.png.
    pub(super) fn write_report(&self) {
        if let Err(e) = self.report.write(&self.out_dir) {
            tracing::error!(error = %e, "cannot write the report");
            return;
        }
        let report = self.report.clone();
        let out = self.out_dir.clone();
        // Pictures are for people: a failure is a warning, never the run's problem; off the mailbox.
        tokio::task::spawn_blocking(move || write_pictures(&report, &out));
    }

    /// The remote actor of process `instance` of site `id`, from the sites process group.
    pub(super) fn site_actor(id: u32, instance: u64) -> Option<ActorRef<SiteMsg>> {
        let name = site_process_name(id, instance);
        pg::get_members(&SITES_GROUP.to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local() && c.get_name().as_deref() == Some(name.as_str()))
            .map(ActorRef::<SiteMsg>::from)
    }

    pub(super) fn train_frame(&self, round: u64) -> Result<ToSite, ActorProcessingErr> {
        let weights = self.blob.clone().ok_or("no global weights published")?;
        Ok(ToSite::Train {
            protocol: PROTOCOL_VERSION,
            round,
            local_steps: self.cfg.federation.local_steps,
            batch_size: self.cfg.federation.batch_size,
            hints: self.aggregator.hints(),
            weights,
            secure: self.secure.as_ref().map(|o| o.train.clone()),
        })
    }

    /// Publishes the global weights of `round` on the bulk plane (one copy, shared by every download).
    pub(super) fn publish_global(&mut self, round: u64) -> Result<(), ActorProcessingErr> {
        // The global has not changed since the previous round completed (or the server started): its bytes,
        // encoded off the actor, serve every attempt of this round.
        let (bytes, sha256) = match &self.round_blob {
            Some(b) if b.round + 1 == round => (b.bytes.clone(), b.sha256.clone()),
            _ => return Err(format!("the global weights before round {round} could not be encoded").into()),
        };
        let key = (round << 16) | u64::from(self.attempt & 0xffff);
        let blob = BlobRef { port: self.bulk.local_addr().port(), key, len: bytes.len() as u64, sha256 };
        self.bulk.publish(key, bytes);
        self.blob = Some(blob);
        Ok(())
    }

    /// Keeps the just-completed round's global weights downloadable and returns where they are.
    pub(super) fn retain_round_blob(&mut self, round: u64) -> Option<BlobRef> {
        let Some(b) = self.round_blob.as_ref().filter(|b| b.round == round) else {
            tracing::warn!(round, "the round's weights were not encoded; roles get no weights for it");
            return None;
        };
        let key = ROLE_BLOB_KEY | round;
        let keep = if self.roles.is_empty() { 1 } else { ROLE_BLOBS_KEPT };
        self.bulk.retain(key, b.bytes.clone(), keep);
        Some(BlobRef { port: self.bulk.local_addr().port(), key, len: b.bytes.len() as u64, sha256: b.sha256.clone() })
    }

    /// Round `round` is durable and recorded: tell every role (and remember it for roles that join later).
    pub(super) fn announce_round(&mut self, round: u64) {
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

    pub(super) fn broadcast_run_over(&self, reason: &str) {
        for role in self.roles.values() {
            let _ = role.actor.cast(RoleMsg::FromServer(Ok(ToRole::RunOver { reason: reason.to_string() })));
        }
    }

    /// Drops a role (it left the cluster or rejoined under a new session).
    pub(super) fn drop_role(&mut self, name: &str, why: &str) {
        if let Some(old) = self.roles.remove(name) {
            self.bulk.revoke_reader(old.reader_id);
            tracing::info!(role = %name, %why, "role left");
            self.event(None, "role-left", format!("{name}: {why}"));
            self.obs.metrics.set_roles_joined(self.roles.len());
        }
    }

    /// A site (re)joined under `admission`: record it, give it its bulk token and generation, and if a round is
    /// open, bring it into that round.
    pub(super) fn admit(
        &mut self,
        id: u32,
        actor: ActorRef<SiteMsg>,
        admission: Admission,
    ) -> Result<(), ActorProcessingErr> {
        let rejoin = self.report.site_classes.contains_key(&id) && !self.sites.contains_key(&id);
        self.sites.insert(id, SiteEntry::new(actor.clone(), admission));
        let (token, generation) = (admission.token, admission.generation);
        self.bulk.grant(id, token);
        actor.cast(SiteMsg::FromServer(Ok(ToSite::Welcome { protocol: PROTOCOL_VERSION, token, generation })))?;
        if rejoin {
            tracing::info!(site_id = id, "site rejoined");
            self.event(Some(id), "site-rejoined", "answers again".into());
            self.obs.metrics.site_event(SiteEvent::Rejoined);
        } else {
            self.obs.metrics.site_event(SiteEvent::Joined);
        }
        self.publish_status("");
        let Some(current) = self.current.as_mut() else { return Ok(()) };
        if self.secure.is_some() {
            // Its keys were not in the round's first stage: it takes part from the next round on.
            tracing::info!(
                site_id = id,
                round = current.round,
                "the open round is aggregated securely; the site waits"
            );
            return Ok(());
        }
        if !current.add_participant(id) {
            return Ok(());
        }
        let round = current.round;
        tracing::info!(site_id = id, round, "bringing the site into the open round");
        actor.cast(SiteMsg::FromServer(Ok(self.train_frame(round)?)))?;
        Ok(())
    }

    /// Site `id` cannot contribute to the open round (lost, or it said so): out of its bookkeeping and of its
    /// secure aggregation.
    pub(super) fn drop_from_round(&mut self, id: u32) {
        if let Some(current) = self.current.as_mut() {
            current.on_site_dropped(id);
        }
        let in_check = self.current.as_ref().is_some_and(|c| c.checking().contains(&id));
        if let Some(open) = self.secure.as_mut() {
            open.lost(id, in_check);
        }
    }

    /// Drops a site from the membership (and from the open round).
    pub(super) fn lose(&mut self, id: u32, kind: &str, detail: String) {
        let Some(entry) = self.sites.remove(&id) else { return };
        if self.fencing.current(id).map(|a| a.token) == Some(entry.admission.token) {
            self.bulk.revoke(id);
        }
        tracing::warn!(site_id = id, %detail, "site lost");
        self.event(Some(id), kind, detail);
        self.obs.metrics.site_event(SiteEvent::Lost);
        self.publish_status("");
        self.drop_from_round(id);
        for e in self.site_evals.values_mut() {
            e.lost.insert(id);
        }
        self.progress.sites.set_message(format!("{} joined", self.sites.len()));
    }

    /// Another process took site `id` over (`old` was its admission): withdraw the old token as fenced, tell the old
    /// process to stop, and drop it from the membership (and the open round) if it was still a member.
    pub(super) fn fence(&mut self, id: u32, old: Admission, by: Admission) {
        self.bulk.fence(id, old.token);
        let detail = format!(
            "process {:016x} (generation {}) taken over by process {:016x} (generation {})",
            old.instance, old.generation, by.instance, by.generation
        );
        tracing::warn!(site_id = id, %detail, "site taken over; the old process is fenced");
        self.event(Some(id), "site-fenced", detail);
        self.obs.metrics.site_event(SiteEvent::Fenced);
        self.tell_fenced(id, old.instance, by);
        if self.sites.get(&id).is_some_and(|e| e.admission.generation == old.generation) {
            self.lose(id, "site-taken-over", format!("process {:016x} replaced", old.instance));
        }
    }

    /// Tells process `instance` of site `id` (if it is still reachable) that `by` holds the site now.
    pub(super) fn tell_fenced(&self, id: u32, instance: u64, by: Admission) {
        if let Some(actor) = Self::site_actor(id, instance) {
            let reason = format!(
                "site {id} is now held by another process ({:016x}, generation {}); this process ({instance:016x}) must \
                 stop",
                by.instance, by.generation
            );
            let _ = actor.cast(SiteMsg::FromServer(Ok(ToSite::Fenced { reason })));
        }
    }

    pub(super) fn membership(&self) -> Vec<String> {
        self.sites.keys().map(|id| site_actor_name(*id)).collect()
    }

    pub(super) fn broadcast_shutdown(&self, reason: &str) {
        for site in self.sites.values() {
            let _ = site.actor.cast(SiteMsg::FromServer(Ok(ToSite::Shutdown { reason: reason.to_string() })));
        }
    }

    /// Nothing about completed rounds is still being computed (evaluator, roles, sites' evaluations).
    pub(super) fn nothing_pending(&self) -> bool {
        self.pending_eval.is_empty() && self.pending_roles.is_empty() && self.site_evals.is_empty()
    }

    pub(super) fn finish_run(&mut self, me: &ActorRef<ServerMsg>, outcome: Result<String, String>) {
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
