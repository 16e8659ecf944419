//! Measures trained generators with the quality suite as `[evaluation]` configures it, and prints one line each:
//! class agreement and coverage, KID and precision/recall, and the agreement per class.
//!
//! Why: `histofed reproduce` measures only the generators it trains itself, and `histofed train --centralized` only
//! reports a fixed-feature FD. This answers "how does this generator score with that judge?" for any run output (a
//! `train --centralized` folder, a checkpoint folder or file) — e.g. the cpu preset's best model trained for more
//! steps than the preset gives it (docs/reproduction-cpu.md, "How many steps?").
//!
//! ```text
//! OMP_WAIT_POLICY=PASSIVE cargo run --example assess_generator -- -c config/demo.toml --set model.gan='"acgan"' \
//!     --gan runs/train-a --gan runs/train-b
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use histofed::cli::{load_data, quality_setup, ConfigArgs};
use histofed::eval::assessment::Assessor;
use histofed::eval::sampling::load_generator;
use tch::Device;

#[derive(Parser)]
/// Measures trained generators with the quality suite as `[evaluation]` configures it.
struct Args {
    /// `-c FILE`, `--set section.key=value` (repeatable): the data, the model and the judge.
    #[command(flatten)]
    config: ConfigArgs,
    /// A run output to measure (repeatable).
    #[arg(long, required = true)]
    gan: Vec<PathBuf>,
    /// Seed of the synthetic images each generator draws.
    #[arg(long, default_value_t = 42)]
    seed: i64,
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Where the quality suite's pictures go (one folder per generator).
    #[arg(long, default_value = "runs/assess")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let mut cfg = args.config.load()?;
    cfg.evaluation.eval_every = cfg.evaluation.eval_every.max(1);
    let splits = load_data(&mut cfg)?;
    let model = cfg.model_config()?;
    let setup = quality_setup(&cfg, &splits.train, Device::Cpu)?.context("no quality setup")?;
    let assessor = Assessor::new(&splits.train, &splits.test, setup.options)?;
    println!("reference classifier: test accuracy {:.3}", assessor.reference_test_accuracy());
    for (i, path) in args.gan.iter().enumerate() {
        let loaded = load_generator(path, &model, Device::Cpu, args.seed)
            .with_context(|| format!("loading a generator from {}", path.display()))?;
        let a = assessor.assess(&loaded.gan, args.seed, &args.out.join(format!("gan-{i}")))?;
        let s = &a.summary;
        let per: Vec<String> = s.class_agreement.iter().map(|(c, v)| format!("{c} {v:.2}")).collect();
        println!(
            "{}: agreement {:.2}, coverage {:.2}, KID×10³ {:.0}, precision {:.2}, recall {:.2} | {}",
            loaded.source,
            s.label_agreement,
            s.class_coverage,
            1e3 * s.kid.unwrap_or(f64::NAN),
            s.precision,
            s.recall,
            per.join(", ")
        );
    }
    Ok(())
}
