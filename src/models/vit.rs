//! The vision-transformer encoder shared by the ViT discriminator and the ViT classifier.
//!
//! Why one encoder for both: the paper pairs a ViT critic with a ViT classifier, and keeping the block identical
//! (patch embedding, class token, learned position embedding, pre-norm blocks of multi-head self-attention and a
//! GELU MLP, final LayerNorm — the ViT-B/16 layout) means one set of tests covers both. Attention is written out
//! (softmax(QKᵀ/√d)V) rather than calling the fused kernel, because the WGAN-GP critic needs a double backward
//! and libtorch's fused CPU/flash attention kernels are not twice differentiable. Names follow timm's
//! `VisionTransformer` (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.attn.qkv`, ...).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::layers::{Conv2d, Linear};

/// Shape of a ViT encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VitShape {
    pub image_size: i64,
    pub patch: i64,
    pub dim: i64,
    pub depth: i64,
    pub heads: i64,
    pub mlp_ratio: i64,
}

#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: nn::LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: i64,
}

impl Block {
    fn new(p: nn::Path, dim: i64, heads: i64, mlp_ratio: i64) -> Self {
        let ln = nn::LayerNormConfig { eps: 1e-6, ..Default::default() };
        Block {
            norm1: nn::layer_norm(&p / "norm1", vec![dim], ln),
            qkv: Linear::new(&p / "attn" / "qkv", dim, 3 * dim, true, false),
            proj: Linear::new(&p / "attn" / "proj", dim, dim, true, false),
            norm2: nn::layer_norm(&p / "norm2", vec![dim], ln),
            fc1: Linear::new(&p / "mlp" / "fc1", dim, mlp_ratio * dim, true, false),
            fc2: Linear::new(&p / "mlp" / "fc2", mlp_ratio * dim, dim, true, false),
            heads,
        }
    }

    fn attention(&self, x: &Tensor) -> Tensor {
        let (b, n, d) = x.size3().unwrap_or((0, 0, 0));
        let hd = d / self.heads;
        let qkv = self.qkv.forward(x).view([b, n, 3, self.heads, hd]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let attn = (q.matmul(&k.transpose(-2, -1)) * (1.0 / (hd as f64).sqrt())).softmax(-1, Kind::Float);
        let out = attn.matmul(&v).transpose(1, 2).reshape([b, n, d]);
        self.proj.forward(&out)
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.attention(&self.norm1.forward(x));
        let h = self.fc2.forward(&self.fc1.forward(&self.norm2.forward(&x)).gelu("none"));
        x + h
    }
}

/// Patch embedding + class token + position embedding + transformer blocks + final norm.
#[derive(Debug)]
pub(crate) struct VitEncoder {
    patch_embed: Conv2d,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    pub(crate) dim: i64,
}

impl VitEncoder {
    pub(crate) fn new(p: &nn::Path, s: VitShape) -> Self {
        let n_patches = (s.image_size / s.patch) * (s.image_size / s.patch);
        let blocks = (0..s.depth).map(|i| Block::new(p / "blocks" / i, s.dim, s.heads, s.mlp_ratio)).collect();
        VitEncoder {
            patch_embed: Conv2d::new(p / "patch_embed" / "proj", 3, s.dim, s.patch, s.patch, 0, true, false),
            cls_token: p.var("cls_token", &[1, 1, s.dim], nn::Init::Const(0.0)),
            pos_embed: p.var("pos_embed", &[1, n_patches + 1, s.dim], nn::Init::Const(0.0)),
            blocks,
            norm: nn::layer_norm(p / "norm", vec![s.dim], nn::LayerNormConfig { eps: 1e-6, ..Default::default() }),
            dim: s.dim,
        }
    }

    /// Images [B,3,H,W] → the normalised class-token embedding [B, dim].
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let b = x.size()[0];
        let tokens = self.patch_embed.forward_t(x, false).flatten(2, -1).transpose(1, 2); // [B, N, D]
        let cls = self.cls_token.expand([b, 1, self.dim], false);
        let mut h = Tensor::cat(&[cls, tokens], 1) + &self.pos_embed;
        for blk in &self.blocks {
            h = blk.forward(&h);
        }
        self.norm.forward(&h.select(1, 0))
    }
}
