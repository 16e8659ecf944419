//! The harness of the multi-process tests: start `histofed server` and `histofed site` as real processes on
//! loopback, wait for them with bounded timeouts, read their report, and always clean up (every process is killed
//! when its handle drops, also when a test fails).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use histofed::config::Config;
use histofed::records::RunReport;

/// Multi-process tests share two cores: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn wait(&mut self, limit: Duration, dir: &Path) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > limit {
                panic!("{} did not finish within {limit:?}{}", self.name, logs(dir));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_env(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_histofed"));
    cmd.args(args)
        .arg("--log-file")
        .arg(dir.join(format!("{name}.log")))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc { name: name.to_string(), child }
}

pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
    spawn_env(dir, name, args, &[])
}

/// The last lines of every log in `dir`, for failure messages.
pub fn logs(dir: &Path) -> String {
    let mut s = String::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        s.push_str(&format!("\n--- {} ---\n", path.display()));
        for l in tail.into_iter().rev() {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}

/// A federation under test: its folder, config and processes.
pub struct Fed {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub server: Option<Proc>,
    pub sites: Vec<Option<Proc>>,
    pub started: Instant,
    servers_started: usize,
}

/// A free port P with P+1 free too (the server's bulk port), outside the ephemeral range: see `cluster::ports`.
pub fn free_port() -> u16 {
    histofed::cluster::ports::free_port_pair().expect("a free loopback port pair")
}

/// Writes a tiny-model config; `federation` and `extra` are TOML lines added to [federation] and at the end.
pub fn write_config(dir: &Path, sites: u32, rounds: u64, federation: &str, extra: &str) -> PathBuf {
    let mut fed: Vec<(String, String)> = [
        ("rounds", rounds.to_string()),
        ("sites", sites.to_string()),
        ("min_sites", sites.to_string()),
        ("local_steps", "3".into()),
        ("batch_size", "16".into()),
        ("round_deadline_secs", "60".into()),
        ("join_timeout_secs", "60".into()),
        ("grace_secs", "2".into()),
        ("heartbeat_secs", "0.5".into()),
        ("seed", "7".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for line in federation.lines().filter(|l| l.contains('=')) {
        let (k, v) = line.split_once('=').unwrap();
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        match fed.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => fed.push((k, v)),
        }
    }
    let federation: String = fed.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let text = format!(
        r#"
[federation]
{federation}

[data]
per_class = 24
num_classes = 4
partition = "dirichlet:0.5:min=8"

[model]
preset = "tiny"

[cluster]
server_addr = "127.0.0.1:{port}"
reconnect_secs = 0.2

[runtime]
threads = 1
out_dir = "{out}"
grid_per_class = 2
{evaluation}
{extra}
"#,
        // The quality suite trains a reference classifier: off unless a test asks for it.
        evaluation = if extra.contains("[evaluation]") { "" } else { "[evaluation]\neval_every = 0" },
        port = free_port(),
        out = dir.join("run").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).expect("the test config is valid");
    path
}

impl Fed {
    pub fn new(dir: &Path, sites: u32, rounds: u64, federation: &str, extra: &str) -> Fed {
        let config = write_config(dir, sites, rounds, federation, extra);
        Fed {
            dir: dir.to_path_buf(),
            config,
            server: None,
            sites: (0..sites).map(|_| None).collect(),
            started: Instant::now(),
            servers_started: 0,
        }
    }

    pub fn start_server(&mut self) {
        self.start_server_with(&[]);
    }

    /// Starts the server with extra command-line arguments.
    pub fn start_server_with(&mut self, extra_args: &[&str]) {
        let c = self.config.to_str().unwrap().to_string();
        self.servers_started += 1;
        self.started = Instant::now();
        let name = format!("server-{}", self.servers_started);
        let mut args = vec!["server", "--config", &c];
        args.extend_from_slice(extra_args);
        self.server = Some(spawn(&self.dir, &name, &args));
    }

    pub fn start_site(&mut self, id: u32) {
        self.start_site_env(id, &[]);
    }

    pub fn start_site_env(&mut self, id: u32, env: &[(&str, &str)]) {
        self.start_site_with(id, env, &[]);
    }

    /// Starts site `id` with extra environment variables and command-line arguments.
    pub fn start_site_with(&mut self, id: u32, env: &[(&str, &str)], extra_args: &[&str]) {
        let c = self.config.to_str().unwrap().to_string();
        let name = format!("site-{id}");
        let id_arg = id.to_string();
        let mut args = vec!["site", "--config", &c, "--site-id", &id_arg];
        args.extend_from_slice(extra_args);
        let p = spawn_env(&self.dir, &name, &args, env);
        self.sites[id as usize] = Some(p);
    }

    /// Edits the config file in place (e.g. to set a `[cluster]` key the helpers do not expose).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "config lacks {from:?}");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    pub fn start_all(&mut self) {
        self.start_server();
        for id in 0..self.sites.len() as u32 {
            self.start_site(id);
        }
    }

    pub fn site(&self, id: u32) -> &Proc {
        self.sites[id as usize].as_ref().expect("site running")
    }

    pub fn report(&self) -> Option<RunReport> {
        RunReport::read(&self.dir.join("run")).ok()
    }

    /// Polls the report until `pred` holds; panics with the logs after `limit`.
    pub fn wait_report(&self, limit: Duration, what: &str, pred: impl Fn(&RunReport) -> bool) -> RunReport {
        let start = Instant::now();
        loop {
            if let Some(r) = self.report() {
                if pred(&r) {
                    return r;
                }
            }
            if start.elapsed() > limit {
                panic!("timed out after {limit:?} waiting for {what}; report: {:#?}{}", self.report(), logs(&self.dir));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the server to exit successfully, then for every site still running to exit successfully.
    pub fn finish(&mut self, limit: Duration) -> RunReport {
        let dir = self.dir.clone();
        let server = self.server.as_mut().expect("server running");
        let status = server.wait(limit, &dir);
        assert!(status.success(), "server failed: {status}{}", logs(&dir));
        for site in self.sites.iter_mut().flatten() {
            let status = site.wait(Duration::from_secs(30), &dir);
            assert!(status.success(), "{} failed: {status}{}", site.name, logs(&dir));
        }
        self.report().expect("report.json")
    }

    /// As [`Fed::finish`], except that the sites in `killed` must have died of SIGKILL (an injected `site-exit`).
    pub fn finish_with_killed(&mut self, limit: Duration, killed: &[u32]) -> RunReport {
        use std::os::unix::process::ExitStatusExt;
        let dir = self.dir.clone();
        let status = self.server.as_mut().expect("server running").wait(limit, &dir);
        assert!(status.success(), "server failed: {status}{}", logs(&dir));
        for (id, site) in self.sites.iter_mut().enumerate() {
            let Some(site) = site.as_mut() else { continue };
            let status = site.wait(Duration::from_secs(30), &dir);
            if killed.contains(&(id as u32)) {
                assert_eq!(status.signal(), Some(libc::SIGKILL), "{} should have been killed{}", site.name, logs(&dir));
            } else {
                assert!(status.success(), "{} failed: {status}{}", site.name, logs(&dir));
            }
        }
        self.report().expect("report.json")
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

pub fn contributors(r: &RunReport, round: u64) -> Vec<u32> {
    r.rounds
        .iter()
        .find(|x| x.round == round)
        .map(|x| x.contributors.iter().map(|c| c.site_id).collect())
        .unwrap_or_default()
}
