//! Round checkpoints on local disk: atomic, checksummed, the last N kept, a corrupt latest one falls back.
//!
//! Why this shape: a federated GAN run is days of site compute, and the server must survive being killed at any
//! instant (pod eviction, OOM, node drain) and full or failing disks. So:
//!
//! * A checkpoint is one safetensors file per part (`round-NNNNNN.<part>.safetensors`, loadable in PyTorch with
//!   `safetensors.torch.load_file`, metadata `{"round", "part", "format": "pt"}`) plus a JSON *commit record*
//!   (`round-NNNNNN.json`) holding the meta and the sha256 and size of every part file. The JSON is written last: a
//!   checkpoint exists only once its commit record does, so a crash mid-save leaves at most orphan part files that are
//!   never mistaken for a checkpoint.
//! * Every file is written to a hidden temp file in the same directory (`.<name>.tmp`), fsynced, renamed over its
//!   final name and the directory fsynced, so a name never points at half-written bytes. A failed write (ENOSPC,
//!   EIO, permissions) removes its temp file and any part files this save already renamed, and returns the error; the
//!   earlier checkpoints are untouched.
//! * Loading verifies sizes, checksums and safetensors structure and falls back to the newest checkpoint that passes,
//!   reporting each skipped one so that the caller can log it: bit rot or a truncated file costs one round, not the run.
//! * Saving round r prunes to the `keep` newest complete checkpoints up to r, and removes checkpoints *newer* than r:
//!   those belong to an abandoned timeline (the run was resumed from an older checkpoint) and would otherwise shadow
//!   round r in [`CheckpointStore::load_latest`]. "Complete" during pruning means the commit record parses and every
//!   part file has its recorded size (a cheap check; checksums are verified on load).
//!
//! One writer per directory is assumed: [`CheckpointStore::open`] and `save` delete leftover temp files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::weights::Weights;

/// Version of the commit-record format, stored in every JSON file.
const FORMAT_VERSION: u32 = 1;
const TMP_SUFFIX: &str = ".tmp";

/// What a checkpoint says about the run besides the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub round: u64,
    pub strategy: String,
    pub strategy_state: serde_json::Value,
    pub membership: Vec<String>,
    pub config_hash: String,
    pub created_unix_ms: u64,
    /// Free-form extras, e.g. losses or the data partition.
    pub extra: serde_json::Value,
}

/// One part to save: the tensors of a bundle under a name prefix, stored without it (`""`: the whole bundle; see
/// [`Weights::to_safetensors_prefixed`]), or safetensors bytes already encoded with [`part_metadata`] (a site keeps
/// the very bytes it uploaded instead of encoding its update a second time).
#[derive(Clone, Copy, Debug)]
pub enum PartData<'a> {
    Weights(&'a Weights, &'a str),
    Encoded(&'a [u8]),
}

/// The safetensors metadata every part file carries (checked on load): `{"round", "part", "format": "pt"}`.
pub fn part_metadata(round: u64, part: &str) -> HashMap<String, String> {
    HashMap::from([
        ("round".to_string(), round.to_string()),
        ("part".to_string(), part.to_string()),
        ("format".to_string(), "pt".to_string()),
    ])
}

/// A loaded, verified checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    /// Weight bundles by part name, e.g. "generator", "discriminator".
    pub parts: BTreeMap<String, Weights>,
    /// Directory the checkpoint was loaded from.
    pub dir: PathBuf,
}

/// Result of [`CheckpointStore::load_latest`].
#[derive(Debug)]
pub struct LoadOutcome {
    /// The newest valid checkpoint, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Newer checkpoints that were skipped (their commit record's path, or a part file's path for an orphan), with
    /// the reason. The caller should log each as a warning.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Errors of the checkpoint store.
#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("checkpoint I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("keep must be at least 1")]
    InvalidKeep,
    #[error("invalid part name `{0}`: use 1-64 characters of [A-Za-z0-9_-], each part once")]
    InvalidPart(String),
    #[error("a checkpoint needs at least one part")]
    NoParts,
    #[error("serializing checkpoint: {0}")]
    Serialize(String),
    #[error("no checkpoint for round {0}")]
    NotFound(u64),
    #[error("checkpoint for round {round} is corrupt: {reason}")]
    Corrupt { round: u64, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// One part file's entry in the commit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PartRecord {
    file: String,
    sha256: String,
    size: u64,
}

/// The JSON commit record: its presence is what makes a checkpoint exist.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CommitRecord {
    format: u32,
    meta: CheckpointMeta,
    parts: BTreeMap<String, PartRecord>,
}

/// Which checkpoint file a directory entry is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum FileKind {
    Commit,
    Part(String),
}

fn commit_name(round: u64) -> String {
    format!("round-{round:06}.json")
}

fn part_name(round: u64, part: &str) -> String {
    format!("round-{round:06}.{part}.safetensors")
}

fn valid_part(part: &str) -> bool {
    !part.is_empty() && part.len() <= 64 && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses `round-NNNNNN.json` and `round-NNNNNN.<part>.safetensors`; anything else (temp files included) is `None`.
fn parse_name(name: &str) -> Option<(u64, FileKind)> {
    let rest = name.strip_prefix("round-")?;
    let (digits, tail) = rest.split_once('.')?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let round: u64 = digits.parse().ok()?;
    if tail == "json" {
        return Some((round, FileKind::Commit));
    }
    let part = tail.strip_suffix(".safetensors")?;
    valid_part(part).then(|| (round, FileKind::Part(part.to_string())))
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TMP_SUFFIX)
}

/// Encoded part bytes must be safetensors with this round's part metadata (the header is parsed, not the values).
fn check_encoded(bytes: &[u8], round: u64, part: &str) -> Result<(), CheckpointError> {
    let bad = |why: String| CheckpointError::Serialize(format!("encoded part `{part}` of round {round}: {why}"));
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let st_meta = header.metadata().clone().unwrap_or_default();
    if st_meta != part_metadata(round, part) {
        return Err(bad(format!("metadata {st_meta:?} is not {:?}", part_metadata(round, part))));
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Test-only fault injection: make the n-th file write of this thread fail with ENOSPC after writing half its bytes,
/// as a full disk does.
#[cfg(test)]
mod fault {
    use std::cell::Cell;

    thread_local! {
        static FAIL_AT: Cell<Option<usize>> = const { Cell::new(None) };
        static WRITES: Cell<usize> = const { Cell::new(0) };
    }

    pub fn fail_nth_write(n: Option<usize>) {
        FAIL_AT.with(|f| f.set(n));
        WRITES.with(|w| w.set(0));
    }

    pub fn should_fail() -> bool {
        let n = WRITES.with(|w| {
            let n = w.get();
            w.set(n + 1);
            n
        });
        FAIL_AT.with(|f| f.get() == Some(n))
    }
}

fn write_contents(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    #[cfg(test)]
    if fault::should_fail() {
        file.write_all(&bytes[..bytes.len() / 2])?;
        return Err(io::Error::new(io::ErrorKind::StorageFull, "injected: no space left on device"));
    }
    file.write_all(bytes)
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// Writes `bytes` to `dir/name` atomically: temp file, write, fsync, rename, fsync directory. On error the temp file
/// is removed and `dir/name` is untouched. Also used for the run report, which must never be torn either.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, CheckpointError> {
    let tmp = dir.join(format!(".{name}{TMP_SUFFIX}"));
    let target = dir.join(name);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io_err(&tmp))?;
        write_contents(&mut file, bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        fs::rename(&tmp, &target).map_err(io_err(&target))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(target)
}

/// A directory of round checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

impl CheckpointStore {
    /// Opens (creating if needed) a checkpoint directory that keeps the last `keep` (>= 1) checkpoints, and removes
    /// temp files left by a crashed save.
    pub fn open(dir: impl Into<PathBuf>, keep: usize) -> Result<Self, CheckpointError> {
        if keep == 0 {
            return Err(CheckpointError::InvalidKeep);
        }
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let store = Self { dir, keep };
        store.remove_temp_files()?;
        Ok(store)
    }

    /// Opens an existing checkpoint directory for reading only: nothing is created and no temp file is removed, so a
    /// reader (e.g. `histofed augment`) can look at the directory of a server that is still saving into it. Only
    /// the `load_*` and `list_rounds` methods should be used on the result.
    pub fn open_for_reading(dir: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        let meta = fs::metadata(&dir).map_err(io_err(&dir))?;
        if !meta.is_dir() {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "not a directory");
            return Err(CheckpointError::Io { path: dir, source });
        }
        Ok(Self { dir, keep: usize::MAX })
    }

    /// The round of a commit-record file name (`round-NNNNNN.json`), if `name` is one.
    pub fn commit_round(name: &str) -> Option<u64> {
        match parse_name(name) {
            Some((round, FileKind::Commit)) => Some(round),
            _ => None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Writes `round-NNNNNN.<part>.safetensors` for each part, then `round-NNNNNN.json` (the commit record, holding
    /// sha256 + size of every part file and the meta), each atomically, then prunes. Returns the JSON path.
    ///
    /// Re-saving an existing round first removes its commit record and part files, so a failure mid-way never leaves
    /// a record that points at a mix of old and new part files.
    pub fn save(&self, meta: &CheckpointMeta, parts: &[(&str, &Weights)]) -> Result<PathBuf, CheckpointError> {
        let parts: Vec<(&str, PartData)> = parts.iter().map(|(n, w)| (*n, PartData::Weights(w, ""))).collect();
        self.save_parts(meta, &parts)
    }

    /// [`Self::save`] for parts given as weights or as already-encoded bytes. Encoded bytes must parse as safetensors
    /// and carry this round's [`part_metadata`] (checked from the header, so an unloadable checkpoint is never
    /// written).
    pub fn save_parts(&self, meta: &CheckpointMeta, parts: &[(&str, PartData)]) -> Result<PathBuf, CheckpointError> {
        if parts.is_empty() {
            return Err(CheckpointError::NoParts);
        }
        let mut seen = BTreeSet::new();
        for (part, _) in parts {
            if !valid_part(part) || !seen.insert(*part) {
                return Err(CheckpointError::InvalidPart((*part).to_string()));
            }
        }
        for (part, data) in parts {
            if let PartData::Encoded(bytes) = data {
                check_encoded(bytes, meta.round, part)?;
            }
        }
        self.remove_temp_files()?;
        let round = meta.round;
        let commit_path = self.dir.join(commit_name(round));
        match fs::remove_file(&commit_path) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&commit_path)(e)),
        }
        // Part files of an earlier save of this round are now orphans; drop them so no stale part lingers. Best
        // effort: one that cannot be removed is harmless (no record names it) or makes its rename below fail loudly.
        if let Some(kinds) = self.scan()?.get(&round) {
            for kind in kinds {
                if let FileKind::Part(p) = kind {
                    let path = self.dir.join(part_name(round, p));
                    if let Err(e) = fs::remove_file(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove stale checkpoint part");
                    }
                }
            }
        }

        let mut written: Vec<PathBuf> = Vec::new();
        let result = self.write_files(meta, parts, &mut written);
        match result {
            Ok(path) => {
                self.prune(round);
                Ok(path)
            }
            Err(e) => {
                // No commit record names these files; remove them so the directory holds only complete checkpoints.
                for path in written {
                    let _ = fs::remove_file(path);
                }
                Err(e)
            }
        }
    }

    fn write_files(
        &self,
        meta: &CheckpointMeta,
        parts: &[(&str, PartData)],
        written: &mut Vec<PathBuf>,
    ) -> Result<PathBuf, CheckpointError> {
        let round = meta.round;
        let mut records = BTreeMap::new();
        for (part, data) in parts {
            // Encoded one part at a time, so a save holds at most one part's bytes beside the weights.
            let owned;
            let bytes: &[u8] = match data {
                PartData::Weights(w, prefix) => {
                    owned = w
                        .to_safetensors_prefixed(prefix, Some(part_metadata(round, part)))
                        .map_err(|e| CheckpointError::Serialize(e.to_string()))?;
                    &owned
                }
                PartData::Encoded(b) => b,
            };
            let name = part_name(round, part);
            written.push(write_atomic(&self.dir, &name, bytes)?);
            records.insert(
                (*part).to_string(),
                PartRecord { file: name, sha256: sha256_hex(bytes), size: bytes.len() as u64 },
            );
        }
        let record = CommitRecord { format: FORMAT_VERSION, meta: meta.clone(), parts: records };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| CheckpointError::Serialize(e.to_string()))?;
        write_atomic(&self.dir, &commit_name(round), &json)
    }

    /// Newest checkpoint whose JSON parses and whose every part matches its checksum and parses as safetensors;
    /// skipped corrupt ones are returned with reasons. `checkpoint` is `None` if no valid checkpoint exists.
    pub fn load_latest(&self) -> Result<LoadOutcome, CheckpointError> {
        let files = self.scan()?;
        let mut skipped = Vec::new();
        for (&round, kinds) in files.iter().rev() {
            if !kinds.contains(&FileKind::Commit) {
                let example = kinds.iter().find_map(|k| match k {
                    FileKind::Part(p) => Some(self.dir.join(part_name(round, p))),
                    FileKind::Commit => None,
                });
                let path = example.unwrap_or_else(|| self.dir.join(commit_name(round)));
                skipped.push((path, format!("round {round}: incomplete save, no commit record")));
                continue;
            }
            match self.verify(round) {
                Ok(checkpoint) => return Ok(LoadOutcome { checkpoint: Some(checkpoint), skipped }),
                Err(CheckpointError::Corrupt { reason, .. }) => {
                    skipped.push((self.dir.join(commit_name(round)), reason));
                }
                // Pruned by a concurrent save between the scan and the read.
                Err(CheckpointError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(LoadOutcome { checkpoint: None, skipped })
    }

    /// The verified checkpoint of one round.
    pub fn load_round(&self, round: u64) -> Result<Checkpoint, CheckpointError> {
        if !self.dir.join(commit_name(round)).is_file() {
            return Err(CheckpointError::NotFound(round));
        }
        self.verify(round)
    }

    /// Rounds that have a commit record, ascending (not verified; see [`Self::load_round`]).
    pub fn list_rounds(&self) -> Result<Vec<u64>, CheckpointError> {
        Ok(self.scan()?.into_iter().filter(|(_, kinds)| kinds.contains(&FileKind::Commit)).map(|(r, _)| r).collect())
    }

    /// Checkpoint files in the directory, by round.
    fn scan(&self) -> Result<BTreeMap<u64, BTreeSet<FileKind>>, CheckpointError> {
        let mut files: BTreeMap<u64, BTreeSet<FileKind>> = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some((round, kind)) = name.to_str().and_then(parse_name) else {
                continue;
            };
            files.entry(round).or_default().insert(kind);
        }
        Ok(files)
    }

    fn remove_temp_files(&self) -> Result<(), CheckpointError> {
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            if entry.file_name().to_str().is_some_and(is_temp_name) {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => tracing::info!(path = %path.display(), "removed leftover checkpoint temp file"),
                    Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove checkpoint temp file"),
                }
            }
        }
        Ok(())
    }

    fn read_record(&self, round: u64) -> Result<CommitRecord, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt { round, reason };
        let path = self.dir.join(commit_name(round));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CheckpointError::NotFound(round)),
            Err(e) => return Err(corrupt(format!("cannot read {}: {e}", path.display()))),
        };
        let record: CommitRecord =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("commit record {}: {e}", path.display())))?;
        if record.format != FORMAT_VERSION {
            return Err(corrupt(format!("unsupported commit record format {}", record.format)));
        }
        if record.meta.round != round {
            return Err(corrupt(format!("commit record says round {}", record.meta.round)));
        }
        if record.parts.is_empty() {
            return Err(corrupt("commit record lists no parts".into()));
        }
        for (part, rec) in &record.parts {
            if !valid_part(part) || rec.file != part_name(round, part) {
                return Err(corrupt(format!("commit record names part `{part}` file `{}`", rec.file)));
            }
        }
        Ok(record)
    }

    /// Reads and fully verifies one round; any defect is `Corrupt` naming the file and the problem.
    fn verify(&self, round: u64) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt { round, reason };
        let record = self.read_record(round)?;
        let mut parts = BTreeMap::new();
        for (part, rec) in &record.parts {
            let path = self.dir.join(&rec.file);
            let bytes = fs::read(&path).map_err(|e| corrupt(format!("part file {}: {e}", path.display())))?;
            if bytes.len() as u64 != rec.size {
                return Err(corrupt(format!(
                    "part file {} has {} bytes, expected {}",
                    path.display(),
                    bytes.len(),
                    rec.size
                )));
            }
            let sha = sha256_hex(&bytes);
            if sha != rec.sha256 {
                return Err(corrupt(format!("part file {} has sha256 {sha}, expected {}", path.display(), rec.sha256)));
            }
            let (weights, st_meta) =
                Weights::from_safetensors(&bytes).map_err(|e| corrupt(format!("part file {}: {e}", path.display())))?;
            let round_str = round.to_string();
            if st_meta.get("round") != Some(&round_str) || st_meta.get("part") != Some(part) {
                return Err(corrupt(format!("part file {} metadata {st_meta:?} does not match", path.display())));
            }
            parts.insert(part.clone(), weights);
        }
        Ok(Checkpoint { meta: record.meta, parts, dir: self.dir.clone() })
    }

    /// Cheap completeness check for pruning: the record parses and every part file has its recorded size.
    fn is_complete(&self, round: u64) -> bool {
        let Ok(record) = self.read_record(round) else {
            return false;
        };
        record.parts.values().all(|rec| fs::metadata(self.dir.join(&rec.file)).is_ok_and(|m| m.len() == rec.size))
    }

    /// Keeps the `keep` newest complete checkpoints up to `latest` and removes every other checkpoint file, including
    /// rounds newer than `latest`. Failures are logged, not returned: the new checkpoint is already committed.
    fn prune(&self, latest: u64) {
        let files = match self.scan() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot scan checkpoint directory for pruning");
                return;
            }
        };
        let mut kept = 0usize;
        for (&round, kinds) in files.iter().rev() {
            let keep = round <= latest && kept < self.keep && self.is_complete(round);
            if keep {
                kept += 1;
                continue;
            }
            // Commit record first, so that an interrupted prune never leaves a record without its parts.
            for kind in kinds {
                let path = match kind {
                    FileKind::Commit => self.dir.join(commit_name(round)),
                    FileKind::Part(p) => self.dir.join(part_name(round, p)),
                };
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot prune checkpoint file");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::weights::NamedTensor;

    fn weights(seed: f32) -> Weights {
        Weights::new(vec![
            NamedTensor::new("conv.weight", vec![2, 3], (0..6).map(|i| seed + i as f32 * 0.1).collect()).unwrap(),
            NamedTensor::new("conv.bias", vec![2], vec![seed.sin(), f32::MIN_POSITIVE]).unwrap(),
        ])
        .unwrap()
    }

    fn meta(round: u64) -> CheckpointMeta {
        CheckpointMeta {
            round,
            strategy: "fedavg".into(),
            strategy_state: serde_json::Value::Null,
            membership: vec!["site-a".into(), "site-b".into()],
            config_hash: "abc123".into(),
            created_unix_ms: 1_700_000_000_000 + round,
            extra: serde_json::json!({ "g_loss": 0.5, "d_loss": 0.25 }),
        }
    }

    fn save_round(store: &CheckpointStore, round: u64) -> PathBuf {
        let g = weights(round as f32);
        let d = weights(-(round as f32));
        store.save(&meta(round), &[("generator", &g), ("discriminator", &d)]).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    fn latest_round(store: &CheckpointStore) -> (Option<u64>, Vec<(PathBuf, String)>) {
        let out = store.load_latest().unwrap();
        (out.checkpoint.map(|c| c.meta.round), out.skipped)
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path().join("ckpt"), 3).unwrap();
        let path = save_round(&store, 7);
        assert_eq!(path, tmp.path().join("ckpt/round-000007.json"));
        let cp = store.load_round(7).unwrap();
        assert_eq!(cp.meta, meta(7));
        assert_eq!(cp.dir, tmp.path().join("ckpt"));
        for (part, expected) in [("generator", weights(7.0)), ("discriminator", weights(-7.0))] {
            let got = &cp.parts[part];
            for (a, b) in got.tensors().iter().zip(expected.tensors()) {
                assert_eq!(a.name, b.name);
                assert_eq!(a.shape, b.shape);
                let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.data), bits(&b.data));
            }
        }
        assert_eq!(store.load_latest().unwrap().checkpoint, Some(cp));
        // PyTorch users see round and part in the safetensors metadata.
        let bytes = fs::read(tmp.path().join("ckpt/round-000007.generator.safetensors")).unwrap();
        let (_, st_meta) = Weights::from_safetensors(&bytes).unwrap();
        assert_eq!(st_meta.get("round").map(String::as_str), Some("7"));
        assert_eq!(st_meta.get("part").map(String::as_str), Some("generator"));
        assert_eq!(store.list_rounds().unwrap(), vec![7]);
    }

    #[test]
    fn empty_store_loads_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 1).unwrap();
        assert_eq!(latest_round(&store), (None, vec![]));
        assert!(store.list_rounds().unwrap().is_empty());
        assert!(matches!(CheckpointStore::open(tmp.path(), 0), Err(CheckpointError::InvalidKeep)));
    }

    #[test]
    fn keep_two_prunes_older_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 2).unwrap();
        for round in 1..=4 {
            save_round(&store, round);
        }
        assert_eq!(store.list_rounds().unwrap(), vec![3, 4]);
        assert_eq!(
            names(tmp.path()),
            vec![
                "round-000003.discriminator.safetensors",
                "round-000003.generator.safetensors",
                "round-000003.json",
                "round-000004.discriminator.safetensors",
                "round-000004.generator.safetensors",
                "round-000004.json",
            ]
        );
    }

    #[test]
    fn saving_an_older_round_drops_the_abandoned_newer_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 5).unwrap();
        for round in 1..=4 {
            save_round(&store, round);
        }
        save_round(&store, 3); // resumed from round 2, re-ran round 3
        assert_eq!(store.list_rounds().unwrap(), vec![1, 2, 3]);
        assert_eq!(latest_round(&store).0, Some(3));
    }

    #[test]
    fn truncated_newest_part_falls_back_and_reports() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 3).unwrap();
        save_round(&store, 1);
        save_round(&store, 2);
        let part = tmp.path().join("round-000002.discriminator.safetensors");
        let len = fs::metadata(&part).unwrap().len();
        OpenOptions::new().write(true).open(&part).unwrap().set_len(len - 10).unwrap();
        let (round, skipped) = latest_round(&store);
        assert_eq!(round, Some(1));
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].0, tmp.path().join("round-000002.json"));
        assert!(skipped[0].1.contains("round-000002.discriminator.safetensors"), "{}", skipped[0].1);
        assert!(matches!(store.load_round(2), Err(CheckpointError::Corrupt { round: 2, .. })));
    }

    #[test]
    fn flipped_bit_fails_the_checksum() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 3).unwrap();
        save_round(&store, 1);
        save_round(&store, 2);
        let part = tmp.path().join("round-000002.generator.safetensors");
        let mut bytes = fs::read(&part).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&part, bytes).unwrap();
        let (round, skipped) = latest_round(&store);
        assert_eq!(round, Some(1));
        assert!(skipped[0].1.contains("sha256"), "{}", skipped[0].1);
    }

    #[test]
    fn garbage_json_falls_back() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 3).unwrap();
        save_round(&store, 1);
        save_round(&store, 2);
        fs::write(tmp.path().join("round-000002.json"), b"{\"format\": 1, \"meta\": garbage").unwrap();
        let (round, skipped) = latest_round(&store);
        assert_eq!(round, Some(1));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].1.contains("commit record"), "{}", skipped[0].1);
    }

    #[test]
    fn missing_part_file_falls_back() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 3).unwrap();
        save_round(&store, 1);
        save_round(&store, 2);
        fs::remove_file(tmp.path().join("round-000002.generator.safetensors")).unwrap();
        let (round, skipped) = latest_round(&store);
        assert_eq!(round, Some(1));
        assert!(skipped[0].1.contains("round-000002.generator.safetensors"), "{}", skipped[0].1);
        // The next save prunes the broken round rather than counting it among the kept ones.
        let store = CheckpointStore::open(tmp.path(), 2).unwrap();
        save_round(&store, 3);
        assert_eq!(store.list_rounds().unwrap(), vec![1, 3]);
    }

    #[test]
    fn crash_leftovers_are_ignored_and_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = CheckpointStore::open(tmp.path(), 3).unwrap();
            save_round(&store, 1);
        }
        // A crash while saving round 2: one part renamed, another still a temp file, no commit record.
        fs::write(tmp.path().join(".round-000002.json.tmp"), b"{\"half").unwrap();
        fs::write(tmp.path().join(".round-000002.discriminator.safetensors.tmp"), b"partial").unwrap();
        fs::copy(
            tmp.path().join("round-000001.generator.safetensors"),
            tmp.path().join("round-000002.generator.safetensors"),
        )
        .unwrap();
        let store = CheckpointStore::open(tmp.path(), 3).unwrap();
        assert!(!names(tmp.path()).iter().any(|n| n.ends_with(".tmp")), "{:?}", names(tmp.path()));
        let (round, skipped) = latest_round(&store);
        assert_eq!(round, Some(1));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].1.contains("no commit record"));
        assert_eq!(store.list_rounds().unwrap(), vec![1]);
        // A temp file appearing later (another crash) is ignored by loads and cleaned by the next save.
        fs::write(tmp.path().join(".round-000005.json.tmp"), b"junk").unwrap();
        assert_eq!(latest_round(&store).0, Some(1));
        save_round(&store, 2);
        assert!(!names(tmp.path()).iter().any(|n| n.ends_with(".tmp")));
        assert_eq!(latest_round(&store), (Some(2), vec![]));
    }

    #[test]
    fn load_round_of_missing_round_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 3).unwrap();
        save_round(&store, 1);
        let err = store.load_round(42).unwrap_err();
        assert!(matches!(err, CheckpointError::NotFound(42)));
        assert!(err.to_string().contains("42"), "{err}");
    }

    #[test]
    fn disk_full_mid_save_leaves_previous_checkpoints_usable() {
        // Fail the 1st part, the 2nd part and the commit record in turn.
        for fail_at in 0..3 {
            let tmp = tempfile::tempdir().unwrap();
            let store = CheckpointStore::open(tmp.path(), 2).unwrap();
            save_round(&store, 1);
            save_round(&store, 2);
            let before = names(tmp.path());
            fault::fail_nth_write(Some(fail_at));
            let g = weights(3.0);
            let err = store.save(&meta(3), &[("generator", &g), ("discriminator", &g)]).unwrap_err();
            fault::fail_nth_write(None);
            match &err {
                CheckpointError::Io { source, .. } => assert_eq!(source.kind(), io::ErrorKind::StorageFull),
                other => panic!("{other:?}"),
            }
            assert_eq!(names(tmp.path()), before, "fail_at={fail_at}");
            assert_eq!(latest_round(&store), (Some(2), vec![]));
            assert_eq!(store.load_round(1).unwrap().meta, meta(1));
            // Once space is back, saving works and prunes as usual.
            save_round(&store, 3);
            assert_eq!(store.list_rounds().unwrap(), vec![2, 3]);
        }
    }

    #[test]
    fn rename_failure_mid_save_leaves_previous_checkpoints() {
        // A real OS error even as root: the second part's name is taken by a non-empty directory.
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 2).unwrap();
        save_round(&store, 1);
        let blocker = tmp.path().join("round-000002.discriminator.safetensors");
        fs::create_dir(&blocker).unwrap();
        fs::write(blocker.join("keep"), b"x").unwrap();
        let g = weights(2.0);
        let err = store.save(&meta(2), &[("generator", &g), ("discriminator", &g)]).unwrap_err();
        assert!(matches!(&err, CheckpointError::Io { path, .. } if *path == blocker), "{err}");
        let left: Vec<String> = names(tmp.path()).into_iter().filter(|n| n.starts_with("round-000002")).collect();
        assert_eq!(left, vec!["round-000002.discriminator.safetensors"]); // only the blocking directory
        assert!(!names(tmp.path()).iter().any(|n| n.ends_with(".tmp")));
        assert_eq!(latest_round(&store).0, Some(1));
        assert_eq!(store.load_round(1).unwrap().meta, meta(1));
    }

    #[test]
    fn resaving_a_round_replaces_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 2).unwrap();
        save_round(&store, 1);
        let g = weights(100.0);
        store.save(&meta(1), &[("generator", &g)]).unwrap();
        let cp = store.load_round(1).unwrap();
        assert_eq!(cp.parts.keys().collect::<Vec<_>>(), vec!["generator"]);
        assert_eq!(cp.parts["generator"], g);
        assert_eq!(names(tmp.path()), vec!["round-000001.generator.safetensors", "round-000001.json"]);
    }

    #[test]
    fn already_encoded_parts_are_stored_as_given_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        let g = weights(3.0);
        let bytes = g.to_safetensors(Some(part_metadata(3, "model"))).unwrap();
        store.save_parts(&meta(3), &[("model", PartData::Encoded(&bytes))]).unwrap();
        assert_eq!(fs::read(dir.path().join("round-000003.model.safetensors")).unwrap(), bytes, "stored as given");
        assert_eq!(store.load_latest().unwrap().checkpoint.unwrap().parts["model"], g);
        // Bytes for another round, another part, or not safetensors at all: refused, nothing written.
        let other_round = g.to_safetensors(Some(part_metadata(2, "model"))).unwrap();
        let other_part = g.to_safetensors(Some(part_metadata(4, "generator"))).unwrap();
        for (round, bad) in [(4, &other_round), (4, &other_part), (4, &b"not safetensors".to_vec())] {
            let err = store.save_parts(&meta(round), &[("model", PartData::Encoded(bad))]).unwrap_err();
            assert!(err.to_string().contains("encoded part `model` of round 4"), "{err}");
        }
        assert_eq!(store.list_rounds().unwrap(), vec![3]);
    }

    #[test]
    fn part_names_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(tmp.path(), 2).unwrap();
        let g = weights(1.0);
        for bad in ["", "../x", "a.b", "gen erator"] {
            assert!(matches!(store.save(&meta(1), &[(bad, &g)]), Err(CheckpointError::InvalidPart(_))), "{bad}");
        }
        assert!(matches!(store.save(&meta(1), &[("g", &g), ("g", &g)]), Err(CheckpointError::InvalidPart(_))));
        assert!(matches!(store.save(&meta(1), &[]), Err(CheckpointError::NoParts)));
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn file_names_parse() {
        assert_eq!(parse_name("round-000012.json"), Some((12, FileKind::Commit)));
        assert_eq!(parse_name("round-1234567.gen.safetensors"), Some((1_234_567, FileKind::Part("gen".into()))));
        assert_eq!(parse_name(".round-000012.json.tmp"), None);
        assert_eq!(parse_name("round-12.json"), None);
        assert_eq!(parse_name("round-000012.json.bak"), None);
        assert!(is_temp_name(".round-000012.json.tmp"));
    }
}
