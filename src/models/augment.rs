//! Training-time augmentation for histopathology tiles.
//!
//! Why these transforms: tissue tiles have no canonical orientation, so the eight flips/90° rotations are label-
//! preserving and multiply the effective data; stain intensity varies between labs, which mild brightness/contrast
//! jitter imitates. Choices are drawn per sample from the model's own seeded stream (see `rng.rs`).

use tch::{Kind, Tensor};

use super::rng::SeededRng;

/// Random horizontal/vertical flips, 90° rotations and brightness (±0.1) / contrast (×0.9–1.1) jitter per sample,
/// for square images [B,3,S,S] in [-1, 1]; output clamped to [-1, 1].
pub fn augment(x: &Tensor, rng: &mut SeededRng) -> Tensor {
    let size = x.size();
    let b = size[0];
    if b == 0 || size.len() != 4 || size[2] != size[3] {
        return x.shallow_clone();
    }
    let dev = x.device();
    let mask = |rng: &mut SeededRng| rng.uniform_tensor(&[b, 1, 1, 1], 0.0, 1.0, dev).lt(0.5);
    let x = x.flip([3]).where_self(&mask(rng), x);
    let x = x.flip([2]).where_self(&mask(rng), &x);
    // Per-sample rotation by k·90°: pick sample i from the k-th rotated copy.
    let rotated = Tensor::cat(&(0..4).map(|k| x.rot90(k, [2, 3])).collect::<Vec<_>>(), 0); // [4B, ...]
    let idx: Vec<i64> = (0..b).map(|i| rng.below(4) as i64 * b + i).collect();
    let x = rotated.index_select(0, &Tensor::from_slice(&idx).to_device(dev));
    let brightness = rng.uniform_tensor(&[b, 1, 1, 1], -0.1, 0.1, dev);
    let contrast = rng.uniform_tensor(&[b, 1, 1, 1], 0.9, 1.1, dev);
    let mean = x.mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
    ((x - &mean) * contrast + mean + brightness).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn augment_keeps_shape_range_and_is_seeded() {
        tch::set_num_threads(1);
        let x = SeededRng::new(1).uniform_tensor(&[5, 3, 8, 8], -1.0, 1.0, Device::Cpu);
        let a = augment(&x, &mut SeededRng::new(2));
        let b = augment(&x, &mut SeededRng::new(2));
        assert_eq!(a.size(), x.size());
        assert!(a.equal(&b));
        assert!(a.abs().max().double_value(&[]) <= 1.0);
        // Flips and rotations permute pixels: the sorted values of a sample stay close (up to the jitter).
        assert!(!a.equal(&x));
    }
}
