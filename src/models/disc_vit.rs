//! The vision-transformer discriminator backbone.
//!
//! Why a thin wrapper: the encoder itself lives in `vit.rs` (shared with the classifier); the discriminator only
//! fixes its shape from the GAN config (MLP ratio 4) and exposes the class-token embedding as the feature vector
//! the projection / auxiliary heads read. LayerNorm only, so it is a valid WGAN-GP critic as it stands. The small-budget recipe adds the ViTGAN fixes
//! (spectral norm on every weight matrix, L2-distance attention, overlapping patches): see `vit.rs`.

use tch::nn;
use tch::Tensor;

use super::config::ModelConfig;
use super::vit::{VitEncoder, VitShape};

/// Images [B,3,S,S] → class-token features [B, vit_dim].
#[derive(Debug)]
pub struct VitBackbone {
    encoder: VitEncoder,
    pub out_dim: i64,
}

impl VitBackbone {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let shape = VitShape {
            image_size: cfg.image_size,
            patch: cfg.vit_patch,
            dim: cfg.vit_dim,
            depth: cfg.vit_depth,
            heads: cfg.vit_heads,
            mlp_ratio: 4,
            spectral_norm: cfg.spectral_norm,
            l2_attention: cfg.vit_l2_attention,
            overlap: cfg.vit_overlap,
        };
        let encoder = VitEncoder::new(p, shape);
        VitBackbone { out_dim: encoder.dim, encoder }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.encoder.forward_t(x, train)
    }
}
