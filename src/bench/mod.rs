//! Benchmarks whose results go to BENCHMARKS.md: always interleaved A/B in the same run, medians and ratios.
//!
//! * [`models`] — `histofed bench models`: tch vs PyTorch per-step times of the six GAN × discriminator models;
//! * [`federation`] — `histofed bench transfer|federation`: the bulk plane vs raw TCP, seconds per round of a real
//!   federation vs the raw-TCP floor; [`aggregate`] — `histofed bench aggregate`: FedAvg's mean (fast and exact) vs
//!   memcpy;
//! * [`secagg`] — `histofed bench secagg`: the compute cost of secure aggregation vs FedAvg's fold.

pub mod aggregate;
pub mod federation;
pub mod models;
pub mod secagg;
