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
    /// Spectral normalisation of every weight matrix (discriminator use).
    pub spectral_norm: bool,
    /// L2-distance attention with tied query/key projections (ViTGAN): Lipschitz, unlike dot-product attention.
    pub l2_attention: bool,
    /// Pixels each patch overlaps its neighbours by on each side (0 = the plain ViT split).
    pub overlap: i64,
}

impl VitShape {
    /// The plain ViT-B/16 layout of this size (no discriminator fixes).
    pub(crate) fn plain(image_size: i64, patch: i64, dim: i64, depth: i64, heads: i64, mlp_ratio: i64) -> Self {
        VitShape {
            image_size,
            patch,
            dim,
            depth,
            heads,
            mlp_ratio,
            spectral_norm: false,
            l2_attention: false,
            overlap: 0,
        }
    }
}

#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    /// [q | k | v] for dot-product attention; [q | v] for L2 attention (keys are the queries).
    qkv: Linear,
    l2: bool,
    proj: Linear,
    norm2: nn::LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: i64,
}

impl Block {
    fn new(p: nn::Path, s: &VitShape) -> Self {
        let ln = nn::LayerNormConfig { eps: 1e-6, ..Default::default() };
        let (dim, sn) = (s.dim, s.spectral_norm);
        let qkv = if s.l2_attention {
            Linear::new(&p / "attn" / "qv", dim, 2 * dim, true, sn)
        } else {
            Linear::new(&p / "attn" / "qkv", dim, 3 * dim, true, sn)
        };
        Block {
            norm1: nn::layer_norm(&p / "norm1", vec![dim], ln),
            qkv,
            l2: s.l2_attention,
            proj: Linear::new(&p / "attn" / "proj", dim, dim, true, sn),
            norm2: nn::layer_norm(&p / "norm2", vec![dim], ln),
            fc1: Linear::new(&p / "mlp" / "fc1", dim, s.mlp_ratio * dim, true, sn),
            fc2: Linear::new(&p / "mlp" / "fc2", s.mlp_ratio * dim, dim, true, sn),
            heads: s.heads,
        }
    }

    fn attention(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, n, d) = x.size3().unwrap_or((0, 0, 0));
        let hd = d / self.heads;
        let scale = 1.0 / (hd as f64).sqrt();
        let (attn, v) = if self.l2 {
            let qv = self.qkv.forward_t(x, train).view([b, n, 2, self.heads, hd]).permute([2, 0, 3, 1, 4]);
            let (q, v) = (qv.get(0), qv.get(1));
            // −‖qᵢ − qⱼ‖² = 2 qᵢ·qⱼ − ‖qᵢ‖² − ‖qⱼ‖², written out so that it stays twice differentiable.
            let sq = q.square().sum_dim_intlist([-1i64].as_slice(), true, Kind::Float);
            let logits = q.matmul(&q.transpose(-2, -1)) * 2.0 - &sq - sq.transpose(-2, -1);
            ((logits * scale).softmax(-1, Kind::Float), v)
        } else {
            let qkv = self.qkv.forward_t(x, train).view([b, n, 3, self.heads, hd]).permute([2, 0, 3, 1, 4]);
            let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
            ((q.matmul(&k.transpose(-2, -1)) * scale).softmax(-1, Kind::Float), v)
        };
        let out = attn.matmul(&v).transpose(1, 2).reshape([b, n, d]);
        self.proj.forward_t(&out, train)
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let x = x + self.attention(&self.norm1.forward(x), train);
        let h = self.fc2.forward_t(&self.fc1.forward_t(&self.norm2.forward(&x), train).gelu("none"), train);
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
        let blocks = (0..s.depth).map(|i| Block::new(p / "blocks" / i, &s)).collect();
        let kernel = s.patch + 2 * s.overlap;
        VitEncoder {
            patch_embed: Conv2d::new(
                p / "patch_embed" / "proj",
                3,
                s.dim,
                kernel,
                s.patch,
                s.overlap,
                true,
                s.spectral_norm,
            ),
            cls_token: p.var("cls_token", &[1, 1, s.dim], nn::Init::Const(0.0)),
            pos_embed: p.var("pos_embed", &[1, n_patches + 1, s.dim], nn::Init::Const(0.0)),
            blocks,
            norm: nn::layer_norm(p / "norm", vec![s.dim], nn::LayerNormConfig { eps: 1e-6, ..Default::default() }),
            dim: s.dim,
        }
    }

    /// Images [B,3,H,W] → the normalised class-token embedding [B, dim] (inference: spectral-norm estimates frozen).
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_t(x, false)
    }

    /// [`VitEncoder::forward`]; `train` advances the spectral-norm power iteration.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let b = x.size()[0];
        let tokens = self.patch_embed.forward_t(x, train).flatten(2, -1).transpose(1, 2); // [B, N, D]
        let cls = self.cls_token.expand([b, 1, self.dim], false);
        let mut h = Tensor::cat(&[cls, tokens], 1) + &self.pos_embed;
        for blk in &self.blocks {
            h = blk.forward_t(&h, train);
        }
        self.norm.forward(&h.select(1, 0))
    }
}
