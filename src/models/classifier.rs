//! The ViT tissue classifier: the paper's downstream task (train on real and/or synthetic tiles, test on real).
//!
//! Why these training choices: ViTs trained from scratch on small data need AdamW with decoupled weight decay, a
//! linear warm-up (large early updates destabilise attention) and a cosine decay, plus strong label-preserving
//! augmentation (`augment.rs`). The encoder is the same one the ViT discriminator uses (`vit.rs`); its class-token
//! embedding doubles as a learned feature space for Fréchet distances (`features`).

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

use super::augment::augment;
use super::convert::{load_stores, stores_to_weights};
use super::error::{catch_torch, ModelError};
use super::init::init_varstore;
use super::layers::Linear;
use super::rng::SeededRng;
use super::vit::{VitEncoder, VitShape};
use crate::federation::weights::Weights;

/// Classifier hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub image_size: i64,
    pub num_classes: i64,
    pub patch: i64,
    pub dim: i64,
    pub depth: i64,
    pub heads: i64,
    pub mlp_ratio: i64,
    /// Peak learning rate (reached after warm-up).
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: i64,
    /// Length of the cosine schedule; later steps stay at the floor (1% of `lr`).
    pub total_steps: i64,
    /// Apply flips / rotations / colour jitter in `train_step`.
    pub augment: bool,
    /// Standardise each image per channel (zero mean, unit spread) before the encoder, in training and inference:
    /// the classifier then cannot tell classes apart by an image's mean colour or contrast, only by its structure.
    /// Off by default; `evaluation.reference_standardise` turns it on for the quality suite's reference classifier
    /// (`docs/gan-recipe.md`, "What the reference classifier decides by"). Left out of the serialised form when off,
    /// so the cache keys of existing reference classifiers are unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standardise_input: bool,
}

/// Per-image, per-channel spread below which an image counts as flat: `(x − mean) / (std + FLAT_SPREAD)` keeps a
/// uniform image at 0 instead of amplifying its last bits of noise ([-1, 1] units; 0.05 ≈ 6 grey levels).
const FLAT_SPREAD: f64 = 0.05;

/// Preset names accepted by [`ClassifierConfig::preset`].
pub const CLASSIFIER_PRESETS: [&str; 2] = ["tiny", "vit-b16"];

impl ClassifierConfig {
    /// "tiny" (CPU tests: patch 8, dim 48, depth 2, 4 heads) or "vit-b16" (GPU: patch 16, dim 768, depth 12, 12 heads).
    pub fn preset(name: &str, image_size: i64, num_classes: i64) -> Result<Self, ModelError> {
        let cfg = match name.trim().to_ascii_lowercase().as_str() {
            "tiny" => ClassifierConfig {
                image_size,
                num_classes,
                patch: 8,
                dim: 48,
                depth: 2,
                heads: 4,
                mlp_ratio: 2,
                lr: 2e-3,
                weight_decay: 0.05,
                warmup_steps: 10,
                total_steps: 500,
                augment: true,
                standardise_input: false,
            },
            "vit-b16" => ClassifierConfig {
                image_size,
                num_classes,
                patch: 16,
                dim: 768,
                depth: 12,
                heads: 12,
                mlp_ratio: 4,
                lr: 3e-4,
                weight_decay: 0.05,
                warmup_steps: 500,
                total_steps: 20_000,
                augment: true,
                standardise_input: false,
            },
            _ => {
                return Err(ModelError::UnknownName {
                    what: "classifier preset",
                    value: name.to_string(),
                    expected: CLASSIFIER_PRESETS.join(", "),
                })
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if !(8..=1024).contains(&self.image_size) {
            return Err(ModelError::config("image_size", format!("{} is not in 8..=1024", self.image_size)));
        }
        if !(2..=10_000).contains(&self.num_classes) {
            return Err(ModelError::config("num_classes", format!("{} is not in 2..=10000", self.num_classes)));
        }
        if self.patch < 1 || self.image_size % self.patch != 0 {
            return Err(ModelError::config(
                "patch",
                format!("{} does not divide image_size {}", self.patch, self.image_size),
            ));
        }
        if self.dim < 1 || self.heads < 1 || self.dim % self.heads != 0 {
            return Err(ModelError::config(
                "heads",
                format!("dim {} is not a positive multiple of heads {}", self.dim, self.heads),
            ));
        }
        if !(1..=64).contains(&self.depth) || !(1..=16).contains(&self.mlp_ratio) {
            return Err(ModelError::config("depth", "depth must be in 1..=64 and mlp_ratio in 1..=16"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ModelError::config("lr", format!("{} is not a positive finite number", self.lr)));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(ModelError::config("weight_decay", format!("{} is not >= 0", self.weight_decay)));
        }
        if self.warmup_steps < 0 || self.total_steps < 1 {
            return Err(ModelError::config("total_steps", "warmup_steps must be >= 0 and total_steps >= 1"));
        }
        Ok(())
    }

    /// Learning rate at (0-based) `step`: linear warm-up to `lr`, then cosine decay to 1% of `lr` at `total_steps`.
    pub fn lr_at(&self, step: i64) -> f64 {
        let floor = 0.01 * self.lr;
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.total_steps - self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// ViT classifier with its AdamW optimiser.
pub struct Classifier {
    cfg: ClassifierConfig,
    device: Device,
    vs: VarStore,
    encoder: VitEncoder,
    head: Linear,
    opt: nn::Optimizer,
    rng: SeededRng,
    step: i64,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier").field("cfg", &self.cfg).field("step", &self.step).finish()
    }
}

/// Rows per forward pass in `predict`/`features`/`accuracy`, bounding memory on large evaluation sets.
const EVAL_CHUNK: i64 = 256;

impl Classifier {
    pub fn new(cfg: &ClassifierConfig, device: Device, seed: i64) -> Result<Self, ModelError> {
        cfg.validate()?;
        catch_torch("building the classifier", || {
            tch::manual_seed(seed);
            let vs = VarStore::new(device);
            let root = vs.root();
            let shape = VitShape::plain(cfg.image_size, cfg.patch, cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio);
            let encoder = VitEncoder::new(&root, shape);
            let head = Linear::new(&root / "head", cfg.dim, cfg.num_classes, true, false);
            init_varstore(&vs, seed)?;
            let adamw = nn::AdamW { beta1: 0.9, beta2: 0.999, wd: cfg.weight_decay, eps: 1e-8, amsgrad: false };
            let opt = adamw.build(&vs, cfg.lr_at(0)).map_err(ModelError::torch("building the optimiser"))?;
            Ok(Classifier {
                cfg: cfg.clone(),
                device,
                vs,
                encoder,
                head,
                opt,
                rng: SeededRng::for_name(seed, "classifier-train"),
                step: 0,
            })
        })
    }

    pub fn config(&self) -> &ClassifierConfig {
        &self.cfg
    }

    pub fn steps_done(&self) -> i64 {
        self.step
    }

    pub fn param_count(&self) -> usize {
        self.vs.trainable_variables().iter().map(|t| t.numel()).sum()
    }

    fn check(&self, x: &Tensor) -> Result<(), ModelError> {
        let s = self.cfg.image_size;
        let size = x.size();
        if size.len() != 4 || size[1] != 3 || size[2] != s || size[3] != s {
            return Err(ModelError::Input(format!("images have shape {size:?}, expected [B, 3, {s}, {s}]")));
        }
        Ok(())
    }

    /// One AdamW step on a batch (augmented if configured); returns the cross-entropy loss.
    pub fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<f64, ModelError> {
        self.check(x)?;
        if y.size() != [x.size()[0]] || y.kind() != Kind::Int64 {
            return Err(ModelError::Input(format!("labels must be Int64 [{}], got {:?}", x.size()[0], y.size())));
        }
        let step = self.step;
        let r = catch_torch("classifier train_step", || {
            let x = x.to_device(self.device).to_kind(Kind::Float);
            let y = y.to_device(self.device);
            let x = if self.cfg.augment { augment(&x, &mut self.rng) } else { x };
            let logits = self.head.forward(&self.encoder.forward(&self.input(&x)));
            let loss = logits.cross_entropy_for_logits(&y);
            let v = loss.double_value(&[]);
            if !v.is_finite() {
                return Err(ModelError::NonFinite { what: "classifier loss".into(), step: step as u64, value: v });
            }
            self.opt.set_lr(self.cfg.lr_at(step));
            self.opt.zero_grad();
            loss.backward();
            self.opt.step();
            Ok(v)
        });
        self.step += 1;
        r
    }

    fn chunked(&self, x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        let x = x.to_device(self.device).to_kind(Kind::Float);
        let parts: Vec<Tensor> = x.split(EVAL_CHUNK, 0).iter().map(|c| f(&self.input(c))).collect();
        Tensor::cat(&parts, 0)
    }

    /// What the encoder sees of a batch: the batch itself, or each image standardised per channel.
    fn input(&self, x: &Tensor) -> Tensor {
        if !self.cfg.standardise_input {
            return x.shallow_clone();
        }
        let dims = [2i64, 3];
        let mean = x.mean_dim(dims.as_slice(), true, Kind::Float);
        let std = x.std_dim(dims.as_slice(), false, true);
        (x - mean) / (std + FLAT_SPREAD)
    }

    /// Class logits [B, num_classes] (no augmentation, no gradients).
    pub fn predict(&self, x: &Tensor) -> Tensor {
        self.chunked(x, |c| self.head.forward(&self.encoder.forward(c)))
    }

    /// Class-token embeddings [B, dim], a learned feature space for Fréchet distances.
    pub fn features(&self, x: &Tensor) -> Tensor {
        self.chunked(x, |c| self.encoder.forward(c))
    }

    /// Class logits of class-token embeddings from [`Classifier::features`]: `predict(x)` equals
    /// `logits_of_features(&features(x))`, so a caller that needs both runs the encoder once.
    pub fn logits_of_features(&self, features: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        self.head.forward(&features.to_device(self.device))
    }

    /// Top-1 accuracy on (x, y); 0 for an empty set.
    pub fn accuracy(&self, x: &Tensor, y: &Tensor) -> f64 {
        if x.size().first().copied().unwrap_or(0) == 0 {
            return 0.0;
        }
        let pred = self.predict(x).argmax(-1, false);
        pred.eq_tensor(&y.to_device(pred.device())).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
    }

    /// Fallible [`Classifier::accuracy`] (shape errors and OOM become errors).
    pub fn try_accuracy(&self, x: &Tensor, y: &Tensor) -> Result<f64, ModelError> {
        self.check(x)?;
        catch_torch("classifier accuracy", || Ok(self.accuracy(x, y)))
    }

    /// All variables, unprefixed, sorted (timm ViT names: `patch_embed.proj.weight`, `blocks.0.attn.qkv.weight`, ...).
    pub fn weights(&self) -> Result<Weights, ModelError> {
        stores_to_weights(&[(&self.vs, "")])
    }

    pub fn load_weights(&mut self, w: &Weights) -> Result<(), ModelError> {
        load_stores(&[(&self.vs, "")], w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four classes told apart by stripe colour; stripe orientation, phase, period and noise vary within a class.
    fn stripes(n: i64, seed: i64) -> (Tensor, Tensor) {
        let mut rng = SeededRng::new(seed);
        let s = 32usize;
        let colours = [[0.9f32, -0.6, -0.6], [-0.6, 0.9, -0.6], [-0.6, -0.6, 0.9], [0.8, 0.8, -0.7]];
        let mut data = vec![0f32; n as usize * 3 * s * s];
        let mut labels = Vec::new();
        for i in 0..n as usize {
            let k = rng.below(4) as usize;
            labels.push(k as i64);
            let vertical = rng.below(2) == 1;
            let period = 4 + rng.below(5) as usize;
            let phase = rng.below(period as u64) as usize;
            for y in 0..s {
                for x in 0..s {
                    let on = ((if vertical { x } else { y }) + phase) % period < period / 2;
                    for c in 0..3 {
                        let base = if on { colours[k][c] } else { -0.2 };
                        data[((i * 3 + c) * s + y) * s + x] = (base + 0.15 * rng.normal() as f32).clamp(-1.0, 1.0);
                    }
                }
            }
        }
        (Tensor::from_slice(&data).view([n, 3, 32, 32]), Tensor::from_slice(&labels))
    }

    /// With `standardise_input` a classifier cannot see an image's mean colour: flat images of any colour get the
    /// same logits, and a per-channel shift of an image changes nothing; without it the colour shows. Off, the
    /// option is left out of the serialised config (the reference cache keys of existing entries stay the same).
    #[test]
    fn standardised_input_hides_the_mean_colour() {
        tch::set_num_threads(1);
        let flat = |rgb: [f32; 3]| Tensor::from_slice(&rgb).view([1, 3, 1, 1]).expand([1, 3, 32, 32], false).copy();
        let (red, blue) = (flat([0.8, -0.5, -0.5]), flat([-0.5, -0.5, 0.8]));
        let (x, _) = stripes(2, 5);
        let shift = Tensor::from_slice(&[0.3f32, -0.2, 0.1]).view([1, 3, 1, 1]);
        let mut cfg = ClassifierConfig::preset("tiny", 32, 4).unwrap();
        let gap =
            |clf: &Classifier, a: &Tensor, b: &Tensor| (clf.predict(a) - clf.predict(b)).abs().max().double_value(&[]);
        let plain = Classifier::new(&cfg, Device::Cpu, 9).unwrap();
        assert!(serde_json::to_value(&cfg).unwrap().get("standardise_input").is_none());
        cfg.standardise_input = true;
        let blind = Classifier::new(&cfg, Device::Cpu, 9).unwrap();
        // Float rounding of the per-image mean leaves ~1e-5 in the logits of a flat image; colour moves them by far more.
        let (seen, hidden) = (gap(&plain, &red, &blue), gap(&blind, &red, &blue));
        assert!(hidden < 1e-3 && seen > 100.0 * hidden, "flat red vs blue: plain {seen}, standardised {hidden}");
        let (seen, hidden) = (gap(&plain, &x, &(&x + &shift)), gap(&blind, &x, &(&x + &shift)));
        assert!(hidden < 1e-3 && seen > 100.0 * hidden, "shifted colour: plain {seen}, standardised {hidden}");
        assert_eq!(serde_json::to_value(&cfg).unwrap()["standardise_input"], serde_json::json!(true));
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let c = ClassifierConfig::preset("tiny", 32, 4).unwrap();
        assert!(c.lr_at(0) < c.lr_at(5) && c.lr_at(5) < c.lr_at(c.warmup_steps - 1));
        assert!((c.lr_at(c.warmup_steps) - c.lr).abs() < 1e-12);
        assert!(c.lr_at(c.total_steps) < 0.02 * c.lr && c.lr_at(10 * c.total_steps) > 0.0);
        assert!(ClassifierConfig::preset("vit-b16", 40, 4).unwrap_err().to_string().contains("patch"));
        assert!(ClassifierConfig::preset("vit-b16", 128, 4).is_ok());
    }

    #[test]
    fn learns_a_constructed_dataset() {
        tch::set_num_threads(1);
        let mut cfg = ClassifierConfig::preset("tiny", 32, 4).unwrap();
        cfg.total_steps = 80;
        let mut clf = Classifier::new(&cfg, Device::Cpu, 3).unwrap();
        let (xtr, ytr) = stripes(256, 1);
        let (xte, yte) = stripes(128, 2);
        let before = clf.accuracy(&xte, &yte);
        let start = std::time::Instant::now();
        let mut rng = SeededRng::new(9);
        let mut losses = Vec::new();
        for _ in 0..cfg.total_steps {
            let idx = rng.index_tensor(32, 256, Device::Cpu);
            losses.push(clf.train_step(&xtr.index_select(0, &idx), &ytr.index_select(0, &idx)).unwrap());
        }
        let after = clf.accuracy(&xte, &yte);
        eprintln!(
            "classifier: accuracy {before:.3} → {after:.3}, loss {:.3} → {:.3}, {:.1} ms/step",
            losses[0],
            losses[losses.len() - 1],
            start.elapsed().as_secs_f64() * 1e3 / cfg.total_steps as f64
        );
        assert!(after > 0.6, "accuracy {after} (chance 0.25)");
        assert_eq!(clf.features(&xte).size(), vec![128, cfg.dim]);
        assert_eq!(clf.predict(&xte.narrow(0, 0, 3)).size(), vec![3, 4]);
        assert!(clf.logits_of_features(&clf.features(&xte)).allclose(&clf.predict(&xte), 1e-5, 1e-6, false));

        // Round trip into a fresh classifier gives identical predictions.
        let mut other = Classifier::new(&cfg, Device::Cpu, 77).unwrap();
        other.load_weights(&clf.weights().unwrap()).unwrap();
        assert!(other.predict(&xte).equal(&clf.predict(&xte)));
    }
}
