//! The command line: each subcommand wires configuration, telemetry, data, the cluster and the actors together and
//! nothing more. Errors are `anyhow` here and only here; the libraries below return typed errors.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ractor::{Actor, ActorRef};

use crate::actors::evaluator::EvaluatorArgs;
use crate::actors::messages::site_actor_name;
use crate::actors::messages::ServerMsg;
use crate::actors::restart_policy::RestartPolicy;
use crate::actors::server::{Observed, ServerActor, ServerArgs, CHECKPOINT_PARTS};
use crate::actors::site::{SiteActor, SiteArgs};
use crate::actors::trainer::TrainerArgs;
use crate::actors::Exit;
use crate::cluster;
use crate::cluster::bulk::{BulkLimits, BulkTls, ClientOpts};
use crate::config::Config;
use crate::data::{self, partition, DataSource, LoadOptions, Splits};
use crate::eval::assessment::AssessOptions;
use crate::eval::central;
use crate::eval::gan_evaluator::QualitySetup;
use crate::eval::quality::QualityOptions;
use crate::eval::reference::ReferenceOptions;
use crate::faults::FaultPlan;
use crate::federation::checkpoint::{CheckpointMeta, CheckpointStore, PartData};
use crate::federation::site_store::SiteStore;
use crate::federation::weights::Weights;
use crate::models::{select_device, ClassifierConfig, DiscKind, Gan, GanKind};
use crate::models::{DISCRIMINATOR_PREFIX, GENERATOR_PREFIX};
use crate::records::RunReport;
use crate::train::classifier;
use crate::train::LocalCheckpoints;
use crate::util::telemetry::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(name = "histofed", version, about = "Resilient federated GAN training on histopathology images")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: human-readable text or JSON lines.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Write logs to this file instead of stderr.
    #[arg(long, global = true, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole federation locally: one server and N sites as separate processes on 127.0.0.1.
    Demo(DemoArgs),
    /// Run the server role: the global model, the round loop, checkpoints and the evaluator.
    Server(ServerCmd),
    /// Run one site role: its data shard and its generator-trainer.
    Site(SiteCmd),
    /// Run a standalone evaluator node: it joins a running federation through the role seam, scores every completed
    /// round's generator on the held-out test split (the quality suite every evaluation.eval_every rounds) and
    /// reports the numbers to the server (report.json `roles.<name>`, `histofed_role_metric`).
    Evaluator(EvaluatorCmd),
    /// Train centrally (no federation): the GAN, or with --classifier the ViT tissue classifier.
    Train(TrainCmd),
    /// Development certificates for mutual TLS: a CA and one certificate per node.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Benchmarks (results go to BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Dataset tools.
    #[command(subcommand)]
    Dataset(DatasetCmd),
    /// Print the per-site class histogram of the configured partition (and draw it as a PNG).
    Partition(PartitionCmd),
    /// Print the effective configuration (defaults, file and --set overrides merged) as TOML.
    Config(ConfigArgs),
    /// Show the membership and round as the server sees them (from its HTTP endpoint).
    Status(StatusCmd),
    /// Chaos tools.
    #[command(subcommand)]
    Chaos(ChaosCmd),
    /// The augmentation study: ViT classifier trained on real vs real + generated images (centralized and FedAvg).
    Augment(AugmentCmd),
    /// The paper's experiment grid — {CGAN, WGAN-GP, ACGAN} × {CNN-D, ViT-D} × {centralized, federated IID,
    /// federated Dirichlet 0.3} — measured and judged against the paper's claims → reproduction.md.
    Reproduce(ReproduceCmd),
    /// The recipe ablation: each ingredient of the small-budget recipe taken out in turn, trained centrally with the
    /// same steps and seeds, measured beside the real-image floor and a noise baseline → ablation.md.
    Ablate(AblateCmd),
}

#[derive(Args, Debug)]
struct AblateCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Training steps of every variant.
    #[arg(long, default_value_t = 600)]
    steps: u32,
    /// GAN seeds per variant (federation.seed, +1, ...).
    #[arg(long, default_value_t = 1)]
    seeds: u32,
    /// Output folder.
    #[arg(long, default_value = "runs/ablation")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct AugmentCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Server checkpoint directory (newest valid round), round-NNNNNN.json, or a generator .safetensors file.
    #[arg(long, value_name = "PATH")]
    generator: PathBuf,
    /// Seeds per condition (federation.seed, +1, ...).
    #[arg(long, default_value_t = 3)]
    seeds: u32,
    /// Synthetic images per real image of each class, one condition per ratio.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2")]
    ratios: Vec<f64>,
    /// Classifier steps per centralized run (and for the reference classifier).
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// FedAvg rounds of the federated version (default: federation.rounds).
    #[arg(long)]
    fed_rounds: Option<u64>,
    /// Local steps per site per round (default: federation.local_steps).
    #[arg(long)]
    local_steps: Option<u64>,
    /// Skip the federated version.
    #[arg(long)]
    no_federated: bool,
    /// Classifier preset: tiny (CPU) or vit-b16 (GPU).
    #[arg(long, default_value = "tiny")]
    classifier_preset: String,
    /// Skip the reference-classifier check of the synthetic images.
    #[arg(long)]
    no_reference: bool,
    /// Reference classifier cache (default: <data.cache_dir>/reference, else ~/.cache/histofed/reference).
    #[arg(long, value_name = "DIR")]
    reference_cache: Option<PathBuf>,
    /// Output folder (augment.json, augment.md).
    #[arg(long, default_value = "runs/augment")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct EvaluatorCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Role name (report key, metric label, actor `histofed-role-<name>`; with mTLS the certificate `role-<name>`).
    #[arg(long, default_value = "evaluator")]
    name: String,
    /// Where grids and quality reports go (default: <runtime.out_dir>/evaluator-<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop when the server says the run is over (default: stay, and follow a resumed server).
    #[arg(long)]
    exit_when_run_over: bool,
}

#[derive(Args, Debug)]
struct ReproduceCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// quick (CI, minutes), cpu (a 2-core machine, under 30 minutes) or gpu (one GPU, 64 px, paper-sized models).
    #[arg(long, default_value = "quick")]
    preset: String,
    /// Output folder (default runs/reproduce-<preset>); finished cells there are kept on a rerun.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these GANs (comma-separated: cgan, wgan-gp, acgan).
    #[arg(long, value_delimiter = ',')]
    gans: Vec<String>,
    /// Only these discriminators (comma-separated: cnn, vit).
    #[arg(long, value_delimiter = ',')]
    discs: Vec<String>,
    /// torch threads (default: runtime.threads).
    #[arg(long)]
    threads: Option<i32>,
    /// Override the preset's GAN steps per centralized run (the federated runs follow).
    #[arg(long)]
    gan_steps: Option<u32>,
    /// Override the preset's classifier steps.
    #[arg(long)]
    classifier_steps: Option<u32>,
    /// Only train the real-only classifiers of each regime and print their accuracy (how hard the data is), in a
    /// minute or two, before committing to the whole protocol.
    #[arg(long)]
    baseline_only: bool,
}

#[derive(Args, Debug)]
struct StatusCmd {
    /// The server's HTTP endpoint (its --http address), host:port.
    #[arg(long, default_value = "127.0.0.1:9090")]
    addr: String,
    /// Print the status document as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ChaosCmd {
    /// Delete one random matching pod at every tick (like Chaos Mesh PodChaos); prints a JSON summary on stdout.
    KillPods(KillPodsCmd),
    /// Run chaos scenarios (a chaos/*.toml file or a folder of them) against a local federation; prints the table
    /// and writes chaos-report.md/.json. Exits non-zero when a scenario fails.
    Run(ChaosRunCmd),
}

#[derive(Args, Debug)]
struct ChaosRunCmd {
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
struct KillPodsCmd {
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

#[derive(Args, Debug, Clone, Default)]
struct ConfigArgs {
    /// TOML configuration file (see config/demo.toml); defaults apply to anything it leaves out.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one setting, e.g. --set federation.rounds=5 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Data source: synthetic | imagefolder:PATH | npz:PATH | mhist:PATH | pcam:DIR.
    #[arg(long)]
    data: Option<String>,
    /// Skip corrupt or unreadable image files (and report how many) instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Device for tch work: cpu | cuda | cuda:N (default: model.device; empty there = CUDA when available).
    #[arg(long)]
    device: Option<String>,
}

#[derive(Args, Debug)]
struct DemoArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output folder (samples, checkpoints, reports, logs).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Number of site processes.
    #[arg(long)]
    sites: Option<u32>,
    /// Rounds to run.
    #[arg(long)]
    rounds: Option<u64>,
    /// Plaintext TCP with the cookie only (by default the demo issues certificates and runs mutual TLS).
    #[arg(long)]
    no_tls: bool,
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
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
enum BenchCmd {
    /// Per-step GAN training time in tch and in the same model written in PyTorch-Python, side by side.
    Models(BenchModelsCmd),
    /// P1: weights server → site → server through the bulk plane (plain and mTLS) vs raw TCP on loopback.
    Transfer(BenchTransferCmd),
    /// P3: streaming FedAvg over K updates of P parameters vs a memcpy of the same bytes.
    Aggregate(BenchAggregateCmd),
    /// P2: seconds per round of a real federation (server + K site processes, the no-op bench model) vs the raw-TCP
    /// floor of moving the same bytes.
    Federation(BenchFederationCmd),
}

#[derive(Args, Debug)]
struct BenchTransferCmd {
    /// Sizes in MB.
    #[arg(long, value_delimiter = ',', default_value = "40,400")]
    sizes: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

#[derive(Args, Debug)]
struct BenchAggregateCmd {
    #[arg(long, default_value_t = 8)]
    sites: usize,
    #[arg(long, default_value_t = 10_000_000)]
    params: usize,
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

#[derive(Args, Debug)]
struct BenchFederationCmd {
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
}

#[derive(Args, Debug)]
struct BenchModelsCmd {
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
}

#[derive(Args, Debug)]
struct ServerCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output folder; overrides runtime.out_dir.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Serve /healthz, /readyz, /metrics and /status on this address (e.g. 0.0.0.0:9090).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Watch the site pods with this label selector through the Kubernetes API (in the namespace of
    /// POD_NAMESPACE or the kubeconfig): a deleted or NotReady pod drops its site at once.
    #[arg(long, value_name = "SELECTOR")]
    k8s_site_selector: Option<String>,
    /// After the last round, keep serving /status and /metrics until SIGTERM instead of exiting (a Deployment
    /// would otherwise restart a finished server over and over).
    #[arg(long)]
    stay_up: bool,
}

#[derive(Args, Debug)]
struct SiteCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// This site's id (0-based).
    #[arg(long, required_unless_present = "site_id_from_pod_name", conflicts_with = "site_id_from_pod_name")]
    site_id: Option<u32>,
    /// Take the site id from a StatefulSet pod name (`histofed-site-2` → 2), e.g. `$(POD_NAME)`.
    #[arg(long, value_name = "POD_NAME")]
    site_id_from_pod_name: Option<String>,
    /// Serve /healthz, /readyz and /metrics on this address.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// The server's host:port; overrides cluster.server_addr.
    #[arg(long)]
    server: Option<String>,
    /// Announce this protocol version instead of ours (compatibility tests only).
    #[arg(long, hide = true)]
    protocol_version: Option<u32>,
    /// When the server ends the run, stay idle until SIGTERM instead of exiting (under a StatefulSet).
    #[arg(long)]
    stay_up: bool,
}

#[derive(Args, Debug)]
struct TrainCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Train on the whole training split in this process (the federated path is `demo` / `server` + `site`).
    #[arg(long, required = true)]
    centralized: bool,
    /// Train the ViT classifier instead of the GAN.
    #[arg(long)]
    classifier: bool,
    /// Classifier preset: tiny (CPU) or vit-b16 (GPU).
    #[arg(long, default_value = "tiny")]
    classifier_preset: String,
    /// Optimisation steps.
    #[arg(long, default_value_t = 300)]
    steps: u64,
    /// Evaluate (sample grid + FD, or test accuracy) every N steps.
    #[arg(long, default_value_t = 100)]
    every: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
}

#[derive(Subcommand, Debug)]
enum DatasetCmd {
    /// Write the procedural H&E dataset as an ImageFolder (ROOT/<CLASS>/*.png) plus a contact sheet.
    Synth(SynthCmd),
}

#[derive(Args, Debug)]
struct SynthCmd {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 100)]
    per_class: usize,
    #[arg(long, default_value_t = 64)]
    size: u32,
    #[arg(long, default_value_t = 9)]
    classes: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// `standard` or `hard` (per-tile stain variation, mixed tiles, grain).
    #[arg(long, default_value = "standard")]
    difficulty: data::synth::Difficulty,
}

#[derive(Args, Debug)]
struct PartitionCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where to draw the stacked-bar chart.
    #[arg(long, default_value = "partition.png")]
    png: PathBuf,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(cli.log_format, cli.log_file.as_deref(), cli.verbose) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let logs_to_file = cli.log_file.is_some();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The terminal gets the error once; a log file gets it too.
            if logs_to_file {
                tracing::error!("{e:#}");
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> Result<()> {
    if matches!(cmd, Command::Server(_) | Command::Site(_)) {
        // Round after round of model-sized buffers: keep freed ones for reuse (see `heap`; role nodes, the
        // evaluator among them, do it in `role::run_node`).
        let retained = crate::util::heap::retain_freed_memory();
        tracing::debug!(retained, "heap retention");
    }
    match cmd {
        Command::Demo(a) => {
            let mut cfg = load_config(&a.config, Some(crate::launcher::demo_config()?))?;
            if let Some(s) = a.sites {
                cfg.federation.sites = s;
                cfg.federation.min_sites = cfg.federation.min_sites.min(s);
            }
            if let Some(r) = a.rounds {
                cfg.federation.rounds = r;
            }
            cfg.validate()?;
            runtime()?.block_on(crate::launcher::demo(cfg, a.out, !a.no_tls))
        }
        Command::Server(a) => {
            let mut cfg = load_config(&a.config, None)?;
            if let Some(out) = a.out {
                cfg.runtime.out_dir = out;
            }
            runtime()?.block_on(run_server(
                cfg,
                ServerOpts { http: a.http, k8s_site_selector: a.k8s_site_selector, stay_up: a.stay_up },
            ))
        }
        Command::Status(a) => runtime()?.block_on(async {
            let s = crate::observability::fetch_status(&a.addr).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", crate::observability::render_status(&s));
            }
            Ok(())
        }),
        Command::Chaos(ChaosCmd::KillPods(a)) => runtime()?.block_on(kill_pods(a)),
        Command::Chaos(ChaosCmd::Run(a)) => {
            let opts = crate::chaos::runner::RunOpts {
                exe: std::env::current_exe().context("locating the histofed binary")?,
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
        Command::Site(a) => {
            let mut cfg = load_config(&a.config, None)?;
            if let Some(s) = a.server {
                cfg.cluster.server_addr = s;
            }
            cfg.validate()?;
            let protocol = a.protocol_version.unwrap_or(crate::actors::messages::PROTOCOL_VERSION);
            let site_id = match (a.site_id, &a.site_id_from_pod_name) {
                (Some(id), _) => id,
                (None, Some(pod)) => crate::kube::membership::ordinal_from_pod_name(pod)
                    .with_context(|| format!("pod name {pod:?} does not end in -N (a StatefulSet ordinal)"))?,
                (None, None) => bail!("give --site-id or --site-id-from-pod-name"),
            };
            runtime()?.block_on(run_site(cfg, site_id, protocol, a.http, a.stay_up))
        }
        Command::Train(a) => train(a),
        Command::Augment(a) => augment(a),
        Command::Reproduce(a) => reproduce(a),
        Command::Ablate(a) => ablate(a),
        Command::Evaluator(a) => {
            let cfg = load_config(&a.config, None)?;
            runtime()?.block_on(run_evaluator_node(cfg, a))
        }
        Command::Certs(c) => certs(c),
        Command::Bench(BenchCmd::Transfer(a)) => {
            let rows = crate::bench::federation::transfer_bench(&a.sizes, a.reps).map_err(anyhow::Error::msg)?;
            println!(
                "{}\n{}",
                crate::bench::federation::machine_line(),
                crate::bench::federation::render_transfer(&rows)
            );
            Ok(())
        }
        Command::Bench(BenchCmd::Aggregate(a)) => {
            let row =
                crate::bench::federation::aggregate_bench(a.sites, a.params, a.reps).map_err(anyhow::Error::msg)?;
            println!(
                "{}\n{}",
                crate::bench::federation::machine_line(),
                crate::bench::federation::render_aggregate(&[row])
            );
            Ok(())
        }
        Command::Bench(BenchCmd::Federation(a)) => {
            let opts = crate::bench::federation::FederationOpts {
                exe: std::env::current_exe().context("locating the histofed binary")?,
                dir: a.dir,
                sites: a.sites,
                params: a.params,
                rounds: a.rounds,
                warmup: a.warmup,
                timeout: a.timeout,
                heartbeat_secs: a.heartbeat_secs,
                keep_finished_update: !a.no_finished_update_on_disk,
            };
            let row = crate::bench::federation::federation_bench(&opts).map_err(anyhow::Error::msg)?;
            println!(
                "{}\n{}",
                crate::bench::federation::machine_line(),
                crate::bench::federation::render_federation(&[row])
            );
            Ok(())
        }
        Command::Bench(BenchCmd::Models(a)) => bench_models(a),
        Command::Dataset(DatasetCmd::Synth(a)) => synth(a),
        Command::Partition(a) => show_partition(load_config(&a.config, None)?, &a.png),
        Command::Config(a) => {
            print!("{}", load_config(&a, None)?.to_toml()?);
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting tokio")
}

/// Defaults (or `base`), then the file, then `--data`, then `--set` overrides; validated.
fn load_config(a: &ConfigArgs, base: Option<Config>) -> Result<Config> {
    let mut cfg = match &a.config {
        Some(path) => Config::load(path)?,
        None => base.unwrap_or_default(),
    };
    let mut overrides = a.set.clone();
    if let Some(d) = &a.data {
        overrides.push(format!("data.source={}", toml::Value::String(d.clone())));
    }
    if a.skip_bad {
        overrides.push("data.skip_bad=true".into());
    }
    if let Some(d) = &a.device {
        overrides.push(format!("model.device={}", toml::Value::String(d.clone())));
    }
    if !overrides.is_empty() {
        cfg.apply_overrides(&overrides)?;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Loads the configured data source at the model's image size (as the server and centralized training see it), and
/// sizes `cfg`'s model for the data's classes (see [`load_data_stained`]).
pub fn load_data(cfg: &mut Config) -> Result<Splits> {
    load_data_stained(cfg, data::synth::StainShift::default())
}

/// Loads the data as one site sees it: synthetic images carry that site's stain shift. A real source brings its own
/// classes: an unset `data.num_classes` takes their count (so call this before `cfg.model_config()` or
/// `cfg.hash()`), one set explicitly must agree with the data ([`Config::take_classes_from_data`]).
pub fn load_data_stained(cfg: &mut Config, stain: data::synth::StainShift) -> Result<Splits> {
    let model = cfg.model_config()?;
    let source: DataSource = cfg.data.source.parse()?;
    let opts = LoadOptions {
        size: model.image_size as u32,
        skip_bad: cfg.data.skip_bad,
        cache_dir: cfg.data.cache_dir.clone(),
        seed: cfg.federation.seed,
        classes: None,
        synth_per_class: cfg.data.per_class,
        synth_num_classes: cfg.num_classes(),
        val_fraction: cfg.data.val_fraction,
        test_fraction: cfg.data.test_fraction,
        synth_stain: stain,
        synth_difficulty: cfg.data.difficulty.parse()?,
        max_images: cfg.data.max_images,
    };
    let splits = data::load(&source, &opts).with_context(|| format!("loading data from {}", cfg.data.source))?;
    if !splits.skipped.is_empty() {
        tracing::warn!(skipped = splits.skipped.len(), "skipped unreadable image files (--skip-bad)");
        for (path, why) in splits.skipped.iter().take(10) {
            tracing::warn!(path = %path.display(), %why, "skipped");
        }
    }
    let explicit = cfg.data.num_classes.is_some();
    cfg.take_classes_from_data(&splits.train.classes)?;
    if !explicit && source != DataSource::Synthetic {
        tracing::info!(classes = ?splits.train.classes, "the model takes its classes from the data");
    }
    Ok(splits)
}

/// The evaluator's full quality suite as `[evaluation]` configures it (`None` when `eval_every` is 0).
pub fn quality_setup(cfg: &Config, train: &data::Dataset, device: tch::Device) -> Option<QualitySetup> {
    let e = &cfg.evaluation;
    if e.eval_every == 0 {
        return None;
    }
    let options = AssessOptions {
        reference: ReferenceOptions {
            preset: e.reference_preset.clone(),
            steps: u64::from(e.reference_steps),
            batch_size: 32,
            seed: cfg.federation.seed,
            device,
        },
        cache_dir: reference_cache_dir(cfg),
        quality: QualityOptions { memorization_threshold: e.memorization_threshold, ..QualityOptions::default() },
        samples_per_class: e.samples_per_class,
    };
    Some(QualitySetup {
        train: Arc::new(train.clone()),
        options,
        every: e.eval_every,
        last_round: cfg.federation.rounds,
    })
}

/// Where the reference classifier is cached: `evaluation.cache_dir`, else `data.cache_dir/reference`, else the
/// user's cache directory.
pub fn reference_cache_dir(cfg: &Config) -> PathBuf {
    let data_cache = cfg.data.cache_dir.as_deref();
    cfg.evaluation.cache_dir.clone().unwrap_or_else(|| crate::eval::reference::default_cache_dir(data_cache))
}

/// The site's shard of the training split under the configured partition.
pub fn site_shard(cfg: &Config, train: &data::Dataset, site_id: u32) -> Result<data::Dataset> {
    shard_of(cfg, train, site_id, &cfg.partition()?)
}

/// Site `site_id`'s share of `ds` under `scheme`, with the federation's site count and seed.
fn shard_of(cfg: &Config, ds: &data::Dataset, site_id: u32, scheme: &partition::Partition) -> Result<data::Dataset> {
    let parts =
        partition::partition(&ds.labels, ds.num_classes(), cfg.federation.sites as usize, scheme, cfg.federation.seed)?;
    let idx = parts
        .get(site_id as usize)
        .with_context(|| format!("site id {site_id} is outside 0..{} (federation.sites)", cfg.federation.sites))?;
    Ok(ds.subset(idx))
}

/// The site's share of the validation split (partitioned like the training data, so it has the site's class mix)
/// and its evaluator's settings; `None` when federated evaluation is off or this site's share is too small to
/// score (the site then answers the server's requests with the reason).
fn site_evaluator(
    cfg: &Config,
    model: &crate::models::ModelConfig,
    device: tch::Device,
    val: &data::Dataset,
    site_id: u32,
) -> Option<crate::actors::evaluator::SiteEvaluatorArgs> {
    if !cfg.evaluation.at_sites || cfg.model.bench_params.is_some() {
        return None;
    }
    let need = crate::eval::site_eval::PR_K + 1;
    // The same scheme and seed as the training data, so the site's share has its class mix; a Dirichlet draw's
    // minimum size is meant for training shards and is not asked of the (ten times smaller) validation split.
    let shard = cfg.partition().map_err(anyhow::Error::from).and_then(|scheme| {
        let scheme = match scheme {
            partition::Partition::Dirichlet { alpha, .. } => partition::Partition::Dirichlet { alpha, min_size: 0 },
            other => other,
        };
        shard_of(cfg, val, site_id, &scheme)
    });
    let shard = match shard {
        Ok(s) if s.len() >= need => s,
        Ok(s) => {
            tracing::warn!(
                images = s.len(),
                need,
                "this site's share of the validation split is too small; it will not evaluate \
                 (raise data.val_fraction)"
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot partition the validation split; this site will not evaluate");
            return None;
        }
    };
    tracing::info!(site_id, images = shard.len(), "site validation split ready (federated evaluation)");
    Some(crate::actors::evaluator::SiteEvaluatorArgs {
        site_id,
        model: model.clone(),
        device,
        val: Arc::new(shard),
        seed: cfg.federation.seed,
        threads: cfg.runtime.threads,
    })
}

fn fresh_report(cfg: &Config) -> RunReport {
    RunReport {
        run: cfg.runtime.out_dir.display().to_string(),
        config_hash: cfg.hash(),
        model: format!("{} × {} ({})", cfg.model.gan, cfg.model.discriminator, cfg.model.preset),
        strategy: cfg.federation.strategy.clone(),
        partition: cfg.data.partition.clone(),
        rounds_configured: cfg.federation.rounds,
        ..RunReport::default()
    }
}

/// Resolves on the first SIGINT or SIGTERM.
/// `--stay-up`: the run is over; keep the HTTP endpoint answering until told to stop.
async fn stay_up() {
    tracing::info!("run finished; staying up (--stay-up) until SIGTERM");
    wait_for_signal().await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; relying on the default actions");
            std::future::pending::<()>().await
        }
    }
}

/// The role already finished successfully (it only waited for a signal, with --stay-up).
fn finished_ok(exit: &Exit) -> bool {
    exit.lock().map(|e| matches!(*e, Some(Ok(_)))).unwrap_or(false)
}

fn take_exit(exit: &Exit) -> Option<Result<String, String>> {
    exit.lock().ok().and_then(|mut e| e.take())
}

/// Operational options of the server process (not part of the run's configuration).
#[derive(Debug, Default, Clone)]
pub struct ServerOpts {
    pub http: Option<SocketAddr>,
    pub k8s_site_selector: Option<String>,
    pub stay_up: bool,
}

/// Starts the HTTP endpoint when asked to; the returned task ends with the process.
async fn serve_http(addr: Option<SocketAddr>, state: crate::observability::HttpState) -> Result<()> {
    if let Some(addr) = addr {
        let (bound, _task) = crate::observability::serve(addr, state).await?;
        tracing::info!(%bound, "health, readiness, metrics and status served over HTTP");
    }
    Ok(())
}

async fn kill_pods(a: KillPodsCmd) -> Result<()> {
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

pub async fn run_server(mut cfg: Config, opts: ServerOpts) -> Result<()> {
    tch::set_num_threads(cfg.runtime.threads);
    // First the data: a real source decides the model's classes, hence the model and the configuration's hash.
    let splits = load_data(&mut cfg)?;
    let model = cfg.model_config()?;
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    let out = cfg.runtime.out_dir.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let store = CheckpointStore::open(out.join("checkpoints"), cfg.federation.keep_checkpoints)?;
    let loaded = store.load_latest()?;
    for (path, why) in &loaded.skipped {
        tracing::warn!(path = %path.display(), %why, "skipping a corrupt checkpoint");
    }
    let strategy_state = loaded.checkpoint.as_ref().and_then(|ck| ck.parts.get("strategy").cloned());
    let (initial, completed, mut report) = match loaded.checkpoint {
        Some(ck) => {
            if ck.meta.config_hash != cfg.hash() {
                bail!(
                    "{} holds checkpoints of another configuration (hash {} vs {}): use another --out or remove them",
                    out.display(),
                    ck.meta.config_hash,
                    cfg.hash()
                );
            }
            let (g, d) = match (ck.parts.get("generator"), ck.parts.get("discriminator")) {
                (Some(g), Some(d)) => (g, d),
                _ => bail!("checkpoint of round {} lacks its generator or discriminator", ck.meta.round),
            };
            let w = Weights::join_prefixed(&[(GENERATOR_PREFIX, g), (DISCRIMINATOR_PREFIX, d)])?;
            let mut report = RunReport::read(&out).unwrap_or_else(|_| fresh_report(&cfg));
            report.rounds.retain(|r| r.round <= ck.meta.round);
            // Killed between making the round durable and rewriting the report: the record is in the checkpoint.
            if ck.meta.round > 0 && !report.rounds.iter().any(|r| r.round == ck.meta.round) {
                match ck.meta.extra.get("record").cloned().map(serde_json::from_value::<crate::records::RoundRecord>) {
                    Some(Ok(record)) => {
                        tracing::warn!(
                            round = ck.meta.round,
                            "the report missed the last durable round; restored it from its checkpoint"
                        );
                        report.rounds.push(record);
                        report.rounds.sort_by_key(|r| r.round);
                    }
                    _ => tracing::warn!(
                        round = ck.meta.round,
                        "the report misses round {} and its checkpoint holds no record",
                        ck.meta.round
                    ),
                }
            }
            if ck.meta.round > 0 {
                report.resumed_from_round = Some(ck.meta.round);
                tracing::info!(round = ck.meta.round, "resuming from checkpoint");
            }
            (w, ck.meta.round, report)
        }
        None => {
            let (m, seed, bench) = (model.clone(), cfg.federation.seed as i64, cfg.model.bench_params);
            let gan = tokio::task::spawn_blocking(move || match bench {
                Some(p) => crate::train::bench_weights(p, seed as u64).map_err(anyhow::Error::from),
                None => Ok(Gan::new(&m, device, seed)?.weights()?),
            })
            .await??;
            let meta = CheckpointMeta {
                round: 0,
                strategy: cfg.federation.strategy.clone(),
                strategy_state: serde_json::Value::Null,
                membership: Vec::new(),
                config_hash: cfg.hash(),
                created_unix_ms: 0,
                extra: serde_json::json!({ "initial": true }),
            };
            let parts: Vec<(&str, PartData)> =
                CHECKPOINT_PARTS.iter().map(|(name, prefix)| (*name, PartData::Weights(&gan, prefix))).collect();
            store.save_parts(&meta, &parts)?;
            (gan, 0, fresh_report(&cfg))
        }
    };
    if completed >= cfg.federation.rounds {
        println!("all {} rounds are already complete in {}", cfg.federation.rounds, out.display());
        if opts.stay_up {
            let obs = Observed {
                metrics: crate::observability::Metrics::new("server"),
                status: crate::observability::StatusHandle::default(),
                readiness: crate::observability::Readiness::new("finished"),
            };
            obs.metrics.set_rounds_configured(cfg.federation.rounds);
            obs.status.update(|s| {
                s.role = "server".into();
                s.round = completed;
                s.rounds_configured = cfg.federation.rounds;
                s.phase = "finished".into();
            });
            obs.readiness.set_ready();
            serve_http(
                opts.http,
                crate::observability::HttpState { metrics: obs.metrics, status: obs.status, readiness: obs.readiness },
            )
            .await?;
            stay_up().await;
        }
        return Ok(());
    }
    report.classes = splits.train.classes.clone();
    tracing::info!(
        model = %report.model,
        generator_values = initial.strip_prefix(GENERATOR_PREFIX).num_values(),
        discriminator_values = initial.strip_prefix(DISCRIMINATOR_PREFIX).num_values(),
        bytes = initial.num_bytes(),
        "global model ready"
    );
    let initial_bytes = initial.num_bytes();
    let quality = quality_setup(&cfg, &splits.train, device);
    let evaluator = EvaluatorArgs {
        model: model.clone(),
        device,
        real: Arc::new(splits.test),
        per_class: cfg.runtime.grid_per_class,
        out_dir: out.clone(),
        seed: cfg.federation.seed,
        threads: cfg.runtime.threads,
        quality,
    };
    let listen = cluster::resolve(&cfg.cluster.server_addr)?;
    let security = cluster::Security::from_dir(cfg.cluster.tls_dir.as_deref(), crate::cluster::certs::SERVER_NAME)?;
    let mtls = security.is_mtls();
    let bulk_tls = match &security {
        cluster::Security::Plain => BulkTls::Plain,
        cluster::Security::Mtls(m) => BulkTls::Server(m.acceptor()?),
    };
    let bulk_port = match cfg.cluster.bulk_port {
        Some(p) => p,
        None if listen.port() == 0 => 0,
        None => listen.port().checked_add(1).context("cluster.server_addr port 65535 leaves no bulk port")?,
    };
    let node = cluster::start_node("server", listen, cfg.cookie(), cfg.cluster.max_frame_mib << 20, security).await?;
    let exit: Exit = Arc::new(Mutex::new(None));
    let obs = Observed {
        metrics: crate::observability::Metrics::new("server"),
        status: crate::observability::StatusHandle::default(),
        readiness: crate::observability::Readiness::new("starting"),
    };
    let args = ServerArgs {
        node: node.server.clone(),
        mtls,
        strategy: {
            let mut s = cfg.strategy()?.build()?;
            if let Some(state) = &strategy_state {
                tracing::info!(strategy = s.name(), "restoring the strategy's state from the checkpoint");
                s.restore_state_weights(state);
            }
            s
        },
        config: cfg.clone(),
        out_dir: out.clone(),
        initial,
        completed_rounds: completed,
        report,
        store,
        evaluator: cfg.model.bench_params.is_none().then_some(evaluator),
        exit: exit.clone(),
        bulk_listen: SocketAddr::new(listen.ip(), bulk_port),
        bulk_tls,
        bulk_limits: BulkLimits {
            max_body: (cfg.cluster.max_frame_mib << 20).max(initial_bytes as u64 * 2),
            max_inflight_uploads: cfg.cluster.max_inflight_uploads,
            stall: Duration::from_secs_f64(cfg.cluster.transfer_stall_secs),
            ..BulkLimits::default()
        },
        restart_policy: RestartPolicy::default(),
        obs: obs.clone(),
        stay_up: opts.stay_up,
    };
    serve_http(
        opts.http,
        crate::observability::HttpState {
            metrics: obs.metrics.clone(),
            status: obs.status.clone(),
            readiness: obs.readiness.clone(),
        },
    )
    .await?;
    let (server, handle) = Actor::spawn(Some("histofed-server".into()), ServerActor, args).await?;
    if let Some(selector) = &opts.k8s_site_selector {
        watch_site_pods(server.clone(), selector).await;
    }
    tracing::info!(%listen, mtls, "server listening");
    tokio::select! {
        _ = handle => {},
        _ = wait_for_signal() => {
            server.stop(Some("signal".into()));
            // With --stay-up a finished run waits for exactly this signal.
            if !finished_ok(&exit) {
                node.shutdown().await;
                tracing::warn!("signal received; stopping (completed rounds are checkpointed)");
                bail!("interrupted");
            }
        }
    }
    if node.refused_handshakes() > 0 {
        tracing::warn!(refused = node.refused_handshakes(), "TLS handshakes refused during the run");
    }
    node.shutdown().await;
    match take_exit(&exit) {
        Some(Ok(msg)) => {
            tracing::info!(%msg, "run finished");
            println!("{msg}; outputs in {}", out.display());
            Ok(())
        }
        Some(Err(msg)) => bail!("run failed: {msg}"),
        None => bail!("the server actor stopped unexpectedly (see the log)"),
    }
}

/// Feeds the server the Kubernetes view of its site pods. Without API access (no kubeconfig, no service account,
/// RBAC) the server goes on with cluster events and heartbeats alone, and says so.
async fn watch_site_pods(server: ActorRef<ServerMsg>, selector: &str) {
    let client = match crate::kube::client().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no Kubernetes API access; site membership from the cluster only");
            return;
        }
    };
    let ns = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| client.default_namespace().to_string());
    tracing::info!(namespace = %ns, %selector, "watching site pods");
    let mut watch = crate::kube::membership::watch_sites(client, &ns, selector, 256);
    tokio::spawn(async move {
        while let Some(ev) = watch.events.recv().await {
            if server.cast(ServerMsg::Kube(ev)).is_err() {
                break;
            }
        }
        if let Ok(Err(e)) = watch.task.await {
            tracing::warn!(error = %e, "the pod watch ended; site membership from the cluster only");
        }
    });
}

pub async fn run_site(
    mut cfg: Config,
    site_id: u32,
    protocol: u32,
    http: Option<SocketAddr>,
    stay_up: bool,
) -> Result<()> {
    tch::set_num_threads(cfg.runtime.threads);
    if site_id >= cfg.federation.sites {
        bail!("--site-id {site_id} is outside 0..{} (federation.sites)", cfg.federation.sites);
    }
    let stain = data::synth::StainShift::for_site(site_id as usize, cfg.data.stain_shift, cfg.federation.seed);
    let splits = load_data_stained(&mut cfg, stain)?;
    let model = cfg.model_config()?;
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    let shard = site_shard(&cfg, &splits.train, site_id)?;
    let state_dir = cfg
        .runtime
        .state_dir
        .clone()
        .unwrap_or_else(|| cfg.runtime.out_dir.join("sites").join(format!("site-{site_id}")));
    let store =
        SiteStore::open(&state_dir).with_context(|| format!("opening the site's state in {}", state_dir.display()))?;
    let class_counts: Vec<u64> = shard.class_counts().iter().map(|&c| c as u64).collect();
    tracing::info!(site_id, images = shard.len(), ?class_counts, "site shard ready");
    let evaluator = site_evaluator(&cfg, &model, device, &splits.val, site_id);
    let server_addr = cluster::resolve(&cfg.cluster.server_addr)?;
    let ip = if server_addr.ip().is_loopback() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let name = crate::cluster::certs::site_name(site_id);
    let security = cluster::Security::from_dir(cfg.cluster.tls_dir.as_deref(), &name)?;
    let node =
        cluster::start_node(&name, cluster::ephemeral(ip), cfg.cookie(), cfg.cluster.max_frame_mib << 20, security)
            .await?;
    let exit: Exit = Arc::new(Mutex::new(None));
    let metrics = crate::observability::Metrics::new("site");
    metrics.set_rounds_configured(cfg.federation.rounds);
    let args = SiteArgs {
        site_id,
        node: node.server.clone(),
        security: node.security.clone(),
        server_addr,
        reconnect: Duration::from_secs_f64(cfg.cluster.reconnect_secs),
        num_samples: shard.len() as u64,
        class_counts,
        trainer: TrainerArgs {
            site_id,
            model,
            device,
            data: Arc::new(shard),
            seed: cfg.federation.seed,
            threads: cfg.runtime.threads,
            checkpoints: Some(LocalCheckpoints { store: store.clone(), every: cfg.federation.local_checkpoint_every }),
            bench: cfg.model.bench_params.is_some(),
        },
        evaluator,
        restart_policy: RestartPolicy::default(),
        min_batch: cfg.federation.min_batch_size,
        faults: FaultPlan::for_site(&cfg.faults, site_id),
        exit: exit.clone(),
        bulk: ClientOpts {
            tls: match &node.security {
                cluster::Security::Plain => BulkTls::Plain,
                cluster::Security::Mtls(m) => {
                    BulkTls::Client(m.connector()?, crate::cluster::certs::SERVER_NAME.to_string())
                }
            },
            stall: Duration::from_secs_f64(cfg.cluster.transfer_stall_secs),
            chunk: 1 << 20,
            max_body: cfg.cluster.max_frame_mib << 20,
        },
        store: Some(store.clone()),
        keep_finished: cfg.federation.keep_finished_update,
        metrics: metrics.clone(),
        give_up: cfg.cluster.site_give_up_secs.map(Duration::from_secs_f64),
        protocol,
        stay_up,
    };
    let readiness = crate::observability::Readiness::new("starting");
    let status = crate::observability::StatusHandle::default();
    status.update(|s| {
        s.role = "site".into();
        s.expected = vec![site_actor_name(site_id)];
        s.phase = "running".into();
    });
    serve_http(http, crate::observability::HttpState { metrics, status, readiness: readiness.clone() }).await?;
    let (site, handle) = Actor::spawn(Some(site_actor_name(site_id)), SiteActor, args).await?;
    // Ready = data loaded, node up, actor running; a hung process stops answering the probe.
    readiness.set_ready();
    tokio::select! {
        _ = handle => {},
        _ = wait_for_signal() => {
            site.stop(Some("signal".into()));
            if !finished_ok(&exit) {
                node.shutdown().await;
                bail!("interrupted");
            }
        }
    }
    node.shutdown().await;
    match take_exit(&exit) {
        Some(Ok(msg)) => {
            tracing::info!(%msg, "site done");
            Ok(())
        }
        Some(Err(msg)) => bail!("{msg}"),
        None => bail!("the site actor stopped unexpectedly (see the log)"),
    }
}

async fn run_evaluator_node(mut cfg: Config, a: EvaluatorCmd) -> Result<()> {
    use crate::actors::evaluator::EvaluatorRole;
    use crate::actors::role::{run_node, Role, RoleFactory, RoleNodeOptions};
    tch::set_num_threads(cfg.runtime.threads);
    let splits = load_data(&mut cfg)?;
    let model = cfg.model_config()?;
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    let out = a.out.clone().unwrap_or_else(|| cfg.runtime.out_dir.join(format!("evaluator-{}", a.name)));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let args = EvaluatorArgs {
        model,
        device,
        quality: quality_setup(&cfg, &splits.train, device),
        real: Arc::new(splits.test),
        per_class: cfg.runtime.grid_per_class,
        out_dir: std::fs::canonicalize(&out)?,
        seed: cfg.federation.seed,
        threads: cfg.runtime.threads,
    };
    tracing::info!(name = %a.name, out = %out.display(), "evaluator node starting");
    let make: RoleFactory = Arc::new(move || Ok(Box::new(EvaluatorRole::new(&args)?) as Box<dyn Role>));
    let mut opts = RoleNodeOptions::new(a.name.clone(), cfg);
    opts.exit_when_run_over = a.exit_when_run_over;
    let why = run_node(make, opts).await?;
    tracing::info!(%why, "evaluator node stopped");
    Ok(())
}

fn reproduce(a: ReproduceCmd) -> Result<()> {
    let mut preset = crate::studies::reproduce::Preset::named(&a.preset)?;
    for g in &a.gans {
        g.parse::<GanKind>().map_err(|e| anyhow::anyhow!("--gans {g:?}: {e}"))?;
    }
    for d in &a.discs {
        d.parse::<DiscKind>().map_err(|e| anyhow::anyhow!("--discs {d:?}: {e}"))?;
    }
    if !a.gans.is_empty() {
        preset.gans = a.gans.clone();
    }
    if !a.discs.is_empty() {
        preset.discs = a.discs.clone();
    }
    if let Some(n) = a.gan_steps {
        preset.gan_steps = n;
    }
    if let Some(n) = a.classifier_steps {
        preset.classifier_steps = n;
    }
    // The preset decides the data and model sizes (over the config file); --set still overrides them. Its class
    // count is for synthetic data: a real source brings its own classes.
    let mut args = a.config;
    let user_set = std::mem::take(&mut args.set);
    let user_classes = user_set.iter().any(|s| s.split_once('=').is_some_and(|(k, _)| k.trim() == "data.num_classes"));
    args.set.push(format!("data.per_class={}", preset.per_class));
    args.set.push(format!("data.difficulty={}", toml::Value::String(preset.difficulty.clone())));
    args.set.push(format!("data.val_fraction={}", preset.val_fraction));
    args.set.push(format!("data.test_fraction={}", preset.test_fraction));
    args.set.push("data.stain_shift=0.0".into());
    args.set.push(format!("model.preset={}", toml::Value::String(preset.model.clone())));
    args.set.push(format!("model.image_size={}", preset.image_size));
    args.set.extend(user_set);
    let mut cfg = load_config(&args, None)?;
    if !user_classes && cfg.data.source.parse::<DataSource>()? == DataSource::Synthetic {
        cfg.data.num_classes = Some(preset.num_classes);
        cfg.validate()?;
    }
    tch::set_num_threads(a.threads.unwrap_or(cfg.runtime.threads).max(1));
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    let splits = load_data(&mut cfg)?;
    let out = a.out.unwrap_or_else(|| PathBuf::from(format!("runs/reproduce-{}", preset.name)));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let opts = crate::studies::reproduce::ReproduceOptions {
        preset,
        out_dir: out.clone(),
        reference_cache: reference_cache_dir(&cfg),
        device,
        seed: cfg.federation.seed,
        data_label: format!(
            "{} ({} train / {} test images, {} classes, {} px)",
            cfg.data.source,
            splits.train.len(),
            splits.test.len(),
            splits.train.num_classes(),
            splits.train.size
        ),
        commit,
    };
    let started = std::time::Instant::now();
    if a.baseline_only {
        let base = crate::studies::reproduce::real_only_baseline(&opts, &splits, |line| {
            println!("[{:>6.0} s] {line}", started.elapsed().as_secs_f64());
        })?;
        for (regime, acc) in base {
            let (m, sd) = crate::studies::reproduce::stats::mean_sd(&acc);
            println!("{regime} real images per class: real-only accuracy {:.1} % ± {:.1}", 100.0 * m, 100.0 * sd);
        }
        return Ok(());
    }
    let runner = ProcessFederation { base: cfg.clone() };
    let rep = crate::studies::reproduce::run(&opts, &splits, &runner, |line| {
        println!("[{:>6.0} s] {line}", started.elapsed().as_secs_f64());
    })?;
    println!();
    for c in &rep.claims {
        println!("claim {}: {} — {}", c.id, c.verdict.as_str(), c.statement);
        println!("         {}", c.evidence);
    }
    for t in &rep.targets {
        println!("target: {} {} — measured {} ({})", t.what, t.goal, t.measured, if t.met { "met" } else { "NOT met" });
    }
    println!("\nwrote {}", out.join("reproduction.md").display());
    Ok(())
}

/// The reproduction's federated runs on the real runtime: a server and its sites as processes of this binary over
/// loopback (`launcher::run_federation`), configured from the reproduction's own configuration.
struct ProcessFederation {
    base: Config,
}

impl crate::studies::reproduce::FederatedRunner for ProcessFederation {
    fn run(&self, job: &crate::studies::reproduce::FederatedJob) -> Result<PathBuf, String> {
        let mut cfg = self.base.clone();
        let f = &mut cfg.federation;
        f.sites = job.sites;
        f.min_sites = job.sites;
        f.rounds = u64::from(job.rounds);
        f.local_steps = job.local_steps;
        f.batch_size = job.batch_size;
        f.seed = job.seed;
        f.strategy = "fedavg".into();
        cfg.data.partition = job.partition.clone();
        cfg.model.gan = job.gan.clone();
        cfg.model.discriminator = job.disc.clone();
        // Only the final global generator is wanted: no per-round quality suite, no site evaluation.
        cfg.evaluation.eval_every = 0;
        cfg.evaluation.at_sites = false;
        cfg.runtime.threads = 1;
        let rt = runtime().map_err(|e| format!("{e:#}"))?;
        rt.block_on(crate::launcher::run_federation(cfg, &job.out_dir, false, false))
            .map_err(|e| format!("{e:#} (logs in {})", job.out_dir.join("logs").display()))?;
        Ok(job.out_dir.join("checkpoints"))
    }
}

fn ablate(a: AblateCmd) -> Result<()> {
    let mut cfg = load_config(&a.config, None)?;
    tch::set_num_threads(cfg.runtime.threads.max(1));
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    let splits = load_data(&mut cfg)?;
    let model = cfg.model_config()?;
    let mut setup_cfg = cfg.clone();
    setup_cfg.evaluation.eval_every = setup_cfg.evaluation.eval_every.max(1);
    let setup = quality_setup(&setup_cfg, &splits.train, device).context("no quality setup")?;
    let assessor = crate::eval::assessment::Assessor::new(&splits.train, &splits.test, setup.options)?;
    println!(
        "{} × {} at {} px, {} steps per variant, {} seed(s); reference classifier test accuracy {:.3}",
        model.gan,
        model.discriminator,
        model.image_size,
        a.steps,
        a.seeds,
        assessor.reference_test_accuracy()
    );
    let opts = crate::studies::reproduce::ablation::AblationOptions {
        model,
        steps: a.steps,
        batch_size: cfg.federation.batch_size,
        seeds: (0..u64::from(a.seeds.max(1))).map(|i| cfg.federation.seed + i).collect(),
        device,
        out_dir: a.out.clone(),
    };
    let started = std::time::Instant::now();
    crate::studies::reproduce::ablation::run(&opts, &splits, &assessor, |line| {
        println!("[{:>6.0} s] {line}", started.elapsed().as_secs_f64());
    })?;
    println!("wrote {}", a.out.join("ablation.md").display());
    Ok(())
}

fn train(a: TrainCmd) -> Result<()> {
    let mut cfg = load_config(&a.config, None)?;
    tch::set_num_threads(cfg.runtime.threads);
    let splits = load_data(&mut cfg)?;
    let model = cfg.model_config()?;
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let (train, test) = (splits.train, splits.test);
    println!("{} training images, {} test images, {} classes", train.len(), test.len(), train.num_classes());
    if a.classifier {
        let mut ccfg = ClassifierConfig::preset(&a.classifier_preset, model.image_size, model.num_classes)?;
        ccfg.total_steps = a.steps as i64;
        let run = classifier::ClassifierRun {
            config: &ccfg,
            device,
            train: &train,
            test: &test,
            steps: a.steps,
            every: a.every,
            batch_size: cfg.federation.batch_size as usize,
            seed: cfg.federation.seed,
        };
        let (clf, points) = classifier::train_classifier(&run, |p| {
            println!("step {:>5}  loss {:.4}  test accuracy {:.3}  ({:.1} s)", p.step, p.loss, p.test_accuracy, p.secs)
        })?;
        println!(
            "classifier ({} parameters) final test accuracy {:.3}",
            clf.param_count(),
            points.last().map(|p| p.test_accuracy).unwrap_or(0.0)
        );
        std::fs::write(a.out.join("classifier.json"), serde_json::to_vec_pretty(&points)?)?;
        return Ok(());
    }
    let gan = Gan::new(&model, device, cfg.federation.seed as i64)?;
    let (g, d) = gan.param_counts();
    println!(
        "{} × {} ({}): generator {g} parameters, discriminator {d}",
        cfg.model.gan, cfg.model.discriminator, cfg.model.preset
    );
    let run = central::GanRun {
        model: &model,
        device,
        train: Arc::new(train),
        test: &test,
        steps: a.steps,
        every: a.every,
        batch_size: cfg.federation.batch_size,
        seed: cfg.federation.seed,
        grid_per_class: cfg.runtime.grid_per_class,
        out_dir: &a.out,
    };
    let points = central::train_gan(&run, |p| {
        println!(
            "step {:>5}  D {:.4}  G {:.4}  FD {:.3}  {}  ({:.1} s)",
            p.step, p.d_loss, p.g_loss, p.frechet_distance, p.samples_png, p.secs
        )
    })?;
    std::fs::write(a.out.join("train.json"), serde_json::to_vec_pretty(&points)?)?;
    println!("outputs in {}", a.out.display());
    Ok(())
}

fn augment(a: AugmentCmd) -> Result<()> {
    use crate::eval::reference::ReferenceOptions;
    use crate::studies::augment::{self as study, AugmentOptions, FederatedOptions};
    let mut cfg = load_config(&a.config, None)?;
    tch::set_num_threads(cfg.runtime.threads);
    let splits = load_data(&mut cfg)?;
    let model = cfg.model_config()?;
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    let (train, test) = (splits.train, splits.test);
    let seed = cfg.federation.seed;
    let generator = crate::eval::sampling::load_generator(&a.generator, &model, device, seed as i64)?;
    println!("generator {}; {} training images, {} test images", generator.source, train.len(), test.len());
    let batch_size = cfg.federation.batch_size as usize;
    let federated = (!a.no_federated)
        .then(|| -> Result<FederatedOptions> {
            Ok(FederatedOptions {
                sites: cfg.federation.sites as usize,
                partition: cfg.partition()?,
                partition_seed: seed,
                rounds: a.fed_rounds.unwrap_or(cfg.federation.rounds),
                local_steps: a.local_steps.unwrap_or(u64::from(cfg.federation.local_steps)),
            })
        })
        .transpose()?;
    let reference = (!a.no_reference).then(|| {
        let opts = ReferenceOptions { preset: a.classifier_preset.clone(), steps: a.steps, batch_size, seed, device };
        (opts, a.reference_cache.clone().unwrap_or_else(|| reference_cache_dir(&cfg)))
    });
    let opts = AugmentOptions {
        classifier_preset: a.classifier_preset.clone(),
        ratios: a.ratios.clone(),
        num_seeds: a.seeds,
        base_seed: seed,
        steps: a.steps,
        batch_size,
        device,
        federated,
        reference,
    };
    let report = study::run_study(&generator, &train, &test, &opts, &mut |p| {
        println!("[{}/{}] {}", p.done, p.total, p.message)
    })?;
    let (json, md) = study::write_report(&report, &a.out)?;
    print!("{}", study::to_markdown(&report));
    println!("wrote {} and {}", json.display(), md.display());
    Ok(())
}

fn certs(c: CertsCmd) -> Result<()> {
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

fn bench_models(a: BenchModelsCmd) -> Result<()> {
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
    };
    let rows = run_model_bench(&opts, |line| eprintln!("{line}")).context("model benchmark")?;
    let table = render_table(&rows, &machine_description());
    println!("{table}");
    if let Some(out) = a.out {
        std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// `wgan-gp-vit` → (WganGp, Vit): the discriminator is after the last '-'.
fn parse_combo(s: &str) -> Result<(GanKind, DiscKind)> {
    let (g, d) = s
        .trim()
        .rsplit_once('-')
        .with_context(|| format!("--combo `{s}`: expected GAN-DISC, e.g. cgan-cnn or wgan-gp-vit"))?;
    Ok((g.parse()?, d.parse()?))
}

fn synth(a: SynthCmd) -> Result<()> {
    let cfg = data::synth::SynthConfig {
        num_classes: a.classes,
        per_class: a.per_class,
        size: a.size,
        seed: a.seed,
        stain: Default::default(),
        difficulty: a.difficulty,
    };
    let ds = data::synth::generate(&cfg)?;
    data::write_imagefolder(&ds, &a.out)?;
    let sheet = a.out.join("contact-sheet.png");
    data::grid::save_png(&data::grid::contact_sheet(&ds, 8), &sheet)?;
    println!(
        "wrote {} images of {} classes to {} (contact sheet: {})",
        ds.len(),
        ds.num_classes(),
        a.out.display(),
        sheet.display()
    );
    Ok(())
}

fn show_partition(mut cfg: Config, png: &Path) -> Result<()> {
    let splits = load_data(&mut cfg)?;
    let parts = partition::partition(
        &splits.train.labels,
        splits.train.num_classes(),
        cfg.federation.sites as usize,
        &cfg.partition()?,
        cfg.federation.seed,
    )?;
    let hist = partition::histogram(&splits.train.labels, splits.train.num_classes(), &parts);
    println!("partition {} over {} sites:", cfg.data.partition, cfg.federation.sites);
    print!("{}", partition::histogram_table(&splits.train.classes, &hist));
    partition::stacked_bar_png(&splits.train.classes, &hist, png)?;
    println!("chart: {}", png.display());
    Ok(())
}
