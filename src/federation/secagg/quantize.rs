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

/// [`dequantize_sum`] of codes that carry the sites' zero-centred integer noise, which can take a sum below 0 or
/// past 2³² − 1: each sum is read as the integer nearest the centre of the codes' span that it is congruent to
/// (exact while codes and noise stay within 2³¹ of that centre, which the parameters guarantee).
pub fn dequantize_noisy_sum(sum: &[u32], count: usize, clip: f32, q: u32) -> Vec<f32> {
    let step = quant_step(clip, q);
    let centre = (count as u64 * ((1u64 << q) - 1)) / 2;
    let offset = centre as f64 * step - count as f64 * clip as f64;
    sum.iter().map(|&s| (f64::from(s.wrapping_sub(centre as u32) as i32) * step + offset) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noisy_sum_is_decoded_around_the_centre_of_the_codes_span_also_when_the_noise_wraps_it() {
        let (clip, q, count) = (1.0f32, 8u32, 3usize);
        let step = quant_step(clip, q);
        // Three sites' codes for −1 (0), 0 (≈127.5) and +1 (255), plus noise of −40 codes: below zero, wrapped.
        let codes = 255u32 + 127;
        let noisy = codes.wrapping_sub(400);
        let got = dequantize_noisy_sum(&[noisy, codes], count, clip, q);
        let want = codes as f64 * step - 3.0;
        assert!((f64::from(got[1]) - want).abs() < 1e-6, "no noise: {} vs {want}", got[1]);
        assert!((f64::from(got[0]) - (want - 400.0 * step)).abs() < 1e-5, "wrapped: {}", got[0]);
        assert_eq!(dequantize_sum(&[codes], count, clip, q)[0], got[1], "the two readings agree without noise");
    }
}
