//! Every message of the system and its wire form, in one place.
//!
//! Why hand-written `ractor::Message` impls instead of `#[derive(RactorClusterMessage)]`: the derive decodes with
//! `BytesConvertable::from_bytes`, which cannot fail — a malformed or mismatched frame panics inside ractor_cluster
//! and is silently dropped. Here a remote frame is one bincode-encoded enum behind a single variant tag that
//! carries the protocol version; decoding never panics, and a frame that does not decode still reaches the actor as
//! `Err(reason)` so it is logged and counted instead of vanishing.

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{ActorRef, Message, RpcReplyPort};
use serde::{Deserialize, Serialize};

pub use crate::evaluation::EvalReport;
use crate::federation::strategy::SiteHints;
use crate::federation::weights::Weights;
pub use crate::training::{LocalJob, LocalResult, LossSummary, TrainFailure, TrainFailureKind};

/// Bumped on any incompatible change of the frames below. Peers compare it at join.
pub const PROTOCOL_VERSION: u32 = 1;

/// Process group of site actors (sites join it, the server monitors it).
pub const SITES_GROUP: &str = "histofed.sites";
/// Process group of the server actor (sites look the server up through it).
pub const SERVER_GROUP: &str = "histofed.server";

/// The registered actor name of site `id`; the server derives the site id from it.
pub fn site_actor_name(id: u32) -> String {
    format!("histofed-site-{id}")
}

/// Inverse of [`site_actor_name`].
pub fn site_id_from_name(name: &str) -> Option<u32> {
    name.strip_prefix("histofed-site-")?.parse().ok()
}

/// Site → server frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToServer {
    /// Sent after joining (and re-joining): who the site is and how much data it holds.
    Hello { protocol: u32, site_id: u32, num_samples: u64, class_counts: Vec<u64> },
    /// A finished local round: full weights (safetensors bytes) and what it took.
    Update {
        protocol: u32,
        site_id: u32,
        round: u64,
        num_samples: u64,
        losses: LossSummary,
        steps: u32,
        train_secs: f64,
        trainer_restarts: u32,
        /// Batch size actually used (smaller than asked after out-of-memory retries).
        batch_size: u32,
        oom_retries: u32,
        weights: Vec<u8>,
    },
    /// Answer to a heartbeat `Ping` (carries its sequence number).
    Pong { site_id: u32, seq: u64 },
    /// The site cannot contribute to this round (restart budget exhausted, ...).
    OutOfRound { site_id: u32, round: u64, reason: String },
}

/// Server → site frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToSite {
    /// Answer to a `Hello` whose protocol version differs: the site must not take part.
    Refused { reason: String },
    /// Train round `round` from these global weights (safetensors bytes).
    Train { protocol: u32, round: u64, local_steps: u32, batch_size: u32, hints: SiteHints, weights: Vec<u8> },
    /// Heartbeat: the site answers with `Pong { seq }`.
    Ping { seq: u64 },
    /// The run is over: exit cleanly.
    Shutdown { reason: String },
}

const TO_SERVER_TAG: &str = "histofed.ToServer.v1";
const TO_SITE_TAG: &str = "histofed.ToSite.v1";

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

/// Messages of the generator-trainer actor (local only).
#[derive(Debug)]
pub enum TrainerMsg {
    Train { job: LocalJob, reply_to: ActorRef<SiteMsg> },
}
impl Message for TrainerMsg {}

/// Messages of the evaluator actor (local only).
#[derive(Debug)]
pub enum EvaluatorMsg {
    Evaluate { round: u64, weights: Weights, reply: RpcReplyPort<Result<EvalReport, String>> },
}
impl Message for EvaluatorMsg {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_wire_form() {
        let frame = ToServer::Update {
            protocol: PROTOCOL_VERSION,
            site_id: 2,
            round: 5,
            num_samples: 100,
            losses: LossSummary { d_loss: 0.5, g_loss: 1.5 },
            steps: 3,
            train_secs: 0.25,
            trainer_restarts: 0,
            batch_size: 16,
            oom_retries: 0,
            weights: vec![1, 2, 3],
        };
        let wire = ServerMsg::FromSite(Ok(frame.clone())).serialize().unwrap();
        match ServerMsg::deserialize(wire).unwrap() {
            ServerMsg::FromSite(Ok(back)) => assert_eq!(back, frame),
            other => panic!("unexpected {other:?}"),
        }
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
    fn site_names_map_to_ids() {
        assert_eq!(site_id_from_name(&site_actor_name(17)), Some(17));
        assert_eq!(site_id_from_name("histofed-site-x"), None);
        assert_eq!(site_id_from_name("other"), None);
    }
}
