//! The client side of the server connection, one implementation for every node that dials the server (a site, a
//! role node): dialling with backoff and certificate-refusal give-up, the session's ready and lost events, finding
//! the server actor in its process group (and noticing it leave), and sending it frames.
//!
//! Why a value and not an actor: it is state plus decisions. Each host actor keeps a `ServerLink`, feeds it the
//! events it receives and acts on what it returns (schedule the next attempt, say hello, give up); the hello and
//! what follows it are the host's own business.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::{ActorCell, ActorRef};
use ractor_cluster::NodeServerMessage;

use super::messages::{ServerMsg, ToServer, SERVER_GROUP};
use crate::cluster::{Dial, Dialer, Security};

/// What the host should do after a connect attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Connect {
    /// Nothing: connected already, a session is opening, or an attempt is scheduled already.
    Wait,
    /// Send the connect message again after this delay.
    RetryIn(Duration),
    /// Stop the node: the server refused our certificate too many times in a row.
    GiveUp(String),
}

/// Where the server is and how to reach it, and what this node knows about the connection.
pub(crate) struct ServerLink {
    node: ActorRef<NodeServerMessage>,
    security: Security,
    addr: SocketAddr,
    reconnect: Duration,
    dialer: Dialer,
    connected: bool,
    server: Option<ActorRef<ServerMsg>>,
}

impl ServerLink {
    pub(crate) fn new(
        node: ActorRef<NodeServerMessage>,
        security: Security,
        addr: SocketAddr,
        reconnect: Duration,
    ) -> Self {
        ServerLink { node, security, addr, reconnect, dialer: Dialer::default(), connected: false, server: None }
    }

    /// The host's connect message arrived: dial unless a session is up.
    pub(crate) async fn connect(&mut self) -> Connect {
        self.dialer.due();
        if self.connected {
            return Connect::Wait;
        }
        match self.dialer.dial(&self.node, &self.security, self.addr, self.reconnect).await {
            Dial::Opened => Connect::Wait,
            Dial::RetryIn(delay) if self.dialer.schedule() => Connect::RetryIn(delay),
            Dial::RetryIn(_) => Connect::Wait,
            Dial::GiveUp(reason) => Connect::GiveUp(reason),
        }
    }

    /// The session to the server is ready: backoff starts over. Returns whether a (new) server actor was found,
    /// in which case the host says hello.
    pub(crate) fn ready(&mut self) -> bool {
        self.connected = true;
        self.dialer.ready();
        self.find_server()
    }

    /// The session dropped: forget the server. Returns the delay after which to connect again, unless an attempt
    /// is scheduled already.
    pub(crate) fn lost(&mut self) -> Option<Duration> {
        self.connected = false;
        self.server = None;
        self.dialer.schedule().then_some(self.reconnect)
    }

    /// Adopts the remote server actor if one (other than the known one) is in the server group; `true` when it is
    /// new, and the host should say hello.
    pub(crate) fn find_server(&mut self) -> bool {
        match new_remote_server(self.server.as_ref()) {
            Some(server) => {
                self.server = Some(server);
                true
            }
            None => false,
        }
    }

    /// Actors left the server group: forget the server if it was one of them.
    pub(crate) fn left(&mut self, cells: &[ActorCell]) {
        if cells.iter().any(|c| Some(c.get_id()) == self.server.as_ref().map(|s| s.get_id())) {
            self.server = None;
        }
    }

    /// Sends `frame` to the server (logged when there is none or it cannot be reached).
    pub(crate) fn send(&self, frame: ToServer) {
        match &self.server {
            Some(server) => {
                if let Err(e) = server.cast(ServerMsg::FromSite(Ok(frame))) {
                    tracing::warn!(error = %e, "cannot reach the server");
                }
            }
            None => tracing::warn!("no server to send to"),
        }
    }
}

/// The server actor across the cluster (a member of the server group on another node), when it is not `known`:
/// a server just found, or a restarted one, which the caller then greets.
fn new_remote_server(known: Option<&ractor::ActorRef<ServerMsg>>) -> Option<ractor::ActorRef<ServerMsg>> {
    let cell = ractor::pg::get_members(&SERVER_GROUP.to_string()).into_iter().find(|c| !c.get_id().is_local())?;
    (known.map(|s| s.get_id()) != Some(cell.get_id())).then(|| cell.into())
}
