//! The chaos suite: declarative fault scenarios (`chaos/*.toml`), a runner that starts a real federation and
//! breaks it on schedule, and a report of what survived.
//!
//! Why first-class: chaos testing is one of the main things our users do with histofed. A scenario names the
//! federation, the faults and their timing, and the runner checks the same invariants for every one — the
//! configured rounds complete (or the run stops with the expected error), no completed round is lost, no corrupt
//! checkpoint is loaded, no process is left running, an intruder never becomes a member — and measures how long
//! detection and recovery took. Like `histofed demo`, it is a tool over the product's real processes, not part of
//! them: the roles never know they are under test, except for the in-process faults of `crate::faults`.
//!
//! - [`scenario`]: the file format and its validation;
//! - [`runner`]: processes, namespaces, mounts, triggers, invariants;
//! - [`report`]: the table, `chaos-report.md` and `.json`.

mod judge;
pub mod report;
pub mod runner;
pub mod scenario;

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ChaosError {
    #[error("scenario {}: {message}", .path.display())]
    Scenario { path: PathBuf, message: String },
    #[error("setting up the scenario: {0}")]
    Setup(String),
    #[error("{0}")]
    Io(String),
}

/// Runs every scenario under `path` (a file or a directory), writes the reports into `out`, returns the results.
/// A scenario that cannot run is a failed row, never a silent skip.
pub fn run_all(
    path: &std::path::Path,
    opts: &runner::RunOpts,
    quick_only: bool,
) -> Result<Vec<report::ScenarioResult>, ChaosError> {
    let mut results = Vec::new();
    for file in scenario::Scenario::discover(path)? {
        let s = match scenario::Scenario::load(&file) {
            Ok(s) => s,
            Err(e) => {
                let name = file.file_stem().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                results.push(report::ScenarioResult::broken(&name, e.to_string()));
                continue;
            }
        };
        if quick_only && !s.quick {
            continue;
        }
        eprintln!("chaos: running {} ({})", s.name, s.fault_kinds().join(", "));
        let r =
            runner::run_scenario(&s, opts).unwrap_or_else(|e| report::ScenarioResult::broken(&s.name, e.to_string()));
        eprintln!("chaos: {} {} in {:.1} s", r.name, if r.passed() { "PASS" } else { "FAIL" }, r.wall_secs);
        results.push(r);
    }
    report::write(&results, &opts.out).map_err(|e| ChaosError::Io(format!("writing the chaos report: {e}")))?;
    Ok(results)
}
