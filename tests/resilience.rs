//! Resilience with real processes on loopback: sites killed, hung (SIGSTOP) and restarted, the server killed and
//! restarted, trainers that panic, diverge or run out of memory, bad updates, a corrupt checkpoint, a wrong cookie.
//! Each test prints the detection and recovery times it measured (run with `--nocapture` to see them).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{contributors, serial, Fed};
use histofed::records::RunReport;

const LIMIT: Duration = Duration::from_secs(240);

/// Wall-clock seconds (since the Unix epoch) of the first `kind` event of `site`.
fn event_time(r: &RunReport, kind: &str, site: u32) -> Option<f64> {
    r.events.iter().find(|e| e.kind == kind && e.site == Some(site)).map(|e| e.at_unix_ms as f64 / 1000.0)
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn assert_rounds_once(r: &RunReport, n: u64) {
    let rounds: Vec<u64> = r.rounds.iter().map(|x| x.round).collect();
    assert_eq!(rounds, (1..=n).collect::<Vec<_>>(), "every round exactly once, none lost");
}

#[test]
fn a_killed_site_is_dropped_at_once_and_a_restarted_one_rejoins() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    // Enough rounds that the run cannot end before the restarted site has rejoined and contributed.
    let mut fed = Fed::new(tmp.path(), 3, 10, "min_sites = 2\nlocal_steps = 12", "");
    fed.start_all();
    fed.wait_report(LIMIT, "round 1", |r| !r.rounds.is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let killed_at = now();
    fed.site(2).signal(libc::SIGKILL);
    let r = fed.wait_report(LIMIT, "the loss of site 2", |r| event_time(r, "site-disconnected", 2).is_some());
    let detected = event_time(&r, "site-disconnected", 2).unwrap() - killed_at;
    let r = fed.wait_report(LIMIT, "a round completed without site 2", |r| {
        r.rounds.iter().any(|x| x.round >= 2 && !x.contributors.iter().any(|c| c.site_id == 2))
    });
    let round_without = r.rounds.iter().find(|x| x.round >= 2 && x.contributors.len() == 2).map(|x| x.round).unwrap();
    let restarted_at = Instant::now();
    fed.start_site(2);
    let r = fed.wait_report(LIMIT, "site 2 contributing again", |r| {
        r.rounds.iter().any(|x| x.round > round_without && x.contributors.iter().any(|c| c.site_id == 2))
    });
    let rejoin_secs = restarted_at.elapsed().as_secs_f64();
    let report = fed.finish(LIMIT);
    assert_rounds_once(&report, 10);
    assert!(r.rounds.iter().all(|x| x.contributors.len() >= 2), "quorum held in every round");
    println!(
        "kill-site: disconnect seen {:.3} s after SIGKILL; round {round_without} completed with the other two; \
         restarted site contributed again {rejoin_secs:.2} s after its restart",
        detected
    );
    assert!((0.0..2.0).contains(&detected), "a killed site is seen at once ({detected:.3} s)");
}

#[test]
fn a_hung_site_is_detected_within_two_heartbeats_and_rejoins_after_sigcont() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    // Enough rounds (≈0.5 s each) that the run cannot end before SIGCONT and the rejoin: a run that ended would
    // leave nobody to rejoin.
    let mut fed = Fed::new(tmp.path(), 3, 14, "min_sites = 2\nlocal_steps = 20\nheartbeat_secs = 0.5", "");
    fed.start_all();
    fed.wait_report(LIMIT, "round 1", |r| !r.rounds.is_empty());
    let stopped_at = now();
    fed.site(1).signal(libc::SIGSTOP);
    let r = fed.wait_report(LIMIT, "site 1 declared unresponsive", |r| event_time(r, "site-unresponsive", 1).is_some());
    let detected = event_time(&r, "site-unresponsive", 1).unwrap() - stopped_at;
    fed.wait_report(LIMIT, "a round without site 1", |r| {
        r.rounds.iter().any(|x| x.round >= 2 && !x.contributors.iter().any(|c| c.site_id == 1))
    });
    let resumed = now();
    fed.site(1).signal(libc::SIGCONT);
    let r = fed.wait_report(LIMIT, "site 1 rejoined", |r| event_time(r, "site-rejoined", 1).is_some());
    let rejoined = event_time(&r, "site-rejoined", 1).unwrap() - resumed;
    let r2 = fed.wait_report(LIMIT, "site 1 contributing again", |x| {
        x.rounds.iter().any(|rd| {
            rd.contributors.iter().any(|c| c.site_id == 1) && rd.round > r.rounds.last().map(|l| l.round).unwrap_or(0)
        })
    });
    let report = fed.finish(LIMIT);
    assert_rounds_once(&report, 14);
    println!(
        "hang-site: SIGSTOP detected after {detected:.2} s (heartbeat 0.5 s); SIGCONT → rejoined in {rejoined:.2} s; \
         contributing again by round {}",
        r2.rounds.last().map(|l| l.round).unwrap_or(0)
    );
    assert!(detected > 0.0, "detected after the hang, not before ({detected:.2} s)");
    assert!(detected <= 2.0 * 0.5 + 0.6, "hang detected in {detected:.2} s, more than two periods (+ slack)");
}

#[test]
fn a_killed_server_resumes_from_its_checkpoint_and_loses_no_round() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 5, "local_steps = 8", "");
    fed.start_all();
    fed.wait_report(LIMIT, "round 2", |r| r.rounds.len() >= 2);
    fed.server.as_ref().unwrap().signal(libc::SIGKILL);
    let _ = fed.server.take();
    let before = fed.report().unwrap().rounds.len() as u64;
    let restarted = Instant::now();
    fed.start_server();
    let r = fed.wait_report(LIMIT, "a round after the restart", |r| r.rounds.len() as u64 > before);
    let recovery = restarted.elapsed().as_secs_f64();
    let report = fed.finish(LIMIT);
    assert_rounds_once(&report, 5);
    assert!(report.finished);
    assert_eq!(report.resumed_from_round, Some(before), "resumed from the newest checkpoint");
    println!(
        "kill-server: killed after round {before}; restarted server resumed, sites rejoined and round {} completed \
         {recovery:.2} s after the restart",
        r.rounds.last().unwrap().round
    );
}

#[test]
fn trainer_failures_restart_halve_the_batch_or_escalate() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let faults = "\
[[faults]]\nkind = \"nan-loss\"\nsite = 0\nround = 1\ntimes = 1\n\n\
[[faults]]\nkind = \"trainer-oom\"\nsite = 1\nround = 1\nfits_batch = 4\n\n\
[[faults]]\nkind = \"trainer-panic\"\nsite = 2\nround = 2\ntimes = 10\n";
    let mut fed = Fed::new(tmp.path(), 3, 3, "min_sites = 2\nmin_batch_size = 2", faults);
    fed.start_all();
    let report = fed.finish(LIMIT);
    assert_rounds_once(&report, 3);
    let r1 = &report.rounds[0];
    assert_eq!(contributors(&report, 1), vec![0, 1, 2]);
    assert_eq!(r1.contributors[0].trainer_restarts, 1, "NaN → restart from the round's weights");
    assert_eq!((r1.contributors[1].batch_size, r1.contributors[1].oom_retries), (4, 2), "16 → 8 → 4 after two OOMs");
    assert_eq!(contributors(&report, 2), vec![0, 1], "site 2 exhausted its restart budget");
    assert_eq!(report.rounds[1].dropped, vec![2], "…and said so instead of vanishing");
    assert_eq!(contributors(&report, 3), vec![0, 1, 2], "a fresh trainer serves the next round");
    assert!(fed.log("site-2").contains("restart budget exhausted"));
}

#[test]
fn bad_updates_are_rejected_with_their_reason_and_rounds_go_on() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let faults = "\
[[faults]]\nkind = \"bad-update\"\nsite = 2\nround = 1\nwhat = \"nan\"\n\n\
[[faults]]\nkind = \"bad-update\"\nsite = 2\nround = 2\nwhat = \"wrong-shape\"\n\n\
[[faults]]\nkind = \"bad-update\"\nsite = 2\nround = 3\nwhat = \"stale-round\"\n\n\
[[faults]]\nkind = \"bad-update\"\nsite = 1\nround = 4\nwhat = \"huge-norm\"\n";
    let mut fed = Fed::new(tmp.path(), 3, 4, "min_sites = 2\nmax_update_norm = 1000.0", faults);
    fed.start_all();
    let report = fed.finish(LIMIT);
    assert_rounds_once(&report, 4);
    let reasons: Vec<String> = report.rounds.iter().map(|r| format!("{:?}", r.rejected)).collect();
    assert!(reasons[0].contains("NonFinite"), "{reasons:?}");
    assert!(reasons[1].contains("WrongShape"), "{reasons:?}");
    assert!(reasons[2].contains("StaleRound"), "{reasons:?}");
    assert!(reasons[3].contains("NormBound"), "{reasons:?}");
    assert_eq!(contributors(&report, 1), vec![0, 1]);
    assert_eq!(contributors(&report, 4), vec![0, 2]);
}

#[test]
fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_one() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 2, "", "");
    fed.start_all();
    fed.finish(LIMIT);
    // Corrupt round 2's generator, then ask for one more round: the server must resume from round 1.
    let ck = tmp.path().join("run/checkpoints");
    let gen = std::fs::read_dir(&ck)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.contains("000002") && n.contains("generator")
        })
        .expect("round 2 generator file");
    let bytes = std::fs::read(&gen).unwrap();
    std::fs::write(&gen, &bytes[..bytes.len() / 2]).unwrap();
    let text = std::fs::read_to_string(&fed.config).unwrap().replace("rounds = 2", "rounds = 3");
    std::fs::write(&fed.config, text).unwrap();
    fed.start_all();
    let report = fed.finish(LIMIT);
    assert_eq!(report.resumed_from_round, Some(1), "fell back past the corrupt round-2 checkpoint");
    assert_rounds_once(&report, 3);
    let log = fed.log("server-2");
    assert!(log.contains("skipping a corrupt checkpoint"), "a warning names the corrupt checkpoint:\n{log}");
}

#[test]
fn a_site_with_the_wrong_cookie_never_joins() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 2, "min_sites = 1\njoin_timeout_secs = 4", "");
    fed.start_server();
    fed.start_site(0);
    fed.start_site_env(1, &[("HISTOFED_COOKIE", "not-the-cookie")]);
    let intruder = fed.sites[1].take();
    let report = fed.finish(LIMIT);
    drop(intruder);
    assert_rounds_once(&report, 2);
    assert_eq!(report.site_classes.keys().copied().collect::<Vec<_>>(), vec![0], "the intruder never joined");
    for r in 1..=2 {
        assert_eq!(contributors(&report, r), vec![0]);
    }
}

#[test]
fn a_restarted_site_process_resumes_its_round_from_its_local_checkpoint() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    // Both sites are needed for quorum, so the round waits for the killed one to come back.
    let mut fed = Fed::new(tmp.path(), 2, 3, "local_steps = 400\nlocal_checkpoint_every = 25", "");
    fed.start_all();
    fed.wait_report(LIMIT, "round 1", |r| !r.rounds.is_empty());
    let progress = tmp.path().join("run/sites/site-1/progress/round-000002.json");
    let start = Instant::now();
    while !progress.exists() {
        assert!(start.elapsed() < LIMIT, "site 1 never checkpointed round 2{}", common::logs(tmp.path()));
        std::thread::sleep(Duration::from_millis(20));
    }
    fed.site(1).signal(libc::SIGKILL);
    let restarted = Instant::now();
    fed.start_site(1);
    let r = fed.wait_report(LIMIT, "round 2 with site 1", |r| contributors(r, 2).contains(&1));
    let recovery = restarted.elapsed().as_secs_f64();
    let report = fed.finish(LIMIT);
    assert_rounds_once(&report, 3);
    let site1 = r.rounds[1].contributors.iter().find(|c| c.site_id == 1).unwrap();
    assert!(site1.resumed_from_step >= 25, "resumed mid-round, not from step 0: {site1:?}");
    assert_eq!(site1.resumed_from_step % 25, 0, "from a checkpoint boundary: {site1:?}");
    assert!(fed.log("site-1").contains("resuming the round from a local checkpoint"));
    println!(
        "kill-site mid-round: restarted site resumed round 2 at local step {} of 400; round 2 completed {recovery:.2} s \
         after the restart (site 0 re-sent its finished update from disk: {})",
        site1.resumed_from_step,
        r.rounds[1].contributors.iter().any(|c| c.site_id == 0 && c.from_local_checkpoint)
    );
}

#[test]
fn a_failing_checkpoint_volume_ends_the_run_with_a_clear_error_and_loses_no_round() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 8, "local_steps = 6", "");
    fed.start_all();
    fed.wait_report(LIMIT, "round 2", |r| r.rounds.len() >= 2);
    // The volume goes bad: the checkpoint directory is replaced by a file, so every write fails.
    let ck = tmp.path().join("run/checkpoints");
    let moved = tmp.path().join("run/checkpoints.saved");
    std::fs::rename(&ck, &moved).unwrap();
    std::fs::write(&ck, b"not a directory").unwrap();
    let dir = tmp.path().to_path_buf();
    let status = fed.server.as_mut().unwrap().wait(LIMIT, &dir);
    assert!(!status.success(), "the run must fail, not report rounds it could not save");
    let log = fed.log("server-1");
    assert!(log.contains("cannot write the checkpoint of round"), "clear error:\n{log}");
    let report = fed.report().unwrap();
    let done = report.rounds.len() as u64;
    assert!(done < 8 && !report.finished);
    assert_rounds_once(&report, done);
    // Every round the report calls completed is on disk (in the old directory or written before the swap).
    for r in &report.rounds {
        assert!(moved.join(&r.checkpoint).exists(), "round {} has its checkpoint {}", r.round, r.checkpoint);
    }
    // The volume comes back: a restarted server resumes where the durable rounds end and finishes the run.
    std::fs::remove_file(&ck).unwrap();
    std::fs::rename(&moved, &ck).unwrap();
    for site in fed.sites.iter_mut().flatten() {
        let _ = site.wait(Duration::from_secs(30), &dir);
    }
    fed.start_all();
    let report = fed.finish(LIMIT);
    assert_eq!(report.resumed_from_round, Some(done));
    assert_rounds_once(&report, 8);
    println!("checkpoint volume failure: run stopped after round {done} with a clear error; resumed and finished 8");
}

#[test]
fn a_site_of_another_protocol_version_is_refused_with_the_reason() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 2, "min_sites = 1\njoin_timeout_secs = 4", "");
    fed.start_server();
    fed.start_site(0);
    fed.start_site_with(1, &[], &["--protocol-version", "1"]);
    let dir = tmp.path().to_path_buf();
    let status = fed.sites[1].as_mut().unwrap().wait(LIMIT, &dir);
    assert!(!status.success(), "a refused site exits with an error");
    let log = fed.log("site-1");
    let expected =
        format!("protocol version 1 is not supported (server speaks {})", histofed::actors::messages::PROTOCOL_VERSION);
    assert!(log.contains(&expected), "the refusal names both versions:\n{log}");
    let _ = fed.sites[1].take();
    let report = fed.finish(LIMIT);
    assert_eq!(report.site_classes.keys().copied().collect::<Vec<_>>(), vec![0], "never a member");
    assert_rounds_once(&report, 2);
}

#[test]
fn a_site_that_hears_nothing_from_the_server_gives_up_in_time() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 1, 1, "", "");
    fed.edit_config("reconnect_secs = 0.2", "reconnect_secs = 0.2\nsite_give_up_secs = 2.0");
    let start = Instant::now();
    fed.start_site(0);
    let dir = tmp.path().to_path_buf();
    let status = fed.sites[0].as_mut().unwrap().wait(Duration::from_secs(60), &dir);
    let took = start.elapsed().as_secs_f64();
    assert!(!status.success());
    let log = fed.log("site-0");
    assert!(log.contains("site_give_up_secs"), "the error names the setting:\n{log}");
    assert!(took < 20.0, "gave up after {took:.1} s (limit 2 s + start-up)");
    println!("give-up: a site with no server stopped after {took:.1} s (site_give_up_secs = 2)");
}

#[test]
fn a_round_made_durable_just_before_a_crash_keeps_its_record() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 2, "", "");
    fed.start_all();
    fed.finish(LIMIT);
    // The crash window: round 2's checkpoint is on disk, the report was not rewritten yet.
    let path = tmp.path().join("run/report.json");
    let mut report: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    report["rounds"].as_array_mut().unwrap().retain(|r| r["round"] != 2);
    std::fs::write(&path, serde_json::to_vec(&report).unwrap()).unwrap();
    fed.edit_config("rounds = 2", "rounds = 3");
    fed.start_all();
    let report = fed.finish(LIMIT);
    assert_eq!(report.resumed_from_round, Some(2));
    assert_rounds_once(&report, 3);
    assert_eq!(contributors(&report, 2), vec![0, 1], "round 2's record came back from its checkpoint");
}

/// FedAvgM's server momentum survives a server SIGKILL: every round's checkpoint carries it (its `strategy` part:
/// with server learning rate 1 the momentum of round r is exactly global_r − global_{r−1} for trained tensors), and
/// the restarted server restores it before the next round.
#[test]
fn server_momentum_is_checkpointed_and_restored_after_a_kill() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 4, "local_steps = 4\nstrategy = \"fedavgm:1.0:0.9\"", "");
    fed.start_all();
    fed.wait_report(LIMIT, "round 2", |r| r.rounds.len() >= 2);
    fed.server.as_ref().unwrap().signal(libc::SIGKILL);
    let _ = fed.server.take();
    let store = histofed::federation::checkpoint::CheckpointStore::open(tmp.path().join("run/checkpoints"), 5).unwrap();
    let (c1, c2) = (store.load_round(1).unwrap(), store.load_round(2).unwrap());
    let m = c2.parts.get("strategy").expect("the checkpoint holds the server optimiser's state").strip_prefix("m.");
    let (g1, g2) = (&c1.parts["generator"], &c2.parts["generator"]);
    let mut checked = 0;
    for t in g2.tensors() {
        let name = format!("generator.{}", t.name);
        if histofed::federation::strategy::server_opt::is_statistic(&name) {
            continue;
        }
        let (prev, mom) = (g1.get(&t.name).unwrap(), m.get(&name).expect("a moment per trained tensor"));
        for ((a, b), mo) in t.data.iter().zip(&prev.data).zip(&mom.data) {
            assert!((a - b - mo).abs() <= 1e-5 * (1.0 + mo.abs()), "{name}: step {} vs momentum {mo}", a - b);
        }
        checked += 1;
    }
    assert!(checked > 3, "trained generator tensors compared: {checked}");
    let before = fed.report().unwrap().rounds.len() as u64;
    fed.start_server();
    let report = fed.finish(LIMIT);
    assert_rounds_once(&report, 4);
    assert_eq!(report.resumed_from_round, Some(before));
    assert!(
        fed.log("server-2").contains("restoring the strategy's state from the checkpoint"),
        "{}",
        fed.log("server-2")
    );
}

/// GET over plain HTTP/1.0; the body.
fn http_body(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// Fencing with two processes claiming site 1. Process A is cut off on the control connection in round 2 (an
/// injected control-plane partition; its bulk link still works) and is slow to finish that round; the server
/// loses it; a fresh process B for site 1 takes the site over. A's late upload is refused as fenced (counted under
/// `reason="fenced"`), A stops with a non-zero exit saying why, B contributes, and every round counts once.
#[test]
fn a_second_process_for_the_same_site_fences_the_first_and_its_late_upload_is_refused() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let faults = "[[faults]]\nkind = \"control-partition\"\nsite = 1\nround = 2\nsecs = 15\n\n\
                  [[faults]]\nkind = \"slow-site\"\nsite = 1\nround = 2\nsecs = 7\n";
    let mut fed = Fed::new(tmp.path(), 3, 20, "min_sites = 2\nlocal_steps = 20\nheartbeat_secs = 0.5", faults);
    // Process B runs the same configuration without the faults (they are A's).
    let text = std::fs::read_to_string(&fed.config).unwrap();
    let config_b = tmp.path().join("config-b.toml");
    std::fs::write(&config_b, &text[..text.find("[[faults]]").unwrap()]).unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    fed.start_server_with(&["--http", &addr]);
    for id in 0..3 {
        fed.start_site(id);
    }
    fed.wait_report(LIMIT, "site 1 lost in round 2", |r| event_time(r, "site-unresponsive", 1).is_some());
    let mut zombie = fed.sites[1].take().unwrap();
    let b = common::spawn(tmp.path(), "site-1b", &["site", "--config", config_b.to_str().unwrap(), "--site-id", "1"]);
    fed.sites[1] = Some(b);
    let r = fed.wait_report(LIMIT, "site 1 taken over", |r| event_time(r, "site-fenced", 1).is_some());
    let fenced = r.events.iter().find(|e| e.kind == "site-fenced" && e.site == Some(1)).unwrap();
    assert!(fenced.detail.contains("taken over by process"), "{fenced:?}");
    // A finishes its slow round after the take-over and uploads with its old admission: refused as fenced.
    let r = fed.wait_report(LIMIT, "A's upload refused", |r| event_time(r, "fenced-transfer", 1).is_some());
    let refused = r.events.iter().find(|e| e.kind == "fenced-transfer" && e.site == Some(1)).unwrap();
    assert!(refused.detail.starts_with("Upload by process"), "{refused:?}");
    let metrics = http_body(&addr, "/metrics");
    assert!(
        metrics.lines().any(|l| l == r#"histofed_updates_total{outcome="rejected",reason="fenced"} 1"#),
        "the fenced upload is counted once:\n{metrics}"
    );
    let status = zombie.wait(Duration::from_secs(30), tmp.path());
    assert!(!status.success(), "a fenced process exits with an error: {status}");
    let log = std::fs::read_to_string(tmp.path().join("site-1.log")).unwrap();
    assert!(log.contains("fenced: another process took this site over"), "{log}");
    let report = fed.finish(LIMIT);
    assert_rounds_once(&report, 20);
    for round in &report.rounds {
        let ids = contributors(&report, round.round);
        assert!(ids.iter().filter(|&&s| s == 1).count() <= 1, "site 1 counted once in round {}", round.round);
    }
    let b_rounds = report.rounds.iter().filter(|x| x.contributors.iter().any(|c| c.site_id == 1)).count();
    assert!(b_rounds >= 5, "the replacement contributed in {b_rounds} rounds");
    assert!(
        report.rounds.iter().any(|x| x.rejected.iter().any(|(s, why)| *s == 1 && why.contains("held by another"))),
        "the refused upload is in its round's record"
    );
    println!(
        "fencing: site 1 lost at {:.2} s, taken over at {:.2} s, A's upload refused at {:.2} s (run clock)",
        r.events.iter().find(|e| e.kind == "site-unresponsive").map(|e| e.at_secs).unwrap_or(0.0),
        fenced.at_secs,
        refused.at_secs
    );
}

/// Differential privacy across a server SIGKILL: every round's ledger entry (ε after it) equals ε recomputed from the
/// rounds that completed — the restarted server resumes the ledger from its checkpoint, nothing charged twice or
/// lost — and `privacy.max_epsilon` ends the run cleanly before the round that would pass it, naming the budget.
#[test]
fn the_privacy_ledger_survives_a_server_kill_and_the_budget_ends_the_run_cleanly() {
    use histofed::federation::privacy::{epsilon_of, Release};
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (z, delta) = (0.5, 1e-5);
    let eps = |n: usize| epsilon_of(std::iter::repeat_n(Release::gaussian(z), n), delta);
    // A budget that holds exactly 5 rounds of the 9 configured.
    let max = (eps(5) + eps(6)) / 2.0;
    // A small clip norm and multiplier keep the noise (std z·C/m = 0.0025) from ruining the model: this test is
    // about the ledger. (Far smaller norms drown in the f32 rounding of the weights.)
    // Adaptive clipping from C = 0.01 towards the median update norm: the clip norm a round chose must survive the
    // kill too (the restarted server resumes it from the ledger).
    let privacy = format!(
        "[privacy]\nnoise_multiplier = {z}\nclip_norm = 0.01\ndelta = {delta}\nmax_epsilon = {max}\n\
         target_quantile = 0.5\n"
    );
    let mut fed = Fed::new(tmp.path(), 2, 9, "local_steps = 8", &privacy);
    fed.start_all();
    fed.wait_report(LIMIT, "round 2", |r| r.rounds.len() >= 2);
    fed.server.as_ref().unwrap().signal(libc::SIGKILL);
    let _ = fed.server.take();
    let before = fed.report().unwrap().rounds.len();
    fed.start_server();
    let report = fed.finish(LIMIT);
    assert!(report.finished, "the budget ends the run as a success");
    assert_eq!(report.resumed_from_round, Some(before as u64));
    assert_rounds_once(&report, 5);
    for (i, r) in report.rounds.iter().enumerate() {
        let p = r.privacy.as_ref().unwrap_or_else(|| panic!("round {} has no ledger entry", r.round));
        let want = eps(i + 1);
        assert!((p.epsilon - want).abs() < 1e-9 * want, "round {}: ε {} recomputed {want}", r.round, p.epsilon);
        assert_eq!((p.noise_multiplier, p.updates, p.delta), (z, 2, delta));
        // Clipping at the sites (the default): no update reached the server longer than C, though a round's raw
        // update is far longer than 0.01.
        assert_eq!(p.clipped, 0, "round {}: the sites clipped before sending", r.round);
        assert!(p.epsilon <= max);
        // σ_b defaults to z with 2 sites: the updates get z/√(3/4).
        let z_update = p.update_noise_multiplier.expect("adaptive clipping records the update noise");
        assert!((z_update - z / 0.75f64.sqrt()).abs() < 1e-12, "round {}: z_Δ {z_update}", r.round);
        let want_c = if i == 0 { 0.01 } else { report.rounds[i - 1].privacy.and_then(|q| q.next_clip_norm).unwrap() };
        assert_eq!(p.clip_norm, want_c, "round {}: the clip norm the round before chose", r.round);
        assert!(p.fitted_share.is_some() && p.next_clip_norm.is_some());
    }
    let budget = report.events.iter().find(|e| e.kind == "privacy-budget").expect("a privacy-budget event");
    assert!(budget.detail.contains("max_epsilon") && budget.detail.contains("round 6"), "{budget:?}");
    let md = std::fs::read_to_string(fed.dir.join("run").join("report.md")).unwrap();
    assert!(md.contains("## Differential privacy") && md.contains(&format!("{:.3}", eps(5))), "{md}");
    assert!(md.contains("next clip norm") && md.contains("Adaptive clipping"), "{md}");
}
