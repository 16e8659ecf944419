//! Where a server process starts from: the run's newest valid checkpoint and the report beside it, or a fresh run
//! whose initial weights are saved as round 0 first (so a restart before round 1 resumes the very same model).
//!
//! Why here and not in the command line: resuming is the server's persistence logic — which checkpoint counts, what
//! a report that missed its last durable round gets back, which configuration may continue a run — and it is the
//! same for every way a server is started.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::state::CHECKPOINT_PARTS;
use crate::config::Config;
use crate::federation::checkpoint::{CheckpointError, CheckpointMeta, CheckpointStore, PartData};
use crate::federation::weights::{Weights, WeightsError};
use crate::models::{DISCRIMINATOR_PREFIX, GENERATOR_PREFIX};
use crate::records::{RoundRecord, RunReport};

/// A run found on disk.
#[derive(Debug)]
pub struct Resumed {
    /// The newest durable round's global weights (generator and discriminator, prefixed).
    pub initial: Weights,
    /// Rounds completed (0: only the initial weights were saved).
    pub completed: u64,
    /// The report so far, cut back to the checkpoint's round and completed from the checkpoint when needed.
    pub report: RunReport,
    /// The strategy's saved state (server optimisers), when it has one.
    pub strategy_state: Option<Weights>,
}

#[derive(Debug, Error)]
pub enum ResumeError {
    #[error(
        "{dir} holds checkpoints of another configuration (hash {found} vs {want}): use another --out or remove them"
    )]
    OtherConfiguration { dir: PathBuf, found: String, want: String },
    #[error("checkpoint of round {0} lacks its generator or discriminator")]
    MissingPart(u64),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// The report of a run that starts now.
pub fn fresh_report(cfg: &Config) -> RunReport {
    RunReport {
        run: cfg.runtime.out_dir.display().to_string(),
        config_hash: cfg.hash(),
        model: format!("{} × {} ({})", cfg.model.gan, cfg.model.discriminator, cfg.model.preset),
        strategy: cfg.federation.strategy.clone(),
        partition: cfg.data.partition.clone(),
        rounds_configured: cfg.federation.rounds,
        ..RunReport::default()
    }
}

/// The newest valid checkpoint in `store` (corrupt newer ones are logged and skipped) with the report in `out`;
/// `None` for a fresh run. A checkpoint of another configuration is an error naming both hashes.
pub fn resume(store: &CheckpointStore, cfg: &Config, out: &Path) -> Result<Option<Resumed>, ResumeError> {
    let loaded = store.load_latest()?;
    for (path, why) in &loaded.skipped {
        tracing::warn!(path = %path.display(), %why, "skipping a corrupt checkpoint");
    }
    let Some(ck) = loaded.checkpoint else { return Ok(None) };
    if ck.meta.config_hash != cfg.hash() {
        return Err(ResumeError::OtherConfiguration {
            dir: out.to_path_buf(),
            found: ck.meta.config_hash.clone(),
            want: cfg.hash(),
        });
    }
    let round = ck.meta.round;
    let (Some(g), Some(d)) = (ck.parts.get("generator"), ck.parts.get("discriminator")) else {
        return Err(ResumeError::MissingPart(round));
    };
    let initial = Weights::join_prefixed(&[(GENERATOR_PREFIX, g), (DISCRIMINATOR_PREFIX, d)])?;
    let mut report = RunReport::read(out).unwrap_or_else(|_| fresh_report(cfg));
    report.rounds.retain(|r| r.round <= round);
    // Killed between making the round durable and rewriting the report: the record is in the checkpoint.
    if round > 0 && !report.rounds.iter().any(|r| r.round == round) {
        match ck.meta.extra.get("record").cloned().map(serde_json::from_value::<RoundRecord>) {
            Some(Ok(record)) => {
                tracing::warn!(round, "the report missed the last durable round; restored it from its checkpoint");
                report.rounds.push(record);
                report.rounds.sort_by_key(|r| r.round);
            }
            _ => tracing::warn!(round, "the report misses round {round} and its checkpoint holds no record"),
        }
    }
    if round > 0 {
        report.resumed_from_round = Some(round);
        tracing::info!(round, "resuming from checkpoint");
    }
    Ok(Some(Resumed { initial, completed: round, report, strategy_state: ck.parts.get("strategy").cloned() }))
}

/// Saves a fresh run's initial weights as round 0.
pub fn save_initial(store: &CheckpointStore, cfg: &Config, initial: &Weights) -> Result<(), CheckpointError> {
    let meta = CheckpointMeta {
        round: 0,
        strategy: cfg.federation.strategy.clone(),
        strategy_state: serde_json::Value::Null,
        membership: Vec::new(),
        config_hash: cfg.hash(),
        created_unix_ms: 0,
        extra: serde_json::json!({ "initial": true }),
    };
    let parts: Vec<(&str, PartData)> =
        CHECKPOINT_PARTS.iter().map(|(name, prefix)| (*name, PartData::Weights(initial, prefix))).collect();
    store.save_parts(&meta, &parts)?;
    Ok(())
}
