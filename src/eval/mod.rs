//! Measuring generators: everything that turns weights into numbers and pictures about sample quality.
//!
//! * [`quality`] — pure metrics on features, logits and pixels (Fréchet, KID, precision/recall, memorization,
//!   diversity, class similarity);
//! * [`reference`] — the cached reference classifier whose features the metrics use;
//! * [`sampling`] — class-balanced synthetic sets, generator files, sample grids;
//! * [`assessment`] — one generator end to end (the reference, both feature spaces, baselines, pictures);
//! * [`gan_evaluator`] — per round: grid + fixed-feature FD, the quality suite every `eval_every` rounds;
//! * [`site_eval`] — a site's scorer for federated evaluation (the fold is `federation::evaluation`);
//! * [`central`] — the centralized GAN baseline: the site's trainer and the server's evaluator in one loop.
//!
//! Above [`crate::train`] (the reference classifier is trained with it), below the report and the actors.

pub mod assessment;
pub mod central;
pub mod gan_evaluator;
pub mod quality;
pub mod reference;
pub mod sampling;
pub mod site_eval;
