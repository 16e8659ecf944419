//! The run report: what happened in each round, as `report.json` (for machines and tests) and `report.md` (for
//! people). It is rewritten atomically after every completed round, so a crash never leaves a torn report and the
//! file always describes every round that completed.
//!
//! * this file — writing, reading and the markdown of a [`RunReport`] (the record types are [`crate::records`]'s);
//! * [`html`] — a self-contained `report.html` per run (pictures inlined);
//! * [`plots`] — loss and Fréchet curves, grouped bars (PNG).

pub mod html;
pub mod plots;

use std::path::Path;

use crate::federation::checkpoint::write_atomic;
use crate::records::{RoundQuality, RoundRecord, RunReport};

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
        let sections: [fn(&Self, &mut String); 8] = [
            Self::md_header,
            Self::md_partition,
            Self::md_rounds,
            Self::md_privacy,
            Self::md_quality,
            Self::md_federated_eval,
            Self::md_roles,
            Self::md_events,
        ];
        for section in sections {
            section(self, &mut s);
        }
        s
    }

    /// Title and the run's settings.
    fn md_header(&self, s: &mut String) {
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
    }

    /// Images per class at each site.
    fn md_partition(&self, s: &mut String) {
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
    }

    /// One row per completed round.
    fn md_rounds(&self, s: &mut String) {
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
    }

    /// The rounds' privacy ledger entries with their round numbers (empty without differential privacy), and
    /// whether the clipping was adaptive — what report.md and report.html show.
    fn privacy_ledger(&self) -> (Vec<(u64, &crate::records::RoundPrivacy)>, bool) {
        let ledger: Vec<_> = self.rounds.iter().filter_map(|r| r.privacy.as_ref().map(|p| (r.round, p))).collect();
        let adaptive = ledger.iter().any(|(_, p)| p.next_clip_norm.is_some());
        (ledger, adaptive)
    }

    /// The privacy ledger, when the run had differential privacy: ε after every round.
    /// (Clip norms span 1e-4 to 1e2: 4 significant digits.)
    fn md_privacy(&self, s: &mut String) {
        let (ledger, adaptive) = self.privacy_ledger();
        let Some((_, last)) = ledger.last() else { return };
        s.push_str(&format!(
            "\n## Differential privacy (client level, DP-FedAvg)\n\nε = {:.3} at δ = {} after {} released rounds \
             (RDP accountant, every site in every round: no sampling amplification claimed). The guarantee covers \
             a whole site's data (client level), not single images, and trusts the server to add the noise.\n\n\
             | round | noise multiplier | clip norm | updates | clipped at the server | ε |{}\n\
             |---:|---:|---:|---:|---:|---:|{}\n",
            last.epsilon,
            last.delta,
            ledger.len(),
            if adaptive { " noise on updates | fitted (noisy) | next clip norm |" } else { "" },
            if adaptive { "---:|---:|---:|" } else { "" },
        ));
        let opt = |v: Option<f64>, digits: usize| v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "–".into());
        for (round, p) in &ledger {
            s.push_str(&format!(
                "| {round} | {:.4} | {} | {} | {} | {:.3} |",
                p.noise_multiplier,
                sig(p.clip_norm),
                p.updates,
                p.clipped,
                p.epsilon
            ));
            if adaptive {
                s.push_str(&format!(
                    " {} | {} | {} |",
                    opt(p.update_noise_multiplier, 4),
                    opt(p.fitted_share, 2),
                    p.next_clip_norm.map(sig).unwrap_or_else(|| "–".into())
                ));
            }
            s.push('\n');
        }
        if adaptive {
            s.push_str(
                "\nAdaptive clipping (Andrew et al. 2019): after each round the clip norm moves towards the target \
                 quantile of the update norms, from a noisy count of the updates that fitted; the noise multiplier \
                 charged covers the updates' noise and the count's together.\n",
            );
        }
        s.push('\n');
    }

    /// The evaluator's quality suite, on the rounds it ran.
    fn md_quality(&self, s: &mut String) {
        let with_quality: Vec<(u64, &RoundQuality)> =
            self.rounds.iter().filter_map(|r| r.quality.as_ref().map(|q| (r.round, q))).collect();
        if !with_quality.is_empty() {
            s.push_str(
                "\n## Quality suite (reference-classifier features)\n\n| round | FD | precision | recall | memorized | \
                 coverage | agreement | per class | diversity (features / layout; texture, lowest class) | border excess | report |\n\
                 |---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n",
            );
            for (round, q) in with_quality {
                let m = &q.summary;
                s.push_str(&format!(
                    "| {round} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | [json]({}) |\n",
                    m.fd,
                    m.precision,
                    m.recall,
                    m.memorized_share,
                    m.class_coverage,
                    m.label_agreement,
                    m.class_agreement_text(),
                    m.diversity_text(),
                    m.edge_text(),
                    q.report_json
                ));
            }
        }
    }

    /// The sites' scores on their own validation splits, folded.
    fn md_federated_eval(&self, s: &mut String) {
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
    }

    /// What extension roles reported.
    fn md_roles(&self, s: &mut String) {
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
    }

    /// Every event of the run (sites lost and back, retries, restarts).
    fn md_events(&self, s: &mut String) {
        if !self.events.is_empty() {
            s.push_str("\n## Events\n\n| at s | round | site | event | detail |\n|---:|---:|---:|---|---|\n");
            for e in &self.events {
                let site = e.site.map(|v| v.to_string()).unwrap_or_default();
                s.push_str(&format!("| {:.2} | {} | {} | {} | {} |\n", e.at_secs, e.round, site, e.kind, e.detail));
            }
        }
    }
}

/// `v` with 4 significant digits: plain between 0.01 and 10⁵, else in scientific notation.
fn sig(v: f64) -> String {
    if v == 0.0 || (0.01..1e5).contains(&v.abs()) {
        format!("{:.*}", (3 - v.abs().log10().floor().clamp(-2.0, 3.0) as i32).max(0) as usize, v)
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{QualitySummary, RoleOutcome, SiteRound};
    use std::collections::BTreeMap;

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
                class_coverage: 1.0,
                label_agreement: 0.75,
                diversity_ratio: 0.9,
                class_agreement: vec![("ADI".into(), 1.0), ("BACK".into(), 0.5)],
                ..Default::default()
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
        assert!(md.contains("| 1 | 3.250 | 0.50 | 0.25 | 0.00 | 1.00 | 0.75 | ADI 1.00 · BACK 0.50 | 0.90 |"), "{md}");
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

    #[test]
    fn clip_norms_keep_four_significant_digits() {
        assert_eq!((sig(25.4), sig(1.5), sig(0.0123)), ("25.40".into(), "1.500".into(), "0.01230".into()));
        assert_eq!((sig(0.0001), sig(2.5e6)), ("1.000e-4".into(), "2.500e6".into()));
    }
}
