//! `histofed reproduce --preset quick` end to end, as CI runs it: the whole grid (18 cells) trained, measured and
//! judged, files written; a rerun keeps the finished cells. Asserts the pipeline, not the science.

use std::process::Command;

use histofed::reproduce::{Reproduction, Setting};

fn reproduce(out: &std::path::Path, cache: &std::path::Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_histofed"))
        .args(["reproduce", "--preset", "quick", "--threads", "1", "--out"])
        .arg(out)
        .arg("--set")
        .arg(format!("evaluation.cache_dir=\"{}\"", cache.display()))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "reproduce failed:\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    stdout
}

#[test]
fn quick_preset_runs_the_whole_grid_and_a_rerun_keeps_finished_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, cache) = (tmp.path().join("repro"), tmp.path().join("cache"));
    let first = reproduce(&out, &cache);
    let rep: Reproduction = serde_json::from_slice(&std::fs::read(out.join("reproduction.json")).unwrap()).unwrap();
    assert_eq!(rep.cells.len(), 18, "{first}");
    for setting in Setting::ALL {
        assert_eq!(rep.cells.iter().filter(|c| c.setting == setting).count(), 6);
    }
    for c in &rep.cells {
        assert!(c.fd.is_finite() && c.fd >= 0.0, "{}: FD {}", c.name(), c.fd);
        assert!((0.0..=1.0).contains(&c.precision) && (0.0..=1.0).contains(&c.recall), "{}", c.name());
        assert!((0.0..=1.0).contains(&c.accuracy), "{}", c.name());
        assert!(c.quality.is_some());
        assert!(!c.pictures.is_empty());
        for p in &c.pictures {
            assert!(out.join(p).exists(), "{} lists {p}, which is missing", c.name());
        }
    }
    assert_eq!(rep.claims.len(), 4);
    let md = std::fs::read_to_string(out.join("reproduction.md")).unwrap();
    for c in &rep.claims {
        assert!(md.contains(c.verdict.as_str()) && md.contains(&c.statement), "claim {} not in the report", c.id);
    }
    assert!(out.join("fd.png").exists() && out.join("gain.png").exists());
    assert!(first.contains("claim 4:"), "{first}");

    // A rerun trains nothing again: every cell is kept from the first run, with the same numbers.
    let second = reproduce(&out, &cache);
    assert_eq!(second.matches("done in an earlier run, kept").count(), 18, "{second}");
    assert!(second.contains("(cached)"), "the reference classifier comes from its cache: {second}");
    let again: Reproduction = serde_json::from_slice(&std::fs::read(out.join("reproduction.json")).unwrap()).unwrap();
    assert_eq!(again.cells, rep.cells);
}
