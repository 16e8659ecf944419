//! The command line: each subcommand wires configuration, telemetry, data, the cluster and the actors together and
//! nothing more. Errors are `anyhow` here and only here; the libraries below return typed errors.
//!
//! One file per group of subcommands: [`nodes`] (demo, server, site, evaluator, status), [`studies`] (train,
//! augment, reproduce, ablate), [`dataset`] (dataset, partition and the data loading every role shares), [`tools`]
//! (certs, bench, chaos); this file parses and dispatches.

mod dataset;
mod kube_link;
mod nodes;
mod studies;
mod tools;

pub use dataset::{load_data, load_data_stained, quality_setup, reference_cache_dir, site_shard};
pub use nodes::{run_server, run_site, ServerOpts};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::util::telemetry::{self, LogFormat};
use dataset::*;
use nodes::*;
use studies::*;
use tools::*;

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
    /// What the linked libtorch offers (CUDA built in, devices, cuDNN) and one checked matrix product on a device.
    Device(DeviceCmd),
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

/// The flags every command that reads a configuration shares (`-c`, `--set`, `--data`, `--skip-bad`, `--device`);
/// public so the examples take the same ones.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting tokio")
}

impl ConfigArgs {
    /// Defaults, then the file, then the flags; validated.
    pub fn load(&self) -> Result<Config> {
        load_config(self, None)
    }
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

fn run(cmd: Command) -> Result<()> {
    if matches!(cmd, Command::Server(_) | Command::Site(_)) {
        // Round after round of model-sized buffers: keep freed ones for reuse (see `heap`; role nodes, the
        // evaluator among them, do it in `role::run_node`).
        let retained = crate::util::heap::retain_freed_memory();
        tracing::debug!(retained, "heap retention");
    }
    match cmd {
        Command::Demo(a) => nodes::demo(a),
        Command::Server(a) => nodes::server(a),
        Command::Site(a) => nodes::site(a),
        Command::Evaluator(a) => nodes::evaluator(a),
        Command::Status(a) => nodes::status(a),
        Command::Train(a) => studies::train(a),
        Command::Augment(a) => studies::augment(a),
        Command::Reproduce(a) => studies::reproduce(a),
        Command::Ablate(a) => studies::ablate(a),
        Command::Certs(c) => tools::certs(c),
        Command::Chaos(c) => tools::chaos(c),
        Command::Bench(c) => tools::bench(c),
        Command::Device(a) => tools::device(a),
        Command::Dataset(c) => dataset::dataset(c),
        Command::Partition(a) => dataset::partition_cmd(a),
        Command::Config(a) => {
            print!("{}", load_config(&a, None)?.to_toml()?);
            Ok(())
        }
    }
}
