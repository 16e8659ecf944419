//! Border artefacts: how much more fine detail a class's images carry in their outer ring than inside, synthetic
//! relative to real.
//!
//! Why a metric of its own: a generator whose convolutions pad with zeros knows where the border is and can learn
//! edge-only patterns (the demo's generators drew dark dots along the right and bottom edges of near-flat tiles), and
//! the discriminator's stride-2 windows see the outermost pixels least, so such patterns cost it little. The feature
//! metrics do not localise them, and a classifier that standardises each image can read them as texture. Per image,
//! the high-pass response is the grey value minus its 3×3 mean (the image replicated at its edge, so a smooth border
//! responds like a smooth interior); the class's ring energy over interior energy (ratio of means over its images,
//! plus a small floor so flat images read ≈ 1) is computed for the real and the synthetic images; the excess is
//! synthetic / real. ≈ 1: borders like the data's; well above 1: the generator draws something at its borders that
//! the data does not have. No pass rule is attached: it is reported, and the worst class is named.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{class_indices, guard, positive_ratio, select_rows, QualityError};

/// Width of the outer ring as a share of the side (2 pixels of 32).
pub const EDGE_RING_SHARE: f64 = 1.0 / 16.0;
/// Added to both energies (in pixel units of [-1, 1]) so that near-flat images read ≈ 1, not noise over noise.
const ENERGY_FLOOR: f64 = 1e-3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassEdges {
    pub class: usize,
    pub name: String,
    /// Ring energy / interior energy of the class's real and synthetic images (absent without images).
    pub real: Option<f64>,
    pub synthetic: Option<f64>,
    /// synthetic / real.
    pub excess: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeReport {
    pub per_class: Vec<ClassEdges>,
    /// The largest excess over the classes, and its class.
    pub max_excess: Option<f64>,
    pub worst_class: Option<usize>,
}

/// Ring-over-interior energy of a set of images [N,3,H,W]: mean |high-pass| over every image's ring pixels, over
/// the mean over their interior pixels (each plus the floor); `None` for an empty set.
fn ring_ratio(x: &Tensor) -> Option<f64> {
    let (n, _, h, w) = x.size4().unwrap_or((0, 0, 0, 0));
    if n == 0 {
        return None;
    }
    let grey = x.to_kind(Kind::Double).mean_dim([1i64].as_slice(), true, Kind::Double);
    let local = grey.replication_pad2d([1, 1, 1, 1]).avg_pool2d([3, 3], [1, 1], [0, 0], false, true, None::<i64>);
    let high = (&grey - local).abs();
    let r = ((h.min(w) as f64 * EDGE_RING_SHARE).round() as i64).max(1);
    let ring = Tensor::ones([h, w], (Kind::Double, x.device()));
    let _ = ring.narrow(0, r, (h - 2 * r).max(0)).narrow(1, r, (w - 2 * r).max(0)).fill_(0.0);
    let interior = 1.0 - &ring;
    let mean_in = |mask: &Tensor| {
        let pixels = mask.sum(Kind::Double).double_value(&[]).max(1.0) * n as f64;
        (&high * mask).sum(Kind::Double).double_value(&[]) / pixels + ENERGY_FLOOR
    };
    Some(mean_in(&ring) / mean_in(&interior))
}

/// Per-class border excess of synthetic images [N,3,H,W] over real ones (in [-1, 1]); `names` has one entry per
/// class. Images smaller than 3×3 are refused.
pub fn edge_excess(
    real: &Tensor,
    real_labels: &[i64],
    synth: &Tensor,
    synth_labels: &[i64],
    names: &[String],
) -> Result<EdgeReport, QualityError> {
    for (what, x) in [("real pixels", real), ("synthetic pixels", synth)] {
        match x.size().as_slice() {
            [_, 3, h, w] if *h >= 3 && *w >= 3 => {}
            shape => {
                return Err(QualityError::Input {
                    what: what.into(),
                    detail: format!("expected images [N, 3, H ≥ 3, W ≥ 3], got {shape:?}"),
                })
            }
        }
    }
    let k = names.len();
    let (real_by, syn_by) = (class_indices(real_labels, k), class_indices(synth_labels, k));
    let mut per_class = Vec::with_capacity(k);
    for (class, name) in names.iter().enumerate() {
        let ratio = |x: &Tensor, idx: &[i64]| -> Result<Option<f64>, QualityError> {
            if idx.is_empty() {
                return Ok(None);
            }
            let rows = select_rows(x, idx)?;
            guard("border energy", || Ok(ring_ratio(&rows)))
        };
        let (r, s) = (ratio(real, &real_by[class])?, ratio(synth, &syn_by[class])?);
        per_class.push(ClassEdges { class, name: name.clone(), real: r, synthetic: s, excess: positive_ratio(s, r) });
    }
    let worst = per_class.iter().filter_map(|c| c.excess.map(|e| (c.class, e))).max_by(|a, b| a.1.total_cmp(&b.1));
    Ok(EdgeReport { per_class, max_excess: worst.map(|w| w.1), worst_class: worst.map(|w| w.0) })
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::models::rng::SeededRng;

    /// Smooth random "tissue": noise blurred, so that every pixel has neighbours like it, in [-1, 1].
    fn smooth(n: i64, seed: i64) -> Tensor {
        let x = SeededRng::new(seed).uniform_tensor(&[n, 3, 32, 32], -1.0, 1.0, Device::Cpu);
        x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>) * 1.5
    }

    #[test]
    fn dots_on_the_border_are_seen_and_real_like_borders_read_one() {
        tch::set_num_threads(1);
        let names: Vec<String> = ["plain", "dotted", "flat"].iter().map(|s| s.to_string()).collect();
        let per = 12;
        let labels: Vec<i64> = (0..3).flat_map(|c| std::iter::repeat_n(c, per as usize)).collect();
        let real = Tensor::cat(&[smooth(per, 1), smooth(per, 2), smooth(per, 3) * 0.0 + 0.5], 0);
        // Class 1: the same smooth images with dark dots every 4 pixels along the right and bottom edges.
        let dotted = smooth(per, 5);
        for i in (0..32).step_by(4) {
            let _ = dotted.narrow(3, 31, 1).narrow(2, i, 1).fill_(-1.0);
            let _ = dotted.narrow(2, 31, 1).narrow(3, i, 1).fill_(-1.0);
        }
        let synth = Tensor::cat(&[smooth(per, 4), dotted, smooth(per, 6) * 0.0 - 0.2], 0);
        let rep = edge_excess(&real, &labels, &synth, &labels, &names).unwrap();
        let e: Vec<f64> = rep.per_class.iter().map(|c| c.excess.unwrap()).collect();
        assert!((0.85..1.15).contains(&e[0]), "fresh images of the same kind: {e:?}");
        assert!(e[1] > 1.5, "dotted borders: {e:?}");
        assert!((0.99..1.01).contains(&e[2]), "flat images have no border artefact: {e:?}");
        assert_eq!((rep.worst_class, rep.max_excess), (Some(1), Some(e[1])));

        // A class with no synthetic images has no excess; a wrong shape is named.
        let rep = edge_excess(&real, &labels, &synth.narrow(0, 0, per), &labels[..per as usize], &names).unwrap();
        assert!(rep.per_class[1].excess.is_none() && rep.per_class[1].real.is_some());
        let bad =
            edge_excess(&real, &labels, &Tensor::zeros([2, 3, 2, 2], (Kind::Float, Device::Cpu)), &[0, 0], &names);
        assert!(bad.unwrap_err().to_string().contains("synthetic pixels"));
    }
}
