//! Getting images out of a generator: loading one from wherever a run left it (a server checkpoint directory or
//! commit record, a checkpoint part, a centralized `generator.safetensors`, a whole-GAN bundle), class-balanced
//! synthetic sets as a [`Dataset`], and generator output as RGB bytes.
//!
//! Why one module: the evaluator, the assessment, the augmentation study and the reproduction all sample the same
//! way, so a synthetic set drawn with a seed is the same set wherever it is drawn.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use thiserror::Error;

use crate::data::{DataError, Dataset};
use crate::federation::checkpoint::CheckpointStore;
use crate::federation::weights::Weights;
use crate::models::{Gan, ModelConfig, ModelError};

/// Name of the generator part in a server checkpoint.
pub const GENERATOR_PART: &str = "generator";
/// Rows per generator forward pass when synthesising (bounds memory).
const GEN_CHUNK: usize = 256;

#[derive(Debug, Error)]
pub enum SamplingError {
    #[error("generator {path}: {message}")]
    Generator { path: PathBuf, message: String },
    #[error("generator {path} does not fit the configured model ({model}): {message}")]
    GeneratorMismatch { path: PathBuf, model: String, message: String },
    #[error("cannot sample: {0}")]
    Options(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
}

/// Converts generator output ([N,3,H,W] in [-1,1]) to HWC RGB bytes.
pub fn to_rgb_bytes(images: &Tensor) -> Vec<u8> {
    let u8s = ((images.clamp(-1.0, 1.0) + 1.0) * 127.5)
        .round()
        .to_kind(Kind::Uint8)
        .permute([0, 2, 3, 1])
        .contiguous()
        .to_device(Device::Cpu);
    let n = u8s.numel();
    let mut out = vec![0u8; n];
    u8s.copy_data(&mut out, n);
    out
}

fn gen_err(path: &Path, message: impl Into<String>) -> SamplingError {
    SamplingError::Generator { path: path.to_path_buf(), message: message.into() }
}

/// A generator ready to sample, and where it came from.
#[derive(Debug)]
pub struct LoadedGenerator {
    pub gan: Gan,
    /// Human-readable origin, e.g. `runs/demo/checkpoints (round 12)`.
    pub source: String,
    /// The server round it was saved at, when it came from a checkpoint.
    pub round: Option<u64>,
}

pub fn describe_model(m: &ModelConfig) -> String {
    format!(
        "{} × {}, {} px, {} classes, latent {}, width {}",
        m.gan.as_str(),
        m.discriminator.as_str(),
        m.image_size,
        m.num_classes,
        m.latent_dim,
        m.g_width
    )
}

/// Loads the generator from `path`: a server checkpoint directory (its newest valid round), a checkpoint commit
/// record (`round-NNNNNN.json`), a checkpoint part (`round-NNNNNN.generator.safetensors`), a `generator.safetensors`
/// (centralized training), a run folder holding one, or a whole-GAN safetensors bundle (`generator.`-prefixed names).
/// Anything else, or weights that do not fit `model`, is an error naming the path.
pub fn load_generator(
    path: &Path,
    model: &ModelConfig,
    device: Device,
    seed: i64,
) -> Result<LoadedGenerator, SamplingError> {
    let meta = std::fs::metadata(path).map_err(|e| gen_err(path, format!("cannot open: {e}")))?;
    let (weights, source, round, weights_path) = if meta.is_dir() {
        load_from_dir(path)?
    } else {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(round) = CheckpointStore::commit_round(name) {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let store = CheckpointStore::open_for_reading(dir).map_err(|e| gen_err(path, e.to_string()))?;
            let ckpt = store.load_round(round).map_err(|e| gen_err(path, e.to_string()))?;
            let w = generator_part(path, ckpt.parts)?;
            (w, format!("{} (round {round})", path.display()), Some(round), path.to_path_buf())
        } else if name.ends_with(".safetensors") {
            (read_safetensors_generator(path)?, path.display().to_string(), None, path.to_path_buf())
        } else {
            return Err(gen_err(
                path,
                "not a checkpoint directory, a round-NNNNNN.json checkpoint record or a .safetensors file",
            ));
        }
    };
    let mut gan = Gan::new(model, device, seed)?;
    gan.load_generator_weights(&weights).map_err(|e| SamplingError::GeneratorMismatch {
        path: weights_path.clone(),
        model: describe_model(model),
        message: e.to_string(),
    })?;
    // A DP run's global carries no generator BatchNorm statistics (they were held back): derive them.
    gan.settle_generator_statistics().map_err(|e| SamplingError::GeneratorMismatch {
        path: weights_path.clone(),
        model: describe_model(model),
        message: e.to_string(),
    })?;
    Ok(LoadedGenerator { gan, source, round })
}

type Found = (Weights, String, Option<u64>, PathBuf);

fn load_from_dir(dir: &Path) -> Result<Found, SamplingError> {
    let store = CheckpointStore::open_for_reading(dir).map_err(|e| gen_err(dir, e.to_string()))?;
    let rounds = store.list_rounds().map_err(|e| gen_err(dir, e.to_string()))?;
    if rounds.is_empty() {
        // A centralized run folder, or a server run folder whose checkpoints live in `checkpoints/`.
        let file = dir.join("generator.safetensors");
        if file.is_file() {
            return Ok((read_safetensors_generator(&file)?, file.display().to_string(), None, file));
        }
        let sub = dir.join("checkpoints");
        if sub.is_dir() {
            return load_from_dir(&sub);
        }
        return Err(gen_err(dir, "holds no checkpoint (round-NNNNNN.json) and no generator.safetensors"));
    }
    let outcome = store.load_latest().map_err(|e| gen_err(dir, e.to_string()))?;
    for (p, why) in &outcome.skipped {
        tracing::warn!(path = %p.display(), %why, "skipped a corrupt checkpoint");
    }
    let Some(ckpt) = outcome.checkpoint else {
        let reasons: Vec<String> = outcome.skipped.iter().map(|(p, w)| format!("{}: {w}", p.display())).collect();
        return Err(gen_err(dir, format!("no valid checkpoint ({})", reasons.join("; "))));
    };
    let round = ckpt.meta.round;
    let w = generator_part(dir, ckpt.parts)?;
    Ok((w, format!("{} (round {round})", dir.display()), Some(round), dir.to_path_buf()))
}

fn generator_part(
    path: &Path,
    mut parts: std::collections::BTreeMap<String, Weights>,
) -> Result<Weights, SamplingError> {
    let names: Vec<String> = parts.keys().cloned().collect();
    parts
        .remove(GENERATOR_PART)
        .ok_or_else(|| gen_err(path, format!("the checkpoint has no `{GENERATOR_PART}` part (parts: {names:?})")))
}

fn read_safetensors_generator(path: &Path) -> Result<Weights, SamplingError> {
    let bytes = std::fs::read(path).map_err(|e| gen_err(path, format!("cannot read: {e}")))?;
    let (w, _) =
        Weights::from_safetensors(&bytes).map_err(|e| gen_err(path, format!("not a safetensors file: {e}")))?;
    if w.is_empty() {
        return Err(gen_err(path, "holds no tensors"));
    }
    let prefixed = w.strip_prefix(crate::models::gan::GENERATOR_PREFIX);
    if !prefixed.is_empty() {
        return Ok(prefixed);
    }
    if w.tensors().iter().all(|t| t.name.starts_with(crate::models::gan::DISCRIMINATOR_PREFIX)) {
        return Err(gen_err(path, "holds a discriminator, not a generator"));
    }
    Ok(w)
}

/// `counts[k]` images of class `k` from the generator, as a dataset with `classes` (u8, like real images).
/// Deterministic in `seed`.
pub fn synthesize(
    gan: &Gan,
    counts: &[usize],
    classes: &[String],
    size: u32,
    seed: i64,
) -> Result<Dataset, SamplingError> {
    if counts.len() != classes.len() || counts.len() as i64 != gan.config().num_classes {
        return Err(SamplingError::Options(format!(
            "{} class counts for {} classes and a {}-class generator",
            counts.len(),
            classes.len(),
            gan.config().num_classes
        )));
    }
    if i64::from(size) != gan.config().image_size {
        return Err(SamplingError::Options(format!(
            "the data is {size} px but the generator makes {} px images",
            gan.config().image_size
        )));
    }
    let labels: Vec<u32> = counts.iter().enumerate().flat_map(|(k, &n)| std::iter::repeat_n(k as u32, n)).collect();
    let mut images = Vec::with_capacity(labels.len() * size as usize * size as usize * 3);
    for (c, chunk) in labels.chunks(GEN_CHUNK).enumerate() {
        let z = gan.latent(chunk.len() as i64, seed.wrapping_mul(7919).wrapping_add(c as i64));
        let y: Vec<i64> = chunk.iter().map(|&l| i64::from(l)).collect();
        let x = gan.try_generate(&z, &Tensor::from_slice(&y))?;
        images.extend(to_rgb_bytes(&x));
    }
    Ok(Dataset::new(size, classes.to_vec(), images, labels)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::checkpoint::CheckpointMeta;
    use crate::models::{DiscKind, GanKind};
    use tch::Device;

    fn tiny_model(classes: i64) -> ModelConfig {
        ModelConfig::preset("tiny", GanKind::Cgan, DiscKind::Cnn, classes).unwrap()
    }

    #[test]
    fn generator_sources_and_bad_paths() {
        tch::set_num_threads(1);
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(3);
        let gan = Gan::new(&model, Device::Cpu, 11).unwrap();
        let (g, d) = (gan.generator_weights().unwrap(), gan.discriminator_weights().unwrap());
        // An untrained generator's BatchNorm statistics are unset, so every loader derives them: sample the
        // original the same way.
        assert!(gan.settle_generator_statistics().unwrap());
        let z = gan.latent(4, 1);
        let y = Tensor::from_slice(&[0i64, 1, 2, 0]);
        let want = gan.generate(&z, &y);

        // A server checkpoint directory (newest round), its commit record, a generator.safetensors.
        let ckdir = dir.path().join("checkpoints");
        let store = CheckpointStore::open(&ckdir, 3).unwrap();
        let meta = |round| CheckpointMeta {
            round,
            strategy: "fedavg".into(),
            strategy_state: serde_json::Value::Null,
            membership: vec![],
            config_hash: String::new(),
            created_unix_ms: 0,
            extra: serde_json::Value::Null,
        };
        let other = Gan::new(&model, Device::Cpu, 99).unwrap().generator_weights().unwrap();
        store.save(&meta(1), &[("generator", &other), ("discriminator", &d)]).unwrap();
        store.save(&meta(2), &[("generator", &g), ("discriminator", &d)]).unwrap();
        let file = dir.path().join("generator.safetensors");
        std::fs::write(&file, g.to_safetensors(None).unwrap()).unwrap();
        for (p, round) in [(ckdir.clone(), Some(2)), (ckdir.join("round-000002.json"), Some(2)), (file.clone(), None)] {
            let loaded = load_generator(&p, &model, Device::Cpu, 5).unwrap();
            assert_eq!(loaded.round, round, "{}", p.display());
            assert!(loaded.gan.generate(&z, &y).equal(&want), "{}", p.display());
        }
        let r1 = load_generator(&ckdir.join("round-000001.json"), &model, Device::Cpu, 5).unwrap();
        assert_eq!(r1.round, Some(1));
        assert!(!r1.gan.generate(&z, &y).equal(&want));

        // Errors name the path and the problem.
        let missing = dir.path().join("no-such-generator.safetensors");
        let e = load_generator(&missing, &model, Device::Cpu, 5).unwrap_err().to_string();
        assert!(e.contains("no-such-generator.safetensors") && e.contains("cannot open"), "{e}");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        let e = load_generator(&text, &model, Device::Cpu, 5).unwrap_err().to_string();
        assert!(e.contains("notes.txt") && e.contains("not a checkpoint directory"), "{e}");
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"not safetensors at all").unwrap();
        let e = load_generator(&junk, &model, Device::Cpu, 5).unwrap_err().to_string();
        assert!(e.contains("junk.safetensors") && e.contains("not a safetensors file"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = load_generator(&empty, &model, Device::Cpu, 5).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("holds no checkpoint"), "{e}");
        let e = load_generator(&file, &tiny_model(4), Device::Cpu, 5).unwrap_err();
        assert!(matches!(e, SamplingError::GeneratorMismatch { .. }), "{e}");
        assert!(e.to_string().contains("generator.safetensors") && e.to_string().contains("4 classes"), "{e}");
    }
}
