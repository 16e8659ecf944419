//! The run report: what happened in each round, as `report.json` (for machines and tests) and `report.md` (for
//! people). It is rewritten atomically after every completed round, so a crash never leaves a torn report and the
//! file always describes every round that completed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::actors::messages::LossSummary;
use crate::federation::checkpoint::write_atomic;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteRound {
    pub site_id: u32,
    pub num_samples: u64,
    pub losses: LossSummary,
    pub steps: u32,
    pub train_secs: f64,
    pub trainer_restarts: u32,
    pub batch_size: u32,
    pub oom_retries: u32,
    /// Local step the site resumed this round from after a restart (0 = from the round's start).
    #[serde(default)]
    pub resumed_from_step: u32,
    /// The update was trained before a restart and re-sent from the site's disk.
    #[serde(default)]
    pub from_local_checkpoint: bool,
}

/// Something that happened to the federation (a site lost or back, a round retried, a resume).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// Seconds since the server process started.
    pub at_secs: f64,
    /// Wall-clock time of the event (milliseconds since the Unix epoch), to line it up with outside actions.
    pub at_unix_ms: u64,
    pub round: u64,
    pub site: Option<u32>,
    pub kind: String,
    pub detail: String,
}

/// The headline numbers of a [`QualityReport`], for round records, metrics and tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualitySummary {
    /// Overall Fréchet distance, real test split vs synthetic, in the reference feature space.
    pub fd: f64,
    pub precision: f64,
    pub recall: f64,
    /// Share of synthetic samples suspiciously close to a training image (feature space).
    pub memorized_share: f64,
    /// Same in (pooled) pixel space, when measured.
    pub memorized_share_pixels: Option<f64>,
    pub class_coverage: f64,
    pub label_agreement: f64,
    /// Mean over classes of synthetic / real within-class diversity.
    pub diversity_ratio: f64,
    /// KID (mean over subsets), real test split vs synthetic, in the same feature space, and its spread over subsets.
    #[serde(default)]
    pub kid: Option<f64>,
    #[serde(default)]
    pub kid_std: Option<f64>,
    /// KID and FD in the second feature space: a fixed randomly initialised CNN (no training, no class cues).
    #[serde(default)]
    pub kid_random_cnn: Option<f64>,
    #[serde(default)]
    pub kid_random_cnn_std: Option<f64>,
    #[serde(default)]
    pub fd_random_cnn: Option<f64>,
}

/// The full quality suite of a round, as the round report keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundQuality {
    pub summary: QualitySummary,
    /// Test accuracy of the reference classifier whose feature space the numbers are in.
    pub reference_test_accuracy: f64,
    /// The full report (`quality.json`) and the pictures, relative to the run directory.
    pub report_json: String,
    pub pictures: Vec<String>,
    pub secs: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    /// Attempts this round took (1 = first try reached quorum).
    pub attempts: u32,
    pub participants: Vec<u32>,
    pub contributors: Vec<SiteRound>,
    /// Sites asked but lost or out before answering.
    pub dropped: Vec<u32>,
    /// Rejected updates: (site, reason).
    pub rejected: Vec<(u32, String)>,
    pub mean_losses: LossSummary,
    pub frechet_distance: Option<f64>,
    pub samples_png: Option<String>,
    /// The evaluator's full quality suite, on rounds where it ran (`evaluation.eval_every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<RoundQuality>,
    pub checkpoint: String,
    /// Distance of the new global weights from the previous ones.
    pub global_step_norm: f64,
    pub wall_secs: f64,
    pub aggregate_secs: f64,
    /// When the round became durable (its checkpoint written), milliseconds since the Unix epoch.
    #[serde(default)]
    pub completed_unix_ms: u64,
    /// What the extension roles (`crate::roles`) reported about this round, by role name. Reports arrive after the
    /// round is written, so the report is rewritten when one comes in.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleOutcome>,
    /// Federated evaluation of this round's global generator: the sites' scores on their validation splits,
    /// sample-weighted (`evaluation.at_sites`). Arrives after the round is written, like the roles' reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_eval: Option<crate::federation::evaluation::FederatedEval>,
}

/// One role's report about one round: named numbers, and files it produced (paths as the role names them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleOutcome {
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub run: String,
    pub config_hash: String,
    pub model: String,
    pub strategy: String,
    pub partition: String,
    /// Per site: class histogram of its shard, as the site reported it at join.
    pub site_classes: BTreeMap<u32, Vec<u64>>,
    pub classes: Vec<String>,
    pub rounds_configured: u64,
    pub resumed_from_round: Option<u64>,
    pub rounds: Vec<RoundRecord>,
    pub events: Vec<RunEvent>,
    pub finished: bool,
    pub total_secs: f64,
}

impl RunReport {
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(dir, "report.json", &json).map_err(std::io::Error::other)?;
        write_atomic(dir, "report.md", self.to_markdown().as_bytes()).map_err(std::io::Error::other)?;
        Ok(())
    }

    pub fn read(dir: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(dir.join("report.json"))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("# histofed run `{}`\n\n", self.run));
        s.push_str(&format!(
            "- model: {}\n- strategy: {}\n- partition: {}\n- config hash: {}\n- rounds: {} of {}{}\n- total wall time: {:.1} s\n\n",
            self.model,
            self.strategy,
            self.partition,
            self.config_hash,
            self.rounds.len(),
            self.rounds_configured,
            self.resumed_from_round.map(|r| format!(" (resumed after round {r})")).unwrap_or_default(),
            self.total_secs
        ));
        if !self.site_classes.is_empty() {
            s.push_str("## Partition (images per class at each site)\n\n| site |");
            for c in &self.classes {
                s.push_str(&format!(" {c} |"));
            }
            s.push_str(" total |\n|---|");
            s.push_str(&"---:|".repeat(self.classes.len() + 1));
            s.push('\n');
            for (site, counts) in &self.site_classes {
                s.push_str(&format!("| {site} |"));
                for c in counts {
                    s.push_str(&format!(" {c} |"));
                }
                s.push_str(&format!(" {} |\n", counts.iter().sum::<u64>()));
            }
            s.push('\n');
        }
        s.push_str("## Rounds\n\n| round | attempts | contributors | dropped | rejected | D loss | G loss | Fréchet distance | wall s | samples |\n|---:|---:|---|---|---|---:|---:|---:|---:|---|\n");
        for r in &self.rounds {
            let contributors: Vec<String> = r.contributors.iter().map(|c| c.site_id.to_string()).collect();
            let dropped: Vec<String> = r.dropped.iter().map(|d| d.to_string()).collect();
            let rejected: Vec<String> = r.rejected.iter().map(|(s, why)| format!("{s}: {why}")).collect();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.4} | {:.4} | {} | {:.2} | {} |\n",
                r.round,
                r.attempts,
                contributors.join(", "),
                dropped.join(", "),
                rejected.join("; "),
                r.mean_losses.d_loss,
                r.mean_losses.g_loss,
                r.frechet_distance.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into()),
                r.wall_secs,
                r.samples_png.as_deref().map(|p| format!("[png]({p})")).unwrap_or_default()
            ));
        }
        let with_quality: Vec<(u64, &RoundQuality)> =
            self.rounds.iter().filter_map(|r| r.quality.as_ref().map(|q| (r.round, q))).collect();
        if !with_quality.is_empty() {
            s.push_str(
                "\n## Quality suite (reference-classifier features)\n\n| round | FD | precision | recall | memorized | \
                 coverage | agreement | diversity | report |\n|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
            );
            for (round, q) in with_quality {
                let m = &q.summary;
                s.push_str(&format!(
                    "| {round} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | [json]({}) |\n",
                    m.fd,
                    m.precision,
                    m.recall,
                    m.memorized_share,
                    m.class_coverage,
                    m.label_agreement,
                    m.diversity_ratio,
                    q.report_json
                ));
            }
        }
        let federated: Vec<&crate::federation::evaluation::FederatedEval> =
            self.rounds.iter().filter_map(|r| r.federated_eval.as_ref()).collect();
        if !federated.is_empty() {
            s.push_str(
                "\n## Federated evaluation (sites' validation splits, fixed features, sample-weighted)\n\n| round | \
                 sites | images | FD | precision | recall | per site (id: FD) | failed / missing |\n\
                 |---:|---:|---:|---:|---:|---:|---|---|\n",
            );
            let opt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into());
            for f in federated {
                let per_site: Vec<String> =
                    f.sites.iter().map(|l| format!("{}: {:.3}", l.site_id, l.frechet_distance)).collect();
                let mut absent: Vec<String> = f.failed.iter().map(|(id, why)| format!("{id} ({why})")).collect();
                absent.extend(f.missing.iter().map(|id| format!("{id} (no answer)")));
                s.push_str(&format!(
                    "| {} | {} | {} | {:.3} | {} | {} | {} | {} |\n",
                    f.round,
                    f.sites.len(),
                    f.val_samples,
                    f.frechet_distance,
                    opt(f.precision),
                    opt(f.recall),
                    per_site.join(", "),
                    absent.join("; ")
                ));
            }
        }
        let with_roles: Vec<&RoundRecord> = self.rounds.iter().filter(|r| !r.roles.is_empty()).collect();
        if !with_roles.is_empty() {
            s.push_str("\n## Roles\n\n| round | role | metrics | artifacts |\n|---:|---|---|---|\n");
            for r in with_roles {
                for (name, out) in &r.roles {
                    let metrics: Vec<String> = out.metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    s.push_str(&format!(
                        "| {} | {name} | {} | {} |\n",
                        r.round,
                        metrics.join(", "),
                        out.artifacts.join(", ")
                    ));
                }
            }
        }
        if !self.events.is_empty() {
            s.push_str("\n## Events\n\n| at s | round | site | event | detail |\n|---:|---:|---:|---|---|\n");
            for e in &self.events {
                let site = e.site.map(|v| v.to_string()).unwrap_or_default();
                s.push_str(&format!("| {:.2} | {} | {} | {} | {} |\n", e.at_secs, e.round, site, e.kind, e.detail));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_and_renders() {
        let dir = tempfile::tempdir().unwrap();
        let mut rep =
            RunReport { run: "t".into(), rounds_configured: 2, classes: vec!["A".into()], ..Default::default() };
        rep.site_classes.insert(0, vec![5]);
        rep.rounds.push(RoundRecord {
            round: 1,
            attempts: 1,
            contributors: vec![SiteRound { site_id: 0, ..Default::default() }],
            frechet_distance: Some(1.5),
            ..Default::default()
        });
        rep.rounds[0].roles.insert(
            "model-registry".into(),
            RoleOutcome { metrics: BTreeMap::from([("bytes".to_string(), 42.0)]), artifacts: vec!["a.st".into()] },
        );
        rep.rounds[0].quality = Some(RoundQuality {
            summary: QualitySummary {
                fd: 3.25,
                precision: 0.5,
                recall: 0.25,
                memorized_share: 0.0,
                memorized_share_pixels: None,
                class_coverage: 1.0,
                label_agreement: 0.75,
                diversity_ratio: 0.9,
                kid: None,
                kid_std: None,
                kid_random_cnn: None,
                kid_random_cnn_std: None,
                fd_random_cnn: None,
            },
            reference_test_accuracy: 0.9,
            report_json: "quality/round-001/quality.json".into(),
            pictures: vec![],
            secs: 1.0,
        });
        rep.rounds[0].federated_eval = Some(crate::federation::evaluation::FederatedEval {
            round: 1,
            val_samples: 40,
            frechet_distance: 2.5,
            precision: Some(0.5),
            recall: None,
            per_class_fd: vec![Some(2.0)],
            sites: vec![crate::federation::evaluation::SiteLine {
                site_id: 0,
                val_samples: 40,
                frechet_distance: 2.5,
                precision: Some(0.5),
                recall: None,
                secs: 0.2,
            }],
            failed: vec![(1, "no validation split".into())],
            missing: vec![2],
        });
        rep.write(dir.path()).unwrap();
        assert_eq!(RunReport::read(dir.path()).unwrap(), rep);
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| 1 | 3.250 | 0.50 | 0.25 | 0.00 | 1.00 | 0.75 | 0.90 |"), "{md}");
        assert!(md.contains("| 1 | 1 | 0 |"), "{md}");
        assert!(md.contains("1.5000"));
        assert!(md.contains("| 1 | model-registry | bytes=42 | a.st |"), "{md}");
        assert!(
            md.contains("| 1 | 1 | 40 | 2.500 | 0.50 | – | 0: 2.500 | 1 (no validation split); 2 (no answer) |"),
            "{md}"
        );
    }

    #[test]
    fn reports_without_roles_still_read() {
        // A report written before roles existed has no `roles` key: it must still load.
        let json = serde_json::json!({"round": 1, "attempts": 1, "participants": [], "contributors": [],
            "dropped": [], "rejected": [], "mean_losses": {"d_loss": 0.0, "g_loss": 0.0}, "frechet_distance": null,
            "samples_png": null, "checkpoint": "", "global_step_norm": 0.0, "wall_secs": 0.0, "aggregate_secs": 0.0});
        let r: RoundRecord = serde_json::from_value(json).unwrap();
        assert!(r.roles.is_empty());
        assert!(!serde_json::to_string(&r).unwrap().contains("roles"), "empty roles are not written");
    }
}
