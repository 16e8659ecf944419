//! `histofed demo`: a whole federation on one machine as separate OS processes — one server and N sites — talking
//! over loopback TCP exactly as they would across pods. The launcher owns the processes: it stops every one of
//! them when the run ends, when one fails, on Ctrl-C, and (through the kernel's parent-death signal) even when the
//! launcher itself is killed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::config::Config;
use crate::records::RunReport;

/// A federation stopped because SIGINT or SIGTERM asked this process to stop; callers that run several federations
/// in a row stop too instead of starting the next one (the request stays set, so the next one refuses to start).
#[derive(Debug, thiserror::Error)]
#[error("interrupted (SIGINT or SIGTERM); every process of the federation was stopped")]
pub struct Interrupted;

/// The flag SIGINT and SIGTERM set, with its handlers installed on first use. Why a flag rather than a signal
/// stream that lives only while a federation runs: once a process has handled a signal, the default action (exit)
/// is gone for good, so a Ctrl-C that landed between two federations (a study measuring one run before starting
/// the next) was swallowed and the study went on. The flag keeps the request until someone looks; a second signal
/// while one is pending ends the process at once (status 130).
fn stop_flag() -> Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<Result<Arc<AtomicBool>, String>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Order matters: the shutdown check runs first, so only a signal arriving with the flag already set
            // exits.
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
                .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&flag)))
                .map_err(|e| format!("installing the handler of signal {sig}: {e}"))?;
        }
        Ok(flag)
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The sample configuration shipped in config/demo.toml, embedded so `histofed demo` needs no file.
pub fn demo_config() -> Result<Config> {
    let cfg: Config = toml::from_str(include_str!("../config/demo.toml")).context("embedded config/demo.toml")?;
    Ok(cfg)
}

/// A free TCP port P on 127.0.0.1 with P+1 free too (the server's default bulk port); see `cluster::ports`.
pub fn free_port() -> Result<u16> {
    crate::cluster::ports::free_port_pair().context("finding a free port for the server")
}

/// Starts `histofed ARGS…` as a child that dies with us, with a torch thread budget and passive OpenMP waiting.
pub fn spawn_role(exe: &Path, args: &[String], log: &Path) -> Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(args).arg("--log-file").arg(log).env("OMP_WAIT_POLICY", "PASSIVE").stdin(Stdio::null()).kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("starting {} {}", exe.display(), args.join(" ")))
}

struct Fleet {
    children: Vec<(String, Child)>,
}

impl Fleet {
    /// Asks every child still running to stop (SIGTERM), then kills what is left after `grace`.
    async fn stop_all(&mut self, grace: Duration) {
        for (_, child) in &self.children {
            if let Some(pid) = child.id() {
                // SAFETY: plain kill(2) on a pid we own.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + grace;
        for (name, child) in &mut self.children {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, child.wait()).await.is_err() {
                tracing::warn!(%name, "did not stop in time; killing");
                let _ = child.kill().await;
            }
        }
    }
}

pub async fn demo(cfg: Config, out: PathBuf, mtls: bool) -> Result<()> {
    let start = Instant::now();
    run_federation(cfg, &out, mtls, true).await?;
    let report = RunReport::read(&out).context("reading the run report")?;
    println!("\n{}", report.to_markdown());
    println!(
        "done in {:.1} s. outputs in {}:\n  report.html  report.md  report.json  samples/round-NNN.png  losses.png  frechet.png  partition.png  checkpoints/  sites/  logs/",
        start.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// One server and `federation.sites` site processes of this binary on a free loopback port, outputs (config,
/// logs, checkpoints, report) under `out`; returns when the server has finished its rounds, and stops every
/// process whatever happens. `announce` prints the one-line description of the run first.
pub async fn run_federation(mut cfg: Config, out: &Path, mtls: bool, announce: bool) -> Result<()> {
    let stop = stop_flag()?;
    if stop.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    let port = free_port()?;
    cfg.cluster.server_addr = format!("127.0.0.1:{port}");
    cfg.runtime.out_dir = out.to_path_buf();
    std::fs::create_dir_all(out.join("logs")).with_context(|| format!("creating {}", out.display()))?;
    if mtls && cfg.cluster.tls_dir.is_none() {
        let dir = out.join("certs");
        crate::cluster::certs::issue_all(&dir, cfg.federation.sites).context("issuing the demo's certificates")?;
        cfg.cluster.tls_dir = Some(dir);
    }
    cfg.validate()?;
    let cfg_path = out.join("config.toml");
    std::fs::write(&cfg_path, cfg.to_toml()?).with_context(|| format!("writing {}", cfg_path.display()))?;
    let exe = crate::util::exe::self_exe().context("locating the histofed binary")?;
    let c = cfg_path.display().to_string();
    if announce {
        println!(
            "histofed demo: 1 server + {} sites on 127.0.0.1:{port} ({}), {} rounds of {} × {} ({}); logs in {}",
            cfg.federation.sites,
            if cfg.cluster.tls_dir.is_some() { "mutual TLS" } else { "plaintext, cookie only" },
            cfg.federation.rounds,
            cfg.model.gan,
            cfg.model.discriminator,
            cfg.model.preset,
            out.join("logs").display()
        );
    }
    let mut fleet = Fleet { children: Vec::new() };
    let server = spawn_role(&exe, &["server".into(), "--config".into(), c.clone()], &out.join("logs/server.log"))?;
    fleet.children.push(("server".into(), server));
    for id in 0..cfg.federation.sites {
        let args = vec!["site".into(), "--config".into(), c.clone(), "--site-id".into(), id.to_string()];
        match spawn_role(&exe, &args, &out.join(format!("logs/site-{id}.log"))) {
            Ok(child) => fleet.children.push((format!("site-{id}"), child)),
            Err(e) => {
                fleet.stop_all(Duration::from_secs(5)).await;
                return Err(e);
            }
        }
    }
    let outcome = supervise(&mut fleet, &stop).await;
    fleet.stop_all(Duration::from_secs(10)).await;
    outcome
}

/// Waits for the server to finish; fails fast if any process fails, on Ctrl-C or on SIGTERM ([`Interrupted`]).
async fn supervise(fleet: &mut Fleet, stop: &AtomicBool) -> Result<()> {
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(Interrupted.into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (name, child) in &mut fleet.children {
            if let Some(status) = child.try_wait()? {
                if name == "server" {
                    if status.success() {
                        return Ok(());
                    }
                    bail!("the server failed ({status}); see its log");
                }
                if !status.success() {
                    bail!("{name} failed ({status}); see its log");
                }
            }
        }
    }
}
