//! The class-conditional DCGAN generator shared by all three objectives.
//!
//! Why this shape: the paper's GANs are DCGAN-style; conditioning multiplies z by a learned label embedding
//! (as in the widely used PyTorch-GAN CGAN/ACGAN code), which keeps the input size independent of the number of
//! classes. A linear layer maps to a 4×4 map, then stride-2 transposed convolutions (kernel 4) double the side
//! with BatchNorm + ReLU until the image size is reached; tanh puts pixels in [-1, 1].

use tch::nn;
use tch::Tensor;

use super::config::ModelConfig;

#[derive(Debug)]
struct UpBlock {
    conv: nn::ConvTranspose2D,
    bn: nn::BatchNorm,
}

/// Class-conditional DCGAN generator: (z [B, latent], labels [B]) → images [B, 3, S, S] in [-1, 1].
#[derive(Debug)]
pub struct Generator {
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

impl Generator {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
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
        Generator {
            label_emb: nn::embedding(p / "label_emb", cfg.num_classes, cfg.latent_dim, Default::default()),
            fc: nn::linear(p / "fc", cfg.latent_dim, c0 * 16, nn::LinearConfig { bias: false, ..Default::default() }),
            fc_bn: nn::batch_norm2d(p / "fc_bn", c0, Default::default()),
            blocks,
            out: up_conv(p / "out", ch(stages - 1), 3, true),
            c0,
        }
    }

    pub fn forward_t(&self, z: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let h = z * labels.apply(&self.label_emb);
        let mut h = h.apply(&self.fc).view([-1, self.c0, 4, 4]).apply_t(&self.fc_bn, train).relu();
        for b in &self.blocks {
            h = h.apply(&b.conv).apply_t(&b.bn, train).relu();
        }
        h.apply(&self.out).tanh()
    }
}
