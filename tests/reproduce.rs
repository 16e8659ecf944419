//! `histofed reproduce --preset quick` end to end, as CI runs it: every GAN × discriminator over its seeds, the
//! federated runs as real server and site processes, the low-regime runs, the classifier arms, the four claims with
//! their intervals and the targets; a rerun keeps every finished run. Asserts the pipeline, not the science.

use std::process::Command;

use histofed::studies::reproduce::{Arm, Reproduction, Setting};

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
fn quick_preset_runs_the_whole_protocol_and_a_rerun_keeps_finished_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, cache) = (tmp.path().join("repro"), tmp.path().join("cache"));
    let first = reproduce(&out, &cache);
    let rep: Reproduction = serde_json::from_slice(&std::fs::read(out.join("reproduction.json")).unwrap()).unwrap();
    let p = &rep.preset;
    let seeds = p.gan_seeds as usize;
    let central_full = rep.runs.iter().filter(|r| r.setting == Setting::Centralized && r.regime == p.full_regime());
    assert_eq!(central_full.count(), 6 * seeds, "{first}");
    let fed: Vec<_> = rep.runs.iter().filter(|r| r.setting == Setting::FedDirichlet).collect();
    assert_eq!(fed.len(), seeds, "one federation per GAN seed: {first}");
    for f in &fed {
        // The federated generator came from real processes: their logs and checkpoints are there.
        let dir = out.join("runs").join(f.name()).join("federation");
        assert!(dir.join("logs/server.log").is_file() && dir.join("checkpoints").is_dir(), "{}", dir.display());
    }
    let low = rep.runs.iter().filter(|r| r.regime == p.low_regime()).count();
    assert_eq!(low, seeds, "the best model retrained on the low regime");
    for r in &rep.runs {
        assert!(r.quality.fd.is_finite() && r.kid().is_finite(), "{}: {:?}", r.name(), r.quality);
        assert!((0.0..=1.0).contains(&r.cas), "{}", r.name());
        let grid = r.grid.as_ref().expect("a sample grid");
        assert!(out.join(grid).is_file(), "{grid}");
    }
    let classifiers = p.classifier_seeds as usize;
    for regime in &p.regimes {
        let n = |arm| rep.arms.iter().filter(|a| a.regime == *regime && a.arm == arm).count();
        assert_eq!(n(Arm::RealOnly), classifiers);
        assert_eq!(n(Arm::Mixed), classifiers * seeds);
        assert_eq!(n(Arm::Filtered), classifiers * seeds);
    }
    assert!(rep.floor.kid.is_some() && rep.noise.kid.is_some());
    assert!(rep.noise.kid > rep.floor.kid, "noise must score worse than real images: {:?} {:?}", rep.noise, rep.floor);
    assert_eq!(rep.claims.len(), 4);
    assert_eq!(rep.targets.len(), 3);
    let md = std::fs::read_to_string(out.join("reproduction.md")).unwrap();
    for c in &rep.claims {
        assert!(md.contains(c.verdict.as_str()) && md.contains(&c.statement), "claim {} not in the report", c.id);
    }
    assert!(md.contains("real images (floor)") && md.contains("colour-matched noise (null)"));
    // The judge learned from its own procedural draw, not from the generators' training images.
    let own = format!("its own procedural draw of {} images per class", p.reference_per_class);
    assert!(p.reference_per_class > 0 && md.contains(&own), "{md}");
    assert!(md.contains("## Agreement per class") && md.contains("| class | real (floor) | noise (null) |"), "{md}");
    assert!(out.join("kid.png").is_file());
    // Where the time went: the three phases, in order, within the invocation's wall time, and in the report.
    assert_eq!(rep.phases.len(), 3, "{:?}", rep.phases);
    let phased: f64 = rep.phases.iter().map(|p| p.secs).sum();
    assert!(rep.phases.iter().all(|p| p.secs > 0.0) && phased <= rep.total_secs, "{:?} {}", rep.phases, rep.total_secs);
    assert!(md.contains("## Time") && md.contains(&rep.phases[1].phase), "{md}");
    assert!(first.contains("claim 4:") && first.contains("target:"), "{first}");

    // A rerun trains nothing again: every run and the arms are kept from the first run, with the same numbers.
    let second = reproduce(&out, &cache);
    assert_eq!(second.matches("done in an earlier run, kept").count(), rep.runs.len() + 1, "{second}");
    assert!(second.contains("(cached)"), "the reference classifier comes from its cache: {second}");
    let again: Reproduction = serde_json::from_slice(&std::fs::read(out.join("reproduction.json")).unwrap()).unwrap();
    assert_eq!(again.runs, rep.runs);
    assert_eq!(again.arms, rep.arms);
    assert_eq!(again.claims, rep.claims);
    assert_eq!((rep.kept_results, again.kept_results), (0, rep.runs.len() + 1));
    let md = std::fs::read_to_string(out.join("reproduction.md")).unwrap();
    assert!(md.contains(&format!("kept {} results of an earlier one", rep.runs.len() + 1)), "{md}");
}

/// SIGTERM (or Ctrl-C) stops a study that runs federation after federation: the federation running then is
/// stopped with all its processes, and no further one starts. (Before, the signal only failed the current cell,
/// and one landing between two federations was swallowed; the study went on.)
#[test]
fn a_signal_stops_the_privacy_study_instead_of_failing_one_cell() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_histofed"))
        .args(["reproduce", "--preset", "quick", "--threads", "1", "--privacy", "inf,clip,10", "--dp-clip", "3"])
        .arg("--out")
        .arg(tmp.path().join("repro"))
        .arg("--set")
        .arg(format!("evaluation.cache_dir=\"{}\"", tmp.path().join("cache").display()))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut started = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        started += usize::from(line.contains("site processes on loopback"));
        lines.push(line);
        // The second federation: the first one installed the handlers, so the signal cannot find them missing.
        if started == 2 {
            // SAFETY: kill(2) on our own child's pid.
            assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = lines.join("\n");
    assert!(started >= 2, "the study never reached its second federation:\n{all}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "an error exit, not death by the signal:\n{all}\n{stderr}");
    assert!(stderr.contains("interrupted (SIGINT or SIGTERM)"), "{stderr}");
    assert!(started < 6, "no federation after the signal (6 cells in all):\n{all}");
    assert!(!all.contains("wrote") && !tmp.path().join("repro/privacy.md").exists(), "{all}");
}
