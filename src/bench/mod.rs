//! Benchmarks whose results go to BENCHMARKS.md: always interleaved A/B in the same run, medians and ratios.
//!
//! * [`models`] — `histofed bench models`: tch vs PyTorch per-step times of the six GAN × discriminator models;
//! * [`federation`] — `histofed bench transfer|aggregate|federation`: the bulk plane vs raw TCP, FedAvg vs memcpy,
//!   seconds per round of a real federation vs the raw-TCP floor;
//! * [`secagg`] — `histofed bench secagg`: the compute cost of secure aggregation vs FedAvg's fold.

pub mod federation;
pub mod models;
pub mod secagg;
