//! The state of the open round's secure aggregation, as the server keeps it between messages — apart from the
//! shell in `secure`, so that the server's state holds it without depending on the code that acts on it.

use std::collections::{BTreeMap, BTreeSet};

use crate::actors::messages::SecureTrain;
use crate::config::{DpSettings, SecAggSettings};
use crate::federation::privacy::Release;
use crate::federation::secagg::{Next, SecAggError, SecureRound};

/// The open round's secure aggregation.
pub(super) struct OpenSecure {
    pub(super) round: u64,
    pub(super) attempt: u32,
    /// `None` once handed to the aggregator thread for unmasking.
    pub(super) driver: Option<SecureRound>,
    /// What the participants were told (resent to nobody: a site that joins mid-round waits for the next one).
    pub(super) train: Box<SecureTrain>,
    /// The survivors' sample counts, from their uploads' metadata.
    pub(super) samples: BTreeMap<u32, u64>,
    /// Decisions taken where no actor reference is at hand (a site lost), carried out after the message.
    pub(super) deferred: Vec<Next>,
    /// Sites lost while their masked input was being decoded: told to the protocol once it is counted.
    pub(super) lost_in_check: BTreeSet<u32>,
}

impl OpenSecure {
    pub(super) fn is(&self, round: u64, attempt: u32) -> bool {
        self.round == round && self.attempt == attempt
    }

    /// Site `id` left the round (lost, out of the round): the protocol hears of it, and its decision is carried
    /// out after the current message. A site whose masked input is in hand (`in_check`: being decoded) is not lost
    /// to the protocol: that input still counts, as a plain update in check does; if it fails to decode, the site
    /// leaves the protocol then.
    pub(super) fn lost(&mut self, id: u32, in_check: bool) {
        if in_check {
            self.lost_in_check.insert(id);
            return;
        }
        if let Some(driver) = self.driver.as_mut() {
            let next = driver.on_lost(id);
            self.deferred.push(next);
        }
    }
}

/// Opens round `round`'s secure aggregation over `participants` (each with its sample count), or says why it
/// cannot (fewer sites than its threshold): `Ok(None)` when secure aggregation is off.
pub(super) fn begin(
    settings: Option<SecAggSettings>,
    round: u64,
    attempt: u32,
    participants: &BTreeMap<u32, u64>,
    len: usize,
    quorum: usize,
    uniform: bool,
) -> Result<Option<OpenSecure>, SecAggError> {
    let Some(settings) = settings else { return Ok(None) };
    let ids: Vec<u32> = participants.keys().copied().collect();
    let params = settings.options.params(round, &ids, len as u64)?;
    let driver = SecureRound::new(params.clone(), len, quorum)?;
    let total_samples = participants.values().sum::<u64>().max(1);
    Ok(Some(OpenSecure {
        round,
        attempt,
        driver: Some(driver),
        train: Box::new(SecureTrain { attempt, params, total_samples, uniform }),
        samples: BTreeMap::new(),
        deferred: Vec::new(),
        lost_in_check: BTreeSet::new(),
    }))
}

/// What the next round will charge at most: the Gaussian at the configured multiplier, or, when the sites add the
/// noise, the Skellam mechanism with the least noise any round size the run allows (`sites` participants, each
/// round completing with at least its calibrated contributors) can carry — the privacy budget's look-ahead.
pub(super) fn upcoming_release(
    settings: Option<SecAggSettings>,
    dp: DpSettings,
    sites: std::ops::RangeInclusive<usize>,
    round: u64,
    values: usize,
) -> Release {
    let gaussian = Release::gaussian(dp.noise_multiplier);
    let Some(settings) = settings.filter(|_| dp.noise_at_sites) else { return gaussian };
    let mut worst: Option<(f64, Release)> = None;
    for n in sites {
        let ids: Vec<u32> = (0..n as u32).collect();
        let Some(noise) = settings.options.params(round, &ids, values as u64).ok().and_then(|p| p.noise) else {
            continue;
        };
        let release = Release::Skellam {
            l1: noise.l1_sensitivity,
            l2: noise.l2_sensitivity,
            variance: noise.total_variance(noise.min_contributors),
        };
        let eps = crate::federation::privacy::epsilon_of([release], dp.delta);
        if worst.as_ref().is_none_or(|(e, _)| eps > *e) {
            worst = Some((eps, release));
        }
    }
    worst.map_or(gaussian, |(_, r)| r)
}
