//! histofed: resilient federated GAN training on histopathology images.
//!
//! Layers, imports pointing down only (the table is ARCHITECTURE.md's "## Layers"; `tests/layering.rs` enforces it):
//! - 9 [`cli`] — the subcommands;
//! - 8 [`studies`] (augmentation study, the reproduction, the ablation), [`bench`], [`chaos`], [`launcher`];
//! - 7 [`actors`] — the roles (server, site, generator-trainer, evaluator), thin shells over the libraries;
//! - 6 [`cluster`] (ractor_cluster nodes, mTLS, the bulk data plane, dev certificates), [`kube`] (the Kubernetes
//!   API), [`observability`] (health, readiness, Prometheus metrics, status over HTTP);
//! - 5 [`report`] — report.json / .md / .html and the plots;
//! - 4 [`eval`] — quality metrics, the reference classifier, sampling, the per-round evaluator, federated evaluation;
//! - 3 [`train`] — local GAN rounds, the classifier, in-process simulation;
//! - 2 [`records`] (run records), [`faults`] (injected faults), [`config`] (the one TOML file);
//! - 1 [`models`] (tch), [`data`] (images), [`federation`] (weights, strategies, validation, checkpoints) — pure;
//! - 0 [`util`] — heap reuse, logging, the drawing canvas.
//!
//! See ARCHITECTURE.md for the data path and the module map.

pub mod actors;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod data;
pub mod eval;
pub mod faults;
pub mod federation;
pub mod kube;
pub mod launcher;
pub mod models;
pub mod observability;
pub mod records;
pub mod report;
pub mod studies;
pub mod train;
pub mod util;
