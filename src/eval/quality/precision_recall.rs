//! Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) with k-NN manifolds.
//!
//! Why: FD folds "the samples look wrong" and "the samples miss part of the data" into one number. Here each set
//! defines a manifold, the union of balls around its samples whose radius is the distance to the sample's k-th
//! nearest neighbour in its own set. Precision is the share of synthetic samples inside the real manifold
//! (fidelity); recall the share of real samples inside the synthetic manifold (coverage). A mode-dropping generator
//! keeps precision and loses recall; a blurry one loses precision. Distances are computed in chunks
//! (`quality::distances`), so memory stays bounded whatever the set sizes.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::distances::{in_manifold, knn};
use super::{guard, QualityError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecisionRecall {
    pub k: usize,
    /// Share of synthetic samples inside the real manifold.
    pub precision: f64,
    /// Share of real samples inside the synthetic manifold.
    pub recall: f64,
    pub real_count: usize,
    pub synthetic_count: usize,
}

/// Radius of each row's ball: the distance to its k-th nearest neighbour within `x`, itself not counted. [N] f64.
pub fn manifold_radii(x: &Tensor, k: usize, chunk: usize) -> Result<Tensor, QualityError> {
    // Each row finds itself at distance 0 among its k + 1 nearest, so column k is the k-th other neighbour.
    let nn = knn(x, x, k + 1, chunk)?;
    guard("manifold radii", || Ok(nn.distances.select(1, k as i64).to_kind(Kind::Double)))
}

/// Precision and recall of `synthetic` [M, D] against `real` [N, D]; both sets need more than `k` samples.
pub fn precision_recall(
    real: &Tensor,
    synthetic: &Tensor,
    k: usize,
    chunk: usize,
) -> Result<PrecisionRecall, QualityError> {
    let (n, m) = (real.size()[0] as usize, synthetic.size()[0] as usize);
    for (what, got) in [("the real set", n), ("the synthetic set", m)] {
        if got <= k {
            return Err(QualityError::TooFewSamples {
                metric: "precision/recall",
                what: what.into(),
                got,
                need: k + 1,
            });
        }
    }
    let real_radii = manifold_radii(real, k, chunk)?;
    let syn_radii = manifold_radii(synthetic, k, chunk)?;
    let share = |v: Vec<bool>| v.iter().filter(|&&b| b).count() as f64 / v.len().max(1) as f64;
    let precision = share(in_manifold(synthetic, real, &real_radii, chunk)?);
    let recall = share(in_manifold(real, synthetic, &syn_radii, chunk)?);
    Ok(PrecisionRecall { k, precision, recall, real_count: n, synthetic_count: m })
}
