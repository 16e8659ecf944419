//! Data on the command line: loading the configured source (the same way every role does), shards, the
//! reference classifier's cache, `dataset synth` and `partition`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::*;
use crate::config::Config;
use crate::data::{self, partition, DataSource, LoadOptions, Splits};
use crate::eval::assessment::AssessOptions;
use crate::eval::gan_evaluator::QualitySetup;
use crate::eval::quality::QualityOptions;
use crate::eval::reference::ReferenceOptions;

/// `histofed dataset …`.
pub(super) fn dataset(c: DatasetCmd) -> Result<()> {
    match c {
        DatasetCmd::Synth(a) => synth(a),
    }
}

/// `histofed partition`.
pub(super) fn partition_cmd(a: PartitionCmd) -> Result<()> {
    show_partition(load_config(&a.config, None)?, &a.png)
}

#[derive(Subcommand, Debug)]
pub(super) enum DatasetCmd {
    /// Write the procedural H&E dataset as an ImageFolder (ROOT/<CLASS>/*.png) plus a contact sheet.
    Synth(SynthCmd),
}

#[derive(Args, Debug)]
pub(super) struct SynthCmd {
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
pub(super) struct PartitionCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where to draw the stacked-bar chart.
    #[arg(long, default_value = "partition.png")]
    png: PathBuf,
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
    let source: DataSource = cfg.data.source.parse()?;
    let opts = load_options(cfg, stain)?;
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

/// How `[data]` asks the loaders for the data, with the synthetic source drawn under `stain`.
fn load_options(cfg: &Config, stain: data::synth::StainShift) -> Result<LoadOptions> {
    let model = cfg.model_config()?;
    Ok(LoadOptions {
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
    })
}

/// The reference classifier's own procedural draw of `per_class` images per class of `cfg`'s synthetic data
/// (`data::synthetic_reference_set`); `None` for 0 (it learns from the training split then). A real source has no
/// procedural draw: an error naming it.
pub(super) fn reference_set(cfg: &Config, per_class: usize) -> Result<Option<Arc<data::Dataset>>> {
    if per_class == 0 {
        return Ok(None);
    }
    anyhow::ensure!(
        cfg.data.source.parse::<DataSource>()? == DataSource::Synthetic,
        "a reference set of {per_class} images per class is a procedural draw and needs synthetic data, not \
         data.source = {:?}",
        cfg.data.source
    );
    let opts = load_options(cfg, data::synth::StainShift::default())?;
    Ok(Some(Arc::new(data::synthetic_reference_set(&opts, per_class)?)))
}

/// The evaluator's full quality suite as `[evaluation]` configures it (`None` when `eval_every` is 0). With
/// `evaluation.reference_per_class` the reference classifier's own procedural draw is made here (a second or two).
pub fn quality_setup(cfg: &Config, train: &data::Dataset, device: tch::Device) -> Result<Option<QualitySetup>> {
    let e = &cfg.evaluation;
    if e.eval_every == 0 {
        return Ok(None);
    }
    let reference_train = reference_set(cfg, e.reference_per_class)
        .context("drawing the reference classifier's training set (evaluation.reference_per_class)")?;
    let options = AssessOptions {
        reference: ReferenceOptions {
            preset: e.reference_preset.clone(),
            steps: u64::from(e.reference_steps),
            batch_size: 32,
            seed: cfg.federation.seed,
            device,
            standardise_input: e.reference_standardise,
        },
        cache_dir: reference_cache_dir(cfg),
        quality: QualityOptions { memorization_threshold: e.memorization_threshold, ..QualityOptions::default() },
        samples_per_class: e.samples_per_class,
        reference_train,
    };
    Ok(Some(QualitySetup {
        train: Arc::new(train.clone()),
        options,
        every: e.eval_every,
        last_round: cfg.federation.rounds,
    }))
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
pub(super) fn shard_of(
    cfg: &Config,
    ds: &data::Dataset,
    site_id: u32,
    scheme: &partition::Partition,
) -> Result<data::Dataset> {
    let parts =
        partition::partition(&ds.labels, ds.num_classes(), cfg.federation.sites as usize, scheme, cfg.federation.seed)?;
    let idx = parts
        .get(site_id as usize)
        .with_context(|| format!("site id {site_id} is outside 0..{} (federation.sites)", cfg.federation.sites))?;
    Ok(ds.subset(idx))
}

pub(super) fn synth(a: SynthCmd) -> Result<()> {
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

pub(super) fn show_partition(mut cfg: Config, png: &Path) -> Result<()> {
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
