//! The tools: `certs`, `bench …`, `chaos run` and `chaos kill-pods`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::*;
use crate::models::{DiscKind, GanKind};

#[derive(Args, Debug)]
pub(super) struct DeviceCmd {
    /// Device to compute on: cpu | cuda | cuda:N | auto (CUDA when available) [default: auto].
    #[arg(long)]
    device: Option<String>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

/// `histofed device`: exits non-zero when the requested device is missing or its product is wrong.
pub(super) fn device(a: DeviceCmd) -> Result<()> {
    let r = crate::models::device::probe(a.device.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let version = |v: Option<i64>| v.map_or_else(|| "–".to_string(), |v| v.to_string());
        println!("libtorch built with CUDA: {}", r.cuda_built);
        println!("CUDA devices: {} (available: {})", r.cuda_device_count, r.cuda_available);
        println!(
            "cuDNN: {} (version {}), CUDA runtime {}",
            r.cudnn_available,
            version(r.cudnn_version),
            version(r.cudart_version)
        );
        println!(
            "device {}: 1024x1024 matmul {} in {:.2} ms (first, with start-up: {:.1} ms), torch threads {}",
            r.device,
            if r.matmul_ok { "correct" } else { "WRONG" },
            r.matmul_ms,
            r.matmul_first_ms,
            r.torch_threads
        );
    }
    if !r.matmul_ok {
        bail!("the matrix product on {} differs from the CPU's", r.device);
    }
    Ok(())
}

/// `histofed chaos …`.
pub(super) fn chaos(c: ChaosCmd) -> Result<()> {
    match c {
        ChaosCmd::KillPods(a) => runtime()?.block_on(kill_pods(a)),
        ChaosCmd::Run(a) => {
            let opts = crate::chaos::runner::RunOpts {
                exe: crate::util::exe::self_exe().context("locating the histofed binary")?,
                out: a.out.clone(),
                baseline: !a.no_baseline,
            };
            let results = crate::chaos::run_all(&a.path, &opts, a.quick)?;
            println!("{}", crate::chaos::report::render_table(&results));
            println!("reports: {}/chaos-report.md and .json", a.out.display());
            let failed: Vec<&str> = results.iter().filter(|r| !r.passed()).map(|r| r.name.as_str()).collect();
            if !failed.is_empty() {
                bail!("{} of {} scenarios failed: {}", failed.len(), results.len(), failed.join(", "));
            }
            Ok(())
        }
    }
}

/// `histofed bench …`.
pub(super) fn bench(c: BenchCmd) -> Result<()> {
    use crate::bench::federation as fed;
    match c {
        BenchCmd::Transfer(a) => {
            let rows = fed::transfer_bench(&a.sizes, a.reps).map_err(anyhow::Error::msg)?;
            println!("{}\n{}", fed::machine_line(), fed::render_transfer(&rows));
        }
        BenchCmd::Secagg(a) => {
            let row = crate::bench::secagg::secagg_bench(a.sites, a.params, a.dropped, a.reps, a.noise)
                .map_err(anyhow::Error::msg)?;
            println!("{}\n{}", fed::machine_line(), crate::bench::secagg::render_secagg(&[row]));
        }
        BenchCmd::Aggregate(a) => {
            let row =
                crate::bench::aggregate::aggregate_bench(a.sites, a.params, a.reps).map_err(anyhow::Error::msg)?;
            println!("{}\n{}", fed::machine_line(), crate::bench::aggregate::render_aggregate(&[row]));
        }
        BenchCmd::Federation(a) => {
            let opts = fed::FederationOpts {
                exe: crate::util::exe::self_exe().context("locating the histofed binary")?,
                dir: a.dir,
                sites: a.sites,
                params: a.params,
                rounds: a.rounds,
                warmup: a.warmup,
                timeout: a.timeout,
                heartbeat_secs: a.heartbeat_secs,
                keep_finished_update: !a.no_finished_update_on_disk,
                secagg: a.secagg,
                dp_sites: a.dp_sites,
            };
            let row = fed::federation_bench(&opts).map_err(anyhow::Error::msg)?;
            println!("{}\n{}", fed::machine_line(), fed::render_federation(&[row]));
        }
        BenchCmd::Models(a) => bench_models(a)?,
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub(super) enum ChaosCmd {
    /// Delete one random matching pod at every tick (like Chaos Mesh PodChaos); prints a JSON summary on stdout.
    KillPods(KillPodsCmd),
    /// Run chaos scenarios (a chaos/*.toml file or a folder of them) against a local federation; prints the table
    /// and writes chaos-report.md/.json. Exits non-zero when a scenario fails.
    Run(ChaosRunCmd),
}

#[derive(Args, Debug)]
pub(super) struct ChaosRunCmd {
    /// A scenario file or a folder of scenarios.
    path: PathBuf,
    /// Output folder (one subfolder per scenario, plus the reports).
    #[arg(long, default_value = "runs/chaos")]
    out: PathBuf,
    /// Skip the fault-free twin runs (no final-model distance; half the time).
    #[arg(long)]
    no_baseline: bool,
    /// Only the scenarios marked `quick = true` (the CI subset).
    #[arg(long)]
    quick: bool,
}

#[derive(Args, Debug)]
pub(super) struct KillPodsCmd {
    /// Label selector of the pods to kill.
    #[arg(long, default_value = "app=histofed-site")]
    selector: String,
    /// Namespace (default: the kubeconfig's or the pod's own).
    #[arg(long)]
    namespace: Option<String>,
    /// Time between kills, e.g. 30s, 1m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    every: Duration,
    /// Kills to make.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Grace period in seconds (0 = hard kill); default: the pod's own.
    #[arg(long)]
    grace: Option<u32>,
    /// Ask the API server to check each delete without doing it.
    #[arg(long)]
    dry_run: bool,
    /// Seed of the random pick.
    #[arg(long)]
    seed: Option<u64>,
    /// Give up after this many ticks even if fewer pods were killed (default: 10 × count).
    #[arg(long)]
    max_ticks: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub(super) enum CertsCmd {
    /// Create a development CA (ca.pem, ca.key) in DIR.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Replace an existing CA (every certificate it signed stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate (NAME.pem, NAME.key) signed by the CA in DIR: `server` or `site-N`.
    Issue {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Node name: `server`, `site-0`, `site-1`, ...
        #[arg(long)]
        name: String,
        /// Extra DNS names or IP addresses the certificate is valid for (repeatable), e.g. a Service name.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// CA (if missing) plus `server` and `site-0..N-1` in one go.
    All {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long)]
        sites: u32,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum BenchCmd {
    /// Per-step GAN training time in tch and in the same model written in PyTorch-Python, side by side.
    Models(BenchModelsCmd),
    /// P1: weights server → site → server through the bulk plane (plain and mTLS) vs raw TCP on loopback.
    Transfer(BenchTransferCmd),
    /// P3: streaming FedAvg over K updates of P parameters vs a memcpy of the same bytes.
    Aggregate(BenchAggregateCmd),
    /// The compute cost of secure aggregation (every site's sharing and masking, the server's unmasking) against
    /// FedAvg's fold of the same K updates of P parameters.
    Secagg(BenchSecaggCmd),
    /// P2: seconds per round of a real federation (server + K site processes, the no-op bench model) vs the raw-TCP
    /// floor of moving the same bytes.
    Federation(BenchFederationCmd),
}

#[derive(Args, Debug)]
pub(super) struct BenchTransferCmd {
    /// Sizes in MB.
    #[arg(long, value_delimiter = ',', default_value = "40,400")]
    sizes: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

#[derive(Args, Debug)]
pub(super) struct BenchAggregateCmd {
    #[arg(long, default_value_t = 8)]
    sites: usize,
    #[arg(long, default_value_t = 10_000_000)]
    params: usize,
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

#[derive(Args, Debug)]
pub(super) struct BenchSecaggCmd {
    #[arg(long, default_value_t = 8)]
    sites: usize,
    #[arg(long, default_value_t = 10_000_000)]
    params: usize,
    /// Sites killed after sharing their secrets (their masks removed from the shares).
    #[arg(long, default_value_t = 0)]
    dropped: usize,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Distributed DP: the sites add Skellam noise of this multiplier z (clip norm 1, calibrated for 2 sites).
    #[arg(long)]
    noise: Option<f64>,
}

#[derive(Args, Debug)]
pub(super) struct BenchFederationCmd {
    #[arg(long, default_value_t = 8)]
    sites: u32,
    #[arg(long, default_value_t = 10_000_000)]
    params: u64,
    /// Counted rounds (after the warm-up rounds).
    #[arg(long, default_value_t = 20)]
    rounds: u64,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Working folder (checkpoints of P-sized models: P=100M writes ~2.7 GB).
    #[arg(long, default_value = "runs/bench-federation")]
    dir: PathBuf,
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Heartbeat period (default: the configuration's).
    #[arg(long)]
    heartbeat_secs: Option<f64>,
    /// Sites do not keep their finished update on disk (`keep_finished_update = false`; on by default, as in the
    /// product).
    #[arg(long)]
    no_finished_update_on_disk: bool,
    /// Aggregate securely (`[secagg] enabled = true`, clip range 0.01): the round time with secure aggregation.
    #[arg(long)]
    secagg: bool,
    /// With --secagg (required: the sites' noise is added under secure aggregation): differential privacy whose
    /// noise the sites add (`privacy.noise = "sites"`) at multiplier Z.
    #[arg(long, value_name = "Z", requires = "secagg")]
    dp_sites: Option<f64>,
}

#[derive(Args, Debug)]
pub(super) struct BenchModelsCmd {
    /// Model preset: tiny | small | paper.
    #[arg(long, default_value = "small")]
    preset: String,
    #[arg(long, default_value_t = 32)]
    batch: i64,
    /// Timed steps per run for CGAN/ACGAN; WGAN-GP runs as many network updates (fewer steps), the same on both
    /// sides.
    #[arg(long, default_value_t = 6)]
    steps: usize,
    /// Untimed steps before each timed run.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Intra-op threads of both sides.
    #[arg(long, default_value_t = 2)]
    threads: i32,
    /// Interleaved tch/PyTorch repeats per combination; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Python of the bench venv (scripts/bench_venv.sh) [default: .venv-bench/bin/python; skipped if missing].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Only this combination (repeatable): cgan-cnn, cgan-vit, wgan-gp-cnn, wgan-gp-vit, acgan-cnn, acgan-vit.
    #[arg(long = "combo", value_name = "GAN-DISC")]
    combos: Vec<String>,
    /// Also write the table (markdown) to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Run both sides on this device: cpu | cuda | cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also write the rows as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub(super) async fn kill_pods(a: KillPodsCmd) -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let client = crate::kube::client().await?;
    let ns = a.namespace.unwrap_or_else(|| client.default_namespace().to_string());
    let api: ::kube::Api<Pod> = ::kube::Api::namespaced(client, &ns);
    let opts = crate::kube::chaos::KillOpts {
        selector: a.selector,
        every: a.every,
        count: a.count,
        grace: a.grace,
        dry_run: a.dry_run,
        seed: a.seed,
        max_ticks: Some(a.max_ticks.unwrap_or(a.count.saturating_mul(10).max(1))),
    };
    let summary = crate::kube::chaos::kill_pods(api, opts).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!(
        "{} pod(s) killed in {} tick(s), {} tick(s) without a match",
        summary.kills.len(),
        summary.ticks,
        summary.skipped_ticks
    );
    Ok(())
}

pub(super) fn certs(c: CertsCmd) -> Result<()> {
    match c {
        CertsCmd::Init { dir, force } => {
            let path = crate::cluster::certs::init_ca(&dir, force)?;
            println!("CA written to {} (keep ca.key secret)", path.display());
        }
        CertsCmd::Issue { dir, name, hosts } => {
            let (cert, key) = crate::cluster::certs::issue(&dir, &name, &hosts)?;
            println!("issued {name}: {} {}", cert.display(), key.display());
        }
        CertsCmd::All { dir, sites } => {
            for p in crate::cluster::certs::issue_all(&dir, sites)? {
                println!("{}", p.display());
            }
        }
    }
    Ok(())
}

pub(super) fn bench_models(a: BenchModelsCmd) -> Result<()> {
    use crate::bench::models::{
        default_venv_python, machine_description, render_table, run_model_bench, ModelBenchOptions,
    };
    let combos = a.combos.iter().map(|c| parse_combo(c)).collect::<Result<Vec<_>>>()?;
    let opts = ModelBenchOptions {
        preset: a.preset,
        batch: a.batch,
        steps: a.steps,
        warmup: a.warmup,
        threads: a.threads,
        python: Some(a.python.unwrap_or_else(default_venv_python)),
        combos,
        repeats: a.repeats,
        device: a.device,
    };
    let rows = run_model_bench(&opts, |line| eprintln!("{line}")).context("model benchmark")?;
    let table = render_table(&rows, &machine_description());
    println!("{table}");
    if let Some(out) = a.out {
        std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `wgan-gp-vit` → (WganGp, Vit): the discriminator is after the last '-'.
pub(super) fn parse_combo(s: &str) -> Result<(GanKind, DiscKind)> {
    let (g, d) = s
        .trim()
        .rsplit_once('-')
        .with_context(|| format!("--combo `{s}`: expected GAN-DISC, e.g. cgan-cnn or wgan-gp-vit"))?;
    Ok((g.parse()?, d.parse()?))
}
