//! End-to-end federation over loopback TCP with real processes: one `histofed server` and two `histofed site`s,
//! exactly as they run in pods, with a tiny model so the whole file stays well under a minute of CPU.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{contributors, serial, Fed};
use histofed::config::Config;
use histofed::federation::checkpoint::CheckpointStore;
use histofed::federation::weights::Weights;
use histofed::models::Gan;
use histofed::models::{DISCRIMINATOR_PREFIX, GENERATOR_PREFIX};

#[test]
fn two_sites_two_rounds_end_to_end() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    // The evaluator's full quality suite after the last round (a briefly trained reference classifier).
    let cache = tmp.path().join("reference-cache");
    let evaluation = format!(
        "[evaluation]\neval_every = 5\nsamples_per_class = 6\nreference_steps = 20\ncache_dir = \"{}\"\n",
        cache.display()
    );
    let mut fed = Fed::new(tmp.path(), 2, 2, "", &evaluation);
    // A validation split big enough for each site's share to be scored (federated evaluation).
    fed.edit_config("per_class = 24", "per_class = 24\nval_fraction = 0.3");
    fed.start_all();
    let report = fed.finish(Duration::from_secs(240));
    assert!(report.finished);
    assert_eq!(report.rounds.len(), 2, "{report:#?}");
    for site in 0..2 {
        assert_eq!(finished_rounds(&fed.dir, site), vec![2], "site {site} keeps its last finished update");
    }
    for (i, r) in report.rounds.iter().enumerate() {
        assert_eq!(r.round, i as u64 + 1);
        assert_eq!(contributors(&report, r.round), vec![0, 1], "both sites contribute to round {}", r.round);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert!(r.frechet_distance.is_some_and(|v| v.is_finite() && v >= 0.0));
        let png = tmp.path().join("run").join(r.samples_png.as_ref().unwrap());
        assert!(png.exists(), "{}", png.display());
    }
    assert_eq!(report.site_classes.len(), 2);
    // eval_every = 5 > rounds: the suite ran once, after the last round, and its files are there.
    assert!(report.rounds[0].quality.is_none());
    let q = report.rounds[1].quality.as_ref().expect("the last round has the quality suite");
    assert!(q.summary.fd.is_finite() && q.summary.fd >= 0.0, "{q:?}");
    assert!((0.0..=1.0).contains(&q.summary.precision) && (0.0..=1.0).contains(&q.summary.class_coverage));
    // Per-class agreement names every class by the data's names, and its mean is the overall agreement (the suite
    // asks for the same number of images of each class).
    let names: Vec<&str> = q.summary.class_agreement.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, report.classes.iter().map(String::as_str).collect::<Vec<_>>(), "{q:?}");
    let mean = q.summary.class_agreement.iter().map(|(_, a)| a).sum::<f64>() / names.len() as f64;
    assert!((mean - q.summary.label_agreement).abs() < 1e-9, "{mean} vs {}", q.summary.label_agreement);
    let run = tmp.path().join("run");
    assert!(run.join(&q.report_json).exists(), "{}", q.report_json);
    assert!(!q.pictures.is_empty() && q.pictures.iter().all(|p| run.join(p).exists()), "{:?}", q.pictures);
    assert!(std::fs::read_dir(&cache).unwrap().count() > 0, "the reference classifier was cached");

    // Federated evaluation: after the last round (eval_every = 5 > rounds) both sites scored the global generator
    // on their own validation splits and the server recorded the sample-weighted result.
    assert!(report.rounds[0].federated_eval.is_none());
    let f = report.rounds[1].federated_eval.as_ref().expect("the last round is evaluated at the sites");
    assert_eq!(f.round, 2);
    assert_eq!(f.sites.iter().map(|s| s.site_id).collect::<Vec<_>>(), vec![0, 1], "{f:?}");
    assert!(f.failed.is_empty() && f.missing.is_empty(), "{f:?}");
    assert_eq!(f.val_samples, f.sites.iter().map(|s| s.val_samples).sum::<u64>());
    let weighted =
        f.sites.iter().map(|s| s.frechet_distance * s.val_samples as f64).sum::<f64>() / f.val_samples as f64;
    assert!(f.frechet_distance.is_finite() && (f.frechet_distance - weighted).abs() < 1e-9, "{f:?}");
    assert!(f.precision.is_some_and(|p| (0.0..=1.0).contains(&p)), "{f:?}");
    for site in 0..2 {
        let log = fed.log(&format!("site-{site}"));
        assert!(log.contains("site validation split ready"), "site {site}: {log}");
    }
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("## Federated evaluation"), "{md}");

    // The global weights moved, and the checkpoint loads back into a model bit-exactly.
    let store = CheckpointStore::open(tmp.path().join("run/checkpoints"), 5).unwrap();
    let initial = store.load_round(0).unwrap();
    let last = store.load_round(2).unwrap();
    let moved = initial.parts["generator"].l2_distance(&last.parts["generator"]).unwrap();
    assert!(moved > 0.0, "global generator unchanged after 2 rounds");
    let joined = Weights::join_prefixed(&[
        (GENERATOR_PREFIX, &last.parts["generator"]),
        (DISCRIMINATOR_PREFIX, &last.parts["discriminator"]),
    ])
    .unwrap();
    let cfg = Config::load(&fed.config).unwrap();
    let mut gan = Gan::new(&cfg.model_config().unwrap(), tch::Device::Cpu, 0).unwrap();
    gan.load_weights(&joined).unwrap();
    assert_eq!(gan.generator_weights().unwrap(), last.parts["generator"]);
    assert_eq!(gan.discriminator_weights().unwrap(), last.parts["discriminator"]);
}

#[test]
fn sites_without_a_validation_split_say_so_and_the_run_still_ends() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 1, "", "");
    // Too few validation images for any site to score the generator.
    fed.edit_config("per_class = 24", "per_class = 24\nval_fraction = 0.02");
    fed.start_all();
    let report = fed.finish(Duration::from_secs(120));
    assert!(report.finished);
    assert!(report.rounds[0].federated_eval.is_none(), "{:?}", report.rounds[0].federated_eval);
    let failed = report.events.iter().find(|e| e.kind == "federated-eval-failed").expect("the failure is an event");
    for site in 0..2 {
        assert!(
            failed.detail.contains(&format!("site {site}: this site holds no validation split")),
            "{}",
            failed.detail
        );
        assert!(fed.log(&format!("site-{site}")).contains("will not evaluate"));
    }
}

#[test]
fn a_panicking_site_evaluator_is_restarted_and_a_hopeless_one_is_reported() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    // Site 0's evaluator panics once (restarted, then it scores the round); site 1's panics past the restart
    // budget (3 in 60 s): it stops evaluating and the server records why.
    let faults = "[[faults]]\nkind = \"evaluator-panic\"\nsite = 0\nround = 1\ntimes = 1\n\n\
                  [[faults]]\nkind = \"evaluator-panic\"\nsite = 1\nround = 1\ntimes = 9\n";
    let mut fed = Fed::new(tmp.path(), 2, 1, "", faults);
    fed.edit_config("per_class = 24", "per_class = 24\nval_fraction = 0.3");
    fed.start_all();
    let report = fed.finish(Duration::from_secs(120));
    assert!(report.finished);
    let f = report.rounds[0].federated_eval.as_ref().expect("site 0 scored the round");
    assert_eq!(f.sites.iter().map(|s| s.site_id).collect::<Vec<_>>(), vec![0], "{f:?}");
    assert_eq!(f.failed.len(), 1, "{f:?}");
    assert_eq!(f.failed[0].0, 1);
    assert!(f.failed[0].1.contains("the site's evaluator failed"), "{f:?}");
    assert!(fed.log("site-0").contains("restarting the site evaluator"));
    assert!(fed.log("site-1").contains("federated evaluation is off at this site"));
}

#[test]
fn a_site_lost_before_it_answers_the_evaluation_is_recorded_missing() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    // Site 1 is slow to score the last round and is killed while the server waits for its answer.
    let faults = "[[faults]]\nkind = \"slow-evaluator\"\nsite = 1\nround = 2\nsecs = 60\n";
    let mut fed = Fed::new(tmp.path(), 2, 2, "round_deadline_secs = 90", faults);
    fed.edit_config("per_class = 24", "per_class = 24\nval_fraction = 0.3");
    fed.start_all();
    let start = std::time::Instant::now();
    while !fed.log("site-1").contains("injecting a fault into the site's evaluator") {
        assert!(start.elapsed() < Duration::from_secs(120), "site 1 was never asked:{}", common::logs(&fed.dir));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(fed.sites[1].take()); // SIGKILL
                               // The server notices the loss and ends the run without waiting out the 90 s bound.
    let report = fed.finish(Duration::from_secs(60));
    assert!(report.finished);
    let f = report.rounds[1].federated_eval.as_ref().expect("site 0's answer is recorded");
    assert_eq!(f.sites.iter().map(|s| s.site_id).collect::<Vec<_>>(), vec![0], "{f:?}");
    assert_eq!(f.missing, vec![1], "{f:?}");
    assert!(f.failed.is_empty(), "{f:?}");
}

#[test]
fn a_panicking_trainer_is_restarted_and_the_round_completes() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let faults = "[[faults]]\nkind = \"trainer-panic\"\nsite = 1\nround = 1\ntimes = 1\n";
    // Also: sites told not to keep finished updates on disk write none (the end-to-end test sees the default).
    let mut fed = Fed::new(tmp.path(), 2, 2, "keep_finished_update = false", faults);
    fed.start_all();
    let report = fed.finish(Duration::from_secs(240));
    assert_eq!(report.rounds.len(), 2);
    for site in 0..2 {
        assert_eq!(finished_rounds(&fed.dir, site), Vec::<u64>::new(), "site {site} kept an update");
    }
    assert_eq!(contributors(&report, 1), vec![0, 1], "the round completes with the restarted site");
    let site1 = &report.rounds[0].contributors[1];
    assert_eq!(site1.trainer_restarts, 1, "site 1 restarted its trainer once in round 1");
    assert_eq!(report.rounds[1].contributors[1].trainer_restarts, 0);
    assert!(fed.log("site-1").contains("injected trainer panic"), "the panic happened:\n{}", fed.log("site-1"));
}

/// Rounds whose finished update site `site` keeps on disk.
fn finished_rounds(dir: &std::path::Path, site: u32) -> Vec<u64> {
    let finished = dir.join("run").join("sites").join(format!("site-{site}")).join("finished");
    let Ok(entries) = std::fs::read_dir(&finished) else { return Vec::new() };
    let mut rounds: Vec<u64> = entries
        .filter_map(|e| {
            histofed::federation::checkpoint::CheckpointStore::commit_round(&e.ok()?.file_name().to_string_lossy())
        })
        .collect();
    rounds.sort();
    rounds
}

/// GET over plain HTTP/1.0 (what a Prometheus scraper or a kubelet probe does); returns (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// Parses the Prometheus text format strictly: every line a comment or `name{labels} value`.
fn samples(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not `series value`: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
        }
        let v: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push((series.to_string(), v));
    }
    out
}

fn sample(all: &[(String, f64)], series: &str) -> f64 {
    all.iter().find(|(s, _)| s == series).map(|(_, v)| *v).unwrap_or_else(|| panic!("no sample {series}"))
}

#[test]
fn the_server_serves_health_metrics_and_status_and_writes_an_html_report() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    // Enough rounds that the run is still going while the test scrapes it.
    let mut fed = Fed::new(tmp.path(), 2, 6, "local_steps = 10", "");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let site_addr = format!("127.0.0.1:{}", common::free_port());
    fed.start_server_with(&["--http", &addr]);
    fed.start_site_with(0, &[], &["--http", &site_addr]);
    fed.start_site(1);
    fed.wait_report(Duration::from_secs(240), "round 2", |r| r.rounds.len() >= 2);
    // A site's own metrics: the last round it trained, its losses, the bytes it moved.
    let (status, text) = http_get(&site_addr, "/metrics");
    assert_eq!(status, 200);
    let site = samples(&text);
    assert!(sample(&site, "histofed_round") >= 2.0, "{text}");
    assert_eq!(sample(&site, "histofed_rounds_configured"), 6.0, "{text}");
    assert!(sample(&site, "histofed_bytes_received_total") > 0.0, "{text}");
    assert!(sample(&site, "histofed_bytes_sent_total") > 0.0, "{text}");
    assert!(site.iter().any(|(k, v)| k.starts_with("histofed_gan_loss{") && v.is_finite()), "{text}");
    assert_eq!(sample(&site, "histofed_trainer_restarts_total"), 0.0, "{text}");
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/readyz").0, 200);
    let (status, text) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    let all = samples(&text);
    assert!(sample(&all, "histofed_round") >= 2.0, "{text}");
    assert_eq!(sample(&all, "histofed_sites_joined"), 2.0);
    assert!(sample(&all, r#"histofed_updates_total{outcome="accepted",reason=""}"#) >= 4.0, "{text}");
    assert!(sample(&all, "histofed_bytes_sent_total") > 0.0);
    assert!(sample(&all, "histofed_bytes_received_total") > 0.0);
    assert!(sample(&all, "histofed_checkpoint_age_seconds") >= 0.0);
    assert_eq!(sample(&all, r#"histofed_site_events_total{kind="joined"}"#), 2.0);

    // `histofed status` reads the same endpoint.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_histofed"))
        .args(["status", "--addr", &addr, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["role"], "server");
    assert_eq!(status["membership"], serde_json::json!(["histofed-site-0", "histofed-site-1"]));
    assert_eq!(status["rounds_configured"], 6);

    let report = fed.finish(Duration::from_secs(240));
    assert_eq!(report.rounds.len(), 6);
    let html = std::fs::read_to_string(tmp.path().join("run/report.html")).unwrap();
    assert!(html.contains("data:image/png;base64,"), "pictures are embedded");
    assert!(tmp.path().join("run/losses.png").exists() && tmp.path().join("run/partition.png").exists());
    // An unreachable endpoint is a clear error naming the address.
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_histofed")).args(["status", "--addr", &addr]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}

/// The bug check for everything between a site's trainer and the global model (bulk plane, codec, FedAvg, the
/// server's round loop, the site's reload of the global weights each round): a federation of one site over real
/// processes ends with exactly the weights of a centralized run of the same model, seed, data and number of steps.
#[test]
fn a_one_site_federation_equals_the_centralized_run() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 1, 3, "local_steps = 4\nbatch_size = 8", "");
    // The small-budget recipe (the default) with every ingredient that keeps state: EMA, spectral norm, DiffAugment.
    fed.edit_config("partition = \"dirichlet:0.5:min=8\"", "partition = \"iid\"");
    fed.start_all();
    let report = fed.finish(Duration::from_secs(120));
    assert!(report.finished && report.rounds.len() == 3, "{report:#?}");
    let store = CheckpointStore::open(tmp.path().join("run/checkpoints"), 5).unwrap();
    let last = store.load_round(3).unwrap();
    let federated = Weights::join_prefixed(&[
        (GENERATOR_PREFIX, &last.parts["generator"]),
        (DISCRIMINATOR_PREFIX, &last.parts["discriminator"]),
    ])
    .unwrap();

    // The centralized run, on the data exactly as site 0 loads it, in chunks of the local steps.
    tch::set_num_threads(1);
    let mut cfg = Config::load(&fed.config).unwrap();
    let stain = histofed::data::synth::StainShift::for_site(0, cfg.data.stain_shift, cfg.federation.seed);
    let splits = histofed::cli::load_data_stained(&mut cfg, stain).unwrap();
    let shard = histofed::cli::site_shard(&cfg, &splits.train, 0).unwrap();
    let model = cfg.model_config().unwrap();
    assert!(model.ema_decay > 0.0 && model.spectral_norm && !model.diffaugment.is_none(), "{model:?}");
    let central = histofed::train::simulation::train_centralized(
        &model,
        tch::Device::Cpu,
        std::sync::Arc::new(shard),
        12,
        4,
        8,
        cfg.federation.seed,
        |_| {},
    )
    .unwrap();
    let gap = federated.l2_distance(&central).unwrap();
    assert_eq!(gap, 0.0, "one-site federation and centralized training differ by {gap}");
    // Not trivially equal: training moved the weights, and one step more or less would show.
    let first = store.load_round(0).unwrap();
    let initial = Weights::join_prefixed(&[
        (GENERATOR_PREFIX, &first.parts["generator"]),
        (DISCRIMINATOR_PREFIX, &first.parts["discriminator"]),
    ])
    .unwrap();
    assert!(central.l2_distance(&initial).unwrap() > 0.0);
    let shorter = histofed::train::simulation::train_centralized(
        &model,
        tch::Device::Cpu,
        std::sync::Arc::new(histofed::cli::site_shard(&cfg, &splits.train, 0).unwrap()),
        11,
        4,
        8,
        cfg.federation.seed,
        |_| {},
    )
    .unwrap();
    assert!(federated.l2_distance(&shorter).unwrap() > 0.0);
}

/// `federation.summation = "exact"`: the same federation, its updates arriving in another order, ends with the same
/// weights bit for bit. With the fast f32 mean the two orders give different weights, so the orders really differed
/// and the test can fail.
#[test]
fn an_exact_mean_gives_the_same_federation_whatever_order_the_updates_arrive_in() {
    let _guard = serial();
    let run = |summation: &str, last: u32| -> Weights {
        let tmp = tempfile::tempdir().unwrap();
        // Site `last` stalls before it trains, every round, so its update is the last to arrive.
        let faults: String = (1..=2)
            .map(|round| format!("[[faults]]\nkind = \"slow-site\"\nsite = {last}\nround = {round}\nsecs = 1.0\n"))
            .collect();
        let mut fed = Fed::new(tmp.path(), 3, 2, &format!("summation = \"{summation}\""), &faults);
        fed.start_all();
        let report = fed.finish(Duration::from_secs(120));
        assert!(report.finished && report.rounds.len() == 2, "{report:#?}");
        let last = CheckpointStore::open(tmp.path().join("run/checkpoints"), 5).unwrap().load_round(2).unwrap();
        Weights::join_prefixed(&[
            (GENERATOR_PREFIX, &last.parts["generator"]),
            (DISCRIMINATOR_PREFIX, &last.parts["discriminator"]),
        ])
        .unwrap()
    };
    let (exact_a, exact_b) = (run("exact", 0), run("exact", 2));
    assert_eq!(exact_a.l2_distance(&exact_b).unwrap(), 0.0);
    assert!(exact_a == exact_b, "the exact mean's federations differ in some bit");
    let (fast_a, fast_b) = (run("fast", 0), run("fast", 2));
    assert!(fast_a != fast_b, "the fast mean gave the same weights: the arrival orders did not differ");
}

/// Issue #17: decoding, validating and folding updates runs on the aggregator thread, never on the server actor's
/// mailbox. Eight sites send 40 MB updates (10 M parameters) each round; meanwhile `/pulse` asks the server actor
/// every few milliseconds. Every pulse taken while updates were being checked or a round aggregated must have been
/// answered within 50 ms, and there must be such pulses (else the test proved nothing).
#[test]
fn the_server_actor_answers_within_50_ms_while_it_folds_eight_40_mb_updates() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let opts = histofed::bench::federation::FederationOpts {
        exe: env!("CARGO_BIN_EXE_histofed").into(),
        dir: tmp.path().to_path_buf(),
        sites: 8,
        params: 10_000_000,
        rounds: 3,
        warmup: 0,
        timeout: Duration::from_secs(300),
        heartbeat_secs: None,
        keep_finished_update: false,
        secagg: false,
        dp_sites: None,
    };
    let config = tmp.path().join("config.toml");
    let text = histofed::bench::federation::federation_config(&opts, common::free_port(), &tmp.path().join("run"));
    std::fs::write(&config, text).unwrap();
    let c = config.to_str().unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut server = common::spawn(tmp.path(), "server", &["server", "--config", c, "--http", &addr]);
    let mut sites: Vec<_> = (0..8)
        .map(|id| {
            common::spawn(tmp.path(), &format!("site-{id}"), &["site", "--config", c, "--site-id", &id.to_string()])
        })
        .collect();

    // (client round trip ms, the server's answer)
    let mut pulses: Vec<(f64, histofed::observability::PulseAnswer)> = Vec::new();
    let started = Instant::now();
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the run did not end in 300 s{}",
            common::logs(tmp.path())
        );
        let t = Instant::now();
        if let Ok(mut tcp) = std::net::TcpStream::connect(&addr) {
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = write!(tcp, "GET /pulse HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut text = String::new();
            let read = tcp.read_to_string(&mut text).is_ok();
            if read && (text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200")) {
                let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
                let answer: histofed::observability::PulseAnswer = serde_json::from_str(body).unwrap();
                pulses.push((t.elapsed().as_secs_f64() * 1e3, answer));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = server.wait(Duration::from_secs(10), tmp.path());
    assert!(status.success(), "server failed: {status}{}", common::logs(tmp.path()));
    for site in &mut sites {
        assert!(
            site.wait(Duration::from_secs(30), tmp.path()).success(),
            "{} failed{}",
            site.name,
            common::logs(tmp.path())
        );
    }
    let report = histofed::records::RunReport::read(&tmp.path().join("run")).unwrap();
    assert_eq!(report.rounds.len(), 3);
    assert!(report.rounds.iter().all(|r| r.contributors.len() == 8), "every update folded in every round");

    let busy: Vec<_> = pulses.iter().filter(|(_, a)| a.reply.updates_in_check > 0 || a.reply.aggregating).collect();
    let slowest = busy.iter().map(|(_, a)| a.answered_ms).fold(0.0, f64::max);
    eprintln!(
        "{} pulses, {} while folding or aggregating; slowest actor answer then {slowest:.1} ms, slowest round trip {:.1} ms",
        pulses.len(),
        busy.len(),
        busy.iter().map(|(rtt, _)| *rtt).fold(0.0, f64::max)
    );
    assert!(busy.len() >= 5, "too few pulses overlapped the folding to prove anything: {}", busy.len());
    assert!(busy.iter().any(|(_, a)| a.reply.updates_in_check >= 2), "never more than one update in check at once");
    let mut worst: Vec<_> = busy.iter().map(|(_, a)| a).collect();
    worst.sort_by(|a, b| b.answered_ms.total_cmp(&a.answered_ms));
    worst.truncate(5);
    assert!(slowest < 50.0, "the server actor took {slowest:.1} ms to answer while folding; slowest: {worst:?}");
}
