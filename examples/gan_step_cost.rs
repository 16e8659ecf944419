//! Seconds per GAN training step of several model configurations, measured interleaved in one process.
//!
//! Why an example and not `histofed bench models`: that command compares tch with its PyTorch twin, which knows the
//! presets only; this one answers "what does this knob cost?" for any `[model]` override (image size, widths,
//! generator architecture, DiffAugment, spectral norm, EMA), on the same thread budget and the same random batch.
//! The variants run in turn, `--repeats` times, so a machine that slows down mid-run slows all of them alike.
//!
//! ```text
//! OMP_WAIT_POLICY=PASSIVE cargo run --release --example gan_step_cost -- -c config/demo.toml --threads 1 \
//!     --variant model.image_size=64,model.g_width=16,model.d_width=16 \
//!     --variant model.image_size=64,model.g_width=16,model.d_width=16,model.generator=pixel-shuffle
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use histofed::config::Config;
use histofed::models::bench::bench_step_on;
use tch::Device;

#[derive(Parser)]
struct Args {
    /// Base configuration (defaults apply without one); each variant's overrides go on top.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// One configuration: comma-separated `section.key=value` overrides (repeatable; at least one).
    #[arg(long, required = true)]
    variant: Vec<String>,
    /// Batch size instead of the configuration's `federation.batch_size`.
    #[arg(long)]
    batch: Option<i64>,
    /// Timed steps per measurement.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Rounds over all variants; each line printed is one measurement.
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Torch intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: i32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let base = match &args.config {
        Some(p) => Config::load(p).with_context(|| format!("loading {}", p.display()))?,
        None => Config::default(),
    };
    let mut runs = Vec::new();
    for v in &args.variant {
        let mut cfg = base.clone();
        let sets: Vec<String> = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        cfg.apply_overrides(&sets).with_context(|| format!("variant {v:?}"))?;
        let model = cfg.model_config().with_context(|| format!("variant {v:?}"))?;
        let batch = args.batch.unwrap_or(i64::from(cfg.federation.batch_size));
        runs.push((v.clone(), model, batch));
    }
    println!("repeat\ts/step\tbatch\tvariant");
    for r in 0..args.repeats {
        for (name, model, batch) in &runs {
            let secs =
                bench_step_on(model, *batch, args.steps, Device::Cpu).with_context(|| format!("variant {name:?}"))?;
            println!("{r}\t{secs:.4}\t{batch}\t{name}");
        }
    }
    Ok(())
}
