//! Site membership from the API server: which site pods exist, which are Ready, and which are going away.
//!
//! Why: the server keys sites by their stable id (`histofed-site-N`), and in Kubernetes that id is the StatefulSet
//! ordinal of pod `histofed-site-N`. The API server learns that a site pod is being deleted, has failed, or lost its
//! readiness before any heartbeat times out, so the server can close a round with the sites that are really there
//! instead of waiting for a deadline; and it knows which sites are *expected* (a pod exists, scheduled or starting),
//! which the join wait can use instead of a fixed timeout.
//!
//! Design: reconcile-as-a-function. [`site_view`] maps a set of pods to a per-site status, [`diff_views`] turns
//! two views into [`MembershipEvent`]s, and [`SiteTracker`] folds `kube::runtime::watcher` events into the view —
//! all pure and unit-tested. `kube::watch` is the thin async shell: a watcher with backoff feeding the tracker
//! and sending events through a bounded tokio channel. A relist after a watch gap (the watcher's `Init`…`InitDone`)
//! is diffed as a whole, so pods deleted while the watch was down still produce their `Gone`.
//!
//! Invariants of the event stream, per site: `Gone` only follows an `Expected`; `Ready` only follows an `Expected`
//! (possibly after a `Gone { NotReady }`); a replaced pod (same name, new uid — a StatefulSet recreating it) yields
//! `Gone { Deleted }` for the old one (unless already reported gone) and `Expected` for the new one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// Why a site is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoneReason {
    /// The pod is being deleted (deletionTimestamp set) or has disappeared.
    Deleted,
    /// The pod still runs but its Ready condition turned false (failing readiness probe, node trouble).
    NotReady,
    /// The pod terminated: phase Failed (or Succeeded, which a site under `restartPolicy: Always` never reaches
    /// normally).
    Failed,
}

/// A membership change of one site.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MembershipEvent {
    /// A pod for this site exists (pending or starting): expect the site to join.
    Expected { site_id: u32, pod: String },
    /// The site's pod is Ready.
    Ready { site_id: u32, pod: String },
    /// The site's pod went away or stopped being Ready.
    Gone { site_id: u32, pod: String, reason: GoneReason },
}

impl MembershipEvent {
    pub fn site_id(&self) -> u32 {
        match self {
            MembershipEvent::Expected { site_id, .. }
            | MembershipEvent::Ready { site_id, .. }
            | MembershipEvent::Gone { site_id, .. } => *site_id,
        }
    }

    pub fn pod(&self) -> &str {
        match self {
            MembershipEvent::Expected { pod, .. }
            | MembershipEvent::Ready { pod, .. }
            | MembershipEvent::Gone { pod, .. } => pod,
        }
    }
}

/// The state of one site's pod, from the API server's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PodState {
    /// Phase Failed or Succeeded: the containers are not coming back in this pod.
    Failed,
    /// deletionTimestamp set: the pod is going away (graceful deletion in progress).
    Terminating,
    /// Phase Pending (or unknown): scheduled or waiting for a node, pulling, creating.
    Pending,
    /// Phase Running, Ready condition not true.
    NotReady,
    /// Ready condition true.
    Ready,
}

impl PodState {
    /// Whether a site in this state may still (or already does) take part: pending, starting or ready.
    pub fn is_alive(self) -> bool {
        matches!(self, PodState::Pending | PodState::NotReady | PodState::Ready)
    }
}

/// One site's pod as the view sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteStatus {
    pub pod: String,
    /// The pod's uid: a different uid under the same name is a new pod (the StatefulSet recreated it).
    pub uid: Option<String>,
    pub state: PodState,
    /// `spec.nodeName`: where the pod was scheduled (`None` while unscheduled).
    pub node: Option<String>,
}

/// The StatefulSet ordinal of a pod name `<statefulset>-<N>`: the digits after the last `-`, in canonical form
/// (no sign, no leading zero unless N = 0), after a non-empty name that does not end in `-`. `histofed-site-3` → 3.
pub fn ordinal_from_pod_name(name: &str) -> Option<u32> {
    let (prefix, digits) = name.rsplit_once('-')?;
    if prefix.is_empty() || prefix.ends_with('-') || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The state of a pod: deletion first (a terminating pod may still be Ready), then terminal phases, then the Ready
/// condition, then the phase.
pub fn pod_state(pod: &Pod) -> PodState {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Terminating;
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if phase == "Failed" || phase == "Succeeded" {
        return PodState::Failed;
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    match (ready, phase) {
        (true, _) => PodState::Ready,
        (false, "Running") => PodState::NotReady,
        _ => PodState::Pending,
    }
}

/// Which of two pods claiming one ordinal wins: the more alive, then the smaller name.
fn rank(s: &SiteStatus) -> (PodState, std::cmp::Reverse<&str>) {
    (s.state, std::cmp::Reverse(s.pod.as_str()))
}

/// The per-site view of a set of pods. Pods whose name carries no ordinal are ignored. Should two pods claim the
/// same ordinal (two StatefulSets matching one selector — a misconfiguration), the more alive one wins, then the
/// name, so the result does not depend on the input order.
pub fn site_view(pods: &[Pod]) -> BTreeMap<u32, SiteStatus> {
    let mut view: BTreeMap<u32, SiteStatus> = BTreeMap::new();
    for pod in pods {
        let Some(name) = pod.metadata.name.as_deref() else { continue };
        let Some(site_id) = ordinal_from_pod_name(name) else { continue };
        let candidate = SiteStatus {
            pod: name.to_string(),
            uid: pod.metadata.uid.clone(),
            state: pod_state(pod),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        };
        match view.get(&site_id) {
            Some(cur) if rank(cur) >= rank(&candidate) => {}
            _ => {
                view.insert(site_id, candidate);
            }
        }
    }
    view
}

/// The events that take `old` to `new`, in site order (and within a site: `Gone` before `Expected` before
/// `Ready`).
pub fn diff_views(old: &BTreeMap<u32, SiteStatus>, new: &BTreeMap<u32, SiteStatus>) -> Vec<MembershipEvent> {
    let mut events = Vec::new();
    let ids: std::collections::BTreeSet<u32> = old.keys().chain(new.keys()).copied().collect();
    for site_id in ids {
        diff_site(site_id, old.get(&site_id), new.get(&site_id), &mut events);
    }
    events
}

fn diff_site(site_id: u32, old: Option<&SiteStatus>, new: Option<&SiteStatus>, out: &mut Vec<MembershipEvent>) {
    let gone = |s: &SiteStatus, reason| MembershipEvent::Gone { site_id, pod: s.pod.clone(), reason };
    // Same pod object (name and uid) in both views: a state change of that pod.
    let same_pod = matches!((old, new), (Some(o), Some(n)) if o.pod == n.pod && o.uid == n.uid);
    if !same_pod {
        // The old pod is gone (removed or replaced) and the new one, if any, is a fresh start.
        if let Some(o) = old.filter(|o| o.state.is_alive()) {
            out.push(gone(o, GoneReason::Deleted));
        }
        if let Some(n) = new.filter(|n| n.state.is_alive()) {
            out.push(MembershipEvent::Expected { site_id, pod: n.pod.clone() });
            if n.state == PodState::Ready {
                out.push(MembershipEvent::Ready { site_id, pod: n.pod.clone() });
            }
        }
        return;
    }
    let (Some(o), Some(n)) = (old, new) else { return };
    match (o.state, n.state) {
        (a, b) if a == b => {}
        (a, PodState::Terminating) if a.is_alive() => out.push(gone(n, GoneReason::Deleted)),
        (a, PodState::Failed) if a.is_alive() => out.push(gone(n, GoneReason::Failed)),
        (PodState::Ready, PodState::NotReady | PodState::Pending) => out.push(gone(n, GoneReason::NotReady)),
        (a, PodState::Ready) if a.is_alive() => out.push(MembershipEvent::Ready { site_id, pod: n.pod.clone() }),
        // Pending → NotReady (started, not yet ready), and anything after a pod is already gone: no event.
        _ => {}
    }
}

/// Folds `kube::runtime::watcher` events into the site view and emits the membership events. Pure: feed it events,
/// read its output; `kube::watch` drives it from a real watch.
#[derive(Debug, Default)]
pub struct SiteTracker {
    pods: BTreeMap<String, Pod>,
    view: BTreeMap<u32, SiteStatus>,
    /// Pods of a relist in progress (`Init` … `InitDone`): swapped in as a whole at `InitDone`.
    relist: Option<BTreeMap<String, Pod>>,
}

impl SiteTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current per-site view.
    pub fn view(&self) -> &BTreeMap<u32, SiteStatus> {
        &self.view
    }

    /// Applies one watcher event and returns the membership events it causes (none while a relist is buffering).
    pub fn handle(&mut self, event: ::kube::runtime::watcher::Event<Pod>) -> Vec<MembershipEvent> {
        use ::kube::runtime::watcher::Event;
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                return Vec::new();
            }
            Event::InitApply(pod) => {
                if let (Some(buf), Some(name)) = (self.relist.as_mut(), pod.metadata.name.clone()) {
                    buf.insert(name, pod);
                }
                return Vec::new();
            }
            Event::InitDone => {
                if let Some(buf) = self.relist.take() {
                    self.pods = buf;
                }
            }
            Event::Apply(pod) => {
                if let Some(name) = pod.metadata.name.clone() {
                    self.pods.insert(name, pod);
                }
            }
            Event::Delete(pod) => {
                if let Some(name) = pod.metadata.name.as_deref() {
                    // Only if it is the same object: a late Delete of an old uid must not drop its replacement.
                    let same = self.pods.get(name).is_some_and(|p| p.metadata.uid == pod.metadata.uid);
                    if same {
                        self.pods.remove(name);
                    }
                }
            }
        }
        let pods: Vec<Pod> = self.pods.values().cloned().collect();
        let view = site_view(&pods);
        let events = diff_views(&self.view, &view);
        self.view = view;
        events
    }
}

/// Whether this process runs in a Kubernetes pod (kubelet sets `KUBERNETES_SERVICE_HOST` in every container).
pub fn in_cluster() -> bool {
    in_cluster_with(|k| std::env::var(k).ok())
}

/// [`in_cluster`] over any variable lookup (for tests).
pub fn in_cluster_with(lookup: impl Fn(&str) -> Option<String>) -> bool {
    lookup("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
}

/// `host:port` of Service `service` from the variables kubelet injects into every container of the namespace
/// (`<SERVICE>_SERVICE_HOST`, `<SERVICE>_SERVICE_PORT[_<PORT_NAME>]`, upper case, dashes → underscores), for
/// clusters without DNS. With `port_name`, the named port's variable only (the unnamed one is the Service's first
/// port, maybe another); without, the first port. IPv6 hosts come bracketed. `None` if a variable is missing, or
/// the Service was created after the pod (kubelet only injects Services that existed when the pod started).
pub fn server_addr_from_env(service: &str, port_name: Option<&str>) -> Option<String> {
    server_addr_with(|k| std::env::var(k).ok(), service, port_name)
}

/// [`server_addr_from_env`] over any variable lookup (for tests).
pub fn server_addr_with(
    lookup: impl Fn(&str) -> Option<String>,
    service: &str,
    port_name: Option<&str>,
) -> Option<String> {
    let env_name = |s: &str| s.to_ascii_uppercase().replace(['-', '.'], "_");
    let prefix = env_name(service);
    let host = lookup(&format!("{prefix}_SERVICE_HOST")).filter(|h| !h.is_empty())?;
    let port_var = match port_name {
        Some(p) => format!("{prefix}_SERVICE_PORT_{}", env_name(p)),
        None => format!("{prefix}_SERVICE_PORT"),
    };
    let port: u16 = lookup(&port_var)?.trim().parse().ok()?;
    Some(if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::kube::runtime::watcher::Event;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::collections::HashMap;

    fn pod(name: &str, uid: &str, phase: &str, ready: bool, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(uid.into()),
                deletion_timestamp: deleting.then(|| Time(Default::default())),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn expected(id: u32, pod: &str) -> MembershipEvent {
        MembershipEvent::Expected { site_id: id, pod: pod.into() }
    }
    fn ready(id: u32, pod: &str) -> MembershipEvent {
        MembershipEvent::Ready { site_id: id, pod: pod.into() }
    }
    fn gone(id: u32, pod: &str, reason: GoneReason) -> MembershipEvent {
        MembershipEvent::Gone { site_id: id, pod: pod.into(), reason }
    }

    #[test]
    fn ordinals_parse_only_canonical_trailing_numbers() {
        assert_eq!(ordinal_from_pod_name("histofed-site-0"), Some(0));
        assert_eq!(ordinal_from_pod_name("histofed-site-12"), Some(12));
        assert_eq!(ordinal_from_pod_name("web-4294967295"), Some(u32::MAX));
        for bad in ["histofed-site", "histofed-site-", "-3", "site-01", "site-+1", "site--1", "site-1a", "7", ""] {
            assert_eq!(ordinal_from_pod_name(bad), None, "{bad}");
        }
        assert_eq!(ordinal_from_pod_name("web-4294967296"), None);
    }

    #[test]
    fn pod_state_orders_deletion_then_phase_then_readiness() {
        assert_eq!(pod_state(&pod("s-0", "u", "Running", true, true)), PodState::Terminating);
        assert_eq!(pod_state(&pod("s-0", "u", "Failed", false, false)), PodState::Failed);
        assert_eq!(pod_state(&pod("s-0", "u", "Succeeded", false, false)), PodState::Failed);
        assert_eq!(pod_state(&pod("s-0", "u", "Running", true, false)), PodState::Ready);
        assert_eq!(pod_state(&pod("s-0", "u", "Running", false, false)), PodState::NotReady);
        assert_eq!(pod_state(&pod("s-0", "u", "Pending", false, false)), PodState::Pending);
        assert_eq!(pod_state(&Pod::default()), PodState::Pending);
    }

    #[test]
    fn site_view_keys_by_ordinal_and_ignores_foreign_names() {
        let pods = [
            pod("histofed-site-1", "a", "Running", true, false),
            pod("histofed-site-0", "b", "Pending", false, false),
            pod("histofed-site-x", "c", "Running", true, false),
        ];
        let view = site_view(&pods);
        assert_eq!(view.keys().copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(view[&1].state, PodState::Ready);
        assert_eq!(view[&0].pod, "histofed-site-0");
        // Duplicate ordinals: the more alive pod wins, whatever the order.
        let a = pod("a-2", "1", "Failed", false, false);
        let b = pod("b-2", "2", "Running", true, false);
        assert_eq!(site_view(&[a.clone(), b.clone()])[&2].pod, "b-2");
        assert_eq!(site_view(&[b, a])[&2].pod, "b-2");
    }

    #[test]
    fn diff_covers_the_lifecycle_of_a_site() {
        let v = |pods: &[Pod]| site_view(pods);
        let empty = BTreeMap::new();
        let pending = v(&[pod("s-0", "u1", "Pending", false, false)]);
        let starting = v(&[pod("s-0", "u1", "Running", false, false)]);
        let up = v(&[pod("s-0", "u1", "Running", true, false)]);
        let deleting = v(&[pod("s-0", "u1", "Running", true, true)]);
        let failed = v(&[pod("s-0", "u1", "Failed", false, false)]);
        let replaced = v(&[pod("s-0", "u2", "Pending", false, false)]);
        assert_eq!(diff_views(&empty, &pending), [expected(0, "s-0")]);
        assert_eq!(diff_views(&empty, &up), [expected(0, "s-0"), ready(0, "s-0")]);
        assert_eq!(diff_views(&pending, &starting), []);
        assert_eq!(diff_views(&starting, &up), [ready(0, "s-0")]);
        assert_eq!(diff_views(&up, &starting), [gone(0, "s-0", GoneReason::NotReady)]);
        assert_eq!(diff_views(&up, &deleting), [gone(0, "s-0", GoneReason::Deleted)]);
        assert_eq!(diff_views(&up, &failed), [gone(0, "s-0", GoneReason::Failed)]);
        assert_eq!(diff_views(&up, &empty), [gone(0, "s-0", GoneReason::Deleted)]);
        // Already reported gone: its disappearance is silent.
        assert_eq!(diff_views(&deleting, &empty), []);
        assert_eq!(diff_views(&failed, &deleting), []);
        // Replaced under the same name (missed the delete): the old one goes, the new one is expected.
        assert_eq!(diff_views(&up, &replaced), [gone(0, "s-0", GoneReason::Deleted), expected(0, "s-0")]);
        assert_eq!(diff_views(&failed, &replaced), [expected(0, "s-0")]);
        // First sight of a dead pod: nothing to report.
        assert_eq!(diff_views(&empty, &failed), []);
        assert_eq!(diff_views(&up, &up), []);
    }

    #[test]
    fn tracker_buffers_relists_and_reports_pods_lost_during_a_watch_gap() {
        let mut t = SiteTracker::new();
        assert!(t.handle(Event::Init).is_empty());
        assert!(t.handle(Event::InitApply(pod("s-0", "a", "Running", true, false))).is_empty());
        assert!(t.handle(Event::InitApply(pod("s-1", "b", "Pending", false, false))).is_empty());
        assert_eq!(t.handle(Event::InitDone), [expected(0, "s-0"), ready(0, "s-0"), expected(1, "s-1")]);
        assert_eq!(t.handle(Event::Apply(pod("s-1", "b", "Running", true, false))), [ready(1, "s-1")]);
        // Watch gap: s-0 was deleted and recreated, s-1 vanished; the relist tells.
        t.handle(Event::Init);
        t.handle(Event::InitApply(pod("s-0", "a2", "Pending", false, false)));
        assert_eq!(
            t.handle(Event::InitDone),
            [gone(0, "s-0", GoneReason::Deleted), expected(0, "s-0"), gone(1, "s-1", GoneReason::Deleted)]
        );
        // A late Delete of the old uid does not drop the replacement.
        assert_eq!(t.handle(Event::Delete(pod("s-0", "a", "Running", true, true))), []);
        assert_eq!(t.view()[&0].uid.as_deref(), Some("a2"));
        assert_eq!(
            t.handle(Event::Delete(pod("s-0", "a2", "Pending", false, false))),
            [gone(0, "s-0", GoneReason::Deleted)]
        );
        assert!(t.view().is_empty());
    }

    #[test]
    fn env_discovery_follows_kubelet_naming() {
        let env: HashMap<&str, &str> = [
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("HISTOFED_SERVER_SERVICE_HOST", "10.0.0.17"),
            ("HISTOFED_SERVER_SERVICE_PORT", "7000"),
            ("HISTOFED_SERVER_SERVICE_PORT_CLUSTER", "7000"),
            ("HISTOFED_SERVER_SERVICE_PORT_HTTP", "9090"),
            ("V6_SERVICE_HOST", "fd00::1"),
            ("V6_SERVICE_PORT", "7000"),
            ("BAD_SERVICE_HOST", "10.0.0.9"),
            ("BAD_SERVICE_PORT", "seventy"),
        ]
        .into_iter()
        .collect();
        let lookup = |k: &str| env.get(k).map(|v| v.to_string());
        assert!(in_cluster_with(lookup));
        assert!(!in_cluster_with(|_| None));
        assert!(!in_cluster_with(|_| Some(String::new())));
        assert_eq!(server_addr_with(lookup, "histofed-server", Some("cluster")).as_deref(), Some("10.0.0.17:7000"));
        assert_eq!(server_addr_with(lookup, "histofed-server", Some("http")).as_deref(), Some("10.0.0.17:9090"));
        assert_eq!(server_addr_with(lookup, "histofed-server", None).as_deref(), Some("10.0.0.17:7000"));
        assert_eq!(server_addr_with(lookup, "histofed-server", Some("grpc")), None);
        assert_eq!(server_addr_with(lookup, "v6", None).as_deref(), Some("[fd00::1]:7000"));
        assert_eq!(server_addr_with(lookup, "bad", None), None);
        assert_eq!(server_addr_with(lookup, "missing", None), None);
    }
}
