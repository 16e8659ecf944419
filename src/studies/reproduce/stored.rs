//! Results kept between invocations of `histofed reproduce`: each is stored with a key of everything that decides
//! it (protocol version, preset, seed, data fingerprints, the models' resolved configurations), so a rerun keeps
//! what is still valid and recomputes the rest, and files are written atomically so an interrupted run leaves
//! nothing half-written.

use std::path::Path;

use crate::data::Splits;
use crate::federation::checkpoint::write_atomic;

use super::{ReproduceError, ReproduceOptions};

/// A key of everything that decides a result: a stored result with another key is recomputed.
pub(super) fn result_key(opts: &ReproduceOptions, splits: &Splits) -> String {
    use sha2::{Digest, Sha256};
    // The resolved model configurations: a change of recipe in the code (learning rates, say) is another key, so a
    // rerun into an old folder retrains rather than reporting generators trained with the old recipe.
    let p = &opts.preset;
    let classes = splits.train.num_classes();
    let models: Vec<Option<crate::models::ModelConfig>> =
        p.gans.iter().flat_map(|g| p.discs.iter().map(move |d| p.model_config(g, d, classes).ok())).collect();
    let text = serde_json::to_string(&(
        "reproduce-v3",
        &opts.preset,
        models,
        opts.seed,
        crate::eval::reference::dataset_fingerprint(&splits.train),
        crate::eval::reference::dataset_fingerprint(&splits.test),
    ))
    .unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored<T> {
    key: String,
    value: T,
}

pub(super) fn load_stored<T: serde::de::DeserializeOwned>(path: &Path, key: &str) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    let stored: Stored<T> = serde_json::from_slice(&bytes).ok()?;
    (stored.key == key).then_some(stored.value)
}

pub(super) fn store<T: serde::Serialize>(path: &Path, key: &str, value: &T) -> Result<(), ReproduceError> {
    let bytes = serde_json::to_vec_pretty(&Stored { key: key.to_string(), value }).map_err(|e| write_err(path, e))?;
    write_file(path, &bytes)
}

/// Writes `bytes` to `path` atomically, creating its folder.
pub(super) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReproduceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("result.json");
    write_atomic(dir, name, bytes).map_err(|e| write_err(path, e))?;
    Ok(())
}

pub(super) fn write_err(path: &Path, e: impl std::fmt::Display) -> ReproduceError {
    ReproduceError::Write { path: path.to_path_buf(), message: e.to_string() }
}
