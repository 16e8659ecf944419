//! Per-step timing of a GAN configuration, for comparison with the PyTorch twin in `bench/gan_step.py`.
//!
//! Why in the library: the CLI and the comparison script must time exactly the same thing — one full
//! `train_step` (all critic steps + one generator step) on a fixed random batch, after warm-up steps that absorb
//! allocator and kernel-selection costs — so the timed loop lives next to the model, not in the CLI.

use std::time::Instant;

use tch::Device;

use super::config::ModelConfig;
use super::device::{select_device, synchronize};
use super::error::ModelError;
use super::gan::Gan;
use super::rng::SeededRng;

/// Untimed steps before measuring.
pub const WARMUP_STEPS: usize = 2;

/// Mean seconds per `train_step` over `steps` steps with batch size `batch`, on the default device (CUDA if
/// available, else CPU; the caller sets the thread count).
pub fn bench_step(cfg: &ModelConfig, batch: i64, steps: usize) -> Result<f64, ModelError> {
    bench_step_on(cfg, batch, steps, select_device(None)?)
}

/// [`bench_step`] on an explicit device.
pub fn bench_step_on(cfg: &ModelConfig, batch: i64, steps: usize, device: Device) -> Result<f64, ModelError> {
    if batch < 1 || steps < 1 {
        return Err(ModelError::Input(format!("batch ({batch}) and steps ({steps}) must be >= 1")));
    }
    let mut gan = Gan::new(cfg, device, 0)?;
    let mut rng = SeededRng::new(1);
    let s = cfg.image_size;
    let real = rng.uniform_tensor(&[batch, 3, s, s], -1.0, 1.0, device);
    let labels = rng.index_tensor(batch as usize, cfg.num_classes as u64, device);
    for _ in 0..WARMUP_STEPS {
        gan.train_step(&real, &labels)?;
    }
    synchronize(device);
    let start = Instant::now();
    for _ in 0..steps {
        gan.train_step(&real, &labels)?;
    }
    synchronize(device);
    Ok(start.elapsed().as_secs_f64() / steps as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::config::{DiscKind, GanKind};

    #[test]
    fn bench_step_runs() {
        tch::set_num_threads(1);
        let cfg = ModelConfig::preset("tiny", GanKind::Cgan, DiscKind::Cnn, 4).unwrap();
        let t = bench_step_on(&cfg, 4, 1, Device::Cpu).unwrap();
        assert!(t > 0.0 && t.is_finite());
        assert!(bench_step_on(&cfg, 0, 1, Device::Cpu).is_err());
    }

    /// Prints per-step times of every combination for the "tiny" (batch 16) and "small" (batch 32) presets:
    /// `cargo test --release bench_table -- --ignored --nocapture` (uses 2 threads).
    #[test]
    #[ignore]
    fn bench_table() {
        tch::set_num_threads(2);
        let presets: Vec<(String, i64)> = std::env::var("BENCH_PRESETS")
            .unwrap_or_else(|_| "tiny:16,small:32".into())
            .split(',')
            .filter_map(|p| p.split_once(':').map(|(n, b)| (n.to_string(), b.parse().unwrap_or(16))))
            .collect();
        let steps: usize = std::env::var("BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
        let only = std::env::var("BENCH_ONLY").ok(); // e.g. "cgan-cnn"
        for (preset, batch) in &presets {
            for gan in GanKind::ALL {
                for disc in DiscKind::ALL {
                    if only.as_deref().is_some_and(|o| o != format!("{gan}-{disc}")) {
                        continue;
                    }
                    let cfg = ModelConfig::preset(preset, gan, disc, 4).unwrap();
                    let t = bench_step_on(&cfg, *batch, steps, Device::Cpu).unwrap();
                    eprintln!("BENCH {preset} batch {batch} {gan}x{disc}: {:.1} ms/step", t * 1e3);
                }
            }
        }
    }

    /// Prints (generator, discriminator) parameter counts of every preset and combination:
    /// `cargo test param_table -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn param_table() {
        tch::set_num_threads(2);
        for preset in crate::models::config::PRESETS {
            for gan in GanKind::ALL {
                for disc in DiscKind::ALL {
                    let cfg = ModelConfig::preset(preset, gan, disc, 4).unwrap();
                    let (g, d) = Gan::new(&cfg, Device::Cpu, 0).unwrap().param_counts();
                    eprintln!("PARAMS {preset} {gan}x{disc}: G {g} D {d}");
                }
            }
        }
    }

    /// Writes, per combination of the "tiny" preset (after a few training steps, so batch-norm statistics are not
    /// trivial), the generator and discriminator checkpoints plus inputs and eval-mode outputs, for
    /// `python bench/gan_step.py --check DIR`: `PARITY_DIR=DIR cargo test export_parity_fixture -- --ignored`.
    #[test]
    #[ignore]
    fn export_parity_fixture() {
        use crate::federation::weights::{NamedTensor, Weights};
        let Ok(dir) = std::env::var("PARITY_DIR") else { return };
        tch::set_num_threads(1);
        let to_named = |name: &str, t: &tch::Tensor| crate::models::convert::tensor_to_named(name, t).unwrap();
        for gan in GanKind::ALL {
            for disc in DiscKind::ALL {
                for sn in [false, true] {
                    if sn && disc == DiscKind::Vit {
                        continue;
                    }
                    let mut cfg = ModelConfig::preset("tiny", gan, disc, 4).unwrap();
                    cfg.spectral_norm = sn;
                    let mut g = Gan::new(&cfg, Device::Cpu, 5).unwrap();
                    let mut rng = SeededRng::new(2);
                    let x = rng.uniform_tensor(&[8, 3, 32, 32], -1.0, 1.0, Device::Cpu);
                    let y = rng.index_tensor(8, 4, Device::Cpu);
                    for _ in 0..3 {
                        g.train_step(&x, &y).unwrap();
                    }
                    let z = g.latent(6, 3);
                    let labels = tch::Tensor::from_slice(&[0i64, 1, 2, 3, 1, 2]);
                    let images = g.generate(&z, &labels);
                    let (scores, _) = g.discriminate(&images, &labels).unwrap();
                    let sub = format!("{dir}/{gan}-{disc}{}", if sn { "-sn" } else { "" });
                    std::fs::create_dir_all(&sub).unwrap();
                    std::fs::write(format!("{sub}/config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
                    let write = |file: &str, w: &Weights| {
                        std::fs::write(format!("{sub}/{file}"), w.to_safetensors(None).unwrap()).unwrap()
                    };
                    write("generator.safetensors", &g.generator_weights().unwrap());
                    write("discriminator.safetensors", &g.discriminator_weights().unwrap());
                    let io: Vec<NamedTensor> = vec![
                        to_named("z", &z),
                        to_named("labels", &labels.to_kind(tch::Kind::Float)),
                        to_named("images", &images),
                        to_named("scores", &scores),
                    ];
                    write("io.safetensors", &Weights::new(io).unwrap());
                }
            }
        }
    }
}
