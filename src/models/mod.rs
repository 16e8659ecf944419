//! The model layer: conditional GANs (CGAN, WGAN-GP, ACGAN × CNN or ViT discriminator), the ViT classifier,
//! weight conversion and quality metrics, all in pure tch.
//!
//! Why a separate layer: the actor/federation code above only needs a few verbs (build, step, snapshot, load,
//! generate, measure) and must not care which architecture or objective runs; everything that touches libtorch
//! lives here, behind `ModelError`.

pub mod augment;
pub mod bench;
pub mod classifier;
pub mod config;
pub mod convert;
pub mod device;
pub mod diffaugment;
pub mod disc_cnn;
pub mod disc_vit;
pub mod discriminator;
pub mod error;
pub mod gan;
pub mod generator;
mod init;
mod layers;
pub mod metrics;
pub mod objectives;
pub mod rng;
mod vit;

#[cfg(test)]
mod objective_tests;
#[cfg(test)]
mod tests;

pub use bench::bench_step;
pub use classifier::{Classifier, ClassifierConfig, CLASSIFIER_PRESETS};
pub use config::{
    AugmentPolicy, DiscKind, GanKind, GeneratorArch, GeneratorNorm, GeneratorPadding, ModelConfig, Recipe, SourceLoss,
};
pub use device::select_device;
pub use error::ModelError;
pub use gan::{Gan, StepLosses, DISCRIMINATOR_PREFIX, GENERATOR_PREFIX};
pub use metrics::{frechet_distance, random_cnn_features, simple_features};
pub use objectives::gradient_penalty;
