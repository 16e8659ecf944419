//! The bookkeeping of one round, apart from any actor: who was asked, who answered, whether quorum is reached and
//! whether the round can close. The server actor only feeds it events (update arrived, update checked, site lost,
//! deadline) and acts on what it answers, so every quorum rule is unit-testable without a network.
//!
//! An update is counted in two steps because it is checked off the actor (decoding, validation and folding run on
//! the aggregator thread): on arrival it is *in check* — no longer awaited, not yet counted — and once checked it
//! is received (valid and folded) or its site is dropped from the round. A round never closes while an update that
//! arrived in time is still being checked, not even at its deadline: the update is in hand, and closing without it
//! would throw away work that was already paid for.

use std::collections::BTreeSet;

/// What the server should do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundStatus {
    /// Keep waiting for more updates.
    Waiting,
    /// Every participant still alive has answered and quorum holds: aggregate now.
    Complete,
    /// Nobody else can answer and quorum was not reached: retry the round (or fail the run).
    Failed { received: usize, needed: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateVerdict {
    Accept,
    /// The update belongs to another round (stale or future).
    WrongRound {
        expected: u64,
        got: u64,
    },
    /// The site was not asked in this round (e.g. it joined after the broadcast).
    NotParticipant,
    /// The site already contributed to this round.
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct RoundState {
    pub round: u64,
    pub attempt: u32,
    min_sites: usize,
    participants: BTreeSet<u32>,
    received: BTreeSet<u32>,
    dropped: BTreeSet<u32>,
    /// Arrived, being checked (decoded, validated, folded) off the actor.
    checking: BTreeSet<u32>,
    /// The deadline or the grace period passed: absent sites are no longer awaited.
    closed: bool,
}

impl RoundState {
    pub fn new(round: u64, attempt: u32, participants: impl IntoIterator<Item = u32>, min_sites: usize) -> Self {
        Self {
            round,
            attempt,
            min_sites,
            participants: participants.into_iter().collect(),
            received: BTreeSet::new(),
            dropped: BTreeSet::new(),
            checking: BTreeSet::new(),
            closed: false,
        }
    }

    pub fn participants(&self) -> &BTreeSet<u32> {
        &self.participants
    }

    pub fn received(&self) -> &BTreeSet<u32> {
        &self.received
    }

    /// Sites that were asked but were lost or opted out before answering.
    pub fn dropped(&self) -> &BTreeSet<u32> {
        &self.dropped
    }

    pub fn has_quorum(&self) -> bool {
        self.received.len() >= self.min_sites
    }

    /// Sites whose update arrived and is being checked (decoded, validated, folded).
    pub fn checking(&self) -> &BTreeSet<u32> {
        &self.checking
    }

    /// An update from `site` for `round` arrived: may it be checked and folded in? If so, the site is *in check*
    /// (no longer awaited, not yet counted) until [`RoundState::on_checked`] says how the check went.
    pub fn on_update(&mut self, site: u32, round: u64) -> UpdateVerdict {
        if round != self.round {
            return UpdateVerdict::WrongRound { expected: self.round, got: round };
        }
        if !self.participants.contains(&site) || self.dropped.contains(&site) {
            return UpdateVerdict::NotParticipant;
        }
        if self.received.contains(&site) || !self.checking.insert(site) {
            return UpdateVerdict::Duplicate;
        }
        UpdateVerdict::Accept
    }

    /// The update of `site` was checked: counted if it was folded in, otherwise the site is out of the round (an
    /// invalid update is no contribution, and the site is not awaited again this attempt).
    pub fn on_checked(&mut self, site: u32, folded: bool) {
        if !self.checking.remove(&site) {
            return;
        }
        if folded {
            self.received.insert(site);
        } else {
            self.dropped.insert(site);
        }
    }

    /// Adds a site that (re)joined while the round is open; false if it already contributed (or its update is in
    /// check).
    pub fn add_participant(&mut self, site: u32) -> bool {
        if self.received.contains(&site) || self.checking.contains(&site) {
            return false;
        }
        self.dropped.remove(&site);
        self.participants.insert(site);
        true
    }

    /// A participant was lost (disconnected, hung) or said it cannot contribute. An update of it already in hand
    /// still counts once checked.
    pub fn on_site_dropped(&mut self, site: u32) {
        if self.participants.contains(&site) && !self.received.contains(&site) && !self.checking.contains(&site) {
            self.dropped.insert(site);
        }
    }

    /// The deadline (or the grace period after quorum) passed: whoever answered is all there will be. The round
    /// still waits for the updates in check.
    pub fn close(&mut self) {
        self.closed = true;
    }

    fn outstanding(&self) -> usize {
        self.participants.len().saturating_sub(self.received.len() + self.dropped.len() + self.checking.len())
    }

    /// Whether the round can close: it waits while an update is in check, and (until [`RoundState::close`]) while
    /// a participant has not answered.
    pub fn status(&self) -> RoundStatus {
        if !self.checking.is_empty() || (!self.closed && self.outstanding() > 0) {
            RoundStatus::Waiting
        } else if self.has_quorum() {
            RoundStatus::Complete
        } else {
            RoundStatus::Failed { received: self.received.len(), needed: self.min_sites }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An update arrives and checks out.
    fn counted(r: &mut RoundState, site: u32, round: u64) {
        assert_eq!(r.on_update(site, round), UpdateVerdict::Accept);
        r.on_checked(site, true);
    }

    #[test]
    fn completes_when_everyone_answers() {
        let mut r = RoundState::new(1, 0, [0, 1, 2], 2);
        counted(&mut r, 0, 1);
        assert_eq!(r.status(), RoundStatus::Waiting);
        counted(&mut r, 1, 1);
        assert_eq!(r.status(), RoundStatus::Waiting, "site 2 is still expected");
        assert_eq!(r.on_update(2, 1), UpdateVerdict::Accept);
        assert_eq!(r.status(), RoundStatus::Waiting, "site 2's update is still being checked");
        r.on_checked(2, true);
        assert_eq!(r.status(), RoundStatus::Complete);
    }

    #[test]
    fn lost_site_closes_the_round_with_quorum() {
        let mut r = RoundState::new(3, 0, [0, 1, 2], 2);
        counted(&mut r, 0, 3);
        counted(&mut r, 2, 3);
        r.on_site_dropped(1);
        assert_eq!(r.status(), RoundStatus::Complete);
        assert_eq!(r.dropped().iter().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(r.on_update(1, 3), UpdateVerdict::NotParticipant, "a dropped site's late update is refused");
    }

    #[test]
    fn a_site_rejoining_mid_round_is_awaited_again() {
        let mut r = RoundState::new(2, 0, [0, 1], 1);
        counted(&mut r, 0, 2);
        r.on_site_dropped(1);
        assert_eq!(r.status(), RoundStatus::Complete);
        assert!(r.add_participant(1));
        assert_eq!(r.status(), RoundStatus::Waiting, "the rejoined site is expected again");
        assert_eq!(r.on_update(1, 2), UpdateVerdict::Accept);
        assert!(!r.add_participant(1), "a site whose update is in check is not re-added");
        assert!(!r.add_participant(0), "a site that already contributed is not re-added");
        assert!(r.add_participant(5));
        assert_eq!(r.participants().len(), 3);
    }

    #[test]
    fn without_quorum_the_round_fails() {
        let mut r = RoundState::new(1, 0, [0, 1], 2);
        counted(&mut r, 0, 1);
        r.on_site_dropped(1);
        assert_eq!(r.status(), RoundStatus::Failed { received: 1, needed: 2 });
        let mut r2 = RoundState::new(1, 0, [0, 1], 1);
        assert_eq!(r2.status(), RoundStatus::Waiting);
        r2.close();
        assert_eq!(r2.status(), RoundStatus::Failed { received: 0, needed: 1 });
    }

    #[test]
    fn stale_duplicate_and_stranger_updates_are_refused() {
        let mut r = RoundState::new(4, 1, [0, 1], 1);
        assert_eq!(r.on_update(0, 3), UpdateVerdict::WrongRound { expected: 4, got: 3 });
        assert_eq!(r.on_update(7, 4), UpdateVerdict::NotParticipant);
        assert_eq!(r.on_update(0, 4), UpdateVerdict::Accept);
        assert_eq!(r.on_update(0, 4), UpdateVerdict::Duplicate, "a second upload while the first is in check");
        r.on_checked(0, true);
        assert_eq!(r.on_update(0, 4), UpdateVerdict::Duplicate, "a second upload after the first was counted");
        r.close();
        assert_eq!(r.status(), RoundStatus::Complete);
    }

    #[test]
    fn an_update_in_check_holds_the_round_open_past_its_deadline() {
        let mut r = RoundState::new(1, 0, [0, 1, 2], 1);
        assert_eq!(r.on_update(0, 1), UpdateVerdict::Accept);
        r.close();
        assert_eq!(r.status(), RoundStatus::Waiting, "the update in hand is still being checked");
        r.on_site_dropped(0);
        assert!(r.dropped().is_empty(), "losing a site does not throw away its update in check");
        r.on_checked(0, true);
        assert_eq!(r.status(), RoundStatus::Complete);
        assert_eq!(r.received().len(), 1);
    }

    #[test]
    fn an_update_that_fails_its_check_drops_its_site() {
        let mut r = RoundState::new(1, 0, [0, 1], 1);
        assert_eq!(r.on_update(0, 1), UpdateVerdict::Accept);
        r.on_checked(0, false);
        assert_eq!(r.dropped().iter().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(r.on_update(0, 1), UpdateVerdict::NotParticipant, "no second try within the attempt");
        counted(&mut r, 1, 1);
        assert_eq!(r.status(), RoundStatus::Complete);
        r.on_checked(1, false);
        assert_eq!(r.received().len(), 1, "a check that is not pending changes nothing");
    }
}
