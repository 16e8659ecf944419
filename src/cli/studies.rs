//! The experiments: `train` (centralized GAN or classifier), `augment`, `reproduce` (with the federated runs on
//! real server + site processes) and `ablate`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use super::*;
use crate::config::Config;
use crate::data::DataSource;
use crate::eval::central;
use crate::models::{select_device, ClassifierConfig, DiscKind, Gan, GanKind};
use crate::studies::reproduce::RunnerError;
use crate::train::classifier;

#[derive(Args, Debug)]
pub(super) struct AblateCmd {
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
pub(super) struct AugmentCmd {
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
pub(super) struct ReproduceCmd {
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
    /// Override whether the reference classifier sees each image standardised per channel (structure, not mean
    /// colour: evaluation.reference_standardise); the presets do since 2026-12-07. `--reference-standardise=false`
    /// with `--reference-per-class 0` and the old `--reference-steps` is the judge the presets were first
    /// registered with (docs/reproduction-cpu-2026-12-05.md). Each judge keeps its results apart.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    reference_standardise: Option<bool>,
    /// Override the preset's reference training set: the reference classifier learns from its own procedural draw
    /// of this many images per class (synthetic data only), or with 0 from the training split.
    #[arg(long)]
    reference_per_class: Option<usize>,
    /// Override the preset's reference classifier steps.
    #[arg(long)]
    reference_steps: Option<u32>,
    /// Only train the real-only classifiers of each regime and print their accuracy (how hard the data is), in a
    /// minute or two, before committing to the whole protocol.
    #[arg(long)]
    baseline_only: bool,
    /// Instead of the claims, the utility/privacy table: the protocol's federated model trained at each of these
    /// privacy levels (comma-separated: inf for no DP, clip for clipping without noise, or a target ε), measured
    /// as the reproduction measures every generator; writes privacy.md into the output folder.
    #[arg(long, value_delimiter = ',')]
    privacy: Vec<crate::studies::reproduce::privacy::DpLevel>,
    /// The privacy table's clip norm C (the first round's with --dp-quantile).
    #[arg(long, default_value_t = 1.0)]
    dp_clip: f64,
    /// The privacy table with adaptive clipping towards this quantile of the update norms.
    #[arg(long)]
    dp_quantile: Option<f64>,
    /// GAN seeds per privacy level (default: the preset's).
    #[arg(long)]
    dp_seeds: Option<u32>,
}

#[derive(Args, Debug)]
pub(super) struct TrainCmd {
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
    /// GAN only: stop at the first evaluation point after this many minutes, even if --steps are not done.
    #[arg(long)]
    max_minutes: Option<f64>,
}

pub(super) fn reproduce(a: ReproduceCmd) -> Result<()> {
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
    if let Some(on) = a.reference_standardise {
        preset.reference_standardise = on;
    }
    if let Some(n) = a.reference_per_class {
        preset.reference_per_class = n;
    }
    if let Some(n) = a.reference_steps {
        anyhow::ensure!(n > 0, "--reference-steps must be at least 1");
        preset.reference_steps = n;
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
    let reference_train = reference_set(&cfg, preset.reference_per_class).with_context(|| {
        format!(
            "preset {:?}: its reference classifier's training set (--reference-per-class 0 has it learn from the \
             training split instead)",
            preset.name
        )
    })?;
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
        reference_train,
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
    if !a.privacy.is_empty() {
        let study = crate::studies::reproduce::privacy::PrivacyOptions {
            levels: a.privacy.clone(),
            clip_norm: a.dp_clip,
            target_quantile: a.dp_quantile,
            seeds: a.dp_seeds.unwrap_or(opts.preset.gan_seeds),
        };
        crate::studies::reproduce::privacy::run(&opts, &splits, &runner, &study, |line| {
            println!("[{:>6.0} s] {line}", started.elapsed().as_secs_f64());
        })?;
        println!("\nwrote {}", out.join("privacy.md").display());
        return Ok(());
    }
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
pub(super) struct ProcessFederation {
    base: Config,
}

impl crate::studies::reproduce::FederatedRunner for ProcessFederation {
    fn run(&self, job: &crate::studies::reproduce::FederatedJob) -> Result<PathBuf, RunnerError> {
        let mut cfg = self.base.clone();
        let f = &mut cfg.federation;
        f.sites = job.sites;
        f.min_sites = job.sites;
        f.rounds = u64::from(job.rounds);
        f.local_steps = job.local_steps;
        f.batch_size = job.batch_size;
        f.seed = job.seed;
        f.strategy = "fedavg".into();
        f.summation = job.summation;
        cfg.data.partition = job.partition.clone();
        cfg.model.gan = job.gan.clone();
        cfg.model.discriminator = job.disc.clone();
        // Only the final global generator is wanted: no per-round quality suite, no site evaluation.
        cfg.evaluation.eval_every = 0;
        cfg.evaluation.at_sites = false;
        cfg.runtime.threads = 1;
        // The job decides whether DP is on; the configuration keeps δ, the clipping mode and the adaptive knobs.
        let pc = &mut cfg.privacy;
        (pc.epsilon, pc.noise_multiplier, pc.max_epsilon) = (None, None, None);
        if let Some(dp) = &job.privacy {
            use crate::studies::reproduce::JobNoise;
            match dp.noise {
                JobNoise::Epsilon(e) => pc.epsilon = Some(e),
                JobNoise::Multiplier(z) => pc.noise_multiplier = Some(z),
            }
            pc.clip_norm = Some(dp.clip_norm);
            pc.target_quantile = dp.target_quantile;
            cfg.validate().map_err(|e| RunnerError::Failed(format!("the privacy settings: {e:#}")))?;
        }
        let rt = runtime().map_err(|e| RunnerError::Failed(format!("{e:#}")))?;
        rt.block_on(crate::launcher::run_federation(cfg, &job.out_dir, false, false)).map_err(|e| {
            if e.is::<crate::launcher::Interrupted>() {
                RunnerError::Interrupted
            } else {
                RunnerError::Failed(format!("{e:#} (logs in {})", job.out_dir.join("logs").display()))
            }
        })?;
        Ok(job.out_dir.join("checkpoints"))
    }
}

pub(super) fn ablate(a: AblateCmd) -> Result<()> {
    let mut cfg = load_config(&a.config, None)?;
    tch::set_num_threads(cfg.runtime.threads.max(1));
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    let splits = load_data(&mut cfg)?;
    let model = cfg.model_config()?;
    let mut setup_cfg = cfg.clone();
    setup_cfg.evaluation.eval_every = setup_cfg.evaluation.eval_every.max(1);
    let setup = quality_setup(&setup_cfg, &splits.train, device)?.context("no quality setup")?;
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

pub(super) fn train(a: TrainCmd) -> Result<()> {
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
        max_secs: a.max_minutes.map(|m| m * 60.0),
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

pub(super) fn augment(a: AugmentCmd) -> Result<()> {
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
        let opts = ReferenceOptions {
            preset: a.classifier_preset.clone(),
            steps: a.steps,
            batch_size,
            seed,
            device,
            standardise_input: false,
        };
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

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use clap::Parser;

    fn reproduce(args: &[&str]) -> super::ReproduceCmd {
        let all = ["histofed", "reproduce"].iter().chain(args).copied();
        match Cli::try_parse_from(all).map(|c| c.command) {
            Ok(Command::Reproduce(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_judge_is_overridden_either_way_or_left_to_the_preset() {
        let r = reproduce(&[]);
        assert_eq!((r.reference_standardise, r.reference_per_class, r.reference_steps), (None, None, None));
        assert_eq!(reproduce(&["--reference-standardise"]).reference_standardise, Some(true));
        let old =
            reproduce(&["--reference-standardise=false", "--reference-per-class", "0", "--reference-steps", "2500"]);
        assert_eq!(
            (old.reference_standardise, old.reference_per_class, old.reference_steps),
            (Some(false), Some(0), Some(2500))
        );
    }
}
