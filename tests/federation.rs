//! End-to-end federation over loopback TCP with real processes: one `histofed server` and two `histofed site`s,
//! exactly as they run in pods, with a tiny model so the whole file stays well under a minute of CPU.

mod common;

use std::time::Duration;

use common::{contributors, serial, Fed};
use histofed::actors::server::{DISCRIMINATOR, GENERATOR};
use histofed::config::Config;
use histofed::federation::checkpoint::CheckpointStore;
use histofed::federation::weights::Weights;
use histofed::models::Gan;

#[test]
fn two_sites_two_rounds_end_to_end() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 2, "", "");
    fed.start_all();
    let report = fed.finish(Duration::from_secs(240));
    assert!(report.finished);
    assert_eq!(report.rounds.len(), 2, "{report:#?}");
    for (i, r) in report.rounds.iter().enumerate() {
        assert_eq!(r.round, i as u64 + 1);
        assert_eq!(contributors(&report, r.round), vec![0, 1], "both sites contribute to round {}", r.round);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert!(r.frechet_distance.is_some_and(|v| v.is_finite() && v >= 0.0));
        let png = tmp.path().join("run").join(r.samples_png.as_ref().unwrap());
        assert!(png.exists(), "{}", png.display());
    }
    assert_eq!(report.site_classes.len(), 2);

    // The global weights moved, and the checkpoint loads back into a model bit-exactly.
    let store = CheckpointStore::open(tmp.path().join("run/checkpoints"), 5).unwrap();
    let initial = store.load_round(0).unwrap();
    let last = store.load_round(2).unwrap();
    let moved = initial.parts["generator"].l2_distance(&last.parts["generator"]).unwrap();
    assert!(moved > 0.0, "global generator unchanged after 2 rounds");
    let joined =
        Weights::join_prefixed(&[(GENERATOR, &last.parts["generator"]), (DISCRIMINATOR, &last.parts["discriminator"])])
            .unwrap();
    let cfg = Config::load(&fed.config).unwrap();
    let mut gan = Gan::new(&cfg.model_config().unwrap(), tch::Device::Cpu, 0).unwrap();
    gan.load_weights(&joined).unwrap();
    assert_eq!(gan.generator_weights().unwrap(), last.parts["generator"]);
    assert_eq!(gan.discriminator_weights().unwrap(), last.parts["discriminator"]);
}

#[test]
fn a_panicking_trainer_is_restarted_and_the_round_completes() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let faults = "[[faults]]\nkind = \"trainer-panic\"\nsite = 1\nround = 1\ntimes = 1\n";
    let mut fed = Fed::new(tmp.path(), 2, 2, "", faults);
    fed.start_all();
    let report = fed.finish(Duration::from_secs(240));
    assert_eq!(report.rounds.len(), 2);
    assert_eq!(contributors(&report, 1), vec![0, 1], "the round completes with the restarted site");
    let site1 = &report.rounds[0].contributors[1];
    assert_eq!(site1.trainer_restarts, 1, "site 1 restarted its trainer once in round 1");
    assert_eq!(report.rounds[1].contributors[1].trainer_restarts, 0);
    assert!(fed.log("site-1").contains("injected trainer panic"), "the panic happened:\n{}", fed.log("site-1"));
}
