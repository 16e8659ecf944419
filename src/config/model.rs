//! The `[model]` section: the preset, the recipe and the single-ingredient keys that override it, resolved into a
//! `models::ModelConfig` by [`ModelSection::override_ingredients`].

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::models::{AugmentPolicy, GeneratorArch, GeneratorNorm, GeneratorPadding, ModelConfig, SourceLoss};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// `tiny` (tests), `small` (CPU demo), `paper` (GPU).
    pub preset: String,
    pub gan: String,
    pub discriminator: String,
    /// `cpu`, `cuda`, `cuda:N`; empty = CUDA when available.
    pub device: String,
    /// Image size (32, 64 or 128) instead of the preset's.
    pub image_size: Option<i64>,
    /// `small-budget` (default: DiffAugment, hinge, spectral norm, EMA generator, resize-conv generator, ViTGAN
    /// fixes) or `paper` (the paper-faithful DCGAN variants). The keys below override single ingredients.
    pub recipe: String,
    /// `bce` or `hinge` (CGAN/ACGAN source loss).
    pub loss: Option<String>,
    /// DiffAugment policy: `none` or a comma-separated subset of `color,translation,cutout`.
    pub diffaugment: Option<String>,
    /// Decay of the generator's weight average used for sampling (0 = none).
    pub ema_decay: Option<f64>,
    /// Spectral norm in every discriminator layer.
    pub spectral_norm: Option<bool>,
    /// `dcgan` (transposed convolutions), `resize-conv` (up-sampling + 3×3 convs, class-conditional BatchNorm) or
    /// `pixel-shuffle` (resize-conv to half the side, then an ICNR-initialised sub-pixel convolution).
    pub generator: Option<String>,
    /// Normalisation in the resize-conv and pixel-shuffle generators: `batch` (BatchNorm) or `group` (GroupNorm:
    /// per image, the same in training and sampling, no statistics to average across non-IID sites).
    pub g_norm: Option<String>,
    /// Padding of those generators' 3×3 convolutions: `zeros` or `reflect` (mirrored: no border signal).
    pub g_padding: Option<String>,
    /// ViT discriminator: L2-distance attention.
    pub vit_l2_attention: Option<bool>,
    /// ViT discriminator: patch side in pixels, and the patch overlap.
    pub vit_patch: Option<i64>,
    pub vit_overlap: Option<i64>,
    /// Adam learning rates of the generator and the discriminator (instead of the recipe's).
    pub lr_g: Option<f64>,
    pub lr_d: Option<f64>,
    /// Adam β₁ and β₂ of both networks.
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    /// Critic steps per generator step (WGAN-GP).
    pub n_critic: Option<i64>,
    /// WGAN-GP: the gradient penalty on every n-th critic step only, weighted n·λ (lazy regularisation). Absent
    /// from the serialised form when unset, so the configuration hash of a run checkpointed before this key existed
    /// is unchanged and the run resumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gp_every: Option<i64>,
    /// Widths instead of the preset's: channels of the generator's last block, of the CNN discriminator's first.
    pub g_width: Option<i64>,
    pub d_width: Option<i64>,
    /// CNN discriminator: 1 (a 4×4 stride-2 convolution per stage) or 2 (a 3×3 convolution before it, SNGAN).
    pub d_stage_convs: Option<i64>,
    /// Discriminator: append the minibatch standard deviation of its features over groups of 4 (ProGAN), a signal
    /// against samples that look alike.
    pub minibatch_std: Option<bool>,
    /// ACGAN: the discriminator's class head also learns from generated images (true, the paper's ACGAN) or from
    /// real images only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acgan_fake_class: Option<bool>,
    /// ACGAN: the weight of the class term in the generator's loss (1: the paper's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acgan_class_weight: Option<f64>,
    /// Benchmarks of the federation machinery only: the model becomes this many random parameters and a site's
    /// local training a small random perturbation of them (no GAN, no evaluator).
    pub bench_params: Option<u64>,
}

impl ModelSection {
    /// Applies the single-ingredient keys on top of the recipe's choices, naming the key of a bad value.
    pub fn override_ingredients(&self, cfg: &mut ModelConfig) -> Result<(), ConfigError> {
        fn parsed<T: std::str::FromStr>(key: &str, v: &Option<String>) -> Result<Option<T>, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.as_deref()
                .map(|s| s.parse::<T>().map_err(|e| ConfigError::Invalid(format!("model.{key} = {s:?}: {e}"))))
                .transpose()
        }
        if let Some(l) = parsed::<SourceLoss>("loss", &self.loss)? {
            cfg.loss = l;
        }
        if let Some(p) = parsed::<AugmentPolicy>("diffaugment", &self.diffaugment)? {
            cfg.diffaugment = p;
        }
        if let Some(g) = parsed::<GeneratorArch>("generator", &self.generator)? {
            cfg.generator_arch = g;
        }
        if let Some(n) = parsed::<GeneratorNorm>("g_norm", &self.g_norm)? {
            cfg.g_norm = n;
        }
        if let Some(n) = parsed::<GeneratorPadding>("g_padding", &self.g_padding)? {
            cfg.g_padding = n;
        }
        cfg.ema_decay = self.ema_decay.unwrap_or(cfg.ema_decay);
        cfg.spectral_norm = self.spectral_norm.unwrap_or(cfg.spectral_norm);
        cfg.vit_l2_attention = self.vit_l2_attention.unwrap_or(cfg.vit_l2_attention);
        cfg.vit_patch = self.vit_patch.unwrap_or(cfg.vit_patch);
        cfg.vit_overlap = self.vit_overlap.unwrap_or(cfg.vit_overlap);
        cfg.lr_g = self.lr_g.unwrap_or(cfg.lr_g);
        cfg.lr_d = self.lr_d.unwrap_or(cfg.lr_d);
        cfg.beta1 = self.beta1.unwrap_or(cfg.beta1);
        cfg.beta2 = self.beta2.unwrap_or(cfg.beta2);
        cfg.n_critic = self.n_critic.unwrap_or(cfg.n_critic);
        cfg.gp_every = self.gp_every.unwrap_or(cfg.gp_every);
        cfg.g_width = self.g_width.unwrap_or(cfg.g_width);
        cfg.d_width = self.d_width.unwrap_or(cfg.d_width);
        cfg.d_stage_convs = self.d_stage_convs.unwrap_or(cfg.d_stage_convs);
        cfg.minibatch_std = self.minibatch_std.unwrap_or(cfg.minibatch_std);
        cfg.acgan_fake_class = self.acgan_fake_class.unwrap_or(cfg.acgan_fake_class);
        cfg.acgan_class_weight = self.acgan_class_weight.unwrap_or(cfg.acgan_class_weight);
        cfg.validate().map_err(|e| ConfigError::Invalid(format!("model: {e}")))
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            preset: "tiny".into(),
            gan: "cgan".into(),
            discriminator: "cnn".into(),
            device: "cpu".into(),
            image_size: None,
            recipe: "small-budget".into(),
            loss: None,
            diffaugment: None,
            ema_decay: None,
            spectral_norm: None,
            generator: None,
            g_norm: None,
            g_padding: None,
            vit_l2_attention: None,
            vit_patch: None,
            vit_overlap: None,
            lr_g: None,
            lr_d: None,
            beta1: None,
            beta2: None,
            n_critic: None,
            gp_every: None,
            g_width: None,
            d_width: None,
            d_stage_convs: None,
            minibatch_std: None,
            acgan_fake_class: None,
            acgan_class_weight: None,
            bench_params: None,
        }
    }
}
