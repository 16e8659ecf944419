//! What the generator is good for, measured: the experiments a paper would report, each a whole protocol over the
//! layers below (data, training, evaluation, reports).
//!
//! * [`augment`] — `histofed augment`: a classifier trained on real vs real + generated images, centralized and by
//!   in-process FedAvg;
//! * [`reproduce`] — `histofed reproduce` and `histofed ablate`: the paper's grid under a pre-registered protocol,
//!   and the recipe ablation.

pub mod augment;
pub mod reproduce;
