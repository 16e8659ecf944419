//! Coordinate-wise robust rules: FedMedian and the trimmed mean, both an order statistic of the K values at every
//! coordinate (all updates kept: O(K·P) memory), unweighted so that a site's sample count cannot buy it influence.

use super::aggregate::{coordinate_wise, Collected};
use super::api::{AggregateError, Strategy};
use crate::federation::weights::Weights;

/// Coordinate-wise median (Yin et al. 2018), unweighted: a site's sample count cannot buy it influence. For an even
/// number of updates, the mean of the two middle values.
#[derive(Debug, Default)]
pub struct FedMedian {
    collected: Collected,
}

impl Strategy for FedMedian {
    fn name(&self) -> &'static str {
        "fedmedian"
    }
    fn begin_round(&mut self, global: &Weights) {
        self.collected.begin(global);
    }
    fn accumulate(&mut self, update: Weights, _num_samples: u64) -> Result<(), AggregateError> {
        self.collected.push(update)
    }
    fn count(&self) -> usize {
        self.collected.len()
    }
    fn finish(&mut self) -> Result<Weights, AggregateError> {
        let updates = self.collected.take()?;
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

/// Coordinate-wise trimmed mean (Yin et al. 2018), unweighted: at every coordinate the `floor(beta·K)` largest and
/// smallest values are dropped and the rest averaged.
#[derive(Debug)]
pub struct TrimmedMean {
    beta: f64,
    collected: Collected,
}

impl TrimmedMean {
    pub(super) fn new(beta: f64) -> Self {
        TrimmedMean { beta, collected: Collected::default() }
    }
}

impl Strategy for TrimmedMean {
    fn name(&self) -> &'static str {
        "trimmed-mean"
    }
    fn begin_round(&mut self, global: &Weights) {
        self.collected.begin(global);
    }
    fn accumulate(&mut self, update: Weights, _num_samples: u64) -> Result<(), AggregateError> {
        self.collected.push(update)
    }
    fn count(&self) -> usize {
        self.collected.len()
    }
    fn finish(&mut self) -> Result<Weights, AggregateError> {
        let updates = self.collected.take()?;
        let k = updates.len();
        // beta < 0.5 guarantees 2·trim < k, so at least one value survives.
        let trim = ((self.beta * k as f64).floor() as usize).min((k - 1) / 2);
        coordinate_wise(updates, |col| {
            col.sort_unstable_by(f32::total_cmp);
            let kept = &col[trim..k - trim];
            (kept.iter().map(|&v| f64::from(v)).sum::<f64>() / kept.len() as f64) as f32
        })
    }
}
