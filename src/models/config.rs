//! Model hyper-parameters and their named presets.
//!
//! Why presets: the same code must run as a sub-second CPU test ("tiny"), a minutes-long CPU demo ("small") and the
//! paper's GPU setting ("paper"); naming them keeps the three in one place and makes experiment configs short.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::ModelError;

/// The adversarial objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GanKind {
    /// Conditional GAN, non-saturating BCE, projection discriminator.
    Cgan,
    /// Wasserstein GAN with gradient penalty, projection critic.
    WganGp,
    /// Auxiliary-classifier GAN: source BCE plus class cross-entropy.
    Acgan,
}

/// The discriminator's backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiscKind {
    /// Strided convolutions with LeakyReLU(0.2).
    Cnn,
    /// Vision transformer (patch embedding, class token, pre-norm blocks).
    Vit,
}

impl GanKind {
    pub const ALL: [GanKind; 3] = [GanKind::Cgan, GanKind::WganGp, GanKind::Acgan];

    pub fn as_str(self) -> &'static str {
        match self {
            GanKind::Cgan => "cgan",
            GanKind::WganGp => "wgan-gp",
            GanKind::Acgan => "acgan",
        }
    }
}

impl DiscKind {
    pub const ALL: [DiscKind; 2] = [DiscKind::Cnn, DiscKind::Vit];

    pub fn as_str(self) -> &'static str {
        match self {
            DiscKind::Cnn => "cnn",
            DiscKind::Vit => "vit",
        }
    }
}

impl fmt::Display for GanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DiscKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GanKind {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GanKind::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            ModelError::UnknownName { what: "GAN kind", value: s.to_string(), expected: "cgan, wgan-gp, acgan".into() }
        })
    }
}

impl FromStr for DiscKind {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DiscKind::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            ModelError::UnknownName { what: "discriminator kind", value: s.to_string(), expected: "cnn, vit".into() }
        })
    }
}

/// A training recipe: a named set of architecture, loss and optimiser choices applied on top of a preset's sizes.
///
/// Why two: `paper` keeps what the paper's GANs are (DCGAN-style transposed-convolution generator, BCE or Wasserstein
/// losses, BatchNorm discriminator, Adam(0.5, 0.999)), so that arm stays reproducible; `small-budget` is what the
/// literature says makes GANs learn from hundreds of images in a few thousand steps (see `docs/gan-recipe.md`):
/// DiffAugment on everything the discriminator sees, hinge loss, spectral norm throughout the discriminator,
/// projection conditioning, an EMA of the generator for sampling, Adam(0, 0.99), a resize-convolution generator
/// with class-conditional BatchNorm (no checkerboard), and the ViTGAN fixes for a transformer discriminator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// The paper-faithful variant.
    Paper,
    /// The small-budget recipe (the default).
    #[default]
    SmallBudget,
}

impl Recipe {
    pub const ALL: [Recipe; 2] = [Recipe::Paper, Recipe::SmallBudget];

    pub fn as_str(self) -> &'static str {
        match self {
            Recipe::Paper => "paper",
            Recipe::SmallBudget => "small-budget",
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Recipe {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Recipe::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            ModelError::UnknownName { what: "recipe", value: s.to_string(), expected: "paper, small-budget".into() }
        })
    }
}

/// The source (real/fake) loss of CGAN and ACGAN. WGAN-GP always uses the Wasserstein loss with its penalty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceLoss {
    /// Binary cross-entropy for D, the non-saturating −log D(G(z)) for G (Goodfellow et al. 2014).
    #[default]
    Bce,
    /// Hinge: D minimises relu(1 − D(x)) + relu(1 + D(G(z))), G minimises −D(G(z)) (Lim & Ye 2017; SNGAN, BigGAN).
    Hinge,
}

/// The generator's architecture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorArch {
    /// DCGAN: stride-2 4×4 transposed convolutions, BatchNorm, z multiplied by a label embedding (the paper's).
    #[default]
    Dcgan,
    /// Nearest-neighbour ×2 up-sampling then 3×3 convolutions (no checkerboard, Odena et al. 2016), with
    /// class-conditional BatchNorm in every block (a per-class gain and bias, as BigGAN/SNGAN condition).
    ResizeConv,
    /// The resize-conv generator up to half the side, then a sub-pixel convolution (3·4 channels rearranged into a
    /// 2× larger image; Shi et al. 2016, ICNR-initialised): the full-resolution block, the costliest, is skipped.
    PixelShuffle,
}

/// The normalisation of the resize-conv and pixel-shuffle generators' blocks (each followed by the per-class gain
/// and bias that condition them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorNorm {
    /// BatchNorm: batch statistics in training, running statistics when sampling (SNGAN, BigGAN).
    #[default]
    Batch,
    /// GroupNorm (Wu & He 2018): each image normalised on its own, over groups of about 8 channels, the same in
    /// training and sampling. Why: under non-IID federation a site's batch statistics are its own classes', and the
    /// averaged running statistics match no site's training (Hsieh et al. 2020 replace BatchNorm with GroupNorm for
    /// this); the EMA generator's running statistics were tracked for the live generator's weights, not its own;
    /// and a sample does not depend on what else is in its batch.
    Group,
}

impl GeneratorNorm {
    fn is_batch(&self) -> bool {
        *self == GeneratorNorm::Batch
    }
}

/// How the resize-conv and pixel-shuffle generators' 3×3 convolutions pad their input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorPadding {
    /// Zeros around the map (the usual convolution). A zero border is a positional signal: every layer can tell the
    /// edge pixels apart, and a generator can learn edge-only patterns that the discriminator's stride-2 windows see
    /// least.
    #[default]
    Zeros,
    /// The map mirrored at its edge (reflection padding, as in pix2pix / CycleGAN's generators): a spatially constant
    /// map stays constant up to the border, so no layer learns where the border is from the padding.
    Reflect,
}

impl GeneratorPadding {
    fn is_zeros(&self) -> bool {
        *self == GeneratorPadding::Zeros
    }
}

impl FromStr for GeneratorPadding {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "zeros" => Ok(GeneratorPadding::Zeros),
            "reflect" => Ok(GeneratorPadding::Reflect),
            _ => Err(ModelError::UnknownName {
                what: "generator padding",
                value: s.to_string(),
                expected: "zeros, reflect".into(),
            }),
        }
    }
}

impl FromStr for GeneratorNorm {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "batch" => Ok(GeneratorNorm::Batch),
            "group" => Ok(GeneratorNorm::Group),
            _ => Err(ModelError::UnknownName {
                what: "generator normalisation",
                value: s.to_string(),
                expected: "batch, group".into(),
            }),
        }
    }
}

impl FromStr for SourceLoss {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bce" => Ok(SourceLoss::Bce),
            "hinge" => Ok(SourceLoss::Hinge),
            _ => Err(ModelError::UnknownName { what: "loss", value: s.to_string(), expected: "bce, hinge".into() }),
        }
    }
}

impl FromStr for GeneratorArch {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dcgan" => Ok(GeneratorArch::Dcgan),
            "resize-conv" => Ok(GeneratorArch::ResizeConv),
            "pixel-shuffle" => Ok(GeneratorArch::PixelShuffle),
            _ => Err(ModelError::UnknownName {
                what: "generator architecture",
                value: s.to_string(),
                expected: "dcgan, resize-conv, pixel-shuffle".into(),
            }),
        }
    }
}

/// Which differentiable augmentations DiffAugment applies (Zhao et al. 2020), the same draw policy on real and
/// generated images, before every discriminator call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AugmentPolicy {
    /// Brightness ±0.5, saturation ×[0, 2], contrast ×[0.5, 1.5].
    pub color: bool,
    /// Shift by up to 1/8 of the side, zero padding.
    pub translation: bool,
    /// One zeroed square of half the side at a random place.
    pub cutout: bool,
}

impl AugmentPolicy {
    pub const NONE: AugmentPolicy = AugmentPolicy { color: false, translation: false, cutout: false };
    pub const FULL: AugmentPolicy = AugmentPolicy { color: true, translation: true, cutout: true };

    pub fn is_none(&self) -> bool {
        !(self.color || self.translation || self.cutout)
    }
}

impl fmt::Display for AugmentPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [(self.color, "color"), (self.translation, "translation"), (self.cutout, "cutout")]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

impl FromStr for AugmentPolicy {
    type Err = ModelError;

    /// `none`, or a comma-separated subset of `color`, `translation`, `cutout`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = AugmentPolicy::NONE;
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") || s.is_empty() {
            return Ok(p);
        }
        for part in s.split(',') {
            match part.trim().to_ascii_lowercase().as_str() {
                "color" | "colour" => p.color = true,
                "translation" => p.translation = true,
                "cutout" => p.cutout = true,
                other => {
                    return Err(ModelError::UnknownName {
                        what: "augmentation",
                        value: other.to_string(),
                        expected: "none, or a comma-separated list of color, translation, cutout".into(),
                    })
                }
            }
        }
        Ok(p)
    }
}

/// Everything needed to build and train one conditional GAN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub gan: GanKind,
    pub discriminator: DiscKind,
    /// Square image side in pixels: 32, 64 or 128.
    pub image_size: i64,
    pub num_classes: i64,
    /// Size of the noise vector z.
    pub latent_dim: i64,
    /// Generator width: channels of the last up-sampling block (earlier blocks have up to 8×).
    pub g_width: i64,
    /// CNN discriminator width: channels of the first conv (later convs have up to 8×).
    pub d_width: i64,
    /// ViT discriminator patch side (must divide `image_size`).
    pub vit_patch: i64,
    pub vit_dim: i64,
    pub vit_depth: i64,
    pub vit_heads: i64,
    pub lr_g: f64,
    pub lr_d: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Critic steps per generator step (WGAN-GP only; the other objectives use 1).
    pub n_critic: i64,
    /// Gradient-penalty weight λ (WGAN-GP only).
    pub gp_lambda: f64,
    /// WGAN-GP: the gradient penalty is taken on every `gp_every`-th critic step, weighted `gp_every`·λ, so its
    /// expected pull is the same (the lazy regularisation of StyleGAN2, Karras et al. 2020). Why: on a CPU the
    /// penalty's double backward through the critic is most of a WGAN-GP step. 1 = every step (Gulrajani et al.).
    /// Absent from the serialised form when 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub gp_every: i64,
    /// Spectral normalisation of every discriminator layer with a weight matrix (convolutions, linear layers of the
    /// transformer blocks, heads).
    pub spectral_norm: bool,
    /// The recipe these settings came from (recorded; the fields below are what the code reads).
    #[serde(default = "paper_recipe")]
    pub recipe: Recipe,
    /// Source loss of CGAN / ACGAN.
    #[serde(default)]
    pub loss: SourceLoss,
    /// DiffAugment policy on everything the discriminator sees.
    #[serde(default)]
    pub diffaugment: AugmentPolicy,
    /// Decay of the exponential moving average of the generator's variables used for sampling (0 = no average:
    /// samples come from the trained generator).
    #[serde(default)]
    pub ema_decay: f64,
    #[serde(default)]
    pub generator_arch: GeneratorArch,
    /// Normalisation in the resize-conv and pixel-shuffle generators' blocks (the DCGAN generator has BatchNorm).
    /// Absent from the serialised form when BatchNorm, so configurations written before it keep their hashes.
    #[serde(default, skip_serializing_if = "GeneratorNorm::is_batch")]
    pub g_norm: GeneratorNorm,
    /// Padding of the resize-conv and pixel-shuffle generators' 3×3 convolutions. Absent from the serialised form
    /// when zeros, so configurations written before it keep their hashes.
    #[serde(default, skip_serializing_if = "GeneratorPadding::is_zeros")]
    pub g_padding: GeneratorPadding,
    /// ViT discriminator: L2-distance self-attention with tied query/key projections (ViTGAN; Kim et al. 2021),
    /// Lipschitz where dot-product attention is not.
    #[serde(default)]
    pub vit_l2_attention: bool,
    /// ViT discriminator: patches overlap their neighbours by this many pixels on each side (the patch embedding is a
    /// (patch + 2·overlap)-wide convolution with stride `vit_patch`); 0 = the plain ViT split.
    #[serde(default)]
    pub vit_overlap: i64,
    /// CNN discriminator: convolutions per stage. 1 = one 4×4 stride-2 convolution (DCGAN); 2 = a 3×3 stride-1
    /// convolution at full width before it (the SNGAN "standard" discriminator: more non-linearity per scale, where
    /// thin structures such as cell borders are seen).
    #[serde(default = "one")]
    pub d_stage_convs: i64,
    /// Minibatch standard deviation (Karras et al. 2018, ProGAN; kept in StyleGAN): the discriminator's features get
    /// one more, the spread of its features across a group of up to 4 images of the same call, so a generator whose
    /// samples look alike can be told from the data by that alone. Absent from the serialised form when off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub minibatch_std: bool,
    /// ACGAN: the discriminator's class head also learns to name the class of generated images (Odena et al. 2017,
    /// as the paper). Off, it learns classes from real images only, so the generator is rewarded for images that
    /// look like the real images of their class to that head, not for images the head was taught to accept.
    /// Absent from the serialised form when on.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub acgan_fake_class: bool,
    /// ACGAN: the weight of the class term in the generator's loss (1 = the paper's: adversarial + class). Higher asks
    /// the generator for what the discriminator's class head tells the classes apart by. Absent from the serialised
    /// form when 1.
    #[serde(default = "unit", skip_serializing_if = "is_unit")]
    pub acgan_class_weight: f64,
}

fn unit() -> f64 {
    1.0
}

fn is_unit(v: &f64) -> bool {
    *v == 1.0
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

fn one() -> i64 {
    1
}

fn is_one(v: &i64) -> bool {
    *v == 1
}

fn paper_recipe() -> Recipe {
    Recipe::Paper
}

/// The preset names accepted by [`ModelConfig::preset`].
pub const PRESETS: [&str; 3] = ["tiny", "small", "paper"];

/// A preset's size, as the recipe's size-dependent choices read it (the CPU sizes train fewer critic steps; the
/// tiny networks a higher learning rate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    Tiny,
    Small,
    Paper,
}

impl ModelConfig {
    /// Named presets: "tiny" (CPU tests: 32 px, very small widths), "small" (CPU demo: 64 px), "paper" (GPU: 128 px,
    /// ViT-B/16-like discriminator). Optimiser settings follow the objective: Adam(0.5, 0.999) at 2e-4 for CGAN and
    /// ACGAN, Adam(0.0, 0.9) at 1e-4 with 5 critic steps for WGAN-GP (Gulrajani et al. 2017; "tiny" uses 2 critic
    /// steps). ViT discriminators get half the discriminator learning rate. "small" keeps the paper's 64 tokens
    /// (patch 8 at 64 px) with a narrower transformer (dim 128, 4 blocks, 4 heads) so a CPU step stays under a second.
    pub fn preset(name: &str, gan: GanKind, disc: DiscKind, num_classes: i64) -> Result<Self, ModelError> {
        Self::preset_with(name, Recipe::default(), gan, disc, num_classes)
    }

    /// [`ModelConfig::preset`] with the recipe named: the preset fixes the sizes, the recipe the training choices.
    ///
    /// `small-budget` on top of a preset: hinge loss (CGAN, ACGAN), spectral norm in every discriminator layer
    /// (CGAN, ACGAN; WGAN-GP keeps its layer-normalised critic, whose gradient penalty already bounds it), the full
    /// DiffAugment policy, a generator EMA of 0.999, Adam(0, 0.99) at 2e-4 (5e-4 for "tiny"; WGAN-GP: Adam(0, 0.9) at 1e-4, 2 critic
    /// steps on the CPU presets), the resize-convolution generator, and for the ViT discriminator L2 attention,
    /// overlapping patches and patches of 4 px at 32 px (64 tokens).
    pub fn preset_with(
        name: &str,
        recipe: Recipe,
        gan: GanKind,
        disc: DiscKind,
        num_classes: i64,
    ) -> Result<Self, ModelError> {
        let size = match name.trim().to_ascii_lowercase().as_str() {
            "tiny" => Size::Tiny,
            "small" => Size::Small,
            "paper" => Size::Paper,
            _ => {
                return Err(ModelError::UnknownName {
                    what: "model preset",
                    value: name.to_string(),
                    expected: PRESETS.join(", "),
                })
            }
        };
        let (image_size, latent_dim, g_width, d_width, vit_patch, vit_dim, vit_depth, vit_heads) = match size {
            Size::Tiny => (32, 32, 16, 16, 8, 32, 2, 2),
            Size::Small => (64, 64, 32, 32, 8, 128, 4, 4),
            Size::Paper => (128, 128, 64, 64, 16, 768, 12, 12),
        };
        let (lr_g, lr_d, beta1, beta2, n_critic) = match gan {
            GanKind::WganGp => (1e-4, 1e-4, 0.0, 0.9, 5),
            GanKind::Cgan | GanKind::Acgan => (2e-4, 2e-4, 0.5, 0.999, 1),
        };
        // "tiny" exists for fast CPU tests: 2 critic steps keep a WGAN-GP step near the cost of the other objectives.
        let n_critic = if size == Size::Tiny { n_critic.min(2) } else { n_critic };
        // Transformers train less stably with the DCGAN learning rate; ViT-GAN work uses a lower D rate.
        let lr_d = if disc == DiscKind::Vit { lr_d * 0.5 } else { lr_d };
        let cfg = ModelConfig {
            gan,
            discriminator: disc,
            image_size,
            num_classes,
            latent_dim,
            g_width,
            d_width,
            vit_patch,
            vit_dim,
            vit_depth,
            vit_heads,
            lr_g,
            lr_d,
            beta1,
            beta2,
            n_critic,
            gp_lambda: 10.0,
            gp_every: 1,
            spectral_norm: false,
            recipe: Recipe::Paper,
            loss: SourceLoss::Bce,
            diffaugment: AugmentPolicy::NONE,
            ema_decay: 0.0,
            generator_arch: GeneratorArch::Dcgan,
            g_norm: GeneratorNorm::Batch,
            g_padding: GeneratorPadding::Zeros,
            vit_l2_attention: false,
            vit_overlap: 0,
            d_stage_convs: 1,
            minibatch_std: false,
            acgan_fake_class: true,
            acgan_class_weight: 1.0,
        };
        let cfg = match recipe {
            Recipe::Paper => cfg,
            Recipe::SmallBudget => cfg.small_budget(size),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The small-budget recipe's choices on top of this configuration's sizes.
    fn small_budget(mut self, size: Size) -> Self {
        self.recipe = Recipe::SmallBudget;
        self.diffaugment = AugmentPolicy::FULL;
        self.ema_decay = 0.999;
        self.generator_arch = GeneratorArch::ResizeConv;
        match self.gan {
            GanKind::Cgan | GanKind::Acgan => {
                self.loss = SourceLoss::Hinge;
                self.spectral_norm = true;
                (self.lr_g, self.lr_d, self.beta1, self.beta2) = (2e-4, 2e-4, 0.0, 0.99);
                if size == Size::Tiny {
                    // The tiny networks (≈ 75 k + 30 k parameters) on a 1000-step budget learn faster at 5e-4 for
                    // both, ViT discriminator included (docs/reproduction-cpu.md, "Learning rate").
                    (self.lr_g, self.lr_d) = (5e-4, 5e-4);
                }
            }
            GanKind::WganGp => {
                if size != Size::Paper {
                    self.n_critic = self.n_critic.min(2);
                }
            }
        }
        if self.discriminator == DiscKind::Vit {
            self.vit_l2_attention = true;
            if self.image_size == 32 {
                self.vit_patch = 4;
            }
            self.vit_overlap = (self.vit_patch / 4).max(1);
        }
        self
    }

    /// The same configuration at another image side (32, 64 or 128), with the recipe's size-dependent choices redone:
    /// the small-budget ViT discriminator keeps 64 tokens at 32 px (patch 4) and its ¼-patch overlap.
    pub fn resized(mut self, image_size: i64) -> Result<Self, ModelError> {
        self.image_size = image_size;
        if self.recipe == Recipe::SmallBudget && self.discriminator == DiscKind::Vit {
            if image_size == 32 {
                self.vit_patch = self.vit_patch.min(4);
            }
            self.vit_overlap = (self.vit_patch / 4).max(1);
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ModelError> {
        if ![32, 64, 128].contains(&self.image_size) {
            return Err(ModelError::config("image_size", format!("{} is not one of 32, 64, 128", self.image_size)));
        }
        if !(2..=10_000).contains(&self.num_classes) {
            return Err(ModelError::config("num_classes", format!("{} is not in 2..=10000", self.num_classes)));
        }
        for (field, v) in [("latent_dim", self.latent_dim), ("g_width", self.g_width), ("d_width", self.d_width)] {
            if !(1..=4096).contains(&v) {
                return Err(ModelError::config(field, format!("{v} is not in 1..=4096")));
            }
        }
        if self.discriminator == DiscKind::Vit {
            if self.vit_patch < 1 || self.image_size % self.vit_patch != 0 {
                return Err(ModelError::config(
                    "vit_patch",
                    format!("{} does not divide image_size {}", self.vit_patch, self.image_size),
                ));
            }
            if self.vit_dim < 1 || self.vit_heads < 1 || self.vit_dim % self.vit_heads != 0 {
                return Err(ModelError::config(
                    "vit_heads",
                    format!("vit_dim {} is not a positive multiple of vit_heads {}", self.vit_dim, self.vit_heads),
                ));
            }
            if !(1..=64).contains(&self.vit_depth) {
                return Err(ModelError::config("vit_depth", format!("{} is not in 1..=64", self.vit_depth)));
            }
        }
        for (field, v) in [("lr_g", self.lr_g), ("lr_d", self.lr_d)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ModelError::config(field, format!("{v} is not a positive finite number")));
            }
        }
        for (field, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(ModelError::config(field, format!("{v} is not in [0, 1)")));
            }
        }
        if self.g_norm == GeneratorNorm::Group && self.generator_arch == GeneratorArch::Dcgan {
            return Err(ModelError::config(
                "g_norm",
                "group needs the resize-conv or pixel-shuffle generator (the dcgan generator keeps BatchNorm)",
            ));
        }
        if self.g_padding == GeneratorPadding::Reflect && self.generator_arch == GeneratorArch::Dcgan {
            return Err(ModelError::config(
                "g_padding",
                "reflect needs the resize-conv or pixel-shuffle generator (the dcgan generator's transposed \
                 convolutions have no input border to mirror)",
            ));
        }
        if !(1..=100).contains(&self.n_critic) {
            return Err(ModelError::config("n_critic", format!("{} is not in 1..=100", self.n_critic)));
        }
        if !(self.ema_decay.is_finite() && (0.0..1.0).contains(&self.ema_decay)) {
            return Err(ModelError::config("ema_decay", format!("{} is not in [0, 1)", self.ema_decay)));
        }
        if self.discriminator == DiscKind::Vit && !(0..=self.vit_patch).contains(&self.vit_overlap) {
            return Err(ModelError::config(
                "vit_overlap",
                format!("{} is not in 0..={} (vit_patch)", self.vit_overlap, self.vit_patch),
            ));
        }
        if !(1..=2).contains(&self.d_stage_convs) {
            return Err(ModelError::config("d_stage_convs", format!("{} is not 1 or 2", self.d_stage_convs)));
        }
        if !(self.acgan_class_weight.is_finite() && (0.0..=100.0).contains(&self.acgan_class_weight)) {
            return Err(ModelError::config(
                "acgan_class_weight",
                format!("{} is not a number in 0..=100", self.acgan_class_weight),
            ));
        }
        if !(1..=64).contains(&self.gp_every) {
            return Err(ModelError::config("gp_every", format!("{} is not in 1..=64", self.gp_every)));
        }
        if !(self.gp_lambda.is_finite() && self.gp_lambda >= 0.0) {
            return Err(ModelError::config("gp_lambda", format!("{} is not a finite number >= 0", self.gp_lambda)));
        }
        Ok(())
    }

    /// Number of stride-2 stages between 4×4 and the image size (3 for 32 px, 4 for 64, 5 for 128).
    pub(crate) fn num_stages(&self) -> i64 {
        let mut n = 0;
        let mut s = 4;
        while s < self.image_size {
            s *= 2;
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_names_parse() {
        for p in PRESETS {
            for g in GanKind::ALL {
                for d in DiscKind::ALL {
                    let c = ModelConfig::preset(p, g, d, 4).unwrap();
                    assert_eq!(c.gan, g);
                }
            }
        }
        assert_eq!("wgan-gp".parse::<GanKind>().unwrap(), GanKind::WganGp);
        assert_eq!("ViT".parse::<DiscKind>().unwrap(), DiscKind::Vit);
        assert!("gan".parse::<GanKind>().is_err());
        assert!(ModelConfig::preset("huge", GanKind::Cgan, DiscKind::Cnn, 4).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let base = ModelConfig::preset("tiny", GanKind::Cgan, DiscKind::Vit, 4).unwrap();
        let mut c = base.clone();
        c.image_size = 48;
        assert!(c.validate().unwrap_err().to_string().contains("image_size"));
        let mut c = base.clone();
        c.vit_patch = 5;
        assert!(c.validate().unwrap_err().to_string().contains("vit_patch"));
        let mut c = base.clone();
        c.vit_heads = 3;
        assert!(c.validate().unwrap_err().to_string().contains("vit_heads"));
        let mut c = base;
        c.beta2 = 1.0;
        assert!(c.validate().unwrap_err().to_string().contains("beta2"));
    }
}
