//! `/pulse`: a round trip through an actor's mailbox, timed.
//!
//! Why: every other route reads shared handles, so it keeps answering while the actor behind it is stuck — right for
//! liveness probes and scrapes, blind to a mailbox that does not move. `/pulse` asks the actor itself, with a bounded
//! wait, so an operator (or a test) sees how quickly the server actor answers while it works: the measure of "heavy
//! work never runs on the mailbox". It is deliberately not a Kubernetes probe: a slow answer is a symptom to look
//! at, not a reason to kill the pod.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest `/pulse` waits for the actor before it answers 503.
pub const PULSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the actor says when asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PulseReply {
    /// The round the actor is in (the next one between rounds).
    pub round: u64,
    /// Updates arrived and still being decoded, validated and folded off the actor.
    pub updates_in_check: usize,
    /// Whether a round's aggregation is running off the actor now.
    pub aggregating: bool,
}

/// What `/pulse` serves: the actor's reply and how long the round trip took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PulseAnswer {
    #[serde(flatten)]
    pub reply: PulseReply,
    /// Milliseconds from asking to the answer, measured by the HTTP handler.
    pub answered_ms: f64,
}

/// Why the actor gave no pulse.
#[derive(Debug, Error, PartialEq)]
pub enum PulseError {
    #[error("no actor in this process answers /pulse (only the server does)")]
    NoActor,
    #[error("the actor is gone (its mailbox is closed)")]
    Gone,
    #[error("the actor did not answer within {0:?}: its mailbox is blocked or far behind")]
    Timeout(Duration),
}

/// The future an installed probe returns: the actor's reply, `None` when it cannot be asked any more.
pub type PulseFuture = Pin<Box<dyn Future<Output = Option<PulseReply>> + Send>>;
type Probe = Arc<dyn Fn() -> PulseFuture + Send + Sync>;

/// Shared handle behind `/pulse`: the actor installs how to ask it once it runs.
#[derive(Clone, Default)]
pub struct Pulse {
    probe: Arc<RwLock<Option<Probe>>>,
}

impl std::fmt::Debug for Pulse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let installed = self.probe.read().map(|p| p.is_some()).unwrap_or(false);
        f.debug_struct("Pulse").field("installed", &installed).finish()
    }
}

impl Pulse {
    /// Installs (or replaces) the way to ask the actor.
    pub fn install(&self, probe: impl Fn() -> PulseFuture + Send + Sync + 'static) {
        *self.probe.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(probe));
    }

    /// Asks the actor and times the answer, waiting at most `timeout`.
    pub async fn ask(&self, timeout: Duration) -> Result<PulseAnswer, PulseError> {
        let probe = self.probe.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or(PulseError::NoActor)?;
        let asked = Instant::now();
        match tokio::time::timeout(timeout, probe()).await {
            Ok(Some(reply)) => Ok(PulseAnswer { reply, answered_ms: asked.elapsed().as_secs_f64() * 1e3 }),
            Ok(None) => Err(PulseError::Gone),
            Err(_) => Err(PulseError::Timeout(timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn asks_the_installed_probe_and_bounds_the_wait() {
        let pulse = Pulse::default();
        assert_eq!(pulse.ask(Duration::from_millis(50)).await, Err(PulseError::NoActor));
        pulse.install(|| Box::pin(async { Some(PulseReply { round: 3, updates_in_check: 2, aggregating: false }) }));
        let answer = pulse.ask(Duration::from_millis(500)).await.unwrap();
        assert_eq!(answer.reply.round, 3);
        assert!(answer.answered_ms >= 0.0 && answer.answered_ms < 500.0);
        pulse.install(|| Box::pin(async { None }));
        assert_eq!(pulse.ask(Duration::from_millis(50)).await, Err(PulseError::Gone));
        pulse.install(|| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                None
            })
        });
        let slow = Duration::from_millis(30);
        assert_eq!(pulse.ask(slow).await, Err(PulseError::Timeout(slow)));
    }
}
