//! A site's side of one secure aggregation.
//!
//! Why it refuses so much: the server is honest but curious, and the site's only protection is never to reveal
//! both secrets of one neighbour. So a site answers an unmask request only when the survivors and the dropped are
//! disjoint, include itself among the survivors, and cover every neighbour it masked with.

use std::collections::BTreeMap;

use blahaj::{Share, Sharks};

use super::crypto::{agree, apply_masks, derive, fresh_secret, open, public_key, seal, sha256, share_aad};
use super::noise::add_skellam;
use super::params::SecAggParams;
use super::quantize::quantize;
use super::{Advertisement, MaskedInput, Reveal, SealedShares, SecAggError, Secret, UnmaskRequest};

/// Bytes of one Shamir share of a 32-byte secret (x, then 32 y bytes).
const SHARE_LEN: usize = 33;

/// A share pair one holder keeps for one owner: of the owner's self-mask seed and of its mask key.
#[derive(Clone)]
struct Held {
    seed: Vec<u8>,
    key: Vec<u8>,
}

/// One site's state for one round's secure aggregation.
pub struct SiteRound {
    params: SecAggParams,
    site: u32,
    neighbours: Vec<u32>,
    cipher_sk: [u8; 32],
    mask_sk: [u8; 32],
    seed: [u8; 32],
    /// The neighbours' advertisements, as the server forwarded them.
    peers: BTreeMap<u32, Advertisement>,
    /// Shares this site holds, by owner (itself included).
    held: BTreeMap<u32, Held>,
    /// The neighbours whose masks went into the masked input.
    masked_with: Option<Vec<u32>>,
}

/// Names the round and the site, never a secret.
impl std::fmt::Debug for SiteRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteRound")
            .field("round", &self.params.round)
            .field("site", &self.site)
            .field("neighbours", &self.neighbours)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl SiteRound {
    /// Fresh keys and seed for the round; returns the state and the advertisement to send.
    pub fn new(params: SecAggParams, site: u32) -> Result<(Self, Advertisement), SecAggError> {
        params.validate()?;
        let neighbours = params.neighbours_of(site)?;
        let (cipher_sk, mask_sk, seed) = (fresh_secret(), fresh_secret(), fresh_secret());
        let adv = Advertisement {
            site,
            cipher_pk: public_key(&cipher_sk),
            mask_pk: public_key(&mask_sk),
            seed_commitment: sha256(&seed),
        };
        let me = SiteRound {
            params,
            site,
            neighbours,
            cipher_sk,
            mask_sk,
            seed,
            peers: BTreeMap::new(),
            held: BTreeMap::new(),
            masked_with: None,
        };
        Ok((me, adv))
    }

    /// Splits the seed and the mask key among the neighbours that advertised and this site, and seals each holder's
    /// shares for it.
    pub fn share(&mut self, adverts: &[Advertisement]) -> Result<Vec<SealedShares>, SecAggError> {
        for a in adverts {
            if !self.neighbours.contains(&a.site) {
                return Err(SecAggError::Refused(format!("site {} is not a neighbour of site {}", a.site, self.site)));
            }
            if self.peers.insert(a.site, a.clone()).is_some() {
                return Err(SecAggError::Duplicate { site: a.site, what: "an advertisement" });
            }
        }
        let t = self.params.threshold;
        let holders: Vec<u32> = std::iter::once(self.site).chain(self.peers.keys().copied()).collect();
        if holders.len() < t {
            return Err(SecAggError::TooFew { stage: "key advertisement", have: holders.len(), need: t });
        }
        let dealer = Sharks(t as u8);
        let seed_shares: Vec<Share> = dealer.dealer(&self.seed).take(holders.len()).collect();
        let key_shares: Vec<Share> = dealer.dealer(&self.mask_sk).take(holders.len()).collect();
        let mut out = Vec::with_capacity(holders.len() - 1);
        for ((&to, s), k) in holders.iter().zip(&seed_shares).zip(&key_shares) {
            let held = Held { seed: Vec::from(s), key: Vec::from(k) };
            if to == self.site {
                self.held.insert(to, held);
                continue;
            }
            let key = self.share_key(to, self.site, to)?;
            let plain = [held.seed.as_slice(), held.key.as_slice()].concat();
            let ciphertext = seal(&key, &share_aad(self.params.round, self.site, to), &plain);
            out.push(SealedShares { from: self.site, to, ciphertext });
        }
        Ok(out)
    }

    /// Opens the shares the server routed here; any that does not decrypt fails the round (closed).
    pub fn receive(&mut self, sealed: &[SealedShares]) -> Result<(), SecAggError> {
        for s in sealed {
            if s.to != self.site || !self.peers.contains_key(&s.from) {
                return Err(SecAggError::Refused(format!(
                    "shares from site {} to site {} were routed to site {}",
                    s.from, s.to, self.site
                )));
            }
            if self.held.contains_key(&s.from) {
                return Err(SecAggError::Duplicate { site: s.from, what: "shares" });
            }
            let key = self.share_key(s.from, s.from, self.site)?;
            let plain = open(&key, &share_aad(self.params.round, s.from, self.site), &s.ciphertext)
                .filter(|p| p.len() == 2 * SHARE_LEN)
                .ok_or(SecAggError::BadShares { from: s.from, to: self.site })?;
            let (seed, key) = plain.split_at(SHARE_LEN);
            self.held.insert(s.from, Held { seed: seed.to_vec(), key: key.to_vec() });
        }
        Ok(())
    }

    /// The masked input: `update` × `weight`, clipped and quantized, plus the self mask and one pairwise mask per
    /// neighbour whose shares arrived (the others never will be unmasked). Returns it and how many values were
    /// clipped.
    pub fn mask(&mut self, update: &[f32], weight: f32) -> Result<(MaskedInput, usize), SecAggError> {
        self.mask_on(update, weight, 1)
    }

    /// [`SiteRound::mask`] with the mask streams split over up to `threads` threads (the same result).
    pub fn mask_on(
        &mut self,
        update: &[f32],
        weight: f32,
        threads: usize,
    ) -> Result<(MaskedInput, usize), SecAggError> {
        if self.masked_with.is_some() {
            return Err(SecAggError::Duplicate { site: self.site, what: "a masked input" });
        }
        let p = &self.params;
        if p.noise.is_some() && update.len() as u64 != p.values {
            // The noise is calibrated for the round's length: an update of another length would get the wrong one.
            return Err(SecAggError::Length { site: self.site, got: update.len(), want: p.values as usize });
        }
        let weighted: Vec<f32> = update.iter().map(|v| v * weight).collect();
        let (mut values, clipped) = quantize(&weighted, p.clip_range, p.quant_bits);
        drop(weighted);
        if let Some(noise) = &p.noise {
            add_skellam(&mut values, noise.site_variance, threads)?;
        }
        let partners: Vec<u32> = self.held.keys().copied().filter(|&j| j != self.site).collect();
        let mut masks = vec![(self.seed, true)];
        for &j in &partners {
            masks.push((self.pair_seed(j)?, self.site < j));
        }
        apply_masks(&mut values, &masks, threads);
        self.masked_with = Some(partners);
        Ok((MaskedInput { site: self.site, values }, clipped))
    }

    /// The shares the server needs to remove the masks: the survivors' seed shares and the dropped sites' key
    /// shares this site holds — refused unless the request is one consistent partition.
    pub fn unmask(&self, req: &UnmaskRequest) -> Result<Vec<Reveal>, SecAggError> {
        let refuse = |m: String| Err(SecAggError::Refused(m));
        let Some(masked_with) = &self.masked_with else {
            return refuse("an unmask request before this site sent its masked input".into());
        };
        if let Some(both) = req.survivors.iter().find(|s| req.dropped.contains(s)) {
            return refuse(format!("site {both} is named both a survivor and dropped"));
        }
        if !req.survivors.contains(&self.site) {
            return refuse(format!("site {} sent its input but is not named a survivor", self.site));
        }
        if let Some(j) = masked_with.iter().find(|j| !req.survivors.contains(j) && !req.dropped.contains(j)) {
            return refuse(format!("neighbour {j} is neither a survivor nor dropped"));
        }
        let survivors = req.survivors.len();
        if survivors < self.params.threshold {
            return Err(SecAggError::TooFew { stage: "unmasking", have: survivors, need: self.params.threshold });
        }
        let mut out = Vec::new();
        for (&owner, held) in &self.held {
            let (secret, share) = if req.survivors.contains(&owner) {
                (Secret::SelfMaskSeed, &held.seed)
            } else if req.dropped.contains(&owner) {
                (Secret::MaskKey, &held.key)
            } else {
                continue;
            };
            out.push(Reveal { holder: self.site, owner, secret, share: share.clone() });
        }
        Ok(out)
    }

    /// The key that seals the shares from `from` to `to`, from this site's agreement with `peer`.
    fn share_key(&self, peer: u32, from: u32, to: u32) -> Result<[u8; 32], SecAggError> {
        let adv = self.peers.get(&peer).ok_or(SecAggError::NotParticipant(peer))?;
        let shared = agree(&self.cipher_sk, &adv.cipher_pk, peer)?;
        Ok(derive(&shared, self.params.round, "histofed secagg share key", from, to))
    }

    /// The pairwise mask seed with neighbour `j`.
    fn pair_seed(&self, j: u32) -> Result<[u8; 32], SecAggError> {
        let adv = self.peers.get(&j).ok_or(SecAggError::NotParticipant(j))?;
        Ok(pair_seed(&agree(&self.mask_sk, &adv.mask_pk, j)?, self.params.round, self.site, j))
    }
}

/// The pairwise mask seed of sites `a` and `b` from their agreement (the same from both ends).
pub(super) fn pair_seed(shared: &[u8; 32], round: u64, a: u32, b: u32) -> [u8; 32] {
    derive(shared, round, "histofed secagg pairwise mask", a.min(b), a.max(b))
}
