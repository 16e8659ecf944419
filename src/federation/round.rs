//! The bookkeeping of one round, apart from any actor: who was asked, who answered, whether quorum is reached and
//! whether the round can close. The server actor only feeds it events (update arrived, site lost, deadline) and acts
//! on what it answers, so every quorum rule is unit-testable without a network.

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

    /// Decides whether an update from `site` for `round` may be folded in; records it if so.
    pub fn on_update(&mut self, site: u32, round: u64) -> UpdateVerdict {
        if round != self.round {
            return UpdateVerdict::WrongRound { expected: self.round, got: round };
        }
        if !self.participants.contains(&site) || self.dropped.contains(&site) {
            return UpdateVerdict::NotParticipant;
        }
        if !self.received.insert(site) {
            return UpdateVerdict::Duplicate;
        }
        UpdateVerdict::Accept
    }

    /// Adds a site that (re)joined while the round is open; false if it already contributed.
    pub fn add_participant(&mut self, site: u32) -> bool {
        if self.received.contains(&site) {
            return false;
        }
        self.dropped.remove(&site);
        self.participants.insert(site);
        true
    }

    /// A participant was lost (disconnected, hung) or said it cannot contribute.
    pub fn on_site_dropped(&mut self, site: u32) {
        if self.participants.contains(&site) && !self.received.contains(&site) {
            self.dropped.insert(site);
        }
    }

    fn outstanding(&self) -> usize {
        self.participants.len() - self.received.len() - self.dropped.len()
    }

    /// The status without a deadline having passed.
    pub fn status(&self) -> RoundStatus {
        if self.outstanding() > 0 {
            RoundStatus::Waiting
        } else if self.has_quorum() {
            RoundStatus::Complete
        } else {
            RoundStatus::Failed { received: self.received.len(), needed: self.min_sites }
        }
    }

    /// The status once the deadline has passed: whoever answered is all there will be.
    pub fn status_at_deadline(&self) -> RoundStatus {
        if self.has_quorum() {
            RoundStatus::Complete
        } else {
            RoundStatus::Failed { received: self.received.len(), needed: self.min_sites }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_when_everyone_answers() {
        let mut r = RoundState::new(1, 0, [0, 1, 2], 2);
        assert_eq!(r.on_update(0, 1), UpdateVerdict::Accept);
        assert_eq!(r.status(), RoundStatus::Waiting);
        assert_eq!(r.on_update(1, 1), UpdateVerdict::Accept);
        assert_eq!(r.status(), RoundStatus::Waiting, "site 2 is still expected");
        assert_eq!(r.on_update(2, 1), UpdateVerdict::Accept);
        assert_eq!(r.status(), RoundStatus::Complete);
    }

    #[test]
    fn lost_site_closes_the_round_with_quorum() {
        let mut r = RoundState::new(3, 0, [0, 1, 2], 2);
        r.on_update(0, 3);
        r.on_update(2, 3);
        r.on_site_dropped(1);
        assert_eq!(r.status(), RoundStatus::Complete);
        assert_eq!(r.dropped().iter().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(r.on_update(1, 3), UpdateVerdict::NotParticipant, "a dropped site's late update is refused");
    }

    #[test]
    fn a_site_rejoining_mid_round_is_awaited_again() {
        let mut r = RoundState::new(2, 0, [0, 1], 1);
        r.on_update(0, 2);
        r.on_site_dropped(1);
        assert_eq!(r.status(), RoundStatus::Complete);
        assert!(r.add_participant(1));
        assert_eq!(r.status(), RoundStatus::Waiting, "the rejoined site is expected again");
        assert_eq!(r.on_update(1, 2), UpdateVerdict::Accept);
        assert!(!r.add_participant(0), "a site that already contributed is not re-added");
        assert!(r.add_participant(5));
        assert_eq!(r.participants().len(), 3);
    }

    #[test]
    fn without_quorum_the_round_fails() {
        let mut r = RoundState::new(1, 0, [0, 1], 2);
        r.on_update(0, 1);
        r.on_site_dropped(1);
        assert_eq!(r.status(), RoundStatus::Failed { received: 1, needed: 2 });
        let r2 = RoundState::new(1, 0, [0, 1], 1);
        assert_eq!(r2.status_at_deadline(), RoundStatus::Failed { received: 0, needed: 1 });
    }

    #[test]
    fn stale_duplicate_and_stranger_updates_are_refused() {
        let mut r = RoundState::new(4, 1, [0, 1], 1);
        assert_eq!(r.on_update(0, 3), UpdateVerdict::WrongRound { expected: 4, got: 3 });
        assert_eq!(r.on_update(7, 4), UpdateVerdict::NotParticipant);
        assert_eq!(r.on_update(0, 4), UpdateVerdict::Accept);
        assert_eq!(r.on_update(0, 4), UpdateVerdict::Duplicate);
        assert_eq!(r.status_at_deadline(), RoundStatus::Complete);
    }
}
