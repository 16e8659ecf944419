//! The class-conditional generator shared by all three objectives, in two architectures.
//!
//! Why this shape: the paper's GANs are DCGAN-style; conditioning multiplies z by a learned label embedding
//! (as in the widely used PyTorch-GAN CGAN/ACGAN code), which keeps the input size independent of the number of
//! classes. A linear layer maps to a 4×4 map, then stride-2 transposed convolutions (kernel 4) double the side
//! with BatchNorm + ReLU until the image size is reached; tanh puts pixels in [-1, 1].
//!
//! The small-budget recipe's variant (`GeneratorArch::ResizeConv`) keeps the same widths but doubles the side by
//! nearest-neighbour up-sampling followed by two 3×3 convolutions (transposed convolutions with a kernel the stride
//! does not divide evenly paint the checkerboard seen in early samples; Odena et al. 2016), and conditions every
//! block through class-conditional BatchNorm (per-class gain and bias, the conditioning of SNGAN/BigGAN): a label
//! that only scales z reaches the texture layers weakly, and the classes here differ mostly in texture.
//!
//! The `GeneratorArch::PixelShuffle` variant is the resize-conv generator with its last stage replaced: the blocks
//! stop at half the side, and one 3×3 convolution to 3·4 channels is rearranged into the image at full side (the
//! sub-pixel convolution of Shi et al. 2016). Why: on a CPU the full-resolution block is most of the generator's cost
//! (`docs/gan-recipe.md` measures the step), and each output pixel keeps its own weights. Its weights start
//! ICNR-initialised (Aitken et al. 2017: the four sub-pixel filters of a colour are equal, see `init.rs`), so at
//! initialisation it is nearest up-sampling followed by a convolution and paints no checkerboard.
//!
//! Both normalise their blocks with BatchNorm or, with `g_norm = group`, GroupNorm ([`GeneratorNorm`]); either is
//! followed by the per-class gain and bias. GroupNorm normalises each image on its own: a federated site's batch
//! statistics are those of its own classes, and no averaged running statistics have to stand in for them at sampling.
//!
//! Their 3×3 convolutions pad with zeros or, with `g_padding = reflect`, by mirroring ([`GeneratorPadding`]). Why the
//! choice: a zero border tells every layer where the edge is, and the demo's generators learned edge-only dots there
//! (`docs/gan-recipe.md`); a mirrored border carries no such signal.

use tch::nn;
use tch::{Kind, Tensor};

use super::config::{GeneratorArch, GeneratorNorm, GeneratorPadding, ModelConfig};
use super::layers::Conv2d;

/// The block normalisation without affine parameters: BatchNorm, or GroupNorm ([`GeneratorNorm`]).
#[derive(Debug)]
enum Norm {
    Batch(nn::BatchNorm),
    Group(i64),
}

/// Groups of a GroupNorm over `channels`: about 8 channels each (16 channels → 2 groups, 128 → 16), the largest
/// count at most that which divides `channels`.
fn groups_for(channels: i64) -> i64 {
    (1..=(channels / 8).max(1)).rev().find(|g| channels % g == 0).unwrap_or(1)
}

/// A normalisation without its own affine parameters ([`GeneratorNorm`]), followed by a per-class gain (1 + γ_y) and
/// bias β_y.
#[derive(Debug)]
struct CondNorm {
    norm: Norm,
    gain: nn::Embedding,
    bias: nn::Embedding,
    channels: i64,
}

impl CondNorm {
    fn new(p: nn::Path, channels: i64, num_classes: i64, kind: GeneratorNorm) -> Self {
        let norm = match kind {
            GeneratorNorm::Batch => {
                let cfg = nn::BatchNormConfig { affine: false, ..Default::default() };
                Norm::Batch(nn::batch_norm2d(&p / "bn", channels, cfg))
            }
            GeneratorNorm::Group => Norm::Group(groups_for(channels)),
        };
        CondNorm {
            norm,
            gain: nn::embedding(&p / "gain", num_classes, channels, Default::default()),
            bias: nn::embedding(&p / "bias", num_classes, channels, Default::default()),
            channels,
        }
    }

    fn forward_t(&self, x: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let shape = [-1, self.channels, 1, 1];
        let g = labels.apply(&self.gain).view(shape) + 1.0;
        let b = labels.apply(&self.bias).view(shape);
        let normed = match &self.norm {
            Norm::Batch(bn) => x.apply_t(bn, train),
            Norm::Group(groups) => x.group_norm(*groups, None::<Tensor>, None::<Tensor>, 1e-5, false),
        };
        normed * g + b
    }
}

/// One ×2 stage of the resize-convolution generator: up-sample, conv 3×3, cBN, ReLU (and a second conv 3×3, cBN,
/// ReLU on the low-resolution stages, where it is cheap: 8×8 and 16×16).
#[derive(Debug)]
struct ResizeBlock {
    conv1: Conv2d,
    bn1: CondNorm,
    second: Option<(Conv2d, CondNorm)>,
}

impl ResizeBlock {
    fn new(p: nn::Path, cin: i64, cout: i64, classes: i64, two_convs: bool, cfg: &ModelConfig) -> Self {
        let (norm, reflect) = (cfg.g_norm, cfg.g_padding == GeneratorPadding::Reflect);
        ResizeBlock {
            conv1: Conv2d::new(&p / "conv1", cin, cout, 3, 1, 1, false, false).reflected(reflect),
            bn1: CondNorm::new(&p / "bn1", cout, classes, norm),
            second: two_convs.then(|| {
                (
                    Conv2d::new(&p / "conv2", cout, cout, 3, 1, 1, false, false).reflected(reflect),
                    CondNorm::new(&p / "bn2", cout, classes, norm),
                )
            }),
        }
    }

    fn forward_t(&self, x: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let (_, _, h, w) = x.size4().unwrap_or((0, 0, 0, 0));
        let up = x.upsample_nearest2d([2 * h, 2 * w], None, None);
        let h = self.bn1.forward_t(&self.conv1.forward_t(&up, train), labels, train).relu();
        match &self.second {
            Some((conv, bn)) => bn.forward_t(&conv.forward_t(&h, train), labels, train).relu(),
            None => h,
        }
    }
}

/// The resize-convolution generator (small-budget recipe).
#[derive(Debug)]
pub struct ResizeConvGenerator {
    label_emb: nn::Embedding,
    fc: nn::Linear,
    fc_bn: CondNorm,
    blocks: Vec<ResizeBlock>,
    out: Conv2d,
    c0: i64,
    /// The last doubling is the sub-pixel output convolution (`GeneratorArch::PixelShuffle`).
    subpixel: bool,
}

/// The name of the pixel-shuffle generator's output convolution, which `init.rs` initialises ICNR.
pub(crate) const SUBPIXEL: &str = "subpixel";
/// The side factor of the sub-pixel output: each colour has `SUBPIXEL_SCALE²` output channels.
pub(crate) const SUBPIXEL_SCALE: i64 = 2;

impl ResizeConvGenerator {
    fn new(p: &nn::Path, cfg: &ModelConfig, subpixel: bool) -> Self {
        let stages = cfg.num_stages();
        let ch = |i: i64| cfg.g_width * (1i64 << (stages - 1 - i).min(3));
        let c0 = ch(0);
        let k = cfg.num_classes;
        // Stages 0..stages-1 double 4 → S/2 between widths ch(i) → ch(i+1); the last doubles S/2 → S at ch(last),
        // unless the sub-pixel output does that doubling.
        let blocks = (0..if subpixel { stages - 1 } else { stages })
            .map(|i| ResizeBlock::new(p / "blocks" / i, ch(i), ch((i + 1).min(stages - 1)), k, i < 2, cfg))
            .collect();
        let out = if subpixel {
            Conv2d::new(p / SUBPIXEL, ch(stages - 1), 3 * SUBPIXEL_SCALE.pow(2), 3, 1, 1, true, false)
        } else {
            Conv2d::new(p / "out", ch(stages - 1), 3, 3, 1, 1, true, false)
        }
        .reflected(cfg.g_padding == GeneratorPadding::Reflect);
        ResizeConvGenerator {
            label_emb: nn::embedding(p / "label_emb", k, cfg.latent_dim, Default::default()),
            fc: nn::linear(p / "fc", cfg.latent_dim, c0 * 16, nn::LinearConfig { bias: false, ..Default::default() }),
            fc_bn: CondNorm::new(p / "fc_bn", c0, k, cfg.g_norm),
            blocks,
            out,
            c0,
            subpixel,
        }
    }

    fn forward_t(&self, z: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let h = z * labels.apply(&self.label_emb);
        let h = h.apply(&self.fc).view([-1, self.c0, 4, 4]);
        let mut h = self.fc_bn.forward_t(&h, labels, train).relu();
        for b in &self.blocks {
            h = b.forward_t(&h, labels, train);
        }
        let out = self.out.forward_t(&h, train);
        if self.subpixel {
            out.pixel_shuffle(SUBPIXEL_SCALE).tanh()
        } else {
            out.tanh()
        }
    }
}

#[derive(Debug)]
struct UpBlock {
    conv: nn::ConvTranspose2D,
    bn: nn::BatchNorm,
}

/// Class-conditional generator: (z [B, latent], labels [B]) → images [B, 3, S, S] in [-1, 1].
#[derive(Debug)]
pub enum Generator {
    Dcgan(Box<DcganGenerator>),
    ResizeConv(Box<ResizeConvGenerator>),
}

impl Generator {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        match cfg.generator_arch {
            GeneratorArch::Dcgan => Generator::Dcgan(Box::new(DcganGenerator::new(p, cfg))),
            GeneratorArch::ResizeConv => Generator::ResizeConv(Box::new(ResizeConvGenerator::new(p, cfg, false))),
            GeneratorArch::PixelShuffle => Generator::ResizeConv(Box::new(ResizeConvGenerator::new(p, cfg, true))),
        }
    }

    pub fn forward_t(&self, z: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let out = match self {
            Generator::Dcgan(g) => g.forward_t(z, labels, train),
            Generator::ResizeConv(g) => g.forward_t(z, labels, train),
        };
        debug_assert_eq!(out.kind(), Kind::Float);
        out
    }
}

/// The paper's DCGAN generator.
#[derive(Debug)]
pub struct DcganGenerator {
    label_emb: nn::Embedding,
    fc: nn::Linear,
    fc_bn: nn::BatchNorm,
    blocks: Vec<UpBlock>,
    out: nn::ConvTranspose2D,
    c0: i64,
}

fn up_conv(p: nn::Path, cin: i64, cout: i64, bias: bool) -> nn::ConvTranspose2D {
    let c = nn::ConvTransposeConfig { stride: 2, padding: 1, bias, ..Default::default() };
    nn::conv_transpose2d(p, cin, cout, 4, c)
}

impl DcganGenerator {
    fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let stages = cfg.num_stages();
        // Channels per 4·2^i map: g_width · 2^(stages-1-i), capped at 8·g_width.
        let ch = |i: i64| cfg.g_width * (1i64 << (stages - 1 - i).min(3));
        let c0 = ch(0);
        let blocks = (0..stages - 1)
            .map(|i| UpBlock {
                conv: up_conv(p / "blocks" / i / "conv", ch(i), ch(i + 1), false),
                bn: nn::batch_norm2d(p / "blocks" / i / "bn", ch(i + 1), Default::default()),
            })
            .collect();
        DcganGenerator {
            label_emb: nn::embedding(p / "label_emb", cfg.num_classes, cfg.latent_dim, Default::default()),
            fc: nn::linear(p / "fc", cfg.latent_dim, c0 * 16, nn::LinearConfig { bias: false, ..Default::default() }),
            fc_bn: nn::batch_norm2d(p / "fc_bn", c0, Default::default()),
            blocks,
            out: up_conv(p / "out", ch(stages - 1), 3, true),
            c0,
        }
    }

    fn forward_t(&self, z: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let h = z * labels.apply(&self.label_emb);
        let mut h = h.apply(&self.fc).view([-1, self.c0, 4, 4]).apply_t(&self.fc_bn, train).relu();
        for b in &self.blocks {
            h = h.apply(&b.conv).apply_t(&b.bn, train).relu();
        }
        h.apply(&self.out).tanh()
    }
}
