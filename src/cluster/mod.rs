//! Everything about the network lives behind this module: starting a ractor_cluster node, connecting to a peer,
//! and turning node-session callbacks into messages for an actor. Roles never touch ractor_cluster directly, so a
//! different transport (a bulk data plane beside the control connection, mTLS, Kubernetes discovery) changes this
//! module only.
//!
//! Two facts from measuring ractor_cluster 0.16 shape this code (see ../shared/notes/ractor-cluster.md):
//! the default 16 MiB inbound frame limit silently kills a connection that carries real weights, so every node sets
//! its own limit; and `client_connect` returns before authentication finishes, so callers wait for the `Ready`
//! event rather than treating a connected socket as a joined peer.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
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
}

/// A running cluster node of this process.
pub struct Node {
    pub server: ActorRef<NodeServerMessage>,
    pub name: String,
    handle: JoinHandle<()>,
}

impl Node {
    /// Stops the node server (and with it every session); waits until it is gone.
    pub async fn shutdown(self) {
        self.server.stop(None);
        let _ = self.handle.await;
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

/// Starts this process's node, listening on `listen` (port 0 picks a free port).
pub async fn start_node(
    name: &str,
    listen: SocketAddr,
    cookie: String,
    max_frame_bytes: u64,
) -> Result<Node, ClusterError> {
    let server = NodeServer::new(listen.port(), cookie, name.to_string(), hostname(), None, None)
        .with_listen_addr(listen.ip())
        .with_max_inbound_frame_size(max_frame_bytes);
    let (server, handle) = Actor::spawn(None, server, ()).await.map_err(|e| ClusterError::Start {
        name: name.to_string(),
        addr: listen.to_string(),
        message: e.to_string(),
    })?;
    Ok(Node { server, name: name.to_string(), handle })
}

/// Opens a session to the node at `addr`. Success means the socket is open; the peer has joined only once a
/// [`NodeEvent::Ready`] arrives.
pub async fn connect(node: &ActorRef<NodeServerMessage>, addr: SocketAddr) -> Result<(), ClusterError> {
    ractor_cluster::client_connect(node, addr)
        .await
        .map_err(|e| ClusterError::Connect { addr: addr.to_string(), message: e.to_string() })
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
    let _ = node.cast(NodeServerMessage::SubscribeToEvents { id: id.to_string(), subscription: Box::new(Forward(f)) });
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
