//! Sending one upload (an update, or a masked input) on the bulk plane, for both of the site's upload paths.
//!
//! Why apart: a plain update and a secure round's masked input are prepared differently (one is kept on disk,
//! the other never is), but the transfer itself — under the admission's token, its bytes counted, a fenced refusal
//! turned into the actor's `FencedTransfer` — must be the same, so it is written once.

use std::net::SocketAddr;

use ractor::ActorRef;

use super::SiteState;
use crate::actors::messages::SiteMsg;
use crate::cluster::bulk::{self, ClientOpts};
use crate::observability::Metrics;

/// What an upload needs from the admission it goes under, cloned into the task that sends it.
pub(super) struct Uploader {
    me: ActorRef<SiteMsg>,
    opts: ClientOpts,
    addr: SocketAddr,
    site_id: u32,
    token: u64,
    metrics: Metrics,
}

impl Uploader {
    /// The current admission's uploader and generation; `None` before admission (no token or bulk endpoint yet).
    pub(super) fn of(st: &SiteState, me: &ActorRef<SiteMsg>) -> Option<(Self, u64)> {
        let (Some(token), Some(port), Some(generation)) = (st.token, st.bulk_port, st.generation) else {
            return None;
        };
        let up = Uploader {
            me: me.clone(),
            opts: st.args.bulk.clone(),
            addr: st.bulk_addr(port),
            site_id: st.args.site_id,
            token,
            metrics: st.args.metrics.clone(),
        };
        Some((up, generation))
    }

    /// Sends `meta` and `body` as the upload of `round`: its bytes counted once delivered, the actor told when the
    /// bulk plane refused it as fenced.
    pub(super) async fn send(&self, round: u64, meta: &[u8], body: &[u8]) -> Result<(), String> {
        let sent = bulk::upload(self.addr, &self.opts, self.site_id, self.token, round, meta, body).await;
        if sent.is_ok() {
            self.metrics.bytes_sent((meta.len() + body.len()) as u64);
        }
        if let Err(e @ bulk::BulkError::Fenced { .. }) = &sent {
            let _ = self.me.cast(SiteMsg::FencedTransfer { reason: e.to_string() });
        }
        sent.map_err(|e| e.to_string())
    }
}
