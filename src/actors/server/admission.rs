//! Admission of a site: the checks a `Hello` must pass before the site joins the federation, each failure a typed
//! [`Refusal`] that the caller turns into one refusal (log, event, metric, `ToSite::Refused`).
//!
//! Why typed: the reason is shown to the site and recorded as an event, and the kind is what a metric or a test
//! matches on; a refusal decided here is never re-parsed from its text.

use std::fmt;

use ractor::ActorRef;

use super::state::ServerState;
use crate::actors::messages::{SiteMsg, ToSite, PROTOCOL_VERSION};
use crate::observability::SiteEvent;

/// Why a site's hello is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The site speaks another protocol version.
    Protocol { spoken: u32 },
    /// With mutual TLS: the session's certificate is not the one of the site it claims to be.
    Certificate { claimed: u32, proven: Option<String> },
    /// The site id is outside the configured `0..sites`.
    OutOfRange { site: u32, sites: u32 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Protocol { spoken } => {
                write!(f, "protocol version {spoken} is not supported (server speaks {PROTOCOL_VERSION})")
            }
            Refusal::Certificate { claimed, proven } => {
                write!(f, "claims site {claimed} but its certificate is for {}", proven.as_deref().unwrap_or("nobody"))
            }
            Refusal::OutOfRange { site, sites } => write!(f, "site id {site} is outside 0..{sites}"),
        }
    }
}

/// What admission checks a hello against (owned, so that no borrow of the server's state is held across the
/// certificate lookup's await).
pub(super) struct HelloChecks {
    pub(super) protocol: u32,
    /// `Some(node)` with mutual TLS: this process's cluster node, which knows each session's proven certificate.
    pub(super) mtls_node: Option<ActorRef<ractor_cluster::NodeServerMessage>>,
    pub(super) sites: u32,
}

impl HelloChecks {
    pub(super) fn of(st: &ServerState) -> Self {
        HelloChecks {
            protocol: PROTOCOL_VERSION,
            mtls_node: st.mtls.then(|| st.node.clone()),
            sites: st.cfg.federation.sites,
        }
    }
}

/// The checks of a site's hello, in order: protocol version, the certificate (with mTLS), the id's range.
pub(super) async fn check_site_hello(
    adm: HelloChecks,
    actor: &ActorRef<SiteMsg>,
    protocol: u32,
    site_id: u32,
) -> Result<(), Refusal> {
    if protocol != adm.protocol {
        return Err(Refusal::Protocol { spoken: protocol });
    }
    if let Some(node) = &adm.mtls_node {
        // The certificate, not the actor name, says who this is.
        let expected = crate::cluster::certs::site_name(site_id);
        let proven = crate::cluster::verified_node(node, actor.get_id().node()).await;
        if proven.as_deref() != Some(expected.as_str()) {
            return Err(Refusal::Certificate { claimed: site_id, proven });
        }
    }
    if site_id >= adm.sites {
        return Err(Refusal::OutOfRange { site: site_id, sites: adm.sites });
    }
    Ok(())
}

/// Refuses a site: logged, an event in the report, counted, and told to the site.
pub(super) fn refuse_site(st: &mut ServerState, site_id: u32, actor: &ActorRef<SiteMsg>, refusal: &Refusal) {
    let reason = refusal.to_string();
    tracing::warn!(site_id, %reason, "refusing site");
    st.event(Some(site_id), "site-refused", reason.clone());
    st.obs.metrics.site_event(SiteEvent::Refused);
    let _ = actor.cast(SiteMsg::FromServer(Ok(ToSite::Refused { reason })));
}
