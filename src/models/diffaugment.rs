//! DiffAugment (Zhao et al. 2020): differentiable colour, translation and cutout applied to every batch the
//! discriminator sees, real and generated alike.
//!
//! Why: with a few hundred training images a discriminator memorises them within a few hundred steps and its
//! gradients stop telling the generator anything useful. Augmenting only the real images would teach the generator
//! to produce augmented images ("leaking"); augmenting both with the same policy, through operations the generator's
//! gradient passes through, keeps the target distribution the real one while the discriminator sees many more
//! distinct images. The published numbers: BigGAN on 10 % of CIFAR-10 FID 39.8 → 22.4; StyleGAN2 on 100 images
//! 80.2 → 46.9. The operations follow the authors' reference code (images in [-1, 1]); the random draws come from
//! the model's seeded stream so a run stays reproducible.

use tch::{Kind, Tensor};

use super::config::AugmentPolicy;
use super::rng::SeededRng;

/// Applies `policy` to `x` ([B, 3, H, W]) with fresh random draws; gradients flow through to `x`.
pub fn diff_augment(x: &Tensor, policy: AugmentPolicy, rng: &mut SeededRng) -> Tensor {
    let size = x.size();
    if policy.is_none() || size.len() != 4 || size[0] == 0 {
        return x.shallow_clone();
    }
    let mut x = x.shallow_clone();
    if policy.color {
        x = color(&x, rng);
    }
    if policy.translation {
        x = translation(&x, 0.125, rng);
    }
    if policy.cutout {
        x = cutout(&x, 0.5, rng);
    }
    x
}

/// Brightness + U(−0.5, 0.5); saturation × U(0, 2) around the per-pixel channel mean; contrast × U(0.5, 1.5)
/// around the image mean.
fn color(x: &Tensor, rng: &mut SeededRng) -> Tensor {
    let b = x.size()[0];
    let dev = x.device();
    let x = x + rng.uniform_tensor(&[b, 1, 1, 1], -0.5, 0.5, dev);
    let mean = x.mean_dim([1i64].as_slice(), true, Kind::Float);
    let x = (&x - &mean) * rng.uniform_tensor(&[b, 1, 1, 1], 0.0, 2.0, dev) + &mean;
    let mean = x.mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
    (&x - &mean) * rng.uniform_tensor(&[b, 1, 1, 1], 0.5, 1.5, dev) + &mean
}

/// Integer draws in `lo..=hi`, one per sample, as an Int64 tensor [B, 1, 1].
fn int_draws(rng: &mut SeededRng, b: i64, lo: i64, hi: i64, dev: tch::Device) -> Tensor {
    let span = (hi - lo + 1).max(1) as u64;
    let v: Vec<i64> = (0..b).map(|_| lo + rng.below(span) as i64).collect();
    Tensor::from_slice(&v).view([b, 1, 1]).to_device(dev)
}

/// Shifts each image by up to `ratio` of its side in each direction; uncovered pixels are zero.
fn translation(x: &Tensor, ratio: f64, rng: &mut SeededRng) -> Tensor {
    let (b, _c, h, w) = x.size4().unwrap_or((0, 0, 0, 0));
    let dev = x.device();
    let (sh, sw) = ((h as f64 * ratio + 0.5) as i64, (w as f64 * ratio + 0.5) as i64);
    let tx = int_draws(rng, b, -sh, sh, dev);
    let ty = int_draws(rng, b, -sw, sw, dev);
    let opts = (Kind::Int64, dev);
    let gb = Tensor::arange(b, opts).view([b, 1, 1]).expand([b, h, w], false);
    let gx = (Tensor::arange(h, opts).view([1, h, 1]) + tx + 1).clamp(0, h + 1).expand([b, h, w], false);
    let gy = (Tensor::arange(w, opts).view([1, 1, w]) + ty + 1).clamp(0, w + 1).expand([b, h, w], false);
    let padded = x.constant_pad_nd([1i64, 1, 1, 1].as_slice()).permute([0, 2, 3, 1]);
    padded.index(&[Some(gb), Some(gx), Some(gy)]).permute([0, 3, 1, 2])
}

/// Zeroes one square of `ratio` × the side per image, centred anywhere (clipped at the border).
fn cutout(x: &Tensor, ratio: f64, rng: &mut SeededRng) -> Tensor {
    let (b, _c, h, w) = x.size4().unwrap_or((0, 0, 0, 0));
    let dev = x.device();
    let (ch, cw) = ((h as f64 * ratio + 0.5) as i64, (w as f64 * ratio + 0.5) as i64);
    let ox = int_draws(rng, b, 0, h - 1 + (1 - ch % 2), dev) - ch / 2;
    let oy = int_draws(rng, b, 0, w - 1 + (1 - cw % 2), dev) - cw / 2;
    let opts = (Kind::Int64, dev);
    let rows = Tensor::arange(h, opts).view([1, h, 1]);
    let cols = Tensor::arange(w, opts).view([1, 1, w]);
    let inside_r = rows.ge_tensor(&ox).logical_and(&rows.lt_tensor(&(&ox + ch)));
    let inside_c = cols.ge_tensor(&oy).logical_and(&cols.lt_tensor(&(&oy + cw)));
    let keep = inside_r.logical_and(&inside_c).logical_not().to_kind(x.kind()).unsqueeze(1);
    x * keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn batch() -> Tensor {
        SeededRng::new(4).uniform_tensor(&[6, 3, 16, 16], -1.0, 1.0, Device::Cpu)
    }

    #[test]
    fn none_is_identity_and_every_op_keeps_the_shape_and_is_seeded() {
        tch::set_num_threads(1);
        let x = batch();
        assert!(diff_augment(&x, AugmentPolicy::NONE, &mut SeededRng::new(1)).equal(&x));
        for p in ["color", "translation", "cutout", "color,translation,cutout"] {
            let policy: AugmentPolicy = p.parse().unwrap();
            let a = diff_augment(&x, policy, &mut SeededRng::new(9));
            let b = diff_augment(&x, policy, &mut SeededRng::new(9));
            assert_eq!(a.size(), x.size(), "{p}");
            assert!(a.equal(&b), "{p}: same seed, same draw");
            assert!(!a.equal(&x), "{p}: changes the batch");
        }
    }

    #[test]
    fn translation_moves_pixels_and_pads_with_zeros() {
        tch::set_num_threads(1);
        let x = Tensor::ones([8, 3, 16, 16], (Kind::Float, Device::Cpu));
        let t = translation(&x, 0.125, &mut SeededRng::new(3));
        // Every value is a moved pixel (1) or padding (0); the shift is at most 2 px, so the centre is always kept.
        assert!(t.eq(0.0).logical_or(&t.eq(1.0)).all().int64_value(&[]) == 1);
        assert_eq!(t.slice(2, 2, 14, 1).slice(3, 2, 14, 1).min().double_value(&[]), 1.0);
        // A shifted image keeps the content: translating a gradient ramp shifts its rows/cols.
        let ramp = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([1, 1, 16, 1]).expand([1, 3, 16, 16], false);
        let moved = translation(&(ramp + 1.0), 0.125, &mut SeededRng::new(5));
        let centre = moved.double_value(&[0, 0, 8, 8]);
        assert!((centre - 9.0).abs() <= 2.0, "centre pixel moved by at most 2 rows: {centre}");
    }

    #[test]
    fn cutout_zeroes_a_quarter_of_the_area_at_most_and_colour_passes_gradients() {
        tch::set_num_threads(1);
        let x = Tensor::ones([16, 3, 16, 16], (Kind::Float, Device::Cpu));
        let c = cutout(&x, 0.5, &mut SeededRng::new(2));
        let zero_share = c.eq(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!(zero_share > 0.05 && zero_share <= 0.25 + 1e-6, "{zero_share}");
        let x = batch().set_requires_grad(true);
        let y = diff_augment(&x, AugmentPolicy::FULL, &mut SeededRng::new(1));
        y.sum(Kind::Float).backward();
        assert!(x.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "gradients reach the input");
    }
}
