//! (Multi-)Krum (Blanchard et al. 2017): the update(s) nearest to their K − f − 2 nearest neighbours, robust to f
//! Byzantine sites; O(K²·P) time for the pairwise distances.

use super::aggregate::{weighted_mean, Combine};
use super::api::AggregateError;
use crate::federation::weights::Weights;

/// Krum and Multi-Krum (Blanchard et al. 2017): each update is scored by the sum of squared distances to its
/// `K − f − 2` nearest others; Krum returns the best-scored update, Multi-Krum the unweighted mean of the `m` best.
/// Requires `K ≥ 2f + 3` (the paper's `K > 2f + 2`) and `K ≥ f + m`.
/// As a strategy it is `Collecting<Krum>`.
#[derive(Debug, Clone, Copy)]
pub struct Krum {
    pub byzantine: usize,
    pub multi: usize,
}

impl Krum {
    /// Indices of the `multi` best-scored updates, best first (ties broken by arrival order).
    fn select(&self, updates: &[Weights]) -> Result<Vec<usize>, AggregateError> {
        let k = updates.len();
        let need = (2 * self.byzantine + 3).max(self.byzantine + self.multi);
        if k < need {
            return Err(AggregateError::TooFewForKrum { have: k, need });
        }
        let mut dist = vec![vec![0.0f64; k]; k];
        for i in 0..k {
            for j in i + 1..k {
                let d = updates[i].squared_distance(&updates[j]);
                dist[i][j] = d;
                dist[j][i] = d;
            }
        }
        let closest = k - self.byzantine - 2;
        let mut scored: Vec<(f64, usize)> = (0..k)
            .map(|i| {
                let mut others: Vec<f64> = (0..k).filter(|&j| j != i).map(|j| dist[i][j]).collect();
                others.sort_unstable_by(f64::total_cmp);
                (others[..closest].iter().sum(), i)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        Ok(scored.into_iter().take(self.multi).map(|(_, i)| i).collect())
    }
}

impl Combine for Krum {
    fn name(&self) -> &'static str {
        if self.multi == 1 {
            "krum"
        } else {
            "multi-krum"
        }
    }
    fn combine(&self, updates: Vec<Weights>) -> Result<Weights, AggregateError> {
        let chosen = self.select(&updates)?;
        if let [only] = chosen.as_slice() {
            return updates.into_iter().nth(*only).ok_or(AggregateError::NoUpdates);
        }
        let picked: Vec<(&Weights, u64)> = chosen.iter().map(|&i| (&updates[i], 1)).collect();
        weighted_mean(&picked)
    }
}
