//! Liveness of the sites as a pure tracker: which pings each site has not answered, and which sites are lost.
//!
//! Why pure: the rule ("a ping unanswered for 1.5 periods loses the site") is what chaos scenarios depend on; here it
//! is a function of timestamps, tested without actors, clocks or sockets. The actor only sends the pings and acts on
//! the sites this returns.
//!
//! The timing: pings (and checks) go out [`CHECKS_PER_PERIOD`] times per heartbeat period. The first ping a hung site
//! misses left at most ¼ period after it hung, and the check runs every ¼ period, so a hung site is declared lost at
//! most ¼ + 1.5 + ¼ = 2 periods after it stopped, while a healthy but busy site has 1.5 periods to answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Pings (and checks) per heartbeat period.
pub(super) const CHECKS_PER_PERIOD: u64 = 4;
/// A ping unanswered for this many periods loses its site.
pub(super) const ANSWER_WITHIN_PERIODS: f64 = 1.5;

/// The pings sent to one site and not answered yet, oldest first.
#[derive(Debug, Default)]
pub(super) struct Pings(VecDeque<(u64, Instant)>);

impl Pings {
    /// Ping `seq` left at `at`.
    pub(super) fn sent(&mut self, seq: u64, at: Instant) {
        self.0.push_back((seq, at));
    }

    /// The site answered ping `seq`: it and every older ping are answered. Returns when each of them was sent.
    pub(super) fn answered(&mut self, seq: u64) -> Vec<Instant> {
        let mut sent = Vec::new();
        while let Some((_, at)) = self.0.front().filter(|(s, _)| *s <= seq).copied() {
            sent.push(at);
            self.0.pop_front();
        }
        sent
    }

    /// How long the oldest unanswered ping had waited at `now`, when that is more than `limit`. (`now` may be
    /// earlier than a ping's send time — a tick judged late — and then that ping has waited 0.)
    pub(super) fn overdue(&self, now: Instant, limit: Duration) -> Option<Duration> {
        let (_, sent) = self.0.front()?;
        let waited = now.saturating_duration_since(*sent);
        (waited > limit).then_some(waited)
    }
}

/// The answer limit for a heartbeat period of `period_secs`.
pub(super) fn answer_limit(period_secs: f64) -> Duration {
    Duration::from_secs_f64(ANSWER_WITHIN_PERIODS * period_secs)
}

/// The sites whose oldest unanswered ping had waited longer than `limit` at `now`, with how long.
pub(super) fn lost_sites<'a>(
    sites: impl IntoIterator<Item = (u32, &'a Pings)>,
    now: Instant,
    limit: Duration,
) -> Vec<(u32, Duration)> {
    sites.into_iter().filter_map(|(id, p)| p.overdue(now, limit).map(|w| (id, w))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_is_lost_only_when_its_oldest_ping_waited_past_the_limit() {
        let t0 = Instant::now();
        let limit = answer_limit(1.0);
        let (mut busy, mut hung, idle) = (Pings::default(), Pings::default(), Pings::default());
        busy.sent(1, t0);
        hung.sent(1, t0);
        busy.sent(2, t0 + Duration::from_millis(250));
        hung.sent(2, t0 + Duration::from_millis(250));
        // The busy site answers ping 2 late, which answers ping 1 as well.
        assert_eq!(busy.answered(2), vec![t0, t0 + Duration::from_millis(250)]);
        let now = t0 + Duration::from_millis(1600);
        let lost = lost_sites([(0, &busy), (1, &hung), (2, &idle)], now, limit);
        assert_eq!(lost, vec![(1, Duration::from_millis(1600))]);
        // At exactly the limit the site still counts as answering in time.
        assert!(lost_sites([(1, &hung)], t0 + limit, limit).is_empty());
    }

    #[test]
    fn a_tick_judged_before_a_ping_left_blames_no_one() {
        let t0 = Instant::now();
        let mut p = Pings::default();
        p.sent(7, t0 + Duration::from_secs(5));
        assert_eq!(p.overdue(t0, Duration::ZERO), None);
        assert_eq!(p.answered(6), Vec::<Instant>::new());
        assert_eq!(p.answered(7).len(), 1);
        assert_eq!(p.overdue(t0 + Duration::from_secs(60), Duration::ZERO), None);
    }
}
