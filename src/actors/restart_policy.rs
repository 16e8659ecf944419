//! OTP-style restart intensity and backoff for supervised children, as pure logic.
//!
//! Why: a site or aggregator actor that crashes should come back, but one that crashes in a loop (bad config, corrupt
//! data shard, GPU gone) must not be restarted forever at full speed: that hides the fault and hammers shared
//! resources. Erlang/OTP's answer is restart *intensity*: at most R restarts within a sliding window of T seconds,
//! beyond which the supervisor gives up and escalates to its own supervisor. On top of that, each restart waits an
//! exponential backoff (`base · 2^(n−1)` for the n-th restart in the window, capped at `max`) with seeded jitter so
//! that many children failing together do not retry in lock-step.
//!
//! Kept free of clocks, timers and actors: the caller passes `now` and sleeps for the returned delay, so the policy
//! is tested with synthetic `Instant`s and reproducible jitter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Restart limits and backoff shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Most restarts allowed within the window; one more failure escalates.
    pub max_restarts: u32,
    /// Length of the sliding window in seconds.
    pub within_secs: f64,
    /// Delay before the first restart in a window.
    pub base_backoff_ms: u64,
    /// Cap on the un-jittered delay.
    pub max_backoff_ms: u64,
    /// Relative jitter in [0, 1]: the delay is multiplied by a factor drawn uniformly from [1 − jitter, 1 + jitter], so
    /// a jittered delay can exceed `max_backoff_ms` by that fraction. Out-of-range values are clamped, NaN means 0.
    pub jitter: f64,
}

impl Default for RestartPolicy {
    /// 3 restarts in 60 s, backoff 100 ms doubling up to 5 s, ±20 % jitter.
    fn default() -> Self {
        Self { max_restarts: 3, within_secs: 60.0, base_backoff_ms: 100, max_backoff_ms: 5_000, jitter: 0.2 }
    }
}

/// What the supervisor should do about a failure.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Restart after `delay`; `attempt` is the number of failures in the current window (1-based).
    Restart { attempt: u32, delay: Duration },
    /// The restart budget is exhausted: stop the child and escalate to the parent supervisor.
    Escalate { failures_in_window: u32 },
}

/// Failure history of one supervised child.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    window: Duration,
    jitter: f64,
    failures: VecDeque<Instant>,
    restarts_total: u64,
    rng: StdRng,
}

impl RestartTracker {
    /// A tracker whose jitter sequence is determined by `seed`.
    pub fn new(policy: RestartPolicy, seed: u64) -> Self {
        let window = if policy.within_secs.is_nan() || policy.within_secs <= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(policy.within_secs).unwrap_or(Duration::MAX)
        };
        let jitter = if policy.jitter.is_finite() { policy.jitter.clamp(0.0, 1.0) } else { 0.0 };
        Self { policy, window, jitter, failures: VecDeque::new(), restarts_total: 0, rng: StdRng::seed_from_u64(seed) }
    }

    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Records a failure at `now` and decides: restart after a backoff, or escalate when this failure makes more than
    /// `max_restarts` within the last `within_secs`. Failures older than the window no longer count.
    pub fn on_failure(&mut self, now: Instant) -> Decision {
        while let Some(&oldest) = self.failures.front() {
            if now.saturating_duration_since(oldest) >= self.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.push_back(now);
        let in_window = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        if in_window > self.policy.max_restarts {
            return Decision::Escalate { failures_in_window: in_window };
        }
        self.restarts_total += 1;
        Decision::Restart { attempt: in_window, delay: self.backoff(in_window) }
    }

    /// Forgets the failure history (e.g. after the child ran healthily or an operator intervened); the lifetime
    /// restart counter is kept.
    pub fn reset(&mut self) {
        self.failures.clear();
    }

    /// Restarts granted over the tracker's lifetime (a metric counter).
    pub fn restarts_total(&self) -> u64 {
        self.restarts_total
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1);
        let factor = if exp >= 64 { u64::MAX } else { 1u64 << exp };
        let capped = self.policy.base_backoff_ms.saturating_mul(factor).min(self.policy.max_backoff_ms);
        let jitter = if self.jitter > 0.0 { self.rng.random_range(1.0 - self.jitter..=1.0 + self.jitter) } else { 1.0 };
        Duration::try_from_secs_f64(capped as f64 / 1000.0 * jitter).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> RestartPolicy {
        RestartPolicy { jitter: 0.0, ..RestartPolicy::default() }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn default_policy() {
        let p = RestartPolicy::default();
        assert_eq!(
            (p.max_restarts, p.within_secs, p.base_backoff_ms, p.max_backoff_ms, p.jitter),
            (3, 60.0, 100, 5000, 0.2)
        );
    }

    #[test]
    fn exponential_backoff_then_escalate() {
        let t0 = Instant::now();
        let mut t = RestartTracker::new(no_jitter(), 1);
        assert_eq!(t.on_failure(t0), Decision::Restart { attempt: 1, delay: Duration::from_millis(100) });
        assert_eq!(t.on_failure(t0 + secs(1.0)), Decision::Restart { attempt: 2, delay: Duration::from_millis(200) });
        assert_eq!(t.on_failure(t0 + secs(2.0)), Decision::Restart { attempt: 3, delay: Duration::from_millis(400) });
        assert_eq!(t.on_failure(t0 + secs(3.0)), Decision::Escalate { failures_in_window: 4 });
        assert_eq!(t.restarts_total(), 3);
    }

    #[test]
    fn backoff_is_capped() {
        let policy = RestartPolicy { max_restarts: 100, base_backoff_ms: 1000, max_backoff_ms: 5000, ..no_jitter() };
        let t0 = Instant::now();
        let mut t = RestartTracker::new(policy, 1);
        let delays: Vec<Duration> = (0..80)
            .map(|i| match t.on_failure(t0 + Duration::from_millis(i)) {
                Decision::Restart { delay, .. } => delay,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(&delays[..4], &[1000, 2000, 4000, 5000].map(Duration::from_millis));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        assert_eq!(delays[79], Duration::from_secs(5)); // 2^79 saturates instead of overflowing
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let t0 = Instant::now();
        let mut t = RestartTracker::new(no_jitter(), 1);
        for i in 0..3 {
            assert!(matches!(t.on_failure(t0 + secs(f64::from(i))), Decision::Restart { .. }));
        }
        // 60.5 s after the first failure it has left the window: 3 in window (1 s, 2 s, 60.5 s) → still allowed;
        // at 60.9 s the one at 1 s still counts: 4 in window.
        assert_eq!(t.on_failure(t0 + secs(60.5)), Decision::Restart { attempt: 3, delay: Duration::from_millis(400) });
        assert_eq!(t.on_failure(t0 + secs(60.9)), Decision::Escalate { failures_in_window: 4 });
        // Long quiet period: everything slid out, backoff starts over.
        assert_eq!(t.on_failure(t0 + secs(500.0)), Decision::Restart { attempt: 1, delay: Duration::from_millis(100) });
    }

    #[test]
    fn reset_forgets_history_but_not_the_counter() {
        let t0 = Instant::now();
        let mut t = RestartTracker::new(no_jitter(), 1);
        for i in 0..3 {
            t.on_failure(t0 + secs(f64::from(i)));
        }
        t.reset();
        assert_eq!(t.on_failure(t0 + secs(4.0)), Decision::Restart { attempt: 1, delay: Duration::from_millis(100) });
        assert_eq!(t.restarts_total(), 4);
    }

    #[test]
    fn zero_budget_escalates_immediately() {
        let mut t = RestartTracker::new(RestartPolicy { max_restarts: 0, ..no_jitter() }, 1);
        assert_eq!(t.on_failure(Instant::now()), Decision::Escalate { failures_in_window: 1 });
        assert_eq!(t.restarts_total(), 0);
    }

    #[test]
    fn jitter_is_bounded_and_seeded() {
        let policy = RestartPolicy { max_restarts: 1, within_secs: 1.0, jitter: 0.2, ..RestartPolicy::default() };
        let run = |seed: u64| -> Vec<Duration> {
            let t0 = Instant::now();
            let mut t = RestartTracker::new(policy.clone(), seed);
            // One failure per 2 s: always attempt 1, so every delay is 100 ms × jitter.
            (0..200)
                .map(|i| match t.on_failure(t0 + secs(2.0 * f64::from(i))) {
                    Decision::Restart { attempt: 1, delay } => delay,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        assert!(a.iter().all(|d| *d >= Duration::from_millis(80) && *d <= Duration::from_millis(120)), "{a:?}");
        assert!(a.iter().any(|d| *d < Duration::from_millis(95)) && a.iter().any(|d| *d > Duration::from_millis(105)));
    }

    #[test]
    fn nonsense_parameters_do_not_panic() {
        let policy = RestartPolicy {
            within_secs: f64::NAN,
            jitter: f64::INFINITY,
            base_backoff_ms: u64::MAX,
            ..RestartPolicy::default()
        };
        let mut t = RestartTracker::new(policy, 0);
        let now = Instant::now();
        assert_eq!(t.on_failure(now), Decision::Restart { attempt: 1, delay: Duration::from_millis(5000) });
        let policy = RestartPolicy { within_secs: f64::INFINITY, jitter: 7.0, ..RestartPolicy::default() };
        let mut t = RestartTracker::new(policy, 0);
        assert!(matches!(t.on_failure(now), Decision::Restart { delay, .. } if delay <= Duration::from_millis(200)));
    }
}
