//! The `histofed_*` Prometheus metrics, behind methods named for what happened (`round_completed`, `site_event`,
//! `update_rejected`, ...).
//!
//! Why a facade over `prometheus-client`: the actors should say *what happened*, not juggle metric families, label
//! structs and bucket layouts; and one place decides names, units, help texts and label cardinality, which is what a
//! platform team's dashboards and alerts depend on. [`Metrics`] is an `Arc` inside: clone it into every actor.
//!
//! Metric set (Prometheus text format 0.0.4, counters end in `_total`):
//! - `histofed_info{role,version}` 1; `histofed_uptime_seconds`
//! - `histofed_round` (last completed), `histofed_rounds_configured`, `histofed_round_duration_seconds` (histogram),
//!   `histofed_round_retries_total`
//! - `histofed_sites_joined`, `histofed_sites_expected`, `histofed_site_events_total{kind}`
//! - `histofed_node_events_total{kind}` (a node left or regained Ready, from the Kubernetes node watch),
//!   `histofed_pod_remediations_total{outcome}` (site pods force-deleted off a dead node: `deleted`, `already-gone`,
//!   `failed`)
//!   (`joined|lost|rejoined|refused`)
//! - `histofed_updates_total{outcome,reason}` (`accepted` with reason `""`, or `rejected` with a short reason)
//! - `histofed_bytes_sent_total`, `histofed_bytes_received_total`, `histofed_bad_frames_total`
//! - `histofed_aggregation_seconds` (histogram), `histofed_trainer_restarts_total`, `histofed_oom_retries_total`
//! - `histofed_gan_loss{net="d"|"g"}`, `histofed_frechet_distance`
//! - `histofed_dp_epsilon` (differential privacy: ε of the rounds released so far; NaN without DP)
//! - `histofed_quality{metric}` (the evaluator's quality suite at its last run: `fd`, `precision`, `recall`,
//!   `memorized_share`, `class_coverage`, `label_agreement`, `diversity_ratio`, `layout_diversity_ratio`,
//!   `texture_diversity_min`, `edge_excess`; absent before the first run)
//! - `histofed_federated_eval{metric}` (federated evaluation at its last round, sample-weighted over the sites:
//!   `round`, `fd`, `precision`, `recall`, `val_samples`, `sites`)
//! - `histofed_checkpoints_written_total`, `histofed_checkpoint_age_seconds` (computed at scrape time; absent before
//!   the first checkpoint, so an alert on it never fires for a run that has not written one yet)
//! - `histofed_heartbeat_rtt_seconds` (histogram), `histofed_heartbeats_missed_total`

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};

use super::ObsError;

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// At most this many distinct rejection reasons get their own label value; later ones are counted as `other`, so a
/// caller passing free text cannot blow up the series count.
const MAX_REASONS: usize = 32;
/// Longer reasons are cut (label values are for grouping, the log has the details).
const MAX_REASON_CHARS: usize = 64;

/// What happened to a site's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SiteEvent {
    Joined,
    Lost,
    Rejoined,
    /// Admission refused (identity, protocol version, unknown site).
    Refused,
    /// A process lost the site to another process (taken over), or was refused as such a zombie.
    Fenced,
}

impl SiteEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteEvent::Joined => "joined",
            SiteEvent::Lost => "lost",
            SiteEvent::Rejoined => "rejoined",
            SiteEvent::Refused => "refused",
            SiteEvent::Fenced => "fenced",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    role: String,
    version: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpdateLabels {
    outcome: &'static str,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetLabel {
    net: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabel {
    metric: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleMetricLabels {
    role: String,
    metric: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleReportLabels {
    role: String,
    outcome: &'static str,
}

/// Most distinct `{role, metric}` series kept: role names and metric names come from other processes, so the
/// label set is bounded like the rejection reasons are.
const MAX_ROLE_SERIES: usize = 64;

/// What happened to a role's report at the server (the `outcome` label of `histofed_role_reports_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleReportOutcome {
    /// Added to its round's record.
    Recorded,
    /// Names a round the report does not hold (or arrived after the run ended): counted, not recorded.
    Unknown,
    /// Carried a value that is not a finite number, or too many metrics.
    Invalid,
}

impl RoleReportOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleReportOutcome::Recorded => "recorded",
            RoleReportOutcome::Unknown => "unknown-round",
            RoleReportOutcome::Invalid => "invalid",
        }
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Values that only make sense computed when scraped (ages), so nobody has to tick a gauge.
#[derive(Debug)]
struct ScrapeTime {
    started: Instant,
    last_checkpoint: Mutex<Option<Instant>>,
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let uptime = ConstGauge::new(self.started.elapsed().as_secs_f64());
        let metric = encoder.encode_descriptor(
            "uptime",
            "Seconds since this process started.",
            Some(&Unit::Seconds),
            uptime.metric_type(),
        )?;
        uptime.encode(metric)?;
        let last = *self.last_checkpoint.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = last {
            let age = ConstGauge::new(at.elapsed().as_secs_f64());
            let metric = encoder.encode_descriptor(
                "checkpoint_age",
                "Seconds since the last checkpoint was written.",
                Some(&Unit::Seconds),
                age.metric_type(),
            )?;
            age.encode(metric)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    scrape: Arc<ScrapeTime>,
    round: Gauge,
    rounds_configured: Gauge,
    round_duration: Histogram,
    round_retries: Counter,
    sites_joined: Gauge,
    sites_expected: Gauge,
    site_events: Family<KindLabel, Counter>,
    node_events: Family<KindLabel, Counter>,
    remediations: Family<OutcomeLabel, Counter>,
    updates: Family<UpdateLabels, Counter>,
    reasons_seen: Mutex<HashSet<String>>,
    bytes_sent: Counter,
    bytes_received: Counter,
    bad_frames: Counter,
    aggregation: Histogram,
    trainer_restarts: Counter,
    oom_retries: Counter,
    gan_loss: Family<NetLabel, FloatGauge>,
    frechet_distance: FloatGauge,
    dp_epsilon: FloatGauge,
    quality: Family<MetricLabel, FloatGauge>,
    federated_eval: Family<MetricLabel, FloatGauge>,
    checkpoints_written: Counter,
    heartbeat_rtt: Histogram,
    heartbeats_missed: Counter,
    role_metrics: Family<RoleMetricLabels, FloatGauge>,
    role_series: Mutex<HashSet<(String, String)>>,
    role_reports: Family<RoleReportLabels, Counter>,
    roles_joined: Gauge,
}

/// Registers `metric` under `name` and returns the handle the actors update (a clone: the same shared value).
fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    add_with(registry, (name, None), help, metric)
}

/// [`add`] with a unit (the name then ends in it, e.g. `_seconds`).
fn add_with<M: Metric + Clone>(
    registry: &mut Registry,
    (name, unit): (&str, Option<Unit>),
    help: &str,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

/// The process's metrics. Cheap to clone; every method takes `&self` and is safe from any thread.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Metrics {
    /// A fresh registry for a process playing `role` (`server`, `site`, ...).
    pub fn new(role: &str) -> Self {
        let mut r = Registry::with_prefix("histofed");
        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels { role: role.to_string(), version: env!("CARGO_PKG_VERSION") }).set(1);
        r.register("info", "Role and version of this process (always 1)", info);
        let scrape = Arc::new(ScrapeTime { started: Instant::now(), last_checkpoint: Mutex::new(None) });
        r.register_collector(Box::new(Arc::clone(&scrape)));
        // Every kind exists from the start at 0, so `increase(...)` alerts see the first event.
        let site_events = Family::<KindLabel, Counter>::default();
        for kind in [SiteEvent::Joined, SiteEvent::Lost, SiteEvent::Rejoined, SiteEvent::Refused, SiteEvent::Fenced] {
            let _ = site_events.get_or_create(&KindLabel { kind: kind.as_str() });
        }
        let updates = Family::<UpdateLabels, Counter>::default();
        let _ = updates.get_or_create(&UpdateLabels { outcome: "accepted", reason: String::new() });
        // NaN, not 0, until the first evaluation: 0 would read as a perfect generator.
        let frechet_distance = FloatGauge::default();
        frechet_distance.set(f64::NAN);
        let dp_epsilon = FloatGauge::default();
        dp_epsilon.set(f64::NAN);
        let secs = Some(Unit::Seconds);
        let inner = Inner {
            round: add(
                &mut r,
                "round",
                "Last completed round (0 before the first); at a site, the last round it trained",
                Gauge::default(),
            ),
            rounds_configured: add(&mut r, "rounds_configured", "Rounds this run is configured for", Gauge::default()),
            round_duration: add_with(
                &mut r,
                ("round_duration", secs.clone()),
                "Wall time of completed rounds, retries included",
                Histogram::new(exponential_buckets(0.5, 2.0, 14)), // 0.5 s .. ~68 min
            ),
            round_retries: add(
                &mut r,
                "round_retries",
                "Round attempts that missed quorum and were retried",
                Counter::default(),
            ),
            sites_joined: add(&mut r, "sites_joined", "Sites currently joined", Gauge::default()),
            sites_expected: add(&mut r, "sites_expected", "Sites the configuration expects", Gauge::default()),
            site_events: add(&mut r, "site_events", "Site membership events by kind", site_events),
            node_events: add(&mut r, "node_events", "Kubernetes node health changes by kind", Family::default()),
            remediations: add(
                &mut r,
                "pod_remediations",
                "Site pods force-deleted off a dead node, by outcome",
                Family::default(),
            ),
            updates: add(&mut r, "updates", "Site updates by outcome; rejected ones by reason", updates),
            reasons_seen: Mutex::new(HashSet::new()),
            bytes_sent: add(&mut r, "bytes_sent", "Payload bytes sent to peers", Counter::default()),
            bytes_received: add(&mut r, "bytes_received", "Payload bytes received from peers", Counter::default()),
            bad_frames: add(&mut r, "bad_frames", "Frames from peers that did not decode", Counter::default()),
            aggregation: add_with(
                &mut r,
                ("aggregation", secs.clone()),
                "Time spent folding a round's updates and aggregating them (decoding and validation not counted)",
                Histogram::new(exponential_buckets(0.005, 2.0, 14)), // 5 ms .. ~41 s
            ),
            trainer_restarts: add(
                &mut r,
                "trainer_restarts",
                "Generator-trainer restarts by the site supervisor",
                Counter::default(),
            ),
            oom_retries: add(
                &mut r,
                "oom_retries",
                "Local steps retried with a smaller batch after out-of-memory",
                Counter::default(),
            ),
            gan_loss: add(&mut r, "gan_loss", "Mean loss of the last completed round, per network", Family::default()),
            dp_epsilon: add(
                &mut r,
                "dp_epsilon",
                "Differential privacy: epsilon of the rounds released so far",
                dp_epsilon,
            ),
            frechet_distance: add(
                &mut r,
                "frechet_distance",
                "Frechet distance of the global generator at the last evaluation",
                frechet_distance,
            ),
            quality: add(
                &mut r,
                "quality",
                "The evaluator's quality suite at its last run, per metric",
                Family::default(),
            ),
            federated_eval: add(
                &mut r,
                "federated_eval",
                "Federated evaluation at its last round: the sites' scores on their validation splits, sample-weighted",
                Family::default(),
            ),
            checkpoints_written: add(&mut r, "checkpoints_written", "Checkpoints written", Counter::default()),
            heartbeat_rtt: add_with(
                &mut r,
                ("heartbeat_rtt", secs),
                "Round-trip time of answered heartbeat pings",
                Histogram::new(exponential_buckets(0.0005, 2.0, 14)), // 0.5 ms .. ~4 s
            ),
            heartbeats_missed: add(&mut r, "heartbeats_missed", "Heartbeat pings left unanswered", Counter::default()),
            role_metrics: add(
                &mut r,
                "role_metric",
                "Last value each extension role reported, per metric",
                Family::default(),
            ),
            role_series: Mutex::new(HashSet::new()),
            role_reports: add(
                &mut r,
                "role_reports",
                "Reports from extension roles, by what became of them",
                Family::default(),
            ),
            roles_joined: add(&mut r, "roles_joined", "Extension roles currently joined", Gauge::default()),
            registry: r,
            scrape,
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn set_rounds_configured(&self, rounds: u64) {
        self.inner.rounds_configured.set(saturating_i64(rounds));
    }

    /// Round `round` completed after `secs` of wall time.
    pub fn round_completed(&self, round: u64, secs: f64) {
        self.inner.round.set(saturating_i64(round));
        if secs.is_finite() && secs >= 0.0 {
            self.inner.round_duration.observe(secs);
        }
    }

    /// A round attempt missed quorum and is retried.
    pub fn round_retried(&self) {
        self.inner.round_retries.inc();
    }

    pub fn set_sites_joined(&self, sites: usize) {
        self.inner.sites_joined.set(saturating_i64(sites as u64));
    }

    pub fn set_sites_expected(&self, sites: usize) {
        self.inner.sites_expected.set(saturating_i64(sites as u64));
    }

    pub fn site_event(&self, kind: SiteEvent) {
        self.inner.site_events.get_or_create(&KindLabel { kind: kind.as_str() }).inc();
    }

    /// ε of the privacy ledger after the latest round.
    pub fn dp_epsilon(&self, epsilon: f64) {
        self.inner.dp_epsilon.set(epsilon);
    }

    /// A node changed health: `not-ready`, `unreachable`, `ready`, `removed`.
    pub fn node_event(&self, kind: &'static str) {
        self.inner.node_events.get_or_create(&KindLabel { kind }).inc();
    }

    /// A site pod force-delete ended: `deleted`, `already-gone`, `failed`.
    pub fn pod_remediation(&self, outcome: &'static str) {
        self.inner.remediations.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn update_accepted(&self) {
        self.inner.updates.get_or_create(&UpdateLabels { outcome: "accepted", reason: String::new() }).inc();
    }

    /// An update was rejected. `reason` should be a short category (`non-finite`, `shape`, `stale-round`, ...), not
    /// a message: it becomes a label value (cut to 64 characters; past 32 distinct reasons, counted as `other`).
    pub fn update_rejected(&self, reason: &str) {
        let reason = self.bounded_reason(reason);
        self.inner.updates.get_or_create(&UpdateLabels { outcome: "rejected", reason }).inc();
    }

    fn bounded_reason(&self, reason: &str) -> String {
        let reason: String = reason.trim().chars().take(MAX_REASON_CHARS).collect();
        let reason = if reason.is_empty() { "unspecified".to_string() } else { reason };
        let mut seen = self.inner.reasons_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&reason) {
            return reason;
        }
        if seen.len() >= MAX_REASONS {
            return "other".to_string();
        }
        seen.insert(reason.clone());
        reason
    }

    pub fn bytes_sent(&self, bytes: u64) {
        self.inner.bytes_sent.inc_by(bytes);
    }

    pub fn bytes_received(&self, bytes: u64) {
        self.inner.bytes_received.inc_by(bytes);
    }

    /// A frame from a peer did not decode.
    pub fn bad_frame(&self) {
        self.inner.bad_frames.inc();
    }

    /// Validation and aggregation of a round took `secs`.
    pub fn aggregation(&self, secs: f64) {
        if secs.is_finite() && secs >= 0.0 {
            self.inner.aggregation.observe(secs);
        }
    }

    pub fn trainer_restarted(&self) {
        self.inner.trainer_restarts.inc();
    }

    pub fn oom_retried(&self) {
        self.inner.oom_retries.inc();
    }

    /// Mean discriminator and generator losses of the last completed round.
    pub fn gan_losses(&self, d_loss: f64, g_loss: f64) {
        self.inner.gan_loss.get_or_create(&NetLabel { net: "d" }).set(d_loss);
        self.inner.gan_loss.get_or_create(&NetLabel { net: "g" }).set(g_loss);
    }

    pub fn frechet_distance(&self, fd: f64) {
        self.inner.frechet_distance.set(fd);
    }

    /// The headline numbers of the evaluator's last quality-suite run.
    pub fn quality(&self, q: &crate::records::QualitySummary) {
        let set = |metric: &'static str, v: f64| self.inner.quality.get_or_create(&MetricLabel { metric }).set(v);
        set("fd", q.fd);
        set("precision", q.precision);
        set("recall", q.recall);
        set("memorized_share", q.memorized_share);
        set("class_coverage", q.class_coverage);
        set("label_agreement", q.label_agreement);
        set("diversity_ratio", q.diversity_ratio);
        if let Some(l) = q.layout_diversity_ratio {
            set("layout_diversity_ratio", l);
        }
        if let Some((_, t)) = &q.texture_diversity_min {
            set("texture_diversity_min", *t);
        }
        if let Some((_, e)) = &q.edge_excess {
            set("edge_excess", *e);
        }
    }

    /// The sample-weighted result of the last federated evaluation (values a site could not compute are left out).
    pub fn federated_eval(&self, f: &crate::federation::evaluation::FederatedEval) {
        let set =
            |metric: &'static str, v: f64| self.inner.federated_eval.get_or_create(&MetricLabel { metric }).set(v);
        set("round", f.round as f64);
        set("fd", f.frechet_distance);
        set("val_samples", f.val_samples as f64);
        set("sites", f.sites.len() as f64);
        if let Some(p) = f.precision {
            set("precision", p);
        }
        if let Some(r) = f.recall {
            set("recall", r);
        }
    }

    /// A checkpoint was written now; `histofed_checkpoint_age_seconds` counts from here.
    pub fn checkpoint_written(&self) {
        self.inner.checkpoints_written.inc();
        *self.inner.scrape.last_checkpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// A heartbeat ping was answered after `secs`.
    pub fn heartbeat_answered(&self, secs: f64) {
        if secs.is_finite() && secs >= 0.0 {
            self.inner.heartbeat_rtt.observe(secs);
        }
    }

    pub fn heartbeat_missed(&self) {
        self.inner.heartbeats_missed.inc();
    }

    /// A role reported `value` for `metric`. Past [`MAX_ROLE_SERIES`] distinct series new ones are not exported
    /// (the report still holds them); returns whether the value is exported.
    pub fn role_metric(&self, role: &str, metric: &str, value: f64) -> bool {
        let key = (role.to_string(), metric.to_string());
        {
            let mut seen = self.inner.role_series.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.contains(&key) {
                if seen.len() >= MAX_ROLE_SERIES {
                    return false;
                }
                seen.insert(key.clone());
            }
        }
        self.inner.role_metrics.get_or_create(&RoleMetricLabels { role: key.0, metric: key.1 }).set(value);
        true
    }

    /// A role's report reached the server and became `outcome`. `role` is an admitted role's name (the server
    /// admits only short DNS-label names, and only a bounded number of roles).
    pub fn role_report(&self, role: &str, outcome: RoleReportOutcome) {
        self.inner
            .role_reports
            .get_or_create(&RoleReportLabels { role: role.to_string(), outcome: outcome.as_str() })
            .inc();
    }

    pub fn set_roles_joined(&self, roles: usize) {
        self.inner.roles_joined.set(saturating_i64(roles as u64));
    }

    /// The Prometheus text exposition (format 0.0.4, see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, ObsError> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
            .map_err(ObsError::Encode)?;
        Ok(out)
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_checkpoint_age() {
        let m = Metrics::new("server");
        let text = m.encode().unwrap();
        assert!(text.contains("histofed_info{role=\"server\",version=\""), "{text}");
        assert!(text.contains("histofed_uptime_seconds "), "{text}");
        assert!(!text.contains("checkpoint_age"), "absent before the first checkpoint:\n{text}");
        assert!(text.contains("histofed_frechet_distance NaN\n"), "{text}");
        assert!(text.contains("histofed_site_events_total{kind=\"refused\"} 0\n"), "{text}");
        m.checkpoint_written();
        m.bytes_sent(10);
        m.round_completed(3, 1.5);
        let text = m.encode().unwrap();
        for needle in [
            "histofed_checkpoint_age_seconds ",
            "histofed_bytes_sent_total 10",
            "histofed_round 3",
            "histofed_round_duration_seconds_count 1",
            "histofed_checkpoints_written_total 1",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in\n{text}");
        }
    }

    #[test]
    fn federated_evaluation_is_exported_without_undefined_values() {
        let m = Metrics::new("server");
        let f = crate::federation::evaluation::FederatedEval {
            round: 4,
            val_samples: 40,
            frechet_distance: 2.5,
            precision: Some(0.75),
            recall: None,
            per_class_fd: vec![],
            sites: vec![],
            failed: vec![],
            missing: vec![],
        };
        m.federated_eval(&f);
        let text = m.encode().unwrap();
        for needle in [
            "histofed_federated_eval{metric=\"round\"} 4",
            "histofed_federated_eval{metric=\"fd\"} 2.5",
            "histofed_federated_eval{metric=\"precision\"} 0.75",
            "histofed_federated_eval{metric=\"val_samples\"} 40",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in\n{text}");
        }
        assert!(!text.contains("histofed_federated_eval{metric=\"recall\"}"), "{text}");
    }

    #[test]
    fn role_metrics_are_exported_and_bounded() {
        let m = Metrics::new("server");
        assert!(m.role_metric("model-registry", "bytes", 1234.0));
        m.role_report("model-registry", RoleReportOutcome::Recorded);
        m.role_report("model-registry", RoleReportOutcome::Unknown);
        m.set_roles_joined(1);
        let text = m.encode().unwrap();
        for needle in [
            "histofed_role_metric{role=\"model-registry\",metric=\"bytes\"} 1234",
            "histofed_role_reports_total{role=\"model-registry\",outcome=\"recorded\"} 1",
            "histofed_role_reports_total{role=\"model-registry\",outcome=\"unknown-round\"} 1",
            "histofed_roles_joined 1",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in\n{text}");
        }
        for i in 0..100 {
            m.role_metric("r", &format!("m{i}"), 1.0);
        }
        // The first series is still updated; new ones stop at the bound.
        assert!(m.role_metric("model-registry", "bytes", 5.0));
        assert!(!m.role_metric("r", "m99", 1.0));
        let text = m.encode().unwrap();
        assert_eq!(text.matches("histofed_role_metric{").count(), MAX_ROLE_SERIES, "{text}");
    }

    #[test]
    fn rejection_reasons_are_bounded() {
        let m = Metrics::new("server");
        for i in 0..40 {
            m.update_rejected(&format!("reason-{i}"));
        }
        m.update_rejected(&"x".repeat(200));
        let text = m.encode().unwrap();
        assert!(text.contains("reason=\"reason-31\""));
        assert!(!text.contains("reason=\"reason-32\""));
        assert!(text.contains("histofed_updates_total{outcome=\"rejected\",reason=\"other\"} 9"), "{text}");
    }
}
