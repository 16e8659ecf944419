//! Node loss in Kubernetes: what the server makes of the cluster view (site pod membership, where each site pod
//! runs, node health), and the opt-in remediation of site pods stranded on a dead node.
//!
//! Why here: the remediation's one hard rule — never act on a site that still answers heartbeats — needs the
//! federation's membership, which only the server has. The decision itself is `kube::remediation::decide` (pure);
//! this file keeps the view it reads, and runs the delete on a tokio task that reports back as a message, so the
//! mailbox never waits on the API server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ractor::{ActorProcessingErr, ActorRef};

use super::{check_round, ServerState};
use crate::actors::messages::{Remediated, ServerMsg};
use crate::kube::{decide, Deleted, KubeEvent, MembershipEvent, NodeChange, NodeDown, Placement, PodDeleter, Remedy};

/// A failed force-delete (API server unreachable, RBAC changed) is tried again after this long.
const RETRY_FAILED: Duration = Duration::from_secs(10);

/// Force-deletes pods of lost sites whose node has been down for `after`.
#[derive(Debug, Clone)]
pub struct Remediation {
    pub deleter: PodDeleter,
    pub after: Duration,
}

/// The server's picture of the cluster.
#[derive(Debug, Default)]
pub struct ClusterView {
    placements: BTreeMap<u32, Placement>,
    /// Nodes the watch reported: `Some` while down (since when), `None` once Ready again. A node never reported
    /// down is absent (`decide` then holds as for an unseen node: no action either way).
    nodes: BTreeMap<String, Option<NodeDown>>,
    remediation: Option<Remediation>,
    /// Pod uids force-deleted: `None` done (never again), `Some(t)` failed, retried after `t`.
    acted: BTreeMap<String, Option<Instant>>,
}

impl ClusterView {
    pub fn new(remediation: Option<Remediation>) -> Self {
        Self { remediation, ..Self::default() }
    }
}

/// Applies one event of the cluster view. A site whose pod is gone or not ready is dropped at once (before TCP
/// notices); a new pod for the same site is welcome to rejoin.
pub(super) fn on_kube(me: &ActorRef<ServerMsg>, st: &mut ServerState, ev: KubeEvent) -> Result<(), ActorProcessingErr> {
    match ev {
        KubeEvent::Membership(MembershipEvent::Gone { site_id, pod, reason }) => {
            st.lose(site_id, "site-pod-gone", format!("pod {pod}: {reason:?}"));
            check_round(me, st)?;
        }
        KubeEvent::Membership(MembershipEvent::Expected { site_id, pod }) => {
            st.event(Some(site_id), "site-pod-expected", pod)
        }
        KubeEvent::Membership(MembershipEvent::Ready { site_id, pod }) => {
            st.event(Some(site_id), "site-pod-ready", pod)
        }
        KubeEvent::Placement { site_id, placement: Some(p) } => {
            if let Some(node) = &p.node {
                if st.cluster.placements.get(&site_id).and_then(|o| o.node.as_ref()) != Some(node) {
                    st.event(Some(site_id), "site-pod-placed", format!("pod {} on node {node}", p.pod));
                }
            }
            st.cluster.placements.insert(site_id, p);
        }
        KubeEvent::Placement { site_id, placement: None } => {
            st.cluster.placements.remove(&site_id);
        }
        KubeEvent::Node(change) => on_node(st, change),
    }
    Ok(())
}

fn on_node(st: &mut ServerState, change: NodeChange) {
    let sites = |st: &ServerState, node: &str| -> Vec<u32> {
        st.cluster.placements.iter().filter(|(_, p)| p.node.as_deref() == Some(node)).map(|(id, _)| *id).collect()
    };
    match change {
        NodeChange::Down { node, down } => {
            let kind = match down.health {
                crate::kube::NodeHealth::Unreachable => "unreachable",
                _ => "not-ready",
            };
            let on = sites(st, &node);
            tracing::warn!(%node, health = down.health.as_str(), sites = ?on, "node is not Ready");
            st.obs.metrics.node_event(kind);
            st.event(
                None,
                "node-not-ready",
                format!("node {node}: {} (site pods on it: {on:?})", down.health.as_str()),
            );
            st.cluster.nodes.insert(node, Some(down));
        }
        // The node watch reports Up only for a node it reported down.
        NodeChange::Up { node } => {
            tracing::info!(%node, "node is Ready again");
            st.obs.metrics.node_event("ready");
            st.event(None, "node-ready", format!("node {node}: Ready again"));
            st.cluster.nodes.insert(node, None);
        }
        NodeChange::Removed { node } => {
            st.cluster.nodes.remove(&node);
            st.obs.metrics.node_event("removed");
            st.event(None, "node-removed", format!("node {node}: deleted from the API"));
        }
    }
}

/// Called on every heartbeat tick: force-deletes the pods that [`decide`] says are stranded.
pub(super) fn remediate(me: &ActorRef<ServerMsg>, st: &mut ServerState, now: Instant) {
    let Some(rem) = st.cluster.remediation.clone() else { return };
    let mut actions = Vec::new();
    for (site_id, placement) in &st.cluster.placements {
        let answers = st.sites.contains_key(site_id);
        // None = the node watch has not seen it; Some(None) = Ready.
        let node = placement.node.as_ref().and_then(|n| st.cluster.nodes.get(n).copied());
        let acted = match placement.uid.as_ref().and_then(|u| st.cluster.acted.get(u)) {
            None => false,
            Some(None) => true,
            Some(Some(retry_at)) => now < *retry_at,
        };
        if let Remedy::ForceDelete { pod, uid, node, health, down_for } =
            decide(answers, placement, node, acted, rem.after, now)
        {
            actions.push((*site_id, pod, uid, node, health, down_for));
        }
    }
    for (site_id, pod, uid, node, health, down_for) in actions {
        st.cluster.acted.insert(uid.clone(), None);
        let detail = format!(
            "pod {pod} on node {node} ({}) for {:.1} s, site lost: force-deleting it so its StatefulSet recreates \
             it on a surviving node",
            health.as_str(),
            down_for.as_secs_f64()
        );
        tracing::warn!(site_id, %pod, %node, down_secs = down_for.as_secs_f64(), "remediating node loss");
        st.event(Some(site_id), "pod-force-delete", detail);
        let (deleter, me) = (rem.deleter.clone(), me.clone());
        tokio::spawn(async move {
            let result = deleter.force_delete(&pod, &uid).await.map_err(|e| e.to_string());
            let _ = me.cast(ServerMsg::Remediated(Remediated { site_id, pod, uid, node, result }));
        });
    }
}

pub(super) fn on_remediated(st: &mut ServerState, r: Remediated) {
    let (outcome, kind, detail) = match &r.result {
        Ok(Deleted::Deleted) => ("deleted", "pod-force-deleted", format!("pod {} deleted (was on {})", r.pod, r.node)),
        Ok(Deleted::AlreadyGone) => {
            ("already-gone", "pod-force-deleted", format!("pod {} was already gone or replaced", r.pod))
        }
        Err(e) => ("failed", "pod-force-delete-failed", format!("pod {} on {}: {e}", r.pod, r.node)),
    };
    if r.result.is_err() {
        tracing::error!(site_id = r.site_id, pod = %r.pod, %detail, "force-delete failed; retried in 10 s");
        st.cluster.acted.insert(r.uid.clone(), Some(Instant::now() + RETRY_FAILED));
    } else {
        tracing::info!(site_id = r.site_id, pod = %r.pod, outcome, "force-delete done");
    }
    st.obs.metrics.pod_remediation(outcome);
    st.event(Some(r.site_id), kind, detail);
}
