//! The observability HTTP endpoint (axum on the process's tokio runtime) and the client behind `histofed status`.
//!
//! Routes: `/healthz` (liveness: 200 while the process serves at all), `/readyz` (200 once [`Readiness`] is set,
//! else 503 with the reason, so a rollout waits for a resumed server), `/metrics` (Prometheus text) and `/status`
//! (JSON [`StatusSnapshot`]). Those handlers only read shared handles: they never message an actor, so a wedged actor
//! cannot make the probes hang, and liveness stays an honest "the process is up" signal. `/pulse` is the exception
//! by design (see [`super::pulse`]): a bounded round trip through the server actor's mailbox, timed; 503 when it
//! does not answer within [`super::pulse::PULSE_TIMEOUT`], 404 in a process without such an actor.
//!
//! The client speaks plain HTTP/1.1 through hyper's connection API (no TLS stack, no connection pool): it is an
//! operator's one-shot query, bounded by a timeout, and every error names the address it tried.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::metrics::{Metrics, CONTENT_TYPE};
use super::pulse::{Pulse, PulseError, PULSE_TIMEOUT};
use super::{ObsError, Readiness, StatusHandle, StatusSnapshot};

/// Timeout of [`fetch_status`].
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body the client accepts.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What the endpoint serves: the shared handles the actors update.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub status: StatusHandle,
    pub readiness: Readiness,
    /// How to ask the server actor for `/pulse` (unset in other roles).
    pub pulse: Pulse,
}

/// The routes, for embedding in another router or for tests with `tower::ServiceExt::oneshot`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/pulse", get(pulse))
        .with_state(state)
}

/// Binds `addr` (port 0 picks a free port) and serves the routes on a spawned task. Returns the bound address and
/// the task; aborting the task closes the listener.
pub async fn serve(addr: SocketAddr, state: HttpState) -> Result<(SocketAddr, JoinHandle<()>), ObsError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ObsError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ObsError::Bind { addr, source })?;
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(address = %bound, error = %e, "observability HTTP server stopped");
        }
    });
    tracing::info!(address = %bound, "observability HTTP endpoint listening (/healthz /readyz /metrics /status /pulse)");
    Ok((bound, task))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn pulse(State(state): State<HttpState>) -> Response {
    match state.pulse.ask(PULSE_TIMEOUT).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e @ PulseError::NoActor) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn status(State(state): State<HttpState>) -> Json<StatusSnapshot> {
    Json(state.status.snapshot())
}

/// `GET /status` from a running histofed process at `addr` (`host:port` or `http://host:port`), within
/// [`DEFAULT_CLIENT_TIMEOUT`].
pub async fn fetch_status(addr: &str) -> Result<StatusSnapshot, ObsError> {
    fetch_status_with_timeout(addr, DEFAULT_CLIENT_TIMEOUT).await
}

/// [`fetch_status`] with an explicit timeout for the whole exchange (connect, request, body).
pub async fn fetch_status_with_timeout(addr: &str, timeout: Duration) -> Result<StatusSnapshot, ObsError> {
    fetch_json(addr, "/status", timeout).await
}

async fn fetch_json<T: DeserializeOwned>(addr: &str, path: &str, timeout: Duration) -> Result<T, ObsError> {
    let (status, _, body) = http_get(addr, path, timeout).await?;
    if status != 200 {
        let body = String::from_utf8_lossy(&body).trim().chars().take(200).collect();
        return Err(ObsError::Status { addr: addr.to_string(), path: path.to_string(), status, body });
    }
    serde_json::from_slice(&body).map_err(|source| ObsError::BadJson { addr: addr.to_string(), source })
}

/// One HTTP/1.1 GET: (status, content type, body).
async fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String, Vec<u8>), ObsError> {
    let authority = authority(addr)?;
    let exchange = async {
        let http_err = |e: &dyn std::fmt::Display| ObsError::Http { addr: addr.to_string(), detail: e.to_string() };
        let stream = TcpStream::connect(authority.as_str())
            .await
            .map_err(|source| ObsError::Connect { addr: addr.to_string(), source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| http_err(&e))?;
        // The connection future drives the socket; it ends once `sender` is dropped (also when the timeout drops us).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::USER_AGENT, concat!("histofed/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| http_err(&e))?;
        let response = sender.send_request(request).await.map_err(|e| http_err(&e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES).collect().await.map_err(|e| http_err(&e))?;
        Ok((status, content_type, body.to_bytes().to_vec()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ObsError::Timeout { addr: addr.to_string(), secs: timeout.as_secs_f64() })?
}

/// `host:port` from `host:port`, `http://host:port` or `http://host:port/`.
fn authority(addr: &str) -> Result<String, ObsError> {
    let invalid = |reason: &str| ObsError::InvalidAddress { addr: addr.to_string(), reason: reason.to_string() };
    let trimmed = addr.trim();
    if trimmed.starts_with("https://") {
        return Err(invalid("the observability endpoint speaks plain http"));
    }
    let rest = trimmed.strip_prefix("http://").unwrap_or(trimmed).trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
        return Err(invalid("expected host:port"));
    }
    let port = rest.rsplit_once(':').map(|(_, port)| port).ok_or_else(|| invalid("expected host:port"))?;
    if port.parse::<u16>().is_err() {
        return Err(invalid("the port is not a number in 0-65535"));
    }
    Ok(rest.to_string())
}

/// A human-readable view of a status snapshot, for `histofed status`.
pub fn render_status(s: &StatusSnapshot) -> String {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    render_status_at(s, u64::try_from(now_ms).unwrap_or(u64::MAX))
}

fn render_status_at(s: &StatusSnapshot, now_unix_ms: u64) -> String {
    let mut out = String::new();
    let age = if s.updated_unix_ms == 0 {
        "never".to_string()
    } else {
        format!("{:.1} s ago", now_unix_ms.saturating_sub(s.updated_unix_ms) as f64 / 1000.0)
    };
    let joined_expected = s.expected.iter().filter(|e| s.membership.contains(e)).count();
    let rows = [
        ("role", s.role.clone()),
        ("phase", s.phase.clone()),
        ("round", format!("{} of {}", s.round, s.rounds_configured)),
        ("sites", format!("{} joined, {} of {} expected", s.membership.len(), joined_expected, s.expected.len())),
        ("updated", age),
    ];
    for (key, value) in rows {
        out.push_str(&format!("{key:<9} {value}\n"));
    }
    let mut sites: Vec<(&str, &str)> =
        s.expected.iter().map(|e| (e.as_str(), if s.membership.contains(e) { "joined" } else { "missing" })).collect();
    sites
        .extend(s.membership.iter().filter(|m| !s.expected.contains(m)).map(|m| (m.as_str(), "joined (not expected)")));
    if !sites.is_empty() {
        let width = sites.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0).max(4);
        out.push_str(&format!("\n{:<width$}  state\n", "site"));
        for (name, state) in sites {
            out.push_str(&format!("{name:<width$}  {state}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::observability::SiteEvent;

    const T: Duration = Duration::from_secs(5);

    /// One sample line of the text exposition: `name{k="v",...} value`.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    fn parse_exposition(text: &str) -> Vec<Sample> {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
            let name = &line[..name_end];
            assert!(
                !name.is_empty()
                    && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {line:?}"
            );
            let mut rest = &line[name_end..];
            let mut labels = BTreeMap::new();
            if let Some(after) = rest.strip_prefix('{') {
                let mut chars = after.char_indices().peekable();
                loop {
                    let (start, c) = chars.next().unwrap_or_else(|| panic!("unterminated labels: {line}"));
                    if c == '}' {
                        rest = &after[start + 1..];
                        break;
                    }
                    if c == ',' {
                        continue;
                    }
                    let eq = after[start..].find('=').unwrap_or_else(|| panic!("label without '=': {line}")) + start;
                    let key = &after[start..eq];
                    assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad label {key:?}: {line}");
                    while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                        chars.next();
                    }
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "unquoted label value: {line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|(_, c)| c) {
                            Some('\\') => match chars.next().map(|(_, c)| c) {
                                Some('n') => value.push('\n'),
                                Some(c @ ('\\' | '"')) => value.push(c),
                                other => panic!("bad escape {other:?}: {line}"),
                            },
                            Some('"') => break,
                            Some(c) => value.push(c),
                            None => panic!("unterminated label value: {line}"),
                        }
                    }
                    labels.insert(key.to_string(), value);
                }
            }
            let value_text = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before value: {line}"));
            assert!(!value_text.contains(' '), "trailing fields (timestamps are not expected): {line}");
            let value = match value_text {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse::<f64>().unwrap_or_else(|_| panic!("bad value {v:?}: {line}")),
            };
            samples.push(Sample { name: name.to_string(), labels, value });
        }
        samples
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    #[tokio::test]
    async fn endpoints_over_real_http() {
        tokio::time::timeout(Duration::from_secs(30), async {
            let metrics = Metrics::new("server");
            let status = StatusHandle::new(StatusSnapshot {
                role: "server".into(),
                rounds_configured: 10,
                expected: vec!["site-0".into(), "site-1".into(), "site-2".into()],
                phase: "waiting for sites".into(),
                ..Default::default()
            });
            let readiness = Readiness::new("waiting for 3 sites");
            let pulse = Pulse::default();
            let state = HttpState {
                metrics: metrics.clone(),
                status: status.clone(),
                readiness: readiness.clone(),
                pulse: pulse.clone(),
            };
            let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), state).await.unwrap();
            assert_ne!(addr.port(), 0);
            let base = addr.to_string();

            let (code, _, body) = http_get(&base, "/pulse", T).await.unwrap();
            assert_eq!(code, 404, "no actor installed: {}", String::from_utf8_lossy(&body));
            pulse.install(|| {
                Box::pin(async { Some(crate::observability::PulseReply { round: 4, ..Default::default() }) })
            });
            let answer: crate::observability::PulseAnswer = fetch_json(&base, "/pulse", T).await.unwrap();
            assert_eq!(answer.reply.round, 4);
            pulse.install(|| Box::pin(async { None }));
            let (code, _, _) = http_get(&base, "/pulse", T).await.unwrap();
            assert_eq!(code, 503, "an actor that is gone is no pulse");

            let (code, _, body) = http_get(&base, "/healthz", T).await.unwrap();
            assert_eq!((code, body.as_slice()), (200, b"ok\n".as_slice()));

            let (code, _, body) = http_get(&base, "/readyz", T).await.unwrap();
            assert_eq!(code, 503);
            assert!(String::from_utf8_lossy(&body).contains("waiting for 3 sites"));
            readiness.set_ready();
            let (code, _, _) = http_get(&format!("http://{base}/"), "/readyz", T).await.unwrap();
            assert_eq!(code, 200);

            metrics.set_rounds_configured(10);
            metrics.set_sites_joined(2);
            metrics.site_event(SiteEvent::Joined);
            metrics.site_event(SiteEvent::Joined);
            metrics.site_event(SiteEvent::Lost);
            metrics.update_accepted();
            metrics.update_rejected("non-finite");
            metrics.update_rejected("non-finite");
            metrics.update_rejected("a \"quoted\" \\ reason\nwith newline");
            metrics.bytes_sent(1_000);
            metrics.bytes_received(2_500);
            metrics.round_completed(1, 2.0);
            metrics.round_completed(2, 3.0);
            metrics.aggregation(0.02);
            metrics.gan_losses(0.7, 1.3);
            metrics.frechet_distance(42.5);
            metrics.checkpoint_written();
            metrics.trainer_restarted();
            metrics.oom_retried();
            metrics.heartbeat_answered(0.001);
            metrics.heartbeat_missed();
            metrics.bad_frame();

            let (code, content_type, body) = http_get(&base, "/metrics", T).await.unwrap();
            assert_eq!(code, 200);
            assert_eq!(content_type, CONTENT_TYPE);
            let text = String::from_utf8(body).unwrap();
            let samples = parse_exposition(&text);
            let value = |name: &str, labels: &[(&str, &str)]| {
                find(&samples, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{text}")).value
            };
            assert_eq!(value("histofed_updates_total", &[("outcome", "rejected"), ("reason", "non-finite")]), 2.0);
            assert_eq!(value("histofed_updates_total", &[("outcome", "accepted"), ("reason", "")]), 1.0);
            assert_eq!(
                value(
                    "histofed_updates_total",
                    &[("outcome", "rejected"), ("reason", "a \"quoted\" \\ reason\nwith newline")]
                ),
                1.0
            );
            assert_eq!(value("histofed_site_events_total", &[("kind", "joined")]), 2.0);
            assert_eq!(value("histofed_site_events_total", &[("kind", "lost")]), 1.0);
            assert_eq!(value("histofed_round", &[]), 2.0);
            assert_eq!(value("histofed_rounds_configured", &[]), 10.0);
            assert_eq!(value("histofed_sites_joined", &[]), 2.0);
            assert_eq!(value("histofed_bytes_sent_total", &[]), 1000.0);
            assert_eq!(value("histofed_bytes_received_total", &[]), 2500.0);
            assert_eq!(value("histofed_round_duration_seconds_count", &[]), 2.0);
            assert_eq!(value("histofed_round_duration_seconds_sum", &[]), 5.0);
            assert_eq!(value("histofed_round_duration_seconds_bucket", &[("le", "+Inf")]), 2.0);
            assert_eq!(value("histofed_aggregation_seconds_count", &[]), 1.0);
            assert_eq!(value("histofed_gan_loss", &[("net", "d")]), 0.7);
            assert_eq!(value("histofed_gan_loss", &[("net", "g")]), 1.3);
            assert_eq!(value("histofed_frechet_distance", &[]), 42.5);
            assert_eq!(value("histofed_trainer_restarts_total", &[]), 1.0);
            assert_eq!(value("histofed_oom_retries_total", &[]), 1.0);
            assert_eq!(value("histofed_heartbeats_missed_total", &[]), 1.0);
            assert_eq!(value("histofed_bad_frames_total", &[]), 1.0);
            assert_eq!(value("histofed_checkpoints_written_total", &[]), 1.0);
            let age = value("histofed_checkpoint_age_seconds", &[]);
            assert!((0.0..60.0).contains(&age), "checkpoint age {age}");
            let version = env!("CARGO_PKG_VERSION");
            assert_eq!(value("histofed_info", &[("role", "server"), ("version", version)]), 1.0);
            // Every sample has HELP and TYPE lines for its family.
            for family in
                ["histofed_updates_total", "histofed_round_duration_seconds", "histofed_checkpoint_age_seconds"]
            {
                assert!(text.contains(&format!("# TYPE {family} ")), "no TYPE for {family}:\n{text}");
                assert!(text.contains(&format!("# HELP {family} ")), "no HELP for {family}:\n{text}");
            }

            status.update(|s| {
                s.round = 2;
                s.membership = vec!["site-0".into(), "site-2".into()];
                s.phase = "training".into();
            });
            let fetched = fetch_status(&base).await.unwrap();
            assert_eq!(fetched, status.snapshot());
            let shown = render_status(&fetched);
            assert!(shown.contains("round     2 of 10"), "{shown}");
            assert!(shown.contains("site-1  missing"), "{shown}");

            // Error paths name the address and the cause.
            let missing = fetch_json::<StatusSnapshot>(&base, "/nope", T).await.unwrap_err();
            assert!(matches!(missing, ObsError::Status { status: 404, .. }), "{missing}");
            let not_json = fetch_json::<StatusSnapshot>(&base, "/healthz", T).await.unwrap_err();
            assert!(matches!(not_json, ObsError::BadJson { .. }), "{not_json}");
            assert!(not_json.to_string().contains(&base), "{not_json}");

            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            let gone = fetch_status(&base).await.unwrap_err();
            assert!(matches!(gone, ObsError::Connect { .. }), "{gone}");
            assert!(gone.to_string().contains(&base), "{gone}");
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn client_times_out_on_a_silent_peer_and_bind_errors_name_the_address() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = silent.local_addr().unwrap().to_string();
            let hold = tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = silent.accept().await {
                    held.push(socket);
                }
            });
            let err = fetch_status_with_timeout(&addr, Duration::from_millis(200)).await.unwrap_err();
            assert!(matches!(err, ObsError::Timeout { .. }), "{err}");
            assert!(err.to_string().contains(&addr), "{err}");
            hold.abort();

            let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let taken_addr = taken.local_addr().unwrap();
            let state = HttpState {
                metrics: Metrics::new("site"),
                status: StatusHandle::default(),
                readiness: Readiness::default(),
                pulse: Pulse::default(),
            };
            let err = serve(taken_addr, state).await.unwrap_err();
            assert!(matches!(err, ObsError::Bind { .. }), "{err}");
            assert!(err.to_string().contains(&taken_addr.to_string()), "{err}");

            for bad in ["", "https://h:1", "host", "host:http", "http://h:1/status"] {
                assert!(matches!(authority(bad), Err(ObsError::InvalidAddress { .. })), "{bad:?} accepted");
            }
            assert_eq!(authority("http://histofed-server:9100/").unwrap(), "histofed-server:9100");
        })
        .await
        .expect("test timed out");
    }

    #[test]
    fn render_lists_unexpected_members_and_age() {
        let s = StatusSnapshot {
            role: "server".into(),
            round: 3,
            rounds_configured: 5,
            membership: vec!["site-0".into(), "intruder-9".into()],
            expected: vec!["site-0".into(), "site-1".into()],
            phase: "training".into(),
            updated_unix_ms: 10_000,
        };
        let shown = render_status_at(&s, 12_500);
        assert!(shown.contains("updated   2.5 s ago"), "{shown}");
        assert!(shown.contains("sites     2 joined, 1 of 2 expected"), "{shown}");
        assert!(shown.contains("intruder-9  joined (not expected)"), "{shown}");
    }
}
