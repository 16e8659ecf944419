//! A site's own durable state: where its local training of the current round got to, and the update it finished.
//!
//! Why: a site process that is killed (pod deleted, OOM-killed, node drained) comes back with nothing in memory.
//! Without this it would re-train the round from its start — or, if it had finished but the upload was lost with
//! the server, train it twice. With it, a restarted site (or a restarted trainer) resumes the round from the last
//! local checkpoint, and a finished update is sent again as it was. Both are keyed by the round *and* the SHA-256 of
//! the round's global weights, so state from another round, another run or another server incarnation that
//! re-issued the round from other weights is never mistaken for this one.
//!
//! Built on the same atomic, checksummed [`CheckpointStore`] as the server's checkpoints: a torn or corrupt file is
//! ignored (with a warning), never loaded.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::federation::checkpoint::{part_metadata, CheckpointError, CheckpointMeta, CheckpointStore, PartData};
use crate::federation::weights::Weights;

/// Where a round's local training got to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub round: u64,
    pub global_sha256: String,
    pub steps_done: u32,
    pub batch_size: u32,
    /// Sums of the losses over the steps done (to report the round's mean at the end).
    pub d_sum: f64,
    pub g_sum: f64,
}

/// A finished local round, kept until the next round starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub round: u64,
    pub global_sha256: String,
    /// The update's metadata as it was sent (bincode of `UpdateMeta`, hex), so a resend is identical.
    pub meta_hex: String,
}

/// The two slots of a site's state directory: `progress/` and `finished/`, each keeping only its newest entry.
#[derive(Debug, Clone)]
pub struct SiteStore {
    dir: PathBuf,
    progress: CheckpointStore,
    finished: CheckpointStore,
}

const PART: &str = "model";

fn meta(round: u64, extra: serde_json::Value) -> CheckpointMeta {
    CheckpointMeta {
        round,
        strategy: String::new(),
        strategy_state: serde_json::Value::Null,
        membership: Vec::new(),
        config_hash: String::new(),
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        extra,
    }
}

impl SiteStore {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let dir = dir.as_ref().to_path_buf();
        Ok(Self {
            progress: CheckpointStore::open(dir.join("progress"), 1)?,
            finished: CheckpointStore::open(dir.join("finished"), 1)?,
            dir,
        })
    }

    /// Whether the site state in `dir` holds a committed local checkpoint of `round`, without opening the store for
    /// writing (a reader watching a running site, e.g. the chaos runner).
    pub fn progress_saved(dir: &Path, round: u64) -> bool {
        CheckpointStore::open_for_reading(dir.join("progress"))
            .and_then(|s| s.list_rounds())
            .is_ok_and(|rounds| rounds.contains(&round))
    }

    /// The newest round this store holds anything of (progress or a finished update); `None` for an empty store —
    /// a new volume, or one that did not survive (a node-local volume of a dead node): the site then starts its next
    /// round from the server's current global weights.
    pub fn newest_round(&self) -> Option<u64> {
        let newest = |s: &CheckpointStore| s.list_rounds().ok().and_then(|r| r.last().copied());
        newest(&self.progress).max(newest(&self.finished))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn save_progress(&self, p: &Progress, weights: &Weights) -> Result<(), CheckpointError> {
        let extra = serde_json::to_value(p).unwrap_or(serde_json::Value::Null);
        self.progress.save(&meta(p.round, extra), &[(PART, weights)]).map(|_| ())
    }

    /// The saved progress of `round` from the global weights `global_sha256`, if a valid one exists.
    pub fn load_progress(&self, round: u64, global_sha256: &str) -> Option<(Progress, Weights)> {
        let (extra, weights) = latest(&self.progress, round)?;
        let p: Progress = serde_json::from_value(extra).ok()?;
        (p.global_sha256 == global_sha256).then_some((p, weights))
    }

    /// Encodes an update of `round` so that the same bytes can be uploaded and then kept with
    /// [`Self::save_finished_encoded`] (one encode instead of two; the server ignores the metadata).
    pub fn encode_update(round: u64, weights: &Weights) -> Result<Vec<u8>, CheckpointError> {
        weights.to_safetensors(Some(part_metadata(round, PART))).map_err(|e| CheckpointError::Serialize(e.to_string()))
    }

    /// Keeps a finished update, given as the bytes [`Self::encode_update`] made for the same round.
    pub fn save_finished_encoded(&self, f: &Finished, bytes: &[u8]) -> Result<(), CheckpointError> {
        let extra = serde_json::to_value(f).unwrap_or(serde_json::Value::Null);
        self.finished.save_parts(&meta(f.round, extra), &[(PART, PartData::Encoded(bytes))]).map(|_| ())
    }

    /// The finished update of `round` from the global weights `global_sha256`, if a valid one exists.
    pub fn load_finished(&self, round: u64, global_sha256: &str) -> Option<(Finished, Weights)> {
        let (extra, weights) = latest(&self.finished, round)?;
        let f: Finished = serde_json::from_value(extra).ok()?;
        (f.global_sha256 == global_sha256).then_some((f, weights))
    }
}

/// The entry of `round`, if the store holds a valid one. Only that round's commit record is looked at: the store's
/// other entry (the previous round's, 40 MB for a 10M-parameter model) is not read, hashed and decoded just to find
/// that it is another round — that was once done at the start of every round.
fn latest(store: &CheckpointStore, round: u64) -> Option<(serde_json::Value, Weights)> {
    let mut ck = match store.load_round(round) {
        Ok(ck) => ck,
        Err(CheckpointError::NotFound(_)) => return None,
        Err(CheckpointError::Corrupt { reason, .. }) => {
            tracing::warn!(dir = %store.dir().display(), round, %reason, "ignoring corrupt local state");
            return None;
        }
        Err(e) => {
            tracing::warn!(dir = %store.dir().display(), error = %e, "cannot read the site's local state");
            return None;
        }
    };
    let weights = ck.parts.remove(PART)?;
    Some((ck.meta.extra, weights))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::weights::NamedTensor;

    fn w(v: f32) -> Weights {
        Weights::new(vec![NamedTensor::new("a", vec![2], vec![v, v]).unwrap()]).unwrap()
    }

    #[test]
    fn progress_and_finished_are_found_only_for_their_round_and_global() {
        let dir = tempfile::tempdir().unwrap();
        let store = SiteStore::open(dir.path()).unwrap();
        assert!(store.load_progress(1, "abc").is_none());
        let p =
            Progress { round: 3, global_sha256: "abc".into(), steps_done: 20, batch_size: 8, d_sum: 1.0, g_sum: 2.0 };
        store.save_progress(&p, &w(1.5)).unwrap();
        let (back, weights) = store.load_progress(3, "abc").unwrap();
        assert_eq!((back, weights), (p.clone(), w(1.5)));
        assert!(store.load_progress(3, "other").is_none(), "another global is another round");
        assert!(store.load_progress(4, "abc").is_none());
        // A later save replaces the earlier one (only the newest is kept).
        store.save_progress(&Progress { steps_done: 40, ..p }, &w(2.5)).unwrap();
        assert_eq!(store.load_progress(3, "abc").unwrap().0.steps_done, 40);

        let f = Finished { round: 3, global_sha256: "abc".into(), meta_hex: "00ff".into() };
        store.save_finished_encoded(&f, &SiteStore::encode_update(3, &w(3.0)).unwrap()).unwrap();
        // Bytes encoded for another round are refused, not stored as a checkpoint that would not load.
        let wrong = SiteStore::encode_update(2, &w(9.0)).unwrap();
        assert!(store.save_finished_encoded(&Finished { round: 4, ..f.clone() }, &wrong).is_err());
        // Reopening (a restarted process) sees the same state.
        let again = SiteStore::open(dir.path()).unwrap();
        assert_eq!(again.load_finished(3, "abc").unwrap(), (f, w(3.0)));
    }

    #[test]
    fn corrupt_state_is_ignored_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SiteStore::open(dir.path()).unwrap();
        let p = Progress { round: 1, global_sha256: "x".into(), steps_done: 5, batch_size: 8, d_sum: 0.0, g_sum: 0.0 };
        store.save_progress(&p, &w(1.0)).unwrap();
        for entry in std::fs::read_dir(dir.path().join("progress")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "safetensors") {
                let mut bytes = std::fs::read(&path).unwrap();
                let n = bytes.len();
                bytes[n - 1] ^= 0xff;
                std::fs::write(&path, bytes).unwrap();
            }
        }
        assert!(store.load_progress(1, "x").is_none());
    }
}
