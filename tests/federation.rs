//! End-to-end federation over loopback TCP with real processes: one `histofed server` and two `histofed site`s,
//! exactly as they run in pods, with a tiny model so the whole file stays well under a minute of CPU.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use histofed::actors::server::{DISCRIMINATOR, GENERATOR};
use histofed::config::Config;
use histofed::federation::checkpoint::CheckpointStore;
use histofed::federation::weights::Weights;
use histofed::models::Gan;
use histofed::report::RunReport;

/// Multi-process tests share two cores: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_histofed"))
        .args(args)
        .arg("--log-file")
        .arg(dir.join(format!("{name}.log")))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc { name: name.to_string(), child }
}

fn logs(dir: &Path) -> String {
    let mut s = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            s.push_str(&format!("\n--- {} ---\n", entry.path().display()));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
    }
    s
}

fn wait(p: &mut Proc, limit: Duration, dir: &Path) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = p.child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            panic!("{} did not finish within {limit:?}{}", p.name, logs(dir));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(dir: &Path, extra: &str) -> PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        r#"
[federation]
rounds = 2
sites = 2
min_sites = 2
local_steps = 3
batch_size = 16
round_deadline_secs = 90
join_timeout_secs = 60
seed = 7

[data]
per_class = 24
num_classes = 4
partition = "dirichlet:0.5"

[model]
preset = "tiny"

[cluster]
server_addr = "127.0.0.1:{port}"

[runtime]
threads = 1
out_dir = "{out}"
grid_per_class = 4
{extra}
"#,
        out = dir.join("run").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).expect("the test config is valid");
    path
}

/// Runs server + 2 sites to completion and returns the report.
fn run_federation(dir: &Path, extra: &str) -> RunReport {
    let cfg = config(dir, extra);
    let c = cfg.to_str().unwrap();
    let mut server = spawn(dir, "server", &["server", "--config", c]);
    let mut sites: Vec<Proc> = (0..2)
        .map(|i| spawn(dir, &format!("site-{i}"), &["site", "--config", c, "--site-id", &i.to_string()]))
        .collect();
    let status = wait(&mut server, Duration::from_secs(240), dir);
    assert!(status.success(), "server failed: {status}{}", logs(dir));
    for s in &mut sites {
        let status = wait(s, Duration::from_secs(30), dir);
        assert!(status.success(), "{} failed: {status}{}", s.name, logs(dir));
    }
    RunReport::read(&dir.join("run")).expect("report.json")
}

fn contributors(r: &RunReport, round: usize) -> Vec<u32> {
    r.rounds[round].contributors.iter().map(|c| c.site_id).collect()
}

#[test]
fn two_sites_two_rounds_end_to_end() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let report = run_federation(dir, "");
    assert!(report.finished);
    assert_eq!(report.rounds.len(), 2, "{report:#?}");
    for (i, r) in report.rounds.iter().enumerate() {
        assert_eq!(r.round, i as u64 + 1);
        assert_eq!(contributors(&report, i), vec![0, 1], "both sites contribute to round {}", r.round);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert!(r.frechet_distance.is_some_and(|v| v.is_finite() && v >= 0.0));
        let png = dir.join("run").join(r.samples_png.as_ref().unwrap());
        assert!(png.exists(), "{}", png.display());
    }
    assert_eq!(report.site_classes.len(), 2);

    // The global weights moved, and the checkpoint loads back into a model bit-exactly.
    let store = CheckpointStore::open(dir.join("run/checkpoints"), 5).unwrap();
    let initial = store.load_round(0).unwrap();
    let last = store.load_round(2).unwrap();
    let moved = initial.parts["generator"].l2_distance(&last.parts["generator"]).unwrap();
    assert!(moved > 0.0, "global generator unchanged after 2 rounds");
    let joined =
        Weights::join_prefixed(&[(GENERATOR, &last.parts["generator"]), (DISCRIMINATOR, &last.parts["discriminator"])])
            .unwrap();
    let cfg = Config::load(&dir.join("config.toml")).unwrap();
    let mut gan = Gan::new(&cfg.model_config().unwrap(), tch::Device::Cpu, 0).unwrap();
    gan.load_weights(&joined).unwrap();
    assert_eq!(gan.generator_weights().unwrap(), last.parts["generator"]);
    assert_eq!(gan.discriminator_weights().unwrap(), last.parts["discriminator"]);
}

#[test]
fn a_panicking_trainer_is_restarted_and_the_round_completes() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let faults = "\n[[faults]]\nkind = \"trainer-panic\"\nsite = 1\nround = 1\ntimes = 1\n";
    let report = run_federation(dir, faults);
    assert_eq!(report.rounds.len(), 2);
    assert_eq!(contributors(&report, 0), vec![0, 1], "the round completes with the restarted site");
    let site1 = &report.rounds[0].contributors[1];
    assert_eq!(site1.trainer_restarts, 1, "site 1 restarted its trainer once in round 1");
    assert_eq!(report.rounds[1].contributors[1].trainer_restarts, 0);
    let log = std::fs::read_to_string(dir.join("site-1.log")).unwrap();
    assert!(log.contains("injected trainer panic"), "the panic happened:\n{log}");
}
