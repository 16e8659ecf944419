//! The paper's four claims, each judged by the numbers of a reproduction grid — whichever way they fall.
//!
//! Why rules written down in code: a reproduction that decides after the fact what "matches" means can always be
//! made to agree. Each claim here has a fixed test on the cell results, the numbers it used, and a verdict; the
//! thresholds are constants with their reasons, stated again in reproduction.md.

use serde::{Deserialize, Serialize};

use super::{CellResult, Setting};

/// Federated training "matches" centralized when its Fréchet distance is at most this multiple of the
/// centralized one. 1.25: the spread we measured between two seeds of the same centralized cell at the `cpu` preset
/// is of that order, so a tighter bound would judge noise.
pub const FED_MATCH_RATIO: f64 = 1.25;

/// ViT-D "beats" CNN-D only when the geometric mean FD ratio is below this: a 1 % difference between two
/// generators is within seed noise and would otherwise count as a win.
pub const VIT_BETTER_RATIO: f64 = 0.95;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Reproduced,
    /// The direction holds but not by the stated margin (or only for some of the models).
    Partly,
    NotReproduced,
    /// The grid lacks the cells the claim needs.
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::Partly => "partly reproduced",
            Verdict::NotReproduced => "not reproduced",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub id: u8,
    /// The paper's claim, in our words.
    pub statement: String,
    /// The test applied to the numbers.
    pub test: String,
    /// What the numbers said.
    pub evidence: String,
    pub verdict: Verdict,
}

const GANS: [&str; 3] = ["cgan", "wgan-gp", "acgan"];

fn cell<'a>(cells: &'a [CellResult], gan: &str, disc: &str, setting: Setting) -> Option<&'a CellResult> {
    cells.iter().find(|c| c.gan == gan && c.disc == disc && c.setting == setting)
}

fn geo_mean(xs: &[f64]) -> Option<f64> {
    let logs: Vec<f64> = xs.iter().filter(|x| x.is_finite() && **x > 0.0).map(|x| x.ln()).collect();
    (!logs.is_empty() && logs.len() == xs.len()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
}

/// Claim 1: transformer discriminators give more realistic samples than CNN ones (lower FD), over every GAN ×
/// setting pair of the grid.
pub fn vit_discriminator_beats_cnn(cells: &[CellResult]) -> Claim {
    let mut ratios = Vec::new();
    let mut lines = Vec::new();
    for setting in Setting::ALL {
        for gan in GANS {
            if let (Some(v), Some(c)) = (cell(cells, gan, "vit", setting), cell(cells, gan, "cnn", setting)) {
                let r = v.fd / c.fd;
                ratios.push(r);
                lines.push(format!("{gan}/{}: {:.2} vs {:.2}", setting.as_str(), v.fd, c.fd));
            }
        }
    }
    let wins = ratios.iter().filter(|r| **r < 1.0).count();
    let gm = geo_mean(&ratios);
    let verdict = match gm {
        None => Verdict::Inconclusive,
        Some(g) if g < VIT_BETTER_RATIO && wins * 2 > ratios.len() => Verdict::Reproduced,
        Some(g) if g < 1.0 || wins * 2 > ratios.len() => Verdict::Partly,
        Some(_) => Verdict::NotReproduced,
    };
    Claim {
        id: 1,
        statement: "Transformer (ViT) discriminators give more realistic samples than CNN discriminators.".into(),
        test: format!(
            "FD(ViT-D) < FD(CNN-D) in most GAN × setting pairs and the geometric mean of FD(ViT)/FD(CNN) < \
             {VIT_BETTER_RATIO}"
        ),
        evidence: format!(
            "ViT-D lower in {wins} of {} pairs; geometric mean FD ratio ViT/CNN = {}; ViT vs CNN FD: {}",
            ratios.len(),
            gm.map_or("n/a".into(), |g| format!("{g:.3}")),
            lines.join("; ")
        ),
        verdict,
    }
}

/// Claim 2: ACGAN with a ViT discriminator is the best of the six models (centralized cells, by FD and by the
/// augmentation gain).
pub fn acgan_vit_is_best(cells: &[CellResult]) -> Claim {
    let central: Vec<&CellResult> = cells.iter().filter(|c| c.setting == Setting::Centralized).collect();
    let target = central.iter().find(|c| c.gan == "acgan" && c.disc == "vit");
    let (verdict, evidence) = match target {
        Some(t) if central.len() >= 2 => {
            let fd_rank = 1 + central.iter().filter(|c| c.fd < t.fd).count();
            let gain_rank = 1 + central.iter().filter(|c| c.gain_accuracy > t.gain_accuracy).count();
            let mut by_fd: Vec<&&CellResult> = central.iter().collect();
            by_fd.sort_by(|a, b| a.fd.total_cmp(&b.fd));
            let order: Vec<String> = by_fd.iter().map(|c| format!("{}-{} {:.2}", c.gan, c.disc, c.fd)).collect();
            let v = match (fd_rank, gain_rank) {
                (1, 1) => Verdict::Reproduced,
                (1, _) | (_, 1) => Verdict::Partly,
                _ => Verdict::NotReproduced,
            };
            (
                v,
                format!(
                    "ACGAN-ViT ranks {fd_rank} of {n} by FD and {gain_rank} of {n} by accuracy gain; by FD: {}",
                    order.join(", "),
                    n = central.len()
                ),
            )
        }
        _ => (Verdict::Inconclusive, "the grid has no centralized ACGAN-ViT cell or nothing to compare".into()),
    };
    Claim {
        id: 2,
        statement: "ACGAN with a ViT discriminator is the best of the six models.".into(),
        test: "among the centralized cells, ACGAN-ViT has the lowest FD and the largest accuracy gain".into(),
        evidence,
        verdict,
    }
}

/// Claim 3: augmenting the classifier's training set with synthetic images raises its accuracy (≈ +5 points in
/// the paper), judged on the centralized model with the lowest FD.
pub fn augmentation_helps(cells: &[CellResult]) -> Claim {
    let best = cells.iter().filter(|c| c.setting == Setting::Centralized).min_by(|a, b| a.fd.total_cmp(&b.fd));
    let all: Vec<f64> = cells.iter().map(|c| c.gain_accuracy).collect();
    let positive = all.iter().filter(|g| **g > 0.0).count();
    let (verdict, evidence) = match best {
        None => (Verdict::Inconclusive, "no centralized cell".to_string()),
        Some(b) => {
            let v = if b.gain_accuracy > 0.0 && b.gain_accuracy > b.gain_accuracy_std {
                Verdict::Reproduced
            } else if b.gain_accuracy > 0.0 {
                Verdict::Partly
            } else {
                Verdict::NotReproduced
            };
            (
                v,
                format!(
                    "best centralized model by FD ({}-{}): accuracy {:+.1} points (± {:.1} over seeds), macro-F1 \
                     {:+.1} points; gains positive in {positive} of {} cells",
                    b.gan,
                    b.disc,
                    100.0 * b.gain_accuracy,
                    100.0 * b.gain_accuracy_std,
                    100.0 * b.gain_f1,
                    all.len()
                ),
            )
        }
    };
    Claim {
        id: 3,
        statement: "Synthetic images from the GAN raise the ViT classifier's accuracy (paper: about +5 points).".into(),
        test: "accuracy gain of real + synthetic (1×) over real only, for the lowest-FD centralized model, is > 0 and \
               larger than its standard deviation over seeds"
            .into(),
        evidence,
        verdict,
    }
}

/// Claim 4: federated training over non-IID (Dirichlet 0.3) splits matches centralized training.
pub fn federated_matches_centralized(cells: &[CellResult]) -> Claim {
    let mut ratios = Vec::new();
    let mut lines = Vec::new();
    for gan in GANS {
        for disc in ["cnn", "vit"] {
            if let (Some(f), Some(c)) =
                (cell(cells, gan, disc, Setting::FedDirichlet), cell(cells, gan, disc, Setting::Centralized))
            {
                let r = f.fd / c.fd;
                ratios.push(r);
                lines.push(format!("{gan}-{disc} {r:.2}"));
            }
        }
    }
    let within = ratios.iter().filter(|r| **r <= FED_MATCH_RATIO).count();
    let verdict = if ratios.is_empty() {
        Verdict::Inconclusive
    } else if within == ratios.len() {
        Verdict::Reproduced
    } else if within * 2 >= ratios.len() {
        Verdict::Partly
    } else {
        Verdict::NotReproduced
    };
    Claim {
        id: 4,
        statement: "Federated training over non-IID splits matches centralized training.".into(),
        test: format!("FD(federated, Dirichlet α=0.3) ≤ {FED_MATCH_RATIO} × FD(centralized) for every model"),
        evidence: format!(
            "{within} of {} models within the bound; FD ratio federated/centralized: {}",
            ratios.len(),
            lines.join(", ")
        ),
        verdict,
    }
}

/// All four claims, in the paper's order.
pub fn judge(cells: &[CellResult]) -> Vec<Claim> {
    vec![
        vit_discriminator_beats_cnn(cells),
        acgan_vit_is_best(cells),
        augmentation_helps(cells),
        federated_matches_centralized(cells),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(gan: &str, disc: &str, setting: Setting, fd: f64, gain: f64) -> CellResult {
        CellResult {
            gan: gan.into(),
            disc: disc.into(),
            setting,
            fd,
            gain_accuracy: gain,
            gain_accuracy_std: 0.01,
            ..CellResult::blank()
        }
    }

    /// A grid where every paper claim holds: ViT-D beats CNN-D, ACGAN-ViT is best, augmentation helps, federated
    /// is within 1.1× of centralized.
    fn paper_like() -> Vec<CellResult> {
        let mut cells = Vec::new();
        for (gi, gan) in GANS.iter().enumerate() {
            for disc in ["cnn", "vit"] {
                let base = 10.0 - gi as f64 + if disc == "vit" { -2.0 } else { 0.0 };
                let gain = 0.01 * (gi as f64 + 1.0) + if disc == "vit" { 0.02 } else { 0.0 };
                cells.push(cell(gan, disc, Setting::Centralized, base, gain));
                cells.push(cell(gan, disc, Setting::FedIid, base * 1.05, gain));
                cells.push(cell(gan, disc, Setting::FedDirichlet, base * 1.1, gain));
            }
        }
        cells
    }

    #[test]
    fn a_grid_that_agrees_with_the_paper_reproduces_every_claim() {
        let claims = judge(&paper_like());
        assert_eq!(claims.len(), 4);
        for c in &claims {
            assert_eq!(c.verdict, Verdict::Reproduced, "{c:?}");
        }
    }

    #[test]
    fn each_claim_fails_when_its_numbers_disagree() {
        // CNN-D better everywhere.
        let mut cells = paper_like();
        for c in cells.iter_mut().filter(|c| c.disc == "cnn") {
            c.fd /= 10.0;
        }
        assert_eq!(vit_discriminator_beats_cnn(&cells).verdict, Verdict::NotReproduced);
        assert_eq!(acgan_vit_is_best(&cells).verdict, Verdict::Partly, "still the best gain, not the best FD");
        // Augmentation hurts.
        let mut cells = paper_like();
        for c in cells.iter_mut() {
            c.gain_accuracy = -0.02;
        }
        assert_eq!(augmentation_helps(&cells).verdict, Verdict::NotReproduced);
        // Within noise: positive but smaller than its spread.
        for c in cells.iter_mut() {
            c.gain_accuracy = 0.005;
            c.gain_accuracy_std = 0.02;
        }
        assert_eq!(augmentation_helps(&cells).verdict, Verdict::Partly);
        // Federated twice as bad as centralized.
        let mut cells = paper_like();
        for c in cells.iter_mut().filter(|c| c.setting == Setting::FedDirichlet) {
            c.fd *= 2.0;
        }
        let c4 = federated_matches_centralized(&cells);
        assert_eq!(c4.verdict, Verdict::NotReproduced, "{c4:?}");
        assert!(c4.evidence.contains("0 of 6"), "{}", c4.evidence);
        // A grid without the cells a claim needs says so.
        let only_cgan: Vec<CellResult> = paper_like().into_iter().filter(|c| c.gan == "cgan").collect();
        assert_eq!(acgan_vit_is_best(&only_cgan).verdict, Verdict::Inconclusive);
        assert_eq!(judge(&[]).iter().filter(|c| c.verdict == Verdict::Inconclusive).count(), 4);
    }
}
