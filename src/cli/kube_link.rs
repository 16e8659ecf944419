//! The server's link to the Kubernetes API: the pod (and node) watch that feeds it membership events, and the
//! node-loss remediation's access check, both set up before the server starts so that a missing permission stops
//! the start with a message naming it.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use ractor::ActorRef;

use crate::actors::messages::ServerMsg;
use crate::config::Config;

/// The server's link to the API server, when it watches its site pods.
pub(super) struct KubeSetup {
    client: ::kube::Client,
    namespace: String,
    selector: String,
    nodes: crate::kube::NodeWatch,
    pub(super) remediation: Option<crate::actors::server::Remediation>,
}

/// Connects to the API server when `--k8s-site-selector` is given. Without API access (no kubeconfig, no service
/// account) the server goes on with cluster events and heartbeats alone, and says so — unless
/// `k8s.remediate_lost_nodes` asks for remediation, whose access (list nodes, delete pods) is checked here so that a
/// missing RBAC rule stops the start with a message naming it, instead of doing nothing when a node dies.
pub(super) async fn kube_setup(cfg: &Config, selector: Option<&str>) -> Result<Option<KubeSetup>> {
    let remediate = cfg.k8s.remediate_lost_nodes;
    let Some(selector) = selector else {
        if remediate {
            bail!("k8s.remediate_lost_nodes needs the pod watch: start the server with --k8s-site-selector");
        }
        return Ok(None);
    };
    let client = match crate::kube::client().await {
        Ok(c) => c,
        Err(e) if remediate => return Err(e).context("k8s.remediate_lost_nodes needs Kubernetes API access"),
        Err(e) => {
            tracing::warn!(error = %e, "no Kubernetes API access; site membership from the cluster only");
            return Ok(None);
        }
    };
    let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| client.default_namespace().to_string());
    let (nodes, remediation) = if remediate {
        let checked = crate::kube::remediation::check_access(&client, &namespace, selector).await.context(
            "k8s.remediate_lost_nodes needs RBAC to list/watch nodes (a ClusterRole) and delete pods in the namespace \
             (k8s/components/node-loss)",
        )?;
        if checked.is_empty() {
            tracing::warn!("no site pod yet: the permission to delete site pods is checked at its first use");
        }
        let after = Duration::from_secs_f64(cfg.k8s.node_lost_secs);
        tracing::info!(after_secs = after.as_secs_f64(), %namespace, "node-loss remediation on");
        let deleter = crate::kube::PodDeleter::new(client.clone(), &namespace);
        (crate::kube::NodeWatch::Required, Some(crate::actors::server::Remediation { deleter, after }))
    } else {
        (crate::kube::NodeWatch::IfAllowed, None)
    };
    Ok(Some(KubeSetup { client, namespace, selector: selector.to_string(), nodes, remediation }))
}

/// Feeds the server the Kubernetes view of its site pods (and nodes).
pub(super) fn watch_site_pods(server: ActorRef<ServerMsg>, k: KubeSetup) {
    tracing::info!(namespace = %k.namespace, selector = %k.selector, nodes = ?k.nodes, "watching site pods");
    let mut watch = crate::kube::watch_sites(k.client, &k.namespace, &k.selector, k.nodes, 256);
    tokio::spawn(async move {
        while let Some(ev) = watch.events.recv().await {
            if server.cast(ServerMsg::Kube(ev)).is_err() {
                break;
            }
        }
        if let Ok(Err(e)) = watch.task.await {
            tracing::warn!(error = %e, "the Kubernetes watch ended; site membership from the cluster only");
        }
    });
}
