//! The convolutional discriminator backbone.
//!
//! Why these choices: DCGAN-style stride-2 4×4 convolutions with LeakyReLU(0.2) halve the side down to 4×4,
//! doubling channels up to 8·d_width. Normalisation depends on the objective: BatchNorm for CGAN/ACGAN (DCGAN),
//! no batch statistics at all in a WGAN-GP critic (the penalty is per sample, batch norm couples samples), so there
//! it is layer norm; with spectral normalisation no extra normalisation is used (SNGAN). Features are summed over
//! the final 4×4 map (global sum pooling, as in the projection-discriminator paper) and handed to the head.

use tch::nn;
use tch::Tensor;

use super::config::{GanKind, ModelConfig};
use super::layers::{lrelu, Conv2d, Norm};

#[derive(Debug)]
struct DownBlock {
    /// The optional 3×3 stride-1 convolution before the down-sampling one (`d_stage_convs = 2`).
    pre: Option<Conv2d>,
    conv: Conv2d,
    norm: Norm,
}

/// Images [B,3,S,S] → features [B, out_dim].
#[derive(Debug)]
pub struct CnnBackbone {
    blocks: Vec<DownBlock>,
    pub out_dim: i64,
}

impl CnnBackbone {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let stages = cfg.num_stages();
        let ch = |i: i64| cfg.d_width * (1i64 << i.min(3));
        let sn = cfg.spectral_norm;
        let mut blocks = Vec::new();
        for i in 0..stages {
            let cin = if i == 0 { 3 } else { ch(i - 1) };
            let cout = ch(i);
            let bp = p / "blocks" / i;
            // The first block sees raw pixels: no normalisation there (DCGAN).
            let norm = if i == 0 || sn {
                Norm::None
            } else if cfg.gan == GanKind::WganGp {
                Norm::Layer(nn::group_norm(&bp / "norm", 1, cout, Default::default()))
            } else {
                Norm::Batch(nn::batch_norm2d(&bp / "norm", cout, Default::default()))
            };
            let bias = matches!(norm, Norm::None);
            // The extra convolution keeps the stage's input width (the first one widens 3 → d_width) and, like
            // the first block, carries no normalisation other than spectral norm.
            let pre_out = if i == 0 { cout } else { cin };
            let pre = (cfg.d_stage_convs > 1).then(|| Conv2d::new(&bp / "pre", cin, pre_out, 3, 1, 1, true, sn));
            let cin = if pre.is_some() { pre_out } else { cin };
            blocks.push(DownBlock { pre, conv: Conv2d::new(&bp / "conv", cin, cout, 4, 2, 1, bias, sn), norm });
        }
        CnnBackbone { blocks, out_dim: ch(stages - 1) }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for b in &self.blocks {
            if let Some(pre) = &b.pre {
                h = lrelu(&pre.forward_t(&h, train));
            }
            h = lrelu(&b.norm.forward_t(&b.conv.forward_t(&h, train), train));
        }
        h.sum_dim_intlist([2i64, 3].as_slice(), false, tch::Kind::Float)
    }
}
