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
/// Success means the connection is open; the peer has joined only once a [`NodeEvent::Ready`] arrives.
pub async fn connect(
    node: &ActorRef<NodeServerMessage>,
    security: &Security,
    addr: SocketAddr,
) -> Result<(), ClusterError> {
    match security {
        Security::Plain => ractor_cluster::client_connect(node, addr)
            .await
            .map_err(|e| ClusterError::Connect { addr: addr.to_string(), message: e.to_string() }),
        Security::Mtls(m) => Ok(tls::connect_tls(node, addr, m.connector()?, crate::certs::SERVER_NAME).await?),
    }
}

/// One attempt of a node that keeps dialling the server (a site, a role node): on failure it counts the failure in
/// `failures` and returns when to try again — `base` doubled per consecutive failure, at most 8×. The caller resets
/// `failures` once the session is ready.
pub async fn dial(
    node: &ActorRef<NodeServerMessage>,
    security: &Security,
    addr: SocketAddr,
    base: std::time::Duration,
    failures: &mut u32,
) -> Option<std::time::Duration> {
    let e = connect(node, security, addr).await.err()?;
    *failures += 1;
    let delay = base * 2u32.pow((*failures).min(3));
    tracing::info!(error = %e, retry_in = ?delay, "server not reachable yet");
    Some(delay)
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

    #[test]
    fn resolves_loopback_and_rejects_garbage() {
        assert_eq!(resolve("127.0.0.1:7700").unwrap().port(), 7700);
        assert!(resolve("localhost:7701").unwrap().ip().is_loopback());
        assert!(resolve("no port here").is_err());
    }
}
