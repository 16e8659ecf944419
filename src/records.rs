//! The run's records: what happened in each round and to the federation, as the server keeps them and
//! `report.json` stores them. Plain serde data at the bottom of the house, so that every layer that produces or reads
//! a number (trainers, evaluators, the actors, the metrics endpoint, the report writers, the studies) can name it
//! without importing the layer that made it.
//!
//! Writing and rendering (`RunReport::write`, `read`, `to_markdown`) live in the `report` module, beside the HTML page
//! and the plots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::federation::evaluation::FederatedEval;

/// Mean losses over a site's local steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct LossSummary {
    pub d_loss: f64,
    pub g_loss: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteRound {
    pub site_id: u32,
    pub num_samples: u64,
    pub losses: LossSummary,
    pub steps: u32,
    pub train_secs: f64,
    pub trainer_restarts: u32,
    pub batch_size: u32,
    pub oom_retries: u32,
    /// Local step the site resumed this round from after a restart (0 = from the round's start).
    #[serde(default)]
    pub resumed_from_step: u32,
    /// The update was trained before a restart and re-sent from the site's disk.
    #[serde(default)]
    pub from_local_checkpoint: bool,
}

/// Something that happened to the federation (a site lost or back, a round retried, a resume).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// Seconds since the server process started.
    pub at_secs: f64,
    /// Wall-clock time of the event (milliseconds since the Unix epoch), to line it up with outside actions.
    pub at_unix_ms: u64,
    pub round: u64,
    pub site: Option<u32>,
    pub kind: String,
    pub detail: String,
}

/// The headline numbers of a [`QualityReport`], for round records, metrics and tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualitySummary {
    /// Overall Fréchet distance, real test split vs synthetic, in the reference feature space.
    pub fd: f64,
    pub precision: f64,
    pub recall: f64,
    /// Share of synthetic samples suspiciously close to a training image (feature space).
    pub memorized_share: f64,
    /// Same in (pooled) pixel space, when measured.
    pub memorized_share_pixels: Option<f64>,
    pub class_coverage: f64,
    pub label_agreement: f64,
    /// Mean over classes of synthetic / real within-class diversity (reference features).
    pub diversity_ratio: f64,
    /// The same ratio in the layout view (pooled pixels, centred and contrast-normalised per image): ≪ 1 when the
    /// samples of a class repeat one arrangement, which the feature ratio does not see (absent before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout_diversity_ratio: Option<f64>,
    /// The lowest class's diversity ratio in the texture view, the Fourier amplitudes of the layout images (class,
    /// ratio): ≪ 1 when that class repeats one motif, even at shifted places (absent before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub texture_diversity_min: Option<(String, f64)>,
    /// KID (mean over subsets), real test split vs synthetic, in the same feature space, and its spread over subsets.
    #[serde(default)]
    pub kid: Option<f64>,
    #[serde(default)]
    pub kid_std: Option<f64>,
    /// KID and FD in the second feature space: a fixed randomly initialised CNN (no training, no class cues).
    #[serde(default)]
    pub kid_random_cnn: Option<f64>,
    #[serde(default)]
    pub kid_random_cnn_std: Option<f64>,
    #[serde(default)]
    pub fd_random_cnn: Option<f64>,
    /// Border artefacts: the largest synthetic / real ratio of outer-ring to interior fine detail over the classes
    /// (≈ 1 like the data; well above 1: the generator draws at its borders), and that class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_excess: Option<(String, f64)>,
    /// Label agreement of each requested class (class name, share): which class a low agreement comes from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_agreement: Vec<(String, f64)>,
}

impl QualitySummary {
    /// `1.49 / 0.90; 0.41 (ADI)`: the diversity ratio in features / in layout, then the lowest class's in texture
    /// (each part left out when not measured).
    pub fn diversity_text(&self) -> String {
        let mut s = match self.layout_diversity_ratio {
            Some(l) => format!("{:.2} / {l:.2}", self.diversity_ratio),
            None => format!("{:.2}", self.diversity_ratio),
        };
        if let Some((class, t)) = &self.texture_diversity_min {
            s.push_str(&format!("; {t:.2} ({class})"));
        }
        s
    }

    /// `3.97 (BACK)`: the worst class's border excess (`–` when not measured).
    pub fn edge_text(&self) -> String {
        match &self.edge_excess {
            Some((class, e)) => format!("{e:.2} ({class})"),
            None => "–".into(),
        }
    }

    /// `ADI 1.00 · BACK 0.34 · …` (empty when not measured).
    pub fn class_agreement_text(&self) -> String {
        self.class_agreement.iter().map(|(c, a)| format!("{c} {a:.2}")).collect::<Vec<_>>().join(" · ")
    }
}

/// The full quality suite of a round, as the round report keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundQuality {
    pub summary: QualitySummary,
    /// Test accuracy of the reference classifier whose feature space the numbers are in.
    pub reference_test_accuracy: f64,
    /// The full report (`quality.json`) and the pictures, relative to the run directory.
    pub report_json: String,
    pub pictures: Vec<String>,
    pub secs: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    /// Attempts this round took (1 = first try reached quorum).
    pub attempts: u32,
    pub participants: Vec<u32>,
    pub contributors: Vec<SiteRound>,
    /// Sites asked but lost or out before answering.
    pub dropped: Vec<u32>,
    /// Rejected updates: (site, reason).
    pub rejected: Vec<(u32, String)>,
    pub mean_losses: LossSummary,
    pub frechet_distance: Option<f64>,
    pub samples_png: Option<String>,
    /// The evaluator's full quality suite, on rounds where it ran (`evaluation.eval_every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<RoundQuality>,
    pub checkpoint: String,
    /// Distance of the new global weights from the previous ones.
    pub global_step_norm: f64,
    pub wall_secs: f64,
    pub aggregate_secs: f64,
    /// When the round became durable (its checkpoint written), milliseconds since the Unix epoch.
    #[serde(default)]
    pub completed_unix_ms: u64,
    /// What the extension roles (`crate::roles`) reported about this round, by role name. Reports arrive after the
    /// round is written, so the report is rewritten when one comes in.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleOutcome>,
    /// Federated evaluation of this round's global generator: the sites' scores on their validation splits,
    /// sample-weighted (`evaluation.at_sites`). Arrives after the round is written, like the roles' reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_eval: Option<FederatedEval>,
    /// Differential privacy: what this round released and the run's ε after it (absent without DP). The records
    /// are the privacy ledger: a resumed server recomputes ε from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<RoundPrivacy>,
    /// Secure aggregation: whose masked inputs the sum holds and whose masks had to be rebuilt (absent when the
    /// round was aggregated in the clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<RoundSecure>,
}

/// How a round's secure aggregation ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundSecure {
    /// The sites whose masked inputs are in the sum (the server saw only their sum).
    pub survivors: Vec<u32>,
    /// Sites that shared their secrets but sent no masked input: their pairwise masks were rebuilt and removed.
    pub dropped: Vec<u32>,
    /// (holder, owner): revealed shares that failed their owner's check and were left out.
    pub bad_shares: Vec<(u32, u32)>,
    /// Neighbours per site and shares needed to rebuild a secret.
    pub neighbours: usize,
    pub threshold: usize,
}

/// One round's entry in the privacy ledger: the Gaussian mechanism with `noise_multiplier` on the mean of `updates`
/// updates clipped to `clip_norm` (`clipped` of them were longer), and ε at `delta` of all rounds up to this one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundPrivacy {
    /// z, what the accountant charged for the round.
    pub noise_multiplier: f64,
    pub clip_norm: f64,
    pub updates: usize,
    /// Updates the server had to clip (with clipping at the sites: sites that did not clip).
    pub clipped: usize,
    pub delta: f64,
    pub epsilon: f64,
    /// Adaptive clipping: the multiplier of the noise on the updates (z_Δ > z; the count's noise takes the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_noise_multiplier: Option<f64>,
    /// Adaptive clipping: the noisy share of the round's updates that fitted in `clip_norm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted_share: Option<f64>,
    /// Adaptive clipping: the clip norm of the next round (a restarted server resumes it from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_clip_norm: Option<f64>,
    /// Noise added by the sites under secure aggregation: the round is charged as the Skellam mechanism with these
    /// numbers (code units) instead of the Gaussian at `noise_multiplier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skellam: Option<SkellamCharge>,
}

/// One round's Skellam mechanism (`federation::privacy::rdp_skellam`), in quantization code units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SkellamCharge {
    /// Δ₁ and Δ₂: how far one site's update can move the integer sum.
    pub l1_sensitivity: f64,
    pub l2_sensitivity: f64,
    /// The variance of the noise the round's sum carried (every contributor's share together).
    pub variance: f64,
    /// The sites whose noise is in it.
    pub contributors: usize,
}

impl RoundPrivacy {
    /// The Skellam numbers as `(Δ₁, Δ₂, variance)`, when the sites added the noise.
    pub fn skellam_parts(&self) -> Option<(f64, f64, f64)> {
        self.skellam.map(|s| (s.l1_sensitivity, s.l2_sensitivity, s.variance))
    }
}

/// One role's report about one round: named numbers, and files it produced (paths as the role names them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleOutcome {
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub run: String,
    pub config_hash: String,
    pub model: String,
    pub strategy: String,
    pub partition: String,
    /// Per site: class histogram of its shard, as the site reported it at join.
    pub site_classes: BTreeMap<u32, Vec<u64>>,
    pub classes: Vec<String>,
    pub rounds_configured: u64,
    pub resumed_from_round: Option<u64>,
    pub rounds: Vec<RoundRecord>,
    pub events: Vec<RunEvent>,
    pub finished: bool,
    pub total_secs: f64,
}
