//! Remediation of node loss: force-delete a site pod stranded on a dead node, so that its StatefulSet recreates it
//! on a surviving node.
//!
//! Why: on a node that died, a site pod stays Running (then, after its toleration, Terminating) until the node comes
//! back — the StatefulSet will not create the same ordinal elsewhere while the old pod object exists, so the site is
//! missing from the federation for as long as the node is dead. Deleting the pod with grace 0 removes the object at
//! once and the successor starts on a surviving node in a second or two (measured in `k8s/README.md`).
//!
//! Safety: a forced delete skips the kubelet's confirmation, so a pod on a node that is only cut off may still be
//! running. That is why this is opt-in (`k8s.remediate_lost_nodes`), why [`decide`] acts only when *both* the
//! federation has lost the site (it does not answer heartbeats) *and* the API server has reported its node not Ready
//! for the configured time, and why the zombie that may survive is harmless: fencing (`federation::fencing`) refuses
//! it once the replacement has joined. The delete carries the pod's uid as a precondition, so it can never remove
//! the successor that took the same name.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::nodes::{NodeDown, NodeHealth};
use super::KubeError;

/// Where a site's pod is, as the pod watch last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub pod: String,
    pub uid: Option<String>,
    /// `spec.nodeName`: `None` until the pod is scheduled.
    pub node: Option<String>,
}

/// Why a stranded-looking pod is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The site answers heartbeats: whatever its node says, the process is alive and reachable.
    SiteAnswers,
    /// This pod (uid) was already force-deleted once.
    AlreadyActed,
    /// The pod is not bound to a node (Pending): nothing is stranded.
    NotScheduled,
    /// The pod has no uid to guard the delete with.
    NoUid,
    /// The node is not in the node watch (not listed yet): no evidence it is down.
    NodeUnseen,
    /// The node is Ready.
    NodeReady,
    /// The node is down, but not yet for the configured time.
    TooSoon { remaining: Duration },
}

/// What to do about one lost site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    ForceDelete { pod: String, uid: String, node: String, health: NodeHealth, down_for: Duration },
    Hold(Hold),
}

/// The decision for one site at `now`. `site_answers`: the site is a member of the federation and answers heartbeats;
/// `node`: the node watch's knowledge of the pod's node (`None` = not seen, `Some(None)` = Ready); `acted`: this pod's
/// uid was force-deleted before; `after`: how long the node must have been down.
pub fn decide(
    site_answers: bool,
    placement: &Placement,
    node: Option<Option<NodeDown>>,
    acted: bool,
    after: Duration,
    now: Instant,
) -> Remedy {
    if site_answers {
        return Remedy::Hold(Hold::SiteAnswers);
    }
    if acted {
        return Remedy::Hold(Hold::AlreadyActed);
    }
    let Some(node_name) = placement.node.clone() else { return Remedy::Hold(Hold::NotScheduled) };
    let Some(uid) = placement.uid.clone() else { return Remedy::Hold(Hold::NoUid) };
    let down = match node {
        None => return Remedy::Hold(Hold::NodeUnseen),
        Some(None) => return Remedy::Hold(Hold::NodeReady),
        Some(Some(down)) => down,
    };
    let down_for = now.saturating_duration_since(down.since);
    if down_for < after {
        return Remedy::Hold(Hold::TooSoon { remaining: after - down_for });
    }
    Remedy::ForceDelete { pod: placement.pod.clone(), uid, node: node_name, health: down.health, down_for }
}

/// How a force-delete ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The API server removed the pod object.
    Deleted,
    /// The pod was already gone, or the name now belongs to a successor (uid precondition failed): nothing to do.
    AlreadyGone,
}

/// Force-deletes site pods (grace 0, uid precondition) in one namespace. RBAC: `delete` on `pods` there.
#[derive(Clone)]
pub struct PodDeleter {
    api: ::kube::Api<Pod>,
    namespace: String,
}

impl std::fmt::Debug for PodDeleter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodDeleter").field("namespace", &self.namespace).finish()
    }
}

impl PodDeleter {
    pub fn new(client: ::kube::Client, namespace: &str) -> Self {
        Self { api: ::kube::Api::namespaced(client, namespace), namespace: namespace.to_string() }
    }

    pub async fn force_delete(&self, pod: &str, uid: &str) -> Result<Deleted, KubeError> {
        use ::kube::api::{DeleteParams, Preconditions};
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..DeleteParams::default()
        };
        match self.api.delete(pod, &params).await {
            Ok(_) => Ok(Deleted::Deleted),
            Err(::kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Deleted::AlreadyGone),
            Err(e) => Err(KubeError::from_client(e, "delete", "pods", &self.namespace)),
        }
    }
}

/// Checks, before a run relies on remediation, that this identity may watch nodes and delete the site pods (those
/// matching `selector` now; RBAC may name them one by one): a missing ClusterRole binding or Role rule is a
/// configuration error to report at start, not a silent no-op when a node dies. Returns the pods checked (none yet
/// is possible at start: the delete is then checked at its first use, and a refusal is an event of the run).
pub async fn check_access(client: &::kube::Client, namespace: &str, selector: &str) -> Result<Vec<String>, KubeError> {
    use ::kube::api::ListParams;
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let nodes: ::kube::Api<k8s_openapi::api::core::v1::Node> = ::kube::Api::all(client.clone());
    nodes.list(&ListParams::default().limit(1)).await.map_err(|e| KubeError::from_client(e, "list", "nodes", "-"))?;
    let pods: ::kube::Api<Pod> = ::kube::Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| KubeError::from_client(e, "list", "pods", namespace))?;
    let names: Vec<String> = listed.items.into_iter().filter_map(|p| p.metadata.name).collect();
    let reviews: ::kube::Api<SelfSubjectAccessReview> = ::kube::Api::all(client.clone());
    for name in &names {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_string()),
                    verb: Some("delete".into()),
                    resource: Some("pods".into()),
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews
            .create(&::kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| KubeError::from_client(e, "create", "selfsubjectaccessreviews", namespace))?;
        if !answer.status.as_ref().is_some_and(|s| s.allowed) {
            let why = answer.status.and_then(|s| s.reason).filter(|r| !r.is_empty());
            return Err(KubeError::Forbidden {
                verb: "delete",
                resource: "pods",
                namespace: namespace.to_string(),
                message: format!("pod {name}: {}", why.unwrap_or_else(|| "no rule allows it".into())),
            });
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(node: Option<&str>) -> Placement {
        Placement { pod: "histofed-site-1".into(), uid: Some("u1".into()), node: node.map(Into::into) }
    }

    #[test]
    fn a_lost_site_on_a_node_down_long_enough_is_force_deleted_and_nothing_else_is() {
        let t0 = Instant::now();
        let after = Duration::from_secs(30);
        let down = NodeDown { health: NodeHealth::Unreachable, since: t0 };
        let p = placed(Some("node2"));
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            decide(false, &p, Some(Some(down)), false, after, at(31)),
            Remedy::ForceDelete {
                pod: "histofed-site-1".into(),
                uid: "u1".into(),
                node: "node2".into(),
                health: NodeHealth::Unreachable,
                down_for: Duration::from_secs(31)
            }
        );
        // Never on a site that answers, whatever its node says.
        assert_eq!(decide(true, &p, Some(Some(down)), false, after, at(3600)), Remedy::Hold(Hold::SiteAnswers));
        // Never on a Ready node, nor on a node the watch has not seen.
        assert_eq!(decide(false, &p, Some(None), false, after, at(3600)), Remedy::Hold(Hold::NodeReady));
        assert_eq!(decide(false, &p, None, false, after, at(3600)), Remedy::Hold(Hold::NodeUnseen));
        // Not before the configured time.
        assert_eq!(
            decide(false, &p, Some(Some(down)), false, after, at(10)),
            Remedy::Hold(Hold::TooSoon { remaining: Duration::from_secs(20) })
        );
        // Once per pod.
        assert_eq!(decide(false, &p, Some(Some(down)), true, after, at(60)), Remedy::Hold(Hold::AlreadyActed));
        // Unscheduled or unidentified pods are left alone.
        assert_eq!(
            decide(false, &placed(None), Some(Some(down)), false, after, at(60)),
            Remedy::Hold(Hold::NotScheduled)
        );
        let mut no_uid = p.clone();
        no_uid.uid = None;
        assert_eq!(decide(false, &no_uid, Some(Some(down)), false, after, at(60)), Remedy::Hold(Hold::NoUid));
    }
}
