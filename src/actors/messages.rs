//! Every message of the system and its wire form, in one place.
//!
//! Why hand-written `ractor::Message` impls instead of `#[derive(RactorClusterMessage)]`: the derive decodes with
//! `BytesConvertable::from_bytes`, which cannot fail — a malformed or mismatched frame panics inside ractor_cluster
//! and is silently dropped. Here a remote frame is one bincode-encoded enum behind a single variant tag that
//! carries the protocol version; decoding never panics, and a frame that does not decode still reaches the actor as
//! `Err(reason)` so it is logged and counted instead of vanishing.

use std::sync::Arc;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{ActorRef, Message};
use serde::{Deserialize, Serialize};

pub use crate::eval::gan_evaluator::EvalReport;
pub use crate::faults::InjectedFault;
pub use crate::federation::evaluation::SiteEval;
use crate::federation::secagg::{Advertisement, Reveal, SealedShares, SecAggParams, UnmaskRequest};
use crate::federation::strategy::{AggregateError, SiteHints};
pub use crate::federation::validate::Refused;
use crate::federation::weights::Weights;
pub use crate::records::{LossSummary, SiteRound};
pub use crate::train::{LocalJob, LocalResult, TrainFailure, TrainFailureKind};

/// `true` for role names the server admits: a node-name-like DNS label of at most 48 characters.
pub fn valid_role_name(name: &str) -> bool {
    name.len() <= 48 && crate::cluster::certs::valid_node_name(name)
}

/// Bumped on any incompatible change of the frames below. Peers compare it at join.
/// Version 2: weights moved to the bulk data plane (`cluster::bulk`); `Train` names the blob, updates are uploads.
/// Version 3: extension roles (`ToServer::RoleHello`/`RoleReport`, `ToRole`); `ToServer` gained variants, so a
/// version-2 server could not decode a role's frames.
/// Version 4: federated evaluation (`ToSite::Evaluate`, `ToServer::Evaluated`).
/// Version 5: `UpdateMeta` carries the site's `SiteRound` record whole (field order changed on the wire).
/// Version 6: fencing. `Hello` names the site process (`instance`) and the admission it held before; `Welcome`
/// gives the admission's `generation`, which every later site frame (`Pong`, `OutOfRound`, `Evaluated`, the
/// update's `UpdateMeta`) carries; `ToSite::Fenced` stops a process whose identity another process took over.
/// Version 7: `Hello` says what local state the process starts with (`local_state`); `SiteHints` carries the
/// differential-privacy clip norm the site applies to its update (`dp_clip_norm`).
/// Version 8: secure aggregation. `Train` may carry the round's [`SecureTrain`]; the protocol's stages travel as
/// `ToSite::SecAgg` / `ToServer::SecAgg`; `UpdateMeta::masked` says the upload's body is a masked input.
/// Version 9: the secure round's parameters carry the inputs' length and the sites' noise (distributed DP).
pub const PROTOCOL_VERSION: u32 = 9;

/// The server's supervised children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerChild {
    /// Scores each round (grid, FD, the quality suite).
    Evaluator,
    /// Makes rounds durable.
    CheckpointWriter,
}

impl ServerChild {
    /// The name in logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerChild::Evaluator => "evaluator",
            ServerChild::CheckpointWriter => "checkpoint-writer",
        }
    }
}

/// Process group of site actors (sites join it, the server monitors it).
pub const SITES_GROUP: &str = "histofed.sites";
/// Process group of the server actor (sites look the server up through it).
pub const SERVER_GROUP: &str = "histofed.server";

/// Process group of extension-role hosts (`crate::roles`): they join it, the server monitors it and casts each
/// completed round to its members.
pub const ROLES_GROUP: &str = "histofed.roles";

/// The registered actor name of the host of role `role`.
pub fn role_actor_name(role: &str) -> String {
    format!("histofed-role-{role}")
}

/// Inverse of [`role_actor_name`].
pub fn role_from_actor_name(name: &str) -> Option<&str> {
    name.strip_prefix("histofed-role-").filter(|r| !r.is_empty())
}

/// The name of site `id` in logs and `/status` (one per site, whichever process holds it).
pub fn site_actor_name(id: u32) -> String {
    format!("histofed-site-{id}")
}

/// The registered actor name of the process `instance` of site `id`. Unique per process, so that when two
/// processes claim the same site (a replacement and a zombie) the server addresses each one, never the wrong one.
pub fn site_process_name(id: u32, instance: u64) -> String {
    format!("histofed-site-{id}.{instance:016x}")
}

/// The site id of a name made by [`site_process_name`] (or [`site_actor_name`]).
pub fn site_id_from_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("histofed-site-")?;
    rest.split_once('.').map_or(rest, |(id, _)| id).parse().ok()
}

/// Site → server frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToServer {
    /// Sent after joining (and re-joining).
    Hello(SiteHello),
    /// Answer to a heartbeat `Ping` (carries its sequence number) under admission `generation`.
    Pong { site_id: u32, generation: u64, seq: u64 },
    /// The site cannot contribute to this round (restart budget exhausted, ...).
    OutOfRound { site_id: u32, generation: u64, round: u64, reason: String },
    /// An extension role's host joined (or rejoined): it wants the round events.
    RoleHello { protocol: u32, role: String },
    /// What role `role` made of round `round`.
    RoleReport { role: String, round: u64, report: RoleReport },
    /// The site's scores of round `round`'s global generator on its validation split (or why it has none).
    Evaluated { site_id: u32, generation: u64, round: u64, result: Result<SiteEval, String> },
    /// The site's answer to a stage of round `round`'s secure aggregation (attempt `attempt`).
    SecAgg { site_id: u32, generation: u64, round: u64, attempt: u32, stage: SecAggFromSite },
}

/// A site's part of one secure-aggregation stage (the masked input itself travels on the bulk plane).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SecAggFromSite {
    /// Stage 1: its public keys and seed commitment.
    Advertise(Advertisement),
    /// Stage 2: its shares, sealed for each neighbour.
    Shares(Vec<SealedShares>),
    /// Stage 4: the shares the server asked for.
    Reveal(Vec<Reveal>),
}

/// The server's part of one secure-aggregation stage, for one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SecAggToSite {
    /// Stage 2 opens: the advertisements of the site's neighbours.
    Roster(Vec<Advertisement>),
    /// Stage 3 opens: the sealed shares addressed to the site.
    Shares(Vec<SealedShares>),
    /// Stage 4 opens: who survived and who dropped.
    Unmask(UnmaskRequest),
}

/// Round `round` is aggregated securely: the protocol's parameters (the same for every participant) and the
/// participants' total samples (a site masks Δ · n_i / `total_samples`, or Δ / n with `uniform`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecureTrain {
    pub attempt: u32,
    pub params: SecAggParams,
    pub total_samples: u64,
    /// Every site weighs 1/n (n participants) instead of n_i/`total_samples`: differential privacy's unweighted
    /// mean.
    pub uniform: bool,
}

/// A site's hello: who the site is, which process (`instance`, random per process; its actor is registered as
/// [`site_process_name`]), the admission this process held before (`held`: `None` for a process that never was
/// admitted), what local state it starts with (`local_state`: the newest round its state directory holds; `None`:
/// it starts from the global weights), and how much data it holds. (On the wire, bincode encodes this newtype
/// variant exactly as the struct variant it replaced.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteHello {
    pub protocol: u32,
    pub site_id: u32,
    pub instance: u64,
    pub held: Option<u64>,
    pub local_state: Option<u64>,
    pub num_samples: u64,
    pub class_counts: Vec<u64>,
}

impl ToServer {
    /// The site and the admission generation a site frame was sent under (`None` for a hello and role frames).
    pub fn site_generation(&self) -> Option<(u32, u64)> {
        match self {
            ToServer::Pong { site_id, generation, .. }
            | ToServer::OutOfRound { site_id, generation, .. }
            | ToServer::Evaluated { site_id, generation, .. }
            | ToServer::SecAgg { site_id, generation, .. } => Some((*site_id, *generation)),
            ToServer::Hello(_) | ToServer::RoleHello { .. } | ToServer::RoleReport { .. } => None,
        }
    }
}

/// A role's answer to one round: named numbers (recorded in the round's report, exported as
/// `histofed_role_metric{role,metric}`) and the files it produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleReport {
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub artifacts: Vec<String>,
}

/// The record of a completed round as roles see it (a summary of `report::RoundRecord`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub attempts: u32,
    pub participants: Vec<u32>,
    pub contributors: Vec<u32>,
    pub dropped: Vec<u32>,
    pub rejected: u32,
    pub mean_losses: LossSummary,
    /// Known only when the evaluator scored the round before the event left (usually it has not yet: the score
    /// lands in report.json later).
    pub frechet_distance: Option<f64>,
    pub global_step_norm: f64,
    pub wall_secs: f64,
    /// The checkpoint's commit record (file name in the server's checkpoint directory).
    pub checkpoint: String,
    pub completed_unix_ms: u64,
    /// Total samples of the contributing sites.
    pub num_samples: u64,
}

/// A round is completed (its checkpoint is durable): what happened, and where its global weights are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundEvent {
    pub round: u64,
    /// Rounds the run is configured for; `round == rounds_configured` is the last one.
    pub rounds_configured: u64,
    pub summary: RoundSummary,
    /// The round's global weights (generator and discriminator, prefixed) on the bulk plane, retained for a few
    /// rounds; `None` when the server could not publish them.
    pub weights: Option<BlobRef>,
}

/// Server → role frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToRole {
    /// Not admitted (protocol version, identity, name): the role must not go on.
    Refused { reason: String },
    /// Admitted: download with `reader_id` + `token` (download-only) while joined.
    Welcome { protocol: u32, reader_id: u32, token: u64 },
    /// A round completed.
    Round(Box<RoundEvent>),
    /// The run is over (the server exits unless it stays up).
    RunOver { reason: String },
}

/// What a site says about a finished local round. It travels as the metadata of the update's bulk upload (the
/// weights are the upload's body), so the server reads it together with the weights it describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateMeta {
    pub protocol: u32,
    pub round: u64,
    /// The admission the update was sent under: the server folds it only while that admission is the site's
    /// current one (a process whose site was taken over is fenced, even for an upload it had in flight).
    pub generation: u64,
    /// What the site reports about its round, as the server records it for each contributor (one struct on both
    /// sides of the wire, so a field added to the record travels without being copied by hand).
    pub site: SiteRound,
    /// `Some(attempt)`: the body is the site's masked input to that attempt's secure aggregation (u32
    /// little-endian), not safetensors weights.
    pub masked: Option<u32>,
}

impl UpdateMeta {
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        bincode::serialize(self).map_err(|e| format!("cannot encode update metadata: {e}"))
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        bincode::deserialize(bytes).map_err(|e| format!("undecodable update metadata ({} bytes): {e}", bytes.len()))
    }
}

/// The body of a masked input's upload (`UpdateMeta::masked`): its values as u32 little-endian, one after another.
pub fn encode_masked(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Inverse of [`encode_masked`]: site `site`'s masked input.
pub fn decode_masked(site: u32, body: &[u8]) -> Result<crate::federation::secagg::MaskedInput, String> {
    if !body.len().is_multiple_of(4) {
        return Err(format!("a masked input of {} bytes (not a whole number of u32 values)", body.len()));
    }
    let values = body.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(crate::federation::secagg::MaskedInput { site, values })
}

/// Where a site fetches a round's global weights on the bulk plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Port of the server's bulk endpoint (same host as its cluster address).
    pub port: u16,
    pub key: u64,
    pub len: u64,
    /// SHA-256 of the blob (hex): checked after download, and names the round's starting point on the site's disk.
    pub sha256: String,
}

/// Server → site frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToSite {
    /// Answer to a `Hello` whose protocol version differs: the site must not take part.
    Refused { reason: String },
    /// Admission: the site's token for bulk transfers while it is a member, and the admission's generation (every
    /// later frame of the site carries it).
    Welcome { protocol: u32, token: u64, generation: u64 },
    /// Train round `round` from the global weights published at `weights` (safetensors bytes); with `secure`, the
    /// update goes into that secure aggregation instead of being sent in the clear.
    Train {
        protocol: u32,
        round: u64,
        local_steps: u32,
        batch_size: u32,
        hints: SiteHints,
        weights: BlobRef,
        secure: Option<Box<SecureTrain>>,
    },
    /// A stage of round `round`'s secure aggregation (attempt `attempt`).
    SecAgg { round: u64, attempt: u32, stage: SecAggToSite },
    /// Heartbeat: the site answers with `Pong { seq }`.
    Ping { seq: u64 },
    /// Federated evaluation: score round `round`'s global generator (at `weights`) on the local validation split
    /// and answer with `ToServer::Evaluated`.
    Evaluate { protocol: u32, round: u64, weights: BlobRef },
    /// The run is over: exit cleanly.
    Shutdown { reason: String },
    /// Another process now holds this site's identity: this one must stop (and not rejoin).
    Fenced { reason: String },
}

const TO_SERVER_TAG: &str = "histofed.ToServer.v1";
const TO_SITE_TAG: &str = "histofed.ToSite.v1";
const TO_ROLE_TAG: &str = "histofed.ToRole.v1";

fn encode<T: Serialize>(tag: &str, frame: &T) -> Result<SerializedMessage, BoxedDowncastErr> {
    let args = bincode::serialize(frame).map_err(|_| BoxedDowncastErr)?;
    Ok(SerializedMessage::Cast { variant: tag.to_string(), args, metadata: None })
}

fn decode<T: for<'de> Deserialize<'de>>(tag: &str, msg: SerializedMessage) -> Result<T, String> {
    match msg {
        SerializedMessage::Cast { variant, args, .. } if variant == tag => {
            bincode::deserialize(&args).map_err(|e| format!("undecodable {tag} frame ({} bytes): {e}", args.len()))
        }
        SerializedMessage::Cast { variant, .. } | SerializedMessage::Call { variant, .. } => {
            Err(format!("unexpected frame {variant:?} (expected {tag}): protocol mismatch?"))
        }
        SerializedMessage::CallReply(..) => Err("unexpected call reply".into()),
    }
}

/// Messages of the server actor.
#[derive(Debug)]
pub enum ServerMsg {
    /// A frame from a site (remote), or why it could not be decoded.
    FromSite(Result<ToServer, String>),
    /// The round's deadline passed.
    RoundDeadline { round: u64, attempt: u32 },
    /// Time to stop waiting for all sites before the first round.
    JoinTimeout,
    /// Begin the next round (sent to itself, so the mailbox drains between rounds).
    StartRound,
    /// Heartbeat timer, stamped when it was enqueued: ping every site, and declare lost those whose oldest
    /// unanswered ping is too old *at that time* (a server that was busy must not blame sites for its backlog).
    Heartbeat { at: std::time::Instant },
    /// The grace period after quorum passed: close the round with whoever answered.
    GraceExpired { round: u64, attempt: u32 },
    /// The bulk plane refused a transfer made with the token of a site admission that was taken over.
    FencedTransfer { site_id: u32, token: u64, op: crate::cluster::bulk::BulkOp },
    /// An update arrived on the bulk plane (local only: it holds one of the bounded upload slots until dropped).
    Upload(crate::cluster::bulk::Upload),
    /// The checkpoint writer finished (or failed) writing round `round`.
    Saved { round: u64, result: Result<String, String> },
    /// The evaluator scored round `round` (boxed: a report is far larger than every other message).
    Evaluated { round: u64, result: Box<Result<EvalReport, String>> },
    /// A backoff elapsed: start a new child (and for the writer, retry the save).
    RestartChild(ServerChild),
    /// The final evaluation took too long: finish the run without it.
    FinishNow,
    /// Kubernetes reported a change of a site's pod or of a node (when the server watches the API).
    Kube(crate::kube::KubeEvent),
    /// A force-delete of a site pod stranded on a dead node ended.
    Remediated(Remediated),
    /// The aggregator thread checked one update (decoded, validated, folded), or refused it.
    Folded(Box<Folded>),
    /// The aggregator thread finished a round's aggregation.
    Aggregated(Box<Aggregated>),
    /// The aggregator thread encoded round `round`'s new global as safetensors, with its SHA-256 (`None`: it could
    /// not).
    Encoded { round: u64, blob: Option<(Arc<Vec<u8>>, String)> },
    /// A stage of the open round's secure aggregation reached its deadline.
    SecAggDeadline { round: u64, attempt: u32, stage: crate::federation::secagg::Stage },
    /// A masked input arrived on the bulk plane and was decoded off the actor (or could not be).
    Masked(Box<MaskedArrival>),
    /// The aggregator thread removed the masks of a round's secure aggregation and folded the sum (or could not).
    Unmasked(Box<UnmaskedRound>),
    /// The aggregator thread died before it answered (a panic in a strategy): the run cannot go on.
    AggregatorGone,
    /// `/pulse`: answer at once with where the server stands.
    Pulse(ractor::RpcReplyPort<crate::observability::PulseReply>),
}

/// How the server's force-delete of site `site_id`'s pod `pod` (on dead node `node`) ended.
#[derive(Debug, Clone)]
pub struct Remediated {
    pub site_id: u32,
    pub pod: String,
    pub uid: String,
    pub node: String,
    pub result: Result<crate::kube::Deleted, String>,
}

/// One update, checked off the actor by the server's aggregator thread.
#[derive(Debug)]
pub struct Folded {
    /// What the site said about its round (from the upload's metadata).
    pub site: SiteRound,
    pub round: u64,
    pub attempt: u32,
    /// Seconds the fold took (decoding and validation not counted); or why it was refused, with the detail for the report.
    pub outcome: Result<f64, (Refused, String)>,
}

/// A masked input, decoded off the actor.
#[derive(Debug)]
pub struct MaskedArrival {
    pub site: SiteRound,
    pub round: u64,
    pub attempt: u32,
    pub input: Result<crate::federation::secagg::MaskedInput, String>,
}

/// A secure round's unmasking, done off the actor: the new global (as a plain aggregation's), or why it failed —
/// closed: no model comes out of a sum that cannot be trusted.
#[derive(Debug)]
pub struct UnmaskedRound {
    pub round: u64,
    pub attempt: u32,
    pub result: Result<RoundAggregate, String>,
}

/// A round's aggregation, done off the actor by the server's aggregator thread.
#[derive(Debug)]
pub struct Aggregated {
    pub round: u64,
    pub result: Result<RoundAggregate, AggregateError>,
}

/// The new global model and what the round's checkpoint and record need from the strategy.
pub struct RoundAggregate {
    /// The new global weights.
    pub global: Arc<Weights>,
    /// ‖new − previous global‖₂ (NaN if the layouts differ).
    pub step: f64,
    /// The strategy's serialisable state (`Strategy::state`).
    pub strategy_state: serde_json::Value,
    /// What the checkpoint writer saves: the global, plus the strategy's tensor state under
    /// `actors::server::STRATEGY_STATE` when it has one.
    pub checkpoint: Arc<Weights>,
    /// The hints the strategy sends with the next round.
    pub hints: SiteHints,
    /// What a differentially private strategy released this round (`None` without DP).
    pub dp: Option<crate::federation::strategy::DpRelease>,
    /// How the round's secure aggregation ended (`None`: aggregated in the clear).
    pub secure: Option<crate::records::RoundSecure>,
    /// Seconds the aggregation took.
    pub secs: f64,
}

impl std::fmt::Debug for RoundAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundAggregate")
            .field("values", &self.global.num_values())
            .field("step", &self.step)
            .field("secs", &self.secs)
            .finish_non_exhaustive()
    }
}

impl Message for ServerMsg {
    fn serializable() -> bool {
        true
    }
    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            ServerMsg::FromSite(Ok(frame)) => encode(TO_SERVER_TAG, &frame),
            _ => Err(BoxedDowncastErr),
        }
    }
    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(ServerMsg::FromSite(decode(TO_SERVER_TAG, msg)))
    }
}

/// Messages of a site actor.
#[derive(Debug)]
pub enum SiteMsg {
    /// A frame from the server (remote), or why it could not be decoded.
    FromServer(Result<ToSite, String>),
    /// The trainer finished (or gave up on) a job.
    TrainerDone(Result<LocalResult, TrainFailure>),
    /// (Re)connect to the server's node.
    Connect,
    /// A session event of this node (server session ready or lost).
    Node(crate::cluster::NodeEvent),
    /// Backoff elapsed: start a new trainer and hand it the interrupted job.
    RestartTrainer,
    /// The round's global weights arrived from the bulk plane (or could not be fetched).
    GlobalFetched { round: u64, result: Result<Weights, String> },
    /// An upload of round `round` finished.
    Uploaded { round: u64, result: Result<(), String> },
    /// The bulk plane refused a transfer as fenced: another process holds this site now.
    FencedTransfer { reason: String },
    /// No server for `cluster.site_give_up_secs`: stop.
    GiveUpCheck,
    /// The weights of a round to evaluate arrived (or could not be fetched).
    EvalFetched { round: u64, result: Result<Weights, String> },
    /// The site's evaluator scored a round (or failed to).
    LocalEvaluated { round: u64, result: Result<SiteEval, String> },
    /// Backoff elapsed: start a new local evaluator.
    RestartEvaluator,
    /// The update of secure round `round` (attempt `attempt`) was masked off the actor: the protocol's state back,
    /// and the masked input's bytes with the count of clipped values (or why it could not be made).
    Masked {
        round: u64,
        attempt: u32,
        protocol: Option<Box<crate::federation::secagg::SiteRound>>,
        meta: UpdateMeta,
        result: Result<(Vec<u8>, usize), String>,
    },
}

impl Message for SiteMsg {
    fn serializable() -> bool {
        true
    }
    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            SiteMsg::FromServer(Ok(frame)) => encode(TO_SITE_TAG, &frame),
            _ => Err(BoxedDowncastErr),
        }
    }
    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(SiteMsg::FromServer(decode(TO_SITE_TAG, msg)))
    }
}

/// Messages of a role host (`roles::RoleHost`).
#[derive(Debug)]
pub enum RoleMsg {
    /// A frame from the server (remote), or why it could not be decoded.
    FromServer(Result<ToRole, String>),
    /// (Re)connect to the server's node.
    Connect,
    /// A session event of this node.
    Node(crate::cluster::NodeEvent),
    /// A round's weights arrived from the bulk plane (`None`: the role does not want them), or could not be had.
    Fetched { event: Box<RoundEvent>, result: Result<Option<std::sync::Arc<Weights>>, String> },
    /// The runner finished a round.
    RunnerDone { round: u64, result: Result<Option<RoleReport>, String> },
    /// Backoff elapsed: start a new runner and hand it the interrupted round.
    RestartRunner,
}

impl Message for RoleMsg {
    fn serializable() -> bool {
        true
    }
    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            RoleMsg::FromServer(Ok(frame)) => encode(TO_ROLE_TAG, &frame),
            _ => Err(BoxedDowncastErr),
        }
    }
    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(RoleMsg::FromServer(decode(TO_ROLE_TAG, msg)))
    }
}

/// Messages of a role's runner (local only): run the role's pure logic on one round, on its dedicated thread.
#[derive(Debug)]
pub enum RunnerMsg {
    Run { event: Box<RoundEvent>, weights: Option<std::sync::Arc<Weights>>, reply_to: ActorRef<RoleMsg> },
}
impl Message for RunnerMsg {}

/// Messages of a site's evaluator actor (local only); the answer comes back as `SiteMsg::LocalEvaluated`.
#[derive(Debug)]
pub enum SiteEvaluatorMsg {
    /// `fault`: injected on purpose (tests, chaos) — the evaluator's thread panics or stalls first.
    Evaluate { round: u64, weights: Weights, fault: InjectedFault, reply_to: ActorRef<SiteMsg> },
}
impl Message for SiteEvaluatorMsg {}

/// Messages of the generator-trainer actor (local only).
#[derive(Debug)]
pub enum TrainerMsg {
    Train { job: LocalJob, reply_to: ActorRef<SiteMsg> },
}
impl Message for TrainerMsg {}

/// Messages of the evaluator actor (local only). The answer comes back as `ServerMsg::Evaluated`, so the server's
/// mailbox (heartbeats, uploads) keeps moving while an evaluation runs.
#[derive(Debug)]
pub enum EvaluatorMsg {
    Evaluate { round: u64, weights: Arc<Weights>, reply_to: ActorRef<ServerMsg> },
}
impl Message for EvaluatorMsg {}

/// Messages of the checkpoint writer (local only); answers with `ServerMsg::Saved`.
#[derive(Debug)]
pub enum WriterMsg {
    /// Write `weights` as the parts named, each the tensors under a name prefix: `(part, prefix)`.
    Save {
        meta: crate::federation::checkpoint::CheckpointMeta,
        weights: Arc<Weights>,
        parts: Vec<(String, String)>,
        reply_to: ActorRef<ServerMsg>,
    },
}
impl Message for WriterMsg {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_wire_form() {
        let frame = ToServer::Hello(SiteHello {
            protocol: PROTOCOL_VERSION,
            site_id: 2,
            instance: 7,
            held: Some(3),
            local_state: Some(2),
            num_samples: 100,
            class_counts: vec![1, 2],
        });
        let wire = ServerMsg::FromSite(Ok(frame.clone())).serialize().unwrap();
        match ServerMsg::deserialize(wire).unwrap() {
            ServerMsg::FromSite(Ok(back)) => assert_eq!(back, frame),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn update_metadata_round_trips_and_garbage_is_an_error() {
        let meta = UpdateMeta {
            protocol: PROTOCOL_VERSION,
            round: 5,
            generation: 4,
            site: SiteRound {
                site_id: 2,
                num_samples: 100,
                losses: LossSummary { d_loss: 0.5, g_loss: 1.5 },
                steps: 3,
                train_secs: 0.25,
                trainer_restarts: 0,
                batch_size: 16,
                oom_retries: 0,
                resumed_from_step: 2,
                from_local_checkpoint: false,
            },
            masked: Some(1),
        };
        assert_eq!(UpdateMeta::decode(&meta.encode().unwrap()).unwrap(), meta);
        assert!(UpdateMeta::decode(&[1, 2, 3]).unwrap_err().contains("undecodable"));
    }

    #[test]
    fn masked_inputs_round_trip_and_a_torn_body_is_an_error() {
        let values = vec![0, 1, u32::MAX, 0x0102_0304];
        let body = encode_masked(&values);
        assert_eq!(decode_masked(3, &body).unwrap().values, values);
        assert!(decode_masked(3, &body[..5]).unwrap_err().contains("not a whole number"));
    }

    #[test]
    fn garbage_and_foreign_frames_become_errors_not_panics() {
        let garbage = SerializedMessage::Cast { variant: TO_SERVER_TAG.into(), args: vec![0xff; 7], metadata: None };
        assert!(matches!(ServerMsg::deserialize(garbage), Ok(ServerMsg::FromSite(Err(_)))));
        let foreign = SerializedMessage::Cast { variant: "Other".into(), args: vec![], metadata: None };
        match SiteMsg::deserialize(foreign) {
            Ok(SiteMsg::FromServer(Err(e))) => assert!(e.contains("protocol mismatch")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(ServerMsg::StartRound.serialize().is_err());
    }

    #[test]
    fn role_frames_round_trip_and_names_map_back() {
        let event = RoundEvent {
            round: 3,
            rounds_configured: 3,
            summary: RoundSummary { contributors: vec![0, 1], frechet_distance: Some(2.5), ..Default::default() },
            weights: Some(BlobRef { port: 9, key: 1 << 48 | 3, len: 10, sha256: "ab".into() }),
        };
        let wire = RoleMsg::FromServer(Ok(ToRole::Round(Box::new(event.clone())))).serialize().unwrap();
        match RoleMsg::deserialize(wire).unwrap() {
            RoleMsg::FromServer(Ok(ToRole::Round(back))) => assert_eq!(*back, event),
            other => panic!("unexpected {other:?}"),
        }
        let report = RoleReport { metrics: [("bytes".to_string(), 1.0)].into(), artifacts: vec!["x".into()] };
        let frame = ToServer::RoleReport { role: "model-registry".into(), round: 3, report };
        match ServerMsg::deserialize(ServerMsg::FromSite(Ok(frame.clone())).serialize().unwrap()).unwrap() {
            ServerMsg::FromSite(Ok(back)) => assert_eq!(back, frame),
            other => panic!("unexpected {other:?}"),
        }
        // A site frame sent to a role is an error, not a panic.
        let site_frame = SiteMsg::FromServer(Ok(ToSite::Ping { seq: 1 })).serialize().unwrap();
        assert!(matches!(RoleMsg::deserialize(site_frame), Ok(RoleMsg::FromServer(Err(_)))));
        assert_eq!(role_from_actor_name(&role_actor_name("model-registry")), Some("model-registry"));
        assert_eq!(role_from_actor_name("histofed-role-"), None);
        assert_eq!(role_from_actor_name(&site_actor_name(1)), None);
    }

    #[test]
    fn site_names_map_to_ids() {
        assert_eq!(site_id_from_name(&site_actor_name(17)), Some(17));
        assert_eq!(site_process_name(3, 0xab), "histofed-site-3.00000000000000ab");
        assert_eq!(site_id_from_name(&site_process_name(3, u64::MAX)), Some(3));
        assert_eq!(site_id_from_name("histofed-site-x.00ab"), None);
        assert_eq!(site_id_from_name("histofed-site-x"), None);
        assert_eq!(site_id_from_name("other"), None);
    }
}
