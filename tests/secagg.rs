//! Secure aggregation through the real runtime: one `histofed server` and its `histofed site`s as separate
//! processes over loopback, the protocol's stages on the control connection and the masked inputs on the bulk
//! plane — with sites that die or hang at each point the protocol has to survive.

mod common;

use std::time::Duration;

use common::{contributors, serial, Fed};
use histofed::records::RunReport;

const SECAGG: &str = "[secagg]\nenabled = true\nclip_range = 1.0\nstage_deadline_secs = 10\n";

fn events<'a>(r: &'a RunReport, kind: &str) -> Vec<&'a histofed::records::RunEvent> {
    r.events.iter().filter(|e| e.kind == kind).collect()
}

/// The server's log without its debug lines (what a failed assertion shows).
fn server_log(fed: &Fed) -> String {
    fed.log("server-1").lines().filter(|l| !l.contains("DEBUG")).collect::<Vec<_>>().join("\n")
}

/// How many values round `round`'s checkpoint of the run in `dir` releases under DP (generator and discriminator,
/// less the tensors held back from the release): the P of the noise's expected length.
fn released_values(dir: &std::path::Path, round: u64) -> usize {
    use histofed::federation::checkpoint::CheckpointStore;
    use histofed::federation::strategy::held_back;
    use histofed::federation::weights::Weights;
    use histofed::models::{DISCRIMINATOR_PREFIX, GENERATOR_PREFIX};
    let store = CheckpointStore::open(dir.join("run/checkpoints"), 5).unwrap();
    let last = store.load_round(round).unwrap();
    let joined = Weights::join_prefixed(&[
        (GENERATOR_PREFIX, &last.parts["generator"]),
        (DISCRIMINATOR_PREFIX, &last.parts["discriminator"]),
    ])
    .unwrap();
    joined.tensors().iter().filter(|t| !held_back(&t.name)).map(|t| t.data.len()).sum()
}

/// Every site answers every stage: each round is unmasked from all of them, and the global model moves.
#[test]
fn secure_rounds_complete_with_every_site() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 3, 2, "", SECAGG);
    fed.start_all();
    let report = fed.finish(Duration::from_secs(240));
    assert!(report.finished, "{report:#?}");
    assert_eq!(report.rounds.len(), 2);
    for r in &report.rounds {
        assert_eq!(contributors(&report, r.round), vec![0, 1, 2], "round {}", r.round);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert!(
            r.global_step_norm.is_finite() && r.global_step_norm > 0.0,
            "round {}: {}",
            r.round,
            r.global_step_norm
        );
    }
    assert!(events(&report, "secagg-failed").is_empty(), "{:?}", report.events);
    let log = fed.log("server-1");
    assert_eq!(log.matches("secure aggregation: unmasked").count(), 2, "one unmasking per round");
}

/// The three dropouts of the protocol, one per round, five sites: a site killed right after its masked input
/// arrived (a survivor that never reveals: its self mask is rebuilt from its neighbours' shares; k = 4, t = 3), a
/// site killed after sharing but before sending (dropped: its pairwise masks are rebuilt from its key's shares;
/// k = 3, t = 3 among four), and a site hung in training past quorum and the grace period (dropped after sharing,
/// as the second; k = 2, t = 2 among three). Every round completes from the survivors; none is retried.
#[test]
fn each_dropout_completes_its_round_from_the_survivors() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let faults = "\
[[faults]]\nkind = \"site-exit\"\nsite = 4\nround = 1\npoint = \"after-upload\"\n\n\
[[faults]]\nkind = \"site-exit\"\nsite = 3\nround = 2\npoint = \"before-upload\"\n\n\
[[faults]]\nkind = \"slow-site\"\nsite = 2\nround = 3\nsecs = 5.0\n";
    let mut fed = Fed::new(tmp.path(), 5, 3, "min_sites = 2\ngrace_secs = 1", &format!("{SECAGG}{faults}"));
    fed.start_all();
    let report = fed.finish_with_killed(Duration::from_secs(300), &[3, 4]);
    assert!(report.finished, "{report:#?}");
    assert_eq!(report.rounds.len(), 3, "{:#?}", report.rounds);
    // Round 1: site 4 died after its masked input arrived: a survivor, its input counts.
    assert_eq!(contributors(&report, 1), vec![0, 1, 2, 3, 4], "{}", server_log(&fed));
    // Round 2: site 3 died after sharing, before sending.
    assert_eq!(contributors(&report, 2), vec![0, 1, 2], "{}", server_log(&fed));
    // Round 3: site 2 hung in training past quorum + grace.
    assert_eq!(contributors(&report, 3), vec![0, 1], "{}", server_log(&fed));
    for r in &report.rounds {
        assert_eq!(r.attempts, 1, "round {} was retried: {}", r.round, server_log(&fed));
        assert!(r.global_step_norm.is_finite() && r.global_step_norm > 0.0, "round {}", r.round);
    }
    let dropped: Vec<(u64, String)> =
        events(&report, "secagg-dropped").iter().map(|e| (e.round, e.detail.clone())).collect();
    assert_eq!(
        dropped,
        vec![(2, "shared but sent no masked input: [3]".into()), (3, "shared but sent no masked input: [2]".into())]
    );
    assert!(events(&report, "secagg-failed").is_empty(), "{:?}", report.events);
    assert_eq!(server_log(&fed).matches("secure aggregation: unmasked").count(), 3, "one unmasking per round");
}

/// A site that lies when it reveals: with a spare share the server rebuilds the secret without it and names the
/// liar (round 1: four revealers, t = 3); with none to spare — a site died after sharing, before sending, so three
/// revealers for t = 3 — the reconstruction fails its commitment and the round fails closed and is retried, never
/// releasing a model from a wrongly unmasked sum (round 2, completed by its second attempt among the three left).
#[test]
fn a_tampered_share_is_named_or_its_round_fails_closed_and_is_retried() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let faults = "\
[[faults]]\nkind = \"tamper-share\"\nsite = 1\nround = 1\n\n\
[[faults]]\nkind = \"tamper-share\"\nsite = 1\nround = 2\n\n\
[[faults]]\nkind = \"site-exit\"\nsite = 3\nround = 2\npoint = \"before-upload\"\n";
    let mut fed = Fed::new(
        tmp.path(),
        4,
        2,
        "min_sites = 2\ngrace_secs = 1\nretry_backoff_secs = 0.2",
        &format!("{SECAGG}{faults}"),
    );
    fed.start_all();
    let report = fed.finish_with_killed(Duration::from_secs(300), &[3]);
    assert!(report.finished, "{report:#?}");
    assert_eq!(report.rounds.len(), 2, "{}", server_log(&fed));
    let bad: Vec<(u64, Option<u32>)> = events(&report, "secagg-bad-share").iter().map(|e| (e.round, e.site)).collect();
    assert_eq!(bad, vec![(1, Some(1))], "round 1 names site 1: {}", server_log(&fed));
    assert_eq!(report.rounds[0].attempts, 1);
    assert_eq!(contributors(&report, 1), vec![0, 1, 2, 3]);
    let failed: Vec<&str> = events(&report, "secagg-failed").iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("fails its commitment"), "{failed:?}");
    assert_eq!(report.rounds[1].attempts, 2, "round 2 failed closed once, then completed: {}", server_log(&fed));
    assert_eq!(contributors(&report, 2), vec![0, 1, 2]);
}

/// A site whose own configuration asks for secure aggregation never sends its update in the clear: a server that
/// runs rounds in the clear (here, configured without `[secagg]`) gets only its refusal, and the round closes with
/// the other site.
#[test]
fn a_site_configured_for_secure_aggregation_refuses_a_round_in_the_clear() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 2, "min_sites = 1", "");
    fed.start_server();
    fed.start_site(0);
    fed.start_site_with(1, &[], &["--set", "secagg.enabled=true", "--set", "secagg.clip_range=1.0"]);
    let report = fed.finish(Duration::from_secs(240));
    assert!(report.finished, "{report:#?}");
    assert_eq!(report.rounds.len(), 2);
    for r in &report.rounds {
        assert_eq!(contributors(&report, r.round), vec![0], "round {}", r.round);
        assert!(r.rejected.is_empty(), "nothing of site 1 reached the server: {:?}", r.rejected);
        assert!(r.secure.is_none());
    }
    let log = fed.log("site-1");
    assert!(log.contains("asked for its update in the clear"), "{log}");
    assert!(!log.contains("update delivered"), "{log}");
    assert!(fed.log("server-1").contains("requires secure aggregation"), "the server hears why");
}

/// Differential privacy over secure aggregation: the sites clip, the server sees only the sum of the clipped
/// updates (each weighed 1/n: DP-FedAvg's unweighted mean) and adds the noise to their mean. The noise is scaled to
/// the m updates in the sum — the released step is z·C·√P/m long — and every round has its ledger entry.
#[test]
fn differential_privacy_noises_the_securely_summed_mean_as_the_mean_of_its_updates() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dp = "[privacy]\nnoise_multiplier = 1.0\nclip_norm = 0.5\n";
    let mut fed = Fed::new(tmp.path(), 3, 2, "", &format!("{SECAGG}{dp}"));
    fed.start_all();
    let report = fed.finish(Duration::from_secs(240));
    assert!(report.finished, "{report:#?}");
    assert_eq!(report.rounds.len(), 2);
    let released = released_values(tmp.path(), 2);
    for r in &report.rounds {
        let s = r.secure.as_ref().expect("aggregated securely");
        assert_eq!(s.survivors, vec![0, 1, 2]);
        let p = r.privacy.expect("a ledger entry");
        assert_eq!((p.updates, p.noise_multiplier, p.clip_norm), (3, 1.0, 0.5), "round {}", r.round);
        assert!(p.epsilon.is_finite() && p.epsilon > 0.0);
        let want = 1.0 * 0.5 * (released as f64).sqrt() / 3.0;
        assert!(
            (r.global_step_norm / want - 1.0).abs() < 0.1,
            "round {}: step {} but noise for the mean of 3 updates is {want} long",
            r.round,
            r.global_step_norm
        );
    }
    assert!(report.rounds[1].privacy.unwrap().epsilon > report.rounds[0].privacy.unwrap().epsilon);
}

/// Distributed DP (`privacy.noise = "sites"`): each site adds Skellam noise before masking, the server adds none.
/// Each released step is as long as the noise of the 3 contributors calibrated for the 2 a round can complete
/// with — z·C·√P·√(3/2)/3, 1.22× the central mechanism's and 0.77× of both noises together — and the ledger
/// charges each round as the Skellam mechanism of the 3 sites' noise.
#[test]
fn with_noise_at_the_sites_the_server_adds_none_and_charges_the_sites_skellam_noise() {
    use histofed::federation::privacy::{epsilon_of, Release};
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dp = "[privacy]\nnoise_multiplier = 1.0\nclip_norm = 0.5\nnoise = \"sites\"\n";
    let mut fed = Fed::new(tmp.path(), 3, 2, "min_sites = 2\ngrace_secs = 10", &format!("{SECAGG}{dp}"));
    fed.start_all();
    let report = fed.finish(Duration::from_secs(240));
    assert!(report.finished, "{report:#?}\n{}", server_log(&fed));
    assert_eq!(report.rounds.len(), 2);
    let released = released_values(tmp.path(), 2);
    let mut ledger = Vec::new();
    for r in &report.rounds {
        let s = r.secure.as_ref().expect("aggregated securely");
        assert_eq!((s.survivors.clone(), s.threshold), (vec![0, 1, 2], 2));
        let p = r.privacy.expect("a ledger entry");
        assert_eq!((p.updates, p.noise_multiplier, p.clip_norm), (3, 1.0, 0.5), "round {}", r.round);
        let k = p.skellam.expect("charged as the sites' Skellam noise");
        assert_eq!(k.contributors, 3);
        // Calibrated for 2 contributors at z = 1, and 3 are in: the variance is 1.5·Δ₂².
        assert!((k.variance / k.l2_sensitivity.powi(2) - 1.5).abs() < 1e-9, "{k:?}");
        ledger.push(Release::Skellam { l1: k.l1_sensitivity, l2: k.l2_sensitivity, variance: k.variance });
        assert!((p.epsilon - epsilon_of(ledger.clone(), p.delta)).abs() < 1e-9, "round {}: ε {}", r.round, p.epsilon);
        let want = 1.0 * 0.5 * (released as f64).sqrt() * 1.5f64.sqrt() / 3.0;
        eprintln!("round {}: step {:.3}, the sites' noise {want:.3}, ε {:.3}", r.round, r.global_step_norm, p.epsilon);
        assert!(
            (r.global_step_norm / want - 1.0).abs() < 0.1,
            "round {}: step {} but the sites' noise in the mean of 3 updates is {want} long",
            r.round,
            r.global_step_norm
        );
    }
    assert!(server_log(&fed).contains("privacy ledger"));
}
