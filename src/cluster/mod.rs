//! Everything about the network lives behind this module: starting a ractor_cluster node, connecting to a peer,
//! and turning node-session callbacks into messages for an actor. Roles never touch ractor_cluster directly, so a
//! different transport (a bulk data plane beside the control connection, mTLS, Kubernetes discovery) changes this
//! module only.
//!
//! Two facts from measuring ractor_cluster 0.16 shape this code (see ../shared/notes/ractor-cluster.md):
//! the default 16 MiB inbound frame limit silently kills a connection that carries real weights, so every node sets
//! its own limit; and `client_connect` returns before authentication finishes, so callers wait for the `Ready`
//! event rather than treating a connected socket as a joined peer.
//!
//! With [`Security::Mtls`], every session is mutually authenticated TLS ([`tls`]) and ractor_cluster's cookie stays
//! as a second factor. ractor_cluster never ties a certificate to a node name, so this module does: our own TLS
//! listener labels each session with the certificate's identity, a guard kills any session whose claimed node
//! name differs from it as soon as it authenticates, and the server admits a site only if its session's
//! certificate names that site.

pub mod bulk;
pub mod certs;
pub mod ports;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage};
use thiserror::Error;
use tokio::task::JoinHandle;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cannot start the cluster node `{name}` on {addr}: {message}")]
    Start { name: String, addr: String, message: String },
    #[error("cannot resolve {addr:?}: {message}")]
    Resolve { addr: String, message: String },
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl ClusterError {
    /// The certificate refusal this error is, if it is one (a configuration error, not a network one).
    pub fn certificate_refusal(&self) -> Option<&tls::CertRefusal> {
        match self {
            ClusterError::Tls(e) => e.certificate_refusal(),
            _ => None,
        }
    }
}

/// How nodes authenticate each other.
#[derive(Clone)]
pub enum Security {
    /// Cookie only, plaintext TCP (development on one machine).
    Plain,
    /// Mutual TLS against a CA, identity bound to the certificate, plus the cookie.
    Mtls(std::sync::Arc<tls::TlsMaterial>),
}

impl Security {
    /// `Plain` without a certificate directory; otherwise this node's material from `dir`.
    pub fn from_dir(dir: Option<&Path>, node_name: &str) -> Result<Self, ClusterError> {
        match dir {
            None => Ok(Security::Plain),
            Some(d) => Ok(Security::Mtls(std::sync::Arc::new(tls::TlsMaterial::load(d, node_name)?))),
        }
    }

    pub fn is_mtls(&self) -> bool {
        matches!(self, Security::Mtls(_))
    }
}

/// A running cluster node of this process.
pub struct Node {
    pub server: ActorRef<NodeServerMessage>,
    pub name: String,
    pub security: Security,
    handle: JoinHandle<()>,
    listener: Option<tls::TlsListener>,
}

impl Node {
    /// Stops the node server (and with it every session); waits until it is gone.
    pub async fn shutdown(mut self) {
        if let Some(l) = self.listener.take() {
            l.shutdown().await;
        }
        self.server.stop(None);
        let _ = self.handle.await;
    }

    /// TLS handshakes refused so far (foreign CA, no certificate, plaintext); 0 without mTLS.
    pub fn refused_handshakes(&self) -> u64 {
        self.listener.as_ref().map(|l| l.refused()).unwrap_or(0)
    }
}

/// Resolves `host:port` to one socket address (IPv4 preferred, as the bridges in our test clusters are IPv4).
pub fn resolve(addr: &str) -> Result<SocketAddr, ClusterError> {
    let all: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| ClusterError::Resolve { addr: addr.to_string(), message: e.to_string() })?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or_else(|| all.first())
        .copied()
        .ok_or_else(|| ClusterError::Resolve { addr: addr.to_string(), message: "no address".into() })
}

/// Starts this process's node. `listen` is where peers dial in (port 0 picks a free port).
///
/// With mTLS, ractor_cluster's own listener (which cannot be switched off) is moved to an ephemeral loopback port
/// and also demands client certificates, while our TLS listener serves `listen`; a guard refuses sessions whose
/// certificate identity differs from the node name they claim.
pub async fn start_node(
    name: &str,
    listen: SocketAddr,
    cookie: String,
    max_frame_bytes: u64,
    security: Security,
) -> Result<Node, ClusterError> {
    let start_err = |addr: SocketAddr, message: String| ClusterError::Start {
        name: name.to_string(),
        addr: addr.to_string(),
        message,
    };
    let (own_listen, encryption) = match &security {
        Security::Plain => (listen, None),
        Security::Mtls(m) => {
            (SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), Some(IncomingEncryptionMode::Tls(m.acceptor()?)))
        }
    };
    let server = NodeServer::new(own_listen.port(), cookie, name.to_string(), hostname(), encryption, None)
        .with_listen_addr(own_listen.ip())
        .with_max_inbound_frame_size(max_frame_bytes);
    let (server, handle) = Actor::spawn(None, server, ()).await.map_err(|e| start_err(own_listen, e.to_string()))?;
    let listener = match &security {
        Security::Plain => None,
        Security::Mtls(m) => {
            subscribe_raw(&server, "histofed-identity-guard", Box::new(IdentityGuard));
            // Sites only dial out; the server (listen port != 0) serves mTLS on its address.
            if listen.port() != 0 {
                Some(tls::listen_tls(server.clone(), listen, m.acceptor()?).await?)
            } else {
                None
            }
        }
    };
    Ok(Node { server, name: name.to_string(), security, handle, listener })
}

/// Opens a session to the node at `addr` (over mTLS when the node uses it, expecting the server's identity).
/// Success means the connection is open; the peer has joined only once a [`NodeEvent::Ready`] arrives. Over mTLS it
/// waits for the session's first read, where a server that refuses this node's certificate says so (TLS 1.3), and
/// reports that refusal as an error like one found during the handshake.
pub async fn connect(
    node: &ActorRef<NodeServerMessage>,
    security: &Security,
    addr: SocketAddr,
) -> Result<(), ClusterError> {
    match security {
        Security::Plain => ractor_cluster::client_connect(node, addr)
            .await
            .map_err(|e| ClusterError::Connect { addr: addr.to_string(), message: e.to_string() }),
        Security::Mtls(m) => {
            let verdict = tls::connect_tls(node, addr, m.connector()?, crate::cluster::certs::SERVER_NAME).await?;
            match verdict.refusal(tls::HANDSHAKE_TIMEOUT).await {
                Some(refusal) => Err(tls::TlsError::Certificate { peer: addr, refusal }.into()),
                None => Ok(()),
            }
        }
    }
}

/// Certificate refusals in a row after which a dialling node stops: a certificate refused by either side is a
/// configuration error, not a network blip. A few attempts ride out a server that is being restarted with new
/// material.
pub const CERT_REFUSALS_TO_GIVE_UP: u32 = 3;

/// What a dialling node does after one attempt ([`Dialer::dial`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dial {
    /// The connection is open; the peer has joined once the session is ready.
    Opened,
    /// Try again after this delay.
    RetryIn(std::time::Duration),
    /// Stop, with this reason: the certificate was refused [`CERT_REFUSALS_TO_GIVE_UP`] times in a row.
    GiveUp(String),
}

/// A node that keeps dialling the server (a site, a role node): its backoff, the certificate refusals in a row, and
/// whether an attempt is already scheduled.
#[derive(Debug, Default)]
pub struct Dialer {
    failures: u32,
    cert_refusals: u32,
    scheduled: bool,
}

impl Dialer {
    /// The session is ready: backoff and refusals start over.
    pub fn ready(&mut self) {
        self.failures = 0;
        self.cert_refusals = 0;
    }

    /// Whether the caller should schedule the next attempt: `false` when one is scheduled already (a refusal seen
    /// after the handshake both fails the attempt and drops the session, and both want to try again).
    pub fn schedule(&mut self) -> bool {
        !std::mem::replace(&mut self.scheduled, true)
    }

    /// The scheduled attempt is due: call it first thing when the caller's connect message arrives.
    pub fn due(&mut self) {
        self.scheduled = false;
    }

    /// One attempt. A failure waits `base` doubled per failure in a row, at most 8×. A refused certificate is
    /// logged at error with what to check, and after [`CERT_REFUSALS_TO_GIVE_UP`] in a row the node gives up.
    pub async fn dial(
        &mut self,
        node: &ActorRef<NodeServerMessage>,
        security: &Security,
        addr: SocketAddr,
        base: std::time::Duration,
    ) -> Dial {
        let Err(e) = connect(node, security, addr).await else { return Dial::Opened };
        self.failures += 1;
        let delay = base * 2u32.pow(self.failures.min(3));
        let Some(refusal) = e.certificate_refusal() else {
            self.cert_refusals = 0;
            tracing::info!(error = %e, retry_in = ?delay, "server not reachable yet");
            return Dial::RetryIn(delay);
        };
        self.cert_refusals += 1;
        let check = match security {
            Security::Mtls(m) => refusal.advice(m),
            Security::Plain => String::new(),
        };
        tracing::error!(
            error = %e,
            %check,
            attempt = self.cert_refusals,
            of = CERT_REFUSALS_TO_GIVE_UP,
            "TLS certificate refused: a configuration error, not a network one"
        );
        if self.cert_refusals >= CERT_REFUSALS_TO_GIVE_UP {
            Dial::GiveUp(format!("{e}; {check} (refused {} times in a row; giving up)", self.cert_refusals))
        } else {
            Dial::RetryIn(delay)
        }
    }
}

/// The certificate-bound node name of the session with `node_id`, if that session came through mTLS and its
/// claimed name matches its certificate.
pub async fn verified_node(node: &ActorRef<NodeServerMessage>, node_id: u64) -> Option<String> {
    let sessions = ractor::call!(node, NodeServerMessage::GetSessions).ok()?;
    let ses = sessions.get(&node_id)?;
    let claimed = ses.peer_name.as_ref()?.name.clone();
    tls::identity_matches(&claimed, &ses.peer_addr).then(|| tls::claimed_node(&claimed).to_string())
}

/// Kills any session whose claimed node name is not the identity its certificate proved, as soon as it
/// authenticates. The kill is asynchronous (ractor_cluster calls subscriptions from its node server while the session
/// goes on with its state exchange), so membership does not rely on it alone: the server admits a site only when
/// [`verified_node`] says its session's certificate names that site.
struct IdentityGuard;

impl NodeEventSubscription for IdentityGuard {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}
    fn node_session_disconnected(&self, _ses: NodeServerSessionInformation) {}
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let claimed = ses.peer_name.as_ref().map(|n| n.name.clone()).unwrap_or_default();
        if !tls::identity_matches(&claimed, &ses.peer_addr) {
            tracing::warn!(
                claimed = %claimed,
                certificate = tls::identity_from_label(&ses.peer_addr).unwrap_or("none"),
                peer = %ses.peer_addr,
                "refusing a node whose certificate does not match the name it claims"
            );
            ses.actor.stop(Some("identity mismatch".into()));
        }
    }
}

fn subscribe_raw(node: &ActorRef<NodeServerMessage>, id: &str, subscription: Box<dyn NodeEventSubscription>) {
    let _ = node.cast(NodeServerMessage::SubscribeToEvents { id: id.to_string(), subscription });
}

/// A node-session event, reduced to what roles care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    Ready { peer: String, addr: String },
    Disconnected { peer: String, addr: String },
}

struct Forward<F: Fn(NodeEvent) + Send + 'static>(F);

fn peer_of(ses: &NodeServerSessionInformation) -> (String, String) {
    (ses.peer_name.as_ref().map(|n| n.name.clone()).unwrap_or_default(), ses.peer_addr.clone())
}

impl<F: Fn(NodeEvent) + Send + 'static> NodeEventSubscription for Forward<F> {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}
    fn node_session_authenticated(&self, _ses: NodeServerSessionInformation) {}
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let (peer, addr) = peer_of(&ses);
        (self.0)(NodeEvent::Ready { peer, addr });
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let (peer, addr) = peer_of(&ses);
        (self.0)(NodeEvent::Disconnected { peer, addr });
    }
}

/// Calls `f` on every ready/disconnected session of `node`. The callback runs inside the node server: keep it to a
/// message send.
pub fn subscribe(node: &ActorRef<NodeServerMessage>, id: &str, f: impl Fn(NodeEvent) + Send + 'static) {
    subscribe_raw(node, id, Box::new(Forward(f)));
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string())
}

/// The listen address for a node that only dials out (sites): an ephemeral port on the given interface.
pub fn ephemeral(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_certificate_gives_up_after_a_few_attempts_a_closed_port_does_not() {
        let (good, foreign) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        crate::cluster::certs::issue_all(good.path(), 1).unwrap();
        crate::cluster::certs::issue_all(foreign.path(), 1).unwrap();
        let port = ports::free_port_pair().unwrap();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let security = Security::from_dir(Some(good.path()), "server").unwrap();
        let server = start_node("server", addr, "cookie".into(), 1 << 20, security).await.unwrap();
        let security = Security::from_dir(Some(foreign.path()), "site-0").unwrap();
        let site = start_node("site-0", ephemeral(addr.ip()), "cookie".into(), 1 << 20, security).await.unwrap();
        let base = std::time::Duration::from_millis(1);

        let mut dialer = Dialer::default();
        let mut outcomes = Vec::new();
        for _ in 0..CERT_REFUSALS_TO_GIVE_UP {
            outcomes.push(dialer.dial(&site.server, &site.security, addr, base).await);
        }
        assert!(matches!(outcomes[..2], [Dial::RetryIn(_), Dial::RetryIn(_)]), "{outcomes:?}");
        let Some(Dial::GiveUp(reason)) = outcomes.last() else { panic!("{outcomes:?}") };
        assert!(reason.contains("refused the peer's certificate") && reason.contains("ca.pem"), "{reason}");

        // A port nobody listens on is a network problem: retried for ever, and it resets the refusals.
        let closed = SocketAddr::new(addr.ip(), ports::free_port_pair().unwrap());
        let mut dialer = Dialer::default();
        for _ in 0..CERT_REFUSALS_TO_GIVE_UP + 1 {
            assert!(matches!(dialer.dial(&site.server, &site.security, closed, base).await, Dial::RetryIn(_)));
        }

        // One scheduled attempt at a time, however many reasons to try again arrive before it is due.
        assert!(dialer.schedule());
        assert!(!dialer.schedule());
        dialer.due();
        assert!(dialer.schedule());
        site.shutdown().await;
        server.shutdown().await;
    }

    #[test]
    fn resolves_loopback_and_rejects_garbage() {
        assert_eq!(resolve("127.0.0.1:7700").unwrap().port(), 7700);
        assert!(resolve("localhost:7701").unwrap().ip().is_loopback());
        assert!(resolve("no port here").is_err());
    }
}
