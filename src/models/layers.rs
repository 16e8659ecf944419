//! Small building blocks shared by the networks: optionally spectrally-normalised conv and linear layers,
//! LeakyReLU(0.2), and a normalisation switch.
//!
//! Why hand-written instead of `tch::nn::Conv2D`: spectral normalisation (Miyato et al. 2018) needs the raw weight
//! (`weight_orig`) plus power-iteration vectors (`weight_u`, `weight_v`) stored next to it, under the same names
//! PyTorch's `torch.nn.utils.spectral_norm` uses, so a checkpoint stays loadable there.

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

/// Power-iteration state of one spectrally-normalised weight.
#[derive(Debug)]
struct SpectralNorm {
    u: Tensor,
    v: Tensor,
}

fn l2_normalize(t: &Tensor) -> Tensor {
    t / t.norm().clamp_min(1e-12)
}

impl SpectralNorm {
    fn new(p: &nn::Path, out_dim: i64, in_dim: i64) -> Self {
        SpectralNorm { u: p.zeros_no_train("weight_u", &[out_dim]), v: p.zeros_no_train("weight_v", &[in_dim]) }
    }

    /// W / σ(W), with one power-iteration update of (u, v) in training mode (as PyTorch does).
    fn apply(&self, w: &Tensor, train: bool) -> Tensor {
        let out_dim = w.size()[0];
        let mat = w.view([out_dim, -1]);
        if train {
            let _g = tch::no_grad_guard();
            let matd = mat.detach();
            let v = l2_normalize(&matd.transpose(0, 1).mv(&self.u));
            let u = l2_normalize(&matd.mv(&v));
            self.v.shallow_clone().copy_(&v);
            self.u.shallow_clone().copy_(&u);
        }
        // Copies, as PyTorch does: the stored vectors are updated in place by the next forward pass, which must not
        // invalidate the graph of this one (two forwards per step: real and fake).
        let sigma = self.u.copy().dot(&mat.mv(&self.v.copy()));
        w / sigma
    }
}

/// A 2-D convolution, optionally spectrally normalised.
#[derive(Debug)]
pub(crate) struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    sn: Option<SpectralNorm>,
    stride: i64,
    padding: i64,
    /// Mirror the input at its edge instead of padding it with zeros.
    reflect: bool,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        p: nn::Path,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        padding: i64,
        bias: bool,
        sn: bool,
    ) -> Self {
        let shape = [cout, cin, k, k];
        let (weight, sn) = if sn {
            (p.var("weight_orig", &shape, nn::Init::Const(0.0)), Some(SpectralNorm::new(&p, cout, cin * k * k)))
        } else {
            (p.var("weight", &shape, nn::Init::Const(0.0)), None)
        };
        let bias = bias.then(|| p.var("bias", &[cout], nn::Init::Const(0.0)));
        Conv2d { weight, bias, sn, stride, padding, reflect: false }
    }

    /// The same convolution padding its input by reflection (`padding` must be smaller than the input's side).
    pub(crate) fn reflected(self, reflect: bool) -> Self {
        Conv2d { reflect, ..self }
    }

    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let w = match &self.sn {
            Some(sn) => sn.apply(&self.weight, train),
            None => self.weight.shallow_clone(),
        };
        if self.reflect && self.padding > 0 {
            let p = self.padding;
            x.reflection_pad2d([p, p, p, p]).conv2d(&w, self.bias.as_ref(), [self.stride; 2], [0, 0], [1, 1], 1)
        } else {
            x.conv2d(&w, self.bias.as_ref(), [self.stride; 2], [self.padding; 2], [1, 1], 1)
        }
    }
}

/// A linear layer, optionally spectrally normalised.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    sn: Option<SpectralNorm>,
}

impl Linear {
    pub(crate) fn new(p: nn::Path, din: i64, dout: i64, bias: bool, sn: bool) -> Self {
        let (weight, sn) = if sn {
            (p.var("weight_orig", &[dout, din], nn::Init::Const(0.0)), Some(SpectralNorm::new(&p, dout, din)))
        } else {
            (p.var("weight", &[dout, din], nn::Init::Const(0.0)), None)
        };
        let bias = bias.then(|| p.var("bias", &[dout], nn::Init::Const(0.0)));
        Linear { weight, bias, sn }
    }

    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let w = match &self.sn {
            Some(sn) => sn.apply(&self.weight, train),
            None => self.weight.shallow_clone(),
        };
        x.linear(&w, self.bias.as_ref())
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_t(x, false)
    }
}

/// LeakyReLU with slope 0.2 (tch's `leaky_relu` is fixed at 0.01); twice differentiable, as the gradient penalty needs.
pub(crate) fn lrelu(x: &Tensor) -> Tensor {
    x.maximum(&(x * 0.2))
}

/// Feature normalisation inside a CNN discriminator block.
#[derive(Debug)]
pub(crate) enum Norm {
    None,
    Batch(nn::BatchNorm),
    /// GroupNorm with one group = layer norm over (C, H, W) with per-channel gain: safe for a WGAN-GP critic,
    /// whose gradient penalty assumes each sample's score depends on that sample only (batch norm breaks this).
    Layer(nn::GroupNorm),
}

impl Norm {
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Norm::None => x.shallow_clone(),
            Norm::Batch(bn) => bn.forward_t(x, train),
            Norm::Layer(gn) => gn.forward(x),
        }
    }
}
