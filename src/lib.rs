//! histofed: resilient federated GAN training on histopathology images.
//!
//! Layers, imports pointing down only:
//! - [`cli`] and [`launcher`] wire configuration, telemetry, the cluster and the actors together;
//! - [`actors`] are the roles (server, site, generator-trainer, evaluator), thin shells over the libraries;
//! - [`cluster`] is everything about the network (ractor_cluster nodes, sessions, events, the bulk data plane);
//! - [`chaos`] runs fault scenarios against a real local federation and reports what survived;
//! - [`kube`] is everything about the Kubernetes API (site membership from pods, the pod-killing chaos tool);
//! - [`observability`] serves health, readiness, Prometheus metrics and status over HTTP; [`plots`] and
//!   [`report_html`] turn a run report into pictures and a page;
//! - [`training`], [`evaluation`], [`centralized`], [`report`] turn models and data into rounds, baselines,
//!   scores and records; [`reference`] (the cached reference classifier) and [`augment_study`] (real vs real +
//!   synthetic training data, centralized and federated) measure what the generator is good for;
//! - [`models`] (tch), [`data`] (images), [`federation`] (weights, strategies, checkpoints) and [`config`] are pure.
//! - [`quality`] scores generated samples against real ones in a reference classifier's feature space (pure tensor
//!   code: per-class Fréchet, precision/recall, memorization, diversity, class similarity).
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
