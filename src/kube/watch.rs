//! The async shell around the pure trackers: a watch of the site pods and, when asked, of the nodes, merged into one
//! channel of [`KubeEvent`]s for the server.
//!
//! Why one channel: the server decides from both views together (a lost site whose pod's node is down), and one
//! ordered stream keeps its picture consistent. Each watch runs `kube::runtime::watcher` with backoff; transient
//! errors are retried (logged once, then at debug level), permanent ones (RBAC, a missing namespace) end the watch
//! with an error naming what to fix.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::membership::{MembershipEvent, SiteTracker};
use super::nodes::{NodeChange, NodeTracker};
use super::remediation::Placement;
use super::KubeError;

/// What the server learns from the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeEvent {
    Membership(MembershipEvent),
    /// Where site `site_id`'s pod is now (`None`: no pod for it).
    Placement {
        site_id: u32,
        placement: Option<Placement>,
    },
    Node(NodeChange),
}

/// Whether to watch nodes beside the site pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeWatch {
    Off,
    /// Watch them if RBAC allows (node events in the report); without access, say so once and go on with pods.
    IfAllowed,
    /// Remediation depends on it: a permanent error ends the watch.
    Required,
}

/// A running watch: events arrive on `events`; `task` ends with `Ok` once `events` is dropped, or with the
/// permanent error that stopped a watch.
pub struct ClusterWatch {
    pub events: mpsc::Receiver<KubeEvent>,
    pub task: JoinHandle<Result<(), KubeError>>,
}

/// Watches the pods matching `label_selector` in `namespace` (e.g. `app=histofed-site`), and the nodes as `nodes`
/// says, on a channel of `buffer` slots. The first events describe what exists when the watch starts.
pub fn watch_sites(
    client: ::kube::Client,
    namespace: &str,
    label_selector: &str,
    nodes: NodeWatch,
    buffer: usize,
) -> ClusterWatch {
    let (tx, events) = mpsc::channel(buffer.max(1));
    let pods_api: ::kube::Api<Pod> = ::kube::Api::namespaced(client.clone(), namespace);
    let config = ::kube::runtime::watcher::Config::default().labels(label_selector);
    let pods = tokio::spawn(watch_pods(pods_api, config, namespace.to_string(), tx.clone()));
    let nodes = (nodes != NodeWatch::Off).then(|| {
        let api: ::kube::Api<Node> = ::kube::Api::all(client);
        tokio::spawn(watch_nodes(api, nodes == NodeWatch::Required, tx))
    });
    let task = tokio::spawn(async move {
        let Some(mut nodes) = nodes else { return pods.await.unwrap_or(Ok(())) };
        let mut pods = pods;
        // The first to fail stops the other; one that ends cleanly (channel closed) waits for the other.
        tokio::select! {
            r = &mut pods => match r.unwrap_or(Ok(())) {
                Err(e) => { nodes.abort(); Err(e) }
                Ok(()) => nodes.await.unwrap_or(Ok(())),
            },
            r = &mut nodes => match r.unwrap_or(Ok(())) {
                Err(e) => { pods.abort(); Err(e) }
                Ok(()) => pods.await.unwrap_or(Ok(())),
            },
        }
    });
    ClusterWatch { events, task }
}

async fn watch_pods(
    api: ::kube::Api<Pod>,
    config: ::kube::runtime::watcher::Config,
    namespace: String,
    tx: mpsc::Sender<KubeEvent>,
) -> Result<(), KubeError> {
    let mut tracker = SiteTracker::new();
    let mut placed: BTreeMap<u32, Placement> = BTreeMap::new();
    let stream = ::kube::runtime::watcher(api, config);
    drive(stream, "pods", &namespace, &tx, |ev| {
        let mut out: Vec<KubeEvent> = tracker.handle(ev).into_iter().map(KubeEvent::Membership).collect();
        let now: BTreeMap<u32, Placement> = tracker
            .view()
            .iter()
            .map(|(id, s)| (*id, Placement { pod: s.pod.clone(), uid: s.uid.clone(), node: s.node.clone() }))
            .collect();
        for id in placed.keys().chain(now.keys()).copied().collect::<std::collections::BTreeSet<u32>>() {
            if placed.get(&id) != now.get(&id) {
                out.push(KubeEvent::Placement { site_id: id, placement: now.get(&id).cloned() });
            }
        }
        placed = now;
        out
    })
    .await
}

async fn watch_nodes(api: ::kube::Api<Node>, required: bool, tx: mpsc::Sender<KubeEvent>) -> Result<(), KubeError> {
    let mut tracker = NodeTracker::new();
    let stream = ::kube::runtime::watcher(api, ::kube::runtime::watcher::Config::default());
    let result = drive(stream, "nodes", "-", &tx, |ev| {
        tracker.handle(ev, Instant::now()).into_iter().map(KubeEvent::Node).collect()
    })
    .await;
    match result {
        Err(e) if !required => {
            tracing::warn!(error = %e, "no node watch (node health stays out of the report); the site pod watch goes on");
            Ok(())
        }
        other => other,
    }
}

/// Runs one watcher stream with backoff, turning its events into [`KubeEvent`]s with `on_event`, until the channel
/// closes (`Ok`) or a permanent error.
async fn drive<K, S>(
    stream: S,
    resource: &'static str,
    namespace: &str,
    tx: &mpsc::Sender<KubeEvent>,
    mut on_event: impl FnMut(::kube::runtime::watcher::Event<K>) -> Vec<KubeEvent>,
) -> Result<(), KubeError>
where
    S: futures::Stream<Item = Result<::kube::runtime::watcher::Event<K>, ::kube::runtime::watcher::Error>> + Send,
{
    use ::kube::runtime::WatchStreamExt;
    let mut stream = stream.default_backoff().boxed();
    // A cluster where pods cannot reach the API answers every retry with the same error: say it once, then
    // quietly (debug) until the watch works again.
    let mut failing = false;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = tx.closed() => return Ok(()),
        };
        let Some(item) = item else { return Ok(()) };
        match item {
            Ok(ev) => {
                if failing {
                    tracing::info!(resource, "watch works again");
                    failing = false;
                }
                for e in on_event(ev) {
                    tracing::info!(event = ?e, "cluster view");
                    if tx.send(e).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Err(err) => {
                let err = classify_watch_error(err, resource, namespace);
                if err.is_permanent() {
                    tracing::error!(error = %err, resource, "watch stopped");
                    return Err(err);
                }
                if failing {
                    tracing::debug!(error = %err, resource, "watch error; retrying with backoff");
                } else {
                    tracing::warn!(error = %err, resource, "watch error; retrying with backoff (further errors at debug level)");
                    failing = true;
                }
            }
        }
    }
}

fn classify_watch_error(err: ::kube::runtime::watcher::Error, resource: &'static str, namespace: &str) -> KubeError {
    use ::kube::runtime::watcher::Error as W;
    match err {
        W::InitialListFailed(e) => KubeError::from_client(e, "list", resource, namespace),
        W::WatchStartFailed(e) | W::WatchFailed(e) => KubeError::from_client(e, "watch", resource, namespace),
        W::WatchError(s) => KubeError::from_client(::kube::Error::Api(s), "watch", resource, namespace),
        W::NoResourceVersion => KubeError::Api {
            verb: "watch",
            resource,
            namespace: namespace.to_string(),
            code: 0,
            reason: "NoResourceVersion".into(),
            message: "no metadata.resourceVersion in the list".into(),
        },
    }
}
