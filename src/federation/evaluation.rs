//! Federated evaluation's records and their fold: what one site measured on a round's global generator (its own
//! validation split, never sent anywhere), the check the server runs on what a peer sends, and the sample-weighted
//! combination that lands in the run report.
//!
//! Why in `federation`: like a strategy's aggregate, this is pure arithmetic over what sites report — no tensors, no
//! actors, no sockets. The scorer that produces a [`SiteEval`] (`federated_eval::LocalEvaluator`) lives with the
//! other evaluators.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One class at one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: usize,
    /// Validation images of this class (= images generated for it).
    pub count: u64,
    /// None when the class has fewer than 2 images here.
    pub frechet_distance: Option<f64>,
}

/// What one site measured on the global generator of one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteEval {
    pub round: u64,
    /// Images in the site's validation split (the weight of its numbers).
    pub val_samples: u64,
    pub frechet_distance: f64,
    /// None when the split is too small for k-NN manifolds (k = `federated_eval::PR_K`).
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub per_class: Vec<ClassScore>,
    pub secs: f64,
}

impl SiteEval {
    /// Checks what a peer sent before it is folded: finite values in range, classes in range, counts that add up.
    pub fn check(&self, round: u64, num_classes: usize) -> Result<(), String> {
        if self.round != round {
            return Err(format!("scores round {} under round {round}", self.round));
        }
        if self.val_samples == 0 {
            return Err("scores 0 validation images".into());
        }
        if !self.frechet_distance.is_finite() || self.frechet_distance < 0.0 {
            return Err(format!("Fréchet distance {} is not a finite non-negative number", self.frechet_distance));
        }
        for (what, v) in [("precision", self.precision), ("recall", self.recall)] {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(format!("{what} {v} is outside [0, 1]"));
            }
        }
        let mut total = 0u64;
        for c in &self.per_class {
            if c.class >= num_classes {
                return Err(format!("class {} is outside 0..{num_classes}", c.class));
            }
            if let Some(fd) = c.frechet_distance.filter(|fd| !fd.is_finite() || *fd < 0.0) {
                return Err(format!("class {} has Fréchet distance {fd}", c.class));
            }
            total = total.saturating_add(c.count);
        }
        if total != self.val_samples {
            return Err(format!("per-class counts add up to {total}, not {}", self.val_samples));
        }
        Ok(())
    }
}

/// One site's line in the combined result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteLine {
    pub site_id: u32,
    pub val_samples: u64,
    pub frechet_distance: f64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub secs: f64,
}

/// The server's combination of the sites' scores for one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederatedEval {
    pub round: u64,
    /// Validation images behind the combined numbers (sum over the sites that answered).
    pub val_samples: u64,
    /// Sample-weighted mean of the sites' Fréchet distances.
    pub frechet_distance: f64,
    /// Sample-weighted means over the sites that could compute them.
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Per class: the count-weighted mean of the sites' per-class FDs (None: no site had 2 images of it).
    pub per_class_fd: Vec<Option<f64>>,
    pub sites: Vec<SiteLine>,
    /// Sites that answered with an error: (site, reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<(u32, String)>,
    /// Sites asked that never answered (lost, or the run's wait ran out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<u32>,
}

/// Folds the sites' answers for `round`. `None` when no site produced a score (all failed or missing).
pub fn aggregate(
    round: u64,
    num_classes: usize,
    answers: &BTreeMap<u32, Result<SiteEval, String>>,
    missing: Vec<u32>,
) -> Option<FederatedEval> {
    let mut failed = Vec::new();
    let mut ok: Vec<(u32, &SiteEval)> = Vec::new();
    for (&site, answer) in answers {
        match answer {
            Ok(e) => ok.push((site, e)),
            Err(why) => failed.push((site, why.clone())),
        }
    }
    let total: u64 = ok.iter().map(|(_, e)| e.val_samples).sum();
    if total == 0 {
        return None;
    }
    let weighted = |pick: &dyn Fn(&SiteEval) -> Option<f64>| -> Option<f64> {
        let (mut sum, mut weight) = (0.0, 0.0);
        for (_, e) in &ok {
            if let Some(v) = pick(e) {
                sum += v * e.val_samples as f64;
                weight += e.val_samples as f64;
            }
        }
        (weight > 0.0).then(|| sum / weight)
    };
    let frechet_distance = weighted(&|e| Some(e.frechet_distance)).unwrap_or(f64::NAN);
    let precision = weighted(&|e| e.precision);
    let recall = weighted(&|e| e.recall);
    let mut per_class = vec![(0.0f64, 0.0f64); num_classes];
    for (_, e) in &ok {
        for c in &e.per_class {
            if let (Some(fd), Some(slot)) = (c.frechet_distance, per_class.get_mut(c.class)) {
                slot.0 += fd * c.count as f64;
                slot.1 += c.count as f64;
            }
        }
    }
    let per_class_fd = per_class.iter().map(|&(s, w)| (w > 0.0).then(|| s / w)).collect();
    let sites = ok
        .iter()
        .map(|(site, e)| SiteLine {
            site_id: *site,
            val_samples: e.val_samples,
            frechet_distance: e.frechet_distance,
            precision: e.precision,
            recall: e.recall,
            secs: e.secs,
        })
        .collect();
    Some(FederatedEval {
        round,
        val_samples: total,
        frechet_distance,
        precision,
        recall,
        per_class_fd,
        sites,
        failed,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(round: u64, n: u64, fd: f64, p: Option<f64>, classes: &[(usize, u64, Option<f64>)]) -> SiteEval {
        SiteEval {
            round,
            val_samples: n,
            frechet_distance: fd,
            precision: p,
            recall: p.map(|p| 1.0 - p),
            per_class: classes
                .iter()
                .map(|&(class, count, frechet_distance)| ClassScore { class, count, frechet_distance })
                .collect(),
            secs: 0.1,
        }
    }

    #[test]
    fn aggregation_weights_sites_by_samples_and_classes_by_counts() {
        let mut answers = BTreeMap::new();
        answers.insert(0, Ok(eval(4, 30, 2.0, Some(0.5), &[(0, 10, Some(1.0)), (1, 20, Some(3.0))])));
        answers.insert(1, Ok(eval(4, 10, 6.0, None, &[(1, 10, Some(7.0))])));
        answers.insert(2, Err("too few images".to_string()));
        let f = aggregate(4, 3, &answers, vec![5]).unwrap();
        assert_eq!(f.val_samples, 40);
        assert!((f.frechet_distance - (2.0 * 30.0 + 6.0 * 10.0) / 40.0).abs() < 1e-12);
        // Only site 0 had precision: its value, not diluted by site 1's samples.
        assert_eq!(f.precision, Some(0.5));
        assert_eq!(f.per_class_fd[0], Some(1.0));
        assert!((f.per_class_fd[1].unwrap() - (3.0 * 20.0 + 7.0 * 10.0) / 30.0).abs() < 1e-12);
        assert_eq!(f.per_class_fd[2], None);
        assert_eq!(f.failed, vec![(2, "too few images".to_string())]);
        assert_eq!(f.missing, vec![5]);
        assert_eq!(f.sites.iter().map(|s| s.site_id).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn no_score_means_no_result() {
        let mut answers = BTreeMap::new();
        answers.insert(0, Err::<SiteEval, _>("failed".to_string()));
        assert!(aggregate(1, 2, &answers, vec![1]).is_none());
        assert!(aggregate(1, 2, &BTreeMap::new(), vec![]).is_none());
    }

    #[test]
    fn a_peer_score_is_checked_before_it_is_folded() {
        let good = eval(2, 5, 1.0, Some(0.4), &[(0, 2, Some(1.0)), (1, 3, None)]);
        assert!(good.check(2, 2).is_ok());
        assert!(good.check(3, 2).unwrap_err().contains("round 2 under round 3"));
        assert!(good.check(2, 1).unwrap_err().contains("class 1 is outside 0..1"));
        let mut bad = good.clone();
        bad.frechet_distance = f64::NAN;
        assert!(bad.check(2, 2).unwrap_err().contains("not a finite"));
        let mut bad = good.clone();
        bad.precision = Some(1.5);
        assert!(bad.check(2, 2).unwrap_err().contains("precision 1.5"));
        let mut bad = good.clone();
        bad.val_samples = 9;
        assert!(bad.check(2, 2).unwrap_err().contains("add up to 5, not 9"));
        let mut bad = good;
        bad.per_class[0].frechet_distance = Some(-1.0);
        assert!(bad.check(2, 2).unwrap_err().contains("class 0 has Fréchet distance -1"));
    }
}
