//! Sample-quality metrics: the Fréchet distance and a fixed feature map to compute it on.
//!
//! Why these: FID is the paper's headline number. The Fréchet distance itself is exact math and lives here in f64;
//! the Inception network it is normally computed on is not available offline, so `simple_features` provides a
//! deterministic, training-free stand-in (multi-scale colour statistics, gradient energy and a fixed random conv
//! layer) that still moves when colour, layout or texture distributions move. Once a trained reference extractor
//! exists (e.g. `Classifier::features`), the same `frechet_distance` applies to its features.

use tch::{Device, Kind, Tensor};

use super::error::{catch_torch, ModelError};
use super::rng::SeededRng;

/// Sample mean [D] and unbiased covariance [D, D] of rows of `x` (f64).
fn mean_cov(x: &Tensor) -> (Tensor, Tensor) {
    let n = x.size()[0];
    let mu = x.mean_dim([0i64].as_slice(), false, Kind::Double);
    let xc = x - &mu;
    let cov = xc.transpose(0, 1).matmul(&xc) / ((n - 1) as f64);
    (mu, cov)
}

/// Symmetric PSD square root via eigh, with tiny negative eigenvalues clamped to 0.
fn sqrtm_psd(s: &Tensor) -> Tensor {
    let sym = (s + s.transpose(0, 1)) * 0.5;
    let (e, v) = sym.linalg_eigh("L");
    let root = e.clamp_min(0.0).sqrt();
    (&v * root.unsqueeze(0)).matmul(&v.transpose(0, 1))
}

/// Fréchet distance between Gaussians fitted to feature sets `x` [N, D] and `y` [M, D] (N, M ≥ 2):
/// ‖μx − μy‖² + tr Σx + tr Σy − 2 tr (Σx^½ Σy Σx^½)^½. Computed in f64; the matrix square roots use eigh of
/// symmetric matrices (stable where `sqrtm` of a non-symmetric product is not).
pub fn frechet_distance(x: &Tensor, y: &Tensor) -> Result<f64, ModelError> {
    let (xs, ys) = (x.size(), y.size());
    if xs.len() != 2 || ys.len() != 2 || xs[1] != ys[1] {
        return Err(ModelError::Input(format!("feature sets must be [N, D] and [M, D], got {xs:?} and {ys:?}")));
    }
    if xs[0] < 2 || ys[0] < 2 {
        return Err(ModelError::Input(format!("need at least 2 samples per set, got {} and {}", xs[0], ys[0])));
    }
    catch_torch("frechet_distance", || {
        let _g = tch::no_grad_guard();
        let x = x.to_device(Device::Cpu).to_kind(Kind::Double);
        let y = y.to_device(Device::Cpu).to_kind(Kind::Double);
        let (mx, sx) = mean_cov(&x);
        let (my, sy) = mean_cov(&y);
        let a = sqrtm_psd(&sx);
        let m = a.matmul(&sy).matmul(&a);
        let m = (&m + m.transpose(0, 1)) * 0.5;
        let (e, _) = m.linalg_eigh("L");
        let tr_sqrt = e.clamp_min(0.0).sqrt().sum(Kind::Double).double_value(&[]);
        let mean_term = (&mx - &my).square().sum(Kind::Double).double_value(&[]);
        let tr = sx.trace().double_value(&[]) + sy.trace().double_value(&[]);
        let fd = mean_term + tr - 2.0 * tr_sqrt;
        if !fd.is_finite() {
            return Err(ModelError::NonFinite { what: "Fréchet distance".into(), step: 0, value: fd });
        }
        Ok(fd.max(0.0))
    })
}

/// Seed of the fixed random conv layer in [`simple_features`]; changing it changes every reported number.
const FEATURE_SEED: i64 = 20_250_405;
const FEATURE_CONV_CHANNELS: i64 = 16;

/// Length of a [`simple_features`] vector.
pub const SIMPLE_FEATURE_DIM: i64 = 3 + 12 + 48 + 3 + 6 + 2 * FEATURE_CONV_CHANNELS;

/// A fixed, untrained feature map for images [N,3,H,W] (values in [-1,1]) → [N, SIMPLE_FEATURE_DIM] (f32, same
/// device): average colour at 1×1, 2×2 and 4×4 pooling, per-channel standard deviation, mean absolute horizontal and
/// vertical gradients per channel, and mean + max of a fixed seeded 3×3 random conv layer (16 filters, ReLU).
/// Deterministic; the quality number until a trained reference extractor exists.
pub fn simple_features(images: &Tensor) -> Tensor {
    let _g = tch::no_grad_guard();
    let x = images.to_kind(Kind::Float);
    let n = x.size()[0];
    let mut parts: Vec<Tensor> = [1i64, 2, 4].iter().map(|&s| x.adaptive_avg_pool2d([s, s]).reshape([n, -1])).collect();
    let flat = x.flatten(2, -1);
    parts.push(flat.std_dim([2i64].as_slice(), true, false));
    let dx = (x.narrow(3, 1, x.size()[3] - 1) - x.narrow(3, 0, x.size()[3] - 1)).abs();
    let dy = (x.narrow(2, 1, x.size()[2] - 1) - x.narrow(2, 0, x.size()[2] - 1)).abs();
    parts.push(dx.mean_dim([2i64, 3].as_slice(), false, Kind::Float));
    parts.push(dy.mean_dim([2i64, 3].as_slice(), false, Kind::Float));
    let mut rng = SeededRng::new(FEATURE_SEED);
    let w = rng.normal_tensor(&[FEATURE_CONV_CHANNELS, 3, 3, 3], x.device()) * (1.0 / 27f64.sqrt());
    let b = rng.normal_tensor(&[FEATURE_CONV_CHANNELS], x.device()) * 0.1;
    let h = x.conv2d(&w, Some(&b), [1, 1], [1, 1], [1, 1], 1).relu().flatten(2, -1);
    parts.push(h.mean_dim([2i64].as_slice(), false, Kind::Float));
    parts.push(h.amax([2i64].as_slice(), false));
    Tensor::cat(&parts, 1)
}

/// Seed of [`random_cnn_features`]'s weights; changing it changes every number reported in that space.
const RANDOM_CNN_SEED: i64 = 20_261_204;
/// Channels of the four stages of [`random_cnn_features`].
const RANDOM_CNN_WIDTHS: [i64; 4] = [32, 64, 128, 256];
/// Length of a [`random_cnn_features`] vector: mean and standard deviation of the last stage's channels.
pub const RANDOM_CNN_FEATURE_DIM: i64 = 2 * RANDOM_CNN_WIDTHS[3];

/// A fixed, randomly initialised CNN as a feature space for KID/FD that needs no training and no downloaded
/// weights (Naeem et al. 2020 found randomly initialised CNN embeddings rank generators sensibly on data unlike
/// ImageNet): four stages of a 3×3 convolution (stride 2, He-normal weights from a fixed seed, no bias) and ReLU,
/// then the mean and standard deviation of every channel of the last stage → [N, RANDOM_CNN_FEATURE_DIM] (f32,
/// same device). Unlike the reference classifier it was not taught which cues separate the classes, so it keeps
/// texture and colour differences a classifier may ignore.
pub fn random_cnn_features(images: &Tensor) -> Tensor {
    let _g = tch::no_grad_guard();
    let mut h = images.to_kind(Kind::Float);
    let mut rng = SeededRng::new(RANDOM_CNN_SEED);
    let mut cin = 3;
    for cout in RANDOM_CNN_WIDTHS {
        let w = rng.normal_tensor(&[cout, cin, 3, 3], h.device()) * (2.0 / (cin * 9) as f64).sqrt();
        h = h.conv2d::<Tensor>(&w, None, [2, 2], [1, 1], [1, 1], 1).relu();
        cin = cout;
    }
    let flat = h.flatten(2, -1);
    Tensor::cat(
        &[flat.mean_dim([2i64].as_slice(), false, Kind::Float), flat.std_dim([2i64].as_slice(), true, false)],
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_cnn_features_are_fixed_and_separate_textures() {
        tch::set_num_threads(1);
        let noise = SeededRng::new(5).uniform_tensor(&[6, 3, 32, 32], -1.0, 1.0, Device::Cpu);
        let a = random_cnn_features(&noise);
        assert_eq!(a.size(), vec![6, RANDOM_CNN_FEATURE_DIM]);
        assert!(a.equal(&random_cnn_features(&noise)), "same weights every call");
        // Smooth images (a blurred copy of the noise) sit far from the noise in this space.
        let smooth = noise.avg_pool2d([5, 5], [1, 1], [2, 2], false, true, None::<i64>);
        let b = random_cnn_features(&smooth);
        let gap = (&a - &b).square().sum(Kind::Float).double_value(&[]);
        let within = (a.get(0) - a.get(1)).square().sum(Kind::Float).double_value(&[]);
        assert!(gap > 10.0 * within, "texture gap {gap} vs within-noise {within}");
    }

    fn gaussian(n: i64, d: i64, seed: i64, shift: &[f32]) -> Tensor {
        let x = SeededRng::new(seed).normal_tensor(&[n, d], Device::Cpu);
        x + Tensor::from_slice(shift).view([1, d])
    }

    #[test]
    fn frechet_of_identical_sets_is_zero_and_grows_with_shift() {
        tch::set_num_threads(1);
        let d = 8;
        let x = gaussian(4000, d, 1, &[0.0; 8]);
        assert!(frechet_distance(&x, &x).unwrap().abs() < 1e-6);
        let y0 = gaussian(4000, d, 2, &[0.0; 8]);
        let base = frechet_distance(&x, &y0).unwrap();
        assert!(base < 0.1, "two N(0,I) samples: {base}");
        let m = [1.0f32, -1.0, 0.5, 0.0, 0.0, 2.0, 0.0, 0.0];
        let m2: f64 = m.iter().map(|v| f64::from(*v).powi(2)).sum();
        // The same sample shifted by m: covariances agree exactly, so FD = ‖m‖² up to rounding.
        let shift = Tensor::from_slice(&m).view([1, d]);
        let fd = frechet_distance(&x, &(&x + &shift)).unwrap();
        assert!((fd - m2).abs() < 1e-6, "FD {fd} vs ‖m‖² {m2}");
        // An independent sample shifted by m: ‖m‖² up to sampling error.
        let y = gaussian(4000, d, 2, &m);
        let fd = frechet_distance(&x, &y).unwrap();
        assert!((fd - m2).abs() < 0.5, "FD {fd} vs ‖m‖² {m2}");
        let y_big = gaussian(4000, d, 2, &m.map(|v| 2.0 * v));
        assert!(frechet_distance(&x, &y_big).unwrap() > fd * 3.0);
        // Covariance term: N(0, 4I) vs N(0, I) → D·(2 − 1)² = 8.
        let wide = gaussian(4000, d, 3, &[0.0; 8]) * 2.0;
        let fd = frechet_distance(&x, &wide).unwrap();
        assert!((fd - 8.0).abs() < 0.6, "covariance FD {fd}");
        assert!(frechet_distance(&x, &Tensor::zeros([5, 3], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn simple_features_are_deterministic_and_sensitive() {
        tch::set_num_threads(1);
        let imgs = SeededRng::new(5).uniform_tensor(&[6, 3, 32, 32], -1.0, 1.0, Device::Cpu);
        let f1 = simple_features(&imgs);
        let f2 = simple_features(&imgs);
        assert_eq!(f1.size(), vec![6, SIMPLE_FEATURE_DIM]);
        assert!(f1.equal(&f2));
        let shifted = simple_features(&(imgs.shallow_clone() * 0.5 + 0.3));
        assert!((&f1 - &shifted).abs().max().double_value(&[]) > 0.05);
    }
}
