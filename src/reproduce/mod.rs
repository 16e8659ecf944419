//! `histofed reproduce`: the paper's experiment grid in one command — {CGAN, WGAN-GP, ACGAN} × {CNN-D, ViT-D} ×
//! {centralized, federated IID, federated Dirichlet α=0.3} — each cell trained, measured with the quality metrics
//! in the reference classifier's feature space (`quality`), and scored by the augmentation gain it gives the ViT
//! classifier; then the paper's four claims judged by those numbers (`claims`) and written out as reproduction.md,
//! reproduction.json and plots (`report`).
//!
//! Why presets: `quick` proves the pipeline end to end in CI in a few minutes (it asserts nothing about the science),
//! `cpu` is sized for a 2-core machine in about an hour, `paper` for a GPU. Every cell's result is written as soon as
//! it exists and a rerun with the same preset and data skips finished cells, so an interrupted hour is not lost.

pub mod ablation;
pub mod claims;
pub mod report;
mod run;

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use run::run;

use crate::quality::QualityReport;

#[derive(Debug, Error)]
pub enum ReproduceError {
    #[error("unknown preset {0:?} (expected quick, cpu or paper)")]
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
}

/// Where a cell's GAN is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    Centralized,
    FedIid,
    FedDirichlet,
}

impl Setting {
    pub const ALL: [Setting; 3] = [Setting::Centralized, Setting::FedIid, Setting::FedDirichlet];

    pub fn as_str(self) -> &'static str {
        match self {
            Setting::Centralized => "centralized",
            Setting::FedIid => "fed-iid",
            Setting::FedDirichlet => "fed-dirichlet-0.3",
        }
    }

    /// The partition spec of a federated setting (`data::partition` syntax).
    pub fn partition(self) -> Option<&'static str> {
        match self {
            Setting::Centralized => None,
            Setting::FedIid => Some("iid"),
            Setting::FedDirichlet => Some("dirichlet:0.3:min=2"),
        }
    }
}

/// Sizes of one reproduction run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub name: String,
    /// Model preset (`models::ModelConfig::preset`) and the classifier preset.
    pub model: String,
    pub classifier: String,
    /// Procedural data (when no --data is given): images per class and classes.
    pub per_class: usize,
    pub num_classes: usize,
    /// GAN optimisation steps of a centralized cell. A federated cell runs `rounds` rounds of
    /// `steps / (rounds × sites)` local steps at each site: the same number of passes over the data in total.
    pub gan_steps: u32,
    pub rounds: u32,
    pub sites: u32,
    pub batch_size: u32,
    /// Synthetic images per class the quality metrics compare with the real test split.
    pub eval_per_class: usize,
    /// Reference classifier training steps.
    pub reference_steps: u32,
    /// Classifier steps and seeds of the augmentation gain (real vs real + synthetic at `ratio`).
    pub classifier_steps: u32,
    pub seeds: u32,
    pub ratio: f64,
    /// Which GANs and discriminators (the full grid unless narrowed for a smoke run).
    pub gans: Vec<String>,
    pub discs: Vec<String>,
}

impl Preset {
    pub fn named(name: &str) -> Result<Preset, ReproduceError> {
        let all_gans = vec!["cgan".to_string(), "wgan-gp".into(), "acgan".into()];
        let all_discs = vec!["cnn".to_string(), "vit".into()];
        let p = match name {
            "quick" => Preset {
                name: name.into(),
                model: "tiny".into(),
                classifier: "tiny".into(),
                per_class: 24,
                num_classes: 4,
                gan_steps: 12,
                rounds: 2,
                sites: 3,
                batch_size: 16,
                eval_per_class: 12,
                reference_steps: 40,
                classifier_steps: 20,
                seeds: 1,
                ratio: 1.0,
                gans: all_gans,
                discs: all_discs,
            },
            "cpu" => Preset {
                name: name.into(),
                model: "tiny".into(),
                classifier: "tiny".into(),
                per_class: 100,
                num_classes: 4,
                gan_steps: 1200,
                rounds: 12,
                sites: 3,
                batch_size: 32,
                eval_per_class: 50,
                reference_steps: 400,
                classifier_steps: 200,
                seeds: 3,
                ratio: 1.0,
                gans: all_gans,
                discs: all_discs,
            },
            "paper" => Preset {
                name: name.into(),
                model: "paper".into(),
                classifier: "vit-b16".into(),
                per_class: 1000,
                num_classes: 9,
                gan_steps: 20_000,
                rounds: 50,
                sites: 4,
                batch_size: 64,
                eval_per_class: 500,
                reference_steps: 20_000,
                classifier_steps: 10_000,
                seeds: 3,
                ratio: 1.0,
                gans: all_gans,
                discs: all_discs,
            },
            other => return Err(ReproduceError::UnknownPreset(other.into())),
        };
        Ok(p)
    }

    /// Local steps per round at each site of a federated cell (at least 1).
    pub fn local_steps(&self) -> u32 {
        (self.gan_steps / (self.rounds.max(1) * self.sites.max(1))).max(1)
    }
}

impl FromStr for Preset {
    type Err = ReproduceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::named(s.trim())
    }
}

/// One cell of the grid, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub gan: String,
    pub disc: String,
    pub setting: Setting,
    /// Fréchet distance, real test split vs synthetic, in the reference classifier's feature space.
    pub fd: f64,
    pub precision: f64,
    pub recall: f64,
    /// Share of synthetic images suspiciously close to a training image (feature space).
    pub memorized_share: f64,
    /// Share of classes the reference classifier finds among the synthetic images (mode collapse check).
    pub class_coverage: f64,
    /// Share of synthetic images the reference classifier assigns to the class they were conditioned on.
    pub label_agreement: f64,
    /// Mean over classes of synthetic / real within-class feature diversity (≪ 1: collapse).
    pub diversity_ratio: f64,
    /// Test accuracy and macro-F1 with real + synthetic training data (mean over seeds) and the gain over real only.
    pub accuracy: f64,
    pub macro_f1: f64,
    pub gain_accuracy: f64,
    pub gain_accuracy_std: f64,
    pub gain_f1: f64,
    pub final_d_loss: f64,
    pub final_g_loss: f64,
    pub train_secs: f64,
    pub eval_secs: f64,
    /// Pictures of this cell, relative to the run directory.
    pub pictures: Vec<String>,
    /// The full metric set.
    #[serde(default)]
    pub quality: Option<QualityReport>,
}

impl CellResult {
    /// A cell with every number zero (tests build grids from it).
    #[cfg(test)]
    pub(crate) fn blank() -> Self {
        CellResult {
            gan: String::new(),
            disc: String::new(),
            setting: Setting::Centralized,
            fd: 0.0,
            precision: 0.0,
            recall: 0.0,
            memorized_share: 0.0,
            class_coverage: 0.0,
            label_agreement: 0.0,
            diversity_ratio: 0.0,
            accuracy: 0.0,
            macro_f1: 0.0,
            gain_accuracy: 0.0,
            gain_accuracy_std: 0.0,
            gain_f1: 0.0,
            final_d_loss: 0.0,
            final_g_loss: 0.0,
            train_secs: 0.0,
            eval_secs: 0.0,
            pictures: Vec::new(),
            quality: None,
        }
    }

    pub fn name(&self) -> String {
        cell_name(&self.gan, &self.disc, self.setting)
    }
}

pub fn cell_name(gan: &str, disc: &str, setting: Setting) -> String {
    format!("{gan}-{disc}-{}", setting.as_str())
}

/// Real-only classifier scores, the baseline of every gain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub accuracy: f64,
    pub accuracy_std: f64,
    pub macro_f1: f64,
    pub macro_f1_std: f64,
    /// Per seed, for the paired gain.
    pub per_seed_accuracy: Vec<f64>,
    pub per_seed_f1: Vec<f64>,
}

/// Everything a reproduction produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reproduction {
    pub preset: Preset,
    pub data: String,
    pub commit: String,
    pub started: String,
    pub total_secs: f64,
    pub reference_test_accuracy: f64,
    pub baseline: Baseline,
    pub cells: Vec<CellResult>,
    pub claims: Vec<claims::Claim>,
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
}
