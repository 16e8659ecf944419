//! The parameters of one secure aggregation and the neighbour graph they imply.
//!
//! Why a graph: with every site masking with every other (Bonawitz et al.), the work per site grows with the number
//! of sites; SecAgg+ (Bell et al. 2020) masks with k neighbours on a random regular graph, k = O(log n), which keeps
//! the same guarantees with high probability. Here the graph is a ring over the participants in an order drawn from
//! the round number (SHA-256), each site joined to the k/2 nearest on either side; with k ≥ n − 1 it is the complete
//! graph. Every party computes it from the parameters, so the server cannot hand a site a different one.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::noise::{tail_bound, NoiseOptions, SiteNoise};
use super::quantize::quant_step;
use super::SecAggError;

/// One secure aggregation's parameters, the same at the server and every site.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SecAggParams {
    pub round: u64,
    /// The sites asked to take part, sorted, distinct.
    pub participants: Vec<u32>,
    /// k: neighbours per site (n − 1 or more: everyone).
    pub neighbours: usize,
    /// t: shares needed to reconstruct a secret; each secret has k + 1 holders (the neighbours and the site itself).
    pub threshold: usize,
    /// Each value (the update times its weight) is clipped to [−c, c] before quantization.
    pub clip_range: f32,
    /// Quantization levels 2^q per value; the sum lives modulo 2³².
    pub quant_bits: u32,
    /// The number of values in every masked input (a site refuses to mask an update of another length).
    pub values: u64,
    /// Distributed DP: the Skellam noise every site adds (`None`: no noise at the sites).
    pub noise: Option<SiteNoise>,
}

/// Default neighbours for `n` sites: everyone up to 10 sites, else 2·⌈log₂ n⌉ (Bell et al.: O(log n)).
pub fn default_neighbours(n: usize) -> usize {
    if n <= 10 {
        n.saturating_sub(1)
    } else {
        2 * (usize::BITS - (n - 1).leading_zeros()) as usize
    }
}

/// Default threshold for `k` neighbours: a strict majority of the k + 1 holders, so that two disjoint sets of
/// honest answers (one revealing a site's seed, one its key) cannot both reach it.
pub fn default_threshold(k: usize) -> usize {
    k.div_ceil(2) + 1
}

/// What a run configures for every round's secure aggregation: the parameters of a round follow from these and
/// the round's participants ([`SecAggOptions::params`]); `None` takes the default for the round's size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SecAggOptions {
    /// Each value (the update times its weight) is clipped to [−c, c] before quantization.
    pub clip_range: f32,
    /// k (default: [`default_neighbours`]).
    pub neighbours: Option<usize>,
    /// t (default: [`default_threshold`] of the round's degree).
    pub threshold: Option<usize>,
    /// q (default: the most that cannot overflow for the round's sites, at most 24).
    pub quant_bits: Option<u32>,
    /// Distributed DP: the sites add the noise (`None`: they add none).
    pub noise: Option<NoiseOptions>,
}

impl SecAggOptions {
    /// Round `round`'s parameters over `participants` for inputs of `values` values, checked
    /// ([`SecAggParams::validate`]).
    pub fn params(&self, round: u64, participants: &[u32], values: u64) -> Result<SecAggParams, SecAggError> {
        let mut p: Vec<u32> = participants.to_vec();
        p.sort_unstable();
        p.dedup();
        let n = p.len();
        let k = self.neighbours.unwrap_or_else(|| default_neighbours(n));
        let mut params = SecAggParams {
            round,
            participants: p,
            neighbours: k,
            threshold: self.threshold.unwrap_or_else(|| default_threshold(k.min(n.saturating_sub(1)))),
            clip_range: self.clip_range,
            quant_bits: 0,
            values,
            noise: None,
        };
        params.quant_bits = match self.quant_bits {
            Some(q) => q,
            // The most bits (at most 24) whose sums, with the noise they imply, cannot wrap.
            None => (1..=max_quant_bits(n).min(24))
                .rev()
                .find(|&q| self.noise.is_none_or(|o| params.with_noise(q, &o).fits()))
                .unwrap_or(1),
        };
        // Bits out of range get no noise computed for them (the step would be meaningless); validate names them.
        if let Some(o) = self.noise.as_ref().filter(|_| (1..=31).contains(&params.quant_bits)) {
            params = params.with_noise(params.quant_bits, o);
        }
        params.validate()?;
        Ok(params)
    }
}

impl SecAggParams {
    /// The parameters with the default graph, threshold and 24-bit-or-less quantization that cannot overflow, for
    /// inputs of any length, without noise.
    pub fn new(round: u64, participants: &[u32], clip_range: f32) -> Result<Self, SecAggError> {
        SecAggOptions { clip_range, neighbours: None, threshold: None, quant_bits: None, noise: None }.params(
            round,
            participants,
            0,
        )
    }

    /// These parameters at `q` bits with the sites' noise for them.
    fn with_noise(&self, q: u32, opts: &NoiseOptions) -> Self {
        let n = self.participants.len();
        let step = quant_step(self.clip_range, q);
        let noise = SiteNoise::calibrate(opts, n, self.threshold, self.values, step);
        SecAggParams { quant_bits: q, noise: Some(noise), ..self.clone() }
    }

    /// Whether no sum of the participants' codes and noise can wrap: the codes' half-span plus the noise's
    /// [`tail_bound`] stays below 2³¹ around the centre the sum is decoded from.
    fn fits(&self) -> bool {
        let n = self.participants.len() as f64;
        let half_span = n * ((1u64 << self.quant_bits.min(31)) - 1) as f64 / 2.0;
        let noise = self.noise.map_or(0.0, |s| tail_bound(s.total_variance(self.participants.len())));
        half_span + 1.0 + noise < 2f64.powi(31)
    }

    /// Checks every parameter; overflow of the modular sum is impossible by construction: n · (2^q − 1) < 2³².
    pub fn validate(&self) -> Result<(), SecAggError> {
        let bad = |m: String| Err(SecAggError::Params(m));
        let n = self.participants.len();
        if n < 2 {
            return bad(format!("{n} participant(s): secure aggregation needs at least 2"));
        }
        if self.participants.windows(2).any(|w| w[0] >= w[1]) {
            return bad("participants must be sorted and distinct".into());
        }
        let k = self.degree();
        if k < 1 {
            return bad("each site needs at least 1 neighbour".into());
        }
        if k < n - 1 && k % 2 == 1 {
            return bad(format!(
                "neighbours = {k} must be even (a ring joins k/2 on each side) or ≥ n − 1 = {}",
                n - 1
            ));
        }
        if k + 1 > 255 {
            return bad(format!("{} holders per secret: Shamir over GF(256) allows 255", k + 1));
        }
        if !(1..=k + 1).contains(&self.threshold) {
            return bad(format!("threshold = {} must be in 1..={} (neighbours + 1)", self.threshold, k + 1));
        }
        if !(self.clip_range.is_finite() && self.clip_range > 0.0) {
            return bad(format!("clip range {} must be a positive number", self.clip_range));
        }
        if !(1..=31).contains(&self.quant_bits) || self.quant_bits > max_quant_bits(n) {
            return bad(format!(
                "{} quantization bits overflow 32-bit sums of {n} sites (at most {})",
                self.quant_bits,
                max_quant_bits(n)
            ));
        }
        if let Some(noise) = &self.noise {
            let v = noise.site_variance;
            if !(v.is_finite() && v > 0.0) || noise.min_contributors < 1 {
                return bad(format!("the sites' noise variance {v} must be a positive number"));
            }
            if !self.fits() {
                return bad(format!(
                    "{} quantization bits leave no room for the sites' noise (sd {:.3e} codes over {n} sites) in \
                     32-bit sums: use fewer secagg.quant_bits (or leave it unset)",
                    self.quant_bits,
                    noise.total_variance(n).sqrt()
                ));
            }
        }
        Ok(())
    }

    /// The number of neighbours each site really has (k, capped at n − 1).
    pub fn degree(&self) -> usize {
        self.neighbours.min(self.participants.len().saturating_sub(1))
    }

    /// The participants in the round's ring order.
    fn ring(&self) -> Vec<u32> {
        let mut order: Vec<([u8; 32], u32)> = self
            .participants
            .iter()
            .map(|&s| {
                let mut h = Sha256::new();
                h.update(b"histofed secagg ring");
                h.update(self.round.to_le_bytes());
                h.update(s.to_le_bytes());
                (h.finalize().into(), s)
            })
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, s)| s).collect()
    }

    /// `site`'s neighbours, sorted.
    pub fn neighbours_of(&self, site: u32) -> Result<Vec<u32>, SecAggError> {
        let ring = self.ring();
        let pos = ring.iter().position(|&s| s == site).ok_or(SecAggError::NotParticipant(site))?;
        Ok(self.neighbours_at(&ring, pos))
    }

    /// Every participant's neighbours, the ring drawn once (the server looks them up for every share it checks).
    pub fn graph(&self) -> BTreeMap<u32, Vec<u32>> {
        let ring = self.ring();
        (0..ring.len()).map(|pos| (ring[pos], self.neighbours_at(&ring, pos))).collect()
    }

    /// The neighbours of the site at `pos` in `ring`, sorted.
    fn neighbours_at(&self, ring: &[u32], pos: usize) -> Vec<u32> {
        let (n, k, site) = (ring.len(), self.degree(), ring[pos]);
        let mut out: Vec<u32> = if k >= n - 1 {
            ring.iter().copied().filter(|&s| s != site).collect()
        } else {
            (1..=k / 2).flat_map(|d| [ring[(pos + d) % n], ring[(pos + n - d) % n]]).collect()
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether `site` takes part.
    pub fn is_participant(&self, site: u32) -> bool {
        self.participants.binary_search(&site).is_ok()
    }
}

/// The most quantization bits for which n values of 2^q − 1 still sum below 2³².
pub fn max_quant_bits(n: usize) -> u32 {
    (1..=31u32).rev().find(|&q| (n as u64).saturating_mul((1u64 << q) - 1) < (1u64 << 32)).unwrap_or(0)
}
