//! Turning data into weights: one round of local GAN training on a site's shard ([`local`]: checkpointed every k
//! steps and resumable, what the trainer actor runs on its thread), the ViT classifier's training ([`classifier`]),
//! and GAN training without a network ([`simulation`]: centralized, and an in-process federation for sweeps).
//!
//! Below evaluation and reporting: nothing here measures quality or writes reports; it returns weights and losses.

pub mod classifier;
pub mod local;
pub mod simulation;

pub use local::{
    batch_tensors, bench_step, bench_weights, LocalCheckpoints, LocalJob, LocalResult, LocalTrainer, TrainError,
    TrainFailure, TrainFailureKind,
};
