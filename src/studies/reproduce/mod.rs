//! `histofed reproduce`: a pre-registered test of the paper's four claims (arXiv 2504.04130) — every GAN ×
//! discriminator trained centralized over several seeds, the pre-registered model federated on the real runtime
//! (server and site processes over loopback), each generator measured against a real-image floor and a noise null
//! baseline (`assessment`), scored by what it gives a classifier in a low-data regime, and the claims judged by
//! rules fixed in `claims` before any number exists, with bootstrap intervals over seeds (`stats`).
//!
//! Why presets: `quick` proves the pipeline end to end in CI in a few minutes (it asserts nothing about the
//! science), `cpu` is the protocol sized for a 2-core machine in under 30 minutes, `gpu` the same protocol at 64 px
//! with paper-sized models for one GPU. Every GAN run's result is written as soon as it exists and a rerun with the
//! same preset and data keeps finished runs, so an interrupted half hour is not lost.

pub mod ablation;
pub mod claims;
mod job;
mod pool;
pub mod privacy;
pub mod report;
mod run;
mod shared;
pub mod stats;
mod stored;

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use job::{FederatedJob, FederatedRunner, JobNoise, JobPrivacy, RunnerError};
pub use run::{real_only_baseline, run};

use crate::models::{DiscKind, GanKind, ModelConfig};
use crate::records::QualitySummary;

#[derive(Debug, Error)]
pub enum ReproduceError {
    #[error("unknown preset {0:?} (expected quick, cpu or gpu)")]
    UnknownPreset(String),
    #[error("the {0} split is empty")]
    EmptySplit(&'static str),
    #[error("{0}")]
    Model(#[from] crate::models::ModelError),
    #[error("{0}")]
    Data(#[from] crate::data::DataError),
    #[error("training cell {cell}: {message}")]
    Cell { cell: String, message: String },
    #[error("{0}")]
    Reference(String),
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("regime of {wanted} real images per class: class {class} has only {have} training images")]
    Regime { wanted: usize, class: String, have: usize },
    #[error("federated run (seed {seed}): {message}")]
    Federated { seed: u64, message: String },
    /// SIGINT or SIGTERM stopped a federated run: the study stops (what finished is kept for the same command).
    #[error(
        "interrupted (SIGINT or SIGTERM) during a federated run; finished cells are kept, and the same command resumes"
    )]
    Interrupted,
    #[error("the preset is inconsistent: {0}")]
    Preset(String),
}

/// Where a GAN is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    Centralized,
    /// Sites holding a Dirichlet(α = 0.3) non-IID split, trained by the real runtime (one process per site).
    FedDirichlet,
}

impl Setting {
    pub fn as_str(self) -> &'static str {
        match self {
            Setting::Centralized => "centralized",
            Setting::FedDirichlet => "federated (Dirichlet 0.3)",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Setting::Centralized => "central",
            Setting::FedDirichlet => "fed",
        }
    }
}

/// A failure of one cell of the protocol (a run, a model, a variant), named.
pub(super) fn cell_err(cell: &str, e: impl std::fmt::Display) -> ReproduceError {
    ReproduceError::Cell { cell: cell.to_string(), message: e.to_string() }
}

/// The partition of the federated runs (`data::partition` syntax): the paper's non-IID split.
pub const FED_PARTITION: &str = "dirichlet:0.3:min=2";

/// Sizes of one reproduction run. Everything that decides a number is here, so the report can state it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub name: String,
    /// Model preset (`models::ModelConfig::preset`), image size, and the classifier preset.
    pub model: String,
    pub image_size: u32,
    pub classifier: String,
    /// Procedural data: images per class before splitting, classes, difficulty (`data::synth::Difficulty`), and
    /// the validation (real floor) and test fractions.
    pub per_class: usize,
    pub num_classes: usize,
    pub difficulty: String,
    pub val_fraction: f64,
    pub test_fraction: f64,
    /// Real training images per class of each regime, largest first; the GAN grid trains on the first.
    pub regimes: Vec<usize>,
    /// GAN optimisation steps and batch of a centralized run; a federated run sees as many images in total.
    pub gan_steps: u32,
    pub batch_size: u32,
    pub gan_seeds: u32,
    pub rounds: u32,
    pub sites: u32,
    /// Synthetic images per class the quality metrics draw (the real floor takes as many from validation).
    pub eval_per_class: usize,
    pub reference_steps: u32,
    /// The reference classifier sees each image standardised per channel (`eval::reference::ReferenceOptions::
    /// standardise_input`), so agreement and coverage judge structure, not mean colour. The presets keep `false`,
    /// the classifier they were pre-registered with; `--reference-standardise` reruns a preset with it (another
    /// result key: absent from the key when false, so stored results of the presets stay valid).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reference_standardise: bool,
    /// The reference classifier learns from its own procedural draw of this many images per class
    /// (`data::synthetic_reference_set`, given as [`ReproduceOptions::reference_train`]) instead of the training
    /// split; 0 = the training split, as the presets were first registered (absent from the key then). Why: a judge
    /// taught by the 100 images per class the generators see named 74 % of real validation images right (the real
    /// floor), below the 0.8 agreement it was to test (docs/reproduction-cpu.md, "The judge").
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reference_per_class: usize,
    /// Steps and seeds of every classifier (real only, mixed, filtered, and the accuracy score on synthetic only).
    pub classifier_steps: u32,
    pub classifier_seeds: u32,
    /// Which GANs and discriminators (the full grid unless narrowed).
    pub gans: Vec<String>,
    pub discs: Vec<String>,
    /// The federated model (claim 4), fixed before the run.
    pub fed_gan: String,
    pub fed_disc: String,
    /// Worker threads training in parallel (one torch thread each).
    pub workers: usize,
    /// Bootstrap resamples of every interval.
    pub resamples: usize,
}

impl Preset {
    pub fn named(name: &str) -> Result<Preset, ReproduceError> {
        let all_gans = vec!["cgan".to_string(), "wgan-gp".into(), "acgan".into()];
        let all_discs = vec!["cnn".to_string(), "vit".into()];
        let p = match name {
            "quick" => Preset {
                name: name.into(),
                model: "tiny".into(),
                image_size: 32,
                classifier: "tiny".into(),
                per_class: 40,
                num_classes: 4,
                difficulty: "hard".into(),
                val_fraction: 0.15,
                test_fraction: 0.35,
                regimes: vec![20, 8],
                gan_steps: 12,
                batch_size: 16,
                gan_seeds: 2,
                rounds: 2,
                sites: 3,
                eval_per_class: 6,
                reference_steps: 40,
                reference_standardise: true,
                reference_per_class: 20,
                classifier_steps: 20,
                classifier_seeds: 2,
                gans: all_gans,
                discs: all_discs,
                fed_gan: "cgan".into(),
                fed_disc: "cnn".into(),
                workers: 2,
                resamples: 2000,
            },
            "cpu" => Preset {
                name: name.into(),
                model: "tiny".into(),
                image_size: 32,
                classifier: "tiny".into(),
                per_class: 200,
                num_classes: 9,
                difficulty: "hard".into(),
                val_fraction: 0.15,
                test_fraction: 0.35,
                regimes: vec![100, 25],
                gan_steps: 1000,
                batch_size: 32,
                gan_seeds: 3,
                rounds: 5,
                sites: 3,
                eval_per_class: 30,
                reference_steps: 10_000,
                reference_standardise: true,
                reference_per_class: 1000,
                classifier_steps: 2500,
                classifier_seeds: 3,
                gans: all_gans,
                discs: all_discs,
                fed_gan: "cgan".into(),
                fed_disc: "cnn".into(),
                workers: 2,
                resamples: 10_000,
            },
            "gpu" => Preset {
                name: name.into(),
                model: "paper".into(),
                image_size: 64,
                classifier: "tiny".into(),
                per_class: 400,
                num_classes: 9,
                difficulty: "hard".into(),
                val_fraction: 0.15,
                test_fraction: 0.35,
                regimes: vec![200, 25],
                gan_steps: 1500,
                batch_size: 64,
                gan_seeds: 3,
                rounds: 10,
                sites: 3,
                eval_per_class: 60,
                reference_steps: 10_000,
                reference_standardise: true,
                reference_per_class: 1000,
                classifier_steps: 600,
                classifier_seeds: 3,
                gans: all_gans,
                discs: all_discs,
                fed_gan: "cgan".into(),
                fed_disc: "cnn".into(),
                workers: 4,
                resamples: 10_000,
            },
            other => return Err(ReproduceError::UnknownPreset(other.into())),
        };
        Ok(p)
    }

    /// The resolved model configuration of one GAN × discriminator of this preset at its image size.
    pub fn model_config(&self, gan: &str, disc: &str, classes: usize) -> Result<ModelConfig, ReproduceError> {
        let g: GanKind = gan.parse().map_err(|e| cell_err(gan, e))?;
        let d: DiscKind = disc.parse().map_err(|e| cell_err(disc, e))?;
        let mut m = ModelConfig::preset(&self.model, g, d, classes as i64)?;
        m.image_size = i64::from(self.image_size);
        Ok(m)
    }

    /// Local steps per round at each site of a federated run: the same images seen in total as centralized.
    pub fn local_steps(&self) -> u32 {
        (self.gan_steps / (self.rounds.max(1) * self.sites.max(1))).max(1)
    }

    /// The low-data regime (the last, smallest one): where claim 3 is judged.
    pub fn low_regime(&self) -> usize {
        self.regimes.last().copied().unwrap_or(0)
    }

    pub fn full_regime(&self) -> usize {
        self.regimes.first().copied().unwrap_or(0)
    }

    pub fn check(&self) -> Result<(), ReproduceError> {
        if self.regimes.is_empty() || self.regimes.contains(&0) {
            return Err(ReproduceError::Preset("at least one regime, each of at least 1 image per class".into()));
        }
        if self.regimes.windows(2).any(|w| w[0] < w[1]) {
            return Err(ReproduceError::Preset("regimes must be listed largest first".into()));
        }
        if self.gan_seeds == 0 || self.classifier_seeds == 0 {
            return Err(ReproduceError::Preset("at least one GAN seed and one classifier seed".into()));
        }
        if self.gans.is_empty() || self.discs.is_empty() {
            return Err(ReproduceError::Preset("at least one GAN and one discriminator".into()));
        }
        Ok(())
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl FromStr for Preset {
    type Err = ReproduceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::named(s.trim())
    }
}

/// One trained generator, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanRun {
    pub gan: String,
    pub disc: String,
    pub setting: Setting,
    /// Real training images per class it learned from.
    pub regime: usize,
    pub seed: u64,
    /// The quality suite against the real test split (KID, FD, both feature spaces, agreement, coverage, …).
    pub quality: QualitySummary,
    /// Classification accuracy score: a classifier trained on this generator's images only, tested on real ones.
    pub cas: f64,
    pub train_secs: f64,
    pub eval_secs: f64,
    /// Its sample grid, relative to the run directory.
    pub grid: Option<String>,
}

impl GanRun {
    pub fn model(&self) -> String {
        format!("{}-{}", self.gan, self.disc)
    }

    pub fn name(&self) -> String {
        run_name(&self.gan, &self.disc, self.setting, self.regime, self.seed)
    }

    /// KID in the reference space (NaN when it could not be measured).
    pub fn kid(&self) -> f64 {
        self.quality.kid.unwrap_or(f64::NAN)
    }
}

pub fn run_name(gan: &str, disc: &str, setting: Setting, regime: usize, seed: u64) -> String {
    format!("{gan}-{disc}-{}-{regime}pc-s{seed}", setting.tag())
}

/// The classifier's training sets compared in claim 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// Real images only (with the classic flips and 90° rotations, as every arm).
    RealOnly,
    /// Real + as many synthetic images per class (1:1).
    Mixed,
    /// Real + synthetic 1:1 where the synthetic images are those the same-seed real-only classifier assigns to the
    /// class they were conditioned on.
    Filtered,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::RealOnly => "real only",
            Arm::Mixed => "real + synthetic 1:1",
            Arm::Filtered => "real + filtered synthetic 1:1",
        }
    }
}

/// One classifier, trained and tested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmResult {
    pub regime: usize,
    pub arm: Arm,
    /// The generator's seed (None for real only).
    pub gan_seed: Option<u64>,
    pub classifier_seed: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Filtered arm: share of the drawn synthetic images the filter kept.
    pub kept_share: Option<f64>,
}

/// A product target the issue sets, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub what: String,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

/// Everything a reproduction produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reproduction {
    pub preset: Preset,
    pub data: String,
    pub commit: String,
    pub started: String,
    /// Wall time of this invocation …
    pub total_secs: f64,
    /// … which kept this many results (GAN runs; the classifier arms count as one) of an earlier invocation: their
    /// time is in the tables (train s), not in `total_secs`.
    #[serde(default)]
    pub kept_results: usize,
    /// Wall seconds of each phase of this invocation, in order (absent from records written before they were kept).
    #[serde(default)]
    pub phases: Vec<PhaseTime>,
    pub reference_test_accuracy: f64,
    /// Real validation images measured as a generator (the floor) and colour-matched noise (the null).
    pub floor: QualitySummary,
    pub noise: QualitySummary,
    /// The model claim 3 uses, chosen by the pre-registered rule (lowest mean KID, centralized, full regime).
    pub best_model: String,
    pub runs: Vec<GanRun>,
    pub arms: Vec<ArmResult>,
    pub claims: Vec<claims::Claim>,
    pub targets: Vec<Target>,
}

/// One phase of an invocation and its wall time: where a reproduction's minutes go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: String,
    pub secs: f64,
}

/// What `run` needs besides the preset.
#[derive(Debug, Clone)]
pub struct ReproduceOptions {
    pub preset: Preset,
    pub out_dir: PathBuf,
    /// Where the reference classifier is cached.
    pub reference_cache: PathBuf,
    pub device: tch::Device,
    pub seed: u64,
    /// Description of the data for the report.
    pub data_label: String,
    /// Commit the binary was built from (for the record).
    pub commit: String,
    /// The reference classifier's own training set when `preset.reference_per_class` > 0: made by the caller,
    /// which knows the data source (`data::synthetic_reference_set`).
    pub reference_train: Option<std::sync::Arc<crate::data::Dataset>>,
}
