//! Runs one scenario: starts the federation as real processes (like `histofed demo`), fires the faults at their
//! triggers, watches the run through its report, then checks the invariants and measures detection and recovery.
//!
//! Everything it makes it also removes — processes (killed at the end, and by the kernel if the runner dies:
//! PR_SET_PDEATHSIG), network namespaces, tmpfs mounts — through guards that run on every exit path. Every wait is
//! bounded by the scenario's timeout.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::federation::checkpoint::CheckpointStore;
use crate::federation::site_store::SiteStore;
use crate::records::RunReport;

use super::judge::{judge, Driven};
use super::report::{FaultRecord, ScenarioResult};
use super::scenario::{Action, Intruder, Scenario};
use super::ChaosError;

/// How the runner runs.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// The histofed binary to start the roles with.
    pub exe: PathBuf,
    /// Scenario outputs go to `<out>/<scenario name>/`.
    pub out: PathBuf,
    /// Also run the fault-free twin and report the final-model distance to it.
    pub baseline: bool,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ChaosError {
    move |e| ChaosError::Io(format!("{what}: {e}"))
}

/// Runs `ip ARGS…`, failing with its stderr.
fn ip(args: &[&str]) -> Result<(), ChaosError> {
    let out = Command::new("ip").args(args).output().map_err(io(format!("running ip {}", args.join(" "))))?;
    if !out.status.success() {
        return Err(ChaosError::Setup(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A network namespace with a veth pair to the host: the partition fault takes the host end down.
struct NetNs {
    name: String,
    host_if: String,
    host_ip: String,
}

impl NetNs {
    fn create(site: u32) -> Result<NetNs, ChaosError> {
        let tag = format!("{}{}", std::process::id() % 100_000, site);
        let (name, host_if, ns_if) = (format!("hfc{tag}"), format!("hfc{tag}h"), format!("hfc{tag}n"));
        let octet = 16 + (site % 200);
        let (host_ip, ns_ip) = (format!("10.213.{octet}.1"), format!("10.213.{octet}.2"));
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name: name.clone(), host_if: host_if.clone(), host_ip: host_ip.clone() };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["netns", "exec", &name, "ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn link(&self, up: bool) -> Result<(), ChaosError> {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }])
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end and with it the pair.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// A size-limited tmpfs on the checkpoint directory (disk-full); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size_kib: u64) -> Result<Tmpfs, ChaosError> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "histofed-chaos"])
            .arg(dir)
            .output()
            .map_err(io("running mount".into()))?;
        if !out.status.success() {
            return Err(ChaosError::Setup(format!(
                "cannot mount a {size_kib} KiB tmpfs on {} (needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// The processes of one scenario. Dropping it kills whatever still runs.
struct Fleet {
    exe: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    server: Option<Child>,
    servers_started: u32,
    sites: Vec<Option<Child>>,
    starts: Vec<u32>,
    netns: Vec<Option<NetNs>>,
    intruders: Vec<(u32, Child)>,
}

impl Fleet {
    fn spawn(
        &self,
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
        netns: Option<&str>,
    ) -> Result<Child, ChaosError> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        cmd.args(args)
            .arg("--log-file")
            .arg(&log)
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe and the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn().map_err(io(format!("starting {name}")))
    }

    fn start_server(&mut self) -> Result<(), ChaosError> {
        self.servers_started += 1;
        let name = format!("server-{}", self.servers_started);
        let args = vec!["server".to_string(), "--config".into(), self.config.display().to_string()];
        self.server = Some(self.spawn(&name, &args, &[], None)?);
        Ok(())
    }

    fn start_site(&mut self, id: u32) -> Result<(), ChaosError> {
        let i = id as usize;
        self.starts[i] += 1;
        let name = format!("site-{id}-{}", self.starts[i]);
        let mut args = vec![
            "site".to_string(),
            "--config".into(),
            self.config.display().to_string(),
            "--site-id".into(),
            id.to_string(),
        ];
        let ns = self.netns[i].as_ref().map(|n| (n.name.clone(), n.host_ip.clone()));
        if let Some((_, host_ip)) = &ns {
            args.push("--server".into());
            args.push(format!("{host_ip}:{}", self.port));
        }
        let child = self.spawn(&name, &args, &[], ns.as_ref().map(|(n, _)| n.as_str()))?;
        self.sites[i] = Some(child);
        Ok(())
    }

    fn signal_site(&mut self, id: u32, sig: i32) -> bool {
        match self.sites.get(id as usize).and_then(|s| s.as_ref()) {
            Some(child) => {
                // SAFETY: kill(2) on a child we own.
                unsafe { libc::kill(child.id() as i32, sig) == 0 }
            }
            None => false,
        }
    }

    fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }

    /// Children of the product (server and sites) still running.
    fn running(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        if let Some(s) = self.server.as_mut() {
            if matches!(s.try_wait(), Ok(None)) {
                left.push("server".into());
            }
        }
        for (i, s) in self.sites.iter_mut().enumerate() {
            if let Some(c) = s.as_mut() {
                if matches!(c.try_wait(), Ok(None)) {
                    left.push(format!("site-{i}"));
                }
            }
        }
        left
    }

    fn kill_all(&mut self) {
        let children = self.server.iter_mut().chain(self.sites.iter_mut().flatten());
        for c in children.chain(self.intruders.iter_mut().map(|(_, c)| c)) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Something to do later (restart, resume, reconnect).
enum Later {
    StartSite(u32),
    StartServer,
    Cont(u32),
    LinkUp(u32),
}

/// Per fault: how often it has fired.
struct Armed {
    action: Action,
    fired: u32,
    /// When an `after_round` trigger's round was first seen completed (for `then_secs`).
    round_seen: Option<Instant>,
}

fn latest_checkpoint_part(dir: &Path) -> Option<(u64, PathBuf)> {
    let mut best: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(rest) = name.strip_prefix("round-").filter(|_| name.ends_with(".generator.safetensors")) {
            if let Ok(r) = rest[..6.min(rest.len())].parse::<u64>() {
                if best.as_ref().is_none_or(|(b, _)| r > *b) {
                    best = Some((r, e.path()));
                }
            }
        }
    }
    best
}

/// Runs `s` (and, with `opts.baseline`, its fault-free twin) and judges it.
pub fn run_scenario(s: &Scenario, opts: &RunOpts) -> Result<ScenarioResult, ChaosError> {
    let dir = opts.out.join(&s.name);
    let mut result = run_once(s, &dir, &opts.exe)?;
    if opts.baseline && (!s.faults.is_empty() || !s.injects.is_empty()) {
        let base = s.fault_free();
        let bdir = dir.join("baseline");
        match run_once(&base, &bdir, &opts.exe) {
            Ok(b) if b.passed() => result.distance_to_baseline = final_distance(&dir, &bdir),
            Ok(_) => result.notes.push("the fault-free baseline did not pass; no distance".into()),
            Err(e) => result.notes.push(format!("baseline: {e}")),
        }
    }
    Ok(result)
}

/// Relative L2 distance of the final global models of two runs.
fn final_distance(a: &Path, b: &Path) -> Option<f64> {
    let load = |d: &Path| -> Option<crate::federation::weights::Weights> {
        let store = CheckpointStore::open(d.join("run/checkpoints"), usize::MAX).ok()?;
        let ck = store.load_latest().ok()?.checkpoint?;
        let g = ck.parts.get("generator")?;
        let dsc = ck.parts.get("discriminator")?;
        crate::federation::weights::Weights::join_prefixed(&[
            (crate::models::GENERATOR_PREFIX, g),
            (crate::models::DISCRIMINATOR_PREFIX, dsc),
        ])
        .ok()
    };
    let (wa, wb) = (load(a)?, load(b)?);
    let d = wa.l2_distance(&wb).ok()?;
    let n = wb.l2_norm();
    (n > 0.0).then_some(d / n)
}

fn run_once(s: &Scenario, dir: &Path, exe: &Path) -> Result<ScenarioResult, ChaosError> {
    let started = Instant::now();
    let setup = Setup::prepare(s, dir)?;
    let mut fleet = setup.start(s, dir, exe)?;
    let driven = Driver::new(s).drive(s, dir, &mut fleet, &setup.cfg, started)?;
    let left = wind_down(&mut fleet, driven.timed_out);
    let (configured, servers_started) = (setup.cfg.federation.rounds, fleet.servers_started);
    Ok(judge(s, dir, configured, &setup.intruders, servers_started, driven, left, started))
}

/// A scenario's run folder, configuration and the faults that need setting up before anything starts.
struct Setup {
    cfg: Config,
    config: PathBuf,
    port: u16,
    /// Sites cut off by a network namespace of their own.
    partitioned: BTreeSet<u32>,
    /// Site ids taken by intruders (bad credentials) instead of real sites.
    intruders: BTreeSet<u32>,
    /// A small tmpfs under the checkpoints (disk-full), unmounted when the run is over.
    _tmpfs: Option<Tmpfs>,
}

impl Setup {
    fn prepare(s: &Scenario, dir: &Path) -> Result<Setup, ChaosError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io(format!("clearing {}", dir.display())))?;
        }
        std::fs::create_dir_all(dir.join("logs")).map_err(io(format!("creating {}", dir.display())))?;
        let mut cfg: Config = s.config().map_err(ChaosError::Setup)?;
        let port = crate::launcher::free_port().map_err(|e| ChaosError::Setup(e.to_string()))?;
        let partitioned: BTreeSet<u32> = s
            .faults
            .iter()
            .filter_map(|f| if let Action::Partition { site, .. } = f { Some(*site) } else { None })
            .collect();
        // A partitioned site reaches the server over its veth, so the server listens on every address.
        let host = if partitioned.is_empty() { "127.0.0.1" } else { "0.0.0.0" };
        cfg.cluster.server_addr = format!("{host}:{port}");
        cfg.runtime.out_dir = dir.join("run");
        if s.tls {
            let certs = dir.join("certs");
            crate::cluster::certs::issue_all(&certs, cfg.federation.sites)
                .map_err(|e| ChaosError::Setup(e.to_string()))?;
            cfg.cluster.tls_dir = Some(certs);
        }
        let config = dir.join("config.toml");
        std::fs::write(&config, cfg.to_toml().map_err(|e| ChaosError::Setup(e.to_string()))?)
            .map_err(io(format!("writing {}", config.display())))?;
        let disk_full = s.faults.iter().find_map(|f| match f {
            Action::DiskFull { size_kib } => Some(*size_kib),
            _ => None,
        });
        let _tmpfs = match disk_full {
            Some(kib) => Some(Tmpfs::mount(&dir.join("run/checkpoints"), kib)?),
            None => None,
        };
        let intruders: BTreeSet<u32> = s
            .faults
            .iter()
            .filter_map(|f| if let Action::BadCredentials { site, .. } = f { Some(*site) } else { None })
            .collect();
        Ok(Setup { cfg, config, port, partitioned, intruders, _tmpfs })
    }

    /// Starts the server, every real site and the intruders.
    fn start(&self, s: &Scenario, dir: &Path, exe: &Path) -> Result<Fleet, ChaosError> {
        let sites = self.cfg.federation.sites;
        let mut netns: Vec<Option<NetNs>> = (0..sites).map(|_| None).collect();
        for &site in &self.partitioned {
            netns[site as usize] = Some(NetNs::create(site)?);
        }
        let mut fleet = Fleet {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            config: self.config.clone(),
            port: self.port,
            server: None,
            servers_started: 0,
            sites: (0..sites).map(|_| None).collect(),
            starts: vec![0; sites as usize],
            netns,
            intruders: Vec::new(),
        };
        fleet.start_server()?;
        for id in (0..sites).filter(|id| !self.intruders.contains(id)) {
            fleet.start_site(id)?;
        }
        for f in &s.faults {
            if let Action::BadCredentials { site, what } = f {
                start_intruder(&mut fleet, &self.cfg, dir, *site, *what)?;
            }
        }
        Ok(fleet)
    }
}

/// The triggered faults of a scenario while it runs: which have fired, what is to be undone when.
struct Driver {
    armed: Vec<Armed>,
    records: Vec<FaultRecord>,
    later: Vec<(Instant, Later)>,
    corrupted: Vec<u64>,
    rotate: u32,
}

impl Driver {
    fn new(s: &Scenario) -> Driver {
        Driver {
            armed: s
                .faults
                .iter()
                .filter(|f| f.trigger().is_some())
                .map(|a| Armed { action: a.clone(), fired: 0, round_seen: None })
                .collect(),
            records: s
                .faults
                .iter()
                .filter(|f| f.trigger().is_none())
                .map(|f| FaultRecord::setup(f.kind(), f))
                .chain(s.injects.iter().map(FaultRecord::inject))
                .collect(),
            later: Vec::new(),
            corrupted: Vec::new(),
            rotate: 0,
        }
    }

    /// Polls the report, fires due faults and undoes them when their time comes, until the server has exited
    /// with nothing left to undo, or the scenario's timeout.
    fn drive(
        mut self,
        s: &Scenario,
        dir: &Path,
        fleet: &mut Fleet,
        cfg: &Config,
        started: Instant,
    ) -> Result<Driven, ChaosError> {
        let sites = cfg.federation.sites;
        let limit = Duration::from_secs_f64(s.expect.timeout_secs);
        let mut max_seen = 0u64;
        let (server_status, timed_out) = loop {
            std::thread::sleep(Duration::from_millis(40));
            let report = RunReport::read(&dir.join("run")).ok();
            let done = report.as_ref().map(|r| r.rounds.len() as u64).unwrap_or(0);
            max_seen = max_seen.max(report.as_ref().and_then(|r| r.rounds.last().map(|x| x.round)).unwrap_or(0));
            let elapsed = started.elapsed();
            let checkpointed =
                |site: u32, round: u64| SiteStore::progress_saved(&cfg.runtime.site_state_dir(site), round);
            for i in 0..self.armed.len() {
                if self.armed[i].due(done, elapsed, checkpointed) {
                    self.armed[i].fired += 1;
                    let action = self.armed[i].action.clone();
                    self.fire(&action, dir, fleet, sites)?;
                }
            }
            self.undo_due(fleet)?;
            let server_pending = self.later.iter().any(|(_, l)| matches!(l, Later::StartServer));
            if let Some(srv) = fleet.server.as_mut() {
                if let Ok(Some(status)) = srv.try_wait() {
                    if !server_pending && self.later.is_empty() {
                        break (Some(status), false);
                    }
                }
            }
            if elapsed > limit {
                break (None, true);
            }
        };
        Ok(Driven { server_status, timed_out, records: self.records, corrupted: self.corrupted, max_seen })
    }

    fn fire(&mut self, action: &Action, dir: &Path, fleet: &mut Fleet, sites: u32) -> Result<(), ChaosError> {
        let at = now_ms();
        let after = |secs: f64| Instant::now() + Duration::from_secs_f64(secs);
        match action {
            Action::KillSite { site, restart_after_secs, .. } => {
                let id = site.unwrap_or_else(|| {
                    self.rotate += 1;
                    (self.rotate * 7 + 1) % sites
                });
                if fleet.signal_site(id, libc::SIGKILL) {
                    if let Some(mut c) = fleet.sites[id as usize].take() {
                        let _ = c.wait();
                    }
                    self.later.push((after(*restart_after_secs), Later::StartSite(id)));
                    self.records.push(FaultRecord::at("kill-site", format!("site {id}"), Some(id), at));
                }
            }
            Action::KillServer { restart_after_secs, .. } => {
                fleet.kill_server();
                self.later.push((after(*restart_after_secs), Later::StartServer));
                self.records.push(FaultRecord::at("kill-server", "server".into(), None, at));
            }
            Action::HangSite { site, secs, .. } => {
                if fleet.signal_site(*site, libc::SIGSTOP) {
                    self.later.push((after(*secs), Later::Cont(*site)));
                    let what = format!("site {site} for {secs} s");
                    self.records.push(FaultRecord::at("hang-site", what, Some(*site), at));
                }
            }
            Action::Partition { site, secs, .. } => {
                if let Some(ns) = fleet.netns[*site as usize].as_ref() {
                    ns.link(false)?;
                    self.later.push((after(*secs), Later::LinkUp(*site)));
                    let what = format!("site {site} for {secs} s");
                    self.records.push(FaultRecord::at("partition", what, Some(*site), at));
                }
            }
            Action::CorruptCheckpoint { .. } => {
                fleet.kill_server();
                if let Some((round, path)) = latest_checkpoint_part(&dir.join("run/checkpoints")) {
                    let bytes = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
                    std::fs::write(&path, &bytes[..bytes.len() / 2])
                        .map_err(io(format!("damaging {}", path.display())))?;
                    self.corrupted.push(round);
                    self.records.push(FaultRecord::at("corrupt-checkpoint", format!("round {round}"), None, at));
                }
                fleet.start_server()?;
            }
            Action::DiskFull { .. } | Action::BadCredentials { .. } => {}
        }
        Ok(())
    }

    /// Restarts, resumes and reconnects whatever is due.
    fn undo_due(&mut self, fleet: &mut Fleet) -> Result<(), ChaosError> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.later.len() {
            if self.later[i].0 > now {
                i += 1;
                continue;
            }
            match self.later.swap_remove(i).1 {
                Later::StartSite(id) => fleet.start_site(id)?,
                Later::StartServer => fleet.start_server()?,
                Later::Cont(id) => {
                    fleet.signal_site(id, libc::SIGCONT);
                }
                Later::LinkUp(id) => {
                    if let Some(ns) = fleet.netns[id as usize].as_ref() {
                        ns.link(true)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl Armed {
    /// Whether the fault's trigger is due with `done` rounds completed, `elapsed` into the run; `checkpointed(site,
    /// round)` says whether a site has saved a local checkpoint of a round.
    fn due(&mut self, done: u64, elapsed: Duration, checkpointed: impl Fn(u32, u64) -> bool) -> bool {
        let site = self.action.site();
        let Some(t) = self.action.trigger() else { return false };
        match (t.after_round, t.after_secs, t.every_rounds) {
            (Some(r), _, _) => {
                if self.fired > 0 || done < r {
                    return false;
                }
                let seen = *self.round_seen.get_or_insert_with(Instant::now);
                let waited = seen.elapsed().as_secs_f64() >= t.then_secs.unwrap_or(0.0);
                waited && (!t.at_local_checkpoint || site.is_some_and(|s| checkpointed(s, r + 1)))
            }
            (_, Some(secs), _) => self.fired == 0 && elapsed.as_secs_f64() >= secs,
            (_, _, Some(k)) => self.fired < t.count.unwrap_or(1) && done >= k * u64::from(self.fired + 1),
            _ => false,
        }
    }
}

/// The product's processes must all end by themselves once the server has: a bounded while for that, then every
/// process left is killed. Returns the ones that were still running.
fn wind_down(fleet: &mut Fleet, timed_out: bool) -> Vec<String> {
    for (_, mut c) in fleet.intruders.drain(..) {
        let _ = c.kill();
        let _ = c.wait();
    }
    let wait_until = Instant::now() + Duration::from_secs(30);
    let mut left = fleet.running();
    while !left.is_empty() && Instant::now() < wait_until && !timed_out {
        std::thread::sleep(Duration::from_millis(100));
        left = fleet.running();
    }
    fleet.kill_all();
    left
}

/// Starts a process that claims site `site` with bad credentials.
fn start_intruder(fleet: &mut Fleet, cfg: &Config, dir: &Path, site: u32, what: Intruder) -> Result<(), ChaosError> {
    let mut env: Vec<(&str, &str)> = Vec::new();
    let mut icfg = cfg.clone();
    match what {
        Intruder::WrongCookie => env.push(("HISTOFED_COOKIE", "not-the-cluster-cookie")),
        Intruder::ForeignCa => {
            let foreign = dir.join("foreign-certs");
            crate::cluster::certs::issue_all(&foreign, cfg.federation.sites)
                .map_err(|e| ChaosError::Setup(e.to_string()))?;
            icfg.cluster.tls_dir = Some(foreign);
        }
        Intruder::StolenIdentity => {
            let real =
                cfg.cluster.tls_dir.clone().ok_or_else(|| ChaosError::Setup("stolen-identity needs tls".into()))?;
            let stolen = dir.join("stolen-certs");
            std::fs::create_dir_all(&stolen).map_err(io("creating stolen-certs".into()))?;
            let copy = |from: &str, to: &str| {
                std::fs::copy(real.join(from), stolen.join(to)).map(|_| ()).map_err(io(format!("copying {from}")))
            };
            copy(crate::cluster::certs::CA_CERT_FILE, crate::cluster::certs::CA_CERT_FILE)?;
            let (victim, me) = (crate::cluster::certs::site_name(0), crate::cluster::certs::site_name(site));
            copy(&format!("{victim}.pem"), &format!("{me}.pem"))?;
            copy(&format!("{victim}.key"), &format!("{me}.key"))?;
            icfg.cluster.tls_dir = Some(stolen);
        }
    }
    let path = dir.join(format!("intruder-{site}.toml"));
    std::fs::write(&path, icfg.to_toml().map_err(|e| ChaosError::Setup(e.to_string()))?)
        .map_err(io(format!("writing {}", path.display())))?;
    let args =
        vec!["site".to_string(), "--config".into(), path.display().to_string(), "--site-id".into(), site.to_string()];
    let child = fleet.spawn(&format!("intruder-{site}"), &args, &env, None)?;
    fleet.intruders.push((site, child));
    Ok(())
}
