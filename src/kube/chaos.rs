//! Pod-killing chaos: delete one random running site pod every tick, a bounded number of times.
//!
//! Why: histofed claims that a federation survives losing sites (and the server) mid-round. In Kubernetes the way a
//! site is lost is a pod deletion — graceful (SIGTERM, grace period) or forced (grace 0: the kubelet kills the
//! containers at once, the StatefulSet recreates the pod within seconds). This tool does exactly that to a live
//! run so the claim is tested against the real mechanism, and records each kill with a Unix-ms timestamp so the
//! run's report (rounds, membership, timings) can be lined up against it afterwards.
//!
//! Choices: only pods in phase Running and not already terminating are candidates — killing a pod that is still
//! starting or already going away tests nothing and would make the kill count lie; the delete carries a uid
//! precondition so a pod that was replaced between the list and the delete is not hit by mistake (that, or a pod
//! that vanished, makes the tick count as skipped, not as an error); `dry_run` is the API server's own dry run, so
//! it still checks RBAC. Candidates are sorted by name before the random pick, so a seed reproduces the choices
//! given the same pods.

use std::time::Duration;

use ::kube::api::{DeleteParams, ListParams, Preconditions};
use ::kube::Api;
use k8s_openapi::api::core::v1::Pod;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{unix_ms, KubeError};

/// What to kill, how often, how hard.
#[derive(Debug, Clone, PartialEq)]
pub struct KillOpts {
    /// Label selector of the candidate pods, e.g. `app=histofed-site`.
    pub selector: String,
    /// Time between ticks; the first tick comes one period after the start.
    pub every: Duration,
    /// Kills to make before returning.
    pub count: u32,
    /// Grace period in seconds: `Some(0)` is a hard kill, `None` the pod's own `terminationGracePeriodSeconds`.
    pub grace: Option<u32>,
    /// Server-side dry run: the API server checks and answers but deletes nothing.
    pub dry_run: bool,
    /// Seed of the random pick; `None` = from the OS.
    pub seed: Option<u64>,
    /// Stop after this many ticks even if fewer than `count` kills were made (e.g. no pod ever matched); `None` =
    /// no bound besides `count`.
    pub max_ticks: Option<u32>,
}

impl KillOpts {
    /// One hard kill of a pod matching `selector` after 30 s.
    pub fn new(selector: impl Into<String>) -> Self {
        Self {
            selector: selector.into(),
            every: Duration::from_secs(30),
            count: 1,
            grace: Some(0),
            dry_run: false,
            seed: None,
            max_ticks: None,
        }
    }
}

/// One deletion.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Kill {
    pub pod: String,
    pub uid: Option<String>,
    /// When the API server accepted the delete, ms since the Unix epoch.
    pub unix_ms: u64,
    /// Which tick (1-based) made it.
    pub tick: u32,
    pub grace: Option<u32>,
    pub dry_run: bool,
}

/// What a chaos run did; `histofed chaos kill-pods` prints it as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KillSummary {
    pub kills: Vec<Kill>,
    /// Ticks that killed nothing: no running pod matched, or the chosen pod vanished or was replaced first.
    pub skipped_ticks: u32,
    pub ticks: u32,
}

/// Deletes one random running, not terminating, pod matching `opts.selector` every `opts.every`, until `opts.count`
/// kills (or `opts.max_ticks` ticks). Stops at the first API error other than the chosen pod having vanished or
/// been replaced, naming what failed (`forbidden: cannot delete pods in namespace …`).
pub async fn kill_pods(api: Api<Pod>, opts: KillOpts) -> Result<KillSummary, KubeError> {
    let namespace = api.namespace().unwrap_or("(all)").to_string();
    let mut rng = match opts.seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => StdRng::from_os_rng(),
    };
    let list_params = ListParams::default().labels(&opts.selector);
    let mut summary = KillSummary::default();
    let period = opts.every.max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while (summary.kills.len() as u64) < u64::from(opts.count) && opts.max_ticks.is_none_or(|m| summary.ticks < m) {
        ticker.tick().await;
        summary.ticks += 1;
        let tick = summary.ticks;
        let pods = api.list(&list_params).await.map_err(|e| KubeError::from_client(e, "list", "pods", &namespace))?;
        let mut candidates: Vec<&Pod> = pods.items.iter().filter(|p| is_killable(p)).collect();
        candidates.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        if candidates.is_empty() {
            tracing::warn!(tick, selector = %opts.selector, %namespace, "chaos: no running pod matches; tick skipped");
            summary.skipped_ticks += 1;
            continue;
        }
        let victim = candidates[rng.random_range(0..candidates.len())];
        let name = victim.metadata.name.clone().unwrap_or_default();
        let uid = victim.metadata.uid.clone();
        let params = DeleteParams {
            dry_run: opts.dry_run,
            grace_period_seconds: opts.grace,
            preconditions: uid.clone().map(|u| Preconditions { uid: Some(u), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                let at = unix_ms();
                tracing::info!(
                    tick,
                    pod = %name,
                    unix_ms = at,
                    grace = ?opts.grace,
                    dry_run = opts.dry_run,
                    candidates = candidates.len(),
                    "chaos: killed pod"
                );
                summary.kills.push(Kill {
                    pod: name,
                    uid,
                    unix_ms: at,
                    tick,
                    grace: opts.grace,
                    dry_run: opts.dry_run,
                });
            }
            // Vanished (404) or replaced by a new pod of the same name (409 on the uid precondition) since the list.
            Err(::kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                tracing::warn!(tick, pod = %name, code = s.code, "chaos: pod vanished or was replaced before the delete; tick skipped");
                summary.skipped_ticks += 1;
            }
            Err(e) => return Err(KubeError::from_client(e, "delete", "pods", &namespace)),
        }
    }
    tracing::info!(
        kills = summary.kills.len(),
        skipped_ticks = summary.skipped_ticks,
        ticks = summary.ticks,
        "chaos: done"
    );
    Ok(summary)
}

/// Running and not already being deleted.
pub fn is_killable(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && pod.metadata.name.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::kube::client::Body;
    use ::kube::Client;
    use http::{Request, Response};
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use serde_json::json;
    use tower_test::mock;

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn running(name: &str, uid: &str) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": "histofed", "uid": uid}, "status": {"phase": "Running"}})
    }

    fn pod_list(items: Vec<serde_json::Value>) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items})
    }

    fn status(code: u16, reason: &str, message: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason,
               "message": message, "metadata": {}})
    }

    fn respond(code: u16, body: serde_json::Value) -> Response<Body> {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        Response::builder().status(code).body(Body::from(bytes)).unwrap_or_else(|_| Response::new(Body::empty()))
    }

    /// A mock API server answering each request with the next scripted (method, path prefix, status, body); it
    /// checks the method and the path, and returns what it saw (`METHOD URI BODY` per request).
    fn mock_api(
        script: Vec<(&'static str, &'static str, u16, serde_json::Value)>,
    ) -> (Api<Pod>, tokio::task::JoinHandle<Vec<String>>) {
        let (svc, mut handle): (_, Handle) = mock::pair::<Request<Body>, Response<Body>>();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (method, path, code, body) in script {
                let (req, send) = handle.next_request().await.expect("a request");
                let head = format!("{} {}", req.method(), req.uri());
                assert_eq!(req.method().as_str(), method, "{head}");
                assert!(req.uri().path().starts_with(path), "{head}");
                let sent = req.into_body().collect_bytes().await.expect("request body");
                seen.push(format!("{head} {}", String::from_utf8_lossy(&sent)));
                send.send_response(respond(code, body));
            }
            seen
        });
        (Api::namespaced(Client::new(svc, "histofed"), "histofed"), task)
    }

    fn opts() -> KillOpts {
        KillOpts { every: Duration::from_millis(1), seed: Some(7), ..KillOpts::new("app=histofed-site") }
    }

    #[test]
    fn only_running_pods_that_are_not_terminating_are_killable() {
        let mut p = Pod {
            metadata: ObjectMeta { name: Some("s-0".into()), ..Default::default() },
            spec: None,
            status: Some(PodStatus { phase: Some("Running".into()), ..Default::default() }),
        };
        assert!(is_killable(&p));
        p.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(!is_killable(&p));
        p.metadata.deletion_timestamp = None;
        p.status = Some(PodStatus { phase: Some("Pending".into()), ..Default::default() });
        assert!(!is_killable(&p));
    }

    #[tokio::test]
    async fn forbidden_delete_names_the_verb_resource_and_namespace() {
        let (api, server) = mock_api(vec![
            ("GET", "/api/v1/namespaces/histofed/pods", 200, pod_list(vec![running("histofed-site-0", "u0")])),
            (
                "DELETE",
                "/api/v1/namespaces/histofed/pods/histofed-site-0",
                403,
                status(403, "Forbidden", "pods \"histofed-site-0\" is forbidden: User \"x\" cannot delete resource"),
            ),
        ]);
        let err = kill_pods(api, opts()).await.expect_err("403 must fail");
        let seen = server.await.expect("mock server");
        assert!(seen[0].contains("labelSelector=app%3Dhistofed-site"), "{seen:?}");
        assert!(seen[1].contains(r#""gracePeriodSeconds":0"#), "{seen:?}");
        assert!(seen[1].contains(r#""preconditions":{"uid":"u0"}"#), "{seen:?}");
        assert!(
            matches!(&err, KubeError::Forbidden { verb: "delete", resource: "pods", namespace, .. } if namespace == "histofed")
        );
        assert!(err.is_permanent());
        assert!(err.to_string().starts_with("forbidden: cannot delete pods in namespace histofed:"), "{err}");
    }

    #[tokio::test]
    async fn missing_namespace_on_list_is_not_found() {
        let (api, server) = mock_api(vec![(
            "GET",
            "/api/v1/namespaces/histofed/pods",
            404,
            status(404, "NotFound", "namespaces \"histofed\" not found"),
        )]);
        let err = kill_pods(api, opts()).await.expect_err("404 must fail");
        server.await.expect("mock server");
        assert!(matches!(&err, KubeError::NotFound { verb: "list", resource: "pods", .. }), "{err:?}");
        assert_eq!(err.status_code(), Some(404));
    }

    #[tokio::test]
    async fn server_error_keeps_code_and_reason() {
        let (api, server) = mock_api(vec![(
            "GET",
            "/api/v1/namespaces/histofed/pods",
            500,
            status(500, "InternalError", "etcd is sad"),
        )]);
        let err = kill_pods(api, opts()).await.expect_err("500 must fail");
        server.await.expect("mock server");
        assert!(matches!(&err, KubeError::Api { code: 500, verb: "list", .. }), "{err:?}");
        assert!(err.to_string().contains("InternalError"), "{err}");
        assert!(!err.is_permanent());
    }

    #[tokio::test]
    async fn empty_ticks_and_races_are_skipped_and_the_count_bounds_the_run() {
        let gone = status(404, "NotFound", "pods \"histofed-site-1\" not found");
        let conflict = status(409, "Conflict", "Precondition failed: UID in precondition: u1");
        let deleted = running("histofed-site-1", "u1");
        let (api, server) = mock_api(vec![
            // Tick 1: nothing running (a pending and a terminating pod).
            (
                "GET",
                "/api/v1/namespaces/histofed/pods",
                200,
                pod_list(vec![
                    json!({"metadata": {"name": "histofed-site-0", "uid": "p"}, "status": {"phase": "Pending"}}),
                    json!({"metadata": {"name": "histofed-site-1", "uid": "t",
                                        "deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}}),
                ]),
            ),
            // Tick 2: the pod vanished before the delete.
            ("GET", "/api/v1/namespaces/histofed/pods", 200, pod_list(vec![running("histofed-site-1", "u1")])),
            ("DELETE", "/api/v1/namespaces/histofed/pods/histofed-site-1", 404, gone),
            // Tick 3: replaced before the delete (uid precondition).
            ("GET", "/api/v1/namespaces/histofed/pods", 200, pod_list(vec![running("histofed-site-1", "u1")])),
            ("DELETE", "/api/v1/namespaces/histofed/pods/histofed-site-1", 409, conflict),
            // Ticks 4, 5: two kills, then the run stops (count = 2).
            ("GET", "/api/v1/namespaces/histofed/pods", 200, pod_list(vec![running("histofed-site-1", "u1")])),
            ("DELETE", "/api/v1/namespaces/histofed/pods/histofed-site-1", 200, deleted.clone()),
            ("GET", "/api/v1/namespaces/histofed/pods", 200, pod_list(vec![running("histofed-site-1", "u1")])),
            ("DELETE", "/api/v1/namespaces/histofed/pods/histofed-site-1", 200, deleted),
        ]);
        let before = unix_ms();
        let summary = kill_pods(api, KillOpts { count: 2, dry_run: true, ..opts() }).await.expect("run");
        let seen = server.await.expect("mock server");
        assert_eq!((summary.ticks, summary.skipped_ticks, summary.kills.len()), (5, 3, 2));
        assert!(summary.kills.iter().all(|k| k.pod == "histofed-site-1" && k.dry_run && k.unix_ms >= before));
        assert_eq!(summary.kills.iter().map(|k| k.tick).collect::<Vec<_>>(), [4, 5]);
        assert!(seen.iter().filter(|l| l.starts_with("DELETE")).all(|l| l.contains(r#""dryRun":["All"]"#)), "{seen:?}");
    }

    #[tokio::test]
    async fn max_ticks_bounds_a_run_where_nothing_matches() {
        let empty = || ("GET", "/api/v1/namespaces/histofed/pods", 200, pod_list(vec![]));
        let (api, server) = mock_api(vec![empty(), empty(), empty()]);
        let summary = kill_pods(api, KillOpts { count: 5, max_ticks: Some(3), ..opts() }).await.expect("run");
        server.await.expect("mock server");
        assert_eq!(summary, KillSummary { kills: vec![], skipped_ticks: 3, ticks: 3 });
    }

    #[tokio::test]
    async fn a_seed_reproduces_the_choices() {
        let three = || {
            pod_list(vec![
                running("histofed-site-2", "c"),
                running("histofed-site-0", "a"),
                running("histofed-site-1", "b"),
            ])
        };
        let mut picks = Vec::new();
        for _ in 0..2 {
            let mut script = Vec::new();
            for _ in 0..4 {
                script.push(("GET", "/api/v1/namespaces/histofed/pods", 200, three()));
                script.push(("DELETE", "/api/v1/namespaces/histofed/pods/", 200, running("x", "x")));
            }
            let (api, server) = mock_api(script);
            let s = kill_pods(api, KillOpts { count: 4, seed: Some(42), ..opts() }).await.expect("run");
            server.await.expect("mock server");
            picks.push(s.kills.into_iter().map(|k| k.pod).collect::<Vec<_>>());
        }
        assert_eq!(picks[0], picks[1]);
    }
}
