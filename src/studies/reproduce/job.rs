//! What a federated cell of a study asks of the runtime, and how the runtime answers: the studies describe the
//! training ([`FederatedJob`]), the binary starts the processes ([`FederatedRunner`], in `cli`), so this layer never
//! spawns a process or touches a socket.

use std::path::PathBuf;

use crate::federation::strategy::Summation;

/// A federated training to run on the real runtime: what to train; the runner knows how to start processes.
#[derive(Debug, Clone, PartialEq)]
pub struct FederatedJob {
    pub gan: String,
    pub disc: String,
    pub seed: u64,
    pub sites: u32,
    pub rounds: u32,
    pub local_steps: u32,
    pub batch_size: u32,
    /// `data::partition` syntax.
    pub partition: String,
    /// Where the run writes its outputs (its checkpoints hold the final global generator).
    pub out_dir: PathBuf,
    /// Client-level DP-FedAvg for the run (`privacy` study); none: plain FedAvg.
    pub privacy: Option<JobPrivacy>,
    /// The arithmetic of FedAvg's mean: the protocol's runs take it exact, so a federated cell reruns bit for bit.
    pub summation: Summation,
}

/// The `[privacy]` settings of a federated job: the noise (by ε or directly by z) and the clip norm.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPrivacy {
    pub noise: JobNoise,
    /// C, or the first round's C with adaptive clipping.
    pub clip_norm: f64,
    /// Adaptive clipping's target quantile; none: C stays fixed.
    pub target_quantile: Option<f64>,
}

/// How a federated job's DP noise is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JobNoise {
    /// The smallest z that meets ε over the job's rounds (`privacy.epsilon`).
    Epsilon(f64),
    /// z itself (`privacy.noise_multiplier`).
    Multiplier(f64),
}

/// Starts a server and its sites as processes for one [`FederatedJob`] and waits for the run to end; returns the
/// folder whose checkpoints hold the final global generator.
pub trait FederatedRunner {
    fn run(&self, job: &FederatedJob) -> Result<PathBuf, RunnerError>;
}

/// Why a [`FederatedRunner`] gave no model.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The run failed (the message names the process and its log).
    #[error("{0}")]
    Failed(String),
    /// The user asked the process to stop: the study stops instead of starting the next run.
    #[error("interrupted")]
    Interrupted,
}
