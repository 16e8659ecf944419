//! Fixed-point encoding of an update for the modular sum.
//!
//! Why stochastic rounding: a value is clipped to [−c, c] and mapped to [0, 2^q − 1]; rounding up with probability
//! equal to the fraction makes the encoding unbiased, so the error of the sum of many sites does not drift in one
//! direction (Flower's SecAgg+ does the same). The draws only have to be unbiased and independent of the values (the
//! codes are hidden under the masks), so they come from an OS-seeded ChaCha8 stream, the fastest of the family.

use rand::{RngCore, SeedableRng};

/// The width of one code: [−clip, clip] in 2^q − 1 steps (a value is rounded by less than one).
pub fn quant_step(clip: f32, q: u32) -> f64 {
    2.0 * f64::from(clip) / ((1u64 << q) - 1) as f64
}

/// `values` clipped to [−clip, clip] and encoded in q bits; returns the codes and how many values were clipped.
pub fn quantize(values: &[f32], clip: f32, q: u32) -> (Vec<u32>, usize) {
    let mut rng = rand_chacha::ChaCha8Rng::from_os_rng();
    let levels = ((1u64 << q) - 1) as f64;
    let scale = levels / (2.0 * clip as f64);
    let mut clipped = 0;
    let codes = values
        .iter()
        .map(|&v| {
            let v = if v.is_nan() { 0.0 } else { v };
            if v.abs() > clip {
                clipped += 1;
            }
            let x = ((v.clamp(-clip, clip) as f64) + clip as f64) * scale;
            let floor = x.floor();
            // One 32-bit draw per value: the rounding probability is resolved to 2⁻³², far below a level.
            let up = (rng.next_u32() as f64) < (x - floor) * 4_294_967_296.0;
            (floor as u64 + u64::from(up)).min(levels as u64) as u32
        })
        .collect();
    (codes, clipped)
}

/// The real sum of `count` encoded values whose codes add up to `sum` (modulo 2³², exact when no overflow).
pub fn dequantize_sum(sum: &[u32], count: usize, clip: f32, q: u32) -> Vec<f32> {
    let step = quant_step(clip, q);
    sum.iter().map(|&s| (s as f64 * step - count as f64 * clip as f64) as f32).collect()
}
