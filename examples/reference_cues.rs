//! Which cues the quality suite's reference classifier decides by: its per-class accuracy on the real test split
//! as it is and with one cue taken away.
//!
//! Why: class agreement and coverage are the reference classifier's verdicts on generated images. If it can still
//! name ADI once the 1-px membranes are blurred out, agreement cannot tell a generator that draws fat cells from one
//! that paints the right colour (docs/gan-recipe.md, "Pixel-shuffle generator probe"). Transforms: `grey` (luma in
//! all three channels: no colour), `blur` (3×3 mean: thin lines gone, colour kept), `blur5` (5×5), `flat` (every
//! pixel the image's mean colour: colour only). Uses the same cached classifier the evaluator uses for this
//! configuration (trained if absent).
//!
//! ```text
//! OMP_WAIT_POLICY=PASSIVE cargo run --example reference_cues -- -c config/demo.toml --set model.image_size=64
//! ```

use anyhow::{Context, Result};
use clap::Parser;
use histofed::cli::{load_data, quality_setup, ConfigArgs};
use histofed::eval::quality::confusion_matrix;
use histofed::eval::reference::ReferenceExtractor;
use tch::{Device, Kind, Tensor};

#[derive(Parser)]
/// The reference classifier's per-class accuracy on the real test split, as it is and with one cue taken away.
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[arg(long, default_value_t = 1)]
    threads: i32,
}

fn transform(name: &str, x: &Tensor) -> Tensor {
    match name {
        "grey" => {
            let w = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]);
            (x * w).sum_dim_intlist([1i64].as_slice(), true, Kind::Float).expand([-1, 3, -1, -1], false)
        }
        "blur" => x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>),
        "blur5" => x.avg_pool2d([5, 5], [1, 1], [2, 2], false, false, None::<i64>),
        "flat" => x.mean_dim([2i64, 3].as_slice(), true, Kind::Float).expand_as(x),
        _ => x.shallow_clone(),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let mut cfg = args.config.load()?;
    let splits = load_data(&mut cfg)?;
    let setup = quality_setup(&cfg, &splits.train, Device::Cpu)?.context("evaluation.eval_every is 0")?;
    let (reference, info) = ReferenceExtractor::load_or_train(
        setup.options.reference_train.as_deref().unwrap_or(&splits.train),
        &splits.test,
        &setup.options.reference,
        &setup.options.cache_dir,
    )?;
    println!("reference classifier: test accuracy {:.3} (cached: {})", reference.test_accuracy(), info.cache_hit);
    let test = &splits.test;
    let idx: Vec<usize> = (0..test.len()).collect();
    let (data, labels) = test.batch_f32(&idx);
    let s = i64::from(test.size);
    let x = Tensor::from_slice(&data).view([idx.len() as i64, 3, s, s]);
    let k = test.classes.len();
    println!("transform\toverall\t{}", test.classes.join("\t"));
    for name in ["none", "grey", "blur", "blur5", "flat"] {
        let pred = Vec::<i64>::try_from(reference.logits(&transform(name, &x)).argmax(1, false))?;
        let pred: Vec<usize> = pred.into_iter().map(|p| usize::try_from(p).unwrap_or(usize::MAX)).collect();
        let called = confusion_matrix(&labels, &pred, k).counts;
        let right: usize = (0..k).map(|c| called[c][c]).sum();
        let overall = right as f64 / pred.len().max(1) as f64;
        let per: Vec<String> = (0..k)
            .map(|c| {
                let top = (0..k).filter(|&j| j != c).max_by_key(|&j| called[c][j]).unwrap_or(c);
                let total: usize = called[c].iter().sum();
                format!("{}/{total} (else {} {})", called[c][c], test.classes[top], called[c][top])
            })
            .collect();
        println!("{name}\t{overall:.3}\t{}", per.join("\t"));
    }
    Ok(())
}
