//! The role extension seam against a live federation on loopback: one `histofed server`, two `histofed site`s and
//! the example model-registry role (`examples/model_registry.rs`), all real processes, tiny model, three rounds.
//! The registry must archive every round's generator bit-exactly (SHA-256 of the server's checkpoint), serve the
//! list and the bytes over HTTP, and its reports must land in report.json — with no change to server or site code.
//!
//! The example binary must be built first: `make test` runs `cargo build --examples` before the tests.
//! `cargo test` (even with `--all-targets`) builds examples only as test harnesses, never the runnable binary, so a
//! bare `cargo test --test roles` uses whatever `target/<profile>/examples/model_registry` is there — missing (the
//! test says so) or stale (build the examples again after changing the library).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{logs, serial, Fed, Proc};
use histofed::federation::checkpoint::CheckpointStore;
use sha2::{Digest, Sha256};

fn example_binary(name: &str) -> PathBuf {
    // target/<profile>/deps/roles-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (`cargo build --examples`; `make test` does)",
        path.display()
    );
    path
}

/// Starts the server, waits (bounded) until the role has joined it, then starts the sites: a two-round tiny run
/// is over in a fraction of a second, sooner than a role process gets to join, and a role only hears of the rounds
/// completed after it joined (plus the last one before).
fn start_once_the_role_joined(fed: &mut Fed) {
    fed.start_server();
    let start = Instant::now();
    while !fed.log("server-1").contains("role joined") {
        assert!(start.elapsed() < Duration::from_secs(120), "the role never joined:{}", logs(&fed.dir));
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in 0..fed.sites.len() as u32 {
        fed.start_site(id);
    }
}

/// GET over HTTP/1.0; returns (status, body bytes).
fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, raw[split + 4..].to_vec())
}

/// Starts a role node as a real process, logging to `<dir>/<name>.log` (which `common::logs` prints on failure).
fn spawn_role(name: &str, program: &Path, args: &[&std::ffi::OsStr], dir: &Path) -> Proc {
    let child = Command::new(program)
        .args(args)
        .arg("--log-file")
        .arg(dir.join(format!("{name}.log")))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc { name: name.into(), child }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn the_model_registry_role_archives_every_round_of_a_live_federation() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Fed::new(tmp.path(), 2, 3, "", "");
    let http = format!("127.0.0.1:{}", common::free_port());
    let archive = tmp.path().join("registry");
    // The role starts first: it keeps dialling until the server is up.
    let args = [
        "--config".as_ref(),
        fed.config.as_os_str(),
        "--dir".as_ref(),
        archive.as_os_str(),
        "--http".as_ref(),
        http.as_ref(),
    ];
    let mut registry = spawn_role("registry", &example_binary("model_registry"), &args, tmp.path());
    start_once_the_role_joined(&mut fed);
    let report = fed.finish(Duration::from_secs(240));
    assert!(report.finished);
    assert_eq!(report.rounds.len(), 3, "{report:#?}");

    // The server waited for the role's report on the last round before exiting: every round has it.
    for r in &report.rounds {
        let role = r.roles.get("model-registry").unwrap_or_else(|| {
            panic!("round {} lacks the registry's report: {:#?}{}", r.round, r.roles, logs(tmp.path()))
        });
        assert!(role.metrics["bytes"] > 0.0, "{role:?}");
        assert_eq!(role.artifacts.len(), 1, "{role:?}");
        assert!(role.artifacts[0].ends_with(&format!("round-{:06}.generator.safetensors", r.round)));
    }
    assert_eq!(report.rounds[2].roles["model-registry"].metrics["archived"], 3.0);
    assert!(report.events.iter().any(|e| e.kind == "role-joined"), "{:?}", report.events);

    // The registry outlives the run and serves the archive.
    assert!(registry.child.try_wait().unwrap().is_none(), "the registry keeps serving after the run");
    let start = Instant::now();
    let list: Vec<serde_json::Value> = loop {
        let (status, body) = http_get(&http, "/models");
        assert_eq!(status, 200);
        let list: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        if list.len() == 3 || start.elapsed() > Duration::from_secs(20) {
            break list;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(list.len(), 3, "{list:#?}");

    let store = CheckpointStore::open(tmp.path().join("run/checkpoints"), 10).unwrap();
    let mut shas = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let round = i as u64 + 1;
        assert_eq!(entry["round"], round);
        // The server's checkpointed generator of that round, as bare safetensors, hashes to what was archived.
        let generator = &store.load_round(round).unwrap().parts["generator"];
        let expected = sha(&generator.to_safetensors(None).unwrap());
        assert_eq!(entry["sha256"], expected, "round {round}");
        let (status, bytes) = http_get(&http, &format!("/models/{round}"));
        assert_eq!(status, 200);
        assert_eq!(sha(&bytes), expected, "GET /models/{round} serves the archived bytes");
        assert_eq!(entry["bytes"], bytes.len() as u64);
        assert_eq!(std::fs::read(entry["path"].as_str().unwrap()).unwrap(), bytes);
        // The sidecar carries the round's metrics.
        let sidecar: serde_json::Value =
            serde_json::from_slice(&std::fs::read(archive.join(format!("round-{round:06}.json"))).unwrap()).unwrap();
        assert_eq!(sidecar["sha256"], expected);
        assert_eq!(sidecar["metrics"]["contributors"], serde_json::json!([0, 1]));
        let g_loss = report.rounds[i].mean_losses.g_loss;
        assert!((sidecar["metrics"]["g_loss"].as_f64().unwrap() - g_loss).abs() < 1e-9);
        shas.push(expected);
    }
    shas.dedup();
    assert_eq!(shas.len(), 3, "each round archived its own generator");
    assert_eq!(http_get(&http, "/models/99").0, 404);
}

/// The evaluator as a standalone node (`histofed evaluator`), hosted by the same role seam: it scores every round
/// on its own held-out split and its numbers land in report.json under `roles.evaluator`, the full quality suite on
/// the last round.
#[test]
fn the_standalone_evaluator_node_scores_every_round_through_the_role_seam() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let evaluation = format!(
        "[evaluation]\neval_every = 5\nsamples_per_class = 6\nreference_steps = 20\ncache_dir = \"{}\"\n",
        tmp.path().join("reference-cache").display()
    );
    let mut fed = Fed::new(tmp.path(), 2, 2, "", &evaluation);
    let out = tmp.path().join("evaluator-node");
    let args = [
        "evaluator".as_ref(),
        "--config".as_ref(),
        fed.config.as_os_str(),
        "--exit-when-run-over".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    let mut node = spawn_role("evaluator", Path::new(env!("CARGO_BIN_EXE_histofed")), &args, tmp.path());
    start_once_the_role_joined(&mut fed);
    let report = fed.finish(Duration::from_secs(240));
    assert!(report.finished);
    for r in &report.rounds {
        let ev = r.roles.get("evaluator").unwrap_or_else(|| {
            panic!("round {} lacks the evaluator's report: {:#?}{}", r.round, r.roles, logs(tmp.path()))
        });
        assert!(ev.metrics["fixed_feature_fd"].is_finite(), "{ev:?}");
        assert!(ev.artifacts.iter().all(|a| Path::new(a).exists()), "{ev:?}");
    }
    // eval_every = 5 > 2 rounds: the full suite ran at the last round only.
    assert!(!report.rounds[0].roles["evaluator"].metrics.contains_key("precision"));
    let last = &report.rounds[1].roles["evaluator"].metrics;
    for k in ["fd", "precision", "recall", "class_coverage", "reference_test_accuracy"] {
        assert!(last.get(k).is_some_and(|v| v.is_finite()), "{k} missing: {last:?}");
    }
    assert!(out.join("quality/round-002/quality.json").exists());
    // It exits by itself once the server says the run is over.
    let start = Instant::now();
    while node.child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(node.child.try_wait().unwrap().is_some_and(|s| s.success()), "{}", logs(tmp.path()));
}

/// The role seam under mutual TLS: a role joins with its own certificate (`role-<name>`), is bound to it on the
/// bulk plane, and archives every round; the same role with a certificate from a foreign CA never joins.
#[test]
fn a_role_joins_an_mtls_federation_with_its_certificate_and_a_foreign_one_is_refused() {
    let _guard = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (certs, foreign) = (tmp.path().join("certs"), tmp.path().join("foreign"));
    for dir in [&certs, &foreign] {
        histofed::cluster::certs::issue_all(dir, 2).unwrap();
        histofed::cluster::certs::issue(dir, "role-model-registry", &[]).unwrap();
    }
    let mut fed = Fed::new(tmp.path(), 2, 2, "", "");
    let text = std::fs::read_to_string(&fed.config).unwrap();
    let with_tls = |dir: &Path| text.replace("[cluster]\n", &format!("[cluster]\ntls_dir = \"{}\"\n", dir.display()));
    std::fs::write(&fed.config, with_tls(&certs)).unwrap();
    let foreign_config = tmp.path().join("foreign.toml");
    std::fs::write(&foreign_config, with_tls(&foreign)).unwrap();

    let program = example_binary("model_registry");
    let (http, http2) = (format!("127.0.0.1:{}", common::free_port()), format!("127.0.0.1:{}", common::free_port()));
    let (archive, intruder_archive) = (tmp.path().join("registry"), tmp.path().join("intruder"));
    let flags: [&std::ffi::OsStr; 3] = ["--config".as_ref(), "--dir".as_ref(), "--http".as_ref()];
    let args = [flags[0], fed.config.as_os_str(), flags[1], archive.as_os_str(), flags[2], http.as_ref()];
    let _registry = spawn_role("registry", &program, &args, tmp.path());
    let args = [flags[0], foreign_config.as_os_str(), flags[1], intruder_archive.as_os_str(), flags[2], http2.as_ref()];
    let _intruder = spawn_role("intruder", &program, &args, tmp.path());
    // The sites start once the registry joined and the intruder has been turned away at least once.
    fed.start_server();
    let start = Instant::now();
    let intruder_log = || std::fs::read_to_string(tmp.path().join("intruder.log")).unwrap_or_default();
    while !(fed.log("server-1").contains("role joined") && intruder_log().contains("TLS handshake")) {
        assert!(start.elapsed() < Duration::from_secs(120), "no join or no refusal:{}", logs(&fed.dir));
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in 0..2 {
        fed.start_site(id);
    }
    let report = fed.finish(Duration::from_secs(240));
    assert!(report.finished);
    for r in &report.rounds {
        let role = r.roles.get("model-registry").unwrap_or_else(|| panic!("round {}{}", r.round, logs(tmp.path())));
        assert!(role.metrics["bytes"] > 0.0, "the weights came over the mTLS bulk plane: {role:?}");
    }
    let joined = report.events.iter().filter(|e| e.kind == "role-joined").count();
    assert_eq!(joined, 1, "only the role with a certificate of the federation's CA joins: {:?}", report.events);
    assert!(fed.log("server-1").contains("mTLS connection refused"), "the server refused the foreign certificate");
    let archived = std::fs::read_dir(&intruder_archive).into_iter().flatten().flatten();
    let archived = archived.filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors")).count();
    assert_eq!(archived, 0, "the intruder archived nothing");
}
