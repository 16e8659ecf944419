//! The recipe ablation: each ingredient of the small-budget recipe taken out in turn, trained with the same data,
//! seeds and number of steps, and measured with the same assessment — so the table says what each ingredient is
//! worth here instead of what the literature says it was worth elsewhere.
//!
//! Why leave-one-out and not add-one-in: the ingredients were chosen to work together (DiffAugment keeps the
//! discriminator from memorising, spectral norm and the hinge loss keep its gradients bounded, the EMA smooths what
//! is left); removing one from the full recipe asks the question a user has — "do I need this?" — with one run per
//! ingredient. The paper recipe is the all-out row, and every table carries the real-image floor and the
//! colour-matched-noise baseline measured the same way, so a number can be read against both ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Splits};
use crate::eval::assessment::{Assessment, Assessor, Baseline};
use crate::federation::checkpoint::write_atomic;
use crate::models::{
    AugmentPolicy, DiscKind, Gan, GanKind, GeneratorArch, GeneratorNorm, GeneratorPadding, ModelConfig, Recipe,
    SourceLoss,
};
use crate::studies::augment::Stat;
use crate::train::simulation::train_centralized;

use super::{cell_err, ReproduceError};

/// One row of the ablation: which change to the full recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    Full,
    NoDiffAugment,
    BceLoss,
    NoSpectralNorm,
    NoEma,
    DcganGenerator,
    PaperAdamBetas,
    NoL2Attention,
    NoOverlap,
    PaperRecipe,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::Full => "small-budget recipe (all ingredients)",
            Variant::NoDiffAugment => "− DiffAugment",
            Variant::BceLoss => "− hinge loss (BCE instead)",
            Variant::NoSpectralNorm => "− spectral norm",
            Variant::NoEma => "− generator EMA",
            Variant::DcganGenerator => "− resize-conv generator (DCGAN's instead)",
            Variant::PaperAdamBetas => "− Adam(0, 0.99) (0.5, 0.999 instead)",
            Variant::NoL2Attention => "− L2 attention (dot product instead)",
            Variant::NoOverlap => "− overlapping patches",
            Variant::PaperRecipe => "paper recipe (every ingredient out)",
        }
    }

    /// The variants that mean something for this GAN × discriminator (a WGAN-GP critic has no hinge loss and no
    /// spectral norm in the recipe; only a ViT has attention and patches).
    pub fn applicable(gan: GanKind, disc: DiscKind) -> Vec<Variant> {
        let mut v = vec![Variant::Full, Variant::NoDiffAugment];
        if gan != GanKind::WganGp {
            v.extend([Variant::BceLoss, Variant::NoSpectralNorm, Variant::PaperAdamBetas]);
        }
        v.extend([Variant::NoEma, Variant::DcganGenerator]);
        if disc == DiscKind::Vit {
            v.extend([Variant::NoL2Attention, Variant::NoOverlap]);
        }
        v.push(Variant::PaperRecipe);
        v
    }

    /// This variant's configuration, from the full recipe's `full` and the paper recipe's `paper` (same sizes).
    pub fn apply(self, full: &ModelConfig, paper: &ModelConfig) -> ModelConfig {
        let mut c = full.clone();
        match self {
            Variant::Full => {}
            Variant::NoDiffAugment => c.diffaugment = AugmentPolicy::NONE,
            Variant::BceLoss => c.loss = SourceLoss::Bce,
            Variant::NoSpectralNorm => c.spectral_norm = false,
            Variant::NoEma => c.ema_decay = 0.0,
            // The DCGAN generator has BatchNorm and transposed convolutions: the resize-conv generator's own
            // normalisation and padding choices do not exist there and go back to their defaults.
            Variant::DcganGenerator => {
                (c.generator_arch, c.g_norm, c.g_padding) =
                    (GeneratorArch::Dcgan, GeneratorNorm::default(), GeneratorPadding::default())
            }
            Variant::PaperAdamBetas => (c.beta1, c.beta2) = (paper.beta1, paper.beta2),
            Variant::NoL2Attention => c.vit_l2_attention = false,
            Variant::NoOverlap => c.vit_overlap = 0,
            Variant::PaperRecipe => c = paper.clone(),
        }
        c
    }
}

/// What the ablation is run with.
#[derive(Debug, Clone)]
pub struct AblationOptions {
    /// The full recipe's configuration (sizes, GAN, discriminator, and any user overrides).
    pub model: ModelConfig,
    /// Training steps of every variant, batch size, and the GAN seeds (one run per seed and variant).
    pub steps: u32,
    pub batch_size: u32,
    pub seeds: Vec<u64>,
    pub device: tch::Device,
    pub out_dir: PathBuf,
}

/// The numbers of one row, over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    /// None for the baselines.
    pub variant: Option<Variant>,
    pub kid: Stat,
    pub kid_random_cnn: Stat,
    pub fd: Stat,
    pub agreement: Stat,
    pub coverage: Stat,
    pub precision: Stat,
    pub recall: Stat,
    pub train_secs: f64,
    /// A sample grid of the first seed (relative to the output directory).
    pub grid: Option<String>,
}

/// The whole ablation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ablation {
    pub gan: String,
    pub disc: String,
    pub image_size: i64,
    pub steps: u32,
    pub batch_size: u32,
    pub seeds: Vec<u64>,
    pub samples_per_class: usize,
    pub rows: Vec<Row>,
}

fn row(name: String, variant: Option<Variant>, runs: &[Assessment], train_secs: f64, grid: Option<String>) -> Row {
    let pick = |f: &dyn Fn(&Assessment) -> Option<f64>| Stat::of(&runs.iter().filter_map(f).collect::<Vec<_>>());
    Row {
        name,
        variant,
        kid: pick(&|a| a.summary.kid),
        kid_random_cnn: pick(&|a| a.summary.kid_random_cnn),
        fd: pick(&|a| Some(a.summary.fd)),
        agreement: pick(&|a| Some(a.summary.label_agreement)),
        coverage: pick(&|a| Some(a.summary.class_coverage)),
        precision: pick(&|a| Some(a.summary.precision)),
        recall: pick(&|a| Some(a.summary.recall)),
        train_secs,
        grid,
    }
}

/// Trains and measures every applicable variant, then the two baselines; writes `ablation.json`, `ablation.md` and
/// a sample grid per variant under `opts.out_dir`.
pub fn run(
    opts: &AblationOptions,
    splits: &Splits,
    assessor: &Assessor,
    mut progress: impl FnMut(&str),
) -> Result<Ablation, ReproduceError> {
    let full = &opts.model;
    if full.recipe != Recipe::SmallBudget {
        return Err(ReproduceError::Cell {
            cell: "ablation".into(),
            message:
                "the ablation takes ingredients out of the small-budget recipe: set model.recipe = \"small-budget\""
                    .into(),
        });
    }
    let paper = {
        let mut p = ModelConfig::preset_with("small", Recipe::Paper, full.gan, full.discriminator, full.num_classes)?;
        // Same sizes as the full recipe; only the recipe's choices differ.
        (p.image_size, p.latent_dim, p.g_width, p.d_width) =
            (full.image_size, full.latent_dim, full.g_width, full.d_width);
        (p.vit_patch, p.vit_dim, p.vit_depth, p.vit_heads) =
            (full.vit_patch, full.vit_dim, full.vit_depth, full.vit_heads);
        p.validate()?;
        p
    };
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| ReproduceError::Write { path: opts.out_dir.clone(), message: e.to_string() })?;
    let train = Arc::new(splits.train.clone());
    let mut rows = Vec::new();
    let variants = Variant::applicable(full.gan, full.discriminator);
    // Every variant's configuration is made and checked before the first one trains: a bad one fails now, not
    // after the others have run for minutes.
    let configs = variants
        .iter()
        .map(|v| {
            let cfg = v.apply(full, &paper);
            cfg.validate().map_err(|e| cell_err(&slug(*v), e))?;
            Ok(cfg)
        })
        .collect::<Result<Vec<_>, ReproduceError>>()?;
    for (i, (v, cfg)) in variants.iter().zip(configs).enumerate() {
        let mut runs = Vec::new();
        let mut secs = 0.0;
        let mut grid = None;
        for &seed in &opts.seeds {
            let t0 = Instant::now();
            let cell = format!("{}-seed{seed}", slug(*v));
            let err = |m: String| ReproduceError::Cell { cell: cell.clone(), message: m };
            let chunk = (opts.steps / 4).max(1);
            let w =
                train_centralized(&cfg, opts.device, train.clone(), opts.steps, chunk, opts.batch_size, seed, |_| {})
                    .map_err(|e| err(e.to_string()))?;
            secs += t0.elapsed().as_secs_f64();
            let mut gan = Gan::new(&cfg, opts.device, seed as i64)?;
            gan.load_weights(&w)?;
            let dir = opts.out_dir.join(&cell);
            runs.push(assessor.assess(&gan, seed as i64, &dir).map_err(|e| err(e.to_string()))?);
            if grid.is_none() {
                let rel = format!("{cell}/samples.png");
                if crate::eval::gan_evaluator::sample_grid(&gan, 8, seed as i64, &opts.out_dir.join(&rel)).is_ok() {
                    grid = Some(rel);
                }
            }
        }
        let r = row(v.label().into(), Some(*v), &runs, secs / opts.seeds.len().max(1) as f64, grid);
        progress(&format!(
            "[{}/{}] {}: KID {:.4} ± {:.4}, KID(random CNN) {:.4}, agreement {:.2}, coverage {:.2} ({:.0} s/seed)",
            i + 1,
            variants.len(),
            r.name,
            r.kid.mean,
            r.kid.std,
            r.kid_random_cnn.mean,
            r.agreement.mean,
            r.coverage.mean,
            r.train_secs
        ));
        rows.push(r);
    }
    let held_out = if splits.val.is_empty() { &splits.train } else { &splits.val };
    for b in [Baseline::RealFloor, Baseline::Noise] {
        let dir = opts.out_dir.join(slug_baseline(b));
        let a = assessor.baseline(b, held_out, 7, &dir).map_err(|e| ReproduceError::Reference(e.to_string()))?;
        let r = row(b.as_str().into(), None, std::slice::from_ref(&a), 0.0, None);
        progress(&format!("{}: KID {:.4}, agreement {:.2}", r.name, r.kid.mean, r.agreement.mean));
        rows.push(r);
    }
    let ab = Ablation {
        gan: full.gan.to_string(),
        disc: full.discriminator.to_string(),
        image_size: full.image_size,
        steps: opts.steps,
        batch_size: opts.batch_size,
        seeds: opts.seeds.clone(),
        samples_per_class: assessor.samples_per_class(),
        rows,
    };
    write(&opts.out_dir, &ab, held_out)?;
    Ok(ab)
}

fn slug(v: Variant) -> String {
    serde_json::to_value(v).ok().and_then(|j| j.as_str().map(str::to_string)).unwrap_or_else(|| "variant".into())
}

fn slug_baseline(b: Baseline) -> String {
    serde_json::to_value(b).ok().and_then(|j| j.as_str().map(str::to_string)).unwrap_or_else(|| "baseline".into())
}

fn pm(s: &Stat, digits: usize, runs: usize) -> String {
    if runs > 1 {
        format!("{:.*} ± {:.*}", digits, s.mean, digits, s.std)
    } else {
        format!("{:.*}", digits, s.mean)
    }
}

/// The markdown table (one row per variant and baseline).
pub fn markdown(ab: &Ablation, held_out: &Dataset) -> String {
    let mut s = format!(
        "# Recipe ablation: {} × {} at {} px\n\n{} steps, batch {}, GAN seeds {:?}; {} synthetic images per class \
         against the test split; the real floor uses {} held-out images. KID is ×10³ (mean over 100 subsets; ± is \
         the spread over GAN seeds when there are several). Lower KID/FD is better; agreement and coverage are the \
         reference classifier's.\n\n",
        ab.gan,
        ab.disc,
        ab.image_size,
        ab.steps,
        ab.batch_size,
        ab.seeds,
        ab.samples_per_class,
        held_out.len(),
    );
    s.push_str("| variant | KID ×10³ (reference) | KID ×10³ (random CNN) | FD | agreement | coverage | precision | recall | train s/seed |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let k = |st: &Stat| Stat { mean: st.mean * 1e3, std: st.std * 1e3 };
    for r in &ab.rows {
        let n = if r.variant.is_some() { ab.seeds.len() } else { 1 };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            r.name,
            pm(&k(&r.kid), 2, n),
            pm(&k(&r.kid_random_cnn), 2, n),
            pm(&r.fd, 2, n),
            pm(&r.agreement, 2, n),
            pm(&r.coverage, 2, n),
            pm(&r.precision, 2, n),
            pm(&r.recall, 2, n),
            r.train_secs
        ));
    }
    s
}

fn write(dir: &Path, ab: &Ablation, held_out: &Dataset) -> Result<(), ReproduceError> {
    let werr = |e: String| ReproduceError::Write { path: dir.to_path_buf(), message: e };
    let json = serde_json::to_vec_pretty(ab).map_err(|e| werr(e.to_string()))?;
    write_atomic(dir, "ablation.json", &json).map_err(|e| werr(e.to_string()))?;
    write_atomic(dir, "ablation.md", markdown(ab, held_out).as_bytes()).map_err(|e| werr(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_changes_exactly_its_ingredient() {
        let full = ModelConfig::preset_with("tiny", Recipe::SmallBudget, GanKind::Cgan, DiscKind::Vit, 4).unwrap();
        let paper = ModelConfig::preset_with("tiny", Recipe::Paper, GanKind::Cgan, DiscKind::Vit, 4).unwrap();
        assert_eq!(Variant::Full.apply(&full, &paper), full);
        assert_eq!(Variant::PaperRecipe.apply(&full, &paper), paper);
        let diff = |v: Variant| {
            let c = v.apply(&full, &paper);
            let a = serde_json::to_value(&full).unwrap();
            let b = serde_json::to_value(&c).unwrap();
            let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
            a.keys().filter(|k| a[*k] != b[*k]).cloned().collect::<Vec<_>>()
        };
        assert_eq!(diff(Variant::NoDiffAugment), vec!["diffaugment"]);
        assert_eq!(diff(Variant::BceLoss), vec!["loss"]);
        assert_eq!(diff(Variant::NoSpectralNorm), vec!["spectral_norm"]);
        assert_eq!(diff(Variant::NoEma), vec!["ema_decay"]);
        assert_eq!(diff(Variant::DcganGenerator), vec!["generator_arch"]);
        // With the resize-conv generator's own options set, the DCGAN variant still validates (they do not apply).
        let mut tuned = full.clone();
        (tuned.g_norm, tuned.g_padding) = (GeneratorNorm::Group, GeneratorPadding::Reflect);
        let dcgan = Variant::DcganGenerator.apply(&tuned, &paper);
        assert_eq!(dcgan.generator_arch, GeneratorArch::Dcgan);
        dcgan.validate().unwrap();
        for v in Variant::applicable(GanKind::Cgan, DiscKind::Vit) {
            v.apply(&tuned, &paper).validate().unwrap_or_else(|e| panic!("{v:?}: {e}"));
        }
        assert_eq!(diff(Variant::PaperAdamBetas), vec!["beta1", "beta2"]);
        assert_eq!(diff(Variant::NoL2Attention), vec!["vit_l2_attention"]);
        assert_eq!(diff(Variant::NoOverlap), vec!["vit_overlap"]);
        assert!(!Variant::applicable(GanKind::WganGp, DiscKind::Cnn).contains(&Variant::BceLoss));
        assert!(Variant::applicable(GanKind::Acgan, DiscKind::Vit).contains(&Variant::NoL2Attention));
    }
}
