//! Benchmarks of the federation machinery (issue #9): `histofed bench transfer | aggregate | federation` (P3,
//! `aggregate`, is the sibling module `bench/aggregate.rs`, built on this file's helpers).
//!
//! Why these three: a federated round is "ship P weights to K sites, get K updates back, average them". Training
//! aside, its cost is set by (P1) how fast the bulk data plane moves bytes compared with what the loopback/NIC can
//! do, (P3) how fast FedAvg folds K·P values compared with simply copying them, and (P2) how much the whole round
//! machinery (publish, hash, encode/decode, validation, checkpoint, report) adds on top of the raw byte movement.
//! Each benchmark therefore measures our path and its physical floor in the same process and the same run,
//! interleaved rep by rep, and reports medians and ratios: absolute numbers on a shared machine move by ±30 %,
//! ratios measured back to back much less.
//!
//! * [`transfer_bench`]: `size` bytes server → site → server through [`crate::cluster::bulk`] (plain and mTLS,
//!   handshake included) against raw loopback TCP (`write_all`/`read_exact` into a fresh buffer, like a receiver).
//! * `aggregate_bench` (bench/aggregate.rs): FedAvg through the `Strategy` trait over K updates of P values against
//!   `memcpy` of the same K·P·4 bytes, and the peak RSS of a streaming round (updates created one at a time, as they
//!   arrive).
//! * [`federation_bench`]: real `histofed server` + K `histofed site` processes with `model.bench_params = P`
//!   (random weights, "training" = a small perturbation), seconds per round from the server's JSON log and each
//!   process's peak RSS from `wait4`; [`tcp_floor`] is the raw-TCP floor of the same round (K·P·4 bytes out and
//!   back over one loopback connection).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::bulk::{self, BulkLimits, BulkServer, BulkTls, ClientOpts, UploadSink};
use crate::federation::weights::{NamedTensor, Weights};

pub(super) const MB: usize = 1_000_000;

/// Median of `xs` (mean of the middle two for an even count); 0 for none.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `nproc`, the CPU model and the load average, for the header of a result table.
pub fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}, load average {}", load_average())
}

/// `/proc/loadavg`'s 1/5/15-minute averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" / "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Deterministic incompressible bytes (xorshift64*), fast enough for hundreds of MB.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `len` values in [−0.5, 0.5) from a seeded xorshift stream (bench inputs, not statistics).
pub(super) fn random_f32(len: usize, seed: u64) -> Vec<f32> {
    random_bytes(len * 4, seed)
        .chunks_exact(4)
        .map(|c| (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect()
}

/// `data` as a one-tensor weight bundle.
pub(super) fn one_tensor(data: Vec<f32>) -> Result<Weights, String> {
    let n = data.len();
    let t = NamedTensor::new("w", vec![n], data).map_err(|e| e.to_string())?;
    Weights::new(vec![t]).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------------------------
// P1: weights transfer
// ---------------------------------------------------------------------------------------------------------------

/// One transport at one size: medians over the reps.
#[derive(Debug, Clone)]
pub struct TransferRow {
    pub size_mb: usize,
    /// `raw tcp`, `bulk plain` or `bulk mtls`.
    pub path: String,
    /// Seconds of each rep (download + upload, i.e. 2 × size bytes moved).
    pub secs: Vec<f64>,
    /// Median throughput in MB/s (10⁶ bytes) over 2 × size bytes.
    pub mb_per_s: f64,
    /// Median of the per-rep ratios to raw TCP of the same rep (1.0 for raw TCP itself).
    pub ratio_to_raw: f64,
}

/// Raw loopback TCP: the server thread writes `data` and reads it back; the client reads it into a fresh buffer and
/// writes it back. Returns the seconds from connect to the last byte received by the server.
fn raw_round_trip(data: &Arc<Vec<u8>>) -> Result<f64, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let blob = data.clone();
    let server = std::thread::spawn(move || -> Result<(), String> {
        let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let _ = s.set_nodelay(true);
        s.write_all(&blob).map_err(|e| format!("raw write: {e}"))?;
        let mut back = vec![0u8; blob.len()];
        s.read_exact(&mut back).map_err(|e| format!("raw read back: {e}"))?;
        std::hint::black_box(&back);
        Ok(())
    });
    let t = Instant::now();
    let mut c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let _ = c.set_nodelay(true);
    let mut got = vec![0u8; data.len()];
    c.read_exact(&mut got).map_err(|e| format!("raw read: {e}"))?;
    c.write_all(&got).map_err(|e| format!("raw write back: {e}"))?;
    server.join().map_err(|_| "raw server thread panicked".to_string())??;
    Ok(t.elapsed().as_secs_f64())
}

/// TLS material for the mTLS rows, in a fresh directory (removed by [`TempDir`]'s drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir, String> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("histofed-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mtls_pair(dir: &Path) -> Result<(BulkTls, BulkTls), String> {
    use crate::cluster::tls::TlsMaterial;
    crate::cluster::certs::issue_all(dir, 1).map_err(|e| format!("certificates: {e}"))?;
    let server = TlsMaterial::load(dir, "server").map_err(|e| e.to_string())?;
    let site = TlsMaterial::load(dir, &crate::cluster::certs::site_name(0)).map_err(|e| e.to_string())?;
    let acceptor = server.acceptor().map_err(|e| e.to_string())?;
    let connector = site.connector().map_err(|e| e.to_string())?;
    Ok((BulkTls::Server(acceptor), BulkTls::Client(connector, "server".into())))
}

/// A bulk server holding `data` under key 1 for site 0 (token 7); uploads are dropped as soon as they arrive.
async fn bulk_endpoint(tls: BulkTls, data: Arc<Vec<u8>>) -> Result<BulkServer, String> {
    let (tx, rx) = mpsc::channel::<bulk::Upload>();
    // Drop every upload on a side thread, like a server that folds it in: frees its in-flight slot.
    std::thread::spawn(move || rx.into_iter().for_each(drop));
    let tx = Mutex::new(tx);
    let sink: UploadSink = Box::new(move |i| match i {
        bulk::Inbound::Upload(u) => tx.lock().map_err(|_| "poisoned".to_string())?.send(u).map_err(|e| e.to_string()),
        bulk::Inbound::Fenced { .. } => Ok(()),
    });
    let limits = BulkLimits { max_body: 8 << 30, ..BulkLimits::default() };
    let srv = BulkServer::start(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), tls, limits, sink)
        .await
        .map_err(|e| e.to_string())?;
    srv.publish(1, data);
    srv.grant(0, 7);
    Ok(srv)
}

/// Download then upload of the whole blob, as a site does in a round. Returns the seconds.
async fn bulk_round_trip(srv: &BulkServer, opts: &ClientOpts, len: usize) -> Result<f64, String> {
    let t = Instant::now();
    let got = bulk::download(srv.local_addr(), opts, 0, 7, 1).await.map_err(|e| e.to_string())?;
    if got.len() != len {
        return Err(format!("downloaded {} bytes, expected {len}", got.len()));
    }
    bulk::upload(srv.local_addr(), opts, 0, 7, 1, b"bench", &got).await.map_err(|e| e.to_string())?;
    Ok(t.elapsed().as_secs_f64())
}

/// P1: for each size, `reps` rounds of raw TCP, bulk plain and bulk mTLS, interleaved (one of each per rep).
pub fn transfer_bench(sizes_mb: &[usize], reps: usize) -> Result<Vec<TransferRow>, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let certs = TempDir::new("tls")?;
    let (server_tls, client_tls) = mtls_pair(&certs.0)?;
    let mut rows = Vec::new();
    for &size_mb in sizes_mb {
        let len = size_mb * MB;
        let data = Arc::new(random_bytes(len, size_mb as u64 + 1));
        let opts = |tls: BulkTls| ClientOpts {
            tls,
            stall: Duration::from_secs(60),
            chunk: BulkLimits::default().chunk,
            max_body: 8 << 30,
        };
        let (plain_opts, tls_opts) = (opts(BulkTls::Plain), opts(client_tls.clone()));
        let (plain, mtls) = rt.block_on(async {
            Ok::<_, String>((
                bulk_endpoint(BulkTls::Plain, data.clone()).await?,
                bulk_endpoint(server_tls.clone(), data.clone()).await?,
            ))
        })?;
        let mut secs: [Vec<f64>; 3] = Default::default();
        for _ in 0..reps.max(1) {
            secs[0].push(raw_round_trip(&data)?);
            secs[1].push(rt.block_on(bulk_round_trip(&plain, &plain_opts, len))?);
            secs[2].push(rt.block_on(bulk_round_trip(&mtls, &tls_opts, len))?);
        }
        rt.block_on(async {
            plain.shutdown().await;
            mtls.shutdown().await;
        });
        for (i, name) in ["raw tcp", "bulk plain", "bulk mtls"].iter().enumerate() {
            let ratios: Vec<f64> = secs[0].iter().zip(&secs[i]).map(|(raw, s)| raw / s).collect();
            rows.push(TransferRow {
                size_mb,
                path: (*name).to_string(),
                mb_per_s: 2.0 * len as f64 / MB as f64 / median(&secs[i]),
                ratio_to_raw: median(&ratios),
                secs: secs[i].clone(),
            });
        }
    }
    Ok(rows)
}

/// Markdown table of [`transfer_bench`] rows.
pub fn render_transfer(rows: &[TransferRow]) -> String {
    let mut s = String::from(
        "| Size | Path | Median s (down + up) | MB/s | × raw TCP (median of per-rep ratios) | per-rep s |\n\
         |---:|---|---:|---:|---:|---|\n",
    );
    for r in rows {
        let reps: Vec<String> = r.secs.iter().map(|x| format!("{x:.3}")).collect();
        s.push_str(&format!(
            "| {} MB | {} | {:.3} | {:.0} | {:.2} | {} |\n",
            r.size_mb,
            r.path,
            median(&r.secs),
            r.mb_per_s,
            r.ratio_to_raw,
            reps.join(", ")
        ));
    }
    s
}

// ---------------------------------------------------------------------------------------------------------------
// P2: whole rounds with real processes
// ---------------------------------------------------------------------------------------------------------------

/// Raw-TCP floor of one round: `k` × `bytes` out and `k` × `bytes` back over one loopback connection, median
/// seconds of `reps`.
pub fn tcp_floor(k: usize, bytes: usize, reps: usize) -> Result<f64, String> {
    let data = Arc::new(random_bytes(bytes, 99));
    let mut secs = Vec::new();
    for _ in 0..reps.max(1) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let blob = data.clone();
        let server = std::thread::spawn(move || -> Result<(), String> {
            let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            let mut back = vec![0u8; blob.len()];
            for _ in 0..k {
                s.write_all(&blob).map_err(|e| format!("floor write: {e}"))?;
            }
            for _ in 0..k {
                s.read_exact(&mut back).map_err(|e| format!("floor read back: {e}"))?;
            }
            Ok(())
        });
        let t = Instant::now();
        let mut c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        let mut got = vec![0u8; data.len()];
        for _ in 0..k {
            c.read_exact(&mut got).map_err(|e| format!("floor read: {e}"))?;
        }
        for _ in 0..k {
            c.write_all(&got).map_err(|e| format!("floor write back: {e}"))?;
        }
        server.join().map_err(|_| "floor server thread panicked".to_string())??;
        secs.push(t.elapsed().as_secs_f64());
    }
    Ok(median(&secs))
}

/// What one [`federation_bench`] run does.
#[derive(Debug, Clone)]
pub struct FederationOpts {
    /// The `histofed` binary (e.g. `std::env::current_exe()`); use a release build.
    pub exe: PathBuf,
    /// Working directory (config, logs, run output); created, and left in place for inspection.
    pub dir: PathBuf,
    pub sites: u32,
    pub params: u64,
    /// Rounds in all; the first `warmup` are not counted.
    pub rounds: u64,
    pub warmup: u64,
    /// The whole run is killed after this long.
    pub timeout: Duration,
    /// `federation.heartbeat_secs` (product default 1 s when `None`). At P ≈ 10⁸ the server actor is busy for over
    /// 1.5 s at a time (encoding, hashing, decoding) and declares healthy sites lost, so big runs raise it.
    pub heartbeat_secs: Option<f64>,
    /// `federation.keep_finished_update`: whether each site also writes its update to disk every round.
    pub keep_finished_update: bool,
    /// Secure aggregation (`[secagg]`, clip range 0.01: the bench's updates move each value by at most 1e-3).
    pub secagg: bool,
    /// With `secagg`: differential privacy with the noise added by the sites at this multiplier z
    /// (`privacy.noise = "sites"`, clip norm 1e-3·√P, which the bench's updates stay within).
    pub dp_sites: Option<f64>,
}

/// Result of one [`federation_bench`] run.
#[derive(Debug, Clone)]
pub struct FederationRow {
    pub sites: u32,
    pub params: u64,
    /// Seconds between consecutive "round complete" log lines of the server, counted rounds only.
    pub round_gaps: Vec<f64>,
    /// `rounds[].wall_secs` of the report (round start to aggregate; excludes publish and checkpoint).
    pub wall_secs: Vec<f64>,
    /// Peak RSS (bytes) of the server and of each site, from `wait4`.
    pub server_peak_rss: u64,
    pub site_peak_rss: Vec<u64>,
    /// Raw-TCP floor of the same round (see [`tcp_floor`]).
    pub floor_secs: f64,
}

impl FederationRow {
    pub fn median_round(&self) -> f64 {
        median(&self.round_gaps)
    }
}

/// A child process that is killed and reaped when dropped (unless [`Proc::try_reap`] already reaped it).
struct Proc {
    child: Child,
    reaped: Option<(i32, u64)>,
}

impl Proc {
    /// Non-blocking: `Some((exit status, peak RSS bytes))` once the process exited.
    fn try_reap(&mut self) -> Option<(i32, u64)> {
        if self.reaped.is_none() {
            let mut status = 0;
            // SAFETY: rusage is plain old data, all-zero is a valid value.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own child's pid, writing into two locals that outlive the call.
            let pid = unsafe { libc::wait4(self.child.id() as i32, &mut status, libc::WNOHANG, &mut ru) };
            if pid > 0 {
                // ru_maxrss is in KiB on Linux.
                self.reaped = Some((status, ru.ru_maxrss.max(0) as u64 * 1024));
            }
        }
        self.reaped
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_reap().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(opts: &FederationOpts, name: &str, args: &[&str]) -> Result<Proc, String> {
    let log = opts.dir.join(format!("{name}.log"));
    let child = Command::new(&opts.exe)
        .args(args)
        .arg("--log-format")
        .arg("json")
        .arg("--log-file")
        .arg(&log)
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {} {name}: {e}", opts.exe.display()))?;
    Ok(Proc { child, reaped: None })
}

fn free_port() -> Result<u16, String> {
    crate::cluster::ports::free_port_pair().map_err(|e| e.to_string())
}

/// The config of a bench federation (see BENCHMARKS.md, P2). The data set only has to give every site a shard
/// (the bench model never reads it): 8 images per class, more with many sites.
pub fn federation_config(opts: &FederationOpts, port: u16, out: &Path) -> String {
    let FederationOpts { sites, rounds, params, keep_finished_update, .. } = opts;
    let per_class = (3 * sites).max(8);
    let heartbeat = opts.heartbeat_secs.map(|h| format!("heartbeat_secs = {h}\n")).unwrap_or_default();
    let mut secagg =
        if opts.secagg { "\n[secagg]\nenabled = true\nclip_range = 0.01\n".to_string() } else { String::new() };
    if let Some(z) = opts.dp_sites {
        let clip = 1e-3 * (*params as f64).sqrt();
        secagg.push_str(&format!("\n[privacy]\nnoise_multiplier = {z}\nclip_norm = {clip}\nnoise = \"sites\"\n"));
    }
    format!(
        r#"[federation]
rounds = {rounds}
sites = {sites}
min_sites = {sites}
local_steps = 1
batch_size = 4
min_batch_size = 1
local_checkpoint_every = 0
keep_finished_update = {keep_finished_update}
round_deadline_secs = 600
join_timeout_secs = 120
grace_secs = 0
{heartbeat}
[data]
per_class = {per_class}
num_classes = 4
partition = "iid"

[model]
preset = "tiny"
bench_params = {params}

[cluster]
server_addr = "127.0.0.1:{port}"
reconnect_secs = 0.2

[runtime]
threads = 1
out_dir = "{out}"
{secagg}"#,
        out = out.display()
    )
}

/// Seconds (since the epoch, from the JSON log's RFC 3339 timestamp) of every "round complete" line.
fn round_complete_times(log: &Path) -> Result<Vec<f64>, String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.contains("\"round complete\"")) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{}: {e}", log.display()))?;
        let ts = v.get("timestamp").and_then(|t| t.as_str()).ok_or("log line without timestamp")?;
        let t = humantime::parse_rfc3339_weak(ts)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .ok_or_else(|| format!("unparsable timestamp {ts}"))?;
        out.push(t.as_secs_f64());
    }
    Ok(out)
}

/// P2: one federation of real processes; returns per-round times, peak RSS and the TCP floor.
pub fn federation_bench(opts: &FederationOpts) -> Result<FederationRow, String> {
    if opts.rounds <= opts.warmup + 1 {
        return Err("federation bench needs more rounds than warm-up rounds + 1".into());
    }
    let _ = std::fs::remove_dir_all(&opts.dir);
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("cannot create {}: {e}", opts.dir.display()))?;
    let out = opts.dir.join("run");
    let config = opts.dir.join("config.toml");
    let text = federation_config(opts, free_port()?, &out);
    std::fs::write(&config, text).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let c = config.to_str().ok_or("non-UTF-8 path")?.to_string();
    let mut server = spawn(opts, "server", &["server", "--config", &c])?;
    let mut sites = Vec::new();
    for id in 0..opts.sites {
        let id = id.to_string();
        sites.push(spawn(opts, &format!("site-{id}"), &["site", "--config", &c, "--site-id", &id])?);
    }
    let start = Instant::now();
    let server_end = loop {
        if let Some(r) = server.try_reap() {
            break r;
        }
        for (id, site) in sites.iter_mut().enumerate() {
            if site.try_reap().is_some_and(|r| r.0 != 0) {
                return Err(format!("site {id} failed before the run ended (logs in {})", opts.dir.display()));
            }
        }
        if start.elapsed() > opts.timeout {
            return Err(format!(
                "the federation did not finish within {:?} (logs in {})",
                opts.timeout,
                opts.dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if server_end.0 != 0 {
        return Err(format!("server ended with wait status {} (logs in {})", server_end.0, opts.dir.display()));
    }
    // Sites leave once the server ends the run; give them a few seconds, then they are killed on drop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && sites.iter_mut().any(|s| s.try_reap().is_none()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let site_peak_rss = sites.iter_mut().map(|s| s.try_reap().map(|r| r.1).unwrap_or(0)).collect();

    let times = round_complete_times(&opts.dir.join("server.log"))?;
    let round_gaps: Vec<f64> =
        times.windows(2).skip(opts.warmup.saturating_sub(1) as usize).map(|w| w[1] - w[0]).collect();
    let report = std::fs::read_to_string(out.join("report.json")).map_err(|e| format!("report.json: {e}"))?;
    let report: crate::records::RunReport = serde_json::from_str(&report).map_err(|e| format!("report.json: {e}"))?;
    let wall_secs = report.rounds.iter().skip(opts.warmup as usize).map(|r| r.wall_secs).collect();
    let bytes = usize::try_from(opts.params * 4).map_err(|_| "params too large")?;
    let floor_secs = tcp_floor(opts.sites as usize, bytes, 5)?;
    Ok(FederationRow {
        sites: opts.sites,
        params: opts.params,
        round_gaps,
        wall_secs,
        server_peak_rss: server_end.1,
        site_peak_rss,
        floor_secs,
    })
}

/// Markdown table of [`federation_bench`] rows.
pub fn render_federation(rows: &[FederationRow]) -> String {
    let mut s = String::from(
        "| K | P | MB per copy | s/round (median, gaps) | min–max | report wall_secs (median) | TCP floor s | \
         × floor | server peak RSS | site peak RSS (max) |\n|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let lo = r.round_gaps.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.round_gaps.iter().copied().fold(0.0, f64::max);
        let m = r.median_round();
        let site = r.site_peak_rss.iter().copied().max().unwrap_or(0);
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.3} | {:.3}–{:.3} | {:.3} | {:.3} | {:.1} | {:.0} MB | {:.0} MB |\n",
            r.sites,
            r.params,
            r.params as f64 * 4.0 / MB as f64,
            m,
            lo,
            hi,
            median(&r.wall_secs),
            r.floor_secs,
            if r.floor_secs > 0.0 { m / r.floor_secs } else { 0.0 },
            r.server_peak_rss as f64 / MB as f64,
            site as f64 / MB as f64
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn small_transfer_and_tcp_floor_run_end_to_end() {
        let rows = transfer_bench(&[1], 1).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.mb_per_s > 0.0));
        assert!(render_transfer(&rows).contains("bulk mtls"));
        assert!(tcp_floor(2, 1000, 1).unwrap() > 0.0);
    }
}
