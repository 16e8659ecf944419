//! Node health from the API server: which nodes are Ready, and since when the others are not.
//!
//! Why: a site pod on a node that died is not recreated by its StatefulSet. The node controller marks the node
//! NotReady (or Unknown, when the kubelet stops posting) after its grace period, the pod's Ready condition turns
//! false, and after the toleration runs out the pod is evicted — but it stays Terminating until the dead kubelet
//! confirms, which it never does (Kubernetes before 1.28 has no out-of-service taint). The server needs to know how
//! long a site's node has been down before it may force-delete the pod (see `kube::remediation`), and the report
//! records the node's change as an event.
//!
//! Design: [`node_health`] reads one Node; [`NodeTracker`] folds watcher events into per-node conditions and emits
//! [`NodeChange`]s — pure, fed by `kube::watch`. "Since" is the instant this process first saw the node not
//! Ready, not the node's `lastTransitionTime`: a remote clock never shortens the wait, and a server that starts while
//! a node is already down waits the full time before it acts (conservative by construction).

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;

/// A node's Ready condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeHealth {
    /// Ready = True.
    Ready,
    /// Ready = False: the kubelet reports the node unhealthy.
    NotReady,
    /// Ready = Unknown (the node controller stopped hearing from the kubelet) or no Ready condition at all.
    Unreachable,
}

impl NodeHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeHealth::Ready => "Ready",
            NodeHealth::NotReady => "NotReady",
            NodeHealth::Unreachable => "Unreachable",
        }
    }
}

/// The health of `node` from its Ready condition.
pub fn node_health(node: &Node) -> NodeHealth {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    match ready {
        Some("True") => NodeHealth::Ready,
        Some("False") => NodeHealth::NotReady,
        _ => NodeHealth::Unreachable,
    }
}

/// A node that is not Ready, and since when this process knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeDown {
    pub health: NodeHealth,
    pub since: Instant,
}

/// A change of one node's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChange {
    /// The node left Ready (or was first seen not Ready), or went from NotReady to Unreachable (`since` unchanged).
    Down { node: String, down: NodeDown },
    /// The node is Ready again.
    Up { node: String },
    /// The Node object was deleted.
    Removed { node: String },
}

impl NodeChange {
    pub fn node(&self) -> &str {
        match self {
            NodeChange::Down { node, .. } | NodeChange::Up { node } | NodeChange::Removed { node } => node,
        }
    }
}

/// Folds `kube::runtime::watcher` events of Nodes into per-node health. A relist (`Init` … `InitDone`) is applied as
/// a whole, so nodes deleted while the watch was down are reported `Removed`.
#[derive(Debug, Default)]
pub struct NodeTracker {
    /// Every node seen, with its condition when not Ready.
    nodes: BTreeMap<String, Option<NodeDown>>,
    relist: Option<BTreeMap<String, NodeHealth>>,
}

impl NodeTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Some` when `node` is known and not Ready; `None` when it is Ready or unknown (see [`Self::knows`]).
    pub fn down(&self, node: &str) -> Option<NodeDown> {
        self.nodes.get(node).copied().flatten()
    }

    pub fn knows(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Applies one watcher event observed at `now`.
    pub fn handle(&mut self, event: ::kube::runtime::watcher::Event<Node>, now: Instant) -> Vec<NodeChange> {
        use ::kube::runtime::watcher::Event;
        let mut out = Vec::new();
        match event {
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply(node) => {
                if let (Some(buf), Some(name)) = (self.relist.as_mut(), node.metadata.name.clone()) {
                    buf.insert(name, node_health(&node));
                }
            }
            Event::InitDone => {
                if let Some(buf) = self.relist.take() {
                    let gone: Vec<String> = self.nodes.keys().filter(|n| !buf.contains_key(*n)).cloned().collect();
                    for node in gone {
                        self.nodes.remove(&node);
                        out.push(NodeChange::Removed { node });
                    }
                    for (node, health) in buf {
                        self.apply(node, health, now, &mut out);
                    }
                }
            }
            Event::Apply(node) => {
                if let Some(name) = node.metadata.name.clone() {
                    self.apply(name, node_health(&node), now, &mut out);
                }
            }
            Event::Delete(node) => {
                if let Some(name) = node.metadata.name.clone() {
                    if self.nodes.remove(&name).is_some() {
                        out.push(NodeChange::Removed { node: name });
                    }
                }
            }
        }
        out
    }

    fn apply(&mut self, node: String, health: NodeHealth, now: Instant, out: &mut Vec<NodeChange>) {
        let prev = self.nodes.get(&node).copied();
        let next = match (prev, health) {
            (_, NodeHealth::Ready) => None,
            (Some(Some(d)), h) => Some(NodeDown { health: h, since: d.since }),
            (_, h) => Some(NodeDown { health: h, since: now }),
        };
        match (prev.flatten(), next) {
            (Some(_), None) => out.push(NodeChange::Up { node: node.clone() }),
            (None, Some(down)) => out.push(NodeChange::Down { node: node.clone(), down }),
            (Some(a), Some(b)) if a.health != b.health => out.push(NodeChange::Down { node: node.clone(), down: b }),
            _ => {}
        }
        self.nodes.insert(node, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::kube::runtime::watcher::Event;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::time::Duration;

    fn node(name: &str, ready: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: None,
            status: Some(NodeStatus {
                conditions: ready
                    .map(|r| vec![NodeCondition { type_: "Ready".into(), status: r.into(), ..Default::default() }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn health_reads_the_ready_condition() {
        assert_eq!(node_health(&node("a", Some("True"))), NodeHealth::Ready);
        assert_eq!(node_health(&node("a", Some("False"))), NodeHealth::NotReady);
        assert_eq!(node_health(&node("a", Some("Unknown"))), NodeHealth::Unreachable);
        assert_eq!(node_health(&node("a", None)), NodeHealth::Unreachable, "no condition is no evidence of health");
    }

    #[test]
    fn a_node_going_down_keeps_its_first_since_until_it_is_ready_again() {
        let t0 = Instant::now();
        let mut t = NodeTracker::new();
        assert!(t.handle(Event::Apply(node("n2", Some("True"))), t0).is_empty());
        assert!(t.knows("n2") && t.down("n2").is_none());
        let later = t0 + Duration::from_secs(5);
        let ch = t.handle(Event::Apply(node("n2", Some("False"))), later);
        let first = NodeDown { health: NodeHealth::NotReady, since: later };
        assert_eq!(ch, vec![NodeChange::Down { node: "n2".into(), down: first }]);
        // Unknown later: a change of health, same since.
        let ch = t.handle(Event::Apply(node("n2", Some("Unknown"))), later + Duration::from_secs(9));
        let worse = NodeDown { health: NodeHealth::Unreachable, since: later };
        assert_eq!(ch, vec![NodeChange::Down { node: "n2".into(), down: worse }]);
        // The same status again: nothing.
        assert!(t.handle(Event::Apply(node("n2", Some("Unknown"))), later + Duration::from_secs(20)).is_empty());
        assert_eq!(t.down("n2"), Some(worse));
        let ch = t.handle(Event::Apply(node("n2", Some("True"))), later + Duration::from_secs(30));
        assert_eq!(ch, vec![NodeChange::Up { node: "n2".into() }]);
        assert_eq!(t.down("n2"), None);
        let ch = t.handle(Event::Delete(node("n2", Some("True"))), later + Duration::from_secs(31));
        assert_eq!(ch, vec![NodeChange::Removed { node: "n2".into() }]);
        assert!(!t.knows("n2"));
    }

    #[test]
    fn a_relist_reports_nodes_gone_meanwhile_and_dates_an_already_down_node_from_now() {
        let t0 = Instant::now();
        let mut t = NodeTracker::new();
        t.handle(Event::Apply(node("n1", Some("True"))), t0);
        t.handle(Event::Apply(node("old", Some("True"))), t0);
        let t1 = t0 + Duration::from_secs(3);
        assert!(t.handle(Event::Init, t1).is_empty());
        assert!(t.handle(Event::InitApply(node("n1", Some("True"))), t1).is_empty());
        assert!(t.handle(Event::InitApply(node("n2", Some("Unknown"))), t1).is_empty());
        assert!(t.down("n2").is_none(), "nothing changes before InitDone");
        let ch = t.handle(Event::InitDone, t1);
        let down = NodeDown { health: NodeHealth::Unreachable, since: t1 };
        assert_eq!(ch, vec![NodeChange::Removed { node: "old".into() }, NodeChange::Down { node: "n2".into(), down }]);
    }
}
