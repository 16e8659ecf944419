//! Observability for operators: Prometheus metrics, health/readiness probes and a live status document, served over
//! plain HTTP by every role.
//!
//! Why a separate HTTP port rather than the cluster link: Kubernetes probes, Prometheus scrapers and an operator's
//! `histofed status` must work without a cluster certificate and must keep answering while the actor system is busy
//! or degraded. So the server here holds only cheap shared handles ([`metrics::Metrics`], [`StatusHandle`],
//! [`Readiness`]) that the actors update in place; a scrape never sends a message to an actor and can never stall a
//! round.
//!
//! - [`metrics`]: the `histofed_*` metric set behind named methods, so actors never touch prometheus types;
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`, `/status`, `/pulse`, and the client behind `histofed status`;
//! - [`pulse`]: the one exception to "never message an actor": `/pulse` times a bounded round trip through the
//!   server actor's mailbox, to show that it keeps moving while the heavy work runs elsewhere.

pub mod http;
pub mod metrics;
pub mod pulse;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use http::{fetch_status, fetch_status_with_timeout, render_status, serve, HttpState};
pub use metrics::{Metrics, RoleReportOutcome, SiteEvent};
pub use pulse::{Pulse, PulseAnswer, PulseError, PulseReply};

/// Errors of the observability endpoint and its client. Each names the address involved, since the usual cause is a
/// wrong port or a pod that is not running.
#[derive(Debug, Error)]
pub enum ObsError {
    #[error("cannot listen for observability HTTP on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid observability address `{addr}`: {reason}")]
    InvalidAddress { addr: String, reason: String },
    #[error("cannot reach histofed at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("histofed at {addr} did not answer within {secs:.1} s")]
    Timeout { addr: String, secs: f64 },
    #[error("HTTP error talking to histofed at {addr}: {detail}")]
    Http { addr: String, detail: String },
    #[error("histofed at {addr} answered {path} with HTTP {status}: {body}")]
    Status { addr: String, path: String, status: u16, body: String },
    #[error("histofed at {addr} sent a status document that does not parse: {source}")]
    BadJson { addr: String, source: serde_json::Error },
    #[error("encoding metrics: {0}")]
    Encode(std::fmt::Error),
}

/// What `/status` shows: where the federation stands, as the server actor last recorded it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// `server` or `site` (or another role name).
    pub role: String,
    /// Last completed round (0 before the first).
    pub round: u64,
    pub rounds_configured: u64,
    /// Sites currently joined, by name.
    pub membership: Vec<String>,
    /// Sites the configuration expects, by name.
    pub expected: Vec<String>,
    /// Free-form phase, e.g. `waiting for sites`, `training`, `aggregating`, `finished`.
    pub phase: String,
    /// When this snapshot was last changed (milliseconds since the Unix epoch).
    pub updated_unix_ms: u64,
}

/// Shared, cheap-to-clone handle on the current [`StatusSnapshot`]. The owning actor changes it with
/// [`StatusHandle::update`]; the HTTP server only reads it.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle {
    inner: Arc<RwLock<StatusSnapshot>>,
}

impl StatusHandle {
    pub fn new(initial: StatusSnapshot) -> Self {
        let handle = Self { inner: Arc::new(RwLock::new(initial)) };
        handle.update(|_| {});
        handle
    }

    /// Changes the snapshot in place and stamps `updated_unix_ms`.
    pub fn update(&self, change: impl FnOnce(&mut StatusSnapshot)) {
        // A panic while holding the lock cannot leave the snapshot half-valid in a way that matters to a reader,
        // so a poisoned lock is simply taken over.
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        change(&mut guard);
        guard.updated_unix_ms = unix_ms_now();
    }

    /// A copy of the current snapshot.
    pub fn snapshot(&self) -> StatusSnapshot {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Shared readiness flag behind `/readyz`: not ready carries the reason the probe reports (e.g. `waiting for 2 of
/// 3 sites`, `resuming from checkpoint`).
#[derive(Debug, Clone)]
pub struct Readiness {
    not_ready: Arc<RwLock<Option<String>>>,
}

impl Readiness {
    /// Starts not ready, for `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self { not_ready: Arc::new(RwLock::new(Some(reason.into()))) }
    }

    pub fn set_ready(&self) {
        *self.not_ready.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready.write().unwrap_or_else(|e| e.into_inner()) = Some(reason.into());
    }

    /// `Ok(())` when ready, else the reason it is not.
    pub fn check(&self) -> Result<(), String> {
        match &*self.not_ready.read().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new("starting")
    }
}

pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_handle_stamps_updates_and_readiness_carries_reason() {
        let status = StatusHandle::new(StatusSnapshot { role: "server".into(), ..Default::default() });
        let before = status.snapshot().updated_unix_ms;
        assert!(before > 0);
        status.update(|s| s.round = 4);
        let snap = status.snapshot();
        assert_eq!((snap.role.as_str(), snap.round), ("server", 4));
        assert!(snap.updated_unix_ms >= before);

        let ready = Readiness::new("waiting for sites");
        assert_eq!(ready.check(), Err("waiting for sites".to_string()));
        let clone = ready.clone();
        clone.set_ready();
        assert_eq!(ready.check(), Ok(()));
        clone.set_not_ready("resuming");
        assert_eq!(ready.check(), Err("resuming".to_string()));
    }
}
