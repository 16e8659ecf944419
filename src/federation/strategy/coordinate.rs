//! Coordinate-wise robust rules: FedMedian and the trimmed mean, both an order statistic of the K values at every
//! coordinate (all updates kept: O(K·P) memory), unweighted so that a site's sample count cannot buy it influence.
//! As strategies they are `Collecting<FedMedian>` and `Collecting<TrimmedMean>`.

use super::aggregate::{coordinate_wise, Combine};
use super::api::AggregateError;
use crate::federation::weights::Weights;

/// Coordinate-wise median (Yin et al. 2018). For an even number of updates, the mean of the two middle values.
#[derive(Debug, Default, Clone, Copy)]
pub struct FedMedian;

impl Combine for FedMedian {
    fn name(&self) -> &'static str {
        "fedmedian"
    }
    fn combine(&self, updates: Vec<Weights>) -> Result<Weights, AggregateError> {
        coordinate_wise(updates, |col| {
            col.sort_unstable_by(f32::total_cmp);
            let k = col.len();
            if k % 2 == 1 {
                col[k / 2]
            } else {
                ((f64::from(col[k / 2 - 1]) + f64::from(col[k / 2])) / 2.0) as f32
            }
        })
    }
}

/// Coordinate-wise trimmed mean (Yin et al. 2018): at every coordinate the `floor(beta·K)` largest and smallest
/// values are dropped and the rest averaged.
#[derive(Debug, Clone, Copy)]
pub struct TrimmedMean {
    pub beta: f64,
}

impl Combine for TrimmedMean {
    fn name(&self) -> &'static str {
        "trimmed-mean"
    }
    fn combine(&self, updates: Vec<Weights>) -> Result<Weights, AggregateError> {
        let k = updates.len();
        // beta < 0.5 guarantees 2·trim < k, so at least one value survives.
        let trim = ((self.beta * k as f64).floor() as usize).min(k.saturating_sub(1) / 2);
        coordinate_wise(updates, |col| {
            col.sort_unstable_by(f32::total_cmp);
            let kept = &col[trim..k - trim];
            (kept.iter().map(|&v| f64::from(v)).sum::<f64>() / kept.len() as f64) as f32
        })
    }
}
