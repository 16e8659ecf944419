//! Deterministic weight initialisation.
//!
//! Why re-initialise after tch has built the layers: tch draws initial values from libtorch's process-wide
//! generator (see `rng.rs`), so it cannot promise per-model reproducibility on a multi-threaded process. Here every
//! variable is overwritten from a stream keyed by (seed, variable name), following the DCGAN / ViT conventions:
//! conv, linear and token weights N(0, 0.02); biases 0; normalisation gains 1; the generator's label embedding N(0, 1)
//! (it multiplies z, so it must not shrink it); spectral-norm power-iteration vectors random unit vectors; the
//! sub-pixel output convolution ICNR (each output colour's `r²` filters equal, so the rearranged image starts as a
//! nearest up-sampling of one convolution's output; Aitken et al. 2017).

use tch::nn::VarStore;
use tch::Tensor;

use super::error::ModelError;
use super::generator::{SUBPIXEL, SUBPIXEL_SCALE};
use super::rng::SeededRng;

/// Overwrites every variable of `vs` (trainable or not) with its seeded initial value.
pub(crate) fn init_varstore(vs: &VarStore, seed: i64) -> Result<(), ModelError> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let _guard = tch::no_grad_guard();
    for (name, mut t) in vars {
        let shape = t.size();
        let n = shape.iter().product::<i64>().max(0) as usize;
        let leaf = name.rsplit('.').next().unwrap_or(name.as_str());
        let mut rng = SeededRng::for_name(seed, &name);
        let values: Vec<f32> = match leaf {
            "bias" | "running_mean" => vec![0.0; n],
            "running_var" => vec![1.0; n],
            "weight_u" | "weight_v" => {
                let v = rng.normal_vec(n, 0.0, 1.0);
                let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt().max(1e-12);
                v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
            }
            "weight" if shape.len() == 1 => vec![1.0; n],
            "weight" if name.ends_with("label_emb.weight") => rng.normal_vec(n, 0.0, 1.0),
            "weight" if name.ends_with(&format!("{SUBPIXEL}.weight")) => {
                icnr(&mut rng, &shape, SUBPIXEL_SCALE.pow(2) as usize)
            }
            _ => rng.normal_vec(n, 0.0, 0.02),
        };
        let src = Tensor::from_slice(&values).view(shape.as_slice()).to_kind(t.kind()).to_device(t.device());
        t.f_copy_(&src).map_err(ModelError::torch("weight initialisation"))?;
    }
    Ok(())
}

/// N(0, 0.02) filters for `shape[0] / group` outputs, each repeated `group` times consecutively: the layout
/// `pixel_shuffle` reads (output channel c·r² + k is sub-pixel k of colour c).
fn icnr(rng: &mut SeededRng, shape: &[i64], group: usize) -> Vec<f32> {
    let per_out = shape.iter().skip(1).product::<i64>().max(0) as usize;
    let outs = shape.first().copied().unwrap_or(0).max(0) as usize / group.max(1);
    let base = rng.normal_vec(outs * per_out, 0.0, 0.02);
    base.chunks(per_out.max(1)).flat_map(|f| std::iter::repeat_n(f, group).flatten().copied()).collect()
}
