//! A tiny seeded random source owned by each model.
//!
//! Why not libtorch's global generator: it is process-wide, and tests, trainers and actors run on several threads
//! of one process, so two models seeded alike would still see interleaved draws. Every random number a model uses
//! (initial weights, noise z, interpolation weights, augmentation choices) comes from its own `SeededRng` instead,
//! which makes "same seed → same weights after N steps" hold whatever else runs in the process. SplitMix64 is used
//! because its output is fixed by its definition (no dependency version can change the stream).

use tch::{Device, Kind, Tensor};

/// SplitMix64 with Box–Muller normals.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
    spare: Option<f64>,
}

impl SeededRng {
    pub fn new(seed: i64) -> Self {
        let mut r = SeededRng { state: (seed as u64) ^ 0x5DEE_CE66_D1CE_4E5B, spare: None };
        r.next_u64();
        r
    }

    /// A generator for a named sub-stream: the same (seed, name) always gives the same stream, and streams of
    /// different names do not shift when another one draws more values.
    pub fn for_name(seed: i64, name: &str) -> Self {
        // FNV-1a over the name, mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        SeededRng::new((h ^ (seed as u64).rotate_left(17)) as i64)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (2.0 * std::f64::consts::PI * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }

    pub fn normal_vec(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        (0..n).map(|_| (mean + std * self.normal()) as f32).collect()
    }

    pub fn uniform_vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| (lo + (hi - lo) * self.uniform()) as f32).collect()
    }

    /// A float tensor of standard normals on `device`.
    pub fn normal_tensor(&mut self, shape: &[i64], device: Device) -> Tensor {
        let n = shape.iter().product::<i64>().max(0) as usize;
        Tensor::from_slice(&self.normal_vec(n, 0.0, 1.0)).view(shape).to_device(device)
    }

    /// A float tensor uniform in [lo, hi) on `device`.
    pub fn uniform_tensor(&mut self, shape: &[i64], lo: f64, hi: f64, device: Device) -> Tensor {
        let n = shape.iter().product::<i64>().max(0) as usize;
        Tensor::from_slice(&self.uniform_vec(n, lo, hi)).view(shape).to_device(device)
    }

    /// An int64 tensor uniform in 0..n on `device`.
    pub fn index_tensor(&mut self, len: usize, n: u64, device: Device) -> Tensor {
        let v: Vec<i64> = (0..len).map(|_| self.below(n) as i64).collect();
        Tensor::from_slice(&v).to_kind(Kind::Int64).to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_roughly_normal() {
        let a = SeededRng::new(7).normal_vec(20_000, 0.0, 1.0);
        let b = SeededRng::new(7).normal_vec(20_000, 0.0, 1.0);
        assert_eq!(a, b);
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
        assert_ne!(SeededRng::for_name(1, "a").next_u64(), SeededRng::for_name(1, "b").next_u64());
        let mut r = SeededRng::new(3);
        assert!((0..1000).all(|_| r.below(5) < 5));
    }
}
