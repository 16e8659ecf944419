//! A discriminator = backbone (CNN or ViT) + conditioning head chosen by the objective.
//!
//! Why two heads: CGAN and WGAN-GP condition through a projection (Miyato & Koyama 2018): score = ψ(h) + ⟨e_y, h⟩,
//! one scalar per sample, which keeps the critic a plain function of (x, y) as the gradient penalty needs. ACGAN
//! instead asks the discriminator to classify: a source logit plus class logits (Odena et al. 2017). Any backbone
//! works with any head, giving the paper's six combinations.

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
        Discriminator { backbone, head }
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
