//! What a chaos run found, per scenario and for the suite: the table printed at the end and `chaos-report.md` /
//! `chaos-report.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::faults::Fault;
use crate::records::RunReport;

use super::scenario::Action;

/// One fault as it happened, with what it took the federation to notice and recover.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: String,
    pub target: String,
    /// When it was done (ms since the Unix epoch); `None` for set-up and in-process faults.
    pub at_unix_ms: Option<u64>,
    /// The site it hit, when it hit one.
    pub site: Option<u32>,
    /// Fault → the server's first event about that site (lost, unresponsive).
    pub detection_secs: Option<f64>,
    /// Fault → the first round completed afterwards (with the site contributing again, for site faults).
    pub recovery_secs: Option<f64>,
}

impl FaultRecord {
    pub fn at(kind: &str, target: String, site: Option<u32>, at: u64) -> Self {
        Self { kind: kind.into(), target, at_unix_ms: Some(at), site, detection_secs: None, recovery_secs: None }
    }

    pub fn setup(kind: &str, action: &Action) -> Self {
        let target = match action {
            Action::DiskFull { size_kib } => format!("checkpoint volume of {size_kib} KiB"),
            Action::BadCredentials { site, what } => format!("intruder as site {site}: {what:?}"),
            _ => String::new(),
        };
        Self { kind: kind.into(), target, at_unix_ms: None, site: None, detection_secs: None, recovery_secs: None }
    }

    pub fn inject(f: &Fault) -> Self {
        let (kind, site, round) = (f.label(), f.site(), f.round());
        Self {
            kind,
            target: format!("site {site}, round {round}"),
            at_unix_ms: None,
            site: Some(site),
            detection_secs: None,
            recovery_secs: None,
        }
    }

    /// Reads detection and recovery off the run's report.
    pub fn measure(&mut self, report: &RunReport) {
        let Some(at) = self.at_unix_ms else { return };
        let secs = |t: u64| t.saturating_sub(at) as f64 / 1000.0;
        if let Some(site) = self.site {
            const LOST: [&str; 3] = ["site-disconnected", "site-unresponsive", "site-pod-gone"];
            self.detection_secs = report
                .events
                .iter()
                .find(|e| e.site == Some(site) && e.at_unix_ms >= at && LOST.contains(&e.kind.as_str()))
                .map(|e| secs(e.at_unix_ms));
            self.recovery_secs = report
                .rounds
                .iter()
                .find(|r| r.completed_unix_ms >= at && r.contributors.iter().any(|c| c.site_id == site))
                .map(|r| secs(r.completed_unix_ms));
        } else {
            self.recovery_secs =
                report.rounds.iter().find(|r| r.completed_unix_ms >= at).map(|r| secs(r.completed_unix_ms));
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invariant {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Invariant {
    pub fn pass(name: &str, detail: String) -> Self {
        Self { name: name.into(), passed: true, detail }
    }
    pub fn fail(name: &str, detail: String) -> Self {
        Self { name: name.into(), passed: false, detail }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub name: String,
    pub about: String,
    pub faults: Vec<String>,
    pub rounds_completed: u64,
    pub rounds_configured: u64,
    pub rounds_lost: u64,
    pub corrupt_checkpoints_accepted: u64,
    pub fault_records: Vec<FaultRecord>,
    pub invariants: Vec<Invariant>,
    /// ‖final global − fault-free twin's final global‖ / ‖twin's‖ (same seed); `None` when not measured.
    pub distance_to_baseline: Option<f64>,
    pub wall_secs: f64,
    pub dir: PathBuf,
    pub notes: Vec<String>,
}

impl ScenarioResult {
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(|i| i.passed)
    }

    /// A scenario that could not even start (bad file, no root for a namespace): reported, never silently skipped.
    pub fn broken(name: &str, why: String) -> Self {
        Self {
            name: name.into(),
            about: String::new(),
            faults: Vec::new(),
            rounds_completed: 0,
            rounds_configured: 0,
            rounds_lost: 0,
            corrupt_checkpoints_accepted: 0,
            fault_records: Vec::new(),
            invariants: vec![Invariant::fail("runs", why)],
            distance_to_baseline: None,
            wall_secs: 0.0,
            dir: PathBuf::new(),
            notes: Vec::new(),
        }
    }
}

fn secs(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.2}")).unwrap_or_else(|| "—".into())
}

fn worst(rs: &[FaultRecord], f: impl Fn(&FaultRecord) -> Option<f64>) -> Option<f64> {
    rs.iter().filter_map(f).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
}

/// The suite's table (markdown; readable in a terminal too).
pub fn render_table(results: &[ScenarioResult]) -> String {
    let mut t = String::from(
        "| scenario | faults | rounds | lost | corrupt accepted | detection s (max) | recovery s (max) | distance to fault-free | invariants | verdict |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for r in results {
        let inv: Vec<String> =
            r.invariants.iter().map(|i| format!("{}{}", if i.passed { "✓ " } else { "✗ " }, i.name)).collect();
        t.push_str(&format!(
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.faults.join(", "),
            r.rounds_completed,
            r.rounds_configured,
            r.rounds_lost,
            r.corrupt_checkpoints_accepted,
            secs(worst(&r.fault_records, |f| f.detection_secs)),
            secs(worst(&r.fault_records, |f| f.recovery_secs)),
            r.distance_to_baseline.map(|d| format!("{d:.4}")).unwrap_or_else(|| "—".into()),
            inv.join(" "),
            if r.passed() { "PASS" } else { "FAIL" }
        ));
    }
    t
}

/// `chaos-report.md`: the table, then per scenario each fault's timings and each invariant's detail.
pub fn render_markdown(results: &[ScenarioResult]) -> String {
    let passed = results.iter().filter(|r| r.passed()).count();
    let mut md = format!("# Chaos report\n\n{passed} of {} scenarios passed.\n\n", results.len());
    md.push_str(&render_table(results));
    for r in results {
        md.push_str(&format!("\n## {} — {}\n\n{}\n\n", r.name, if r.passed() { "PASS" } else { "FAIL" }, r.about));
        md.push_str(&format!("Run folder: `{}` ({:.1} s)\n\n", r.dir.display(), r.wall_secs));
        if !r.fault_records.is_empty() {
            md.push_str("| fault | target | detection s | recovery s |\n|---|---|---:|---:|\n");
            for f in &r.fault_records {
                md.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    f.kind,
                    f.target,
                    secs(f.detection_secs),
                    secs(f.recovery_secs)
                ));
            }
            md.push('\n');
        }
        for i in &r.invariants {
            md.push_str(&format!("- {} **{}**: {}\n", if i.passed { "✓" } else { "✗" }, i.name, i.detail));
        }
        for n in &r.notes {
            md.push_str(&format!("- note: {n}\n"));
        }
    }
    md
}

/// Writes `chaos-report.md` and `chaos-report.json` into `dir`.
pub fn write(results: &[ScenarioResult], dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(results).map_err(std::io::Error::other)?;
    crate::federation::checkpoint::write_atomic(dir, "chaos-report.json", &json).map_err(std::io::Error::other)?;
    crate::federation::checkpoint::write_atomic(dir, "chaos-report.md", render_markdown(results).as_bytes())
        .map_err(std::io::Error::other)?;
    Ok(())
}
