//! The server's secure aggregation over a network where sites die, hang and answer late: which stage a round is
//! in, when a stage closes, and what to send then — returned as decisions ([`Next`]) that the server actor carries
//! out, so the actor stays a thin shell and every transition is tested without sockets.
//!
//! Why stages close on "everyone answered, or the deadline": waiting for everyone lets one hung site stop the
//! round; closing early would drop sites that were merely slow. A site that misses a stage is out of the rest of
//! the round (it is "dropped before sharing" or "after sharing", which the protocol handles), and the round fails —
//! to be retried as a round without quorum is — as soon as fewer sites remain than both the reconstruction
//! threshold and the run's quorum.

use std::collections::BTreeSet;

use super::Unmasked;
use super::{Advertisement, MaskedInput, Reveal, SealedShares, SecAggError, SecAggParams, ServerRound, UnmaskRequest};

/// The stages of one secure aggregation, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Sites send their public keys and seed commitment.
    Advertise,
    /// Sites send their sealed shares.
    Share,
    /// Sites send their masked inputs (after training).
    Mask,
    /// Survivors reveal shares.
    Unmask,
    /// Unmasking was decided, or the round failed.
    Closed,
}

/// What the server does next.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Nothing yet.
    Wait,
    /// Stage 1 closed: send each site the advertisements of its neighbours (stage 2 starts).
    Roster(Vec<(u32, Vec<Advertisement>)>),
    /// Stage 2 closed: send each site the shares addressed to it (stage 3 starts).
    Shares(Vec<(u32, Vec<SealedShares>)>),
    /// Stage 3 closed: ask these survivors to reveal.
    Reveal(UnmaskRequest),
    /// Stage 4 closed: remove the masks ([`SecureRound::finish`], heavy: off the actor).
    Unmask,
    /// The round cannot complete securely.
    Fail(SecAggError),
}

/// One round's secure aggregation at the server.
pub struct SecureRound {
    inner: ServerRound,
    stage: Stage,
    /// Sites the current stage still waits for.
    waiting: BTreeSet<u32>,
    /// Sites still in the round (answered every stage so far).
    active: BTreeSet<u32>,
    /// The fewest sites that may carry on: max(threshold, quorum).
    floor: usize,
    /// Sites lost after their masked input arrived: survivors, but none will reveal (the unmask stage does not wait
    /// for them).
    gone: BTreeSet<u32>,
}

impl SecureRound {
    /// A round over `params.participants` with updates of `len` values; `quorum` is the run's least number of
    /// updates a round may close with.
    pub fn new(params: SecAggParams, len: usize, quorum: usize) -> Result<Self, SecAggError> {
        let floor = params.threshold.max(quorum);
        let active: BTreeSet<u32> = params.participants.iter().copied().collect();
        if active.len() < floor {
            return Err(SecAggError::TooFew { stage: "participants", have: active.len(), need: floor });
        }
        Ok(SecureRound {
            inner: ServerRound::new(params, len)?,
            stage: Stage::Advertise,
            waiting: active.clone(),
            active,
            floor,
            gone: BTreeSet::new(),
        })
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn params(&self) -> &SecAggParams {
        self.inner.params()
    }

    /// The sites still in the round.
    pub fn active(&self) -> &BTreeSet<u32> {
        &self.active
    }

    /// Whether the mask stage waits for `site`'s masked input.
    pub fn expects_input(&self, site: u32) -> bool {
        self.stage == Stage::Mask && self.waiting.contains(&site)
    }

    /// The sites the mask stage still waits for.
    pub fn missing_inputs(&self) -> Vec<u32> {
        if self.stage == Stage::Mask {
            self.waiting.iter().copied().collect()
        } else {
            Vec::new()
        }
    }

    fn expect(&self, stage: Stage, site: u32, what: &'static str) -> Result<(), SecAggError> {
        if self.stage != stage {
            return Err(SecAggError::Refused(format!(
                "{what} from site {site} in the {:?} stage (expected in {stage:?})",
                self.stage
            )));
        }
        if !self.waiting.contains(&site) {
            return Err(SecAggError::Refused(format!("{what} from site {site}, which this stage does not wait for")));
        }
        Ok(())
    }

    /// `site`'s answer to `stage`: checked against the stage, handed to the protocol, and the site no longer waited
    /// for. A refusal (either check) changes nothing.
    fn accept(
        &mut self,
        stage: Stage,
        site: u32,
        what: &'static str,
        hand: impl FnOnce(&mut ServerRound) -> Result<(), SecAggError>,
    ) -> Result<Next, SecAggError> {
        self.expect(stage, site, what)?;
        hand(&mut self.inner)?;
        self.waiting.remove(&site);
        Ok(self.maybe_close())
    }

    /// Stage 1: an advertisement. Err: refused (the site stays out; the round goes on).
    pub fn on_advert(&mut self, adv: Advertisement) -> Result<Next, SecAggError> {
        self.accept(Stage::Advertise, adv.site, "an advertisement", |r| r.advertise(adv))
    }

    /// Stage 2: a site's sealed shares.
    pub fn on_shares(&mut self, from: u32, sealed: Vec<SealedShares>) -> Result<Next, SecAggError> {
        self.accept(Stage::Share, from, "shares", |r| r.shares(from, sealed))
    }

    /// Stage 3: a site's masked input (already checked for its length by the caller or here).
    pub fn on_masked(&mut self, input: MaskedInput) -> Result<Next, SecAggError> {
        self.accept(Stage::Mask, input.site, "a masked input", |r| r.masked(input))
    }

    /// Stage 4: a survivor's revealed shares. A refused reveal takes the holder out of the count (its shares may be
    /// wrong); the others may still suffice.
    pub fn on_reveal(&mut self, holder: u32, reveals: Vec<Reveal>) -> Result<Next, SecAggError> {
        self.expect(Stage::Unmask, holder, "reveals")?;
        self.waiting.remove(&holder);
        self.inner.reveal(holder, reveals)?;
        Ok(self.maybe_close())
    }

    /// `stage`'s deadline passed: it closes with the sites that answered (a deadline of a stage already over is
    /// ignored).
    pub fn on_deadline(&mut self, stage: Stage) -> Next {
        if stage != self.stage || self.stage == Stage::Closed {
            return Next::Wait;
        }
        if stage == Stage::Unmask {
            // Whoever did not reveal is not needed if the others hold enough shares; `finish` decides.
            self.waiting.clear();
        } else {
            for s in std::mem::take(&mut self.waiting) {
                self.active.remove(&s);
            }
        }
        self.close()
    }

    /// A site left the run (lost, fenced): it answers no further stage. One that already sent its masked input
    /// stays a survivor (its neighbours reveal its seed); during unmasking the others' shares may suffice.
    pub fn on_lost(&mut self, site: u32) -> Next {
        if self.stage == Stage::Closed {
            return Next::Wait;
        }
        let was_waiting = self.waiting.remove(&site);
        let out = match self.stage {
            Stage::Advertise | Stage::Share => true,
            Stage::Mask => was_waiting,
            Stage::Unmask | Stage::Closed => false,
        };
        if out {
            self.active.remove(&site);
        } else if self.stage == Stage::Mask {
            self.gone.insert(site);
        }
        if was_waiting {
            self.maybe_close()
        } else {
            self.check_floor()
        }
    }

    fn check_floor(&mut self) -> Next {
        if self.active.len() < self.floor {
            let stage = match self.stage {
                Stage::Advertise => "advertisements",
                Stage::Share => "shares",
                Stage::Mask => "masked inputs",
                Stage::Unmask | Stage::Closed => "reveals",
            };
            self.stage = Stage::Closed;
            return Next::Fail(SecAggError::TooFew { stage, have: self.active.len(), need: self.floor });
        }
        Next::Wait
    }

    fn maybe_close(&mut self) -> Next {
        if self.waiting.is_empty() {
            self.close()
        } else {
            self.check_floor()
        }
    }

    /// Closes the current stage with the sites that answered and opens the next.
    fn close(&mut self) -> Next {
        if let Next::Fail(e) = self.check_floor() {
            return Next::Fail(e);
        }
        match self.stage {
            Stage::Advertise => {
                let mut out = Vec::new();
                for &s in &self.active {
                    match self.inner.adverts_for(s) {
                        Ok(a) => out.push((s, a)),
                        Err(e) => return self.fail(e),
                    }
                }
                self.open(Stage::Share);
                Next::Roster(out)
            }
            Stage::Share => {
                let out = self.active.iter().map(|&s| (s, self.inner.shares_for(s))).collect();
                self.open(Stage::Mask);
                Next::Shares(out)
            }
            Stage::Mask => match self.inner.unmask_request() {
                Ok(req) => {
                    self.active = req.survivors.iter().copied().collect();
                    self.open(Stage::Unmask);
                    if self.waiting.is_empty() {
                        // Every survivor is gone: nobody can reveal.
                        return self.fail(SecAggError::TooFew { stage: "reveals", have: 0, need: self.floor });
                    }
                    Next::Reveal(req)
                }
                Err(e) => self.fail(e),
            },
            Stage::Unmask => {
                self.stage = Stage::Closed;
                Next::Unmask
            }
            Stage::Closed => Next::Wait,
        }
    }

    fn open(&mut self, stage: Stage) {
        self.stage = stage;
        self.waiting = self.active.difference(&self.gone).copied().collect();
    }

    fn fail(&mut self, e: SecAggError) -> Next {
        self.stage = Stage::Closed;
        Next::Fail(e)
    }

    /// Removes the masks (after [`Next::Unmask`]): the sum of the survivors' weighted updates.
    pub fn finish(&self) -> Result<Unmasked, SecAggError> {
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::SiteRound;
    use super::*;

    /// Sites that answer until `silent_from` (never again from that stage on), driven through the real protocol.
    struct Net {
        driver: SecureRound,
        sites: BTreeMap<u32, SiteRound>,
        silent_from: BTreeMap<u32, Stage>,
        updates: BTreeMap<u32, Vec<f32>>,
        /// Stages whose deadline had to fire.
        deadlines: Vec<Stage>,
    }

    const LEN: usize = 64;

    fn update(i: u32) -> Vec<f32> {
        (0..LEN).map(|k| ((i as f32 + 1.0) * 0.31 * (k as f32 + 0.5)).sin() * 0.4).collect()
    }

    impl Net {
        fn new(n: u32, quorum: usize, silent_from: &[(u32, Stage)]) -> (Net, Vec<Advertisement>) {
            let ids: Vec<u32> = (0..n).collect();
            let params = SecAggParams::new(7, &ids, 1.0).unwrap();
            let driver = SecureRound::new(params.clone(), LEN, quorum).unwrap();
            let mut sites = BTreeMap::new();
            let mut adverts = Vec::new();
            for &i in &ids {
                let (s, a) = SiteRound::new(params.clone(), i).unwrap();
                sites.insert(i, s);
                adverts.push(a);
            }
            let updates = ids.iter().map(|&i| (i, update(i))).collect();
            let net =
                Net { driver, sites, silent_from: silent_from.iter().copied().collect(), updates, deadlines: vec![] };
            (net, adverts)
        }

        fn answers(&self, site: u32, stage: Stage) -> bool {
            self.silent_from.get(&site).is_none_or(|s| stage < *s)
        }

        /// Runs the round to its end: the unmasked result, or the failure.
        fn run(mut self, adverts: Vec<Advertisement>) -> (Result<Unmasked, SecAggError>, Vec<Stage>) {
            let mut next = Next::Wait;
            for a in adverts {
                if self.answers(a.site, Stage::Advertise) {
                    next = self.driver.on_advert(a).unwrap();
                }
            }
            loop {
                if next == Next::Wait {
                    let stage = self.driver.stage();
                    self.deadlines.push(stage);
                    next = self.driver.on_deadline(stage);
                }
                next = match next {
                    Next::Wait => unreachable!("a deadline always closes its stage"),
                    Next::Roster(r) => {
                        let mut last = Next::Wait;
                        for (s, adv) in r {
                            if self.answers(s, Stage::Share) {
                                let sealed = self.sites.get_mut(&s).unwrap().share(&adv).unwrap();
                                last = self.driver.on_shares(s, sealed).unwrap();
                            }
                        }
                        last
                    }
                    Next::Shares(sh) => {
                        let mut last = Next::Wait;
                        for (s, sealed) in sh {
                            let answers = self.answers(s, Stage::Mask);
                            let site = self.sites.get_mut(&s).unwrap();
                            site.receive(&sealed).unwrap();
                            if answers {
                                let (m, _) = site.mask(&self.updates[&s], 0.5).unwrap();
                                last = self.driver.on_masked(m).unwrap();
                            }
                        }
                        last
                    }
                    Next::Reveal(req) => {
                        let mut last = Next::Wait;
                        for &s in &req.survivors {
                            if self.answers(s, Stage::Unmask) {
                                let r = self.sites[&s].unmask(&req).unwrap();
                                last = self.driver.on_reveal(s, r).unwrap();
                            }
                        }
                        last
                    }
                    Next::Unmask => return (self.driver.finish(), self.deadlines),
                    Next::Fail(e) => return (Err(e), self.deadlines),
                };
            }
        }
    }

    fn half_sum(who: &[u32]) -> Vec<f32> {
        let mut s = vec![0.0f32; LEN];
        for &i in who {
            for (a, b) in s.iter_mut().zip(update(i)) {
                *a += 0.5 * b;
            }
        }
        s
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "unmasked sum off by {worst}");
    }

    #[test]
    fn everyone_answers_and_no_deadline_is_needed() {
        let (net, adverts) = Net::new(5, 3, &[]);
        let (r, deadlines) = net.run(adverts);
        let u = r.unwrap();
        assert_eq!(u.survivors, vec![0, 1, 2, 3, 4]);
        assert!(deadlines.is_empty(), "{deadlines:?}");
        assert_close(&u.sum, &half_sum(&[0, 1, 2, 3, 4]));
    }

    #[test]
    fn a_site_silent_before_sharing_is_left_out_at_the_share_deadline() {
        let (net, adverts) = Net::new(5, 3, &[(2, Stage::Share)]);
        let (r, deadlines) = net.run(adverts);
        let u = r.unwrap();
        assert_eq!(deadlines, vec![Stage::Share]);
        assert_eq!(u.survivors, vec![0, 1, 3, 4]);
        assert!(u.dropped.is_empty(), "it never shared, so it has no masks to remove");
        assert_close(&u.sum, &half_sum(&[0, 1, 3, 4]));
    }

    #[test]
    fn a_site_hung_after_sharing_is_dropped_at_the_mask_deadline_and_its_masks_removed() {
        let (net, adverts) = Net::new(6, 3, &[(4, Stage::Mask)]);
        let (r, deadlines) = net.run(adverts);
        let u = r.unwrap();
        assert_eq!(deadlines, vec![Stage::Mask]);
        assert_eq!(u.dropped, vec![4]);
        assert_close(&u.sum, &half_sum(&[0, 1, 2, 3, 5]));
    }

    #[test]
    fn a_survivor_that_does_not_reveal_is_not_needed_when_the_others_hold_enough_shares() {
        // 6 sites: k = 5, t = 4 of 6 holders; one survivor silent at unmasking leaves 5.
        let (net, adverts) = Net::new(6, 3, &[(1, Stage::Unmask)]);
        let (r, deadlines) = net.run(adverts);
        let u = r.unwrap();
        assert_eq!(deadlines, vec![Stage::Unmask]);
        assert_eq!(u.survivors, vec![0, 1, 2, 3, 4, 5], "it sent its input: it is a survivor");
        assert_close(&u.sum, &half_sum(&[0, 1, 2, 3, 4, 5]));
    }

    #[test]
    fn too_few_sites_fail_the_round_instead_of_waiting_or_releasing() {
        // Quorum 4 of 5: two silent at the mask stage leave 3.
        let (net, adverts) = Net::new(5, 4, &[(0, Stage::Mask), (3, Stage::Mask)]);
        let (r, _) = net.run(adverts);
        assert!(matches!(r, Err(SecAggError::TooFew { stage: "masked inputs", have: 3, need: 4 })), "{r:?}");
        // Too many silent reveals: 4 sites, t = 3; two survivors silent at unmasking leave 2 shares per secret.
        let (net, adverts) = Net::new(4, 2, &[(0, Stage::Unmask), (1, Stage::Unmask)]);
        let (r, _) = net.run(adverts);
        assert!(matches!(r, Err(SecAggError::NotEnoughShares { need: 3, have: 2, .. })), "{r:?}");
    }

    #[test]
    fn messages_out_of_stage_or_from_sites_not_waited_for_are_refused_and_change_nothing() {
        let (mut net, adverts) = Net::new(3, 2, &[]);
        let mut adverts = adverts.into_iter();
        let first = adverts.next().unwrap();
        assert_eq!(net.driver.on_advert(first.clone()).unwrap(), Next::Wait);
        let again = net.driver.on_advert(first).unwrap_err().to_string();
        assert!(again.contains("does not wait for"), "{again}");
        let early = net.driver.on_shares(1, vec![]).unwrap_err().to_string();
        assert!(early.contains("Advertise"), "{early}");
        assert_eq!(net.driver.on_deadline(Stage::Mask), Next::Wait, "a deadline of another stage is ignored");
        assert_eq!(net.driver.stage(), Stage::Advertise);
        assert_eq!(net.driver.active().len(), 3);
    }

    #[test]
    fn a_lost_site_closes_the_stage_without_its_deadline_or_fails_the_round_below_the_floor() {
        let (mut net, adverts) = Net::new(3, 2, &[]);
        let mut adverts = adverts.into_iter();
        net.driver.on_advert(adverts.next().unwrap()).unwrap();
        net.driver.on_advert(adverts.next().unwrap()).unwrap();
        // Site 2 is lost before it advertised: the stage closes with 0 and 1.
        match net.driver.on_lost(2) {
            Next::Roster(r) => assert_eq!(r.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![0, 1]),
            other => panic!("expected the roster, got {other:?}"),
        }
        // Site 1 is lost next: 1 site is below the floor of 2.
        assert!(matches!(net.driver.on_lost(1), Next::Fail(SecAggError::TooFew { have: 1, need: 2, .. })));
        assert_eq!(net.driver.stage(), Stage::Closed);
    }

    /// A site lost after its masked input arrived stays a survivor (its input counts) but is not waited for when
    /// the others reveal: the unmask stage closes on their reveals, not at its deadline.
    #[test]
    fn a_site_lost_after_sending_is_a_survivor_the_reveal_stage_does_not_wait_for() {
        let (mut net, adverts) = Net::new(5, 2, &[]);
        let mut next = Next::Wait;
        for a in adverts {
            next = net.driver.on_advert(a).unwrap();
        }
        let Next::Roster(roster) = next else { panic!("expected the roster") };
        let mut shared = Next::Wait;
        for (s, adv) in roster {
            shared = net.driver.on_shares(s, net.sites.get_mut(&s).unwrap().share(&adv).unwrap()).unwrap();
        }
        let Next::Shares(shares) = shared else { panic!("expected the shares") };
        for (s, sealed) in shares {
            let site = net.sites.get_mut(&s).unwrap();
            site.receive(&sealed).unwrap();
            if s != 4 {
                let (m, _) = site.mask(&net.updates[&s], 0.5).unwrap();
                assert_eq!(net.driver.on_masked(m).unwrap(), Next::Wait);
            }
        }
        // Site 0 dies after sending; site 4 never sends (k = 4, t = 3: sites 1-3 hold enough shares).
        assert_eq!(net.driver.on_lost(0), Next::Wait);
        let Next::Reveal(req) = net.driver.on_deadline(Stage::Mask) else { panic!("expected the unmask request") };
        assert_eq!((req.survivors.clone(), req.dropped.clone()), (vec![0, 1, 2, 3], vec![4]));
        let mut next = Next::Wait;
        for s in [1, 2, 3] {
            next = net.driver.on_reveal(s, net.sites[&s].unmask(&req).unwrap()).unwrap();
        }
        assert_eq!(next, Next::Unmask, "closed on the reveals of 1-3, without waiting for the lost site 0");
        let got = net.driver.finish().unwrap();
        assert_close(&got.sum, &half_sum(&[0, 1, 2, 3]));
    }
}
