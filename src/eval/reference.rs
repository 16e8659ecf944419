//! The reference feature extractor: the ViT classifier trained on the *real* training split, used as a learned
//! feature space (Fréchet distances, label agreement of generated images) and as the yardstick of the
//! augmentation study.
//!
//! Why a cache: every study, evaluation and re-run on the same data would otherwise retrain the same network (hours
//! for ViT-B/16 on NCT-CRC-HE-100K). The trained weights are stored once per *(data content, seed, classifier
//! recipe)*: the key is the SHA-256 of the train and test splits' bytes and labels, the seed, the classifier config,
//! the step count and the batch size. So a changed image, label, split or hyper-parameter gives a new key and the
//! old weights are never reused for it.
//!
//! Why a checksummed sidecar: a cache entry is `<key>.safetensors` (the weights) plus `<key>.json` (key, steps, test
//! accuracy, SHA-256 and size of the weights file), each written atomically, the sidecar last, so the sidecar is
//! the commit record of the entry. A missing, unparsable or mismatched sidecar, a weights file of the wrong size or
//! checksum, or weights that do not fit the classifier mean the entry is retrained (with a warning), never trusted.
//! Two processes filling the same key at once can at worst leave a weights/sidecar pair that does not match, which
//! the next load detects and retrains. A cache that cannot be written is a warning, not an error: the freshly
//! trained extractor is still returned.
//!
//! Where: the caller passes the directory; [`default_cache_dir`] picks `<data.cache_dir>/reference` when the
//! configuration has a data cache, else `$XDG_CACHE_HOME/histofed/reference` or `~/.cache/histofed/reference`
//! (not inside a run's output folder, so that runs share it). Torch work runs on the calling thread with the
//! caller's thread budget.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};
use thiserror::Error;

use crate::data::Dataset;
use crate::federation::checkpoint::write_atomic;
use crate::federation::weights::Weights;
use crate::models::{Classifier, ClassifierConfig, ModelError};
use crate::train::classifier::{self, ClassifierError, ClassifierRun};

/// Version of the cache entry format (and of the key recipe); bumping it invalidates every entry.
const CACHE_FORMAT: u32 = 1;

#[derive(Debug, Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("training the reference classifier: {0}")]
    Train(#[from] ClassifierError),
    #[error("the {0} split is empty")]
    EmptySplit(&'static str),
    #[error("train and test splits differ: {0}")]
    Mismatch(String),
    #[error("invalid reference options: {0}")]
    Options(String),
}

/// How the reference classifier is trained. The torch thread budget is the caller's (`tch::set_num_threads`).
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceOptions {
    /// Classifier preset ([`crate::models::classifier::CLASSIFIER_PRESETS`]).
    pub preset: String,
    /// Optimisation steps (also the length of the cosine schedule).
    pub steps: u64,
    pub batch_size: usize,
    pub seed: u64,
    pub device: Device,
    /// Standardise each image per channel before the classifier ([`ClassifierConfig::standardise_input`]): its
    /// verdicts then rest on structure, not on mean colour.
    pub standardise_input: bool,
}

impl ReferenceOptions {
    /// The classifier configuration these options train for `train`'s image size and class count.
    pub fn classifier_config(&self, train: &Dataset) -> Result<ClassifierConfig, ReferenceError> {
        let mut cfg = ClassifierConfig::preset(&self.preset, i64::from(train.size), train.num_classes() as i64)?;
        cfg.total_steps = self.steps.max(1) as i64;
        cfg.standardise_input = self.standardise_input;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// What [`ReferenceExtractor::load_or_train`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceInfo {
    /// Cache key (hex SHA-256), also the entry's file stem.
    pub key: String,
    /// Top-1 accuracy on the test split, measured right after training.
    pub test_accuracy: f64,
    pub steps: u64,
    pub preset: String,
    /// Loaded from the cache (no training).
    pub cache_hit: bool,
    /// The weights file of the entry.
    pub weights_path: PathBuf,
    /// Why an existing entry was not used, or why the new one could not be stored.
    pub warnings: Vec<String>,
    /// Seconds spent training (0 on a cache hit).
    pub train_secs: f64,
}

/// The sidecar (`<key>.json`): the commit record of a cache entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Sidecar {
    format: u32,
    key: String,
    preset: String,
    steps: u64,
    test_accuracy: f64,
    weights_sha256: String,
    weights_bytes: u64,
    config: ClassifierConfig,
}

/// The trained reference classifier.
#[derive(Debug)]
pub struct ReferenceExtractor {
    clf: Classifier,
    test_accuracy: f64,
}

/// SHA-256 (hex) of a dataset's content: image size, class names, labels and every image byte.
pub fn dataset_fingerprint(ds: &Dataset) -> String {
    let mut h = Sha256::new();
    h.update(b"histofed-dataset-v1");
    h.update(ds.size.to_le_bytes());
    h.update((ds.classes.len() as u64).to_le_bytes());
    for c in &ds.classes {
        h.update((c.len() as u64).to_le_bytes());
        h.update(c.as_bytes());
    }
    h.update((ds.labels.len() as u64).to_le_bytes());
    for l in &ds.labels {
        h.update(l.to_le_bytes());
    }
    h.update(&ds.images);
    hex::encode(h.finalize())
}

/// The cache key of a reference classifier: SHA-256 over the format version, both splits' fingerprints, the seed,
/// the classifier config, steps and batch size.
pub fn cache_key(train: &Dataset, test: &Dataset, cfg: &ClassifierConfig, opts: &ReferenceOptions) -> String {
    let recipe = serde_json::json!({
        "format": CACHE_FORMAT,
        "train": dataset_fingerprint(train),
        "test": dataset_fingerprint(test),
        "seed": opts.seed,
        "steps": opts.steps,
        "batch_size": opts.batch_size,
        "config": cfg,
    });
    hex::encode(Sha256::digest(recipe.to_string().as_bytes()))
}

/// `<data_cache_dir>/reference` if the configuration has a data cache, else `$XDG_CACHE_HOME/histofed/reference`,
/// else `$HOME/.cache/histofed/reference`, else `.histofed-cache/reference` in the working directory.
pub fn default_cache_dir(data_cache_dir: Option<&Path>) -> PathBuf {
    if let Some(d) = data_cache_dir {
        return d.join("reference");
    }
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(x) = non_empty("XDG_CACHE_HOME") {
        return x.join("histofed").join("reference");
    }
    if let Some(h) = non_empty("HOME") {
        return h.join(".cache").join("histofed").join("reference");
    }
    PathBuf::from(".histofed-cache").join("reference")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ReferenceExtractor {
    /// The cached reference classifier for (train, test, opts), or a freshly trained one (then stored in
    /// `cache_dir`). A corrupt or mismatched entry is retrained with a warning in [`ReferenceInfo::warnings`].
    pub fn load_or_train(
        train: &Dataset,
        test: &Dataset,
        opts: &ReferenceOptions,
        cache_dir: &Path,
    ) -> Result<(ReferenceExtractor, ReferenceInfo), ReferenceError> {
        if train.is_empty() {
            return Err(ReferenceError::EmptySplit("training"));
        }
        if test.is_empty() {
            return Err(ReferenceError::EmptySplit("test"));
        }
        if train.size != test.size || train.classes != test.classes {
            return Err(ReferenceError::Mismatch(format!(
                "{} px {:?} vs {} px {:?}",
                train.size, train.classes, test.size, test.classes
            )));
        }
        if opts.steps == 0 || opts.batch_size == 0 {
            return Err(ReferenceError::Options("steps and batch_size must be at least 1".into()));
        }
        let cfg = opts.classifier_config(train)?;
        let key = cache_key(train, test, &cfg, opts);
        let weights_path = cache_dir.join(format!("{key}.safetensors"));
        let sidecar_path = cache_dir.join(format!("{key}.json"));
        let mut warnings = Vec::new();

        match Self::load_entry(&cfg, opts, &key, &weights_path, &sidecar_path) {
            Ok(Some(ext)) => {
                let info = ReferenceInfo {
                    key,
                    test_accuracy: ext.test_accuracy,
                    steps: opts.steps,
                    preset: opts.preset.clone(),
                    cache_hit: true,
                    weights_path,
                    warnings,
                    train_secs: 0.0,
                };
                return Ok((ext, info));
            }
            Ok(None) => {}
            Err(why) => {
                let w = format!("reference cache entry {} not used, retraining: {why}", sidecar_path.display());
                tracing::warn!("{w}");
                warnings.push(w);
            }
        }

        let start = Instant::now();
        let run = ClassifierRun {
            config: &cfg,
            device: opts.device,
            train,
            test,
            steps: opts.steps,
            every: opts.steps,
            batch_size: opts.batch_size,
            seed: opts.seed,
        };
        let (clf, points) = classifier::train_classifier(&run, |_| {})?;
        let test_accuracy = match points.last() {
            Some(p) => p.test_accuracy,
            None => classifier::accuracy(&clf, test, opts.device)?,
        };
        let train_secs = start.elapsed().as_secs_f64();
        if let Err(why) = Self::store_entry(&clf, &cfg, opts, &key, test_accuracy, cache_dir) {
            let w = format!("cannot store the reference classifier in {}: {why}", cache_dir.display());
            tracing::warn!("{w}");
            warnings.push(w);
        }
        let info = ReferenceInfo {
            key,
            test_accuracy,
            steps: opts.steps,
            preset: opts.preset.clone(),
            cache_hit: false,
            weights_path,
            warnings,
            train_secs,
        };
        Ok((ReferenceExtractor { clf, test_accuracy }, info))
    }

    /// `Ok(None)`: no entry. `Err(reason)`: an entry exists but cannot be trusted.
    fn load_entry(
        cfg: &ClassifierConfig,
        opts: &ReferenceOptions,
        key: &str,
        weights_path: &Path,
        sidecar_path: &Path,
    ) -> Result<Option<ReferenceExtractor>, String> {
        let sidecar_bytes = match std::fs::read(sidecar_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if weights_path.exists() {
                    Err(format!("{} has no sidecar (interrupted save)", weights_path.display()))
                } else {
                    Ok(None)
                };
            }
            Err(e) => return Err(format!("cannot read the sidecar: {e}")),
        };
        let sidecar: Sidecar =
            serde_json::from_slice(&sidecar_bytes).map_err(|e| format!("the sidecar does not parse: {e}"))?;
        if sidecar.format != CACHE_FORMAT {
            return Err(format!("sidecar format {} (expected {CACHE_FORMAT})", sidecar.format));
        }
        if sidecar.key != key || sidecar.config != *cfg || sidecar.steps != opts.steps {
            return Err("the sidecar describes another key, config or step count".into());
        }
        if !(sidecar.test_accuracy.is_finite() && (0.0..=1.0).contains(&sidecar.test_accuracy)) {
            return Err(format!("the sidecar's test accuracy {} is not in [0, 1]", sidecar.test_accuracy));
        }
        let bytes = std::fs::read(weights_path).map_err(|e| format!("cannot read {}: {e}", weights_path.display()))?;
        if bytes.len() as u64 != sidecar.weights_bytes {
            return Err(format!(
                "{} has {} bytes, the sidecar says {}",
                weights_path.display(),
                bytes.len(),
                sidecar.weights_bytes
            ));
        }
        if sha256_hex(&bytes) != sidecar.weights_sha256 {
            return Err(format!("{} does not match the sidecar's SHA-256", weights_path.display()));
        }
        let (weights, _) = Weights::from_safetensors(&bytes).map_err(|e| format!("{}: {e}", weights_path.display()))?;
        let mut clf = Classifier::new(cfg, opts.device, opts.seed as i64).map_err(|e| e.to_string())?;
        clf.load_weights(&weights).map_err(|e| format!("{}: {e}", weights_path.display()))?;
        Ok(Some(ReferenceExtractor { clf, test_accuracy: sidecar.test_accuracy }))
    }

    fn store_entry(
        clf: &Classifier,
        cfg: &ClassifierConfig,
        opts: &ReferenceOptions,
        key: &str,
        test_accuracy: f64,
        cache_dir: &Path,
    ) -> Result<(), String> {
        std::fs::create_dir_all(cache_dir).map_err(|e| format!("creating {}: {e}", cache_dir.display()))?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("key".to_string(), key.to_string());
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = clf.weights().map_err(|e| e.to_string())?.to_safetensors(Some(meta)).map_err(|e| e.to_string())?;
        let sidecar = Sidecar {
            format: CACHE_FORMAT,
            key: key.to_string(),
            preset: opts.preset.clone(),
            steps: opts.steps,
            test_accuracy,
            weights_sha256: sha256_hex(&bytes),
            weights_bytes: bytes.len() as u64,
            config: cfg.clone(),
        };
        let json = serde_json::to_vec_pretty(&sidecar).map_err(|e| e.to_string())?;
        // Weights first, sidecar last: the sidecar's presence is what makes the entry exist.
        write_atomic(cache_dir, &format!("{key}.safetensors"), &bytes).map_err(|e| e.to_string())?;
        write_atomic(cache_dir, &format!("{key}.json"), &json).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Class-token embeddings [B, dim] of images [B, 3, S, S] in [-1, 1] (no gradients).
    pub fn features(&self, x: &Tensor) -> Tensor {
        self.clf.features(x)
    }

    /// Class logits [B, num_classes] (no gradients).
    pub fn logits(&self, x: &Tensor) -> Tensor {
        self.clf.predict(x)
    }

    /// Features and logits of the same images with one pass through the encoder.
    pub fn features_and_logits(&self, x: &Tensor) -> (Tensor, Tensor) {
        let f = self.clf.features(x);
        let logits = self.clf.logits_of_features(&f);
        (f, logits)
    }

    /// Test accuracy recorded when the classifier was trained.
    pub fn test_accuracy(&self) -> f64 {
        self.test_accuracy
    }

    pub fn classifier(&self) -> &Classifier {
        &self.clf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load, DataSource, LoadOptions};

    fn splits() -> (Dataset, Dataset) {
        let opts = LoadOptions {
            size: 16,
            synth_per_class: 12,
            synth_num_classes: 3,
            test_fraction: 0.25,
            val_fraction: 0.0,
            seed: 5,
            ..LoadOptions::default()
        };
        let s = load(&DataSource::Synthetic, &opts).unwrap();
        (s.train, s.test)
    }

    fn opts() -> ReferenceOptions {
        ReferenceOptions {
            preset: "tiny".into(),
            steps: 6,
            batch_size: 8,
            seed: 3,
            device: Device::Cpu,
            standardise_input: false,
        }
    }

    #[test]
    fn fingerprint_sees_bytes_and_labels() {
        let (train, _) = splits();
        let base = dataset_fingerprint(&train);
        assert_eq!(base, dataset_fingerprint(&train.clone()));
        let mut px = train.clone();
        px.images[7] ^= 1;
        assert_ne!(base, dataset_fingerprint(&px));
        let mut lab = train.clone();
        lab.labels[0] = (lab.labels[0] + 1) % 3;
        assert_ne!(base, dataset_fingerprint(&lab));
        let d = default_cache_dir(Some(Path::new("/data/cache")));
        assert_eq!(d, PathBuf::from("/data/cache/reference"));
    }

    #[test]
    fn cache_is_hit_and_corruption_is_retrained() {
        tch::set_num_threads(1);
        let (train, test) = splits();
        let dir = tempfile::tempdir().unwrap();
        let o = opts();

        let (first, info1) = ReferenceExtractor::load_or_train(&train, &test, &o, dir.path()).unwrap();
        assert!(!info1.cache_hit && info1.warnings.is_empty(), "{info1:?}");
        assert!(info1.weights_path.is_file());
        assert!((0.0..=1.0).contains(&info1.test_accuracy));

        let (second, info2) = ReferenceExtractor::load_or_train(&train, &test, &o, dir.path()).unwrap();
        assert!(info2.cache_hit, "{info2:?}");
        assert_eq!(info2.key, info1.key);
        assert_eq!(info2.test_accuracy, info1.test_accuracy);
        let (x, _) = train.batch_f32(&[0, 1, 2]);
        let x = Tensor::from_slice(&x).view([3, 3, 16, 16]);
        assert!(first.logits(&x).equal(&second.logits(&x)));
        assert_eq!(second.features(&x).size(), vec![3, 48]);

        // A different seed is a different entry.
        let other = ReferenceOptions { seed: 4, ..o.clone() };
        let k_other = cache_key(&train, &test, &other.classifier_config(&train).unwrap(), &other);
        assert_ne!(k_other, info1.key);

        // Flip one byte of the weights: the checksum catches it and the entry is retrained and rewritten.
        let mut bytes = std::fs::read(&info1.weights_path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&info1.weights_path, &bytes).unwrap();
        let (_, info3) = ReferenceExtractor::load_or_train(&train, &test, &o, dir.path()).unwrap();
        assert!(!info3.cache_hit);
        assert!(info3.warnings.iter().any(|w| w.contains("SHA-256")), "{:?}", info3.warnings);
        let (_, info4) = ReferenceExtractor::load_or_train(&train, &test, &o, dir.path()).unwrap();
        assert!(info4.cache_hit, "the retrained entry is stored again");

        // A garbage sidecar is retrained too.
        std::fs::write(dir.path().join(format!("{}.json", info1.key)), b"{not json").unwrap();
        let (_, info5) = ReferenceExtractor::load_or_train(&train, &test, &o, dir.path()).unwrap();
        assert!(!info5.cache_hit && info5.warnings.iter().any(|w| w.contains("does not parse")), "{info5:?}");
    }
}
