//! One TOML file configures every role of a run, so a server and its sites can never disagree on the model or the
//! data recipe: each process reads the same file and takes the part it needs. Every field has a default, so an empty
//! file is a valid (demo-sized) configuration; unknown keys are refused so a typo is an error, not a silent default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

mod model;
mod privacy;
mod secagg;
pub use model::ModelSection;
pub use privacy::{DpSettings, PrivacyConfig};
pub use secagg::{SecAggConfig, SecAggSettings};

use crate::data::partition::Partition;
pub use crate::faults::Fault;
use crate::federation::strategy::{StrategyConfig, Summation};
use crate::models::{DiscKind, GanKind, ModelConfig, Recipe};

/// Synthetic classes when `data.num_classes` is unset: ADI, BACK, DEB, LYM.
pub const DEFAULT_SYNTH_CLASSES: usize = 4;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub federation: FederationConfig,
    pub data: DataConfig,
    pub model: ModelSection,
    pub cluster: ClusterConfig,
    pub runtime: RuntimeConfig,
    pub evaluation: EvaluationConfig,
    pub k8s: K8sConfig,
    pub privacy: PrivacyConfig,
    pub secagg: SecAggConfig,
    /// Faults injected on purpose (tests and chaos scenarios); empty in normal runs.
    pub faults: Vec<Fault>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// Rounds to run (completed rounds, not attempts).
    pub rounds: u64,
    /// Sites expected in the federation (site ids 0..sites).
    pub sites: u32,
    /// Quorum: a round completes once at least this many sites sent a valid update.
    pub min_sites: u32,
    /// A round's deadline, counted from the broadcast of the global weights.
    pub round_deadline_secs: f64,
    /// How long the server waits for `sites` to join before it starts with a quorum.
    pub join_timeout_secs: f64,
    /// Attempts of one round that miss quorum before the run fails.
    pub max_round_retries: u32,
    /// Local optimisation steps per round at each site.
    pub local_steps: u32,
    pub batch_size: u32,
    pub strategy: String,
    /// The arithmetic of the mean of FedAvg, FedProx, FedAvgM and FedAdam: `fast` (f32, memory bound; its last bits
    /// depend on the order updates arrive in) or `exact` (the same model whatever the order: bit-reproducible runs,
    /// several times the aggregation time). Not part of [`Config::hash`]: it changes rounding, not the experiment.
    /// Under `[privacy]` the mean is DP-FedAvg's, which keeps the f32 fold: its noise is random anyway.
    #[serde(skip_serializing_if = "Summation::is_fast")]
    pub summation: Summation,
    pub seed: u64,
    /// Checkpoints kept on disk.
    pub keep_checkpoints: usize,
    /// Once quorum is reached, wait at most this long for the remaining participants.
    pub grace_secs: f64,
    /// Heartbeat period P: pings go out every P/4 and a site that leaves one unanswered for 1.5 P is declared lost,
    /// so a hung or partitioned site is detected within 2 P.
    pub heartbeat_secs: f64,
    /// Smallest batch an out-of-memory retry may halve down to.
    pub min_batch_size: u32,
    /// Updates farther than this (L2) from the global weights are rejected; absent = no bound.
    pub max_update_norm: Option<f64>,
    /// Wait before retrying a round that missed quorum, times the attempt number (1×, 2×, 3× …).
    pub retry_backoff_secs: f64,
    /// A site checkpoints its local training every this many steps, to resume the round after a restart
    /// (0 = only the finished update is kept).
    pub local_checkpoint_every: u32,
    /// A site keeps its finished update on disk until the next round, so that after a restart (its own or the
    /// server's) it sends it again instead of training the round again. Costs one write and one SHA-256 of the
    /// model per site and round; worth it whenever local training takes longer than that.
    pub keep_finished_update: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `synthetic`, `imagefolder:PATH`, `npz:PATH`, `mhist:PATH` or `pcam:DIR`.
    pub source: String,
    /// Synthetic data: images per class.
    pub per_class: usize,
    /// Classes the model is built for. Synthetic data: how many of the 9 NCT classes (unset: 4). A real source
    /// (imagefolder, npz, mhist) brings its own classes and, left unset, the count is taken from the data when it is
    /// loaded; set explicitly (file or `--set`), it is a requirement the data must meet.
    pub num_classes: Option<usize>,
    /// Non-IID split across sites: `iid`, `dirichlet:ALPHA[:min=N]`, `pathological:K`, `quantity:POWER`.
    pub partition: String,
    /// Synthetic data: per-site stain shift strength (0 = none; 1 = strong), simulating hospitals' staining.
    pub stain_shift: f32,
    /// Synthetic data: `standard` (default) or `hard` (per-tile stain variation, more mixed tiles, more grain: a
    /// small classifier on 25 images per class of 9 classes lands at 65–80 %; `data::synth::Difficulty`).
    pub difficulty: String,
    /// Fractions of a format without its own split held out for validation and for the evaluator's test set.
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub cache_dir: Option<PathBuf>,
    /// Skip unreadable or corrupt image files (reported with their count) instead of failing on the first one.
    pub skip_bad: bool,
    /// PCam (`pcam:DIR`) only: read at most this many images from each split file — the first rows, which PCam's
    /// shuffled files make a random sample — instead of all 262,144 + 32,768 + 32,768. Unset: everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_images: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where the server listens and sites connect (host:port).
    pub server_addr: String,
    /// Shared secret of ractor_cluster's challenge handshake. Override with HISTOFED_COOKIE.
    pub cookie: String,
    /// Largest inbound frame, MiB. Must exceed the serialized model (ractor_cluster's default of 16 MiB drops
    /// the whole connection on a bigger frame).
    pub max_frame_mib: u64,
    /// Delay before a site retries a lost or refused connection (doubles up to 8×).
    pub reconnect_secs: f64,
    /// Certificate directory (`histofed certs init`/`issue`): when set, every session is mutual TLS and a node's
    /// identity is its certificate's; when absent, plaintext with the cookie only.
    pub tls_dir: Option<PathBuf>,
    /// Port of the server's bulk data plane (weights travel there, beside the control connection); absent = the
    /// cluster port + 1. Sites learn it from the server.
    pub bulk_port: Option<u16>,
    /// Updates the server holds in memory at once, waiting to be folded in; more wait on TCP (backpressure).
    pub max_inflight_uploads: usize,
    /// A weights transfer that moves no byte for this long is cut off.
    pub transfer_stall_secs: f64,
    /// A site that hears nothing from the server for this long stops with an error (absent: it keeps trying).
    pub site_give_up_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// torch intra-op threads per process (several processes on few cores thrash without a budget).
    pub threads: i32,
    /// Where the server writes samples, checkpoints and reports.
    pub out_dir: PathBuf,
    /// Images per class in the evaluator's sample grid.
    pub grid_per_class: usize,
    /// Where a site keeps its local checkpoints; absent = `<out_dir>/sites/site-N`.
    pub state_dir: Option<PathBuf>,
}

impl RuntimeConfig {
    /// The state directory of site `site_id`: `state_dir`, else `<out_dir>/sites/site-N`.
    pub fn site_state_dir(&self, site_id: u32) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| self.out_dir.join("sites").join(format!("site-{site_id}")))
    }
}

/// What the server may do in Kubernetes (with `histofed server --k8s-site-selector`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct K8sConfig {
    /// Force-delete a site pod whose site is lost in the federation while its node has been NotReady/unreachable for
    /// `node_lost_secs`, so that its StatefulSet recreates it on a surviving node. Off by default: it needs RBAC to
    /// watch nodes (ClusterRole) and delete pods, and a forced delete skips the dead kubelet's confirmation (fencing
    /// refuses the old process should the node come back).
    pub remediate_lost_nodes: bool,
    /// How long a site's node must have been seen down (by this server) before its pod is force-deleted.
    pub node_lost_secs: f64,
}

impl Default for K8sConfig {
    fn default() -> Self {
        Self { remediate_lost_nodes: false, node_lost_secs: 30.0 }
    }
}

/// The evaluator role: what it measures and how often (see `quality` and `reference`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Run the full quality suite (reference-feature FD per class, precision/recall, memorization, mode collapse,
    /// class similarity) every this many rounds and after the last one; 0 = never (the sample grid and the fixed-feature
    /// Fréchet distance are still computed every round).
    pub eval_every: u64,
    /// Synthetic images per class the quality suite generates.
    pub samples_per_class: usize,
    /// The reference feature extractor: the ViT classifier (`tiny` or `vit-b16`) trained on the real training split
    /// for this many steps, cached per dataset + seed in `cache_dir` (absent: `data.cache_dir`/reference, else
    /// ~/.cache/histofed/reference).
    pub reference_preset: String,
    pub reference_steps: u32,
    /// The reference classifier sees each image standardised per channel, so its verdicts (class agreement,
    /// coverage) rest on structure, not on mean colour: without it a flat square of ADI's colour passes as ADI
    /// (`examples/reference_cues.rs`; docs/gan-recipe.md, "What the reference classifier decides by"). On by
    /// default since 2026-12-07; quality numbers in the docs dated before were measured without it.
    pub reference_standardise: bool,
    /// Synthetic data only: the reference classifier learns from its own procedural draw of this many images per
    /// class (another seed, so none is in any split) instead of the training split; 0 = the training split. Why: a
    /// judge trained on the few images the generators learn from is no better than the classifiers it judges — on
    /// the cpu preset's 100 images per class it named only 74 % of real validation images right, below the 0.8
    /// agreement it was to test (docs/reproduction-cpu.md, "The judge").
    pub reference_per_class: usize,
    pub cache_dir: Option<PathBuf>,
    /// A synthetic image nearer a training image than this fraction of the typical test→train distance is flagged.
    pub memorization_threshold: f64,
    /// Federated evaluation: every `eval_every` rounds and after the last one, each site scores the global
    /// generator on its own share of the validation split (`data.val_fraction`, partitioned like the training
    /// data) and the server records the sample-weighted result (`rounds[i].federated_eval`).
    pub at_sites: bool,
}

impl EvaluationConfig {
    /// Whether round `round` of `last` is one the sites evaluate (every `eval_every` rounds and always the last).
    pub fn at_sites_due(&self, round: u64, last: u64) -> bool {
        self.at_sites && (round == last || (self.eval_every > 0 && round.is_multiple_of(self.eval_every)))
    }
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        Self {
            eval_every: 5,
            samples_per_class: 32,
            reference_preset: "tiny".into(),
            reference_steps: 200,
            reference_standardise: true,
            reference_per_class: 0,
            cache_dir: None,
            memorization_threshold: 0.5,
            at_sites: true,
        }
    }
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            rounds: 3,
            sites: 3,
            min_sites: 2,
            round_deadline_secs: 120.0,
            join_timeout_secs: 60.0,
            max_round_retries: 3,
            local_steps: 20,
            batch_size: 32,
            strategy: "fedavg".into(),
            summation: Summation::Fast,
            seed: 42,
            keep_checkpoints: 5,
            grace_secs: 10.0,
            heartbeat_secs: 1.0,
            min_batch_size: 4,
            max_update_norm: None,
            local_checkpoint_every: 10,
            keep_finished_update: true,
            retry_backoff_secs: 1.0,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: "synthetic".into(),
            per_class: 96,
            num_classes: None,
            partition: "dirichlet:0.5".into(),
            stain_shift: 0.0,
            difficulty: "standard".into(),
            val_fraction: 0.1,
            test_fraction: 0.2,
            cache_dir: None,
            skip_bad: false,
            max_images: None,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            server_addr: "127.0.0.1:7700".into(),
            cookie: "histofed-dev-cookie".into(),
            max_frame_mib: 1024,
            reconnect_secs: 0.5,
            tls_dir: None,
            bulk_port: None,
            max_inflight_uploads: 2,
            transfer_stall_secs: 30.0,
            site_give_up_secs: Some(600.0),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { threads: 1, out_dir: PathBuf::from("runs/demo"), grid_per_class: 8, state_dir: None }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let cfg: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        cfg.validate().map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Checks every cross-field rule, naming the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_federation()?;
        self.strategy()?;
        self.privacy()?;
        self.secagg()?;
        self.partition()?;
        self.validate_data()?;
        self.validate_cluster()?;
        if self.model.bench_params.is_some_and(|p| !(1..=1 << 31).contains(&p)) {
            return Err(ConfigError::Invalid("model.bench_params must be in 1..=2^31".into()));
        }
        if self.runtime.threads < 1 {
            return Err(ConfigError::Invalid("runtime.threads must be at least 1".into()));
        }
        if !(self.k8s.node_lost_secs.is_finite() && self.k8s.node_lost_secs >= 0.0) {
            return Err(ConfigError::Invalid(format!(
                "k8s.node_lost_secs = {} must be zero or a positive number of seconds",
                self.k8s.node_lost_secs
            )));
        }
        self.validate_evaluation()
    }

    fn validate_federation(&self) -> Result<(), ConfigError> {
        let f = &self.federation;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if f.rounds == 0 {
            return bad("federation.rounds must be at least 1".into());
        }
        if f.sites == 0 {
            return bad("federation.sites must be at least 1".into());
        }
        if f.min_sites == 0 || f.min_sites > f.sites {
            return bad(format!(
                "federation.min_sites = {} must be in 1..={} (federation.sites)",
                f.min_sites, f.sites
            ));
        }
        for (key, v) in [
            ("round_deadline_secs", f.round_deadline_secs),
            ("join_timeout_secs", f.join_timeout_secs),
            ("heartbeat_secs", f.heartbeat_secs),
        ] {
            if !positive(v) {
                return bad(format!("federation.{key} = {v} must be a positive number of seconds"));
            }
        }
        if !(f.retry_backoff_secs.is_finite() && f.retry_backoff_secs >= 0.0) {
            return bad(format!("federation.retry_backoff_secs = {} must be zero or positive", f.retry_backoff_secs));
        }
        if !(f.grace_secs.is_finite() && f.grace_secs >= 0.0) {
            return bad(format!("federation.grace_secs = {} must be zero or positive", f.grace_secs));
        }
        if f.min_batch_size == 0 || f.min_batch_size > f.batch_size {
            return bad(format!(
                "federation.min_batch_size = {} must be in 1..={} (federation.batch_size)",
                f.min_batch_size, f.batch_size
            ));
        }
        if let Some(n) = f.max_update_norm {
            if !positive(n) {
                return bad(format!("federation.max_update_norm = {n} must be positive"));
            }
        }
        if f.local_steps == 0 || f.batch_size == 0 {
            return bad("federation.local_steps and federation.batch_size must be at least 1".into());
        }
        if f.keep_checkpoints == 0 {
            return bad("federation.keep_checkpoints must be at least 1".into());
        }
        Ok(())
    }

    fn validate_data(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        match (self.data.num_classes, self.data.source.parse::<crate::data::DataSource>()) {
            (Some(n), Ok(crate::data::DataSource::Synthetic)) if !(2..=9).contains(&n) => {
                return bad(format!("data.num_classes = {n} must be in 2..=9 for synthetic data"));
            }
            (Some(n), _) if n < 2 => return bad(format!("data.num_classes = {n} must be at least 2")),
            _ => {}
        }
        self.model_config()?;
        if self.data.source.parse::<crate::data::DataSource>().is_err() {
            return bad(format!(
                "data.source = {:?}: expected synthetic, imagefolder:PATH, npz:PATH, mhist:PATH or pcam:DIR",
                self.data.source
            ));
        }
        match (self.data.max_images, self.data.source.parse::<crate::data::DataSource>()) {
            (Some(0), _) => return bad("data.max_images must be at least 1 (leave it unset to read everything)".into()),
            (Some(_), Ok(crate::data::DataSource::Pcam(_))) | (None, _) => {}
            (Some(m), _) => {
                return bad(format!(
                    "data.max_images = {m} applies to pcam:DIR sources only; data.source is {:?}",
                    self.data.source
                ))
            }
        }
        if let Err(e) = self.data.difficulty.parse::<crate::data::synth::Difficulty>() {
            return bad(format!("data.difficulty: {e}"));
        }
        if !(self.data.stain_shift.is_finite() && (0.0..=2.0).contains(&self.data.stain_shift)) {
            return bad(format!("data.stain_shift = {} must be in 0..=2", self.data.stain_shift));
        }
        let (v, t) = (self.data.val_fraction, self.data.test_fraction);
        if !(0.0..1.0).contains(&v) || !(0.0..1.0).contains(&t) || v + t >= 1.0 {
            return bad(format!(
                "data.val_fraction = {v} and data.test_fraction = {t} must be in [0, 1) and sum below 1"
            ));
        }
        if self.data.per_class == 0 {
            return bad("data.per_class must be at least 1".into());
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.cluster.server_addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
            return bad(format!("cluster.server_addr = {:?} must be host:port", self.cluster.server_addr));
        }
        if self.cluster.max_inflight_uploads == 0 {
            return bad("cluster.max_inflight_uploads must be at least 1".into());
        }
        if !positive(self.cluster.transfer_stall_secs) {
            return bad(format!(
                "cluster.transfer_stall_secs = {} must be a positive number of seconds",
                self.cluster.transfer_stall_secs
            ));
        }
        if let Some(g) = self.cluster.site_give_up_secs {
            if !positive(g) {
                return bad(format!("cluster.site_give_up_secs = {g} must be a positive number of seconds"));
            }
        }
        if self.cluster.max_frame_mib < 16 {
            return bad("cluster.max_frame_mib must be at least 16".into());
        }
        Ok(())
    }

    fn validate_evaluation(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let e = &self.evaluation;
        if e.samples_per_class < 2 {
            return bad(format!("evaluation.samples_per_class = {} must be at least 2", e.samples_per_class));
        }
        if !crate::models::CLASSIFIER_PRESETS.contains(&e.reference_preset.as_str()) {
            return bad(format!(
                "evaluation.reference_preset = {:?}: expected one of {}",
                e.reference_preset,
                crate::models::CLASSIFIER_PRESETS.join(", ")
            ));
        }
        if e.reference_steps == 0 {
            return bad("evaluation.reference_steps must be at least 1".into());
        }
        if e.reference_per_class > 0
            && !matches!(self.data.source.parse::<crate::data::DataSource>(), Ok(crate::data::DataSource::Synthetic))
        {
            return bad(format!(
                "evaluation.reference_per_class = {} needs data.source = \"synthetic\" (a procedural draw); with {:?} the \
                 reference classifier can only learn from the training split: set it to 0",
                e.reference_per_class, self.data.source
            ));
        }
        if !(e.memorization_threshold.is_finite() && e.memorization_threshold > 0.0) {
            return bad(format!("evaluation.memorization_threshold = {} must be positive", e.memorization_threshold));
        }
        Ok(())
    }

    pub fn strategy(&self) -> Result<StrategyConfig, ConfigError> {
        self.federation
            .strategy
            .parse::<StrategyConfig>()
            .map_err(|e| ConfigError::Invalid(format!("federation.strategy = {:?}: {e}", self.federation.strategy)))
    }

    pub fn partition(&self) -> Result<Partition, ConfigError> {
        self.data
            .partition
            .parse::<Partition>()
            .map_err(|e| ConfigError::Invalid(format!("data.partition = {:?}: {e}", self.data.partition)))
    }

    pub fn model_config(&self) -> Result<ModelConfig, ConfigError> {
        let m = &self.model;
        let gan: GanKind = m.gan.parse().map_err(|e| ConfigError::Invalid(format!("model.gan = {:?}: {e}", m.gan)))?;
        let disc: DiscKind = m
            .discriminator
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("model.discriminator = {:?}: {e}", m.discriminator)))?;
        let recipe: Recipe =
            m.recipe.parse().map_err(|e| ConfigError::Invalid(format!("model.recipe = {:?}: {e}", m.recipe)))?;
        let mut cfg = ModelConfig::preset_with(&m.preset, recipe, gan, disc, self.num_classes() as i64)
            .map_err(|e| ConfigError::Invalid(format!("model.preset = {:?}: {e}", m.preset)))?;
        if let Some(size) = m.image_size {
            cfg = cfg.resized(size).map_err(|e| ConfigError::Invalid(format!("model.image_size = {size}: {e}")))?;
        }
        m.override_ingredients(&mut cfg)?;
        Ok(cfg)
    }

    /// The class count the model is built for: `data.num_classes`, else [`DEFAULT_SYNTH_CLASSES`]. For a real source
    /// left unset this is only a placeholder until [`Config::take_classes_from_data`] has seen the data.
    pub fn num_classes(&self) -> usize {
        self.data.num_classes.unwrap_or(DEFAULT_SYNTH_CLASSES)
    }

    /// Sizes the model for the classes the data actually has (`classes`, in label order, from `data.source`): an
    /// unset `data.num_classes` takes their count; one set explicitly (in the file or with `--set`) must equal it.
    pub fn take_classes_from_data(&mut self, classes: &[String]) -> Result<(), ConfigError> {
        let found = classes.len();
        match self.data.num_classes {
            None => {
                self.data.num_classes = Some(found);
                // The data's count must still suit the model (2..=10000 classes).
                self.model_config().map(|_| ()).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "{} has {found} classes, which the model cannot take: {e}",
                        self.data.source
                    ))
                })
            }
            Some(n) if n == found => Ok(()),
            Some(n) => {
                let mut names = classes.iter().take(12).cloned().collect::<Vec<_>>().join(", ");
                if found > 12 {
                    names.push_str(", …");
                }
                Err(ConfigError::Invalid(format!(
                    "data.num_classes = {n} is set (in the config file or with --set), but {} has {found} classes \
                     ({names}): remove data.num_classes to take the classes from the data, or point data.source at \
                     data with {n} classes",
                    self.data.source
                )))
            }
        }
    }

    /// A stable hash of what defines the experiment — model, data, strategy, sites, seed, local work — recorded in
    /// checkpoints so a resumed run can tell it continues the same experiment. Operational settings (rounds,
    /// deadlines, heartbeats, addresses, output folder, faults) are left out: extending a run by more rounds or
    /// moving it to another port is still the same run.
    pub fn hash(&self) -> String {
        let f = &self.federation;
        // The class count as the model sees it: an unset count and the same count set explicitly are one experiment
        // (and hash as checkpoints written before the count could be left unset did).
        let data = DataConfig { num_classes: Some(self.num_classes()), ..self.data.clone() };
        let identity =
            (&self.model, &data, (&f.strategy, f.seed, f.sites, f.local_steps, f.batch_size, f.max_update_norm));
        let text = serde_json::to_string(&identity).unwrap_or_default();
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }

    pub fn cookie(&self) -> String {
        std::env::var("HISTOFED_COOKIE").unwrap_or_else(|_| self.cluster.cookie.clone())
    }

    /// Overrides from the command line, as `section.key=value` pairs in TOML syntax.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<(), ConfigError> {
        let mut table: toml::Table =
            toml::from_str(&self.to_toml()?).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for ov in overrides {
            let (key, value) = ov
                .split_once('=')
                .ok_or_else(|| ConfigError::Invalid(format!("override {ov:?} is not section.key=value")))?;
            let (section, field) = key
                .trim()
                .split_once('.')
                .ok_or_else(|| ConfigError::Invalid(format!("override key {key:?} is not section.key")))?;
            let parsed: toml::Value = match toml::from_str::<BTreeMap<String, toml::Value>>(&format!("v = {value}")) {
                Ok(mut m) => m.remove("v").unwrap_or(toml::Value::String(value.to_string())),
                Err(_) => toml::Value::String(value.trim().to_string()),
            };
            let sec = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::Invalid(format!("override {ov:?}: {section} is not a section")))?;
            sec.insert(field.to_string(), parsed);
        }
        let text = toml::to_string(&table).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid(format!("override: {e}")))?;
        cfg.validate()?;
        *self = cfg;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::GeneratorArch;

    #[test]
    fn empty_file_is_the_default_and_round_trips() {
        let cfg: Config = toml::from_str("").unwrap();
        assert_eq!(cfg, Config::default());
        let back: Config = toml::from_str(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        assert!(toml::from_str::<Config>("[federation]\nrunds = 3\n").is_err());
        let mut cfg = Config::default();
        cfg.federation.min_sites = 9;
        assert!(cfg.validate().unwrap_err().to_string().contains("min_sites"));
        let mut cfg = Config::default();
        cfg.federation.strategy = "fedwhat".into();
        assert!(cfg.validate().unwrap_err().to_string().contains("federation.strategy"));
        let mut cfg = Config::default();
        cfg.evaluation.reference_per_class = 500;
        cfg.validate().unwrap();
        cfg.data.source = "imagefolder:/data/NCT".into();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("evaluation.reference_per_class = 500 needs data.source = \"synthetic\""), "{e}");
    }

    #[test]
    fn overrides_apply_and_validate() {
        let mut cfg = Config::default();
        cfg.apply_overrides(&["federation.rounds=7".into(), "model.preset=small".into()]).unwrap();
        assert_eq!(cfg.federation.rounds, 7);
        assert_eq!(cfg.model.preset, "small");
        assert!(cfg.apply_overrides(&["federation.rounds=0".into()]).is_err());
        assert!(cfg.apply_overrides(&["nonsense".into()]).is_err());
    }

    #[test]
    fn hash_ignores_operational_settings() {
        let a = Config::default();
        let mut b = a.clone();
        b.federation.rounds = 50;
        b.federation.heartbeat_secs = 3.0;
        b.cluster.server_addr = "10.0.0.1:1".into();
        b.runtime.out_dir = "elsewhere".into();
        assert_eq!(a.hash(), b.hash());
        b.model.gan = "acgan".into();
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn a_key_added_to_the_model_section_leaves_the_hash_of_configurations_without_it() {
        // The default configuration's hash as checkpoints written by commit 51a7ec7 (2026-12-07) recorded it: a new
        // optional key must not change it (skip it when unset), or a run checkpointed before cannot resume.
        let cfg = Config::default();
        assert_eq!(
            cfg.hash(),
            "74dfbe2a9b58924d",
            "the configuration hash changed: a run checkpointed before will not resume"
        );
        let mut lazy = cfg.clone();
        lazy.model.gp_every = Some(4);
        assert_ne!(lazy.hash(), cfg.hash());
        let mut real_only = cfg.clone();
        real_only.model.acgan_fake_class = Some(false);
        assert_ne!(real_only.hash(), cfg.hash());
    }

    #[test]
    fn the_summation_is_read_written_only_when_exact_and_left_out_of_the_hash() {
        let cfg = Config::default();
        assert!(!toml::to_string(&cfg).unwrap().contains("summation"));
        let mut exact = cfg.clone();
        exact.apply_overrides(&["federation.summation=\"exact\"".to_string()]).unwrap();
        assert_eq!(exact.federation.summation, Summation::Exact);
        let text = toml::to_string(&exact).unwrap();
        assert!(text.contains("summation = \"exact\""), "{text}");
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), exact);
        // Rounding, not the experiment: a federation checkpointed with one resumes with the other.
        assert_eq!(exact.hash(), cfg.hash());
        assert_eq!(exact.build_strategy().unwrap().name(), "fedavg");
    }

    #[test]
    fn model_size_overrides_the_preset_and_is_validated() {
        let mut cfg = Config::default();
        cfg.model.image_size = Some(64);
        assert_eq!(cfg.model_config().unwrap().image_size, 64);
        cfg.model.image_size = Some(48);
        assert!(cfg.validate().unwrap_err().to_string().contains("model.image_size"));
    }

    #[test]
    fn the_acgan_class_head_can_learn_from_real_images_only() {
        let mut cfg = Config::default();
        assert!(cfg.model_config().unwrap().acgan_fake_class, "the paper's ACGAN by default");
        cfg.apply_overrides(&["model.acgan_fake_class=false".into()]).unwrap();
        assert!(!cfg.model_config().unwrap().acgan_fake_class);
    }

    #[test]
    fn learning_rates_override_the_recipe_and_are_validated() {
        let mut cfg = Config::default();
        let recipe = cfg.model_config().unwrap();
        cfg.apply_overrides(&["model.lr_g=1e-4".into(), "model.lr_d=4e-4".into()]).unwrap();
        let m = cfg.model_config().unwrap();
        assert_eq!((m.lr_g, m.lr_d), (1e-4, 4e-4));
        assert_eq!(m.beta1, recipe.beta1, "only the rates change");
        cfg.model.lr_d = Some(-1.0);
        assert!(cfg.model_config().unwrap_err().to_string().contains("lr_d"));
    }

    #[test]
    fn the_generator_architecture_is_chosen_by_name() {
        let mut cfg = Config::default();
        cfg.apply_overrides(&["model.generator=pixel-shuffle".into()]).unwrap();
        assert_eq!(cfg.model_config().unwrap().generator_arch, GeneratorArch::PixelShuffle);
        cfg.model.generator = Some("pixelshuffle".into());
        let err = cfg.model_config().unwrap_err().to_string();
        assert!(err.contains("model.generator") && err.contains("pixel-shuffle"), "{err}");
    }

    #[test]
    fn class_count_defaults_for_synthetic_and_comes_from_real_data() {
        let cfg: Config = toml::from_str("").unwrap();
        assert_eq!(cfg.data.num_classes, None, "unset, not defaulted to a number");
        assert_eq!(cfg.num_classes(), DEFAULT_SYNTH_CLASSES);
        assert_eq!(cfg.model_config().unwrap().num_classes, 4);
        // Leaving the count unset or setting the default explicitly is the same experiment (and the hash that
        // checkpoints written with `num_classes = 4` carry).
        let mut four = cfg.clone();
        four.data.num_classes = Some(4);
        assert_eq!(cfg.hash(), four.hash());

        // A real source left unset takes the data's classes; the overrides that name the source keep it unset.
        let mut real = Config::default();
        real.apply_overrides(&["data.source=\"npz:/data/pathmnist.npz\"".into()]).unwrap();
        assert_eq!(real.data.num_classes, None);
        let nine: Vec<String> = crate::data::NCT_CLASSES.iter().map(|s| s.to_string()).collect();
        real.take_classes_from_data(&nine).unwrap();
        assert_eq!(real.data.num_classes, Some(9));
        assert_eq!(real.model_config().unwrap().num_classes, 9);
        real.take_classes_from_data(&nine).unwrap();

        // Set explicitly (file or --set), a different count is a clear error naming the key and the way out.
        let mut explicit = Config::default();
        explicit.apply_overrides(&["data.source=\"imagefolder:/x\"".into(), "data.num_classes=4".into()]).unwrap();
        assert_eq!(explicit.data.num_classes, Some(4));
        let e = explicit.take_classes_from_data(&nine[..2]).unwrap_err().to_string();
        assert!(e.contains("data.num_classes = 4 is set"), "{e}");
        assert!(e.contains("imagefolder:/x has 2 classes (ADI, BACK)"), "{e}");
        assert!(e.contains("remove data.num_classes"), "{e}");
        let from_file: Config = toml::from_str("[data]\nsource = \"npz:p.npz\"\nnum_classes = 9\n").unwrap();
        assert_eq!(from_file.data.num_classes, Some(9));

        // The 2..=9 bound is the synthetic generator's; real data may have more classes.
        let mut synth = Config::default();
        synth.data.num_classes = Some(12);
        assert!(synth.validate().unwrap_err().to_string().contains("2..=9 for synthetic"));
        synth.data.source = "npz:big.npz".into();
        synth.validate().unwrap();
        synth.data.num_classes = Some(1);
        assert!(synth.validate().unwrap_err().to_string().contains("data.num_classes = 1"));
    }

    #[test]
    fn faults_parse() {
        let cfg: Config =
            toml::from_str("[[faults]]\nkind = \"trainer-panic\"\nsite = 1\nround = 2\ntimes = 1\n").unwrap();
        assert_eq!(cfg.faults, vec![Fault::TrainerPanic { site: 1, round: 2, times: 1 }]);
    }

    #[test]
    fn privacy_settings_resolve_or_name_the_conflict() {
        let with = |sets: &[&str]| {
            let mut c = Config::default();
            c.apply_overrides(&sets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map(|_| c)
        };
        assert_eq!(Config::default().privacy().unwrap(), None, "off by default");
        let target = with(&["privacy.epsilon=3.0", "privacy.clip_norm=0.5", "federation.rounds=20"]).unwrap();
        let dp = target.privacy().unwrap().expect("on");
        assert_eq!((dp.clip_norm, dp.delta, dp.max_epsilon), (0.5, 1e-5, Some(3.0)), "the target is the budget");
        let eps = crate::federation::privacy::ledger_epsilon(
            std::iter::empty(),
            20,
            crate::federation::privacy::Release::gaussian(dp.noise_multiplier),
            dp.delta,
        );
        assert!(eps <= 3.0 && eps > 2.9, "the derived noise spends the target over the rounds: {eps}");
        let err = |sets: &[&str]| match with(sets) {
            Ok(c) => c.validate().expect_err("must be refused").to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err(&["privacy.epsilon=3.0"]).contains("privacy.clip_norm"));
        assert!(err(&["privacy.epsilon=3.0", "privacy.noise_multiplier=1.0", "privacy.clip_norm=1.0"]).contains("both"));
        assert!(err(&["privacy.clip_norm=1.0"]).contains("DP is off"));
        let krum = err(&["privacy.noise_multiplier=1.0", "privacy.clip_norm=1.0", "federation.strategy=\"krum:1\""]);
        assert!(krum.contains("robust rule") && krum.contains("krum"), "{krum}");
        let prox =
            err(&["privacy.noise_multiplier=1.0", "privacy.clip_norm=1.0", "federation.strategy=\"fedprox:0.01\""]);
        assert!(prox.contains("fedavg, fedavgm and fedadam") && prox.contains("fedprox"), "{prox}");
        // A server optimiser steps from the noisy mean: it is built over DP-FedAvg and passes its ledger on.
        let adam = with(&[
            "privacy.noise_multiplier=1.0",
            "privacy.clip_norm=1.0",
            "federation.strategy=\"fedadam:0.1:0.001\"",
        ])
        .unwrap();
        let s = adam.build_strategy().unwrap();
        assert_eq!((s.name(), s.site_hints().dp_clip_norm), ("fedadam", Some(1.0)));
        assert!(err(&["privacy.epsilon=0.000001", "privacy.clip_norm=1.0", "federation.rounds=1000"])
            .contains("out of reach"));
        assert!(err(&["privacy.noise_multiplier=1.0", "privacy.clip_norm=1.0", "privacy.delta=2.0"]).contains("delta"));
        let dp = with(&["privacy.noise_multiplier=1.0", "privacy.clip_norm=1.0"]).unwrap();
        assert_eq!(dp.build_strategy().unwrap().name(), "dp-fedavg");
        assert_eq!(dp.privacy().unwrap().expect("on").adaptive, None, "fixed clipping unless a quantile is set");
    }

    #[test]
    fn adaptive_clipping_settings_default_as_published_and_refuse_what_cannot_work() {
        let with = |sets: &[&str]| {
            let mut c = Config::default();
            c.apply_overrides(&sets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map(|_| c)
        };
        let err = |sets: &[&str]| match with(sets) {
            Ok(c) => c.validate().expect_err("must be refused").to_string(),
            Err(e) => e.to_string(),
        };
        let base = ["privacy.noise_multiplier=0.1", "privacy.clip_norm=1.0", "federation.sites=40"];
        let a = with(&[&base[..], &["privacy.target_quantile=0.5"]].concat()).unwrap().privacy().unwrap().unwrap();
        let a = a.adaptive.expect("adaptive");
        assert_eq!((a.target_quantile, a.learning_rate, a.count_stddev), (0.5, 0.2, 2.0), "sites/20 = 2");
        // Few sites: sites/20 would leave the updates no privacy at z = 1.5; the default rises to z.
        let few = ["privacy.noise_multiplier=1.5", "privacy.clip_norm=1.0", "privacy.target_quantile=0.5"];
        let a = with(&few).unwrap().privacy().unwrap().unwrap().adaptive.unwrap();
        assert_eq!(a.count_stddev, 1.5);
        let z_update = a.update_noise_multiplier(1.5);
        assert!((z_update / 1.5 - 1.0 / 0.75f64.sqrt()).abs() < 1e-12, "15 % more noise on the updates: {z_update}");
        let low = err(&[&few[..], &["privacy.clipped_count_stddev=0.5"]].concat());
        assert!(low.contains("count noise std") && low.contains("z/2"), "{low}");
        assert!(err(&[&base[..], &["privacy.target_quantile=1.0"]].concat()).contains("target quantile"));
        assert!(err(&[&base[..], &["privacy.target_quantile=0.5", "privacy.clip_lr=0.0"]].concat())
            .contains("learning rate"));
        assert!(err(&[&base[..], &["privacy.clip_lr=0.3"]].concat()).contains("privacy.target_quantile"));
        assert!(err(&["privacy.target_quantile=0.5"]).contains("DP is off"));
    }
}
