//! The server's side of one secure aggregation: it routes what it cannot read, decides who survived, and removes
//! the masks from the sum.
//!
//! Why it checks every reconstruction: a holder that reveals a wrong share would make the server subtract the wrong
//! mask and release a wrong model without noticing. A reconstructed seed must hash to the owner's commitment and a
//! reconstructed key must give the owner's public key; when more shares than the threshold arrived, leaving one out
//! at a time finds a single bad one, otherwise the aggregation fails closed.

use std::collections::{BTreeMap, BTreeSet};

use blahaj::{Share, Sharks};

use super::crypto::{agree, apply_masks, public_key, sha256};
use super::params::SecAggParams;
use super::quantize::{dequantize_noisy_sum, dequantize_sum};
use super::site::pair_seed;
use super::{Advertisement, MaskedInput, Reveal, SealedShares, SecAggError, Secret, UnmaskRequest};

/// The outcome of an aggregation.
#[derive(Clone, Debug, PartialEq)]
pub struct Unmasked {
    /// The sum of the survivors' weighted updates (to quantization precision).
    pub sum: Vec<f32>,
    pub survivors: Vec<u32>,
    /// Sites that shared their secrets but sent no masked input (their pairwise masks were removed).
    pub dropped: Vec<u32>,
    /// Holders whose revealed share failed its owner's check (found by leaving it out), with the owner.
    pub bad_holders: Vec<(u32, u32)>,
}

/// The server's state for one round's secure aggregation.
pub struct ServerRound {
    params: SecAggParams,
    /// Each participant's neighbours (`SecAggParams::graph`).
    graph: BTreeMap<u32, Vec<u32>>,
    len: usize,
    adverts: BTreeMap<u32, Advertisement>,
    /// Sealed shares by sender: the sites that completed the sharing stage.
    sealed: BTreeMap<u32, Vec<SealedShares>>,
    masked: BTreeMap<u32, Vec<u32>>,
    request: Option<UnmaskRequest>,
    reveals: BTreeMap<(u32, Secret), BTreeMap<u32, Vec<u8>>>,
}

impl ServerRound {
    /// A round whose updates have `len` values.
    pub fn new(params: SecAggParams, len: usize) -> Result<Self, SecAggError> {
        params.validate()?;
        Ok(ServerRound {
            graph: params.graph(),
            params,
            len,
            adverts: BTreeMap::new(),
            sealed: BTreeMap::new(),
            masked: BTreeMap::new(),
            request: None,
            reveals: BTreeMap::new(),
        })
    }

    pub fn params(&self) -> &SecAggParams {
        &self.params
    }

    /// Stage 1: a site's advertisement.
    pub fn advertise(&mut self, adv: Advertisement) -> Result<(), SecAggError> {
        if !self.params.is_participant(adv.site) {
            return Err(SecAggError::NotParticipant(adv.site));
        }
        if self.adverts.contains_key(&adv.site) {
            return Err(SecAggError::Duplicate { site: adv.site, what: "an advertisement" });
        }
        self.adverts.insert(adv.site, adv);
        Ok(())
    }

    /// What `site` needs for stage 2: the advertisements of its neighbours that advertised.
    pub fn adverts_for(&self, site: u32) -> Result<Vec<Advertisement>, SecAggError> {
        let n = self.neighbours(site)?;
        Ok(n.iter().filter_map(|j| self.adverts.get(j).cloned()).collect())
    }

    /// Stage 2: a site's sealed shares, one per neighbour that advertised.
    pub fn shares(&mut self, from: u32, sealed: Vec<SealedShares>) -> Result<(), SecAggError> {
        if !self.adverts.contains_key(&from) {
            return Err(SecAggError::Refused(format!("shares from site {from}, which did not advertise")));
        }
        if self.sealed.contains_key(&from) {
            return Err(SecAggError::Duplicate { site: from, what: "shares" });
        }
        let want: BTreeSet<u32> = self.adverts_for(from)?.iter().map(|a| a.site).collect();
        let got: BTreeSet<u32> = sealed.iter().map(|s| s.to).collect();
        if sealed.iter().any(|s| s.from != from) || got != want || got.len() != sealed.len() {
            return Err(SecAggError::Refused(format!(
                "site {from}'s shares are addressed to {got:?}, its advertised neighbours are {want:?}"
            )));
        }
        self.sealed.insert(from, sealed);
        Ok(())
    }

    /// What `site` needs for stage 3: the shares addressed to it by the sites that completed stage 2.
    pub fn shares_for(&self, site: u32) -> Vec<SealedShares> {
        self.sealed.values().flatten().filter(|s| s.to == site).cloned().collect()
    }

    /// Stage 3: a site's masked input (only from a site that shared; the length is the round's).
    pub fn masked(&mut self, input: MaskedInput) -> Result<(), SecAggError> {
        if !self.sealed.contains_key(&input.site) {
            return Err(SecAggError::Refused(format!("a masked input from site {}, which did not share", input.site)));
        }
        if input.values.len() != self.len {
            return Err(SecAggError::Length { site: input.site, got: input.values.len(), want: self.len });
        }
        if self.masked.contains_key(&input.site) {
            return Err(SecAggError::Duplicate { site: input.site, what: "a masked input" });
        }
        self.masked.insert(input.site, input.values);
        Ok(())
    }

    /// Closes stage 3: the survivors (masked input received) and the dropped (shared, no input). Fails when fewer
    /// than the threshold survived.
    pub fn unmask_request(&mut self) -> Result<UnmaskRequest, SecAggError> {
        let survivors: Vec<u32> = self.masked.keys().copied().collect();
        let dropped: Vec<u32> = self.sealed.keys().copied().filter(|s| !self.masked.contains_key(s)).collect();
        let need = self.params.threshold;
        if survivors.len() < need {
            return Err(SecAggError::TooFew { stage: "masked inputs", have: survivors.len(), need });
        }
        let req = UnmaskRequest { survivors, dropped };
        self.request = Some(req.clone());
        Ok(req)
    }

    /// Stage 4: one holder's revealed shares (a survivor answering the request).
    pub fn reveal(&mut self, holder: u32, reveals: Vec<Reveal>) -> Result<(), SecAggError> {
        let req = self.request.as_ref().ok_or_else(|| SecAggError::Refused("reveals before the request".into()))?;
        if !req.survivors.contains(&holder) {
            return Err(SecAggError::Refused(format!("reveals from site {holder}, which is not a survivor")));
        }
        for r in reveals {
            let holds = r.owner == holder || self.neighbours(r.owner)?.contains(&holder);
            let right_kind = match r.secret {
                Secret::SelfMaskSeed => req.survivors.contains(&r.owner),
                Secret::MaskKey => req.dropped.contains(&r.owner),
            };
            if r.holder != holder || !holds || !right_kind {
                return Err(SecAggError::Refused(format!(
                    "site {holder} revealed a {:?} share of site {} it cannot hold or that was not asked for",
                    r.secret, r.owner
                )));
            }
            let slot = self.reveals.entry((r.owner, r.secret)).or_default();
            if slot.insert(holder, r.share).is_some() {
                return Err(SecAggError::Duplicate { site: holder, what: "a revealed share" });
            }
        }
        Ok(())
    }

    /// Removes the masks and returns the sum of the survivors' weighted updates.
    pub fn finish(&self) -> Result<Unmasked, SecAggError> {
        let req = self.request.as_ref().ok_or_else(|| SecAggError::Refused("finish before the request".into()))?;
        let mut total = vec![0u32; self.len];
        for values in self.masked.values() {
            for (t, v) in total.iter_mut().zip(values) {
                *t = t.wrapping_add(*v);
            }
        }
        let mut bad_holders = Vec::new();
        // Every mask to take off, then one pass over the sum split across the machine's cores (the sites wait).
        let mut masks = Vec::new();
        for &i in &req.survivors {
            let adv = &self.adverts[&i];
            let seed =
                self.reconstruct(i, Secret::SelfMaskSeed, &mut bad_holders, |s| sha256(s) == adv.seed_commitment)?;
            masks.push((seed, false));
        }
        for &d in &req.dropped {
            let adv = &self.adverts[&d];
            let key = self.reconstruct(d, Secret::MaskKey, &mut bad_holders, |k| public_key(k) == adv.mask_pk)?;
            // Every survivor that received d's shares masked with d: take its mask back out.
            for &j in self.neighbours(d)? {
                if !self.masked.contains_key(&j) {
                    continue;
                }
                let seed = pair_seed(&agree(&key, &self.adverts[&j].mask_pk, j)?, self.params.round, d, j);
                masks.push((seed, j > d));
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        apply_masks(&mut total, &masks, threads);
        let p = &self.params;
        Ok(Unmasked {
            sum: if p.noise.is_some() {
                dequantize_noisy_sum(&total, req.survivors.len(), p.clip_range, p.quant_bits)
            } else {
                dequantize_sum(&total, req.survivors.len(), p.clip_range, p.quant_bits)
            },
            survivors: req.survivors.clone(),
            dropped: req.dropped.clone(),
            bad_holders,
        })
    }

    fn neighbours(&self, site: u32) -> Result<&[u32], SecAggError> {
        self.graph.get(&site).map(Vec::as_slice).ok_or(SecAggError::NotParticipant(site))
    }

    /// One owner's secret from the revealed shares, checked by `valid`; with spare shares, one bad share is found
    /// by leaving each out in turn.
    fn reconstruct(
        &self,
        owner: u32,
        secret: Secret,
        bad_holders: &mut Vec<(u32, u32)>,
        valid: impl Fn(&[u8; 32]) -> bool,
    ) -> Result<[u8; 32], SecAggError> {
        let t = self.params.threshold;
        let shares: Vec<(u32, Share)> = self
            .reveals
            .get(&(owner, secret))
            .into_iter()
            .flatten()
            .filter_map(|(&h, b)| Share::try_from(b.as_slice()).ok().map(|s| (h, s)))
            .collect();
        if shares.len() < t {
            return Err(SecAggError::NotEnoughShares { site: owner, secret, have: shares.len(), need: t });
        }
        let recover = |skip: Option<u32>| -> Option<[u8; 32]> {
            let subset: Vec<&Share> = shares.iter().filter(|(h, _)| Some(*h) != skip).map(|(_, s)| s).collect();
            let bytes = Sharks(t as u8).recover(subset).ok()?;
            let value: [u8; 32] = bytes.try_into().ok()?;
            valid(&value).then_some(value)
        };
        if let Some(v) = recover(None) {
            return Ok(v);
        }
        if shares.len() > t {
            for (h, _) in &shares {
                if let Some(v) = recover(Some(*h)) {
                    bad_holders.push((*h, owner));
                    return Ok(v);
                }
            }
        }
        Err(SecAggError::Tampered { site: owner, secret })
    }
}
