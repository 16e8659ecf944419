//! A discriminator = backbone (CNN or ViT) + conditioning head chosen by the objective.
//!
//! Why two heads: CGAN and WGAN-GP condition through a projection (Miyato & Koyama 2018): score = ψ(h) + ⟨e_y, h⟩,
//! one scalar per sample, which keeps the critic a plain function of (x, y) as the gradient penalty needs. ACGAN
//! instead asks the discriminator to classify: a source logit plus class logits (Odena et al. 2017). Any backbone
//! works with any head, giving the paper's six combinations.
//!
//! With `minibatch_std` the head also sees how much the features spread across a small group of the batch (ProGAN):
//! a discriminator that looks at one image at a time cannot tell a generator that draws one image per class from the
//! data, and the samples of this project's small GANs did look alike within a class (docs/gan-recipe.md).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::config::{DiscKind, GanKind, ModelConfig};
use super::disc_cnn::CnnBackbone;
use super::disc_vit::VitBackbone;
use super::layers::Linear;

#[derive(Debug)]
enum Backbone {
    Cnn(CnnBackbone),
    Vit(Box<VitBackbone>),
}

#[derive(Debug)]
enum Head {
    Projection { head: Linear, class_emb: nn::Embedding },
    Auxiliary { head: Linear, aux: Linear },
}

/// What a discriminator says about a batch.
#[derive(Debug)]
pub struct DiscOutput {
    /// Real/fake logit (or critic score) per sample, [B].
    pub source: Tensor,
    /// Class logits [B, num_classes] (ACGAN only).
    pub class_logits: Option<Tensor>,
}

/// Conditional discriminator / critic.
#[derive(Debug)]
pub struct Discriminator {
    backbone: Backbone,
    head: Head,
    /// Append the minibatch standard deviation to the features ([`ModelConfig::minibatch_std`]).
    minibatch_std: bool,
}

/// Images per minibatch-standard-deviation group (ProGAN's 4).
const MBSTD_GROUP: i64 = 4;

/// One feature per sample: the standard deviation of `h` [B, F] across the sample's group, averaged over features.
/// Sample `i` is in group `i mod (B / g)` with `g` the largest of 4, 2, 1 that divides B (ProGAN's grouping); a
/// group of one has spread 0.
pub(crate) fn minibatch_std(h: &Tensor) -> Tensor {
    let (b, f) = h.size2().unwrap_or((0, 0));
    let g = [MBSTD_GROUP, 2, 1].into_iter().find(|g| b % g == 0).unwrap_or(1);
    if g == 1 || b == 0 {
        return h.zeros_like().narrow(1, 0, 1.min(f));
    }
    let grouped = h.view([g, b / g, f]);
    let spread = (grouped.var_dim([0i64].as_slice(), false, false) + 1e-8).sqrt();
    spread.mean_dim([1i64].as_slice(), true, Kind::Float).repeat([g, 1])
}

impl Discriminator {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let (backbone, feat) = match cfg.discriminator {
            DiscKind::Cnn => {
                let b = CnnBackbone::new(p, cfg);
                let f = b.out_dim;
                (Backbone::Cnn(b), f)
            }
            DiscKind::Vit => {
                let b = VitBackbone::new(p, cfg);
                let f = b.out_dim;
                (Backbone::Vit(Box::new(b)), f)
            }
        };
        let sn = cfg.spectral_norm;
        let feat = feat + i64::from(cfg.minibatch_std);
        let head = match cfg.gan {
            GanKind::Cgan | GanKind::WganGp => Head::Projection {
                head: Linear::new(p / "head", feat, 1, true, sn),
                class_emb: nn::embedding(p / "class_emb", cfg.num_classes, feat, Default::default()),
            },
            GanKind::Acgan => Head::Auxiliary {
                head: Linear::new(p / "head", feat, 1, true, sn),
                aux: Linear::new(p / "aux", feat, cfg.num_classes, true, sn),
            },
        };
        Discriminator { backbone, head, minibatch_std: cfg.minibatch_std }
    }

    /// Penultimate features [B, F].
    pub fn features_t(&self, x: &Tensor, train: bool) -> Tensor {
        match &self.backbone {
            Backbone::Cnn(b) => b.forward_t(x, train),
            Backbone::Vit(b) => b.forward_t(x, train),
        }
    }

    pub fn forward_t(&self, x: &Tensor, labels: &Tensor, train: bool) -> DiscOutput {
        let h = self.features_t(x, train);
        let h = if self.minibatch_std { Tensor::cat(&[&h, &minibatch_std(&h)], 1) } else { h };
        match &self.head {
            Head::Projection { head, class_emb } => {
                let proj = (class_emb.forward(labels) * &h).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
                DiscOutput { source: head.forward_t(&h, train).squeeze_dim(1) + proj, class_logits: None }
            }
            Head::Auxiliary { head, aux } => DiscOutput {
                source: head.forward_t(&h, train).squeeze_dim(1),
                class_logits: Some(aux.forward_t(&h, train)),
            },
        }
    }
}
