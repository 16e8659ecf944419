//! The quick chaos subset (scenarios marked `quick = true` in chaos/): each starts a real federation on loopback,
//! breaks it as the scenario says, and must pass every invariant. `make chaos` runs them all.

mod common;

use std::process::Command;

#[test]
fn the_quick_chaos_scenarios_pass_every_invariant() {
    let _guard = common::serial();
    let tmp = tempfile::tempdir().unwrap();
    let chaos = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chaos");
    let out = Command::new(env!("CARGO_BIN_EXE_histofed"))
        .args(["chaos", "run", "--quick", "--no-baseline", "--out"])
        .arg(tmp.path())
        .arg(&chaos)
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("chaos-report.json")).unwrap()).unwrap();
    let results = results.as_array().unwrap();
    assert!(results.len() >= 6, "the quick subset ran: {}", results.len());
    for r in results {
        for inv in r["invariants"].as_array().unwrap() {
            assert_eq!(inv["passed"], true, "{}: {} — {}", r["name"], inv["name"], inv["detail"]);
        }
        assert_eq!(r["rounds_lost"], 0);
    }
    let md = std::fs::read_to_string(tmp.path().join("chaos-report.md")).unwrap();
    assert!(md.contains("| kill-site |") && md.contains("PASS"));
}
